//! The Python task kind (`python: package.module:Class`): persistent
//! interpreter processes, one per worker slot, fed quantum after quantum
//! over a pipe.
//!
//! # Why processes, not an embedded interpreter
//!
//! The `quanta` binary must build and test where CPython's shared library
//! is absent, so it never links libpython. A worker slot instead owns an
//! interpreter child, `$QUANTA_PYTHON -m quanta._worker` (`python3` when the
//! variable is unset), that imports the bundle's Python tasks once and runs
//! every quantum it is handed in-process: the installed `quanta` package's
//! compiled module opens the same bundle with the same
//! `QuantumBackedButler` and formatters as a Rust task's, so inputs are read
//! and outputs written (atomically, at their predicted paths, under the
//! overwrite rule) by the very code a Rust task uses. One interpreter per
//! slot also answers the GIL: `--jobs N` runs N interpreters, N processes,
//! so Python tasks scale like Rust tasks and never share a GIL.
//!
//! # Protocol
//!
//! Frames both ways are a 4-byte big-endian length and a UTF-8 JSON body;
//! requests go to the interpreter's stdin, replies come back on its stdout
//! (which the interpreter moves away from fd 1 at start, so a task's prints,
//! Python's or C's, cannot corrupt the stream; they go to the quantum's log
//! or to stderr). Requests ([`Request`]): `init` (the bundle, the Python
//! task labels to import; replied to once all are imported and configured)
//! and `run` (quantum index, attempt, whether leftovers may be replaced).
//! Every reply is a [`Reply`]: for `run`, the status, the error (a Python
//! traceback), the outputs written (the records the journal needs), the
//! inputs read, CPU seconds, peak RSS and the task's log lines. The Rust
//! side journals them exactly as a Rust task's.
//!
//! # Failure
//!
//! A Python exception fails the quantum with its traceback; the interpreter
//! goes on. An interpreter that dies (a crash, `os._exit`, a signal, the
//! memory limit: `RLIMIT_AS` is inherited) fails the quantum it was running
//! with its exit status and last stderr lines, and the next quantum starts a
//! fresh interpreter. A timeout kills the interpreter's process group (it
//! runs in its own, and dies with the thread that started it), so no write
//! of a timed-out attempt can land afterwards, unlike an abandoned Rust
//! thread. Files it linked before dying are that attempt's leftovers and
//! are replaced by the next attempt (its Started record is journaled).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use quanta_core::{QuantumStatus, WrittenOutput};
use rustix::process::{Pid, Signal};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::RuntimeError;

/// The environment variable naming the Python interpreter.
pub const PYTHON_ENV: &str = "QUANTA_PYTHON";

/// The module an interpreter runs (`python -m quanta._worker`).
pub const WORKER_MODULE: &str = "quanta._worker";

/// The largest frame accepted (a reply holds records and a log tail, far
/// below this; more means a corrupt stream).
const MAX_FRAME: usize = 64 << 20;

/// Stderr lines of an interpreter kept to explain its death.
const STDERR_TAIL: usize = 40;

/// How long a starting interpreter may take to import the tasks.
const INIT_TIMEOUT: Duration = Duration::from_secs(300);

/// A request to an interpreter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Open `bundle` and import (and configure) the tasks `labels`.
    Init {
        bundle: PathBuf,
        labels: Vec<String>,
    },
    /// Run one attempt of quantum `quantum`.
    Run {
        quantum: u32,
        attempt: u32,
        replace_existing: bool,
    },
}

/// An interpreter's reply. For `init`, `status` is `Succeeded` or `Failed`
/// with the error; the other fields are for `run`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    pub status: ReplyStatus,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub outputs: Vec<WrittenOutput>,
    #[serde(default)]
    pub inputs_used: Vec<Uuid>,
    #[serde(default)]
    pub cpu_seconds: f64,
    #[serde(default)]
    pub peak_rss_bytes: u64,
    #[serde(default)]
    pub log: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyStatus {
    Succeeded,
    #[default]
    Failed,
}

/// Writes one frame.
pub fn write_frame(out: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(body)?;
    out.flush()
}

/// Reads one frame; `None` at a clean end of stream.
pub fn read_frame(input: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "a frame of {len} bytes (more than {MAX_FRAME}): the stream is corrupt"
        )));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body)?;
    Ok(Some(body))
}

/// The interpreter command: `$QUANTA_PYTHON` or `python3`.
fn python_program() -> OsString {
    std::env::var_os(PYTHON_ENV)
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".into())
}

