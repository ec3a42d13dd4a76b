//! Merge: folding a bundle's worker journals back into the full Registry.
//!
//! Owns: the order of a merge (check the bundle against the repo, fold the
//! journals, register the output RUN, dataset types, CHAINED collection and
//! run provenance, then per batch of quanta verify every output file and
//! record datasets and provenance in one transaction) and the summary of
//! what it did. Must not: write SQL (the registry's
//! [`record_quanta`](quanta_registry::Registry::record_quanta) does) or
//! interpret journal bytes (core's [`fold_journals`] does).
//!
//! A bundle made from another repository (its header's `repository_id`
//! differs from the registry's) is refused before anything is written.
//! Under `--clobber` the header lists the registered datasets the outputs
//! replace: each is unregistered in the transaction that registers its
//! replacement, and its file removed after the commits.
//!
//! A merge is idempotent and resumable: every write is keyed by the UUIDs
//! preflight assigned, each batch is one transaction holding a quantum's row
//! together with its datasets, and quanta already recorded as succeeded are
//! skipped without re-reading their files. A merge killed at any point and
//! rerun therefore ends in the state of one uninterrupted merge.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use foldhash::{HashMap as FastMap, HashMapExt, HashSet as FastSet, HashSetExt};
use quanta_core::{
    fold_journals, journal_dir_for, BlockQuantum, BlockRef, Bundle, BundleError, CampaignProgress,
    CollectionType, DecodedBlock, JournalError, JournalRecord, JournalRecords, QuantumProgress,
    QuantumState, ReplacedDataset, Uuid, WrittenOutput,
};
use quanta_datastore::{Datastore, ExpectedFile};
use quanta_registry::provenance::{STATUS_PARTIAL, STATUS_SUCCEEDED};
use quanta_registry::{
    DatastoreRecord, NewQuantum, QuantumExecution, QuantumInput, QuantumOutputDataset,
    RegistryError, RunProvenance,
};
use serde::Serialize;
use thiserror::Error;

use crate::butler::Butler;
use crate::error::ButlerError;

/// Quanta per transaction unless told otherwise: large enough that commits
/// cost little, small enough that a killed merge loses little work.
pub const DEFAULT_BATCH_QUANTA: usize = 50_000;

/// Quanta travel from verification to the writer in chunks of this
/// fraction of a transaction: the writer starts on the first chunk early,
/// and frees each once written rather than holding whole transactions in
/// memory (1M datasets: peak RSS ~1.1 → ~0.75 GB).
const CHUNKS_PER_TRANSACTION: usize = 8;

/// How to merge.
#[derive(Debug, Clone)]
pub struct MergeOptions {
    /// Where the journals are; default `<bundle>.journals/`.
    pub journals: Option<PathBuf>,
    /// Merge what has finished even though some quanta are still pending or
    /// running; a later merge adds the rest.
    pub incomplete: bool,
    /// Quanta per transaction (at least 1).
    pub batch_quanta: usize,
}

impl Default for MergeOptions {
    fn default() -> Self {
        Self {
            journals: None,
            incomplete: false,
            batch_quanta: DEFAULT_BATCH_QUANTA,
        }
    }
}

/// Why a merge could not run at all. Problems with individual quanta or
/// files are not errors: they are listed in the [`MergeSummary`].
#[derive(Debug, Error)]
pub enum MergeError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Butler(#[from] ButlerError),
    #[error(
        "bundle {bundle} was made for dimension universe {bundle_digest}, but repo {repo} has universe {repo_digest}"
    )]
    UniverseMismatch {
        bundle: PathBuf,
        bundle_digest: String,
        repo: PathBuf,
        repo_digest: String,
    },
    #[error(
        "bundle {bundle}: {pending} quanta are pending and {running} running according to the journals in {journals}; \
         wait for the workers, or merge what has finished with --incomplete (a later merge adds the rest)"
    )]
    Incomplete {
        bundle: PathBuf,
        journals: PathBuf,
        pending: usize,
        running: usize,
    },
    #[error(
        "bundle {bundle} was made from repository {bundle_repository}, but {repo} is repository {repo_repository}; \
         a bundle merges only into the repository it was made from (nothing was written)"
    )]
    OtherRepository {
        bundle: PathBuf,
        bundle_repository: Uuid,
        repo: PathBuf,
        repo_repository: String,
    },
    #[error("bundle {bundle}: {detail}")]
    Invalid { bundle: PathBuf, detail: String },
}

/// An output that was not registered, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerificationFailure {
    pub quantum_id: Uuid,
    pub task: String,
    pub dataset_id: Uuid,
    pub dataset_type: String,
    pub data_id: quanta_core::DataId,
    /// Relative to the datastore root.
    pub path: String,
    pub reason: String,
}

