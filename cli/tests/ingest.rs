//! Ingest through the real binary on real files (issue 16, items 1–3): a
//! failed ingest never loses a source (also across filesystems and on a
//! full disk), nothing reads or writes the repository's own files through
//! an ingest source or a `get --output`, and an ingest killed (SIGKILL) at
//! any step of its protocol, in any transfer mode, ends where an
//! uninterrupted run would have once the same command is run again.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fails_with, ok, quanta, reference_records, run};
use serde_json::Value;

/// A tmpfs mounted for one test (we run as root), unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// `None`, with the reason printed, where mounting is refused.
    fn mount(path: &Path, size: &str) -> Option<Self> {
        fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Self {
                path: path.to_path_buf(),
            }),
            Ok(out) => {
                eprintln!(
                    "skipping: cannot mount a tmpfs at {}: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipping: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// A bind mount of `from` at `at`, unmounted on drop.
struct BindMount {
    path: PathBuf,
}

impl BindMount {
    fn mount(from: &Path, at: &Path) -> Option<Self> {
        fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .arg("--bind")
            .arg(from)
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipping the bind-mount case: mount --bind refused");
        }
        ok.then(|| Self {
            path: at.to_path_buf(),
        })
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("valid JSON output")
}

/// A repo with the reference records for one exposure and `n_det`
/// detectors, a `raw` dataset type of storage class Bytes and RUN
/// `Cam/raw`. Scratch files go to `scratch`, not into the repo's filesystem.
fn make_repo(repo: &Path, n_det: usize, scratch: &Path) {
    ok(&["repo", "create", s(repo)]);
    let records = scratch.join("records.json");
    fs::write(&records, reference_records(1, n_det).to_string()).unwrap();
    ok(&["dimensions", "insert", s(repo), s(&records)]);
    ok(&[
        "dataset-type",
        "register",
        s(repo),
        "raw",
        "--dimensions",
        "instrument,exposure,detector",
        "--storage-class",
        "Bytes",
    ]);
    ok(&["collection", "create", s(repo), "Cam/raw", "--type", "RUN"]);
}

/// Deterministic bytes, different for every detector.
fn content(det: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 31 + det * 7 + det / 3) as u8)
        .collect()
}

/// Writes one source file per detector into `dir` and a CSV manifest
/// beside them; `missing` names detectors listed without a file.
fn write_sources(dir: &Path, dets: &[usize], len: usize, missing: &[usize]) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let mut manifest = String::from("path,instrument,exposure,detector\n");
    for &d in dets {
        let name = format!("raw_{d}.bin");
        if !missing.contains(&d) {
            fs::write(dir.join(&name), content(d, len)).unwrap();
        }
        manifest.push_str(&format!("{name},Cam,0,{d}\n"));
    }
    let path = dir.join("manifest.csv");
    fs::write(&path, manifest).unwrap();
    path
}

fn ingest_args<'a>(repo: &'a Path, manifest: &'a Path, mode: &'a str) -> Vec<&'a str> {
    vec![
        "ingest",
        s(repo),
        "--run",
        "Cam/raw",
        "--dataset-type",
        "raw",
        "--manifest",
        s(manifest),
        "--transfer",
        mode,
    ]
}

/// The registered datasets: UUID, data ID and file record, in data ID order.
fn datasets(repo: &Path) -> Vec<Value> {
    let sql = format!(
        "SELECT {} AS id, data_id, path, size, checksum FROM dataset ORDER BY data_id",
        common::sql_hex_id("id")
    );
    let rows = json(&ok(&["sql", s(repo), &sql, "--json"]));
    rows.as_array().unwrap().clone()
}

/// Every entry under the datastore (temporary files included): relative
/// path → kind and BLAKE3 of the content (a symlink also by its target's
/// file name, since the sources of two test cases live in two directories).
fn datastore_entries(repo: &Path) -> BTreeMap<String, String> {
    let root = repo.join("datastore");
    let mut found = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap().display().to_string();
            let hash = fs::read(&path)
                .map(|b| quanta_core::hash::blake3_hex(&b))
                .unwrap_or_else(|e| format!("unreadable: {e}"));
            let what = if kind.is_symlink() {
                let target = fs::read_link(&path).unwrap();
                format!(
                    "symlink to {} {hash}",
                    target.file_name().unwrap().to_string_lossy()
                )
            } else {
                format!("file {hash}")
            };
            found.insert(rel, what);
        }
    }
    found
}

