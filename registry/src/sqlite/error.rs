//! SQLite's errors classified into [`DatabaseErrorKind`]s.

use crate::error::{DatabaseError, DatabaseErrorKind, RegistryError};

/// The kind of a SQLite error: "database is locked" (or busy) is
/// [`DatabaseErrorKind::Busy`]; the failures of the machine rather than of
/// the statement are [`DatabaseErrorKind::Unavailable`].
pub(crate) fn kind_of(e: &rusqlite::Error) -> DatabaseErrorKind {
    use rusqlite::ErrorCode as Code;
    match e.sqlite_error_code() {
        Some(Code::DatabaseBusy | Code::DatabaseLocked) => DatabaseErrorKind::Busy,
        Some(
            Code::DiskFull
            | Code::SystemIoFailure
            | Code::OutOfMemory
            | Code::DatabaseCorrupt
            | Code::CannotOpen
            | Code::ReadOnly
            | Code::OperationInterrupted,
        ) => DatabaseErrorKind::Unavailable,
        _ => DatabaseErrorKind::Other,
    }
}

impl From<rusqlite::Error> for DatabaseError {
    fn from(e: rusqlite::Error) -> Self {
        DatabaseError::new(kind_of(&e), e)
    }
}

impl From<rusqlite::Error> for RegistryError {
    fn from(e: rusqlite::Error) -> Self {
        DatabaseError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_error(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn locks_are_busy_machine_failures_unavailable_and_the_rest_the_inputs() {
        let busy = RegistryError::from(sqlite_error(rusqlite::ffi::SQLITE_BUSY));
        assert!(matches!(busy, RegistryError::Busy(_)), "{busy:?}");
        assert!(busy.is_work_failure());
        let full = RegistryError::from(sqlite_error(rusqlite::ffi::SQLITE_FULL));
        assert!(matches!(full, RegistryError::Sql(_)), "{full:?}");
        assert!(full.is_work_failure());
        let constraint = RegistryError::from(sqlite_error(rusqlite::ffi::SQLITE_CONSTRAINT));
        assert!(!constraint.is_work_failure());
    }
}
