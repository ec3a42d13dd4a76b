//! What earlier runs did, from the bundle's journals: enough to skip quanta
//! that already succeeded and to number new attempts. A thin view over the
//! shared fold in `quanta_core::status`, so that resume, `quanta status`
//! and merge agree on every quantum.

use std::path::Path;

use quanta_core::{fold_journals, CampaignProgress, JournalError, QuantumState};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PriorQuantum {
    /// The highest attempt number started so far.
    pub attempts: u32,
    pub succeeded: bool,
}

#[derive(Debug, Default)]
pub(crate) struct PriorState {
    progress: CampaignProgress,
}

impl PriorState {
    /// Folds every journal in `dir` written for `bundle_id`. Journals of
    /// other bundles are skipped with a warning; a torn tail only loses its
    /// last record.
    pub fn load(dir: &Path, bundle_id: Uuid, n_quanta: usize) -> Result<Self, JournalError> {
        let progress = fold_journals(dir, bundle_id, n_quanta)?;
        for warning in &progress.warnings {
            tracing::warn!("{warning}");
        }
        for (path, other) in &progress.foreign_journals {
            tracing::warn!(
                "skipping journal {}: it belongs to bundle {other}, not {bundle_id}",
                path.display()
            );
        }
        Ok(Self { progress })
    }

    /// What is known of quantum `index`, if its records carry `id` (records
    /// with another id are from a different bundle at the same path).
    pub fn get(&self, index: u32, id: Uuid) -> Option<PriorQuantum> {
        self.progress
            .quanta
            .get(&index)
            .filter(|p| p.quantum_id == id)
            .map(|p| PriorQuantum {
                attempts: p.attempts,
                succeeded: p.state == QuantumState::Succeeded,
            })
    }
}
