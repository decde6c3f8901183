//! Key columns -> dense group ids (u32), one dictionary built from one side (`build`) and, for a join,
//! looked up by the other (`probe`).
//!
//! Ids are what the index partitions rows by and what a probe row looks its group up with, so the keys
//! themselves are read once and never copied. Two ways to get them:
//! - a single integer key whose range on the build side is small: id = key - min (no hashing at all);
//! - otherwise a hash map from the key (an order-preserving u64, or the key's bytes) to the next free id,
//!   filled in build-row order. Composite keys are combined column by column through a map from the pair
//!   (id so far, id of the next column) to a new id.
//!
//! Either way a build side sorted by its key gets non-decreasing ids, which keeps the index build's
//! scatter a straight copy. A null anywhere in a key gives [`NONE`]: that row is in no group.

use arrow::array::{Array, ArrayRef};
use arrow::datatypes::*;
use hashbrown::HashMap;
use rayon::prelude::*;

use super::{check_count, NONE};
use crate::column::{par_chunks, with_bytes, with_int, OrdU64};
use crate::error::{Error, Result};
use crate::table::Column;

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
                 binary column. Cast it (e.g. to int64 or string) first"
            )))
        }
    })
}

/// Group ids of both sides of a join: `build[i]`/`probe[j]` in `0..n_groups` or [`NONE`].
#[derive(Debug)]
pub struct GroupIds {
    pub build: Vec<u32>,
    pub probe: Vec<u32>,
    pub n_groups: usize,
}

/// Checks that the key columns of the two sides can be compared, then assigns group ids from the
/// build side. `keys` holds (probe column, build column) pairs; no keys means one group holding every
/// row. More than `u32::MAX - 1` rows on either side is an `InvalidArgument` error.
pub fn group_ids(keys: &[(Column, Column)], n_probe: usize, n_build: usize) -> Result<GroupIds> {
    let mut kinds = Vec::with_capacity(keys.len());
    for (l, r) in keys {
        let kl = key_kind(&l.name, &l.data_type, "the left table")?;
        let kr = key_kind(&r.name, &r.data_type, "the right table")?;
        if kl != kr {
            return Err(Error::Dtype(format!(
                "key column {:?} is {} on the left but {} on the right; both sides must be integers of \
                 the same signedness, or both strings, or both binary. Cast one side to the other's type",
                l.name, l.data_type, r.data_type
            )));
        }
        kinds.push(kl);
    }
    check_count(n_build, "the right table", "rows")?;
    check_count(n_probe, "the left table", "rows")?;
    let mut acc: Option<GroupIds> = None;
    for ((l, r), kind) in keys.iter().zip(kinds) {
        let ids = match kind {
            KeyKind::Signed | KeyKind::Unsigned => int_ids(&l.chunks, &r.chunks, n_probe, n_build),
            KeyKind::Text | KeyKind::Bytes => bytes_ids(&l.chunks, &r.chunks, n_probe, n_build),
        };
        acc = Some(match acc {
            None => ids,
            Some(prev) => combine(prev, ids),
        });
    }
    Ok(acc.unwrap_or_else(|| GroupIds {
        build: vec![0; n_build],
        probe: vec![0; n_probe],
        n_groups: 1,
    }))
}

/// Group ids of one table's rows (`n` of them) by `keys`: `(ids, n_groups)`, ids in `0..n_groups` or
/// [`NONE`] for a row with a null key. No keys means one group.
pub fn group_ids_of(keys: &[Column], n: usize) -> Result<(Vec<u32>, usize)> {
    let none: Vec<ArrayRef> = Vec::new();
    let mut pairs = Vec::with_capacity(keys.len());
    for k in keys {
        key_kind(&k.name, &k.data_type, "the table")?;
        pairs.push((
            Column {
                name: k.name.clone(),
                data_type: k.data_type.clone(),
                chunks: none.clone(),
            },
            k.clone(),
        ));
    }
    let ids = group_ids(&pairs, 0, n)?;
    Ok((ids.build, ids.n_groups))
}

