//! Bindings of the online store. `Reader` is exposed as is (its calls are the hot path: no Python layer
//! in between); `OnlineStore` is wrapped by `skewless.online.OnlineStore` for input conversion.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BinaryBuilder, Int64Array, RecordBatch, StringBuilder, UInt64Array};
use arrow::compute::{cast, concat};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::pyarrow::ToPyArrow;
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyUntypedArray};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::error::Error;
use crate::online::cells::Chunk;
use crate::online::key;
use crate::online::read::cutoff;
use crate::online::schema::Kind;
use crate::online::write::encode_key;
use crate::online::{write, KeyBatch, Reader, Store, WriteSpec};
use crate::py::arrow::{read_table, to_pyarrow};
use crate::py::errors::{run_detached, run_guarded, to_py};

/// `get_numpy`'s result: values `[n, columns]` and statuses `[n]`.
type NumpyOut<'py> = (Bound<'py, PyArray2<f64>>, Bound<'py, PyArray1<i8>>);

/// Requests at least this large release the GIL; below it, releasing costs more than the read.
const DETACH_KEYS: usize = 1024;

#[pyclass(module = "skewless._core", name = "OnlineStore", frozen)]
pub struct PyOnlineStore {
    store: Arc<Store>,
}

#[pymethods]
impl PyOnlineStore {
    #[new]
    #[pyo3(signature = (path, *, map_size=None, max_map_size=None))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        map_size: Option<usize>,
        max_map_size: Option<usize>,
    ) -> PyResult<Self> {
        let store = run_detached(py, || Store::open(&path, map_size, max_map_size))?;
        Ok(PyOnlineStore { store })
    }

    #[pyo3(signature = (view, data, *, keys, timestamp, created_timestamp=None))]
    fn write(
        &self,
        py: Python<'_>,
        view: &str,
        data: &Bound<'_, PyAny>,
        keys: Vec<String>,
        timestamp: &str,
        created_timestamp: Option<&str>,
    ) -> PyResult<(usize, usize)> {
        let table = read_table(data, "data")?;
        let store = &self.store;
        let stats = run_detached(py, || {
            let spec = WriteSpec {
                keys: &keys,
                timestamp,
                created: created_timestamp,
            };
            write(store, view, &table, &spec)
        })?;
        Ok((stats.rows_written, stats.rows_skipped))
    }

    #[pyo3(signature = (view, columns=None))]
    fn reader(&self, py: Python<'_>, view: &str, columns: Option<Vec<String>>) -> PyResult<PyReader> {
        let store = self.store.clone();
        let inner = run_detached(py, || Reader::new(store, view, columns.as_deref()))?;
        Ok(PyReader { inner })
    }

    fn views(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        run_guarded(py, || self.store.views())
    }

    fn schema<'py>(&self, py: Python<'py>, view: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        match run_guarded(py, || self.store.schema(view))? {
            Some(s) => Ok(Some(s.arrow().to_pyarrow(py)?)),
            None => Ok(None),
        }
    }

    fn clear_stale_readers(&self, py: Python<'_>) -> PyResult<usize> {
        run_guarded(py, || self.store.clear_stale_readers())
    }

    #[getter]
    fn stale_readers_cleared(&self) -> usize {
        self.store.stale_readers_cleared
    }

    #[getter]
    fn map_size(&self, py: Python<'_>) -> PyResult<usize> {
        run_guarded(py, || self.store.map_size())
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.store.path.clone()
    }
}

/// A prepared reader of one feature view: resolves the view's database and column decoders once, then
/// serves lookups. Get one from ``OnlineStore.reader(view, columns=None)``.
///
/// ``keys`` is a list/tuple of scalars, a 1-D numpy array or a Series (one key column), a list of tuples
/// (several key columns), or a mapping / Arrow table / DataFrame of the key columns. A null key is
/// reported as not found.
///
/// Statuses (``skewless.online.Status``): 0 present, 1 not found, 2 expired (stored event timestamp
/// older than ``as_of - ttl``; the boundary itself is present). Not found and expired rows are null.
///
/// Example:
///     >>> r = store.reader("user_stats", columns=["clicks", "spend"])  # doctest: +SKIP
///     >>> values, status = r.get_numpy([42, 7])  # doctest: +SKIP
#[pyclass(module = "skewless._core", name = "Reader", frozen)]
pub struct PyReader {
    inner: Reader,
}

