//! The Grid Engine engine (Son of Grid Engine 8.1, Debian's `gridengine`
//! packages): `quanta submit --engine gridengine`, `restart`, `cancel`
//! and the Grid Engine part of `quanta status`.
//!
//! Owns: the calls to `qsub`, `qstat` and `qdel`, the cluster lists, job
//! scripts and job logs written into `<bundle>.slurm/` (the work
//! directory's name is the engine-neutral one), and the holds between
//! arrays. The plan, the state file, the restart policy and the memory
//! supervisor are engine-neutral ([`crate::batch`]).
//!
//! # Jobs
//!
//! The plan's arrays become array jobs (`qsub -t 1-N`). Task i runs the
//! cluster on line i of the array's list (`quanta worker B --cluster C`,
//! with `--mem-limit` when the array asks for memory: the worker applies
//! it with the memory supervisor, [`crate::batch::run_supervised`], as
//! under Slurm). An array waits for the arrays of the levels its clusters
//! read from: element-wise (`-hold_jid_ad`) when there is exactly one
//! such array, of the same length, and task i reads only from task i;
//! otherwise for all of them (`-hold_jid`). A final job holding on every
//! array runs `quanta merge REPO B --incomplete`.
//!
//! Grid Engine releases a hold when the job it waits for ends, whatever
//! its exit status (it has no `afterok`): a downstream task whose
//! upstream failed runs, finds the upstream quanta unfinished in the
//! journals and journals its quanta as blocked, and `restart` submits
//! them again once their upstream is retried. The scripts map the worker's
//! exit codes 99 and 100 to 1: Grid Engine reads 99 as "run me again" and
//! 100 as "hold me, and everything waiting on me, in the error state".
//!
//! Resources: `partition` is the queue (`-q`), `time` is `h_rt`, `cpus`
//! are slots of the parallel environment `smp` (`-pe smp N`, which
//! `ci/gridengine/start.sh` creates), memory is a scheduling request
//! (`mem_free`) and the worker's limit, not `h_vmem`: Grid Engine would
//! apply `h_vmem` to the supervising worker's own address space as well.

mod qstat;

pub use qstat::GridEngineJob;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use quanta_core::CampaignProgress;

use super::error::{io, BatchError, Result};
use super::plan::{
    array_wait, cluster_resources, plan, view, ArrayWait, BundleView, ClusterDeps, PlannedArray,
};
use super::state::{fresh_state, load_state, record_submission, work_dir, write_atomic};
use super::status::{status_with, BatchStatus, JobView};
use super::tools::{absolute, run_tool, sh_quote};
use super::{
    ArrayJob, BatchEngine, Resources, RetryPolicy, SubmissionState, SubmitOptions, SubmitReport,
    SubmitRequest, Submitted,
};

const NAME: &str = "gridengine";

/// The parallel environment `cpus_per_task` asks slots of.
pub const PARALLEL_ENVIRONMENT: &str = "smp";

/// The Grid Engine engine ([`BatchEngine`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct GridEngine;

