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
}
