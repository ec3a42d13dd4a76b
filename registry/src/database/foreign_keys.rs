//! SQLite write transactions that check foreign keys set-wise instead of
//! per row ([`Database::begin_set_wise`]).
//!
//! SQLite's per-row enforcement looks every parent of every inserted row
//! up (measured: 8.5 s of a 1,000,000-row `dataset` insert that takes
//! 0.6 s without it). The bulk writers (ingest, import, merge) switch it
//! off for their transaction and keep the invariant "no row references a
//! missing parent" by two set-wise checks inside that transaction, which
//! is race-free because SQLite has one writer at a time:
//!
//! - the [`CALLER_CHECKED`] tables (`dataset`, `quantum_input`) are
//!   checked by the writers, the only ones that open such a transaction: every dataset row's dimension records once
//!   per distinct key, its dataset type and RUN looked up in the
//!   transaction (`Registry::insert_dataset_rows`, merge's
//!   `DimensionChecks`); a `quantum_input` row names a quantum written or
//!   found in the same transaction (ingest writes none). A `WITHOUT ROWID`
//!   table with foreign keys must be one of them: its new rows cannot be
//!   told from the old, and `begin_set_wise` refuses to start otherwise;
//! - every other table with foreign keys is checked here before the
//!   commit: its rows inserted by the transaction (rowid above the largest
//!   at `BEGIN`) are anti-joined to each parent, and one without a parent
//!   fails the commit with a [`ConstraintViolation::ForeignKey`] error.
//!
//! The pragma changes only outside a transaction: it is switched off just
//! before `BEGIN` and on again as soon as the transaction has ended, by
//! commit or rollback (`Database::end_transaction`), whatever the outcome.

use crate::error::{ConstraintViolation, DatabaseError, DatabaseErrorKind, RegistryError, Result};
use crate::schema::quote;

/// The tables whose new rows the set-wise writers check themselves:
/// dataset rows (`Registry::insert_dataset_rows`, merge's
/// `DimensionChecks`) and input links (a quantum written or found in the
/// same transaction).
const CALLER_CHECKED: [&str; 2] = ["dataset", "quantum_input"];

/// One foreign key of a table: its columns, the parent and the parent's
/// columns, in order.
#[derive(Debug)]
struct ForeignKey {
    from: Vec<String>,
    parent: String,
    to: Vec<String>,
}

/// A table whose new rows are checked at commit: the rows with a rowid
/// above `mark` are the transaction's.
#[derive(Debug)]
pub(crate) struct TableMark {
    table: String,
    /// The largest rowid at `BEGIN`; `None`: check every row (SQLite
    /// assigns random rowids once the largest is `i64::MAX`).
    mark: Option<i64>,
    keys: Vec<ForeignKey>,
}

/// The tables of the schema with foreign keys, except [`CALLER_CHECKED`],
/// with the largest rowid of each; an error for another `WITHOUT ROWID`
/// table with foreign keys (its new rows cannot be told apart).
pub(crate) fn marks(conn: &rusqlite::Connection) -> Result<Vec<TableMark>> {
    let mut tables = conn.prepare_cached(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         ORDER BY name",
    )?;
    let tables: Vec<(String, String)> = tables
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut list = conn.prepare_cached(
        "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
    )?;
    let mut marks = Vec::new();
    for (table, sql) in tables {
        if CALLER_CHECKED.contains(&table.as_str()) {
            continue;
        }
        let mut keys: Vec<(i64, ForeignKey)> = Vec::new();
        let rows = list.query_map([&table], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?;
        for row in rows {
            let (id, parent, from, to) = row?;
            let to = to.ok_or_else(|| {
                internal(format!(
                    "foreign key of `{table}` to `{parent}` does not name the parent's columns"
                ))
            })?;
            match keys.last_mut() {
                Some((last, key)) if *last == id => {
                    key.from.push(from);
                    key.to.push(to);
                }
                Some(_) | None => keys.push((
                    id,
                    ForeignKey {
                        from: vec![from],
                        parent,
                        to: vec![to],
                    },
                )),
            }
        }
        if keys.is_empty() {
            continue;
        }
        if sql.to_ascii_uppercase().contains("WITHOUT ROWID") {
            return Err(internal(format!(
                "`{table}` has foreign keys and no rowid: a set-wise transaction cannot find its \
                 new rows, so its writers must check them (CALLER_CHECKED)"
            )));
        }
        let largest: Option<i64> = conn.query_row(
            &format!("SELECT max(rowid) FROM {}", quote(&table)),
            [],
            |r| r.get(0),
        )?;
        marks.push(TableMark {
            table,
            mark: match largest {
                Some(i64::MAX) => None,
                Some(m) => Some(m),
                None => Some(i64::MIN),
            },
            keys: keys.into_iter().map(|(_, k)| k).collect(),
        });
    }
    Ok(marks)
}

/// Fails with a [`ConstraintViolation::ForeignKey`] error naming the
/// first row inserted since its table's mark whose parent is missing.
pub(crate) fn check(conn: &rusqlite::Connection, marks: &[TableMark]) -> Result<()> {
    for t in marks {
        for key in &t.keys {
            let present: Vec<String> = key
                .from
                .iter()
                .map(|c| format!("c.{} IS NOT NULL", quote(c)))
                .collect();
            let matches: Vec<String> = key
                .from
                .iter()
                .zip(&key.to)
                .map(|(f, p)| format!("p.{} = c.{}", quote(p), quote(f)))
                .collect();
            let sql = format!(
                "SELECT {} FROM {} c WHERE c.rowid > ?1 AND {} AND NOT EXISTS \
                 (SELECT 1 FROM {} p WHERE {}) LIMIT 1",
                key.from
                    .iter()
                    .map(|c| format!("quote(c.{})", quote(c)))
                    .collect::<Vec<_>>()
                    .join(", "),
                quote(&t.table),
                present.join(" AND "),
                quote(&key.parent),
                matches.join(" AND "),
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query([t.mark.unwrap_or(i64::MIN)])?;
            if let Some(row) = rows.next()? {
                let values = (0..key.from.len())
                    .map(|i| row.get::<_, String>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                return Err(DatabaseError::new(
                    DatabaseErrorKind::Other,
                    format!(
                        "FOREIGN KEY constraint failed: a new `{}` row has ({}) = ({}), and `{}` has no ({}) with these values",
                        t.table,
                        key.from.join(", "),
                        values.join(", "),
                        key.parent,
                        key.to.join(", "),
                    ),
                )
                .violating(ConstraintViolation::ForeignKey)
                .into());
            }
        }
    }
    Ok(())
}

fn internal(message: String) -> RegistryError {
    DatabaseError::new(DatabaseErrorKind::Other, message).into()
}
