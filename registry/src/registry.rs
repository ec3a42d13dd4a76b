//! Opening, creating and checking a registry database.

use std::path::{Path, PathBuf};

use quanta_core::DimensionUniverse;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::error::{RegistryError, Result};
use crate::provenance::DimensionChecks;
use crate::region_sql::register_region_functions;
use crate::schema::{full_ddl, SCHEMA_VERSION};

/// The full SQL Registry of a repository, on SQLite.
///
/// All writes go through methods (in this crate's modules); arbitrary SQL is
/// only ever run on a separate read-only connection ([`Registry::sql_read_only`]).
pub struct Registry {
    pub(crate) conn: Connection,
    pub(crate) universe: DimensionUniverse,
    path: PathBuf,
    /// Set while bulk writing: the background checkpointer.
    bulk: Option<BackgroundCheckpointer>,
    /// Dimension records found by `record_quanta_uncommitted` in the open
    /// transaction.
    pub(crate) dimension_checks: DimensionChecks,
    /// Whether the removal protocol's tables exist (always, once a writer
    /// has opened the registry; see `schema::REMOVAL_DDL`).
    pub(crate) has_removal_tables: bool,
}

/// The `quanta_meta` key of the repository's identity.
const REPOSITORY_ID_KEY: &str = "repository_id";

const APPLICATION_ID: i32 = 0x5155_4e54; // "QUNT"

/// Bytes per database page of a new registry. Large pages mean shallow
/// B-trees for the big dataset and provenance tables, fewer page splits and
/// fewer write-ahead-log frames (one `write` each) per commit: a
/// million-dataset merge took 12.5–13.3 s with 32 KiB pages against
/// 13.5–15.6 s with 8 KiB (three alternating runs each; 16 KiB:
/// 12.4–13.5 s). An existing registry keeps the page size it was created
/// with.
const PAGE_SIZE: i64 = 32_768;

/// The page cache (negative: KiB) outside bulk writing.
const CACHE_KIB: i64 = -1_048_576;
/// The page cache while bulk writing. A bulk writer appends, so what it
/// reads again is mostly the right edges of the B-trees; the cache needs to
/// hold one transaction's dirty pages (a 50,000-quantum merge batch dirties
/// about 60 MB) and little more. Every page beyond that is memory the
/// process touches for the first time, which costs the writer thread more
/// than re-reading a page would (1M-dataset merge: writer CPU 11.2 → 10.0 s
/// at 192 MiB instead of 1 GiB, peak RSS 1.36 → 1.05 GB; at 96 MiB with
/// 32 KiB pages, 11.7–12.3 s against 11.5–13.6 s at 192 MiB and peak RSS
/// 0.56 against 0.69 GB).
const BULK_CACHE_KIB: i64 = -98_304;

/// How much of the database file a read-only connection maps (SQLite
/// caps it at its compile-time limit, 2 GB).
const READ_ONLY_MMAP_BYTES: i64 = 1 << 40;

/// How long a statement waits for another connection's lock before
/// failing with [`RegistryError::Busy`]. Long writers do not meet here:
/// they take the [`crate::WriterLock`] first.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn tune(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Up to 1 GiB of page cache: a bulk insert that overflows the cache
    // spills pages into the WAL again and again (measured: 5x slower at 1M
    // datasets with 64 MiB). Memory is only taken as pages are used.
    conn.pragma_update(None, "cache_size", CACHE_KIB)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(64);
    // The crash-matrix tests kill the process inside a commit
    // (`quanta_core::fault`); no hook is installed otherwise.
    if quanta_core::fault::is_armed(quanta_core::fault::REGISTRY_COMMIT) {
        conn.commit_hook(Some(|| {
            quanta_core::fault::kill_point(quanta_core::fault::REGISTRY_COMMIT);
            false
        }));
    }
    Ok(())
}

