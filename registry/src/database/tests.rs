//! The database interface on a real SQLite file: values round-trip,
//! wrong column types are errors that say what was found, transactions
//! commit or roll back.

use super::*;
use crate::error::RegistryError;

fn database() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("db.sqlite3")).unwrap();
    let db = Database::from_sqlite(conn);
    db.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, f REAL, s TEXT, b BLOB)")
        .unwrap();
    (dir, db)
}

#[test]
fn every_kind_of_value_reads_back_as_it_was_bound() {
    let (_dir, db) = database();
    let id = uuid::Uuid::now_v7();
    let mut insert = db
        .prepare_keyed_insert("INSERT INTO t (i, f, s, b) VALUES (?1, ?2, ?3, ?4)", "id")
        .unwrap();
    let rowid = insert
        .insert(&[&-7i64, &2.5f64, &"r band", &id])
        .unwrap()
        .unwrap();
    let none: Option<&str> = None;
    let second = insert
        .insert(&[&true, &3i32, &none, &vec![1u8, 2, 3]])
        .unwrap()
        .unwrap();
    assert_eq!(second, rowid + 1);
    drop(insert);
    let rows = db
        .query_rows("SELECT i, f, s, b FROM t ORDER BY id", &[], |r| {
            Ok((
                r.get::<i64>(0)?,
                r.get::<f64>(1)?,
                r.get::<Option<String>>(2)?,
                r.get::<Vec<u8>>(3)?,
            ))
        })
        .unwrap();
    assert_eq!(
        rows,
        vec![
            (-7, 2.5, Some("r band".to_string()), id.as_bytes().to_vec()),
            (1, 3.0, None, vec![1, 2, 3]),
        ]
    );
    let read: uuid::Uuid = db
        .query_row("SELECT b FROM t WHERE id = ?1", &[&rowid], |r| r.get(0))
        .unwrap()
        .unwrap();
    assert_eq!(read, id);
    let any: Vec<SqlValue> = db
        .query_row("SELECT i, f, s, b FROM t WHERE id = ?1", &[&second], |r| {
            (0..4).map(|c| r.get(c)).collect()
        })
        .unwrap()
        .unwrap();
    assert_eq!(
        any,
        vec![
            SqlValue::Integer(1),
            SqlValue::Real(3.0),
            SqlValue::Null,
            SqlValue::Blob(vec![1, 2, 3])
        ]
    );
}

#[test]
fn a_keyed_insert_that_changes_nothing_has_no_key() {
    let (_dir, db) = database();
    db.execute_batch("CREATE UNIQUE INDEX t_s ON t (s)")
        .unwrap();
    let mut insert = db
        .prepare_keyed_insert("INSERT INTO t (s) VALUES (?1) ON CONFLICT DO NOTHING", "id")
        .unwrap();
    let first = insert.insert(&[&"a"]).unwrap();
    assert!(first.is_some());
    assert_eq!(insert.insert(&[&"a"]).unwrap(), None);
    assert_eq!(insert.insert(&[&"b"]).unwrap(), first.map(|k| k + 1));
}

#[test]
fn a_column_of_another_type_is_an_error_naming_the_column_and_its_value() {
    let (_dir, db) = database();
    db.execute("INSERT INTO t (i, s) VALUES (?1, ?2)", &[&1i64, &"x"])
        .unwrap();
    let err = db
        .query_row("SELECT i, s FROM t", &[], |r| r.get::<i64>(1))
        .unwrap_err();
    assert!(matches!(err, RegistryError::Sql(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("column 1 holds text, where an integer was expected"),
        "{text}"
    );
    let null = db
        .query_row("SELECT f FROM t", &[], |r| r.get::<f64>(0))
        .unwrap_err();
    assert!(null.to_string().contains("column 0 holds NULL"), "{null}");
}

#[test]
fn no_row_is_none_and_a_scan_stops_when_asked() {
    let (_dir, db) = database();
    let missing = db
        .query_row("SELECT i FROM t WHERE id = ?1", &[&99i64], |r| {
            r.get::<i64>(0)
        })
        .unwrap();
    assert_eq!(missing, None);
    for i in 0..10i64 {
        db.execute("INSERT INTO t (i) VALUES (?1)", &[&i]).unwrap();
    }
    let mut seen = Vec::new();
    db.for_each_row("SELECT i FROM t ORDER BY i", &[], |r| {
        seen.push(r.get::<i64>(0)?);
        Ok(seen.len() < 3)
    })
    .unwrap();
    assert_eq!(seen, vec![0, 1, 2]);
}

#[test]
fn a_transaction_commits_or_rolls_back_when_dropped() {
    let (_dir, db) = database();
    let count = |db: &Database| {
        db.query_row("SELECT count(*) FROM t", &[], |r| r.get::<i64>(0))
            .unwrap()
            .unwrap()
    };
    {
        let tx = db.transaction().unwrap();
        tx.execute("INSERT INTO t (i) VALUES (1)", &[]).unwrap();
        assert_eq!(count(&tx), 1);
        // Dropped without commit.
    }
    assert_eq!(count(&db), 0);
    let tx = db.transaction().unwrap();
    tx.execute("INSERT INTO t (i) VALUES (2)", &[]).unwrap();
    tx.commit().unwrap();
    assert_eq!(count(&db), 1);
    // A statement that fails inside leaves the transaction to its owner.
    let tx = db.transaction().unwrap();
    tx.execute("INSERT INTO t (i) VALUES (3)", &[]).unwrap();
    assert!(tx.execute("INSERT INTO nowhere VALUES (1)", &[]).is_err());
    drop(tx);
    assert_eq!(count(&db), 1);
    assert!(db.sqlite().is_autocommit());
}
