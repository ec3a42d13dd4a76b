//! The task API: [`PipelineTask`], the [`TaskContext`] a task runs with,
//! and the [`TaskRegistry`] of task classes by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use quanta_core::{BundleRef, DataId};
use quanta_datastore::InMemoryDataset;
use quanta_limited_registry::{DimensionRecord, LimitedButler, LimitedRegistryError, LogTail};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// Why a task's run failed. Anything the task returns is recorded in the
/// journal as the quantum's error.
#[derive(Debug, Error)]
pub enum TaskError {
    /// A get or put failed (missing input, unpredicted output, I/O, …).
    #[error(transparent)]
    Butler(#[from] LimitedRegistryError),
    #[error("invalid config: {0}")]
    Config(String),
    #[error("invalid input {connection}: {detail}")]
    BadInput { connection: String, detail: String },
    #[error("{0}")]
    Failed(String),
}

/// A Rust pipeline task. One instance serves every quantum of its task
/// label, from several threads at once, so `run` takes `&self`.
pub trait PipelineTask: Send + Sync {
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError>;
}

/// What a task sees while running one quantum: its inputs by connection
/// name, its predicted outputs, its config and a log.
pub struct TaskContext<'a> {
    butler: &'a mut LimitedButler,
    config: &'a serde_json::Value,
    log: &'a mut LogTail,
}

impl<'a> TaskContext<'a> {
    pub fn new(
        butler: &'a mut LimitedButler,
        config: &'a serde_json::Value,
        log: &'a mut LogTail,
    ) -> Self {
        Self {
            butler,
            config,
            log,
        }
    }

    pub fn data_id(&self) -> &DataId {
        self.butler.data_id()
    }

    /// The dimension record of `element` (`patch`, `visit`, `tract`, …) for
    /// this quantum's data ID, from the bundle (field name → value, regions
    /// as their JSON); `None` if the bundle has no such record. The
    /// bundle's records are decoded once per process.
    pub fn dimension_record(&self, element: &str) -> Result<Option<&DimensionRecord>, TaskError> {
        Ok(self.butler.dimension_record(element)?)
    }

    pub fn label(&self) -> &str {
        &self.butler.task().label
    }

    /// The task's config (a JSON object, `{}` when none was given).
    pub fn config(&self) -> &serde_json::Value {
        self.config
    }

    /// Whether the attempt was cancelled (timed out): a long task may check
    /// this to stop early; puts fail once it is set.
    pub fn is_cancelled(&self) -> bool {
        self.butler.is_cancelled()
    }

    /// Adds a line to the task's log; the last lines go into the journal.
    pub fn log(&mut self, line: impl AsRef<str>) {
        let line = line.as_ref();
        tracing::debug!(task = %self.butler.task().label, quantum = self.butler.index(), "{line}");
        self.log.push_line(line);
    }

    pub fn input_refs(&self, connection: &str) -> Result<&[BundleRef], TaskError> {
        Ok(self.butler.input_refs(connection)?)
    }

    pub fn output_refs(&self, connection: &str) -> Result<&[BundleRef], TaskError> {
        Ok(self.butler.output_refs(connection)?)
    }

    /// The one dataset of an input connection; of a component connection
    /// (`calexp.wcs`), only that component of the parent.
    pub fn get(&mut self, connection: &str) -> Result<InMemoryDataset, TaskError> {
        Ok(self.butler.get(connection)?)
    }

    /// [`TaskContext::get`] with read parameters (`bbox=x0,y0,x1,y1` of an
    /// image or exposure, `columns`/`rows` of a catalog): the formatter
    /// reads only that part of the file.
    pub fn get_with(
        &mut self,
        connection: &str,
        parameters: &quanta_datastore::ReadParameters,
    ) -> Result<InMemoryDataset, TaskError> {
        Ok(self.butler.get_with(connection, parameters)?)
    }

    pub fn get_all(&mut self, connection: &str) -> Result<Vec<InMemoryDataset>, TaskError> {
        Ok(self.butler.get_all(connection)?)
    }

    pub fn get_json<T: DeserializeOwned>(&mut self, connection: &str) -> Result<T, TaskError> {
        Ok(self.butler.get_json(connection)?)
    }

    /// All datasets of a `multiple` connection with their refs, in bundle
    /// order.
    pub fn get_all_json<T: DeserializeOwned>(
        &mut self,
        connection: &str,
    ) -> Result<Vec<(BundleRef, T)>, TaskError> {
        let refs = self.butler.input_refs(connection)?.to_vec();
        let values: Vec<T> = self.butler.get_all_json(connection)?;
        Ok(refs.into_iter().zip(values).collect())
    }

    pub fn put(&mut self, connection: &str, obj: &InMemoryDataset) -> Result<(), TaskError> {
        Ok(self.butler.put(connection, obj)?)
    }

    pub fn put_for(
        &mut self,
        connection: &str,
        data_id: &DataId,
        obj: &InMemoryDataset,
    ) -> Result<(), TaskError> {
        Ok(self.butler.put_for(connection, data_id, obj)?)
    }

    pub fn put_json<T: Serialize + ?Sized>(
        &mut self,
        connection: &str,
        value: &T,
    ) -> Result<(), TaskError> {
        Ok(self.butler.put_json(connection, value)?)
    }
}

/// Makes a task instance from its config; a bad config is an error here, so
/// it is reported before anything runs.
pub type TaskConstructor =
    Arc<dyn Fn(&serde_json::Value) -> Result<Arc<dyn PipelineTask>, TaskError> + Send + Sync>;

/// Task classes by name (`examples.Isr`).
#[derive(Clone, Default)]
pub struct TaskRegistry {
    classes: BTreeMap<String, TaskConstructor>,
}

impl std::fmt::Debug for TaskRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.classes.keys()).finish()
    }
}

impl TaskRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the class `name`.
    pub fn register<F>(&mut self, name: &str, make: F)
    where
        F: Fn(&serde_json::Value) -> Result<Arc<dyn PipelineTask>, TaskError>
            + Send
            + Sync
            + 'static,
    {
        self.classes.insert(name.to_string(), Arc::new(make));
    }

    pub fn contains(&self, name: &str) -> bool {
        self.classes.contains_key(name)
    }

    /// The registered class names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.classes.keys().map(String::as_str).collect()
    }

    /// An instance of class `name` configured by `config`; `None` if no
    /// such class is registered.
    pub fn create(
        &self,
        name: &str,
        config: &serde_json::Value,
    ) -> Option<Result<Arc<dyn PipelineTask>, TaskError>> {
        self.classes.get(name).map(|make| make(config))
    }
}
