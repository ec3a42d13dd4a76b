//! Dimension records as `quanta dimensions insert` reads them: JSON keyed by
//! element (or, when the input starts with `csv:<element>\n`, CSV for one
//! element), then inserted into a real registry. Each execution inserts
//! into a fresh copy of an empty registry, so inputs stay independent.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use quanta_core::DimensionUniverse;
use quanta_registry::{parse_records_csv, parse_records_json, Registry};

fn template() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = quanta_fuzz::scratch().join("template.sqlite3");
        drop(Registry::create(&path, &DimensionUniverse::default_universe()).unwrap());
        std::fs::read(&path).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let universe = DimensionUniverse::default_universe();
    let records = if let Some(rest) = text.strip_prefix("csv:") {
        let (element, csv) = rest.split_once('\n').unwrap_or((rest, ""));
        let Some(el) = universe.element(element) else {
            return;
        };
        parse_records_csv(csv, "fuzz.csv", el, &universe)
    } else {
        parse_records_json(text, "fuzz.json")
    };
    let Ok(records) = records else {
        return;
    };
    let path = quanta_fuzz::scratch_file("records.sqlite3", template());
    for extra in ["-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(path.with_file_name(format!("records.sqlite3{extra}")));
    }
    let mut reg = Registry::open(&path).expect("opening the copied registry");
    let _ = reg.insert_dimension_records(&records);
});
