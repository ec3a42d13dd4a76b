//! Fills the campaign page's data model ([`quanta_report`]) from the
//! registry after a merge ([`run_report_page`]) or from a bundle and its
//! journals during a campaign ([`campaign_report_page`]).
//!
//! Owns: mapping recorded quanta, journal records and bundle tasks onto the
//! report's plain types. Must not: write anything, run SQL of its own (the
//! registry's provenance queries do), or render (the report crate does).

use std::path::Path;

use quanta_core::pipeline::{LoadedPipeline, TaskDef};
use quanta_core::{
    fold_journals, journal_dir_for, BlockQuantum, Bundle, BundleHeader, CampaignProgress, DataId,
    JournalError, JournalRecord, JournalRecords, QuantumState,
};
use quanta_registry::{Registry, RegistryError};
use quanta_report::{
    parse_rfc3339_ms, BundleInfo, Limits, Observation, QuantumStatus, Report, ReportBuilder,
    ReportMeta, TaskInfo,
};

use crate::merge::MergeError;

fn task_info(t: &TaskDef) -> TaskInfo {
    let names = |c: &[quanta_core::pipeline::Connection]| {
        c.iter().map(|c| c.dataset_type.clone()).collect::<Vec<_>>()
    };
    TaskInfo {
        label: t.label.clone(),
        kind: t.kind.describe(),
        dimensions: t.dimensions.clone(),
        inputs: names(&t.inputs),
        prerequisites: names(&t.prerequisites),
        outputs: t
            .outputs
            .iter()
            .chain(&t.init_outputs)
            .map(|c| c.dataset_type.clone())
            .collect(),
    }
}

/// The registry's status name as the report's; an unknown name (from a
/// newer quanta) counts as a failure rather than vanish.
fn status_of(name: &str) -> QuantumStatus {
    QuantumStatus::from_name(name).unwrap_or(QuantumStatus::Failed)
}

fn state_status(s: QuantumState) -> QuantumStatus {
    match s {
        QuantumState::Pending => QuantumStatus::Pending,
        QuantumState::Running => QuantumStatus::Running,
        QuantumState::Succeeded => QuantumStatus::Succeeded,
        QuantumState::Failed => QuantumStatus::Failed,
        QuantumState::TimedOut => QuantumStatus::TimedOut,
        QuantumState::OutOfMemory => QuantumStatus::OutOfMemory,
        QuantumState::Blocked => QuantumStatus::Blocked,
    }
}

/// A timeline row group, into `out`: the batch job when there is one,
/// else the host.
fn worker_key(out: &mut String, host: Option<&str>, batch_job: Option<&str>) {
    match (host, batch_job) {
        (Some(h), Some(j)) => {
            out.push_str(h);
            out.push_str(" job ");
            out.push_str(j);
        }
        (None, Some(j)) => {
            out.push_str("job ");
            out.push_str(j);
        }
        (Some(h), None) => out.push_str(h),
        (None, None) => out.push_str("(unknown)"),
    }
}

