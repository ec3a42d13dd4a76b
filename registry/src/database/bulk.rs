//! Multi-row inserts that skip rows whose key is taken, for merge's
//! writer: many rows per statement, and how many of each statement's rows
//! went in, so the caller can examine the chunks that skipped some.
//!
//! SQLite runs `INSERT OR IGNORE` through [`StaticStatement`], binding
//! borrowed values without copies (the merge's hot path); PostgreSQL runs
//! `INSERT … ON CONFLICT DO NOTHING` with many more rows per statement, as
//! each statement is a round trip to the server.

use crate::database::{Backend, Database, Param, ValueRef};
use crate::dialect::Dialect;
use crate::error::{DatabaseError, DatabaseErrorKind, Result};
use crate::sqlite::static_statement::{Binder, StaticStatement};

/// Rows per SQLite statement: more rows per statement save per-statement
/// work. The statements are `INSERT OR IGNORE`: one that could abort
/// halfway makes SQLite copy every page it touches to a statement journal
/// first (a third of the writer's time at 16 rows), one that cannot needs
/// none. What a statement skipped is found out afterwards.
pub(crate) const SQLITE_ROWS_PER_STATEMENT: usize = 32;

/// Rows per PostgreSQL statement: a round trip each.
const POSTGRES_ROWS_PER_STATEMENT: usize = 1000;

/// A multi-row insert into one table that skips conflicting rows: the
/// statement of a full chunk of rows, prepared once per run.
pub(crate) struct BulkInsert {
    table_and_columns: String,
    dialect: Dialect,
    cols: usize,
    per_statement: usize,
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
        let dialect = db.dialect();
        let most = match dialect {
            Dialect::Sqlite => SQLITE_ROWS_PER_STATEMENT,
            Dialect::Postgres => POSTGRES_ROWS_PER_STATEMENT,
        };
        let per_statement = (db.max_parameters() / cols.max(1)).clamp(1, most);
        let mut insert = Self {
            table_and_columns: table_and_columns.to_string(),
            dialect,
            cols,
            per_statement,
            full: String::new(),
        };
        insert.full = insert.sql(per_statement);
        insert
    }

    /// The statement inserting `rows` rows.
    fn sql(&self, rows: usize) -> String {
        let mut values = String::with_capacity(rows * (self.cols * 6 + 3));
        for r in 0..rows {
            values.push_str(if r == 0 { "(" } else { ",(" });
            for c in 0..self.cols {
                if c > 0 {
                    values.push(',');
                }
                match self.dialect {
                    // SQLite numbers bare placeholders itself; shorter text
                    // to compile.
                    Dialect::Sqlite => values.push('?'),
                    Dialect::Postgres => {
                        values.push('?');
                        values.push_str(&(r * self.cols + c + 1).to_string());
                    }
                }
            }
            values.push(')');
        }
        let t = &self.table_and_columns;
        match self.dialect {
            Dialect::Sqlite => format!("INSERT OR IGNORE INTO {t} VALUES {values}"),
            Dialect::Postgres => format!("INSERT INTO {t} VALUES {values} ON CONFLICT DO NOTHING"),
        }
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
                    let mut stmt = StaticStatement::prepare(conn, &self.sql(1))?;
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
            Backend::Postgres { .. } => {
                let mut values: Vec<ValueRef<'r>> = Vec::new();
                for chunk in rows.chunks(self.per_statement) {
                    values.clear();
                    let mut sink = RowValues {
                        sink: Sink::Postgres(&mut values),
                    };
                    for row in chunk {
                        bind(&mut sink, row)?;
                    }
                    if values.len() != chunk.len() * self.cols {
                        return Err(DatabaseError::new(
                            DatabaseErrorKind::Other,
                            format!(
                                "{}: {} values bound for {} rows of {} columns",
                                self.table_and_columns,
                                values.len(),
                                chunk.len(),
                                self.cols
                            ),
                        )
                        .into());
                    }
                    let params: Vec<&dyn Param> = values.iter().map(|v| v as &dyn Param).collect();
                    let changed = if chunk.len() == self.per_statement {
                        db.execute(&self.full, &params)?
                    } else {
                        db.execute(&self.sql(chunk.len()), &params)?
                    };
                    done(chunk, usize::try_from(changed).unwrap_or(usize::MAX))?;
                }
                Ok(())
            }
        }
    }
}
