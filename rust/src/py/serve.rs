//! Bindings of the serving plan (`crate::serve`): `ServingPlan` is compiled once by
//! `FeatureStore.online_reader` and called per request; `Served` holds one `get` answer in Arrow until
//! Python asks for it (so a request that only reads statuses or one column converts nothing else).

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::pyarrow::FromPyArrow;
use numpy::{PyArray2, PyArrayDescrMethods};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use crate::error::Error;
use crate::py::arrow::to_pyarrow;
use crate::py::errors::{guard, run_detached, run_guarded, to_py};
use crate::py::keys;
use crate::py::online::{served_at, PyOnlineStore};
use crate::py::transform::PyProgram;
use crate::serve::transform::{Post, PostOut};
use crate::serve::window::WindowSpec;
use crate::serve::{PartSpec, Plan};
use crate::window::Func;

/// Requests at least this large release the GIL; below it, releasing costs more than the lookups.
const DETACH_ROWS: usize = 1024;

type NumpyOut<'py> = (Bound<'py, PyArray2<f64>>, Bound<'py, PyArray2<i8>>);
/// `NumpyOut` and the instant served at (UTC microseconds).
type NumpyAt<'py> = (Bound<'py, PyArray2<f64>>, Bound<'py, PyArray2<i8>>, i64);

/// `get_numpy`'s two output arrays over ONE block of Python memory, owned by a capsule both arrays
/// hold as their base, and the block's two parts for the plan to fill. numpy's own allocation costs,
/// per array, a lookup of its memory handler (a context variable) and a zeroing `calloc`, and the same
/// handler again to free it: a visible share of a one-key request (BENCHMARKS.md, issue 7 sixth pass).
struct Outputs<'py, 'a> {
    values: Bound<'py, PyArray2<f64>>,
    status: Bound<'py, PyArray2<i8>>,
    vs: &'a mut [f64],
    ss: &'a mut [i8],
}

/// The capsule's destructor: frees the block (`Outputs`) when the last array over it is gone.
unsafe extern "C" fn free_block(capsule: *mut pyo3::ffi::PyObject) {
    // SAFETY: called by Python, with the GIL, on a capsule made by `Outputs::new` with no name and a
    // pointer from `PyMem_Malloc`, which nothing else frees.
    unsafe { pyo3::ffi::PyMem_Free(pyo3::ffi::PyCapsule_GetPointer(capsule, std::ptr::null())) }
}

