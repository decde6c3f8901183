//! Bindings of the online store. `Reader` is exposed as is (its calls are the hot path: no Python layer
//! in between); `OnlineStore` is wrapped by `skewless.online.OnlineStore` for input conversion.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::pyarrow::ToPyArrow;
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyTuple};

use crate::error::Error;
use crate::online::schema::Kind;
use crate::online::{write_many, KeyBatch, Reader, Store, Window, WriteSpec};
use crate::py::arrow::{read_table, to_pyarrow};
use crate::py::errors::{guard, run_detached, run_guarded, to_py};
use crate::py::keys;
use crate::serve::{encode_keys, KeyValues, Request};

/// `get_numpy`'s result: values `[n, columns]` and statuses `[n]`.
type NumpyOut<'py> = (Bound<'py, PyArray2<f64>>, Bound<'py, PyArray1<i8>>);

/// Requests at least this large release the GIL; below it, releasing costs more than the read.
const DETACH_KEYS: usize = 1024;

#[pyclass(module = "skewless._core", name = "OnlineStore", frozen)]
pub struct PyOnlineStore {
    pub(crate) store: Arc<Store>,
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
        guard(py, || {
            let store = run_detached(py, || Store::open(&path, map_size, max_map_size))?;
            Ok(PyOnlineStore { store })
        })
    }

    /// `also`: more `(view, data)` with the same key and timestamp columns, written in the same
    /// transaction (all land or none); the counts are those of `view`'s rows.
    #[pyo3(signature = (view, data, *, keys, timestamp, created_timestamp=None, also=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        py: Python<'_>,
        view: &str,
        data: &Bound<'_, PyAny>,
        keys: Vec<String>,
        timestamp: &str,
        created_timestamp: Option<&str>,
        also: Vec<(String, Bound<'_, PyAny>)>,
    ) -> PyResult<(usize, usize)> {
        guard(py, || {
            let table = read_table(data, "data")?;
            let more = also
                .iter()
                .map(|(v, d)| Ok((v.as_str(), read_table(d, "data")?)))
                .collect::<PyResult<Vec<_>>>()?;
            let store = &self.store;
            let stats = run_detached(py, || {
                let spec = WriteSpec {
                    keys: &keys,
                    timestamp,
                    created: created_timestamp,
                };
                let mut items = vec![(view, &table, &spec)];
                items.extend(more.iter().map(|(v, t)| (*v, t, &spec)));
                write_many(store, &items).map(|mut s| s.remove(0))
            })?;
            Ok((stats.rows_written, stats.rows_skipped))
        })
    }

    #[pyo3(signature = (view, columns=None))]
    fn reader(&self, py: Python<'_>, view: &str, columns: Option<Vec<String>>) -> PyResult<PyReader> {
        guard(py, || {
            let store = self.store.clone();
            let inner = run_detached(py, || Reader::new(store, view, columns.as_deref()))?;
            Ok(PyReader { inner })
        })
    }

    fn views(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        guard(py, || run_guarded(py, || self.store.views()))
    }

    fn schema<'py>(&self, py: Python<'py>, view: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        guard(py, || match run_guarded(py, || self.store.schema(view))? {
            Some(s) => Ok(Some(s.arrow().to_pyarrow(py)?)),
            None => Ok(None),
        })
    }

    fn clear_stale_readers(&self, py: Python<'_>) -> PyResult<usize> {
        guard(py, || run_guarded(py, || self.store.clear_stale_readers()))
    }

    /// LMDB's pages checked as on open (`online::verify`): (branch, leaf, overflow pages, entries).
    fn verify(&self, py: Python<'_>) -> PyResult<(u64, u64, u64, u64)> {
        guard(py, || {
            run_detached(py, || {
                let v = self.store.verify()?;
                Ok((v.branch_pages, v.leaf_pages, v.overflow_pages, v.entries))
            })
        })
    }

    #[getter]
    fn stale_readers_cleared(&self, py: Python<'_>) -> PyResult<usize> {
        guard(py, || Ok(self.store.stale_readers_cleared))
    }

    #[getter]
    fn map_size(&self, py: Python<'_>) -> PyResult<usize> {
        guard(py, || run_guarded(py, || self.store.map_size()))
    }

    #[getter]
    fn path(&self, py: Python<'_>) -> PyResult<PathBuf> {
        guard(py, || Ok(self.store.path.clone()))
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
/// older than ``as_of - ttl``; the boundary itself is present), 3 not yet valid (stored event timestamp
/// after ``as_of``, which defaults to now: the store keeps only the latest value, so it cannot answer
/// for an earlier instant). Every status but present reads as null.
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
    /// Look up ``keys``; returns ``(values, status)``: float64 ``[n, len(columns)]`` (null, missing,
    /// expired and not yet valid as NaN; bool as 0/1) and int8 ``[n]``. Numeric views only.
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
        guard(py, || {
            run_guarded(py, || self.inner.check_numeric())?;
            let cut = window(py, as_of, ttl)?;
            let (batch, _) = self.parse_keys(py, keys, false)?;
            let n = batch.len();
            let w = self.inner.view.cols.len();
            // SAFETY: uninitialized, but get_f64 writes every row and column before Python can see it (on
            // error the array is dropped unseen).
            let values = unsafe { PyArray2::<f64>::new(py, [n, w], false) };
            // SAFETY: as above: get_f64 writes every status.
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
        })
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
        guard(py, || {
            let cut = window(py, as_of, ttl)?;
            let (batch, key_arrays) = self.parse_keys(py, keys, true)?;
            let key_arrays = key_arrays.unwrap_or_default();
            let reader = &self.inner;
            let (values, status) = if batch.len() >= DETACH_KEYS {
                run_detached(py, || reader.get_arrow(&batch, cut))?
            } else {
                run_guarded(py, || reader.get_arrow(&batch, cut))?
            };
            let s = &reader.view.schema;
            let mut fields = Vec::new();
            let mut cols: Vec<ArrayRef> = Vec::new();
            for (c, a) in s.keys.iter().zip(key_arrays) {
                fields.push(Field::new(&c.name, a.data_type().clone(), true));
                cols.push(a);
            }
            for (&j, a) in reader.view.cols.iter().zip(values) {
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
        })
    }

    /// The value columns this reader returns, in order.
    #[getter]
    fn columns(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        guard(py, || {
            let r = &self.inner.view;
            Ok(r.cols.iter().map(|&j| r.schema.values[j].name.clone()).collect())
        })
    }

    /// The view's key columns, in order.
    #[getter]
    fn key_columns(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        guard(py, || {
            Ok(self
                .inner
                .view
                .schema
                .keys
                .iter()
                .map(|c| c.name.clone())
                .collect())
        })
    }

    #[getter]
    fn view(&self, py: Python<'_>) -> PyResult<String> {
        guard(py, || Ok(self.inner.view.view.clone()))
    }
}

