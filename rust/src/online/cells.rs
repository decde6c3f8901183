//! Typed, allocation-free access to one Arrow chunk of a column, resolved once per chunk so the per-row
//! loops of key and value encoding do not re-dispatch on the Arrow type.

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryViewArray, BooleanArray, GenericBinaryArray, GenericStringArray,
    StringViewArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::*;

use crate::error::{Error, Result};
use crate::time::to_micros;

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
    /// nulls (`write` refuses a null element inside a non-null list).
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
            DataType::Timestamp(unit, _) => Cells::Ts(
                match unit {
                    TimeUnit::Second => a.as_primitive::<TimestampSecondType>().values(),
                    TimeUnit::Millisecond => a.as_primitive::<TimestampMillisecondType>().values(),
                    TimeUnit::Microsecond => a.as_primitive::<TimestampMicrosecondType>().values(),
                    TimeUnit::Nanosecond => a.as_primitive::<TimestampNanosecondType>().values(),
                },
                *unit,
            ),
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
}

fn unsupported(dt: &DataType) -> Error {
    Error::Dtype(format!(
        "the online store cannot store Arrow type {dt}; supported: int8..int64, uint8..uint64, float32/64, bool, \
         string, binary, timestamp with a timezone, fixed_size_list<float32|float64>. Cast the column"
    ))
}
