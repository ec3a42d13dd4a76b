//! Property tests of the `--where` language (issue 16, "then prove it"):
//!
//! - printing a syntax tree and parsing the text gives the tree back, and
//!   the printed form is canonical (printing the reparsed tree gives the
//!   same text);
//! - on random dimension records in a real SQLite registry, the data IDs
//!   that `query_data_ids` returns for a random expression are exactly
//!   those an evaluator written here accepts;
//! - the same for `OVERLAPS` on visits with circular regions, against
//!   great-circle distances computed here (SQL's three-valued logic for
//!   visits without a region included).

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use quanta_core::{DataIdValue, DimensionUniverse};
use quanta_registry::expr::{parse, CompareOp, Identifier, InItem, Literal, Node, Operand, Shape};
use quanta_registry::SqlValue as Value;
use quanta_registry::{Binds, Registry};
use serde_json::json;

// ---------------------------------------------------------------------------
// Round trip

/// Columns are where text was; a printed tree has other columns.
fn strip(node: &mut Node) {
    fn op(o: &mut Operand) {
        match o {
            Operand::Ident(id) => id.column = 0,
            Operand::Literal { column, .. } | Operand::Bind { column, .. } => *column = 0,
        }
    }
    match node {
        Node::Or(terms) | Node::And(terms) => terms.iter_mut().for_each(strip),
        Node::Not(inner) => strip(inner),
        Node::Compare {
            lhs, rhs, column, ..
        } => {
            op(lhs);
            op(rhs);
            *column = 0;
        }
        Node::In {
            lhs, items, column, ..
        } => {
            op(lhs);
            *column = 0;
            for item in items {
                match item {
                    InItem::Value(v) => op(v),
                    InItem::Range { column, .. } => *column = 0,
                }
            }
        }
        Node::Truth(o) => op(o),
        Node::Overlaps {
            region,
            shape,
            column,
        } => {
            region.column = 0;
            *column = 0;
            match shape {
                Shape::Point { ra, dec, column } => {
                    [ra, dec].into_iter().for_each(op);
                    *column = 0;
                }
                Shape::Circle {
                    ra,
                    dec,
                    radius,
                    column,
                } => {
                    [ra, dec, radius].into_iter().for_each(op);
                    *column = 0;
                }
            }
        }
    }
}

const KEYWORDS: [&str; 7] = ["and", "or", "not", "in", "overlaps", "true", "false"];

fn word() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,8}"
}

fn ident() -> impl Strategy<Value = Identifier> {
    // An undotted name cannot be a keyword (it would lex as one); either
    // part of a dotted name can.
    let plain = word().prop_filter("not a keyword", |w| {
        !KEYWORDS.contains(&w.to_ascii_lowercase().as_str())
    });
    prop_oneof![
        plain.prop_map(|name| Identifier {
            element: None,
            name,
            column: 0
        }),
        (word(), word()).prop_map(|(e, name)| Identifier {
            element: Some(e),
            name,
            column: 0
        }),
    ]
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        any::<i64>().prop_map(Literal::Int),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Literal::Float),
        any::<String>().prop_map(Literal::String),
        any::<bool>().prop_map(Literal::Bool),
    ]
}

fn value_operand() -> impl Strategy<Value = Operand> {
    prop_oneof![
        literal().prop_map(|value| Operand::Literal { value, column: 0 }),
        word().prop_map(|name| Operand::Bind { name, column: 0 }),
    ]
}

fn operand() -> impl Strategy<Value = Operand> {
    prop_oneof![ident().prop_map(Operand::Ident), value_operand()]
}

fn compare_op() -> impl Strategy<Value = CompareOp> {
    prop_oneof![
        Just(CompareOp::Eq),
        Just(CompareOp::Ne),
        Just(CompareOp::Lt),
        Just(CompareOp::Le),
        Just(CompareOp::Gt),
        Just(CompareOp::Ge),
    ]
}

fn in_item() -> impl Strategy<Value = InItem> {
    let range = (any::<i64>(), any::<i64>(), 1..=i64::MAX).prop_filter_map(
        "a range the parser accepts",
        |(a, b, stride)| {
            let (start, stop) = (a.min(b), a.max(b));
            stop.checked_sub(start)?;
            Some(InItem::Range {
                start,
                stop,
                stride,
                column: 0,
            })
        },
    );
    prop_oneof![value_operand().prop_map(InItem::Value), range]
}

