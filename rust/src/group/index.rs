//! Rows as an index: row positions grouped by key id and ordered by (on, ranks..., position) inside
//! each group, where the ranks are caller-chosen columns that order rows of equal `on` (for the
//! history: the created timestamp, then the write sequence). The as-of join searches it; a window
//! kernel walks it group by group.
//!
//! Entry format (v1): one `u128` per row that takes part, `(on ^ 2^63) << 32 | position`: the
//! order-preserving unsigned form of the i64 `on` in bits 32..96 and the u32 row position below it, so
//! the integers' natural order is (on, position). Bits 96..128 are ignored by every reader (the
//! two-pass build leaves the group id there, constant within a group). One array instead of two
//! halves the cache misses of the scatter, and plain integer sorting (no comparator) is what the
//! per-group sort needs when there are no ranks. Value columns are never touched here.
//!
//! Groups are laid out by a stable counting sort, so within a group positions are already in input
//! order; a group already ordered by (on[, ranks]) is left as it is, so rows sorted by (key, on[,
//! ranks]) cost one check pass and no sort.

use std::cmp::Ordering;

use arrow::array::AsArray;
use arrow::datatypes::*;
use rayon::prelude::*;

use super::{SharedMut, NONE};
use crate::column::{timestamp_values, Chunk, Starts};
use crate::error::Result;
use crate::table::Column;

/// Columns that rank rows of equal group and `on`, compared in turn: larger wins, a null ranks below
/// every value. Each must be an integer or timestamp column (see [`super::check_rank_column`]).
#[derive(Default)]
pub struct Ranks<'a> {
    cols: Vec<(Vec<Chunk<'a>>, Starts)>,
}

impl<'a> Ranks<'a> {
    pub fn new(cols: &'a [Column]) -> Result<Ranks<'a>> {
        let cols = cols
            .iter()
            .map(|c| {
                let chunks = c.chunks.iter().map(Chunk::new).collect::<Result<Vec<_>>>()?;
                Ok((chunks, Starts::of(&c.chunks)))
            })
            .collect::<Result<_>>()?;
        Ok(Ranks { cols })
    }

    pub fn is_empty(&self) -> bool {
        self.cols.is_empty()
    }

    /// How row `a` ranks against row `b` (rows of the whole column).
    fn cmp(&self, a: u32, b: u32) -> Ordering {
        for (chunks, starts) in &self.cols {
            let get = |p: u32| {
                let (c, i) = starts.locate(p as usize);
                let ch = &chunks[c];
                if ch.is_null(i) {
                    None
                } else {
                    ch.ord_at(i)
                }
            };
            match get(a).cmp(&get(b)) {
                Ordering::Equal => continue,
                o => return o,
            }
        }
        Ordering::Equal
    }
}

/// What the kernel needs to know about each stage, for tests and the benchmark notes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BuildStats {
    /// Groups whose entries had to be sorted (0 for a right side already ordered by (key, on[, tie])).
    pub groups_sorted: usize,
}

/// Where the rows' `on` values come from while the index is built.
pub enum OnSource<'a> {
    /// Already in the comparison unit, one per row.
    Values(&'a [i64]),
    /// The i64 chunks of the column itself (timestamps or int64), times `mult` (the caller has checked
    /// that no valid value overflows): no copy of the column is made.
    Chunks {
        chunks: Vec<&'a [i64]>,
        starts: Starts,
        mult: i64,
    },
}

