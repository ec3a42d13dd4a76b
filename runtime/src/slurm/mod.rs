//! Running a bundle on Slurm: `quanta submit --engine slurm`, `restart`,
//! `cancel`, and the Slurm part of `quanta status`.
//!
//! Owns: the submission plan (clusters → job arrays → dependencies), the
//! files written next to the bundle (`<bundle>.slurm.json`, the submission
//! state, and `<bundle>.slurm/`, array maps, job scripts and job logs), the
//! calls to `sbatch`, `squeue`, `scontrol` and `scancel`, the retry policy
//! of restarts, and the memory-limit supervisor of a worker.
//!
//! The HTCondor backend ([`htcondor`]) reuses the plan's cluster
//! dependencies and resource requests to write DAGMan files only.
//!
//! Must not: run quanta itself (elements run `quanta worker`), interpret
//! journals beyond [`quanta_core::fold_journals`], or touch the SQL Registry
//! (the final job runs `quanta merge`).
//!
//! # Plan
//!
//! Each array element runs one cluster of the bundle (`quanta worker B
//! --slurm-map MAP`, which picks its cluster by `SLURM_ARRAY_TASK_ID`); a
//! cluster may mix tasks (cluster per exposure holds that exposure's isr,
//! characterize and summarize quanta) and the worker runs them in dependency
//! order. Clusters that depend on other clusters are sorted into dependency
//! *levels* (a cluster's level is one more than the highest level of the
//! clusters it reads from), and each level becomes one array per resource
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
//! the element's worker applies it: the worker re-runs itself as a child
//! with `RLIMIT_AS` set and, if the child dies by a signal (an allocation
//! that fails under the limit aborts the process), records `OutOfMemory`
//! for the quanta it had started and not finished ([`run_supervised`]).
//! `restart` resubmits every cluster with a quantum that has not succeeded,
//! multiplying the memory of clusters that ran out of it (capped), and
//! leaves out quanta that failed deterministically, and everything
//! downstream of them: an exit code listed in the task's
//! `batch.deterministic_exit_codes`, or a Rust task error of the kinds that
//! do not change on a rerun (invalid config, invalid input).

pub mod htcondor;
mod squeue;

pub use squeue::{parse_task_ids, SlurmJob};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use quanta_core::{fold_journals, journal_dir_for, Bundle, QuantumState};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// State file format version.
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Error)]
pub enum SlurmError {
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("bundle {path}: {detail}")]
    Bundle { path: PathBuf, detail: String },
    #[error("journals of {path}: {detail}")]
    Journal { path: PathBuf, detail: String },
    #[error("{path}: not a valid submission state: {detail}")]
    BadState { path: PathBuf, detail: String },
    #[error(
        "no Slurm submission for {bundle}: {state} does not exist (run `quanta submit` first)"
    )]
    NotSubmitted { bundle: PathBuf, state: PathBuf },
    #[error("running `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` printed {output:?}, not a job id")]
    BadJobId { command: String, output: String },
    #[error("task `{task}`: batch.{key}: {detail}")]
    BadResource {
        task: String,
        key: &'static str,
        detail: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("the clusters of the bundle depend on each other in a cycle (through cluster `{0}`)")]
    ClusterCycle(String),
    #[error("array map {path}: no element {index} (the map has {len})")]
    NoSuchElement {
        path: PathBuf,
        index: usize,
        len: usize,
    },
}

type Result<T, E = SlurmError> = std::result::Result<T, E>;

/// Per selected cluster, the selected clusters it reads from.
pub(crate) type ClusterDeps = BTreeMap<usize, BTreeSet<usize>>;

/// Resource requests of a job; `None` leaves Slurm's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Resources {
    pub partition: Option<String>,
    /// Megabytes (`--mem`), also the worker's memory limit.
    pub mem_mb: Option<u64>,
    pub cpus_per_task: Option<u32>,
    /// Slurm's time format (`MM`, `HH:MM:SS`, `D-HH`).
    pub time: Option<String>,
}

impl Resources {
    /// `self` where set, else `fallback`.
    fn or(&self, fallback: &Resources) -> Resources {
        Resources {
            partition: self
                .partition
                .clone()
                .or_else(|| fallback.partition.clone()),
            mem_mb: self.mem_mb.or(fallback.mem_mb),
            cpus_per_task: self.cpus_per_task.or(fallback.cpus_per_task),
            time: self.time.clone().or_else(|| fallback.time.clone()),
        }
    }

    /// The larger request of the two (a cluster of several tasks needs
    /// what its hungriest task needs).
    fn larger(&self, other: &Resources) -> Resources {
        Resources {
            partition: self.partition.clone().or_else(|| other.partition.clone()),
            mem_mb: self.mem_mb.max(other.mem_mb),
            cpus_per_task: self.cpus_per_task.max(other.cpus_per_task),
            time: match (&self.time, &other.time) {
                (Some(a), Some(b)) => Some(if time_minutes(a) >= time_minutes(b) {
                    a.clone()
                } else {
                    b.clone()
                }),
                (a, b) => a.clone().or_else(|| b.clone()),
            },
        }
    }
}

