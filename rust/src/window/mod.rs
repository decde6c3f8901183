//! Sliding-window aggregation: for an instant t and a window w, an aggregate over the events of one
//! entity whose time lies in (t - w, t] (exact microseconds, no truncation to days or tiles).
//!
//! One accumulator per function ([`Accumulator`]: `update` when an event enters the window, `retract`
//! when it leaves, `evaluate` at any point) serves both paths:
//! - the training-set backfill ([`sweep`]): one entity's events sorted once, its label instants sorted,
//!   every window of the view slid forward in one pass (two pointers each), so each event enters and
//!   leaves a window at most once whatever the number of labels, and not at all when no label reads it;
//! - serving ([`evaluate_at`]): a fresh accumulator fed the events inside the window at the request
//!   instant.
//!
//! Every accumulator's value is a function of the multiset of (non-null) values in the window, never of
//! the order they arrived or left in: sums are exact and rounded once ([`exact`]), min and max follow
//! IEEE total order, first and last follow the events' (time, write sequence) order. So the two paths
//! give the same bits by construction, and the tests hold them to it.
//!
//! Semantics: nulls are skipped by every function; an empty window gives null, except `count` and
//! `count_distinct` (0). `var_samp`/`stddev_samp` use n - 1 (null below two values), `var_pop`/
//! `stddev_pop` use n. `min`, `max`, `first` and `last` evaluate to the row that holds the value, so
//! they serve any orderable column type; the caller gathers the values.

pub mod backfill;
pub mod exact;
pub mod segment;
pub mod state;

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;

use arrow::array::*;
use arrow::buffer::NullBuffer;

use crate::error::{Error, Result};
use exact::{add_square, variance_numerator, ExactSum};

/// The aggregate functions, by their names in definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Func {
    Sum,
    Count,
    Mean,
    Min,
    Max,
    First,
    Last,
    VarSamp,
    VarPop,
    StddevSamp,
    StddevPop,
    CountDistinct,
}

impl Func {
    pub const ALL: [Func; 12] = [
        Func::Sum,
        Func::Count,
        Func::Mean,
        Func::Min,
        Func::Max,
        Func::First,
        Func::Last,
        Func::VarSamp,
        Func::VarPop,
        Func::StddevSamp,
        Func::StddevPop,
        Func::CountDistinct,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Func::Sum => "sum",
            Func::Count => "count",
            Func::Mean => "mean",
            Func::Min => "min",
            Func::Max => "max",
            Func::First => "first",
            Func::Last => "last",
            Func::VarSamp => "var_samp",
            Func::VarPop => "var_pop",
            Func::StddevSamp => "stddev_samp",
            Func::StddevPop => "stddev_pop",
            Func::CountDistinct => "count_distinct",
        }
    }
}

impl FromStr for Func {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Func::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Func::ALL.iter().map(|f| f.name()).collect();
            Error::InvalidArgument(format!("unknown aggregate function {s:?}; use one of {names:?}"))
        })
    }
}

/// What an accumulator evaluates to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Eval {
    F64(Option<f64>),
    I64(Option<i64>),
    /// The row holding the value (min, max, first, last), none for an empty window.
    Row(Option<usize>),
}

/// One aggregate over a sliding window. Rows enter (`update`) and leave (`retract`) in the same order,
/// the order of the events' (time, write sequence); a null row is ignored by both.
pub trait Accumulator {
    fn update(&mut self, row: usize);
    fn retract(&mut self, row: usize);
    /// Back to the state of a fresh accumulator (the empty window), keeping allocations for reuse.
    fn reset(&mut self);
    fn evaluate(&self) -> Result<Eval>;
    /// The value of `func` from this accumulator's state, for a function that shares it (see
    /// [`shares_state`]); any other function gets [`Accumulator::evaluate`].
    fn evaluate_as(&self, func: Func) -> Result<Eval> {
        let _ = func;
        self.evaluate()
    }
    /// `put(k, value of func)` for every `(k, func)` of `funcs` (each as [`Accumulator::evaluate_as`]
    /// gives it), sharing the work they have in common: the rounding of one exact sum.
    fn evaluate_each(&self, funcs: &[(usize, Func)], put: &mut impl FnMut(usize, Eval)) -> Result<()>
    where
        Self: Sized,
    {
        for &(k, f) in funcs {
            put(k, self.evaluate_as(f)?);
        }
        Ok(())
    }
}

