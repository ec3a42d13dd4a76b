//! The foundation through the real binary: repo creation, dimension records,
//! ingest, queries, Butler get, collections and the bad-input paths.

mod common;

use common::{fails_with, make_reference_repo, ok, quanta, raw_content};
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("valid JSON output")
}

fn count_rows(repo: &str, sql: &str) -> i64 {
    let out = json(&ok(&["sql", repo, sql, "--json"]));
    out[0]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_i64()
        .unwrap()
}

#[test]
fn reference_repo_query_and_get_back() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 10, 10);
    let repo_s = repo.to_str().unwrap();

    let all = json(&ok(&[
        "query-datasets",
        repo_s,
        "--collections",
        "Cam/raw",
        "--json",
    ]));
    assert_eq!(all.as_array().unwrap().len(), 100);

    let some = json(&ok(&[
        "query-datasets",
        repo_s,
        "--collections",
        "Cam/raw",
        "--dataset-type",
        "raw",
        "--where",
        "exposure IN (2..4) AND detector != 3",
        "--json",
    ]));
    let some = some.as_array().unwrap();
    assert_eq!(some.len(), 27);
    for d in some {
        let e = d["data_id"]["exposure"].as_i64().unwrap();
        let det = d["data_id"]["detector"].as_i64().unwrap();
        assert!((2..=4).contains(&e) && det != 3, "{d}");
    }

    // Metadata and implied dimensions in the where clause.
    let by_band = json(&ok(&[
        "query-datasets",
        repo_s,
        "--collections",
        "Cam/raw",
        "--where",
        "band = 'r' AND exposure.exposure_time > 10 AND detector IN (0..9:3)",
        "--json",
    ]));
    assert_eq!(by_band.as_array().unwrap().len(), 40);
    let with_bind = json(&ok(&[
        "query-data-ids",
        repo_s,
        "--dimensions",
        "exposure",
        "--where",
        "exposure > :low",
        "--bind",
        "low=6",
        "--json",
    ]));
    assert_eq!(with_bind.as_array().unwrap().len(), 3);

    // Byte-identical read-back through the Butler.
    let out = dir.path().join("back.json");
    ok(&[
        "get",
        repo_s,
        "raw",
        "--data-id",
        "instrument=Cam,exposure=3,detector=4",
        "--collections",
        "Cam/raw",
        "--output",
        out.to_str().unwrap(),
    ]);
    let original = std::fs::read(dir.path().join("raw_files/raw_3_4.json")).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), original);
    let value = json(&ok(&[
        "get",
        repo_s,
        "raw",
        "--data-id",
        "instrument=Cam,exposure=3,detector=4",
        "--collections",
        "Cam/raw",
    ]));
    assert_eq!(value, raw_content(3, 4));
}

#[test]
fn where_clause_errors_are_clear_and_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 3, 3);
    let repo_s = repo.to_str().unwrap();
    let query = |expr: &str| {
        fails_with(
            2,
            &[
                "query-datasets",
                repo_s,
                "--collections",
                "Cam/raw",
                "--where",
                expr,
            ],
        )
    };

    let unknown = query("exposre = 3");
    assert!(
        unknown.contains("exposre") && unknown.contains("column 1"),
        "{unknown}"
    );

    let syntax = query("exposure IN (1, 2");
    assert!(syntax.contains("column"), "{syntax}");

    let injection = query("detector = 1; DROP TABLE dataset");
    assert!(injection.contains("column 13"), "{injection}");
    assert_eq!(count_rows(repo_s, "SELECT count(*) FROM dataset"), 9);

    let quoted = json(&ok(&[
        "query-datasets",
        repo_s,
        "--collections",
        "Cam/raw",
        "--where",
        "instrument = 'Cam''; DROP TABLE dataset; --'",
        "--json",
    ]));
    assert_eq!(quoted.as_array().unwrap().len(), 0);
    assert_eq!(count_rows(repo_s, "SELECT count(*) FROM dataset"), 9);

    let type_error = query("instrument = 3");
    assert!(type_error.contains("column 14"), "{type_error}");
}

