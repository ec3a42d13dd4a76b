//! The removal crash matrix (issue 18): `remove-runs` and `prune-datasets`
//! killed with `SIGKILL` at many points of their own progress, then
//! finished either by rerunning the same command or by `repo check
//! --repair`; either way the repository must end exactly where an
//! uninterrupted run leaves it, with `repo check` clean.
//!
//! Kill points are `quanta_core::fault`'s, as in `crash_matrix.rs`: an
//! uninterrupted reference run logs how often it passes each point
//! (`QUANTA_TEST_KILL_LOG`), and each case kills the real binary at the
//! Nth passage (`QUANTA_TEST_KILL_AT=POINT:N`): inside the commit that
//! marks the trash (before it is durable), right after it, after the
//! first, a quarter, half, three quarters and the last of the files is
//! unlinked, and inside the commit that deletes the rows.
//!
//! A state is: collections, chains, dataset types, every dataset (UUID,
//! type, RUN, data ID, datastore record), tags, quanta by RUN, input
//! links, run provenance, what provenance remembers of removed datasets,
//! the trash, and every file under the datastore root. Beyond equality,
//! every state is checked independently of `repo check`: each registered
//! file is there with its recorded size and BLAKE3, and no other file is.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ok, quanta, registry_strings, restore, show};

const N_EXP: usize = 3;
const N_DET: usize = 4;
const OUTPUT_RUN: &str = "u/crash/run";
const OUTPUT_CHAIN: &str = "u/crash/out";
const KILL_AT: &str = "QUANTA_TEST_KILL_AT";
const KILL_LOG: &str = "QUANTA_TEST_KILL_LOG";
const MARKED: &str = "remove.marked";
const UNLINKED: &str = "remove.unlinked";
const COMMIT: &str = "registry.commit";

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp paths")
}

/// The reference workload merged into OUTPUT_RUN (chained with Cam/raw as
/// OUTPUT_CHAIN), and a TAGGED collection holding some raws and outputs.
fn make_base(base: &Path) {
    std::fs::create_dir_all(base).unwrap();
    let repo = common::merged_reference_campaign(base, N_EXP, N_DET, OUTPUT_RUN, OUTPUT_CHAIN);
    ok(&[
        "collection",
        "create",
        s(&repo),
        "tagged",
        "--type",
        "TAGGED",
    ]);
    let found: serde_json::Value = serde_json::from_str(&ok(&[
        "query-datasets",
        s(&repo),
        "--collections",
        OUTPUT_CHAIN,
        "--where",
        "exposure = 1",
        "--json",
    ]))
    .unwrap();
    let mut tag = vec!["collection", "tag", s(&repo), "tagged"];
    let ids: Vec<String> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    tag.extend(ids.iter().map(String::as_str));
    ok(&tag);
}

/// Every file under `dir`, symlinks included, relative to `root`.
fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.symlink_metadata().unwrap().is_dir() {
            walk(root, &path, out);
        } else {
            out.insert(path.strip_prefix(root).unwrap().to_string_lossy().into());
        }
    }
}

/// A repository's state: rows by table (and files), as sorted strings.
type State = BTreeMap<&'static str, Vec<String>>;

/// The repository's state, table by table, and its datastore's files.
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
            "SELECT d.id, t.name, c.name, d.data_id, d.path, d.size, d.checksum, d.producer \
             FROM dataset d JOIN dataset_type t ON t.id = d.dataset_type_id \
             JOIN collection c ON c.id = d.run_id",
        ),
        (
            "tags",
            "SELECT c.name, m.dataset_id FROM dataset_tags m JOIN collection c ON c.id = m.collection_id",
        ),
        (
            "quanta by run",
            "SELECT c.name, count(*) FROM quantum q JOIN collection c ON c.id = q.run_id GROUP BY c.name",
        ),
        ("inputs", "SELECT count(*) FROM quantum_input"),
        ("run provenance", "SELECT count(*) FROM run_provenance"),
        (
            "removed datasets",
            "SELECT id, dataset_type, run, data_id, producer, producer_connection FROM removed_dataset",
        ),
        (
            "trash",
            "SELECT (SELECT count(*) FROM removal_run), (SELECT count(*) FROM dataset_trash)",
        ),
    ];
    let mut state: BTreeMap<&str, Vec<String>> = queries
        .iter()
        .map(|(name, sql)| (*name, registry_strings(repo, sql)))
        .collect();
    let root = repo.join("datastore");
    let mut files = BTreeSet::new();
    walk(&root, &root, &mut files);
    state.insert("files", files.into_iter().collect());
    state
}

