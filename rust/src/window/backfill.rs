//! The training-set backfill over whole tables: for every label row (keys, instant t), each aggregation
//! over the events of the same keys in (t - window, t].
//!
//! Stages: key columns of both sides -> group ids (the as-of join's grouping); events grouped and
//! ordered by (time, sequence, position) once; labels grouped and ordered by time; then each group runs
//! [`super::sweep`] once, every distinct window a lane of it, in parallel across groups (each worker
//! reuses its lanes' accumulators from group to group). Rows whose key or time is null
//! belong to no group: an event is left out, a label gets the empty window (null; count 0).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::*;
use arrow::buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use arrow::compute::{cast, concat, take};
use arrow::datatypes::*;
use rayon::prelude::*;

use super::{accumulator, shares_state, sweep, Accumulator, Eval, Func, Lane, Values};
use crate::column::timestamp_values;
use crate::error::{Error, Result};
use crate::group::index::{entry, group_rows};
use crate::group::{entry_on, entry_pos, group_ids, mark_null_rows, Index, OnSource, Ranks, SharedMut, NONE};
use crate::pages::{advise_huge, filled, prefetch};
use crate::table::{Column, Table};
use crate::time::{instant_unit, to_micros};

/// One aggregate to compute: `func` of the events' `column` over `window_us`, output as `name`.
#[derive(Debug, Clone)]
pub struct Aggregation {
    pub column: String,
    pub func: Func,
    pub window_us: i64,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct WindowOptions {
    /// The instant column, on both sides (timezone-aware timestamps).
    pub on: String,
    /// Key columns, on both sides.
    pub by: Vec<String>,
    /// An integer column of the events ordering rows of equal time (a write sequence), for `first` and
    /// `last`; without it, input order.
    pub sequence: Option<String>,
    pub aggregations: Vec<Aggregation>,
}

/// Times of an instant column in UTC microseconds (floored), with NONE written into `ids` for nulls.
fn micros(c: &Column, what: &str, ids: &mut [u32]) -> Result<Vec<i64>> {
    let unit = instant_unit(&c.name, &c.data_type, what)?;
    let mut out = Vec::with_capacity(c.len());
    for chunk in &c.chunks {
        let base = out.len();
        for (i, &v) in timestamp_values(chunk.as_ref()).iter().enumerate() {
            if chunk.is_null(i) {
                ids[base + i] = NONE;
                out.push(0);
                continue;
            }
            out.push(to_micros(v, unit).ok_or_else(|| {
                Error::Dtype(format!(
                    "column {:?} of {what} holds an instant outside the range of int64 microseconds",
                    c.name
                ))
            })?);
        }
    }
    Ok(out)
}

/// The events' column for an aggregation, concatenated and widened to a layout the accumulators read.
fn value_column(c: &Column) -> Result<ArrayRef> {
    let parts: Vec<&dyn Array> = c.chunks.iter().map(|a| a.as_ref()).collect();
    let whole = if parts.is_empty() {
        new_empty_array(&c.data_type)
    } else {
        concat(&parts)?
    };
    widen(whole)
}

/// A value column widened to a layout the accumulators read (the online window state stores the same).
pub(crate) fn widen(whole: ArrayRef) -> Result<ArrayRef> {
    let target = match whole.data_type() {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => Some(DataType::Int64),
        DataType::Float32 => Some(DataType::Float64),
        DataType::Utf8View => Some(DataType::Utf8),
        _ => None,
    };
    Ok(match target {
        Some(t) => cast(&whole, &t)?,
        None => whole,
    })
}

/// One accumulator of a sweep: the aggregation it is built for, and every (aggregation, function) that
/// reads it.
type Shared = (usize, Vec<(usize, Func)>);

/// The values of `c` at the entries' positions, in entry order (in parallel for numbers).
fn gather(c: &ArrayRef, entries: &[u128]) -> Result<ArrayRef> {
    fn nums<T: ArrowPrimitiveType>(a: &PrimitiveArray<T>, entries: &[u128]) -> ArrayRef {
        let v = a.values();
        // Each read misses the cache (events arrive in any order): the row AHEAD entries on is
        // prefetched so that many misses are in flight at once.
        const AHEAD: usize = 16;
        let mut out = filled(entries.len());
        out.par_chunks_mut(1 << 14)
            .zip(entries.par_chunks(1 << 14))
            .for_each(|(o, e)| {
                for (i, x) in o.iter_mut().enumerate() {
                    if let Some(&f) = e.get(i + AHEAD) {
                        prefetch(v.as_ptr().wrapping_add(entry_pos(f) as usize) as *const u8);
                    }
                    *x = v[entry_pos(e[i]) as usize];
                }
            });
        let nulls = a.nulls().filter(|n| n.null_count() > 0).map(|n| {
            let mut ok = Vec::new();
            entries
                .par_iter()
                .map(|&e| n.is_valid(entry_pos(e) as usize))
                .collect_into_vec(&mut ok);
            NullBuffer::from(ok)
        });
        Arc::new(PrimitiveArray::<T>::new(out.into(), nulls))
    }
    Ok(match c.data_type() {
        DataType::Float64 => nums(c.as_primitive::<Float64Type>(), entries),
        DataType::Int64 => nums(c.as_primitive::<Int64Type>(), entries),
        _ => {
            let order = UInt32Array::from_iter_values(entries.iter().map(|&e| entry_pos(e)));
            take(c.as_ref(), &order, None)?
        }
    })
}

/// What an aggregation's output column holds, chosen from its function and column like the
/// accumulator's [`Eval`].
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    F64,
    I64,
    /// The row of the events' column holding the value (min, max, first, last), gathered at the end.
    Row,
    /// As `Row`, over a float64 or int64 column: the value itself, read from the group's run of
    /// values (in cache) while the sweep writes the output, instead of a random read per label
    /// afterwards.
    Pick,
}

