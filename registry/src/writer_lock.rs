//! The registry's writer lock: one long writer (merge, preflight, ingest)
//! at a time.
//!
//! SQLite serializes single transactions, but a merge is many transactions
//! and a checkpoint; two at once made each other fail with SQLite's raw
//! "database is locked". A long writer therefore holds an exclusive
//! `flock` on `<registry>.lock` beside the database for its whole run. The
//! kernel releases the lock when the process dies (`kill -9` included), so
//! a stale lock file never blocks anyone; its content only names the
//! holder for the waiting message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{RegistryError, Result};

/// Held while a long writer works on a registry; released on drop.
#[derive(Debug)]
pub struct WriterLock {
    // The lock lives as long as this open file description.
    _file: File,
    path: PathBuf,
}

impl WriterLock {
    /// The lock file of the registry database at `registry`.
    pub fn path_for(registry: &Path) -> PathBuf {
        let mut name = registry.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the writer lock of the registry database at `registry` for
    /// `command` (e.g. "merge"), waiting for the current holder if there is
    /// one: `on_wait` is called once, with the holder's description
    /// ("merge pid 123 on host h"), before waiting.
    pub fn acquire(registry: &Path, command: &str, on_wait: &mut dyn FnMut(&str)) -> Result<Self> {
        let path = Self::path_for(registry);
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
        let host = quanta_core::host_name();
        let me = format!("{command} pid {} on host {host}", std::process::id());
        // Best effort: the description is only for others' messages.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(me.as_bytes()));
        Ok(Self { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
