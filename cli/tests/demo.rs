//! `quanta demo`, the README's first command: the whole flow on the default
//! 10 × 10 reference workload.

mod common;

use common::{fails_with, ok};

#[test]
fn demo_runs_the_whole_flow_and_names_the_repo() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let out = ok(&["demo", "--dir", demo_dir.to_str().unwrap()]);
    let count = |name: &str| -> usize {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} line in:\n{out}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(
        (count("isr"), count("characterize"), count("summarize")),
        (100, 100, 10)
    );
    assert_eq!(
        (count("postISRCCD"), count("icExp"), count("expSummary")),
        (100, 100, 10)
    );
    let repo = demo_dir.join("repo");
    assert!(out.contains(&format!("repo: {}", repo.display())), "{out}");
    // The repo it names is real: the outputs are queryable through the chain.
    let found = ok(&[
        "query-datasets",
        repo.to_str().unwrap(),
        "--collections",
        "demo",
        "--dataset-type",
        "expSummary",
        "--json",
    ]);
    let found: serde_json::Value = serde_json::from_str(&found).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 10);
    // A second demo into the same, now non-empty, directory is refused.
    let err = fails_with(2, &["demo", "--dir", demo_dir.to_str().unwrap()]);
    assert!(err.contains("not empty"), "{err}");
}