impl PyReader {
    /// Encodes the requested keys (checked against the view's key types); with `arrays`, also returns the
    /// key columns for `get`'s output, as the view's key types.
    fn parse_keys(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        arrays: bool,
    ) -> PyResult<(KeyBatch, Option<Vec<ArrayRef>>)> {
        let kdefs = &self.inner.view.schema.keys;
        let names: Vec<String> = kdefs.iter().map(|c| c.name.clone()).collect();
        let req = self.key_columns_of(py, keys, &names)?;
        let sig: Vec<(usize, Kind)> = kdefs
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.kind.clone()))
            .collect();
        let batch = run_guarded(py, || encode_keys(&sig, &req, &names))?;
        if !arrays {
            return Ok((batch, None));
        }
        let mut out = Vec::with_capacity(kdefs.len());
        for (c, def) in req.cols.iter().zip(kdefs) {
            // Every value was range-checked by encode_keys, so this cast is exact.
            let a =
                cast(&keys::key_array(c), &def.kind.arrow_type()).map_err(|e| to_py(py, Error::from(e)))?;
            out.push(a);
        }
        Ok((batch, Some(out)))
    }

    /// The request's key columns from any of the shapes `Reader` accepts.
    fn key_columns_of(&self, py: Python<'_>, keys: &Bound<'_, PyAny>, names: &[String]) -> PyResult<Request> {
        let width = names.len();
        let seq: Option<Vec<Bound<'_, PyAny>>> = if let Ok(l) = keys.cast::<PyList>() {
            Some(l.iter().collect())
        } else if let Ok(t) = keys.cast::<PyTuple>() {
            Some(t.iter().collect())
        } else {
            None
        };
        if let Some(items) = seq {
            let n = items.len();
            if items.first().is_some_and(|f| f.is_instance_of::<PyTuple>()) || width > 1 {
                // Composite keys: a list of tuples, one element per key column.
                let bad = |what: String| to_py(py, Error::Dtype(format!("keys: {what}")));
                let mut cols: Vec<Vec<Bound<'_, PyAny>>> =
                    (0..width).map(|_| Vec::with_capacity(n)).collect();
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
                    for (c, part) in cols.iter_mut().zip(t.iter()) {
                        c.push(part);
                    }
                }
                let cols = cols
                    .into_iter()
                    .zip(names)
                    .map(|(c, name)| keys::scalars(py, c.into_iter(), name))
                    .collect::<PyResult<Vec<_>>>()?;
                return Ok(Request { n, cols });
            }
            let col = keys::scalars(py, items.into_iter(), &names[0])?;
            return Ok(Request { n, cols: vec![col] });
        }
        let tabular = keys.is_instance_of::<pyo3::types::PyDict>()
            || keys.hasattr("column_names")?
            || keys.hasattr("columns")?;
        if width == 1 && !tabular {
            let col = keys::column(py, keys, &names[0])?;
            let n = match &col.values {
                KeyValues::Int(v) => v.len(),
                KeyValues::Str { ends, .. } | KeyValues::Bin { ends, .. } => ends.len(),
            };
            return Ok(Request { n, cols: vec![col] });
        }
        static AS_ARROW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let as_arrow = AS_ARROW.import(py, "skewless._arrow", "as_arrow")?;
        let obj = as_arrow.call1((keys, "keys"))?;
        let table = read_table(&obj, "keys")?;
        let cols = keys::table_columns(py, &table, names, "keys")?;
        Ok(Request {
            n: table.num_rows(),
            cols,
        })
    }
}

