//! Writing datasets on a real SQLite registry: the integrity rules the
//! schema enforces come back as errors in the words of what was written
//! (a dataset that already exists, a missing dimension record, a tag that
//! would hold two datasets of one data ID, overlapping validity ranges),
//! and a refused write leaves nothing behind.

use quanta_core::{CollectionType, DataId, DataIdValue, DatasetType, DimensionUniverse, Uuid};
use quanta_registry::{NewDataset, OnConflict, RecordSet, Registry, RegistryError};
use serde_json::json;

fn registry() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let universe = DimensionUniverse::default_universe();
    let mut registry = Registry::create(&dir.path().join("registry.sqlite3"), &universe).unwrap();
    let records: RecordSet = serde_json::from_value(json!({
        "instrument": [{"name": "Cam"}],
        "detector": [{"instrument": "Cam", "id": 1}, {"instrument": "Cam", "id": 2}],
    }))
    .unwrap();
    registry.insert_dimension_records(&records).unwrap();
    let bias = DatasetType {
        name: "bias".into(),
        dimensions: universe.conform(&["instrument", "detector"]).unwrap(),
        storage_class: "Json".into(),
        is_calibration: true,
    };
    registry.register_dataset_type(&bias).unwrap();
    registry
        .register_collection("Cam/run", CollectionType::Run, None)
        .unwrap();
    (dir, registry)
}

fn detector(id: i64) -> DataId {
    DataId::from_pairs([
        ("instrument".to_string(), "Cam".into()),
        ("detector".to_string(), DataIdValue::Int(id)),
    ])
}

fn insert(registry: &mut Registry, ids: &[(Uuid, i64)]) -> Result<(), RegistryError> {
    let datasets: Vec<NewDataset> = ids
        .iter()
        .map(|&(id, d)| NewDataset {
            id,
            data_id: detector(d),
            stored: None,
        })
        .collect();
    registry
        .insert_datasets("Cam/run", "bias", &datasets, OnConflict::Fail)
        .map(|_| ())
}

fn count(registry: &Registry, table: &str) -> i64 {
    let (_, rows) = registry
        .sql_read_only(&format!("SELECT count(*) FROM {table}"))
        .unwrap();
    rows[0][0].as_i64().unwrap()
}

#[test]
fn a_second_dataset_of_one_data_id_in_a_run_is_refused_and_nothing_is_inserted() {
    let (_dir, mut registry) = registry();
    insert(&mut registry, &[(Uuid::now_v7(), 1)]).unwrap();
    let err = insert(&mut registry, &[(Uuid::now_v7(), 2), (Uuid::now_v7(), 1)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists in RUN Cam/run"), "{err}");
    assert!(err.contains("detector: 1"), "{err}");
    assert_eq!(count(&registry, "dataset"), 1);
}

#[test]
fn a_data_id_without_its_dimension_record_is_refused() {
    let (_dir, mut registry) = registry();
    let err = insert(&mut registry, &[(Uuid::now_v7(), 7)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("the detector record does not exist"), "{err}");
    assert_eq!(count(&registry, "dataset"), 0);
}

#[test]
fn a_tag_holds_one_dataset_per_data_id() {
    let (_dir, mut registry) = registry();
    registry
        .register_collection("Cam/run2", CollectionType::Run, None)
        .unwrap();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    insert(&mut registry, &[(a, 1)]).unwrap();
    let other = NewDataset {
        id: b,
        data_id: detector(1),
        stored: None,
    };
    registry
        .insert_datasets("Cam/run2", "bias", &[other], OnConflict::Fail)
        .unwrap();
    registry
        .register_collection("Cam/tagged", CollectionType::Tagged, None)
        .unwrap();
    assert_eq!(registry.associate("Cam/tagged", &[a]).unwrap(), 1);
    // Tagging the same dataset again changes nothing.
    assert_eq!(registry.associate("Cam/tagged", &[a]).unwrap(), 0);
    let err = registry
        .associate("Cam/tagged", &[b])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Cam/tagged already holds another dataset of the same type and data ID"),
        "{err}"
    );
    let missing = Uuid::now_v7();
    let err = registry
        .associate("Cam/tagged", &[missing])
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("no dataset {missing}")), "{err}");
    assert_eq!(count(&registry, "dataset_tags"), 1);
}

#[test]
fn validity_ranges_of_one_data_id_may_touch_but_not_overlap() {
    let (_dir, mut registry) = registry();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    insert(&mut registry, &[(a, 1)]).unwrap();
    registry
        .register_collection("Cam/run2", CollectionType::Run, None)
        .unwrap();
    let second = NewDataset {
        id: b,
        data_id: detector(1),
        stored: None,
    };
    registry
        .insert_datasets("Cam/run2", "bias", &[second], OnConflict::Fail)
        .unwrap();
    registry
        .register_collection("Cam/calib", CollectionType::Calibration, None)
        .unwrap();
    registry
        .certify("Cam/calib", &[a], 60000.0, 60100.0)
        .unwrap();
    // Adjacent: [60100, 60200) starts where [60000, 60100) ends.
    registry
        .certify("Cam/calib", &[b], 60100.0, 60200.0)
        .unwrap();
    let err = registry
        .certify("Cam/calib", &[b], 60050.0, 60060.0)
        .unwrap_err();
    assert!(matches!(err, RegistryError::Conflict(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("overlaps an existing validity range of the same dataset type and data ID"),
        "{err}"
    );
    assert_eq!(count(&registry, "dataset_calibs"), 2);
}
