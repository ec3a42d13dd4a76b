//! Library errors as Python exceptions with the CLI's message.
//!
//! The exception classes are defined in Python (`quanta/_errors.py`, so
//! that `DatasetNotFoundError` can also be a `LookupError`); this module
//! looks them up once and raises them.

use std::error::Error;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// The error with its causes, each said once: the text the `quanta` command
/// prints after `error: ` (`cli/src/main.rs`, `error_text`), so a message
/// reads the same from Python and from the shell.
pub fn error_text(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}

static QUANTA_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static NOT_FOUND_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn error_class(py: Python<'_>, cell: &'static PyOnceLock<Py<PyType>>, name: &str) -> Py<PyType> {
    let found = cell.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        let class = py.import("quanta._errors")?.getattr(name)?;
        Ok(class.cast_into::<PyType>()?.unbind())
    });
    match found {
        Ok(class) => class.clone_ref(py),
        // The package is installed without its Python half: still raise
        // something a caller can catch.
        Err(_) => py.get_type::<pyo3::exceptions::PyRuntimeError>().unbind(),
    }
}

/// A `quanta.QuantaError` with `message`.
pub fn quanta_error(message: impl Into<String>) -> PyErr {
    Python::attach(|py| {
        let class = error_class(py, &QUANTA_ERROR, "QuantaError");
        PyErr::from_type(class.into_bound(py), message.into())
    })
}

/// A `quanta.DatasetNotFoundError` (also a `LookupError`) with `message`.
pub fn not_found_error(message: impl Into<String>) -> PyErr {
    Python::attach(|py| {
        let class = error_class(py, &NOT_FOUND_ERROR, "DatasetNotFoundError");
        PyErr::from_type(class.into_bound(py), message.into())
    })
}

/// Converts a library error: "not found" errors become
/// `DatasetNotFoundError`, everything else `QuantaError`, each with the
/// CLI's text.
pub fn to_py_err<E: Error + 'static>(e: E) -> PyErr {
    let text = error_text(&e);
    let any: &dyn std::any::Any = &e;
    let not_found = matches!(
        any.downcast_ref::<quanta_butler::ButlerError>(),
        Some(quanta_butler::ButlerError::NotFound { .. })
    ) || matches!(
        any.downcast_ref::<quanta_butler::ProvenanceError>(),
        Some(quanta_butler::ProvenanceError::UnknownDataset(_))
    );
    if not_found {
        not_found_error(text)
    } else {
        quanta_error(text)
    }
}

/// `Result` with library errors mapped by [`to_py_err`].
pub trait IntoPyResult<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T, E: Error + 'static> IntoPyResult<T> for Result<T, E> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py_err)
    }
}