/// A shape argument as the parser takes it: a number or a bind.
fn coordinate() -> impl Strategy<Value = Operand> {
    prop_oneof![
        any::<i64>().prop_map(|v| Operand::Literal {
            value: Literal::Int(v),
            column: 0
        }),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|v| Operand::Literal {
                value: Literal::Float(v),
                column: 0
            }),
        word().prop_map(|name| Operand::Bind { name, column: 0 }),
    ]
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        (coordinate(), coordinate()).prop_map(|(ra, dec)| Shape::Point { ra, dec, column: 0 }),
        (coordinate(), coordinate(), coordinate()).prop_map(|(ra, dec, radius)| {
            Shape::Circle {
                ra,
                dec,
                radius,
                column: 0,
            }
        }),
    ]
}

fn predicate() -> impl Strategy<Value = Node> {
    prop_oneof![
        (ident(), shape()).prop_map(|(region, shape)| Node::Overlaps {
            region,
            shape,
            column: 0
        }),
        (operand(), compare_op(), operand()).prop_map(|(lhs, op, rhs)| Node::Compare {
            lhs,
            op,
            rhs,
            column: 0
        }),
        (
            operand(),
            any::<bool>(),
            prop::collection::vec(in_item(), 1..4)
        )
            .prop_map(|(lhs, negated, items)| Node::In {
                lhs,
                negated,
                items,
                column: 0
            }),
        operand().prop_map(Node::Truth),
    ]
}

/// Any tree the parser can produce.
fn any_tree() -> impl Strategy<Value = Node> {
    predicate().prop_recursive(5, 32, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|n| Node::Not(Box::new(n))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Node::And),
            prop::collection::vec(inner, 2..4).prop_map(Node::Or),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn printing_then_parsing_gives_the_tree_back(tree in any_tree()) {
        let text = tree.to_string();
        let parsed = parse(&text)
            .unwrap_or_else(|e| panic!("canonical text does not parse: {e}"))
            .expect("canonical text is not empty");
        prop_assert_eq!(parsed.to_string(), text.clone(), "printing is not canonical");
        let mut back = parsed.root;
        strip(&mut back);
        prop_assert_eq!(back, tree, "text: {}", text);
    }
}

// ---------------------------------------------------------------------------
// SQL against an in-memory evaluation

/// One data ID of the query over (exposure, detector), with every field an
/// expression can name.
#[derive(Debug, Clone)]
struct Row {
    instrument: String,
    exposure: i64,
    detector: i64,
    exposure_time: f64,
    observation_type: String,
    physical_filter: String,
    band: String,
    purpose: String,
    day_obs: i64,
}

#[derive(Debug, Clone)]
struct ExposureRec {
    id: i64,
    exposure_time: f64,
    observation_type: &'static str,
    band: &'static str,
}

