//! `quanta run` and `quanta worker` end to end: the reference workload
//! through preflight, execution and merge, read back through the Butler;
//! a crash (kill -9) and resume; exit codes.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{fails_with, make_reference_repo, ok, quanta};
use quanta_core::{
    journal_dir_for, list_journals, read_journal, Bundle, JournalRecord, QuantumStatus,
};
use quanta_examples::reference::{build_reference_bundle, summarize_index, ReferenceOptions};

const PIPELINE: &str = r#"
description: scatter/gather reference workload
tasks:
  isr:
    class: examples.Isr
    dimensions: [instrument, exposure, detector]
    inputs:
      raw: {dataset_type: raw, dimensions: [instrument, exposure, detector], storage_class: Json}
    outputs:
      post: {dataset_type: postISRCCD, dimensions: [instrument, exposure, detector], storage_class: Json}
  characterize:
    CHARACTERIZE
    dimensions: [instrument, exposure, detector]
    inputs:
      post: {dataset_type: postISRCCD, dimensions: [instrument, exposure, detector], storage_class: Json}
    outputs:
      icexp: {dataset_type: icExp, dimensions: [instrument, exposure, detector], storage_class: Json}
  summarize:
    class: examples.Summarize
    dimensions: [instrument, exposure]
    inputs:
      icexps: {dataset_type: icExp, dimensions: [instrument, exposure, detector], storage_class: Json, multiple: true}
    outputs:
      summary: {dataset_type: expSummary, dimensions: [instrument, exposure], storage_class: Json}
"#;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Repo → preflight → bundle, with characterize given by `characterize`
/// (a `class:` or `command:` line).
fn preflight(dir: &Path, n_exp: usize, n_det: usize, characterize: &str) -> (PathBuf, PathBuf) {
    let repo = make_reference_repo(dir, n_exp, n_det);
    let pipeline = dir.join("pipeline.yaml");
    std::fs::write(&pipeline, PIPELINE.replace("CHARACTERIZE", characterize)).unwrap();
    let bundle = dir.join("run.qb");
    ok(&[
        "preflight",
        s(&repo),
        "--pipeline",
        s(&pipeline),
        "--input",
        "Cam/raw",
        "--output-run",
        "u/test/run",
        "--bundle",
        s(&bundle),
    ]);
    (repo, bundle)
}

fn get(repo: &Path, dataset_type: &str, data_id: &str) -> String {
    ok(&[
        "get",
        s(repo),
        dataset_type,
        "--data-id",
        data_id,
        "--collections",
        "u/test/run",
    ])
}

#[test]
fn reference_workload_runs_with_two_jobs_and_reads_back_exact_values() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, bundle) = preflight(dir.path(), 10, 10, "class: examples.Characterize");
    let out = quanta()
        .args(["run", s(&bundle), "--jobs", "2"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("210 quanta: 210 succeeded"), "{err}");
    ok(&["merge", s(&repo), s(&bundle)]);
    let v: serde_json::Value =
        serde_json::from_str(&get(&repo, "expSummary", "instrument=Cam,exposure=3")).unwrap();
    let psf: Vec<f64> = (0..10).map(|d| (3000 + d) as f64 - 1.0).collect();
    assert_eq!(v, serde_json::json!({"n": 10, "psf": psf}));
    let v: serde_json::Value =
        serde_json::from_str(&get(&repo, "icExp", "instrument=Cam,exposure=7,detector=4")).unwrap();
    assert_eq!(v["psf"], serde_json::json!(7003.0));
    assert_eq!(v["pixels"], serde_json::json!(vec![7003; 16]));
    // A second run finds everything done.
    let err = fails_with(0, &["run", s(&bundle)]);
    assert!(err.contains("210 already done"), "{err}");
}