impl<'py> Outputs<'py, '_> {
    fn new(py: Python<'py>, n: usize, w: usize, v: usize) -> PyResult<Self> {
        use numpy::npyffi::{get_type_object, NpyTypes, PyArrayObject, NPY_ARRAY_WRITEABLE, PY_ARRAY_API};
        use numpy::Element;
        use pyo3::ffi;
        let too_big = || {
            to_py(
                py,
                Error::InvalidArgument(format!("{n} rows of output do not fit in memory")),
            )
        };
        let nv = n.checked_mul(w).ok_or_else(too_big)?;
        let ns = n.checked_mul(v).ok_or_else(too_big)?;
        let bytes = nv
            .checked_mul(8)
            .and_then(|b| b.checked_add(ns))
            .ok_or_else(too_big)?;
        // SAFETY: PyMem_Malloc needs the GIL, which `py` proves; it returns null or `bytes` (at least
        // one) bytes aligned for any basic type, so the float64 part at offset 0 is aligned.
        let block = unsafe { ffi::PyMem_Malloc(bytes.max(1)) };
        if block.is_null() {
            return Err(too_big());
        }
        // SAFETY: `block` is a live allocation; on failure the capsule does not exist, so it is freed here.
        let capsule = unsafe { ffi::PyCapsule_New(block, std::ptr::null(), Some(free_block)) };
        if capsule.is_null() {
            // SAFETY: `block` came from PyMem_Malloc above and nothing else owns it.
            unsafe { ffi::PyMem_Free(block) };
            return Err(PyErr::fetch(py));
        }
        // SAFETY: `capsule` is a new reference, now owned by `owner` (freed with it on any early return).
        let owner = unsafe { Bound::from_owned_ptr(py, capsule) };
        let array = |descr: Bound<'py, numpy::PyArrayDescr>,
                     cols: usize,
                     at: *mut u8|
         -> PyResult<Bound<'py, PyAny>> {
            let mut dims = [n as numpy::npyffi::npy_intp, cols as numpy::npyffi::npy_intp];
            // SAFETY: numpy's C API with the GIL held: `descr` is a new reference the call steals; `dims`
            // outlives the call; null strides ask for C order; `at` points into the block with room for
            // `n * cols` elements of the descriptor's type, aligned (offset 0, or an int8 part).
            let arr = unsafe {
                PY_ARRAY_API.PyArray_NewFromDescr(
                    py,
                    get_type_object(py, NpyTypes::PyArray_Type),
                    descr.into_dtype_ptr(),
                    2,
                    dims.as_mut_ptr(),
                    std::ptr::null_mut(),
                    at.cast(),
                    NPY_ARRAY_WRITEABLE,
                    std::ptr::null_mut(),
                )
            };
            if arr.is_null() {
                return Err(PyErr::fetch(py));
            }
            // SAFETY: `arr` is a new reference owned by `a` from here on.
            let a = unsafe { Bound::from_owned_ptr(py, arr) };
            // SAFETY: `arr` is a fresh array without a base; SetBaseObject steals the reference given,
            // which keeps the block alive as long as the array.
            if unsafe {
                PY_ARRAY_API.PyArray_SetBaseObject(py, arr.cast::<PyArrayObject>(), owner.clone().into_ptr())
            } < 0
            {
                return Err(PyErr::fetch(py));
            }
            Ok(a)
        };
        // The two descriptors, made once: numpy's lookup by type number was a visible part of the call.
        static DESCRS: pyo3::sync::PyOnceLock<(Py<numpy::PyArrayDescr>, Py<numpy::PyArrayDescr>)> =
            pyo3::sync::PyOnceLock::new();
        let (f, i) = DESCRS.get_or_init(py, || (f64::get_dtype(py).unbind(), i8::get_dtype(py).unbind()));
        let base = block.cast::<u8>();
        let values = array(f.bind(py).clone(), w, base)?;
        // SAFETY: `8 * nv <= bytes`, so the status part starts inside (or at the end of) the block.
        let at_status = unsafe { base.add(nv * 8) };
        let status = array(i.bind(py).clone(), v, at_status)?;
        // SAFETY: the block holds `bytes` writable bytes, not yet visible to any other code.
        unsafe { std::ptr::write_bytes(base, 0, bytes) };
        // SAFETY: the block holds `nv` float64 then `ns` int8, disjoint, initialized just above, aligned
        // (PyMem_Malloc's alignment; offset 0) and alive while the arrays are (their base). The slices
        // are the only access to it until the arrays are returned to Python, after the plan has filled
        // them (with or without the GIL: nothing else can reach new arrays).
        let (vs, ss) = unsafe {
            (
                std::slice::from_raw_parts_mut(base.cast::<f64>(), nv),
                std::slice::from_raw_parts_mut(at_status.cast::<i8>(), ns),
            )
        };
        Ok(Outputs {
            // SAFETY: made above as 2-d arrays of exactly these element types.
            values: unsafe { values.cast_into_unchecked() },
            // SAFETY: as above.
            status: unsafe { status.cast_into_unchecked() },
            vs,
            ss,
        })
    }
}

/// A compiled serving plan over one online store (see ``skewless.serving.OnlineReader``, which wraps it).
///
/// ``parts``: one tuple per view, ``(view, join_keys, features, ttl_us or None, version, types, aggs)``
/// where ``types`` are the declared pyarrow types of the features (used until the view has online data)
/// and ``aggs``, for an event view, ``[(column, function, window_us)]`` behind each feature (else None).
#[pyclass(module = "skewless._core", name = "ServingPlan", frozen)]
pub struct PyPlan {
    plan: Arc<Plan>,
    /// Imputation and transforms run on every answer (``post``), and the output names for messages.
    post: Option<(Arc<Post>, Vec<String>)>,
    /// The plan's key names as Python strings, made once (`keys::request`).
    key_strs: Vec<Py<PyString>>,
}

