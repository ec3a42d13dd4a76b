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
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::OptionalExtension;
use serde::Serialize;

use crate::datasets::{
    data_id_value_ref, record_params, uuid_from_blob, DatastoreRecord, RECORD_COLUMNS,
};
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

/// Rows per INSERT statement on the merge path. More rows per statement
/// save VDBE setup and teardown, but a multi-row statement needs a
/// statement journal (each page it touches is copied first, so it can be
/// undone alone); measured on the 200,000-dataset synthetic merge, 1, 16
/// and 64 rows cost the writer about the same, 16 slightly least.
const ROWS_PER_STATEMENT: usize = 16;

/// A multi-row INSERT: the statement for a full chunk of rows and the one
/// for a single row (used for the remainder, so only two statements per
/// table are ever compiled and cached).
struct BulkInsert {
    cols: usize,
    per_statement: usize,
    full: String,
    single: String,
}

impl BulkInsert {
    /// `head` is `INSERT INTO t (cols...)`, `tail` the conflict clause;
    /// rows per statement also respect the connection's parameter limit.
    fn new(head: &str, cols: usize, tail: &str, max_params: usize) -> Self {
        let per_statement = (max_params / cols.max(1)).clamp(
            1,
            std::env::var("QROWS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(ROWS_PER_STATEMENT),
        );
        let sql = |rows: usize| {
            let mut group = String::with_capacity(2 * cols + 2);
            group.push('(');
            for c in 0..cols {
                group.push_str(if c == 0 { "?" } else { ",?" });
            }
            group.push(')');
            format!("{head} VALUES {}{tail}", vec![group; rows].join(","))
        };
        Self {
            cols,
            per_statement,
            full: sql(per_statement),
            single: sql(1),
        }
    }

    /// Inserts rows given as one flat parameter list (`cols` per row);
    /// returns the number of rows changed.
    fn run(&self, conn: &rusqlite::Connection, params: &[ToSqlOutput<'_>]) -> Result<usize> {
        let mut changed = 0;
        let mut chunks = params.chunks_exact(self.cols * self.per_statement);
        if chunks.len() > 0 {
            let mut stmt = conn.prepare_cached(&self.full)?;
            for chunk in &mut chunks {
                changed += stmt.execute(rusqlite::params_from_iter(chunk))?;
            }
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut stmt = conn.prepare_cached(&self.single)?;
            for row in rest.chunks_exact(self.cols) {
                changed += stmt.execute(rusqlite::params_from_iter(row))?;
            }
        }
        Ok(changed)
    }
}

/// The insert of one output dataset type's rows, with its column facts.
struct TypeInsert {
    type_id: i64,
    dataset_type: DatasetType,
    insert: BulkInsert,
}

const QUANTUM_INSERT_HEAD: &str =
    "INSERT INTO quantum (id, run_id, bundle_id, task_label, data_id, status, attempts, host, \
     batch_job, started, finished, wall_seconds, cpu_seconds, peak_rss_bytes, exit_code, error, log_tail)";
const QUANTUM_COLS: usize = 17;
const QUANTUM_UPSERT_TAIL: &str =
    " ON CONFLICT (id) DO UPDATE SET run_id = excluded.run_id, bundle_id = excluded.bundle_id, \
     task_label = excluded.task_label, data_id = excluded.data_id, status = excluded.status, \
     attempts = excluded.attempts, host = excluded.host, batch_job = excluded.batch_job, \
     started = excluded.started, finished = excluded.finished, wall_seconds = excluded.wall_seconds, \
     cpu_seconds = excluded.cpu_seconds, peak_rss_bytes = excluded.peak_rss_bytes, \
     exit_code = excluded.exit_code, error = excluded.error, log_tail = excluded.log_tail \
     WHERE quantum.status <> 'succeeded'";

/// The fixed-shape inserts of [`Registry::record_quanta`].
struct BatchStatements {
    quanta: BulkInsert,
    inputs: BulkInsert,
    outputs: BulkInsert,
}

impl BatchStatements {
    fn new(max_params: usize) -> Self {
        Self {
            quanta: BulkInsert::new(
                QUANTUM_INSERT_HEAD,
                QUANTUM_COLS,
                QUANTUM_UPSERT_TAIL,
                max_params,
            ),
            inputs: BulkInsert::new(
                "INSERT INTO quantum_input (quantum_id, dataset_id, connection, is_prerequisite, used)",
                5,
                " ON CONFLICT (quantum_id, dataset_id) DO NOTHING",
                max_params,
            ),
            outputs: BulkInsert::new(
                "INSERT INTO quantum_output (dataset_id, quantum_id, connection)",
                3,
                " ON CONFLICT (dataset_id) DO NOTHING",
                max_params,
            ),
        }
    }
}

fn blob(bytes: &[u8]) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(ValueRef::Blob(bytes))
}

fn text(s: &str) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))
}