#[test]
fn sql_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 2, 2);
    let repo_s = repo.to_str().unwrap();
    for statement in [
        "DELETE FROM dataset",
        "UPDATE collection SET name = 'x'",
        "INSERT INTO collection (name, type) VALUES ('x', 'RUN')",
        "DROP TABLE dataset",
        "PRAGMA user_version = 7",
        "ATTACH DATABASE '/tmp/quanta-attack.db' AS evil",
    ] {
        fails_with(2, &["sql", repo_s, statement]);
    }
    assert!(!std::path::Path::new("/tmp/quanta-attack.db").exists());
    assert_eq!(count_rows(repo_s, "SELECT count(*) FROM dataset"), 4);
    assert_eq!(
        count_rows(repo_s, "SELECT count(*) FROM collection WHERE name = 'x'"),
        0
    );
}

#[test]
fn dimension_records_are_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 2, 2);
    let repo_s = repo.to_str().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"detector": [{"instrument": "Cam", "id": 50, "full_name": "D050"}],
            "exposure": [{"instrument": "Cam", "id": 77, "physical_filter": "Cam-x", "day_obs": 20261126, "group": "g0"}]}"#,
    )
    .unwrap();
    let err = fails_with(2, &["dimensions", "insert", repo_s, bad.to_str().unwrap()]);
    assert!(
        err.contains("physical_filter")
            && err.contains("Cam-x")
            && err.contains("exposure record #1"),
        "{err}"
    );
    assert_eq!(
        count_rows(repo_s, "SELECT count(*) FROM detector"),
        2,
        "detector 50 must not be inserted"
    );

    let dup = dir.path().join("dup.csv");
    std::fs::write(&dup, "instrument,id,full_name\nCam,9,D009\nCam,1,D001\n").unwrap();
    let err = fails_with(
        2,
        &[
            "dimensions",
            "insert",
            repo_s,
            dup.to_str().unwrap(),
            "--element",
            "detector",
        ],
    );
    assert!(
        err.contains("already exists") && err.contains("D001"),
        "{err}"
    );
    assert_eq!(count_rows(repo_s, "SELECT count(*) FROM detector"), 2);

    let good = dir.path().join("good.csv");
    std::fs::write(&good, "instrument,id,full_name\nCam,9,D009\n").unwrap();
    ok(&[
        "dimensions",
        "insert",
        repo_s,
        good.to_str().unwrap(),
        "--element",
        "detector",
    ]);
    assert_eq!(count_rows(repo_s, "SELECT count(*) FROM detector"), 3);
}

#[test]
fn hostile_data_id_values_stay_inside_the_datastore() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 1, 1);
    let repo_s = repo.to_str().unwrap();
    let records = dir.path().join("evil.json");
    std::fs::write(
        &records,
        r#"{"instrument": [{"name": "../../etc"}, {"name": "/abs/path"}]}"#,
    )
    .unwrap();
    ok(&["dimensions", "insert", repo_s, records.to_str().unwrap()]);
    ok(&[
        "dataset-type",
        "register",
        repo_s,
        "blob",
        "--dimensions",
        "instrument",
        "--storage-class",
        "Bytes",
    ]);
    let payload = dir.path().join("payload.bin");
    std::fs::write(&payload, b"\x00\x01secret").unwrap();
    for name in ["../../etc", "/abs/path"] {
        ok(&[
            "ingest",
            repo_s,
            "--run",
            "Cam/raw",
            "--dataset-type",
            "blob",
            "--data-id",
            &format!("instrument={name}"),
            payload.to_str().unwrap(),
        ]);
    }
    let found = json(&ok(&[
        "query-datasets",
        repo_s,
        "--collections",
        "Cam/raw",
        "--dataset-type",
        "blob",
        "--json",
    ]));
    let datastore = repo.join("datastore").canonicalize().unwrap();
    for d in found.as_array().unwrap() {
        let path = d["stored"]["path"].as_str().unwrap();
        assert!(
            !path.split('/').any(|c| c == ".." || c.is_empty()),
            "{path}"
        );
        let abs = datastore.join(path).canonicalize().unwrap();
        assert!(
            abs.starts_with(&datastore),
            "{} escapes {}",
            abs.display(),
            datastore.display()
        );
    }
    assert!(!dir.path().join("etc").exists());
}

