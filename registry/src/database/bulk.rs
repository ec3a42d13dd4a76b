//! Multi-row inserts that skip rows whose key is taken, for merge's
//! writer: many rows per statement, and how many of each statement's rows
//! went in, so the caller can examine the chunks that skipped some.
//!
//! SQLite runs `INSERT OR IGNORE` through [`StaticStatement`], binding
//! borrowed values without copies (the merge's hot path), 32 rows a
//! statement. PostgreSQL takes all the rows of a call at once: `COPY …
//! BINARY` into a temporary staging table, then one `INSERT … SELECT`
//! (`crate::postgres::database::copy_insert`): a statement per row, or per
//! thousand, is a round trip to the server each, and its parameters are
//! parsed and planned each time (measured: ~9,000 dataset rows/s through
//! 1,000-row `VALUES` statements).
//!
//! That `INSERT` is tried first without `ON CONFLICT DO NOTHING`, under a
//! savepoint, and again with it only if a key was taken: the clause makes
//! the server probe every unique index of the table for each row before
//! inserting it, and probe it again as it inserts (measured: a sixth of the
//! merge's server time), while the writers' rows are new but for a merge
//! or ingest that is run again. A savepoint that wrote is a
//! subtransaction the server tracks until the transaction ends, cheaply
//! for the first 64 (`PGPROC_MAX_CACHED_SUBXIDS`), so a transaction takes
//! at most [`OPTIMISTIC_INSERTS_PER_TRANSACTION`] of them (a merge
//! transaction takes 24) and inserts with the clause after that. Outside a
//! transaction an insert makes one of its own.

use crate::database::{hold_shared_statement, Backend, Database, ValueRef};
use crate::dialect::Dialect;
use crate::error::{DatabaseError, DatabaseErrorKind, Result};
use crate::sqlite::static_statement::{Binder, StaticStatement};

/// Rows per SQLite statement: more rows per statement save per-statement
/// work. The statements are `INSERT OR IGNORE`: one that could abort
/// halfway makes SQLite copy every page it touches to a statement journal
/// first (a third of the writer's time at 16 rows), one that cannot needs
/// none. What a statement skipped is found out afterwards.
pub(crate) const SQLITE_ROWS_PER_STATEMENT: usize = 32;

/// PostgreSQL inserts tried without `ON CONFLICT` (each under a savepoint)
/// per transaction; see the module's documentation.
pub(crate) const OPTIMISTIC_INSERTS_PER_TRANSACTION: u32 = 48;

/// A multi-row insert into one table that skips conflicting rows: the
/// statement of a full chunk of rows, prepared once per run.
pub(crate) struct BulkInsert {
    table_and_columns: String,
    dialect: Dialect,
    cols: usize,
    /// Rows per SQLite statement.
    per_statement: usize,
    /// SQLite's statement of a full chunk.
    full: String,
}

/// The values of the rows of one statement, pushed column by column, row
/// by row, in the table's column order.
pub(crate) struct RowValues<'b, 's, 'v> {
    sink: Sink<'b, 's, 'v>,
}

enum Sink<'b, 's, 'v> {
    /// Bound into the statement in place; the next parameter's number.
    Sqlite(&'b mut Binder<'s, 'v>, usize),
    Postgres(&'b mut Vec<ValueRef<'v>>),
}

impl<'v> RowValues<'_, '_, 'v> {
    /// The next column's value.
    pub(crate) fn push(&mut self, value: ValueRef<'v>) -> Result<()> {
        match &mut self.sink {
            Sink::Sqlite(binder, next) => {
                binder.bind(*next, crate::sqlite::database::sqlite_value(value))?;
                *next += 1;
            }
            Sink::Postgres(values) => values.push(value),
        }
        Ok(())
    }
}

impl BulkInsert {
    /// `table_and_columns` is `t (c1, c2, ...)` with `cols` columns; rows
    /// per statement also respect the database's parameter limit.
    pub(crate) fn new(db: &Database, table_and_columns: &str, cols: usize) -> Self {
        let per_statement = (db.max_parameters() / cols.max(1)).clamp(1, SQLITE_ROWS_PER_STATEMENT);
        let mut insert = Self {
            table_and_columns: table_and_columns.to_string(),
            dialect: db.dialect(),
            cols,
            per_statement,
            full: String::new(),
        };
        if insert.dialect == Dialect::Sqlite {
            insert.full = insert.sqlite_statement(per_statement);
        }
        insert
    }

