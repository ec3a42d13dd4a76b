//! PostgreSQL's set-wise check that every `dataset` row's dimension
//! records exist, in place of a foreign key per dimension column.
//!
//! A foreign key is checked by a trigger per row and key: with about ten
//! dimension keys that was two thirds of the server's time per dataset row
//! (benches/postgres/README.md). Instead, from schema version 8:
//!
//! - after each statement that inserts datasets, one trigger reads the
//!   statement's new rows (a transition table) once per key, takes the
//!   distinct parent keys, locks each parent record `FOR KEY SHARE` (as a
//!   foreign key does: a concurrent delete or key update of the parent
//!   waits for this transaction) and fails the statement with SQLSTATE
//!   23503 (`foreign_key_violation`, as a foreign key would) naming the
//!   first key without a record;
//! - an update that sets a dataset's dimension columns (rare: the registry
//!   writes none) is checked per row by the same rules;
//! - after each statement that deletes dimension records or updates them,
//!   a trigger on the dimension's table refuses (23503) to leave a dataset
//!   without its record: a key that the statement removed and no record
//!   holds any more must not be named by a dataset. Under READ COMMITTED
//!   (the registry's level) its query sees every dataset committed before
//!   it, and the inserter's `FOR KEY SHARE` lock makes a delete racing an
//!   uncommitted insert wait for it.
//!
//! The functions are `SECURITY DEFINER` with the search path they were
//! made with: a non-owner role (row-level security, `crate::access`) may
//! lack the `UPDATE` privilege `FOR KEY SHARE` needs and must see every
//! dataset, as the server's own foreign-key triggers run as the owner.
//! `TRUNCATE` of a dimension table is not guarded (nothing in quanta
//! truncates; the owner alone may).

use quanta_core::DimensionUniverse;

use crate::schema::{dataset_dimension_keys, quote, DimensionKey};

/// The trigger function checking `dataset` rows, on inserts.
const INSERT_FUNCTION: &str = "quanta_dataset_parents";
/// The per-row function checking updated dimension columns.
const UPDATE_FUNCTION: &str = "quanta_dataset_parents_row";

/// The guard function of a dimension's table.
fn guard_function(key: &DimensionKey) -> String {
    format!("quanta_dataset_parent_guard_{}", key.parent)
}

