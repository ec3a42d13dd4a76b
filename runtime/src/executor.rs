//! Executing quanta of a bundle on this machine: the scheduler (releases a
//! quantum when its upstream quanta are done), a pool of worker threads,
//! retries, timeouts, fail-fast, blocking of downstream quanta, and resume
//! from earlier journals.
//!
//! One execution writes one journal (`<name>-<host>-<pid>-<n>.journal`).
//! Rust tasks run on the pool's threads with panics caught; with a timeout
//! each attempt runs on its own thread, which is abandoned (its later puts
//! refused) when the deadline passes, since a thread cannot be killed.
//! External commands run as child processes (see `command`); Python tasks
//! in one persistent interpreter per worker thread (see `python_task`).
//!
//! # Resume and overwriting
//!
//! An execution first takes the execution lock of the quanta it may run
//! (`lock`: all of them for `run`, its share for a worker) and refuses if
//! another process holds any of them. Quanta with a `Succeeded` record in
//! any journal of the bundle whose outputs all exist are skipped. Any other
//! quantum is run; if a journal shows an earlier attempt of it (started,
//! never succeeded), files at its predicted output paths are that attempt's
//! leftovers and are replaced. With no such record (none made, or lost with
//! a damaged journal), an existing file at a predicted path is moved aside
//! into the datastore's quarantine (see `quanta-limited-registry`), never
//! deleted, and the output written. On a resume (journals exist) the
//! leftovers of a killed execution of the quanta about to run are removed
//! first: their still-running processes, manifests and temporary files.
//!
//! `fail_fast` stops starting quanta at the first failure: ready quanta are
//! handed to the worker threads one at a time, so nothing queued runs, and
//! the attempts already running finish and are journaled.

use std::collections::{BTreeSet, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use quanta_core::pipeline::TaskKind;
use quanta_core::{journal_dir_for, list_journals, now_rfc3339, BundleQuantum, QuantumStatus};
use quanta_limited_registry::{
    peak_rss_bytes, thread_cpu_seconds, LimitedRegistry, LogTail, QuantumBackedButler,
    QuantumOutcome, WorkerJournal,
};
use serde::Serialize;

use crate::command::{manifest_quantum, run_command};
use crate::error::RuntimeError;
use crate::lock::{lock_execution, LockScope};
use crate::process_tree::{become_subreaper, kill_strays};
use crate::python_task::PythonPool;
use crate::schedule::{Prior, Schedule};
use crate::state::PriorState;
use crate::task::{PipelineTask, TaskContext, TaskError, TaskRegistry};

/// The subdirectory of the journal directory holding command manifests.
const MANIFEST_DIR: &str = "manifests";

/// Which quanta of the bundle to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    /// Quantum indices (any order; duplicates ignored).
    Quanta(Vec<u32>),
    /// A cluster of the bundle, by name.
    Cluster(String),
}

/// Parses `1,2,5-9` into indices.
pub fn parse_quantum_list(text: &str) -> Result<Vec<u32>, RuntimeError> {
    let bad = |detail: String| RuntimeError::BadQuantumList {
        text: text.to_string(),
        detail,
    };
    let num = |s: &str| {
        s.trim()
            .parse::<u32>()
            .map_err(|_| bad(format!("`{}` is not a quantum index", s.trim())))
    };
    let mut out = Vec::new();
    for part in text.split(',') {
        if part.trim().is_empty() {
            return Err(bad("empty item".into()));
        }
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(bad(format!("range {a}-{b} is backwards")));
                }
                if u64::from(b - a) >= 100_000_000 {
                    return Err(bad(format!("range {a}-{b} is too large")));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    Ok(out)
}

/// How to execute.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Worker threads (at least 1).
    pub jobs: usize,
    /// Extra attempts for a failed or timed-out quantum.
    pub retries: u32,
    /// Per-attempt limit.
    pub timeout: Option<Duration>,
    /// Stop starting quanta after the first one fails for good: quanta
    /// already running finish (their results are journaled), nothing else
    /// starts, and the rest count as not run.
    pub fail_fast: bool,
    /// Journal directory; default beside the bundle.
    pub journal_dir: Option<PathBuf>,
    /// First part of the journal file name (`run`, a cluster name, …).
    pub worker_name: String,
    /// The batch system's job id, recorded in Started records.
    pub batch_job: Option<String>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self {
            jobs: 1,
            retries: 0,
            timeout: None,
            fail_fast: false,
            journal_dir: None,
            worker_name: "run".into(),
            batch_job: None,
        }
    }
}

