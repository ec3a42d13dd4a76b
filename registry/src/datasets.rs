//! Dataset types, datasets, their collection membership and datastore
//! records.

use quanta_core::{
    CollectionType, DataId, DataIdValue, DatasetRef, DatasetType, DimensionGroup, Uuid,
};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

use crate::collections::CollectionRecord;
use crate::collections::Membership;
use crate::database::bulk::RowValues;
use crate::database::{BulkInsert, Database, Param, Row, ValueRef};
use crate::dialect::Parameters;
use crate::error::{ConstraintViolation, RegistryError, Result};
use crate::registry::Registry;
use crate::schema::{quote, record_exists_query};

/// Where and how a dataset's file is stored, as the registry records it. The
/// registry does not interpret these; the datastore does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatastoreRecord {
    pub path: String,
    pub formatter: String,
    pub size: u64,
    pub checksum: String,
}

/// A dataset to insert: its UUID (assigned by the caller: at preflight for
/// pipeline outputs, at ingest otherwise), data ID and optional file record.
#[derive(Debug, Clone)]
pub struct NewDataset {
    pub id: Uuid,
    pub data_id: DataId,
    pub stored: Option<DatastoreRecord>,
}

/// What to do when a dataset with the same UUID is already registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    Fail,
    /// Keep the existing row (for idempotent merges). A *different* dataset
    /// with the same type, run and data ID is still an error.
    SkipExistingId,
}

/// Statistics of an insert.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertStats {
    pub inserted: usize,
    pub skipped: usize,
}

/// A dataset found by a lookup or query, with its file record if any.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoundDataset {
    #[serde(flatten)]
    pub dataset_ref: DatasetRef,
    /// The collection it was found through (a RUN, TAGGED or CALIBRATION).
    pub collection: String,
    pub stored: Option<DatastoreRecord>,
}

/// The dataset table's record columns (path, formatter, size, checksum) of
/// a dataset, NULL for one without a file; in the order of
/// [`RECORD_COLUMNS`].
pub(crate) fn record_values(stored: Option<&DatastoreRecord>) -> [ValueRef<'_>; 4] {
    match stored {
        Some(r) => [
            ValueRef::Text(&r.path),
            ValueRef::Text(&r.formatter),
            ValueRef::Integer(r.size.min(i64::MAX as u64) as i64),
            ValueRef::Text(&r.checksum),
        ],
        None => [ValueRef::Null; 4],
    }
}

/// The dataset table's datastore-record columns, as [`record_values`] binds them.
pub(crate) const RECORD_COLUMNS: &str = "path, formatter, size, checksum";

/// Adds a dataset to a TAGGED collection (?1: the collection, ?2: the
/// dataset); nothing when it is already there.
pub(crate) const TAG_SQL: &str =
    "INSERT INTO dataset_tags (collection_id, dataset_id, dataset_type_id, data_id) \
     SELECT ?1, id, dataset_type_id, data_id FROM dataset WHERE id = ?2 \
     ON CONFLICT (collection_id, dataset_id) DO NOTHING";

/// Certifies a dataset of a calibration dataset type into a CALIBRATION
/// collection (?1: the collection, ?2: the dataset, [?3, ?4): the
/// validity range); no row when the dataset is not of such a type.
pub(crate) const CERTIFY_SQL: &str = "INSERT INTO dataset_calibs \
     (collection_id, dataset_id, dataset_type_id, data_id, valid_begin, valid_end) \
     SELECT ?1, d.id, d.dataset_type_id, d.data_id, ?3, ?4 FROM dataset d \
     JOIN dataset_type t ON t.id = d.dataset_type_id WHERE d.id = ?2 AND t.is_calibration";

/// The insert of datasets of one type into one RUN, with their file
/// records and dimension columns: many rows a statement (`COPY` on
/// PostgreSQL, where a statement per row is a round trip per dataset),
/// rows whose UUID or data ID is taken skipped and then explained.
pub(crate) struct DatasetInsert {
    insert: BulkInsert,
    type_id: i64,
    run_id: i64,
    /// The ingest date of the whole batch.
    now: String,
}

