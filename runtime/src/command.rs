//! The external command task kind: a JSON manifest of the quantum's inputs
//! and outputs, a child process, and verification of what it wrote.
//!
//! Outputs are written safely: the manifest gives the command, for each
//! predicted output, a temporary `path` in the final file's directory (a
//! `.tmp-` name owned by the final path, see
//! `quanta_datastore::temp_file_prefix`, so a resume removes it if this
//! worker dies) and the `final_path` for information. Only after the command
//! exits 0 are the temporaries hashed and moved into place under the limited
//! butler's overwrite rule, so a killed or failing command never leaves a
//! file at a predicted path. The manifest is written to
//! `<journal dir>/manifests/q<index>-…json` and removed after the attempt;
//! a resume removes those of the quanta it runs.
//!
//! The child runs in its own process group and, on Linux, dies with the
//! worker thread that started it. When it exits or is killed (the timeout
//! kills its group), every process it left behind is killed too, those that
//! left the group included (`process_tree`: an environment marker, the
//! worker as child subreaper); its output is then read for a short grace
//! only, so nothing it started can hold the worker, and a timed-out attempt
//! is always `TimedOut`. std's process API plus `waitid`/`wait4` is used
//! rather than tokio's: tokio reaps the child itself and exposes no resource
//! usage, and the journal wants the child's exact CPU time and peak memory.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use quanta_core::{BundleQuantum, BundleRef, QuantumStatus};
use quanta_datastore::temp_file_prefix;
use quanta_limited_registry::{LimitedRegistry, LogTail, QuantumBackedButler, ResourceUsage};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
use serde_json::{json, Map, Value};

use crate::process_tree::{kill_marked, marker, DIRECT_CHILDREN, MARKER_ENV};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// How long output is still read once the command and every marked
/// descendant are dead.
const READ_GRACE: Duration = Duration::from_secs(2);

/// `q<index>-a<attempt>-<pid>-<n>.json`: the quantum first, so that a
/// resume can remove the manifests of the quanta it runs.
fn manifest_file_name(index: u32, attempt: u32, n: u64) -> String {
    format!("q{index}-a{attempt}-{}-{n}.json", std::process::id())
}

/// The quantum a manifest file name belongs to.
pub(crate) fn manifest_quantum(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix('q')?;
    rest[..rest.find('-')?].parse().ok()
}

/// How a command attempt ended.
pub(crate) struct CommandResult {
    pub status: QuantumStatus,
    pub exit_code: Option<i32>,
    pub usage: ResourceUsage,
    pub error: Option<String>,
}

fn failed(error: String) -> CommandResult {
    CommandResult {
        status: QuantumStatus::Failed,
        exit_code: None,
        usage: ResourceUsage::default(),
        error: Some(error),
    }
}

fn ref_json(r: &BundleRef, path: &Path) -> Value {
    json!({
        "id": r.id,
        "dataset_type": r.dataset_type,
        "data_id": r.data_id,
        "path": path,
    })
}

