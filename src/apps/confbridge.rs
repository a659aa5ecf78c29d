//! ConfBridge: put the channel into a named conference (a mixing bridge, see
//! [`crate::bridge::mixing`]) until it hangs up, is kicked or leaves through its DTMF menu.

use crate::bridge::mixing::{
    ConfRegistry, MenuAction, MenuMatch, ParticipantEvent, Profiles, DEFAULT_BRIDGE_PROFILE,
    DEFAULT_MENU, DEFAULT_USER_PROFILE,
};
use crate::channel::{Channel, ChannelState, ReadEvent};
use crate::dialplan::pbx::{self, AppDef, AppExec, AppResult};
use crate::dialplan::subst::split_args;
use futures_util::future::BoxFuture;

pub fn apps() -> Vec<AppDef> {
    vec![AppDef {
        name: "ConfBridge",
        synopsis: "Conference bridge application",
        exec: AppExec::Async(confbridge),
    }]
}

fn failed(chan: &mut Channel, msg: &str) -> AppResult {
    tracing::warn!("ConfBridge: {}: {}", chan.name, msg);
    pbx::set_var(chan, "CONFBRIDGE_RESULT", "FAILED");
    AppResult::Hangup
}

enum Ev {
    Chan(ReadEvent),
    Conf(ParticipantEvent),
}

