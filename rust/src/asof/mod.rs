//! The point-in-time (as-of) join: for each left row, the right row with the same key and the latest
//! `on` at or before the left row's time (or the mirror rules of `forward` / `nearest`).
//!
//! Stages, each over narrow arrays only:
//! 1. [`group::ids`]: key columns -> dense group ids for both sides (null key or null `on` -> no group);
//! 2. `on` of both sides -> i64 in one comparison unit (the finer of the two sides);
//! 3. [`group::index`]: right positions grouped by id and ordered by (on, tie_breaker, sequence,
//!    position);
//! 4. [`search`]: a binary search per left row -> matching right position or none;
//! 5. [`gather`]: right output columns taken at those positions; left columns are passed through as
//!    they are (zero-copy), batch by batch.
//!
//! Among right rows with equal key and `on`, the greatest tie_breaker wins, then the greatest
//! sequence, then the last in input order: with a sequence that is unique per row (the history's
//! write order), the answer does not depend on the order of the input rows.

pub mod gather;
pub mod search;

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::*;
use rayon::prelude::*;

use crate::column::{par_chunks, timestamp_values, with_int, OrdU64};
use crate::error::{Error, Result};
use crate::group::{self, check_rank_column, mark_null_rows, BuildStats, Index, OnSource, Ranks};
use crate::table::{Column, Table};
use crate::time::{instant_unit, ticks_per_second};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Backward,
    Forward,
    Nearest,
}

impl FromStr for Direction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "backward" => Ok(Direction::Backward),
            "forward" => Ok(Direction::Forward),
            "nearest" => Ok(Direction::Nearest),
            other => Err(Error::InvalidArgument(format!(
                "direction {other:?} is not one of \"backward\", \"forward\", \"nearest\""
            ))),
        }
    }
}

/// How far a match may be from the left row's time (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tolerance {
    /// A duration in microseconds, for a timestamp `on`.
    Micros(u64),
    /// A count of the integer `on`'s units.
    Ticks(u64),
}

#[derive(Debug, Clone)]
pub struct AsofOptions {
    pub on: String,
    pub by: Vec<String>,
    pub direction: Direction,
    pub tolerance: Option<Tolerance>,
    pub allow_exact_matches: bool,
    pub tie_breaker: Option<String>,
    /// A right column ranking rows of equal key, `on` and tie_breaker (larger wins), e.g. a write
    /// sequence: with one unique per row, ties no longer depend on input order.
    pub sequence: Option<String>,
    pub suffix: Option<String>,
}

impl AsofOptions {
    pub fn new(on: &str) -> Self {
        AsofOptions {
            on: on.into(),
            by: Vec::new(),
            direction: Direction::Backward,
            tolerance: None,
            allow_exact_matches: true,
            tie_breaker: None,
            sequence: None,
            suffix: None,
        }
    }
}

/// How one side's `on` values become i64s in the comparison unit. Timestamps are multiplied up to the
/// finer side's unit (exactly, or a Dtype error on overflow); unsigned integers are shifted by 2^63 so
/// that they keep their order (and their differences) as i64.
#[derive(Debug, Clone, Copy)]
enum OnScale {
    Times(i64),
    Unsigned,
}

fn int_family(dt: &DataType) -> Option<bool> {
    match dt {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => Some(true),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => Some(false),
        _ => None,
    }
}

