//! Online window state: per entity, the raw events an aggregate at any instant from the entity's newest
//! event on can read, kept in the LMDB online store; evaluated at a request instant by the same
//! accumulators as the training-set backfill ([`super::evaluate_at`]), so online equals offline bit for
//! bit.
//!
//! What is kept (an exact tail, no tiles): for an entity whose newest event is at `newest`, every event
//! with time > `newest - horizon` (`horizon`: the view's largest window), in (time, write sequence)
//! order, each with its write sequence and the aggregated columns. Older events are dropped on push; the
//! greatest time among dropped events is kept as `dropped_max`. Events are identified by their write
//! sequence (the history's `__seq__`, unique per history row), so pushing an event twice (a
//! `materialize` replay) keeps it once, and a late event (older than `newest`) lands in its place.
//!
//! Status rule at a request instant `t`: an aggregate over (t - w, t] is exact when no dropped event can
//! be inside it, i.e. when `t - horizon >= dropped_max` (then `t - w >= dropped_max` for every w <=
//! horizon). That holds for every `t >= newest`, and for earlier instants back to `dropped_max +
//! horizon`. Before that the kept tail cannot answer: `NOT_YET_VALID`, every value null. An entity with
//! no state (never pushed) is `NOT_FOUND` and gets the empty window's values (count 0, the rest null),
//! which is what a training set computes for it. Otherwise `PRESENT`.
//!
//! Storage, state format version 1 (the one place it is defined). The online store name of view `v`'s
//! state is `v__window` (a double underscore never appears in a view name, so it cannot clash with a
//! view's own data); keys are that name's 4-byte prefix followed by the entity key (key format v1,
//! `crate::online::key`).
//!
//! - Meta record, in the metadata database under `window/<view>`:
//!   `[version u8 = 1 or 2][horizon i64 LE][n_keys u8]` then per key `[key kind tag u8][name len u16 LE][name]`,
//!   `[n_cols u8]` then per column `[column tag u8][name len u16 LE][name]`, then `[CRC-32C u32 LE]` of
//!   everything before it. Key kind tags: 1..=8 int8, int16, int32, int64, uint8, uint16, uint32, uint64;
//!   9 string, 10 binary. Column tags: 0 float64, 1 int64, 2 string (narrower types are widened on push).
//!   The version is the layout of the view's state records: 1, one record per entity (below); 2, the
//!   entity records packed into segments (`super::segment`). A new or fully rebuilt state is laid out
//!   as [`DEFAULT_LAYOUT`] (2); a state keeps its layout until a full rebuild, so one written as
//!   version 1 stays readable and pushable.
//! - State record, one per entity (stored as its own LMDB record in layout 1, inside a segment in
//!   layout 2):
//!   `[version u8 = 1][n u32 LE][dropped_max i64 LE]`, `n` times (i64 LE,
//!   UTC microseconds, ascending), `n` write sequences (i64 LE; ascending among equal times), then per
//!   column in meta order: a validity bitmap of `ceil(n / 8)` bytes (bit i of byte i / 8, LSB first, set
//!   when event i holds a value), then for float64 / int64 `n` values of 8 bytes LE (0 where null), for
//!   strings `n` end offsets (u32 LE, into the bytes that follow) and the UTF-8 bytes; then
//!   `[CRC-32C u32 LE]` of everything before it. `dropped_max` is `i64::MIN` when nothing was dropped.
//!
//! A record that fails its checksum or its lengths is a `Storage` error naming the repair (materialize).

use std::ops::Bound;
use std::sync::Arc;

use arrow::array::*;
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::{cast, concat};
use arrow::datatypes::DataType;
use heed::RoTxn;

use super::{accumulator, evaluate_at, Eval, Func, Values};
use crate::column::timestamp_values;
use crate::error::{Error, Result};
use crate::online::cells::Chunk;
use crate::online::env::{Db, Store, TxnError};
use crate::online::key;
use crate::online::schema::Kind;
use crate::online::status::{NOT_YET_VALID, PRESENT};
use crate::online::write::encode_key;
use crate::table::Table;
use crate::time::{instant_unit, to_micros};

/// The version of the meta and state records above.
pub const STATE_FORMAT_VERSION: u8 = 1;

/// The layout of a new (or rebuilt) view's state: segments (`super::segment`, format version 2). A
/// state stored as version 1 keeps that layout until a full rebuild.
pub const DEFAULT_LAYOUT: u8 = super::segment::SEGMENT_FORMAT_VERSION;

/// The online store name under which `view`'s window state lives.
pub fn store_name(view: &str) -> String {
    format!("{view}__window")
}

fn meta_key(view: &str) -> Vec<u8> {
    let mut k = b"window/".to_vec();
    k.extend_from_slice(view.as_bytes());
    k
}

/// The records' checksum: CRC-32C (Castagnoli), the online store's checksum (`crate::online::value`,
/// hardware-accelerated where the CPU has it), since every push checks and rewrites whole records.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// How an aggregated column is stored (after widening).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColTag {
    F64 = 0,
    I64 = 1,
    Str = 2,
}

impl ColTag {
    fn of(t: &DataType) -> Option<ColTag> {
        match t {
            DataType::Float64 => Some(ColTag::F64),
            DataType::Int64 => Some(ColTag::I64),
            DataType::Utf8 => Some(ColTag::Str),
            _ => None,
        }
    }
    fn from_u8(b: u8) -> Result<ColTag> {
        Ok(match b {
            0 => ColTag::F64,
            1 => ColTag::I64,
            2 => ColTag::Str,
            _ => return Err(damaged("meta record")),
        })
    }
}

const KEY_KINDS: [Kind; 10] = [
    Kind::I8,
    Kind::I16,
    Kind::I32,
    Kind::I64,
    Kind::U8,
    Kind::U16,
    Kind::U32,
    Kind::U64,
    Kind::Str,
    Kind::Bin,
];

fn damaged(what: &str) -> Error {
    Error::Storage(format!(
        "a window state {what} in the online store is damaged (checksum or length); run \
         store.materialize(None, end) to rebuild the view's window state from its history"
    ))
}

/// What a view's window state records: its key columns with their stored kinds, its horizon (the
/// largest window, microseconds) and its aggregated columns.
#[derive(Clone, Debug, PartialEq)]
pub struct StateMeta {
    /// The state's layout: 1 (one record per entity) or 2 (segments, `super::segment`).
    pub layout: u8,
    pub keys: Vec<(String, Kind)>,
    pub horizon: i64,
    pub columns: Vec<(String, ColTag)>,
}

impl StateMeta {
    /// Whether `other` records the same definition (keys, horizon, columns), whatever its layout.
    pub fn same_definition(&self, other: &StateMeta) -> bool {
        (&self.keys, self.horizon, &self.columns) == (&other.keys, other.horizon, &other.columns)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![self.layout];
        b.extend_from_slice(&self.horizon.to_le_bytes());
        let name = |b: &mut Vec<u8>, n: &str| {
            b.extend_from_slice(&(n.len() as u16).to_le_bytes());
            b.extend_from_slice(n.as_bytes());
        };
        b.push(self.keys.len() as u8);
        for (n, k) in &self.keys {
            let tag = KEY_KINDS.iter().position(|x| x == k).map_or(0, |i| i + 1);
            b.push(tag as u8);
            name(&mut b, n);
        }
        b.push(self.columns.len() as u8);
        for (n, t) in &self.columns {
            b.push(*t as u8);
            name(&mut b, n);
        }
        let c = crc32(&b);
        b.extend_from_slice(&c.to_le_bytes());
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<StateMeta> {
        let body = checked(bytes, "meta record")?;
        let mut r = Reader {
            b: body,
            at: 0,
            what: "meta record",
        };
        let layout = r.u8()?;
        if layout != STATE_FORMAT_VERSION && layout != super::segment::SEGMENT_FORMAT_VERSION {
            return Err(Error::Storage(format!(
                "the window state was written with state format {layout}; this skewless reads {STATE_FORMAT_VERSION} \
                 and {}. Run store.materialize(None, end) to rebuild it",
                super::segment::SEGMENT_FORMAT_VERSION
            )));
        }
        let horizon = r.i64()?;
        let mut keys = Vec::new();
        for _ in 0..r.u8()? {
            let tag = r.u8()? as usize;
            let kind = KEY_KINDS
                .get(tag.wrapping_sub(1))
                .cloned()
                .ok_or_else(|| damaged("meta record"))?;
            keys.push((r.name()?, kind));
        }
        let mut columns = Vec::new();
        for _ in 0..r.u8()? {
            let t = ColTag::from_u8(r.u8()?)?;
            columns.push((r.name()?, t));
        }
        Ok(StateMeta {
            layout,
            keys,
            horizon,
            columns,
        })
    }
}

/// The body of a record whose trailing CRC-32C checks out.
fn checked<'a>(bytes: &'a [u8], what: &str) -> Result<&'a [u8]> {
    if bytes.len() < 5 {
        return Err(damaged(what));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32(body) != want {
        return Err(damaged(what));
    }
    Ok(body)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| damaged(self.what))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn i64(&mut self) -> Result<i64> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(i64::from_le_bytes(a))
    }
    fn name(&mut self) -> Result<String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| damaged(self.what))
    }
}

