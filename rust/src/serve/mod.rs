//! The serving plan: the one entry point that answers an online request for features of several views.
//!
//! A [`Plan`] is compiled once from a list of parts (a view, the features it serves, its TTL and the
//! registry version of its definition) and then called per request. One call:
//!
//! 1. opens ONE LMDB read transaction for every view of the plan;
//! 2. resolves, inside that transaction, any view that had no online data when the plan was compiled
//!    (a service may start before the first write; such a view answers `NOT_FOUND` until it appears);
//! 3. encodes each entity's key once per distinct key signature (views with the same join keys share the
//!    encoded bytes; only the 4-byte view prefix differs), with checked conversions: a key that does not
//!    fit the stored key type is a `Dtype` error, never a silent miss;
//! 4. looks up every (view, row) of the request in one batch: the direct search of
//!    [`crate::online::direct`] walks LMDB's B-tree for all keys at once, level by level, overlapping
//!    their cache misses (LMDB's own lookup, one key at a time, when the snapshot does not allow it);
//! 5. applies the status rule of [`crate::online::status`] at the request instant (`served_at`): a value
//!    from after it is `NOT_YET_VALID`, one older than `served_at - ttl` is `EXPIRED`;
//! 6. decodes straight into the output: float64 rows for `get_f64`, Arrow arrays (real nulls, NaN kept)
//!    for `get_arrow`.
//!
//! A window part (an event view, [`window`]) evaluates its aggregates at `served_at` from the view's
//! window state instead of decoding a latest value; it shares the transaction and the key encoding.
//!
//! Transforms and imputation are the post-stage in [`transform`]: it consumes the per-part results this
//! module produces, in request order.

use std::sync::{Arc, OnceLock};

use arrow::array::{new_null_array, ArrayRef, Float64Array};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::datatypes::DataType;
use heed::RoTxn;

use crate::error::{Error, Result};
use crate::online::direct::Probe;
use crate::online::env::Store;
use crate::online::key;
use crate::online::read::{fetch, judge, small, KeyBatch, Out, Resolved};
use crate::online::schema::Kind;
use crate::online::status::{Window, NOT_FOUND, PRESENT};
use crate::online::value::{arr, F64Slot};
use crate::transform::dense::{Num, Rows};

pub mod transform;

/// One part of a plan: which view, which of its features, and how to serve them.
#[derive(Clone, Debug)]
pub struct PartSpec {
    pub view: String,
    /// The view's join keys, in the view's key order (request columns of these names form its key).
    pub keys: Vec<String>,
    /// The features served from this view, in output order.
    pub columns: Vec<String>,
    /// Values older than `served_at - ttl` are expired; `None`: never.
    pub ttl_micros: Option<i64>,
    /// The registry version of the view's definition, returned with every response.
    pub version: u64,
    /// The Arrow type of each feature as declared, for answering before the view has online data.
    pub declared: Vec<DataType>,
    /// For an event view: the aggregate behind each feature (a window part, see [`window`]).
    pub window: Option<window::WindowSpec>,
}

struct Part {
    spec: PartSpec,
    /// Indices of `spec.keys` among the plan's request columns.
    key_idx: Vec<usize>,
    /// First feature of this part in the output row.
    offset: usize,
    /// Set once, by the first request that finds the view's schema.
    resolved: OnceLock<Ready>,
    /// A window part: served from the view's window state instead of its latest values.
    window: Option<window::WindowPart>,
}

/// A part whose view has online data: the view, and its key signature (request column and stored key
/// kind per key part), which decides which parts share encoded keys.
struct Ready {
    view: Resolved,
    sig: Vec<(usize, Kind)>,
}

/// The request's entity columns, one per plan key (`Plan::key_names`), all of one length.
pub struct Request {
    pub n: usize,
    pub cols: Vec<KeyColumn>,
}

/// One entity column of a request, as given by the caller: checked against each view's stored key type
/// when it is encoded.
pub struct KeyColumn {
    pub values: KeyValues,
    /// `valid[i] == false`: the caller gave no key (None); the row is not found. Empty: all valid.
    pub valid: Vec<bool>,
}

