//! PostgreSQL's half of [`crate::database::Database`]: the interface's
//! `?N` placeholders become `$N`, a parameter is bound by the type the
//! server inferred for it (an integer into `bigint`, `integer` or
//! `boolean`; a 16-byte blob into `uuid` or `bytea`), a column is read by
//! its type into a [`ValueRef`] borrowed from the row, and errors are
//! classified by their SQLSTATE.

use std::error::Error as StdError;

use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::types::{FromSql, IsNull, ToSql, Type};

use crate::database::ValueRef;
use crate::error::{ConstraintViolation, DatabaseError, DatabaseErrorKind, RegistryError, Result};

/// `sql` with each `?N` placeholder outside quotes written `$N`.
pub(crate) fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '?') if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push('$');
                continue;
            }
            (None, _) => {}
        }
        out.push(c);
    }
    out
}

/// The interface's parameters as the driver binds them.
pub(crate) fn binds<'p>(params: &'p crate::database::Params<'_>) -> Vec<Bind<'p>> {
    params.iter().map(|p| Bind(p.value())).collect()
}

/// [`binds`] as the driver's call takes them.
pub(crate) fn refs<'b>(binds: &'b [Bind<'_>]) -> Vec<&'b (dyn ToSql + Sync)> {
    binds.iter().map(|b| b as &(dyn ToSql + Sync)).collect()
}

/// A parameter as the driver binds it, by the type the server expects.
#[derive(Debug)]
pub(crate) struct Bind<'a>(pub(crate) ValueRef<'a>);

type BoxError = Box<dyn StdError + Sync + Send>;

impl ToSql for Bind<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, BoxError> {
        match self.0 {
            ValueRef::Null => Ok(IsNull::Yes),
            ValueRef::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                _ => Err(refused("an integer", ty)),
            },
            ValueRef::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (f as f32).to_sql(ty, out),
                _ => Err(refused("a real number", ty)),
            },
            ValueRef::Text(t) if <&str as ToSql>::accepts(ty) => t.to_sql(ty, out),
            ValueRef::Text(_) => Err(refused("text", ty)),
            ValueRef::Blob(b) => match *ty {
                Type::BYTEA => b.to_sql(ty, out),
                // A uuid's binary form is its 16 bytes.
                Type::UUID if b.len() == 16 => {
                    out.extend_from_slice(b);
                    Ok(IsNull::No)
                }
                _ => Err(refused("a blob", ty)),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        // Decided per value and type in `to_sql`.
        true
    }

    postgres::types::to_sql_checked!();
}

/// Inserts rows into `table` (`columns`: its column list, `values`: the
/// rows' values, `cols` per row), skipping those whose key is taken: the
/// rows are copied in binary into a temporary staging table shaped like
/// `table` (made once per session), then inserted with one `INSERT …
/// SELECT … ON CONFLICT DO NOTHING`, or, if `optimistic` (inside a
/// transaction), first without the clause under a savepoint, again with it
/// if a key was taken (`crate::database::bulk`). The number inserted.
pub(crate) fn copy_insert(
    client: &mut impl postgres::GenericClient,
    table: &str,
    columns: &str,
    values: &[ValueRef<'_>],
    cols: usize,
    optimistic: bool,
) -> Result<u64> {
    let stage = format!("quanta_stage_{table}");
    // Temporary tables are the session's own, so concurrent writers never
    // share one; ON COMMIT DELETE ROWS empties it should a copy be left.
    client.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) \
         ON COMMIT DELETE ROWS"
    ))?;
    let types: Vec<Type> = client
        .prepare(&format!("SELECT {columns} FROM {stage} LIMIT 0"))?
        .columns()
        .iter()
        .map(|c| c.type_().clone())
        .collect();
    if types.len() != cols || cols == 0 || !values.len().is_multiple_of(cols) {
        return Err(DatabaseError::new(
            DatabaseErrorKind::Other,
            format!(
                "{table} ({columns}): {} values for rows of {cols} columns, {} column types",
                values.len(),
                types.len()
            ),
        )
        .into());
    }
    let writer = client.copy_in(&format!("COPY {stage} ({columns}) FROM STDIN BINARY"))?;
    let mut writer = postgres::binary_copy::BinaryCopyInWriter::new(writer, &types);
    let mut row: Vec<Bind<'_>> = Vec::with_capacity(cols);
    for chunk in values.chunks_exact(cols) {
        row.clear();
        row.extend(chunk.iter().map(|v| Bind(*v)));
        writer.write(&refs(&row))?;
    }
    writer.finish()?;
    let insert = format!("INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage}");
    let mut inserted = None;
    if optimistic {
        client.batch_execute("SAVEPOINT quanta_bulk_insert")?;
        match client.execute(&insert, &[]) {
            Ok(n) => {
                client.batch_execute("RELEASE SAVEPOINT quanta_bulk_insert")?;
                inserted = Some(n);
            }
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => client.batch_execute(
                "ROLLBACK TO SAVEPOINT quanta_bulk_insert; RELEASE SAVEPOINT quanta_bulk_insert",
            )?,
            Err(e) => return Err(e.into()),
        }
    }
    let inserted = match inserted {
        Some(n) => n,
        None => client.execute(&format!("{insert} ON CONFLICT DO NOTHING"), &[])?,
    };
    client.batch_execute(&format!("TRUNCATE {stage}"))?;
    Ok(inserted)
}

