//! The driver of every engine with job arrays (Slurm, Grid Engine):
//! submit, cancel, restart and status written once, over an
//! [`ArrayScheduler`] that supplies only what differs between schedulers.
//!
//! Owns: the submission procedure. The plan's arrays (one per dependency
//! level and resource request) are submitted in order, each waiting for
//! the arrays its clusters read from ([`ArrayWait`], element-wise when
//! element i reads only from element i of one array of the same length,
//! else on all of them); a final job waiting on every array runs `quanta
//! merge REPO B --incomplete`, so whatever succeeded is registered even
//! when some clusters failed. A failure part-way cancels what was already
//! submitted, dependents first. The state file records each submission
//! ([`record_submission`]). `cancel` cancels the submission's live jobs,
//! dependents first (deleting a job releases what waits on it under
//! Grid Engine); `restart` refuses while an array job is still live, then
//! submits what the engine-neutral restart policy selects. Also owns the
//! job scripts' common shape ([`Scripts`]): one per array, one for the
//! merge job, in the work directory `<bundle>.slurm/`, named
//! `s<submission>-a<array>.sh` and `s<submission>-merge.sh`.
//!
//! Must not: know a scheduler's commands, options, dependency notation,
//! environment variables or output formats: those are the
//! [`ArrayScheduler`]'s (`slurm/`, `gridengine/`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use quanta_core::CampaignProgress;

use super::error::{io, BatchError, Result};
use super::plan::{cluster_resources, plan, view, BundleView, ClusterDeps};
use super::state::{fresh_state, load_state, record_submission, work_dir, write_atomic};
use super::status::{status_with, JobView};
use super::tools::{absolute, sh_quote};
use super::{
    ArrayJob, BatchEngine, BatchStatus, Resources, RetryPolicy, SubmissionState, SubmitOptions,
    SubmitReport, SubmitRequest, Submitted,
};

/// A batch scheduler with job arrays: only its own parts. Every such
/// scheduler is a [`BatchEngine`] through this module's driver.
pub(crate) trait ArrayScheduler {
    /// What the scheduler lists of a submission's jobs.
    type Job: ListedJob;

    /// The name `--engine` takes and the state file records.
    fn name(&self) -> &'static str;
    /// The scheduler as people write it (`Slurm`), for messages.
    fn title(&self) -> &'static str;
    /// See [`BatchEngine::job_from_environment`].
    fn job_from_environment(&self) -> Option<String>;

    /// Writes what the elements of array `stem` read to find their
    /// cluster (element i runs `names[i]`, under `mem_mb` when set);
    /// returns it with the script lines that pick the element's cluster
    /// and run the worker (end them with [`Self::last_command`]).
    fn write_elements(
        &self,
        s: &Scripts,
        stem: &str,
        names: &[String],
        mem_mb: Option<u64>,
    ) -> Result<ElementScript>;
    /// The end of a job script that runs `command`: the job's exit status
    /// must be the command's, in the scheduler's meaning.
    fn last_command(&self, command: &str) -> String;

    /// The wait on upstream arrays in the scheduler's notation, as the
    /// state file records it (`ArrayJob::dependency`).
    fn wait(&self, wait: ArrayWait<'_>) -> String;
    /// Submits one array; returns its job id.
    fn submit_array(
        &self,
        s: &Scripts,
        a: &ArrayRequest<'_>,
        opts: &SubmitOptions,
    ) -> Result<String>;
    /// Submits the merge job `script`, waiting on every array of
    /// `arrays` however they end; returns its job id.
    fn submit_merge(
        &self,
        s: &Scripts,
        name: &str,
        script: &Path,
        arrays: &[&str],
    ) -> Result<String>;
    /// Cancels these jobs (dependents first).
    fn cancel_jobs(&self, ids: &[String]) -> Result<()>;
    /// Every job the scheduler lists (the driver keeps the submission's).
    fn list_jobs(&self) -> Result<Vec<Self::Job>>;
    /// Element `index` (0-based) of array job `array_job`, in the
    /// scheduler's notation.
    fn element_id(&self, array_job: &str, index: usize) -> String;
}

/// One row of a scheduler's job listing.
pub(crate) trait ListedJob {
    /// The job id the submission recorded: an array element's array job.
    fn submitted_id(&self) -> String;
    /// Queued, held, running or finishing.
    fn is_live(&self) -> bool;
    /// Whether this row is (or includes) element `index` (0-based) of
    /// array job `array_job`.
    fn is_element(&self, array_job: &str, index: usize) -> bool;
    /// The row as the scheduler writes it.
    fn display_id(&self) -> String;
    /// The scheduler's state of the row.
    fn state(&self) -> &str;
}

/// What an array's script reads and runs.
pub(crate) struct ElementScript {
    /// What an element reads to find its cluster (`ArrayJob::map`).
    pub(crate) elements: PathBuf,
    /// The script's comment: how an element finds its cluster.
    pub(crate) comment: &'static str,
    /// The script's lines after the comment.
    pub(crate) body: String,
}

/// One array to submit.
pub(crate) struct ArrayRequest<'a> {
    /// The job name.
    pub(crate) name: String,
    /// How many elements.
    pub(crate) len: usize,
    pub(crate) resources: &'a Resources,
    /// [`ArrayScheduler::wait`] of its upstream arrays.
    pub(crate) dependency: Option<&'a str>,
    pub(crate) script: &'a Path,
}

