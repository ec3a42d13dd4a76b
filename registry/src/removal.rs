//! The registry's half of removal: the trash of the removal protocol, the
//! memory of removed datasets that provenance still names, and the
//! removals that touch no file (collections other than RUNs, tags,
//! calibration validity ranges, dataset types).
//!
//! # The protocol
//!
//! Removing datasets with files takes three steps, and the butler
//! (`quanta_butler`'s `remove` module) drives them:
//!
//! 1. [`Registry::mark_runs_for_removal`] or
//!    [`Registry::mark_datasets_for_removal`]: one transaction records
//!    what goes (`removal_run`, `dataset_trash`; see
//!    [`crate::schema::removal_ddl`]). Nothing else changes.
//! 2. The caller unlinks the files of [`Registry::pending_removal_files`].
//! 3. [`Registry::complete_removals`]: one transaction deletes (or, for an
//!    unstore, clears the datastore record of) every trashed dataset and
//!    every RUN being removed with its quanta, and empties the trash.
//!
//! A dataset row therefore points at a missing file only while it is in
//! the trash, and a file leaves the datastore only after its dataset is
//! in the trash: a process killed anywhere leaves a trash that step 2 and
//! 3, run again by anyone, finish.

use quanta_core::{CollectionType, DataId, DatasetRef, Uuid};
use serde::Serialize;

use crate::database::Database;
use crate::datasets::data_id_from_stored;
use crate::error::{RegistryError, Result};
use crate::registry::Registry;

/// Removals recorded and not yet completed (an interrupted command's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PendingRemovals {
    /// RUNs being removed with their datasets.
    pub runs: Vec<String>,
    /// Datasets in the trash on their own (prune).
    pub datasets: u64,
}

impl PendingRemovals {
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.datasets == 0
    }
}

/// What [`Registry::complete_removals`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RemovalStats {
    /// The RUN collections removed.
    pub runs: Vec<String>,
    /// Dataset rows deleted.
    pub datasets_removed: u64,
    /// Datasets kept without their file (unstore).
    pub datasets_unstored: u64,
    /// Quanta deleted with their RUN.
    pub quanta_removed: u64,
}

/// A registered dataset file, as `repo check` verifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredFile {
    pub path: String,
    pub size: u64,
    pub checksum: String,
    /// In the trash: its file may already be gone.
    pub pending_removal: bool,
}

/// A dataset removed while recorded provenance names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemovedDataset {
    #[serde(flatten)]
    pub dataset_ref: DatasetRef,
    /// The quantum that made it, if recorded.
    pub producer: Option<Uuid>,
    pub producer_connection: Option<String>,
    /// When it was removed (RFC 3339).
    pub removed_at: String,
}

/// What [`Registry::decertify`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DecertifyStats {
    /// Validity ranges that overlapped `[begin, end)` and were removed.
    pub ranges_removed: usize,
    /// Parts of them outside `[begin, end)`, certified again.
    pub parts_kept: usize,
}

/// The CHAINED collections that name collection `id` as a child.
fn parents_of(db: &Database, id: i64) -> Result<Vec<String>> {
    db.query_rows(
        "SELECT DISTINCT p.name FROM collection_chain ch JOIN collection p ON p.id = ch.parent_id \
         WHERE ch.child_id = ?1 ORDER BY p.name",
        &[&id],
        |r| r.get(0),
    )
}

fn type_ids(db: &Database) -> Result<Vec<i64>> {
    db.query_rows("SELECT id FROM dataset_type ORDER BY id", &[], |r| r.get(0))
}

