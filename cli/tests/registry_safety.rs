//! Issue 16, registry side, end to end with the real binary: a bundle of
//! another repository is refused before anything is written, `--clobber`
//! over merged outputs merges, concurrent registry writers wait for each
//! other, and the smaller refusals (chain, long `--where`, `quanta sql`,
//! data IDs, dimension records, exit codes, errors printed once).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{fails_with, make_reference_repo, ok, quanta, run};
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp paths")
}

fn reference_pipeline() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipelines/reference.yaml")
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).expect("JSON output")
}

fn preflight(repo: &Path, run_name: &str, bundle: &Path, extra: &[&str]) {
    let pipeline = reference_pipeline();
    let mut args = vec![
        "preflight",
        s(repo),
        "--pipeline",
        s(&pipeline),
        "--input",
        "Cam/raw",
        "--output-run",
        run_name,
        "--bundle",
        s(bundle),
    ];
    args.extend_from_slice(extra);
    ok(&args);
}

fn repository_id(repo: &Path) -> String {
    let v = json(&[
        "sql",
        s(repo),
        "SELECT value FROM quanta_meta WHERE key = 'repository_id'",
        "--json",
    ]);
    v[0]["value"].as_str().expect("a repository_id").to_string()
}

/// Every row of every table a merge or preflight writes, in a fixed order.
fn dump(repo: &Path) -> String {
    [
        "SELECT * FROM quanta_meta ORDER BY key",
        "SELECT * FROM dataset_type ORDER BY name",
        "SELECT * FROM collection ORDER BY name",
        "SELECT * FROM collection_chain ORDER BY parent_id, position",
        "SELECT * FROM dataset ORDER BY id",
        "SELECT * FROM run_provenance ORDER BY run_id, bundle_id",
        "SELECT * FROM quantum ORDER BY id",
        "SELECT * FROM quantum_input ORDER BY quantum_id, dataset_id",
    ]
    .iter()
    .map(|q| format!("{q}\n{}", ok(&["sql", s(repo), q, "--json"])))
    .collect::<Vec<_>>()
    .join("\n")
}

/// (UUID, path) of every dataset of `dataset_type` in `run`.
fn datasets(repo: &Path, run_name: &str, dataset_type: &str) -> BTreeSet<(String, String)> {
    let v = json(&[
        "sql",
        s(repo),
        &format!(
            "SELECT d.id, d.path FROM dataset d JOIN collection c ON c.id = d.run_id \
             JOIN dataset_type t ON t.id = d.dataset_type_id \
             WHERE c.name = '{run_name}' AND t.name = '{dataset_type}'"
        ),
        "--json",
    ]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

// ---- item 5: a bundle of another repository -------------------------------

#[test]
fn a_bundle_made_from_another_repository_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let repo_a = make_reference_repo(&a_dir, 2, 2);
    let repo_b = make_reference_repo(&b_dir, 2, 2);
    let bundle = dir.path().join("a.qb");
    preflight(&repo_a, "u/test/run", &bundle, &[]);
    ok(&["run", s(&bundle), "--jobs", "2"]);

    let before = dump(&repo_b);
    let err = fails_with(2, &["merge", s(&repo_b), s(&bundle)]);
    let (id_a, id_b) = (repository_id(&repo_a), repository_id(&repo_b));
    assert_ne!(id_a, id_b);
    assert!(err.contains(&id_a) && err.contains(&id_b), "{err}");
    assert!(err.contains(s(&bundle)), "{err}");
    assert_eq!(
        before,
        dump(&repo_b),
        "the refused merge wrote to the registry"
    );
    // Into its own repository it merges.
    ok(&["merge", s(&repo_a), s(&bundle)]);
}

#[test]
fn a_registry_without_identity_gets_one_from_its_first_writer() {
    if common::skipped_on_postgres(
        "it deletes the identity from the SQLite file with python's sqlite3",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 1, 1);
    let db = repo.join("registry.sqlite3");
    // As a registry made before repositories had an identity.
    let status = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"DELETE FROM quanta_meta WHERE key='repository_id'\"); c.commit()")
        .arg(&db)
        .status()
        .expect("python3 runs");
    assert!(status.success());
    let bundle = dir.path().join("b.qb");
    preflight(&repo, "u/test/run", &bundle, &[]);
    let id = repository_id(&repo);
    assert_eq!(id.len(), 36, "{id}");
    ok(&["run", s(&bundle), "--jobs", "2"]);
    ok(&["merge", s(&repo), s(&bundle)]);
    assert_eq!(repository_id(&repo), id);
}

// ---- item 6: --clobber over merged outputs --------------------------------

#[test]
fn clobber_over_merged_outputs_replaces_them_at_merge() {
    clobber_then_merge(None);
}

