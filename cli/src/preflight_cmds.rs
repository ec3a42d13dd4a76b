//! `quanta preflight` and `quanta bundle show|dot [--mermaid]`: argument parsing and
//! output over the quanta-preflight library and the core bundle reader.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use quanta_core::pipeline::TaskKind;
use quanta_core::{Bundle, BundleWriteOptions};
use quanta_preflight::{
    quantum_graph_dot, quantum_graph_mermaid, run_preflight, task_graph_dot, task_graph_mermaid,
    PreflightOptions,
};

use crate::output::{print_json, print_table};

#[derive(Args)]
pub struct PreflightArgs {
    repo: PathBuf,
    /// The pipeline YAML file.
    #[arg(long)]
    pipeline: PathBuf,
    /// Input collections, searched in order (comma-separated or repeated).
    #[arg(long = "input", value_delimiter = ',', required = true)]
    inputs: Vec<String>,
    /// The RUN collection the outputs will be written to (registered now).
    #[arg(long)]
    output_run: String,
    /// A CHAINED collection [output RUN, inputs...] to create (or prepend the RUN to).
    #[arg(long)]
    output: Option<String>,
    /// A query expression constraining the data IDs.
    #[arg(long = "where", default_value = "")]
    where_clause: String,
    /// Values for :name placeholders in --where: name=value (repeatable).
    #[arg(long = "bind")]
    binds: Vec<String>,
    /// Leave out quanta whose outputs all exist in the output RUN.
    #[arg(long)]
    skip_existing: bool,
    /// Allow outputs that exist in the output RUN to be replaced.
    #[arg(long)]
    clobber: bool,
    /// Dimensions grouping quanta into clusters (batch jobs); default: the
    /// smallest task dimensions shared by all tasks (e.g. per exposure).
    #[arg(long, value_delimiter = ',')]
    cluster_by: Option<Vec<String>>,
    /// Store bundle blocks without zstd compression.
    #[arg(long)]
    no_compress: bool,
    /// The bundle file to write.
    #[arg(long)]
    bundle: PathBuf,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum BundleCommand {
    /// Verify a bundle and show its header, quanta per task and clusters.
    Show {
        bundle: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Graphviz DOT of the task graph, or of the quantum graph with --quanta
    /// (a Mermaid flowchart with --mermaid).
    Dot {
        bundle: PathBuf,
        #[arg(long)]
        quanta: bool,
        /// A Mermaid flowchart instead of Graphviz DOT.
        #[arg(long)]
        mermaid: bool,
    },
}

pub fn preflight(args: PreflightArgs) -> Result<ExitCode> {
    let opts = PreflightOptions {
        input_collections: args.inputs,
        output_run: args.output_run,
        output_chain: args.output,
        where_clause: args.where_clause,
        binds: crate::repo_cmds::parse_binds(&args.binds)?,
        skip_existing: args.skip_existing,
        clobber: args.clobber,
        cluster_by: args.cluster_by,
        command_line: std::env::args().collect(),
    };
    let write = BundleWriteOptions {
        compress: !args.no_compress,
        ..BundleWriteOptions::default()
    };
    // A spinner on stderr (hidden when stderr is not a terminal).
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] preflight: {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let report = crate::plugins::open_butler(&args.repo)
        .map_err(quanta_preflight::PreflightError::from)
        .and_then(|mut butler| {
            run_preflight(
                &mut butler,
                &args.pipeline,
                &opts,
                &args.bundle,
                &write,
                &|msg: &str| {
                    bar.set_message(msg.to_string());
                    tracing::info!("{msg}");
                },
            )
        });
    bar.finish_and_clear();
    let report = report?;
    if args.json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = report
        .tasks
        .iter()
        .map(|t| {
            vec![
                t.label.clone(),
                t.quanta.to_string(),
                t.skipped.to_string(),
                t.pruned.to_string(),
            ]
        })
        .collect();
    print_table(&["task", "quanta", "skipped", "pruned"], &rows);
    let total: f64 = report.timings.iter().map(|(_, s)| s).sum();
    println!(
        "bundle {} ({}): {} quanta, {} clusters, {} bytes ({:.0} bytes/quantum), {:.2} s",
        args.bundle.display(),
        report.bundle_id,
        report.n_quanta,
        report.n_clusters,
        report.bundle_bytes,
        report.bundle_bytes as f64 / report.n_quanta.max(1) as f64,
        total
    );
    if !report.registered_dataset_types.is_empty() {
        println!(
            "registered dataset types: {}",
            report.registered_dataset_types.join(", ")
        );
    }
    if report.n_pruned > 0 {
        println!("pruned {} quanta (missing inputs):", report.n_pruned);
        for p in report.pruned.iter().take(10) {
            println!("  {} {}: {}", p.task, p.data_id, p.reason);
        }
        if report.n_pruned > 10 {
            println!("  ... and {} more", report.n_pruned - 10);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn bundle(cmd: BundleCommand) -> Result<ExitCode> {
    match cmd {
        BundleCommand::Show { bundle, json } => show(&bundle, json),
        BundleCommand::Dot {
            bundle,
            quanta,
            mermaid,
        } => {
            let b = Bundle::open(&bundle)?;
            let dot = match (quanta, mermaid) {
                (true, false) => quantum_graph_dot(&b)?,
                (false, false) => task_graph_dot(b.tasks()),
                (true, true) => quantum_graph_mermaid(&b)?,
                (false, true) => task_graph_mermaid(b.tasks()),
            };
            print!("{dot}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn show(path: &std::path::Path, json: bool) -> Result<ExitCode> {
    let b = Bundle::open(path)?;
    b.verify()?;
    let mut per_task = vec![0usize; b.tasks().len()];
    for q in b.quanta() {
        let q = q?;
        if let Some(n) = per_task.get_mut(q.task as usize) {
            *n += 1;
        }
    }
    let clusters = b.clusters()?;
    let h = b.header();
    let kind = |k: &TaskKind| k.describe();
    if json {
        let value = serde_json::json!({
            "path": path.display().to_string(),
            "file_size": b.file_size(),
            "n_blocks": b.n_blocks(),
            "header": h,
            "tasks": b.tasks().iter().zip(&per_task).map(|(t, n)| serde_json::json!({
                "label": t.label, "task": kind(&t.kind), "dimensions": t.dimensions, "quanta": n,
            })).collect::<Vec<_>>(),
            "clusters": clusters.iter().map(|c| serde_json::json!({"name": c.name, "quanta": c.quanta.len()})).collect::<Vec<_>>(),
        });
        print_json(&value)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "bundle      {} ({} bytes, verified)",
        path.display(),
        b.file_size()
    );
    println!("id          {}", h.bundle_id);
    println!(
        "created     {} by {} (quanta {})",
        h.created_at, h.created_by, h.quanta_version
    );
    println!("inputs      {}", h.input_collections.join(", "));
    println!(
        "output run  {}{}",
        h.output_run,
        h.output_chain
            .as_ref()
            .map(|c| format!(" (chain {c})"))
            .unwrap_or_default()
    );
    if !h.where_clause.is_empty() {
        println!("where       {}", h.where_clause);
    }
    println!("datastore   {}", h.datastore_root);
    println!(
        "flags       clobber={} skip_existing={}",
        h.clobber, h.skip_existing
    );
    println!("quanta      {}", h.n_quanta);
    println!();
    let rows: Vec<Vec<String>> = b
        .tasks()
        .iter()
        .zip(&per_task)
        .map(|(t, n)| {
            vec![
                t.label.clone(),
                kind(&t.kind),
                t.dimensions.join(","),
                n.to_string(),
            ]
        })
        .collect();
    print_table(&["task", "class/command", "dimensions", "quanta"], &rows);
    println!();
    println!("{} clusters", clusters.len());
    for c in clusters.iter().take(10) {
        println!("  {}: {} quanta", c.name, c.quanta.len());
    }
    if clusters.len() > 10 {
        println!("  ...");
    }
    Ok(ExitCode::SUCCESS)
}
