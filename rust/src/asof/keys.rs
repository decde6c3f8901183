//! Join keys -> dense group ids (u32), one dictionary shared by both sides and built from the right.
//!
//! Ids are what the index partitions the right by and what a left row looks its group up with, so the
//! keys themselves are read once and never copied. Two ways to get them:
//! - a single integer key whose range on the right is small: id = key - min (no hashing at all);
//! - otherwise a hash map from the key (an order-preserving u64, or the key's bytes) to the next free id,
//!   filled in right-row order. Composite keys are combined column by column through a map from the pair
//!   (id so far, id of the next column) to a new id.
//!
//! Either way a right side sorted by its key gets non-decreasing ids, which keeps the index build's
//! scatter a straight copy. A null anywhere in a key gives [`NONE`]: that row never matches.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::*;
use hashbrown::HashMap;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::table::Column;

/// The id of a row that can take part in no match (null key component, null `on`, key absent on the right).
pub const NONE: u32 = u32::MAX;

type FastMap<K> = HashMap<K, u32, foldhash::fast::RandomState>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Signed,
    Unsigned,
    Text,
    Bytes,
}

fn key_kind(name: &str, dt: &DataType, what: &str) -> Result<KeyKind> {
    Ok(match dt {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => KeyKind::Signed,
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => KeyKind::Unsigned,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => KeyKind::Text,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => KeyKind::Bytes,
        other => {
            return Err(Error::Dtype(format!(
                "key column {name:?} of {what} has type {other}; a `by` key must be an integer, string or \
                 binary column. Cast it (e.g. to int64 or string) before the join"
            )))
        }
    })
}

/// Maps integers of either signedness onto u64 keeping their order, so one code path serves all widths.
pub(crate) trait OrdU64: Copy {
    fn ord_u64(self) -> u64;
}
macro_rules! ord_signed {
    ($($t:ty),*) => {$(impl OrdU64 for $t {
        #[inline] fn ord_u64(self) -> u64 { (self as i64 as u64) ^ (1 << 63) }
    })*};
}
macro_rules! ord_unsigned {
    ($($t:ty),*) => {$(impl OrdU64 for $t {
        #[inline] fn ord_u64(self) -> u64 { self as u64 }
    })*};
}
ord_signed!(i8, i16, i32, i64);
ord_unsigned!(u8, u16, u32, u64);

/// Runs `$body` with `$a` bound to `$arr` downcast to its concrete integer array type.
macro_rules! with_int {
    ($arr:expr, $a:ident => $body:expr) => {{
        let arr: &dyn Array = $arr;
        match arr.data_type() {
            DataType::Int8 => {
                let $a = arr.as_primitive::<Int8Type>();
                $body
            }
            DataType::Int16 => {
                let $a = arr.as_primitive::<Int16Type>();
                $body
            }
            DataType::Int32 => {
                let $a = arr.as_primitive::<Int32Type>();
                $body
            }
            DataType::Int64 => {
                let $a = arr.as_primitive::<Int64Type>();
                $body
            }
            DataType::UInt8 => {
                let $a = arr.as_primitive::<UInt8Type>();
                $body
            }
            DataType::UInt16 => {
                let $a = arr.as_primitive::<UInt16Type>();
                $body
            }
            DataType::UInt32 => {
                let $a = arr.as_primitive::<UInt32Type>();
                $body
            }
            DataType::UInt64 => {
                let $a = arr.as_primitive::<UInt64Type>();
                $body
            }
            dt => unreachable!("integer type checked before, got {dt}"),
        }
    }};
}
pub(crate) use with_int;

/// Runs `$body` with `$get` a closure from row index to the row's bytes, for any string/binary layout.
macro_rules! with_bytes {
    ($arr:expr, $get:ident => $body:expr) => {{
        let arr: &dyn Array = $arr;
        match arr.data_type() {
            DataType::Utf8 => {
                let a = arr.as_string::<i32>();
                let $get = |i: usize| a.value(i).as_bytes();
                $body
            }
            DataType::LargeUtf8 => {
                let a = arr.as_string::<i64>();
                let $get = |i: usize| a.value(i).as_bytes();
                $body
            }
            DataType::Utf8View => {
                let a = arr.as_string_view();
                let $get = |i: usize| a.value(i).as_bytes();
                $body
            }
            DataType::Binary => {
                let a = arr.as_binary::<i32>();
                let $get = |i: usize| a.value(i);
                $body
            }
            DataType::LargeBinary => {
                let a = arr.as_binary::<i64>();
                let $get = |i: usize| a.value(i);
                $body
            }
            DataType::BinaryView => {
                let a = arr.as_binary_view();
                let $get = |i: usize| a.value(i);
                $body
            }
            dt => unreachable!("byte type checked before, got {dt}"),
        }
    }};
}

