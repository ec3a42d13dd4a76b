//! The engine-neutral plan of a submission: each cluster's resource
//! request (from the tasks' `batch` config and the command line), the
//! clusters each cluster reads from, their dependency levels, and the
//! arrays (one per level and resource request) an engine with job arrays
//! submits (through the array driver, module `array`). An engine with
//! per-node edges (HTCondor's DAGMan) uses the cluster dependencies and
//! resources and ignores the levels.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use quanta_core::Bundle;
use serde::{Deserialize, Serialize};

use super::error::{BatchError, Result};
use super::SubmitOptions;

/// Per selected cluster, the selected clusters it reads from.
pub type ClusterDeps = BTreeMap<usize, BTreeSet<usize>>;

/// Resource requests of a job; `None` leaves the engine's default.
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
    pub(crate) fn or(&self, fallback: &Resources) -> Resources {
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
    pub(crate) fn larger(&self, other: &Resources) -> Resources {
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
pub(crate) fn time_minutes(t: &str) -> f64 {
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
    let bad = |key: &'static str, detail: String| BatchError::BadResource {
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
                return Err(BatchError::BadResource {
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

pub(crate) struct BundleView {
    pub(crate) header_id: quanta_core::Uuid,
    pub(crate) n_quanta: usize,
    pub(crate) clusters: Vec<quanta_core::Cluster>,
    /// quantum → its cluster's position in `clusters`.
    pub(crate) cluster_of: HashMap<u32, usize>,
    pub(crate) task_of: Vec<u32>,
    pub(crate) upstream: Vec<Vec<u32>>,
    pub(crate) task_configs: Vec<(String, TaskBatchConfig)>,
}

pub(crate) fn view(bundle_path: &Path) -> Result<BundleView> {
    let berr = |e: quanta_core::BundleError| BatchError::Bundle {
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

pub(crate) fn cluster_resources(v: &BundleView, c: usize, opts: &SubmitOptions) -> Resources {
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
pub(crate) fn levels(
    v: &BundleView,
    selected: &[usize],
) -> Result<(BTreeMap<usize, usize>, ClusterDeps)> {
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
                return Err(BatchError::ClusterCycle(v.clusters[c].name.clone()));
            }
            stack.push((c, true));
            for &d in &deps[&c] {
                if on_path.contains(&d) {
                    return Err(BatchError::ClusterCycle(v.clusters[d].name.clone()));
                }
                if !level.contains_key(&d) {
                    stack.push((d, false));
                }
            }
        }
    }
    Ok((level, deps))
}

pub(crate) struct PlannedArray {
    pub(crate) level: usize,
    pub(crate) resources: Resources,
    pub(crate) clusters: Vec<usize>,
}

pub(crate) fn plan(
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
