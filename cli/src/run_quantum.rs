//! `quanta run-quantum`: runs one quantum directly against a full
//! repository, the way to debug a single failing quantum. The quantum is
//! resolved by preflight (the one task, `--where` restricted to the data ID
//! through binds), the task runs through the `LimitedButler` trait against
//! the repository's `Butler` (inputs read through their registered
//! records, outputs written into the output RUN's files), and its journal
//! is merged, which registers the outputs with the quantum's provenance.
//! A rerun after a kill converges: the killed run's bundle stays in the
//! repository's `.run-quantum/` directory until its journal is merged, so
//! the rerun resumes the same quantum (same UUIDs, same output paths, its
//! journal saying whose a leftover file is), and merge is idempotent.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use quanta_butler::{Butler, MergeOptions, DEFAULT_BATCH_QUANTA};
use quanta_core::pipeline::{Connection, LoadedPipeline, TaskDef, TaskKind};
use quanta_core::{Bundle, BundleQuantum, BundleWriteOptions, QuantumStatus};
use quanta_limited_registry::{
    peak_rss_bytes, thread_cpu_seconds, LogTail, QuantumOutcome, WorkerJournal,
};
use quanta_preflight::{run_preflight, PreflightOptions};
use quanta_runtime::TaskContext;

#[derive(Args)]
pub struct RunQuantumArgs {
    repo: PathBuf,
    /// The pipeline YAML file.
    #[arg(long)]
    pipeline: PathBuf,
    /// The label of the task to run.
    #[arg(long)]
    task: String,
    /// The quantum's data ID: dimension=value pairs (comma-separated or repeated).
    #[arg(long = "data-id", value_delimiter = ',', required = true)]
    data_id: Vec<String>,
    /// Input collections, searched in order (comma-separated or repeated).
    #[arg(long = "input", value_delimiter = ',', required = true)]
    inputs: Vec<String>,
    /// The RUN collection the outputs are written to.
    #[arg(long)]
    output_run: String,
    /// A CHAINED collection [output RUN, inputs...] to create (or prepend the RUN to).
    #[arg(long)]
    output: Option<String>,
}

