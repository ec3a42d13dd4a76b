//! `quanta demo`: the whole head-node → worker → merge flow on an embedded
//! default — a new SQLite repo, the reference workload's raws, the reference
//! pipeline — then what it did and what to try next.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use quanta_butler::MergeOptions;
use quanta_core::BundleWriteOptions;
use quanta_preflight::{run_preflight, PreflightOptions};
use quanta_runtime::{execute, ExecOptions, Selection};

use crate::output::print_table;

#[derive(Args)]
pub struct DemoArgs {
    /// Where to create the demo (default: a new directory under the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    exposures: usize,
    #[arg(long, default_value_t = 10)]
    detectors: usize,
    /// Quanta run at once.
    #[arg(long, short = 'j', default_value_t = 2)]
    jobs: usize,
}

const INPUT: &str = quanta_examples::workload::RAW_RUN;
const OUTPUT_RUN: &str = "demo/run1";
const OUTPUT_CHAIN: &str = "demo";

fn stage<T>(
    name: &str,
    timings: &mut Vec<(String, f64)>,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    eprint!("{name:<40}");
    let t0 = Instant::now();
    let out = f();
    let secs = t0.elapsed().as_secs_f64();
    match &out {
        Ok(_) => eprintln!("done in {secs:.3} s"),
        Err(_) => eprintln!("failed"),
    }
    timings.push((name.to_string(), secs));
    out
}

fn demo_dir(requested: Option<PathBuf>) -> Result<PathBuf> {
    let dir = match requested {
        Some(d) => d,
        None => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            std::env::temp_dir().join(format!("quanta-demo-{}-{stamp}", std::process::id()))
        }
    };
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{}: exists and is not empty; give an empty or new --dir",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

pub fn demo(a: DemoArgs) -> Result<ExitCode> {
    if a.exposures == 0 || a.detectors == 0 || a.jobs == 0 {
        bail!("--exposures, --detectors and --jobs must be at least 1");
    }
    let dir = demo_dir(a.dir)?;
    let repo = dir.join("repo");
    let pipeline = dir.join("pipeline.yaml");
    let bundle = dir.join("demo.qb");
    std::fs::write(&pipeline, quanta_examples::REFERENCE_PIPELINE_YAML)
        .with_context(|| format!("writing {}", pipeline.display()))?;
    eprintln!(
        "quanta demo: {} exposures × {} detectors in {}",
        a.exposures,
        a.detectors,
        dir.display()
    );
    let mut timings = Vec::new();

    stage("1/4 repo + raw datasets", &mut timings, || {
        quanta_examples::workload::create_reference_repo(&repo, a.exposures, a.detectors)?;
        Ok(())
    })?;

    let report = stage(
        "2/4 preflight (quantum graph → bundle)",
        &mut timings,
        || {
            let opts = PreflightOptions {
                input_collections: vec![INPUT.to_string()],
                output_run: OUTPUT_RUN.to_string(),
                output_chain: Some(OUTPUT_CHAIN.to_string()),
                command_line: std::env::args().collect(),
                ..Default::default()
            };
            Ok(run_preflight(
                &repo,
                &pipeline,
                &opts,
                &bundle,
                &BundleWriteOptions::default(),
                &|_| {},
            )?)
        },
    )?;

    let run = stage(
        &format!("3/4 execute ({} jobs)", a.jobs),
        &mut timings,
        || {
            let registry = crate::plugins::open_limited_registry(&bundle)?;
            let tasks = crate::plugins::task_registry();
            let opts = ExecOptions {
                jobs: a.jobs,
                worker_name: "demo".into(),
                ..Default::default()
            };
            Ok(execute(
                registry,
                &tasks,
                &Selection::All,
                &opts,
                &mut |_| {},
            )?)
        },
    )?;
    if !run.all_succeeded() {
        for f in &run.failures {
            eprintln!("{:?}: {} {}: {}", f.status, f.task, f.data_id, f.error);
        }
        bail!("some quanta did not succeed; see {}", bundle.display());
    }

    let merged = stage("4/4 merge (verify + register)", &mut timings, || {
        let mut butler = crate::plugins::open_butler(&repo)?;
        Ok(butler.merge(&bundle, &MergeOptions::default(), &mut |_, _| {})?)
    })?;

    print_summary(&dir, &repo, &report, &merged, &timings)?;
    Ok(ExitCode::SUCCESS)
}

fn print_summary(
    dir: &Path,
    repo: &Path,
    report: &quanta_preflight::PreflightReport,
    merged: &quanta_butler::MergeSummary,
    timings: &[(String, f64)],
) -> Result<()> {
    println!();
    let rows: Vec<Vec<String>> = report
        .tasks
        .iter()
        .map(|t| vec![t.label.clone(), t.quanta.to_string()])
        .collect();
    print_table(&["task", "quanta"], &rows);
    println!();
    let butler = crate::plugins::open_butler_read_only(repo)?;
    let found = butler.registry().query_datasets(
        &[],
        &[OUTPUT_RUN.to_string()],
        "",
        &Default::default(),
        true,
    )?;
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for f in &found {
        *counts
            .entry(f.dataset_ref.dataset_type.as_str())
            .or_default() += 1;
    }
    let rows: Vec<Vec<String>> = counts
        .iter()
        .map(|(t, n)| vec![t.to_string(), n.to_string()])
        .collect();
    print_table(&[&format!("outputs in {OUTPUT_RUN}"), "datasets"], &rows);
    println!();
    let rows: Vec<Vec<String>> = timings
        .iter()
        .map(|(n, s)| vec![n.clone(), format!("{s:.3}")])
        .collect();
    print_table(&["stage", "seconds"], &rows);
    println!(
        "\nbundle: {} bytes for {} quanta; merged {} datasets",
        report.bundle_bytes, report.n_quanta, merged.datasets_inserted
    );
    println!("repo: {}", repo.display());
    let summary_id = found
        .iter()
        .find(|f| f.dataset_ref.dataset_type == "expSummary")
        .map(|f| f.dataset_ref.id.to_string())
        .unwrap_or_else(|| "UUID".into());
    let r = repo.display();
    // The binary's own path, so the commands work without `quanta` on PATH
    // (e.g. after `cargo run`).
    let q = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "quanta".into());
    println!("\nTry next:");
    println!("  {q} query-datasets {r} --collections {OUTPUT_CHAIN} --dataset-type expSummary");
    println!("  {q} provenance {r} {summary_id} --depth 2");
    println!("  {q} report {r} {OUTPUT_RUN}");
    println!(
        "  (the pipeline, bundle and journals are in {})",
        dir.display()
    );
    Ok(())
}
