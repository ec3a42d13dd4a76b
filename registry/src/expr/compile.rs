//! Turns a parsed [`Expr`] into a parameterised SQL condition.
//!
//! The only text copied into the SQL is the caller's trusted column
//! expressions and fixed operator spellings; every literal and bind value
//! becomes a `?` with its value in [`CompiledWhere::params`].
//!
//! `region OVERLAPS shape` becomes `quanta_region_overlaps(<column>, ?)`
//! (the SQL function of `region_sql`, registered on every registry
//! connection) with one parameter: the shape built here, a circle (a point
//! is one of radius 0), encoded as the registry stores regions.

use std::collections::HashMap;

use quanta_core::FieldType;
use quanta_spatial::{Circle, Region};
use rusqlite::types::Value;

use super::parser::{Expr, Identifier, InItem, Literal, Node, Operand, Shape};
use super::ExprError;
use crate::region_sql::REGION_OVERLAPS;

/// A column the caller has validated and placed in its query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedColumn {
    /// Trusted SQL for the column, e.g. `t2."exposure_time"`; pasted as is.
    pub sql: String,
    pub field_type: FieldType,
}

/// Maps identifiers to columns; supplied by the code that builds the query
/// (it knows which tables are joined and under which aliases).
pub trait ColumnResolver {
    /// `Err` carries a message such as `unknown dimension or field "exposre"`;
    /// the compiler adds where in the expression it happened.
    fn resolve(&self, ident: &Identifier) -> Result<ResolvedColumn, String>;
}

/// A SQL boolean expression (parenthesised or a single function call, so
/// safe to combine) and its `?` parameters, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledWhere {
    pub sql: String,
    pub params: Vec<Value>,
}

/// Compiles `expr`, resolving identifiers through `resolver` and `:name`
/// binds from `binds` (unused binds are ignored).
pub fn compile(
    expr: &Expr,
    resolver: &dyn ColumnResolver,
    binds: &HashMap<String, Value>,
) -> Result<CompiledWhere, ExprError> {
    let mut compiler = Compiler {
        text: expr.text(),
        resolver,
        binds,
        sql: String::new(),
        params: Vec::new(),
    };
    compiler.node(&expr.root)?;
    Ok(CompiledWhere {
        sql: compiler.sql,
        params: compiler.params,
    })
}

/// The comparison class of a column or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Float,
    Str,
    Bool,
    Region,
}

impl Kind {
    fn of_field(t: FieldType) -> Kind {
        match t {
            FieldType::Int => Kind::Int,
            FieldType::Float => Kind::Float,
            FieldType::String => Kind::Str,
            FieldType::Bool => Kind::Bool,
            FieldType::Region => Kind::Region,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Int => "an integer",
            Kind::Float => "a float",
            Kind::Str => "a string",
            Kind::Bool => "a boolean",
            Kind::Region => "a region",
        }
    }

    /// Int and Float mix; booleans are stored as 0/1 so compare with ints.
    fn compatible(self, other: Kind) -> bool {
        use Kind::*;
        matches!(
            (self, other),
            (Int | Float, Int | Float) | (Str, Str) | (Bool, Bool) | (Bool, Int) | (Int, Bool)
        )
    }
}

/// An operand after resolution.
enum Typed {
    Column {
        sql: String,
        kind: Kind,
        name: String,
    },
    Value {
        value: Value,
        kind: Kind,
        /// How the user wrote it, for messages.
        shown: String,
        column: usize,
    },
}

impl Typed {
    fn kind(&self) -> Kind {
        match self {
            Typed::Column { kind, .. } | Typed::Value { kind, .. } => *kind,
        }
    }

    fn describe(&self) -> String {
        match self {
            Typed::Column { kind, name, .. } => format!("{name} ({} field)", kind.noun()),
            Typed::Value { kind, shown, .. } => format!("{shown} ({})", kind.noun()),
        }
    }
}

struct Compiler<'a> {
    text: &'a str,
    resolver: &'a dyn ColumnResolver,
    binds: &'a HashMap<String, Value>,
    sql: String,
    params: Vec<Value>,
}

