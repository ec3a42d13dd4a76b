//! The `quanta` Python package's compiled module (`quanta._quanta`): a thin
//! layer over the quanta crates, built by maturin as an abi3 wheel for
//! CPython 3.10 and later.
//!
//! Owns: the conversion between Python objects and quanta's types (data
//! IDs, binds, read parameters, JSON values, the FITS formats' in-memory
//! types as numpy arrays) and the Python classes `Butler` and `Bundle`, and
//! the compiled half of the Python task worker (`worker.rs`: a bundle's
//! quanta read and written through its `QuantumBackedButler`).
//! Every operation is the library call the `quanta` command makes for the
//! same command (`get`, `query-datasets`, `provenance`, `bundle show`, …),
//! so a Python user sees the same results and the same error messages.
//!
//! Must not: hold logic of its own beyond conversion (that belongs in the
//! libraries), shell out to the CLI, or write SQL.
//!
//! The GIL is released around every call into the libraries (reads, decodes,
//! queries, the wait for the registry's writer lock), so other Python
//! threads run meanwhile; one `Butler` serializes its own calls (one SQLite
//! connection).

mod bundle;
mod butler;
mod convert;
mod datasets;
mod errors;
mod worker;

use pyo3::prelude::*;

/// The compiled half of the `quanta` package; import `quanta` instead.
#[pymodule]
#[pyo3(name = "_quanta")]
fn quanta_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<butler::PyButler>()?;
    m.add_class::<bundle::PyBundle>()?;
    m.add_class::<bundle::QuantumIterator>()?;
    m.add_class::<worker::PyWorkerSession>()?;
    m.add_class::<worker::PyQuantum>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
