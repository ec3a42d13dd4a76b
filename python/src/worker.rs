//! The compiled half of a Python task worker (`python -m quanta._worker`,
//! started by the runtime's `python_task`, one per worker slot): a bundle
//! opened once per interpreter, and per quantum a `QuantumBackedButler`
//! through which the task's inputs are read and its outputs written, by the
//! same `TaskContext` get/put a Rust task uses. So a Python task reads and
//! writes what a Rust task would, with the same formatters and the same
//! overwrite rule, and never sees a path. The journal is the executor's:
//! [`PyQuantum::finish`] hands back what was written and read.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use quanta_core::pipeline::TaskKind;
use quanta_datastore::ReadParameters;
use quanta_limited_registry::{peak_rss_bytes, LimitedRegistry, LogTail, QuantumBackedButler};
use quanta_runtime::python_task::{Reply, ReplyStatus};
use quanta_runtime::{TaskContext, TaskError};

use crate::convert::json_to_py;
use crate::datasets;
use crate::errors::{error_text, quanta_error, to_py_err};

/// A bundle opened by a worker interpreter.
#[pyclass(name = "_WorkerSession", module = "quanta._quanta", frozen)]
pub struct PyWorkerSession {
    registry: Arc<LimitedRegistry>,
}

#[pymethods]
impl PyWorkerSession {
    #[new]
    fn new(bundle: PathBuf) -> PyResult<Self> {
        let registry = LimitedRegistry::open_with_formatters(&bundle, quanta_formats::formatters())
            .map_err(to_py_err)?;
        Ok(Self { registry })
    }

    /// The Python task `label`: its target (`package.module:Class`) and its
    /// config (a dict).
    fn task<'py>(&self, py: Python<'py>, label: &str) -> PyResult<(String, Bound<'py, PyAny>)> {
        let def = self
            .registry
            .tasks()
            .iter()
            .find(|t| t.label == label)
            .ok_or_else(|| quanta_error(format!("no task `{label}` in the bundle")))?;
        let TaskKind::Python(target) = &def.kind else {
            return Err(quanta_error(format!("task `{label}` is not a Python task")));
        };
        let config = if def.config.is_null() {
            serde_json::json!({})
        } else {
            def.config.clone()
        };
        Ok((target.clone(), json_to_py(py, &config)?))
    }

    /// Starts an attempt of quantum `index`.
    fn begin(&self, index: u32, replace_existing: bool) -> PyResult<PyQuantum> {
        let quantum = self.registry.bundle().quantum(index).map_err(to_py_err)?;
        let butler = self.registry.butler(index, quantum, replace_existing);
        Ok(PyQuantum {
            butler,
            log: LogTail::default(),
        })
    }
}

/// One attempt of one quantum in a worker interpreter.
#[pyclass(name = "_Quantum", module = "quanta._quanta", unsendable)]
pub struct PyQuantum {
    butler: QuantumBackedButler,
    /// Unused by the task API here (the worker captures the task's output
    /// itself); `TaskContext` wants one.
    log: LogTail,
}

impl PyQuantum {
    /// Runs `f` with a task context over this attempt's butler.
    fn with_context<T>(
        &mut self,
        f: impl FnOnce(&mut TaskContext<'_>) -> Result<T, TaskError>,
    ) -> PyResult<T> {
        let quantum = Arc::clone(self.butler.quantum());
        let task = Arc::clone(self.butler.task());
        let index = self.butler.index();
        let config = serde_json::Value::Null;
        let mut ctx = TaskContext::new(
            &mut self.butler,
            &quantum,
            &task,
            index,
            &config,
            &mut self.log,
        );
        f(&mut ctx).map_err(|e| quanta_error(error_text(&e)))
    }
}

#[pymethods]
impl PyQuantum {
    /// The task label.
    #[getter]
    fn label(&self) -> String {
        self.butler.task().label.clone()
    }

    /// The quantum's index in its bundle.
    #[getter]
    fn index(&self) -> u32 {
        self.butler.index()
    }

    /// The quantum's data ID, a dict.
    #[getter]
    fn data_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::convert::serde_to_py(py, &self.butler.quantum().data_id)
    }