/// Killed after its first committed batch (of one quantum), the clobbering
/// merge rerun ends as an uninterrupted one: replaced rows, superseded
/// quanta and replaced files all gone.
#[test]
fn a_killed_clobbering_merge_rerun_converges() {
    clobber_then_merge(Some(1));
}

fn clobber_then_merge(abort_after_batches: Option<u32>) {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 2, 3);
    let run_name = "u/test/run";
    let first = dir.path().join("first.qb");
    preflight(&repo, run_name, &first, &[]);
    ok(&["run", s(&first), "--jobs", "2"]);
    ok(&["merge", s(&repo), s(&first)]);
    let types = ["postISRCCD", "icExp", "expSummary"];
    let old: Vec<_> = types.iter().map(|t| datasets(&repo, run_name, t)).collect();
    assert_eq!(old[0].len(), 6);

    let second = dir.path().join("second.qb");
    preflight(&repo, run_name, &second, &["--clobber"]);
    ok(&["run", s(&second), "--jobs", "2"]);
    let mut replaced_before = 0;
    if let Some(after) = abort_after_batches {
        let out = quanta()
            .args(["merge", s(&repo), s(&second)])
            .env("QUANTA_MERGE_BATCH", "1")
            .env("QUANTA_MERGE_ABORT_AFTER", after.to_string())
            .output()
            .unwrap();
        assert!(!out.status.success(), "the merge was not killed");
        replaced_before = types
            .iter()
            .zip(&old)
            .map(|(t, old)| datasets(&repo, run_name, t).difference(old).count())
            .sum();
        assert!(
            replaced_before > 0 && replaced_before < 14,
            "{replaced_before}"
        );
    }
    let summary = json(&["merge", s(&repo), s(&second), "--json"]);
    assert_eq!(summary["verification_failures"], serde_json::json!([]));
    let replaced = summary["datasets_replaced"].as_u64().unwrap() as usize;
    assert_eq!(replaced + replaced_before, 6 + 6 + 2, "{summary}");

    let datastore = repo.join("datastore");
    for (t, old) in types.iter().zip(&old) {
        let new = datasets(&repo, run_name, t);
        assert_eq!(new.len(), old.len(), "{t}");
        assert!(
            new.is_disjoint(old),
            "{t}: old datasets are still registered"
        );
        for (_, path) in &new {
            assert!(datastore.join(path).is_file(), "{path}");
        }
        for (_, path) in old {
            assert!(
                !datastore.join(path).exists(),
                "{path}: replaced file left behind"
            );
        }
    }
    // Only the second bundle's quanta remain: the first's were superseded.
    let quanta = json(&[
        "sql",
        s(&repo),
        "SELECT DISTINCT bundle_id FROM quantum",
        "--json",
    ]);
    assert_eq!(quanta.as_array().unwrap().len(), 1, "{quanta}");
    // The new datasets read back, and a second merge changes nothing.
    let any = new_postisr_data_id(&repo, run_name);
    ok(&[
        "get",
        s(&repo),
        "postISRCCD",
        "--data-id",
        &any,
        "--collections",
        run_name,
    ]);
    let again = json(&["merge", s(&repo), s(&second), "--json"]);
    assert_eq!(again["datasets_inserted"], 0);
}

fn new_postisr_data_id(repo: &Path, run_name: &str) -> String {
    let v = json(&[
        "query-datasets",
        s(repo),
        "--collections",
        run_name,
        "--dataset-type",
        "postISRCCD",
        "--json",
    ]);
    let d = &v[0]["data_id"];
    format!(
        "instrument={},exposure={},detector={}",
        d["instrument"].as_str().unwrap(),
        d["exposure"],
        d["detector"]
    )
}

#[test]
fn clobber_of_a_dataset_still_in_use_is_refused_at_preflight() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 1, 2);
    let run_name = "u/test/run";
    let first = dir.path().join("first.qb");
    preflight(&repo, run_name, &first, &[]);
    ok(&["run", s(&first), "--jobs", "2"]);
    ok(&["merge", s(&repo), s(&first)]);
    let (id, _) = datasets(&repo, run_name, "icExp")
        .into_iter()
        .next()
        .unwrap();
    ok(&["collection", "create", s(&repo), "keep", "--type", "TAGGED"]);
    ok(&["collection", "tag", s(&repo), "keep", &id]);
    let before = dump(&repo);
    let second = dir.path().join("second.qb");
    let pipeline = reference_pipeline();
    let err = fails_with(
        2,
        &[
            "preflight",
            s(&repo),
            "--pipeline",
            s(&pipeline),
            "--input",
            "Cam/raw",
            "--output-run",
            run_name,
            "--bundle",
            s(&second),
            "--clobber",
        ],
    );
    assert!(
        err.contains(&id) && err.contains("TAGGED collection `keep`"),
        "{err}"
    );
    assert_eq!(before, dump(&repo));
    assert!(!second.exists());
}

