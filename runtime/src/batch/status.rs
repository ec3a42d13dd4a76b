//! The status fold of a submission: per cluster, its quanta counted by
//! journal state, with the memory and submission count of the state file
//! and the engine's view of the cluster's latest job ([`JobView`], which
//! the engine supplies: the array driver from the scheduler's listing,
//! `squeue` or `qstat`).

use std::collections::HashMap;
use std::path::Path;

use quanta_core::{fold_journals, Bundle, CampaignProgress, QuantumState};
use serde::Serialize;

use super::error::{BatchError, Result};
use super::state::{load_state, SubmissionState};

/// One cluster's line in `quanta status`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub cluster: String,
    pub quanta: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub out_of_memory: usize,
    pub blocked: usize,
    pub pending: usize,
    /// The engine's view of the cluster's latest job (Slurm: PENDING,
    /// RUNNING, …; Grid Engine: qw, r, …), or `None` when the engine no
    /// longer knows it.
    pub state: Option<String>,
    /// The cluster's latest job, in the engine's notation.
    pub job: Option<String>,
    pub mem_mb: Option<u64>,
    pub submitted: u32,
}

/// The batch section of `quanta status`.
#[derive(Debug, Clone, Serialize)]
pub struct BatchStatus {
    /// The engine that made the submission (`slurm`, `gridengine`).
    pub engine: String,
    pub submissions: usize,
    pub live_jobs: usize,
    pub clusters: Vec<ClusterStatus>,
    /// Set when the engine could not be asked (`squeue` or `qstat`
    /// failed); the journals still count.
    pub engine_error: Option<String>,
}

/// What an engine knows of a submission's jobs.
#[derive(Debug, Default)]
pub(crate) struct JobView {
    /// Cluster name → (its latest job, that job's state if still known).
    pub(crate) latest: HashMap<String, (String, Option<String>)>,
    pub(crate) live_jobs: usize,
    /// Why the engine could not be asked.
    pub(crate) error: Option<String>,
}

/// The status of `bundle`'s submission by `engine`, with the engine's
/// `jobs`; `None` when the bundle was never submitted.
///
/// `known` is a fold of the journals the caller already made (with the
/// directory it read), reused when it is the submission's journal
/// directory. Status needs only the bundle's header and clusters, not its
/// quanta, so no quanta block is decoded here.
pub(crate) fn status_with(
    engine: &str,
    bundle: &Path,
    known: Option<(&Path, &CampaignProgress)>,
    jobs: impl FnOnce(&SubmissionState) -> JobView,
) -> Result<Option<BatchStatus>> {
    let state = match load_state(bundle) {
        Ok(s) => s,
        Err(BatchError::NotSubmitted { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    state.check_engine(engine)?;
    let berr = |e: quanta_core::BundleError| BatchError::Bundle {
        path: bundle.to_path_buf(),
        detail: e.to_string(),
    };
    let b = Bundle::open(bundle).map_err(berr)?;
    let bundle_clusters = b.clusters().map_err(berr)?;
    let folded;
    let progress = match known {
        Some((dir, p)) if dir == state.journal_dir => p,
        _ => {
            folded = fold_journals(&state.journal_dir, b.header().bundle_id, b.n_quanta())
                .map_err(|e| BatchError::Journal {
                    path: state.journal_dir.clone(),
                    detail: e.to_string(),
                })?;
            &folded
        }
    };
    let view = jobs(&state);
    let clusters = bundle_clusters
        .iter()
        .map(|c| cluster_status(c, progress, &state, &view))
        .collect();
    Ok(Some(BatchStatus {
        engine: engine.to_string(),
        submissions: state.submissions.len(),
        live_jobs: view.live_jobs,
        clusters,
        engine_error: view.error,
    }))
}

fn cluster_status(
    c: &quanta_core::Cluster,
    progress: &CampaignProgress,
    state: &SubmissionState,
    view: &JobView,
) -> ClusterStatus {
    let mut cs = ClusterStatus {
        cluster: c.name.clone(),
        quanta: c.quanta.len(),
        succeeded: 0,
        failed: 0,
        out_of_memory: 0,
        blocked: 0,
        pending: 0,
        state: None,
        job: None,
        mem_mb: state.clusters.get(&c.name).and_then(|s| s.mem_mb),
        submitted: state.clusters.get(&c.name).map_or(0, |s| s.submitted),
    };
    for q in &c.quanta {
        match progress.state(*q) {
            QuantumState::Succeeded => cs.succeeded += 1,
            QuantumState::Failed | QuantumState::TimedOut => cs.failed += 1,
            QuantumState::OutOfMemory => cs.out_of_memory += 1,
            QuantumState::Blocked => cs.blocked += 1,
            QuantumState::Pending | QuantumState::Running => cs.pending += 1,
        }
    }
    if let Some((job, st)) = view.latest.get(&c.name) {
        cs.job = Some(job.clone());
        cs.state = st.clone();
    }
    cs
}
