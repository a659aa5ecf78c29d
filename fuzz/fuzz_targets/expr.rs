//! Fuzz `$[...]` expression evaluation: any input must give a value or an `ExprError`,
//! never a panic, a hang or a stack overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxpbx::dialplan::expr::evaluate;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = evaluate(&text);
});