fn refused(what: &str, ty: &Type) -> BoxError {
    format!("{what} cannot be bound to a parameter of type {ty}").into()
}

/// A column's bytes as the server sent them (a uuid's 16 bytes).
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// The value of column `index` of `row`, by the column's type.
pub(crate) fn column(row: &postgres::Row, index: usize) -> Result<ValueRef<'_>> {
    // Borrowed, not cloned: this runs for every value read.
    let ty = row.columns().get(index).map(|c| c.type_()).ok_or_else(|| {
        DatabaseError::new(
            DatabaseErrorKind::Other,
            format!("no column {index} in a row of {}", row.len()),
        )
    })?;
    let get = |e: postgres::Error| RegistryError::from(e);
    Ok(match *ty {
        Type::INT8 => opt(
            row.try_get::<_, Option<i64>>(index).map_err(get)?,
            ValueRef::Integer,
        ),
        Type::INT4 => opt(row.try_get::<_, Option<i32>>(index).map_err(get)?, |i| {
            ValueRef::Integer(i.into())
        }),
        Type::INT2 => opt(row.try_get::<_, Option<i16>>(index).map_err(get)?, |i| {
            ValueRef::Integer(i.into())
        }),
        Type::BOOL => opt(row.try_get::<_, Option<bool>>(index).map_err(get)?, |b| {
            ValueRef::Integer(b.into())
        }),
        Type::FLOAT8 => opt(
            row.try_get::<_, Option<f64>>(index).map_err(get)?,
            ValueRef::Real,
        ),
        Type::FLOAT4 => opt(row.try_get::<_, Option<f32>>(index).map_err(get)?, |f| {
            ValueRef::Real(f.into())
        }),
        Type::BYTEA => opt(
            row.try_get::<_, Option<&[u8]>>(index).map_err(get)?,
            ValueRef::Blob,
        ),
        Type::UUID => opt(row.try_get::<_, Option<Raw>>(index).map_err(get)?, |r| {
            ValueRef::Blob(r.0)
        }),
        ref t if <&str as FromSql>::accepts(t) => opt(
            row.try_get::<_, Option<&str>>(index).map_err(get)?,
            ValueRef::Text,
        ),
        ref t => {
            return Err(DatabaseError::new(
                DatabaseErrorKind::Other,
                format!("column {index} is of type {t}, which the registry does not read"),
            )
            .into())
        }
    })
}

fn opt<'a, T>(v: Option<T>, f: impl FnOnce(T) -> ValueRef<'a>) -> ValueRef<'a> {
    v.map_or(ValueRef::Null, f)
}

/// Runs one user-supplied statement in a `READ ONLY` transaction with a
/// statement timeout of `limit`, always rolled back: the server refuses
/// writes, and a query still running at the limit is cancelled
/// ([`RegistryError::TimedOut`]). One statement only: the extended
/// protocol prepares one.
pub(crate) fn run_read_only(
    client: &mut postgres::Client,
    sql: &str,
    limit: Option<std::time::Duration>,
) -> Result<(Vec<String>, Vec<Vec<serde_json::Value>>)> {
    client.batch_execute("BEGIN READ ONLY")?;
    let result = read_only_in_transaction(client, sql, limit);
    client.batch_execute("ROLLBACK")?;
    result
}