#[test]
fn corrupt_or_foreign_repos_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A file given as REPO.
    let file = dir.path().join("not_a_repo");
    std::fs::write(&file, "hello").unwrap();
    let err = fails_with(2, &["collection", "list", file.to_str().unwrap()]);
    assert!(err.contains("not a repo"), "{err}");
    // A directory whose registry file is garbage.
    let garbage = dir.path().join("garbage");
    std::fs::create_dir(&garbage).unwrap();
    std::fs::write(garbage.join("registry.sqlite3"), vec![0xAB; 8192]).unwrap();
    let err = fails_with(2, &["collection", "list", garbage.to_str().unwrap()]);
    assert!(err.contains("not a quanta registry"), "{err}");
    // A real SQLite database made by someone else.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    let conn = rusqlite::Connection::open(foreign.join("registry.sqlite3")).unwrap();
    conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(conn);
    let err = fails_with(2, &["collection", "list", foreign.to_str().unwrap()]);
    assert!(err.contains("not one created by quanta"), "{err}");
    // A missing directory.
    let err = fails_with(
        2,
        &[
            "collection",
            "list",
            dir.path().join("nope").to_str().unwrap(),
        ],
    );
    assert!(err.contains("no such repo"), "{err}");
}

#[test]
fn collections_search_in_chain_order() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 1, 2);
    let repo_s = repo.to_str().unwrap();
    ok(&[
        "collection",
        "create",
        repo_s,
        "u/alice/fix",
        "--type",
        "RUN",
    ]);
    let fixed = dir.path().join("fixed.json");
    std::fs::write(&fixed, r#"{"fixed": true}"#).unwrap();
    ok(&[
        "ingest",
        repo_s,
        "--run",
        "u/alice/fix",
        "--dataset-type",
        "raw",
        "--data-id",
        "instrument=Cam,exposure=0,detector=1",
        fixed.to_str().unwrap(),
    ]);
    ok(&[
        "collection",
        "chain",
        repo_s,
        "u/alice/chain",
        "u/alice/fix",
        "Cam/raw",
    ]);
    let found = json(&ok(&[
        "query-datasets",
        repo_s,
        "--collections",
        "u/alice/chain",
        "--json",
    ]));
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 2, "find-first keeps one per data ID");
    let runs: Vec<&str> = found.iter().map(|d| d["run"].as_str().unwrap()).collect();
    assert!(
        runs.contains(&"u/alice/fix") && runs.contains(&"Cam/raw"),
        "{runs:?}"
    );
    let value = json(&ok(&[
        "get",
        repo_s,
        "raw",
        "--data-id",
        "instrument=Cam,exposure=0,detector=1",
        "--collections",
        "u/alice/chain",
    ]));
    assert_eq!(value, serde_json::json!({"fixed": true}));
    let everything = json(&ok(&[
        "query-datasets",
        repo_s,
        "--collections",
        "u/alice/chain",
        "--all",
        "--json",
    ]));
    assert_eq!(everything.as_array().unwrap().len(), 3);

    // A cycle is refused.
    ok(&["collection", "chain", repo_s, "outer", "u/alice/chain"]);
    let err = fails_with(
        2,
        &["collection", "chain", repo_s, "u/alice/chain", "outer"],
    );
    assert!(err.contains("cycle"), "{err}");

    // TAGGED collections hold chosen datasets.
    ok(&["collection", "create", repo_s, "best", "--type", "TAGGED"]);
    let id = found[0]["id"].as_str().unwrap();
    ok(&["collection", "tag", repo_s, "best", id]);
    let tagged = json(&ok(&[
        "query-datasets",
        repo_s,
        "--collections",
        "best",
        "--json",
    ]));
    assert_eq!(tagged.as_array().unwrap().len(), 1);
    assert_eq!(tagged[0]["id"].as_str().unwrap(), id);
}

