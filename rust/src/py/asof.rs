//! `skewless._core.asof_join`: reads both sides as Arrow, runs the kernel without the GIL, returns a
//! `pyarrow.Table`. Argument shapes were normalized by `python/skewless/asof.py`.

use pyo3::prelude::*;

use crate::asof::{asof_join as kernel, AsofOptions, Direction, Tolerance};
use crate::error::Error;
use crate::py::arrow::{read_table, to_pyarrow};
use crate::py::errors::{guard, run_detached, run_guarded};

/// `tolerance_kind` is "timedelta" (tolerance in microseconds) or "int" (in units of `on`).
#[pyfunction]
#[pyo3(signature = (left, right, on, by, direction, tolerance_kind, tolerance, allow_exact_matches, tie_breaker, suffix, sequence=None))]
#[allow(clippy::too_many_arguments)]
fn asof_join(
    py: Python<'_>,
    left: &Bound<'_, PyAny>,
    right: &Bound<'_, PyAny>,
    on: String,
    by: Vec<String>,
    direction: &str,
    tolerance_kind: Option<&str>,
    tolerance: Option<u64>,
    allow_exact_matches: bool,
    tie_breaker: Option<String>,
    suffix: Option<String>,
    sequence: Option<String>,
) -> PyResult<Py<PyAny>> {
    guard(py, || {
        let opts = run_guarded(py, || {
            let tolerance = match (tolerance_kind, tolerance) {
                (_, None) => None,
                (Some("timedelta"), Some(t)) => Some(Tolerance::Micros(t)),
                (Some("int"), Some(t)) => Some(Tolerance::Ticks(t)),
                (k, _) => return Err(Error::InvalidArgument(format!("unknown tolerance kind {k:?}"))),
            };
            Ok(AsofOptions {
                on,
                by,
                direction: direction.parse::<Direction>()?,
                tolerance,
                allow_exact_matches,
                tie_breaker,
                sequence,
                suffix,
            })
        })?;
        let l = read_table(left, "left")?;
        let r = read_table(right, "right")?;
        let out = run_detached(py, || kernel(&l, &r, &opts))?;
        to_pyarrow(py, out.schema, out.batches)
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(asof_join, m)?)
}