fn int_ids(probe: &[ArrayRef], build: &[ArrayRef], n_probe: usize, n_build: usize) -> GroupIds {
    let (lo, hi) = build
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
    let mut right = vec![NONE; n_build];
    let mut left = vec![NONE; n_probe];
    if lo > hi {
        // No non-null key on the build side: nothing can match.
        return GroupIds {
            build: right,
            probe: left,
            n_groups: 0,
        };
    }
    let range = hi - lo;
    // Offsets are ids only while every one of them stays below NONE.
    if range <= 2 * n_build as u64 + 1024 && range < NONE as u64 {
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
        par_chunks(build, &mut right, fill);
        par_chunks(probe, &mut left, fill);
        return GroupIds {
            build: right,
            probe: left,
            n_groups: range as usize + 1,
        };
    }
    let mut map: FastMap<u64> = FastMap::default();
    let mut row = 0;
    for c in build {
        with_int!(c.as_ref(), a => {
            for (i, v) in a.values().iter().enumerate() {
                if a.is_valid(i) {
                    // At most one id per row, and rows were checked to be fewer than NONE.
                    let next = map.len() as u32;
                    right[row + i] = *map.entry(v.ord_u64()).or_insert(next);
                }
            }
        });
        row += c.len();
    }
    par_chunks(probe, &mut left, |c, local, out| {
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
        build: right,
        probe: left,
        n_groups: map.len(),
    }
}

fn bytes_ids(probe: &[ArrayRef], build: &[ArrayRef], n_probe: usize, n_build: usize) -> GroupIds {
    let mut right = vec![NONE; n_build];
    let mut left = vec![NONE; n_probe];
    let mut map: FastMap<&[u8]> = FastMap::default();
    let mut row = 0;
    for c in build {
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
    par_chunks(probe, &mut left, |c, local, out| {
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
        build: right,
        probe: left,
        n_groups: map.len(),
    }
}

/// Ids of the composite key (a, b) from the ids of its parts.
fn combine(a: GroupIds, b: GroupIds) -> GroupIds {
    let pair = |x: u32, y: u32| ((x as u64) << 32) | y as u64;
    let mut map: FastMap<u64> = FastMap::default();
    let build: Vec<u32> = a
        .build
        .iter()
        .zip(&b.build)
        .map(|(&x, &y)| {
            if x == NONE || y == NONE {
                return NONE;
            }
            let next = map.len() as u32;
            *map.entry(pair(x, y)).or_insert(next)
        })
        .collect();
    let probe: Vec<u32> = a
        .probe
        .par_iter()
        .zip(&b.probe)
        .map(|(&x, &y)| {
            if x == NONE || y == NONE {
                NONE
            } else {
                map.get(&pair(x, y)).copied().unwrap_or(NONE)
            }
        })
        .collect();
    GroupIds {
        build,
        probe,
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
            assert_eq!(ids.build[i] == NONE, rk.is_none());
            for (j, lk) in lkeys.iter().enumerate() {
                let same = rk.is_some() && rk == lk;
                assert_eq!(
                    same,
                    ids.build[i] != NONE && ids.build[i] == ids.probe[j],
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
        assert_eq!(ids.build, vec![0, NONE, 2, 0]);
        assert_eq!(ids.probe, vec![2, NONE, NONE, 0, NONE]);
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
        assert_eq!(ids.probe, vec![ids.build[1], ids.build[0], NONE]);
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
        assert!(matches!(
            group_ids(&[(f.clone(), f.clone())], 1, 1),
            Err(Error::Dtype(_))
        ));
        assert!(matches!(group_ids_of(&[f], 1), Err(Error::Dtype(_))));
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
        assert_eq!(ids.probe, vec![ids.build[1], ids.build[0], ids.build[0], NONE]);
        let ids = group_ids(&[(l1, r1.clone()), (l2, r2.clone())], 4, 4).unwrap();
        // right keys: (a,1) (b,1) (null,1) (a,2); left: (b,1) (a,2) (a,null) (c,1)
        assert_eq!(ids.build[2], NONE);
        assert_ne!(ids.build[0], ids.build[3]);
        assert_eq!(ids.probe, vec![ids.build[1], ids.build[3], NONE, NONE]);
        assert_eq!(ids.n_groups, 3);
        // One table alone gets the same partition as the build side of a join.
        let (one, n) = group_ids_of(&[r1, r2], 4).unwrap();
        assert_eq!((one, n), (ids.build, 3));
    }

    #[test]
    fn sorted_keys_get_non_decreasing_ids_on_the_hash_path() {
        let r = col(
            "s",
            vec![Arc::new(StringArray::from(vec!["a", "a", "b", "c", "c"]))],
        );
        let ids = group_ids(&[(r.clone(), r)], 5, 5).unwrap();
        assert!(ids.build.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn no_keys_is_one_group() {
        assert_eq!(group_ids_of(&[], 3).unwrap(), (vec![0, 0, 0], 1));
    }
}
