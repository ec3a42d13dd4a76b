//! Writes a bundle of the reference workload (TARGET.md) straight from
//! code: raw inputs are written into a fresh datastore and the quanta are
//! laid out as preflight would (isr and characterize per (exposure,
//! detector), summarize per exposure; producers first). Used by tests and
//! benchmarks that need a bundle without a Registry.

use std::path::{Path, PathBuf};

use quanta_core::pipeline::{Connection, TaskDef, TaskKind};
use quanta_core::{
    now_rfc3339, write_bundle, BundleContents, BundleHeader, BundleQuantum, BundleRef,
    BundleWriteOptions, Cluster, DataId, DataIdValue, DatasetRef, DatasetType, DimensionGroup,
    Uuid, BUNDLE_FORMAT_VERSION,
};
use quanta_datastore::{Datastore, DatastoreConfig};
use serde_json::Value;
use thiserror::Error;

/// Raw inputs live in this RUN.
pub const RAW_RUN: &str = "Cam/raw";

#[derive(Debug, Error)]
pub enum ReferenceError {
    #[error(transparent)]
    Datastore(#[from] quanta_datastore::DatastoreError),
    #[error(transparent)]
    Bundle(#[from] quanta_core::BundleError),
    #[error("{0}")]
    Invalid(String),
}

/// How characterize runs.
#[derive(Debug, Clone, PartialEq)]
pub enum CharacterizeKind {
    Rust,
    /// An external command (`{manifest}` is replaced by the manifest path).
    Command(Vec<String>),
}

/// What to build.
#[derive(Debug, Clone)]
pub struct ReferenceOptions {
    pub exposures: usize,
    pub detectors: usize,
    pub characterize: CharacterizeKind,
    pub isr_config: Value,
    pub characterize_config: Value,
    pub summarize_config: Value,
    pub clobber: bool,
    pub output_run: String,
    /// Write raw files for only this many (exposure, detector) pairs (in
    /// quantum order); `None` writes all. Huge synthetic bundles skip them.
    pub raw_limit: Option<usize>,
    /// One cluster per exposure (`exposure_<e>`: its isr, characterize and
    /// summarize quanta).
    pub clusters: bool,
    pub quanta_per_block: usize,
}

impl Default for ReferenceOptions {
    fn default() -> Self {
        Self {
            exposures: 10,
            detectors: 10,
            characterize: CharacterizeKind::Rust,
            isr_config: serde_json::json!({}),
            characterize_config: serde_json::json!({}),
            summarize_config: serde_json::json!({}),
            clobber: false,
            output_run: "u/test/run".into(),
            raw_limit: None,
            clusters: true,
            quanta_per_block: 1024,
        }
    }
}

/// Where things went.
#[derive(Debug, Clone)]
pub struct ReferenceBundle {
    pub bundle: PathBuf,
    pub datastore_root: PathBuf,
}

/// The raw dataset of one (exposure, detector): `{"exposure": e,
/// "detector": d, "pixels": [e*1000+d] * 16}`.
pub fn raw_content(e: usize, d: usize) -> Value {
    serde_json::json!({"exposure": e, "detector": d, "pixels": vec![e * 1000 + d; 16]})
}

/// Quantum indices: isr of (e, d), characterize of (e, d), summarize of e.
pub fn isr_index(o: &ReferenceOptions, e: usize, d: usize) -> u32 {
    (e * o.detectors + d) as u32
}
pub fn characterize_index(o: &ReferenceOptions, e: usize, d: usize) -> u32 {
    (o.exposures * o.detectors + e * o.detectors + d) as u32
}
pub fn summarize_index(o: &ReferenceOptions, e: usize) -> u32 {
    (2 * o.exposures * o.detectors + e) as u32
}

const DET_DIMS: [&str; 3] = ["instrument", "exposure", "detector"];
const EXP_DIMS: [&str; 2] = ["instrument", "exposure"];

fn conn(name: &str, dataset_type: &str, dims: &[&str], multiple: bool) -> Connection {
    Connection {
        name: name.into(),
        dataset_type: dataset_type.into(),
        dimensions: dims.iter().map(|d| d.to_string()).collect(),
        storage_class: "Json".into(),
        multiple,
        is_calibration: false,
    }
}

fn task(
    label: &str,
    kind: TaskKind,
    dims: &[&str],
    i: Connection,
    o: Connection,
    config: &Value,
) -> TaskDef {
    TaskDef {
        label: label.into(),
        kind,
        dimensions: dims.iter().map(|d| d.to_string()).collect(),
        inputs: vec![i],
        prerequisites: vec![],
        outputs: vec![o],
        init_outputs: vec![],
        config: config.clone(),
    }
}

fn dataset_type(name: &str, dims: &[&str]) -> DatasetType {
    DatasetType {
        name: name.into(),
        dimensions: DimensionGroup {
            names: dims.iter().map(|d| d.to_string()).collect(),
        },
        storage_class: "Json".into(),
        is_calibration: false,
    }
}

fn det_id(e: usize, d: usize) -> DataId {
    DataId::from_pairs([
        ("instrument", DataIdValue::from("Cam")),
        ("detector", DataIdValue::Int(d as i64)),
        ("exposure", DataIdValue::Int(e as i64)),
    ])
}

fn exp_id(e: usize) -> DataId {
    DataId::from_pairs([
        ("instrument", DataIdValue::from("Cam")),
        ("exposure", DataIdValue::Int(e as i64)),
    ])
}

/// Builds `dir/datastore` (raw files) and `dir/reference.qb`.
pub fn build_reference_bundle(
    dir: &Path,
    o: &ReferenceOptions,
) -> Result<ReferenceBundle, ReferenceError> {
    if o.exposures == 0 || o.detectors == 0 {
        return Err(ReferenceError::Invalid(
            "at least one exposure and one detector".into(),
        ));
    }
    let root = std::path::absolute(dir.join("datastore"))
        .map_err(|e| ReferenceError::Invalid(format!("{}: {e}", dir.display())))?;
    let config = DatastoreConfig::default();
    let ds = Datastore::new(&root, config.clone())?;
    let new_ref =
        |dataset_type: &str, data_id: DataId, run: &str| -> Result<BundleRef, ReferenceError> {
            let r = DatasetRef {
                id: Uuid::new_v4(),
                dataset_type: dataset_type.into(),
                data_id,
                run: run.into(),
            };
            let path = ds.path_for(&r, "Json")?;
            Ok(BundleRef {
                id: r.id,
                dataset_type: r.dataset_type,
                data_id: r.data_id,
                run: r.run,
                path,
                size: None,
                checksum: None,
            })
        };
    let (ne, nd) = (o.exposures, o.detectors);
    let mut isr = Vec::with_capacity(ne * nd);
    let mut chr = Vec::with_capacity(ne * nd);
    let mut icexps: Vec<Vec<BundleRef>> = Vec::with_capacity(ne);
    let mut written = 0usize;
    for e in 0..ne {
        let mut exposure_icexps = Vec::with_capacity(nd);
        for d in 0..nd {
            let mut raw = new_ref("raw", det_id(e, d), RAW_RUN)?;
            let write_raw = match o.raw_limit {
                None => true,
                Some(limit) => written < limit,
            };
            if write_raw {
                let r = DatasetRef {
                    id: raw.id,
                    dataset_type: raw.dataset_type.clone(),
                    data_id: raw.data_id.clone(),
                    run: raw.run.clone(),
                };
                let info = ds.put_json(&r, &raw_content(e, d), true)?;
                raw.size = Some(info.size);
                raw.checksum = Some(info.checksum);
                written += 1;
            }
            let post = new_ref("postISRCCD", det_id(e, d), &o.output_run)?;
            let icexp = new_ref("icExp", det_id(e, d), &o.output_run)?;
            isr.push(BundleQuantum {
                id: Uuid::new_v4(),
                task: 0,
                data_id: det_id(e, d),
                inputs: vec![("raw".into(), vec![raw])],
                prerequisites: vec![],
                outputs: vec![("post".into(), vec![post.clone()])],
                upstream: vec![],
            });
            chr.push(BundleQuantum {
                id: Uuid::new_v4(),
                task: 1,
                data_id: det_id(e, d),
                inputs: vec![("post".into(), vec![post])],
                prerequisites: vec![],
                outputs: vec![("icexp".into(), vec![icexp.clone()])],
                upstream: vec![isr_index(o, e, d)],
            });
            exposure_icexps.push(icexp);
        }
        icexps.push(exposure_icexps);
    }
    let mut quanta = isr;
    quanta.append(&mut chr);
    for (e, refs) in icexps.into_iter().enumerate() {
        let summary = new_ref("expSummary", exp_id(e), &o.output_run)?;
        quanta.push(BundleQuantum {
            id: Uuid::new_v4(),
            task: 2,
            data_id: exp_id(e),
            inputs: vec![("icexps".into(), refs)],
            prerequisites: vec![],
            outputs: vec![("summary".into(), vec![summary])],
            upstream: (0..nd).map(|d| characterize_index(o, e, d)).collect(),
        });
    }
    let char_kind = match &o.characterize {
        CharacterizeKind::Rust => TaskKind::Class("examples.Characterize".into()),
        CharacterizeKind::Command(argv) => TaskKind::Command(argv.clone()),
    };
    let tasks = vec![
        task(
            "isr",
            TaskKind::Class("examples.Isr".into()),
            &DET_DIMS,
            conn("raw", "raw", &DET_DIMS, false),
            conn("post", "postISRCCD", &DET_DIMS, false),
            &o.isr_config,
        ),
        task(
            "characterize",
            char_kind,
            &DET_DIMS,
            conn("post", "postISRCCD", &DET_DIMS, false),
            conn("icexp", "icExp", &DET_DIMS, false),
            &o.characterize_config,
        ),
        task(
            "summarize",
            TaskKind::Class("examples.Summarize".into()),
            &EXP_DIMS,
            conn("icexps", "icExp", &DET_DIMS, true),
            conn("summary", "expSummary", &EXP_DIMS, false),
            &o.summarize_config,
        ),
    ];
    let clusters = if o.clusters {
        (0..ne)
            .map(|e| Cluster {
                name: format!("exposure_{e}"),
                quanta: (0..nd)
                    .map(|d| isr_index(o, e, d))
                    .chain((0..nd).map(|d| characterize_index(o, e, d)))
                    .chain([summarize_index(o, e)])
                    .collect(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let header = BundleHeader {
        format_version: BUNDLE_FORMAT_VERSION,
        bundle_id: Uuid::new_v4(),
        universe_digest: String::new(),
        pipeline_digest: String::new(),
        pipeline_yaml: String::new(),
        input_collections: vec![RAW_RUN.into()],
        output_run: o.output_run.clone(),
        output_chain: None,
        datastore_root: root.to_string_lossy().into_owned(),
        datastore_config: serde_json::to_string(&config)
            .map_err(|e| ReferenceError::Invalid(e.to_string()))?,
        clobber: o.clobber,
        skip_existing: false,
        created_at: now_rfc3339(),
        created_by: "quanta-examples".into(),
        quanta_version: env!("CARGO_PKG_VERSION").into(),
        command_line: vec![],
        n_quanta: quanta.len() as u64,
        where_clause: String::new(),
        // Made without a registry: merges into no repository.
        repository_id: Uuid::nil(),
        replaced: Vec::new(),
    };
    let contents = BundleContents {
        header,
        tasks,
        dataset_types: vec![
            dataset_type("raw", &DET_DIMS),
            dataset_type("postISRCCD", &DET_DIMS),
            dataset_type("icExp", &DET_DIMS),
            dataset_type("expSummary", &EXP_DIMS),
        ],
        dimension_records: Default::default(),
        clusters,
        quanta,
    };
    let bundle = dir.join("reference.qb");
    write_bundle(
        &bundle,
        &contents,
        &BundleWriteOptions {
            compress: true,
            quanta_per_block: o.quanta_per_block,
        },
    )?;
    Ok(ReferenceBundle {
        bundle,
        datastore_root: root,
    })
}