/// Minutes of a Slurm time string, for comparing; unknown forms count 0.
fn time_minutes(t: &str) -> f64 {
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (d.parse::<f64>().unwrap_or(0.0), r),
        None => (0.0, t),
    };
    let parts: Vec<f64> = rest.split(':').map(|p| p.parse().unwrap_or(0.0)).collect();
    let dayed = t.contains('-');
    let m = match (dayed, parts.as_slice()) {
        (false, [m]) => *m,
        (false, [m, s]) => m + s / 60.0,
        (_, [h, m, s]) => h * 60.0 + m + s / 60.0,
        (true, [h]) => h * 60.0,
        (true, [h, m]) => h * 60.0 + m,
        _ => 0.0,
    };
    days * 1440.0 + m
}

/// What a task's config says about batch execution: its `batch` object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskBatchConfig {
    pub resources: Resources,
    pub deterministic_exit_codes: Vec<i32>,
}

/// Reads `config.batch` of a task (absent: defaults). Keys: `partition`,
/// `mem` (`512M`, `2G` or megabytes), `cpus_per_task`, `time`,
/// `deterministic_exit_codes`.
pub fn task_batch_config(task: &str, config: &serde_json::Value) -> Result<TaskBatchConfig> {
    let Some(batch) = config.get("batch") else {
        return Ok(TaskBatchConfig::default());
    };
    let bad = |key: &'static str, detail: String| SlurmError::BadResource {
        task: task.to_string(),
        key,
        detail,
    };
    let obj = batch
        .as_object()
        .ok_or_else(|| bad("batch", format!("expected an object, got {batch}")))?;
    let mut out = TaskBatchConfig::default();
    for (k, v) in obj {
        match k.as_str() {
            "partition" => {
                out.resources.partition = Some(
                    v.as_str()
                        .ok_or_else(|| bad("partition", format!("expected a name, got {v}")))?
                        .to_string(),
                )
            }
            "mem" => {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    other => return Err(bad("mem", format!("expected e.g. \"512M\", got {other}"))),
                };
                out.resources.mem_mb = Some(parse_mem_mb(&text).map_err(|e| bad("mem", e))?);
            }
            "cpus_per_task" => {
                out.resources.cpus_per_task = Some(
                    v.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad("cpus_per_task", format!("expected a count, got {v}")))?,
                )
            }
            "time" => {
                out.resources.time = Some(
                    v.as_str()
                        .ok_or_else(|| bad("time", format!("expected e.g. \"10:00\", got {v}")))?
                        .to_string(),
                )
            }
            "deterministic_exit_codes" => {
                out.deterministic_exit_codes = v
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|c| c.as_i64().and_then(|c| i32::try_from(c).ok()))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or_else(|| {
                        bad("deterministic_exit_codes", format!("expected exit codes, got {v}"))
                    })?
            }
            other => {
                return Err(SlurmError::BadResource {
                    task: task.to_string(),
                    key: "batch",
                    detail: format!(
                        "unknown key `{other}` (known: partition, mem, cpus_per_task, time, deterministic_exit_codes)"
                    ),
                })
            }
        }
    }
    Ok(out)
}

/// Megabytes of `512M`, `2G`, `1T`, `100K` or a plain number of megabytes.
pub fn parse_mem_mb(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: f64 = match c.to_ascii_uppercase() {
                'K' => 1.0 / 1024.0,
                'M' => 1.0,
                'G' => 1024.0,
                'T' => 1024.0 * 1024.0,
                _ => return Err(format!("`{text}`: unknown unit `{c}` (K, M, G or T)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1.0),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a memory size like 512M or 2G"))?;
    let mb = (n * mult).ceil();
    if !(1.0..1e12).contains(&mb) {
        return Err(format!("`{text}` is not a usable memory size"));
    }
    Ok(mb as u64)
}

/// The submission state, `<bundle>.slurm.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmissionState {
    pub version: u32,
    pub bundle: PathBuf,
    pub bundle_id: quanta_core::Uuid,
    pub repo: PathBuf,
    pub journal_dir: PathBuf,
    /// Per cluster: memory granted on its latest submission and how many
    /// times it was submitted.
    pub clusters: BTreeMap<String, ClusterState>,
    /// One per `submit` or `restart`, oldest first.
    pub submissions: Vec<Submission>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub mem_mb: Option<u64>,
    pub submitted: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub number: u32,
    pub time: String,
    pub arrays: Vec<ArrayJob>,
    pub merge_job: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrayJob {
    pub job_id: String,
    pub level: usize,
    /// Element i runs `clusters[i]`.
    pub clusters: Vec<String>,
    pub resources: Resources,
    pub map: PathBuf,
    /// As given to `sbatch --dependency`.
    pub dependency: Option<String>,
}

impl SubmissionState {
    /// Every job id this submission created (arrays and merge jobs).
    pub fn job_ids(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.submissions {
            out.extend(s.arrays.iter().map(|a| a.job_id.clone()));
            out.extend(s.merge_job.clone());
        }
        out
    }

    /// The cluster an array element ran: (array job id, task id) → name.
    pub fn element_cluster(&self, array_job: &str, task: u32) -> Option<&str> {
        self.submissions
            .iter()
            .flat_map(|s| &s.arrays)
            .find(|a| a.job_id == array_job)
            .and_then(|a| a.clusters.get(task as usize))
            .map(String::as_str)
    }
}

/// The map an array element reads to find its cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrayMap {
    pub clusters: Vec<String>,
    pub mem_limit_bytes: Option<u64>,
}

