//! Window state format version 2: entities packed into page-sized segments (the one place it is
//! defined; version 1, one LMDB record per entity, is defined in [`super::state`]). A new or fully
//! rebuilt window state is laid out this way (`super::state::DEFAULT_LAYOUT`); `push` keeps a stored
//! state's layout, and serving reads either through [`find`].
//!
//! Why: a push of 10k events touches about 63 % of a 10k-entity view, and LMDB keeps version 1's
//! ~240-byte records in leaf pages about 60 % full, so a commit rewrites every leaf page of the view
//! (about 4.4 MB, BENCHMARKS.md, "the arithmetic of a segment format"). A segment holds the entity
//! records of a run of consecutive keys in one value of at most one overflow page, repacked to about
//! 95 % by the push that rewrites it: about 37 % fewer bytes per commit on that workload, and never
//! more bytes than version 1 on sparser ones (one page per touched entity either way).
//!
//! # Keys
//! A segment's LMDB key is the view's 4-byte store prefix (as in version 1: the online store name
//! `<view>__window`) followed by the encoded key (key format v1, `crate::online::key`) of the segment's
//! FIRST entity, the smallest key it holds. Segments of a view hold disjoint, ascending key runs, so the
//! segment that holds (or would hold) entity `k` is the one with the greatest LMDB key `<= prefix ++ k`:
//! one cursor seek (`get_lower_than_or_equal_to`), no second index. A seek that lands outside the
//! view's prefix, or nowhere, means `k` is below every segment: no state (`NOT_FOUND`). A segment is
//! never empty.
//!
//! # Value
//! `[version u8 = 2][n u16 LE]`, then `n` key ends (u16 LE, cumulative byte offsets into the keys),
//! `n` record ends (u32 LE, cumulative byte offsets into the records), the `n` entity keys
//! concatenated (strictly ascending as bytes, the first equal to the segment key's suffix), then
//! `[CRC-32C u32 LE]` of everything before it (the head), then the `n` entity records concatenated.
//! Each entity record is exactly a version 1 state record (`super::state`: its own version byte 1 and
//! its own CRC-32C), so:
//! - reading one entity checks the head's checksum (about 100 bytes for 15 entities) and the entity's
//!   own, not the whole page: the online read costs what version 1's does plus a binary search over
//!   the keys (serving's p50 is about 6 us against a 10 us target);
//! - a push copies an untouched entity's record as bytes, without parsing it (a damaged one still
//!   fails its own checksum when read), and hands a touched one to the version 1 merger unchanged.
//!
//! # Size, split and merge
//! A segment's encoded size is `3 + 6 n + keys + 4 + records`. [`CAPACITY`] is what one LMDB overflow
//! page carries (a 4,096-byte page less its 16-byte header): LMDB stores a value over half a page in
//! overflow pages of its own, so a segment of up to [`CAPACITY`] bytes costs exactly one page to
//! rewrite. A push rewrites whole segments, as runs of consecutive ones ([`rewrite`]):
//! - split: the run's entities (untouched ones copied, touched ones merged, new ones inserted in key
//!   order) are packed greedily in key order; a segment is closed when the next entity would take it
//!   over [`CAPACITY`]. An entity larger than [`CAPACITY`] on its own (thousands of kept events) gets a
//!   segment of its own, spanning several overflow pages.
//! - merge: a run starts one segment early when the segment before its first is under [`MIN_FILL`],
//!   and goes on to the next stored segment when that one has updates too, or when the run's last
//!   packed segment is under [`MIN_FILL`] (then the next segment, untouched, is taken into the run and
//!   repacked with it). Invariant (tested): a segment under [`MIN_FILL`] is the view's last, or its
//!   next neighbour could not join it within [`CAPACITY`] (in practice: that neighbour holds one huge
//!   entity). Without the look back, a huge entity that shrinks leaves two small neighbours apart.
//! - an entity key below the first segment's goes to the first segment (whose key then changes: the
//!   old key is deleted and the new one written, in the same transaction).
//!
//! # Reading the two versions
//! A view's state is either version 1 or version 2, never both; the meta record (`window/<view>`,
//! `super::state::StateMeta`) carries the layout as its version byte (1 or 2), as the online schema
//! records a value layout version per view. The records tell the versions apart too (first byte 1:
//! an entity record, 2: a segment), so a reader needs no meta lookup: the seek lands on the entity's
//! own record (version 1: it must match the key exactly) or on its segment (version 2). A state
//! written before version 2 stays readable and pushable as version 1 (a push keeps the stored
//! layout); a new or fully rebuilt state takes `super::state::DEFAULT_LAYOUT` (2).
//!
//! # Crash safety and materialize
//! Unchanged: history first, then one LMDB write transaction per push (every segment of the push and
//! the meta record commit together or not at all). `materialize`'s full rebuild drops the view's
//! prefix range and packs every entity, in key order, into fresh segments in the same transaction.
//!
//! # Writing with few copies
//! [`rewrite`] copies each stored segment of a run once out of the map (its pages may be reused by the
//! run's own writes), merges each touched entity's record straight into one buffer, and writes each new
//! segment into its place in the page with a reserved put: an untouched record is copied twice in all
//! (map to buffer, buffer to page). The run's buffers are kept per thread from push to push.
//!
//! A record that is not whole (a stored value in the view's range that is not a segment, a segment
//! whose head fails its checksum or lengths) fails the push that must rewrite it, with the same
//! `Storage` error a read gives, and nothing is written; `materialize` rebuilds.

