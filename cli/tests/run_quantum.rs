//! `quanta run-quantum`: the reference workload's tasks run through the
//! `LimitedButler` trait against a bundle (`quanta run`) and against the
//! full repository (`quanta run-quantum`, one quantum at a time) write the
//! same outputs; one quantum's output is registered with its provenance;
//! bad input exits 2.

mod common;

use std::path::{Path, PathBuf};

use common::{fails_with, make_reference_repo, ok, registry_strings};
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp paths")
}

fn pipeline() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipelines/reference.yaml")
}

const N_EXP: usize = 2;
const N_DET: usize = 2;

/// (dataset type, data ID, BLAKE3 of the file) of every output dataset.
fn outputs(repo: &Path) -> Vec<String> {
    registry_strings(
        repo,
        "SELECT t.name, d.data_id, d.checksum FROM dataset d \
         JOIN dataset_type t ON t.id = d.dataset_type_id WHERE t.name <> 'raw'",
    )
}

fn run_quantum(repo: &Path, task: &str, data_id: &str, input: &str, run: &str) -> String {
    ok(&[
        "run-quantum",
        s(repo),
        "--pipeline",
        s(&pipeline()),
        "--task",
        task,
        "--data-id",
        data_id,
        "--input",
        input,
        "--output-run",
        run,
    ])
}

#[test]
fn the_reference_tasks_write_the_same_outputs_against_a_bundle_and_a_repository() {
    let dir = tempfile::tempdir().unwrap();
    // Through a bundle: preflight, run, merge.
    let bundled = dir.path().join("bundled");
    std::fs::create_dir_all(&bundled).unwrap();
    let repo_a = make_reference_repo(&bundled, N_EXP, N_DET);
    let bundle = bundled.join("campaign.qb");
    ok(&[
        "preflight",
        s(&repo_a),
        "--pipeline",
        s(&pipeline()),
        "--input",
        "Cam/raw",
        "--output-run",
        "u/a/run",
        "--bundle",
        s(&bundle),
    ]);
    ok(&["run", s(&bundle), "--jobs", "2"]);
    ok(&["merge", s(&repo_a), s(&bundle)]);

    // Against the repository, one quantum at a time, each task's outputs
    // in a RUN the next task reads.
    let direct = dir.path().join("direct");
    std::fs::create_dir_all(&direct).unwrap();
    let repo_b = make_reference_repo(&direct, N_EXP, N_DET);
    for e in 0..N_EXP {
        for d in 0..N_DET {
            let id = format!("instrument=Cam,exposure={e},detector={d}");
            run_quantum(&repo_b, "isr", &id, "Cam/raw", "u/b/isr");
            run_quantum(&repo_b, "characterize", &id, "u/b/isr", "u/b/char");
        }
        let id = format!("instrument=Cam,exposure={e}");
        run_quantum(&repo_b, "summarize", &id, "u/b/char", "u/b/sum");
    }
    let a = outputs(&repo_a);
    assert_eq!(a.len(), N_EXP * N_DET * 2 + N_EXP, "{a:?}");
    assert_eq!(a, outputs(&repo_b));
}

#[test]
fn run_quantum_registers_its_output_with_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), N_EXP, N_DET);
    let out = run_quantum(
        &repo,
        "isr",
        "instrument=Cam,exposure=1,detector=0",
        "Cam/raw",
        "u/debug/isr",
    );
    assert!(out.contains("succeeded"), "{out}");
    let found: Value = serde_json::from_str(&ok(&[
        "query-datasets",
        s(&repo),
        "--collections",
        "u/debug/isr",
        "--dataset-type",
        "postISRCCD",
        "--json",
    ]))
    .unwrap();
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["data_id"]["exposure"], 1);
    assert_eq!(found[0]["data_id"]["detector"], 0);
    let id = found[0]["id"].as_str().unwrap();
    let graph: Value = serde_json::from_str(&ok(&["provenance", s(&repo), id, "--json"])).unwrap();
    let quanta = graph["quanta"].as_array().unwrap();
    assert_eq!(quanta.len(), 1, "{graph}");
    assert_eq!(quanta[0]["task_label"], "isr");
    assert_eq!(quanta[0]["status"], "succeeded");
    let inputs = quanta[0]["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 1, "{graph}");

    // The same quantum again: its output is already in the RUN.
    let err = fails_with(
        2,
        &[
            "run-quantum",
            s(&repo),
            "--pipeline",
            s(&pipeline()),
            "--task",
            "isr",
            "--data-id",
            "instrument=Cam,exposure=1,detector=0",
            "--input",
            "Cam/raw",
            "--output-run",
            "u/debug/isr",
        ],
    );
    assert!(!err.is_empty());
}

