//! SIP signalling against SIPp (skipped with a note when `sipp` is not installed):
//! digest authentication of REGISTER and INVITE, wrong passwords, outbound auth and
//! registration, CANCEL, BYE from voxpbx, re-INVITE hold/unhold, 180/183 early media.
//! The torture corpus over the wire needs no SIPp.

mod common;
use common::*;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn have_sipp() -> bool {
    Command::new("sipp").arg("-v").output().is_ok()
}

macro_rules! need_sipp {
    () => {
        if !have_sipp() {
            eprintln!("NOTE: sipp not installed: skipping");
            return;
        }
    };
}

fn rtp_conf() -> String {
    let rtp = free_rtp_range(20);
    format!("[general]\nrtpstart={rtp}\nrtpend={}\n", rtp + 19)
}

/// alice (auth, MD5 only: SIPp 3.6 knows no SHA-256 and answers the first challenge,
/// registers), bob (auth, default SHA-256 + MD5 challenges), a trunk endpoint for outbound calls, no `identify` for
/// 127.0.0.1: every request from the test is identified by user name.
fn pjsip_conf(sip_port: u16, extra: &str) -> String {
    format!(
        "[udp]\ntype=transport\nprotocol=udp\nbind=127.0.0.1:{sip_port}\n\n\
         [alice]\ntype=endpoint\ncontext=from-sip\nallow=ulaw\naors=alice\nauth=alice-auth\n\
         rtp_symmetric=yes\n\n\
         [alice-auth]\ntype=auth\nauth_type=userpass\nusername=alice\npassword=wonderland\n\
         supported_algorithms_uas=MD5\n\n\
         [bob]\ntype=endpoint\ncontext=from-sip\nallow=ulaw\nauth=bob-auth\n\n\
         [bob-auth]\ntype=auth\nauth_type=userpass\nusername=bob\npassword=builder\n\n\
         [alice]\ntype=aor\nmax_contacts=1\nremove_existing=yes\n\n\
         [sipp]\ntype=endpoint\ncontext=from-sip\nallow=ulaw\nrtp_symmetric=yes\n\n\
         [trunk]\ntype=endpoint\ncontext=from-sip\nallow=ulaw\noutbound_auth=trunk-auth\n\n\
         [trunk-auth]\ntype=auth\nauth_type=userpass\nusername=trunkuser\npassword=trunkpass\n\n\
         {extra}"
    )
}

struct Sipp {
    args: Vec<String>,
}

impl Sipp {
    /// A SIPp UAC run against voxpbx at `sip_port` with scenario `scen` (tests/sipp/).
    fn uac(sip_port: u16, scen: &str, service: &str) -> Sipp {
        let mut s = Sipp::uas(scen, free_udp_port());
        s.args.insert(0, format!("127.0.0.1:{sip_port}"));
        s.args.extend(["-s".into(), service.into()]);
        s
    }
    /// A SIPp UAS on `port` with scenario `scen`.
    fn uas(scen: &str, port: u16) -> Sipp {
        let args = vec![
            "-sf".into(),
            repo().join("tests/sipp").join(scen).display().to_string(),
            "-m".into(),
            "1".into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-nostdin".into(),
            "-p".into(),
            port.to_string(),
            "-mp".into(),
            free_rtp_range(4).to_string(),
            "-timeout".into(),
            "25s".into(),
            "-timeout_error".into(),
        ];
        Sipp { args }
    }
    fn arg(mut self, a: &str) -> Sipp {
        self.args.push(a.to_string());
        self
    }
    /// `[field0]` = `user` through an injection file in `dir`.
    fn user(self, dir: &Path, user: &str) -> Sipp {
        let f = dir.join(format!("users-{user}.csv"));
        std::fs::write(&f, format!("SEQUENTIAL\n{user};\n")).unwrap();
        self.arg("-inf").arg(&f.display().to_string())
    }
    fn spawn(self, dir: &Path) -> std::process::Child {
        let err = dir.join(format!("sipp-{}.err", rand_name()));
        Command::new("sipp")
            .args(&self.args)
            .args(["-trace_err", "-error_file"])
            .arg(err)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run sipp")
    }
    /// Run to the end (at most 30 s); the exit status and SIPp's error log.
    fn run(self, dir: &Path) -> (Option<ExitStatus>, String) {
        let child = self.spawn(dir);
        wait_child(child, dir)
    }
}

