//! Opening, tuning and checkpointing SQLite connections to a registry file.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::region_functions::register_region_functions;
use super::value::value_to_json;
use crate::error::{RegistryError, Result};
use crate::registry::lower_thread_priority;
use crate::registry::BulkWrites;

pub(crate) const APPLICATION_ID: i32 = 0x5155_4e54; // "QUNT"

/// Bytes per database page of a new registry. Large pages mean shallow
/// B-trees for the big dataset and provenance tables, fewer page splits and
/// fewer write-ahead-log frames (one `write` each) per commit: a
/// million-dataset merge took 12.5–13.3 s with 32 KiB pages against
/// 13.5–15.6 s with 8 KiB (three alternating runs each; 16 KiB:
/// 12.4–13.5 s). An existing registry keeps the page size it was created
/// with.
pub(crate) const PAGE_SIZE: i64 = 32_768;

/// The page cache (negative: KiB) outside bulk writing.
const CACHE_KIB: i64 = -1_048_576;
/// The page cache while bulk writing rows that append
/// ([`crate::BulkWrites::Appending`]): what the writer reads again is
/// mostly the right edges of the B-trees; the cache needs to
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

/// The page cache of a read-only connection that scans a large part of
/// the database (the parts of preflight's graph query), which reads its
/// pages through this cache instead of mapping the file: every page a
/// mapping touches counts in the process's resident set until the
/// connection closes (a 10^7-quantum preflight: 2.6 GB of its 5.0 GB
/// peak), and the scan reads each page about once, so the mapping saved
/// nothing there (query 17.9 s read, 21.5 s mapped, same load).
pub(crate) const SCAN_CACHE_KIB: i64 = -65_536;

/// How long a statement waits for another connection's lock before
/// failing with [`RegistryError::Busy`]. Long writers do not meet here:
/// they take the [`crate::WriterLock`] first.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// SQLite's default: checkpoint once the WAL holds this many pages.
const AUTO_CHECKPOINT_PAGES: i64 = 1000;

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

/// A new registry file at `path` (which must not exist), tuned for
/// writing, with no tables yet.
pub(crate) fn create(path: &Path) -> Result<Connection> {
    super::alloc::configure();
    let conn = Connection::open(path)?;
    register_region_functions(&conn)?;
    // Only effective before the first table is created.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    tune(&conn)?;
    conn.pragma_update(None, "application_id", APPLICATION_ID)?;
    Ok(conn)
}

/// The registry file at `path`, checked to be one quanta made;
/// `not_registry` words the refusal of anything else.
pub(crate) fn open(
    path: &Path,
    read_only: bool,
    not_registry: &dyn Fn(String) -> RegistryError,
) -> Result<Connection> {
    super::alloc::configure();
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
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
    Ok(conn)
}

/// See [`crate::database::Database::read_for_scan`].
pub(crate) fn read_for_scan(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "mmap_size", 0i64)?;
    conn.pragma_update(None, "cache_size", SCAN_CACHE_KIB)?;
    Ok(())
}

/// See [`crate::database::Database::with_scan_cache`].
pub(crate) fn with_scan_cache<T>(conn: &Connection, scan: impl FnOnce() -> Result<T>) -> Result<T> {
    let own: i64 = conn.query_row("PRAGMA cache_size", [], |row| row.get(0))?;
    conn.pragma_update(None, "cache_size", SCAN_CACHE_KIB)?;
    let scanned = scan();
    conn.pragma_update(None, "cache_size", own)?;
    scanned
}

/// Runs one user-supplied statement on a new read-only connection to the
/// file at `path` (see [`crate::Registry::sql_read_only_within`]).
pub(crate) fn run_read_only(
    path: &Path,
    sql: &str,
    limit: Option<std::time::Duration>,
) -> Result<(Vec<String>, Vec<Vec<serde_json::Value>>)> {
    let conn = Connection::open_with_flags(
        path,
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
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finishing.recv_timeout(limit) {
                interrupt.interrupt();
            }
        });
    }
    let classify = |e: rusqlite::Error| match (e.sqlite_error_code(), limit) {
        (Some(rusqlite::ErrorCode::OperationInterrupted), Some(limit)) => RegistryError::TimedOut {
            seconds: limit.as_secs_f64(),
        },
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
            values.push(value_to_json(row.get_ref(i)?));
        }
        out.push(values);
    }
    Ok((names, out))
}