fn opt_text(s: &Option<String>) -> ToSqlOutput<'_> {
    match s {
        Some(s) => text(s),
        None => ToSqlOutput::Borrowed(ValueRef::Null),
    }
}

fn int(i: i64) -> ToSqlOutput<'static> {
    ToSqlOutput::Borrowed(ValueRef::Integer(i))
}

fn opt_real(v: Option<f64>) -> ToSqlOutput<'static> {
    ToSqlOutput::Borrowed(v.map_or(ValueRef::Null, ValueRef::Real))
}

/// One dataset type's rows of a segment: flat parameters (the type's
/// column count per row) and each row's (planned quantum, output) position.
#[derive(Default)]
struct DatasetRows<'a> {
    params: Vec<ToSqlOutput<'a>>,
    owners: Vec<(usize, usize)>,
}

/// A quantum of the segment being written that is not yet recorded as
/// succeeded.
struct Planned<'a> {
    q: &'a NewQuantum,
    /// Its row exists (an earlier merge recorded it as failed or partial).
    existing: bool,
    /// Per output: registered (inserted now or already present).
    accepted: Vec<bool>,
    rejected: Vec<RejectedDataset>,
}

/// One transaction's worth of [`Registry::record_quanta`]. Rows are
/// gathered per table and written with multi-row statements, table by
/// table: foreign keys are off for the batch, so the order of tables does
/// not matter, and a quantum row is written only once the fate of its
/// outputs is known (a refused output makes it `partial`).
struct BatchWriter<'w, 'u> {
    tx: &'w rusqlite::Transaction<'w>,
    run: &'w str,
    run_id: i64,
    bundle_blob: &'w [u8],
    types: &'w [TypeInsert],
    type_index: &'w HashMap<&'w str, usize>,
    statements: &'w BatchStatements,
    universe: &'u quanta_core::DimensionUniverse,
    dimensions: &'w mut DimensionChecks<'u>,
    stats: &'w mut RecordStats,
}

