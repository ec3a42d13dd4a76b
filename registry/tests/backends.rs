//! One registry scenario on each backend, with the same results: an
//! embedded SQLite file, and a namespace of its own on the PostgreSQL
//! server of `QUANTA_POSTGRES_URL` (`ci/postgres/start.sh` prints it;
//! required when `QUANTA_REQUIRE_POSTGRES=1`, else skipped with a word).
//! Dimension records with regions, dataset types, every collection type,
//! datasets with file records, tags and certifications, `--where` queries,
//! lookups through chains and by time, the graph query of preflight, and
//! crash-safe removal run through the same registry code on both.

use quanta_core::{CollectionType, DataId, DataIdValue, DatasetType, DimensionUniverse, Uuid};
use quanta_registry::{
    Binds, DatastoreRecord, NewDataset, OnConflict, RecordSet, Registry, RegistryError,
    RegistryLocation, SqlValue,
};
use serde_json::json;

/// A registry on each backend this machine has; PostgreSQL namespaces
/// are dropped by the guard.
fn registries(universe: &DimensionUniverse) -> (Vec<Registry>, Cleanup) {
    let dir = tempfile::tempdir().unwrap();
    let lite = Registry::create(&dir.path().join("registry.sqlite3"), universe).unwrap();
    let mut out = vec![lite];
    let required = std::env::var("QUANTA_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    let url = std::env::var("QUANTA_POSTGRES_URL").unwrap_or_default();
    if url.is_empty() {
        assert!(
            !required,
            "QUANTA_REQUIRE_POSTGRES=1 but QUANTA_POSTGRES_URL is not set"
        );
        eprintln!("PostgreSQL skipped: QUANTA_POSTGRES_URL is not set");
        return (
            out,
            Cleanup {
                _dir: dir,
                _namespace: None,
            },
        );
    }
    let namespace = format!("test_{}", Uuid::new_v4().simple());
    match Registry::create_postgres(&url, &namespace, universe) {
        Ok(r) => out.push(r),
        Err(e) if required => panic!("{e}"),
        Err(e) => eprintln!("PostgreSQL skipped: {e}"),
    }
    (
        out,
        Cleanup {
            _dir: dir,
            _namespace: Some(PgNamespace { url, namespace }),
        },
    )
}

/// What the registries of a test leave, removed when dropped.
struct Cleanup {
    _dir: tempfile::TempDir,
    _namespace: Option<PgNamespace>,
}

struct PgNamespace {
    url: String,
    namespace: String,
}

impl Drop for PgNamespace {
    fn drop(&mut self) {
        if let Err(e) = Registry::drop_postgres(&self.url, &self.namespace) {
            eprintln!("could not drop test namespace {}: {e}", self.namespace);
        }
    }
}

fn records(value: serde_json::Value) -> RecordSet {
    serde_json::from_value(value).unwrap()
}

fn square(ra: f64, dec: f64, side: f64) -> serde_json::Value {
    json!({"polygon": [[ra, dec], [ra + side, dec], [ra + side, dec + side], [ra, dec + side]]})
}

fn data_id(exposure: i64, detector: i64) -> DataId {
    DataId::from_pairs([
        ("instrument".to_string(), DataIdValue::from("Cam")),
        ("exposure".to_string(), DataIdValue::Int(exposure)),
        ("detector".to_string(), DataIdValue::Int(detector)),
    ])
}

/// Runs the scenario on `r` and returns what it saw, in an order that does
/// not depend on the backend's collation.
fn scenario(r: &mut Registry) -> Vec<String> {
    let mut seen = Vec::new();
    let universe = r.universe().clone();
    let detectors: Vec<serde_json::Value> = [1, 2, 3]
        .map(|d| json!({"instrument": "Cam", "id": d, "full_name": format!("D{d}")}))
        .into();
    let exposures: Vec<serde_json::Value> = [1, 2]
        .map(|e| {
            json!({"instrument": "Cam", "id": e, "physical_filter": "Cam-r",
                "day_obs": 20261206, "group": format!("g{e}"), "exposure_time": 15.0 * e as f64})
        })
        .into();
    r.insert_dimension_records(&records(json!({
        "instrument": [{"name": "Cam", "detector_max": 4}],
        "physical_filter": [{"instrument": "Cam", "name": "Cam-r", "band": "r"}],
        "detector": detectors,
        "day_obs": [{"instrument": "Cam", "id": 20261206}],
        "group": [{"instrument": "Cam", "name": "g1"}, {"instrument": "Cam", "name": "g2"}],
        "exposure": exposures,
        "skymap": [{"name": "sky"}],
        "tract": [{"skymap": "sky", "id": 0, "region": square(10.0, 0.0, 2.0)},
                  {"skymap": "sky", "id": 1, "region": square(200.0, 0.0, 2.0)}],
    })))
    .unwrap();
    // A missing parent is named, and nothing is inserted.
    let err = r
        .insert_dimension_records(&records(json!({
            "detector": [{"instrument": "Other", "id": 9}],
        })))
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
    seen.push(format!(
        "tracts with their regions: {}",
        r.element_records("tract").unwrap().len()
    ));

    let raw = DatasetType {
        name: "raw".into(),
        dimensions: universe
            .conform(&["instrument", "exposure", "detector"])
            .unwrap(),
        storage_class: "Json".into(),
        is_calibration: false,
    };
    let bias = DatasetType {
        name: "bias".into(),
        dimensions: universe.conform(&["instrument", "detector"]).unwrap(),
        storage_class: "Json".into(),
        is_calibration: true,
    };
    assert!(r.register_dataset_type(&raw).unwrap());
    assert!(!r.register_dataset_type(&raw).unwrap());
    r.register_dataset_type(&bias).unwrap();
    for (name, kind) in [
        ("Cam/raw", CollectionType::Run),
        ("Cam/bias-run", CollectionType::Run),
        ("Cam/calib", CollectionType::Calibration),
        ("Cam/tagged", CollectionType::Tagged),
    ] {
        r.register_collection(name, kind, None).unwrap();
    }
    r.define_collection_chain("Cam/defaults", &["Cam/tagged".into(), "Cam/raw".into()])
        .unwrap();

    let mut ids = Vec::new();
    let mut raws = Vec::new();
    for e in 1..=2 {
        for d in 1..=3 {
            let id = Uuid::from_u128((e * 10 + d) as u128);
            ids.push(id);
            raws.push(NewDataset {
                id,
                data_id: data_id(e, d),
                stored: Some(DatastoreRecord {
                    path: format!("raw/{e}/{d}.json"),
                    formatter: "json".into(),
                    size: 100 + d as u64,
                    checksum: format!("{e}{d}"),
                }),
            });
        }
    }
    let stats = r
        .insert_datasets("Cam/raw", "raw", &raws, OnConflict::Fail)
        .unwrap();
    seen.push(format!("raw inserted {}", stats.inserted));
    let again = r
        .insert_datasets("Cam/raw", "raw", &raws, OnConflict::SkipExistingId)
        .unwrap();
    seen.push(format!("raw again: {} skipped", again.skipped));
    let dup = NewDataset {
        id: Uuid::from_u128(999),
        ..raws[0].clone()
    };
    let err = r
        .insert_datasets("Cam/raw", "raw", &[dup], OnConflict::Fail)
        .unwrap_err();
    assert!(matches!(err, RegistryError::Conflict(_)), "{err}");

    let biases: Vec<NewDataset> = (1..=3)
        .map(|d| NewDataset {
            id: Uuid::from_u128(100 + d as u128),
            data_id: DataId::from_pairs([
                ("instrument".to_string(), DataIdValue::from("Cam")),
                ("detector".to_string(), DataIdValue::Int(d)),
            ]),
            stored: None,
        })
        .collect();
    r.insert_datasets("Cam/bias-run", "bias", &biases, OnConflict::Fail)
        .unwrap();
    let bias_ids: Vec<Uuid> = biases.iter().map(|b| b.id).collect();
    r.certify("Cam/calib", &bias_ids, 60000.0, 60100.0).unwrap();
    let overlap = r.certify("Cam/calib", &bias_ids[..1], 60050.0, 60200.0);
    assert!(
        matches!(overlap, Err(RegistryError::Conflict(_))),
        "{overlap:?}"
    );
    r.certify("Cam/calib", &bias_ids[..1], 60100.0, 60200.0)
        .unwrap();
    let cut = r
        .decertify("Cam/calib", "bias", 60080.0, 60120.0, &[])
        .unwrap();
    seen.push(format!(
        "decertify: {} removed, {} kept",
        cut.ranges_removed, cut.parts_kept
    ));
    let mut ranges: Vec<String> = r
        .calibration_ranges("Cam/calib")
        .unwrap()
        .into_iter()
        .map(|(id, b, e)| format!("{id} [{b}, {e})"))
        .collect();
    ranges.sort();
    seen.extend(ranges);

    // The first bias is certified for two ranges now (the decertified
    // one cut its range in two): a search of the collection finds it once.
    let mut in_calib: Vec<Uuid> = r
        .query_datasets(
            &["bias".into()],
            &["Cam/calib".into()],
            "",
            &Binds::new(),
            false,
        )
        .unwrap()
        .into_iter()
        .map(|f| f.dataset_ref.id)
        .collect();
    in_calib.sort();
    let mut certified = bias_ids.clone();
    certified.sort();
    assert_eq!(in_calib, certified);

    assert_eq!(r.associate("Cam/tagged", &ids[..2]).unwrap(), 2);
    assert_eq!(r.associate("Cam/tagged", &ids[..2]).unwrap(), 0);

    let mut binds = Binds::new();
    binds.insert("t".into(), SqlValue::Real(20.0));
    let mut found: Vec<String> = r
        .query_datasets(
            &["raw".into()],
            &["Cam/raw".into()],
            "detector > 1 AND exposure.exposure_time > :t",
            &binds,
            false,
        )
        .unwrap()
        .into_iter()
        .map(|f| {
            format!(
                "{} {} {:?}",
                f.dataset_ref.id, f.dataset_ref.data_id, f.stored
            )
        })
        .collect();
    found.sort();
    seen.extend(found);
    let mut data_ids: Vec<String> = r
        .query_data_ids(
            &["exposure".into(), "detector".into()],
            "detector IN (1..2) AND band = 'r'",
            &Binds::new(),
        )
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    data_ids.sort();
    seen.extend(data_ids);
    let first = r
        .find_dataset("raw", &data_id(1, 1), &["Cam/defaults".into()], None)
        .unwrap()
        .unwrap();
    seen.push(format!("found through {}", first.collection));
    let at = r
        .find_dataset(
            "bias",
            &DataId::from_pairs([
                ("instrument".to_string(), DataIdValue::from("Cam")),
                ("detector".to_string(), DataIdValue::Int(1)),
            ]),
            &["Cam/calib".into()],
            Some(60150.0),
        )
        .unwrap()
        .map(|f| f.dataset_ref.id.to_string());
    seen.push(format!("bias at 60150: {at:?}"));

    let dims = universe
        .conform(&["instrument", "exposure", "detector"])
        .unwrap();
    let rows = r
        .query_graph_rows(
            &dims,
            "",
            &Binds::new(),
            &["raw".into()],
            &["Cam/raw".into()],
        )
        .unwrap();
    seen.push(format!(
        "graph rows {} with {} inputs",
        rows.n_rows(),
        rows.inputs[0].len()
    ));

    // Removal: a purge and a collection.
    assert_eq!(r.mark_datasets_for_removal(&ids[5..], true).unwrap(), 1);
    seen.push(format!(
        "pending files {:?}",
        r.pending_removal_files().unwrap()
    ));
    let removed = r.complete_removals().unwrap();
    seen.push(format!("removed {}", removed.datasets_removed));
    r.remove_collection("Cam/tagged", true).unwrap();
    let mut collections: Vec<String> = r
        .list_collections()
        .unwrap()
        .into_iter()
        .map(|c| format!("{} {} {:?}", c.name, c.collection_type, c.children))
        .collect();
    collections.sort();
    seen.extend(collections);

    // Users' SQL: read-only, within a time limit.
    let (names, rows) = r
        .sql_read_only("SELECT name, type FROM collection WHERE type = 'RUN' ORDER BY name")
        .unwrap();
    seen.push(format!("sql: {names:?} {rows:?}"));
    let (_, ids) = r
        .sql_read_only("SELECT id FROM dataset WHERE run_id IN (SELECT id FROM collection WHERE name = 'Cam/bias-run') ORDER BY id")
        .unwrap();
    seen.push(format!("sql uuids: {ids:?}"));
    for write in [
        "DELETE FROM dataset",
        "INSERT INTO collection (name, type) VALUES ('x', 'RUN')",
    ] {
        let err = r.sql_read_only(write).unwrap_err().to_string();
        assert!(err.contains("read-only"), "{write}: {err}");
    }
    let forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
                   SELECT count(*) FROM c";
    let err = r
        .sql_read_only_within(forever, Some(std::time::Duration::from_millis(300)))
        .unwrap_err();
    assert!(matches!(err, RegistryError::TimedOut { .. }), "{err:?}");
    // Nothing was written meanwhile.
    assert_eq!(r.list_collections().unwrap().len(), 4);
    seen
}

#[test]
fn the_same_scenario_gives_the_same_results_on_every_backend() {
    let universe = DimensionUniverse::default_universe();
    let (mut registries, _cleanup) = registries(&universe);
    let mut results = Vec::new();
    for r in &mut registries {
        let location = r.location().clone();
        results.push((location, scenario(r)));
    }
    let (sqlite_at, sqlite) = &results[0];
    assert!(matches!(sqlite_at, RegistryLocation::Sqlite(_)));
    assert!(
        sqlite.contains(&"raw inserted 6".to_string()),
        "{sqlite:#?}"
    );
    assert!(
        sqlite.contains(&"graph rows 6 with 6 inputs".to_string()),
        "{sqlite:#?}"
    );
    for (location, other) in &results[1..] {
        assert_eq!(other, sqlite, "{location} differs from SQLite");
    }
}

#[test]
fn a_postgres_namespace_is_checked_and_not_overwritten() {
    let universe = DimensionUniverse::default_universe();
    let bad = Registry::create_postgres("postgresql://nobody@localhost/db", "Bad-Name", &universe);
    let err = bad.err().expect("refused").to_string();
    assert!(err.contains("namespace `Bad-Name`"), "{err}");
    let (registries, _cleanup) = registries(&universe);
    for r in &registries {
        if let RegistryLocation::Postgres { url, namespace } = r.location() {
            let again = Registry::create_postgres(url, namespace, &universe);
            let err = again.err().expect("refused").to_string();
            assert!(err.contains("refusing to overwrite"), "{err}");
            let reopened = Registry::open_postgres(url, namespace, true).unwrap();
            assert_eq!(
                reopened.repository_id().unwrap(),
                r.repository_id().unwrap()
            );
            let missing = Registry::open_postgres(url, "no_such_namespace", true);
            let err = missing.err().expect("refused").to_string();
            assert!(err.contains("no such namespace"), "{err}");
        }
    }
}

/// A quantum of `task` on detector `d` of exposure 1, with one output
/// (`calexp`) whose UUID is derived from `salt` and `d`.
fn merged_quantum(
    task: &str,
    d: i64,
    salt: u128,
    status: &str,
) -> quanta_registry::provenance::NewQuantum {
    use quanta_registry::provenance::{
        NewQuantum, QuantumExecution, QuantumInput, QuantumOutputDataset,
    };
    let id = Uuid::from_u128(salt * 1_000_000 + d as u128);
    NewQuantum {
        id,
        task_label: task.into(),
        data_id: data_id(1, d),
        execution: QuantumExecution {
            status: status.into(),
            attempts: 1,
            host: Some("node1".into()),
            batch_job: None,
            started: Some("2026-12-06T05:00:00Z".into()),
            finished: Some("2026-12-06T05:00:01Z".into()),
            wall_seconds: Some(1.5),
            cpu_seconds: Some(1.25),
            peak_rss_bytes: Some(1 << 20),
            exit_code: Some(0),
            error: (status != "succeeded").then(|| format!("{status} on {d}")),
            log_tail: vec![format!("line of {d}")],
        },
        inputs: vec![QuantumInput {
            dataset_id: Uuid::from_u128(7_000_000 + d as u128),
            connection: "raw".into(),
            is_prerequisite: false,
            used: true,
        }],
        outputs: vec![QuantumOutputDataset {
            id: Uuid::from_u128((salt + 1) * 1_000_000 + d as u128),
            dataset_type: "calexp".into(),
            data_id: data_id(1, d),
            connection: "calexp".into(),
            stored: DatastoreRecord {
                path: format!("calexp/{salt}/{d}.json"),
                formatter: "json".into(),
                size: 10 + d as u64,
                checksum: format!("c{d}"),
            },
            replaces: None,
        }],
    }
}

/// Merge's writer on `r`: more quanta than one statement holds on either
/// backend, a conflicting output, a missing dimension record, a second
/// merge of the same quanta, a failed quantum merged again as succeeded,
/// a replacing output, and a transaction of several parts rolled back.
fn merge_scenario(r: &mut Registry, detectors: i64) -> Vec<String> {
    let mut seen = Vec::new();
    let universe = r.universe().clone();
    let detector_records: Vec<serde_json::Value> = (0..detectors)
        .map(|d| json!({"instrument": "Cam", "id": d, "full_name": format!("D{d}")}))
        .collect();
    r.insert_dimension_records(&records(json!({
        "instrument": [{"name": "Cam", "detector_max": detectors + 10}],
        "physical_filter": [{"instrument": "Cam", "name": "Cam-r", "band": "r"}],
        "detector": detector_records,
        "day_obs": [{"instrument": "Cam", "id": 20261206}],
        "group": [{"instrument": "Cam", "name": "g1"}],
        "exposure": [{"instrument": "Cam", "id": 1, "physical_filter": "Cam-r",
                      "day_obs": 20261206, "group": "g1", "exposure_time": 15.0}],
    })))
    .unwrap();
    r.register_dataset_type(&DatasetType {
        name: "calexp".into(),
        dimensions: universe
            .conform(&["instrument", "exposure", "detector"])
            .unwrap(),
        storage_class: "Json".into(),
        is_calibration: false,
    })
    .unwrap();
    r.register_collection("out", CollectionType::Run, None)
        .unwrap();
    let bundle = Uuid::from_u128(42);
    let stats = |s: &quanta_registry::provenance::RecordStats| {
        format!(
            "inserted {} skipped {} written {} unchanged {} replaced {} rejected {:?}",
            s.datasets_inserted,
            s.datasets_skipped,
            s.quanta_written,
            s.quanta_unchanged,
            s.datasets_replaced,
            s.rejected
                .iter()
                .map(|x| format!("{} {}", x.data_id, x.reason))
                .collect::<Vec<_>>()
        )
    };

    // Detector 5's output is taken by another dataset first; detector
    // `detectors` has no record.
    let first = r
        .record_quanta("out", bundle, &[merged_quantum("isr", 5, 9, "succeeded")])
        .unwrap();
    seen.push(stats(&first));
    let mut batch: Vec<_> = (0..=detectors)
        .map(|d| merged_quantum("isr", d, 1, "succeeded"))
        .collect();
    batch[7].execution.status = "failed".into();
    let recorded = r.record_quanta("out", bundle, &batch).unwrap();
    seen.push(stats(&recorded));
    // A second merge of the same quanta changes nothing; the failed one
    // succeeds now.
    batch[7] = merged_quantum("isr", 7, 1, "succeeded");
    let again = r.record_quanta("out", bundle, &batch).unwrap();
    seen.push(stats(&again));
    let q7 = r.quantum(&batch[7].id).unwrap().unwrap();
    seen.push(format!(
        "q7 {} {:?} inputs {}",
        q7.execution.status,
        q7.execution.error,
        r.quantum_inputs(&batch[7].id).unwrap().len()
    ));
    // Detector 5's quantum is partial, with the reason.
    let q5 = r.quantum(&batch[5].id).unwrap().unwrap();
    seen.push(format!(
        "q5 {} {:?}",
        q5.execution.status, q5.execution.error
    ));

    // A replacing output (`--clobber`) of another bundle.
    let mut replacing = merged_quantum("isr", 3, 3, "succeeded");
    replacing.outputs[0].replaces = Some(batch[3].outputs[0].id);
    let replaced = r
        .record_quanta("out", Uuid::from_u128(43), &[replacing.clone()])
        .unwrap();
    seen.push(stats(&replaced));
    seen.push(format!(
        "old producer {:?} new producer {:?} old quantum {:?}",
        r.producer_of(&batch[3].outputs[0].id).unwrap(),
        r.producer_of(&replacing.outputs[0].id).unwrap(),
        r.quantum(&batch[3].id).unwrap().map(|q| q.execution.status)
    ));

    // Two parts of one transaction roll back together.
    let part = |salt| -> Vec<_> {
        (0..3)
            .map(|d| merged_quantum("characterize", d, salt, "succeeded"))
            .collect()
    };
    r.record_quanta_uncommitted("out", bundle, &part(20))
        .unwrap();
    let err = r
        .record_new_quanta_uncommitted("out", bundle, &[batch[0].clone()])
        .unwrap_err();
    seen.push(format!(
        "second part refused: {}",
        err.to_string().contains("already had rows")
    ));
    r.commit_open().unwrap();
    seen.push(format!(
        "rolled back part: {:?}",
        r.quantum(&part(20)[0].id)
            .unwrap()
            .map(|q| q.execution.status)
    ));

    for sql in [
        "SELECT count(*) FROM dataset",
        "SELECT count(*) FROM quantum",
        "SELECT count(*) FROM quantum_input",
        "SELECT status, count(*) FROM quantum GROUP BY status ORDER BY status",
        "SELECT count(*) FROM dataset WHERE producer IS NOT NULL AND path IS NOT NULL",
    ] {
        let (_, rows) = r.sql_read_only(sql).unwrap();
        seen.push(format!("{sql}: {rows:?}"));
    }
    seen
}

#[test]
fn merge_writes_the_same_rows_on_every_backend() {
    let universe = DimensionUniverse::default_universe();
    let (mut registries, _cleanup) = registries(&universe);
    // More than a PostgreSQL statement's 1,000 rows, with a remainder.
    let detectors = 2_345;
    let mut results = Vec::new();
    for r in &mut registries {
        let location = r.location().clone();
        results.push((location, merge_scenario(r, detectors)));
    }
    let (_, sqlite) = &results[0];
    let expected_datasets = format!("SELECT count(*) FROM dataset: [[Number({})]]", detectors);
    assert!(sqlite.contains(&expected_datasets), "{sqlite:#?}");
    for (location, other) in &results[1..] {
        assert_eq!(other, sqlite, "{location} differs from SQLite");
    }
}

/// Tract regions of every kind the registry stores (quadrilaterals small
/// and large, near a pole, across RA 0, triangles, circles), the same on
/// each backend; a little linear congruential generator keeps them fixed.
fn varied_tracts() -> (serde_json::Value, Vec<(f64, f64, f64)>) {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut corners = Vec::new();
    let tracts: Vec<serde_json::Value> = (0..120)
        .map(|id| {
            let (ra, dec) = (next() * 360.0, next() * 150.0 - 75.0);
            let size = 0.2 + next() * 8.0;
            corners.push((ra, dec, size));
            let region = match id % 4 {
                0 => square(ra, dec, size),
                1 => json!({"circle": {"center": [ra, dec], "radius": size / 2.0}}),
                2 => json!({"polygon": [[ra, dec], [ra + size, dec], [ra, dec + size]]}),
                _ => square(359.0 - size / 2.0, dec.clamp(-80.0, 80.0), size),
            };
            json!({"skymap": "sky", "id": id, "region": region})
        })
        .collect();
    (
        json!({"skymap": [{"name": "sky"}], "tract": tracts}),
        corners,
    )
}

#[test]
fn region_overlaps_answer_alike_on_every_backend() {
    let universe = DimensionUniverse::default_universe();
    let (mut registries, _cleanup) = registries(&universe);
    let (tracts, corners) = varied_tracts();
    let mut predicates: Vec<String> = [
        "tract.region OVERLAPS CIRCLE(120, 30, 40)",
        "tract.region OVERLAPS CIRCLE(0, -60, 30)",
        "tract.region OVERLAPS CIRCLE(250, 20, 25)",
        "tract.region OVERLAPS CIRCLE(200, 89, 3)",
        "NOT tract.region OVERLAPS CIRCLE(90, 0, 60)",
        "tract.region OVERLAPS POINT(359.9, 10)",
        "healpix8 = 12345",
        "healpix8 IN (100, 200000, 400000)",
    ]
    .map(String::from)
    .into();
    // Points inside, at and just outside some tracts' first corners, and
    // small circles reaching them.
    for &(ra, dec, size) in &corners[..12] {
        predicates.push(format!(
            "tract.region OVERLAPS POINT({}, {})",
            ra + size / 4.0,
            dec + size / 8.0
        ));
        predicates.push(format!("tract.region OVERLAPS POINT({ra}, {dec})"));
        predicates.push(format!(
            "tract.region OVERLAPS CIRCLE({}, {}, {})",
            ra - 0.5,
            dec - 0.5,
            0.3 + size / 10.0
        ));
    }
    let mut results = Vec::new();
    for r in &mut registries {
        r.insert_dimension_records(&records(tracts.clone()))
            .unwrap();
        let answers: Vec<Vec<String>> = predicates
            .iter()
            .map(|predicate| {
                let mut ids: Vec<String> = r
                    .query_data_ids(&["tract".into()], predicate, &Binds::new())
                    .unwrap_or_else(|e| panic!("{}: {predicate}: {e}", r.location()))
                    .iter()
                    .map(|d| d.to_string())
                    .collect();
                ids.sort();
                ids
            })
            .collect();
        results.push((r.location().clone(), answers));
    }
    let (_, sqlite) = &results[0];
    // The predicates select some tracts and not others.
    let selected: Vec<usize> = sqlite.iter().map(Vec::len).collect();
    assert!(
        selected.iter().filter(|&&n| n > 0 && n < 120).count() >= 20,
        "{selected:?}"
    );
    for (location, other) in &results[1..] {
        for ((predicate, want), got) in predicates.iter().zip(sqlite).zip(other) {
            assert_eq!(got, want, "{location}: {predicate}");
        }
    }
}

/// Visits with regions over the varied tracts' sky: every tract's first
/// corner gets one, so the two families overlap somewhere.
fn visits_over(corners: &[(f64, f64, f64)]) -> serde_json::Value {
    let visits: Vec<serde_json::Value> = corners
        .iter()
        .enumerate()
        .map(|(id, &(ra, dec, size))| {
            json!({"instrument": "Cam", "id": id, "physical_filter": "Cam-r",
                   "day_obs": 20261206, "region": square(ra - 1.0, dec - 1.0, 1.0 + size / 3.0)})
        })
        .collect();
    json!({
        "instrument": [{"name": "Cam", "detector_max": 4}],
        "physical_filter": [{"instrument": "Cam", "name": "Cam-r", "band": "r"}],
        "day_obs": [{"instrument": "Cam", "id": 20261206}],
        "visit": visits,
    })
}

#[test]
fn a_version_5_registry_is_migrated_to_what_the_current_version_keeps() {
    let universe = DimensionUniverse::default_universe();
    let (mut registries, _cleanup) = registries(&universe);
    let (tracts, corners) = varied_tracts();
    let pairs = "SELECT count(*) FROM visit__tract_overlap";
    let query = "visit.region OVERLAPS CIRCLE(120, 30, 40)";
    for r in &mut registries {
        let location = r.location().clone();
        r.insert_dimension_records(&records(tracts.clone()))
            .unwrap();
        r.insert_dimension_records(&records(visits_over(&corners)))
            .unwrap();
        let (_, kept) = r.sql_read_only(pairs).unwrap();
        let joined = r
            .query_data_ids(&["visit".into(), "tract".into()], query, &Binds::new())
            .unwrap();
        assert!(!joined.is_empty(), "{location}: no visit overlaps a tract");
        // What version 5 had: no overlap tables.
        let sql = |statement: &str| match &location {
            RegistryLocation::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.execute_batch(statement).unwrap();
            }
            RegistryLocation::Postgres { url, namespace } => {
                let status = std::process::Command::new("psql")
                    .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", url])
                    .args([
                        "-c",
                        &format!("SET search_path TO {namespace}; {statement}"),
                    ])
                    .status()
                    .unwrap();
                assert!(status.success(), "{statement}");
            }
        };
        sql(
            "DROP TABLE visit__tract_overlap; DROP TABLE visit__patch_overlap; \
             DROP TABLE tract__visit_detector_overlap; DROP TABLE patch__visit_detector_overlap; \
             DROP INDEX dataset_by_exposure; DROP INDEX dataset_by_visit; \
             UPDATE quanta_meta SET value = '5' WHERE key = 'schema_version'",
        );
        // What versions before 8 had on PostgreSQL: foreign keys (checked
        // per row) instead of the set-wise triggers, for every dimension of
        // `dataset`, its type and RUN, a quantum's RUN, an input's quantum.
        let postgres = matches!(location, RegistryLocation::Postgres { .. });
        if postgres {
            sql("DROP TRIGGER quanta_dataset_parents ON dataset; \
                 DROP TRIGGER quanta_dataset_parents_row ON dataset; \
                 DROP TRIGGER quanta_dataset_guard_delete ON detector; \
                 DROP TRIGGER quanta_quantum_parents ON quantum; \
                 DROP TRIGGER quanta_quantum_input_parents ON quantum_input; \
                 DROP TRIGGER quanta_quantum_input_guard_delete ON quantum; \
                 ALTER TABLE dataset ADD FOREIGN KEY (instrument, detector) REFERENCES detector (instrument, id); \
                 ALTER TABLE dataset ADD FOREIGN KEY (instrument, visit) REFERENCES visit (instrument, id); \
                 ALTER TABLE dataset ADD FOREIGN KEY (dataset_type_id) REFERENCES dataset_type (id); \
                 ALTER TABLE dataset ADD FOREIGN KEY (run_id) REFERENCES collection (id); \
                 ALTER TABLE quantum ADD FOREIGN KEY (run_id) REFERENCES collection (id); \
                 ALTER TABLE quantum_input ADD FOREIGN KEY (quantum_id) REFERENCES quantum (id) ON DELETE CASCADE");
        }
        let err = Registry::open_at(&location, false)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("migrate"), "{err}");
        let done = Registry::migrate(&location).unwrap();
        assert_eq!((done.from, done.to), (5, quanta_registry::SCHEMA_VERSION));
        assert_eq!(done.indexes, 5);
        assert_eq!(
            done.foreign_keys,
            if postgres { 6 } else { 0 },
            "{location}"
        );
        let again = Registry::migrate(&location).unwrap();
        let now = quanta_registry::SCHEMA_VERSION;
        assert_eq!((again.from, again.to, again.overlaps), (now, now, 0));
        let reopened = Registry::open_at(&location, true).unwrap();
        let (_, migrated) = reopened.sql_read_only(pairs).unwrap();
        assert_eq!(migrated, kept, "{location}");
        assert_eq!(
            reopened
                .query_data_ids(&["visit".into(), "tract".into()], query, &Binds::new())
                .unwrap(),
            joined,
            "{location}"
        );
        let (_, indexes) = reopened
            .sql_read_only(match &location {
                RegistryLocation::Sqlite(_) => {
                    "SELECT count(*) FROM sqlite_master WHERE name LIKE 'dataset_by_%' AND name <> 'dataset_by_producer'"
                }
                RegistryLocation::Postgres { .. } => {
                    "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() \
                     AND indexname LIKE 'dataset_by_%' AND indexname <> 'dataset_by_producer'"
                }
            })
            .unwrap();
        assert_eq!(indexes, vec![vec![json!(5)]], "{location}");
        if postgres {
            let (_, keys) = reopened
                .sql_read_only(
                    "SELECT (SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid IN \
                       (to_regclass('dataset'), to_regclass('quantum'), to_regclass('quantum_input'))), \
                     (SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgname LIKE 'quanta_%' \
                       AND tgrelid IN (to_regclass('dataset'), to_regclass('detector'), \
                                       to_regclass('quantum'), to_regclass('quantum_input')))",
                )
                .unwrap();
            // No foreign key left on the three tables; their insert and
            // update checks (two each), detector's delete and update guards
            // and quantum's for its input links are back.
            assert_eq!(keys, vec![vec![json!(0), json!(10)]], "{location}");
        }
        // Older than version 5: refused with the way out.
        sql("UPDATE quanta_meta SET value = '4' WHERE key = 'schema_version'");
        let err = Registry::migrate(&location).unwrap_err().to_string();
        assert!(err.contains("quanta export"), "{err}");
    }
}