impl Kind {
    fn of(func: Func, values: &dyn Array) -> Kind {
        match func {
            Func::Count | Func::CountDistinct => Kind::I64,
            Func::Sum if values.data_type() == &DataType::Int64 => Kind::I64,
            Func::Min | Func::Max | Func::First | Func::Last => match values.data_type() {
                DataType::Float64 | DataType::Int64 => Kind::Pick,
                _ => Kind::Row,
            },
            _ => Kind::F64,
        }
    }
}

/// Every aggregation's output at every label, row-major: output k of label row `pos` is slot
/// `pos * width + k`. A label's outputs are written together at a random label position, so they
/// share a cache line or two, where one buffer per output put each write on a line of its own.
/// A label no group reaches (null key or time) keeps the empty window's value: count 0, else null.
struct Slots {
    width: usize,
    bits: Vec<u64>,
    ok: Vec<bool>,
}

impl Slots {
    fn new(kinds: &[(Kind, Func)], n: usize) -> Slots {
        let empty: Vec<bool> = kinds
            .iter()
            .map(|&(_, f)| matches!(f, Func::Count | Func::CountDistinct))
            .collect();
        Slots {
            width: kinds.len(),
            bits: filled(n * kinds.len()),
            ok: {
                let mut ok = Vec::with_capacity(n * kinds.len());
                advise_huge(&mut ok);
                (0..n).for_each(|_| ok.extend_from_slice(&empty));
                ok
            },
        }
    }