/// Files this attempt created that must not outlive it (manifest, output
/// temporaries not adopted).
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Runs `argv` for the butler's quantum.
pub(crate) fn run_command(
    butler: &mut QuantumBackedButler,
    argv: &[String],
    config: &Value,
    attempt: u32,
    timeout: Option<Duration>,
    manifest_dir: &Path,
    log: &mut LogTail,
) -> CommandResult {
    let registry = Arc::clone(butler.registry());
    let marker = marker(
        registry.bundle().header().bundle_id,
        butler.index(),
        attempt,
    );
    let mut cleanup = Cleanup(Vec::new());
    let prepared =
        plan_outputs(&registry, butler.quantum(), &mut cleanup).and_then(|(outputs, temps)| {
            let manifest = Manifest {
                butler,
                config,
                attempt,
                outputs,
            };
            let path = manifest.write(manifest_dir, &mut cleanup)?;
            Ok((path, temps))
        });
    let (manifest_path, temps) = match prepared {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    let mp = manifest_path.to_string_lossy().into_owned();
    let args: Vec<String> = argv.iter().map(|a| a.replace("{manifest}", &mp)).collect();
    let shown = args.join(" ");
    log.push_line(&format!("$ {shown}"));
    let child = match spawn(butler, &args, &mp, attempt, &marker) {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    let waited = capture_and_wait(child, log, timeout, &marker, butler.index());
    let (raw_status, usage, timed_out) = match waited {
        Ok(w) => w,
        Err(e) => return failed(format!("waiting for `{shown}`: {e}")),
    };
    let mut result = CommandResult {
        status: QuantumStatus::Failed,
        exit_code: None,
        usage,
        error: None,
    };
    if timed_out {
        result.status = QuantumStatus::TimedOut;
        result.error = Some(format!(
            "command timed out after {:.3} s and was killed",
            timeout.map(|t| t.as_secs_f64()).unwrap_or(0.0)
        ));
        return result;
    }
    if libc::WIFEXITED(raw_status) {
        let code = libc::WEXITSTATUS(raw_status);
        result.exit_code = Some(code);
        if code != 0 {
            result.error = Some(format!("command exited with code {code}: {shown}"));
            return result;
        }
    } else if libc::WIFSIGNALED(raw_status) {
        result.error = Some(format!(
            "command killed by signal {}: {shown}",
            libc::WTERMSIG(raw_status)
        ));
        return result;
    }
    match adopt_outputs(butler, &temps) {
        Ok(()) => result.status = QuantumStatus::Succeeded,
        Err(e) => result.error = Some(e),
    }
    result
}

/// An output the command writes to a temporary path beside its final one:
/// (connection, dataset id, temporary path).
type OutputTemp = (String, uuid::Uuid, PathBuf);

/// Where each output is to be written: the manifest's `outputs` (with the
/// temporary and the final path of each) and the temporaries, registered
/// for cleanup.
fn plan_outputs(
    registry: &LimitedRegistry,
    q: &BundleQuantum,
    cleanup: &mut Cleanup,
) -> Result<(Map<String, Value>, Vec<OutputTemp>), String> {
    let pid = std::process::id();
    let mut outputs = Map::new();
    let mut temps = Vec::new();
    for (conn, refs) in &q.outputs {
        let mut list = Vec::new();
        for r in refs {
            let dest = registry
                .output_path(r)
                .map_err(|e| format!("output {conn}: {e}"))?;
            let dir = dest.parent().unwrap_or(Path::new("/"));
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let ext = Path::new(&r.path)
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.split_once('.'))
                .map(|(_, e)| format!(".{e}"))
                .unwrap_or_default();
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let tmp = dir.join(format!("{}cmd-{pid}-{n}{ext}", temp_file_prefix(&dest)));
            cleanup.0.push(tmp.clone());
            let mut o = ref_json(r, &tmp);
            o["final_path"] = json!(dest);
            list.push(o);
            temps.push((conn.clone(), r.id, tmp));
        }
        outputs.insert(conn.clone(), Value::Array(list));
    }
    Ok((outputs, temps))
}

/// The JSON file that tells the command what to read and where to write.
struct Manifest<'a> {
    butler: &'a QuantumBackedButler,
    config: &'a Value,
    attempt: u32,
    outputs: Map<String, Value>,
}

impl Manifest<'_> {
    /// Writes the manifest into `dir` (removed with `cleanup`).
    fn write(self, dir: &Path, cleanup: &mut Cleanup) -> Result<PathBuf, String> {
        let butler = self.butler;
        let registry = butler.registry();
        let q = butler.quantum();
        let refs_map = |c: &quanta_core::bundle::ConnectionRefs| -> Result<Value, String> {
            let mut m = Map::new();
            for (conn, refs) in c {
                let list = refs
                    .iter()
                    .map(|r| {
                        registry
                            .abs_path(r)
                            .map(|p| ref_json(r, &p))
                            .map_err(|e| format!("input {conn}: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                m.insert(conn.clone(), Value::Array(list));
            }
            Ok(Value::Object(m))
        };
        let manifest = json!({
            "quanta_manifest_version": 1,
            "quantum": butler.index(),
            "quantum_id": q.id,
            "task": butler.task().label,
            "data_id": q.data_id,
            "attempt": self.attempt,
            "bundle": registry.bundle().path(),
            "run": registry.bundle().header().output_run,
            "config": self.config,
            "inputs": refs_map(&q.inputs)?,
            "prerequisites": refs_map(&q.prerequisites)?,
            "outputs": Value::Object(self.outputs),
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let path = dir.join(manifest_file_name(butler.index(), self.attempt, n));
        cleanup.0.push(path.clone());
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| format!("encoding the manifest: {e}"))?;
        std::fs::write(&path, text)
            .map_err(|e| format!("writing the manifest {}: {e}", path.display()))?;
        Ok(path)
    }
}

/// Starts the command in its own process group, with the quantum in its
/// environment and the marker that finds its descendants.
fn spawn(
    butler: &QuantumBackedButler,
    args: &[String],
    manifest: &str,
    attempt: u32,
    marker: &str,
) -> Result<Child, String> {
    let q = butler.quantum();
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("QUANTA_MANIFEST", manifest)
        .env("QUANTA_QUANTUM", butler.index().to_string())
        .env("QUANTA_QUANTUM_ID", q.id.to_string())
        .env("QUANTA_TASK", &butler.task().label)
        .env("QUANTA_DATA_ID", q.data_id.to_string())
        .env("QUANTA_ATTEMPT", attempt.to_string())
        .env("QUANTA_BUNDLE", butler.registry().bundle().path())
        .env(MARKER_ENV, marker)
        .process_group(0);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and allocates nothing; nothing
    // else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            Ok(())
        });
    }
    // Registered before any reaping of strays can see it exit.
    let mut direct = DIRECT_CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
    cmd.spawn()
        .inspect(|c| {
            direct.insert(c.id() as libc::pid_t);
        })
        .map_err(|e| format!("cannot start `{}`: {e}", args[0]))
}

/// Copies the child's stdout and stderr into `log` while waiting for it
/// (see [`wait_with_timeout`]).
fn capture_and_wait(
    mut child: Child,
    log: &mut LogTail,
    timeout: Option<Duration>,
    marker: &str,
    index: u32,
) -> std::io::Result<(libc::c_int, ResourceUsage, bool)> {
    let child_pid = child.id() as libc::pid_t;
    let shared_log = Arc::new(Mutex::new(std::mem::take(log)));
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut src| {
        let log = Arc::clone(&shared_log);
        let done = done_tx.clone();
        std::thread::spawn(move || {
            let _done = done; // dropped (disconnecting) when reading ends
            let mut buf = [0u8; 8192];
            while let Ok(n) = src.read(&mut buf) {
                if n == 0 {
                    break;
                }
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_bytes(&buf[..n]);
            }
        })
    })
    .collect();
    drop(done_tx);

    let waited = wait_with_timeout(child_pid, timeout, marker);
    // Already reaped by wait4; dropping does not wait or kill.
    drop(child);
    // Every marked process is dead now, so the pipes are closed, unless a
    // descendant dropped the marker (a fresh environment) and holds them:
    // read for a short grace only, then leave the readers behind.
    let all_read = matches!(
        done_rx.recv_timeout(READ_GRACE),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected)
    );
    if all_read {
        for r in readers {
            let _ = r.join();
        }
    } else {
        tracing::warn!(
            "quantum {index}: a process outside the command's tree still holds its output open; its output after now is not logged"
        );
    }
    *log = match Arc::try_unwrap(shared_log) {
        Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
        Err(a) => a.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    };
    log.flush();
    waited
}

