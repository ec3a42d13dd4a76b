//! `quanta submit --engine slurm`, `status`, `cancel` and `restart` against
//! a real Slurm (ci/slurm/start.sh). Runs only with QUANTA_SLURM_TESTS=1,
//! which CI sets after starting the cluster; otherwise each test says it
//! was skipped and passes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::batch::{self, cluster_of_exposure, job_ids, json, pipeline, s, state};
use common::ok;
use serde_json::Value;

const RUN: &str = "u/slurm/run";

fn enabled() -> bool {
    if std::env::var("QUANTA_SLURM_TESTS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("skipped: set QUANTA_SLURM_TESTS=1");
    false
}

/// A reference repo of `n_exp` × `n_det` and its bundle, one cluster per
/// exposure.
fn preflight(dir: &Path, n_exp: usize, n_det: usize, pipeline: &Path) -> (PathBuf, PathBuf) {
    preflight_clustered(dir, n_exp, n_det, pipeline, "instrument,exposure")
}

fn preflight_clustered(
    dir: &Path,
    n_exp: usize,
    n_det: usize,
    pipeline: &Path,
    cluster_by: &str,
) -> (PathBuf, PathBuf) {
    batch::preflight_clustered(dir, n_exp, n_det, pipeline, cluster_by, RUN)
}

/// This submission's jobs that squeue shows as not finished. squeue 22.05
/// ignores `-j` with `--json`: filter here.
fn live_jobs(bundle: &Path) -> Vec<String> {
    let ids = job_ids(&state(bundle));
    let out = Command::new("squeue").arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "squeue: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| {
            let id = j["job_id"].as_u64().unwrap();
            let array = j["array_job_id"].as_u64().unwrap_or(0);
            ids.contains(&id) || ids.contains(&array)
        })
        .filter(|j| {
            !matches!(
                j["job_state"].as_str().unwrap(),
                "COMPLETED"
                    | "FAILED"
                    | "CANCELLED"
                    | "TIMEOUT"
                    | "OUT_OF_MEMORY"
                    | "NODE_FAIL"
                    | "PREEMPTED"
                    | "BOOT_FAIL"
                    | "DEADLINE"
            )
        })
        .map(|j| format!("{} {}", j["job_id"], j["job_state"]))
        .collect()
}

