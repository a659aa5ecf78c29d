//! `$[ ... ]` expressions with Asterisk's operator set.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(pub String);

/// Evaluate an already-substituted expression string, as `ast_expr` does.
pub fn evaluate(text: &str) -> Result<String, ExprError> {
    let _ = text;
    todo!("expr")
}