/// One interpreter child and its pipes.
struct Interpreter {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<std::io::Result<Option<Vec<u8>>>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

/// Why an exchange with an interpreter failed.
enum Trouble {
    /// It died or broke the protocol: the message says how.
    Died(String),
    TimedOut,
}

impl Interpreter {
    fn spawn(program: &OsString) -> Result<Self, String> {
        let mut cmd = Command::new(program);
        cmd.args(["-m", WORKER_MODULE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
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
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "cannot start `{} -m {WORKER_MODULE}`: {e}",
                Path::new(program).display()
            )
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("the interpreter's pipes were not set up".into());
        };
        let (tx, replies) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let frame = read_frame(&mut r);
                let end = !matches!(frame, Ok(Some(_)));
                if tx.send(frame).is_err() || end {
                    break;
                }
            }
        });
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr_tail);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                tracing::debug!(target: "quanta::python", "{line}");
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        Ok(Self {
            child,
            stdin,
            replies,
            stderr_tail,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `request` and waits for the reply (at most `timeout`).
    fn exchange(&mut self, request: &Request, timeout: Option<Duration>) -> Result<Reply, Trouble> {
        let body = serde_json::to_vec(request).map_err(|e| Trouble::Died(e.to_string()))?;
        if let Err(e) = write_frame(&mut self.stdin, &body) {
            return Err(Trouble::Died(self.death(&format!("writing to it: {e}"))));
        }
        let frame = match timeout {
            None => self
                .replies
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
            Some(t) => self.replies.recv_timeout(t),
        };
        match frame {
            Ok(Ok(Some(body))) => serde_json::from_slice(&body)
                .map_err(|e| Trouble::Died(self.death(&format!("an unreadable reply: {e}")))),
            Ok(Ok(None)) | Err(RecvTimeoutError::Disconnected) => {
                Err(Trouble::Died(self.death("its reply stream ended")))
            }
            Ok(Err(e)) => Err(Trouble::Died(
                self.death(&format!("reading its reply: {e}")),
            )),
            Err(RecvTimeoutError::Timeout) => Err(Trouble::TimedOut),
        }
    }

    /// Kills and reaps the interpreter; says how it ended and what it
    /// last wrote to stderr.
    fn death(&mut self, what: &str) -> String {
        let pid = self.pid();
        self.kill();
        let how = match self.child.wait() {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(c), _) => format!("exited with code {c}"),
                (_, Some(sig)) => format!("was killed by signal {sig}"),
                _ => format!("ended ({s})"),
            },
            Err(e) => format!("could not be waited for ({e})"),
        };
        // The stderr reader may still be draining the pipe.
        std::thread::sleep(Duration::from_millis(20));
        let tail = self
            .stderr_tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        let mut s = format!("the Python interpreter (pid {pid}) {how}: {what}");
        if !tail.is_empty() {
            s.push_str("; its last output:\n");
            s.push_str(&tail);
        }
        s
    }

    fn kill(&mut self) {
        if let Some(pgid) = Pid::from_raw(self.pid() as i32) {
            // Its own process group: whatever the task started dies too.
            let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
        }
        let _ = self.child.kill();
    }
}

impl Drop for Interpreter {
    fn drop(&mut self) {
        // An interpreter that is still in the pool exits on end of input;
        // it is killed anyway, so nothing outlives the execution.
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
            let _ = self.child.wait();
        }
    }
}

/// The interpreters of one execution: started on demand, one per worker
/// thread at most, reused quantum after quantum.
pub(crate) struct PythonPool {
    program: OsString,
    init: Request,
    idle: Mutex<Vec<Interpreter>>,
}

/// How one Python quantum ended, for the journal.
pub(crate) struct PythonOutcome {
    pub status: QuantumStatus,
    pub error: Option<String>,
    pub outputs: Vec<WrittenOutput>,
    pub inputs_used: Vec<Uuid>,
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
    pub log: Vec<String>,
}

impl PythonPool {
    /// Starts the first interpreter and has it import the tasks `labels`
    /// of `bundle`: a missing interpreter, a missing `quanta` package or a
    /// task that cannot be imported or configured is an error before
    /// anything runs.
    pub fn start(bundle: &Path, labels: Vec<String>) -> Result<Self, RuntimeError> {
        let pool = Self {
            program: python_program(),
            init: Request::Init {
                bundle: std::path::absolute(bundle).unwrap_or_else(|_| bundle.to_path_buf()),
                labels,
            },
            idle: Mutex::new(Vec::new()),
        };
        let first = pool.start_one().map_err(|detail| RuntimeError::Python {
            program: Path::new(&pool.program).display().to_string(),
            detail,
        })?;
        pool.put_back(first);
        Ok(pool)
    }