impl PyPlan {
    /// The plan's answer, through the post-stage when there is one: features and statuses.
    fn answer(
        &self,
        py: Python<'_>,
        req: &crate::serve::Request,
        at: i64,
        extra: Vec<ArrayRef>,
    ) -> PyResult<PostOut> {
        let plan = &*self.plan;
        let post = self.post.as_ref().map(|(p, _)| p.clone());
        let work = move || -> crate::error::Result<PostOut> {
            let (features, status) = plan.get_arrow(req, at)?;
            match &post {
                Some(p) => p.run(features, extra, &status, plan.n_views()),
                None => Ok(PostOut {
                    imputed: vec![None; features.len()],
                    columns: features,
                    status,
                }),
            }
        };
        if req.n >= DETACH_ROWS {
            run_detached(py, work)
        } else {
            run_guarded(py, work)
        }
    }
}

impl PyPlan {
    /// The request's entity keys and its request-time columns (as many as the post-stage reads). A plan
    /// of no view (request-time inputs only) has no keys: its row count is the request columns'.
    fn request(
        &self,
        py: Python<'_>,
        entity_rows: &Bound<'_, PyAny>,
        request: Option<&Bound<'_, PyList>>,
    ) -> PyResult<(crate::serve::Request, Vec<ArrayRef>)> {
        let mut req = keys::request(py, entity_rows, &self.plan.key_names, &self.key_strs)?;
        let extra: Vec<ArrayRef> = match request {
            Some(cols) => cols
                .iter()
                .map(|c| keys::request_column(py, &c))
                .collect::<PyResult<_>>()?,
            None => Vec::new(),
        };
        let want = self.post.as_ref().map_or(0, |(p, _)| p.n_request());
        if extra.len() != want {
            return Err(to_py(
                py,
                Error::InvalidArgument(format!(
                    "this plan takes {want} request-time column(s), {} were given",
                    extra.len()
                )),
            ));
        }
        if self.plan.key_names.is_empty() {
            req.n = extra.first().map_or(0, |a| a.len());
        }
        // The request columns come from the caller apart from the keys, so their lengths are checked here.
        if let Some(a) = extra.iter().find(|a| a.len() != req.n) {
            return Err(to_py(
                py,
                Error::Dtype(format!(
                    "entity_rows: a request-time column has {} rows, the entity rows {}; every column needs \
                     one value per row",
                    a.len(),
                    req.n
                )),
            ));
        }
        Ok((req, extra))
    }
}

#[pymethods]
impl PyPlan {
    #[new]
    #[pyo3(signature = (store, parts, post=None))]
    fn new(
        py: Python<'_>,
        store: &PyOnlineStore,
        parts: &Bound<'_, PyList>,
        post: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        guard(py, || {
            let mut specs = Vec::with_capacity(parts.len());
            for p in parts.iter() {
                #[allow(clippy::type_complexity)]
                let (view, keys, columns, ttl, version, types, aggs): (
                    String,
                    Vec<String>,
                    Vec<String>,
                    Option<i64>,
                    u64,
                    Vec<Bound<'_, PyAny>>,
                    Option<Vec<(String, String, i64)>>,
                ) = p.extract()?;
                let window = match aggs {
                    None => None,
                    Some(aggs) => Some(WindowSpec {
                        aggs: run_guarded(py, || {
                            aggs.into_iter()
                                .map(|(c, f, w)| Ok((c, f.parse::<Func>()?, w)))
                                .collect::<crate::error::Result<Vec<_>>>()
                        })?,
                    }),
                };
                let declared = types
                    .iter()
                    .map(|t| {
                        DataType::from_pyarrow_bound(t).map_err(|e| {
                            to_py(
                                py,
                                Error::InvalidArgument(format!(
                                    "a declared type of view {view:?} is not a pyarrow type: {e}"
                                )),
                            )
                        })
                    })
                    .collect::<PyResult<Vec<_>>>()?;
                specs.push(PartSpec {
                    view,
                    keys,
                    columns,
                    ttl_micros: ttl,
                    version,
                    declared,
                    window,
                });
            }
            let s = store.store.clone();
            let plan = if specs.is_empty() && post.is_some() {
                // A transform view over request-time values alone: no view to read.
                Plan::without_views(s)
            } else {
                run_detached(py, || Plan::new(s, specs))?
            };
            // ``post``: ``(TransformProgram, n_features, select, source, names)``, see
            // ``crate::serve::transform::Post``.
            let post = match post {
                None => None,
                Some(p) => {
                    #[allow(clippy::type_complexity)]
                    let (prog, n_features, select, source, names): (
                        PyRef<'_, PyProgram>,
                        usize,
                        Vec<usize>,
                        Vec<Option<usize>>,
                        Vec<String>,
                    ) = p.extract()?;
                    let program = (*prog.program).clone();
                    if n_features != plan.width || names.len() != select.len() {
                        return Err(to_py(
                            py,
                            Error::InvalidArgument(
                                "the transform post-stage does not match its serving plan".into(),
                            ),
                        ));
                    }
                    let post = Post::new(program, n_features, select, source, plan.n_views())
                        .map_err(|e| to_py(py, e))?;
                    if plan.n_views() == 0 && post.n_request() == 0 {
                        // Nothing would give the request its rows.
                        return Err(to_py(
                            py,
                            Error::InvalidArgument(
                                "a serving plan needs at least one feature view or request-time column"
                                    .into(),
                            ),
                        ));
                    }
                    Some((Arc::new(post), names))
                }
            };
            let key_strs = plan
                .key_names
                .iter()
                .map(|k| PyString::intern(py, k).unbind())
                .collect();
            Ok(PyPlan {
                plan: Arc::new(plan),
                post,
                key_strs,
            })
        })
    }