/// Why a dataset was not inserted, when it is not already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InsertConflict {
    /// Another dataset of the type holds the data ID in the RUN.
    DataIdTaken,
    /// The UUID is registered for a different dataset.
    IdTaken,
}

/// What [`DatasetInsert::insert_all`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct InsertCounts {
    pub(crate) inserted: usize,
    /// Datasets registered before, as they are (UUID, type, RUN, data ID).
    pub(crate) already_present: usize,
}

/// One dataset row of an insert: what it binds, borrowed from the caller.
struct InsertRow<'a> {
    /// Position in the caller's slice.
    index: usize,
    dataset: &'a NewDataset,
    data_id: &'a DataId,
    key: String,
}

impl DatasetInsert {
    pub(crate) fn new(db: &Database, dt: &DatasetType, type_id: i64, run_id: i64) -> Self {
        let dims = &dt.dimensions.names;
        let columns = format!(
            "dataset (id, dataset_type_id, run_id, data_id, ingest_date, {RECORD_COLUMNS}{})",
            dims.iter()
                .map(|d| format!(", {}", quote(d)))
                .collect::<String>(),
        );
        Self {
            insert: BulkInsert::new(db, &columns, 9 + dims.len()),
            type_id,
            run_id,
            now: quanta_core::now_rfc3339(),
        }
    }

    /// Inserts `datasets`, whose data IDs (`data_ids`, in the same order)
    /// are standardized for the type, and counts those already there;
    /// `conflict(index, why)` is called for each that is neither, and its
    /// error ends the insert.
    pub(crate) fn insert_all(
        &self,
        db: &Database,
        datasets: &[NewDataset],
        data_ids: &[Cow<'_, DataId>],
        mut conflict: impl FnMut(usize, InsertConflict) -> Result<()>,
    ) -> Result<InsertCounts> {
        let rows: Vec<InsertRow<'_>> = datasets
            .iter()
            .zip(data_ids)
            .enumerate()
            .map(|(index, (dataset, data_id))| InsertRow {
                index,
                dataset,
                data_id,
                key: data_id.canonical_key(),
            })
            .collect();
        let mut counts = InsertCounts::default();
        let mut holder = None;
        self.insert.run(
            db,
            &rows,
            |sink, row| self.bind(sink, row),
            |chunk, changed| {
                counts.inserted += changed;
                if changed == chunk.len() {
                    return Ok(());
                }
                let holder = match &mut holder {
                    Some(stmt) => stmt,
                    None => holder.insert(db.prepare(
                        "SELECT dataset_type_id, run_id, data_id FROM dataset WHERE id = ?1",
                    )?),
                };
                // The rows found as they are were inserted now or before;
                // the statement says how many now.
                let mut as_they_are = 0;
                for row in chunk {
                    let mut found: Option<(i64, i64, String)> = None;
                    holder.for_each_row(&[&row.dataset.id], |r| {
                        found = Some((r.get(0)?, r.get(1)?, r.get(2)?));
                        Ok(false)
                    })?;
                    match found {
                        Some((t, r, key))
                            if t == self.type_id && r == self.run_id && key == row.key =>
                        {
                            as_they_are += 1
                        }
                        Some(_) => conflict(row.index, InsertConflict::IdTaken)?,
                        None => conflict(row.index, InsertConflict::DataIdTaken)?,
                    }
                }
                counts.already_present += as_they_are - changed.min(as_they_are);
                Ok(())
            },
        )?;
        Ok(counts)
    }

    /// A row's values, in the order of the insert's columns.
    fn bind<'r>(&'r self, sink: &mut RowValues<'_, '_, 'r>, row: &'r InsertRow<'_>) -> Result<()> {
        sink.push(ValueRef::Blob(row.dataset.id.as_bytes()))?;
        sink.push(ValueRef::Integer(self.type_id))?;
        sink.push(ValueRef::Integer(self.run_id))?;
        sink.push(ValueRef::Text(&row.key))?;
        sink.push(ValueRef::Text(&self.now))?;
        for value in record_values(row.dataset.stored.as_ref()) {
            sink.push(value)?;
        }
        for (_, value) in row.data_id.iter() {
            sink.push(value.value())?;
        }
        Ok(())
    }
}

