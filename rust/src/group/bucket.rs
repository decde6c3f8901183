//! Bucket numbers of key rows: the partition a row's key belongs to when a join is spread over tasks
//! (`skewless.spark`). Both sides of a join are bucketed by this one function, in different processes,
//! so a key's rows meet in one bucket; it only has to agree with itself, never with another engine.
//!
//! Bucket hash, version 1: a key component is hashed in the domain the join compares it in (an integer
//! of any width or signedness as its i64 value, wrapping above `i64::MAX`; a boolean as 0/1; a timestamp
//! as UTC microseconds; a string or binary value as its bytes with FNV-1a), each through the splitmix64
//! finalizer; components are combined left to right as `h = mix(h * K + c)`. The bucket is `h % n`. A
//! null component gives a null bucket (such a row matches nothing). Changing any of this changes which
//! task a key lands in, never a result; executors of one job all run the same build.

use arrow::array::{Array, ArrayRef, Int32Array};
use arrow::buffer::NullBuffer;

use crate::column::{Cells, Chunk};
use crate::error::{Error, Result};
use crate::time::to_micros;

const K: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[inline]
fn bytes_hash(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h = (h ^ x as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// The hash of row `i` of one key chunk, or None for a null.
#[inline]
fn cell_hash(c: &Chunk<'_>, i: usize) -> Result<Option<u64>> {
    if c.is_null(i) {
        return Ok(None);
    }
    Ok(Some(match &c.cells {
        Cells::I(_) => mix(c.i64_at(i).unwrap_or_default() as u64),
        Cells::U(_) => mix(c.u64_at(i).unwrap_or_default()),
        Cells::Bool(a) => mix(a.value(i) as u64),
        Cells::Ts(v, unit) => mix(to_micros(v[i], *unit).unwrap_or(v[i]) as u64),
        _ => {
            match c.bytes_at(i) {
                Some(b) => bytes_hash(b),
                None => return Err(Error::Dtype(
                    "a bucket key must be an integer, boolean, timestamp, string or binary column; cast it"
                        .into(),
                )),
            }
        }
    }))
}

/// The bucket (`0..n`) of every row of the key columns `keys` (one `Vec` of chunks per column, all
/// chunked alike), null where a component is null.
pub fn buckets(keys: &[Vec<ArrayRef>], n: u32) -> Result<Int32Array> {
    if n == 0 || n > i32::MAX as u32 {
        return Err(Error::InvalidArgument(format!(
            "the bucket count must be in 1..={}, got {n}",
            i32::MAX
        )));
    }
    let Some(first) = keys.first() else {
        return Err(Error::InvalidArgument(
            "bucketing needs at least one key column".into(),
        ));
    };
    let total: usize = first.iter().map(|a| a.len()).sum();
    let mut out: Vec<i32> = Vec::with_capacity(total);
    let mut valid: Vec<bool> = Vec::with_capacity(total);
    for (ci, chunk) in first.iter().enumerate() {
        let len = chunk.len();
        let cols = keys
            .iter()
            .map(|col| match col.get(ci) {
                Some(a) if a.len() == len => Chunk::new(a),
                _ => Err(Error::InvalidArgument(
                    "the key columns to bucket are not chunked alike".into(),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        for i in 0..len {
            let mut h: u64 = 0;
            let mut null = false;
            for c in &cols {
                match cell_hash(c, i)? {
                    Some(x) => h = mix(h.wrapping_mul(K).wrapping_add(x)),
                    None => {
                        null = true;
                        break;
                    }
                }
            }
            out.push(if null { 0 } else { (h % n as u64) as i32 });
            valid.push(!null);
        }
    }
    let nulls = if valid.iter().all(|v| *v) {
        None
    } else {
        Some(NullBuffer::from(valid))
    };
    Ok(Int32Array::new(out.into(), nulls))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Int32Array, Int64Array, LargeStringArray, StringArray, UInt8Array};
    use std::sync::Arc;

    fn one(a: ArrayRef, n: u32) -> Vec<Option<i32>> {
        buckets(&[vec![a]], n).unwrap().iter().collect()
    }

    #[test]
    fn integer_widths_and_string_kinds_agree() {
        let a = one(Arc::new(Int64Array::from(vec![0, 1, 2, 300, 7])), 13);
        let b = one(Arc::new(Int32Array::from(vec![0, 1, 2, 300, 7])), 13);
        assert_eq!(a, b);
        let c = one(Arc::new(UInt8Array::from(vec![0, 1, 2])), 13);
        assert_eq!(&a[..3], &c[..]);
        let d = one(Arc::new(BooleanArray::from(vec![false, true])), 13);
        assert_eq!(&a[..2], &d[..]);
        let s = one(Arc::new(StringArray::from(vec!["x", "", "yz"])), 7);
        let l = one(Arc::new(LargeStringArray::from(vec!["x", "", "yz"])), 7);
        assert_eq!(s, l);
    }

    #[test]
    fn chunks_composites_and_nulls() {
        let whole = buckets(
            &[
                vec![Arc::new(Int64Array::from(vec![1, 2, 3, 4])) as ArrayRef],
                vec![Arc::new(StringArray::from(vec![Some("a"), Some("b"), None, Some("d")])) as ArrayRef],
            ],
            5,
        )
        .unwrap();
        let split = buckets(
            &[
                vec![
                    Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
                    Arc::new(Int64Array::from(vec![3, 4])) as ArrayRef,
                ],
                vec![
                    Arc::new(StringArray::from(vec![Some("a"), Some("b")])) as ArrayRef,
                    Arc::new(StringArray::from(vec![None, Some("d")])) as ArrayRef,
                ],
            ],
            5,
        )
        .unwrap();
        assert_eq!(whole, split);
        assert!(whole.is_null(2) && whole.null_count() == 1);
        assert!(whole.iter().flatten().all(|b| (0..5).contains(&b)));
        // The order of the components counts (a composite is not a set).
        let ab = buckets(
            &[
                vec![Arc::new(Int64Array::from(vec![1])) as ArrayRef],
                vec![Arc::new(Int64Array::from(vec![2])) as ArrayRef],
            ],
            1 << 30,
        )
        .unwrap();
        let ba = buckets(
            &[
                vec![Arc::new(Int64Array::from(vec![2])) as ArrayRef],
                vec![Arc::new(Int64Array::from(vec![1])) as ArrayRef],
            ],
            1 << 30,
        )
        .unwrap();
        assert_ne!(ab.value(0), ba.value(0));
    }

    #[test]
    fn spreads_and_refuses_bad_arguments() {
        let keys: Vec<i64> = (0..10_000).collect();
        let b = one(Arc::new(Int64Array::from(keys)), 16);
        let mut count = [0usize; 16];
        for x in b.iter().flatten() {
            count[*x as usize] += 1;
        }
        assert!(count.iter().all(|c| (500..750).contains(c)), "{count:?}");
        assert!(buckets(&[vec![Arc::new(Int64Array::from(vec![1])) as ArrayRef]], 0).is_err());
        assert!(buckets(&[], 4).is_err());
        let f: ArrayRef = Arc::new(arrow::array::Float64Array::from(vec![1.0]));
        assert!(matches!(buckets(&[vec![f]], 4), Err(Error::Dtype(_))));
    }
}