use std::io::Write;
use std::ops::Range;

use heed::{RoTxn, RwTxn};

use crate::error::{Error, Result};
use crate::online::env::{storage, Db, TxnError};

use super::state::{crc32, STATE_FORMAT_VERSION};

/// The state format version of a segment (and of a view whose state is segmented).
pub const SEGMENT_FORMAT_VERSION: u8 = 2;

/// The largest segment that costs one LMDB overflow page: a 4,096-byte page less its 16-byte header.
pub const CAPACITY: usize = 4080;

/// Under this size a run's last segment takes the next segment into the run (see the module docs).
pub const MIN_FILL: usize = CAPACITY / 2;

/// Bytes a segment needs besides its keys and records: version, count and head checksum.
const FIXED: usize = 1 + 2 + 4;
/// Bytes of directory per entity: a key end and a record end.
const PER_ENTITY: usize = 2 + 4;

fn damaged() -> Error {
    Error::Storage(
        "a window state segment in the online store is damaged (checksum or length); run \
         store.materialize(None, end) to rebuild the view's window state from its history"
            .into(),
    )
}

/// The encoded size of a segment holding entities whose keys and records add up to `payload` bytes.
pub fn encoded_len(n: usize, payload: usize) -> usize {
    FIXED + PER_ENTITY * n + payload
}

/// Writes a segment's head (version, count, directory, keys and the head's checksum) for `entities`
/// (key without the view prefix, record length), given in strictly ascending key order, into `out`
/// (cleared first), in one pass. The segment is the head followed by the records, in the same order.
fn encode_head<'e>(entities: impl ExactSizeIterator<Item = (&'e [u8], usize)>, out: &mut Vec<u8>) {
    let n = entities.len();
    let dir = 3 + PER_ENTITY * n;
    out.clear();
    out.resize(dir, 0);
    out[0] = SEGMENT_FORMAT_VERSION;
    out[1..3].copy_from_slice(&(n as u16).to_le_bytes());
    let (mut key_end, mut rec_end) = (0usize, 0usize);
    for (i, (k, r)) in entities.enumerate() {
        key_end += k.len();
        rec_end += r;
        out[3 + 2 * i..5 + 2 * i].copy_from_slice(&(key_end as u16).to_le_bytes());
        out[3 + 2 * n + 4 * i..7 + 2 * n + 4 * i].copy_from_slice(&(rec_end as u32).to_le_bytes());
        out.extend_from_slice(k);
    }
    let crc = crc32(out);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Encodes a segment of `entities` (key without the view prefix, entity record), given in strictly
/// ascending key order, into `out` (cleared first).
pub fn encode<'e>(entities: impl ExactSizeIterator<Item = (&'e [u8], &'e [u8])> + Clone, out: &mut Vec<u8>) {
    encode_head(entities.clone().map(|(k, r)| (k, r.len())), out);
    for (_, r) in entities {
        out.extend_from_slice(r);
    }
}

/// A segment read in place: head checksum and lengths checked, nothing copied.
#[derive(Debug)]
pub struct Segment<'a> {
    b: &'a [u8],
    n: usize,
    keys_at: usize,
    recs_at: usize,
}

impl<'a> Segment<'a> {
    pub fn parse(b: &'a [u8]) -> Result<Segment<'a>> {
        if b.len() < FIXED || b[0] != SEGMENT_FORMAT_VERSION {
            return Err(damaged());
        }
        let n = u16::from_le_bytes([b[1], b[2]]) as usize;
        let keys_at = 3 + PER_ENTITY * n;
        if n == 0 || b.len() < keys_at + 4 {
            return Err(damaged());
        }
        // The ends must never decrease (every slice below relies on it) and fit the value.
        let ascending = |ends: &mut dyn Iterator<Item = usize>| {
            let mut prev = 0;
            for e in ends {
                if e < prev {
                    return None;
                }
                prev = e;
            }
            Some(prev)
        };
        let key_ends = &mut b[3..3 + 2 * n]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as usize);
        let Some(keys_len) = ascending(key_ends) else {
            return Err(damaged());
        };
        let head = keys_at + keys_len;
        if b.len() < head + 4 {
            return Err(damaged());
        }
        let want = u32::from_le_bytes([b[head], b[head + 1], b[head + 2], b[head + 3]]);
        if crc32(&b[..head]) != want {
            return Err(damaged());
        }
        let recs_at = head + 4;
        let rec_ends = &mut b[3 + 2 * n..keys_at]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize);
        if ascending(rec_ends) != Some(b.len() - recs_at) {
            return Err(damaged());
        }
        Ok(Segment {
            b,
            n,
            keys_at,
            recs_at,
        })
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn key_end(&self, i: usize) -> usize {
        let at = 3 + 2 * i;
        u16::from_le_bytes([self.b[at], self.b[at + 1]]) as usize
    }

    fn rec_end(&self, i: usize) -> usize {
        let at = 3 + 2 * self.n + 4 * i;
        u32::from_le_bytes([self.b[at], self.b[at + 1], self.b[at + 2], self.b[at + 3]]) as usize
    }

