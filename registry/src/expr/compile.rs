//! Turns a parsed [`Expr`] into a parameterised SQL condition.
//!
//! The only text copied into the SQL is the caller's trusted column
//! expressions and fixed operator spellings; every literal and bind value
//! becomes a numbered placeholder of the statement's [`Parameters`], in the
//! statement's [`Dialect`].
//!
//! `region OVERLAPS shape` becomes `quanta_region_overlaps(<column>, ?N)`
//! (the SQL function every backend provides, see
//! [`REGION_OVERLAPS`]) with one parameter: the shape built here, a circle
//! (a point is one of radius 0), encoded as the registry stores regions.
//!
//! A sky pixel (`healpix8 = 12345`, `healpix8 IN (...)`) is no column: it
//! matches when every region of the query's data ID overlaps that HEALPix
//! cell. Coarse, an EXISTS on the element's skypix rows in the cell's range
//! of index cells; exact, `quanta_region_overlaps` with the cell's polygon.

use std::collections::HashMap;

use super::parser::{CompareOp, Expr, Identifier, InItem, Literal, Node, Operand, Shape};
use super::ExprError;
use crate::dialect::{Dialect, Parameters, REGION_OVERLAPS};
use crate::value::SqlValue as Value;
use quanta_core::FieldType;
use quanta_spatial::{Circle, Region};

/// A column the caller has validated and placed in its query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedColumn {
    /// Trusted SQL for the column, e.g. `t2."exposure_time"`; pasted as is.
    pub sql: String,
    pub field_type: FieldType,
}

/// A sky pixel identifier (`healpix8`) resolved against the regions of a
/// query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkyPixel {
    /// The HEALPix level the user wrote (`8` in `healpix8`).
    pub level: u8,
    /// The level the registry indexes regions at.
    pub index_level: u8,
    /// The regions a data ID of the query has, one per spatial family.
    pub regions: Vec<SkyPixelRegion>,
}

/// Trusted SQL naming one region of the query and its skypix index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkyPixelRegion {
    /// The element's skypix overlap table, quoted.
    pub skypix_table: String,
    /// The record's `region_id` column, e.g. `t3."region_id"`.
    pub region_id: String,
    /// The record's region column, e.g. `t3."region"`.
    pub region: String,
}

/// Maps identifiers to columns; supplied by the code that builds the query
/// (it knows which tables are joined and under which aliases).
pub trait ColumnResolver {
    /// `Err` carries a message such as `unknown dimension or field "exposre"`;
    /// the compiler adds where in the expression it happened.
    fn resolve(&self, ident: &Identifier) -> Result<ResolvedColumn, String>;

    /// The sky pixel `ident` names (`healpix8`), if it names one; it is then
    /// matched with [`SkyPixel`]'s regions rather than compared as a column.
    fn sky_pixel(&self, _ident: &Identifier) -> Option<SkyPixel> {
        None
    }
}

/// A SQL boolean expression (parenthesised or a single function call, so
/// safe to combine) and its parameters, numbered from 1 in order.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledWhere {
    pub sql: String,
    pub params: Vec<Value>,
}

/// Compiles `expr` on its own into `dialect`, resolving identifiers through
/// `resolver` and `:name` binds from `binds` (unused binds are ignored).
pub fn compile(
    expr: &Expr,
    resolver: &dyn ColumnResolver,
    binds: &HashMap<String, Value>,
    dialect: Dialect,
) -> Result<CompiledWhere, ExprError> {
    let mut params = Parameters::new(dialect);
    let sql = compile_into(expr, resolver, binds, &mut params)?;
    Ok(CompiledWhere {
        sql,
        params: params.into_values(),
    })
}

