//! The Slurm engine: `quanta submit --engine slurm`, `restart`, `cancel`,
//! and the Slurm part of `quanta status`.
//!
//! Owns: the calls to `sbatch`, `squeue` and `scancel`, the array maps,
//! job scripts and job logs written into `<bundle>.slurm/`, and the
//! dependency expressions between arrays. The plan, the state file, the
//! restart policy and the memory supervisor are engine-neutral
//! ([`crate::batch`]); they are re-exported here for the callers that
//! name them through `quanta_runtime::slurm`.
//!
//! # Jobs
//!
//! Each array element runs one cluster of the bundle (`quanta worker B
//! --slurm-map MAP`, which picks its cluster by `SLURM_ARRAY_TASK_ID`); a
//! cluster may mix tasks (cluster per exposure holds that exposure's isr,
//! characterize and summarize quanta) and the worker runs them in dependency
//! order. The plan's levels become arrays, one per level and resource
//! request. An array depends on the arrays of the levels its clusters read
//! from: with `aftercorr` when there is exactly one such array, of the same
//! length, and element i reads only from element i (a per-detector chain
//! split into per-task clusters); otherwise with `afterok` on those arrays
//! as a barrier. Levels keep the job count at one `sbatch` per level and
//! resource request, at the price of waiting for a whole upstream level in
//! the barrier case. Every job carries `--kill-on-invalid-dep=yes`, so a
//! level whose upstream failed is removed instead of pending forever. A
//! final job (`afterany` on every array) runs `quanta merge REPO B
//! --incomplete`, so whatever succeeded is registered even when some
//! clusters failed; `restart` adds the rest later.
//!
//! # Memory and retries
//!
//! Slurm without a cgroup memory controller does not enforce `--mem`, so
//! the element's worker applies it ([`run_supervised`]). `restart`
//! resubmits what the engine-neutral restart policy selects, after
//! checking with `squeue` that no job of the submission is still live.

mod squeue;

pub use squeue::{parse_task_ids, SlurmJob};

pub use super::error::BatchError as SlurmError;
pub use super::status::{BatchStatus, ClusterStatus};
pub use super::{
    load_state, parse_mem_mb, record_out_of_memory, run_supervised, state_path, task_batch_config,
    work_dir, ArrayJob, ChildEnd, ClusterState, Resources, RetryPolicy, Submission,
    SubmissionState, SubmitOptions, SubmitReport, TaskBatchConfig, STATE_VERSION,
};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use quanta_core::CampaignProgress;
use serde::{Deserialize, Serialize};

use super::error::{io, BatchError, Result};
use super::plan::{
    array_wait, cluster_resources, plan, view, ArrayWait, BundleView, ClusterDeps, PlannedArray,
};
use super::state::{fresh_state, record_submission, write_atomic};
use super::status::{status_with, JobView};
use super::tools::{absolute, run_tool, sh_quote};
use super::{BatchEngine, SubmitRequest, Submitted};

/// The Slurm engine ([`BatchEngine`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Slurm;

impl BatchEngine for Slurm {
    fn name(&self) -> &'static str {
        "slurm"
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

    fn submit(
        &self,
        bundle: &Path,
        opts: &SubmitOptions,
        req: &SubmitRequest,
    ) -> Result<Submitted> {
        if req.dry_run {
            return Err(BatchError::Invalid(
                "--dry-run is for --engine htcondor; Slurm submissions are real".into(),
            ));
        }
        submit(bundle, opts).map(Submitted::Jobs)
    }

    fn status(
        &self,
        bundle: &Path,
        known: Option<(&Path, &CampaignProgress)>,
    ) -> Result<Option<BatchStatus>> {
        status_with("slurm", bundle, known, squeue_view)
    }

    fn cancel(&self, bundle: &Path) -> Result<Vec<String>> {
        cancel(bundle)
    }

    fn restart(
        &self,
        bundle: &Path,
        opts: &SubmitOptions,
        policy: RetryPolicy,
    ) -> Result<SubmitReport> {
        restart(bundle, opts, policy)
    }
}