/// One entity's kept events, in (time, sequence) order, with the aggregated columns as Arrow arrays
/// (float64, int64 or utf8, by the meta's column tags).
#[derive(Debug, Clone)]
pub struct Events {
    pub times: Vec<i64>,
    pub seqs: Vec<i64>,
    pub cols: Vec<ArrayRef>,
    pub dropped_max: i64,
}

impl Events {
    /// The events of a state record, as Arrow arrays (what the accumulators read).
    pub fn decode(bytes: &[u8], tags: &[ColTag]) -> Result<Events> {
        let raw = Raw::parse(bytes, tags)?;
        let n = raw.n;
        let times: Vec<i64> = (0..n).map(|i| raw.time(i)).collect();
        let seqs: Vec<i64> = (0..n).map(|i| raw.seq(i)).collect();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(tags.len());
        for (c, col) in raw.cols.iter().enumerate() {
            let valid: Vec<bool> = (0..n).map(|i| raw.valid(c, i)).collect();
            let nulls = Some(NullBuffer::from(valid));
            cols.push(match col.tag {
                ColTag::F64 => {
                    let v: Vec<f64> = (0..n).map(|i| f64::from_le_bytes(raw.word(c, i))).collect();
                    Arc::new(Float64Array::new(ScalarBuffer::from(v), nulls))
                }
                ColTag::I64 => {
                    let v: Vec<i64> = (0..n).map(|i| i64::from_le_bytes(raw.word(c, i))).collect();
                    Arc::new(Int64Array::new(ScalarBuffer::from(v), nulls))
                }
                ColTag::Str => {
                    let mut ends = Vec::with_capacity(n + 1);
                    ends.push(0i32);
                    for i in 0..n {
                        ends.push(raw.str_end(c, i) as i32);
                    }
                    let data = raw.str_data(c);
                    let offsets = OffsetBuffer::new(ScalarBuffer::from(ends));
                    let a = StringArray::try_new(offsets, data.to_vec().into(), nulls)
                        .map_err(|_| damaged("entity record"))?;
                    Arc::new(a)
                }
            });
        }
        Ok(Events {
            times,
            seqs,
            cols,
            dropped_max: raw.dropped_max,
        })
    }
}

/// Where one column's sections start in a record body.
#[derive(Clone, Copy)]
struct RawCol {
    tag: ColTag,
    valid_at: usize,
    /// The values (8 bytes each), or a string column's end offsets.
    vals_at: usize,
    /// A string column's bytes.
    data_at: usize,
}

/// A state record read in place: its checksum and lengths checked, its sections located, nothing copied.
struct Raw<'a> {
    b: &'a [u8],
    n: usize,
    dropped_max: i64,
    cols: Vec<RawCol>,
}

const HEADER: usize = 1 + 4 + 8;

#[inline]
fn word_at(b: &[u8], at: usize) -> [u8; 8] {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    w
}

impl<'a> Raw<'a> {
    fn parse(bytes: &'a [u8], tags: &[ColTag]) -> Result<Raw<'a>> {
        Raw::parse_into(bytes, tags, Vec::with_capacity(tags.len()))
    }

    /// [`Raw::parse`] into `cols`' allocation (cleared first): a push parses thousands of records and
    /// hands the same one from each to the next ([`Raw::into_cols`]).
    fn parse_into(bytes: &'a [u8], tags: &[ColTag], mut cols: Vec<RawCol>) -> Result<Raw<'a>> {
        cols.clear();
        let what = "entity record";
        let b = checked(bytes, what)?;
        let mut r = Reader { b, at: 0, what };
        if r.u8()? != STATE_FORMAT_VERSION {
            return Err(damaged(what));
        }
        let n = r.u32()? as usize;
        let dropped_max = r.i64()?;
        let words = n.checked_mul(8).ok_or_else(|| damaged(what))?;
        r.take(words)?;
        r.take(words)?;
        for &tag in tags {
            let valid_at = r.at;
            r.take(n.div_ceil(8))?;
            let vals_at = r.at;
            let data_at = match tag {
                ColTag::F64 | ColTag::I64 => {
                    r.take(words)?;
                    r.at
                }
                ColTag::Str => {
                    let ends = r.take(n.checked_mul(4).ok_or_else(|| damaged(what))?)?;
                    let mut prev = 0u32;
                    for e in ends.chunks_exact(4) {
                        let e = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
                        if e < prev || e > i32::MAX as u32 {
                            return Err(damaged(what));
                        }
                        prev = e;
                    }
                    let at = r.at;
                    r.take(prev as usize)?;
                    at
                }
            };
            cols.push(RawCol {
                tag,
                valid_at,
                vals_at,
                data_at,
            });
        }
        let raw = Raw {
            b,
            n,
            dropped_max,
            cols,
        };
        if r.at != b.len() || !ascending(raw.run(Section::Times, 0, n)) {
            return Err(damaged(what));
        }
        Ok(raw)
    }

    /// The column table's allocation, for the next [`Raw::parse_into`].
    fn into_cols(self) -> Vec<RawCol> {
        self.cols
    }

    fn empty(tags: &[ColTag]) -> Raw<'static> {
        let cols = tags
            .iter()
            .map(|&tag| RawCol {
                tag,
                valid_at: HEADER,
                vals_at: HEADER,
                data_at: HEADER,
            })
            .collect();
        Raw {
            b: &[],
            n: 0,
            dropped_max: i64::MIN,
            cols,
        }
    }

    /// The encoded 8-byte words of events `lo..hi` of a section.
    fn run(&self, section: Section, lo: usize, hi: usize) -> &'a [u8] {
        let base = match section {
            Section::Times => HEADER,
            Section::Seqs => HEADER + 8 * self.n,
            Section::Col(c) => self.cols[c].vals_at,
        };
        &self.b[base + 8 * lo..base + 8 * hi]
    }

    fn str_end(&self, c: usize, i: usize) -> u32 {
        let at = self.cols[c].vals_at + 4 * i;
        u32::from_le_bytes([self.b[at], self.b[at + 1], self.b[at + 2], self.b[at + 3]])
    }

    fn str_data(&self, c: usize) -> &'a [u8] {
        let end = if self.n == 0 {
            0
        } else {
            self.str_end(c, self.n - 1) as usize
        };
        &self.b[self.cols[c].data_at..self.cols[c].data_at + end]
    }
}

/// Whether the i64 LE words of `times` never decrease (one pass over the bytes, no per-word bounds
/// checks: every stored record a push rewrites is checked).
fn ascending(times: &[u8]) -> bool {
    let mut prev = i64::MIN;
    times.chunks_exact(8).all(|w| {
        let t = i64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        let ok = t >= prev;
        prev = t;
        ok
    })
}

/// Events of one of the two inputs of a merge: the stored record, or the pushed batch.
trait Source {
    fn len(&self) -> usize;
    fn time(&self, i: usize) -> i64;
    fn seq(&self, i: usize) -> i64;
    fn valid(&self, c: usize, i: usize) -> bool;
    /// Whether every event holds a value in column `c` (may say false when unsure).
    fn all_valid(&self, c: usize) -> bool;
    /// A float64 (its bits) or int64 value, little-endian; zeros where null.
    fn word(&self, c: usize, i: usize) -> [u8; 8];
    /// A string value's bytes; empty where null.
    fn text(&self, c: usize, i: usize) -> &[u8];
}

/// An 8-byte-word section of a record: times, sequences, or column `c`'s values.
#[derive(Clone, Copy)]
enum Section {
    Times,
    Seqs,
    Col(usize),
}

impl Source for Raw<'_> {
    fn len(&self) -> usize {
        self.n
    }
    #[inline]
    fn time(&self, i: usize) -> i64 {
        i64::from_le_bytes(word_at(self.b, HEADER + 8 * i))
    }
    #[inline]
    fn seq(&self, i: usize) -> i64 {
        i64::from_le_bytes(word_at(self.b, HEADER + 8 * (self.n + i)))
    }
    #[inline]
    fn valid(&self, c: usize, i: usize) -> bool {
        self.b[self.cols[c].valid_at + i / 8] >> (i % 8) & 1 == 1
    }
    #[inline]
    fn word(&self, c: usize, i: usize) -> [u8; 8] {
        word_at(self.b, self.cols[c].vals_at + 8 * i)
    }
    fn all_valid(&self, c: usize) -> bool {
        if self.n == 0 {
            return true;
        }
        let at = self.cols[c].valid_at;
        let r = self.n % 8;
        let tail = (1u8 << r).wrapping_sub(1);
        self.b[at..at + self.n / 8].iter().all(|&x| x == 0xff)
            && (r == 0 || self.b[at + self.n / 8] & tail == tail)
    }
    fn text(&self, c: usize, i: usize) -> &[u8] {
        let start = if i == 0 {
            0
        } else {
            self.str_end(c, i - 1) as usize
        };
        let at = self.cols[c].data_at;
        &self.b[at + start..at + self.str_end(c, i) as usize]
    }
}