/// Records of `exposures` × `detectors` (ids from 0), the dataset type
/// `raw` and the RUN `Cam/raw`; `raw`'s dimensions.
fn raw_setup(r: &mut Registry, exposures: i64, detectors: i64) -> quanta_core::DimensionGroup {
    r.insert_dimension_records(&records(json!({
        "instrument": [{"name": "Cam", "detector_max": detectors}],
        "physical_filter": [{"instrument": "Cam", "name": "Cam-r", "band": "r"}],
        "day_obs": [{"instrument": "Cam", "id": 20261206}],
        "group": [{"instrument": "Cam", "name": "g"}],
        "detector": (0..detectors).map(|d| json!({"instrument": "Cam", "id": d}))
            .collect::<Vec<_>>(),
        "exposure": (0..exposures).map(|e| json!({"instrument": "Cam", "id": e,
            "physical_filter": "Cam-r", "day_obs": 20261206, "group": "g"}))
            .collect::<Vec<_>>(),
    })))
    .unwrap();
    let dims = r
        .universe()
        .conform(&["instrument", "exposure", "detector"])
        .unwrap();
    r.register_dataset_type(&DatasetType {
        name: "raw".into(),
        dimensions: dims.clone(),
        storage_class: "Json".into(),
        is_calibration: false,
    })
    .unwrap();
    r.register_collection("Cam/raw", CollectionType::Run, None)
        .unwrap();
    dims
}