/// The map an array element reads to find its cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrayMap {
    pub clusters: Vec<String>,
    pub mem_limit_bytes: Option<u64>,
}

/// Submits every cluster of the bundle.
pub fn submit(bundle: &Path, opts: &SubmitOptions) -> Result<SubmitReport> {
    let v = view(bundle)?;
    let mut state = fresh_state("slurm", bundle, v.header_id, opts)?;
    let all: Vec<usize> = (0..v.clusters.len()).collect();
    let mem = all
        .iter()
        .map(|&c| (c, cluster_resources(&v, c, opts).mem_mb))
        .collect();
    let mut report = submit_clusters(&v, &mut state, &all, &mem, opts)?;
    report.succeeded_clusters = 0;
    Ok(report)
}

/// What every job script of one submission needs.
struct Scripts {
    number: u32,
    dir: PathBuf,
    exe: String,
    bundle: String,
    journal: String,
    repo: String,
    worker_retries: u32,
}

impl Scripts {
    fn new(state: &SubmissionState, opts: &SubmitOptions) -> Result<Scripts> {
        let dir = work_dir(&state.bundle);
        std::fs::create_dir_all(&dir).map_err(io(&dir, "creating the submission directory"))?;
        let quoted = |p: &Path| absolute(p).map(|a| sh_quote(&a.to_string_lossy()));
        Ok(Scripts {
            number: state.submissions.len() as u32 + 1,
            dir,
            exe: sh_quote(&opts.quanta_exe.to_string_lossy()),
            bundle: quoted(&state.bundle)?,
            journal: quoted(&state.journal_dir)?,
            repo: quoted(&state.repo)?,
            worker_retries: opts.worker_retries,
        })
    }

    /// Writes array `k`'s map and script; returns (map, script).
    fn write_array(
        &self,
        k: usize,
        names: &[String],
        mem_mb: Option<u64>,
    ) -> Result<(PathBuf, PathBuf)> {
        let (number, dir) = (self.number, &self.dir);
        let stem = format!("s{number}-a{k}");
        let map_path = dir.join(format!("{stem}.map.json"));
        let map = ArrayMap {
            clusters: names.to_vec(),
            mem_limit_bytes: mem_mb.map(|m| m << 20),
        };
        let map_text = serde_json::to_vec_pretty(&map).map_err(|e| BatchError::BadState {
            path: map_path.clone(),
            detail: e.to_string(),
        })?;
        write_atomic(&map_path, &map_text)?;
        let script_path = dir.join(format!("{stem}.sh"));
        let script = format!(
            "#!/bin/sh\n# quanta submission {number}, array {k}: element i runs cluster i of the map.\nexec {} worker {} --slurm-map {} --journal {} --retries {}\n",
            self.exe,
            self.bundle,
            sh_quote(&absolute(&map_path)?.to_string_lossy()),
            self.journal,
            self.worker_retries,
        );
        write_atomic(&script_path, script.as_bytes())?;
        Ok((map_path, script_path))
    }

    /// Writes the merge job's script; returns its path.
    fn write_merge(&self) -> Result<PathBuf> {
        let number = self.number;
        let script_path = self.dir.join(format!("s{number}-merge.sh"));
        let script = format!(
            "#!/bin/sh\n# quanta submission {number}: fold the journals into the registry, whatever succeeded.\nexec {} merge {} {} --journals {} --incomplete\n",
            self.exe, self.repo, self.bundle, self.journal,
        );
        write_atomic(&script_path, script.as_bytes())?;
        Ok(script_path)
    }
}

