//! Answers to "where did this come from?" and "how did the campaign go?":
//! the provenance DAG of a dataset (upstream to the raw inputs, or
//! downstream to what was made from it), the per-task report of a merged
//! RUN, and the status of a campaign from its bundle and journals alone.
//!
//! Owns: walking the registry's provenance links and summarising them.
//! Must not: write anything, or run SQL of its own (the registry's
//! provenance queries do).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;

use quanta_core::{
    fold_journals, journal_dir_for, Bundle, DataId, JournalRecord, JournalRecords, QuantumState,
    Uuid,
};
use quanta_registry::{QuantumExecution, QuantumInput, Registry, RegistryError};
use serde::Serialize;

use crate::merge::MergeError;

/// Which way [`provenance_graph`] walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// To the producers of the inputs, recursively.
    Upstream,
    /// To the quanta that read the dataset and what they made, recursively.
    Downstream,
}

/// A dataset in a provenance graph. A removed dataset keeps its type, data
/// ID and RUN (the registry remembers them while recorded quanta name it)
/// and says `removed`; fields other than `id` are absent only for a
/// dataset the registry knows nothing of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetNode {
    pub id: Uuid,
    pub dataset_type: Option<String>,
    pub data_id: Option<DataId>,
    pub run: Option<String>,
    /// Removed from the repository (`remove-runs`, `prune-datasets
    /// --purge`) after the quanta that name it were recorded.
    pub removed: bool,
    /// The quantum that made it; none for raw or ingested datasets.
    pub produced_by: Option<Uuid>,
    /// Quantum hops from the dataset the walk started at.
    pub depth: usize,
}

/// A quantum in a provenance graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuantumNode {
    pub id: Uuid,
    pub task_label: String,
    pub data_id: DataId,
    pub run: String,
    pub bundle_id: Uuid,
    /// The task configuration recorded for its run and bundle.
    pub config: Option<serde_json::Value>,
    #[serde(flatten)]
    pub execution: QuantumExecution,
    pub inputs: Vec<QuantumInput>,
    /// (dataset, connection)
    pub outputs: Vec<OutputLink>,
    pub depth: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputLink {
    pub dataset_id: Uuid,
    pub connection: String,
}

/// A deduplicated provenance DAG, in breadth-first order from the root.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProvenanceGraph {
    pub root: Uuid,
    pub direction: Direction,
    /// The depth limit the walk used, if any.
    pub max_depth: Option<usize>,
    pub datasets: Vec<DatasetNode>,
    pub quanta: Vec<QuantumNode>,
    /// Upstream: the datasets reached that no quantum produced (the raw
    /// inputs), in walk order. Downstream: empty.
    pub sources: Vec<Uuid>,
    /// True when the depth limit stopped the walk before its end.
    pub truncated: bool,
}

impl ProvenanceGraph {
    pub fn dataset(&self, id: &Uuid) -> Option<&DatasetNode> {
        self.datasets.iter().find(|d| d.id == *id)
    }

