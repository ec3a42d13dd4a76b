//! `quanta merge`, `status`, `provenance` and `report` end to end on the
//! reference workload: preflight → run → merge, idempotence, a merge killed
//! mid-way, altered outputs, journals of another bundle, incomplete
//! campaigns and failed quanta.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{fails_with, make_reference_repo, ok, quanta, run};
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp paths")
}

fn pipeline(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/pipelines")
        .join(name)
}

const RUN: &str = "u/test/run";
const CHAIN: &str = "u/test/out";

/// Reference repo with a preflighted bundle of `pipeline_file` into RUN
/// (chained as CHAIN). Returns (repo, bundle).
fn preflight(dir: &Path, n_exp: usize, n_det: usize, pipeline_file: &Path) -> (PathBuf, PathBuf) {
    let repo = make_reference_repo(dir, n_exp, n_det);
    let bundle = dir.join("campaign.qb");
    ok(&[
        "preflight",
        s(&repo),
        "--pipeline",
        s(pipeline_file),
        "--input",
        "Cam/raw",
        "--output-run",
        RUN,
        "--output",
        CHAIN,
        "--bundle",
        s(&bundle),
    ]);
    (repo, bundle)
}

/// A reference campaign preflighted and run to completion.
fn campaign(dir: &Path, n_exp: usize, n_det: usize) -> (PathBuf, PathBuf) {
    let (repo, bundle) = preflight(dir, n_exp, n_det, &pipeline("reference.yaml"));
    ok(&["run", s(&bundle), "--jobs", "2"]);
    (repo, bundle)
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).expect("JSON output")
}

fn merge_json(repo: &Path, bundle: &Path) -> Value {
    json(&["merge", s(repo), s(bundle), "--json"])
}

fn count_datasets(repo: &Path, collection: &str, dataset_type: &str) -> usize {
    let v = json(&[
        "query-datasets",
        s(repo),
        "--collections",
        collection,
        "--dataset-type",
        dataset_type,
        "--json",
    ]);
    v.as_array().expect("a JSON array").len()
}

/// Every row of the tables a merge writes, in a fixed order.
fn dump(repo: &Path) -> String {
    let queries = [
        "SELECT * FROM dataset_type ORDER BY name",
        "SELECT * FROM collection ORDER BY name",
        "SELECT * FROM collection_chain ORDER BY parent_id, position",
        "SELECT * FROM dataset ORDER BY id",
        "SELECT * FROM run_provenance ORDER BY run_id, bundle_id",
        "SELECT * FROM quantum ORDER BY id",
        "SELECT * FROM quantum_input ORDER BY quantum_id, dataset_id",
    ];
    queries
        .iter()
        .map(|q| format!("{q}\n{}", ok(&["sql", s(repo), q, "--json"])))
        .collect::<Vec<_>>()
        .join("\n")
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp runs");
    assert!(status.success());
}

