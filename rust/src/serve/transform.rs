//! The serving plan's post-stage: imputation fills and built-in transforms over the per-part results of
//! one request, in the same call. It runs the very [`Program`] the offline path runs over a training set
//! (`crate::transform`), so a served value and a training value are the same bits.
//!
//! The program's inputs are the plan's features (every part's columns, in plan order) and then the
//! request-time columns the caller passed (values that exist only in the request). A plan with a
//! post-stage answers one status per output column (not per view): the lookup status of the view the
//! column's value comes from, `IMPUTED` in the rows an imputation strategy filled it, `PRESENT` for a
//! column computed from request-time values only.
//!
//! A `get_numpy` answer (float64 out) runs the program's dense form ([`crate::transform::dense`]): the
//! plan writes its values straight into float64 rows and the program evaluates over them, with no
//! Arrow array per column or per node. A request the dense form cannot evaluate (a one-hot encoding, a
//! column that is not numeric) takes the Arrow path; both run the same kernels and fill values.
//!
//! One exception to "a missing value is filled": a value the online store holds from *after* the
//! request instant (`NOT_YET_VALID`) stays null with that status. The store keeps only the latest value,
//! so it cannot tell what was valid at that instant; the training set at that instant would hold an
//! older value, and a fill would differ from it silently.

use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{Array, ArrayRef, BooleanArray};
use arrow::compute::nullif;

use crate::error::{Error, Result};
use crate::online::status::{IMPUTED, NOT_FOUND, NOT_YET_VALID, PRESENT};
use crate::serve::{Plan, Request};
use crate::transform::dense::{Dense, Rows};
use crate::transform::{write_f64_nan, Program};

pub struct Post {
    program: Program,
    /// The program over float64 rows, for `get_numpy` (None: it has a node only the Arrow path runs).
    dense: Option<Dense>,
    /// Set when the plan's columns turned out not to fit the dense form: later requests go straight to
    /// the Arrow path instead of looking up twice.
    arrow_only: AtomicBool,
    /// Number of the plan's features, the program's first inputs; the request columns follow.
    n_features: usize,
    /// The response's columns: indices into the run's columns (inputs, then one per node).
    select: Vec<usize>,
    /// Per response column, the plan part its value is looked up from (None: request-time values).
    source: Vec<Option<usize>>,
}

/// The post-stage's answer: the selected columns, per column the rows filled by imputation, and the
/// statuses (row-major `n x columns`).
pub struct PostOut {
    pub columns: Vec<ArrayRef>,
    pub imputed: Vec<Option<BooleanArray>>,
    pub status: Vec<i8>,
}

impl Post {
    pub fn new(
        program: Program,
        n_features: usize,
        select: Vec<usize>,
        source: Vec<Option<usize>>,
        n_parts: usize,
    ) -> Result<Post> {
        let total = program.n_inputs + program.nodes.len();
        if n_features > program.n_inputs
            || source.len() != select.len()
            || source.iter().flatten().any(|&p| p >= n_parts)
            || select.iter().any(|&s| s >= total)
        {
            return Err(Error::InvalidArgument(
                "the transform post-stage does not match its serving plan".into(),
            ));
        }
        Ok(Post {
            dense: Dense::new(&program)?,
            arrow_only: AtomicBool::new(false),
            program,
            n_features,
            select,
            source,
        })
    }

    /// Number of request-time columns the stage expects after the plan's features.
    pub fn n_request(&self) -> usize {
        self.program.n_inputs - self.n_features
    }

    /// Number of output columns.
    pub fn width(&self) -> usize {
        self.select.len()
    }

