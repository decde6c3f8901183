//! Request keys from Python: the one place lookup keys are converted. Every shape (lists of scalars,
//! numpy arrays, Series, Arrow arrays, mappings, lists of dicts) becomes [`KeyColumn`]s; whether a value
//! fits the stored key type is checked when the kernel encodes it (`serve::encode_keys`), so an
//! out-of-range or wrong-typed key is a `DtypeError`, never a silent miss. Request-time values (a
//! transform's `request:<column>` inputs) are converted here too ([`request_column`]).

use std::sync::Arc;

use arrow::array::{
    make_array, Array, ArrayData, ArrayRef, BinaryBuilder, Float64Array, Int64Array, StringBuilder,
    UInt64Array,
};
use arrow::buffer::NullBuffer;
use arrow::compute::concat;
use arrow::datatypes::DataType;
use arrow::pyarrow::FromPyArrow;
use numpy::{PyArray1, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::error::Error;
use crate::online::cells::Chunk;
use crate::py::errors::to_py;
use crate::serve::{KeyColumn, KeyValues, Request};
use crate::table::Table;

fn dtype(py: Python<'_>, msg: String) -> PyErr {
    to_py(py, Error::Dtype(msg))
}

fn type_name(item: &Bound<'_, PyAny>) -> String {
    item.get_type().name().map(|s| s.to_string()).unwrap_or_default()
}

/// Builds a column from Python scalars: ints, strings or bytes (one kind per column), None for no key.
pub fn scalars<'py>(
    py: Python<'py>,
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    name: &str,
) -> PyResult<KeyColumn> {
    #[derive(PartialEq)]
    enum Mode {
        Unknown,
        Int,
        Str,
        Bin,
    }
    let mut mode = Mode::Unknown;
    let mut ints: Vec<i128> = Vec::with_capacity(items.size_hint().0);
    let mut data: Vec<u8> = Vec::new();
    let mut ends: Vec<usize> = Vec::new();
    let mut valid: Vec<bool> = Vec::new();
    let mut n = 0usize;
    let mixed = |what: &str| {
        dtype(
            py,
            format!("join key {name:?} mixes {what} with other key types; pass one type per key column"),
        )
    };
    for item in items {
        // The common key, a plain int in the i64 range, in one type check and one conversion (a
        // string, bytes or bool is never exactly an int; a larger int takes the general path below).
        // Its `ends` entry is left out: an integer column never reads `ends`, and a column that is
        // not all integers is an error.
        if matches!(mode, Mode::Unknown | Mode::Int) && item.is_exact_instance_of::<PyInt>() {
            if let Ok(v) = item.extract::<i64>() {
                mode = Mode::Int;
                ints.push(v.into());
                if !valid.is_empty() {
                    valid.push(true);
                }
                n += 1;
                continue;
            }
        }
        if item.is_none() {
            if valid.is_empty() {
                valid = vec![true; n];
            }
            valid.push(false);
            ints.push(0);
            ends.push(data.len());
            n += 1;
            continue;
        }
        if let Ok(s) = item.cast::<PyString>() {
            if mode == Mode::Unknown {
                mode = Mode::Str;
            } else if mode != Mode::Str {
                return Err(mixed("strings"));
            }
            data.extend_from_slice(s.to_str()?.as_bytes());
        } else if let Ok(b) = item.cast::<PyBytes>() {
            if mode == Mode::Unknown {
                mode = Mode::Bin;
            } else if mode != Mode::Bin {
                return Err(mixed("bytes"));
            }
            data.extend_from_slice(b.as_bytes());
        } else {
            if item.is_instance_of::<PyBool>() {
                return Err(dtype(
                    py,
                    format!("join key {name:?} holds a bool; keys are integers, strings or bytes"),
                ));
            }
            let v: i128 = if let Ok(v) = item.extract::<i64>() {
                v.into()
            } else if let Ok(v) = item.extract::<u64>() {
                v.into()
            } else if item.hasattr("__index__")? {
                return Err(dtype(
                    py,
                    format!("join key {name:?} = {item} is outside the 64-bit integer range of keys"),
                ));
            } else {
                return Err(dtype(
                    py,
                    format!(
                        "join key {name:?} holds a {}; keys are integers, strings or bytes (cast floats to int)",
                        type_name(&item)
                    ),
                ));
            };
            if mode == Mode::Unknown {
                mode = Mode::Int;
            } else if mode != Mode::Int {
                return Err(mixed("integers"));
            }
            ints.push(v);
        }
        if !valid.is_empty() {
            valid.push(true);
        }
        if mode != Mode::Int {
            ints.push(0);
        }
        ends.push(data.len());
        n += 1;
    }
    let values = match mode {
        // Only nulls (or nothing): any kind fits; integers carry no bytes.
        Mode::Unknown | Mode::Int => KeyValues::Int(ints),
        Mode::Str => KeyValues::Str { data, ends },
        Mode::Bin => KeyValues::Bin { data, ends },
    };
    Ok(KeyColumn { values, valid })
}

