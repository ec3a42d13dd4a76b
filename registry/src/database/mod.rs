//! The registry's one interface to its database, as daf_butler's
//! `Database` is to its `sqlite.py` and `postgresql.py`: prepare and run a
//! statement, read its rows, open a write transaction, and learn the key
//! an insert was assigned ([`Database::prepare_keyed_insert`]). The
//! registry's modules call [`Database`]; which backend does the work is
//! decided here, one `match` per operation, and each backend's half lives
//! in its own module.
//!
//! Values cross the interface as [`ValueRef`]s, the five storage classes
//! every backend has: a statement's parameters are [`Param`]s (anything
//! that can be seen as one), a row's columns are read as [`Column`]s
//! (anything that can be made from one). Statements are written with
//! numbered placeholders, `?1`, `?2`, … (the backends that number them
//! otherwise translate), in SQL common to the backends or chosen through
//! [`Dialect`].
//!
//! Two backends: SQLite (`crate::sqlite::database`) and PostgreSQL
//! (`crate::postgres::database`), one suite of tests for both
//! (`database/tests.rs`, on a real server when `QUANTA_POSTGRES_URL` is
//! set). Every registry module runs on this interface, merge's writer
//! included (its many-row inserts through [`BulkInsert`]); only what only
//! SQLite has (bulk-writing checkpoints, synchronous levels) reaches the
//! SQLite connection through [`Database::sqlite`].

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;

pub(crate) mod bulk;
mod foreign_keys;
pub(crate) use bulk::BulkInsert;

use crate::dialect::Dialect;
use crate::error::{DatabaseError, DatabaseErrorKind, RegistryError, Result};
use crate::value::SqlValue;

/// One value as a backend binds or returns it, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ValueRef<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl ValueRef<'_> {
    /// The value as JSON, for people reading rows: a 16-byte blob is a UUID
    /// (the registry's dataset IDs), any other blob its hex digits.
    pub(crate) fn to_json(self) -> serde_json::Value {
        match self {
            Self::Null => serde_json::Value::Null,
            Self::Integer(i) => i.into(),
            Self::Real(f) => serde_json::Number::from_f64(f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Self::Text(t) => t.into(),
            Self::Blob(b) => match uuid::Uuid::from_slice(b) {
                Ok(id) => id.to_string().into(),
                Err(_) => b
                    .iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<String>()
                    .into(),
            },
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Null => "NULL",
            Self::Integer(_) => "an integer",
            Self::Real(_) => "a real number",
            Self::Text(_) => "text",
            Self::Blob(_) => "a blob",
        }
    }
}

/// A statement parameter.
pub(crate) trait Param {
    fn value(&self) -> ValueRef<'_>;
}

/// A value read from a column: `None` when the column's value is not one.
pub(crate) trait Column: Sized {
    /// What the column was expected to hold, for the error.
    const EXPECTED: &'static str;
    fn from_value(v: ValueRef<'_>) -> Option<Self>;
}

/// A statement's parameters, in placeholder order.
pub(crate) type Params<'p> = [&'p dyn Param];

/// One row of a result, read column by column (0-based).
pub(crate) struct Row<'r> {
    inner: RowImpl<'r>,
}

pub(crate) enum RowImpl<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

impl<'r> Row<'r> {
    pub(crate) fn new(inner: RowImpl<'r>) -> Self {
        Self { inner }
    }

    /// The value of column `index`, borrowed from the row.
    pub(crate) fn value(&self, index: usize) -> Result<ValueRef<'_>> {
        match &self.inner {
            RowImpl::Sqlite(row) => crate::sqlite::database::column(row, index),
            RowImpl::Postgres(row) => crate::postgres::database::column(row, index),
        }
    }

    /// The column `index` as a `T`; an error names the column and what it
    /// held when that is not a `T`.
    pub(crate) fn get<T: Column>(&self, index: usize) -> Result<T> {
        let value = self.value(index)?;
        T::from_value(value).ok_or_else(|| {
            DatabaseError::new(
                DatabaseErrorKind::Other,
                format!(
                    "column {index} holds {}, where {} was expected",
                    value.kind(),
                    T::EXPECTED
                ),
            )
            .into()
        })
    }

    /// The text of column `index`, borrowed from the row (`None`: NULL).
    pub(crate) fn get_str(&self, index: usize) -> Result<Option<&str>> {
        match self.value(index)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(t) => Ok(Some(t)),
            other => Err(DatabaseError::new(
                DatabaseErrorKind::Other,
                format!(
                    "column {index} holds {}, where text was expected",
                    other.kind()
                ),
            )
            .into()),
        }
    }
}

