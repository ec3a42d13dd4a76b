//! `quanta demo`: the whole head-node → worker → merge flow on an embedded
//! default — a new SQLite repo, the reference workload's raws, the reference
//! pipeline — then what it did and what to try next. `--pipeline fits` runs
//! the FITS image pipeline instead (synthetic raws, bias and flat from a
//! CALIBRATION collection, background, detection, per-exposure summary) and
//! also prints detected against injected sources per exposure; `--pipeline
//! coadd` builds a synthetic survey with regions and a grid skymap, warps
//! and coadds it, and prints per patch and band the warps combined and the
//! injected stars detected on the coadd. `--python` runs the reference
//! pipeline with its three tasks in Python (`examples/python/`, run by one
//! interpreter per job; needs the `quanta` Python package).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use quanta_butler::{MergeOptions, NewRegistry};
use quanta_core::BundleWriteOptions;
use quanta_preflight::{run_preflight, PreflightOptions};
use quanta_runtime::{execute, ExecOptions, Selection};

use crate::output::print_table;

/// Which embedded pipeline the demo runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DemoPipeline {
    /// The scatter/gather reference workload (JSON datasets).
    Reference,
    /// FITS images: ISR with bias and flat, background, detection, summary.
    Fits,
    /// Warps and coadds of a synthetic survey on a grid skymap (regions,
    /// spatial joins); `--exposures` is the number of visits per band.
    Coadd,
}

#[derive(Args)]
pub struct DemoArgs {
    /// The pipeline to run.
    #[arg(long, value_enum, default_value_t = DemoPipeline::Reference)]
    pipeline: DemoPipeline,
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
    /// With `--pipeline fits`: image width and height in pixels [default: 256].
    #[arg(long)]
    image_size: Option<usize>,
    /// With `--pipeline fits`: point sources injected per image [default: 25].
    #[arg(long)]
    sources: Option<usize>,
    /// Put the repo's registry in a fresh namespace (demo_<pid>_<time>) of
    /// this PostgreSQL database (postgresql://user@host:port/db; the
    /// password in PGPASSWORD or ~/.pgpass) instead of a SQLite file.
    #[arg(long, value_name = "URL")]
    registry: Option<String>,
    /// Run the reference pipeline's tasks written in Python
    /// (`quanta.PipelineTask`s, one interpreter per job; needs the `quanta`
    /// package: `pip install ./python`, and `QUANTA_PYTHON` if the
    /// interpreter is not `python3`).
    #[arg(long)]
    python: bool,
}

const INPUT: &str = quanta_examples::workload::RAW_RUN;
const CALIB_INPUT: &str = quanta_examples::fits::workload::CALIB_COLLECTION;
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

/// The demo repo's registry: SQLite, or a fresh namespace of the
/// PostgreSQL database `url` (so demos never collide).
fn demo_registry(url: Option<&str>) -> Result<NewRegistry> {
    let Some(url) = url else {
        return Ok(NewRegistry::Sqlite);
    };
    quanta_butler::check_postgres_url(url).map_err(anyhow::Error::msg)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    Ok(NewRegistry::Postgres {
        url: url.to_string(),
        namespace: format!("demo_{}_{stamp}", std::process::id()),
    })
}