impl Registry {
    /// Creates a new registry database at `path` (which must not exist).
    pub fn create(path: &Path, universe: &DimensionUniverse) -> Result<Self> {
        crate::sqlite_alloc::configure();
        if path.exists() {
            return Err(RegistryError::Invalid(format!(
                "{}: already exists; refusing to overwrite a registry",
                path.display()
            )));
        }
        let mut conn = Connection::open(path)?;
        register_region_functions(&conn)?;
        // Only effective before the first table is created.
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        tune(&conn)?;
        conn.pragma_update(None, "application_id", APPLICATION_ID)?;
        let tx = conn.transaction()?;
        for stmt in full_ddl(universe) {
            tx.execute_batch(&stmt)?;
        }
        let mut meta = tx.prepare("INSERT INTO quanta_meta (key, value) VALUES (?1, ?2)")?;
        meta.execute(("schema_version", SCHEMA_VERSION.to_string()))?;
        meta.execute(("universe", universe.source()))?;
        meta.execute(("universe_digest", universe.digest()))?;
        meta.execute(("quanta_version", env!("CARGO_PKG_VERSION")))?;
        meta.execute((REPOSITORY_ID_KEY, uuid::Uuid::new_v4().to_string()))?;
        drop(meta);
        tx.commit()?;
        Ok(Self {
            conn,
            universe: universe.clone(),
            path: path.to_path_buf(),
            bulk: None,
            dimension_checks: DimensionChecks::default(),
            has_removal_tables: true,
        })
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
        crate::sqlite_alloc::configure();
        let shown = path.display().to_string();
        if !path.is_file() {
            return Err(RegistryError::NotARegistry {
                path: shown,
                reason: "no such file".into(),
            });
        }
        let flags = if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let not_registry = |reason: String| RegistryError::NotARegistry {
            path: shown.clone(),
            reason,
        };
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| not_registry(format!("cannot open as SQLite: {e}")))?;
        register_region_functions(&conn)?;
        // The first real read tells a corrupt or non-SQLite file apart.
        let app_id: i32 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(|e| not_registry(format!("not a readable SQLite database ({e})")))?;
        if app_id != APPLICATION_ID {
            return Err(not_registry(
                "a SQLite database, but not one created by quanta (application_id differs)".into(),
            ));
        }
        if read_only {
            conn.pragma_update(None, "query_only", "ON")?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            // Pages mapped from the OS page cache: SQLite's default cache
            // of a read-only connection (2 MB, 64 pages of 32 KiB) made a
            // 200,000-dataset export query re-read its pages over and over
            // (3.0 s, most of it copying and zeroing memory; 1.0 s mapped).
            // Nothing is written through a read-only connection, and
            // quanta never truncates the database file (no VACUUM).
            conn.pragma_update(None, "mmap_size", READ_ONLY_MMAP_BYTES)?;
        } else {
            tune(&conn)?;
        }
        let meta = |key: &str| -> Result<Option<String>> {
            read_meta(&conn, key).map_err(|e| not_registry(format!("no quanta metadata ({e})")))
        };
        let version =
            meta("schema_version")?.ok_or_else(|| not_registry("no schema version".into()))?;
        if version != SCHEMA_VERSION.to_string() {
            return Err(RegistryError::SchemaVersion {
                path: shown,
                found: version,
                expected: SCHEMA_VERSION,
            });
        }
        let universe_text = meta("universe")?.ok_or_else(|| not_registry("no universe".into()))?;
        let universe = DimensionUniverse::from_yaml(&universe_text)?;
        let mut has_removal_tables: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'removed_dataset')",
            [],
            |r| r.get(0),
        )?;
        if !read_only && !has_removal_tables {
            // Tables added since schema version 4 (see `REMOVAL_DDL`).
            conn.execute_batch(crate::schema::REMOVAL_DDL)?;
            has_removal_tables = true;
        }
        if !read_only && meta(REPOSITORY_ID_KEY)?.is_none() {
            // A registry made before repositories had an identity gets one
            // from its first writer; concurrent first writers agree on
            // whichever insert came first.
            conn.execute(
                "INSERT OR IGNORE INTO quanta_meta (key, value) VALUES (?1, ?2)",
                (REPOSITORY_ID_KEY, uuid::Uuid::new_v4().to_string()),
            )?;
        }
        Ok(Self {
            conn,
            universe,
            path: path.to_path_buf(),
            bulk: None,
            dimension_checks: DimensionChecks::default(),
            has_removal_tables,
        })
    }

    pub fn universe(&self) -> &DimensionUniverse {
        &self.universe
    }

    pub fn path(&self) -> &Path {
        &self.path
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
                        path: self.path.display().to_string(),
                        reason: format!("its repository_id `{text}` is not a UUID ({e})"),
                    })
            }
        }
    }

    /// Reads a `quanta_meta` value.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(read_meta(&self.conn, key)?)
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
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.pragma_update(None, "query_only", "ON")?;
        // Users' SQL may test regions as the registry's own queries do.
        register_region_functions(&conn)?;
        // ATTACH could open (and create) another database file even on a
        // read-only connection; forbid it outright.
        conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_ATTACHED, 0)?;
        // A watchdog interrupts the statement at the time limit; the query
        // finishing first drops `_finished`, which ends the watchdog.
        let (_finished, finishing) = std::sync::mpsc::channel::<()>();
        if let Some(limit) = limit {
            let interrupt = conn.get_interrupt_handle();
            std::thread::spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    finishing.recv_timeout(limit)
                {
                    interrupt.interrupt();
                }
            });
        }
        let classify = |e: rusqlite::Error| match (e.sqlite_error_code(), limit) {
            (Some(rusqlite::ErrorCode::OperationInterrupted), Some(limit)) => {
                RegistryError::TimedOut {
                    seconds: limit.as_secs_f64(),
                }
            }
            // What SQLite says of a text with no statement in it (only
            // comments, say) is "bad parameter or other API misuse".
            (Some(rusqlite::ErrorCode::ApiMisuse), _) => RegistryError::Invalid(
                "the SQL query holds no statement; give one SELECT statement".into(),
            ),
            _ => RegistryError::from(e),
        };
        let mut stmt = conn.prepare(sql).map_err(classify)?;
        if !stmt.readonly() {
            return Err(RegistryError::Invalid(
                "only read-only statements (SELECT) are allowed".into(),
            ));
        }
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        let n = names.len();
        let mut rows = stmt.query([]).map_err(classify)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(classify)? {
            let mut values = Vec::with_capacity(n);
            for i in 0..n {
                values.push(sql_value_to_json(row.get_ref(i)?));
            }
            out.push(values);
        }
        Ok((names, out))
    }
}

