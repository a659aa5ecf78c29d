//! extensions.conf: model, patterns, expressions, substitution, functions, the PBX loop.
pub mod expr;
pub mod pattern;
pub mod subst;
pub mod timespec;
