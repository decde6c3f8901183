//! A view's schema: its key columns and value columns with their storage kinds, recorded by the view's
//! first write and checked on every later one.
//!
//! Serialized form (the value of `schema/<view>` in the metadata database), version 2:
//! `[version u8 = 2][value layout version u8][n_keys u16 LE][n_values u16 LE]` then per column (keys first,
//! then values): `[kind tag u8][param u32 LE][name len u16 LE][name utf-8][tz len u16 LE][tz utf-8]`, where
//! `param` is the list size of a fixed-size list (0 otherwise) and `tz` is set for timestamps only.
//!
//! Version 1 is the same without the layout byte: `[version u8 = 1][n_keys]...`. It was written while the
//! value layout version was recorded once per store (always 1), so a version 1 record means layout 1.
//! Both are read; new views are written as version 2 with [`VALUE_FORMAT_VERSION`], so a view with a new
//! value layout does not make the store's other views unreadable.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use crate::error::{Error, Result};
use crate::online::value::{Layout, VALUE_FORMAT_VERSION};

/// The schema record version this build writes (it reads 1 and 2).
pub const SCHEMA_FORMAT_VERSION: u8 = 2;

/// How a column is stored. Arrow types that store the same way share a kind (string, large_string and
/// string_view are all `Str`), so pyarrow and polars writers of one view agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
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
    Bool,
    Str,
    Bin,
    /// An instant stored as UTC microseconds; the zone of the first write is kept for reading back.
    Ts(String),
    ListF32(i32),
    ListF64(i32),
}

impl Kind {
    /// The kind of an Arrow type, or `None` when the online store does not store it.
    pub fn of(dt: &DataType) -> Option<Kind> {
        Some(match dt {
            DataType::Int8 => Kind::I8,
            DataType::Int16 => Kind::I16,
            DataType::Int32 => Kind::I32,
            DataType::Int64 => Kind::I64,
            DataType::UInt8 => Kind::U8,
            DataType::UInt16 => Kind::U16,
            DataType::UInt32 => Kind::U32,
            DataType::UInt64 => Kind::U64,
            DataType::Float32 => Kind::F32,
            DataType::Float64 => Kind::F64,
            DataType::Boolean => Kind::Bool,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Str,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Kind::Bin,
            DataType::Timestamp(_, Some(tz)) => Kind::Ts(tz.to_string()),
            DataType::FixedSizeList(f, n) => match f.data_type() {
                DataType::Float32 => Kind::ListF32(*n),
                DataType::Float64 => Kind::ListF64(*n),
                _ => return None,
            },
            _ => return None,
        })
    }