/// A record that refers to a registered dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetUse {
    pub dataset_id: Uuid,
    /// What uses it, in words (the consuming quantum, or the collection).
    pub usage: String,
}

impl Registry {
    /// The records that refer to any of `ids`, datasets of RUN `run` that
    /// a `--clobber` bundle replaces, and would be left pointing at nothing:
    /// TAGGED or CALIBRATION membership, an input link of a recorded
    /// quantum of another RUN, or of a quantum of `run` that the bundle does
    /// not supersede (one with an output outside `ids`).
    pub fn dataset_uses(&self, ids: &[Uuid], run: &str) -> Result<Vec<DatasetUse>> {
        let mut uses = Vec::new();
        if ids.is_empty() {
            return Ok(uses);
        }
        let replaced: std::collections::HashSet<Uuid> = ids.iter().copied().collect();
        // Membership tables are small next to the datasets; one pass each.
        let mut members: std::collections::HashMap<Uuid, String> = Default::default();
        for (table, kind) in [
            ("dataset_tags", "TAGGED"),
            ("dataset_calibs", "CALIBRATION"),
        ] {
            self.db.for_each_row(
                &format!(
                    "SELECT m.dataset_id, c.name FROM {table} m JOIN collection c ON c.id = m.collection_id"
                ),
                &[],
                |r| {
                    let collection: String = r.get(1)?;
                    members
                        .entry(r.get(0)?)
                        .or_insert_with(|| format!("it is in {kind} collection `{collection}`"));
                    Ok(true)
                },
            )?;
        }
        let mut consumers = self.db.prepare(
            "SELECT q.id, q.task_label, q.data_id, c.name FROM quantum_input i \
             JOIN quantum q ON q.id = i.quantum_id JOIN collection c ON c.id = q.run_id \
             WHERE i.dataset_id = ?1",
        )?;
        let mut outputs = self
            .db
            .prepare("SELECT id FROM dataset WHERE producer = ?1")?;
        for id in ids {
            let mut usage = members.get(id).cloned();
            let found = consumers.query_rows(&[id], |r| {
                Ok((
                    r.get::<Uuid>(0)?,
                    r.get::<String>(1)?,
                    r.get::<String>(2)?,
                    r.get::<String>(3)?,
                ))
            })?;
            for (quantum, task, data_id, consumer_run) in found {
                if usage.is_some() {
                    break;
                }
                if consumer_run != run {
                    usage = Some(format!(
                        "it is an input of quantum {task} {data_id} recorded in RUN `{consumer_run}`"
                    ));
                    continue;
                }
                let made: Vec<Uuid> = outputs.query_rows(&[&quantum], |r| r.get(0))?;
                if let Some(kept) = made.iter().find(|o| !replaced.contains(o)) {
                    usage = Some(format!(
                        "it is an input of quantum {task} {data_id}, whose output {kept} this bundle does not replace (include that task)"
                    ));
                }
            }
            if let Some(usage) = usage {
                uses.push(DatasetUse {
                    dataset_id: *id,
                    usage,
                });
            }
        }
        Ok(uses)
    }

    /// Registers a dataset type; an identical existing definition is a no-op
    /// (`false`), a conflicting one an error naming both.
    pub fn register_dataset_type(&mut self, dataset_type: &DatasetType) -> Result<bool> {
        self.register_dataset_type_in_tx(dataset_type)
    }

    pub fn dataset_type(&self, name: &str) -> Result<Option<DatasetType>> {
        self.db.query_row(
            "SELECT name, dimensions, storage_class, is_calibration FROM dataset_type WHERE name = ?1",
            &[&name],
            row_to_dataset_type,
        )
    }

    /// Resolves a dataset type name as every command takes it: a
    /// registered type, or `parent.component` (`calexp.wcs`) where the
    /// parent is registered and its storage class has that component.
    /// Returns the parent's definition and the component, if any.
    pub fn resolve_dataset_type(&self, name: &str) -> Result<(DatasetType, Option<String>)> {
        if let Some(dt) = self.dataset_type(name)? {
            return Ok((dt, None));
        }
        let (parent, component) = quanta_core::split_component(name);
        let Some(component) = component else {
            return Err(RegistryError::UnknownDatasetType(name.to_string()));
        };
        let Some(dt) = self.dataset_type(parent)? else {
            return Err(RegistryError::UnknownDatasetType(format!(
                "{name} (no dataset type `{parent}` to be a component of)"
            )));
        };
        quanta_core::StorageClasses::builtin()
            .component_class(&dt.storage_class, component)
            .map_err(|e| {
                RegistryError::UnknownDatasetType(format!("{name} (`{parent}` is {dt}: {e})"))
            })?;
        Ok((dt, Some(component.to_string())))
    }

