//! Opening, creating and checking a registry database.

use std::path::{Path, PathBuf};

use crate::database::Database;
use crate::dialect::Dialect;
use crate::error::{RegistryError, Result};
use crate::provenance::DimensionChecks;
use crate::schema::{full_ddl, SCHEMA_VERSION};
use crate::sqlite;
use quanta_core::DimensionUniverse;

/// Where a registry's database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryLocation {
    /// An embedded SQLite file.
    Sqlite(PathBuf),
    /// A schema (the repository's namespace) of a PostgreSQL database,
    /// `postgresql://user@host:port/db` (the password by libpq's rules,
    /// never in the URL a repository keeps).
    Postgres { url: String, namespace: String },
}

impl std::fmt::Display for RegistryLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres { url, namespace } => write!(f, "{url} (namespace {namespace})"),
        }
    }
}

/// The full SQL Registry of a repository, on SQLite or PostgreSQL.
///
/// All writes go through methods (in this crate's modules); arbitrary SQL is
/// only ever run on a separate read-only connection ([`Registry::sql_read_only`]).
pub struct Registry {
    pub(crate) db: Database,
    pub(crate) universe: DimensionUniverse,
    location: RegistryLocation,
    /// Set while bulk writing.
    bulk: Option<sqlite::BulkWriting>,
    /// Dimension records found by `record_quanta_uncommitted` in the open
    /// transaction.
    pub(crate) dimension_checks: DimensionChecks,
    /// Whether the removal protocol's tables exist (always, once a writer
    /// has opened the registry; see `schema::removal_ddl`).
    pub(crate) has_removal_tables: bool,
}

/// The `quanta_meta` key of the repository's identity.
const REPOSITORY_ID_KEY: &str = "repository_id";

impl Registry {
    /// Creates a new registry database at `path` (which must not exist).
    pub fn create(path: &Path, universe: &DimensionUniverse) -> Result<Self> {
        if path.exists() {
            return Err(RegistryError::Invalid(format!(
                "{}: already exists; refusing to overwrite a registry",
                path.display()
            )));
        }
        let db = Database::from_sqlite(sqlite::create(path)?);
        Self::create_in(db, RegistryLocation::Sqlite(path.to_path_buf()), universe)
    }

    /// Creates a new registry in the schema `namespace` (which must not
    /// exist) of the PostgreSQL database `url`: several repositories share
    /// one database, each in its own schema.
    pub fn create_postgres(
        url: &str,
        namespace: &str,
        universe: &DimensionUniverse,
    ) -> Result<Self> {
        let location = postgres_location(url, namespace)?;
        let db = Database::connect_postgres(url)?;
        if postgres_schema_exists(&db, namespace)? {
            return Err(RegistryError::Invalid(format!(
                "{location}: already exists; refusing to overwrite a registry"
            )));
        }
        db.execute_batch(&format!(
            "CREATE SCHEMA {ns}; SET search_path TO {ns}, public",
            ns = crate::schema::quote(namespace)
        ))?;
        db.hold_in_transactions(crate::WriterLock::transactions_key(namespace));
        Self::create_in(db, location, universe)
    }

    /// The schema, metadata and identity of a new registry, in one
    /// transaction.
    fn create_in(
        db: Database,
        location: RegistryLocation,
        universe: &DimensionUniverse,
    ) -> Result<Self> {
        let tx = db.transaction()?;
        for stmt in full_ddl(universe, db.dialect()) {
            tx.execute_batch(&stmt)?;
        }
        let repository_id = uuid::Uuid::new_v4().to_string();
        let (version, digest) = (SCHEMA_VERSION.to_string(), universe.digest());
        for (key, value) in [
            ("schema_version", version.as_str()),
            ("universe", universe.source()),
            ("universe_digest", &digest),
            ("quanta_version", env!("CARGO_PKG_VERSION")),
            (REPOSITORY_ID_KEY, &repository_id),
        ] {
            tx.execute(
                "INSERT INTO quanta_meta (key, value) VALUES (?1, ?2)",
                &[&key, &value],
            )?;
        }
        tx.commit()?;
        Ok(Self {
            db,
            universe: universe.clone(),
            location,
            bulk: None,
            dimension_checks: DimensionChecks::default(),
            has_removal_tables: true,
        })
    }

