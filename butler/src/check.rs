//! `repo check`: does the registry agree with the datastore?
//!
//! Every file the registry records must exist with its recorded size and
//! BLAKE3 checksum (size only when fast), every file under the datastore
//! root must be one the registry records or the datastore's and runtime's
//! own bookkeeping ([`is_bookkeeping`]), and no removal may be left
//! half done. A repair finishes interrupted removals
//! ([`Butler::finish_removals`]) and moves orphans aside to
//! `<datastore>/.quarantine/repo-check/<path>` rather than deleting them:
//! the outputs of a campaign not merged yet are orphans until its merge,
//! and a repair must not destroy them. A registered file that is missing
//! or altered cannot be repaired here and stays a problem.

use std::collections::HashSet;

use quanta_datastore::{DatastoreError, ExpectedFile, QUARANTINE_DIR, TEMP_FILE_PREFIX};
use quanta_registry::PendingRemovals;
use serde::Serialize;

use crate::butler::Butler;
use crate::error::ButlerError;
use crate::remove::RemovalSummary;

/// Where a repair moves orphans, under the quarantine directory.
pub const ORPHANS_ASIDE: &str = "repo-check";

/// How [`Butler::check`] runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Compare sizes only, without reading the files.
    pub fast: bool,
    /// Finish interrupted removals and move orphans aside.
    pub repair: bool,
}

/// A registered file that is not what the registry recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileProblem {
    pub path: String,
    pub problem: String,
}

/// What [`Butler::check`] found, and with a repair, what it repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Registered files verified.
    pub files_checked: u64,
    /// Registered files missing or altered (never repaired).
    pub bad_files: Vec<FileProblem>,
    /// Files under the datastore root that nothing knows.
    pub orphans: Vec<String>,
    /// With a repair: orphans moved to `.quarantine/repo-check/`.
    pub orphans_moved: u64,
    /// Interrupted removals found.
    pub pending_removals: PendingRemovals,
    /// With a repair: what finishing them did.
    pub removals_finished: Option<RemovalSummary>,
}

impl CheckReport {
    /// Problems found, repaired or not.
    pub fn problems_found(&self) -> usize {
        self.bad_files.len()
            + self.orphans.len()
            + self.pending_removals.runs.len()
            + self.pending_removals.datasets as usize
    }

    /// Problems left after the repair (all of them without one).
    pub fn problems_left(&self) -> usize {
        let pending = if self.removals_finished.is_some() {
            0
        } else {
            self.pending_removals.runs.len() + self.pending_removals.datasets as usize
        };
        self.bad_files.len() + self.orphans.len() - self.orphans_moved as usize + pending
    }
}

/// Whether a file under the datastore root is bookkeeping rather than a
/// dataset: anything under [`QUARANTINE_DIR`], a writer's temporary file
/// (named [`TEMP_FILE_PREFIX`]`…`, removed by the writer or its rerun), and
/// the files of a journal directory (`<bundle>.journals/`: journals,
/// `execution.lock`, `holders/`, `manifests/`) should a bundle live there.
pub fn is_bookkeeping(rel_path: &str) -> bool {
    let mut parts = rel_path.split('/');
    if parts.next() == Some(QUARANTINE_DIR) {
        return true;
    }
    let name = rel_path.rsplit('/').next().unwrap_or(rel_path);
    name.starts_with(TEMP_FILE_PREFIX)
        || rel_path
            .split('/')
            .rev()
            .skip(1)
            .any(|dir| dir.ends_with(".journals"))
}

impl Butler {
    /// Checks that the registry and the datastore agree (see the module
    /// documentation); with `options.repair`, repairs what can be. A repair
    /// writes: the caller holds the writer lock and opened the butler for
    /// writing.
    pub fn check(&mut self, options: CheckOptions) -> Result<CheckReport, ButlerError> {
        let mut report = CheckReport {
            pending_removals: self.registry.pending_removals()?,
            ..CheckReport::default()
        };
        if options.repair && !report.pending_removals.is_empty() {
            report.removals_finished = Some(self.finish_removals()?);
        }
        let files = self.registry.registered_files()?;
        let to_verify: Vec<ExpectedFile<'_>> = files
            .iter()
            .filter(|f| !f.pending_removal)
            .map(|f| ExpectedFile {
                path: &f.path,
                size: f.size,
                checksum: &f.checksum,
            })
            .collect();
        report.files_checked = to_verify.len() as u64;
        report.bad_files = self.verify_files(&to_verify, options.fast);
        let mut known: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
        // The parts of disassembled composites belong to their index.
        let mut parts: Vec<String> = Vec::new();
        for f in files
            .iter()
            .filter(|f| quanta_datastore::disassembled::is_index(&f.path))
        {
            if let Ok(index) = self.datastore.parts_index(&f.path) {
                parts.extend(index.part_infos(&f.path).into_iter().map(|(_, i)| i.path));
            }
        }
        known.extend(parts.iter().map(String::as_str));
        report.orphans = self
            .datastore
            .list_files()?
            .into_iter()
            .filter(|rel| !known.contains(rel.as_str()) && !is_bookkeeping(rel))
            .collect();
        if options.repair {
            for orphan in &report.orphans {
                self.datastore.move_to_quarantine(orphan, ORPHANS_ASIDE)?;
                report.orphans_moved += 1;
            }
        }
        Ok(report)
    }

    fn verify_files(&self, files: &[ExpectedFile<'_>], fast: bool) -> Vec<FileProblem> {
        let problem = |path: &str, e: DatastoreError| FileProblem {
            path: path.to_string(),
            problem: match e {
                DatastoreError::Missing { .. } => "missing".to_string(),
                DatastoreError::SizeMismatch {
                    expected, actual, ..
                } => format!("{actual} bytes, registered {expected}"),
                DatastoreError::ChecksumMismatch {
                    expected, actual, ..
                } => format!("BLAKE3 {actual}, registered {expected}"),
                other => other.to_string(),
            },
        };
        if fast {
            return files
                .iter()
                .filter_map(|f| {
                    let e = match self.datastore.abs_path(f.path).map(std::fs::metadata) {
                        Err(e) => e,
                        Ok(Ok(m)) if m.is_file() && m.len() == f.size => return None,
                        Ok(Ok(m)) if m.is_file() => DatastoreError::SizeMismatch {
                            path: f.path.to_string(),
                            expected: f.size,
                            actual: m.len(),
                        },
                        Ok(_) => DatastoreError::Missing {
                            path: f.path.to_string(),
                        },
                    };
                    Some(problem(f.path, e))
                })
                .collect();
        }
        self.datastore
            .verify_many(files)
            .into_iter()
            .zip(files)
            .filter_map(|(result, f)| result.err().map(|e| problem(f.path, e)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookkeeping_is_quarantine_temporaries_and_journal_directories() {
        assert!(is_bookkeeping(".quarantine/abc/run/raw/x.json"));
        assert!(is_bookkeeping("run/raw/.tmp-0123456789abcdef-ingest"));
        assert!(is_bookkeeping("c.qb.journals/execution.lock"));
        assert!(is_bookkeeping("sub/c.qb.journals/holders/1"));
        assert!(!is_bookkeeping("run/raw/x.json"));
        assert!(!is_bookkeeping("run/manifests/x.json"));
        assert!(!is_bookkeeping("x.journals"));
    }
}