pub fn run_quantum(args: RunQuantumArgs) -> Result<ExitCode> {
    let mut butler = crate::plugins::open_butler(&args.repo)?;
    let loaded = LoadedPipeline::load(&args.pipeline, butler.universe())?;
    let Some(task) = loaded.pipeline.tasks.iter().find(|t| t.label == args.task) else {
        let known: Vec<&str> = loaded
            .pipeline
            .tasks
            .iter()
            .map(|t| t.label.as_str())
            .collect();
        bail!(
            "--task `{}`: no such task in {} (it has: {})",
            args.task,
            args.pipeline.display(),
            known.join(", ")
        );
    };
    let TaskKind::Class(class) = &task.kind else {
        bail!(
            "--task `{}` is {}; run-quantum runs Rust tasks only",
            args.task,
            match &task.kind {
                TaskKind::Python(_) => "a Python task",
                _ => "an external command",
            }
        );
    };
    let (where_clause, binds) = data_id_where(&args.data_id)?;
    let pipeline_yaml = single_task_pipeline(task)?;
    let work = working_dir(&args, &pipeline_yaml);
    let bundle_path = work.join("quantum.qbundle");
    let journals = work.join("journals");
    // A killed run left its bundle (and maybe a journal and an output
    // file): resumed with the same quantum, so the same output paths,
    // whose leftovers the journal then marks as this quantum's.
    let bundle = match Bundle::open(&bundle_path) {
        Ok(bundle) => bundle,
        Err(_) => {
            let _ = std::fs::remove_dir_all(&work);
            std::fs::create_dir_all(&work)
                .with_context(|| format!("creating {}", work.display()))?;
            let pipeline_file = work.join("pipeline.yaml");
            std::fs::write(&pipeline_file, &pipeline_yaml)
                .with_context(|| format!("writing {}", pipeline_file.display()))?;
            resolve_quantum(
                &mut butler,
                &args,
                &pipeline_file,
                &bundle_path,
                where_clause,
                binds,
            )?
        }
    };
    let quantum = the_quantum(&bundle, &args)?;
    let task_def = bundle.tasks()[quantum.task as usize].clone();
    let instance = crate::plugins::task_registry()
        .create(class, &task_def.config)
        .with_context(|| format!("task class `{class}` is not registered in this binary"))??;
    let outcome = run_one(
        &mut butler,
        instance.as_ref(),
        &bundle,
        &quantum,
        &task_def,
        &journals,
    )?;
    let summary = butler.merge(
        &bundle_path,
        &MergeOptions {
            journals: Some(journals),
            incomplete: false,
            batch_quanta: DEFAULT_BATCH_QUANTA,
        },
        &mut |_, _| {},
    )?;
    for w in &summary.warnings {
        eprintln!("warning: {w}");
    }
    // Merged: nothing is left to resume. (Kept until here, so that a run
    // killed or failing before finds its quantum again.)
    if let Err(e) = std::fs::remove_dir_all(&work) {
        eprintln!("warning: could not remove {}: {e}", work.display());
    }
    let _ = std::fs::remove_dir(work.parent().unwrap_or(&work));
    println!(
        "quantum {} ({} {}): {}; {} output(s) registered in RUN {}",
        quantum.id,
        task_def.label,
        quantum.data_id,
        format!("{:?}", outcome.status).to_lowercase(),
        summary.datasets_inserted,
        args.output_run
    );
    match outcome.error {
        None if outcome.status == QuantumStatus::Succeeded => Ok(ExitCode::SUCCESS),
        error => {
            eprintln!(
                "error: {}",
                error.unwrap_or_else(|| "the quantum did not succeed".into())
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// The run's working directory in the repository (`.run-quantum/`, beside
/// the datastore, outside what `repo check` verifies), named by what it
/// runs: the output RUN and chain, the inputs, the data ID and the task's
/// definition. A rerun after a kill finds the killed run's bundle there.
fn working_dir(args: &RunQuantumArgs, pipeline_yaml: &str) -> PathBuf {
    let mut data_id = args.data_id.clone();
    data_id.sort();
    let mut key = blake3::Hasher::new();
    for part in [
        args.output_run.as_str(),
        args.output.as_deref().unwrap_or(""),
        &args.inputs.join(","),
        &data_id.join(","),
        pipeline_yaml,
    ] {
        key.update(part.as_bytes());
        key.update(&[0]);
    }
    args.repo
        .join(".run-quantum")
        .join(&key.finalize().to_hex()[..32])
}

/// Preflight of the one task at the data ID, into `bundle_path`.
fn resolve_quantum(
    butler: &mut quanta_butler::Butler,
    args: &RunQuantumArgs,
    pipeline_file: &Path,
    bundle_path: &Path,
    where_clause: String,
    binds: Vec<String>,
) -> Result<Bundle> {
    let opts = PreflightOptions {
        input_collections: args.inputs.clone(),
        output_run: args.output_run.clone(),
        output_chain: args.output.clone(),
        where_clause,
        binds: crate::repo_cmds::parse_binds(&binds)?,
        skip_existing: false,
        clobber: false,
        cluster_by: None,
        command_line: std::env::args().collect(),
    };
    let report = run_preflight(
        butler,
        pipeline_file,
        &opts,
        bundle_path,
        &BundleWriteOptions::default(),
        &|msg: &str| tracing::info!("{msg}"),
    )
    .with_context(|| {
        format!(
            "resolving the quantum of task `{}` at --data-id {}",
            args.task,
            args.data_id.join(",")
        )
    })?;
    if report.n_quanta == 0 {
        let why: Vec<String> = report
            .pruned
            .iter()
            .take(3)
            .map(|p| format!("{}: {}", p.data_id, p.reason))
            .collect();
        bail!(
            "--data-id {} selects no quantum of task `{}` with inputs in {}{}",
            args.data_id.join(","),
            args.task,
            args.inputs.join(", "),
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join("; "))
            }
        )
    }
    Ok(Bundle::open(bundle_path)?)
}

/// `k=v` pairs → `k = :k AND …` with `--bind`-style values: the data ID's
/// values reach the query as binds, never as text.
fn data_id_where(pairs: &[String]) -> Result<(String, Vec<String>)> {
    let mut terms = Vec::new();
    let mut binds = Vec::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--data-id `{pair}`: expected dimension=value");
        };
        let key = key.trim();
        let is_name = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !is_name {
            bail!("--data-id `{pair}`: `{key}` is not a dimension name");
        }
        if binds
            .iter()
            .any(|b: &String| b.split_once('=').is_some_and(|(k, _)| k == key))
        {
            bail!("--data-id: `{key}` is given twice");
        }
        terms.push(format!("{key} = :{key}"));
        binds.push(format!("{key}={}", value.trim()));
    }
    Ok((terms.join(" AND "), binds))
}

