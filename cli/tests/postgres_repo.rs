//! Repositories whose registry is a namespace of a PostgreSQL database:
//! `repo create --registry`, the `registry.yaml` it writes, every command
//! reopening the repo through it, and the writer lock as a PostgreSQL
//! advisory lock between real processes. The tests that need a server run
//! on `QUANTA_POSTGRES_URL` (`ci/postgres/start.sh` prints it; the password
//! in `~/.pgpass`) and are skipped without it, unless
//! `QUANTA_REQUIRE_POSTGRES=1`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{drop_test_namespace, fails_with, fresh_namespace, ok, psql, quanta};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The test server, or `None` (the test is skipped) when there is none.
fn server() -> Option<String> {
    match std::env::var("QUANTA_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("QUANTA_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "QUANTA_REQUIRE_POSTGRES=1 but QUANTA_POSTGRES_URL is not set"
            );
            eprintln!("PostgreSQL skipped: QUANTA_POSTGRES_URL is not set");
            None
        }
    }
}

/// Drops a test's namespace when the test ends, passed or failed.
struct DropNamespace<'a>(&'a str, String);

impl Drop for DropNamespace<'_> {
    fn drop(&mut self) {
        drop_test_namespace(self.0, &self.1);
    }
}

#[test]
fn a_repo_on_postgres_is_created_reopened_and_queried_by_every_command() {
    let Some(url) = server() else { return };
    let ns = fresh_namespace();
    let _cleanup = DropNamespace(&url, ns.clone());
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let out = ok(&[
        "repo",
        "create",
        s(&repo),
        "--registry",
        &url,
        "--namespace",
        &ns,
    ]);
    assert!(out.contains(&format!("namespace {ns}")), "{out}");
    assert!(!repo.join("registry.sqlite3").exists());
    let config = std::fs::read_to_string(repo.join("registry.yaml")).unwrap();
    assert!(config.contains("backend: postgresql"), "{config}");
    assert!(config.contains(&format!("namespace: {ns}")), "{config}");
    assert!(config.contains(&url), "{config}");

    // Each command below is a new process that finds the registry through
    // registry.yaml.
    let records = dir.path().join("records.json");
    std::fs::write(&records, common::reference_records(2, 2).to_string()).unwrap();
    ok(&["dimensions", "insert", s(&repo), s(&records)]);
    ok(&[
        "dataset-type",
        "register",
        s(&repo),
        "raw",
        "--dimensions",
        "instrument,exposure,detector",
        "--storage-class",
        "Json",
    ]);
    ok(&["collection", "create", s(&repo), "Cam/raw", "--type", "RUN"]);
    let manifest = common::write_raw_files(dir.path(), 2, 2, 0);
    ok(&[
        "ingest",
        s(&repo),
        "--run",
        "Cam/raw",
        "--dataset-type",
        "raw",
        "--manifest",
        s(&manifest),
    ]);
    let found: serde_json::Value = serde_json::from_str(&ok(&[
        "query-datasets",
        s(&repo),
        "--dataset-type",
        "raw",
        "--collections",
        "Cam/raw",
        "--where",
        "exposure = 1",
        "--json",
    ]))
    .unwrap();
    assert_eq!(found.as_array().map(Vec::len), Some(2), "{found}");
    // The rows are in the server's namespace, not in a file.
    let count = psql(&url, &format!("SELECT count(*) FROM {ns}.dataset"))
        .expect("psql reads the namespace");
    assert_eq!(count.trim(), "4");

    // A second repo may not take the same namespace.
    let other = dir.path().join("other");
    let err = fails_with(
        2,
        &[
            "repo",
            "create",
            s(&other),
            "--registry",
            &url,
            "--namespace",
            &ns,
        ],
    );
    assert!(err.contains("already holds a registry"), "{err}");
    assert!(!other.join("registry.yaml").exists());
    // Nor may the same directory be created twice.
    let err = fails_with(2, &["repo", "create", s(&repo), "--registry", &url]);
    assert!(err.contains("a repo already exists here"), "{err}");
}