/// The raw i64 counts of a timestamp array of any unit.
pub(crate) fn timestamp_values(arr: &dyn Array) -> &[i64] {
    match arr.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => arr.as_primitive::<TimestampSecondType>().values(),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            arr.as_primitive::<TimestampMillisecondType>().values()
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            arr.as_primitive::<TimestampMicrosecondType>().values()
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            arr.as_primitive::<TimestampNanosecondType>().values()
        }
        dt => unreachable!("timestamp type checked before, got {dt}"),
    }
}

/// Calls `f(chunk, first row within the chunk, out)` on pieces of `out` that line up with the chunks of a
/// column, in parallel. `out` has one slot per row of the whole column.
pub(crate) fn par_chunks<T: Send>(
    chunks: &[ArrayRef],
    out: &mut [T],
    f: impl Fn(&dyn Array, usize, &mut [T]) + Sync,
) {
    const TASK: usize = 1 << 16;
    let mut tasks = Vec::new();
    let mut rest = out;
    for c in chunks {
        let mut local = 0;
        while local < c.len() {
            let m = TASK.min(c.len() - local);
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(m);
            tasks.push((c.as_ref(), local, head));
            rest = tail;
            local += m;
        }
    }
    tasks.into_par_iter().for_each(|(c, local, out)| f(c, local, out));
}

/// Group ids of both sides: `right[i]`/`left[j]` in `0..n_groups` or [`NONE`].
#[derive(Debug)]
pub struct GroupIds {
    pub right: Vec<u32>,
    pub left: Vec<u32>,
    pub n_groups: usize,
}

/// Checks that the key columns of the two sides can be compared, then assigns group ids.
/// `keys` holds (left column, right column) pairs; no keys means one group holding every row.
pub fn group_ids(keys: &[(Column, Column)], n_left: usize, n_right: usize) -> Result<GroupIds> {
    let mut kinds = Vec::with_capacity(keys.len());
    for (l, r) in keys {
        let kl = key_kind(&l.name, &l.data_type, "left")?;
        let kr = key_kind(&r.name, &r.data_type, "right")?;
        if kl != kr {
            return Err(Error::Dtype(format!(
                "key column {:?} is {} on the left but {} on the right; both sides must be integers of \
                 the same signedness, or both strings, or both binary. Cast one side to the other's type",
                l.name, l.data_type, r.data_type
            )));
        }
        kinds.push(kl);
    }
    // Row positions are u32 throughout the kernel (NONE = u32::MAX is reserved).
    for (n, what, fix) in [
        (n_right, "right", "Split it by key"),
        (n_left, "left", "Join it in slices"),
    ] {
        if n >= NONE as usize {
            return Err(Error::InvalidArgument(format!(
                "the {what} table has {n} rows; at most {} are supported. {fix}",
                NONE - 1
            )));
        }
    }
    let mut acc: Option<GroupIds> = None;
    for ((l, r), kind) in keys.iter().zip(kinds) {
        let ids = match kind {
            KeyKind::Signed | KeyKind::Unsigned => int_ids(l, r, n_left, n_right),
            KeyKind::Text | KeyKind::Bytes => bytes_ids(l, r, n_left, n_right),
        };
        acc = Some(match acc {
            None => ids,
            Some(prev) => combine(prev, ids),
        });
    }
    Ok(acc.unwrap_or_else(|| GroupIds {
        right: vec![0; n_right],
        left: vec![0; n_left],
        n_groups: 1,
    }))
}