/// Whether `func` over a column can be read from the state of `with` over the same column: sum, mean
/// and count of a numeric column all live in one sum accumulator (its exact sum and its count).
pub fn shares_state(func: Func, with: Func, numeric: bool) -> bool {
    let summing = |f: Func| matches!(f, Func::Sum | Func::Mean | Func::Count);
    numeric && summing(func) && summing(with)
}

/// The input column of an aggregation, read by row.
#[derive(Clone, Copy)]
pub enum Values<'a> {
    F64(&'a Float64Array),
    I64(&'a Int64Array),
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
}

impl<'a> Values<'a> {
    /// The column as one of the supported layouts (float64, int64, string, large string).
    pub fn new(a: &'a dyn Array, what: &str) -> Result<Self> {
        if let Some(a) = a.as_any().downcast_ref::<Float64Array>() {
            return Ok(Values::F64(a));
        }
        if let Some(a) = a.as_any().downcast_ref::<Int64Array>() {
            return Ok(Values::I64(a));
        }
        if let Some(a) = a.as_any().downcast_ref::<StringArray>() {
            return Ok(Values::Utf8(a));
        }
        if let Some(a) = a.as_any().downcast_ref::<LargeStringArray>() {
            return Ok(Values::LargeUtf8(a));
        }
        Err(Error::Dtype(format!(
            "{what} is {}; window aggregates read float64, int64 or string columns (cast it)",
            a.data_type()
        )))
    }

    fn nulls(&self) -> Option<&'a NullBuffer> {
        match *self {
            Values::F64(a) => a.nulls(),
            Values::I64(a) => a.nulls(),
            Values::Utf8(a) => a.nulls(),
            Values::LargeUtf8(a) => a.nulls(),
        }
    }

    fn is_numeric(&self) -> bool {
        matches!(self, Values::F64(_) | Values::I64(_))
    }

    /// The value as f64 (integers round to nearest, deterministically). Numeric columns only.
    #[inline]
    fn f64(&self, row: usize) -> f64 {
        match self {
            Values::F64(a) => a.value(row),
            Values::I64(a) => a.value(row) as f64,
            Values::Utf8(_) | Values::LargeUtf8(_) => f64::NAN,
        }
    }

    fn bytes(&self, row: usize) -> &'a [u8] {
        match *self {
            Values::Utf8(a) => a.value(row).as_bytes(),
            Values::LargeUtf8(a) => a.value(row).as_bytes(),
            Values::F64(_) | Values::I64(_) => &[],
        }
    }

    /// Total order of two rows' values: IEEE total order for floats, bytes for strings.
    fn cmp(&self, a: usize, b: usize) -> std::cmp::Ordering {
        match self {
            Values::F64(v) => v.value(a).total_cmp(&v.value(b)),
            Values::I64(v) => v.value(a).cmp(&v.value(b)),
            Values::Utf8(_) | Values::LargeUtf8(_) => self.bytes(a).cmp(self.bytes(b)),
        }
    }
}

/// Builds the accumulator of `func` over `values`; a function the column's type cannot take is a
/// Dtype error naming `what`.
pub fn accumulator<'a>(func: Func, values: Values<'a>, what: &str) -> Result<Acc<'a>> {
    let valid = values.nulls();
    let numeric_only = matches!(
        func,
        Func::Sum | Func::Mean | Func::VarSamp | Func::VarPop | Func::StddevSamp | Func::StddevPop
    );
    if numeric_only && !values.is_numeric() {
        return Err(Error::Dtype(format!(
            "{what}: {} needs a numeric column (int64 or float64)",
            func.name()
        )));
    }
    if func == Func::CountDistinct && matches!(values, Values::F64(_)) {
        return Err(Error::Dtype(format!(
            "{what}: count_distinct counts integer or string values, not floats"
        )));
    }
    let live = Live { valid };
    Ok(match func {
        Func::Count => Acc::Count(CountAcc { live, n: 0 }),
        Func::Sum | Func::Mean => match values {
            Values::I64(v) => Acc::IntSum(IntSum {
                live,
                v,
                sum: 0,
                n: 0,
                mean: func == Func::Mean,
            }),
            _ => Acc::FloatSum(FloatSum {
                live,
                v: values,
                sum: ExactSum::default(),
                n: 0,
                mean: func == Func::Mean,
            }),
        },
        Func::VarSamp | Func::VarPop | Func::StddevSamp | Func::StddevPop => Acc::Moments(Moments {
            live,
            v: values,
            s: ExactSum::default(),
            q: ExactSum::default(),
            n: 0,
            func,
        }),
        Func::Min | Func::Max => Acc::Extreme(Extreme {
            live,
            v: values,
            rows: VecDeque::new(),
            max: func == Func::Max,
        }),
        Func::First | Func::Last => Acc::Ends(Ends {
            live,
            rows: VecDeque::new(),
            last: func == Func::Last,
        }),
        Func::CountDistinct => Acc::Distinct(Distinct {
            live,
            v: values,
            ints: HashMap::new(),
            strs: HashMap::new(),
        }),
    })
}

