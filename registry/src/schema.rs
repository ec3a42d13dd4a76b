//! The registry schema: static tables (dataset types, collections, datasets,
//! datastore records, provenance) and the dimension tables generated from the
//! universe.
//!
//! Identifiers generated here come only from the universe, whose names are
//! validated to `[a-z_][a-z0-9_]*` when it is loaded, and are always quoted.

use quanta_core::{DimensionElement, DimensionUniverse, REGION_ID_COLUMN};

/// Bumped whenever the schema changes incompatibly; stamped in `quanta_meta`.
pub const SCHEMA_VERSION: u32 = 6;

/// Quotes a trusted identifier (a universe or schema name) for SQL.
pub fn quote(ident: &str) -> String {
    debug_assert!(quanta_core::dimensions::is_safe_identifier(ident));
    format!("\"{ident}\"")
}

/// The column that holds an element's own key (`id`, `name`).
pub fn key_column(element: &DimensionElement) -> Option<&str> {
    element.key.as_ref().map(|k| k.name.as_str())
}

/// A statement that tells whether a dimension's record exists, and the
/// data ID keys to bind to it in order (the required dimensions, then the
/// dimension itself); `None` for dimensions without records (`band`).
pub fn record_exists_query(element: &DimensionElement) -> Option<(String, Vec<&str>)> {
    let key = element.key.as_ref().filter(|_| element.has_records)?;
    let mut keys: Vec<&str> = element
        .required_closure
        .iter()
        .map(String::as_str)
        .collect();
    let mut conditions: Vec<String> = keys.iter().map(|c| format!("{} = ?", quote(c))).collect();
    conditions.push(format!("{} = ?", quote(&key.name)));
    keys.push(&element.name);
    let sql = format!(
        "SELECT 1 FROM {} WHERE {}",
        quote(&element.name),
        conditions.join(" AND ")
    );
    Some((sql, keys))
}

/// DDL for one dimension element's table, or `None` for dimensions without
/// records of their own (`band`).
pub fn element_table_ddl(
    universe: &DimensionUniverse,
    element: &DimensionElement,
) -> Option<String> {
    if !element.has_records {
        return None;
    }
    let mut columns = Vec::new();
    let mut pk = Vec::new();
    let mut constraints = Vec::new();
    let has_region = element.region_field().is_some();
    if has_region {
        // An explicit INTEGER PRIMARY KEY: a rowid that VACUUM keeps, so
        // the skypix index and a spatial join's pairs can name a record by
        // one integer.
        columns.push(format!("{} INTEGER PRIMARY KEY", quote(REGION_ID_COLUMN)));
    }
    for dim in &element.required_closure {
        columns.push(format!(
            "{} {} NOT NULL",
            quote(dim),
            universe.key_type(dim).sql_type()
        ));
        pk.push(quote(dim));
    }
    if let Some(key) = &element.key {
        columns.push(format!(
            "{} {} NOT NULL",
            quote(&key.name),
            key.field_type.sql_type()
        ));
        pk.push(quote(&key.name));
    }
    for dim in &element.implies {
        columns.push(format!(
            "{} {}",
            quote(dim),
            universe.key_type(dim).sql_type()
        ));
    }
    for field in &element.metadata {
        columns.push(format!(
            "{} {}",
            quote(&field.name),
            field.field_type.sql_type()
        ));
    }
    let key_constraint = if has_region { "UNIQUE" } else { "PRIMARY KEY" };
    constraints.push(format!("{key_constraint} ({})", pk.join(", ")));
    // A foreign key to each required and implied dimension's own table, keyed
    // by that dimension's full primary key.
    for dim in element.required_closure.iter().chain(&element.implies) {
        if let Some(fk) = foreign_key_to(universe, dim, &element.required_closure) {
            constraints.push(fk);
        }
    }
    Some(format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  {},\n  {}\n)",
        quote(&element.name),
        columns.join(",\n  "),
        constraints.join(",\n  ")
    ))
}

/// The table that indexes an element's regions by sky pixel: one row per
/// (HEALPix cell at the universe's `skypix` level, record) the region may
/// touch, the record named by its `region_id`. The coarse step of a spatial
/// join matches two of these tables on `skypix`.
pub fn skypix_overlap_table(element: &DimensionElement) -> String {
    format!("{}_skypix_overlap", element.name)
}

/// DDL for an element's skypix overlap table, or `None` for an element
/// without a region.
pub fn skypix_overlap_ddl(element: &DimensionElement) -> Option<String> {
    element.region_field()?;
    // Keyed by cell first: the coarse join reads both tables in cell order
    // through this one B-tree (a second index per record would double the
    // cost of every insert). Two integers per row keep it small.
    Some(format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  skypix INTEGER NOT NULL,\n  region_id INTEGER NOT NULL,\n  PRIMARY KEY (skypix, region_id)\n) WITHOUT ROWID",
        quote(&skypix_overlap_table(element)),
    ))
}