    pub fn quantum(&self, id: &Uuid) -> Option<&QuantumNode> {
        self.quanta.iter().find(|q| q.id == *id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("no dataset {0} in the registry")]
    UnknownDataset(Uuid),
}

/// The node of dataset `id`, registered or removed, and its producer.
fn dataset_node(
    registry: &Registry,
    id: Uuid,
    depth: usize,
) -> Result<(DatasetNode, Option<Uuid>), ProvenanceError> {
    let (found, removed, produced_by) = match registry.dataset_by_id(&id, None)? {
        Some(found) => (Some(found.dataset_ref), false, registry.producer_of(&id)?),
        None => match registry.removed_dataset(&id)? {
            Some(gone) => {
                // Its producer's row may have gone with its own RUN.
                let producer = match gone.producer {
                    Some(q) if registry.quantum(&q)?.is_some() => Some(q),
                    _ => None,
                };
                (Some(gone.dataset_ref), true, producer)
            }
            None => (None, false, None),
        },
    };
    let node = DatasetNode {
        id,
        dataset_type: found.as_ref().map(|f| f.dataset_type.clone()),
        data_id: found.as_ref().map(|f| f.data_id.clone()),
        run: found.map(|f| f.run),
        removed,
        produced_by,
        depth,
    };
    Ok((node, produced_by))
}

/// Walks the provenance of `root` in `direction`, at most `max_depth`
/// quantum hops (all the way when `None`). Every dataset and quantum
/// appears once however many paths reach it.
pub fn provenance_graph(
    registry: &Registry,
    root: Uuid,
    direction: Direction,
    max_depth: Option<usize>,
) -> Result<ProvenanceGraph, ProvenanceError> {
    if registry.dataset_by_id(&root, None)?.is_none() && registry.removed_dataset(&root)?.is_none()
    {
        return Err(ProvenanceError::UnknownDataset(root));
    }
    let mut graph = ProvenanceGraph {
        root,
        direction,
        max_depth,
        datasets: Vec::new(),
        quanta: Vec::new(),
        sources: Vec::new(),
        truncated: false,
    };
    // (run, bundle) → the task configs recorded for it.
    let mut configs: HashMap<(String, Uuid), Option<serde_json::Value>> = HashMap::new();
    let mut seen_datasets: HashSet<Uuid> = HashSet::new();
    let mut seen_quanta: HashSet<Uuid> = HashSet::new();
    let mut queue: VecDeque<(Uuid, usize)> = VecDeque::new();
    seen_datasets.insert(root);
    queue.push_back((root, 0));
    while let Some((id, depth)) = queue.pop_front() {
        let (node, produced_by) = dataset_node(registry, id, depth)?;
        graph.datasets.push(node);
        let next_quanta: Vec<Uuid> = match direction {
            Direction::Upstream => {
                if produced_by.is_none() {
                    graph.sources.push(id);
                }
                produced_by.into_iter().collect()
            }
            Direction::Downstream => registry.consumers_of(&id)?,
        };
        for qid in next_quanta {
            if max_depth.is_some_and(|m| depth >= m) {
                graph.truncated = true;
                continue;
            }
            if !seen_quanta.insert(qid) {
                continue;
            }
            let Some(row) = registry.quantum(&qid)? else {
                continue;
            };
            let inputs = registry.quantum_inputs(&qid)?;
            let outputs: Vec<OutputLink> = registry
                .quantum_outputs(&qid)?
                .into_iter()
                .map(|(dataset_id, connection)| OutputLink {
                    dataset_id,
                    connection,
                })
                .collect();
            let key = (row.run.clone(), row.bundle_id);
            if !configs.contains_key(&key) {
                let all = registry
                    .run_provenance(&row.run)?
                    .into_iter()
                    .find(|p| p.bundle_id == row.bundle_id)
                    .map(|p| p.task_configs);
                configs.insert(key.clone(), all);
            }
            let config = configs
                .get(&key)
                .and_then(|all| all.as_ref())
                .and_then(|all| task_config(all, &row.task_label));
            let next_datasets: Vec<Uuid> = match direction {
                Direction::Upstream => inputs
                    .iter()
                    .filter(|i| i.used)
                    .map(|i| i.dataset_id)
                    .collect(),
                Direction::Downstream => outputs.iter().map(|o| o.dataset_id).collect(),
            };
            graph.quanta.push(QuantumNode {
                id: qid,
                config,
                task_label: row.task_label,
                data_id: row.data_id,
                run: row.run,
                bundle_id: row.bundle_id,
                execution: row.execution,
                inputs,
                outputs,
                depth: depth + 1,
            });
            for d in next_datasets {
                if seen_datasets.insert(d) {
                    queue.push_back((d, depth + 1));
                }
            }
        }
    }
    Ok(graph)
}

/// The config of `label` in a run's recorded task configs.
fn task_config(all: &serde_json::Value, label: &str) -> Option<serde_json::Value> {
    all.as_array()?
        .iter()
        .find(|t| t.get("label").and_then(|l| l.as_str()) == Some(label))
        .and_then(|t| t.get("config").cloned())
}

/// Wall time and memory of one task's quanta.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskTiming {
    pub min_wall_seconds: f64,
    pub median_wall_seconds: f64,
    pub max_wall_seconds: f64,
    pub total_cpu_seconds: f64,
    pub max_peak_rss_bytes: u64,
}