/// The page of a merged RUN: every recorded quantum of `run`, the tasks of
/// the pipeline its provenance recorded, software and command lines.
/// `source` names the repository on the page.
pub fn run_report_page(
    registry: &Registry,
    run: &str,
    source: &str,
    limits: Limits,
) -> Result<Report, RegistryError> {
    let provenance = registry.run_provenance(run)?;
    let mut warnings = Vec::new();
    let mut tasks: Vec<TaskInfo> = Vec::new();
    let mut bundles = Vec::new();
    for p in &provenance {
        let file = format!("the pipeline recorded for bundle {}", p.bundle_id);
        match LoadedPipeline::parse(&p.pipeline_yaml, &file, registry.universe()) {
            Ok(loaded) => {
                for t in &loaded.pipeline.tasks {
                    if !tasks.iter().any(|x| x.label == t.label) {
                        tasks.push(task_info(t));
                    }
                }
            }
            Err(e) => warnings.push(format!("{e}; its graph is not drawn")),
        }
        let configs = p
            .task_configs
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let label = t.get("label").and_then(|l| l.as_str()).unwrap_or("?");
                let config = t.get("config").cloned().unwrap_or_default();
                let text = serde_json::to_string_pretty(&config).unwrap_or_default();
                (label.to_string(), text)
            })
            .collect();
        bundles.push(BundleInfo {
            bundle_id: p.bundle_id.to_string(),
            quanta_version: p.quanta_version.clone(),
            created_at: p.created_at.clone(),
            created_by: p.created_by.clone(),
            command_line: p.command_line.clone(),
            pipeline_yaml: p.pipeline_yaml.clone(),
            task_configs: configs,
        });
    }
    let meta = ReportMeta {
        run: run.to_string(),
        source: source.to_string(),
        live: false,
        generated_at: quanta_core::time::now_rfc3339(),
        bundles,
        warnings,
    };
    let mut builder = ReportBuilder::new(meta, tasks, limits);
    // Task label → index, and worker text, reused from row to row.
    let mut task_of: Vec<(String, usize)> = Vec::new();
    let mut worker = String::new();
    registry.for_each_quantum_in_run(run, |q| {
        let task = match task_of.iter().find(|(l, _)| l == q.task_label) {
            Some((_, i)) => *i,
            None => {
                let i = builder.task_index(q.task_label);
                task_of.push((q.task_label.to_string(), i));
                i
            }
        };
        worker.clear();
        worker_key(&mut worker, q.host, q.batch_job);
        let status = status_of(q.status);
        // Log tails are parsed for the failures the page lists only.
        let log_tail: Vec<String> = match q.log_tail_json {
            Some(t) if status.is_failure() => serde_json::from_str(t).unwrap_or_default(),
            _ => Vec::new(),
        };
        let obs = Observation {
            task,
            status,
            worker: &worker,
            host: q.host,
            start_ms: q.started.and_then(parse_rfc3339_ms),
            end_ms: q.finished.and_then(parse_rfc3339_ms),
            wall_seconds: q.wall_seconds,
            peak_rss_bytes: q.peak_rss_bytes,
            attempts: q.attempts,
            error: q.error,
            log_tail: &log_tail,
        };
        builder.add(&obs, || {
            let data_id = serde_json::from_str::<DataId>(q.data_id_json)
                .map(|d| d.to_string())
                .unwrap_or_else(|_| q.data_id_json.to_string());
            (data_id, q.id.to_string())
        });
    })?;
    Ok(builder.finish())
}

fn bundle_info(h: &BundleHeader, tasks: &[TaskDef]) -> BundleInfo {
    BundleInfo {
        bundle_id: h.bundle_id.to_string(),
        quanta_version: h.quanta_version.clone(),
        created_at: h.created_at.clone(),
        created_by: h.created_by.clone(),
        command_line: h.command_line.clone(),
        pipeline_yaml: h.pipeline_yaml.clone(),
        task_configs: tasks
            .iter()
            .map(|t| {
                let text = serde_json::to_string_pretty(&t.config).unwrap_or_default();
                (t.label.clone(), text)
            })
            .collect(),
    }
}

