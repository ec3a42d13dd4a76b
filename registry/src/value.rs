//! The values the registry binds into its statements and reads back from
//! user SQL, in quanta's own type: no database driver's type crosses the
//! registry's public interface.

/// One SQL value: a `--where` bind parameter (`:t` in `exposure_time > :t`)
/// or a parameter the registry binds itself. The five storage classes every
/// backend has (SQLite's own; PostgreSQL's `int8`, `float8`, `text`,
/// `bytea` and NULL).
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl SqlValue {
    /// A bind value as a user writes it on the command line: an integer if
    /// it reads as one, else a floating-point number, else text.
    pub fn parse_cli(text: &str) -> Self {
        if let Ok(i) = text.parse::<i64>() {
            Self::Integer(i)
        } else if let Ok(f) = text.parse::<f64>() {
            Self::Real(f)
        } else {
            Self::Text(text.to_string())
        }
    }
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        Self::Integer(v)
    }
}

impl From<f64> for SqlValue {
    fn from(v: f64) -> Self {
        Self::Real(v)
    }
}

impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        Self::Text(v.to_string())
    }
}

impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<Vec<u8>> for SqlValue {
    fn from(v: Vec<u8>) -> Self {
        Self::Blob(v)
    }
}

impl From<bool> for SqlValue {
    fn from(v: bool) -> Self {
        Self::Integer(i64::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::SqlValue;

    #[test]
    fn command_line_values_take_the_narrowest_type_that_reads_them() {
        assert_eq!(SqlValue::parse_cli("42"), SqlValue::Integer(42));
        assert_eq!(SqlValue::parse_cli("-3"), SqlValue::Integer(-3));
        assert_eq!(SqlValue::parse_cli("2.5"), SqlValue::Real(2.5));
        assert_eq!(SqlValue::parse_cli("1e3"), SqlValue::Real(1000.0));
        assert_eq!(SqlValue::parse_cli("r"), SqlValue::Text("r".into()));
        assert_eq!(SqlValue::parse_cli(""), SqlValue::Text(String::new()));
    }
}
