//! `quanta.Butler`: get, put, queries and provenance over
//! `quanta_butler::Butler`, making the library calls the CLI makes
//! (`cli/src/repo_cmds.rs`, `merge_cmds.rs`).

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use quanta_butler::{provenance_graph, Butler, Direction};
use quanta_core::{DimensionUniverse, Uuid};

use crate::convert::{self, serde_to_py};
use crate::datasets;
use crate::errors::{quanta_error, IntoPyResult};

/// A data repository: its Registry and Datastore behind get and put by
/// dataset type and data ID, and queries.
///
/// ``Butler(repo, collections=None, run=None, writeable=False)`` opens the
/// repository directory ``repo`` (made by ``quanta repo create``).
/// ``collections`` are searched, in order, by ``get`` and
/// ``query_datasets`` when they are not given one; ``run`` is the RUN
/// collection ``put`` writes to by default. A read-only butler (the
/// default) cannot ``put``; a writeable one takes the registry's writer
/// lock for each ``put`` only, so command-line writers are not held up by
/// an open notebook.
#[pyclass(module = "quanta", name = "Butler", frozen)]
pub struct PyButler {
    butler: Mutex<Butler>,
    /// The repository's universe, to convert data IDs without the lock.
    universe: DimensionUniverse,
    root: PathBuf,
    collections: Vec<String>,
    run: Option<String>,
    writeable: bool,
}

impl PyButler {
    /// Runs `f` on the butler with the GIL released (the lock is taken
    /// inside, so the closure borrows nothing that is not `Sync`).
    fn detached<T, E>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Butler) -> Result<T, E> + Send,
    ) -> PyResult<T>
    where
        T: Send,
        E: std::error::Error + Send + 'static,
    {
        let result = py.detach(|| {
            let mut butler = self.butler.lock().ok()?;
            Some(f(&mut butler))
        });
        match result {
            Some(r) => r.py_err(),
            None => Err(quanta_error(
                "this Butler was poisoned by a panic in an earlier call",
            )),
        }
    }

    fn collections_or_default(&self, given: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
        let collections = match given.filter(|c| !c.is_none()) {
            Some(c) => convert::names(c, "collections")?,
            None => self.collections.clone(),
        };
        if collections.is_empty() {
            return Err(quanta_error(
                "no collections to search: pass collections=... here or to Butler(...)",
            ));
        }
        Ok(collections)
    }
}

#[pymethods]
impl PyButler {
    #[new]
    #[pyo3(signature = (repo, *, collections=None, run=None, writeable=false))]
    fn new(
        py: Python<'_>,
        repo: PathBuf,
        collections: Option<&Bound<'_, PyAny>>,
        run: Option<String>,
        writeable: bool,
    ) -> PyResult<Self> {
        let collections = match collections {
            Some(c) if !c.is_none() => convert::names(c, "collections")?,
            _ => Vec::new(),
        };
        let root = repo.clone();
        let butler = py
            .detach(move || {
                if writeable {
                    Butler::open(&repo)
                } else {
                    Butler::open_read_only(&repo)
                }
            })
            .py_err()?
            .with_formatters(quanta_formats::formatters());
        Ok(Self {
            universe: butler.universe().clone(),
            butler: Mutex::new(butler),
            root,
            collections,
            run,
            writeable,
        })
    }

    /// The repository directory.
    #[getter]
    fn root(&self) -> PathBuf {
        self.root.clone()
    }

    /// The collections searched when a call gives none.
    #[getter]
    fn collections(&self) -> Vec<String> {
        self.collections.clone()
    }

    /// The RUN collection ``put`` writes to when it is given none.
    #[getter]
    fn run(&self) -> Option<String> {
        self.run.clone()
    }

    /// Whether this butler can ``put``.
    #[getter]
    fn writeable(&self) -> bool {
        self.writeable
    }

    fn __repr__(&self) -> String {
        format!(
            "Butler({:?}, collections={:?}, run={:?}, writeable={})",
            self.root.display().to_string(),
            self.collections,
            self.run,
            if self.writeable { "True" } else { "False" }
        )
    }

