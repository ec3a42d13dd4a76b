//! The reference workload executed in process through `quanta-runtime`:
//! exact values, failures with retries and blocking, the overwrite rule,
//! resume, and the external-command task kind.

use std::collections::HashMap;
use std::path::Path;

use quanta_core::{
    journal_dir_for, list_journals, read_journal, Bundle, JournalRecord, QuantumStatus,
};
use quanta_examples::reference::{
    build_reference_bundle, characterize_index, summarize_index, CharacterizeKind, ReferenceOptions,
};
use quanta_examples::task_registry;
use quanta_limited_registry::LimitedRegistry;
use quanta_runtime::{execute, ExecOptions, RunSummary, RuntimeError, Selection};
use serde_json::{json, Value};

fn run(bundle: &Path, sel: Selection, opts: &ExecOptions) -> Result<RunSummary, RuntimeError> {
    let reg = LimitedRegistry::open(bundle).unwrap();
    execute(reg, &task_registry(), &sel, opts, &mut |_| {})
}

fn output(bundle: &Path, index: u32) -> (Value, Vec<u8>) {
    let b = Bundle::open(bundle).unwrap();
    let q = b.quantum(index).unwrap();
    let p = Path::new(&b.header().datastore_root).join(&q.outputs[0].1[0].path);
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (serde_json::from_slice(&bytes).unwrap(), bytes)
}

fn records(bundle: &Path) -> Vec<JournalRecord> {
    list_journals(&journal_dir_for(bundle))
        .unwrap()
        .iter()
        .flat_map(|p| read_journal(p).unwrap().records)
        .collect()
}

fn starts_per_quantum(bundle: &Path) -> HashMap<u32, usize> {
    let mut m = HashMap::new();
    for r in records(bundle) {
        if let JournalRecord::Started { quantum, .. } = r {
            *m.entry(quantum).or_default() += 1;
        }
    }
    m
}

fn expected_summary(e: usize, n_det: usize) -> Value {
    json!({"n": n_det, "psf": (0..n_det).map(|d| (e * 1000 + d) as f64 - 1.0).collect::<Vec<_>>()})
}

