//! `quanta.Bundle`: a bundle's header, tasks, clusters and quanta, read
//! with `quanta_core::Bundle` as `quanta bundle show` reads them
//! (`cli/src/preflight_cmds.rs`).

use std::path::PathBuf;
use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use quanta_core::bundle::ConnectionRefs;
use quanta_core::pipeline::TaskKind;
use quanta_core::{Bundle, BundleQuantum};
use serde_json::{json, Value};

use crate::convert::{json_to_py, serde_to_py};
use crate::errors::IntoPyResult;

/// A bundle file written by ``quanta preflight``: what it was made from
/// (``header``), its ``tasks`` with their quanta counts, its ``clusters``
/// and its quanta (``len(bundle)``, ``bundle[i]``, ``for q in bundle``).
/// Opening checks the file's frame and header; ``verify()`` (and
/// ``show()``) check every block.
#[pyclass(module = "quanta", name = "Bundle", frozen)]
pub struct PyBundle {
    bundle: Bundle,
    path: PathBuf,
    /// Quanta per task, counted on first use (a pass over every block).
    per_task: OnceLock<Vec<usize>>,
}

fn task_kind(kind: &TaskKind) -> String {
    kind.describe()
}

fn connections(refs: &ConnectionRefs) -> Result<Value, serde_json::Error> {
    let mut map = serde_json::Map::new();
    for (name, list) in refs {
        map.insert(name.clone(), serde_json::to_value(list)?);
    }
    Ok(Value::Object(map))
}

impl PyBundle {
    fn per_task(&self, py: Python<'_>) -> PyResult<&[usize]> {
        if let Some(counts) = self.per_task.get() {
            return Ok(counts);
        }
        let counts = py
            .detach(|| {
                let mut per_task = vec![0usize; self.bundle.tasks().len()];
                for block in self.bundle.decoded_blocks() {
                    let block = block?;
                    for pos in 0..block.len() {
                        if let Some(q) = block.quantum(pos) {
                            if let Some(n) = per_task.get_mut(q.task as usize) {
                                *n += 1;
                            }
                        }
                    }
                }
                Ok::<_, quanta_core::BundleError>(per_task)
            })
            .py_err()?;
        Ok(self.per_task.get_or_init(|| counts))
    }

    fn tasks_json(&self, py: Python<'_>) -> PyResult<Vec<Value>> {
        let per_task = self.per_task(py)?;
        Ok(self
            .bundle
            .tasks()
            .iter()
            .zip(per_task)
            .map(|(t, n)| {
                json!({
                    "label": t.label, "task": task_kind(&t.kind), "dimensions": t.dimensions, "quanta": n,
                })
            })
            .collect())
    }

    fn quantum_json(&self, index: u32, q: &BundleQuantum) -> Result<Value, serde_json::Error> {
        let label = self
            .bundle
            .tasks()
            .get(q.task as usize)
            .map(|t| t.label.clone())
            .unwrap_or_default();
        Ok(json!({
            "index": index,
            "id": q.id,
            "task": label,
            "data_id": q.data_id,
            "inputs": connections(&q.inputs)?,
            "prerequisites": connections(&q.prerequisites)?,
            "outputs": connections(&q.outputs)?,
            "upstream": q.upstream,
        }))
    }

    fn quantum_py<'py>(&self, py: Python<'py>, index: u32) -> PyResult<Bound<'py, PyAny>> {
        let q = py.detach(|| self.bundle.quantum(index)).py_err()?;
        let value = self
            .quantum_json(index, &q)
            .map_err(|e| crate::errors::quanta_error(e.to_string()))?;
        json_to_py(py, &value)
    }
}