/// Registry and datastore agree, judged by this test alone.
fn check_consistent(repo: &Path) -> Result<(), String> {
    let root = repo.join("datastore");
    let mut problems = Vec::new();
    let registered = registry_strings(
        repo,
        "SELECT path, size, checksum FROM dataset WHERE path IS NOT NULL",
    );
    let mut known = BTreeSet::new();
    for row in &registered {
        let cols: Vec<&str> = row.split(" | ").collect();
        known.insert(cols[0].to_string());
        match std::fs::read(root.join(cols[0])) {
            Err(e) => problems.push(format!("registered {} unreadable: {e}", cols[0])),
            Ok(bytes) => {
                let sum = blake3::hash(&bytes).to_hex().to_string();
                if bytes.len().to_string() != cols[1] || sum != cols[2] {
                    problems.push(format!("{} is not what was registered", cols[0]));
                }
            }
        }
    }
    let mut present = BTreeSet::new();
    walk(&root, &root, &mut present);
    for file in present.difference(&known) {
        problems.push(format!(
            "{file} is in the datastore but not in the registry"
        ));
    }
    let check = quanta().args(["repo", "check", s(repo)]).output().unwrap();
    if !check.status.success() {
        problems.push(format!("repo check is not clean: {}", show(&check)));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n  "))
    }
}

fn difference(want: &BTreeMap<&str, Vec<String>>, got: &BTreeMap<&str, Vec<String>>) -> String {
    let mut out = Vec::new();
    for (name, w) in want {
        let g = &got[name];
        if w != g {
            let ws: BTreeSet<_> = w.iter().collect();
            let gs: BTreeSet<_> = g.iter().collect();
            let missing: Vec<_> = ws.difference(&gs).take(3).collect();
            let extra: Vec<_> = gs.difference(&ws).take(3).collect();
            out.push(format!(
                "{name}: {} expected, {} found; missing {missing:?}; unexpected {extra:?}",
                w.len(),
                g.len()
            ));
        }
    }
    out.join("\n  ")
}

/// How a killed command is finished.
#[derive(Clone, Copy, Debug)]
enum Finish {
    Rerun,
    Repair,
}

struct Scenario {
    name: &'static str,
    args: Vec<String>,
}

impl Scenario {
    fn command(&self, repo: &Path) -> Command {
        let mut c = quanta();
        c.arg(&self.args[0]).arg(repo).args(&self.args[1..]);
        c
    }
}

#[derive(Default)]
struct Matrix {
    cases: usize,
    failures: Vec<String>,
}