/// Checks that every key of `source` (a query whose columns are named as
/// the key's `from` columns) names a record, locking the records.
fn check_statement(key: &DimensionKey, source: &str) -> String {
    let matches: Vec<String> = key
        .from
        .iter()
        .zip(&key.to)
        .map(|(f, t)| format!("p.{} = k.{}", quote(t), quote(f)))
        .collect();
    format!(
        "  SELECT k::text INTO missing FROM ({source}) k\n    \
         LEFT JOIN LATERAL (SELECT 1 AS found FROM {parent} p WHERE {matches} FOR KEY SHARE OF p) l ON true\n    \
         WHERE l.found IS NULL LIMIT 1;\n  \
         IF missing IS NOT NULL THEN\n    \
         RAISE EXCEPTION 'insert or update on table \"dataset\" names a missing {parent} record: ({from}) = %', missing\n      \
         USING ERRCODE = 'foreign_key_violation', TABLE = 'dataset';\n  \
         END IF;\n",
        parent = quote(&key.parent),
        matches = matches.join(" AND "),
        from = key.from.join(", "),
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
fn keys_of(key: &DimensionKey, source: KeySource) -> String {
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

/// The functions and triggers (PostgreSQL; run after every dimension table
/// and `dataset` exist, again on an existing registry: each trigger is
/// dropped first).
pub(crate) fn dataset_parents_ddl(universe: &DimensionUniverse) -> String {
    let keys = dataset_dimension_keys(universe);
    let mut ddl = String::new();
    let on_insert: String = keys
        .iter()
        .map(|k| check_statement(k, &keys_of(k, KeySource::NewRows)))
        .collect();
    ddl.push_str(&function(INSERT_FUNCTION, &on_insert));
    let on_update: String = keys
        .iter()
        .map(|k| check_statement(k, &keys_of(k, KeySource::NewRow)))
        .collect();
    ddl.push_str(&function(UPDATE_FUNCTION, &on_update));
    let mut columns: Vec<String> = keys.iter().flat_map(|k| k.from.clone()).collect();
    columns.sort();
    columns.dedup();
    ddl.push_str(&format!(
        "DROP TRIGGER IF EXISTS quanta_dataset_parents ON dataset;\n\
         CREATE TRIGGER quanta_dataset_parents AFTER INSERT ON dataset\n  \
         REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {INSERT_FUNCTION}();\n\
         DROP TRIGGER IF EXISTS quanta_dataset_parents_row ON dataset;\n\
         CREATE TRIGGER quanta_dataset_parents_row AFTER UPDATE OF {} ON dataset\n  \
         FOR EACH ROW EXECUTE FUNCTION {UPDATE_FUNCTION}();\n",
        columns
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for key in &keys {
        ddl.push_str(&guard_ddl(key));
    }
    ddl
}

/// The guard on a dimension's table: after a delete or an update, no
/// dataset names a key that the statement removed and no record holds.
fn guard_ddl(key: &DimensionKey) -> String {
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
    let name = guard_function(key);
    let body = format!(
        "  SELECT o::text INTO missing FROM (SELECT DISTINCT {old} FROM old_rows o) o\n    \
         WHERE NOT EXISTS (SELECT 1 FROM {parent} p WHERE {still})\n      \
         AND EXISTS (SELECT 1 FROM dataset d WHERE {used}) LIMIT 1;\n  \
         IF missing IS NOT NULL THEN\n    \
         RAISE EXCEPTION 'update or delete on table {parent_text} removes the record ({to}) = %, which a dataset names', missing\n      \
         USING ERRCODE = 'foreign_key_violation', TABLE = '{parent_text}';\n  \
         END IF;\n",
        old = old_keys.join(", "),
        still = still_there.join(" AND "),
        used = used.join(" AND "),
        parent_text = key.parent,
        to = key.to.join(", "),
    );
    let mut ddl = function(&name, &body);
    for (event, transition) in [
        ("DELETE", "OLD TABLE AS old_rows"),
        ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    ] {
        let trigger = format!("quanta_dataset_guard_{}", event.to_ascii_lowercase());
        ddl.push_str(&format!(
            "DROP TRIGGER IF EXISTS {trigger} ON {parent};\n\
             CREATE TRIGGER {trigger} AFTER {event} ON {parent}\n  \
             REFERENCING {transition} FOR EACH STATEMENT EXECUTE FUNCTION {name}();\n"
        ));
    }
    ddl
}

/// The names of the `dataset` table's foreign keys to dimension tables
/// (schema versions before 8), which the migration drops: every foreign
/// key of `dataset` except those to `dataset_type` and `collection`.
pub(crate) const DIMENSION_FOREIGN_KEYS_QUERY: &str = "SELECT c.conname FROM pg_constraint c \
     WHERE c.conrelid = to_regclass('dataset') AND c.contype = 'f' \
     AND c.confrelid NOT IN (to_regclass('dataset_type'), to_regclass('collection')) \
     ORDER BY c.conname";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dimension_key_is_checked_on_insert_and_guarded_on_its_table() {
        let u = DimensionUniverse::default_universe();
        let ddl = dataset_parents_ddl(&u);
        let keys = dataset_dimension_keys(&u);
        assert!(keys.len() >= 8, "{keys:?}");
        for key in &keys {
            let parent = quote(&key.parent);
            assert!(
                ddl.contains(&format!("FROM {parent} p WHERE")),
                "{parent} not checked:\n{ddl}"
            );
            assert!(
                ddl.contains(&format!(
                    "AFTER DELETE ON {parent}\n  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT"
                )),
                "{parent} not guarded:\n{ddl}"
            );
        }
        assert!(ddl.contains("REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"));
        assert_eq!(
            ddl.matches("SECURITY DEFINER SET search_path FROM CURRENT")
                .count(),
            2 + keys.len()
        );
    }
}