impl<'a> OnSource<'a> {
    /// The chunks of an i64 column (a timestamp of any unit, or int64) read in place, times `mult`. The
    /// caller has checked that no valid value overflows when multiplied.
    pub fn column(c: &'a Column, mult: i64) -> OnSource<'a> {
        let chunks: Vec<&[i64]> = c
            .chunks
            .iter()
            .map(|a| match a.data_type() {
                DataType::Timestamp(..) => timestamp_values(a.as_ref()),
                _ => a.as_primitive::<Int64Type>().values(),
            })
            .collect();
        let starts = Starts::new(chunks.iter().map(|c| c.len()));
        OnSource::Chunks { chunks, starts, mult }
    }

    /// A reader for rows `first, first + 1, ...` (increasing), keeping a cursor into the chunks.
    fn reader(&self, first: usize) -> impl FnMut(usize) -> i64 + '_ {
        let mut c = match self {
            OnSource::Values(_) => 0,
            OnSource::Chunks { starts, .. } => starts.chunk_of(first),
        };
        move |i| match self {
            OnSource::Values(v) => v[i],
            OnSource::Chunks { chunks, starts, mult } => {
                while i >= starts.start(c) + chunks[c].len() {
                    c += 1;
                }
                // Null slots may hold anything; their rows are left out by id, so wrapping is harmless.
                chunks[c][i - starts.start(c)].wrapping_mul(*mult)
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

/// Rows grouped by key id: group `g` owns `entries[offsets[g]..offsets[g + 1]]`, ordered by
/// (on, ranks, position).
pub struct Index {
    offsets: Vec<u32>,
    entries: Vec<u128>,
    pub stats: BuildStats,
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
    let mut out = crate::pages::filled(running as usize);
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
    /// `ids[i]` is row i's group (or NONE to leave it out), `on` gives its time in the comparison unit,
    /// `ranks` order rows of equal `on` within a group (empty: by position only).
    pub fn build(ids: &[u32], on: &OnSource<'_>, n_groups: usize, ranks: &Ranks<'_>) -> Index {
        if let Some(shift) = two_pass_shift(ids, n_groups) {
            return Index::build_two_pass(ids, on, n_groups, shift, ranks);
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
        index.stats.groups_sorted = index.sort_groups(ranks);
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
        ranks: &Ranks<'_>,
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
                let mut scratch = Scratch::default();
                for g in 0..offs.len() {
                    let a = offs[g] as usize - lo;
                    let z = offs.get(g + 1).map_or(out.len(), |&o| o as usize - lo);
                    if sort_group(&mut out[a..z], ranks, &mut scratch) {
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

    /// Orders every group by (on, ranks, position); returns how many groups needed it.
    fn sort_groups(&mut self, ranks: &Ranks<'_>) -> usize {
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
                let mut scratch = Scratch::default();
                for g in g0..g1 {
                    let lo = offsets[g] as usize - base;
                    let hi = offsets[g + 1] as usize - base;
                    if sort_group(&mut entries[lo..hi], ranks, &mut scratch) {
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

    /// Every entry, group after group: group `g` is `entries()[offsets()[g]..offsets()[g + 1]]`.
    pub fn entries(&self) -> &[u128] {
        &self.entries
    }

    pub fn offsets(&self) -> &[u32] {
        &self.offsets
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

/// Buffers [`sort_packed`] reuses from group to group.
#[derive(Default)]
struct Scratch {
    keys: Vec<u64>,
    copy: Vec<u128>,
}

/// Sorts a group by (on, position) through 8-byte keys when its span of `on` leaves room for a row's
/// index in the group beside it; false (nothing done) when it does not. Positions arrive increasing,
/// so the index orders as the position does, and sorting 8-byte integers (sorting networks, no
/// comparator) takes about half the time of the 16-byte entries themselves.
fn sort_packed(entries: &mut [u128], scratch: &mut Scratch) -> bool {
    let n = entries.len();
    if n < 2 {
        return true;
    }
    // The order-preserving unsigned `on` (bits 32..96; the build's group id above is dropped).
    let on = |e: u128| (e >> 32) as u64;
    let (lo, hi) = entries
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), &e| (lo.min(on(e)), hi.max(on(e))));
    let bits = usize::BITS - (n - 1).leading_zeros();
    if (hi - lo) >> (64 - bits) != 0 {
        return false;
    }
    let Scratch { keys, copy } = scratch;
    keys.clear();
    keys.extend(
        entries
            .iter()
            .enumerate()
            .map(|(i, &e)| (on(e) - lo) << bits | i as u64),
    );
    keys.sort_unstable();
    copy.clear();
    copy.extend_from_slice(entries);
    let mask = (1u64 << bits) - 1;
    for (e, &k) in entries.iter_mut().zip(keys.iter()) {
        *e = copy[(k & mask) as usize];
    }
    true
}

/// Sorts one group unless it already is in order; returns whether it sorted. Positions arrive
/// increasing (stable scatter), so only (on, ranks) order needs checking.
fn sort_group(entries: &mut [u128], ranks: &Ranks<'_>, scratch: &mut Scratch) -> bool {
    let tie_ok = |a: u128, b: u128| ranks.is_empty() || ranks.cmp(entry_pos(a), entry_pos(b)).is_le();
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
    // Integer order is (on, position): exactly the order wanted without ranks.
    if entries.len() > 1 << 16 {
        entries.par_sort_unstable();
    } else if !sort_packed(entries, scratch) {
        entries.sort_unstable();
    }
    if !ranks.is_empty() {
        // Runs of equal `on` are rare; only they are reordered by (ranks, position).
        let mut i = 0;
        while i < entries.len() {
            let on = entry_on(entries[i]);
            let mut j = i + 1;
            while j < entries.len() && entry_on(entries[j]) == on {
                j += 1;
            }
            if j - i > 1 {
                entries[i..j].sort_by(|&a, &b| {
                    let (pa, pb) = (entry_pos(a), entry_pos(b));
                    ranks.cmp(pa, pb).then(pa.cmp(&pb))
                });
            }
            i = j;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, UInt64Array};
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

    #[test]
    fn entries_keep_the_order_of_on_then_position() {
        let vals = [i64::MIN, -1, 0, 1, i64::MAX];
        for w in vals.windows(2) {
            assert!(entry(w[0], u32::MAX) < entry(w[1], 0));
            assert_eq!(entry_on(entry(w[0], 7)), w[0]);
        }
        assert_eq!(entry_pos(entry(-5, u32::MAX - 1)), u32::MAX - 1);
    }

    #[test]
    fn counting_sort_groups_stably_and_orders_by_time() {
        let ids = [1, 0, NONE, 1, 0, 1];
        let on = [30, 5, 0, 10, 5, 30];
        let idx = Index::build(&ids, &OnSource::Values(&on), 3, &Ranks::default());
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
        let idx = Index::build(&ids, &OnSource::Values(&on), 1000, &Ranks::default());
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
            starts: Starts::new([3, 0, 2]),
            mult: 10,
        };
        let ids = [0, 1, 0, 1, 0];
        let idx = Index::build(&ids, &src, 2, &Ranks::default());
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
        let idx = Index::build(&ids, &OnSource::Values(&on), n_groups, &Ranks::default());
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
    fn packed_and_plain_group_sorts_agree() {
        // Spans of `on` that leave room for the row index (packed keys) and spans that do not
        // (the whole i64 range: the 16-byte sort), with ties, over group sizes around powers of two.
        let mut scratch = Scratch::default();
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for n in [2usize, 3, 7, 8, 9, 100, 255, 256, 257, 1000] {
            for span in [3u64, 1 << 20, 1 << 56, u64::MAX] {
                let mut g: Vec<u128> = (0..n)
                    .map(|i| {
                        // Wrapping: with the widest span the times cover all of i64.
                        let on =
                            ((next() % span.saturating_add(1).max(1)) as i64).wrapping_sub((span / 2) as i64);
                        (7u128 << 96) | entry(on, 1000 + i as u32)
                    })
                    .collect();
                if span == u64::MAX {
                    g[0] = entry(i64::MIN, 1000);
                    g[n - 1] = entry(i64::MAX, 1000 + n as u32 - 1);
                }
                let mut want = g.clone();
                want.sort_unstable();
                let packed = sort_packed(&mut g, &mut scratch);
                // Small spans always fit; the whole i64 range never does; 2^56 fits below 256 rows.
                if span <= 1 << 20 || span == u64::MAX || n <= 256 {
                    assert_eq!(packed, span != u64::MAX, "n {n} span {span}");
                }
                if packed {
                    assert_eq!(g, want, "n {n} span {span}");
                }
            }
        }
    }

    #[test]
    fn sorted_input_sorts_no_group() {
        let ids: Vec<u32> = (0..100_000u32).map(|i| i / 10).collect();
        let on: Vec<i64> = (0..100_000i64).map(|i| i % 10).collect();
        assert_eq!(
            Index::build(&ids, &OnSource::Values(&on), 10_000, &Ranks::default())
                .stats
                .groups_sorted,
            0
        );
    }

    fn col(chunks: Vec<ArrayRef>) -> Column {
        Column {
            name: "r".into(),
            data_type: chunks[0].data_type().clone(),
            chunks,
        }
    }

    #[test]
    fn ranks_order_equal_times_with_nulls_lowest() {
        let tie = col(vec![
            Arc::new(Int64Array::from(vec![Some(5), None])),
            Arc::new(Int64Array::from(vec![Some(1), Some(5)])),
        ]);
        let one = [tie.clone()];
        let ranks = Ranks::new(&one).unwrap();
        let idx = Index::build(&[0, 0, 0, 0], &OnSource::Values(&[7, 7, 7, 7]), 1, &ranks);
        // null (1), then 1 (2), then the two 5s in input order (0, 3).
        assert_eq!(split(idx.group(0)).1, vec![1, 2, 0, 3]);
        // A second rank column (a write sequence) orders the 5s against their input order.
        let seq = col(vec![Arc::new(UInt64Array::from(vec![9, 0, 0, 3]))]);
        let two = [tie, seq];
        let ranks = Ranks::new(&two).unwrap();
        let idx = Index::build(&[0, 0, 0, 0], &OnSource::Values(&[7, 7, 7, 7]), 1, &ranks);
        assert_eq!(split(idx.group(0)).1, vec![1, 2, 3, 0]);
        assert_eq!(idx.stats.groups_sorted, 1);
    }

    #[test]
    fn ranks_agree_with_a_brute_force_sort_on_both_build_paths() {
        // Many equal times per group, ranks with nulls and repeats, over chunks; enough rows and
        // groups that the two-pass build runs too.
        let n = 400_000usize;
        let n_groups = 5_003usize;
        let ids: Vec<u32> = (0..n).map(|i| ((i * 2_654_435_761) % n_groups) as u32).collect();
        let on: Vec<i64> = (0..n).map(|i| ((i * 7) % 13) as i64).collect();
        let tie: Vec<Option<i64>> = (0..n)
            .map(|i| (i % 11 != 0).then_some(((i * 31) % 5) as i64))
            .collect();
        let seq: Vec<i64> = (0..n).map(|i| ((i * 40_503) % 1_000_003) as i64).collect();
        let cut = n / 3;
        let cols = [
            col(vec![
                Arc::new(Int64Array::from(tie[..cut].to_vec())),
                Arc::new(Int64Array::from(tie[cut..].to_vec())),
            ]),
            col(vec![Arc::new(Int64Array::from(seq.clone()))]),
        ];
        let ranks = Ranks::new(&cols).unwrap();
        assert!(two_pass_shift(&ids, n_groups).is_some());
        let mut sorted_ids = ids.clone();
        sorted_ids.sort();
        for ids in [&ids, &sorted_ids] {
            let idx = Index::build(ids, &OnSource::Values(&on), n_groups, &ranks);
            let mut expect: Vec<(u32, i64, Option<i64>, i64, u32)> = (0..n)
                .map(|i| (ids[i], on[i], tie[i], seq[i], i as u32))
                .collect();
            expect.sort();
            let got: Vec<(u32, i64, u32)> = flatten(&idx, n_groups);
            let want: Vec<(u32, i64, u32)> = expect.iter().map(|e| (e.0, e.1, e.4)).collect();
            assert_eq!(got, want);
        }
    }
}