/// After a successful exit: every predicted output was written, and each
/// is adopted into the datastore.
fn adopt_outputs(butler: &mut QuantumBackedButler, temps: &[OutputTemp]) -> Result<(), String> {
    let missing: Vec<String> = temps
        .iter()
        .filter(|(_, _, tmp)| !tmp.is_file())
        .map(|(conn, _, tmp)| format!("{conn} (expected at {})", tmp.display()))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "command exited 0 but did not write predicted output(s): {}",
            missing.join(", ")
        ));
    }
    for (conn, id, tmp) in temps {
        butler
            .adopt_file(conn, *id, tmp)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// SIGKILL to the process group `pgid` (a child's own group, from
/// `process_group(0)`); a group already gone is not an error here.
fn kill_group(pgid: libc::pid_t) {
    if let Some(pgid) = Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
    }
}

/// Waits for `pid` to exit, killing its process group at the deadline.
/// Returns the raw wait status, the child's resource usage and whether it
/// was killed for the timeout.
fn wait_with_timeout(
    pid: libc::pid_t,
    timeout: Option<Duration>,
    marker: &str,
) -> std::io::Result<(libc::c_int, ResourceUsage, bool)> {
    // The watchdog may signal the group only while the child is unreaped:
    // `waitid(WNOWAIT)` below sees the exit without reaping, so the pid (and
    // process group id) cannot have been reused when the watchdog fires.
    let state = Arc::new((Mutex::new((false, false)), Condvar::new())); // (exited, killed)
    let watchdog = timeout.map(|t| {
        let state = Arc::clone(&state);
        std::thread::spawn(move || {
            let deadline = Instant::now() + t;
            let (lock, cv) = &*state;
            let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
            while !g.0 {
                let now = Instant::now();
                if now >= deadline {
                    kill_group(pid);
                    g.1 = true;
                    break;
                }
                g = cv
                    .wait_timeout(g, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        })
    });
    let child = Pid::from_raw(pid).ok_or_else(|| std::io::Error::other("child pid 0"))?;
    loop {
        match rustix::process::waitid(
            WaitId::Pid(child),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let killed = {
        let (lock, cv) = &*state;
        let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = true;
        cv.notify_all();
        g.1
    };
    if let Some(w) = watchdog {
        let _ = w.join();
    }
    // Stray grandchildren would keep the output pipes open; the group id is
    // still reserved by the unreaped child, so this reaches only them.
    kill_group(pid);
    // And those that left the group (setsid): found by the marker.
    let strays = kill_marked(marker);
    if strays > 0 {
        tracing::debug!("killed {strays} process(es) the command left behind");
    }
    let mut status: libc::c_int = 0;
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    loop {
        // SAFETY: wait4 fills status and rusage for our own child.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, ru.as_mut_ptr()) };
        if rc == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if rc < 0 && e.kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return Err(e);
    }
    DIRECT_CHILDREN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&pid);
    // SAFETY: zeroed, and filled by a successful wait4.
    let ru = unsafe { ru.assume_init() };
    Ok((status, ResourceUsage::from_rusage(&ru), killed))
}
