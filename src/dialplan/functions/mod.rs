//! Dialplan functions, one file per family.
pub mod core_funcs;
pub mod files;
pub mod math;
pub mod strings;
pub mod time;

use crate::core::Core;

pub fn register_all(core: &Core) {
    crate::dialplan::pbx::register_funcs(core, core_funcs::funcs());
    crate::dialplan::pbx::register_funcs(core, strings::funcs());
    crate::dialplan::pbx::register_funcs(core, math::funcs());
    crate::dialplan::pbx::register_funcs(core, time::funcs());
    crate::dialplan::pbx::register_funcs(core, files::funcs());
}