#[pymethods]
impl PyReader {
    /// Look up ``keys``; returns ``(values, status)``: float64 ``[n, len(columns)]`` (null, missing and
    /// expired as NaN; bool as 0/1) and int8 ``[n]``. Numeric views only.
    ///
    /// Example:
    ///     >>> values, status = reader.get_numpy([1, 2, 3], ttl=timedelta(days=1))  # doctest: +SKIP
    #[pyo3(signature = (keys, *, as_of=None, ttl=None))]
    fn get_numpy<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
        as_of: Option<&Bound<'py, PyAny>>,
        ttl: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<NumpyOut<'py>> {
        run_guarded(py, || self.inner.check_numeric())?;
        let cut = expiry(py, as_of, ttl)?;
        let (batch, _) = self.parse_keys(py, keys, false)?;
        let n = batch.len();
        let w = self.inner.cols.len();
        // SAFETY: both arrays are fully written by get_f64 (every row, every column, every status) before
        // Python can see them.
        let values = unsafe { PyArray2::<f64>::new(py, [n, w], false) };
        let status = unsafe { PyArray1::<i8>::new(py, [n], false) };
        {
            let mut vw = values.readwrite();
            let mut sw = status.readwrite();
            let v = vw
                .as_slice_mut()
                .map_err(|e| to_py(py, Error::Internal(e.to_string())))?;
            let s = sw
                .as_slice_mut()
                .map_err(|e| to_py(py, Error::Internal(e.to_string())))?;
            let reader = &self.inner;
            if n >= DETACH_KEYS {
                run_detached(py, || reader.get_f64(&batch, cut, v, s))?;
            } else {
                run_guarded(py, || reader.get_f64(&batch, cut, v, s))?;
            }
        }
        Ok((values, status))
    }

    /// Look up ``keys``; returns a ``pyarrow.Table`` with one row per key in request order: the key
    /// columns, the selected value columns (their recorded Arrow types) and the lookup status (int8, see
    /// ``skewless.online.Status``) in a column named ``status_column`` (default ``"status"``; pass
    /// another name when the view has a column called ``status``).
    ///
    /// Example:
    ///     >>> reader.get(["alice", "bob"]).to_pylist()  # doctest: +SKIP
    ///     >>> reader.get(["alice"], status_column="lookup").column("lookup")  # doctest: +SKIP
    #[pyo3(signature = (keys, *, as_of=None, ttl=None, status_column="status"))]
    fn get(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        as_of: Option<&Bound<'_, PyAny>>,
        ttl: Option<&Bound<'_, PyAny>>,
        status_column: &str,
    ) -> PyResult<Py<PyAny>> {
        let cut = expiry(py, as_of, ttl)?;
        let (batch, key_arrays) = self.parse_keys(py, keys, true)?;
        let key_arrays = key_arrays.unwrap_or_default();
        let reader = &self.inner;
        let (values, status) = if batch.len() >= DETACH_KEYS {
            run_detached(py, || reader.get_arrow(&batch, cut))?
        } else {
            run_guarded(py, || reader.get_arrow(&batch, cut))?
        };
        let s = &reader.schema;
        let mut fields = Vec::new();
        let mut cols: Vec<ArrayRef> = Vec::new();
        for (c, a) in s.keys.iter().zip(key_arrays) {
            fields.push(Field::new(&c.name, a.data_type().clone(), true));
            cols.push(a);
        }
        for (&j, a) in reader.cols.iter().zip(values) {
            fields.push(Field::new(&s.values[j].name, a.data_type().clone(), true));
            cols.push(a);
        }
        if fields.iter().any(|f| f.name() == status_column) {
            return Err(to_py(
                py,
                Error::ColumnClash(format!(
                    "view has a column named {status_column:?}, which get() uses for the lookup status; pass \
                     status_column=\"<another name>\", select other columns (reader(view, columns=[...])) \
                     or use get_numpy"
                )),
            ));
        }
        fields.push(Field::new(status_column, DataType::Int8, false));
        cols.push(Arc::new(status));
        let schema = Arc::new(Schema::new(fields));
        let rb = RecordBatch::try_new(schema.clone(), cols).map_err(|e| to_py(py, Error::from(e)))?;
        to_pyarrow(py, schema, vec![rb])
    }

    /// The value columns this reader returns, in order.
    #[getter]
    fn columns(&self) -> Vec<String> {
        self.inner
            .cols
            .iter()
            .map(|&j| self.inner.schema.values[j].name.clone())
            .collect()
    }

    /// The view's key columns, in order.
    #[getter]
    fn key_columns(&self) -> Vec<String> {
        self.inner.schema.keys.iter().map(|c| c.name.clone()).collect()
    }

    #[getter]
    fn view(&self) -> String {
        self.inner.view.clone()
    }
}