#[test]
fn a_graph_query_read_in_parts_gives_the_same_rows_on_every_backend() {
    let universe = DimensionUniverse::default_universe();
    let (mut registries, _cleanup) = registries(&universe);
    // Enough datasets that the graph statement is read in parts on
    // parallel connections (50,000 per part) on a machine of two cores.
    let (exposures, detectors) = (102_i64, 1000_i64);
    let mut results = Vec::new();
    for r in &mut registries {
        let dims = raw_setup(r, exposures, detectors);
        let raws: Vec<NewDataset> = (0..exposures * detectors)
            .map(|i| NewDataset {
                id: Uuid::now_v7(),
                data_id: data_id(i / detectors, i % detectors),
                stored: None,
            })
            .collect();
        r.insert_datasets("Cam/raw", "raw", &raws, OnConflict::Fail)
            .unwrap();
        let rows = r
            .query_graph_rows(
                &dims,
                "exposure >= 10",
                &Binds::new(),
                &["raw".into()],
                &["Cam/raw".into()],
            )
            .unwrap();
        let exposure = rows.column("exposure").unwrap();
        let detector = rows.column("detector").unwrap();
        let mut pairs: Vec<(String, String)> = (0..rows.n_rows())
            .map(|i| {
                let value = |c: usize| {
                    rows.dictionary[c][rows.values[i * rows.columns.len() + c] as usize].to_string()
                };
                (value(exposure), value(detector))
            })
            .collect();
        pairs.sort();
        pairs.dedup();
        results.push((
            r.location().clone(),
            rows.n_rows(),
            pairs,
            rows.inputs[0].len(),
        ));
    }
    let (_, n, pairs, inputs) = &results[0];
    assert_eq!(*n, 92_000);
    assert_eq!(pairs.len(), 92_000);
    assert_eq!(*inputs, 92_000);
    for (location, other_n, other_pairs, other_inputs) in &results[1..] {
        assert_eq!((other_n, other_inputs), (n, inputs), "{location}");
        assert!(other_pairs == pairs, "{location}: other rows");
    }
}