/// Writes the Python tasks' module into `dir/python/` and puts that
/// directory first on PYTHONPATH, which the Python task interpreters
/// inherit. Done before any thread that reads the environment is started.
fn install_python_tasks(dir: &Path) -> Result<()> {
    let py = dir.join("python");
    std::fs::create_dir_all(&py).with_context(|| format!("creating {}", py.display()))?;
    let module = py.join("reference_tasks.py");
    std::fs::write(&module, quanta_examples::REFERENCE_PYTHON_TASKS)
        .with_context(|| format!("writing {}", module.display()))?;
    let mut paths = vec![py];
    if let Some(old) = std::env::var_os("PYTHONPATH") {
        paths.extend(std::env::split_paths(&old));
    }
    let joined = std::env::join_paths(paths).context("PYTHONPATH")?;
    std::env::set_var("PYTHONPATH", joined);
    Ok(())
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
    if a.python && a.pipeline != DemoPipeline::Reference {
        bail!("--python applies to --pipeline reference only");
    }
    let sim = match a.pipeline {
        DemoPipeline::Reference => {
            if a.image_size.is_some() || a.sources.is_some() {
                bail!("--image-size and --sources apply to --pipeline fits only");
            }
            None
        }
        DemoPipeline::Coadd => {
            if a.image_size.is_some() || a.sources.is_some() {
                bail!("--image-size and --sources apply to --pipeline fits only");
            }
            None
        }
        DemoPipeline::Fits => {
            let defaults = quanta_examples::fits::synth::SimConfig::default();
            let size = a.image_size.unwrap_or(defaults.width);
            let sim = quanta_examples::fits::synth::SimConfig {
                width: size,
                height: size,
                sources_per_image: a.sources.unwrap_or(defaults.sources_per_image),
                ..defaults
            };
            // Refuse a layout that cannot hold the sources before creating
            // any directory.
            quanta_examples::fits::synth::injected_sources(&sim, 0, 0)
                .context("--image-size / --sources")?;
            Some(sim)
        }
    };
    let registry = demo_registry(a.registry.as_deref())?;
    let dir = demo_dir(a.dir)?;
    let repo = dir.join("repo");
    let pipeline = dir.join("pipeline.yaml");
    let bundle = dir.join("demo.qb");
    let (yaml, inputs) = match a.pipeline {
        DemoPipeline::Reference if a.python => {
            install_python_tasks(&dir)?;
            (quanta_examples::REFERENCE_PYTHON_PIPELINE_YAML, vec![INPUT])
        }
        DemoPipeline::Reference => (quanta_examples::REFERENCE_PIPELINE_YAML, vec![INPUT]),
        DemoPipeline::Fits => (
            quanta_examples::FITS_PIPELINE_YAML,
            vec![INPUT, CALIB_INPUT],
        ),
        DemoPipeline::Coadd => (
            quanta_examples::COADD_PIPELINE_YAML,
            vec![quanta_examples::coadd::survey::CALEXP_RUN],
        ),
    };
    std::fs::write(&pipeline, yaml).with_context(|| format!("writing {}", pipeline.display()))?;
    let size = match a.pipeline {
        DemoPipeline::Coadd => format!("{} visits per band × 9 detectors", a.exposures),
        _ => format!("{} exposures × {} detectors", a.exposures, a.detectors),
    };
    eprintln!(
        "quanta demo ({} pipeline{}): {size} in {}",
        a.pipeline.name(),
        if a.python { ", Python tasks" } else { "" },
        dir.display()
    );
    if let NewRegistry::Postgres { url, namespace } = &registry {
        eprintln!("registry: namespace {namespace} of {url}");
    }
    let mut timings = Vec::new();

    match &sim {
        None if a.pipeline == DemoPipeline::Coadd => {
            stage("1/4 repo + survey regions, calexps", &mut timings, || {
                quanta_examples::coadd::survey::create_survey_repo_on(
                    &repo,
                    &registry,
                    &coadd_survey(a.exposures),
                )?;
                Ok(())
            })?
        }
        None => stage("1/4 repo + raw datasets", &mut timings, || {
            quanta_examples::workload::create_reference_repo_on(
                &repo,
                &registry,
                a.exposures,
                a.detectors,
            )?;
            Ok(())
        })?,
        Some(sim) => stage("1/4 repo + raw images, bias, flat", &mut timings, || {
            let workload = quanta_examples::fits::workload::FitsWorkload {
                exposures: a.exposures,
                detectors: a.detectors,
                sim: sim.clone(),
            };
            quanta_examples::fits::workload::create_fits_repo_on(&repo, &registry, &workload)?;
            Ok(())
        })?,
    }

    let report = stage(
        "2/4 preflight (quantum graph → bundle)",
        &mut timings,
        || {
            let opts = PreflightOptions {
                input_collections: inputs.iter().map(|c| c.to_string()).collect(),
                output_run: OUTPUT_RUN.to_string(),
                output_chain: Some(OUTPUT_CHAIN.to_string()),
                command_line: std::env::args().collect(),
                ..Default::default()
            };
            Ok(run_preflight(
                &mut crate::plugins::open_butler(&repo)?,
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

    print_summary(
        &dir,
        &repo,
        &report,
        &merged,
        &timings,
        a.pipeline,
        a.exposures,
    )?;
    Ok(ExitCode::SUCCESS)
}

impl DemoPipeline {
    fn name(self) -> &'static str {
        match self {
            DemoPipeline::Reference => "reference",
            DemoPipeline::Fits => "fits",
            DemoPipeline::Coadd => "coadd",
        }
    }
}

/// The demo's survey: `visits_per_band` visits in each of g and r.
fn coadd_survey(visits_per_band: usize) -> quanta_examples::coadd::survey::Survey {
    quanta_examples::coadd::survey::Survey {
        visits_per_band,
        ..Default::default()
    }
}

/// The injected stars on a coadd (finite pixel, 3 px inside): how many, how
/// many a detected source lies within 2 px of, and their median peak pixel.
fn stars_on_coadd(
    image: &quanta_examples::fits::Image,
    sources: &[quanta_examples::fits::Source],
    stars: &[quanta_examples::coadd::survey::Star],
) -> (usize, usize, Option<f64>) {
    let Some(wcs) = image.header.wcs else {
        return (0, 0, None);
    };
    let (w, h) = (image.width() as f64, image.height() as f64);
    let (mut n, mut found, mut peaks) = (0, 0, Vec::new());
    for t in stars {
        let Some((x, y)) = wcs.sky_to_pixel(t.ra, t.dec) else {
            continue;
        };
        if x < 3.0 || y < 3.0 || x > w - 4.0 || y > h - 4.0 {
            continue;
        }
        let Some(v) = image.get(x.round() as usize, y.round() as usize) else {
            continue;
        };
        if !v.is_finite() {
            continue;
        }
        n += 1;
        peaks.push(f64::from(v));
        if sources.iter().any(|s| (s.x - x).hypot(s.y - y) <= 2.0) {
            found += 1;
        }
    }
    (n, found, quanta_examples::fits::measure::median(&mut peaks))
}

/// Per patch and band: warps combined, injected stars on the coadd, those
/// detected, and their median peak, from the merged coadds and catalogs.
fn print_coadd_counts(repo: &Path, survey: &quanta_examples::coadd::survey::Survey) -> Result<()> {
    let butler = crate::plugins::open_butler_read_only(repo)?;
    let run = [OUTPUT_RUN.to_string()];
    let found = butler.registry().query_datasets(
        &["deepCoadd".to_string()],
        &run,
        "",
        &Default::default(),
        true,
    )?;
    let stars = survey.stars();
    let mut rows = Vec::new();
    for f in &found {
        let id = &f.dataset_ref.data_id;
        let image = butler
            .get("deepCoadd", id, &run)?
            .downcast::<quanta_examples::fits::Image>()
            .context("deepCoadd is not an image")?;
        let catalog = butler
            .get("deepCoadd_src", id, &run)?
            .downcast::<quanta_examples::fits::SourceCatalog>()
            .context("deepCoadd_src is not a catalog")?;
        let (n, detected, peak) = stars_on_coadd(&image, &catalog.sources, &stars);
        let field = |k: &str| id.get(k).map(|v| v.to_string()).unwrap_or_default();
        rows.push(vec![
            field("tract"),
            field("patch"),
            field("band"),
            image.header.combined.map_or("-".into(), |c| c.to_string()),
            n.to_string(),
            detected.to_string(),
            peak.map_or("-".into(), |p| format!("{p:.1}")),
        ]);
    }
    rows.sort();
    println!();
    print_table(
        &[
            "tract",
            "patch",
            "band",
            "warps",
            "stars",
            "detected",
            "median peak",
        ],
        &rows,
    );
    Ok(())
}

/// Per exposure, the sources the pipeline detected against those the
/// simulator injected, from the merged `expSummary` datasets.
fn print_source_counts(repo: &Path, n_exp: usize) -> Result<()> {
    let butler = crate::plugins::open_butler_read_only(repo)?;
    let mut rows = Vec::with_capacity(n_exp);
    let (mut detected, mut injected) = (0u64, 0u64);
    for e in 0..n_exp {
        let data_id = quanta_core::DataId::from_pairs([
            ("instrument", quanta_core::DataIdValue::from("Cam")),
            ("exposure", quanta_core::DataIdValue::Int(e as i64)),
        ]);
        let summary: serde_json::Value =
            butler.get_json("expSummary", &data_id, &[OUTPUT_RUN.to_string()])?;
        let count = |key: &str| summary.get(key).and_then(serde_json::Value::as_u64);
        let (d, i) = (count("sources"), count("injected"));
        detected += d.unwrap_or(0);
        injected += i.unwrap_or(0);
        let number = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |n| n.to_string());
        let float = |key: &str| {
            summary
                .get(key)
                .and_then(serde_json::Value::as_f64)
                .map_or_else(|| "-".to_string(), |v| format!("{v:.1}"))
        };
        rows.push(vec![
            e.to_string(),
            number(d),
            number(i),
            float("median_background"),
            float("median_sigma"),
        ]);
    }
    println!();
    print_table(
        &["exposure", "detected", "injected", "background", "sigma"],
        &rows,
    );
    println!("sources: {detected} detected, {injected} injected");
    Ok(())
}

fn print_summary(
    dir: &Path,
    repo: &Path,
    report: &quanta_preflight::PreflightReport,
    merged: &quanta_butler::MergeSummary,
    timings: &[(String, f64)],
    pipeline: DemoPipeline,
    n_exp: usize,
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
    if pipeline == DemoPipeline::Fits {
        print_source_counts(repo, n_exp)?;
    }
    if pipeline == DemoPipeline::Coadd {
        print_coadd_counts(repo, &coadd_survey(n_exp))?;
    }
    // The last product of each pipeline, for the commands to try next.
    let product = match pipeline {
        DemoPipeline::Coadd => "deepCoadd",
        DemoPipeline::Reference | DemoPipeline::Fits => "expSummary",
    };
    let summary_id = found
        .iter()
        .find(|f| f.dataset_ref.dataset_type == product)
        .map(|f| f.dataset_ref.id.to_string())
        .unwrap_or_else(|| "UUID".into());
    let r = repo.display();
    // The binary's own path, so the commands work without `quanta` on PATH
    // (e.g. after `cargo run`).
    let q = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "quanta".into());
    println!("\nTry next:");
    println!("  {q} query-datasets {r} --collections {OUTPUT_CHAIN} --dataset-type {product}");
    if pipeline == DemoPipeline::Fits {
        println!(
            "  {q} get {r} expSummary --data-id instrument=Cam,exposure=0 --collections {OUTPUT_CHAIN}"
        );
        println!(
            "  {q} get {r} src --data-id instrument=Cam,exposure=0,detector=0 --collections {OUTPUT_CHAIN} --output src.fits"
        );
    }
    if pipeline == DemoPipeline::Coadd {
        println!(
            "  {q} query-data-ids {r} --dimensions visit,detector,patch --where \"band = 'g'\""
        );
        println!("  {q} dimensions show {r} patch");
    }
    println!("  {q} provenance {r} {summary_id} --depth 2");
    println!("  {q} report {r} {OUTPUT_RUN}");
    println!(
        "  (the pipeline, bundle and journals are in {})",
        dir.display()
    );
    Ok(())
}
