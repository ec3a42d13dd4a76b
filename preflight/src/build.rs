//! Building the quantum graph: one registry query, then scatter, gather,
//! prerequisites, existing outputs and pruning in memory, then a
//! topological order that keeps each cluster's quanta together.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use foldhash::{HashMap, HashMapExt, HashSet};
use std::time::Instant;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;
use quanta_butler::Butler;
use quanta_core::bundle::DimensionRecords;
use quanta_core::pipeline::{Connection, ConnectionKind, LoadedPipeline, TaskDef};
use quanta_core::{
    BundleHeader, BundleParts, BundleRef, Cluster, ConnectionView, DataId, DataIdValue, DatasetRef,
    DatasetType, DimensionGroup, DimensionUniverse, EncodeViews, QuantaSource, QuantumView,
    ReplacedDataset, Uuid, BUNDLE_FORMAT_VERSION,
};
use quanta_datastore::Datastore;
use quanta_registry::graph_query::{GraphRows, InputTable, PrerequisiteCandidate, NONE};
use quanta_registry::{Binds, FoundDataset, Registry};
use rayon::prelude::*;

use crate::datasets::{DataIds, Datasets, Found};
use crate::error::PreflightError;

/// What to build a graph from and for.
#[derive(Debug, Clone, Default)]
pub struct PreflightOptions {
    /// The input collections, searched in order (CHAINED expanded).
    pub input_collections: Vec<String>,
    /// The RUN the outputs will be written to.
    pub output_run: String,
    /// A CHAINED collection `[output_run, inputs...]` to create or extend.
    pub output_chain: Option<String>,
    /// The `--where` expression ("" for none).
    pub where_clause: String,
    pub binds: Binds,
    /// Leave out quanta whose outputs all exist in the output RUN.
    pub skip_existing: bool,
    /// Allow replacing outputs that exist in the output RUN.
    pub clobber: bool,
    /// Dimensions that group quanta into clusters (batch jobs); `None`: see
    /// [`default_cluster_dimensions`].
    pub cluster_by: Option<Vec<String>>,
    /// Recorded in the bundle header.
    pub command_line: Vec<String>,
}

/// Quanta per task in the graph.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TaskSummary {
    pub label: String,
    /// Quanta in the bundle.
    pub quanta: usize,
    /// Left out because all their outputs exist (`--skip-existing`).
    pub skipped: usize,
    /// Left out because a required input is missing.
    pub pruned: usize,
}

/// A quantum left out of the graph and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PrunedQuantum {
    pub task: String,
    pub data_id: DataId,
    pub reason: String,
}

/// At most this many pruned quanta are listed individually.
pub const MAX_PRUNED_LISTED: usize = 1000;

/// A built graph, ready to be written as a bundle with
/// [`quanta_core::write_bundle_from`]`(path, build.parts(), &build.quanta, ..)`.
#[derive(Debug)]
pub struct GraphBuild {
    pub header: BundleHeader,
    pub pipeline_tasks: Vec<TaskDef>,
    pub dataset_types: Vec<DatasetType>,
    pub dimension_records: DimensionRecords,
    pub clusters: Vec<Cluster>,
    /// The quanta, in bundle order.
    pub quanta: PlannedQuanta,
    pub tasks: Vec<TaskSummary>,
    /// The first [`MAX_PRUNED_LISTED`] pruned quanta.
    pub pruned: Vec<PrunedQuantum>,
    pub n_pruned: usize,
    /// Output dataset types not yet in the registry.
    pub to_register: Vec<DatasetType>,
    /// Seconds per phase.
    pub timings: Vec<(&'static str, f64)>,
}

impl GraphBuild {
    /// Everything of the bundle but its quanta.
    pub fn parts(&self) -> BundleParts<'_> {
        BundleParts {
            header: &self.header,
            tasks: &self.pipeline_tasks,
            dataset_types: &self.dataset_types,
            dimension_records: &self.dimension_records,
            clusters: &self.clusters,
        }
    }
}

/// The quanta of a built graph in bundle order, each referring to its
/// datasets by index into one compact table of all the graph's datasets
/// ([`Datasets`]): a dataset consumed by ten quanta is held once, and the
/// refs of a bundle block are made when that block is written
/// ([`PlannedQuanta::source`]).
#[derive(Debug)]
pub struct PlannedQuanta {
    datasets: Datasets,
    quanta: Vec<Quantum>,
    /// The quanta's datasets (see [`Quantum::links`]).
    links: Vec<u32>,
    shapes: Vec<Shape>,
    /// Connection names per task: (inputs, prerequisites, outputs).
    connections: Vec<[Vec<String>; 3]>,
}

impl PlannedQuanta {
    pub fn len(&self) -> usize {
        self.quanta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.quanta.is_empty()
    }

    /// The quanta as [`quanta_core::write_bundle_from`] reads them; the
    /// paths of predicted outputs come from `datastore`'s templates (the
    /// datastore the graph was built with).
    pub fn source<'a>(&'a self, datastore: &'a Datastore) -> impl QuantaSource + 'a {
        PlannedSource {
            planned: self,
            datastore,
        }
    }

    fn links_of(&self, q: &Quantum) -> Links<'_> {
        q.links(&self.links, &self.shapes[q.task as usize])
    }

    fn upstream(&self, q: &Quantum) -> Vec<u32> {
        q.upstream(
            &self.links,
            &self.shapes[q.task as usize],
            &self.datasets.producer,
        )
    }
}

struct PlannedSource<'a> {
    planned: &'a PlannedQuanta,
    datastore: &'a Datastore,
}

impl QuantaSource for PlannedSource<'_> {
    fn n_quanta(&self) -> usize {
        self.planned.quanta.len()
    }

    /// Makes the refs of the block's datasets (each once), then views
    /// borrowing them.
    fn with_views(
        &self,
        start: usize,
        end: usize,
        f: &mut EncodeViews<'_>,
    ) -> Result<Vec<u8>, String> {
        let p = self.planned;
        let quanta = &p.quanta[start..end];
        let mut local: HashMap<u32, u32> = HashMap::new();
        let mut refs: Vec<BundleRef> = Vec::new();
        let mut data_ids = Vec::with_capacity(quanta.len());
        for q in quanta {
            let links = p.links_of(q);
            for &d in links.consumed.iter().chain(links.outputs) {
                if let std::collections::hash_map::Entry::Vacant(e) = local.entry(d) {
                    e.insert(refs.len() as u32);
                    refs.push(p.datasets.bundle_ref(d, self.datastore)?);
                }
            }
            data_ids.push(p.datasets.data_ids.get(q.data_id));
        }
        let by_index = |d: &u32| &refs[local[d] as usize];
        let views: Vec<QuantumView<'_>> = quanta
            .iter()
            .zip(&data_ids)
            .map(|(q, data_id)| {
                let [inputs, prerequisites, outputs] = &p.connections[q.task as usize];
                let links = p.links_of(q);
                let (input_sets, prereq_sets) = links.sets.split_at(inputs.len());
                QuantumView {
                    id: q.id,
                    task: q.task,
                    data_id,
                    inputs: connection_views(inputs, input_sets, &by_index),
                    prerequisites: connection_views(prerequisites, prereq_sets, &by_index),
                    outputs: outputs
                        .iter()
                        .zip(links.outputs)
                        .map(|(n, d)| (n.as_str(), vec![by_index(d)]))
                        .collect(),
                    upstream: p.upstream(q),
                }
            })
            .collect();
        f(&views)
    }

    fn n_refs(&self, index: usize) -> usize {
        let p = self.planned;
        let links = p.links_of(&p.quanta[index]);
        links.consumed.len() + links.outputs.len()
    }
}

fn connection_views<'a>(
    names: &'a [String],
    sets: &[&[u32]],
    by_index: &impl Fn(&u32) -> &'a BundleRef,
) -> Vec<ConnectionView<'a>> {
    names
        .iter()
        .zip(sets)
        .map(|(n, ds)| (n.as_str(), ds.iter().map(by_index).collect()))
        .collect()
}

