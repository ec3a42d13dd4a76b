//! Errors of the limited registry. Each names the quantum, connection or
//! file concerned.

use std::path::PathBuf;

use quanta_core::{BundleError, JournalError};
use quanta_datastore::DatastoreError;
use thiserror::Error;
use uuid::Uuid;

#[derive(Debug, Error)]
pub enum LimitedRegistryError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("bundle {bundle}: its datastore configuration is invalid: {detail}")]
    DatastoreConfig { bundle: PathBuf, detail: String },
    #[error(
        "quantum {quantum} ({task}): no {kind} connection `{connection}` (the task has: {known})"
    )]
    UnknownConnection {
        quantum: u32,
        task: String,
        kind: &'static str,
        connection: String,
        known: String,
    },
    #[error("quantum {quantum} ({task}): connection `{connection}` has {n} datasets; use the multi-dataset call")]
    NotSingle {
        quantum: u32,
        task: String,
        connection: String,
        n: usize,
    },
    #[error("quantum {quantum} ({task}): `{connection}` has no predicted output for data ID {data_id}; the bundle predicted: {predicted}")]
    UnpredictedOutput {
        quantum: u32,
        task: String,
        connection: String,
        data_id: String,
        predicted: String,
    },
    #[error("quantum {quantum} ({task}): output {dataset} (`{path}`) was already written by this attempt")]
    WrittenTwice {
        quantum: u32,
        task: String,
        dataset: Uuid,
        path: String,
    },
    #[error("quantum {quantum} ({task}): input {dataset_type} {data_id} is missing: `{path}` does not exist in the datastore")]
    MissingInput {
        quantum: u32,
        task: String,
        dataset_type: String,
        data_id: String,
        path: String,
    },
    #[error("quantum {quantum} ({task}): refusing to overwrite `{path}`, which this worker did not write (the bundle was not made with --clobber)")]
    WouldOverwrite {
        quantum: u32,
        task: String,
        path: String,
    },
    #[error("quantum {quantum} ({task}): `{path}` is already there, written by no attempt the journals record, and could not be moved aside: {detail}")]
    MoveAside {
        quantum: u32,
        task: String,
        path: String,
        detail: String,
    },
    #[error("quantum {quantum} ({task}): the attempt was cancelled (timed out); output `{path}` not written")]
    Cancelled {
        quantum: u32,
        task: String,
        path: String,
    },
    #[error("quantum {quantum} ({task}): {source}")]
    Datastore {
        quantum: u32,
        task: String,
        #[source]
        source: Box<DatastoreError>,
    },
    #[error("quantum {quantum} ({task}): output `{connection}` from {}: {detail}", file.display())]
    AdoptFile {
        quantum: u32,
        task: String,
        connection: String,
        file: PathBuf,
        detail: String,
    },
    #[error("quantum {quantum} ({task}), input `{connection}`: {detail}")]
    BadRead {
        quantum: u32,
        task: String,
        connection: String,
        detail: String,
    },
    /// A full repository's butler failed (registry or datastore); see
    /// `quanta_butler::Butler`'s [`crate::LimitedButler`] implementation.
    #[error("{dataset}: {source}")]
    Repository {
        dataset: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("journal in {}: {detail}", dir.display())]
    JournalCreate { dir: PathBuf, detail: String },
}