/// Every registered dataset's file exists and has its recorded size and
/// checksum, and holds the content of its detector's source.
fn assert_datasets_verify(repo: &Path, len: usize) {
    for row in datasets(repo) {
        let path = repo.join("datastore").join(row["path"].as_str().unwrap());
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(bytes.len() as i64, row["size"].as_i64().unwrap(), "{row}");
        assert_eq!(
            quanta_core::hash::blake3_hex(&bytes),
            row["checksum"].as_str().unwrap(),
            "{row}"
        );
        assert!(
            bytes == content(detector_of(&row), len),
            "{row}: wrong content"
        );
    }
}

fn source_present(dir: &Path, det: usize) -> bool {
    dir.join(format!("raw_{det}.bin")).exists()
}

fn registered_detectors(repo: &Path) -> Vec<usize> {
    datasets(repo).iter().map(detector_of).collect()
}

/// The detector of a dataset row (data IDs are stored in universe order:
/// instrument, detector, exposure).
fn detector_of(row: &Value) -> usize {
    let data_id: Vec<Value> = serde_json::from_str(row["data_id"].as_str().unwrap()).unwrap();
    data_id[1].as_u64().unwrap() as usize
}

/// Dataset rows with a direct path cut to its file name: each case of a
/// test ingests from a directory of its own.
fn case_free(mut rows: Vec<Value>) -> Vec<Value> {
    for row in &mut rows {
        let path = row["path"].as_str().unwrap();
        if path.starts_with('/') {
            row["path"] = Path::new(path)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .into();
        }
    }
    rows
}

/// Regular files and symlinks under the datastore (temporary ones too).
fn datastore_is_empty(repo: &Path) -> bool {
    datastore_entries(repo).is_empty()
}

/// Issue 16 item 1: across filesystems, a move whose ingest fails later (a
/// missing file on the manifest's third line, a full disk) used to lose the
/// files already moved. Every source must stay, with nothing registered
/// and nothing left in the datastore; a move that succeeds across
/// filesystems removes its sources only with the datasets registered.
#[test]
fn failed_move_across_filesystems_keeps_every_source() {
    let dir = tempfile::tempdir().unwrap();
    let Some(tmpfs) = Tmpfs::mount(&dir.path().join("mnt"), "8m") else {
        return;
    };
    let repo = tmpfs.path.join("repo");
    make_repo(&repo, 8, dir.path());

    // The third line of the manifest names a missing file.
    let src = dir.path().join("src_missing");
    let dets: Vec<usize> = (0..6).collect();
    let manifest = write_sources(&src, &dets, 10_000, &[2]);
    let err = fails_with(2, &ingest_args(&repo, &manifest, "move"));
    assert!(err.contains("raw_2.bin"), "{err}");
    for d in [0, 1, 3, 4, 5] {
        let kept = fs::read(src.join(format!("raw_{d}.bin"))).unwrap();
        assert!(kept == content(d, 10_000), "source {d} changed");
    }
    assert!(registered_detectors(&repo).is_empty());
    assert!(datastore_is_empty(&repo), "{:?}", datastore_entries(&repo));

    // The disk fills up on the third file.
    let free = free_bytes(&tmpfs.path);
    let len = (free / 3 + 4096) as usize;
    let src = dir.path().join("src_full");
    let manifest = write_sources(&src, &dets, len, &[]);
    let out = run(&ingest_args(&repo, &manifest, "move"));
    assert!(!out.status.success(), "the tmpfs should have filled up");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left"), "{err}");
    for &d in &dets {
        let kept = fs::read(src.join(format!("raw_{d}.bin"))).unwrap();
        assert!(kept == content(d, len), "source {d} changed");
    }
    assert!(registered_detectors(&repo).is_empty());
    assert!(datastore_is_empty(&repo), "{:?}", datastore_entries(&repo));

    // A move across filesystems that succeeds.
    let src = dir.path().join("src_ok");
    let manifest = write_sources(&src, &dets, 1000, &[]);
    ok(&ingest_args(&repo, &manifest, "move"));
    assert_eq!(registered_detectors(&repo), dets);
    assert!(dets.iter().all(|&d| !source_present(&src, d)));
    assert_datasets_verify(&repo, 1000);
}

