//! The right side as an index: row positions grouped by key id and ordered by (on, tie_breaker,
//! position) inside each group, plus the search that finds each left row's match in it.
//!
//! Entry format (v1): one `u128` per right row that can match, `(on ^ 2^63) << 32 | position`: the
//! order-preserving unsigned form of the i64 `on` in bits 32..96 and the u32 row position below it, so
//! the integers' natural order is (on, position). Bits 96..128 are ignored by every reader (the
//! two-pass build leaves the group id there, constant within a group). One array instead of two
//! halves the cache misses of the scatter, and plain integer sorting (no comparator) is what the
//! per-group sort needs when there is no tie-breaker. The right's value columns are never touched here.
//!
//! Groups are laid out by a stable counting sort, so within a group positions are already in input
//! order; a group already ordered by (on[, tie_breaker]) is left as it is, so a right side sorted by
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

/// Where the right's `on` values come from while the index is built.
pub enum OnSource<'a> {
    /// Already in the comparison unit, one per row.
    Values(&'a [i64]),
    /// The i64 chunks of the column itself (timestamps or int64), times `mult` (the caller has checked
    /// that no valid value overflows): no copy of the column is made.
    Chunks {
        chunks: Vec<&'a [i64]>,
        starts: Vec<usize>,
        mult: i64,
    },
}

impl OnSource<'_> {
    /// A reader for rows `first, first + 1, ...` (increasing), keeping a cursor into the chunks.
    fn reader(&self, first: usize) -> impl FnMut(usize) -> i64 + '_ {
        let mut c = match self {
            OnSource::Values(_) => 0,
            OnSource::Chunks { starts, .. } => starts.partition_point(|&s| s <= first).saturating_sub(1),
        };
        move |i| match self {
            OnSource::Values(v) => v[i],
            OnSource::Chunks { chunks, starts, mult } => {
                while i >= starts[c] + chunks[c].len() {
                    c += 1;
                }
                // Null slots may hold anything; their rows are left out by id, so wrapping is harmless.
                chunks[c][i - starts[c]].wrapping_mul(*mult)
            }
        }
    }
}

/// Packs (on, position) into one entry (format v1, see the module docs).
#[inline]
pub fn entry(on: i64, pos: u32) -> u128 {
    ((((on as u64) ^ (1 << 63)) as u128) << 32) | pos as u128
}

#[inline]
pub fn entry_on(e: u128) -> i64 {
    (((e >> 32) as u64) ^ (1 << 63)) as i64
}

#[inline]
pub fn entry_pos(e: u128) -> u32 {
    e as u32
}

/// Right rows grouped by key id: group `g` owns `entries[offsets[g]..offsets[g + 1]]`, ordered by
/// (on, tie_breaker, position).
pub struct Index {
    offsets: Vec<u32>,
    entries: Vec<u128>,
    pub stats: BuildStats,
}

/// A raw pointer shared by the scatter threads. Safety: every thread writes only the destination slots
/// the prefix sums gave it, which are disjoint from every other thread's.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(*mut T);
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    pub(crate) fn new(v: &mut [T]) -> Self {
        SharedMut(v.as_mut_ptr())
    }

    /// # Safety
    /// `i` is in bounds of the allocation and no other thread reads or writes slot `i`.
    #[inline]
    pub(crate) unsafe fn write(&self, i: usize, v: T) {
        unsafe { self.0.add(i).write(v) }
    }
}

/// Stable, parallel counting sort: the value of every row `i` with `ids[i] != NONE`, grouped by id, in
/// row order within a group. Returns the group offsets (`n_groups + 1` of them) and the values.
/// `reader(first)` makes a reader for one contiguous part of the rows starting at `first`; it is then
/// called with increasing row numbers, so it may keep a cursor (e.g. into the chunks of a column).
pub fn group_rows<T: Copy + Default + Send + Sync, R: FnMut(usize) -> T>(
    ids: &[u32],
    n_groups: usize,
    reader: impl Fn(usize) -> R + Sync,
) -> (Vec<u32>, Vec<T>) {
    group_rows_by(ids.len(), n_groups, |i| ids[i], reader)
}