impl PyReader {
    /// Encodes the requested keys; with `arrays`, also returns the key columns for `get`'s output.
    fn parse_keys(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        arrays: bool,
    ) -> PyResult<(KeyBatch, Option<Vec<ArrayRef>>)> {
        let kdefs = &self.inner.schema.keys;
        if kdefs.len() > 1 {
            if let Ok(list) = keys.cast::<PyList>() {
                return self.tuples(py, list.iter(), list.len(), arrays);
            }
        }
        if kdefs.len() == 1 {
            let kind = &kdefs[0].kind;
            if let Ok(list) = keys.cast::<PyList>() {
                return scalars(py, kind, list.iter(), list.len(), arrays);
            }
            if let Ok(t) = keys.cast::<PyTuple>() {
                return scalars(py, kind, t.iter(), t.len(), arrays);
            }
            if keys.cast::<PyUntypedArray>().is_ok() {
                if kind.is_signed_int() || kind.is_unsigned_int() {
                    let dtype = if kind.is_signed_int() { "int64" } else { "uint64" };
                    // Already the right dtype: no conversion call (it costs about a microsecond).
                    let exact = if kind.is_signed_int() {
                        keys.cast::<PyArray1<i64>>().is_ok()
                    } else {
                        keys.cast::<PyArray1<u64>>().is_ok()
                    };
                    let arr = if exact {
                        keys.clone()
                    } else {
                        keys.call_method1("astype", (dtype, "C", "same_kind", true, false)).map_err(|e| {
                            to_py(py, Error::Dtype(format!("keys: a numpy array of integers is needed for this view's integer key ({e})")))
                        })?
                    };
                    let (b, a) = if kind.is_signed_int() {
                        numpy_keys::<i64>(py, &arr, arrays, key::push_i64, |v| Arc::new(Int64Array::from(v)))?
                    } else {
                        numpy_keys::<u64>(py, &arr, arrays, key::push_u64, |v| {
                            Arc::new(UInt64Array::from(v))
                        })?
                    };
                    return Ok((b, cast_keys(py, a, kind)?));
                }
                let list = keys.call_method0("tolist")?;
                let list = list.cast::<PyList>()?;
                return scalars(py, kind, list.iter(), list.len(), arrays);
            }
            // One-dimensional containers (pandas/polars Series, pyarrow arrays): convert once and retry.
            let shape_1d = keys
                .getattr("shape")
                .ok()
                .and_then(|s| s.extract::<Vec<usize>>().ok())
                .is_some_and(|s| s.len() == 1);
            if shape_1d && keys.hasattr("to_numpy")? {
                return self.parse_keys(py, &keys.call_method0("to_numpy")?, arrays);
            }
            if keys.hasattr("to_pylist")? && !keys.hasattr("column_names")? {
                return self.parse_keys(py, &keys.call_method0("to_pylist")?, arrays);
            }
            if keys.is_instance_of::<PyString>() || keys.is_instance_of::<PyBytes>() {
                return Err(to_py(
                    py,
                    Error::Dtype("keys is a single string; pass a list of keys, e.g. [\"alice\"]".into()),
                ));
            }
        }
        self.arrow_keys(py, keys, arrays)
    }