    /// Entity `i`'s key (without the view prefix).
    pub fn key(&self, i: usize) -> &'a [u8] {
        let lo = if i == 0 { 0 } else { self.key_end(i - 1) };
        &self.b[self.keys_at + lo..self.keys_at + self.key_end(i)]
    }

    /// Entity `i`'s record (a version 1 state record, checked when it is parsed).
    pub fn record(&self, i: usize) -> &'a [u8] {
        let lo = if i == 0 { 0 } else { self.rec_end(i - 1) };
        &self.b[self.recs_at + lo..self.recs_at + self.rec_end(i)]
    }

    /// The record of entity `k`, by binary search over the keys.
    pub fn find(&self, k: &[u8]) -> Option<&'a [u8]> {
        let (mut lo, mut hi) = (0, self.n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(mid).cmp(k) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(self.record(mid)),
            }
        }
        None
    }

    /// The entities, in key order, as (key, record) byte ranges of the value: one pass over the
    /// directory, each end read once.
    pub fn spans(&self) -> impl ExactSizeIterator<Item = (Range<usize>, Range<usize>)> + Clone + '_ {
        let (keys_at, recs_at) = (self.keys_at, self.recs_at);
        let (mut k0, mut r0) = (keys_at, recs_at);
        let key_ends = self.b[3..3 + 2 * self.n].chunks_exact(2);
        let rec_ends = self.b[3 + 2 * self.n..3 + PER_ENTITY * self.n].chunks_exact(4);
        key_ends.zip(rec_ends).map(move |(k, r)| {
            let k1 = keys_at + u16::from_le_bytes([k[0], k[1]]) as usize;
            let r1 = recs_at + u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize;
            let out = (k0..k1, r0..r1);
            (k0, r0) = (k1, r1);
            out
        })
    }

    /// The entities, in key order: (key, record).
    pub fn entities(&self) -> impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + Clone + '_ {
        let b = self.b;
        self.spans().map(move |(k, r)| (&b[k], &b[r]))
    }
}

/// The greedy packing of entities, given in ascending key order, into segments of at most
/// [`CAPACITY`] bytes (an entity too large for an empty segment gets one of its own): a segment is
/// closed when the next entity would take it over. Sizes only; the entities are the caller's.
#[derive(Debug, Default)]
pub struct Plan {
    /// Each closed segment's end, as a count of entities added.
    ends: Vec<usize>,
    added: usize,
    open_n: usize,
    open_payload: usize,
}

impl Plan {
    pub fn clear(&mut self) {
        *self = Plan {
            ends: std::mem::take(&mut self.ends),
            ..Plan::default()
        };
        self.ends.clear();
    }

    /// The encoded size of the segment being filled (0 when none is).
    pub fn pending_len(&self) -> usize {
        if self.open_n == 0 {
            0
        } else {
            encoded_len(self.open_n, self.open_payload)
        }
    }

    /// Adds the next entity, whose key and record take `bytes` together.
    #[inline]
    pub fn add(&mut self, bytes: usize) {
        if self.open_n > 0 && encoded_len(self.open_n + 1, self.open_payload + bytes) > CAPACITY {
            self.ends.push(self.added);
            self.open_n = 0;
            self.open_payload = 0;
        }
        self.open_n += 1;
        self.open_payload += bytes;
        self.added += 1;
    }

    /// Every segment's end (a count of entities), the one being filled closed.
    pub fn finish(&mut self) -> &[usize] {
        if self.open_n > 0 {
            self.ends.push(self.added);
            self.open_n = 0;
            self.open_payload = 0;
        }
        &self.ends
    }
}

/// A result inside a write transaction: LMDB's errors stay whole, so a full map grows and retries.
pub type TxnResult<T> = std::result::Result<T, TxnError>;

/// A stored segment, borrowed: its key (without the view prefix) and value.
pub type Hit<'a> = Option<(&'a [u8], &'a [u8])>;

/// An ordered map of one view's segments (key: the segment's first entity key, without the view
/// prefix): what [`rewrite`] needs from the store. A returned segment is borrowed only until the next
/// call: in LMDB a write in the same transaction may move or reuse the bytes it points into.
pub trait SegmentMap {
    /// The segment with the greatest key `<= k`.
    fn floor(&mut self, k: &[u8]) -> TxnResult<Hit<'_>>;
    /// The segment with the smallest key `> k`.
    fn after(&mut self, k: &[u8]) -> TxnResult<Hit<'_>>;
    /// The segment with the greatest key `< k`.
    fn before(&mut self, k: &[u8]) -> TxnResult<Hit<'_>>;
    /// The first segment.
    fn first(&mut self) -> TxnResult<Hit<'_>>;
    /// Writes (or replaces) segment `k`, `len` bytes that `fill` writes, in order.
    fn put_with(
        &mut self,
        k: &[u8],
        len: usize,
        fill: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
    ) -> TxnResult<()>;
    fn delete(&mut self, k: &[u8]) -> TxnResult<()>;
}

/// Where an entity of a run being rewritten comes from: bytes of the run's copied segments (`Run`),
/// of the merged records (`Merged`), or the key `keys[j]` of the update (`Key`).
#[derive(Clone, Copy, Debug)]
enum Src {
    Run(u32, u32),
    Merged(u32, u32),
    Key(u32),
}

impl Src {
    fn len(self, keys: &[&[u8]]) -> usize {
        match self {
            Src::Run(lo, hi) | Src::Merged(lo, hi) => (hi - lo) as usize,
            Src::Key(j) => keys[j as usize].len(),
        }
    }
}

/// A stored segment copied into the run: its key's and its value's ranges in the run's bytes.
#[derive(Clone, Copy, Debug)]
struct Copied {
    key: (u32, u32),
    val: (u32, u32),
}

