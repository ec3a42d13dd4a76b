//! The reference workload's inputs in a real repo (TARGET.md): instrument
//! `Cam`, band `r`, physical_filter `Cam-r`, day_obs 20261126, one group per
//! exposure, N exposures × M detectors, and a `raw` dataset per (exposure,
//! detector) in RUN `Cam/raw`, put through the Butler as LSST's harness does.

use std::path::Path;

use quanta_butler::{Butler, ButlerError, NewRegistry};
use quanta_core::{CollectionType, DataId, DataIdValue, DatasetType, DimensionUniverse};
use quanta_datastore::DatastoreConfig;
use quanta_registry::RecordSet;
use serde_json::{json, Map, Value};

use crate::reference::raw_content;

/// The RUN holding the raws.
pub const RAW_RUN: &str = "Cam/raw";

/// The dimension records of the workload, as `quanta dimensions insert`
/// reads them.
pub fn reference_records(n_exp: usize, n_det: usize) -> RecordSet {
    let obj = |v: Value| -> Map<String, Value> { v.as_object().cloned().unwrap_or_default() };
    let mut records = RecordSet::new();
    records.insert(
        "instrument".into(),
        vec![obj(json!({"name": "Cam", "detector_max": n_det}))],
    );
    records.insert(
        "physical_filter".into(),
        vec![obj(
            json!({"instrument": "Cam", "name": "Cam-r", "band": "r"}),
        )],
    );
    records.insert(
        "day_obs".into(),
        vec![obj(json!({"instrument": "Cam", "id": 20261126}))],
    );
    records.insert(
        "group".into(),
        (0..n_exp)
            .map(|e| obj(json!({"instrument": "Cam", "name": format!("g{e}")})))
            .collect(),
    );
    records.insert(
        "detector".into(),
        (0..n_det)
            .map(|d| obj(json!({"instrument": "Cam", "id": d, "full_name": format!("D{d:03}")})))
            .collect(),
    );
    records.insert(
        "exposure".into(),
        (0..n_exp)
            .map(|e| {
                obj(json!({"instrument": "Cam", "id": e, "physical_filter": "Cam-r", "day_obs": 20261126,
                           "group": format!("g{e}"), "exposure_time": 30.0, "obs_id": format!("e{e}"),
                           "observation_type": "science"}))
            })
            .collect(),
    );
    records
}

/// Creates a repo at `root` holding the workload's dimension records, the
/// `raw` dataset type and one raw per (exposure, detector) in `Cam/raw`.
pub fn create_reference_repo(
    root: &Path,
    n_exp: usize,
    n_det: usize,
) -> Result<Butler, ButlerError> {
    create_reference_repo_on(root, &NewRegistry::Sqlite, n_exp, n_det)
}

/// [`create_reference_repo`] with its registry on `registry` (e.g. a
/// PostgreSQL namespace).
pub fn create_reference_repo_on(
    root: &Path,
    registry: &NewRegistry,
    n_exp: usize,
    n_det: usize,
) -> Result<Butler, ButlerError> {
    let mut butler = Butler::create_repo_on(
        root,
        registry,
        &DimensionUniverse::default_universe(),
        DatastoreConfig::default(),
    )?;
    butler
        .registry_mut()
        .insert_dimension_records(&reference_records(n_exp, n_det))?;
    let dimensions = butler
        .universe()
        .conform(&["instrument", "exposure", "detector"])?;
    butler.registry_mut().register_dataset_type(&DatasetType {
        name: "raw".into(),
        dimensions,
        storage_class: "Json".into(),
        is_calibration: false,
    })?;
    butler
        .registry_mut()
        .register_collection(RAW_RUN, CollectionType::Run, None)?;
    let raws: Vec<(DataId, Value)> = (0..n_exp)
        .flat_map(|e| (0..n_det).map(move |d| (e, d)))
        .map(|(e, d)| {
            let data_id = DataId::from_pairs([
                ("instrument", DataIdValue::from("Cam")),
                ("exposure", DataIdValue::Int(e as i64)),
                ("detector", DataIdValue::Int(d as i64)),
            ]);
            (data_id, raw_content(e, d))
        })
        .collect();
    butler.put_json_many(&raws, "raw", RAW_RUN)?;
    Ok(butler)
}