/// `<bundle>.slurm.json`.
pub fn state_path(bundle: &Path) -> PathBuf {
    let mut s = bundle.as_os_str().to_owned();
    s.push(".slurm.json");
    PathBuf::from(s)
}

/// `<bundle>.slurm/`: maps, scripts, job logs.
pub fn work_dir(bundle: &Path) -> PathBuf {
    let mut s = bundle.as_os_str().to_owned();
    s.push(".slurm");
    PathBuf::from(s)
}

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> SlurmError {
    let path = path.to_path_buf();
    move |source| SlurmError::Io { path, what, source }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// reader sees the old or the new content, never a half.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(io(&tmp, "writing"))?;
    std::fs::rename(&tmp, path).map_err(io(path, "renaming into place"))
}

pub fn load_state(bundle: &Path) -> Result<SubmissionState> {
    let path = state_path(bundle);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SlurmError::NotSubmitted {
                bundle: bundle.to_path_buf(),
                state: path,
            })
        }
        Err(e) => return Err(io(&path, "reading")(e)),
    };
    let state: SubmissionState =
        serde_json::from_slice(&bytes).map_err(|e| SlurmError::BadState {
            path: path.clone(),
            detail: e.to_string(),
        })?;
    if state.version != STATE_VERSION {
        return Err(SlurmError::BadState {
            path,
            detail: format!(
                "format version {} (this quanta writes {STATE_VERSION})",
                state.version
            ),
        });
    }
    Ok(state)
}

fn save_state(state: &SubmissionState) -> Result<()> {
    let path = state_path(&state.bundle);
    let text = serde_json::to_vec_pretty(state).map_err(|e| SlurmError::BadState {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    write_atomic(&path, &text)
}

/// How to submit.
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    /// The data repository the final job merges into.
    pub repo: PathBuf,
    /// The `quanta` executable the jobs run.
    pub quanta_exe: PathBuf,
    /// Requests that override every task's `batch` config.
    pub overrides: Resources,
    /// Requests for tasks whose config names none.
    pub defaults: Resources,
    /// At most this many elements of one array run at once.
    pub throttle: Option<u32>,
    /// Extra attempts the worker makes itself for a failing quantum.
    pub worker_retries: u32,
    pub journal_dir: Option<PathBuf>,
    /// Passed to every `sbatch` as they are (site options).
    pub extra_sbatch_args: Vec<String>,
}

/// How `restart` scales memory.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub memory_multiplier: f64,
    pub max_mem_mb: Option<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            memory_multiplier: 2.0,
            max_mem_mb: None,
        }
    }
}

/// What a submit or restart did.
#[derive(Debug, Clone, Serialize)]
pub struct SubmitReport {
    pub submission: u32,
    pub arrays: Vec<ArrayJob>,
    pub merge_job: Option<String>,
    /// Clusters left out because everything in them succeeded.
    pub succeeded_clusters: usize,
    /// Clusters left out because their remaining quanta failed
    /// deterministically or are downstream of such a failure.
    pub dead_clusters: Vec<String>,
    /// Clusters given more memory after running out of it: (name, MB).
    pub memory_raised: Vec<(String, u64)>,
}

struct BundleView {
    header_id: quanta_core::Uuid,
    n_quanta: usize,
    clusters: Vec<quanta_core::Cluster>,
    /// quantum → its cluster's position in `clusters`.
    cluster_of: HashMap<u32, usize>,
    task_of: Vec<u32>,
    upstream: Vec<Vec<u32>>,
    task_configs: Vec<(String, TaskBatchConfig)>,
}