/// Default clustering: the dimensions every task shares, the intersection
/// of their dimension groups (e.g. `{instrument, exposure}` for
/// isr/characterize/summarize: one cluster per exposure; `{skymap, tract,
/// patch}` for makeWarp/assembleCoadd: a patch's warps with its coadds). An
/// intersection of only root dimensions (`instrument`, `skymap`: those that
/// require nothing) would make the whole graph one cluster, so then every
/// quantum is its own cluster (empty result).
pub fn default_cluster_dimensions(tasks: &[TaskDef], universe: &DimensionUniverse) -> Vec<String> {
    let groups: Vec<DimensionGroup> = tasks
        .iter()
        .filter_map(|t| universe.conform(&t.dimensions).ok())
        .collect();
    let Some((first, rest)) = groups.split_first() else {
        return Vec::new();
    };
    // Groups are closed under `requires`, so their intersection is too.
    let shared: Vec<String> = first
        .iter()
        .filter(|d| rest.iter().all(|g| g.contains(d)))
        .map(String::from)
        .collect();
    let below_roots = shared.iter().any(|d| {
        universe
            .element(d)
            .is_some_and(|e| !e.required_closure.is_empty())
    });
    if below_roots {
        shared
    } else {
        Vec::new()
    }
}

enum Source {
    /// Index into the graph rows' input types.
    Overall(usize),
    Produced,
}

/// Moves the rows' overall inputs into `datasets` (each registry row is
/// dropped as soon as it is copied in), reserving at once for every dataset
/// of the graph: the overall inputs and at most one quantum per row per task.
/// Returns, per input type, the table index of each of the rows' datasets.
fn take_overall_inputs(
    datasets: &mut Datasets,
    rows: &mut GraphRows,
    tasks: &[TaskDef],
) -> Result<Vec<Vec<u32>>, PreflightError> {
    let inputs = std::mem::take(&mut rows.inputs);
    let outputs_bound: usize = tasks
        .iter()
        .map(|t| t.outputs.len().saturating_mul(rows.n_rows()))
        .fold(0, usize::saturating_add);
    datasets.try_reserve_exact(
        inputs
            .iter()
            .map(InputTable::len)
            .sum::<usize>()
            .saturating_add(outputs_bound),
    );
    inputs
        .into_iter()
        .zip(&rows.input_types)
        .map(|(table, dataset_type)| datasets.push_inputs(rows, dataset_type, table))
        .collect()
}

struct Draft {
    /// A row of the quantum (all rows of a quantum agree on its dimensions
    /// and on everything they imply).
    row: u32,
    inputs: Vec<Vec<u32>>,
}

enum Outcome<'a> {
    Pruned(String),
    /// All outputs exist (the existing datasets, per output).
    Skip(Vec<&'a FoundDataset>),
    Run(RunOutcome),
}

/// A quantum that runs.
struct RunOutcome {
    prerequisites: Vec<Vec<u32>>,
    /// The UUIDs of its outputs (their data IDs are the row's values in the
    /// outputs' columns, their paths rendered again when written).
    outputs: Vec<Uuid>,
    /// The outputs that already exist (replaced under `--clobber`).
    existing: Vec<String>,
    /// The registered datasets those outputs replace: (output index, UUID,
    /// path).
    replaces: Vec<(usize, Uuid, String)>,
    missing_example: Option<String>,
}

/// A quantum of the graph: 40 bytes, its datasets a span of the graph's
/// `links` (see [`Quantum::links`]).
#[derive(Debug)]
struct Quantum {
    id: Uuid,
    task: u32,
    /// Offset into the data ID table.
    data_id: u32,
    row: u32,
    /// Index in bundle order, once ordered.
    position: u32,
    /// Offset of its span in `links`.
    links: u64,
}

/// The number of connections of a task, by kind.
#[derive(Debug, Clone, Copy)]
struct Shape {
    inputs: usize,
    prerequisites: usize,
    outputs: usize,
}

impl Shape {
    fn of(task: &TaskDef) -> Self {
        Self {
            inputs: task.inputs.len(),
            prerequisites: task.prerequisites.len(),
            outputs: task.outputs.len(),
        }
    }
}

/// A quantum's datasets (table indices).
struct Links<'a> {
    /// Per input connection, then per prerequisite connection.
    sets: Vec<&'a [u32]>,
    /// Every input and prerequisite, connection after connection.
    consumed: &'a [u32],
    /// One per output connection.
    outputs: &'a [u32],
}

/// Appends a quantum's span to `links` and returns its offset.
fn push_links(links: &mut Vec<u32>, sets: &[Vec<u32>], outputs: &[u32]) -> u64 {
    let at = links.len() as u64;
    links.extend(sets.iter().map(|s| s.len() as u32));
    for set in sets {
        links.extend_from_slice(set);
    }
    links.extend_from_slice(outputs);
    at
}

impl Quantum {
    /// The span: the size of each input and prerequisite connection's set,
    /// then those sets' dataset indices, then one per output.
    fn links<'a>(&self, links: &'a [u32], shape: &Shape) -> Links<'a> {
        let start = self.links as usize;
        let n_sets = shape.inputs + shape.prerequisites;
        let counts = &links[start..start + n_sets];
        let mut at = start + n_sets;
        let mut sets = Vec::with_capacity(n_sets);
        for &k in counts {
            sets.push(&links[at..at + k as usize]);
            at += k as usize;
        }
        Links {
            sets,
            consumed: &links[start + n_sets..at],
            outputs: &links[at..at + shape.outputs],
        }
    }

    /// The quanta producing this one's inputs and prerequisites, sorted and
    /// distinct, numbered as `producer` numbers them.
    fn upstream(&self, links: &[u32], shape: &Shape, producer: &[u32]) -> Vec<u32> {
        let mut upstream: Vec<u32> = self
            .links(links, shape)
            .consumed
            .iter()
            .map(|&d| producer[d as usize])
            .filter(|&p| p != NONE)
            .collect();
        upstream.sort_unstable();
        upstream.dedup();
        upstream
    }
}

/// Builds the graph (reading the registry only). Registration of output
/// dataset types and collections is left to [`crate::register_outputs`].
pub fn build_graph(
    butler: &Butler,
    pipeline: &LoadedPipeline,
    opts: &PreflightOptions,
    progress: &dyn Fn(&str),
) -> Result<GraphBuild, PreflightError> {
    let registry = butler.registry();
    let universe = registry.universe();
    let tasks = &pipeline.pipeline.tasks;
    let mut clock = PhaseClock::start();

    let to_register = check_dataset_types(registry, pipeline)?;
    let (mut rows, union) = query_rows(registry, pipeline, opts, progress)?;
    clock.lap("query");

    let mut datasets = Datasets::new(DataIds::for_rows(&rows));
    let overall = take_overall_inputs(&mut datasets, &mut rows, tasks)?;
    let lookups = Lookups {
        prereqs: load_prerequisites(registry, pipeline, &opts.input_collections, &mut datasets)?,
        times: ObservationTimes::load(registry, tasks)?,
        existing: existing_outputs(registry, pipeline, &opts.output_run)?,
    };
    clock.lap("lookups");

    let mut graph = GraphState::default();
    // At most one quantum per row per task; reserved at once like the
    // dataset table (no copies while growing, the unused part never touched).
    let _ = graph
        .quanta
        .try_reserve_exact(rows.n_rows().saturating_mul(tasks.len()));
    for (t_ix, task) in tasks.iter().enumerate() {
        progress(&format!(
            "task {} ({}/{})",
            task.label,
            t_ix + 1,
            tasks.len()
        ));
        let plan = TaskPlan::new(universe, task, &rows)?;
        let drafts = plan.scatter_gather(&rows, &overall, &graph.produced)?;
        graph.add_task(
            t_ix,
            &plan,
            &rows,
            &lookups,
            butler,
            opts,
            drafts,
            &mut datasets,
        )?;
    }
    drop(overall);
    drop(lookups);
    graph.refuse_existing_outputs(opts)?;
    refuse_replacing_used_datasets(registry, &opts.output_run, &graph.replaced)?;
    graph.replaced.sort_unstable_by_key(|r| r.by);
    clock.lap("scatter/gather");
    graph.refuse_empty(opts)?;

    progress(&format!("ordering {} quanta", graph.quanta.len()));
    let cluster_dims = match &opts.cluster_by {
        Some(d) => universe.conform(d)?.names,
        None => default_cluster_dimensions(tasks, universe),
    };
    let GraphState {
        produced,
        quanta,
        links,
        summaries,
        pruned,
        n_pruned,
        replaced,
        ..
    } = graph;
    // The index of predicted outputs is only for building.
    drop(produced);
    let planned = PlannedQuanta {
        datasets,
        quanta,
        links,
        shapes: tasks.iter().map(Shape::of).collect(),
        connections: tasks
            .iter()
            .map(|t| {
                let names = |c: &[Connection]| -> Vec<String> {
                    c.iter().map(|c| c.name.clone()).collect()
                };
                [names(&t.inputs), names(&t.prerequisites), names(&t.outputs)]
            })
            .collect(),
    };
    let (order, clusters) = order_and_cluster(&planned, &rows, tasks, universe, &cluster_dims)?;
    clock.lap("order");

    progress("assembling the bundle");
    let (planned, clusters) = into_bundle_order(planned, &order, clusters);
    let dimension_records = used_records(registry, &rows, &union)?;
    let header = bundle_header(butler, pipeline, opts, planned.len(), replaced)?;
    clock.lap("assemble");
    Ok(GraphBuild {
        header,
        pipeline_tasks: tasks.clone(),
        dataset_types: bundle_dataset_types(registry, pipeline)?,
        dimension_records,
        clusters,
        quanta: planned,
        tasks: summaries,
        pruned,
        n_pruned,
        to_register,
        timings: clock.timings,
    })
}

