//! The canonical text of a syntax tree: `parse(print(e))` gives `e` back
//! (up to the columns recorded in it), and printing that again gives the
//! same text. Used for messages and by the round-trip property tests.
//!
//! Canonical form: keywords and shape names (`POINT`, `CIRCLE`) in upper
//! case, single spaces, `!=` for not equal, `, ` between arguments,
//! strings in single quotes, floats with a fraction or exponent, and
//! parentheses exactly where the tree needs them: around an `AND`/`OR`
//! chain inside another chain (a nested chain of the same kind came from
//! parentheses, and an `OR` inside `AND` needs them) or under `NOT`.

use std::fmt;

use super::parser::{CompareOp, Expr, InItem, Node, Operand, Shape};

impl fmt::Display for Expr {
    /// The canonical form of the expression, not necessarily its original
    /// text (see [`Expr::text`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.root.fmt(f)
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CompareOp::Eq => "=",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        })
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Ident(id) => id.fmt(f),
            Operand::Literal { value, .. } => value.fmt(f),
            Operand::Bind { name, .. } => write!(f, ":{name}"),
        }
    }
}

impl fmt::Display for InItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InItem::Value(op) => op.fmt(f),
            InItem::Range {
                start,
                stop,
                stride: 1,
                ..
            } => write!(f, "{start}..{stop}"),
            InItem::Range {
                start,
                stop,
                stride,
                ..
            } => write!(f, "{start}..{stop}:{stride}"),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.name())?;
        for (i, (_, arg)) in self.args().into_iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            arg.fmt(f)?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for Node {
    // Recursion depth is that of the tree, which the parser bounds; chains
    // are flat.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Or(terms) => chain(f, terms, " OR ", |t| matches!(t, Node::Or(_))),
            Node::And(terms) => chain(f, terms, " AND ", |t| {
                matches!(t, Node::Or(_) | Node::And(_))
            }),
            Node::Not(inner) => {
                if matches!(**inner, Node::Or(_) | Node::And(_)) {
                    write!(f, "NOT ({inner})")
                } else {
                    write!(f, "NOT {inner}")
                }
            }
            Node::Compare { lhs, op, rhs, .. } => write!(f, "{lhs} {op} {rhs}"),
            Node::In {
                lhs,
                negated,
                items,
                ..
            } => {
                write!(f, "{lhs} {}IN (", if *negated { "NOT " } else { "" })?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    item.fmt(f)?;
                }
                f.write_str(")")
            }
            Node::Truth(op) => op.fmt(f),
            Node::Overlaps { region, shape, .. } => write!(f, "{region} OVERLAPS {shape}"),
        }
    }
}

fn chain(
    f: &mut fmt::Formatter<'_>,
    terms: &[Node],
    sep: &str,
    needs_parens: impl Fn(&Node) -> bool,
) -> fmt::Result {
    for (i, term) in terms.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        if needs_parens(term) {
            write!(f, "({term})")?;
        } else {
            write!(f, "{term}")?;
        }
    }
    Ok(())
}
