//! The batched search of [`Pages::search`]: all keys of a request walk the tree together, level by
//! level, in two passes per level below the (decoded) root:
//!
//! - **enter**: every key's page of this level is entered (its header checked once), the node to
//!   compare first is guessed ([`guess`]) and prefetched;
//! - **step**: every key compares the guessed node and a neighbour, which for keys spread evenly
//!   decides the page (a branch: the child, whose first lines are prefetched for the next level; a
//!   leaf: found or absent, and the found value's lines are prefetched for the caller's checksum).
//!
//! So every cold line a key needs is asked for a whole pass before it is read, and the misses of
//! different keys overlap; between the passes each key keeps one small record ([`Walk`]).
//!
//! A step's fast path compares two words per node: it applies when the node's key has the probe's
//! length, at most 16 bytes (then a key's first 16 bytes, masked to its length, decide LMDB's order
//! and equality exactly, see [`quick`]) and the node's offset is in place. Anything else (no guess, a
//! guess off by more than one node, keys of other lengths or longer than 16 bytes, an offset out of
//! place) takes the checked search ([`Pages::at_most`], [`Pages::node`]), which also names any
//! damage. A page number outside the pages known to be inside the snapshot, this process's map and
//! the file takes the checked [`Pages::node_page`], which says which of the three it is.

use std::cmp::Ordering as Order;

use super::*;
use crate::online::lmdb_format::P_KINDS;

/// Requests of at most this many keys keep their records on the stack.
const STACK_KEYS: usize = 8;

/// Bytes of a found value prefetched for the caller (values of a few features fit; a larger one is
/// read in order by the checksum, which the hardware prefetcher follows).
const VALUE_PREFETCH: usize = 256;

/// One key's walk between the passes.
#[derive(Clone, Copy)]
struct Walk {
    /// The page to enter, or the page entered; 0 when the key is done (empty, or absent).
    pgno: u64,
    /// The heads of the separators around the page in its parent, when both are known (`bounded`):
    /// every key of the page is >= `lo` and < `hi`. At the edge of a level one of them is missing and
    /// is taken as far from the known one as its neighbour is ([`edge`]): only the guess uses them,
    /// and the keys at the end of a store (the newest, often) are spread like the others.
    lo: u128,
    hi: u128,
    bounded: bool,
    /// Once entered: the page's node count, its `upper`, and the guessed node (0: none).
    n: u32,
    upper: u32,
    g: u32,
}

impl Walk {
    const NONE: Walk = Walk {
        pgno: 0,
        lo: 0,
        hi: 0,
        bounded: false,
        n: 0,
        upper: 0,
        g: 0,
    };
}

/// Guesses taken, and how many found the answer (they steer [`GUESS_MIN`]).
#[derive(Default)]
struct Tally {
    tried: u64,
    hit: u64,
}

/// Prefetches node `i` of an entered page of `n` nodes (none when `i` is past the last): its header
/// and the 16 bytes of key after it.
#[inline(always)]
fn prefetch_at(page: &[u8], n: usize, i: usize) {
    if i < n {
        debug_assert!(HEADER + 2 * i + 2 <= page.len());
        // SAFETY: i < n, and HEADER + 2n = lower <= psize = page.len() (checked on entering the page).
        let at = unsafe { (page.as_ptr().add(HEADER + 2 * i) as *const u16).read_unaligned() };
        // The offset is not checked: a prefetch of any address is harmless (see `prefetch`).
        let p = page.as_ptr().wrapping_add(at as usize);
        prefetch(p);
        prefetch(p.wrapping_add(NODE + 15));
    }
}