#[test]
fn without_a_namespace_the_directory_name_is_used() {
    let Some(url) = server() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Unique per test process, in the form the default makes of it.
    let name = format!("QT-{}-dirname", std::process::id());
    let ns = format!("qt_{}_dirname", std::process::id());
    let _cleanup = DropNamespace(&url, ns.clone());
    let repo = dir.path().join(&name);
    let out = ok(&["repo", "create", s(&repo), "--registry", &url]);
    assert!(out.contains(&format!("namespace {ns}")), "{out}");
    ok(&["collection", "list", s(&repo)]);
}

#[test]
fn a_registry_url_with_a_password_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    for url in [
        "postgresql://quanta:hunter2@localhost:5432/quanta_test",
        "postgresql://quanta@localhost:5432/quanta_test?password=hunter2",
    ] {
        let err = fails_with(2, &["repo", "create", s(&repo), "--registry", url]);
        assert!(
            err.contains("PGPASSWORD") && err.contains(".pgpass"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "the password was echoed: {err}");
        assert!(!repo.exists(), "{url}: something was created");
    }
}

#[test]
fn a_bad_or_unreachable_registry_url_is_a_clear_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let err = fails_with(
        2,
        &["repo", "create", s(&repo), "--registry", "mysql://u@h/db"],
    );
    assert!(err.contains("not a PostgreSQL URL"), "{err}");
    // Port 1: nothing listens there, the connection is refused at once.
    let err = fails_with(
        2,
        &[
            "repo",
            "create",
            s(&repo),
            "--registry",
            "postgresql://quanta@127.0.0.1:1/quanta_test",
            "--namespace",
            "nowhere",
        ],
    );
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!repo.join("registry.yaml").exists());
    let err = fails_with(
        2,
        &[
            "repo",
            "create",
            s(&repo),
            "--registry",
            "postgresql://quanta@127.0.0.1:1/quanta_test",
            "--namespace",
            "Not-A-Schema",
        ],
    );
    assert!(err.contains("namespace"), "{err}");
}

