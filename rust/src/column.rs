//! Typed access to Arrow columns: the one place that turns a `dyn Array` into typed values, shared by
//! the grouping layer (`group`, `asof`) and the online store (`online`).
//!
//! Two forms of the same dispatch, each resolved once per chunk so per-row loops never re-dispatch on
//! the Arrow type:
//! - [`Chunk`]: a chunk as an enum of typed slices ([`Cells`]) plus its null mask, for code that
//!   handles many types in one loop (key and value encoding);
//! - [`with_int!`] / [`with_bytes!`]: run a block monomorphized for the chunk's concrete integer or
//!   byte type, for hot loops over one column (group ids, times).
//!
//! Plus the small pieces both need: [`timestamp_values`], [`OrdU64`] (integers of any width and
//! signedness as order-preserving u64s), [`Starts`] (row -> chunk) and [`par_chunks`].

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryViewArray, BooleanArray, GenericBinaryArray, GenericStringArray,
    StringViewArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::*;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::time::to_micros;

/// The raw i64 counts of a timestamp array of any unit.
pub fn timestamp_values(arr: &dyn Array) -> &[i64] {
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

/// Maps integers of either signedness onto u64 keeping their order, so one code path serves all widths.
pub trait OrdU64: Copy {
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
        use arrow::array::AsArray as _;
        use arrow::datatypes::*;
        let arr: &dyn arrow::array::Array = $arr;
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
        use arrow::array::AsArray as _;
        use arrow::datatypes::DataType;
        let arr: &dyn arrow::array::Array = $arr;
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
pub(crate) use with_bytes;

/// The first row of every chunk of a column, to find the chunk holding a row of the whole column.
#[derive(Debug, Clone)]
pub struct Starts(Vec<usize>);

impl Starts {
    pub fn new<L: IntoIterator<Item = usize>>(lens: L) -> Starts {
        let mut n = 0;
        Starts(
            lens.into_iter()
                .map(|l| {
                    let s = n;
                    n += l;
                    s
                })
                .collect(),
        )
    }

    pub fn of(chunks: &[ArrayRef]) -> Starts {
        Starts::new(chunks.iter().map(|c| c.len()))
    }

    /// (chunk, row within it) of row `pos` of the whole column; empty chunks are skipped.
    #[inline]
    pub fn locate(&self, pos: usize) -> (usize, usize) {
        let c = self.0.partition_point(|&s| s <= pos) - 1;
        (c, pos - self.0[c])
    }

    /// The chunk holding row `pos`, or 0 for an empty column.
    #[inline]
    pub fn chunk_of(&self, pos: usize) -> usize {
        self.0.partition_point(|&s| s <= pos).saturating_sub(1)
    }

    #[inline]
    pub fn start(&self, chunk: usize) -> usize {
        self.0[chunk]
    }
}

/// Calls `f(chunk, first row within the chunk, out)` on pieces of `out` that line up with the chunks of a
/// column, in parallel. `out` has one slot per row of the whole column.
pub fn par_chunks<T: Send>(
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

/// One chunk's values, as a slice or array of its concrete type.
pub enum Cells<'a> {
    I(IntCells<'a>),
    U(UIntCells<'a>),
    F32(&'a [f32]),
    F64(&'a [f64]),
    Bool(&'a BooleanArray),
    Ts(&'a [i64], TimeUnit),
    Str(&'a GenericStringArray<i32>),
    LStr(&'a GenericStringArray<i64>),
    VStr(&'a StringViewArray),
    Bin(&'a GenericBinaryArray<i32>),
    LBin(&'a GenericBinaryArray<i64>),
    VBin(&'a BinaryViewArray),
    /// Fixed-size list of floats: the child values (list i is `[i*n, (i+1)*n)`), the size, and the child's
    /// nulls (a null element is stored as NaN).
    ListF32(&'a [f32], usize, Option<&'a NullBuffer>),
    ListF64(&'a [f64], usize, Option<&'a NullBuffer>),
}

pub enum IntCells<'a> {
    I8(&'a [i8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
}

pub enum UIntCells<'a> {
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
    U64(&'a [u64]),
}

/// One chunk with its null mask.
pub struct Chunk<'a> {
    pub cells: Cells<'a>,
    pub nulls: Option<&'a NullBuffer>,
}

impl<'a> Chunk<'a> {
    pub fn new(arr: &'a ArrayRef) -> Result<Chunk<'a>> {
        let a = arr.as_ref();
        let cells = match a.data_type() {
            DataType::Int8 => Cells::I(IntCells::I8(a.as_primitive::<Int8Type>().values())),
            DataType::Int16 => Cells::I(IntCells::I16(a.as_primitive::<Int16Type>().values())),
            DataType::Int32 => Cells::I(IntCells::I32(a.as_primitive::<Int32Type>().values())),
            DataType::Int64 => Cells::I(IntCells::I64(a.as_primitive::<Int64Type>().values())),
            DataType::UInt8 => Cells::U(UIntCells::U8(a.as_primitive::<UInt8Type>().values())),
            DataType::UInt16 => Cells::U(UIntCells::U16(a.as_primitive::<UInt16Type>().values())),
            DataType::UInt32 => Cells::U(UIntCells::U32(a.as_primitive::<UInt32Type>().values())),
            DataType::UInt64 => Cells::U(UIntCells::U64(a.as_primitive::<UInt64Type>().values())),
            DataType::Float32 => Cells::F32(a.as_primitive::<Float32Type>().values()),
            DataType::Float64 => Cells::F64(a.as_primitive::<Float64Type>().values()),
            DataType::Boolean => Cells::Bool(a.as_boolean()),
            DataType::Timestamp(unit, _) => Cells::Ts(timestamp_values(a), *unit),
            DataType::Utf8 => Cells::Str(a.as_string::<i32>()),
            DataType::LargeUtf8 => Cells::LStr(a.as_string::<i64>()),
            DataType::Utf8View => Cells::VStr(a.as_string_view()),
            DataType::Binary => Cells::Bin(a.as_binary::<i32>()),
            DataType::LargeBinary => Cells::LBin(a.as_binary::<i64>()),
            DataType::BinaryView => Cells::VBin(a.as_binary_view()),
            DataType::FixedSizeList(f, n) => {
                let l = a.as_fixed_size_list();
                let child = l.values();
                // arrow slices the child together with the list, so list i is child[i*n..(i+1)*n].
                match f.data_type() {
                    DataType::Float32 => Cells::ListF32(
                        child.as_primitive::<Float32Type>().values(),
                        *n as usize,
                        child.nulls(),
                    ),
                    DataType::Float64 => Cells::ListF64(
                        child.as_primitive::<Float64Type>().values(),
                        *n as usize,
                        child.nulls(),
                    ),
                    other => return Err(unsupported(other)),
                }
            }
            other => return Err(unsupported(other)),
        };
        Ok(Chunk {
            cells,
            nulls: a.nulls(),
        })
    }

    #[inline]
    pub fn is_null(&self, i: usize) -> bool {
        self.nulls.is_some_and(|n| n.is_null(i))
    }

    /// Signed integer cell widened to i64.
    #[inline]
    pub fn i64_at(&self, i: usize) -> Option<i64> {
        match &self.cells {
            Cells::I(c) => Some(match c {
                IntCells::I8(v) => v[i] as i64,
                IntCells::I16(v) => v[i] as i64,
                IntCells::I32(v) => v[i] as i64,
                IntCells::I64(v) => v[i],
            }),
            _ => None,
        }
    }

    #[inline]
    pub fn u64_at(&self, i: usize) -> Option<u64> {
        match &self.cells {
            Cells::U(c) => Some(match c {
                UIntCells::U8(v) => v[i] as u64,
                UIntCells::U16(v) => v[i] as u64,
                UIntCells::U32(v) => v[i] as u64,
                UIntCells::U64(v) => v[i],
            }),
            _ => None,
        }
    }

    /// String or binary cell as bytes.
    #[inline]
    pub fn bytes_at(&self, i: usize) -> Option<&'a [u8]> {
        Some(match &self.cells {
            Cells::Str(a) => a.value(i).as_bytes(),
            Cells::LStr(a) => a.value(i).as_bytes(),
            Cells::VStr(a) => a.value(i).as_bytes(),
            Cells::Bin(a) => a.value(i),
            Cells::LBin(a) => a.value(i),
            Cells::VBin(a) => a.value(i),
            _ => return None,
        })
    }

    /// Timestamp cell in UTC microseconds; `None` when it does not fit.
    #[inline]
    pub fn micros_at(&self, i: usize) -> Option<i64> {
        match &self.cells {
            Cells::Ts(v, unit) => to_micros(v[i], *unit),
            _ => None,
        }
    }

    /// Integer or timestamp cell as an order-preserving u64 (see [`OrdU64`]): one ranking for every
    /// integer width and signedness, and for timestamps of one unit.
    #[inline]
    pub fn ord_at(&self, i: usize) -> Option<u64> {
        match &self.cells {
            Cells::I(_) => self.i64_at(i).map(OrdU64::ord_u64),
            Cells::Ts(v, _) => Some(v[i].ord_u64()),
            Cells::U(_) => self.u64_at(i),
            _ => None,
        }
    }
}

fn unsupported(dt: &DataType) -> Error {
    Error::Dtype(format!(
        "Arrow type {dt} is not supported here; supported: int8..int64, uint8..uint64, float32/64, bool, \
         string, binary, timestamp with a timezone, fixed_size_list<float32|float64>. Cast the column"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int16Array, TimestampSecondArray, UInt8Array};
    use std::sync::Arc;

    #[test]
    fn ord_u64_keeps_order_across_widths_and_signs() {
        assert!((-1i8).ord_u64() < 0i64.ord_u64());
        assert!(i64::MIN.ord_u64() < (-1i16).ord_u64());
        assert_eq!(7u8.ord_u64(), 7);
        let c: ArrayRef = Arc::new(Int16Array::from(vec![Some(-3), None]));
        let ch = Chunk::new(&c).unwrap();
        assert_eq!(ch.ord_at(0), Some((-3i64).ord_u64()));
        assert!(ch.is_null(1));
        let t: ArrayRef = Arc::new(TimestampSecondArray::from(vec![5]).with_timezone("UTC"));
        assert_eq!(Chunk::new(&t).unwrap().ord_at(0), Some(5i64.ord_u64()));
        let u: ArrayRef = Arc::new(UInt8Array::from(vec![200]));
        assert_eq!(Chunk::new(&u).unwrap().ord_at(0), Some(200));
    }

    #[test]
    fn starts_locate_rows_across_empty_chunks() {
        let s = Starts::new([3, 0, 2]);
        assert_eq!(s.locate(0), (0, 0));
        assert_eq!(s.locate(2), (0, 2));
        assert_eq!(s.locate(3), (2, 0));
        assert_eq!(s.locate(4), (2, 1));
        assert_eq!(Starts::new([]).chunk_of(0), 0);
    }
}
