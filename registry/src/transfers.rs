//! The registry's half of export and import: reading what an export needs
//! (TAGGED members, CALIBRATION validity ranges, which UUIDs exist) and
//! writing a whole import in one transaction ([`Registry::import_batch`]):
//! dimension records (existing keys skipped), dataset types, collections,
//! chains, datasets with their file records (existing UUIDs checked, not
//! inserted again), TAGGED and CALIBRATION membership. Importing the same
//! batch twice changes nothing the second time.

use std::collections::HashSet;

use quanta_core::{CollectionType, DataId, DatasetType, Uuid};

use crate::database::Param;
use crate::datasets::{InsertConflict, NewDataset, CERTIFY_SQL, TAG_SQL};
use crate::error::{ConstraintViolation, RegistryError, Result};
use crate::provenance::{QuantumExecution, QuantumInput, RunProvenance};
use crate::records::RecordSet;
use crate::registry::Registry;

/// Datasets of one type in one RUN, to import.
#[derive(Debug, Clone)]
pub struct ImportDatasets {
    pub run: String,
    pub dataset_type: String,
    pub datasets: Vec<NewDataset>,
}

/// A CALIBRATION validity range of one dataset: (UUID, begin, end), MJD.
pub type CalibRange = (Uuid, f64, f64);

/// Everything one import writes, in one transaction.
#[derive(Debug, Clone, Default)]
pub struct ImportBatch {
    pub records: RecordSet,
    pub dataset_types: Vec<DatasetType>,
    /// Non-CHAINED collections (RUN, TAGGED, CALIBRATION) with their doc.
    pub collections: Vec<(String, CollectionType, Option<String>)>,
    /// CHAINED collections and their children, in the order to define them
    /// (a child chain before its parent).
    pub chains: Vec<(String, Vec<String>)>,
    pub datasets: Vec<ImportDatasets>,
    /// TAGGED collection → member UUIDs.
    pub tags: Vec<(String, Vec<Uuid>)>,
    /// CALIBRATION collection → (UUID, begin, end) validity ranges (MJD).
    pub calibs: Vec<(String, Vec<CalibRange>)>,
    /// The provenance of the datasets, restored after them.
    pub provenance: Option<ProvenanceBatch>,
}

/// A recorded quantum with its input links, as an export carries it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProvenanceQuantum {
    pub id: Uuid,
    pub run: String,
    pub bundle_id: Uuid,
    pub task_label: String,
    pub data_id: DataId,
    pub execution: QuantumExecution,
    pub inputs: Vec<QuantumInput>,
}

/// The provenance of some datasets: the quanta that produced them, the
/// RUN provenance rows (pipeline, task configs, software, command line) of
/// their bundles, and which quantum produced which dataset through which
/// connection.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProvenanceBatch {
    pub runs: Vec<RunProvenance>,
    pub quanta: Vec<ProvenanceQuantum>,
    /// (dataset, producing quantum, output connection).
    pub producers: Vec<(Uuid, Uuid, String)>,
}

/// What an import wrote (everything else was already there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportStats {
    pub records: usize,
    pub dataset_types: usize,
    pub collections: usize,
    pub datasets: usize,
    pub datasets_present: usize,
    pub associations: usize,
    /// Quanta whose provenance was restored.
    pub quanta: usize,
}

impl Registry {
    /// The datasets of a TAGGED collection.
    pub fn tagged_dataset_ids(&self, tagged: &str) -> Result<Vec<Uuid>> {
        let c = self.collection_of_type(tagged, CollectionType::Tagged)?;
        self.db.query_rows(
            "SELECT dataset_id FROM dataset_tags WHERE collection_id = ?1 ORDER BY dataset_id",
            &[&c.id],
            |r| r.get(0),
        )
    }