    fn start_one(&self) -> Result<Interpreter, String> {
        let mut i = Interpreter::spawn(&self.program)?;
        match i.exchange(&self.init, Some(INIT_TIMEOUT)) {
            Ok(r) if r.status == ReplyStatus::Succeeded => Ok(i),
            Ok(r) => Err(r.error.unwrap_or_else(|| "init failed".into())),
            Err(Trouble::TimedOut) => Err(i.death(&format!(
                "importing the tasks took more than {} s",
                INIT_TIMEOUT.as_secs()
            ))),
            Err(Trouble::Died(why)) => Err(why),
        }
    }

    fn take(&self) -> Option<Interpreter> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put_back(&self, i: Interpreter) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(i);
    }

    /// Runs one attempt of quantum `index` in an idle interpreter (or a new
    /// one); a dead or timed-out interpreter is dropped, not reused.
    pub fn run(
        &self,
        index: u32,
        attempt: u32,
        replace_existing: bool,
        timeout: Option<Duration>,
    ) -> PythonOutcome {
        let failed = |status, error: String| PythonOutcome {
            status,
            error: Some(error),
            outputs: Vec::new(),
            inputs_used: Vec::new(),
            cpu_seconds: 0.0,
            peak_rss_bytes: 0,
            log: Vec::new(),
        };
        let mut interp = match self.take() {
            Some(i) => i,
            None => match self.start_one() {
                Ok(i) => i,
                Err(e) => {
                    return failed(
                        QuantumStatus::Failed,
                        format!("cannot start a Python interpreter: {e}"),
                    )
                }
            },
        };
        let request = Request::Run {
            quantum: index,
            attempt,
            replace_existing,
        };
        match interp.exchange(&request, timeout) {
            Ok(r) => {
                self.put_back(interp);
                PythonOutcome {
                    status: match r.status {
                        ReplyStatus::Succeeded => QuantumStatus::Succeeded,
                        ReplyStatus::Failed => QuantumStatus::Failed,
                    },
                    error: r.error,
                    outputs: r.outputs,
                    inputs_used: r.inputs_used,
                    cpu_seconds: r.cpu_seconds,
                    peak_rss_bytes: r.peak_rss_bytes,
                    log: r.log,
                }
            }
            Err(Trouble::Died(why)) => failed(QuantumStatus::Failed, why),
            Err(Trouble::TimedOut) => {
                let pid = interp.pid();
                drop(interp);
                failed(
                    QuantumStatus::TimedOut,
                    format!(
                        "the Python task timed out after {:.3} s; its interpreter (pid {pid}) was killed",
                        timeout.map_or(0.0, |t| t.as_secs_f64())
                    ),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_lengths_are_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"{\"op\":\"x\"}").unwrap();
        write_frame(&mut buf, b"").unwrap();
        let mut r = std::io::Cursor::new(buf);
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"{\"op\":\"x\"}");
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"");
        assert!(read_frame(&mut r).unwrap().is_none());
        let mut huge = std::io::Cursor::new(u32::MAX.to_be_bytes().to_vec());
        assert!(read_frame(&mut huge).is_err());
        let mut cut = std::io::Cursor::new(vec![0, 0, 0, 9, b'{']);
        assert!(read_frame(&mut cut).is_err());
    }

    #[test]
    fn requests_have_the_documented_shape() {
        let r = Request::Run {
            quantum: 3,
            attempt: 1,
            replace_existing: false,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"op": "run", "quantum": 3, "attempt": 1, "replace_existing": false})
        );
        let reply: Reply =
            serde_json::from_str(r#"{"status": "failed", "error": "boom"}"#).unwrap();
        assert_eq!(reply.status, ReplyStatus::Failed);
        assert_eq!(reply.error.as_deref(), Some("boom"));
    }

    #[test]
    fn a_missing_interpreter_is_an_error_naming_it() {
        // `python_program` is read from the environment; a spawn of a path
        // that does not exist fails with its name.
        let e = Interpreter::spawn(&OsString::from("/nonexistent/python3"))
            .err()
            .unwrap();
        assert!(e.contains("/nonexistent/python3"), "{e}");
    }
}