/// Counts for a progress display.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Quanta selected.
    pub total: usize,
    /// Already done by an earlier run (skipped).
    pub skipped: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub blocked: usize,
    pub running: usize,
}

/// A quantum that did not succeed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unfinished {
    pub quantum: u32,
    pub task: String,
    pub data_id: String,
    pub status: QuantumStatus,
    pub attempts: u32,
    pub error: String,
}

/// The result of an execution.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub progress: Progress,
    /// Selected quanta neither done nor failed nor blocked (fail-fast
    /// stopped before them).
    pub not_run: usize,
    pub failures: Vec<Unfinished>,
    /// The journal written, if anything was recorded.
    pub journal: Option<PathBuf>,
    pub wall_seconds: f64,
}

impl RunSummary {
    /// Every selected quantum is done.
    pub fn all_succeeded(&self) -> bool {
        let p = &self.progress;
        p.failed == 0 && p.blocked == 0 && self.not_run == 0
    }
}

/// A task ready to run: a Rust instance or a command line.
#[derive(Clone)]
enum Runnable {
    Rust(Arc<dyn PipelineTask>),
    Command(Arc<Vec<String>>),
    /// Run by the execution's interpreter pool.
    Python,
}

struct Job {
    index: u32,
    quantum: BundleQuantum,
    /// Attempt number recorded in the journal (earlier runs included).
    attempt: u32,
    replace_existing: bool,
}

struct JobResult {
    index: u32,
    status: QuantumStatus,
    error: Option<String>,
    journal_error: Option<RuntimeError>,
}

/// Shared by the worker threads.
struct Shared {
    registry: Arc<LimitedRegistry>,
    runnables: Vec<Option<Runnable>>,
    configs: Vec<Arc<serde_json::Value>>,
    journal: WorkerJournal,
    timeout: Option<Duration>,
    /// Where command tasks' manifests go.
    manifest_dir: PathBuf,
    /// The interpreters of Python tasks, if the selection has any.
    python: Option<PythonPool>,
}

/// Per task index: its runnable (if used) and its config.
type PreparedTasks = (Vec<Option<Runnable>>, Vec<Arc<serde_json::Value>>);

/// Instantiates the tasks used by `quanta` (bad class or config is an
/// error before anything runs).
fn prepare_tasks(
    registry: &LimitedRegistry,
    tasks: &TaskRegistry,
    used: &BTreeSet<u32>,
) -> Result<PreparedTasks, RuntimeError> {
    let defs = registry.tasks();
    let mut runnables = vec![None; defs.len()];
    let mut configs = Vec::with_capacity(defs.len());
    for (i, def) in defs.iter().enumerate() {
        let config = if def.config.is_null() {
            serde_json::json!({})
        } else {
            def.config.clone()
        };
        if used.contains(&(i as u32)) {
            runnables[i] = Some(match &def.kind {
                TaskKind::Class(class) => match tasks.create(class, &config) {
                    None => {
                        return Err(RuntimeError::UnknownTaskClass {
                            label: def.label.clone(),
                            class: class.clone(),
                            known: tasks.names().join(", "),
                        })
                    }
                    Some(Err(e)) => {
                        return Err(RuntimeError::TaskConfig {
                            label: def.label.clone(),
                            detail: e.to_string(),
                        })
                    }
                    Some(Ok(t)) => Runnable::Rust(t),
                },
                TaskKind::Command(argv) => {
                    if argv.is_empty() || argv[0].is_empty() {
                        return Err(RuntimeError::EmptyCommand {
                            label: def.label.clone(),
                        });
                    }
                    Runnable::Command(Arc::new(argv.clone()))
                }
                // Imported and configured by the interpreter pool, started
                // before anything runs (`start_python`).
                TaskKind::Python(_) => Runnable::Python,
            });
        }
        configs.push(Arc::new(config));
    }
    Ok((runnables, configs))
}

/// The interpreter pool of the selection's Python tasks (`None` without
/// any): its first interpreter imports and configures them now, so a
/// missing interpreter, `quanta` package or task module is an error before
/// anything runs, as an unknown Rust class is.
fn start_python(
    registry: &LimitedRegistry,
    runnables: &[Option<Runnable>],
) -> Result<Option<PythonPool>, RuntimeError> {
    let labels: Vec<String> = runnables
        .iter()
        .zip(registry.tasks())
        .filter(|(r, _)| matches!(r, Some(Runnable::Python)))
        .map(|(_, def)| def.label.clone())
        .collect();
    if labels.is_empty() {
        return Ok(None);
    }
    Ok(Some(PythonPool::start(registry.bundle().path(), labels)?))
}

