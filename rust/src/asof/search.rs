//! The search side of the as-of join: for each left row, the entry of its group in the right's
//! [`Index`] that the join's rule picks.

use rayon::prelude::*;

use super::Direction;
use crate::group::index::{entry, group_rows, Index};
use crate::group::{entry_on, entry_pos, SharedMut, NONE};

/// How to pick a match, in the comparison unit of `on`.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub direction: Direction,
    pub allow_exact: bool,
    /// Largest allowed |on_right - t|, inclusive; `None` for no limit.
    pub tolerance: Option<u64>,
}

impl Rule {
    /// The entry (index into the group) that matches time `t`, if any.
    pub fn pick(&self, group: &[u128], t: i64) -> Option<usize> {
        let on = |k: usize| entry_on(group[k]);
        // Backward: the last entry with on <= t (< t), which by the group order is the greatest
        // tie-breaker, then the last in input order, among equal `on`.
        let back = || {
            let k = if self.allow_exact {
                group.partition_point(|&e| entry_on(e) <= t)
            } else {
                group.partition_point(|&e| entry_on(e) < t)
            };
            k.checked_sub(1)
        };
        // Forward: the first entry with on >= t (> t), then the last entry sharing its `on`.
        let fwd = || {
            let k = if self.allow_exact {
                group.partition_point(|&e| entry_on(e) < t)
            } else {
                group.partition_point(|&e| entry_on(e) <= t)
            };
            (k < group.len()).then(|| {
                let v = on(k);
                k + group[k..].partition_point(|&e| entry_on(e) <= v) - 1
            })
        };
        let dist = |k: usize| (on(k) as i128 - t as i128).unsigned_abs();
        let hit = match self.direction {
            Direction::Backward => back(),
            Direction::Forward => fwd(),
            Direction::Nearest => match (back(), fwd()) {
                (Some(b), Some(f)) => Some(if dist(b) <= dist(f) { b } else { f }),
                (b, f) => b.or(f),
            },
        }?;
        match self.tolerance {
            Some(tol) if dist(hit) > tol as u128 => None,
            _ => Some(hit),
        }
    }
}

