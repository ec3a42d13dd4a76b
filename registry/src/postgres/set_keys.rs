//! PostgreSQL's set-wise foreign keys: the references that the bulk
//! writers (ingest, import, merge) add rows to by the ten thousand,
//! checked once per statement instead of once per row.
//!
//! A foreign key is checked by a trigger per row and key, each an executor
//! started for one `SELECT … FOR KEY SHARE` of the parent row: with about
//! ten dimension keys that was two thirds of the server's time per dataset
//! row (schema version 8 replaced those), and the keys left after it (a
//! dataset's type and RUN, a quantum's RUN, an input link's quantum) were
//! still a third of the merge's server time (version 9 replaced them;
//! benches/postgres/README.md). Instead, for every key of [`set_keys`]:
//!
//! - after each statement that inserts rows into the referencing (child)
//!   table, one trigger reads the statement's new rows (a transition
//!   table) once per key, takes the distinct parent keys, locks each parent
//!   row `FOR KEY SHARE` (as a foreign key does: a concurrent delete or key
//!   update of the parent waits for this transaction) and fails the
//!   statement with SQLSTATE 23503 (`foreign_key_violation`, as a foreign
//!   key would) naming the first key without a parent;
//! - an update that sets a child's key columns (rare: the registry writes
//!   none) is checked per row by the same rules;
//! - after each statement that deletes parent rows or updates them, a
//!   trigger on the parent's table acts on the keys that the statement
//!   removed and no parent row holds any more: it refuses (23503) to leave
//!   a child naming one ([`OnDelete::Restrict`], and every update), or
//!   deletes those children ([`OnDelete::Cascade`]). Under READ COMMITTED
//!   (the registry's level) its query sees every child committed before
//!   it, and the inserter's `FOR KEY SHARE` lock makes a delete racing an
//!   uncommitted insert wait for it.
//!
//! The functions are `SECURITY DEFINER` with the search path they were
//! made with: a non-owner role (row-level security, `crate::access`) may
//! lack the `UPDATE` privilege `FOR KEY SHARE` needs and must see every
//! child, as the server's own foreign-key triggers run as the owner.
//! `TRUNCATE` of a parent table is not guarded (nothing in quanta
//! truncates; the owner alone may). The other references of the schema
//! (memberships, chains, provenance rows: written a few at a time) stay
//! foreign keys.

use quanta_core::DimensionUniverse;

use crate::schema::{dataset_dimension_keys, quote};

/// What deleting a parent row does to the children naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnDelete {
    /// The delete is refused while a child names the row.
    Restrict,
    /// The children go with it (`ON DELETE CASCADE`).
    Cascade,
}

/// A reference checked set-wise: the columns `from` of `child` name the
/// row of `parent` whose columns `to` hold the same values (in order);
/// a row whose `from` columns are NULL names nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetKey {
    pub(crate) child: &'static str,
    pub(crate) from: Vec<String>,
    pub(crate) parent: String,
    pub(crate) to: Vec<String>,
    pub(crate) on_delete: OnDelete,
}

impl SetKey {
    fn by_id(child: &'static str, column: &str, parent: &str, on_delete: OnDelete) -> Self {
        Self {
            child,
            from: vec![column.to_string()],
            parent: parent.to_string(),
            to: vec!["id".to_string()],
            on_delete,
        }
    }
}

/// The tables whose references are all set-wise, in the order their DDL
/// creates them.
pub(crate) const CHILD_TABLES: [&str; 3] = ["dataset", "quantum", "quantum_input"];

/// Every set-wise reference of the schema: `dataset`'s to its dimension
/// records, dataset type and RUN; a quantum's to its RUN; an input link's
/// to its quantum (deleted with it).
pub(crate) fn set_keys(universe: &DimensionUniverse) -> Vec<SetKey> {
    let mut keys: Vec<SetKey> = dataset_dimension_keys(universe)
        .into_iter()
        .map(|k| SetKey {
            child: "dataset",
            from: k.from,
            parent: k.parent,
            to: k.to,
            on_delete: OnDelete::Restrict,
        })
        .collect();
    keys.extend([
        SetKey::by_id(
            "dataset",
            "dataset_type_id",
            "dataset_type",
            OnDelete::Restrict,
        ),
        SetKey::by_id("dataset", "run_id", "collection", OnDelete::Restrict),
        SetKey::by_id("quantum", "run_id", "collection", OnDelete::Restrict),
        SetKey::by_id("quantum_input", "quantum_id", "quantum", OnDelete::Cascade),
    ]);
    keys
}

