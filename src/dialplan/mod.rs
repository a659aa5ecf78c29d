//! extensions.conf: model, patterns, expressions, substitution, functions, the PBX loop.
pub mod expr;
pub mod functions;
pub mod model;
pub mod originate;
pub mod pattern;
pub mod pbx;
pub mod subst;
pub mod timespec;

pub use model::Dialplan;
pub use pbx::{AppDef, AppExec, AppResult, FuncDef, FuncRead, FuncWrite};
