//! SIP end to end against SIPp (skipped with a note when `sipp` is not installed).

mod common;
use common::*;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

fn have_sipp() -> bool {
    Command::new("sipp").arg("-v").output().is_ok()
}

const DIALPLAN: &str = r#"
[from-sip]
exten => 100,1,Answer()
 same => n,Playback(hello-world)
 same => n,Wait(10)
 same => n,Hangup()
"#;

fn pjsip_conf(sip_port: u16) -> String {
    format!(
        "[udp]\ntype=transport\nprotocol=udp\nbind=127.0.0.1:{sip_port}\n\n\
         [sipp]\ntype=endpoint\ncontext=from-sip\nallow=ulaw\naors=sipp\nrtp_symmetric=yes\n\n\
         [sipp]\ntype=aor\nmax_contacts=1\n\n\
         [sipp-id]\ntype=identify\nendpoint=sipp\nmatch=127.0.0.1\n"
    )
}

#[test]
fn sipp_uac_call_gets_answered_with_audio() {
    if !have_sipp() {
        eprintln!("sipp not installed: skipping");
        return;
    }
    let sip_port = free_udp_port();
    let rtp = free_rtp_range(20);
    let pbx = TestPbx::start(&[
        ("extensions.conf", DIALPLAN),
        ("pjsip.conf", &pjsip_conf(sip_port)),
        (
            "rtp.conf",
            &format!("[general]\nrtpstart={rtp}\nrtpend={}\n", rtp + 19),
        ),
    ]);
    // The "phone's" RTP port: count what voxpbx sends us.
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    media
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let media_port = media.local_addr().unwrap().port();
    let sipp_port = free_udp_port();
    let scen = repo().join("tests/sipp/uac_hello.xml");
    let mut child = Command::new("sipp")
        .arg(format!("127.0.0.1:{sip_port}"))
        .args(["-sf"])
        .arg(&scen)
        .args(["-s", "100", "-m", "1", "-i", "127.0.0.1", "-nostdin"])
        .args(["-p", &sipp_port.to_string()])
        .args(["-key", "rtpport", &media_port.to_string()])
        .args(["-timeout", "20s", "-timeout_error"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run sipp");
    let mut packets = 0;
    let mut buf = [0u8; 2048];
    let end = Instant::now() + Duration::from_secs(25);
    let status = loop {
        if let Ok((n, _)) = media.recv_from(&mut buf) {
            if n >= 12 && buf[0] >> 6 == 2 {
                packets += 1;
            }
        }
        if let Ok(Some(st)) = child.try_wait() {
            break Some(st);
        }
        if Instant::now() > end {
            let _ = child.kill();
            break None;
        }
    };
    assert!(
        status.is_some_and(|s| s.success()),
        "sipp failed: {status:?}\n{}",
        pbx.log()
    );
    assert!(packets > 20, "only {packets} RTP packets arrived");
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
}

#[test]
fn dial_to_sipp_uas_is_answered_and_hung_up_with_bye() {
    if !have_sipp() {
        eprintln!("sipp not installed: skipping");
        return;
    }
    let sip_port = free_udp_port();
    let sipp_port = free_udp_port();
    let rtp = free_rtp_range(20);
    let dialplan = format!(
        "[from-sip]\nexten => 200,1,Dial(PJSIP/sipp/sip:service@127.0.0.1:{sipp_port},10)\n \
         exten => h,1,System(echo \"${{DIALSTATUS}}\" > {{DIR}}/dialstatus.txt)\n"
    );
    let pbx = TestPbx::start(&[
        ("extensions.conf", &dialplan),
        ("pjsip.conf", &pjsip_conf(sip_port)),
        (
            "rtp.conf",
            &format!("[general]\nrtpstart={rtp}\nrtpend={}\n", rtp + 19),
        ),
    ]);
    let scen = repo().join("tests/sipp/uas_answer.xml");
    let mut child = Command::new("sipp")
        .args(["-sf"])
        .arg(&scen)
        .args(["-m", "1", "-i", "127.0.0.1", "-nostdin"])
        .args(["-p", &sipp_port.to_string()])
        .args(["-mp", &free_rtp_range(4).to_string()])
        .args(["-timeout", "20s", "-timeout_error"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run sipp");
    std::thread::sleep(Duration::from_millis(500));
    pbx.rx("channel originate Local/200@from-sip application Wait 2");
    let end = Instant::now() + Duration::from_secs(25);
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break Some(st);
        }
        if Instant::now() > end {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.is_some_and(|s| s.success()),
        "sipp failed: {status:?}\n{}",
        pbx.log()
    );
    let st = wait_file(&pbx.path("dialstatus.txt"), 10);
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
    assert_eq!(
        st.as_deref().map(str::trim),
        Some("ANSWER"),
        "{}",
        pbx.log()
    );
}