#[derive(Debug, Clone)]
struct InstrumentRecs {
    name: &'static str,
    detectors: Vec<(i64, &'static str)>,
    exposures: Vec<ExposureRec>,
}

const TIMES: [f64; 4] = [0.0, 15.0, 30.0, 30.5];
const OBS_TYPES: [&str; 3] = ["science", "bias", "flat"];
const BANDS: [&str; 2] = ["r", "g"];
const PURPOSES: [&str; 2] = ["SCIENCE", "WAVEFRONT"];
const INSTRUMENTS: [&str; 2] = ["Cam", "HSC"];
const DAY_OBS: i64 = 20261126;

fn instrument_recs(name: &'static str) -> impl Strategy<Value = InstrumentRecs> {
    let detectors = prop::collection::btree_map(0i64..6, prop::sample::select(&PURPOSES[..]), 1..5);
    let exposure = (
        prop::sample::select(&TIMES[..]),
        prop::sample::select(&OBS_TYPES[..]),
        prop::sample::select(&BANDS[..]),
    );
    let exposures = prop::collection::btree_map(0i64..10, exposure, 1..6);
    (detectors, exposures).prop_map(move |(d, e)| InstrumentRecs {
        name,
        detectors: d.into_iter().collect(),
        exposures: e
            .into_iter()
            .map(|(id, (t, o, b))| ExposureRec {
                id,
                exposure_time: t,
                observation_type: o,
                band: b,
            })
            .collect(),
    })
}

fn records() -> impl Strategy<Value = Vec<InstrumentRecs>> {
    prop_oneof![
        instrument_recs(INSTRUMENTS[0]).prop_map(|a| vec![a]),
        (
            instrument_recs(INSTRUMENTS[0]),
            instrument_recs(INSTRUMENTS[1])
        )
            .prop_map(|(a, b)| vec![a, b]),
    ]
}

fn rows(recs: &[InstrumentRecs]) -> Vec<Row> {
    let mut out = Vec::new();
    for i in recs {
        for e in &i.exposures {
            for &(d, purpose) in &i.detectors {
                out.push(Row {
                    instrument: i.name.into(),
                    exposure: e.id,
                    detector: d,
                    exposure_time: e.exposure_time,
                    observation_type: e.observation_type.into(),
                    physical_filter: format!("{}-{}", i.name, e.band),
                    band: e.band.into(),
                    purpose: purpose.into(),
                    day_obs: DAY_OBS,
                });
            }
        }
    }
    out
}

fn records_json(recs: &[InstrumentRecs]) -> serde_json::Value {
    let mut instruments = Vec::new();
    let mut filters = Vec::new();
    let mut days = Vec::new();
    let mut groups = Vec::new();
    let mut detectors = Vec::new();
    let mut exposures = Vec::new();
    for i in recs {
        instruments.push(json!({"name": i.name}));
        days.push(json!({"instrument": i.name, "id": DAY_OBS}));
        for b in BANDS {
            filters
                .push(json!({"instrument": i.name, "name": format!("{}-{b}", i.name), "band": b}));
        }
        for &(d, purpose) in &i.detectors {
            detectors.push(json!({"instrument": i.name, "id": d, "purpose": purpose}));
        }
        for e in &i.exposures {
            groups.push(json!({"instrument": i.name, "name": format!("g{}", e.id)}));
            exposures.push(json!({
                "instrument": i.name, "id": e.id,
                "physical_filter": format!("{}-{}", i.name, e.band),
                "day_obs": DAY_OBS, "group": format!("g{}", e.id),
                "exposure_time": e.exposure_time,
                "observation_type": e.observation_type,
                "timespan_begin": 60000.0, "timespan_end": 60000.1,
            }));
        }
    }
    json!({
        "instrument": instruments, "physical_filter": filters, "day_obs": days,
        "group": groups, "detector": detectors, "exposure": exposures,
    })
}

/// The fields an expression may name, by type.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    Instrument,
    Exposure,
    Detector,
    ExposureTime,
    ObservationType,
    PhysicalFilter,
    Band,
    Purpose,
    DayObs,
}

impl Field {
    fn ident(self) -> Identifier {
        let (element, name) = match self {
            Field::Instrument => (None, "instrument"),
            Field::Exposure => (None, "exposure"),
            Field::Detector => (None, "detector"),
            Field::ExposureTime => (Some("exposure"), "exposure_time"),
            Field::ObservationType => (Some("exposure"), "observation_type"),
            Field::PhysicalFilter => (None, "physical_filter"),
            Field::Band => (None, "band"),
            Field::Purpose => (Some("detector"), "purpose"),
            Field::DayObs => (None, "day_obs"),
        };
        Identifier {
            element: element.map(str::to_string),
            name: name.into(),
            column: 0,
        }
    }

    fn from_ident(id: &Identifier) -> Field {
        *ALL_FIELDS
            .iter()
            .find(|f| f.ident().element == id.element && f.ident().name == id.name)
            .expect("a generated identifier")
    }

    fn is_string(self) -> bool {
        matches!(
            self,
            Field::Instrument
                | Field::ObservationType
                | Field::PhysicalFilter
                | Field::Band
                | Field::Purpose
        )
    }

    fn is_int(self) -> bool {
        matches!(self, Field::Exposure | Field::Detector | Field::DayObs)
    }