fn chained_refusal(name: &str, parents: &[String]) -> RegistryError {
    RegistryError::Conflict(format!(
        "collection `{name}` is a child of CHAINED collection(s) {}; remove it from them first, \
         or give --force to remove it from them too",
        parents
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

impl Registry {
    fn require_removal_tables(&self) -> Result<()> {
        if self.has_removal_tables {
            Ok(())
        } else {
            Err(RegistryError::Invalid(
                "this registry predates removal; open it for writing once (any writing command) to add its tables".into(),
            ))
        }
    }

    /// The CHAINED collections that name `name` as a direct child.
    pub fn chains_naming(&self, name: &str) -> Result<Vec<String>> {
        let record = self.collection(name)?;
        parents_of(&self.db, record.id)
    }

    /// Step 1 for RUNs: records, in one transaction, that `runs` are to be
    /// removed with every dataset they own. Each must be a RUN; one that a
    /// CHAINED collection names is refused unless `force`, which removes it
    /// from those chains in the same transaction. All or nothing; a RUN
    /// already marked (by an interrupted removal) is accepted as it is.
    pub fn mark_runs_for_removal(&mut self, runs: &[String], force: bool) -> Result<()> {
        self.require_removal_tables()?;
        let mut records = Vec::with_capacity(runs.len());
        for name in runs {
            records.push(self.collection_of_type(name, CollectionType::Run)?);
        }
        let tx = self.db.transaction()?;
        for record in &records {
            let parents = parents_of(&tx, record.id)?;
            if !parents.is_empty() {
                if !force {
                    return Err(chained_refusal(&record.name, &parents));
                }
                tx.execute(
                    "DELETE FROM collection_chain WHERE child_id = ?1",
                    &[&record.id],
                )?;
            }
            tx.execute(
                "INSERT INTO removal_run (run_id) VALUES (?1) ON CONFLICT DO NOTHING",
                &[&record.id],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Step 1 for single datasets: puts `ids` in the trash, in one
    /// transaction: with `purge`, the dataset goes with its file; without
    /// (unstore), only its file and datastore record go. Unknown UUIDs are
    /// refused; datasets without a file are skipped for an unstore. Returns
    /// how many were put in the trash.
    pub fn mark_datasets_for_removal(&mut self, ids: &[Uuid], purge: bool) -> Result<usize> {
        self.require_removal_tables()?;
        let tx = self.db.transaction()?;
        let mut n = 0;
        {
            let mut stored = tx.prepare("SELECT path IS NOT NULL FROM dataset WHERE id = ?1")?;
            let mut insert = tx.prepare(
                "INSERT INTO dataset_trash (dataset_id, purge) VALUES (?1, ?2) \
                 ON CONFLICT (dataset_id) DO UPDATE SET purge = (dataset_trash.purge OR excluded.purge)",
            )?;
            for id in ids {
                let mut has_file: Option<bool> = None;
                stored.for_each_row(&[id], |r| {
                    has_file = Some(r.get(0)?);
                    Ok(false)
                })?;
                match has_file {
                    None => return Err(RegistryError::Invalid(format!("no dataset {id}"))),
                    Some(false) if !purge => continue,
                    Some(_) => {}
                }
                insert.execute(&[id, &purge])?;
                n += 1;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// What interrupted removals left to do.
    pub fn pending_removals(&self) -> Result<PendingRemovals> {
        if !self.has_removal_tables {
            return Ok(PendingRemovals::default());
        }
        let runs = self.db.query_rows(
            "SELECT c.name FROM removal_run r JOIN collection c ON c.id = r.run_id ORDER BY c.name",
            &[],
            |r| r.get(0),
        )?;
        let datasets: i64 = self
            .db
            .query_row("SELECT count(*) FROM dataset_trash", &[], |r| r.get(0))?
            .unwrap_or(0);
        Ok(PendingRemovals {
            runs,
            datasets: datasets as u64,
        })
    }

    /// Step 2's list: the datastore paths of every dataset in the trash or
    /// in a RUN being removed (files that may already be gone).
    pub fn pending_removal_files(&self) -> Result<Vec<String>> {
        if !self.has_removal_tables {
            return Ok(Vec::new());
        }
        let mut paths: Vec<String> = self.db.query_rows(
            "SELECT d.path FROM dataset_trash tr JOIN dataset d ON d.id = tr.dataset_id \
             WHERE d.path IS NOT NULL",
            &[],
            |r| r.get(0),
        )?;
        let runs: Vec<i64> = self
            .db
            .query_rows("SELECT run_id FROM removal_run", &[], |r| r.get(0))?;
        // By type and RUN: the unique (type, RUN, data ID) index finds them.
        let types = type_ids(&self.db)?;
        let mut stmt = self.db.prepare(
            "SELECT path FROM dataset WHERE dataset_type_id = ?1 AND run_id = ?2 AND path IS NOT NULL",
        )?;
        for run in runs {
            for t in &types {
                stmt.for_each_row(&[t, &run], |r| {
                    paths.push(r.get(0)?);
                    Ok(true)
                })?;
            }
        }
        Ok(paths)
    }

    /// Step 3: in one transaction, deletes every trashed dataset (or clears
    /// its datastore record, for an unstore) and every RUN being removed
    /// with its datasets, quanta, run provenance and places in chains,
    /// then empties the trash. Datasets that recorded quanta read or made
    /// are remembered in `removed_dataset` first, and forgotten once no
    /// recorded quantum names them. Call only once the files of
    /// [`Registry::pending_removal_files`] are gone.
    pub fn complete_removals(&mut self) -> Result<RemovalStats> {
        self.require_removal_tables()?;
        let now = quanta_core::now_rfc3339();
        let tx = self.db.transaction()?;
        let mut stats = RemovalStats::default();
        const REMEMBER: &str = "INSERT INTO removed_dataset \
             (id, dataset_type, dimensions, run, data_id, producer, producer_connection, removed_at) \
             SELECT d.id, t.name, t.dimensions, c.name, d.data_id, d.producer, d.producer_connection, ?1 \
             FROM dataset d JOIN dataset_type t ON t.id = d.dataset_type_id \
             JOIN collection c ON c.id = d.run_id";
        // ON CONFLICT after the SELECT's last clause: a dataset already
        // remembered (by an interrupted removal) is kept as it was.
        tx.execute(
            &format!(
                "{REMEMBER} JOIN dataset_trash tr ON tr.dataset_id = d.id WHERE tr.purge \
                 AND (d.producer IS NOT NULL \
                      OR EXISTS (SELECT 1 FROM quantum_input i WHERE i.dataset_id = d.id)) \
                 ON CONFLICT DO NOTHING"
            ),
            &[&now],
        )?;
        stats.datasets_unstored = tx.execute(
            "UPDATE dataset SET path = NULL, formatter = NULL, size = NULL, checksum = NULL \
             WHERE id IN (SELECT dataset_id FROM dataset_trash WHERE NOT purge)",
            &[],
        )?;
        stats.datasets_removed = tx.execute(
            "DELETE FROM dataset WHERE id IN (SELECT dataset_id FROM dataset_trash WHERE purge)",
            &[],
        )?;
        tx.execute("DELETE FROM dataset_trash", &[])?;
        let runs: Vec<(i64, String)> = tx.query_rows(
            "SELECT r.run_id, c.name FROM removal_run r JOIN collection c ON c.id = r.run_id \
             ORDER BY c.name",
            &[],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let types = type_ids(&tx)?;
        for (run, name) in runs {
            // Only quanta of other RUNs outlive this one.
            tx.execute(
                &format!(
                    "{REMEMBER} WHERE d.run_id = ?2 AND EXISTS (SELECT 1 FROM quantum_input i \
                     JOIN quantum q ON q.id = i.quantum_id WHERE i.dataset_id = d.id AND q.run_id <> ?2) \
                     ON CONFLICT DO NOTHING"
                ),
                &[&now, &run],
            )?;
            let mut delete =
                tx.prepare("DELETE FROM dataset WHERE dataset_type_id = ?1 AND run_id = ?2")?;
            for t in &types {
                stats.datasets_removed += delete.execute(&[t, &run])?;
            }
            stats.quanta_removed += tx.execute("DELETE FROM quantum WHERE run_id = ?1", &[&run])?;
            tx.execute("DELETE FROM run_provenance WHERE run_id = ?1", &[&run])?;
            // A chain that named it since it was marked (the mark removed
            // it from those that did then, or was refused).
            tx.execute("DELETE FROM collection_chain WHERE child_id = ?1", &[&run])?;
            tx.execute("DELETE FROM removal_run WHERE run_id = ?1", &[&run])?;
            tx.execute("DELETE FROM collection WHERE id = ?1", &[&run])?;
            stats.runs.push(name);
        }
        tx.execute(
            "DELETE FROM removed_dataset WHERE \
             NOT EXISTS (SELECT 1 FROM quantum_input i WHERE i.dataset_id = removed_dataset.id) \
             AND NOT EXISTS (SELECT 1 FROM quantum q WHERE q.id = removed_dataset.producer)",
            &[],
        )?;
        tx.commit()?;
        self.committed();
        Ok(stats)
    }

    /// Every dataset file the registry records, for `repo check`.
    pub fn registered_files(&self) -> Result<Vec<RegisteredFile>> {
        let sql = if self.has_removal_tables {
            "SELECT d.path, d.size, d.checksum, \
               (EXISTS (SELECT 1 FROM dataset_trash tr WHERE tr.dataset_id = d.id) \
                OR EXISTS (SELECT 1 FROM removal_run r WHERE r.run_id = d.run_id)) \
             FROM dataset d WHERE d.path IS NOT NULL"
        } else {
            "SELECT path, size, checksum, 0 FROM dataset WHERE path IS NOT NULL"
        };
        self.db.query_rows(sql, &[], |r| {
            Ok(RegisteredFile {
                path: r.get(0)?,
                size: r.get::<i64>(1)? as u64,
                checksum: r.get(2)?,
                pending_removal: r.get(3)?,
            })
        })
    }

    /// A dataset removed while recorded provenance named it.
    pub fn removed_dataset(&self, id: &Uuid) -> Result<Option<RemovedDataset>> {
        if !self.has_removal_tables {
            return Ok(None);
        }
        let row = self.db.query_row(
            "SELECT dataset_type, dimensions, run, data_id, producer, producer_connection, removed_at \
             FROM removed_dataset WHERE id = ?1",
            &[id],
            |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<String>(1)?,
                    r.get::<String>(2)?,
                    r.get::<String>(3)?,
                    r.get::<Option<Uuid>>(4)?,
                    r.get::<Option<String>>(5)?,
                    r.get::<String>(6)?,
                ))
            },
        )?;
        let Some((dataset_type, dims, run, values, producer, producer_connection, removed_at)) =
            row
        else {
            return Ok(None);
        };
        Ok(Some(RemovedDataset {
            dataset_ref: DatasetRef {
                id: *id,
                dataset_type,
                data_id: data_id_from_stored(&dims, &values)?,
                run,
            },
            producer,
            producer_connection,
            removed_at,
        }))
    }

    /// Removes a TAGGED, CHAINED or CALIBRATION collection (its tags,
    /// validity ranges or chain go with it; the datasets stay), in one
    /// transaction. A collection that a CHAINED collection names is
    /// refused unless `force`, which removes it from those chains too. A
    /// RUN is refused here: its datasets have files (see the butler).
    pub fn remove_collection(&mut self, name: &str, force: bool) -> Result<CollectionType> {
        let record = self.collection(name)?;
        if record.collection_type == CollectionType::Run {
            return Err(RegistryError::Invalid(format!(
                "`{name}` is a RUN: remove it with its datasets (quanta remove-runs)"
            )));
        }
        let tx = self.db.transaction()?;
        let parents = parents_of(&tx, record.id)?;
        if !parents.is_empty() && !force {
            return Err(chained_refusal(name, &parents));
        }
        tx.execute(
            "DELETE FROM collection_chain WHERE child_id = ?1",
            &[&record.id],
        )?;
        tx.execute("DELETE FROM collection WHERE id = ?1", &[&record.id])?;
        tx.commit()?;
        Ok(record.collection_type)
    }

    /// Removes datasets from a TAGGED collection (the datasets stay), in
    /// one transaction; returns how many were in it.
    pub fn disassociate(&mut self, tagged: &str, ids: &[Uuid]) -> Result<usize> {
        let collection = self.collection_of_type(tagged, CollectionType::Tagged)?;
        let tx = self.db.transaction()?;
        let mut n = 0;
        {
            let mut stmt = tx
                .prepare("DELETE FROM dataset_tags WHERE collection_id = ?1 AND dataset_id = ?2")?;
            for id in ids {
                n += stmt.execute(&[&collection.id, id])? as usize;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// Decertifies datasets of `dataset_type` in CALIBRATION collection
    /// `calibration` over `[begin, end)` (MJD; infinities for open ends),
    /// for the given data IDs (every data ID when empty), in one
    /// transaction. As LSST's `decertify`: a validity range inside
    /// `[begin, end)` is removed; one that overlaps it partly is cut, and
    /// its parts outside `[begin, end)` stay certified.
    pub fn decertify(
        &mut self,
        calibration: &str,
        dataset_type: &str,
        begin: f64,
        end: f64,
        data_ids: &[DataId],
    ) -> Result<DecertifyStats> {
        let collection = self.collection_of_type(calibration, CollectionType::Calibration)?;
        if begin.is_nan() || end.is_nan() || begin >= end {
            return Err(RegistryError::Invalid(format!(
                "validity range [{begin}, {end}) is empty"
            )));
        }
        let dt = self.dataset_type_required(dataset_type)?;
        let type_id = self.dataset_type_id(dataset_type)?;
        let mut keys = data_ids
            .iter()
            .map(|d| {
                Ok(d.standardize(&dt.dimensions, &self.universe)?
                    .canonical_key())
            })
            .collect::<Result<Vec<String>>>()?;
        keys.sort();
        keys.dedup();
        let tx = self.db.transaction()?;
        let mut stats = DecertifyStats::default();
        {
            const OVERLAPPING: &str = "SELECT dataset_id, data_id, valid_begin, valid_end \
                 FROM dataset_calibs WHERE collection_id = ?1 AND dataset_type_id = ?2 \
                 AND valid_begin < ?4 AND ?3 < valid_end";
            let mut rows: Vec<(Uuid, String, f64, f64)> = Vec::new();
            let mut read = |r: &crate::database::Row<'_>| {
                rows.push((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?));
                Ok(true)
            };
            if keys.is_empty() {
                tx.for_each_row(
                    OVERLAPPING,
                    &[&collection.id, &type_id, &begin, &end],
                    &mut read,
                )?;
            } else {
                let mut select = tx.prepare(&format!("{OVERLAPPING} AND data_id = ?5"))?;
                for key in &keys {
                    select
                        .for_each_row(&[&collection.id, &type_id, &begin, &end, key], &mut read)?;
                }
            }
            // A dataset's ranges in one collection never overlap, so its
            // begin names one range.
            let mut delete = tx.prepare(
                "DELETE FROM dataset_calibs WHERE collection_id = ?1 AND dataset_id = ?2 \
                 AND valid_begin = ?3",
            )?;
            let mut insert = tx.prepare(
                "INSERT INTO dataset_calibs (collection_id, dataset_id, dataset_type_id, data_id, valid_begin, valid_end) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (id, data_id, vb, ve) in rows {
                delete.execute(&[&collection.id, &id, &vb])?;
                stats.ranges_removed += 1;
                for (b, e) in [(vb, begin), (end, ve)] {
                    if b < e {
                        insert.execute(&[&collection.id, &id, &type_id, &data_id, &b, &e])?;
                        stats.parts_kept += 1;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(stats)
    }

    /// Removes a dataset type; refused while any dataset of it exists.
    pub fn remove_dataset_type(&mut self, name: &str) -> Result<()> {
        let type_id = self.dataset_type_id(name)?;
        let tx = self.db.transaction()?;
        let runs: Vec<(String, i64)> = tx.query_rows(
            "SELECT c.name, count(*) FROM dataset d JOIN collection c ON c.id = d.run_id \
             WHERE d.dataset_type_id = ?1 GROUP BY c.name ORDER BY c.name",
            &[&type_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if !runs.is_empty() {
            let total: i64 = runs.iter().map(|(_, n)| n).sum();
            let listed: Vec<String> = runs
                .iter()
                .take(5)
                .map(|(run, n)| format!("{n} in `{run}`"))
                .collect();
            return Err(RegistryError::Conflict(format!(
                "dataset type `{name}` still has {total} datasets ({}{}); remove them first \
                 (quanta prune-datasets --purge, or quanta remove-runs)",
                listed.join(", "),
                if runs.len() > 5 { ", …" } else { "" }
            )));
        }
        tx.execute("DELETE FROM dataset_type WHERE id = ?1", &[&type_id])?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DatastoreRecord, NewDataset, OnConflict};
    use quanta_core::{DataIdValue, DatasetType, DimensionGroup, DimensionUniverse};

    fn registry(dir: &std::path::Path) -> Registry {
        let universe = DimensionUniverse::default_universe();
        let mut r = Registry::create(&dir.join("r.sqlite3"), &universe).unwrap();
        let records = crate::parse_records_json(
            r#"{"instrument": [{"name": "Cam", "detector_max": 4}],
                "detector": [{"instrument": "Cam", "id": 0, "full_name": "D0"},
                             {"instrument": "Cam", "id": 1, "full_name": "D1"}]}"#,
            "test",
        )
        .unwrap();
        r.insert_dimension_records(&records).unwrap();
        r.register_dataset_type(&DatasetType {
            name: "bias".into(),
            dimensions: DimensionGroup {
                names: vec!["instrument".into(), "detector".into()],
            },
            storage_class: "Json".into(),
            is_calibration: true,
        })
        .unwrap();
        r.register_collection("run", CollectionType::Run, None)
            .unwrap();
        let datasets: Vec<NewDataset> = (0..2)
            .map(|d| NewDataset {
                id: Uuid::from_u128(d as u128 + 1),
                data_id: DataId::from_pairs([
                    ("instrument", DataIdValue::from("Cam")),
                    ("detector", DataIdValue::Int(d)),
                ]),
                stored: Some(DatastoreRecord {
                    path: format!("run/bias/{d}.json"),
                    formatter: "json".into(),
                    size: 2,
                    checksum: "00".into(),
                }),
            })
            .collect();
        r.insert_datasets("run", "bias", &datasets, OnConflict::Fail)
            .unwrap();
        r
    }

    #[test]
    fn a_run_is_marked_then_removed_and_a_chained_one_only_with_force() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry(dir.path());
        r.define_collection_chain("chain", &["run".to_string()])
            .unwrap();
        let refused = r.mark_runs_for_removal(&["run".into()], false);
        assert!(
            matches!(refused, Err(RegistryError::Conflict(_))),
            "{refused:?}"
        );
        assert!(r.pending_removals().unwrap().is_empty());
        r.mark_runs_for_removal(&["run".into()], true).unwrap();
        // Marking twice (a rerun) changes nothing; the rows are still there.
        r.mark_runs_for_removal(&["run".into()], true).unwrap();
        assert_eq!(r.pending_removals().unwrap().runs, vec!["run".to_string()]);
        let mut files = r.pending_removal_files().unwrap();
        files.sort();
        assert_eq!(files, vec!["run/bias/0.json", "run/bias/1.json"]);
        assert!(r
            .registered_files()
            .unwrap()
            .iter()
            .all(|f| f.pending_removal));
        let stats = r.complete_removals().unwrap();
        assert_eq!((stats.runs.len(), stats.datasets_removed), (1, 2));
        assert!(r.pending_removals().unwrap().is_empty());
        assert!(r.find_collection("run").unwrap().is_none());
        assert!(r.collection("chain").unwrap().children.is_empty());
        // Nothing recorded used them: provenance keeps nothing.
        assert!(r.removed_dataset(&Uuid::from_u128(1)).unwrap().is_none());
        r.remove_dataset_type("bias").unwrap();
    }

    #[test]
    fn unstore_keeps_the_row_without_its_record_and_types_in_use_stay() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry(dir.path());
        let id = Uuid::from_u128(1);
        assert_eq!(r.mark_datasets_for_removal(&[id], false).unwrap(), 1);
        assert_eq!(r.pending_removal_files().unwrap(), vec!["run/bias/0.json"]);
        let stats = r.complete_removals().unwrap();
        assert_eq!((stats.datasets_unstored, stats.datasets_removed), (1, 0));
        assert!(r
            .dataset_by_id(&id, None)
            .unwrap()
            .unwrap()
            .stored
            .is_none());
        // Without a file, an unstore has nothing to do.
        assert_eq!(r.mark_datasets_for_removal(&[id], false).unwrap(), 0);
        let unknown = r.mark_datasets_for_removal(&[Uuid::from_u128(9)], true);
        assert!(matches!(unknown, Err(RegistryError::Invalid(_))));
        let in_use = r.remove_dataset_type("bias");
        assert!(
            matches!(&in_use, Err(RegistryError::Conflict(m)) if m.contains("2 datasets")),
            "{in_use:?}"
        );
    }

    #[test]
    fn a_purge_marked_after_an_unstore_of_the_same_dataset_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry(dir.path());
        let id = Uuid::from_u128(1);
        assert_eq!(r.mark_datasets_for_removal(&[id], false).unwrap(), 1);
        assert_eq!(r.mark_datasets_for_removal(&[id], true).unwrap(), 1);
        // And an unstore marked after a purge does not weaken it.
        assert_eq!(r.mark_datasets_for_removal(&[id], false).unwrap(), 1);
        assert_eq!(r.pending_removals().unwrap().datasets, 1);
        let stats = r.complete_removals().unwrap();
        assert_eq!((stats.datasets_removed, stats.datasets_unstored), (1, 0));
        assert!(r.dataset_by_id(&id, None).unwrap().is_none());
    }

    #[test]
    fn decertify_removes_inner_ranges_and_cuts_overlapping_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry(dir.path());
        r.register_collection("calib", CollectionType::Calibration, None)
            .unwrap();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        r.certify("calib", &[a], 0.0, 10.0).unwrap();
        r.certify("calib", &[a], 20.0, 30.0).unwrap();
        r.certify("calib", &[b], f64::NEG_INFINITY, f64::INFINITY)
            .unwrap();
        let stats = r.decertify("calib", "bias", 5.0, 25.0, &[]).unwrap();
        assert_eq!(stats.ranges_removed, 3);
        assert_eq!(stats.parts_kept, 4);
        let ranges: Vec<(String, f64, f64)> = r
            .db
            .query_rows(
                "SELECT data_id, valid_begin, valid_end FROM dataset_calibs ORDER BY data_id, valid_begin",
                &[],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .unwrap();
        let (d0, d1) = (r#"["Cam",0]"#.to_string(), r#"["Cam",1]"#.to_string());
        assert_eq!(
            ranges,
            vec![
                (d0.clone(), 0.0, 5.0),
                (d0, 25.0, 30.0),
                (d1.clone(), f64::NEG_INFINITY, 5.0),
                (d1, 25.0, f64::INFINITY),
            ]
        );
        let empty = r.decertify("calib", "bias", 3.0, 3.0, &[]);
        assert!(matches!(empty, Err(RegistryError::Invalid(_))));
    }
}
