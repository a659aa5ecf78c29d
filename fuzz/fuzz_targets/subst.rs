//! Fuzz `${...}` / `$[...]` template parsing and the helpers around it. Besides "no panic",
//! it checks that a template's `Display` parses back to the same template.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxpbx::dialplan::subst::{parse, split_args, split_function_call, substring, substring_spec};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let template = parse(&text);
    let printed = template.to_string();
    assert_eq!(
        parse(&printed),
        template,
        "display of {text:?} was {printed:?}"
    );

    let _ = split_args(&text);
    let _ = split_function_call(&text);
    let (offset, length) = match text.split_once(':') {
        Some((o, l)) => substring_spec(o, Some(l)),
        None => substring_spec(&text, None),
    };
    let _ = substring(&text, offset, length);
});