/// Checks that every key of `source` (a query whose columns are named as
/// the key's `from` columns) names a parent row, locking the rows.
fn check_statement(key: &SetKey, source: &str) -> String {
    let matches: Vec<String> = key
        .from
        .iter()
        .zip(&key.to)
        .map(|(f, t)| format!("p.{} = k.{}", quote(t), quote(f)))
        .collect();
    format!(
        "  SELECT k::text INTO missing FROM ({source}) k\n    \
         LEFT JOIN LATERAL (SELECT 1 AS found FROM {parent} p WHERE {matches} FOR KEY SHARE OF p) l ON true\n    \
         WHERE l.found IS NULL LIMIT 1;\n{}",
        refuse_if_missing(
            &format!(
                "insert or update on table \"{}\" names a missing {} row: ({}) = %",
                key.child,
                key.parent,
                key.from.join(", ")
            ),
            key.child
        ),
        parent = quote(&key.parent),
        matches = matches.join(" AND "),
    )
}

/// Fails the statement as a foreign key would (SQLSTATE 23503, naming
/// `table`) when the function's `missing` was found: `message`'s `%` is it.
fn refuse_if_missing(message: &str, table: &str) -> String {
    format!(
        "  IF missing IS NOT NULL THEN\n    \
         RAISE EXCEPTION '{message}', missing\n      \
         USING ERRCODE = 'foreign_key_violation', TABLE = '{table}';\n  \
         END IF;\n"
    )
}

/// Where [`keys_of`] reads the keys.
enum KeySource {
    /// The statement's new rows (the transition table): distinct keys.
    NewRows,
    /// The row of a row-level trigger.
    NewRow,
}

/// The non-NULL keys of the rows of `source`.
fn keys_of(key: &SetKey, source: KeySource) -> String {
    let (select, row, from) = match source {
        KeySource::NewRows => ("SELECT DISTINCT", "n", " FROM new_rows n"),
        KeySource::NewRow => ("SELECT", "NEW", ""),
    };
    let columns: Vec<String> = key
        .from
        .iter()
        .map(|c| format!("{row}.{0} AS {0}", quote(c)))
        .collect();
    let present: Vec<String> = key
        .from
        .iter()
        .map(|c| format!("{row}.{} IS NOT NULL", quote(c)))
        .collect();
    format!(
        "{select} {}{from} WHERE {}",
        columns.join(", "),
        present.join(" AND ")
    )
}

fn function(name: &str, body: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {name}() RETURNS trigger\n\
         LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$\n\
         DECLARE missing text;\n\
         BEGIN\n{body}  RETURN NULL;\nEND\n$fn$;\n"
    )
}

/// The functions and triggers (PostgreSQL; run after every table of
/// [`CHILD_TABLES`] and their parents exist, again on an existing
/// registry: each trigger is dropped first).
pub(crate) fn set_keys_ddl(universe: &DimensionUniverse) -> String {
    let keys = set_keys(universe);
    let mut ddl = String::new();
    for child in CHILD_TABLES {
        let of_child: Vec<&SetKey> = keys.iter().filter(|k| k.child == child).collect();
        ddl.push_str(&child_checks_ddl(child, &of_child));
    }
    for key in &keys {
        ddl.push_str(&parent_guard_ddl(key));
    }
    ddl
}

/// The insert and update checks of one child table's keys.
fn child_checks_ddl(child: &str, keys: &[&SetKey]) -> String {
    let insert_function = format!("quanta_{child}_parents");
    let update_function = format!("quanta_{child}_parents_row");
    let on_insert: String = keys
        .iter()
        .map(|k| check_statement(k, &keys_of(k, KeySource::NewRows)))
        .collect();
    let on_update: String = keys
        .iter()
        .map(|k| check_statement(k, &keys_of(k, KeySource::NewRow)))
        .collect();
    let mut columns: Vec<&String> = keys.iter().flat_map(|k| &k.from).collect();
    columns.sort();
    columns.dedup();
    let columns: Vec<String> = columns.into_iter().map(|c| quote(c)).collect();
    format!(
        "{}{}\
         DROP TRIGGER IF EXISTS {insert_function} ON {child};\n\
         CREATE TRIGGER {insert_function} AFTER INSERT ON {child}\n  \
         REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {insert_function}();\n\
         DROP TRIGGER IF EXISTS {update_function} ON {child};\n\
         CREATE TRIGGER {update_function} AFTER UPDATE OF {} ON {child}\n  \
         FOR EACH ROW EXECUTE FUNCTION {update_function}();\n",
        function(&insert_function, &on_insert),
        function(&update_function, &on_update),
        columns.join(", ")
    )
}