#[test]
fn reference_values_with_two_jobs_and_resume_skips_everything() {
    let dir = tempfile::tempdir().unwrap();
    let o = ReferenceOptions {
        exposures: 4,
        detectors: 5,
        ..Default::default()
    };
    let rb = build_reference_bundle(dir.path(), &o).unwrap();
    let s = run(
        &rb.bundle,
        Selection::All,
        &ExecOptions {
            jobs: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(s.all_succeeded(), "{s:?}");
    assert_eq!(s.progress.succeeded, 4 * 5 * 2 + 4);
    for e in 0..4 {
        assert_eq!(
            output(&rb.bundle, summarize_index(&o, e)).0,
            expected_summary(e, 5)
        );
    }
    let (ic, _) = output(&rb.bundle, characterize_index(&o, 3, 2));
    assert_eq!(
        ic,
        json!({"exposure": 3, "detector": 2, "isr": true, "pixels": vec![3001; 16], "psf": 3001.0})
    );
    // Provenance of a finished quantum.
    let fin = records(&rb.bundle).into_iter().find_map(|r| match r {
        JournalRecord::Finished {
            quantum,
            status,
            outputs,
            inputs_used,
            log_tail,
            ..
        } if quantum == summarize_index(&o, 1) => Some((status, outputs, inputs_used, log_tail)),
        _ => None,
    });
    let (status, outputs, inputs, log) = fin.unwrap();
    assert_eq!(status, QuantumStatus::Succeeded);
    assert_eq!(inputs.len(), 5);
    assert_eq!(outputs.len(), 1);
    let bytes = output(&rb.bundle, summarize_index(&o, 1)).1;
    assert_eq!(outputs[0].size, bytes.len() as u64);
    assert_eq!(
        outputs[0].checksum,
        blake3::hash(&bytes).to_hex().to_string()
    );
    assert!(
        log.iter().any(|l| l.contains("summarizing 5 icExp")),
        "{log:?}"
    );

    // Rerun: nothing to do, no new journal.
    let s = run(&rb.bundle, Selection::All, &ExecOptions::default()).unwrap();
    assert_eq!((s.progress.skipped, s.progress.succeeded), (44, 0));
    assert!(s.journal.is_none());
    assert!(starts_per_quantum(&rb.bundle).values().all(|&n| n == 1));
}

#[test]
fn a_failing_quantum_is_retried_then_blocks_its_downstream() {
    let dir = tempfile::tempdir().unwrap();
    let o = ReferenceOptions {
        exposures: 3,
        detectors: 3,
        characterize_config: json!({"fail_on": {"exposure": 1, "detector": 2}}),
        ..Default::default()
    };
    let rb = build_reference_bundle(dir.path(), &o).unwrap();
    let s = run(
        &rb.bundle,
        Selection::All,
        &ExecOptions {
            jobs: 2,
            retries: 1,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!s.all_succeeded());
    assert_eq!(
        (s.progress.succeeded, s.progress.failed, s.progress.blocked),
        (3 * 3 * 2 - 1 + 2, 1, 1)
    );
    let bad = characterize_index(&o, 1, 2);
    assert_eq!(starts_per_quantum(&rb.bundle)[&bad], 2);
    let recs = records(&rb.bundle);
    let fails: Vec<_> = recs
        .iter()
        .filter_map(|r| match r {
            JournalRecord::Finished {
                quantum,
                status,
                error,
                attempt,
                ..
            } if *quantum == bad => Some((*attempt, *status, error.clone().unwrap_or_default())),
            _ => None,
        })
        .collect();
    assert_eq!(fails.len(), 2);
    assert_eq!((fails[0].0, fails[1].0), (1, 2));
    assert!(
        fails
            .iter()
            .all(|(_, s, e)| *s == QuantumStatus::Failed && e.contains("fail_on")),
        "{fails:?}"
    );
    let blocked = recs
        .iter()
        .find_map(|r| match r {
            JournalRecord::Finished {
                quantum,
                status: QuantumStatus::Blocked,
                error,
                ..
            } => Some((*quantum, error.clone().unwrap())),
            _ => None,
        })
        .unwrap();
    assert_eq!(blocked.0, summarize_index(&o, 1));
    assert!(
        blocked.1.contains(&format!("upstream quantum {bad}")),
        "{}",
        blocked.1
    );
    assert!(!starts_per_quantum(&rb.bundle).contains_key(&summarize_index(&o, 1)));
    // The other exposures are complete.
    assert_eq!(
        output(&rb.bundle, summarize_index(&o, 2)).0,
        expected_summary(2, 3)
    );
}

#[test]
fn a_file_no_known_attempt_wrote_is_moved_aside_or_with_clobber_replaced() {
    for clobber in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let o = ReferenceOptions {
            exposures: 1,
            detectors: 2,
            clobber,
            ..Default::default()
        };
        let rb = build_reference_bundle(dir.path(), &o).unwrap();
        let b = Bundle::open(&rb.bundle).unwrap();
        let q = b.quantum(0).unwrap();
        let rel = &q.outputs[0].1[0].path;
        let foreign = rb.datastore_root.join(rel);
        std::fs::create_dir_all(foreign.parent().unwrap()).unwrap();
        std::fs::write(&foreign, b"not yours").unwrap();
        let s = run(
            &rb.bundle,
            Selection::Quanta(vec![0, 1]),
            &ExecOptions::default(),
        )
        .unwrap();
        assert!(s.all_succeeded(), "{s:?}");
        assert_ne!(std::fs::read(&foreign).unwrap(), b"not yours");
        let aside = rb
            .datastore_root
            .join(".quarantine")
            .join(b.header().bundle_id.to_string())
            .join(rel);
        if clobber {
            assert!(!aside.exists());
        } else {
            // Kept, never deleted: its writer is unknown.
            assert_eq!(std::fs::read(&aside).unwrap(), b"not yours");
        }
    }
}

#[test]
fn workers_run_clusters_and_block_on_missing_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let o = ReferenceOptions {
        exposures: 2,
        detectors: 2,
        ..Default::default()
    };
    let rb = build_reference_bundle(dir.path(), &o).unwrap();
    let opts = ExecOptions {
        worker_name: "exposure_1".into(),
        ..Default::default()
    };
    // Summarize alone: its characterize quanta have not run.
    let s = run(
        &rb.bundle,
        Selection::Quanta(vec![summarize_index(&o, 0)]),
        &opts,
    )
    .unwrap();
    assert_eq!(s.progress.blocked, 1);
    assert!(s.failures[0].error.contains("outside this worker's set"));
    let s = run(&rb.bundle, Selection::Cluster("exposure_1".into()), &opts).unwrap();
    assert!(s.all_succeeded());
    assert_eq!(s.progress.succeeded, 5);
    // The cluster of exposure 0 runs everything, including the blocked one.
    let s = run(&rb.bundle, Selection::Cluster("exposure_0".into()), &opts).unwrap();
    assert!(s.all_succeeded());
    assert_eq!(
        output(&rb.bundle, summarize_index(&o, 0)).0,
        expected_summary(0, 2)
    );
    let names: Vec<_> = list_journals(&journal_dir_for(&rb.bundle)).unwrap();
    assert_eq!(names.len(), 3, "one journal per worker run: {names:?}");
    assert!(matches!(
        run(&rb.bundle, Selection::Cluster("nope".into()), &opts),
        Err(RuntimeError::UnknownCluster { .. })
    ));
    assert!(matches!(
        run(&rb.bundle, Selection::Quanta(vec![999]), &opts),
        Err(RuntimeError::Bundle(_))
    ));
}

#[test]
fn a_rerun_replaces_leftovers_of_an_unfinished_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let o = ReferenceOptions {
        exposures: 1,
        detectors: 1,
        ..Default::default()
    };
    let rb = build_reference_bundle(dir.path(), &o).unwrap();
    let b = Bundle::open(&rb.bundle).unwrap();
    // A worker that started quantum 0, wrote its output and was killed.
    let j = quanta_limited_registry::WorkerJournal::create(
        &journal_dir_for(&rb.bundle),
        b.header().bundle_id,
        "killed",
        None,
    )
    .unwrap();
    let q = b.quantum(0).unwrap();
    j.started(0, q.id, 1).unwrap();
    let out = rb.datastore_root.join(&q.outputs[0].1[0].path);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, b"{\"half\":").unwrap();
    let s = run(&rb.bundle, Selection::All, &ExecOptions::default()).unwrap();
    assert!(s.all_succeeded(), "{s:?}");
    assert_eq!(output(&rb.bundle, 0).0["isr"], json!(true));
    assert_eq!(starts_per_quantum(&rb.bundle)[&0], 2);
}

