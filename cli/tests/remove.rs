//! Removal and `repo check` through the real binary on real repositories:
//! `remove-runs`, `prune-datasets`, `collection remove | untag |
//! decertify`, `dataset-type remove`, the provenance of removed datasets,
//! and `repo check` finding (and repairing what it can of) missing,
//! altered and orphaned files. The kill-9 matrix is in `remove_crash.rs`.

mod common;

use std::path::{Path, PathBuf};

use common::{fails_with, make_reference_repo, ok, run};
use serde_json::Value;

const RUN: &str = "u/test/run";
const CHAIN: &str = "u/test/out";

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp paths")
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).expect("JSON output")
}

/// One integer from a read-only SQL query.
fn count(repo: &Path, sql: &str) -> i64 {
    let v = json(&["sql", s(repo), sql, "--json"]);
    v[0].as_object()
        .and_then(|row| row.values().next())
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("{sql}: {v}"))
}

fn merged_campaign(dir: &Path, n_exp: usize, n_det: usize) -> PathBuf {
    common::merged_reference_campaign(dir, n_exp, n_det, RUN, CHAIN)
}

/// Every file under `dir` (relative), symlinks included.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.symlink_metadata().unwrap().is_dir() {
                walk(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

fn check_clean(repo: &Path) {
    let out = ok(&["repo", "check", s(repo)]);
    assert!(out.contains("0 problems found"), "{out}");
}

fn dataset_ids(repo: &Path, collection: &str, dataset_type: &str) -> Vec<String> {
    json(&[
        "query-datasets",
        s(repo),
        "--collections",
        collection,
        "--dataset-type",
        dataset_type,
        "--json",
    ])
    .as_array()
    .unwrap()
    .iter()
    .map(|d| d["id"].as_str().unwrap().to_string())
    .collect()
}

#[test]
fn remove_runs_removes_datasets_files_quanta_and_chain_links_only_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let repo = merged_campaign(dir.path(), 2, 2);
    let root = repo.join("datastore");
    let before = files(&root);
    assert!(
        before.iter().any(|f| f.starts_with("u/test/run/")),
        "{before:?}"
    );

    // Named by the CHAINED output: refused, nothing changes.
    let err = fails_with(2, &["remove-runs", s(&repo), RUN]);
    assert!(err.contains(CHAIN) && err.contains("--force"), "{err}");
    assert_eq!(files(&root), before);
    // Not a RUN, or unknown: refused.
    let err = fails_with(2, &["remove-runs", s(&repo), CHAIN]);
    assert!(err.contains("CHAINED") && err.contains("RUN"), "{err}");
    let err = fails_with(2, &["remove-runs", s(&repo), "no/such/run"]);
    assert!(err.contains("no/such/run"), "{err}");

    let out = ok(&["remove-runs", s(&repo), RUN, "--force", "--json"]);
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["runs"], serde_json::json!([RUN]));
    // 2×2 postISRCCD + icExp, 2 expSummary.
    assert_eq!(summary["datasets_removed"], 10);
    assert_eq!(summary["files_removed"], 10);
    assert_eq!(summary["quanta_removed"], 10);
    let after = files(&root);
    assert!(after.iter().all(|f| f.starts_with("Cam/raw/")), "{after:?}");
    assert_eq!(after.len(), 4);
    assert!(!root.join("u").exists(), "emptied directories are removed");
    assert_eq!(count(&repo, "SELECT count(*) FROM quantum"), 0);
    assert_eq!(count(&repo, "SELECT count(*) FROM quantum_input"), 0);
    assert_eq!(count(&repo, "SELECT count(*) FROM run_provenance"), 0);
    // The chain keeps its other child.
    let chain = json(&["collection", "list", s(&repo), "--json"]);
    let out = chain
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == CHAIN)
        .unwrap();
    assert_eq!(out["children"], serde_json::json!(["Cam/raw"]));
    assert_eq!(
        count(
            &repo,
            "SELECT count(*) FROM collection WHERE name = 'u/test/run'"
        ),
        0
    );
    // The raws no quantum names any more leave nothing behind either.
    assert_eq!(count(&repo, "SELECT count(*) FROM removed_dataset"), 0);
    check_clean(&repo);
    // Removing it again: it is gone.
    fails_with(2, &["remove-runs", s(&repo), RUN]);
}