/// Inserts of datasets through the bulk path (32 rows a SQLite statement,
/// `COPY` on PostgreSQL): what went in, what was already there and which
/// conflict each refused insert names, over more rows than one statement.
fn insert_conflicts(r: &mut Registry) -> Vec<String> {
    let universe = r.universe().clone();
    let detectors: Vec<serde_json::Value> = (1..=50)
        .map(|d| json!({"instrument": "Cam", "id": d, "full_name": format!("D{d}")}))
        .collect();
    r.insert_dimension_records(&records(json!({
        "instrument": [{"name": "Cam", "detector_max": 64}],
        "detector": detectors,
    })))
    .unwrap();
    let flat = DatasetType {
        name: "flat".into(),
        dimensions: universe.conform(&["instrument", "detector"]).unwrap(),
        storage_class: "Json".into(),
        is_calibration: false,
    };
    r.register_dataset_type(&flat).unwrap();
    r.register_collection("run", CollectionType::Run, None)
        .unwrap();
    let detector = |d: i64| {
        DataId::from_pairs([
            ("instrument".to_string(), DataIdValue::from("Cam")),
            ("detector".to_string(), DataIdValue::Int(d)),
        ])
    };
    let dataset = |id: u128, d: i64| NewDataset {
        id: Uuid::from_u128(id),
        data_id: detector(d),
        stored: None,
    };
    let mut seen = Vec::new();
    let mut attempt = |r: &mut Registry, what: &str, datasets: &[NewDataset], mode| {
        let outcome = match r.insert_datasets("run", "flat", datasets, mode) {
            Ok(stats) => format!("inserted {} skipped {}", stats.inserted, stats.skipped),
            Err(e) => format!("refused: {e}"),
        };
        let (_, rows) = r.sql_read_only("SELECT count(*) FROM dataset").unwrap();
        seen.push(format!("{what}: {outcome}; {} rows", rows[0][0]));
    };
    let first: Vec<NewDataset> = (1..=40).map(|d| dataset(d as u128, d)).collect();
    attempt(r, "40 new", &first, OnConflict::Fail);
    attempt(r, "the same again", &first, OnConflict::SkipExistingId);
    let mut mixed: Vec<NewDataset> = first[10..30].to_vec();
    mixed.extend((41..=45).map(|d| dataset(d as u128, d)));
    attempt(r, "20 old, 5 new", &mixed, OnConflict::SkipExistingId);
    let with_old = vec![dataset(46, 46), dataset(3, 3)];
    attempt(r, "one old, failing", &with_old, OnConflict::Fail);
    let taken_data_id: Vec<NewDataset> = (0..35).map(|i| dataset(100 + i, 46)).collect();
    attempt(
        r,
        "a data ID twice",
        &taken_data_id,
        OnConflict::SkipExistingId,
    );
    let mut other_data_id = first[..33].to_vec();
    other_data_id.push(dataset(7, 47));
    attempt(
        r,
        "a UUID for another data ID",
        &other_data_id,
        OnConflict::SkipExistingId,
    );
    attempt(
        r,
        "a held data ID",
        &[dataset(200, 5)],
        OnConflict::SkipExistingId,
    );
    seen
}