fn read_meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM quanta_meta WHERE key = ?1", [key], |r| {
        r.get(0)
    })
    .optional()
}

pub(crate) fn sql_value_to_json(v: rusqlite::types::ValueRef<'_>) -> serde_json::Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => serde_json::Value::Null,
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(f) => serde_json::Number::from_f64(f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => {
            if b.len() == 16 {
                uuid::Uuid::from_slice(b)
                    .map(|u| u.to_string().into())
                    .unwrap_or(serde_json::Value::Null)
            } else {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                hex.into()
            }
        }
    }
}

impl Registry {
    /// Sets a `quanta_meta` value (repo-level configuration such as the
    /// datastore settings, opaque to the registry).
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO quanta_meta (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )?;
        Ok(())
    }
}

/// SQLite's default: checkpoint once the WAL holds this many pages.
const AUTO_CHECKPOINT_PAGES: i64 = 1000;

impl Registry {
    /// Starts (`true`) or ends (`false`) a stretch of many large write
    /// transactions, such as a merge.
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
    pub fn set_bulk_writing(&mut self, bulk: bool) -> Result<()> {
        if bulk {
            if self.bulk.is_none() {
                self.bulk = Some(BackgroundCheckpointer::start(&self.path)?);
                self.conn.pragma_update(None, "wal_autocheckpoint", 0i64)?;
                self.conn
                    .pragma_update(None, "cache_size", BULK_CACHE_KIB)?;
            }
        } else {
            // Joined first: the final checkpoint would wait for its pass.
            drop(self.bulk.take());
            self.conn
                .pragma_update(None, "wal_autocheckpoint", AUTO_CHECKPOINT_PAGES)?;
            self.conn.pragma_update(None, "cache_size", CACHE_KIB)?;
            // Readers may still hold old frames; a checkpoint that could not
            // copy or truncate everything is finished by a later one. It
            // must not wait for them: a long `quanta sql` would hold the
            // merge (already committed) for the whole busy timeout.
            self.conn.busy_timeout(std::time::Duration::ZERO)?;
            let checkpointed = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            self.conn.busy_timeout(BUSY_TIMEOUT)?;
            match checkpointed {
                Err(e)
                    if matches!(
                        e.sqlite_error_code(),
                        Some(
                            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                        )
                    ) => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// Makes every later commit durable against a power failure
    /// (`synchronous=FULL`: the write-ahead log is synced at each commit)
    /// or, with `false`, only against a killed process (`NORMAL`, the
    /// default, which is what a merge can afford: its inputs stay until it
    /// is rerun). A move into the datastore needs `true` before it removes
    /// the only other copy of its files.
    pub fn set_durable_commits(&self, durable: bool) -> Result<()> {
        let level = if durable { "FULL" } else { "NORMAL" };
        self.conn.pragma_update(None, "synchronous", level)?;
        Ok(())
    }

    /// After a commit: lets the background checkpointer copy it, if bulk
    /// writing.
    pub(crate) fn committed(&self) {
        if let Some(bulk) = &self.bulk {
            bulk.kick();
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
    // SAFETY: nice(2) only changes the calling thread's nice value.
    unsafe {
        libc::nice(BEHIND_WRITER_NICE);
    }
}

/// A thread with its own connection that runs a passive checkpoint after
/// each commit it is told of; stopped and joined on drop.
struct BackgroundCheckpointer {
    kick: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundCheckpointer {
    fn start(path: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let (kick, kicks) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            lower_thread_priority();
            while kicks.recv().is_ok() {
                while kicks.try_recv().is_ok() {}
                // A failed pass leaves its frames to the final checkpoint,
                // which reports errors.
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
        });
        Ok(Self {
            kick: Some(kick),
            thread: Some(thread),
        })
    }

    fn kick(&self) {
        if let Some(kick) = &self.kick {
            let _ = kick.send(());
        }
    }
}

impl Drop for BackgroundCheckpointer {
    fn drop(&mut self) {
        drop(self.kick.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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
            r.conn
                .query_row("PRAGMA page_size", [], |row| row.get(0))
                .unwrap()
        };
        let created = Registry::create(&path, &universe).unwrap();
        assert_eq!(page_size(&created), PAGE_SIZE);
        drop(created);
        assert_eq!(page_size(&Registry::open(&path).unwrap()), PAGE_SIZE);
    }
}
