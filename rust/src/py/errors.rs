//! The one mapping from the kernels' [`Error`] to the exception classes of `skewless.errors`, and the
//! guard that keeps a Rust panic from reaching the user.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::error::Error;

fn class<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyType>> {
    cell.import(py, "skewless.errors", name)
}

pub fn to_py(py: Python<'_>, err: Error) -> PyErr {
    static MISSING: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static DTYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static NAIVE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static CLASH: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static INVALID: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static NULLKEY: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static SCHEMA: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static MAPFULL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static STORAGE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static INTERNAL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    let (cell, name) = match &err {
        Error::MissingColumn(_) => (&MISSING, "MissingColumnError"),
        Error::Dtype(_) => (&DTYPE, "DtypeError"),
        Error::NaiveTimestamp(_) => (&NAIVE, "NaiveTimestampError"),
        Error::ColumnClash(_) => (&CLASH, "ColumnClashError"),
        Error::InvalidArgument(_) => (&INVALID, "InvalidArgumentError"),
        Error::NullKey(_) => (&NULLKEY, "NullKeyError"),
        Error::SchemaMismatch(_) => (&SCHEMA, "SchemaMismatch"),
        Error::MapFull(_) => (&MAPFULL, "MapFullError"),
        Error::Storage(_) => (&STORAGE, "StorageError"),
        Error::Internal(_) => (&INTERNAL, "InternalError"),
    };
    match class(py, cell, name) {
        Ok(cls) => PyErr::from_type(cls.clone(), err.to_string()),
        // skewless.errors is part of the package; failing to import it means a broken install.
        Err(e) => PyRuntimeError::new_err(format!("{err} (and skewless.errors failed to import: {e})")),
    }
}

/// Runs a kernel without the GIL, in the kernels' thread pool (`crate::threads`), and turns both its
/// error and a panic into a `skewless.errors` class.
pub fn run_detached<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> Result<T, Error> + Send,
{
    let out = py.detach(|| catch_unwind(AssertUnwindSafe(|| crate::threads::install(f))));
    flatten(py, out)
}

/// Like [`run_detached`] for work that needs the GIL (or is too short to be worth releasing it).
pub fn run_guarded<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce() -> Result<T, Error>,
{
    flatten(py, catch_unwind(AssertUnwindSafe(f)))
}

/// The guard of a binding entry point: runs its body (which may touch Python) and turns a panic into
/// `skewless.errors.InternalError`. Every `#[pymethods]` / `#[pyfunction]` body runs inside it.
pub fn guard<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce() -> PyResult<T>,
{
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => Err(panicked(py, panic)),
    }
}

fn panicked(py: Python<'_>, panic: Box<dyn std::any::Any + Send>) -> PyErr {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    to_py(
        py,
        Error::Internal(format!(
            "internal error in the skewless engine: {what}. Please report it with the input that caused it."
        )),
    )
}

fn flatten<T>(py: Python<'_>, out: std::thread::Result<Result<T, Error>>) -> PyResult<T> {
    match out {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_py(py, e)),
        Err(panic) => Err(panicked(py, panic)),
    }
}