fn range((lo, hi): (u32, u32)) -> Range<usize> {
    lo as usize..hi as usize
}

/// The buffers of [`rewrite`], reused from run to run.
#[derive(Default)]
struct Run {
    /// The run's stored segments, each copied once out of the map (key, then value).
    bytes: Vec<u8>,
    /// The records `update` wrote, back to back.
    merged: Vec<u8>,
    /// The run's entities in key order: key, record.
    ents: Vec<(Src, Src)>,
    /// The stored segments the run replaces (their keys, in `bytes`).
    old: Vec<(u32, u32)>,
    plan: Plan,
    head: Vec<u8>,
    /// A copied segment's entities (key and record ranges in `bytes`), while it is merged.
    spans: Vec<(Range<usize>, Range<usize>)>,
}

impl Run {
    fn copy(&mut self, hit: Hit<'_>) -> Option<Copied> {
        let (k, v) = hit?;
        let at = self.bytes.len() as u32;
        self.bytes.extend_from_slice(k);
        self.bytes.extend_from_slice(v);
        let mid = at + k.len() as u32;
        Some(Copied {
            key: (at, mid),
            val: (mid, self.bytes.len() as u32),
        })
    }

    fn slice<'s>(&'s self, keys: &[&'s [u8]], s: Src) -> &'s [u8] {
        match s {
            Src::Run(lo, hi) => &self.bytes[lo as usize..hi as usize],
            Src::Merged(lo, hi) => &self.merged[lo as usize..hi as usize],
            Src::Key(j) => keys[j as usize],
        }
    }

    #[inline]
    fn add(&mut self, keys: &[&[u8]], key: Src, rec: Src) {
        self.plan.add(key.len(keys) + rec.len(keys));
        self.ents.push((key, rec));
    }

    /// Entity `j` of the update: `update` appends its new record to the merged records.
    fn merge(
        &mut self,
        j: usize,
        key: Src,
        old: Option<Range<usize>>,
        keys: &[&[u8]],
        update: &mut impl FnMut(usize, Option<&[u8]>, &mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let at = self.merged.len() as u32;
        update(j, old.map(|r| &self.bytes[r]), &mut self.merged)?;
        let rec = Src::Merged(at, self.merged.len() as u32);
        self.add(keys, key, rec);
        Ok(())
    }

    /// Writes the run's packed segments and deletes the stored ones they replace (a key written
    /// anew is replaced in place, not deleted first). Returns the segments written.
    fn write(&mut self, map: &mut dyn SegmentMap, keys: &[&[u8]]) -> TxnResult<usize> {
        self.plan.finish();
        let ends = std::mem::take(&mut self.plan.ends);
        let mut head = std::mem::take(&mut self.head);
        let r = self.write_packed(map, keys, &ends, &mut head);
        self.plan.ends = ends;
        self.head = head;
        r.map(|()| self.plan.ends.len())
    }

    fn write_packed(
        &self,
        map: &mut dyn SegmentMap,
        keys: &[&[u8]],
        ends: &[usize],
        head: &mut Vec<u8>,
    ) -> TxnResult<()> {
        let old = |o: usize| &self.bytes[range(self.old[o])];
        let mut o = 0;
        let mut start = 0;
        for &end in ends {
            let first = self.slice(keys, self.ents[start].0);
            // Stored keys below this segment's first one that no new segment takes: deleted.
            while o < self.old.len() && old(o) < first {
                map.delete(old(o))?;
                o += 1;
            }
            if o < self.old.len() && old(o) == first {
                o += 1;
            }
            let ents = &self.ents[start..end];
            let mut recs = 0;
            let it = ents.iter().map(|&(k, r)| {
                let r = r.len(keys);
                recs += r;
                (self.slice(keys, k), r)
            });
            encode_head(it, head);
            let len = head.len() + recs;
            map.put_with(first, len, &mut |w| {
                w.write_all(head)?;
                for &(_, r) in ents {
                    w.write_all(self.slice(keys, r))?;
                }
                Ok(())
            })?;
            start = end;
        }
        while o < self.old.len() {
            map.delete(old(o))?;
            o += 1;
        }
        Ok(())
    }
}

/// Writes the entities `keys` (strictly ascending, without the view prefix) into the segments of
/// `map`: entity `keys[j]`'s new record is what `update(j, its stored record or None, out)` appends to
/// `out`; every other entity of a rewritten segment is copied as bytes. Segments are rewritten in
/// runs, split and merged as the module docs say. Each stored segment of a run is copied once out of
/// the map (the run's writes may reuse its pages), and each record once more, into the new segment's
/// place in the map. Returns the segments written.
pub fn rewrite(
    map: &mut dyn SegmentMap,
    keys: &[&[u8]],
    mut update: impl FnMut(usize, Option<&[u8]>, &mut Vec<u8>) -> Result<()>,
) -> TxnResult<usize> {
    // The run's buffers hold every segment of a run (all of a dense view's): kept per thread from
    // push to push, so they do not grow (and copy themselves) again each time.
    thread_local! {
        static RUN: std::cell::RefCell<Run> = std::cell::RefCell::default();
    }
    RUN.with(|cell| {
        let mut run = cell.take();
        let r = rewrite_with(&mut run, map, keys, &mut update);
        if run.bytes.capacity() + run.merged.capacity() <= KEEP_BUFFERS {
            cell.replace(run);
        }
        r
    })
}

/// The most bytes of run buffers a thread keeps between pushes.
const KEEP_BUFFERS: usize = 64 << 20;

fn rewrite_with(
    run: &mut Run,
    map: &mut dyn SegmentMap,
    keys: &[&[u8]],
    update: &mut impl FnMut(usize, Option<&[u8]>, &mut Vec<u8>) -> Result<()>,
) -> TxnResult<usize> {
    let mut written = 0;
    let mut i = 0;
    while i < keys.len() {
        run.bytes.clear();
        run.merged.clear();
        run.ents.clear();
        run.old.clear();
        run.plan.clear();
        // The run starts at the segment owning keys[i] (the first one for a key below every segment).
        let mut seg = match map.floor(keys[i])? {
            Some(hit) => run.copy(Some(hit)),
            None => {
                let hit = map.first()?;
                run.copy(hit)
            }
        };
        // ... or at the one before it when that one is underfull, so that two neighbours that would
        // fit in one segment are joined whichever of them a push touches. One seek per segment of
        // the run otherwise: its successor, carried to the next round.
        let mut next = None;
        if let Some(s) = seg {
            let hit = map.before(&run.bytes[range(s.key)])?;
            if let Some(p) = hit.filter(|(_, v)| v.len() < MIN_FILL) {
                next = seg;
                seg = run.copy(Some(p));
            } else {
                let hit = map.after(&run.bytes[range(s.key)])?;
                next = run.copy(hit);
            }
        }
        loop {
            // The updates this segment owns: those below the next segment's key.
            let end = match next {
                Some(n) => {
                    let nk = &run.bytes[range(n.key)];
                    i + keys[i..].partition_point(|k| *k < nk)
                }
                None => keys.len(),
            };
            let mut u = i;
            if let Some(s) = seg {
                let at = s.val.0 as usize;
                let mut spans = std::mem::take(&mut run.spans);
                spans.clear();
                let v = Segment::parse(&run.bytes[range(s.val)])?;
                spans.extend(
                    v.spans()
                        .map(|(k, r)| (k.start + at..k.end + at, r.start + at..r.end + at)),
                );
                for (k, r) in spans.drain(..) {
                    // New entities below this stored one, then this one updated or copied: one
                    // comparison per entity where updates and stored entities alternate.
                    let key = Src::Run(k.start as u32, k.end as u32);
                    let at_key = loop {
                        if u == end {
                            break false;
                        }
                        match keys[u].cmp(&run.bytes[k.clone()]) {
                            std::cmp::Ordering::Less => {
                                run.merge(u, Src::Key(u as u32), None, keys, update)?;
                                u += 1;
                            }
                            o => break o == std::cmp::Ordering::Equal,
                        }
                    };
                    if at_key {
                        run.merge(u, key, Some(r), keys, update)?;
                        u += 1;
                    } else {
                        run.add(keys, key, Src::Run(r.start as u32, r.end as u32));
                    }
                }
                run.spans = spans;
                run.old.push(s.key);
            }
            while u < end {
                run.merge(u, Src::Key(u as u32), None, keys, update)?;
                u += 1;
            }
            i = end;
            // Go on with the next segment when it owns the next update (every update below its key is
            // consumed, so: when that update lies below its successor's key), or to fill an underfull
            // last segment.
            let Some(n) = next else { break };
            let hit = map.after(&run.bytes[range(n.key)])?;
            let after_n = run.copy(hit);
            let owns_next = i < keys.len() && after_n.is_none_or(|a| keys[i] < &run.bytes[range(a.key)]);
            if run.plan.pending_len() >= MIN_FILL && !owns_next {
                break;
            }
            seg = Some(n);
            next = after_n;
        }
        written += run.write(map, keys)?;
    }
    Ok(written)
}

/// A view's segments in the online store's data database, inside one write transaction.
pub struct LmdbSegments<'t, 'e> {
    txn: &'t mut RwTxn<'e>,
    db: Db,
    prefix: [u8; 4],
    k: Vec<u8>,
}

impl<'t, 'e> LmdbSegments<'t, 'e> {
    pub fn new(txn: &'t mut RwTxn<'e>, db: Db, prefix: [u8; 4]) -> Self {
        LmdbSegments {
            txn,
            db,
            prefix,
            k: Vec::with_capacity(4 + crate::online::key::MAX_KEY_BYTES),
        }
    }

    /// The full LMDB key of segment `k` (the view prefix, then `k`), in the reused buffer.
    fn full(&mut self, k: &[u8]) -> Vec<u8> {
        let mut key = std::mem::take(&mut self.k);
        key.clear();
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(k);
        key
    }
}

/// A hit of a seek, if it lies in the view's prefix, without the prefix.
fn own<'a>(prefix: &[u8; 4], hit: Option<(&'a [u8], &'a [u8])>) -> Hit<'a> {
    hit.filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (&k[4..], v))
}

impl SegmentMap for LmdbSegments<'_, '_> {
    fn floor(&mut self, k: &[u8]) -> TxnResult<Hit<'_>> {
        let key = self.full(k);
        let hit = self.db.get_lower_than_or_equal_to(self.txn, &key);
        self.k = key;
        Ok(own(&self.prefix, hit?))
    }
    fn after(&mut self, k: &[u8]) -> TxnResult<Hit<'_>> {
        let key = self.full(k);
        let hit = self.db.get_greater_than(self.txn, &key);
        self.k = key;
        Ok(own(&self.prefix, hit?))
    }
    fn before(&mut self, k: &[u8]) -> TxnResult<Hit<'_>> {
        let key = self.full(k);
        let hit = self.db.get_lower_than(self.txn, &key);
        self.k = key;
        Ok(own(&self.prefix, hit?))
    }
    fn first(&mut self) -> TxnResult<Hit<'_>> {
        let hit = self.db.get_greater_than_or_equal_to(self.txn, &self.prefix[..])?;
        Ok(own(&self.prefix, hit))
    }
    fn put_with(
        &mut self,
        k: &[u8],
        len: usize,
        fill: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
    ) -> TxnResult<()> {
        // Reserved: the segment is written straight into its place in the page, not copied there.
        let key = self.full(k);
        let r = self.db.put_reserved(self.txn, &key, len, |space| fill(space));
        self.k = key;
        Ok(r?)
    }
    fn delete(&mut self, k: &[u8]) -> TxnResult<()> {
        let key = self.full(k);
        let r = self.db.delete(self.txn, &key);
        self.k = key;
        r?;
        Ok(())
    }
}

