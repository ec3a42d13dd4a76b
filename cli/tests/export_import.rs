//! Export and import in the LSST export format through the real binary on
//! real repositories: a quanta → quanta round trip of a merged reference
//! run (datasets, bytes, collections), idempotent re-import, errors with
//! file and line, and an export written by LSST's `butler export`
//! (`data/lsst_export/`, daf_butler 30.2026.4300: raws in YAML, a TAGGED, a
//! CHAINED and a CALIBRATION collection) imported by quanta.

mod common;

use std::path::{Path, PathBuf};

use common::{fails_with, ok};
use serde_json::Value;

const RUN: &str = "u/test/run";
const CHAIN: &str = "u/test/out";

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp paths")
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).expect("JSON output")
}

fn merged_campaign(dir: &Path, n_exp: usize, n_det: usize) -> PathBuf {
    common::merged_reference_campaign(dir, n_exp, n_det, RUN, CHAIN)
}

/// (type, run, data ID, UUID) of every dataset in `collections`, sorted.
fn datasets(repo: &Path, collections: &str) -> Vec<(String, String, String, String)> {
    let v = json(&[
        "query-datasets",
        s(repo),
        "--collections",
        collections,
        "--all",
        "--json",
    ]);
    let mut out: Vec<_> = v
        .as_array()
        .expect("a list")
        .iter()
        .map(|d| {
            (
                d["dataset_type"].to_string(),
                d["run"].to_string(),
                d["data_id"].to_string(),
                d["id"].to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn new_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("dest");
    ok(&["repo", "create", s(&repo)]);
    repo
}

#[test]
fn a_merged_run_round_trips_through_an_lsst_export() {
    let tmp = tempfile::tempdir().unwrap();
    let src = merged_campaign(tmp.path(), 3, 2);
    let out = tmp.path().join("export");
    ok(&[
        "export",
        s(&src),
        s(&out),
        "--collections",
        CHAIN,
        "--transfer",
        "copy",
    ]);
    let text = std::fs::read_to_string(out.join("export.yaml")).unwrap();
    assert!(
        text.starts_with("description: Butler Data Repository Export\nversion: 1.0.2\n"),
        "{text}"
    );
    assert!(text.contains("lsst.daf.butler.formatters.json.JsonFormatter"));
    assert!(text.contains("storage_class: StructuredDataDict"));
    assert!(text.contains("!uuid"));
    assert!(out.join("quanta-extras.json").is_file());
    // Exporting into the same directory again is refused.
    fails_with(2, &["export", s(&src), s(&out), "--collections", CHAIN]);

    let dest = new_repo(tmp.path());
    ok(&["import", s(&dest), s(&out), "--transfer", "copy"]);
    let expected = datasets(&src, CHAIN);
    assert!(expected.len() > 6, "{expected:?}");
    assert_eq!(datasets(&dest, CHAIN), expected);
    let collections = |repo: &Path| json(&["collection", "list", s(repo), "--json"]);
    assert_eq!(collections(&dest), collections(&src));
    // Same bytes from `get`.
    for e in 0..3 {
        for d in 0..2 {
            let id = format!("instrument=Cam,exposure={e},detector={d}");
            let get = |repo: &Path, t: &str| {
                ok(&["get", s(repo), t, "--collections", CHAIN, "--data-id", &id])
            };
            assert_eq!(get(&dest, "raw"), get(&src, "raw"));
        }
    }
    // Idempotent: a second import changes nothing and succeeds.
    let before = std::fs::read(dest.join("registry.sqlite3"))
        .ok()
        .map(|b| b.len());
    let again = json(&["import", s(&dest), s(&out), "--json"]);
    assert_eq!(again["datasets"], 0, "{again}");
    assert_eq!(again["files"], 0, "{again}");
    assert_eq!(
        again["datasets_present"].as_u64().unwrap() as usize,
        expected.len()
    );
    assert_eq!(datasets(&dest, CHAIN), expected);
    let _ = before;
}

#[test]
fn an_export_written_by_lsst_imports() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = new_repo(tmp.path());
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lsst_export");
    let summary = json(&["import", s(&dest), s(&data), "--json"]);
    assert_eq!(summary["datasets"], 5, "{summary}");
    let raws = datasets(&dest, "chain");
    assert_eq!(raws.len(), 4 + 2, "{raws:?}"); // 4 raws in Cam/raw, 2 tagged
    let calib = json(&[
        "query-datasets",
        s(&dest),
        "--collections",
        "Cam/calib",
        "--all",
        "--json",
    ]);
    assert_eq!(calib.as_array().unwrap().len(), 1, "{calib}");
    // The YAML raw is converted to JSON with the same content.
    let got: Value = serde_json::from_str(&ok(&[
        "get",
        s(&dest),
        "raw",
        "--collections",
        "Cam/raw",
        "--data-id",
        "instrument=Cam,exposure=1,detector=0",
    ]))
    .unwrap();
    assert_eq!(got["pixels"][0], 1000);
    assert_eq!(got["exposure"], 1);
    json(&["import", s(&dest), s(&data), "--json"]);
    assert_eq!(datasets(&dest, "chain"), raws);
}

#[test]
fn a_bad_export_is_refused_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = new_repo(tmp.path());
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lsst_export");
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    let text = std::fs::read_to_string(data.join("export.yaml")).unwrap();
    // A dataset entry without its run.
    let broken = text.replacen("  run: Cam/raw\n", "", 1);
    std::fs::write(bad.join("export.yaml"), &broken).unwrap();
    let line = broken
        .lines()
        .position(|l| l == "  dataset_type: raw")
        .unwrap(); // the line of `- type: dataset` is the one before
    let err = fails_with(2, &["import", s(&dest), s(&bad)]);
    assert!(err.contains(&format!("export.yaml:{line}:")), "{err}");
    assert!(err.contains("missing `run`"), "{err}");
    // An element this universe does not have.
    std::fs::write(
        bad.join("export.yaml"),
        text.replace("element: group", "element: visit_system"),
    )
    .unwrap();
    let err = fails_with(2, &["import", s(&dest), s(&bad)]);
    assert!(err.contains("visit_system"), "{err}");
    // Invalid YAML.
    std::fs::write(bad.join("export.yaml"), "data: [\n  - {type: x\n").unwrap();
    let err = fails_with(2, &["import", s(&dest), s(&bad)]);
    assert!(err.contains("export.yaml:"), "{err}");
    // Nothing was imported by any of them.
    assert!(json(&["collection", "list", s(&dest), "--json"])
        .as_array()
        .unwrap()
        .is_empty());
}