/// What a merge did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MergeSummary {
    pub bundle_id: Uuid,
    pub run: String,
    pub output_chain: Option<String>,
    pub journals: usize,
    /// Quanta per state according to the journals (pending included).
    pub quanta_by_state: BTreeMap<String, usize>,
    /// Quantum rows written or updated by this merge.
    pub quanta_recorded: usize,
    /// Quanta an earlier merge already completed.
    pub quanta_already_merged: usize,
    pub datasets_inserted: usize,
    /// Outputs whose UUID was already registered.
    pub datasets_existing: usize,
    /// Registered datasets that outputs replaced (`--clobber`): their rows
    /// were removed with the replacement's insert, their files afterwards.
    pub datasets_replaced: usize,
    /// Predicted outputs a successful quantum did not write (optional
    /// outputs it chose not to produce).
    pub outputs_not_written: usize,
    pub verification_failures: Vec<VerificationFailure>,
    /// Journals of other bundles, records of quanta not in the bundle.
    pub journal_problems: Vec<String>,
    /// Torn journal tails and other recoverable oddities.
    pub warnings: Vec<String>,
}

impl MergeSummary {
    /// Quanta that failed, timed out, ran out of memory or were blocked.
    pub fn failed_quanta(&self) -> usize {
        ["failed", "timed_out", "out_of_memory", "blocked"]
            .iter()
            .filter_map(|s| self.quanta_by_state.get(*s))
            .sum()
    }

    /// True when everything in the journals verified and no quantum failed.
    pub fn is_clean(&self) -> bool {
        self.verification_failures.is_empty()
            && self.journal_problems.is_empty()
            && self.failed_quanta() == 0
    }
}

/// Progress callback: (quanta examined, total quanta).
pub type ProgressFn<'a> = &'a mut dyn FnMut(u64, u64);

/// A quantum of the current batch with what the journals say about it.
struct Pending<'p> {
    /// The quantum is at `pos` in `block`, read there through a borrowed
    /// view rather than copied out.
    block: Arc<DecodedBlock>,
    pos: usize,
    progress: &'p QuantumProgress,
}

impl Pending<'_> {
    /// Always `Some`: `pos` is a position of `block`.
    fn quantum(&self) -> Option<BlockQuantum<'_>> {
        self.block.quantum(self.pos)
    }
}

/// Per output dataset type: the formatter recorded for its files.
struct OutputType {
    formatter: String,
}

struct Ctx {
    bundle_id: Uuid,
    run: String,
    /// From the header: sorted by the replacing output's UUID.
    replaced: Vec<ReplacedDataset>,
    task_labels: Vec<String>,
    output_types: HashMap<String, OutputType>,
}

impl Butler {
    /// Merges the journals of the bundle at `bundle_path` into this repo.
    /// See the module documentation for the guarantees.
    pub fn merge(
        &mut self,
        bundle_path: &Path,
        options: &MergeOptions,
        progress: ProgressFn<'_>,
    ) -> Result<MergeSummary, MergeError> {
        let bundle = Bundle::open(bundle_path)?;
        self.check_bundle_is_ours(bundle_path, &bundle)?;
        let header = bundle.header();
        let n_quanta = bundle.n_quanta();
        let journal_dir = options
            .journals
            .clone()
            .unwrap_or_else(|| journal_dir_for(bundle_path));
        let fold = fold_journals(&journal_dir, header.bundle_id, n_quanta)?;
        let mut summary = summarize_journals(&bundle, &fold);
        let pending = summary.quanta_by_state.get("pending").copied().unwrap_or(0);
        let running = summary.quanta_by_state.get("running").copied().unwrap_or(0);
        if (pending > 0 || running > 0) && !options.incomplete {
            return Err(MergeError::Incomplete {
                bundle: bundle_path.to_path_buf(),
                journals: journal_dir,
                pending,
                running,
            });
        }
        let datastore_root = self.datastore().root().to_path_buf();
        if Path::new(&header.datastore_root) != datastore_root {
            summary.warnings.push(format!(
                "the bundle was made for datastore {}, this repo's is {}; verifying files in the repo's",
                header.datastore_root,
                datastore_root.display()
            ));
        }

        let ctx = self.prepare(bundle_path, &bundle)?;
        let already = MergedBefore::read(self.registry(), header.bundle_id)?;
        let total = n_quanta as u64;
        progress(0, total);
        // A second handle on the same root: verification only hashes files,
        // and owning it lets the registry be borrowed mutably by the writer.
        let verifier = Datastore::new(
            self.datastore().root().to_path_buf(),
            self.datastore().config().clone(),
        )
        .map_err(ButlerError::from)?;
        let source = MergeSource {
            ctx: &ctx,
            verifier: &verifier,
            bundle: &bundle,
            fold: &fold,
            already: &already,
            batch_quanta: options.batch_quanta.max(1),
        };
        for totals in source.record(self.registry_mut(), bundle_path, &mut summary, progress)? {
            totals.apply(&mut summary);
        }
        self.remove_replaced_files(&ctx.replaced)?;
        progress(total, total);
        Ok(summary)
    }