fn free_bytes(path: &Path) -> u64 {
    let c = std::ffi::CString::new(s(path)).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed out-parameter.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64
}

/// Issue 16 item 2: an ingest source inside the repository (a registered
/// dataset's file, the registry database, through a symlink, a hard link
/// or a bind mount) is refused in every mode, and so is a `get --output`
/// there; the repository stays intact.
#[test]
fn sources_and_outputs_inside_the_repository_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    make_repo(&repo, 4, dir.path());
    let src = dir.path().join("src");
    let manifest = write_sources(&src, &[0, 1], 5000, &[]);
    ok(&ingest_args(&repo, &manifest, "copy"));
    let before = datasets(&repo);
    let stored = repo
        .join("datastore")
        .join(before[0]["path"].as_str().unwrap());
    // The registry's file: the SQLite database, or the configuration naming
    // the database on a server.
    let registry = Some(repo.join("registry.sqlite3"))
        .filter(|db| db.exists())
        .unwrap_or_else(|| repo.join("registry.yaml"));
    let symlink_to_registry = dir.path().join("innocent.bin");
    std::os::unix::fs::symlink(&registry, &symlink_to_registry).unwrap();
    let symlink_to_stored = dir.path().join("innocent2.bin");
    std::os::unix::fs::symlink(&stored, &symlink_to_stored).unwrap();
    let hard_link_to_registry = dir.path().join("copy_of_registry.bin");
    fs::hard_link(&registry, &hard_link_to_registry).unwrap();

    let ingest_one = |file: &Path, mode: &str| {
        let args = [
            "ingest",
            s(&repo),
            "--run",
            "Cam/raw",
            "--dataset-type",
            "raw",
            "--data-id",
            "instrument=Cam,exposure=0,detector=2",
            "--transfer",
            mode,
            s(file),
        ];
        fails_with(2, &args)
    };
    for mode in ["move", "copy", "link", "symlink", "auto"] {
        let err = ingest_one(&stored, mode);
        assert!(
            err.contains("in the repository's datastore"),
            "{mode}: {err}"
        );
        let err = ingest_one(&registry, mode);
        assert!(err.contains("registry database"), "{mode}: {err}");
        let err = ingest_one(&symlink_to_registry, mode);
        assert!(err.contains("registry database"), "{mode}: {err}");
        let err = ingest_one(&symlink_to_stored, mode);
        assert!(err.contains("datastore"), "{mode}: {err}");
        let err = ingest_one(&hard_link_to_registry, mode);
        assert!(err.contains("under another name"), "{mode}: {err}");
    }
    if let Some(alias) = BindMount::mount(&repo, &dir.path().join("alias")) {
        let aliased = alias.path.join(stored.strip_prefix(&repo).unwrap());
        for mode in ["move", "copy", "link"] {
            let err = ingest_one(&aliased, mode);
            assert!(err.contains("under another name"), "{mode}: {err}");
        }
        let err = fails_with(
            2,
            &[
                "get",
                s(&repo),
                "raw",
                "--data-id",
                "instrument=Cam,exposure=0,detector=0",
                "--collections",
                "Cam/raw",
                "--output",
                s(&alias.path.join("registry.sqlite3")),
            ],
        );
        assert!(err.contains("under another name"), "{err}");
    }

    let get_to = |output: &Path| {
        let args = [
            "get",
            s(&repo),
            "raw",
            "--data-id",
            "instrument=Cam,exposure=0,detector=0",
            "--collections",
            "Cam/raw",
            "--output",
            s(output),
        ];
        run(&args)
    };
    for output in [
        registry.clone(),
        repo.join("registry.sqlite3-wal"),
        repo.join("datastore/new.bin"),
        stored.clone(),
        symlink_to_registry.clone(),
    ] {
        let out = get_to(&output);
        assert_eq!(out.status.code(), Some(2), "{}", output.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("refusing to write"), "{err}");
    }

    // The repository is intact: same datasets, every file verifies.
    assert_eq!(datasets(&repo), before);
    assert_datasets_verify(&repo, 5000);
    assert!(!repo.join("datastore/new.bin").exists());
    let out = dir.path().join("out.bin");
    assert!(get_to(&out).status.success());
    assert!(fs::read(&out).unwrap() == content(0, 5000));
}