/// The key of node `i` of `page` as two masked words, and the node's offset, when its offset is in
/// place and its key has the probe's length, at most 16 bytes: then the words compare with the
/// probe's exactly as LMDB orders the keys. `None`: the checked comparison must decide.
#[inline(always)]
fn quick(page: &[u8], upper: usize, i: usize, p: &Probe<'_>) -> Option<(usize, (u64, u64))> {
    let base = page.as_ptr();
    debug_assert!(HEADER + 2 * i + 2 <= page.len());
    // SAFETY: `i` < the page's node count n, and HEADER + 2n = lower <= psize = page.len() (checked on
    // entering the page), so these 2 bytes are inside the page.
    let at = unsafe { (base.add(HEADER + 2 * i) as *const u16).read_unaligned() } as usize;
    if at < upper || at + NODE + 16 > page.len() {
        return None;
    }
    // SAFETY: at + NODE + 16 <= page.len(): the node's header and the 16 bytes after it are inside
    // the page.
    let (ksize, h, l) = unsafe {
        (
            (base.add(at + 6) as *const u16).read_unaligned() as usize,
            u64::from_be((base.add(at + NODE) as *const u64).read_unaligned()),
            u64::from_be((base.add(at + NODE + 8) as *const u64).read_unaligned()),
        )
    };
    (ksize == p.key.len() && ksize <= 16).then_some((at, (h & p.mask_hi, l & p.mask_lo)))
}

#[inline(always)]
fn wide((h, l): (u64, u64)) -> u128 {
    (h as u128) << 64 | l as u128
}

/// A branch's answer from its guessed node `g` (1 ..= n - 1) and its neighbours: the offset of the
/// last node whose key is <= the probe's, and the heads of that key and the next (`hi`: the page's
/// own upper bound after the last node); `None` when these nodes cannot decide (see [`quick`]), or
/// the answer is node 0 or more than one node from the guess.
#[inline(always)]
fn branch_quick(
    page: &[u8],
    upper: usize,
    n: usize,
    g: usize,
    hi: u128,
    p: &Probe<'_>,
) -> Option<(usize, u128, u128)> {
    let key = (p.hi, p.lo);
    let (at, a) = quick(page, upper, g, p)?;
    if a > key {
        // The answer is before g: g - 1 when its key is <= the probe (node 0 has no key to say so).
        let (before, z) = quick(page, upper, g.checked_sub(1).filter(|&b| b > 0)?, p)?;
        return (z <= key).then(|| (before, wide(z), wide(a)));
    }
    if g + 1 == n {
        return Some((at, wide(a), hi));
    }
    let (next, b) = quick(page, upper, g + 1, p)?;
    if b > key {
        return Some((at, wide(a), wide(b)));
    }
    if g + 2 == n {
        return Some((next, wide(b), hi));
    }
    let (_, c) = quick(page, upper, g + 2, p)?;
    (c > key).then(|| (next, wide(b), wide(c)))
}

/// A branch's answer by a binary search of its nodes compared two words at a time (see [`quick`]),
/// for a key the guess missed by more than a node (a page whose separators are spread unevenly, or
/// shared by two views): the offset of the last node whose key is <= the probe's and the heads of
/// that key and the next. `None` when a node cannot be compared that way, or the answer is the
/// page's first or last node (whose bounds come from the level above: [`Pages::branch_checked`]).
#[inline(always)]
fn branch_search(page: &[u8], upper: usize, n: usize, p: &Probe<'_>) -> Option<(usize, u128, u128)> {
    let key = (p.hi, p.lo);
    let (mut base, mut len) = (0, n);
    while len > 1 {
        let half = len / 2;
        let (_, k) = quick(page, upper, base + half, p)?;
        base += half * (k <= key) as usize;
        len -= half;
    }
    if base == 0 || base + 1 >= n {
        return None;
    }
    let (at, a) = quick(page, upper, base, p)?;
    let (_, b) = quick(page, upper, base + 1, p)?;
    Some((at, wide(a), wide(b)))
}

/// Where a key that the decoded root sends to one of its children starts: the child's page and the
/// bounds of its keys (see [`Walk`]), decided once per snapshot with the root.
#[derive(Clone, Copy)]
pub(super) struct Start {
    pgno: u64,
    lo: u128,
    hi: u128,
    bounded: bool,
}