    fn value(self, r: &Row) -> V {
        match self {
            Field::Instrument => V::S(r.instrument.clone()),
            Field::Exposure => V::N(r.exposure as f64),
            Field::Detector => V::N(r.detector as f64),
            Field::ExposureTime => V::N(r.exposure_time),
            Field::ObservationType => V::S(r.observation_type.clone()),
            Field::PhysicalFilter => V::S(r.physical_filter.clone()),
            Field::Band => V::S(r.band.clone()),
            Field::Purpose => V::S(r.purpose.clone()),
            Field::DayObs => V::N(r.day_obs as f64),
        }
    }
}

const ALL_FIELDS: [Field; 9] = [
    Field::Instrument,
    Field::Exposure,
    Field::Detector,
    Field::ExposureTime,
    Field::ObservationType,
    Field::PhysicalFilter,
    Field::Band,
    Field::Purpose,
    Field::DayObs,
];

/// A value as SQLite compares it: numbers (integers are small here, so
/// exact as f64) or text (binary collation = byte order).
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum V {
    N(f64),
    S(String),
}

fn binds() -> Binds {
    HashMap::from([
        ("e".to_string(), Value::Integer(3)),
        ("t".to_string(), Value::Real(30.0)),
        ("b".to_string(), Value::Text("r".into())),
    ])
}

fn bind_value(name: &str) -> V {
    match name {
        "e" => V::N(3.0),
        "t" => V::N(30.0),
        "b" => V::S("r".into()),
        other => panic!("unknown bind {other}"),
    }
}

fn string_value() -> impl Strategy<Value = Operand> {
    const WORDS: [&str; 13] = [
        "Cam",
        "HSC",
        "r",
        "g",
        "Cam-r",
        "HSC-g",
        "science",
        "bias",
        "SCIENCE",
        "WAVEFRONT",
        "",
        "Cam'",
        "s",
    ];
    prop_oneof![
        prop::sample::select(&WORDS[..]).prop_map(|s| Operand::Literal {
            value: Literal::String(s.into()),
            column: 0
        }),
        Just(Operand::Bind {
            name: "b".into(),
            column: 0
        }),
    ]
}

fn number_value() -> impl Strategy<Value = Operand> {
    prop_oneof![
        (-2i64..12).prop_map(|v| Operand::Literal {
            value: Literal::Int(v),
            column: 0
        }),
        Just(Operand::Literal {
            value: Literal::Int(DAY_OBS),
            column: 0
        }),
        prop::sample::select(&[0.0, 15.0, 29.9, 30.0, 30.5, 2.5, -1.0][..]).prop_map(|v| {
            Operand::Literal {
                value: Literal::Float(v),
                column: 0,
            }
        }),
        prop::sample::select(&["e", "t"][..]).prop_map(|n| Operand::Bind {
            name: n.into(),
            column: 0
        }),
    ]
}

/// A predicate over one field, with values of a compatible type.
fn typed_predicate() -> impl Strategy<Value = Node> {
    prop::sample::select(&ALL_FIELDS[..]).prop_flat_map(|field| {
        let value = if field.is_string() {
            string_value().boxed()
        } else {
            number_value().boxed()
        };
        let item = if field.is_int() {
            prop_oneof![
                value.clone().prop_map(InItem::Value),
                (-3i64..12, 0i64..6, 1i64..4).prop_map(|(start, len, stride)| InItem::Range {
                    start,
                    stop: start + len,
                    stride,
                    column: 0
                }),
            ]
            .boxed()
        } else {
            value.clone().prop_map(InItem::Value).boxed()
        };
        let other_numeric = prop::sample::select(
            &[
                Field::Exposure,
                Field::Detector,
                Field::ExposureTime,
                Field::DayObs,
            ][..],
        );
        let rhs = if field.is_string() {
            value.clone()
        } else {
            prop_oneof![
                3 => value.clone(),
                1 => other_numeric.prop_map(|f| Operand::Ident(f.ident())),
            ]
            .boxed()
        };
        let lhs = Operand::Ident(field.ident());
        prop_oneof![
            (compare_op(), rhs, any::<bool>()).prop_map(move |(op, rhs, flip)| {
                let (l, r) = if flip {
                    (rhs, lhs.clone())
                } else {
                    (lhs.clone(), rhs)
                };
                Node::Compare {
                    lhs: l,
                    op,
                    rhs: r,
                    column: 0,
                }
            }),
            (any::<bool>(), prop::collection::vec(item, 1..4)).prop_map(move |(negated, items)| {
                Node::In {
                    lhs: Operand::Ident(field.ident()),
                    negated,
                    items,
                    column: 0,
                }
            }),
        ]
    })
}

