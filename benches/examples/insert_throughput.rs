//! One-shot measurement of dataset registration: wall and CPU seconds for
//! inserting N datasets (argument, default 1,000,000) with datastore
//! records. CPU time is reported because a loaded machine distorts wall time.

use std::time::Instant;

use quanta_core::{CollectionType, DataId, DataIdValue, DatasetType, DimensionUniverse, Uuid};
use quanta_registry::{DatastoreRecord, NewDataset, OnConflict, RecordSet, Registry};

fn cpu_seconds() -> f64 {
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

fn main() {
    let n: i64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let detectors = 1000;
    let dir = tempfile::tempdir().unwrap();
    let universe = DimensionUniverse::default_universe();
    let mut registry = Registry::create(&dir.path().join("r.sqlite3"), &universe).unwrap();
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
        (0..detectors)
            .map(|d| obj(serde_json::json!({"instrument": "Cam", "id": d})))
            .collect(),
    );
    records.insert(
        "exposure".into(),
        (0..(n + detectors - 1) / detectors)
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
    let new: Vec<NewDataset> = (0..n)
        .map(|i| NewDataset {
            id: Uuid::now_v7(),
            data_id: DataId::from_pairs([
                ("instrument", DataIdValue::from("Cam")),
                ("exposure", DataIdValue::Int(i / detectors)),
                ("detector", DataIdValue::Int(i % detectors)),
            ]),
            stored: Some(DatastoreRecord {
                path: format!(
                    "run/calexp/{}/calexp_Cam_{}_{}.json",
                    i / detectors,
                    i / detectors,
                    i % detectors
                ),
                formatter: "Json".into(),
                size: 1234,
                checksum: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
            }),
        })
        .collect();
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let stats = registry
        .insert_datasets("run", "calexp", &new, OnConflict::Fail)
        .unwrap();
    let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
    assert_eq!(stats.inserted as i64, n);
    println!(
        "inserted {n} datasets: wall {wall:.2} s ({:.0}/s), cpu {cpu:.2} s ({:.0}/s of one core)",
        n as f64 / wall,
        n as f64 / cpu.max(1e-9)
    );
}