#[test]
fn dataset_inserts_skip_and_refuse_alike_on_every_backend() {
    let universe = DimensionUniverse::default_universe();
    let (mut registries, _cleanup) = registries(&universe);
    let results: Vec<(RegistryLocation, Vec<String>)> = registries
        .iter_mut()
        .map(|r| (r.location().clone(), insert_conflicts(r)))
        .collect();
    let sqlite = &results[0].1;
    let expected = [
        "40 new: inserted 40 skipped 0; 40 rows",
        "the same again: inserted 0 skipped 40; 40 rows",
        "20 old, 5 new: inserted 5 skipped 20; 45 rows",
        "one old, failing: refused: 1 of these flat datasets are already registered in RUN run; 45 rows",
    ];
    assert_eq!(sqlite[..4], expected, "{sqlite:#?}");
    assert!(
        sqlite[4].contains(
            "refused: flat {instrument: \"Cam\", detector: 46} already exists in RUN run; 45 rows"
        ),
        "{sqlite:#?}"
    );
    assert!(
        sqlite[5].contains("its UUID 00000000-0000-0000-0000-000000000007 is already registered for another dataset; 45 rows"),
        "{sqlite:#?}"
    );
    assert!(
        sqlite[6].contains("detector: 5} already exists in RUN run; 45 rows"),
        "{sqlite:#?}"
    );
    for (location, other) in &results[1..] {
        assert_eq!(other, sqlite, "{location} differs from SQLite");
    }
}

