//! Folding the journals of a bundle into one state per quantum: what resume
//! skips, what `quanta status` shows and what merge registers. No database:
//! this reads the bundle's journals only.
//!
//! Rules, applied per quantum index:
//! - any `Finished { status: Succeeded }` record makes the quantum
//!   succeeded (the first such record, in journal file order, is the one
//!   reported; a second success can only come from a rerun and wrote the
//!   same predicted paths);
//! - otherwise the `Finished` record with the highest attempt decides
//!   (failed, timed out, out of memory, blocked);
//! - a `Started` record whose attempt is newer than every `Finished` record
//!   makes the quantum running (or crashed: a journal cannot tell a live
//!   worker from a killed one; a rerun treats it as not done);
//! - no record at all: pending.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use uuid::Uuid;

use crate::journal::{list_journals, read_journal, JournalError, JournalRecord, QuantumStatus};

/// The state of one quantum according to the journals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantumState {
    Pending,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    OutOfMemory,
    Blocked,
}

impl QuantumState {
    pub fn as_str(self) -> &'static str {
        match self {
            QuantumState::Pending => "pending",
            QuantumState::Running => "running",
            QuantumState::Succeeded => "succeeded",
            QuantumState::Failed => "failed",
            QuantumState::TimedOut => "timed_out",
            QuantumState::OutOfMemory => "out_of_memory",
            QuantumState::Blocked => "blocked",
        }
    }

    /// Failed for good in a way that blocks downstream quanta.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            QuantumState::Failed | QuantumState::TimedOut | QuantumState::OutOfMemory
        )
    }
}

impl From<QuantumStatus> for QuantumState {
    fn from(s: QuantumStatus) -> Self {
        match s {
            QuantumStatus::Succeeded => QuantumState::Succeeded,
            QuantumStatus::Failed => QuantumState::Failed,
            QuantumStatus::TimedOut => QuantumState::TimedOut,
            QuantumStatus::OutOfMemory => QuantumState::OutOfMemory,
            QuantumStatus::Blocked => QuantumState::Blocked,
        }
    }
}

/// What the journals say about one quantum.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantumProgress {
    pub state: QuantumState,
    /// The highest attempt number seen in a `Started` record.
    pub attempts: u32,
    /// The quantum UUID the records carry (checked against the bundle by
    /// callers that decode the quantum anyway).
    pub quantum_id: Uuid,
    /// The deciding `Finished` record, if any.
    pub finished: Option<JournalRecord>,
    /// The latest `Started` record, if any.
    pub started: Option<JournalRecord>,
    /// The journal holding the deciding record.
    pub journal: PathBuf,
}

/// The fold of every journal of one bundle.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CampaignProgress {
    /// By quantum index; quanta without records are absent (pending).
    pub quanta: BTreeMap<u32, QuantumProgress>,
    /// Journals written for another bundle (path, their bundle id): ignored.
    pub foreign_journals: Vec<(PathBuf, Uuid)>,
    /// Records naming a quantum index the bundle does not have.
    pub unknown_quanta: Vec<(PathBuf, u32)>,
    /// Torn tails and other recoverable oddities, for the caller to log.
    pub warnings: Vec<String>,
    /// The journal files read.
    pub journals: Vec<PathBuf>,
}

impl CampaignProgress {
    pub fn state(&self, index: u32) -> QuantumState {
        self.quanta
            .get(&index)
            .map(|q| q.state)
            .unwrap_or(QuantumState::Pending)
    }

    pub fn is_succeeded(&self, index: u32) -> bool {
        self.state(index) == QuantumState::Succeeded
    }

    /// Counts per state over `n_quanta` quanta.
    pub fn counts(&self, n_quanta: usize) -> BTreeMap<QuantumState, usize> {
        let mut counts = BTreeMap::new();
        let known = self.quanta.len();
        for q in self.quanta.values() {
            *counts.entry(q.state).or_insert(0) += 1;
        }
        if n_quanta > known {
            *counts.entry(QuantumState::Pending).or_insert(0) += n_quanta - known;
        }
        counts
    }
}

fn attempt_of(r: &JournalRecord) -> u32 {
    match r {
        JournalRecord::Started { attempt, .. } | JournalRecord::Finished { attempt, .. } => {
            *attempt
        }
    }
}

/// Reads every journal in `dir` and folds them for the bundle `bundle_id`
/// with `n_quanta` quanta. A journal that cannot be read at all (not a
/// journal) is an error naming it; torn tails are warnings.
pub fn fold_journals(
    dir: &Path,
    bundle_id: Uuid,
    n_quanta: usize,
) -> Result<CampaignProgress, JournalError> {
    let mut progress = CampaignProgress::default();
    for path in list_journals(dir)? {
        let contents = read_journal(&path)?;
        if let Some(warning) = &contents.torn_tail {
            progress
                .warnings
                .push(format!("{}: {warning}", path.display()));
        }
        progress.journals.push(path.clone());
        if contents.header.bundle_id != bundle_id {
            progress
                .foreign_journals
                .push((path, contents.header.bundle_id));
            continue;
        }
        for record in contents.records {
            let (index, quantum_id) = match &record {
                JournalRecord::Started {
                    quantum,
                    quantum_id,
                    ..
                }
                | JournalRecord::Finished {
                    quantum,
                    quantum_id,
                    ..
                } => (*quantum, *quantum_id),
            };
            if index as usize >= n_quanta {
                progress.unknown_quanta.push((path.clone(), index));
                continue;
            }
            let entry = progress
                .quanta
                .entry(index)
                .or_insert_with(|| QuantumProgress {
                    state: QuantumState::Pending,
                    attempts: 0,
                    quantum_id,
                    finished: None,
                    started: None,
                    journal: path.clone(),
                });
            apply(entry, record, &path);
        }
    }
    Ok(progress)
}

