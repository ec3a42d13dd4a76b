//! Parse, compile and end-to-end tests against a real in-memory SQLite.

use std::collections::HashMap;

use crate::value::SqlValue as Value;
use quanta_core::FieldType;
use quanta_spatial::{Circle, ConvexPolygon, Region};
use rusqlite::Connection;

use super::compile::compile_into;
use super::*;

/// Resolves a fixed set of names onto the single test table `t`.
struct TestResolver;

impl ColumnResolver for TestResolver {
    fn resolve(&self, ident: &Identifier) -> Result<ResolvedColumn, String> {
        let (sql, field_type) = match (ident.element.as_deref(), ident.name.as_str()) {
            (None, "exposure") | (Some("exposure"), "id") => ("t.exposure", FieldType::Int),
            (None, "detector") | (Some("detector"), "id") => ("t.detector", FieldType::Int),
            (None, "instrument") => ("t.instrument", FieldType::String),
            (None, "band") => ("t.band", FieldType::String),
            (Some("exposure"), "exposure_time") => ("t.exposure_time", FieldType::Float),
            (Some("detector"), "full_name") => ("t.full_name", FieldType::String),
            (Some("exposure"), "can_see_sky") => ("t.can_see_sky", FieldType::Bool),
            (Some("visit"), "region") => ("t.region", FieldType::Region),
            _ => return Err(format!("unknown dimension or field \"{ident}\"")),
        };
        Ok(ResolvedColumn {
            sql: sql.to_string(),
            field_type,
        })
    }
}

fn parse_some(text: &str) -> Expr {
    match parse(text) {
        Ok(Some(e)) => e,
        other => panic!("{text:?} did not parse to an expression: {other:?}"),
    }
}

fn compile_with(text: &str, binds: &HashMap<String, Value>) -> Result<CompiledWhere, ExprError> {
    match parse(text)? {
        Some(e) => compile(&e, &TestResolver, binds, crate::Dialect::Sqlite),
        None => panic!("{text:?} is empty"),
    }
}

fn compile_text(text: &str) -> Result<CompiledWhere, ExprError> {
    compile_with(text, &HashMap::new())
}

/// The column of the first error, from parse or compile.
fn error_at(text: &str) -> ExprError {
    match compile_text(text) {
        Err(e) => e,
        Ok(c) => panic!("{text:?} compiled to {c:?}, expected an error"),
    }
}

/// A table `t` with one row per (exposure, detector), plus `dataset` to
/// check injection attempts leave alone.
fn db(exposures: std::ops::Range<i64>, detectors: std::ops::Range<i64>) -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(
        "CREATE TABLE t (exposure INTEGER, detector INTEGER, instrument TEXT, band TEXT,
                         exposure_time REAL, full_name TEXT, can_see_sky INTEGER);
         CREATE TABLE dataset (id INTEGER);
         INSERT INTO dataset VALUES (1);",
    )
    .unwrap();
    for e in exposures {
        for d in detectors.clone() {
            conn.execute(
                "INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                rusqlite::params![
                    e,
                    d,
                    if e % 2 == 0 { "Cam" } else { "Cam'; --" },
                    if e < 5 { "r" } else { "g" },
                    e as f64 * 10.0,
                    format!("D{d:02}"),
                    e % 3 == 0,
                ],
            )
            .unwrap();
        }
    }
    conn
}

