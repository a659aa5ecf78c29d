//! AMI permission classes (`read=` / `write=` in manager.conf, `Privilege:` on events).
//!
//! The numeric values are Asterisk's `EVENT_FLAG_*` bits, so a numeric `Events:` / `EventMask:`
//! mask sent by an existing client means the same thing here.

use std::fmt;

/// A set of AMI permission classes (a bit mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Perm(pub u32);

impl Perm {
    pub const NONE: Perm = Perm(0);
    pub const SYSTEM: Perm = Perm(1 << 0);
    pub const CALL: Perm = Perm(1 << 1);
    pub const LOG: Perm = Perm(1 << 2);
    pub const VERBOSE: Perm = Perm(1 << 3);
    pub const COMMAND: Perm = Perm(1 << 4);
    pub const AGENT: Perm = Perm(1 << 5);
    pub const USER: Perm = Perm(1 << 6);
    pub const CONFIG: Perm = Perm(1 << 7);
    pub const DTMF: Perm = Perm(1 << 8);
    pub const REPORTING: Perm = Perm(1 << 9);
    pub const CDR: Perm = Perm(1 << 10);
    pub const DIALPLAN: Perm = Perm(1 << 11);
    pub const ORIGINATE: Perm = Perm(1 << 12);
    pub const AGI: Perm = Perm(1 << 13);
    /// Internal (hook responses); never named in manager.conf.
    pub const HOOKRESPONSE: Perm = Perm(1 << 14);
    pub const CC: Perm = Perm(1 << 15);
    pub const AOC: Perm = Perm(1 << 16);
    pub const TEST: Perm = Perm(1 << 17);
    pub const SECURITY: Perm = Perm(1 << 18);
    pub const MESSAGE: Perm = Perm(1 << 30);
    /// `all`: every class (Asterisk uses `INT_MAX`).
    pub const ALL: Perm = Perm(i32::MAX as u32);

