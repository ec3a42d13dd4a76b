//! The registry's writer lock: one long writer (merge, preflight, ingest)
//! at a time.
//!
//! SQLite serializes single transactions, but a merge is many transactions
//! and a checkpoint; two at once made each other fail with SQLite's raw
//! "database is locked". A long writer therefore holds the registry's
//! writer lock for its whole run, taken per backend
//! ([`WriterLock::acquire`] is the one place that decides):
//!
//! - SQLite: an exclusive `flock` on `<registry>.lock` beside the database.
//!   The kernel releases it when the process dies (`kill -9` included), so
//!   a stale lock file never blocks anyone; its content only names the
//!   holder for the waiting message.
//! - PostgreSQL: a session-level advisory lock (`pg_advisory_lock`) keyed by
//!   the namespace, on a connection of its own held for the lock's life.
//!   The server releases it when that session ends, which it does when the
//!   process dies (the socket closes). The connection's `application_name`
//!   names the holder; a waiter reads it back from `pg_locks` and
//!   `pg_stat_activity`.
//!
//!   The writer's own sessions (a merge writes through two) outlive it by
//!   a moment when the process dies: the server carries out a `COMMIT` it
//!   received before the socket closed, and a statement it is running
//!   runs to its end. A new holder that read the registry meanwhile (a
//!   rerun merge deciding which quanta are new) would see rows appear
//!   under it. So every write transaction of a registry session holds a
//!   second key, [`WriterLock::transactions_key`], shared
//!   (`pg_advisory_xact_lock_shared`, released as it ends), and a new
//!   holder takes that key exclusively once, after the lock: when it
//!   has it, every transaction of the sessions before it has ended.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{RegistryError, Result};
use crate::registry::RegistryLocation;

/// Held while a long writer works on a registry; released on drop.
pub struct WriterLock {
    // The lock lives as long as this open file description or session.
    held: Held,
}

enum Held {
    File { _file: File, path: PathBuf },
    // Boxed: a client is much larger than a file.
    Postgres { _session: Box<postgres::Client> },
}

impl std::fmt::Debug for WriterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.held {
            Held::File { path, .. } => write!(f, "WriterLock({})", path.display()),
            Held::Postgres { .. } => write!(f, "WriterLock(PostgreSQL advisory lock)"),
        }
    }
}

impl WriterLock {
    /// The lock file of the registry database at `registry`.
    pub fn path_for(registry: &Path) -> PathBuf {
        let mut name = registry.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// The advisory lock key of the PostgreSQL registry in `namespace`:
    /// stable across processes and versions (FNV-1a of a fixed prefix and
    /// the namespace), so every quanta computes the same one. Advisory
    /// locks are per database, as namespaces are.
    pub fn advisory_key(namespace: &str) -> i64 {
        fnv1a(b"quanta registry writer lock\0", namespace)
    }

    /// The advisory key every write transaction on the PostgreSQL registry
    /// in `namespace` holds shared (see the module documentation).
    pub fn transactions_key(namespace: &str) -> i64 {
        fnv1a(b"quanta registry transactions\0", namespace)
    }

    /// Takes the writer lock of the registry at `location` for `command`
    /// (e.g. "merge"), waiting for the current holder if there is one:
    /// `on_wait` is called with the holder's description ("merge pid 123
    /// on host h") before waiting, and on PostgreSQL again before waiting
    /// for transactions still open (see the module documentation).
    pub fn acquire(
        location: &RegistryLocation,
        command: &str,
        on_wait: &mut dyn FnMut(&str),
    ) -> Result<Self> {
        let host = quanta_core::host_name();
        let me = format!("{command} pid {} on host {host}", std::process::id());
        let held = match location {
            RegistryLocation::Sqlite(path) => acquire_file(path, &me, on_wait)?,
            RegistryLocation::Postgres { url, namespace } => {
                acquire_advisory(url, namespace, &me, on_wait)?
            }
        };
        Ok(Self { held })
    }

    /// The lock file, on SQLite; `None` on PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        match &self.held {
            Held::File { path, .. } => Some(path),
            Held::Postgres { .. } => None,
        }
    }
}