    /// A bundle made for another universe or another repository is refused.
    fn check_bundle_is_ours(&self, bundle_path: &Path, bundle: &Bundle) -> Result<(), MergeError> {
        let header = bundle.header();
        let repo_digest = self.universe().digest();
        if header.universe_digest != repo_digest {
            return Err(MergeError::UniverseMismatch {
                bundle: bundle_path.to_path_buf(),
                bundle_digest: header.universe_digest.clone(),
                repo: self.root().to_path_buf(),
                repo_digest,
            });
        }
        let repo_repository = self.registry().repository_id()?;
        if repo_repository != Some(header.repository_id) {
            return Err(MergeError::OtherRepository {
                bundle: bundle_path.to_path_buf(),
                bundle_repository: header.repository_id,
                repo: self.root().to_path_buf(),
                repo_repository: repo_repository
                    .map_or_else(|| "without an identity".into(), |id| id.to_string()),
            });
        }
        Ok(())
    }

    /// Removes the files of datasets that outputs replaced (`--clobber`)
    /// once the registry no longer has them and has their replacement at
    /// another path. Run at the end of every merge, so a merge killed
    /// after its commits and rerun removes what it did not.
    fn remove_replaced_files(&self, replaced: &[ReplacedDataset]) -> Result<(), MergeError> {
        let registry = self.registry();
        for r in replaced {
            if registry.dataset_by_id(&r.id, None)?.is_some() || r.path.is_empty() {
                continue;
            }
            let replacement = registry.dataset_by_id(&r.by, None)?;
            let moved = replacement
                .and_then(|f| f.stored)
                .is_some_and(|s| s.path != r.path);
            if moved {
                self.datastore()
                    .remove(&r.path)
                    .map_err(ButlerError::from)?;
            }
        }
        Ok(())
    }

    /// Everything a merge writes once per bundle, each step idempotent: the
    /// RUN, the output dataset types, the CHAINED collection and the run
    /// provenance row.
    fn prepare(&mut self, bundle_path: &Path, bundle: &Bundle) -> Result<Ctx, MergeError> {
        let header = bundle.header();
        let invalid = |detail: String| MergeError::Invalid {
            bundle: bundle_path.to_path_buf(),
            detail,
        };
        let run = header.output_run.clone();
        self.registry_mut()
            .register_collection(&run, CollectionType::Run, None)?;

        let produced: HashSet<&str> = bundle
            .tasks()
            .iter()
            .flat_map(|t| t.outputs.iter().chain(&t.init_outputs))
            .map(|c| c.dataset_type.as_str())
            .collect();
        let mut output_types = HashMap::new();
        for dt in bundle.dataset_types() {
            if !produced.contains(dt.name.as_str()) {
                continue;
            }
            self.registry_mut().register_dataset_type(dt)?;
            let formatter = self
                .datastore()
                .formatters()
                .for_storage_class(&dt.storage_class)
                .map_err(ButlerError::from)?
                .name()
                .to_string();
            output_types.insert(dt.name.clone(), OutputType { formatter });
        }
        for name in &produced {
            if !output_types.contains_key(*name) {
                return Err(invalid(format!(
                    "a task produces dataset type `{name}`, which is not among the bundle's dataset types"
                )));
            }
        }

        if let Some(chain) = &header.output_chain {
            let registry = self.registry_mut();
            registry.register_collection(chain, CollectionType::Chained, None)?;
            let existing = registry.collection(chain)?.children;
            // A new chain searches the output first, then the inputs; an
            // existing one (an earlier run into the same chain) gets the new
            // RUN prepended, as LSST's pipetask does.
            let wanted: Vec<String> = if existing.is_empty() {
                std::iter::once(run.clone())
                    .chain(
                        header
                            .input_collections
                            .iter()
                            .filter(|c| **c != run)
                            .cloned(),
                    )
                    .collect()
            } else {
                std::iter::once(run.clone())
                    .chain(existing.iter().filter(|c| **c != run).cloned())
                    .collect()
            };
            if wanted != existing {
                registry.set_collection_chain(chain, &wanted)?;
            }
        }

        // An array, not an object, so the pipeline's task order survives.
        let task_configs: Vec<serde_json::Value> = bundle
            .tasks()
            .iter()
            .map(|t| serde_json::json!({"label": t.label, "config": t.config}))
            .collect();
        self.registry_mut().record_run_provenance(&RunProvenance {
            run: run.clone(),
            bundle_id: header.bundle_id,
            pipeline_yaml: header.pipeline_yaml.clone(),
            task_configs: serde_json::Value::Array(task_configs),
            quanta_version: header.quanta_version.clone(),
            command_line: header.command_line.clone(),
            created_at: header.created_at.clone(),
            created_by: header.created_by.clone(),
        })?;
        Ok(Ctx {
            bundle_id: header.bundle_id,
            run,
            replaced: header.replaced.clone(),
            task_labels: bundle.tasks().iter().map(|t| t.label.clone()).collect(),
            output_types,
        })
    }
}

