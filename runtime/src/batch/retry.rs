//! The engine-neutral part of `restart`: which clusters to submit again
//! and with how much memory. Clusters whose quanta all succeeded are left
//! out, and so are those whose remaining quanta failed deterministically
//! (an exit code in the task's `batch.deterministic_exit_codes`, or a Rust
//! task error that does not change on a rerun) or are downstream of such a
//! failure; clusters that ran out of memory get their last memory times
//! [`RetryPolicy::memory_multiplier`], capped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use quanta_core::{fold_journals, JournalRecords, QuantumState};

use super::error::{BatchError, Result};
use super::plan::{cluster_resources, BundleView};
use super::state::{state_path, SubmissionState};
use super::{RetryPolicy, SubmitOptions};

/// Per cluster: whether each of its quanta is succeeded, and what the
/// failed ones are.
struct Fold {
    progress: quanta_core::CampaignProgress,
}

fn fold(v: &BundleView, state: &SubmissionState) -> Result<Fold> {
    let progress = fold_journals(&state.journal_dir, v.header_id, v.n_quanta).map_err(|e| {
        BatchError::Journal {
            path: state.journal_dir.clone(),
            detail: e.to_string(),
        }
    })?;
    Ok(Fold { progress })
}

/// Whether a failed quantum's failure would repeat on a rerun, its record
/// read back through `records`.
fn is_deterministic(
    v: &BundleView,
    f: &Fold,
    records: &mut JournalRecords,
    q: u32,
) -> std::result::Result<bool, quanta_core::JournalError> {
    let Some(p) = f.progress.quanta.get(&q) else {
        return Ok(false);
    };
    if p.state != QuantumState::Failed {
        return Ok(false);
    }
    let Some(quanta_core::JournalRecord::Finished {
        exit_code, error, ..
    }) = records.finished(p)?
    else {
        return Ok(false);
    };
    let codes = v
        .task_of
        .get(q as usize)
        .and_then(|t| v.task_configs.get(*t as usize))
        .map(|(_, c)| c.deterministic_exit_codes.as_slice())
        .unwrap_or(&[]);
    if let Some(code) = exit_code {
        return Ok(codes.contains(&code));
    }
    // Rust tasks have no exit code; their error kind says it. These
    // prefixes are TaskError's Display of Config and BadInput.
    Ok(error
        .as_deref()
        .is_some_and(|e| e.starts_with("invalid config:") || e.starts_with("invalid input ")))
}

/// Quanta that failed deterministically and everything downstream of them.
fn dead_quanta(v: &BundleView, f: &Fold, state: &SubmissionState) -> Result<BTreeSet<u32>> {
    let mut records = JournalRecords::default();
    let mut dead = BTreeSet::new();
    for q in 0..v.n_quanta as u32 {
        let deterministic =
            is_deterministic(v, f, &mut records, q).map_err(|e| BatchError::Journal {
                path: state.journal_dir.clone(),
                detail: e.to_string(),
            })?;
        if deterministic {
            dead.insert(q);
        }
    }
    // Upstream indices are not assumed to be smaller: iterate to a fixed point.
    loop {
        let before = dead.len();
        for q in 0..v.n_quanta as u32 {
            if !dead.contains(&q)
                && !f.progress.is_succeeded(q)
                && v.upstream[q as usize].iter().any(|u| dead.contains(u))
            {
                dead.insert(q);
            }
        }
        if dead.len() == before {
            return Ok(dead);
        }
    }
}

/// Refuses a state written for another bundle than the one at its path
/// (the bundle was made again since the first submission).
pub(crate) fn check_same_bundle(
    bundle: &Path,
    v: &BundleView,
    state: &SubmissionState,
) -> Result<()> {
    if v.header_id == state.bundle_id {
        return Ok(());
    }
    Err(BatchError::BadState {
        path: state_path(bundle),
        detail: format!(
            "written for bundle {}, but {} is bundle {}",
            state.bundle_id,
            bundle.display(),
            v.header_id
        ),
    })
}

/// What `restart` submits again.
#[derive(Debug, Default)]
pub(crate) struct RestartPlan {
    /// Clusters to submit (positions in the bundle's clusters).
    pub(crate) selected: Vec<usize>,
    /// Memory per selected cluster.
    pub(crate) mem: BTreeMap<usize, Option<u64>>,
    /// Clusters left out because everything in them succeeded.
    pub(crate) succeeded: usize,
    /// Clusters left out as dead (deterministic failures, downstream).
    pub(crate) dead_clusters: Vec<String>,
    /// Clusters given more memory: (name, MB).
    pub(crate) raised: Vec<(String, u64)>,
}

/// Folds the journals and decides what to submit again.
pub(crate) fn plan_restart(
    v: &BundleView,
    state: &SubmissionState,
    opts: &SubmitOptions,
    policy: RetryPolicy,
) -> Result<RestartPlan> {
    let f = fold(v, state)?;
    let dead = dead_quanta(v, &f, state)?;
    let mut p = RestartPlan::default();
    for (ci, c) in v.clusters.iter().enumerate() {
        let todo: Vec<u32> = c
            .quanta
            .iter()
            .copied()
            .filter(|q| !f.progress.is_succeeded(*q))
            .collect();
        if todo.is_empty() {
            p.succeeded += 1;
            continue;
        }
        if todo.iter().all(|q| dead.contains(q)) {
            p.dead_clusters.push(c.name.clone());
            continue;
        }
        let base = cluster_resources(v, ci, opts).mem_mb;
        let prev = state.clusters.get(&c.name).and_then(|s| s.mem_mb).or(base);
        let oom = todo
            .iter()
            .any(|q| f.progress.state(*q) == QuantumState::OutOfMemory);
        let m = match (oom, prev) {
            (true, Some(prev)) => {
                let mut m = ((prev as f64) * policy.memory_multiplier).ceil() as u64;
                if let Some(cap) = policy.max_mem_mb {
                    m = m.min(cap);
                }
                p.raised.push((c.name.clone(), m));
                Some(m.max(prev))
            }
            _ => prev,
        };
        p.mem.insert(ci, m);
        p.selected.push(ci);
    }
    Ok(p)
}