    /// SQLite's statement inserting `rows` rows.
    fn sqlite_statement(&self, rows: usize) -> String {
        let mut group = String::with_capacity(2 * self.cols + 2);
        group.push('(');
        for c in 0..self.cols {
            group.push_str(if c == 0 { "?" } else { ",?" });
        }
        group.push(')');
        format!(
            "INSERT OR IGNORE INTO {} VALUES {}",
            self.table_and_columns,
            vec![group; rows].join(",")
        )
    }

    /// Inserts `rows`, each pushed by `bind`; `done(chunk, rows inserted)`
    /// sees every statement's rows and how many of them went in.
    pub(crate) fn run<'r, R>(
        &self,
        db: &Database,
        rows: &'r [R],
        mut bind: impl FnMut(&mut RowValues<'_, '_, 'r>, &'r R) -> Result<()>,
        mut done: impl FnMut(&'r [R], usize) -> Result<()>,
    ) -> Result<()> {
        match &db.backend {
            Backend::Sqlite(conn) => {
                let mut chunks = rows.chunks_exact(self.per_statement);
                if chunks.len() > 0 {
                    let mut stmt = StaticStatement::prepare(conn, &self.full)?;
                    for chunk in &mut chunks {
                        let changed = stmt.execute(|b| {
                            let mut values = RowValues {
                                sink: Sink::Sqlite(b, 1),
                            };
                            chunk.iter().try_for_each(|row| bind(&mut values, row))
                        })?;
                        done(chunk, changed)?;
                    }
                }
                let rest = chunks.remainder();
                if !rest.is_empty() {
                    let mut stmt = StaticStatement::prepare(conn, &self.sqlite_statement(1))?;
                    for row in rest.chunks_exact(1) {
                        let changed = stmt.execute(|b| {
                            bind(
                                &mut RowValues {
                                    sink: Sink::Sqlite(b, 1),
                                },
                                &row[0],
                            )
                        })?;
                        done(row, changed)?;
                    }
                }
                Ok(())
            }
            Backend::Postgres {
                client,
                in_transaction,
                bulk_savepoints,
                bulk_rows,
                ..
            } => {
                if rows.is_empty() {
                    return Ok(());
                }
                let mut values: Vec<ValueRef<'r>> = Vec::with_capacity(rows.len() * self.cols);
                let mut sink = RowValues {
                    sink: Sink::Postgres(&mut values),
                };
                for row in rows {
                    bind(&mut sink, row)?;
                }
                if values.len() != rows.len() * self.cols {
                    return Err(DatabaseError::new(
                        DatabaseErrorKind::Other,
                        format!(
                            "{}: {} values bound for {} rows of {} columns",
                            self.table_and_columns,
                            values.len(),
                            rows.len(),
                            self.cols
                        ),
                    )
                    .into());
                }
                let (table, columns) = self.table_and_columns.split_once('(').ok_or_else(|| {
                    DatabaseError::new(
                        DatabaseErrorKind::Other,
                        format!("`{}` names no columns", self.table_and_columns),
                    )
                })?;
                let columns = columns.trim_end().trim_end_matches(')');
                // Borrowed for the insert only: `done` may query again.
                let mut client = client.borrow_mut();
                let inserted = if in_transaction.get() {
                    let optimistic = bulk_savepoints.get() < OPTIMISTIC_INSERTS_PER_TRANSACTION;
                    if optimistic {
                        bulk_savepoints.set(bulk_savepoints.get() + 1);
                    }
                    crate::postgres::database::copy_insert(
                        &mut *client,
                        table.trim(),
                        columns,
                        &values,
                        self.cols,
                        optimistic,
                    )?
                } else {
                    // The staging table empties when a transaction
                    // commits: the copy and the insert need one.
                    let mut tx = client.transaction()?;
                    if let Some(key) = db.transactions_key.get() {
                        tx.batch_execute(&hold_shared_statement(key))?;
                    }
                    let inserted = crate::postgres::database::copy_insert(
                        &mut tx,
                        table.trim(),
                        columns,
                        &values,
                        self.cols,
                        true,
                    )?;
                    tx.commit()?;
                    inserted
                };
                drop(client);
                *bulk_rows
                    .borrow_mut()
                    .entry(table.trim().to_string())
                    .or_default() += inserted;
                done(rows, usize::try_from(inserted).unwrap_or(usize::MAX))
            }
        }
    }
}
