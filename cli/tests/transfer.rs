//! `quanta transfer` and `quanta retrieve` through the real binary on real
//! repositories, and `import` / `transfer` killed with SIGKILL at the
//! ingest kill points (`QUANTA_TEST_KILL_AT`), a rerun ending exactly where
//! an uninterrupted run ends.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fails_with, ok, quanta, registry_strings, show};
use serde_json::Value;

const RUN: &str = "u/test/run";
const CHAIN: &str = "u/test/out";
const KILL_AT: &str = "QUANTA_TEST_KILL_AT";
const KILL_LOG: &str = "QUANTA_TEST_KILL_LOG";

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp paths")
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).expect("JSON output")
}

fn new_repo(path: &Path) -> PathBuf {
    ok(&["repo", "create", s(path)]);
    path.to_path_buf()
}

/// Every file under `dir` with its BLAKE3, relative to `root`.
fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.symlink_metadata().unwrap().is_dir() {
            walk(root, &path, out);
        } else {
            let sum = std::fs::read(&path)
                .map(|b| blake3::hash(&b).to_hex().to_string())
                .unwrap_or_else(|e| format!("unreadable: {e}"));
            let rel = path.strip_prefix(root).unwrap().to_string_lossy();
            out.insert(format!("{rel} {sum}"));
        }
    }
}

type State = BTreeMap<&'static str, Vec<String>>;

/// A repository's registry rows (the ones a transfer writes) and files.
fn read_state(repo: &Path) -> State {
    let queries: &[(&str, &str)] = &[
        ("collections", "SELECT name, type FROM collection"),
        (
            "chains",
            "SELECT p.name, ch.position, c.name FROM collection_chain ch \
             JOIN collection p ON p.id = ch.parent_id JOIN collection c ON c.id = ch.child_id",
        ),
        ("dataset types", "SELECT name, dimensions FROM dataset_type"),
        (
            "datasets",
            "SELECT d.id, t.name, c.name, d.data_id, d.path, d.size, d.checksum \
             FROM dataset d JOIN dataset_type t ON t.id = d.dataset_type_id \
             JOIN collection c ON c.id = d.run_id",
        ),
        (
            "tags",
            "SELECT c.name, m.dataset_id FROM dataset_tags m JOIN collection c ON c.id = m.collection_id",
        ),
        ("quanta", "SELECT count(*) FROM quantum"),
        ("inputs", "SELECT count(*) FROM quantum_input"),
        ("run provenance", "SELECT count(*) FROM run_provenance"),
    ];
    let mut state: State = queries
        .iter()
        .map(|(name, sql)| (*name, registry_strings(repo, sql)))
        .collect();
    let root = repo.join("datastore");
    let mut files = BTreeSet::new();
    walk(&root, &root, &mut files);
    state.insert("files", files.into_iter().collect());
    state
}