fn rand_name() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{}", N.fetch_add(1, Ordering::Relaxed))
}

fn wait_child(mut child: std::process::Child, dir: &Path) -> (Option<ExitStatus>, String) {
    let end = Instant::now() + Duration::from_secs(30);
    let st = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break Some(st);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut errs = String::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().ends_with(".err") {
                errs.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    (st, errs)
}

/// A media socket for SIPp's `[rtpport]` that counts the RTP packets voxpbx sends,
/// with their arrival times.
struct Media {
    port: u16,
    times: Arc<parking_lot_free::Times>,
    stop: Arc<AtomicBool>,
}

mod parking_lot_free {
    use std::sync::Mutex;
    use std::time::Instant;
    #[derive(Default)]
    pub struct Times(pub Mutex<Vec<Instant>>);
}

impl Media {
    fn start() -> Media {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let times = Arc::new(parking_lot_free::Times::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (t2, s2) = (times.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s2.load(Ordering::Relaxed) {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    if n >= 12 && buf[0] >> 6 == 2 {
                        t2.0.lock().unwrap().push(Instant::now());
                    }
                }
            }
        });
        Media { port, times, stop }
    }
    fn times(&self) -> Vec<Instant> {
        self.times.0.lock().unwrap().clone()
    }
}

impl Drop for Media {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn assert_ok(r: &(Option<ExitStatus>, String), pbx: &TestPbx) {
    assert!(
        r.0.is_some_and(|s| s.success()),
        "sipp failed: {:?}\nsipp errors:\n{}\nvoxpbx log:\n{}",
        r.0,
        r.1,
        pbx.log()
    );
}

const DIALPLAN: &str = "[from-sip]\n\
exten => 100,1,System(echo ${CHANNEL} > {DIR}/reached-100.txt)\n \
same => n,Answer()\n same => n,Wait(20)\n same => n,Hangup()\n\
exten => 300,1,Ringing()\n same => n,Wait(20)\n same => n,Answer()\n same => n,Hangup()\n\
exten => 400,1,Answer()\n same => n,Playback(hello-world)\n same => n,Hangup()\n\
exten => 500,1,Answer()\n same => n,Milliwatt()\n\
exten => 600,1,Ringing()\n same => n,Progress()\n same => n,Playback(hello-world,noanswer)\n \
same => n,Playback(hello-world,noanswer)\n same => n,Hangup()\n";

fn start_pbx(sip_port: u16, extra_pjsip: &str, dialplan: &str) -> TestPbx {
    TestPbx::start(&[
        ("extensions.conf", dialplan),
        ("pjsip.conf", &pjsip_conf(sip_port, extra_pjsip)),
        ("rtp.conf", &rtp_conf()),
    ])
}

#[test]
fn register_and_invite_with_digest_challenge() {
    need_sipp!();
    let sip_port = free_udp_port();
    let pbx = start_pbx(sip_port, "", DIALPLAN);
    let r = Sipp::uac(sip_port, "reg_auth_call.xml", "100")
        .user(pbx.dir.path(), "alice")
        .arg("-au")
        .arg("alice")
        .arg("-ap")
        .arg("wonderland")
        .run(pbx.dir.path());
    assert_ok(&r, &pbx);
    let reached = std::fs::read_to_string(pbx.path("reached-100.txt")).unwrap_or_default();
    assert!(reached.starts_with("PJSIP/alice-"), "{reached:?}");
    let contacts = pbx.rx("pjsip show contacts");
    assert!(contacts.contains("alice/sip:alice@127.0.0.1"), "{contacts}");
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
}

/// SHA-256 digest over the wire: `voxpbx dial` answers the SHA-256 challenge (offered first).
#[test]
fn sha256_digest_with_voxpbx_dial() {
    let sip_port = free_udp_port();
    let pbx = start_pbx(sip_port, "", DIALPLAN);
    let run = |auth: &str| {
        let out = Command::new(bin())
            .arg("dial")
            .arg(format!("sip:100@127.0.0.1:{sip_port}"))
            .args(["--from", "bob", "--auth", auth, "--hangup-after", "1"])
            .output()
            .expect("run voxpbx dial");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let bad = run("bob:wrong");
    assert!(bad.contains("\"status\":403"), "{bad}");
    assert!(!pbx.path("reached-100.txt").exists());
    let good = run("bob:builder");
    assert!(good.contains("\"status\":200"), "{good}\n{}", pbx.log());
    let reached = std::fs::read_to_string(pbx.path("reached-100.txt")).unwrap_or_default();
    assert!(reached.starts_with("PJSIP/bob-"), "{reached:?}");
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
}

#[test]
fn wrong_password_is_refused_and_never_reaches_the_dialplan() {
    need_sipp!();
    let sip_port = free_udp_port();
    let pbx = start_pbx(sip_port, "", DIALPLAN);
    let r = Sipp::uac(sip_port, "auth_wrong_password.xml", "100")
        .user(pbx.dir.path(), "alice")
        .arg("-au")
        .arg("alice")
        .arg("-ap")
        .arg("not-the-password")
        .run(pbx.dir.path());
    assert_ok(&r, &pbx);
    // An unknown user is refused outright.
    let r = Sipp::uac(sip_port, "auth_wrong_password.xml", "100")
        .user(pbx.dir.path(), "mallory")
        .run(pbx.dir.path());
    assert!(!r.0.is_some_and(|s| s.success()), "mallory got a 401");
    assert!(!pbx.path("reached-100.txt").exists(), "{}", pbx.log());
    assert!(pbx.wait_no_channels(5), "{}", pbx.log());
}

#[test]
fn outbound_invite_answers_the_challenge() {
    need_sipp!();
    let sip_port = free_udp_port();
    let sipp_port = free_udp_port();
    let dialplan = format!(
        "[from-sip]\nexten => 200,1,Dial(PJSIP/trunk/sip:service@127.0.0.1:{sipp_port},10)\n \
         exten => h,1,System(echo \"${{DIALSTATUS}}\" > {{DIR}}/dialstatus.txt)\n"
    );
    let pbx = start_pbx(sip_port, "", &dialplan);
    let child = Sipp::uas("uas_auth.xml", sipp_port).spawn(pbx.dir.path());
    std::thread::sleep(Duration::from_millis(500));
    pbx.rx("channel originate Local/200@from-sip application Wait 1");
    let r = wait_child(child, pbx.dir.path());
    assert_ok(&r, &pbx);
    let st = wait_file(&pbx.path("dialstatus.txt"), 10);
    assert_eq!(
        st.as_deref().map(str::trim),
        Some("ANSWER"),
        "{}",
        pbx.log()
    );
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
}

#[test]
fn outbound_registration_registers_and_refreshes() {
    need_sipp!();
    let sip_port = free_udp_port();
    let sipp_port = free_udp_port();
    let dir = tempfile::tempdir().unwrap();
    // SIPp first: voxpbx registers as soon as it boots.
    let child = Sipp::uas("uas_register.xml", sipp_port).spawn(dir.path());
    std::thread::sleep(Duration::from_millis(300));
    let reg = format!(
        "[provider]\ntype=registration\nserver_uri=sip:127.0.0.1:{sipp_port}\n\
         client_uri=sip:trunkuser@127.0.0.1:{sipp_port}\ncontact_user=trunkuser\n\
         outbound_auth=trunk-auth\nexpiration=120\nretry_interval=5\n"
    );
    let pbx = start_pbx(sip_port, &reg, DIALPLAN);
    let r = wait_child(child, dir.path());
    assert_ok(&r, &pbx);
    let out = pbx.rx("pjsip show registrations");
    assert!(out.contains("provider/sip:127.0.0.1"), "{out}");
    assert!(out.contains("Registered"), "{out}\n{}", pbx.log());
}

#[test]
fn cancel_before_answer() {
    need_sipp!();
    let sip_port = free_udp_port();
    let pbx = start_pbx(sip_port, "", DIALPLAN);
    let r = Sipp::uac(sip_port, "uac_cancel.xml", "300")
        .user(pbx.dir.path(), "sipp")
        .run(pbx.dir.path());
    assert_ok(&r, &pbx);
    assert!(pbx.wait_no_channels(5), "{}", pbx.log());
}

#[test]
fn bye_from_voxpbx_after_playback() {
    need_sipp!();
    let sip_port = free_udp_port();
    let pbx = start_pbx(sip_port, "", DIALPLAN);
    let r = Sipp::uac(sip_port, "uac_recv_bye.xml", "400")
        .user(pbx.dir.path(), "sipp")
        .run(pbx.dir.path());
    assert_ok(&r, &pbx);
    assert!(pbx.wait_no_channels(5), "{}", pbx.log());
}

#[test]
fn reinvite_hold_and_unhold() {
    need_sipp!();
    let sip_port = free_udp_port();
    let pbx = start_pbx(sip_port, "", DIALPLAN);
    let media = Media::start();
    let t0 = Instant::now();
    let r = Sipp::uac(sip_port, "uac_hold.xml", "500")
        .user(pbx.dir.path(), "sipp")
        .arg("-key")
        .arg("rtpport")
        .arg(&media.port.to_string())
        .run(pbx.dir.path());
    assert_ok(&r, &pbx);
    assert!(pbx.wait_no_channels(5), "{}", pbx.log());
    // Milliwatt streams all call long, except while held (sendonly, then inactive):
    // a gap of about 3 s in the middle, packets before and after it.
    let times = media.times();
    assert!(times.len() > 100, "only {} RTP packets", times.len());
    let (gap_at, gap) = times
        .windows(2)
        .map(|w| (w[0], w[1] - w[0]))
        .max_by_key(|x| x.1)
        .unwrap();
    assert!(
        gap >= Duration::from_millis(2000),
        "RTP did not stop while held (largest gap {gap:?})"
    );
    assert!(
        gap_at > t0 && times.last().unwrap() > &(gap_at + gap),
        "no RTP after unhold"
    );
}

#[test]
fn early_media_183_with_rtp_before_answer() {
    need_sipp!();
    let sip_port = free_udp_port();
    let pbx = start_pbx(sip_port, "", DIALPLAN);
    let media = Media::start();
    let r = Sipp::uac(sip_port, "uac_early_media.xml", "600")
        .user(pbx.dir.path(), "sipp")
        .arg("-key")
        .arg("rtpport")
        .arg(&media.port.to_string())
        .run(pbx.dir.path());
    assert_ok(&r, &pbx);
    // The call was never answered: every packet was early media.
    let n = media.times().len();
    assert!(n > 20, "only {n} early-media RTP packets");
    assert!(pbx.wait_no_channels(5), "{}", pbx.log());
}

/// Every torture message over UDP: invalid ones get an error response or nothing, and
/// the process survives to answer OPTIONS.
#[test]
fn torture_corpus_over_the_wire() {
    let sip_port = free_udp_port();
    let pbx = start_pbx(sip_port, "", DIALPLAN);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(150)))
        .unwrap();
    let dest = format!("127.0.0.1:{sip_port}");
    let mut files: Vec<(bool, std::path::PathBuf)> = Vec::new();
    for (valid, sub) in [(true, "valid"), (false, "invalid")] {
        for e in std::fs::read_dir(repo().join("tests/sip_torture").join(sub)).unwrap() {
            files.push((valid, e.unwrap().path()));
        }
    }
    files.sort();
    assert!(files.len() > 20);
    let mut buf = vec![0u8; 65536];
    let mut answered = 0;
    for (valid, f) in &files {
        let data = std::fs::read(f).unwrap();
        sock.send_to(&data, &dest).unwrap();
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            answered += 1;
            let text = String::from_utf8_lossy(&buf[..n]);
            let status: u16 = text
                .strip_prefix("SIP/2.0 ")
                .and_then(|t| t.get(..3))
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{}: not a response: {text}", f.display()));
            if !valid {
                assert!(
                    status >= 400,
                    "{}: invalid message got {status}",
                    f.display()
                );
            }
        }
    }
    // Garbage datagrams.
    for junk in [
        &b""[..],
        b"\r\n\r\n",
        b"\x00\xff\xfe garbage",
        &[b'A'; 60000][..],
        b"INVITE",
        b"SIP/2.0 200 OK\r\n\r\n",
    ] {
        sock.send_to(junk, &dest).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    while sock.recv_from(&mut buf).is_ok() {}
    // Still alive and answering.
    let port = sock.local_addr().unwrap().port();
    let options = format!(
        "OPTIONS sip:ping@127.0.0.1:{sip_port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKtorture-final\r\n\
         From: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:ping@127.0.0.1>\r\n\
         Call-ID: torture-final\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sock.send_to(options.as_bytes(), &dest).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut ok = false;
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.starts_with("SIP/2.0 200") && text.contains("torture-final") {
                ok = true;
                break;
            }
        }
    }
    assert!(
        ok,
        "no 200 to OPTIONS after the corpus ({answered} answers)\n{}",
        pbx.log()
    );
    assert!(!pbx.log().contains("panicked"), "{}", pbx.log());
}