/// A column from an Arrow array (integers, strings, binary; nulls are missing keys).
pub fn arrow_column(py: Python<'_>, a: &ArrayRef, name: &str) -> PyResult<KeyColumn> {
    let n = a.len();
    let valid: Vec<bool> = match a.nulls() {
        Some(m) if m.null_count() > 0 => (0..n).map(|i| m.is_valid(i)).collect(),
        _ => Vec::new(),
    };
    if let DataType::Dictionary(_, values) = a.data_type() {
        // Categorical keys (pandas category, polars Categorical / Enum) are looked up by their values.
        let decoded = arrow::compute::cast(a, values).map_err(|e| {
            dtype(
                py,
                format!("join key {name:?}: cannot decode its categories: {e}"),
            )
        })?;
        return arrow_column(py, &decoded, name);
    }
    if *a.data_type() == DataType::Null {
        return Ok(KeyColumn {
            values: KeyValues::Int(vec![0; n]),
            valid: vec![false; n],
        });
    }
    let bad = || {
        dtype(
            py,
            format!(
                "join key {name:?} has Arrow type {}; keys are integers, strings or binary. Cast the column",
                a.data_type()
            ),
        )
    };
    let c = Chunk::new(a).map_err(|_| bad())?;
    let values = match a.data_type() {
        t if t.is_signed_integer() => {
            KeyValues::Int((0..n).map(|i| c.i64_at(i).unwrap_or(0).into()).collect())
        }
        t if t.is_unsigned_integer() => {
            KeyValues::Int((0..n).map(|i| c.u64_at(i).unwrap_or(0).into()).collect())
        }
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView => {
            let mut data = Vec::new();
            let mut ends = Vec::with_capacity(n);
            for i in 0..n {
                if valid.is_empty() || valid[i] {
                    data.extend_from_slice(c.bytes_at(i).unwrap_or(&[]));
                }
                ends.push(data.len());
            }
            if matches!(
                a.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) {
                KeyValues::Str { data, ends }
            } else {
                KeyValues::Bin { data, ends }
            }
        }
        _ => return Err(bad()),
    };
    Ok(KeyColumn { values, valid })
}

/// One key column given as any one-dimensional Python container.
pub fn column(py: Python<'_>, obj: &Bound<'_, PyAny>, name: &str) -> PyResult<KeyColumn> {
    if let Ok(l) = obj.cast::<PyList>() {
        return scalars(py, l.iter(), name);
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return scalars(py, t.iter(), name);
    }
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(dtype(
            py,
            format!("join key {name:?} is a single string; pass a list of keys, e.g. [\"alice\"]"),
        ));
    }
    if let Ok(arr) = obj.cast::<PyUntypedArray>() {
        if arr.ndim() != 1 {
            return Err(dtype(
                py,
                format!(
                    "join key {name:?} is a {}-dimensional array; pass one dimension",
                    arr.ndim()
                ),
            ));
        }
        let kind: char = arr.dtype().getattr("kind")?.extract()?;
        let ints = |a: &[i128]| KeyColumn {
            values: KeyValues::Int(a.to_vec()),
            valid: Vec::new(),
        };
        match kind {
            'i' => {
                let a = arr.call_method1("astype", ("int64",))?;
                let a = a.cast::<PyArray1<i64>>()?.readonly();
                let v: Vec<i128> = a.as_array().iter().map(|&x| x.into()).collect();
                return Ok(ints(&v));
            }
            'u' => {
                let a = arr.call_method1("astype", ("uint64",))?;
                let a = a.cast::<PyArray1<u64>>()?.readonly();
                let v: Vec<i128> = a.as_array().iter().map(|&x| x.into()).collect();
                return Ok(ints(&v));
            }
            'f' | 'c' | 'b' | 'M' | 'm' => {
                return Err(dtype(
                    py,
                    format!(
                        "join key {name:?} is a numpy array of dtype {}; keys are integers, strings or bytes",
                        arr.dtype()
                    ),
                ))
            }
            _ => {}
        }
    }
    // Everything else (Series of pandas / polars, pyarrow arrays, nullable and categorical columns) goes
    // through the one conversion of user data to Arrow.
    arrow_column(
        py,
        &as_arrow(py, obj, &format!("entity_rows column {name:?}"))?,
        name,
    )
}

