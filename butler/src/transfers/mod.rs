//! Export and import of datasets with their metadata in the LSST export
//! format (`export.yaml`, see [`format`]), so that `butler import` reads
//! what quanta writes and quanta imports what `butler export` writes.
//!
//! An export directory holds `export.yaml`, the files at their datastore
//! paths (unless `--transfer none`, when the paths are relative to the
//! source datastore and the export is not self-contained), and
//! `quanta-extras.json` (sizes and checksums, record fields LSST has no
//! room for), which LSST never reads. The storage-class and formatter
//! mapping is in [`mapping`].

mod disassembled;
pub mod export;
mod fast_yaml;
pub mod format;
pub mod import;
pub mod mapping;
mod provenance;
pub mod retrieve;
pub mod transfer;

use std::path::PathBuf;

use thiserror::Error;

pub use export::{ExportOptions, ExportSummary, ExportTransfer, InMemoryExport};
pub use import::{ImportOptions, ImportSummary};
pub use retrieve::{RetrieveSummary, RetrievedFile};
pub use transfer::TransferSummary;

/// An export or import that could not be done.
#[derive(Debug, Error)]
pub enum TransferError {
    /// The export file is not what the format allows.
    #[error("{file}{}: {reason}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Format {
        file: String,
        line: Option<usize>,
        reason: String,
    },
    /// Something the repo cannot hold or quanta cannot map (an unknown
    /// dimension element, a storage class or formatter without mapping).
    #[error("{0}")]
    Unmappable(String),
    /// A source file that is missing, unreadable or not what the export
    /// says it is: a failure of the work (exit 1).
    #[error("`{}`: {reason}; nothing was imported", path.display())]
    BadFile { path: PathBuf, reason: String },
    /// A source file the import must not read (inside the destination
    /// repository): bad input (exit 2).
    #[error("`{}`: {reason}; nothing was imported", path.display())]
    Refused { path: PathBuf, reason: String },
    /// A destination file that is not the one to be written there.
    #[error("`{}` exists and differs: {reason}; nothing was copied", path.display())]
    Exists { path: PathBuf, reason: String },
    #[error(transparent)]
    Butler(#[from] crate::ButlerError),
    #[error(transparent)]
    Registry(#[from] quanta_registry::RegistryError),
    #[error(transparent)]
    Datastore(#[from] quanta_datastore::DatastoreError),
    #[error("could not {action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Logs how long a phase of an export, import or transfer took (debug
/// level, target `quanta::timing`: `RUST_LOG=quanta::timing=debug`), and
/// restarts the clock.
pub(crate) fn phase(name: &str, clock: &mut std::time::Instant) {
    tracing::debug!(target: "quanta::timing", "{name}: {:.3} s", clock.elapsed().as_secs_f64());
    *clock = std::time::Instant::now();
}

impl TransferError {
    /// Whether this is a failure of the work (`Some(true)`: a source file
    /// missing or not matching the export) or bad input (`Some(false)`: a
    /// malformed export, something without a mapping, a refused path or
    /// destination); `None` for wrapped errors, which say it themselves.
    pub fn is_work_failure(&self) -> Option<bool> {
        match self {
            TransferError::BadFile { .. } => Some(true),
            TransferError::Format { .. }
            | TransferError::Unmappable(_)
            | TransferError::Refused { .. }
            | TransferError::Exists { .. } => Some(false),
            TransferError::Butler(_)
            | TransferError::Registry(_)
            | TransferError::Datastore(_)
            | TransferError::Io { .. } => None,
        }
    }

    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        TransferError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
