use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{Float64Type, Int32Type};

use super::*;

fn f64s(v: &[Option<f64>]) -> ArrayRef {
    Arc::new(Float64Array::from(v.to_vec()))
}

fn out_f64(a: &ArrayRef) -> Vec<Option<f64>> {
    a.as_primitive::<Float64Type>().iter().collect()
}

#[test]
fn zscore_keeps_nulls_nan_and_infinities() {
    let op = Op::ZScore { mean: 5.0, std: 2.0 };
    op.check("z").unwrap();
    let x = f64s(&[
        Some(2.0),
        None,
        Some(f64::NAN),
        Some(f64::INFINITY),
        Some(f64::NEG_INFINITY),
    ]);
    let y = out_f64(&op.apply("z", &x).unwrap());
    assert_eq!(y[0], Some(-1.5));
    assert_eq!(y[1], None);
    assert!(y[2].unwrap().is_nan());
    assert_eq!(y[3], Some(f64::INFINITY));
    assert_eq!(y[4], Some(f64::NEG_INFINITY));
}

#[test]
fn bad_parameters_are_refused() {
    for op in [
        Op::ZScore { mean: 0.0, std: 0.0 },
        Op::ZScore {
            mean: f64::NAN,
            std: 1.0,
        },
        Op::MinMax { min: 1.0, max: 1.0 },
        Op::Clip {
            lo: Some(2.0),
            hi: Some(1.0),
        },
        Op::Bucketize {
            boundaries: vec![1.0, 1.0],
        },
        Op::Bucketize { boundaries: vec![] },
        Op::OneHot {
            categories: Categories::Int(vec![1, 1]),
        },
    ] {
        assert!(matches!(op.check("o"), Err(Error::InvalidArgument(_))), "{op:?}");
    }
}

#[test]
fn clip_log1p_minmax_edges() {
    let x = f64s(&[Some(-5.0), Some(f64::NAN), Some(f64::INFINITY), None, Some(0.5)]);
    let c = Op::Clip {
        lo: Some(0.0),
        hi: Some(1.0),
    };
    let y = out_f64(&c.apply("c", &x).unwrap());
    assert_eq!(y[0], Some(0.0));
    assert!(y[1].unwrap().is_nan());
    assert_eq!(y[2], Some(1.0));
    assert_eq!(y[3], None);
    assert_eq!(y[4], Some(0.5));
    let l = out_f64(
        &Op::Log1p
            .apply("l", &f64s(&[Some(-1.0), Some(-2.0), Some(0.0)]))
            .unwrap(),
    );
    assert_eq!(l[0], Some(f64::NEG_INFINITY));
    assert!(l[1].unwrap().is_nan());
    assert_eq!(l[2], Some(0.0));
    let m = Op::MinMax { min: 0.0, max: 4.0 };
    assert_eq!(
        out_f64(&m.apply("m", &f64s(&[Some(2.0), Some(8.0)])).unwrap()),
        vec![Some(0.5), Some(2.0)]
    );
}

#[test]
fn bucketize_counts_boundaries_at_or_below() {
    let op = Op::Bucketize {
        boundaries: vec![0.0, 10.0],
    };
    let x = f64s(&[
        Some(-1.0),
        Some(0.0),
        Some(9.9),
        Some(10.0),
        Some(f64::INFINITY),
        Some(f64::NEG_INFINITY),
        Some(f64::NAN),
        None,
    ]);
    let y: Vec<Option<i32>> = op
        .apply("b", &x)
        .unwrap()
        .as_primitive::<Int32Type>()
        .iter()
        .collect();
    assert_eq!(
        y,
        vec![Some(0), Some(1), Some(1), Some(2), Some(2), Some(0), None, None]
    );
}

#[test]
fn one_hot_of_ints_and_strings() {
    let op = Op::OneHot {
        categories: Categories::Int(vec![3, 7]),
    };
    let x: ArrayRef = Arc::new(Int64Array::from(vec![Some(7), None, Some(5)]));
    let y = op.apply("o", &x).unwrap();
    let y = y.as_fixed_size_list();
    assert!(y.is_null(1));
    let v = y.values().as_primitive::<Float64Type>().values().to_vec();
    assert_eq!(v, vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    let op = Op::OneHot {
        categories: Categories::Str(vec!["a".into()]),
    };
    let x: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), Some("b")]));
    let y = op.apply("o", &x).unwrap();
    let v = y
        .as_fixed_size_list()
        .values()
        .as_primitive::<Float64Type>()
        .values()
        .to_vec();
    assert_eq!(v, vec![1.0, 0.0]);
    // Categories of the wrong type are a dtype error, not a silent all-zero column.
    assert!(matches!(
        Op::OneHot {
            categories: Categories::Int(vec![1])
        }
        .apply("o", &x),
        Err(Error::Dtype(_))
    ));
}

