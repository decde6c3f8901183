//! `skewless._core.window_aggregate`: reads labels and events as Arrow, runs the backfill without the
//! GIL, returns a `pyarrow.Table`. Aggregations were checked and named by `python/skewless/window.py`.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

use pyo3::prelude::*;

use crate::error::Error;
use crate::py::arrow::{read_table, to_pyarrow};
use crate::py::errors::{guard, run_detached, run_guarded, to_py};
use crate::py::online::PyOnlineStore;
use crate::window::backfill::{window_aggregate as kernel, Aggregation, WindowOptions};
use crate::window::state::{push_gated, PushSpec};
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
/// `gate`: when given, the transaction waits there once every record is merged and commits only when
/// the gate is opened ([`CommitGate`]); closed, it aborts and nothing is written.
#[pyfunction]
#[pyo3(signature = (store, view, events, keys, timestamp, sequence, columns, horizon_us, reset, gate=None))]
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
    gate: Option<&CommitGate>,
) -> PyResult<(usize, usize)> {
    guard(py, || {
        let table = read_table(events, "events")?;
        let store = &store.store;
        let rx = match gate {
            Some(g) => Some(
                g.rx.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .ok_or_else(|| {
                        to_py(
                            py,
                            Error::InvalidArgument("this commit gate was already used".into()),
                        )
                    })?,
            ),
            None => None,
        };
        let stats = run_detached(py, move || {
            let spec = PushSpec {
                keys: &keys,
                timestamp,
                sequence,
                columns: &columns,
                horizon: horizon_us,
                reset,
            };
            // The answer is kept: a retry after the map grew reaches the gate again.
            let mut told: Option<bool> = None;
            let mut wait = || match &rx {
                None => Ok(()),
                Some(rx) => {
                    // A gate dropped without an answer counts as closed.
                    if *told.get_or_insert_with(|| rx.recv().unwrap_or(false)) {
                        Ok(())
                    } else {
                        Err(Error::Internal("the push was aborted by its caller".into()))
                    }
                }
            };
            push_gated(store, view, &table, &spec, &mut wait)
        })?;
        Ok((stats.events, stats.entities))
    })
}

/// The go-ahead of a `window_push` given it: `open()` lets the merged state commit, `close()` aborts
/// it. Answered once; the first answer counts.
#[pyclass(module = "skewless._core", name = "CommitGate", frozen)]
pub struct CommitGate {
    tx: Mutex<Option<SyncSender<bool>>>,
    rx: Mutex<Option<Receiver<bool>>>,
}

impl CommitGate {
    fn answer(&self, go: bool) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
            // The push may have ended already (an error before the gate): nobody to tell.
            let _ = tx.send(go);
        }
    }
}

#[pymethods]
impl CommitGate {
    #[new]
    fn new() -> Self {
        let (tx, rx) = sync_channel::<bool>(1);
        CommitGate {
            tx: Mutex::new(Some(tx)),
            rx: Mutex::new(Some(rx)),
        }
    }

    /// Let the push commit.
    fn open(&self) {
        self.answer(true)
    }

    /// Abort the push: nothing of it is written.
    fn close(&self) {
        self.answer(false)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<CommitGate>()?;
    m.add_function(wrap_pyfunction!(window_aggregate, m)?)?;
    m.add_function(wrap_pyfunction!(window_push, m)?)
}