/// Verifies the outputs of a batch of finished quanta (files in parallel,
/// in `pool` if given) and turns the batch into the rows to record, their
/// journal records read back through `records`; failures go to `summary`.
/// Empties `batch`.
fn verify_batch(
    ctx: &Ctx,
    datastore: &Datastore,
    pool: Option<&rayon::ThreadPool>,
    records: &mut JournalRecords,
    batch: &mut Vec<Pending<'_>>,
    summary: &mut MergeSummary,
) -> Result<Vec<NewQuantum>, MergeError> {
    /// An output file to check: the quantum at `pos` in the batch wrote
    /// `written[pos][output]`, predicted as `predicted`.
    struct Check<'b> {
        pos: usize,
        output: usize,
        connection: &'b str,
        predicted: BlockRef<'b>,
        formatter: &'b str,
    }
    let quanta: Vec<Option<BlockQuantum<'_>>> = batch.iter().map(Pending::quantum).collect();
    // A quantum's start, then its finish: the order a worker wrote them.
    let mut started: Vec<Option<JournalRecord>> = Vec::with_capacity(batch.len());
    let mut finished: Vec<Option<JournalRecord>> = Vec::with_capacity(batch.len());
    for item in batch.iter() {
        started.push(records.started(item.progress)?);
        finished.push(records.finished(item.progress)?);
    }
    // Taken out of the records: the verified outputs' paths and checksums
    // move into the rows rather than being copied.
    let mut written: Vec<Vec<WrittenOutput>> = finished
        .iter_mut()
        .map(|f| match f {
            Some(JournalRecord::Finished { outputs, .. }) => std::mem::take(outputs),
            _ => Vec::new(),
        })
        .collect();
    let mut checks: Vec<Check<'_>> = Vec::new();
    let mut early_failures: Vec<(usize, VerificationFailure)> = Vec::new();
    // Per quantum, reused: cleared rather than reallocated.
    let mut predicted: FastMap<Uuid, (&str, BlockRef<'_>)> = FastMap::new();
    let mut seen: FastSet<Uuid> = FastSet::new();
    for (pos, ((item, q), finished)) in batch.iter().zip(&quanta).zip(&finished).enumerate() {
        let (Some(q), Some(JournalRecord::Finished { status, .. })) = (q, finished) else {
            continue;
        };
        if QuantumState::from(*status) != QuantumState::Succeeded {
            continue;
        }
        let task = task_label(ctx, q.task);
        predicted.clear();
        predicted.extend(
            q.outputs()
                .flat_map(|conn| conn.refs().map(move |r| (r.id, (conn.name, r)))),
        );
        seen.clear();
        for (output, w) in written[pos].iter().enumerate() {
            let Some(&(connection, r)) = predicted.get(&w.dataset_id) else {
                summary.journal_problems.push(format!(
                        "journal {}: quantum {} ({task} {}) reports output {} at {}, which the bundle does not predict for it; not registered",
                        item.progress.journal().display(),
                        q.id,
                        q.data_id,
                        w.dataset_id,
                        w.path
                    ));
                continue;
            };
            if !seen.insert(w.dataset_id) {
                continue;
            }
            if w.path != r.path {
                early_failures.push((
                    pos,
                    failure(
                        task,
                        q,
                        &r,
                        format!("written at {}, not at the predicted path", w.path),
                    ),
                ));
                continue;
            }
            let Some(t) = ctx.output_types.get(r.dataset_type) else {
                early_failures.push((
                    pos,
                    failure(
                        task,
                        q,
                        &r,
                        "its dataset type is not an output of any task".into(),
                    ),
                ));
                continue;
            };
            checks.push(Check {
                pos,
                output,
                connection,
                predicted: r,
                formatter: &t.formatter,
            });
        }
        summary.outputs_not_written += predicted.len() - seen.len();
    }

    let expected: Vec<ExpectedFile<'_>> = checks
        .iter()
        .map(|c| {
            let w = &written[c.pos][c.output];
            ExpectedFile {
                path: &w.path,
                size: w.size,
                checksum: &w.checksum,
            }
        })
        .collect();
    let results = match pool {
        Some(pool) => pool.install(|| datastore.verify_many(&expected)),
        None => datastore.verify_many(&expected),
    };
    drop(expected);

    let mut verified: Vec<Vec<QuantumOutputDataset>> =
        (0..batch.len()).map(|_| Vec::new()).collect();
    let mut failures: Vec<Vec<VerificationFailure>> =
        (0..batch.len()).map(|_| Vec::new()).collect();
    for (pos, f) in early_failures {
        failures[pos].push(f);
    }
    for (c, result) in checks.iter().zip(results) {
        match result.map_err(|e| e.to_string()) {
            Ok(()) => {
                let w = &mut written[c.pos][c.output];
                verified[c.pos].push(QuantumOutputDataset {
                    id: c.predicted.id,
                    dataset_type: c.predicted.dataset_type.to_string(),
                    data_id: c.predicted.data_id.clone(),
                    connection: c.connection.to_string(),
                    replaces: ctx
                        .replaced
                        .binary_search_by_key(&c.predicted.id, |r| r.by)
                        .ok()
                        .map(|i| ctx.replaced[i].id),
                    stored: DatastoreRecord {
                        path: std::mem::take(&mut w.path),
                        formatter: c.formatter.to_string(),
                        size: w.size,
                        checksum: std::mem::take(&mut w.checksum),
                    },
                })
            }
            Err(reason) => {
                if let Some(q) = &quanta[c.pos] {
                    failures[c.pos].push(failure(task_label(ctx, q.task), q, &c.predicted, reason));
                }
            }
        }
    }
    drop(checks);

    let rows: Vec<NewQuantum> = batch
        .iter()
        .zip(&quanta)
        .zip(started.into_iter().zip(finished))
        .zip(verified)
        .zip(&failures)
        .filter_map(|((((item, q), records), outputs), failed)| {
            Some(new_quantum(
                ctx,
                item,
                q.as_ref()?,
                records,
                outputs,
                failed,
            ))
        })
        .collect();
    for f in failures.into_iter().flatten() {
        summary.verification_failures.push(f);
    }
    drop(quanta);
    batch.clear();
    Ok(rows)
}

