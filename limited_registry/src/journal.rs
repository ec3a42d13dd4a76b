//! [`WorkerJournal`]: one worker's journal file, shared by its threads.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use quanta_core::{
    now_rfc3339, JournalError, JournalHeader, JournalRecord, JournalWriter, QuantumStatus,
    WrittenOutput,
};
use uuid::Uuid;

use crate::error::LimitedRegistryError as Error;

/// How one attempt of a quantum ended, as the journal records it.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantumOutcome {
    pub status: QuantumStatus,
    pub outputs: Vec<WrittenOutput>,
    pub inputs_used: Vec<Uuid>,
    /// RFC 3339 UTC.
    pub started: String,
    pub finished: String,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub log_tail: Vec<String>,
}

/// The journal of one worker process. Each record is appended with one
/// write, so a killed worker loses at most the quantum in flight. The file
/// name is unique per process (`<name>-<host>-<pid>-<n>.journal`, `n`
/// chosen so the file is new), so no two workers ever share a file.
#[derive(Debug)]
pub struct WorkerJournal {
    path: PathBuf,
    host: String,
    pid: u32,
    batch_job: Option<String>,
    writer: Mutex<JournalWriter>,
}

/// Keeps a name usable as part of a file name.
fn file_safe(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.trim_start_matches('.').chars().take(64).collect()
}

impl WorkerJournal {
    /// Creates a new journal in `dir` (created if missing) for the bundle
    /// `bundle_id`. `name` is the worker's role (`run`, a cluster name, …).
    pub fn create(
        dir: &Path,
        bundle_id: Uuid,
        name: &str,
        batch_job: Option<String>,
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::JournalCreate {
            dir: dir.to_path_buf(),
            detail: format!("creating the directory: {e}"),
        })?;
        let host = quanta_core::host_name();
        let pid = std::process::id();
        let header = JournalHeader {
            bundle_id,
            worker: name.to_string(),
            host: host.clone(),
            pid,
            started_at: now_rfc3339(),
        };
        let stem = format!("{}-{}-{pid}", file_safe(name), file_safe(&host));
        // A pid can recur (another host, a restarted node, a later job); the
        // counter finds the first free name and `create` refuses to reuse one.
        for n in 0..10_000u32 {
            let path = dir.join(format!("{stem}-{n}.journal"));
            match JournalWriter::create_unsynced(&path, &header) {
                Ok(writer) => {
                    return Ok(Self {
                        path,
                        host,
                        pid,
                        batch_job,
                        writer: Mutex::new(writer),
                    })
                }
                Err(JournalError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::JournalCreate {
            dir: dir.to_path_buf(),
            detail: format!("no free journal name for {stem}"),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&self, rec: &JournalRecord) -> Result<(), Error> {
        // A poisoned lock only means another thread panicked mid-append; the
        // writer itself cuts torn records back, so keep going.
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.append(rec).map_err(Error::from)
    }

    /// Records that an attempt of quantum `index` starts now.
    pub fn started(&self, index: u32, quantum_id: Uuid, attempt: u32) -> Result<(), Error> {
        self.append(&JournalRecord::Started {
            quantum: index,
            quantum_id,
            attempt,
            host: self.host.clone(),
            pid: self.pid,
            time: now_rfc3339(),
            batch_job: self.batch_job.clone(),
        })
    }

    /// Records how an attempt ended.
    pub fn finished(
        &self,
        index: u32,
        quantum_id: Uuid,
        attempt: u32,
        o: QuantumOutcome,
    ) -> Result<(), Error> {
        self.append(&JournalRecord::Finished {
            quantum: index,
            quantum_id,
            attempt,
            status: o.status,
            outputs: o.outputs,
            inputs_used: o.inputs_used,
            started: o.started,
            finished: o.finished,
            wall_seconds: o.wall_seconds,
            cpu_seconds: o.cpu_seconds,
            peak_rss_bytes: o.peak_rss_bytes,
            exit_code: o.exit_code,
            error: o.error,
            log_tail: o.log_tail,
        })
    }

    /// Records that quantum `index` was not attempted because `reason` (an
    /// upstream quantum failed or is not done).
    pub fn blocked(&self, index: u32, quantum_id: Uuid, reason: String) -> Result<(), Error> {
        let now = now_rfc3339();
        self.finished(
            index,
            quantum_id,
            0,
            QuantumOutcome {
                status: QuantumStatus::Blocked,
                outputs: Vec::new(),
                inputs_used: Vec::new(),
                started: now.clone(),
                finished: now,
                wall_seconds: 0.0,
                cpu_seconds: 0.0,
                peak_rss_bytes: 0,
                exit_code: None,
                error: Some(reason),
                log_tail: Vec::new(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quanta_core::read_journal;

    #[test]
    fn two_journals_in_one_dir_never_share_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::from_u128(7);
        let a = WorkerJournal::create(dir.path(), id, "cluster/a b", None).unwrap();
        let b = WorkerJournal::create(dir.path(), id, "cluster/a b", None).unwrap();
        assert_ne!(a.path(), b.path());
        let name = a.path().file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("cluster_a_b-") && name.ends_with("-0.journal"),
            "{name}"
        );

        a.started(3, Uuid::from_u128(3), 1).unwrap();
        a.blocked(4, Uuid::from_u128(4), "upstream 3 failed".into())
            .unwrap();
        let c = read_journal(a.path()).unwrap();
        assert_eq!(c.header.bundle_id, id);
        assert_eq!(c.records.len(), 2);
        match &c.records[1] {
            JournalRecord::Finished {
                quantum,
                status,
                error,
                ..
            } => {
                assert_eq!(*quantum, 4);
                assert_eq!(*status, QuantumStatus::Blocked);
                assert_eq!(error.as_deref(), Some("upstream 3 failed"));
            }
            r => panic!("unexpected {r:?}"),
        }
        assert!(read_journal(b.path()).unwrap().records.is_empty());
    }
}
