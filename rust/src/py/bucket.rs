//! `skewless._core.key_buckets`: the bucket of every key row (`crate::group::bucket`), for
//! `python/skewless/spark.py`, which checked the arguments.

use arrow::array::Array;
use arrow::pyarrow::ToPyArrow;
use pyo3::prelude::*;

use crate::group::bucket::buckets;
use crate::py::arrow::read_table;
use crate::py::errors::{guard, run_detached};

/// `keys`: an Arrow table (any `__arrow_c_stream__`) of the key columns, in key order.
#[pyfunction]
fn key_buckets(py: Python<'_>, keys: &Bound<'_, PyAny>, n: u32) -> PyResult<Py<PyAny>> {
    guard(py, || {
        let t = read_table(keys, "the key columns")?;
        let cols: Vec<Vec<_>> = (0..t.schema.fields().len())
            .map(|i| t.batches.iter().map(|b| b.column(i).clone()).collect())
            .collect();
        let out = run_detached(py, || buckets(&cols, n))?;
        Ok(out.into_data().to_pyarrow(py)?.unbind())
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(key_buckets, m)?)
}
