//! Composite datasets through the real binary: `ExposureF` calexps
//! ingested as FITS files; `get calexp.wcs` / `calexp.image` give exactly
//! that part of the full read, `--parameters bbox=` the slice of the full
//! image; `query-datasets` lists a component under its name with the
//! parent's UUID; a pipeline whose task reads `calexp.wcs` and a `bbox`
//! cut-out of `calexp.image` runs end to end, and provenance names the
//! parent `calexp` as the input.

mod common;

use std::path::{Path, PathBuf};

use common::{fails_with, make_empty_reference_repo, ok, preflight_into_test_run};
use quanta_formats::fits::describe::wcs_to_json;
use quanta_formats::fits::{
    BBox, Exposure, FitsExposureFormatter, FitsImageFormatter, Header, Image, Mask, TanWcs,
};
use serde_json::Value;

const W: usize = 40;
const H: usize = 30;

fn exposure(e: usize, d: usize) -> Exposure {
    let seed = (e * 10 + d) as f32;
    let image = Image::new(W, H, (0..W * H).map(|i| seed + i as f32 * 0.125).collect()).unwrap();
    let mask = Mask::new(W, H, (0..W * H).map(|i| (i % 5) as i32).collect()).unwrap();
    let variance = Image::filled(W, H, 2.0 + seed).unwrap();
    let wcs = TanWcs::new(
        (10.0 + e as f64, -5.0 + d as f64 * 0.1),
        (20.5, 15.5),
        [[-5e-5, 0.0], [0.0, 5e-5]],
    )
    .unwrap();
    let metadata = Header {
        kind: Some("calexp".into()),
        exposure: Some(e as i64),
        detector: Some(d as i64),
        ..Header::default()
    };
    Exposure::new(image, mask, variance, Some(wcs), metadata).unwrap()
}

/// A repo with 2×2 `calexp` (ExposureF) datasets in RUN `Cam/raw`.
fn calexp_repo(dir: &Path) -> PathBuf {
    let repo = make_empty_reference_repo(dir, 2, 2);
    let repo_s = repo.to_str().unwrap();
    ok(&[
        "dataset-type",
        "register",
        repo_s,
        "calexp",
        "--dimensions",
        "instrument,exposure,detector",
        "--storage-class",
        "ExposureF",
    ]);
    let files = dir.join("calexp_files");
    std::fs::create_dir_all(&files).unwrap();
    let mut manifest = String::from("path,instrument,exposure,detector\n");
    for e in 0..2 {
        for d in 0..2 {
            let name = format!("calexp_{e}_{d}.fits");
            let bytes = FitsExposureFormatter::encode_exposure(&exposure(e, d)).unwrap();
            std::fs::write(files.join(&name), bytes).unwrap();
            manifest.push_str(&format!("calexp_files/{name},Cam,{e},{d}\n"));
        }
    }
    let manifest_path = dir.join("calexp.csv");
    std::fs::write(&manifest_path, manifest).unwrap();
    ok(&[
        "ingest",
        repo_s,
        "--run",
        "Cam/raw",
        "--dataset-type",
        "calexp",
        "--manifest",
        manifest_path.to_str().unwrap(),
    ]);
    repo
}

const DATA_ID: &str = "instrument=Cam,exposure=1,detector=0";

fn get(repo: &str, dataset_type: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "get",
        repo,
        dataset_type,
        "--data-id",
        DATA_ID,
        "--collections",
        "Cam/raw",
    ];
    args.extend_from_slice(extra);
    ok(&args)
}

