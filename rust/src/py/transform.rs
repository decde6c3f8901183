//! Bindings of the transform programs (`crate::transform`): `TransformProgram` is compiled once from the
//! nodes `skewless.transforms` derives from the registry, and runs over a training set's columns
//! (offline); the serving plan takes the same program as its post-stage (`crate::serve::transform`).

use std::sync::Arc;

use arrow::array::{
    make_array, new_empty_array, ArrayData, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions,
};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::pyarrow::FromPyArrow;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::error::{Error, Result};
use crate::py::arrow::{read_table, to_pyarrow};
use crate::py::errors::{guard, run_detached, to_py};
use crate::transform::{Categories, Node, Op, Program};

/// One Arrow array from a pyarrow Array (the C data interface: shared buffers, no copy).
pub fn array(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<ArrayRef> {
    let data = ArrayData::from_pyarrow_bound(obj).map_err(|e| {
        to_py(
            obj.py(),
            Error::Dtype(format!("{what} is not a pyarrow Array: {e}")),
        )
    })?;
    Ok(make_array(data))
}

fn op(kind: &str, param: &Bound<'_, PyAny>) -> PyResult<Op> {
    Ok(match kind {
        "zscore" => {
            let (mean, std): (f64, f64) = param.extract()?;
            Op::ZScore { mean, std }
        }
        "min_max_scale" => {
            let (min, max): (f64, f64) = param.extract()?;
            Op::MinMax { min, max }
        }
        "clip" => {
            let (lo, hi): (Option<f64>, Option<f64>) = param.extract()?;
            Op::Clip { lo, hi }
        }
        "log1p" => Op::Log1p,
        "bucketize" => Op::Bucketize {
            boundaries: param.extract()?,
        },
        "one_hot" => {
            let categories = match param.extract::<Vec<i64>>() {
                Ok(c) => Categories::Int(c),
                Err(_) => Categories::Str(param.extract()?),
            };
            Op::OneHot { categories }
        }
        k => {
            return Err(to_py(
                param.py(),
                Error::InvalidArgument(format!("unknown transform kind {k:?}")),
            ))
        }
    })
}

/// Parses `(n_inputs, [(name, kind, src, param)])`: `kind` "fill" (param: a one-row pyarrow Array),
/// "fill_from" (param: the column whose values fill the nulls) or a built-in's name (param: its parameters, see [`op`]).
pub fn program(py: Python<'_>, n_inputs: usize, nodes: &Bound<'_, PyList>) -> PyResult<Program> {
    let mut out = Vec::with_capacity(nodes.len());
    for n in nodes.iter() {
        let (name, kind, src, param): (String, String, usize, Bound<'_, PyAny>) = n.extract()?;
        let node = if kind == "fill" {
            Node::Fill {
                src,
                value: array(&param, &format!("the imputation value of {name:?}"))?,
            }
        } else if kind == "fill_from" {
            Node::FillFrom {
                src,
                from: param.extract()?,
            }
        } else {
            Node::Op {
                src,
                op: op(&kind, &param)?,
            }
        };
        out.push((name, node));
    }
    Program::new(n_inputs, out).map_err(|e| to_py(py, e))
}

/// A compiled transform program (see ``skewless.transforms``).
#[pyclass(module = "skewless._core", name = "TransformProgram", frozen)]
pub struct PyProgram {
    pub program: Arc<Program>,
}

#[pymethods]
impl PyProgram {
    #[new]
    fn new(py: Python<'_>, n_inputs: usize, nodes: &Bound<'_, PyList>) -> PyResult<Self> {
        guard(py, || {
            Ok(PyProgram {
                program: Arc::new(program(py, n_inputs, nodes)?),
            })
        })
    }

    /// Runs the program over ``table`` (its columns are the inputs, in order) and returns a
    /// ``pyarrow.Table`` of the columns ``select`` picks (indices into inputs then nodes), named
    /// ``names``; with ``masks``, each followed by a boolean column: the rows filled by imputation.
    fn run(
        &self,
        py: Python<'_>,
        table: &Bound<'_, PyAny>,
        select: Vec<usize>,
        names: Vec<String>,
        masks: bool,
    ) -> PyResult<Py<PyAny>> {
        guard(py, || {
            let t = read_table(table, "the transform inputs")?;
            let prog = self.program.clone();
            let total = prog.n_inputs + prog.nodes.len();
            if names.len() != select.len() || select.iter().any(|&s| s >= total) {
                return Err(to_py(
                    py,
                    Error::Internal("transform outputs do not match the program".into()),
                ));
            }
            let mut batches = t.batches;
            if batches.is_empty() {
                // An empty table may export no batch: run over empty columns so the output still has
                // its columns and types.
                let cols = t
                    .schema
                    .fields()
                    .iter()
                    .map(|f| new_empty_array(f.data_type()))
                    .collect();
                batches.push(
                    RecordBatch::try_new(t.schema.clone(), cols).map_err(|e| to_py(py, Error::from(e)))?,
                );
            }
            let out = run_detached(py, move || -> Result<Vec<(usize, Vec<ArrayRef>)>> {
                let mut out: Vec<(usize, Vec<ArrayRef>)> = Vec::with_capacity(batches.len());
                for b in batches {
                    let run = prog.run(b.columns().to_vec())?;
                    let mut cols = Vec::with_capacity(select.len() * 2);
                    for &s in &select {
                        cols.push(run.columns[s].clone());
                        if masks {
                            let m = match &run.imputed[s] {
                                Some(m) => m.clone(),
                                None => BooleanArray::from(vec![false; b.num_rows()]),
                            };
                            cols.push(Arc::new(m) as ArrayRef);
                        }
                    }
                    out.push((b.num_rows(), cols));
                }
                Ok(out)
            })?;
            let Some((_, first)) = out.first() else {
                return Err(to_py(py, Error::Internal("no batch was run".into())));
            };
            let mut fields = Vec::with_capacity(first.len());
            for (i, name) in names.iter().enumerate() {
                let step = if masks { 2 } else { 1 };
                fields.push(Field::new(name, first[i * step].data_type().clone(), true));
                if masks {
                    fields.push(Field::new(format!("{name}__imputed"), DataType::Boolean, false));
                }
            }
            let schema = Arc::new(Schema::new(fields));
            let batches = out
                .into_iter()
                .map(|(n, cols)| {
                    let opts = RecordBatchOptions::new().with_row_count(Some(n));
                    RecordBatch::try_new_with_options(schema.clone(), cols, &opts)
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| to_py(py, Error::from(e)))?;
            to_pyarrow(py, schema, batches)
        })
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyProgram>()
}