fn apply(entry: &mut QuantumProgress, record: JournalRecord, path: &Path) {
    match &record {
        JournalRecord::Started { attempt, .. } => {
            entry.attempts = entry.attempts.max(*attempt);
            let newer = entry
                .started
                .as_ref()
                .is_none_or(|s| attempt_of(s) <= *attempt);
            if newer {
                entry.started = Some(record);
            }
        }
        JournalRecord::Finished {
            status, attempt, ..
        } => {
            let already_succeeded = entry.state == QuantumState::Succeeded;
            let decides = match &entry.finished {
                None => true,
                Some(_) if already_succeeded => false,
                Some(_) if *status == QuantumStatus::Succeeded => true,
                Some(previous) => attempt_of(previous) <= *attempt,
            };
            if decides {
                entry.state = (*status).into();
                entry.finished = Some(record);
                entry.journal = path.to_path_buf();
            }
        }
    }
    // A start newer than the deciding finish means a rerun is under way (or
    // died); success is final whatever follows.
    if entry.state != QuantumState::Succeeded {
        let last_start = entry.started.as_ref().map(attempt_of);
        let last_finish = entry.finished.as_ref().map(attempt_of);
        if let Some(start) = last_start {
            if last_finish.is_none_or(|f| start > f) {
                entry.state = QuantumState::Running;
            } else if let Some(JournalRecord::Finished { status, .. }) = &entry.finished {
                entry.state = (*status).into();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{JournalHeader, JournalWriter};

    fn started(q: u32, attempt: u32) -> JournalRecord {
        JournalRecord::Started {
            quantum: q,
            quantum_id: Uuid::nil(),
            attempt,
            host: "h".into(),
            pid: 1,
            time: "t".into(),
            batch_job: None,
        }
    }

    fn finished(q: u32, attempt: u32, status: QuantumStatus) -> JournalRecord {
        JournalRecord::Finished {
            quantum: q,
            quantum_id: Uuid::nil(),
            attempt,
            status,
            outputs: vec![],
            inputs_used: vec![],
            started: "t".into(),
            finished: "t".into(),
            wall_seconds: 0.0,
            cpu_seconds: 0.0,
            peak_rss_bytes: 0,
            exit_code: None,
            error: None,
            log_tail: vec![],
        }
    }

    fn journal(dir: &Path, name: &str, bundle: Uuid, records: &[JournalRecord]) {
        let header = JournalHeader {
            bundle_id: bundle,
            worker: name.into(),
            host: "h".into(),
            pid: 1,
            started_at: "t".into(),
        };
        let mut w = JournalWriter::create(&dir.join(format!("{name}.journal")), &header).unwrap();
        for r in records {
            w.append(r).unwrap();
        }
    }

    #[test]
    fn fold_applies_the_precedence_rules() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = Uuid::now_v7();
        use QuantumStatus::*;
        journal(
            dir.path(),
            "a",
            bundle,
            &[
                started(0, 1),
                finished(0, 1, Failed),
                started(0, 2),
                finished(0, 2, Succeeded),
                started(1, 1),
                finished(1, 1, Failed),
                finished(2, 0, Blocked),
                started(3, 1),
                started(9, 1),
            ],
        );
        // A later worker reran quantum 1 and 2; quantum 0 ran again and failed
        // (cannot undo its success).
        journal(
            dir.path(),
            "b",
            bundle,
            &[
                started(1, 2),
                finished(1, 2, Succeeded),
                started(2, 1),
                started(0, 3),
                finished(0, 3, Failed),
            ],
        );
        journal(dir.path(), "c", Uuid::now_v7(), &[started(4, 1)]);
        let p = fold_journals(dir.path(), bundle, 5).unwrap();
        assert_eq!(p.state(0), QuantumState::Succeeded);
        assert_eq!(p.quanta[&0].attempts, 3);
        assert_eq!(p.state(1), QuantumState::Succeeded);
        assert_eq!(p.state(2), QuantumState::Running);
        assert_eq!(p.state(3), QuantumState::Running);
        assert_eq!(p.state(4), QuantumState::Pending);
        assert_eq!(p.foreign_journals.len(), 1);
        assert_eq!(p.unknown_quanta.len(), 1);
        let counts = p.counts(5);
        assert_eq!(counts[&QuantumState::Succeeded], 2);
        assert_eq!(counts[&QuantumState::Running], 2);
        assert_eq!(counts[&QuantumState::Pending], 1);
    }

    #[test]
    fn missing_directory_means_everything_pending() {
        let dir = tempfile::tempdir().unwrap();
        let p = fold_journals(&dir.path().join("none"), Uuid::nil(), 3).unwrap();
        assert_eq!(p.counts(3)[&QuantumState::Pending], 3);
    }
}