/// (type, run, data ID, UUID) of every dataset in `collections`, sorted.
fn datasets(repo: &Path, collections: &str) -> Vec<String> {
    let v = json(&[
        "query-datasets",
        s(repo),
        "--collections",
        collections,
        "--all",
        "--json",
    ]);
    let mut out: Vec<String> = v
        .as_array()
        .expect("a list")
        .iter()
        .map(|d| {
            format!(
                "{} {} {} {}",
                d["dataset_type"], d["run"], d["data_id"], d["id"]
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn transfer_copies_a_merged_run_keeping_uuids_and_a_second_run_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::merged_reference_campaign(tmp.path(), 3, 2, RUN, CHAIN);
    let dest = new_repo(&tmp.path().join("dest"));
    let first = json(&[
        "transfer",
        s(&src),
        s(&dest),
        "--collections",
        CHAIN,
        "--json",
    ]);
    let expected = datasets(&src, CHAIN);
    assert!(expected.len() > 6, "{expected:?}");
    assert_eq!(first["datasets"].as_u64().unwrap() as usize, expected.len());
    assert_eq!(first["files"].as_u64().unwrap() as usize, expected.len());
    assert_eq!(datasets(&dest, CHAIN), expected);
    let collections = |repo: &Path| json(&["collection", "list", s(repo), "--json"]);
    assert_eq!(collections(&dest), collections(&src));
    for e in 0..3 {
        for d in 0..2 {
            let id = format!("instrument=Cam,exposure={e},detector={d}");
            let get = |repo: &Path| {
                ok(&[
                    "get",
                    s(repo),
                    "raw",
                    "--collections",
                    CHAIN,
                    "--data-id",
                    &id,
                ])
            };
            assert_eq!(get(&dest), get(&src));
        }
    }
    ok(&["repo", "check", s(&dest)]);
    let state = read_state(&dest);
    let again = json(&[
        "transfer",
        s(&src),
        s(&dest),
        "--collections",
        CHAIN,
        "--json",
    ]);
    assert_eq!(again["datasets"], 0, "{again}");
    assert_eq!(again["files"], 0, "{again}");
    assert_eq!(read_state(&dest), state);

    // A where clause and a type select a subset; into a third repository
    // by symlink.
    let third = new_repo(&tmp.path().join("third"));
    let sub = json(&[
        "transfer",
        s(&src),
        s(&third),
        "--collections",
        CHAIN,
        "--dataset-type",
        "raw",
        "--where",
        "exposure = 1",
        "--transfer",
        "symlink",
        "--json",
    ]);
    assert_eq!(sub["datasets"], 2, "{sub}");
    let raws = datasets(&third, "Cam/raw");
    assert_eq!(raws.len(), 2, "{raws:?}");
    ok(&["repo", "check", s(&third)]);
    // Bad input: a destination that is not a repository, the same repository.
    fails_with(
        2,
        &[
            "transfer",
            s(&src),
            s(&tmp.path().join("nowhere")),
            "--collections",
            CHAIN,
        ],
    );
    fails_with(2, &["transfer", s(&src), s(&src), "--collections", CHAIN]);
}

/// A new empty repository `work/dest` (what was in `work` removed): on
/// PostgreSQL in a namespace of its own, so a case never sees another's
/// rows.
fn fresh_destination(work: &Path) -> PathBuf {
    if work.exists() {
        std::fs::remove_dir_all(work).unwrap();
    }
    std::fs::create_dir_all(work).unwrap();
    new_repo(&work.join("dest"))
}

/// Kills `command` (run on a fresh empty destination) at first, middle and
/// last passages of the ingest kill points, reruns it, and compares with
/// the state of an uninterrupted run. Returns the failures.
fn kill_matrix(name: &str, work: &Path, command: &dyn Fn(&Path) -> Command) -> Vec<String> {
    let repo = fresh_destination(work);
    let log = work.with_extension("kill-log");
    let _ = std::fs::remove_file(&log);
    let out = command(&repo).env(KILL_LOG, &log).output().unwrap();
    assert!(
        out.status.success(),
        "{name}: reference run: {}",
        show(&out)
    );
    let reference = read_state(&repo);
    let mut passages: BTreeMap<String, usize> = BTreeMap::new();
    for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
        *passages.entry(line.to_string()).or_default() += 1;
    }
    let transferred = passages.get("ingest-transferred").copied().unwrap_or(0);
    assert!(
        transferred >= 4,
        "{name}: too few kill points: {passages:?}"
    );
    let mut points: BTreeSet<(&str, usize)> = BTreeSet::new();
    for n in [1, transferred / 2, transferred] {
        points.insert(("ingest-transferred", n));
    }
    points.insert(("ingest-before-commit", 1));
    points.insert(("ingest-committed", 1));
    if let Some(&n) = passages.get("registry.commit") {
        points.insert(("registry.commit", n));
    }
    let mut failures = Vec::new();
    for (point, n) in points {
        fresh_destination(work);
        let killed = command(&repo)
            .env(KILL_AT, format!("{point}:{n}"))
            .output()
            .unwrap();
        let case = format!("{name}: killed at {point} {n}");
        if killed.status.signal() != Some(libc::SIGKILL) {
            failures.push(format!("{case}: not killed: {}", show(&killed)));
            continue;
        }
        let rerun = command(&repo).output().unwrap();
        if !rerun.status.success() {
            failures.push(format!("{case}: rerun failed: {}", show(&rerun)));
            continue;
        }
        let state = read_state(&repo);
        if state != reference {
            let diff: Vec<String> = reference
                .iter()
                .filter(|(k, v)| state.get(*k) != Some(v))
                .map(|(k, v)| format!("{k}: want {v:?}, got {:?}", state.get(*k)))
                .collect();
            failures.push(format!("{case}: ended elsewhere:\n  {}", diff.join("\n  ")));
        }
        let check = quanta().args(["repo", "check", s(&repo)]).output().unwrap();
        if !check.status.success() {
            failures.push(format!("{case}: repo check: {}", show(&check)));
        }
    }
    failures
}

#[test]
fn killed_imports_and_transfers_end_by_rerun_where_an_uninterrupted_run_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::merged_reference_campaign(tmp.path(), 3, 2, RUN, CHAIN);
    let export = tmp.path().join("export");
    ok(&["export", s(&src), s(&export), "--collections", CHAIN]);
    let work = tmp.path().join("work");
    let mut failures = kill_matrix("import", &work, &|repo: &Path| {
        let mut c = quanta();
        c.args(["import", s(repo), s(&export)]);
        c
    });
    failures.extend(kill_matrix("transfer", &work, &|repo: &Path| {
        let mut c = quanta();
        c.args(["transfer", s(&src), s(repo), "--collections", CHAIN]);
        c
    }));
    failures.extend(kill_matrix(
        "transfer --with-provenance",
        &work,
        &|repo: &Path| {
            let mut c = quanta();
            c.args([
                "transfer",
                s(&src),
                s(repo),
                "--collections",
                CHAIN,
                "--with-provenance",
            ]);
            c
        },
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn retrieve_copies_files_in_the_datastore_layout_and_refuses_to_overwrite_a_different_one() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::merged_reference_campaign(tmp.path(), 2, 2, RUN, CHAIN);
    let out = tmp.path().join("out");
    let summary = json(&[
        "retrieve",
        s(&src),
        s(&out),
        "--collections",
        CHAIN,
        "--dataset-type",
        "raw",
        "--where",
        "detector = 1",
        "--json",
    ]);
    let files = summary["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{summary}");
    assert_eq!(summary["copied"], 2);
    for f in files {
        let rel = f["path"].as_str().unwrap();
        // Same relative path and bytes as in the datastore.
        assert_eq!(
            std::fs::read(out.join(rel)).unwrap(),
            std::fs::read(src.join("datastore").join(rel)).unwrap(),
            "{rel}"
        );
    }
    // Everything in the chain; the two raws already there are left alone.
    let all = json(&[
        "retrieve",
        s(&src),
        s(&out),
        "--collections",
        CHAIN,
        "--json",
    ]);
    assert_eq!(all["already_present"], 2, "{all}");
    let n = all["files"].as_array().unwrap().len();
    assert_eq!(all["copied"].as_u64().unwrap() as usize, n - 2);
    let mut on_disk = BTreeSet::new();
    walk(&out, &out, &mut on_disk);
    assert_eq!(on_disk.len(), n);
    let again = json(&[
        "retrieve",
        s(&src),
        s(&out),
        "--collections",
        CHAIN,
        "--json",
    ]);
    assert_eq!(again["copied"], 0, "{again}");
    // A different file in the way: exit 2, it is left as it was.
    let rel = files[0]["path"].as_str().unwrap();
    std::fs::write(out.join(rel), b"something else").unwrap();
    let err = fails_with(2, &["retrieve", s(&src), s(&out), "--collections", CHAIN]);
    assert!(err.contains("exists and differs"), "{err}");
    assert_eq!(std::fs::read(out.join(rel)).unwrap(), b"something else");
    // Text output names what it copied.
    let out2 = tmp.path().join("out2");
    let text = ok(&[
        "retrieve",
        s(&src),
        s(&out2),
        "--collections",
        CHAIN,
        "--where",
        "exposure = 0 AND detector = 0",
        "--dataset-type",
        "raw",
    ]);
    assert!(text.contains("copied "), "{text}");
    assert!(text.contains("retrieved 1 files"), "{text}");
}

/// `quanta provenance REPO ID --json` (upstream, or downstream).
fn provenance(repo: &Path, id: &str, downstream: bool) -> Value {
    let mut args = vec!["provenance", s(repo), id, "--json"];
    if downstream {
        args.push("--downstream");
    }
    json(&args)
}

fn ids(repo: &Path, collections: &str) -> Vec<String> {
    let v = json(&[
        "query-datasets",
        s(repo),
        "--collections",
        collections,
        "--all",
        "--json",
    ]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn transfer_and_export_with_provenance_make_provenance_answer_as_in_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::merged_reference_campaign(tmp.path(), 2, 2, RUN, CHAIN);
    let outputs = ids(&src, RUN);
    let raws = ids(&src, "Cam/raw");
    assert!(!outputs.is_empty() && !raws.is_empty());
    let with_quanta = |repo: &Path| {
        outputs
            .iter()
            .filter(|id| {
                provenance(repo, id, false)["quanta"]
                    .as_array()
                    .is_some_and(|q| !q.is_empty())
            })
            .count()
    };
    assert_eq!(with_quanta(&src), outputs.len());

    // Without --with-provenance the outputs arrive without their producers.
    let plain = new_repo(&tmp.path().join("plain"));
    ok(&["transfer", s(&src), s(&plain), "--collections", CHAIN]);
    assert_eq!(with_quanta(&plain), 0);

    let dest = new_repo(&tmp.path().join("dest"));
    let summary = json(&[
        "transfer",
        s(&src),
        s(&dest),
        "--collections",
        CHAIN,
        "--with-provenance",
        "--json",
    ]);
    assert!(summary["quanta"].as_u64().unwrap() > 0, "{summary}");
    for id in &outputs {
        assert_eq!(
            provenance(&dest, id, false),
            provenance(&src, id, false),
            "{id}"
        );
    }
    for id in &raws {
        assert_eq!(
            provenance(&dest, id, true),
            provenance(&src, id, true),
            "{id}"
        );
    }
    ok(&["repo", "check", s(&dest)]);
    // A second run changes nothing.
    let state = read_state(&dest);
    let again = json(&[
        "transfer",
        s(&src),
        s(&dest),
        "--collections",
        CHAIN,
        "--with-provenance",
        "--json",
    ]);
    assert_eq!(again["quanta"], 0, "{again}");
    assert_eq!(read_state(&dest), state);

    // Export --with-provenance + import restores the same.
    let export = tmp.path().join("export");
    ok(&[
        "export",
        s(&src),
        s(&export),
        "--collections",
        CHAIN,
        "--with-provenance",
    ]);
    let extras = std::fs::read_to_string(export.join("quanta-extras.json")).unwrap();
    assert!(extras.contains("\"provenance\""));
    let imported = new_repo(&tmp.path().join("imported"));
    ok(&["import", s(&imported), s(&export)]);
    for id in &outputs {
        assert_eq!(
            provenance(&imported, id, false),
            provenance(&src, id, false),
            "{id}"
        );
    }
    assert_eq!(read_state(&imported), state);
}

/// Inode and modification time of every file under `dir`, by path.
fn inodes(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u64, i64, i64)>) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let meta = path.symlink_metadata().unwrap();
        if meta.is_dir() {
            inodes(root, &path, out);
        } else {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.insert(rel, (meta.ino(), meta.mtime(), meta.mtime_nsec()));
        }
    }
}

fn datastore_inodes(repo: &Path) -> BTreeMap<String, (u64, i64, i64)> {
    let mut out = BTreeMap::new();
    inodes(&repo.join("datastore"), &repo.join("datastore"), &mut out);
    out
}

#[test]
fn a_rerun_after_a_kill_keeps_the_verified_files_already_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::merged_reference_campaign(tmp.path(), 3, 2, RUN, CHAIN);
    let n = datasets(&src, CHAIN).len();
    let transfer = |dest: &Path, kill_at: Option<String>| {
        let mut c = quanta();
        c.args([
            "transfer",
            s(&src),
            s(dest),
            "--collections",
            CHAIN,
            "--json",
        ]);
        if let Some(at) = kill_at {
            c.env(KILL_AT, at);
        }
        c.output().unwrap()
    };
    let summary = |out: &std::process::Output| -> Value {
        assert!(out.status.success(), "{}", show(out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Killed after every file was copied, before the registry commit.
    let dest = new_repo(&tmp.path().join("dest"));
    let killed = transfer(&dest, Some("ingest-before-commit:1".into()));
    assert_eq!(
        killed.status.signal(),
        Some(libc::SIGKILL),
        "{}",
        show(&killed)
    );
    let copied = datastore_inodes(&dest);
    assert_eq!(copied.len(), n, "{copied:?}");
    // One of them damaged meanwhile: the rerun must copy it again.
    let damaged = copied.keys().next().unwrap().clone();
    std::fs::write(
        dest.join("datastore").join(&damaged),
        b"{\"damaged\": true}",
    )
    .unwrap();
    let copied = datastore_inodes(&dest);
    let rerun = summary(&transfer(&dest, None));
    let after = datastore_inodes(&dest);
    let rewritten: Vec<&String> = copied
        .iter()
        .filter(|(p, v)| after.get(*p) != Some(*v))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(rewritten, vec![&damaged], "{rerun}");
    assert_eq!(rerun["datasets"].as_u64().unwrap() as usize, n, "{rerun}");
    assert_eq!(rerun["files"], 1, "{rerun}");
    assert_eq!(
        rerun["files_present"].as_u64().unwrap() as usize,
        n - 1,
        "{rerun}"
    );
    let after = datastore_inodes(&dest);
    for (path, before) in &copied {
        if *path == damaged {
            assert_ne!(after.get(path), Some(before), "{path} was not rewritten");
        } else {
            assert_eq!(after.get(path), Some(before), "{path} was copied again");
        }
    }
    ok(&["repo", "check", s(&dest)]);

    // Killed halfway through the copies: the rerun copies only the rest.
    let half = new_repo(&tmp.path().join("half"));
    let at = format!("ingest-transferred:{}", n / 2);
    let killed = transfer(&half, Some(at));
    assert_eq!(
        killed.status.signal(),
        Some(libc::SIGKILL),
        "{}",
        show(&killed)
    );
    // Files in place; copies other threads had in flight at the kill are
    // temporaries, which the rerun removes and copies again.
    let is_temp = |p: &String| {
        p.rsplit('/')
            .next()
            .is_some_and(|name| name.starts_with(".tmp-"))
    };
    let placed = datastore_inodes(&half)
        .keys()
        .filter(|p| !is_temp(p))
        .count();
    assert!(placed >= n / 2 && placed <= n, "{placed} of {n}");
    let rerun = summary(&transfer(&half, None));
    assert!(
        datastore_inodes(&half).keys().all(|p| !is_temp(p)),
        "a temporary was left behind"
    );
    let (files, present) = (
        rerun["files"].as_u64().unwrap() as usize,
        rerun["files_present"].as_u64().unwrap() as usize,
    );
    assert_eq!(files + present, n, "{rerun}");
    assert!(present >= n / 2, "{rerun}");
    assert_eq!(present, placed, "{rerun}");
    assert_eq!(read_state(&half), read_state(&dest));
    ok(&["repo", "check", s(&half)]);
}

/// The first dataset file (not the export's own files) under an export
/// directory.
fn some_exported_file(dir: &Path) -> PathBuf {
    let mut files = BTreeSet::new();
    walk(dir, dir, &mut files);
    let rel = files
        .iter()
        .map(|line| line.split(' ').next().unwrap().to_string())
        .find(|p| p.ends_with(".json") && p != "quanta-extras.json" && !p.starts_with('.'))
        .expect("a dataset file");
    dir.join(rel)
}

#[test]
fn missing_or_corrupt_sources_fail_the_work_and_unmappable_exports_are_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::merged_reference_campaign(tmp.path(), 2, 2, RUN, CHAIN);
    let export = tmp.path().join("export");
    ok(&["export", s(&src), s(&export), "--collections", CHAIN]);
    let dest = new_repo(&tmp.path().join("dest"));
    let file = some_exported_file(&export);
    let original = std::fs::read(&file).unwrap();
    let nothing_imported = || {
        assert!(json(&["collection", "list", s(&dest), "--json"])
            .as_array()
            .unwrap()
            .is_empty());
        assert!(datastore_inodes(&dest).is_empty());
    };
    // A file that is not what the export says: the work failed (1).
    std::fs::write(&file, b"{\"not\": \"the exported file\"}").unwrap();
    let err = fails_with(1, &["import", s(&dest), s(&export)]);
    assert!(
        err.contains(s(&file)) && err.contains("the export says"),
        "{err}"
    );
    nothing_imported();
    // A missing file: the work failed (1).
    std::fs::remove_file(&file).unwrap();
    let err = fails_with(1, &["import", s(&dest), s(&export)]);
    assert!(
        err.contains(s(&file)) && err.contains("No such file"),
        "{err}"
    );
    nothing_imported();
    std::fs::write(&file, &original).unwrap();
    // A storage class without a mapping: bad input (2), named.
    let yaml = export.join("export.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap();
    std::fs::write(
        &yaml,
        text.replace(
            "storage_class: StructuredDataDict",
            "storage_class: Exposure",
        ),
    )
    .unwrap();
    let err = fails_with(2, &["import", s(&dest), s(&export)]);
    assert!(err.contains("storage class Exposure"), "{err}");
    nothing_imported();
    std::fs::write(&yaml, &text).unwrap();
    ok(&["import", s(&dest), s(&export)]);

    // A transfer whose source datastore lost a file: the work failed (1).
    let third = new_repo(&tmp.path().join("third"));
    let lost = some_exported_file(&src.join("datastore"));
    std::fs::remove_file(&lost).unwrap();
    let err = fails_with(1, &["transfer", s(&src), s(&third), "--collections", CHAIN]);
    assert!(err.contains("No such file"), "{err}");
}

/// A hard-linked import reads a source file once however many datasets
/// link it, yet each dataset's file is verified against its own recorded
/// checksum: a file replaced by a link to another dataset's (same inode,
/// already hashed) is still found not to be what the export says.
#[test]
fn a_linked_import_verifies_each_dataset_against_its_own_checksum() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::merged_reference_campaign(tmp.path(), 2, 2, RUN, CHAIN);
    let export = tmp.path().join("export");
    ok(&["export", s(&src), s(&export), "--collections", CHAIN]);
    let mut files = BTreeSet::new();
    walk(&export, &export, &mut files);
    let mut json_files = files
        .iter()
        .map(|line| line.split(' ').next().unwrap().to_string())
        .filter(|p| p.ends_with(".json") && p != "quanta-extras.json" && !p.starts_with('.'));
    let (a, b) = (
        export.join(json_files.next().unwrap()),
        export.join(json_files.next().unwrap()),
    );
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let original_b = std::fs::read(&b).unwrap();
    std::fs::remove_file(&b).unwrap();
    std::fs::hard_link(&a, &b).unwrap();
    let dest = new_repo(&tmp.path().join("dest"));
    let err = fails_with(1, &["import", s(&dest), s(&export), "--transfer", "link"]);
    assert!(err.contains("the export says"), "{err}");
    assert!(datastore_inodes(&dest).is_empty());
    // Its own bytes back, the same import links every file.
    std::fs::remove_file(&b).unwrap();
    std::fs::write(&b, &original_b).unwrap();
    let summary = json(&[
        "import",
        s(&dest),
        s(&export),
        "--transfer",
        "link",
        "--json",
    ]);
    assert_eq!(summary["files_present"].as_u64(), Some(0), "{summary}");
    assert!(!datastore_inodes(&dest).is_empty());
}

/// `quanta` with the open-file limit set to `limit` (soft and hard).
fn quanta_with_open_file_limit(limit: u64) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = quanta();
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(move || {
            let rl = libc::rlimit {
                rlim_cur: limit as libc::rlim_t,
                rlim_max: limit as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd
}

/// An import or transfer into more datastore directories than the process
/// may hold open files keeps only some directory handles open and
/// succeeds (it failed with "Too many open files" when it kept one per
/// directory for the whole run).
#[test]
fn imports_and_transfers_into_more_directories_than_open_files_allowed_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    // One directory per exposure in the datastore: 120 of them, for 64
    // open files (on PostgreSQL a transfer's two registries hold sockets).
    let src = common::make_reference_repo(tmp.path(), 120, 1);
    let export = tmp.path().join("export");
    ok(&["export", s(&src), s(&export), "--collections", "Cam/raw"]);
    let limited = |args: &[&str]| {
        let out = quanta_with_open_file_limit(64).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", show(&out));
    };
    for mode in ["copy", "link"] {
        let dest = new_repo(&tmp.path().join(format!("import-{mode}")));
        limited(&["import", s(&dest), s(&export), "--transfer", mode]);
        assert_eq!(datasets(&dest, "Cam/raw"), datasets(&src, "Cam/raw"));
        ok(&["repo", "check", s(&dest)]);
        let dest = new_repo(&tmp.path().join(format!("transfer-{mode}")));
        limited(&[
            "transfer",
            s(&src),
            s(&dest),
            "--collections",
            "Cam/raw",
            "--transfer",
            mode,
        ]);
        assert_eq!(datasets(&dest, "Cam/raw"), datasets(&src, "Cam/raw"));
        ok(&["repo", "check", s(&dest)]);
    }
}