/// Issue 16 item 2: `get --output` writes atomically, so a get that fails
/// (here: the output's disk is full) leaves the output as it was and no
/// partial file beside it.
#[test]
fn failed_get_leaves_the_output_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    make_repo(&repo, 1, dir.path());
    let src = dir.path().join("src");
    let manifest = write_sources(&src, &[0], 1 << 20, &[]);
    ok(&ingest_args(&repo, &manifest, "copy"));
    let Some(small) = Tmpfs::mount(&dir.path().join("small"), "256k") else {
        return;
    };
    let output = small.path.join("out.bin");
    fs::write(&output, "the previous content").unwrap();
    let out = run(&[
        "get",
        s(&repo),
        "raw",
        "--data-id",
        "instrument=Cam,exposure=0,detector=0",
        "--collections",
        "Cam/raw",
        "--output",
        s(&output),
    ]);
    assert!(!out.status.success());
    assert_eq!(fs::read_to_string(&output).unwrap(), "the previous content");
    let names: Vec<String> = fs::read_dir(&small.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["out.bin"]);
}

/// Points of the ingest protocol where a crash test kills the command
/// (`QUANTA_TEST_KILL_AT`), for 5 items; the last two only for a move.
const KILL_POINTS: [&str; 7] = [
    "ingest-transferred:1",
    "ingest-transferred:3",
    "ingest-before-commit:1",
    "ingest-committed:1",
    "ingest-source-removed:1",
    "ingest-source-removed:4",
    "ingest-source-removed:5",
];

/// Issue 16 item 3 and the crash matrix of ingest: `ingest` killed with
/// SIGKILL at every step of its protocol, in every transfer mode, loses no
/// source (a move's source is gone only if its dataset is registered), and
/// rerunning the same command ends with exactly the registry rows and
/// datastore files of an uninterrupted run, every file verifying. A third
/// run changes nothing.
#[test]
fn killed_ingest_converges_when_rerun_in_every_mode() {
    const N: usize = 5;
    const LEN: usize = 3000;
    let base = tempfile::tempdir().unwrap();
    let template = base.path().join("template");
    make_repo(&template, N, base.path());
    let dets: Vec<usize> = (0..N).collect();
    let mut case_number = 0;
    let mut new_case = || {
        case_number += 1;
        let case = base.path().join(format!("case{case_number}"));
        let repo = case.join("repo");
        if common::test_registry().is_some() {
            // A copy of the template's registry.yaml would share its
            // namespace: each case gets a repo of its own.
            fs::create_dir_all(&case).unwrap();
            make_repo(&repo, N, &case);
        } else {
            fs::create_dir_all(repo.join("datastore")).unwrap();
            for entry in fs::read_dir(&template).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_file() {
                    fs::copy(entry.path(), repo.join(entry.file_name())).unwrap();
                }
            }
        }
        let src = case.join("src");
        let manifest = write_sources(&src, &dets, LEN, &[]);
        (repo, src, manifest)
    };
    let mut checked = 0;
    for mode in ["copy", "move", "link", "symlink", "auto", "direct"] {
        let (repo, src, manifest) = new_case();
        ok(&ingest_args(&repo, &manifest, mode));
        let expected = (datasets(&repo), datastore_entries(&repo));
        assert_eq!(expected.0.len(), N);
        // Direct: the registry records the sources where they are.
        let in_datastore = if mode == "direct" { 0 } else { N };
        assert_eq!(expected.1.len(), in_datastore, "{:?}", expected.1);
        assert_datasets_verify(&repo, LEN);
        let sources_stay = mode != "move";
        assert!(dets
            .iter()
            .all(|&d| source_present(&src, d) == sources_stay));

        for point in KILL_POINTS {
            if point.starts_with("ingest-source-removed") && mode != "move" {
                continue;
            }
            let (repo, src, manifest) = new_case();
            let killed = quanta()
                .args(ingest_args(&repo, &manifest, mode))
                .env("QUANTA_TEST_KILL_AT", point)
                .output()
                .unwrap();
            assert_eq!(
                killed.status.signal(),
                Some(libc::SIGKILL),
                "{mode} {point}: {}",
                String::from_utf8_lossy(&killed.stderr)
            );
            // No source lost: a source is gone only with its dataset
            // registered (and then only in a move).
            let registered = registered_detectors(&repo);
            for &d in &dets {
                assert!(
                    source_present(&src, d) || (mode == "move" && registered.contains(&d)),
                    "{mode} {point}: source {d} lost"
                );
            }
            let committed = !registered.is_empty();
            if !committed && mode != "direct" {
                // A copy killed halfway leaves its fixed temporary name.
                let path = expected.0[N - 1]["path"].as_str().unwrap();
                let dest = repo.join("datastore").join(path);
                fs::create_dir_all(dest.parent().unwrap()).unwrap();
                fs::write(quanta_datastore::ingest_temp_path(&dest), b"half").unwrap();
            }
            let out = ok(&ingest_args(&repo, &manifest, mode));
            let summary = if committed {
                format!("ingested 0 raw datasets into Cam/raw; skipped {N} already ingested")
            } else {
                format!("ingested {N} raw datasets into Cam/raw")
            };
            assert_eq!(out.trim(), summary, "{mode} {point}");
            assert_eq!(
                case_free(datasets(&repo)),
                case_free(expected.0.clone()),
                "{mode} {point}"
            );
            assert_eq!(datastore_entries(&repo), expected.1, "{mode} {point}");
            assert_datasets_verify(&repo, LEN);
            assert!(
                dets.iter()
                    .all(|&d| source_present(&src, d) == sources_stay),
                "{mode} {point}"
            );
            checked += 1;
        }
        // A third run changes nothing.
        let out = ok(&ingest_args(&repo, &manifest, mode));
        assert!(
            out.contains(&format!("skipped {N} already ingested")),
            "{out}"
        );
        assert_eq!(datasets(&repo), expected.0);
        assert_eq!(datastore_entries(&repo), expected.1);
    }
    assert_eq!(checked, 6 * 4 + 3);
}

