//! The crash matrix (issue 16): `SIGKILL` of `ingest` (every transfer mode),
//! `run`, `worker` and `merge` at kill points chosen from each command's own
//! progress, then the same command rerun to completion; the final state must
//! equal an uninterrupted run's. And disk-full: a small tmpfs holding the
//! repository during `ingest`, `run` and `merge`.
//!
//! Kill points are `quanta_core::fault`'s (`QUANTA_TEST_KILL_AT=POINT:N`
//! makes the real `quanta` binary send itself `SIGKILL` the Nth time it
//! passes POINT). An uninterrupted reference run of each scenario logs how
//! often it passes every point (`QUANTA_TEST_KILL_LOG`), and the matrix
//! kills at the first, middle or last passage of the points of each phase:
//! files being written or linked, journal records, the registry commit.
//!
//! A state is: the dataset types, collections and chains; every dataset's
//! type, RUN, data ID and datastore record (and UUID, where preflight
//! assigned it); quanta counted by task and status, quantum inputs and run
//! provenance; for ingest, which source files remain. Beyond equality with
//! the reference, every state must be consistent: each registered file is
//! present with the recorded size and BLAKE3, and the datastore holds no
//! file the registry does not know.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    make_empty_reference_repo, make_reference_repo, ok, quanta, registry_strings, restore, show,
    write_raw_files,
};

const N_EXP: usize = 3;
const N_DET: usize = 4;
const OUTPUT_RUN: &str = "u/crash/run";
const OUTPUT_CHAIN: &str = "u/crash/out";
const KILL_AT: &str = "QUANTA_TEST_KILL_AT";
const KILL_LOG: &str = "QUANTA_TEST_KILL_LOG";

const LINKED: &str = "datastore.linked";
const TEMP_WRITTEN: &str = "datastore.temp_written";
const REGISTRY_COMMIT: &str = "registry.commit";
const INGEST_TRANSFERRED: &str = "ingest-transferred";
const INGEST_COMMITTED: &str = "ingest-committed";
const INGEST_SOURCE_REMOVED: &str = "ingest-source-removed";
const JOURNAL_APPENDED: &str = "journal.appended";

/// Files a datastore may hold that the registry does not know, by path
/// prefix relative to the datastore root. Each must be documented where it
/// is made (none so far: temporary files of a killed writer must be gone
/// once the command has been rerun to completion).
const DOCUMENTED_EXTRAS: &[&str] = &[];

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp paths")
}

fn pipeline() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipelines/reference.yaml")
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp runs");
    assert!(status.success(), "cp -a {from:?} {to:?}");
}

/// Builds a snapshot at `work` with `make`, then moves it to `base`.
fn snapshot(work: &Path, base: &Path, make: impl FnOnce(&Path)) {
    if work.exists() {
        std::fs::remove_dir_all(work).unwrap();
    }
    std::fs::create_dir_all(work).unwrap();
    make(work);
    std::fs::rename(work, base).unwrap();
}

fn preflight(work: &Path) {
    ok(&[
        "preflight",
        s(&work.join("repo")),
        "--pipeline",
        s(&pipeline()),
        "--input",
        "Cam/raw",
        "--output-run",
        OUTPUT_RUN,
        "--output",
        OUTPUT_CHAIN,
        "--bundle",
        s(&work.join("campaign.qb")),
    ]);
}

fn ingest_command(work: &Path, mode: &str) -> Command {
    let mut c = quanta();
    c.args([
        "ingest",
        s(&work.join("repo")),
        "--run",
        "Cam/raw",
        "--dataset-type",
        "raw",
        "--manifest",
        s(&work.join("manifest.csv")),
        "--transfer",
        mode,
    ]);
    c
}

fn merge_command(work: &Path) -> Command {
    let mut c = quanta();
    c.args(["merge", s(&work.join("repo")), s(&work.join("campaign.qb"))]);
    c
}

fn finish_with_merge(work: &Path) -> Result<(), String> {
    let out = merge_command(work).output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("merge after the rerun failed: {}", show(&out)))
    }
}

// ---------------------------------------------------------------------------
// States

