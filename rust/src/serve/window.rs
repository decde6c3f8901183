//! The window part kind of a serving plan: an event view's aggregates, evaluated at the request instant
//! from the view's online window state (`crate::window::state`, which defines the state format and the
//! status rule) by the same accumulators as the training-set backfill.
//!
//! A window part shares the plan's read transaction and key encoding with the other parts; it resolves
//! once the view's state exists (before that every row is `NOT_FOUND` with the empty window's values).

use std::sync::OnceLock;

use arrow::array::{ArrayRef, Float64Builder, Int64Builder, StringBuilder};
use arrow::datatypes::DataType;
use heed::RoTxn;

use crate::error::{Error, Result};
use crate::online::env::{Db, Store};
use crate::online::read::KeyBatch;
use crate::online::schema::Kind;
use crate::online::status::{NOT_FOUND, PRESENT};
use crate::window::state::{self, empty_cell, Agg, Cell, ColTag, Events};
use crate::window::Func;

/// The aggregates a window part serves, in output order: (aggregated column, function, window in
/// microseconds).
#[derive(Clone, Debug)]
pub struct WindowSpec {
    pub aggs: Vec<(String, Func, i64)>,
}

pub(super) struct WindowPart {
    spec: WindowSpec,
    ready: OnceLock<Ready>,
}

/// A window part whose view has state: its key prefix, key signature, column tags and aggregates.
pub(super) struct Ready {
    prefix: [u8; 4],
    pub sig: Vec<(usize, Kind)>,
    tags: Vec<ColTag>,
    aggs: Vec<Agg>,
    horizon: i64,
}

/// One part's answer: a status per row and one column of cells per aggregate.
pub(super) struct Served {
    pub status: Vec<i8>,
    pub cols: Vec<Vec<Cell>>,
}

impl WindowPart {
    pub fn new(spec: WindowSpec, view: &str, n_columns: usize) -> Result<WindowPart> {
        if spec.aggs.len() != n_columns || spec.aggs.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "view {view:?}: {} aggregates for {n_columns} features",
                spec.aggs.len()
            )));
        }
        if let Some((c, _, w)) = spec.aggs.iter().find(|a| a.2 <= 0) {
            return Err(Error::InvalidArgument(format!(
                "view {view:?}: the window of an aggregate of {c:?} must be positive, not {w}"
            )));
        }
        Ok(WindowPart {
            spec,
            ready: OnceLock::new(),
        })
    }

    /// The resolved part, resolving it from `txn` when the view's state has appeared. `key_idx`: the
    /// request column of each of the view's join keys `keys`.
    pub fn resolve(
        &self,
        store: &Store,
        txn: &RoTxn,
        view: &str,
        keys: &[String],
        key_idx: &[usize],
    ) -> Result<Option<&Ready>> {
        if let Some(r) = self.ready.get() {
            return Ok(Some(r));
        }
        let Some(meta) = state::read_meta(store, txn, view)? else {
            return Ok(None);
        };
        let Some(prefix) = state::prefix_in(store, txn, view)? else {
            return Ok(None);
        };
        let names: Vec<&str> = meta.keys.iter().map(|k| k.0.as_str()).collect();
        if names != keys {
            return Err(Error::SchemaMismatch(format!(
                "view {view:?}'s window state is keyed by {names:?}, but the plan serves it by {keys:?}; run \
                 store.materialize(None, end) to rebuild it"
            )));
        }
        let mut aggs = Vec::with_capacity(self.spec.aggs.len());
        for (c, func, w) in &self.spec.aggs {
            let col = meta.columns.iter().position(|m| &m.0 == c);
            match col {
                Some(col) if *w <= meta.horizon => aggs.push(Agg {
                    func: *func,
                    col,
                    window: *w,
                }),
                _ => {
                    return Err(Error::SchemaMismatch(format!(
                    "view {view:?}'s window state keeps {:?} over {} us, which cannot serve {}({c:?}) over \
                         {w} us; the definition changed: run store.materialize(None, end) to rebuild it",
                    meta.columns.iter().map(|m| &m.0).collect::<Vec<_>>(),
                    meta.horizon,
                    func.name()
                )))
                }
            }
        }
        let sig = key_idx
            .iter()
            .zip(&meta.keys)
            .map(|(&i, k)| (i, k.1.clone()))
            .collect();
        let tags = meta.columns.iter().map(|m| m.1).collect();
        let r = Ready {
            prefix,
            sig,
            tags,
            aggs,
            horizon: meta.horizon,
        };
        Ok(Some(self.ready.get_or_init(|| r)))
    }

    /// Evaluates every row at `served_at`. `keys`: the encoded keys of this part's signature (None when
    /// the view has no state yet); `declared`: the output types.
    pub fn serve(
        &self,
        db: &Db,
        txn: &RoTxn,
        keys: Option<&KeyBatch>,
        served_at: i64,
        n: usize,
        declared: &[DataType],
    ) -> Result<Served> {
        let empty: Vec<Cell> = self
            .spec
            .aggs
            .iter()
            .zip(declared)
            .map(|((_, f, _), t)| empty_cell(*f, t))
            .collect();
        let mut out = Served {
            status: vec![NOT_FOUND; n],
            cols: vec![Vec::with_capacity(n); empty.len()],
        };
        let (Some(r), Some(keys)) = (self.ready.get(), keys) else {
            for (c, e) in out.cols.iter_mut().zip(&empty) {
                c.resize(n, e.clone());
            }
            return Ok(out);
        };
        let mut kbuf = Vec::with_capacity(crate::online::key::MAX_KEY_BYTES);
        for i in 0..n {
            let Some(ev) = state::lookup(db, txn, &mut kbuf, &r.prefix, keys.key(i), &r.tags)? else {
                for (c, e) in out.cols.iter_mut().zip(&empty) {
                    c.push(e.clone());
                }
                continue;
            };
            let s = state::status(&ev, served_at, r.horizon);
            out.status[i] = s;
            if s != PRESENT {
                for (c, e) in out.cols.iter_mut().zip(&empty) {
                    c.push(null_like(e));
                }
                continue;
            }
            evaluate_into(&ev, served_at, &r.aggs, &mut out.cols)?;
        }
        Ok(out)
    }
}

