//! Running a bundle on a batch system: `quanta submit`, `cancel`,
//! `restart` and the batch part of `quanta status`, behind one interface,
//! [`BatchEngine`] (modelled on ctrl_bps's `wms_service.py`: submit,
//! status, cancel, restart), implemented by [`slurm`] and [`gridengine`]
//! (real job arrays, tested on real single-node clusters, both through
//! the one array driver, module `array`) and [`htcondor`] (DAGMan files
//! only: no HTCondor pool here). The cli picks an engine by name through
//! [`engine`]; the state file records which engine submitted, so
//! [`status`] asks that one and the others refuse to cancel or restart
//! it.
//!
//! Owns what no engine owns alone:
//! - the plan ([`plan`]): each cluster's resource request from the tasks'
//!   `batch` config and the command line, the clusters each cluster reads
//!   from, dependency levels, and arrays (one per level and request);
//! - the array driver (module `array`): submit, cancel, restart and
//!   status of every engine with job arrays, the waits between arrays,
//!   the final merge job and the job scripts' common shape, over an
//!   `ArrayScheduler` that supplies a scheduler's own parts;
//! - the submission state file `<bundle>.slurm.json` and the work
//!   directory `<bundle>.slurm/` ([`state`]);
//! - the restart policy ([`RetryPolicy`]): which clusters to submit again
//!   and with how much memory (module `retry`);
//! - the status fold of journals per cluster ([`BatchStatus`]);
//! - the memory supervisor every worker uses ([`run_supervised`],
//!   [`record_out_of_memory`]).
//!
//! Must not: run quanta itself (jobs run `quanta worker`), interpret
//! journals beyond [`quanta_core::fold_journals`], or touch the SQL
//! Registry (the final job runs `quanta merge`).
//!
//! # Adding an engine
//!
//! A scheduler with job arrays (PBS, LSF): write a module here with a
//! unit struct implementing `array::ArrayScheduler` — only its own parts:
//! what an array element reads to find its cluster and the script lines
//! that read it (`write_elements`), how a script's last command ends
//! (`last_command`), its notation of a wait on upstream arrays (`wait`:
//! element-wise or on all of them), submitting one array and the merge
//! job and returning their ids, cancelling ids, listing its jobs (a
//! parser of the scheduler's output, with `array::ListedJob` for its
//! rows) and naming an array element. It is then a [`BatchEngine`]: the
//! driver does the rest. Any other engine (per-node edges like DAGMan)
//! implements [`BatchEngine`] itself on top of the plan, the state file
//! and `retry::plan_restart`. Either way, add one line to `ENGINES`; the
//! cli needs no change.

mod array;
mod error;
pub mod gridengine;
pub mod htcondor;
pub mod plan;
mod retry;
pub mod slurm;
pub mod state;
mod status;
mod supervisor;
mod tools;

use std::path::{Path, PathBuf};

use quanta_core::CampaignProgress;
use serde::Serialize;

pub use error::BatchError;
pub use plan::{parse_mem_mb, task_batch_config, ClusterDeps, Resources, TaskBatchConfig};
pub use state::{
    load_state, state_path, work_dir, ArrayJob, ClusterState, Submission, SubmissionState,
    STATE_VERSION,
};
pub use status::{BatchStatus, ClusterStatus};
pub use supervisor::{record_out_of_memory, run_supervised, ChildEnd};

use error::Result;

/// How to submit.
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    /// The data repository the final job merges into.
    pub repo: PathBuf,
    /// The `quanta` executable the jobs run.
    pub quanta_exe: PathBuf,
    /// Requests that override every task's `batch` config.
    pub overrides: Resources,
    /// Requests for tasks whose config names none.
    pub defaults: Resources,
    /// At most this many elements of one array run at once.
    pub throttle: Option<u32>,
    /// Extra attempts the worker makes itself for a failing quantum.
    pub worker_retries: u32,
    pub journal_dir: Option<PathBuf>,
    /// Passed to every `sbatch` as they are (site options).
    pub extra_sbatch_args: Vec<String>,
}

/// How `restart` (and an engine's own retries) scale memory.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub memory_multiplier: f64,
    pub max_mem_mb: Option<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            memory_multiplier: 2.0,
            max_mem_mb: None,
        }
    }
}