/// Seconds per phase of the build.
struct PhaseClock {
    started: Instant,
    timings: Vec<(&'static str, f64)>,
}

impl PhaseClock {
    fn start() -> Self {
        Self {
            started: Instant::now(),
            timings: Vec::new(),
        }
    }

    fn lap(&mut self, name: &'static str) {
        self.timings
            .push((name, self.started.elapsed().as_secs_f64()));
        self.started = Instant::now();
    }
}

/// The query phase: the rows of every task's and connection's dimensions
/// with the overall inputs found for them; an empty result is an error.
fn query_rows(
    registry: &Registry,
    pipeline: &LoadedPipeline,
    opts: &PreflightOptions,
    progress: &dyn Fn(&str),
) -> Result<(GraphRows, DimensionGroup), PreflightError> {
    let universe = registry.universe();
    for c in &opts.input_collections {
        registry.collection(c)?;
    }
    let overall: Vec<String> = pipeline
        .pipeline
        .overall_inputs()
        .into_iter()
        .map(String::from)
        .collect();
    // The query's dimensions: every task's and every connection's.
    let mut all_dims: Vec<String> = Vec::new();
    for t in &pipeline.pipeline.tasks {
        all_dims.extend(t.dimensions.iter().cloned());
        for (_, c) in t.connections() {
            all_dims.extend(c.dimensions.iter().cloned());
        }
    }
    let union = universe.conform(&all_dims)?;
    progress(&format!("querying the registry over {union}"));
    let rows = registry.query_graph_rows(
        &union,
        &opts.where_clause,
        &opts.binds,
        &overall,
        &opts.input_collections,
    )?;
    if rows.n_rows() == 0 {
        return Err(PreflightError::EmptyGraph(format!(
            "no data IDs over {union} match the --where expression with {} in collections {:?}",
            if overall.is_empty() {
                "no inputs".to_string()
            } else {
                overall.join(", ")
            },
            opts.input_collections
        )));
    }
    Ok((rows, union))
}

/// What the per-quantum work looks datasets up in.
struct Lookups {
    prereqs: PrereqIndex,
    times: ObservationTimes,
    existing: ExistingOutputs,
}

/// One task's view of the rows: the columns of its dimensions and of each
/// input connection's, and where each input comes from.
struct TaskPlan<'a> {
    universe: &'a DimensionUniverse,
    task: &'a TaskDef,
    group: DimensionGroup,
    cols: Vec<usize>,
    sources: Vec<Source>,
    input_cols: Vec<Vec<usize>>,
    output_groups: Vec<DimensionGroup>,
    output_cols: Vec<Vec<usize>>,
    prereq_groups: Vec<DimensionGroup>,
    /// The task's dimensions with everything they imply, by column.
    closure_cols: Vec<(String, usize)>,
}

impl<'a> TaskPlan<'a> {
    fn new(
        universe: &'a DimensionUniverse,
        task: &'a TaskDef,
        rows: &GraphRows,
    ) -> Result<Self, PreflightError> {
        let group = universe.conform(&task.dimensions)?;
        let groups_of = |cs: &[quanta_core::pipeline::Connection]| {
            cs.iter()
                .map(|c| universe.conform(&c.dimensions))
                .collect::<Result<Vec<_>, _>>()
        };
        let output_groups = groups_of(&task.outputs)?;
        let input_cols = groups_of(&task.inputs)?
            .iter()
            .map(|g| columns_of(rows, g))
            .collect::<Result<_, _>>()?;
        let output_cols = output_groups
            .iter()
            .map(|g| columns_of(rows, g))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            universe,
            task,
            cols: columns_of(rows, &group)?,
            sources: task
                .inputs
                .iter()
                .map(|c| {
                    match rows
                        .input_types
                        .iter()
                        .position(|o| o == c.parent_dataset_type())
                    {
                        Some(k) => Source::Overall(k),
                        None => Source::Produced,
                    }
                })
                .collect(),
            input_cols,
            output_groups,
            output_cols,
            prereq_groups: groups_of(&task.prerequisites)?,
            closure_cols: universe
                .implied_closure(&group)
                .into_iter()
                .filter_map(|d| rows.column(&d).map(|c| (d, c)))
                .collect(),
            group,
        })
    }

    /// Scatter: one draft per distinct projection of the rows on the task's
    /// dimensions; gather: each input connection collects the datasets of
    /// all its rows. Drafts come back sorted by data ID.
    fn scatter_gather(
        &self,
        rows: &GraphRows,
        overall: &[Vec<u32>],
        produced: &Produced,
    ) -> Result<Vec<Draft>, PreflightError> {
        let task = self.task;
        let mut index: HashMap<Vec<u32>, u32> = HashMap::new();
        let mut drafts: Vec<Draft> = Vec::new();
        let mut key = Vec::with_capacity(self.cols.len());
        for r in 0..rows.n_rows() {
            let row = rows.row(r);
            key.clear();
            key.extend(self.cols.iter().map(|&c| row[c]));
            let q = match index.get(&key) {
                Some(&q) => q as usize,
                None => {
                    index.insert(key.clone(), drafts.len() as u32);
                    drafts.push(Draft {
                        row: r as u32,
                        inputs: vec![Vec::new(); task.inputs.len()],
                    });
                    drafts.len() - 1
                }
            };
            for (ci, c) in task.inputs.iter().enumerate() {
                let found = match self.sources[ci] {
                    Source::Overall(k) => {
                        let ix = rows.row_inputs(r)[k];
                        (ix != NONE).then(|| overall[k][ix as usize])
                    }
                    Source::Produced => {
                        produced.get(rows, c.parent_dataset_type(), &self.input_cols[ci], row)
                    }
                };
                if let Some(d) = found {
                    drafts[q].inputs[ci].push(d);
                }
            }
        }
        drop(index);
        // Deterministic quantum order within a task: by data ID.
        drafts.par_sort_by(|a, b| compare_rows(rows, &self.cols, a.row, b.row));
        Ok(drafts)
    }
}

/// Predicted outputs by dataset type and row key (the rows' value indices
/// in the output's columns): how a later task's input finds the quantum that
/// produces it.
#[derive(Default)]
struct Produced {
    by_type: HashMap<String, Vec<ProducedIndex>>,
}

/// The outputs of one dataset type over one list of columns. A key is
/// packed into a `u64` (each column's value index in as many bits as its
/// dictionary needs) whenever it fits: a 16-byte map slot instead of a
/// vector per output (~50 bytes per output at a million quanta). Keys
/// that do not fit, or hold a NULL, are kept as vectors; the same columns
/// and values always take the same form, so lookups agree with inserts.
struct ProducedIndex {
    cols: Vec<usize>,
    packed: HashMap<u64, u32>,
    wide: HashMap<Vec<u32>, u32>,
}

enum RowKey {
    Packed(u64),
    Wide(Vec<u32>),
}

fn row_key(rows: &GraphRows, cols: &[usize], row: &[u32]) -> RowKey {
    let mut key = 0u64;
    let mut shift = 0u32;
    for &c in cols {
        let bits = u64::BITS - (rows.dictionary[c].len() as u64).leading_zeros();
        let v = row[c];
        if v == NONE || shift + bits > u64::BITS {
            return RowKey::Wide(cols.iter().map(|&c| row[c]).collect());
        }
        key |= u64::from(v) << shift;
        shift += bits;
    }
    RowKey::Packed(key)
}

