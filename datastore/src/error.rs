//! Errors of the datastore. Every variant names the file (relative to the
//! datastore root, or absolute where the file is outside it) and, where one is
//! involved, the dataset.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// What went wrong inside a [`crate::Formatter`]; the datastore wraps it in a
/// [`DatastoreError`] that adds the file and dataset.
#[derive(Debug, Error)]
pub enum FormatterError {
    /// The in-memory dataset is not of the kind this formatter handles.
    #[error("expected a {expected} dataset, got {got}")]
    WrongType {
        expected: &'static str,
        got: &'static str,
    },
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// A component or read parameter the formatter cannot serve, or a
    /// parameter value it cannot parse.
    #[error("read parameter: {0}")]
    BadParameter(String),
    /// For formatters defined in other crates (FITS, Parquet, …).
    #[error("{0}")]
    Other(String),
}

/// Errors of the datastore.
#[derive(Debug, Error)]
pub enum DatastoreError {
    #[error("invalid file template `{template}`: {reason}")]
    BadTemplate { template: String, reason: String },

    #[error("cannot build a file path for dataset {dataset} with template `{template}`: {reason}")]
    Render {
        dataset: String,
        template: String,
        reason: String,
    },

    #[error("unsafe datastore path `{path}`: {reason}")]
    UnsafePath { path: String, reason: String },

    #[error("no formatter is registered for storage class `{storage_class}`")]
    NoFormatterForStorageClass { storage_class: String },

    #[error("unknown formatter `{formatter}` (recorded for `{path}`)")]
    UnknownFormatter { formatter: String, path: String },

    #[error("cannot register formatter `{formatter}`: {reason}")]
    BadFormatter { formatter: String, reason: String },

    #[error("datastore file `{path}` already exists ({what})")]
    AlreadyExists { path: String, what: String },

    #[error("datastore file `{path}` is missing")]
    Missing { path: String },

    #[error("datastore file `{path}` has {actual} bytes, expected {expected}")]
    SizeMismatch {
        path: String,
        expected: u64,
        actual: u64,
    },

    #[error("datastore file `{path}` has BLAKE3 checksum {actual}, expected {expected}")]
    ChecksumMismatch {
        path: String,
        expected: String,
        actual: String,
    },

    #[error("cannot encode {what} with formatter `{formatter}` into `{path}`: {source}")]
    Encode {
        what: String,
        formatter: String,
        path: String,
        #[source]
        source: FormatterError,
    },

    #[error("cannot decode `{path}` with formatter `{formatter}`: {source}")]
    Decode {
        formatter: String,
        path: String,
        #[source]
        source: FormatterError,
    },

    #[error("cannot ingest `{}` as {dataset}: {reason}", source_path.display())]
    BadIngestSource {
        source_path: PathBuf,
        dataset: String,
        reason: String,
    },

    #[error(
        "{what}: transfer mode `direct` records a whole file where it is; it cannot place a \
         file in the datastore (as a disassembled composite's part needs)"
    )]
    DirectNotHere { what: String },

    #[error(
        "unknown transfer mode `{0}`: expected copy, move, link, hardlink, symlink, auto or direct"
    )]
    BadTransferMode(String),

    #[error("could not {action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl DatastoreError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        DatastoreError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
