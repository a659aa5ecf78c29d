//! Dialplan applications, one file per family.
pub mod agi;
pub mod basic;
pub mod confbridge;
pub mod dial;
pub mod flow;
pub mod misc;
pub mod playback;
pub mod speech;

use crate::core::Core;

/// Register every application.
pub fn register_all(core: &Core) {
    crate::dialplan::pbx::register_apps(core, basic::apps());
    crate::dialplan::pbx::register_apps(core, flow::apps());
    crate::dialplan::pbx::register_apps(core, dial::apps());
    crate::dialplan::pbx::register_apps(core, confbridge::apps());
    crate::dialplan::pbx::register_apps(core, playback::apps());
    crate::dialplan::pbx::register_apps(core, speech::apps());
    crate::dialplan::pbx::register_apps(core, agi::apps());
    crate::dialplan::pbx::register_apps(core, misc::apps());
    crate::dialplan::pbx::register_funcs(core, speech::funcs());
}

/// Parse application options like `tT` or `L(60000:30000)`: letter -> optional argument.
pub fn parse_options(s: &str) -> Vec<(char, Option<String>)> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if i < chars.len() && chars[i] == '(' {
            let mut depth = 1;
            let start = i + 1;
            i += 1;
            while i < chars.len() && depth > 0 {
                match chars[i] {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                i += 1;
            }
            let end = if depth == 0 { i - 1 } else { i };
            out.push((c, Some(chars[start..end].iter().collect())));
        } else {
            out.push((c, None));
        }
    }
    out
}

pub fn has_opt(opts: &[(char, Option<String>)], c: char) -> bool {
    opts.iter().any(|(o, _)| *o == c)
}

pub fn opt_arg(opts: &[(char, Option<String>)], c: char) -> Option<String> {
    opts.iter()
        .find(|(o, _)| *o == c)
        .and_then(|(_, a)| a.clone())
}