    /// Serves `req` at `at` through the stage as float64 row-major `n x columns` (nulls as NaN) with a
    /// status per column: `get_numpy`'s answer. `names` (the output names) are for messages.
    pub fn numpy(
        &self,
        plan: &Plan,
        req: &Request,
        at: i64,
        request: Vec<ArrayRef>,
        names: &[String],
    ) -> Result<(Vec<f64>, Vec<i8>)> {
        let n = req.n;
        if request.iter().any(|a| a.len() != n) {
            return Err(Error::InvalidArgument(format!(
                "a request-time column has a length other than the request's {n} rows"
            )));
        }
        if let Some(d) = &self.dense {
            if !self.arrow_only.load(Ordering::Relaxed) {
                if let Some(out) = self.numpy_dense(d, plan, req, at, &request)? {
                    return Ok(out);
                }
            }
        }
        let (features, status) = plan.get_arrow(req, at)?;
        let out = self.run(features, request, &status, plan.n_views())?;
        Ok((rows_f64(names, &out.columns, n)?, out.status))
    }

    /// The dense form of [`Post::numpy`]; None when a column is not numeric or a fill value does not fit
    /// its column's type (the Arrow path decides those).
    fn numpy_dense(
        &self,
        d: &Dense,
        plan: &Plan,
        req: &Request,
        at: i64,
        request: &[ArrayRef],
    ) -> Result<Option<(Vec<f64>, Vec<i8>)>> {
        let (n, n_parts) = (req.n, plan.n_views());
        if plan.width != self.n_features {
            return Err(Error::Internal(
                "the post-stage does not match its serving plan".into(),
            ));
        }
        let mut rows = Rows::new(n, d.width());
        for (k, x) in request.iter().enumerate() {
            if !rows.read(self.n_features + k, x) {
                return Ok(None);
            }
        }
        let mut status = vec![NOT_FOUND; n * n_parts];
        plan.get_rows(req, at, &mut rows, &mut status)?;
        if !d.run(&mut rows) {
            // The plan's columns (or a fill for their types) are what the dense form cannot take: that
            // holds for later requests too, so they skip the lookup here. A request column's type is the
            // caller's, checked per request above.
            self.arrow_only.store(true, Ordering::Relaxed);
            return Ok(None);
        }
        // The statuses as `run` gives them: the part's, IMPUTED where a fill made the value, and a value
        // from after the request instant left missing (see the module docs).
        let w = self.select.len();
        let mut values = vec![0.0; n * w];
        let mut out_status = vec![PRESENT; n * w];
        for (j, (&s, src)) in self.select.iter().zip(&self.source).enumerate() {
            for i in 0..n {
                let imputed = rows.imputed[i * rows.width + s];
                let (mut v, mut st) = (rows.f64_nan(i, s), if imputed { IMPUTED } else { PRESENT });
                if let Some(p) = *src {
                    let ps = status[i * n_parts + p];
                    if ps == NOT_YET_VALID {
                        (v, st) = (f64::NAN, ps);
                    } else if !imputed {
                        st = ps;
                    }
                }
                values[i * w + j] = v;
                out_status[i * w + j] = st;
            }
        }
        Ok(Some((values, out_status)))
    }

