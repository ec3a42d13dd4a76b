//! Batch-system commands: `quanta submit`, `quanta cancel`, `quanta
//! restart`. The logic (plan, state file, retry policy, the engines) lives
//! in `quanta_runtime::batch`; this module parses arguments, looks the
//! engine up by name and prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use quanta_runtime::batch::{
    self, BatchEngine, Resources, RetryPolicy, SubmitOptions, SubmitReport, SubmitRequest,
    Submitted,
};

/// The engine called `name`, or a usage error listing the known ones.
fn engine(name: &str) -> Result<Box<dyn BatchEngine>> {
    match batch::engine(name) {
        Some(e) => Ok(e),
        None => bail!(
            "unknown batch engine `{name}` (known: {})",
            batch::engine_names().join(", ")
        ),
    }
}

/// Resource requests and submission options shared by submit and restart.
#[derive(Args)]
pub struct SlurmOptions {
    /// The data repository the final job merges into (default: the one
    /// recorded at the first submission, for restart).
    #[arg(long)]
    repo: Option<PathBuf>,
    /// Partition for every job (overrides the tasks' `batch.partition`).
    #[arg(long)]
    partition: Option<String>,
    /// Memory per array element, e.g. 512M or 2G (overrides `batch.mem`);
    /// also the worker's memory limit.
    #[arg(long)]
    mem: Option<String>,
    /// Memory for tasks whose config names none.
    #[arg(long)]
    default_mem: Option<String>,
    /// CPUs per array element (overrides `batch.cpus_per_task`).
    #[arg(long)]
    cpus_per_task: Option<u32>,
    /// Time limit per element in Slurm's format (overrides `batch.time`).
    #[arg(long)]
    time: Option<String>,
    /// At most this many elements of one array at once (`--array=…%N`).
    #[arg(long)]
    throttle: Option<u32>,
    /// Attempts the worker itself makes again for a failing quantum.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Journal directory (default: `<bundle>.journals`).
    #[arg(long)]
    journal: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct SubmitArgs {
    /// The bundle (made by `quanta preflight`; its clusters, chosen there
    /// with `--cluster-by`, become the array elements).
    bundle: PathBuf,
    /// The batch system: slurm, gridengine, or htcondor (DAGMan files
    /// only, with `--dry-run --out DIR`: no HTCondor runs here).
    #[arg(long)]
    engine: String,
    #[command(flatten)]
    opts: SlurmOptions,
    /// Write the files to `--out` instead of submitting (HTCondor).
    #[arg(long)]
    dry_run: bool,
    /// Directory for the `--dry-run` files.
    #[arg(long, requires = "dry_run")]
    out: Option<PathBuf>,
    /// HTCondor: DAGMan retries per node (memory grows by
    /// `--memory-multiplier` on each).
    #[arg(long, default_value_t = 2)]
    node_retries: u32,
    /// HTCondor: memory factor per retry.
    #[arg(long, default_value_t = 2.0)]
    memory_multiplier: f64,
    /// HTCondor: never request more than this (e.g. 8G).
    #[arg(long)]
    max_mem: Option<String>,
}

#[derive(Args)]
pub struct CancelArgs {
    bundle: PathBuf,
    /// The batch system the bundle was submitted to (default: the one its
    /// submission state records).
    #[arg(long)]
    engine: Option<String>,
}

#[derive(Args)]
pub struct RestartArgs {
    bundle: PathBuf,
    /// The batch system the bundle was submitted to (default: the one its
    /// submission state records).
    #[arg(long)]
    engine: Option<String>,
    #[command(flatten)]
    opts: SlurmOptions,
    /// Memory of clusters that ran out of it is multiplied by this.
    #[arg(long, default_value_t = 2.0)]
    memory_multiplier: f64,
    /// Never ask for more than this (e.g. 8G).
    #[arg(long)]
    max_mem: Option<String>,
}

fn mem(flag: &str, v: &Option<String>) -> Result<Option<u64>> {
    v.as_deref()
        .map(|m| batch::parse_mem_mb(m).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
        .transpose()
}

fn options(o: &SlurmOptions, repo: PathBuf) -> Result<SubmitOptions> {
    if o.throttle == Some(0) {
        bail!("--throttle must be at least 1");
    }
    if o.cpus_per_task == Some(0) {
        bail!("--cpus-per-task must be at least 1");
    }
    Ok(SubmitOptions {
        repo,
        quanta_exe: std::env::current_exe()?,
        overrides: Resources {
            partition: o.partition.clone(),
            mem_mb: mem("--mem", &o.mem)?,
            cpus_per_task: o.cpus_per_task,
            time: o.time.clone(),
        },
        defaults: Resources {
            mem_mb: mem("--default-mem", &o.default_mem)?,
            ..Default::default()
        },
        throttle: o.throttle,
        worker_retries: o.retries,
        journal_dir: o.journal.clone(),
        extra_sbatch_args: Vec::new(),
    })
}

fn print_report(r: &SubmitReport, json: bool) -> Result<()> {
    if json {
        return crate::output::print_json(r);
    }
    for a in &r.arrays {
        println!(
            "array {} (level {}, {} clusters{}{})",
            a.job_id,
            a.level,
            a.clusters.len(),
            a.resources
                .mem_mb
                .map(|m| format!(", {m} MB"))
                .unwrap_or_default(),
            a.dependency
                .as_deref()
                .map(|d| format!(", {d}"))
                .unwrap_or_default(),
        );
    }
    if let Some(m) = &r.merge_job {
        println!("merge job {m}");
    }
    for (c, m) in &r.memory_raised {
        println!("cluster {c}: out of memory before, now {m} MB");
    }
    if !r.dead_clusters.is_empty() {
        println!(
            "not resubmitted (deterministic failures and their downstream): {}",
            r.dead_clusters.join(", ")
        );
    }
    Ok(())
}

pub fn submit(a: SubmitArgs) -> Result<ExitCode> {
    let engine = engine(&a.engine)?;
    let Some(repo) = a.opts.repo.clone() else {
        bail!("--repo REPO is required: the final job merges into it");
    };
    let opts = options(&a.opts, repo)?;
    let req = SubmitRequest {
        dry_run: a.dry_run,
        out: a.out.clone(),
        node_retries: a.node_retries,
        memory: RetryPolicy {
            memory_multiplier: a.memory_multiplier,
            max_mem_mb: mem("--max-mem", &a.max_mem)?,
        },
    };
    match engine.submit(&a.bundle, &opts, &req)? {
        Submitted::Files(paths) => {
            for p in paths {
                println!("wrote {}", p.display());
            }
        }
        Submitted::Jobs(report) => print_report(&report, a.opts.json)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The engine named by `--engine`, else the one that submitted `bundle`
/// (its state file says), else Slurm, whose error then says the bundle
/// was not submitted.
fn submitting_engine(bundle: &Path, named: Option<&str>) -> Result<Box<dyn BatchEngine>> {
    match named {
        Some(name) => engine(name),
        None => match batch::load_state(bundle) {
            Ok(state) => engine(&state.engine),
            Err(_) => engine("slurm"),
        },
    }
}

pub fn cancel(a: CancelArgs) -> Result<ExitCode> {
    let ids = submitting_engine(&a.bundle, a.engine.as_deref())?.cancel(&a.bundle)?;
    if ids.is_empty() {
        println!("nothing to cancel: no job of this submission is queued or running");
    } else {
        println!("cancelled {}", ids.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn restart(a: RestartArgs) -> Result<ExitCode> {
    let engine = submitting_engine(&a.bundle, a.engine.as_deref())?;
    if !(a.memory_multiplier.is_finite() && a.memory_multiplier >= 1.0) {
        bail!(
            "--memory-multiplier must be at least 1, got {}",
            a.memory_multiplier
        );
    }
    // The repository and journals default to the first submission's. An
    // engine that keeps no state file reports its own error from
    // `restart` (Slurm's: not submitted; HTCondor's: not supported).
    let state = batch::load_state(&a.bundle).ok();
    let repo = a
        .opts
        .repo
        .clone()
        .or_else(|| state.as_ref().map(|s| s.repo.clone()))
        .unwrap_or_default();
    let mut opts = options(&a.opts, repo)?;
    if opts.journal_dir.is_none() {
        opts.journal_dir = state.map(|s| s.journal_dir);
    }
    let policy = RetryPolicy {
        memory_multiplier: a.memory_multiplier,
        max_mem_mb: mem("--max-mem", &a.max_mem)?,
    };
    let report = engine.restart(&a.bundle, &opts, policy)?;
    if report.arrays.is_empty() {
        println!(
            "nothing to resubmit: {} cluster(s) succeeded, {} dead",
            report.succeeded_clusters,
            report.dead_clusters.len()
        );
    }
    print_report(&report, a.opts.json)?;
    Ok(ExitCode::SUCCESS)
}
