//! Built-in transforms and imputation fills over Arrow columns: the one implementation that both the
//! training set (offline retrieval) and the served vector (the serving plan's post-stage) run, so a value
//! is the same bits in both. Compiled once from plain parameters (the registry's spec is parsed by the
//! binding layer); nothing here knows of Python or of the registry.
//!
//! Semantics, per operation (the input of a numeric operation is read as float64: integers and float32
//! are converted exactly as Arrow's cast does; a null input gives a null output in every operation):
//!
//! - `ZScore { mean, std }`: `(x - mean) / std`. The registry passes a statistics artifact's `mean` and
//!   `stddev_samp` (n - 1). NaN stays NaN, an infinity stays an infinity of the same sign.
//! - `MinMax { min, max }`: `(x - min) / (max - min)`; values outside `[min, max]` fall outside `[0, 1]`
//!   (not clipped: compose with `Clip`). NaN stays NaN.
//! - `Clip { lo, hi }`: `x` bounded to `[lo, hi]` (either side optional); NaN stays NaN, infinities
//!   become the bound.
//! - `Log1p`: `ln(1 + x)` (libm's `log1p`); `-1` gives `-inf`, below `-1` NaN, `+inf` stays `+inf`.
//! - `Bucketize { boundaries }` (strictly increasing, finite): the int32 index `i` such that
//!   `boundaries[i-1] <= x < boundaries[i]`, from 0 (below the first) to `len` (at or above the last);
//!   `-inf` is 0, `+inf` is `len`, NaN has no bucket: null.
//! - `OneHot { categories }`: a `fixed_size_list<float64>[k]`, 1.0 at the category's position and 0.0
//!   elsewhere; a value in no category is all zeros. Integer inputs match integer categories, strings
//!   string categories.
//! - A fill (`Node::Fill`): every null of the column replaced by one value of the column's type; the
//!   rows it filled are reported as a mask (the `IMPUTED` status online, `<feature>__imputed` offline).
//! - A fill from a column (`Node::FillFrom`): every null of the column replaced by the same row of
//!   another column of the same type (the `previous` strategy: the feature's last non-null value);
//!   where that one is null too the value stays null. The mask holds the rows it filled.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, FixedSizeListArray, Float64Array, Int32Array, PrimitiveArray,
};
use arrow::buffer::NullBuffer;
use arrow::compute::kernels::cast::cast;
use arrow::compute::kernels::zip::zip;
use arrow::compute::{and, is_not_null, is_null, or};
use arrow::datatypes::{ArrowPrimitiveType, DataType, Field, Float32Type, Float64Type, Int32Type, Int64Type};

use crate::error::{Error, Result};

pub mod dense;

/// The categories of a one-hot encoding.
#[derive(Clone, Debug, PartialEq)]
pub enum Categories {
    Int(Vec<i64>),
    Str(Vec<String>),
}

/// One built-in operation, with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    ZScore { mean: f64, std: f64 },
    MinMax { min: f64, max: f64 },
    Clip { lo: Option<f64>, hi: Option<f64> },
    Log1p,
    Bucketize { boundaries: Vec<f64> },
    OneHot { categories: Categories },
}

fn finite(name: &str, what: &str, x: f64) -> Result<()> {
    if x.is_finite() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{name}: {what} is {x}, not a finite number; use a statistics artifact computed over data with \
             finite values"
        )))
    }
}

