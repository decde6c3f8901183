//! The right side as an index: row positions grouped by key id and ordered by (on, tie_breaker,
//! position) inside each group, plus the search that finds each left row's match in it.
//!
//! Only two narrow arrays are built (the `on` value and the row position of each right row that can
//! match); the right's value columns are never touched here. Groups are laid out by a stable counting
//! sort, so within a group positions are already in input order; a group whose `on` values (and
//! tie-breakers among equal `on`) are already non-decreasing is left as it is, so a right side sorted by
//! (key, on) costs one check pass and no sort.

use std::cmp::Ordering;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::*;
use rayon::prelude::*;

use super::keys::{timestamp_values, with_int, NONE};
use super::Direction;

/// A right-side column that ranks rows with equal key and `on` (larger wins; null ranks lowest).
pub struct TieBreaker {
    chunks: Vec<ArrayRef>,
    starts: Vec<usize>,
}

impl TieBreaker {
    /// `chunks` must be integer or timestamp arrays (checked by the caller).
    pub fn new(chunks: Vec<ArrayRef>) -> Self {
        let mut starts = Vec::with_capacity(chunks.len());
        let mut n = 0;
        for c in &chunks {
            starts.push(n);
            n += c.len();
        }
        TieBreaker { chunks, starts }
    }

    /// The rank of right row `pos`; `None` (a null) orders below every value.
    fn get(&self, pos: u32) -> Option<u64> {
        let pos = pos as usize;
        let c = self.starts.partition_point(|&s| s <= pos) - 1;
        let arr = self.chunks[c].as_ref();
        let i = pos - self.starts[c];
        if arr.is_null(i) {
            return None;
        }
        Some(match arr.data_type() {
            DataType::Timestamp(..) => timestamp_values(arr)[i].ord_u64(),
            _ => with_int!(arr, a => a.value(i).ord_u64()),
        })
    }
}

use super::keys::OrdU64;

/// What the kernel needs to know about each stage, for tests and the benchmark notes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BuildStats {
    /// Groups whose entries had to be sorted (0 for a right side already ordered by (key, on[, tie])).
    pub groups_sorted: usize,
}

/// Right rows grouped by key id: group `g` owns `on[offsets[g]..offsets[g + 1]]` and the same range of
/// `pos`, ordered by (on, tie_breaker, position).
pub struct Index {
    offsets: Vec<u32>,
    on: Vec<i64>,
    pos: Vec<u32>,
    pub stats: BuildStats,
}