#[test]
fn unknown_task_class_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let o = ReferenceOptions {
        exposures: 1,
        detectors: 1,
        ..Default::default()
    };
    let rb = build_reference_bundle(dir.path(), &o).unwrap();
    let reg = LimitedRegistry::open(&rb.bundle).unwrap();
    let empty = quanta_runtime::TaskRegistry::new();
    let e = execute(
        reg,
        &empty,
        &Selection::All,
        &ExecOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(e, RuntimeError::UnknownTaskClass { .. }), "{e}");
    assert!(e.to_string().contains("examples.Isr"));
}

fn python3() -> bool {
    std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn external_command_characterize_is_byte_identical() {
    if !python3() {
        eprintln!("python3 not found; skipping");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/characterize.py");
    let dir = tempfile::tempdir().unwrap();
    let (ra, rb_) = (dir.path().join("rust"), dir.path().join("cmd"));
    let o = ReferenceOptions {
        exposures: 2,
        detectors: 3,
        ..Default::default()
    };
    let oc = ReferenceOptions {
        characterize: CharacterizeKind::Command(vec![
            "python3".into(),
            script.to_string_lossy().into(),
            "{manifest}".into(),
        ]),
        ..o.clone()
    };
    let a = build_reference_bundle(&ra, &o).unwrap();
    let c = build_reference_bundle(&rb_, &oc).unwrap();
    assert!(run(
        &a.bundle,
        Selection::All,
        &ExecOptions {
            jobs: 2,
            ..Default::default()
        }
    )
    .unwrap()
    .all_succeeded());
    let s = run(
        &c.bundle,
        Selection::All,
        &ExecOptions {
            jobs: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(s.all_succeeded(), "{s:?}");
    for e in 0..2 {
        for d in 0..3 {
            let i = characterize_index(&o, e, d);
            assert_eq!(
                output(&a.bundle, i).1,
                output(&c.bundle, i).1,
                "icExp {e} {d}"
            );
        }
        let i = summarize_index(&o, e);
        assert_eq!(output(&a.bundle, i).1, output(&c.bundle, i).1);
    }
    // The command's stdout is in the log tail, its inputs in the record,
    // and no temporary file is left behind.
    let rec = records(&c.bundle)
        .into_iter()
        .find_map(|r| match r {
            JournalRecord::Finished {
                quantum,
                log_tail,
                inputs_used,
                exit_code,
                ..
            } if quantum == characterize_index(&o, 1, 1) => {
                Some((log_tail, inputs_used, exit_code))
            }
            _ => None,
        })
        .unwrap();
    assert!(
        rec.0.iter().any(|l| l.contains("psf 1000.0")),
        "{:?}",
        rec.0
    );
    assert_eq!((rec.1.len(), rec.2), (1, Some(0)));
    let leftovers = walk(&c.datastore_root)
        .into_iter()
        .filter(|p| p.contains(".tmp-"))
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn external_command_failures_timeouts_and_missing_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            vec!["sh", "-c", "echo boom >&2; exit 3"],
            QuantumStatus::Failed,
            "exited with code 3",
        ),
        (
            vec!["sh", "-c", "true"],
            QuantumStatus::Failed,
            "did not write predicted output",
        ),
        (
            vec!["sh", "-c", "sleep 30"],
            QuantumStatus::TimedOut,
            "timed out",
        ),
        (
            vec!["/nonexistent/quanta-cmd"],
            QuantumStatus::Failed,
            "cannot start",
        ),
    ];
    for (k, (argv, status, text)) in cases.into_iter().enumerate() {
        let o = ReferenceOptions {
            exposures: 1,
            detectors: 1,
            characterize: CharacterizeKind::Command(argv.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        };
        let rb = build_reference_bundle(&dir.path().join(k.to_string()), &o).unwrap();
        let opts = ExecOptions {
            timeout: Some(std::time::Duration::from_millis(300)),
            ..Default::default()
        };
        let s = run(&rb.bundle, Selection::All, &opts).unwrap();
        assert_eq!((s.progress.failed, s.progress.blocked), (1, 1), "{argv:?}");
        let f = &s
            .failures
            .iter()
            .find(|f| f.status != QuantumStatus::Blocked)
            .unwrap();
        assert_eq!(f.status, status, "{argv:?}");
        assert!(f.error.contains(text), "{argv:?}: {}", f.error);
        if k == 0 {
            let tail = records(&rb.bundle)
                .into_iter()
                .find_map(|r| match r {
                    JournalRecord::Finished {
                        log_tail,
                        exit_code: Some(3),
                        ..
                    } => Some(log_tail),
                    _ => None,
                })
                .unwrap();
            assert!(tail.iter().any(|l| l == "boom"), "{tail:?}");
        }
    }
}

#[test]
fn a_rust_task_that_sleeps_past_the_timeout_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let o = ReferenceOptions {
        exposures: 1,
        detectors: 1,
        isr_config: json!({"sleep_ms": 2000}),
        ..Default::default()
    };
    let rb = build_reference_bundle(dir.path(), &o).unwrap();
    let opts = ExecOptions {
        timeout: Some(std::time::Duration::from_millis(100)),
        retries: 1,
        ..Default::default()
    };
    let s = run(&rb.bundle, Selection::All, &opts).unwrap();
    assert_eq!(s.failures[0].status, QuantumStatus::TimedOut);
    assert_eq!(s.failures[0].attempts, 2);
    assert_eq!(s.progress.blocked, 2);
}

#[test]
fn fail_fast_stops_releasing_quanta() {
    let dir = tempfile::tempdir().unwrap();
    let o = ReferenceOptions {
        exposures: 3,
        detectors: 1,
        isr_config: json!({"fail_on": {"exposure": 0}}),
        ..Default::default()
    };
    let rb = build_reference_bundle(dir.path(), &o).unwrap();
    let s = run(
        &rb.bundle,
        Selection::All,
        &ExecOptions {
            fail_fast: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.progress.failed, 1);
    assert!(s.not_run > 0, "{s:?}");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.to_string_lossy().into_owned());
        }
    }
    out
}