/// Every accumulator, as one type: the backfill's sweep dispatches once per run of events
/// ([`Acc::update_rows`]) instead of once per event, and serving builds one without a heap allocation.
// The exact sums make two variants large (about 0.6 and 1.2 KB); accumulators are built a few per
// worker and reused across entities, so their size costs nothing and boxing would cost a pointer
// chase per event.
#[allow(clippy::large_enum_variant)]
pub enum Acc<'a> {
    Count(CountAcc<'a>),
    IntSum(IntSum<'a>),
    FloatSum(FloatSum<'a>),
    Moments(Moments<'a>),
    Extreme(Extreme<'a>),
    Ends(Ends<'a>),
    Distinct(Distinct<'a>),
}

/// `$body` with `$a` bound to the accumulator inside `$acc`, whatever its kind.
macro_rules! each_kind {
    ($acc:expr, $a:ident => $body:expr) => {
        match $acc {
            Acc::Count($a) => $body,
            Acc::IntSum($a) => $body,
            Acc::FloatSum($a) => $body,
            Acc::Moments($a) => $body,
            Acc::Extreme($a) => $body,
            Acc::Ends($a) => $body,
            Acc::Distinct($a) => $body,
        }
    };
}

impl Acc<'_> {
    /// `update` of every row of `rows`, in order.
    #[inline]
    pub fn update_rows(&mut self, rows: &[usize]) {
        each_kind!(self, a => rows.iter().for_each(|&r| a.update(r)))
    }

    /// `retract` of every row of `rows`, in order.
    #[inline]
    pub fn retract_rows(&mut self, rows: &[usize]) {
        each_kind!(self, a => rows.iter().for_each(|&r| a.retract(r)))
    }
}

impl Accumulator for Acc<'_> {
    #[inline]
    fn update(&mut self, row: usize) {
        each_kind!(self, a => a.update(row))
    }
    #[inline]
    fn retract(&mut self, row: usize) {
        each_kind!(self, a => a.retract(row))
    }
    #[inline]
    fn reset(&mut self) {
        each_kind!(self, a => a.reset())
    }
    fn evaluate(&self) -> Result<Eval> {
        each_kind!(self, a => a.evaluate())
    }
    fn evaluate_as(&self, func: Func) -> Result<Eval> {
        each_kind!(self, a => a.evaluate_as(func))
    }
    fn evaluate_each(&self, funcs: &[(usize, Func)], put: &mut impl FnMut(usize, Eval)) -> Result<()> {
        each_kind!(self, a => a.evaluate_each(funcs, put))
    }
}

/// Which rows count: the non-null ones.
#[derive(Clone, Copy)]
struct Live<'a> {
    valid: Option<&'a NullBuffer>,
}

impl Live<'_> {
    #[inline]
    fn ok(&self, row: usize) -> bool {
        self.valid.is_none_or(|n| n.is_valid(row))
    }
}

pub struct CountAcc<'a> {
    live: Live<'a>,
    n: i64,
}

impl Accumulator for CountAcc<'_> {
    fn update(&mut self, row: usize) {
        self.n += i64::from(self.live.ok(row));
    }
    fn retract(&mut self, row: usize) {
        self.n -= i64::from(self.live.ok(row));
    }
    #[inline]
    fn reset(&mut self) {
        self.n = 0;
    }
    fn evaluate(&self) -> Result<Eval> {
        Ok(Eval::I64(Some(self.n)))
    }
}

/// Sum or mean of int64: an exact i128 sum (a window cannot hold 2^64 values of 2^63).
pub struct IntSum<'a> {
    live: Live<'a>,
    v: &'a Int64Array,
    sum: i128,
    n: u64,
    mean: bool,
}

