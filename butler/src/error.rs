use std::path::PathBuf;

use quanta_core::DataId;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ButlerError {
    #[error(transparent)]
    Registry(#[from] quanta_registry::RegistryError),
    #[error(transparent)]
    Datastore(#[from] quanta_datastore::DatastoreError),
    #[error(transparent)]
    Core(#[from] quanta_core::CoreError),
    #[error("{repo}: {reason}")]
    Repo { repo: String, reason: String },
    #[error("no {dataset_type} dataset with data ID {data_id} in collections {collections:?}")]
    NotFound {
        dataset_type: String,
        data_id: DataId,
        collections: Vec<String>,
    },
    #[error("{0}")]
    Invalid(String),
    /// An ingest source that is one of the repository's own files.
    #[error("refusing to ingest `{}`: {reason}; nothing was ingested", source_path.display())]
    SourceInRepository {
        source_path: PathBuf,
        reason: String,
    },
    /// An output path that is one of the repository's own files.
    #[error("refusing to write `{}`: {reason}", output.display())]
    OutputInRepository { output: PathBuf, reason: String },
    #[error(
        "{} and {} both hold {dataset_type} {data_id}; nothing was ingested",
        first.display(),
        second.display()
    )]
    DuplicateIngestItem {
        dataset_type: String,
        data_id: DataId,
        first: PathBuf,
        second: PathBuf,
    },
    /// The data ID is registered in the RUN with another file.
    #[error(
        "cannot ingest `{}`: {dataset} is already registered with file `{stored}`, and {reason}; \
         nothing was ingested",
        source_path.display()
    )]
    IngestConflict {
        source_path: PathBuf,
        dataset: String,
        stored: String,
        reason: String,
    },
    #[error("could not {action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
