//! Media over real SIP: RFC 4733 DTMF into Read() (SIPp's bundled DTMF pcaps), Echo() returning
//! the samples sent, SendDTMF arriving as RFC 4733, `rtp_timeout` hanging up a silent peer, and
//! RTP sequence/timestamp continuity across consecutive Playbacks.
//!
//! The RTP that voxpbx sends is checked on raw sockets with a parser written here, not with
//! voxpbx's own RTP code. Skipped with a NOTE when SIPp (Debian `sip-tester`) is missing.

mod common;
use common::*;

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use voxpbx::media::g711::{linear_to_ulaw, ulaw_to_linear};
use voxpbx::sip::ua::{best_correlation, dial, DialAudio, DialOpts, Hangup};

const SIPP: &str = "/usr/bin/sipp";
const PCAP_DIR: &str = "/usr/share/sip-tester";

fn have_sipp() -> bool {
    if Path::new(SIPP).exists() {
        true
    } else {
        eprintln!("NOTE: {SIPP} (Debian sip-tester) not installed; skipping SIP media test");
        false
    }
}

const DIALPLAN: &str = r#"
[from-sip]
exten => dtmf,1,Answer()
 same => n,Read(DIGITS,,,,,10)
 same => n,System(echo "${DIGITS}" > {DIR}/digits)
 same => n,Hangup()

exten => echo,1,Answer()
 same => n,Echo()

exten => senddtmf,1,Answer()
 same => n,Wait(0.5)
 same => n,SendDTMF(12#9,,120)
 same => n,Wait(0.5)
 same => n,Hangup()

exten => silent,1,Answer()
 same => n,Wait(30)
 same => n,Hangup()

exten => twice,1,Answer()
 same => n,Playback(hello-world)
 same => n,Playback(hello-world)
 same => n,Hangup()
"#;

/// Start voxpbx with one endpoint `sipp` identified by 127.0.0.1; `extra` goes into the
/// endpoint section. Returns the PBX and its SIP port.
fn start_pbx(extra: &str) -> (TestPbx, u16) {
    let sip_port = free_udp_port();
    let rtp = free_rtp_range(20);
    let pjsip = format!(
        "[udp]\ntype=transport\nprotocol=udp\nbind=127.0.0.1:{sip_port}\n\n\
         [sipp]\ntype=endpoint\ncontext=from-sip\nallow=ulaw\naors=sipp\n{extra}\n\n\
         [sipp]\ntype=aor\nmax_contacts=1\n\n\
         [sipp-id]\ntype=identify\nendpoint=sipp\nmatch=127.0.0.1\n"
    );
    let pbx = TestPbx::start(&[
        ("extensions.conf", DIALPLAN),
        ("pjsip.conf", &pjsip),
        (
            "rtp.conf",
            &format!("[general]\nrtpstart={rtp}\nrtpend={}\n", rtp + 19),
        ),
    ]);
    (pbx, sip_port)
}

/// Run one SIPp UAC call of `scenario` to `service`; true when SIPp exits successfully.
fn run_sipp_uac(sip_port: u16, scenario: &str, service: &str, rtpport: Option<u16>) -> bool {
    let mut cmd = Command::new(SIPP);
    cmd.arg(format!("127.0.0.1:{sip_port}"))
        .arg("-sf")
        .arg(repo().join("tests/sipp").join(scenario))
        .args(["-s", service, "-m", "1", "-i", "127.0.0.1", "-nostdin"])
        .args(["-p", &free_udp_port().to_string()])
        .args(["-mp", &free_rtp_range(4).to_string()])
        .args(["-timeout", "25s", "-timeout_error"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(p) = rtpport {
        cmd.args(["-key", "rtpport", &p.to_string()]);
    }
    let mut child = cmd.spawn().expect("run sipp");
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st.success();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An RTP packet as seen on the wire (parsed here, independently of voxpbx's RTP module).
#[derive(Debug, Clone)]
struct Rtp {
    at: Instant,
    marker: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: Vec<u8>,
}

fn parse_rtp(at: Instant, d: &[u8]) -> Option<Rtp> {
    if d.len() < 12 || d[0] >> 6 != 2 {
        return None;
    }
    let pt = d[1] & 0x7f;
    if (72..=79).contains(&pt) {
        return None; // RTCP
    }
    let cc = (d[0] & 0x0f) as usize;
    let mut off = 12 + 4 * cc;
    if d[0] & 0x10 != 0 {
        let ext = d.get(off + 2..off + 4)?;
        off += 4 + 4 * u16::from_be_bytes([ext[0], ext[1]]) as usize;
    }
    let mut end = d.len();
    if d[0] & 0x20 != 0 {
        end = end.checked_sub(*d.last()? as usize)?;
    }
    Some(Rtp {
        at,
        marker: d[1] & 0x80 != 0,
        pt,
        seq: u16::from_be_bytes([d[2], d[3]]),
        ts: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
        ssrc: u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
        payload: d.get(off..end)?.to_vec(),
    })
}

/// A UDP socket standing in for the peer's RTP port: records every RTP packet that arrives.
struct Capture {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Rtp>>,
}

impl Capture {
    fn start() -> Capture {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind capture");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let port = sock.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    if let Some(p) = parse_rtp(Instant::now(), &buf[..n]) {
                        got.push(p);
                    }
                }
            }
            got
        });
        Capture { port, stop, thread }
    }

    fn finish(self) -> Vec<Rtp> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("capture thread")
    }
}