impl BatchEngine for GridEngine {
    fn name(&self) -> &'static str {
        NAME
    }

    /// `<job>.<task>` for an array task, as `qstat` shows it (Grid Engine
    /// sets `SGE_TASK_ID` to `undefined` outside arrays); the job id
    /// otherwise.
    fn job_from_environment(&self) -> Option<String> {
        let job = std::env::var("JOB_ID").ok()?;
        // JOB_ID alone is too common a name to trust: Grid Engine also
        // sets SGE_TASK_ID in every job it starts.
        let task = std::env::var("SGE_TASK_ID").ok()?;
        Some(match task.parse::<u64>() {
            Ok(task) => format!("{job}.{task}"),
            Err(_) => job,
        })
    }

    fn submit(
        &self,
        bundle: &Path,
        opts: &SubmitOptions,
        req: &SubmitRequest,
    ) -> Result<Submitted> {
        if req.dry_run {
            return Err(BatchError::Invalid(
                "--dry-run is for --engine htcondor; Grid Engine submissions are real".into(),
            ));
        }
        submit(bundle, opts).map(Submitted::Jobs)
    }

    fn status(
        &self,
        bundle: &Path,
        known: Option<(&Path, &CampaignProgress)>,
    ) -> Result<Option<BatchStatus>> {
        status_with(NAME, bundle, known, qstat_view)
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

/// Submits every cluster of the bundle.
pub fn submit(bundle: &Path, opts: &SubmitOptions) -> Result<SubmitReport> {
    let v = view(bundle)?;
    let mut state = fresh_state(NAME, bundle, v.header_id, opts)?;
    let all: Vec<usize> = (0..v.clusters.len()).collect();
    let mem = all
        .iter()
        .map(|&c| (c, cluster_resources(&v, c, opts).mem_mb))
        .collect();
    submit_clusters(&v, &mut state, &all, &mem, opts)
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

/// The end of every job script: Grid Engine gives exit codes 99 (requeue)
/// and 100 (error state, holding every job waiting on this one) meanings
/// no quanta command intends.
const EXIT_MAPPING: &str =
    "rc=$?\n# 99 would requeue the job and 100 hold it in the error state: neither is meant.\ncase $rc in 99|100) rc=1 ;; esac\nexit $rc\n";

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

    /// Writes array `k`'s cluster list (one name per line: task i runs
    /// line i) and script; returns (list, script).
    fn write_array(
        &self,
        k: usize,
        names: &[String],
        mem_mb: Option<u64>,
    ) -> Result<(PathBuf, PathBuf)> {
        let stem = format!("s{}-a{k}", self.number);
        let list_path = self.dir.join(format!("{stem}.clusters"));
        if let Some(bad) = names
            .iter()
            .find(|n| n.is_empty() || n.contains(['\n', '\0']))
        {
            return Err(BatchError::Invalid(format!(
                "cluster name {bad:?} cannot be a line of a Grid Engine cluster list"
            )));
        }
        let mut list = names.join("\n");
        list.push('\n');
        write_atomic(&list_path, list.as_bytes())?;
        let script_path = self.dir.join(format!("{stem}.sh"));
        let script = array_script(self, k, &absolute(&list_path)?, mem_mb);
        write_atomic(&script_path, script.as_bytes())?;
        Ok((list_path, script_path))
    }

    /// Writes the merge job's script; returns its path.
    fn write_merge(&self) -> Result<PathBuf> {
        let number = self.number;
        let script_path = self.dir.join(format!("s{number}-merge.sh"));
        let script = format!(
            "#!/bin/sh\n# quanta submission {number}: fold the journals into the registry, whatever succeeded.\n{} merge {} {} --journals {} --incomplete\n{EXIT_MAPPING}",
            self.exe, self.repo, self.bundle, self.journal,
        );
        write_atomic(&script_path, script.as_bytes())?;
        Ok(script_path)
    }
}

/// The script of array `k`: task `$SGE_TASK_ID` (1-based) runs the
/// cluster on that line of `list`.
fn array_script(s: &Scripts, k: usize, list: &Path, mem_mb: Option<u64>) -> String {
    let list = sh_quote(&list.to_string_lossy());
    let limit = mem_mb
        .map(|m| format!(" --mem-limit {}", m << 20))
        .unwrap_or_default();
    format!(
        "#!/bin/sh\n# quanta submission {number}, array {k}: task i runs the cluster on line i of the list.\n\
         cluster=$(sed -n \"${{SGE_TASK_ID}}{{p;q;}}\" {list})\n\
         if [ -z \"$cluster\" ]; then\n  echo \"quanta: no cluster on line ${{SGE_TASK_ID}} of \"{list} >&2\n  exit 2\nfi\n\
         {exe} worker {bundle} --cluster \"$cluster\" --journal {journal} --retries {retries}{limit}\n{EXIT_MAPPING}",
        number = s.number,
        exe = s.exe,
        bundle = s.bundle,
        journal = s.journal,
        retries = s.worker_retries,
    )
}

/// Seconds of a Slurm time string (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`,
/// `D-HH:MM`, `D-HH:MM:SS`), for `h_rt`.
pub fn time_seconds(t: &str) -> Result<u64, String> {
    let bad = || format!("time `{t}` is not MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS");
    let (days, rest) = match t.trim().split_once('-') {
        Some((d, r)) => (Some(d.parse::<u64>().map_err(|_| bad())?), r),
        None => (None, t.trim()),
    };
    let parts: Vec<u64> = rest
        .split(':')
        .map(|p| p.parse::<u64>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let secs = match (days, parts.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) | (Some(_), [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(_), [h]) => h * 3600,
        (Some(_), [h, m]) => h * 3600 + m * 60,
        _ => return Err(bad()),
    };
    let total = days.unwrap_or(0) * 86_400 + secs;
    if total == 0 {
        return Err(format!("time `{t}` is no time at all"));
    }
    Ok(total)
}

/// The `qsub` options of a resource request.
fn resource_args(r: &Resources) -> Result<Vec<String>> {
    let mut a = Vec::new();
    if let Some(q) = &r.partition {
        a.extend(["-q".to_string(), q.clone()]);
    }
    if let Some(m) = r.mem_mb {
        a.extend(["-l".to_string(), format!("mem_free={m}M")]);
    }
    if let Some(c) = r.cpus_per_task {
        a.extend([
            "-pe".to_string(),
            PARALLEL_ENVIRONMENT.to_string(),
            c.to_string(),
        ]);
    }
    if let Some(t) = &r.time {
        let secs = time_seconds(t).map_err(BatchError::Invalid)?;
        a.extend(["-l".to_string(), format!("h_rt={secs}")]);
    }
    Ok(a)
}

/// The options every job of a submission gets: a name, its log in the
/// work directory (stderr with stdout), `/bin/sh`, not rerun by Grid
/// Engine on a node failure (restart decides what runs again), the
/// submitter's environment (`-V`, what Slurm's `sbatch` passes by default:
/// `QUANTA_PYTHON` and `PYTHONPATH` for Python tasks, `PGUSER` and
/// `PGPASSFILE` for a registry on a server), and the job id alone on
/// stdout.
fn common_args(name: &str, log: &Path) -> Vec<String> {
    [
        "-terse",
        "-V",
        "-N",
        name,
        "-o",
        &log.to_string_lossy(),
        "-j",
        "y",
        "-S",
        "/bin/sh",
        "-r",
        "n",
    ]
    .map(String::from)
    .to_vec()
}

/// The `qsub` arguments of array `k` of submission `number` running
/// `n` clusters, before its hold and script.
fn array_args(
    s: &Scripts,
    k: usize,
    n: usize,
    resources: &Resources,
    opts: &SubmitOptions,
) -> Result<Vec<String>> {
    let log = s.dir.join("ge-$JOB_ID.$TASK_ID.out");
    let mut args = common_args(&format!("quanta-s{}-a{k}", s.number), &log);
    args.extend(["-t".to_string(), format!("1-{n}")]);
    if let Some(t) = opts.throttle {
        args.extend(["-tc".to_string(), t.to_string()]);
    }
    args.extend(resource_args(resources)?);
    Ok(args)
}

/// Submits the planned arrays in order, each holding on its upstream
/// arrays; on an error deletes the arrays already submitted.
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
            let hold = array_hold(&a.clusters, deps, &placed, &submitted);
            let names: Vec<String> = a
                .clusters
                .iter()
                .map(|c| v.clusters[*c].name.clone())
                .collect();
            let (list_path, script_path) = s.write_array(k, &names, a.resources.mem_mb)?;
            let mut args = array_args(s, k, names.len(), &a.resources, opts)?;
            if let Some(h) = &hold {
                args.extend(h.split(' ').map(String::from));
            }
            args.push(script_path.to_string_lossy().into_owned());
            let job_id = qsub(&args)?;
            for (i, c) in a.clusters.iter().enumerate() {
                placed.insert(*c, (k, i));
            }
            submitted.push(ArrayJob {
                job_id,
                level: a.level,
                clusters: names,
                resources: a.resources.clone(),
                map: list_path,
                dependency: hold,
            });
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(submitted),
        Err(e) => {
            // Leave nothing half-submitted behind.
            let ids: Vec<String> = submitted.iter().rev().map(|a| a.job_id.clone()).collect();
            let _ = qdel(&ids);
            Err(e)
        }
    }
}