// ---- item 7: concurrent registry writers and long readers -----------------

/// Two bundles of one repo, run, into two RUNs.
fn two_campaigns(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let repo = make_reference_repo(dir, 2, 3);
    let (a, b) = (dir.join("a.qb"), dir.join("b.qb"));
    preflight(&repo, "u/test/a", &a, &[]);
    preflight(&repo, "u/test/b", &b, &[]);
    ok(&["run", s(&a), "--jobs", "2"]);
    ok(&["run", s(&b), "--jobs", "2"]);
    (repo, a, b)
}

#[test]
fn two_merges_of_one_registry_at_once_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, b) = two_campaigns(dir.path());
    let spawn = |bundle: &Path| {
        quanta()
            .args(["merge", s(&repo), s(bundle)])
            .env("QUANTA_MERGE_BATCH", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(&a), spawn(&b));
    for child in [first, second] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(datasets(&repo, "u/test/a", "icExp").len(), 6);
    assert_eq!(datasets(&repo, "u/test/b", "icExp").len(), 6);
}

#[test]
fn a_merge_waits_for_the_writer_lock_and_says_for_whom() {
    if common::skipped_on_postgres(
        "it holds the SQLite lock file with flock(1); postgres_repo.rs holds the advisory lock",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = two_campaigns(dir.path());
    let lock = repo.join("registry.sqlite3.lock");
    std::fs::write(&lock, "merge pid 4242 on host elsewhere").unwrap();
    // Another process holds the lock until its stdin closes.
    let mut holder = Command::new("flock")
        .arg("-x")
        .arg(&lock)
        .args(["-c", "echo held; cat >/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("flock(1) runs");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");

    let mut merge = quanta()
        .args(["merge", s(&repo), s(&a)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(merge.stderr.take().unwrap());
    let mut said = String::new();
    stderr.read_line(&mut said).unwrap();
    assert!(
        said.contains("waiting for merge pid 4242 on host elsewhere to finish"),
        "{said}"
    );
    assert!(merge.try_wait().unwrap().is_none(), "merge did not wait");
    // Every writer waits, short ones included (the merge may hold it now).
    let mut create = quanta()
        .args([
            "collection",
            "create",
            s(&repo),
            "extra",
            "--type",
            "TAGGED",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    BufReader::new(create.stderr.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert!(said.contains("waiting for "), "{said}");
    drop(holder.stdin.take());
    holder.wait().unwrap();
    assert!(merge.wait().unwrap().success());
    assert!(create.wait().unwrap().success());
    assert_eq!(datasets(&repo, "u/test/a", "icExp").len(), 6);
}

#[test]
fn a_long_sql_query_does_not_hold_up_a_merge() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, _) = two_campaigns(dir.path());
    // Reads the registry (a snapshot held open) until its time limit, which
    // is shorter than SQLite's busy timeout (30 s): a merge whose final
    // checkpoint waited for readers would end after the reader.
    let mut reader = quanta()
        .args([
            "sql",
            s(&repo),
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
             SELECT count(*) FROM c, (SELECT 1 FROM dataset LIMIT 1) AS d",
            "--timeout",
            "20",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    ok(&["merge", s(&repo), s(&a)]);
    assert!(
        reader.try_wait().unwrap().is_none(),
        "the reader ended first: the merge waited for it"
    );
    reader.kill().unwrap();
    reader.wait().unwrap();
    assert_eq!(datasets(&repo, "u/test/a", "icExp").len(), 6);
}

#[test]
fn a_registry_locked_too_long_is_a_failure_of_the_work() {
    if common::skipped_on_postgres(
        "it locks the SQLite file with python's sqlite3 (SQLite's busy timeout)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 1, 1);
    let db = repo.join("registry.sqlite3");
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3,sys\n\
             c=sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('held', flush=True)\n\
             sys.stdin.read()\n",
        )
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    let err = fails_with(
        1,
        &["collection", "create", s(&repo), "x", "--type", "TAGGED"],
    );
    assert!(err.contains("the registry is busy"), "{err}");
    drop(holder.stdin.take());
    holder.wait().unwrap();
}

// ---- item 10: the smaller ones --------------------------------------------

#[test]
fn a_failed_collection_chain_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 1, 1);
    let err = fails_with(
        2,
        &[
            "collection",
            "chain",
            s(&repo),
            "my/chain",
            "Cam/raw",
            "missing",
        ],
    );
    assert!(err.contains("unknown collection `missing`"), "{err}");
    let listed = ok(&["collection", "list", s(&repo)]);
    assert!(!listed.contains("my/chain"), "{listed}");
    ok(&["collection", "chain", s(&repo), "my/chain", "Cam/raw"]);
    assert!(ok(&["collection", "list", s(&repo)]).contains("my/chain"));
}

#[test]
fn a_where_of_5000_or_terms_works() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 3, 2);
    let terms: Vec<String> = (0..5000)
        .map(|i| format!("exposure = {}", i % 7 + 100))
        .chain(["exposure = 1".to_string()])
        .collect();
    let expr = terms.join(" OR ");
    let v = json(&[
        "query-data-ids",
        s(&repo),
        "--dimensions",
        "exposure,detector",
        "--where",
        &expr,
        "--json",
    ]);
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    let and = (0..5000)
        .map(|_| "detector = 1".to_string())
        .collect::<Vec<_>>()
        .join(" AND ");
    let v = json(&[
        "query-data-ids",
        s(&repo),
        "--dimensions",
        "exposure,detector",
        "--where",
        &and,
        "--json",
    ]);
    assert_eq!(v.as_array().unwrap().len(), 3, "{v}");
}

#[test]
fn an_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 1, 1);
    // Errors wrapping another (`{0}` with `#[from]`, or a message naming its
    // source) printed the inner text a second time.
    let err = fails_with(
        2,
        &[
            "query-data-ids",
            s(&repo),
            "--dimensions",
            "exposure",
            "--where",
            "exposure >",
        ],
    );
    assert_eq!(err.matches("at column").count(), 1, "{err}");
    let err = fails_with(
        2,
        &[
            "get",
            s(&repo),
            "raw",
            "--data-id",
            "instrument=Cam,exposure=zero",
            "--collections",
            "Cam/raw",
        ],
    );
    assert_eq!(err.matches("zero").count(), 1, "{err}");
    let manifest = dir.path().join("m.csv");
    std::fs::write(
        &manifest,
        "path,instrument,exposure,detector
nowhere.json,Cam,0,0
",
    )
    .unwrap();
    let out = run(&[
        "ingest",
        s(&repo),
        "--run",
        "Cam/raw",
        "--dataset-type",
        "raw",
        "--manifest",
        s(&manifest),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

#[test]
fn quanta_sql_refuses_an_empty_query_and_stops_at_its_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 1, 1);
    for empty in ["", "  ", " -- only a comment"] {
        let err = fails_with(2, &["sql", s(&repo), empty]);
        assert!(
            err.contains("the SQL query is empty") || err.contains("holds no statement"),
            "{err}"
        );
        assert!(!err.contains("API misuse"), "{err}");
    }
    let err = fails_with(
        1,
        &[
            "sql",
            s(&repo),
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
            "--timeout",
            "1",
        ],
    );
    assert!(err.contains("time limit of 1 s"), "{err}");
    for bad in ["-1", "1e100", "NaN"] {
        let err = fails_with(2, &["sql", s(&repo), "SELECT 1", "--timeout", bad]);
        assert!(err.contains("--timeout"), "{err}");
    }
}

#[test]
fn a_duplicate_data_id_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 2, 1);
    let err = fails_with(
        2,
        &[
            "get",
            s(&repo),
            "raw",
            "--data-id",
            "instrument=Cam,exposure=0,detector=0,exposure=1",
            "--collections",
            "Cam/raw",
        ],
    );
    assert!(err.contains("`exposure` more than once"), "{err}");
}

