//! Interop with a second real SIP user agent: baresip (Debian `baresip-core`), driven headless
//! with a generated config (`baresip -f DIR -e "/dial ..." -t SECS`): it plays a WAV through
//! the `aufile` source, and the `sndfile` filter dumps what it sent and what it received to
//! WAV files that the tests compare. Skipped with a NOTE when baresip is not installed.
//!
//! - baresip calls voxpbx's Echo(): what baresip hears back is what it sent.
//! - voxpbx calls baresip (`Dial(PJSIP/baresip/sip:bob@...)`, baresip auto-answers): the
//!   prompt played on the calling side reaches baresip, DIALSTATUS is ANSWER.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use voxpbx::sip::ua::best_correlation;

const BARESIP: &str = "/usr/bin/baresip";
const MODULES: &str = "/usr/lib/baresip/modules";

fn have_baresip() -> bool {
    if Path::new(BARESIP).exists() && Path::new(MODULES).join("sndfile.so").exists() {
        true
    } else {
        eprintln!("NOTE: baresip (Debian package baresip) not installed; skipping interop test");
        false
    }
}

/// A headless baresip in its own config dir; killed on drop.
struct Baresip {
    dir: tempfile::TempDir,
    child: Child,
}

impl Baresip {
    /// `play`: the WAV (8 kHz mono) it sends; the call ends when the file ends. `commands`
    /// run at start-up (`-e`). It quits by itself after `secs`.
    fn start(sip_port: u16, play: &Path, commands: &[String], secs: u32) -> Baresip {
        let dir = tempfile::tempdir().expect("tempdir");
        let rtp = free_rtp_range(8);
        let config = format!(
            "poll_method\t\tepoll\n\
             sip_listen\t\t127.0.0.1:{sip_port}\n\
             audio_player\t\taubridge,nowhere\n\
             audio_source\t\taufile,{play}\n\
             audio_alert\t\taubridge,nowhere\n\
             audio_srate\t\t8000\n\
             audio_channels\t\t1\n\
             rtp_ports\t\t{rtp}-{}\n\
             module_path\t\t{MODULES}\n\
             module\t\t\tg711.so\n\
             module\t\t\taufile.so\n\
             module\t\t\taubridge.so\n\
             module\t\t\tsndfile.so\n\
             snd_path\t\t{dump}\n\
             module_app\t\taccount.so\n\
             module_app\t\tmenu.so\n",
            rtp + 7,
            play = play.display(),
            dump = dir.path().display(),
        );
        std::fs::write(dir.path().join("config"), config).expect("config");
        std::fs::write(
            dir.path().join("accounts"),
            format!("<sip:bob@127.0.0.1:{sip_port}>;regint=0;answermode=auto;audio_codecs=PCMU\n"),
        )
        .expect("accounts");
        let log = std::fs::File::create(dir.path().join("baresip.log")).expect("log");
        let mut cmd = Command::new(BARESIP);
        cmd.arg("-f").arg(dir.path());
        for c in commands {
            cmd.arg("-e").arg(c);
        }
        let child = cmd
            .args(["-t", &secs.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start baresip");
        Baresip { dir, child }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default()
    }

    /// Wait for baresip to exit (it does after `-t` seconds); false on timeout.
    fn wait(&mut self, secs: u64) -> bool {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The sndfile dump ending in `-enc.wav` (sent) or `-dec.wav` (received).
    fn dump(&self, suffix: &str) -> Option<Vec<i16>> {
        let path: PathBuf = std::fs::read_dir(self.dir.path())
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().ends_with(suffix))?;
        read_wav(&path)
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_wav(path: &Path) -> Option<Vec<i16>> {
    let r = hound::WavReader::open(path).ok()?;
    r.into_samples::<i16>().collect::<Result<Vec<_>, _>>().ok()
}

fn mean_abs(x: &[i16]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    x.iter().map(|&v| (v as f64).abs()).sum::<f64>() / x.len() as f64
}

fn start_pbx(bs_port: u16) -> (TestPbx, u16) {
    let sip_port = free_udp_port();
    let rtp = free_rtp_range(20);
    let dialplan = format!(
        "[from-sip]\n\
         exten => echo,1,Answer()\n same => n,Echo()\n\
         exten => dialbs,1,Dial(PJSIP/baresip/sip:bob@127.0.0.1:{bs_port},10)\n\
         exten => h,1,System(echo \"${{DIALSTATUS}}\" > {{DIR}}/dialstatus)\n"
    );
    let pjsip = format!(
        "[udp]\ntype=transport\nprotocol=udp\nbind=127.0.0.1:{sip_port}\n\n\
         [baresip]\ntype=endpoint\ncontext=from-sip\nallow=ulaw\naors=baresip\n\n\
         [baresip]\ntype=aor\nmax_contacts=1\n\n\
         [baresip-id]\ntype=identify\nendpoint=baresip\nmatch=127.0.0.1\n"
    );
    let pbx = TestPbx::start(&[
        ("extensions.conf", &dialplan),
        ("pjsip.conf", &pjsip),
        (
            "rtp.conf",
            &format!("[general]\nrtpstart={rtp}\nrtpend={}\n", rtp + 19),
        ),
    ]);
    (pbx, sip_port)
}

#[test]
fn baresip_calls_echo() {
    if !have_baresip() {
        return;
    }
    let bs_port = free_udp_port();
    let (pbx, sip_port) = start_pbx(bs_port);
    let wav = pbx.path("play.wav");
    let signal = test_signal(8000, 3000, 440.0, 777);
    write_wav(&wav, 8000, &signal);
    let mut bs = Baresip::start(
        bs_port,
        &wav,
        &[format!("/dial sip:echo@127.0.0.1:{sip_port}")],
        8,
    );
    assert!(bs.wait(20), "baresip did not quit\n{}", bs.log());
    let log = bs.log();
    assert!(log.contains("Call established"), "{log}\n{}", pbx.log());
    assert!(pbx.log().contains("Echo(\"PJSIP/baresip-"), "{}", pbx.log());
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
    let sent = bs.dump("-enc.wav").expect("baresip's encoder dump");
    let got = bs.dump("-dec.wav").expect("baresip's decoder dump");
    assert!(sent.len() >= 20000, "baresip sent {} samples", sent.len());
    // It hears its own signal back: nearly all of it, strongly correlated, little delay.
    assert!(
        got.len() * 10 >= sent.len() * 8,
        "got {} of {} samples back\n{log}",
        got.len(),
        sent.len()
    );
    assert!(mean_abs(&got) > 500.0, "echo is silent");
    let (lag, c) = best_correlation(&sent[..16000], &got, 4000);
    assert!(c > 0.8, "echo correlation {c} at lag {lag}\n{log}");
}

#[test]
fn voxpbx_dials_baresip() {
    if !have_baresip() {
        return;
    }
    let bs_port = free_udp_port();
    let (pbx, _sip_port) = start_pbx(bs_port);
    let wav = pbx.path("play.wav");
    write_wav(&wav, 8000, &test_signal(8000, 3000, 440.0, 777));
    // Auto-answers; its 3 s of audio outlast the 1.4 s prompt, so voxpbx hangs up first.
    let mut bs = Baresip::start(bs_port, &wav, &[], 10);
    std::thread::sleep(Duration::from_millis(700));
    pbx.rx("channel originate Local/dialbs@from-sip application Playback hello-world");
    let st = wait_file(&pbx.path("dialstatus"), 15);
    assert_eq!(
        st.as_deref().map(str::trim),
        Some("ANSWER"),
        "{}\n{}",
        pbx.log(),
        bs.log()
    );
    assert!(pbx.wait_no_channels(10), "{}", pbx.log());
    assert!(bs.wait(20), "baresip did not quit\n{}", bs.log());
    let log = bs.log();
    assert!(log.contains("Call established"), "{log}");
    assert!(log.contains("terminated"), "{log}");
    // The prompt reached baresip: compare with the sound file voxpbx played.
    let got = bs.dump("-dec.wav").expect("baresip's decoder dump");
    let prompt = read_wav(Path::new(
        "/usr/share/asterisk/sounds/en_US_f_Allison/hello-world.wav",
    ));
    assert!(mean_abs(&got) > 200.0, "baresip heard silence\n{log}");
    if let Some(prompt) = prompt {
        let (lag, c) = best_correlation(&prompt[..prompt.len().min(8000)], &got, 8000);
        assert!(c > 0.8, "prompt correlation {c} at lag {lag}");
    }
}