/// The stored record (a version 1 entity record) of entity `k` (encoded, without the view prefix) in a
/// view's state of either version, by one seek: the greatest key `<= prefix ++ k` is the entity's own
/// record (version 1, which must then match `k` exactly) or its segment (version 2). `kbuf`: scratch.
pub fn find<'t>(
    db: &Db,
    txn: &'t RoTxn,
    kbuf: &mut Vec<u8>,
    prefix: &[u8; 4],
    k: &[u8],
) -> Result<Option<&'t [u8]>> {
    if k.is_empty() {
        return Ok(None);
    }
    kbuf.clear();
    kbuf.extend_from_slice(prefix);
    kbuf.extend_from_slice(k);
    let Some((at, v)) = db.get_lower_than_or_equal_to(txn, &kbuf[..]).map_err(storage)? else {
        return Ok(None);
    };
    if !at.starts_with(prefix) {
        return Ok(None);
    }
    match v.first() {
        Some(&SEGMENT_FORMAT_VERSION) => Ok(Segment::parse(v)?.find(k)),
        Some(&STATE_FORMAT_VERSION) => Ok((at == &kbuf[..]).then_some(v)),
        _ => Err(damaged()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    impl SegmentMap for BTreeMap<Vec<u8>, Vec<u8>> {
        fn floor(&mut self, k: &[u8]) -> TxnResult<Hit<'_>> {
            Ok(self
                .range(..=k.to_vec())
                .next_back()
                .map(|(a, b)| (&a[..], &b[..])))
        }
        fn after(&mut self, k: &[u8]) -> TxnResult<Hit<'_>> {
            use std::ops::Bound;
            Ok(self
                .range::<Vec<u8>, _>((Bound::Excluded(k.to_vec()), Bound::Unbounded))
                .next()
                .map(|(a, b)| (&a[..], &b[..])))
        }
        fn before(&mut self, k: &[u8]) -> TxnResult<Hit<'_>> {
            Ok(self
                .range(..k.to_vec())
                .next_back()
                .map(|(a, b)| (&a[..], &b[..])))
        }
        fn first(&mut self) -> TxnResult<Hit<'_>> {
            Ok(self.iter().next().map(|(a, b)| (&a[..], &b[..])))
        }
        fn put_with(
            &mut self,
            k: &[u8],
            len: usize,
            fill: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
        ) -> TxnResult<()> {
            let mut v = Vec::new();
            fill(&mut v).unwrap();
            assert_eq!(v.len(), len, "put_with's length is the bytes written");
            self.insert(k.to_vec(), v);
            Ok(())
        }
        fn delete(&mut self, k: &[u8]) -> TxnResult<()> {
            assert!(self.remove(k).is_some(), "only stored segments are deleted");
            Ok(())
        }
    }

    fn ok<T>(r: TxnResult<T>) -> T {
        match r {
            Ok(v) => v,
            Err(TxnError::Kernel(e)) => panic!("{e}"),
            Err(TxnError::Heed(e)) => panic!("{e}"),
        }
    }

    fn rng(seed: u64) -> impl FnMut(u64) -> u64 {
        let mut g = crate::testing::Rng::new(seed);
        move |m| g.next() % m
    }

    fn rec(len: usize, tag: u8) -> Vec<u8> {
        (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
    }

    #[test]
    fn a_segment_round_trips_and_finds_each_entity() {
        let mut r = rng(1);
        for case in 0..200 {
            let n = 1 + r(40) as usize;
            let mut keys: Vec<Vec<u8>> = (0..n)
                .map(|_| (0..1 + r(12)).map(|_| r(4) as u8).collect())
                .collect();
            keys.sort();
            keys.dedup();
            let recs: Vec<Vec<u8>> = (0..keys.len()).map(|i| rec(r(300) as usize, i as u8)).collect();
            let mut v = Vec::new();
            encode(
                keys.iter().map(|k| &k[..]).zip(recs.iter().map(|r| &r[..])),
                &mut v,
            );
            let payload: usize = keys.iter().chain(&recs).map(|x| x.len()).sum();
            assert_eq!(v.len(), encoded_len(keys.len(), payload));
            let s = Segment::parse(&v).unwrap();
            assert_eq!(s.len(), keys.len(), "case {case}");
            let got: Vec<(Vec<u8>, Vec<u8>)> = s.entities().map(|(k, r)| (k.to_vec(), r.to_vec())).collect();
            let want: Vec<(Vec<u8>, Vec<u8>)> = keys.iter().cloned().zip(recs.iter().cloned()).collect();
            assert_eq!(got, want);
            for (k, rc) in &want {
                assert_eq!(s.find(k), Some(&rc[..]));
            }
            // Keys that are not there: a random probe checked against the list.
            for _ in 0..20 {
                let probe: Vec<u8> = (0..1 + r(12)).map(|_| r(5) as u8).collect();
                let want = want.iter().find(|(k, _)| *k == probe).map(|(_, r)| &r[..]);
                assert_eq!(s.find(&probe), want);
            }
        }
    }

    #[test]
    fn damage_anywhere_in_the_head_or_lengths_is_a_storage_error() {
        let keys: [&[u8]; 3] = [b"a", b"bb", b"c"];
        let recs = [rec(10, 1), rec(0, 2), rec(7, 3)];
        let mut v = Vec::new();
        encode(keys.iter().copied().zip(recs.iter().map(|r| &r[..])), &mut v);
        let head = encoded_len(3, 4) - 4 + 4; // everything up to and including the head checksum
        for at in 0..head {
            let mut bad = v.clone();
            bad[at] ^= 0x10;
            assert!(
                matches!(Segment::parse(&bad), Err(Error::Storage(_))),
                "flip at {at}"
            );
        }
        for cut in 0..v.len() {
            assert!(Segment::parse(&v[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = v.clone();
        longer.push(0);
        assert!(Segment::parse(&longer).is_err());
        let mut empty = Vec::new();
        encode(std::iter::empty::<(&[u8], &[u8])>(), &mut empty);
        assert!(Segment::parse(&empty).is_err(), "a segment is never empty");
    }

    #[test]
    fn the_packer_fills_greedily_and_keeps_the_order() {
        let mut r = rng(7);
        for _ in 0..200 {
            let n = r(200) as usize;
            let ents: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
                .map(|i| {
                    let big = r(50) == 0;
                    let len = if big { 4000 + r(3000) } else { r(500) } as usize;
                    ((i as u32).to_be_bytes().to_vec(), rec(len, i as u8))
                })
                .collect();
            // Into an empty map, every entity is new: one run, packed by `Plan` and written by `Run`.
            let mut map = BTreeMap::new();
            let refs: Vec<&[u8]> = ents.iter().map(|(k, _)| &k[..]).collect();
            ok(rewrite(&mut map, &refs, |j, old, out| {
                assert!(old.is_none());
                out.extend_from_slice(&ents[j].1);
                Ok(())
            }));
            let segs: Vec<(Vec<u8>, Vec<u8>)> = map.into_iter().collect();
            let mut back = Vec::new();
            for (j, (first, v)) in segs.iter().enumerate() {
                let s = Segment::parse(v).unwrap();
                assert_eq!(s.key(0), &first[..], "a segment is keyed by its first entity");
                assert!(
                    v.len() <= CAPACITY || s.len() == 1,
                    "only a lone entity overflows"
                );
                if let Some((_, nv)) = segs.get(j + 1) {
                    // Greedy: the next segment's first entity did not fit.
                    let ns = Segment::parse(nv).unwrap();
                    let (k, r) = (ns.key(0), ns.record(0));
                    assert!(v.len() + PER_ENTITY + k.len() + r.len() > CAPACITY);
                }
                back.extend(s.entities().map(|(k, r)| (k.to_vec(), r.to_vec())));
            }
            assert_eq!(back, ents);
        }
    }

    /// The state's entities, read back through the segments as a reader would: the floor segment's
    /// directory. Also checks the map's invariants.
    fn read_all(map: &BTreeMap<Vec<u8>, Vec<u8>>) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut out = BTreeMap::new();
        let segs: Vec<_> = map.iter().collect();
        for (j, (sk, sv)) in segs.iter().enumerate() {
            let s = Segment::parse(sv).unwrap();
            assert_eq!(s.key(0), &sk[..]);
            assert!(sv.len() <= CAPACITY || s.len() == 1);
            if j + 1 < segs.len() {
                assert!(
                    s.key(s.len() - 1) < &segs[j + 1].0[..],
                    "segments hold disjoint runs"
                );
            }
            for (k, r) in s.entities() {
                assert!(out.insert(k.to_vec(), r.to_vec()).is_none());
            }
        }
        out
    }

    fn lookup(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, k: &[u8]) -> Option<Vec<u8>> {
        let (_, v) = ok(map.floor(k))?;
        Segment::parse(v).unwrap().find(k).map(|r| r.to_vec())
    }

    #[test]
    fn rewrites_split_and_merge_as_a_plain_map_of_entities_says() {
        for seed in 0..60 {
            let mut r = rng(seed + 100);
            let mut map: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut oracle: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let universe = 1 + r(600);
            for push in 0..25 {
                // A batch: random keys (some new, some stored), records that grow, shrink or vanish
                // to a few bytes, now and then a huge one.
                let m = 1 + r(universe.min(200)) as usize;
                let mut keys: Vec<Vec<u8>> = (0..m)
                    .map(|_| {
                        let id = r(universe) as u16;
                        let mut k = id.to_be_bytes().to_vec();
                        if id % 7 == 0 {
                            k.push(r(3) as u8); // keys of different lengths interleave
                        }
                        k
                    })
                    .collect();
                keys.sort();
                keys.dedup();
                let lens: Vec<usize> = keys
                    .iter()
                    .map(|_| match r(40) {
                        0 => 5000 + r(4000) as usize,
                        1..=4 => 1 + r(8) as usize,
                        _ => 20 + r(400) as usize,
                    })
                    .collect();
                let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
                let mut seen = Vec::new();
                let mut update = |j: usize, old: Option<&[u8]>, out: &mut Vec<u8>| -> Result<()> {
                    seen.push((keys[j].clone(), old.map(|o| o.to_vec())));
                    out.extend_from_slice(&rec(lens[j], (push * 31 + j) as u8));
                    Ok(())
                };
                ok(rewrite(&mut map, &refs, &mut update));
                // Each key updated once, with the record it had.
                assert_eq!(seen.len(), keys.len(), "seed {seed} push {push}");
                for (k, old) in &seen {
                    assert_eq!(old.as_ref(), oracle.get(k), "seed {seed} push {push}");
                }
                for (j, k) in keys.iter().enumerate() {
                    oracle.insert(k.clone(), rec(lens[j], (push * 31 + j) as u8));
                }
                assert_eq!(read_all(&map), oracle, "seed {seed} push {push}");
                for _ in 0..20 {
                    let mut probe = (r(universe + 5) as u16).to_be_bytes().to_vec();
                    if r(4) == 0 {
                        probe.push(r(3) as u8);
                    }
                    assert_eq!(lookup(&mut map, &probe), oracle.get(&probe).cloned());
                }
                // Merge rule: a segment under MIN_FILL is the last one, or held one entity too big to
                // share (its neighbour could not take it).
                let segs: Vec<_> = map.iter().collect();
                for (j, (_, v)) in segs.iter().enumerate() {
                    if v.len() < MIN_FILL && j + 1 < segs.len() {
                        let next = segs[j + 1].1;
                        assert!(
                            v.len() + next.len() > CAPACITY,
                            "seed {seed} push {push}: segments {j} ({} B) and {} ({} B) could be one",
                            v.len(),
                            j + 1,
                            next.len()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn segments_in_lmdb_are_found_by_one_seek_and_stay_inside_their_view() {
        use crate::online::env::Store;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Some(8 << 20), None).unwrap();
        let mut r = rng(5);
        let views = ["a__window", "b__window"];
        let mut oracles = [BTreeMap::new(), BTreeMap::new()];
        for push in 0..30 {
            let v = push % 2;
            // Both views draw from the same key range, so their prefixes' ranges sit side by side
            // with keys below and above the other's.
            let mut keys: Vec<Vec<u8>> = (0..1 + r(120))
                .map(|_| (r(400) as u16).to_be_bytes().to_vec())
                .collect();
            keys.sort();
            keys.dedup();
            let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
            let lens: Vec<usize> = keys.iter().map(|_| 20 + r(500) as usize).collect();
            let oracle = &mut oracles[v];
            store
                .write(views[v], |txn, data, _, prefix| {
                    let mut m = LmdbSegments::new(txn, *data, prefix);
                    rewrite(&mut m, &refs, |j, old, out| {
                        assert_eq!(old, oracle.get(&keys[j]).map(|o: &Vec<u8>| &o[..]));
                        out.extend_from_slice(&rec(lens[j], (push + j) as u8));
                        Ok(())
                    })?;
                    Ok(())
                })
                .unwrap();
            for (j, k) in keys.iter().enumerate() {
                oracle.insert(k.clone(), rec(lens[j], (push + j) as u8));
            }
            store
                .read(|txn| {
                    let db = store.data();
                    let mut kbuf = Vec::new();
                    for (w, o) in views.iter().zip(&oracles) {
                        let Some(p) = store.view_prefix_in(txn, w)? else {
                            continue;
                        };
                        for id in 0..420u16 {
                            let k = id.to_be_bytes();
                            let got = find(&db, txn, &mut kbuf, &p, &k)?;
                            assert_eq!(
                                got,
                                o.get(&k[..]).map(|x| &x[..]),
                                "view {w} key {id} push {push}"
                            );
                        }
                    }
                    Ok(())
                })
                .unwrap();
        }
    }

    #[test]
    fn find_reads_a_version_1_state_by_its_exact_key() {
        use crate::online::env::Store;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Some(1 << 20), None).unwrap();
        // Version 1 records start with their version byte 1 (`super::state`); only the exact key hits.
        let rec1 = |x: u8| vec![STATE_FORMAT_VERSION, x, x];
        store
            .write("v__window", |txn, data, _, prefix| {
                for k in [2u8, 5] {
                    let mut key = prefix.to_vec();
                    key.push(k);
                    data.put(txn, &key, &rec1(k))?;
                }
                Ok(())
            })
            .unwrap();
        store
            .read(|txn| {
                let p = store.view_prefix_in(txn, "v__window")?.unwrap();
                let db = store.data();
                let mut kbuf = Vec::new();
                let got: Vec<Option<Vec<u8>>> = (0..7u8)
                    .map(|k| find(&db, txn, &mut kbuf, &p, &[k]).unwrap().map(|v| v.to_vec()))
                    .collect();
                let want: Vec<Option<Vec<u8>>> =
                    (0..7u8).map(|k| [2, 5].contains(&k).then(|| rec1(k))).collect();
                assert_eq!(got, want);
                Ok(())
            })
            .unwrap();
    }
}
