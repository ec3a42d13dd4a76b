//! Provenance: which quantum produced a dataset, from which inputs, with
//! which task configuration, and how it ran.
//!
//! Owns: writing merged quanta (their output datasets, datastore records,
//! quantum rows and input/output links) in one transaction per batch, the
//! per-run provenance row, and the read queries behind `quanta provenance`
//! and `quanta report`. Must not: read journals or bundles, or touch files
//! (the butler's merge verifies files and hands rows here).
//!
//! Writes are idempotent: datasets and links are keyed by UUID and inserted
//! with `ON CONFLICT DO NOTHING`; a quantum row is upserted, except that a
//! quantum already recorded as `succeeded` is never rewritten, so a second
//! merge of the same journals changes nothing.

use std::collections::HashMap;

use quanta_core::{CollectionType, DataId, DataIdValue, DatasetType, Uuid};
use rusqlite::types::Value as SqlValue;
use rusqlite::OptionalExtension;
use serde::Serialize;

use crate::datasets::{data_id_value_to_sql, uuid_from_blob, DatastoreRecord};
use crate::error::{RegistryError, Result};
use crate::registry::Registry;
use crate::schema::{quote, record_exists_query};

/// The status text of a quantum whose task succeeded but some of whose
/// outputs could not be verified or registered: a later merge retries it.
pub const STATUS_PARTIAL: &str = "partial";
/// The status text of a fully merged successful quantum.
pub const STATUS_SUCCEEDED: &str = "succeeded";

/// One input link of a quantum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuantumInput {
    pub dataset_id: Uuid,
    pub connection: String,
    pub is_prerequisite: bool,
    /// False for a predicted input the quantum did not read.
    pub used: bool,
}

/// One output of a quantum to register: the dataset and its file record.
#[derive(Debug, Clone)]
pub struct QuantumOutputDataset {
    pub id: Uuid,
    pub dataset_type: String,
    pub data_id: DataId,
    pub connection: String,
    pub stored: DatastoreRecord,
}

/// How a quantum ran, as recorded in the `quantum` table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuantumExecution {
    /// `succeeded`, `partial`, `failed`, `timed_out`, `out_of_memory`,
    /// `blocked`.
    pub status: String,
    pub attempts: u32,
    pub host: Option<String>,
    pub batch_job: Option<String>,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub wall_seconds: Option<f64>,
    pub cpu_seconds: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub log_tail: Vec<String>,
}

/// A quantum to record, with its links and the outputs to register.
#[derive(Debug, Clone)]
pub struct NewQuantum {
    pub id: Uuid,
    pub task_label: String,
    pub data_id: DataId,
    pub execution: QuantumExecution,
    pub inputs: Vec<QuantumInput>,
    /// Registered only when the status is `succeeded` or `partial`.
    pub outputs: Vec<QuantumOutputDataset>,
}

/// An output the registry refused (another dataset already has its type
/// and data ID in the RUN, or a dimension record is missing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedDataset {
    pub quantum_id: Uuid,
    pub dataset_id: Uuid,
    pub dataset_type: String,
    pub data_id: DataId,
    pub reason: String,
}

/// What [`Registry::record_quanta`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordStats {
    pub datasets_inserted: usize,
    /// Outputs whose UUID was already registered.
    pub datasets_skipped: usize,
    pub quanta_written: usize,
    /// Quanta left alone because they are already recorded as succeeded.
    pub quanta_unchanged: usize,
    pub rejected: Vec<RejectedDataset>,
}

/// The per-run record of what was run: pipeline, task configs, software.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunProvenance {
    pub run: String,
    pub bundle_id: Uuid,
    pub pipeline_yaml: String,
    /// `[{"label": ..., "config": {...}}, ...]` in pipeline order.
    pub task_configs: serde_json::Value,
    pub quanta_version: String,
    pub command_line: Vec<String>,
    pub created_at: String,
    pub created_by: String,
}