    /// Named classes in Asterisk's order (the order used when printing `Privilege:`).
    pub const NAMED: [(Perm, &'static str); 20] = [
        (Perm::SYSTEM, "system"),
        (Perm::CALL, "call"),
        (Perm::LOG, "log"),
        (Perm::VERBOSE, "verbose"),
        (Perm::COMMAND, "command"),
        (Perm::AGENT, "agent"),
        (Perm::USER, "user"),
        (Perm::CONFIG, "config"),
        (Perm::DTMF, "dtmf"),
        (Perm::REPORTING, "reporting"),
        (Perm::CDR, "cdr"),
        (Perm::DIALPLAN, "dialplan"),
        (Perm::ORIGINATE, "originate"),
        (Perm::AGI, "agi"),
        (Perm::CC, "cc"),
        (Perm::AOC, "aoc"),
        (Perm::TEST, "test"),
        (Perm::SECURITY, "security"),
        (Perm::MESSAGE, "message"),
        (Perm::ALL, "all"),
    ];

    pub const fn bits(self) -> u32 {
        self.0
    }
    pub const fn union(self, other: Perm) -> Perm {
        Perm(self.0 | other.0)
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Every bit of `other` is in `self` (how events are checked against read permission).
    pub const fn contains(self, other: Perm) -> bool {
        self.0 & other.0 == other.0
    }
    /// At least one bit in common (how actions are checked against write permission).
    pub const fn intersects(self, other: Perm) -> bool {
        self.0 & other.0 != 0
    }

    /// Parse a class list such as `system,call,log` (manager.conf `read=`/`write=`).
    /// Unknown names are ignored, as Asterisk does; `none` or an empty list give no class.
    pub fn parse_list(list: &str) -> Perm {
        let mut p = Perm::NONE;
        for tok in list.split(',') {
            let tok = tok.trim();
            if let Some((bit, _)) = Perm::NAMED
                .iter()
                .find(|(_, n)| n.eq_ignore_ascii_case(tok))
            {
                p = p.union(*bit);
            }
        }
        p
    }

    /// Parse an `Events:` / `EventMask:` value the way Asterisk's `strings_to_mask` does:
    /// all digits -> a numeric mask; a false value (`off`, `no`, ...) -> none; a true value
    /// (`on`, `yes`, ...) -> every class; otherwise a class list. `None` for an empty value.
    pub fn parse_event_mask(value: &str) -> Option<Perm> {
        let v = value.trim();
        if v.is_empty() {
            return None;
        }
        if v.bytes().all(|b| b.is_ascii_digit()) {
            // Out-of-range numbers saturate to every class rather than failing.
            return Some(Perm(v.parse::<u32>().unwrap_or(u32::MAX) & Perm::ALL.0));
        }
        if is_false(v) {
            return Some(Perm::NONE);
        }
        if crate::config::is_true(v) {
            return Some(Perm::ALL);
        }
        Some(Perm::parse_list(v))
    }

    /// The `Privilege:` text for an event of this class: each named class that is set,
    /// comma-separated, with `all` always last for a non-empty class (`call,all`);
    /// `<none>` for no class. Matches Asterisk's `authority_to_str`.
    pub fn privilege_string(self) -> String {
        let mut s = String::new();
        for (bit, name) in Perm::NAMED.iter() {
            if self.0 & bit.0 != 0 {
                if !s.is_empty() {
                    s.push(',');
                }
                s.push_str(name);
            }
        }
        if s.is_empty() {
            s.push_str("<none>");
        }
        s
    }
}

impl std::ops::BitOr for Perm {
    type Output = Perm;
    fn bitor(self, rhs: Perm) -> Perm {
        self.union(rhs)
    }
}

impl std::ops::BitOrAssign for Perm {
    fn bitor_assign(&mut self, rhs: Perm) {
        self.0 |= rhs.0;
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.privilege_string())
    }
}

/// `ast_false`: no/false/n/f/0/off.
pub fn is_false(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "no" | "false" | "n" | "f" | "0" | "off"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_values_match_asterisk() {
        assert_eq!(Perm::SYSTEM.bits(), 1);
        assert_eq!(Perm::AGI.bits(), 8192);
        assert_eq!(Perm::SECURITY.bits(), 1 << 18);
        assert_eq!(Perm::MESSAGE.bits(), 1 << 30);
        assert_eq!(Perm::ALL.bits(), 0x7fff_ffff);
    }

    #[test]
    fn parse_list_and_unknown_names() {
        let p = Perm::parse_list("system, call ,bogus,LOG");
        assert_eq!(p, Perm::SYSTEM | Perm::CALL | Perm::LOG);
        assert_eq!(Perm::parse_list(""), Perm::NONE);
        assert_eq!(Perm::parse_list("none"), Perm::NONE);
        assert_eq!(Perm::parse_list("all"), Perm::ALL);
    }

    #[test]
    fn event_mask_forms() {
        assert_eq!(Perm::parse_event_mask("on"), Some(Perm::ALL));
        assert_eq!(Perm::parse_event_mask("yes"), Some(Perm::ALL));
        assert_eq!(Perm::parse_event_mask("off"), Some(Perm::NONE));
        assert_eq!(Perm::parse_event_mask("0"), Some(Perm::NONE));
        assert_eq!(Perm::parse_event_mask("3"), Some(Perm::SYSTEM | Perm::CALL));
        assert_eq!(
            Perm::parse_event_mask("call,agi"),
            Some(Perm::CALL | Perm::AGI)
        );
        assert_eq!(Perm::parse_event_mask(""), None);
        assert_eq!(Perm::parse_event_mask("99999999999999"), Some(Perm::ALL));
    }

    #[test]
    fn privilege_strings() {
        assert_eq!(Perm::CALL.privilege_string(), "call,all");
        assert_eq!(
            (Perm::SYSTEM | Perm::REPORTING).privilege_string(),
            "system,reporting,all"
        );
        assert_eq!(Perm::NONE.privilege_string(), "<none>");
        assert!(Perm::ALL.privilege_string().starts_with("system,call,log"));
        assert!(Perm::ALL.privilege_string().ends_with("message,all"));
    }

    #[test]
    fn contains_vs_intersects() {
        let rw = Perm::CALL | Perm::AGI;
        assert!(rw.contains(Perm::CALL));
        assert!(!rw.contains(Perm::CALL | Perm::SYSTEM));
        assert!(rw.intersects(Perm::CALL | Perm::SYSTEM));
        assert!(!rw.intersects(Perm::CONFIG));
        assert!(rw.contains(Perm::NONE));
    }
}