impl Produced {
    fn insert(
        &mut self,
        rows: &GraphRows,
        dataset_type: &str,
        cols: &[usize],
        row: &[u32],
        d: u32,
    ) {
        if !self.by_type.contains_key(dataset_type) {
            self.by_type.insert(dataset_type.to_string(), Vec::new());
        }
        let indexes = self.by_type.get_mut(dataset_type).expect("inserted above");
        let index = match indexes.iter().position(|i| i.cols == cols) {
            Some(i) => &mut indexes[i],
            None => {
                indexes.push(ProducedIndex {
                    cols: cols.to_vec(),
                    packed: HashMap::new(),
                    wide: HashMap::new(),
                });
                indexes.last_mut().expect("pushed above")
            }
        };
        match row_key(rows, cols, row) {
            RowKey::Packed(k) => index.packed.insert(k, d),
            RowKey::Wide(k) => index.wide.insert(k, d),
        };
    }

    fn get(
        &self,
        rows: &GraphRows,
        dataset_type: &str,
        cols: &[usize],
        row: &[u32],
    ) -> Option<u32> {
        let index = self
            .by_type
            .get(dataset_type)?
            .iter()
            .find(|i| i.cols == cols)?;
        match row_key(rows, cols, row) {
            RowKey::Packed(k) => index.packed.get(&k).copied(),
            RowKey::Wide(k) => index.wide.get(&k).copied(),
        }
    }
}

/// Where a task's quanta and outputs go in the tables: name indices and
/// data-ID key groups, looked up once per task.
struct TaskKeys {
    /// The task's index in the pipeline.
    task: u32,
    /// The key group of the task's dimensions.
    group: u32,
    /// The output RUN.
    run: u32,
    outputs: Vec<OutputKeys>,
}

struct OutputKeys {
    dataset_type: u32,
    storage_class: u32,
    /// The key group of its dimensions; `None` when they are the task's.
    group: Option<u32>,
}

impl TaskKeys {
    fn new(
        t_ix: usize,
        plan: &TaskPlan<'_>,
        opts: &PreflightOptions,
        datasets: &mut Datasets,
    ) -> Self {
        fn names(g: &DimensionGroup) -> impl Iterator<Item = &str> {
            g.names.iter().map(String::as_str)
        }
        Self {
            task: t_ix as u32,
            group: datasets.data_ids.group(|| names(&plan.group)),
            run: datasets.names.intern(&opts.output_run),
            outputs: plan
                .task
                .outputs
                .iter()
                .zip(&plan.output_groups)
                .map(|(c, g)| OutputKeys {
                    dataset_type: datasets.names.intern(&c.dataset_type),
                    storage_class: datasets.names.intern(&c.storage_class),
                    group: (g.names != plan.group.names)
                        .then(|| datasets.data_ids.group(|| names(g))),
                })
                .collect(),
        }
    }
}

/// A quantum that runs, as [`GraphState::add_quantum`] adds it.
struct NewQuantum<'a> {
    task: u32,
    plan: &'a TaskPlan<'a>,
    keys: &'a TaskKeys,
    rows: &'a GraphRows,
    draft: Draft,
}

/// Drafts resolved in parallel at a time.
const RESOLVE_CHUNK: usize = 65_536;

/// The graph as tasks are added to it.
#[derive(Default)]
struct GraphState {
    produced: Produced,
    quanta: Vec<Quantum>,
    /// The quanta's datasets (see [`Quantum::links`]).
    links: Vec<u32>,
    summaries: Vec<TaskSummary>,
    pruned: Vec<PrunedQuantum>,
    n_pruned: usize,
    n_existing: usize,
    existing_example: Option<String>,
    replaced: Vec<ReplacedDataset>,
}

impl GraphState {
    /// Resolves a task's drafts in parallel (pruning checks, prerequisites,
    /// existing outputs, new output refs) and adds what they become: quanta,
    /// skipped quanta's existing outputs, pruned quanta.
    #[allow(clippy::too_many_arguments)]
    fn add_task(
        &mut self,
        t_ix: usize,
        plan: &TaskPlan<'_>,
        rows: &GraphRows,
        lookups: &Lookups,
        butler: &Butler,
        opts: &PreflightOptions,
        drafts: Vec<Draft>,
        datasets: &mut Datasets,
    ) -> Result<(), PreflightError> {
        let task = plan.task;
        let keys = TaskKeys::new(t_ix, plan, opts, datasets);
        let ctx = TaskContext {
            universe: plan.universe,
            task,
            rows,
            closure_cols: &plan.closure_cols,
            output_groups: &plan.output_groups,
            prereq_groups: &plan.prereq_groups,
            prereqs: &lookups.prereqs,
            times: &lookups.times,
            existing: &lookups.existing,
            opts,
            datastore: butler.datastore(),
        };
        let mut summary = TaskSummary {
            label: task.label.clone(),
            quanta: 0,
            skipped: 0,
            pruned: 0,
        };
        let mut drafts = drafts;
        // Resolved a chunk at a time: the outcomes of all a task's drafts at
        // once were a tenth of a million-quantum build's peak.
        for chunk in drafts.chunks_mut(RESOLVE_CHUNK) {
            let outcomes: Vec<Outcome> = chunk
                .par_iter_mut()
                .map(|d| ctx.resolve(d))
                .collect::<Result<_, PreflightError>>()?;
            for (d, outcome) in chunk.iter_mut().zip(outcomes) {
                let draft = Draft {
                    row: d.row,
                    inputs: std::mem::take(&mut d.inputs),
                };
                self.add_outcome(
                    plan,
                    &keys,
                    rows,
                    opts,
                    draft,
                    outcome,
                    datasets,
                    &mut summary,
                )?;
            }
        }
        self.summaries.push(summary);
        Ok(())
    }

    /// Adds what a resolved draft became.
    #[allow(clippy::too_many_arguments)]
    fn add_outcome(
        &mut self,
        plan: &TaskPlan<'_>,
        keys: &TaskKeys,
        rows: &GraphRows,
        opts: &PreflightOptions,
        draft: Draft,
        outcome: Outcome<'_>,
        datasets: &mut Datasets,
        summary: &mut TaskSummary,
    ) -> Result<(), PreflightError> {
        let task = plan.task;
        {
            let row = rows.row(draft.row as usize);
            let register = |produced: &mut Produced, oi: usize, d: u32| {
                let dataset_type = &task.outputs[oi].dataset_type;
                produced.insert(rows, dataset_type, &plan.output_cols[oi], row, d);
            };
            match outcome {
                Outcome::Pruned(reason) => {
                    summary.pruned += 1;
                    self.n_pruned += 1;
                    if self.pruned.len() < MAX_PRUNED_LISTED {
                        self.pruned.push(PrunedQuantum {
                            task: task.label.clone(),
                            data_id: quantum_data_id(rows, &plan.group, &plan.cols, draft.row),
                            reason,
                        });
                    }
                }
                Outcome::Skip(found) => {
                    summary.skipped += 1;
                    for (oi, f) in found.into_iter().enumerate() {
                        let d = datasets.push_found(Found::of_found(f), NONE)?;
                        register(&mut self.produced, oi, d);
                    }
                }
                Outcome::Run(run) => {
                    summary.quanta += 1;
                    let quantum = NewQuantum {
                        task: keys.task,
                        plan,
                        keys,
                        rows,
                        draft,
                    };
                    self.add_quantum(quantum, opts, run, datasets, register)?;
                }
            }
        }
        Ok(())
    }

    /// A quantum that runs: its outputs join the dataset table (and
    /// `produced`), the outputs it replaces are noted.
    fn add_quantum(
        &mut self,
        new: NewQuantum<'_>,
        opts: &PreflightOptions,
        run: RunOutcome,
        datasets: &mut Datasets,
        register: impl Fn(&mut Produced, usize, u32),
    ) -> Result<(), PreflightError> {
        let RunOutcome {
            prerequisites,
            outputs,
            existing,
            replaces,
            missing_example,
        } = run;
        let NewQuantum {
            task,
            plan,
            keys,
            rows,
            draft,
        } = new;
        if !existing.is_empty() {
            if opts.skip_existing && !opts.clobber {
                return Err(PreflightError::PartialOutputs {
                    task: plan.task.label.clone(),
                    data_id: quantum_data_id(rows, &plan.group, &plan.cols, draft.row).to_string(),
                    run: opts.output_run.clone(),
                    existing: existing[0].clone(),
                    missing: missing_example.unwrap_or_default(),
                });
            }
            self.n_existing += existing.len();
            if self.existing_example.is_none() {
                self.existing_example = Some(existing[0].clone());
            }
            self.replaced
                .extend(replaces.into_iter().map(|(oi, id, path)| ReplacedDataset {
                    by: outputs[oi],
                    id,
                    path,
                }));
        }
        let q = self.quanta.len() as u32;
        let row = rows.row(draft.row as usize);
        let data_id = datasets.data_ids.push_row(keys.group, row, &plan.cols)?;
        let mut out_ix = Vec::with_capacity(outputs.len());
        for (oi, id) in outputs.into_iter().enumerate() {
            let o = &keys.outputs[oi];
            // An output with the task's dimensions has the quantum's data ID.
            let output_data_id = match o.group {
                None => data_id,
                Some(g) => datasets.data_ids.push_row(g, row, &plan.output_cols[oi])?,
            };
            let d = datasets.push_predicted(
                id,
                o.dataset_type,
                keys.run,
                output_data_id,
                o.storage_class,
                q,
            )?;
            register(&mut self.produced, oi, d);
            out_ix.push(d);
        }
        let mut sets = draft.inputs;
        sets.extend(prerequisites);
        let links = push_links(&mut self.links, &sets, &out_ix);
        self.quanta.push(Quantum {
            id: new_v7(),
            task,
            data_id,
            row: draft.row,
            position: 0,
            links,
        });
        Ok(())
    }