/// A recorded quantum.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuantumRow {
    pub id: Uuid,
    pub run: String,
    pub bundle_id: Uuid,
    pub task_label: String,
    pub data_id: DataId,
    #[serde(flatten)]
    pub execution: QuantumExecution,
}

/// Prepared-statement text and column facts for one output dataset type.
struct TypeInsert {
    type_id: i64,
    dataset_type: DatasetType,
    sql: String,
}

const QUANTUM_COLUMNS: &str =
    "q.id, c.name, q.bundle_id, q.task_label, q.data_id, q.status, q.attempts, \
     q.host, q.batch_job, q.started, q.finished, q.wall_seconds, q.cpu_seconds, q.peak_rss_bytes, \
     q.exit_code, q.error, q.log_tail";

fn row_to_quantum(r: &rusqlite::Row<'_>) -> rusqlite::Result<QuantumRow> {
    let conv = |i: usize, e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    let data_id: String = r.get(4)?;
    let log_tail: Option<String> = r.get(16)?;
    Ok(QuantumRow {
        id: uuid_from_blob(r.get(0)?)?,
        run: r.get(1)?,
        bundle_id: uuid_from_blob(r.get(2)?)?,
        task_label: r.get(3)?,
        data_id: serde_json::from_str(&data_id).map_err(|e| conv(4, e))?,
        execution: QuantumExecution {
            status: r.get(5)?,
            attempts: r.get(6)?,
            host: r.get(7)?,
            batch_job: r.get(8)?,
            started: r.get(9)?,
            finished: r.get(10)?,
            wall_seconds: r.get(11)?,
            cpu_seconds: r.get(12)?,
            peak_rss_bytes: r.get::<_, Option<i64>>(13)?.map(|v| v.max(0) as u64),
            exit_code: r.get(14)?,
            error: r.get(15)?,
            log_tail: match log_tail {
                Some(t) => serde_json::from_str(&t).map_err(|e| conv(16, e))?,
                None => Vec::new(),
            },
        },
    })
}

/// Existence checks of the dimension records data IDs refer to, one
/// lookup per distinct record (a batch of a million datasets refers to a
/// few thousand records), standing in for per-row foreign keys.
struct DimensionChecks<'u> {
    universe: &'u quanta_core::DimensionUniverse,
    /// (dimension, values of its required dimensions and key) → exists.
    known: HashMap<(String, Vec<DataIdValue>), bool>,
}

impl<'u> DimensionChecks<'u> {
    fn new(universe: &'u quanta_core::DimensionUniverse) -> Self {
        Self {
            universe,
            known: HashMap::new(),
        }
    }

    /// The first dimension of a standardized data ID whose record is
    /// missing, if any.
    fn missing_record(
        &mut self,
        conn: &rusqlite::Connection,
        data_id: &DataId,
    ) -> Result<Option<String>> {
        for (dim, _) in data_id.iter() {
            let element = self.universe.dimension(dim)?;
            let Some((sql, columns)) = record_exists_query(element) else {
                continue;
            };
            let mut values = Vec::with_capacity(columns.len());
            for c in columns.iter().copied() {
                match data_id.get(c) {
                    Some(v) => values.push(v.clone()),
                    // Not checkable from this data ID; the foreign keys of
                    // the dimension tables keep such records consistent.
                    None => break,
                }
            }
            if values.len() != columns.len() {
                continue;
            }
            let cache_key = (dim.to_string(), values);
            let exists = match self.known.get(&cache_key) {
                Some(e) => *e,
                None => {
                    let params: Vec<SqlValue> =
                        cache_key.1.iter().map(data_id_value_to_sql).collect();
                    let e = conn
                        .prepare_cached(&sql)?
                        .exists(rusqlite::params_from_iter(params.iter()))?;
                    self.known.insert(cache_key, e);
                    e
                }
            };
            if !exists {
                return Ok(Some(dim.to_string()));
            }
        }
        Ok(None)
    }
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation
    )
}