fn int_ids(l: &Column, r: &Column, n_left: usize, n_right: usize) -> GroupIds {
    let (lo, hi) = r
        .chunks
        .par_iter()
        .map(|c| {
            with_int!(c.as_ref(), a => {
                let mut lo = u64::MAX;
                let mut hi = 0u64;
                for (i, v) in a.values().iter().enumerate() {
                    if a.is_valid(i) {
                        let k = v.ord_u64();
                        lo = lo.min(k);
                        hi = hi.max(k);
                    }
                }
                (lo, hi)
            })
        })
        .reduce(|| (u64::MAX, 0), |a, b| (a.0.min(b.0), a.1.max(b.1)));
    let mut right = vec![NONE; n_right];
    let mut left = vec![NONE; n_left];
    if lo > hi {
        // No non-null key on the right: nothing can match.
        return GroupIds {
            right,
            left,
            n_groups: 0,
        };
    }
    let range = hi - lo;
    if range <= 2 * n_right as u64 + 1024 {
        let fill = |c: &dyn Array, local: usize, out: &mut [u32]| {
            with_int!(c, a => {
                let vals = &a.values()[local..local + out.len()];
                for (k, (o, v)) in out.iter_mut().zip(vals).enumerate() {
                    let key = v.ord_u64();
                    let hit = a.is_valid(local + k) && key >= lo && key <= hi;
                    *o = if hit { (key - lo) as u32 } else { NONE };
                }
            })
        };
        par_chunks(&r.chunks, &mut right, fill);
        par_chunks(&l.chunks, &mut left, fill);
        return GroupIds {
            right,
            left,
            n_groups: range as usize + 1,
        };
    }
    let mut map: FastMap<u64> = FastMap::default();
    let mut row = 0;
    for c in &r.chunks {
        with_int!(c.as_ref(), a => {
            for (i, v) in a.values().iter().enumerate() {
                if a.is_valid(i) {
                    let next = map.len() as u32;
                    right[row + i] = *map.entry(v.ord_u64()).or_insert(next);
                }
            }
        });
        row += c.len();
    }
    par_chunks(&l.chunks, &mut left, |c, local, out| {
        with_int!(c, a => {
            for (k, o) in out.iter_mut().enumerate() {
                let i = local + k;
                if a.is_valid(i) {
                    *o = map.get(&a.value(i).ord_u64()).copied().unwrap_or(NONE);
                }
            }
        })
    });
    GroupIds {
        right,
        left,
        n_groups: map.len(),
    }
}

fn bytes_ids(l: &Column, r: &Column, n_left: usize, n_right: usize) -> GroupIds {
    let mut right = vec![NONE; n_right];
    let mut left = vec![NONE; n_left];
    let mut map: FastMap<&[u8]> = FastMap::default();
    let mut row = 0;
    for c in &r.chunks {
        with_bytes!(c.as_ref(), get => {
            for i in 0..c.len() {
                if c.is_valid(i) {
                    let next = map.len() as u32;
                    right[row + i] = *map.entry(get(i)).or_insert(next);
                }
            }
        });
        row += c.len();
    }
    par_chunks(&l.chunks, &mut left, |c, local, out| {
        with_bytes!(c, get => {
            for (k, o) in out.iter_mut().enumerate() {
                let i = local + k;
                if c.is_valid(i) {
                    *o = map.get(get(i)).copied().unwrap_or(NONE);
                }
            }
        })
    });
    GroupIds {
        right,
        left,
        n_groups: map.len(),
    }
}