/// The table of the overlapping record pairs of two elements with regions
/// in different spatial families (`left` before `right` in universe
/// order): `(l, r)` region ids, kept at insert by [`crate::spatial_join`].
pub fn overlap_table(left: &DimensionElement, right: &DimensionElement) -> String {
    format!("{}__{}_overlap", left.name, right.name)
}

/// DDL for [`overlap_table`]: keyed by left record, indexed by right
/// record (a query constrained on the right side starts there).
pub fn overlap_ddl(left: &DimensionElement, right: &DimensionElement) -> Vec<String> {
    let table = overlap_table(left, right);
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\n  l INTEGER NOT NULL,\n  r INTEGER NOT NULL,\n  PRIMARY KEY (l, r)\n) WITHOUT ROWID",
            quote(&table)
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {} (r)",
            quote(&format!("{table}_r")),
            quote(&table)
        ),
    ]
}

/// Whether `element`'s table has a foreign key to `dim`'s (so a row of it
/// proves `dim`'s record exists): the rule [`foreign_key_to`] writes the DDL by.
pub(crate) fn references(
    universe: &DimensionUniverse,
    element: &DimensionElement,
    dim: &str,
) -> bool {
    foreign_key_to(universe, dim, &element.required_closure).is_some()
}

/// `FOREIGN KEY (instrument, physical_filter) REFERENCES physical_filter
/// (instrument, name)`: the referencing table must hold the target's required
/// dimensions under their own names, which holds for every universe whose
/// implied dimensions share the implying element's required dimensions.
fn foreign_key_to(universe: &DimensionUniverse, dim: &str, available: &[String]) -> Option<String> {
    let target = universe.element(dim)?;
    if !target.has_records {
        return None;
    }
    if !target
        .required_closure
        .iter()
        .all(|r| available.contains(r))
    {
        return None;
    }
    let key = key_column(target)?;
    let mut from: Vec<String> = target.required_closure.iter().map(|r| quote(r)).collect();
    let mut to = from.clone();
    from.push(quote(dim));
    to.push(quote(key));
    Some(format!(
        "FOREIGN KEY ({}) REFERENCES {} ({})",
        from.join(", "),
        quote(dim),
        to.join(", ")
    ))
}

