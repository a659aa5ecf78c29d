//! Dialplan functions, one file per family.
pub mod core_funcs;

use crate::core::Core;

pub fn register_all(core: &Core) {
    crate::dialplan::pbx::register_funcs(core, core_funcs::funcs());
}
