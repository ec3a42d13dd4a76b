//! The `--where` language: lexer, parser, canonical printer and compiler,
//! then the compiled SQL run by the real query builder against a real
//! registry with a few dimension records.
//!
//! Checks beyond "no panic": the canonical text parses back to the same
//! canonical text; whatever the registry refuses, it refuses as an
//! expression or input error, never as SQL that SQLite cannot prepare.
#![no_main]

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use quanta_core::{DimensionUniverse, FieldType};
use quanta_registry::expr::{compile, parse, ColumnResolver, Identifier, ResolvedColumn};
use quanta_registry::{parse_records_json, Dialect, Registry, RegistryError};
use quanta_registry::SqlValue as Value;

/// Types every identifier by its first letter, so all four kinds meet.
struct AnyColumn;

impl ColumnResolver for AnyColumn {
    fn resolve(&self, ident: &Identifier) -> Result<ResolvedColumn, String> {
        // `region` itself resolves to a region column, so OVERLAPS compiles.
        let first = if ident.name == "region" {
            4
        } else {
            ident.name.as_bytes()[0] % 6
        };
        let field_type = match first {
            0 => FieldType::Int,
            1 => FieldType::Float,
            2 => FieldType::String,
            3 => FieldType::Bool,
            4 => FieldType::Region,
            _ => return Err(format!("unknown dimension or field {ident}")),
        };
        Ok(ResolvedColumn {
            sql: "t.\"c\"".into(),
            field_type,
        })
    }
}

fn binds() -> HashMap<String, Value> {
    HashMap::from([
        ("i".to_string(), Value::Integer(3)),
        ("f".to_string(), Value::Real(2.5)),
        ("s".to_string(), Value::Text("Cam".into())),
        ("n".to_string(), Value::Null),
        ("b".to_string(), Value::Blob(vec![1, 2])),
        ("nan".to_string(), Value::Real(f64::NAN)),
        ("big".to_string(), Value::Integer(i64::MIN)),
    ])
}

const RECORDS: &str = r#"{
  "instrument": [{"name": "Cam", "detector_max": 4}],
  "physical_filter": [{"instrument": "Cam", "name": "Cam-r", "band": "r"}],
  "day_obs": [{"instrument": "Cam", "id": 20261126}],
  "group": [{"instrument": "Cam", "name": "g0"}, {"instrument": "Cam", "name": "g1"}],
  "detector": [{"instrument": "Cam", "id": 0}, {"instrument": "Cam", "id": 1}],
  "exposure": [
    {"instrument": "Cam", "id": 0, "physical_filter": "Cam-r", "day_obs": 20261126, "group": "g0",
     "timespan_begin": 60000.0, "timespan_end": 60000.01},
    {"instrument": "Cam", "id": 1, "physical_filter": "Cam-r", "day_obs": 20261126, "group": "g1",
     "timespan_begin": 60001.0, "timespan_end": 60001.01}
  ]
}"#;

fn registry() -> &'static Mutex<Registry> {
    static REG: OnceLock<Mutex<Registry>> = OnceLock::new();
    REG.get_or_init(|| {
        let path = quanta_fuzz::scratch().join("where.sqlite3");
        let mut reg = Registry::create(&path, &DimensionUniverse::default_universe())
            .expect("creating the fuzz registry");
        let records = parse_records_json(RECORDS, "records").unwrap();
        reg.insert_dimension_records(&records).unwrap();
        Mutex::new(reg)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse(text);
    if let Ok(Some(expr)) = &parsed {
        let _ = expr.identifiers();
        let printed = expr.to_string();
        let again = match parse(&printed) {
            Ok(Some(e)) => e,
            other => panic!("canonical text {printed:?} of {text:?} does not parse: {other:?}"),
        };
        assert_eq!(
            again.to_string(),
            printed,
            "printing is not canonical for {text:?}"
        );
        if let Ok(compiled) = compile(expr, &AnyColumn, &binds(), Dialect::Sqlite) {
            // Every parameter has its numbered placeholder, and no other
            // `?` is in the SQL (the compiler pastes no user text).
            for n in 1..=compiled.params.len() {
                assert!(
                    compiled.sql.contains(&format!("?{n}")),
                    "placeholder ?{n} missing for {text:?}: {}",
                    compiled.sql
                );
            }
            assert!(
                !compiled.sql.contains(&format!("?{}", compiled.params.len() + 1)),
                "more placeholders than parameters for {text:?}"
            );
        }
    }
    let reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    let dims = ["exposure".to_string(), "detector".to_string()];
    match reg.query_data_ids(&dims, text, &binds()) {
        Ok(_) => {}
        Err(RegistryError::Sql(e)) => {
            // SQLite's own limits are a clean refusal, if not a pretty one
            // (issue 16 item 10 covers the wording); anything else means the
            // compiler built SQL that does not prepare or run.
            let m = e.to_string();
            assert!(
                m.contains("too large") || m.contains("too many") || m.contains("too deep"),
                "query for {text:?} failed in SQL: {m}"
            );
        }
        Err(_) => {}
    }
});