pub enum KeyValues {
    /// Integers, wide enough for both i64 and u64 keys so that range checks are exact.
    Int(Vec<i128>),
    /// UTF-8 strings, `data[ends[i-1]..ends[i]]`.
    Str {
        data: Vec<u8>,
        ends: Vec<usize>,
    },
    Bin {
        data: Vec<u8>,
        ends: Vec<usize>,
    },
}

impl KeyColumn {
    fn len(&self) -> usize {
        match &self.values {
            KeyValues::Int(v) => v.len(),
            KeyValues::Str { ends, .. } | KeyValues::Bin { ends, .. } => ends.len(),
        }
    }

    #[inline]
    fn is_valid(&self, i: usize) -> bool {
        self.valid.is_empty() || self.valid[i]
    }
}

#[inline]
fn var<'a>(data: &'a [u8], ends: &[usize], i: usize) -> &'a [u8] {
    let start = if i == 0 { 0 } else { ends[i - 1] };
    &data[start..ends[i]]
}

pub struct Plan {
    store: Arc<Store>,
    /// The request's entity columns: every part's join keys, in order of first appearance.
    pub key_names: Vec<String>,
    parts: Vec<Part>,
    /// Number of features (output columns) over all parts.
    pub width: usize,
    /// Set once every part's answer to [`Plan::check_numeric`] can no longer change (each latest-value
    /// part resolved: its stored kinds are then fixed), so that later requests skip the check.
    numeric: OnceLock<()>,
}

/// Lookups of a request up to which the walk's buffers live on the stack.
const SMALL: usize = 8;

/// Encoded keys of one key signature.
struct Group<'p> {
    sig: &'p [(usize, Kind)],
    keys: KeyBatch,
}

/// Where a float64 lookup writes: value `x` (None: null, missing, expired or not yet valid) of row `i`,
/// feature column `c`; and the Arrow type of column `c` as served in this request.
trait Sink {
    /// Whether the sink records column types (`kind`); when not, the plan does not build them.
    const KINDS: bool;
    fn put(&mut self, i: usize, c: usize, x: Option<f64>);
    fn kind(&mut self, _c: usize, _t: &DataType) {}
    /// Row `i`'s float64 features from column `c` on, read from value `val` through `slots`.
    #[inline(always)]
    fn put_slots(&mut self, i: usize, c: usize, slots: &[F64Slot], val: &[u8]) {
        for (j, slot) in slots.iter().enumerate() {
            self.put(i, c + j, slot.read(val));
        }
    }
}

/// `get_f64`'s output: row-major `n x w`, NaN for no value.
struct Matrix<'a> {
    values: &'a mut [f64],
    w: usize,
}

impl Sink for Matrix<'_> {
    const KINDS: bool = false;
    #[inline]
    fn put(&mut self, i: usize, c: usize, x: Option<f64>) {
        self.values[i * self.w + c] = x.unwrap_or(f64::NAN);
    }

    #[inline(always)]
    fn put_slots(&mut self, i: usize, c: usize, slots: &[F64Slot], val: &[u8]) {
        // The row's cells as one slice: one bounds check per row, not one per feature.
        let at = i * self.w + c;
        for (o, slot) in self.values[at..at + slots.len()].iter_mut().zip(slots) {
            *o = slot.read(val).unwrap_or(f64::NAN);
        }
    }
}

impl Sink for Rows {
    const KINDS: bool = true;
    #[inline]
    fn put(&mut self, i: usize, c: usize, x: Option<f64>) {
        let at = i * self.width + c;
        self.values[at] = x.unwrap_or(0.0);
        self.valid[at] = x.is_some();
    }

    fn kind(&mut self, c: usize, t: &DataType) {
        self.types[c] = Num::of(t);
    }
}