/// What a submit or restart did.
#[derive(Debug, Clone, Serialize)]
pub struct SubmitReport {
    pub submission: u32,
    pub arrays: Vec<ArrayJob>,
    pub merge_job: Option<String>,
    /// Clusters left out because everything in them succeeded.
    pub succeeded_clusters: usize,
    /// Clusters left out because their remaining quanta failed
    /// deterministically or are downstream of such a failure.
    pub dead_clusters: Vec<String>,
    /// Clusters given more memory after running out of it: (name, MB).
    pub memory_raised: Vec<(String, u64)>,
}

/// The submit choices that only some engines use.
#[derive(Debug, Clone, Default)]
pub struct SubmitRequest {
    /// `--dry-run`: write the engine's files instead of submitting.
    pub dry_run: bool,
    /// Where the `--dry-run` files go.
    pub out: Option<PathBuf>,
    /// Retries the engine itself makes per job (HTCondor's DAGMan `RETRY`),
    /// memory growing by `memory.memory_multiplier` on each.
    pub node_retries: u32,
    pub memory: RetryPolicy,
}

/// What a submit produced.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// Jobs the engine accepted.
    Jobs(SubmitReport),
    /// Files written for a site to submit (dry run).
    Files(Vec<PathBuf>),
}

/// One batch system. Every method takes the bundle path: the state file
/// next to it says what was submitted.
pub trait BatchEngine {
    /// The name the cli's `--engine` takes.
    fn name(&self) -> &'static str;
    /// The job this process runs as, when the engine started it, read from
    /// the variables the engine sets (for provenance: a quantum records
    /// the batch job that ran it).
    fn job_from_environment(&self) -> Option<String>;
    /// Submits every cluster of the bundle (or writes the files to submit).
    fn submit(&self, bundle: &Path, opts: &SubmitOptions, req: &SubmitRequest)
        -> Result<Submitted>;
    /// The submission's status per cluster; `None` when never submitted.
    /// `known` is a journal fold the caller already made, with its
    /// directory.
    fn status(
        &self,
        bundle: &Path,
        known: Option<(&Path, &CampaignProgress)>,
    ) -> Result<Option<BatchStatus>>;
    /// Cancels every live job of the submission; returns their ids.
    fn cancel(&self, bundle: &Path) -> Result<Vec<String>>;
    /// Submits again the clusters that have not succeeded (see
    /// [`RetryPolicy`]).
    fn restart(
        &self,
        bundle: &Path,
        opts: &SubmitOptions,
        policy: RetryPolicy,
    ) -> Result<SubmitReport>;
}

type MakeEngine = fn() -> Box<dyn BatchEngine>;

/// Every engine by name, in the order the help lists them.
const ENGINES: &[(&str, MakeEngine)] = &[
    ("slurm", || Box::new(slurm::Slurm)),
    ("htcondor", || Box::new(htcondor::HtCondor)),
    ("gridengine", || Box::new(gridengine::GridEngine)),
];

/// The engine called `name`, if there is one.
pub fn engine(name: &str) -> Option<Box<dyn BatchEngine>> {
    ENGINES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, make)| make())
}

/// The batch status of `bundle`'s submission, asked of the engine that
/// made it (the state file records it); `None` when never submitted.
pub fn status(
    bundle: &Path,
    known: Option<(&Path, &CampaignProgress)>,
) -> Result<Option<BatchStatus>> {
    let state = match load_state(bundle) {
        Ok(s) => s,
        Err(BatchError::NotSubmitted { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    match engine(&state.engine) {
        Some(e) => e.status(bundle, known),
        None => Err(BatchError::BadState {
            path: state_path(bundle),
            detail: format!(
                "submitted by an unknown engine `{}` (known: {})",
                state.engine,
                engine_names().join(", ")
            ),
        }),
    }
}

/// The batch job this process runs as, asked of every engine; `None`
/// outside a batch job.
pub fn current_job() -> Option<String> {
    ENGINES
        .iter()
        .find_map(|(_, make)| make().job_from_environment())
}

/// The names [`engine`] knows.
pub fn engine_names() -> Vec<&'static str> {
    ENGINES.iter().map(|(n, _)| *n).collect()
}

#[cfg(test)]
mod tests;
