//! Builds the right side's output columns from the match positions: only the rows that matched are read,
//! and only the columns that are output.

use arrow::array::{new_null_array, Array, ArrayRef, AsArray, UInt32Array};
use arrow::buffer::{BooleanBuffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::{cast, interleave, take};
use arrow::datatypes::DataType;
use rayon::prelude::*;

use crate::error::Result;
use crate::group::NONE;

/// Where each left row's value comes from, prepared once and shared by every output column.
pub enum Plan {
    /// The right has one chunk (or none): `take` with null indices for the rows without a match.
    Take(UInt32Array),
    /// Several chunks: (chunk, row) pairs for `interleave`; rows without a match point at an extra
    /// one-row null array placed after the chunks.
    Interleave(Vec<(usize, usize)>),
}

impl Plan {
    pub fn new(positions: &[u32], chunk_lens: &[usize]) -> Plan {
        if chunk_lens.len() <= 1 {
            let values: ScalarBuffer<u32> =
                positions.iter().map(|&p| if p == NONE { 0 } else { p }).collect();
            let valid = BooleanBuffer::collect_bool(positions.len(), |i| positions[i] != NONE);
            return Plan::Take(UInt32Array::new(values, Some(NullBuffer::new(valid))));
        }
        let mut starts = Vec::with_capacity(chunk_lens.len());
        let mut n = 0;
        for &l in chunk_lens {
            starts.push(n);
            n += l;
        }
        let null_chunk = chunk_lens.len();
        let pairs = positions
            .par_iter()
            .map(|&p| {
                if p == NONE {
                    return (null_chunk, 0);
                }
                let p = p as usize;
                let c = starts.partition_point(|&s| s <= p) - 1;
                (c, p - starts[c])
            })
            .collect();
        Plan::Interleave(pairs)
    }
}

/// The most bytes a string or binary column with 32-bit offsets can hold.
const MAX_SMALL_BYTES: usize = i32::MAX as usize;

/// The output columns, one per entry of `columns` (each the chunks of one right column), in parallel.
/// A string or binary column whose output would hold more than 2 GiB (a right value matched by many
/// left rows repeats its bytes) comes out as large_string / large_binary (64-bit offsets); others keep
/// their type.
pub fn gather(columns: &[(DataType, Vec<ArrayRef>)], plan: &Plan, n_out: usize) -> Result<Vec<ArrayRef>> {
    gather_within(columns, plan, n_out, MAX_SMALL_BYTES)
}

/// [`gather`] with the byte limit of a 32-bit-offset column as a parameter (tests use a small one).
fn gather_within(
    columns: &[(DataType, Vec<ArrayRef>)],
    plan: &Plan,
    n_out: usize,
    limit: usize,
) -> Result<Vec<ArrayRef>> {
    columns
        .par_iter()
        .map(|(dt, chunks)| -> Result<ArrayRef> {
            let large = match dt {
                DataType::Utf8 => Some(DataType::LargeUtf8),
                DataType::Binary => Some(DataType::LargeBinary),
                _ => None,
            };
            if let Some(large) = large.filter(|_| output_bytes(chunks, plan) > limit) {
                let wide = chunks
                    .iter()
                    .map(|c| cast(c.as_ref(), &large))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                return gather_one(&large, &wide, plan, n_out);
            }
            gather_one(dt, chunks, plan, n_out)
        })
        .collect()
}

/// The bytes the gathered column would hold (an upper bound: a null value's bytes count too).
fn output_bytes(chunks: &[ArrayRef], plan: &Plan) -> usize {
    let offsets: Vec<Option<&OffsetBuffer<i32>>> = chunks
        .iter()
        .map(|c| match c.data_type() {
            DataType::Utf8 => Some(c.as_string::<i32>().offsets()),
            DataType::Binary => Some(c.as_binary::<i32>().offsets()),
            _ => None,
        })
        .collect();
    let len = |c: usize, r: usize| -> usize {
        offsets
            .get(c)
            .copied()
            .flatten()
            .map_or(0, |o| (o[r + 1] - o[r]) as usize)
    };
    match plan {
        Plan::Take(idx) => idx.iter().flatten().map(|r| len(0, r as usize)).sum(),
        Plan::Interleave(pairs) => pairs.iter().map(|&(c, r)| len(c, r)).sum(),
    }
}

fn gather_one(dt: &DataType, chunks: &[ArrayRef], plan: &Plan, n_out: usize) -> Result<ArrayRef> {
    Ok(match plan {
        Plan::Take(idx) => match chunks.first() {
            Some(c) => take(c.as_ref(), idx, None)?,
            None => new_null_array(dt, n_out),
        },
        Plan::Interleave(pairs) => {
            let null = new_null_array(dt, 1);
            let mut arrays: Vec<&dyn Array> = chunks.iter().map(|c| c.as_ref()).collect();
            arrays.push(null.as_ref());
            interleave(&arrays, pairs)?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Float64Array, StringArray};
    use arrow::datatypes::Float64Type;
    use std::sync::Arc;

    #[test]
    fn take_and_interleave_give_the_same_rows() {
        let whole: ArrayRef = Arc::new(Float64Array::from(vec![Some(0.5), None, Some(2.5), Some(3.5)]));
        let parts: Vec<ArrayRef> = vec![whole.slice(0, 3), whole.slice(3, 1), whole.slice(4, 0)];
        let positions = [3, NONE, 0, 1, 2];
        let one = gather(
            &[(DataType::Float64, vec![whole.clone()])],
            &Plan::new(&positions, &[4]),
            5,
        )
        .unwrap();
        let many = gather(
            &[(DataType::Float64, parts)],
            &Plan::new(&positions, &[3, 1, 0]),
            5,
        )
        .unwrap();
        let expect = Float64Array::from(vec![Some(3.5), None, Some(0.5), None, Some(2.5)]);
        assert_eq!(one[0].as_primitive::<Float64Type>(), &expect);
        assert_eq!(many[0].as_primitive::<Float64Type>(), &expect);
    }

    #[test]
    fn strings_past_the_32_bit_limit_come_out_with_64_bit_offsets() {
        let whole: ArrayRef = Arc::new(StringArray::from(vec![Some("abc"), None, Some("de")]));
        let parts = vec![whole.slice(0, 2), whole.slice(2, 1)];
        let positions = [0, 0, NONE, 2, 1];
        // 3 + 3 + 2 bytes: within a limit of 8 the type stays, past 7 it widens; rows are the same.
        for (chunks, lens) in [(vec![whole.clone()], vec![3]), (parts, vec![2, 1])] {
            let plan = Plan::new(&positions, &lens);
            let cols = [(DataType::Utf8, chunks)];
            let small = gather_within(&cols, &plan, 5, 8).unwrap();
            assert_eq!(small[0].data_type(), &DataType::Utf8);
            let large = gather_within(&cols, &plan, 5, 7).unwrap();
            assert_eq!(large[0].data_type(), &DataType::LargeUtf8);
            let back = cast(large[0].as_ref(), &DataType::Utf8).unwrap();
            assert_eq!(&back, &small[0]);
            let expect = StringArray::from(vec![Some("abc"), Some("abc"), None, Some("de"), None]);
            assert_eq!(small[0].as_string::<i32>(), &expect);
        }
        let bin: ArrayRef = Arc::new(arrow::array::BinaryArray::from(vec![&b"xyz"[..]]));
        let out = gather_within(&[(DataType::Binary, vec![bin])], &Plan::new(&[0, 0], &[1]), 2, 5).unwrap();
        assert_eq!(out[0].data_type(), &DataType::LargeBinary);
        assert_eq!(out[0].as_binary::<i64>().value(1), b"xyz");
    }

    #[test]
    fn an_empty_right_gives_nulls() {
        let out = gather(&[(DataType::Utf8, vec![])], &Plan::new(&[NONE, NONE], &[]), 2).unwrap();
        assert_eq!(out[0].null_count(), 2);
        let s: ArrayRef = Arc::new(StringArray::from(vec!["a"]));
        let out = gather(&[(DataType::Utf8, vec![s])], &Plan::new(&[NONE, 0], &[1]), 2).unwrap();
        assert_eq!(out[0].as_string::<i32>().value(1), "a");
        assert!(out[0].is_null(0));
    }
}