/// What a command leaves behind, in a form two runs can be compared by.
#[derive(Debug, PartialEq, Eq)]
struct RepoState {
    dataset_types: Vec<String>,
    collections: Vec<String>,
    chains: Vec<String>,
    /// type | RUN | data ID | formatter | size | checksum | producer connection [| UUID | path]
    datasets: Vec<String>,
    quanta_by_task_and_status: BTreeMap<String, i64>,
    quantum_inputs: i64,
    run_provenance: i64,
    /// Source files still present (ingest scenarios).
    sources: Vec<String>,
}

/// A registered file: where and what it must be.
struct Registered {
    path: String,
    size: u64,
    checksum: String,
}

fn count(repo: &Path, sql: &str) -> i64 {
    let rows = registry_strings(repo, sql);
    rows[0].parse().expect("a count")
}

fn read_state(work: &Path, with_ids: bool) -> (RepoState, Vec<Registered>) {
    let repo = work.join("repo");
    // An ingest names its files by the UUIDs it draws: compare paths only
    // where preflight assigned them.
    let id_and_path = if with_ids { ", d.id, d.path" } else { "" };
    let datasets = registry_strings(
        &repo,
        &format!(
            "SELECT t.name, c.name, d.data_id, d.formatter, d.size, d.checksum, \
             d.producer_connection{id_and_path} FROM dataset d \
             JOIN dataset_type t ON t.id = d.dataset_type_id JOIN collection c ON c.id = d.run_id"
        ),
    );
    // Paths hold no ` | `: the columns split back apart.
    let registered = registry_strings(
        &repo,
        "SELECT path, size, checksum FROM dataset WHERE path IS NOT NULL",
    )
    .iter()
    .map(|row| {
        let cols: Vec<&str> = row.split(" | ").collect();
        Registered {
            path: cols[0].to_string(),
            size: cols[1].parse().expect("a size"),
            checksum: cols[2].to_string(),
        }
    })
    .collect();
    let quanta_by_task_and_status = registry_strings(
        &repo,
        "SELECT task_label || ' ' || status, count(*) FROM quantum GROUP BY 1",
    )
    .iter()
    .map(|row| {
        let (label, n) = row.rsplit_once(" | ").expect("two columns");
        (label.to_string(), n.parse().expect("a count"))
    })
    .collect();
    let sources_dir = work.join("raw_files");
    let sources = if sources_dir.is_dir() {
        let mut v: Vec<String> = std::fs::read_dir(&sources_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    } else {
        Vec::new()
    };
    let state = RepoState {
        dataset_types: registry_strings(
            &repo,
            "SELECT name, dimensions, storage_class FROM dataset_type",
        ),
        collections: registry_strings(&repo, "SELECT name, type FROM collection"),
        chains: registry_strings(
            &repo,
            "SELECT p.name, ch.position, c.name FROM collection_chain ch \
             JOIN collection p ON p.id = ch.parent_id JOIN collection c ON c.id = ch.child_id",
        ),
        datasets,
        quanta_by_task_and_status,
        quantum_inputs: count(&repo, "SELECT count(*) FROM quantum_input"),
        run_provenance: count(&repo, "SELECT count(*) FROM run_provenance"),
        sources,
    };
    (state, registered)
}

/// Every file under `dir` (symbolic links included, not followed), as
/// paths relative to `root`.
fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.symlink_metadata().unwrap().is_dir() {
            walk(root, &path, out);
        } else {
            let rel = path.strip_prefix(root).unwrap();
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
}

/// The registry and the datastore agree: each registered file is there
/// with its recorded size and checksum, and nothing else is.
fn check_consistent(work: &Path, registered: &[Registered]) -> Result<(), String> {
    let root = work.join("repo/datastore");
    let mut problems = Vec::new();
    for r in registered {
        match std::fs::read(root.join(&r.path)) {
            Err(e) => problems.push(format!("registered file {} is unreadable: {e}", r.path)),
            Ok(bytes) => {
                let checksum = blake3::hash(&bytes).to_hex().to_string();
                if bytes.len() as u64 != r.size || checksum != r.checksum {
                    problems.push(format!(
                        "{}: {} bytes, BLAKE3 {checksum}; registered {} bytes, {}",
                        r.path,
                        bytes.len(),
                        r.size,
                        r.checksum
                    ));
                }
            }
        }
    }
    let known: BTreeSet<&str> = registered.iter().map(|r| r.path.as_str()).collect();
    let mut present = BTreeSet::new();
    walk(&root, &root, &mut present);
    for file in &present {
        if !known.contains(file.as_str()) && !DOCUMENTED_EXTRAS.iter().any(|p| file.starts_with(p))
        {
            problems.push(format!(
                "{file} is in the datastore but not in the registry"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n  "))
    }
}

/// How `got` differs from `want`, field by field, a few lines each.
fn difference(want: &RepoState, got: &RepoState) -> String {
    fn lines<T: std::fmt::Debug + PartialEq>(name: &str, want: &T, got: &T, out: &mut Vec<String>) {
        if want != got {
            let text = format!("{name}: expected {want:?}\n    got {got:?}");
            out.push(text.chars().take(1500).collect());
        }
    }
    fn set_diff(name: &str, want: &[String], got: &[String], out: &mut Vec<String>) {
        let w: BTreeSet<_> = want.iter().collect();
        let g: BTreeSet<_> = got.iter().collect();
        let missing: Vec<_> = w.difference(&g).take(5).collect();
        let extra: Vec<_> = g.difference(&w).take(5).collect();
        if want != got {
            out.push(format!(
                "{name}: {} expected, {} found; missing {missing:?}; unexpected {extra:?}",
                want.len(),
                got.len()
            ));
        }
    }
    let mut out = Vec::new();
    lines(
        "dataset types",
        &want.dataset_types,
        &got.dataset_types,
        &mut out,
    );
    lines("collections", &want.collections, &got.collections, &mut out);
    lines("chains", &want.chains, &got.chains, &mut out);
    set_diff("datasets", &want.datasets, &got.datasets, &mut out);
    lines(
        "quanta by task and status",
        &want.quanta_by_task_and_status,
        &got.quanta_by_task_and_status,
        &mut out,
    );
    lines(
        "quantum inputs",
        &want.quantum_inputs,
        &got.quantum_inputs,
        &mut out,
    );
    lines(
        "run provenance",
        &want.run_provenance,
        &got.run_provenance,
        &mut out,
    );
    set_diff("remaining sources", &want.sources, &got.sources, &mut out);
    out.join("\n  ")
}

// ---------------------------------------------------------------------------
// The matrix

#[derive(Clone, Copy, Debug)]
enum Passage {
    First,
    Middle,
    Last,
}

impl Passage {
    fn of(self, total: usize) -> usize {
        match self {
            Passage::First => 1,
            Passage::Middle => total.div_ceil(2),
            Passage::Last => total,
        }
    }
}

/// One command killed at several points and rerun each time.
struct Scenario<'a> {
    name: String,
    /// Restored into `work` before the reference and before every case.
    base: &'a Path,
    work: &'a Path,
    /// The command killed and rerun.
    command: &'a dyn Fn(&Path) -> Command,
    /// What follows the command once it has completed (merge after run).
    then: &'a dyn Fn(&Path) -> Result<(), String>,
    /// Compare UUIDs and datastore paths too (assigned by preflight; an
    /// ingest draws new ones).
    with_ids: bool,
    kill_at: &'a [(&'a str, Passage)],
}

#[derive(Default)]
struct Matrix {
    kill_points: usize,
    states_checked: usize,
    failures: Vec<String>,
}

impl Matrix {
    fn scenario(&mut self, sc: &Scenario) {
        // The reference: uninterrupted, logging every kill point it passes.
        // Every case runs at the one path `sc.work`: a bundle records its
        // datastore's absolute path.
        restore(sc.base, sc.work);
        let log = sc.work.with_extension("kill-log");
        let _ = std::fs::remove_file(&log);
        let out = (sc.command)(sc.work).env(KILL_LOG, &log).output().unwrap();
        if !out.status.success() {
            self.failures.push(format!(
                "{}: the reference run failed: {}",
                sc.name,
                show(&out)
            ));
            return;
        }
        if let Err(e) = (sc.then)(sc.work) {
            self.failures.push(format!("{}: reference: {e}", sc.name));
            return;
        }
        let (reference, registered) = read_state(sc.work, sc.with_ids);
        self.states_checked += 1;
        if let Err(e) = check_consistent(sc.work, &registered) {
            self.failures.push(format!(
                "{}: the reference is inconsistent:\n  {e}",
                sc.name
            ));
            return;
        }
        let mut passages: BTreeMap<String, usize> = BTreeMap::new();
        for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
            *passages.entry(line.to_string()).or_default() += 1;
        }

        let mut tried = BTreeSet::new();
        for &(point, passage) in sc.kill_at {
            let total = passages.get(point).copied().unwrap_or(0);
            if total == 0 {
                self.failures.push(format!(
                    "{}: the reference never passed {point} (passed: {passages:?})",
                    sc.name
                ));
                continue;
            }
            let n = passage.of(total);
            if !tried.insert((point, n)) {
                continue;
            }
            let case = format!("{}: killed at {point} {n}/{total} ({passage:?})", sc.name);
            self.kill_points += 1;
            if let Err(e) = self.case(sc, point, n, &reference) {
                self.failures.push(format!("{case}: {e}"));
            }
        }
    }

    fn case(
        &mut self,
        sc: &Scenario,
        point: &str,
        n: usize,
        reference: &RepoState,
    ) -> Result<(), String> {
        restore(sc.base, sc.work);
        let out = (sc.command)(sc.work)
            .env(KILL_AT, format!("{point}:{n}"))
            .output()
            .unwrap();
        if out.status.signal() != Some(libc::SIGKILL) {
            return Err(format!("not killed: {}", show(&out)));
        }
        let out = (sc.command)(sc.work).output().unwrap();
        if !out.status.success() {
            return Err(format!("the rerun failed: {}", show(&out)));
        }
        (sc.then)(sc.work)?;
        let (state, registered) = read_state(sc.work, sc.with_ids);
        self.states_checked += 1;
        check_consistent(sc.work, &registered)?;
        if &state != reference {
            return Err(format!(
                "the rerun ended elsewhere than the reference:\n  {}",
                difference(reference, &state)
            ));
        }
        Ok(())
    }
}

