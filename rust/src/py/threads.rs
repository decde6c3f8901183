//! `skewless._core.set_num_threads` / `num_threads`: the size of the pool kernels run in
//! (`crate::threads`). Arguments were checked by `python/skewless/threads.py`.

use pyo3::prelude::*;

use crate::py::errors::{guard, run_guarded};
use crate::threads;

#[pyfunction]
fn set_num_threads(py: Python<'_>, threads: usize) -> PyResult<()> {
    guard(py, || run_guarded(py, || threads::set(threads)))
}

#[pyfunction]
fn num_threads(py: Python<'_>) -> PyResult<usize> {
    guard(py, || Ok(threads::current()))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(num_threads, m)?)
}
