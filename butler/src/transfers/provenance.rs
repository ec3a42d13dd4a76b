//! The provenance an export carries in its extras (`--with-provenance`):
//! the quanta that produced the exported datasets, with their input links
//! and execution records, the RUN provenance rows of their bundles (task
//! configs, software version, command line) and each dataset's producing
//! connection. Import restores them in the transaction that registers the
//! datasets, so `quanta provenance` answers in the destination as in the
//! source. LSST never reads it.

use std::collections::{BTreeSet, HashSet};

use quanta_core::Uuid;
use quanta_registry::{FoundDataset, ProvenanceBatch, ProvenanceQuantum, Registry};

use super::TransferError;

/// The provenance of `found` in `registry`.
pub(crate) fn export_provenance(
    registry: &Registry,
    found: &[FoundDataset],
) -> Result<ProvenanceBatch, TransferError> {
    let selected: HashSet<Uuid> = found.iter().map(|f| f.dataset_ref.id).collect();
    let mut quanta = BTreeSet::new();
    for f in found {
        if let Some(q) = registry.producer_of(&f.dataset_ref.id)? {
            quanta.insert(q);
        }
    }
    let mut batch = ProvenanceBatch::default();
    let mut bundles = BTreeSet::new();
    for q in quanta {
        let Some(row) = registry.quantum(&q)? else {
            continue;
        };
        for (dataset, connection) in registry.quantum_outputs(&q)? {
            if selected.contains(&dataset) {
                batch.producers.push((dataset, q, connection));
            }
        }
        bundles.insert((row.run.clone(), row.bundle_id));
        batch.quanta.push(ProvenanceQuantum {
            id: q,
            inputs: registry.quantum_inputs(&q)?,
            run: row.run,
            bundle_id: row.bundle_id,
            task_label: row.task_label,
            data_id: row.data_id,
            execution: row.execution,
        });
    }
    let runs: BTreeSet<&String> = bundles.iter().map(|(run, _)| run).collect();
    for run in runs {
        batch.runs.extend(
            registry
                .run_provenance(run)?
                .into_iter()
                .filter(|p| bundles.contains(&(p.run.clone(), p.bundle_id))),
        );
    }
    Ok(batch)
}