impl BatchWriter<'_, '_> {
    /// Writes quanta whose IDs are distinct.
    fn write_segment(&mut self, quanta: &[NewQuantum]) -> Result<()> {
        if quanta.is_empty() {
            return Ok(());
        }
        let mut planned: Vec<Planned<'_>> = Vec::with_capacity(quanta.len());
        // Per dataset type: flat row parameters and (planned, output) owners.
        let mut dataset_rows: Vec<DatasetRows<'_>> =
            self.types.iter().map(|_| DatasetRows::default()).collect();
        {
            let mut existing_status = self
                .tx
                .prepare_cached("SELECT status FROM quantum WHERE id = ?1")?;
            for q in quanta {
                let existing: Option<String> = existing_status
                    .query_row([q.id.as_bytes().as_slice()], |r| r.get(0))
                    .optional()?;
                if existing.as_deref() == Some(STATUS_SUCCEEDED) {
                    self.stats.quanta_unchanged += 1;
                    continue;
                }
                let pos = planned.len();
                let mut plan = Planned {
                    q,
                    existing: existing.is_some(),
                    accepted: vec![false; q.outputs.len()],
                    rejected: Vec::new(),
                };
                let status = q.execution.status.as_str();
                if status == STATUS_SUCCEEDED || status == STATUS_PARTIAL {
                    for (oi, o) in q.outputs.iter().enumerate() {
                        let ti = self.type_index[o.dataset_type.as_str()];
                        let t = &self.types[ti];
                        let data_id = match o
                            .data_id
                            .standardize(&t.dataset_type.dimensions, self.universe)
                        {
                            Ok(d) => d,
                            Err(e) => {
                                plan.rejected.push(rejected(q, o, e.to_string()));
                                continue;
                            }
                        };
                        if let Some(dim) = self.dimensions.missing_record(self.tx, &data_id)? {
                            plan.rejected.push(rejected(q, o, format!(
                                "its {dim} record does not exist (insert it with `quanta dimensions insert`)"
                            )));
                            continue;
                        }
                        let DatasetRows { params, owners } = &mut dataset_rows[ti];
                        params.push(blob(o.id.as_bytes()));
                        params.push(int(t.type_id));
                        params.push(int(self.run_id));
                        params.push(ToSqlOutput::Owned(SqlValue::Text(data_id.canonical_key())));
                        params.push(opt_text(&q.execution.finished));
                        params.extend(record_params(Some(&o.stored)));
                        // Standardizing only checked and reordered, so the
                        // caller's values can be bound without copies.
                        for dim in &t.dataset_type.dimensions.names {
                            match o.data_id.get(dim) {
                                Some(v) => params.push(data_id_value_ref(v)),
                                None => params.push(ToSqlOutput::Borrowed(ValueRef::Null)),
                            }
                        }
                        owners.push((pos, oi));
                    }
                }
                planned.push(plan);
            }
        }

        for (ti, rows) in dataset_rows.iter().enumerate() {
            self.insert_datasets(ti, &rows.params, &rows.owners, &mut planned)?;
        }

        let mut new_rows: Vec<ToSqlOutput<'_>> = Vec::new();
        let mut new_quanta = 0usize;
        let mut written: Vec<usize> = Vec::with_capacity(planned.len());
        for (pos, p) in planned.iter_mut().enumerate() {
            let q = p.q;
            let x = &q.execution;
            let mut status = x.status.clone();
            let mut error = x.error.clone();
            if !p.rejected.is_empty() {
                status = STATUS_PARTIAL.to_string();
                let lines: Vec<String> = p
                    .rejected
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
                self.stats.rejected.append(&mut p.rejected);
            }
            let row = [
                blob(q.id.as_bytes()),
                int(self.run_id),
                blob(self.bundle_blob),
                text(&q.task_label),
                ToSqlOutput::Owned(SqlValue::Text(
                    serde_json::to_string(&q.data_id).expect("data IDs serialize"),
                )),
                ToSqlOutput::Owned(SqlValue::Text(status)),
                int(i64::from(x.attempts)),
                opt_text(&x.host),
                opt_text(&x.batch_job),
                opt_text(&x.started),
                opt_text(&x.finished),
                opt_real(x.wall_seconds),
                opt_real(x.cpu_seconds),
                match x.peak_rss_bytes {
                    Some(v) => int(v.min(i64::MAX as u64) as i64),
                    None => ToSqlOutput::Borrowed(ValueRef::Null),
                },
                match x.exit_code {
                    Some(c) => int(i64::from(c)),
                    None => ToSqlOutput::Borrowed(ValueRef::Null),
                },
                match error {
                    Some(e) => ToSqlOutput::Owned(SqlValue::Text(e)),
                    None => ToSqlOutput::Borrowed(ValueRef::Null),
                },
                ToSqlOutput::Owned(SqlValue::Text(
                    serde_json::to_string(&x.log_tail).expect("strings serialize"),
                )),
            ];
            if p.existing {
                let changed = self
                    .tx
                    .prepare_cached(&self.statements.quanta.single)?
                    .execute(rusqlite::params_from_iter(row.iter()))?;
                if changed == 0 {
                    self.stats.quanta_unchanged += 1;
                    continue;
                }
                // Inputs are rewritten whole: a quantum merged earlier as
                // failed may have read a different set on its successful
                // attempt.
                self.tx
                    .prepare_cached("DELETE FROM quantum_input WHERE quantum_id = ?1")?
                    .execute([q.id.as_bytes().as_slice()])?;
            } else {
                new_rows.extend(row);
                new_quanta += 1;
            }
            written.push(pos);
        }
        let changed = self.statements.quanta.run(self.tx, &new_rows)?;
        if changed != new_quanta {
            // The status lookup above saw no row for these quanta, in this
            // transaction, so every one of them must have been inserted.
            return Err(RegistryError::Invalid(format!(
                "recording quanta of RUN {}: {new_quanta} new quantum rows, but {changed} written",
                self.run
            )));
        }
        drop(new_rows);
        self.stats.quanta_written += written.len();

        let mut inputs: Vec<ToSqlOutput<'_>> = Vec::new();
        let mut outputs: Vec<ToSqlOutput<'_>> = Vec::new();
        for &pos in &written {
            let p = &planned[pos];
            let qid = p.q.id.as_bytes().as_slice();
            for i in &p.q.inputs {
                inputs.push(blob(qid));
                inputs.push(blob(i.dataset_id.as_bytes()));
                inputs.push(text(&i.connection));
                inputs.push(int(i64::from(i.is_prerequisite)));
                inputs.push(int(i64::from(i.used)));
            }
            for (o, _) in p.q.outputs.iter().zip(&p.accepted).filter(|(_, a)| **a) {
                outputs.push(blob(o.id.as_bytes()));
                outputs.push(blob(qid));
                outputs.push(text(&o.connection));
            }
        }
        self.statements.inputs.run(self.tx, &inputs)?;
        self.statements.outputs.run(self.tx, &outputs)?;
        Ok(())
    }

