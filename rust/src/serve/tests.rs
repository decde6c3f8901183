use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, TimeUnit};

use super::*;
use crate::online::status::{EXPIRED, NOT_YET_VALID};
use crate::online::{write, WriteSpec};
use crate::table::Table;

fn ts_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        true,
    )
}

fn table(cols: Vec<(&str, ArrayRef)>) -> Table {
    let fields: Vec<Field> = cols
        .iter()
        .map(|(n, a)| match a.data_type() {
            DataType::Timestamp(..) => ts_field(n),
            t => Field::new(*n, t.clone(), true),
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), cols.into_iter().map(|(_, a)| a).collect()).unwrap();
    Table::new(schema, vec![batch])
}

fn ts(v: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
}

fn put(store: &Store, view: &str, keys: &[&str], t: Table) {
    let keys: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
    let spec = WriteSpec {
        keys: &keys,
        timestamp: "ts",
        created: None,
    };
    write(store, view, &t, &spec).unwrap();
}

fn spec(view: &str, keys: &[&str], cols: &[&str], ttl: Option<i64>, version: u64) -> PartSpec {
    PartSpec {
        view: view.into(),
        keys: keys.iter().map(|s| s.to_string()).collect(),
        columns: cols.iter().map(|s| s.to_string()).collect(),
        ttl_micros: ttl,
        version,
        declared: vec![DataType::Float64; cols.len()],
        window: None,
    }
}

fn ints(v: &[i128]) -> KeyColumn {
    KeyColumn {
        values: KeyValues::Int(v.to_vec()),
        valid: vec![],
    }
}

fn strs(v: &[&str]) -> KeyColumn {
    let mut data = Vec::new();
    let mut ends = Vec::new();
    for s in v {
        data.extend_from_slice(s.as_bytes());
        ends.push(data.len());
    }
    KeyColumn {
        values: KeyValues::Str { data, ends },
        valid: vec![],
    }
}

fn numpy(plan: &Plan, req: &Request, at: i64) -> (Vec<f64>, Vec<i8>) {
    plan.check_numeric().unwrap();
    let mut v = vec![0.0; req.n * plan.width];
    let mut s = vec![0; req.n * plan.views().len()];
    plan.get_f64(req, at, &mut v, &mut s).unwrap();
    (v, s)
}

#[test]
fn one_plan_serves_views_with_shared_and_different_keys_in_request_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Some(1 << 20), None).unwrap();
    put(
        &store,
        "a",
        &["u"],
        table(vec![
            ("u", Arc::new(Int64Array::from(vec![1, 2]))),
            ("ts", ts(vec![10, 20])),
            ("x", Arc::new(Float64Array::from(vec![Some(1.5), None]))),
            ("y", Arc::new(Float64Array::from(vec![f64::NAN, 2.0]))),
        ]),
    );
    put(
        &store,
        "b",
        &["u"],
        table(vec![
            ("u", Arc::new(Int32Array::from(vec![2]))),
            ("ts", ts(vec![5])),
            ("z", Arc::new(Float64Array::from(vec![7.0]))),
        ]),
    );
    put(
        &store,
        "c",
        &["r", "u"],
        table(vec![
            ("r", Arc::new(StringArray::from(vec!["eu", "us"]))),
            ("u", Arc::new(Int64Array::from(vec![1, 1]))),
            ("ts", ts(vec![10, 10])),
            ("w", Arc::new(Float64Array::from(vec![3.0, 4.0]))),
        ]),
    );
    let plan = Plan::new(
        store.clone(),
        vec![
            spec("a", &["u"], &["y", "x"], None, 3),
            spec("b", &["u"], &["z"], Some(10), 1),
            spec("c", &["r", "u"], &["w"], None, 2),
        ],
    )
    .unwrap();
    assert_eq!(plan.key_names, vec!["u".to_string(), "r".to_string()]);
    assert_eq!(plan.versions(), vec![("a", 3), ("b", 1), ("c", 2)]);
    let req = Request {
        n: 3,
        cols: vec![ints(&[2, 1, 9]), strs(&["eu", "us", "eu"])],
    };
    let (v, s) = numpy(&plan, &req, 15);
    // Row 0 (u=2): a is at ts 20 > 15, not yet valid; b (ts 5, ttl 10, cutoff 5) present; (eu, 2) absent.
    assert_eq!(&s[0..3], &[NOT_YET_VALID, PRESENT, NOT_FOUND]);
    assert!(v[0].is_nan() && v[1].is_nan());
    assert_eq!(v[2], 7.0);
    // Row 1 (u=1): a present with y NaN and x 1.5; b absent; (us, 1) present.
    assert_eq!(&s[3..6], &[PRESENT, NOT_FOUND, PRESENT]);
    assert!(v[4].is_nan());
    assert_eq!(v[5], 1.5);
    assert_eq!(v[7], 4.0);
    assert_eq!(&s[6..9], &[NOT_FOUND, NOT_FOUND, NOT_FOUND]);
    // Later: b expires (cutoff 16 > 5), a serves row 0.
    let (v, s) = numpy(&plan, &req, 26);
    assert_eq!(&s[0..3], &[PRESENT, EXPIRED, NOT_FOUND]);
    assert_eq!(v[0], 2.0);
    assert!(v[1].is_nan());

    // Arrow: a real null stays null and a stored NaN stays NaN.
    let (arrays, status) = plan.get_arrow(&req, 26).unwrap();
    assert_eq!(status.len(), 9);
    let y = arrays[0].as_primitive::<Float64Type>();
    let x = arrays[1].as_primitive::<Float64Type>();
    assert!(y.is_valid(1) && y.value(1).is_nan());
    assert!(x.is_valid(1) && x.value(1) == 1.5);
    assert!(x.is_null(0)); // u=2 has x null
    assert!(y.is_valid(0) && y.value(0) == 2.0);
    assert!(arrays[2].is_null(0) && arrays[2].is_null(1));
}