/// The registry's counts of the rows a refused bulk write must not leave.
fn row_counts(r: &Registry) -> Vec<i64> {
    [
        "dataset",
        "exposure",
        "physical_filter",
        "collection",
        "quantum",
    ]
    .iter()
    .map(|t| {
        let (_, rows) = r
            .sql_read_only(&format!("SELECT count(*) FROM {t}"))
            .unwrap();
        rows[0][0].as_i64().unwrap()
    })
    .collect()
}

/// What each refused bulk write said, on one backend, after checking it
/// left nothing behind and that the next good write still works.
fn refused_bulk_writes(r: &mut Registry) -> Vec<String> {
    use quanta_registry::{ImportBatch, ImportDatasets};
    let universe = r.universe().clone();
    r.insert_dimension_records(&records(json!({
        "instrument": [{"name": "Cam"}],
        "detector": [{"instrument": "Cam", "id": 1}],
    })))
    .unwrap();
    let flat = DatasetType {
        name: "flat".into(),
        dimensions: universe.conform(&["instrument", "detector"]).unwrap(),
        storage_class: "Json".into(),
        is_calibration: false,
    };
    r.register_dataset_type(&flat).unwrap();
    r.register_collection("run", CollectionType::Run, None)
        .unwrap();
    let detector = |d: i64| NewDataset {
        id: Uuid::now_v7(),
        data_id: DataId::from_pairs([
            ("instrument", DataIdValue::from("Cam")),
            ("detector", DataIdValue::Int(d)),
        ]),
        stored: None,
    };
    let before = row_counts(r);
    let mut said = Vec::new();
    let mut refused = |r: &mut Registry, what: &str, result: Result<String, RegistryError>| {
        let err = result.expect_err(what).to_string();
        assert_eq!(row_counts(r), before, "{what} left rows behind: {err}");
        said.push(format!("{what}: {err}"));
    };
    let result = r
        .insert_datasets("run", "flat", &[detector(1), detector(9)], OnConflict::Fail)
        .map(|s| format!("{s:?}"));
    refused(r, "ingest, missing detector", result);
    let result = r
        .insert_datasets("nowhere", "flat", &[detector(1)], OnConflict::Fail)
        .map(|s| format!("{s:?}"));
    refused(r, "ingest, unknown run", result);
    let import = |run: &str, d: i64, records: RecordSet| ImportBatch {
        records,
        collections: vec![("new-run".into(), CollectionType::Run, None)],
        datasets: vec![ImportDatasets {
            run: run.into(),
            dataset_type: "flat".into(),
            datasets: vec![detector(1), detector(d)],
        }],
        ..ImportBatch::default()
    };
    let result = r
        .import_batch(&import("new-run", 9, RecordSet::default()))
        .map(|s| format!("{s:?}"));
    refused(r, "import, missing detector", result);
    let result = r
        .import_batch(&import("nowhere", 1, RecordSet::default()))
        .map(|s| format!("{s:?}"));
    refused(r, "import, unknown run", result);
    // A record whose implied parent is missing: checked set-wise at
    // commit on SQLite, by the server's key on PostgreSQL.
    let orphan = records(json!({
        "exposure": [{"instrument": "Cam", "id": 5, "physical_filter": "nope"}],
    }));
    let result = r
        .import_batch(&import("new-run", 1, orphan))
        .map(|s| format!("{s:?}"));
    refused(r, "import, exposure without its physical_filter", result);
    // Per-row enforcement is back on after every refusal: a record
    // inserted the ordinary way is refused by the database itself.
    let orphan = records(json!({
        "exposure": [{"instrument": "Cam", "id": 6, "physical_filter": "nope"}],
    }));
    let result = r.insert_dimension_records(&orphan).map(|n| n.to_string());
    refused(r, "records, exposure without its physical_filter", result);
    let stats = r
        .insert_datasets("run", "flat", &[detector(1)], OnConflict::Fail)
        .unwrap();
    assert_eq!(stats.inserted, 1);
    said
}

