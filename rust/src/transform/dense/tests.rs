use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, UInt8Array};

use super::*;
use crate::testing::Rng;
use crate::transform::write_f64_nan;

/// Test values drawn from the shared generator: nulls, NaN, infinities and ordinary numbers.
trait Draw {
    fn float(&mut self) -> Option<f64>;
    fn int(&mut self) -> Option<i64>;
}

impl Draw for Rng {
    fn float(&mut self) -> Option<f64> {
        match self.below(10) {
            0 => None,
            1 => Some(f64::NAN),
            2 => Some(if self.below(2) == 0 {
                f64::INFINITY
            } else {
                f64::NEG_INFINITY
            }),
            3 => Some(-1.0),
            _ => Some((self.below(2001) as f64 - 1000.0) / 37.0),
        }
    }
    fn int(&mut self) -> Option<i64> {
        (self.below(5) != 0).then(|| self.below(41) as i64 - 20)
    }
}

fn column(rng: &mut Rng, n: usize) -> ArrayRef {
    match rng.below(5) {
        0 => Arc::new(Float64Array::from(
            (0..n).map(|_| rng.float()).collect::<Vec<_>>(),
        )),
        1 => Arc::new(Float32Array::from(
            (0..n).map(|_| rng.float().map(|v| v as f32)).collect::<Vec<_>>(),
        )),
        2 => Arc::new(Int64Array::from((0..n).map(|_| rng.int()).collect::<Vec<_>>())),
        3 => Arc::new(Int32Array::from(
            (0..n).map(|_| rng.int().map(|v| v as i32)).collect::<Vec<_>>(),
        )),
        _ => Arc::new(UInt8Array::from(
            (0..n)
                .map(|_| rng.int().map(|v| v.unsigned_abs() as u8))
                .collect::<Vec<_>>(),
        )),
    }
}

fn fill_value(rng: &mut Rng) -> ArrayRef {
    match rng.below(4) {
        0 => Arc::new(Float64Array::from(vec![2.5])),
        1 => Arc::new(Float64Array::from(vec![rng.float().unwrap_or(0.25)])),
        2 => Arc::new(Int64Array::from(vec![-3])),
        _ => Arc::new(Int64Array::from(vec![7])),
    }
}

fn op(rng: &mut Rng) -> Op {
    match rng.below(5) {
        0 => Op::ZScore { mean: 1.5, std: 3.0 },
        1 => Op::MinMax { min: -4.0, max: 9.0 },
        2 => Op::Clip {
            lo: Some(-2.0),
            hi: (rng.below(2) == 0).then_some(3.0),
        },
        3 => Op::Log1p,
        _ => Op::Bucketize {
            boundaries: vec![-5.0, 0.0, 0.5, 10.0],
        },
    }
}

/// Random programs over random columns: wherever the dense path runs, every column is the Arrow path's
/// value bit for bit (nulls as NaN, as `get_numpy` answers) with the same imputed rows; where the Arrow
/// path refuses, the dense path does not run.
#[test]
fn dense_rows_equal_the_arrow_path_bit_for_bit() {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let mut ran = 0;
    for _ in 0..600 {
        let n = 1 + rng.below(6);
        let n_inputs = 1 + rng.below(3);
        let inputs: Vec<ArrayRef> = (0..n_inputs).map(|_| column(&mut rng, n)).collect();
        let mut nodes = Vec::new();
        for k in 0..1 + rng.below(5) {
            let src = rng.below(n_inputs + k);
            let node = if rng.below(3) == 0 {
                Node::Fill {
                    src,
                    value: fill_value(&mut rng),
                }
            } else if rng.below(3) == 0 {
                Node::FillFrom {
                    src,
                    from: rng.below(n_inputs + k),
                }
            } else {
                Node::Op {
                    src,
                    op: op(&mut rng),
                }
            };
            nodes.push((format!("n{k}"), node));
        }
        let program = Program::new(n_inputs, nodes).unwrap();
        let dense = Dense::new(&program).unwrap().unwrap();
        let mut rows = Rows::new(n, dense.width());
        for (c, x) in inputs.iter().enumerate() {
            assert!(rows.read(c, x));
        }
        let ok = dense.run(&mut rows);
        match program.run(inputs) {
            Err(_) => assert!(!ok, "the dense path ran a program the Arrow path refuses"),
            Ok(run) if ok => {
                ran += 1;
                for (c, col) in run.columns.iter().enumerate() {
                    let mut want = vec![0.0; n];
                    write_f64_nan("c", col, &mut want, 1).unwrap();
                    for (i, w) in want.iter().enumerate() {
                        assert_eq!(rows.f64_nan(i, c).to_bits(), w.to_bits(), "column {c} row {i}");
                        let m = run.imputed[c].as_ref().is_some_and(|m| m.value(i));
                        assert_eq!(rows.imputed[i * rows.width + c], m, "imputed, column {c} row {i}");
                    }
                }
            }
            Ok(_) => {}
        }
    }
    // Fills from a column of another type run on neither path: 600 programs leave well over 300.
    assert!(ran > 350, "only {ran} programs ran dense");
}

#[test]
fn one_hot_and_other_types_take_the_arrow_path() {
    let p = Program::new(
        1,
        vec![(
            "h".into(),
            Node::Op {
                src: 0,
                op: Op::OneHot {
                    categories: super::super::Categories::Int(vec![1, 2]),
                },
            },
        )],
    )
    .unwrap();
    assert!(Dense::new(&p).unwrap().is_none());
    let mut rows = Rows::new(1, 1);
    let s: ArrayRef = Arc::new(arrow::array::StringArray::from(vec!["a"]));
    assert!(!rows.read(0, &s));
    let p = Program::new(1, vec![]).unwrap();
    assert!(!Dense::new(&p).unwrap().unwrap().run(&mut rows));
}