fn wait_until_done(bundle: &Path, timeout: Duration) {
    let t0 = Instant::now();
    loop {
        let live = live_jobs(bundle);
        if live.is_empty() {
            return;
        }
        assert!(
            t0.elapsed() < timeout,
            "jobs still queued after {timeout:?}: {live:?}\nslurm logs: {}",
            slurm_logs(bundle)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn slurm_logs(bundle: &Path) -> String {
    batch::job_logs(bundle)
}

fn count(repo: &Path, dataset_type: &str) -> usize {
    batch::count(repo, RUN, dataset_type)
}

/// cluster name → (array job id, index) over the latest submission of each.
fn placements(state: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for sub in state["submissions"].as_array().unwrap() {
        for a in sub["arrays"].as_array().unwrap() {
            for (i, c) in a["clusters"].as_array().unwrap().iter().enumerate() {
                out.insert(
                    c.as_str().unwrap().to_string(),
                    format!("{}_{i}", a["job_id"].as_str().unwrap()),
                );
            }
        }
    }
    out
}

fn slurm_status(bundle: &Path) -> BTreeMap<String, Value> {
    batch::batch_status(bundle)
}

#[test]
fn reference_10x10_runs_on_slurm_merges_and_names_its_jobs() {
    if !enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &BTreeMap::new());
    let (repo, bundle) = preflight(dir.path(), 10, 10, &p);
    ok(&[
        "submit",
        s(&bundle),
        "--engine",
        "slurm",
        "--repo",
        s(&repo),
        "--mem",
        "200M",
        "--time",
        "5",
    ]);
    let st = state(&bundle);
    let arrays = st["submissions"][0]["arrays"].as_array().unwrap();
    // Clusters of one exposure do not depend on each other: one array.
    assert_eq!(arrays.len(), 1, "{st}");
    assert_eq!(arrays[0]["clusters"].as_array().unwrap().len(), 10);
    wait_until_done(&bundle, Duration::from_secs(120));

    // The final job merged everything.
    assert_eq!(count(&repo, "postISRCCD"), 100, "{}", slurm_logs(&bundle));
    assert_eq!(count(&repo, "icExp"), 100);
    assert_eq!(count(&repo, "expSummary"), 10);

    // Provenance names the Slurm array job and the element of the exposure.
    let place = placements(&st);
    for e in [0usize, 7] {
        let summaries = json(&[
            "query-datasets",
            s(&repo),
            "--collections",
            RUN,
            "--dataset-type",
            "expSummary",
            "--where",
            &format!("exposure = {e}"),
            "--json",
        ]);
        let id = summaries[0]["id"].as_str().unwrap().to_string();
        let graph = json(&["provenance", s(&repo), &id, "--json"]);
        let quanta = graph["quanta"].as_array().unwrap();
        assert_eq!(quanta.len(), 21);
        let expected = &place[&cluster_of_exposure(&st, e)];
        for q in quanta {
            assert_eq!(q["batch_job"].as_str(), Some(expected.as_str()), "{q}");
        }
    }
    let status = slurm_status(&bundle);
    assert!(status.values().all(|c| c["succeeded"] == 21), "{status:?}");
}

#[test]
fn failures_transient_deterministic_and_out_of_memory_then_restart() {
    if !enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let markers = dir.path().join("markers");
    let mut configs = BTreeMap::new();
    configs.insert(
        "isr",
        serde_json::json!({
            "transient_on": {"exposure": 1, "detector": 1}, "marker_dir": s(&markers),
            "allocate_mb": 300, "allocate_on": {"exposure": 3, "detector": 0},
        }),
    );
    configs.insert(
        "characterize",
        serde_json::json!({"bad_input_on": {"exposure": 2, "detector": 0}}),
    );
    let p = pipeline(dir.path(), &configs);
    let (repo, bundle) = preflight(dir.path(), 4, 3, &p);
    ok(&[
        "submit",
        s(&bundle),
        "--engine",
        "slurm",
        "--repo",
        s(&repo),
        "--mem",
        "200M",
        "--time",
        "5",
    ]);
    wait_until_done(&bundle, Duration::from_secs(60));
    let st = state(&bundle);
    let c = |e| cluster_of_exposure(&st, e);
    let status = slurm_status(&bundle);
    let logs = slurm_logs(&bundle);
    assert_eq!(status[&c(0)]["succeeded"], 7, "{status:?}\n{logs}");
    assert_eq!(status[&c(1)]["failed"], 1, "transient: {status:?}\n{logs}");
    assert_eq!(
        status[&c(2)]["failed"],
        1,
        "deterministic: {status:?}\n{logs}"
    );
    assert_eq!(
        status[&c(2)]["blocked"],
        1,
        "summarize of exposure 2: {status:?}"
    );
    assert_eq!(status[&c(3)]["out_of_memory"], 1, "{status:?}\n{logs}");
    let text = ok(&["status", s(&bundle)]);
    assert!(
        text.contains("out_of_memory") || text.contains("oom"),
        "{text}"
    );

    let out = ok(&[
        "restart",
        s(&bundle),
        "--memory-multiplier",
        "2",
        "--max-mem",
        "1G",
    ]);
    assert!(
        out.contains(&c(2)),
        "the deterministic cluster is named as not resubmitted: {out}"
    );
    let st = state(&bundle);
    let second: BTreeSet<String> = st["submissions"][1]["arrays"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| {
            a["clusters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(
        second,
        BTreeSet::from([c(1), c(3)]),
        "only what failed, not deterministically"
    );
    assert_eq!(st["clusters"][c(3)]["mem_mb"], 400, "{st}");
    assert_eq!(st["clusters"][c(1)]["mem_mb"], 200, "{st}");
    wait_until_done(&bundle, Duration::from_secs(60));

    let status = slurm_status(&bundle);
    for e in [0, 1, 3] {
        assert_eq!(
            status[&c(e)]["succeeded"],
            7,
            "exposure {e}: {status:?}\n{}",
            slurm_logs(&bundle)
        );
    }
    assert_eq!(status[&c(2)]["failed"], 1);
    assert_eq!(status[&c(2)]["blocked"], 1);
    // Exposure 2's summarize never ran, so 3 summaries; 11 characterized.
    assert_eq!(count(&repo, "expSummary"), 3);
    assert_eq!(count(&repo, "icExp"), 11);
    assert_eq!(count(&repo, "postISRCCD"), 12);
    // A second restart has nothing left to do.
    let out = ok(&["restart", s(&bundle)]);
    assert!(out.contains("nothing to resubmit"), "{out}");
}

#[test]
fn cancel_empties_the_queue_and_restart_reruns_nothing_that_succeeded() {
    if !enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut configs = BTreeMap::new();
    configs.insert("isr", serde_json::json!({"sleep_ms": 700}));
    let p = pipeline(dir.path(), &configs);
    let (repo, bundle) = preflight(dir.path(), 6, 2, &p);
    ok(&[
        "submit",
        s(&bundle),
        "--engine",
        "slurm",
        "--repo",
        s(&repo),
        "--mem",
        "200M",
        "--time",
        "5",
        "--throttle",
        "1",
    ]);
    // Wait for the first cluster to finish, then cancel the rest.
    let t0 = Instant::now();
    let done_before: BTreeSet<String> = loop {
        let status = slurm_status(&bundle);
        let done: BTreeSet<String> = status
            .iter()
            .filter(|(_, c)| c["succeeded"] == c["quanta"])
            .map(|(k, _)| k.clone())
            .collect();
        if !done.is_empty() {
            break done;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "nothing finished: {status:?}\n{}",
            slurm_logs(&bundle)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    ok(&["cancel", s(&bundle)]);
    wait_until_done(&bundle, Duration::from_secs(20));
    assert!(live_jobs(&bundle).is_empty());
    let status = slurm_status(&bundle);
    let unfinished = status
        .values()
        .filter(|c| c["succeeded"] != c["quanta"])
        .count();
    assert!(
        unfinished > 0,
        "the cancel came too late to test anything: {status:?}"
    );

    ok(&["restart", s(&bundle)]);
    let st = state(&bundle);
    let second: BTreeSet<String> = st["submissions"][1]["arrays"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| {
            a["clusters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
        })
        .collect();
    assert!(
        second.is_disjoint(&done_before),
        "{second:?} vs {done_before:?}"
    );
    wait_until_done(&bundle, Duration::from_secs(90));
    let status = slurm_status(&bundle);
    assert!(
        status.values().all(|c| c["succeeded"] == c["quanta"]),
        "{status:?}"
    );
    // Every quantum ran to success exactly once: no attempt beyond the first
    // for what succeeded before the cancel.
    for name in &done_before {
        assert_eq!(st["clusters"][name]["submitted"], 1);
    }
    assert_eq!(count(&repo, "expSummary"), 6);
}

#[test]
fn clusters_reading_other_clusters_wait_for_them() {
    if !enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &BTreeMap::new());
    // Per detector: isr + characterize of one (exposure, detector) in one
    // cluster, each summarize in a cluster that reads two of them.
    let (repo, bundle) = preflight_clustered(dir.path(), 3, 2, &p, "instrument,exposure,detector");
    ok(&[
        "submit",
        s(&bundle),
        "--engine",
        "slurm",
        "--repo",
        s(&repo),
        "--mem",
        "200M",
        "--time",
        "5",
    ]);
    let st = state(&bundle);
    let arrays = st["submissions"][0]["arrays"].as_array().unwrap();
    assert_eq!(arrays.len(), 2, "{st}");
    assert_eq!(arrays[0]["clusters"].as_array().unwrap().len(), 6);
    assert_eq!(arrays[1]["clusters"].as_array().unwrap().len(), 3);
    assert_eq!(
        arrays[1]["dependency"].as_str().unwrap(),
        format!("afterok:{}", arrays[0]["job_id"].as_str().unwrap())
    );
    wait_until_done(&bundle, Duration::from_secs(60));
    assert_eq!(count(&repo, "expSummary"), 3, "{}", slurm_logs(&bundle));
    assert_eq!(count(&repo, "icExp"), 6);
}

/// `--engine htcondor --dry-run` against the files in tests/golden/htcondor
/// (no HTCondor runs here). Paths are replaced by @DIR@ and @QUANTA@;
/// QUANTA_BLESS=1 rewrites the golden files.
#[test]
fn htcondor_dry_run_matches_the_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &BTreeMap::new());
    let (repo, bundle) = preflight_clustered(dir.path(), 2, 2, &p, "instrument,exposure,detector");
    let out = dir.path().join("dag");
    ok(&[
        "submit",
        s(&bundle),
        "--engine",
        "htcondor",
        "--dry-run",
        "--out",
        s(&out),
        "--repo",
        s(&repo),
        "--mem",
        "200M",
        "--max-mem",
        "1G",
        "--node-retries",
        "3",
    ]);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/htcondor");
    let bless = std::env::var("QUANTA_BLESS").as_deref() == Ok("1");
    for name in ["quanta.dag", "cluster.sub", "merge.sub"] {
        let text = std::fs::read_to_string(out.join(name)).unwrap();
        let text = text
            .replace(env!("CARGO_BIN_EXE_quanta"), "@QUANTA@")
            .replace(s(dir.path()), "@DIR@");
        let g = golden.join(name);
        if bless {
            std::fs::create_dir_all(&golden).unwrap();
            std::fs::write(&g, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&g)
            .unwrap_or_else(|e| panic!("{}: {e} (QUANTA_BLESS=1 writes it)", g.display()));
        assert_eq!(text, want, "{name} differs from {}", g.display());
    }
    // Without --dry-run there is nothing HTCondor can be asked to do.
    common::fails_with(
        2,
        &[
            "submit",
            s(&bundle),
            "--engine",
            "htcondor",
            "--repo",
            s(&repo),
        ],
    );
}

/// Engines are looked up by name: an unknown one is a usage error that
/// lists the known ones, HTCondor's status-side operations say they need
/// a pool, and Slurm refuses `--dry-run` (no Slurm needed).
#[test]
fn engines_are_chosen_by_name_and_refuse_what_they_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &BTreeMap::new());
    let (repo, bundle) = preflight_clustered(dir.path(), 1, 2, &p, "instrument,exposure,detector");
    let submit = |engine: &str, extra: &[&str]| {
        let mut args = vec!["submit", s(&bundle), "--engine", engine, "--repo", s(&repo)];
        args.extend_from_slice(extra);
        common::fails_with(2, &args)
    };
    let e = submit("pbs", &[]);
    assert!(
        e.contains("unknown batch engine `pbs`") && e.contains("slurm, htcondor"),
        "{e}"
    );
    let e = submit("slurm", &["--dry-run"]);
    assert!(e.contains("--dry-run is for --engine htcondor"), "{e}");
    for cmd in ["cancel", "restart"] {
        let e = common::fails_with(2, &[cmd, s(&bundle), "--engine", "htcondor"]);
        assert!(
            e.contains(&format!("`{cmd}` is not supported by the htcondor engine"))
                && e.contains("HTCondor pool"),
            "{e}"
        );
    }
    let e = common::fails_with(2, &["cancel", s(&bundle), "--engine", "sge"]);
    assert!(e.contains("unknown batch engine `sge`"), "{e}");
    assert!(!quanta_state(&bundle).exists(), "nothing was submitted");
}

fn quanta_state(bundle: &Path) -> PathBuf {
    batch::state_path(bundle)
}