fn query_tree() -> impl Strategy<Value = Node> {
    typed_predicate().prop_recursive(4, 16, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|n| Node::Not(Box::new(n))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Node::And),
            prop::collection::vec(inner, 2..4).prop_map(Node::Or),
        ]
    })
}

fn operand_value(op: &Operand, row: &Row) -> V {
    match op {
        Operand::Ident(id) => Field::from_ident(id).value(row),
        Operand::Literal { value, .. } => match value {
            Literal::Int(v) => V::N(*v as f64),
            Literal::Float(v) => V::N(*v),
            Literal::String(s) => V::S(s.clone()),
            Literal::Bool(b) => V::N(f64::from(u8::from(*b))),
        },
        Operand::Bind { name, .. } => bind_value(name),
    }
}

/// What the expression means, evaluated on one row.
fn eval(node: &Node, row: &Row) -> bool {
    match node {
        Node::Or(terms) => terms.iter().any(|t| eval(t, row)),
        Node::And(terms) => terms.iter().all(|t| eval(t, row)),
        Node::Not(inner) => !eval(inner, row),
        Node::Compare { lhs, op, rhs, .. } => {
            let (l, r) = (operand_value(lhs, row), operand_value(rhs, row));
            match op {
                CompareOp::Eq => l == r,
                CompareOp::Ne => l != r,
                CompareOp::Lt => l < r,
                CompareOp::Le => l <= r,
                CompareOp::Gt => l > r,
                CompareOp::Ge => l >= r,
            }
        }
        Node::In {
            lhs,
            negated,
            items,
            ..
        } => {
            let l = operand_value(lhs, row);
            let found = items.iter().any(|item| match item {
                InItem::Value(v) => operand_value(v, row) == l,
                InItem::Range {
                    start,
                    stop,
                    stride,
                    ..
                } => match l {
                    V::N(x) => {
                        let x = x as i64;
                        *start <= x && x <= *stop && (x - start) % stride == 0
                    }
                    V::S(_) => unreachable!("ranges are only generated for int fields"),
                },
            });
            found != *negated
        }
        Node::Truth(_) => unreachable!("no boolean fields in the default universe"),
        Node::Overlaps { .. } => unreachable!("no regions among the exposure query's fields"),
    }
}

type Key = (String, i64, i64);

fn key_of(instrument: &str, exposure: i64, detector: i64) -> Key {
    (instrument.to_string(), exposure, detector)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn query_results_equal_an_in_memory_evaluation(
        recs in records(),
        trees in prop::collection::vec(query_tree(), 12),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::create(
            &dir.path().join("registry.sqlite3"),
            &DimensionUniverse::default_universe(),
        )
        .unwrap();
        let set = quanta_registry::parse_records_json(&records_json(&recs).to_string(), "records")
            .unwrap();
        reg.insert_dimension_records(&set).unwrap();
        let all = rows(&recs);
        let dims = ["exposure".to_string(), "detector".to_string()];
        for tree in &trees {
            let text = tree.to_string();
            let got: BTreeSet<Key> = reg
                .query_data_ids(&dims, &text, &binds())
                .unwrap_or_else(|e| panic!("{text}: {e}"))
                .iter()
                .map(|d| {
                    let s = |k: &str| match d.get(k) {
                        Some(DataIdValue::Str(s)) => s.to_string(),
                        other => panic!("{k}: {other:?}"),
                    };
                    let i = |k: &str| match d.get(k) {
                        Some(DataIdValue::Int(v)) => *v,
                        other => panic!("{k}: {other:?}"),
                    };
                    key_of(&s("instrument"), i("exposure"), i("detector"))
                })
                .collect();
            let want: BTreeSet<Key> = all
                .iter()
                .filter(|r| eval(tree, r))
                .map(|r| key_of(&r.instrument, r.exposure, r.detector))
                .collect();
            prop_assert_eq!(got, want, "expression: {}", text);
        }
    }
}

// ---------------------------------------------------------------------------
// OVERLAPS on a real registry (needs quanta-spatial's geometry)

/// A visit's region: a circle (ra, dec, radius in degrees), or none.
type VisitCircle = Option<(f64, f64, f64)>;