/// Prepared statements a PostgreSQL connection keeps (SQLite's own cache
/// is set to 64 when the connection is tuned).
const STATEMENT_CACHE: usize = 256;

/// A connection to the registry's database.
pub(crate) struct Database {
    backend: Backend,
    /// SQLite: the tables the open transaction checks set-wise at commit,
    /// while per-row foreign-key enforcement is off
    /// ([`Database::begin_set_wise`]).
    set_wise: RefCell<Option<Vec<foreign_keys::TableMark>>>,
    /// PostgreSQL: the advisory key every write transaction holds shared,
    /// once the session writes a registry's namespace
    /// ([`Database::hold_in_transactions`]).
    transactions_key: Cell<Option<i64>>,
}

enum Backend {
    Sqlite(rusqlite::Connection),
    /// The driver's client takes `&mut self` for every call; a statement
    /// borrows it only while it runs (rows are handed on after), so a
    /// registry method may query again from inside a row's callback.
    Postgres {
        client: RefCell<postgres::Client>,
        /// Prepared statements by the interface's SQL text.
        statements: RefCell<HashMap<String, postgres::Statement>>,
        /// Whether a transaction is open (the synchronous driver does not
        /// tell): set by [`Database::begin`], cleared by commit and
        /// rollback.
        in_transaction: Cell<bool>,
        /// Savepoints the bulk inserts took in the open transaction
        /// (`bulk.rs`): reset by [`Database::begin`].
        bulk_savepoints: Cell<u32>,
        /// Rows the bulk inserts added, per table, since
        /// [`Database::take_bulk_rows`].
        bulk_rows: RefCell<BTreeMap<String, u64>>,
    },
}

/// PostgreSQL's `BEGIN` of a write transaction, holding the session's
/// transactions key shared if it has one ([`Database::hold_in_transactions`]).
fn begin_statement(transactions_key: Option<i64>) -> String {
    match transactions_key {
        Some(key) => format!("BEGIN; {}", hold_shared_statement(key)),
        None => "BEGIN".to_string(),
    }
}

/// The statement by which a PostgreSQL write transaction holds the
/// session's transactions key shared until it ends (`key` is a number we
/// compute, not user text).
pub(crate) fn hold_shared_statement(key: i64) -> String {
    format!("SELECT pg_advisory_xact_lock_shared({key})")
}

impl Database {
    pub(crate) fn from_sqlite(conn: rusqlite::Connection) -> Self {
        Self {
            backend: Backend::Sqlite(conn),
            set_wise: RefCell::new(None),
            transactions_key: Cell::new(None),
        }
    }

    /// A connection to the PostgreSQL server `url`
    /// (`postgresql://user@host:port/db`; the password by libpq's rules).
    pub(crate) fn connect_postgres(url: &str) -> Result<Self> {
        Ok(Self {
            backend: Backend::Postgres {
                client: RefCell::new(crate::postgres::connection::connect(url)?),
                statements: RefCell::new(HashMap::new()),
                in_transaction: Cell::new(false),
                bulk_savepoints: Cell::new(0),
                bulk_rows: RefCell::new(BTreeMap::new()),
            },
            set_wise: RefCell::new(None),
            transactions_key: Cell::new(None),
        })
    }

    pub(crate) fn dialect(&self) -> Dialect {
        match &self.backend {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres { .. } => Dialect::Postgres,
        }
    }

    /// The SQLite connection, for what only SQLite has (bulk-writing
    /// checkpoints, synchronous levels); an error on another backend.
    pub(crate) fn sqlite(&self) -> Result<&rusqlite::Connection> {
        match &self.backend {
            Backend::Sqlite(conn) => Ok(conn),
            Backend::Postgres { .. } => Err(RegistryError::Invalid(
                "this operation runs on a SQLite registry only so far (not on PostgreSQL)".into(),
            )),
        }
    }