#[test]
fn an_unknown_task_or_a_data_id_without_a_quantum_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 1, 1);
    let args = |task: &'static str, data_id: &'static str| {
        [
            "run-quantum".to_string(),
            s(&repo).to_string(),
            "--pipeline".into(),
            s(&pipeline()).to_string(),
            "--task".into(),
            task.into(),
            "--data-id".into(),
            data_id.into(),
            "--input".into(),
            "Cam/raw".into(),
            "--output-run".into(),
            "u/debug/run".into(),
        ]
    };
    fn call(a: &[String; 12]) -> Vec<&str> {
        a.iter().map(String::as_str).collect()
    }
    let err = fails_with(
        2,
        &call(&args("nope", "instrument=Cam,exposure=0,detector=0")),
    );
    assert!(
        err.contains("--task `nope`") && err.contains("isr"),
        "{err}"
    );
    let err = fails_with(
        2,
        &call(&args("isr", "instrument=Cam,exposure=99,detector=0")),
    );
    assert!(
        err.contains("task `isr` at --data-id instrument=Cam,exposure=99")
            && err.contains("no data IDs"),
        "{err}"
    );
    let err = fails_with(2, &call(&args("isr", "exposure")));
    assert!(err.contains("expected dimension=value"), "{err}");
}

/// Killed with SIGKILL while writing its output file, after linking it,
/// after its journal record or at a registry commit, `run-quantum` run
/// again ends as an uninterrupted run: the same outputs (type, data ID,
/// checksum), one recorded quantum, and `repo check` clean. A rerun whose
/// killed run had already committed is refused as an output already there
/// (exit 2), having changed nothing.
#[test]
fn a_killed_run_quantum_reruns_to_the_uninterrupted_state() {
    use std::os::unix::process::ExitStatusExt;
    let args = |repo: &Path| -> Vec<String> {
        [
            "run-quantum",
            s(repo),
            "--pipeline",
            s(&pipeline()),
            "--task",
            "isr",
            "--data-id",
            "instrument=Cam,exposure=1,detector=0",
            "--input",
            "Cam/raw",
            "--output-run",
            "u/debug/isr",
        ]
        .map(String::from)
        .to_vec()
    };
    let dir = tempfile::tempdir().unwrap();
    let reference = make_reference_repo(&dir.path().join("reference"), 1 + 1, 1);
    let log = dir.path().join("kill-log");
    let uninterrupted = common::quanta()
        .args(args(&reference))
        .env("QUANTA_TEST_KILL_LOG", &log)
        .output()
        .unwrap();
    assert!(
        uninterrupted.status.success(),
        "{}",
        common::show(&uninterrupted)
    );
    let want = outputs(&reference);
    assert_eq!(want.len(), 1, "{want:?}");
    let quanta = |repo: &Path| registry_strings(repo, "SELECT task_label, status FROM quantum");
    // Every registry commit the uninterrupted run passed (SQLite's hook
    // sees the statements that commit on their own, PostgreSQL's the
    // transactions): at least the one registering the output.
    let commits = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| *l == "registry.commit")
        .count();
    assert!(commits >= 1, "no registry commit passed");
    let points: Vec<String> = [
        "datastore.temp_written:1",
        "datastore.linked:1",
        "journal.appended:1",
    ]
    .map(String::from)
    .into_iter()
    .chain((1..=commits.min(2)).map(|n| format!("registry.commit:{n}")))
    .collect();
    for (i, at) in points.iter().enumerate() {
        let repo = make_reference_repo(&dir.path().join(format!("killed-{i}")), 1 + 1, 1);
        let killed = common::quanta()
            .args(args(&repo))
            .env("QUANTA_TEST_KILL_AT", at)
            .output()
            .unwrap();
        assert_eq!(
            killed.status.signal(),
            Some(libc::SIGKILL),
            "{at}: {}",
            String::from_utf8_lossy(&killed.stderr)
        );
        let rerun = common::quanta().args(args(&repo)).output().unwrap();
        let stderr = String::from_utf8_lossy(&rerun.stderr);
        match rerun.status.code() {
            Some(0) => {}
            Some(2) => assert!(stderr.contains("already"), "{at}: {stderr}"),
            other => panic!("{at}: rerun exited {other:?}: {stderr}"),
        }
        assert_eq!(outputs(&repo), want, "{at}");
        assert_eq!(quanta(&repo), quanta(&reference), "{at}");
        ok(&["repo", "check", s(&repo)]);
    }
}
