//! Fault injection for the crash-matrix tests (`cli/tests/crash_matrix.rs`):
//! named kill points in the code that writes, at which a test can make the
//! process die by `SIGKILL`, exactly as a `kill -9` from outside would, but
//! at a point chosen from the process's own progress rather than a timing.
//!
//! Two environment variables, read once per process:
//!
//! - `QUANTA_TEST_KILL_AT=POINT:N` — the `N`th time (counting from 1, over
//!   all threads) the process passes kill point `POINT`, it sends itself
//!   `SIGKILL`. No cleanup runs: no destructor, no rollback, no flush.
//! - `QUANTA_TEST_KILL_LOG=FILE` — every passage of any kill point appends
//!   the point's name and a newline to `FILE`, so a test can count how often
//!   an uninterrupted command passes each point and choose `N` (first,
//!   middle, last) from that.
//!
//! With neither set (always, outside these tests) a kill point costs one
//! atomic load and does nothing. A malformed `QUANTA_TEST_KILL_AT` is
//! reported once on stderr and otherwise ignored: this is a test aid, not
//! an interface.
//!
//! The points (see where each is called for the exact spot):
//!
//! | point | where |
//! |---|---|
//! | `datastore.temp_written` | a datastore write's temporary file is complete, not yet linked into place |
//! | `datastore.linked` | a file is at its final datastore path (a write's temporary name not yet removed; an ingest's source not yet removed) |
//! | `registry.commit` | inside a registry write transaction's commit, before it is durable (SQLite's commit hook; on PostgreSQL, before COMMIT is sent) |
//! | `ingest-transferred` | an ingest has put its Nth file into the datastore |
//! | `ingest-before-commit` | an ingest has transferred every file, its registry transaction not begun |
//! | `ingest-committed` | an ingest's registry transaction has committed, before its sources are removed (move) |
//! | `ingest-source-removed` | a move has removed its Nth source after the commit |
//! | `journal.appended` | a journal record has been written |
//! | `remove.marked` | a removal has recorded what goes in the registry's trash, no file unlinked yet |
//! | `remove.unlinked` | a removal has unlinked its Nth file (registry rows not yet deleted) |

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The environment variable naming the kill point and its count.
pub const KILL_AT_ENV: &str = "QUANTA_TEST_KILL_AT";
/// The environment variable naming the file that logs every passage.
pub const KILL_LOG_ENV: &str = "QUANTA_TEST_KILL_LOG";

pub const DATASTORE_TEMP_WRITTEN: &str = "datastore.temp_written";
pub const DATASTORE_LINKED: &str = "datastore.linked";
pub const REGISTRY_COMMIT: &str = "registry.commit";
pub const INGEST_TRANSFERRED: &str = "ingest-transferred";
pub const INGEST_BEFORE_COMMIT: &str = "ingest-before-commit";
pub const INGEST_COMMITTED: &str = "ingest-committed";
pub const INGEST_SOURCE_REMOVED: &str = "ingest-source-removed";
pub const JOURNAL_APPENDED: &str = "journal.appended";
pub const REMOVE_MARKED: &str = "remove.marked";
pub const REMOVE_UNLINKED: &str = "remove.unlinked";

struct Armed {
    kill_at: Option<(String, u64)>,
    log: Option<Mutex<std::fs::File>>,
}

static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
static PASSAGES: AtomicU64 = AtomicU64::new(0);

fn armed() -> Option<&'static Armed> {
    ARMED
        .get_or_init(|| {
            let kill_at = std::env::var(KILL_AT_ENV).ok().and_then(|v| {
                let parsed = v
                    .rsplit_once(':')
                    .and_then(|(point, n)| Some((point.to_string(), n.parse::<u64>().ok()?)))
                    .filter(|(_, n)| *n > 0);
                if parsed.is_none() {
                    eprintln!("warning: ignoring {KILL_AT_ENV}={v:?}: expected POINT:N, N >= 1");
                }
                parsed
            });
            let log = std::env::var_os(KILL_LOG_ENV).and_then(|path| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map(Mutex::new)
                    .map_err(|e| eprintln!("warning: {KILL_LOG_ENV}: cannot open {path:?}: {e}"))
                    .ok()
            });
            (kill_at.is_some() || log.is_some()).then_some(Armed { kill_at, log })
        })
        .as_ref()
}

/// Whether a test has armed kill point `point` (or logs every point): lets
/// a caller install something costly, such as an SQLite commit hook, only
/// when it can matter.
pub fn is_armed(point: &str) -> bool {
    armed().is_some_and(|a| a.log.is_some() || a.kill_at.as_ref().is_some_and(|(p, _)| p == point))
}

/// Passes kill point `point`: logs it, and kills the process if this is the
/// passage the test asked for.
pub fn kill_point(point: &str) {
    let Some(armed) = armed() else {
        return;
    };
    if let Some(log) = &armed.log {
        let mut file = log.lock().unwrap_or_else(|e| e.into_inner());
        let _ = file.write_all(format!("{point}\n").as_bytes());
    }
    if let Some((at, n)) = &armed.kill_at {
        if at == point && PASSAGES.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            kill_self();
        }
    }
}

fn kill_self() -> ! {
    // SIGKILL cannot be caught: the call does not return (abort if refused).
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    std::process::abort()
}
