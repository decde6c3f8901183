//! Arrow across the boundary: any `__arrow_c_stream__` producer in, a `pyarrow.Table` out. Both ways go
//! through the C stream interface, so buffers are shared, not copied.

use arrow::array::{RecordBatch, RecordBatchReader};
use arrow::datatypes::SchemaRef;
use arrow::ffi_stream::ArrowArrayStreamReader;
use arrow::pyarrow::{FromPyArrow, IntoPyArrow, Table as PaTable, ToPyArrow};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::error::Error;
use crate::py::errors::to_py;
use crate::table::Table;

/// Reads every batch of an Arrow stream. The Python layer has already turned pandas objects and mappings
/// into pyarrow; here anything with `__arrow_c_stream__` is accepted.
pub fn read_table(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Table> {
    let py = obj.py();
    let reader = ArrowArrayStreamReader::from_pyarrow_bound(obj).map_err(|e| {
        to_py(
            py,
            Error::Dtype(format!(
                "{what} is not Arrow data ({e}); pass a pyarrow Table or RecordBatch, a polars or pandas DataFrame, \
                 or an object with __arrow_c_stream__"
            )),
        )
    })?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| to_py(py, Error::Dtype(format!("reading {what} failed: {e}"))))?;
    Ok(Table::new(schema, batches))
}

pub fn to_pyarrow(py: Python<'_>, schema: SchemaRef, batches: Vec<RecordBatch>) -> PyResult<Py<PyAny>> {
    if let [batch] = batches.as_slice() {
        // One batch (every online answer): importing it as a RecordBatch and wrapping it costs a fraction
        // of importing a stream (tens of microseconds for a one-row table).
        static FROM_BATCHES: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let rb = batch.to_pyarrow(py)?;
        let from_batches = FROM_BATCHES.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            Ok(py
                .import("pyarrow")?
                .getattr("Table")?
                .getattr("from_batches")?
                .unbind())
        })?;
        return Ok(from_batches.bind(py).call1((vec![rb],))?.unbind());
    }
    let table = PaTable::try_new(batches, schema).map_err(|e| to_py(py, Error::from(e)))?;
    Ok(table.into_pyarrow(py)?.unbind())
}