/// A `psql` session that holds the advisory writer lock of `namespace`,
/// named like a quanta holder, until it is killed.
fn hold_writer_lock(url: &str, namespace: &str) -> std::process::Child {
    let key = quanta_registry::WriterLock::advisory_key(namespace);
    let mut holder = Command::new("psql")
        .args([url, "-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .env("PGAPPNAME", "merge pid 4242 on host elsewhere")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("psql runs");
    // The session then idles, waiting for more input, holding the lock.
    writeln!(
        holder.stdin.as_mut().unwrap(),
        "SELECT pg_advisory_lock({key});"
    )
    .unwrap();
    holder.stdin.as_mut().unwrap().flush().unwrap();
    // A bigint key is in pg_locks as its high half (classid) and low half
    // (objid).
    let (high, low) = (key as u64 >> 32, key as u64 & 0xffff_ffff);
    let granted = format!(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted \
         AND l.classid::bigint = {high} AND l.objid::bigint = {low} AND l.objsubid = 1 \
         AND a.application_name = 'merge pid 4242 on host elsewhere' \
         AND a.datname = current_database()"
    );
    // Polls the server until the session has the lock (a state, not a
    // time, is waited for).
    while psql(url, &granted).as_deref().map(str::trim) != Some("1") {
        assert!(holder.try_wait().unwrap().is_none(), "psql ended early");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    holder
}

#[test]
fn a_writer_waits_for_the_advisory_lock_of_another_process_and_names_it() {
    let Some(url) = server() else { return };
    let ns = fresh_namespace();
    let _cleanup = DropNamespace(&url, ns.clone());
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    ok(&[
        "repo",
        "create",
        s(&repo),
        "--registry",
        &url,
        "--namespace",
        &ns,
    ]);
    let mut holder = hold_writer_lock(&url, &ns);

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
    assert!(
        said.contains("waiting for merge pid 4242 on host elsewhere to finish"),
        "{said}"
    );
    assert!(create.try_wait().unwrap().is_none(), "it did not wait");
    // A reader does not wait for the writer lock.
    ok(&["collection", "list", s(&repo)]);

    // The holder dies without releasing anything: the server ends its
    // session, and with it the lock.
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(create.wait().unwrap().success());
    let listed = ok(&["collection", "list", s(&repo)]);
    assert!(listed.contains("extra"), "{listed}");
}

#[test]
fn writers_of_different_namespaces_do_not_wait_for_each_other() {
    let Some(url) = server() else { return };
    let (busy, free) = (fresh_namespace(), fresh_namespace());
    let _cleanup = (
        DropNamespace(&url, busy.clone()),
        DropNamespace(&url, free.clone()),
    );
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("free");
    ok(&[
        "repo",
        "create",
        s(&repo),
        "--registry",
        &url,
        "--namespace",
        &free,
    ]);
    let mut holder = hold_writer_lock(&url, &busy);
    let out = quanta()
        .args(["collection", "create", s(&repo), "x", "--type", "RUN"])
        .output()
        .unwrap();
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(out.status.success(), "{}", common::show(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("waiting"),
        "{}",
        common::show(&out)
    );
}

#[test]
fn what_an_interrupted_create_leaves_is_reported_and_no_repo_names_it() {
    let Some(url) = server() else { return };
    let ns = fresh_namespace();
    let _cleanup = DropNamespace(&url, ns.clone());
    // A create killed after CREATE SCHEMA and before its first commit
    // leaves an empty schema, and no registry.yaml.
    psql(&url, &format!("CREATE SCHEMA {ns}")).expect("psql creates a schema");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let args = [
        "repo",
        "create",
        s(&repo),
        "--registry",
        &url,
        "--namespace",
        &ns,
    ];
    let err = fails_with(2, &args);
    assert!(err.contains("exists but holds no registry"), "{err}");
    assert!(err.contains(&format!("DROP SCHEMA {ns} CASCADE")), "{err}");
    assert!(!repo.join("registry.yaml").exists());
    let err = fails_with(2, &["collection", "list", s(&repo)]);
    assert!(err.contains("not a quanta repo"), "{err}");
    // Dropped as the message says, the same command succeeds.
    drop_test_namespace(&url, &ns);
    ok(&args);
    ok(&["collection", "list", s(&repo)]);
}

#[test]
fn the_demo_runs_end_to_end_on_a_postgres_registry() {
    let Some(url) = server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = quanta()
        .args([
            "demo",
            "--registry",
            &url,
            "--exposures",
            "2",
            "--detectors",
            "2",
        ])
        .args(["--dir", s(&demo)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The demo names its fresh namespace; dropped whatever happened next.
    let ns = stderr
        .lines()
        .find_map(|l| l.strip_prefix("registry: namespace "))
        .and_then(|rest| rest.split(' ').next())
        .map(str::to_string);
    let _cleanup = ns.clone().map(|ns| DropNamespace(&url, ns));
    assert!(out.status.success(), "{}", common::show(&out));
    let ns = ns.expect("the demo names its namespace");
    assert!(ns.starts_with("demo_"), "{ns}");
    let repo = demo.join("repo");
    assert!(!repo.join("registry.sqlite3").exists());
    let config = std::fs::read_to_string(repo.join("registry.yaml")).unwrap();
    assert!(config.contains(&format!("namespace: {ns}")), "{config}");
    // Merged into the server: 2 × 2 isr + characterize, 2 summaries.
    let merged = psql(&url, &format!("SELECT count(*) FROM {ns}.quantum"))
        .expect("psql reads the namespace");
    assert_eq!(merged.trim(), "10");
    let found: serde_json::Value = serde_json::from_str(&ok(&[
        "query-datasets",
        s(&repo),
        "--collections",
        "demo",
        "--dataset-type",
        "expSummary",
        "--json",
    ]))
    .unwrap();
    assert_eq!(found.as_array().map(Vec::len), Some(2), "{found}");
}