/// The summary's start: journals read, their problems, quanta per state.
fn summarize_journals(bundle: &Bundle, fold: &CampaignProgress) -> MergeSummary {
    let header = bundle.header();
    let n_quanta = bundle.n_quanta();
    let mut summary = MergeSummary {
        bundle_id: header.bundle_id,
        run: header.output_run.clone(),
        output_chain: header.output_chain.clone(),
        journals: fold.journals.len(),
        warnings: fold.warnings.clone(),
        ..MergeSummary::default()
    };
    for (path, other) in &fold.foreign_journals {
        summary.journal_problems.push(format!(
            "journal {} belongs to bundle {other}, not {}; ignored",
            path.display(),
            header.bundle_id
        ));
    }
    for (path, index) in &fold.unknown_quanta {
        summary.journal_problems.push(format!(
            "journal {} has a record for quantum {index}, but the bundle has {n_quanta} quanta; ignored",
            path.display()
        ));
    }
    for (state, n) in fold.counts(n_quanta) {
        summary
            .quanta_by_state
            .insert(state.as_str().to_string(), n);
    }
    summary
}

/// What the merge reads: the bundle's quanta, their journaled progress,
/// and the files to verify.
struct MergeSource<'a> {
    ctx: &'a Ctx,
    verifier: &'a Datastore,
    bundle: &'a Bundle,
    fold: &'a CampaignProgress,
    /// What earlier merges recorded of the bundle's quanta.
    already: &'a MergedBefore,
    batch_quanta: usize,
}