#[test]
fn provenance_names_removed_inputs_by_uuid_type_data_id_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let repo = merged_campaign(dir.path(), 1, 2);
    let summary = dataset_ids(&repo, CHAIN, "expSummary");
    let raws = dataset_ids(&repo, "Cam/raw", "raw");
    assert_eq!((summary.len(), raws.len()), (1, 2));

    ok(&["remove-runs", s(&repo), "Cam/raw", "--force"]);
    check_clean(&repo);
    assert_eq!(count(&repo, "SELECT count(*) FROM removed_dataset"), 2);
    let graph = json(&["provenance", s(&repo), &summary[0], "--json"]);
    let removed: Vec<&Value> = graph["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["removed"] == true)
        .collect();
    assert_eq!(removed.len(), 2, "{graph}");
    for d in &removed {
        assert!(raws.contains(&d["id"].as_str().unwrap().to_string()));
        assert_eq!(d["dataset_type"], "raw");
        assert_eq!(d["run"], "Cam/raw");
        assert_eq!(d["data_id"]["instrument"], "Cam");
    }
    let text = ok(&["provenance", s(&repo), &summary[0]]);
    assert!(
        text.contains("in Cam/raw") && text.contains("(removed)"),
        "{text}"
    );
    // A removed dataset is a provenance root too, downstream to what used it.
    let down = json(&["provenance", s(&repo), &raws[0], "--downstream", "--json"]);
    assert_eq!(down["datasets"][0]["removed"], true, "{down}");
    assert!(down["quanta"].as_array().unwrap().len() >= 3, "{down}");

    // Removing the outputs' RUN too leaves nothing provenance names.
    ok(&["remove-runs", s(&repo), RUN, "--force"]);
    assert_eq!(count(&repo, "SELECT count(*) FROM removed_dataset"), 0);
    fails_with(2, &["provenance", s(&repo), &raws[0]]);
    check_clean(&repo);
}

#[test]
fn prune_datasets_unstores_or_purges_what_the_query_finds() {
    let dir = tempfile::tempdir().unwrap();
    let repo = merged_campaign(dir.path(), 2, 2);
    let root = repo.join("datastore");
    // Bad input: no mode, both modes, an unknown collection or type, a bad --where.
    let base = ["prune-datasets", s(&repo), "--collections", CHAIN];
    fails_with(2, &base);
    fails_with(2, &[&base[..], &["--unstore", "--purge"]].concat());
    let err = fails_with(
        2,
        &[
            "prune-datasets",
            s(&repo),
            "--collections",
            "nope",
            "--purge",
        ],
    );
    assert!(err.contains("nope"), "{err}");
    fails_with(
        2,
        &[&base[..], &["--dataset-type", "nope", "--purge"]].concat(),
    );
    fails_with(
        2,
        &[&base[..], &["--where", "exposure ==", "--purge"]].concat(),
    );

    // Unstore icExp of exposure 0: files go, rows stay without a record.
    let out = ok(&[
        &base[..],
        &[
            "--dataset-type",
            "icExp",
            "--where",
            "exposure = 0",
            "--unstore",
        ],
    ]
    .concat());
    assert!(
        out.contains("2 datasets matched") && out.contains("2 unstored"),
        "{out}"
    );
    assert_eq!(
        count(&repo, "SELECT count(*) FROM dataset d JOIN dataset_type t ON t.id = d.dataset_type_id WHERE t.name = 'icExp' AND d.path IS NULL"),
        2
    );
    assert_eq!(dataset_ids(&repo, CHAIN, "icExp").len(), 4);
    check_clean(&repo);
    // Again: they have no files left to remove.
    let out = ok(&[
        &base[..],
        &[
            "--dataset-type",
            "icExp",
            "--where",
            "exposure = 0",
            "--unstore",
        ],
    ]
    .concat());
    assert!(out.contains("0 files removed"), "{out}");

    // Purge every postISRCCD: rows and files go; provenance keeps them.
    let n_files = files(&root).len();
    let out = ok(&[&base[..], &["--dataset-type", "postISRCCD", "--purge"]].concat());
    assert!(
        out.contains("4 datasets removed") && out.contains("4 files removed"),
        "{out}"
    );
    assert_eq!(files(&root).len(), n_files - 4);
    assert!(dataset_ids(&repo, CHAIN, "postISRCCD").is_empty());
    // Made by isr and read by characterize: remembered for provenance.
    assert_eq!(count(&repo, "SELECT count(*) FROM removed_dataset"), 4);
    check_clean(&repo);
    let out = ok(&[&base[..], &["--dataset-type", "postISRCCD", "--purge"]].concat());
    assert!(out.contains("0 datasets matched"), "{out}");
}

