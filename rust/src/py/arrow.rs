//! Arrow across the boundary: any `__arrow_c_stream__` producer in, a `pyarrow.Table` out. Both ways go
//! through the C stream interface, so buffers are shared, not copied.

use arrow::array::{RecordBatch, RecordBatchReader};
use arrow::datatypes::SchemaRef;
use arrow::ffi_stream::ArrowArrayStreamReader;
use arrow::pyarrow::{FromPyArrow, IntoPyArrow, Table as PaTable};
use pyo3::prelude::*;

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
    let table = PaTable::try_new(batches, schema).map_err(|e| to_py(py, Error::from(e)))?;
    Ok(table.into_pyarrow(py)?.unbind())
}