impl<S: ArrayScheduler> BatchEngine for S {
    fn name(&self) -> &'static str {
        ArrayScheduler::name(self)
    }

    fn job_from_environment(&self) -> Option<String> {
        ArrayScheduler::job_from_environment(self)
    }

    fn submit(
        &self,
        bundle: &Path,
        opts: &SubmitOptions,
        req: &SubmitRequest,
    ) -> Result<Submitted> {
        if req.dry_run {
            return Err(BatchError::Invalid(format!(
                "--dry-run is for --engine htcondor; {} submissions are real",
                self.title()
            )));
        }
        submit(self, bundle, opts).map(Submitted::Jobs)
    }

    fn status(
        &self,
        bundle: &Path,
        known: Option<(&Path, &CampaignProgress)>,
    ) -> Result<Option<BatchStatus>> {
        status_with(ArrayScheduler::name(self), bundle, known, |state| {
            job_view(self, state)
        })
    }

    fn cancel(&self, bundle: &Path) -> Result<Vec<String>> {
        cancel(self, bundle)
    }

    fn restart(
        &self,
        bundle: &Path,
        opts: &SubmitOptions,
        policy: RetryPolicy,
    ) -> Result<SubmitReport> {
        restart(self, bundle, opts, policy)
    }
}

/// What every job script of one submission needs, quoted for the shell.
pub(crate) struct Scripts {
    /// The submission's number (1 for `submit`, then one more per
    /// `restart`).
    pub(crate) number: u32,
    /// The work directory.
    pub(crate) dir: PathBuf,
    pub(crate) exe: String,
    pub(crate) bundle: String,
    pub(crate) journal: String,
    pub(crate) repo: String,
    pub(crate) worker_retries: u32,
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

    /// `quanta worker` on the bundle with `select` (how it finds its
    /// cluster), the journals and the worker's retries.
    pub(crate) fn worker_command(&self, select: &str) -> String {
        format!(
            "{} worker {} {select} --journal {} --retries {}",
            self.exe, self.bundle, self.journal, self.worker_retries
        )
    }

    /// Writes array `k`'s element file and script; returns (element
    /// file, script).
    pub(crate) fn write_array(
        &self,
        engine: &impl ArrayScheduler,
        k: usize,
        names: &[String],
        mem_mb: Option<u64>,
    ) -> Result<(PathBuf, PathBuf)> {
        let stem = format!("s{}-a{k}", self.number);
        let e = engine.write_elements(self, &stem, names, mem_mb)?;
        let script_path = self.dir.join(format!("{stem}.sh"));
        let script = format!(
            "#!/bin/sh\n# quanta submission {}, array {k}: {}\n{}",
            self.number, e.comment, e.body
        );
        write_atomic(&script_path, script.as_bytes())?;
        Ok((e.elements, script_path))
    }

    /// Writes the merge job's script; returns its path.
    pub(crate) fn write_merge(&self, engine: &impl ArrayScheduler) -> Result<PathBuf> {
        let number = self.number;
        let script_path = self.dir.join(format!("s{number}-merge.sh"));
        let merge = format!(
            "{} merge {} {} --journals {} --incomplete",
            self.exe, self.repo, self.bundle, self.journal
        );
        let script = format!(
            "#!/bin/sh\n# quanta submission {number}: fold the journals into the registry, whatever succeeded.\n{}",
            engine.last_command(&merge)
        );
        write_atomic(&script_path, script.as_bytes())?;
        Ok(script_path)
    }
}

