//! A prepared write statement whose text and blob parameters are bound
//! without copying.
//!
//! Why: rusqlite binds every text and blob as `SQLITE_TRANSIENT`, so SQLite
//! allocates and copies each value before the statement runs. On the
//! merge's hot path (a million datasets, about twenty parameters each) that
//! copying was about a tenth of the registry writer thread (perf). Here
//! values are bound as `SQLITE_STATIC`, which is sound because they are
//! borrowed for the whole of [`StaticStatement::execute`], and the bindings
//! are cleared before it returns: SQLite never holds a pointer past the
//! borrow.
//!
//! Only for statements that return no rows (inserts, upserts); reads use
//! rusqlite.

use std::ffi::{c_int, CStr, CString};
use std::ptr::NonNull;

use rusqlite::ffi;
use rusqlite::types::ValueRef;
use rusqlite::Connection;

/// One compiled statement on `conn`; finalized on drop.
pub(crate) struct StaticStatement<'c> {
    conn: &'c Connection,
    stmt: NonNull<ffi::sqlite3_stmt>,
    parameters: usize,
}

/// Binds the parameters of one execution; every value must live for `'v`,
/// which outlives the execution.
pub(crate) struct Binder<'s, 'v> {
    statement: &'s StaticStatement<'s>,
    values: std::marker::PhantomData<&'v ()>,
}

/// Bound in place of an empty text or blob: SQLite reads no byte of it,
/// but must not be given a dangling pointer.
static EMPTY: [u8; 1] = [0];

/// `bytes` as a pointer SQLite may hold: an empty slice's own pointer is
/// dangling.
fn readable<T>(bytes: &[u8]) -> *const T {
    if bytes.is_empty() {
        EMPTY.as_ptr().cast()
    } else {
        bytes.as_ptr().cast()
    }
}

impl<'c> StaticStatement<'c> {
    pub(crate) fn prepare(conn: &'c Connection, sql: &str) -> rusqlite::Result<Self> {
        let text = CString::new(sql).map_err(|_| rusqlite::Error::InvalidQuery)?;
        let mut stmt = std::ptr::null_mut();
        // SAFETY: the handle is the live connection's; `text` is
        // NUL-terminated (length -1) and outlives the call.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(
                conn.handle(),
                text.as_ptr(),
                -1,
                &mut stmt,
                std::ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(last_error(conn, rc));
        }
        let stmt = NonNull::new(stmt).ok_or(rusqlite::Error::InvalidQuery)?;
        // SAFETY: `stmt` was just prepared.
        let parameters = unsafe { ffi::sqlite3_bind_parameter_count(stmt.as_ptr()) };
        Ok(Self {
            conn,
            stmt,
            parameters: usize::try_from(parameters).unwrap_or(0),
        })
    }

    /// Binds parameters with `bind`, runs the statement to completion and
    /// returns the number of rows it changed.
    pub(crate) fn execute<'v, E: From<rusqlite::Error>>(
        &mut self,
        bind: impl FnOnce(&mut Binder<'_, 'v>) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut binder = Binder {
            statement: self,
            values: std::marker::PhantomData,
        };
        let bound = bind(&mut binder);
        let result = match bound {
            Ok(()) => self.step().map_err(E::from),
            Err(e) => Err(e),
        };
        // SAFETY: the statement is valid; resetting and clearing the
        // bindings drops every pointer to the borrowed values.
        unsafe {
            ffi::sqlite3_reset(self.stmt.as_ptr());
            ffi::sqlite3_clear_bindings(self.stmt.as_ptr());
        }
        result
    }

    fn step(&self) -> rusqlite::Result<usize> {
        // SAFETY: the statement is valid and its connection alive.
        let rc = unsafe { ffi::sqlite3_step(self.stmt.as_ptr()) };
        match rc {
            ffi::SQLITE_DONE => {
                // SAFETY: as above.
                let changed = unsafe { ffi::sqlite3_changes64(self.conn.handle()) };
                Ok(usize::try_from(changed).unwrap_or(0))
            }
            ffi::SQLITE_ROW => Err(rusqlite::Error::ExecuteReturnedResults),
            _ => Err(last_error(self.conn, rc)),
        }
    }
}

impl Drop for StaticStatement<'_> {
    fn drop(&mut self) {
        // SAFETY: finalized exactly once, here.
        unsafe {
            ffi::sqlite3_finalize(self.stmt.as_ptr());
        }
    }
}