/// SIP over TCP: a SIPp call on one connection (`-t t1`), CRLF keepalives answered, an
/// oversized message closes the connection.
#[test]
fn tcp_transport_call_keepalive_and_size_limit() {
    need_sipp!();
    use std::io::{Read, Write};
    let sip_port = free_udp_port();
    let tcp_port = free_tcp_port();
    let extra = format!("[tcp]\ntype=transport\nprotocol=tcp\nbind=127.0.0.1:{tcp_port}\n");
    let pbx = start_pbx(sip_port, &extra, DIALPLAN);
    let media = Media::start();
    let r = Sipp::uac(tcp_port, "uac_hello.xml", "100")
        .arg("-t")
        .arg("t1")
        .arg("-key")
        .arg("rtpport")
        .arg(&media.port.to_string())
        .run(pbx.dir.path());
    assert_ok(&r, &pbx);
    let reached = std::fs::read_to_string(pbx.path("reached-100.txt")).unwrap_or_default();
    assert!(reached.starts_with("PJSIP/sipp-"), "{reached:?}");
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());

    let mut c = std::net::TcpStream::connect(("127.0.0.1", tcp_port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c.write_all(b"\r\n\r\n").unwrap();
    let mut two = [0u8; 2];
    c.read_exact(&mut two).unwrap();
    assert_eq!(&two, b"\r\n");
    let mut huge = b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nX-Pad: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 70_000));
    let _ = c.write_all(&huge);
    let mut rest = Vec::new();
    let closed = c.read_to_end(&mut rest).is_ok();
    assert!(closed, "connection not closed after an oversized message");
    // Still serving.
    let r = Sipp::uac(tcp_port, "uac_hello.xml", "100")
        .arg("-t")
        .arg("t1")
        .arg("-key")
        .arg("rtpport")
        .arg(&media.port.to_string())
        .run(pbx.dir.path());
    assert_ok(&r, &pbx);
}

