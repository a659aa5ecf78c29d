//! Asterisk `.conf` dialect: sections, templates, `#include`, `=>`, `+=`, comments.
//!
//! Parsed once into [`ConfFile`]; modules turn sections into their typed configs.
//! Every error names the file and line and what was expected.

pub mod parser;

use std::path::{Path, PathBuf};

pub use parser::{parse_file, parse_str};

/// How a value was assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `key = value`
    Assign,
    /// `key => value` (objects in extensions.conf etc.)
    Object,
    /// `key += value` (append to the previous value of key in this section)
    Append,
}

/// One `key = value` line (after template expansion, `+=` already applied).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub op: Op,
    pub file: PathBuf,
    pub line: usize,
}

/// A `[name]` section. Template sections (`[t](!)`) are kept with `is_template`;
/// sections that inherit (`[x](t1,t2)`) already contain the template entries first.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub name: String,
    pub is_template: bool,
    pub templates: Vec<String>,
    pub entries: Vec<Entry>,
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfFile {
    pub path: PathBuf,
    /// Sections in file order; the same name may appear more than once.
    pub sections: Vec<Section>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("{file}:{line}: {message}")]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &Path, line: usize, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line,
            message: message.into(),
        }
    }
    /// An error about a value, located at the entry.
    pub fn at(entry: &Entry, message: impl Into<String>) -> Self {
        ConfigError::new(&entry.file, entry.line, message)
    }
}

impl ConfFile {
    /// Non-template sections with this name (case-sensitive, as Asterisk).
    pub fn sections_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Section> + 'a {
        self.sections
            .iter()
            .filter(move |s| s.name == name && !s.is_template)
    }
    /// The first non-template section with this name.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| s.name == name && !s.is_template)
    }
    /// All non-template sections.
    pub fn real_sections(&self) -> impl Iterator<Item = &Section> {
        self.sections.iter().filter(|s| !s.is_template)
    }
    /// Load `name` from `dir`; `Ok(None)` when the file does not exist (optional module config).
    pub fn load_optional(dir: &Path, name: &str) -> Result<Option<ConfFile>, ConfigError> {
        let p = dir.join(name);
        if !p.exists() {
            return Ok(None);
        }
        parse_file(&p).map(Some)
    }
}

impl Section {
    /// Last value of `key` (later lines override earlier ones, templates come first).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.key.eq_ignore_ascii_case(key))
            .map(|e| e.value.as_str())
    }
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.key.eq_ignore_ascii_case(key))
    }
    /// Every value of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.key.eq_ignore_ascii_case(key))
            .map(|e| e.value.as_str())
    }
    /// Asterisk truth values: yes/true/y/t/1/on.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).map(is_true)
    }
    pub fn get_parse<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        match self.entry(key) {
            None => Ok(None),
            Some(e) => e.value.trim().parse::<T>().map(Some).map_err(|_| {
                ConfigError::at(e, format!("invalid value '{}' for '{}'", e.value, e.key))
            }),
        }
    }
}

/// `ast_true`.
pub fn is_true(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "yes" | "true" | "y" | "t" | "1" | "on"
    )
}

/// Where `scripts/setup.sh` puts what voxpbx reads at run time besides its configuration: the
/// source tree the binary was built from, with `models/` (speech models), `grammars/` and
/// `sounds/` (the demo prompts). These are the defaults of voxpbx.conf `[directories]`
/// `models`, `grammars` and `sounds`, so a configuration copied anywhere still finds them.
pub fn install_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
