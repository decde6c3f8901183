//! `skewless._core.window_aggregate`: reads labels and events as Arrow, runs the backfill without the
//! GIL, returns a `pyarrow.Table`. Aggregations were checked and named by `python/skewless/window.py`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Mutex;
use std::thread::JoinHandle;

use pyo3::prelude::*;

use crate::error::{Error, Result};
use crate::py::arrow::{read_table, to_pyarrow};
use crate::py::errors::{guard, run_detached, run_guarded, to_py};
use crate::py::online::PyOnlineStore;
use crate::window::backfill::{window_aggregate as kernel, Aggregation, WindowOptions};
use crate::window::state::{push, push_gated, PushSpec, PushStats};
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

/// The merge thread of a pending push: its go-ahead (true: commit) and its outcome (a panic already
/// turned into an error).
type Merging = (SyncSender<bool>, JoinHandle<Result<PushStats>>);

/// A push merging in a thread of its own (`window_push_start`): its transaction stays open until
/// [`PendingPush::commit`] says the history is durable, or [`PendingPush::abort`] (or dropping the
/// handle) aborts it, leaving the state as it was.
#[pyclass(module = "skewless._core", name = "PendingPush", frozen)]
pub struct PendingPush {
    inner: Mutex<Option<Merging>>,
}

impl PendingPush {
    /// Tells the merge thread whether to commit and waits for it, always without the GIL: the thread
    /// may take it (releasing an events buffer a Python object owns, such as a numpy array, takes it),
    /// and a caller holding it would stall every other Python thread meanwhile. None when the push was
    /// already finished.
    fn finish(&self, py: Python<'_>, go: bool) -> Option<Result<PushStats>> {
        let taken = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (tx, worker) = taken?;
        // A send fails only when the thread has already ended (an error before the gate).
        let _ = tx.send(go);
        let joined = py.detach(move || worker.join());
        // The thread body catches panics; a failed join means it could not even report one.
        Some(joined.unwrap_or_else(|_| Err(Error::Internal("the window state merge thread died".into()))))
    }
}

#[pymethods]
impl PendingPush {
    /// The history file is durable: commit the merged state and return (events taken, entities
    /// written), or raise the merge's typed error (nothing of the state was written then).
    fn commit(&self, py: Python<'_>) -> PyResult<(usize, usize)> {
        guard(py, || match self.finish(py, true) {
            Some(Ok(stats)) => Ok((stats.events, stats.entities)),
            Some(Err(e)) => Err(to_py(py, e)),
            None => Err(to_py(
                py,
                Error::InvalidArgument("this push was already committed or aborted".into()),
            )),
        })
    }

    /// Abort: the merged state is dropped, nothing written. Does nothing once finished.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        guard(py, || {
            drop(self.finish(py, false));
            Ok(())
        })
    }
}

impl Drop for PendingPush {
    fn drop(&mut self) {
        let pending = self.inner.get_mut().unwrap_or_else(|e| e.into_inner()).is_some();
        if pending {
            // Dropped without commit or abort (an exception between the two): abort.
            Python::attach(|py| drop(self.finish(py, false)));
        }
    }
}

/// Like `window_push`, but the merge runs in a thread of its own while the caller writes the history
/// file, and commits only when told to (`PendingPush.commit`). Every check of the inputs that needs no
/// store runs there too; the errors come out of `commit`.
#[pyfunction]
#[pyo3(signature = (store, view, events, keys, timestamp, sequence, columns, horizon_us))]
#[allow(clippy::too_many_arguments)]
fn window_push_start(
    py: Python<'_>,
    store: &PyOnlineStore,
    view: String,
    events: &Bound<'_, PyAny>,
    keys: Vec<String>,
    timestamp: String,
    sequence: String,
    columns: Vec<String>,
    horizon_us: i64,
) -> PyResult<PendingPush> {
    guard(py, || {
        let table = read_table(events, "events")?;
        let store = store.store.clone();
        let (tx, rx) = sync_channel::<bool>(1);
        let worker = std::thread::Builder::new()
            .name("skewless-push".into())
            .spawn(move || {
                let spec = PushSpec {
                    keys: &keys,
                    timestamp: &timestamp,
                    sequence: &sequence,
                    columns: &columns,
                    horizon: horizon_us,
                    reset: false,
                };
                // The answer is kept: a retry after the map grew reaches the gate again.
                let mut told: Option<bool> = None;
                let mut gate = || {
                    let go = *told.get_or_insert_with(|| rx.recv().unwrap_or(false));
                    if go {
                        Ok(())
                    } else {
                        Err(Error::Internal("push aborted by its caller".into()))
                    }
                };
                catch_unwind(AssertUnwindSafe(|| {
                    push_gated(&store, &view, &table, &spec, &mut gate)
                }))
                .unwrap_or_else(|_| {
                    Err(Error::Internal(
                        "internal error in the skewless engine while merging window state. Please \
                         report it with the input that caused it."
                            .into(),
                    ))
                })
            })
            .map_err(|e| {
                to_py(
                    py,
                    Error::Storage(format!("could not start the window state merge thread: {e}")),
                )
            })?;
        Ok(PendingPush {
            inner: Mutex::new(Some((tx, worker))),
        })
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PendingPush>()?;
    m.add_function(wrap_pyfunction!(window_aggregate, m)?)?;
    m.add_function(wrap_pyfunction!(window_push, m)?)?;
    m.add_function(wrap_pyfunction!(window_push_start, m)?)
}