impl Plan {
    /// Compiles a plan. Views that already have online data are resolved now (so a wrong feature name
    /// fails here); the others are resolved by the first request that finds them.
    pub fn new(store: Arc<Store>, specs: Vec<PartSpec>) -> Result<Plan> {
        if specs.is_empty() {
            return Err(Error::InvalidArgument(
                "a serving plan needs at least one feature view".into(),
            ));
        }
        let mut key_names: Vec<String> = Vec::new();
        let mut parts = Vec::with_capacity(specs.len());
        let mut offset = 0;
        for spec in specs {
            if spec.keys.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "view {:?} has no join keys",
                    spec.view
                )));
            }
            if spec.declared.len() != spec.columns.len() {
                return Err(Error::InvalidArgument(format!(
                    "view {:?}: {} features but {} declared types",
                    spec.view,
                    spec.columns.len(),
                    spec.declared.len()
                )));
            }
            if spec.ttl_micros.is_some_and(|t| t < 0) {
                return Err(Error::InvalidArgument(format!(
                    "view {:?} has a negative ttl; pass a non-negative one or None",
                    spec.view
                )));
            }
            let mut key_idx = Vec::with_capacity(spec.keys.len());
            for k in &spec.keys {
                let at = match key_names.iter().position(|n| n == k) {
                    Some(i) => i,
                    None => {
                        key_names.push(k.clone());
                        key_names.len() - 1
                    }
                };
                key_idx.push(at);
            }
            let width = spec.columns.len();
            let window = match &spec.window {
                Some(w) => Some(window::WindowPart::new(w.clone(), &spec.view, width)?),
                None => None,
            };
            parts.push(Part {
                spec,
                key_idx,
                offset,
                resolved: OnceLock::new(),
                window,
            });
            offset += width;
        }
        let plan = Plan {
            store,
            key_names,
            parts,
            width: offset,
            numeric: OnceLock::new(),
        };
        let (store, data_parts) = (&plan.store, &plan.parts);
        store.read(|txn| {
            for p in data_parts {
                part_sig(store, txn, p)?;
            }
            Ok(())
        })?;
        Ok(plan)
    }

    /// A plan that reads no view: its answers are the post-stage's columns made from request-time
    /// values alone (a transform view of request inputs only). It has no join keys, so a request's row
    /// count comes from its request-time columns (`crate::py::serve`).
    pub fn without_views(store: Arc<Store>) -> Plan {
        Plan {
            store,
            key_names: Vec::new(),
            parts: Vec::new(),
            width: 0,
            numeric: OnceLock::new(),
        }
    }

    /// `(view, definition version)` of every part, in plan order.
    pub fn versions(&self) -> Vec<(&str, u64)> {
        self.parts
            .iter()
            .map(|p| (p.spec.view.as_str(), p.spec.version))
            .collect()
    }

    /// Number of parts (views): the width of the status output.
    pub fn n_views(&self) -> usize {
        self.parts.len()
    }

    pub fn views(&self) -> Vec<&str> {
        self.parts.iter().map(|p| p.spec.view.as_str()).collect()
    }

    /// Output feature names, in order (the part's column names; the caller renames).
    pub fn columns(&self) -> Vec<&str> {
        self.parts
            .iter()
            .flat_map(|p| p.spec.columns.iter().map(|c| c.as_str()))
            .collect()
    }

    /// Whether every feature can be returned as float64 (stored kind, or declared type while the view
    /// has no online data).
    pub fn check_numeric(&self) -> Result<()> {
        if self.numeric.get().is_some() {
            return Ok(());
        }
        for p in &self.parts {
            match p.resolved.get().filter(|_| p.window.is_none()) {
                Some(r) => r.view.check_numeric("get_numpy")?,
                None => {
                    for (c, t) in p.spec.columns.iter().zip(&p.spec.declared) {
                        if !(t.is_integer() || t.is_floating() || *t == DataType::Boolean) {
                            return Err(Error::Dtype(format!(
                                "get_numpy returns float64, but feature '{c}' of view '{}' is {t}; use get(), or \
                                 a reader of numeric features only",
                                p.spec.view
                            )));
                        }
                    }
                }
            }
        }
        // A window part answers from its declared types, which never change.
        if self
            .parts
            .iter()
            .all(|p| p.window.is_some() || p.resolved.get().is_some())
        {
            let _ = self.numeric.set(());
        }
        Ok(())
    }

    /// Serves `req` at `served_at` into `values` (row-major `n x width`, null / missing / expired / not
    /// yet valid as NaN) and `status` (row-major `n x parts`). Call [`Plan::check_numeric`] first.
    pub fn get_f64(
        &self,
        req: &Request,
        served_at: i64,
        values: &mut [f64],
        status: &mut [i8],
    ) -> Result<()> {
        let (n, w) = (req.n, self.width);
        if values.len() != n * w || status.len() != n * self.parts.len() {
            return Err(Error::Internal("output buffers do not match the request".into()));
        }
        if let Some(done) = self.get_one(req, served_at, values, status) {
            return done;
        }
        self.get_sink(req, served_at, status, &mut Matrix { values, w })
    }

    /// Serves `req` at `served_at` into the first `width` columns of `rows` (the post-stage's dense
    /// inputs: a null stays apart from a stored NaN, and each column's type is the one `get_arrow`
    /// would build) and `status` (row-major `n x parts`).
    pub fn get_rows(&self, req: &Request, served_at: i64, rows: &mut Rows, status: &mut [i8]) -> Result<()> {
        if rows.n != req.n || rows.width < self.width || status.len() != req.n * self.parts.len() {
            return Err(Error::Internal("output buffers do not match the request".into()));
        }
        self.get_sink(req, served_at, status, rows)
    }

    fn get_sink<S: Sink>(&self, req: &Request, served_at: i64, status: &mut [i8], out: &mut S) -> Result<()> {
        let v = self.parts.len();
        // Both callbacks write the outputs; walk calls them one at a time.
        let (out, status) = (std::cell::RefCell::new(out), std::cell::RefCell::new(status));
        let mut windows = |pi: usize, part: &Part, served: &window::Served| {
            let (mut out, mut status) = (out.borrow_mut(), status.borrow_mut());
            for (i, s) in served.status.iter().enumerate() {
                status[i * v + pi] = *s;
            }
            for (j, (col, t)) in served.cols.iter().zip(&part.spec.declared).enumerate() {
                out.kind(part.offset + j, t);
                for (i, c) in col.iter().enumerate() {
                    out.put(i, part.offset + j, c.value_f64());
                }
            }
            Ok(())
        };
        self.walk(req, served_at, &mut windows, |pi, part, res, rows| {
            let (mut out, mut status) = (out.borrow_mut(), status.borrow_mut());
            match res {
                _ if !S::KINDS => {}
                Some(r) => {
                    for (j, &k) in r.cols.iter().enumerate() {
                        out.kind(part.offset + j, &r.schema.values[k].kind.arrow_type());
                    }
                }
                None => {
                    for (j, t) in part.spec.declared.iter().enumerate() {
                        out.kind(part.offset + j, t);
                    }
                }
            }
            for (i, (s, val)) in rows.iter().enumerate() {
                status[i * v + pi] = *s;
                put_row(&mut **out, i, part, res, *s, val);
            }
            Ok(())
        })
    }

    /// [`Plan::get_f64`] for a request of one row to a plan of one resolved view (a service's commonest
    /// call): the same steps as [`Plan::walk`] for it, without the batch's bookkeeping (its per-part
    /// and per-row buffers, key groups and callbacks), which was a visible share of a one-key call.
    /// `None`: the request is not of that shape, or the view has no online data yet; `walk` answers.
    fn get_one(
        &self,
        req: &Request,
        served_at: i64,
        values: &mut [f64],
        status: &mut [i8],
    ) -> Option<Result<()>> {
        let ([p], 1) = (&self.parts[..], req.n) else {
            return None;
        };
        let r = p.resolved.get().filter(|_| p.window.is_none())?;
        if req.cols.len() != self.key_names.len() || req.cols.iter().any(|c| c.len() != 1) {
            return Some(Err(Error::Internal(
                "the request's key columns do not match the plan".into(),
            )));
        }
        let mut full = Scratch::take();
        let full = &mut full.0;
        full.bytes.clear();
        full.ends.clear();
        if let Err(e) = encode_keys_into(&r.sig, req, &self.key_names, Some(&r.view.prefix), full) {
            return Some(Err(e));
        }
        let (store, view) = (&*self.store, &r.view);
        let data = store.data();
        Some(store.read_pages(|txn, pages| {
            let probe = [Probe::new(full.key(0))];
            let mut found = [None];
            fetch(&data, txn, pages, &probe, &mut found)?;
            let (s, val) = judge(
                view,
                Window::new(served_at, p.spec.ttl_micros),
                probe[0].key(),
                found[0],
            )?;
            status[0] = s;
            put_row(
                &mut Matrix {
                    values,
                    w: self.width,
                },
                0,
                p,
                Some(view),
                s,
                val,
            );
            Ok(())
        }))
    }

    /// Serves `req` at `served_at`: one Arrow array per feature (stored types; nulls are nulls, a stored
    /// NaN stays NaN) and the statuses (row-major `n x parts`).
    pub fn get_arrow(&self, req: &Request, served_at: i64) -> Result<(Vec<ArrayRef>, Vec<i8>)> {
        let (n, v) = (req.n, self.parts.len());
        let status = vec![NOT_FOUND; n * v];
        let arrays: Vec<ArrayRef> = Vec::with_capacity(self.width);
        let arrays = std::cell::RefCell::new(arrays);
        let status = std::cell::RefCell::new(status);
        let mut windows = |pi: usize, part: &Part, served: &window::Served| {
            let mut status = status.borrow_mut();
            for (i, s) in served.status.iter().enumerate() {
                status[i * v + pi] = *s;
            }
            for (col, t) in served.cols.iter().zip(&part.spec.declared) {
                arrays.borrow_mut().push(window::to_array(col, t)?);
            }
            Ok(())
        };
        self.walk(req, served_at, &mut windows, |pi, part, res, rows| {
            let mut status = status.borrow_mut();
            let mut arrays = arrays.borrow_mut();
            for (i, (s, _)) in rows.iter().enumerate() {
                status[i * v + pi] = *s;
            }
            match res {
                None => {
                    for t in &part.spec.declared {
                        arrays.push(new_null_array(t, n));
                    }
                }
                Some(r) => {
                    for &j in &r.cols {
                        if r.schema.values[j].kind == Kind::F64 {
                            arrays.push(f64_column(r, j, rows));
                            continue;
                        }
                        let mut out = Out::new(&r.schema.values[j].kind, n);
                        for (s, val) in rows {
                            if *s != PRESENT || !r.layout.is_valid(val, j) {
                                out.null();
                            } else {
                                out.push(&r.layout, val, j)?;
                            }
                        }
                        arrays.push(out.finish());
                    }
                }
            }
            Ok(())
        })?;
        Ok((arrays.into_inner(), status.into_inner()))
    }

    /// Runs the lookups of every part in one read transaction and hands each part's results, in
    /// request order, to `f(part index, part, resolved view (None: no online data yet), rows)` where
    /// `rows[i]` is row i's status and stored value (empty unless the status is PRESENT).
    fn walk(
        &self,
        req: &Request,
        served_at: i64,
        windows: &mut dyn FnMut(usize, &Part, &window::Served) -> Result<()>,
        mut f: impl FnMut(usize, &Part, Option<&Resolved>, &[(i8, &[u8])]) -> Result<()>,
    ) -> Result<()> {
        if req.cols.len() != self.key_names.len() || req.cols.iter().any(|c| c.len() != req.n) {
            return Err(Error::Internal(
                "the request's key columns do not match the plan".into(),
            ));
        }
        let n = req.n;
        let store = &*self.store;
        let data = store.data();
        // The key buffer of this thread's previous request, reused: a one-entity request then allocates
        // nothing in the plan (an allocation and a free were a visible part of it).
        let mut full = Scratch::take();
        let (mut pg_stack, mut pg_heap) = ([None; SMALL], Vec::new());
        let (mut first_stack, mut first_heap) = ([None; SMALL], Vec::new());
        store.read_pages(|txn, pages| {
            // Every latest-value lookup of the request, of every view, in one batch: the full keys (view
            // prefix and encoded key, encoded straight into the batch) of part `pi`'s rows start at
            // `first[pi]`. Window parts share encoded keys per key signature (`groups`).
            let full = &mut full.0;
            full.bytes.clear();
            full.ends.clear();
            full.ends.reserve(n * self.parts.len());
            full.bytes.reserve(n * self.parts.len() * 8);
            let mut groups: Vec<Group<'_>> = Vec::new();
            let parts = self.parts.len();
            let part_group = small(&mut pg_stack, &mut pg_heap, parts, None);
            let first = small(&mut first_stack, &mut first_heap, parts, None);
            for (pi, p) in self.parts.iter().enumerate() {
                let (g, at) = match (part_sig(store, txn, p)?, &p.window, p.resolved.get()) {
                    (None, _, _) => (None, None),
                    (Some(sig), Some(_), _) => match groups.iter().position(|g| g.sig == sig) {
                        Some(g) => (Some(g), None),
                        None => {
                            groups.push(encode_group(sig, req, &self.key_names)?);
                            (Some(groups.len() - 1), None)
                        }
                    },
                    (Some(sig), None, Some(r)) => {
                        let at = full.len();
                        encode_keys_into(sig, req, &self.key_names, Some(&r.view.prefix), full)?;
                        (None, Some(at))
                    }
                    (Some(_), None, None) => (None, None),
                };
                part_group[pi] = g;
                first[pi] = at;
            }
            // A one-entity request allocates none of these (`small`).
            let (mut probe_stack, mut probe_heap) = ([Probe::EMPTY; SMALL], Vec::new());
            let probes = small(&mut probe_stack, &mut probe_heap, full.len(), Probe::EMPTY);
            for (j, p) in probes.iter_mut().enumerate() {
                *p = Probe::new(full.key(j));
            }
            let (mut found_stack, mut found_heap) = ([None; SMALL], Vec::new());
            let found = small(&mut found_stack, &mut found_heap, full.len(), None);
            fetch(&data, txn, pages, probes, found)?;
            let none: (i8, &[u8]) = (NOT_FOUND, &[]);
            let (mut row_stack, mut row_heap) = ([none; SMALL], Vec::new());
            let rows = small(&mut row_stack, &mut row_heap, n, none);
            for (pi, (p, g)) in self.parts.iter().zip(part_group.iter()).enumerate() {
                if let Some(w) = &p.window {
                    let keys = g.map(|g| &groups[g].keys);
                    windows(pi, p, &w.serve(&data, txn, keys, served_at, n, &p.spec.declared)?)?;
                    continue;
                }
                rows.fill((NOT_FOUND, &[][..]));
                let res = p.resolved.get().map(|r| &r.view);
                if let (Some(r), Some(at)) = (res, first[pi]) {
                    let window = Window::new(served_at, p.spec.ttl_micros);
                    for (i, row) in rows.iter_mut().enumerate() {
                        *row = judge(r, window, probes[at + i].key(), found[at + i])?;
                    }
                }
                f(pi, p, res, rows)?;
            }
            Ok(())
        })
    }
}

