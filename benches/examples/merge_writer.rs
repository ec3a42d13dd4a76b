//! The merge's registry writer alone: records N quanta (argument, default
//! 500,000), each with one input and two outputs of types with the same
//! dimensions, as `quanta merge` records them (bulk writing, parts of 6,250
//! quanta, a commit every 50,000), and prints the writer's wall and CPU
//! seconds (each part is made just before it is recorded, untimed).
//!
//! `merge_writer N postgresql://user@host/db` writes into a new namespace
//! of that PostgreSQL database instead of a SQLite file (dropped after).
//!
//! Wall time on a shared machine varies by a quarter from run to run. For
//! comparing two versions of the writer, count instructions instead, which
//! repeat exactly:
//!
//! ```text
//! valgrind --tool=callgrind --collect-atstart=no \
//!   --toggle-collect='*record_quanta_uncommitted*' --toggle-collect='*commit_open*' \
//!   target/release/examples/merge_writer 100000
//! ```

use std::time::Instant;

use quanta_core::{DataId, DataIdValue, DatasetType, DimensionUniverse, Uuid};
use quanta_registry::{
    DatastoreRecord, NewQuantum, QuantumExecution, QuantumInput, QuantumOutputDataset,
};

#[path = "../support.rs"]
mod support;

const DETECTORS: i64 = 1000;
const PART_QUANTA: usize = 6250;
const TRANSACTION_QUANTA: usize = 50_000;

fn quantum(i: i64) -> NewQuantum {
    // Exposure by exposure, as a bundle clustered per exposure lists them.
    let (exposure, detector) = (i / DETECTORS, i % DETECTORS);
    let data_id = DataId::from_pairs([
        ("instrument", DataIdValue::from("Cam")),
        ("detector", DataIdValue::Int(detector)),
        ("exposure", DataIdValue::Int(exposure)),
    ]);
    // Preflight assigns a quantum's output UUIDs together (UUIDv7: in
    // time order), then the quantum's.
    let output = |dataset_type: &str| QuantumOutputDataset {
        id: Uuid::now_v7(),
        dataset_type: dataset_type.into(),
        data_id: data_id.clone(),
        connection: dataset_type.into(),
        replaces: None,
        stored: DatastoreRecord {
            path: format!(
                "run/{dataset_type}/{exposure}/{dataset_type}_{exposure}_{detector}.json"
            ),
            formatter: "Json".into(),
            size: 72,
            checksum: "5d385aae292e310af50e9ce0fa24b2ee7086fa93209f19efcb9a9375021f574a".into(),
        },
    };
    let outputs = vec![output("calexp"), output("src")];
    NewQuantum {
        id: Uuid::now_v7(),
        task_label: "calibrate".into(),
        data_id: data_id.clone(),
        execution: QuantumExecution {
            status: "succeeded".into(),
            attempts: 1,
            host: Some(format!("node{}", detector % 16)),
            batch_job: None,
            started: Some("2026-01-01T00:00:00.000Z".into()),
            finished: Some("2026-01-01T00:00:01.000Z".into()),
            wall_seconds: Some(1.0),
            cpu_seconds: Some(0.9),
            peak_rss_bytes: Some(10 << 20),
            exit_code: Some(0),
            error: None,
            log_tail: vec![],
        },
        inputs: vec![QuantumInput {
            dataset_id: Uuid::now_v7(),
            connection: "raw".into(),
            is_prerequisite: false,
            used: true,
        }],
        outputs,
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500_000);
    let postgres = std::env::args().nth(2);
    let dir = tempfile::tempdir().unwrap();
    let (mut registry, namespace) = match &postgres {
        Some(url) => {
            let (r, ns) = support::fresh_postgres_registry(url, n);
            (r, Some(ns))
        }
        None => (support::fresh_registry(dir.path(), n), None),
    };
    let universe = DimensionUniverse::default_universe();
    registry
        .register_dataset_type(&DatasetType {
            name: "src".into(),
            dimensions: universe
                .conform(&["instrument", "exposure", "detector"])
                .unwrap(),
            storage_class: "Json".into(),
            is_calibration: false,
        })
        .unwrap();
    let bundle = Uuid::now_v7();

    // Each part is made just before it is recorded (10^7 quanta made
    // beforehand took 19 GB); making it is timed apart and left out.
    let (mut making_cpu, mut making_wall) = (0.0, 0.0);
    let (cpu0, t0) = (support::cpu_seconds(), Instant::now());
    registry
        .set_bulk_writing(Some(quanta_registry::BulkWrites::Appending))
        .unwrap();
    let mut uncommitted = 0;
    for start in (0..n as i64).step_by(PART_QUANTA) {
        let (making_cpu0, making_t0) = (support::cpu_seconds(), Instant::now());
        let part: Vec<NewQuantum> = (start..(start + PART_QUANTA as i64).min(n as i64))
            .map(quantum)
            .collect();
        making_cpu += support::cpu_seconds() - making_cpu0;
        making_wall += making_t0.elapsed().as_secs_f64();
        let stats = registry
            .record_quanta_uncommitted("run", bundle, &part)
            .unwrap();
        assert_eq!(stats.datasets_inserted, 2 * part.len());
        uncommitted += part.len();
        if uncommitted >= TRANSACTION_QUANTA {
            registry.commit_open().unwrap();
            uncommitted = 0;
        }
    }
    registry.commit_open().unwrap();
    registry.set_bulk_writing(None).unwrap();
    let cpu = support::cpu_seconds() - cpu0 - making_cpu;
    let wall = t0.elapsed().as_secs_f64() - making_wall;
    println!(
        "recorded {n} quanta, {} datasets into {}: wall {wall:.2} s ({:.0} datasets/s), cpu {cpu:.2} s",
        2 * n,
        registry.location(),
        2.0 * n as f64 / wall
    );
    if let (Some(url), Some(namespace)) = (&postgres, &namespace) {
        drop(registry);
        quanta_registry::Registry::drop_postgres(url, namespace).unwrap();
    }
}