impl MergeSource<'_> {
    /// Two stages overlap: a producer thread decodes quanta and verifies
    /// their files (in parallel), the writers record the previous chunks,
    /// and this thread reports progress. Each writer's channel holds one
    /// chunk, bounding memory to about three chunks a writer.
    ///
    /// Where the registry takes several writers at once
    /// ([`Registry::concurrent_writers`](quanta_registry::Registry::concurrent_writers):
    /// PostgreSQL), the chunks go to that many writers in turn, each with
    /// a connection and transactions of its own (a connection the server
    /// refuses leaves fewer writers, with a warning); every transaction
    /// holds whole quanta with their datasets and links, so the merge stays
    /// resumable whichever commit a kill interrupts. Not for a bundle that
    /// replaces datasets (`--clobber`): a replaced dataset's producer goes
    /// once its last output is gone, which one writer cannot see while
    /// another's transaction removing an output is uncommitted.
    fn record(
        &self,
        registry: &mut quanta_registry::Registry,
        bundle_path: &Path,
        summary: &mut MergeSummary,
        progress: ProgressFn<'_>,
    ) -> Result<Vec<WriterTotals>, MergeError> {
        let mut more_writers = Vec::new();
        if self.ctx.replaced.is_empty() {
            for _ in 1..registry.concurrent_writers() {
                match quanta_registry::Registry::open_at(registry.location(), false) {
                    Ok(more) => more_writers.push(more),
                    Err(e) => {
                        tracing::warn!("merging with fewer registry writers: {e}");
                        break;
                    }
                }
            }
        }
        let (to_writers, chunks): (Vec<_>, Vec<_>) = (0..=more_writers.len())
            .map(|_| mpsc::sync_channel::<Vec<NewQuantum>>(1))
            .unzip();
        // Recorded chunks come back to be freed by the producer, which
        // allocated them: the allocator reuses their memory for the next
        // chunks rather than touching fresh pages (1M datasets: page faults
        // fell from 47% to 33% of the producer's time), and the writer, the
        // critical path, no longer spends 5% of its time freeing.
        let (to_producer, recorded_chunks) = mpsc::channel::<Vec<NewQuantum>>();
        let (commits, committed) = mpsc::channel::<u64>();
        let writer = ChunkWriter {
            run: self.ctx.run.clone(),
            bundle_id: self.ctx.bundle_id,
            // No earlier merge recorded any quantum of the bundle (the
            // usual first merge): the writer need not look for their rows.
            first_merge: self.already.recorded == 0,
            batch_quanta: self.batch_quanta,
            owns_bulk_writing: true,
        };
        let total = self.bundle.n_quanta() as u64;
        std::thread::scope(|scope| -> Result<Vec<WriterTotals>, MergeError> {
            let writers: Vec<_> = std::iter::once(registry)
                .chain(more_writers.iter_mut())
                .zip(chunks)
                .enumerate()
                .map(|(i, (registry, chunks))| {
                    let writer = ChunkWriter {
                        owns_bulk_writing: i == 0,
                        ..writer.clone()
                    };
                    let (to_producer, commits) = (to_producer.clone(), commits.clone());
                    scope.spawn(move || writer.record(registry, chunks, to_producer, commits))
                })
                .collect();
            // The writers hold the only senders left: the loop below ends
            // when the last of them does.
            drop((to_producer, commits));
            let producer = scope.spawn(move || self.produce(summary, to_writers, recorded_chunks));
            let mut merged = 0u64;
            for n in committed {
                merged += n;
                progress(merged, total);
            }
            let panicked = |what: &str| MergeError::Invalid {
                bundle: bundle_path.to_path_buf(),
                detail: format!("the {what} thread panicked"),
            };
            // Every writer joined before the first failure is returned.
            let recorded: Vec<Result<WriterTotals, MergeError>> = writers
                .into_iter()
                .map(|w| w.join().map_err(|_| panicked("registry writer"))?)
                .collect();
            producer.join().map_err(|_| panicked("producer"))??;
            recorded.into_iter().collect()
        })
    }

    /// The producer: decodes the bundle's finished quanta not yet merged
    /// and sends them, verified, in chunks.
    fn produce(
        &self,
        summary: &mut MergeSummary,
        to_writers: Vec<mpsc::SyncSender<Vec<NewQuantum>>>,
        recorded_chunks: mpsc::Receiver<Vec<NewQuantum>>,
    ) -> Result<(), MergeError> {
        // Verification yields to the writer, the critical path. Decoding,
        // here, keeps normal priority: a writer that starves waits for its
        // input (measured: lowering it too was no faster).
        let verification = rayon::ThreadPoolBuilder::new()
            .num_threads(rayon::current_num_threads())
            .thread_name(|i| format!("quanta-verify-{i}"))
            .start_handler(|_| quanta_registry::lower_thread_priority())
            .build()
            // Without a pool of its own, verification shares the global one
            // at normal priority.
            .ok();
        let mut records = JournalRecords::default();
        let mut verify = |batch: &mut Vec<Pending<'_>>, summary: &mut MergeSummary| {
            verify_batch(
                self.ctx,
                self.verifier,
                verification.as_ref(),
                &mut records,
                batch,
                summary,
            )
        };
        let n_quanta = self.bundle.n_quanta();
        let chunk_quanta = self.batch_quanta.div_ceil(CHUNKS_PER_TRANSACTION);
        // Chunks to the writers in turn: a transaction's worth to one
        // writer at a time would leave the others waiting while its
        // channel, one chunk deep, holds the producer back.
        let mut chunks_sent = 0;
        let mut send = |quanta: Vec<NewQuantum>| {
            let writer = chunks_sent % to_writers.len();
            chunks_sent += 1;
            to_writers[writer].send(quanta).is_ok()
        };
        let mut batch: Vec<Pending<'_>> = Vec::with_capacity(chunk_quanta.min(n_quanta));
        for block in self.bundle.decoded_blocks() {
            let block = Arc::new(block?);
            for pos in 0..block.len() {
                let Some(p) = self.to_merge(&block, pos, summary) else {
                    continue;
                };
                batch.push(Pending {
                    block: Arc::clone(&block),
                    pos,
                    progress: p,
                });
                if batch.len() >= chunk_quanta {
                    let quanta = verify(&mut batch, summary)?;
                    if !send(quanta) {
                        return Ok(()); // a writer failed; its error is reported
                    }
                    // Before the next chunk is decoded into fresh memory.
                    recorded_chunks.try_iter().for_each(drop);
                }
            }
        }
        if !batch.is_empty() {
            let quanta = verify(&mut batch, summary)?;
            send(quanta);
        }
        Ok(())
    }

    /// The journaled progress of the quantum at `pos` in `block` if it is
    /// to be merged: finished, matching the bundle, not merged already.
    fn to_merge(
        &self,
        block: &DecodedBlock,
        pos: usize,
        summary: &mut MergeSummary,
    ) -> Option<&QuantumProgress> {
        let index = block.first_index() + pos as u32;
        let p = self.fold.quanta.get(&index)?;
        if matches!(p.state, QuantumState::Pending | QuantumState::Running) {
            return None;
        }
        let quantum_id = block.quantum(pos).map(|q| q.id)?;
        if p.quantum_id != quantum_id {
            summary.journal_problems.push(format!(
                "journal {} records quantum {index} as {}, but the bundle's quantum {index} is {}; ignored",
                p.journal().display(),
                p.quantum_id,
                quantum_id
            ));
            return None;
        }
        if self.already.succeeded.contains(&quantum_id.as_u128()) {
            summary.quanta_already_merged += 1;
            return None;
        }
        Some(p)
    }
}