/// Row `i`'s features of `part` (from its output column on) of a stored value `val` of status `s`: the
/// selected features when the value is served (`PRESENT`), else no value.
#[inline(always)]
fn put_row<S: Sink>(out: &mut S, i: usize, part: &Part, res: Option<&Resolved>, s: i8, val: &[u8]) {
    match res {
        Some(r) if s == PRESENT => match &r.f64_slots {
            Some(slots) => out.put_slots(i, part.offset, slots, val),
            None => {
                for (j, &k) in r.cols.iter().enumerate() {
                    out.put(i, part.offset + j, r.layout.f64_of(val, k));
                }
            }
        },
        _ => {
            for j in 0..part.spec.columns.len() {
                out.put(i, part.offset + j, None);
            }
        }
    }
}

/// A thread's key buffer, lent to one request at a time ([`Scratch::take`]) and handed back when the
/// request is done (on drop, also after an error); a buffer grown past [`Scratch::KEEP`] bytes by a
/// large request is freed instead, so an idle thread holds little.
struct Scratch(KeyBatch);

thread_local! {
    static SCRATCH: std::cell::Cell<Option<KeyBatch>> = const { std::cell::Cell::new(None) };
}

impl Scratch {
    const KEEP: usize = 1 << 16;

    fn take() -> Scratch {
        // A thread being torn down has no buffer to lend: a fresh one then.
        Scratch(SCRATCH.try_with(|s| s.take()).ok().flatten().unwrap_or_default())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.0.bytes.capacity() + 8 * self.0.ends.capacity() <= Self::KEEP {
            let b = std::mem::take(&mut self.0);
            let _ = SCRATCH.try_with(|s| s.set(Some(b)));
        }
    }
}