/// The [`Start`] of each child of a decoded root of key heads `heads` (node 0's unused) and child
/// pages `kids`.
pub(super) fn starts(heads: &[u128], kids: &[u64]) -> Vec<Start> {
    let n = kids.len();
    let head = |j: usize| (j > 0 && j < n).then(|| heads[j]);
    (0..n)
        .map(|i| {
            let (lo, hi) = edge(head(i), head(i + 1), head(i.wrapping_sub(1)), head(i + 2));
            Start {
                pgno: kids[i],
                lo: lo.unwrap_or(0),
                hi: hi.unwrap_or(0),
                bounded: lo.is_some() && hi.is_some(),
            }
        })
        .collect()
}

/// The bounds of a child page from the separators around it, `lo` and `hi`, when one is missing (the
/// child is the first or last of its level): taken as far from the known bound as that one is from
/// its own neighbour on the other side (`before` lo, `after` hi), when there is one.
#[inline(always)]
fn edge(
    lo: Option<u128>,
    hi: Option<u128>,
    before: Option<u128>,
    after: Option<u128>,
) -> (Option<u128>, Option<u128>) {
    match (lo, hi) {
        (Some(l), None) => (lo, before.map(|b| l.saturating_add(l.saturating_sub(b)))),
        (None, Some(h)) => (after.map(|a| h.saturating_sub(a.saturating_sub(h))), hi),
        _ => (lo, hi),
    }
}

/// A leaf's answer from its guessed node `g` (1 ..= n - 1) and one neighbour: `Some(Some(at))` the
/// probe's node, `Some(None)` absent (the probe falls between two neighbouring keys, or past the
/// last), `None` when these nodes cannot decide (see [`quick`]).
#[inline(always)]
fn leaf_quick(page: &[u8], upper: usize, n: usize, g: usize, p: &Probe<'_>) -> Option<Option<usize>> {
    let key = (p.hi, p.lo);
    let (at, a) = quick(page, upper, g, p)?;
    let (near, expect) = match a.cmp(&key) {
        Order::Equal => return Some(Some(at)),
        Order::Less if g + 1 == n => return Some(None),
        Order::Less => (g + 1, Order::Greater),
        Order::Greater => (g - 1, Order::Less),
    };
    let (at, b) = quick(page, upper, near, p)?;
    match b.cmp(&key) {
        Order::Equal => Some(Some(at)),
        o if o == expect => Some(None),
        _ => None,
    }
}

