//! SQL functions over stored regions, registered on every connection the
//! registry opens.
//!
//! `quanta_region_overlaps(a, b)` is 1 when the two region blobs
//! ([`Region::encode`]) share a point, 0 when they do not, and NULL when
//! either is NULL (a record without a region overlaps nothing, and, as with
//! any NULL in SQL, `NOT` of it selects nothing either). A blob that does not
//! decode, or a value that is not a blob, is an SQL error naming the
//! function and the argument: the registry is damaged or the SQL is wrong,
//! and a silent 0 would hide it. Used by the `--where` predicate `OVERLAPS`
//! and by the exact refinement of spatial joins.

use std::sync::Arc;

use quanta_spatial::Region;
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;
use rusqlite::Connection;

use crate::dialect::REGION_OVERLAPS;

/// Registers the region functions on `conn`. Deterministic and free of side
/// effects, so SQLite may use them in indexes, views and triggers too.
pub(crate) fn register_region_functions(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        REGION_OVERLAPS,
        2,
        FunctionFlags::SQLITE_UTF8
            | FunctionFlags::SQLITE_DETERMINISTIC
            | FunctionFlags::SQLITE_INNOCUOUS,
        overlaps,
    )
}

/// Why a value given to a region function is not a region.
#[derive(Debug, thiserror::Error)]
#[error("{function}: argument {position} {problem}")]
struct RegionArgError {
    function: &'static str,
    /// 1-based, as SQL users count.
    position: usize,
    problem: String,
}

fn overlaps(ctx: &Context<'_>) -> rusqlite::Result<Option<bool>> {
    if is_null(ctx, 0) || is_null(ctx, 1) {
        return Ok(None);
    }
    let a = decode(ctx.get_raw(0), 0)?;
    // The second argument is usually a constant (the shape of a `--where`
    // predicate, bound once per statement): SQLite keeps its decoded form
    // between rows as auxiliary data, and drops it after each row when the
    // argument is not constant.
    let b: Arc<Region> = ctx.get_or_create_aux(1, |v| decode(v, 1))?;
    Ok(Some(a.overlaps(&b)))
}

fn is_null(ctx: &Context<'_>, index: usize) -> bool {
    matches!(ctx.get_raw(index), ValueRef::Null)
}

/// Decodes the blob at 0-based argument `index`.
fn decode(value: ValueRef<'_>, index: usize) -> rusqlite::Result<Region> {
    let problem = match value {
        ValueRef::Blob(bytes) => match Region::decode(bytes) {
            Ok(region) => return Ok(region),
            Err(e) => format!("is not a readable region: {e}"),
        },
        ValueRef::Integer(_) => "is an integer, not a region blob".into(),
        ValueRef::Real(_) => "is a real, not a region blob".into(),
        ValueRef::Text(_) => "is text, not a region blob".into(),
        ValueRef::Null => "is NULL".into(),
    };
    Err(rusqlite::Error::UserFunctionError(Box::new(
        RegionArgError {
            function: REGION_OVERLAPS,
            position: index + 1,
            problem,
        },
    )))
}

#[cfg(test)]
mod tests {
    use quanta_spatial::{Circle, ConvexPolygon};
    use rusqlite::types::Value;

