//! [`SqlValue`] to and from rusqlite's values.

use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};

use crate::value::SqlValue;

impl ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Self::Null => ValueRef::Null,
            Self::Integer(i) => ValueRef::Integer(*i),
            Self::Real(f) => ValueRef::Real(*f),
            Self::Text(t) => ValueRef::Text(t.as_bytes()),
            Self::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// A value read from a row as JSON, for `quanta sql`: a 16-byte blob is a
/// UUID (the registry's dataset IDs), any other blob its hex digits.
/// (Text that is not UTF-8, which user SQL can return, is shown lossily.)
pub(crate) fn value_to_json(v: ValueRef<'_>) -> serde_json::Value {
    use crate::database::ValueRef as Neutral;
    match v {
        ValueRef::Null => Neutral::Null.to_json(),
        ValueRef::Integer(i) => Neutral::Integer(i).to_json(),
        ValueRef::Real(f) => Neutral::Real(f).to_json(),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => Neutral::Blob(b).to_json(),
    }
}

impl rusqlite::types::FromSql for SqlValue {
    fn column_result(value: ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        Ok(match value {
            ValueRef::Null => Self::Null,
            ValueRef::Integer(i) => Self::Integer(i),
            ValueRef::Real(f) => Self::Real(f),
            ValueRef::Text(t) => Self::Text(
                std::str::from_utf8(t)
                    .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))?
                    .to_string(),
            ),
            ValueRef::Blob(b) => Self::Blob(b.to_vec()),
        })
    }
}