impl Op {
    /// Checks the parameters (`name`: the output, for messages).
    pub fn check(&self, name: &str) -> Result<()> {
        match self {
            Op::ZScore { mean, std } => {
                finite(name, "the mean", *mean)?;
                finite(name, "the standard deviation", *std)?;
                if *std <= 0.0 {
                    return Err(Error::InvalidArgument(format!(
                        "{name}: the standard deviation is {std}; a z-score needs a positive one (the feature \
                         is constant or has fewer than 2 values in the artifact)"
                    )));
                }
            }
            Op::MinMax { min, max } => {
                finite(name, "the minimum", *min)?;
                finite(name, "the maximum", *max)?;
                if max <= min {
                    return Err(Error::InvalidArgument(format!(
                        "{name}: min-max scaling needs max > min, got min {min} and max {max}"
                    )));
                }
            }
            Op::Clip { lo, hi } => {
                if lo.is_some_and(f64::is_nan) || hi.is_some_and(f64::is_nan) {
                    return Err(Error::InvalidArgument(format!("{name}: a clip bound is NaN")));
                }
                if let (Some(l), Some(h)) = (lo, hi) {
                    if l > h {
                        return Err(Error::InvalidArgument(format!(
                            "{name}: clip bounds lo {l} > hi {h}; swap them"
                        )));
                    }
                }
            }
            Op::Log1p => {}
            Op::Bucketize { boundaries } => {
                if boundaries.is_empty()
                    || boundaries.iter().any(|b| !b.is_finite())
                    || boundaries.windows(2).any(|w| w[0] >= w[1])
                {
                    return Err(Error::InvalidArgument(format!(
                        "{name}: bucket boundaries must be finite and strictly increasing, got {boundaries:?}"
                    )));
                }
            }
            Op::OneHot { categories } => {
                let (n, dup) = match categories {
                    Categories::Int(c) => (c.len(), has_dup(c)),
                    Categories::Str(c) => (c.len(), has_dup(c)),
                };
                if n == 0 || dup || n > i32::MAX as usize {
                    return Err(Error::InvalidArgument(format!(
                        "{name}: one-hot categories must be a non-empty list without repeats"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The Arrow type of the output.
    pub fn output_type(&self) -> DataType {
        match self {
            Op::Bucketize { .. } => DataType::Int32,
            Op::OneHot { categories } => {
                let k = match categories {
                    Categories::Int(c) => c.len(),
                    Categories::Str(c) => c.len(),
                };
                DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float64, true)), k as i32)
            }
            _ => DataType::Float64,
        }
    }

    /// Runs this operation's arithmetic through `e` when it maps one float to one float (z-score,
    /// min-max, clip, log1p; None for the others). The closures here are the one definition of that
    /// arithmetic: the Arrow path maps a column with them, the dense path ([`dense`]) a buffer's rows.
    #[inline]
    pub fn scalar<E: Each>(&self, e: E) -> Option<E::Out> {
        Some(match self {
            Op::ZScore { mean, std } => {
                let (m, s) = (*mean, *std);
                e.each(move |v| (v - m) / s)
            }
            Op::MinMax { min, max } => {
                let (lo, span) = (*min, *max - *min);
                e.each(move |v| (v - lo) / span)
            }
            Op::Clip { lo, hi } => {
                let (lo, hi) = (lo.unwrap_or(f64::NEG_INFINITY), hi.unwrap_or(f64::INFINITY));
                // f64::clamp would keep NaN too, but says nothing about it: the branch makes it explicit.
                e.each(move |v| if v.is_nan() { v } else { v.clamp(lo, hi) })
            }
            Op::Log1p => e.each(f64::ln_1p),
            Op::Bucketize { .. } | Op::OneHot { .. } => return None,
        })
    }

    /// Applies the operation to one column.
    pub fn apply(&self, name: &str, x: &ArrayRef) -> Result<ArrayRef> {
        match self {
            Op::Bucketize { boundaries } => {
                let v = numeric(name, x)?;
                let v = v.as_primitive::<Float64Type>();
                let out: Int32Array = v.iter().map(|o| o.and_then(|v| bucket(boundaries, v))).collect();
                Ok(Arc::new(out))
            }
            Op::OneHot { categories } => one_hot(name, x, categories),
            _ => {
                let v = numeric(name, x)?;
                let out = self
                    .scalar(MapF64(v.as_primitive::<Float64Type>()))
                    .ok_or_else(|| Error::Internal(format!("{name}: not a scalar operation")))?;
                Ok(Arc::new(out))
            }
        }
    }
}

/// Runs one scalar kernel over a set of values (see [`Op::scalar`]).
pub trait Each {
    type Out;
    fn each<F: Fn(f64) -> f64>(self, f: F) -> Self::Out;
}

/// A float64 column mapped value by value: computed on every slot (a null slot's bits are arbitrary but
/// harmless), the null mask kept as is.
struct MapF64<'a>(&'a Float64Array);

impl Each for MapF64<'_> {
    type Out = Float64Array;
    fn each<F: Fn(f64) -> f64>(self, f: F) -> Float64Array {
        self.0.unary(f)
    }
}

/// The bucket of `v` (see `Bucketize` in the module docs): None for NaN.
#[inline]
pub fn bucket(boundaries: &[f64], v: f64) -> Option<i32> {
    (!v.is_nan()).then(|| boundaries.partition_point(|b| *b <= v) as i32)
}

fn has_dup<T: PartialEq>(v: &[T]) -> bool {
    v.iter().enumerate().any(|(i, a)| v[..i].contains(a))
}

/// The column as float64 (integers and float32 converted as Arrow casts them, a column of nulls only,
/// such as a request value given as `[None]`, as missing numbers); other types refused.
fn numeric(name: &str, x: &ArrayRef) -> Result<ArrayRef> {
    let t = x.data_type();
    if *t == DataType::Float64 {
        // Served vectors are a row or a few: skipping the cast's copy of the array header matters there.
        return Ok(x.clone());
    }
    if !(t.is_integer() || t.is_floating() || t.is_null()) {
        return Err(Error::Dtype(format!(
            "{name}: the input is {t}; this transform reads numbers (integers or floats)"
        )));
    }
    Ok(cast(x, &DataType::Float64)?)
}

fn one_hot(name: &str, x: &ArrayRef, cats: &Categories) -> Result<ArrayRef> {
    let n = x.len();
    let (k, pos): (usize, Vec<Option<usize>>) = match (cats, x.data_type()) {
        (Categories::Int(c), t) if t.is_integer() => {
            let v = cast(x, &DataType::Int64)?;
            let v = v.as_primitive::<Int64Type>();
            (
                c.len(),
                v.iter()
                    .map(|o| o.and_then(|a| c.iter().position(|b| *b == a)))
                    .collect(),
            )
        }
        (c, DataType::Null) => (
            match c {
                Categories::Int(c) => c.len(),
                Categories::Str(c) => c.len(),
            },
            vec![None; n],
        ),
        (Categories::Str(c), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
            let v = cast(x, &DataType::Utf8)?;
            let v = v.as_string::<i32>();
            (
                c.len(),
                v.iter()
                    .map(|o| o.and_then(|a| c.iter().position(|b| b == a)))
                    .collect(),
            )
        }
        (c, t) => {
            let want = match c {
                Categories::Int(_) => "integers",
                Categories::Str(_) => "strings",
            };
            return Err(Error::Dtype(format!(
                "{name}: one-hot categories are {want} but the input is {t}; give categories of the input's type"
            )));
        }
    };
    let mut flat = vec![0.0f64; n * k];
    for (i, p) in pos.iter().enumerate() {
        if let Some(j) = p {
            flat[i * k + j] = 1.0;
        }
    }
    let item = Arc::new(Field::new("item", DataType::Float64, true));
    let values: ArrayRef = Arc::new(Float64Array::from(flat));
    let nulls = x.logical_nulls();
    Ok(Arc::new(FixedSizeListArray::try_new(
        item, k as i32, values, nulls,
    )?))
}

/// Replaces every null of `x` with `value` (one row, cast to `x`'s type). Returns the filled column and
/// the mask of the rows it filled (None when nothing was null).
pub fn fill(name: &str, x: &ArrayRef, value: &ArrayRef) -> Result<(ArrayRef, Option<BooleanArray>)> {
    if x.logical_null_count() == 0 {
        return Ok((x.clone(), None));
    }
    if value.len() != 1 || value.is_null(0) {
        return Err(Error::InvalidArgument(format!(
            "{name}: an imputation value must be one non-null value"
        )));
    }
    let v = if value.data_type() == x.data_type() {
        value.clone()
    } else {
        cast(value, x.data_type())?
    };
    if v.is_null(0) {
        return Err(Error::Dtype(format!(
            "{name}: the imputation value does not fit the column's type {}",
            x.data_type()
        )));
    }
    let mask = is_null(x)?;
    let filled = match x.data_type() {
        DataType::Float64 => fill_primitive::<Float64Type>(x, &v),
        DataType::Float32 => fill_primitive::<Float32Type>(x, &v),
        DataType::Int64 => fill_primitive::<Int64Type>(x, &v),
        DataType::Int32 => fill_primitive::<Int32Type>(x, &v),
        // Other types (strings, booleans...) through Arrow's generic select.
        _ => zip(&mask, &arrow::array::Scalar::new(v), x)?,
    };
    Ok((filled, Some(mask)))
}

/// `x` with its nulls replaced by `y`'s values in the same rows, and the rows so filled (where `y` is
/// null too, `x` stays null and the row is not filled).
fn fill_from(name: &str, x: &ArrayRef, y: &ArrayRef) -> Result<(ArrayRef, BooleanArray)> {
    if x.data_type() != y.data_type() {
        return Err(Error::Dtype(format!(
            "{name}: the column is {} but the values that fill it are {}",
            x.data_type(),
            y.data_type()
        )));
    }
    let take = and(&is_null(x)?, &is_not_null(y)?)?;
    Ok((zip(&take, y, x)?, take))
}

/// `x` with its nulls replaced by `v[0]`, in one pass over the values (the generic select copies run
/// by run, several times slower on a training set's scattered nulls).
fn fill_primitive<T: ArrowPrimitiveType>(x: &ArrayRef, v: &ArrayRef) -> ArrayRef {
    let (x, v) = (x.as_primitive::<T>(), v.as_primitive::<T>().value(0));
    let out: PrimitiveArray<T> = match x.nulls() {
        None => x.clone(),
        Some(n) => {
            PrimitiveArray::from_iter_values(
                x.values()
                    .iter()
                    .zip(n.iter())
                    .map(|(&a, ok)| if ok { a } else { v }),
            )
        }
    };
    Arc::new(out)
}

/// One node of a program: it makes one new column from an earlier one.
#[derive(Clone, Debug)]
pub enum Node {
    Fill { src: usize, value: ArrayRef },
    FillFrom { src: usize, from: usize },
    Op { src: usize, op: Op },
}

/// A compiled program: the columns it is given (inputs), then one column per node, in order. Each node
/// reads a column made before it. The same program runs offline over a training set's columns and
/// online over the serving plan's per-request columns.
#[derive(Clone, Debug)]
pub struct Program {
    pub n_inputs: usize,
    /// `(output name for messages, node)`.
    pub nodes: Vec<(String, Node)>,
}

/// What a run made: every column (inputs then nodes) and, per column, the rows whose value comes from a
/// fill (through any chain of nodes), None where no row does.
pub struct Run {
    pub columns: Vec<ArrayRef>,
    pub imputed: Vec<Option<BooleanArray>>,
}

impl Program {
    /// Checks every node (parameters, references to earlier columns).
    pub fn new(n_inputs: usize, nodes: Vec<(String, Node)>) -> Result<Program> {
        for (i, (name, node)) in nodes.iter().enumerate() {
            let src = match node {
                Node::Fill { src, value } => {
                    if value.len() != 1 || value.is_null(0) {
                        return Err(Error::InvalidArgument(format!(
                            "{name}: an imputation value must be one non-null value"
                        )));
                    }
                    *src
                }
                Node::Op { src, op } => {
                    op.check(name)?;
                    *src
                }
                Node::FillFrom { src, from } => (*src).max(*from),
            };
            if src >= n_inputs + i {
                return Err(Error::InvalidArgument(format!(
                    "{name}: reads column {src}, which is not made before it"
                )));
            }
        }
        Ok(Program { n_inputs, nodes })
    }

    /// Runs the program over `inputs` (all of one length).
    pub fn run(&self, inputs: Vec<ArrayRef>) -> Result<Run> {
        if inputs.len() != self.n_inputs {
            return Err(Error::Internal(format!(
                "a transform program of {} inputs was given {}",
                self.n_inputs,
                inputs.len()
            )));
        }
        let n = inputs.first().map_or(0, |a| a.len());
        if inputs.iter().any(|a| a.len() != n) {
            return Err(Error::Internal("transform inputs differ in length".into()));
        }
        // Sized once: a served vector runs this per request, where every allocation shows.
        let total = inputs.len() + self.nodes.len();
        let mut imputed: Vec<Option<BooleanArray>> = Vec::with_capacity(total);
        imputed.resize(inputs.len(), None);
        let mut columns = inputs;
        columns.reserve(self.nodes.len());
        for (name, node) in &self.nodes {
            let (col, mask) = match node {
                Node::Fill { src, value } => {
                    let (c, m) = fill(name, &columns[*src], value)?;
                    let m = match (m, &imputed[*src]) {
                        (Some(a), Some(b)) => Some(or(&a, b)?),
                        (a, b) => a.or_else(|| b.clone()),
                    };
                    (c, m)
                }
                Node::Op { src, op } => (op.apply(name, &columns[*src])?, imputed[*src].clone()),
                Node::FillFrom { src, from } => {
                    let (c, m) = fill_from(name, &columns[*src], &columns[*from])?;
                    let m = match &imputed[*src] {
                        Some(b) => or(&m, b)?,
                        None => m,
                    };
                    (c, Some(m))
                }
            };
            columns.push(col);
            imputed.push(mask);
        }
        Ok(Run { columns, imputed })
    }
}

/// Writes the column as float64 values with nulls as NaN into `out[i * stride]` (the serving plan's
/// `get_numpy` output, row-major).
pub fn write_f64_nan(name: &str, x: &ArrayRef, out: &mut [f64], stride: usize) -> Result<()> {
    let t = x.data_type();
    if !(t.is_integer() || t.is_floating() || *t == DataType::Boolean) {
        return Err(Error::Dtype(format!(
            "get_numpy returns float64, but '{name}' is {t}; use get()"
        )));
    }
    let v = if *t == DataType::Float64 {
        x.clone()
    } else {
        cast(x, &DataType::Float64)?
    };
    let v = v.as_primitive::<Float64Type>();
    let nulls: Option<&NullBuffer> = v.nulls();
    for (i, &a) in v.values().iter().enumerate() {
        out[i * stride] = match nulls {
            Some(b) if b.is_null(i) => f64::NAN,
            _ => a,
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests;