    /// Composite keys given as a list of tuples, one element per key column.
    fn tuples<'py>(
        &self,
        py: Python<'py>,
        items: impl Iterator<Item = Bound<'py, PyAny>>,
        n: usize,
        arrays: bool,
    ) -> PyResult<(KeyBatch, Option<Vec<ArrayRef>>)> {
        let kdefs = &self.inner.schema.keys;
        let width = kdefs.len();
        let mut b = KeyBatch::with_capacity(n);
        let mut cols: Vec<Vec<Bound<'py, PyAny>>> = if arrays {
            (0..width).map(|_| Vec::with_capacity(n)).collect()
        } else {
            Vec::new()
        };
        let bad = |what: String| to_py(py, Error::Dtype(format!("keys: {what}")));
        for item in items {
            let t = item.cast::<PyTuple>().map_err(|_| {
                bad(format!(
                    "this view has {width} key columns; pass a list of {width}-tuples"
                ))
            })?;
            if t.len() != width {
                return Err(bad(format!(
                    "a key tuple has {} elements; this view has {width} key columns",
                    t.len()
                )));
            }
            for (i, (part, def)) in t.iter().zip(kdefs).enumerate() {
                let last = i + 1 == width;
                let k = &def.kind;
                if k.is_signed_int() {
                    let v: i64 = part
                        .extract()
                        .map_err(|_| bad(format!("{:?} must be an integer", def.name)))?;
                    key::push_i64(&mut b.bytes, v);
                } else if k.is_unsigned_int() {
                    let v: u64 = part
                        .extract()
                        .map_err(|_| bad(format!("{:?} must be a non-negative integer", def.name)))?;
                    key::push_u64(&mut b.bytes, v);
                } else if *k == Kind::Str {
                    let v = part
                        .cast::<PyString>()
                        .map_err(|_| bad(format!("{:?} must be a string", def.name)))?;
                    key::push_bytes(&mut b.bytes, v.to_str()?.as_bytes(), last);
                } else {
                    let v = part
                        .cast::<PyBytes>()
                        .map_err(|_| bad(format!("{:?} must be bytes", def.name)))?;
                    key::push_bytes(&mut b.bytes, v.as_bytes(), last);
                }
                if arrays {
                    cols[i].push(part);
                }
            }
            b.finish_key();
        }
        if !arrays {
            return Ok((b, None));
        }
        // The output key columns (get only): one column at a time through the one-column parser.
        let mut out = Vec::with_capacity(width);
        for (col, def) in cols.into_iter().zip(kdefs) {
            let (_, a) = scalars(py, &def.kind, col.into_iter(), n, true)?;
            out.extend(a.unwrap_or_default());
        }
        Ok((b, Some(out)))
    }

    /// Keys given as columns (mapping, Arrow table, DataFrame): each key column is cast to the view's type.
    fn arrow_keys(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        arrays: bool,
    ) -> PyResult<(KeyBatch, Option<Vec<ArrayRef>>)> {
        static AS_ARROW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let as_arrow = AS_ARROW.import(py, "skewless._arrow", "as_arrow")?;
        let obj = as_arrow.call1((keys, "keys"))?;
        let table = read_table(&obj, "keys")?;
        let kdefs = &self.inner.schema.keys;
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(kdefs.len());
        for k in kdefs {
            let col = table.column(&k.name, "keys").map_err(|e| to_py(py, e))?;
            let target = k.kind.arrow_type();
            let chunks: Vec<ArrayRef> = col
                .chunks
                .iter()
                .map(|c| cast(c, &target))
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    to_py(
                        py,
                        Error::Dtype(format!("key column {:?} cannot be read as {target}: {e}", k.name)),
                    )
                })?;
            let refs: Vec<&dyn Array> = chunks.iter().map(|c| c.as_ref()).collect();
            let one = if refs.is_empty() {
                arrow::array::new_empty_array(&target)
            } else {
                concat(&refs).map_err(|e| to_py(py, Error::from(e)))?
            };
            cols.push(one);
        }
        let chunks: Vec<Chunk> = cols
            .iter()
            .map(Chunk::new)
            .collect::<Result<_, _>>()
            .map_err(|e| to_py(py, e))?;
        let n = cols.first().map_or(0, |c| c.len());
        let mut b = KeyBatch::with_capacity(n);
        for r in 0..n {
            let start = b.bytes.len();
            if !encode_key(&chunks, r, &mut b.bytes) {
                // A null key is not found: the empty key, which LMDB never stores.
                b.bytes.truncate(start);
            }
            b.finish_key();
        }
        Ok((b, arrays.then_some(cols)))
    }
}

