//! The error of every batch engine.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BatchError {
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("bundle {path}: {detail}")]
    Bundle { path: PathBuf, detail: String },
    #[error("journals of {path}: {detail}")]
    Journal { path: PathBuf, detail: String },
    #[error("{path}: not a valid submission state: {detail}")]
    BadState { path: PathBuf, detail: String },
    #[error(
        "no Slurm submission for {bundle}: {state} does not exist (run `quanta submit` first)"
    )]
    NotSubmitted { bundle: PathBuf, state: PathBuf },
    #[error("running `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` printed {output:?}, not a job id")]
    BadJobId { command: String, output: String },
    #[error("task `{task}`: batch.{key}: {detail}")]
    BadResource {
        task: String,
        key: &'static str,
        detail: String,
    },
    #[error("{0}")]
    Invalid(String),
    /// An operation the engine cannot do here (HTCondor's status, cancel
    /// and restart without an HTCondor pool).
    #[error("`{operation}` is not supported by the {engine} engine without {needs}")]
    Unsupported {
        engine: &'static str,
        operation: &'static str,
        needs: &'static str,
    },
    #[error("the clusters of the bundle depend on each other in a cycle (through cluster `{0}`)")]
    ClusterCycle(String),
    #[error("array map {path}: no element {index} (the map has {len})")]
    NoSuchElement {
        path: PathBuf,
        index: usize,
        len: usize,
    },
}

pub(crate) type Result<T, E = BatchError> = std::result::Result<T, E>;

pub(crate) fn io(
    path: &std::path::Path,
    what: &'static str,
) -> impl FnOnce(std::io::Error) -> BatchError {
    let path = path.to_path_buf();
    move |source| BatchError::Io { path, what, source }
}
