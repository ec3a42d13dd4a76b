//! SQLite's errors classified into [`DatabaseErrorKind`]s.

use crate::error::{ConstraintViolation, DatabaseError, DatabaseErrorKind, RegistryError};

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

/// The integrity rule a SQLite error says was broken, by its extended code.
fn constraint_of(e: &rusqlite::Error) -> Option<ConstraintViolation> {
    use rusqlite::ffi;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                Some(ConstraintViolation::Unique)
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => Some(ConstraintViolation::ForeignKey),
            // RAISE in a trigger: the schema's one trigger,
            // `dataset_calibs_no_overlap`, is SQLite's form of the
            // exclusion constraint on calibration validity ranges.
            ffi::SQLITE_CONSTRAINT_TRIGGER => Some(ConstraintViolation::Exclusion),
            _ => None,
        },
        _ => None,
    }
}

impl From<rusqlite::Error> for DatabaseError {
    fn from(e: rusqlite::Error) -> Self {
        let constraint = constraint_of(&e);
        let error = DatabaseError::new(kind_of(&e), e);
        match constraint {
            Some(c) => error.violating(c),
            None => error,
        }
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

    #[test]
    fn broken_integrity_rules_are_classified_by_their_extended_codes() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys = ON; \
             CREATE TABLE p (id INTEGER PRIMARY KEY); \
             CREATE TABLE c (id INTEGER PRIMARY KEY, p INTEGER REFERENCES p (id), u TEXT UNIQUE); \
             CREATE TRIGGER no_x BEFORE INSERT ON c WHEN NEW.u = 'x' \
               BEGIN SELECT RAISE(ABORT, 'x is refused'); END; \
             INSERT INTO p VALUES (1); INSERT INTO c VALUES (1, 1, 'a');",
        )
        .unwrap();
        let broken =
            |sql: &str| RegistryError::from(conn.execute(sql, []).unwrap_err()).constraint();
        assert_eq!(
            broken("INSERT INTO c VALUES (1, 1, 'b')"),
            Some(ConstraintViolation::Unique)
        );
        assert_eq!(
            broken("INSERT INTO c VALUES (2, 1, 'a')"),
            Some(ConstraintViolation::Unique)
        );
        assert_eq!(
            broken("INSERT INTO c VALUES (3, 9, 'c')"),
            Some(ConstraintViolation::ForeignKey)
        );
        assert_eq!(
            broken("INSERT INTO c VALUES (4, 1, 'x')"),
            Some(ConstraintViolation::Exclusion)
        );
        assert_eq!(broken("INSERT INTO nowhere VALUES (1)"), None);
    }
}