/// A column of user data (`what` names it in errors) through `skewless._arrow.as_column`, the one
/// conversion of user data to Arrow.
fn as_arrow(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<ArrayRef> {
    static AS_COLUMN: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let as_column = AS_COLUMN.import(py, "skewless._arrow", "as_column")?;
    let one = as_column.call1((obj, what))?.call_method0("combine_chunks")?;
    let data = ArrayData::from_pyarrow_bound(&one)
        .map_err(|e| dtype(py, format!("{what} is not a readable Arrow array: {e}")))?;
    Ok(make_array(data))
}

/// A request-time column (a transform's `request:<name>` input) as Arrow. A list or tuple of Python
/// floats and ints with None for a missing value, what a service passes per request, is read here and
/// typed as pyarrow types it (float64 when any value is a float, else int64); everything else (other
/// values, arrays, Series) goes through `as_arrow`, so both give the same column.
pub fn request_column(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<ArrayRef> {
    let numbers = if let Ok(l) = obj.cast::<PyList>() {
        numbers(l.iter())
    } else if let Ok(t) = obj.cast::<PyTuple>() {
        numbers(t.iter())
    } else {
        None
    };
    if let Some(a) = numbers {
        return Ok(a);
    }
    // A pyarrow array is taken as it is: `OnlineReader.get` converts the columns of a request (for its
    // log) before they get here, and `as_column` would only wrap and unwrap them again.
    static PA_ARRAY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    if obj.is_instance(PA_ARRAY.import(py, "pyarrow", "Array")?)? {
        if let Ok(data) = ArrayData::from_pyarrow_bound(obj) {
            return Ok(make_array(data));
        }
    }
    as_arrow(py, obj, "a request-time column of the entity rows")
}

/// Floats and ints (not bools, which are ints in Python) with Nones as one Arrow array; None, to leave
/// the column to pyarrow, when an item is of another type, an int is outside i64 or (beside a float)
/// not exactly a float (pyarrow refuses it), or no item is a number (pyarrow's null type).
fn numbers<'py>(items: impl ExactSizeIterator<Item = Bound<'py, PyAny>>) -> Option<ArrayRef> {
    const EXACT_IN_F64: u64 = 1 << 53;
    let mut floats: Vec<f64> = Vec::with_capacity(items.len());
    let mut ints: Vec<i64> = Vec::with_capacity(items.len());
    let mut valid: Vec<bool> = Vec::with_capacity(items.len());
    let (mut any_float, mut any_int, mut inexact) = (false, false, false);
    for item in items {
        if item.is_none() {
            floats.push(0.0);
            ints.push(0);
            valid.push(false);
            continue;
        }
        if let Ok(f) = item.cast::<PyFloat>() {
            any_float = true;
            floats.push(f.value());
            ints.push(0);
        } else if item.is_exact_instance_of::<PyInt>() {
            let v: i64 = item.extract().ok()?;
            any_int = true;
            inexact |= v.unsigned_abs() > EXACT_IN_F64;
            // As pyarrow does for a list that mixes ints and floats.
            #[allow(clippy::cast_precision_loss)]
            floats.push(v as f64);
            ints.push(v);
        } else {
            return None;
        }
        valid.push(true);
    }
    let nulls = valid.iter().any(|v| !v).then(|| NullBuffer::from(valid));
    if any_float {
        if any_int && inexact {
            return None;
        }
        Some(Arc::new(Float64Array::new(floats.into(), nulls)))
    } else if any_int {
        Some(Arc::new(Int64Array::new(ints.into(), nulls)))
    } else {
        None
    }
}

/// The key columns `names` of a table read from Arrow.
pub fn table_columns(
    py: Python<'_>,
    table: &Table,
    names: &[String],
    what: &str,
) -> PyResult<Vec<KeyColumn>> {
    names
        .iter()
        .map(|k| {
            let col = table.column(k, what).map_err(|e| to_py(py, e))?;
            let refs: Vec<&dyn Array> = col.chunks.iter().map(|c| c.as_ref()).collect();
            let one = if refs.is_empty() {
                arrow::array::new_empty_array(&col.data_type)
            } else {
                concat(&refs).map_err(|e| to_py(py, Error::Dtype(format!("{what}: column {k:?}: {e}"))))?
            };
            arrow_column(py, &one, k)
        })
        .collect()
}

fn missing(py: Python<'_>, k: &str, names: &[String]) -> PyErr {
    to_py(
        py,
        Error::MissingColumn(format!("entity_rows has no join key {k:?}; it needs {names:?}")),
    )
}

/// A request's entity columns from `entity_rows`: a mapping of join key to values, a table (pyarrow,
/// pandas, polars), a list of dicts (one per entity), or, when the plan has a single join key, the key
/// values themselves (a list, numpy array, Series, pyarrow array).
///
/// `interned`: `names` as Python strings made once by the caller (a dict lookup by them skips making
/// and hashing a new string per key per request).
pub fn request(
    py: Python<'_>,
    rows: &Bound<'_, PyAny>,
    names: &[String],
    interned: &[Py<PyString>],
) -> PyResult<Request> {
    // A service's commonest request, one plain int in a one-item list for a plan of one join key, before
    // any shape check: the same column `scalars` makes of it.
    if let [_] = names {
        if let Ok(l) = rows.cast_exact::<PyList>() {
            if l.len() == 1 {
                let item = l.get_item(0)?;
                if item.is_exact_instance_of::<PyInt>() {
                    if let Ok(v) = item.extract::<i64>() {
                        let col = KeyColumn {
                            values: KeyValues::Int(vec![v.into()]),
                            valid: Vec::new(),
                        };
                        return Ok(Request {
                            n: 1,
                            cols: vec![col],
                        });
                    }
                }
            }
        }
    }
    // The common shapes first, without a round trip through pyarrow.
    let plain = |rows: &Bound<'_, PyAny>| -> PyResult<bool> {
        let items_are_dicts = if let Ok(l) = rows.cast::<PyList>() {
            l.len() > 0 && l.get_item(0)?.is_instance_of::<PyDict>()
        } else if let Ok(t) = rows.cast::<PyTuple>() {
            t.len() > 0 && t.get_item(0)?.is_instance_of::<PyDict>()
        } else {
            return Ok(false);
        };
        Ok(names.len() == 1 && !items_are_dicts)
    };
    let cols: Vec<KeyColumn> = if plain(rows)? {
        vec![column(py, rows, &names[0])?]
    } else if let Ok(d) = rows.cast::<PyDict>() {
        let mut out = Vec::with_capacity(names.len());
        for (k, s) in names.iter().zip(interned) {
            let v = d.get_item(s.bind(py))?.ok_or_else(|| missing(py, k, names))?;
            out.push(column(py, &v, k)?);
        }
        out
    } else if let Some(dicts) = list_of_dicts(rows)? {
        let mut out = Vec::with_capacity(names.len());
        for k in names {
            let mut vals = Vec::with_capacity(dicts.len());
            for d in &dicts {
                vals.push(d.get_item(k)?.unwrap_or_else(|| py.None().into_bound(py)));
            }
            out.push(scalars(py, vals.into_iter(), k)?);
        }
        out
    } else {
        static IS_TABLE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        static AS_TABLE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let is_table: bool = IS_TABLE
            .import(py, "skewless._arrow", "is_table")?
            .call1((rows,))?
            .extract()?;
        let series = type_name(rows) == "Series";
        let sequence = rows.hasattr("__len__")?
            && !rows.is_instance_of::<PyString>()
            && !rows.is_instance_of::<PyBytes>();
        if names.len() == 1 && (!is_table || series) && sequence {
            vec![column(py, rows, &names[0])?]
        } else if is_table {
            let table = AS_TABLE
                .import(py, "skewless._arrow", "as_table")?
                .call1((rows, "entity_rows"))?;
            let have: Vec<String> = table.getattr("column_names")?.extract()?;
            let mut out = Vec::with_capacity(names.len());
            for k in names {
                if !have.contains(k) {
                    return Err(missing(py, k, names));
                }
                out.push(column(py, &table.call_method1("column", (k,))?, k)?);
            }
            out
        } else {
            return Err(to_py(
                py,
                Error::InvalidArgument(format!(
                    "entity_rows must be a mapping of join key to values, a table (pyarrow, pandas, polars) or a \
                     list of dicts (join keys: {names:?}); got {}",
                    type_name(rows)
                )),
            ));
        }
    };
    let n = cols.first().map_or(0, col_len);
    if cols.iter().any(|c| col_len(c) != n) {
        let mut lens: Vec<usize> = cols.iter().map(col_len).collect();
        lens.sort_unstable();
        lens.dedup();
        return Err(to_py(
            py,
            Error::InvalidArgument(format!(
                "entity_rows: join key columns have different lengths {lens:?}"
            )),
        ));
    }
    Ok(Request { n, cols })
}

