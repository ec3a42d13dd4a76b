use quanta_core::pipeline::PipelineError;
use quanta_core::{BundleError, CoreError};
use quanta_datastore::DatastoreError;
use quanta_registry::RegistryError;
use thiserror::Error;

/// Why preflight could not build a graph or write its bundle. Messages name
/// the task, connection, dataset or file concerned.
#[derive(Debug, Error)]
pub enum PreflightError {
    /// The pipeline file is invalid, or conflicts with the registry (with
    /// `file:line`).
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Butler(#[from] quanta_butler::ButlerError),
    #[error(transparent)]
    Datastore(#[from] DatastoreError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Core(#[from] CoreError),
    /// Outputs already exist in the output RUN and neither `--skip-existing`
    /// nor `--clobber` says what to do.
    #[error(
        "output RUN `{run}` already holds {count} output dataset(s) of this graph, e.g. {example}; \
         use --skip-existing to keep them, --clobber to replace them, or another --output-run"
    )]
    ExistingOutputs {
        run: String,
        count: usize,
        example: String,
    },
    /// `--skip-existing` without `--clobber`, and a quantum has only some of
    /// its outputs.
    #[error(
        "task `{task}` quantum {data_id}: {existing} exists in output RUN `{run}` but {missing} does not; \
         add --clobber to rerun such quanta"
    )]
    PartialOutputs {
        task: String,
        data_id: String,
        run: String,
        existing: String,
        missing: String,
    },
    /// Nothing to do: the query matched no data, or everything was pruned.
    #[error("the quantum graph is empty: {0}")]
    EmptyGraph(String),
    #[error("{0}")]
    Invalid(String),
}
