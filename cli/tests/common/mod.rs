//! Shared helpers for the CLI integration tests: run the real `quanta`
//! binary and build the reference workload's repo (TARGET.md).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod batch;

/// The `quanta` binary under test.
pub fn quanta() -> Command {
    Command::new(env!("CARGO_BIN_EXE_quanta"))
}

/// Runs `quanta` with `args`, returning its output. A `repo create`
/// without `--registry` creates the repo on the test registry when
/// `QUANTA_TEST_REGISTRY` names one ([`with_test_registry`]).
pub fn run(args: &[&str]) -> Output {
    quanta()
        .args(with_test_registry(args))
        .output()
        .expect("quanta runs")
}

/// The PostgreSQL database the CLI suites put their repositories' registries
/// in (`QUANTA_TEST_REGISTRY=postgresql://user@host:port/db`), or `None` to
/// use SQLite files as by default: one suite, run on either backend.
pub fn test_registry() -> Option<String> {
    std::env::var("QUANTA_TEST_REGISTRY")
        .ok()
        .filter(|url| !url.is_empty())
}

/// The PostgreSQL server of the tests that need one whatever the suites
/// run on (`QUANTA_POSTGRES_URL`), or `None`, said on stderr, to skip;
/// required when `QUANTA_REQUIRE_POSTGRES=1`.
pub fn postgres_url() -> Option<String> {
    let required = std::env::var("QUANTA_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    match std::env::var("QUANTA_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                !required,
                "QUANTA_REQUIRE_POSTGRES=1 but QUANTA_POSTGRES_URL is not set"
            );
            eprintln!("PostgreSQL skipped: QUANTA_POSTGRES_URL is not set");
            None
        }
    }
}

/// Whether the suites run on PostgreSQL; a test that reads a repo's SQLite
/// file directly says why it is skipped there and returns early.
pub fn skipped_on_postgres(reason: &str) -> bool {
    if test_registry().is_some() {
        eprintln!("skipped on PostgreSQL: {reason}");
        return true;
    }
    false
}

/// `args`, with `--registry URL --namespace <fresh>` added to a `quanta
/// repo create` that names no registry, when the suites run on PostgreSQL.
pub fn with_test_registry(args: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let creates = args.len() >= 3 && args[0] == "repo" && args[1] == "create";
    if let Some(url) = test_registry().filter(|_| creates && !args.contains(&"--registry")) {
        out.extend([
            "--registry".into(),
            url,
            "--namespace".into(),
            fresh_namespace(),
        ]);
    }
    out
}

/// SQL for `quanta sql` giving the UUID column `column` as 32 lower-case
/// hex digits on the backend the suites run on (SQLite stores a UUID as a
/// blob, PostgreSQL as `uuid`).
pub fn sql_hex_id(column: &str) -> String {
    if test_registry().is_some() {
        format!("replace({column}::text, '-', '')")
    } else {
        format!("lower(hex({column}))")
    }
}

/// The prefix of the namespaces the tests create: `qt_<pid>_<n>`, the pid
/// of the test process that named it.
const TEST_NAMESPACE_PREFIX: &str = "qt_";