fn connections_json(conns: &[Connection]) -> serde_json::Value {
    conns
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                serde_json::json!({
                    "dataset_type": c.dataset_type,
                    "dimensions": c.dimensions,
                    "storage_class": c.storage_class,
                    "multiple": c.multiple,
                    "is_calibration": c.is_calibration,
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A pipeline of the one task, as JSON (which is YAML): preflight then
/// looks its inputs up in the input collections, not as outputs of other
/// tasks.
fn single_task_pipeline(task: &TaskDef) -> Result<String> {
    let mut t = serde_json::json!({
        "dimensions": task.dimensions,
        "inputs": connections_json(&task.inputs),
        "prerequisites": connections_json(&task.prerequisites),
        "outputs": connections_json(&task.outputs),
        "init_outputs": connections_json(&task.init_outputs),
        "config": task.config,
    });
    match &task.kind {
        TaskKind::Class(c) => t["class"] = c.clone().into(),
        TaskKind::Command(argv) => t["command"] = argv.clone().into(),
        TaskKind::Python(target) => t["python"] = target.clone().into(),
    }
    let mut tasks = serde_json::Map::new();
    tasks.insert(task.label.clone(), t);
    Ok(serde_json::to_string_pretty(&serde_json::json!({
        "description": format!("run-quantum: {}", task.label),
        "tasks": tasks,
    }))?)
}

/// The one quantum the data ID selects; none or several is bad input.
fn the_quantum(bundle: &Bundle, args: &RunQuantumArgs) -> Result<BundleQuantum> {
    let quanta = bundle.quanta().collect::<Result<Vec<_>, _>>()?;
    let data_id = args.data_id.join(",");
    match quanta.len() {
        1 => Ok(quanta.into_iter().next().context("one quantum")?),
        0 => bail!("--data-id {data_id} selects no quantum of task `{}`", args.task),
        n => bail!(
            "--data-id {data_id} selects {n} quanta of task `{}` (e.g. {}); give a value for each of its dimensions",
            args.task,
            quanta[0].data_id
        ),
    }
}

/// Runs the task through its context against the repository's butler and
/// journals the attempt for the merge.
fn run_one(
    butler: &mut Butler,
    task: &dyn quanta_runtime::PipelineTask,
    bundle: &Bundle,
    quantum: &BundleQuantum,
    task_def: &TaskDef,
    journals: &Path,
) -> Result<QuantumOutcome> {
    let journal = WorkerJournal::create(journals, bundle.header().bundle_id, "run-quantum", None)?;
    journal.started(0, quantum.id, 1)?;
    let started = quanta_core::now_rfc3339();
    let wall0 = Instant::now();
    let cpu0 = thread_cpu_seconds();
    let mut log = LogTail::default();
    let (result, written, inputs_used) = {
        let mut ctx = TaskContext::new(butler, quantum, task_def, 0, &task_def.config, &mut log);
        let r = catch_unwind(AssertUnwindSafe(|| task.run(&mut ctx)));
        (r, ctx.written().to_vec(), ctx.inputs_used())
    };
    let error = match result {
        Ok(Ok(())) => missing_outputs(quantum, &written),
        Ok(Err(e)) => Some(error_chain(&e)),
        Err(_) => Some("the task panicked".to_string()),
    };
    let outcome = QuantumOutcome {
        status: if error.is_none() {
            QuantumStatus::Succeeded
        } else {
            QuantumStatus::Failed
        },
        outputs: written,
        inputs_used,
        started,
        finished: quanta_core::now_rfc3339(),
        wall_seconds: wall0.elapsed().as_secs_f64(),
        cpu_seconds: thread_cpu_seconds() - cpu0,
        peak_rss_bytes: peak_rss_bytes(),
        exit_code: None,
        error,
        log_tail: log.into_lines(),
    };
    journal.finished(0, quantum.id, 1, outcome.clone())?;
    Ok(outcome)
}

fn missing_outputs(
    quantum: &BundleQuantum,
    written: &[quanta_core::WrittenOutput],
) -> Option<String> {
    let missing: Vec<String> = quantum
        .outputs
        .iter()
        .flat_map(|(c, refs)| refs.iter().map(move |r| (c, r)))
        .filter(|(_, r)| !written.iter().any(|w| w.dataset_id == r.id))
        .map(|(c, r)| format!("{c} ({} {})", r.dataset_type, r.data_id))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the task returned without writing predicted output(s): {}",
            missing.join(", ")
        )
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = x.source();
    }
    s
}
