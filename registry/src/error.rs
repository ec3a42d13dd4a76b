use thiserror::Error;

/// Errors of the SQL Registry. Messages name the record, dataset or
/// collection concerned so that a user can find the bad input.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("{path}: not a quanta registry: {reason}")]
    NotARegistry { path: String, reason: String },
    #[error(
        "{path}: registry schema version {found}, but this quanta reads version {expected}; \
         migrate the repo or use a matching quanta"
    )]
    SchemaVersion {
        path: String,
        found: String,
        expected: u32,
    },
    #[error("{0}")]
    Core(#[from] quanta_core::CoreError),
    #[error("{0}")]
    Expr(#[from] crate::expr::ExprError),
    #[error("dimension records: {0}")]
    Records(String),
    #[error("dataset type `{name}` is already registered as {existing}, not {requested}")]
    DatasetTypeConflict {
        name: String,
        existing: String,
        requested: String,
    },
    #[error("unknown dataset type `{0}`")]
    UnknownDatasetType(String),
    #[error("unknown collection `{0}`")]
    UnknownCollection(String),
    #[error("collection `{name}` is a {actual} collection; {wanted} is needed here")]
    WrongCollectionType {
        name: String,
        actual: String,
        wanted: String,
    },
    #[error("collection `{0}` already exists with another type")]
    CollectionConflict(String),
    #[error("chaining `{parent}` to `{child}` would make a cycle")]
    ChainCycle { parent: String, child: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("sql: {0}")]
    Sql(#[from] rusqlite::Error),
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
