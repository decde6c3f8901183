//! `skewless._core.window_aggregate`: reads labels and events as Arrow, runs the backfill without the
//! GIL, returns a `pyarrow.Table`. Aggregations were checked and named by `python/skewless/window.py`.

use pyo3::prelude::*;

use crate::py::arrow::{read_table, to_pyarrow};
use crate::py::errors::{guard, run_detached, run_guarded};
use crate::py::online::PyOnlineStore;
use crate::window::backfill::{window_aggregate as kernel, Aggregation, WindowOptions};
use crate::window::state::{push, PushSpec};
use crate::window::Func;

/// `aggregations`: (column, function name, window in microseconds, output name) each.
#[pyfunction]
#[pyo3(signature = (labels, events, on, by, sequence, aggregations))]
fn window_aggregate(
    py: Python<'_>,
    labels: &Bound<'_, PyAny>,
    events: &Bound<'_, PyAny>,
    on: String,
    by: Vec<String>,
    sequence: Option<String>,
    aggregations: Vec<(String, String, i64, String)>,
) -> PyResult<Py<PyAny>> {
    guard(py, || {
        let opts = run_guarded(py, || {
            let aggregations = aggregations
                .into_iter()
                .map(|(column, func, window_us, name)| {
                    Ok(Aggregation {
                        column,
                        func: func.parse::<Func>()?,
                        window_us,
                        name,
                    })
                })
                .collect::<crate::error::Result<_>>()?;
            Ok(WindowOptions {
                on,
                by,
                sequence,
                aggregations,
            })
        })?;
        let l = read_table(labels, "labels")?;
        let e = read_table(events, "events")?;
        let out = run_detached(py, || kernel(&l, &e, &opts))?;
        to_pyarrow(py, out.schema, out.batches)
    })
}

/// Merges `events` into the online window state of `view` (`crate::window::state`); `reset` drops the
/// view's state first, in the same transaction. Returns (events taken, entities written).
#[pyfunction]
#[pyo3(signature = (store, view, events, keys, timestamp, sequence, columns, horizon_us, reset))]
#[allow(clippy::too_many_arguments)]
fn window_push(
    py: Python<'_>,
    store: &PyOnlineStore,
    view: &str,
    events: &Bound<'_, PyAny>,
    keys: Vec<String>,
    timestamp: &str,
    sequence: &str,
    columns: Vec<String>,
    horizon_us: i64,
    reset: bool,
) -> PyResult<(usize, usize)> {
    guard(py, || {
        let table = read_table(events, "events")?;
        let store = &store.store;
        let stats = run_detached(py, || {
            let spec = PushSpec {
                keys: &keys,
                timestamp,
                sequence,
                columns: &columns,
                horizon: horizon_us,
                reset,
            };
            push(store, view, &table, &spec)
        })?;
        Ok((stats.events, stats.entities))
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(window_aggregate, m)?)?;
    m.add_function(wrap_pyfunction!(window_push, m)?)
}
