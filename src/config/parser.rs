//! The `.conf` parser. See the module docs of `config`.
use super::{ConfFile, ConfigError};
use std::path::Path;

/// Parse a file, following `#include` (globs, relative to the including file's directory).
pub fn parse_file(path: &Path) -> Result<ConfFile, ConfigError> {
    let _ = path;
    todo!("config parser")
}

/// Parse text as if it were the file `name` (includes resolve relative to `name`'s directory).
pub fn parse_str(text: &str, name: &Path) -> Result<ConfFile, ConfigError> {
    let _ = (text, name);
    todo!("config parser")
}