impl<'v> Binder<'_, 'v> {
    /// Binds parameter `index` (1-based) to `value`.
    pub(crate) fn bind(&mut self, index: usize, value: ValueRef<'v>) -> rusqlite::Result<()> {
        if index == 0 || index > self.statement.parameters {
            return Err(rusqlite::Error::InvalidParameterCount(
                index,
                self.statement.parameters,
            ));
        }
        let stmt = self.statement.stmt.as_ptr();
        let at = index as c_int;
        let too_big = |len: usize| {
            c_int::try_from(len).map_err(|_| {
                rusqlite::Error::SqliteFailure(
                    ffi::Error::new(ffi::SQLITE_TOOBIG),
                    Some(format!("a value of {len} bytes is too big to bind")),
                )
            })
        };
        // SAFETY: `stmt` is valid; text and blob pointers are valid for
        // their lengths and borrowed for `'v`, which outlives the execution
        // the bindings are cleared after.
        let rc = unsafe {
            match value {
                ValueRef::Null => ffi::sqlite3_bind_null(stmt, at),
                ValueRef::Integer(i) => ffi::sqlite3_bind_int64(stmt, at, i),
                ValueRef::Real(r) => ffi::sqlite3_bind_double(stmt, at, r),
                ValueRef::Text(t) => {
                    let len = too_big(t.len())?;
                    ffi::sqlite3_bind_text(stmt, at, readable(t), len, ffi::SQLITE_STATIC())
                }
                ValueRef::Blob(b) => {
                    let len = too_big(b.len())?;
                    ffi::sqlite3_bind_blob(stmt, at, readable(b), len, ffi::SQLITE_STATIC())
                }
            }
        };
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(last_error(self.statement.conn, rc))
        }
    }
}

fn last_error(conn: &Connection, rc: c_int) -> rusqlite::Error {
    // SAFETY: the handle is the live connection's; the message is copied
    // before any other call on it.
    let message = unsafe {
        let db = conn.handle();
        let text = if ffi::sqlite3_errcode(db) == rc {
            ffi::sqlite3_errmsg(db)
        } else {
            ffi::sqlite3_errstr(rc)
        };
        (!text.is_null()).then(|| CStr::from_ptr(text).to_string_lossy().into_owned())
    };
    rusqlite::Error::SqliteFailure(ffi::Error::new(rc), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a TEXT, b BLOB, c INTEGER, d REAL, e TEXT UNIQUE)")
            .unwrap();
        conn
    }

    #[test]
    fn binds_borrowed_values_and_clears_them() {
        let conn = table();
        let mut insert =
            StaticStatement::prepare(&conn, "INSERT OR IGNORE INTO t VALUES (?, ?, ?, ?, ?)")
                .unwrap();
        for (i, name) in ["x", "", "ü"].iter().enumerate() {
            let text = format!("{name}{i}");
            let blob = vec![i as u8; i];
            let changed = insert
                .execute(|b| -> rusqlite::Result<()> {
                    b.bind(1, ValueRef::Text(text.as_bytes()))?;
                    b.bind(2, ValueRef::Blob(&blob))?;
                    b.bind(3, ValueRef::Integer(i as i64))?;
                    b.bind(4, ValueRef::Real(0.5))?;
                    b.bind(5, ValueRef::from(Some(*name)))
                })
                .unwrap();
            assert_eq!(changed, 1);
        }
        // A skipped row changes nothing; a parameter left unbound is NULL,
        // not the previous execution's value.
        let changed = insert.execute(|b| b.bind(5, ValueRef::Text(b"x"))).unwrap();
        assert_eq!(changed, 0);
        let changed = insert.execute(|_| Ok::<_, rusqlite::Error>(())).unwrap();
        assert_eq!(changed, 1);
        drop(insert);
        type Row = (Option<String>, Option<Vec<u8>>, Option<i64>);
        let rows: Vec<Row> = conn
            .prepare("SELECT a, b, c FROM t ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (Some("x0".into()), Some(vec![]), Some(0)),
                (Some("1".into()), Some(vec![1]), Some(1)),
                (Some("ü2".into()), Some(vec![2, 2]), Some(2)),
                (None, None, None),
            ]
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let conn = table();
        let err = StaticStatement::prepare(&conn, "INSERT INTO nowhere VALUES (?)")
            .err()
            .unwrap();
        assert!(err.to_string().contains("no such table: nowhere"), "{err}");
        let mut insert = StaticStatement::prepare(&conn, "INSERT INTO t (e) VALUES (?)").unwrap();
        let err = insert.execute(|b| b.bind(2, ValueRef::Null)).unwrap_err();
        assert!(
            matches!(err, rusqlite::Error::InvalidParameterCount(2, 1)),
            "{err}"
        );
        insert.execute(|b| b.bind(1, ValueRef::Text(b"k"))).unwrap();
        let err = insert
            .execute(|b| b.bind(1, ValueRef::Text(b"k")))
            .unwrap_err();
        assert!(
            err.to_string().contains("UNIQUE constraint failed: t.e"),
            "{err}"
        );
    }
}
