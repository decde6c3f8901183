//! Value layouts, versions 1 and 3. The one place this format is defined.
//!
//! The layout version is recorded per view, in the view's schema record (`schema.rs`, schema format 2;
//! stores whose schema records are format 1 used value layout 1 for every view), and repeated in byte 0
//! of every value. A new layout gets a new number here; [`Layout::new`] is the one place a view's layout
//! version is dispatched, so views written with an older layout stay readable beside newer ones. New
//! views are written with version 3; version 1 views are read (and written) as before. Version 2 was
//! never written.
//!
//! One LMDB value holds the latest row of one key of one view. Version 1:
//!
//! ```text
//! offset  size  field
//! 0       1     layout version (1, or 3 below)
//! 1       1     flags: bit 0 set = a created timestamp is present
//! 2       8     event timestamp, UTC microseconds, i64 little-endian
//! 10      8     created timestamp, UTC microseconds, i64 little-endian (0 when absent)
//! 18      B     validity bitmap, B = ceil(columns / 8); bit j (LSB first) set = value column j is not null
//! 18+B    F     fixed-width slots, one per value column in the view's recorded order, little-endian:
//!                 int8/uint8/bool 1, int16/uint16 2, int32/uint32/float32 4, int64/uint64/float64 8,
//!                 timestamp 8 (UTC microseconds), fixed_size_list<float32, n> 4n, <float64, n> 8n
//!                 (a null element inside a list is refused by `write`), string/binary 4: the END offset (u32) of the
//!                 column's bytes in the variable part; its start is the previous string/binary column's
//!                 end (0 for the first). A null column's slot is zero (a null string's end repeats the
//!                 previous end).
//! 18+B+F  ...   variable part: the bytes of the string/binary columns, in column order
//! ```
//!
//! Version 3 is version 1 (with 3 in byte 0) followed by a checksum, so the body decodes as above:
//!
//! ```text
//! len-4   4     CRC-32C (Castagnoli), u32 little-endian, of these bytes in sequence: the view's schema
//!               record as stored (`schema.rs`), the value's LMDB key (view prefix and encoded key,
//!               `key.rs`), and bytes 0..len-4 of the value
//! ```
//!
//! A version 3 value is exactly `18 + B + F + (end offset of the last string/binary column, 0 without
//! one) + 4` bytes long; readers check that before reading the checksum.
//!
//! LMDB keeps no checksums of its own, so a flipped bit in the data file could otherwise be served as a
//! value. Every read verifies the checksum before decoding (the write path too, before comparing a
//! stored stamp), and a mismatch is a `StorageError` naming the view, never a value. Covering the key
//! and the schema record as well catches a value read under the wrong key (a flipped key byte) and a
//! schema record whose column kinds or order changed under its values.
//!
//! Every slot sits at an offset fixed by the schema, so a reader precomputes offsets once and decodes a
//! numeric column straight into a float64 output without allocating. LMDB does not align values, so slots
//! are read with unaligned little-endian loads.

use crate::error::{Error, Result};
use crate::online::cells::{Cells, Chunk};
use crate::online::schema::Kind;

/// The layout new views are written with.
pub const VALUE_FORMAT_VERSION: u8 = 3;
pub const HEADER: usize = 18;
/// Bytes of the version 3 checksum at the end of a value.
const CRC_BYTES: usize = 4;
const FLAG_CREATED: u8 = 1;

/// The (event, created) pair that orders versions of one key. `None` (no created timestamp) ranks below
/// any present created timestamp, which is how Rust orders `Option`.
pub type Stamp = (i64, Option<i64>);

pub fn width(kind: &Kind) -> usize {
    match kind {
        Kind::I8 | Kind::U8 | Kind::Bool => 1,
        Kind::I16 | Kind::U16 => 2,
        Kind::I32 | Kind::U32 | Kind::F32 | Kind::Str | Kind::Bin => 4,
        Kind::I64 | Kind::U64 | Kind::F64 | Kind::Ts(_) => 8,
        Kind::ListF32(n) => 4 * *n as usize,
        Kind::ListF64(n) => 8 * *n as usize,
    }
}

