//! Rows partitioned by a group number in one pass: the table's rows reordered so that each group's rows
//! are contiguous (groups in increasing number, rows of a group in their input order), and the row
//! count of every group. What `skewless.spark` does to a task's rows before it writes one Arrow IPC
//! stream per group: before, a numpy argsort of the group numbers and a pyarrow `take` over the
//! concatenated chunks (about a third of a history staging task's CPU time).
//!
//! A stable counting sort: each input row's destination is its group's start plus the rows of its group
//! seen before it. Fixed-width columns are scattered straight from their chunks (read in order, written
//! to `n` moving cursors: for the few tens of buckets a task has, as cache-friendly as a copy); other
//! types are gathered by Arrow's `interleave` over the chunks, never concatenated first.

use std::sync::Arc;

use arrow::array::{
    downcast_primitive, new_empty_array, Array, ArrayRef, ArrowPrimitiveType, AsArray, PrimitiveArray,
    RecordBatch,
};
use arrow::buffer::NullBuffer;
use arrow::compute::interleave;
use arrow::datatypes::DataType;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::group::check_count;
use crate::table::Table;

/// The rows of `table` ordered by `groups` (one number in `0..n` per row, chunked any way), stably,
/// as one batch, and the rows of each group (`n` counts).
pub fn partition(table: &Table, groups: &[&[i32]], n: usize) -> Result<(RecordBatch, Vec<u64>)> {
    let rows = table.num_rows();
    let given: usize = groups.iter().map(|g| g.len()).sum();
    if given != rows {
        return Err(Error::InvalidArgument(format!(
            "{given} group numbers for a table of {rows} rows; give one per row"
        )));
    }
    check_count(rows, "the table to partition", "rows")?;
    let mut counts = vec![0u64; n];
    for &g in groups.iter().flat_map(|c| c.iter()) {
        match usize::try_from(g).ok().filter(|&g| g < n) {
            Some(g) => counts[g] += 1,
            None => {
                return Err(Error::InvalidArgument(format!(
                    "group number {g} is outside 0..{n}; number the groups from 0 and pass their count"
                )))
            }
        }
    }
    // Each row's destination: its group's next free slot (rows fit u32: checked above).
    let mut next: Vec<u32> = Vec::with_capacity(n);
    let mut acc = 0u64;
    for &c in &counts {
        next.push(acc as u32);
        acc += c;
    }
    let dest: Vec<u32> = groups
        .iter()
        .flat_map(|c| c.iter())
        .map(|&g| {
            let slot = &mut next[g as usize];
            let d = *slot;
            *slot += 1;
            d
        })
        .collect();
    let columns = (0..table.schema.fields().len())
        .into_par_iter()
        .map(|i| {
            let chunks: Vec<ArrayRef> = table.batches.iter().map(|b| b.column(i).clone()).collect();
            reorder(&chunks, &dest, table.schema.field(i).data_type())
        })
        .collect::<Result<Vec<_>>>()?;
    let batch = RecordBatch::try_new(table.schema.clone(), columns)
        .map_err(|e| Error::Internal(format!("partitioned columns do not form a batch: {e}")))?;
    Ok((batch, counts))
}

/// `scatter` for the primitive type `$t` (the arm `downcast_primitive!` expands for each type).
macro_rules! scatter_as {
    ($t:ty, $chunks:expr, $dest:expr, $dt:expr) => {
        scatter::<$t>($chunks, $dest, $dt)
    };
}

/// One column's rows moved to `dest` (a permutation of `0..dest.len()`): every fixed-width primitive
/// type (integers, floats, decimals, dates, times, timestamps, durations, intervals) scattered, the
/// rest gathered.
fn reorder(chunks: &[ArrayRef], dest: &[u32], dt: &DataType) -> Result<ArrayRef> {
    downcast_primitive! {
        dt => (scatter_as, chunks, dest, dt),
        _ => gather(chunks, dest, dt),
    }
}

/// Any other type (strings, lists, booleans, ...): Arrow's `interleave` over the chunks, each output
/// slot naming its (chunk, row).
fn gather(chunks: &[ArrayRef], dest: &[u32], dt: &DataType) -> Result<ArrayRef> {
    if chunks.is_empty() {
        return Ok(new_empty_array(dt));
    }
    let mut order = vec![(0usize, 0usize); dest.len()];
    let mut row = 0;
    for (ci, c) in chunks.iter().enumerate() {
        for (i, &to) in dest[row..row + c.len()].iter().enumerate() {
            order[to as usize] = (ci, i);
        }
        row += c.len();
    }
    let refs: Vec<&dyn Array> = chunks.iter().map(|c| c.as_ref()).collect();
    interleave(&refs, &order).map_err(|e| Error::Internal(format!("reordering a {dt} column failed: {e}")))
}

