//! Composite datasets through the real binary: `ExposureF` calexps
//! ingested as FITS files; `get calexp.wcs` / `calexp.image` give exactly
//! that part of the full read, `--parameters bbox=` the slice of the full
//! image; `query-datasets` lists a component under its name with the
//! parent's UUID; a pipeline whose task reads `calexp.wcs` and a `bbox`
//! cut-out of `calexp.image` runs end to end, and provenance names the
//! parent `calexp` as the input. With the datastore's `disassemble`
//! setting, an `ExposureF` output is one file per component plus an index:
//! it round-trips (whole, component, cut-out, and as a downstream task's
//! component inputs), merges, `repo check` verifies it and knows its parts,
//! a tampered part is refused by check, get and merge, export and import
//! (and transfer) carry it as one dataset with its parts and refuse a
//! tampered part, retrieve copies its parts, and removal takes them.

mod common;

use std::os::unix::process::ExitStatusExt;
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
    ingest_calexps(dir, &repo);
    repo
}

/// Registers `calexp` (ExposureF) and ingests the 2×2 calexps into
/// `Cam/raw`.
fn ingest_calexps(dir: &Path, repo: &Path) {
    let repo_s = repo.to_str().unwrap();
    if !ok(&["dataset-type", "list", repo_s]).contains("calexp") {
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
    }
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

const DISASSEMBLED_PIPELINE: &str = r#"description: an ExposureF output, then component inputs of it
tasks:
  scale:
    class: examples.fits.ScaleExposure
    dimensions: [instrument, exposure, detector]
    inputs:
      exposure: {dataset_type: calexp, dimensions: [instrument, exposure, detector], storage_class: ExposureF}
    outputs:
      scaled: {dataset_type: calexpScaled, dimensions: [instrument, exposure, detector], storage_class: ExposureF}
    config: {factor: 2.0}
  stats:
    class: examples.fits.CutoutStats
    dimensions: [instrument, exposure, detector]
    inputs:
      wcs: {dataset_type: calexpScaled.wcs, dimensions: [instrument, exposure, detector], storage_class: Wcs}
      image: {dataset_type: calexpScaled.image, dimensions: [instrument, exposure, detector], storage_class: ImageF}
    outputs:
      stats: {dataset_type: cutoutStats, dimensions: [instrument, exposure, detector], storage_class: Json}
    config: {bbox: "2,3,12,9"}
"#;

fn scaled(e: usize, d: usize) -> Exposure {
    let mut x = exposure(e, d);
    for p in x.image.pixels_mut() {
        *p *= 2.0;
    }
    for p in x.variance.pixels_mut() {
        *p *= 4.0;
    }
    x
}

/// Flips one byte in the middle of a file.
fn tamper(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2 + 17;
    bytes[mid] ^= 0x55;
    std::fs::write(path, bytes).unwrap();
}

fn preflight_run(repo: &Path, pipeline: &Path, bundle: &Path, run: &str) {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    ok(&[
        "preflight",
        &s(repo),
        "--pipeline",
        &s(pipeline),
        "--input",
        "Cam/raw",
        "--output-run",
        run,
        "--bundle",
        &s(bundle),
    ]);
    ok(&["run", &s(bundle), "--jobs", "2"]);
}

#[test]
fn disassembled_composites_round_trip_merge_verify_and_refuse_a_tampered_part() {
    let dir = tempfile::tempdir().unwrap();
    let repo = disassembling_repo(dir.path());
    let repo_s = repo.to_str().unwrap().to_string();

    let pipeline = dir.path().join("disassembled.yaml");
    std::fs::write(&pipeline, DISASSEMBLED_PIPELINE).unwrap();
    let bundle = dir.path().join("a.qb");
    preflight_run(&repo, &pipeline, &bundle, "u/test/a");
    ok(&["merge", &repo_s, bundle.to_str().unwrap()]);

    // One index per scaled exposure, registered; five parts beside it.
    let found: Vec<Value> = serde_json::from_str(&ok(&[
        "query-datasets",
        &repo_s,
        "--collections",
        "u/test/a",
        "--dataset-type",
        "calexpScaled",
        "--json",
    ]))
    .unwrap();
    assert_eq!(found.len(), 4);
    let index_rel = found[0]["stored"]["path"].as_str().unwrap().to_string();
    assert!(index_rel.ends_with(".parts.json"), "{index_rel}");
    let index_abs = repo.join("datastore").join(&index_rel);
    let index: Value = serde_json::from_slice(&std::fs::read(&index_abs).unwrap()).unwrap();
    let parts = index["parts"].as_array().unwrap();
    let names: Vec<&str> = parts
        .iter()
        .map(|p| p["component"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["image", "mask", "variance", "metadata", "wcs"]);
    for p in parts {
        let file = index_abs.with_file_name(p["file"].as_str().unwrap());
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(bytes.len() as u64, p["size"].as_u64().unwrap());
        assert_eq!(
            blake3::hash(&bytes).to_hex().as_str(),
            p["checksum"].as_str().unwrap()
        );
    }

    // Round trip: the assembled dataset, a component, a cut-out.
    let e = found[0]["data_id"]["exposure"].as_u64().unwrap() as usize;
    let d = found[0]["data_id"]["detector"].as_u64().unwrap() as usize;
    let data_id = format!("instrument=Cam,exposure={e},detector={d}");
    let get_to = |t: &str, extra: &[&str], out: &Path| {
        let mut args = vec![
            "get",
            &repo_s,
            t,
            "--data-id",
            &data_id,
            "--collections",
            "u/test/a",
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        common::run(&args)
    };
    let out = dir.path().join("scaled.fits");
    assert!(get_to("calexpScaled", &[], &out).status.success());
    let back = FitsExposureFormatter::decode_exposure(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(back, scaled(e, d));
    assert!(
        get_to("calexpScaled", &["--parameters", "bbox=1,2,30,20"], &out)
            .status
            .success()
    );
    let cut = FitsExposureFormatter::decode_exposure(&std::fs::read(&out).unwrap()).unwrap();
    let b = BBox::parse("1,2,30,20").unwrap();
    assert_eq!(cut.image, scaled(e, d).image.cutout(&b).unwrap());
    assert_eq!(cut.wcs.unwrap().crpix, (20.5 - 1.0, 15.5 - 2.0));
    let img = dir.path().join("img.fits");
    assert!(get_to("calexpScaled.image", &[], &img).status.success());
    let image = FitsImageFormatter::decode_image(&std::fs::read(&img).unwrap()).unwrap();
    assert_eq!(image, scaled(e, d).image);
    // The downstream task read the components from the parts.
    let stats: Value = serde_json::from_str(&ok(&[
        "get",
        &repo_s,
        "cutoutStats",
        "--data-id",
        &data_id,
        "--collections",
        "u/test/a",
    ]))
    .unwrap();
    let sum: f64 = scaled(e, d)
        .image
        .cutout(&BBox::parse("2,3,12,9").unwrap())
        .unwrap()
        .pixels()
        .iter()
        .map(|&p| f64::from(p))
        .sum();
    assert_eq!(stats["sum"].as_f64().unwrap(), sum);

    // Verified: `repo check` knows the parts (no orphans, nothing bad).
    ok(&["repo", "check", &repo_s]);

    // A tampered part: check names the dataset's index, reads are refused.
    let image_part = index_abs.with_file_name(parts[0]["file"].as_str().unwrap());
    let pristine = std::fs::read(&image_part).unwrap();
    tamper(&image_part);
    let out_check = common::run(&["repo", "check", &repo_s]);
    assert_eq!(
        out_check.status.code(),
        Some(1),
        "{}",
        common::show(&out_check)
    );
    assert!(
        common::show(&out_check).contains(&index_rel),
        "{}",
        common::show(&out_check)
    );
    let refused = get_to("calexpScaled", &[], &out);
    assert!(!refused.status.success());
    assert!(
        common::show(&refused).contains("checksum"),
        "{}",
        common::show(&refused)
    );
    let refused = get_to("calexpScaled.image", &[], &img);
    assert!(
        common::show(&refused).contains("checksum"),
        "{}",
        common::show(&refused)
    );
    std::fs::write(&image_part, pristine).unwrap();
    ok(&["repo", "check", &repo_s]);

    // Merge refuses an output whose part was altered after the run.
    let bundle_b = dir.path().join("b.qb");
    preflight_run(&repo, &pipeline, &bundle_b, "u/test/b");
    let datastore = repo.join("datastore");
    let mut tampered = None;
    for entry in walk(&datastore.join("u/test/b")) {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".variance.fits") && tampered.is_none() {
            tamper(&entry);
            tampered = Some(name);
        }
    }
    let tampered = tampered.expect("a variance part in run u/test/b");
    let merged = common::run(&["merge", &repo_s, bundle_b.to_str().unwrap()]);
    let shown = common::show(&merged);
    let registered: Vec<Value> = serde_json::from_str(&ok(&[
        "query-datasets",
        &repo_s,
        "--collections",
        "u/test/b",
        "--dataset-type",
        "calexpScaled",
        "--json",
    ]))
    .unwrap();
    assert_eq!(registered.len(), 3, "{tampered}: {shown}");
    for f in &registered {
        let stem = f["stored"]["path"]
            .as_str()
            .unwrap()
            .trim_end_matches(".parts.json");
        let base = stem.rsplit('/').next().unwrap();
        assert!(!tampered.starts_with(base), "{tampered} was registered");
    }

    // Export, import and transfer carry each composite as one dataset
    // with its parts.
    export_import_and_transfer_disassembled(dir.path(), &repo, &index_rel, parts, &data_id);

    // Retrieve copies the index and its parts, as they are.
    let retrieved = dir.path().join("retrieved");
    ok(&[
        "retrieve",
        &repo_s,
        retrieved.to_str().unwrap(),
        "--collections",
        "u/test/a",
        "--dataset-type",
        "calexpScaled",
    ]);
    let copy = retrieved.join(&index_rel);
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(&index_abs).unwrap()
    );
    for p in parts {
        let name = p["file"].as_str().unwrap();
        assert_eq!(
            std::fs::read(copy.with_file_name(name)).unwrap(),
            std::fs::read(index_abs.with_file_name(name)).unwrap(),
            "{name}"
        );
    }

    // Removal takes the parts with the index.
    ok(&["remove-runs", &repo_s, "u/test/a", "u/test/b"]);
    let left: Vec<PathBuf> = walk(&datastore)
        .into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            s.contains("/u/test/a/") && !s.contains(".quarantine")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `get` of `dataset_type` (`calexpScaled` or a component of it) from RUN
/// `u/test/a` of `repo` into `out`, returning the bytes written.
fn get_scaled(repo: &Path, dataset_type: &str, data_id: &str, out: &Path) -> Vec<u8> {
    ok(&[
        "get",
        repo.to_str().unwrap(),
        dataset_type,
        "--data-id",
        data_id,
        "--collections",
        "u/test/a",
        "--output",
        out.to_str().unwrap(),
    ]);
    std::fs::read(out).unwrap()
}

/// Export → import and transfer of the disassembled `calexpScaled` of RUN
/// `u/test/a`: one export entry per composite (its index, formatter
/// `quanta.disassembled.*`), the parts beside it; the imported and
/// transferred datasets read back (whole and a component) exactly as in
/// the source and `repo check` verifies their parts; a tampered part is
/// refused (exit 1) naming the dataset type, the data ID and the part,
/// with nothing imported.
fn export_import_and_transfer_disassembled(
    dir: &Path,
    repo: &Path,
    index_rel: &str,
    parts: &[Value],
    data_id: &str,
) {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let export_dir = dir.join("export");
    let select = [
        "--collections",
        "u/test/a",
        "--dataset-type",
        "calexpScaled",
    ];
    let mut args = vec!["export".to_string(), s(repo), s(&export_dir)];
    args.extend(select.iter().map(|a| a.to_string()));
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let yaml = std::fs::read_to_string(export_dir.join("export.yaml")).unwrap();
    assert_eq!(yaml.matches("quanta.disassembled.").count(), 4, "{yaml}");
    assert!(yaml.contains("storage_class: ExposureF"), "{yaml}");
    assert!(yaml.contains(index_rel), "{yaml}");
    let exported_index = export_dir.join(index_rel);
    for p in parts {
        assert!(exported_index
            .with_file_name(p["file"].as_str().unwrap())
            .is_file());
    }

    let want_whole = get_scaled(repo, "calexpScaled", data_id, &dir.join("w0.fits"));
    let want_image = get_scaled(repo, "calexpScaled.image", data_id, &dir.join("i0.fits"));
    let check_copy = |dest: &Path, tag: &str| {
        let whole = get_scaled(
            dest,
            "calexpScaled",
            data_id,
            &dir.join(format!("w{tag}.fits")),
        );
        assert_eq!(whole, want_whole, "{tag}: whole");
        let image = get_scaled(
            dest,
            "calexpScaled.image",
            data_id,
            &dir.join(format!("i{tag}.fits")),
        );
        assert_eq!(image, want_image, "{tag}: image");
        let found: Vec<Value> = serde_json::from_str(&ok(&[
            "query-datasets",
            &s(dest),
            "--collections",
            "u/test/a",
            "--dataset-type",
            "calexpScaled",
            "--json",
        ]))
        .unwrap();
        assert_eq!(found.len(), 4, "{tag}");
        for f in &found {
            assert!(f["stored"]["path"]
                .as_str()
                .unwrap()
                .ends_with(".parts.json"));
        }
        ok(&["repo", "check", &s(dest)]);
    };

    // A tampered part of the export: refused, named, nothing imported.
    let dest = dir.join("imported");
    ok(&["repo", "create", &s(&dest)]);
    let part = exported_index.with_file_name(parts[2]["file"].as_str().unwrap());
    let pristine = std::fs::read(&part).unwrap();
    tamper(&part);
    let err = fails_with(1, &["import", &s(&dest), &s(&export_dir)]);
    assert!(err.contains(&s(&part)), "{err}");
    assert!(
        err.contains("calexpScaled") && err.contains("exposure: "),
        "{err}"
    );
    assert!(err.contains("part `variance`"), "{err}");
    assert!(walk(&dest.join("datastore"))
        .iter()
        .all(|p| !p.to_string_lossy().contains("calexpScaled")));
    std::fs::write(&part, &pristine).unwrap();
    ok(&["import", &s(&dest), &s(&export_dir)]);
    check_copy(&dest, "imported");
    // Importing again changes nothing.
    ok(&["import", &s(&dest), &s(&export_dir)]);
    check_copy(&dest, "imported again");

    // Killed after a part (the first, one inside the second composite,
    // one of the last) or just before the registry commit: the rerun ends
    // as the uninterrupted import, with the same files and no others.
    let files = |repo: &Path| -> Vec<PathBuf> {
        let root = repo.join("datastore");
        walk(&root)
            .into_iter()
            .map(|p| p.strip_prefix(&root).unwrap().to_path_buf())
            .collect()
    };
    let n_parts = 4 * parts.len();
    for (i, at) in [
        "ingest-transferred:1".to_string(),
        format!("ingest-transferred:{}", parts.len() + 2),
        format!("ingest-transferred:{}", n_parts - 1),
        "ingest-before-commit:1".to_string(),
    ]
    .iter()
    .enumerate()
    {
        let killed = dir.join(format!("killed-{i}"));
        ok(&["repo", "create", &s(&killed)]);
        let out = common::quanta()
            .args(["import", &s(&killed), &s(&export_dir)])
            .env("QUANTA_TEST_KILL_AT", at)
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "{at}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ok(&["import", &s(&killed), &s(&export_dir)]);
        check_copy(&killed, &format!("killed{i}"));
        assert_eq!(files(&killed), files(&dest), "after a kill at {at}");
    }

    // Transfer, repo to repo: the same guarantees.
    let third = dir.join("transferred");
    ok(&["repo", "create", &s(&third)]);
    let source_part = repo
        .join("datastore")
        .join(index_rel)
        .with_file_name(parts[1]["file"].as_str().unwrap());
    let pristine = std::fs::read(&source_part).unwrap();
    tamper(&source_part);
    let mut args = vec![
        "transfer".to_string(),
        s(repo),
        s(&third),
        "--transfer".into(),
        "copy".into(),
    ];
    args.extend(select.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = fails_with(1, &args);
    assert!(
        err.contains(&s(&source_part)) && err.contains("part `mask`"),
        "{err}"
    );
    std::fs::write(&source_part, &pristine).unwrap();
    ok(&args);
    check_copy(&third, "transferred");
}

/// The calexp repo of the other tests at `dir/repo`, made with the
/// datastore's `disassemble` setting (ingested files stay one file each).
fn disassembling_repo(dir: &Path) -> PathBuf {
    let config = dir.join("datastore.json");
    std::fs::write(&config, r#"{"disassemble": true}"#).unwrap();
    let repo = dir.join("repo");
    let repo_s = repo.to_str().unwrap().to_string();
    ok(&[
        "repo",
        "create",
        &repo_s,
        "--datastore-config",
        config.to_str().unwrap(),
    ]);
    let records = dir.join("records.json");
    std::fs::write(&records, common::reference_records(2, 2).to_string()).unwrap();
    ok(&["dimensions", "insert", &repo_s, records.to_str().unwrap()]);
    ok(&["collection", "create", &repo_s, "Cam/raw", "--type", "RUN"]);
    ingest_calexps(dir, &repo);
    repo
}

/// What a finished campaign left: the registered datasets of the output
/// RUN (type, data ID, path, size, checksum) and every file under the RUN's
/// directory.
fn campaign_state(work: &Path) -> (Vec<String>, Vec<String>) {
    let found: Vec<Value> = serde_json::from_str(&ok(&[
        "query-datasets",
        work.join("repo").to_str().unwrap(),
        "--collections",
        "u/test/k",
        "--json",
    ]))
    .unwrap();
    let mut registered: Vec<String> = found
        .iter()
        .map(|f| {
            format!(
                "{} {} {} {} {}",
                f["dataset_type"],
                f["data_id"],
                f["stored"]["path"],
                f["stored"]["size"],
                f["stored"]["checksum"]
            )
        })
        .collect();
    registered.sort();
    let root = work.join("repo/datastore/u/test/k");
    let files = walk(&root)
        .into_iter()
        .map(|p| p.strip_prefix(&root).unwrap().to_string_lossy().to_string())
        .collect();
    (registered, files)
}

/// `kill -9` of `run` at every file written (parts and indices) and every
/// index linked while it writes disassembled composites, then `run` again and
/// `merge`: the repository ends as an uninterrupted campaign's, every part
/// verified, no leftover file.
#[test]
fn a_run_killed_while_writing_parts_reruns_to_the_uninterrupted_state() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let (base, work) = (dir.path().join("base"), dir.path().join("work"));
    std::fs::create_dir_all(&work).unwrap();
    disassembling_repo(&work);
    let pipeline = work.join("p.yaml");
    let scale_only = &DISASSEMBLED_PIPELINE[..DISASSEMBLED_PIPELINE.find("  stats:").unwrap()];
    std::fs::write(&pipeline, scale_only).unwrap();
    let bundle = work.join("k.qb");
    ok(&[
        "preflight",
        work.join("repo").to_str().unwrap(),
        "--pipeline",
        pipeline.to_str().unwrap(),
        "--input",
        "Cam/raw",
        "--output-run",
        "u/test/k",
        "--bundle",
        bundle.to_str().unwrap(),
    ]);
    std::fs::rename(&work, &base).unwrap();
    let b = bundle.to_str().unwrap().to_string();
    let repo = work.join("repo").to_str().unwrap().to_string();
    let run = |env: Option<(&str, String)>| {
        let mut c = common::quanta();
        c.args(["run", &b, "--jobs", "1"]);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        c.output().unwrap()
    };

    common::restore(&base, &work);
    let log = dir.path().join("kill.log");
    let first = run(Some(("QUANTA_TEST_KILL_LOG", log.display().to_string())));
    assert!(first.status.success(), "{}", common::show(&first));
    ok(&["merge", &repo, &b]);
    let reference = campaign_state(&work);
    assert_eq!(reference.0.len(), 4);
    assert_eq!(reference.1.len(), 4 * 6, "{:?}", reference.1);
    let passages = std::fs::read_to_string(&log).unwrap();
    // Every file is written to a temporary first (5 parts and an index per
    // exposure); parts are renamed into place (replacing a leftover), the
    // index hard-linked (never replacing a file).
    for (point, expected) in [("datastore.temp_written", 4 * 6), ("datastore.linked", 4)] {
        let n = passages.lines().filter(|l| *l == point).count();
        assert_eq!(n, expected, "{point}");
        for k in 1..=n {
            common::restore(&base, &work);
            let killed = run(Some(("QUANTA_TEST_KILL_AT", format!("{point}:{k}"))));
            assert_eq!(
                killed.status.signal(),
                Some(9),
                "{point}:{k}: {}",
                common::show(&killed)
            );
            let rerun = run(None);
            assert!(
                rerun.status.success(),
                "{point}:{k}: {}",
                common::show(&rerun)
            );
            ok(&["merge", &repo, &b]);
            assert_eq!(campaign_state(&work), reference, "{point}:{k}");
            ok(&["repo", "check", &repo]);
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn preflight_refuses_a_component_the_parent_does_not_have_as_declared() {
    let dir = tempfile::tempdir().unwrap();
    let repo = calexp_repo(dir.path());
    let s = |p: &Path| p.to_str().unwrap().to_string();
    for (from, to, says) in [
        (
            "dataset_type: calexp.wcs, dimensions: [instrument, exposure, detector], storage_class: Wcs",
            "dataset_type: calexp.wcs, dimensions: [instrument, exposure, detector], storage_class: ImageF",
            "has storage class Wcs, not ImageF",
        ),
        (
            "dataset_type: calexp.wcs,",
            "dataset_type: calexp.psf,",
            "no component `psf`",
        ),
        (
            "dataset_type: calexp.wcs, dimensions: [instrument, exposure, detector]",
            "dataset_type: calexp.wcs, dimensions: [instrument, exposure]",
            "has the dimensions of `calexp`",
        ),
        (
            "dataset_type: calexp.wcs,",
            "dataset_type: nothing.wcs,",
            "not registered in the repo and no task produces it",
        ),
    ] {
        let text = PIPELINE.replace(from, to);
        assert_ne!(text, PIPELINE, "{from}");
        let pipeline = dir.path().join("bad.yaml");
        std::fs::write(&pipeline, text).unwrap();
        let err = fails_with(
            2,
            &[
                "preflight",
                &s(&repo),
                "--pipeline",
                &s(&pipeline),
                "--input",
                "Cam/raw",
                "--output-run",
                "u/test/bad",
                "--bundle",
                &s(&dir.path().join("bad.qb")),
            ],
        );
        assert!(err.contains(says), "{to}: {err}");
        assert!(err.contains("bad.yaml:"), "{to}: no line in {err}");
    }
}