/// The comparison plan for `on`: per-side scaling and the tolerance in comparison units.
fn plan_on(l: &Column, r: &Column, tolerance: Option<Tolerance>) -> Result<(OnScale, OnScale, Option<u64>)> {
    let is_ts = |c: &Column| matches!(c.data_type, DataType::Timestamp(..));
    let describe = "`on` must be a timezone-aware timestamp on both sides, or an integer on both sides";
    if is_ts(l) || is_ts(r) {
        let ul = instant_unit(&l.name, &l.data_type, "left").map_err(|e| mismatch(e, describe))?;
        let ur = instant_unit(&r.name, &r.data_type, "right").map_err(|e| mismatch(e, describe))?;
        let (tl, tr) = (ticks_per_second(ul), ticks_per_second(ur));
        let fine = tl.max(tr);
        let tol = match tolerance {
            None => None,
            Some(Tolerance::Micros(us)) => {
                // Floor for coarser units: with integer times, on_r >= t - tol <=> on_r >= t - floor(tol).
                let ticks = us as u128 * fine as u128 / 1_000_000;
                Some(ticks.min(u64::MAX as u128) as u64)
            }
            Some(Tolerance::Ticks(_)) => {
                return Err(Error::InvalidArgument(format!(
                    "tolerance is an integer but `on` ({:?}) is a timestamp; pass a datetime.timedelta",
                    l.name
                )))
            }
        };
        return Ok((OnScale::Times(fine / tl), OnScale::Times(fine / tr), tol));
    }
    match (int_family(&l.data_type), int_family(&r.data_type)) {
        (Some(sl), Some(sr)) if sl == sr => {
            let scale = if sl { OnScale::Times(1) } else { OnScale::Unsigned };
            let tol = match tolerance {
                None => None,
                Some(Tolerance::Ticks(t)) => Some(t),
                Some(Tolerance::Micros(_)) => {
                    return Err(Error::InvalidArgument(format!(
                        "tolerance is a timedelta but `on` ({:?}) is an integer column; pass an int",
                        l.name
                    )))
                }
            };
            Ok((scale, scale, tol))
        }
        _ => Err(Error::Dtype(format!(
            "`on` column {:?} is {} on the left and {} on the right; {describe} (signed with signed, \
             unsigned with unsigned). Cast one side",
            l.name, l.data_type, r.data_type
        ))),
    }
}

fn mismatch(e: Error, describe: &str) -> Error {
    match e {
        Error::Dtype(m) => Error::Dtype(format!("{m}; {describe}")),
        other => other,
    }
}

/// `on` of one side in the comparison unit; rows with a null `on` get id NONE.
fn on_values(c: &Column, scale: OnScale, ids: &mut [u32]) -> Result<Vec<i64>> {
    let mut out = vec![0i64; c.len()];
    let overflow = AtomicBool::new(false);
    par_chunks(&c.chunks, &mut out, |arr, local, out| match scale {
        OnScale::Times(m) => {
            let vals = match arr.data_type() {
                DataType::Timestamp(..) => &timestamp_values(arr)[local..local + out.len()],
                // Signed integers (m is 1): the two sign-bit flips cancel, leaving v itself.
                _ => {
                    return with_int!(arr, a => {
                        for (o, v) in out.iter_mut().zip(&a.values()[local..]) {
                            *o = (v.ord_u64() ^ (1 << 63)) as i64;
                        }
                    })
                }
            };
            if m == 1 {
                out.copy_from_slice(vals);
            } else {
                for (k, (o, v)) in out.iter_mut().zip(vals).enumerate() {
                    match v.checked_mul(m) {
                        Some(x) => *o = x,
                        None if arr.is_valid(local + k) => overflow.store(true, Ordering::Relaxed),
                        None => {}
                    }
                }
            }
        }
        // Unsigned: v - 2^63, which keeps both order and differences within i64.
        OnScale::Unsigned => with_int!(arr, a => {
            for (o, v) in out.iter_mut().zip(&a.values()[local..]) {
                *o = (v.ord_u64() ^ (1 << 63)) as i64;
            }
        }),
    });
    if overflow.load(Ordering::Relaxed) {
        return Err(overflow_error(c));
    }
    mark_null_rows(c, ids);
    Ok(out)
}

fn overflow_error(c: &Column) -> Error {
    Error::Dtype(format!(
        "column {:?} holds a time that does not fit in a 64-bit count of the other side's finer unit; \
         cast both sides' `on` to the same unit first",
        c.name
    ))
}

/// The right's `on` read in place when every chunk already holds i64s (timestamps, int64): the index
/// build multiplies as it reads, after one pass has checked that no valid value overflows. Other types
/// are converted into one array by [`on_values`].
fn right_on_source<'a>(c: &'a Column, scale: OnScale, ids: &mut [u32]) -> Result<OnSource<'a>> {
    let OnScale::Times(mult) = scale else {
        unreachable!("only called for i64 sources")
    };
    if mult != 1 {
        let overflow = c.chunks.par_iter().any(|a| {
            let vals = match a.data_type() {
                DataType::Timestamp(..) => timestamp_values(a.as_ref()),
                _ => a.as_primitive::<Int64Type>().values(),
            };
            vals.iter()
                .enumerate()
                .any(|(i, v)| v.checked_mul(mult).is_none() && a.is_valid(i))
        });
        if overflow {
            return Err(overflow_error(c));
        }
    }
    mark_null_rows(c, ids);
    Ok(OnSource::column(c, mult))
}