    /// Output `k` (of kind `kind`) of every label, in label order.
    fn finish(&self, kinds: &[(Kind, Func)], sources: &[&ArrayRef]) -> Result<Vec<ArrayRef>> {
        let (w, n) = (self.width, self.bits.len() / self.width.max(1));
        // Transposed a block of labels at a time (one task each), so the block stays in cache while
        // each output's column reads it. A multiple of 64 labels: a block's validity bits are whole
        // bytes of each output's bitmap.
        const BLOCK: usize = 1024;
        let mut vals: Vec<Vec<u64>> = (0..w).map(|_| filled(n)).collect();
        let mut oks: Vec<Vec<u8>> = (0..w).map(|_| vec![0; n.div_ceil(8)]).collect();
        // Per block: each output's values, then each output's validity bytes.
        type Block<'b> = (Vec<&'b mut [u64]>, Vec<&'b mut [u8]>);
        let mut tasks: Vec<Block<'_>> = Vec::with_capacity(n.div_ceil(BLOCK));
        {
            let mut v: Vec<_> = vals.iter_mut().map(|c| c.chunks_mut(BLOCK)).collect();
            let mut o: Vec<_> = oks.iter_mut().map(|c| c.chunks_mut(BLOCK / 8)).collect();
            for _ in 0..n.div_ceil(BLOCK) {
                tasks.push((
                    v.iter_mut().filter_map(|it| it.next()).collect(),
                    o.iter_mut().filter_map(|it| it.next()).collect(),
                ));
            }
        }
        tasks
            .into_par_iter()
            .enumerate()
            .for_each(|(b, (mut vs, mut os))| {
                let lo = b * BLOCK;
                for (k, (v, o)) in vs.iter_mut().zip(os.iter_mut()).enumerate() {
                    for (i, x) in v.iter_mut().enumerate() {
                        *x = self.bits[(lo + i) * w + k];
                    }
                    for (j, byte) in o.iter_mut().enumerate() {
                        let first = lo + j * 8;
                        let mut bits = 0u8;
                        for i in 0..8.min(n - first) {
                            bits |= (self.ok[(first + i) * w + k] as u8) << i;
                        }
                        *byte = bits;
                    }
                }
            });
        vals.into_par_iter()
            .zip(oks)
            .enumerate()
            .map(|(k, (v, ok))| {
                let nulls = Some(NullBuffer::new(BooleanBuffer::new(
                    arrow::buffer::Buffer::from_vec(ok),
                    0,
                    n,
                )));
                let buf = arrow::buffer::Buffer::from_vec(v);
                Ok(match kinds[k].0 {
                    Kind::F64 => Arc::new(Float64Array::new(ScalarBuffer::new(buf, 0, n), nulls)) as ArrayRef,
                    Kind::I64 => Arc::new(Int64Array::new(ScalarBuffer::new(buf, 0, n), nulls)),
                    // The source's own type (float64 or int64): the same bits either way.
                    Kind::Pick => make_array(
                        ArrayData::builder(sources[k].data_type().clone())
                            .len(n)
                            .add_buffer(buf)
                            .nulls(nulls)
                            .build()?,
                    ),
                    Kind::Row => {
                        let rows: Vec<u32> = ScalarBuffer::<u64>::new(buf, 0, n)
                            .iter()
                            .map(|&r| r as u32)
                            .collect();
                        take(sources[k].as_ref(), &UInt32Array::new(rows.into(), nulls), None)?
                    }
                })
            })
            .collect()
    }
}

/// The value an output of kind [`Kind::Pick`] takes from its row: the events' gathered column's bits.
#[derive(Clone, Copy)]
enum Pick<'a> {
    No,
    F64(&'a [f64], Option<&'a NullBuffer>),
    I64(&'a [i64], Option<&'a NullBuffer>),
}

impl<'a> Pick<'a> {
    fn of(kind: Kind, c: &'a ArrayRef) -> Pick<'a> {
        match (kind, c.data_type()) {
            (Kind::Pick, DataType::Float64) => {
                let a = c.as_primitive::<Float64Type>();
                Pick::F64(a.values(), a.nulls())
            }
            (Kind::Pick, DataType::Int64) => {
                let a = c.as_primitive::<Int64Type>();
                Pick::I64(a.values(), a.nulls())
            }
            _ => Pick::No,
        }
    }
}

/// Where the group threads write: [`Slots`]' buffers, at disjoint label positions.
#[derive(Clone, Copy)]
struct Sink<'a> {
    width: usize,
    bits: SharedMut<u64>,
    ok: SharedMut<bool>,
    picks: &'a [Pick<'a>],
}