#[test]
fn bulk_writes_with_a_missing_parent_are_refused_and_leave_nothing_on_every_backend() {
    let universe = DimensionUniverse::default_universe();
    let (mut registries, _cleanup) = registries(&universe);
    for r in registries.iter_mut() {
        let said = refused_bulk_writes(r);
        let location = r.location().clone();
        let expect = [
            (
                "ingest, missing detector",
                "detector: 9}: the detector record does not exist",
            ),
            ("ingest, unknown run", "nowhere"),
            (
                "import, missing detector",
                "detector: 9}: the detector record does not exist",
            ),
            ("import, unknown run", "nowhere"),
            (
                "import, exposure without its physical_filter",
                "physical_filter",
            ),
            (
                "records, exposure without its physical_filter",
                "physical_filter",
            ),
        ];
        assert_eq!(said.len(), expect.len(), "{location}: {said:#?}");
        for (line, (what, words)) in said.iter().zip(expect) {
            assert!(
                line.starts_with(what) && line.contains(words),
                "{location}: expected `{what}` to say `{words}`: {said:#?}"
            );
        }
    }
}

/// On PostgreSQL, a stretch of bulk writing that grew `dataset` by a
/// tenth or more leaves its statistics counting the rows (a preflight right
/// after a large ingest is planned with them); a smaller one leaves them.
/// SQLite keeps no statistics of its own and is left as it was.
#[test]
fn bulk_writing_that_grows_a_table_refreshes_its_statistics() {
    let universe = DimensionUniverse::default_universe();
    let (mut registries, _cleanup) = registries(&universe);
    for r in &mut registries {
        let postgres = matches!(r.location(), RegistryLocation::Postgres { .. });
        raw_setup(r, 2, 1000);
        let counted = |r: &Registry| -> Option<f64> {
            if !postgres {
                return None;
            }
            let (_, rows) = r
                .sql_read_only("SELECT reltuples FROM pg_class WHERE oid = to_regclass('dataset')")
                .unwrap();
            rows[0][0].as_f64()
        };
        let mut next = 0;
        let mut ingest = |r: &mut Registry, n: i64| {
            let raws: Vec<NewDataset> = (next..next + n)
                .map(|d| NewDataset {
                    id: Uuid::now_v7(),
                    data_id: data_id(1, d),
                    stored: None,
                })
                .collect();
            next += n;
            r.set_bulk_writing(Some(quanta_registry::BulkWrites::Scattered))
                .unwrap();
            r.insert_datasets_uncommitted("Cam/raw", "raw", &raws, OnConflict::Fail)
                .unwrap();
            r.commit_open().unwrap();
            r.set_bulk_writing(None).unwrap();
        };
        // Never analyzed: -1.
        assert_eq!(counted(r), postgres.then_some(-1.0));
        ingest(r, 200);
        assert_eq!(counted(r), postgres.then_some(200.0));
        ingest(r, 10);
        assert_eq!(counted(r), postgres.then_some(200.0), "a twentieth more");
        ingest(r, 100);
        assert_eq!(counted(r), postgres.then_some(310.0));
    }
}

