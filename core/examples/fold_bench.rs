//! Times `fold_journals` on a synthetic finished campaign: N quanta, each
//! with a `Started` and a `Finished { Succeeded }` record of two outputs,
//! dealt round-robin over J worker journals (as `butler/examples/merge_synth`
//! writes them). The fold runs in a child process so its peak RSS is not
//! the writer's; the generated directory is removed at the end.
//!
//! `cargo run --release -p quanta-core --example fold_bench -- [N [J [DIR]]]`
//! (default 500000 quanta, 2 journals, a fresh directory under /tmp).
//! For profiling: `-- --write-only DIR N J` then `-- --fold-only DIR N`
//! (DIR is left for the caller to remove).

use std::path::{Path, PathBuf};
use std::time::Instant;

use quanta_core::{
    fold_journals, JournalHeader, JournalRecord, JournalRecords, JournalWriter, QuantumState,
    QuantumStatus, Uuid, WrittenOutput,
};

fn bundle_id() -> Uuid {
    Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)
}

fn quantum_id(i: u32) -> Uuid {
    Uuid::from_u128(0x7000_0000_0000_0000_0000_0000_0000_0000 | u128::from(i))
}

fn write(dir: &Path, n: u32, journals: u32) -> Result<u64, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let mut writers = (0..journals)
        .map(|w| {
            JournalWriter::create_unsynced(
                &dir.join(format!("worker-{w}.journal")),
                &JournalHeader {
                    bundle_id: bundle_id(),
                    worker: format!("worker-{w}"),
                    host: format!("node{w}"),
                    pid: 1000 + w,
                    started_at: quanta_core::now_rfc3339(),
                },
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let time = "2026-01-01T00:00:00.000Z".to_string();
    for i in 0..n {
        let w = &mut writers[(i % journals) as usize];
        w.append(&JournalRecord::Started {
            quantum: i,
            quantum_id: quantum_id(i),
            attempt: 1,
            host: format!("node{}", i % journals),
            pid: 1000,
            time: time.clone(),
            batch_job: None,
        })?;
        let outputs = ["synthA", "synthB"]
            .iter()
            .enumerate()
            .map(|(k, t)| WrittenOutput {
                dataset_id: Uuid::from_u128((u128::from(i) << 1) | k as u128),
                path: format!("bench/synth/{t}/Cam/{}/{t}_Cam_{i}.json", i / 189),
                size: 100 + u64::from(i % 17),
                checksum: quanta_core::hash::blake3_hex(&i.to_le_bytes()),
            })
            .collect();
        w.append(&JournalRecord::Finished {
            quantum: i,
            quantum_id: quantum_id(i),
            attempt: 1,
            status: QuantumStatus::Succeeded,
            outputs,
            inputs_used: vec![Uuid::from_u128(0x9000_0000 | u128::from(i))],
            started: time.clone(),
            finished: time.clone(),
            wall_seconds: 0.01,
            cpu_seconds: 0.01,
            peak_rss_bytes: 10 << 20,
            exit_code: Some(0),
            error: None,
            log_tail: vec![],
        })?;
    }
    let mut bytes = 0;
    for e in std::fs::read_dir(dir)? {
        bytes += e?.metadata()?.len();
    }
    Ok(bytes)
}

/// Peak resident set of this process, in bytes (Linux `VmHWM`, the same
/// figure as getrusage's maxrss, without a libc dependency).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn fold(dir: &Path, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let before = peak_rss().unwrap_or(0);
    let t = Instant::now();
    let p = fold_journals(dir, bundle_id(), n)?;
    let wall = t.elapsed().as_secs_f64();
    let succeeded = p.counts(n).get(&QuantumState::Succeeded).copied();
    if succeeded != Some(n) {
        return Err(format!("expected {n} succeeded quanta, got {succeeded:?}").into());
    }
    let after = peak_rss().unwrap_or(0);
    println!(
        "fold_journals: {n} quanta from {} journals in {wall:.3} s ({:.0} quanta/s); peak RSS {:.1} MiB (before the fold {:.1} MiB)",
        p.journals.len(),
        n as f64 / wall,
        after as f64 / (1 << 20) as f64,
        before as f64 / (1 << 20) as f64,
    );
    // What merge does next: each quantum's records read back from the
    // journals and decoded once, in order.
    let t = Instant::now();
    let mut outputs = 0;
    let mut records = JournalRecords::default();
    for q in p.quanta.values() {
        if records.started(q)?.is_none() {
            return Err(format!("quantum {} lost its start", q.quantum_id).into());
        }
        if let Some(JournalRecord::Finished { outputs: o, .. }) = records.finished(q)? {
            outputs += o.len();
        }
    }
    if outputs != 2 * n {
        return Err(format!("expected {} outputs, decoded {outputs}", 2 * n).into());
    }
    println!(
        "  decoding every finished and started record once: {:.3} s; peak RSS {:.1} MiB",
        t.elapsed().as_secs_f64(),
        peak_rss().unwrap_or(0) as f64 / (1 << 20) as f64,
    );
    drop(p);
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--fold-only") {
        let dir = PathBuf::from(args.get(2).ok_or("--fold-only DIR N")?);
        let n: usize = args.get(3).ok_or("--fold-only DIR N")?.parse()?;
        return fold(&dir, n);
    }
    if args.get(1).map(String::as_str) == Some("--write-only") {
        let usage = "--write-only DIR N J";
        let dir = PathBuf::from(args.get(2).ok_or(usage)?);
        let n: u32 = args.get(3).ok_or(usage)?.parse()?;
        let journals: u32 = args.get(4).ok_or(usage)?.parse()?;
        write(&dir, n, journals.max(1))?;
        return Ok(());
    }
    let n: u32 = args.get(1).map_or(Ok(500_000), |s| s.parse())?;
    let journals: u32 = args.get(2).map_or(Ok(2), |s| s.parse())?;
    if journals == 0 {
        return Err("at least one journal".into());
    }
    // A directory given by the caller is kept; only what this run made goes.
    let (parent, owned) = match args.get(3) {
        Some(d) => (PathBuf::from(d), false),
        None => (
            std::env::temp_dir().join(format!("quanta-fold-bench-{}", std::process::id())),
            true,
        ),
    };
    let dir = parent.join("fold_bench.journals");
    if dir.exists() {
        return Err(format!("{} exists; remove it or pick another DIR", dir.display()).into());
    }
    let t = Instant::now();
    let result = (|| -> Result<(), Box<dyn std::error::Error>> {
        let bytes = write(&dir, n, journals)?;
        eprintln!(
            "wrote {n} quanta, {:.0} MB in {journals} journals in {:.1} s",
            bytes as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );
        for _ in 0..3 {
            let status = std::process::Command::new(std::env::current_exe()?)
                .arg("--fold-only")
                .arg(&dir)
                .arg(n.to_string())
                .status()?;
            if !status.success() {
                return Err(format!("the fold run failed: {status}").into());
            }
        }
        Ok(())
    })();
    let removed = std::fs::remove_dir_all(if owned { &parent } else { &dir });
    result?;
    removed?;
    Ok(())
}
