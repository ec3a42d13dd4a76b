//! Execution commands: `quanta run` (the whole bundle on this machine) and
//! `quanta worker` (one batch job's quanta). The logic lives in
//! `quanta-runtime`; this module parses arguments, shows progress and maps
//! results to exit codes (0 all succeeded, 1 some failed or blocked, or
//! another process is executing these quanta, 2 bad input).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use quanta_runtime::{
    execute, parse_quantum_list, ExecOptions, Progress, RunSummary, RuntimeError, Selection,
};

#[derive(Args)]
pub struct RunArgs {
    /// The bundle to execute.
    bundle: PathBuf,
    /// Quanta run at once.
    #[arg(long, short = 'j', default_value_t = 1)]
    jobs: usize,
    /// Extra attempts for a quantum that fails or times out.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Per-attempt time limit in seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// Stop starting quanta after the first one fails for good.
    #[arg(long)]
    fail_fast: bool,
    /// Journal directory (default: `<bundle>.journals`).
    #[arg(long)]
    journal: Option<PathBuf>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// The bundle.
    bundle: PathBuf,
    /// Run this cluster's quanta.
    #[arg(long, conflicts_with_all = ["quanta", "slurm_map"], required_unless_present_any = ["quanta", "slurm_map"])]
    cluster: Option<String>,
    /// A Slurm array map written by `quanta submit`: run the cluster of
    /// element `$SLURM_ARRAY_TASK_ID`, under the map's memory limit.
    #[arg(long, conflicts_with = "quanta")]
    slurm_map: Option<PathBuf>,
    /// Limit the worker's address space to this many bytes (`512M`, `2G`
    /// or bytes); a quantum that exceeds it is recorded as out of memory.
    #[arg(long)]
    mem_limit: Option<String>,
    /// Run these quanta: `1,2,5-9`.
    #[arg(long)]
    quanta: Option<String>,
    /// Journal directory (default: `<bundle>.journals`).
    #[arg(long)]
    journal: Option<PathBuf>,
    /// Extra attempts for a quantum that fails or times out.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Per-attempt time limit in seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// Quanta run at once (a batch job usually has one core).
    #[arg(long, short = 'j', default_value_t = 1)]
    jobs: usize,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// The longest `--timeout` accepted: a year. Longer is no limit at all, and
/// a deadline must stay representable as an `Instant`.
const MAX_TIMEOUT_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

fn timeout(secs: Option<f64>) -> Result<Option<Duration>> {
    match secs {
        None => Ok(None),
        Some(s) => match Duration::try_from_secs_f64(s) {
            Ok(d) if !d.is_zero() && s <= MAX_TIMEOUT_SECONDS => Ok(Some(d)),
            _ => bail!(
            "--timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT_SECONDS} (a year), got {s}"
            ),
        },
    }
}

/// Bytes of `512M`, `2G`, … or a plain byte count.
fn parse_bytes(text: &str) -> Result<u64> {
    if let Ok(b) = text.trim().parse::<u64>() {
        if b == 0 {
            bail!("--mem-limit must be positive");
        }
        return Ok(b);
    }
    let mb = quanta_runtime::slurm::parse_mem_mb(text)
        .map_err(|e| anyhow::anyhow!("--mem-limit: {e}"))?;
    Ok(mb << 20)
}

fn run_with_progress(
    bundle: &Path,
    selection: Selection,
    opts: ExecOptions,
    json: bool,
) -> Result<ExitCode> {
    let registry = crate::plugins::open_limited_registry(bundle)?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b
    });
    let mut on_progress = |p: &Progress| {
        if let Some(b) = &bar {
            b.set_length(p.total as u64);
            b.set_position((p.skipped + p.succeeded + p.failed + p.blocked) as u64);
            b.set_message(format!(
                "done {} failed {} blocked {} running {}",
                p.skipped + p.succeeded,
                p.failed,
                p.blocked,
                p.running
            ));
        }
    };
    let summary = match execute(
        registry,
        &crate::plugins::task_registry(),
        &selection,
        &opts,
        &mut on_progress,
    ) {
        Ok(s) => s,
        // Not bad input: the same command succeeds once the holder is done.
        Err(e @ RuntimeError::Busy { .. }) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    report(&summary, json)?;
    Ok(if summary.all_succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn report(s: &RunSummary, json: bool) -> Result<()> {
    if json {
        return crate::output::print_json(s);
    }
    for f in &s.failures {
        eprintln!(
            "{:?}: quantum {} {} {} (attempts {}): {}",
            f.status, f.quantum, f.task, f.data_id, f.attempts, f.error
        );
    }
    let p = &s.progress;
    let per = if p.succeeded + p.failed > 0 {
        format!(
            ", {:.2} ms/quantum",
            s.wall_seconds * 1e3 / (p.succeeded + p.failed) as f64
        )
    } else {
        String::new()
    };
    eprintln!(
        "{} quanta: {} succeeded, {} already done, {} failed, {} blocked, {} not run in {:.3} s{per}",
        p.total, p.succeeded, p.skipped, p.failed, p.blocked, s.not_run, s.wall_seconds
    );
    if let Some(j) = &s.journal {
        eprintln!("journal: {}", j.display());
    }
    Ok(())
}

pub fn run(a: RunArgs) -> Result<ExitCode> {
    let opts = ExecOptions {
        jobs: a.jobs.max(1),
        retries: a.retries,
        timeout: timeout(a.timeout)?,
        fail_fast: a.fail_fast,
        journal_dir: a.journal,
        worker_name: "run".into(),
        batch_job: quanta_runtime::batch::current_job(),
    };
    run_with_progress(&a.bundle, Selection::All, opts, a.json)
}

pub fn worker(mut a: WorkerArgs) -> Result<ExitCode> {
    // Checked here too: a supervised worker passes it on to its child.
    let limit_per_attempt = timeout(a.timeout)?;
    let mut limit = a.mem_limit.as_deref().map(parse_bytes).transpose()?;
    if let Some(map) = &a.slurm_map {
        let index: usize = std::env::var("SLURM_ARRAY_TASK_ID")
            .map_err(|_| {
                anyhow::anyhow!(
                    "--slurm-map needs SLURM_ARRAY_TASK_ID (run it as a Slurm array element)"
                )
            })?
            .parse()
            .map_err(|e| anyhow::anyhow!("SLURM_ARRAY_TASK_ID: {e}"))?;
        let (cluster, mem) = quanta_runtime::slurm::array_element(map, index)?;
        a.cluster = Some(cluster);
        limit = limit.or(mem);
    }
    if let (Some(limit), Some(cluster)) = (limit, a.cluster.clone()) {
        return supervised_worker(&a, &cluster, limit);
    }
    let (selection, name) = match (&a.cluster, &a.quanta) {
        (Some(c), _) => (Selection::Cluster(c.clone()), c.clone()),
        (None, Some(list)) => (
            Selection::Quanta(parse_quantum_list(list)?),
            "quanta".into(),
        ),
        (None, None) => bail!("give --cluster or --quanta"),
    };
    let opts = ExecOptions {
        jobs: a.jobs.max(1),
        retries: a.retries,
        timeout: limit_per_attempt,
        fail_fast: false,
        journal_dir: a.journal,
        worker_name: name,
        batch_job: quanta_runtime::batch::current_job(),
    };
    run_with_progress(&a.bundle, selection, opts, a.json)
}

/// Runs the cluster in a child `quanta worker` under `limit` bytes of
/// address space, and records out of memory for what the child was running
/// if it died of it. The child is this same binary, so the limit applies to
/// Rust tasks (in the child's process) and to command tasks (its children).
fn supervised_worker(a: &WorkerArgs, cluster: &str, limit: u64) -> Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("worker")
        .arg(&a.bundle)
        .arg("--cluster")
        .arg(cluster)
        .arg("--retries")
        .arg(a.retries.to_string())
        .arg("-j")
        .arg(a.jobs.max(1).to_string());
    if let Some(j) = &a.journal {
        cmd.arg("--journal").arg(j);
    }
    if let Some(t) = a.timeout {
        cmd.arg("--timeout").arg(t.to_string());
    }
    if a.json {
        cmd.arg("--json");
    }
    // The limit is on address space: see crate::alloc. For the same reason
    // glibc gets one arena: it reserves 64 MiB of address space for each
    // further thread that allocates (the journal fold reads on rayon's
    // threads), which the limit would count as memory used.
    cmd.env(crate::alloc::SYSTEM_ALLOCATOR_ENV, "1");
    cmd.env("MALLOC_ARENA_MAX", "1");
    use quanta_runtime::slurm::{record_out_of_memory, run_supervised, ChildEnd};
    match run_supervised(cmd, limit)? {
        ChildEnd::Exited(0) => Ok(ExitCode::SUCCESS),
        ChildEnd::Exited(c) => Ok(ExitCode::from(u8::try_from(c).unwrap_or(1))),
        ChildEnd::Signaled(s) => {
            eprintln!("worker for cluster {cluster} was killed by signal {s}");
            Ok(ExitCode::from(1))
        }
        ChildEnd::OutOfMemory(s) => {
            let bundle = quanta_core::Bundle::open(&a.bundle)?;
            let quanta = bundle
                .clusters()?
                .into_iter()
                .find(|c| c.name == cluster)
                .map(|c| c.quanta)
                .unwrap_or_default();
            let dir = a
                .journal
                .clone()
                .unwrap_or_else(|| quanta_core::journal_dir_for(&a.bundle));
            let detail = format!(
                "out of memory: the worker died by signal {s} under a limit of {limit} bytes"
            );
            let hit = record_out_of_memory(&a.bundle, &dir, &quanta, cluster, &detail)?;
            eprintln!("cluster {cluster}: {detail}; quanta {hit:?} recorded as out of memory");
            Ok(ExitCode::from(1))
        }
    }
}
