//! Generates a synthetic finished campaign for the merge benchmark: a repo,
//! a bundle of N_EXP × N_DET quanta of one task with one (unregistered)
//! input and two outputs each, the output files in the datastore, and two
//! worker journals recording every quantum as succeeded. Merging it
//! registers 2 × N_EXP × N_DET datasets.
//!
//! Quantum `i` and its refs are a function of `i` (UUIDs included), so the
//! bundle is written from quanta made block by block and the files and
//! journals part by part: memory does not grow with N (10^7 quanta made at
//! once took 27 GB).
//!
//! `cargo run --release -p quanta-butler --example merge_synth -- DIR N_EXP N_DET`
//! then `quanta merge DIR/repo DIR/synth.qb`.

use std::path::{Path, PathBuf};

use quanta_butler::Butler;
use quanta_core::hash::blake3_hex;
use quanta_core::pipeline::{Connection, TaskDef, TaskKind};
use quanta_core::{
    journal_dir_for, write_bundle_from, BundleHeader, BundleParts, BundleQuantum, BundleRef,
    BundleWriteOptions, DataId, DataIdValue, DatasetType, DimensionGroup, DimensionUniverse,
    EncodeViews, JournalHeader, JournalRecord, JournalWriter, QuantaSource, QuantumStatus, Uuid,
    WrittenOutput, BUNDLE_FORMAT_VERSION,
};
use quanta_datastore::DatastoreConfig;
use rayon::prelude::*;

const RUN: &str = "bench/synth";
const DIMS: [&str; 3] = ["instrument", "exposure", "detector"];

fn usage() -> ! {
    eprintln!("usage: merge_synth DIR N_EXPOSURES N_DETECTORS");
    std::process::exit(2);
}