fn spatial_registry(visits: &[VisitCircle]) -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = Registry::create(
        &dir.path().join("registry.sqlite3"),
        &DimensionUniverse::default_universe(),
    )
    .unwrap();
    let visits: Vec<serde_json::Value> = visits
        .iter()
        .enumerate()
        .map(|(id, circle)| {
            let mut v = json!({"instrument": "Cam", "id": id, "physical_filter": "Cam-r"});
            if let Some((ra, dec, radius)) = circle {
                v["region"] = json!({"circle": {"center": [ra, dec], "radius": radius}});
            }
            v
        })
        .collect();
    let records = json!({
        "instrument": [{"name": "Cam"}],
        "physical_filter": [{"instrument": "Cam", "name": "Cam-r", "band": "r"}],
        "visit": visits,
    });
    let set = quanta_registry::parse_records_json(&records.to_string(), "records").unwrap();
    reg.insert_dimension_records(&set).unwrap();
    (dir, reg)
}

fn visits_where(reg: &Registry, text: &str, binds: &Binds) -> Vec<i64> {
    reg.query_data_ids(&["visit".to_string()], text, binds)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .iter()
        .map(|d| match d.get("visit") {
            Some(DataIdValue::Int(v)) => *v,
            other => panic!("visit: {other:?}"),
        })
        .collect()
}

#[test]
fn overlaps_selects_visits_by_region_in_a_real_registry() {
    let (_dir, reg) = spatial_registry(&[Some((10.0, 0.0, 1.0)), Some((200.0, -45.0, 2.0)), None]);
    let none = Binds::new();
    assert_eq!(
        visits_where(&reg, "visit.region OVERLAPS POINT(10.5, 0.5)", &none),
        vec![0]
    );
    assert_eq!(
        visits_where(&reg, "visit.region overlaps point(201, -46)", &none),
        vec![1]
    );
    assert_eq!(
        visits_where(&reg, "visit.region OVERLAPS POINT(100, 0)", &none),
        Vec::<i64>::new()
    );
    let binds: Binds = HashMap::from([
        ("ra".to_string(), Value::Integer(12)),
        ("dec".to_string(), Value::Real(0.0)),
        ("r".to_string(), Value::Real(1.5)),
    ]);
    assert_eq!(
        visits_where(&reg, "visit.region OVERLAPS CIRCLE(:ra, :dec, :r)", &binds),
        vec![0]
    );
    assert_eq!(
        visits_where(
            &reg,
            "visit.region OVERLAPS CIRCLE(100, -20, 99) OR visit = 2",
            &none
        ),
        vec![0, 1, 2]
    );
    // A visit without a region is in neither OVERLAPS nor its negation.
    assert_eq!(
        visits_where(&reg, "NOT visit.region OVERLAPS POINT(10, 0)", &none),
        vec![1]
    );
    let err = reg
        .query_data_ids(
            &["visit".to_string()],
            "visit.exposure_time OVERLAPS POINT(1, 2)",
            &none,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("`visit.exposure_time` is a float, not a region;")
            && err.contains(" at column 1\n"),
        "{err}"
    );
}

/// A probe shape of a generated predicate: (ra, dec, radius), a point when
/// the radius is 0.
type Probe = (f64, f64, f64);

fn visit_circle() -> impl Strategy<Value = VisitCircle> {
    prop::option::weighted(
        0.85,
        (0.0..360.0, -85.0..85.0, 0.1..10.0f64).prop_map(|(ra, dec, r)| (ra, dec, r)),
    )
}

fn probe() -> impl Strategy<Value = Probe> {
    prop_oneof![
        (-10.0..370.0, -90.0..=90.0f64).prop_map(|(ra, dec)| (ra, dec, 0.0)),
        (-10.0..370.0, -90.0..=90.0, 0.0..40.0f64),
    ]
}

fn overlaps_node(p: Probe) -> Node {
    let num = |v: f64| Operand::Literal {
        value: Literal::Float(v),
        column: 0,
    };
    let (ra, dec, radius) = p;
    let shape = if radius == 0.0 {
        Shape::Point {
            ra: num(ra),
            dec: num(dec),
            column: 0,
        }
    } else {
        Shape::Circle {
            ra: num(ra),
            dec: num(dec),
            radius: num(radius),
            column: 0,
        }
    };
    Node::Overlaps {
        region: Identifier {
            element: Some("visit".into()),
            name: "region".into(),
            column: 0,
        },
        shape,
        column: 0,
    }
}

