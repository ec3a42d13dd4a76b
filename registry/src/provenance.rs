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
//! with `INSERT OR IGNORE`; a quantum row is upserted, except that a
//! quantum already recorded as `succeeded` is never rewritten, so a second
//! merge of the same journals changes nothing.

use foldhash::{HashMap as FastMap, HashMapExt, HashSet as FastSet, HashSetExt};

use quanta_core::{CollectionType, DataId, DataIdValue, DatasetType, Uuid};
use serde::Serialize;

use crate::database::{BulkInsert, Database, Param, Row, ValueRef};
use crate::datasets::{record_values, DatastoreRecord, RECORD_COLUMNS};
use crate::error::{RegistryError, Result};
use crate::registry::Registry;
use crate::schema::{quote, record_exists_query};

/// The status text of a quantum whose task succeeded but some of whose
/// outputs could not be verified or registered: a later merge retries it.
pub const STATUS_PARTIAL: &str = "partial";
/// The status text of a fully merged successful quantum.
pub const STATUS_SUCCEEDED: &str = "succeeded";

/// One input link of a quantum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    /// A dataset of the same RUN, type and data ID this one replaces
    /// (`--clobber`): its row is removed in the transaction that inserts
    /// this one, unless it is gone already or still in use (an input in
    /// recorded provenance, a TAGGED or CALIBRATION member), in which case
    /// this output is refused as usual.
    pub replaces: Option<Uuid>,
}

/// How a quantum ran, as recorded in the `quantum` table.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
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
    /// Datasets removed because an output replaced them (`--clobber`).
    pub datasets_replaced: usize,
    pub rejected: Vec<RejectedDataset>,
}

/// The per-run record of what was run: pipeline, task configs, software.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
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

/// A recorded quantum as [`Registry::for_each_quantum_in_run`] hands it
/// out: the row's own text, borrowed, unparsed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantumBrief<'a> {
    pub id: Uuid,
    pub task_label: &'a str,
    /// The data ID as stored (JSON; `serde_json::from_str::<DataId>`).
    pub data_id_json: &'a str,
    pub status: &'a str,
    pub attempts: u32,
    pub host: Option<&'a str>,
    pub batch_job: Option<&'a str>,
    pub started: Option<&'a str>,
    pub finished: Option<&'a str>,
    pub wall_seconds: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    pub error: Option<&'a str>,
    /// The log tail as stored (a JSON array of strings), if any.
    pub log_tail_json: Option<&'a str>,
}

/// Quantum IDs per existence query (`WHERE id IN (...)`).
const IDS_PER_LOOKUP: usize = 64;

/// An output dataset type of the part being written.
struct OutputType {
    type_id: i64,
    dataset_type: DatasetType,
}

/// The insert of the part's dataset rows, whatever their type: one
/// statement for all types, so that rows go in in UUID order. Rows of two
/// types inserted type by type would interleave in every UUID index (a
/// quantum's outputs have neighbouring UUIDs), splitting pages in the middle
/// rather than appending (measured: 8% of the writer's instructions).
struct DatasetInsert {
    insert: BulkInsert,
    /// The dimension columns: those of every type of the part, in universe
    /// order; a type's row binds NULL to the others.
    dimensions: Vec<String>,
}

/// Columns of a dataset row before the type's dimension columns.
const DATASET_FIXED_COLS: usize = 11;

const QUANTUM_COLUMNS_INSERTED: &str =
    "quantum (id, run_id, bundle_id, task_label, data_id, status, attempts, host, \
     batch_job, started, finished, wall_seconds, cpu_seconds, peak_rss_bytes, exit_code, error, log_tail)";
const QUANTUM_COLS: usize = 17;
/// Rewrites a quantum recorded by an earlier merge, unless it succeeded.
const QUANTUM_UPSERT_TAIL: &str =
    " ON CONFLICT (id) DO UPDATE SET run_id = excluded.run_id, bundle_id = excluded.bundle_id, \
     task_label = excluded.task_label, data_id = excluded.data_id, status = excluded.status, \
     attempts = excluded.attempts, host = excluded.host, batch_job = excluded.batch_job, \
     started = excluded.started, finished = excluded.finished, wall_seconds = excluded.wall_seconds, \
     cpu_seconds = excluded.cpu_seconds, peak_rss_bytes = excluded.peak_rss_bytes, \
     exit_code = excluded.exit_code, error = excluded.error, log_tail = excluded.log_tail \
     WHERE quantum.status <> 'succeeded'";

/// The fixed-shape statements of [`Registry::record_quanta`].
struct BatchStatements {
    quanta: BulkInsert,
    quantum_upsert: String,
    inputs: BulkInsert,
    /// `SELECT id, status FROM quantum WHERE id IN (...)`.
    existing: String,
}

/// `?1, ?2, …, ?n`.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl BatchStatements {
    fn new(db: &Database) -> Self {
        Self {
            quanta: BulkInsert::new(db, QUANTUM_COLUMNS_INSERTED, QUANTUM_COLS),
            quantum_upsert: format!(
                "INSERT INTO {QUANTUM_COLUMNS_INSERTED} VALUES ({}){QUANTUM_UPSERT_TAIL}",
                placeholders(QUANTUM_COLS)
            ),
            inputs: BulkInsert::new(
                db,
                "quantum_input (quantum_id, dataset_id, connection, is_prerequisite, used)",
                5,
            ),
            existing: format!(
                "SELECT id, status FROM quantum WHERE id IN ({})",
                placeholders(IDS_PER_LOOKUP.min(db.max_parameters()))
            ),
        }
    }
}

/// One output dataset row to insert.
struct DatasetRow<'a> {
    /// Position in [`BatchWriter::types`].
    type_pos: usize,
    q: &'a NewQuantum,
    o: &'a QuantumOutputDataset,
    /// The standardized data ID's canonical text.
    data_id_key: String,
    /// (planned quantum, output) it belongs to.
    owner: (usize, usize),
}

/// One quantum row to write.
struct QuantumRowOut<'a> {
    q: &'a NewQuantum,
    status: &'a str,
    error: Option<String>,
    data_id_json: String,
    log_tail_json: String,
}