/// Makes every later commit of `conn` durable against a power failure
/// (`synchronous=FULL`) or only against a killed process (`NORMAL`).
pub(crate) fn set_durable_commits(conn: &Connection, durable: bool) -> Result<()> {
    let level = if durable { "FULL" } else { "NORMAL" };
    conn.pragma_update(None, "synchronous", level)?;
    Ok(())
}

/// How long the write-ahead log may grow while bulk writing before the
/// writer lets it start over. SQLite reuses the log from its beginning
/// only when a write transaction begins after every frame was copied
/// into the database file; a writer that begins its next transaction as
/// soon as it commits never finds that, so the log grew with everything
/// written (10^7 ingested raws: a 5.3 GB log beside a 2.8 GB database; a
/// 10^7-quantum merge writer passed 31 GB). Past this bound the writer
/// waits, once, for the background pass over its last commit (a few
/// seconds per bound's worth of writing) before it begins again.
const BULK_LOG_BOUND_BYTES: i64 = 2 << 30;

thread_local! {
    /// The log's length in frames after the last commit of a bulk-writing
    /// connection on this thread ([`note_log_frames`]).
    static LOG_FRAMES: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// The write-ahead-log hook of a bulk-writing connection: SQLite calls it
/// after each commit, on the committing thread, with the log's length.
fn note_log_frames(_: &rusqlite::hooks::Wal, frames: std::os::raw::c_int) -> rusqlite::Result<()> {
    LOG_FRAMES.set(i64::from(frames));
    Ok(())
}

/// A stretch of many large write transactions on one connection (see
/// [`crate::Registry::set_bulk_writing`]): its commits only append to the
/// write-ahead log while a background thread checkpoints them.
pub(crate) struct BulkWriting {
    checkpointer: BackgroundCheckpointer,
    /// [`BULK_LOG_BOUND_BYTES`] in frames of this database's pages.
    bound_frames: i64,
    /// The log's length in frames at which the writer next waits.
    wait_at_frames: std::cell::Cell<i64>,
    /// The log's length after the last commit seen.
    seen_frames: std::cell::Cell<i64>,
}

impl BulkWriting {
    pub(crate) fn start(conn: &Connection, path: &Path, writes: BulkWrites) -> Result<Self> {
        Self::start_bounded(conn, path, writes, BULK_LOG_BOUND_BYTES)
    }

    fn start_bounded(
        conn: &Connection,
        path: &Path,
        writes: BulkWrites,
        bound_bytes: i64,
    ) -> Result<Self> {
        let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
        // A frame is a page and its 24-byte header.
        let bound_frames = bound_bytes / (page_size + 24);
        let checkpointer = BackgroundCheckpointer::start(path)?;
        // Also removes SQLite's own hook, so it goes first.
        conn.pragma_update(None, "wal_autocheckpoint", 0i64)?;
        conn.wal_hook(Some(note_log_frames));
        match writes {
            BulkWrites::Appending => conn.pragma_update(None, "cache_size", BULK_CACHE_KIB)?,
            BulkWrites::Scattered => {}
        }
        Ok(Self {
            checkpointer,
            bound_frames,
            wait_at_frames: std::cell::Cell::new(bound_frames),
            seen_frames: std::cell::Cell::new(0),
        })
    }

    /// After a commit: lets the background checkpointer copy it, and
    /// waits for that once the log has grown past its bound, so that the
    /// next transaction starts the log over.
    pub(crate) fn committed(&self) {
        let frames = LOG_FRAMES.get();
        if frames < self.seen_frames.get() {
            // Started over since the last commit.
            self.wait_at_frames.set(self.bound_frames);
        }
        self.seen_frames.set(frames);
        if frames >= self.wait_at_frames.get() {
            self.checkpointer.kick_and_wait();
            // A reader holding old frames keeps the log from starting
            // over: then wait again only another bound later.
            self.wait_at_frames.set(frames + self.bound_frames);
        } else {
            self.checkpointer.kick();
        }
    }

    /// Ends bulk writing on `conn`: checkpoints what is left and truncates
    /// the log where no reader holds it.
    pub(crate) fn finish(self, conn: &Connection) -> Result<()> {
        // Joined first: the final checkpoint would wait for its pass.
        drop(self.checkpointer);
        conn.wal_hook(None);
        // Also reinstalls SQLite's own hook.
        conn.pragma_update(None, "wal_autocheckpoint", AUTO_CHECKPOINT_PAGES)?;
        conn.pragma_update(None, "cache_size", CACHE_KIB)?;
        // Readers may still hold old frames; a checkpoint that could not
        // copy or truncate everything is finished by a later one. It
        // must not wait for them: a long `quanta sql` would hold the
        // merge (already committed) for the whole busy timeout.
        conn.busy_timeout(std::time::Duration::ZERO)?;
        let checkpointed = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        conn.busy_timeout(BUSY_TIMEOUT)?;
        match checkpointed {
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) =>
            {
                Ok(())
            }
            other => Ok(other?),
        }
    }
}

