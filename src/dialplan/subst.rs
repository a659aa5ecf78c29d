//! Parsing of `${VAR}`, `${VAR:off:len}`, `${FUNC(args)}`, `$[expr]` into a template tree.
//! Evaluation needs the channel and lives in the PBX runtime; this module is pure.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Lit(String),
    /// `${name[:offset[:length]]}`; `name` itself may contain substitutions (`${${X}}`),
    /// and a name ending in `(...)` is a function call.
    Var {
        name: Template,
        offset: Option<Template>,
        length: Option<Template>,
    },
    /// `$[ ... ]`
    Expr(Template),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template(pub Vec<Part>);

pub fn parse(text: &str) -> Template {
    let _ = text;
    todo!("subst")
}

/// Asterisk substring semantics (`${VAR:offset:length}`, negative values too).
pub fn substring(value: &str, offset: i64, length: Option<i64>) -> String {
    let _ = (value, offset, length);
    todo!("subst")
}

pub fn split_args(args: &str) -> Vec<String> {
    let _ = args;
    todo!("subst")
}
