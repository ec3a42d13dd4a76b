//! `quanta demo --pipeline fits` end to end with the real binary: FITS raws,
//! bias and flat certified in a CALIBRATION collection, ISR, background,
//! detection and summary; then the outputs through `query-datasets` and
//! `get`, checked against the simulator's injected sources.

mod common;

use std::path::Path;

use common::ok;
use quanta_examples::fits::synth::{injected_sources, SimConfig};
use quanta_examples::fits::FitsCatalogFormatter;
use serde_json::Value;

const EXPOSURES: usize = 2;
const DETECTORS: usize = 3;
const SIZE: usize = 256;
const SOURCES: usize = 20;

/// The simulation the demo runs with these flags.
fn sim() -> SimConfig {
    SimConfig {
        width: SIZE,
        height: SIZE,
        sources_per_image: SOURCES,
        ..SimConfig::default()
    }
}

fn query(repo: &str, dataset_type: &str) -> Vec<Value> {
    let out = ok(&[
        "query-datasets",
        repo,
        "--collections",
        "demo",
        "--dataset-type",
        dataset_type,
        "--json",
    ]);
    match serde_json::from_str(&out) {
        Ok(Value::Array(a)) => a,
        other => panic!("query-datasets {dataset_type}: expected a JSON array, got {other:?}"),
    }
}

fn data_id_int(found: &Value, key: &str) -> i64 {
    found["data_id"][key]
        .as_i64()
        .unwrap_or_else(|| panic!("no integer {key} in {found}"))
}

#[test]
fn fits_demo_detects_every_injected_source() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let (e, d, size, n) = (
        EXPOSURES.to_string(),
        DETECTORS.to_string(),
        SIZE.to_string(),
        SOURCES.to_string(),
    );
    let out = ok(&[
        "demo",
        "--pipeline",
        "fits",
        "--dir",
        demo_dir.to_str().unwrap(),
        "--exposures",
        &e,
        "--detectors",
        &d,
        "--image-size",
        &size,
        "--sources",
        &n,
    ]);
    let total = EXPOSURES * DETECTORS * SOURCES;
    assert!(
        out.contains(&format!("sources: {total} detected, {total} injected")),
        "{out}"
    );

    let repo = demo_dir.join("repo");
    let r = repo.to_str().unwrap();
    assert_eq!(query(r, "calexp").len(), EXPOSURES * DETECTORS);
    assert_eq!(query(r, "expSummary").len(), EXPOSURES);
    let catalogs = query(r, "src");
    assert_eq!(catalogs.len(), EXPOSURES * DETECTORS);

    // Each summary counts exactly the sources injected into its exposure,
    // detector by detector.
    for exposure in 0..EXPOSURES {
        let data_id = format!("instrument=Cam,exposure={exposure}");
        let summary: Value = serde_json::from_str(&ok(&[
            "get",
            r,
            "expSummary",
            "--data-id",
            &data_id,
            "--collections",
            "demo",
        ]))
        .unwrap();
        let injected: usize = (0..DETECTORS)
            .map(|det| injected_sources(&sim(), exposure, det).unwrap().len())
            .sum();
        assert_eq!(injected, DETECTORS * SOURCES);
        assert_eq!(summary["sources"], injected, "{summary}");
        assert_eq!(summary["injected"], injected, "{summary}");
        assert_eq!(summary["detectors"], DETECTORS, "{summary}");
        for row in summary["per_detector"].as_array().unwrap() {
            assert_eq!(row["sources"], SOURCES, "{row}");
        }
        // The noise of a ~200–300 ADU sky with 5 ADU read noise.
        let sigma = summary["median_sigma"].as_f64().unwrap();
        assert!((12.0..22.0).contains(&sigma), "σ {sigma}");
    }

    // The catalog files are FITS binary tables in the datastore, and their
    // centroids sit on the injected positions.
    for found in &catalogs {
        assert_eq!(found["stored"]["formatter"], FitsCatalogFormatter::NAME);
        let rel = found["stored"]["path"].as_str().unwrap();
        let path = Path::new(r).join("datastore").join(rel);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(bytes.starts_with(b"SIMPLE  ="), "{}", path.display());
        assert!(
            String::from_utf8_lossy(&bytes).contains("XTENSION= 'BINTABLE'"),
            "{}",
            path.display()
        );
        let catalog = FitsCatalogFormatter::decode_catalog(&bytes).unwrap();
        let (exposure, detector) = (
            data_id_int(found, "exposure"),
            data_id_int(found, "detector"),
        );
        let truth = injected_sources(&sim(), exposure as usize, detector as usize).unwrap();
        assert_eq!(catalog.sources.len(), truth.len());
        for t in &truth {
            let nearest = catalog
                .sources
                .iter()
                .map(|s| (s.x - t.x).hypot(s.y - t.y))
                .fold(f64::INFINITY, f64::min);
            assert!(
                nearest < 1.0,
                "exposure {exposure} detector {detector}: {t:?} is {nearest} px from the nearest source"
            );
        }
    }
}

#[test]
fn fits_only_flags_are_refused_for_the_reference_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run(&[
        "demo",
        "--dir",
        dir.path().join("d").to_str().unwrap(),
        "--sources",
        "3",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--pipeline fits"), "{err}");
    // Too many sources for the image is refused before anything is made.
    let out = common::run(&[
        "demo",
        "--pipeline",
        "fits",
        "--dir",
        dir.path().join("e").to_str().unwrap(),
        "--image-size",
        "64",
        "--sources",
        "50",
    ]);
    assert!(!out.status.success());
    assert!(!dir.path().join("e").exists());
}
