//! The Slurm engine: `quanta submit --engine slurm`, `restart`, `cancel`,
//! and the Slurm part of `quanta status`, as an `array::ArrayScheduler` (the
//! submission, restart, cancel and status procedures are the array
//! driver's, module `batch::array`).
//!
//! Owns: the calls to `sbatch`, `squeue` and `scancel`, the array maps and
//! the job scripts' Slurm lines written into `<bundle>.slurm/`, the job
//! logs' names, and the dependency expressions between arrays. The plan,
//! the state file, the restart policy and the memory supervisor are
//! engine-neutral ([`crate::batch`]); they are re-exported here for the
//! callers that name them through `quanta_runtime::slurm`.
//!
//! # Jobs
//!
//! Each array element runs one cluster of the bundle (`quanta worker B
//! --slurm-map MAP`, which picks its cluster by `SLURM_ARRAY_TASK_ID`); a
//! cluster may mix tasks (cluster per exposure holds that exposure's isr,
//! characterize and summarize quanta) and the worker runs them in dependency
//! order. An array waits for its upstream arrays with `aftercorr` when the
//! driver's wait is element-wise (a per-detector chain split into per-task
//! clusters), otherwise with `afterok` on those arrays as a barrier.
//! Levels keep the job count at one `sbatch` per level and resource
//! request, at the price of waiting for a whole upstream level in the
//! barrier case. Every job carries `--kill-on-invalid-dep=yes`, so a
//! level whose upstream failed is removed instead of pending forever. The
//! final merge job waits with `afterany` on every array.
//!
//! # Memory and retries
//!
//! Slurm without a cgroup memory controller does not enforce `--mem`, so
//! the element's worker applies it ([`run_supervised`]) with the limit the
//! array map gives. `restart` resubmits what the engine-neutral restart
//! policy selects, after checking with `squeue` that no job of the
//! submission is still live.

mod squeue;

pub use squeue::{parse_task_ids, SlurmJob};

pub use super::error::BatchError as SlurmError;
pub use super::status::{BatchStatus, ClusterStatus};
pub use super::{
    load_state, parse_mem_mb, record_out_of_memory, run_supervised, state_path, task_batch_config,
    work_dir, ArrayJob, ChildEnd, ClusterState, Resources, RetryPolicy, Submission,
    SubmissionState, SubmitOptions, SubmitReport, TaskBatchConfig, STATE_VERSION,
};

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::array::{ArrayRequest, ArrayScheduler, ArrayWait, ElementScript, Scripts};
use super::error::{io, BatchError, Result};
use super::state::write_atomic;
use super::tools::{absolute, run_tool, sh_quote};

/// The Slurm engine ([`super::BatchEngine`], through the array driver).
#[derive(Debug, Clone, Copy, Default)]
pub struct Slurm;

impl ArrayScheduler for Slurm {
    type Job = SlurmJob;