/// A raw pointer shared by the scatter threads. Safety: every thread writes only the destination slots
/// the prefix sums gave it, which are disjoint from every other thread's.
#[derive(Clone, Copy)]
struct SharedMut<T>(*mut T);
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl Index {
    /// `ids[i]` is right row i's group (or NONE to leave it out), `on[i]` its time in the comparison unit.
    pub fn build(ids: &[u32], on: &[i64], n_groups: usize, tie: Option<&TieBreaker>) -> Index {
        let n = ids.len();
        let threads = rayon::current_num_threads().max(1);
        // One histogram per part: with many groups per row the histograms would cost more than the
        // parallel pass saves.
        let parts = if n < (1 << 16) || n_groups > n / 4 {
            1
        } else {
            threads
        };
        let block = n.div_ceil(parts).max(1);
        let mut hists: Vec<Vec<u32>> = (0..parts)
            .into_par_iter()
            .map(|p| {
                let mut h = vec![0u32; n_groups];
                for &g in &ids[(p * block).min(n)..((p + 1) * block).min(n)] {
                    if g != NONE {
                        h[g as usize] += 1;
                    }
                }
                h
            })
            .collect();
        // Turn the counts into each part's first destination in each group (in place).
        let mut offsets = vec![0u32; n_groups + 1];
        let mut running = 0u32;
        for g in 0..n_groups {
            offsets[g] = running;
            for h in hists.iter_mut() {
                let c = h[g];
                h[g] = running;
                running += c;
            }
        }
        offsets[n_groups] = running;
        let m = running as usize;
        let mut on_sorted = vec![0i64; m];
        let mut pos_sorted = vec![0u32; m];
        let on_ptr = SharedMut(on_sorted.as_mut_ptr());
        let pos_ptr = SharedMut(pos_sorted.as_mut_ptr());
        hists.into_par_iter().enumerate().for_each(|(p, mut cursor)| {
            let (on_ptr, pos_ptr) = (on_ptr, pos_ptr);
            let lo = (p * block).min(n);
            let hi = ((p + 1) * block).min(n);
            for i in lo..hi {
                let g = ids[i];
                if g == NONE {
                    continue;
                }
                let d = cursor[g as usize] as usize;
                cursor[g as usize] += 1;
                // SAFETY: d < m and no other part or row gets the same d (see SharedMut).
                unsafe {
                    *on_ptr.0.add(d) = on[i];
                    *pos_ptr.0.add(d) = i as u32;
                }
            }
        });
        let mut index = Index {
            offsets,
            on: on_sorted,
            pos: pos_sorted,
            stats: BuildStats::default(),
        };
        index.stats.groups_sorted = index.sort_groups(tie);
        index
    }

    /// Orders every group by (on, tie, position); returns how many groups needed it.
    fn sort_groups(&mut self, tie: Option<&TieBreaker>) -> usize {
        let m = self.on.len();
        let n_groups = self.offsets.len() - 1;
        if m == 0 {
            return 0;
        }
        // Contiguous runs of whole groups, about equal in entries, one rayon task each.
        let target = (m / (rayon::current_num_threads() * 8)).max(1 << 12);
        let mut tasks = Vec::new();
        let (mut on_rest, mut pos_rest) = (&mut self.on[..], &mut self.pos[..]);
        let mut g0 = 0;
        let mut taken = 0usize;
        while g0 < n_groups {
            let mut g1 = g0 + 1;
            while g1 < n_groups && (self.offsets[g1] - self.offsets[g0]) < target as u32 {
                g1 += 1;
            }
            let len = (self.offsets[g1] - self.offsets[g0]) as usize;
            let (a, b) = std::mem::take(&mut on_rest).split_at_mut(len);
            let (c, d) = std::mem::take(&mut pos_rest).split_at_mut(len);
            tasks.push((g0, g1, a, c));
            on_rest = b;
            pos_rest = d;
            taken += len;
            g0 = g1;
        }
        debug_assert_eq!(taken, m);
        let offsets = &self.offsets;
        tasks
            .into_par_iter()
            .map(|(g0, g1, on, pos)| {
                let base = offsets[g0] as usize;
                let mut sorted = 0;
                for g in g0..g1 {
                    let lo = offsets[g] as usize - base;
                    let hi = offsets[g + 1] as usize - base;
                    if sort_group(&mut on[lo..hi], &mut pos[lo..hi], tie) {
                        sorted += 1;
                    }
                }
                sorted
            })
            .sum()
    }

    pub fn group(&self, g: u32) -> (&[i64], &[u32]) {
        let lo = self.offsets[g as usize] as usize;
        let hi = self.offsets[g as usize + 1] as usize;
        (&self.on[lo..hi], &self.pos[lo..hi])
    }

    pub fn n_groups(&self) -> usize {
        self.offsets.len() - 1
    }
}