/// A float64 value column straight from the rows (`rows[i]`: status, checked value): one buffer and,
/// only when a row has no value, a validity bitmap. The common feature type skips the general builder
/// (`Out`), whose size made moving it a visible cost of a one-entity `get`.
fn f64_column(r: &Resolved, j: usize, rows: &[(i8, &[u8])]) -> ArrayRef {
    let at = r.layout.slots[j];
    let valid = |(s, v): &(i8, &[u8])| *s == PRESENT && r.layout.is_valid(v, j);
    let mut all = true;
    let values: Vec<f64> = rows
        .iter()
        .map(|row| {
            if valid(row) {
                f64::from_le_bytes(arr(row.1, at))
            } else {
                all = false;
                0.0
            }
        })
        .collect();
    let nulls = (!all).then(|| NullBuffer::new(BooleanBuffer::from_iter(rows.iter().map(valid))));
    Arc::new(Float64Array::new(values.into(), nulls))
}

/// The key signature of a part whose view has data (latest values, or window state for a window part),
/// resolving the part from `txn` when its data has appeared.
fn part_sig<'p>(store: &Store, txn: &RoTxn, p: &'p Part) -> Result<Option<&'p [(usize, Kind)]>> {
    Ok(match &p.window {
        Some(w) => w
            .resolve(store, txn, &p.spec.view, &p.spec.keys, &p.key_idx)?
            .map(|r| r.sig.as_slice()),
        None => resolve(store, txn, p)?.map(|r| r.sig.as_slice()),
    })
}

