//! Reads: a `Reader` resolves its view's schema, key prefix and column offsets once; each call is one read
//! transaction in which all requested keys are looked up together ([`fetch`]: the direct batched search
//! of `direct.rs`, or LMDB's own lookup when the snapshot does not allow it), decoded straight into the
//! caller's output. The serving plan (`crate::serve`) uses the same [`Resolved`] view, [`fetch`] and
//! [`judge`].

use std::sync::Arc;

use arrow::array::*;
use heed::RoTxn;

use crate::error::{Error, Result};
use crate::online::direct::{Miss, Pages, Probe};
use crate::online::env::{storage, Db, Store};
use crate::online::key;
use crate::online::schema::{Kind, ViewSchema};
use crate::online::status::{Window, NOT_FOUND, PRESENT};
use crate::online::value::{arr, damaged, F64Slot, Layout};

/// Encoded keys of one request: key i is `bytes[ends[i-1]..ends[i]]`.
#[derive(Default)]
pub struct KeyBatch {
    pub bytes: Vec<u8>,
    pub ends: Vec<usize>,
}

impl KeyBatch {
    pub fn with_capacity(n: usize) -> Self {
        KeyBatch {
            bytes: Vec::with_capacity(n * 8),
            ends: Vec::with_capacity(n),
        }
    }
    #[inline]
    pub fn finish_key(&mut self) {
        self.ends.push(self.bytes.len());
    }
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    #[inline]
    pub fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    /// The full keys of the data database: each key behind `prefix`, an empty (null) key left empty.
    pub fn with_prefix(&self, prefix: &[u8; 4]) -> KeyBatch {
        let mut out = KeyBatch::with_capacity(self.len());
        out.bytes.reserve(4 * self.len());
        self.push_prefixed(prefix, &mut out);
        out
    }

    /// Appends the keys of `self` behind `prefix` to `out` (see [`KeyBatch::with_prefix`]).
    #[inline]
    pub fn push_prefixed(&self, prefix: &[u8; 4], out: &mut KeyBatch) {
        for i in 0..self.len() {
            let k = self.key(i);
            if !k.is_empty() {
                out.bytes.extend_from_slice(prefix);
                out.bytes.extend_from_slice(k);
            }
            out.finish_key();
        }
    }
}

/// A view as a reader needs it: its schema, key prefix, value layout and the selected value columns.
pub struct Resolved {
    pub view: String,
    pub schema: ViewSchema,
    /// The view's 4-byte key prefix in the shared data database.
    pub prefix: [u8; 4],
    pub layout: Layout,
    /// Selected value columns, as indices into `schema.values`.
    pub cols: Vec<usize>,
    /// Where each selected column sits, when all of them are float64 (the common case, decoded
    /// without a dispatch on the kind per value).
    pub f64_slots: Option<Vec<F64Slot>>,
}

impl Resolved {
    /// Resolves `columns` (all value columns when `None`) against the view's recorded schema.
    pub fn new(
        view: &str,
        schema: ViewSchema,
        prefix: [u8; 4],
        columns: Option<&[String]>,
    ) -> Result<Resolved> {
        let cols: Vec<usize> = match columns {
            None => (0..schema.values.len()).collect(),
            Some(names) => names
                .iter()
                .map(|n| {
                    schema.values.iter().position(|c| &c.name == n).ok_or_else(|| {
                        let have: Vec<&str> = schema.values.iter().map(|c| c.name.as_str()).collect();
                        Error::MissingColumn(format!(
                            "column {n:?} is not a value column of view {view:?}; it has {have:?}"
                        ))
                    })
                })
                .collect::<Result<_>>()?,
        };
        let layout = schema.layout()?;
        let f64_slots = cols.iter().map(|&j| layout.f64_slot(j)).collect();
        Ok(Resolved {
            f64_slots,
            view: view.to_string(),
            schema,
            prefix,
            layout,
            cols,
        })
    }

    /// Checks that every selected column can be returned as float64 (`what` names the caller).
    pub fn check_numeric(&self, what: &str) -> Result<()> {
        for &j in &self.cols {
            let c = &self.schema.values[j];
            if !c.kind.is_numeric() {
                return Err(Error::Dtype(format!(
                    "{what} returns float64, but column '{}' of view '{}' is {}; use get(), or a reader \
                     with columns= naming numeric columns only",
                    c.name,
                    self.view,
                    c.kind.arrow_type()
                )));
            }
        }
        Ok(())
    }
}

