//! `skewless._core.key_buckets`: the bucket of every key row (`crate::group::bucket`), and
//! `skewless._core.partition_rows`: rows reordered by group (`crate::group::partition`), for
//! `python/skewless/spark.py`, which checked the arguments.

use arrow::array::Array;
use arrow::pyarrow::ToPyArrow;
use pyo3::prelude::*;

use numpy::{PyArray1, PyArrayMethods};

use crate::error::Error;
use crate::group::bucket::buckets;
use crate::group::partition::partition;
use crate::py::arrow::{read_table, to_pyarrow};
use crate::py::errors::{guard, run_detached, to_py};

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

/// `table`: any `__arrow_c_stream__`; `groups`: a contiguous numpy int32 array, one number in `0..n`
/// per row. Returns (the rows ordered by group, stably, as a one-batch table; each group's row count
/// as a numpy uint64 array of `n`).
#[pyfunction]
fn partition_rows<'py>(
    py: Python<'py>,
    table: &Bound<'py, PyAny>,
    groups: &Bound<'py, PyArray1<i32>>,
    n: usize,
) -> PyResult<(Py<PyAny>, Bound<'py, PyArray1<u64>>)> {
    guard(py, || {
        let t = read_table(table, "the rows to partition")?;
        let g = groups.readonly();
        let g = g.as_slice().map_err(|e| {
            to_py(
                py,
                Error::InvalidArgument(format!("the group numbers must be contiguous ({e})")),
            )
        })?;
        let (batch, counts) = run_detached(py, || partition(&t, &[g], n))?;
        let out = to_pyarrow(py, batch.schema(), vec![batch])?;
        Ok((out, PyArray1::from_vec(py, counts)))
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(key_buckets, m)?)?;
    m.add_function(wrap_pyfunction!(partition_rows, m)?)
}
