//! SQLite's half of [`crate::database::Database`]: statements prepared
//! through rusqlite's statement cache, parameters bound and columns read
//! as [`ValueRef`]s. SQLite numbers placeholders `?1`, `?2`, …, as the
//! interface does, so statements run as written.

use rusqlite::types::{ToSqlOutput, ValueRef as SqliteValue};

use crate::database::{Params, Row, RowImpl, ValueRef};
use crate::error::{DatabaseError, DatabaseErrorKind, Result};

/// A parameter as rusqlite binds it.
struct Bind<'a>(ValueRef<'a>);

impl rusqlite::ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(sqlite_value(self.0)))
    }
}

/// The interface's value as rusqlite's.
pub(crate) fn sqlite_value(v: ValueRef<'_>) -> SqliteValue<'_> {
    match v {
        ValueRef::Null => SqliteValue::Null,
        ValueRef::Integer(i) => SqliteValue::Integer(i),
        ValueRef::Real(f) => SqliteValue::Real(f),
        ValueRef::Text(t) => SqliteValue::Text(t.as_bytes()),
        ValueRef::Blob(b) => SqliteValue::Blob(b),
    }
}

fn bound<'p>(params: &'p Params<'_>) -> impl rusqlite::Params + 'p {
    rusqlite::params_from_iter(params.iter().map(|p| Bind(p.value())))
}

pub(crate) fn execute(stmt: &mut rusqlite::Statement<'_>, params: &Params<'_>) -> Result<u64> {
    Ok(stmt.execute(bound(params))? as u64)
}

pub(crate) fn for_each_row(
    stmt: &mut rusqlite::Statement<'_>,
    params: &Params<'_>,
    mut each: impl FnMut(&Row<'_>) -> Result<bool>,
) -> Result<()> {
    let mut rows = stmt.query(bound(params))?;
    while let Some(row) = rows.next()? {
        if !each(&Row::new(RowImpl::Sqlite(row)))? {
            break;
        }
    }
    Ok(())
}

/// The value of column `index` of `row`; text must be UTF-8.
pub(crate) fn column<'r>(row: &'r rusqlite::Row<'_>, index: usize) -> Result<ValueRef<'r>> {
    Ok(match row.get_ref(index)? {
        SqliteValue::Null => ValueRef::Null,
        SqliteValue::Integer(i) => ValueRef::Integer(i),
        SqliteValue::Real(f) => ValueRef::Real(f),
        SqliteValue::Text(t) => ValueRef::Text(std::str::from_utf8(t).map_err(|e| {
            DatabaseError::new(
                DatabaseErrorKind::Other,
                format!("column {index} is not UTF-8 text ({e})"),
            )
        })?),
        SqliteValue::Blob(b) => ValueRef::Blob(b),
    })
}