/// Looks up one encoded key (without its view prefix; `kbuf` starts with the prefix) of view `r` and
/// applies the status rule of `window`. Returns the status and, when PRESENT, the stored value's body
/// (checked against the layout and its checksum: a damaged value is an error, never a status). The
/// empty key stands for a null key: LMDB never stores it (and rejects looking it up).
#[inline]
pub fn lookup<'t>(
    db: &Db,
    txn: &'t RoTxn,
    kbuf: &mut [u8; key::MAX_KEY_BYTES],
    k: &[u8],
    r: &Resolved,
    window: Window,
) -> Result<(i8, &'t [u8])> {
    if k.is_empty() || k.len() > key::MAX_KEY_BYTES - 4 {
        return Ok((NOT_FOUND, &[]));
    }
    kbuf[4..4 + k.len()].copy_from_slice(k);
    let full = &kbuf[..4 + k.len()];
    judge(r, window, full, db.get(txn, full).map_err(storage)?)
}

/// `n` elements: the first `n` of `stack` when they fit (small requests allocate nothing), else of
/// `heap`, filled with `fill`.
#[inline]
pub fn small<'a, T: Copy>(stack: &'a mut [T], heap: &'a mut Vec<T>, n: usize, fill: T) -> &'a mut [T] {
    if n <= stack.len() {
        let s = &mut stack[..n];
        s.fill(fill);
        s
    } else {
        heap.clear();
        heap.resize(n, fill);
        heap
    }
}

/// The status and, when PRESENT, the checked body of the value `v` found (or not) under the full LMDB
/// key `full` of view `r` (see [`lookup`]).
#[inline(always)]
pub fn judge<'t>(r: &Resolved, window: Window, full: &[u8], v: Option<&'t [u8]>) -> Result<(i8, &'t [u8])> {
    match v {
        None => Ok((NOT_FOUND, &[])),
        Some(v) => {
            let v = r.layout.check(full, v).map_err(|_| damaged(&r.view))?;
            let s = window.status(r.layout.event_ts(v));
            Ok((s, if s == PRESENT { v } else { &[] }))
        }
    }
}

