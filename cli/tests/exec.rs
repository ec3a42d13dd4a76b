//! `quanta run` and `quanta worker` end to end: the reference workload
//! through preflight, execution and merge, read back through the Butler;
//! a crash (kill -9) and resume; exit codes.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{fails_with, make_reference_repo, ok, preflight_into_test_run, quanta};
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
    preflight_into_test_run(&repo, &pipeline, &bundle);
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

/// Waits for `cond` (polled) or fails the test after a generous bound, so a
/// regression hangs no test run.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `quanta args`, killing it and failing if it has not ended after a
/// generous bound (the defects tested here were unbounded hangs).
fn run_bounded(args: &[&str]) -> std::process::Output {
    let mut child = quanta()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if t0.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "quanta {args:?} hung: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (start, end) of every record frame of a journal, the header's first.
fn journal_frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 12 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        out.push((at, at + 12 + len));
        at += 12 + len;
    }
    out
}

#[test]
fn lost_and_damaged_journal_records_never_wedge_a_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, bundle) = preflight(dir.path(), 3, 4, "class: examples.Characterize");
    ok(&["run", s(&bundle)]);
    let journals = list_journals(&journal_dir_for(&bundle)).unwrap();
    assert_eq!(journals.len(), 1);
    let mut bytes = std::fs::read(&journals[0]).unwrap();
    let frames = journal_frames(&bytes);
    // header + Started/Finished for 27 quanta, run one at a time
    assert_eq!(frames.len(), 1 + 2 * 27);
    // Drop both records of the third quantum (as if never written) and flip
    // a byte inside the payload of a record in the middle (a torn record
    // mid-file: everything after it is unreadable).
    let (flip_start, flip_end) = frames[30];
    bytes[(flip_start + flip_end) / 2] ^= 0x5a;
    let (drop_start, _) = frames[5];
    let (_, drop_end) = frames[6];
    bytes.drain(drop_start..drop_end);
    std::fs::write(&journals[0], &bytes).unwrap();

    let out = run_bounded(&["run", s(&bundle)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("refusing to overwrite"), "{err}");
    assert!(err.contains("moved it to"), "{err}");
    // The files found at predicted paths were kept, aside.
    let root = repo.join("datastore");
    let aside = walk(&root.join(".quarantine"));
    assert!(!aside.is_empty());
    ok(&["merge", s(&repo), s(&bundle)]);
    let v: serde_json::Value =
        serde_json::from_str(&get(&repo, "expSummary", "instrument=Cam,exposure=2")).unwrap();
    let psf: Vec<f64> = (0..4).map(|d| (2000 + d) as f64 - 1.0).collect();
    assert_eq!(v, serde_json::json!({"n": 4, "psf": psf}));
    // Every quantum is done: a further run finds nothing to do.
    let err = fails_with(0, &["run", s(&bundle)]);
    assert!(err.contains("27 already done"), "{err}");
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn two_executions_never_run_the_same_quanta_but_disjoint_workers_do() {
    let dir = tempfile::tempdir().unwrap();
    let o = ReferenceOptions {
        exposures: 2,
        detectors: 2,
        clusters: true,
        isr_config: serde_json::json!({"sleep_ms": 1000}),
        ..Default::default()
    };
    let rb = build_reference_bundle(dir.path(), &o).unwrap();
    let b = s(&rb.bundle);
    let started = || {
        journal_records(&rb.bundle)
            .iter()
            .any(|r| matches!(r, JournalRecord::Started { .. }))
    };
    // A run holds every quantum: another run and any worker are refused,
    // naming the holder.
    let mut first = quanta().args(["run", b]).spawn().unwrap();
    wait_until("the first run to start a quantum", started);
    let err = fails_with(1, &["run", b]);
    assert!(err.contains("being executed by another process"), "{err}");
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(err.contains("quanta run"), "{err}");
    let err = fails_with(1, &["worker", b, "--cluster", "exposure_1"]);
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(first.wait().unwrap().success());

    // Workers of disjoint clusters run together; overlapping ones do not.
    std::fs::remove_dir_all(journal_dir_for(&rb.bundle)).unwrap();
    for f in walk(&rb.datastore_root) {
        if !f.to_str().unwrap().contains("/raw/") {
            std::fs::remove_file(f).unwrap();
        }
    }
    let bundle = Bundle::open(&rb.bundle).unwrap();
    let clusters = bundle.clusters().unwrap();
    let c0 = clusters.iter().find(|c| c.name == "exposure_0").unwrap();
    let mut w0 = quanta()
        .args(["worker", b, "--cluster", "exposure_0"])
        .spawn()
        .unwrap();
    wait_until("worker exposure_0 to start a quantum", started);
    let overlap = c0.quanta[0].to_string();
    let err = fails_with(1, &["worker", b, "--quanta", &overlap]);
    assert!(err.contains(&format!("pid {}", w0.id())), "{err}");
    assert!(err.contains("--cluster exposure_0"), "{err}");
    // exposure_1 runs to the end while exposure_0 still holds its lock.
    ok(&["worker", b, "--cluster", "exposure_1"]);
    assert!(w0.wait().unwrap().success());
    let err = fails_with(0, &["run", b]);
    assert!(err.contains("10 already done"), "{err}");
}

/// A command task for the tests below, in Python (as the example command
/// task): `MODE` says how it misbehaves.
const MARK_SCRIPT: &str = r#"
import json, os, sys, time
manifest = json.load(open(sys.argv[1]))
mode = sys.argv[2]
attempt = int(os.environ["QUANTA_ATTEMPT"])

def write_temps(text):
    for outs in manifest["outputs"].values():
        for o in outs:
            with open(o["path"], "w") as f:
                f.write(text)

def escape():
    # A grandchild in a session of its own that keeps stdout open.
    if os.fork() == 0:
        os.setsid()
        time.sleep(1000)
        os._exit(0)

if mode == "fail":
    sys.exit(3)
if mode == "escape_and_exit":
    escape()
elif mode == "escape_and_hang":
    escape()
    time.sleep(1000)
elif mode == "hang_first_attempt" and attempt == 1:
    write_temps('{"partial')
    escape()
    ready = "%s.ready-%d" % (os.environ["QUANTA_BUNDLE"], manifest["quantum"])
    open(ready, "w").close()
    time.sleep(1000)
write_temps(json.dumps({"marked": manifest["quantum"]}))
"#;

const MARK_PIPELINE: &str = r#"
tasks:
  isr:
    class: examples.Isr
    dimensions: [instrument, exposure, detector]
    inputs:
      raw: {dataset_type: raw, dimensions: [instrument, exposure, detector], storage_class: Json}
    outputs:
      post: {dataset_type: postISRCCD, dimensions: [instrument, exposure, detector], storage_class: Json}
  mark:
    command: [python3, SCRIPT, "{manifest}", MODE]
    dimensions: [instrument, exposure, detector]
    inputs:
      post: {dataset_type: postISRCCD, dimensions: [instrument, exposure, detector], storage_class: Json}
    outputs:
      marked: {dataset_type: marked, dimensions: [instrument, exposure, detector], storage_class: Json}
"#;

fn have_python() -> bool {
    std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A repo and a bundle of `n_exp` × `n_det` isr quanta, each followed by a
/// `mark` command quantum behaving as `mode`.
fn command_bundle(dir: &Path, n_exp: usize, n_det: usize, mode: &str) -> (PathBuf, PathBuf) {
    let repo = make_reference_repo(dir, n_exp, n_det);
    let script = dir.join("mark.py");
    std::fs::write(&script, MARK_SCRIPT).unwrap();
    let pipeline = dir.join("pipeline.yaml");
    std::fs::write(
        &pipeline,
        MARK_PIPELINE
            .replace("SCRIPT", &format!("{:?}", s(&script)))
            .replace("MODE", mode),
    )
    .unwrap();
    let bundle = dir.join("run.qb");
    preflight_into_test_run(&repo, &pipeline, &bundle);
    (repo, bundle)
}

/// Live processes marked as started for `bundle`'s command quanta.
fn marked_processes(bundle: &Path) -> Vec<u32> {
    let id = Bundle::open(bundle).unwrap().header().bundle_id;
    let needle = format!("QUANTA_PROCESS_MARKER={id}:");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_str().unwrap_or("").parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env
            .split(|&b| b == 0)
            .any(|v| v.starts_with(needle.as_bytes()))
        {
            out.push(pid);
        }
    }
    out
}

fn finished_of_status(bundle: &Path, wanted: QuantumStatus) -> usize {
    journal_records(bundle)
        .iter()
        .filter(|r| matches!(r, JournalRecord::Finished { status, .. } if *status == wanted))
        .count()
}

#[test]
fn a_command_grandchild_that_left_the_group_is_killed_not_waited_for() {
    if !have_python() {
        eprintln!("python3 not found; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Exits 0 at once, its grandchild holding stdout: succeeded, no hang,
    // nothing left running.
    let (_, bundle) = command_bundle(&dir.path().join("a"), 1, 2, "escape_and_exit");
    let out = run_bounded(&["run", s(&bundle), "--jobs", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("4 quanta: 4 succeeded"), "{err}");
    assert_eq!(marked_processes(&bundle), Vec::<u32>::new());

    // Hangs with such a grandchild: the timeout ends the whole quantum.
    let (_, bundle) = command_bundle(&dir.path().join("b"), 1, 2, "escape_and_hang");
    let out = run_bounded(&["run", s(&bundle), "--jobs", "2", "--timeout", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        finished_of_status(&bundle, QuantumStatus::TimedOut),
        2,
        "{err}"
    );
    assert_eq!(
        finished_of_status(&bundle, QuantumStatus::Succeeded),
        2,
        "{err}"
    );
    assert_eq!(marked_processes(&bundle), Vec::<u32>::new());
}

#[test]
fn fail_fast_starts_nothing_after_the_first_failure() {
    if !have_python() {
        eprintln!("python3 not found; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, bundle) = command_bundle(dir.path(), 2, 3, "fail");
    let err = fails_with(1, &["run", s(&bundle), "--fail-fast"]);
    // The six isr quanta are ready first and run; the first mark quantum
    // fails and none of the five others starts.
    assert!(
        err.contains("12 quanta: 6 succeeded, 0 already done, 1 failed, 0 blocked, 5 not run"),
        "{err}"
    );
    let started = journal_records(&bundle)
        .iter()
        .filter(|r| matches!(r, JournalRecord::Started { .. }))
        .count();
    assert_eq!(started, 6 + 1);
}

#[test]
fn bad_timeouts_are_refused_as_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let rb = build_reference_bundle(
        dir.path(),
        &ReferenceOptions {
            exposures: 1,
            detectors: 1,
            clusters: true,
            ..Default::default()
        },
    )
    .unwrap();
    let b = s(&rb.bundle);
    for bad in ["1e100", "-1", "NaN", "0", "inf", "1e-300"] {
        let err = fails_with(2, &["run", b, &format!("--timeout={bad}")]);
        assert!(err.contains("--timeout must be"), "{bad}: {err}");
        let err = fails_with(
            2,
            &[
                "worker",
                b,
                "--cluster",
                "exposure_0",
                &format!("--timeout={bad}"),
            ],
        );
        assert!(err.contains("--timeout must be"), "{bad}: {err}");
    }
    // Nothing ran.
    assert!(list_journals(&journal_dir_for(&rb.bundle))
        .unwrap()
        .is_empty());
}

#[test]
fn a_resume_after_kill_removes_the_killed_runs_processes_manifests_and_temp_files() {
    if !have_python() {
        eprintln!("python3 not found; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (repo, bundle) = command_bundle(dir.path(), 1, 2, "hang_first_attempt");
    let journals = journal_dir_for(&bundle);
    let mut run = quanta()
        .args(["run", s(&bundle), "--jobs", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Both mark quanta hang, each with a grandchild of its own.
    wait_until("both mark quanta to hang", || {
        walk(dir.path())
            .iter()
            .filter(|p| p.to_str().unwrap().contains("run.qb.ready-"))
            .count()
            == 2
    });
    run.kill().unwrap(); // SIGKILL
    run.wait().unwrap();
    let manifests = walk(&journals.join("manifests"));
    assert_eq!(manifests.len(), 2, "{manifests:?}");
    let is_temp = |p: &PathBuf| {
        p.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(".tmp-")
    };
    let temps: Vec<PathBuf> = walk(&repo.join("datastore"))
        .into_iter()
        .filter(is_temp)
        .collect();
    assert_eq!(temps.len(), 2, "{temps:?}");
    // Someone else's temporary file is left alone.
    let foreign = temps[0].parent().unwrap().join(".tmp-someone-else");
    std::fs::write(&foreign, b"x").unwrap();
    // The grandchildren outlive the killed run.
    assert!(!marked_processes(&bundle).is_empty());

    let out = run_bounded(&["run", s(&bundle), "--jobs", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(marked_processes(&bundle), Vec::<u32>::new());
    assert_eq!(walk(&journals.join("manifests")), Vec::<PathBuf>::new());
    let temps: Vec<PathBuf> = walk(&repo.join("datastore"))
        .into_iter()
        .filter(is_temp)
        .collect();
    assert_eq!(temps, vec![foreign]);
    ok(&["merge", s(&repo), s(&bundle)]);
}