const INFO_DIALPLAN: &str = "[from-sip]\n\
exten => 700,1,Answer()\n same => n,Read(DIGITS,,3,,1,10)\n \
same => n,System(echo ${DIGITS} > {DIR}/digits)\n same => n,Hangup()\n\
exten => 710,1,Answer()\n same => n,Wait(1)\n same => n,SendDTMF(4)\n same => n,Wait(1)\n \
same => n,Hangup()\n";

const INFO_EP: &str = "[infoep]\ntype=endpoint\ncontext=from-sip\nallow=ulaw\ndtmf_mode=info\n\n";

/// SIP INFO DTMF (`application/dtmf-relay` and `application/dtmf`) sent by SIPp with no
/// telephone-event negotiated reaches Read(); every INFO gets 200.
#[test]
fn info_dtmf_reaches_read() {
    need_sipp!();
    let sip_port = free_udp_port();
    let pbx = start_pbx(sip_port, INFO_EP, INFO_DIALPLAN);
    let r = Sipp::uac(sip_port, "uac_info_dtmf.xml", "700").run(pbx.dir.path());
    assert_ok(&r, &pbx);
    let digits = std::fs::read_to_string(pbx.path("digits")).unwrap_or_default();
    assert_eq!(digits.trim(), "12*", "{}", pbx.log());
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
}

