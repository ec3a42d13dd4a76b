use thiserror::Error;

/// Errors of the SQL Registry. Messages name the record, dataset or
/// collection concerned so that a user can find the bad input.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("{path}: not a quanta registry: {reason}")]
    NotARegistry { path: String, reason: String },
    #[error(
        "{path}: registry schema version {found}, but this quanta reads version {expected}; \
         upgrade it with `quanta repo migrate` or use a matching quanta"
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
    Busy(DatabaseError),
    /// A query ran longer than its time limit and was interrupted.
    #[error(
        "the query was interrupted after its time limit of {seconds} s (raise it with --timeout)"
    )]
    TimedOut { seconds: f64 },
    #[error("sql: {0}")]
    Sql(DatabaseError),
}

/// What went wrong in the database, as far as a caller needs to know to
/// decide what to do: every backend classifies its own errors into these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseErrorKind {
    /// Another connection holds a lock the statement needs.
    Busy,
    /// The database cannot do the work now: a full disk, an I/O error, no
    /// memory, a damaged or unreachable database, a read-only file, an
    /// interrupted statement. Retrying later, elsewhere or after repair may
    /// succeed; the input was not at fault.
    Unavailable,
    /// Anything else: a constraint the input broke, SQL the database
    /// refused, a value of the wrong type.
    Other,
}

/// Which integrity rule of the schema a statement broke: the registry
/// explains each in the words of what was being written (a dataset that
/// already exists, a dimension record that does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintViolation {
    /// A primary key or unique constraint: the row is already there.
    Unique,
    /// A foreign key: the row it refers to is not there.
    ForeignKey,
    /// Calibration validity ranges of one dataset type and data ID in one
    /// collection overlap (an exclusion constraint; a trigger in SQLite).
    Exclusion,
}

/// An error of the database backend, with the backend's own message (which
/// names the statement's problem, e.g. `UNIQUE constraint failed: ...`).
#[derive(Debug, Error)]
#[error("{source}")]
pub struct DatabaseError {
    pub kind: DatabaseErrorKind,
    /// The integrity rule broken, when that is what failed.
    pub constraint: Option<ConstraintViolation>,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl DatabaseError {
    pub fn new(
        kind: DatabaseErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            constraint: None,
            source: source.into(),
        }
    }

    /// The same error, known to have broken `constraint`.
    pub fn violating(mut self, constraint: ConstraintViolation) -> Self {
        self.constraint = Some(constraint);
        self
    }
}

impl From<DatabaseError> for RegistryError {
    /// A busy database becomes [`RegistryError::Busy`], so callers can tell
    /// it from bad input.
    fn from(e: DatabaseError) -> Self {
        match e.kind {
            DatabaseErrorKind::Busy => Self::Busy(e),
            DatabaseErrorKind::Unavailable | DatabaseErrorKind::Other => Self::Sql(e),
        }
    }
}

impl RegistryError {
    /// The integrity rule of the schema a statement broke, if that is what
    /// this error is.
    pub fn constraint(&self) -> Option<ConstraintViolation> {
        match self {
            Self::Sql(e) => e.constraint,
            _ => None,
        }
    }

    /// Whether this is a failure of the work (a busy or locked database, a
    /// full disk, an I/O error, a time limit) rather than of the input.
    pub fn is_work_failure(&self) -> bool {
        match self {
            Self::Busy(_) | Self::TimedOut { .. } => true,
            Self::Sql(e) => e.kind != DatabaseErrorKind::Other,
            _ => false,
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