fn evaluate_into(ev: &Events, t: i64, aggs: &[Agg], cols: &mut [Vec<Cell>]) -> Result<()> {
    state::evaluate(ev, t, aggs, |k, c| cols[k].push(c))
}

fn null_like(c: &Cell) -> Cell {
    match c {
        Cell::F64(_) => Cell::F64(None),
        Cell::I64(_) => Cell::I64(None),
        Cell::Str(_) => Cell::Str(None),
    }
}

impl Cell {
    /// The value as float64, None for null (and for strings, which the dense post-stage never reads).
    pub fn value_f64(&self) -> Option<f64> {
        match self {
            Cell::F64(x) => *x,
            Cell::I64(x) => x.map(|v| v as f64),
            Cell::Str(_) => None,
        }
    }
}

/// One output column as an Arrow array of the declared type.
pub(super) fn to_array(cells: &[Cell], declared: &DataType) -> Result<ArrayRef> {
    let bad = || {
        Error::Internal(format!(
            "a window value does not match its declared type {declared}"
        ))
    };
    Ok(match declared {
        DataType::Float64 => {
            let mut b = Float64Builder::with_capacity(cells.len());
            for c in cells {
                match c {
                    Cell::F64(x) => b.append_option(*x),
                    _ => return Err(bad()),
                }
            }
            std::sync::Arc::new(b.finish())
        }
        DataType::Int64 => {
            let mut b = Int64Builder::with_capacity(cells.len());
            for c in cells {
                match c {
                    Cell::I64(x) => b.append_option(*x),
                    _ => return Err(bad()),
                }
            }
            std::sync::Arc::new(b.finish())
        }
        DataType::Utf8 => {
            let mut b = StringBuilder::new();
            for c in cells {
                match c {
                    Cell::Str(x) => b.append_option(x.as_deref()),
                    _ => return Err(bad()),
                }
            }
            std::sync::Arc::new(b.finish())
        }
        other => {
            return Err(Error::InvalidArgument(format!(
                "a window aggregate is declared as {other}; it is float64, int64 or string"
            )))
        }
    })
}