/// `dtmf_mode=info`: SendDTMF goes out as an INFO with an `application/dtmf-relay` body.
#[test]
fn info_dtmf_sent_outward() {
    need_sipp!();
    let sip_port = free_udp_port();
    let pbx = start_pbx(sip_port, INFO_EP, INFO_DIALPLAN);
    let r = Sipp::uac(sip_port, "uac_recv_info_dtmf.xml", "710").run(pbx.dir.path());
    assert_ok(&r, &pbx);
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
}

/// `qualify_frequency`: voxpbx sends OPTIONS to a static contact; SIPp answers one
/// (Reachable, with an RTT, in `pjsip show contacts` and a ContactStatus change), then
/// exits: the next OPTIONS goes unanswered (Unreachable after `qualify_timeout`).
#[test]
fn qualify_contact_reachable_then_unreachable() {
    need_sipp!();
    let sip_port = free_udp_port();
    let uas_port = free_udp_port();
    let extra = format!(
        "[qual]\ntype=endpoint\ncontext=from-sip\nallow=ulaw\naors=qual\n\n\
         [qual]\ntype=aor\ncontact=sip:sipp@127.0.0.1:{uas_port}\nqualify_frequency=1\n\
         qualify_timeout=1.0\n\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let uas = Sipp::uas("uas_options.xml", uas_port).spawn(dir.path());
    let pbx = start_pbx(sip_port, &extra, DIALPLAN);
    let r = wait_child(uas, dir.path());
    assert!(
        r.0.is_some_and(|s| s.success()),
        "sipp: {:?} {}\n{}",
        r.0,
        r.1,
        pbx.log()
    );
    assert!(
        pbx.wait_log(
            &format!("Contact qual/sip:sipp@127.0.0.1:{uas_port} is now Reachable"),
            5
        ),
        "{}",
        pbx.log()
    );
    let contacts = pbx.rx("pjsip show contacts");
    let line = contacts
        .lines()
        .find(|l| l.contains(&format!("qual/sip:sipp@127.0.0.1:{uas_port}")))
        .unwrap_or_else(|| panic!("{contacts}"));
    let rtt: f64 = line.split_whitespace().last().unwrap().parse().expect(line);
    assert!(
        line.contains(" Avail ") && (0.0..1000.0).contains(&rtt),
        "{line}"
    );
    assert!(
        pbx.wait_log(
            &format!("Contact qual/sip:sipp@127.0.0.1:{uas_port} is now Unreachable"),
            8
        ),
        "{}",
        pbx.log()
    );
    let contacts = pbx.rx("pjsip show contacts");
    assert!(contacts.contains(" Unavail "), "{contacts}");
}

/// `external_media_address` on the transport: the SDP answer's `c=` carries it, while
/// Via/Contact keep the bound address (no `external_signaling_address`).
#[test]
fn external_media_address_in_sdp() {
    need_sipp!();
    let sip_port = free_udp_port();
    let conf = pjsip_conf(sip_port, "").replacen(
        &format!("bind=127.0.0.1:{sip_port}\n"),
        &format!("bind=127.0.0.1:{sip_port}\nexternal_media_address=192.0.2.10\n"),
        1,
    );
    let pbx = TestPbx::start(&[
        ("extensions.conf", DIALPLAN),
        ("pjsip.conf", &conf),
        ("rtp.conf", &rtp_conf()),
    ]);
    let r = Sipp::uac(sip_port, "uac_external_media.xml", "100").run(pbx.dir.path());
    assert_ok(&r, &pbx);
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
}
