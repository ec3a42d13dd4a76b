//! Preflight: from a pipeline and a Registry query to a quantum graph and
//! the self-contained bundle a worker executes with no database.
//!
//! The graph comes from ONE set-based registry query
//! ([`quanta_registry::Registry::query_graph_rows`]: the dimension tables of
//! the pipeline's dimensions, the `--where` expression, and the existence of
//! each overall input in the input collections), one query per prerequisite
//! dataset type, and one for the outputs already in the output RUN; never a
//! query per quantum. Everything else happens in memory (rayon for the
//! per-quantum work): scatter (one quantum per distinct projection of the
//! rows on a task's dimensions), gather (`multiple` inputs collect every
//! row's dataset), upstream outputs as inputs, prerequisites (calibrations
//! by the observation's `timespan_begin` within a validity range
//! `[begin, end)`), existing outputs, pruning, and a petgraph DAG put in a
//! cluster-friendly topological order. Predicted outputs get their UUIDs
//! (v7) and datastore paths here.
//!
//! `--clobber`: the header lists every registered dataset of the output RUN
//! that an output replaces (merge unregisters it with the replacement's
//! insert); a clobber is refused when such a dataset is still in use (a
//! TAGGED or CALIBRATION member, or an input of a recorded quantum the
//! bundle does not supersede). The header also records the repository's
//! identity, which merge checks.
//!
//! Registry writes: after a successful build, [`register_outputs`] registers
//! the pipeline's missing output dataset types, the output RUN and, if asked,
//! the output CHAINED collection (`[RUN, inputs...]`, or the RUN prepended to
//! an existing chain). Nothing is written to the registry when the build
//! fails. Init-outputs are registered as dataset types but have no quanta.
//!
//! Owns: graph building and bundle assembly. Must not: execute anything.

mod build;
mod datasets;
mod dot;
mod error;

use std::path::Path;
use std::time::Instant;

use quanta_butler::Butler;
use quanta_core::pipeline::LoadedPipeline;
use quanta_core::{write_bundle_from, BundleWriteOptions, CollectionType};

pub use build::{
    build_graph, check_dataset_types, default_cluster_dimensions, GraphBuild, PlannedQuanta,
    PreflightOptions, PrunedQuantum, TaskSummary, MAX_PRUNED_LISTED,
};
pub use dot::{quantum_graph_dot, quantum_graph_mermaid, task_graph_dot, task_graph_mermaid};
pub use error::PreflightError;

/// What a preflight run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PreflightReport {
    pub bundle_id: String,
    pub n_quanta: usize,
    pub n_clusters: usize,
    pub bundle_bytes: u64,
    pub tasks: Vec<TaskSummary>,
    pub n_pruned: usize,
    /// The first pruned quanta, with reasons.
    pub pruned: Vec<PrunedQuantum>,
    pub registered_dataset_types: Vec<String>,
    /// Seconds per phase (query, lookups, scatter/gather, order, assemble,
    /// register, write).
    pub timings: Vec<(String, f64)>,
}

/// Registers what the bundle's outputs need in the registry: missing output
/// dataset types, the output RUN, and the output chain. Idempotent.
pub fn register_outputs(
    butler: &mut Butler,
    build: &GraphBuild,
    opts: &PreflightOptions,
) -> Result<Vec<String>, PreflightError> {
    let registry = butler.registry_mut();
    let mut registered = Vec::new();
    for dt in &build.to_register {
        if registry.register_dataset_type(dt)? {
            registered.push(dt.name.clone());
        }
    }
    registry.register_collection(&opts.output_run, CollectionType::Run, None)?;
    if let Some(chain) = &opts.output_chain {
        let children = match registry.find_collection(chain)? {
            Some(existing) if existing.collection_type == CollectionType::Chained => {
                let mut c = vec![opts.output_run.clone()];
                c.extend(
                    existing
                        .children
                        .into_iter()
                        .filter(|n| *n != opts.output_run),
                );
                c
            }
            Some(existing) => {
                return Err(PreflightError::Invalid(format!(
                    "--output `{chain}` is a {} collection, not CHAINED",
                    existing.collection_type
                )))
            }
            None => {
                registry.register_collection(chain, CollectionType::Chained, None)?;
                let mut c = vec![opts.output_run.clone()];
                c.extend(
                    opts.input_collections
                        .iter()
                        .filter(|n| **n != opts.output_run)
                        .cloned(),
                );
                c
            }
        };
        registry.set_collection_chain(chain, &children)?;
    }
    Ok(registered)
}

/// The whole preflight: load and validate the pipeline, build the graph,
/// register outputs, write the bundle. The butler must carry the formatters
/// of the pipeline's storage classes: output paths are predicted here, and
/// their extensions come from the formatters (`ImageF` → `.fits`).
pub fn run_preflight(
    butler: &mut Butler,
    pipeline_path: &Path,
    opts: &PreflightOptions,
    bundle_path: &Path,
    write: &BundleWriteOptions,
    progress: &dyn Fn(&str),
) -> Result<PreflightReport, PreflightError> {
    let pipeline = LoadedPipeline::load(pipeline_path, butler.universe())?;
    if let Some(chain) = &opts.output_chain {
        if opts.input_collections.contains(chain) {
            return Err(PreflightError::Invalid(format!(
                "--output `{chain}` is also an --input collection"
            )));
        }
    }
    if opts.input_collections.contains(&opts.output_run) {
        return Err(PreflightError::Invalid(format!(
            "--output-run `{}` is also an --input collection",
            opts.output_run
        )));
    }
    quanta_core::validate_collection_name(&opts.output_run)?;
    let build = build_graph(butler, &pipeline, opts, progress)?;
    let mut timings: Vec<(String, f64)> = build
        .timings
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    let t = Instant::now();
    let registered = register_outputs(butler, &build, opts)?;
    timings.push(("register".into(), t.elapsed().as_secs_f64()));
    progress(&format!(
        "writing {} quanta to {}",
        build.quanta.len(),
        bundle_path.display()
    ));
    let t = Instant::now();
    let quanta = build.quanta.source(butler.datastore());
    let bytes = write_bundle_from(bundle_path, build.parts(), &quanta, write)?;
    timings.push(("write".into(), t.elapsed().as_secs_f64()));
    Ok(PreflightReport {
        bundle_id: build.header.bundle_id.to_string(),
        n_quanta: build.quanta.len(),
        n_clusters: build.clusters.len(),
        bundle_bytes: bytes,
        tasks: build.tasks,
        n_pruned: build.n_pruned,
        pruned: build.pruned,
        registered_dataset_types: registered,
        timings,
    })
}
