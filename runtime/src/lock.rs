//! Exclusion between executions of one bundle: no two processes ever run
//! the same quantum at once.
//!
//! Every execution locks, in `<journal dir>/execution.lock`, one byte per
//! quantum it may run (byte `i` for quantum `i`): `quanta run` locks the
//! whole file, a worker only its share. Workers of disjoint shares (Slurm
//! array elements on different nodes sharing the journal directory) hold
//! disjoint bytes and run together; a `run` and anything else, or two
//! workers whose shares overlap, conflict. The locks are open-file-
//! description byte-range locks (`F_OFD_SETLK`; plain POSIX record locks
//! elsewhere), which NFS carries to the server, which the kernel drops
//! when the holder dies (so a killed run never leaves a stale lock), and
//! which threads of one process do not share.
//!
//! A contender refuses rather than waits: a second `run` would only find
//! everything done once the first ends, and a batch job that waits burns
//! its allocation; refusing says at once who holds the quanta. Since a
//! byte-range lock does not name its holder, each holder also writes
//! `<journal dir>/holders/<host>-<pid>-<n>.json` (pid, host, command line, its
//! quanta) and removes it when done; the refusal quotes the holders whose
//! quanta overlap (a holder file of a dead process on this host is removed;
//! one of another host is quoted as it is).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use quanta_limited_registry::host_name;
use serde::{Deserialize, Serialize};

use crate::error::RuntimeError;

const LOCK_FILE: &str = "execution.lock";
const HOLDERS_DIR: &str = "holders";

/// The quanta an execution may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LockScope {
    /// Every quantum of the bundle (`quanta run`).
    All,
    /// These quantum indices, sorted and without duplicates.
    Quanta(Vec<u32>),
}

impl LockScope {
    /// Inclusive ranges of consecutive indices; `None` for all.
    fn ranges(&self) -> Option<Vec<(u32, u32)>> {
        let LockScope::Quanta(list) = self else {
            return None;
        };
        let mut out: Vec<(u32, u32)> = Vec::new();
        for &i in list {
            match out.last_mut() {
                Some((_, end)) if end.checked_add(1) == Some(i) => *end = i,
                _ => out.push((i, i)),
            }
        }
        Some(out)
    }

    fn describe(&self) -> String {
        match self.ranges() {
            None => "all quanta".to_string(),
            Some(r) => {
                let parts: Vec<String> = r
                    .iter()
                    .map(|&(a, b)| {
                        if a == b {
                            a.to_string()
                        } else {
                            format!("{a}-{b}")
                        }
                    })
                    .collect();
                format!("quanta {}", parts.join(","))
            }
        }
    }

    fn overlaps(&self, other: &LockScope) -> bool {
        match (self.ranges(), other.ranges()) {
            (Some(a), Some(b)) => a
                .iter()
                .any(|&(s, e)| b.iter().any(|&(t, f)| s <= f && t <= e)),
            _ => true,
        }
    }
}

/// Who holds (or held) a lock, as written to its holder file.
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    host: String,
    command: String,
    /// `None`: all quanta.
    quanta: Option<Vec<(u32, u32)>>,
    since: String,
}

impl Holder {
    fn scope(&self) -> LockScope {
        match &self.quanta {
            None => LockScope::All,
            Some(r) => LockScope::Quanta(r.iter().flat_map(|&(a, b)| a..=b).collect()),
        }
    }
}

/// Held while an execution runs; dropping it removes the holder file and
/// releases the lock.
#[derive(Debug)]
pub(crate) struct ExecutionLock {
    _file: File,
    holder_file: PathBuf,
}

impl Drop for ExecutionLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.holder_file);
    }
}

