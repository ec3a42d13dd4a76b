//! Finding and killing every process a command task started, including
//! those that left its process group (`setsid`, double forks).
//!
//! Each command is started with [`MARKER_ENV`] set to
//! `<bundle id>:<quantum index>:<attempt>:<worker pid>`; descendants inherit
//! it, and `/proc/<pid>/environ` shows it (the environment a process was
//! started with), which is how Jenkins' ProcessTreeKiller finds a build's
//! strays. The worker is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so
//! descendants orphaned by the command's exit are re-parented to it rather
//! than to init, and it reaps those it kills. A resumed execution kills the
//! marked processes of the quanta it is about to run: their worker died
//! (it would otherwise hold their execution lock), so they are strays.
//!
//! Limits: only processes of this host are seen (a Slurm element on
//! another node cleans up its own when it resumes), and a descendant that
//! replaced its whole environment carries no marker; the output pipes are
//! then read only for a short grace period (see `command`). Elsewhere than
//! Linux there is no `/proc` and only the process group is killed.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitOptions};
use uuid::Uuid;

/// The environment variable that marks a command's processes.
pub(crate) const MARKER_ENV: &str = "QUANTA_PROCESS_MARKER";

/// How long to keep killing and reaping a marked tree before giving up on
/// processes that do not die (stuck in uninterruptible sleep).
const KILL_PATIENCE: Duration = Duration::from_secs(5);

/// The pids of command children spawned and not yet reaped by the thread
/// that spawned them: the reaping of killed strays never touches them.
pub(crate) static DIRECT_CHILDREN: Mutex<BTreeSet<libc::pid_t>> = Mutex::new(BTreeSet::new());

/// The marker of one attempt of one quantum.
pub(crate) fn marker(bundle_id: Uuid, quantum: u32, attempt: u32) -> String {
    format!("{bundle_id}:{quantum}:{attempt}:{}", std::process::id())
}

/// Makes this process the reaper of its orphaned descendants (Linux).
pub(crate) fn become_subreaper() {
    #[cfg(target_os = "linux")]
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
}

/// The live processes (not this one) whose marker satisfies `wanted`.
fn find_marked(wanted: &dyn Fn(&str) -> bool) -> Vec<libc::pid_t> {
    let me = std::process::id() as libc::pid_t;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let key = format!("{MARKER_ENV}=");
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Unreadable (another user's) or gone: not ours. A zombie's is empty.
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let found = env
            .split(|&b| b == 0)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .find_map(|v| v.strip_prefix(key.as_str()))
            .is_some_and(wanted);
        if found {
            out.push(pid);
        }
    }
    out
}

/// Parent pid and state letter from `/proc/<pid>/stat`; `None` once gone.
fn parent_and_state(pid: libc::pid_t) -> Option<(libc::pid_t, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S ppid ...`; comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// SIGKILLs every process marked `marker` until none is left, and reaps
/// those re-parented to this process. Returns how many were killed.
pub(crate) fn kill_marked(marker: &str) -> usize {
    kill_where(&|m: &str| m == marker)
}

/// SIGKILLs the marked processes of `bundle_id` whose quantum is in
/// `quanta`: strays of a killed execution. Returns how many were killed.
pub(crate) fn kill_strays(bundle_id: Uuid, quanta: &HashSet<u32>) -> usize {
    let prefix = format!("{bundle_id}:");
    kill_where(&|m: &str| {
        m.strip_prefix(&prefix)
            .and_then(|rest| rest.split(':').next())
            .and_then(|q| q.parse::<u32>().ok())
            .is_some_and(|q| quanta.contains(&q))
    })
}

fn kill_where(wanted: &dyn Fn(&str) -> bool) -> usize {
    let me = std::process::id() as libc::pid_t;
    let t0 = Instant::now();
    let mut killed: HashSet<libc::pid_t> = HashSet::new();
    let mut count = 0;
    loop {
        // A process may fork between the scan and the kill: scan again
        // until a scan finds nobody (the killed cannot fork any more).
        let found = find_marked(wanted);
        for &pid in &found {
            if let Some(pid) = Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
            if killed.insert(pid) {
                count += 1;
            }
        }
        // Reap those that died as our (adopted) children; the others are
        // reaped by their parents or re-parented to us later.
        let direct = DIRECT_CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
        killed.retain(|&pid| match parent_and_state(pid) {
            None => false,
            Some((ppid, 'Z')) if ppid == me => {
                // A direct child is reaped by the thread that spawned it.
                // (`waitpid(None)` would reap any child: never passed.)
                if let (false, Some(zombie)) = (direct.contains(&pid), Pid::from_raw(pid)) {
                    let _ = rustix::process::waitpid(Some(zombie), WaitOptions::NOHANG);
                }
                false
            }
            Some(_) => true,
        });
        drop(direct);
        // Done when every killed process is gone: reaped by us or by its
        // parent (init for the strays of a dead worker).
        if (found.is_empty() && killed.is_empty()) || t0.elapsed() > KILL_PATIENCE {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    count
}