/// A pushed batch's column, downcast once.
enum BatchCol<'a> {
    F64(&'a Float64Array),
    I64(&'a Int64Array),
    Str(&'a StringArray),
}

struct Batch<'a> {
    times: &'a [i64],
    seqs: &'a [i64],
    cols: Vec<BatchCol<'a>>,
}

impl Source for Batch<'_> {
    fn len(&self) -> usize {
        self.times.len()
    }
    #[inline]
    fn time(&self, i: usize) -> i64 {
        self.times[i]
    }
    #[inline]
    fn seq(&self, i: usize) -> i64 {
        self.seqs[i]
    }
    fn all_valid(&self, c: usize) -> bool {
        match &self.cols[c] {
            BatchCol::F64(a) => a.null_count() == 0,
            BatchCol::I64(a) => a.null_count() == 0,
            BatchCol::Str(a) => a.null_count() == 0,
        }
    }
    #[inline]
    fn valid(&self, c: usize, i: usize) -> bool {
        match &self.cols[c] {
            BatchCol::F64(a) => a.is_valid(i),
            BatchCol::I64(a) => a.is_valid(i),
            BatchCol::Str(a) => a.is_valid(i),
        }
    }
    #[inline]
    fn word(&self, c: usize, i: usize) -> [u8; 8] {
        match &self.cols[c] {
            BatchCol::F64(a) if a.is_valid(i) => a.value(i).to_le_bytes(),
            BatchCol::I64(a) if a.is_valid(i) => a.value(i).to_le_bytes(),
            _ => [0; 8],
        }
    }
    fn text(&self, c: usize, i: usize) -> &[u8] {
        match &self.cols[c] {
            BatchCol::Str(a) if a.is_valid(i) => a.value(i).as_bytes(),
            _ => &[],
        }
    }
}

/// A stretch of one entity's merged events: the stored record's events `lo..hi`, or one row of the
/// batch. Stored events mostly come in one run (the kept tail, in order), which is copied as bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Piece {
    Stored(u32, u32),
    New(u32),
}

