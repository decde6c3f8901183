//! A [`Program`] evaluated over plain float64 rows instead of Arrow arrays: the serving plan's answer to
//! a small `get_numpy` request, where building an Arrow array per column and per node (each an
//! allocation) costs more than the arithmetic. It runs the same definitions as the Arrow path: each
//! built-in's kernel through [`Op::scalar`] / [`bucket`], and each fill's value made by [`fill`] itself
//! once per column type when the program is compiled, so a value is the same bits on both paths.
//!
//! Every column is held as float64, which is exact for what a `get_numpy` answer can be: the Arrow path
//! converts integers and float32 to float64 once (Arrow's cast, `as f64`), at the first built-in or at
//! the output, and the dense path converts them once when it reads them. Only numeric columns are
//! evaluated here (see [`Num`]); a program with a one-hot encoding, or a request with another type,
//! goes through the Arrow path.

use arrow::array::{new_null_array, Array, ArrayRef, AsArray};
use arrow::compute::kernels::cast::cast;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};

use super::{bucket, fill, Each, Node, Op, Program};
use crate::error::Result;

/// The column types the dense path reads (integers and floats but float16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Num {
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
}

const NUMS: [Num; 10] = [
    Num::I8,
    Num::I16,
    Num::I32,
    Num::I64,
    Num::U8,
    Num::U16,
    Num::U32,
    Num::U64,
    Num::F32,
    Num::F64,
];

impl Num {
    pub fn of(t: &DataType) -> Option<Num> {
        Some(match t {
            DataType::Int8 => Num::I8,
            DataType::Int16 => Num::I16,
            DataType::Int32 => Num::I32,
            DataType::Int64 => Num::I64,
            DataType::UInt8 => Num::U8,
            DataType::UInt16 => Num::U16,
            DataType::UInt32 => Num::U32,
            DataType::UInt64 => Num::U64,
            DataType::Float32 => Num::F32,
            DataType::Float64 => Num::F64,
            _ => return None,
        })
    }

    pub fn data_type(self) -> DataType {
        match self {
            Num::I8 => DataType::Int8,
            Num::I16 => DataType::Int16,
            Num::I32 => DataType::Int32,
            Num::I64 => DataType::Int64,
            Num::U8 => DataType::UInt8,
            Num::U16 => DataType::UInt16,
            Num::U32 => DataType::UInt32,
            Num::U64 => DataType::UInt64,
            Num::F32 => DataType::Float32,
            Num::F64 => DataType::Float64,
        }
    }
}

enum Step {
    /// Per column type (indexed like [`NUMS`]), the fill value as float64; None where [`fill`] refuses
    /// the value for that type (the Arrow path then raises its error, or fills nothing).
    Fill {
        src: usize,
        value: [Option<f64>; NUMS.len()],
    },
    /// The nulls of `src` taken from `from` (same type), see [`Node::FillFrom`].
    FillFrom {
        src: usize,
        from: usize,
    },
    Scalar {
        src: usize,
        op: Op,
    },
    Bucket {
        src: usize,
        boundaries: Vec<f64>,
    },
}

/// A program compiled for dense rows.
pub struct Dense {
    n_inputs: usize,
    steps: Vec<Step>,
}

/// `n` rows of `width` slots each (the program's inputs, then one slot per node), row-major: a slot's
/// value, whether it holds one (false: null; a NaN is a value), and whether a fill made it.
pub struct Rows {
    pub n: usize,
    pub width: usize,
    pub values: Vec<f64>,
    pub valid: Vec<bool>,
    pub imputed: Vec<bool>,
    /// The type of each column, inputs first (set by the caller), then nodes (set by the run).
    pub types: Vec<Option<Num>>,
}

impl Rows {
    pub fn new(n: usize, width: usize) -> Rows {
        Rows {
            n,
            width,
            values: vec![0.0; n * width],
            valid: vec![false; n * width],
            imputed: vec![false; n * width],
            types: vec![None; width],
        }
    }

    /// Reads column `c` from an Arrow array of `n` values; false when its type is not a [`Num`].
    pub fn read(&mut self, c: usize, x: &ArrayRef) -> bool {
        let Some(t) = Num::of(x.data_type()) else {
            return false;
        };
        self.types[c] = Some(t);
        match t {
            Num::I8 => self.read_as::<Int8Type>(c, x, |v| v as f64),
            Num::I16 => self.read_as::<Int16Type>(c, x, |v| v as f64),
            Num::I32 => self.read_as::<Int32Type>(c, x, |v| v as f64),
            Num::I64 => self.read_as::<Int64Type>(c, x, |v| v as f64),
            Num::U8 => self.read_as::<UInt8Type>(c, x, |v| v as f64),
            Num::U16 => self.read_as::<UInt16Type>(c, x, |v| v as f64),
            Num::U32 => self.read_as::<UInt32Type>(c, x, |v| v as f64),
            Num::U64 => self.read_as::<UInt64Type>(c, x, |v| v as f64),
            Num::F32 => self.read_as::<Float32Type>(c, x, |v| v as f64),
            Num::F64 => self.read_as::<Float64Type>(c, x, |v| v),
        }
        true
    }