    fn name(&self) -> &'static str {
        "slurm"
    }

    fn title(&self) -> &'static str {
        "Slurm"
    }

    /// `<array job>_<task>` for an array element (the id `squeue` shows
    /// and `scancel` takes; an element's own SLURM_JOB_ID is a different
    /// number), else the job id.
    fn job_from_environment(&self) -> Option<String> {
        let var = |name: &str| std::env::var(name).ok();
        match (var("SLURM_ARRAY_JOB_ID"), var("SLURM_ARRAY_TASK_ID")) {
            (Some(array), Some(task)) => Some(format!("{array}_{task}")),
            _ => var("SLURM_JOB_ID"),
        }
    }

    /// The array map (`<stem>.map.json`: the clusters and the memory
    /// limit); the worker reads it with `SLURM_ARRAY_TASK_ID`.
    fn write_elements(
        &self,
        s: &Scripts,
        stem: &str,
        names: &[String],
        mem_mb: Option<u64>,
    ) -> Result<ElementScript> {
        let map_path = s.dir.join(format!("{stem}.map.json"));
        let map = ArrayMap {
            clusters: names.to_vec(),
            mem_limit_bytes: mem_mb.map(|m| m << 20),
        };
        let map_text = serde_json::to_vec_pretty(&map).map_err(|e| BatchError::BadState {
            path: map_path.clone(),
            detail: e.to_string(),
        })?;
        write_atomic(&map_path, &map_text)?;
        let select = format!(
            "--slurm-map {}",
            sh_quote(&absolute(&map_path)?.to_string_lossy())
        );
        Ok(ElementScript {
            elements: map_path,
            comment: "element i runs cluster i of the map.",
            body: self.last_command(&s.worker_command(&select)),
        })
    }

    fn last_command(&self, command: &str) -> String {
        format!("exec {command}\n")
    }

    /// `aftercorr` element by element, else an `afterok` barrier on every
    /// upstream array.
    fn wait(&self, wait: ArrayWait<'_>) -> String {
        match wait {
            ArrayWait::Elementwise(id) => format!("aftercorr:{id}"),
            ArrayWait::All(ids) => format!("afterok:{}", ids.join(":")),
        }
    }

    fn submit_array(
        &self,
        s: &Scripts,
        a: &ArrayRequest<'_>,
        opts: &SubmitOptions,
    ) -> Result<String> {
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={}", a.name),
            format!(
                "--array=0-{}{}",
                a.len - 1,
                opts.throttle.map(|t| format!("%{t}")).unwrap_or_default()
            ),
            format!("--output={}", s.dir.join("slurm-%A_%a.out").display()),
            "--kill-on-invalid-dep=yes".to_string(),
        ];
        args.extend(resource_args(a.resources));
        if let Some(d) = a.dependency {
            args.push(format!("--dependency={d}"));
        }
        args.extend(opts.extra_sbatch_args.iter().cloned());
        args.push(a.script.to_string_lossy().into_owned());
        sbatch(&args)
    }

    fn submit_merge(
        &self,
        s: &Scripts,
        name: &str,
        script: &Path,
        arrays: &[&str],
    ) -> Result<String> {
        let args = vec![
            "--parsable".to_string(),
            format!("--job-name={name}"),
            format!(
                "--output={}",
                s.dir.join(format!("s{}-merge-%j.out", s.number)).display()
            ),
            format!("--dependency=afterany:{}", arrays.join(":")),
            "--kill-on-invalid-dep=yes".to_string(),
            script.to_string_lossy().into_owned(),
        ];
        sbatch(&args)
    }

    fn cancel_jobs(&self, ids: &[String]) -> Result<()> {
        run_tool("scancel", ids).map(|_| ())
    }

    /// Every job Slurm still knows (live or recently finished), from
    /// `squeue --json`; 22.05 ignores `-j` with `--json`, so the driver
    /// filters.
    fn list_jobs(&self) -> Result<Vec<SlurmJob>> {
        let out = run_tool("squeue", &["--json".to_string()])?;
        squeue::parse_squeue(&out).map_err(BatchError::Invalid)
    }

    /// `<array job>_<index>`: Slurm's array indices start at 0.
    fn element_id(&self, array_job: &str, index: usize) -> String {
        format!("{array_job}_{index}")
    }
}

/// The map an array element reads to find its cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrayMap {
    pub clusters: Vec<String>,
    pub mem_limit_bytes: Option<u64>,
}

fn resource_args(r: &Resources) -> Vec<String> {
    let mut a = Vec::new();
    if let Some(p) = &r.partition {
        a.push(format!("--partition={p}"));
    }
    if let Some(m) = r.mem_mb {
        a.push(format!("--mem={m}M"));
    }
    if let Some(c) = r.cpus_per_task {
        a.push(format!("--cpus-per-task={c}"));
    }
    if let Some(t) = &r.time {
        a.push(format!("--time={t}"));
    }
    a
}

/// Runs `sbatch --parsable ...` and returns the job id.
fn sbatch(args: &[String]) -> Result<String> {
    let out = run_tool("sbatch", args)?;
    // `--parsable` prints `jobid` or `jobid;cluster`.
    let id = out.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BatchError::BadJobId {
            command: format!("sbatch {}", args.join(" ")),
            output: out,
        });
    }
    Ok(id)
}

/// Reads an array map and returns element `index`: (cluster, memory limit).
pub fn array_element(map: &Path, index: usize) -> Result<(String, Option<u64>)> {
    let bytes = std::fs::read(map).map_err(io(map, "reading the array map"))?;
    let m: ArrayMap = serde_json::from_slice(&bytes).map_err(|e| BatchError::BadState {
        path: map.to_path_buf(),
        detail: e.to_string(),
    })?;
    let len = m.clusters.len();
    let name = m
        .clusters
        .into_iter()
        .nth(index)
        .ok_or(BatchError::NoSuchElement {
            path: map.to_path_buf(),
            index,
            len,
        })?;
    Ok((name, m.mem_limit_bytes))
}

#[cfg(test)]
mod tests;