/// An ingest registers `--commit-every` datasets per transaction: killed
/// after the first or second of three commits, it keeps what it committed
/// (with the files) and loses no source; the rerun registers the rest and
/// ends with the rows, files and sources of an uninterrupted run.
#[test]
fn an_ingest_killed_between_its_commits_keeps_them_and_a_rerun_finishes() {
    const N: usize = 5;
    const LEN: usize = 1000;
    let base = tempfile::tempdir().unwrap();
    let dets: Vec<usize> = (0..N).collect();
    let mut case_number = 0;
    let mut new_case = || {
        case_number += 1;
        let case = base.path().join(format!("case{case_number}"));
        fs::create_dir_all(&case).unwrap();
        let repo = case.join("repo");
        make_repo(&repo, N, &case);
        let manifest = write_sources(&case.join("src"), &dets, LEN, &[]);
        (repo, case.join("src"), manifest)
    };
    fn chunked<'a>(repo: &'a Path, manifest: &'a Path, mode: &'a str) -> Vec<&'a str> {
        let mut args = ingest_args(repo, manifest, mode);
        args.extend(["--commit-every", "2"]);
        args
    }
    for mode in ["copy", "move"] {
        let (repo, src, manifest) = new_case();
        ok(&chunked(&repo, &manifest, mode));
        let expected = (datasets(&repo), datastore_entries(&repo));
        assert_eq!(expected.0.len(), N);
        for commits in [1, 2] {
            let (repo, src_killed, manifest) = new_case();
            let killed = quanta()
                .args(chunked(&repo, &manifest, mode))
                .env("QUANTA_TEST_KILL_AT", format!("ingest-committed:{commits}"))
                .output()
                .unwrap();
            assert_eq!(
                killed.status.signal(),
                Some(libc::SIGKILL),
                "{mode} {commits}"
            );
            // A move removes the sources of a commit after it: killed
            // right after commit k, those of the commits before are gone,
            // no other.
            let registered = registered_detectors(&repo);
            assert_eq!(registered.len(), 2 * commits, "{mode}");
            let gone: Vec<usize> = dets
                .iter()
                .copied()
                .filter(|&d| !source_present(&src_killed, d))
                .collect();
            let moved_before = if mode == "move" { 2 * (commits - 1) } else { 0 };
            assert_eq!(gone.len(), moved_before, "{mode} {commits}: {gone:?}");
            assert!(gone.iter().all(|d| registered.contains(d)), "{mode}");
            assert_datasets_verify(&repo, LEN);
            let out = ok(&chunked(&repo, &manifest, mode));
            assert_eq!(
                out.trim(),
                format!(
                    "ingested {} raw datasets into Cam/raw; skipped {} already ingested",
                    N - 2 * commits,
                    2 * commits
                ),
                "{mode} {commits}"
            );
            assert_eq!(datasets(&repo), expected.0, "{mode} {commits}");
            assert_eq!(datastore_entries(&repo), expected.1, "{mode} {commits}");
            assert_datasets_verify(&repo, LEN);
            let sources_stay = mode != "move";
            assert!(dets
                .iter()
                .all(|&d| source_present(&src_killed, d) == sources_stay));
        }
        assert!(dets
            .iter()
            .all(|&d| source_present(&src, d) == (mode != "move")));
    }
    // Zero datasets per transaction is refused before anything happens.
    let (repo, _, manifest) = new_case();
    let mut args: Vec<&str> = ingest_args(&repo, &manifest, "copy");
    args.extend(["--commit-every", "0"]);
    let err = fails_with(2, &args);
    assert!(err.contains("--commit-every"), "{err}");
    assert!(datasets(&repo).is_empty());
}