    /// A statement to run many times (a loop of inserts), prepared once.
    /// Statements are cached by their text, so preparing the same text
    /// again is cheap.
    pub(crate) fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(Statement {
            inner: match &self.backend {
                Backend::Sqlite(conn) => StatementImpl::Sqlite(conn.prepare_cached(sql)?),
                Backend::Postgres {
                    client, statements, ..
                } => {
                    let cached = statements.borrow().get(sql).cloned();
                    let stmt = match cached {
                        Some(stmt) => stmt,
                        None => {
                            let stmt = client
                                .borrow_mut()
                                .prepare(&crate::postgres::database::numbered_placeholders(sql))?;
                            // Queries built per call (`--where`) have texts
                            // of their own: the cache is bounded, and a
                            // dropped statement is closed on the server.
                            if statements.borrow().len() >= STATEMENT_CACHE {
                                statements.borrow_mut().clear();
                            }
                            statements
                                .borrow_mut()
                                .insert(sql.to_string(), stmt.clone());
                            stmt
                        }
                    };
                    StatementImpl::Postgres { client, stmt }
                }
            },
        })
    }

    /// Prepares `sql`, an INSERT of one row into a table whose integer key
    /// `key_column` the database assigns, to learn each inserted row's
    /// key. SQLite reads the connection's last rowid (the key is the
    /// table's rowid; a `RETURNING` clause would cost it a temporary table
    /// per row); a backend without rowids adds `RETURNING key_column`.
    pub(crate) fn prepare_keyed_insert(
        &self,
        sql: &str,
        key_column: &str,
    ) -> Result<KeyedInsert<'_>> {
        let stmt = match &self.backend {
            Backend::Sqlite(_) => self.prepare(sql)?,
            Backend::Postgres { .. } => self.prepare(&format!(
                "{sql} RETURNING {}",
                crate::schema::quote(key_column)
            ))?,
        };
        Ok(KeyedInsert { db: self, stmt })
    }

    /// Runs one statement; the number of rows it changed.
    pub(crate) fn execute(&self, sql: &str, params: &Params<'_>) -> Result<u64> {
        self.prepare(sql)?.execute(params)
    }

    /// Runs one user-supplied statement read-only, within `limit` (see
    /// `Registry::sql_read_only_within`): the column names and the rows as
    /// JSON. SQLite runs it on a new read-only connection to the same
    /// file; PostgreSQL in a `READ ONLY` transaction with a statement
    /// timeout, rolled back after.
    pub(crate) fn read_only_query(
        &self,
        sql: &str,
        limit: Option<std::time::Duration>,
    ) -> Result<(Vec<String>, Vec<Vec<serde_json::Value>>)> {
        match &self.backend {
            Backend::Sqlite(conn) => {
                let path = conn.path().filter(|p| !p.is_empty()).ok_or_else(|| {
                    RegistryError::Invalid("an in-memory registry has no file to read".into())
                })?;
                crate::sqlite::run_read_only(std::path::Path::new(path), sql, limit)
            }
            Backend::Postgres { client, .. } => {
                crate::postgres::database::run_read_only(&mut client.borrow_mut(), sql, limit)
            }
        }
    }

    /// Whether the database (the registry's schema, on a server) has a
    /// table called `name`.
    pub(crate) fn has_table(&self, name: &str) -> Result<bool> {
        let sql = match self.dialect() {
            Dialect::Sqlite => "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            Dialect::Postgres => {
                "SELECT 1 FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = ?1"
            }
        };
        self.prepare(sql)?.exists(&[&name])
    }

    /// Prepares a read-only connection for one long scan of a large part
    /// of the database: its pages are read into a bounded page cache
    /// instead of mapped (`SCAN_CACHE_KIB` in `sqlite/connection.rs`). A
    /// server's backend holds its pages itself: nothing to do there.
    pub(crate) fn read_for_scan(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(conn) => crate::sqlite::read_for_scan(conn),
            Backend::Postgres { .. } => Ok(()),
        }
    }

    /// Runs `scan`, one pass over many rows through this connection, with
    /// the page cache bounded as for [`Database::read_for_scan`], then
    /// gives the connection its own cache back: on SQLite the pages the
    /// scan read beyond the bound are freed rather than held by a cache
    /// sized for writing (a second merge of 10^7 quanta reads every
    /// `quantum` row, and held ~1 GiB of them). A server's backend holds
    /// its pages itself: nothing to do there.
    pub(crate) fn with_scan_cache<T>(&self, scan: impl FnOnce() -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(conn) => crate::sqlite::with_scan_cache(conn, scan),
            Backend::Postgres { .. } => scan(),
        }
    }

    /// Runs statements without parameters (schema, transaction control).
    pub(crate) fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Backend::Postgres { client, .. } => Ok(client.borrow_mut().batch_execute(sql)?),
        }
    }

    /// The first row of a query through `read`, `None` without rows.
    pub(crate) fn query_row<T>(
        &self,
        sql: &str,
        params: &Params<'_>,
        read: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut read = Some(read);
        let mut found = None;
        self.for_each_row(sql, params, |row| {
            if let Some(read) = read.take() {
                found = Some(read(row)?);
            }
            Ok(false)
        })?;
        Ok(found)
    }

    /// Every row of a query through `read`, in the query's order.
    pub(crate) fn query_rows<T>(
        &self,
        sql: &str,
        params: &Params<'_>,
        read: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.prepare(sql)?.query_rows(params, read)
    }

    /// Hands the rows of a query to `each` as they come, until it returns
    /// `false`.
    pub(crate) fn for_each_row(
        &self,
        sql: &str,
        params: &Params<'_>,
        each: impl FnMut(&Row<'_>) -> Result<bool>,
    ) -> Result<()> {
        self.prepare(sql)?.for_each_row(params, each)
    }

    /// Opens a write transaction: SQLite takes its write lock at once
    /// (`BEGIN IMMEDIATE`), so a transaction that reads before it writes
    /// cannot fail to upgrade halfway. It rolls back when dropped
    /// uncommitted. Statements run on the transaction or, while it is
    /// open, on the database itself (a registry method called inside
    /// it); one connection has one transaction at a time, and a second
    /// `transaction` before the first ends is refused by the database.
    pub(crate) fn transaction(&self) -> Result<Transaction<'_>> {
        self.begin()?;
        Ok(Transaction {
            db: self,
            open: true,
        })
    }

    /// Opens a write transaction that outlives the call (merge's, which
    /// spans several registry calls); end it with [`Database::commit`] or
    /// [`Database::rollback`]. Prefer [`Database::transaction`], which
    /// cannot be left open.
    pub(crate) fn begin(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(conn) => conn.execute_batch("BEGIN IMMEDIATE")?,
            Backend::Postgres {
                client,
                in_transaction,
                bulk_savepoints,
                ..
            } => {
                client
                    .borrow_mut()
                    .batch_execute(&begin_statement(self.transactions_key.get()))?;
                in_transaction.set(true);
                bulk_savepoints.set(0);
            }
        }
        Ok(())
    }

    /// From now on, every write transaction of this PostgreSQL session
    /// holds `key` shared until it ends, so that the next holder of the
    /// registry's writer lock can wait for it (`crate::writer_lock`).
    /// Nothing on SQLite, whose transactions end with their process.
    pub(crate) fn hold_in_transactions(&self, key: i64) {
        self.transactions_key.set(Some(key));
    }

    /// Opens a write transaction like [`Database::begin`] whose foreign
    /// keys are checked set-wise instead of per row (`foreign_keys.rs`):
    /// on SQLite, per-row enforcement is off until the transaction ends,
    /// the rows it inserts into tables with foreign keys are checked at
    /// commit, except in the tables whose every written row the caller
    /// checks itself inside the transaction (`CALLER_CHECKED` there: dataset
    /// rows and input links). On PostgreSQL the server's keys and triggers
    /// check as always.
    pub(crate) fn begin_set_wise(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(conn) => {
                if !conn.is_autocommit() {
                    return Err(RegistryError::Invalid(
                        "a set-wise transaction cannot start inside another transaction".into(),
                    ));
                }
                conn.pragma_update(None, "foreign_keys", false)?;
                let begun = conn
                    .execute_batch("BEGIN IMMEDIATE")
                    .map_err(RegistryError::from);
                let marked = begun.and_then(|()| foreign_keys::marks(conn));
                match marked {
                    Ok(marks) => {
                        *self.set_wise.borrow_mut() = Some(marks);
                        Ok(())
                    }
                    Err(e) => {
                        if !conn.is_autocommit() {
                            let _ = conn.execute_batch("ROLLBACK");
                        }
                        conn.pragma_update(None, "foreign_keys", true)?;
                        Err(e)
                    }
                }
            }
            Backend::Postgres { .. } => self.begin(),
        }
    }

    /// [`Database::begin_set_wise`] as a guard that rolls back when
    /// dropped uncommitted.
    pub(crate) fn transaction_set_wise(&self) -> Result<Transaction<'_>> {
        self.begin_set_wise()?;
        Ok(Transaction {
            db: self,
            open: true,
        })
    }

    /// Commits the open transaction; a set-wise one's foreign keys are
    /// checked first, and a violation leaves it open (to be rolled back).
    pub(crate) fn commit(&self) -> Result<()> {
        if let (Backend::Sqlite(conn), Some(marks)) = (&self.backend, &*self.set_wise.borrow()) {
            foreign_keys::check(conn, marks)?;
        }
        self.end_transaction("COMMIT")
    }

    /// Rolls the open transaction back.
    pub(crate) fn rollback(&self) -> Result<()> {
        self.end_transaction("ROLLBACK")
    }

    fn end_transaction(&self, how: &str) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(conn) => {
                let ended = conn.execute_batch(how);
                // Per-row enforcement is back as soon as the transaction
                // is over, however it ended (a busy COMMIT leaves it open:
                // then at its rollback).
                let restored =
                    if conn.is_autocommit() && self.set_wise.borrow_mut().take().is_some() {
                        conn.pragma_update(None, "foreign_keys", true)
                    } else {
                        Ok(())
                    };
                ended?;
                Ok(restored?)
            }
            Backend::Postgres {
                client,
                in_transaction,
                ..
            } => {
                // The crash tests' kill point inside a commit, as SQLite's
                // commit hook gives it: killed here, the server rolls the
                // transaction back.
                if how == "COMMIT" {
                    quanta_core::fault::kill_point(quanta_core::fault::REGISTRY_COMMIT);
                }
                // Whatever the outcome, the server has no transaction open
                // after a COMMIT or ROLLBACK (a failed COMMIT rolls back).
                in_transaction.set(false);
                Ok(client.borrow_mut().batch_execute(how)?)
            }
        }
    }

    /// The rows the bulk inserts added per table since the last call
    /// (committed or not; PostgreSQL only, where they decide which tables'
    /// statistics to refresh: `Registry::set_bulk_writing`).
    pub(crate) fn take_bulk_rows(&self) -> BTreeMap<String, u64> {
        match &self.backend {
            Backend::Sqlite(_) => BTreeMap::new(),
            Backend::Postgres { bulk_rows, .. } => bulk_rows.take(),
        }
    }

    /// Whether a transaction is open on this connection.
    pub(crate) fn in_transaction(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(conn) => !conn.is_autocommit(),
            Backend::Postgres { in_transaction, .. } => in_transaction.get(),
        }
    }

    /// The most parameters one statement may have.
    pub(crate) fn max_parameters(&self) -> usize {
        match &self.backend {
            Backend::Sqlite(conn) => conn
                .limit(rusqlite::limits::Limit::SQLITE_LIMIT_VARIABLE_NUMBER)
                .ok()
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(999),
            // The protocol's parameter count is a 16-bit integer.
            Backend::Postgres { .. } => usize::from(u16::MAX),
        }
    }
}