/// Files under `dir` whose path contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains(needle) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn end_to_end_merge_then_query_status_report_and_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, bundle) = campaign(dir.path(), 10, 10);

    let status = json(&["status", s(&bundle), "--json"]);
    let tasks = status["tasks"].as_array().unwrap();
    let done: Vec<(String, u64)> = tasks
        .iter()
        .map(|t| {
            (
                t["task"].as_str().unwrap().to_string(),
                t["done"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        done,
        vec![
            ("isr".into(), 100),
            ("characterize".into(), 100),
            ("summarize".into(), 10)
        ]
    );

    let summary = merge_json(&repo, &bundle);
    assert_eq!(summary["datasets_inserted"], 210);
    assert_eq!(summary["quanta_recorded"], 210);
    assert_eq!(
        summary["verification_failures"].as_array().unwrap().len(),
        0
    );

    for collection in [RUN, CHAIN] {
        assert_eq!(
            count_datasets(&repo, collection, "postISRCCD"),
            100,
            "{collection}"
        );
        assert_eq!(
            count_datasets(&repo, collection, "icExp"),
            100,
            "{collection}"
        );
        assert_eq!(
            count_datasets(&repo, collection, "expSummary"),
            10,
            "{collection}"
        );
    }
    // The chain searches the output first, then the inputs.
    assert_eq!(count_datasets(&repo, CHAIN, "raw"), 100);
    let chain = ok(&["sql", s(&repo), "SELECT c.name FROM collection_chain ch JOIN collection c ON c.id = ch.child_id ORDER BY ch.position", "--json"]);
    let chain: Value = serde_json::from_str(&chain).unwrap();
    assert_eq!(
        chain,
        serde_json::json!([{"name": RUN}, {"name": "Cam/raw"}])
    );

    // Provenance of one expSummary: its summarize quantum, 10 icExp inputs,
    // and back through characterize and isr to exactly 10 raw datasets.
    let summaries = json(&[
        "query-datasets",
        s(&repo),
        "--collections",
        RUN,
        "--dataset-type",
        "expSummary",
        "--where",
        "exposure = 3",
        "--json",
    ]);
    let id = summaries[0]["id"].as_str().unwrap().to_string();
    let graph = json(&["provenance", s(&repo), &id, "--json"]);
    let quanta = graph["quanta"].as_array().unwrap();
    let by_task = |label: &str| {
        quanta
            .iter()
            .filter(|q| q["task_label"] == label)
            .collect::<Vec<_>>()
    };
    let summarize = by_task("summarize");
    assert_eq!(summarize.len(), 1);
    assert_eq!(summarize[0]["data_id"]["exposure"], 3);
    assert_eq!(summarize[0]["status"], "succeeded");
    assert!(
        summarize[0]["config"].is_object(),
        "the task config is shown: {}",
        summarize[0]
    );
    let inputs = summarize[0]["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 10);
    let datasets = graph["datasets"].as_array().unwrap();
    let type_of = |id: &Value| {
        datasets
            .iter()
            .find(|d| d["id"] == *id)
            .map(|d| d["dataset_type"].as_str().unwrap().to_string())
    };
    assert!(inputs
        .iter()
        .all(|i| type_of(&i["dataset_id"]).as_deref() == Some("icExp")));
    assert_eq!(by_task("characterize").len(), 10);
    assert_eq!(by_task("isr").len(), 10);
    let raws: Vec<&Value> = datasets
        .iter()
        .filter(|d| d["dataset_type"] == "raw")
        .collect();
    assert_eq!(raws.len(), 10);
    assert!(raws
        .iter()
        .all(|d| d["data_id"]["exposure"] == 3 && d["produced_by"].is_null()));
    assert_eq!(graph["sources"].as_array().unwrap().len(), 10);
    assert_eq!(datasets.len(), 1 + 10 + 10 + 10);

    // The text form names the quantum and the raw inputs.
    let text = ok(&["provenance", s(&repo), &id]);
    assert!(text.contains("made by summarize"), "{text}");
    assert!(text.contains("10 not produced by any quantum"), "{text}");

    // Depth 1: the summarize quantum and its inputs only.
    let shallow = json(&["provenance", s(&repo), &id, "--depth", "1", "--json"]);
    assert_eq!(shallow["quanta"].as_array().unwrap().len(), 1);
    assert_eq!(shallow["truncated"], true);

    // Downstream of one raw: its isr, characterize and summarize quanta.
    let raw_id = raws[0]["id"].as_str().unwrap();
    let down = json(&["provenance", s(&repo), raw_id, "--downstream", "--json"]);
    let labels: Vec<&str> = down["quanta"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["task_label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, vec!["isr", "characterize", "summarize"]);

    let report = json(&["report", s(&repo), RUN, "--json"]);
    let lines: Vec<(String, u64, u64)> = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["task"].as_str().unwrap().to_string(),
                t["quanta"].as_u64().unwrap(),
                t["by_status"]["succeeded"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            ("isr".into(), 100, 100),
            ("characterize".into(), 100, 100),
            ("summarize".into(), 10, 10)
        ]
    );
    assert!(
        report["tasks"][0]["timing"]["max_wall_seconds"]
            .as_f64()
            .unwrap()
            >= 0.0
    );
    assert!(report["failures"].as_array().unwrap().is_empty());

    // Unknown dataset: a usage error.
    fails_with(
        2,
        &[
            "provenance",
            s(&repo),
            "00000000-0000-0000-0000-000000000001",
        ],
    );
}

#[test]
fn merging_twice_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, bundle) = campaign(dir.path(), 3, 4);
    let first = merge_json(&repo, &bundle);
    assert_eq!(first["datasets_inserted"], 3 * 4 * 2 + 3);
    let before = dump(&repo);
    let second = merge_json(&repo, &bundle);
    assert_eq!(second["datasets_inserted"], 0);
    assert_eq!(second["quanta_recorded"], 0);
    assert_eq!(second["quanta_already_merged"], 3 * 4 * 2 + 3);
    assert_eq!(dump(&repo), before);
    let text = ok(&["merge", s(&repo), s(&bundle)]);
    assert!(text.contains("datasets: 0 new"), "{text}");
}

/// Repos in the state before a merge, one per case of a kill test. On
/// SQLite each is a copy of a base campaign's directory. On PostgreSQL a
/// copy would share the base's namespace, so there is one campaign, put
/// back after each case by deleting, as the namespace's owner, the rows a
/// merge writes; the caller checks that it is then as before.
enum PreMergeRepos {
    Copies {
        base: PathBuf,
        dir: PathBuf,
        made: usize,
    },
    Reset {
        campaign: PathBuf,
        url: String,
    },
}

impl PreMergeRepos {
    fn new(dir: &Path) -> Self {
        let base = dir.join("base");
        std::fs::create_dir(&base).unwrap();
        campaign(&base, 4, 8);
        match common::test_registry() {
            None => Self::Copies {
                base,
                dir: dir.to_path_buf(),
                made: 0,
            },
            Some(url) => Self::Reset {
                campaign: base,
                url,
            },
        }
    }

    /// The next case: (repo, bundle), not merged.
    fn next(&mut self) -> (PathBuf, PathBuf) {
        let campaign = match self {
            Self::Copies { base, dir, made } => {
                *made += 1;
                let copy = dir.join(format!("case{made}"));
                copy_dir(base, &copy);
                copy
            }
            Self::Reset { campaign, url } => {
                let config = std::fs::read_to_string(campaign.join("repo/registry.yaml")).unwrap();
                let namespace = config
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("namespace: "))
                    .expect("registry.yaml names its namespace")
                    .trim()
                    .to_string();
                assert!(namespace
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_'));
                common::psql(
                    url,
                    &format!(
                        "SET search_path TO {namespace}; \
                         DELETE FROM quantum_input; DELETE FROM run_provenance; \
                         DELETE FROM dataset WHERE producer IS NOT NULL; DELETE FROM quantum;"
                    ),
                )
                .expect("the merge's rows are deleted");
                campaign.clone()
            }
        };
        (campaign.join("repo"), campaign.join("campaign.qb"))
    }
}

/// A merge killed at any point (inside a commit, or by SIGKILL after a
/// delay), then rerun, ends with exactly the rows of an uninterrupted
/// merge: on SQLite and on PostgreSQL, where the server rolls back the
/// killed client's transaction.
#[test]
fn a_killed_merge_rerun_ends_like_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut repos = PreMergeRepos::new(dir.path());
    let (repo, bundle) = repos.next();
    let before = dump(&repo);
    ok(&["merge", s(&repo), s(&bundle)]);
    let expected = dump(&repo);

    // Transactions of two quanta, their chunks spread over the registry's
    // writers (two connections on PostgreSQL): the same rows.
    let (repo, bundle) = repos.next();
    let out = quanta()
        .args(["merge", s(&repo), s(&bundle)])
        .env("QUANTA_MERGE_BATCH", "2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dump(&repo), expected, "transactions of two quanta");

    // Killed inside the registry's (n+1)th commit (setup commits included,
    // then one quantum per transaction): a kill point counted by the
    // writers themselves, so how far they got does not depend on
    // scheduling, except that on PostgreSQL the other writer's commit may
    // be in flight when one is killed and land (`concurrent_writers`).
    let writers = if common::test_registry().is_some() {
        2
    } else {
        1
    };
    for n in [0u64, 1, 7, 40] {
        let (repo, bundle) = repos.next();
        assert_eq!(dump(&repo), before, "the case's repo is as before a merge");
        let out = quanta()
            .args(["merge", s(&repo), s(&bundle)])
            .env("QUANTA_MERGE_BATCH", "1")
            .env("QUANTA_TEST_KILL_AT", format!("registry.commit:{}", n + 1))
            .output()
            .unwrap();
        assert!(!out.status.success(), "the merge was killed");
        let recorded = json(&[
            "sql",
            s(&repo),
            "SELECT count(*) AS n FROM quantum",
            "--json",
        ]);
        let recorded = recorded[0]["n"].as_u64().unwrap();
        // At most the n commits before the killed one recorded quanta,
        // and the other writers' commits in flight.
        assert!(
            recorded < n + writers && recorded < 72,
            "killed after {n} transactions: {recorded} quanta recorded"
        );
        ok(&["merge", s(&repo), s(&bundle)]);
        assert_eq!(dump(&repo), expected, "killed after {n} transactions");
    }

    // SIGKILL after varied delays and batch sizes, so kills land before, between and
    // inside transactions.
    for (delay_ms, batch) in [(0u64, "1"), (30, "1"), (80, "2"), (150, "1"), (250, "3")] {
        let (repo, bundle) = repos.next();
        assert_eq!(dump(&repo), before, "the case's repo is as before a merge");
        let mut child = quanta()
            .args(["merge", s(&repo), s(&bundle)])
            .env("QUANTA_MERGE_BATCH", batch)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL; may find it already finished
        let _ = child.wait();
        ok(&["merge", s(&repo), s(&bundle)]);
        assert_eq!(
            dump(&repo),
            expected,
            "kill after {delay_ms} ms with batches of {batch}"
        );
    }
}

#[test]
fn an_altered_output_is_named_not_registered_and_the_rest_is() {
    altered_and_missing_outputs(&[]);
}

/// The same with files verified by plain system calls instead of io_uring:
/// both paths report alike.
#[test]
fn an_altered_output_is_reported_alike_without_io_uring() {
    altered_and_missing_outputs(&[("QUANTA_IO_URING", "off")]);
    let dir = tempfile::tempdir().unwrap();
    let out = quanta()
        .args(["merge", s(&dir.path().join("repo")), "b.qb"])
        .env("QUANTA_IO_URING", "sometimes")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("QUANTA_IO_URING=sometimes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn altered_and_missing_outputs(env: &[(&str, &str)]) {
    let run = |args: &[&str]| {
        quanta()
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let (repo, bundle) = campaign(dir.path(), 3, 3);
    let icexps = files_containing(&repo.join("datastore"), "icExp");
    assert_eq!(icexps.len(), 9);
    let altered = &icexps[4];
    let mut bytes = std::fs::read(altered).unwrap();
    bytes[0] ^= 0x20; // same size, other content
    std::fs::write(altered, &bytes).unwrap();
    let posts = files_containing(&repo.join("datastore"), "postISRCCD");
    std::fs::remove_file(&posts[0]).unwrap();

    let out = run(&["merge", s(&repo), s(&bundle)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rel = |p: &Path| {
        p.strip_prefix(repo.join("datastore"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    assert!(
        stderr.contains(&rel(altered)) && stderr.contains("checksum"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&rel(&posts[0])) && stderr.contains("missing"),
        "{stderr}"
    );
    assert_eq!(count_datasets(&repo, RUN, "icExp"), 8);
    assert_eq!(count_datasets(&repo, RUN, "postISRCCD"), 8);
    assert_eq!(count_datasets(&repo, RUN, "expSummary"), 3);
    let partial = json(&[
        "sql",
        s(&repo),
        "SELECT count(*) AS n FROM quantum WHERE status = 'partial'",
        "--json",
    ]);
    assert_eq!(partial[0]["n"], 2);

    // Once the file is put back, a rerun registers it.
    bytes[0] ^= 0x20;
    std::fs::write(altered, &bytes).unwrap();
    let out = run(&["merge", s(&repo), s(&bundle)]);
    assert_eq!(out.status.code(), Some(1), "the removed file still fails");
    assert_eq!(count_datasets(&repo, RUN, "icExp"), 9);
}

#[test]
fn incomplete_campaigns_and_foreign_journals() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, bundle) = preflight(dir.path(), 2, 3, &pipeline("reference.yaml"));
    // Only exposure 0 (3 isr, 3 characterize, 1 summarize) has run.
    ok(&["worker", s(&bundle), "--cluster", "exposure=0"]);
    let err = fails_with(2, &["merge", s(&repo), s(&bundle)]);
    assert!(err.contains("--incomplete"), "{err}");
    let status = json(&["status", s(&bundle), "--json"]);
    let col = |k: &str| -> Vec<u64> {
        status["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t[k].as_u64().unwrap())
            .collect()
    };
    assert_eq!(col("done"), vec![3, 3, 1]);
    assert_eq!(col("pending"), vec![3, 3, 1]);

    let partial = json(&["merge", s(&repo), s(&bundle), "--incomplete", "--json"]);
    assert_eq!(partial["datasets_inserted"], 7);
    assert_eq!(count_datasets(&repo, RUN, "postISRCCD"), 3);
    assert_eq!(count_datasets(&repo, RUN, "expSummary"), 1);

    ok(&["run", s(&bundle)]);
    let rest = merge_json(&repo, &bundle);
    assert_eq!(rest["datasets_inserted"], 7);
    assert_eq!(rest["quanta_already_merged"], 7);
    assert_eq!(count_datasets(&repo, CHAIN, "icExp"), 6);

    // A journal of another bundle in the journal directory is reported.
    let other = dir.path().join("other.qb");
    ok(&[
        "preflight",
        s(&repo),
        "--pipeline",
        s(&pipeline("reference.yaml")),
        "--input",
        "Cam/raw",
        "--output-run",
        "u/test/other",
        "--bundle",
        s(&other),
    ]);
    ok(&["run", s(&other)]);
    let journals = quanta_core::journal_dir_for(&bundle);
    for j in quanta_core::list_journals(&quanta_core::journal_dir_for(&other)).unwrap() {
        std::fs::copy(
            &j,
            journals.join(format!(
                "foreign-{}",
                j.file_name().unwrap().to_string_lossy()
            )),
        )
        .unwrap();
    }
    let out = run(&["merge", s(&repo), s(&bundle)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("belongs to bundle"), "{stderr}");
}

#[test]
fn failed_and_blocked_quanta_are_recorded_not_registered() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(pipeline("reference.yaml")).unwrap();
    let failing = yaml.replacen(
        "    class: examples.Characterize\n",
        "    class: examples.Characterize\n    config: {fail_on: {exposure: 1, detector: 2}}\n",
        1,
    );
    assert_ne!(
        failing, yaml,
        "the reference pipeline has a characterize task"
    );
    let pipeline_file = dir.path().join("failing.yaml");
    std::fs::write(&pipeline_file, failing).unwrap();
    let (repo, bundle) = preflight(dir.path(), 2, 3, &pipeline_file);
    let out = run(&["run", s(&bundle)]);
    assert_eq!(out.status.code(), Some(1));

    let status = json(&["status", s(&bundle), "--json"]);
    assert_eq!(status["tasks"][1]["failed"], 1);
    assert_eq!(status["tasks"][2]["blocked"], 1);
    assert_eq!(status["failures"][0]["task"], "characterize");
    let text = ok(&["status", s(&bundle)]);
    assert!(
        text.contains("failures:") && text.contains("characterize"),
        "{text}"
    );

    let out = run(&["merge", s(&repo), s(&bundle), "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "failed quanta make the merge exit 1"
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["verification_failures"].as_array().unwrap().len(),
        0
    );
    assert_eq!(count_datasets(&repo, RUN, "icExp"), 5);
    assert_eq!(count_datasets(&repo, RUN, "expSummary"), 1);

    let report = json(&["report", s(&repo), RUN, "--json"]);
    assert_eq!(report["tasks"][1]["by_status"]["failed"], 1);
    assert_eq!(report["tasks"][2]["by_status"]["blocked"], 1);
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2);
    assert!(
        failures[0]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{report}"
    );
    let outputs = json(&[
        "sql", s(&repo),
        "SELECT count(*) AS n FROM dataset d JOIN quantum q ON q.id = d.producer WHERE q.status <> 'succeeded'",
        "--json",
    ]);
    assert_eq!(outputs[0]["n"], 0);
}