fn spatial_tree() -> impl Strategy<Value = Node> {
    probe()
        .prop_map(overlaps_node)
        .prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                inner.clone().prop_map(|n| Node::Not(Box::new(n))),
                prop::collection::vec(inner.clone(), 2..4).prop_map(Node::And),
                prop::collection::vec(inner, 2..4).prop_map(Node::Or),
            ]
        })
}

/// Great-circle distance in degrees (haversine), independent of the
/// spatial crate.
fn distance_deg(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (ra1, dec1) = (a.0.to_radians(), a.1.to_radians());
    let (ra2, dec2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((dec2 - dec1) / 2.0).sin().powi(2)
        + dec1.cos() * dec2.cos() * ((ra2 - ra1) / 2.0).sin().powi(2);
    2.0 * h.sqrt().min(1.0).asin().to_degrees()
}

/// The probe of an OVERLAPS node built by `overlaps_node`.
fn probe_of(shape: &Shape) -> Probe {
    let num = |op: &Operand| match op {
        Operand::Literal {
            value: Literal::Float(v),
            ..
        } => *v,
        other => panic!("generated shapes hold floats, not {other:?}"),
    };
    match shape {
        Shape::Point { ra, dec, .. } => (num(ra), num(dec), 0.0),
        Shape::Circle {
            ra, dec, radius, ..
        } => (num(ra), num(dec), num(radius)),
    }
}

/// How far a probe is from deciding differently (degrees): results this
/// close to tangency are floating-point edge cases, not compared.
fn margin(visit: (f64, f64, f64), p: Probe) -> f64 {
    (distance_deg((visit.0, visit.1), (p.0, p.1)) - (visit.2 + p.2)).abs()
}

/// SQL's three-valued meaning of the tree for one visit (`None`: NULL).
fn eval_spatial(node: &Node, visit: VisitCircle) -> Option<bool> {
    match node {
        Node::Or(terms) => {
            let vals: Vec<Option<bool>> = terms.iter().map(|t| eval_spatial(t, visit)).collect();
            if vals.contains(&Some(true)) {
                Some(true)
            } else if vals.contains(&None) {
                None
            } else {
                Some(false)
            }
        }
        Node::And(terms) => {
            let vals: Vec<Option<bool>> = terms.iter().map(|t| eval_spatial(t, visit)).collect();
            if vals.contains(&Some(false)) {
                Some(false)
            } else if vals.contains(&None) {
                None
            } else {
                Some(true)
            }
        }
        Node::Not(inner) => eval_spatial(inner, visit).map(|b| !b),
        Node::Overlaps { shape, .. } => {
            let p = probe_of(shape);
            visit.map(|(ra, dec, r)| distance_deg((ra, dec), (p.0, p.1)) <= r + p.2)
        }
        other => panic!("not generated: {other:?}"),
    }
}

fn probes(node: &Node, out: &mut Vec<Probe>) {
    match node {
        Node::Or(terms) | Node::And(terms) => terms.iter().for_each(|t| probes(t, out)),
        Node::Not(inner) => probes(inner, out),
        Node::Overlaps { shape, .. } => out.push(probe_of(shape)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn overlaps_results_equal_great_circle_distances(
        visits in prop::collection::vec(visit_circle(), 1..12),
        trees in prop::collection::vec(spatial_tree(), 8),
    ) {
        let (_dir, reg) = spatial_registry(&visits);
        for tree in &trees {
            let mut ps = Vec::new();
            probes(tree, &mut ps);
            let near_tangent = visits.iter().flatten().any(|v| {
                ps.iter().any(|p| margin(*v, *p) < 1e-6)
            });
            if near_tangent {
                continue;
            }
            let text = tree.to_string();
            let got = visits_where(&reg, &text, &Binds::new());
            let want: Vec<i64> = (0..visits.len())
                .filter(|&i| eval_spatial(tree, visits[i]) == Some(true))
                .map(|i| i as i64)
                .collect();
            prop_assert_eq!(got, want, "expression: {}", text);
        }
    }
}
