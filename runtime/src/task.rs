//! The task API: [`PipelineTask`], the [`TaskContext`] a task runs with,
//! and the [`TaskRegistry`] of task classes by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use quanta_core::bundle::ConnectionRefs;
use quanta_core::pipeline::TaskDef;
use quanta_core::{BundleQuantum, BundleRef, DataId, WrittenOutput};
use quanta_datastore::{DatastoreError, InMemoryDataset, JsonFormatter, ReadParameters};
use quanta_limited_registry::{
    DimensionRecord, LimitedButler, LimitedRegistryError, LogTail, ReadSpec,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;
use uuid::Uuid;

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
/// name, its predicted outputs, its config and a log. Reads and writes go
/// through a [`LimitedButler`]: a bundle's ([`QuantumBackedButler`] on a
/// worker) or a full repository's (`quanta run-quantum`); the task cannot
/// tell which.
///
/// [`QuantumBackedButler`]: quanta_limited_registry::QuantumBackedButler
pub struct TaskContext<'a> {
    butler: &'a mut dyn LimitedButler,
    quantum: &'a BundleQuantum,
    task: &'a TaskDef,
    /// The quantum's index in its bundle (named in errors and logs).
    index: u32,
    config: &'a serde_json::Value,
    log: &'a mut LogTail,
    /// Ids of the inputs read, in read order (repeats possible).
    inputs_used: Vec<Uuid>,
    written: Vec<WrittenOutput>,
}

fn find<'r>(refs: &'r ConnectionRefs, name: &str) -> Option<&'r [BundleRef]> {
    refs.iter()
        .find(|(n, _)| n == name)
        .map(|(_, r)| r.as_slice())
}

impl<'a> TaskContext<'a> {
    pub fn new(
        butler: &'a mut dyn LimitedButler,
        quantum: &'a BundleQuantum,
        task: &'a TaskDef,
        index: u32,
        config: &'a serde_json::Value,
        log: &'a mut LogTail,
    ) -> Self {
        Self {
            butler,
            quantum,
            task,
            index,
            config,
            log,
            inputs_used: Vec::new(),
            written: Vec::new(),
        }
    }

    pub fn data_id(&self) -> &DataId {
        &self.quantum.data_id
    }

    /// The dimension record of `element` (`patch`, `visit`, `tract`, …) for
    /// this quantum's data ID (field name → value, regions as their JSON);
    /// `None` if there is no such record. A bundle's records are decoded
    /// once per process.
    pub fn dimension_record(&self, element: &str) -> Result<Option<DimensionRecord>, TaskError> {
        Ok(self
            .butler
            .dimension_record(element, &self.quantum.data_id)?)
    }

    pub fn label(&self) -> &str {
        &self.task.label
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
        tracing::debug!(task = %self.task.label, quantum = self.index, "{line}");
        self.log.push_line(line);
    }

    fn unknown(&self, kind: &'static str, connection: &str, refs: &[&ConnectionRefs]) -> TaskError {
        TaskError::Butler(LimitedRegistryError::UnknownConnection {
            quantum: self.index,
            task: self.task.label.clone(),
            kind,
            connection: connection.to_string(),
            known: refs
                .iter()
                .flat_map(|r| r.iter())
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// The refs bound to an input (or prerequisite) connection, in quantum
    /// order.
    pub fn input_refs(&self, connection: &str) -> Result<&'a [BundleRef], TaskError> {
        let q: &'a BundleQuantum = self.quantum;
        find(&q.inputs, connection)
            .or_else(|| find(&q.prerequisites, connection))
            .ok_or_else(|| self.unknown("input", connection, &[&q.inputs, &q.prerequisites]))
    }

    /// The refs predicted for an output connection.
    pub fn output_refs(&self, connection: &str) -> Result<&'a [BundleRef], TaskError> {
        let q: &'a BundleQuantum = self.quantum;
        find(&q.outputs, connection)
            .ok_or_else(|| self.unknown("output", connection, &[&q.outputs]))
    }

    fn single(&self, connection: &str, refs: &'a [BundleRef]) -> Result<&'a BundleRef, TaskError> {
        match refs {
            [r] => Ok(r),
            _ => Err(TaskError::Butler(LimitedRegistryError::NotSingle {
                quantum: self.index,
                task: self.task.label.clone(),
                connection: connection.to_string(),
                n: refs.len(),
            })),
        }
    }

    /// The storage class of a connection: as the task declares it, else
    /// Json.
    fn storage_class(&self, connection: &str) -> &'a str {
        let t: &'a TaskDef = self.task;
        t.inputs
            .iter()
            .chain(&t.prerequisites)
            .chain(&t.outputs)
            .find(|c| c.name == connection)
            .map_or(JsonFormatter::STORAGE_CLASS, |c| c.storage_class.as_str())
    }

    /// The component an input connection reads of `r` (`wcs` for a
    /// connection of `calexp.wcs` bound to a `calexp`).
    fn component_of(&self, connection: &str, r: &BundleRef) -> Option<&'a str> {
        let t: &'a TaskDef = self.task;
        let c = t
            .inputs
            .iter()
            .chain(&t.prerequisites)
            .find(|c| c.name == connection)?;
        (c.dataset_type != r.dataset_type)
            .then(|| c.component())
            .flatten()
    }

    fn read(
        &mut self,
        connection: &str,
        r: &BundleRef,
        parameters: &ReadParameters,
    ) -> Result<InMemoryDataset, TaskError> {
        let read = ReadSpec {
            connection,
            storage_class: self.storage_class(connection),
            component: self.component_of(connection, r),
            parameters,
        };
        let obj = self.butler.get(r, &read)?;
        self.inputs_used.push(r.id);
        Ok(obj)
    }