    /// Opens the existing registry at `location`, on whichever backend.
    pub fn open_at(location: &RegistryLocation, read_only: bool) -> Result<Self> {
        if let RegistryLocation::Postgres { url, namespace } = location {
            postgres_location(url, namespace)?;
        }
        let db = connect(location, read_only)?;
        Self::open_in(db, location.clone(), read_only)
    }

    /// Opens an existing registry for reading and writing.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, false)
    }

    /// Opens an existing registry without write access.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        Self::open_with(path, true)
    }

    fn open_with(path: &Path, read_only: bool) -> Result<Self> {
        let location = RegistryLocation::Sqlite(path.to_path_buf());
        let db = connect(&location, read_only)?;
        Self::open_in(db, location, read_only)
    }

    /// Opens the registry in the schema `namespace` of the PostgreSQL
    /// database `url`; `read_only` makes every transaction of the
    /// connection read-only.
    pub fn open_postgres(url: &str, namespace: &str, read_only: bool) -> Result<Self> {
        let location = postgres_location(url, namespace)?;
        let db = connect(&location, read_only)?;
        Self::open_in(db, location, read_only)
    }

    /// Removes the registry in the schema `namespace` of the PostgreSQL
    /// database `url` with everything in it (a repository deleted, a test's
    /// namespace cleaned up); nothing when there is none. The datastore's
    /// files are the caller's.
    pub fn drop_postgres(url: &str, namespace: &str) -> Result<()> {
        postgres_location(url, namespace)?;
        let db = Database::connect_postgres(url)?;
        db.execute_batch(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            crate::schema::quote(namespace)
        ))
    }

    /// Checks what a registry's database holds (schema version, universe)
    /// and, for a writer, adds what newer versions added.
    fn open_in(db: Database, location: RegistryLocation, read_only: bool) -> Result<Self> {
        let not_registry = |reason: String| RegistryError::NotARegistry {
            path: location.to_string(),
            reason,
        };
        let meta = |key: &str| -> Result<Option<String>> {
            read_meta(&db, key).map_err(|e| not_registry(format!("no quanta metadata ({e})")))
        };
        let version =
            meta("schema_version")?.ok_or_else(|| not_registry("no schema version".into()))?;
        if version != SCHEMA_VERSION.to_string() {
            return Err(RegistryError::SchemaVersion {
                path: location.to_string(),
                found: version,
                expected: SCHEMA_VERSION,
            });
        }
        let universe_text = meta("universe")?.ok_or_else(|| not_registry("no universe".into()))?;
        let universe = DimensionUniverse::from_yaml(&universe_text)?;
        let mut has_removal_tables = db.has_table("removed_dataset")?;
        if !read_only && !has_removal_tables {
            // Tables added since schema version 4 (see `schema::removal_ddl`).
            db.execute_batch(&crate::schema::removal_ddl(db.dialect()))?;
            has_removal_tables = true;
        }
        if !read_only && meta(REPOSITORY_ID_KEY)?.is_none() {
            // A registry made before repositories had an identity gets one
            // from its first writer; concurrent first writers agree on
            // whichever insert came first.
            db.execute(
                "INSERT INTO quanta_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                &[&REPOSITORY_ID_KEY, &uuid::Uuid::new_v4().to_string()],
            )?;
        }
        Ok(Self {
            db,
            universe,
            location,
            bulk: None,
            dimension_checks: DimensionChecks::default(),
            has_removal_tables,
        })
    }

    /// The SQL dialect of this registry's backend.
    pub fn dialect(&self) -> Dialect {
        self.db.dialect()
    }

    pub fn universe(&self) -> &DimensionUniverse {
        &self.universe
    }

    /// Where the registry's database is.
    pub fn location(&self) -> &RegistryLocation {
        &self.location
    }

    /// The SQLite file, for what opens it again (read-only readers of a
    /// split query, `quanta sql`); `None` on PostgreSQL.
    pub(crate) fn sqlite_path(&self) -> Option<&Path> {
        match &self.location {
            RegistryLocation::Sqlite(path) => Some(path),
            RegistryLocation::Postgres { .. } => None,
        }
    }

    /// The repository's identity, assigned when its registry was created
    /// (or by the first writer of an older registry). `None` only for an
    /// older registry opened read-only before any writer opened it.
    pub fn repository_id(&self) -> Result<Option<uuid::Uuid>> {
        match self.meta(REPOSITORY_ID_KEY)? {
            None => Ok(None),
            Some(text) => {
                uuid::Uuid::parse_str(&text)
                    .map(Some)
                    .map_err(|e| RegistryError::NotARegistry {
                        path: self.location.to_string(),
                        reason: format!("its repository_id `{text}` is not a UUID ({e})"),
                    })
            }
        }
    }

    /// Reads a `quanta_meta` value.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        read_meta(&self.db, key)
    }

    /// Runs one user-supplied SELECT on a read-only connection and returns the
    /// column names and rows rendered as JSON values. Writes (INSERT, UPDATE,
    /// DELETE, ATTACH, PRAGMA assignments, …) are refused by SQLite itself:
    /// the connection is opened read-only with `query_only`, and a statement
    /// that is not read-only is rejected before it runs.
    pub fn sql_read_only(&self, sql: &str) -> Result<(Vec<String>, Vec<Vec<serde_json::Value>>)> {
        self.sql_read_only_within(sql, None)
    }

    /// [`Registry::sql_read_only`] with a time limit: a statement still
    /// running after `limit` (a recursive CTE can run forever) is
    /// interrupted and reported as [`RegistryError::TimedOut`].
    pub fn sql_read_only_within(
        &self,
        sql: &str,
        limit: Option<std::time::Duration>,
    ) -> Result<(Vec<String>, Vec<Vec<serde_json::Value>>)> {
        if sql.trim().is_empty() {
            return Err(RegistryError::Invalid(
                "the SQL query is empty; give one SELECT statement".into(),
            ));
        }
        self.db.read_only_query(sql, limit)
    }
}

