//! The FITS pipeline's inputs in a real repo: the reference workload's
//! dimension records with observation times, synthetic raw images
//! (`raw`, `ImageF`) in RUN `Cam/raw`, and a master bias and flat per
//! detector put into RUN `Cam/calib/run` and certified into the
//! CALIBRATION collection `Cam/calib` for the night of the exposures.

use std::path::Path;

use quanta_butler::{Butler, ButlerError, NewRegistry};
use quanta_core::{CollectionType, DataId, DataIdValue, DatasetType, DimensionUniverse};
use quanta_datastore::{DatastoreConfig, InMemoryDataset};
use quanta_registry::{RecordSet, RegistryError};
use serde_json::Value;
use thiserror::Error;

use super::formatter::IMAGE_STORAGE_CLASS;
use super::synth::{master_bias, master_flat, raw_image, SimConfig, SimError};
use crate::workload::{reference_records, RAW_RUN};

/// The RUN the master calibrations are put into.
pub const CALIB_RUN: &str = "Cam/calib/run";
/// The CALIBRATION collection they are certified into; preflight looks
/// `bias` and `flat` up here by each exposure's start time.
pub const CALIB_COLLECTION: &str = "Cam/calib";
/// MJD of the start of day_obs 20261126 (UTC midnight).
pub const NIGHT_MJD: f64 = 61370.0;
/// Exposure `e` starts at 03:00 UTC plus one minute per exposure.
pub fn exposure_start_mjd(exposure: usize) -> f64 {
    NIGHT_MJD + 0.125 + exposure as f64 / 1440.0
}

/// Why the FITS repo could not be built.
#[derive(Debug, Error)]
pub enum FitsWorkloadError {
    #[error(transparent)]
    Butler(#[from] ButlerError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Core(#[from] quanta_core::CoreError),
    #[error("simulating {what}: {source}")]
    Sim {
        what: String,
        #[source]
        source: SimError,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The size of the workload and the simulation behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct FitsWorkload {
    pub exposures: usize,
    pub detectors: usize,
    pub sim: SimConfig,
}

/// The reference workload's records with `timespan_begin`/`timespan_end` on
/// each exposure (30 s), which calibration lookups need.
pub fn fits_records(n_exp: usize, n_det: usize) -> RecordSet {
    let mut records = reference_records(n_exp, n_det);
    if let Some(exposures) = records.get_mut("exposure") {
        for rec in exposures.iter_mut() {
            let e = rec.get("id").and_then(Value::as_u64).unwrap_or(0) as usize;
            let begin = exposure_start_mjd(e);
            rec.insert("timespan_begin".into(), Value::from(begin));
            rec.insert("timespan_end".into(), Value::from(begin + 30.0 / 86400.0));
        }
    }
    records
}

fn data_id(pairs: &[(&str, DataIdValue)]) -> DataId {
    DataId::from_pairs(pairs.iter().cloned())
}

/// Creates a repo at `root` with everything the FITS pipeline reads:
/// records, the `raw`, `bias` and `flat` dataset types (`ImageF`), one raw
/// per (exposure, detector) in `Cam/raw`, and a bias and flat per detector
/// certified into `Cam/calib` for the whole night. The Butler returned
/// reads and writes FITS.
pub fn create_fits_repo(root: &Path, w: &FitsWorkload) -> Result<Butler, FitsWorkloadError> {
    create_fits_repo_on(root, &NewRegistry::Sqlite, w)
}

/// [`create_fits_repo`] with its registry on `registry` (e.g. a
/// PostgreSQL namespace).
pub fn create_fits_repo_on(
    root: &Path,
    registry: &NewRegistry,
    w: &FitsWorkload,
) -> Result<Butler, FitsWorkloadError> {
    if w.exposures == 0 || w.detectors == 0 {
        return Err(FitsWorkloadError::Invalid(format!(
            "need at least one exposure and one detector, got {} × {}",
            w.exposures, w.detectors
        )));
    }
    // Fail on bad simulation settings before creating anything.
    super::synth::injected_sources(&w.sim, 0, 0).map_err(|source| FitsWorkloadError::Sim {
        what: "the source layout".into(),
        source,
    })?;
    let mut butler = Butler::create_repo_on(
        root,
        registry,
        &DimensionUniverse::default_universe(),
        DatastoreConfig::default(),
    )?
    .with_formatters(quanta_formats::formatters());
    butler
        .registry_mut()
        .insert_dimension_records(&fits_records(w.exposures, w.detectors))?;
    let types: [(&str, &[&str], bool); 3] = [
        ("raw", &["instrument", "exposure", "detector"], false),
        ("bias", &["instrument", "detector"], true),
        ("flat", &["instrument", "detector"], true),
    ];
    for (name, dims, calib) in types {
        let dimensions = butler.universe().conform(dims)?;
        butler.registry_mut().register_dataset_type(&DatasetType {
            name: name.into(),
            dimensions,
            storage_class: IMAGE_STORAGE_CLASS.into(),
            is_calibration: calib,
        })?;
    }
    let registry = butler.registry_mut();
    registry.register_collection(RAW_RUN, CollectionType::Run, None)?;
    registry.register_collection(CALIB_RUN, CollectionType::Run, None)?;
    registry.register_collection(
        CALIB_COLLECTION,
        CollectionType::Calibration,
        Some("master bias and flat per detector, valid for the night of 20261126"),
    )?;

    let sim_err = |what: String| move |source| FitsWorkloadError::Sim { what, source };
    let mut calib_ids = Vec::with_capacity(2 * w.detectors);
    for d in 0..w.detectors {
        let id = data_id(&[
            ("instrument", DataIdValue::from("Cam")),
            ("detector", DataIdValue::Int(d as i64)),
        ]);
        let bias = master_bias(&w.sim, d).map_err(sim_err(format!("the bias of detector {d}")))?;
        let flat = master_flat(&w.sim, d).map_err(sim_err(format!("the flat of detector {d}")))?;
        for (name, image) in [("bias", bias), ("flat", flat)] {
            let r = butler.put(
                &InMemoryDataset::Other(Box::new(image)),
                name,
                &id,
                CALIB_RUN,
            )?;
            calib_ids.push(r.id);
        }
    }
    butler
        .registry_mut()
        .certify(CALIB_COLLECTION, &calib_ids, NIGHT_MJD, NIGHT_MJD + 1.0)?;

    for e in 0..w.exposures {
        for d in 0..w.detectors {
            let (raw, _) = raw_image(&w.sim, e, d)
                .map_err(sim_err(format!("the raw of exposure {e}, detector {d}")))?;
            let id = data_id(&[
                ("instrument", DataIdValue::from("Cam")),
                ("exposure", DataIdValue::Int(e as i64)),
                ("detector", DataIdValue::Int(d as i64)),
            ]);
            butler.put(&InMemoryDataset::Other(Box::new(raw)), "raw", &id, RAW_RUN)?;
        }
    }
    Ok(butler)
}