fn is_i64_source(c: &Column, scale: OnScale) -> bool {
    matches!(scale, OnScale::Times(_)) && matches!(c.data_type, DataType::Timestamp(..) | DataType::Int64)
}

/// Output schema: the left's fields, then the right's fields except `on` and `by` (nullable: a left row
/// without a match gets nulls), renamed with `suffix` on a clash.
fn output_schema(left: &Schema, right: &Schema, opts: &AsofOptions) -> Result<(SchemaRef, Vec<usize>)> {
    let mut names: HashSet<String> = left.fields().iter().map(|f| f.name().clone()).collect();
    let mut fields: Vec<FieldRef> = left.fields().iter().cloned().collect();
    let mut taken = Vec::new();
    for (i, f) in right.fields().iter().enumerate() {
        if f.name() == &opts.on || opts.by.iter().any(|b| b == f.name()) {
            continue;
        }
        if has_union(f.data_type()) {
            // A union has no validity bitmap of its own: an unmatched row would take a child's value (a
            // dense union's first slot) instead of null, so such a column cannot be joined correctly.
            return Err(Error::Dtype(format!(
                "right column {:?} is {}, a union type, which the as-of join cannot fill with nulls for                  unmatched rows; cast it to a plain type (or split it into one column per variant) first",
                f.name(),
                f.data_type()
            )));
        }
        let mut name = f.name().clone();
        if names.contains(&name) {
            let Some(s) = &opts.suffix else {
                return Err(Error::ColumnClash(format!(
                    "right column {name:?} would clash with the left column of the same name; pass \
                     suffix=\"_right\" (or rename or drop one of them)"
                )));
            };
            name = format!("{name}{s}");
            if names.contains(&name) {
                return Err(Error::ColumnClash(format!(
                    "right column {:?} renamed with suffix {s:?} is {name:?}, which is also taken; pick \
                     another suffix",
                    f.name()
                )));
            }
        }
        names.insert(name.clone());
        taken.push(i);
        fields.push(Arc::new(f.as_ref().clone().with_name(name).with_nullable(true)));
    }
    // The output keeps no schema-level metadata: the left's (e.g. pandas') would describe other columns.
    Ok((Arc::new(Schema::new(fields)), taken))
}

/// Whether `dt` is or holds (in a list, struct, map or dictionary) a union.
fn has_union(dt: &DataType) -> bool {
    match dt {
        DataType::Union(..) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => has_union(f.data_type()),
        DataType::Struct(fs) => fs.iter().any(|f| has_union(f.data_type())),
        DataType::Dictionary(_, v) => has_union(v),
        DataType::RunEndEncoded(_, v) => has_union(v.data_type()),
        _ => false,
    }
}

/// The as-of join of `left` and `right`; see the module docs and `skewless.asof_join`.
pub fn asof_join(left: &Table, right: &Table, opts: &AsofOptions) -> Result<Table> {
    let (table, _) = asof_join_with_stats(left, right, opts)?;
    Ok(table)
}