#[test]
fn a_view_without_online_data_answers_not_found_until_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Some(1 << 20), None).unwrap();
    let plan = Plan::new(store.clone(), vec![spec("late", &["u"], &["x"], None, 1)]).unwrap();
    let req = Request {
        n: 2,
        cols: vec![ints(&[1, 2])],
    };
    let (v, s) = numpy(&plan, &req, 100);
    assert_eq!(s, vec![NOT_FOUND, NOT_FOUND]);
    assert!(v.iter().all(|x| x.is_nan()));
    let (arrays, _) = plan.get_arrow(&req, 100).unwrap();
    assert_eq!(arrays[0].data_type(), &DataType::Float64);
    assert_eq!(arrays[0].null_count(), 2);
    put(
        &store,
        "late",
        &["u"],
        table(vec![
            ("u", Arc::new(Int64Array::from(vec![2]))),
            ("ts", ts(vec![10])),
            ("x", Arc::new(Float64Array::from(vec![8.0]))),
        ]),
    );
    let (v, s) = numpy(&plan, &req, 100);
    assert_eq!(s, vec![NOT_FOUND, PRESENT]);
    assert_eq!(v[1], 8.0);
}

#[test]
fn keys_are_converted_with_checked_casts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Some(1 << 20), None).unwrap();
    put(
        &store,
        "v",
        &["u"],
        table(vec![
            ("u", Arc::new(Int32Array::from(vec![1]))),
            ("ts", ts(vec![10])),
            ("x", Arc::new(Float64Array::from(vec![1.0]))),
        ]),
    );
    let plan = Plan::new(store.clone(), vec![spec("v", &["u"], &["x"], None, 1)]).unwrap();
    let mut v = vec![0.0; 1];
    let mut s = vec![0; 1];
    for bad in [ints(&[1 << 40]), ints(&[-(1 << 40)]), strs(&["1"])] {
        let req = Request {
            n: 1,
            cols: vec![bad],
        };
        assert!(matches!(
            plan.get_f64(&req, 100, &mut v, &mut s),
            Err(Error::Dtype(_))
        ));
    }
    // A null key is not found, not an error.
    let req = Request {
        n: 2,
        cols: vec![KeyColumn {
            values: KeyValues::Int(vec![0, 1]),
            valid: vec![false, true],
        }],
    };
    let (_, s) = numpy(&plan, &req, 100);
    assert_eq!(s, vec![NOT_FOUND, PRESENT]);
}

#[test]
fn a_sorted_batch_answers_like_one_key_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Some(1 << 22), None).unwrap();
    let n = 500i64;
    let keys: Vec<i64> = (0..n).map(|k| k * 7 - 1000).collect();
    put(
        &store,
        "v",
        &["u"],
        table(vec![
            ("u", Arc::new(Int64Array::from(keys.clone()))),
            ("ts", ts(vec![1; n as usize])),
            (
                "x",
                Arc::new(Float64Array::from_iter_values(keys.iter().map(|&k| k as f64))),
            ),
        ]),
    );
    let plan = Plan::new(store.clone(), vec![spec("v", &["u"], &["x"], None, 1)]).unwrap();
    // A scrambled request with misses, negatives and duplicates.
    let req_keys: Vec<i128> = (0..200).map(|i| ((i * 7919) % 1300 - 1100) as i128).collect();
    let req = Request {
        n: req_keys.len(),
        cols: vec![ints(&req_keys)],
    };
    let (v, s) = numpy(&plan, &req, 5);
    for (i, &k) in req_keys.iter().enumerate() {
        let one = Request {
            n: 1,
            cols: vec![ints(&[k])],
        };
        let (v1, s1) = numpy(&plan, &one, 5);
        assert_eq!(s[i], s1[0]);
        assert_eq!(v[i].to_bits(), v1[0].to_bits());
        let stored = k >= -1000 && (k + 1000) % 7 == 0 && (k + 1000) / 7 < n as i128;
        assert_eq!(s[i] == PRESENT, stored, "key {k}");
    }
}