/// A rerun that finds the data ID registered with other content refuses,
/// naming the data ID and both files, and writes nothing; two manifest
/// lines with one data ID are refused before anything is written.
#[test]
fn rerun_with_changed_content_or_duplicate_data_ids_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    make_repo(&repo, 3, dir.path());
    let src = dir.path().join("src");
    let manifest = write_sources(&src, &[0, 1, 2], 100, &[]);
    ok(&ingest_args(&repo, &manifest, "copy"));
    let before = (datasets(&repo), datastore_entries(&repo));
    fs::write(src.join("raw_1.bin"), b"changed since").unwrap();
    for mode in ["copy", "move", "link", "symlink"] {
        let err = fails_with(2, &ingest_args(&repo, &manifest, mode));
        let stored = before.0[1]["path"].as_str().unwrap();
        assert!(
            err.contains("detector: 1") && err.contains("raw_1.bin") && err.contains(stored),
            "{mode}: {err}"
        );
        assert!(err.contains("nothing was ingested"), "{err}");
        assert_eq!((datasets(&repo), datastore_entries(&repo)), before);
        assert!((0..3).all(|d| source_present(&src, d)), "{mode}");
    }

    let twice = dir.path().join("twice.csv");
    fs::write(
        &twice,
        "path,instrument,exposure,detector\nsrc/raw_0.bin,Cam,0,2\nsrc/raw_2.bin,Cam,0,2\n",
    )
    .unwrap();
    let err = fails_with(2, &ingest_args(&repo, &twice, "move"));
    assert!(
        err.contains("raw_0.bin") && err.contains("raw_2.bin") && err.contains("detector: 2"),
        "{err}"
    );
    assert_eq!((datasets(&repo), datastore_entries(&repo)), before);
}

/// Makes a directory immutable (`chattr +i`: not even root can remove its
/// entries) until dropped.
struct Immutable {
    dir: PathBuf,
}

impl Immutable {
    fn set(dir: &Path) -> Option<Self> {
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipping: chattr +i is refused on {}", dir.display());
        }
        ok.then(|| Self {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.dir).status();
    }
}

/// A move whose sources cannot be removed after registration is a failure
/// of the work (exit 1) that names them; the datasets stay registered, and
/// rerunning the same command once removal is possible finishes the move.
#[test]
fn move_whose_sources_cannot_be_removed_exits_1_and_a_rerun_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    make_repo(&repo, 3, dir.path());
    let src = dir.path().join("src");
    let manifest = write_sources(&src, &[0, 1, 2], 100, &[]);
    let Some(immutable) = Immutable::set(&src) else {
        return;
    };
    let err = fails_with(1, &ingest_args(&repo, &manifest, "move"));
    assert!(
        err.contains("could not remove moved source") && err.contains("raw_1.bin"),
        "{err}"
    );
    assert!(err.contains("rerun the same ingest"), "{err}");
    assert_eq!(registered_detectors(&repo), [0, 1, 2]);
    assert!((0..3).all(|d| source_present(&src, d)));
    drop(immutable);
    let out = ok(&ingest_args(&repo, &manifest, "move"));
    assert!(out.contains("skipped 3 already ingested"), "{out}");
    assert!((0..3).all(|d| !source_present(&src, d)));
    assert_datasets_verify(&repo, 100);
}