/// Encodes the `n` events of `pieces` (the stored record `a`'s and the batch `b`'s) in that order,
/// appended to `out`.
fn encode(
    a: &Raw<'_>,
    b: &Batch<'_>,
    pieces: &[Piece],
    n: usize,
    dropped_max: i64,
    tags: &[ColTag],
    out: &mut Vec<u8>,
) {
    // Generic, not `dyn`: inlined per section, no indirect call per new event.
    fn words(
        out: &mut Vec<u8>,
        a: &Raw<'_>,
        pieces: &[Piece],
        section: Section,
        one: impl Fn(u32) -> [u8; 8],
    ) {
        for &p in pieces {
            match p {
                Piece::Stored(lo, hi) => out.extend_from_slice(a.run(section, lo as usize, hi as usize)),
                Piece::New(r) => out.extend_from_slice(&one(r)),
            }
        }
    }
    let record = out.len();
    out.push(STATE_FORMAT_VERSION);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(&dropped_max.to_le_bytes());
    words(out, a, pieces, Section::Times, |r| {
        b.time(r as usize).to_le_bytes()
    });
    words(out, a, pieces, Section::Seqs, |r| b.seq(r as usize).to_le_bytes());
    for (c, t) in tags.iter().enumerate() {
        let start = out.len();
        if a.all_valid(c) && b.all_valid(c) {
            // No nulls on either side (the common case): whole bytes of set bits, the tail masked.
            out.resize(start + n / 8, 0xff);
            if n % 8 != 0 {
                out.push((1u8 << (n % 8)) - 1);
            }
        } else {
            out.resize(start + n.div_ceil(8), 0);
            let mut k = 0;
            let mut bit = |out: &mut Vec<u8>, v: bool| {
                if v {
                    out[start + k / 8] |= 1 << (k % 8);
                }
                k += 1;
            };
            for &p in pieces {
                match p {
                    Piece::Stored(lo, hi) => (lo..hi).for_each(|i| bit(out, a.valid(c, i as usize))),
                    Piece::New(r) => bit(out, b.valid(c, r as usize)),
                }
            }
        }
        match t {
            ColTag::F64 | ColTag::I64 => words(out, a, pieces, Section::Col(c), |r| b.word(c, r as usize)),
            ColTag::Str => {
                let mut end = 0u32;
                let each = |f: &mut dyn FnMut(&[u8])| {
                    for &p in pieces {
                        match p {
                            Piece::Stored(lo, hi) => (lo..hi).for_each(|i| f(a.text(c, i as usize))),
                            Piece::New(r) => f(b.text(c, r as usize)),
                        }
                    }
                };
                each(&mut |s| {
                    end += s.len() as u32;
                    out.extend_from_slice(&end.to_le_bytes());
                });
                each(&mut |s| out.extend_from_slice(s));
            }
        }
    }
    let crc = crc32(&out[record..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// What a push (or a materialize replay) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushStats {
    /// Events taken (every row of the batch).
    pub events: usize,
    /// Entities whose state was written.
    pub entities: usize,
}

/// The columns a push reads, by name.
pub struct PushSpec<'a> {
    pub keys: &'a [String],
    pub timestamp: &'a str,
    /// The events' write sequence (int64, no nulls): the history's `__seq__`.
    pub sequence: &'a str,
    /// The aggregated columns, in the order the state keeps them.
    pub columns: &'a [String],
    /// The view's largest window, microseconds.
    pub horizon: i64,
    /// Drop the view's whole state first, in the same transaction (a full rebuild).
    pub reset: bool,
}

fn whole(table: &Table, name: &str) -> Result<ArrayRef> {
    let c = table.column(name, "the events")?;
    let parts: Vec<&dyn Array> = c.chunks.iter().map(|a| a.as_ref()).collect();
    Ok(if parts.is_empty() {
        new_empty_array(&c.data_type)
    } else {
        concat(&parts)?
    })
}

/// Merges the events of `table` into the window state of `view`, in one write transaction: every check
/// runs before the store is touched, so a bad batch writes nothing.
pub fn push(store: &Store, view: &str, table: &Table, spec: &PushSpec<'_>) -> Result<PushStats> {
    push_gated(store, view, table, spec, &mut || Ok(()))
}

/// `push_laid_out` with a new state laid out as [`DEFAULT_LAYOUT`].
pub fn push_gated(
    store: &Store,
    view: &str,
    table: &Table,
    spec: &PushSpec<'_>,
    before_commit: &mut dyn FnMut() -> Result<()>,
) -> Result<PushStats> {
    push_laid_out(store, view, table, spec, DEFAULT_LAYOUT, before_commit)
}

/// [`push`], with `before_commit` run inside the transaction once every record is merged, just before
/// it commits (again on each retry after the map grew); an error from it aborts the transaction, so
/// nothing is written. `store.push` waits there for its history file to be durable, which a thread of
/// its own writes meanwhile (`crate::py::window`, `CommitGate`). A state with no meta yet (or reset) is
/// laid out as `layout`; a stored state keeps its own.
fn push_laid_out(
    store: &Store,
    view: &str,
    table: &Table,
    spec: &PushSpec<'_>,
    layout: u8,
    before_commit: &mut dyn FnMut() -> Result<()>,
) -> Result<PushStats> {
    if spec.horizon <= 0 {
        return Err(Error::InvalidArgument(format!(
            "the horizon of view {view:?}'s window state must be positive, not {}",
            spec.horizon
        )));
    }
    let n = table.num_rows();
    let mut keys = Vec::with_capacity(spec.keys.len());
    let mut meta_keys = Vec::with_capacity(spec.keys.len());
    for k in spec.keys {
        let a = whole(table, k)?;
        let kind = Kind::of(a.data_type()).filter(Kind::is_key_kind).ok_or_else(|| {
            Error::Dtype(format!(
                "key column {k:?} is {}; keys must be integers, strings or binary",
                a.data_type()
            ))
        })?;
        meta_keys.push((k.clone(), kind));
        keys.push(a);
    }
    let ts = whole(table, spec.timestamp)?;
    let unit = instant_unit(spec.timestamp, ts.data_type(), "the events")?;
    let mut times = Vec::with_capacity(n);
    for (i, &v) in timestamp_values(ts.as_ref()).iter().enumerate() {
        if ts.is_null(i) {
            return Err(Error::InvalidArgument(format!(
                "timestamp column {:?} is null at row {i}; every event needs a time",
                spec.timestamp
            )));
        }
        times.push(to_micros(v, unit).ok_or_else(|| {
            Error::Dtype(format!(
                "column {:?} holds an instant outside the range of int64 microseconds",
                spec.timestamp
            ))
        })?);
    }
    let seq = whole(table, spec.sequence)?;
    let seqs: Vec<i64> = match seq.as_primitive_opt::<arrow::datatypes::Int64Type>() {
        Some(a) if a.null_count() == 0 => a.values().to_vec(),
        _ => {
            return Err(Error::Dtype(format!(
                "sequence column {:?} must be int64 without nulls, not {}",
                spec.sequence,
                seq.data_type()
            )))
        }
    };
    let mut cols = Vec::with_capacity(spec.columns.len());
    let mut meta_cols = Vec::with_capacity(spec.columns.len());
    for c in spec.columns {
        let a = super::backfill::widen(whole(table, c)?)?;
        let a = if a.data_type() == &DataType::LargeUtf8 {
            cast(&a, &DataType::Utf8)?
        } else {
            a
        };
        let tag = ColTag::of(a.data_type()).ok_or_else(|| {
            Error::Dtype(format!(
                "column {c:?} is {}; window aggregates read float64, int64 or string columns (cast it)",
                a.data_type()
            ))
        })?;
        meta_cols.push((c.clone(), tag));
        cols.push(a);
    }
    let meta = StateMeta {
        layout,
        keys: meta_keys,
        horizon: spec.horizon,
        columns: meta_cols,
    };
    let tags: Vec<ColTag> = meta.columns.iter().map(|c| c.1).collect();

    // Every key, encoded (errors on nulls and empty keys before any write).
    let chunks: Vec<Chunk<'_>> = keys.iter().map(Chunk::new).collect::<Result<_>>()?;
    let mut arena: Vec<u8> = Vec::with_capacity(n * 9);
    let mut spans: Vec<(u32, u32)> = Vec::with_capacity(n);
    for r in 0..n {
        let start = arena.len();
        if !encode_key(&chunks, r, &mut arena) {
            return Err(Error::NullKey(format!(
                "a key column is null at row {r}; every event needs a key. Drop or fill those rows first"
            )));
        }
        key::check_len(&arena[start..])?;
        if arena.len() == start {
            return Err(Error::InvalidArgument(format!(
                "row {r} has an empty key (an empty string or bytes); give it a key"
            )));
        }
        spans.push((start as u32, arena.len() as u32));
    }
    let kb = |r: u32| &arena[spans[r as usize].0 as usize..spans[r as usize].1 as usize];
    let (order, groups) = sort_rows(n, &times, &seqs, &spans, &kb);
    let new = Batch {
        times: &times,
        seqs: &seqs,
        cols: cols
            .iter()
            .map(|a| match a.data_type() {
                DataType::Float64 => BatchCol::F64(a.as_primitive()),
                DataType::Int64 => BatchCol::I64(a.as_primitive()),
                _ => BatchCol::Str(a.as_string()),
            })
            .collect(),
    };
    let name = store_name(view);
    let mkey = meta_key(view);
    store
        .write(&name, |txn, data, metadb, prefix| {
            let stored = match metadb.get(txn, &mkey)? {
                Some(b) if !spec.reset => Some(StateMeta::decode(b)?),
                _ => None,
            };
            let layout = stored.as_ref().map_or(layout, |m| m.layout);
            match stored {
                Some(stored) => {
                    if !stored.same_definition(&meta) {
                        return Err(TxnError::Kernel(Error::SchemaMismatch(format!(
                        "view {view:?}'s window state was built for {:?} (largest window {} us), but these \
                         events are {:?} (largest window {} us); the definition changed: run \
                         store.materialize(None, end) to rebuild the state from the history",
                        stored.columns, stored.horizon, meta.columns, meta.horizon
                    ))));
                    }
                }
                _ => metadb.put(txn, &mkey, &meta.encode())?,
            }
            if spec.reset {
                let next = (u32::from_be_bytes(prefix) as u64 + 1).min(u32::MAX as u64) as u32;
                let hi = next.to_be_bytes();
                data.delete_range(
                    txn,
                    &(
                        std::ops::Bound::Included(&prefix[..]),
                        std::ops::Bound::Excluded(&hi[..]),
                    ),
                )?;
            }
            if layout == super::segment::SEGMENT_FORMAT_VERSION {
                // Segments: each entity's record merged as below, the segments rewritten around them.
                let ks: Vec<&[u8]> = groups.iter().map(|&(lo, _)| kb(order[lo])).collect();
                let mut merger = Merger::new(&new, spec.horizon, &tags);
                let none = Raw::empty(&tags);
                let mut raw_cols: Vec<RawCol> = Vec::with_capacity(tags.len());
                let mut segs = super::segment::LmdbSegments::new(txn, *data, prefix);
                super::segment::rewrite(&mut segs, &ks, |g, old, out| {
                    let (lo, hi) = groups[g];
                    match old {
                        Some(b) => {
                            let old = Raw::parse_into(b, &tags, std::mem::take(&mut raw_cols))?;
                            merger.record_into(&old, &order[lo..hi], out);
                            raw_cols = old.into_cols();
                        }
                        None => merger.record_into(&none, &order[lo..hi], out),
                    }
                    Ok(())
                })?;
                before_commit()?;
                return Ok(groups.len());
            }
            // Entity g's LMDB key (the view's prefix, then its encoded key), into `k`.
            let key_of = |g: usize, k: &mut Vec<u8>| {
                k.clear();
                k.extend_from_slice(&prefix);
                k.extend_from_slice(kb(order[groups[g].0]));
            };
            let mut want: Vec<u8> = Vec::with_capacity(4 + key::MAX_KEY_BYTES);
            let mut merger = Merger::new(&new, spec.horizon, &tags);
            let mut raw_cols: Vec<RawCol> = Vec::with_capacity(tags.len());
            let mut absent: Vec<usize> = Vec::new();
            if !groups.is_empty() {
                // Entities come in key order, as LMDB keeps them: one cursor walks the view's records,
                // stepping over a short gap (a whole page of touched entities costs no search) and
                // seeking past a long one, and each stored record is replaced where the cursor stands
                // (no second search). Entities with no record yet are inserted after the walk.
                let mut last = Vec::new();
                key_of(groups.len() - 1, &mut last);
                key_of(0, &mut want);
                let mut walk =
                    data.range_mut(txn, &(Bound::Included(&want[..]), Bound::Included(&last[..])))?;
                let mut at = walk.next().transpose()?;
                let mut g = 0;
                while g < groups.len() {
                    let mut steps = 0;
                    while let Some((k, _)) = at {
                        if k >= &want[..] || steps == WALK_STEPS {
                            break;
                        }
                        at = walk.next().transpose()?;
                        steps += 1;
                    }
                    if at.is_some_and(|(k, _)| k < &want[..]) {
                        drop(walk);
                        walk =
                            data.range_mut(txn, &(Bound::Included(&want[..]), Bound::Included(&last[..])))?;
                        at = walk.next().transpose()?;
                    }
                    match at {
                        Some((k, stored)) if k == &want[..] => {
                            let old = Raw::parse_into(stored, &tags, std::mem::take(&mut raw_cols))?;
                            let (lo, hi) = groups[g];
                            let rec = merger.record(&old, &order[lo..hi]);
                            raw_cols = old.into_cols();
                            // SAFETY: `rec` is owned by the merger and the key is the one the cursor
                            // stands on; `stored` and `old` (which borrow the page) are not used after
                            // the put.
                            unsafe { walk.put_current(&want, rec)? };
                            at = walk.next().transpose()?;
                        }
                        _ => absent.push(g),
                    }
                    g += 1;
                    if g < groups.len() {
                        key_of(g, &mut want);
                    }
                }
            }
            let none = Raw::empty(&tags);
            for &g in &absent {
                let (lo, hi) = groups[g];
                key_of(g, &mut want);
                data.put(txn, &want, merger.record(&none, &order[lo..hi]))?;
            }
            let entities = groups.len();
            before_commit()?;
            Ok(entities)
        })
        .map(|entities| PushStats { events: n, entities })
}

/// The rows of a batch sorted by (key, time, sequence), keys compared as bytes (LMDB's order), and each
/// entity's run `lo..hi` of positions in that order. `spans[r]`: row r's key in the arena `kb` reads.
fn sort_rows<'a>(
    n: usize,
    times: &[i64],
    seqs: &[i64],
    spans: &[(u32, u32)],
    kb: &impl Fn(u32) -> &'a [u8],
) -> (Vec<u32>, Vec<(usize, usize)>) {
    let head = |r: u32| {
        let k = kb(r);
        let mut h = [0u8; 8];
        h[..k.len().min(8)].copy_from_slice(&k[..k.len().min(8)]);
        u64::from_be_bytes(h)
    };
    let klen = |r: u32| spans[r as usize].1 - spans[r as usize].0;
    if spans.iter().all(|&(a, b)| b - a <= 8) {
        // Keys of at most 8 bytes (every integer key) sort as one 128-bit word per row: the key
        // zero-padded, big-endian (of two equal heads the shorter key is the smaller), its length, and
        // the row's rank in (time, sequence) order: no comparison reads the arena or the times again.
        // A stream arrives in time order, where the rank is the row itself.
        let by_time = (1..n).all(|i| (times[i - 1], seqs[i - 1]) <= (times[i], seqs[i]));
        let ranked: Vec<u32> = if by_time {
            (0..n as u32).collect()
        } else {
            let mut p: Vec<u32> = (0..n as u32).collect();
            p.sort_unstable_by_key(|&r| (times[r as usize], seqs[r as usize]));
            p
        };
        let mut words: Vec<u128> = ranked
            .iter()
            .enumerate()
            .map(|(rank, &r)| (head(r) as u128) << 64 | (klen(r) as u128) << 32 | rank as u128)
            .collect();
        radix_sort_words(&mut words);
        // A key is its head and length: the runs are read off the words, not the arena.
        let groups = runs(n, |a, b| words[a] >> 32 == words[b] >> 32);
        return (words.iter().map(|&w| ranked[w as u32 as usize]).collect(), groups);
    }
    // Longer keys: by their first 8 bytes inline, the arena read only when those tie.
    let mut order: Vec<(u64, u32)> = (0..n as u32).map(|r| (head(r), r)).collect();
    order.sort_unstable_by(|&(ha, a), &(hb, b)| {
        ha.cmp(&hb)
            .then_with(|| kb(a).cmp(kb(b)))
            .then(times[a as usize].cmp(&times[b as usize]))
            .then(seqs[a as usize].cmp(&seqs[b as usize]))
    });
    let order: Vec<u32> = order.into_iter().map(|(_, r)| r).collect();
    let groups = runs(n, |a, b| kb(order[a]) == kb(order[b]));
    (order, groups)
}

