//! Fuzz the `.conf` parser: any text must give `Ok` or a `ConfigError`, never a panic or hang.
//! Run with `cargo +nightly fuzz run config_parser` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    // Bytes that are not UTF-8 are read lossily, as parse_file does.
    let text = String::from_utf8_lossy(data);
    // A directory that does not exist, so relative `#include`s find nothing on disk.
    let name = Path::new("/nonexistent-voxpbx-fuzz/fuzz.conf");
    if let Ok(conf) = voxpbx::config::parse_str(&text, name) {
        // Exercise the accessors on whatever came out.
        for section in conf.real_sections() {
            let _ = section.get("key");
            let _ = section.get_bool("key");
        }
    }
});