fn col_len(c: &KeyColumn) -> usize {
    match &c.values {
        KeyValues::Int(v) => v.len(),
        KeyValues::Str { ends, .. } | KeyValues::Bin { ends, .. } => ends.len(),
    }
}

/// `rows` as dicts when it is a list or tuple whose first element is a dict (then all must be).
fn list_of_dicts<'py>(rows: &Bound<'py, PyAny>) -> PyResult<Option<Vec<Bound<'py, PyDict>>>> {
    let items: Vec<Bound<'py, PyAny>> = if let Ok(l) = rows.cast::<PyList>() {
        l.iter().collect()
    } else if let Ok(t) = rows.cast::<PyTuple>() {
        t.iter().collect()
    } else {
        return Ok(None);
    };
    if !items.first().is_some_and(|f| f.is_instance_of::<PyDict>()) {
        return Ok(None);
    }
    let py = rows.py();
    items
        .into_iter()
        .map(|i| {
            i.cast_into::<PyDict>().map_err(|_| {
                to_py(
                    py,
                    Error::InvalidArgument(
                        "entity_rows must be a mapping of join key to values or a list of dicts".into(),
                    ),
                )
            })
        })
        .collect::<PyResult<Vec<_>>>()
        .map(Some)
}

/// A request column as an Arrow array for a response: integers as int64 (uint64 past its range),
/// strings, binary; missing keys as nulls.
pub fn key_array(c: &KeyColumn) -> ArrayRef {
    let ok = |i: usize| c.valid.is_empty() || c.valid[i];
    match &c.values {
        KeyValues::Int(v) => {
            if v.iter().all(|&x| i64::try_from(x).is_ok()) {
                Arc::new(Int64Array::from_iter(
                    v.iter().enumerate().map(|(i, &x)| ok(i).then_some(x as i64)),
                ))
            } else {
                Arc::new(UInt64Array::from_iter(
                    v.iter()
                        .enumerate()
                        .map(|(i, &x)| (ok(i) && x >= 0).then_some(x as u64)),
                ))
            }
        }
        KeyValues::Str { data, ends } => {
            let mut b = StringBuilder::with_capacity(ends.len(), data.len());
            let mut start = 0;
            for (i, &e) in ends.iter().enumerate() {
                if ok(i) {
                    b.append_value(String::from_utf8_lossy(&data[start..e]));
                } else {
                    b.append_null();
                }
                start = e;
            }
            Arc::new(b.finish())
        }
        KeyValues::Bin { data, ends } => {
            let mut b = BinaryBuilder::with_capacity(ends.len(), data.len());
            let mut start = 0;
            for (i, &e) in ends.iter().enumerate() {
                if ok(i) {
                    b.append_value(&data[start..e]);
                } else {
                    b.append_null();
                }
                start = e;
            }
            Arc::new(b.finish())
        }
    }
}