/// Sorts one group unless it already is in order; returns whether it sorted. Positions arrive
/// increasing (stable scatter), so only (on, tie) order needs checking.
fn sort_group(on: &mut [i64], pos: &mut [u32], tie: Option<&TieBreaker>) -> bool {
    let in_order = (1..on.len()).all(|i| match on[i - 1].cmp(&on[i]) {
        Ordering::Less => true,
        Ordering::Greater => false,
        Ordering::Equal => tie.is_none_or(|t| t.get(pos[i - 1]) <= t.get(pos[i])),
    });
    if in_order {
        return false;
    }
    let mut pairs: Vec<(i64, u32)> = on.iter().copied().zip(pos.iter().copied()).collect();
    let cmp = |a: &(i64, u32), b: &(i64, u32)| {
        a.0.cmp(&b.0)
            .then_with(|| match tie {
                Some(t) => t.get(a.1).cmp(&t.get(b.1)),
                None => Ordering::Equal,
            })
            .then(a.1.cmp(&b.1))
    };
    // The key includes the position, so it is total and an unstable sort is deterministic.
    if pairs.len() > 1 << 16 {
        pairs.par_sort_unstable_by(cmp);
    } else {
        pairs.sort_unstable_by(cmp);
    }
    for (k, (o, p)) in pairs.into_iter().enumerate() {
        on[k] = o;
        pos[k] = p;
    }
    true
}

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
    pub fn pick(&self, on: &[i64], t: i64) -> Option<usize> {
        // Backward: the last entry with on <= t (< t), which by the group order is the greatest
        // tie-breaker, then the last in input order, among equal `on`.
        let back = || {
            let k = if self.allow_exact {
                on.partition_point(|&x| x <= t)
            } else {
                on.partition_point(|&x| x < t)
            };
            k.checked_sub(1)
        };
        // Forward: the first entry with on >= t (> t), then the last entry sharing its `on`.
        let fwd = || {
            let k = if self.allow_exact {
                on.partition_point(|&x| x < t)
            } else {
                on.partition_point(|&x| x <= t)
            };
            (k < on.len()).then(|| {
                let v = on[k];
                k + on[k..].partition_point(|&x| x <= v) - 1
            })
        };
        let dist = |k: usize| (on[k] as i128 - t as i128).unsigned_abs();
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
pub fn search(index: &Index, left_ids: &[u32], left_on: &[i64], rule: Rule) -> Vec<u32> {
    let mut out = vec![NONE; left_ids.len()];
    out.par_chunks_mut(1 << 14).enumerate().for_each(|(c, out)| {
        let base = c << 14;
        for (k, o) in out.iter_mut().enumerate() {
            let g = left_ids[base + k];
            if g == NONE || g as usize >= index.n_groups() {
                continue;
            }
            let (on, pos) = index.group(g);
            if let Some(e) = rule.pick(on, left_on[base + k]) {
                *o = pos[e];
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use std::sync::Arc;

    fn rule(direction: Direction, allow_exact: bool, tolerance: Option<u64>) -> Rule {
        Rule {
            direction,
            allow_exact,
            tolerance,
        }
    }

    #[test]
    fn counting_sort_groups_stably_and_orders_by_time() {
        let ids = [1, 0, NONE, 1, 0, 1];
        let on = [30, 5, 0, 10, 5, 30];
        let idx = Index::build(&ids, &on, 3, None);
        assert_eq!(idx.group(0), (&[5i64, 5][..], &[1u32, 4][..]));
        assert_eq!(idx.group(1), (&[10i64, 30, 30][..], &[3u32, 0, 5][..]));
        assert_eq!(idx.group(2).0.len(), 0);
        assert_eq!(idx.stats.groups_sorted, 1);
    }

    #[test]
    fn parallel_scatter_matches_a_sequential_stable_sort() {
        let n = 200_000usize;
        let ids: Vec<u32> = (0..n).map(|i| ((i * 7919) % 1000) as u32).collect();
        let on: Vec<i64> = (0..n).map(|i| ((i * 104_729) % 5000) as i64).collect();
        let idx = Index::build(&ids, &on, 1000, None);
        let mut expect: Vec<(u32, i64, u32)> = (0..n).map(|i| (ids[i], on[i], i as u32)).collect();
        expect.sort();
        let got: Vec<(u32, i64, u32)> = (0..1000u32)
            .flat_map(|g| {
                let (o, p) = idx.group(g);
                o.iter().zip(p).map(move |(&o, &p)| (g, o, p)).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn sorted_input_sorts_no_group() {
        let ids: Vec<u32> = (0..100_000u32).map(|i| i / 10).collect();
        let on: Vec<i64> = (0..100_000i64).map(|i| i % 10).collect();
        assert_eq!(Index::build(&ids, &on, 10_000, None).stats.groups_sorted, 0);
    }

    #[test]
    fn tie_breaker_orders_equal_times_with_nulls_lowest() {
        let tie = TieBreaker::new(vec![
            Arc::new(Int64Array::from(vec![Some(5), None])),
            Arc::new(Int64Array::from(vec![Some(1), Some(5)])),
        ]);
        let idx = Index::build(&[0, 0, 0, 0], &[7, 7, 7, 7], 1, Some(&tie));
        // null (1), then 1 (2), then the two 5s in input order (0, 3).
        assert_eq!(idx.group(0).1, &[1, 2, 0, 3]);
        let r = rule(Direction::Backward, true, None);
        assert_eq!(idx.group(0).1[r.pick(idx.group(0).0, 7).unwrap()], 3);
        let f = rule(Direction::Forward, true, None);
        assert_eq!(idx.group(0).1[f.pick(idx.group(0).0, 0).unwrap()], 3);
    }

    #[test]
    fn directions_exactness_and_tolerance_boundaries() {
        let on = [10i64, 20, 20, 30];
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
        let ext = [i64::MIN, i64::MAX];
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
        let idx = Index::build(&[0, 1, 0], &[1, 1, 3], 2, None);
        let got = search(
            &idx,
            &[0, 1, NONE, 0],
            &[2, 5, 5, 0],
            rule(Direction::Backward, true, None),
        );
        assert_eq!(got, vec![0, 1, NONE, NONE]);
    }
}