fn scatter<T: ArrowPrimitiveType>(chunks: &[ArrayRef], dest: &[u32], dt: &DataType) -> Result<ArrayRef> {
    let total = dest.len();
    let mut values = vec![T::Native::default(); total];
    let any_null = chunks.iter().any(|c| c.null_count() > 0);
    let mut valid = if any_null { vec![true; total] } else { Vec::new() };
    let mut row = 0;
    for c in chunks {
        let a = c
            .as_primitive_opt::<T>()
            .ok_or_else(|| Error::Internal(format!("a chunk of a {dt} column is a {}", c.data_type())))?;
        let d = &dest[row..row + a.len()];
        for (&v, &to) in a.values().iter().zip(d) {
            values[to as usize] = v;
        }
        if let Some(nulls) = a.nulls() {
            for (i, &to) in d.iter().enumerate() {
                valid[to as usize] = nulls.is_valid(i);
            }
        }
        row += a.len();
    }
    let nulls = any_null.then(|| NullBuffer::from(valid));
    Ok(Arc::new(
        PrimitiveArray::<T>::new(values.into(), nulls).with_data_type(dt.clone()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BooleanArray, Decimal128Array, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    use arrow::compute::{concat, take};
    use arrow::datatypes::{Field, Schema};

    /// `len` rows in `parts` chunks: int64, float64 with nulls, a UTC timestamp, strings with nulls,
    /// booleans, a decimal with nulls (a primitive type of 16 bytes and a parameter); and a group number
    /// per row from a small LCG.
    fn input(len: usize, parts: usize, n: usize, seed: u64) -> (Table, Vec<Vec<i32>>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("x", DataType::Float64, true),
            Field::new(
                "t",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("s", DataType::Utf8, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("d", DataType::Decimal128(20, 3), true),
        ]));
        let mut state = seed;
        let mut rnd = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        let mut batches = Vec::new();
        let mut groups = Vec::new();
        let mut at = 0;
        for p in 0..parts {
            let m = if p + 1 == parts { len - at } else { len / parts };
            let rows: Vec<usize> = (at..at + m).collect();
            let cols: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|&r| r as i64))),
                Arc::new(Float64Array::from_iter(
                    rows.iter().map(|&r| (r % 3 != 0).then_some(r as f64 / 2.0)),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from_iter(
                        rows.iter().map(|&r| (r % 5 != 0).then_some(r as i64 * 7)),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from_iter(
                    rows.iter().map(|&r| (r % 4 != 1).then(|| format!("v{r}"))),
                )),
                Arc::new(BooleanArray::from_iter(
                    rows.iter().map(|&r| (r % 6 != 2).then_some(r % 2 == 0)),
                )),
                Arc::new(
                    Decimal128Array::from_iter(
                        rows.iter().map(|&r| (r % 7 != 3).then_some(r as i128 * -1_001)),
                    )
                    .with_precision_and_scale(20, 3)
                    .unwrap(),
                ),
            ];
            batches.push(RecordBatch::try_new(schema.clone(), cols).unwrap());
            groups.push((0..m).map(|_| (rnd() % n) as i32).collect());
            at += m;
        }
        (Table::new(schema, batches), groups)
    }

    /// The oracle: a stable sort of the row positions by group, then Arrow's `take` on the concatenated
    /// columns.
    fn oracle(t: &Table, groups: &[Vec<i32>], n: usize) -> (Vec<ArrayRef>, Vec<u64>) {
        let flat: Vec<i32> = groups.iter().flatten().copied().collect();
        let mut order: Vec<u32> = (0..flat.len() as u32).collect();
        order.sort_by_key(|&i| flat[i as usize]);
        let idx = arrow::array::UInt32Array::from(order);
        let cols = (0..t.schema.fields().len())
            .map(|i| {
                let chunks: Vec<&dyn Array> = t.batches.iter().map(|b| b.column(i).as_ref()).collect();
                take(&concat(&chunks).unwrap(), &idx, None).unwrap()
            })
            .collect();
        let mut counts = vec![0u64; n];
        for g in flat {
            counts[g as usize] += 1;
        }
        (cols, counts)
    }

    #[test]
    fn matches_a_stable_sort_and_take() {
        for (len, parts, n, seed) in [
            (1000, 3, 16, 1),
            (257, 1, 1, 2),
            (50, 5, 200, 3),
            (0, 1, 4, 4),
            (9, 9, 2, 5),
        ] {
            let (t, groups) = input(len, parts, n, seed);
            let refs: Vec<&[i32]> = groups.iter().map(|g| g.as_slice()).collect();
            let (got, counts) = partition(&t, &refs, n).unwrap();
            let (want, want_counts) = oracle(&t, &groups, n);
            assert_eq!(counts, want_counts);
            assert_eq!(got.num_rows(), len);
            for (i, w) in want.iter().enumerate() {
                assert_eq!(
                    got.column(i).to_data(),
                    w.to_data(),
                    "column {i}, case {len}/{parts}/{n}"
                );
            }
            assert_eq!(got.schema(), t.schema);
        }
    }

    #[test]
    fn refuses_bad_group_numbers() {
        let (t, mut groups) = input(10, 2, 4, 7);
        groups[1][0] = 4;
        let refs: Vec<&[i32]> = groups.iter().map(|g| g.as_slice()).collect();
        assert!(
            matches!(partition(&t, &refs, 4), Err(Error::InvalidArgument(m)) if m.contains("outside 0..4"))
        );
        groups[1][0] = -1;
        let refs: Vec<&[i32]> = groups.iter().map(|g| g.as_slice()).collect();
        assert!(matches!(partition(&t, &refs, 4), Err(Error::InvalidArgument(_))));
        let short: Vec<&[i32]> = vec![&groups[0]];
        assert!(
            matches!(partition(&t, &short, 4), Err(Error::InvalidArgument(m)) if m.contains("one per row"))
        );
    }
}