/// Ids of the composite key (a, b) from the ids of its parts.
fn combine(a: GroupIds, b: GroupIds) -> GroupIds {
    let pair = |x: u32, y: u32| ((x as u64) << 32) | y as u64;
    let mut map: FastMap<u64> = FastMap::default();
    let right: Vec<u32> = a
        .right
        .iter()
        .zip(&b.right)
        .map(|(&x, &y)| {
            if x == NONE || y == NONE {
                return NONE;
            }
            let next = map.len() as u32;
            *map.entry(pair(x, y)).or_insert(next)
        })
        .collect();
    let left: Vec<u32> = a
        .left
        .par_iter()
        .zip(&b.left)
        .map(|(&x, &y)| {
            if x == NONE || y == NONE {
                NONE
            } else {
                map.get(&pair(x, y)).copied().unwrap_or(NONE)
            }
        })
        .collect();
    GroupIds {
        right,
        left,
        n_groups: map.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, LargeStringArray, StringArray, UInt64Array};
    use std::sync::Arc;

    fn col(name: &str, chunks: Vec<ArrayRef>) -> Column {
        Column {
            name: name.into(),
            data_type: chunks[0].data_type().clone(),
            chunks,
        }
    }

    /// Two rows get the same id exactly when their keys are equal (ids are an injective relabeling).
    fn assert_same_partition(ids: &GroupIds, lkeys: &[Option<i64>], rkeys: &[Option<i64>]) {
        for (i, rk) in rkeys.iter().enumerate() {
            assert_eq!(ids.right[i] == NONE, rk.is_none());
            for (j, lk) in lkeys.iter().enumerate() {
                let same = rk.is_some() && rk == lk;
                assert_eq!(
                    same,
                    ids.right[i] != NONE && ids.right[i] == ids.left[j],
                    "r{i} l{j}"
                );
            }
        }
    }

    #[test]
    fn dense_int_keys_use_offsets_from_the_minimum() {
        let r = col(
            "k",
            vec![Arc::new(Int64Array::from(vec![Some(5), None, Some(7), Some(5)]))],
        );
        let l = col(
            "k",
            vec![Arc::new(Int64Array::from(vec![
                Some(7),
                Some(4),
                None,
                Some(5),
                Some(99),
            ]))],
        );
        let ids = group_ids(&[(l, r)], 5, 4).unwrap();
        assert_eq!(ids.right, vec![0, NONE, 2, 0]);
        assert_eq!(ids.left, vec![2, NONE, NONE, 0, NONE]);
        assert_eq!(ids.n_groups, 3);
    }

    #[test]
    fn sparse_int_keys_hash_and_widths_mix() {
        let rk = [Some(-1i64 << 40), Some(3), None, Some(1 << 50), Some(3)];
        let lk = [Some(3i64), Some(1 << 50), Some(8), None, Some(-1 << 40)];
        let r = col(
            "k",
            vec![
                Arc::new(Int64Array::from(rk[..2].to_vec())),
                Arc::new(Int64Array::from(rk[2..].to_vec())),
            ],
        );
        let l = col("k", vec![Arc::new(Int64Array::from(lk.to_vec()))]);
        let ids = group_ids(&[(l, r)], 5, 5).unwrap();
        assert_eq!(ids.n_groups, 3);
        assert_same_partition(&ids, &lk, &rk);
        // int32 against int64 is the same family.
        let r = col("k", vec![Arc::new(Int32Array::from(vec![1, 2]))]);
        let l = col("k", vec![Arc::new(Int64Array::from(vec![2, 1, 3]))]);
        let ids = group_ids(&[(l, r)], 3, 2).unwrap();
        assert_eq!(ids.left, vec![ids.right[1], ids.right[0], NONE]);
    }

    #[test]
    fn signedness_and_kind_mismatches_are_dtype_errors() {
        let r = col("k", vec![Arc::new(UInt64Array::from(vec![1u64]))]);
        let l = col("k", vec![Arc::new(Int64Array::from(vec![1i64]))]);
        assert!(matches!(group_ids(&[(l, r)], 1, 1), Err(Error::Dtype(_))));
        let r = col("k", vec![Arc::new(StringArray::from(vec!["a"]))]);
        let l = col("k", vec![Arc::new(Int64Array::from(vec![1i64]))]);
        assert!(matches!(group_ids(&[(l, r)], 1, 1), Err(Error::Dtype(_))));
        let f = col("k", vec![Arc::new(arrow::array::Float64Array::from(vec![1.0]))]);
        assert!(matches!(group_ids(&[(f.clone(), f)], 1, 1), Err(Error::Dtype(_))));
    }

    #[test]
    fn strings_of_both_layouts_and_composites() {
        let r1 = col(
            "s",
            vec![Arc::new(StringArray::from(vec![
                Some("a"),
                Some("b"),
                None,
                Some("a"),
            ]))],
        );
        let l1 = col(
            "s",
            vec![Arc::new(LargeStringArray::from(vec![
                Some("b"),
                Some("a"),
                Some("a"),
                Some("c"),
            ]))],
        );
        let r2 = col("n", vec![Arc::new(Int64Array::from(vec![1, 1, 1, 2]))]);
        let l2 = col(
            "n",
            vec![Arc::new(Int64Array::from(vec![Some(1), Some(2), None, Some(1)]))],
        );
        let ids = group_ids(&[(l1.clone(), r1.clone())], 4, 4).unwrap();
        assert_eq!(ids.left, vec![ids.right[1], ids.right[0], ids.right[0], NONE]);
        let ids = group_ids(&[(l1, r1), (l2, r2)], 4, 4).unwrap();
        // right keys: (a,1) (b,1) (null,1) (a,2); left: (b,1) (a,2) (a,null) (c,1)
        assert_eq!(ids.right[2], NONE);
        assert_ne!(ids.right[0], ids.right[3]);
        assert_eq!(ids.left, vec![ids.right[1], ids.right[3], NONE, NONE]);
        assert_eq!(ids.n_groups, 3);
    }

    #[test]
    fn sorted_keys_get_non_decreasing_ids_on_the_hash_path() {
        let r = col(
            "s",
            vec![Arc::new(StringArray::from(vec!["a", "a", "b", "c", "c"]))],
        );
        let ids = group_ids(&[(r.clone(), r)], 5, 5).unwrap();
        assert!(ids.right.windows(2).all(|w| w[0] <= w[1]));
    }
}
