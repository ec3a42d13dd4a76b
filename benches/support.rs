//! Shared set-up of the registry benchmarks: a registry holding the
//! dimension records for N (exposure, detector) data IDs, and N datasets to
//! register in it.

use quanta_core::{CollectionType, DataId, DataIdValue, DatasetType, DimensionUniverse, Uuid};
use quanta_registry::{DatastoreRecord, NewDataset, RecordSet, Registry};

const DETECTORS: i64 = 1000;

/// A registry with the dimension records for `n` (exposure, detector) pairs.
pub fn fresh_registry(dir: &std::path::Path, n: usize) -> Registry {
    let universe = DimensionUniverse::default_universe();
    let path = dir.join(format!("registry-{}.sqlite3", Uuid::now_v7()));
    populate(Registry::create(&path, &universe).unwrap(), n)
}

/// [`fresh_registry`] in a new namespace (returned; the caller drops it)
/// of the PostgreSQL database `url`.
#[allow(dead_code)] // for merge_writer and insert_throughput
pub fn fresh_postgres_registry(url: &str, n: usize) -> (Registry, String) {
    let universe = DimensionUniverse::default_universe();
    let namespace = format!("bench_{}", Uuid::now_v7().simple());
    let registry = Registry::create_postgres(url, &namespace, &universe).unwrap();
    (populate(registry, n), namespace)
}

fn populate(mut registry: Registry, n: usize) -> Registry {
    let universe = registry.universe().clone();
    let n_exp = (n as i64 + DETECTORS - 1) / DETECTORS;
    let obj = |v: serde_json::Value| v.as_object().unwrap().clone();
    let mut records = RecordSet::new();
    records.insert(
        "instrument".into(),
        vec![obj(serde_json::json!({"name": "Cam"}))],
    );
    records.insert(
        "physical_filter".into(),
        vec![obj(
            serde_json::json!({"instrument": "Cam", "name": "Cam-r", "band": "r"}),
        )],
    );
    records.insert(
        "detector".into(),
        (0..DETECTORS)
            .map(|d| obj(serde_json::json!({"instrument": "Cam", "id": d})))
            .collect(),
    );
    records.insert(
        "exposure".into(),
        (0..n_exp)
            .map(|e| {
                obj(serde_json::json!({"instrument": "Cam", "id": e, "physical_filter": "Cam-r"}))
            })
            .collect(),
    );
    registry.insert_dimension_records(&records).unwrap();
    registry
        .register_collection("run", CollectionType::Run, None)
        .unwrap();
    let dims = universe
        .conform(&["instrument", "exposure", "detector"])
        .unwrap();
    registry
        .register_dataset_type(&DatasetType {
            name: "calexp".into(),
            dimensions: dims,
            storage_class: "Json".into(),
            is_calibration: false,
        })
        .unwrap();
    registry
}

#[allow(dead_code)] // for the insert benchmarks, not merge_writer
pub fn datasets(n: usize) -> Vec<NewDataset> {
    (0..n as i64)
        .map(|i| {
            let (e, d) = (i / DETECTORS, i % DETECTORS);
            NewDataset {
                id: Uuid::now_v7(),
                data_id: DataId::from_pairs([
                    ("instrument", DataIdValue::from("Cam")),
                    ("exposure", DataIdValue::Int(e)),
                    ("detector", DataIdValue::Int(d)),
                ]),
                stored: Some(DatastoreRecord {
                    path: format!("run/calexp/{e}/calexp_Cam_{e}_{d}.json"),
                    formatter: "Json".into(),
                    size: 1234,
                    checksum: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                        .into(),
                }),
            }
        })
        .collect()
}

/// CPU seconds (user and system) of this process so far.
#[allow(dead_code)] // not every benchmark including this file reports CPU time
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