    /// Feature values as float64 ``[n, features]`` and statuses int8 ``[n, views]``.
    #[pyo3(signature = (entity_rows, as_of=None, request=None))]
    fn get_numpy<'py>(
        &self,
        py: Python<'py>,
        entity_rows: &Bound<'py, PyAny>,
        as_of: Option<&Bound<'py, PyAny>>,
        request: Option<&Bound<'py, PyList>>,
    ) -> PyResult<NumpyOut<'py>> {
        self.get_numpy_at(py, entity_rows, as_of, request)
            .map(|(v, s, _)| (v, s))
    }

    /// ``get_numpy`` plus the instant served at (UTC microseconds): the served-feature log records it
    /// exactly as the lookup used it, with no second clock read.
    #[pyo3(signature = (entity_rows, as_of=None, request=None))]
    fn get_numpy_at<'py>(
        &self,
        py: Python<'py>,
        entity_rows: &Bound<'py, PyAny>,
        as_of: Option<&Bound<'py, PyAny>>,
        request: Option<&Bound<'py, PyList>>,
    ) -> PyResult<NumpyAt<'py>> {
        guard(py, || {
            let plan = &*self.plan;
            let at = served_at(py, as_of)?;
            let (req, extra) = self.request(py, entity_rows, request)?;
            let (n, w, v) = match &self.post {
                Some((p, _)) => (req.n, p.width(), p.width()),
                None => {
                    run_guarded(py, || plan.check_numeric())?;
                    (req.n, plan.width, plan.n_views())
                }
            };
            let Some((p, names)) = &self.post else {
                // Filled in place: the plan writes straight into the two arrays' one block (`Outputs`).
                let out = Outputs::new(py, n, w, v)?;
                let (values, status, vs, ss) = (out.values, out.status, out.vs, out.ss);
                if n >= DETACH_ROWS {
                    run_detached(py, || plan.get_f64(&req, at, vs, ss))?;
                } else {
                    run_guarded(py, || plan.get_f64(&req, at, vs, ss))?;
                }
                return Ok((values, status, at));
            };
            // Filled in Rust, then handed to numpy without a copy (and without numpy's borrow tracking).
            let (vs, ss) = {
                let work = || p.numpy(plan, &req, at, extra, names);
                if n >= DETACH_ROWS {
                    run_detached(py, work)?
                } else {
                    run_guarded(py, work)?
                }
            };
            let shape = |e: numpy::ndarray::ShapeError| to_py(py, Error::Internal(e.to_string()));
            let values = PyArray2::from_owned_array(
                py,
                numpy::ndarray::Array2::from_shape_vec((n, w), vs).map_err(shape)?,
            );
            let status = PyArray2::from_owned_array(
                py,
                numpy::ndarray::Array2::from_shape_vec((n, v), ss).map_err(shape)?,
            );
            Ok((values, status, at))
        })
    }

    /// The answer to ``entity_rows`` as a :class:`Served` (entity columns, features, statuses, served_at);
    /// ``request``: the request-time columns of the post-stage, as pyarrow arrays.
    #[pyo3(signature = (entity_rows, as_of=None, request=None))]
    fn get(
        &self,
        py: Python<'_>,
        entity_rows: &Bound<'_, PyAny>,
        as_of: Option<&Bound<'_, PyAny>>,
        request: Option<&Bound<'_, PyList>>,
    ) -> PyResult<PyServed> {
        guard(py, || {
            let plan = &*self.plan;
            let at = served_at(py, as_of)?;
            let (req, extra) = self.request(py, entity_rows, request)?;
            let out = self.answer(py, &req, at, extra)?;
            let (features, status) = (out.columns, out.status);
            let v = if self.post.is_some() {
                features.len()
            } else {
                plan.n_views()
            };
            let status = numpy::ndarray::Array2::from_shape_vec((req.n, v), status)
                .map_err(|e| to_py(py, Error::Internal(e.to_string())))?;
            Ok(PyServed {
                plan: self.plan.clone(),
                keys: req.cols,
                features,
                status,
                status_array: pyo3::sync::PyOnceLock::new(),
                served_at: at,
                n: req.n,
            })
        })
    }

    /// The request's entity columns (every view's join keys, first appearance first).
    #[getter]
    fn key_names(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        guard(py, || Ok(self.plan.key_names.clone()))
    }

    /// ``[(view, definition version)]`` in plan order.
    #[getter]
    fn versions(&self, py: Python<'_>) -> PyResult<Vec<(String, u64)>> {
        guard(py, || {
            Ok(self
                .plan
                .versions()
                .into_iter()
                .map(|(v, n)| (v.to_string(), n))
                .collect())
        })
    }
}

