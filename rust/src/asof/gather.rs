//! Builds the right side's output columns from the match positions: only the rows that matched are read,
//! and only the columns that are output.

use arrow::array::{new_null_array, Array, ArrayRef, UInt32Array};
use arrow::buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use arrow::compute::{interleave, take};
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

/// The output columns, one per entry of `columns` (each the chunks of one right column), in parallel.
pub fn gather(columns: &[(DataType, Vec<ArrayRef>)], plan: &Plan, n_out: usize) -> Result<Vec<ArrayRef>> {
    columns
        .par_iter()
        .map(|(dt, chunks)| -> Result<ArrayRef> {
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
        })
        .collect()
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
    fn an_empty_right_gives_nulls() {
        let out = gather(&[(DataType::Utf8, vec![])], &Plan::new(&[NONE, NONE], &[]), 2).unwrap();
        assert_eq!(out[0].null_count(), 2);
        let s: ArrayRef = Arc::new(StringArray::from(vec!["a"]));
        let out = gather(&[(DataType::Utf8, vec![s])], &Plan::new(&[NONE, 0], &[1]), 2).unwrap();
        assert_eq!(out[0].as_string::<i32>().value(1), "a");
        assert!(out[0].is_null(0));
    }
}