/// The hold of an array running `clusters` (see [`array_wait`]):
/// `-hold_jid_ad` task by task, else `-hold_jid` on every upstream array.
fn array_hold(
    clusters: &[usize],
    deps: &ClusterDeps,
    placed: &HashMap<usize, (usize, usize)>,
    submitted: &[ArrayJob],
) -> Option<String> {
    Some(match array_wait(clusters, deps, placed, submitted)? {
        ArrayWait::Elementwise(id) => format!("-hold_jid_ad {id}"),
        ArrayWait::All(ids) => format!("-hold_jid {}", ids.join(",")),
    })
}

/// Submits the final job, holding on every array, that merges whatever
/// succeeded.
fn submit_merge(s: &Scripts, arrays: &[ArrayJob]) -> Result<Option<String>> {
    if arrays.is_empty() {
        return Ok(None);
    }
    let number = s.number;
    let script_path = s.write_merge()?;
    let ids: Vec<&str> = arrays.iter().map(|a| a.job_id.as_str()).collect();
    let log = s.dir.join(format!("s{number}-merge-$JOB_ID.out"));
    let mut args = common_args(&format!("quanta-s{number}-merge"), &log);
    args.extend(["-hold_jid".to_string(), ids.join(",")]);
    args.push(script_path.to_string_lossy().into_owned());
    qsub(&args).map(Some)
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
            let ids: Vec<String> = submitted.iter().rev().map(|a| a.job_id.clone()).collect();
            let _ = qdel(&ids);
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

/// The job id of `qsub -terse` output: `12` for a job, `12.1-4:1` for an
/// array.
pub fn parse_terse_job_id(out: &str) -> Option<String> {
    let first = out.lines().next()?.trim();
    let id = first.split('.').next()?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| id.to_string())
}

