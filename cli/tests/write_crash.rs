//! `quanta dimensions insert` and `quanta skymap register` killed with
//! `SIGKILL` inside each of their registry commits (`QUANTA_TEST_KILL_AT=
//! registry.commit:N`, every passage an uninterrupted run makes): a rerun
//! ends with exactly the registry rows of an uninterrupted run. On
//! PostgreSQL a region's internal id is an identity value, which a killed
//! commit uses up (sequences are not transactional): there rows compare
//! with each region id shown as its rank in its element's table, i.e. by
//! the record it names.

mod common;

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use common::{ok, quanta, registry_strings, registry_tables, restore, show};
use quanta_core::{DimensionUniverse, REGION_ID_COLUMN};
use quanta_registry::schema::{overlap_table, quote, skypix_overlap_table};

const KILL_AT: &str = "QUANTA_TEST_KILL_AT";
const KILL_LOG: &str = "QUANTA_TEST_KILL_LOG";

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp paths")
}

/// Every row of every table of the registry, prefixed by its table.
fn registry_rows(repo: &Path) -> Vec<String> {
    let postgres = common::postgres_registry(repo).is_some();
    // The tests' repositories are made with the default universe.
    let universe = DimensionUniverse::default_universe();
    let region_tables = region_tables(&universe);
    let mut rows = Vec::new();
    for table in registry_tables(repo) {
        let select = match region_tables.get(table.as_str()) {
            Some(ids) if postgres => select_by_record(repo, &table, ids),
            _ => format!("SELECT * FROM {}", quote(&table)),
        };
        for row in registry_strings(repo, &select) {
            rows.push(format!("{table}: {row}"));
        }
    }
    rows.sort();
    rows
}

/// Which region ids a table's rows hold.
enum RegionIds<'u> {
    /// Its own (`region_id`): an element with a region.
    Own,
    /// One element's, beside a sky pixel (`skypix`, `region_id`).
    Skypix(&'u str),
    /// One of each of two elements' (`l`, `r`).
    Pair(&'u str, &'u str),
}

/// The tables of `universe`'s schema that hold region ids, by name.
fn region_tables(universe: &DimensionUniverse) -> HashMap<String, RegionIds<'_>> {
    let mut tables = HashMap::new();
    for element in universe.elements() {
        if element.region_field().is_some() {
            tables.insert(element.name.clone(), RegionIds::Own);
            tables.insert(
                skypix_overlap_table(element),
                RegionIds::Skypix(&element.name),
            );
        }
    }
    for (left, right) in universe.spatial_pairs() {
        tables.insert(
            overlap_table(left, right),
            RegionIds::Pair(&left.name, &right.name),
        );
    }
    tables
}

/// A query of `table`'s rows (PostgreSQL) in which every region id is its
/// rank among the region ids of its element's table.
fn select_by_record(repo: &Path, table: &str, ids: &RegionIds<'_>) -> String {
    let rank = |element: &str, id: &str| {
        format!(
            "(SELECT count(*) FROM {} e WHERE e.{REGION_ID_COLUMN} <= {id})",
            quote(element)
        )
    };
    let from = format!("FROM {} t", quote(table));
    match ids {
        RegionIds::Skypix(element) => format!(
            "SELECT t.skypix, {} {from}",
            rank(element, &format!("t.{REGION_ID_COLUMN}"))
        ),
        RegionIds::Pair(left, right) => format!(
            "SELECT {}, {} {from}",
            rank(left, "t.l"),
            rank(right, "t.r")
        ),
        RegionIds::Own => {
            let columns = registry_strings(
                repo,
                &format!(
                    "SELECT column_name FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = '{table}'"
                ),
            );
            let mut select: Vec<String> = columns
                .iter()
                .filter(|c| *c != REGION_ID_COLUMN)
                .map(|c| format!("t.{}", quote(c)))
                .collect();
            select.push(rank(table, &format!("t.{REGION_ID_COLUMN}")));
            format!("SELECT {} {from}", select.join(", "))
        }
    }
}

/// Kills `command` (on a fresh copy of `base`) at every registry commit an
/// uninterrupted run passes, reruns it and compares; returns the failures.
fn kill_at_every_commit(
    name: &str,
    base: &Path,
    work: &Path,
    command: &dyn Fn(&Path) -> Command,
) -> Vec<String> {
    let repo = work.join("repo");
    restore(base, work);
    let log = work.with_extension("kill-log");
    let _ = std::fs::remove_file(&log);
    let out = command(&repo).env(KILL_LOG, &log).output().unwrap();
    assert!(
        out.status.success(),
        "{name}: reference run: {}",
        show(&out)
    );
    let reference = registry_rows(&repo);
    let commits = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == "registry.commit")
        .count();
    assert!(commits >= 1, "{name}: no registry commit passed");
    let mut failures = Vec::new();
    for n in 1..=commits {
        restore(base, work);
        let case = format!("{name}: killed in commit {n} of {commits}");
        let killed = command(&repo)
            .env(KILL_AT, format!("registry.commit:{n}"))
            .output()
            .unwrap();
        if killed.status.signal() != Some(libc::SIGKILL) {
            failures.push(format!("{case}: not killed: {}", show(&killed)));
            continue;
        }
        let rerun = command(&repo).output().unwrap();
        if !rerun.status.success() {
            failures.push(format!("{case}: rerun failed: {}", show(&rerun)));
            continue;
        }
        let state = registry_rows(&repo);
        if state != reference {
            let missing: Vec<_> = reference.iter().filter(|r| !state.contains(r)).collect();
            let extra: Vec<_> = state.iter().filter(|r| !reference.contains(r)).collect();
            failures.push(format!(
                "{case}: ended elsewhere: missing {missing:?}, extra {extra:?}"
            ));
        }
    }
    failures
}

#[test]
fn killed_dimension_inserts_and_skymap_registrations_end_by_rerun_where_an_uninterrupted_run_ends()
{
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    ok(&["repo", "create", s(&base.join("repo"))]);
    let records = tmp.path().join("records.json");
    std::fs::write(&records, common::reference_records(3, 2).to_string()).unwrap();
    let work = tmp.path().join("work");
    let mut failures = kill_at_every_commit("dimensions insert", &base, &work, &|repo| {
        let mut c = quanta();
        c.args(["dimensions", "insert", s(repo), s(&records)]);
        c
    });
    failures.extend(kill_at_every_commit(
        "skymap register",
        &base,
        &work,
        &|repo| {
            let mut c = quanta();
            c.args([
                "skymap",
                "register",
                s(repo),
                "sky",
                "--kind",
                "grid",
                "--corners",
                "10,-5,12,-3",
                "--patches",
                "4x3",
            ]);
            c
        },
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