#[test]
fn external_command_characterize_gives_identical_outputs() {
    if !std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("python3 not found; skipping");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/scripts/characterize.py");
    let dir = tempfile::tempdir().unwrap();
    let (da, dc) = (dir.path().join("a"), dir.path().join("c"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&dc).unwrap();
    let (ra, ba) = preflight(&da, 3, 4, "class: examples.Characterize");
    let cmd = format!("command: [python3, {:?}, \"{{manifest}}\"]", s(&script));
    let (rc, bc) = preflight(&dc, 3, 4, &cmd);
    ok(&["run", s(&ba), "--jobs", "2"]);
    ok(&["run", s(&bc), "--jobs", "2"]);
    ok(&["merge", s(&ra), s(&ba)]);
    ok(&["merge", s(&rc), s(&bc)]);
    for e in 0..3 {
        for d in 0..4 {
            let id = format!("instrument=Cam,exposure={e},detector={d}");
            assert_eq!(get(&ra, "icExp", &id), get(&rc, "icExp", &id));
        }
        let id = format!("instrument=Cam,exposure={e}");
        assert_eq!(get(&ra, "expSummary", &id), get(&rc, "expSummary", &id));
    }
}

fn journal_records(bundle: &Path) -> Vec<JournalRecord> {
    list_journals(&journal_dir_for(bundle))
        .unwrap()
        .iter()
        .filter_map(|p| read_journal(p).ok())
        .flat_map(|c| c.records)
        .collect()
}

#[test]
fn killed_run_resumes_without_rerunning_finished_quanta() {
    let dir = tempfile::tempdir().unwrap();
    let o = ReferenceOptions {
        exposures: 3,
        detectors: 4,
        isr_config: serde_json::json!({"sleep_ms": 40}),
        characterize_config: serde_json::json!({"sleep_ms": 40}),
        ..Default::default()
    };
    let rb = build_reference_bundle(dir.path(), &o).unwrap();
    let mut child = quanta()
        .args(["run", s(&rb.bundle), "--jobs", "1"])
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let done = journal_records(&rb.bundle)
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    JournalRecord::Finished {
                        status: QuantumStatus::Succeeded,
                        ..
                    }
                )
            })
            .count();
        if done >= 6 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the run made no progress"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = journal_records(&rb.bundle);
    let succeeded_before: Vec<u32> = before
        .iter()
        .filter_map(|r| match r {
            JournalRecord::Finished {
                quantum,
                status: QuantumStatus::Succeeded,
                ..
            } => Some(*quantum),
            _ => None,
        })
        .collect();
    assert!(
        succeeded_before.len() < 3 * 4 * 2 + 3,
        "killed too late to test anything"
    );

    let out = quanta()
        .args(["run", s(&rb.bundle), "--jobs", "2"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = journal_records(&rb.bundle);
    let mut succeeded: HashMap<u32, usize> = HashMap::new();
    let mut started: HashMap<u32, usize> = HashMap::new();
    for r in &after {
        match r {
            JournalRecord::Finished {
                quantum,
                status: QuantumStatus::Succeeded,
                ..
            } => *succeeded.entry(*quantum).or_default() += 1,
            JournalRecord::Started { quantum, .. } => *started.entry(*quantum).or_default() += 1,
            _ => {}
        }
    }
    assert_eq!(succeeded.len(), 3 * 4 * 2 + 3);
    assert!(
        succeeded.values().all(|&n| n == 1),
        "a quantum succeeded twice: {succeeded:?}"
    );
    for q in &succeeded_before {
        assert_eq!(
            started[q], 1,
            "quantum {q} finished before the kill but ran again"
        );
    }
    // Every output is there once, with the right content.
    let b = Bundle::open(&rb.bundle).unwrap();
    for q in b.quanta() {
        let q = q.unwrap();
        for r in q.outputs.iter().flat_map(|(_, r)| r) {
            assert!(
                rb.datastore_root.join(&r.path).is_file(),
                "{} missing",
                r.path
            );
        }
    }
    let sq = b.quantum(summarize_index(&o, 2)).unwrap();
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(rb.datastore_root.join(&sq.outputs[0].1[0].path)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        v,
        serde_json::json!({"n": 4, "psf": [1999.0, 2000.0, 2001.0, 2002.0]})
    );
}

#[test]
fn worker_runs_a_cluster_or_a_list_and_reports_failures_by_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let o = ReferenceOptions {
        exposures: 2,
        detectors: 2,
        characterize_config: serde_json::json!({"fail_on": {"exposure": 1, "detector": 0}}),
        ..Default::default()
    };
    let rb = build_reference_bundle(dir.path(), &o).unwrap();
    let b = s(&rb.bundle);
    ok(&["worker", b, "--cluster", "exposure_0"]);
    let err = fails_with(1, &["worker", b, "--quanta", "2-3,6,7,9", "--retries", "1"]);
    assert!(err.contains("configured to fail"), "{err}");
    assert!(err.contains("Blocked"), "{err}");
    let journals = list_journals(&journal_dir_for(&rb.bundle)).unwrap();
    assert_eq!(journals.len(), 2);
    assert!(journals.iter().any(|p| p
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("exposure_0-")));
    // Bad input: exit 2.
    fails_with(2, &["worker", b, "--cluster", "nope"]);
    fails_with(2, &["worker", b, "--quanta", "5-2"]);
    fails_with(2, &["worker", b, "--quanta", "99"]);
    fails_with(2, &["run", s(&dir.path().join("missing.qb"))]);
    std::fs::write(dir.path().join("junk.qb"), b"not a bundle at all").unwrap();
    fails_with(2, &["run", s(&dir.path().join("junk.qb"))]);
}