/// `ConfBridge(conference[,bridge_profile[,user_profile[,menu]]])`.
fn confbridge<'a>(chan: &'a mut Channel, args: &'a str) -> BoxFuture<'a, AppResult> {
    Box::pin(async move {
        let a = split_args(args);
        let arg = |i: usize| {
            a.get(i)
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(|s| s.to_string())
        };
        let Some(name) = arg(0) else {
            return failed(
                chan,
                "ConfBridge requires an argument (conference name[,options])",
            );
        };
        let profiles = match Profiles::load(&chan.core.dirs.conf) {
            Ok(p) => p,
            Err(e) => return failed(chan, &format!("confbridge.conf: {e}")),
        };
        let bname = arg(1).unwrap_or_else(|| DEFAULT_BRIDGE_PROFILE.to_string());
        let uname = arg(2).unwrap_or_else(|| DEFAULT_USER_PROFILE.to_string());
        let mname = arg(3).unwrap_or_else(|| DEFAULT_MENU.to_string());
        let (bridge, user, menu) = match (
            profiles.bridge(&bname),
            profiles.user(&uname),
            profiles.menu(&mname),
        ) {
            (Ok(b), Ok(u), Ok(m)) => (b.clone(), u.clone(), m.clone()),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                return failed(chan, &e.to_string())
            }
        };
        if chan.state != ChannelState::Up {
            chan.answer();
        }
        let reg = ConfRegistry::of(&chan.core);
        let mut p = match reg.join(chan, &name, &bridge, &user, &menu.name) {
            Ok(p) => p,
            Err(e) => return failed(chan, &e.to_string()),
        };
        chan.set_read_format(Some(p.format()));
        let mut digits = String::new();
        let result: Option<&'static str> = loop {
            let ev = tokio::select! {
                ev = chan.read() => Ev::Chan(ev),
                pe = p.recv() => Ev::Conf(pe),
            };
            match ev {
                Ev::Chan(ReadEvent::Voice(f)) => {
                    p.send_audio(f);
                }
                Ev::Chan(ReadEvent::Dtmf(d)) => {
                    digits.push(d);
                    match menu.lookup(&digits) {
                        MenuMatch::Exact(action) => {
                            digits.clear();
                            match action {
                                MenuAction::ToggleMute => {
                                    p.set_muted(!p.is_muted());
                                }
                                MenuAction::LeaveConference => break Some("DTMF"),
                                MenuAction::NoOp => {}
                            }
                        }
                        MenuMatch::Prefix => {}
                        MenuMatch::None => digits.clear(),
                    }
                }
                Ev::Chan(ReadEvent::Hangup) => break Some("HANGUP"),
                // An async goto: leave and let the PBX loop follow it.
                Ev::Chan(ReadEvent::Interrupted) => break None,
                Ev::Chan(_) => {}
                Ev::Conf(ParticipantEvent::Audio(f)) => {
                    if f.format != chan.read_format() {
                        chan.set_read_format(Some(f.format));
                    }
                    chan.write(&f);
                }
                Ev::Conf(ParticipantEvent::Muted(m)) => p.publish_mute(chan, m),
                Ev::Conf(ParticipantEvent::Kicked) => break Some("KICKED"),
                Ev::Conf(ParticipantEvent::Closed) => break Some("FAILED"),
            }
        };
        p.leave(chan);
        chan.set_read_format(None);
        if let Some(r) = result {
            pbx::set_var(chan, "CONFBRIDGE_RESULT", r);
        }
        if result == Some("HANGUP") {
            AppResult::Hangup
        } else {
            AppResult::Continue
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::mixing::tests::test_core;
    use crate::bridge::mixing::{cli_list, ConfRegistry};
    use crate::channel::{ChanMsg, TechLink};
    use crate::media::{Format, Frame};
    use std::time::{Duration, Instant};

    /// Act as a far end for `ms`: send a 20 ms frame of `send` (if any) every 20 ms and
    /// collect the frames the channel writes.
    async fn pump(link: &mut TechLink, send: Option<i16>, ms: u64) -> Vec<Frame> {
        let mut got = Vec::new();
        let end = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < end {
            if let Some(v) = send {
                let _ = link
                    .tx
                    .send(ChanMsg::Frame(Frame::from_slin(Format::Slin8, &[v; 160])))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            while let Ok(m) = link.rx.try_recv() {
                if let ChanMsg::Frame(f) = m {
                    got.push(f);
                }
            }
        }
        got
    }

    fn has(frames: &[Frame], v: i16) -> bool {
        frames
            .iter()
            .any(|f| f.slin_samples().iter().all(|s| *s == v))
    }

    async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn muted(core: &crate::core::Core, chan: &str) -> bool {
        ConfRegistry::of(core)
            .find("room")
            .map(|c| c.members().iter().any(|m| m.channel == chan && m.muted))
            .unwrap_or(false)
    }

    #[tokio::test]
    async fn two_parties_talk_mute_by_dtmf_kick_and_hang_up() {
        let (core, _dir) = test_core();
        let mut far = Vec::new();
        let mut tasks = Vec::new();
        for name in ["Test/A", "Test/B"] {
            let (l1, l2) = TechLink::pair("Test", Format::Slin8);
            let mut ch = Channel::new(&core, name.to_string(), l1);
            far.push(l2);
            tasks.push(tokio::spawn(async move {
                let r = confbridge(&mut ch, "room").await;
                (r, ch)
            }));
        }
        let reg = ConfRegistry::of(&core);
        wait_for("two members", || {
            reg.find("room").map(|c| c.len()) == Some(2)
        })
        .await;
        let (fa, fb) = far.split_at_mut(1);
        let (fa, fb) = (&mut fa[0], &mut fb[0]);
        // A talks; B hears it, A hears silence.
        let (heard_a, heard_b) = tokio::join!(pump(fa, Some(2000), 300), pump(fb, None, 300));
        assert!(has(&heard_b, 2000), "B did not hear A");
        assert!(
            !heard_a.is_empty() && !has(&heard_a, 2000),
            "A heard itself"
        );
        // B presses * : muted; A no longer hears B.
        fb.tx.send(ChanMsg::DtmfBegin('*')).await.unwrap();
        fb.tx.send(ChanMsg::DtmfEnd('*', 100)).await.unwrap();
        wait_for("B muted", || muted(&core, "Test/B")).await;
        assert!(cli_list(&core, &["room".into()]).contains("default_user"));
        pump(fa, None, 40).await;
        let (heard_a, _) = tokio::join!(pump(fa, None, 300), pump(fb, Some(3000), 300));
        assert!(
            !heard_a.is_empty() && !has(&heard_a, 3000),
            "muted audio leaked"
        );
        // * again: unmuted.
        fb.tx.send(ChanMsg::DtmfEnd('*', 100)).await.unwrap();
        wait_for("B unmuted", || !muted(&core, "Test/B")).await;
        let (heard_a, _) = tokio::join!(pump(fa, None, 300), pump(fb, Some(3000), 300));
        assert!(has(&heard_a, 3000), "A does not hear B after unmute");
        // Kick A: its ConfBridge returns and the dialplan would continue.
        let out = crate::bridge::mixing::cli_list(&core, &[]);
        assert!(out.contains("room"), "{out}");
        assert!(core
            .run_cli("confbridge kick room Test/A")
            .await
            .contains("No such command"));
        crate::bridge::mixing::register(&core);
        assert_eq!(
            core.run_cli("confbridge kick room Test/A").await,
            "Kicked 'Test/A' out of conference 'room'\n"
        );
        let (r, a) = tasks.remove(0).await.unwrap();
        assert_eq!(r, AppResult::Continue);
        assert_eq!(a.vars.get("CONFBRIDGE_RESULT"), Some("KICKED"));
        // B hangs up.
        fb.tx.send(ChanMsg::Hangup(16)).await.unwrap();
        let (r, b) = tasks.remove(0).await.unwrap();
        assert_eq!(r, AppResult::Hangup);
        assert_eq!(b.vars.get("CONFBRIDGE_RESULT"), Some("HANGUP"));
        assert!(reg.list().is_empty());
        assert_eq!(
            core.run_cli("confbridge list room").await,
            "No conference bridge named 'room' found!\n"
        );
    }

    #[tokio::test]
    async fn bad_arguments_fail() {
        let (core, dir) = test_core();
        std::fs::write(
            dir.path().join("confbridge.conf"),
            "[tiny]\ntype=bridge\nmax_members=1\n",
        )
        .unwrap();
        for (args, chan_name) in [
            ("", "Test/1"),
            ("room,nosuch", "Test/2"),
            ("room,,nouser", "Test/3"),
            ("room,,,nomenu", "Test/4"),
        ] {
            let (l1, _l2) = TechLink::pair("Test", Format::Slin8);
            let mut ch = Channel::new(&core, chan_name.to_string(), l1);
            assert_eq!(confbridge(&mut ch, args).await, AppResult::Hangup, "{args}");
            assert_eq!(ch.vars.get("CONFBRIDGE_RESULT"), Some("FAILED"), "{args}");
        }
        // A full conference refuses the next member.
        let (l1, l2) = TechLink::pair("Test", Format::Slin8);
        let mut first = Channel::new(&core, "Test/first".into(), l1);
        let t = tokio::spawn(async move {
            let r = confbridge(&mut first, "small,tiny").await;
            (r, first)
        });
        let reg = ConfRegistry::of(&core);
        wait_for("first member", || reg.find("small").is_some()).await;
        let (m1, _m2) = TechLink::pair("Test", Format::Slin8);
        let mut second = Channel::new(&core, "Test/second".into(), m1);
        assert_eq!(
            confbridge(&mut second, "small,tiny").await,
            AppResult::Hangup
        );
        assert_eq!(second.vars.get("CONFBRIDGE_RESULT"), Some("FAILED"));
        l2.tx.send(ChanMsg::Hangup(16)).await.unwrap();
        let (r, _) = t.await.unwrap();
        assert_eq!(r, AppResult::Hangup);
    }
}