impl<'a> QuantumRowOut<'a> {
    /// The row's values, in the order of [`QUANTUM_COLUMNS_INSERTED`].
    fn values(&'a self, run_id: i64, bundle: &'a [u8]) -> [ValueRef<'a>; QUANTUM_COLS] {
        let q = self.q;
        let x = &q.execution;
        let text = |t: Option<&'a str>| t.map_or(ValueRef::Null, ValueRef::Text);
        [
            ValueRef::Blob(q.id.as_bytes()),
            ValueRef::Integer(run_id),
            ValueRef::Blob(bundle),
            ValueRef::Text(&q.task_label),
            ValueRef::Text(&self.data_id_json),
            ValueRef::Text(self.status),
            ValueRef::Integer(i64::from(x.attempts)),
            text(x.host.as_deref()),
            text(x.batch_job.as_deref()),
            text(x.started.as_deref()),
            text(x.finished.as_deref()),
            x.wall_seconds.map_or(ValueRef::Null, ValueRef::Real),
            x.cpu_seconds.map_or(ValueRef::Null, ValueRef::Real),
            x.peak_rss_bytes.map_or(ValueRef::Null, |v| {
                ValueRef::Integer(v.min(i64::MAX as u64) as i64)
            }),
            x.exit_code
                .map_or(ValueRef::Null, |v| ValueRef::Integer(i64::from(v))),
            text(self.error.as_deref()),
            ValueRef::Text(&self.log_tail_json),
        ]
    }
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
/// gathered per table, sorted by key (neighbouring keys share B-tree
/// pages) and written with multi-row statements, table by table: foreign
/// keys are off for the batch, so the order of tables does not matter, and
/// a quantum row is written only once the fate of its outputs is known (a
/// refused output makes it `partial`).
struct BatchWriter<'w, 'u> {
    /// The database, inside the batch's transaction.
    tx: &'w Database,
    run: &'w str,
    run_id: i64,
    bundle_blob: &'w [u8],
    types: &'w [OutputType],
    type_index: &'w FastMap<&'w str, usize>,
    datasets: &'w DatasetInsert,
    /// The caller knows that no quantum of the part has a row.
    known_new: bool,
    statements: &'w BatchStatements,
    universe: &'u quanta_core::DimensionUniverse,
    dimensions: &'w mut DimensionChecks,
    stats: &'w mut RecordStats,
}

impl BatchWriter<'_, '_> {
    /// The recorded status of those of `quanta` that have a row.
    fn existing_statuses(&self, quanta: &[NewQuantum]) -> Result<FastMap<Uuid, String>> {
        let mut found = FastMap::new();
        let mut stmt = self.tx.prepare(&self.statements.existing)?;
        let per_lookup = IDS_PER_LOOKUP.min(self.tx.max_parameters());
        for chunk in quanta.chunks(per_lookup) {
            // A short chunk repeats its last ID: `IN` ignores duplicates.
            let params: Vec<&dyn Param> = (0..per_lookup)
                .map(|i| &chunk[i.min(chunk.len() - 1)].id as &dyn Param)
                .collect();
            stmt.for_each_row(&params, |row| {
                found.insert(row.get::<Uuid>(0)?, row.get::<String>(1)?);
                Ok(true)
            })?;
        }
        Ok(found)
    }