/// A writer lock taken while a write transaction of another session is
/// still open (a killed merge's second connection, whose COMMIT the
/// server carries out after the client died) is held only once that
/// transaction has ended, so its new holder reads every row it wrote.
/// PostgreSQL only: SQLite's transactions end with their process.
#[test]
fn a_new_writer_lock_holder_waits_for_write_transactions_still_open() {
    let universe = DimensionUniverse::default_universe();
    let (mut registries, _cleanup) = registries(&universe);
    for r in &mut registries {
        if !matches!(r.location(), RegistryLocation::Postgres { .. }) {
            continue;
        }
        raw_setup(r, 1, 10);
        let raws: Vec<NewDataset> = (0..10)
            .map(|d| NewDataset {
                id: Uuid::now_v7(),
                data_id: data_id(0, d),
                stored: None,
            })
            .collect();
        r.insert_datasets_uncommitted("Cam/raw", "raw", &raws, OnConflict::Fail)
            .unwrap();

        let (told, waits) = std::sync::mpsc::channel();
        let location = r.location().clone();
        let next_writer = std::thread::spawn(move || {
            let _lock = quanta_registry::WriterLock::acquire(&location, "test", &mut |holder| {
                told.send(holder.to_string()).unwrap()
            })
            .unwrap();
            let (_, rows) = Registry::open_at(&location, true)
                .unwrap()
                .sql_read_only("SELECT count(*) FROM dataset")
                .unwrap();
            rows[0][0].as_i64().unwrap()
        });
        // It says what it waits for (an error if it ended without
        // waiting), and cannot have the lock before the transaction ends.
        // Asserted after the commit: the namespace is dropped at the end,
        // which waits for every open transaction in it.
        let said = waits.recv();
        let ended_early = next_writer.is_finished();
        r.commit_open().unwrap();
        let counted = next_writer.join().unwrap();
        assert!(
            said.as_deref()
                .is_ok_and(|s| s.contains("transactions still open")),
            "{said:?}"
        );
        assert!(!ended_early);
        assert_eq!(counted, 10, "the rows are there");
    }
}