impl Pages {
    /// Looks up every probe in `tree`: `out[i]` is the data of probe i's key, None when absent (an
    /// empty key is never stored, so it is absent). `record`: search the main database, whose nodes
    /// name databases.
    pub fn search<'m>(
        &'m self,
        tree: &Tree,
        probes: &[Probe<'_>],
        out: &mut [Option<&'m [u8]>],
        record: bool,
    ) -> Found<()> {
        out.fill(None);
        if tree.depth == 0 {
            return Ok(());
        }
        if probes.len() <= STACK_KEYS {
            let mut walks = [Walk::NONE; STACK_KEYS];
            return self.walk(tree, probes, out, record, &mut walks[..probes.len()]);
        }
        let mut walks = vec![Walk::NONE; probes.len()];
        self.walk(tree, probes, out, record, &mut walks)
    }

    /// The passes (module docs), with one [`Walk`] per probe.
    #[inline(never)]
    fn walk<'m>(
        &'m self,
        tree: &Tree,
        probes: &[Probe<'_>],
        out: &mut [Option<&'m [u8]>],
        record: bool,
        walks: &mut [Walk],
    ) -> Found<()> {
        let last = tree.last;
        let limit = self.limit(last);
        let rate = self.guess_rate.load(Ordering::Relaxed);
        let count = self.searches.load(Ordering::Relaxed).wrapping_add(1);
        self.searches.store(count, Ordering::Relaxed);
        let guessing = rate >= GUESS_MIN || count % GUESS_RETRY == 0;
        let mut tally = Tally::default();
        let mut level = 0;
        let root = if !record && tree.depth > 1 {
            self.decoded_root(tree)?
        } else {
            None
        };
        match root.as_deref() {
            Some(r) => {
                self.root_all(r, probes, walks);
                level = 1;
            }
            None => {
                for (p, w) in probes.iter().zip(walks.iter_mut()) {
                    w.pgno = if p.key.is_empty() { 0 } else { tree.root };
                }
            }
        }
        while level + 1 < tree.depth {
            self.enter_all(probes, walks, limit, last, false, guessing)?;
            self.branch_all(probes, walks, guessing, &mut tally)?;
            level += 1;
        }
        self.enter_all(probes, walks, limit, last, true, guessing)?;
        self.leaf_all(probes, walks, out, last, record, &mut tally)?;
        // An average that forgets: 1/8 of this search's rate replaces 1/8 of the old one.
        if let Some(now) = (tally.hit * 256).checked_div(tally.tried) {
            self.guess_rate
                .store(rate - rate / 8 + now / 8, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Every key through the decoded root: its child, with the bounds the root gives it.
    #[inline(always)]
    fn root_all(&self, r: &Root, probes: &[Probe<'_>], walks: &mut [Walk]) {
        for (p, w) in probes.iter().zip(walks.iter_mut()) {
            if p.key.is_empty() {
                w.pgno = 0;
                continue;
            }
            let s = &r.starts[r.child_of(p)];
            *w = Walk {
                pgno: s.pgno,
                lo: s.lo,
                hi: s.hi,
                bounded: s.bounded,
                ..Walk::NONE
            };
            self.prefetch_page(w.pgno);
        }
    }

    /// The pages a search may enter without the checked path: `2..limit` are inside the snapshot,
    /// this process's map and the file as last known.
    #[inline(always)]
    fn limit(&self, last: u64) -> u64 {
        let mapped = (self.map.mapped() / self.psize) as u64;
        last.saturating_add(1)
            .min(mapped)
            .min(self.file_pages.load(Ordering::Relaxed))
    }

    /// [`Pages::node_page`], with the page number checked against `limit` and the header read
    /// without slice bounds; anything unusual takes `node_page` itself, which names the damage.
    #[inline(always)]
    fn enter(&self, pgno: u64, limit: u64, last: u64, leaf: bool) -> Found<(&[u8], usize, usize)> {
        if pgno >= 2 && pgno < limit {
            // SAFETY: 2 <= pgno < limit.
            let page = unsafe { self.entered(pgno) };
            let b = page.as_ptr();
            // SAFETY: a page is at least 512 bytes (`open`), its header 16.
            let (no, flags, lower, upper) = unsafe {
                (
                    (b.add(PAGE_NO) as *const u64).read_unaligned(),
                    (b.add(PAGE_FLAGS) as *const u16).read_unaligned(),
                    (b.add(PAGE_LOWER) as *const u16).read_unaligned() as usize,
                    (b.add(PAGE_UPPER) as *const u16).read_unaligned() as usize,
                )
            };
            let (want, least) = if leaf {
                (P_LEAF, HEADER)
            } else {
                (P_BRANCH, HEADER + 2)
            };
            if (no == pgno)
                & (flags & P_KINDS == want)
                & (lower >= least)
                & (lower <= upper)
                & (upper <= self.psize)
                & (lower % 2 == 0)
            {
                return Ok((page, (lower - HEADER) / 2, upper));
            }
        }
        self.enter_checked(pgno, last, leaf)
    }

    #[inline(never)]
    fn enter_checked(&self, pgno: u64, last: u64, leaf: bool) -> Found<(&[u8], usize, usize)> {
        self.node_page(pgno, last, leaf)
    }

    /// Page `pgno` as a slice, without checks.
    ///
    /// # Safety
    /// `pgno` must be inside the mapping and the file: in `2..limit` of this search, or accepted by
    /// [`Pages::node_page`] in it. (The caller's read transaction pins its snapshot's pages, see
    /// `span`.)
    #[inline(always)]
    unsafe fn entered(&self, pgno: u64) -> &[u8] {
        // SAFETY: the page is inside the mapping (the caller's contract), which lives as long as
        // `self`.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(pgno as usize * self.psize), self.psize) }
    }

    /// The enter pass of one level.
    #[inline(always)]
    fn enter_all(
        &self,
        probes: &[Probe<'_>],
        walks: &mut [Walk],
        limit: u64,
        last: u64,
        leaf: bool,
        guessing: bool,
    ) -> Found<()> {
        for (p, w) in probes.iter().zip(walks.iter_mut()) {
            if w.pgno == 0 {
                continue;
            }
            let (page, n, upper) = self.enter(w.pgno, limit, last, leaf)?;
            let g = if w.bounded && guessing {
                guess(w.lo, w.hi, p.head, n)
            } else {
                0
            };
            if g > 0 {
                prefetch_at(page, n, g);
                if !leaf {
                    prefetch_at(page, n, g + 1);
                }
            } else if n > 1 {
                prefetch_at(page, n, n / 2);
            }
            (w.n, w.upper, w.g) = (n as u32, upper as u32, g as u32);
        }
        Ok(())
    }

    /// The step pass of a branch level: every key to its child.
    #[inline(always)]
    fn branch_all(
        &self,
        probes: &[Probe<'_>],
        walks: &mut [Walk],
        guessing: bool,
        tally: &mut Tally,
    ) -> Found<()> {
        for (p, w) in probes.iter().zip(walks.iter_mut()) {
            if w.pgno == 0 {
                continue;
            }
            // SAFETY: the enter pass of this level accepted `w.pgno` (`enter`).
            let page = unsafe { self.entered(w.pgno) };
            let (n, upper, g) = (w.n as usize, w.upper as usize, w.g as usize);
            tally.tried += (g > 0) as u64;
            let confirmed = (g > 0)
                .then(|| branch_quick(page, upper, n, g, w.hi, p))
                .flatten();
            match confirmed {
                Some((at, lo, hi)) => {
                    tally.hit += 1;
                    let (size, flags, _) = node_header(page, at);
                    (w.pgno, w.lo, w.hi) = (child(size, flags), lo, hi);
                }
                None => match branch_search(page, upper, n, p) {
                    Some((at, lo, hi)) => {
                        let (size, flags, _) = node_header(page, at);
                        (w.pgno, w.lo, w.hi, w.bounded) = (child(size, flags), lo, hi, true);
                    }
                    None => tally.hit += self.branch_checked(page, w, p, guessing)? as u64,
                },
            }
            self.prefetch_page(w.pgno);
        }
        Ok(())
    }

    /// A branch step the checked way: `w` moves to the child, with its bounds when `guessing`;
    /// whether the guess found the child.
    #[inline(never)]
    fn branch_checked(&self, page: &[u8], w: &mut Walk, p: &Probe<'_>, guessing: bool) -> Found<bool> {
        let (pgno, n, upper) = (w.pgno, w.n as usize, w.upper as usize);
        let (base, hit) = self.last_at_most(page, pgno, upper, n, w.g as usize, p)?;
        let (node, key) = self.node(page, pgno, upper, base)?;
        let (size, flags, _) = node_header(page, node);
        // The child's bounds: this node's key and the next one's (node 0 has no key: the page's own
        // lower bound holds; past the last node, its upper bound).
        if guessing {
            // Node j's key head (node 0 has none).
            let head = |j: usize| -> Found<Option<u128>> {
                if j == 0 || j >= n {
                    return Ok(None);
                }
                let (at, key) = self.node(page, pgno, upper, j)?;
                Ok(Some(head_at(page, at + NODE, key.len())))
            };
            let lo = if base > 0 {
                Some(head_at(page, node + NODE, key.len()))
            } else {
                w.bounded.then_some(w.lo)
            };
            let hi = match head(base + 1)? {
                None if w.bounded => Some(w.hi),
                h => h,
            };
            let (lo, hi) = match (lo, hi) {
                (Some(_), Some(_)) => (lo, hi),
                (None, _) => edge(lo, hi, None, head(base + 2)?),
                (_, None) => edge(lo, hi, head(base.wrapping_sub(1))?, None),
            };
            w.bounded = lo.is_some() && hi.is_some();
            (w.lo, w.hi) = (lo.unwrap_or(0), hi.unwrap_or(0));
        }
        w.pgno = child(size, flags);
        Ok(hit)
    }

    /// The step pass of the leaves: every key's value, or absent.
    #[inline(always)]
    fn leaf_all<'m>(
        &'m self,
        probes: &[Probe<'_>],
        walks: &[Walk],
        out: &mut [Option<&'m [u8]>],
        last: u64,
        record: bool,
        tally: &mut Tally,
    ) -> Found<()> {
        for ((p, w), o) in probes.iter().zip(walks).zip(out.iter_mut()) {
            if w.pgno == 0 || w.n == 0 {
                continue;
            }
            // SAFETY: the enter pass of this level accepted `w.pgno` (`enter`).
            let page = unsafe { self.entered(w.pgno) };
            let (n, upper, g) = (w.n as usize, w.upper as usize, w.g as usize);
            tally.tried += (g > 0) as u64;
            let found = match (g > 0).then(|| leaf_quick(page, upper, n, g, p)).flatten() {
                Some(f) => {
                    tally.hit += 1;
                    f
                }
                None => self.leaf_checked(page, w, p)?,
            };
            let Some(at) = found else { continue };
            let (size, flags, ksize) = node_header(page, at);
            let (start, size) = (at + NODE + ksize, size as usize);
            let v = if flags == 0 && !record && start + size <= page.len() {
                &page[start..start + size]
            } else {
                self.data(page, w.pgno, at, last, record)?
            };
            // Every line the value's first bytes touch (a value starts anywhere in a line).
            let start = v.as_ptr() as usize;
            let mut line = start & !63;
            while line < start + v.len().min(VALUE_PREFETCH) {
                prefetch(line as *const u8);
                line += 64;
            }
            *o = Some(v);
        }
        Ok(())
    }

    /// A leaf searched the checked way: the offset of the probe's node, None when absent.
    #[inline(never)]
    fn leaf_checked(&self, page: &[u8], w: &Walk, p: &Probe<'_>) -> Found<Option<usize>> {
        let (pgno, n, upper) = (w.pgno, w.n as usize, w.upper as usize);
        let (base, _) = self.last_at_most(page, pgno, upper, n, w.g as usize, p)?;
        let (at, key) = self.node(page, pgno, upper, base)?;
        Ok((key == p.key).then_some(at))
    }

    /// The last node of a page of `n` nodes whose key is <= the probe's (node 0 when none is), the
    /// checked way, starting from the guessed node `g` (0: none); and whether the guess and a
    /// neighbour found it. A branch's node 0 is never compared.
    #[inline(always)]
    fn last_at_most(
        &self,
        page: &[u8],
        pgno: u64,
        upper: usize,
        n: usize,
        g: usize,
        p: &Probe<'_>,
    ) -> Found<(usize, bool)> {
        // The answer lies in `base .. base + len`, and node `base` is <= the key unless `base` is 0.
        let (mut base, mut len) = (0, n);
        let mut hit = false;
        if g > 0 && n > 1 {
            if self.at_most(page, pgno, upper, g, p)? == 1 {
                if g + 1 == n || self.at_most(page, pgno, upper, g + 1, p)? == 0 {
                    (base, len) = (g, 1);
                } else {
                    (base, len) = (g + 1, n - g - 1);
                }
            } else if g == 1 || self.at_most(page, pgno, upper, g - 1, p)? == 1 {
                (base, len) = (g - 1, 1);
            } else {
                (base, len) = (0, g - 1);
            }
            hit = len == 1;
        }
        while len > 1 {
            let half = len / 2;
            let le = self.at_most(page, pgno, upper, base + half, p)?;
            base += half & le.wrapping_neg();
            len -= half;
        }
        Ok((base, hit))
    }
}