/// A connection to the registry database at `location`, checked to be a
/// quanta registry's (not yet its version): a SQLite file quanta made, or
/// an existing namespace, made the connection's search path.
pub(crate) fn connect(location: &RegistryLocation, read_only: bool) -> Result<Database> {
    let not_registry = |reason: String| RegistryError::NotARegistry {
        path: location.to_string(),
        reason,
    };
    match location {
        RegistryLocation::Sqlite(path) => {
            if !path.is_file() {
                return Err(not_registry("no such file".into()));
            }
            Ok(Database::from_sqlite(sqlite::open(
                path,
                read_only,
                &not_registry,
            )?))
        }
        RegistryLocation::Postgres { url, namespace } => {
            let db = Database::connect_postgres(url)?;
            if !postgres_schema_exists(&db, namespace)? {
                return Err(not_registry("no such namespace".into()));
            }
            db.execute_batch(&format!(
                "SET search_path TO {}, public",
                crate::schema::quote(namespace)
            ))?;
            if read_only {
                db.execute_batch("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")?;
            } else {
                db.hold_in_transactions(crate::WriterLock::transactions_key(namespace));
            }
            Ok(db)
        }
    }
}

/// The location of a PostgreSQL registry, its namespace checked to be a
/// plain identifier (it is quoted into statements).
fn postgres_location(url: &str, namespace: &str) -> Result<RegistryLocation> {
    if !quanta_core::dimensions::is_safe_identifier(namespace) || namespace.len() > 63 {
        return Err(RegistryError::Invalid(format!(
            "namespace `{namespace}`: a registry's namespace is a PostgreSQL schema name: \
             lower-case letters, digits and `_`, not starting with a digit, at most 63 bytes"
        )));
    }
    Ok(RegistryLocation::Postgres {
        url: url.to_string(),
        namespace: namespace.to_string(),
    })
}