/// Requests reuse their thread's key buffer (`Scratch`): after a large request (whose buffer is
/// freed), a failed one (whose buffer is handed back half-filled) and from other threads, each answer
/// is still exactly its own.
#[test]
fn the_reused_key_buffer_never_leaks_into_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Some(1 << 24), None).unwrap();
    let n = 3000i64;
    put(
        &store,
        "v",
        &["u"],
        table(vec![
            ("u", Arc::new(Int64Array::from_iter_values(0..n))),
            ("ts", ts(vec![1; n as usize])),
            (
                "x",
                Arc::new(Float64Array::from_iter_values((0..n).map(|k| k as f64))),
            ),
        ]),
    );
    let plan = Arc::new(Plan::new(store.clone(), vec![spec("v", &["u"], &["x"], None, 1)]).unwrap());
    let ask = move |plan: &Plan, keys: &[i128]| {
        let req = Request {
            n: keys.len(),
            cols: vec![ints(keys)],
        };
        let (v, s) = numpy(plan, &req, 5);
        for (i, &k) in keys.iter().enumerate() {
            let found = (0..n as i128).contains(&k);
            assert_eq!(s[i] == PRESENT, found, "key {k}");
            assert!(!found || v[i] == k as f64, "key {k}: {}", v[i]);
        }
    };
    let big: Vec<i128> = (0..20_000).map(|i| (i * 7) % 4000).collect();
    ask(&plan, &big);
    ask(&plan, &[5]);
    // Fails on its second key, after the first was encoded into the buffer.
    let bad = Request {
        n: 2,
        cols: vec![ints(&[7, 1 << 70])],
    };
    let (mut v, mut s) = (vec![0.0; 2], vec![0; 2]);
    assert!(matches!(
        plan.get_f64(&bad, 5, &mut v, &mut s),
        Err(Error::Dtype(_))
    ));
    ask(&plan, &[2999, 3000, -1]);
    ask(&plan, &big[..50]);
    let threads: Vec<_> = (0..4i128)
        .map(|t| {
            let plan = plan.clone();
            std::thread::spawn(move || {
                for i in 0..200i128 {
                    ask(&plan, &[(t * 1000 + i * 13) % 3500, i]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn one_integer_key_encodes_as_the_general_path_does_for_every_kind() {
    // The same values through the one-integer-key loop (no validity given) and through the general
    // loop (every row marked valid): the same bytes, or the same Dtype error.
    let kinds = [
        Kind::I8,
        Kind::I16,
        Kind::I32,
        Kind::I64,
        Kind::U8,
        Kind::U16,
        Kind::U32,
        Kind::U64,
    ];
    let edges: Vec<i128> = [0i128, 1, -1, 127, 128, -129, 255, 256, 65_535, 65_536, -32_769]
        .into_iter()
        .chain([
            i32::MIN.into(),
            u32::MAX.into(),
            i64::MIN.into(),
            i64::MAX.into(),
            u64::MAX.into(),
        ])
        .chain([i128::from(u64::MAX) + 1, i128::from(i64::MIN) - 1])
        .collect();
    let names = vec!["id".to_string()];
    for kind in kinds {
        for prefix in [None, Some(&[0, 0, 0, 7])] {
            for x in &edges {
                for n in [1, 3] {
                    let req = |valid: Vec<bool>| Request {
                        n,
                        cols: vec![KeyColumn {
                            values: KeyValues::Int(vec![*x; n]),
                            valid,
                        }],
                    };
                    let sig = [(0, kind.clone())];
                    let (mut fast, mut slow) = (KeyBatch::default(), KeyBatch::default());
                    let a = encode_keys_into(&sig, &req(vec![]), &names, prefix, &mut fast);
                    let b = encode_keys_into(&sig, &req(vec![true; n]), &names, prefix, &mut slow);
                    match (a, b) {
                        (Ok(()), Ok(())) => {
                            assert_eq!((fast.bytes, fast.ends), (slow.bytes, slow.ends), "{kind:?} {x}")
                        }
                        (Err(Error::Dtype(e)), Err(Error::Dtype(f))) => assert_eq!(e, f),
                        (a, b) => panic!("{kind:?} {x}: {a:?} vs {b:?}"),
                    }
                }
            }
        }
    }
}