/// The matching right position for every left row (NONE where nothing matches).
///
/// Left rows are visited in group order, so consecutive searches hit the same group while it is in
/// cache instead of one cold group per row, and each row's (time, row) is read from the grouped copy
/// rather than from two random places. The order is a counting sort by group when there are not many
/// more groups than left rows, else a plain sort of (group, row) pairs (a few left rows against a right
/// with millions of groups should not pay for a histogram over all of them).
pub fn search(index: &Index, left_ids: &[u32], left_on: &[i64], rule: Rule) -> Vec<u32> {
    let n = left_ids.len();
    let mut out = vec![NONE; n];
    let ptr = SharedMut(out.as_mut_ptr());
    let write = |j: usize, group: &[u128], t: i64| {
        if let Some(e) = rule.pick(group, t) {
            // SAFETY: each left row j is visited once, so each slot is written by one thread once.
            unsafe { ptr.write(j, entry_pos(group[e])) };
        }
    };
    if index.n_groups() > 4 * n + 1024 {
        let mut order: Vec<u64> = (0..n)
            .filter(|&j| left_ids[j] != NONE)
            .map(|j| ((left_ids[j] as u64) << 32) | j as u64)
            .collect();
        order.par_sort_unstable();
        order.par_chunks(1 << 13).for_each(|keys| {
            for &k in keys {
                let j = k as u32 as usize;
                write(j, index.group((k >> 32) as u32), left_on[j]);
            }
        });
        return out;
    }
    let (offsets, rows) = group_rows(left_ids, index.n_groups(), |_| |j| entry(left_on[j], j as u32));
    // Runs of whole groups of about 8k left rows each, one rayon task per run.
    let mut tasks = Vec::new();
    let mut g0 = 0;
    let n_groups = index.n_groups();
    while g0 < n_groups {
        let mut g1 = g0 + 1;
        while g1 < n_groups && offsets[g1] - offsets[g0] < 1 << 13 {
            g1 += 1;
        }
        tasks.push(g0..g1);
        g0 = g1;
    }
    tasks.into_par_iter().for_each(|groups| {
        for g in groups {
            let group = index.group(g as u32);
            for &r in &rows[offsets[g] as usize..offsets[g + 1] as usize] {
                write(entry_pos(r) as usize, group, entry_on(r));
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::{OnSource, Ranks};
    use arrow::array::Int64Array;
    use std::sync::Arc;

    fn ents(on: &[i64]) -> Vec<u128> {
        on.iter().enumerate().map(|(i, &o)| entry(o, i as u32)).collect()
    }

    fn rule(direction: Direction, allow_exact: bool, tolerance: Option<u64>) -> Rule {
        Rule {
            direction,
            allow_exact,
            tolerance,
        }
    }

    #[test]
    fn the_greatest_rank_wins_among_equal_times_in_every_direction() {
        let tie = [crate::table::Column {
            name: "c".into(),
            data_type: arrow::datatypes::DataType::Int64,
            chunks: vec![
                Arc::new(Int64Array::from(vec![Some(5), None])),
                Arc::new(Int64Array::from(vec![Some(1), Some(5)])),
            ],
        }];
        let ranks = Ranks::new(&tie).unwrap();
        let idx = Index::build(&[0, 0, 0, 0], &OnSource::Values(&[7, 7, 7, 7]), 1, &ranks);
        let g = idx.group(0);
        let r = rule(Direction::Backward, true, None);
        assert_eq!(entry_pos(g[r.pick(g, 7).unwrap()]), 3);
        let f = rule(Direction::Forward, true, None);
        assert_eq!(entry_pos(g[f.pick(g, 0).unwrap()]), 3);
    }

    #[test]
    fn directions_exactness_and_tolerance_boundaries() {
        let on = ents(&[10i64, 20, 20, 30]);
        let b = rule(Direction::Backward, true, None);
        assert_eq!(b.pick(&on, 9), None);
        assert_eq!(b.pick(&on, 20), Some(2));
        assert_eq!(b.pick(&on, 25), Some(2));
        let bx = rule(Direction::Backward, false, None);
        assert_eq!(bx.pick(&on, 20), Some(0));
        let f = rule(Direction::Forward, true, None);
        assert_eq!(f.pick(&on, 11), Some(2));
        assert_eq!(f.pick(&on, 31), None);
        let fx = rule(Direction::Forward, false, None);
        assert_eq!(fx.pick(&on, 20), Some(3));
        let n = rule(Direction::Nearest, true, None);
        assert_eq!(n.pick(&on, 15), Some(0)); // equal distance: the earlier one
        assert_eq!(n.pick(&on, 16), Some(2));
        assert_eq!(n.pick(&on, 100), Some(3));
        let bt = rule(Direction::Backward, true, Some(5));
        assert_eq!(bt.pick(&on, 35), Some(3)); // boundary t - tol is inclusive
        assert_eq!(bt.pick(&on, 36), None);
        let ft = rule(Direction::Forward, true, Some(5));
        assert_eq!(ft.pick(&on, 5), Some(0));
        assert_eq!(ft.pick(&on, 4), None);
        let nt = rule(Direction::Nearest, false, Some(0));
        assert_eq!(nt.pick(&on, 20), None);
        // Extremes do not overflow.
        let ext = ents(&[i64::MIN, i64::MAX]);
        assert_eq!(
            rule(Direction::Nearest, true, Some(u64::MAX)).pick(&ext, 0),
            Some(1)
        ); // MAX is one closer than MIN
        assert_eq!(
            rule(Direction::Forward, true, Some(1)).pick(&ext, i64::MIN + 1),
            None
        );
    }

    #[test]
    fn search_uses_each_rows_group() {
        let idx = Index::build(&[0, 1, 0], &OnSource::Values(&[1, 1, 3]), 2, &Ranks::default());
        let got = search(
            &idx,
            &[0, 1, NONE, 0],
            &[2, 5, 5, 0],
            rule(Direction::Backward, true, None),
        );
        assert_eq!(got, vec![0, 1, NONE, NONE]);
    }

    #[test]
    fn grouped_search_matches_a_direct_search_on_both_paths() {
        let n = 100_000usize;
        let rids: Vec<u32> = (0..n).map(|i| (i % 997) as u32).collect();
        let ron: Vec<i64> = (0..n).map(|i| ((i * 31) % 1000) as i64).collect();
        // Groups 997.. are empty; 20k groups make a 200-row left take the sort path.
        let idx = Index::build(&rids, &OnSource::Values(&ron), 20_000, &Ranks::default());
        let lids: Vec<u32> = (0..50_000u32)
            .map(|j| if j % 13 == 0 { NONE } else { (j * 7) % 997 })
            .collect();
        let lon: Vec<i64> = (0..50_000i64).map(|j| (j * 17) % 1100).collect();
        let r = rule(Direction::Nearest, false, Some(40));
        let got = search(&idx, &lids, &lon, r);
        for j in 0..lids.len() {
            let expect = if lids[j] == NONE {
                NONE
            } else {
                let g = idx.group(lids[j]);
                r.pick(g, lon[j]).map_or(NONE, |e| entry_pos(g[e]))
            };
            assert_eq!(got[j], expect, "left row {j}");
        }
        assert_eq!(search(&idx, &lids[..200], &lon[..200], r), got[..200]);
    }
}
