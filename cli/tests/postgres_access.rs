//! A repository shared on a PostgreSQL server, through the real binary:
//! its `registry.yaml` names no user, so each person connects as their own
//! role (`PGUSER`, here the roles `quanta_alice` and `quanta_bob` that
//! `ci/postgres/start.sh` makes), writes under `u/<role>/` and what the
//! administrator granted, and is refused the rest with a clear error
//! (exit 2). Runs on the server of `QUANTA_POSTGRES_URL` (skipped with a
//! word without it; required when `QUANTA_REQUIRE_POSTGRES=1`).

mod common;

use std::process::Output;

use common::*;

/// `quanta args` connecting as database role `role`.
fn as_role(role: &str, args: &[&str]) -> Output {
    quanta()
        .env("PGUSER", role)
        .args(args)
        .output()
        .expect("quanta runs")
}

fn ok_as(role: &str, args: &[&str]) -> String {
    let out = as_role(role, args);
    assert!(
        out.status.success(),
        "{role}: quanta {args:?}: {}",
        show(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused_as(role: &str, args: &[&str]) -> String {
    let out = as_role(role, args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{role}: quanta {args:?}: {}",
        show(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn each_user_writes_their_own_collections_and_what_was_granted() {
    let Some(url) = postgres_url() else { return };
    // The URL without its user: whoever runs a command is who connects.
    let (scheme, rest) = url.split_once("://").unwrap();
    let shared_url = format!(
        "{scheme}://{}",
        rest.rsplit_once('@').map_or(rest, |(_, h)| h)
    );
    let admin = url
        .split_once("://")
        .and_then(|(_, r)| r.split_once('@'))
        .map(|(user, _)| user.to_string())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let namespace = fresh_namespace();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    ok_as(
        &admin,
        &[
            "repo",
            "create",
            repo_s,
            "--registry",
            &shared_url,
            "--namespace",
            &namespace,
        ],
    );
    let records = dir.path().join("records.json");
    std::fs::write(&records, reference_records(2, 2).to_string()).unwrap();
    ok_as(
        &admin,
        &["dimensions", "insert", repo_s, records.to_str().unwrap()],
    );
    for role in ["quanta_alice", "quanta_bob"] {
        let out = ok_as(&admin, &["repo", "grant", repo_s, role]);
        assert!(out.contains(&format!("u/{role}/")), "{out}");
    }
    // Alice: her own RUN and dataset type, not a shared name.
    ok_as(
        "quanta_alice",
        &["collection", "create", repo_s, "u/quanta_alice/raw"],
    );
    ok_as(
        "quanta_alice",
        &[
            "dataset-type",
            "register",
            repo_s,
            "raw",
            "--dimensions",
            "instrument,exposure,detector",
            "--storage-class",
            "Json",
        ],
    );
    let manifest = write_raw_files(dir.path(), 2, 2, 0);
    ok_as(
        "quanta_alice",
        &[
            "ingest",
            repo_s,
            "--run",
            "u/quanta_alice/raw",
            "--dataset-type",
            "raw",
            "--manifest",
            manifest.to_str().unwrap(),
        ],
    );
    let err = refused_as("quanta_alice", &["collection", "create", repo_s, "Cam/raw"]);
    assert!(err.contains("quanta collection grant"), "{err}");
    // Bob can read hers but not write there, nor grant himself anything.
    let listed = ok_as(
        "quanta_bob",
        &[
            "query-datasets",
            repo_s,
            "--collections",
            "u/quanta_alice/raw",
        ],
    );
    assert_eq!(
        listed.lines().filter(|l| l.contains("raw")).count(),
        4,
        "{listed}"
    );
    let err = refused_as(
        "quanta_bob",
        &[
            "collection",
            "create",
            repo_s,
            "u/quanta_alice/tagged",
            "--type",
            "TAGGED",
        ],
    );
    assert!(err.contains("row-level security"), "{err}");
    let err = refused_as("quanta_bob", &["remove-runs", repo_s, "u/quanta_alice/raw"]);
    assert!(err.contains("row-level security"), "{err}");
    let listed = ok_as(
        "quanta_alice",
        &[
            "query-datasets",
            repo_s,
            "--collections",
            "u/quanta_alice/raw",
        ],
    );
    assert_eq!(
        listed.lines().filter(|l| l.contains("raw")).count(),
        4,
        "{listed}"
    );
    refused_as(
        "quanta_bob",
        &[
            "collection",
            "grant",
            repo_s,
            "u/quanta_alice/",
            "quanta_bob",
        ],
    );
    // The administrator grants him a shared prefix; then it is his to write.
    ok_as(
        &admin,
        &["collection", "grant", repo_s, "shared/", "quanta_bob"],
    );
    let grants = ok_as(&admin, &["collection", "grants", repo_s, "--json"]);
    assert!(
        grants.contains("shared/") && grants.contains("quanta_bob"),
        "{grants}"
    );
    ok_as(
        "quanta_bob",
        &["collection", "create", repo_s, "shared/calib"],
    );
    ok_as(
        &admin,
        &["collection", "revoke", repo_s, "shared/", "quanta_bob"],
    );
    refused_as(
        "quanta_bob",
        &["collection", "create", repo_s, "shared/other"],
    );
    drop_test_namespace(&url, &namespace);
}