impl<'a> Sink<'a> {
    fn of(s: &mut Slots, picks: &'a [Pick<'a>]) -> Sink<'a> {
        Sink {
            width: s.width,
            bits: SharedMut::new(&mut s.bits),
            ok: SharedMut::new(&mut s.ok),
            picks,
        }
    }

    /// Brings label row `pos`'s outputs into the cache ahead of the sweep's writes there (labels
    /// sit at random rows: each write would otherwise wait for its line).
    #[inline]
    fn prefetch(&self, pos: usize) {
        let first = self.bits.0.wrapping_add(pos * self.width);
        prefetch(first as *const u8);
        prefetch(first.wrapping_add(self.width - 1) as *const u8);
        prefetch(self.ok.0.wrapping_add(pos * self.width) as *const u8);
    }

    /// # Safety
    /// `pos` is a label row, `k` < width, and no other thread writes label row `pos` (each label row
    /// is in one group).
    #[inline]
    unsafe fn put(&self, pos: usize, k: usize, e: Eval) {
        let (bits, ok) = match e {
            Eval::F64(x) => (x.map_or(0, f64::to_bits), x.is_some()),
            Eval::I64(x) => (x.unwrap_or(0) as u64, x.is_some()),
            Eval::Row(x) => match (self.picks[k], x) {
                (Pick::F64(v, n), Some(r)) => (v[r].to_bits(), n.is_none_or(|n| n.is_valid(r))),
                (Pick::I64(v, n), Some(r)) => (v[r] as u64, n.is_none_or(|n| n.is_valid(r))),
                _ => (x.unwrap_or(0) as u64, x.is_some()),
            },
        };
        let i = pos * self.width + k;
        // SAFETY: the caller's contract: i is in bounds and this thread's alone.
        unsafe {
            self.bits.write(i, bits);
            self.ok.write(i, ok);
        }
    }
}

