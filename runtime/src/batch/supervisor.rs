//! The memory supervisor every batch worker uses: batch systems without a
//! cgroup memory controller (Slurm here) do not enforce a job's memory
//! request, so the worker re-runs itself as a child under `RLIMIT_AS`
//! ([`run_supervised`]) and, when the child dies by a signal, journals
//! `OutOfMemory` for the quanta it was running ([`record_out_of_memory`]);
//! `restart` then gives those clusters more memory.

use std::path::Path;
use std::process::Command;

use quanta_core::{fold_journals, Bundle, QuantumState};

use super::error::{io, BatchError, Result};

/// What a supervised worker child did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildEnd {
    Exited(i32),
    /// Killed by this signal while under a memory limit: out of memory.
    OutOfMemory(i32),
    Signaled(i32),
}

/// Runs `cmd` (a `quanta worker` without a memory limit) with
/// `RLIMIT_AS = limit_bytes`, and tells how it ended. An allocation that
/// fails under the limit aborts a Rust process (SIGABRT), a stack that
/// cannot grow faults (SIGSEGV), and a kernel OOM kill is SIGKILL: under a
/// limit, any of these is reported as out of memory.
pub fn run_supervised(mut cmd: Command, limit_bytes: u64) -> Result<ChildEnd> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let lim = rustix::process::Rlimit {
        current: Some(limit_bytes),
        maximum: Some(limit_bytes),
    };
    // SAFETY: setrlimit is async-signal-safe and touches no heap.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setrlimit(rustix::process::Resource::As, lim)?;
            Ok(())
        });
    }
    let shown = format!("{cmd:?}");
    let status = cmd.status().map_err(|source| BatchError::Spawn {
        command: shown,
        source,
    })?;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => ChildEnd::Exited(c),
        (None, Some(s))
            if matches!(
                s,
                libc::SIGABRT | libc::SIGSEGV | libc::SIGKILL | libc::SIGBUS
            ) =>
        {
            ChildEnd::OutOfMemory(s)
        }
        (None, Some(s)) => ChildEnd::Signaled(s),
        (None, None) => ChildEnd::Signaled(0),
    })
}

/// Records `OutOfMemory` for the quanta of `quanta` whose latest attempt
/// started and never finished (the ones a killed worker was running), in
/// a journal of its own. Returns those quanta.
pub fn record_out_of_memory(
    bundle: &Path,
    journal_dir: &Path,
    quanta: &[u32],
    worker: &str,
    detail: &str,
) -> Result<Vec<u32>> {
    let berr = |e: quanta_core::BundleError| BatchError::Bundle {
        path: bundle.to_path_buf(),
        detail: e.to_string(),
    };
    let b = Bundle::open(bundle).map_err(berr)?;
    let id = b.header().bundle_id;
    let jerr = |e: quanta_core::JournalError| BatchError::Journal {
        path: journal_dir.to_path_buf(),
        detail: e.to_string(),
    };
    let progress = fold_journals(journal_dir, id, b.n_quanta()).map_err(jerr)?;
    let mut hit = Vec::new();
    let mut records = Vec::new();
    for q in quanta {
        let Some(p) = progress.quanta.get(q) else {
            continue;
        };
        if p.state != QuantumState::Running {
            continue;
        }
        if let Some(quanta_core::JournalRecord::Started {
            attempt,
            quantum_id,
            time,
            ..
        }) = p.started().map_err(jerr)?
        {
            hit.push(*q);
            records.push(quanta_core::JournalRecord::Finished {
                quantum: *q,
                quantum_id,
                attempt,
                status: quanta_core::QuantumStatus::OutOfMemory,
                outputs: Vec::new(),
                inputs_used: Vec::new(),
                started: time,
                finished: quanta_core::now_rfc3339(),
                wall_seconds: 0.0,
                cpu_seconds: 0.0,
                peak_rss_bytes: 0,
                exit_code: None,
                error: Some(detail.to_string()),
                log_tail: Vec::new(),
            });
        }
    }
    if records.is_empty() {
        return Ok(hit);
    }
    std::fs::create_dir_all(journal_dir)
        .map_err(io(journal_dir, "creating the journal directory"))?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let pid = std::process::id();
    let path = journal_dir.join(format!(
        "{}-oom-{host}-{pid}-{}.journal",
        sanitize(worker),
        quanta_core::now_rfc3339().replace([':', '.'], "")
    ));
    let header = quanta_core::JournalHeader {
        bundle_id: id,
        worker: format!("{worker} (memory supervisor)"),
        host,
        pid,
        started_at: quanta_core::now_rfc3339(),
    };
    let mut w = quanta_core::JournalWriter::create(&path, &header).map_err(jerr)?;
    for r in &records {
        w.append(r).map_err(jerr)?;
    }
    Ok(hit)
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