/// What earlier merges recorded of a bundle's quanta, as little as a merge
/// needs of it: a second merge of 10^7 quanta holds 10^7 of these (16
/// bytes each and the set's slot, where a map of UUID to status string
/// took ~100).
struct MergedBefore {
    /// Quanta with a row, whatever their status.
    recorded: usize,
    /// Quanta recorded as succeeded, by UUID: skipped by this merge.
    succeeded: FastSet<u128>,
}

impl MergedBefore {
    fn read(registry: &quanta_registry::Registry, bundle_id: Uuid) -> Result<Self, MergeError> {
        let mut before = MergedBefore {
            recorded: 0,
            succeeded: FastSet::new(),
        };
        registry.for_each_quantum_status(bundle_id, |id, status| {
            before.recorded += 1;
            if status == STATUS_SUCCEEDED {
                before.succeeded.insert(id.as_u128());
            }
        })?;
        Ok(before)
    }
}

/// A writer: records chunks in the registry, committing every
/// `batch_quanta` quanta and reporting each commit.
#[derive(Clone)]
struct ChunkWriter {
    run: String,
    bundle_id: Uuid,
    first_merge: bool,
    batch_quanta: usize,
    /// The first writer starts and ends the registry's bulk writing
    /// (SQLite's checkpoints; on PostgreSQL the statistics refreshed at
    /// its end, once, from this writer's share of the rows); more writers
    /// only write.
    owns_bulk_writing: bool,
}

impl ChunkWriter {
    fn record(
        self,
        registry: &mut quanta_registry::Registry,
        chunks: mpsc::Receiver<Vec<NewQuantum>>,
        to_producer: mpsc::Sender<Vec<NewQuantum>>,
        commits: mpsc::Sender<u64>,
    ) -> Result<WriterTotals, MergeError> {
        if self.owns_bulk_writing {
            registry.set_bulk_writing(Some(quanta_registry::BulkWrites::Appending))?;
        }
        let recorded = (|| -> Result<WriterTotals, MergeError> {
            let mut totals = WriterTotals::default();
            let mut uncommitted = 0;
            for quanta in chunks {
                let stats = if self.first_merge {
                    registry.record_new_quanta_uncommitted(&self.run, self.bundle_id, &quanta)?
                } else {
                    registry.record_quanta_uncommitted(&self.run, self.bundle_id, &quanta)?
                };
                totals.add(stats, &quanta);
                uncommitted += quanta.len();
                let _ = to_producer.send(quanta);
                if uncommitted >= self.batch_quanta {
                    registry.commit_open()?;
                    // The receiver is gone only if the merge failed.
                    let _ = commits.send(std::mem::take(&mut uncommitted) as u64);
                }
            }
            registry.commit_open()?;
            let _ = commits.send(uncommitted as u64);
            Ok(totals)
        })();
        let ended = if self.owns_bulk_writing {
            registry.set_bulk_writing(None)
        } else {
            Ok(())
        };
        let totals = recorded?;
        ended?;
        Ok(totals)
    }
}

/// What the writer thread accumulated over all batches.
#[derive(Default)]
struct WriterTotals {
    datasets_inserted: usize,
    datasets_existing: usize,
    quanta_recorded: usize,
    quanta_unchanged: usize,
    datasets_replaced: usize,
    rejected: Vec<VerificationFailure>,
}

impl WriterTotals {
    fn add(&mut self, stats: quanta_registry::RecordStats, quanta: &[NewQuantum]) {
        self.datasets_inserted += stats.datasets_inserted;
        self.datasets_existing += stats.datasets_skipped;
        self.quanta_recorded += stats.quanta_written;
        self.quanta_unchanged += stats.quanta_unchanged;
        self.datasets_replaced += stats.datasets_replaced;
        for r in stats.rejected {
            let q = quanta.iter().find(|q| q.id == r.quantum_id);
            self.rejected.push(VerificationFailure {
                quantum_id: r.quantum_id,
                task: q.map(|q| q.task_label.clone()).unwrap_or_default(),
                dataset_id: r.dataset_id,
                path: q
                    .and_then(|q| q.outputs.iter().find(|o| o.id == r.dataset_id))
                    .map(|o| o.stored.path.clone())
                    .unwrap_or_default(),
                dataset_type: r.dataset_type,
                data_id: r.data_id,
                reason: r.reason,
            });
        }
    }