fn postgres_schema_exists(db: &Database, namespace: &str) -> Result<bool> {
    db.prepare("SELECT 1 FROM information_schema.schemata WHERE schema_name = ?1")?
        .exists(&[&namespace])
}

pub(crate) fn read_meta(db: &Database, key: &str) -> Result<Option<String>> {
    db.query_row(
        "SELECT value FROM quanta_meta WHERE key = ?1",
        &[&key],
        |r| r.get(0),
    )
}

impl Registry {
    /// Sets a `quanta_meta` value (repo-level configuration such as the
    /// datastore settings, opaque to the registry).
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.db.execute(
            "INSERT INTO quanta_meta (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )?;
        Ok(())
    }
}

/// What a stretch of bulk writing ([`Registry::set_bulk_writing`]) writes,
/// which decides how much page cache its connection keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkWrites {
    /// New rows at the ends of the B-trees (a merge: new UUIDs ordered by
    /// quantum, new quanta, new input links): what the writer reads again
    /// is the right edges, so the cache holds a transaction's dirty pages
    /// and little more.
    Appending,
    /// Rows all over a large index (an ingest: UUIDs derived from data IDs
    /// spread over the whole UUID index): the connection keeps its full
    /// cache, or each commit reads back the pages it evicted.
    Scattered,
}

impl Registry {
    /// Starts (`Some`) or ends (`None`) a stretch of many large write
    /// transactions, such as a merge or an ingest.
    ///
    /// While it lasts, this connection's commits only append to the
    /// write-ahead log: at the default threshold every commit of a large
    /// batch ends in a checkpoint on the writing thread that writes (and
    /// syncs) pages the next batch dirties again, a fifth of a
    /// million-dataset merge. Instead a second connection on a background
    /// thread copies committed frames into the database file after each
    /// commit (a passive checkpoint never blocks the writer), and ending
    /// bulk writing checkpoints what is left and truncates the log.
    /// Durability is unchanged (the log is the database until then); a
    /// process killed meanwhile leaves a long log that the next connection
    /// checkpoints.
    ///
    /// A PostgreSQL server checkpoints by itself. There, ending bulk
    /// writing refreshes the statistics of each table the stretch grew by
    /// a tenth or more ([`Registry::refresh_statistics`]).
    pub fn set_bulk_writing(&mut self, bulk: Option<BulkWrites>) -> Result<()> {
        let Some(path) = self.sqlite_path().map(Path::to_path_buf) else {
            match bulk {
                // Only the rows of this stretch count.
                Some(_) => drop(self.db.take_bulk_rows()),
                None => self.refresh_statistics_or_warn(),
            }
            return Ok(());
        };
        match (bulk, self.bulk.take()) {
            (Some(writes), None) => {
                let conn = self.db.sqlite()?;
                self.bulk = Some(sqlite::BulkWriting::start(conn, &path, writes)?)
            }
            (Some(_), Some(running)) => self.bulk = Some(running),
            (None, Some(running)) => running.finish(self.db.sqlite()?)?,
            (None, None) => {}
        }
        Ok(())
    }