impl Compiler<'_> {
    fn error(&self, column: usize, message: String) -> ExprError {
        ExprError::new(self.text, column, message)
    }

    // Recursion depth is bounded by the parser's nesting limit, since AND/OR
    // chains are flat (a long chain adds only its logarithm, see `chain`).
    fn node(&mut self, node: &Node) -> Result<(), ExprError> {
        match node {
            Node::Or(terms) => self.chain(terms, " OR "),
            Node::And(terms) => self.chain(terms, " AND "),
            Node::Not(inner) => {
                self.sql.push_str("(NOT ");
                self.node(inner)?;
                self.sql.push(')');
                Ok(())
            }
            Node::Compare {
                lhs,
                op,
                rhs,
                column,
            } => {
                let l = self.operand(lhs)?;
                let r = self.operand(rhs)?;
                self.refuse_region(lhs, &l)?;
                self.refuse_region(rhs, &r)?;
                if !l.kind().compatible(r.kind()) {
                    // Point at the value the user most likely mistyped.
                    let at = match (&l, &r) {
                        (_, Typed::Value { column, .. }) | (Typed::Value { column, .. }, _) => {
                            *column
                        }
                        _ => *column,
                    };
                    return Err(self.error(
                        at,
                        format!("cannot compare {} with {}", l.describe(), r.describe()),
                    ));
                }
                self.sql.push('(');
                self.emit(&l);
                self.sql.push(' ');
                self.sql.push_str(op.sql());
                self.sql.push(' ');
                self.emit(&r);
                self.sql.push(')');
                Ok(())
            }
            Node::In {
                lhs,
                negated,
                items,
                ..
            } => self.in_list(lhs, *negated, items),
            Node::Truth(op) => {
                let t = self.operand(op)?;
                self.refuse_region(op, &t)?;
                if t.kind() != Kind::Bool {
                    return Err(self.error(
                        op.column(),
                        format!(
                            "{} is not a condition; expected a comparison such as {} = ...",
                            t.describe(),
                            display_operand(op)
                        ),
                    ));
                }
                self.sql.push('(');
                self.emit(&t);
                self.sql.push_str(" <> 0)");
                Ok(())
            }
            Node::Overlaps { region, shape, .. } => self.overlaps(region, shape),
        }
    }

    /// A region column anywhere but left of `OVERLAPS`: its blob would
    /// compare bytes, which means nothing.
    fn refuse_region(&self, op: &Operand, t: &Typed) -> Result<(), ExprError> {
        if t.kind() != Kind::Region {
            return Ok(());
        }
        Err(self.error(
            op.column(),
            format!(
                "{} is a region; a region can only be tested with OVERLAPS, \
                 as in {op} OVERLAPS POINT(ra, dec)",
                display_operand(op)
            ),
        ))
    }

    /// `quanta_region_overlaps(<column>, ?)` with the shape as the parameter.
    fn overlaps(&mut self, region: &Identifier, shape: &Shape) -> Result<(), ExprError> {
        let resolved = self
            .resolver
            .resolve(region)
            .map_err(|message| self.error(region.column, message))?;
        let kind = Kind::of_field(resolved.field_type);
        if kind != Kind::Region {
            return Err(self.error(
                region.column,
                format!(
                    "`{region}` is {}, not a region; OVERLAPS tests a region field \
                     such as visit.region",
                    kind.noun()
                ),
            ));
        }
        let blob = self.shape_blob(shape)?;
        self.sql.push_str(REGION_OVERLAPS);
        self.sql.push('(');
        self.sql.push_str(&resolved.sql);
        self.sql.push_str(", ?)");
        self.params.push(Value::Blob(blob));
        Ok(())
    }

    /// The shape as a region blob, its arguments checked: declinations in
    /// [-90, 90], radii in [0, 180) degrees.
    fn shape_blob(&self, shape: &Shape) -> Result<Vec<u8>, ExprError> {
        let mut values = Vec::new();
        for (what, arg) in shape.args() {
            let v = self.coordinate(arg, what, shape.name())?;
            let bad = match what {
                "dec" if !(-90.0..=90.0).contains(&v) => Some("[-90, 90]"),
                "radius" if !(0.0..180.0).contains(&v) => Some("[0, 180)"),
                _ => None,
            };
            if let Some(range) = bad {
                return Err(self.error(
                    arg.column(),
                    format!(
                        "the {what} of {} is {v}, outside {range} (degrees)",
                        shape.name()
                    ),
                ));
            }
            values.push(v);
        }
        let (ra, dec, radius) = (values[0], values[1], values.get(2).copied().unwrap_or(0.0));
        let circle = Circle::from_lonlat_deg(ra, dec, radius)
            .map_err(|e| self.error(shape.column(), format!("invalid {}: {e}", shape.name())))?;
        Ok(Region::Circle(circle).encode())
    }

    /// The value of one shape argument, in degrees.
    fn coordinate(&self, arg: &Operand, what: &str, shape: &str) -> Result<f64, ExprError> {
        let not_number = |shown: String| {
            self.error(
                arg.column(),
                format!("the {what} of {shape} must be a number, but {shown}"),
            )
        };
        match arg {
            Operand::Literal {
                value: Literal::Int(v),
                ..
            } => Ok(*v as f64),
            Operand::Literal {
                value: Literal::Float(v),
                ..
            } => Ok(*v),
            Operand::Bind { name, column } => match self.binds.get(name) {
                None => Err(self.error(
                    *column,
                    format!("no value supplied for bind parameter :{name}"),
                )),
                Some(Value::Integer(v)) => Ok(*v as f64),
                Some(Value::Real(v)) if v.is_finite() => Ok(*v),
                Some(other) => Err(not_number(format!(
                    "bind parameter :{name} is {}",
                    bind_noun(other)
                ))),
            },
            other => Err(not_number(format!("{other} is not"))),
        }
    }

    /// A flat AND/OR chain. SQLite parses `a OR b OR c ...` into a tree as
    /// deep as the chain is long and refuses trees deeper than 1000
    /// ("Expression tree is too large"), so a long chain is emitted as
    /// balanced parenthesized halves: depth grows with its logarithm.
    fn chain(&mut self, terms: &[Node], sep: &str) -> Result<(), ExprError> {
        /// Terms emitted flat in one pair of parentheses.
        const FLAT: usize = 16;
        self.sql.push('(');
        if terms.len() <= FLAT {
            for (i, term) in terms.iter().enumerate() {
                if i > 0 {
                    self.sql.push_str(sep);
                }
                self.node(term)?;
            }
        } else {
            let (left, right) = terms.split_at(terms.len() / 2);
            self.chain(left, sep)?;
            self.sql.push_str(sep);
            self.chain(right, sep)?;
        }
        self.sql.push(')');
        Ok(())
    }

    /// `x IN (values..., ranges...)` becomes a disjunction of one `IN` for
    /// the plain values and one `BETWEEN` per range, so a range costs two or
    /// four parameters however many integers it covers.
    fn in_list(&mut self, lhs: &Operand, negated: bool, items: &[InItem]) -> Result<(), ExprError> {
        let l = self.operand(lhs)?;
        self.refuse_region(lhs, &l)?;
        let mut values = Vec::new();
        for item in items {
            match item {
                InItem::Value(op) => {
                    let v = self.operand(op)?;
                    if !l.kind().compatible(v.kind()) {
                        return Err(self.error(
                            op.column(),
                            format!(
                                "cannot match {} against {} in IN",
                                l.describe(),
                                v.describe()
                            ),
                        ));
                    }
                    values.push(v);
                }
                InItem::Range {
                    start,
                    stop,
                    column,
                    ..
                } => {
                    // BETWEEN on a float column would also match 2.5 in 2..4.
                    if l.kind() != Kind::Int {
                        return Err(self.error(
                            *column,
                            format!(
                                "integer range {start}..{stop} cannot be matched against {}",
                                l.describe()
                            ),
                        ));
                    }
                }
            }
        }
        self.sql.push_str(if negated { "(NOT (" } else { "((" });
        let mut first = true;
        if !values.is_empty() {
            first = false;
            self.emit(&l);
            self.sql.push_str(" IN (");
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    self.sql.push_str(", ");
                }
                self.emit(v);
            }
            self.sql.push(')');
        }
        for item in items {
            if let InItem::Range {
                start,
                stop,
                stride,
                ..
            } = item
            {
                if !first {
                    self.sql.push_str(" OR ");
                }
                first = false;
                self.sql.push('(');
                self.emit(&l);
                self.sql.push_str(" BETWEEN ? AND ?");
                self.params.push(Value::Integer(*start));
                self.params.push(Value::Integer(*stop));
                if *stride != 1 {
                    self.sql.push_str(" AND (");
                    self.emit(&l);
                    self.sql.push_str(" - ?) % ? = 0");
                    self.params.push(Value::Integer(*start));
                    self.params.push(Value::Integer(*stride));
                }
                self.sql.push(')');
            }
        }
        self.sql.push_str("))");
        Ok(())
    }

    fn emit(&mut self, t: &Typed) {
        match t {
            Typed::Column { sql, .. } => self.sql.push_str(sql),
            Typed::Value { value, .. } => {
                self.sql.push('?');
                self.params.push(value.clone());
            }
        }
    }

    fn operand(&self, op: &Operand) -> Result<Typed, ExprError> {
        match op {
            Operand::Ident(id) => {
                let resolved = self
                    .resolver
                    .resolve(id)
                    .map_err(|message| self.error(id.column, message))?;
                Ok(Typed::Column {
                    sql: resolved.sql,
                    kind: Kind::of_field(resolved.field_type),
                    name: id.to_string(),
                })
            }
            Operand::Literal { value, column } => {
                let (value_sql, kind) = match value {
                    Literal::Int(v) => (Value::Integer(*v), Kind::Int),
                    Literal::Float(v) => (Value::Real(*v), Kind::Float),
                    Literal::String(s) => (Value::Text(s.clone()), Kind::Str),
                    Literal::Bool(b) => (Value::Integer(i64::from(*b)), Kind::Bool),
                };
                Ok(Typed::Value {
                    value: value_sql,
                    kind,
                    shown: value.to_string(),
                    column: *column,
                })
            }
            Operand::Bind { name, column } => {
                let value = self.binds.get(name).ok_or_else(|| {
                    self.error(
                        *column,
                        format!("no value supplied for bind parameter :{name}"),
                    )
                })?;
                let kind = match value {
                    Value::Integer(_) => Kind::Int,
                    Value::Real(v) if v.is_finite() => Kind::Float,
                    Value::Text(_) => Kind::Str,
                    Value::Real(_) => {
                        return Err(self.error(
                            *column,
                            format!("bind parameter :{name} is not a finite number"),
                        ))
                    }
                    // NULL never compares equal to anything in SQL, so a NULL
                    // bind would silently match nothing.
                    Value::Null => {
                        return Err(self.error(
                            *column,
                            format!("bind parameter :{name} is NULL, which never matches"),
                        ))
                    }
                    Value::Blob(_) => {
                        return Err(self.error(
                            *column,
                            format!("bind parameter :{name} is a blob, which cannot be compared"),
                        ))
                    }
                };
                Ok(Typed::Value {
                    value: value.clone(),
                    kind,
                    shown: format!(":{name}"),
                    column: *column,
                })
            }
        }
    }
}

fn display_operand(op: &Operand) -> String {
    match op {
        Operand::Ident(id) => id.to_string(),
        Operand::Literal { value, .. } => value.to_string(),
        Operand::Bind { name, .. } => format!(":{name}"),
    }
}

/// What a bind value that is not a usable number is, for messages.
fn bind_noun(value: &Value) -> &'static str {
    match value {
        Value::Null => "NULL",
        Value::Integer(_) => "an integer",
        Value::Real(_) => "not a finite number",
        Value::Text(_) => "a string",
        Value::Blob(_) => "a blob",
    }
}