    /// Runs the stage over one request's `features` and per-part `status` (row-major `n x n_parts`, from
    /// `Plan::get_arrow`) and `request` columns; returns the columns with a status per column.
    pub fn run(
        &self,
        mut features: Vec<ArrayRef>,
        request: Vec<ArrayRef>,
        status: &[i8],
        n_parts: usize,
    ) -> Result<PostOut> {
        if features.len() != self.n_features || request.len() != self.n_request() {
            return Err(Error::Internal(
                "the post-stage was given the wrong number of columns".into(),
            ));
        }
        // A plan of no view has no feature column: its rows are the request columns'.
        let n = features.first().or(request.first()).map_or(0, |a| a.len());
        if request.iter().any(|a| a.len() != n) {
            return Err(Error::InvalidArgument(format!(
                "a request-time column has a length other than the request's {n} rows"
            )));
        }
        features.extend(request);
        let run = self.program.run(features)?;
        let w = self.select.len();
        let mut out_status = vec![PRESENT; n * w];
        let mut columns = Vec::with_capacity(w);
        let mut imputed = Vec::with_capacity(w);
        for (j, (&s, src)) in self.select.iter().zip(&self.source).enumerate() {
            let mut col = run.columns[s].clone();
            let mut mask = run.imputed[s].clone();
            if let Some(p) = *src {
                let mut later = false;
                for i in 0..n {
                    let st = status[i * n_parts + p];
                    out_status[i * w + j] = st;
                    later |= st == NOT_YET_VALID;
                }
                if later && mask.is_some() {
                    let keep: BooleanArray = (0..n)
                        .map(|i| Some(status[i * n_parts + p] == NOT_YET_VALID))
                        .collect();
                    col = nullif(&col, &keep)?;
                    let m: BooleanArray = mask
                        .iter()
                        .flat_map(|m| m.iter())
                        .zip(keep.iter())
                        .map(|(m, k)| Some(m == Some(true) && k != Some(true)))
                        .collect();
                    mask = Some(m);
                }
            }
            if let Some(mask) = &mask {
                for (i, m) in mask.iter().enumerate() {
                    if m == Some(true) {
                        out_status[i * w + j] = IMPUTED;
                    }
                }
            }
            columns.push(col);
            imputed.push(mask);
        }
        Ok(PostOut {
            columns,
            imputed,
            status: out_status,
        })
    }
}

/// The stage's columns as float64 row-major `n x columns`, nulls as NaN (`get_numpy`).
pub fn rows_f64(names: &[String], columns: &[ArrayRef], n: usize) -> Result<Vec<f64>> {
    let w = columns.len();
    let mut out = vec![0.0; n * w];
    for (j, (c, name)) in columns.iter().zip(names).enumerate() {
        write_f64_nan(name, c, &mut out[j..], w)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Float64Array;

    use super::*;
    use crate::online::status::{NOT_FOUND, PRESENT};
    use crate::transform::{Node, Op};

    #[test]
    fn fills_mark_their_part_imputed_and_select_picks_outputs() {
        let value: ArrayRef = Arc::new(Float64Array::from(vec![3.0]));
        let program = Program::new(
            2,
            vec![
                ("x".into(), Node::Fill { src: 0, value }),
                (
                    "x_log1p".into(),
                    Node::Op {
                        src: 2,
                        op: Op::Log1p,
                    },
                ),
            ],
        )
        .unwrap();
        let post = Post::new(
            program,
            1,
            vec![2, 3, 1, 0],
            vec![Some(0), Some(0), None, Some(0)],
            1,
        )
        .unwrap();
        assert_eq!(post.n_request(), 1);
        let f: ArrayRef = Arc::new(Float64Array::from(vec![Some(1.0), None]));
        let r: ArrayRef = Arc::new(Float64Array::from(vec![7.0, 8.0]));
        let status = vec![PRESENT, NOT_FOUND];
        let out = post.run(vec![f], vec![r], &status, 1).unwrap();
        // The filled column and its transform are IMPUTED where filled; the unfilled input keeps its
        // lookup status; the request column is PRESENT.
        assert_eq!(
            out.status,
            vec![PRESENT, PRESENT, PRESENT, PRESENT, IMPUTED, IMPUTED, PRESENT, NOT_FOUND]
        );
        let out = PostOut {
            columns: out.columns[..3].to_vec(),
            imputed: out.imputed[..3].to_vec(),
            status: out.status,
        };
        assert_eq!(out.columns.len(), 3);
        assert!(out.imputed[2].is_none());
        assert_eq!(out.imputed[1].as_ref().unwrap().true_count(), 1);
        let v = rows_f64(&["a".into(), "b".into(), "c".into()], &out.columns, 2).unwrap();
        assert_eq!(v[0], 1.0);
        assert_eq!(v[3], 3.0);
        assert_eq!(v[5], 8.0);
        assert!(Post::new(Program::new(1, vec![]).unwrap(), 1, vec![5], vec![None], 1).is_err());
    }
}