/// The guard on a parent's table: after a delete or an update, no child
/// names a key that the statement removed and no parent row holds; the
/// children of deleted rows are deleted instead where the key cascades.
fn parent_guard_ddl(key: &SetKey) -> String {
    let old_keys: Vec<String> = key.to.iter().map(|c| format!("o.{}", quote(c))).collect();
    let still_there: Vec<String> = key
        .to
        .iter()
        .map(|c| format!("p.{0} = o.{0}", quote(c)))
        .collect();
    let used: Vec<String> = key
        .from
        .iter()
        .zip(&key.to)
        .map(|(f, t)| format!("d.{} = o.{}", quote(f), quote(t)))
        .collect();
    let parent = quote(&key.parent);
    let child = key.child;
    let removed = format!(
        "(SELECT DISTINCT {old} FROM old_rows o) o\n    \
         WHERE NOT EXISTS (SELECT 1 FROM {parent} p WHERE {still})",
        old = old_keys.join(", "),
        still = still_there.join(" AND "),
    );
    let restrict = format!(
        "  SELECT o::text INTO missing FROM {removed}\n      \
         AND EXISTS (SELECT 1 FROM {child} d WHERE {used}) LIMIT 1;\n{}",
        refuse_if_missing(
            &format!(
                "update or delete on table {} removes the row ({}) = %, which a {child} row names",
                key.parent,
                key.to.join(", ")
            ),
            &key.parent
        ),
        used = used.join(" AND "),
    );
    let guard = format!("quanta_{child}_parent_guard_{}", key.parent);
    let mut ddl = function(&guard, &restrict);
    let on_delete = match key.on_delete {
        OnDelete::Restrict => guard.clone(),
        OnDelete::Cascade => {
            let cascade = format!("quanta_{child}_parent_cascade_{}", key.parent);
            ddl.push_str(&function(
                &cascade,
                &format!(
                    "  DELETE FROM {child} d USING {removed}\n      AND {};\n",
                    used.join(" AND ")
                ),
            ));
            cascade
        }
    };
    for (event, transition, function) in [
        ("DELETE", "OLD TABLE AS old_rows", &on_delete),
        (
            "UPDATE",
            "OLD TABLE AS old_rows NEW TABLE AS new_rows",
            &guard,
        ),
    ] {
        let trigger = format!("quanta_{child}_guard_{}", event.to_ascii_lowercase());
        ddl.push_str(&format!(
            "DROP TRIGGER IF EXISTS {trigger} ON {parent};\n\
             CREATE TRIGGER {trigger} AFTER {event} ON {parent}\n  \
             REFERENCING {transition} FOR EACH STATEMENT EXECUTE FUNCTION {function}();\n"
        ));
    }
    ddl
}

/// The names of a child table's foreign keys to one parent table, which
/// the migrations to versions 8 and 9 drop (`$1` the child, `$2` the
/// parent).
pub(crate) const FOREIGN_KEYS_QUERY: &str = "SELECT c.conname FROM pg_constraint c \
     WHERE c.conrelid = to_regclass(?1) AND c.contype = 'f' AND c.confrelid = to_regclass(?2) \
     ORDER BY c.conname";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_set_key_is_checked_on_insert_and_guarded_on_its_parent() {
        let u = DimensionUniverse::default_universe();
        let ddl = set_keys_ddl(&u);
        let keys = set_keys(&u);
        assert!(keys.len() >= 12, "{keys:?}");
        for key in &keys {
            let parent = quote(&key.parent);
            assert!(
                ddl.contains(&format!("FROM {parent} p WHERE")),
                "{parent} not checked:\n{ddl}"
            );
            assert!(
                ddl.contains(&format!(
                    "CREATE TRIGGER quanta_{}_guard_delete AFTER DELETE ON {parent}\n  \
                     REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT",
                    key.child
                )),
                "{parent} not guarded for {}:\n{ddl}",
                key.child
            );
        }
        for child in CHILD_TABLES {
            assert!(ddl.contains(&format!(
                "AFTER INSERT ON {child}\n  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"
            )));
        }
        // Two checks per child table, a guard per key, a cascade per
        // cascading key.
        let cascades = keys
            .iter()
            .filter(|k| k.on_delete == OnDelete::Cascade)
            .count();
        assert_eq!(cascades, 1);
        assert_eq!(
            ddl.matches("SECURITY DEFINER SET search_path FROM CURRENT")
                .count(),
            2 * CHILD_TABLES.len() + keys.len() + cascades
        );
        // The input links of a deleted quantum go with it.
        assert!(
            ddl.contains("DELETE FROM quantum_input d USING"),
            "no cascade:\n{ddl}"
        );
    }
}