    use super::*;

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        register_region_functions(&conn).unwrap();
        conn
    }

    fn call(conn: &Connection, a: Value, b: Value) -> rusqlite::Result<Option<i64>> {
        conn.query_row("SELECT quanta_region_overlaps(?1, ?2)", [a, b], |r| {
            r.get(0)
        })
    }

    fn circle(ra: f64, dec: f64, radius: f64) -> Value {
        let c = Circle::from_lonlat_deg(ra, dec, radius).unwrap();
        Value::Blob(Region::Circle(c).encode())
    }

    #[test]
    fn null_arguments_give_null_without_decoding_the_other() {
        let conn = conn();
        let junk = Value::Blob(vec![0xff; 3]);
        assert_eq!(call(&conn, Value::Null, junk.clone()).unwrap(), None);
        assert_eq!(call(&conn, junk, Value::Null).unwrap(), None);
    }

    fn error_of(conn: &Connection, a: Value, b: Value) -> String {
        match call(conn, a.clone(), b.clone()) {
            Err(e) => e.to_string(),
            Ok(v) => panic!("({a:?}, {b:?}) gave {v:?}, expected an error"),
        }
    }

    #[test]
    fn values_that_are_not_blobs_are_sql_errors_naming_the_argument() {
        let conn = conn();
        for (value, noun) in [
            (Value::Text("x".into()), "text"),
            (Value::Integer(2), "an integer"),
            (Value::Real(2.5), "a real"),
        ] {
            let message = error_of(&conn, value, Value::Integer(1));
            assert_eq!(
                message,
                format!("quanta_region_overlaps: argument 1 is {noun}, not a region blob")
            );
        }
    }

    // Needs quanta-spatial's decoding (implemented in parallel).
    #[test]
    fn damaged_blobs_are_sql_errors_naming_the_argument() {
        let conn = conn();
        for junk in [vec![], vec![0xff; 9], vec![0; 2]] {
            let message = error_of(&conn, Value::Blob(junk.clone()), circle(1.0, 2.0, 3.0));
            assert!(
                message.starts_with("quanta_region_overlaps: argument 1 is not a readable region"),
                "{junk:?}: {message}"
            );
            let message = error_of(&conn, circle(1.0, 2.0, 3.0), Value::Blob(junk.clone()));
            assert!(
                message.starts_with("quanta_region_overlaps: argument 2 is not a readable region"),
                "{junk:?}: {message}"
            );
        }
        let message = error_of(&conn, circle(1.0, 2.0, 3.0), Value::Text("x".into()));
        assert!(message.contains("argument 2 is text"), "{message}");
    }

    #[test]
    fn function_is_registered_deterministic() {
        // A deterministic function may appear in an index expression;
        // SQLite refuses a non-deterministic one there.
        let conn = conn();
        conn.execute_batch(
            "CREATE TABLE r (a BLOB, b BLOB);
             CREATE INDEX r_overlap ON r (quanta_region_overlaps(a, b));",
        )
        .unwrap();
    }

    // Needs quanta-spatial's geometry (implemented in parallel).
    #[test]
    fn overlaps_circles_and_polygons_with_a_constant_second_argument() {
        let conn = conn();
        let square =
            ConvexPolygon::from_lonlat_deg(&[(10.0, -1.0), (12.0, -1.0), (12.0, 1.0), (10.0, 1.0)])
                .unwrap();
        let square = Value::Blob(Region::Polygon(square).encode());
        conn.execute_batch("CREATE TABLE r (id INTEGER, region BLOB)")
            .unwrap();
        let mut insert = conn.prepare("INSERT INTO r VALUES (?1, ?2)").unwrap();
        insert.execute((1, square)).unwrap();
        insert.execute((2, circle(100.0, 45.0, 1.0))).unwrap();
        insert.execute((3, Value::Null)).unwrap();
        insert.execute((4, circle(11.0, 0.0, 0.0))).unwrap();
        let ids = |probe: Value| -> Vec<i64> {
            let mut stmt = conn
                .prepare("SELECT id FROM r WHERE quanta_region_overlaps(region, ?1) ORDER BY id")
                .unwrap();
            let rows = stmt.query_map([probe], |r| r.get(0)).unwrap();
            rows.collect::<rusqlite::Result<_>>().unwrap()
        };
        assert_eq!(ids(circle(11.0, 0.0, 0.5)), vec![1, 4]);
        assert_eq!(ids(circle(100.0, 46.5, 0.6)), vec![2]);
        assert_eq!(ids(circle(200.0, -30.0, 0.0)), Vec::<i64>::new());
        let negated: Vec<i64> = conn
            .prepare("SELECT id FROM r WHERE NOT quanta_region_overlaps(region, ?1) ORDER BY id")
            .unwrap()
            .query_map([circle(100.0, 45.0, 0.0)], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(negated, vec![1, 4], "NULL regions are in neither");
    }
}
