//! What earlier runs did, folded from a bundle's journals: enough to skip
//! quanta that already succeeded and number new attempts.
//!
//! This is the runtime's private fold until the shared per-quantum status
//! fold lands in core; it reads only what resume needs.

use std::collections::HashMap;
use std::path::Path;

use quanta_core::{list_journals, read_journal, JournalError, JournalRecord, QuantumStatus};
use uuid::Uuid;

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PriorQuantum {
    pub quantum_id: Uuid,
    /// Started records seen (attempts made, finished or not).
    pub attempts: u32,
    pub succeeded: bool,
}

#[derive(Debug, Default)]
pub(crate) struct PriorState {
    by_index: HashMap<u32, PriorQuantum>,
}

impl PriorState {
    /// Folds every journal in `dir` written for `bundle_id`. Journals of
    /// other bundles and files that are not journals are skipped with a
    /// warning; a torn tail only loses its last record.
    pub fn load(dir: &Path, bundle_id: Uuid) -> Result<Self, JournalError> {
        let mut state = PriorState::default();
        for path in list_journals(dir)? {
            let c = match read_journal(&path) {
                Ok(c) => c,
                Err(e @ JournalError::NotAJournal { .. }) => {
                    tracing::warn!("skipping {}: {e}", path.display());
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(w) = &c.torn_tail {
                tracing::warn!("{w}");
            }
            if c.header.bundle_id != bundle_id {
                tracing::warn!(
                    "skipping journal {}: it belongs to bundle {}, not {bundle_id}",
                    path.display(),
                    c.header.bundle_id
                );
                continue;
            }
            for r in c.records {
                match r {
                    JournalRecord::Started {
                        quantum,
                        quantum_id,
                        ..
                    } => {
                        let p = state.entry(quantum, quantum_id);
                        p.attempts += 1;
                    }
                    JournalRecord::Finished {
                        quantum,
                        quantum_id,
                        status,
                        ..
                    } => {
                        let p = state.entry(quantum, quantum_id);
                        if status == QuantumStatus::Succeeded {
                            p.succeeded = true;
                        }
                    }
                }
            }
        }
        Ok(state)
    }

    fn entry(&mut self, index: u32, id: Uuid) -> &mut PriorQuantum {
        self.by_index.entry(index).or_insert_with(|| PriorQuantum {
            quantum_id: id,
            ..Default::default()
        })
    }

    /// What is known of quantum `index`, if its records carry `id` (records
    /// with another id are from a different bundle at the same path).
    pub fn get(&self, index: u32, id: Uuid) -> Option<&PriorQuantum> {
        self.by_index.get(&index).filter(|p| p.quantum_id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quanta_core::{JournalHeader, JournalWriter};

    fn finished(q: u32, status: QuantumStatus) -> JournalRecord {
        JournalRecord::Finished {
            quantum: q,
            quantum_id: Uuid::from_u128(q.into()),
            attempt: 1,
            status,
            outputs: vec![],
            inputs_used: vec![],
            started: String::new(),
            finished: String::new(),
            wall_seconds: 0.0,
            cpu_seconds: 0.0,
            peak_rss_bytes: 0,
            exit_code: None,
            error: None,
            log_tail: vec![],
        }
    }

    fn started(q: u32) -> JournalRecord {
        JournalRecord::Started {
            quantum: q,
            quantum_id: Uuid::from_u128(q.into()),
            attempt: 1,
            host: "h".into(),
            pid: 1,
            time: String::new(),
            batch_job: None,
        }
    }

    #[test]
    fn folds_journals_of_this_bundle_only() {
        let dir = tempfile::tempdir().unwrap();
        let header = |b: u128| JournalHeader {
            bundle_id: Uuid::from_u128(b),
            worker: "w".into(),
            host: "h".into(),
            pid: 1,
            started_at: String::new(),
        };
        let mut a = JournalWriter::create(&dir.path().join("a.journal"), &header(9)).unwrap();
        for r in [
            started(1),
            finished(1, QuantumStatus::Failed),
            started(1),
            finished(1, QuantumStatus::Succeeded),
            started(2),
        ] {
            a.append(&r).unwrap();
        }
        let mut other = JournalWriter::create(&dir.path().join("b.journal"), &header(8)).unwrap();
        other.append(&started(3)).unwrap();
        other
            .append(&finished(3, QuantumStatus::Succeeded))
            .unwrap();
        std::fs::write(dir.path().join("junk.journal"), b"junk").unwrap();

        let s = PriorState::load(dir.path(), Uuid::from_u128(9)).unwrap();
        let q1 = s.get(1, Uuid::from_u128(1)).unwrap();
        assert_eq!((q1.attempts, q1.succeeded), (2, true));
        let q2 = s.get(2, Uuid::from_u128(2)).unwrap();
        assert_eq!((q2.attempts, q2.succeeded), (1, false));
        assert!(
            s.get(3, Uuid::from_u128(3)).is_none(),
            "another bundle's journal"
        );
        assert!(
            s.get(1, Uuid::from_u128(77)).is_none(),
            "a different quantum id"
        );
    }
}