#[test]
fn collections_tags_and_calibrations_are_removed_without_touching_datasets() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 2, 2);
    let r = s(&repo);
    let raws = dataset_ids(&repo, "Cam/raw", "raw");
    ok(&["collection", "create", r, "tagged", "--type", "TAGGED"]);
    ok(&[
        &["collection", "tag", r, "tagged"][..],
        &raws.iter().map(String::as_str).collect::<Vec<_>>(),
    ]
    .concat());
    ok(&["collection", "chain", r, "chain", "tagged", "Cam/raw"]);

    // untag with --where: only exposure 1's.
    let out = ok(&[
        "collection",
        "untag",
        r,
        "tagged",
        "--dataset-type",
        "raw",
        "--where",
        "exposure = 1",
    ]);
    assert!(out.contains("untagged 2"), "{out}");
    assert_eq!(dataset_ids(&repo, "tagged", "raw").len(), 2);
    let err = fails_with(
        2,
        &["collection", "untag", r, "Cam/raw", "--dataset-type", "raw"],
    );
    assert!(err.contains("TAGGED"), "{err}");

    // A chained child needs --force, which edits the chain.
    let err = fails_with(2, &["collection", "remove", r, "tagged"]);
    assert!(err.contains("chain") && err.contains("--force"), "{err}");
    ok(&["collection", "remove", r, "tagged", "--force"]);
    assert_eq!(count(&repo, "SELECT count(*) FROM dataset_tags"), 0);
    assert_eq!(count(&repo, "SELECT count(*) FROM collection_chain"), 1);
    assert_eq!(dataset_ids(&repo, "Cam/raw", "raw").len(), 4);
    ok(&["collection", "remove", r, "chain"]);
    assert_eq!(count(&repo, "SELECT count(*) FROM collection_chain"), 0);
    fails_with(2, &["collection", "remove", r, "chain"]);

    // A RUN goes with its datasets and files.
    let out = ok(&["collection", "remove", r, "Cam/raw"]);
    assert!(out.contains("4 datasets removed"), "{out}");
    assert!(files(&repo.join("datastore")).is_empty());

    // A dataset type goes only once it has no datasets.
    ok(&["collection", "create", r, "again"]);
    let src = dir.path().join("raw_files/raw_0_0.json");
    ok(&[
        "ingest",
        r,
        "--run",
        "again",
        "--dataset-type",
        "raw",
        "--data-id",
        "instrument=Cam,exposure=0,detector=0",
        s(&src),
    ]);
    let err = fails_with(2, &["dataset-type", "remove", r, "raw"]);
    assert!(err.contains("1 datasets") && err.contains("again"), "{err}");
    ok(&["remove-runs", r, "again"]);
    ok(&["dataset-type", "remove", r, "raw"]);
    fails_with(2, &["dataset-type", "remove", r, "raw"]);
    check_clean(&repo);
}

