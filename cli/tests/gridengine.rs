//! `quanta submit --engine gridengine`, `status`, `cancel` and `restart`
//! against a real Grid Engine (ci/gridengine/start.sh). Runs only with
//! QUANTA_GRIDENGINE_TESTS=1, which CI sets after starting the cluster;
//! otherwise each test says it was skipped and passes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::batch::{
    self, batch_status, job_ids, job_logs, json, pipeline, s, state, submitted_clusters,
};
use common::{fails_with, ok};
use serde_json::Value;

const RUN: &str = "u/gridengine/run";

fn enabled() -> bool {
    if std::env::var("QUANTA_GRIDENGINE_TESTS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("skipped: set QUANTA_GRIDENGINE_TESTS=1 (after ci/gridengine/start.sh)");
    false
}

fn preflight(dir: &Path, n_exp: usize, n_det: usize, p: &Path, by: &str) -> (PathBuf, PathBuf) {
    batch::preflight_clustered(dir, n_exp, n_det, p, by, RUN)
}

fn count(repo: &Path, dataset_type: &str) -> usize {
    batch::count(repo, RUN, dataset_type)
}

fn submit(bundle: &Path, repo: &Path, extra: &[&str]) -> String {
    submit_with_env(bundle, repo, extra, &[])
}

/// [`submit`] with variables added to the submitter's environment.
fn submit_with_env(bundle: &Path, repo: &Path, extra: &[&str], env: &[(&str, &Path)]) -> String {
    let mut args = vec![
        "submit",
        s(bundle),
        "--engine",
        "gridengine",
        "--repo",
        s(repo),
        "--mem",
        "200M",
        "--time",
        "5",
    ];
    args.extend_from_slice(extra);
    let out = common::quanta()
        .args(&args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::show(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// This submission's jobs that `qstat` still lists, as "id state". Read
/// with plain string search, independently of the engine's XML reader.
fn live_jobs(bundle: &Path) -> Vec<String> {
    let ids = job_ids(&state(bundle));
    let out = Command::new("qstat")
        .args(["-xml", "-u", "*"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qstat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |row: &str, tag: &str| -> String {
        let open = format!("<{tag}>");
        row.split_once(&open)
            .and_then(|(_, rest)| rest.split_once(&format!("</{tag}>")))
            .map(|(v, _)| v.trim().to_string())
            .unwrap_or_default()
    };
    text.split("<job_list")
        .skip(1)
        .filter_map(|row| {
            let id: u64 = field(row, "JB_job_number").parse().ok()?;
            ids.contains(&id)
                .then(|| format!("{id} {} {}", field(row, "state"), field(row, "tasks")))
        })
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
            "jobs still queued after {timeout:?}: {live:?}\njob logs: {}",
            job_logs(bundle)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Each dataset of the three output types in `repo`: (type, data ID,
/// file content), UUIDs masked (two preflights give the same datasets
/// other ids); sorted.
fn outputs(repo: &Path) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for t in ["postISRCCD", "icExp", "expSummary"] {
        for d in json(&[
            "query-datasets",
            s(repo),
            "--collections",
            RUN,
            "--dataset-type",
            t,
            "--json",
        ])
        .as_array()
        .unwrap()
        {
            let path = d["stored"]["path"]
                .as_str()
                .unwrap_or_else(|| panic!("no stored path: {d}"));
            let file = if Path::new(path).is_absolute() {
                PathBuf::from(path)
            } else {
                find_file(repo, path).unwrap_or_else(|| panic!("{path} not under {repo:?}"))
            };
            let content = std::fs::read_to_string(&file).unwrap();
            out.push((
                t.to_string(),
                d["data_id"].to_string(),
                mask_uuids(&content),
            ));
        }
    }
    out.sort();
    out
}

/// `text` with every UUID (8-4-4-4-12 hex digits) replaced by `<uuid>`.
fn mask_uuids(text: &str) -> String {
    let shape = [8, 4, 4, 4, 12];
    let is_uuid = |w: &str| {
        let parts: Vec<&str> = w.split('-').collect();
        parts.len() == 5
            && parts
                .iter()
                .zip(shape)
                .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let (mut out, mut i) = (String::with_capacity(text.len()), 0);
    while i < text.len() {
        if text.is_char_boundary(i)
            && text.len() >= i + 36
            && text.is_char_boundary(i + 36)
            && is_uuid(&text[i..i + 36])
        {
            out.push_str("<uuid>");
            i += 36;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `rel` under `repo` or one of its directories (the datastore root).
fn find_file(repo: &Path, rel: &str) -> Option<PathBuf> {
    std::iter::once(repo.to_path_buf())
        .chain(
            std::fs::read_dir(repo)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir()),
        )
        .map(|root| root.join(rel))
        .find(|p| p.is_file())
}

/// The reference workload through Grid Engine ends in the registry a local
/// `quanta run` and `merge` of the same bundle make; `status` shows each
/// cluster's array task while queued and the journals' counts after.
#[test]
fn reference_runs_on_gridengine_and_merges_what_a_local_run_merges() {
    if !enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &BTreeMap::new());
    // The same campaign twice: one runs here, the other on Grid Engine.
    let (local, ge) = (dir.path().join("local"), dir.path().join("ge"));
    std::fs::create_dir(&local).unwrap();
    std::fs::create_dir(&ge).unwrap();
    let (local_repo, local_bundle) = preflight(&local, 6, 4, &p, "instrument,exposure");
    let (repo, bundle) = preflight(&ge, 6, 4, &p, "instrument,exposure");
    // The submitter's environment reaches the jobs (as Slurm passes it):
    // here the kill-point log, which the workers in the jobs then write.
    let passages = dir.path().join("passages.log");
    submit_with_env(&bundle, &repo, &[], &[("QUANTA_TEST_KILL_LOG", &passages)]);

    let st = state(&bundle);
    assert_eq!(st["engine"], "gridengine", "{st}");
    let arrays = st["submissions"][0]["arrays"].as_array().unwrap();
    // Clusters of one exposure do not depend on each other: one array.
    assert_eq!(arrays.len(), 1, "{st}");
    let array_id = arrays[0]["job_id"].as_str().unwrap().to_string();
    let names: Vec<&str> = arrays[0]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 6);
    // While queued: every cluster names its task (1-based), and the tasks
    // not yet finished have a Grid Engine state.
    let status = batch_status(&bundle);
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            status[*name]["job"].as_str(),
            Some(format!("{array_id}.{}", i + 1).as_str()),
            "{status:?}"
        );
    }
    let states: BTreeSet<String> = status
        .values()
        .filter_map(|c| c["state"].as_str().map(String::from))
        .collect();
    assert!(
        states
            .iter()
            .all(|s| ["qw", "hqw", "r", "t"].contains(&s.as_str())),
        "{states:?}"
    );

    wait_until_done(&bundle, Duration::from_secs(120));
    assert_eq!(count(&repo, "expSummary"), 6, "{}", job_logs(&bundle));
    let status = batch_status(&bundle);
    assert!(
        status
            .values()
            .all(|c| c["succeeded"] == 9 && c["state"].is_null()),
        "{status:?}"
    );
    let text = ok(&["status", s(&bundle)]);
    assert!(text.contains(&format!("{array_id}.6")), "{text}");
    assert!(text.contains("gridengine: "), "{text}");
    // Provenance names the Grid Engine task that ran each quantum.
    let conn = rusqlite::Connection::open(repo.join("registry.sqlite3")).unwrap();
    let jobs = common::strings(&conn, "SELECT DISTINCT batch_job FROM quantum");
    assert!(
        !jobs.is_empty()
            && jobs.iter().all(|j| {
                let (job, task) = j.split_once('.').unwrap_or_default();
                job.parse::<u64>().is_ok() && task.parse::<u64>().is_ok()
            }),
        "{jobs:?}"
    );

    let passed = std::fs::read_to_string(&passages).unwrap_or_default();
    assert!(
        passed.lines().filter(|l| *l == "journal.appended").count() >= 6 * 9,
        "the jobs did not get the submitter's QUANTA_TEST_KILL_LOG: {passed:?}"
    );

    ok(&["run", s(&local_bundle), "--jobs", "2"]);
    ok(&["merge", s(&local_repo), s(&local_bundle)]);
    let (here, there) = (outputs(&local_repo), outputs(&repo));
    assert_eq!(here.len(), 6 * 4 * 2 + 6);
    assert_eq!(here, there);
}

/// The first cluster whose name has every one of `parts` and, when
/// `detector` is false, no detector.
fn cluster_named(st: &Value, parts: &[&str], detector: bool) -> String {
    let names: Vec<&String> = st["clusters"].as_object().unwrap().keys().collect();
    let split = |n: &str| -> Vec<String> {
        n.split(|c: char| !(c.is_alphanumeric() || c == '='))
            .map(String::from)
            .collect()
    };
    names
        .iter()
        .find(|n| {
            let p = split(n);
            parts.iter().all(|want| p.iter().any(|x| x == want))
                && (detector || !p.iter().any(|x| x.starts_with("detector=")))
        })
        .map(|n| n.to_string())
        .unwrap_or_else(|| panic!("no cluster with {parts:?} in {names:?}"))
}

/// Per-detector clusters in one array, the per-exposure summaries in a
/// second holding on it. Grid Engine releases a hold whatever the upstream
/// exit status, so the summaries downstream of a failure run and journal
/// themselves blocked; `restart` submits again what failed (with more
/// memory for what ran out) and what it blocked, never the deterministic
/// failure or its downstream.
#[test]
fn failures_block_downstream_arrays_and_restart_resubmits_the_rest() {
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
    let (repo, bundle) = preflight(dir.path(), 4, 3, &p, "instrument,exposure,detector");
    submit(&bundle, &repo, &[]);
    let st = state(&bundle);
    let arrays = st["submissions"][0]["arrays"].as_array().unwrap();
    assert_eq!(arrays.len(), 2, "{st}");
    assert_eq!(
        arrays[1]["dependency"].as_str().unwrap(),
        format!("-hold_jid {}", arrays[0]["job_id"].as_str().unwrap())
    );
    wait_until_done(&bundle, Duration::from_secs(120));

    let c = |e: usize, d: usize| {
        cluster_named(
            &st,
            &[&format!("exposure={e}"), &format!("detector={d}")],
            true,
        )
    };
    let summary = |e: usize| cluster_named(&st, &[&format!("exposure={e}")], false);
    let status = batch_status(&bundle);
    let logs = job_logs(&bundle);
    assert_eq!(
        status[&c(1, 1)]["failed"],
        1,
        "transient: {status:?}\n{logs}"
    );
    assert_eq!(
        status[&c(2, 0)]["failed"],
        1,
        "deterministic: {status:?}\n{logs}"
    );
    assert_eq!(status[&c(3, 0)]["out_of_memory"], 1, "{status:?}\n{logs}");
    for e in [1, 2, 3] {
        assert_eq!(
            status[&summary(e)]["blocked"],
            1,
            "exposure {e}: {status:?}\n{logs}"
        );
    }
    assert_eq!(status[&summary(0)]["succeeded"], 1, "{status:?}");
    assert_eq!(
        count(&repo, "expSummary"),
        1,
        "the merge job merged what succeeded"
    );

    // Restart by another engine is refused; without --engine, the engine
    // the state file records restarts it.
    let e = fails_with(2, &["restart", s(&bundle), "--engine", "slurm"]);
    assert!(e.contains("pass --engine gridengine"), "{e}");
    let out = ok(&[
        "restart",
        s(&bundle),
        "--memory-multiplier",
        "2",
        "--max-mem",
        "1G",
    ]);
    assert!(out.contains(&c(2, 0)) && out.contains(&summary(2)), "{out}");
    let st = state(&bundle);
    assert_eq!(
        submitted_clusters(&st, 1),
        BTreeSet::from([c(1, 1), c(3, 0), summary(1), summary(3)]),
        "what failed or was blocked, not the deterministic failure nor its downstream"
    );
    assert_eq!(st["clusters"][c(3, 0)]["mem_mb"], 400, "{st}");
    assert_eq!(st["clusters"][c(1, 1)]["mem_mb"], 200, "{st}");
    wait_until_done(&bundle, Duration::from_secs(120));

    let status = batch_status(&bundle);
    for e in [0, 1, 3] {
        assert_eq!(
            status[&summary(e)]["succeeded"],
            1,
            "{status:?}\n{}",
            job_logs(&bundle)
        );
    }
    assert_eq!(status[&c(2, 0)]["failed"], 1);
    assert_eq!(count(&repo, "expSummary"), 3);
    assert_eq!(count(&repo, "icExp"), 11);
    assert_eq!(count(&repo, "postISRCCD"), 12);
    let out = ok(&["restart", s(&bundle), "--engine", "gridengine"]);
    assert!(out.contains("nothing to resubmit"), "{out}");
}

/// `cancel` deletes every queued job (the merge job too), `restart`
/// refuses while jobs are live and afterwards submits only what had not
/// succeeded.
#[test]
fn cancel_empties_the_queue_and_restart_reruns_nothing_that_succeeded() {
    if !enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut configs = BTreeMap::new();
    configs.insert("isr", serde_json::json!({"sleep_ms": 700}));
    let p = pipeline(dir.path(), &configs);
    let (repo, bundle) = preflight(dir.path(), 6, 2, &p, "instrument,exposure");
    submit(&bundle, &repo, &["--throttle", "1"]);
    let e = fails_with(2, &["restart", s(&bundle), "--engine", "gridengine"]);
    assert!(e.contains("still queued or running"), "{e}");
    let e = fails_with(2, &["cancel", s(&bundle), "--engine", "slurm"]);
    assert!(e.contains("submitted with --engine gridengine"), "{e}");

    let t0 = Instant::now();
    let done_before: BTreeSet<String> = loop {
        let status = batch_status(&bundle);
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
            job_logs(&bundle)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = ok(&["cancel", s(&bundle)]);
    assert!(out.starts_with("cancelled "), "{out}");
    wait_until_done(&bundle, Duration::from_secs(30));
    let status = batch_status(&bundle);
    assert!(
        status.values().any(|c| c["succeeded"] != c["quanta"]),
        "the cancel came too late to test anything: {status:?}"
    );
    let out = ok(&["cancel", s(&bundle), "--engine", "gridengine"]);
    assert!(out.contains("nothing to cancel"), "{out}");

    ok(&["restart", s(&bundle), "--engine", "gridengine"]);
    let st = state(&bundle);
    let second = submitted_clusters(&st, 1);
    assert!(
        second.is_disjoint(&done_before),
        "{second:?} vs {done_before:?}"
    );
    wait_until_done(&bundle, Duration::from_secs(120));
    let status = batch_status(&bundle);
    assert!(
        status.values().all(|c| c["succeeded"] == c["quanta"]),
        "{status:?}\n{}",
        job_logs(&bundle)
    );
    for name in &done_before {
        assert_eq!(st["clusters"][name]["submitted"], 1);
    }
    assert_eq!(count(&repo, "expSummary"), 6);
}