#[test]
fn calibration_validity_ranges_do_not_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 1, 1);
    let repo_s = repo.to_str().unwrap();
    ok(&[
        "dataset-type",
        "register",
        repo_s,
        "bias",
        "--dimensions",
        "instrument,detector",
        "--storage-class",
        "Json",
        "--calibration",
    ]);
    ok(&[
        "collection",
        "create",
        repo_s,
        "Cam/calib/run",
        "--type",
        "RUN",
    ]);
    ok(&[
        "collection",
        "create",
        repo_s,
        "Cam/calib",
        "--type",
        "CALIBRATION",
    ]);
    let mut ids = Vec::new();
    for (i, run) in ["Cam/calib/run", "u/second"].iter().enumerate() {
        ok(&["collection", "create", repo_s, run, "--type", "RUN"]);
        let f = dir.path().join(format!("bias{i}.json"));
        std::fs::write(&f, format!(r#"{{"level": {i}}}"#)).unwrap();
        ok(&[
            "ingest",
            repo_s,
            "--run",
            run,
            "--dataset-type",
            "bias",
            "--data-id",
            "instrument=Cam,detector=0",
            f.to_str().unwrap(),
        ]);
        let found = json(&ok(&[
            "query-datasets",
            repo_s,
            "--collections",
            run,
            "--dataset-type",
            "bias",
            "--json",
        ]));
        ids.push(found[0]["id"].as_str().unwrap().to_string());
    }
    ok(&[
        "collection",
        "certify",
        repo_s,
        "Cam/calib",
        "--begin",
        "60000",
        "--end",
        "60100",
        &ids[0],
    ]);
    let err = fails_with(
        2,
        &[
            "collection",
            "certify",
            repo_s,
            "Cam/calib",
            "--begin",
            "60050",
            "--end",
            "60200",
            &ids[1],
        ],
    );
    assert!(err.contains("overlap"), "{err}");
    ok(&[
        "collection",
        "certify",
        repo_s,
        "Cam/calib",
        "--begin",
        "60100",
        "--end",
        "60200",
        &ids[1],
    ]);
    let all = json(&ok(&[
        "query-datasets",
        repo_s,
        "--collections",
        "Cam/calib",
        "--all",
        "--json",
    ]));
    assert_eq!(all.as_array().unwrap().len(), 2);
}

#[test]
fn a_repo_of_the_previous_schema_version_is_migrated_and_then_opens() {
    if common::skipped_on_postgres("makes an old registry by editing its SQLite file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 3, 2);
    let repo_s = repo.to_str().unwrap();
    let raws = count_rows(repo_s, "SELECT count(*) FROM dataset");
    // What version 6 had: no selection indexes.
    let conn = rusqlite::Connection::open(repo.join("registry.sqlite3")).unwrap();
    conn.execute_batch(
        "DROP INDEX dataset_by_exposure; DROP INDEX dataset_by_visit; \
         UPDATE quanta_meta SET value = '6' WHERE key = 'schema_version'",
    )
    .unwrap();
    drop(conn);
    let err = fails_with(2, &["collection", "list", repo_s]);
    assert!(err.contains("quanta repo migrate"), "{err}");
    // Killed inside its commit, the migration leaves version 6 as it was.
    let killed = quanta()
        .args(["repo", "migrate", repo_s])
        .env("QUANTA_TEST_KILL_AT", "registry.commit:1")
        .output()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&killed.status),
        Some(libc::SIGKILL)
    );
    let err = fails_with(2, &["collection", "list", repo_s]);
    assert!(err.contains("quanta repo migrate"), "{err}");
    let out = ok(&["repo", "migrate", repo_s]);
    let to = format!("6 → {}", quanta_registry::SCHEMA_VERSION);
    assert!(out.contains(&to), "{out}");
    assert!(ok(&["repo", "migrate", repo_s]).contains("is current"));
    assert_eq!(count_rows(repo_s, "SELECT count(*) FROM dataset"), raws);
    assert_eq!(
        count_rows(
            repo_s,
            "SELECT count(*) FROM sqlite_master WHERE name = 'dataset_by_exposure'"
        ),
        1
    );
    // A registry too old to upgrade in place says what to do instead.
    let conn = rusqlite::Connection::open(repo.join("registry.sqlite3")).unwrap();
    conn.execute_batch("UPDATE quanta_meta SET value = '3' WHERE key = 'schema_version'")
        .unwrap();
    drop(conn);
    let err = fails_with(2, &["repo", "migrate", repo_s]);
    assert!(err.contains("quanta export"), "{err}");
}

/// `quanta sql … | head -1`: once the reader has gone, the command ends the
/// Unix way (SIGPIPE) — no panic, no error message, no exit 101.
#[test]
fn a_reader_that_stops_early_ends_a_read_only_command_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 2, 2);
    // About 600 kB of output: far more than a pipe holds, so the command is
    // still writing when the reader closes its end.
    let many_rows = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n \
                     WHERE x < 100000) SELECT x FROM n";
    let mut child = quanta()
        .args(["sql", repo.to_str().unwrap(), many_rows])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}