/// The part's resolved view, resolving it from `txn` when its schema has appeared.
fn resolve<'p>(store: &Store, txn: &RoTxn, p: &'p Part) -> Result<Option<&'p Ready>> {
    if let Some(r) = p.resolved.get() {
        return Ok(Some(r));
    }
    let Some((schema, prefix)) = store.view_in(txn, &p.spec.view)? else {
        return Ok(None);
    };
    let names: Vec<&str> = schema.keys.iter().map(|c| c.name.as_str()).collect();
    if names != p.spec.keys {
        return Err(Error::SchemaMismatch(format!(
            "view {:?} is keyed by {names:?} in the online store, but the plan serves it by {:?}; \
             rebuild the online data of that view (materialize) or fix the definition",
            p.spec.view, p.spec.keys
        )));
    }
    let sig = p
        .key_idx
        .iter()
        .zip(&schema.keys)
        .map(|(&i, c)| (i, c.kind.clone()))
        .collect();
    let view = Resolved::new(&p.spec.view, schema, prefix, Some(&p.spec.columns))?;
    // Two threads may resolve at once; both built the same thing, the first one set wins.
    Ok(Some(p.resolved.get_or_init(|| Ready { view, sig })))
}

/// Encodes the key of every request row for one key signature (`(request column, stored key kind)` per
/// key part), with checked conversions. A null key and a key longer than any stored one become the empty
/// key, which is never stored: they are not found.
pub fn encode_keys(sig: &[(usize, Kind)], req: &Request, names: &[String]) -> Result<KeyBatch> {
    let mut b = KeyBatch::with_capacity(req.n * sig.len());
    encode_keys_into(sig, req, names, None, &mut b)?;
    Ok(b)
}