#[test]
fn decertify_cuts_validity_ranges_and_keeps_the_parts_outside() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 1, 2);
    let r = s(&repo);
    ok(&[
        "dataset-type",
        "register",
        r,
        "bias",
        "--dimensions",
        "instrument,detector",
        "--storage-class",
        "Json",
        "--calibration",
    ]);
    ok(&["collection", "create", r, "calib/run"]);
    ok(&["collection", "create", r, "calib", "--type", "CALIBRATION"]);
    let mut ids = Vec::new();
    for det in 0..2 {
        let file = dir.path().join(format!("bias{det}.json"));
        std::fs::write(&file, format!("{{\"det\": {det}}}")).unwrap();
        ok(&[
            "ingest",
            r,
            "--run",
            "calib/run",
            "--dataset-type",
            "bias",
            "--data-id",
            &format!("instrument=Cam,detector={det}"),
            s(&file),
        ]);
    }
    for d in dataset_ids(&repo, "calib/run", "bias") {
        ids.push(d);
    }
    let certify = |b: &str, e: &str, id: &str| {
        ok(&[
            "collection",
            "certify",
            r,
            "calib",
            "--begin",
            b,
            "--end",
            e,
            id,
        ]);
    };
    certify("0", "100", &ids[0]);
    certify("100", "200", &ids[0]);
    certify("0", "100", &ids[1]);
    let ranges = || -> Vec<(String, f64, f64)> {
        json(&["sql", r, "SELECT data_id, valid_begin, valid_end FROM dataset_calibs ORDER BY data_id, valid_begin", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                (
                    row["data_id"].as_str().unwrap().to_string(),
                    row["valid_begin"].as_f64().unwrap(),
                    row["valid_end"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    // [50, 150) for detector 0 only: both its ranges are cut.
    let out = ok(&[
        "collection",
        "decertify",
        r,
        "calib",
        "--dataset-type",
        "bias",
        "--begin",
        "50",
        "--end",
        "150",
        "--data-id",
        "instrument=Cam,detector=0",
    ]);
    assert!(
        out.contains("decertified 2") && out.contains("2 parts"),
        "{out}"
    );
    let det0 = r#"["Cam",0]"#;
    let det1 = r#"["Cam",1]"#;
    assert_eq!(
        ranges(),
        vec![
            (det0.to_string(), 0.0, 50.0),
            (det0.to_string(), 150.0, 200.0),
            (det1.to_string(), 0.0, 100.0)
        ]
    );
    // A range wholly inside goes; no --data-id means every data ID.
    ok(&[
        "collection",
        "decertify",
        r,
        "calib",
        "--dataset-type",
        "bias",
        "--begin",
        "-10",
        "--end",
        "60",
    ]);
    assert_eq!(
        ranges(),
        vec![
            (det0.to_string(), 150.0, 200.0),
            (det1.to_string(), 60.0, 100.0)
        ]
    );
    // The datasets themselves stay.
    assert_eq!(dataset_ids(&repo, "calib/run", "bias").len(), 2);
    // Bad input.
    fails_with(
        2,
        &[
            "collection",
            "decertify",
            r,
            "calib",
            "--dataset-type",
            "bias",
            "--begin",
            "5",
            "--end",
            "5",
        ],
    );
    fails_with(
        2,
        &[
            "collection",
            "decertify",
            r,
            "calib/run",
            "--dataset-type",
            "bias",
        ],
    );
    fails_with(
        2,
        &[
            "collection",
            "decertify",
            r,
            "calib",
            "--dataset-type",
            "bias",
            "--data-id",
            "instrument=Cam",
        ],
    );
    // Removing the CALIBRATION collection keeps the datasets.
    ok(&["collection", "remove", r, "calib"]);
    assert_eq!(count(&repo, "SELECT count(*) FROM dataset_calibs"), 0);
    assert_eq!(dataset_ids(&repo, "calib/run", "bias").len(), 2);
}

#[test]
fn repo_check_finds_missing_altered_and_orphaned_files_and_repairs_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 2, 2);
    let r = s(&repo);
    let root = repo.join("datastore");
    check_clean(&repo);
    let stored = files(&root);
    assert_eq!(stored.len(), 4);
    // Bookkeeping is not an orphan.
    std::fs::create_dir_all(root.join(".quarantine/x")).unwrap();
    std::fs::write(root.join(".quarantine/x/f"), "aside").unwrap();
    let dir0 = root.join(&stored[0]).parent().unwrap().to_path_buf();
    std::fs::write(dir0.join(".tmp-0123456789abcdef-ingest"), "in flight").unwrap();
    std::fs::create_dir_all(root.join("b.qb.journals/holders")).unwrap();
    std::fs::write(root.join("b.qb.journals/execution.lock"), "").unwrap();
    check_clean(&repo);

    // Same size, other bytes: only a full check sees it.
    let altered = root.join(&stored[0]);
    let mut bytes = std::fs::read(&altered).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&altered, &bytes).unwrap();
    std::fs::write(root.join(&stored[1]), "short").unwrap();
    std::fs::remove_file(root.join(&stored[2])).unwrap();
    std::fs::write(root.join("Cam/orphan.json"), "{}").unwrap();

    let out = run(&["repo", "check", r]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{}: BLAKE3", stored[0])), "{text}");
    assert!(text.contains(&format!("{}: 5 bytes", stored[1])), "{text}");
    assert!(text.contains(&format!("{}: missing", stored[2])), "{text}");
    assert!(text.contains("orphan file Cam/orphan.json"), "{text}");
    assert!(text.contains("4 problems found"), "{text}");

    let fast = run(&["repo", "check", r, "--fast", "--json"]);
    assert_eq!(fast.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&fast.stdout).unwrap();
    assert_eq!(report["bad_files"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(report["orphans"], serde_json::json!(["Cam/orphan.json"]));

    // Repair moves the orphan aside; registered files it cannot mend.
    let out = run(&["repo", "check", r, "--repair"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(root
        .join(".quarantine/repo-check/Cam/orphan.json")
        .is_file());
    assert!(!root.join("Cam/orphan.json").exists());
    let text = String::from_utf8_lossy(&run(&["repo", "check", r]).stdout).into_owned();
    assert!(
        text.contains("3 problems found") && !text.contains("orphan"),
        "{text}"
    );

    // Once the damaged datasets are pruned, everything agrees again.
    ok(&["prune-datasets", r, "--collections", "Cam/raw", "--purge"]);
    check_clean(&repo);
    // Not a repo.
    fails_with(2, &["repo", "check", s(dir.path())]);
}