    /// The Arrow type a read returns for this kind.
    pub fn arrow_type(&self) -> DataType {
        match self {
            Kind::I8 => DataType::Int8,
            Kind::I16 => DataType::Int16,
            Kind::I32 => DataType::Int32,
            Kind::I64 => DataType::Int64,
            Kind::U8 => DataType::UInt8,
            Kind::U16 => DataType::UInt16,
            Kind::U32 => DataType::UInt32,
            Kind::U64 => DataType::UInt64,
            Kind::F32 => DataType::Float32,
            Kind::F64 => DataType::Float64,
            Kind::Bool => DataType::Boolean,
            Kind::Str => DataType::Utf8,
            Kind::Bin => DataType::Binary,
            Kind::Ts(tz) => DataType::Timestamp(TimeUnit::Microsecond, Some(tz.as_str().into())),
            Kind::ListF32(n) => {
                DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), *n)
            }
            Kind::ListF64(n) => {
                DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float64, true)), *n)
            }
        }
    }

    pub fn is_key_kind(&self) -> bool {
        self.is_signed_int() || self.is_unsigned_int() || matches!(self, Kind::Str | Kind::Bin)
    }

    pub fn is_signed_int(&self) -> bool {
        matches!(self, Kind::I8 | Kind::I16 | Kind::I32 | Kind::I64)
    }

    pub fn is_unsigned_int(&self) -> bool {
        matches!(self, Kind::U8 | Kind::U16 | Kind::U32 | Kind::U64)
    }

    /// Whether `get_numpy` can return the column as float64.
    pub fn is_numeric(&self) -> bool {
        self.is_signed_int() || self.is_unsigned_int() || matches!(self, Kind::F32 | Kind::F64 | Kind::Bool)
    }

    /// Two kinds are compatible when their stored bytes mean the same thing (timestamps in any zone).
    pub fn compatible(&self, other: &Kind) -> bool {
        match (self, other) {
            (Kind::Ts(_), Kind::Ts(_)) => true,
            (a, b) => a == b,
        }
    }

    fn tag(&self) -> (u8, u32) {
        match self {
            Kind::I8 => (1, 0),
            Kind::I16 => (2, 0),
            Kind::I32 => (3, 0),
            Kind::I64 => (4, 0),
            Kind::U8 => (5, 0),
            Kind::U16 => (6, 0),
            Kind::U32 => (7, 0),
            Kind::U64 => (8, 0),
            Kind::F32 => (9, 0),
            Kind::F64 => (10, 0),
            Kind::Bool => (11, 0),
            Kind::Str => (12, 0),
            Kind::Bin => (13, 0),
            Kind::Ts(_) => (14, 0),
            Kind::ListF32(n) => (15, *n as u32),
            Kind::ListF64(n) => (16, *n as u32),
        }
    }

    fn from_tag(tag: u8, param: u32, tz: String) -> Option<Kind> {
        Some(match tag {
            1 => Kind::I8,
            2 => Kind::I16,
            3 => Kind::I32,
            4 => Kind::I64,
            5 => Kind::U8,
            6 => Kind::U16,
            7 => Kind::U32,
            8 => Kind::U64,
            9 => Kind::F32,
            10 => Kind::F64,
            11 => Kind::Bool,
            12 => Kind::Str,
            13 => Kind::Bin,
            14 => Kind::Ts(tz),
            15 => Kind::ListF32(i32::try_from(param).ok()?),
            16 => Kind::ListF64(i32::try_from(param).ok()?),
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewSchema {
    pub keys: Vec<ColumnDef>,
    pub values: Vec<ColumnDef>,
    /// The value layout version of this view's stored values (see `value.rs`).
    pub value_format: u8,
}

impl ViewSchema {
    /// A schema for a new view: its values use the layout this build writes.
    pub fn new(keys: Vec<ColumnDef>, values: Vec<ColumnDef>) -> ViewSchema {
        ViewSchema {
            keys,
            values,
            value_format: VALUE_FORMAT_VERSION,
        }
    }

    /// The value layout of this view.
    pub fn layout(&self) -> Result<Layout> {
        Layout::new(
            self.value_format,
            self.values.iter().map(|c| c.kind.clone()).collect(),
            &self.encode(),
        )
    }

    /// The Arrow schema of the view: key columns then value columns.
    pub fn arrow(&self) -> Schema {
        Schema::new(
            self.keys
                .iter()
                .map(|c| Field::new(&c.name, c.kind.arrow_type(), false))
                .chain(
                    self.values
                        .iter()
                        .map(|c| Field::new(&c.name, c.kind.arrow_type(), true)),
                )
                .collect::<Vec<_>>(),
        )
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![SCHEMA_FORMAT_VERSION, self.value_format];
        out.extend_from_slice(&(self.keys.len() as u16).to_le_bytes());
        out.extend_from_slice(&(self.values.len() as u16).to_le_bytes());
        for c in self.keys.iter().chain(&self.values) {
            let (tag, param) = c.kind.tag();
            out.push(tag);
            out.extend_from_slice(&param.to_le_bytes());
            out.extend_from_slice(&(c.name.len() as u16).to_le_bytes());
            out.extend_from_slice(c.name.as_bytes());
            let tz = match &c.kind {
                Kind::Ts(tz) => tz.as_str(),
                _ => "",
            };
            out.extend_from_slice(&(tz.len() as u16).to_le_bytes());
            out.extend_from_slice(tz.as_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ViewSchema> {
        let bad = || {
            Error::Storage("a view schema in the online store is corrupt or from a newer skewless version; upgrade skewless or rebuild the store".into())
        };
        let mut r = Cursor { b: bytes, at: 0 };
        let value_format = match r.u8().ok_or_else(bad)? {
            1 => 1,
            2 => r.u8().ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        let nk = r.u16().ok_or_else(bad)? as usize;
        let nv = r.u16().ok_or_else(bad)? as usize;
        let mut cols = Vec::with_capacity(nk + nv);
        for _ in 0..nk + nv {
            let tag = r.u8().ok_or_else(bad)?;
            let param = r.u32().ok_or_else(bad)?;
            let name = r.str().ok_or_else(bad)?;
            let tz = r.str().ok_or_else(bad)?;
            cols.push(ColumnDef {
                name,
                kind: Kind::from_tag(tag, param, tz).ok_or_else(bad)?,
            });
        }
        let values = cols.split_off(nk);
        Ok(ViewSchema {
            keys: cols,
            values,
            value_format,
        })
    }

    /// Checks `new` (from a write) against this recorded schema and returns, for each recorded value
    /// column, its position among `new.values` (a write may list the value columns in any order).
    pub fn conform(&self, new: &ViewSchema, view: &str) -> Result<Vec<usize>> {
        let keys_ok = self.keys.len() == new.keys.len()
            && self
                .keys
                .iter()
                .zip(&new.keys)
                .all(|(a, b)| a.name == b.name && a.kind.compatible(&b.kind));
        let mut order = Vec::with_capacity(self.values.len());
        let mut values_ok = self.values.len() == new.values.len();
        if values_ok {
            for c in &self.values {
                match new
                    .values
                    .iter()
                    .position(|n| n.name == c.name && n.kind.compatible(&c.kind))
                {
                    Some(i) => order.push(i),
                    None => {
                        values_ok = false;
                        break;
                    }
                }
            }
        }
        if keys_ok && values_ok {
            return Ok(order);
        }
        Err(Error::SchemaMismatch(format!(
            "view {view:?} was first written with keys {} and values {}, but this write has keys {} and values {}. \
             Write the same columns with the same types (cast them), or use a new view name",
            describe(&self.keys),
            describe(&self.values),
            describe(&new.keys),
            describe(&new.values)
        )))
    }
}

fn describe(cols: &[ColumnDef]) -> String {
    let parts: Vec<String> = cols
        .iter()
        .map(|c| format!("{}: {}", c.name, c.kind.arrow_type()))
        .collect();
    format!("[{}]", parts.join(", "))
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_record_reads_as_value_layout_1() {
        // [1][n_keys=1][n_values=1] k: int64, x: float64 (as the previous build wrote it).
        let mut v1 = vec![1u8, 1, 0, 1, 0];
        for (tag, name) in [(4u8, "k"), (10, "x")] {
            v1.push(tag);
            v1.extend_from_slice(&0u32.to_le_bytes());
            v1.extend_from_slice(&(name.len() as u16).to_le_bytes());
            v1.extend_from_slice(name.as_bytes());
            v1.extend_from_slice(&0u16.to_le_bytes());
        }
        let s = ViewSchema::decode(&v1).unwrap();
        assert_eq!(s.value_format, 1);
        assert_eq!(s.keys[0].kind, Kind::I64);
        assert_eq!(s.values[0].name, "x");
        // Re-encoded, it is a version 2 record that keeps the layout version.
        let v2 = s.encode();
        assert_eq!(&v2[..2], &[2, 1]);
        assert_eq!(ViewSchema::decode(&v2).unwrap(), s);
        assert!(ViewSchema::decode(&[3, 1, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn schema_round_trips_and_conforms_in_any_value_order() {
        let s = ViewSchema {
            value_format: 1,
            keys: vec![
                ColumnDef {
                    name: "user".into(),
                    kind: Kind::Str,
                },
                ColumnDef {
                    name: "n".into(),
                    kind: Kind::I32,
                },
            ],
            values: vec![
                ColumnDef {
                    name: "x".into(),
                    kind: Kind::F64,
                },
                ColumnDef {
                    name: "at".into(),
                    kind: Kind::Ts("UTC".into()),
                },
                ColumnDef {
                    name: "emb".into(),
                    kind: Kind::ListF32(4),
                },
            ],
        };
        let back = ViewSchema::decode(&s.encode()).unwrap();
        assert_eq!(back, s);
        let mut shuffled = s.clone();
        shuffled.values.reverse();
        assert_eq!(s.conform(&shuffled, "v").unwrap(), vec![2, 1, 0]);
        let mut other = s.clone();
        other.values[0].kind = Kind::F32;
        assert!(matches!(s.conform(&other, "v"), Err(Error::SchemaMismatch(_))));
        assert!(ViewSchema::decode(&s.encode()[..8]).is_err());
    }
}