/// Locks `scope` in `journal_dir` (created if missing) or refuses with
/// [`RuntimeError::Busy`] naming the holders.
pub(crate) fn lock_execution(
    journal_dir: &Path,
    scope: &LockScope,
) -> Result<ExecutionLock, RuntimeError> {
    let io = |what: &str, path: &Path, e: std::io::Error| RuntimeError::Lock {
        path: path.to_path_buf(),
        detail: format!("{what}: {e}"),
    };
    std::fs::create_dir_all(journal_dir.join(HOLDERS_DIR))
        .map_err(|e| io("creating the directory", journal_dir, e))?;
    let path = journal_dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io("opening", &path, e))?;
    let ranges: Vec<(u64, u64)> = match scope.ranges() {
        // Length 0 locks to the end of every possible file.
        None => vec![(0, 0)],
        Some(r) => r
            .iter()
            .map(|&(a, b)| (u64::from(a), u64::from(b) - u64::from(a) + 1))
            .collect(),
    };
    for (start, len) in ranges {
        match set_write_lock(&file, start, len) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => {
                return Err(RuntimeError::Busy {
                    dir: journal_dir.to_path_buf(),
                    wanted: scope.describe(),
                    holders: describe_holders(journal_dir, scope),
                });
            }
            Err(e) => return Err(io("locking", &path, e)),
        }
    }
    let host = host_name();
    let pid = std::process::id();
    let holder = Holder {
        pid,
        host: host.clone(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        quanta: scope.ranges(),
        since: quanta_core::now_rfc3339(),
    };
    static HELD: AtomicU32 = AtomicU32::new(0);
    let n = HELD.fetch_add(1, Ordering::Relaxed);
    let holder_file = journal_dir
        .join(HOLDERS_DIR)
        .join(format!("{}-{pid}-{n}.json", file_safe(&host)));
    let text = serde_json::to_vec(&holder).unwrap_or_default();
    std::fs::write(&holder_file, text).map_err(|e| io("writing", &holder_file, e))?;
    Ok(ExecutionLock {
        _file: file,
        holder_file,
    })
}

fn set_write_lock(file: &File, start: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: an all-zero flock is a valid value of this plain C struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = start as libc::off_t;
    fl.l_len = len as libc::off_t;
    let set = |cmd: libc::c_int| {
        // SAFETY: fcntl on an open descriptor with a valid flock.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &fl) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    #[cfg(target_os = "linux")]
    match set(libc::F_OFD_SETLK) {
        // A kernel before 3.15: process-wide POSIX locks, which suffice
        // since one process runs one execution of a bundle at a time.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => set(libc::F_SETLK),
        other => other,
    }
    #[cfg(not(target_os = "linux"))]
    set(libc::F_SETLK)
}

/// The holders whose quanta overlap `scope`, one per line.
fn describe_holders(journal_dir: &Path, scope: &LockScope) -> String {
    let here = host_name();
    let mut lines = Vec::new();
    let Ok(entries) = std::fs::read_dir(journal_dir.join(HOLDERS_DIR)) else {
        return String::new();
    };
    for entry in entries.flatten() {
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        let Ok(h) = serde_json::from_slice::<Holder>(&bytes) else {
            continue;
        };
        if h.host == here && !process_alive(h.pid) {
            // A holder killed before it could remove its file.
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        if h.scope().overlaps(scope) {
            lines.push(format!(
                "pid {} on host {} ({}) since {}, holding {}",
                h.pid,
                h.host,
                h.command,
                h.since,
                h.scope().describe()
            ));
        }
    }
    lines.sort();
    lines.join("; ")
}

fn process_alive(pid: u32) -> bool {
    let Some(pid) = libc::pid_t::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    // Signal 0 only checks that the process exists (EPERM: it does, as
    // another user's).
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lock of `scope` once the locks that overlap it were dropped.
    /// Other tests of this process start children: a fork between this
    /// test's open and its child's exec holds a copy of the lock file's
    /// descriptor, and with it the lock, until the exec closes it (the
    /// descriptor is close-on-exec), so a lock just released may still
    /// be held for a moment.
    fn lock_after_release(dir: &Path, scope: &LockScope) -> ExecutionLock {
        let t0 = std::time::Instant::now();
        loop {
            match lock_execution(dir, scope) {
                Ok(lock) => return lock,
                Err(RuntimeError::Busy { holders, .. })
                    if holders.is_empty() && t0.elapsed() < std::time::Duration::from_secs(10) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn overlapping_shares_conflict_and_disjoint_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let a = lock_execution(dir.path(), &LockScope::Quanta(vec![0, 1, 2, 7])).unwrap();
        let b = lock_execution(dir.path(), &LockScope::Quanta(vec![3, 4, 8])).unwrap();
        let e = lock_execution(dir.path(), &LockScope::Quanta(vec![5, 7])).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, RuntimeError::Busy { .. }), "{text}");
        assert!(text.contains("quanta 0-2,7"), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        let e = lock_execution(dir.path(), &LockScope::All).unwrap_err();
        assert!(matches!(e, RuntimeError::Busy { .. }), "{e}");
        drop(a);
        drop(b);
        let all = lock_after_release(dir.path(), &LockScope::All);
        let e = lock_execution(dir.path(), &LockScope::Quanta(vec![9])).unwrap_err();
        assert!(e.to_string().contains("all quanta"), "{e}");
        drop(all);
        lock_after_release(dir.path(), &LockScope::Quanta(vec![9]));
    }
}