impl Matrix {
    fn scenario(&mut self, sc: &Scenario, base: &Path, work: &Path) {
        let repo = work.join("repo");
        restore(base, work);
        let before = read_state(&repo);
        let log = work.with_extension("kill-log");
        let _ = std::fs::remove_file(&log);
        let out = sc.command(&repo).env(KILL_LOG, &log).output().unwrap();
        if !out.status.success() {
            self.failures.push(format!(
                "{}: the reference run failed: {}",
                sc.name,
                show(&out)
            ));
            return;
        }
        let reference = read_state(&repo);
        if let Err(e) = check_consistent(&repo) {
            self.failures.push(format!(
                "{}: the reference is inconsistent:\n  {e}",
                sc.name
            ));
            return;
        }
        assert_ne!(
            before, reference,
            "{}: the reference removed nothing",
            sc.name
        );
        let mut passages: BTreeMap<String, usize> = BTreeMap::new();
        for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
            *passages.entry(line.to_string()).or_default() += 1;
        }
        let unlinked = passages.get(UNLINKED).copied().unwrap_or(0);
        let commits = passages.get(COMMIT).copied().unwrap_or(0);
        if unlinked < 4 || commits < 2 || !passages.contains_key(MARKED) {
            self.failures.push(format!(
                "{}: too few kill points passed: {passages:?}",
                sc.name
            ));
            return;
        }
        let mut points: BTreeSet<(&str, usize)> = BTreeSet::new();
        points.insert((COMMIT, 1));
        points.insert((MARKED, 1));
        for n in [1, unlinked / 4, unlinked / 2, unlinked * 3 / 4, unlinked] {
            points.insert((UNLINKED, n.max(1)));
        }
        points.insert((COMMIT, commits));
        for (point, n) in points {
            for finish in [Finish::Rerun, Finish::Repair] {
                self.cases += 1;
                let case = format!(
                    "{}: killed at {point} {n}/{} then {finish:?}",
                    sc.name, passages[point]
                );
                if let Err(e) = self.case(sc, base, work, (point, n), finish, (&before, &reference))
                {
                    self.failures.push(format!("{case}: {e}"));
                }
            }
        }
    }

    fn case(
        &mut self,
        sc: &Scenario,
        base: &Path,
        work: &Path,
        (point, n): (&str, usize),
        finish: Finish,
        (before, reference): (&State, &State),
    ) -> Result<(), String> {
        let repo = work.join("repo");
        restore(base, work);
        let out = sc
            .command(&repo)
            .env(KILL_AT, format!("{point}:{n}"))
            .output()
            .unwrap();
        if out.status.signal() != Some(libc::SIGKILL) {
            return Err(format!("not killed: {}", show(&out)));
        }
        // Killed inside the marking commit, nothing happened; anywhere
        // later, a removal is pending and `repo check` says so.
        let marked = !(point == COMMIT && n == 1);
        let check = quanta().args(["repo", "check", s(&repo)]).output().unwrap();
        let want_code = if marked { 1 } else { 0 };
        if check.status.code() != Some(want_code) {
            return Err(format!(
                "repo check after the kill: expected exit {want_code}: {}",
                show(&check)
            ));
        }
        let finished = match finish {
            Finish::Rerun => sc.command(&repo).output().unwrap(),
            Finish::Repair => quanta()
                .args(["repo", "check", s(&repo), "--repair"])
                .output()
                .unwrap(),
        };
        if !finished.status.success() {
            return Err(format!("{finish:?} failed: {}", show(&finished)));
        }
        check_consistent(&repo)?;
        let state = read_state(&repo);
        let want = match (finish, marked) {
            (Finish::Repair, false) => before,
            _ => reference,
        };
        if &state != want {
            return Err(format!(
                "ended elsewhere than {}:\n  {}",
                if std::ptr::eq(want, before) {
                    "before the command"
                } else {
                    "the reference"
                },
                difference(want, &state)
            ));
        }
        Ok(())
    }
}

#[test]
fn killed_removals_finish_by_rerun_or_repair_where_an_uninterrupted_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    let base: PathBuf = dir.path().join("base");
    let work = dir.path().join("work");
    make_base(&base);
    let scenarios = [
        Scenario {
            name: "remove-runs of the merged output RUN (--force: it is chained)",
            args: ["remove-runs", OUTPUT_RUN, "--force"]
                .map(String::from)
                .to_vec(),
        },
        Scenario {
            name: "remove-runs of the raws the recorded quanta read",
            args: ["remove-runs", "Cam/raw", "--force"]
                .map(String::from)
                .to_vec(),
        },
        Scenario {
            name: "prune-datasets --purge",
            args: [
                "prune-datasets",
                "--collections",
                OUTPUT_CHAIN,
                "--dataset-type",
                "postISRCCD,icExp",
                "--where",
                "detector > 0",
                "--purge",
            ]
            .map(String::from)
            .to_vec(),
        },
        Scenario {
            name: "prune-datasets --unstore",
            args: [
                "prune-datasets",
                "--collections",
                OUTPUT_CHAIN,
                "--dataset-type",
                "icExp",
                "--unstore",
            ]
            .map(String::from)
            .to_vec(),
        },
    ];
    let mut matrix = Matrix::default();
    for sc in &scenarios {
        matrix.scenario(sc, &base, &work);
    }
    assert!(
        matrix.failures.is_empty(),
        "{} of {} cases failed:\n{}",
        matrix.failures.len(),
        matrix.cases,
        matrix.failures.join("\n")
    );
    assert!(matrix.cases >= 4 * 2 * 7, "only {} cases ran", matrix.cases);
    eprintln!("{} kill cases, each finished and compared", matrix.cases);
}