    /// Outputs that exist in the output RUN are an error without `--clobber`.
    fn refuse_existing_outputs(&self, opts: &PreflightOptions) -> Result<(), PreflightError> {
        if self.n_existing > 0 && !opts.clobber {
            return Err(PreflightError::ExistingOutputs {
                run: opts.output_run.clone(),
                count: self.n_existing,
                example: self.existing_example.clone().unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// A graph without quanta is an error saying why.
    fn refuse_empty(&self, opts: &PreflightOptions) -> Result<(), PreflightError> {
        if !self.quanta.is_empty() {
            return Ok(());
        }
        let skipped: usize = self.summaries.iter().map(|s| s.skipped).sum();
        Err(PreflightError::EmptyGraph(
            if skipped > 0 && self.n_pruned == 0 {
                format!(
                    "all {skipped} quanta were skipped: their outputs exist in `{}`",
                    opts.output_run
                )
            } else {
                format!(
                    "{} quanta were pruned for missing inputs{}",
                    self.n_pruned,
                    self.pruned
                        .first()
                        .map(|p| format!(", e.g. {} {}: {}", p.task, p.data_id, p.reason))
                        .unwrap_or_default()
                )
            },
        ))
    }
}

/// Puts the quanta in bundle order (in place: a second vector of a million
/// quanta would be the largest allocation of the build), renumbers the
/// producers and the clusters' members to match.
fn into_bundle_order(
    mut planned: PlannedQuanta,
    order: &[u32],
    clusters: Vec<NamedCluster>,
) -> (PlannedQuanta, Vec<Cluster>) {
    let mut new_index = vec![0u32; planned.quanta.len()];
    for (new, &old) in order.iter().enumerate() {
        new_index[old as usize] = new as u32;
    }
    for (q, &position) in planned.quanta.iter_mut().zip(&new_index) {
        q.position = position;
    }
    planned.quanta.par_sort_unstable_by_key(|q| q.position);
    planned.datasets.renumber_producers(&new_index);
    let clusters = clusters
        .into_iter()
        .map(|(name, members)| {
            let mut quanta: Vec<u32> = members.iter().map(|&q| new_index[q as usize]).collect();
            quanta.sort_unstable();
            Cluster { name, quanta }
        })
        .collect();
    (planned, clusters)
}

/// The pipeline's dataset types, and the parents of component inputs,
/// which workers read the files of.
fn bundle_dataset_types(
    registry: &Registry,
    pipeline: &LoadedPipeline,
) -> Result<Vec<DatasetType>, PreflightError> {
    let mut dataset_types: Vec<DatasetType> = pipeline
        .dataset_types(registry.universe())
        .into_iter()
        .map(|(dt, ..)| dt)
        .collect();
    for task in &pipeline.pipeline.tasks {
        for c in task.inputs.iter().filter(|c| c.component().is_some()) {
            let parent = c.parent_dataset_type();
            if !dataset_types.iter().any(|d| d.name == parent) {
                if let Some(dt) = registry.dataset_type(parent)? {
                    dataset_types.push(dt);
                }
            }
        }
    }
    Ok(dataset_types)
}

/// The bundle's header: what was asked, by whom, with which software.
fn bundle_header(
    butler: &Butler,
    pipeline: &LoadedPipeline,
    opts: &PreflightOptions,
    n_quanta: usize,
    replaced: Vec<ReplacedDataset>,
) -> Result<BundleHeader, PreflightError> {
    let registry = butler.registry();
    let datastore = butler.datastore();
    Ok(BundleHeader {
        format_version: BUNDLE_FORMAT_VERSION,
        bundle_id: Uuid::new_v4(),
        universe_digest: registry.universe().digest(),
        pipeline_digest: pipeline.pipeline.digest(),
        pipeline_yaml: pipeline.source.clone(),
        input_collections: opts.input_collections.clone(),
        output_run: opts.output_run.clone(),
        output_chain: opts.output_chain.clone(),
        datastore_root: datastore.root().display().to_string(),
        datastore_config: serde_json::to_string(datastore.config())
            .map_err(|e| PreflightError::Invalid(format!("datastore configuration: {e}")))?,
        clobber: opts.clobber,
        skip_existing: opts.skip_existing,
        created_at: quanta_core::now_rfc3339(),
        created_by: created_by(),
        quanta_version: env!("CARGO_PKG_VERSION").to_string(),
        command_line: opts.command_line.clone(),
        n_quanta: n_quanta as u64,
        where_clause: opts.where_clause.clone(),
        repository_id: registry.repository_id()?.ok_or_else(|| {
            PreflightError::Invalid(
                "the registry has no repository_id yet; open it for writing once (any preflight or merge does)".into(),
            )
        })?,
        replaced,
    })
}

/// Compares the pipeline's dataset types with the registry's: a conflict is
/// an error at the line of the connection; an unregistered input is an
/// error; unregistered outputs are returned (to register).
pub fn check_dataset_types(
    registry: &Registry,
    pipeline: &LoadedPipeline,
) -> Result<Vec<DatasetType>, PreflightError> {
    let universe = registry.universe();
    let produced = pipeline.pipeline.produced();
    let mut to_register = Vec::new();
    let defined = pipeline.dataset_types(universe);
    for (dt, task, kind, conn) in &defined {
        if conn.component().is_some() {
            check_component(registry, pipeline, &defined, dt, task, *kind, conn)?;
        }
    }
    for (dt, task, kind, conn) in defined {
        if conn.component().is_some() {
            continue;
        }
        match registry.dataset_type(&dt.name)? {
            Some(existing) if existing != dt => {
                return Err(pipeline
                    .connection_error(
                        task,
                        kind,
                        conn,
                        format!(
                            "dataset type `{}` is {dt} here but the registry has {existing}",
                            dt.name
                        ),
                    )
                    .into());
            }
            Some(_) => {}
            None if produced.contains(dt.name.as_str()) => to_register.push(dt),
            None => {
                return Err(pipeline
                    .connection_error(
                        task,
                        kind,
                        conn,
                        format!(
                        "dataset type `{}` is not registered in the repo and no task produces it",
                        dt.name
                    ),
                    )
                    .into())
            }
        }
    }
    Ok(to_register)
}

/// A component input (`calexp.wcs`): its parent must be registered or
/// produced by the pipeline, with the connection's dimensions, and its
/// storage class must have that component, of the connection's storage
/// class.
fn check_component(
    registry: &Registry,
    pipeline: &LoadedPipeline,
    defined: &[(DatasetType, &TaskDef, ConnectionKind, &Connection)],
    dt: &DatasetType,
    task: &TaskDef,
    kind: ConnectionKind,
    conn: &Connection,
) -> Result<(), PreflightError> {
    let err =
        |msg: String| -> PreflightError { pipeline.connection_error(task, kind, conn, msg).into() };
    let parent_name = conn.parent_dataset_type();
    let component = conn.component().unwrap_or_default();
    let parent = match registry.dataset_type(parent_name)? {
        Some(p) => p,
        None => match defined.iter().find(|(d, ..)| d.name == parent_name) {
            Some((p, ..)) => p.clone(),
            None => {
                return Err(err(format!(
                    "`{}` is a component of `{parent_name}`, which is not registered in the repo and no task produces it",
                    dt.name
                )))
            }
        },
    };
    let class = quanta_core::StorageClasses::builtin()
        .component_class(&parent.storage_class, component)
        .map_err(|e| err(format!("`{}`: {e}", dt.name)))?;
    if class != dt.storage_class {
        return Err(err(format!(
            "component `{}` has storage class {class}, not {}",
            dt.name, dt.storage_class
        )));
    }
    if parent.dimensions != dt.dimensions {
        return Err(err(format!(
            "component `{}` has the dimensions of `{parent_name}`, {}, not {}",
            dt.name, parent.dimensions, dt.dimensions
        )));
    }
    Ok(())
}

fn columns_of(rows: &GraphRows, group: &DimensionGroup) -> Result<Vec<usize>, PreflightError> {
    group
        .iter()
        .map(|d| {
            rows.column(d).ok_or_else(|| {
                PreflightError::Invalid(format!("dimension `{d}` is missing from the graph query"))
            })
        })
        .collect()
}

fn compare_rows(rows: &GraphRows, cols: &[usize], a: u32, b: u32) -> std::cmp::Ordering {
    let (ra, rb) = (rows.row(a as usize), rows.row(b as usize));
    for &c in cols {
        let o = rows.value(c, ra[c]).cmp(&rows.value(c, rb[c]));
        if o.is_ne() {
            return o;
        }
    }
    std::cmp::Ordering::Equal
}

/// The data ID over `group` of row `r` (`None` for a NULL implied value).
fn row_data_id(rows: &GraphRows, names: &[(String, usize)], r: u32) -> Option<DataId> {
    let row = rows.row(r as usize);
    let mut d = DataId::empty();
    for (name, c) in names {
        // An implied dimension a record leaves NULL (a visit without a
        // day_obs) is absent, not a reason to lose the required ones.
        if row[*c] != NONE {
            d.insert(name.clone(), rows.value(*c, row[*c])?.clone());
        }
    }
    Some(d)
}

fn quantum_data_id(rows: &GraphRows, group: &DimensionGroup, cols: &[usize], r: u32) -> DataId {
    let names: Vec<(String, usize)> = group
        .names
        .iter()
        .cloned()
        .zip(cols.iter().copied())
        .collect();
    // Task dimensions are required dimensions: never NULL.
    row_data_id(rows, &names, r).unwrap_or_default()
}

/// Candidates of each prerequisite dataset type, by data ID, best rank
/// first: their validity ranges (calibrations) and dataset table indices.
type PrereqIndex = HashMap<String, HashMap<DataId, Vec<(Option<(f64, f64)>, u32)>>>;

fn load_prerequisites(
    registry: &Registry,
    pipeline: &LoadedPipeline,
    collections: &[String],
    datasets: &mut Datasets,
) -> Result<PrereqIndex, PreflightError> {
    let mut out: PrereqIndex = HashMap::new();
    for task in &pipeline.pipeline.tasks {
        for c in &task.prerequisites {
            if out.contains_key(&c.dataset_type) {
                continue;
            }
            let mut by_id: HashMap<DataId, Vec<(PrerequisiteCandidate, u32)>> = HashMap::new();
            for cand in registry.query_prerequisite_candidates(&c.dataset_type, collections)? {
                let ix = datasets.push_found(Found::of_input(&cand.dataset), NONE)?;
                by_id
                    .entry(cand.dataset.data_id.clone())
                    .or_default()
                    .push((cand, ix));
            }
            let by_id = by_id
                .into_iter()
                .map(|(data_id, mut v)| {
                    v.sort_by_key(|(c, _)| c.rank);
                    (
                        data_id,
                        v.into_iter().map(|(c, ix)| (c.validity, ix)).collect(),
                    )
                })
                .collect();
            out.insert(c.dataset_type.clone(), by_id);
        }
    }
    Ok(out)
}

/// Observation start times (MJD) by element and key values, for
/// calibration lookups: `timespan_begin` of exposures, visits, days.
struct ObservationTimes {
    by_element: HashMap<String, HashMap<Vec<DataIdValue>, f64>>,
}

impl ObservationTimes {
    fn load(registry: &Registry, tasks: &[TaskDef]) -> Result<Self, PreflightError> {
        let universe = registry.universe();
        let mut by_element = HashMap::new();
        let needed = tasks
            .iter()
            .any(|t| t.prerequisites.iter().any(|c| c.is_calibration));
        if !needed {
            return Ok(Self { by_element });
        }
        for e in universe.dimensions() {
            if !e.metadata.iter().any(|f| f.name == "timespan_begin") {
                continue;
            }
            let Some(key) = e.key.as_ref() else { continue };
            let mut map = HashMap::new();
            for rec in registry.element_records(&e.name)? {
                let Some(t) = rec.get("timespan_begin").and_then(|v| v.as_f64()) else {
                    continue;
                };
                let mut k = Vec::new();
                for f in e.required_closure.iter().chain(std::iter::once(&key.name)) {
                    match rec.get(f) {
                        Some(serde_json::Value::Number(n)) => {
                            k.push(DataIdValue::Int(n.as_i64().unwrap_or_default()))
                        }
                        Some(serde_json::Value::String(s)) => k.push(DataIdValue::from(s.as_str())),
                        _ => {}
                    }
                }
                map.insert(k, t);
            }
            by_element.insert(e.name.clone(), map);
        }
        Ok(Self { by_element })
    }

    /// The start time of the observation a quantum's data ID (with implied
    /// values) belongs to: the most specific element with a time.
    fn time_of(&self, universe: &DimensionUniverse, data_id: &DataId) -> Option<f64> {
        let mut best: Option<(usize, f64)> = None;
        for (element, map) in &self.by_element {
            let Some(e) = universe.element(element) else {
                continue;
            };
            if data_id.get(element).is_none() {
                continue;
            }
            let mut k = Vec::new();
            for d in e.required_closure.iter().chain(std::iter::once(element)) {
                k.push(data_id.get(d)?.clone());
            }
            if let Some(&t) = map.get(&k) {
                // Exposures and visits come after day_obs in universe order.
                let pos = universe.position(element).unwrap_or(0);
                if best.is_none_or(|(p, _)| pos > p) {
                    best = Some((pos, t));
                }
            }
        }
        best.map(|(_, t)| t)
    }
}

/// `--clobber` replaces registered datasets: refused for any that a
/// TAGGED or CALIBRATION collection holds, or that recorded provenance
/// names as an input of a quantum this bundle does not supersede (of
/// another RUN, or one whose outputs it does not all replace), since
/// unregistering it would leave that record pointing at nothing.
fn refuse_replacing_used_datasets(
    registry: &Registry,
    run: &str,
    replaced: &[ReplacedDataset],
) -> Result<(), PreflightError> {
    let ids: Vec<Uuid> = replaced.iter().map(|r| r.id).collect();
    let uses = registry.dataset_uses(&ids, run)?;
    if let Some(first) = uses.first() {
        return Err(PreflightError::Invalid(format!(
            "--clobber would replace {} registered dataset(s) that are still in use, e.g. {}: {}; \
             write to a new --output-run instead",
            uses.len(),
            first.dataset_id,
            first.usage
        )));
    }
    Ok(())
}

type ExistingOutputs = HashMap<String, HashMap<DataId, FoundDataset>>;

fn existing_outputs(
    registry: &Registry,
    pipeline: &LoadedPipeline,
    run: &str,
) -> Result<ExistingOutputs, PreflightError> {
    let mut out: ExistingOutputs = HashMap::new();
    if registry.find_collection(run)?.is_none() {
        return Ok(out);
    }
    let types: Vec<String> = pipeline
        .pipeline
        .tasks
        .iter()
        .flat_map(|t| &t.outputs)
        .map(|c| c.dataset_type.clone())
        .filter(|name| registry.dataset_type(name).ok().flatten().is_some())
        .collect();
    if types.is_empty() {
        return Ok(out);
    }
    for f in registry.query_datasets(&types, &[run.to_string()], "", &Binds::new(), false)? {
        out.entry(f.dataset_ref.dataset_type.clone())
            .or_default()
            .insert(f.dataset_ref.data_id.clone(), f);
    }
    Ok(out)
}

struct TaskContext<'a> {
    universe: &'a DimensionUniverse,
    task: &'a TaskDef,
    rows: &'a GraphRows,
    closure_cols: &'a [(String, usize)],
    output_groups: &'a [DimensionGroup],
    prereq_groups: &'a [DimensionGroup],
    prereqs: &'a PrereqIndex,
    times: &'a ObservationTimes,
    existing: &'a ExistingOutputs,
    opts: &'a PreflightOptions,
    datastore: &'a quanta_datastore::Datastore,
}

impl<'a> TaskContext<'a> {
    fn resolve(&self, d: &mut Draft) -> Result<Outcome<'a>, PreflightError> {
        let task = self.task;
        for (ci, set) in d.inputs.iter_mut().enumerate() {
            set.sort_unstable();
            set.dedup();
            let c = &task.inputs[ci];
            if set.is_empty() {
                return Ok(Outcome::Pruned(format!(
                    "no `{}` for input `{}`",
                    c.dataset_type, c.name
                )));
            }
            if set.len() > 1 && !c.multiple {
                return Err(PreflightError::Invalid(format!(
                    "task `{}` input `{}` is not `multiple` but a quantum matches {} `{}` datasets",
                    task.label,
                    c.name,
                    set.len(),
                    c.dataset_type
                )));
            }
        }
        // The quantum's data ID with everything it implies.
        let full = row_data_id(self.rows, self.closure_cols, d.row).unwrap_or_default();
        let mut prerequisites = Vec::with_capacity(task.prerequisites.len());
        for (pi, c) in task.prerequisites.iter().enumerate() {
            let Some(key) = full.project(&self.prereq_groups[pi]) else {
                return Ok(Outcome::Pruned(format!(
                    "prerequisite `{}`: the data ID lacks some of {}",
                    c.name, self.prereq_groups[pi]
                )));
            };
            let cands = self.prereqs.get(&c.dataset_type).and_then(|m| m.get(&key));
            let time = if c.is_calibration {
                self.times.time_of(self.universe, &full)
            } else {
                None
            };
            let chosen = cands.and_then(|cs| {
                cs.iter().find(|(validity, _)| match validity {
                    None => true,
                    Some((b, e)) => time.is_some_and(|t| *b <= t && t < *e),
                })
            });
            match chosen {
                Some((_, ix)) => prerequisites.push(vec![*ix]),
                None => {
                    let when = match (c.is_calibration, time) {
                        (true, Some(t)) => format!(" valid at MJD {t}"),
                        (true, None) => {
                            " (no observation time to look a calibration up by)".to_string()
                        }
                        _ => String::new(),
                    };
                    return Ok(Outcome::Pruned(format!(
                        "no prerequisite `{}` {key}{when} in the input collections",
                        c.dataset_type
                    )));
                }
            }
        }
        let mut outputs = Vec::with_capacity(task.outputs.len());
        let mut existing = Vec::new();
        let mut existing_refs = Vec::new();
        let mut replaces = Vec::new();
        let mut missing_example = None;
        for (oi, c) in task.outputs.iter().enumerate() {
            let Some(data_id) = full.project(&self.output_groups[oi]) else {
                return Ok(Outcome::Pruned(format!(
                    "output `{}`: the data ID has no value for some of {}",
                    c.name, self.output_groups[oi]
                )));
            };
            match self
                .existing
                .get(&c.dataset_type)
                .and_then(|m| m.get(&data_id))
            {
                Some(f) => {
                    existing.push(format!("{} {}", c.dataset_type, data_id));
                    let path = f.stored.as_ref().map(|s| s.path.clone());
                    replaces.push((oi, f.dataset_ref.id, path.unwrap_or_default()));
                    existing_refs.push(f);
                }
                None => {
                    // Only the partial-outputs error names it: not made for
                    // every quantum.
                    if missing_example.is_none() && self.opts.skip_existing && !self.opts.clobber {
                        missing_example = Some(format!("{} {}", c.dataset_type, data_id));
                    }
                }
            }
            let dataset_ref = DatasetRef {
                id: new_v7(),
                dataset_type: c.dataset_type.clone(),
                data_id,
                run: self.opts.output_run.clone(),
            };
            // Rendered here so that a template error fails the build (before
            // the registry is written); the bundle writer renders it again.
            self.datastore.path_for(&dataset_ref, &c.storage_class)?;
            outputs.push(dataset_ref.id);
        }
        if self.opts.skip_existing
            && !task.outputs.is_empty()
            && existing.len() == task.outputs.len()
        {
            return Ok(Outcome::Skip(existing_refs));
        }
        Ok(Outcome::Run(RunOutcome {
            prerequisites,
            outputs,
            existing,
            replaces,
            missing_example,
        }))
    }
}

/// A cluster's name and its quanta (pre-order indices).
type NamedCluster = (String, Vec<u32>);

/// A topological order of the quanta (Kahn's algorithm over the petgraph
/// DAG) that, among ready quanta, always takes the one of the earliest
/// cluster, then task, then data ID: each cluster's quanta end up
/// contiguous, which keeps a batch job's quanta in few bundle blocks and the
/// datasets they pass in the same block. Returns old indices in new order
/// and the clusters (name, old indices).
fn order_and_cluster(
    planned: &PlannedQuanta,
    rows: &GraphRows,
    tasks: &[TaskDef],
    universe: &DimensionUniverse,
    cluster_dims: &[String],
) -> Result<(Vec<u32>, Vec<NamedCluster>), PreflightError> {
    let quanta = &planned.quanta;
    let n = quanta.len();
    let (cluster_of, distinct) = cluster_ranks(quanta, rows, tasks, universe, cluster_dims)?;

    let mut graph: DiGraph<u32, ()> = DiGraph::with_capacity(n, n * 2);
    let nodes: Vec<NodeIndex> = (0..n as u32).map(|i| graph.add_node(i)).collect();
    for (i, q) in quanta.iter().enumerate() {
        for p in planned.upstream(q) {
            graph.add_edge(nodes[p as usize], nodes[i], ());
        }
    }
    let mut indegree: Vec<usize> = nodes
        .iter()
        .map(|&v| graph.neighbors_directed(v, Direction::Incoming).count())
        .collect();
    // Quanta are task-major and sorted by data ID within a task, so the
    // original index is the within-task tiebreak.
    let mut heap: BinaryHeap<Reverse<(u32, u32, u32)>> = (0..n)
        .filter(|&i| indegree[i] == 0)
        .map(|i| Reverse((cluster_of[i], quanta[i].task, i as u32)))
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse((_, _, i))) = heap.pop() {
        order.push(i);
        for w in graph.neighbors_directed(nodes[i as usize], Direction::Outgoing) {
            let j = graph[w] as usize;
            indegree[j] -= 1;
            if indegree[j] == 0 {
                heap.push(Reverse((cluster_of[j], quanta[j].task, j as u32)));
            }
        }
    }
    if order.len() != n {
        return Err(PreflightError::Invalid(
            "the quantum graph has a cycle (the pipeline's task graph does not)".into(),
        ));
    }

    let mut members: Vec<Vec<u32>> = vec![
        Vec::new();
        if cluster_dims.is_empty() {
            n
        } else {
            distinct.len()
        }
    ];
    for (i, &c) in cluster_of.iter().enumerate() {
        members[c as usize].push(i as u32);
    }
    let mut names: Vec<String> = if cluster_dims.is_empty() {
        quanta
            .iter()
            .map(|q| {
                format!(
                    "{}:{}",
                    tasks[q.task as usize].label,
                    short_data_id(&planned.datasets.data_ids.get(q.data_id), universe)
                )
            })
            .collect()
    } else {
        distinct
            .iter()
            .map(|k| cluster_name(cluster_dims, k, universe))
            .collect()
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    for name in names.iter_mut() {
        let count = seen.entry(name.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            name.push_str(&format!("#{count}"));
        }
    }
    Ok((order, names.into_iter().zip(members).collect()))
}

/// The values of the cluster dimensions (`None`: not determined).
type ClusterKey = Vec<Option<DataIdValue>>;

/// The cluster of each quantum, numbered in the order of the distinct
/// cluster keys (the values of the cluster dimensions a quantum's data ID
/// determines), and those keys in that order. Without cluster dimensions
/// every quantum is its own cluster, numbered by its position (task-major),
/// and there are no keys. Keys are value indices of the rows while
/// counting: one small vector per cluster, not per quantum.
fn cluster_ranks(
    quanta: &[Quantum],
    rows: &GraphRows,
    tasks: &[TaskDef],
    universe: &DimensionUniverse,
    cluster_dims: &[String],
) -> Result<(Vec<u32>, Vec<ClusterKey>), PreflightError> {
    if cluster_dims.is_empty() {
        return Ok(((0..quanta.len() as u32).collect(), Vec::new()));
    }
    let task_closures: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| Ok(universe.implied_closure(&universe.conform(&t.dimensions)?)))
        .collect::<Result<_, PreflightError>>()?;
    // Per task, the row column of each cluster dimension its quanta
    // determine.
    let task_cols: Vec<Vec<Option<usize>>> = task_closures
        .iter()
        .map(|closure| {
            cluster_dims
                .iter()
                .map(|d| rows.column(d).filter(|_| closure.contains(d)))
                .collect()
        })
        .collect();
    let mut index: HashMap<Vec<u32>, u32> = HashMap::new();
    let mut keys: Vec<Vec<u32>> = Vec::new();
    let mut key = Vec::with_capacity(cluster_dims.len());
    let provisional: Vec<u32> = quanta
        .iter()
        .map(|q| {
            let row = rows.row(q.row as usize);
            key.clear();
            key.extend(
                task_cols[q.task as usize]
                    .iter()
                    .map(|c| c.map_or(NONE, |c| row[c])),
            );
            match index.get(&key) {
                Some(&k) => k,
                None => {
                    let k = keys.len() as u32;
                    index.insert(key.clone(), k);
                    keys.push(key.clone());
                    k
                }
            }
        })
        .collect();
    drop(index);
    let values: Vec<ClusterKey> = keys
        .iter()
        .map(|k| {
            k.iter()
                .zip(cluster_dims)
                .map(|(&v, d)| {
                    let c = rows.column(d)?;
                    (v != NONE).then(|| rows.value(c, v).cloned()).flatten()
                })
                .collect()
        })
        .collect();
    let mut sorted: Vec<u32> = (0..keys.len() as u32).collect();
    sorted.sort_by(|&a, &b| values[a as usize].cmp(&values[b as usize]));
    let mut rank = vec![0u32; keys.len()];
    for (r, &k) in sorted.iter().enumerate() {
        rank[k as usize] = r as u32;
    }
    let cluster_of = provisional.iter().map(|&k| rank[k as usize]).collect();
    let mut values = values;
    let distinct = sorted
        .iter()
        .map(|&k| std::mem::take(&mut values[k as usize]))
        .collect();
    Ok((cluster_of, distinct))
}

/// `exposure=3`: the cluster's values, leaving out dimensions that another
/// present one requires (the instrument of an exposure).
fn cluster_name(
    dims: &[String],
    key: &[Option<DataIdValue>],
    universe: &DimensionUniverse,
) -> String {
    let present: Vec<&str> = dims
        .iter()
        .zip(key)
        .filter(|(_, v)| v.is_some())
        .map(|(d, _)| d.as_str())
        .collect();
    let parts: Vec<String> = dims
        .iter()
        .zip(key)
        .filter_map(|(d, v)| {
            let v = v.as_ref()?;
            let required_by_other = present.iter().any(|o| {
                *o != d
                    && universe
                        .element(o)
                        .is_some_and(|e| e.required_closure.iter().any(|r| r == d))
            });
            (!required_by_other).then(|| format!("{d}={v}"))
        })
        .collect();
    if parts.is_empty() {
        "all".to_string()
    } else {
        parts.join(",")
    }
}

fn short_data_id(data_id: &DataId, universe: &DimensionUniverse) -> String {
    let dims: Vec<String> = data_id.keys().map(String::from).collect();
    let key: Vec<Option<DataIdValue>> = data_id.iter().map(|(_, v)| Some(v.clone())).collect();
    cluster_name(&dims, &key, universe)
}

/// Records of every element the graph's data IDs touch, keeping those whose
/// key values occur in the rows.
fn used_records(
    registry: &Registry,
    rows: &GraphRows,
    union: &DimensionGroup,
) -> Result<DimensionRecords, PreflightError> {
    let universe = registry.universe();
    let mut out = DimensionRecords::new();
    let present: HashMap<&str, HashSet<&DataIdValue>> = rows
        .columns
        .iter()
        .zip(&rows.dictionary)
        .map(|(c, values)| (c.as_str(), values.iter().collect()))
        .collect();
    for name in universe.implied_closure(union) {
        let Some(e) = universe.element(&name) else {
            continue;
        };
        if e.key.is_none() {
            continue;
        }
        if !e.has_records {
            continue;
        }
        // Only the records the graph uses are converted: a whole-sky skymap
        // has hundreds of thousands of patches with regions.
        let dims: Vec<Option<&HashSet<&DataIdValue>>> = e
            .required_closure
            .iter()
            .chain(std::iter::once(&name))
            .map(|d| present.get(d.as_str()))
            .collect();
        let records = registry.element_records_where(&name, |values| {
            values
                .iter()
                .zip(&dims)
                .all(|(v, set)| set.is_some_and(|set| set.contains(v)))
        })?;
        out.insert(name.clone(), records);
    }
    Ok(out)
}

/// `user@host`, from the environment and /etc/hostname.
pub(crate) fn created_by() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into());
    format!("{user}@{host}")
}