    pub fn dataset_type_required(&self, name: &str) -> Result<DatasetType> {
        self.dataset_type(name)?
            .ok_or_else(|| RegistryError::UnknownDatasetType(name.to_string()))
    }

    pub fn list_dataset_types(&self) -> Result<Vec<DatasetType>> {
        self.db.query_rows(
            "SELECT name, dimensions, storage_class, is_calibration FROM dataset_type ORDER BY name",
            &[],
            row_to_dataset_type,
        )
    }

    pub(crate) fn dataset_type_id(&self, name: &str) -> Result<i64> {
        self.db
            .query_row(
                "SELECT id FROM dataset_type WHERE name = ?1",
                &[&name],
                |r| r.get(0),
            )?
            .ok_or_else(|| RegistryError::UnknownDatasetType(name.to_string()))
    }

    /// Inserts datasets of one type into a RUN, with their datastore records,
    /// in one transaction (all or nothing).
    ///
    /// This is the hot write path of ingest, so its transaction checks
    /// foreign keys set-wise (`Registry::insert_dataset_rows`).
    pub fn insert_datasets(
        &mut self,
        run: &str,
        dataset_type: &str,
        datasets: &[NewDataset],
        on_conflict: OnConflict,
    ) -> Result<InsertStats> {
        let tx = self.db.transaction_set_wise()?;
        let stats =
            self.insert_datasets_in_transaction(run, dataset_type, datasets, on_conflict)?;
        tx.commit()
            .map_err(|e| explain_foreign_key(e, dataset_type, run))?;
        Ok(stats)
    }

    /// Like [`Registry::insert_datasets`], but leaves the transaction
    /// open: later calls add to it until [`Registry::commit_open`] (an
    /// ingest of millions of files registers them a chunk at a time and
    /// commits every million). On error the open transaction is rolled
    /// back whole.
    pub fn insert_datasets_uncommitted(
        &mut self,
        run: &str,
        dataset_type: &str,
        datasets: &[NewDataset],
        on_conflict: OnConflict,
    ) -> Result<InsertStats> {
        if !self.db.in_transaction() {
            self.db.begin_set_wise()?;
        }
        let result = self.insert_datasets_in_transaction(run, dataset_type, datasets, on_conflict);
        if result.is_err() {
            let _ = self.db.rollback();
        }
        result
    }

    /// Commits what the `_uncommitted` calls wrote
    /// ([`Registry::insert_datasets_uncommitted`],
    /// [`Registry::record_quanta_uncommitted`]); a no-op without an open
    /// transaction. On error the transaction is rolled back.
    pub fn commit_open(&mut self) -> Result<()> {
        if !self.db.in_transaction() {
            return Ok(());
        }
        let committed = self.db.commit();
        if committed.is_err() && self.db.in_transaction() {
            let _ = self.db.rollback();
        }
        committed?;
        self.committed();
        Ok(())
    }

    /// Rolls back what the `_uncommitted` calls wrote; a no-op without an
    /// open transaction.
    pub fn rollback_open(&mut self) -> Result<()> {
        if !self.db.in_transaction() {
            return Ok(());
        }
        self.db.rollback()
    }