/// Offsets of a view's value columns in the layout above.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The layout version (byte 0 of every value of the view).
    pub version: u8,
    pub kinds: Vec<Kind>,
    pub slots: Vec<usize>,
    pub fixed_end: usize,
    /// Version 3: the CRC-32C of the view's schema record, where every value's checksum starts.
    seed: Option<u32>,
    /// The slot of the last string/binary column: its end offset gives the value's exact length.
    last_var: Option<usize>,
}

impl Layout {
    /// The layout of a view whose schema record is `record` and records layout `version` with value
    /// columns `kinds` (the dispatch point for new versions).
    pub fn new(version: u8, kinds: Vec<Kind>, record: &[u8]) -> Result<Layout> {
        let seed = match version {
            1 => None,
            3 => Some(crc32c::crc32c(record)),
            _ => {
                return Err(Error::Storage(format!(
                "a view's values use layout version {version}, which this skewless does not know (it reads \
                     1 and 3); upgrade skewless or rewrite the view"
            )))
            }
        };
        let mut at = HEADER + kinds.len().div_ceil(8);
        let mut slots = Vec::with_capacity(kinds.len());
        for k in &kinds {
            slots.push(at);
            at += width(k);
        }
        let last_var = (0..kinds.len())
            .rev()
            .find(|&j| matches!(kinds[j], Kind::Str | Kind::Bin))
            .map(|j| slots[j]);
        Ok(Layout {
            version,
            kinds,
            slots,
            fixed_end: at,
            seed,
            last_var,
        })
    }

