//! The online store: the latest row per key of each feature view in an LMDB environment, memory-mapped
//! and shared by many reader processes while one process at a time writes.
//!
//! - `key`: order-preserving key encoding (format v1, recorded per store), `schema`: the per-view schema
//!   record (format v2; v1 still read), which records the view's `value` layout version (v1).
//! - `status`: lookup statuses and the rule (not yet valid / expired / present) that assigns them.
//! - `env`: the process-global environment cache, fork safety, map growth.
//! - `write`: batch validation, in-batch dedupe, one transaction per call.
//! - `read`: prepared readers decoding into float64 buffers or Arrow arrays.

pub mod cells;
pub mod crc;
pub mod direct;
pub mod env;
pub mod key;
pub mod lmdb_format;
pub mod read;
pub mod schema;
pub mod status;
pub mod value;
pub mod verify;
pub mod write;

pub use env::Store;
pub use read::{KeyBatch, Reader};
pub use status::{Window, EXPIRED, NOT_FOUND, NOT_YET_VALID, PRESENT};
pub use write::{write, write_many, WriteSpec, WriteStats};

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    };
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;
    use crate::error::Error;
    use crate::table::Table;

    fn table(keys: &[i64], ts: &[i64], xs: &[f64], names: Option<&[&str]>) -> Table {
        let mut fields = vec![
            Field::new("k", DataType::Int64, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("x", DataType::Float64, true),
        ];
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(keys.to_vec())),
            Arc::new(TimestampMicrosecondArray::from(ts.to_vec()).with_timezone("UTC")),
            Arc::new(Float64Array::from(xs.to_vec())),
        ];
        if let Some(n) = names {
            fields.push(Field::new("name", DataType::Utf8, true));
            cols.push(Arc::new(StringArray::from(n.to_vec())));
        }
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        Table::new(schema, vec![batch])
    }

    /// Looks `keys` up at instant 1000 with `cutoff` (`as_of - ttl`).
    fn lookup(reader: &Reader, keys: &[i64], cutoff: Option<i64>) -> (Vec<f64>, Vec<i8>) {
        let mut kb = KeyBatch::with_capacity(keys.len());
        for &k in keys {
            key::push_i64(&mut kb.bytes, k);
            kb.finish_key();
        }
        let mut values = vec![0.0; keys.len() * reader.view.cols.len()];
        let mut status = vec![0i8; keys.len()];
        let window = Window { as_of: 1000, cutoff };
        reader.get_f64(&kb, window, &mut values, &mut status).unwrap();
        (values, status)
    }

    #[test]
    fn write_then_read_applies_the_replacement_rule_and_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Some(1 << 20), None).unwrap();
        let keys = ["k".to_string()];
        let spec = WriteSpec {
            keys: &keys,
            timestamp: "ts",
            created: None,
        };
        let s = write(
            &store,
            "v",
            &table(&[1, 2, 1], &[10, 10, 20], &[1.0, 2.0, 3.0], None),
            &spec,
        )
        .unwrap();
        assert_eq!(
            s,
            WriteStats {
                rows_written: 2,
                rows_skipped: 1
            }
        );
        // Late and equal rows never replace.
        let s = write(&store, "v", &table(&[1, 2], &[5, 10], &[9.0, 9.0], None), &spec).unwrap();
        assert_eq!(
            s,
            WriteStats {
                rows_written: 0,
                rows_skipped: 2
            }
        );
        let reader = Reader::new(store.clone(), "v", None).unwrap();
        let (v, st) = lookup(&reader, &[1, 2, 3], None);
        assert_eq!(&v[..2], &[3.0, 2.0]);
        assert!(v[2].is_nan());
        assert_eq!(st, vec![PRESENT, PRESENT, NOT_FOUND]);
        // Cut-off 15: key 2 (ts 10) expired, key 1 (ts 20) present; the boundary itself is present.
        assert_eq!(lookup(&reader, &[1, 2], Some(15)).1, vec![PRESENT, EXPIRED]);
        assert_eq!(lookup(&reader, &[2], Some(10)).1, vec![PRESENT]);
        // Another schema is refused and changes nothing.
        let other = table(&[1], &[99], &[7.0], Some(&["n"]));
        assert!(matches!(
            write(&store, "v", &other, &spec),
            Err(Error::SchemaMismatch(_))
        ));
        assert_eq!(lookup(&reader, &[1], None).0, vec![3.0]);
        assert_eq!(store.views().unwrap(), vec!["v".to_string()]);
    }

    #[test]
    fn write_many_lands_every_view_in_one_transaction_or_none() {
        let dir = tempfile::tempdir().unwrap();
        // A small map: the second view's rows fill it inside the transaction, which is then run again
        // from the start on a larger map, so both views land once.
        let store = Store::open(dir.path(), Some(64 * 1024), Some(1 << 24)).unwrap();
        let keys = ["k".to_string()];
        let spec = WriteSpec {
            keys: &keys,
            timestamp: "ts",
            created: None,
        };
        let n = 5000i64;
        let ks: Vec<i64> = (0..n).collect();
        let big = table(&ks, &vec![10; n as usize], &vec![1.5; n as usize], None);
        let small = table(&[1], &[10], &[2.0], None);
        let out = write_many(&store, &[("a", &small, &spec), ("b", &big, &spec)]).unwrap();
        assert_eq!(out[0].rows_written, 1);
        assert_eq!(out[1].rows_written, n as usize);
        let b = Reader::new(store.clone(), "b", None).unwrap();
        assert_eq!(lookup(&b, &[n - 1], None).0, vec![1.5]);
        // An item that cannot be written fails the whole write: the first view is unchanged.
        let newer = table(&[1], &[20], &[3.0], None);
        let other = table(&[1], &[20], &[7.0], Some(&["n"]));
        assert!(matches!(
            write_many(&store, &[("a", &newer, &spec), ("b", &other, &spec)]),
            Err(Error::SchemaMismatch(_))
        ));
        let a = Reader::new(store.clone(), "a", None).unwrap();
        assert_eq!(lookup(&a, &[1], None).0, vec![2.0]);
    }

    #[test]
    fn the_map_doubles_until_a_write_fits_or_reports_map_full() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Some(64 * 1024), Some(1 << 20)).unwrap();
        let keys = ["k".to_string()];
        let spec = WriteSpec {
            keys: &keys,
            timestamp: "ts",
            created: None,
        };
        let n = 2_000i64;
        let ks: Vec<i64> = (0..n).collect();
        let t = table(&ks, &vec![1; n as usize], &vec![1.5; n as usize], None);
        assert_eq!(write(&store, "v", &t, &spec).unwrap().rows_written, n as usize);
        assert!(store.map_size().unwrap() > 64 * 1024);
        let n = 40_000i64;
        let ks: Vec<i64> = (0..n).collect();
        let t = table(&ks, &vec![2; n as usize], &vec![2.5; n as usize], None);
        assert!(matches!(write(&store, "v", &t, &spec), Err(Error::MapFull(_))));
        let reader = Reader::new(store.clone(), "v", None).unwrap();
        assert_eq!(
            lookup(&reader, &[0, 1999, 2000], None).1,
            vec![PRESENT, PRESENT, NOT_FOUND]
        );
        assert_eq!(lookup(&reader, &[0], None).0, vec![1.5]);
    }

    #[test]
    fn a_truncated_data_file_is_refused_on_open_instead_of_faulting_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ["k".to_string()];
        let spec = WriteSpec {
            keys: &keys,
            timestamp: "ts",
            created: None,
        };
        {
            let store = Store::open(dir.path(), Some(1 << 22), None).unwrap();
            let n = 20_000i64;
            let ks: Vec<i64> = (0..n).collect();
            let t = table(&ks, &vec![1; n as usize], &vec![1.5; n as usize], None);
            write(&store, "v", &t, &spec).unwrap();
        }
        let data = dir.path().join("data.mdb");
        let len = std::fs::metadata(&data).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&data)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        match Store::open(dir.path(), Some(1 << 22), None) {
            Err(Error::Storage(m)) => assert!(m.contains("truncated"), "{m}"),
            Err(e) => panic!("wrong error {e:?}"),
            Ok(_) => panic!("a truncated store opened"),
        }
    }

    #[test]
    fn a_null_element_inside_an_array_is_refused_and_nothing_is_written() {
        use arrow::array::FixedSizeListArray;
        use arrow::datatypes::Float64Type;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Some(1 << 20), None).unwrap();
        let keys = ["k".to_string()];
        let spec = WriteSpec {
            keys: &keys,
            timestamp: "ts",
            created: None,
        };
        let emb = |rows: Vec<Option<Vec<Option<f64>>>>| -> ArrayRef {
            Arc::new(FixedSizeListArray::from_iter_primitive::<Float64Type, _, _>(
                rows, 2,
            ))
        };
        let t = |e: ArrayRef| {
            let batch = RecordBatch::try_from_iter(vec![
                ("k", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
                (
                    "ts",
                    Arc::new(TimestampMicrosecondArray::from(vec![1, 1]).with_timezone("UTC")) as ArrayRef,
                ),
                ("e", e),
            ])
            .unwrap();
            Table::new(batch.schema(), vec![batch])
        };
        let bad = t(emb(vec![
            Some(vec![Some(1.0), Some(2.0)]),
            Some(vec![Some(1.0), None]),
        ]));
        assert!(matches!(
            write(&store, "v", &bad, &spec),
            Err(Error::InvalidArgument(m)) if m.contains("null element")
        ));
        assert!(store.views().unwrap().is_empty());
        // A whole null array is a null value, and NaN is a value like any other.
        let ok = t(emb(vec![None, Some(vec![Some(f64::NAN), Some(2.0)])]));
        assert_eq!(write(&store, "v", &ok, &spec).unwrap().rows_written, 2);
    }
}