/// Executes the selected quanta of the registry's bundle. `on_progress` is
/// called on the calling thread after every change. Quanta that fail are
/// results (see [`RunSummary`]); errors are bad input or an unwritable
/// journal.
pub fn execute(
    registry: Arc<LimitedRegistry>,
    tasks: &TaskRegistry,
    selection: &Selection,
    opts: &ExecOptions,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<RunSummary, RuntimeError> {
    let t0 = Instant::now();
    let bundle = Arc::clone(registry.bundle());
    let (indices, quanta) = select_quanta(&bundle, selection)?;
    let used: BTreeSet<u32> = quanta.iter().map(|q| q.task).collect();
    let (runnables, configs) = prepare_tasks(&registry, tasks, &used)?;
    if runnables
        .iter()
        .any(|r| matches!(r, Some(Runnable::Command(_))))
    {
        // Commands' orphaned descendants come to us, to be killed and reaped.
        become_subreaper();
    }

    let journal_dir = opts
        .journal_dir
        .clone()
        .unwrap_or_else(|| journal_dir_for(bundle.path()));
    // Held until this execution returns: no other process runs these quanta
    // meanwhile, so the fold below stays true and their leftovers are ours.
    let scope = match selection {
        Selection::All => LockScope::All,
        _ => LockScope::Quanta(indices.clone()),
    };
    let _lock = lock_execution(&journal_dir, &scope)?;
    let had_journals = !list_journals(&journal_dir)?.is_empty();
    let prior = PriorState::load(&journal_dir, bundle.header().bundle_id, bundle.n_quanta())?;

    let labels = quanta
        .iter()
        .map(|q| registry.task(q).label.clone())
        .collect();
    let (mut schedule, outside_block) = Schedule::new(
        indices,
        quanta,
        labels,
        |index, q| {
            let p = prior.get(index, q.id)?;
            let done = p.succeeded && registry.outputs_exist(q);
            if p.succeeded && !done {
                tracing::warn!(
                    "quantum {index} succeeded earlier but an output is missing; running it again"
                );
            }
            Some(Prior {
                attempts: p.attempts,
                done,
            })
        },
        |u| {
            let uq = bundle.quantum(u)?;
            Ok(prior
                .get(u, uq.id)
                .is_some_and(|p| p.succeeded && registry.outputs_exist(&uq)))
        },
    )?;
    let pending: Vec<usize> = schedule.pending().collect();
    if had_journals && !pending.is_empty() {
        remove_leftovers(
            &registry,
            &journal_dir,
            &schedule.indices,
            &schedule.quanta,
            &pending,
        );
    }
    if pending.is_empty() {
        on_progress(&schedule.progress);
        return Ok(RunSummary {
            progress: schedule.progress,
            not_run: 0,
            failures: Vec::new(),
            journal: None,
            wall_seconds: t0.elapsed().as_secs_f64(),
        });
    }
    // Before the journal: a Python task that cannot be imported stops the
    // execution with nothing recorded.
    let python = start_python(&registry, &runnables)?;
    let journal = WorkerJournal::create(
        &journal_dir,
        bundle.header().bundle_id,
        &opts.worker_name,
        opts.batch_job.clone(),
    )?;
    let shared = Arc::new(Shared {
        registry: Arc::clone(&registry),
        runnables,
        configs,
        journal,
        timeout: opts.timeout,
        manifest_dir: journal_dir.join(MANIFEST_DIR),
        python,
    });
    for (k, reason) in outside_block {
        schedule.block(k, reason, &shared.journal)?;
    }
    let n_threads = opts.jobs.max(1).min(pending.len());
    let fatal = dispatch(&mut schedule, &shared, n_threads, opts, on_progress)?;
    if let Some(e) = fatal {
        return Err(e);
    }
    let not_run = schedule.pending().count();
    let mut failures = schedule.failures;
    failures.sort_by_key(|f| f.quantum);
    Ok(RunSummary {
        progress: schedule.progress,
        not_run,
        failures,
        journal: Some(shared.journal.path().to_path_buf()),
        wall_seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The selected quanta, in index (= topological) order.
fn select_quanta(
    bundle: &quanta_core::Bundle,
    selection: &Selection,
) -> Result<(Vec<u32>, Vec<BundleQuantum>), RuntimeError> {
    let indices: Vec<u32> = match selection {
        Selection::All => (0..bundle.n_quanta() as u32).collect(),
        Selection::Quanta(list) => {
            let set: BTreeSet<u32> = list.iter().copied().collect();
            set.into_iter().collect()
        }
        Selection::Cluster(name) => {
            let clusters = bundle.clusters()?;
            let c = clusters.iter().find(|c| &c.name == name).ok_or_else(|| {
                RuntimeError::UnknownCluster {
                    name: name.clone(),
                    known: clusters
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?;
            let set: BTreeSet<u32> = c.quanta.iter().copied().collect();
            set.into_iter().collect()
        }
    };
    let quanta: Vec<BundleQuantum> = match selection {
        Selection::All => bundle.quanta().collect::<Result<_, _>>()?,
        _ => indices
            .iter()
            .map(|&i| bundle.quantum(i))
            .collect::<Result<_, _>>()?,
    };
    Ok((indices, quanta))
}

/// Runs the schedule on `n_threads` worker threads until nothing is ready
/// or running. Quanta ready to run wait in the schedule, not in the
/// channel: at most one job per worker thread is handed over at a time, so
/// fail-fast (or a fatal journal error) stops everything not yet started.
/// Returns the first fatal error (an unwritable journal), after every
/// started quantum has finished.
fn dispatch(
    schedule: &mut Schedule,
    shared: &Arc<Shared>,
    n_threads: usize,
    opts: &ExecOptions,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Option<RuntimeError>, RuntimeError> {
    let (job_tx, job_rx): (Sender<Job>, Receiver<Job>) = unbounded();
    let (res_tx, res_rx): (Sender<JobResult>, Receiver<JobResult>) = unbounded();
    let mut handles = Vec::with_capacity(n_threads);
    for t in 0..n_threads {
        let rx = job_rx.clone();
        let tx = res_tx.clone();
        let shared = Arc::clone(shared);
        let h = std::thread::Builder::new()
            .name(format!("quanta-worker-{t}"))
            .spawn(move || {
                for job in rx {
                    let r = run_job(&shared, job);
                    if tx.send(r).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| RuntimeError::TaskConfig {
                label: "executor".into(),
                detail: format!("cannot start a worker thread: {e}"),
            })?;
        handles.push(h);
    }
    drop(job_rx);
    drop(res_tx);

    let mut in_flight = 0usize;
    let mut stop = false;
    let mut fatal: Option<RuntimeError> = None;
    loop {
        while !stop && in_flight < n_threads {
            let Some(k) = schedule.next_ready() else {
                break;
            };
            schedule.attempts_here[k] += 1;
            let (prior, here) = (schedule.prior_attempts[k], schedule.attempts_here[k]);
            let job = Job {
                index: schedule.indices[k],
                quantum: schedule.quanta[k].clone(),
                attempt: prior + here,
                replace_existing: prior > 0 || here > 1,
            };
            in_flight += 1;
            // The workers hold the receiver until this sender is dropped.
            let _ = job_tx.send(job);
        }
        schedule.progress.running = in_flight;
        on_progress(&schedule.progress);
        if in_flight == 0 {
            break;
        }
        let Ok(r) = res_rx.recv() else { break };
        in_flight -= 1;
        let k = schedule.position(r.index);
        if let Some(e) = r.journal_error {
            fatal.get_or_insert(e);
            stop = true;
        }
        if r.status == QuantumStatus::Succeeded {
            schedule.succeeded(k);
        } else if schedule.attempts_here[k] <= opts.retries && !stop {
            let q = &schedule.quanta[k];
            tracing::info!(
                "quantum {} ({} {}) attempt {} {:?}: {}; retrying",
                r.index,
                shared.registry.task(q).label,
                q.data_id,
                schedule.attempts_here[k],
                r.status,
                r.error.as_deref().unwrap_or("")
            );
            // A retry goes first: the quantum was already started.
            schedule.ready.push_front(k);
        } else {
            let error = r.error.unwrap_or_default();
            if let Err(e) = schedule.failed(k, r.status, error, &shared.journal) {
                fatal.get_or_insert(e);
                stop = true;
            }
            if opts.fail_fast {
                stop = true;
            }
        }
    }
    drop(job_tx);
    for h in handles {
        let _ = h.join();
    }
    Ok(fatal)
}

/// What a killed execution of these quanta may have left, removed before
/// they run again (this execution holds their lock, so it is all dead
/// writers' work): their processes still running, their manifests, and the
/// temporary files beside their outputs.
fn remove_leftovers(
    registry: &LimitedRegistry,
    journal_dir: &std::path::Path,
    indices: &[u32],
    quanta: &[BundleQuantum],
    to_run: &[usize],
) {
    let selected: HashSet<u32> = to_run.iter().map(|&k| indices[k]).collect();
    let killed = kill_strays(registry.bundle().header().bundle_id, &selected);
    if killed > 0 {
        tracing::warn!(
            "killed {killed} process(es) left running by an earlier execution of these quanta"
        );
    }
    if let Ok(entries) = std::fs::read_dir(journal_dir.join(MANIFEST_DIR)) {
        for entry in entries.flatten() {
            let owned = entry
                .file_name()
                .to_str()
                .and_then(manifest_quantum)
                .is_some_and(|q| selected.contains(&q));
            if owned {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let removed = registry.remove_temp_leftovers(to_run.iter().map(|&k| &quanta[k]));
    if !removed.is_empty() {
        tracing::info!(
            "removed {} temporary file(s) left by earlier attempts, e.g. {}",
            removed.len(),
            removed[0].display()
        );
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

/// Runs a Rust task on the current thread; status, error, CPU seconds.
fn run_rust(
    task: &dyn PipelineTask,
    butler: &mut QuantumBackedButler,
    config: &serde_json::Value,
    log: &mut LogTail,
) -> (QuantumStatus, Option<String>, f64) {
    let cpu0 = thread_cpu_seconds();
    let r = catch_unwind(AssertUnwindSafe(|| {
        // The context holds the quantum and task while the butler is
        // borrowed mutably: shared handles, not copies.
        let quantum = Arc::clone(butler.quantum());
        let task_def = Arc::clone(butler.task());
        let index = butler.index();
        let mut ctx = TaskContext::new(butler, &quantum, &task_def, index, config, log);
        task.run(&mut ctx)
    }));
    let cpu = thread_cpu_seconds() - cpu0;
    let (status, error) = match r {
        Ok(Ok(())) => {
            let missing = butler.missing_outputs();
            if missing.is_empty() {
                (QuantumStatus::Succeeded, None)
            } else {
                let list: Vec<String> = missing
                    .iter()
                    .map(|(c, r)| format!("{c} ({} {} at `{}`)", r.dataset_type, r.data_id, r.path))
                    .collect();
                (
                    QuantumStatus::Failed,
                    Some(format!(
                        "the task returned without writing predicted output(s): {}",
                        list.join(", ")
                    )),
                )
            }
        }
        Ok(Err(e)) => (QuantumStatus::Failed, Some(error_chain(&e))),
        Err(p) => (
            QuantumStatus::Failed,
            Some(format!("the task panicked: {}", panic_text(p.as_ref()))),
        ),
    };
    (status, error, cpu)
}

fn error_chain(e: &TaskError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = x.source();
    }
    s
}

/// One attempt of one quantum, journaled.
fn run_job(shared: &Shared, job: Job) -> JobResult {
    let Job {
        index,
        quantum,
        attempt,
        replace_existing,
    } = job;
    let qid = quantum.id;
    let task_ix = quantum.task as usize;
    if let Err(e) = shared.journal.started(index, qid, attempt) {
        return JobResult {
            index,
            status: QuantumStatus::Failed,
            error: Some(e.to_string()),
            journal_error: Some(e.into()),
        };
    }
    let started = now_rfc3339();
    let wall0 = Instant::now();
    let mut log = LogTail::default();
    let registry = &shared.registry;
    let config = Arc::clone(&shared.configs[task_ix]);

    let mut outputs = Vec::new();
    let mut inputs_used = Vec::new();
    let mut cpu = 0.0;
    let mut rss = 0;
    let mut exit_code = None;
    let (status, error) = if let Err(e) = registry.check_inputs(index, &quantum) {
        (QuantumStatus::Failed, Some(e.to_string()))
    } else {
        let mut butler = registry.butler(index, quantum, replace_existing);
        match shared.runnables[task_ix].clone() {
            None => (
                QuantumStatus::Failed,
                Some("internal error: task not prepared".to_string()),
            ),
            Some(Runnable::Command(argv)) => {
                let r = run_command(
                    &mut butler,
                    &argv,
                    &config,
                    attempt,
                    shared.timeout,
                    &shared.manifest_dir,
                    &mut log,
                );
                cpu = r.usage.cpu_seconds;
                rss = r.usage.peak_rss_bytes;
                exit_code = r.exit_code;
                // A command is handed every input in the manifest; the
                // butler sees none of its reads.
                inputs_used = all_inputs(butler.quantum());
                outputs = butler.into_records().0;
                (r.status, r.error)
            }
            Some(Runnable::Python) => match &shared.python {
                None => (
                    QuantumStatus::Failed,
                    Some("internal error: no Python interpreter pool".to_string()),
                ),
                Some(pool) => {
                    // The interpreter reads and writes through its own
                    // butler on the same bundle; this one only checked the
                    // inputs and is dropped.
                    drop(butler);
                    let r = pool.run(index, attempt, replace_existing, shared.timeout);
                    cpu = r.cpu_seconds;
                    rss = r.peak_rss_bytes;
                    outputs = r.outputs;
                    inputs_used = r.inputs_used;
                    for line in &r.log {
                        log.push_line(line);
                    }
                    (r.status, r.error)
                }
            },
            Some(Runnable::Rust(task)) => match shared.timeout {
                None => {
                    let (s, e, c) = run_rust(task.as_ref(), &mut butler, &config, &mut log);
                    cpu = c;
                    rss = peak_rss_bytes();
                    (outputs, inputs_used) = butler.into_records();
                    (s, e)
                }
                Some(limit) => {
                    let cancel = butler.cancel_flag();
                    let mut task_log = std::mem::take(&mut log);
                    let (tx, rx) = crossbeam_channel::bounded(1);
                    let spawned = std::thread::Builder::new()
                        .name(format!("quanta-task-{index}"))
                        .spawn(move || {
                            let (s, e, c) =
                                run_rust(task.as_ref(), &mut butler, &config, &mut task_log);
                            let _ = tx.send((s, e, c, butler, task_log));
                        });
                    match spawned {
                        Err(e) => (
                            QuantumStatus::Failed,
                            Some(format!("cannot start a task thread: {e}")),
                        ),
                        Ok(_) => match rx.recv_timeout(limit) {
                            Ok((s, e, c, b, l)) => {
                                cpu = c;
                                rss = peak_rss_bytes();
                                log = l;
                                (outputs, inputs_used) = b.into_records();
                                (s, e)
                            }
                            Err(_) => {
                                // The thread cannot be killed: cancel its
                                // writes and leave it behind.
                                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                                (
                                    QuantumStatus::TimedOut,
                                    Some(format!(
                                        "the task timed out after {:.3} s",
                                        limit.as_secs_f64()
                                    )),
                                )
                            }
                        },
                    }
                }
            },
        }
    };
    let outcome = QuantumOutcome {
        status,
        outputs,
        inputs_used,
        started,
        finished: now_rfc3339(),
        wall_seconds: wall0.elapsed().as_secs_f64(),
        cpu_seconds: cpu,
        peak_rss_bytes: rss,
        exit_code,
        error: error.clone(),
        log_tail: log.into_lines(),
    };
    let journal_error = shared
        .journal
        .finished(index, qid, attempt, outcome)
        .err()
        .map(RuntimeError::from);
    JobResult {
        index,
        status,
        error,
        journal_error,
    }
}

/// Every input and prerequisite id of `q`, each once.
fn all_inputs(q: &BundleQuantum) -> Vec<uuid::Uuid> {
    let mut set = HashSet::new();
    q.inputs
        .iter()
        .chain(&q.prerequisites)
        .flat_map(|(_, refs)| refs)
        .map(|r| r.id)
        .filter(|id| set.insert(*id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantum_lists_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_quantum_list("1,2,5-7").unwrap(), vec![1, 2, 5, 6, 7]);
        assert_eq!(parse_quantum_list(" 3 ").unwrap(), vec![3]);
        for bad in ["", "1,,2", "a", "5-2", "-1", "1-", "0-4294967295"] {
            let e = parse_quantum_list(bad).unwrap_err();
            assert!(
                matches!(e, RuntimeError::BadQuantumList { .. }),
                "{bad}: {e}"
            );
        }
    }
}