    /// Encodes one row, stored under LMDB key `key`. `chunks[j]` is the chunk of value column j
    /// (recorded order) holding `row`.
    pub fn encode(
        &self,
        chunks: &[Chunk<'_>],
        row: usize,
        stamp: Stamp,
        key: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.encode_body(chunks, row, stamp, out)?;
        if let Some(seed) = self.seed {
            let crc = crate::online::crc::value_crc(seed, key, out);
            out.extend_from_slice(&crc.to_le_bytes());
        }
        Ok(())
    }

    fn encode_body(&self, chunks: &[Chunk<'_>], row: usize, stamp: Stamp, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        out.resize(self.fixed_end, 0);
        out[0] = self.version;
        out[1] = if stamp.1.is_some() { FLAG_CREATED } else { 0 };
        out[2..10].copy_from_slice(&stamp.0.to_le_bytes());
        out[10..18].copy_from_slice(&stamp.1.unwrap_or(0).to_le_bytes());
        let mut var_end: u32 = 0;
        for (j, (c, &at)) in chunks.iter().zip(&self.slots).enumerate() {
            let is_var = matches!(self.kinds[j], Kind::Str | Kind::Bin);
            if c.is_null(row) {
                if is_var {
                    out[at..at + 4].copy_from_slice(&var_end.to_le_bytes());
                }
                continue;
            }
            out[HEADER + j / 8] |= 1 << (j % 8);
            macro_rules! put {
                ($v:expr) => {{
                    let b = $v.to_le_bytes();
                    out[at..at + b.len()].copy_from_slice(&b);
                }};
            }
            match &c.cells {
                Cells::I(_) => {
                    let v = c.i64_at(row).unwrap_or(0);
                    match self.kinds[j] {
                        Kind::I8 => put!(v as i8),
                        Kind::I16 => put!(v as i16),
                        Kind::I32 => put!(v as i32),
                        _ => put!(v),
                    }
                }
                Cells::U(_) => {
                    let v = c.u64_at(row).unwrap_or(0);
                    match self.kinds[j] {
                        Kind::U8 => put!(v as u8),
                        Kind::U16 => put!(v as u16),
                        Kind::U32 => put!(v as u32),
                        _ => put!(v),
                    }
                }
                Cells::F32(v) => put!(v[row]),
                Cells::F64(v) => put!(v[row]),
                Cells::Bool(b) => out[at] = b.value(row) as u8,
                Cells::Ts(..) => {
                    let v = c.micros_at(row).ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "a timestamp value at row {row} does not fit in microseconds since 1970; use dates within \
                             about 292,000 years of 1970"
                        ))
                    })?;
                    put!(v)
                }
                Cells::ListF32(v, n, nulls) => {
                    for k in 0..*n {
                        let x = if nulls.is_some_and(|m| m.is_null(row * n + k)) {
                            f32::NAN
                        } else {
                            v[row * n + k]
                        };
                        out[at + 4 * k..at + 4 * k + 4].copy_from_slice(&x.to_le_bytes());
                    }
                }
                Cells::ListF64(v, n, nulls) => {
                    for k in 0..*n {
                        let x = if nulls.is_some_and(|m| m.is_null(row * n + k)) {
                            f64::NAN
                        } else {
                            v[row * n + k]
                        };
                        out[at + 8 * k..at + 8 * k + 8].copy_from_slice(&x.to_le_bytes());
                    }
                }
                _ => {
                    let bytes = c.bytes_at(row).unwrap_or(&[]);
                    out.extend_from_slice(bytes);
                    let end = out.len() - self.fixed_end;
                    var_end = u32::try_from(end).map_err(|_| {
                        Error::InvalidArgument(
                            "a row's string/binary values add up to more than 4 GiB; store large blobs elsewhere".into(),
                        )
                    })?;
                    out[at..at + 4].copy_from_slice(&var_end.to_le_bytes());
                }
            }
        }
        Ok(())
    }

    /// Checks that `v`, stored under LMDB key `key`, is a value of this layout (version, length and, from
    /// version 3, checksum) and returns its body, the bytes every other method here reads. Readers call
    /// it once per value before the unchecked slot loads; the error does not name the view, so callers
    /// map it with [`damaged`].
    #[inline(always)]
    pub fn check<'v>(&self, key: &[u8], v: &'v [u8]) -> Result<&'v [u8]> {
        let body = match self.seed {
            None => v,
            Some(seed) => {
                // The length the value's own offsets give must match before the checksum reads the
                // bytes: a damaged length in LMDB's node could reach past the end of the data file,
                // where touching the map is a SIGBUS.
                if v.len() < self.fixed_end + CRC_BYTES {
                    return Err(corrupt());
                }
                let var = self
                    .last_var
                    .map_or(0, |at| u32::from_le_bytes(arr(v, at)) as usize);
                if v.len() - CRC_BYTES - self.fixed_end != var {
                    return Err(corrupt());
                }
                let (body, crc) = v.split_at(v.len() - CRC_BYTES);
                if crate::online::crc::value_crc(seed, key, body).to_le_bytes() != crc {
                    return Err(corrupt());
                }
                body
            }
        };
        if body.len() < self.fixed_end || body[0] != self.version {
            return Err(corrupt());
        }
        Ok(body)
    }

    /// Whether value column j of a checked value is not null.
    #[inline]
    pub fn is_valid(&self, v: &[u8], j: usize) -> bool {
        v[HEADER + j / 8] & (1 << (j % 8)) != 0
    }

    /// The event timestamp of a checked value.
    #[inline]
    pub fn event_ts(&self, v: &[u8]) -> i64 {
        i64::from_le_bytes(arr(v, 2))
    }

    /// The (event, created) stamp of a checked value.
    #[inline]
    pub fn stamp(&self, v: &[u8]) -> Stamp {
        let ts = i64::from_le_bytes(arr(v, 2));
        let created = (v[1] & FLAG_CREATED != 0).then(|| i64::from_le_bytes(arr(v, 10)));
        (ts, created)
    }

    /// Column j of a checked value as float64 (numeric kinds; NaN for null).
    #[inline]
    pub fn f64_at(&self, v: &[u8], j: usize) -> f64 {
        self.f64_of(v, j).unwrap_or(f64::NAN)
    }

    /// Where float64 column j sits in a value, None when the column is of another kind.
    #[inline]
    pub fn f64_slot(&self, j: usize) -> Option<F64Slot> {
        (self.kinds[j] == Kind::F64).then(|| F64Slot {
            at: self.slots[j],
            byte: HEADER + j / 8,
            bit: 1 << (j % 8),
        })
    }

    /// Column j of a checked value as float64, None for null (numeric kinds; NaN for the others).
    #[inline]
    pub fn f64_of(&self, v: &[u8], j: usize) -> Option<f64> {
        if !self.is_valid(v, j) {
            return None;
        }
        Some(self.f64_present(v, j))
    }

    #[inline]
    fn f64_present(&self, v: &[u8], j: usize) -> f64 {
        let at = self.slots[j];
        match self.kinds[j] {
            Kind::I8 => v[at] as i8 as f64,
            Kind::U8 => v[at] as f64,
            Kind::Bool => (v[at] != 0) as u8 as f64,
            Kind::I16 => i16::from_le_bytes(arr(v, at)) as f64,
            Kind::U16 => u16::from_le_bytes(arr(v, at)) as f64,
            Kind::I32 => i32::from_le_bytes(arr(v, at)) as f64,
            Kind::U32 => u32::from_le_bytes(arr(v, at)) as f64,
            Kind::F32 => f32::from_le_bytes(arr(v, at)) as f64,
            Kind::I64 | Kind::Ts(_) => i64::from_le_bytes(arr(v, at)) as f64,
            Kind::U64 => u64::from_le_bytes(arr(v, at)) as f64,
            Kind::F64 => f64::from_le_bytes(arr(v, at)),
            Kind::Str | Kind::Bin | Kind::ListF32(_) | Kind::ListF64(_) => f64::NAN,
        }
    }

    /// The bytes of string/binary column j of a checked value.
    pub fn var_at<'v>(&self, v: &'v [u8], j: usize) -> Result<&'v [u8]> {
        let end = u32::from_le_bytes(arr(v, self.slots[j])) as usize;
        let start = (0..j)
            .rev()
            .find(|&p| matches!(self.kinds[p], Kind::Str | Kind::Bin))
            .map(|p| u32::from_le_bytes(arr(v, self.slots[p])) as usize)
            .unwrap_or(0);
        v.get(self.fixed_end + start..self.fixed_end + end)
            .ok_or_else(corrupt)
    }
}