impl Accumulator for IntSum<'_> {
    fn update(&mut self, row: usize) {
        if self.live.ok(row) {
            self.sum += i128::from(self.v.value(row));
            self.n += 1;
        }
    }
    fn retract(&mut self, row: usize) {
        if self.live.ok(row) {
            self.sum -= i128::from(self.v.value(row));
            self.n -= 1;
        }
    }
    #[inline]
    fn reset(&mut self) {
        self.sum = 0;
        self.n = 0;
    }
    fn evaluate(&self) -> Result<Eval> {
        self.evaluate_as(if self.mean { Func::Mean } else { Func::Sum })
    }
    fn evaluate_as(&self, func: Func) -> Result<Eval> {
        if func == Func::Count {
            return Ok(Eval::I64(Some(self.n as i64)));
        }
        let mean = func == Func::Mean;
        if self.n == 0 {
            return Ok(if mean { Eval::F64(None) } else { Eval::I64(None) });
        }
        if mean {
            // One rounding of the exact sum, one of the quotient: the same bits in both paths.
            return Ok(Eval::F64(Some(self.sum as f64 / self.n as f64)));
        }
        i64::try_from(self.sum).map(|s| Eval::I64(Some(s))).map_err(|_| {
            Error::InvalidArgument(format!(
                "a window sum of int64 values is {} and overflows int64; aggregate a float64 column",
                self.sum
            ))
        })
    }
}

/// Sum or mean of floats: exact, rounded once when evaluated.
pub struct FloatSum<'a> {
    live: Live<'a>,
    v: Values<'a>,
    sum: ExactSum,
    n: u64,
    mean: bool,
}

impl Accumulator for FloatSum<'_> {
    fn update(&mut self, row: usize) {
        if self.live.ok(row) {
            self.sum.add(self.v.f64(row));
            self.n += 1;
        }
    }
    fn retract(&mut self, row: usize) {
        if self.live.ok(row) {
            self.sum.sub(self.v.f64(row));
            self.n -= 1;
        }
    }
    #[inline]
    fn reset(&mut self) {
        self.sum.reset();
        self.n = 0;
    }
    fn evaluate(&self) -> Result<Eval> {
        self.evaluate_as(if self.mean { Func::Mean } else { Func::Sum })
    }
    fn evaluate_as(&self, func: Func) -> Result<Eval> {
        let s = (func != Func::Count && self.n > 0).then(|| self.sum.value());
        Ok(self.read(func, s))
    }
    fn evaluate_each(&self, funcs: &[(usize, Func)], put: &mut impl FnMut(usize, Eval)) -> Result<()> {
        let s = (self.n > 0).then(|| self.sum.value());
        for &(k, f) in funcs {
            put(k, self.read(f, s));
        }
        Ok(())
    }
}

impl FloatSum<'_> {
    /// `func` (sum, mean or count) given the rounded sum `s` (none for an empty window).
    fn read(&self, func: Func, s: Option<f64>) -> Eval {
        match (func, s) {
            (Func::Count, _) => Eval::I64(Some(self.n as i64)),
            (Func::Mean, Some(s)) => Eval::F64(Some(s / self.n as f64)),
            (_, s) => Eval::F64(s),
        }
    }
}

/// Variance and standard deviation from exact sums of the values and of their squares.
pub struct Moments<'a> {
    live: Live<'a>,
    v: Values<'a>,
    s: ExactSum,
    q: ExactSum,
    n: u64,
    func: Func,
}

impl Accumulator for Moments<'_> {
    fn update(&mut self, row: usize) {
        if self.live.ok(row) {
            let x = self.v.f64(row);
            self.s.add(x);
            add_square(&mut self.q, x, 1);
            self.n += 1;
        }
    }
    fn retract(&mut self, row: usize) {
        if self.live.ok(row) {
            let x = self.v.f64(row);
            self.s.sub(x);
            add_square(&mut self.q, x, -1);
            self.n -= 1;
        }
    }
    #[inline]
    fn reset(&mut self) {
        self.s.reset();
        self.q.reset();
        self.n = 0;
    }
    fn evaluate(&self) -> Result<Eval> {
        let samp = matches!(self.func, Func::VarSamp | Func::StddevSamp);
        if self.n == 0 || (samp && self.n < 2) {
            return Ok(Eval::F64(None));
        }
        let n = self.n as f64;
        // n*sum(x^2) - sum(x)^2 >= 0 exactly; the clamp guards values too large for exact arithmetic
        // and gives a zero one sign (NaN stays NaN).
        let num = variance_numerator(self.n, &self.s, &self.q);
        let num = if num > 0.0 || num.is_nan() { num } else { 0.0 };
        let var = if samp {
            num / (n * (n - 1.0))
        } else {
            num / (n * n)
        };
        let sd = matches!(self.func, Func::StddevSamp | Func::StddevPop);
        Ok(Eval::F64(Some(if sd { var.sqrt() } else { var })))
    }
}