#[test]
fn components_and_cutouts_are_exactly_parts_of_the_full_read() {
    let dir = tempfile::tempdir().unwrap();
    let repo = calexp_repo(dir.path());
    let repo_s = repo.to_str().unwrap();
    let full = exposure(1, 0);

    // The full dataset's bytes are the ingested file's.
    let out = dir.path().join("full.fits");
    get(repo_s, "calexp", &["--output", out.to_str().unwrap()]);
    let back = FitsExposureFormatter::decode_exposure(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(back, full);

    // calexp.wcs: the WCS of the full read.
    let printed: Value = serde_json::from_str(&get(repo_s, "calexp.wcs", &[])).unwrap();
    assert_eq!(printed, wcs_to_json(&full.wcs.unwrap()));
    let wcs_file = dir.path().join("wcs.json");
    get(
        repo_s,
        "calexp.wcs",
        &["--output", wcs_file.to_str().unwrap()],
    );
    let saved: Value = serde_json::from_slice(&std::fs::read(&wcs_file).unwrap()).unwrap();
    assert_eq!(saved, printed);

    // calexp.image: the image plane of the full read, as a FITS image.
    let img_file = dir.path().join("image.fits");
    get(
        repo_s,
        "calexp.image",
        &["--output", img_file.to_str().unwrap()],
    );
    let image = FitsImageFormatter::decode_image(&std::fs::read(&img_file).unwrap()).unwrap();
    assert_eq!(image, full.image);

    // bbox: the slice of the full image.
    let cut_file = dir.path().join("cut.fits");
    get(
        repo_s,
        "calexp.image",
        &[
            "--parameters",
            "bbox=3,4,33,10",
            "--output",
            cut_file.to_str().unwrap(),
        ],
    );
    let cut = FitsImageFormatter::decode_image(&std::fs::read(&cut_file).unwrap()).unwrap();
    let b = BBox::parse("3,4,33,10").unwrap();
    assert_eq!(cut, full.image.cutout(&b).unwrap());

    // The derived bbox component, printed.
    let bbox: Value = serde_json::from_str(&get(repo_s, "calexp.bbox", &[])).unwrap();
    assert_eq!(bbox, BBox::of(W, H).to_json());

    // Bad requests: exit 2, naming what is wrong.
    let base = [
        "get",
        repo_s,
        "calexp.psf",
        "--data-id",
        DATA_ID,
        "--collections",
        "Cam/raw",
    ];
    let err = fails_with(2, &base);
    assert!(err.contains("no component `psf`"), "{err}");
    let mut args = base.to_vec();
    args[2] = "calexp.wcs";
    args.extend(["--parameters", "bbox=0,0,2,2"]);
    let err = fails_with(2, &args);
    assert!(err.contains("accepts none"), "{err}");
    let mut args = base.to_vec();
    args[2] = "calexp";
    args.extend(["--parameters", "bbox=0,0,41,2"]);
    let err = fails_with(2, &args);
    assert!(err.contains("outside"), "{err}");

    // query-datasets: the component under its name, the parent's UUID.
    let q = |t: &str| -> Vec<Value> {
        let out = ok(&[
            "query-datasets",
            repo_s,
            "--collections",
            "Cam/raw",
            "--dataset-type",
            t,
            "--json",
        ]);
        serde_json::from_str(&out).unwrap()
    };
    let parents = q("calexp");
    let comps = q("calexp.wcs");
    assert_eq!(parents.len(), 4);
    assert_eq!(comps.len(), 4);
    for (p, c) in parents.iter().zip(&comps) {
        assert_eq!(c["dataset_type"], "calexp.wcs");
        assert_eq!(c["id"], p["id"]);
    }
}

const PIPELINE: &str = r#"description: a task reading components of an ExposureF
tasks:
  stats:
    class: examples.fits.CutoutStats
    dimensions: [instrument, exposure, detector]
    inputs:
      wcs: {dataset_type: calexp.wcs, dimensions: [instrument, exposure, detector], storage_class: Wcs}
      image: {dataset_type: calexp.image, dimensions: [instrument, exposure, detector], storage_class: ImageF}
    outputs:
      stats: {dataset_type: cutoutStats, dimensions: [instrument, exposure, detector], storage_class: Json}
    config: {bbox: "2,3,12,9"}
"#;

#[test]
fn component_inputs_run_end_to_end_and_provenance_names_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let repo = calexp_repo(dir.path());
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let pipeline = dir.path().join("components.yaml");
    std::fs::write(&pipeline, PIPELINE).unwrap();
    let bundle = dir.path().join("components.qb");
    preflight_into_test_run(&repo, &pipeline, &bundle);
    ok(&["run", &s(&bundle), "--jobs", "2"]);
    ok(&["merge", &s(&repo), &s(&bundle)]);

    let stats: Value = serde_json::from_str(&ok(&[
        "get",
        &s(&repo),
        "cutoutStats",
        "--data-id",
        DATA_ID,
        "--collections",
        "u/test/run",
    ]))
    .unwrap();
    let full = exposure(1, 0);
    let cut = full
        .image
        .cutout(&BBox::parse("2,3,12,9").unwrap())
        .unwrap();
    let sum: f64 = cut.pixels().iter().map(|&p| f64::from(p)).sum();
    let wcs = full.wcs.unwrap();
    assert_eq!(stats["width"], 10);
    assert_eq!(stats["height"], 6);
    assert_eq!(stats["sum"].as_f64().unwrap(), sum);
    assert_eq!(
        stats["crval"],
        serde_json::json!([wcs.crval.0, wcs.crval.1])
    );

    // Provenance: the quantum's input is the parent calexp (read through
    // two component connections: one input row, under the first), used.
    let out: Value = serde_json::from_str(&ok(&[
        "query-datasets",
        &s(&repo),
        "--collections",
        "u/test/run",
        "--dataset-type",
        "cutoutStats",
        "--where",
        "exposure = 1 AND detector = 0",
        "--json",
    ]))
    .unwrap();
    let stats_id = out[0]["id"].as_str().unwrap().to_string();
    let calexp: Value = serde_json::from_str(&ok(&[
        "query-datasets",
        &s(&repo),
        "--collections",
        "Cam/raw",
        "--dataset-type",
        "calexp",
        "--where",
        "exposure = 1 AND detector = 0",
        "--json",
    ]))
    .unwrap();
    let calexp_id = calexp[0]["id"].as_str().unwrap().to_string();
    let graph: Value =
        serde_json::from_str(&ok(&["provenance", &s(&repo), &stats_id, "--json"])).unwrap();
    let quantum = &graph["quanta"][0];
    let inputs = quantum["inputs"].as_array().unwrap();
    assert!(!inputs.is_empty(), "{graph}");
    for i in inputs {
        assert_eq!(i["dataset_id"].as_str().unwrap(), calexp_id, "{graph}");
        assert_eq!(i["used"], true, "{graph}");
    }
    assert_eq!(inputs.len(), 1, "{graph}");
    assert_eq!(inputs[0]["connection"], "wcs", "{graph}");
    let parent = graph["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"].as_str() == Some(&calexp_id))
        .expect("the parent is in the provenance graph");
    assert_eq!(parent["dataset_type"], "calexp");
}