    /// The one dataset of an input connection; of a component connection
    /// (`calexp.wcs`), only that component of the parent.
    pub fn get(&mut self, connection: &str) -> Result<InMemoryDataset, TaskError> {
        self.get_with(connection, &ReadParameters::new())
    }

    /// [`TaskContext::get`] with read parameters (`bbox=x0,y0,x1,y1` of an
    /// image or exposure, `columns`/`rows` of a catalog): the formatter
    /// reads only that part of the file.
    pub fn get_with(
        &mut self,
        connection: &str,
        parameters: &ReadParameters,
    ) -> Result<InMemoryDataset, TaskError> {
        let r = self.single(connection, self.input_refs(connection)?)?;
        self.read(connection, r, parameters)
    }

    /// All datasets of a (`multiple`) input connection, in
    /// [`TaskContext::input_refs`] order.
    pub fn get_all(&mut self, connection: &str) -> Result<Vec<InMemoryDataset>, TaskError> {
        let none = ReadParameters::new();
        self.input_refs(connection)?
            .iter()
            .map(|r| self.read(connection, r, &none))
            .collect()
    }

    fn read_json<T: DeserializeOwned>(&mut self, r: &BundleRef) -> Result<T, TaskError> {
        let bytes = self.butler.get_bytes(r)?;
        let v = serde_json::from_slice(&bytes).map_err(|e| {
            TaskError::Butler(LimitedRegistryError::Datastore {
                quantum: self.index,
                task: self.task.label.clone(),
                source: Box::new(DatastoreError::Decode {
                    formatter: JsonFormatter::NAME.to_string(),
                    path: r.path.clone(),
                    source: e.into(),
                }),
            })
        })?;
        self.inputs_used.push(r.id);
        Ok(v)
    }

    /// The one dataset of an input connection, deserialized from its JSON.
    pub fn get_json<T: DeserializeOwned>(&mut self, connection: &str) -> Result<T, TaskError> {
        let r = self.single(connection, self.input_refs(connection)?)?;
        self.read_json(r)
    }

    /// All datasets of a `multiple` connection with their refs, in quantum
    /// order.
    pub fn get_all_json<T: DeserializeOwned>(
        &mut self,
        connection: &str,
    ) -> Result<Vec<(BundleRef, T)>, TaskError> {
        self.input_refs(connection)?
            .iter()
            .map(|r| Ok((r.clone(), self.read_json(r)?)))
            .collect()
    }

    /// The predicted ref of `connection` for `data_id` (`None`: the only one).
    fn predicted(
        &self,
        connection: &str,
        data_id: Option<&DataId>,
    ) -> Result<&'a BundleRef, TaskError> {
        let refs = self.output_refs(connection)?;
        let found = match data_id {
            None => Some(self.single(connection, refs)?),
            Some(d) => refs.iter().find(|r| &r.data_id == d),
        };
        found.ok_or_else(|| {
            TaskError::Butler(LimitedRegistryError::UnpredictedOutput {
                quantum: self.index,
                task: self.task.label.clone(),
                connection: connection.to_string(),
                data_id: data_id.map(|d| d.to_string()).unwrap_or_default(),
                predicted: refs
                    .iter()
                    .map(|r| r.data_id.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            })
        })
    }

    fn store(
        &mut self,
        connection: &str,
        r: &BundleRef,
        obj: &InMemoryDataset,
    ) -> Result<(), TaskError> {
        let written = self.butler.put(obj, r, self.storage_class(connection))?;
        self.written.push(written);
        Ok(())
    }

    /// Writes the one predicted output of `connection`.
    pub fn put(&mut self, connection: &str, obj: &InMemoryDataset) -> Result<(), TaskError> {
        let r = self.predicted(connection, None)?;
        self.store(connection, r, obj)
    }

    /// Writes the predicted output of `connection` for `data_id` (for
    /// connections with several outputs).
    pub fn put_for(
        &mut self,
        connection: &str,
        data_id: &DataId,
        obj: &InMemoryDataset,
    ) -> Result<(), TaskError> {
        let r = self.predicted(connection, Some(data_id))?;
        self.store(connection, r, obj)
    }

    /// Writes the one predicted output of a connection from any
    /// serializable value: a Json connection straight from `value`, any
    /// other through a JSON value and its storage class's formatter.
    pub fn put_json<T: Serialize + ?Sized>(
        &mut self,
        connection: &str,
        value: &T,
    ) -> Result<(), TaskError> {
        let r = self.predicted(connection, None)?;
        let json_err = |e: serde_json::Error| {
            TaskError::Butler(LimitedRegistryError::Datastore {
                quantum: self.index,
                task: self.task.label.clone(),
                source: Box::new(DatastoreError::Encode {
                    what: format!("{} {}", r.dataset_type, r.data_id),
                    formatter: JsonFormatter::NAME.to_string(),
                    path: r.path.clone(),
                    source: e.into(),
                }),
            })
        };
        if self.storage_class(connection) != JsonFormatter::STORAGE_CLASS {
            let v = serde_json::to_value(value).map_err(json_err)?;
            return self.store(connection, r, &InMemoryDataset::Json(v));
        }
        let bytes = serde_json::to_vec(value).map_err(json_err)?;
        let written = self.butler.put_bytes(&bytes, r, JsonFormatter::NAME)?;
        self.written.push(written);
        Ok(())
    }

    /// The outputs written through this context, in write order.
    pub fn written(&self) -> &[WrittenOutput] {
        &self.written
    }

    /// Ids of the inputs read, each once, in first-read order.
    pub fn inputs_used(&self) -> Vec<Uuid> {
        let mut seen = std::collections::HashSet::new();
        self.inputs_used
            .iter()
            .copied()
            .filter(|id| seen.insert(*id))
            .collect()
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