fn cast_keys(py: Python<'_>, a: Option<ArrayRef>, kind: &Kind) -> PyResult<Option<Vec<ArrayRef>>> {
    match a {
        None => Ok(None),
        Some(a) => {
            let c = cast(&a, &kind.arrow_type()).map_err(|e| to_py(py, Error::from(e)))?;
            Ok(Some(vec![c]))
        }
    }
}

/// Keys given as Python scalars for a one-column key.
fn scalars<'py>(
    py: Python<'py>,
    kind: &Kind,
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    n: usize,
    arrays: bool,
) -> PyResult<(KeyBatch, Option<Vec<ArrayRef>>)> {
    let mut b = KeyBatch::with_capacity(n);
    let bad = |what: &str, item: &Bound<'py, PyAny>| {
        let t = item.get_type().name().map(|s| s.to_string()).unwrap_or_default();
        to_py(
            py,
            Error::Dtype(format!(
                "keys: this view's key is {what}, but a key is a {t}; pass {what} keys"
            )),
        )
    };
    if kind.is_signed_int() {
        let mut vals = Vec::with_capacity(if arrays { n } else { 0 });
        for item in items {
            let v: i64 = item.extract().map_err(|_| bad("an integer", &item))?;
            key::push_i64(&mut b.bytes, v);
            b.finish_key();
            if arrays {
                vals.push(v);
            }
        }
        let a = arrays.then(|| Arc::new(Int64Array::from(vals)) as ArrayRef);
        return Ok((b, cast_keys(py, a, kind)?));
    }
    if kind.is_unsigned_int() {
        let mut vals = Vec::with_capacity(if arrays { n } else { 0 });
        for item in items {
            let v: u64 = item.extract().map_err(|_| bad("a non-negative integer", &item))?;
            key::push_u64(&mut b.bytes, v);
            b.finish_key();
            if arrays {
                vals.push(v);
            }
        }
        let a = arrays.then(|| Arc::new(UInt64Array::from(vals)) as ArrayRef);
        return Ok((b, cast_keys(py, a, kind)?));
    }
    if *kind == Kind::Str {
        let mut out = arrays.then(|| StringBuilder::with_capacity(n, n * 8));
        for item in items {
            let s = item.cast::<PyString>().map_err(|_| bad("a string", &item))?;
            let s = s.to_str()?;
            b.bytes.extend_from_slice(s.as_bytes());
            b.finish_key();
            if let Some(o) = out.as_mut() {
                o.append_value(s);
            }
        }
        return Ok((b, out.map(|mut o| vec![Arc::new(o.finish()) as ArrayRef])));
    }
    let mut out = arrays.then(|| BinaryBuilder::with_capacity(n, n * 8));
    for item in items {
        let s = item.cast::<PyBytes>().map_err(|_| bad("bytes", &item))?;
        b.bytes.extend_from_slice(s.as_bytes());
        b.finish_key();
        if let Some(o) = out.as_mut() {
            o.append_value(s.as_bytes());
        }
    }
    Ok((b, out.map(|mut o| vec![Arc::new(o.finish()) as ArrayRef])))
}