/// A version-7 UUID: Unix milliseconds, then 80 bits of which each thread
/// draws the start once from the OS (through a v4 UUID) and then counts up.
/// `Uuid::now_v7` asks the OS for randomness on every call, a system call
/// per dataset; counting also makes neighbouring IDs share their leading
/// bytes, which zstd exploits in the bundle. Collisions would need another
/// thread or process to start within a count of ours in a 2^64 space.
fn new_v7() -> Uuid {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<(u16, u64)> = {
            let (a, b) = Uuid::new_v4().as_u64_pair();
            Cell::new((a as u16, b))
        };
    }
    let (hi, lo) = STATE.with(|s| {
        let (hi, lo) = s.get();
        s.set((hi, lo.wrapping_add(1)));
        (hi, lo)
    });
    let mut bits = [0u8; 10];
    bits[..2].copy_from_slice(&hi.to_be_bytes());
    bits[2..].copy_from_slice(&lo.to_be_bytes());
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &bits).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quanta_core::pipeline::LoadedPipeline;

    const PIPELINE: &str = include_str!("../../examples/pipelines/reference.yaml");

    #[test]
    fn default_clusters_are_per_exposure_for_the_reference() {
        let u = DimensionUniverse::default_universe();
        let p = LoadedPipeline::parse(PIPELINE, "reference.yaml", &u).unwrap();
        assert_eq!(
            default_cluster_dimensions(&p.pipeline.tasks, &u),
            ["instrument", "exposure"]
        );
        // A single per-detector task: each quantum its own cluster... of its
        // own dimensions.
        let one = &p.pipeline.tasks[..1];
        assert_eq!(
            default_cluster_dimensions(one, &u),
            ["instrument", "detector", "exposure"]
        );
    }

    #[test]
    fn default_clusters_are_per_patch_for_a_coadd() {
        let u = DimensionUniverse::default_universe();
        let yaml = include_str!("../../examples/pipelines/coadd.yaml");
        let p = LoadedPipeline::parse(yaml, "coadd.yaml", &u).unwrap();
        assert_eq!(
            default_cluster_dimensions(&p.pipeline.tasks, &u),
            ["skymap", "tract", "patch"]
        );
    }

    #[test]
    fn tasks_sharing_only_a_root_dimension_are_not_one_cluster() {
        let u = DimensionUniverse::default_universe();
        let p = LoadedPipeline::parse(PIPELINE, "reference.yaml", &u).unwrap();
        // isr on {instrument, exposure, detector} and a task on
        // {instrument, visit} share only `instrument`.
        let mut tasks = p.pipeline.tasks[..1].to_vec();
        let mut per_visit = tasks[0].clone();
        per_visit.dimensions = vec!["instrument".into(), "visit".into()];
        tasks.push(per_visit);
        assert!(default_cluster_dimensions(&tasks, &u).is_empty());
    }

    #[test]
    fn cluster_names_drop_required_parents() {
        let u = DimensionUniverse::default_universe();
        let dims = vec!["instrument".to_string(), "exposure".to_string()];
        let key = vec![Some(DataIdValue::from("Cam")), Some(DataIdValue::Int(3))];
        assert_eq!(cluster_name(&dims, &key, &u), "exposure=3");
        assert_eq!(
            cluster_name(&dims, &[Some(DataIdValue::from("Cam")), None], &u),
            "instrument=Cam"
        );
        assert_eq!(cluster_name(&dims, &[None, None], &u), "all");
    }

    #[test]
    fn v7_ids_are_distinct_and_versioned() {
        let ids: HashSet<Uuid> = (0..10_000).map(|_| new_v7()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|u| u.get_version_num() == 7));
    }
}