impl Registry {
    /// Records the run's provenance (once per run and bundle; a second call
    /// for the same pair is a no-op). The RUN must exist.
    pub fn record_run_provenance(&mut self, p: &RunProvenance) -> Result<bool> {
        let run = self.collection_of_type(&p.run, CollectionType::Run)?;
        let changed = self.conn.execute(
            "INSERT INTO run_provenance (run_id, bundle_id, pipeline_yaml, task_configs, quanta_version, \
             command_line, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (run_id, bundle_id) DO NOTHING",
            (
                run.id,
                p.bundle_id.as_bytes().as_slice(),
                &p.pipeline_yaml,
                p.task_configs.to_string(),
                &p.quanta_version,
                serde_json::to_string(&p.command_line).expect("strings serialize"),
                &p.created_at,
                &p.created_by,
            ),
        )?;
        Ok(changed > 0)
    }

    /// The provenance rows of a RUN (one per bundle merged into it).
    pub fn run_provenance(&self, run: &str) -> Result<Vec<RunProvenance>> {
        let record = self.collection_of_type(run, CollectionType::Run)?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT bundle_id, pipeline_yaml, task_configs, quanta_version, command_line, created_at, created_by \
             FROM run_provenance WHERE run_id = ?1 ORDER BY created_at, bundle_id",
        )?;
        let rows = stmt
            .query_map([record.id], |r| {
                Ok((
                    uuid_from_blob(r.get(0)?)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(
                |(
                    bundle_id,
                    pipeline_yaml,
                    configs,
                    quanta_version,
                    cmd,
                    created_at,
                    created_by,
                )| {
                    let corrupt = |what: &str, e: serde_json::Error| {
                        RegistryError::Invalid(format!(
                            "run_provenance of {run}: corrupt {what}: {e}"
                        ))
                    };
                    Ok(RunProvenance {
                        run: run.to_string(),
                        bundle_id,
                        pipeline_yaml,
                        task_configs: serde_json::from_str(&configs)
                            .map_err(|e| corrupt("task configs", e))?,
                        quanta_version,
                        command_line: serde_json::from_str(&cmd)
                            .map_err(|e| corrupt("command line", e))?,
                        created_at,
                        created_by,
                    })
                },
            )
            .collect()
    }

    /// The recorded status of every quantum of one bundle, by quantum UUID:
    /// lets a merge skip what an earlier merge already completed.
    pub fn quantum_statuses(&self, bundle_id: Uuid) -> Result<HashMap<Uuid, String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, status FROM quantum WHERE bundle_id = ?1")?;
        let rows = stmt
            .query_map([bundle_id.as_bytes().as_slice()], |r| {
                Ok((uuid_from_blob(r.get(0)?)?, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<HashMap<_, _>>>()?;
        Ok(rows)
    }

    /// Records a batch of quanta of one bundle in one transaction: for each,
    /// its outputs (when it succeeded) as datasets of `run` with their
    /// datastore records, its quantum row and its input and output links.
    ///
    /// An output the registry refuses (another dataset of the same type and
    /// data ID in the RUN, a missing dimension record) is returned in
    /// [`RecordStats::rejected`] and its quantum is recorded as
    /// [`STATUS_PARTIAL`]; everything else in the batch is still written.
    /// Output dataset types must be registered.
    pub fn record_quanta(
        &mut self,
        run: &str,
        bundle_id: Uuid,
        quanta: &[NewQuantum],
    ) -> Result<RecordStats> {
        // Per-row foreign-key checks cost several B-tree lookups per dataset
        // on the merge's hot path. Every reference written here is to a row
        // looked up or written earlier in the same transaction, except the
        // dimension records, which are checked set-wise below instead; the
        // pragma is per connection and cannot change inside a transaction.
        self.conn.pragma_update(None, "foreign_keys", "OFF")?;
        let result = self.record_quanta_unchecked(run, bundle_id, quanta);
        let restored = self.conn.pragma_update(None, "foreign_keys", "ON");
        let stats = result?;
        restored?;
        Ok(stats)
    }

    fn record_quanta_unchecked(
        &mut self,
        run: &str,
        bundle_id: Uuid,
        quanta: &[NewQuantum],
    ) -> Result<RecordStats> {
        let run_record = self.collection_of_type(run, CollectionType::Run)?;
        let mut types: HashMap<String, TypeInsert> = HashMap::new();
        for q in quanta {
            for o in &q.outputs {
                if types.contains_key(&o.dataset_type) {
                    continue;
                }
                let dt = self.dataset_type_required(&o.dataset_type)?;
                let type_id = self.dataset_type_id(&o.dataset_type)?;
                let dims = &dt.dimensions.names;
                let sql =
                    format!(
                    "INSERT INTO dataset (id, dataset_type_id, run_id, data_id, ingest_date{}) \
                     VALUES (?, ?, ?, ?, ?{}) ON CONFLICT (id) DO NOTHING",
                    dims.iter().map(|d| format!(", {}", quote(d))).collect::<String>(),
                    ", ?".repeat(dims.len()),
                );
                types.insert(
                    o.dataset_type.clone(),
                    TypeInsert {
                        type_id,
                        dataset_type: dt,
                        sql,
                    },
                );
            }
        }
        let universe = self.universe.clone();
        let bundle_blob = bundle_id.as_bytes().to_vec();
        let mut stats = RecordStats::default();
        let mut dimensions = DimensionChecks::new(&universe);
        let tx = self.conn.transaction()?;
        {
            let mut upsert_quantum = tx.prepare_cached(
                "INSERT INTO quantum (id, run_id, bundle_id, task_label, data_id, status, attempts, host, \
                 batch_job, started, finished, wall_seconds, cpu_seconds, peak_rss_bytes, exit_code, error, log_tail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
                 ON CONFLICT (id) DO UPDATE SET run_id = excluded.run_id, bundle_id = excluded.bundle_id, \
                 task_label = excluded.task_label, data_id = excluded.data_id, status = excluded.status, \
                 attempts = excluded.attempts, host = excluded.host, batch_job = excluded.batch_job, \
                 started = excluded.started, finished = excluded.finished, wall_seconds = excluded.wall_seconds, \
                 cpu_seconds = excluded.cpu_seconds, peak_rss_bytes = excluded.peak_rss_bytes, \
                 exit_code = excluded.exit_code, error = excluded.error, log_tail = excluded.log_tail \
                 WHERE quantum.status <> 'succeeded'",
            )?;
            let mut clear_inputs =
                tx.prepare_cached("DELETE FROM quantum_input WHERE quantum_id = ?1")?;
            let mut insert_input = tx.prepare_cached(
                "INSERT INTO quantum_input (quantum_id, dataset_id, connection, is_prerequisite, used) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (quantum_id, dataset_id) DO NOTHING",
            )?;
            let mut insert_record = tx.prepare_cached(
                "INSERT INTO datastore_record (dataset_id, path, formatter, size, checksum) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (dataset_id) DO NOTHING",
            )?;
            let mut insert_output = tx.prepare_cached(
                "INSERT INTO quantum_output (dataset_id, quantum_id, connection) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (dataset_id) DO NOTHING",
            )?;
            let mut existing_status =
                tx.prepare_cached("SELECT status FROM quantum WHERE id = ?1")?;
            let mut params: Vec<SqlValue> = Vec::with_capacity(24);
            let mut registered: Vec<&QuantumOutputDataset> = Vec::new();
            for q in quanta {
                let qid = q.id.as_bytes().as_slice();
                let existing: Option<String> =
                    existing_status.query_row([qid], |r| r.get(0)).optional()?;
                if existing.as_deref() == Some(STATUS_SUCCEEDED) {
                    stats.quanta_unchanged += 1;
                    continue;
                }
                let mut status = q.execution.status.clone();
                let mut error = q.execution.error.clone();
                registered.clear();
                let rejected_before = stats.rejected.len();
                let registers = status == STATUS_SUCCEEDED || status == STATUS_PARTIAL;
                for o in q.outputs.iter().filter(|_| registers) {
                    let t = &types[&o.dataset_type];
                    let rejected = |reason: String| RejectedDataset {
                        quantum_id: q.id,
                        dataset_id: o.id,
                        dataset_type: o.dataset_type.clone(),
                        data_id: o.data_id.clone(),
                        reason,
                    };
                    let data_id = match o.data_id.standardize(&t.dataset_type.dimensions, &universe)
                    {
                        Ok(d) => d,
                        Err(e) => {
                            stats.rejected.push(rejected(e.to_string()));
                            continue;
                        }
                    };
                    if let Some(dim) = dimensions.missing_record(&tx, &data_id)? {
                        stats.rejected.push(rejected(format!(
                            "its {dim} record does not exist (insert it with `quanta dimensions insert`)"
                        )));
                        continue;
                    }
                    params.clear();
                    params.push(SqlValue::Blob(o.id.as_bytes().to_vec()));
                    params.push(SqlValue::Integer(t.type_id));
                    params.push(SqlValue::Integer(run_record.id));
                    params.push(SqlValue::Text(data_id.canonical_key()));
                    params.push(match &q.execution.finished {
                        Some(f) => SqlValue::Text(f.clone()),
                        None => SqlValue::Null,
                    });
                    params.extend(data_id.iter().map(|(_, v)| data_id_value_to_sql(v)));
                    let mut insert = tx.prepare_cached(&t.sql)?;
                    match insert.execute(rusqlite::params_from_iter(params.iter())) {
                        Ok(0) => stats.datasets_skipped += 1,
                        Ok(_) => stats.datasets_inserted += 1,
                        Err(e) if is_constraint(&e) => {
                            let text = e.to_string();
                            let reason = if text.contains("FOREIGN KEY") {
                                "a dimension record of its data ID does not exist".to_string()
                            } else {
                                format!(
                                    "another {} with this data ID is already in RUN {run}",
                                    o.dataset_type
                                )
                            };
                            stats.rejected.push(rejected(reason));
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                    insert_record.execute((
                        o.id.as_bytes().as_slice(),
                        &o.stored.path,
                        &o.stored.formatter,
                        o.stored.size as i64,
                        &o.stored.checksum,
                    ))?;
                    registered.push(o);
                }
                if stats.rejected.len() > rejected_before {
                    status = STATUS_PARTIAL.to_string();
                    let lines: Vec<String> = stats.rejected[rejected_before..]
                        .iter()
                        .map(|r| {
                            format!(
                                "{} {} not registered: {}",
                                r.dataset_type, r.data_id, r.reason
                            )
                        })
                        .collect();
                    error = Some(match error {
                        Some(e) => format!("{e}\n{}", lines.join("\n")),
                        None => lines.join("\n"),
                    });
                }
                let x = &q.execution;
                let changed = upsert_quantum.execute(rusqlite::params![
                    qid,
                    run_record.id,
                    &bundle_blob,
                    &q.task_label,
                    serde_json::to_string(&q.data_id).expect("data IDs serialize"),
                    &status,
                    x.attempts,
                    &x.host,
                    &x.batch_job,
                    &x.started,
                    &x.finished,
                    x.wall_seconds,
                    x.cpu_seconds,
                    x.peak_rss_bytes.map(|v| v.min(i64::MAX as u64) as i64),
                    x.exit_code,
                    &error,
                    serde_json::to_string(&x.log_tail).expect("strings serialize"),
                ])?;
                if changed == 0 {
                    stats.quanta_unchanged += 1;
                    continue;
                }
                stats.quanta_written += 1;
                // Inputs are rewritten whole: a quantum merged earlier as
                // failed may have read a different set on its successful
                // attempt.
                if existing.is_some() {
                    clear_inputs.execute([qid])?;
                }
                for i in &q.inputs {
                    insert_input.execute((
                        qid,
                        i.dataset_id.as_bytes().as_slice(),
                        &i.connection,
                        i.is_prerequisite,
                        i.used,
                    ))?;
                }
                for o in &registered {
                    insert_output.execute((o.id.as_bytes().as_slice(), qid, &o.connection))?;
                }
            }
        }
        tx.commit()?;
        Ok(stats)
    }

    /// A recorded quantum.
    pub fn quantum(&self, id: &Uuid) -> Result<Option<QuantumRow>> {
        let sql = format!(
            "SELECT {QUANTUM_COLUMNS} FROM quantum q JOIN collection c ON c.id = q.run_id WHERE q.id = ?1"
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row([id.as_bytes().as_slice()], row_to_quantum)
            .optional()?)
    }

    /// Every recorded quantum of a RUN, by task label and data ID.
    pub fn quanta_in_run(&self, run: &str) -> Result<Vec<QuantumRow>> {
        let record = self.collection_of_type(run, CollectionType::Run)?;
        let sql = format!(
            "SELECT {QUANTUM_COLUMNS} FROM quantum q JOIN collection c ON c.id = q.run_id \
             WHERE q.run_id = ?1 ORDER BY q.task_label, q.data_id, q.id"
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_map([record.id], row_to_quantum)?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// The quantum that produced a dataset, if it was made by a merged
    /// quantum (raw and ingested datasets have none).
    pub fn producer_of(&self, dataset_id: &Uuid) -> Result<Option<Uuid>> {
        let id: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT quantum_id FROM quantum_output WHERE dataset_id = ?1")?
            .query_row([dataset_id.as_bytes().as_slice()], |r| r.get(0))
            .optional()?;
        Ok(id.map(uuid_from_blob).transpose()?)
    }

    /// The input links of a quantum, prerequisites last, then by connection
    /// and dataset.
    pub fn quantum_inputs(&self, quantum_id: &Uuid) -> Result<Vec<QuantumInput>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT dataset_id, connection, is_prerequisite, used FROM quantum_input \
                 WHERE quantum_id = ?1 ORDER BY is_prerequisite, connection, dataset_id",
            )?
            .query_map([quantum_id.as_bytes().as_slice()], |r| {
                Ok(QuantumInput {
                    dataset_id: uuid_from_blob(r.get(0)?)?,
                    connection: r.get(1)?,
                    is_prerequisite: r.get(2)?,
                    used: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// The registered outputs of a quantum: (dataset, connection).
    pub fn quantum_outputs(&self, quantum_id: &Uuid) -> Result<Vec<(Uuid, String)>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT dataset_id, connection FROM quantum_output WHERE quantum_id = ?1 \
                 ORDER BY connection, dataset_id",
            )?
            .query_map([quantum_id.as_bytes().as_slice()], |r| {
                Ok((uuid_from_blob(r.get(0)?)?, r.get(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// The quanta that read a dataset (used inputs only).
    pub fn consumers_of(&self, dataset_id: &Uuid) -> Result<Vec<Uuid>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT quantum_id FROM quantum_input WHERE dataset_id = ?1 AND used ORDER BY quantum_id",
            )?
            .query_map([dataset_id.as_bytes().as_slice()], |r| uuid_from_blob(r.get(0)?))?
            .collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quanta_core::{DimensionGroup, DimensionUniverse};

    fn registry(dir: &std::path::Path) -> Registry {
        let universe = DimensionUniverse::default_universe();
        let mut r = Registry::create(&dir.join("r.sqlite3"), &universe).unwrap();
        let records = crate::parse_records_json(
            r#"{"instrument": [{"name": "Cam", "detector_max": 4}],
                "detector": [{"instrument": "Cam", "id": 0, "full_name": "D0"}]}"#,
            "test",
        )
        .unwrap();
        r.insert_dimension_records(&records).unwrap();
        r.register_collection("out", CollectionType::Run, None)
            .unwrap();
        r.register_dataset_type(&DatasetType {
            name: "calexp".into(),
            dimensions: DimensionGroup {
                names: vec!["instrument".into(), "detector".into()],
            },
            storage_class: "Json".into(),
            is_calibration: false,
        })
        .unwrap();
        r
    }

    fn quantum(detector: i64, status: &str) -> NewQuantum {
        let data_id = DataId::from_pairs([
            ("instrument", DataIdValue::from("Cam")),
            ("detector", DataIdValue::Int(detector)),
        ]);
        NewQuantum {
            id: Uuid::from_u128(100 + detector as u128),
            task_label: "calibrate".into(),
            data_id: data_id.clone(),
            execution: QuantumExecution {
                status: status.into(),
                attempts: 1,
                host: Some("node1".into()),
                batch_job: None,
                started: Some("2026-01-01T00:00:00.000Z".into()),
                finished: Some("2026-01-01T00:00:01.000Z".into()),
                wall_seconds: Some(1.0),
                cpu_seconds: Some(0.5),
                peak_rss_bytes: Some(1 << 20),
                exit_code: Some(0),
                error: None,
                log_tail: vec![],
            },
            inputs: vec![QuantumInput {
                dataset_id: Uuid::from_u128(1),
                connection: "raw".into(),
                is_prerequisite: false,
                used: true,
            }],
            outputs: vec![QuantumOutputDataset {
                id: Uuid::from_u128(200 + detector as u128),
                dataset_type: "calexp".into(),
                data_id,
                connection: "calexp".into(),
                stored: DatastoreRecord {
                    path: format!("out/calexp/{detector}.json"),
                    formatter: "json".into(),
                    size: 10,
                    checksum: "00".into(),
                },
            }],
        }
    }

    #[test]
    fn records_idempotently_and_rejects_missing_dimension_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry(dir.path());
        let bundle = Uuid::from_u128(7);
        // Detector 9 has no record: its output is refused, its quantum
        // recorded as partial; detector 0 goes in whole.
        let batch = vec![quantum(0, STATUS_SUCCEEDED), quantum(9, STATUS_SUCCEEDED)];
        let stats = r.record_quanta("out", bundle, &batch).unwrap();
        assert_eq!(stats.datasets_inserted, 1);
        assert_eq!(stats.rejected.len(), 1);
        assert!(
            stats.rejected[0].reason.contains("detector record"),
            "{:?}",
            stats.rejected
        );
        let q9 = r.quantum(&batch[1].id).unwrap().unwrap();
        assert_eq!(q9.execution.status, STATUS_PARTIAL);
        assert!(r.producer_of(&batch[1].outputs[0].id).unwrap().is_none());
        assert_eq!(
            r.producer_of(&batch[0].outputs[0].id).unwrap(),
            Some(batch[0].id)
        );
        assert_eq!(r.consumers_of(&Uuid::from_u128(1)).unwrap().len(), 2);

        // Again: nothing new; the succeeded quantum is left alone, even if
        // told it failed.
        let again = r
            .record_quanta(
                "out",
                bundle,
                &[quantum(0, "failed"), quantum(9, STATUS_SUCCEEDED)],
            )
            .unwrap();
        assert_eq!(again.datasets_inserted, 0);
        assert_eq!(again.quanta_unchanged, 1);
        let q0 = r.quantum(&batch[0].id).unwrap().unwrap();
        assert_eq!(q0.execution.status, STATUS_SUCCEEDED);
        assert_eq!(r.quantum_statuses(bundle).unwrap().len(), 2);
        // Foreign keys are back on for every other write.
        let fk: i64 = r
            .conn
            .query_row("PRAGMA foreign_keys", [], |row| row.get(0))
            .unwrap();
        assert_eq!(fk, 1);
    }
}