    /// Analyzes each table that the bulk inserts since the last call grew
    /// by a tenth or more of the rows its statistics count (PostgreSQL;
    /// nothing on SQLite, whose planner does without). The server's
    /// autovacuum does the same in its own time (a tenth changed, looked at
    /// every minute), and a preflight right after a million-raw ingest
    /// planned its graph query with no statistics for `dataset`: 15.2 s
    /// instead of 1.2 s. `ANALYZE` reads a sample of 30,000 rows whatever
    /// the table's size (0.3 s for a million); a role that does not own the
    /// table gets the server's warning and nothing is analyzed.
    pub fn refresh_statistics(&self) -> Result<()> {
        if let RegistryLocation::Sqlite(_) = &self.location {
            return Ok(());
        }
        for (table, rows) in self.db.take_bulk_rows() {
            // -1 for a table never analyzed.
            let counted: f64 = self
                .db
                .query_row(
                    "SELECT reltuples FROM pg_class WHERE oid = to_regclass(?1)",
                    &[&table],
                    |r| r.get(0),
                )?
                .unwrap_or(-1.0);
            if rows > 0 && rows as f64 >= 0.1 * counted.max(0.0) {
                // A table name of the registry's own statements.
                self.db
                    .execute_batch(&format!("ANALYZE {}", crate::schema::quote(&table)))?;
            }
        }
        Ok(())
    }

    /// [`Registry::refresh_statistics`] after a write that is committed
    /// already: statistics it could not refresh are left to the server's
    /// autovacuum, with a warning, not a failure of the write.
    pub fn refresh_statistics_or_warn(&self) {
        if let Err(e) = self.refresh_statistics() {
            tracing::warn!("could not refresh the registry's table statistics: {e}");
        }
    }

    /// How many connections may usefully write this registry at once,
    /// each in transactions of its own (a merge spreads its transactions
    /// over them): one on SQLite, which takes one writer at a time; two on
    /// PostgreSQL, where each connection is a server backend on a core of
    /// its own (two merge writers recorded 1.7 times the datasets per
    /// second of one on a 2-core machine that ran the server too;
    /// benches/postgres/README.md).
    pub fn concurrent_writers(&self) -> usize {
        match &self.location {
            RegistryLocation::Sqlite(_) => 1,
            RegistryLocation::Postgres { .. } => 2,
        }
    }

    /// Makes every later commit durable against a power failure
    /// (`synchronous=FULL`: the write-ahead log is synced at each commit)
    /// or, with `false`, only against a killed process (`NORMAL`, the
    /// default, which is what a merge can afford: its inputs stay until it
    /// is rerun). A move into the datastore needs `true` before it removes
    /// the only other copy of its files.
    /// On PostgreSQL every commit is durable (the server's
    /// `synchronous_commit`), so there is nothing to change.
    pub fn set_durable_commits(&self, durable: bool) -> Result<()> {
        match &self.location {
            RegistryLocation::Sqlite(_) => sqlite::set_durable_commits(self.db.sqlite()?, durable),
            RegistryLocation::Postgres { .. } => Ok(()),
        }
    }

    /// After a commit: lets the background checkpointer copy it, if bulk
    /// writing.
    pub(crate) fn committed(&self) {
        if let Some(bulk) = &self.bulk {
            bulk.committed();
        }
    }
}

/// How much lower than the bulk writer the threads that feed or trail it
/// run (a nice increment).
const BEHIND_WRITER_NICE: i32 = 5;

/// Lowers the calling thread's scheduling priority (its nice value) so that
/// it yields the CPU to the bulk writer: for threads that work beside it,
/// such as the background checkpointer and merge's file verification. The
/// writer is the critical path of a merge, and only lowering the others
/// needs no privilege. Only the calling thread changes (Linux nice values
/// are per thread), and it cannot be raised again: call it only in a thread
/// that ends with its task. A refusal changes nothing and is ignored.
pub fn lower_thread_priority() {
    #[cfg(unix)]
    let _ = rustix::process::nice(BEHIND_WRITER_NICE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_registry_has_large_pages_and_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sqlite3");
        let universe = DimensionUniverse::default_universe();
        let page_size = |r: &Registry| -> i64 {
            r.db.sqlite()
                .unwrap()
                .query_row("PRAGMA page_size", [], |row| row.get(0))
                .unwrap()
        };
        let created = Registry::create(&path, &universe).unwrap();
        assert_eq!(page_size(&created), sqlite::PAGE_SIZE);
        drop(created);
        assert_eq!(
            page_size(&Registry::open(&path).unwrap()),
            sqlite::PAGE_SIZE
        );
    }
}