    fn insert_datasets_in_transaction(
        &self,
        run: &str,
        dataset_type: &str,
        datasets: &[NewDataset],
        on_conflict: OnConflict,
    ) -> Result<InsertStats> {
        let run_record = self.collection_of_type(run, CollectionType::Run)?;
        let dt = self.dataset_type_required(dataset_type)?;
        let counts = self
            .insert_dataset_rows(&dt, &run_record, datasets, |i, data_id, why| {
                Err(RegistryError::Conflict(match why {
                    InsertConflict::DataIdTaken => {
                        format!("{dataset_type} {data_id} already exists in RUN {run}")
                    }
                    InsertConflict::IdTaken => format!(
                        "{dataset_type} {data_id}: its UUID {} is already registered for another dataset",
                        datasets[i].id
                    ),
                }))
            })
            .map_err(|e| explain_foreign_key(e, dataset_type, run))?;
        if on_conflict == OnConflict::Fail && counts.already_present > 0 {
            return Err(RegistryError::Conflict(format!(
                "{} of these {dataset_type} datasets are already registered in RUN {run}",
                counts.already_present
            )));
        }
        Ok(InsertStats {
            inserted: counts.inserted,
            skipped: counts.already_present,
        })
    }

    /// The one bulk insert of dataset rows (ingest and import; merge
    /// writes its rows with their producers through its own statements
    /// and the same checks): standardizes the data IDs, checks that every
    /// dimension record they name exists (once per distinct record) and
    /// inserts the rows of type `dt` into RUN `run`. Runs in the caller's
    /// transaction, in which `dt` and `run` were looked up: the checks
    /// stand in for per-row foreign keys in a set-wise transaction
    /// ([`Database::begin_set_wise`], which leaves `dataset` to them on their
    /// strength), race-free since SQLite has one writer; on PostgreSQL
    /// the server checks again. `conflict(index, data ID, why)` explains a
    /// row that is neither inserted nor already there.
    pub(crate) fn insert_dataset_rows(
        &self,
        dt: &DatasetType,
        run: &CollectionRecord,
        datasets: &[NewDataset],
        mut conflict: impl FnMut(usize, &DataId, InsertConflict) -> Result<()>,
    ) -> Result<InsertCounts> {
        if !self.db.in_transaction() {
            return Err(RegistryError::Invalid(
                "dataset rows are inserted inside a write transaction".into(),
            ));
        }
        if run.collection_type != CollectionType::Run {
            return Err(RegistryError::Invalid(format!(
                "{} is not a RUN collection",
                run.name
            )));
        }
        let type_id = self.dataset_type_id(&dt.name)?;
        // Borrowed where already standard (an ingest's, a bundle's): a copy
        // of every data ID was 4% of an ingest's writing thread.
        let data_ids = datasets
            .iter()
            .map(|d| d.data_id.standardized(&dt.dimensions, &self.universe))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        self.check_dimension_records(dt, &data_ids)?;
        let insert = DatasetInsert::new(&self.db, dt, type_id, run.id);
        insert.insert_all(&self.db, datasets, &data_ids, |i, why| {
            conflict(i, &data_ids[i], why)
        })
    }