/// Submits every cluster of the bundle.
fn submit(
    engine: &impl ArrayScheduler,
    bundle: &Path,
    opts: &SubmitOptions,
) -> Result<SubmitReport> {
    let v = view(bundle)?;
    let mut state = fresh_state(engine.name(), bundle, v.header_id, opts)?;
    let all: Vec<usize> = (0..v.clusters.len()).collect();
    let mem = all
        .iter()
        .map(|&c| (c, cluster_resources(&v, c, opts).mem_mb))
        .collect();
    submit_clusters(engine, &v, &mut state, &all, &mem, opts)
}

/// Plans, submits the arrays and the merge job, and records them in the
/// state file; on an error cancels what it submitted.
fn submit_clusters(
    engine: &impl ArrayScheduler,
    v: &BundleView,
    state: &mut SubmissionState,
    selected: &[usize],
    mem: &BTreeMap<usize, Option<u64>>,
    opts: &SubmitOptions,
) -> Result<SubmitReport> {
    let scripts = Scripts::new(state, opts)?;
    let mut submitted: Vec<ArrayJob> = Vec::new();
    let merge_job = match submit_jobs(engine, v, &scripts, selected, mem, opts, &mut submitted) {
        Ok(m) => m,
        Err(e) => {
            // Leave nothing half-submitted behind.
            let ids: Vec<String> = submitted.iter().rev().map(|a| a.job_id.clone()).collect();
            if !ids.is_empty() {
                let _ = engine.cancel_jobs(&ids);
            }
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

/// Submits the planned arrays in order, each waiting on its upstream
/// arrays, into `submitted`, then the merge job (none when no array).
fn submit_jobs(
    engine: &impl ArrayScheduler,
    v: &BundleView,
    s: &Scripts,
    selected: &[usize],
    mem: &BTreeMap<usize, Option<u64>>,
    opts: &SubmitOptions,
    submitted: &mut Vec<ArrayJob>,
) -> Result<Option<String>> {
    let (arrays, deps) = plan(v, selected, mem, opts)?;
    // Which submitted array (and element) each cluster went to.
    let mut placed: HashMap<usize, (usize, usize)> = HashMap::new();
    for (k, a) in arrays.iter().enumerate() {
        let dependency = array_wait(&a.clusters, &deps, &placed, submitted).map(|w| engine.wait(w));
        let names: Vec<String> = a
            .clusters
            .iter()
            .map(|c| v.clusters[*c].name.clone())
            .collect();
        let (elements, script) = s.write_array(engine, k, &names, a.resources.mem_mb)?;
        let request = ArrayRequest {
            name: format!("quanta-s{}-a{k}", s.number),
            len: names.len(),
            resources: &a.resources,
            dependency: dependency.as_deref(),
            script: &script,
        };
        let job_id = engine.submit_array(s, &request, opts)?;
        for (i, c) in a.clusters.iter().enumerate() {
            placed.insert(*c, (k, i));
        }
        submitted.push(ArrayJob {
            job_id,
            level: a.level,
            clusters: names,
            resources: a.resources.clone(),
            map: elements,
            dependency,
        });
    }
    if submitted.is_empty() {
        return Ok(None);
    }
    let script = s.write_merge(engine)?;
    let ids: Vec<&str> = submitted.iter().map(|a| a.job_id.as_str()).collect();
    let name = format!("quanta-s{}-merge", s.number);
    engine.submit_merge(s, &name, &script, &ids).map(Some)
}

/// The submission's job ids, dependents first: what waits goes before
/// what it waits for.
fn dependents_first(state: &SubmissionState) -> Vec<String> {
    let mut out = Vec::new();
    for s in state.submissions.iter().rev() {
        out.extend(s.merge_job.clone());
        out.extend(s.arrays.iter().rev().map(|a| a.job_id.clone()));
    }
    out
}

/// The submission's jobs the scheduler lists (Slurm lists recently
/// finished jobs too; Grid Engine unfinished ones only).
fn submission_jobs<S: ArrayScheduler>(engine: &S, state: &SubmissionState) -> Result<Vec<S::Job>> {
    let ours: BTreeSet<String> = state.job_ids().into_iter().collect();
    Ok(engine
        .list_jobs()?
        .into_iter()
        .filter(|j| ours.contains(&j.submitted_id()))
        .collect())
}

/// The submission's jobs the scheduler lists as live.
fn live_jobs<S: ArrayScheduler>(engine: &S, state: &SubmissionState) -> Result<Vec<S::Job>> {
    Ok(submission_jobs(engine, state)?
        .into_iter()
        .filter(|j| j.is_live())
        .collect())
}

/// Cancels every live job of the submission, dependents first; returns
/// the job ids live before the cancel.
fn cancel(engine: &impl ArrayScheduler, bundle: &Path) -> Result<Vec<String>> {
    let state = load_state(bundle)?;
    state.check_engine(engine.name())?;
    let live: BTreeSet<String> = live_jobs(engine, &state)?
        .iter()
        .map(|j| j.submitted_id())
        .collect();
    let ids: Vec<String> = dependents_first(&state)
        .into_iter()
        .filter(|id| live.contains(id))
        .collect();
    if ids.is_empty() {
        return Ok(ids);
    }
    if let Err(e) = engine.cancel_jobs(&ids) {
        // A job that ended between the listing and the cancel makes the
        // cancel fail; only what is still live afterwards is a failure.
        if !live_jobs(engine, &state)?.is_empty() {
            return Err(e);
        }
    }
    Ok(ids)
}

/// Resubmits the clusters with quanta that have not succeeded, except those
/// whose remaining quanta are dead (deterministic failures and their
/// downstream). Clusters that ran out of memory get more. Refused while
/// a job of the submission other than a merge job is live.
fn restart(
    engine: &impl ArrayScheduler,
    bundle: &Path,
    opts: &SubmitOptions,
    policy: RetryPolicy,
) -> Result<SubmitReport> {
    let mut state = load_state(bundle)?;
    state.check_engine(engine.name())?;
    let merges: BTreeSet<&str> = state
        .submissions
        .iter()
        .filter_map(|s| s.merge_job.as_deref())
        .collect();
    let live: Vec<_> = live_jobs(engine, &state)?
        .into_iter()
        .filter(|j| !merges.contains(j.submitted_id().as_str()))
        .collect();
    if let Some(first) = live.first() {
        return Err(BatchError::Invalid(format!(
            "{} job(s) of this submission are still queued or running (e.g. {} in state {}); wait or `quanta cancel --engine {}` first",
            live.len(),
            first.display_id(),
            first.state(),
            engine.name(),
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
        submit_clusters(engine, &v, &mut state, &p.selected, &p.mem, opts)?
    };
    report.succeeded_clusters = p.succeeded;
    report.dead_clusters = p.dead_clusters;
    report.memory_raised = p.raised;
    Ok(report)
}

/// Each cluster's latest array element and the scheduler's state of it
/// (`None` once the scheduler no longer lists it).
fn job_view(engine: &impl ArrayScheduler, state: &SubmissionState) -> JobView {
    let (jobs, error) = match submission_jobs(engine, state) {
        Ok(j) => (j, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    // The latest array each cluster was submitted in.
    let mut latest: HashMap<&str, (&ArrayJob, usize)> = HashMap::new();
    for s in &state.submissions {
        for a in &s.arrays {
            for (i, c) in a.clusters.iter().enumerate() {
                latest.insert(c.as_str(), (a, i));
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
                    .map(|j| j.state().to_string());
                (c.to_string(), (engine.element_id(&a.job_id, i), st))
            })
            .collect(),
        live_jobs: jobs.iter().filter(|j| j.is_live()).count(),
        error,
    }
}

/// What an array running `clusters` waits for, given where their upstream
/// clusters were `placed` (array, element) among the `submitted` arrays;
/// each engine writes it in its own notation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ArrayWait<'a> {
    /// Element i waits for element i of this one array (of the same
    /// length): each element reads only from its counterpart.
    Elementwise(&'a str),
    /// Every element waits for all of these arrays.
    All(Vec<&'a str>),
}

/// The wait of an array running `clusters` (see [`ArrayWait`]); `None`
/// when nothing upstream of them was submitted.
fn array_wait<'a>(
    clusters: &[usize],
    deps: &ClusterDeps,
    placed: &HashMap<usize, (usize, usize)>,
    submitted: &'a [ArrayJob],
) -> Option<ArrayWait<'a>> {
    let upstream: BTreeSet<usize> = clusters
        .iter()
        .flat_map(|c| deps.get(c).into_iter().flatten())
        .filter_map(|d| placed.get(d).map(|(ai, _)| *ai))
        .collect();
    let first = *upstream.iter().next()?;
    let elementwise = upstream.len() == 1
        && submitted[first].clusters.len() == clusters.len()
        && clusters.iter().enumerate().all(|(i, c)| {
            deps.get(c)
                .into_iter()
                .flatten()
                .all(|d| placed.get(d) == Some(&(first, i)))
        });
    Some(if elementwise {
        ArrayWait::Elementwise(&submitted[first].job_id)
    } else {
        ArrayWait::All(
            upstream
                .iter()
                .map(|u| submitted[*u].job_id.as_str())
                .collect(),
        )
    })
}

#[cfg(test)]
pub(crate) mod tests;