    /// Reads a dataset (``quanta get``): the first found along
    /// ``collections``. ``dataset_type`` may name a component
    /// (``"calexp.image"``); ``parameters`` restrict the read
    /// (``{"bbox": (x0, y0, x1, y1)}`` for images, pixels with x1, y1
    /// exclusive; ``{"columns": [...], "rows": (start, end)}`` for
    /// catalogs). The data ID is a dict, a ``"k=v,k=v"`` string, keyword
    /// arguments, or a mix.
    #[pyo3(signature = (dataset_type, data_id=None, *, collections=None, parameters=None, **kwargs))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        dataset_type: &str,
        data_id: Option<&Bound<'py, PyAny>>,
        collections: Option<&Bound<'py, PyAny>>,
        parameters: Option<&Bound<'py, PyAny>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let collections = self.collections_or_default(collections)?;
        let parameters = convert::read_parameters(parameters)?;
        let data_id = convert::data_id(data_id, kwargs, &self.universe)?;
        let obj = self.detached(py, |butler| {
            butler.get_with(dataset_type, &data_id, &collections, &parameters)
        })?;
        datasets::to_python(py, &obj)
    }

    /// Stores ``obj`` as a new dataset of ``dataset_type`` with ``data_id``
    /// in RUN ``run`` (or the butler's; registered if it does not exist),
    /// and returns its reference
    /// (``dataset_type``, ``data_id``, ``run``, ``id``). JSON-like objects
    /// for storage class ``Json``, ``bytes`` for ``Bytes``, a 2-D array
    /// (with optional ``.header`` and ``.wcs``, as ``get`` returns them)
    /// for ``ImageF``.
    #[pyo3(signature = (obj, dataset_type, data_id=None, *, run=None, **kwargs))]
    fn put<'py>(
        &self,
        py: Python<'py>,
        obj: &Bound<'py, PyAny>,
        dataset_type: &str,
        data_id: Option<&Bound<'py, PyAny>>,
        run: Option<String>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if !self.writeable {
            return Err(quanta_error(format!(
                "{}: this Butler is read-only; open it with Butler(repo, writeable=True) to put",
                self.root.display()
            )));
        }
        let run = run.or_else(|| self.run.clone()).ok_or_else(|| {
            quanta_error("no RUN to put into: pass run=... here or to Butler(...)")
        })?;
        let data_id = convert::data_id(data_id, kwargs, &self.universe)?;
        let storage_class = self
            .detached(py, |butler| {
                butler.registry().dataset_type_required(dataset_type)
            })?
            .storage_class;
        let value = datasets::from_python(obj, &storage_class)?;
        let root = self.root.clone();
        let dataset_ref = self.detached(py, move |butler| {
            // The writer lock, as every writing command takes it
            // (`cli/src/plugins.rs::open_butler`), held for this put only.
            let _lock = Butler::lock_writer(&root, "python put", &mut |holder| {
                eprintln!(
                    "waiting for {holder} to finish (registry writer lock of {})",
                    root.display()
                )
            })?;
            // As LSST's writeable Butler does with its run: a RUN that
            // does not exist yet is registered first.
            butler.registry_mut().register_collection(
                &run,
                quanta_core::CollectionType::Run,
                None,
            )?;
            butler.put(&value, dataset_type, &data_id, &run)
        })?;
        serde_to_py(py, &dataset_ref)
    }

    /// Datasets of ``dataset_type`` (a name, a list, or None for every
    /// type) in ``collections`` (``quanta query-datasets --json``): a list
    /// of dicts with ``dataset_type``, ``data_id``, ``run``, ``id`` (the
    /// UUID as a str), ``collection`` and ``stored`` (path, formatter,
    /// size, checksum). ``where`` is the query language of ``--where``,
    /// ``bind`` the values of its ``:name`` placeholders. With
    /// ``find_first`` (the default) only the first match along the
    /// collections per data ID.
    #[pyo3(signature = (dataset_type=None, *, collections=None, r#where="", bind=None, find_first=true))]
    fn query_datasets<'py>(
        &self,
        py: Python<'py>,
        dataset_type: Option<&Bound<'py, PyAny>>,
        collections: Option<&Bound<'py, PyAny>>,
        r#where: &str,
        bind: Option<&Bound<'py, PyAny>>,
        find_first: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let collections = self.collections_or_default(collections)?;
        let binds = convert::binds(bind)?;
        let asked = match dataset_type.filter(|d| !d.is_none()) {
            Some(d) => convert::names(d, "dataset_type")?,
            None => Vec::new(),
        };
        let found = self.detached(py, |butler| {
            // A component (`calexp.wcs`) is found as its parent and
            // listed under the name asked for, as the CLI lists it.
            let registry = butler.registry();
            let mut parents = Vec::with_capacity(asked.len());
            let mut as_component: Vec<(String, String)> = Vec::new();
            for name in &asked {
                let (parent, component) = registry.resolve_dataset_type(name)?;
                if component.is_some() {
                    as_component.push((parent.name.clone(), name.clone()));
                }
                if !parents.contains(&parent.name) {
                    parents.push(parent.name);
                }
            }
            let found =
                registry.query_datasets(&parents, &collections, r#where, &binds, find_first)?;
            let mut listed = Vec::with_capacity(found.len());
            for f in found {
                let parent = &f.dataset_ref.dataset_type;
                for (_, name) in as_component.iter().filter(|(p, _)| p == parent) {
                    let mut c = f.clone();
                    c.dataset_ref.dataset_type = name.clone();
                    listed.push(c);
                }
                if as_component.is_empty() || asked.iter().any(|n| n == parent) {
                    listed.push(f);
                }
            }
            listed.sort_by(|a, b| {
                (&a.dataset_ref.dataset_type, &a.dataset_ref.data_id)
                    .cmp(&(&b.dataset_ref.dataset_type, &b.dataset_ref.data_id))
            });
            Ok::<_, quanta_registry::RegistryError>(listed)
        })?;
        serde_to_py(py, &found)
    }

    /// The data IDs over ``dimensions`` (a list, or a comma-separated str)
    /// that exist in the registry and satisfy ``where``
    /// (``quanta query-data-ids --json``): a list of dicts.
    #[pyo3(signature = (dimensions, *, r#where="", bind=None))]
    fn query_data_ids<'py>(
        &self,
        py: Python<'py>,
        dimensions: &Bound<'py, PyAny>,
        r#where: &str,
        bind: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let dimensions = convert::names(dimensions, "dimensions")?;
        let binds = convert::binds(bind)?;
        let ids = self.detached(py, |butler| {
            butler
                .registry()
                .query_data_ids(&dimensions, r#where, &binds)
        })?;
        serde_to_py(py, &ids)
    }

    /// The registered dataset types (``quanta dataset-type list --json``).
    fn query_dataset_types<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let types = self.detached(py, |butler| butler.registry().list_dataset_types())?;
        serde_to_py(py, &types)
    }

    /// The collections (``quanta collection list --json``).
    fn query_collections<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let collections = self.detached(py, |butler| butler.registry().list_collections())?;
        serde_to_py(py, &collections)
    }

    /// The provenance of a dataset (``quanta provenance --json``): the
    /// quanta and inputs it was made from, or with ``downstream=True`` what
    /// was made from it, at most ``depth`` quantum hops. A dict with
    /// ``root``, ``direction``, ``datasets``, ``quanta`` (task label, data
    /// ID, config, execution: status, host, times, memory, software
    /// versions; inputs and outputs), ``sources`` and ``truncated``.
    #[pyo3(signature = (dataset_id, *, downstream=false, depth=None))]
    fn provenance<'py>(
        &self,
        py: Python<'py>,
        dataset_id: &Bound<'py, PyAny>,
        downstream: bool,
        depth: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // A str or a uuid.UUID.
        let text = dataset_id.str()?.to_str()?.to_string();
        let id: Uuid = text
            .parse()
            .map_err(|_| quanta_error(format!("`{text}` is not a dataset UUID")))?;
        let direction = if downstream {
            Direction::Downstream
        } else {
            Direction::Upstream
        };
        let graph = self.detached(py, |butler| {
            provenance_graph(butler.registry(), id, direction, depth)
        })?;
        serde_to_py(py, &graph)
    }

    /// The names of the dimensions of this repository's universe.
    fn dimensions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let names: Vec<String> = self.universe.dimensions().map(|e| e.name.clone()).collect();
        PyList::new(py, names)
    }
}