fn conn(name: &str, dataset_type: &str) -> Connection {
    Connection {
        name: name.into(),
        dataset_type: dataset_type.into(),
        dimensions: DIMS.iter().map(|d| d.to_string()).collect(),
        storage_class: "Json".into(),
        multiple: false,
        is_calibration: false,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        usage();
    }
    let dir = PathBuf::from(&args[1]);
    let n_exp: i64 = args[2].parse().unwrap_or_else(|_| usage());
    let n_det: i64 = args[3].parse().unwrap_or_else(|_| usage());
    let started = std::time::Instant::now();

    let universe = DimensionUniverse::default_universe();
    let repo = dir.join("repo");
    let mut butler = Butler::create_repo(&repo, &universe, DatastoreConfig::default())?;
    let records = serde_json::json!({
        "instrument": [{"name": "Cam", "detector_max": n_det}],
        "physical_filter": [{"instrument": "Cam", "name": "Cam-r", "band": "r"}],
        "day_obs": [{"instrument": "Cam", "id": 20261126}],
        "group": (0..n_exp).map(|e| serde_json::json!({"instrument": "Cam", "name": format!("g{e}")})).collect::<Vec<_>>(),
        "detector": (0..n_det).map(|d| serde_json::json!({"instrument": "Cam", "id": d, "full_name": format!("D{d:04}")})).collect::<Vec<_>>(),
        "exposure": (0..n_exp).map(|e| serde_json::json!({
            "instrument": "Cam", "id": e, "physical_filter": "Cam-r", "day_obs": 20261126,
            "group": format!("g{e}"), "exposure_time": 30.0, "obs_id": format!("e{e}"),
            "observation_type": "science"})).collect::<Vec<_>>(),
    });
    let records = quanta_registry::parse_records_json(&records.to_string(), "synthetic records")?;
    butler.registry_mut().insert_dimension_records(&records)?;
    let datastore_root = butler.datastore().root().to_path_buf();

    let dataset_types: Vec<DatasetType> = ["raw", "synthA", "synthB"]
        .iter()
        .map(|name| DatasetType {
            name: name.to_string(),
            dimensions: DimensionGroup {
                names: universe
                    .conform(&DIMS)
                    .expect("default universe dimensions")
                    .names,
            },
            storage_class: "Json".into(),
            is_calibration: false,
        })
        .collect();
    let task = TaskDef {
        label: "synth".into(),
        kind: TaskKind::Class("bench.Synth".into()),
        dimensions: DIMS.iter().map(|d| d.to_string()).collect(),
        inputs: vec![conn("input", "raw")],
        prerequisites: vec![],
        outputs: vec![conn("a", "synthA"), conn("b", "synthB")],
        init_outputs: vec![],
        config: serde_json::json!({"synthetic": true}),
    };

    let n = (n_exp * n_det) as usize;
    let synth = Synth {
        n,
        n_det,
        clock: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64,
    };

    let bundle_id = Uuid::new_v4();
    let bundle_path = dir.join("synth.qb");
    let header = BundleHeader {
        format_version: BUNDLE_FORMAT_VERSION,
        bundle_id,
        universe_digest: universe.digest(),
        pipeline_digest: "synthetic".into(),
        pipeline_yaml: "description: synthetic merge benchmark\n".into(),
        input_collections: vec![],
        output_run: RUN.into(),
        output_chain: None,
        datastore_root: datastore_root.display().to_string(),
        datastore_config: serde_json::to_string(&DatastoreConfig::default())?,
        clobber: false,
        skip_existing: false,
        created_at: quanta_core::now_rfc3339(),
        created_by: "bench@localhost".into(),
        quanta_version: env!("CARGO_PKG_VERSION").into(),
        command_line: args.clone(),
        n_quanta: n as u64,
        where_clause: String::new(),
        repository_id: butler.registry().repository_id()?.unwrap_or_default(),
        replaced: Vec::new(),
    };
    let parts = BundleParts {
        header: &header,
        tasks: &[task],
        dataset_types: &dataset_types,
        dimension_records: &Default::default(),
        clusters: &[],
    };
    write_bundle_from(&bundle_path, parts, &synth, &BundleWriteOptions::default())?;
    write_files_and_journals(
        &synth,
        &datastore_root,
        &journal_dir_for(&bundle_path),
        bundle_id,
    )?;
    eprintln!(
        "generated {n} quanta, {} output files in {:.1} s under {}",
        2 * n,
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(())
}

/// The quanta of the campaign, each made from its index.
struct Synth {
    n: usize,
    n_det: i64,
    /// Milliseconds since the epoch in every UUID (version 7), followed by
    /// the quantum's index and the ref's slot: UUIDs ordered as `now_v7`
    /// would make them, and the same each time quantum `i` is made.
    clock: u64,
}

impl Synth {
    fn uuid(&self, i: usize, slot: u8) -> Uuid {
        let mut tail = [0u8; 10];
        tail[..8].copy_from_slice(&(i as u64).to_be_bytes());
        tail[8] = slot;
        uuid::Builder::from_unix_timestamp_millis(self.clock, &tail).into_uuid()
    }

    fn quantum(&self, i: usize) -> BundleQuantum {
        let (e, d) = (i as i64 / self.n_det, i as i64 % self.n_det);
        let data_id = DataId::from_pairs([
            ("instrument", DataIdValue::from("Cam")),
            ("detector", DataIdValue::Int(d)),
            ("exposure", DataIdValue::Int(e)),
        ]);
        let out = |t: &str, slot: u8| BundleRef {
            id: self.uuid(i, slot),
            dataset_type: t.into(),
            data_id: data_id.clone(),
            run: RUN.into(),
            path: format!("{RUN}/{t}/{e}/{t}_{e}_{d}.json"),
            size: None,
            checksum: None,
        };
        let raw = BundleRef {
            id: self.uuid(i, 1),
            dataset_type: "raw".into(),
            data_id: data_id.clone(),
            run: "Cam/raw".into(),
            path: format!("Cam/raw/raw/{e}/raw_{e}_{d}.json"),
            size: Some(10),
            checksum: Some(blake3_hex(b"0123456789")),
        };
        BundleQuantum {
            id: self.uuid(i, 0),
            task: 0,
            data_id: data_id.clone(),
            inputs: vec![("input".into(), vec![raw])],
            prerequisites: vec![],
            outputs: vec![
                ("a".into(), vec![out("synthA", 2)]),
                ("b".into(), vec![out("synthB", 3)]),
            ],
            upstream: vec![],
        }
    }
}

impl QuantaSource for Synth {
    fn n_quanta(&self) -> usize {
        self.n
    }

    fn with_views(
        &self,
        start: usize,
        end: usize,
        f: &mut EncodeViews<'_>,
    ) -> Result<Vec<u8>, String> {
        let quanta: Vec<BundleQuantum> = (start..end).map(|i| self.quantum(i)).collect();
        let views: Vec<_> = quanta.iter().map(BundleQuantum::view).collect();
        f(&views)
    }

    fn n_refs(&self, _index: usize) -> usize {
        3
    }
}

/// Quanta per part of the files and journals.
const PART: usize = 100_000;

/// The output files, written in parallel, and two workers' journals
/// (quanta dealt alternately, each Started then Finished), a part of the
/// quanta at a time.
fn write_files_and_journals(
    synth: &Synth,
    datastore_root: &Path,
    dir: &Path,
    bundle_id: Uuid,
) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let mut writers = (0..2)
        .map(|w| {
            JournalWriter::create(
                &dir.join(format!("worker-{w}.journal")),
                &JournalHeader {
                    bundle_id,
                    worker: format!("worker-{w}"),
                    host: format!("node{w}"),
                    pid: 1000 + w,
                    started_at: quanta_core::now_rfc3339(),
                },
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    for part in (0..synth.n).step_by(PART) {
        let range = part..(part + PART).min(synth.n);
        let quanta: Vec<BundleQuantum> = range.clone().map(|i| synth.quantum(i)).collect();
        let written: Vec<Vec<WrittenOutput>> = quanta
            .par_iter()
            .map(|q| write_outputs(datastore_root, q))
            .collect::<std::io::Result<_>>()?;
        for ((i, q), outputs) in range.zip(&quanta).zip(written) {
            append_records(&mut writers[i % 2], i, q, outputs)?;
        }
    }
    Ok(())
}

/// Writes a quantum's output files; (size, checksum) per output.
fn write_outputs(datastore_root: &Path, q: &BundleQuantum) -> std::io::Result<Vec<WrittenOutput>> {
    q.outputs
        .iter()
        .flat_map(|(_, refs)| refs)
        .map(|r| {
            let body = format!("{{\"id\":\"{}\",\"pixels\":[1,2,3,4,5,6,7,8]}}", r.id);
            let abs = datastore_root.join(&r.path);
            if let Some(parent) = abs.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&abs, body.as_bytes())?;
            Ok(WrittenOutput {
                dataset_id: r.id,
                path: r.path.clone(),
                size: body.len() as u64,
                checksum: blake3_hex(body.as_bytes()),
            })
        })
        .collect()
}

/// Quantum `i`'s Started and Finished records.
fn append_records(
    w: &mut JournalWriter,
    i: usize,
    q: &BundleQuantum,
    outputs: Vec<WrittenOutput>,
) -> Result<(), Box<dyn std::error::Error>> {
    let time = "2026-01-01T00:00:00.000Z".to_string();
    w.append(&JournalRecord::Started {
        quantum: i as u32,
        quantum_id: q.id,
        attempt: 1,
        host: format!("node{}", i % 2),
        pid: 1000,
        time: time.clone(),
        batch_job: None,
    })?;
    w.append(&JournalRecord::Finished {
        quantum: i as u32,
        quantum_id: q.id,
        attempt: 1,
        status: QuantumStatus::Succeeded,
        outputs,
        inputs_used: q.inputs.iter().flat_map(|(_, r)| r).map(|r| r.id).collect(),
        started: time.clone(),
        finished: time,
        wall_seconds: 0.01,
        cpu_seconds: 0.01,
        peak_rss_bytes: 10 << 20,
        exit_code: Some(0),
        error: None,
        log_tail: vec![],
    })?;
    Ok(())
}