/// The expiry cut-off for `as_of`/`ttl`: `None` without a ttl (nothing expires).
fn expiry(
    py: Python<'_>,
    as_of: Option<&Bound<'_, PyAny>>,
    ttl: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<i64>> {
    let Some(ttl) = ttl.filter(|t| !t.is_none()) else {
        if let Some(a) = as_of.filter(|a| !a.is_none()) {
            datetime_micros(py, a)?; // still reject a naive as_of
        }
        return Ok(None);
    };
    let ttl_us = delta_micros(py, ttl, "ttl")?;
    if ttl_us < 0 {
        return Err(to_py(
            py,
            Error::InvalidArgument("ttl is negative; pass a non-negative timedelta or None".into()),
        ));
    }
    let now = match as_of.filter(|a| !a.is_none()) {
        Some(a) => datetime_micros(py, a)?,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0),
    };
    Ok(Some(cutoff(now, ttl_us)))
}

fn delta_micros(py: Python<'_>, d: &Bound<'_, PyAny>, what: &str) -> PyResult<i64> {
    let parts = (|| -> PyResult<(i64, i64, i64)> {
        Ok((
            d.getattr("days")?.extract()?,
            d.getattr("seconds")?.extract()?,
            d.getattr("microseconds")?.extract()?,
        ))
    })()
    .map_err(|_| {
        to_py(
            py,
            Error::InvalidArgument(format!("{what} must be a datetime.timedelta")),
        )
    })?;
    Ok(parts
        .0
        .saturating_mul(86_400_000_000)
        .saturating_add(parts.1 * 1_000_000)
        .saturating_add(parts.2))
}

fn datetime_micros(py: Python<'_>, dt: &Bound<'_, PyAny>) -> PyResult<i64> {
    static EPOCH: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let offset = dt.call_method0("utcoffset").map_err(|_| {
        to_py(
            py,
            Error::InvalidArgument("as_of must be a timezone-aware datetime.datetime".into()),
        )
    })?;
    if offset.is_none() {
        return Err(to_py(
            py,
            Error::NaiveTimestamp(
                "as_of is a naive datetime, so it is not an instant; pass a timezone-aware one, e.g. \
                 datetime.now(timezone.utc)"
                    .into(),
            ),
        ));
    }
    let epoch = EPOCH.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        let m = py.import("datetime")?;
        let utc = m.getattr("timezone")?.getattr("utc")?;
        Ok(m.getattr("datetime")?
            .call1((1970, 1, 1, 0, 0, 0, 0, utc))?
            .unbind())
    })?;
    let delta = dt.call_method1("__sub__", (epoch.bind(py),))?;
    delta_micros(py, &delta, "as_of")
}

/// Encodes a one-dimensional numpy array of integer keys (already of dtype `T`); with `arrays`, also
/// returns them as an Arrow column for `get`'s output.
fn numpy_keys<T: numpy::Element + Copy>(
    py: Python<'_>,
    arr: &Bound<'_, PyAny>,
    arrays: bool,
    push: fn(&mut Vec<u8>, T),
    column: fn(Vec<T>) -> ArrayRef,
) -> PyResult<(KeyBatch, Option<ArrayRef>)> {
    let a = arr
        .cast::<PyArray1<T>>()
        .map_err(|e| to_py(py, Error::Dtype(format!("keys: {e}"))))?;
    let ro = a.readonly();
    let s = ro
        .as_slice()
        .map_err(|e| to_py(py, Error::Dtype(format!("keys: {e}"))))?;
    let mut b = KeyBatch::with_capacity(s.len());
    for &v in s {
        push(&mut b.bytes, v);
        b.finish_key();
    }
    Ok((b, arrays.then(|| column(s.to_vec()))))
}