/// A thread with its own connection that runs a passive checkpoint after
/// each commit it is told of; stopped and joined on drop.
struct BackgroundCheckpointer {
    kick: Option<std::sync::mpsc::Sender<Kick>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A request for a checkpoint pass, told when it is done or not.
enum Kick {
    Pass,
    PassAndTell(std::sync::mpsc::SyncSender<()>),
}

impl BackgroundCheckpointer {
    fn start(path: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let (kick, kicks) = std::sync::mpsc::channel::<Kick>();
        let thread = std::thread::spawn(move || {
            lower_thread_priority();
            while let Ok(first) = kicks.recv() {
                let waiting: Vec<_> = std::iter::once(first)
                    .chain(std::iter::from_fn(|| kicks.try_recv().ok()))
                    .filter_map(|kick| match kick {
                        Kick::Pass => None,
                        Kick::PassAndTell(done) => Some(done),
                    })
                    .collect();
                // A failed pass leaves its frames to the final
                // checkpoint, which reports errors.
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                for done in waiting {
                    let _ = done.send(());
                }
            }
        });
        Ok(Self {
            kick: Some(kick),
            thread: Some(thread),
        })
    }

    fn kick(&self) {
        if let Some(kick) = &self.kick {
            let _ = kick.send(Kick::Pass);
        }
    }

    /// Kicks a pass and returns once it is done.
    fn kick_and_wait(&self) {
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        if let Some(kick) = &self.kick {
            if kick.send(Kick::PassAndTell(done)).is_ok() {
                let _ = finished.recv();
            }
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

    /// Commits of about 64 pages each, each transaction begun right after
    /// the commit before: the log must start over once past its bound.
    #[test]
    fn bulk_writing_keeps_the_log_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sqlite3");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "page_size", 4096).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
            .unwrap();
        let frame = 4096 + 24;
        let bound = 256 * frame;
        let bulk = BulkWriting::start_bounded(&conn, &path, BulkWrites::Scattered, bound).unwrap();
        let wal = dir.path().join("r.sqlite3-wal");
        let mut longest = 0;
        for i in 0..40 {
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            for j in 0..60 {
                conn.execute(
                    "INSERT INTO t (id, b) VALUES (?1, zeroblob(3000))",
                    [i * 100 + j],
                )
                .unwrap();
            }
            conn.execute_batch("COMMIT").unwrap();
            bulk.committed();
            longest = longest.max(std::fs::metadata(&wal).unwrap().len() as i64);
        }
        let written = 40 * 60 * 3000;
        assert!(longest > bound, "the test writes past the bound: {longest}");
        // The bound, the commit that found it passed, and the one begun
        // before the pass over it was seen.
        assert!(
            longest < bound + 3 * 80 * frame,
            "log grew to {longest} bytes for {written} bytes written (bound {bound})"
        );
        bulk.finish(&conn).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 40 * 60);
    }
}