fn read_only_in_transaction(
    client: &mut postgres::Client,
    sql: &str,
    limit: Option<std::time::Duration>,
) -> Result<(Vec<String>, Vec<Vec<serde_json::Value>>)> {
    if let Some(limit) = limit {
        // A number of milliseconds, not user text.
        client.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}",
            limit.as_millis().max(1)
        ))?;
    }
    let classify = |e: postgres::Error| match (e.code(), limit) {
        (Some(&SqlState::QUERY_CANCELED), Some(limit)) => RegistryError::TimedOut {
            seconds: limit.as_secs_f64(),
        },
        (Some(&SqlState::READ_ONLY_SQL_TRANSACTION), _) => {
            RegistryError::Invalid("only read-only statements (SELECT) are allowed".into())
        }
        _ => RegistryError::from(e),
    };
    let stmt = client.prepare(sql).map_err(classify)?;
    let names: Vec<String> = stmt
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let rows = client.query(&stmt, &[]).map_err(classify)?;
    if names.is_empty() {
        // Ran (so it is no write, which the READ ONLY transaction refuses)
        // but has no result: only comments (an empty query to the server)
        // or a statement such as SET. Refused as on SQLite.
        return Err(RegistryError::Invalid(
            "the SQL query holds no statement that returns rows: only read-only statements \
             (one SELECT) are allowed"
                .into(),
        ));
    }
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let values = (0..names.len())
            .map(|i| column(row, i).map(ValueRef::to_json))
            .collect::<Result<Vec<_>>>()?;
        out.push(values);
    }
    Ok((names, out))
}

/// The kind of a server error by its SQLSTATE: a lock, a serialization
/// failure or a deadlock is [`DatabaseErrorKind::Busy`] (retry); a lost
/// connection, a full disk or a server shutting down is
/// [`DatabaseErrorKind::Unavailable`].
fn kind_of(e: &postgres::Error) -> DatabaseErrorKind {
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection or the protocol failed.
        return DatabaseErrorKind::Unavailable;
    };
    match *code {
        SqlState::T_R_SERIALIZATION_FAILURE
        | SqlState::T_R_DEADLOCK_DETECTED
        | SqlState::LOCK_NOT_AVAILABLE => DatabaseErrorKind::Busy,
        SqlState::DISK_FULL
        | SqlState::OUT_OF_MEMORY
        | SqlState::ADMIN_SHUTDOWN
        | SqlState::CRASH_SHUTDOWN
        | SqlState::CANNOT_CONNECT_NOW
        | SqlState::QUERY_CANCELED
        | SqlState::READ_ONLY_SQL_TRANSACTION => DatabaseErrorKind::Unavailable,
        _ => DatabaseErrorKind::Other,
    }
}

fn constraint_of(e: &postgres::Error) -> Option<ConstraintViolation> {
    match *e.code()? {
        SqlState::UNIQUE_VIOLATION => Some(ConstraintViolation::Unique),
        SqlState::FOREIGN_KEY_VIOLATION => Some(ConstraintViolation::ForeignKey),
        SqlState::EXCLUSION_VIOLATION => Some(ConstraintViolation::Exclusion),
        _ => None,
    }
}

impl From<postgres::Error> for DatabaseError {
    fn from(e: postgres::Error) -> Self {
        let (kind, constraint) = (kind_of(&e), constraint_of(&e));
        // The server's message is in the error's source: "db error" alone
        // says nothing.
        let mut message = super::connection::with_causes(&e);
        if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
            message.push_str(
                " (on a shared registry each user writes only the collections under \
                 u/<their role>/ and those an administrator granted them with \
                 `quanta collection grant`)",
            );
        }
        let error = DatabaseError::new(kind, message);
        match constraint {
            Some(c) => error.violating(c),
            None => error,
        }
    }
}

impl From<postgres::Error> for RegistryError {
    fn from(e: postgres::Error) -> Self {
        DatabaseError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::numbered_placeholders;

    #[test]
    fn placeholders_are_renumbered_outside_quotes_only() {
        assert_eq!(
            numbered_placeholders("SELECT a FROM t WHERE a = ?1 AND b IN (?2, ?10)"),
            "SELECT a FROM t WHERE a = $1 AND b IN ($2, $10)"
        );
        assert_eq!(
            numbered_placeholders("SELECT '?1', \"?2\" FROM t WHERE c = ?3"),
            "SELECT '?1', \"?2\" FROM t WHERE c = $3"
        );
        // A bare `?` is not a numbered placeholder; `$N` stays as it is.
        assert_eq!(numbered_placeholders("a ? b $4"), "a ? b $4");
    }
}