    /// Inserts one dataset type's rows; a chunk that violates a constraint
    /// (another dataset with the same type and data ID in the RUN) is
    /// retried row by row so only the offending rows are refused.
    fn insert_datasets(
        &mut self,
        ti: usize,
        params: &[ToSqlOutput<'_>],
        owners: &[(usize, usize)],
        planned: &mut [Planned<'_>],
    ) -> Result<()> {
        let insert = &self.types[ti].insert;
        let full = insert.per_statement;
        for (chunk, chunk_owners) in params.chunks(insert.cols * full).zip(owners.chunks(full)) {
            if chunk_owners.len() == full {
                let result = self
                    .tx
                    .prepare_cached(&insert.full)?
                    .execute(rusqlite::params_from_iter(chunk));
                match result {
                    Ok(n) => {
                        self.stats.datasets_inserted += n;
                        self.stats.datasets_skipped += full - n;
                        for &(pos, oi) in chunk_owners {
                            planned[pos].accepted[oi] = true;
                        }
                        continue;
                    }
                    Err(e) if is_constraint(&e) => {} // the statement was undone; retry by row
                    Err(e) => return Err(e.into()),
                }
            }
            let mut single = self.tx.prepare_cached(&insert.single)?;
            for (row, &(pos, oi)) in chunk.chunks_exact(insert.cols).zip(chunk_owners) {
                match single.execute(rusqlite::params_from_iter(row)) {
                    Ok(0) => self.stats.datasets_skipped += 1,
                    Ok(_) => self.stats.datasets_inserted += 1,
                    Err(e) if is_constraint(&e) => {
                        let p = &mut planned[pos];
                        let o = &p.q.outputs[oi];
                        let reason = if e.to_string().contains("FOREIGN KEY") {
                            "a dimension record of its data ID does not exist".to_string()
                        } else {
                            format!(
                                "another {} with this data ID is already in RUN {}",
                                o.dataset_type, self.run
                            )
                        };
                        let r = rejected(p.q, o, reason);
                        p.rejected.push(r);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
                planned[pos].accepted[oi] = true;
            }
        }
        Ok(())
    }
}

fn rejected(q: &NewQuantum, o: &QuantumOutputDataset, reason: String) -> RejectedDataset {
    RejectedDataset {
        quantum_id: q.id,
        dataset_id: o.id,
        dataset_type: o.dataset_type.clone(),
        data_id: o.data_id.clone(),
        reason,
    }
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

/// One dimension's existence query with the data ID keys it binds (`None`
/// for dimensions without records), and the key values already looked up
/// → exists.
type DimensionCheck = (
    Option<(String, Vec<String>)>,
    HashMap<Vec<DataIdValue>, bool>,
);

/// Existence checks of the dimension records data IDs refer to, one
/// lookup per distinct record (a batch of a million datasets refers to a
/// few thousand records), standing in for per-row foreign keys.
struct DimensionChecks<'u> {
    universe: &'u quanta_core::DimensionUniverse,
    /// Dimension name → position in `checks`.
    index: HashMap<String, usize>,
    /// Per dimension seen, in the order first seen.
    checks: Vec<DimensionCheck>,
    /// The last data ID found complete: outputs of one quantum usually
    /// share it, which saves the per-dimension lookups.
    last_complete: Option<DataId>,
    values: Vec<DataIdValue>,
}

impl<'u> DimensionChecks<'u> {
    fn new(universe: &'u quanta_core::DimensionUniverse) -> Self {
        Self {
            universe,
            index: HashMap::new(),
            checks: Vec::new(),
            last_complete: None,
            values: Vec::new(),
        }
    }

    /// The first dimension of a standardized data ID whose record is
    /// missing, if any.
    fn missing_record(
        &mut self,
        conn: &rusqlite::Connection,
        data_id: &DataId,
    ) -> Result<Option<String>> {
        if self.last_complete.as_ref() == Some(data_id) {
            return Ok(None);
        }
        for (dim, _) in data_id.iter() {
            let at = match self.index.get(dim) {
                Some(at) => *at,
                None => {
                    let element = self.universe.dimension(dim)?;
                    let query = record_exists_query(element)
                        .map(|(sql, cols)| (sql, cols.into_iter().map(str::to_string).collect()));
                    self.checks.push((query, HashMap::new()));
                    self.index.insert(dim.to_string(), self.checks.len() - 1);
                    self.checks.len() - 1
                }
            };
            let (query, known) = &mut self.checks[at];
            let Some((sql, columns)) = &*query else {
                continue;
            };
            self.values.clear();
            for c in columns {
                match data_id.get(c) {
                    Some(v) => self.values.push(v.clone()),
                    // Not checkable from this data ID; the foreign keys of
                    // the dimension tables keep such records consistent.
                    None => break,
                }
            }
            if self.values.len() != columns.len() {
                continue;
            }
            let exists = match known.get(self.values.as_slice()) {
                Some(e) => *e,
                None => {
                    let e = conn
                        .prepare_cached(sql)?
                        .exists(rusqlite::params_from_iter(
                            self.values.iter().map(data_id_value_ref),
                        ))?;
                    known.insert(self.values.clone(), e);
                    e
                }
            };
            if !exists {
                return Ok(Some(dim.to_string()));
            }
        }
        self.last_complete = Some(data_id.clone());
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
        let max_params = usize::try_from(
            self.conn
                .limit(rusqlite::limits::Limit::SQLITE_LIMIT_VARIABLE_NUMBER)?,
        )
        .unwrap_or(999);
        let mut types: Vec<TypeInsert> = Vec::new();
        let mut type_index: HashMap<&str, usize> = HashMap::new();
        for q in quanta {
            for o in &q.outputs {
                if type_index.contains_key(o.dataset_type.as_str()) {
                    continue;
                }
                let dt = self.dataset_type_required(&o.dataset_type)?;
                let type_id = self.dataset_type_id(&o.dataset_type)?;
                let dims = &dt.dimensions.names;
                let head = format!(
                    "INSERT INTO dataset (id, dataset_type_id, run_id, data_id, ingest_date, \
                     {RECORD_COLUMNS}{})",
                    dims.iter()
                        .map(|d| format!(", {}", quote(d)))
                        .collect::<String>(),
                );
                let insert = BulkInsert::new(
                    &head,
                    9 + dims.len(),
                    " ON CONFLICT (id) DO NOTHING",
                    max_params,
                );
                type_index.insert(o.dataset_type.as_str(), types.len());
                types.push(TypeInsert {
                    type_id,
                    dataset_type: dt,
                    insert,
                });
            }
        }
        let statements = BatchStatements::new(max_params);
        let universe = self.universe.clone();
        let bundle_blob = bundle_id.as_bytes().to_vec();
        let mut stats = RecordStats::default();
        let mut dimensions = DimensionChecks::new(&universe);
        let tx = self.conn.transaction()?;
        {
            let mut writer = BatchWriter {
                tx: &tx,
                run,
                run_id: run_record.id,
                bundle_blob: &bundle_blob,
                types: &types,
                type_index: &type_index,
                statements: &statements,
                universe: &universe,
                dimensions: &mut dimensions,
                stats: &mut stats,
            };
            // A quantum listed twice must see the first copy's row, so the
            // batch is written in segments of distinct quanta.
            let mut seen: std::collections::HashSet<Uuid> = std::collections::HashSet::new();
            let mut segment_start = 0;
            for (i, q) in quanta.iter().enumerate() {
                if !seen.insert(q.id) {
                    writer.write_segment(&quanta[segment_start..i])?;
                    segment_start = i;
                    seen.clear();
                    seen.insert(q.id);
                }
            }
            writer.write_segment(&quanta[segment_start..])?;
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

    /// A registry whose instrument has `n` detector records.
    fn registry_with_detectors(dir: &std::path::Path, n: i64) -> Registry {
        let mut r = registry(dir);
        let detectors: Vec<String> = (1..n)
            .map(|d| format!(r#"{{"instrument": "Cam", "id": {d}, "full_name": "D{d}"}}"#))
            .collect();
        let records = crate::parse_records_json(
            &format!(r#"{{"detector": [{}]}}"#, detectors.join(",")),
            "test",
        )
        .unwrap();
        r.insert_dimension_records(&records).unwrap();
        r
    }

    #[test]
    fn a_conflicting_row_in_a_multi_row_chunk_is_refused_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry_with_detectors(dir.path(), 40);
        let bundle = Uuid::from_u128(7);
        r.record_quanta("out", bundle, &[quantum(3, STATUS_SUCCEEDED)])
            .unwrap();
        // More outputs than one statement holds; detector 3's comes from
        // another quantum with another UUID, so it collides with the calexp
        // already registered for detector 3.
        let mut batch: Vec<NewQuantum> = (0..2 * ROWS_PER_STATEMENT as i64 + 1)
            .filter(|d| *d != 3)
            .map(|d| quantum(d, STATUS_SUCCEEDED))
            .collect();
        let mut other = quantum(3, STATUS_SUCCEEDED);
        other.id = Uuid::from_u128(999);
        other.outputs[0].id = Uuid::from_u128(998);
        batch.insert(5, other);
        let stats = r.record_quanta("out", bundle, &batch).unwrap();
        assert_eq!(stats.datasets_inserted, batch.len() - 1);
        assert_eq!(stats.rejected.len(), 1, "{:?}", stats.rejected);
        assert_eq!(stats.rejected[0].dataset_id, Uuid::from_u128(998));
        assert!(stats.rejected[0].reason.contains("already in RUN out"));
        let q = r.quantum(&Uuid::from_u128(999)).unwrap().unwrap();
        assert_eq!(q.execution.status, STATUS_PARTIAL);
        assert!(q.execution.error.unwrap().contains("not registered"));
        assert!(r.producer_of(&Uuid::from_u128(998)).unwrap().is_none());
        assert!(r.quantum_outputs(&Uuid::from_u128(999)).unwrap().is_empty());
        for q in batch.iter().filter(|q| q.id != Uuid::from_u128(999)) {
            assert_eq!(r.producer_of(&q.outputs[0].id).unwrap(), Some(q.id));
            let row = r.quantum(&q.id).unwrap().unwrap();
            assert_eq!(row.execution.status, STATUS_SUCCEEDED);
        }
        let stored: i64 = r
            .conn
            .query_row(
                "SELECT count(*) FROM dataset WHERE path IS NOT NULL",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(stored as usize, batch.len());
    }

    #[test]
    fn a_quantum_listed_twice_in_a_batch_ends_as_its_last_copy() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry(dir.path());
        let bundle = Uuid::from_u128(7);
        let mut failed = quantum(0, "failed");
        failed.outputs.clear();
        let stats = r
            .record_quanta("out", bundle, &[failed, quantum(0, STATUS_SUCCEEDED)])
            .unwrap();
        assert_eq!(stats.quanta_written, 2);
        assert_eq!(stats.datasets_inserted, 1);
        let id = Uuid::from_u128(100);
        let q = r.quantum(&id).unwrap().unwrap();
        assert_eq!(q.execution.status, STATUS_SUCCEEDED);
        assert_eq!(r.quantum_inputs(&id).unwrap().len(), 1);
        assert_eq!(r.quantum_outputs(&id).unwrap().len(), 1);
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