    /// Checks that every dimension record the data IDs refer to exists: one
    /// lookup per distinct key, with an error naming the first data ID whose
    /// record is missing.
    pub(crate) fn check_dimension_records(
        &self,
        dt: &DatasetType,
        data_ids: &[Cow<'_, DataId>],
    ) -> Result<()> {
        for dim in dt.dimensions.iter() {
            let element = self.universe.dimension(dim)?;
            let Some((sql, columns)) = record_exists_query(element) else {
                continue;
            };
            let mut stmt = self.db.prepare(&sql)?;
            // Batches are usually sorted, so most rows repeat the previous
            // key; the set catches the rest.
            let mut seen: std::collections::HashSet<Vec<&DataIdValue>> =
                std::collections::HashSet::new();
            let mut previous: Vec<&DataIdValue> = Vec::new();
            // Filled again for each data ID: a new vector is allocated only
            // for a record not seen yet (an ingest's datasets come in UUID
            // order, so most differ from the one before).
            let mut values: Vec<&DataIdValue> = Vec::with_capacity(columns.len());
            for data_id in data_ids {
                values.clear();
                values.extend(columns.iter().map(|c| {
                    data_id
                        .get(c)
                        .expect("standardized data IDs hold every required dimension")
                }));
                if values == previous || seen.contains(values.as_slice()) {
                    continue;
                }
                previous.clone_from(&values);
                let params: Vec<&dyn Param> = values.iter().map(|v| *v as &dyn Param).collect();
                if !stmt.exists(&params)? {
                    return Err(RegistryError::Conflict(format!(
                        "{} {data_id}: the {dim} record does not exist (insert it with `quanta dimensions insert`)",
                        dt.name
                    )));
                }
                seen.insert(values.clone());
            }
        }
        Ok(())
    }

    /// Adds existing datasets to a TAGGED collection.
    pub fn associate(&mut self, tagged: &str, ids: &[Uuid]) -> Result<usize> {
        let collection = self.collection_of_type(tagged, CollectionType::Tagged)?;
        let tx = self.db.transaction()?;
        let mut n = 0;
        {
            let mut stmt = tx.prepare(TAG_SQL)?;
            for id in ids {
                let changed = stmt.execute(&[&collection.id, id]).map_err(|e| {
                    if e.constraint() == Some(ConstraintViolation::Unique) {
                        RegistryError::Conflict(format!(
                            "{tagged} already holds another dataset of the same type and data ID as {id}"
                        ))
                    } else {
                        e
                    }
                })?;
                if changed == 0 && !dataset_exists(&tx, id)? {
                    return Err(RegistryError::Invalid(format!("no dataset {id}")));
                }
                n += changed as usize;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// Certifies datasets into a CALIBRATION collection for the validity
    /// range `[begin, end)` (MJD; use infinities for open ends). Overlapping
    /// ranges for the same dataset type and data ID are refused by the
    /// database.
    pub fn certify(&mut self, calibration: &str, ids: &[Uuid], begin: f64, end: f64) -> Result<()> {
        let collection = self.collection_of_type(calibration, CollectionType::Calibration)?;
        if begin.is_nan() || end.is_nan() || begin >= end {
            return Err(RegistryError::Invalid(format!(
                "validity range [{begin}, {end}) is empty"
            )));
        }
        let tx = self.db.transaction()?;
        {
            let mut stmt = tx.prepare(CERTIFY_SQL)?;
            for id in ids {
                let changed = stmt
                    .execute(&[&collection.id, id, &begin, &end])
                    .map_err(|e| {
                        if e.constraint() == Some(ConstraintViolation::Exclusion) {
                            RegistryError::Conflict(format!(
                                "certifying {id} in {calibration} for [{begin}, {end}): \
                                 overlaps an existing validity range of the same dataset type and data ID"
                            ))
                        } else {
                            e
                        }
                    })?;
                if changed == 0 {
                    return Err(RegistryError::Invalid(format!(
                        "{id} is not a dataset of a calibration dataset type"
                    )));
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Whether RUN `run` holds any dataset of type `dataset_type`: lets a
    /// caller about to look up many data IDs in a fresh RUN (an ingest)
    /// skip every lookup.
    pub fn run_has_datasets_of_type(&self, run: &str, dataset_type: &str) -> Result<bool> {
        let run = self.collection_of_type(run, CollectionType::Run)?;
        let type_id = self.dataset_type_id(dataset_type)?;
        self.db
            .prepare("SELECT 1 FROM dataset WHERE dataset_type_id = ?1 AND run_id = ?2 LIMIT 1")?
            .exists(&[&type_id, &run.id])
    }

    /// Finds one dataset by type and data ID, searching `collections` in
    /// order (CHAINED expanded) and returning the first match. CALIBRATION
    /// collections match only when `time` (MJD) is given and within the
    /// validity range.
    pub fn find_dataset(
        &self,
        dataset_type: &str,
        data_id: &DataId,
        collections: &[String],
        time: Option<f64>,
    ) -> Result<Option<FoundDataset>> {
        let dt = self.dataset_type_required(dataset_type)?;
        let data_id = data_id.standardize(&dt.dimensions, &self.universe)?;
        let type_id = self.dataset_type_id(dataset_type)?;
        let key = data_id.canonical_key();
        for collection in self.resolve_search_path(collections)? {
            let Some(membership) = Membership::of(collection.collection_type) else {
                continue;
            };
            let mut params = Parameters::new(self.dialect());
            let mut sql = format!(
                "SELECT d.id FROM {} WHERE {} AND {} = {}",
                membership.from,
                membership.conditions(&mut params, type_id, collection.id),
                membership.data_id_column,
                params.bind(key.as_str().into()),
            );
            if let Some((begin, end)) = membership.validity {
                // Only at a time within the certification's validity range.
                let Some(t) = time else { continue };
                let t = params.bind(t.into());
                sql.push_str(&format!(" AND {begin} <= {t} AND {t} < {end}"));
            }
            let id: Option<Uuid> = self.db.query_row(&sql, &params.bound(), |r| r.get(0))?;
            if let Some(id) = id {
                return self.dataset_by_id(&id, Some(&collection));
            }
        }
        Ok(None)
    }

    /// Looks a dataset up by UUID.
    pub fn dataset_by_id(
        &self,
        id: &Uuid,
        via: Option<&CollectionRecord>,
    ) -> Result<Option<FoundDataset>> {
        let row = self.db.query_row(
                "SELECT t.name, t.dimensions, c.name, d.data_id, d.path, d.formatter, d.size, d.checksum \
                 FROM dataset d JOIN dataset_type t ON t.id = d.dataset_type_id \
                 JOIN collection c ON c.id = d.run_id WHERE d.id = ?1",
            &[id],
            |r| {
                let dims: String = r.get(1)?;
                let values: String = r.get(3)?;
                let path: Option<String> = r.get(4)?;
                let stored = match path {
                    Some(path) => Some(DatastoreRecord {
                        path,
                        formatter: r.get(5)?,
                        size: r.get::<i64>(6)? as u64,
                        checksum: r.get(7)?,
                    }),
                    None => None,
                };
                Ok((r.get::<String>(0)?, dims, r.get::<String>(2)?, values, stored))
            })?;
        let Some((type_name, dims, run, values, stored)) = row else {
            return Ok(None);
        };
        let data_id = data_id_from_stored(&dims, &values)?;
        Ok(Some(FoundDataset {
            collection: via.map(|c| c.name.clone()).unwrap_or_else(|| run.clone()),
            dataset_ref: DatasetRef {
                id: *id,
                dataset_type: type_name,
                data_id,
                run,
            },
            stored,
        }))
    }
}

fn dataset_exists(db: &Database, id: &Uuid) -> Result<bool> {
    db.prepare("SELECT 1 FROM dataset WHERE id = ?1")?
        .exists(&[id])
}

/// Rebuilds a data ID from the stored dimension names and canonical key.
pub(crate) fn data_id_from_stored(dims_json: &str, values_json: &str) -> Result<DataId> {
    let names: Vec<String> = serde_json::from_str(dims_json)
        .map_err(|e| RegistryError::Invalid(format!("corrupt dataset type dimensions: {e}")))?;
    data_id_from_key(&names, values_json)
}

/// Rebuilds a data ID from its dimension names (a dataset type's, read
/// once for all its datasets) and its stored canonical key.
pub(crate) fn data_id_from_key(names: &[String], values_json: &str) -> Result<DataId> {
    let values: Vec<DataIdValue> = serde_json::from_str(values_json)
        .map_err(|e| RegistryError::Invalid(format!("corrupt data ID {values_json}: {e}")))?;
    if names.len() != values.len() {
        return Err(RegistryError::Invalid(format!(
            "corrupt data ID {values_json} for dimensions {names:?}"
        )));
    }
    Ok(DataId::from_pairs(names.iter().zip(values)))
}

fn row_to_dataset_type(r: &Row<'_>) -> Result<DatasetType> {
    let name: String = r.get(0)?;
    let dims: String = r.get(1)?;
    let names: Vec<String> = serde_json::from_str(&dims).map_err(|e| {
        RegistryError::Invalid(format!(
            "dataset type `{name}`: its dimensions in the registry are not a JSON list ({e})"
        ))
    })?;
    Ok(DatasetType {
        name,
        dimensions: DimensionGroup { names },
        storage_class: r.get(2)?,
        is_calibration: r.get(3)?,
    })
}

fn explain_foreign_key(e: RegistryError, dataset_type: &str, run: &str) -> RegistryError {
    match e.constraint() {
        // The data IDs' records were checked before the insert: another
        // process removed one since.
        Some(ConstraintViolation::ForeignKey) => RegistryError::Conflict(format!(
            "{dataset_type} datasets for RUN {run}: a dimension record of their data IDs does not exist (insert it with `quanta dimensions insert`)"
        )),
        _ => e,
    }
}
