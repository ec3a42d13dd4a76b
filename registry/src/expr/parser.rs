//! The syntax tree and a recursive-descent parser for it.
//!
//! Grammar (keywords case-insensitive; precedence NOT > AND > OR):
//!
//! ```text
//! expr       := and ( OR and )*
//! and        := not ( AND not )*
//! not        := NOT not | '(' expr ')' | predicate
//! predicate  := operand [ cmp operand | [NOT] IN '(' item ( ',' item )* ')' ]
//!             | identifier OVERLAPS shape
//! item       := int '..' int [ ':' int ] | literal | bind
//! operand    := identifier | literal | bind
//! literal    := ['-'] number | string | TRUE | FALSE
//! shape      := POINT '(' coord ',' coord ')'
//!             | CIRCLE '(' coord ',' coord ',' coord ')'
//! coord      := ['-'] number | bind
//! ```
//!
//! `POINT` and `CIRCLE` are words only after `OVERLAPS` (elsewhere they
//! are ordinary names); their arguments are degrees: right ascension,
//! declination and, for a circle, its radius.
//!
//! A bare operand is kept as [`Node::Truth`]; whether it is a usable
//! condition (a boolean field) is only known once columns are resolved.

use std::fmt;

use super::lexer::{quote, tokenize, Token, TokenKind};
use super::ExprError;

/// Parentheses and `NOT` nest by recursion; the limit turns hostile input
/// such as ten thousand `(` into an error instead of a stack overflow.
const MAX_DEPTH: usize = 200;

/// A parsed, non-empty `--where` expression, with the text it came from so
/// later errors (from [`compile`](super::compile)) can point into it.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub root: Node,
    text: String,
}

/// One node of the tree. `AND`/`OR` chains are flat lists so that long
/// chains do not make the tree deep.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Or(Vec<Node>),
    And(Vec<Node>),
    Not(Box<Node>),
    Compare {
        lhs: Operand,
        op: CompareOp,
        rhs: Operand,
        /// Column of the operator.
        column: usize,
    },
    In {
        lhs: Operand,
        negated: bool,
        items: Vec<InItem>,
        /// Column of `IN` (or of `NOT` in `NOT IN`).
        column: usize,
    },
    /// An operand standing alone as a condition, e.g. a boolean field.
    Truth(Operand),
    /// `visit.region OVERLAPS POINT(ra, dec)`: whether a region field
    /// shares at least one point with a shape.
    Overlaps {
        region: Identifier,
        shape: Shape,
        /// Column of `OVERLAPS`.
        column: usize,
    },
}

/// A shape on the sky written in an expression, in degrees. The parser
/// takes only numbers and binds as arguments; their ranges are checked by
/// [`compile`](super::compile), which knows the binds' values.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// `POINT(ra, dec)`: a circle of radius 0.
    Point {
        ra: Operand,
        dec: Operand,
        /// Column of `POINT`.
        column: usize,
    },
    /// `CIRCLE(ra, dec, radius)`.
    Circle {
        ra: Operand,
        dec: Operand,
        radius: Operand,
        /// Column of `CIRCLE`.
        column: usize,
    },
}

impl Shape {
    /// `POINT` or `CIRCLE`, as printed.
    pub fn name(&self) -> &'static str {
        match self {
            Shape::Point { .. } => "POINT",
            Shape::Circle { .. } => "CIRCLE",
        }
    }

    /// Column of the shape's name.
    pub fn column(&self) -> usize {
        match self {
            Shape::Point { column, .. } | Shape::Circle { column, .. } => *column,
        }
    }

    /// The arguments with their names, in order.
    pub fn args(&self) -> Vec<(&'static str, &Operand)> {
        match self {
            Shape::Point { ra, dec, .. } => vec![("ra", ra), ("dec", dec)],
            Shape::Circle {
                ra, dec, radius, ..
            } => vec![("ra", ra), ("dec", dec), ("radius", radius)],
        }
    }
}