/// A prepared statement of a [`Database`].
pub(crate) struct Statement<'db> {
    inner: StatementImpl<'db>,
}

enum StatementImpl<'db> {
    Sqlite(rusqlite::CachedStatement<'db>),
    Postgres {
        client: &'db RefCell<postgres::Client>,
        stmt: postgres::Statement,
    },
}

impl Statement<'_> {
    /// Runs the statement; the number of rows it changed.
    pub(crate) fn execute(&mut self, params: &Params<'_>) -> Result<u64> {
        match &mut self.inner {
            StatementImpl::Sqlite(stmt) => crate::sqlite::database::execute(stmt, params),
            StatementImpl::Postgres { client, stmt } => {
                let binds = crate::postgres::database::binds(params);
                Ok(client
                    .borrow_mut()
                    .execute(stmt, &crate::postgres::database::refs(&binds))?)
            }
        }
    }

    /// Hands the rows of the query to `each` as they come, until it
    /// returns `false`.
    pub(crate) fn for_each_row(
        &mut self,
        params: &Params<'_>,
        each: impl FnMut(&Row<'_>) -> Result<bool>,
    ) -> Result<()> {
        match &mut self.inner {
            StatementImpl::Sqlite(stmt) => {
                crate::sqlite::database::for_each_row(stmt, params, each)
            }
            StatementImpl::Postgres { client, stmt } => {
                let binds = crate::postgres::database::binds(params);
                // All rows at once: the client is free again before the
                // first callback runs.
                let rows = client
                    .borrow_mut()
                    .query(stmt, &crate::postgres::database::refs(&binds))?;
                let mut each = each;
                for row in &rows {
                    if !each(&Row::new(RowImpl::Postgres(row)))? {
                        break;
                    }
                }
                Ok(())
            }
        }
    }

    /// Whether the query has a row.
    pub(crate) fn exists(&mut self, params: &Params<'_>) -> Result<bool> {
        let mut found = false;
        self.for_each_row(params, |_| {
            found = true;
            Ok(false)
        })?;
        Ok(found)
    }

    /// Every row of the query through `read`, in the query's order.
    pub(crate) fn query_rows<T>(
        &mut self,
        params: &Params<'_>,
        mut read: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.for_each_row(params, |row| {
            out.push(read(row)?);
            Ok(true)
        })?;
        Ok(out)
    }
}