/// The instant a request is served at: `as_of` (a timezone-aware datetime), or the clock, read once.
pub fn served_at(py: Python<'_>, as_of: Option<&Bound<'_, PyAny>>) -> PyResult<i64> {
    match as_of.filter(|a| !a.is_none()) {
        Some(a) => datetime_micros(py, a),
        None => Ok(now_micros()),
    }
}

/// The real-time clock in UTC microseconds, read once per request: straight from `clock_gettime` in
/// integer arithmetic (`SystemTime`'s checked `Duration` and 128-bit microseconds were a visible part
/// of a one-key request).
#[inline]
#[allow(
    clippy::unnecessary_cast,
    reason = "time_t and c_long are 32 bits on some targets"
)]
fn now_micros() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_REALTIME always exists, so the call cannot fail
    // (were it to, `ts` would stay the epoch).
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    (ts.tv_sec as i64)
        .saturating_mul(1_000_000)
        .saturating_add(ts.tv_nsec as i64 / 1_000)
}

/// The window of a lookup at `as_of` (default: now) with an optional `ttl`.
fn window(
    py: Python<'_>,
    as_of: Option<&Bound<'_, PyAny>>,
    ttl: Option<&Bound<'_, PyAny>>,
) -> PyResult<Window> {
    let at = served_at(py, as_of)?;
    let ttl_us = match ttl.filter(|t| !t.is_none()) {
        None => None,
        Some(t) => {
            let us = delta_micros(py, t, "ttl")?;
            if us < 0 {
                return Err(to_py(
                    py,
                    Error::InvalidArgument("ttl is negative; pass a non-negative timedelta or None".into()),
                ));
            }
            Some(us)
        }
    };
    Ok(Window::new(at, ttl_us))
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
        .saturating_add(parts.1.saturating_mul(1_000_000))
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