fn view(bundle_path: &Path) -> Result<BundleView> {
    let berr = |e: quanta_core::BundleError| SlurmError::Bundle {
        path: bundle_path.to_path_buf(),
        detail: e.to_string(),
    };
    let b = Bundle::open(bundle_path).map_err(berr)?;
    let clusters = b.clusters().map_err(berr)?;
    let n = b.n_quanta();
    let mut cluster_of = HashMap::new();
    for (ci, c) in clusters.iter().enumerate() {
        for q in &c.quanta {
            cluster_of.insert(*q, ci);
        }
    }
    let mut task_of = Vec::with_capacity(n);
    let mut upstream = Vec::with_capacity(n);
    for i in 0..n as u32 {
        let q = b.quantum(i).map_err(berr)?;
        task_of.push(q.task);
        upstream.push(q.upstream);
    }
    let task_configs = b
        .tasks()
        .iter()
        .map(|t| Ok((t.label.clone(), task_batch_config(&t.label, &t.config)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(BundleView {
        header_id: b.header().bundle_id,
        n_quanta: n,
        clusters,
        cluster_of,
        task_of,
        upstream,
        task_configs,
    })
}

/// Submits every cluster of the bundle.
pub fn submit(bundle: &Path, opts: &SubmitOptions) -> Result<SubmitReport> {
    if state_path(bundle).exists() {
        return Err(SlurmError::Invalid(format!(
            "{} exists: this bundle was already submitted; use `quanta restart` (or remove the file to start over)",
            state_path(bundle).display()
        )));
    }
    let v = view(bundle)?;
    let journal_dir = opts
        .journal_dir
        .clone()
        .unwrap_or_else(|| journal_dir_for(bundle));
    let mut state = SubmissionState {
        version: STATE_VERSION,
        bundle: bundle.to_path_buf(),
        bundle_id: v.header_id,
        repo: opts.repo.clone(),
        journal_dir,
        clusters: BTreeMap::new(),
        submissions: Vec::new(),
    };
    let all: Vec<usize> = (0..v.clusters.len()).collect();
    let mem = all
        .iter()
        .map(|&c| (c, cluster_resources(&v, c, opts).mem_mb))
        .collect();
    let mut report = submit_clusters(&v, &mut state, &all, &mem, opts)?;
    report.succeeded_clusters = 0;
    Ok(report)
}

fn cluster_resources(v: &BundleView, c: usize, opts: &SubmitOptions) -> Resources {
    let mut r: Option<Resources> = None;
    let tasks: BTreeSet<u32> = v.clusters[c]
        .quanta
        .iter()
        .filter_map(|q| v.task_of.get(*q as usize).copied())
        .collect();
    for t in tasks {
        let own = v
            .task_configs
            .get(t as usize)
            .map(|(_, c)| c.resources.clone())
            .unwrap_or_default();
        let eff = opts.overrides.or(&own.or(&opts.defaults));
        r = Some(match r {
            None => eff,
            Some(prev) => prev.larger(&eff),
        });
    }
    r.unwrap_or_else(|| opts.overrides.or(&opts.defaults))
}

/// Dependency level of each selected cluster over the selected clusters.
fn levels(v: &BundleView, selected: &[usize]) -> Result<(BTreeMap<usize, usize>, ClusterDeps)> {
    let sel: BTreeSet<usize> = selected.iter().copied().collect();
    let mut deps: ClusterDeps = BTreeMap::new();
    for &c in selected {
        let mut d = BTreeSet::new();
        for q in &v.clusters[c].quanta {
            for u in v.upstream.get(*q as usize).into_iter().flatten() {
                if let Some(&uc) = v.cluster_of.get(u) {
                    if uc != c && sel.contains(&uc) {
                        d.insert(uc);
                    }
                }
            }
        }
        deps.insert(c, d);
    }
    let mut level: BTreeMap<usize, usize> = BTreeMap::new();
    // Iterative DFS with an explicit "in progress" mark to catch cycles.
    for &start in selected {
        let mut stack = vec![(start, false)];
        let mut on_path = BTreeSet::new();
        while let Some((c, expanded)) = stack.pop() {
            if level.contains_key(&c) {
                continue;
            }
            if expanded {
                let l = deps[&c]
                    .iter()
                    .map(|d| level.get(d).map_or(0, |l| l + 1))
                    .max()
                    .unwrap_or(0);
                level.insert(c, l);
                on_path.remove(&c);
                continue;
            }
            if !on_path.insert(c) {
                return Err(SlurmError::ClusterCycle(v.clusters[c].name.clone()));
            }
            stack.push((c, true));
            for &d in &deps[&c] {
                if on_path.contains(&d) {
                    return Err(SlurmError::ClusterCycle(v.clusters[d].name.clone()));
                }
                if !level.contains_key(&d) {
                    stack.push((d, false));
                }
            }
        }
    }
    Ok((level, deps))
}

struct PlannedArray {
    level: usize,
    resources: Resources,
    clusters: Vec<usize>,
}

fn plan(
    v: &BundleView,
    selected: &[usize],
    mem: &BTreeMap<usize, Option<u64>>,
    opts: &SubmitOptions,
) -> Result<(Vec<PlannedArray>, ClusterDeps)> {
    let (level, deps) = levels(v, selected)?;
    let mut groups: BTreeMap<(usize, Resources), Vec<usize>> = BTreeMap::new();
    for &c in selected {
        let mut r = cluster_resources(v, c, opts);
        r.mem_mb = mem.get(&c).copied().flatten().or(r.mem_mb);
        groups.entry((level[&c], r)).or_default().push(c);
    }
    let arrays = groups
        .into_iter()
        .map(|((level, resources), clusters)| PlannedArray {
            level,
            resources,
            clusters,
        })
        .collect();
    Ok((arrays, deps))
}

/// Quotes `s` for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(io(p, "making the path absolute"))
}

fn submit_clusters(
    v: &BundleView,
    state: &mut SubmissionState,
    selected: &[usize],
    mem: &BTreeMap<usize, Option<u64>>,
    opts: &SubmitOptions,
) -> Result<SubmitReport> {
    let number = state.submissions.len() as u32 + 1;
    let mut report = SubmitReport {
        submission: number,
        arrays: Vec::new(),
        merge_job: None,
        succeeded_clusters: 0,
        dead_clusters: Vec::new(),
        memory_raised: Vec::new(),
    };
    let dir = work_dir(&state.bundle);
    std::fs::create_dir_all(&dir).map_err(io(&dir, "creating the submission directory"))?;
    let bundle_abs = absolute(&state.bundle)?;
    let journal_abs = absolute(&state.journal_dir)?;
    let repo_abs = absolute(&state.repo)?;
    let exe = sh_quote(&opts.quanta_exe.to_string_lossy());
    let (arrays, deps) = plan(v, selected, mem, opts)?;
    // Which submitted array (and element) each cluster went to.
    let mut placed: HashMap<usize, (usize, usize)> = HashMap::new();
    let mut submitted: Vec<ArrayJob> = Vec::new();
    let result = (|| -> Result<()> {
        for (k, a) in arrays.iter().enumerate() {
            let dependency = array_dependency(&a.clusters, &deps, &placed, &submitted);
            let names: Vec<String> = a
                .clusters
                .iter()
                .map(|c| v.clusters[*c].name.clone())
                .collect();
            let stem = format!("s{number}-a{k}");
            let map_path = dir.join(format!("{stem}.map.json"));
            let map = ArrayMap {
                clusters: names.clone(),
                mem_limit_bytes: a.resources.mem_mb.map(|m| m << 20),
            };
            let map_text = serde_json::to_vec_pretty(&map).map_err(|e| SlurmError::BadState {
                path: map_path.clone(),
                detail: e.to_string(),
            })?;
            write_atomic(&map_path, &map_text)?;
            let script_path = dir.join(format!("{stem}.sh"));
            let script = format!(
                "#!/bin/sh\n# quanta submission {number}, array {k}: element i runs cluster i of the map.\nexec {exe} worker {} --slurm-map {} --journal {} --retries {}\n",
                sh_quote(&bundle_abs.to_string_lossy()),
                sh_quote(&absolute(&map_path)?.to_string_lossy()),
                sh_quote(&journal_abs.to_string_lossy()),
                opts.worker_retries,
            );
            write_atomic(&script_path, script.as_bytes())?;
            let mut args = vec![
                "--parsable".to_string(),
                format!("--job-name=quanta-{stem}"),
                format!(
                    "--array=0-{}{}",
                    names.len() - 1,
                    opts.throttle.map(|t| format!("%{t}")).unwrap_or_default()
                ),
                format!("--output={}", dir.join("slurm-%A_%a.out").display()),
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
    if let Err(e) = result {
        // Leave nothing half-submitted behind.
        let ids: Vec<String> = submitted.iter().map(|a| a.job_id.clone()).collect();
        let _ = scancel(&ids);
        return Err(e);
    }
    let merge_job = if submitted.is_empty() {
        None
    } else {
        let script_path = dir.join(format!("s{number}-merge.sh"));
        let script = format!(
            "#!/bin/sh\n# quanta submission {number}: fold the journals into the registry, whatever succeeded.\nexec {exe} merge {} {} --journals {} --incomplete\n",
            sh_quote(&repo_abs.to_string_lossy()),
            sh_quote(&bundle_abs.to_string_lossy()),
            sh_quote(&journal_abs.to_string_lossy()),
        );
        write_atomic(&script_path, script.as_bytes())?;
        let deps: Vec<&str> = submitted.iter().map(|a| a.job_id.as_str()).collect();
        let args = vec![
            "--parsable".to_string(),
            format!("--job-name=quanta-s{number}-merge"),
            format!(
                "--output={}",
                dir.join(format!("s{number}-merge-%j.out")).display()
            ),
            format!("--dependency=afterany:{}", deps.join(":")),
            "--kill-on-invalid-dep=yes".to_string(),
            script_path.to_string_lossy().into_owned(),
        ];
        match sbatch(&args) {
            Ok(id) => Some(id),
            Err(e) => {
                let ids: Vec<String> = submitted.iter().map(|a| a.job_id.clone()).collect();
                let _ = scancel(&ids);
                return Err(e);
            }
        }
    };
    for a in &submitted {
        for name in &a.clusters {
            let e = state.clusters.entry(name.clone()).or_insert(ClusterState {
                mem_mb: None,
                submitted: 0,
            });
            e.mem_mb = a.resources.mem_mb;
            e.submitted += 1;
        }
    }
    state.submissions.push(Submission {
        number,
        time: quanta_core::now_rfc3339(),
        arrays: submitted.clone(),
        merge_job: merge_job.clone(),
    });
    save_state(state)?;
    report.arrays = submitted;
    report.merge_job = merge_job;
    Ok(report)
}

/// The `--dependency` of an array running `clusters`, given where their
/// upstream clusters were `placed` (array, element) among the `submitted`
/// arrays: `aftercorr` when element i reads only from element i of one
/// array of the same length, else an `afterok` barrier on every upstream
/// array.
fn array_dependency(
    clusters: &[usize],
    deps: &ClusterDeps,
    placed: &HashMap<usize, (usize, usize)>,
    submitted: &[ArrayJob],
) -> Option<String> {
    let upstream: BTreeSet<usize> = clusters
        .iter()
        .flat_map(|c| deps.get(c).into_iter().flatten())
        .filter_map(|d| placed.get(d).map(|(ai, _)| *ai))
        .collect();
    let first = *upstream.iter().next()?;
    let corr = upstream.len() == 1
        && submitted[first].clusters.len() == clusters.len()
        && clusters.iter().enumerate().all(|(i, c)| {
            deps.get(c)
                .into_iter()
                .flatten()
                .all(|d| placed.get(d) == Some(&(first, i)))
        });
    if corr {
        return Some(format!("aftercorr:{}", submitted[first].job_id));
    }
    let ids: Vec<&str> = upstream
        .iter()
        .map(|u| submitted[*u].job_id.as_str())
        .collect();
    Some(format!("afterok:{}", ids.join(":")))
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

fn run_tool(program: &str, args: &[String]) -> Result<String> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| SlurmError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(SlurmError::CommandFailed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `sbatch --parsable ...` and returns the job id.
fn sbatch(args: &[String]) -> Result<String> {
    let out = run_tool("sbatch", args)?;
    // `--parsable` prints `jobid` or `jobid;cluster`.
    let id = out.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SlurmError::BadJobId {
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
        .map_err(SlurmError::Invalid)?
        .into_iter()
        .filter(|j| ours.contains(&j.array_job_id.unwrap_or(j.job_id)) || ours.contains(&j.job_id))
        .collect())
}

/// Cancels every job of the submission; returns the job ids still live
/// before the cancel.
pub fn cancel(bundle: &Path) -> Result<Vec<String>> {
    let state = load_state(bundle)?;
    let live: BTreeSet<String> = submission_jobs(&state)?
        .into_iter()
        .filter(|j| j.is_live())
        .map(|j| j.array_job_id.unwrap_or(j.job_id).to_string())
        .collect();
    let ids: Vec<String> = live.into_iter().collect();
    scancel(&ids)?;
    Ok(ids)
}

/// Per cluster: whether each of its quanta is succeeded, and what the
/// failed ones are.
struct Fold {
    progress: quanta_core::CampaignProgress,
}

fn fold(v: &BundleView, state: &SubmissionState) -> Result<Fold> {
    let progress = fold_journals(&state.journal_dir, v.header_id, v.n_quanta).map_err(|e| {
        SlurmError::Journal {
            path: state.journal_dir.clone(),
            detail: e.to_string(),
        }
    })?;
    Ok(Fold { progress })
}

/// Whether a failed quantum's failure would repeat on a rerun.
fn is_deterministic(v: &BundleView, f: &Fold, q: u32) -> bool {
    let Some(p) = f.progress.quanta.get(&q) else {
        return false;
    };
    if p.state != QuantumState::Failed {
        return false;
    }
    let Some(quanta_core::JournalRecord::Finished {
        exit_code, error, ..
    }) = p.finished()
    else {
        return false;
    };
    let codes = v
        .task_of
        .get(q as usize)
        .and_then(|t| v.task_configs.get(*t as usize))
        .map(|(_, c)| c.deterministic_exit_codes.as_slice())
        .unwrap_or(&[]);
    if let Some(code) = exit_code {
        return codes.contains(&code);
    }
    // Rust tasks have no exit code; their error kind says it. These
    // prefixes are TaskError's Display of Config and BadInput.
    error
        .as_deref()
        .is_some_and(|e| e.starts_with("invalid config:") || e.starts_with("invalid input "))
}

/// Quanta that failed deterministically and everything downstream of them.
fn dead_quanta(v: &BundleView, f: &Fold) -> BTreeSet<u32> {
    let mut dead: BTreeSet<u32> = (0..v.n_quanta as u32)
        .filter(|q| is_deterministic(v, f, *q))
        .collect();
    // Upstream indices are not assumed to be smaller: iterate to a fixed point.
    loop {
        let before = dead.len();
        for q in 0..v.n_quanta as u32 {
            if !dead.contains(&q)
                && !f.progress.is_succeeded(q)
                && v.upstream[q as usize].iter().any(|u| dead.contains(u))
            {
                dead.insert(q);
            }
        }
        if dead.len() == before {
            return dead;
        }
    }
}

/// Resubmits the clusters with quanta that have not succeeded, except those
/// whose remaining quanta are dead (deterministic failures and their
/// downstream). Clusters that ran out of memory get more.
pub fn restart(bundle: &Path, opts: &SubmitOptions, policy: RetryPolicy) -> Result<SubmitReport> {
    let mut state = load_state(bundle)?;
    let live: Vec<SlurmJob> = submission_jobs(&state)?
        .into_iter()
        .filter(|j| j.is_live() && !j.is_merge_of(&state))
        .collect();
    if !live.is_empty() {
        return Err(SlurmError::Invalid(format!(
            "{} job(s) of this submission are still queued or running (e.g. {}); wait or `quanta cancel` first",
            live.len(),
            live[0].display_id()
        )));
    }
    let v = view(bundle)?;
    if v.header_id != state.bundle_id {
        return Err(SlurmError::BadState {
            path: state_path(bundle),
            detail: format!(
                "written for bundle {}, but {} is bundle {}",
                state.bundle_id,
                bundle.display(),
                v.header_id
            ),
        });
    }
    let f = fold(&v, &state)?;
    let dead = dead_quanta(&v, &f);
    let mut selected = Vec::new();
    let mut mem = BTreeMap::new();
    let mut succeeded = 0;
    let mut dead_clusters = Vec::new();
    let mut raised = Vec::new();
    for (ci, c) in v.clusters.iter().enumerate() {
        let todo: Vec<u32> = c
            .quanta
            .iter()
            .copied()
            .filter(|q| !f.progress.is_succeeded(*q))
            .collect();
        if todo.is_empty() {
            succeeded += 1;
            continue;
        }
        if todo.iter().all(|q| dead.contains(q)) {
            dead_clusters.push(c.name.clone());
            continue;
        }
        let base = cluster_resources(&v, ci, opts).mem_mb;
        let prev = state.clusters.get(&c.name).and_then(|s| s.mem_mb).or(base);
        let oom = todo
            .iter()
            .any(|q| f.progress.state(*q) == QuantumState::OutOfMemory);
        let m = match (oom, prev) {
            (true, Some(p)) => {
                let mut m = ((p as f64) * policy.memory_multiplier).ceil() as u64;
                if let Some(cap) = policy.max_mem_mb {
                    m = m.min(cap);
                }
                raised.push((c.name.clone(), m));
                Some(m.max(p))
            }
            _ => prev,
        };
        mem.insert(ci, m);
        selected.push(ci);
    }
    let mut report = if selected.is_empty() {
        SubmitReport {
            submission: state.submissions.len() as u32,
            arrays: Vec::new(),
            merge_job: None,
            succeeded_clusters: 0,
            dead_clusters: Vec::new(),
            memory_raised: Vec::new(),
        }
    } else {
        submit_clusters(&v, &mut state, &selected, &mem, opts)?
    };
    report.succeeded_clusters = succeeded;
    report.dead_clusters = dead_clusters;
    report.memory_raised = raised;
    Ok(report)
}

/// Reads an array map and returns element `index`: (cluster, memory limit).
pub fn array_element(map: &Path, index: usize) -> Result<(String, Option<u64>)> {
    let bytes = std::fs::read(map).map_err(io(map, "reading the array map"))?;
    let m: ArrayMap = serde_json::from_slice(&bytes).map_err(|e| SlurmError::BadState {
        path: map.to_path_buf(),
        detail: e.to_string(),
    })?;
    let len = m.clusters.len();
    let name = m
        .clusters
        .into_iter()
        .nth(index)
        .ok_or(SlurmError::NoSuchElement {
            path: map.to_path_buf(),
            index,
            len,
        })?;
    Ok((name, m.mem_limit_bytes))
}

/// One cluster's line in `quanta status`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub cluster: String,
    pub quanta: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub out_of_memory: usize,
    pub blocked: usize,
    pub pending: usize,
    /// Slurm's view of the cluster's latest element: PENDING, RUNNING, …,
    /// or `None` when Slurm no longer knows it.
    pub slurm_state: Option<String>,
    pub slurm_job: Option<String>,
    pub mem_mb: Option<u64>,
    pub submitted: u32,
}

/// The Slurm section of `quanta status`.
#[derive(Debug, Clone, Serialize)]
pub struct SlurmStatus {
    pub submissions: usize,
    pub live_jobs: usize,
    pub clusters: Vec<ClusterStatus>,
    /// Set when `squeue` could not be asked (the journals still count).
    pub squeue_error: Option<String>,
}

/// Journals and `squeue` per cluster; `None` when the bundle was never
/// submitted to Slurm.
///
/// `known` is a fold of the journals the caller already made (with the
/// directory it read), reused when it is the submission's journal
/// directory. Status needs only the bundle's header and clusters, not its
/// quanta, so no quanta block is decoded here.
pub fn status(
    bundle: &Path,
    known: Option<(&Path, &quanta_core::CampaignProgress)>,
) -> Result<Option<SlurmStatus>> {
    let state = match load_state(bundle) {
        Ok(s) => s,
        Err(SlurmError::NotSubmitted { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let berr = |e: quanta_core::BundleError| SlurmError::Bundle {
        path: bundle.to_path_buf(),
        detail: e.to_string(),
    };
    let b = Bundle::open(bundle).map_err(berr)?;
    let bundle_clusters = b.clusters().map_err(berr)?;
    let folded;
    let progress = match known {
        Some((dir, p)) if dir == state.journal_dir => p,
        _ => {
            folded = fold_journals(&state.journal_dir, b.header().bundle_id, b.n_quanta())
                .map_err(|e| SlurmError::Journal {
                    path: state.journal_dir.clone(),
                    detail: e.to_string(),
                })?;
            &folded
        }
    };
    let (jobs, squeue_error) = match submission_jobs(&state) {
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
    let mut clusters = Vec::new();
    for c in &bundle_clusters {
        let mut cs = ClusterStatus {
            cluster: c.name.clone(),
            quanta: c.quanta.len(),
            succeeded: 0,
            failed: 0,
            out_of_memory: 0,
            blocked: 0,
            pending: 0,
            slurm_state: None,
            slurm_job: None,
            mem_mb: state.clusters.get(&c.name).and_then(|s| s.mem_mb),
            submitted: state.clusters.get(&c.name).map_or(0, |s| s.submitted),
        };
        for q in &c.quanta {
            match progress.state(*q) {
                QuantumState::Succeeded => cs.succeeded += 1,
                QuantumState::Failed | QuantumState::TimedOut => cs.failed += 1,
                QuantumState::OutOfMemory => cs.out_of_memory += 1,
                QuantumState::Blocked => cs.blocked += 1,
                QuantumState::Pending | QuantumState::Running => cs.pending += 1,
            }
        }
        if let Some((a, i)) = latest.get(c.name.as_str()) {
            cs.slurm_job = Some(format!("{}_{i}", a.job_id));
            cs.slurm_state = jobs
                .iter()
                .find(|j| j.is_element(&a.job_id, *i))
                .map(|j| j.state.clone());
        }
        clusters.push(cs);
    }
    Ok(Some(SlurmStatus {
        submissions: state.submissions.len(),
        live_jobs: jobs.iter().filter(|j| j.is_live()).count(),
        clusters,
        squeue_error,
    }))
}

/// What a supervised worker child did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildEnd {
    Exited(i32),
    /// Killed by this signal while under a memory limit: out of memory.
    OutOfMemory(i32),
    Signaled(i32),
}

/// Runs `cmd` (a `quanta worker` without a memory limit) with
/// `RLIMIT_AS = limit_bytes`, and tells how it ended. An allocation that
/// fails under the limit aborts a Rust process (SIGABRT), a stack that
/// cannot grow faults (SIGSEGV), and a kernel OOM kill is SIGKILL: under a
/// limit, any of these is reported as out of memory.
pub fn run_supervised(mut cmd: Command, limit_bytes: u64) -> Result<ChildEnd> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let lim = libc::rlimit {
        rlim_cur: limit_bytes as libc::rlim_t,
        rlim_max: limit_bytes as libc::rlim_t,
    };
    // SAFETY: setrlimit is async-signal-safe and touches no heap.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let shown = format!("{cmd:?}");
    let status = cmd.status().map_err(|source| SlurmError::Spawn {
        command: shown,
        source,
    })?;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => ChildEnd::Exited(c),
        (None, Some(s))
            if matches!(
                s,
                libc::SIGABRT | libc::SIGSEGV | libc::SIGKILL | libc::SIGBUS
            ) =>
        {
            ChildEnd::OutOfMemory(s)
        }
        (None, Some(s)) => ChildEnd::Signaled(s),
        (None, None) => ChildEnd::Signaled(0),
    })
}

/// Records `OutOfMemory` for the quanta of `quanta` whose latest attempt
/// started and never finished (the ones a killed worker was running), in
/// a journal of its own. Returns those quanta.
pub fn record_out_of_memory(
    bundle: &Path,
    journal_dir: &Path,
    quanta: &[u32],
    worker: &str,
    detail: &str,
) -> Result<Vec<u32>> {
    let berr = |e: quanta_core::BundleError| SlurmError::Bundle {
        path: bundle.to_path_buf(),
        detail: e.to_string(),
    };
    let b = Bundle::open(bundle).map_err(berr)?;
    let id = b.header().bundle_id;
    let jerr = |e: quanta_core::JournalError| SlurmError::Journal {
        path: journal_dir.to_path_buf(),
        detail: e.to_string(),
    };
    let progress = fold_journals(journal_dir, id, b.n_quanta()).map_err(jerr)?;
    let mut hit = Vec::new();
    let mut records = Vec::new();
    for q in quanta {
        let Some(p) = progress.quanta.get(q) else {
            continue;
        };
        if p.state != QuantumState::Running {
            continue;
        }
        if let Some(quanta_core::JournalRecord::Started {
            attempt,
            quantum_id,
            time,
            ..
        }) = p.started()
        {
            hit.push(*q);
            records.push(quanta_core::JournalRecord::Finished {
                quantum: *q,
                quantum_id,
                attempt,
                status: quanta_core::QuantumStatus::OutOfMemory,
                outputs: Vec::new(),
                inputs_used: Vec::new(),
                started: time,
                finished: quanta_core::now_rfc3339(),
                wall_seconds: 0.0,
                cpu_seconds: 0.0,
                peak_rss_bytes: 0,
                exit_code: None,
                error: Some(detail.to_string()),
                log_tail: Vec::new(),
            });
        }
    }
    if records.is_empty() {
        return Ok(hit);
    }
    std::fs::create_dir_all(journal_dir)
        .map_err(io(journal_dir, "creating the journal directory"))?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let pid = std::process::id();
    let path = journal_dir.join(format!(
        "{}-oom-{host}-{pid}-{}.journal",
        sanitize(worker),
        quanta_core::now_rfc3339().replace([':', '.'], "")
    ));
    let header = quanta_core::JournalHeader {
        bundle_id: id,
        worker: format!("{worker} (memory supervisor)"),
        host,
        pid,
        started_at: quanta_core::now_rfc3339(),
    };
    let mut w = quanta_core::JournalWriter::create(&path, &header).map_err(jerr)?;
    for r in &records {
        w.append(r).map_err(jerr)?;
    }
    Ok(hit)
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