/// The labels' columns, then one column per aggregation, in label order.
pub fn window_aggregate(labels: &Table, events: &Table, opts: &WindowOptions) -> Result<Table> {
    let l_on = labels.column(&opts.on, "the labels")?;
    let e_on = events.column(&opts.on, "the events")?;
    let mut keys = Vec::with_capacity(opts.by.len());
    for b in &opts.by {
        keys.push((labels.column(b, "the labels")?, events.column(b, "the events")?));
    }
    let mut rank_cols = Vec::with_capacity(1);
    if let Some(s) = &opts.sequence {
        let c = events.column(s, "the events (sequence)")?;
        if !c.data_type.is_integer() {
            return Err(Error::Dtype(format!(
                "sequence column {s:?} is {}, not an integer",
                c.data_type
            )));
        }
        rank_cols.push(c);
    }
    let ranks = Ranks::new(&rank_cols)?;
    let mut names: Vec<&str> = labels.schema.fields().iter().map(|f| f.name().as_str()).collect();
    // Each distinct value column once (concatenated, widened), and which one each aggregation reads.
    let mut distinct: Vec<(&str, ArrayRef)> = Vec::new();
    let mut col_of = Vec::with_capacity(opts.aggregations.len());
    for a in &opts.aggregations {
        if a.window_us <= 0 {
            return Err(Error::InvalidArgument(format!(
                "aggregation {:?}: the window must be positive, not {} microseconds",
                a.name, a.window_us
            )));
        }
        if names.contains(&a.name.as_str()) {
            return Err(Error::ColumnClash(format!(
                "output column {:?} is already a label column or another aggregation's name; rename it",
                a.name
            )));
        }
        names.push(&a.name);
        let i = match distinct.iter().position(|(n, _)| *n == a.column) {
            Some(i) => i,
            None => {
                distinct.push((&a.column, value_column(&events.column(&a.column, "the events")?)?));
                distinct.len() - 1
            }
        };
        // Fail on a function the column cannot take before any work.
        accumulator(a.func, Values::new(distinct[i].1.as_ref(), &a.column)?, &a.name)?;
        col_of.push(i);
    }
    let n_labels = labels.num_rows();
    let mut ids = group_ids(&keys, n_labels, events.num_rows())?;
    drop(keys);
    // Microsecond event times (the usual unit) are read in place; others converted once.
    let e_unit = instant_unit(&e_on.name, &e_on.data_type, "the events")?;
    let e_times;
    let e_source = if e_unit == TimeUnit::Microsecond {
        mark_null_rows(&e_on, &mut ids.build);
        OnSource::column(&e_on, 1)
    } else {
        e_times = micros(&e_on, "the events", &mut ids.build)?;
        OnSource::Values(&e_times)
    };
    let l_times = micros(&l_on, "the labels", &mut ids.probe)?;
    let index = Index::build(&ids.build, &e_source, ids.n_groups, &ranks);
    drop(ids.build);
    let (l_offsets, mut l_entries) =
        group_rows(&ids.probe, ids.n_groups, |_| |i| entry(l_times[i], i as u32));
    // Labels of one group in time order (u128 entries sort by time, then position).
    {
        let mut rest: &mut [u128] = &mut l_entries;
        let mut parts = Vec::with_capacity(ids.n_groups);
        for w in l_offsets.windows(2) {
            let (a, b) = rest.split_at_mut((w[1] - w[0]) as usize);
            parts.push(a);
            rest = b;
        }
        parts.into_par_iter().for_each(|p| p.sort_unstable());
    }

    // Each group's events gathered once into one contiguous run per value column, group after group
    // (the index's layout): the sweep then reads values sequentially, where reading the input in
    // place would miss the cache on almost every access (events arrive in any order).
    // Times are read from the index's entries group by group during the sweep (in the entries'
    // order, in cache), not gathered into a whole-column copy first.
    let entries = index.entries();
    let gathered = distinct
        .iter()
        .map(|(_, c)| gather(c, entries))
        .collect::<Result<Vec<_>>>()?;
    drop(distinct);
    let starts = index.offsets();
    let columns: Vec<&ArrayRef> = col_of.iter().map(|&i| &gathered[i]).collect();
    let kinds: Vec<(Kind, Func)> = opts
        .aggregations
        .iter()
        .zip(&columns)
        .map(|(a, c)| (Kind::of(a.func, c.as_ref()), a.func))
        .collect();
    let mut slots = Slots::new(&kinds, n_labels);
    let picks: Vec<Pick<'_>> = kinds
        .iter()
        .zip(&columns)
        .map(|(&(k, _), c)| Pick::of(k, c))
        .collect();
    let sink = Sink::of(&mut slots, &picks);
    let values: Vec<Values<'_>> = columns
        .iter()
        .zip(&opts.aggregations)
        .map(|(c, a)| Values::new(c.as_ref(), &a.column))
        .collect::<Result<_>>()?;
    // Aggregations sharing a window share one lane of the sweep, and within it aggregations of one
    // column that can share an accumulator's state (sum, mean and count of a number) share one
    // accumulator: per window, (the aggregation the accumulator is built for, every (aggregation,
    // function) read from it).
    let mut by_window: BTreeMap<i64, Vec<Shared>> = BTreeMap::new();
    let summing = |f: Func| matches!(f, Func::Sum | Func::Mean);
    // Sums and means first, so that a count finds the sum it can read.
    for sums in [true, false] {
        for (k, a) in opts.aggregations.iter().enumerate() {
            if summing(a.func) != sums {
                continue;
            }
            let heads = by_window.entry(a.window_us).or_default();
            let numeric = values[k].is_numeric();
            let head = heads.iter_mut().find(|(h, _)| {
                col_of[*h] == col_of[k]
                    && summing(opts.aggregations[*h].func)
                    && shares_state(a.func, opts.aggregations[*h].func, numeric)
            });
            match head {
                Some((_, outs)) => outs.push((k, a.func)),
                None => heads.push((k, vec![(k, a.func)])),
            }
        }
    }
    let by_window: Vec<(i64, Vec<Shared>)> = by_window.into_iter().collect();
    // One lane per window (all windows of every column in one pass over a group's labels), built once
    // per worker and reset for each group it takes.
    let lanes = || -> Result<Vec<Lane<'_>>> {
        by_window
            .iter()
            .map(|(w, heads)| {
                let accs = heads
                    .iter()
                    .map(|(k, _)| {
                        accumulator(
                            opts.aggregations[*k].func,
                            values[*k],
                            &opts.aggregations[*k].name,
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Lane::new(*w, accs))
            })
            .collect()
    };
    (0..ids.n_groups).into_par_iter().try_for_each_init(
        || (lanes(), Vec::new(), Vec::new(), Vec::new()),
        |(lanes, lab, rows, times), g| -> Result<()> {
            let entries = &l_entries[l_offsets[g] as usize..l_offsets[g + 1] as usize];
            let entries_of_events = index.entries();
            if entries.is_empty() {
                return Ok(());
            }
            let lanes = lanes.as_mut().map_err(|e| Error::Internal(e.to_string()))?;
            lab.clear();
            lab.extend(entries.iter().map(|&e| (entry_on(e), entry_pos(e) as usize)));
            for &(_, pos) in lab.iter() {
                sink.prefetch(pos);
            }
            let span = starts[g] as usize..starts[g + 1] as usize;
            rows.clear();
            rows.extend(span.clone());
            times.clear();
            times.extend(entries_of_events[span].iter().map(|&e| entry_on(e)));
            sweep(rows, times, lab, lanes, |j, h, pos, a| {
                a.evaluate_each(&by_window[j].1[h].1, &mut |k, e| {
                    // SAFETY: pos < n_labels, k < the number of aggregations, and label row `pos` is
                    // in this group only.
                    unsafe { sink.put(pos, k, e) }
                })
            })
        },
    )?;
    drop(index);
    let out_cols = slots.finish(&kinds, &columns)?;
    let mut fields: Vec<FieldRef> = labels.schema.fields().iter().cloned().collect();
    for (a, c) in opts.aggregations.iter().zip(&out_cols) {
        fields.push(Arc::new(Field::new(&a.name, c.data_type().clone(), true)));
    }
    let schema = Arc::new(Schema::new(fields));
    let mut batches = Vec::with_capacity(labels.batches.len());
    let mut row = 0;
    for b in &labels.batches {
        let mut cols: Vec<ArrayRef> = b.columns().to_vec();
        cols.extend(out_cols.iter().map(|c| c.slice(row, b.num_rows())));
        batches.push(RecordBatch::try_new(schema.clone(), cols)?);
        row += b.num_rows();
    }
    if labels.batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema.clone()));
    }
    Ok(Table::new(schema, batches))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::{evaluate_at, Func};

    fn table(cols: Vec<(&str, ArrayRef)>) -> Table {
        let batch = RecordBatch::try_from_iter(cols).unwrap();
        Table::new(batch.schema(), vec![batch])
    }

    fn ts(v: Vec<Option<i64>>) -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
    }

    #[test]
    fn every_label_gets_its_own_window_per_key() {
        // Events: key 1 at 10, 20, 20 (tie: sequence decides first/last), 40; key 2 at 15; a null key.
        let events = table(vec![
            (
                "k",
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    Some(1),
                    Some(2),
                    Some(1),
                    Some(1),
                    None,
                ])) as ArrayRef,
            ),
            (
                "t",
                ts(vec![Some(20), Some(10), Some(15), Some(20), Some(40), Some(12)]),
            ),
            (
                "x",
                Arc::new(Float64Array::from(vec![
                    Some(2.0),
                    Some(1.0),
                    Some(7.0),
                    Some(3.0),
                    None,
                    Some(9.0),
                ])),
            ),
            (
                "seq",
                Arc::new(Int64Array::from(vec![5, 1, 1, 4, 6, 1])) as ArrayRef,
            ),
        ]);
        let labels = table(vec![
            (
                "k",
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    Some(1),
                    Some(2),
                    Some(3),
                    None,
                    Some(1),
                ])) as ArrayRef,
            ),
            (
                "t",
                ts(vec![Some(20), Some(45), Some(15), Some(15), Some(20), None]),
            ),
        ]);
        let agg = |func: Func, w: i64| Aggregation {
            column: "x".into(),
            func,
            window_us: w,
            name: format!("{}_{w}", func.name()),
        };
        let opts = WindowOptions {
            on: "t".into(),
            by: vec!["k".into()],
            sequence: Some("seq".into()),
            aggregations: vec![
                agg(Func::Sum, 10),
                agg(Func::Count, 100),
                agg(Func::First, 10),
                agg(Func::Last, 100),
            ],
        };
        let out = window_aggregate(&labels, &events, &opts).unwrap();
        let b = &out.batches[0];
        let f = |i: usize| {
            b.column(i)
                .as_primitive::<Float64Type>()
                .iter()
                .collect::<Vec<_>>()
        };
        let c = b.column(3).as_primitive::<Int64Type>().iter().collect::<Vec<_>>();
        // (10, 20]: 1.0@10 is out, 3.0 and 2.0 at 20; (35, 45]: only the null at 40.
        assert_eq!(f(2), vec![Some(5.0), None, Some(7.0), None, None, None]);
        assert_eq!(c, vec![Some(3), Some(3), Some(1), Some(0), Some(0), Some(0)]);
        // At 20 the tie orders by sequence: 3.0 (seq 4) before 2.0 (seq 5).
        assert_eq!(f(4), vec![Some(3.0), None, Some(7.0), None, None, None]);
        assert_eq!(f(5), vec![Some(2.0), Some(2.0), Some(7.0), None, None, None]);
        // The same values one entity at a time, as serving computes them.
        let x = Float64Array::from(vec![Some(1.0), Some(3.0), Some(2.0), None]);
        let mut acc = crate::window::accumulator(Func::Sum, Values::F64(&x), "x").unwrap();
        assert_eq!(
            evaluate_at(&[0, 1, 2, 3], &[10, 20, 20, 40], 20, 10, &mut acc).unwrap(),
            Eval::F64(Some(5.0))
        );
    }

    #[test]
    fn sum_mean_and_count_sharing_one_accumulator_equal_each_alone() {
        let n = 200;
        let keys: Vec<i64> = (0..n).map(|i| i % 3).collect();
        let times: Vec<Option<i64>> = (0..n).map(|i| Some((i * 7919) % 97)).collect();
        let x: Vec<Option<f64>> = (0..n)
            .map(|i| (i % 5 != 0).then_some((i as f64 - 90.0) * 0.37))
            .collect();
        let m: Vec<Option<i64>> = (0..n).map(|i| (i % 4 != 0).then_some(i - 50)).collect();
        let events = table(vec![
            ("k", Arc::new(Int64Array::from(keys)) as ArrayRef),
            ("t", ts(times)),
            ("x", Arc::new(Float64Array::from(x))),
            ("m", Arc::new(Int64Array::from(m))),
        ]);
        let labels = table(vec![
            (
                "k",
                Arc::new(Int64Array::from((0..40).map(|i| i % 4).collect::<Vec<i64>>())) as ArrayRef,
            ),
            ("t", ts((0..40).map(|i| Some(i * 3 - 5)).collect())),
        ]);
        let agg = |column: &str, func: Func| Aggregation {
            column: column.into(),
            func,
            window_us: 20,
            name: format!("{column}_{}", func.name()),
        };
        let run = |aggs: Vec<Aggregation>| {
            let opts = WindowOptions {
                on: "t".into(),
                by: vec!["k".into()],
                sequence: None,
                aggregations: aggs,
            };
            window_aggregate(&labels, &events, &opts).unwrap().batches[0].clone()
        };
        let funcs = [Func::Count, Func::Mean, Func::Sum];
        let all: Vec<Aggregation> = ["x", "m"]
            .iter()
            .flat_map(|c| funcs.iter().map(|&f| agg(c, f)))
            .collect();
        let together = run(all.clone());
        for (i, a) in all.into_iter().enumerate() {
            let alone = run(vec![a]);
            assert_eq!(together.column(2 + i).as_ref(), alone.column(2).as_ref());
        }
    }

    #[test]
    fn bad_aggregations_are_typed_errors() {
        let events = table(vec![
            ("k", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("t", ts(vec![Some(1)])),
            ("s", Arc::new(StringArray::from(vec!["a"])) as ArrayRef),
        ]);
        let labels = table(vec![
            ("k", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("t", ts(vec![Some(1)])),
        ]);
        let run = |func: Func, w: i64, name: &str| {
            let opts = WindowOptions {
                on: "t".into(),
                by: vec!["k".into()],
                sequence: None,
                aggregations: vec![Aggregation {
                    column: "s".into(),
                    func,
                    window_us: w,
                    name: name.into(),
                }],
            };
            window_aggregate(&labels, &events, &opts)
        };
        assert!(matches!(run(Func::Sum, 10, "a"), Err(Error::Dtype(_))));
        assert!(matches!(run(Func::Count, 0, "a"), Err(Error::InvalidArgument(_))));
        assert!(matches!(run(Func::Count, 10, "k"), Err(Error::ColumnClash(_))));
        let ok = run(Func::CountDistinct, 10, "n").unwrap();
        assert_eq!(ok.batches[0].column(2).as_primitive::<Int64Type>().value(0), 1);
    }
}