/// The maximal runs `lo..hi` of positions `0..n` in which every position is `same` as the run's first.
fn runs(n: usize, same: impl Fn(usize, usize) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut g = 0;
    while g < n {
        let mut end = g + 1;
        while end < n && same(g, end) {
            end += 1;
        }
        out.push((g, end));
        g = end;
    }
    out
}

/// Sorts the words of [`sort_rows`] (key head in the high 64 bits, key length in bits 32..40, rank in
/// the low 32), given in rank order, as `sort_unstable` would: a stable least-significant-digit radix
/// sort over the bytes of the length and the head, skipping every byte all words share. A batch's keys
/// differ in few bytes (10k integer ids: two), so that is two passes over the batch instead of a
/// comparison sort's n log n compares. Ranks are distinct and already ascending, so stability orders
/// equal keys by rank.
fn radix_sort_words(words: &mut Vec<u128>) {
    if words.len() < 256 {
        words.sort_unstable();
        return;
    }
    // Digits from the least significant: the length byte, then the head's bytes.
    const SHIFTS: [u32; 9] = [32, 64, 72, 80, 88, 96, 104, 112, 120];
    let mut counts = [[0usize; 256]; SHIFTS.len()];
    for &w in words.iter() {
        for (d, &sh) in SHIFTS.iter().enumerate() {
            counts[d][(w >> sh) as u8 as usize] += 1;
        }
    }
    let n = words.len();
    let mut other = vec![0u128; n];
    for (d, &sh) in SHIFTS.iter().enumerate() {
        if counts[d].contains(&n) {
            continue; // every word has the same byte here
        }
        let mut at = [0usize; 256];
        let mut sum = 0;
        for (b, &c) in counts[d].iter().enumerate() {
            at[b] = sum;
            sum += c;
        }
        for &w in words.iter() {
            let b = (w >> sh) as u8 as usize;
            other[at[b]] = w;
            at[b] += 1;
        }
        std::mem::swap(words, &mut other);
    }
}

/// How far the cursor of a push steps from one entity's record to the next before it seeks instead
/// (a step is a move within a page, a seek a search from the root).
const WALK_STEPS: usize = 16;

/// Builds the entities' new records of one push: the batch, the horizon and the column tags it merges
/// with, and the scratch every entity reuses.
struct Merger<'m, 'b> {
    new: &'m Batch<'b>,
    horizon: i64,
    tags: &'m [ColTag],
    pieces: Vec<Piece>,
    rec: Vec<u8>,
}

impl<'m, 'b> Merger<'m, 'b> {
    fn new(new: &'m Batch<'b>, horizon: i64, tags: &'m [ColTag]) -> Self {
        Merger {
            new,
            horizon,
            tags,
            pieces: Vec::new(),
            rec: Vec::new(),
        }
    }

    /// One entity's new record: its stored events `old` (empty for a new entity) merged with the
    /// batch's rows `rows` (sorted by time, sequence), trimmed to what an aggregate from the newest
    /// event on can read.
    fn record(&mut self, old: &Raw<'_>, rows: &[u32]) -> &[u8] {
        let mut rec = std::mem::take(&mut self.rec);
        rec.clear();
        self.record_into(old, rows, &mut rec);
        self.rec = rec;
        &self.rec
    }

    /// [`Merger::record`], appended to `out`.
    fn record_into(&mut self, old: &Raw<'_>, rows: &[u32], out: &mut Vec<u8>) {
        let new = self.new;
        merge(old, new, rows, &mut self.pieces);
        let newest = match self.pieces.last() {
            Some(&Piece::Stored(_, hi)) => old.time(hi as usize - 1),
            Some(&Piece::New(r)) => new.time(r as usize),
            None => i64::MIN,
        };
        // Drop from the front what no aggregate from the newest event on can read: events come in
        // time order across the pieces, so the cut ends in the first piece it does not swallow whole.
        let cut = newest.saturating_sub(self.horizon);
        let mut dropped_max = old.dropped_max;
        let mut first = self.pieces.len();
        for (k, p) in self.pieces.iter_mut().enumerate() {
            match *p {
                Piece::Stored(lo, hi) => {
                    // Most often the run's first event stays (nothing to drop): one compare.
                    let keep = if old.time(lo as usize) > cut {
                        lo as usize
                    } else {
                        first_after(lo as usize + 1, hi as usize, |i| old.time(i) <= cut)
                    };
                    if keep > lo as usize {
                        dropped_max = dropped_max.max(old.time(keep - 1));
                    }
                    if keep < hi as usize {
                        *p = Piece::Stored(keep as u32, hi);
                        first = k;
                        break;
                    }
                }
                Piece::New(r) => {
                    let t = new.time(r as usize);
                    if t > cut {
                        first = k;
                        break;
                    }
                    dropped_max = dropped_max.max(t);
                }
            }
        }
        let kept = &self.pieces[first..];
        let n = kept
            .iter()
            .map(|p| match *p {
                Piece::Stored(lo, hi) => (hi - lo) as usize,
                Piece::New(_) => 1,
            })
            .sum();
        encode(old, new, kept, n, dropped_max, self.tags, out);
    }
}

/// The first `i` in `lo..hi` where `before(i)` is false (`before` holds on a prefix), else `hi`.
fn first_after(mut lo: usize, mut hi: usize, before: impl Fn(usize) -> bool) -> usize {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if before(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Merges the stored events (sorted) with the new rows `idx` of the batch (sorted by time, sequence)
/// into `out`, keeping one event per (time, sequence); consecutive stored events form one piece.
fn merge(old: &Raw<'_>, new: &Batch<'_>, idx: &[u32], out: &mut Vec<Piece>) {
    out.clear();
    let n_old = old.len();
    let key_old = |i: usize| (old.time(i), old.seq(i));
    let key_new = |j: usize| (new.time(idx[j] as usize), new.seq(idx[j] as usize));
    // The stored events are distinct; only the new ones can repeat a (time, sequence) already taken.
    let mut last: Option<(i64, i64)> = None;
    let push_new = |out: &mut Vec<Piece>, j: usize, last: &mut Option<(i64, i64)>| {
        let k = key_new(j);
        if *last != Some(k) {
            out.push(Piece::New(idx[j]));
            *last = Some(k);
        }
    };
    if idx.is_empty() || n_old == 0 || key_old(n_old - 1) < key_new(0) {
        // A stream's new events all come after the stored ones: the stored run, then the new rows.
        if n_old > 0 {
            out.push(Piece::Stored(0, n_old as u32));
        }
        for j in 0..idx.len() {
            push_new(out, j, &mut last);
        }
        return;
    }
    let (mut a, mut b) = (0usize, 0usize);
    while a < n_old || b < idx.len() {
        if b == idx.len() || (a < n_old && key_old(a) <= key_new(b)) {
            let k = key_old(a);
            if last != Some(k) {
                match out.last_mut() {
                    Some(Piece::Stored(_, hi)) if *hi as usize == a => *hi += 1,
                    _ => out.push(Piece::Stored(a as u32, a as u32 + 1)),
                }
                last = Some(k);
            }
            a += 1;
        } else {
            push_new(out, b, &mut last);
            b += 1;
        }
    }
}

/// One aggregate of a served view: `func` of state column `col` over `window` microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Agg {
    pub func: Func,
    pub col: usize,
    pub window: i64,
}

/// One evaluated value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    F64(Option<f64>),
    I64(Option<i64>),
    Str(Option<String>),
}

/// The status of `ev` at instant `t` (see the module docs) for a state of `horizon`.
pub fn status(ev: &Events, t: i64, horizon: i64) -> i8 {
    if t < ev.dropped_max.saturating_add(horizon) {
        NOT_YET_VALID
    } else {
        PRESENT
    }
}

