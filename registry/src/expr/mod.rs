//! The `--where` query-expression language (after LSST daf_butler's):
//! `exposure IN (2..4, 10..20:2) AND detector != 3 OR
//! exposure.exposure_time > :t AND instrument = 'Cam'`, and spatial
//! predicates on region fields: `visit.region OVERLAPS POINT(ra, dec)`,
//! `patch.region OVERLAPS CIRCLE(ra, dec, radius)` (degrees).
//!
//! Owns: lexing, parsing, type checking and compiling expressions to a
//! parameterised SQL condition. Must not: know table names, aliases or the
//! dimension universe — identifiers are turned into SQL only by the caller's
//! [`ColumnResolver`] — or ever place user text in SQL: every literal and
//! bind value becomes a `?` parameter (a shape becomes one blob parameter
//! tested by the registry's SQL function `quanta_region_overlaps`).
//!
//! Use: [`parse`] the text, ask [`Expr::identifiers`] which columns to join,
//! then [`compile`] with a resolver for those columns. An [`Expr`] displays
//! in a canonical form that parses back to the same tree.

mod compile;
mod lexer;
mod parser;
mod print;

#[cfg(test)]
mod tests;

pub use compile::{
    compile, compile_into, ColumnResolver, CompiledWhere, ResolvedColumn, SkyPixel, SkyPixelRegion,
};
pub use parser::{parse, CompareOp, Expr, Identifier, InItem, Literal, Node, Operand, Shape};

/// A problem in an expression, located at a 1-based character column.
///
/// Displays as the message, the expression, and a caret under the column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(self))]
pub struct ExprError {
    /// 1-based; one past the last character when the problem is the end.
    pub column: usize,
    pub message: String,
    /// The whole expression.
    pub text: String,
}

impl ExprError {
    pub(crate) fn new(text: &str, column: usize, message: String) -> ExprError {
        ExprError {
            column,
            message,
            text: text.to_string(),
        }
    }
}

fn render(e: &ExprError) -> String {
    // Line breaks would separate the caret from its line, and tabs would
    // shift it; echo tabs in the caret's indent so it still lines up.
    let shown: String = e
        .text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    let indent: String = e
        .text
        .chars()
        .chain(std::iter::repeat(' '))
        .take(e.column.saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    format!(
        "{} at column {}\n  {shown}\n  {indent}^",
        e.message, e.column
    )
}