#[test]
fn every_killed_command_reruns_to_the_uninterrupted_state() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let mut matrix = Matrix::default();

    // ingest, every transfer mode: kills while files arrive (after the
    // first, middle and last file is in the datastore; a copy's first
    // temporary file complete), inside the registry commit, and after it
    // (a move's sources not yet, or partly, removed).
    let ingest_base = dir.path().join("ingest-base");
    snapshot(&work, &ingest_base, |w| {
        make_empty_reference_repo(w, N_EXP, N_DET);
        write_raw_files(w, N_EXP, N_DET, 0);
    });
    let ingest_points: &[(&str, Passage)] = &[
        (INGEST_TRANSFERRED, Passage::First),
        (INGEST_TRANSFERRED, Passage::Middle),
        (INGEST_TRANSFERRED, Passage::Last),
        (REGISTRY_COMMIT, Passage::Last),
        (INGEST_COMMITTED, Passage::First),
    ];
    // A copy also writes temporary files; a move also removes its sources
    // once registered.
    let copy_points: Vec<_> = [(TEMP_WRITTEN, Passage::First)]
        .into_iter()
        .chain(ingest_points.iter().copied())
        .collect();
    let move_points: Vec<_> = ingest_points
        .iter()
        .copied()
        .chain([
            (INGEST_SOURCE_REMOVED, Passage::First),
            (INGEST_SOURCE_REMOVED, Passage::Middle),
        ])
        .collect();
    for mode in ["copy", "move", "link", "symlink", "auto"] {
        let command = move |w: &Path| ingest_command(w, mode);
        matrix.scenario(&Scenario {
            name: format!("ingest --transfer {mode}"),
            base: &ingest_base,
            work: &work,
            command: &command,
            then: &|_| Ok(()),
            with_ids: false,
            kill_at: match mode {
                "copy" => &copy_points,
                "move" => &move_points,
                _ => ingest_points,
            },
        });
    }

    // run and worker: kills between journal records (early, middle, late),
    // with an output's temporary file complete, and with the last output
    // linked but its temporary name not yet removed. Merged afterwards.
    let exec_base = dir.path().join("exec-base");
    snapshot(&work, &exec_base, |w| {
        make_reference_repo(w, N_EXP, N_DET);
        preflight(w);
    });
    let run = |w: &Path| {
        let mut c = quanta();
        c.args(["run", s(&w.join("campaign.qb")), "--jobs", "2"]);
        c
    };
    matrix.scenario(&Scenario {
        name: "run".into(),
        base: &exec_base,
        work: &work,
        command: &run,
        then: &finish_with_merge,
        with_ids: true,
        kill_at: &[
            (JOURNAL_APPENDED, Passage::First),
            (JOURNAL_APPENDED, Passage::Middle),
            (JOURNAL_APPENDED, Passage::Last),
            (TEMP_WRITTEN, Passage::Middle),
            (LINKED, Passage::Last),
        ],
    });
    let quanta_count = N_EXP * N_DET * 2 + N_EXP;
    let all_quanta = format!("0-{}", quanta_count - 1);
    let worker = |w: &Path| {
        let mut c = quanta();
        c.args(["worker", s(&w.join("campaign.qb")), "--quanta", &all_quanta]);
        c
    };
    matrix.scenario(&Scenario {
        name: "worker".into(),
        base: &exec_base,
        work: &work,
        command: &worker,
        then: &finish_with_merge,
        with_ids: true,
        kill_at: &[
            (JOURNAL_APPENDED, Passage::Middle),
            (LINKED, Passage::First),
        ],
    });

    // merge, four quanta per transaction: inside the first, a middle and the
    // final commit.
    let merge_base = dir.path().join("merge-base");
    snapshot(&work, &merge_base, |w| {
        std::fs::remove_dir(w).unwrap();
        copy_tree(&exec_base, w);
        ok(&["run", s(&w.join("campaign.qb")), "--jobs", "2"]);
    });
    let merge = |w: &Path| {
        let mut c = merge_command(w);
        c.env("QUANTA_MERGE_BATCH", "4");
        c
    };
    matrix.scenario(&Scenario {
        name: "merge".into(),
        base: &merge_base,
        work: &work,
        command: &merge,
        then: &|_| Ok(()),
        with_ids: true,
        kill_at: &[
            (REGISTRY_COMMIT, Passage::First),
            (REGISTRY_COMMIT, Passage::Middle),
            (REGISTRY_COMMIT, Passage::Last),
        ],
    });

    assert!(
        matrix.failures.is_empty(),
        "{} of {} kill points did not converge:\n{}",
        matrix.failures.len(),
        matrix.kill_points,
        matrix.failures.join("\n\n")
    );
    println!(
        "crash matrix: {} kill points, {} states checked, all converged",
        matrix.kill_points, matrix.states_checked
    );
}