/// A namespace no other test uses. The first call of a test process also
/// drops the namespaces of test processes that have ended (best effort),
/// so the test database does not grow from run to run.
pub fn fresh_namespace() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static REAPED: std::sync::Once = std::sync::Once::new();
    if let Some(url) = test_registry().or_else(|| std::env::var("QUANTA_POSTGRES_URL").ok()) {
        REAPED.call_once(|| drop_ended_test_namespaces(&url));
    }
    format!(
        "{TEST_NAMESPACE_PREFIX}{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `sql` with `psql` on `url` (the password by libpq's rules),
/// returning its unaligned output, or `None` when it failed.
pub fn psql(url: &str, sql: &str) -> Option<String> {
    let out = psql_with(url, &["-c", sql]).ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `psql` on `url` with `args` after its quiet, unaligned, tuples-only,
/// stop-on-error options.
fn psql_with(url: &str, args: &[&str]) -> std::io::Result<Output> {
    Command::new("psql")
        .args([url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .output()
}

/// Drops the test namespaces whose test process is no longer running.
fn drop_ended_test_namespaces(url: &str) {
    let Some(names) = psql(
        url,
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'qt\\_%'",
    ) else {
        return;
    };
    for name in names.lines().map(str::trim) {
        let pid = name
            .strip_prefix(TEST_NAMESPACE_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        let ended = pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if ended && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            psql(url, &format!("DROP SCHEMA IF EXISTS {name} CASCADE"));
        }
    }
}

/// Drops the namespace of a repo created on PostgreSQL (its
/// `registry.yaml`), best effort: for tests that create many.
pub fn drop_test_namespace(url: &str, namespace: &str) {
    if namespace
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        psql(url, &format!("DROP SCHEMA IF EXISTS {namespace} CASCADE"));
    }
}

/// Runs `quanta` and asserts success, returning stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "quanta {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs `quanta`, asserts it exits with `code`, returns stderr.
pub fn fails_with(code: i32, args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "quanta {args:?}: expected exit {code}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The reference workload's dimension records (TARGET.md) for
/// `n_exp` exposures × `n_det` detectors, as a records file holds them.
pub fn reference_records(n_exp: usize, n_det: usize) -> serde_json::Value {
    serde_json::to_value(quanta_examples::workload::reference_records(n_exp, n_det)).unwrap()
}

/// The raw dataset of the reference workload for one (exposure, detector).
pub fn raw_content(e: usize, d: usize) -> serde_json::Value {
    quanta_examples::reference::raw_content(e, d)
}

/// Creates `dir/repo` holding the reference workload: dimension records,
/// the `raw` dataset type and one raw file per (exposure, detector) in RUN
/// `Cam/raw`, ingested from a manifest. Returns the repo path.
pub fn make_reference_repo(dir: &Path, n_exp: usize, n_det: usize) -> PathBuf {
    make_reference_repo_with(dir, n_exp, n_det, &[])
}

/// [`make_reference_repo`] whose `repo create` also gets `create_args`
/// (`--registry URL --namespace NS`).
pub fn make_reference_repo_with(
    dir: &Path,
    n_exp: usize,
    n_det: usize,
    create_args: &[&str],
) -> PathBuf {
    let repo = make_empty_reference_repo_with(dir, n_exp, n_det, create_args);
    let manifest_path = write_raw_files(dir, n_exp, n_det, 0);
    ok(&[
        "ingest",
        repo.to_str().unwrap(),
        "--run",
        "Cam/raw",
        "--dataset-type",
        "raw",
        "--manifest",
        manifest_path.to_str().unwrap(),
    ]);
    repo
}

/// Creates `dir/repo` with the reference workload's dimension records, the
/// `raw` dataset type and the empty RUN `Cam/raw`, ready for an ingest.
pub fn make_empty_reference_repo(dir: &Path, n_exp: usize, n_det: usize) -> PathBuf {
    make_empty_reference_repo_with(dir, n_exp, n_det, &[])
}

/// [`make_empty_reference_repo`] whose `repo create` also gets
/// `create_args`.
pub fn make_empty_reference_repo_with(
    dir: &Path,
    n_exp: usize,
    n_det: usize,
    create_args: &[&str],
) -> PathBuf {
    let repo = dir.join("repo");
    let repo_s = repo.to_str().unwrap();
    let mut create = vec!["repo", "create", repo_s];
    create.extend_from_slice(create_args);
    ok(&create);
    let records = dir.join("records.json");
    std::fs::write(&records, reference_records(n_exp, n_det).to_string()).unwrap();
    ok(&["dimensions", "insert", repo_s, records.to_str().unwrap()]);
    ok(&[
        "dataset-type",
        "register",
        repo_s,
        "raw",
        "--dimensions",
        "instrument,exposure,detector",
        "--storage-class",
        "Json",
    ]);
    ok(&["collection", "create", repo_s, "Cam/raw", "--type", "RUN"]);
    repo
}

/// Writes one raw file per (exposure, detector) into `dir/raw_files`, each
/// padded with `padding` trailing spaces (still valid JSON), and the CSV
/// manifest `dir/manifest.csv` naming them. Returns the manifest's path.
pub fn write_raw_files(dir: &Path, n_exp: usize, n_det: usize, padding: usize) -> PathBuf {
    let raw_dir = dir.join("raw_files");
    std::fs::create_dir_all(&raw_dir).unwrap();
    let mut manifest = String::from("path,instrument,exposure,detector\n");
    for e in 0..n_exp {
        for d in 0..n_det {
            let name = format!("raw_{e}_{d}.json");
            let mut content = raw_content(e, d).to_string();
            content.push_str(&" ".repeat(padding));
            std::fs::write(raw_dir.join(&name), content).unwrap();
            manifest.push_str(&format!("raw_files/{name},Cam,{e},{d}\n"));
        }
    }
    let manifest_path = dir.join("manifest.csv");
    std::fs::write(&manifest_path, manifest).unwrap();
    manifest_path
}

/// `quanta preflight REPO --pipeline PIPELINE --input Cam/raw --output-run
/// u/test/run --bundle BUNDLE`, which must succeed.
pub fn preflight_into_test_run(repo: &Path, pipeline: &Path, bundle: &Path) {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    ok(&[
        "preflight",
        &s(repo),
        "--pipeline",
        &s(pipeline),
        "--input",
        "Cam/raw",
        "--output-run",
        "u/test/run",
        "--bundle",
        &s(bundle),
    ]);
}

/// The reference workload (`n_exp` × `n_det` raws) preflighted into RUN
/// `run` (chained with Cam/raw as `chain`), run with two jobs and merged.
/// Returns the repo; the bundle is `dir/campaign.qb`.
pub fn merged_reference_campaign(
    dir: &Path,
    n_exp: usize,
    n_det: usize,
    run: &str,
    chain: &str,
) -> PathBuf {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let repo = make_reference_repo(dir, n_exp, n_det);
    let bundle = dir.join("campaign.qb");
    let pipeline =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipelines/reference.yaml");
    ok(&[
        "preflight",
        &s(&repo),
        "--pipeline",
        &s(&pipeline),
        "--input",
        "Cam/raw",
        "--output-run",
        run,
        "--output",
        chain,
        "--bundle",
        &s(&bundle),
    ]);
    ok(&["run", &s(&bundle), "--jobs", "2"]);
    ok(&["merge", &s(&repo), &s(&bundle)]);
    repo
}

/// A finished process for a failure message: exit code or signal, and its
/// output.
pub fn show(out: &Output) -> String {
    use std::os::unix::process::ExitStatusExt;
    format!(
        "exit {:?} signal {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        out.status.signal(),
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// Puts a fresh copy (`cp -a`) of `base` at `work`, each PostgreSQL
/// registry in it copied too ([`clone_postgres_registries`]).
pub fn restore(base: &Path, work: &Path) {
    if work.exists() {
        std::fs::remove_dir_all(work).unwrap();
    }
    let status = Command::new("cp")
        .arg("-a")
        .arg(base)
        .arg(work)
        .status()
        .expect("cp runs");
    assert!(status.success(), "cp -a {base:?} {work:?}");
    clone_postgres_registries(work);
}

/// A repository's PostgreSQL registry, (url, namespace), as the butler
/// reads it from the directory; `None` for a SQLite registry or a
/// directory that is not a repository.
pub fn postgres_registry(repo: &Path) -> Option<(String, String)> {
    match quanta_butler::registry_location(repo).ok()? {
        quanta_registry::RegistryLocation::Postgres { url, namespace } => Some((url, namespace)),
        quanta_registry::RegistryLocation::Sqlite(_) => None,
    }
}

/// Gives every repository under `dir` whose registry is a PostgreSQL
/// namespace a copy of that namespace of its own (`pg_dump` of the
/// schema, renamed, loaded under a fresh name) and names it in the
/// copy's `registry.yaml`: a copied directory then holds a copied
/// repository on either backend, as `cp -a` alone gives on SQLite.
pub fn clone_postgres_registries(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
        let Some((url, from)) = postgres_registry(&d) else {
            continue;
        };
        let to = fresh_namespace();
        let dump = Command::new("pg_dump")
            .args([url.as_str(), "--schema", from.as_str(), "--no-owner"])
            .output()
            .expect("pg_dump runs");
        assert!(
            dump.status.success(),
            "pg_dump of {from}: {}",
            String::from_utf8_lossy(&dump.stderr)
        );
        // Test namespaces (`qt_<pid>_<n>`) are whole words nothing else
        // in a dump contains.
        let renamed = replace_word(std::str::from_utf8(&dump.stdout).unwrap(), &from, &to);
        let sql_file = d.join(".namespace-clone.sql");
        std::fs::write(&sql_file, renamed.as_bytes()).unwrap();
        let load =
            psql_with(&url, &["-f", sql_file.to_str().expect("utf-8 paths")]).expect("psql runs");
        assert!(
            load.status.success(),
            "loading the copy of {from} as {to}: {}",
            String::from_utf8_lossy(&load.stderr)
        );
        std::fs::remove_file(&sql_file).unwrap();
        quanta_butler::repo_config::write_registry_config(&d, &url, &to).unwrap();
    }
}

/// `text` with each whole-word `word` (not inside a longer identifier)
/// replaced by `by`.
fn replace_word(text: &str, word: &str, by: &str) -> String {
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        out.push_str(&rest[..at]);
        let before = out.chars().next_back();
        let after = rest[at + word.len()..].chars().next();
        out.push_str(if is_word(before) || is_word(after) {
            word
        } else {
            by
        });
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

/// The rows of `sql` on `repo`'s registry, each as its columns joined by
/// ` | `, sorted: read from the SQLite file directly, or with `psql` in
/// the repository's PostgreSQL namespace. Values print in each backend's
/// own way (a UUID as hex digits on SQLite, in its dashed form on
/// PostgreSQL), so compare states of one backend with each other.
pub fn registry_strings(repo: &Path, sql: &str) -> Vec<String> {
    let Some((url, namespace)) = postgres_registry(repo) else {
        let conn = rusqlite::Connection::open_with_flags(
            repo.join("registry.sqlite3"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        return strings(&conn, sql);
    };
    let search_path = format!("SET search_path TO {namespace}");
    let out = psql_with(
        &url,
        &[
            "-F",
            " | ",
            "-P",
            "null=NULL",
            "-c",
            &search_path,
            "-c",
            sql,
        ],
    )
    .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rows: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    rows.sort();
    rows
}

/// The names of `repo`'s registry tables, on either backend.
pub fn registry_tables(repo: &Path) -> Vec<String> {
    if postgres_registry(repo).is_some() {
        registry_strings(
            repo,
            "SELECT table_name FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
        )
    } else {
        registry_strings(
            repo,
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )
    }
}

/// The rows of `sql`, each as its columns joined by ` | ` (blobs in hex),
/// sorted: a registry's state to compare between runs.
pub fn strings(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    use rusqlite::types::Value;
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    let mut rows: Vec<String> = stmt
        .query_map([], |row| {
            (0..n)
                .map(|i| {
                    Ok(match row.get::<_, Value>(i)? {
                        Value::Null => "NULL".to_string(),
                        Value::Integer(i) => i.to_string(),
                        Value::Real(f) => f.to_string(),
                        Value::Text(t) => t,
                        Value::Blob(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()
                .map(|cols| cols.join(" | "))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    rows.sort();
    rows
}