/// `--transfer direct` (issue 23, LSST's mode): the registry records each
/// source's canonical absolute path and the datastore makes nothing; the
/// files are read where they are (`get`, `repo check`, `retrieve`,
/// `export` with files), an export with files gives them their template
/// paths, and neither pruning nor removing the RUN deletes them.
#[test]
fn direct_ingest_reads_files_in_place_and_no_removal_deletes_them() {
    const N: usize = 4;
    const LEN: usize = 700;
    let base = tempfile::tempdir().unwrap();
    let repo = base.path().join("repo");
    make_repo(&repo, N, base.path());
    let src = base.path().join("src");
    let dets: Vec<usize> = (0..N).collect();
    let manifest = write_sources(&src, &dets, LEN, &[]);
    ok(&ingest_args(&repo, &manifest, "direct"));

    let real_src = fs::canonicalize(&src).unwrap();
    let rows = datasets(&repo);
    assert_eq!(rows.len(), N);
    for row in &rows {
        let d = detector_of(row);
        let expected = real_src.join(format!("raw_{d}.bin"));
        assert_eq!(row["path"].as_str().unwrap(), s(&expected), "{row}");
    }
    assert!(datastore_is_empty(&repo), "{:?}", datastore_entries(&repo));
    assert_datasets_verify(&repo, LEN);
    ok(&["repo", "check", s(&repo)]);
    let got = base.path().join("got.bin");
    ok(&[
        "get",
        s(&repo),
        "raw",
        "--data-id",
        "instrument=Cam,exposure=0,detector=2",
        "--collections",
        "Cam/raw",
        "--output",
        s(&got),
    ]);
    assert_eq!(fs::read(&got).unwrap(), content(2, LEN));

    // A changed direct file is a problem `repo check` reports (exit 1),
    // and `--repair` never touches it.
    let changed = src.join("raw_1.bin");
    fs::write(&changed, b"changed").unwrap();
    let check = run(&["repo", "check", s(&repo), "--repair"]);
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    assert_eq!(fs::read(&changed).unwrap(), b"changed");
    fs::write(&changed, content(1, LEN)).unwrap();
    ok(&["repo", "check", s(&repo)]);

    // Exported with files, a direct file goes to its template path (the
    // one a copied ingest gives it), and imports like any other; so does
    // a retrieve. (Bytes has no LSST mapping: a Json type for this part.)
    ok(&[
        "dataset-type",
        "register",
        s(&repo),
        "rawJson",
        "--dimensions",
        "instrument,exposure,detector",
        "--storage-class",
        "Json",
    ]);
    let json_src = base.path().join("json");
    fs::create_dir_all(&json_src).unwrap();
    let mut json_manifest = String::from("path,instrument,exposure,detector\n");
    for &d in &dets {
        fs::write(
            json_src.join(format!("{d}.json")),
            format!("{{\"detector\": {d}}}"),
        )
        .unwrap();
        json_manifest.push_str(&format!("{d}.json,Cam,0,{d}\n"));
    }
    let json_manifest_path = json_src.join("manifest.csv");
    fs::write(&json_manifest_path, json_manifest).unwrap();
    let ingest_json = |repo: &Path, mode: &str| {
        let mut args = ingest_args(repo, &json_manifest_path, mode);
        args[5] = "rawJson";
        ok(&args);
    };
    ingest_json(&repo, "direct");
    let export = base.path().join("export");
    ok(&[
        "export",
        s(&repo),
        s(&export),
        "--collections",
        "Cam/raw",
        "--dataset-type",
        "rawJson",
        "--transfer",
        "copy",
    ]);
    let copied = base.path().join("copied");
    make_repo(&copied, N, base.path());
    ok(&[
        "dataset-type",
        "register",
        s(&copied),
        "rawJson",
        "--dimensions",
        "instrument,exposure,detector",
        "--storage-class",
        "Json",
    ]);
    ingest_json(&copied, "copy");
    let template_paths: Vec<(String, usize)> = datasets(&copied)
        .iter()
        .map(|row| (row["path"].as_str().unwrap().to_string(), detector_of(row)))
        .collect();
    assert_eq!(template_paths.len(), N);
    let json_of = |d: usize| format!("{{\"detector\": {d}}}").into_bytes();
    for (rel, d) in &template_paths {
        assert_eq!(fs::read(export.join(rel)).unwrap(), json_of(*d), "{rel}");
    }
    let imported = base.path().join("imported");
    ok(&["repo", "create", s(&imported)]);
    ok(&["import", s(&imported), s(&export), "--transfer", "link"]);
    ok(&["repo", "check", s(&imported)]);
    // Imported `direct`, the export's own files are recorded where they are.
    let imported_direct = base.path().join("imported_direct");
    ok(&["repo", "create", s(&imported_direct)]);
    ok(&[
        "import",
        s(&imported_direct),
        s(&export),
        "--transfer",
        "direct",
    ]);
    ok(&["repo", "check", s(&imported_direct)]);
    let real_export = fs::canonicalize(&export).unwrap();
    for row in datasets(&imported_direct) {
        let path = row["path"].as_str().unwrap();
        assert!(path.starts_with(s(&real_export)), "{row}");
    }
    assert!(datastore_is_empty(&imported_direct));
    let retrieved = base.path().join("retrieved");
    ok(&[
        "retrieve",
        s(&repo),
        s(&retrieved),
        "--collections",
        "Cam/raw",
        "--dataset-type",
        "rawJson",
    ]);
    for (rel, d) in &template_paths {
        assert_eq!(fs::read(retrieved.join(rel)).unwrap(), json_of(*d), "{rel}");
    }

    // Removal drops the rows and leaves every direct file.
    let pruned = ok(&[
        "prune-datasets",
        s(&repo),
        "--collections",
        "Cam/raw",
        "--where",
        "detector = 0",
        "--purge",
    ]);
    assert!(pruned.contains("2 direct files left in place"), "{pruned}");
    let removed = ok(&["remove-runs", s(&repo), "Cam/raw"]);
    assert!(
        removed.contains(&format!("{} direct files left in place", 2 * N - 2)),
        "{removed}"
    );
    assert!(datasets(&repo).is_empty());
    for &d in &dets {
        assert_eq!(
            fs::read(src.join(format!("raw_{d}.bin"))).unwrap(),
            content(d, LEN)
        );
        assert_eq!(
            fs::read(json_src.join(format!("{d}.json"))).unwrap(),
            json_of(d)
        );
    }
    ok(&["repo", "check", s(&repo)]);
}

