//! Several processes writing one PostgreSQL registry at once: in each of
//! 20 rounds, four `quanta merge` processes merge four bundles into one
//! registry while two more merge a fifth bundle at the same time; every
//! process must succeed and the registry must end with exactly the rows
//! each bundle makes, none lost and none twice. Runs on the server of
//! `QUANTA_POSTGRES_URL` (skipped with a word without it; required when
//! `QUANTA_REQUIRE_POSTGRES=1`); `QUANTA_CONCURRENCY_ROUNDS` changes the
//! number of rounds.

mod common;

use std::path::Path;
use std::process::Child;

use common::*;

/// Datasets (and quanta) one bundle of the 2 × 3 reference workload makes:
/// isr and characterize per raw, summarize per exposure.
const PER_BUNDLE: usize = 2 * 3 + 2 * 3 + 2;

/// The one number `sql` (a `SELECT count(*) AS n ...`) gives.
fn count(repo: &str, sql: &str) -> usize {
    let out = ok(&["sql", repo, sql, "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    rows[0]["n"]
        .as_u64()
        .unwrap_or_else(|| panic!("{sql}: {out}")) as usize
}

fn spawn_merge(repo: &str, bundle: &Path) -> Child {
    quanta()
        .args(["merge", repo, bundle.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("quanta merge starts")
}

#[test]
fn concurrent_merges_into_one_postgres_registry_end_with_exactly_their_rows() {
    let Some(url) = postgres_url() else { return };
    let rounds: usize = std::env::var("QUANTA_CONCURRENCY_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let namespace = fresh_namespace();
    let repo = make_reference_repo_with(
        dir.path(),
        2,
        3,
        &["--registry", &url, "--namespace", &namespace],
    );
    let repo_s = repo.to_str().unwrap();
    let pipeline =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipelines/reference.yaml");

    for round in 0..rounds {
        let bundles: Vec<(String, std::path::PathBuf)> = (0..5)
            .map(|k| {
                let run = format!("u/test/r{round}b{k}");
                let bundle = dir.path().join(format!("r{round}b{k}.qb"));
                ok(&[
                    "preflight",
                    repo_s,
                    "--pipeline",
                    pipeline.to_str().unwrap(),
                    "--input",
                    "Cam/raw",
                    "--output-run",
                    &run,
                    "--bundle",
                    bundle.to_str().unwrap(),
                ]);
                ok(&["run", bundle.to_str().unwrap(), "--jobs", "1"]);
                (run, bundle)
            })
            .collect();
        // Six writers at once: bundles 0-3 once, bundle 4 twice.
        let mut merges: Vec<(String, Child)> = bundles
            .iter()
            .map(|(run, bundle)| (run.clone(), spawn_merge(repo_s, bundle)))
            .collect();
        merges.push((bundles[4].0.clone(), spawn_merge(repo_s, &bundles[4].1)));
        for (run, merge) in merges {
            let out = merge.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}, merge of {run}: {}",
                show(&out)
            );
        }
        for (run, _) in &bundles {
            let in_run = |table: &str| {
                count(
                    repo_s,
                    &format!(
                        "SELECT count(*) AS n FROM {table} t JOIN collection c ON c.id = t.run_id \
                         WHERE c.name = '{run}'"
                    ),
                )
            };
            assert_eq!(
                in_run("dataset"),
                PER_BUNDLE,
                "round {round}: datasets of {run}"
            );
            assert_eq!(
                in_run("quantum"),
                PER_BUNDLE,
                "round {round}: quanta of {run}"
            );
        }
    }
    // Nothing twice, nothing left half-done, in the whole registry.
    assert_eq!(
        count(
            repo_s,
            "SELECT count(*) AS n FROM dataset WHERE producer IS NOT NULL"
        ),
        rounds * 5 * PER_BUNDLE
    );
    assert_eq!(
        count(
            repo_s,
            "SELECT count(*) AS n FROM quantum WHERE status <> 'succeeded'"
        ),
        0
    );
    drop_test_namespace(&url, &namespace);
}