/// A prepared INSERT that tells the key the database assigned
/// ([`Database::prepare_keyed_insert`]).
pub(crate) struct KeyedInsert<'db> {
    db: &'db Database,
    stmt: Statement<'db>,
}

impl KeyedInsert<'_> {
    /// Inserts one row; its key, or `None` when the insert changed nothing
    /// (`ON CONFLICT DO NOTHING` skipped it).
    pub(crate) fn insert(&mut self, params: &Params<'_>) -> Result<Option<i64>> {
        match &self.db.backend {
            Backend::Sqlite(conn) => {
                if self.stmt.execute(params)? == 0 {
                    return Ok(None);
                }
                Ok(Some(conn.last_insert_rowid()))
            }
            Backend::Postgres { .. } => {
                let mut key = None;
                self.stmt.for_each_row(params, |r| {
                    key = Some(r.get::<i64>(0)?);
                    Ok(false)
                })?;
                Ok(key)
            }
        }
    }
}

/// An open write transaction; statements run on it through `Deref`.
pub(crate) struct Transaction<'a> {
    db: &'a Database,
    open: bool,
}

impl Transaction<'_> {
    pub(crate) fn commit(mut self) -> Result<()> {
        // A failed commit leaves the guard open: dropping it rolls back
        // what SQLite may still hold open (a busy COMMIT).
        self.db.commit()?;
        self.open = false;
        Ok(())
    }
}

