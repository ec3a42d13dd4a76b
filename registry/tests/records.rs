//! Inserting dimension records on a real SQLite registry: all or nothing,
//! errors that name the record and say which parent is missing or which
//! key is taken, skip-existing imports, and regions indexed under the ids
//! their inserts assigned.

use quanta_core::DimensionUniverse;
use quanta_registry::{RecordSet, Registry};
use serde_json::json;

fn records(value: serde_json::Value) -> RecordSet {
    serde_json::from_value(value).unwrap()
}

fn registry() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let universe = DimensionUniverse::default_universe();
    let registry = Registry::create(&dir.path().join("registry.sqlite3"), &universe).unwrap();
    (dir, registry)
}

fn count(registry: &Registry, table: &str) -> i64 {
    let (_, rows) = registry
        .sql_read_only(&format!("SELECT count(*) FROM {table}"))
        .unwrap();
    rows[0][0].as_i64().unwrap()
}

#[test]
fn a_missing_parent_is_named_and_nothing_is_inserted() {
    let (_dir, mut registry) = registry();
    let err = registry
        .insert_dimension_records(&records(json!({
            "instrument": [{"name": "Cam"}],
            "detector": [
                {"instrument": "Cam", "id": 1},
                {"instrument": "Other", "id": 2},
            ],
        })))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("its instrument `\"Other\"` does not exist")
            || err.contains("its instrument `Other` does not exist"),
        "{err}"
    );
    assert!(err.contains("nothing was inserted"), "{err}");
    assert_eq!(count(&registry, "instrument"), 0);
    assert_eq!(count(&registry, "detector"), 0);
}

#[test]
fn a_duplicate_key_is_refused_naming_the_record_and_nothing_is_inserted() {
    let (_dir, mut registry) = registry();
    let first = records(json!({
        "instrument": [{"name": "Cam"}],
        "detector": [{"instrument": "Cam", "id": 1, "full_name": "D001"}],
    }));
    assert_eq!(registry.insert_dimension_records(&first).unwrap(), 2);
    let again = records(json!({
        "detector": [
            {"instrument": "Cam", "id": 2, "full_name": "D002"},
            {"instrument": "Cam", "id": 1, "full_name": "D001"},
        ],
    }));
    let err = registry
        .insert_dimension_records(&again)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a record with the same key already exists"),
        "{err}"
    );
    assert!(err.contains("D001"), "{err}");
    assert_eq!(count(&registry, "detector"), 1);
}

#[test]
fn regions_are_indexed_under_the_ids_their_inserts_assigned() {
    let (_dir, mut registry) = registry();
    let square =
        |ra: f64| json!({"polygon": [[ra, 0.0], [ra + 1.0, 0.0], [ra + 1.0, 1.0], [ra, 1.0]]});
    registry
        .insert_dimension_records(&records(json!({
            "skymap": [{"name": "sky"}],
            "tract": [
                {"skymap": "sky", "id": 0, "region": square(10.0)},
                {"skymap": "sky", "id": 1, "region": square(200.0)},
            ],
        })))
        .unwrap();
    // Each tract's skypix rows name its own region_id: the cells of the
    // tract at RA 200 are not those of the tract at RA 10.
    let (_, rows) = registry
        .sql_read_only(
            "SELECT t.id, count(*), min(s.skypix), max(s.skypix) FROM tract t \
             JOIN tract_skypix_overlap s ON s.region_id = t.region_id GROUP BY t.id ORDER BY t.id",
        )
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (a, b) = (&rows[0], &rows[1]);
    assert!(a[1].as_i64().unwrap() > 0 && b[1].as_i64().unwrap() > 0);
    assert!(
        a[3].as_i64().unwrap() < b[2].as_i64().unwrap()
            || b[3].as_i64().unwrap() < a[2].as_i64().unwrap(),
        "the two tracts share no cell: {rows:?}"
    );
}