/// The static part of the schema. Dataset IDs are 16-byte UUID blobs.
/// The `dataset` table carries a nullable column per dimension of the
/// universe (generated in [`dataset_table_ddl`]) so that `--where` clauses
/// compile to plain column comparisons and joins.
pub const STATIC_DDL: &str = r#"
CREATE TABLE IF NOT EXISTS quanta_meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dataset_type (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  dimensions TEXT NOT NULL,
  storage_class TEXT NOT NULL,
  is_calibration INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS collection (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  type TEXT NOT NULL CHECK (type IN ('RUN', 'TAGGED', 'CHAINED', 'CALIBRATION')),
  doc TEXT
);
CREATE TABLE IF NOT EXISTS collection_chain (
  parent_id INTEGER NOT NULL REFERENCES collection (id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  child_id INTEGER NOT NULL REFERENCES collection (id),
  PRIMARY KEY (parent_id, position)
);
CREATE TABLE IF NOT EXISTS dataset_tags (
  collection_id INTEGER NOT NULL REFERENCES collection (id) ON DELETE CASCADE,
  dataset_id BLOB NOT NULL REFERENCES dataset (id) ON DELETE CASCADE,
  dataset_type_id INTEGER NOT NULL REFERENCES dataset_type (id),
  data_id TEXT NOT NULL,
  PRIMARY KEY (collection_id, dataset_id),
  UNIQUE (collection_id, dataset_type_id, data_id)
);
CREATE TABLE IF NOT EXISTS dataset_calibs (
  collection_id INTEGER NOT NULL REFERENCES collection (id) ON DELETE CASCADE,
  dataset_id BLOB NOT NULL REFERENCES dataset (id) ON DELETE CASCADE,
  dataset_type_id INTEGER NOT NULL REFERENCES dataset_type (id),
  data_id TEXT NOT NULL,
  valid_begin REAL NOT NULL,
  valid_end REAL NOT NULL,
  CHECK (valid_begin < valid_end)
);
CREATE INDEX IF NOT EXISTS dataset_calibs_lookup
  ON dataset_calibs (collection_id, dataset_type_id, data_id, valid_begin);
-- Validity ranges [begin, end) of one dataset type and data ID must not
-- overlap within a CALIBRATION collection; SQLite itself enforces it.
CREATE TRIGGER IF NOT EXISTS dataset_calibs_no_overlap
BEFORE INSERT ON dataset_calibs
WHEN EXISTS (
  SELECT 1 FROM dataset_calibs c
  WHERE c.collection_id = NEW.collection_id
    AND c.dataset_type_id = NEW.dataset_type_id
    AND c.data_id = NEW.data_id
    AND c.valid_begin < NEW.valid_end
    AND NEW.valid_begin < c.valid_end)
BEGIN
  SELECT RAISE(ABORT, 'calibration validity ranges overlap');
END;
CREATE TABLE IF NOT EXISTS run_provenance (
  run_id INTEGER NOT NULL REFERENCES collection (id),
  bundle_id BLOB NOT NULL,
  pipeline_yaml TEXT NOT NULL,
  task_configs TEXT NOT NULL,
  quanta_version TEXT NOT NULL,
  command_line TEXT NOT NULL,
  created_at TEXT NOT NULL,
  created_by TEXT NOT NULL,
  PRIMARY KEY (run_id, bundle_id)
);
-- A rowid table, as is `dataset`: merge appends rows in bulk, and SQLite
-- splits a full last page of a rowid table cheaply, where a clustered
-- (WITHOUT ROWID) table of rows this wide rebalances three pages per split
-- (measured: 10-20% of the merge writer's CPU).
CREATE TABLE IF NOT EXISTS quantum (
  id BLOB NOT NULL PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES collection (id),
  bundle_id BLOB NOT NULL,
  task_label TEXT NOT NULL,
  data_id TEXT NOT NULL,
  status TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  host TEXT,
  batch_job TEXT,
  started TEXT,
  finished TEXT,
  wall_seconds REAL,
  cpu_seconds REAL,
  peak_rss_bytes INTEGER,
  exit_code INTEGER,
  error TEXT,
  log_tail TEXT
);
CREATE INDEX IF NOT EXISTS quantum_by_run ON quantum (run_id, task_label);
CREATE TABLE IF NOT EXISTS quantum_input (
  quantum_id BLOB NOT NULL REFERENCES quantum (id) ON DELETE CASCADE,
  dataset_id BLOB NOT NULL,
  connection TEXT NOT NULL,
  is_prerequisite INTEGER NOT NULL DEFAULT 0,
  -- 0 for a predicted input the quantum did not read.
  used INTEGER NOT NULL DEFAULT 1,
  PRIMARY KEY (quantum_id, dataset_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS quantum_input_by_dataset ON quantum_input (dataset_id);
-- What each quantum made: the datasets whose `producer` it is.
CREATE INDEX IF NOT EXISTS dataset_by_producer ON dataset (producer)
  WHERE producer IS NOT NULL;
"#;

/// The tables of the removal protocol (`crate::removal`), added after
/// schema version 4 without changing it: every writer creates them if they
/// are missing ([`crate::Registry::open`]), so an older registry gains
/// them on its first write.
///
/// - `removal_run`: RUNs being removed with every dataset they own.
/// - `dataset_trash`: datasets losing their file (`purge` 0, *unstore*:
///   the row stays, without a datastore record) or their row too.
///
/// Rows are put there in one transaction before any file is unlinked and
/// leave, with what they name, in one transaction after; whatever is
/// there is an interrupted removal that the next removal or `repo check
/// --repair` finishes.
///
/// - `removed_dataset`: what provenance needs of a removed dataset that a
///   recorded quantum read or made (its type, data ID, RUN, producer), so
///   that `provenance` still names it and says it was removed.
///
/// Memberships are looked up by dataset when a dataset row is deleted
/// (`ON DELETE CASCADE`), hence the two `_by_dataset` indexes.
pub const REMOVAL_DDL: &str = r#"
CREATE TABLE IF NOT EXISTS removal_run (
  run_id INTEGER NOT NULL PRIMARY KEY REFERENCES collection (id)
);
CREATE TABLE IF NOT EXISTS dataset_trash (
  dataset_id BLOB NOT NULL PRIMARY KEY,
  purge INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS removed_dataset (
  id BLOB NOT NULL PRIMARY KEY,
  dataset_type TEXT NOT NULL,
  dimensions TEXT NOT NULL,
  run TEXT NOT NULL,
  data_id TEXT NOT NULL,
  producer BLOB,
  producer_connection TEXT,
  removed_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS removed_dataset_by_producer ON removed_dataset (producer)
  WHERE producer IS NOT NULL;
CREATE INDEX IF NOT EXISTS dataset_tags_by_dataset ON dataset_tags (dataset_id);
CREATE INDEX IF NOT EXISTS dataset_calibs_by_dataset ON dataset_calibs (dataset_id);
"#;

/// The `dataset` table: identity, type, owning RUN, the canonical data ID
/// text (unique per type and run), the datastore record, the producing
/// quantum and one nullable column per dimension, with foreign keys to the
/// dimension tables.
pub fn dataset_table_ddl(universe: &DimensionUniverse) -> String {
    let mut columns = vec![
        "id BLOB NOT NULL PRIMARY KEY".to_string(),
        "dataset_type_id INTEGER NOT NULL REFERENCES dataset_type (id)".to_string(),
        "run_id INTEGER NOT NULL REFERENCES collection (id)".to_string(),
        "data_id TEXT NOT NULL".to_string(),
        "ingest_date TEXT".to_string(),
        // The datastore record, NULL for a dataset without a file: a table
        // of its own cost merge a B-tree insert per dataset.
        "path TEXT".to_string(),
        "formatter TEXT".to_string(),
        "size INTEGER".to_string(),
        "checksum TEXT".to_string(),
        // The quantum that wrote the dataset and its output connection,
        // NULL for an ingested dataset. A dataset has at most one producer,
        // so the link is a column rather than a table: merge writes one
        // B-tree entry fewer per dataset.
        "producer BLOB".to_string(),
        "producer_connection TEXT".to_string(),
    ];
    let dims: Vec<String> = universe.dimensions().map(|d| d.name.clone()).collect();
    for dim in universe.dimensions() {
        columns.push(format!(
            "{} {}",
            quote(&dim.name),
            dim.key
                .as_ref()
                .map(|k| k.field_type.sql_type())
                .unwrap_or("TEXT")
        ));
    }
    let mut constraints = vec!["UNIQUE (dataset_type_id, run_id, data_id)".to_string()];
    for dim in universe.dimensions() {
        if let Some(fk) = foreign_key_to(universe, &dim.name, &dims) {
            constraints.push(fk);
        }
    }
    // A rowid table; see `quantum` in STATIC_DDL for why.
    format!(
        "CREATE TABLE IF NOT EXISTS dataset (\n  {},\n  {}\n)",
        columns.join(",\n  "),
        constraints.join(",\n  ")
    )
}

/// All DDL statements for a universe, in creation order.
pub fn full_ddl(universe: &DimensionUniverse) -> Vec<String> {
    let mut ddl = Vec::new();
    for element in universe.elements() {
        if let Some(table) = element_table_ddl(universe, element) {
            ddl.push(table);
        }
        if let Some(overlap) = skypix_overlap_ddl(element) {
            ddl.push(overlap);
        }
    }
    for (left, right) in universe.spatial_pairs() {
        ddl.extend(overlap_ddl(left, right));
    }
    ddl.push(dataset_table_ddl(universe));
    ddl.push(STATIC_DDL.to_string());
    ddl.push(REMOVAL_DDL.to_string());
    ddl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_table_has_keys_and_foreign_keys() {
        let u = DimensionUniverse::default_universe();
        let ddl = element_table_ddl(&u, u.element("exposure").unwrap()).unwrap();
        assert!(
            ddl.contains("PRIMARY KEY (\"instrument\", \"id\")"),
            "{ddl}"
        );
        assert!(
            ddl.contains("FOREIGN KEY (\"instrument\", \"physical_filter\") REFERENCES \"physical_filter\" (\"instrument\", \"name\")"),
            "{ddl}"
        );
        assert!(element_table_ddl(&u, u.element("band").unwrap()).is_none());
        let join = element_table_ddl(&u, u.element("visit_detector").unwrap()).unwrap();
        assert!(
            join.contains("UNIQUE (\"instrument\", \"detector\", \"visit\")"),
            "{join}"
        );
        assert!(join.contains("\"region\" BLOB"), "{join}");
    }

    #[test]
    fn regions_get_a_skypix_overlap_table_keyed_by_cell_then_record() {
        let u = DimensionUniverse::default_universe();
        let table = skypix_overlap_ddl(u.element("patch").unwrap()).unwrap();
        assert!(table.contains("\"patch_skypix_overlap\""), "{table}");
        assert!(table.contains("PRIMARY KEY (skypix, region_id)"), "{table}");
        assert!(skypix_overlap_ddl(u.element("exposure").unwrap()).is_none());
        // The record's number is its table's rowid, so VACUUM keeps it.
        let patch = element_table_ddl(&u, u.element("patch").unwrap()).unwrap();
        assert!(
            patch.contains("\"region_id\" INTEGER PRIMARY KEY"),
            "{patch}"
        );
    }
}