#[test]
fn program_fills_then_transforms_and_tracks_imputed_rows() {
    let value: ArrayRef = Arc::new(Float64Array::from(vec![5.0]));
    let prog = Program::new(
        1,
        vec![
            ("x".into(), Node::Fill { src: 0, value }),
            (
                "x_z".into(),
                Node::Op {
                    src: 1,
                    op: Op::ZScore { mean: 5.0, std: 2.0 },
                },
            ),
        ],
    )
    .unwrap();
    let run = prog.run(vec![f64s(&[Some(1.0), None])]).unwrap();
    assert_eq!(out_f64(&run.columns[1]), vec![Some(1.0), Some(5.0)]);
    assert_eq!(out_f64(&run.columns[2]), vec![Some(-2.0), Some(0.0)]);
    let m: Vec<Option<bool>> = run.imputed[2].as_ref().unwrap().iter().collect();
    assert_eq!(m, vec![Some(false), Some(true)]);
    assert!(run.imputed[0].is_none());
    // A node may only read a column made before it.
    let bad = Program::new(
        1,
        vec![(
            "y".into(),
            Node::Op {
                src: 1,
                op: Op::Log1p,
            },
        )],
    );
    assert!(bad.is_err());
}

#[test]
fn fill_value_must_fit_the_column() {
    let x: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None]));
    let v: ArrayRef = Arc::new(StringArray::from(vec!["not a number"]));
    assert!(fill("x", &x, &v).is_err());
    let v: ArrayRef = Arc::new(Int64Array::from(vec![4]));
    let (y, m) = fill("x", &x, &v).unwrap();
    assert_eq!(
        y.as_primitive::<arrow::datatypes::Int64Type>()
            .iter()
            .collect::<Vec<_>>(),
        vec![Some(1), Some(4)]
    );
    assert_eq!(m.unwrap().true_count(), 1);
    // Strings go through the generic path.
    let x: ArrayRef = Arc::new(StringArray::from(vec![None, Some("b")]));
    let v: ArrayRef = Arc::new(StringArray::from(vec!["a"]));
    let (y, _) = fill("x", &x, &v).unwrap();
    assert_eq!(
        y.as_string::<i32>().iter().collect::<Vec<_>>(),
        vec![Some("a"), Some("b")]
    );
}

#[test]
fn f64_output_has_nan_for_nulls() {
    let x = f64s(&[Some(1.0), None]);
    let mut v = vec![0.0; 4];
    write_f64_nan("x", &x, &mut v[1..], 2).unwrap();
    assert_eq!(v[1], 1.0);
    assert!(v[3].is_nan());
    let s: ArrayRef = Arc::new(StringArray::from(vec!["a"]));
    assert!(matches!(write_f64_nan("s", &s, &mut v, 1), Err(Error::Dtype(_))));
}

#[test]
fn fill_from_takes_the_other_columns_value_where_null_and_leaves_a_null_where_both_are() {
    use arrow::array::StringArray;
    let x: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None, None]));
    let prev: ArrayRef = Arc::new(StringArray::from(vec![Some("z"), Some("b"), None]));
    let prog = Program::new(2, vec![("x".into(), Node::FillFrom { src: 0, from: 1 })]).unwrap();
    let run = prog.run(vec![x, prev]).unwrap();
    let out: Vec<Option<&str>> = run.columns[2].as_string::<i32>().iter().collect();
    assert_eq!(out, vec![Some("a"), Some("b"), None]);
    let m: Vec<Option<bool>> = run.imputed[2].as_ref().unwrap().iter().collect();
    assert_eq!(m, vec![Some(false), Some(true), Some(false)]);
    // Two types: refused with the column's name, never a silent cast.
    let r = prog.run(vec![f64s(&[None]), Arc::new(Int32Array::from(vec![1]))]);
    assert!(matches!(r, Err(Error::Dtype(m)) if m.contains('x')));
    // A node may only read a column made before it.
    assert!(Program::new(1, vec![("x".into(), Node::FillFrom { src: 0, from: 1 })]).is_err());
}