    /// `to_f64`: `as f64`, the conversion of Arrow's cast to float64.
    fn read_as<T: ArrowPrimitiveType>(&mut self, c: usize, x: &ArrayRef, to_f64: fn(T::Native) -> f64) {
        let a = x.as_primitive::<T>();
        for (i, &v) in a.values().iter().enumerate().take(self.n) {
            let at = i * self.width + c;
            self.values[at] = to_f64(v);
            self.valid[at] = a.is_valid(i);
        }
    }

    /// Column `c` of row `i`: its value as float64, null as NaN.
    #[inline]
    pub fn f64_nan(&self, i: usize, c: usize) -> f64 {
        let at = i * self.width + c;
        if self.valid[at] {
            self.values[at]
        } else {
            f64::NAN
        }
    }
}

/// A scalar kernel over one column of the rows into another.
struct Strided<'a> {
    rows: &'a mut Rows,
    src: usize,
    dst: usize,
}

impl Each for Strided<'_> {
    type Out = ();
    fn each<F: Fn(f64) -> f64>(self, f: F) {
        let r = self.rows;
        for i in 0..r.n {
            let (s, d) = (i * r.width + self.src, i * r.width + self.dst);
            r.values[d] = f(r.values[s]);
            r.valid[d] = r.valid[s];
            r.imputed[d] = r.imputed[s];
        }
    }
}

impl Dense {
    /// Compiles `program` for dense rows; None when it has a node the dense path does not evaluate.
    pub fn new(program: &Program) -> Result<Option<Dense>> {
        let mut steps = Vec::with_capacity(program.nodes.len());
        for (name, node) in &program.nodes {
            steps.push(match node {
                Node::Fill { src, value } => {
                    let mut v = [None; NUMS.len()];
                    for (slot, t) in v.iter_mut().zip(NUMS) {
                        // The fill of one null of that type, by the Arrow path's own function.
                        let Ok((col, _)) = fill(name, &new_null_array(&t.data_type(), 1), value) else {
                            continue;
                        };
                        let col = cast(&col, &DataType::Float64)?;
                        let col = col.as_primitive::<Float64Type>();
                        if col.is_valid(0) {
                            *slot = Some(col.value(0));
                        }
                    }
                    Step::Fill { src: *src, value: v }
                }
                Node::FillFrom { src, from } => Step::FillFrom {
                    src: *src,
                    from: *from,
                },
                Node::Op {
                    src,
                    op: Op::Bucketize { boundaries },
                } => Step::Bucket {
                    src: *src,
                    boundaries: boundaries.clone(),
                },
                Node::Op {
                    op: Op::OneHot { .. },
                    ..
                } => return Ok(None),
                Node::Op { src, op } => Step::Scalar {
                    src: *src,
                    op: op.clone(),
                },
            });
        }
        Ok(Some(Dense {
            n_inputs: program.n_inputs,
            steps,
        }))
    }

    /// The width of the rows this program runs over.
    pub fn width(&self) -> usize {
        self.n_inputs + self.steps.len()
    }

    /// Runs the program over `rows`, whose input columns are set; false (rows unspecified) when an
    /// input's type is not numeric or a fill's value does not fit its column's type: the caller then
    /// takes the Arrow path, which decides.
    pub fn run(&self, rows: &mut Rows) -> bool {
        if rows.width != self.width() || rows.types[..self.n_inputs].iter().any(Option::is_none) {
            return false;
        }
        let w = rows.width;
        for (k, step) in self.steps.iter().enumerate() {
            let d = self.n_inputs + k;
            match step {
                Step::Fill { src, value } => {
                    let Some(t) = rows.types[*src] else {
                        return false;
                    };
                    let Some(v) = value[t as usize] else {
                        return false;
                    };
                    rows.types[d] = Some(t);
                    for i in 0..rows.n {
                        let (s, o) = (i * w + src, i * w + d);
                        let ok = rows.valid[s];
                        rows.values[o] = if ok { rows.values[s] } else { v };
                        rows.valid[o] = true;
                        rows.imputed[o] = !ok || rows.imputed[s];
                    }
                }
                Step::FillFrom { src, from } => {
                    // The Arrow path refuses two types: it decides (and raises).
                    if rows.types[*src].is_none() || rows.types[*src] != rows.types[*from] {
                        return false;
                    }
                    rows.types[d] = rows.types[*src];
                    for i in 0..rows.n {
                        let (s, f, o) = (i * w + src, i * w + from, i * w + d);
                        let take = !rows.valid[s] && rows.valid[f];
                        rows.values[o] = if take { rows.values[f] } else { rows.values[s] };
                        rows.valid[o] = rows.valid[s] || take;
                        rows.imputed[o] = take || rows.imputed[s];
                    }
                }
                Step::Scalar { src, op } => {
                    rows.types[d] = Some(Num::F64);
                    op.scalar(Strided {
                        rows,
                        src: *src,
                        dst: d,
                    });
                }
                Step::Bucket { src, boundaries } => {
                    rows.types[d] = Some(Num::I32);
                    for i in 0..rows.n {
                        let (s, o) = (i * w + src, i * w + d);
                        let b = if rows.valid[s] {
                            bucket(boundaries, rows.values[s])
                        } else {
                            None
                        };
                        rows.values[o] = b.map_or(0.0, f64::from);
                        rows.valid[o] = b.is_some();
                        rows.imputed[o] = rows.imputed[s];
                    }
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests;