/// Each aggregate of `aggs` over `ev` at instant `t`, as `emit(k, cell)`.
pub fn evaluate(ev: &Events, t: i64, aggs: &[Agg], mut emit: impl FnMut(usize, Cell)) -> Result<()> {
    let rows: Vec<usize> = (0..ev.times.len()).collect();
    for (k, a) in aggs.iter().enumerate() {
        let col = ev
            .cols
            .get(a.col)
            .ok_or_else(|| Error::Internal("aggregate column out of range".into()))?;
        let values = Values::new(col.as_ref(), "window state")?;
        let mut acc = accumulator(a.func, values, "window state")?;
        let cell = match evaluate_at(&rows, &ev.times, t, a.window, &mut acc)? {
            Eval::F64(x) => Cell::F64(x),
            Eval::I64(x) => Cell::I64(x),
            Eval::Row(r) => match values {
                Values::F64(v) => Cell::F64(r.map(|r| v.value(r))),
                Values::I64(v) => Cell::I64(r.map(|r| v.value(r))),
                Values::Utf8(v) => Cell::Str(r.map(|r| v.value(r).to_string())),
                Values::LargeUtf8(v) => Cell::Str(r.map(|r| v.value(r).to_string())),
            },
        };
        emit(k, cell);
    }
    Ok(())
}

/// The empty window's value of `func` (count 0, otherwise null), typed like its evaluated values.
pub fn empty_cell(func: Func, out: &DataType) -> Cell {
    match (func, out) {
        (Func::Count | Func::CountDistinct, _) => Cell::I64(Some(0)),
        (_, DataType::Int64) => Cell::I64(None),
        (_, DataType::Utf8) => Cell::Str(None),
        _ => Cell::F64(None),
    }
}

/// The view's state meta as of `txn`, or None when nothing was pushed yet.
pub fn read_meta(store: &Store, txn: &RoTxn, view: &str) -> Result<Option<StateMeta>> {
    match store.meta_get(txn, &meta_key(view))? {
        Some(b) => Ok(Some(StateMeta::decode(b)?)),
        None => Ok(None),
    }
}

/// The 4-byte key prefix of the view's state as of `txn` (None before the first push).
pub fn prefix_in(store: &Store, txn: &RoTxn, view: &str) -> Result<Option<[u8; 4]>> {
    store.view_prefix_in(txn, &store_name(view))
}

