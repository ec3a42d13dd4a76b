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
    /// Another connection held the database longer than the busy timeout:
    /// a failure of the work (retry), not of the input.
    #[error(
        "the registry is busy: another process kept it locked for too long ({0}); retry when it has finished"
    )]
    Busy(rusqlite::Error),
    /// A query ran longer than its time limit and was interrupted.
    #[error(
        "the query was interrupted after its time limit of {seconds} s (raise it with --timeout)"
    )]
    TimedOut { seconds: f64 },
    #[error("sql: {0}")]
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for RegistryError {
    /// SQLite's "database is locked" (or busy) becomes [`RegistryError::Busy`],
    /// so callers can tell it from bad input.
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                Self::Busy(e)
            }
            _ => Self::Sql(e),
        }
    }
}

impl RegistryError {
    /// Whether this is a failure of the work (a busy or locked database, a
    /// full disk, an I/O error, a time limit) rather than of the input.
    pub fn is_work_failure(&self) -> bool {
        match self {
            Self::Busy(_) | Self::TimedOut { .. } => true,
            Self::Sql(e) => matches!(
                e.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::SystemIoFailure
                        | rusqlite::ErrorCode::OutOfMemory
                        | rusqlite::ErrorCode::DatabaseCorrupt
                        | rusqlite::ErrorCode::CannotOpen
                        | rusqlite::ErrorCode::ReadOnly
                        | rusqlite::ErrorCode::OperationInterrupted
                )
            ),
            _ => false,
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