/// [`encode_keys`], appending to `b`, each key behind `prefix` when given (a full key of the data
/// database; a null or too long key stays empty, without its prefix).
pub fn encode_keys_into(
    sig: &[(usize, Kind)],
    req: &Request,
    names: &[String],
    prefix: Option<&[u8; 4]>,
    b: &mut KeyBatch,
) -> Result<()> {
    // The common request, one integer join key with no null, in one loop without a dispatch per key
    // (the same checks and bytes as the general loop below; an integer key always fits `room`).
    if let [(c, kind)] = sig {
        let col = &req.cols[*c];
        if let KeyValues::Int(v) = &col.values {
            if col.valid.is_empty() && (kind.is_signed_int() || kind.is_unsigned_int()) {
                let range = int_range(kind);
                b.bytes.reserve(req.n * (8 + prefix.map_or(0, |p| p.len())));
                b.ends.reserve(req.n);
                for &x in &v[..req.n] {
                    if let Some(p) = prefix {
                        b.bytes.extend_from_slice(p);
                    }
                    push_int(&mut b.bytes, x, kind, range, &names[*c])?;
                    b.finish_key();
                }
                return Ok(());
            }
        }
    }
    let last = sig.len().saturating_sub(1);
    let room = key::MAX_KEY_BYTES - 4 + prefix.map_or(0, |p| p.len());
    for i in 0..req.n {
        let start = b.bytes.len();
        if let Some(p) = prefix {
            b.bytes.extend_from_slice(p);
        }
        let mut null = false;
        for (pos, (c, kind)) in sig.iter().enumerate() {
            let col = &req.cols[*c];
            if !col.is_valid(i) {
                null = true;
                break;
            }
            push_part(&mut b.bytes, col, i, kind, pos == last, &names[*c])?;
        }
        if null || b.bytes.len() - start > room {
            b.bytes.truncate(start);
        }
        b.finish_key();
    }
    Ok(())
}