fn select_with(conn: &Connection, text: &str, binds: &HashMap<String, Value>) -> Vec<(i64, i64)> {
    let compiled = compile_with(text, binds).unwrap_or_else(|e| panic!("{e}"));
    let sql = format!(
        "SELECT exposure, detector FROM t WHERE {} ORDER BY exposure, detector",
        compiled.sql
    );
    let mut stmt = conn.prepare(&sql).unwrap();
    let rows = stmt
        .query_map(rusqlite::params_from_iter(compiled.params.iter()), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

fn select(conn: &Connection, text: &str) -> Vec<(i64, i64)> {
    select_with(conn, text, &HashMap::new())
}

fn exposures(conn: &Connection, text: &str) -> Vec<i64> {
    select(conn, text).into_iter().map(|(e, _)| e).collect()
}

fn dataset_table_exists(conn: &Connection) -> bool {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'dataset'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        == 1
}

#[test]
fn empty_expression_means_no_constraint() {
    assert_eq!(parse("").unwrap(), None);
    assert_eq!(parse("  \t\n ").unwrap(), None);
}

#[test]
fn comparisons_compile_to_parameters() {
    let c = compile_text("exposure.exposure_time >= 30.0").unwrap();
    assert_eq!(c.sql, "(t.exposure_time >= ?1)");
    assert_eq!(c.params, vec![Value::Real(30.0)]);

    for (op, sql) in [
        ("=", "="),
        ("!=", "<>"),
        ("<>", "<>"),
        ("<", "<"),
        ("<=", "<="),
        (">", ">"),
        (">=", ">="),
    ] {
        let c = compile_text(&format!("detector {op} -7")).unwrap();
        assert_eq!(c.sql, format!("(t.detector {sql} ?1)"));
        assert_eq!(c.params, vec![Value::Integer(-7)]);
    }

    let c = compile_text("instrument = 'Cam' AND band = \"it's\" AND detector.full_name = 'a''b'")
        .unwrap();
    assert_eq!(
        c.sql,
        "((t.instrument = ?1) AND (t.band = ?2) AND (t.full_name = ?3))"
    );
    assert_eq!(
        c.params,
        vec![
            Value::Text("Cam".into()),
            Value::Text("it's".into()),
            Value::Text("a'b".into())
        ]
    );

    let c = compile_text("exposure.exposure_time < 1e3 AND exposure.id > -2.5e-1").unwrap();
    assert_eq!(c.params, vec![Value::Real(1000.0), Value::Real(-0.25)]);

    let c = compile_text(&format!("exposure = {}", i64::MIN)).unwrap();
    assert_eq!(c.params, vec![Value::Integer(i64::MIN)]);
}

#[test]
fn in_lists_compile_ranges_without_expanding_them() {
    let c = compile_text("exposure IN (1, 2, 5..9, 10..20:2)").unwrap();
    assert_eq!(
        c.sql,
        "((t.exposure IN (?1, ?2) OR (t.exposure BETWEEN ?3 AND ?4) OR \
         (t.exposure BETWEEN ?5 AND ?6 AND (t.exposure - ?7) % ?8 = 0)))"
    );
    let ints = |v: &[i64]| v.iter().map(|&i| Value::Integer(i)).collect::<Vec<_>>();
    assert_eq!(c.params, ints(&[1, 2, 5, 9, 10, 20, 10, 2]));

    let c = compile_text("exposure NOT IN (0..9000000000000000000)").unwrap();
    assert_eq!(c.sql, "(NOT ((t.exposure BETWEEN ?1 AND ?2)))");
    assert_eq!(c.params, ints(&[0, 9_000_000_000_000_000_000]));
}

#[test]
fn in_ranges_select_the_right_rows() {
    let conn = db(0..30, 0..1);
    assert_eq!(exposures(&conn, "exposure IN (2..4)"), vec![2, 3, 4]);
    assert_eq!(exposures(&conn, "exposure IN (0..9:3)"), vec![0, 3, 6, 9]);
    assert_eq!(exposures(&conn, "exposure IN (0..10:3)"), vec![0, 3, 6, 9]);
    assert_eq!(exposures(&conn, "exposure IN (7..7)"), vec![7]);
    assert_eq!(exposures(&conn, "exposure IN (-3..3:3)"), vec![0, 3]);
    assert_eq!(
        exposures(&conn, "exposure IN (1, 5..6, 20..29:4)"),
        vec![1, 5, 6, 20, 24, 28]
    );
    let rest: Vec<i64> = (0..30).filter(|e| !(2..=4).contains(e)).collect();
    assert_eq!(exposures(&conn, "exposure NOT IN (2..4)"), rest);
    let rest: Vec<i64> = (0..30).filter(|e| ![1, 7, 8, 9].contains(e)).collect();
    assert_eq!(exposures(&conn, "exposure not in (1, 7..9)"), rest);
}

#[test]
fn in_range_combined_with_comparison_over_a_grid() {
    let conn = db(0..10, 0..10);
    let rows = select(&conn, "exposure IN (2..4) AND detector != 3");
    assert_eq!(rows.len(), 27);
    assert!(rows.iter().all(|&(e, d)| (2..=4).contains(&e) && d != 3));
}

#[test]
fn precedence_is_not_then_and_then_or() {
    match parse_some("exposure = 1 OR detector = 2 AND NOT band = 'r'").root {
        Node::Or(terms) => {
            assert!(matches!(terms[0], Node::Compare { .. }));
            match &terms[1] {
                Node::And(inner) => {
                    assert!(matches!(inner[0], Node::Compare { .. }));
                    assert!(matches!(inner[1], Node::Not(_)));
                }
                other => panic!("expected AND, got {other:?}"),
            }
        }
        other => panic!("expected OR, got {other:?}"),
    }

    let conn = db(0..10, 0..10);
    // AND binds tighter: all of exposure 1, plus (2, 5).
    assert_eq!(
        select(&conn, "exposure = 1 OR exposure = 2 AND detector = 5").len(),
        11
    );
    assert_eq!(
        select(&conn, "(exposure = 1 OR exposure = 2) AND detector = 5"),
        vec![(1, 5), (2, 5)]
    );
    // NOT binds tighter than AND.
    assert_eq!(select(&conn, "NOT exposure = 1 AND detector = 0").len(), 9);
    assert_eq!(
        select(&conn, "NOT (exposure = 1 AND detector = 0)").len(),
        99
    );
    assert_eq!(
        select(
            &conn,
            "not not exposure = 1 aNd detector = 0 Or exposure = 9 AND detector = 9"
        ),
        vec![(1, 0), (9, 9)]
    );
}

#[test]
fn metadata_strings_and_booleans_against_sqlite() {
    let conn = db(0..10, 0..2);
    assert_eq!(
        exposures(
            &conn,
            "exposure.exposure_time > 65 AND detector.full_name = 'D01'"
        ),
        vec![7, 8, 9]
    );
    // Int and float mix both ways.
    assert_eq!(
        exposures(&conn, "exposure <= 1.5 AND detector = 0"),
        vec![0, 1]
    );
    assert_eq!(
        exposures(&conn, "exposure.exposure_time = 30 AND detector = 0"),
        vec![3]
    );
    assert_eq!(
        exposures(&conn, "exposure.can_see_sky AND detector = 0"),
        vec![0, 3, 6, 9]
    );
    assert_eq!(
        exposures(
            &conn,
            "exposure.can_see_sky = FALSE AND detector = 0 AND exposure < 5"
        ),
        vec![1, 2, 4]
    );
    assert_eq!(
        exposures(&conn, "NOT exposure.can_see_sky AND exposure.can_see_sky != 1 AND detector = 1 AND band = 'r'"),
        vec![1, 2, 4]
    );
    assert_eq!(
        exposures(
            &conn,
            "band IN ('r') AND exposure IN (3..6) AND detector = 0"
        ),
        vec![3, 4]
    );
}

#[test]
fn quotes_and_sql_in_strings_are_only_parameters() {
    let conn = db(0..4, 0..1);
    let text = "instrument = 'x''; DROP TABLE dataset; --'";
    let c = compile_text(text).unwrap();
    assert_eq!(c.sql, "(t.instrument = ?1)");
    assert_eq!(
        c.params,
        vec![Value::Text("x'; DROP TABLE dataset; --".into())]
    );
    assert!(select(&conn, text).is_empty());
    // A stored value with a quote and a comment marker matches exactly.
    assert_eq!(exposures(&conn, "instrument = \"Cam'; --\""), vec![1, 3]);
    assert_eq!(exposures(&conn, "instrument = 'Cam''; --'"), vec![1, 3]);
    assert!(dataset_table_exists(&conn));
}

#[test]
fn statement_after_expression_is_a_syntax_error() {
    let conn = db(0..2, 0..2);
    let text = "detector = 1; DROP TABLE dataset";
    let err = parse(text).unwrap_err();
    assert_eq!(err.column, 13);
    assert!(err.message.contains("';'"), "{}", err.message);
    assert!(dataset_table_exists(&conn));
    // Also with a harmless separator that lexes fine.
    let err = parse("detector = 1 exposure = 2").unwrap_err();
    assert_eq!(err.column, 14);
    assert!(
        err.message
            .contains("unexpected identifier exposure; expected AND, OR or the end"),
        "{}",
        err.message
    );
}

#[test]
fn unknown_identifier_points_at_it() {
    let err = error_at("exposre = 1");
    assert_eq!(err.column, 1);
    assert_eq!(
        err.to_string(),
        "unknown dimension or field \"exposre\" at column 1\n  exposre = 1\n  ^"
    );
    let err = error_at("detector = 1 AND exposure.exposre_time > 3");
    assert_eq!(err.column, 18);
    assert_eq!(
        err.message,
        "unknown dimension or field \"exposure.exposre_time\""
    );
    // Columns count characters, not bytes.
    assert_eq!(error_at("instrument = 'ü' AND exposre = 1").column, 22);
}

#[test]
fn syntax_errors_point_at_the_problem() {
    let cases: &[(&str, usize, &str)] = &[
        ("(exposure = 1 AND detector = 2", 1, "unclosed '('"),
        (
            "(exposure = 1 detector",
            15,
            "expected ')' to close the '(' at column 1",
        ),
        ("exposure IN (1, 2", 13, "unclosed '(' of the IN list"),
        ("exposure IN 1", 13, "expected '(' after IN"),
        ("exposure IN ()", 14, "empty IN list"),
        ("exposure IN (1 2)", 16, "expected ',' or ')'"),
        ("exposure IN (detector)", 14, "not the identifier detector"),
        (
            "exposure = = 1",
            12,
            "expected a dimension, field, value or '(', found '='",
        ),
        ("exposure =", 11, "found the end of the expression"),
        ("exposure = 1)", 13, "unexpected ')'"),
        ("exposure = 1 AND", 17, "found the end of the expression"),
        ("exposure NOT 3", 14, "expected IN after NOT"),
        ("instrument = 'Cam", 14, "unterminated string"),
        ("instrument = \"Cam'", 14, "unterminated string"),
        ("exposure = 99999999999999999999", 12, "out of range"),
        ("exposure = 12ab", 12, "invalid number \"12ab\""),
        ("exposure = - 'a'", 14, "expected a number after '-'"),
        ("exposure ! 3", 10, "unexpected character '!'"),
        ("exposure.id.x = 3", 12, "unexpected '.'"),
    ];
    for &(text, column, needle) in cases {
        let err = parse(text).unwrap_err();
        assert_eq!(err.column, column, "{text:?}: {err}");
        assert!(err.message.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn bad_ranges_are_rejected() {
    let cases: &[(&str, usize, &str)] = &[
        ("exposure IN (5..2)", 14, "range 5..2 is empty"),
        ("exposure IN (0..9:0)", 19, "stride must be positive, got 0"),
        (
            "exposure IN (0..9:-2)",
            19,
            "stride must be positive, got -2",
        ),
        ("exposure IN (1.5..3)", 14, "range start must be an integer"),
        ("exposure IN (1..'a')", 17, "range end must be an integer"),
        ("exposure IN (:a..3)", 14, "range start must be an integer"),
        (
            "exposure IN (1..3:x)",
            18,
            "range stride must be an integer",
        ),
        (
            "exposure IN (1..3:'x')",
            19,
            "range stride must be an integer",
        ),
        (
            "exposure IN (-9223372036854775808..9223372036854775807)",
            14,
            "too large",
        ),
    ];
    for &(text, column, needle) in cases {
        let err = parse(text).unwrap_err();
        assert_eq!(err.column, column, "{text:?}: {err}");
        assert!(err.message.contains(needle), "{text:?}: {err}");
    }
    // A float column cannot take an integer range: 2.5 would match 2..4.
    let err = error_at("exposure.exposure_time IN (2..4)");
    assert_eq!(err.column, 28);
    assert!(err.message.contains("integer range 2..4"), "{err}");
}

#[test]
fn type_mismatches_point_at_the_literal() {
    let err = error_at("exposure = 'abc'");
    assert_eq!(err.column, 12);
    assert_eq!(
        err.message,
        "cannot compare exposure (an integer field) with 'abc' (a string)"
    );
    let err = error_at("instrument = 3");
    assert_eq!(err.column, 14);
    let err = error_at("'abc' < exposure.exposure_time");
    assert_eq!(err.column, 1);
    let err = error_at("instrument IN ('a', 3)");
    assert_eq!(err.column, 21);
    let err = error_at("detector.full_name = exposure");
    assert_eq!(err.column, 20, "two columns: point at the operator");
    let err = error_at("exposure.can_see_sky = 'yes'");
    assert_eq!(err.column, 24);
    let err = error_at("band AND exposure = 1");
    assert_eq!(err.column, 1);
    assert!(err.message.contains("is not a condition"), "{err}");
}

#[test]
fn binds_are_parameters_and_must_be_supplied() {
    let conn = db(0..10, 0..2);
    let binds: HashMap<String, Value> = [
        ("t".to_string(), Value::Real(45.0)),
        ("inst".to_string(), Value::Text("Cam".into())),
        ("d".to_string(), Value::Integer(1)),
        ("unused".to_string(), Value::Integer(0)),
    ]
    .into_iter()
    .collect();
    let text = "exposure.exposure_time > :t AND instrument = :inst AND detector IN (:d, 7)";
    let c = compile_with(text, &binds).unwrap();
    assert_eq!(
        c.sql,
        "((t.exposure_time > ?1) AND (t.instrument = ?2) AND ((t.detector IN (?3, ?4))))"
    );
    assert_eq!(
        c.params,
        vec![
            Value::Real(45.0),
            Value::Text("Cam".into()),
            Value::Integer(1),
            Value::Integer(7)
        ]
    );
    assert_eq!(select_with(&conn, text, &binds), vec![(6, 1), (8, 1)]);

    let err = compile_with("exposure = 1 OR exposure = :missing", &binds).unwrap_err();
    assert_eq!(err.column, 28);
    assert_eq!(err.message, "no value supplied for bind parameter :missing");

    let err = compile_with("detector = :inst", &binds).unwrap_err();
    assert_eq!(err.column, 12);
    assert!(err.message.contains(":inst (a string)"), "{err}");

    let nulls: HashMap<String, Value> = [("n".to_string(), Value::Null)].into_iter().collect();
    let err = compile_with("detector = :n", &nulls).unwrap_err();
    assert_eq!(err.column, 12);
    assert!(err.message.contains("NULL"), "{err}");
}

#[test]
fn identifiers_are_deduplicated_in_order() {
    let e = parse_some(
        "exposure IN (1) AND exposure.exposure_time > 3 OR exposure = 2 AND band = 'r' \
         AND NOT exposure.exposure_time < 1",
    );
    let ids = e.identifiers();
    let named: Vec<(Option<&str>, &str, usize)> = ids
        .iter()
        .map(|i| (i.element.as_deref(), i.name.as_str(), i.column))
        .collect();
    assert_eq!(
        named,
        vec![
            (None, "exposure", 1),
            (Some("exposure"), "exposure_time", 21),
            (None, "band", 68),
        ]
    );
    assert!(parse_some("3 = :x").identifiers().is_empty());
}

#[test]
fn hostile_nesting_is_an_error_not_a_crash() {
    let deep = format!("{}exposure = 1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(parse(&deep)
        .unwrap_err()
        .message
        .contains("nested too deeply"));
    let nots = format!("{}exposure = 1", "NOT ".repeat(10_000));
    assert!(parse(&nots)
        .unwrap_err()
        .message
        .contains("nested too deeply"));
    // Long flat chains are fine.
    let chain = vec!["exposure = 1"; 10_000].join(" OR ");
    let c = compile_text(&chain).unwrap();
    assert_eq!(c.params.len(), 10_000);
}

#[test]
fn error_display_marks_the_column() {
    let err = parse("exposure IN (5..2)").unwrap_err();
    assert_eq!(
        err.to_string(),
        "range 5..2 is empty: its start is greater than its end at column 14\n  \
         exposure IN (5..2)\n               ^"
    );
    // Tabs before the column are echoed so the caret lines up.
    let err = parse("\texposure = ").unwrap_err();
    assert!(err.to_string().ends_with("\n  \t           ^"), "{err:?}");
}

// ---------------------------------------------------------------------------
// Spatial predicates: `region OVERLAPS POINT(ra, dec)` / `CIRCLE(ra, dec, r)`

fn binds_of(pairs: &[(&str, Value)]) -> HashMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn circle_blob(ra: f64, dec: f64, radius: f64) -> Value {
    let circle = Circle::from_lonlat_deg(ra, dec, radius).unwrap();
    Value::Blob(Region::Circle(circle).encode())
}

#[test]
fn overlaps_parses_case_insensitively_and_prints_canonically() {
    let cases = [
        (
            "visit.region overlaps point(10, -5.5)",
            "visit.region OVERLAPS POINT(10, -5.5)",
        ),
        (
            "visit.region OVERLAPS Circle( -1e1 ,:dec,0.5 )",
            "visit.region OVERLAPS CIRCLE(-10.0, :dec, 0.5)",
        ),
        (
            "NOT visit.region OVERLAPS POINT(:ra, :dec) AND exposure = 1 OR band = 'r'",
            "NOT visit.region OVERLAPS POINT(:ra, :dec) AND exposure = 1 OR band = 'r'",
        ),
        // POINT and CIRCLE are words only after OVERLAPS.
        ("point = 1 AND circle = 2", "point = 1 AND circle = 2"),
    ];
    for (text, canonical) in cases {
        let e = parse_some(text);
        assert_eq!(e.to_string(), canonical, "{text:?}");
        let again = parse_some(canonical);
        assert_eq!(again.to_string(), canonical);
    }
    match parse_some("visit.region OVERLAPS CIRCLE(1, 2, 3)").root {
        Node::Overlaps {
            region,
            shape:
                Shape::Circle {
                    ra,
                    dec,
                    radius,
                    column: shape_column,
                },
            column,
        } => {
            assert_eq!(region.to_string(), "visit.region");
            assert_eq!((region.column, column, shape_column), (1, 14, 23));
            assert_eq!((ra.column(), dec.column(), radius.column()), (30, 33, 36));
        }
        other => panic!("expected OVERLAPS, got {other:?}"),
    }
    let ids = parse_some("visit.region OVERLAPS POINT(1, 2) OR exposure = 3").identifiers();
    let names: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    assert_eq!(names, vec!["visit.region", "exposure"]);
}

#[test]
fn overlaps_syntax_errors_point_at_the_problem() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "visit.region OVERLAPS POINT(1)",
            23,
            "POINT takes 2 arguments (ra, dec), got 1",
        ),
        (
            "visit.region OVERLAPS POINT(1, 2, 3)",
            23,
            "POINT takes 2 arguments (ra, dec), got 3",
        ),
        (
            "visit.region OVERLAPS CIRCLE(1, 2)",
            23,
            "CIRCLE takes 3 arguments (ra, dec, radius), got 2",
        ),
        (
            "visit.region OVERLAPS circle()",
            23,
            "CIRCLE takes 3 arguments (ra, dec, radius), got 0",
        ),
        (
            "visit.region OVERLAPS POINT(1, 'x')",
            32,
            "the dec of POINT must be a number or a bind parameter, not the string 'x'",
        ),
        (
            "visit.region OVERLAPS CIRCLE(1, 2, exposure.exposure_time)",
            36,
            "the radius of CIRCLE must be a number or a bind parameter, \
             not the identifier exposure.exposure_time",
        ),
        (
            "visit.region OVERLAPS POINT(TRUE, 2)",
            29,
            "the ra of POINT must be a number or a bind parameter, not the value TRUE",
        ),
        (
            "visit.region OVERLAPS POINT(1, 2, 'x')",
            35,
            "the argument 3 of POINT must be a number",
        ),
        (
            "visit.region OVERLAPS POINT(1, (2))",
            32,
            "expected a number or a bind parameter as the dec of POINT, found '('",
        ),
        (
            "visit.region OVERLAPS POINT(- x, 2)",
            31,
            "expected a number after '-'",
        ),
        (
            "visit.region OVERLAPS POINT(1, 2",
            28,
            "unclosed '(' of POINT",
        ),
        (
            "visit.region OVERLAPS POINT(1 2)",
            31,
            "expected ',' or ')' in POINT(...), found number 2",
        ),
        (
            "visit.region OVERLAPS POINT 1, 2",
            29,
            "expected '(' after POINT",
        ),
        (
            "visit.region OVERLAPS BOX(1, 2)",
            23,
            "expected POINT(ra, dec) or CIRCLE(ra, dec, radius) after OVERLAPS, \
             found identifier BOX",
        ),
        (
            "visit.region OVERLAPS",
            22,
            "expected POINT(ra, dec) or CIRCLE(ra, dec, radius) after OVERLAPS, \
             found the end",
        ),
        (
            "'x' OVERLAPS POINT(1, 2)",
            1,
            "OVERLAPS needs a region field on its left, such as visit.region, \
             not the string 'x'",
        ),
        (":r OVERLAPS POINT(1, 2)", 1, "not the bind parameter :r"),
        (
            "overlaps = 1",
            1,
            "expected a dimension, field, value or '('",
        ),
    ];
    for &(text, column, needle) in cases {
        let err = parse(text).unwrap_err();
        assert_eq!(err.column, column, "{text:?}: {err}");
        assert!(err.message.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn overlaps_type_errors_point_at_the_column() {
    let err = error_at("exposure = 1 AND exposure.exposure_time OVERLAPS POINT(1, 2)");
    assert_eq!(err.column, 18);
    assert!(
        err.message
            .starts_with("`exposure.exposure_time` is a float, not a region"),
        "{err}"
    );
    let err = error_at("band OVERLAPS CIRCLE(1, 2, 3)");
    assert_eq!(err.column, 1);
    assert!(err.message.starts_with("`band` is a string, not a region"));
    let err = error_at("visit.regio OVERLAPS POINT(1, 2)");
    assert_eq!(err.column, 1);
    assert!(err.message.contains("unknown dimension or field"), "{err}");

    // A region anywhere else is refused where it stands.
    for (text, column) in [
        ("visit.region = 3", 1),
        ("exposure = 1 AND 3 < visit.region", 22),
        ("visit.region IN (1, 2)", 1),
        ("visit.region IN (1..2)", 1),
        ("NOT visit.region", 5),
        ("visit.region = visit.region", 1),
    ] {
        let err = error_at(text);
        assert_eq!(err.column, column, "{text:?}: {err}");
        assert!(
            err.message
                .contains("a region can only be tested with OVERLAPS, as in visit.region OVERLAPS"),
            "{text:?}: {err}"
        );
    }
}

#[test]
fn overlaps_argument_ranges_and_binds_are_checked_at_their_column() {
    let binds = binds_of(&[
        ("s", Value::Text("north".into())),
        ("nan", Value::Real(f64::NAN)),
        ("null", Value::Null),
        ("blob", Value::Blob(vec![1])),
        ("far", Value::Real(90.5)),
        ("wide", Value::Integer(180)),
    ]);
    let cases: &[(&str, usize, &str)] = &[
        (
            "visit.region OVERLAPS POINT(10, 90.5)",
            33,
            "the dec of POINT is 90.5, outside [-90, 90] (degrees)",
        ),
        (
            "visit.region OVERLAPS POINT(10, -91)",
            33,
            "the dec of POINT is -91, outside [-90, 90]",
        ),
        (
            "visit.region OVERLAPS CIRCLE(10, :far, 1)",
            34,
            "the dec of CIRCLE is 90.5, outside [-90, 90]",
        ),
        (
            "visit.region OVERLAPS CIRCLE(10, 0, -0.5)",
            37,
            "the radius of CIRCLE is -0.5, outside [0, 180) (degrees)",
        ),
        (
            "visit.region OVERLAPS CIRCLE(10, 0, 180)",
            37,
            "the radius of CIRCLE is 180, outside [0, 180)",
        ),
        (
            "visit.region OVERLAPS CIRCLE(10, 0, :wide)",
            37,
            "the radius of CIRCLE is 180, outside [0, 180)",
        ),
        (
            "visit.region OVERLAPS POINT(:missing, 0)",
            29,
            "no value supplied for bind parameter :missing",
        ),
        (
            "visit.region OVERLAPS POINT(:s, 0)",
            29,
            "the ra of POINT must be a number, but bind parameter :s is a string",
        ),
        (
            "visit.region OVERLAPS POINT(1, :nan)",
            32,
            "the dec of POINT must be a number, but bind parameter :nan is not a finite number",
        ),
        (
            "visit.region OVERLAPS CIRCLE(1, 2, :null)",
            36,
            "the radius of CIRCLE must be a number, but bind parameter :null is NULL",
        ),
        (
            "visit.region OVERLAPS CIRCLE(:blob, 2, 3)",
            30,
            "the ra of CIRCLE must be a number, but bind parameter :blob is a blob",
        ),
    ];
    for &(text, column, needle) in cases {
        let err = compile_with(text, &binds).unwrap_err();
        assert_eq!(err.column, column, "{text:?}: {err}");
        assert!(err.message.contains(needle), "{text:?}: {err}");
    }
}

// Needs quanta-spatial's geometry (Circle, encode): implemented in parallel.
#[test]
fn overlaps_compiles_to_the_function_with_the_shape_as_one_blob() {
    let c = compile_text("visit.region OVERLAPS POINT(10, -5.5)").unwrap();
    assert_eq!(c.sql, "quanta_region_overlaps(t.region, ?1)");
    assert_eq!(c.params, vec![circle_blob(10.0, -5.5, 0.0)]);

    let c = compile_text("visit.region OVERLAPS CIRCLE(-10, 90, 0.25) AND exposure = 2").unwrap();
    assert_eq!(
        c.sql,
        "(quanta_region_overlaps(t.region, ?1) AND (t.exposure = ?2))"
    );
    assert_eq!(
        c.params,
        vec![circle_blob(-10.0, 90.0, 0.25), Value::Integer(2)]
    );

    let binds = binds_of(&[
        ("ra", Value::Integer(200)),
        ("dec", Value::Real(-30.5)),
        ("r", Value::Real(1.5)),
    ]);
    let c = compile_with(
        "NOT visit.region OVERLAPS CIRCLE(:ra, :dec, :r) OR visit.region OVERLAPS POINT(:ra, -90)",
        &binds,
    )
    .unwrap();
    assert_eq!(
        c.sql,
        "((NOT quanta_region_overlaps(t.region, ?1)) OR quanta_region_overlaps(t.region, ?2))"
    );
    assert_eq!(
        c.params,
        vec![
            circle_blob(200.0, -30.5, 1.5),
            circle_blob(200.0, -90.0, 0.0)
        ]
    );
}

// Needs quanta-spatial's geometry: implemented in parallel.
#[test]
fn overlaps_selects_the_rows_whose_region_it_touches() {
    let conn = Connection::open_in_memory().unwrap();
    crate::sqlite::region_functions::register_region_functions(&conn).unwrap();
    conn.execute_batch("CREATE TABLE t (exposure INTEGER, region BLOB)")
        .unwrap();
    let square = |ra: f64| {
        let p = ConvexPolygon::from_lonlat_deg(&[
            (ra, -1.0),
            (ra + 2.0, -1.0),
            (ra + 2.0, 1.0),
            (ra, 1.0),
        ])
        .unwrap();
        Value::Blob(Region::Polygon(p).encode())
    };
    let mut insert = conn.prepare("INSERT INTO t VALUES (?1, ?2)").unwrap();
    insert.execute((1, square(10.0))).unwrap();
    insert.execute((2, square(20.0))).unwrap();
    insert.execute((3, Value::Null)).unwrap();
    drop(insert);
    let selected = |text: &str| -> Vec<i64> {
        let c = compile_text(text).unwrap();
        let sql = format!("SELECT exposure FROM t WHERE {} ORDER BY exposure", c.sql);
        let mut stmt = conn.prepare(&sql).unwrap();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(c.params.iter()), |r| r.get(0))
            .unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    };
    assert_eq!(selected("visit.region OVERLAPS POINT(11, 0)"), vec![1]);
    assert_eq!(selected("visit.region OVERLAPS POINT(21, 0.5)"), vec![2]);
    assert_eq!(
        selected("visit.region OVERLAPS POINT(16, 0)"),
        Vec::<i64>::new()
    );
    assert_eq!(
        selected("visit.region OVERLAPS CIRCLE(16, 0, 5)"),
        vec![1, 2]
    );
    // A circle whose center is outside the square but reaches into it.
    assert_eq!(
        selected("visit.region OVERLAPS CIRCLE(13, 0, 1.5)"),
        vec![1]
    );
    assert_eq!(
        selected("visit.region OVERLAPS CIRCLE(13, 0, 0.5)"),
        Vec::<i64>::new()
    );
    assert_eq!(
        selected("NOT visit.region OVERLAPS POINT(11, 0)"),
        vec![2],
        "a NULL region matches neither OVERLAPS nor its negation"
    );
}

#[test]
fn the_postgres_dialect_numbers_dollar_placeholders_and_tests_booleans_natively() {
    let e = parse_some("exposure.can_see_sky AND exposure IN (3, 5..9) AND instrument = :inst");
    let binds: HashMap<String, Value> = [("inst".to_string(), Value::Text("Cam".into()))]
        .into_iter()
        .collect();
    let c = compile(&e, &TestResolver, &binds, crate::Dialect::Postgres).unwrap();
    assert_eq!(
        c.sql,
        "((t.can_see_sky) AND ((t.exposure IN ($1) OR (t.exposure BETWEEN $2 AND $3))) \
         AND (t.instrument = $4))"
    );
    assert_eq!(
        c.params,
        vec![
            Value::Integer(3),
            Value::Integer(5),
            Value::Integer(9),
            Value::Text("Cam".into())
        ]
    );
    // Embedded after a statement's own parameters, numbering goes on.
    let mut params = crate::dialect::Parameters::new(crate::Dialect::Postgres);
    let type_id = params.bind(Value::Integer(11));
    let sql = compile_into(&e, &TestResolver, &binds, &mut params).unwrap();
    assert_eq!(type_id, "$1");
    assert!(sql.contains("t.instrument = $5"), "{sql}");
    assert_eq!(params.len(), 5);
}