/// Min or max: a monotonic deque of rows (each row enters and leaves once, so O(1) amortized).
///
/// A numeric row enters with its sort key beside it ([`order_key`]), so the comparisons that pop the
/// deque read neither the column nor its type again; strings compare their bytes.
pub struct Extreme<'a> {
    live: Live<'a>,
    v: Values<'a>,
    rows: VecDeque<(i64, usize)>,
    max: bool,
}

/// An i64 whose order is the value's total order: the integer itself, or for a double the IEEE
/// total-order key (`f64::total_cmp` compares the same key).
#[inline]
fn order_key(v: &Values<'_>, row: usize) -> i64 {
    match v {
        Values::F64(a) => {
            let b = a.values()[row].to_bits() as i64;
            b ^ (((b >> 63) as u64) >> 1) as i64
        }
        Values::I64(a) => a.values()[row],
        Values::Utf8(_) | Values::LargeUtf8(_) => 0,
    }
}

impl Accumulator for Extreme<'_> {
    fn update(&mut self, row: usize) {
        if !self.live.ok(row) {
            return;
        }
        use std::cmp::Ordering::*;
        // Drop rows the new one beats for as long as it stays in the window; ties keep the newer row
        // (same bits, or same bytes, either way).
        let key = order_key(&self.v, row);
        if self.v.is_numeric() {
            while let Some(&(k, _)) = self.rows.back() {
                let beaten = if self.max { k <= key } else { k >= key };
                if !beaten {
                    break;
                }
                self.rows.pop_back();
            }
        } else {
            while let Some(&(_, b)) = self.rows.back() {
                let o = self.v.cmp(b, row);
                let beaten = if self.max { o != Greater } else { o != Less };
                if !beaten {
                    break;
                }
                self.rows.pop_back();
            }
        }
        self.rows.push_back((key, row));
    }
    fn retract(&mut self, row: usize) {
        if self.rows.front().map(|&(_, r)| r) == Some(row) {
            self.rows.pop_front();
        }
    }
    #[inline]
    fn reset(&mut self) {
        self.rows.clear();
    }
    fn evaluate(&self) -> Result<Eval> {
        Ok(Eval::Row(self.rows.front().map(|&(_, r)| r)))
    }
}

/// First or last non-null row in (time, write sequence) order.
pub struct Ends<'a> {
    live: Live<'a>,
    rows: VecDeque<usize>,
    last: bool,
}

impl Accumulator for Ends<'_> {
    fn update(&mut self, row: usize) {
        if self.live.ok(row) {
            if self.last {
                // Only the newest row can be last; older ones never come back.
                self.rows.clear();
            }
            self.rows.push_back(row);
        }
    }
    fn retract(&mut self, row: usize) {
        if self.rows.front() == Some(&row) {
            self.rows.pop_front();
        }
    }
    #[inline]
    fn reset(&mut self) {
        self.rows.clear();
    }
    fn evaluate(&self) -> Result<Eval> {
        Ok(Eval::Row(
            if self.last {
                self.rows.back()
            } else {
                self.rows.front()
            }
            .copied(),
        ))
    }
}

/// Exact count of distinct integer or string values.
pub struct Distinct<'a> {
    live: Live<'a>,
    v: Values<'a>,
    ints: HashMap<i64, u32>,
    strs: HashMap<&'a [u8], u32>,
}

impl Accumulator for Distinct<'_> {
    fn update(&mut self, row: usize) {
        if !self.live.ok(row) {
            return;
        }
        match self.v {
            Values::I64(a) => *self.ints.entry(a.value(row)).or_insert(0) += 1,
            _ => *self.strs.entry(self.v.bytes(row)).or_insert(0) += 1,
        }
    }
    fn retract(&mut self, row: usize) {
        if !self.live.ok(row) {
            return;
        }
        fn dec<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: K) {
            if let Some(c) = m.get_mut(&k) {
                *c -= 1;
                if *c == 0 {
                    m.remove(&k);
                }
            }
        }
        match self.v {
            Values::I64(a) => dec(&mut self.ints, a.value(row)),
            _ => dec(&mut self.strs, self.v.bytes(row)),
        }
    }
    #[inline]
    fn reset(&mut self) {
        self.ints.clear();
        self.strs.clear();
    }
    fn evaluate(&self) -> Result<Eval> {
        Ok(Eval::I64(Some((self.ints.len() + self.strs.len()) as i64)))
    }
}

/// One window of a [`sweep`]: its length, the accumulators over it, and the entity's events they hold
/// (`lo..hi`).
pub struct Lane<'a> {
    pub w: i64,
    pub accs: Vec<Acc<'a>>,
    lo: usize,
    hi: usize,
    /// Whether the accumulators took an event since their last reset.
    dirty: bool,
}