    /// Writes quanta whose IDs are distinct.
    fn write_segment(&mut self, quanta: &[NewQuantum]) -> Result<()> {
        if quanta.is_empty() {
            return Ok(());
        }
        let existing = if self.known_new {
            FastMap::default()
        } else {
            self.existing_statuses(quanta)?
        };
        let mut planned: Vec<Planned<'_>> = Vec::with_capacity(quanta.len());
        let mut dataset_rows: Vec<DatasetRow<'_>> = Vec::new();
        for q in quanta {
            let status = existing.get(&q.id).map(String::as_str);
            if status == Some(STATUS_SUCCEEDED) {
                self.stats.quanta_unchanged += 1;
                continue;
            }
            let pos = planned.len();
            let mut plan = Planned {
                q,
                existing: status.is_some(),
                accepted: vec![false; q.outputs.len()],
                rejected: Vec::new(),
            };
            let status = q.execution.status.as_str();
            if status == STATUS_SUCCEEDED || status == STATUS_PARTIAL {
                for (oi, o) in q.outputs.iter().enumerate() {
                    let type_pos = self.type_index[o.dataset_type.as_str()];
                    let t = &self.types[type_pos];
                    let data_id = match o
                        .data_id
                        .standardized(&t.dataset_type.dimensions, self.universe)
                    {
                        Ok(d) => d,
                        Err(e) => {
                            plan.rejected.push(rejected(q, o, e.to_string()));
                            continue;
                        }
                    };
                    if let Some(dim) =
                        self.dimensions
                            .missing_record(self.tx, self.universe, &data_id)?
                    {
                        plan.rejected.push(rejected(q, o, format!(
                            "its {dim} record does not exist (insert it with `quanta dimensions insert`)"
                        )));
                        continue;
                    }
                    dataset_rows.push(DatasetRow {
                        type_pos,
                        q,
                        o,
                        data_id_key: data_id.canonical_key(),
                        owner: (pos, oi),
                    });
                }
            }
            planned.push(plan);
        }

        dataset_rows.sort_unstable_by_key(|row| row.o.id.as_u128());
        self.remove_replaced(&dataset_rows)?;
        self.insert_datasets(&dataset_rows, &mut planned)?;
        drop(dataset_rows);

        let mut new_rows: Vec<QuantumRowOut<'_>> = Vec::with_capacity(planned.len());
        let mut written: Vec<usize> = Vec::with_capacity(planned.len());
        for (pos, p) in planned.iter_mut().enumerate() {
            let q = p.q;
            let x = &q.execution;
            let mut status = x.status.as_str();
            let mut error = x.error.clone();
            if !p.rejected.is_empty() {
                status = STATUS_PARTIAL;
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
            let row = QuantumRowOut {
                q,
                status,
                error,
                data_id_json: q.data_id.to_json(),
                log_tail_json: serde_json::to_string(&x.log_tail).expect("strings serialize"),
            };
            if p.existing {
                let values = row.values(self.run_id, self.bundle_blob);
                let params: Vec<&dyn Param> = values.iter().map(|v| v as &dyn Param).collect();
                if self.tx.execute(&self.statements.quantum_upsert, &params)? == 0 {
                    self.stats.quanta_unchanged += 1;
                    continue;
                }
                // Inputs are rewritten whole: a quantum merged earlier as
                // failed may have read a different set on its successful
                // attempt.
                self.tx
                    .execute("DELETE FROM quantum_input WHERE quantum_id = ?1", &[&q.id])?;
            } else {
                new_rows.push(row);
            }
            written.push(pos);
        }
        new_rows.sort_unstable_by_key(|row| row.q.id.as_u128());
        let mut inserted = 0;
        let (run_id, bundle) = (self.run_id, self.bundle_blob);
        self.statements.quanta.run(
            self.tx,
            &new_rows,
            |sink, row| {
                row.values(run_id, bundle)
                    .into_iter()
                    .try_for_each(|v| sink.push(v))
            },
            |_, changed| {
                inserted += changed;
                Ok(())
            },
        )?;
        if inserted != new_rows.len() {
            // The lookup above (or the caller, for quanta known to be new)
            // saw no row for these quanta, in this transaction, so every
            // one of them must have been inserted.
            return Err(RegistryError::Invalid(format!(
                "recording quanta of RUN {}: {} new quantum rows, but {inserted} written{}",
                self.run,
                new_rows.len(),
                if self.known_new {
                    " (the others already had rows, though recorded as new)"
                } else {
                    ""
                }
            )));
        }
        drop(new_rows);
        self.stats.quanta_written += written.len();

        let mut inputs: Vec<(&Uuid, &QuantumInput)> = written
            .iter()
            .flat_map(|&pos| {
                let q = planned[pos].q;
                q.inputs.iter().map(move |i| (&q.id, i))
            })
            .collect();
        inputs.sort_unstable_by_key(|(q, i)| (q.as_u128(), i.dataset_id.as_u128()));
        self.statements.inputs.run(
            self.tx,
            &inputs,
            |sink, (qid, i)| {
                sink.push(ValueRef::Blob(qid.as_bytes()))?;
                sink.push(ValueRef::Blob(i.dataset_id.as_bytes()))?;
                sink.push(ValueRef::Text(&i.connection))?;
                sink.push(ValueRef::Integer(i64::from(i.is_prerequisite)))?;
                sink.push(ValueRef::Integer(i64::from(i.used)))
            },
            |_, _| Ok(()),
        )
    }

    /// Removes the datasets the part's outputs replace (`--clobber`), each
    /// only while it is still a dataset of this RUN that no TAGGED or
    /// CALIBRATION collection holds and no quantum of another RUN read
    /// (foreign keys are off in this transaction, so references are checked
    /// here; preflight refused such clobbers, this guards against what was
    /// recorded since). A quantum of this RUN left with no outputs at all
    /// has been superseded by this bundle's: its row and input links go too.
    fn remove_replaced(&mut self, rows: &[DatasetRow<'_>]) -> Result<()> {
        if rows.iter().all(|row| row.o.replaces.is_none()) {
            return Ok(());
        }
        let mut producer = self
            .tx
            .prepare("SELECT producer FROM dataset WHERE id = ?1 AND run_id = ?2")?;
        let mut remove = self.tx.prepare(
            "DELETE FROM dataset WHERE id = ?1 AND run_id = ?2 \
             AND NOT EXISTS (SELECT 1 FROM dataset_tags WHERE dataset_id = ?1) \
             AND NOT EXISTS (SELECT 1 FROM dataset_calibs WHERE dataset_id = ?1) \
             AND NOT EXISTS (SELECT 1 FROM quantum_input i JOIN quantum q ON q.id = i.quantum_id \
                             WHERE i.dataset_id = ?1 AND q.run_id <> ?2)",
        )?;
        let mut producers: Vec<Uuid> = Vec::new();
        for row in rows {
            let Some(old) = row.o.replaces else {
                continue;
            };
            let params: [&dyn Param; 2] = [&old, &self.run_id];
            let mut made_by: Option<Option<Uuid>> = None;
            producer.for_each_row(&params, |r| {
                made_by = Some(r.get(0)?);
                Ok(false)
            })?;
            let removed = remove.execute(&params)?;
            self.stats.datasets_replaced += removed as usize;
            if let (1, Some(Some(p))) = (removed, made_by) {
                producers.push(p);
            }
        }
        producers.sort_unstable();
        producers.dedup();
        let mut superseded = self.tx.prepare(
            "DELETE FROM quantum WHERE id = ?1 AND run_id = ?2 \
             AND NOT EXISTS (SELECT 1 FROM dataset WHERE producer = ?1)",
        )?;
        let mut links = self
            .tx
            .prepare("DELETE FROM quantum_input WHERE quantum_id = ?1")?;
        for p in &producers {
            if superseded.execute(&[p, &self.run_id])? == 1 {
                links.execute(&[p])?;
            }
        }
        Ok(())
    }

    /// Inserts the part's dataset rows (sorted by UUID). A statement that
    /// skipped rows is examined row by row: a row is registered if the
    /// dataset with its type and data ID in the RUN is this UUID (inserted
    /// now or by an earlier merge); otherwise another dataset holds that
    /// data ID, or the UUID is registered as something else, and the
    /// output is refused.
    fn insert_datasets(
        &mut self,
        rows: &[DatasetRow<'_>],
        planned: &mut [Planned<'_>],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let run_id = self.run_id;
        let types = self.types;
        let dims = &self.datasets.dimensions;
        let tx = self.tx;
        let run = self.run;
        let stats = &mut *self.stats;
        self.datasets.insert.run(
            tx,
            rows,
            |sink, row| {
                let o = row.o;
                sink.push(ValueRef::Blob(o.id.as_bytes()))?;
                sink.push(ValueRef::Integer(types[row.type_pos].type_id))?;
                sink.push(ValueRef::Integer(run_id))?;
                sink.push(ValueRef::Text(&row.data_id_key))?;
                sink.push(
                    row.q
                        .execution
                        .finished
                        .as_deref()
                        .map_or(ValueRef::Null, ValueRef::Text),
                )?;
                // The datastore record's columns, bound as ingest binds them.
                for value in record_values(Some(&o.stored)) {
                    sink.push(value)?;
                }
                sink.push(ValueRef::Blob(row.q.id.as_bytes()))?;
                sink.push(ValueRef::Text(&o.connection))?;
                // Standardizing only checked the caller's values (the data
                // ID has exactly its type's dimensions), so they can be
                // bound as they are; other types' dimensions are NULL.
                for dim in dims {
                    sink.push(o.data_id.get(dim).map_or(ValueRef::Null, Param::value))?;
                }
                Ok(())
            },
            |chunk, changed| {
                stats.datasets_inserted += changed;
                if changed == chunk.len() {
                    for row in chunk {
                        planned[row.owner.0].accepted[row.owner.1] = true;
                    }
                    return Ok(());
                }
                let mut holder = tx.prepare(
                    "SELECT id FROM dataset WHERE dataset_type_id = ?1 AND run_id = ?2 AND data_id = ?3",
                )?;
                let mut accepted = 0;
                for row in chunk {
                    let type_id = types[row.type_pos].type_id;
                    let mut held: Option<Uuid> = None;
                    holder.for_each_row(&[&type_id, &run_id, &row.data_id_key], |r| {
                        held = Some(r.get(0)?);
                        Ok(false)
                    })?;
                    let (pos, oi) = row.owner;
                    let p = &mut planned[pos];
                    let o = row.o;
                    let reason = match held {
                        Some(id) if id == o.id => {
                            p.accepted[oi] = true;
                            accepted += 1;
                            continue;
                        }
                        Some(_) => format!(
                            "another {} with this data ID is already in RUN {run}",
                            o.dataset_type
                        ),
                        None => format!(
                            "its UUID {} is already registered for another dataset",
                            o.id
                        ),
                    };
                    p.rejected.push(rejected(p.q, o, reason));
                }
                stats.datasets_skipped += accepted - changed.min(accepted);
                Ok(())
            },
        )
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

fn row_to_quantum(r: &Row<'_>) -> Result<QuantumRow> {
    let id: Uuid = r.get(0)?;
    let conv = |what: &str, e: serde_json::Error| {
        RegistryError::Invalid(format!(
            "quantum {id}: its {what} in the registry is not valid JSON ({e})"
        ))
    };
    let data_id: String = r.get(4)?;
    let log_tail: Option<String> = r.get(16)?;
    Ok(QuantumRow {
        id,
        run: r.get(1)?,
        bundle_id: r.get(2)?,
        task_label: r.get(3)?,
        data_id: serde_json::from_str(&data_id).map_err(|e| conv("data ID", e))?,
        execution: QuantumExecution {
            status: r.get(5)?,
            attempts: r.get(6)?,
            host: r.get(7)?,
            batch_job: r.get(8)?,
            started: r.get(9)?,
            finished: r.get(10)?,
            wall_seconds: r.get(11)?,
            cpu_seconds: r.get(12)?,
            peak_rss_bytes: r.get::<Option<i64>>(13)?.map(|v| v.max(0) as u64),
            exit_code: r.get(14)?,
            error: r.get(15)?,
            log_tail: match log_tail {
                Some(t) => serde_json::from_str(&t).map_err(|e| conv("log tail", e))?,
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
    FastMap<Vec<DataIdValue>, bool>,
);

/// Existence checks of the dimension records data IDs refer to, one
/// lookup per distinct record and transaction (a million datasets refer to
/// a few thousand records), standing in for per-row foreign keys. Kept by
/// the registry for the whole open transaction, so that the parts of one
/// (`record_quanta_uncommitted`) do not look the same records up again.
#[derive(Default)]
pub(crate) struct DimensionChecks {
    /// Dimension name → position in `checks`.
    index: FastMap<String, usize>,
    /// Per dimension seen, in the order first seen.
    checks: Vec<DimensionCheck>,
    /// The last data ID found complete: outputs of one quantum usually
    /// share it, which saves the per-dimension lookups.
    last_complete: Option<DataId>,
    values: Vec<DataIdValue>,
}

impl DimensionChecks {
    /// The first dimension of a standardized data ID whose record is
    /// missing, if any.
    fn missing_record(
        &mut self,
        db: &Database,
        universe: &quanta_core::DimensionUniverse,
        data_id: &DataId,
    ) -> Result<Option<String>> {
        if self.last_complete.as_ref() == Some(data_id) {
            return Ok(None);
        }
        for (dim, _) in data_id.iter() {
            let at = match self.index.get(dim) {
                Some(at) => *at,
                None => {
                    let element = universe.dimension(dim)?;
                    let query = record_exists_query(element)
                        .map(|(sql, cols)| (sql, cols.into_iter().map(str::to_string).collect()));
                    self.checks.push((query, FastMap::new()));
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
                    let params: Vec<&dyn Param> =
                        self.values.iter().map(|v| v as &dyn Param).collect();
                    let e = db.prepare(sql)?.exists(&params)?;
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

impl Registry {
    /// Records the run's provenance (once per run and bundle; a second call
    /// for the same pair is a no-op). The RUN must exist.
    pub fn record_run_provenance(&mut self, p: &RunProvenance) -> Result<bool> {
        self.insert_run_provenance(p)
    }

    /// [`Registry::record_run_provenance`] in whatever transaction is open.
    pub(crate) fn insert_run_provenance(&self, p: &RunProvenance) -> Result<bool> {
        let run = self.collection_of_type(&p.run, CollectionType::Run)?;
        let changed = self.db.execute(
            "INSERT INTO run_provenance (run_id, bundle_id, pipeline_yaml, task_configs, quanta_version, \
             command_line, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (run_id, bundle_id) DO NOTHING",
            &[
                &run.id,
                &p.bundle_id,
                &p.pipeline_yaml,
                &p.task_configs.to_string(),
                &p.quanta_version,
                &serde_json::to_string(&p.command_line).expect("strings serialize"),
                &p.created_at,
                &p.created_by,
            ],
        )?;
        Ok(changed > 0)
    }

    /// The provenance rows of a RUN (one per bundle merged into it).
    pub fn run_provenance(&self, run: &str) -> Result<Vec<RunProvenance>> {
        let record = self.collection_of_type(run, CollectionType::Run)?;
        let rows = self.db.query_rows(
            "SELECT bundle_id, pipeline_yaml, task_configs, quanta_version, command_line, created_at, created_by \
             FROM run_provenance WHERE run_id = ?1 ORDER BY created_at, bundle_id",
            &[&record.id],
            |r| {
                Ok((
                    r.get::<Uuid>(0)?,
                    r.get::<String>(1)?,
                    r.get::<String>(2)?,
                    r.get::<String>(3)?,
                    r.get::<String>(4)?,
                    r.get::<String>(5)?,
                    r.get::<String>(6)?,
                ))
            },
        )?;
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

    /// Calls `each` with the UUID and recorded status of every quantum of
    /// one bundle, row by row: lets a merge skip what an earlier merge
    /// already completed, keeping only what it needs of each (a second
    /// merge of 10^7 quanta reads 10^7 rows).
    pub fn for_each_quantum_status(
        &self,
        bundle_id: Uuid,
        mut each: impl FnMut(Uuid, &str),
    ) -> Result<()> {
        // Every `quantum` row is read (no index by bundle).
        self.db.with_scan_cache(|| {
            self.db.for_each_row(
                "SELECT id, status FROM quantum WHERE bundle_id = ?1",
                &[&bundle_id],
                |r| {
                    each(r.get(0)?, r.get_str(1)?.unwrap_or_default());
                    Ok(true)
                },
            )
        })
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
        let stats = self.record_quanta_uncommitted(run, bundle_id, quanta)?;
        self.commit_open()?;
        Ok(stats)
    }

    /// Like [`Registry::record_quanta`], but leaves the transaction open:
    /// later calls add to it until [`Registry::commit_open`]. A caller
    /// can so free each part as soon as it is written and still commit
    /// large transactions (fewer commits write less log). On error the
    /// open transaction is rolled back whole.
    pub fn record_quanta_uncommitted(
        &mut self,
        run: &str,
        bundle_id: Uuid,
        quanta: &[NewQuantum],
    ) -> Result<RecordStats> {
        self.record_uncommitted(run, bundle_id, quanta, false)
    }

    /// Like [`Registry::record_quanta_uncommitted`], for quanta the caller
    /// knows have no row yet (merge: a bundle none of whose quanta any
    /// earlier merge recorded). Skips the lookup of their existing rows; a
    /// quantum that does have one fails the part, and the transaction is
    /// rolled back.
    pub fn record_new_quanta_uncommitted(
        &mut self,
        run: &str,
        bundle_id: Uuid,
        quanta: &[NewQuantum],
    ) -> Result<RecordStats> {
        self.record_uncommitted(run, bundle_id, quanta, true)
    }

    fn record_uncommitted(
        &mut self,
        run: &str,
        bundle_id: Uuid,
        quanta: &[NewQuantum],
        known_new: bool,
    ) -> Result<RecordStats> {
        if !self.db.in_transaction() {
            // Per-row foreign-key checks cost several B-tree lookups per
            // dataset on the merge's hot path: the transaction checks them
            // set-wise (`database/foreign_keys.rs`). The dataset rows'
            // dimension records are checked below (`DimensionChecks`),
            // their type and RUN looked up in the transaction, and every
            // input link names a quantum written or found in it.
            self.db.begin_set_wise()?;
            // What an earlier transaction found may have changed since.
            self.dimension_checks = DimensionChecks::default();
        }
        let result = self.record_quanta_unchecked(run, bundle_id, quanta, known_new);
        if result.is_err() {
            let _ = self.db.rollback();
        }
        result
    }

    fn record_quanta_unchecked(
        &mut self,
        run: &str,
        bundle_id: Uuid,
        quanta: &[NewQuantum],
        known_new: bool,
    ) -> Result<RecordStats> {
        let run_record = self.collection_of_type(run, CollectionType::Run)?;
        let mut types: Vec<OutputType> = Vec::new();
        let mut type_index: FastMap<&str, usize> = FastMap::new();
        for q in quanta {
            for o in &q.outputs {
                if type_index.contains_key(o.dataset_type.as_str()) {
                    continue;
                }
                let dataset_type = self.dataset_type_required(&o.dataset_type)?;
                let type_id = self.dataset_type_id(&o.dataset_type)?;
                type_index.insert(o.dataset_type.as_str(), types.len());
                types.push(OutputType {
                    type_id,
                    dataset_type,
                });
            }
        }
        let mut dimensions: Vec<String> = Vec::new();
        for t in &types {
            for dim in t.dataset_type.dimensions.iter() {
                if !dimensions.iter().any(|d| d == dim) {
                    dimensions.push(dim.to_string());
                }
            }
        }
        dimensions.sort_by_key(|d| self.universe.position(d));
        let columns = format!(
            "dataset (id, dataset_type_id, run_id, data_id, ingest_date, \
             {RECORD_COLUMNS}, producer, producer_connection{})",
            dimensions
                .iter()
                .map(|d| format!(", {}", quote(d)))
                .collect::<String>(),
        );
        let datasets = DatasetInsert {
            insert: BulkInsert::new(&self.db, &columns, DATASET_FIXED_COLS + dimensions.len()),
            dimensions,
        };
        let statements = BatchStatements::new(&self.db);
        let bundle_blob = bundle_id.as_bytes().to_vec();
        let mut stats = RecordStats::default();
        // Put back only on success: a failed part rolls the transaction back.
        let mut dimensions = std::mem::take(&mut self.dimension_checks);
        {
            let mut writer = BatchWriter {
                tx: &self.db,
                run,
                run_id: run_record.id,
                bundle_blob: &bundle_blob,
                types: &types,
                type_index: &type_index,
                datasets: &datasets,
                known_new,
                statements: &statements,
                universe: &self.universe,
                dimensions: &mut dimensions,
                stats: &mut stats,
            };
            // A quantum listed twice must see the first copy's row, so the
            // batch is written in segments of distinct quanta.
            let mut seen: FastSet<Uuid> = FastSet::new();
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
        self.dimension_checks = dimensions;
        Ok(stats)
    }

    /// A recorded quantum.
    pub fn quantum(&self, id: &Uuid) -> Result<Option<QuantumRow>> {
        let sql = format!(
            "SELECT {QUANTUM_COLUMNS} FROM quantum q JOIN collection c ON c.id = q.run_id WHERE q.id = ?1"
        );
        self.db.query_row(&sql, &[id], row_to_quantum)
    }

    /// Every recorded quantum of a RUN, by task label and data ID.
    pub fn quanta_in_run(&self, run: &str) -> Result<Vec<QuantumRow>> {
        let record = self.collection_of_type(run, CollectionType::Run)?;
        let sql = format!(
            "SELECT {QUANTUM_COLUMNS} FROM quantum q JOIN collection c ON c.id = q.run_id \
             WHERE q.run_id = ?1 ORDER BY q.task_label, q.data_id, q.id"
        );
        self.db.query_rows(&sql, &[&record.id], row_to_quantum)
    }

    /// Every recorded quantum of a RUN, in storage order, handed to `f` one
    /// at a time as borrowed text: nothing is collected or parsed (the data
    /// ID and the log tail stay the registry's JSON), so a report over
    /// millions of quanta costs one pass over the rows. Read-only.
    pub fn for_each_quantum_in_run(
        &self,
        run: &str,
        mut f: impl FnMut(&QuantumBrief<'_>),
    ) -> Result<()> {
        let record = self.collection_of_type(run, CollectionType::Run)?;
        self.db.for_each_row(
            "SELECT id, task_label, data_id, status, attempts, host, batch_job, started, \
             finished, wall_seconds, peak_rss_bytes, error, log_tail FROM quantum WHERE run_id = ?1",
            &[&record.id],
            |r| {
            let text = |i: usize| -> Result<Option<&str>> {
                match r.value(i)? {
                    ValueRef::Null => Ok(None),
                    ValueRef::Text(t) => Ok(Some(t)),
                    _ => Err(RegistryError::Invalid(format!(
                        "a quantum of {run}: column {i} of its row is not text"
                    ))),
                }
            };
            let brief = QuantumBrief {
                id: r.get(0)?,
                task_label: text(1)?.unwrap_or_default(),
                data_id_json: text(2)?.unwrap_or_default(),
                status: text(3)?.unwrap_or_default(),
                attempts: r.get(4)?,
                host: text(5)?,
                batch_job: text(6)?,
                started: text(7)?,
                finished: text(8)?,
                wall_seconds: r.get(9)?,
                peak_rss_bytes: r.get::<Option<i64>>(10)?.map(|v| v.max(0) as u64),
                error: text(11)?,
                log_tail_json: text(12)?,
            };
            f(&brief);
            Ok(true)
        })
    }

    /// The quantum that produced a dataset, if it was made by a merged
    /// quantum (raw and ingested datasets have none).
    pub fn producer_of(&self, dataset_id: &Uuid) -> Result<Option<Uuid>> {
        let id: Option<Option<Uuid>> = self.db.query_row(
            "SELECT producer FROM dataset WHERE id = ?1",
            &[dataset_id],
            |r| r.get(0),
        )?;
        Ok(id.flatten())
    }

    /// The input links of a quantum, prerequisites last, then by connection
    /// and dataset.
    pub fn quantum_inputs(&self, quantum_id: &Uuid) -> Result<Vec<QuantumInput>> {
        self.db.query_rows(
            "SELECT dataset_id, connection, is_prerequisite, used FROM quantum_input \
             WHERE quantum_id = ?1 ORDER BY is_prerequisite, connection, dataset_id",
            &[quantum_id],
            |r| {
                Ok(QuantumInput {
                    dataset_id: r.get(0)?,
                    connection: r.get(1)?,
                    is_prerequisite: r.get(2)?,
                    used: r.get(3)?,
                })
            },
        )
    }

    /// The registered outputs of a quantum: (dataset, connection).
    /// Outputs removed since are listed too (see
    /// [`Registry::removed_dataset`]).
    pub fn quantum_outputs(&self, quantum_id: &Uuid) -> Result<Vec<(Uuid, String)>> {
        let sql = if self.has_removal_tables {
            "SELECT id, producer_connection FROM dataset WHERE producer = ?1 \
             UNION ALL SELECT id, producer_connection FROM removed_dataset WHERE producer = ?1 \
             ORDER BY 2, 1"
        } else {
            "SELECT id, producer_connection FROM dataset WHERE producer = ?1 \
             ORDER BY producer_connection, id"
        };
        self.db
            .query_rows(sql, &[quantum_id], |r| Ok((r.get(0)?, r.get(1)?)))
    }

    /// The quanta that read a dataset (used inputs only).
    pub fn consumers_of(&self, dataset_id: &Uuid) -> Result<Vec<Uuid>> {
        self.db.query_rows(
            "SELECT quantum_id FROM quantum_input WHERE dataset_id = ?1 AND used ORDER BY quantum_id",
            &[dataset_id],
            |r| r.get(0),
        )
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
                replaces: None,
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
    fn every_quantum_of_a_run_is_handed_out_as_the_rows_text() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry_with_detectors(dir.path(), 3);
        let mut failed = quantum(2, "failed");
        failed.execution.error = Some("boom".into());
        failed.execution.log_tail = vec!["last <line>".into()];
        failed.execution.batch_job = Some("42_1".into());
        r.record_quanta(
            "out",
            Uuid::from_u128(7),
            &[quantum(1, STATUS_SUCCEEDED), failed],
        )
        .unwrap();
        let mut seen = Vec::new();
        r.for_each_quantum_in_run("out", |q| {
            let data_id: DataId = serde_json::from_str(q.data_id_json).unwrap();
            let tail: Option<Vec<String>> =
                q.log_tail_json.map(|t| serde_json::from_str(t).unwrap());
            seen.push((
                q.id,
                q.task_label.to_string(),
                data_id,
                q.status.to_string(),
                q.batch_job.map(String::from),
                q.error.map(String::from),
                tail,
                q.wall_seconds,
                q.peak_rss_bytes,
                q.started.map(String::from),
            ));
        })
        .unwrap();
        seen.sort_by_key(|s| s.0);
        let rows = r.quanta_in_run("out").unwrap();
        assert_eq!(seen.len(), 2);
        for (s, row) in seen.iter().zip(&rows) {
            assert_eq!(
                (s.0, &s.1, &s.2, &s.3),
                (row.id, &row.task_label, &row.data_id, &row.execution.status)
            );
            assert_eq!(
                (&s.4, &s.5),
                (&row.execution.batch_job, &row.execution.error)
            );
            assert_eq!(s.6.clone().unwrap_or_default(), row.execution.log_tail);
            assert_eq!(
                (s.7, s.8, &s.9),
                (
                    row.execution.wall_seconds,
                    row.execution.peak_rss_bytes,
                    &row.execution.started
                )
            );
        }
        assert_eq!(seen[1].6.as_deref(), Some(&["last <line>".to_string()][..]));
        assert!(
            r.for_each_quantum_in_run("nope", |_| {}).is_err(),
            "an unknown RUN is an error"
        );
    }

    #[test]
    fn quanta_recorded_as_new_skip_the_lookup_but_not_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry_with_detectors(dir.path(), 4);
        let bundle = Uuid::from_u128(7);
        let status = |r: &Registry, id: u128| {
            r.quantum(&Uuid::from_u128(id))
                .unwrap()
                .map(|q| q.execution.status)
        };
        let stats = r
            .record_new_quanta_uncommitted("out", bundle, &[quantum(1, STATUS_SUCCEEDED)])
            .unwrap();
        r.commit_open().unwrap();
        assert_eq!((stats.quanta_written, stats.datasets_inserted), (1, 1));
        assert_eq!(status(&r, 101).as_deref(), Some(STATUS_SUCCEEDED));
        // Quantum 1 has a row: claiming it is new fails the whole part,
        // quantum 2's rows included.
        let err = r
            .record_new_quanta_uncommitted(
                "out",
                bundle,
                &[quantum(2, STATUS_SUCCEEDED), quantum(1, "failed")],
            )
            .unwrap_err();
        assert!(err.to_string().contains("already had rows"), "{err}");
        assert_eq!(status(&r, 102), None);
        assert!(r.producer_of(&Uuid::from_u128(202)).unwrap().is_none());
        assert_eq!(status(&r, 101).as_deref(), Some(STATUS_SUCCEEDED));
    }

    #[test]
    fn outputs_of_types_with_other_dimensions_share_a_part() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry_with_detectors(dir.path(), 4);
        r.register_dataset_type(&DatasetType {
            name: "summary".into(),
            dimensions: DimensionGroup {
                names: vec!["instrument".into()],
            },
            storage_class: "Json".into(),
            is_calibration: false,
        })
        .unwrap();
        let summary = |id: u128, quantum: &NewQuantum| QuantumOutputDataset {
            id: Uuid::from_u128(id),
            dataset_type: "summary".into(),
            data_id: DataId::from_pairs([("instrument", "Cam")]),
            connection: "summary".into(),
            replaces: None,
            stored: DatastoreRecord {
                path: format!("out/summary/{}.json", quantum.id),
                formatter: "json".into(),
                size: 10,
                checksum: "00".into(),
            },
        };
        let mut batch: Vec<NewQuantum> = (1..4).map(|d| quantum(d, STATUS_SUCCEEDED)).collect();
        // Its UUID sorts between the calexps' (202, 203 and 300), so the
        // part's statement mixes the two types.
        let first = summary(250, &batch[0]);
        batch[0].outputs[0].id = Uuid::from_u128(300);
        batch[0].outputs.push(first);
        // A second summary for the same data ID is refused; its check
        // looks for the holder among summaries, not calexps.
        let second = summary(260, &batch[2]);
        batch[2].outputs.push(second);
        let stats = r.record_quanta("out", Uuid::from_u128(7), &batch).unwrap();
        assert_eq!(stats.datasets_inserted, 4);
        assert_eq!(stats.rejected.len(), 1, "{:?}", stats.rejected);
        assert_eq!(stats.rejected[0].dataset_id, Uuid::from_u128(260));
        assert!(
            stats.rejected[0]
                .reason
                .contains("another summary with this data ID is already in RUN out"),
            "{:?}",
            stats.rejected
        );
        let rows: Vec<(String, String, Option<String>, Option<i64>)> =
            r.db.sqlite()
                .unwrap()
                .prepare(
                    "SELECT t.name, d.data_id, d.instrument, d.detector FROM dataset d \
                 JOIN dataset_type t ON t.id = d.dataset_type_id ORDER BY d.id",
                )
                .unwrap()
                .query_map([], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
        let cam = Some("Cam".to_string());
        assert_eq!(
            rows,
            vec![
                ("calexp".into(), r#"["Cam",2]"#.into(), cam.clone(), Some(2)),
                ("calexp".into(), r#"["Cam",3]"#.into(), cam.clone(), Some(3)),
                ("summary".into(), r#"["Cam"]"#.into(), cam.clone(), None),
                ("calexp".into(), r#"["Cam",1]"#.into(), cam, Some(1)),
            ]
        );
        assert_eq!(
            r.producer_of(&Uuid::from_u128(250)).unwrap(),
            Some(batch[0].id)
        );
    }

    #[test]
    fn a_conflicting_row_in_a_multi_row_chunk_is_refused_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry_with_detectors(
            dir.path(),
            2 * crate::database::bulk::SQLITE_ROWS_PER_STATEMENT as i64 + 1,
        );
        let bundle = Uuid::from_u128(7);
        r.record_quanta("out", bundle, &[quantum(3, STATUS_SUCCEEDED)])
            .unwrap();
        // More outputs than one statement holds; detector 3's comes from
        // another quantum with another UUID, so it collides with the calexp
        // already registered for detector 3.
        let mut batch: Vec<NewQuantum> =
            (0..2 * crate::database::bulk::SQLITE_ROWS_PER_STATEMENT as i64 + 1)
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
        let stored: i64 =
            r.db.sqlite()
                .unwrap()
                .query_row(
                    "SELECT count(*) FROM dataset WHERE path IS NOT NULL",
                    [],
                    |row| row.get(0),
                )
                .unwrap();
        assert_eq!(stored as usize, batch.len());
    }

    #[test]
    fn an_output_whose_uuid_names_another_dataset_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry_with_detectors(dir.path(), 2);
        let bundle = Uuid::from_u128(7);
        r.record_quanta("out", bundle, &[quantum(0, STATUS_SUCCEEDED)])
            .unwrap();
        // Detector 1's output claims the UUID of detector 0's calexp.
        let mut clash = quantum(1, STATUS_SUCCEEDED);
        clash.outputs[0].id = Uuid::from_u128(200);
        let stats = r.record_quanta("out", bundle, &[clash]).unwrap();
        assert_eq!(stats.datasets_inserted, 0);
        assert_eq!(stats.rejected.len(), 1, "{:?}", stats.rejected);
        assert!(
            stats.rejected[0]
                .reason
                .contains("already registered for another dataset"),
            "{:?}",
            stats.rejected
        );
        let q = r.quantum(&Uuid::from_u128(101)).unwrap().unwrap();
        assert_eq!(q.execution.status, STATUS_PARTIAL);
        // The registered dataset keeps its producer.
        assert_eq!(
            r.producer_of(&Uuid::from_u128(200)).unwrap(),
            Some(Uuid::from_u128(100))
        );
    }

    #[test]
    fn uncommitted_records_commit_together_or_roll_back_together() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry(dir.path());
        let bundle = Uuid::from_u128(7);
        let other = rusqlite::Connection::open(dir.path().join("r.sqlite3")).unwrap();
        let count = |c: &rusqlite::Connection| -> i64 {
            c.query_row("SELECT count(*) FROM quantum", [], |row| row.get(0))
                .unwrap()
        };
        r.record_quanta_uncommitted("out", bundle, &[quantum(0, STATUS_SUCCEEDED)])
            .unwrap();
        r.record_quanta_uncommitted("out", bundle, &[quantum(1, STATUS_SUCCEEDED)])
            .unwrap();
        assert_eq!(count(r.db.sqlite().unwrap()), 2);
        assert_eq!(count(&other), 0, "nothing is visible before the commit");
        r.commit_open().unwrap();
        assert_eq!(count(&other), 2);

        // A failing part rolls back the whole open transaction.
        r.record_quanta_uncommitted("out", bundle, &[quantum(2, STATUS_SUCCEEDED)])
            .unwrap();
        let err = r
            .record_quanta_uncommitted("no-such-run", bundle, &[quantum(0, STATUS_SUCCEEDED)])
            .unwrap_err();
        assert!(err.to_string().contains("no-such-run"), "{err}");
        assert!(r.db.sqlite().unwrap().is_autocommit());
        assert_eq!(count(r.db.sqlite().unwrap()), 2);
        r.commit_open().unwrap();
        let fk: i64 =
            r.db.sqlite()
                .unwrap()
                .query_row("PRAGMA foreign_keys", [], |row| row.get(0))
                .unwrap();
        assert_eq!(fk, 1);
    }

    #[test]
    fn dimension_records_are_looked_up_once_per_transaction_not_once_per_part() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry(dir.path());
        let bundle = Uuid::from_u128(7);
        let refused = |stats: &RecordStats| -> Vec<Uuid> {
            stats.rejected.iter().map(|x| x.dataset_id).collect()
        };
        // Detector 1 has no record: refused in the first part, and still in
        // a later part of the same transaction.
        let first = r
            .record_quanta_uncommitted(
                "out",
                bundle,
                &[quantum(0, STATUS_SUCCEEDED), quantum(1, STATUS_SUCCEEDED)],
            )
            .unwrap();
        assert_eq!(
            refused(&first),
            [quantum(1, STATUS_SUCCEEDED).outputs[0].id]
        );
        let known = r
            .dimension_checks
            .checks
            .iter()
            .map(|(_, k)| k.len())
            .sum::<usize>();
        assert!(known >= 2, "detectors 0 and 1 are remembered: {known}");
        let mut again = quantum(1, STATUS_SUCCEEDED);
        again.id = Uuid::from_u128(999);
        again.outputs[0].id = Uuid::from_u128(998);
        let second = r
            .record_quanta_uncommitted("out", bundle, &[again])
            .unwrap();
        assert_eq!(refused(&second), [Uuid::from_u128(998)]);
        let remembered = r
            .dimension_checks
            .checks
            .iter()
            .map(|(_, k)| k.len())
            .sum::<usize>();
        assert_eq!(
            remembered, known,
            "the second part forgot nothing (detector 0 included)"
        );
        r.commit_open().unwrap();

        // Once the record exists, the next transaction looks it up afresh.
        let records = crate::parse_records_json(
            r#"{"detector": [{"instrument": "Cam", "id": 1, "full_name": "D1"}]}"#,
            "test",
        )
        .unwrap();
        r.insert_dimension_records(&records).unwrap();
        let mut retried = quantum(1, STATUS_SUCCEEDED);
        retried.id = Uuid::from_u128(997);
        retried.outputs[0].id = Uuid::from_u128(996);
        let third = r.record_quanta("out", bundle, &[retried]).unwrap();
        assert!(third.rejected.is_empty(), "{:?}", third.rejected);
        assert_eq!(third.datasets_inserted, 1);
    }

    /// The value of an SQLite `PRAGMA` on the registry's connection.
    fn pragma(r: &Registry, name: &str) -> i64 {
        r.db.sqlite()
            .unwrap()
            .query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn bulk_writing_ends_with_the_log_checkpointed() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry_with_detectors(dir.path(), 3);
        let cache = |r: &Registry| pragma(r, "cache_size");
        let normal_cache = cache(&r);
        r.set_bulk_writing(Some(crate::BulkWrites::Appending))
            .unwrap();
        let pages: i64 =
            r.db.sqlite()
                .unwrap()
                .query_row("PRAGMA wal_autocheckpoint", [], |row| row.get(0))
                .unwrap();
        assert_eq!(pages, 0);
        // A smaller page cache while appending (negative: KiB).
        assert!(cache(&r) > normal_cache, "{} {normal_cache}", cache(&r));
        let batch: Vec<NewQuantum> = (0..3).map(|d| quantum(d, STATUS_SUCCEEDED)).collect();
        r.record_quanta("out", Uuid::from_u128(7), &batch).unwrap();
        let wal = dir.path().join("r.sqlite3-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        r.set_bulk_writing(None).unwrap();
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
        assert_eq!(cache(&r), normal_cache);
        let pages: i64 =
            r.db.sqlite()
                .unwrap()
                .query_row("PRAGMA wal_autocheckpoint", [], |row| row.get(0))
                .unwrap();
        assert!(pages > 0);
        // Everything is in the database file itself.
        let copy = dir.path().join("copy.sqlite3");
        std::fs::copy(dir.path().join("r.sqlite3"), &copy).unwrap();
        let n: i64 = rusqlite::Connection::open(&copy)
            .unwrap()
            .query_row("SELECT count(*) FROM dataset", [], |row| row.get(0))
            .unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn bulk_writing_scattered_rows_keeps_the_whole_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry_with_detectors(dir.path(), 3);
        let normal_cache = pragma(&r, "cache_size");
        r.set_bulk_writing(Some(crate::BulkWrites::Scattered))
            .unwrap();
        assert_eq!(pragma(&r, "cache_size"), normal_cache);
        assert_eq!(pragma(&r, "wal_autocheckpoint"), 0);
        let batch: Vec<NewQuantum> = (0..3).map(|d| quantum(d, STATUS_SUCCEEDED)).collect();
        r.record_quanta("out", Uuid::from_u128(7), &batch).unwrap();
        r.set_bulk_writing(None).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("r.sqlite3-wal"))
                .unwrap()
                .len(),
            0
        );
        assert!(pragma(&r, "wal_autocheckpoint") > 0);
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
        // Read with a scan's page cache, and the connection's own after.
        let cache = |r: &Registry| pragma(r, "cache_size");
        let own_cache = cache(&r);
        let mut recorded = 0;
        r.for_each_quantum_status(bundle, |_, _| {
            assert_eq!(cache(&r), crate::sqlite::SCAN_CACHE_KIB);
            recorded += 1;
        })
        .unwrap();
        assert_eq!(recorded, 2);
        assert_eq!(cache(&r), own_cache);
        assert_ne!(own_cache, crate::sqlite::SCAN_CACHE_KIB);
        // Foreign keys are back on for every other write.
        let fk: i64 =
            r.db.sqlite()
                .unwrap()
                .query_row("PRAGMA foreign_keys", [], |row| row.get(0))
                .unwrap();
        assert_eq!(fk, 1);
    }

    /// A `--clobber` output replaces the registered dataset of its data ID
    /// in the same transaction, and the old quantum left without outputs
    /// goes; a dataset a quantum of another RUN read is kept, and its
    /// would-be replacement refused.
    #[test]
    fn a_replacing_output_removes_the_old_dataset_unless_another_run_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry(dir.path());
        let bundle = Uuid::from_u128(7);
        r.record_quanta("out", bundle, &[quantum(0, STATUS_SUCCEEDED)])
            .unwrap();
        let old = Uuid::from_u128(200);
        let replacing = |n: u128| {
            let mut q = quantum(0, STATUS_SUCCEEDED);
            q.id = Uuid::from_u128(n);
            q.outputs[0].id = Uuid::from_u128(n + 1000);
            q.outputs[0].stored.path = format!("out/calexp/0-{n}.json");
            q.outputs[0].replaces = Some(old);
            q
        };

        // Another RUN's quantum read it: kept, and the replacement refused.
        r.register_collection("elsewhere", CollectionType::Run, None)
            .unwrap();
        let mut reader = quantum(0, "failed");
        reader.id = Uuid::from_u128(900);
        reader.outputs.clear();
        reader.inputs[0].dataset_id = old;
        r.record_quanta("elsewhere", Uuid::from_u128(8), &[reader])
            .unwrap();
        let stats = r
            .record_quanta("out", Uuid::from_u128(9), &[replacing(300)])
            .unwrap();
        assert_eq!(stats.datasets_replaced, 0);
        assert_eq!(stats.rejected.len(), 1, "{stats:?}");
        assert!(r.dataset_by_id(&old, None).unwrap().is_some());

        // Once nothing else reads it, it is replaced, and its producer,
        // left without outputs, goes with its input links.
        r.db.sqlite()
            .unwrap()
            .execute(
                "DELETE FROM quantum_input WHERE quantum_id = ?1",
                [Uuid::from_u128(900).as_bytes().as_slice()],
            )
            .unwrap();
        let stats = r
            .record_quanta("out", Uuid::from_u128(10), &[replacing(400)])
            .unwrap();
        assert_eq!(stats.datasets_replaced, 1);
        assert!(stats.rejected.is_empty(), "{stats:?}");
        assert!(r.dataset_by_id(&old, None).unwrap().is_none());
        assert!(r
            .dataset_by_id(&Uuid::from_u128(1400), None)
            .unwrap()
            .is_some());
        assert!(r.quantum(&Uuid::from_u128(100)).unwrap().is_none());
        assert!(r.quantum_inputs(&Uuid::from_u128(100)).unwrap().is_empty());
    }
}