impl Deref for Transaction<'_> {
    type Target = Database;
    fn deref(&self) -> &Database {
        self.db
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.open {
            // A failed rollback leaves nothing to do: the database rolls
            // back an unfinished transaction when the connection closes.
            let _ = self.db.rollback();
        }
    }
}

// Parameters.

impl Param for i64 {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Integer(*self)
    }
}

impl Param for i32 {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Integer(i64::from(*self))
    }
}

impl Param for u32 {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Integer(i64::from(*self))
    }
}

impl Param for f64 {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Real(*self)
    }
}

impl Param for bool {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Integer(i64::from(*self))
    }
}

impl Param for str {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl Param for String {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl Param for [u8] {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

impl Param for Vec<u8> {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

impl Param for uuid::Uuid {
    /// A UUID is stored as its 16 bytes.
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self.as_bytes())
    }
}

impl Param for ValueRef<'_> {
    fn value(&self) -> ValueRef<'_> {
        *self
    }
}

impl Param for quanta_core::DataIdValue {
    fn value(&self) -> ValueRef<'_> {
        match self {
            Self::Int(i) => ValueRef::Integer(*i),
            Self::Str(s) => ValueRef::Text(s),
        }
    }
}

impl Param for SqlValue {
    fn value(&self) -> ValueRef<'_> {
        match self {
            Self::Null => ValueRef::Null,
            Self::Integer(i) => ValueRef::Integer(*i),
            Self::Real(f) => ValueRef::Real(*f),
            Self::Text(t) => ValueRef::Text(t),
            Self::Blob(b) => ValueRef::Blob(b),
        }
    }
}