impl<'a> Lane<'a> {
    pub fn new(w: i64, accs: Vec<Acc<'a>>) -> Lane<'a> {
        Lane {
            w,
            accs,
            lo: 0,
            hi: 0,
            dirty: true,
        }
    }

    fn reset(&mut self) {
        if self.dirty {
            self.accs.iter_mut().for_each(Accumulator::reset);
            self.dirty = false;
        }
    }
}

/// The backfill of one entity: evaluates every lane's accumulators at every label, all windows in one
/// pass over the labels.
///
/// `rows[i]` is the row (in the value columns) of the entity's i-th event in (time, write sequence)
/// order and `times[i]` its time; `labels` holds (instant, output slot) sorted by instant. Any
/// lanes may be given (reused from another entity: they are reset first). `emit(lane, k, slot, acc)`
/// reads accumulator k of a lane for the label of `slot`.
///
/// Work follows what the labels read, not the events: an event that would enter and leave a window
/// between two labels is never touched, and a window all of whose events leave is reset rather than
/// retracted event by event. Both are exact: every accumulator's value is a function of the events in
/// the window alone (module docs), and a reset one holds none.
pub fn sweep(
    rows: &[usize],
    times: &[i64],
    labels: &[(i64, usize)],
    lanes: &mut [Lane<'_>],
    mut emit: impl FnMut(usize, usize, usize, &Acc<'_>) -> Result<()>,
) -> Result<()> {
    debug_assert_eq!(rows.len(), times.len());
    for lane in lanes.iter_mut() {
        lane.reset();
        (lane.lo, lane.hi) = (0, 0);
    }
    // Events at or before the current label: the end of every window.
    let mut end = 0;
    for &(t, slot) in labels {
        while end < times.len() && times[end] <= t {
            end += 1;
        }
        for (j, lane) in lanes.iter_mut().enumerate() {
            // Events at or before t - w leave; t - w < t.
            let start = t.saturating_sub(lane.w);
            if lane.lo < lane.hi && times[lane.hi - 1] <= start {
                lane.reset();
                lane.lo = lane.hi;
            }
            let mut lo = lane.lo;
            while lo < lane.hi && times[lo] <= start {
                lo += 1;
            }
            if lo > lane.lo {
                let gone = &rows[lane.lo..lo];
                lane.accs.iter_mut().for_each(|a| a.retract_rows(gone));
                lane.lo = lo;
            }
            if lane.lo == lane.hi {
                // An empty window: the events up to its start would enter and leave at once.
                while lane.hi < end && times[lane.hi] <= start {
                    lane.hi += 1;
                }
                lane.lo = lane.hi;
            }
            if lane.hi < end {
                let new = &rows[lane.hi..end];
                lane.accs.iter_mut().for_each(|a| a.update_rows(new));
                lane.hi = end;
                lane.dirty = true;
            }
            for (k, a) in lane.accs.iter().enumerate() {
                emit(j, k, slot, a)?;
            }
        }
    }
    Ok(())
}

/// Serving: the value of `acc` (fresh) at instant `t` over the entity's events, from the events inside
/// (t - w, t]: `rows[i]` is the row of the entity's i-th event in (time, write sequence) order, `times[i]`
/// its time.
pub fn evaluate_at(rows: &[usize], times: &[i64], t: i64, w: i64, acc: &mut dyn Accumulator) -> Result<Eval> {
    let start = t.saturating_sub(w);
    let lo = times.partition_point(|&x| x <= start);
    let hi = times.partition_point(|&x| x <= t);
    for &r in &rows[lo..hi.max(lo)] {
        acc.update(r);
    }
    acc.evaluate()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    /// Events of one entity: times with ties and bursts (sorted), float values with nulls, NaN,
    /// infinities and wide magnitudes, int values with nulls.
    fn stream(seed: u64, n: usize) -> (Vec<i64>, Float64Array, Int64Array) {
        let mut r = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut t = 0i64;
        let mut times = Vec::new();
        let mut fv = Vec::new();
        let mut iv = Vec::new();
        for _ in 0..n {
            t += [0, 0, 1, 3, 10, 50][r.below(6)];
            times.push(t);
            fv.push(match r.below(20) {
                0 => None,
                1 if seed % 5 == 0 => Some(f64::NAN),
                2 if seed % 7 == 0 => Some(f64::INFINITY),
                3 => Some(-0.0),
                _ => Some((r.below(2000) as f64 - 1000.0) * 10f64.powi(r.below(12) as i32 - 6)),
            });
            iv.push(if r.below(10) == 0 {
                None
            } else {
                Some(r.below(7) as i64 - 3)
            });
        }
        (times, Float64Array::from(fv), Int64Array::from(iv))
    }

    fn same(a: Eval, b: Eval) -> bool {
        match (a, b) {
            (Eval::F64(Some(x)), Eval::F64(Some(y))) => x.to_bits() == y.to_bits(),
            _ => a == b,
        }
    }

    /// The oracle: a brute-force loop over the window with plain arithmetic (exact for the integer
    /// column) and sorting for min/max.
    fn brute_int(func: Func, vals: &[Option<i64>]) -> Eval {
        let v: Vec<i64> = vals.iter().flatten().copied().collect();
        let n = v.len();
        let f = |x: f64| Eval::F64(Some(x));
        match func {
            Func::Count => Eval::I64(Some(n as i64)),
            Func::CountDistinct => {
                let mut d = v.clone();
                d.sort();
                d.dedup();
                Eval::I64(Some(d.len() as i64))
            }
            Func::Sum if n == 0 => Eval::I64(None),
            _ if n == 0 => Eval::F64(None),
            Func::Sum => Eval::I64(Some(v.iter().sum())),
            Func::Mean => f(v.iter().sum::<i64>() as f64 / n as f64),
            Func::VarSamp | Func::StddevSamp | Func::VarPop | Func::StddevPop => {
                let samp = matches!(func, Func::VarSamp | Func::StddevSamp);
                if samp && n < 2 {
                    return Eval::F64(None);
                }
                let s: i64 = v.iter().sum();
                let q: i64 = v.iter().map(|x| x * x).sum();
                let num = (n as i64 * q - s * s) as f64;
                let var = if samp {
                    num / (n * (n - 1)) as f64
                } else {
                    num / (n * n) as f64
                };
                f(if matches!(func, Func::StddevSamp | Func::StddevPop) {
                    var.sqrt()
                } else {
                    var
                })
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn sweep_equals_evaluate_at_bit_for_bit_and_the_oracle() {
        for seed in 0..300u64 {
            let n = 1 + (seed as usize * 7) % 60;
            let (times, fv, iv) = stream(seed, n);
            let rows: Vec<usize> = (0..n).collect();
            // Every window of the seed's set in one sweep (lanes), reused across the two columns.
            let ws: &[i64] = [&[1, 20][..], &[2, 100, 5], &[1000], &[5, 20, 1, 100]][seed as usize % 4];
            let tmax = times[n - 1] + ws.iter().max().unwrap() + 5;
            let n_labels = 40 + (seed as usize % 3) * 30;
            let mut labels: Vec<(i64, usize)> = (0..n_labels as i64)
                .map(|i| (((i * 37 + seed as i64) % (tmax + 10)) - 5, i as usize))
                .collect();
            labels.sort();
            for func in Func::ALL {
                for (values, is_int) in [(Values::F64(&fv), false), (Values::I64(&iv), true)] {
                    if accumulator(func, values, "x").is_err() {
                        assert!(func == Func::CountDistinct && !is_int);
                        continue;
                    }
                    let mut lanes: Vec<Lane<'_>> = ws
                        .iter()
                        .map(|&w| Lane::new(w, vec![accumulator(func, values, "x").unwrap()]))
                        .collect();
                    // Twice through the same lanes: the second sweep starts from reset state.
                    for _ in 0..2 {
                        let mut got = vec![vec![None; labels.len()]; ws.len()];
                        sweep(&rows, &times, &labels, &mut lanes, |j, _, slot, a| {
                            got[j][slot] = Some(a.evaluate()?);
                            Ok(())
                        })
                        .unwrap();
                        for (j, &w) in ws.iter().enumerate() {
                            for &(t, slot) in &labels {
                                let mut fresh = accumulator(func, values, "x").unwrap();
                                let want = evaluate_at(&rows, &times, t, w, &mut fresh).unwrap();
                                let g = got[j][slot].unwrap();
                                assert!(
                                    same(g, want),
                                    "{func:?} int={is_int} seed {seed} t {t}: {g:?} vs {want:?}"
                                );
                                let inside: Vec<usize> =
                                    (0..n).filter(|&i| times[i] > t - w && times[i] <= t).collect();
                                match (func, is_int) {
                                    (Func::Min | Func::Max | Func::First | Func::Last, _) => {
                                        let live: Vec<usize> = inside
                                            .iter()
                                            .copied()
                                            .filter(|&i| values.nulls().is_none_or(|b| b.is_valid(i)))
                                            .collect();
                                        let pick = match func {
                                            Func::First => live.first().copied(),
                                            Func::Last => live.last().copied(),
                                            Func::Min => {
                                                live.iter().copied().min_by(|&a, &b| values.cmp(a, b))
                                            }
                                            _ => live.iter().copied().max_by(|&a, &b| values.cmp(a, b)),
                                        };
                                        let Eval::Row(r) = g else { panic!("{g:?}") };
                                        // Ties may pick another row holding the same bits.
                                        assert_eq!(
                                            r.map(|r| bits(values, r)),
                                            pick.map(|r| bits(values, r)),
                                            "{func:?} seed {seed}"
                                        );
                                    }
                                    (_, true) => {
                                        let vals: Vec<Option<i64>> = inside
                                            .iter()
                                            .map(|&i| iv.is_valid(i).then(|| iv.value(i)))
                                            .collect();
                                        let want = brute_int(func, &vals);
                                        let close = match (g, want) {
                                            (Eval::F64(Some(a)), Eval::F64(Some(b))) => {
                                                a == b || (a - b).abs() <= 1e-12 * b.abs()
                                            }
                                            _ => g == want,
                                        };
                                        assert!(close, "{func:?} seed {seed} t {t}: {g:?} vs {want:?}");
                                    }
                                    (Func::Count, false) => {
                                        let c = inside.iter().filter(|&&i| fv.is_valid(i)).count() as i64;
                                        assert_eq!(g, Eval::I64(Some(c)));
                                    }
                                    // Float sums and moments: the exact-sum tests in `exact` hold their rounding.
                                    _ => {}
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn bits(values: Values<'_>, r: usize) -> u64 {
        match values {
            Values::F64(a) => a.value(r).to_bits(),
            Values::I64(a) => a.value(r) as u64,
            _ => 0,
        }
    }

    #[test]
    fn empty_windows_and_bad_types() {
        let fv = Float64Array::from(vec![Some(1.0), None]);
        let s = StringArray::from(vec!["a", "b"]);
        let rows = [0, 1];
        let times = [10, 20];
        for (func, want) in [
            (Func::Sum, Eval::F64(None)),
            (Func::Count, Eval::I64(Some(0))),
            (Func::Max, Eval::Row(None)),
            (Func::StddevSamp, Eval::F64(None)),
        ] {
            let mut a = accumulator(func, Values::F64(&fv), "x").unwrap();
            assert_eq!(evaluate_at(&rows, &times, 5, 3, &mut a).unwrap(), want);
        }
        // The null at 20 is skipped: the window (10, 20] holds no value.
        let mut a = accumulator(Func::Mean, Values::F64(&fv), "x").unwrap();
        assert_eq!(
            evaluate_at(&rows, &times, 20, 10, &mut a).unwrap(),
            Eval::F64(None)
        );
        assert!(matches!(
            accumulator(Func::Sum, Values::Utf8(&s), "x"),
            Err(Error::Dtype(_))
        ));
        assert!(matches!(
            accumulator(Func::CountDistinct, Values::F64(&fv), "x"),
            Err(Error::Dtype(_))
        ));
        let mut d = accumulator(Func::CountDistinct, Values::Utf8(&s), "x").unwrap();
        assert_eq!(
            evaluate_at(&rows, &times, 20, 100, &mut d).unwrap(),
            Eval::I64(Some(2))
        );
        assert!("median".parse::<Func>().is_err());
        assert_eq!("stddev_pop".parse::<Func>().unwrap(), Func::StddevPop);
    }

    #[test]
    fn order_key_orders_as_total_cmp() {
        let xs = [
            f64::NEG_INFINITY,
            -f64::NAN,
            f64::NAN,
            -1e300,
            -1.0,
            -f64::from_bits(1),
            -0.0,
            0.0,
            f64::from_bits(1),
            2.5,
            f64::MAX,
            f64::INFINITY,
        ];
        let a = Float64Array::from(xs.to_vec());
        let v = Values::F64(&a);
        for i in 0..xs.len() {
            for j in 0..xs.len() {
                assert_eq!(
                    order_key(&v, i).cmp(&order_key(&v, j)),
                    xs[i].total_cmp(&xs[j]),
                    "{} vs {}",
                    xs[i],
                    xs[j]
                );
            }
        }
    }

    #[test]
    fn int_sum_overflow_is_an_error() {
        let iv = Int64Array::from(vec![i64::MAX, 1]);
        let mut a = accumulator(Func::Sum, Values::I64(&iv), "x").unwrap();
        assert!(matches!(
            evaluate_at(&[0, 1], &[1, 2], 2, 10, &mut a),
            Err(Error::InvalidArgument(_))
        ));
    }
}