#[test]
fn rfc4733_dtmf_from_sipp_reaches_read() {
    if !have_sipp() {
        return;
    }
    if !Path::new(PCAP_DIR).join("dtmf_2833_pound.pcap").exists() {
        eprintln!("NOTE: SIPp's DTMF pcaps are not in {PCAP_DIR}; skipping");
        return;
    }
    let (pbx, sip_port) = start_pbx("");
    // SIPp plays the RFC 4733 events 1, 5, 9, # (payload type 101) after the answer.
    let ok = run_sipp_uac(sip_port, "media_dtmf_uac.xml", "dtmf", None);
    assert!(ok, "sipp failed\n{}", pbx.log());
    let digits = wait_file(&pbx.path("digits"), 10);
    assert_eq!(
        digits.as_deref().map(str::trim),
        Some("159"),
        "{}",
        pbx.log()
    );
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
}

#[test]
fn echo_over_sip_returns_the_samples_sent() {
    if !have_sipp() {
        return;
    }
    let (pbx, sip_port) = start_pbx("");
    let signal = test_signal(8000, 2000, 523.0, 12345);
    let mut opts = DialOpts::new(format!("sip:echo@127.0.0.1:{sip_port}"));
    opts.audio = Some(DialAudio::Samples {
        rate: 8000,
        samples: signal.clone(),
    });
    opts.keep_recording = true;
    opts.hangup_after = Some(Duration::from_millis(3000));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s = rt.block_on(dial(opts)).expect("dial");
    assert_eq!(s.status, 200, "{s:?}\n{}", pbx.log());
    assert_eq!(s.hangup, Hangup::Local, "{s:?}");
    assert_eq!(s.codec.as_deref(), Some("PCMU"));
    assert!(s.rtp_sent >= 98, "{s:?}");
    assert!(s.rtp_received >= 95, "{s:?}");
    assert_eq!(s.lost, 0, "{s:?}");

    // Echo() relays the µ-law frames untouched, so every 20 ms frame sent must come back
    // bit-exact (after the UA's own µ-law coding), in order, each in one recorded frame.
    let coded: Vec<i16> = signal
        .iter()
        .map(|&x| ulaw_to_linear(linear_to_ulaw(x)))
        .collect();
    let sent: Vec<&[i16]> = coded.chunks(160).collect();
    let recorded: Vec<&[i16]> = s.recorded.chunks(160).collect();
    let mut next = 0usize;
    let mut matched = 0usize;
    let mut first_back = None;
    for (k, frame) in recorded.iter().enumerate() {
        if let Some(j) = (next..sent.len()).find(|&j| sent[j] == *frame) {
            first_back.get_or_insert(k);
            matched += 1;
            next = j + 1;
        }
    }
    assert!(
        matched * 100 >= sent.len() * 95,
        "only {matched} of {} frames came back bit-exact",
        sent.len()
    );
    // Round trip through voxpbx's and the UA's jitter buffers: well under half a second.
    let delay_frames = first_back.expect("nothing came back");
    assert!(delay_frames < 25, "echo delay {delay_frames} frames");
    let (lag, c) = best_correlation(&coded, &s.recorded, 4000);
    assert!(c > 0.95, "echo correlation {c} at lag {lag}");
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
}

