//! What differs in the SQL text the registry writes for each backend, and
//! the parameters of a statement numbered in that text.
//!
//! Statements are built from trusted fragments and placeholders; every
//! value, from the registry or from a user, is a parameter. A placeholder is
//! numbered (`?3` in SQLite, `$3` in PostgreSQL), so fragments may be
//! written in any order: a subquery in the FROM clause may bind its values
//! after the WHERE clause bound its own.

use crate::database::Param;
use crate::value::SqlValue;

/// The SQL dialect of a registry backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The name of the SQL function every backend provides that tells whether
/// two stored regions overlap (1 or true), do not (0 or false), or NULL
/// when either is NULL.
pub const REGION_OVERLAPS: &str = "quanta_region_overlaps";

impl Dialect {
    /// Appends the placeholder of the `index`-th parameter (1-based).
    pub fn push_placeholder(self, sql: &mut String, index: usize) {
        use std::fmt::Write;
        let marker = match self {
            Self::Sqlite => '?',
            Self::Postgres => '$',
        };
        write!(sql, "{marker}{index}").expect("writing to a String");
    }

    /// The last byte of the UUID in `column`, comparable with a one-byte
    /// blob parameter: SQLite stores UUIDs as 16-byte blobs, PostgreSQL as
    /// `uuid` (whose binary form `uuid_send` gives).
    pub fn uuid_last_byte(self, column: &str) -> String {
        match self {
            Self::Sqlite => format!("substr({column}, 16, 1)"),
            Self::Postgres => format!("substring(uuid_send({column}) from 16 for 1)"),
        }
    }

    /// A condition that holds when the boolean `column` is true. SQLite
    /// stores booleans as integers; PostgreSQL has a boolean type.
    pub fn is_true(self, column: &str) -> String {
        match self {
            Self::Sqlite => format!("({column} <> 0)"),
            Self::Postgres => format!("({column})"),
        }
    }
}

/// The parameters of one statement, numbered in the order they are bound.
#[derive(Debug, Clone)]
pub struct Parameters {
    dialect: Dialect,
    values: Vec<SqlValue>,
}

impl Parameters {
    pub fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            values: Vec::new(),
        }
    }

    /// The values as the database interface binds them.
    pub(crate) fn bound(&self) -> Vec<&dyn Param> {
        self.values.iter().map(|v| v as &dyn Param).collect()
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Binds `value` and appends its placeholder to `sql`.
    pub fn push(&mut self, sql: &mut String, value: SqlValue) {
        self.values.push(value);
        self.dialect.push_placeholder(sql, self.values.len());
    }

    /// Binds `value` and returns its placeholder.
    pub fn bind(&mut self, value: SqlValue) -> String {
        let mut sql = String::new();
        self.push(&mut sql, value);
        sql
    }

    /// The bound values, in placeholder order.
    pub fn values(&self) -> &[SqlValue] {
        &self.values
    }

    pub fn into_values(self) -> Vec<SqlValue> {
        self.values
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_binding_order_in_each_dialect() {
        for (dialect, expected) in [
            (Dialect::Sqlite, "a = ?1 AND b IN (?2, ?3)"),
            (Dialect::Postgres, "a = $1 AND b IN ($2, $3)"),
        ] {
            let mut params = Parameters::new(dialect);
            let mut sql = format!("a = {}", params.bind(7.into()));
            sql.push_str(" AND b IN (");
            params.push(&mut sql, "x".into());
            sql.push_str(", ");
            params.push(&mut sql, SqlValue::Null);
            sql.push(')');
            assert_eq!(sql, expected);
            assert_eq!(
                params.values(),
                [
                    SqlValue::Integer(7),
                    SqlValue::Text("x".into()),
                    SqlValue::Null
                ]
            );
        }
    }

    #[test]
    fn booleans_are_integers_in_sqlite_and_booleans_in_postgres() {
        assert_eq!(Dialect::Sqlite.is_true("t.x"), "(t.x <> 0)");
        assert_eq!(Dialect::Postgres.is_true("t.x"), "(t.x)");
    }
}
