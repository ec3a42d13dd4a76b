//! `quanta merge`, `status`, `provenance` and `report`: argument parsing and
//! output over the butler's merge and provenance modules; `--html` writes
//! the campaign page (`quanta-report`) filled by the butler's `report_page`.
//!
//! The `--json` forms print the library's serialized structs unchanged;
//! their field names are the stable, documented interface.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use quanta_butler::provenance::{DatasetNode, QuantumNode};
use quanta_butler::{
    campaign_report_page, campaign_status, provenance_graph, run_report, run_report_page,
    Direction, MergeOptions, ProvenanceGraph, DEFAULT_BATCH_QUANTA,
};
use quanta_core::Uuid;

use crate::output::{print_json, print_table};

/// Overrides the quanta per merge transaction (tests use tiny batches to
/// kill a merge between commits).
const BATCH_ENV: &str = "QUANTA_MERGE_BATCH";
/// Fault injection for tests: abort the process (no cleanup, like a kill)
/// right after this many batches have been committed.
const ABORT_ENV: &str = "QUANTA_MERGE_ABORT_AFTER";
/// `off` verifies files with plain system calls instead of io_uring
/// (`quanta_datastore::verify::disable_io_uring`).
const IO_URING_ENV: &str = "QUANTA_IO_URING";