/// One served answer: features as Arrow arrays, statuses ``[n, views]``, the instant served at.
#[pyclass(module = "skewless._core", name = "Served", frozen)]
pub struct PyServed {
    plan: Arc<Plan>,
    /// The request's entity columns, made Arrow arrays only when the table is asked for (most
    /// answers are read as statuses or converted once, and a one-entity `get` is short).
    keys: Vec<crate::serve::KeyColumn>,
    features: Vec<ArrayRef>,
    /// The statuses, and the numpy array every read returns, made on the first read.
    status: numpy::ndarray::Array2<i8>,
    status_array: pyo3::sync::PyOnceLock<Py<PyArray2<i8>>>,
    served_at: i64,
    n: usize,
}

#[pymethods]
impl PyServed {
    /// The answer as a ``pyarrow.Table``: the entity columns, then the features named ``names``.
    fn table(&self, py: Python<'_>, names: Vec<String>) -> PyResult<Py<PyAny>> {
        guard(py, || {
            if names.len() != self.features.len() {
                return Err(to_py(
                    py,
                    Error::InvalidArgument(format!(
                        "{} names for {} features",
                        names.len(),
                        self.features.len()
                    )),
                ));
            }
            let mut fields = Vec::with_capacity(self.keys.len() + names.len());
            let mut cols = Vec::with_capacity(fields.capacity());
            for (k, c) in self.plan.key_names.iter().zip(&self.keys) {
                let a = keys::key_array(c);
                fields.push(Field::new(k, a.data_type().clone(), true));
                cols.push(a);
            }
            for (name, a) in names.iter().zip(&self.features) {
                fields.push(Field::new(name, a.data_type().clone(), true));
                cols.push(a.clone());
            }
            let schema = Arc::new(Schema::new(fields));
            let batch = run_guarded(py, || Ok(RecordBatch::try_new(schema.clone(), cols)?))?;
            to_pyarrow(py, schema, vec![batch])
        })
    }

    /// Statuses, int8 ``[n, views]`` (``skewless.online.Status``).
    #[getter]
    fn status(&self, py: Python<'_>) -> PyResult<Py<PyArray2<i8>>> {
        guard(py, || {
            Ok(self
                .status_array
                .get_or_init(py, || {
                    PyArray2::from_owned_array(py, self.status.clone()).unbind()
                })
                .clone_ref(py))
        })
    }

    /// The request instant, UTC microseconds.
    #[getter]
    fn served_at_us(&self, py: Python<'_>) -> PyResult<i64> {
        guard(py, || Ok(self.served_at))
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        guard(py, || Ok(self.n))
    }
}