    /// The validity ranges of a CALIBRATION collection: (UUID, begin, end).
    pub fn calibration_ranges(&self, calibration: &str) -> Result<Vec<(Uuid, f64, f64)>> {
        let c = self.collection_of_type(calibration, CollectionType::Calibration)?;
        self.db.query_rows(
            "SELECT dataset_id, valid_begin, valid_end FROM dataset_calibs \
             WHERE collection_id = ?1 ORDER BY valid_begin, dataset_id",
            &[&c.id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    /// Which of `ids` are registered datasets.
    pub fn registered_dataset_ids(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>> {
        let mut found = HashSet::new();
        // A repository without datasets (the first import or transfer
        // into it) holds none of them: one probe rather than a million.
        if ids.is_empty()
            || !self
                .db
                .prepare("SELECT 1 FROM dataset LIMIT 1")?
                .exists(&[])?
        {
            return Ok(found);
        }
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT id FROM dataset WHERE id IN ({})",
                (1..=chunk.len())
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let params: Vec<&dyn Param> = chunk.iter().map(|id| id as &dyn Param).collect();
            self.db.for_each_row(&sql, &params, |row| {
                found.insert(row.get(0)?);
                Ok(true)
            })?;
        }
        Ok(found)
    }

    /// Writes a whole import in one IMMEDIATE transaction: all or nothing.
    /// Existing dimension records (by key), identical dataset types and
    /// collections, datasets already registered with the same UUID, type,
    /// RUN and data ID, and existing memberships are left as they are; a
    /// conflicting definition or dataset is an error and nothing is written.
    ///
    /// Foreign keys are checked set-wise (`Database::begin_set_wise`): the
    /// dataset rows by `Registry::insert_dataset_rows`, the input links
    /// against the quanta written just before them, every other row
    /// (dimension records, memberships, chains, quanta) at commit.
    pub fn import_batch(&mut self, batch: &ImportBatch) -> Result<ImportStats> {
        let stats = self.import_batch_uncommitted(batch)?;
        self.commit_open()?;
        Ok(stats)
    }

    /// Like [`Registry::import_batch`], but leaves the transaction open
    /// for [`Registry::commit_open`] (or [`Registry::rollback_open`]):
    /// an import writes its rows while its files are being placed and
    /// commits once both are done. On error the transaction is rolled
    /// back.
    pub fn import_batch_uncommitted(&mut self, batch: &ImportBatch) -> Result<ImportStats> {
        self.db.begin_set_wise()?;
        let stats = self.import_uncommitted(batch);
        if stats.is_err() {
            let _ = self.db.rollback();
        }
        stats
    }

    fn import_uncommitted(&self, batch: &ImportBatch) -> Result<ImportStats> {
        let mut stats = ImportStats {
            records: self.insert_dimension_records_skipping_existing(&batch.records)?,
            ..ImportStats::default()
        };
        for dt in &batch.dataset_types {
            stats.dataset_types += usize::from(self.register_dataset_type_in_tx(dt)?);
        }
        for (name, ctype, doc) in &batch.collections {
            stats.collections +=
                usize::from(self.register_collection_in_tx(name, *ctype, doc.as_deref())?);
        }
        for (parent, children) in &batch.chains {
            stats.collections += usize::from(self.set_chain_in_tx(parent, children)?);
        }
        for group in &batch.datasets {
            let (new, present) = self.import_datasets_in_tx(group)?;
            stats.datasets += new;
            stats.datasets_present += present;
        }
        for (tagged, ids) in &batch.tags {
            stats.associations += self.tag_in_tx(tagged, ids)?;
        }
        for (calibration, ranges) in &batch.calibs {
            stats.associations += self.certify_in_tx(calibration, ranges)?;
        }
        if let Some(provenance) = &batch.provenance {
            stats.quanta = self.import_provenance_in_tx(provenance)?;
        }
        Ok(stats)
    }

    /// Writes RUN provenance rows, quanta and their input links (existing
    /// ones left as they are) and sets the producer of datasets that have
    /// none. Returns the number of quanta written.
    fn import_provenance_in_tx(&self, p: &ProvenanceBatch) -> Result<usize> {
        for r in &p.runs {
            self.insert_run_provenance(r)?;
        }
        let mut written = 0;
        for q in &p.quanta {
            let run = self.collection_of_type(&q.run, CollectionType::Run)?;
            let x = &q.execution;
            written += self.db.execute(
                "INSERT INTO quantum (id, run_id, bundle_id, task_label, data_id, status, attempts, host, \
                 batch_job, started, finished, wall_seconds, cpu_seconds, peak_rss_bytes, exit_code, error, log_tail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &q.id,
                    &run.id,
                    &q.bundle_id,
                    &q.task_label,
                    &q.data_id.to_json(),
                    &x.status,
                    &x.attempts,
                    &x.host,
                    &x.batch_job,
                    &x.started,
                    &x.finished,
                    &x.wall_seconds,
                    &x.cpu_seconds,
                    &x.peak_rss_bytes.map(|v| v.min(i64::MAX as u64) as i64),
                    &x.exit_code,
                    &x.error,
                    &serde_json::to_string(&x.log_tail).expect("strings serialize"),
                ],
            )? as usize;
            let mut input = self.db.prepare(
                "INSERT INTO quantum_input (quantum_id, dataset_id, connection, is_prerequisite, used) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            )?;
            for i in &q.inputs {
                input.execute(&[
                    &q.id,
                    &i.dataset_id,
                    &i.connection,
                    &i.is_prerequisite,
                    &i.used,
                ])?;
            }
        }
        let mut producer = self.db.prepare(
            "UPDATE dataset SET producer = ?1, producer_connection = ?2 WHERE id = ?3 AND producer IS NULL",
        )?;
        for (dataset, quantum, connection) in &p.producers {
            producer.execute(&[quantum, connection, dataset])?;
        }
        Ok(written)
    }

    /// Registers `dt` (normalized) unless an identical one exists; a
    /// different one of that name is a conflict. Runs in whatever
    /// transaction the connection has open.
    pub(crate) fn register_dataset_type_in_tx(&self, dt: &DatasetType) -> Result<bool> {
        DatasetType::validate_name(&dt.name)?;
        quanta_core::validate_storage_class(&dt.storage_class)?;
        let normalized = DatasetType {
            dimensions: self.universe.conform(&dt.dimensions.names)?,
            ..dt.clone()
        };
        if let Some(existing) = self.dataset_type(&normalized.name)? {
            if existing == normalized {
                return Ok(false);
            }
            return Err(RegistryError::DatasetTypeConflict {
                name: normalized.name.clone(),
                existing: existing.to_string(),
                requested: normalized.to_string(),
            });
        }
        self.db.execute(
            "INSERT INTO dataset_type (name, dimensions, storage_class, is_calibration) VALUES (?1, ?2, ?3, ?4)",
            &[
                &normalized.name,
                &serde_json::to_string(&normalized.dimensions.names).expect("names serialize"),
                &normalized.storage_class,
                &normalized.is_calibration,
            ],
        )?;
        Ok(true)
    }

    fn register_collection_in_tx(
        &self,
        name: &str,
        ctype: CollectionType,
        doc: Option<&str>,
    ) -> Result<bool> {
        quanta_core::validate_collection_name(name)?;
        if let Some(existing) = self.find_collection(name)? {
            if existing.collection_type == ctype {
                return Ok(false);
            }
            return Err(RegistryError::CollectionConflict(name.to_string()));
        }
        self.db.execute(
            "INSERT INTO collection (name, type, doc) VALUES (?1, ?2, ?3)",
            &[&name, &ctype.as_str(), &doc],
        )?;
        Ok(true)
    }

    /// Creates the CHAINED collection or sets its children; `true` when it
    /// was created. An existing chain with other children is given these
    /// (as LSST's import does).
    fn set_chain_in_tx(&self, parent: &str, children: &[String]) -> Result<bool> {
        let created = self.register_collection_in_tx(parent, CollectionType::Chained, None)?;
        let parent_record = self.collection_of_type(parent, CollectionType::Chained)?;
        if !created && parent_record.children == children {
            return Ok(false);
        }
        let child_ids = children
            .iter()
            .map(|child| Ok(self.collection(child)?.id))
            .collect::<Result<Vec<i64>>>()?;
        self.db.execute(
            "DELETE FROM collection_chain WHERE parent_id = ?1",
            &[&parent_record.id],
        )?;
        crate::collections::insert_chain(&self.db, parent_record.id, &child_ids)?;
        // A cycle through the new children is found by expanding the chain.
        self.resolve_search_path(&[parent.to_string()])?;
        Ok(created)
    }

    /// Inserts one type's datasets into one RUN; a UUID already registered
    /// must be the same dataset (type, RUN, data ID). Returns (inserted,
    /// already present).
    fn import_datasets_in_tx(&self, group: &ImportDatasets) -> Result<(usize, usize)> {
        let run = self.collection_of_type(&group.run, CollectionType::Run)?;
        let dt = self.dataset_type_required(&group.dataset_type)?;
        let counts = self.insert_dataset_rows(&dt, &run, &group.datasets, |i, data_id, why| {
            let id = group.datasets[i].id;
            Err(RegistryError::Conflict(match why {
                InsertConflict::DataIdTaken => format!(
                    "{} {data_id}: RUN {} already holds another dataset with this data ID \
                     (the import's is {id})",
                    dt.name, group.run
                ),
                InsertConflict::IdTaken => format!(
                    "dataset {id} is already registered as another dataset than {} {data_id} in RUN {}",
                    dt.name, group.run
                ),
            }))
        })?;
        Ok((counts.inserted, counts.already_present))
    }

    fn tag_in_tx(&self, tagged: &str, ids: &[Uuid]) -> Result<usize> {
        let c = self.collection_of_type(tagged, CollectionType::Tagged)?;
        let mut stmt = self.db.prepare(TAG_SQL)?;
        let mut n = 0;
        for id in ids {
            n += stmt
                .execute(&[&c.id, id])
                .map_err(|e| {
                    if e.constraint() == Some(ConstraintViolation::Unique) {
                        RegistryError::Conflict(format!(
                            "{tagged} already holds another dataset of the same type and data ID as {id}"
                        ))
                    } else {
                        e
                    }
                })? as usize;
        }
        Ok(n)
    }

    /// Certifies each (UUID, begin, end) unless that exact range is there.
    fn certify_in_tx(&self, calibration: &str, ranges: &[(Uuid, f64, f64)]) -> Result<usize> {
        let c = self.collection_of_type(calibration, CollectionType::Calibration)?;
        let mut exists = self.db.prepare(
            "SELECT 1 FROM dataset_calibs WHERE collection_id = ?1 AND dataset_id = ?2 \
             AND valid_begin = ?3 AND valid_end = ?4",
        )?;
        let mut insert = self.db.prepare(CERTIFY_SQL)?;
        let mut n = 0;
        for (id, begin, end) in ranges {
            let params: [&dyn Param; 4] = [&c.id, id, begin, end];
            if begin.is_nan() || end.is_nan() || begin >= end {
                return Err(RegistryError::Invalid(format!(
                    "{calibration}: validity range [{begin}, {end}) of {id} is empty"
                )));
            }
            if exists.exists(&params)? {
                continue;
            }
            let changed = insert.execute(&params).map_err(|e| {
                if e.constraint() == Some(ConstraintViolation::Exclusion) {
                    RegistryError::Conflict(format!(
                        "certifying {id} in {calibration} for [{begin}, {end}): overlaps an \
                         existing validity range of the same dataset type and data ID"
                    ))
                } else {
                    e
                }
            })?;
            if changed == 0 {
                return Err(RegistryError::Invalid(format!(
                    "{calibration}: {id} is not a registered dataset of a calibration dataset type"
                )));
            }
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quanta_core::{DataId, DimensionUniverse};

    #[test]
    fn an_import_is_all_or_nothing_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let universe = DimensionUniverse::default_universe();
        let mut r = Registry::create(&dir.path().join("r.sqlite3"), &universe).unwrap();
        let records: RecordSet = serde_json::from_str(
            r#"{"instrument": [{"name": "Cam"}], "detector": [{"instrument": "Cam", "id": 1}]}"#,
        )
        .unwrap();
        let dt = DatasetType {
            name: "bias".into(),
            dimensions: universe.conform(&["instrument", "detector"]).unwrap(),
            storage_class: "Json".into(),
            is_calibration: true,
        };
        let id = Uuid::now_v7();
        let mut data_id = DataId::from_pairs([("instrument", "Cam")]);
        data_id.insert("detector", 1);
        let mut batch = ImportBatch {
            records,
            dataset_types: vec![dt],
            collections: vec![
                ("run".into(), CollectionType::Run, None),
                ("calib".into(), CollectionType::Calibration, None),
            ],
            chains: vec![("chain".into(), vec!["calib".into(), "run".into()])],
            datasets: vec![ImportDatasets {
                run: "run".into(),
                dataset_type: "bias".into(),
                datasets: vec![NewDataset {
                    id,
                    data_id,
                    stored: None,
                }],
            }],
            tags: vec![],
            calibs: vec![("calib".into(), vec![(id, 1.0, 2.0)])],
            provenance: None,
        };
        let first = r.import_batch(&batch).unwrap();
        assert_eq!(
            (first.records, first.datasets, first.associations),
            (2, 1, 1)
        );
        let second = r.import_batch(&batch).unwrap();
        assert_eq!(
            second,
            ImportStats {
                datasets_present: 1,
                ..ImportStats::default()
            }
        );
        // A conflicting calibration range fails the whole batch.
        batch
            .collections
            .push(("late".into(), CollectionType::Run, None));
        batch.calibs[0].1.push((id, 1.5, 3.0));
        assert!(r.import_batch(&batch).is_err());
        assert!(r.find_collection("late").unwrap().is_none());
        assert_eq!(r.calibration_ranges("calib").unwrap(), vec![(id, 1.0, 2.0)]);
    }

    fn foreign_keys_on(r: &Registry) -> bool {
        r.db.sqlite()
            .unwrap()
            .query_row("PRAGMA foreign_keys", [], |row| row.get::<_, i64>(0))
            .unwrap()
            == 1
    }

    #[test]
    fn per_row_foreign_keys_are_back_after_every_set_wise_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let universe = DimensionUniverse::default_universe();
        let mut r = Registry::create(&dir.path().join("r.sqlite3"), &universe).unwrap();
        let records: RecordSet = serde_json::from_str(
            r#"{"instrument": [{"name": "Cam"}], "detector": [{"instrument": "Cam", "id": 1}]}"#,
        )
        .unwrap();
        let dt = DatasetType {
            name: "bias".into(),
            dimensions: universe.conform(&["instrument", "detector"]).unwrap(),
            storage_class: "Json".into(),
            is_calibration: false,
        };
        let dataset = |d: i64| NewDataset {
            id: Uuid::now_v7(),
            data_id: DataId::from_pairs([
                ("instrument", quanta_core::DataIdValue::from("Cam")),
                ("detector", quanta_core::DataIdValue::Int(d)),
            ]),
            stored: None,
        };
        let batch = |d: i64, orphan: bool| {
            let mut records = records.clone();
            if orphan {
                records.insert(
                    "exposure".into(),
                    vec![serde_json::from_str(
                        r#"{"instrument": "Cam", "id": 1, "physical_filter": "nope"}"#,
                    )
                    .unwrap()],
                );
            }
            ImportBatch {
                records,
                dataset_types: vec![dt.clone()],
                collections: vec![("run".into(), CollectionType::Run, None)],
                datasets: vec![ImportDatasets {
                    run: "run".into(),
                    dataset_type: "bias".into(),
                    datasets: vec![dataset(d)],
                }],
                ..ImportBatch::default()
            }
        };
        // Refused before the commit (a missing detector), at the commit (a
        // record without its parent), and committed.
        assert!(r.import_batch(&batch(2, false)).is_err());
        assert!(foreign_keys_on(&r));
        let err = r.import_batch(&batch(1, true)).unwrap_err();
        assert_eq!(
            err.constraint(),
            Some(ConstraintViolation::ForeignKey),
            "{err}"
        );
        assert!(err.to_string().contains("physical_filter"), "{err}");
        assert!(foreign_keys_on(&r));
        r.import_batch(&batch(1, false)).unwrap();
        assert!(foreign_keys_on(&r));
        assert!(r
            .insert_datasets("run", "bias", &[dataset(3)], crate::OnConflict::Fail)
            .is_err());
        assert!(foreign_keys_on(&r));
        r.insert_datasets(
            "run",
            "bias",
            &[dataset(1)],
            crate::OnConflict::SkipExistingId,
        )
        .unwrap_err();
        assert!(foreign_keys_on(&r));
        // A set-wise transaction cannot start inside another one.
        let tx = r.db.transaction().unwrap();
        assert!(tx.begin_set_wise().is_err());
        drop(tx);
        assert!(foreign_keys_on(&r));
    }
}