/// [`asof_join`] that also reports what the index build did.
pub fn asof_join_with_stats(left: &Table, right: &Table, opts: &AsofOptions) -> Result<(Table, BuildStats)> {
    // Everything is checked before any work starts.
    let l_on = left.column(&opts.on, "the left table")?;
    let r_on = right.column(&opts.on, "the right table")?;
    let mut keys = Vec::with_capacity(opts.by.len());
    for b in &opts.by {
        keys.push((
            left.column(b, "the left table")?,
            right.column(b, "the right table")?,
        ));
    }
    let mut rank_cols = Vec::with_capacity(2);
    for (name, what) in [(&opts.tie_breaker, "tie_breaker"), (&opts.sequence, "sequence")] {
        if let Some(name) = name {
            let c = right.column(name, &format!("the right table ({what})"))?;
            check_rank_column(&c, what)?;
            rank_cols.push(c);
        }
    }
    let ranks = Ranks::new(&rank_cols)?;
    let (scale_l, scale_r, tolerance) = plan_on(&l_on, &r_on, opts.tolerance)?;
    let (schema, right_cols) = output_schema(&left.schema, &right.schema, opts)?;
    let (n_left, n_right) = (left.num_rows(), right.num_rows());

    let mut ids = group::group_ids(&keys, n_left, n_right)?;
    drop(keys);
    let mut right_copy: Option<Vec<i64>> = None;
    let right_on = if is_i64_source(&r_on, scale_r) {
        right_on_source(&r_on, scale_r, &mut ids.build)?
    } else {
        OnSource::Values(right_copy.insert(on_values(&r_on, scale_r, &mut ids.build)?))
    };
    let left_on = on_values(&l_on, scale_l, &mut ids.probe)?;
    let idx = Index::build(&ids.build, &right_on, ids.n_groups, &ranks);
    drop(right_on);
    drop(right_copy);
    drop(ids.build);
    drop(ranks);
    let rule = search::Rule {
        direction: opts.direction,
        allow_exact: opts.allow_exact_matches,
        tolerance,
    };
    let positions = search::search(&idx, &ids.probe, &left_on, rule);
    let stats = idx.stats;
    drop(idx);
    drop(left_on);
    drop(ids.probe);

    let chunk_lens: Vec<usize> = right.batches.iter().map(|b| b.num_rows()).collect();
    let plan = gather::Plan::new(&positions, &chunk_lens);
    drop(positions);
    let columns: Vec<(DataType, Vec<ArrayRef>)> = right_cols
        .iter()
        .map(|&i| {
            let dt = right.schema.field(i).data_type().clone();
            (dt, right.batches.iter().map(|b| b.column(i).clone()).collect())
        })
        .collect();
    let gathered = gather::gather(&columns, &plan, n_left)?;
    // A string column past 2 GiB came out with 64-bit offsets: the schema says so.
    let n_left_cols = schema.fields().len() - gathered.len();
    let fields: Vec<FieldRef> = schema.fields()[..n_left_cols]
        .iter()
        .cloned()
        .chain(
            schema.fields()[n_left_cols..]
                .iter()
                .zip(&gathered)
                .map(|(f, g)| Arc::new(f.as_ref().clone().with_data_type(g.data_type().clone()))),
        )
        .collect();
    let schema: SchemaRef = Arc::new(Schema::new(fields));

    let mut batches = Vec::with_capacity(left.batches.len());
    let mut row = 0;
    for b in &left.batches {
        let mut cols: Vec<ArrayRef> = b.columns().to_vec();
        cols.extend(gathered.iter().map(|g| g.slice(row, b.num_rows())));
        batches.push(RecordBatch::try_new(schema.clone(), cols)?);
        row += b.num_rows();
    }
    Ok((Table::new(schema, batches), stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Float64Array, Int64Array, StringArray, TimestampMillisecondArray, TimestampNanosecondArray,
    };

    fn table(cols: Vec<(&str, ArrayRef)>) -> Table {
        let batch = RecordBatch::try_from_iter(cols).unwrap();
        Table::new(batch.schema(), vec![batch])
    }

    #[test]
    fn end_to_end_backward_with_keys_units_and_tolerance() {
        let ms =
            |v: Vec<i64>| -> ArrayRef { Arc::new(TimestampMillisecondArray::from(v).with_timezone("UTC")) };
        let ns =
            |v: Vec<i64>| -> ArrayRef { Arc::new(TimestampNanosecondArray::from(v).with_timezone("+02:00")) };
        let left = table(vec![
            (
                "k",
                Arc::new(StringArray::from(vec!["a", "b", "a", "z"])) as ArrayRef,
            ),
            ("t", ns(vec![2_000_000_000, 2_000_000_000, 1_000_000_001, 5])),
        ]);
        let right = table(vec![
            ("k", Arc::new(StringArray::from(vec!["a", "a", "b"])) as ArrayRef),
            ("t", ms(vec![1000, 1500, 2001])),
            ("v", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])) as ArrayRef),
        ]);
        let mut o = AsofOptions::new("t");
        o.by = vec!["k".into()];
        let out = asof_join(&left, &right, &o).unwrap();
        let v = out.batches[0].column(2).as_primitive::<Float64Type>();
        assert_eq!(
            v.iter().collect::<Vec<_>>(),
            vec![Some(2.0), None, Some(1.0), None]
        );
        // 500ms tolerance: left a@2.0s sees a@1.5s (exactly 500 ms back, inclusive).
        o.tolerance = Some(Tolerance::Micros(500_000));
        let out = asof_join(&left, &right, &o).unwrap();
        let v = out.batches[0].column(2).as_primitive::<Float64Type>();
        assert_eq!(
            v.iter().collect::<Vec<_>>(),
            vec![Some(2.0), None, Some(1.0), None]
        );
        o.tolerance = Some(Tolerance::Micros(499_999));
        let out = asof_join(&left, &right, &o).unwrap();
        let v = out.batches[0].column(2).as_primitive::<Float64Type>();
        assert_eq!(v.iter().collect::<Vec<_>>(), vec![None, None, Some(1.0), None]);
    }

    #[test]
    fn argument_errors() {
        let left = table(vec![("t", Arc::new(Int64Array::from(vec![1])) as ArrayRef)]);
        let right = table(vec![
            ("t", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("x", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ]);
        let mut o = AsofOptions::new("t");
        o.tolerance = Some(Tolerance::Micros(1));
        assert!(matches!(
            asof_join(&left, &right, &o),
            Err(Error::InvalidArgument(_))
        ));
        o.tolerance = None;
        o.tie_breaker = Some("nope".into());
        assert!(matches!(
            asof_join(&left, &right, &o),
            Err(Error::MissingColumn(_))
        ));
        let left = table(vec![
            ("t", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("x", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ]);
        let o = AsofOptions::new("t");
        assert!(matches!(asof_join(&left, &right, &o), Err(Error::ColumnClash(_))));
        assert!("sideways".parse::<Direction>().is_err());
    }

    #[test]
    fn union_value_columns_are_refused_even_nested() {
        use arrow::array::{StructArray, UnionArray};
        use arrow::buffer::ScalarBuffer;
        let fields = UnionFields::try_new(vec![0], vec![Field::new("i", DataType::Int64, true)]).unwrap();
        let union = || {
            Arc::new(
                UnionArray::try_new(
                    fields.clone(),
                    ScalarBuffer::from(vec![0i8]),
                    Some(ScalarBuffer::from(vec![0i32])),
                    vec![Arc::new(Int64Array::from(vec![1])) as ArrayRef],
                )
                .unwrap(),
            ) as ArrayRef
        };
        let left = table(vec![("t", Arc::new(Int64Array::from(vec![0])) as ArrayRef)]);
        let nested = Arc::new(StructArray::from(vec![(
            Arc::new(Field::new("u", union().data_type().clone(), true)),
            union(),
        )])) as ArrayRef;
        for v in [union(), nested] {
            let right = table(vec![
                ("t", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
                ("v", v),
            ]);
            match asof_join(&left, &right, &AsofOptions::new("t")) {
                Err(Error::Dtype(m)) => assert!(m.contains("union"), "{m}"),
                other => panic!("a union column was joined: {:?}", other.map(|t| t.num_rows())),
            }
        }
    }

    #[test]
    fn chunked_right_with_ties_across_chunks_in_every_direction() {
        // One key, all rows at t = 5 except the last; ties split over three batches.
        let schema = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Int64, true),
            Field::new("c", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]));
        let batch = |t: Vec<Option<i64>>, c: Vec<Option<i64>>, v: Vec<&str>| {
            let cols: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(t)),
                Arc::new(Int64Array::from(c)),
                Arc::new(StringArray::from(v)),
            ];
            RecordBatch::try_new(schema.clone(), cols).unwrap()
        };
        let right = Table::new(
            schema.clone(),
            vec![
                batch(vec![Some(5), None], vec![Some(3), Some(9)], vec!["a", "null-t"]),
                batch(vec![], vec![], vec![]),
                batch(
                    vec![Some(5), Some(5), Some(9)],
                    vec![Some(3), None, Some(0)],
                    vec!["b", "c", "late"],
                ),
            ],
        );
        let left = table(vec![(
            "t",
            Arc::new(Int64Array::from(vec![4, 5, 7, 10])) as ArrayRef,
        )]);
        let run = |direction, tie: bool| {
            let mut o = AsofOptions::new("t");
            o.direction = direction;
            o.tie_breaker = tie.then(|| "c".to_string());
            let out = asof_join(&left, &right, &o).unwrap();
            let v = out.batches[0].column(2).as_string::<i32>().clone();
            v.iter().map(|x| x.map(str::to_string)).collect::<Vec<_>>()
        };
        let s = |x: &[Option<&str>]| x.iter().map(|o| o.map(str::to_string)).collect::<Vec<_>>();
        // With the tie-breaker: c = 3 twice ("a", "b"): the later row "b" wins; "c" (null) ranks lowest.
        assert_eq!(
            run(Direction::Backward, true),
            s(&[None, Some("b"), Some("b"), Some("late")])
        );
        assert_eq!(
            run(Direction::Forward, true),
            s(&[Some("b"), Some("b"), Some("late"), None])
        );
        assert_eq!(
            run(Direction::Nearest, true),
            s(&[Some("b"), Some("b"), Some("b"), Some("late")])
        );
        // Without it the last row in input order wins.
        assert_eq!(
            run(Direction::Backward, false),
            s(&[None, Some("c"), Some("c"), Some("late")])
        );
        assert_eq!(
            run(Direction::Forward, false),
            s(&[Some("c"), Some("c"), Some("late"), None])
        );
    }

    #[test]
    fn sequence_breaks_full_ties_whatever_the_input_order() {
        // Key 1 at t = 5: three rows with equal tie_breaker, sequences 30, 10, 20; key 2: the tie_breaker
        // decides before the sequence. Every rotation of the right rows gives the same answer.
        let rows: Vec<(i64, i64, i64, i64, &str)> = vec![
            (1, 5, 7, 30, "a"),
            (1, 5, 7, 10, "b"),
            (1, 5, 7, 20, "c"),
            (1, 4, 9, 99, "old"),
            (2, 5, 8, 1, "x"),
            (2, 5, 3, 50, "y"),
        ];
        let left = table(vec![
            ("k", Arc::new(Int64Array::from(vec![1, 2, 1])) as ArrayRef),
            ("t", Arc::new(Int64Array::from(vec![5, 6, 4])) as ArrayRef),
        ]);
        for rot in 0..rows.len() {
            let mut r = rows.clone();
            r.rotate_left(rot);
            let col = |f: fn(&(i64, i64, i64, i64, &str)) -> i64| -> ArrayRef {
                Arc::new(Int64Array::from(r.iter().map(f).collect::<Vec<_>>()))
            };
            let right = table(vec![
                ("k", col(|x| x.0)),
                ("t", col(|x| x.1)),
                ("c", col(|x| x.2)),
                ("s", col(|x| x.3)),
                (
                    "v",
                    Arc::new(StringArray::from(r.iter().map(|x| x.4).collect::<Vec<_>>())) as ArrayRef,
                ),
            ]);
            let mut o = AsofOptions::new("t");
            o.by = vec!["k".into()];
            o.tie_breaker = Some("c".into());
            o.sequence = Some("s".into());
            for direction in [Direction::Backward, Direction::Forward, Direction::Nearest] {
                o.direction = direction;
                let out = asof_join(&left, &right, &o).unwrap();
                let v = out.batches[0].column(4).as_string::<i32>().clone();
                let got: Vec<Option<&str>> = v.iter().collect();
                let want = match direction {
                    Direction::Forward => vec![Some("a"), None, Some("old")],
                    _ => vec![Some("a"), Some("x"), Some("old")],
                };
                assert_eq!(got, want, "rotation {rot}, {direction:?}");
            }
            // Without the sequence the last of the three in input order wins instead.
            o.sequence = None;
            o.direction = Direction::Backward;
            let out = asof_join(&left, &right, &o).unwrap();
            let last = r.iter().rev().find(|x| x.0 == 1 && x.1 == 5).unwrap().4;
            assert_eq!(out.batches[0].column(4).as_string::<i32>().value(0), last);
        }
        // A sequence must be an integer or timestamp column.
        let right = table(vec![
            ("t", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("s", Arc::new(StringArray::from(vec!["x"])) as ArrayRef),
        ]);
        let mut o = AsofOptions::new("t");
        o.sequence = Some("s".into());
        let left = table(vec![("t", Arc::new(Int64Array::from(vec![1])) as ArrayRef)]);
        assert!(matches!(asof_join(&left, &right, &o), Err(Error::Dtype(_))));
        o.sequence = Some("nope".into());
        assert!(matches!(
            asof_join(&left, &right, &o),
            Err(Error::MissingColumn(_))
        ));
    }

    #[test]
    fn sorted_right_side_is_not_sorted_again() {
        let n = 50_000i64;
        let right = table(vec![
            (
                "k",
                Arc::new(Int64Array::from((0..n).map(|i| i / 5).collect::<Vec<_>>())) as ArrayRef,
            ),
            (
                "t",
                Arc::new(Int64Array::from((0..n).map(|i| i % 5).collect::<Vec<_>>())) as ArrayRef,
            ),
        ]);
        let left = table(vec![
            ("k", Arc::new(Int64Array::from(vec![3, 7])) as ArrayRef),
            ("t", Arc::new(Int64Array::from(vec![2, 9])) as ArrayRef),
        ]);
        let mut o = AsofOptions::new("t");
        o.by = vec!["k".into()];
        let (_, stats) = asof_join_with_stats(&left, &right, &o).unwrap();
        assert_eq!(stats.groups_sorted, 0);
    }
}