/// Looks up every probe (a full key of the data database: view prefix and encoded key; an empty key
/// stands for a null key, which is never stored) in `txn`: `out[i]` is probe i's stored value, None
/// when absent. All keys walk the B-tree together through `pages` (`direct.rs`) when the snapshot
/// allows it, a request of one key too (since the first probe of a page is guessed from its bounds,
/// one key alone takes ~0.1 us less than `mdb_get`: BENCHMARKS.md); otherwise each is one `mdb_get`.
/// Values are unchecked: pass them to [`judge`] (a value whose LMDB node is damaged comes back empty,
/// which every layout refuses: `direct.rs`).
pub fn fetch<'t>(
    db: &Db,
    txn: &'t RoTxn,
    pages: Option<&'t Pages>,
    probes: &[Probe<'_>],
    out: &mut [Option<&'t [u8]>],
) -> Result<()> {
    if out.len() != probes.len() {
        return Err(Error::Internal("fetch: one output per probe".into()));
    }
    if let Some(p) = pages {
        match p.tree(txn).and_then(|t| p.search(&t, probes, out, false)) {
            Ok(()) => return Ok(()),
            Err(Miss::Damaged(e)) => return Err(e),
            Err(Miss::Fallback) => {}
        }
    }
    for (p, o) in probes.iter().zip(out.iter_mut()) {
        let k = p.key();
        *o = if k.is_empty() || k.len() > key::MAX_KEY_BYTES {
            None
        } else {
            db.get(txn, k).map_err(storage)?
        };
    }
    Ok(())
}

pub struct Reader {
    pub store: Arc<Store>,
    pub view: Resolved,
}

impl Reader {
    pub fn new(store: Arc<Store>, view: &str, columns: Option<&[String]>) -> Result<Reader> {
        let found = store.read(|txn| store.view_in(txn, view))?;
        let Some((schema, prefix)) = found else {
            let known = store.views()?;
            return Err(Error::InvalidArgument(format!(
                "view {view:?} has never been written to this online store (views: {known:?}); write it first"
            )));
        };
        Ok(Reader {
            view: Resolved::new(view, schema, prefix, columns)?,
            store,
        })
    }

    /// Checks that every selected column can be returned as float64.
    pub fn check_numeric(&self) -> Result<()> {
        self.view.check_numeric("get_numpy")
    }

    /// Runs `f(i, status, value)` for every requested key in request order, in one read transaction.
    /// `value` is the stored bytes when the status is PRESENT.
    #[inline]
    fn each(&self, keys: &KeyBatch, window: Window, mut f: impl FnMut(usize, i8, &[u8])) -> Result<()> {
        let full = keys.with_prefix(&self.view.prefix);
        let probes: Vec<Probe<'_>> = (0..full.len()).map(|i| Probe::new(full.key(i))).collect();
        // Taken per call, not kept: a forked child's first read reopens the environment (new handles).
        let db = self.store.data();
        self.store.read_pages(|txn, pages| {
            let mut found = vec![None; probes.len()];
            fetch(&db, txn, pages, &probes, &mut found)?;
            for (i, (p, v)) in probes.iter().zip(&found).enumerate() {
                let (s, v) = judge(&self.view, window, p.key(), *v)?;
                f(i, s, v);
            }
            Ok(())
        })
    }

    /// Fills `values` (row-major, `keys.len() x cols.len()`) and `status`. Nulls and rows that are not
    /// PRESENT are NaN. Call [`Reader::check_numeric`] first.
    pub fn get_f64(
        &self,
        keys: &KeyBatch,
        window: Window,
        values: &mut [f64],
        status: &mut [i8],
    ) -> Result<()> {
        let r = &self.view;
        let w = r.cols.len();
        if values.len() != keys.len() * w || status.len() != keys.len() {
            return Err(Error::Internal("output buffers do not match the request".into()));
        }
        self.each(keys, window, |i, s, v| {
            status[i] = s;
            let row = &mut values[i * w..(i + 1) * w];
            if s == PRESENT {
                for (o, &j) in row.iter_mut().zip(&r.cols) {
                    *o = r.layout.f64_at(v, j);
                }
            } else {
                row.fill(f64::NAN);
            }
        })
    }

    /// The selected value columns and the status column as Arrow arrays.
    pub fn get_arrow(&self, keys: &KeyBatch, window: Window) -> Result<(Vec<ArrayRef>, Int8Array)> {
        let r = &self.view;
        let n = keys.len();
        let mut outs: Vec<Out> = r
            .cols
            .iter()
            .map(|&j| Out::new(&r.schema.values[j].kind, n))
            .collect();
        let mut status = Int8Builder::with_capacity(n);
        let mut err = None;
        self.each(keys, window, |_, s, v| {
            status.append_value(s);
            for (o, &j) in outs.iter_mut().zip(&r.cols) {
                if s != PRESENT || !r.layout.is_valid(v, j) {
                    o.null();
                } else if let Err(e) = o.push(&r.layout, v, j) {
                    err.get_or_insert(e);
                }
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        Ok((outs.into_iter().map(Out::finish).collect(), status.finish()))
    }
}

/// An Arrow builder for one value column of a stored kind.
pub(crate) enum Out {
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Ts(TimestampMicrosecondBuilder, String),
    Str(StringBuilder),
    Bin(BinaryBuilder),
    L32(FixedSizeListBuilder<Float32Builder>, usize),
    L64(FixedSizeListBuilder<Float64Builder>, usize),
}

impl Out {
    pub(crate) fn new(kind: &Kind, n: usize) -> Out {
        match kind {
            Kind::I8 => Out::I8(Int8Builder::with_capacity(n)),
            Kind::I16 => Out::I16(Int16Builder::with_capacity(n)),
            Kind::I32 => Out::I32(Int32Builder::with_capacity(n)),
            Kind::I64 => Out::I64(Int64Builder::with_capacity(n)),
            Kind::U8 => Out::U8(UInt8Builder::with_capacity(n)),
            Kind::U16 => Out::U16(UInt16Builder::with_capacity(n)),
            Kind::U32 => Out::U32(UInt32Builder::with_capacity(n)),
            Kind::U64 => Out::U64(UInt64Builder::with_capacity(n)),
            Kind::F32 => Out::F32(Float32Builder::with_capacity(n)),
            Kind::F64 => Out::F64(Float64Builder::with_capacity(n)),
            Kind::Bool => Out::Bool(BooleanBuilder::with_capacity(n)),
            Kind::Ts(tz) => Out::Ts(TimestampMicrosecondBuilder::with_capacity(n), tz.clone()),
            Kind::Str => Out::Str(StringBuilder::with_capacity(n, n * 8)),
            Kind::Bin => Out::Bin(BinaryBuilder::with_capacity(n, n * 8)),
            Kind::ListF32(k) => Out::L32(
                FixedSizeListBuilder::with_capacity(Float32Builder::with_capacity(n * *k as usize), *k, n),
                *k as usize,
            ),
            Kind::ListF64(k) => Out::L64(
                FixedSizeListBuilder::with_capacity(Float64Builder::with_capacity(n * *k as usize), *k, n),
                *k as usize,
            ),
        }
    }

    pub(crate) fn null(&mut self) {
        match self {
            Out::I8(b) => b.append_null(),
            Out::I16(b) => b.append_null(),
            Out::I32(b) => b.append_null(),
            Out::I64(b) => b.append_null(),
            Out::U8(b) => b.append_null(),
            Out::U16(b) => b.append_null(),
            Out::U32(b) => b.append_null(),
            Out::U64(b) => b.append_null(),
            Out::F32(b) => b.append_null(),
            Out::F64(b) => b.append_null(),
            Out::Bool(b) => b.append_null(),
            Out::Ts(b, _) => b.append_null(),
            Out::Str(b) => b.append_null(),
            Out::Bin(b) => b.append_null(),
            Out::L32(b, k) => {
                b.values().append_nulls(*k);
                b.append(false)
            }
            Out::L64(b, k) => {
                b.values().append_nulls(*k);
                b.append(false)
            }
        }
    }

    pub(crate) fn push(&mut self, layout: &Layout, v: &[u8], j: usize) -> Result<()> {
        let at = layout.slots[j];
        match self {
            Out::I8(b) => b.append_value(v[at] as i8),
            Out::I16(b) => b.append_value(i16::from_le_bytes(arr(v, at))),
            Out::I32(b) => b.append_value(i32::from_le_bytes(arr(v, at))),
            Out::I64(b) => b.append_value(i64::from_le_bytes(arr(v, at))),
            Out::U8(b) => b.append_value(v[at]),
            Out::U16(b) => b.append_value(u16::from_le_bytes(arr(v, at))),
            Out::U32(b) => b.append_value(u32::from_le_bytes(arr(v, at))),
            Out::U64(b) => b.append_value(u64::from_le_bytes(arr(v, at))),
            Out::F32(b) => b.append_value(f32::from_le_bytes(arr(v, at))),
            Out::F64(b) => b.append_value(f64::from_le_bytes(arr(v, at))),
            Out::Bool(b) => b.append_value(v[at] != 0),
            Out::Ts(b, _) => b.append_value(i64::from_le_bytes(arr(v, at))),
            Out::Str(b) => {
                let s = std::str::from_utf8(layout.var_at(v, j)?)
                    .map_err(|_| Error::Storage("a stored string is not UTF-8 (corrupt value)".into()))?;
                b.append_value(s)
            }
            Out::Bin(b) => b.append_value(layout.var_at(v, j)?),
            Out::L32(b, k) => {
                for i in 0..*k {
                    b.values().append_value(f32::from_le_bytes(arr(v, at + 4 * i)));
                }
                b.append(true)
            }
            Out::L64(b, k) => {
                for i in 0..*k {
                    b.values().append_value(f64::from_le_bytes(arr(v, at + 8 * i)));
                }
                b.append(true)
            }
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> ArrayRef {
        match self {
            Out::I8(mut b) => Arc::new(b.finish()),
            Out::I16(mut b) => Arc::new(b.finish()),
            Out::I32(mut b) => Arc::new(b.finish()),
            Out::I64(mut b) => Arc::new(b.finish()),
            Out::U8(mut b) => Arc::new(b.finish()),
            Out::U16(mut b) => Arc::new(b.finish()),
            Out::U32(mut b) => Arc::new(b.finish()),
            Out::U64(mut b) => Arc::new(b.finish()),
            Out::F32(mut b) => Arc::new(b.finish()),
            Out::F64(mut b) => Arc::new(b.finish()),
            Out::Bool(mut b) => Arc::new(b.finish()),
            Out::Ts(mut b, tz) => Arc::new(b.finish().with_timezone(tz)),
            Out::Str(mut b) => Arc::new(b.finish()),
            Out::Bin(mut b) => Arc::new(b.finish()),
            Out::L32(mut b, _) => Arc::new(b.finish()),
            Out::L64(mut b, _) => Arc::new(b.finish()),
        }
    }
}