impl<T: Param + ?Sized> Param for &T {
    fn value(&self) -> ValueRef<'_> {
        (**self).value()
    }
}

impl<T: Param> Param for Option<T> {
    fn value(&self) -> ValueRef<'_> {
        match self {
            Some(v) => v.value(),
            None => ValueRef::Null,
        }
    }
}

// Columns.

impl Column for i64 {
    const EXPECTED: &'static str = "an integer";
    fn from_value(v: ValueRef<'_>) -> Option<Self> {
        match v {
            ValueRef::Integer(i) => Some(i),
            _ => None,
        }
    }
}

impl Column for i32 {
    const EXPECTED: &'static str = "a 32-bit integer";
    fn from_value(v: ValueRef<'_>) -> Option<Self> {
        match v {
            ValueRef::Integer(i) => i32::try_from(i).ok(),
            _ => None,
        }
    }
}

impl Column for u32 {
    const EXPECTED: &'static str = "a 32-bit unsigned integer";
    fn from_value(v: ValueRef<'_>) -> Option<Self> {
        match v {
            ValueRef::Integer(i) => u32::try_from(i).ok(),
            _ => None,
        }
    }
}

impl Column for bool {
    const EXPECTED: &'static str = "a boolean (0 or 1)";
    fn from_value(v: ValueRef<'_>) -> Option<Self> {
        match v {
            ValueRef::Integer(i) => Some(i != 0),
            _ => None,
        }
    }
}

impl Column for f64 {
    const EXPECTED: &'static str = "a number";
    fn from_value(v: ValueRef<'_>) -> Option<Self> {
        match v {
            ValueRef::Real(f) => Some(f),
            ValueRef::Integer(i) => Some(i as f64),
            _ => None,
        }
    }
}

impl Column for String {
    const EXPECTED: &'static str = "text";
    fn from_value(v: ValueRef<'_>) -> Option<Self> {
        match v {
            ValueRef::Text(t) => Some(t.to_string()),
            _ => None,
        }
    }
}

impl Column for Vec<u8> {
    const EXPECTED: &'static str = "a blob";
    fn from_value(v: ValueRef<'_>) -> Option<Self> {
        match v {
            ValueRef::Blob(b) => Some(b.to_vec()),
            _ => None,
        }
    }
}

impl Column for uuid::Uuid {
    const EXPECTED: &'static str = "a 16-byte UUID";
    fn from_value(v: ValueRef<'_>) -> Option<Self> {
        match v {
            ValueRef::Blob(b) => uuid::Uuid::from_slice(b).ok(),
            _ => None,
        }
    }
}

impl Column for SqlValue {
    const EXPECTED: &'static str = "any value";
    fn from_value(v: ValueRef<'_>) -> Option<Self> {
        Some(match v {
            ValueRef::Null => Self::Null,
            ValueRef::Integer(i) => Self::Integer(i),
            ValueRef::Real(f) => Self::Real(f),
            ValueRef::Text(t) => Self::Text(t.to_string()),
            ValueRef::Blob(b) => Self::Blob(b.to_vec()),
        })
    }
}

impl<T: Column> Column for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn from_value(v: ValueRef<'_>) -> Option<Self> {
        match v {
            ValueRef::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

#[cfg(test)]
mod tests;