    fn apply(self, summary: &mut MergeSummary) {
        summary.datasets_inserted += self.datasets_inserted;
        summary.datasets_existing += self.datasets_existing;
        summary.quanta_recorded += self.quanta_recorded;
        summary.quanta_already_merged += self.quanta_unchanged;
        summary.datasets_replaced += self.datasets_replaced;
        summary.verification_failures.extend(self.rejected);
    }
}

fn task_label(ctx: &Ctx, task: u32) -> &str {
    ctx.task_labels
        .get(task as usize)
        .map(String::as_str)
        .unwrap_or("?")
}

fn failure(
    task: &str,
    q: &BlockQuantum<'_>,
    r: &BlockRef<'_>,
    reason: String,
) -> VerificationFailure {
    VerificationFailure {
        quantum_id: q.id,
        task: task.to_string(),
        dataset_id: r.id,
        dataset_type: r.dataset_type.to_string(),
        data_id: r.data_id.clone(),
        path: r.path.to_string(),
        reason,
    }
}

/// The quantum row, links and verified outputs for one finished quantum,
/// from its journal records (the latest start, the deciding finish).
fn new_quantum(
    ctx: &Ctx,
    item: &Pending<'_>,
    q: &BlockQuantum<'_>,
    (started, finished): (Option<JournalRecord>, Option<JournalRecord>),
    outputs: Vec<QuantumOutputDataset>,
    failed: &[VerificationFailure],
) -> NewQuantum {
    let p = item.progress;
    let mut execution = QuantumExecution {
        status: p.state.as_str().to_string(),
        attempts: p.attempts,
        host: None,
        batch_job: None,
        started: None,
        finished: None,
        wall_seconds: None,
        cpu_seconds: None,
        peak_rss_bytes: None,
        exit_code: None,
        error: None,
        log_tail: Vec::new(),
    };
    let mut inputs_used: Vec<Uuid> = Vec::new();
    if let Some(JournalRecord::Started {
        host, batch_job, ..
    }) = started
    {
        execution.host = Some(host);
        execution.batch_job = batch_job;
    }
    if let Some(JournalRecord::Finished {
        attempt,
        inputs_used: used,
        started,
        finished,
        wall_seconds,
        cpu_seconds,
        peak_rss_bytes,
        exit_code,
        error,
        log_tail,
        ..
    }) = finished
    {
        execution.attempts = execution.attempts.max(attempt);
        execution.started = Some(started);
        execution.finished = Some(finished);
        execution.wall_seconds = Some(wall_seconds);
        execution.cpu_seconds = Some(cpu_seconds);
        execution.peak_rss_bytes = Some(peak_rss_bytes);
        execution.exit_code = exit_code;
        execution.error = error;
        execution.log_tail = log_tail;
        inputs_used = used;
        inputs_used.sort_unstable();
    }
    let succeeded = p.state == QuantumState::Succeeded;
    if succeeded && !failed.is_empty() {
        execution.status = STATUS_PARTIAL.to_string();
        let lines: Vec<String> = failed
            .iter()
            .map(|f| {
                format!(
                    "{} {} at {} not registered: {}",
                    f.dataset_type, f.data_id, f.path, f.reason
                )
            })
            .collect();
        execution.error = Some(lines.join("\n"));
    }
    // A worker that does not report what it read (an external command) is
    // taken to have read every predicted input when it succeeded.
    let used = |id: &Uuid| {
        if inputs_used.is_empty() {
            succeeded
        } else {
            inputs_used.binary_search(id).is_ok()
        }
    };
    let mut inputs = Vec::new();
    let conns = q
        .inputs()
        .map(|c| (false, c))
        .chain(q.prerequisites().map(|c| (true, c)));
    for (is_prerequisite, conn) in conns {
        for r in conn.refs() {
            // Two component connections (`calexp.wcs`, `calexp.image`) bind
            // the same parent: one input row, under the first connection.
            if inputs.iter().any(|i: &QuantumInput| i.dataset_id == r.id) {
                continue;
            }
            inputs.push(QuantumInput {
                dataset_id: r.id,
                connection: conn.name.to_string(),
                is_prerequisite,
                used: used(&r.id),
            });
        }
    }
    NewQuantum {
        id: q.id,
        task_label: task_label(ctx, q.task).to_string(),
        data_id: q.data_id.clone(),
        execution,
        inputs,
        outputs: if succeeded { outputs } else { Vec::new() },
    }
}