/// The argument names of the shapes `OVERLAPS` takes.
const POINT_ARGS: [&str; 2] = ["ra", "dec"];
const CIRCLE_ARGS: [&str; 3] = ["ra", "dec", "radius"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareOp {
    pub fn sql(self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::Ne => "<>",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }
}

/// A dimension key (`exposure`) or a metadata field (`exposure.exposure_time`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identifier {
    pub element: Option<String>,
    pub name: String,
    /// 1-based column of the identifier's first character.
    pub column: usize,
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.element {
            Some(e) => write!(f, "{e}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Int(i64),
    Float(f64),
    String(String),
    Bool(bool),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Int(v) => write!(f, "{v}"),
            Literal::Float(v) => write!(f, "{v:?}"),
            Literal::String(s) => f.write_str(&quote(s)),
            Literal::Bool(b) => f.write_str(if *b { "TRUE" } else { "FALSE" }),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Ident(Identifier),
    Literal {
        value: Literal,
        column: usize,
    },
    /// `:name`, whose value is supplied to [`compile`](super::compile).
    Bind {
        name: String,
        column: usize,
    },
}

impl Operand {
    pub fn column(&self) -> usize {
        match self {
            Operand::Ident(i) => i.column,
            Operand::Literal { column, .. } | Operand::Bind { column, .. } => *column,
        }
    }
}

/// One entry of an `IN (...)` list.
#[derive(Debug, Clone, PartialEq)]
pub enum InItem {
    /// A literal or a bind.
    Value(Operand),
    /// The inclusive integer range `start..stop[:stride]`; the parser
    /// guarantees `start <= stop`, `stride > 0` and that `stop - start` fits.
    Range {
        start: i64,
        stop: i64,
        stride: i64,
        column: usize,
    },
}

impl Expr {
    /// The expression text as given to [`parse`].
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Every identifier referenced, once each (by element and name), in
    /// order of first appearance; the column is that of the first use.
    pub fn identifiers(&self) -> Vec<Identifier> {
        let mut out: Vec<Identifier> = Vec::new();
        let mut push_id = |id: &Identifier| {
            if !out
                .iter()
                .any(|seen| seen.element == id.element && seen.name == id.name)
            {
                out.push(id.clone());
            }
        };
        let mut push = |op: &Operand| {
            if let Operand::Ident(id) = op {
                push_id(id);
            }
        };
        let mut stack = vec![&self.root];
        // Children are pushed in reverse so they are visited left to right.
        while let Some(node) = stack.pop() {
            match node {
                Node::Or(terms) | Node::And(terms) => stack.extend(terms.iter().rev()),
                Node::Not(inner) => stack.push(inner),
                Node::Compare { lhs, rhs, .. } => {
                    push(lhs);
                    push(rhs);
                }
                Node::In { lhs, .. } | Node::Truth(lhs) => push(lhs),
                Node::Overlaps { region, .. } => push(&Operand::Ident(region.clone())),
            }
        }
        out
    }
}

/// Parses `text`; `Ok(None)` when it is empty or only whitespace, meaning
/// "no constraint".
pub fn parse(text: &str) -> Result<Option<Expr>, ExprError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let mut parser = Parser {
        tokens: tokenize(text)?,
        pos: 0,
        text,
        depth: 0,
    };
    let root = parser.parse_or()?;
    let tok = parser.peek();
    if tok.kind != TokenKind::Eof {
        return Err(parser.error(
            tok.column,
            format!(
                "unexpected {}; expected AND, OR or the end of the expression",
                tok.kind.describe()
            ),
        ));
    }
    Ok(Some(Expr {
        root,
        text: text.to_string(),
    }))
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    text: &'a str,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Token {
        // The token list always ends with Eof and `advance` never moves past it.
        self.tokens[self.pos].clone()
    }

    fn peek_kind(&self) -> &TokenKind {
        &self.tokens[self.pos].kind
    }

    fn advance(&mut self) -> Token {
        let tok = self.peek();
        if tok.kind != TokenKind::Eof {
            self.pos += 1;
        }
        tok
    }

    fn error(&self, column: usize, message: String) -> ExprError {
        ExprError::new(self.text, column, message)
    }

    fn expected(&self, what: &str) -> ExprError {
        let tok = &self.tokens[self.pos];
        self.error(
            tok.column,
            format!("expected {what}, found {}", tok.kind.describe()),
        )
    }

    fn enter(&mut self, column: usize) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(
                column,
                format!("expression nested too deeply (more than {MAX_DEPTH} levels)"),
            ));
        }
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Node, ExprError> {
        let mut terms = vec![self.parse_and()?];
        while *self.peek_kind() == TokenKind::Or {
            self.advance();
            terms.push(self.parse_and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Node::Or(terms)
        })
    }

    fn parse_and(&mut self) -> Result<Node, ExprError> {
        let mut terms = vec![self.parse_not()?];
        while *self.peek_kind() == TokenKind::And {
            self.advance();
            terms.push(self.parse_not()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Node::And(terms)
        })
    }

    fn parse_not(&mut self) -> Result<Node, ExprError> {
        let tok = self.peek();
        match tok.kind {
            TokenKind::Not => {
                self.advance();
                self.enter(tok.column)?;
                let inner = self.parse_not()?;
                self.depth -= 1;
                Ok(Node::Not(Box::new(inner)))
            }
            TokenKind::LParen => {
                self.advance();
                self.enter(tok.column)?;
                let inner = self.parse_or()?;
                self.depth -= 1;
                let close = self.peek();
                match close.kind {
                    TokenKind::RParen => {
                        self.advance();
                        Ok(inner)
                    }
                    TokenKind::Eof => Err(self.error(
                        tok.column,
                        "unclosed '(': the expression ends before its ')'".into(),
                    )),
                    other => Err(self.error(
                        close.column,
                        format!(
                            "expected ')' to close the '(' at column {}, found {}",
                            tok.column,
                            other.describe()
                        ),
                    )),
                }
            }
            _ => self.parse_predicate(),
        }
    }

    fn parse_predicate(&mut self) -> Result<Node, ExprError> {
        let lhs = self.parse_operand()?;
        let tok = self.peek();
        let op = match tok.kind {
            TokenKind::Eq => CompareOp::Eq,
            TokenKind::Ne => CompareOp::Ne,
            TokenKind::Lt => CompareOp::Lt,
            TokenKind::Le => CompareOp::Le,
            TokenKind::Gt => CompareOp::Gt,
            TokenKind::Ge => CompareOp::Ge,
            TokenKind::In => {
                self.advance();
                return self.parse_in_list(lhs, false, tok.column);
            }
            TokenKind::Overlaps => {
                self.advance();
                return self.parse_overlaps(lhs, tok.column);
            }
            TokenKind::Not => {
                self.advance();
                if *self.peek_kind() != TokenKind::In {
                    return Err(self.expected("IN after NOT"));
                }
                self.advance();
                return self.parse_in_list(lhs, true, tok.column);
            }
            _ => return Ok(Node::Truth(lhs)),
        };
        self.advance();
        let rhs = self.parse_operand()?;
        Ok(Node::Compare {
            lhs,
            op,
            rhs,
            column: tok.column,
        })
    }

    fn parse_in_list(
        &mut self,
        lhs: Operand,
        negated: bool,
        column: usize,
    ) -> Result<Node, ExprError> {
        let open = self.peek();
        if open.kind != TokenKind::LParen {
            return Err(self.expected("'(' after IN"));
        }
        self.advance();
        if *self.peek_kind() == TokenKind::RParen {
            return Err(self.error(
                self.peek().column,
                "empty IN list: give at least one value".into(),
            ));
        }
        let mut items = Vec::new();
        loop {
            items.push(self.parse_in_item()?);
            let tok = self.peek();
            match tok.kind {
                TokenKind::Comma => {
                    self.advance();
                }
                TokenKind::RParen => {
                    self.advance();
                    break;
                }
                TokenKind::Eof => {
                    return Err(self.error(
                        open.column,
                        "unclosed '(' of the IN list: the expression ends before its ')'".into(),
                    ))
                }
                _ => return Err(self.expected("',' or ')' in the IN list")),
            }
        }
        Ok(Node::In {
            lhs,
            negated,
            items,
            column,
        })
    }

    fn parse_in_item(&mut self) -> Result<InItem, ExprError> {
        let item = self.parse_operand()?;
        if let Operand::Ident(id) = &item {
            return Err(self.error(
                id.column,
                format!("IN list items must be values, ranges or binds, not the identifier {id}"),
            ));
        }
        if *self.peek_kind() != TokenKind::DotDot {
            return Ok(InItem::Value(item));
        }
        let column = item.column();
        let start = self.range_bound(&item, "range start")?;
        self.advance();
        let stop_op = self.parse_operand()?;
        let stop = self.range_bound(&stop_op, "range end")?;
        // `:name` lexes as a bind, so `1..3:s` arrives here as a bind token.
        if let TokenKind::Bind(_) = self.peek_kind() {
            return Err(self.error(
                self.peek().column,
                "range stride must be an integer literal, not a bind parameter".into(),
            ));
        }
        let stride = if *self.peek_kind() == TokenKind::Colon {
            self.advance();
            let stride_op = self.parse_operand()?;
            let stride = self.range_bound(&stride_op, "range stride")?;
            if stride <= 0 {
                return Err(self.error(
                    stride_op.column(),
                    format!("range stride must be positive, got {stride}"),
                ));
            }
            stride
        } else {
            1
        };
        if start > stop {
            return Err(self.error(
                column,
                format!("range {start}..{stop} is empty: its start is greater than its end"),
            ));
        }
        // The compiled SQL computes `col - start`; keep that within i64.
        if stop.checked_sub(start).is_none() {
            return Err(self.error(column, format!("range {start}..{stop} is too large")));
        }
        Ok(InItem::Range {
            start,
            stop,
            stride,
            column,
        })
    }

    /// After `OVERLAPS`: checks the region operand and parses the shape.
    fn parse_overlaps(&mut self, lhs: Operand, column: usize) -> Result<Node, ExprError> {
        let region = match lhs {
            Operand::Ident(id) => id,
            other => {
                return Err(self.error(
                    other.column(),
                    format!(
                        "OVERLAPS needs a region field on its left, such as visit.region, not {}",
                        describe_value(&other)
                    ),
                ))
            }
        };
        let shape = self.parse_shape()?;
        Ok(Node::Overlaps {
            region,
            shape,
            column,
        })
    }

    /// `POINT(ra, dec)` or `CIRCLE(ra, dec, radius)`.
    fn parse_shape(&mut self) -> Result<Shape, ExprError> {
        let tok = self.peek();
        let (name, names): (&str, &[&str]) = match &tok.kind {
            TokenKind::Ident {
                element: None,
                name,
            } if name.eq_ignore_ascii_case("POINT") => ("POINT", &POINT_ARGS),
            TokenKind::Ident {
                element: None,
                name,
            } if name.eq_ignore_ascii_case("CIRCLE") => ("CIRCLE", &CIRCLE_ARGS),
            _ => {
                return Err(
                    self.expected("POINT(ra, dec) or CIRCLE(ra, dec, radius) after OVERLAPS")
                )
            }
        };
        self.advance();
        let mut args = self.parse_shape_args(name, names)?;
        if args.len() != names.len() {
            return Err(self.error(
                tok.column,
                format!(
                    "{name} takes {} arguments ({}), got {}",
                    names.len(),
                    names.join(", "),
                    args.len()
                ),
            ));
        }
        let column = tok.column;
        let mut next = || args.remove(0);
        Ok(if name == "POINT" {
            Shape::Point {
                ra: next(),
                dec: next(),
                column,
            }
        } else {
            Shape::Circle {
                ra: next(),
                dec: next(),
                radius: next(),
                column,
            }
        })
    }

    /// `'(' coord ( ',' coord )* ')'`, any number of them (the caller
    /// checks the count, to say how many were expected).
    fn parse_shape_args(&mut self, name: &str, names: &[&str]) -> Result<Vec<Operand>, ExprError> {
        let open = self.peek();
        if open.kind != TokenKind::LParen {
            return Err(self.expected(&format!("'(' after {name}")));
        }
        self.advance();
        let mut args = Vec::new();
        if *self.peek_kind() == TokenKind::RParen {
            self.advance();
            return Ok(args);
        }
        loop {
            let what = names
                .get(args.len())
                .map_or_else(|| format!("argument {}", args.len() + 1), |n| n.to_string());
            args.push(self.parse_coordinate(name, &what)?);
            let tok = self.peek();
            match tok.kind {
                TokenKind::Comma => {
                    self.advance();
                }
                TokenKind::RParen => {
                    self.advance();
                    return Ok(args);
                }
                TokenKind::Eof => {
                    return Err(self.error(
                        open.column,
                        format!("unclosed '(' of {name}: the expression ends before its ')'"),
                    ))
                }
                _ => return Err(self.expected(&format!("',' or ')' in {name}(...)"))),
            }
        }
    }

    /// One argument of a shape: a number, possibly negative, or a bind.
    fn parse_coordinate(&mut self, shape: &str, what: &str) -> Result<Operand, ExprError> {
        let numeric = matches!(
            self.peek_kind(),
            TokenKind::Int(_) | TokenKind::Float(_) | TokenKind::Minus | TokenKind::Bind(_)
        );
        let valued = matches!(
            self.peek_kind(),
            TokenKind::Ident { .. } | TokenKind::Str(_) | TokenKind::True | TokenKind::False
        );
        if !numeric && !valued {
            return Err(self.expected(&format!(
                "a number or a bind parameter as the {what} of {shape}"
            )));
        }
        let op = self.parse_operand()?;
        if valued {
            return Err(self.error(
                op.column(),
                format!(
                    "the {what} of {shape} must be a number or a bind parameter, not {}",
                    describe_value(&op)
                ),
            ));
        }
        Ok(op)
    }

    fn range_bound(&self, op: &Operand, what: &str) -> Result<i64, ExprError> {
        match op {
            Operand::Literal {
                value: Literal::Int(v),
                ..
            } => Ok(*v),
            other => Err(self.error(other.column(), format!("{what} must be an integer literal"))),
        }
    }

    fn parse_operand(&mut self) -> Result<Operand, ExprError> {
        let tok = self.peek();
        let column = tok.column;
        let literal = |value| Operand::Literal { value, column };
        let op = match tok.kind {
            TokenKind::Ident { element, name } => Operand::Ident(Identifier {
                element,
                name,
                column,
            }),
            TokenKind::Int(digits) => literal(Literal::Int(self.int(&digits, false, column)?)),
            TokenKind::Float(v) => literal(Literal::Float(v)),
            TokenKind::Str(s) => literal(Literal::String(s)),
            TokenKind::True => literal(Literal::Bool(true)),
            TokenKind::False => literal(Literal::Bool(false)),
            TokenKind::Bind(name) => Operand::Bind { name, column },
            TokenKind::Minus => {
                self.advance();
                let value = match self.peek().kind {
                    TokenKind::Int(digits) => Literal::Int(self.int(&digits, true, column)?),
                    TokenKind::Float(v) => Literal::Float(-v),
                    _ => return Err(self.expected("a number after '-'")),
                };
                literal(value)
            }
            _ => return Err(self.expected("a dimension, field, value or '('")),
        };
        self.advance();
        Ok(op)
    }

    fn int(&self, digits: &str, negative: bool, column: usize) -> Result<i64, ExprError> {
        let text = if negative {
            format!("-{digits}")
        } else {
            digits.to_string()
        };
        text.parse::<i64>().map_err(|_| {
            self.error(
                column,
                format!("integer {text} is out of range for a 64-bit integer"),
            )
        })
    }
}

/// An operand as named in messages: `the string 'x'`, `the identifier a.b`.
fn describe_value(op: &Operand) -> String {
    match op {
        Operand::Ident(id) => format!("the identifier {id}"),
        Operand::Literal {
            value: Literal::String(s),
            ..
        } => format!("the string {}", quote(s)),
        Operand::Literal { value, .. } => format!("the value {value}"),
        Operand::Bind { name, .. } => format!("the bind parameter :{name}"),
    }
}