/// The page of a campaign in progress: the bundle's quanta in the state
/// its journals (in `journals`, default `<bundle>.journals/`) give them;
/// a running quantum is drawn on the timeline up to the latest record.
pub fn campaign_report_page(
    bundle_path: &Path,
    journals: Option<&Path>,
    limits: Limits,
) -> Result<Report, MergeError> {
    let bundle = Bundle::open(bundle_path)?;
    let header = bundle.header();
    let dir = journals
        .map(Path::to_path_buf)
        .unwrap_or_else(|| journal_dir_for(bundle_path));
    let fold = fold_journals(&dir, header.bundle_id, bundle.n_quanta())?;
    let mut warnings = fold.warnings.clone();
    for (path, other) in &fold.foreign_journals {
        warnings.push(format!(
            "journal {} belongs to bundle {other}; ignored",
            path.display()
        ));
    }
    let meta = ReportMeta {
        run: header.output_run.clone(),
        source: format!(
            "bundle {} and journals {}",
            bundle_path.display(),
            dir.display()
        ),
        live: true,
        generated_at: quanta_core::time::now_rfc3339(),
        bundles: vec![bundle_info(header, bundle.tasks())],
        warnings,
    };
    let tasks = bundle.tasks().iter().map(task_info).collect();
    let mut builder = ReportBuilder::new(meta, tasks, limits);
    let no_log: Vec<String> = Vec::new();
    let mut worker = String::new();
    let mut records = JournalRecords::default();
    // Borrowed views of each decoded block: the page needs a quantum's
    // task, data ID and UUID, not its connections (building owned quanta
    // was half of a million-quantum page's time).
    for block in bundle.decoded_blocks() {
        let block = block?;
        for pos in 0..block.len() {
            let Some(quantum) = block.quantum(pos) else {
                break;
            };
            let index = block.first_index() + pos as u32;
            add_journalled(
                &mut builder,
                &fold,
                &mut records,
                index,
                quantum,
                &mut worker,
                &no_log,
            )?;
        }
    }
    Ok(builder.finish())
}

/// Adds one bundle quantum in the state the journals' `fold` gives it, its
/// records read back through `records`.
fn add_journalled(
    builder: &mut ReportBuilder,
    fold: &CampaignProgress,
    records: &mut JournalRecords,
    index: u32,
    quantum: BlockQuantum<'_>,
    worker: &mut String,
    no_log: &[String],
) -> Result<(), JournalError> {
    {
        let state = fold.state(index);
        let progress = fold.quanta.get(&index);
        let finished = match progress {
            Some(p) => records.finished(p)?,
            None => None,
        };
        // The latest `Started` record only where the page needs it: the
        // start of a running quantum, the host of a failure.
        let need_started =
            finished.is_none() || state == QuantumState::Running || state.is_failure();
        let started = match progress.filter(|_| need_started) {
            Some(p) => records.started(p)?,
            None => None,
        };
        let (host, start_time) = match &started {
            Some(JournalRecord::Started { host, time, .. }) => {
                (Some(host.as_str()), Some(time.as_str()))
            }
            _ => (None, None),
        };
        // One journal per worker process (`ROLE-HOST-PID-N`): a batch job
        // element, or a local run.
        worker.clear();
        if let Some(stem) = progress.and_then(|p| p.journal().file_stem()) {
            worker.push_str(&stem.to_string_lossy());
        }
        let mut obs = Observation {
            task: quantum.task as usize,
            status: state_status(state),
            worker,
            host,
            start_ms: start_time.and_then(parse_rfc3339_ms),
            end_ms: None,
            wall_seconds: None,
            peak_rss_bytes: None,
            attempts: progress.map(|p| p.attempts).unwrap_or(0),
            error: None,
            log_tail: no_log,
        };
        if let Some(JournalRecord::Finished {
            started,
            finished,
            wall_seconds,
            peak_rss_bytes,
            error,
            log_tail,
            ..
        }) = &finished
        {
            if state != QuantumState::Running {
                obs.start_ms = parse_rfc3339_ms(started).or(obs.start_ms);
                obs.end_ms = parse_rfc3339_ms(finished);
                obs.wall_seconds = Some(*wall_seconds);
                obs.peak_rss_bytes = Some(*peak_rss_bytes);
                obs.error = error.as_deref();
                obs.log_tail = log_tail;
            }
        }
        if state == QuantumState::Blocked {
            obs.start_ms = None;
        }
        builder.add(&obs, || {
            (quantum.data_id.to_string(), quantum.id.to_string())
        });
    }
    Ok(())
}