#[test]
fn bad_dimension_records_are_refused_with_element_record_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 1, 1);
    let file = dir.path().join("bad.json");
    let exposure = |extra: Value| {
        let mut e = serde_json::json!({
            "instrument": "Cam", "id": 77, "physical_filter": "Cam-r",
            "group": "g0", "day_obs": 20261126,
        });
        e.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::json!({ "exposure": [e] })
    };
    std::fs::write(
        &file,
        exposure(serde_json::json!({"timespan_begin": 61000.5, "timespan_end": 61000.4}))
            .to_string(),
    )
    .unwrap();
    let err = fails_with(2, &["dimensions", "insert", s(&repo), s(&file)]);
    assert!(
        err.contains("exposure record #1")
            && err.contains("`timespan_begin` (61000.5) is after field `timespan_end` (61000.4)"),
        "{err}"
    );
    std::fs::write(
        &file,
        exposure(serde_json::json!({"obs_id": "a\u{0}b"})).to_string(),
    )
    .unwrap();
    let err = fails_with(2, &["dimensions", "insert", s(&repo), s(&file)]);
    assert!(
        err.contains("exposure record #1") && err.contains("field `obs_id`") && err.contains("NUL"),
        "{err}"
    );
    let listed = ok(&[
        "query-data-ids",
        s(&repo),
        "--dimensions",
        "exposure",
        "--json",
    ]);
    assert!(!listed.contains("77"), "{listed}");
}