// ---------------------------------------------------------------------------
// Disk full

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's syntax) at `at`, or says why not.
    fn mount(at: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Self(at.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    fn free_bytes(&self) -> u64 {
        let path = std::ffi::CString::new(s(&self.0)).unwrap();
        // SAFETY: statvfs fills the zeroed struct we pass; the path is a
        // NUL-terminated string that outlives the call.
        unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            assert_eq!(libc::statvfs(path.as_ptr(), &mut st), 0);
            st.f_bavail as u64 * st.f_frsize as u64
        }
    }

    /// Fills the filesystem until only `keep` bytes are free.
    fn fill_leaving(&self, keep: u64) -> PathBuf {
        let ballast = self.0.join("ballast");
        let size = self.free_bytes().saturating_sub(keep);
        std::fs::write(&ballast, vec![0u8; size as usize]).unwrap();
        ballast
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Runs `command`, which must fail for want of space: exit 1 and a message
/// that says so.
fn fails_for_want_of_space(mut command: Command, what: &str) -> Result<(), String> {
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .to_lowercase();
    let says_so = text.contains("no space left on device") || text.contains("disk is full");
    if out.status.code() == Some(1) && says_so {
        Ok(())
    } else {
        Err(format!(
            "{what} on a full disk: expected exit 1 naming the full disk, got {}",
            show(&out)
        ))
    }
}

/// Reruns `command` (space freed), which must succeed, then compares the
/// final state with `reference`.
fn converges(
    mut command: Command,
    then: &dyn Fn() -> Result<(), String>,
    work: &Path,
    reference: &RepoState,
    what: &str,
) -> Result<(), String> {
    let out = command.output().unwrap();
    if !out.status.success() {
        return Err(format!(
            "{what}: the rerun with space failed: {}",
            show(&out)
        ));
    }
    then()?;
    let (state, registered) = read_state(work, false);
    check_consistent(work, &registered).map_err(|e| format!("{what}: {e}"))?;
    if &state != reference {
        return Err(format!(
            "{what}: the rerun ended elsewhere than the reference:\n  {}",
            difference(reference, &state)
        ));
    }
    Ok(())
}

#[test]
fn a_full_disk_fails_clearly_and_the_rerun_converges_once_space_is_freed() {
    if common::skipped_on_postgres(
        "the disk it fills holds a SQLite registry; a PostgreSQL one is on the server",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("tmpfs");
    let fs = match Tmpfs::mount(&mnt, "32m") {
        Ok(fs) => fs,
        Err(why) => {
            println!("disk-full matrix skipped: cannot mount a tmpfs ({why})");
            return;
        }
    };
    let mut failures = Vec::new();
    let mut states = 0;

    // ingest --transfer move of 12 raws of 40 KB each, from a source
    // directory on another filesystem, into a repo with room for about half.
    let sources = dir.path().join("sources");
    std::fs::create_dir(&sources).unwrap();
    let manifest = write_raw_files(&sources, N_EXP, N_DET, 40_000);
    let ingest = |repo: &Path| {
        let mut c = quanta();
        c.args([
            "ingest",
            s(repo),
            "--run",
            "Cam/raw",
            "--dataset-type",
            "raw",
        ])
        .args(["--manifest", s(&manifest), "--transfer", "move"]);
        c
    };
    let reference_dir = dir.path().join("reference-ingest");
    std::fs::create_dir(&reference_dir).unwrap();
    let ref_repo = make_empty_reference_repo(&reference_dir, N_EXP, N_DET);
    let pristine = dir.path().join("sources-pristine");
    copy_tree(&sources, &pristine);
    ok_command(ingest(&ref_repo));
    let (ingest_reference, _) = read_state(&reference_dir, false);
    std::fs::remove_dir_all(&sources).unwrap();
    std::fs::rename(&pristine, &sources).unwrap();

    let work = mnt.join("ingest");
    std::fs::create_dir(&work).unwrap();
    let repo = make_empty_reference_repo(&work, N_EXP, N_DET);
    let ballast = fs.fill_leaving(6 * 40_000);
    failures.extend(fails_for_want_of_space(ingest(&repo), "ingest --transfer move").err());
    std::fs::remove_file(&ballast).unwrap();
    states += 1;
    failures.extend(
        converges(
            ingest(&repo),
            &|| Ok(()),
            &work,
            &ingest_reference,
            "ingest",
        )
        .err(),
    );
    std::fs::remove_dir_all(&work).unwrap();

    // run and merge: the reference campaign, run and merged on the disk.
    let reference_dir = dir.path().join("reference-exec");
    std::fs::create_dir(&reference_dir).unwrap();
    make_reference_repo(&reference_dir, N_EXP, N_DET);
    preflight(&reference_dir);
    ok(&["run", s(&reference_dir.join("campaign.qb"))]);
    ok_command(merge_command(&reference_dir));
    let (exec_reference, _) = read_state(&reference_dir, false);

    // run with room for a few outputs, then merge with room for less than
    // its write-ahead log.
    let work = mnt.join("exec");
    std::fs::create_dir(&work).unwrap();
    make_reference_repo(&work, N_EXP, N_DET);
    preflight(&work);
    let run = || {
        let mut c = quanta();
        c.args(["run", s(&work.join("campaign.qb"))]);
        c
    };
    let ballast = fs.fill_leaving(40_000);
    failures.extend(fails_for_want_of_space(run(), "run").err());
    std::fs::remove_file(&ballast).unwrap();
    states += 1;
    let merged = || finish_with_merge(&work);
    failures.extend(converges(run(), &merged, &work, &exec_reference, "run").err());

    // merge: the rerun above merged; start again from a finished run.
    std::fs::remove_dir_all(&work).unwrap();
    std::fs::create_dir(&work).unwrap();
    make_reference_repo(&work, N_EXP, N_DET);
    preflight(&work);
    ok_command(run());
    let ballast = fs.fill_leaving(40_000);
    failures.extend(fails_for_want_of_space(merge_command(&work), "merge").err());
    std::fs::remove_file(&ballast).unwrap();
    states += 1;
    let merge = merge_command(&work);
    failures.extend(converges(merge, &|| Ok(()), &work, &exec_reference, "merge").err());

    assert!(
        failures.is_empty(),
        "on a full disk (ingest, run, merge), {} problems:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    println!("disk-full matrix: ingest, run, merge: {states} states checked, all converged");
}

fn ok_command(mut command: Command) {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{:?}: {}", command, show(&out));
}
