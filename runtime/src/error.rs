//! Errors that stop an execution before or while it runs (bad input, an
//! unwritable journal). A quantum that fails is not an error here: it is a
//! result, recorded in the journal and the summary.

use std::path::PathBuf;

use quanta_core::{BundleError, JournalError};
use quanta_limited_registry::LimitedRegistryError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Registry(#[from] LimitedRegistryError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("task `{label}`: unknown task class `{class}` (registered: {known})")]
    UnknownTaskClass {
        label: String,
        class: String,
        known: String,
    },
    #[error("task `{label}`: {detail}")]
    TaskConfig { label: String, detail: String },
    #[error("task `{label}`: the command is empty")]
    EmptyCommand { label: String },
    #[error("no cluster `{name}` in the bundle (it has: {known})")]
    UnknownCluster { name: String, known: String },
    #[error("{wanted} of this bundle are being executed by another process (journals in {}): {}; wait for it to end or stop it", dir.display(), if holders.is_empty() { "its holder file is missing" } else { holders.as_str() })]
    Busy {
        dir: PathBuf,
        wanted: String,
        holders: String,
    },
    #[error("execution lock {}: {detail}", path.display())]
    Lock { path: PathBuf, detail: String },
    #[error("Python tasks: {detail} (the interpreter is `{program}`: set QUANTA_PYTHON to choose another; it needs the `quanta` package, `pip install ./python`, and the tasks' modules on its path, PYTHONPATH)")]
    Python { program: String, detail: String },
    #[error("invalid quantum list `{text}`: {detail}")]
    BadQuantumList { text: String, detail: String },
}