#[test]
fn senddtmf_arrives_as_rfc4733_events() {
    if !have_sipp() {
        return;
    }
    let (pbx, sip_port) = start_pbx("");
    let cap = Capture::start();
    let ok = run_sipp_uac(sip_port, "media_uac_listen.xml", "senddtmf", Some(cap.port));
    let pkts = cap.finish();
    assert!(ok, "sipp failed\n{}", pbx.log());
    let events: Vec<&Rtp> = pkts.iter().filter(|p| p.pt == 101).collect();
    assert!(!events.is_empty(), "no telephone-event packets: {pkts:?}");
    // Group by RTP timestamp: one event per digit (RFC 4733 §2.5.1).
    let mut digits = String::new();
    let mut i = 0;
    while i < events.len() {
        let ts = events[i].ts;
        let group: Vec<&&Rtp> = events[i..].iter().take_while(|p| p.ts == ts).collect();
        i += group.len();
        let code = group[0].payload[0];
        assert!(
            group
                .iter()
                .all(|p| p.payload.len() == 4 && p.payload[0] == code),
            "mixed events under one timestamp: {group:?}"
        );
        assert!(group[0].marker, "first packet of an event lacks the marker");
        let durations: Vec<u16> = group
            .iter()
            .map(|p| u16::from_be_bytes([p.payload[2], p.payload[3]]))
            .collect();
        assert!(
            durations.windows(2).all(|w| w[0] <= w[1]),
            "durations go back: {durations:?}"
        );
        let ends = group.iter().filter(|p| p.payload[1] & 0x80 != 0).count();
        assert!(ends >= 1, "event {code} has no end packet");
        assert!(
            group
                .iter()
                .rev()
                .take(ends)
                .all(|p| p.payload[1] & 0x80 != 0),
            "end packets must be last"
        );
        // 120 ms requested: the final duration is 120 ms ± one packet (8 kHz clock).
        let last = *durations.last().unwrap_or(&0);
        assert!((800..=1280).contains(&last), "duration {last} units");
        digits.push(match code {
            0..=9 => (b'0' + code) as char,
            10 => '*',
            11 => '#',
            12..=15 => (b'A' + code - 12) as char,
            _ => '?',
        });
    }
    assert_eq!(digits, "12#9");
    for w in pkts.windows(2) {
        assert_eq!(w[1].ssrc, w[0].ssrc, "one RTP stream expected");
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "sequence gap");
    }
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
}

#[test]
fn rtp_timeout_hangs_up_a_peer_that_stops_sending() {
    if !have_sipp() {
        return;
    }
    let (pbx, sip_port) = start_pbx("rtp_timeout=2");
    // The UA sends 1 s of audio, then nothing; it would hang up itself only after 12 s.
    let mut opts = DialOpts::new(format!("sip:silent@127.0.0.1:{sip_port}"));
    opts.audio = Some(DialAudio::Samples {
        rate: 8000,
        samples: test_signal(8000, 2000, 523.0, 12345)[..8000].to_vec(),
    });
    opts.hangup_after = Some(Duration::from_secs(12));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s = rt.block_on(dial(opts)).expect("dial");
    assert_eq!(s.status, 200, "{s:?}\n{}", pbx.log());
    assert_eq!(s.hangup, Hangup::Remote, "{s:?}\n{}", pbx.log());
    // 1 s of audio + 2 s timeout (+ up to a tick and scheduling).
    assert!(
        (2800..5000).contains(&s.duration_ms),
        "hung up after {} ms",
        s.duration_ms
    );
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
}

#[test]
fn rtp_is_continuous_across_two_playbacks() {
    if !have_sipp() {
        return;
    }
    let (pbx, sip_port) = start_pbx("");
    let cap = Capture::start();
    let ok = run_sipp_uac(sip_port, "media_uac_listen.xml", "twice", Some(cap.port));
    let pkts = cap.finish();
    assert!(ok, "sipp failed\n{}", pbx.log());
    let audio: Vec<&Rtp> = pkts.iter().filter(|p| p.pt == 0).collect();
    // hello-world is 1.4 s: two playbacks are about 140 packets.
    assert!(
        (130..=150).contains(&audio.len()),
        "{} audio packets",
        audio.len()
    );
    let first = audio[0];
    assert!(first.marker, "the first packet must carry the marker bit");
    let mut markers = 0;
    for w in audio.windows(2) {
        let (a, b) = (w[0], w[1]);
        assert_eq!(b.ssrc, first.ssrc, "SSRC changed between playbacks");
        assert_eq!(
            b.seq,
            a.seq.wrapping_add(1),
            "sequence gap {} -> {}",
            a.seq,
            b.seq
        );
        let dts = b.ts.wrapping_sub(a.ts);
        assert!(
            !a.payload.is_empty() && a.payload.len() <= 160,
            "packet of {} bytes (20 ms at most)",
            a.payload.len()
        );
        // µ-law: one timestamp unit per byte. The next packet starts where this one ended
        // (a prompt's last, short frame included), unless a marked jump follows a real pause.
        if dts != a.payload.len() as u32 {
            assert!(b.marker, "unmarked timestamp step {dts} at seq {}", b.seq);
            assert!(dts < 8000, "timestamp jump {dts} at seq {}", b.seq);
        }
        if b.marker {
            markers += 1;
        }
    }
    assert!(markers <= 1, "{markers} marker bits after the first packet");
    // Media time tracks real time: over the whole call the timestamps advance as the
    // arrival times do (within 80 ms, loopback scheduling jitter included).
    let last = audio[audio.len() - 1];
    let media_ms = last.ts.wrapping_sub(first.ts) as f64 / 8.0;
    let wall_ms = last.at.duration_since(first.at).as_secs_f64() * 1000.0;
    assert!(
        (media_ms - wall_ms).abs() < 80.0,
        "media time {media_ms} ms vs wall time {wall_ms} ms"
    );
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
}
