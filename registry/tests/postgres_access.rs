//! Who may write what in a registry shared on a PostgreSQL server, with two
//! real roles (`quanta_alice`, `quanta_bob`, made by `ci/postgres/start.sh`
//! with their passwords in the password file): each writes only the
//! collections under `u/<role>/` and those the administrator granted, and
//! the server refuses the rest, raw SQL through `psql` included. Skipped
//! with a word without `QUANTA_POSTGRES_URL`; required when
//! `QUANTA_REQUIRE_POSTGRES=1`.

use std::process::Command;

use quanta_core::{CollectionType, DataId, DataIdValue, DatasetType, DimensionUniverse, Uuid};
use quanta_registry::{DatastoreRecord, NewDataset, OnConflict, RecordSet, Registry};

/// The admin's URL, or `None` (skipped) when no server is configured.
fn admin_url() -> Option<String> {
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

/// `url` with its user replaced by `role`.
fn as_role(url: &str, role: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{role}@{host}")
}

/// Runs `sql` as a plain `psql` client (which reads the password file
/// itself): what a user could do by hand. Its stdout, or its stderr as
/// the error.
fn psql(url: &str, namespace: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", url])
        .args(["-c", &format!("SET search_path TO {namespace}")])
        .args(["-c", sql])
        .output()
        .expect("psql runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

struct Namespace {
    url: String,
    name: String,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(e) = Registry::drop_postgres(&self.url, &self.name) {
            eprintln!("could not drop test namespace {}: {e}", self.name);
        }
    }
}

fn raw(run_salt: u128, detector: i64) -> NewDataset {
    NewDataset {
        id: Uuid::from_u128(run_salt * 1000 + detector as u128),
        data_id: DataId::from_pairs([
            ("instrument".to_string(), DataIdValue::from("Cam")),
            ("detector".to_string(), DataIdValue::Int(detector)),
        ]),
        stored: Some(DatastoreRecord {
            path: format!("raw/{run_salt}/{detector}.json"),
            formatter: "json".into(),
            size: 10,
            checksum: "c".into(),
        }),
    }
}

/// A succeeded quantum on `detector` with one `flat` output.
fn quantum(salt: u128, detector: i64) -> quanta_registry::NewQuantum {
    let output = raw(salt, detector);
    quanta_registry::NewQuantum {
        id: Uuid::from_u128(salt * 1000 + 999),
        task_label: "make_flat".into(),
        data_id: output.data_id.clone(),
        execution: quanta_registry::QuantumExecution {
            status: "succeeded".into(),
            attempts: 1,
            host: None,
            batch_job: None,
            started: None,
            finished: None,
            wall_seconds: None,
            cpu_seconds: None,
            peak_rss_bytes: None,
            exit_code: Some(0),
            error: None,
            log_tail: vec![],
        },
        inputs: vec![quanta_registry::QuantumInput {
            dataset_id: raw(1, 0).id,
            connection: "raw".into(),
            is_prerequisite: false,
            used: true,
        }],
        outputs: vec![quanta_registry::QuantumOutputDataset {
            id: output.id,
            dataset_type: "flat".into(),
            data_id: output.data_id,
            connection: "flat".into(),
            stored: output.stored.unwrap(),
            replaces: None,
        }],
    }
}

/// The administrator's registry, with records, a dataset type and access
/// for both users.
fn shared_registry(url: &str, namespace: &str) -> Registry {
    let universe = DimensionUniverse::default_universe();
    let mut admin = Registry::create_postgres(url, namespace, &universe).unwrap();
    let records: RecordSet = serde_json::from_value(serde_json::json!({
        "instrument": [{"name": "Cam", "detector_max": 10}],
        "detector": (0..4).map(|d| serde_json::json!({"instrument": "Cam", "id": d}))
            .collect::<Vec<_>>(),
    }))
    .unwrap();
    admin.insert_dimension_records(&records).unwrap();
    admin
        .register_dataset_type(&DatasetType {
            name: "flat".into(),
            dimensions: universe.conform(&["instrument", "detector"]).unwrap(),
            storage_class: "Json".into(),
            is_calibration: false,
        })
        .unwrap();
    for role in ["quanta_alice", "quanta_bob"] {
        admin.grant_access(role).unwrap();
    }
    admin
}

#[test]
fn users_write_only_their_own_and_granted_collections_even_with_raw_sql() {
    let Some(url) = admin_url() else { return };
    let namespace = format!("access_{}", Uuid::new_v4().simple());
    let _cleanup = Namespace {
        url: url.clone(),
        name: namespace.clone(),
    };
    let mut admin = shared_registry(&url, &namespace);
    let (alice_url, bob_url) = (as_role(&url, "quanta_alice"), as_role(&url, "quanta_bob"));
    let mut alice = Registry::open_postgres(&alice_url, &namespace, false).unwrap();
    let mut bob = Registry::open_postgres(&bob_url, &namespace, false).unwrap();

    // Alice writes under her prefix: a RUN, datasets, a TAGGED collection.
    let alice_run = "u/quanta_alice/run";
    alice
        .register_collection(alice_run, CollectionType::Run, None)
        .unwrap();
    alice
        .insert_datasets(alice_run, "flat", &[raw(1, 0), raw(1, 1)], OnConflict::Fail)
        .unwrap();
    // Merge's writer, as Alice, into her RUN; Bob cannot merge into it.
    let stats = alice
        .record_quanta(alice_run, Uuid::from_u128(5), &[quantum(7, 2)])
        .unwrap();
    assert_eq!((stats.quanta_written, stats.datasets_inserted), (1, 1));
    let err = bob
        .record_quanta(alice_run, Uuid::from_u128(6), &[quantum(8, 3)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("row-level security"), "{err}");
    // Shared tables are everyone's: a user registers a dataset type.
    let universe = DimensionUniverse::default_universe();
    alice
        .register_dataset_type(&DatasetType {
            name: "bias".into(),
            dimensions: universe.conform(&["instrument", "detector"]).unwrap(),
            storage_class: "Json".into(),
            is_calibration: false,
        })
        .unwrap();

    // Not outside it, nor under another user's prefix.
    for name in ["Cam/flats", "u/quanta_bob/run", "u/quanta_alice"] {
        let err = alice
            .register_collection(name, CollectionType::Run, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("row-level security") && err.contains("quanta collection grant"),
            "{name}: {err}"
        );
    }

    // Bob cannot put datasets into Alice's RUN, remove it or its datasets.
    let err = bob
        .insert_datasets(alice_run, "flat", &[raw(2, 2)], OnConflict::Fail)
        .unwrap_err()
        .to_string();
    assert!(err.contains("row-level security"), "{err}");
    let _ = bob.remove_collection(alice_run, true);
    let _ = bob.mark_datasets_for_removal(&[raw(1, 0).id], true);
    let _ = bob.complete_removals();
    assert!(admin.find_collection(alice_run).unwrap().is_some());
    let count = "SELECT count(*) FROM dataset";
    assert_eq!(psql(&url, &namespace, count).unwrap(), "3");

    // Nor with raw SQL: rows of others are not his to change, the grant
    // table and the policies are the administrator's.
    let bob_sql = |sql: &str| psql(&bob_url, &namespace, sql);
    assert_eq!(bob_sql("DELETE FROM dataset").unwrap(), "");
    assert_eq!(
        bob_sql("UPDATE collection SET name = 'u/quanta_bob/stolen'").unwrap(),
        ""
    );
    for refused in [
        "INSERT INTO collection (name, type) VALUES ('Cam/mine', 'RUN')",
        "INSERT INTO collection_grant (prefix, role) VALUES ('u/quanta_alice/', 'quanta_bob')",
        "DROP POLICY quanta_delete ON dataset",
        "ALTER TABLE dataset DISABLE ROW LEVEL SECURITY",
        "UPDATE quanta_meta SET value = 'x'",
    ] {
        let err = bob_sql(refused).unwrap_err();
        assert!(
            err.contains("row-level security")
                || err.contains("permission denied")
                || err.contains("must be owner"),
            "{refused}: {err}"
        );
    }
    assert_eq!(psql(&url, &namespace, count).unwrap(), "3");
    assert_eq!(
        psql(&url, &namespace, "SELECT count(*) FROM quantum").unwrap(),
        "1"
    );
    assert_eq!(
        psql(
            &url,
            &namespace,
            "SELECT name FROM collection ORDER BY name"
        )
        .unwrap(),
        alice_run
    );
    // Reading is everyone's.
    assert_eq!(bob_sql(count).unwrap(), "3");

    // A grant of a prefix lets Bob write there, until it is revoked.
    admin.grant_collection("shared/", "quanta_bob").unwrap();
    admin.grant_collection("shared/", "quanta_bob").unwrap();
    assert_eq!(
        admin.collection_grants().unwrap(),
        vec![("shared/".to_string(), "quanta_bob".to_string())]
    );
    bob.register_collection("shared/calib", CollectionType::Run, None)
        .unwrap();
    bob.insert_datasets("shared/calib", "flat", &[raw(3, 3)], OnConflict::Fail)
        .unwrap();
    assert!(alice
        .register_collection("shared/other", CollectionType::Run, None)
        .is_err());
    assert!(admin.revoke_collection("shared/", "quanta_bob").unwrap());
    assert!(bob
        .register_collection("shared/more", CollectionType::Run, None)
        .is_err());
    // The grant table is the administrator's alone.
    assert!(bob
        .grant_collection("u/quanta_alice/", "quanta_bob")
        .is_err());

    // Bob removes his own RUN; the administrator may remove anything.
    bob.register_collection("u/quanta_bob/scratch", CollectionType::Run, None)
        .unwrap();
    bob.mark_runs_for_removal(&["u/quanta_bob/scratch".into()], false)
        .unwrap();
    bob.complete_removals().unwrap();
    assert!(admin
        .find_collection("u/quanta_bob/scratch")
        .unwrap()
        .is_none());
    admin
        .mark_runs_for_removal(&[alice_run.into()], false)
        .unwrap();
    admin.complete_removals().unwrap();
    assert!(admin.find_collection(alice_run).unwrap().is_none());
}

#[test]
fn access_calls_on_a_sqlite_registry_say_it_is_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let universe = DimensionUniverse::default_universe();
    let r = Registry::create(&dir.path().join("registry.sqlite3"), &universe).unwrap();
    let err = r.grant_access("quanta_bob").unwrap_err().to_string();
    assert!(err.contains("file's permissions"), "{err}");
    assert!(r.grant_collection("shared/", "quanta_bob").is_err());
}

#[test]
fn a_role_name_is_checked_before_it_reaches_sql() {
    let Some(url) = admin_url() else { return };
    let namespace = format!("access_{}", Uuid::new_v4().simple());
    let _cleanup = Namespace {
        url: url.clone(),
        name: namespace.clone(),
    };
    let universe = DimensionUniverse::default_universe();
    let admin = Registry::create_postgres(&url, &namespace, &universe).unwrap();
    for bad in ["bob; DROP TABLE dataset", "Bob", ""] {
        let err = admin.grant_access(bad).unwrap_err().to_string();
        assert!(err.contains("role"), "{bad}: {err}");
    }
    assert!(admin.grant_collection("", "quanta_bob").is_err());
}