#[derive(Args)]
pub struct MergeArgs {
    repo: PathBuf,
    bundle: PathBuf,
    /// The journals' directory (default: BUNDLE.journals/).
    #[arg(long)]
    journals: Option<PathBuf>,
    /// Merge the quanta that have finished although others are still
    /// pending or running; a later merge adds the rest.
    #[arg(long)]
    incomplete: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct StatusArgs {
    bundle: PathBuf,
    /// The journals' directory (default: BUNDLE.journals/).
    #[arg(long)]
    journals: Option<PathBuf>,
    #[arg(long, conflicts_with = "html")]
    json: bool,
    /// Write the campaign page (one self-contained HTML file) here instead
    /// of printing the table.
    #[arg(long, value_name = "OUT.html")]
    html: Option<PathBuf>,
}

#[derive(Args)]
pub struct ProvenanceArgs {
    repo: PathBuf,
    /// The dataset's UUID.
    dataset: String,
    /// At most this many quantum hops (default: all the way).
    #[arg(long)]
    depth: Option<usize>,
    /// What was made from the dataset, instead of what it was made from.
    #[arg(long)]
    downstream: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ReportArgs {
    repo: PathBuf,
    run: String,
    #[arg(long, conflicts_with = "html")]
    json: bool,
    /// Write the run's page (one self-contained HTML file) here instead of
    /// printing the table.
    #[arg(long, value_name = "OUT.html")]
    html: Option<PathBuf>,
}

pub fn merge(args: MergeArgs) -> Result<ExitCode> {
    let batch_quanta = match std::env::var(BATCH_ENV) {
        Ok(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("{BATCH_ENV}={v}: expected a positive integer"))?,
        Err(_) => DEFAULT_BATCH_QUANTA,
    };
    match std::env::var(IO_URING_ENV).as_deref() {
        Ok("off") => quanta_datastore::verify::disable_io_uring(),
        Ok("on") | Err(_) => {}
        Ok(other) => anyhow::bail!("{IO_URING_ENV}={other}: expected `on` or `off`"),
    }
    let mut butler = crate::plugins::open_butler(&args.repo)?;
    let options = MergeOptions {
        journals: args.journals.clone(),
        incomplete: args.incomplete,
        batch_quanta,
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("merge {elapsed_precise} [{bar:30}] {pos}/{len} quanta")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    });
    let abort_after: Option<u64> = std::env::var(ABORT_ENV).ok().and_then(|v| v.parse().ok());
    // The first call reports the start; each later one follows a commit.
    let mut calls = 0u64;
    let mut on_progress = |done: u64, total: u64| {
        if abort_after == Some(calls) {
            std::process::abort();
        }
        calls += 1;
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    };
    let started = std::time::Instant::now();
    let summary = butler.merge(&args.bundle, &options, &mut on_progress)?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let seconds = started.elapsed().as_secs_f64();
    for w in &summary.warnings {
        eprintln!("warning: {w}");
    }
    for p in &summary.journal_problems {
        eprintln!("error: {p}");
    }
    for f in &summary.verification_failures {
        eprintln!(
            "error: {} {} ({}, {}) at {}: {}; not registered",
            f.dataset_type, f.data_id, f.dataset_id, f.task, f.path, f.reason
        );
    }
    if args.json {
        print_json(&summary)?;
    } else {
        let states: Vec<String> = summary
            .quanta_by_state
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        println!(
            "merged bundle {} into {} in {seconds:.2} s ({} journals)",
            summary.bundle_id, summary.run, summary.journals
        );
        println!("quanta: {}", states.join(", "));
        println!(
            "quanta recorded: {} (already merged: {})",
            summary.quanta_recorded, summary.quanta_already_merged
        );
        println!(
            "datasets: {} new, {} already registered",
            summary.datasets_inserted, summary.datasets_existing
        );
        if summary.datasets_replaced > 0 {
            println!(
                "datasets replaced (--clobber): {}",
                summary.datasets_replaced
            );
        }
        if seconds > 0.0 && summary.datasets_inserted > 0 {
            println!(
                "throughput: {:.0} datasets/s",
                summary.datasets_inserted as f64 / seconds
            );
        }
        println!("failed quanta: {}", summary.failed_quanta());
        println!(
            "verification failures: {}",
            summary.verification_failures.len()
        );
        if !summary.journal_problems.is_empty() {
            println!("journal problems: {}", summary.journal_problems.len());
        }
    }
    Ok(if summary.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn status(args: StatusArgs) -> Result<ExitCode> {
    if let Some(out) = &args.html {
        let report = campaign_report_page(
            &args.bundle,
            args.journals.as_deref(),
            quanta_report::Limits::default(),
        )?;
        return write_page(&report, out);
    }
    let status = campaign_status(&args.bundle, args.journals.as_deref())?;
    for w in &status.warnings {
        eprintln!("warning: {w}");
    }
    let batch = quanta_runtime::batch::status(
        &args.bundle,
        Some((status.journal_dir.as_path(), &status.progress)),
    )?;
    if args.json {
        match &batch {
            None => print_json(&status)?,
            Some(b) => {
                let mut v = serde_json::to_value(&status)?;
                v["batch"] = serde_json::to_value(b)?;
                print_json(&v)?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "bundle {} → {}: {} quanta, {} journals",
        status.bundle_id, status.output_run, status.n_quanta, status.journals
    );
    let rows: Vec<Vec<String>> = status
        .tasks
        .iter()
        .map(|t| {
            vec![
                t.task.clone(),
                t.quanta.to_string(),
                t.done.to_string(),
                t.failed.to_string(),
                t.blocked.to_string(),
                t.pending.to_string(),
                t.running.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "task", "quanta", "done", "failed", "blocked", "pending", "running",
        ],
        &rows,
    );
    print_failures(status.failures.iter().map(|f| {
        (
            f.task.as_str(),
            f.data_id.to_string(),
            f.status.as_str(),
            f.error.as_deref(),
        )
    }));
    if let Some(b) = batch {
        print_batch_status(&b);
    }
    Ok(ExitCode::SUCCESS)
}

/// The batch section of `quanta status`: per cluster, the journals' counts
/// and the engine's state of the cluster's latest array element.
fn print_batch_status(b: &quanta_runtime::batch::BatchStatus) {
    println!(
        "\n{}: {} submission(s), {} job(s) queued or running",
        b.engine, b.submissions, b.live_jobs
    );
    if let Some(e) = &b.engine_error {
        println!("  ({} could not be asked: {e})", b.engine);
    }
    let rows: Vec<Vec<String>> = b
        .clusters
        .iter()
        .map(|c| {
            vec![
                c.cluster.clone(),
                c.job.clone().unwrap_or_default(),
                c.state.clone().unwrap_or_else(|| "-".into()),
                c.quanta.to_string(),
                c.succeeded.to_string(),
                c.failed.to_string(),
                c.out_of_memory.to_string(),
                c.blocked.to_string(),
                c.pending.to_string(),
                c.mem_mb.map(|m| format!("{m}M")).unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "cluster",
            "job",
            "state",
            "quanta",
            "done",
            "failed",
            "out_of_memory",
            "blocked",
            "pending",
            "mem",
        ],
        &rows,
    );
}

fn print_failures<'a>(failures: impl Iterator<Item = (&'a str, String, &'a str, Option<&'a str>)>) {
    let mut first = true;
    for (task, data_id, status, error) in failures {
        if first {
            println!("\nfailures:");
            first = false;
        }
        let error = error.unwrap_or("").lines().next().unwrap_or("");
        println!("  {task} {data_id}: {status}: {error}");
    }
}

/// Writes the page and says where, with its size and counts.
fn write_page(report: &quanta_report::Report, out: &std::path::Path) -> Result<ExitCode> {
    for w in &report.meta.warnings {
        eprintln!("warning: {w}");
    }
    let size = quanta_report::write_html(report, out)?;
    let t = &report.totals;
    println!(
        "wrote {} ({:.1} KiB): {} quanta, {} succeeded, {} failed, {} blocked, {} pending, {} running",
        out.display(),
        size as f64 / 1024.0,
        t.quanta,
        t.succeeded,
        t.failed,
        t.blocked,
        t.pending,
        t.running
    );
    Ok(ExitCode::SUCCESS)
}

pub fn report(args: ReportArgs) -> Result<ExitCode> {
    let butler = crate::plugins::open_butler_read_only(&args.repo)?;
    if let Some(out) = &args.html {
        // The same existence check as the table's (an unknown RUN is bad input).
        let source = format!("registry {}", args.repo.display());
        let report = run_report_page(
            butler.registry(),
            &args.run,
            &source,
            quanta_report::Limits::default(),
        )?;
        return write_page(&report, out);
    }
    let report = run_report(butler.registry(), &args.run)?;
    if args.json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "run {} ({} bundles merged)",
        report.run,
        report.bundles.len()
    );
    let rows: Vec<Vec<String>> = report
        .tasks
        .iter()
        .map(|t| {
            let statuses: Vec<String> = t
                .by_status
                .iter()
                .map(|(s, n)| format!("{n} {s}"))
                .collect();
            let (min, med, max, rss) = match &t.timing {
                Some(x) => (
                    format!("{:.3}", x.min_wall_seconds),
                    format!("{:.3}", x.median_wall_seconds),
                    format!("{:.3}", x.max_wall_seconds),
                    format!("{:.1}", x.max_peak_rss_bytes as f64 / (1024.0 * 1024.0)),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            vec![
                t.task.clone(),
                t.quanta.to_string(),
                statuses.join(", "),
                min,
                med,
                max,
                rss,
            ]
        })
        .collect();
    print_table(
        &[
            "task",
            "quanta",
            "status",
            "wall min s",
            "wall median s",
            "wall max s",
            "peak MiB",
        ],
        &rows,
    );
    print_failures(report.failures.iter().map(|f| {
        (
            f.task.as_str(),
            f.data_id.to_string(),
            f.status.as_str(),
            f.error.as_deref(),
        )
    }));
    Ok(ExitCode::SUCCESS)
}

pub fn provenance(args: ProvenanceArgs) -> Result<ExitCode> {
    let id: Uuid = args
        .dataset
        .parse()
        .with_context(|| format!("`{}` is not a dataset UUID", args.dataset))?;
    let butler = crate::plugins::open_butler_read_only(&args.repo)?;
    let direction = if args.downstream {
        Direction::Downstream
    } else {
        Direction::Upstream
    };
    let graph = provenance_graph(butler.registry(), id, direction, args.depth)?;
    if args.json {
        print_json(&graph)?;
    } else {
        print_graph(&graph);
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_dataset(d: &DatasetNode) -> String {
    match (&d.dataset_type, &d.data_id, &d.run) {
        (Some(t), Some(data_id), Some(run)) if d.removed => {
            format!("{t} {data_id} in {run} [{}] (removed)", d.id)
        }
        (Some(t), Some(data_id), Some(run)) => format!("{t} {data_id} in {run} [{}]", d.id),
        _ => format!("{} (not registered)", d.id),
    }
}

fn describe_quantum(q: &QuantumNode) -> String {
    let mut s = format!(
        "{} {} [{}] {}",
        q.task_label, q.data_id, q.id, q.execution.status
    );
    if let Some(host) = &q.execution.host {
        s.push_str(&format!(" on {host}"));
    }
    if let Some(w) = q.execution.wall_seconds {
        s.push_str(&format!(", {w:.3} s"));
    }
    s
}

/// Prints the DAG as an indented tree; a node reached a second time is
/// printed once more by name with "(see above)".
fn print_graph(graph: &ProvenanceGraph) {
    let mut printed: HashSet<Uuid> = HashSet::new();
    print_dataset(graph, &graph.root, 0, &mut printed);
    match graph.direction {
        Direction::Upstream => println!(
            "\n{} quanta; {} datasets, of which {} not produced by any quantum (raw or ingested inputs){}",
            graph.quanta.len(),
            graph.datasets.len(),
            graph.sources.len(),
            if graph.truncated { "; depth limit reached" } else { "" }
        ),
        Direction::Downstream => println!(
            "\n{} quanta; {} datasets{}",
            graph.quanta.len(),
            graph.datasets.len(),
            if graph.truncated { "; depth limit reached" } else { "" }
        ),
    }
}

fn print_dataset(graph: &ProvenanceGraph, id: &Uuid, indent: usize, printed: &mut HashSet<Uuid>) {
    let pad = "  ".repeat(indent);
    let Some(d) = graph.dataset(id) else {
        return;
    };
    if !printed.insert(*id) {
        println!("{pad}{} (see above)", describe_dataset(d));
        return;
    }
    println!("{pad}{}", describe_dataset(d));
    let next: Vec<&QuantumNode> = match graph.direction {
        Direction::Upstream => d
            .produced_by
            .iter()
            .filter_map(|q| graph.quantum(q))
            .collect(),
        Direction::Downstream => graph
            .quanta
            .iter()
            .filter(|q| q.inputs.iter().any(|i| i.dataset_id == *id && i.used))
            .collect(),
    };
    for q in next {
        let verb = match graph.direction {
            Direction::Upstream => "made by",
            Direction::Downstream => "read by",
        };
        if !printed.insert(q.id) {
            println!("{pad}  {verb} {} (see above)", describe_quantum(q));
            continue;
        }
        println!("{pad}  {verb} {}", describe_quantum(q));
        if graph.direction == Direction::Upstream {
            if let Some(c) = &q.config {
                println!("{pad}    config: {c}");
            }
            println!("{pad}    inputs:");
            for i in q.inputs.iter().filter(|i| i.used) {
                print_dataset(graph, &i.dataset_id, indent + 3, printed);
            }
        } else {
            println!("{pad}    outputs:");
            for o in &q.outputs {
                print_dataset(graph, &o.dataset_id, indent + 3, printed);
            }
        }
    }
}