/// Raws ingested `direct` feed a whole campaign: preflight puts their
/// absolute paths into the bundle, workers read them where they are, and
/// merge registers outputs identical (type, data ID, checksum) to those of
/// the same campaign on copied raws.
#[test]
fn a_campaign_on_direct_raws_makes_what_one_on_copied_raws_makes() {
    let base = tempfile::tempdir().unwrap();
    let pipeline =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipelines/reference.yaml");
    let outputs = |mode: &str| {
        let dir = base.path().join(mode);
        fs::create_dir_all(&dir).unwrap();
        let repo = common::make_empty_reference_repo(&dir, 2, 3);
        let manifest = common::write_raw_files(&dir, 2, 3, 0);
        let mut args = ingest_args(&repo, &manifest, mode);
        args[5] = "raw";
        ok(&args);
        let bundle = dir.join("campaign.qb");
        common::preflight_into_test_run(&repo, &pipeline, &bundle);
        ok(&["run", s(&bundle), "--jobs", "2"]);
        ok(&["merge", s(&repo), s(&bundle)]);
        ok(&["repo", "check", s(&repo)]);
        let sql = "SELECT t.name AS type, d.data_id, d.checksum FROM dataset d \
                   JOIN dataset_type t ON t.id = d.dataset_type_id \
                   JOIN collection c ON c.id = d.run_id \
                   WHERE c.name = 'u/test/run' ORDER BY 1, 2";
        let rows = json(&ok(&["sql", s(&repo), sql, "--json"]));
        (repo, rows)
    };
    let (direct_repo, direct) = outputs("direct");
    let (_, copied) = outputs("copy");
    assert!(direct.as_array().unwrap().len() > 6, "{direct}");
    assert_eq!(direct, copied);
    // The raws the outputs came from stay where they were, recorded so.
    let raws = json(&ok(&[
        "sql",
        s(&direct_repo),
        "SELECT path FROM dataset WHERE path LIKE '%raw_files%'",
        "--json",
    ]));
    assert_eq!(raws.as_array().unwrap().len(), 6, "{raws}");
    for row in raws.as_array().unwrap() {
        assert!(row["path"].as_str().unwrap().starts_with('/'), "{row}");
    }
}