/// Submits the planned arrays in order, each depending on its upstream
/// arrays; on an error cancels the arrays already submitted.
fn submit_arrays(
    v: &BundleView,
    s: &Scripts,
    arrays: &[PlannedArray],
    deps: &ClusterDeps,
    opts: &SubmitOptions,
) -> Result<Vec<ArrayJob>> {
    // Which submitted array (and element) each cluster went to.
    let mut placed: HashMap<usize, (usize, usize)> = HashMap::new();
    let mut submitted: Vec<ArrayJob> = Vec::new();
    let result = (|| -> Result<()> {
        for (k, a) in arrays.iter().enumerate() {
            let dependency = array_dependency(&a.clusters, deps, &placed, &submitted);
            let names: Vec<String> = a
                .clusters
                .iter()
                .map(|c| v.clusters[*c].name.clone())
                .collect();
            let (map_path, script_path) = s.write_array(k, &names, a.resources.mem_mb)?;
            let mut args = vec![
                "--parsable".to_string(),
                format!("--job-name=quanta-s{}-a{k}", s.number),
                format!(
                    "--array=0-{}{}",
                    names.len() - 1,
                    opts.throttle.map(|t| format!("%{t}")).unwrap_or_default()
                ),
                format!("--output={}", s.dir.join("slurm-%A_%a.out").display()),
                "--kill-on-invalid-dep=yes".to_string(),
            ];
            args.extend(resource_args(&a.resources));
            if let Some(d) = &dependency {
                args.push(format!("--dependency={d}"));
            }
            args.extend(opts.extra_sbatch_args.iter().cloned());
            args.push(script_path.to_string_lossy().into_owned());
            let job_id = sbatch(&args)?;
            for (i, c) in a.clusters.iter().enumerate() {
                placed.insert(*c, (k, i));
            }
            submitted.push(ArrayJob {
                job_id,
                level: a.level,
                clusters: names,
                resources: a.resources.clone(),
                map: map_path,
                dependency,
            });
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(submitted),
        Err(e) => {
            // Leave nothing half-submitted behind.
            cancel_arrays(&submitted);
            Err(e)
        }
    }
}

fn cancel_arrays(arrays: &[ArrayJob]) {
    let ids: Vec<String> = arrays.iter().map(|a| a.job_id.clone()).collect();
    let _ = scancel(&ids);
}

/// Submits the final `afterany` job that merges whatever succeeded.
fn submit_merge(s: &Scripts, arrays: &[ArrayJob]) -> Result<Option<String>> {
    if arrays.is_empty() {
        return Ok(None);
    }
    let number = s.number;
    let script_path = s.write_merge()?;
    let deps: Vec<&str> = arrays.iter().map(|a| a.job_id.as_str()).collect();
    let args = vec![
        "--parsable".to_string(),
        format!("--job-name=quanta-s{number}-merge"),
        format!(
            "--output={}",
            s.dir.join(format!("s{number}-merge-%j.out")).display()
        ),
        format!("--dependency=afterany:{}", deps.join(":")),
        "--kill-on-invalid-dep=yes".to_string(),
        script_path.to_string_lossy().into_owned(),
    ];
    sbatch(&args).map(Some)
}

/// Plans, submits the arrays and the merge job, and records them in the
/// state file.
fn submit_clusters(
    v: &BundleView,
    state: &mut SubmissionState,
    selected: &[usize],
    mem: &BTreeMap<usize, Option<u64>>,
    opts: &SubmitOptions,
) -> Result<SubmitReport> {
    let scripts = Scripts::new(state, opts)?;
    let (arrays, deps) = plan(v, selected, mem, opts)?;
    let submitted = submit_arrays(v, &scripts, &arrays, &deps, opts)?;
    let merge_job = match submit_merge(&scripts, &submitted) {
        Ok(m) => m,
        Err(e) => {
            cancel_arrays(&submitted);
            return Err(e);
        }
    };
    record_submission(state, &submitted, merge_job.clone())?;
    Ok(SubmitReport {
        submission: scripts.number,
        arrays: submitted,
        merge_job,
        succeeded_clusters: 0,
        dead_clusters: Vec::new(),
        memory_raised: Vec::new(),
    })
}

/// The `--dependency` of an array running `clusters` (see
/// [`array_wait`]): `aftercorr` element by element, else an `afterok`
/// barrier on every upstream array.
fn array_dependency(
    clusters: &[usize],
    deps: &ClusterDeps,
    placed: &HashMap<usize, (usize, usize)>,
    submitted: &[ArrayJob],
) -> Option<String> {
    Some(match array_wait(clusters, deps, placed, submitted)? {
        ArrayWait::Elementwise(id) => format!("aftercorr:{id}"),
        ArrayWait::All(ids) => format!("afterok:{}", ids.join(":")),
    })
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

fn scancel(ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    run_tool("scancel", ids).map(|_| ())
}

/// The jobs of this submission Slurm still knows (live or recently
/// finished), from `squeue --json` filtered here: 22.05 ignores `-j` with
/// `--json`.
pub fn submission_jobs(state: &SubmissionState) -> Result<Vec<SlurmJob>> {
    let out = run_tool("squeue", &["--json".to_string()])?;
    let ours: BTreeSet<u64> = state
        .job_ids()
        .iter()
        .filter_map(|j| j.parse().ok())
        .collect();
    Ok(squeue::parse_squeue(&out)
        .map_err(BatchError::Invalid)?
        .into_iter()
        .filter(|j| ours.contains(&j.array_job_id.unwrap_or(j.job_id)) || ours.contains(&j.job_id))
        .collect())
}

/// Cancels every job of the submission; returns the job ids still live
/// before the cancel.
pub fn cancel(bundle: &Path) -> Result<Vec<String>> {
    let state = load_state(bundle)?;
    state.check_engine("slurm")?;
    let live: BTreeSet<String> = submission_jobs(&state)?
        .into_iter()
        .filter(|j| j.is_live())
        .map(|j| j.array_job_id.unwrap_or(j.job_id).to_string())
        .collect();
    let ids: Vec<String> = live.into_iter().collect();
    scancel(&ids)?;
    Ok(ids)
}

/// Resubmits the clusters with quanta that have not succeeded, except those
/// whose remaining quanta are dead (deterministic failures and their
/// downstream). Clusters that ran out of memory get more.
pub fn restart(bundle: &Path, opts: &SubmitOptions, policy: RetryPolicy) -> Result<SubmitReport> {
    let mut state = load_state(bundle)?;
    state.check_engine("slurm")?;
    let live: Vec<SlurmJob> = submission_jobs(&state)?
        .into_iter()
        .filter(|j| j.is_live() && !j.is_merge_of(&state))
        .collect();
    if !live.is_empty() {
        return Err(BatchError::Invalid(format!(
            "{} job(s) of this submission are still queued or running (e.g. {}); wait or `quanta cancel` first",
            live.len(),
            live[0].display_id()
        )));
    }
    let v = view(bundle)?;
    super::retry::check_same_bundle(bundle, &v, &state)?;
    let p = super::retry::plan_restart(&v, &state, opts, policy)?;
    let mut report = if p.selected.is_empty() {
        SubmitReport {
            submission: state.submissions.len() as u32,
            arrays: Vec::new(),
            merge_job: None,
            succeeded_clusters: 0,
            dead_clusters: Vec::new(),
            memory_raised: Vec::new(),
        }
    } else {
        submit_clusters(&v, &mut state, &p.selected, &p.mem, opts)?
    };
    report.succeeded_clusters = p.succeeded;
    report.dead_clusters = p.dead_clusters;
    report.memory_raised = p.raised;
    Ok(report)
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

/// Each cluster's latest array element and its `squeue` state.
fn squeue_view(state: &SubmissionState) -> JobView {
    let (jobs, error) = match submission_jobs(state) {
        Ok(j) => (j, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    // The latest array each cluster was submitted in.
    let mut latest: HashMap<&str, (&ArrayJob, u32)> = HashMap::new();
    for s in &state.submissions {
        for a in &s.arrays {
            for (i, c) in a.clusters.iter().enumerate() {
                latest.insert(c.as_str(), (a, i as u32));
            }
        }
    }
    JobView {
        latest: latest
            .into_iter()
            .map(|(c, (a, i))| {
                let st = jobs
                    .iter()
                    .find(|j| j.is_element(&a.job_id, i))
                    .map(|j| j.state.clone());
                (c.to_string(), (format!("{}_{i}", a.job_id), st))
            })
            .collect(),
        live_jobs: jobs.iter().filter(|j| j.is_live()).count(),
        error,
    }
}

#[cfg(test)]
mod tests;