/// [`group_rows`] with the group of row `i` given by `key(i)` (NONE: leave the row out).
fn group_rows_by<T: Copy + Default + Send + Sync, R: FnMut(usize) -> T>(
    n: usize,
    n_groups: usize,
    key: impl Fn(usize) -> u32 + Sync,
    reader: impl Fn(usize) -> R + Sync,
) -> (Vec<u32>, Vec<T>) {
    let threads = rayon::current_num_threads().max(1);
    // One histogram per part: with many groups per row the histograms would cost more than the
    // parallel pass saves.
    let parts = if n < (1 << 16) || n_groups > n / 4 {
        1
    } else {
        threads
    };
    let block = n.div_ceil(parts).max(1);
    let range = |p: usize| (p * block).min(n)..((p + 1) * block).min(n);
    let mut hists: Vec<Vec<u32>> = (0..parts)
        .into_par_iter()
        .map(|p| {
            let mut h = vec![0u32; n_groups];
            for g in range(p).map(&key) {
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
    let mut out = vec![T::default(); running as usize];
    let ptr = SharedMut(out.as_mut_ptr());
    hists.into_par_iter().enumerate().for_each(|(p, mut cursor)| {
        let mut value = reader(range(p).start);
        for i in range(p) {
            let g = key(i);
            if g == NONE {
                continue;
            }
            let d = cursor[g as usize] as usize;
            cursor[g as usize] += 1;
            // SAFETY: d < out.len() and no other part or row gets the same d (see SharedMut).
            unsafe { ptr.write(d, value(i)) };
        }
    });
    (offsets, out)
}

impl Index {
    /// `ids[i]` is right row i's group (or NONE to leave it out), `on` gives its time in the comparison
    /// unit.
    pub fn build(ids: &[u32], on: &OnSource<'_>, n_groups: usize, tie: Option<&TieBreaker>) -> Index {
        if let Some(shift) = two_pass_shift(ids, n_groups) {
            return Index::build_two_pass(ids, on, n_groups, shift, tie);
        }
        let (offsets, entries) = group_rows(ids, n_groups, |first| {
            let mut read = on.reader(first);
            move |i| entry(read(i), i as u32)
        });
        let mut index = Index {
            offsets,
            entries,
            stats: BuildStats::default(),
        };
        index.stats.groups_sorted = index.sort_groups(tie);
        index
    }

    /// The same index built in two cache-sized steps, for many rows spread over many groups, where
    /// scattering straight to each row's group would miss the cache on nearly every write.
    ///
    /// Pass 1 scatters rows by bucket (a run of `1 << shift` consecutive groups), a few hundred write
    /// streams; pass 2 takes one bucket at a time (small enough for the core's cache), rearranges it
    /// by group in place and sorts those groups while they are still in cache. Both passes are
    /// stable, so the result equals the one-pass build. During pass 2 the group id rides in the unused
    /// top 32 bits of each entry (format v1 ignores them; they stay, constant within a group).
    fn build_two_pass(
        ids: &[u32],
        on: &OnSource<'_>,
        n_groups: usize,
        shift: u32,
        tie: Option<&TieBreaker>,
    ) -> Index {
        let n_buckets = ((n_groups - 1) >> shift) + 1;
        let bucket = |i: usize| if ids[i] == NONE { NONE } else { ids[i] >> shift };
        let (bstarts, mut entries) = group_rows_by(ids.len(), n_buckets, bucket, |first| {
            let mut read = on.reader(first);
            move |i| ((ids[i] as u128) << 96) | entry(read(i), i as u32)
        });
        let m = entries.len();
        let mut offsets = vec![0u32; n_groups + 1];
        offsets[n_groups] = m as u32;
        let width = 1usize << shift;
        let mut tasks = Vec::with_capacity(n_buckets);
        let mut rest = &mut entries[..];
        for (b, offs) in offsets[..n_groups].chunks_mut(width).enumerate() {
            let len = (bstarts[b + 1] - bstarts[b]) as usize;
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
            tasks.push((b, offs, head));
            rest = tail;
        }
        let sorted = tasks
            .into_par_iter()
            .map(|(b, offs, out)| {
                let lo = bstarts[b] as usize;
                // The bucket is rearranged in place through a copy the size of one bucket, so the
                // whole build needs no second array of entries.
                let src = out.to_vec();
                let g0 = b << shift;
                let local = |e: u128| (e >> 96) as usize - g0;
                let mut cursor = vec![0u32; offs.len()];
                for &e in &src {
                    cursor[local(e)] += 1;
                }
                let mut running = 0u32;
                for (c, o) in cursor.iter_mut().zip(offs.iter_mut()) {
                    *o = lo as u32 + running;
                    let k = *c;
                    *c = running;
                    running += k;
                }
                for &e in &src {
                    let g = local(e);
                    out[cursor[g] as usize] = e;
                    cursor[g] += 1;
                }
                let mut sorted = 0;
                for g in 0..offs.len() {
                    let a = offs[g] as usize - lo;
                    let z = offs.get(g + 1).map_or(out.len(), |&o| o as usize - lo);
                    if sort_group(&mut out[a..z], tie) {
                        sorted += 1;
                    }
                }
                sorted
            })
            .sum();
        Index {
            offsets,
            entries,
            stats: BuildStats {
                groups_sorted: sorted,
            },
        }
    }

    /// Orders every group by (on, tie, position); returns how many groups needed it.
    fn sort_groups(&mut self, tie: Option<&TieBreaker>) -> usize {
        let m = self.entries.len();
        let n_groups = self.offsets.len() - 1;
        if m == 0 {
            return 0;
        }
        // Contiguous runs of whole groups, about equal in entries, one rayon task each.
        let target = (m / (rayon::current_num_threads() * 8)).max(1 << 12) as u32;
        let mut tasks = Vec::new();
        let mut rest = &mut self.entries[..];
        let mut g0 = 0;
        while g0 < n_groups {
            let mut g1 = g0 + 1;
            while g1 < n_groups && self.offsets[g1] - self.offsets[g0] < target {
                g1 += 1;
            }
            let len = (self.offsets[g1] - self.offsets[g0]) as usize;
            let (a, b) = std::mem::take(&mut rest).split_at_mut(len);
            tasks.push((g0, g1, a));
            rest = b;
            g0 = g1;
        }
        let offsets = &self.offsets;
        tasks
            .into_par_iter()
            .map(|(g0, g1, entries)| {
                let base = offsets[g0] as usize;
                let mut sorted = 0;
                for g in g0..g1 {
                    let lo = offsets[g] as usize - base;
                    let hi = offsets[g + 1] as usize - base;
                    if sort_group(&mut entries[lo..hi], tie) {
                        sorted += 1;
                    }
                }
                sorted
            })
            .sum()
    }

    pub fn group(&self, g: u32) -> &[u128] {
        &self.entries[self.offsets[g as usize] as usize..self.offsets[g as usize + 1] as usize]
    }

    pub fn n_groups(&self) -> usize {
        self.offsets.len() - 1
    }
}

/// The bucket width (as a shift of the group id) for the two-pass build, or `None` when one pass is
/// as good: few rows or few groups (few write streams), or ids already non-decreasing (a right side
/// sorted by key, whose one-pass scatter is a sequential copy; the check stops at the first descent).
fn two_pass_shift(ids: &[u32], n_groups: usize) -> Option<u32> {
    // About 16k entries (256 KiB) per bucket: a bucket and its output fit in a core's L2.
    let buckets = ids.len() >> 14;
    if buckets < 16 || n_groups < 4 * buckets {
        return None;
    }
    let mut last = 0;
    let sorted = ids.iter().all(|&g| {
        if g == NONE {
            return true;
        }
        let ok = g >= last;
        last = g;
        ok
    });
    if sorted {
        return None;
    }
    Some((n_groups / buckets).next_power_of_two().trailing_zeros())
}

/// Sorts one group unless it already is in order; returns whether it sorted. Positions arrive
/// increasing (stable scatter), so only (on, tie) order needs checking.
fn sort_group(entries: &mut [u128], tie: Option<&TieBreaker>) -> bool {
    let tie_ok = |a: u128, b: u128| tie.is_none_or(|t| t.get(entry_pos(a)) <= t.get(entry_pos(b)));
    let in_order = entries
        .windows(2)
        .all(|w| match entry_on(w[0]).cmp(&entry_on(w[1])) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => tie_ok(w[0], w[1]),
        });
    if in_order {
        return false;
    }
    // Integer order is (on, position): exactly the order wanted without a tie-breaker.
    if entries.len() > 1 << 16 {
        entries.par_sort_unstable();
    } else {
        entries.sort_unstable();
    }
    if let Some(t) = tie {
        // Runs of equal `on` are rare; only they are reordered by (tie, position).
        let mut i = 0;
        while i < entries.len() {
            let on = entry_on(entries[i]);
            let mut j = i + 1;
            while j < entries.len() && entry_on(entries[j]) == on {
                j += 1;
            }
            if j - i > 1 {
                entries[i..j].sort_by_key(|&e| (t.get(entry_pos(e)), entry_pos(e)));
            }
            i = j;
        }
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
    use arrow::array::Int64Array;
    use std::sync::Arc;

    fn split(group: &[u128]) -> (Vec<i64>, Vec<u32>) {
        group.iter().map(|&e| (entry_on(e), entry_pos(e))).unzip()
    }

    /// Every (group, on, position) of an index, group by group: a stable sort by (group, on) of the
    /// input is exactly this.
    fn flatten(idx: &Index, n_groups: usize) -> Vec<(u32, i64, u32)> {
        (0..n_groups as u32)
            .flat_map(|g| {
                let (o, p) = split(idx.group(g));
                o.into_iter().zip(p).map(move |(o, p)| (g, o, p))
            })
            .collect()
    }

    fn ents(on: &[i64]) -> Vec<u128> {
        on.iter().enumerate().map(|(i, &o)| entry(o, i as u32)).collect()
    }

    #[test]
    fn entries_keep_the_order_of_on_then_position() {
        let vals = [i64::MIN, -1, 0, 1, i64::MAX];
        for w in vals.windows(2) {
            assert!(entry(w[0], u32::MAX) < entry(w[1], 0));
            assert_eq!(entry_on(entry(w[0], 7)), w[0]);
        }
        assert_eq!(entry_pos(entry(-5, u32::MAX - 1)), u32::MAX - 1);
    }

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
        let idx = Index::build(&ids, &OnSource::Values(&on), 3, None);
        assert_eq!(split(idx.group(0)), (vec![5i64, 5], vec![1u32, 4]));
        assert_eq!(split(idx.group(1)), (vec![10i64, 30, 30], vec![3u32, 0, 5]));
        assert_eq!(idx.group(2).len(), 0);
        assert_eq!(idx.stats.groups_sorted, 1);
    }

    #[test]
    fn parallel_scatter_matches_a_sequential_stable_sort() {
        let n = 200_000usize;
        let ids: Vec<u32> = (0..n).map(|i| ((i * 7919) % 1000) as u32).collect();
        let on: Vec<i64> = (0..n).map(|i| ((i * 104_729) % 5000) as i64).collect();
        let idx = Index::build(&ids, &OnSource::Values(&on), 1000, None);
        let mut expect: Vec<(u32, i64, u32)> = (0..n).map(|i| (ids[i], on[i], i as u32)).collect();
        expect.sort();
        assert_eq!(flatten(&idx, 1000), expect);
    }

    #[test]
    fn chunked_source_reads_across_chunk_boundaries() {
        let a = [5i64, 1, 7];
        let b: [i64; 0] = [];
        let c = [3i64, 2];
        let src = OnSource::Chunks {
            chunks: vec![&a, &b, &c],
            starts: vec![0, 3, 3],
            mult: 10,
        };
        let ids = [0, 1, 0, 1, 0];
        let idx = Index::build(&ids, &src, 2, None);
        assert_eq!(split(idx.group(0)), (vec![20, 50, 70], vec![4, 0, 2]));
        assert_eq!(split(idx.group(1)), (vec![10, 30], vec![1, 3]));
        let mut r = src.reader(3);
        assert_eq!((r(3), r(4)), (30, 20));
    }

    #[test]
    fn two_pass_build_equals_a_sequential_stable_sort() {
        let n = 600_000usize;
        let n_groups = 3_001usize;
        let ids: Vec<u32> = (0..n)
            .map(|i| {
                if i % 17 == 0 {
                    NONE
                } else {
                    ((i * 2_654_435_761) % n_groups) as u32
                }
            })
            .collect();
        let on: Vec<i64> = (0..n).map(|i| ((i * 40_503) % 7_919) as i64 - 4_000).collect();
        assert!(two_pass_shift(&ids, n_groups).is_some());
        let idx = Index::build(&ids, &OnSource::Values(&on), n_groups, None);
        let mut expect: Vec<(u32, i64, u32)> = (0..n)
            .filter(|&i| ids[i] != NONE)
            .map(|i| (ids[i], on[i], i as u32))
            .collect();
        expect.sort();
        assert_eq!(flatten(&idx, n_groups), expect);
        assert!(idx.stats.groups_sorted > 0);
        // Non-decreasing ids take the one-pass path, which is then a straight copy.
        let mut sorted_ids = ids.clone();
        sorted_ids.sort();
        assert!(two_pass_shift(&sorted_ids, n_groups).is_none());
    }

    #[test]
    fn sorted_input_sorts_no_group() {
        let ids: Vec<u32> = (0..100_000u32).map(|i| i / 10).collect();
        let on: Vec<i64> = (0..100_000i64).map(|i| i % 10).collect();
        assert_eq!(
            Index::build(&ids, &OnSource::Values(&on), 10_000, None)
                .stats
                .groups_sorted,
            0
        );
    }

    #[test]
    fn tie_breaker_orders_equal_times_with_nulls_lowest() {
        let tie = TieBreaker::new(vec![
            Arc::new(Int64Array::from(vec![Some(5), None])),
            Arc::new(Int64Array::from(vec![Some(1), Some(5)])),
        ]);
        let idx = Index::build(&[0, 0, 0, 0], &OnSource::Values(&[7, 7, 7, 7]), 1, Some(&tie));
        // null (1), then 1 (2), then the two 5s in input order (0, 3).
        assert_eq!(split(idx.group(0)).1, vec![1, 2, 0, 3]);
        let r = rule(Direction::Backward, true, None);
        assert_eq!(entry_pos(idx.group(0)[r.pick(idx.group(0), 7).unwrap()]), 3);
        let f = rule(Direction::Forward, true, None);
        assert_eq!(entry_pos(idx.group(0)[f.pick(idx.group(0), 0).unwrap()]), 3);
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
        let idx = Index::build(&[0, 1, 0], &OnSource::Values(&[1, 1, 3]), 2, None);
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
        let idx = Index::build(&rids, &OnSource::Values(&ron), 20_000, None);
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