    /// Every input and prerequisite by connection name, read through the
    /// formatters: one object, or a list for a `multiple` connection (in
    /// the quantum's order; the data IDs are in `input_data_ids`). A
    /// non-`multiple` prerequisite with no dataset is None.
    fn inputs<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let task = Arc::clone(self.butler.task());
        let out = PyDict::new(py);
        for c in task.inputs.iter().chain(&task.prerequisites) {
            let n = self.with_context(|ctx| Ok(ctx.input_refs(&c.name)?.len()))?;
            if c.multiple {
                let all = self.with_context(|ctx| ctx.get_all(&c.name))?;
                let list = PyList::empty(py);
                for obj in &all {
                    list.append(datasets::to_python(py, obj)?)?;
                }
                out.set_item(&c.name, list)?;
            } else if n == 0 {
                out.set_item(&c.name, py.None())?;
            } else {
                let obj = self.with_context(|ctx| ctx.get_with(&c.name, &ReadParameters::new()))?;
                out.set_item(&c.name, datasets::to_python(py, &obj)?)?;
            }
        }
        Ok(out)
    }

    /// The data IDs of an input connection's datasets, in `inputs` order.
    fn input_data_ids<'py>(
        &mut self,
        py: Python<'py>,
        connection: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        let ids = self.with_context(|ctx| {
            Ok(ctx
                .input_refs(connection)?
                .iter()
                .map(|r| r.data_id.clone())
                .collect::<Vec<_>>())
        })?;
        data_id_list(py, &ids)
    }

    /// Writes output `connection` from `obj` (by the connection's storage
    /// class); a connection with several predicted datasets takes a list in
    /// `output_data_ids` order.
    fn put(&mut self, connection: &str, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let task = Arc::clone(self.butler.task());
        let storage_class = task
            .outputs
            .iter()
            .find(|c| c.name == connection)
            .map(|c| c.storage_class.clone())
            .ok_or_else(|| {
                quanta_error(format!(
                    "task `{}` returned `{connection}`, which is not one of its outputs ({})",
                    task.label,
                    task.outputs
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let refs = self.with_context(|ctx| Ok(ctx.output_refs(connection)?.to_vec()))?;
        if refs.len() == 1 {
            let value = datasets::from_python(obj, &storage_class)?;
            return self.with_context(|ctx| ctx.put(connection, &value));
        }
        let items: Vec<Bound<'_, PyAny>> = obj.try_iter()?.collect::<PyResult<_>>()?;
        if items.len() != refs.len() {
            return Err(quanta_error(format!(
                "output `{connection}` has {} predicted datasets; the task returned {}",
                refs.len(),
                items.len()
            )));
        }
        for (r, item) in refs.iter().zip(&items) {
            let value = datasets::from_python(item, &storage_class)?;
            self.with_context(|ctx| ctx.put_for(connection, &r.data_id, &value))?;
        }
        Ok(())
    }

    /// The data IDs predicted for an output connection.
    fn output_data_ids<'py>(
        &mut self,
        py: Python<'py>,
        connection: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        let ids = self.with_context(|ctx| {
            Ok(ctx
                .output_refs(connection)?
                .iter()
                .map(|r| r.data_id.clone())
                .collect::<Vec<_>>())
        })?;
        data_id_list(py, &ids)
    }

    /// The reply to the executor (the protocol's JSON body): `error` is
    /// the task's traceback, None if `run` returned; a task that returned
    /// without writing every predicted output fails here. What was written
    /// and read is reported either way, for the journal.
    fn finish<'py>(
        &self,
        py: Python<'py>,
        error: Option<String>,
        cpu_seconds: f64,
        log: Vec<String>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let error = error.or_else(|| {
            let missing = self.butler.missing_outputs();
            (!missing.is_empty()).then(|| {
                let list: Vec<String> = missing
                    .iter()
                    .map(|(c, r)| format!("{c} ({} {} at `{}`)", r.dataset_type, r.data_id, r.path))
                    .collect();
                format!(
                    "the task returned without writing predicted output(s): {}",
                    list.join(", ")
                )
            })
        });
        let reply = Reply {
            status: if error.is_none() {
                ReplyStatus::Succeeded
            } else {
                ReplyStatus::Failed
            },
            error,
            outputs: self.butler.written().to_vec(),
            inputs_used: self.butler.inputs_used(),
            cpu_seconds,
            peak_rss_bytes: peak_rss_bytes(),
            log,
        };
        let body = serde_json::to_vec(&reply).map_err(|e| quanta_error(e.to_string()))?;
        Ok(PyBytes::new(py, &body))
    }
}

/// Data IDs as a Python list of dicts.
fn data_id_list<'py>(py: Python<'py>, ids: &[quanta_core::DataId]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for id in ids {
        list.append(crate::convert::serde_to_py(py, id)?)?;
    }
    Ok(list)
}