/// FNV-1a of `prefix` then `namespace`, as a signed advisory lock key.
fn fnv1a(prefix: &[u8], namespace: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in prefix.iter().chain(namespace.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

fn acquire_file(registry: &Path, me: &str, on_wait: &mut dyn FnMut(&str)) -> Result<Held> {
    let path = WriterLock::path_for(registry);
    let io = |what: &str, e: std::io::Error| {
        RegistryError::Invalid(format!(
            "{}: cannot {what} the registry's writer lock: {e}",
            path.display()
        ))
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io("open", e))?;
    let free = match file.try_lock() {
        Ok(()) => true,
        Err(std::fs::TryLockError::WouldBlock) => false,
        Err(std::fs::TryLockError::Error(e)) => return Err(io("take", e)),
    };
    if !free {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        on_wait(if holder.is_empty() {
            "another writer"
        } else {
            holder
        });
        file.lock().map_err(|e| io("wait for", e))?;
    }
    // Best effort: the description is only for others' messages.
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(me.as_bytes()));
    Ok(Held::File { _file: file, path })
}

fn acquire_advisory(
    url: &str,
    namespace: &str,
    me: &str,
    on_wait: &mut dyn FnMut(&str),
) -> Result<Held> {
    let mut session = crate::postgres::connection::connect(url)?;
    let failed = |what: &str, e: postgres::Error| {
        RegistryError::from(crate::error::DatabaseError::new(
            crate::error::DatabaseErrorKind::Unavailable,
            format!(
                "{url} (namespace {namespace}): cannot {what} the registry's writer lock: {}",
                crate::postgres::connection::with_causes(&e)
            ),
        ))
    };
    // Named before locking, so whoever waits for this session can say who
    // it is (application_name is at most 63 bytes; the server truncates).
    session
        .execute("SELECT set_config('application_name', $1, false)", &[&me])
        .map_err(|e| failed("name", e))?;
    // The session idles for the whole run of the writer: a server that
    // ends idle sessions (PostgreSQL 14's idle_session_timeout) would
    // release the lock under it. Best effort: older servers lack the
    // setting, and have no such timeout.
    let _ = session.execute("SELECT set_config('idle_session_timeout', '0', false)", &[]);
    let key = WriterLock::advisory_key(namespace);
    let free: bool = session
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .map_err(|e| failed("take", e))?
        .get(0);
    if !free {
        let holder = advisory_holder(&mut session, key).unwrap_or_default();
        on_wait(if holder.is_empty() {
            "another writer"
        } else {
            &holder
        });
        session
            .execute("SELECT pg_advisory_lock($1)", &[&key])
            .map_err(|e| failed("wait for", e))?;
    }
    // The transactions of earlier holders' sessions, ended: the key held
    // exclusively for a moment, in a transaction of its own.
    let transactions = WriterLock::transactions_key(namespace);
    let not_drained = |e: postgres::Error| {
        failed(
            "wait for the earlier writers' transactions before taking",
            e,
        )
    };
    let mut drain = session.transaction().map_err(not_drained)?;
    let ended: bool = drain
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&transactions])
        .map_err(not_drained)?
        .get(0);
    if !ended {
        on_wait("the transactions still open in the registry (an earlier writer's, or short ones)");
        drain
            .execute("SELECT pg_advisory_xact_lock($1)", &[&transactions])
            .map_err(not_drained)?;
    }
    drain.commit().map_err(not_drained)?;
    Ok(Held::Postgres {
        _session: Box::new(session),
    })
}

/// The `application_name` of the session holding the advisory lock `key`
/// of this database. A bigint key is stored in `pg_locks` as its high half
/// in `classid` and its low half in `objid`, with `objsubid` 1.
fn advisory_holder(session: &mut postgres::Client, key: i64) -> Option<String> {
    let (high, low) = ((key as u64 >> 32) as i64, (key as u64 & 0xffff_ffff) as i64);
    let row = session
        .query_opt(
            "SELECT a.application_name FROM pg_locks l \
             JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND l.classid::bigint = $1 AND l.objid::bigint = $2 \
             LIMIT 1",
            &[&high, &low],
        )
        .ok()??;
    row.get::<_, Option<String>>(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advisory_key_is_stable_and_per_namespace() {
        // Every quanta, of every version, must compute the same key.
        // (pinned: a changed key would let an old and a new quanta write
        // one registry at once)
        assert_eq!(WriterLock::advisory_key("repo"), -5_795_364_675_204_524_188);
        assert_ne!(
            WriterLock::advisory_key("repo_a"),
            WriterLock::advisory_key("repo_b")
        );
    }
}