#[pymethods]
impl PyBundle {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let bundle = py.detach(|| Bundle::open(&path)).py_err()?;
        Ok(Self {
            bundle,
            path,
            per_task: OnceLock::new(),
        })
    }

    /// The bundle file.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The bundle's UUID.
    #[getter]
    fn id(&self) -> String {
        self.bundle.header().bundle_id.to_string()
    }

    /// What the bundle was made from and for: input collections, output
    /// RUN and chain, where clause, pipeline, datastore root, creation…
    /// (the ``header`` of ``quanta bundle show --json``).
    #[getter]
    fn header<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        serde_to_py(py, self.bundle.header())
    }

    /// The input collections, searched in order at preflight.
    #[getter]
    fn input_collections(&self) -> Vec<String> {
        self.bundle.header().input_collections.clone()
    }

    /// The RUN collection the outputs go to.
    #[getter]
    fn output_run(&self) -> String {
        self.bundle.header().output_run.clone()
    }

    /// The CHAINED output collection, if preflight made one.
    #[getter]
    fn output_collection(&self) -> Option<String> {
        self.bundle.header().output_chain.clone()
    }

    /// The tasks, in pipeline order: ``label``, ``task`` (class or
    /// command), ``dimensions`` and ``quanta`` (how many the bundle has).
    #[getter]
    fn tasks<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let tasks = self.tasks_json(py)?;
        json_to_py(py, &Value::Array(tasks))
    }

    /// Quanta per task label.
    fn quanta_per_task<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let per_task = self.per_task(py)?;
        let dict = PyDict::new(py);
        for (t, n) in self.bundle.tasks().iter().zip(per_task) {
            dict.set_item(&t.label, n)?;
        }
        Ok(dict)
    }

    /// The clusters (batch jobs): ``name`` and ``quanta`` (their indices).
    #[getter]
    fn clusters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let clusters = py.detach(|| self.bundle.clusters()).py_err()?;
        serde_to_py(py, &clusters)
    }

    /// Checks every block (checksums, decoding of every quantum, clusters,
    /// dimension records); raises ``QuantaError`` naming the first bad one.
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.bundle.verify()).py_err()
    }

    /// What ``quanta bundle show BUNDLE --json`` prints, as a dict (the
    /// bundle is verified first).
    fn show<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.verify(py)?;
        let clusters = py.detach(|| self.bundle.clusters()).py_err()?;
        let value = json!({
            "path": self.path.display().to_string(),
            "file_size": self.bundle.file_size(),
            "n_blocks": self.bundle.n_blocks(),
            "header": self.bundle.header(),
            "tasks": self.tasks_json(py)?,
            "clusters": clusters.iter().map(|c| json!({"name": c.name, "quanta": c.quanta.len()})).collect::<Vec<_>>(),
        });
        json_to_py(py, &value)
    }

    /// Quantum ``index`` (0-based, topological order): ``index``, ``id``,
    /// ``task`` (label), ``data_id``, ``inputs``, ``prerequisites`` and
    /// ``outputs`` (connection name → dataset refs with ``id``,
    /// ``dataset_type``, ``data_id``, ``run``, ``path``, ``size``,
    /// ``checksum``) and ``upstream`` (indices of the quanta it reads from).
    fn quantum<'py>(&self, py: Python<'py>, index: i64) -> PyResult<Bound<'py, PyAny>> {
        let n = self.bundle.n_quanta() as i64;
        let i = if index < 0 { index + n } else { index };
        if !(0..n).contains(&i) {
            return Err(pyo3::exceptions::PyIndexError::new_err(format!(
                "quantum {index} of a bundle of {n} quanta"
            )));
        }
        self.quantum_py(py, i as u32)
    }

    fn __getitem__<'py>(&self, py: Python<'py>, index: i64) -> PyResult<Bound<'py, PyAny>> {
        self.quantum(py, index)
    }

    fn __len__(&self) -> usize {
        self.bundle.n_quanta()
    }

    fn __iter__(slf: Bound<'_, Self>) -> QuantumIterator {
        QuantumIterator {
            bundle: slf.unbind(),
            next: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// The quanta of one task (by label), in order.
    fn quanta_of<'py>(&self, py: Python<'py>, label: &str) -> PyResult<Bound<'py, PyList>> {
        let Some(task) = self.bundle.tasks().iter().position(|t| t.label == label) else {
            let labels: Vec<&str> = self
                .bundle
                .tasks()
                .iter()
                .map(|t| t.label.as_str())
                .collect();
            return Err(crate::errors::quanta_error(format!(
                "no task `{label}` in this bundle (tasks: {})",
                labels.join(", ")
            )));
        };
        let out = PyList::empty(py);
        for index in 0..self.bundle.n_quanta() as u32 {
            let q = py.detach(|| self.bundle.quantum(index)).py_err()?;
            if q.task as usize == task {
                let value = self
                    .quantum_json(index, &q)
                    .map_err(|e| crate::errors::quanta_error(e.to_string()))?;
                out.append(json_to_py(py, &value)?)?;
            }
        }
        Ok(out)
    }

    fn __repr__(&self) -> String {
        format!(
            "Bundle({:?}: {} quanta, output run {:?})",
            self.path.display().to_string(),
            self.bundle.n_quanta(),
            self.bundle.header().output_run
        )
    }
}

/// Iterates a bundle's quanta in order (see ``Bundle.quantum``).
#[pyclass(module = "quanta", frozen)]
pub struct QuantumIterator {
    bundle: Py<PyBundle>,
    next: std::sync::atomic::AtomicU32,
}

#[pymethods]
impl QuantumIterator {
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let bundle = self.bundle.get();
        let index = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if index as usize >= bundle.bundle.n_quanta() {
            return Ok(None);
        }
        bundle.quantum_py(py, index).map(Some)
    }
}