/// One task's line of a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskReport {
    pub task: String,
    pub quanta: usize,
    /// Status → count.
    pub by_status: BTreeMap<String, usize>,
    /// Over the quanta that have timing (those that ran).
    pub timing: Option<TaskTiming>,
}

/// A quantum that did not succeed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureLine {
    pub task: String,
    pub quantum_id: Uuid,
    pub data_id: DataId,
    pub status: String,
    pub error: Option<String>,
    pub host: Option<String>,
    pub log_tail: Vec<String>,
}

/// `quanta report`: a merged RUN from the registry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    pub run: String,
    pub bundles: Vec<Uuid>,
    pub tasks: Vec<TaskReport>,
    pub failures: Vec<FailureLine>,
}

fn timing(mut walls: Vec<f64>, cpu: f64, rss: u64) -> Option<TaskTiming> {
    if walls.is_empty() {
        return None;
    }
    walls.sort_by(|a, b| a.total_cmp(b));
    let n = walls.len();
    let median = if n % 2 == 1 {
        walls[n / 2]
    } else {
        (walls[n / 2 - 1] + walls[n / 2]) / 2.0
    };
    Some(TaskTiming {
        min_wall_seconds: walls[0],
        median_wall_seconds: median,
        max_wall_seconds: walls[n - 1],
        total_cpu_seconds: cpu,
        max_peak_rss_bytes: rss,
    })
}

/// The report of a merged RUN: per task counts by status, timing and
/// memory, and the quanta that did not succeed. Tasks are in the order of
/// the run's pipeline when its provenance is recorded, else by label.
pub fn run_report(registry: &Registry, run: &str) -> Result<RunReport, RegistryError> {
    let provenance = registry.run_provenance(run)?;
    let mut order: Vec<String> = Vec::new();
    for p in &provenance {
        let labels = p.task_configs.as_array().into_iter().flatten();
        for label in labels.filter_map(|t| t.get("label").and_then(|l| l.as_str())) {
            if !order.iter().any(|o| o == label) {
                order.push(label.to_string());
            }
        }
    }
    struct Acc {
        quanta: usize,
        by_status: BTreeMap<String, usize>,
        walls: Vec<f64>,
        cpu: f64,
        rss: u64,
    }
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    let mut failures = Vec::new();
    for q in registry.quanta_in_run(run)? {
        let a = acc.entry(q.task_label.clone()).or_insert_with(|| Acc {
            quanta: 0,
            by_status: BTreeMap::new(),
            walls: Vec::new(),
            cpu: 0.0,
            rss: 0,
        });
        a.quanta += 1;
        *a.by_status.entry(q.execution.status.clone()).or_insert(0) += 1;
        if let Some(w) = q.execution.wall_seconds {
            a.walls.push(w);
        }
        a.cpu += q.execution.cpu_seconds.unwrap_or(0.0);
        a.rss = a.rss.max(q.execution.peak_rss_bytes.unwrap_or(0));
        if q.execution.status != quanta_registry::provenance::STATUS_SUCCEEDED {
            failures.push(FailureLine {
                task: q.task_label,
                quantum_id: q.id,
                data_id: q.data_id,
                status: q.execution.status,
                error: q.execution.error,
                host: q.execution.host,
                log_tail: q.execution.log_tail,
            });
        }
    }
    // Pipeline order first (labels known from the provenance), then any
    // other task by label.
    let mut labels: Vec<String> = order.into_iter().filter(|l| acc.contains_key(l)).collect();
    for label in acc.keys() {
        if !labels.contains(label) {
            labels.push(label.clone());
        }
    }
    let tasks = labels
        .into_iter()
        .filter_map(|label| {
            let a = acc.remove(&label)?;
            Some(TaskReport {
                task: label,
                quanta: a.quanta,
                by_status: a.by_status,
                timing: timing(a.walls, a.cpu, a.rss),
            })
        })
        .collect();
    Ok(RunReport {
        run: run.to_string(),
        bundles: provenance.iter().map(|p| p.bundle_id).collect(),
        tasks,
        failures,
    })
}