#[inline]
pub fn arr<const N: usize>(v: &[u8], at: usize) -> [u8; N] {
    // The caller checked the value's length against the layout; the slice has exactly N bytes.
    let mut out = [0u8; N];
    out.copy_from_slice(&v[at..at + N]);
    out
}

/// A float64 column's place in a value of one layout ([`Layout::f64_slot`]): what a served request
/// reads per value, found once per view instead of once per value.
#[derive(Clone, Copy, Debug)]
pub struct F64Slot {
    at: usize,
    byte: usize,
    bit: u8,
}

impl F64Slot {
    /// The column of a checked value (see [`Layout::check`]), None for null.
    #[inline(always)]
    pub fn read(&self, v: &[u8]) -> Option<f64> {
        (v[self.byte] & self.bit != 0).then(|| f64::from_le_bytes(arr(v, self.at)))
    }
}

/// The error for a stored value of `view` that failed [`Layout::check`].
#[cold]
pub fn damaged(view: &str) -> Error {
    Error::Storage(format!(
        "a stored online value of view {view:?} is damaged (it fails its checksum or does not match the \
         view's value layout); nothing was served or written. Delete the store's online folder and run \
         materialize to rebuild it from the history"
    ))
}

fn corrupt() -> Error {
    Error::Storage(
        "a stored value is corrupt or from a newer skewless version (value layout mismatch); upgrade skewless or \
         rewrite the view"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::*;
    use arrow::datatypes::Float32Type;

    use super::*;

    fn sample() -> Vec<ArrayRef> {
        let i: ArrayRef = Arc::new(Int32Array::from(vec![Some(-7), None]));
        let s: ArrayRef = Arc::new(StringArray::from(vec![Some("héllo"), None]));
        let b: ArrayRef = Arc::new(BinaryArray::from(vec![Some(&b"\x00\x01"[..]), Some(&b""[..])]));
        let f: ArrayRef = Arc::new(Float64Array::from(vec![Some(2.5), Some(-0.0)]));
        let l: ArrayRef = Arc::new(FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(
            vec![Some(vec![Some(1.0), None]), None],
            2,
        ));
        vec![i, s, b, f, l]
    }

    fn kinds() -> Vec<Kind> {
        vec![Kind::I32, Kind::Str, Kind::Bin, Kind::F64, Kind::ListF32(2)]
    }

    const KEY: &[u8] = b"\x00\x00\x00\x01\x80\x00\x00\x00\x00\x00\x00\x07";
    const RECORD: &[u8] = b"a schema record";

    #[test]
    fn value_round_trip_with_nulls_strings_and_lists_in_every_layout() {
        let cols = sample();
        let chunks: Vec<Chunk> = cols.iter().map(|c| Chunk::new(c).unwrap()).collect();
        assert!(Layout::new(2, vec![Kind::I32], RECORD).is_err());
        assert!(Layout::new(4, vec![Kind::I32], RECORD).is_err());
        for version in [1, 3] {
            let layout = Layout::new(version, kinds(), RECORD).unwrap();
            let mut out = Vec::new();

            layout.encode(&chunks, 0, (42, Some(-3)), KEY, &mut out).unwrap();
            assert_eq!(out[0], version);
            let v = layout.check(KEY, &out).unwrap();
            assert_eq!(layout.stamp(v), (42, Some(-3)));
            assert_eq!(layout.f64_at(v, 0), -7.0);
            assert_eq!(layout.var_at(v, 1).unwrap(), "héllo".as_bytes());
            assert_eq!(layout.var_at(v, 2).unwrap(), b"\x00\x01");
            assert_eq!(layout.f64_at(v, 3), 2.5);
            let at = layout.slots[4];
            assert_eq!(f32::from_le_bytes(arr(v, at)), 1.0);
            assert!(f32::from_le_bytes(arr(v, at + 4)).is_nan());

            layout.encode(&chunks, 1, (1, None), KEY, &mut out).unwrap();
            let v = layout.check(KEY, &out).unwrap();
            assert_eq!(layout.stamp(v), (1, None));
            assert!(layout.f64_at(v, 0).is_nan());
            assert!(!layout.is_valid(v, 1));
            assert_eq!(layout.var_at(v, 2).unwrap(), b"");
            assert!(!layout.is_valid(v, 4));
            assert!(layout.check(KEY, &out[..5]).is_err());
            assert!(layout.check(KEY, &[]).is_err());
        }
    }

    #[test]
    fn an_f64_slot_reads_what_f64_of_reads_over_nine_columns_with_nulls_and_nan() {
        // Nine float64 columns (a validity bitmap of two bytes) and one of another kind.
        let mut kinds = vec![Kind::F64; 9];
        kinds.insert(4, Kind::I32);
        let cols: Vec<ArrayRef> = (0..kinds.len())
            .map(|j| -> ArrayRef {
                if j == 4 {
                    return Arc::new(Int32Array::from(vec![Some(1), None, Some(3)]));
                }
                let x = |r: usize| match (j + r) % 4 {
                    0 => None,
                    1 => Some(f64::NAN),
                    2 => Some(-0.0),
                    _ => Some(j as f64 * 10.0 + r as f64),
                };
                Arc::new(Float64Array::from((0..3).map(x).collect::<Vec<_>>()))
            })
            .collect();
        let chunks: Vec<Chunk> = cols.iter().map(|c| Chunk::new(c).unwrap()).collect();
        let layout = Layout::new(3, kinds.clone(), RECORD).unwrap();
        assert!(layout.f64_slot(4).is_none());
        for row in 0..3 {
            let mut out = Vec::new();
            layout.encode(&chunks, row, (1, None), KEY, &mut out).unwrap();
            let v = layout.check(KEY, &out).unwrap();
            for j in (0..kinds.len()).filter(|&j| j != 4) {
                let (a, b) = (layout.f64_slot(j).unwrap().read(v), layout.f64_of(v, j));
                assert_eq!(a.map(f64::to_bits), b.map(f64::to_bits), "row {row} column {j}");
                assert_eq!(a.is_none(), (j + row) % 4 == 0);
            }
        }
    }

    #[test]
    fn version_3_appends_a_crc32c_of_record_key_and_body() {
        let cols = sample();
        let chunks: Vec<Chunk> = cols.iter().map(|c| Chunk::new(c).unwrap()).collect();
        let (v1, v3) = (
            Layout::new(1, kinds(), RECORD).unwrap(),
            Layout::new(3, kinds(), RECORD).unwrap(),
        );
        let (mut a, mut b) = (Vec::new(), Vec::new());
        v1.encode(&chunks, 0, (42, Some(-3)), KEY, &mut a).unwrap();
        v3.encode(&chunks, 0, (42, Some(-3)), KEY, &mut b).unwrap();
        // The body is version 1's bytes but for the version byte; the trailer is the checksum of the
        // concatenation, computed here in one piece (the writer chains three).
        assert_eq!(b.len(), a.len() + 4);
        assert_eq!(&b[1..a.len()], &a[1..]);
        let whole: Vec<u8> = [RECORD, KEY, &b[..a.len()]].concat();
        assert_eq!(b[a.len()..], crc32c::crc32c(&whole).to_le_bytes());
        // CRC-32C's standard check value, so the trailer is the published function.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn version_3_detects_every_single_bit_flip_and_a_wrong_key_or_record() {
        let cols = sample();
        let chunks: Vec<Chunk> = cols.iter().map(|c| Chunk::new(c).unwrap()).collect();
        let layout = Layout::new(3, kinds(), RECORD).unwrap();
        let mut out = Vec::new();
        layout.encode(&chunks, 0, (42, Some(-3)), KEY, &mut out).unwrap();
        for bit in 0..out.len() * 8 {
            let mut v = out.clone();
            v[bit / 8] ^= 1 << (bit % 8);
            assert!(layout.check(KEY, &v).is_err(), "flip of bit {bit} passed");
        }
        // A value cut short or extended (a damaged length) fails before the checksum is read.
        assert!(layout.check(KEY, &out[..out.len() - 1]).is_err());
        assert!(layout.check(KEY, &[&out[..], b"\0"].concat()).is_err());
        for bit in 0..KEY.len() * 8 {
            let mut k = KEY.to_vec();
            k[bit / 8] ^= 1 << (bit % 8);
            assert!(layout.check(&k, &out).is_err(), "key flip of bit {bit} passed");
        }
        let other = Layout::new(3, kinds(), b"a schema recorD").unwrap();
        assert!(other.check(KEY, &out).is_err());
        // Version 1 has no checksum: the same flip of a float slot is read as another number.
        let v1 = Layout::new(1, kinds(), RECORD).unwrap();
        v1.encode(&chunks, 0, (42, Some(-3)), KEY, &mut out).unwrap();
        out[v1.slots[3]] ^= 1;
        let v = v1.check(KEY, &out).unwrap();
        assert_ne!(v1.f64_at(v, 3), 2.5);
    }

    #[test]
    fn stamps_order_missing_created_below_present() {
        assert!((5, None) < (5, Some(i64::MIN)));
        assert!((5, Some(100)) < (6, None));
    }
}