/// Compiles `expr` as part of a larger statement: its values are bound
/// after those already in `params`, and the SQL returned numbers its
/// placeholders accordingly. On an error, `params` may hold some of the
/// expression's values; the statement is then abandoned.
pub fn compile_into(
    expr: &Expr,
    resolver: &dyn ColumnResolver,
    binds: &HashMap<String, Value>,
    params: &mut Parameters,
) -> Result<String, ExprError> {
    let mut compiler = Compiler {
        text: expr.text(),
        resolver,
        binds,
        sql: String::new(),
        params,
    };
    compiler.node(&expr.root)?;
    Ok(compiler.sql)
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
        sky_pixel: Option<SkyPixel>,
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

    fn sky_pixel(&self) -> Option<&SkyPixel> {
        match self {
            Typed::Column { sky_pixel, .. } => sky_pixel.as_ref(),
            Typed::Value { .. } => None,
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
    params: &'a mut Parameters,
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
                if l.sky_pixel().is_some() || r.sky_pixel().is_some() {
                    return self.sky_pixel_compare(&l, *op, &r, *column);
                }
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
                let mut column = String::new();
                std::mem::swap(&mut column, &mut self.sql);
                self.emit(&t);
                std::mem::swap(&mut column, &mut self.sql);
                let truth = self.params.dialect().is_true(&column);
                self.sql.push_str(&truth);
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

    /// `quanta_region_overlaps(<column>, ?N)` with the shape as the parameter.
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
        self.sql.push_str(", ");
        self.params.push(&mut self.sql, Value::Blob(blob));
        self.sql.push(')');
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
        if let Some(sky_pixel) = l.sky_pixel() {
            return self.sky_pixel_in(sky_pixel, &l, negated, items);
        }
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
                self.sql.push_str(" BETWEEN ");
                self.params.push(&mut self.sql, Value::Integer(*start));
                self.sql.push_str(" AND ");
                self.params.push(&mut self.sql, Value::Integer(*stop));
                if *stride != 1 {
                    self.sql.push_str(" AND (");
                    self.emit(&l);
                    self.sql.push_str(" - ");
                    self.params.push(&mut self.sql, Value::Integer(*start));
                    self.sql.push_str(") % ");
                    self.params.push(&mut self.sql, Value::Integer(*stride));
                    self.sql.push_str(" = 0");
                }
                self.sql.push(')');
            }
        }
        self.sql.push_str("))");
        Ok(())
    }

    /// `healpixN = v` or `healpixN != v` (either side): the only
    /// comparisons a sky pixel has, since cells have no order.
    fn sky_pixel_compare(
        &mut self,
        l: &Typed,
        op: CompareOp,
        r: &Typed,
        column: usize,
    ) -> Result<(), ExprError> {
        let (pixel, name, value) = match (l, r) {
            (
                Typed::Column {
                    sky_pixel: Some(p),
                    name,
                    ..
                },
                v,
            )
            | (
                v,
                Typed::Column {
                    sky_pixel: Some(p),
                    name,
                    ..
                },
            ) => (p, name, v),
            _ => unreachable!("one side is a sky pixel"),
        };
        let negated = match op {
            CompareOp::Eq => false,
            CompareOp::Ne => true,
            _ => {
                return Err(self.error(
                    column,
                    format!("{name} is a sky pixel: it can be matched with = or IN, not ordered"),
                ))
            }
        };
        self.sql.push_str(if negated { "(NOT " } else { "(" });
        self.sky_pixel_match(pixel, name, value, column)?;
        self.sql.push(')');
        Ok(())
    }

    /// `healpixN [NOT] IN (v, ...)`: one match per value (no ranges: a
    /// range of cell indices is no region).
    fn sky_pixel_in(
        &mut self,
        pixel: &SkyPixel,
        l: &Typed,
        negated: bool,
        items: &[InItem],
    ) -> Result<(), ExprError> {
        let name = match l {
            Typed::Column { name, .. } => name.clone(),
            Typed::Value { shown, .. } => shown.clone(),
        };
        self.sql.push_str(if negated { "(NOT (" } else { "((" });
        for (i, item) in items.iter().enumerate() {
            let value = match item {
                InItem::Value(op) => self.operand(op)?,
                InItem::Range { column, .. } => {
                    return Err(self.error(
                        *column,
                        format!("{name} is a sky pixel: list its cells, ranges are not matched"),
                    ))
                }
            };
            if i > 0 {
                self.sql.push_str(" OR ");
            }
            let at = match item {
                InItem::Value(op) => op.column(),
                InItem::Range { column, .. } => *column,
            };
            self.sky_pixel_match(pixel, &name, &value, at)?;
        }
        self.sql.push_str("))");
        Ok(())
    }

    /// Every region of the data ID overlaps cell `value` of `pixel`'s
    /// level: coarse on the index cells inside (or around) it, exact with
    /// the cell's polygon.
    fn sky_pixel_match(
        &mut self,
        pixel: &SkyPixel,
        name: &str,
        value: &Typed,
        column: usize,
    ) -> Result<(), ExprError> {
        let (cell, at) = match value {
            Typed::Value {
                value: Value::Integer(v),
                column,
                ..
            } => (*v, *column),
            Typed::Value { column, .. } => {
                return Err(self.error(
                    *column,
                    format!(
                        "{name} is matched with a cell index (an integer), not {}",
                        value.describe()
                    ),
                ))
            }
            Typed::Column { name: other, .. } => {
                return Err(self.error(
                    column,
                    format!("{name} is matched with a cell index, not with {other}"),
                ))
            }
        };
        let cells = 12i64 << (2 * u32::from(pixel.level));
        if !(0..cells).contains(&cell) {
            return Err(self.error(
                at,
                format!(
                    "{name} = {cell}: HEALPix level {} has cells 0..{cells}",
                    pixel.level
                ),
            ));
        }
        let cell = cell as u64;
        let (lo, hi) = if pixel.level <= pixel.index_level {
            let range = quanta_spatial::healpix_range_at(pixel.level, cell, pixel.index_level);
            (range.start, range.end)
        } else {
            let coarse = cell >> (2 * u32::from(pixel.level - pixel.index_level));
            (coarse, coarse + 1)
        };
        let polygon = Region::Polygon(quanta_spatial::skymap::healpix_cell_polygon(
            pixel.level,
            cell,
        ))
        .encode();
        self.sql.push('(');
        for (i, r) in pixel.regions.iter().enumerate() {
            if i > 0 {
                self.sql.push_str(" AND ");
            }
            // Levels are at most 24: indices < 2^52.
            let lo = self.params.bind(Value::Integer(lo as i64));
            let hi = self.params.bind(Value::Integer(hi as i64));
            let shape = self.params.bind(Value::Blob(polygon.clone()));
            self.sql.push_str(&format!(
                "EXISTS (SELECT 1 FROM {} AS hp WHERE hp.region_id = {} AND hp.skypix >= {lo} AND hp.skypix < {hi}) AND {REGION_OVERLAPS}({}, {shape})",
                r.skypix_table, r.region_id, r.region
            ));
        }
        self.sql.push(')');
        Ok(())
    }

    fn emit(&mut self, t: &Typed) {
        match t {
            Typed::Column { sql, .. } => self.sql.push_str(sql),
            Typed::Value { value, .. } => self.params.push(&mut self.sql, value.clone()),
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
                    sky_pixel: self.resolver.sky_pixel(id),
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