/// Runs `qsub -terse ...` and returns the job id.
fn qsub(args: &[String]) -> Result<String> {
    let out = run_tool("qsub", args)?;
    parse_terse_job_id(&out).ok_or_else(|| BatchError::BadJobId {
        command: format!("qsub {}", args.join(" ")),
        output: out,
    })
}

fn qdel(ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    run_tool("qdel", ids).map(|_| ())
}

/// The jobs of this submission Grid Engine still lists (queued, held,
/// running or in the error state); finished jobs are not listed.
pub fn submission_jobs(state: &SubmissionState) -> Result<Vec<GridEngineJob>> {
    let out = run_tool(
        "qstat",
        &["-xml".to_string(), "-u".to_string(), "*".to_string()],
    )?;
    let ours: BTreeSet<u64> = state
        .job_ids()
        .iter()
        .filter_map(|j| j.parse().ok())
        .collect();
    Ok(qstat::parse_qstat_xml(&out)
        .map_err(BatchError::Invalid)?
        .into_iter()
        .filter(|j| ours.contains(&j.job_id))
        .collect())
}

/// The submission's job ids, dependents first: deleting a job Grid Engine
/// releases the holds on it, so what waits must go before what it waits
/// for.
fn dependents_first(state: &SubmissionState) -> Vec<String> {
    let mut out = Vec::new();
    for s in state.submissions.iter().rev() {
        out.extend(s.merge_job.clone());
        out.extend(s.arrays.iter().rev().map(|a| a.job_id.clone()));
    }
    out
}

/// Deletes every job of the submission; returns the job ids still listed
/// before the delete.
pub fn cancel(bundle: &Path) -> Result<Vec<String>> {
    let state = load_state(bundle)?;
    state.check_engine(NAME)?;
    let listed: BTreeSet<String> = submission_jobs(&state)?
        .into_iter()
        .map(|j| j.job_id.to_string())
        .collect();
    let ids: Vec<String> = dependents_first(&state)
        .into_iter()
        .filter(|id| listed.contains(id))
        .collect();
    if let Err(e) = qdel(&ids) {
        // A job that ended between qstat and qdel makes qdel fail; only
        // what is still listed afterwards is a failure to cancel.
        if !submission_jobs(&state)?.is_empty() {
            return Err(e);
        }
    }
    Ok(ids)
}

/// Resubmits the clusters with quanta that have not succeeded, except those
/// whose remaining quanta are dead (deterministic failures and their
/// downstream). Clusters that ran out of memory get more.
pub fn restart(bundle: &Path, opts: &SubmitOptions, policy: RetryPolicy) -> Result<SubmitReport> {
    let mut state = load_state(bundle)?;
    state.check_engine(NAME)?;
    let merges: BTreeSet<&str> = state
        .submissions
        .iter()
        .filter_map(|s| s.merge_job.as_deref())
        .collect();
    let live: Vec<GridEngineJob> = submission_jobs(&state)?
        .into_iter()
        .filter(|j| !merges.contains(j.job_id.to_string().as_str()))
        .collect();
    if !live.is_empty() {
        return Err(BatchError::Invalid(format!(
            "{} job(s) of this submission are still queued or running (e.g. {} in state {}); wait or `quanta cancel --engine gridengine` first",
            live.len(),
            live[0].display_id(),
            live[0].state,
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

/// Each cluster's latest array task (`job.task`, 1-based) and its qstat
/// state; `None` once finished (qstat lists unfinished jobs only).
fn qstat_view(state: &SubmissionState) -> JobView {
    let (jobs, error) = match submission_jobs(state) {
        Ok(j) => (j, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let mut latest: HashMap<&str, (&ArrayJob, u32)> = HashMap::new();
    for s in &state.submissions {
        for a in &s.arrays {
            for (i, c) in a.clusters.iter().enumerate() {
                latest.insert(c.as_str(), (a, i as u32 + 1));
            }
        }
    }
    JobView {
        latest: latest
            .into_iter()
            .map(|(c, (a, task))| {
                let st = jobs
                    .iter()
                    .find(|j| j.is_task(&a.job_id, task))
                    .map(|j| j.state.clone());
                (c.to_string(), (format!("{}.{task}", a.job_id), st))
            })
            .collect(),
        live_jobs: jobs.len(),
        error,
    }
}

#[cfg(test)]
mod tests;
