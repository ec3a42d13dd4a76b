//! Upgrading a registry made by an older quanta to this one's schema
//! version, on either backend, in one transaction: a migration that is
//! interrupted (`kill -9` included) leaves the registry at its old version,
//! and running it again starts over.
//!
//! Owns: the steps from each older version this quanta can upgrade, and
//! the refusal of the others. Must not: touch the datastore.
//!
//! Version 5 → 6: the overlaps of records of different spatial families
//! are kept in a table per pair (`<a>__<b>_overlap`), filled at insert
//! since version 6; the migration creates the tables and relates every
//! existing record. Version 6 → 7: `dataset` has an index per selection
//! dimension (`schema::selection_dimensions`), so that a `--where` on
//! exposures, visits or tracts reads only the datasets it selects; the
//! migration builds them. Versions 7 → 8 → 9: on PostgreSQL, the
//! foreign keys the bulk writers fill are replaced by set-wise triggers
//! (`crate::postgres::set_keys`): `dataset`'s to dimension tables in 8,
//! its type and RUN, a quantum's RUN and an input link's quantum in 9; the
//! migration drops those keys and creates the triggers (the keys held, so
//! every row's parents exist). SQLite keeps its keys (checked set-wise by
//! the bulk writers' transactions instead, `database/foreign_keys.rs`):
//! there the steps only stamp the version. Versions before 5 numbered region records differently
//! (no `region_id` key) and are not upgraded: export their datasets with
//! the quanta that made them and import them into a new repository.

use crate::database::Database;
use crate::dialect::Dialect;
use crate::error::{RegistryError, Result};
use crate::registry::{connect, read_meta, Registry, RegistryLocation};
use crate::schema::{overlap_ddl, selection_dimensions, selection_index_ddl, SCHEMA_VERSION};
use quanta_core::DimensionUniverse;

/// What [`Registry::migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub from: u32,
    pub to: u32,
    /// Overlapping record pairs related by the upgrade to version 6.
    pub overlaps: usize,
    /// Indexes built by the upgrade to version 7.
    pub indexes: usize,
    /// Foreign keys replaced by set-wise triggers by the upgrades to
    /// versions 8 and 9 (PostgreSQL only).
    pub foreign_keys: usize,
}

/// The oldest version [`Registry::migrate`] upgrades.
pub const OLDEST_MIGRATABLE: u32 = 5;

impl Registry {
    /// Upgrades the registry at `location` to this quanta's schema
    /// version; a no-op for one already there. Refuses a newer registry
    /// and one older than [`OLDEST_MIGRATABLE`].
    pub fn migrate(location: &RegistryLocation) -> Result<Migration> {
        let db = connect(location, false)?;
        let not_registry = |reason: String| RegistryError::NotARegistry {
            path: location.to_string(),
            reason,
        };
        let found = read_meta(&db, "schema_version")
            .map_err(|e| not_registry(format!("no quanta metadata ({e})")))?
            .ok_or_else(|| not_registry("no schema version".into()))?;
        let from: u32 = found
            .parse()
            .map_err(|_| not_registry(format!("schema version `{found}` is not a number")))?;
        let refuse = |why: String| {
            Err(RegistryError::Invalid(format!(
                "{location}: registry schema version {from}: {why}"
            )))
        };
        if from == SCHEMA_VERSION {
            return Ok(Migration {
                from,
                to: from,
                overlaps: 0,
                indexes: 0,
                foreign_keys: 0,
            });
        }
        if from > SCHEMA_VERSION {
            return refuse(format!(
                "newer than this quanta's {SCHEMA_VERSION}; use the quanta that made it"
            ));
        }
        if from < OLDEST_MIGRATABLE {
            return refuse(format!(
                "too old to upgrade in place (the oldest this quanta upgrades is \
                 {OLDEST_MIGRATABLE}); export its datasets with the quanta that made it \
                 (`quanta export`) and import them into a new repository"
            ));
        }
        let universe_text =
            read_meta(&db, "universe")?.ok_or_else(|| not_registry("no universe".into()))?;
        let universe = DimensionUniverse::from_yaml(&universe_text)?;
        let tx = db.transaction()?;
        let overlaps = if from < 6 {
            to_version_6(&tx, &universe)?
        } else {
            0
        };
        let indexes = to_version_7(&tx, &universe)?;
        let foreign_keys = to_set_wise_keys(&tx, &universe)?;
        tx.execute(
            "UPDATE quanta_meta SET value = ?1 WHERE key = 'schema_version'",
            &[&SCHEMA_VERSION.to_string()],
        )?;
        tx.commit()?;
        Ok(Migration {
            from,
            to: SCHEMA_VERSION,
            overlaps,
            indexes,
            foreign_keys,
        })
    }
}

/// Version 5 → 6: the overlap tables, filled from every record.
fn to_version_6(db: &Database, universe: &DimensionUniverse) -> Result<usize> {
    let mut overlaps = 0;
    for (left, right) in universe.spatial_pairs() {
        for statement in overlap_ddl(left, right, db.dialect()) {
            db.execute_batch(&statement)?;
        }
        overlaps += crate::spatial_join::fill_overlap_table(db, left, right)?;
    }
    Ok(overlaps)
}

/// Version 6 → 7: the selection indexes of `dataset`.
fn to_version_7(db: &Database, universe: &DimensionUniverse) -> Result<usize> {
    let dimensions = selection_dimensions(universe);
    for dimension in &dimensions {
        db.execute_batch(&selection_index_ddl(dimension))?;
    }
    Ok(dimensions.len())
}

/// Versions 7 → 9: on PostgreSQL, the references of
/// `crate::postgres::set_keys` become set-wise triggers; the count of
/// foreign keys dropped (those a version 8 registry still has, all of them
/// from version 7).
fn to_set_wise_keys(db: &Database, universe: &DimensionUniverse) -> Result<usize> {
    use crate::postgres::set_keys;
    match db.dialect() {
        Dialect::Sqlite => Ok(0),
        Dialect::Postgres => {
            let mut names: Vec<(&str, String)> = Vec::new();
            for key in set_keys::set_keys(universe) {
                let found: Vec<String> = db.query_rows(
                    set_keys::FOREIGN_KEYS_QUERY,
                    &[&key.child, &key.parent],
                    |r| r.get(0),
                )?;
                names.extend(found.into_iter().map(|name| (key.child, name)));
            }
            // A child's keys to one parent are listed once per key to it.
            names.sort();
            names.dedup();
            for (child, name) in &names {
                // A name from the server's catalog, not from user text.
                db.execute_batch(&format!(
                    "ALTER TABLE {child} DROP CONSTRAINT \"{}\"",
                    name.replace('"', "\"\"")
                ))?;
            }
            db.execute_batch(&set_keys::set_keys_ddl(universe))?;
            Ok(names.len())
        }
    }
}