/// Looks up one entity's state in either layout, by one seek ([`super::segment::find`]): `kbuf` is
/// scratch, `k` is the encoded key (empty: a null key).
pub fn lookup(
    db: &Db,
    txn: &RoTxn,
    kbuf: &mut Vec<u8>,
    prefix: &[u8; 4],
    k: &[u8],
    tags: &[ColTag],
) -> Result<Option<Events>> {
    match super::segment::find(db, txn, kbuf, prefix, k)? {
        Some(b) => Ok(Some(Events::decode(b, tags)?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema, TimeUnit};

    /// The push spec of the tests' batches: times in `t`, sequences in `seq`.
    fn spec<'a>(keys: &'a [String], cols: &'a [String], horizon: i64) -> PushSpec<'a> {
        PushSpec {
            keys,
            timestamp: "t",
            sequence: "seq",
            columns: cols,
            horizon,
            reset: false,
        }
    }

    fn batch(keys: &[i64], ts: &[i64], seqs: &[i64], x: &[Option<f64>], s: &[Option<&str>]) -> Table {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("seq", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(keys.to_vec())),
                Arc::new(TimestampMicrosecondArray::from(ts.to_vec()).with_timezone("UTC")),
                Arc::new(Int64Array::from(seqs.to_vec())),
                Arc::new(Float64Array::from(x.to_vec())),
                Arc::new(StringArray::from(s.to_vec())),
            ],
        )
        .unwrap();
        Table::new(schema, vec![b])
    }

    fn state(store: &Store, view: &str, k: i64) -> Option<Events> {
        let mut kb = Vec::new();
        key::push_i64(&mut kb, k);
        store
            .read(|txn| {
                let Some(p) = prefix_in(store, txn, view)? else {
                    return Ok(None);
                };
                let mut buf = Vec::new();
                lookup(&store.data(), txn, &mut buf, &p, &kb, &[ColTag::F64, ColTag::Str])
            })
            .unwrap()
    }

    #[test]
    fn push_keeps_an_exact_tail_dedupes_replays_and_places_late_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Some(1 << 20), None).unwrap();
        let keys = ["k".to_string()];
        let cols = ["x".to_string(), "s".to_string()];
        let spec = spec(&keys, &cols, 10);
        let b1 = batch(
            &[1, 1, 2],
            &[5, 12, 3],
            &[1, 2, 3],
            &[Some(1.0), None, Some(3.0)],
            &[Some("a"), Some("b"), None],
        );
        assert_eq!(
            push(&store, "v", &b1, &spec).unwrap(),
            PushStats {
                events: 3,
                entities: 2
            }
        );
        // A replay of the same events changes nothing; a late event lands in its place; a new one drops 5.
        push(&store, "v", &b1, &spec).unwrap();
        let b2 = batch(
            &[1, 1],
            &[8, 16],
            &[4, 5],
            &[Some(2.0), Some(4.0)],
            &[None, Some("c")],
        );
        push(&store, "v", &b2, &spec).unwrap();
        let ev = state(&store, "v", 1).unwrap();
        assert_eq!(ev.times, vec![8, 12, 16]);
        assert_eq!(ev.seqs, vec![4, 2, 5]);
        assert_eq!(ev.dropped_max, 5);
        // Valid from dropped_max + horizon = 15 on.
        assert_eq!(status(&ev, 14, 10), NOT_YET_VALID);
        assert_eq!(status(&ev, 15, 10), PRESENT);
        let aggs = [
            Agg {
                func: Func::Sum,
                col: 0,
                window: 10,
            },
            Agg {
                func: Func::Count,
                col: 0,
                window: 5,
            },
            Agg {
                func: Func::Last,
                col: 1,
                window: 10,
            },
        ];
        let mut got = Vec::new();
        evaluate(&ev, 16, &aggs, |_, c| got.push(c)).unwrap();
        assert_eq!(
            got,
            vec![
                Cell::F64(Some(6.0)),
                Cell::I64(Some(1)),
                Cell::Str(Some("c".into()))
            ]
        );
        // A late event older than the kept tail is dropped at once and only moves dropped_max.
        push(
            &store,
            "v",
            &batch(&[1], &[6], &[6], &[Some(9.0)], &[None]),
            &spec,
        )
        .unwrap();
        assert_eq!(state(&store, "v", 1).unwrap().dropped_max, 6);
        assert_eq!(state(&store, "v", 1).unwrap().times, vec![8, 12, 16]);
        // Another horizon is refused, nothing written; a reset rebuilds.
        let other = PushSpec { horizon: 20, ..spec };
        assert!(matches!(
            push(&store, "v", &b2, &other),
            Err(Error::SchemaMismatch(_))
        ));
        let reset = PushSpec {
            horizon: 20,
            reset: true,
            ..spec
        };
        push(&store, "v", &b2, &reset).unwrap();
        assert!(state(&store, "v", 2).is_none());
        assert_eq!(state(&store, "v", 1).unwrap().times, vec![8, 16]);
    }

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let x: ArrayRef = Arc::new(Float64Array::from(vec![Some(1.5), None]));
        let s: ArrayRef = Arc::new(StringArray::from(vec![None, Some("héllo")]));
        let src = Batch {
            times: &[1, 2],
            seqs: &[7, 8],
            cols: vec![BatchCol::F64(x.as_primitive()), BatchCol::Str(s.as_string())],
        };
        let mut out = Vec::new();
        encode(
            &Raw::empty(&[ColTag::F64, ColTag::Str]),
            &src,
            &[Piece::New(0), Piece::New(1)],
            2,
            -4,
            &[ColTag::F64, ColTag::Str],
            &mut out,
        );
        let ev = Events::decode(&out, &[ColTag::F64, ColTag::Str]).unwrap();
        // The stored side's path (a run of stored events, strings and nulls included) writes the same.
        let tags = [ColTag::F64, ColTag::Str];
        let raw = Raw::parse(&out, &tags).unwrap();
        let mut again = Vec::new();
        for pieces in [
            &[Piece::Stored(0, 2)][..],
            &[Piece::Stored(0, 1), Piece::Stored(1, 2)],
        ] {
            again.clear();
            encode(&raw, &src, pieces, 2, -4, &tags, &mut again);
            assert_eq!(again, out);
        }
        // Appended after other bytes (a segment's merged records), the record and its checksum are
        // the same.
        let mut after = b"other".to_vec();
        encode(&raw, &src, &[Piece::Stored(0, 2)], 2, -4, &tags, &mut after);
        assert_eq!((&after[..5], &after[5..]), (&b"other"[..], &out[..]));
        assert_eq!(ev.times, vec![1, 2]);
        assert_eq!(ev.dropped_max, -4);
        assert_eq!(
            ev.cols[0]
                .as_primitive::<arrow::datatypes::Float64Type>()
                .iter()
                .collect::<Vec<_>>(),
            vec![Some(1.5), None]
        );
        assert_eq!(
            ev.cols[1].as_string::<i32>().iter().collect::<Vec<_>>(),
            vec![None, Some("héllo")]
        );
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x10;
            assert!(matches!(
                Events::decode(&bad, &[ColTag::F64, ColTag::Str]),
                Err(Error::Storage(_))
            ));
        }
        let meta = StateMeta {
            layout: 1,
            keys: vec![("k".into(), Kind::I64), ("s".into(), Kind::Str)],
            horizon: 99,
            columns: vec![("x".into(), ColTag::F64)],
        };
        assert_eq!(StateMeta::decode(&meta.encode()).unwrap(), meta);
        let segmented = StateMeta {
            layout: 2,
            ..meta.clone()
        };
        assert_eq!(StateMeta::decode(&segmented.encode()).unwrap(), segmented);
        assert!(segmented.same_definition(&meta));
        let mut unknown = StateMeta {
            layout: 3,
            ..meta.clone()
        }
        .encode();
        assert!(matches!(StateMeta::decode(&unknown), Err(Error::Storage(_))));
        unknown[0] = 1; // the checksum no longer matches either
        assert!(matches!(StateMeta::decode(&unknown), Err(Error::Storage(_))));
        assert_eq!(crc32(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn validity_fast_path_writes_the_bits_the_per_event_path_writes() {
        let tags = [ColTag::F64];
        for n in 1..=17usize {
            let times: Vec<i64> = (0..n as i64).collect();
            let full: ArrayRef = Arc::new(Float64Array::from(vec![Some(1.0); n]));
            let mut holed = vec![Some(2.0); n];
            holed[n - 1] = None;
            let holed: ArrayRef = Arc::new(Float64Array::from(holed));
            let rows: Vec<Piece> = (0..n as u32).map(Piece::New).collect();
            let mut rec = Vec::new();
            for (col, all) in [(&full, true), (&holed, false)] {
                let src = Batch {
                    times: &times,
                    seqs: &times,
                    cols: vec![BatchCol::F64(col.as_primitive())],
                };
                rec.clear();
                encode(&Raw::empty(&tags), &src, &rows, n, i64::MIN, &tags, &mut rec);
                let raw = Raw::parse(&rec, &tags).unwrap();
                assert_eq!(raw.all_valid(0), all, "n = {n}");
                assert!((0..n).all(|i| raw.valid(0, i) == (all || i + 1 < n)));
                // Re-encoding the stored record (the other side's path) gives the same bytes.
                let again = [Piece::Stored(0, n as u32)];
                let mut out = Vec::new();
                encode(&raw, &src, &again, n, i64::MIN, &tags, &mut out);
                assert_eq!(out, rec);
            }
        }
    }

    #[test]
    fn keys_sharing_their_first_eight_bytes_stay_apart() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("seq", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
        ]));
        let ks = [
            "abcdefghij",
            "ab",
            "abcdefghik",
            "ab\0",
            "ab",
            "abcdefghij",
            "abcdefgh",
        ];
        let n = ks.len() as i64;
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(ks.to_vec())),
                Arc::new(TimestampMicrosecondArray::from(vec![5; ks.len()]).with_timezone("UTC")),
                Arc::new(Int64Array::from((0..n).collect::<Vec<_>>())),
                Arc::new(Float64Array::from(vec![1.0; ks.len()])),
            ],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Some(1 << 20), None).unwrap();
        let (keys, cols) = (["k".to_string()], ["x".to_string()]);
        let spec = spec(&keys, &cols, 10);
        let stats = push(&store, "v", &Table::new(schema, vec![b]), &spec).unwrap();
        assert_eq!(stats.entities, 5);
        for (k, count) in [
            ("abcdefghij", 2),
            ("ab", 2),
            ("abcdefghik", 1),
            ("ab\0", 1),
            ("abcdefgh", 1),
        ] {
            let mut kb = Vec::new();
            key::push_bytes(&mut kb, k.as_bytes(), true);
            let ev = store
                .read(|txn| {
                    let p = prefix_in(&store, txn, "v")?.unwrap();
                    let mut buf = Vec::new();
                    lookup(&store.data(), txn, &mut buf, &p, &kb, &[ColTag::F64])
                })
                .unwrap()
                .unwrap();
            assert_eq!(ev.times.len(), count, "key {k:?}");
        }
    }

    /// Draws below `m` from the crate's test generator, so the cases replay.
    fn rng(seed: u64) -> impl FnMut(u64) -> u64 {
        let mut g = crate::testing::Rng::new(seed);
        move |m| g.next() % m
    }

    /// A batch of events `(time, sequence)` with values derived from them: `x` is the sequence plus
    /// `shift` (null when the sequence is a multiple of 5), `s` its text (null at multiples of 3).
    fn derived(evs: &[(i64, i64)], shift: f64) -> (Vec<i64>, Vec<i64>, ArrayRef, ArrayRef) {
        let x: Vec<Option<f64>> = evs
            .iter()
            .map(|&(_, q)| (q % 5 != 0).then_some(q as f64 + shift))
            .collect();
        let s: Vec<Option<String>> = evs
            .iter()
            .map(|&(_, q)| (q % 3 != 0).then(|| format!("{}", q as f64 + shift)))
            .collect();
        (
            evs.iter().map(|e| e.0).collect(),
            evs.iter().map(|e| e.1).collect(),
            Arc::new(Float64Array::from(x)),
            Arc::new(StringArray::from(s)),
        )
    }

    #[test]
    fn an_entity_merges_trims_and_dedupes_as_a_sorted_oracle_does() {
        let tags = [ColTag::F64, ColTag::Str];
        let mut r = rng(11);
        for case in 0..2000 {
            let mut old: Vec<(i64, i64)> = (0..r(9)).map(|_| (r(30) as i64, r(60) as i64)).collect();
            old.sort();
            old.dedup();
            // Later events (a stream), interleaved ones (late events), replays of stored ones and
            // repeats within the batch.
            let mut new: Vec<(i64, i64)> = (0..r(9))
                .map(|_| match r(4) {
                    0 if !old.is_empty() => old[r(old.len() as u64) as usize],
                    1 => (30 + r(30) as i64, 100 + r(60) as i64),
                    _ => (r(45) as i64, 100 + r(60) as i64),
                })
                .collect();
            if case % 2 == 0 {
                new.retain(|e| old.last().is_none_or(|o| e > o));
            }
            if !new.is_empty() && r(3) == 0 {
                new.push(new[0]);
            }
            let horizon = 1 + r(25) as i64;
            let stored_max = [i64::MIN, -3][case % 2];
            let (ot, os, ox, oss) = derived(&old, 0.0);
            let stored = Batch {
                times: &ot,
                seqs: &os,
                cols: vec![BatchCol::F64(ox.as_primitive()), BatchCol::Str(oss.as_string())],
            };
            let mut rec = Vec::new();
            let all: Vec<Piece> = (0..old.len() as u32).map(Piece::New).collect();
            let empty = Raw::empty(&tags);
            encode(&empty, &stored, &all, old.len(), stored_max, &tags, &mut rec);
            let (nt, ns, nx, nss) = derived(&new, 0.5);
            let batch = Batch {
                times: &nt,
                seqs: &ns,
                cols: vec![BatchCol::F64(nx.as_primitive()), BatchCol::Str(nss.as_string())],
            };
            // The batch's rows in (time, sequence) order, as the push hands them over.
            let mut rows: Vec<u32> = (0..new.len() as u32).collect();
            rows.sort_by_key(|&i| new[i as usize]);
            let mut merger = Merger::new(&batch, horizon, &tags);
            let raw = Raw::parse(&rec, &tags).unwrap();
            let got = Events::decode(merger.record(&raw, &rows), &tags).unwrap();

            // The oracle: every event once (a stored one wins over its replay), sorted, trimmed.
            let mut every: Vec<((i64, i64), f64)> = old.iter().map(|&e| (e, 0.0)).collect();
            every.extend(new.iter().map(|&e| (e, 0.5)));
            every.sort_by_key(|e| e.0);
            every.dedup_by_key(|e| e.0);
            let cut = every.last().map_or(i64::MIN, |e| e.0 .0).saturating_sub(horizon);
            let dropped = every.iter().filter(|e| e.0 .0 <= cut).map(|e| e.0 .0).max();
            every.retain(|e| e.0 .0 > cut);
            let want_max = dropped.map_or(stored_max, |d| d.max(stored_max));
            assert_eq!(got.dropped_max, want_max, "case {case}");
            assert_eq!(
                got.times,
                every.iter().map(|e| e.0 .0).collect::<Vec<_>>(),
                "case {case}"
            );
            assert_eq!(
                got.seqs,
                every.iter().map(|e| e.0 .1).collect::<Vec<_>>(),
                "case {case}"
            );
            let wx: Vec<Option<f64>> = every
                .iter()
                .map(|&((_, q), sh)| (q % 5 != 0).then_some(q as f64 + sh))
                .collect();
            let ws: Vec<Option<String>> = every
                .iter()
                .map(|&((_, q), sh)| (q % 3 != 0).then(|| format!("{}", q as f64 + sh)))
                .collect();
            let gx = got.cols[0].as_primitive::<arrow::datatypes::Float64Type>();
            assert_eq!(gx.iter().collect::<Vec<_>>(), wx, "case {case}");
            let gs = got.cols[1].as_string::<i32>();
            let gs: Vec<Option<String>> = gs.iter().map(|v| v.map(str::to_string)).collect();
            assert_eq!(gs, ws, "case {case}");
        }
    }

    #[test]
    fn rows_sort_by_key_bytes_then_time_then_sequence() {
        let mut r = rng(7);
        for case in 0..200 {
            // Small batches (a comparison sort) and large ones (the radix sort).
            let n = if case % 4 >= 2 {
                256 + r(1000) as usize
            } else {
                1 + r(60) as usize
            };
            // Short keys (some sharing their first bytes, some empty-padded look-alikes) or long ones.
            let long = case % 3 == 0;
            let mut arena = Vec::new();
            let mut spans = Vec::new();
            for _ in 0..n {
                let start = arena.len() as u32;
                let len = if long { 1 + r(12) } else { 1 + r(8) };
                for _ in 0..len {
                    arena.push([0u8, 1, 255][r(3) as usize]);
                }
                spans.push((start, arena.len() as u32));
            }
            let times: Vec<i64> = (0..n).map(|_| r(5) as i64 - 2).collect();
            let mut seqs: Vec<i64> = (0..n as i64).collect();
            if case % 2 == 0 {
                // A stream in (time, sequence) order: the sort's fast path.
                let mut rows: Vec<(i64, i64)> = times.iter().cloned().zip(seqs.iter().cloned()).collect();
                rows.sort();
                seqs = rows.iter().map(|x| x.1).collect();
                let t: Vec<i64> = rows.iter().map(|x| x.0).collect();
                check_sorted(&arena, &spans, &t, &seqs);
            } else {
                check_sorted(&arena, &spans, &times, &seqs);
            }
        }

        fn check_sorted(arena: &[u8], spans: &[(u32, u32)], times: &[i64], seqs: &[i64]) {
            let n = times.len();
            let kb = |r: u32| &arena[spans[r as usize].0 as usize..spans[r as usize].1 as usize];
            let (got, groups) = sort_rows(n, times, seqs, spans, &kb);
            let mut want: Vec<u32> = (0..n as u32).collect();
            want.sort_by(|&a, &b| {
                kb(a)
                    .cmp(kb(b))
                    .then(times[a as usize].cmp(&times[b as usize]))
                    .then(seqs[a as usize].cmp(&seqs[b as usize]))
            });
            assert_eq!(got, want);
            // The runs of equal keys tile the order, each a maximal run.
            assert_eq!(groups.first().map(|g| g.0), Some(0));
            assert_eq!(groups.last().map(|g| g.1), Some(n));
            for (i, &(lo, hi)) in groups.iter().enumerate() {
                assert!(lo < hi && (i == 0 || groups[i - 1].1 == lo));
                assert!((lo..hi).all(|p| kb(got[p]) == kb(got[lo])));
                assert!(hi == n || kb(got[hi]) != kb(got[lo]));
            }
        }
    }

    #[test]
    fn the_radix_sort_orders_words_as_a_comparison_sort_does() {
        let mut r = rng(11);
        for case in 0..60 {
            // Few distinct bytes (dense ids), many (random heads), equal heads of other lengths, and
            // sizes on both sides of the comparison-sort cutoff.
            let n = [10, 255, 256, 1000, 5000][case % 5];
            let words: Vec<u128> = (0..n)
                .map(|rank| {
                    let head = match case % 3 {
                        0 => r(3000),
                        1 => r(u64::MAX),
                        _ => r(4) << 56 | r(2),
                    };
                    (head as u128) << 64 | (1 + r(8) as u128) << 32 | rank as u128
                })
                .collect();
            let mut want = words.clone();
            want.sort_unstable();
            let mut got = words;
            radix_sort_words(&mut got);
            assert_eq!(got, want, "case {case}");
        }
    }

    #[test]
    fn the_cursor_walk_updates_stored_entities_and_inserts_new_ones_in_any_pattern() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Some(1 << 22), None).unwrap();
        let keys = ["k".to_string()];
        let cols = ["x".to_string(), "s".to_string()];
        let spec = spec(&keys, &cols, 1_000);
        // Another view's records around this one's, which the walk must neither read nor change.
        let other = batch(&[-1, 5000], &[1, 1], &[1, 2], &[Some(9.0); 2], &[None; 2]);
        push(&store, "a", &other, &spec).unwrap();
        push(&store, "c", &other, &spec).unwrap();
        let mut r = rng(3);
        let mut want: std::collections::BTreeMap<i64, Vec<(i64, i64)>> = Default::default();
        let mut seq = 0i64;
        for round in 0..12 {
            // Dense runs, long gaps (past the cursor's steps) and entities never seen before.
            let n = 1 + r(300) as usize;
            let spread = [40, 400, 4000][round % 3];
            let ks: Vec<i64> = (0..n).map(|_| r(spread) as i64).collect();
            let ts: Vec<i64> = (0..n).map(|_| round as i64 * 10 + r(10) as i64).collect();
            let sq: Vec<i64> = (0..n)
                .map(|_| {
                    seq += 1;
                    seq
                })
                .collect();
            let x: Vec<Option<f64>> = sq.iter().map(|&v| Some(v as f64)).collect();
            let s: Vec<Option<&str>> = vec![None; n];
            let stats = push(&store, "b", &batch(&ks, &ts, &sq, &x, &s), &spec).unwrap();
            let distinct: std::collections::BTreeSet<i64> = ks.iter().cloned().collect();
            assert_eq!(stats.entities, distinct.len());
            for i in 0..n {
                want.entry(ks[i]).or_default().push((ts[i], sq[i]));
            }
        }
        for (k, mut evs) in want {
            evs.sort();
            let got = state(&store, "b", k).unwrap();
            let pairs: Vec<(i64, i64)> = got.times.iter().cloned().zip(got.seqs.iter().cloned()).collect();
            assert_eq!(pairs, evs, "entity {k}");
            let x = got.cols[0].as_primitive::<arrow::datatypes::Float64Type>();
            assert!((0..x.len()).all(|i| x.value(i) == got.seqs[i] as f64));
        }
        for v in ["a", "c"] {
            assert_eq!(state(&store, v, -1).unwrap().seqs, vec![1]);
            assert_eq!(state(&store, v, 5000).unwrap().seqs, vec![2]);
        }
    }

    #[test]
    fn a_segmented_state_holds_the_records_a_per_entity_state_holds() {
        // The same random pushes (late events, replays, keys new and stored, nulls) into a version 1
        // state and a version 2 one: every entity's record is the same bytes, read through `find`.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Some(16 << 20), None).unwrap();
        let keys = ["k".to_string()];
        let cols = ["x".to_string(), "s".to_string()];
        let spec = spec(&keys, &cols, 50);
        let mut r = rng(3);
        let mut seq = 0i64;
        let mut sent: Vec<Table> = Vec::new();
        for round in 0..40 {
            let n = 1 + r(300) as usize;
            let ks: Vec<i64> = (0..n).map(|_| r(500) as i64 - 100).collect();
            let ts: Vec<i64> = (0..n).map(|_| round * 10 + r(40) as i64).collect();
            let seqs: Vec<i64> = (0..n)
                .map(|_| {
                    seq += 1;
                    seq
                })
                .collect();
            let x: Vec<Option<f64>> = (0..n).map(|i| (r(5) != 0).then_some(i as f64)).collect();
            let s: Vec<Option<String>> = (0..n).map(|i| (r(4) != 0).then(|| "é".repeat(i % 5))).collect();
            let s: Vec<Option<&str>> = s.iter().map(|x| x.as_deref()).collect();
            let b = batch(&ks, &ts, &seqs, &x, &s);
            // Now and then a replay of an earlier batch (materialize's case).
            let b = if round % 7 == 6 {
                sent[r(sent.len() as u64) as usize].clone()
            } else {
                b
            };
            push_laid_out(&store, "one", &b, &spec, 1, &mut || Ok(())).unwrap();
            push_laid_out(&store, "seg", &b, &spec, 2, &mut || Ok(())).unwrap();
            sent.push(b);
        }
        store
            .read(|txn| {
                let db = store.data();
                let p1 = prefix_in(&store, txn, "one")?.unwrap();
                let p2 = prefix_in(&store, txn, "seg")?.unwrap();
                assert_eq!(read_meta(&store, txn, "seg")?.unwrap().layout, 2);
                assert_eq!(read_meta(&store, txn, "one")?.unwrap().layout, 1);
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let mut found = 0;
                for id in -110..410i64 {
                    let mut k = Vec::new();
                    key::push_i64(&mut k, id);
                    let one = super::super::segment::find(&db, txn, &mut a, &p1, &k)?;
                    let seg = super::super::segment::find(&db, txn, &mut b, &p2, &k)?;
                    assert_eq!(one, seg, "entity {id}");
                    found += one.is_some() as usize;
                }
                assert!(found > 300);
                Ok(())
            })
            .unwrap();
        // The segmented state is segments: fewer records than entities.
        let count = |view: &str| {
            store
                .read(|txn| {
                    let p = prefix_in(&store, txn, view)?.unwrap();
                    let next = (u32::from_be_bytes(p) + 1).to_be_bytes();
                    let it = store
                        .data()
                        .range(txn, &(Bound::Included(&p[..]), Bound::Excluded(&next[..])))
                        .map_err(crate::online::env::storage)?;
                    Ok(it.count())
                })
                .unwrap()
        };
        assert!(
            count("seg") * 5 < count("one"),
            "{} segments, {} records",
            count("seg"),
            count("one")
        );
    }
}