/// One task's line of `quanta status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskStatus {
    pub task: String,
    pub quanta: usize,
    pub done: usize,
    /// Failed, timed out or out of memory.
    pub failed: usize,
    pub blocked: usize,
    pub pending: usize,
    pub running: usize,
}

/// `quanta status`: a campaign from its bundle and journals, no database.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignStatus {
    pub bundle_id: Uuid,
    pub output_run: String,
    pub n_quanta: usize,
    pub journals: usize,
    pub tasks: Vec<TaskStatus>,
    pub failures: Vec<FailureLine>,
    /// Torn tails, journals of other bundles, records of unknown quanta.
    pub warnings: Vec<String>,
    /// The journal directory read and its fold, for callers that add to the
    /// status (the Slurm view) without reading the journals again.
    #[serde(skip)]
    pub journal_dir: std::path::PathBuf,
    #[serde(skip)]
    pub progress: quanta_core::CampaignProgress,
}

/// The status of the campaign of the bundle at `bundle_path`, from its
/// journals (in `journals`, default `<bundle>.journals/`).
pub fn campaign_status(
    bundle_path: &Path,
    journals: Option<&Path>,
) -> Result<CampaignStatus, MergeError> {
    let bundle = Bundle::open(bundle_path)?;
    let header = bundle.header();
    let dir = journals
        .map(Path::to_path_buf)
        .unwrap_or_else(|| journal_dir_for(bundle_path));
    let n = bundle.n_quanta();
    let fold = fold_journals(&dir, header.bundle_id, n)?;
    let mut warnings = fold.warnings.clone();
    for (path, other) in &fold.foreign_journals {
        warnings.push(format!(
            "journal {} belongs to bundle {other}; ignored",
            path.display()
        ));
    }
    for (path, index) in &fold.unknown_quanta {
        warnings.push(format!(
            "journal {} has a record for quantum {index}, outside the bundle's {n}; ignored",
            path.display()
        ));
    }
    let mut tasks: Vec<TaskStatus> = bundle
        .tasks()
        .iter()
        .map(|t| TaskStatus {
            task: t.label.clone(),
            quanta: 0,
            done: 0,
            failed: 0,
            blocked: 0,
            pending: 0,
            running: 0,
        })
        .collect();
    let mut failures = Vec::new();
    let mut records = JournalRecords::default();
    for (index, quantum) in bundle.quanta().enumerate() {
        let quantum = quantum?;
        let Some(t) = tasks.get_mut(quantum.task as usize) else {
            continue;
        };
        t.quanta += 1;
        let state = fold.state(index as u32);
        match state {
            QuantumState::Succeeded => t.done += 1,
            QuantumState::Pending => t.pending += 1,
            QuantumState::Running => t.running += 1,
            QuantumState::Blocked => t.blocked += 1,
            QuantumState::Failed | QuantumState::TimedOut | QuantumState::OutOfMemory => {
                t.failed += 1
            }
        }
        if state.is_failure() {
            let p = &fold.quanta[&(index as u32)];
            let (error, log_tail) = match records.finished(p)? {
                Some(JournalRecord::Finished {
                    error, log_tail, ..
                }) => (error, log_tail),
                _ => (None, Vec::new()),
            };
            let host = match records.started(p)? {
                Some(JournalRecord::Started { host, .. }) => Some(host),
                _ => None,
            };
            failures.push(FailureLine {
                task: t.task.clone(),
                quantum_id: quantum.id,
                data_id: quantum.data_id,
                status: state.as_str().to_string(),
                error,
                host,
                log_tail,
            });
        }
    }
    Ok(CampaignStatus {
        bundle_id: header.bundle_id,
        output_run: header.output_run.clone(),
        n_quanta: n,
        journals: fold.journals.len(),
        tasks,
        failures,
        warnings,
        journal_dir: dir,
        progress: fold,
    })
}