/// The keys of one signature (no sort: the direct search walks them all at once in any order).
fn encode_group<'p>(sig: &'p [(usize, Kind)], req: &Request, names: &[String]) -> Result<Group<'p>> {
    let keys = encode_keys(sig, req, names)?;
    Ok(Group { sig, keys })
}

/// The values an integer key kind holds.
fn int_range(k: &Kind) -> (i128, i128) {
    match k {
        Kind::I8 => (i8::MIN.into(), i8::MAX.into()),
        Kind::I16 => (i16::MIN.into(), i16::MAX.into()),
        Kind::I32 => (i32::MIN.into(), i32::MAX.into()),
        Kind::I64 => (i64::MIN.into(), i64::MAX.into()),
        Kind::U8 => (0, u8::MAX.into()),
        Kind::U16 => (0, u16::MAX.into()),
        Kind::U32 => (0, u32::MAX.into()),
        _ => (0, u64::MAX.into()),
    }
}

/// Appends integer key part `x` of kind `k` (signed or unsigned, whose range is `(lo, hi)`), checking
/// that it fits.
#[inline(always)]
fn push_int(out: &mut Vec<u8>, x: i128, k: &Kind, (lo, hi): (i128, i128), name: &str) -> Result<()> {
    if x < lo || x > hi {
        return Err(Error::Dtype(format!(
            "join key {name:?} = {x} does not fit the stored key type {}; pass keys in its range",
            k.arrow_type()
        )));
    }
    // In range, so the narrowing below is exact.
    if k.is_signed_int() {
        key::push_i64(out, x as i64);
    } else {
        key::push_u64(out, x as u64);
    }
    Ok(())
}

/// Appends one key part, checking that the caller's value fits the stored key type exactly.
#[inline]
fn push_part(
    out: &mut Vec<u8>,
    col: &KeyColumn,
    i: usize,
    kind: &Kind,
    last: bool,
    name: &str,
) -> Result<()> {
    match (&col.values, kind) {
        (KeyValues::Int(v), k) if k.is_signed_int() || k.is_unsigned_int() => {
            push_int(out, v[i], k, int_range(k), name)?;
        }
        (KeyValues::Str { data, ends }, Kind::Str) => key::push_bytes(out, var(data, ends, i), last),
        (KeyValues::Bin { data, ends }, Kind::Bin) => key::push_bytes(out, var(data, ends, i), last),
        (given, k) => {
            let what = match given {
                KeyValues::Int(_) => "integers",
                KeyValues::Str { .. } => "strings",
                KeyValues::Bin { .. } => "bytes",
            };
            return Err(Error::Dtype(format!(
                "join key {name:?} holds {what}, but the view stores it as {}; pass keys of that type",
                k.arrow_type()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
pub mod window;
