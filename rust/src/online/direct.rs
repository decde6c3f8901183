//! Direct lookups: a read-only, batched B-tree search over LMDB's pages, used by the serving path
//! inside an ordinary heed read transaction instead of one `mdb_get` per key.
//!
//! Why: LMDB's lookup was ~60% of a 100-key request (one walk per key, a `memcmp` through a function
//! pointer per probe, and each leaf page a cache miss waited for alone). Here all lookups of a request
//! walk the tree together, level by level, two passes over the batch per level (`direct/batch.rs`):
//! what a key reads next is prefetched a pass before it is read, so the cache misses of different
//! keys overlap instead of adding up; keys are compared as 16-byte big-endian integers (exact for
//! LMDB's byte order, with a full comparison only when those bytes tie). Below the root, a page's
//! first probe is guessed from the separators around it in its parent ([`guess`]), and the root
//! itself is searched in a decoded copy kept per snapshot (`Root`).
//!
//! Soundness rests on four rules:
//! - **The snapshot is pinned by the transaction.** The caller holds a read transaction (`RoTxn`),
//!   whose reader slot keeps every page of its snapshot from being reused; the search reads only pages
//!   reachable from that snapshot's roots.
//! - **The roots are the snapshot's.** The meta page of transaction `t` is page `t & 1`. A writer
//!   committing `t + 2` rewrites that page while this may read it, with no ordering among the bytes it
//!   writes, so a txnid read before and after the copy does not prove the copy whole. What does: the
//!   other meta page. `t + 2` is written only after `t + 1`'s meta page is complete, so if, after the
//!   copy, the other page still holds a txnid below `t + 1`, no byte of `t + 2` can have been seen.
//!   Any doubt (either txnid not as expected) falls back to LMDB's own lookup for the request. The
//!   roots found are cached per transaction id: a request whose snapshot has not changed does no meta
//!   work at all.
//! - **Trust nothing on disk.** Pages are read through this module's own read-only map of the data
//!   file (`MAP_SHARED`, so it sees what LMDB's writers write). LMDB's own map is not reachable:
//!   heed's `Env::info().map_addr` is the meta page's `mm_address`, null unless `MDB_FIXEDMAP`. Every
//!   page number is checked against the snapshot's last page and the file's size before it is touched
//!   (a page past the end of the file would be SIGBUS), every offset, size and flag read from a page is
//!   checked before it is used, and damage is a `Storage` error naming the page, never a crash and never
//!   an answer. Values keep their own checksum (`value.rs`), checked by the caller.
//! - **Unknown means LMDB.** A database with flags this search does not implement (a custom order,
//!   duplicates, integer keys), a page past this process's map (another process grew it), a txnid that
//!   moved: [`Miss::Fallback`], and the caller asks `mdb_get`.
//!
//! The page format is `lmdb_format.rs`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, Ordering};

use heed::{Env, RoTxn};

use crate::error::Error;
use crate::online::lmdb_format::{
    child, damaged, kind, node_header, u16_at, u32_at, u64_at, DbRecord, FileMap, DB_RECORD, F_BIGDATA,
    F_SUBDATA, HEADER, MAGIC, MAX_DEPTH, META_LAST_PAGE, META_MAGIC, META_MAIN_DB, META_TXNID, NODE,
    PAGE_FLAGS, PAGE_LOWER, PAGE_NO, PAGE_OVERFLOW_COUNT, PAGE_UPPER, P_BRANCH, P_INVALID, P_LEAF,
    P_OVERFLOW,
};
use crate::pages::prefetch;

/// Why the direct search did not answer.
#[derive(Debug)]
pub enum Miss {
    /// A case this search leaves to LMDB (see the module docs): ask `mdb_get` instead.
    Fallback,
    /// The pages are damaged; LMDB would read past them.
    Damaged(Error),
}

type Found<T> = std::result::Result<T, Miss>;

/// A read-only map of one environment's data file, and the roots found per snapshot.
pub struct Pages {
    /// As many bytes as the environment's map when mapped, more than the file holds: `span` checks
    /// every page against the file's size before reading it.
    map: FileMap,
    psize: usize,
    /// For the file's size, re-read when a page past the known size is asked for.
    file: File,
    path: PathBuf,
    /// Pages the file is known to hold (files of LMDB never shrink, so this only grows).
    file_pages: AtomicU64,
    /// The named database searched (the store's data database).
    name: Vec<u8>,
    cache: RootCache,
    /// The data database's root page of the last snapshot searched, decoded ([`Root`]).
    root: std::sync::RwLock<Option<std::sync::Arc<Root>>>,
    /// How often the first-probe guess ([`guess`]) found the answer, in 1/256, averaged over recent
    /// searches; and a count of searches (both updated without ordering: they only steer a hint).
    guess_rate: AtomicU64,
    searches: AtomicU64,
}

/// The guess is taken while it finds the answer at least this often (in 1/256): for keys spread
/// unevenly (decimal digits as text, say) a missed guess costs two probes more than a binary search,
/// and such keys measured ~15% slower with the guess always taken. While it is off, every
/// [`GUESS_RETRY`]-th search takes it anyway, so the rate follows the keys asked for.
const GUESS_MIN: u64 = 160;
const GUESS_RETRY: u64 = 16;

/// A root branch page decoded into sorted arrays: every key of the request passes the root, and a
/// binary search there took ~7 steps in LMDB's layout (an offset, a node, its key size and key per
/// step, each checked); here a step is a comparison of two integers in an array of a few KB that stays
/// in the cache. Only a root whose keys all fit in 16 bytes is decoded (then a key's head and length
/// decide LMDB's order exactly, see [`Root::at_most`]); another root is searched in place.
///
/// Valid for ONE snapshot: it is kept with the transaction id it was read in and used only by
/// transactions of that id (whose reader slots keep the page from being rewritten). Not by page
/// number alone: once no reader holds a snapshot, LMDB frees its pages and a later commit may write a
/// different page under the same number, so a cache keyed by page number would serve another tree's
/// separators. A new snapshot decodes its root once (one page: ~100-200 nodes, about a microsecond,
/// the first request after a commit pays it); deeper levels are not decoded, so that cost stays one
/// page whatever the store's size (their first probe is guessed from the bounds the level above gives,
/// see [`guess`]).
struct Root {
    txnid: u64,
    pgno: u64,
    /// Node i's key head (node 0: none, never compared), its key length and its child page.
    heads: Vec<u128>,
    lens: Vec<u8>,
    kids: Vec<u64>,
    /// The longest key of nodes 1.. (a probe at least this long compares by its head alone).
    longest: usize,
    /// Node i's child page with the bounds its separators give it, as the search starts from it.
    starts: Vec<batch::Start>,
}

impl Root {
    /// Node `i`'s key <= the probe: heads that differ decide; equal heads (the node's key at most 16
    /// bytes, so the probe starts with it followed by zeros) leave the node's key a prefix of the
    /// probe's when it is not longer.
    #[inline(always)]
    fn at_most(&self, i: usize, p: &Probe<'_>) -> bool {
        let h = self.heads[i];
        (h < p.head) | ((h == p.head) & (self.lens[i] as usize <= p.key.len()))
    }

    /// The last node whose key is <= the probe's (node 0 when none is).
    #[inline(always)]
    fn child_of(&self, p: &Probe<'_>) -> usize {
        let (mut base, mut len) = (0, self.kids.len());
        if p.key.len() >= self.longest {
            // No node's key is longer than the probe's, so equal heads make the node's key the
            // probe's or a prefix of it: <= either way, and the step is one comparison of two
            // integers, without a branch (which way a step goes is a coin toss).
            let heads = &self.heads[..len];
            while len > 1 {
                let half = len / 2;
                let i = base + half;
                // SAFETY: base + len <= heads.len() throughout (base grows by at most half as len
                // shrinks by half), and half < len, so i < heads.len().
                let h = unsafe { *heads.get_unchecked(i) };
                base = at_most_then(h, p.head, i, base);
                len -= half;
            }
            return base;
        }
        while len > 1 {
            let half = len / 2;
            base += half * self.at_most(base + half, p) as usize;
            len -= half;
        }
        base
    }
}

/// `if h <= probe { i } else { base }`, without a branch. Which way a search step goes is a coin
/// toss, and a mispredicted branch costs more than the step; the compiler turns a plain select in a
/// search loop into a branch (its heuristic for a select on the loop's critical path), so on x86-64
/// it is a conditional move written out.
#[inline(always)]
fn at_most_then(h: u128, probe: u128, i: usize, base: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let mut base = base;
        // SAFETY: register arithmetic only (a 128-bit comparison by subtraction with borrow, and a
        // conditional move between two registers): no memory, no stack, no flags kept.
        unsafe {
            core::arch::asm!(
                "cmp {plo}, {hlo}",
                "sbb {phi}, {hhi}",
                "cmovae {base}, {i}",
                plo = in(reg) probe as u64,
                hlo = in(reg) h as u64,
                phi = inout(reg) (probe >> 64) as u64 => _,
                hhi = in(reg) (h >> 64) as u64,
                base = inout(reg) base,
                i = in(reg) i,
                options(pure, nomem, nostack),
            );
        }
        base
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        if h <= probe {
            i
        } else {
            base
        }
    }
}

/// The roots of one snapshot: its data database's root page and depth, and its last page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tree {
    pub txnid: u64,
    root: u64,
    depth: u16,
    last: u64,
}

/// One key to look up, with its first 16 bytes as a big-endian integer (zero-padded), also as two
/// words with the masks that cut a node's key of the same length to its own bytes.
#[derive(Clone, Copy)]
pub struct Probe<'k> {
    key: &'k [u8],
    head: u128,
    hi: u64,
    lo: u64,
    mask_hi: u64,
    mask_lo: u64,
}

impl<'k> Probe<'k> {
    /// The empty key (never stored: always absent), to fill buffers with.
    pub const EMPTY: Probe<'static> = Probe {
        key: &[],
        head: 0,
        hi: 0,
        lo: 0,
        mask_hi: 0,
        mask_lo: 0,
    };

    #[inline]
    pub fn new(key: &'k [u8]) -> Probe<'k> {
        // Keys of 8 bytes or more (every full key of the store: a 4-byte view prefix and the encoded
        // key) are read as two overlapping words, not copied byte by byte into a buffer (a call to
        // `memcpy` per key, a visible part of a request's setup).
        let n = key.len();
        let (hi, lo) = if n >= 16 {
            (be64(key, 0), be64(key, 8))
        } else if n > 8 {
            // The key's last 8 bytes, moved up past the bytes of the first word they repeat.
            (be64(key, 0), be64(key, n - 8) << (8 * (16 - n)))
        } else if n == 8 {
            (be64(key, 0), 0)
        } else {
            let mut a = [0u8; 8];
            a[..n].copy_from_slice(key);
            (u64::from_be_bytes(a), 0)
        };
        let cut = |bytes: usize| match bytes {
            0 => 0,
            8.. => u64::MAX,
            b => !(u64::MAX >> (8 * b)),
        };
        Probe {
            key,
            head: (hi as u128) << 64 | lo as u128,
            hi,
            lo,
            mask_hi: cut(n),
            mask_lo: cut(n.saturating_sub(8)),
        }
    }

    #[inline]
    pub fn key(&self) -> &'k [u8] {
        self.key
    }
}

/// The 8 bytes of `b` at `at` as a big-endian integer.
#[inline(always)]
fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// The key of a node as a [`Probe`] head: 16 bytes loaded from the page, the ones past the key masked.
#[inline(always)]
fn head_at(page: &[u8], start: usize, ksize: usize) -> u128 {
    let v = if start + 16 <= page.len() {
        let mut a = [0u8; 16];
        a.copy_from_slice(&page[start..start + 16]);
        u128::from_be_bytes(a)
    } else {
        let mut a = [0u8; 16];
        let n = (page.len() - start).min(16);
        a[..n].copy_from_slice(&page[start..start + n]);
        u128::from_be_bytes(a)
    };
    if ksize >= 16 {
        v
    } else {
        v & !(u128::MAX >> (8 * ksize))
    }
}

/// Whether a node's key (`key`, head `head`) is <= the probe in LMDB's default order, as 0 or 1. Heads
/// that differ decide (and the comparison compiles to no branch: which way a search step goes is a coin
/// toss, and a mispredicted branch per step cost more than the step); equal heads decide alone when
/// both keys fit in them and have one length, else the bytes do (rare: equal keys, or long ones).
#[inline(always)]
fn at_most(key: &[u8], head: u128, p: &Probe<'_>) -> usize {
    let lt = (head < p.head) as usize;
    let eq = head == p.head && ((key.len() == p.key.len() && key.len() <= 16) || key <= p.key);
    lt | eq as usize
}

/// The cached roots of the last snapshot looked up, as a sequence lock: readers never wait.
struct RootCache {
    seq: AtomicU64,
    txnid: AtomicU64,
    root: AtomicU64,
    depth: AtomicU64,
    last: AtomicU64,
}

impl RootCache {
    fn get(&self, txnid: u64) -> Option<Tree> {
        let s = self.seq.load(Ordering::Acquire);
        if s & 1 == 1 {
            return None;
        }
        let t = Tree {
            txnid: self.txnid.load(Ordering::Relaxed),
            root: self.root.load(Ordering::Relaxed),
            depth: self.depth.load(Ordering::Relaxed) as u16,
            last: self.last.load(Ordering::Relaxed),
        };
        fence(Ordering::Acquire);
        (self.seq.load(Ordering::Relaxed) == s && t.txnid == txnid).then_some(t)
    }

    fn put(&self, t: Tree) {
        let s = self.seq.load(Ordering::Relaxed);
        // Another thread is storing: let it; the next request caches again if needed.
        if s & 1 == 1
            || self
                .seq
                .compare_exchange(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        fence(Ordering::Release);
        self.txnid.store(t.txnid, Ordering::Relaxed);
        self.root.store(t.root, Ordering::Relaxed);
        self.depth.store(t.depth as u64, Ordering::Relaxed);
        self.last.store(t.last, Ordering::Relaxed);
        self.seq.store(s + 2, Ordering::Release);
    }
}

/// The node of a page of `n` nodes (keys between the heads `lo` and `hi`) to compare a key of head
/// `head` with first: where the key would sit if the page's keys were spread evenly between its
/// bounds. Why: a search step on a page not in the cache is a cache miss waited for alone (each step
/// reads an offset, then a node the offset names), ~7 of them for a leaf of ~100 nodes; the keys of
/// a view are integers or hashes mostly, spread evenly enough that the guess is right or next to the
/// answer, so a leaf costs ~2 misses. It is only a hint: the search compares the guessed node and
/// its neighbour, and a wrong guess narrows the range a binary search then finishes (at most two
/// steps more than without it). Node 0 is never guessed (a branch's node 0 has no key to compare).
#[inline(always)]
fn guess(lo: u128, hi: u128, head: u128, n: usize) -> usize {
    if n < 4 || hi <= lo {
        return 0;
    }
    let at = if head <= lo {
        0.0
    } else if (hi - lo) >> 63 == 0 {
        // Both differences below 2^63 (keys that differ only in their last 8 of 16 head bytes, the
        // usual case within a page): each converts in one instruction, rounded, which a hint allows.
        let span = (hi - lo) as u64;
        ((head - lo) as u64).min(span) as i64 as f64 / span as i64 as f64
    } else {
        // Both differences cut to their top 53 bits, as i64 (a u128 to f64 conversion is a call, an
        // u64 one a sequence of six instructions; below 2^53 the signed conversion is one, and exact).
        let span = hi - lo;
        let cut = (128 - span.leading_zeros()).saturating_sub(53);
        ((head - lo).min(span) >> cut) as i64 as f64 / (span >> cut) as i64 as f64
    };
    // SAFETY: `at` is in [0, 1] (a non-negative difference at most `span`, over `span` > 0: finite),
    // and n < 2^16 (nodes of one page), so the product truncates to an integer that fits in u32.
    let g = unsafe { (at * n as u32 as f64).to_int_unchecked::<u32>() } as usize;
    g.clamp(1, n - 1)
}

impl Pages {
    /// Maps the data file of `env` (whose store lives at `path`) for direct searches of the named
    /// database `name`. `None` when the file cannot be mapped: LMDB's own lookup serves then.
    pub fn open(env: &Env, path: &Path, name: &[u8]) -> Option<Pages> {
        let psize = env.unnamed_database_stat().page_size as usize;
        if !(512..=65536).contains(&psize) || !psize.is_power_of_two() {
            return None;
        }
        let file = env.try_clone_inner_file().ok()?;
        let len = env.info().map_size;
        let file_pages = file.metadata().ok()?.len() / psize as u64;
        if len < 2 * psize || file_pages < 2 {
            return None;
        }
        // Bytes past the end of the file are mapped but never touched (`page` checks the file's size).
        let map = FileMap::new(&file, len).ok()?;
        Some(Pages {
            map,
            psize,
            file,
            path: path.to_path_buf(),
            file_pages: AtomicU64::new(file_pages),
            name: name.to_vec(),
            cache: RootCache {
                seq: AtomicU64::new(0),
                txnid: AtomicU64::new(u64::MAX),
                root: AtomicU64::new(0),
                depth: AtomicU64::new(0),
                last: AtomicU64::new(0),
            },
            root: std::sync::RwLock::new(None),
            guess_rate: AtomicU64::new(256),
            searches: AtomicU64::new(0),
        })
    }

    #[cold]
    fn damaged(&self, what: String) -> Miss {
        Miss::Damaged(damaged(&self.path, &what))
    }

    /// Whether the file holds page `pgno`, re-reading its size when the known size is too small.
    #[cold]
    fn grown_to(&self, pgno: u64) -> bool {
        let Ok(m) = self.file.metadata() else {
            return false;
        };
        let pages = m.len() / self.psize as u64;
        self.file_pages.fetch_max(pages, Ordering::Relaxed);
        pgno < pages
    }

    /// Pages `first .. first + count` of the snapshot whose last page is `last`, as one slice.
    #[inline(always)]
    fn span(&self, first: u64, count: u64, last: u64) -> Found<&[u8]> {
        let end = first.saturating_add(count);
        if first < 2 || count == 0 || end - 1 > last {
            return Err(self.damaged(format!(
                "page {first} (+{count}) is outside the snapshot's pages 2..={last}"
            )));
        }
        if end.saturating_mul(self.psize as u64) > self.map.mapped() as u64 {
            return Err(Miss::Fallback); // past this process's map: LMDB's map is larger
        }
        if end > self.file_pages.load(Ordering::Relaxed) && !self.grown_to(end - 1) {
            return Err(self.damaged(format!("page {} is past the end of the file", end - 1)));
        }
        let at = first as usize * self.psize;
        let n = count as usize * self.psize;
        // SAFETY: `at + n <= len` (checked above), so the range is inside the mapping, which lives as
        // long as `self`; the file holds every byte of it (so no access can SIGBUS, LMDB never
        // truncates its data file); and the caller's read transaction keeps these pages of its snapshot
        // from being rewritten while the slice is used.
        Ok(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(at), n) })
    }

    /// A branch or leaf page, its header checked: `(page, node count, upper)`.
    #[inline(always)]
    fn node_page(&self, pgno: u64, last: u64, leaf: bool) -> Found<(&[u8], usize, usize)> {
        let page = self.span(pgno, 1, last)?;
        let want = if leaf { P_LEAF } else { P_BRANCH };
        let (lower, upper) = (
            u16_at(page, PAGE_LOWER) as usize,
            u16_at(page, PAGE_UPPER) as usize,
        );
        // A branch needs a node (the search starts from its first); a leaf may be empty.
        let least = if leaf { HEADER } else { HEADER + 2 };
        if u64_at(page, PAGE_NO) != pgno
            || kind(page) != want
            || lower < least
            || lower > upper
            || upper > self.psize
            || (lower - HEADER) % 2 != 0
        {
            return Err(self.damaged(format!(
                "page {pgno}: header (flags {:#x}, lower {lower}, upper {upper}) where a {} page belongs",
                u16_at(page, PAGE_FLAGS),
                if leaf { "leaf" } else { "branch" }
            )));
        }
        Ok((page, (lower - HEADER) / 2, upper))
    }

    /// Node `i` (< the page's node count) of `page`: its offset and key, checked against the page.
    #[inline(always)]
    fn node<'p>(&self, page: &'p [u8], pgno: u64, upper: usize, i: usize) -> Found<(usize, &'p [u8])> {
        let at = u16_at(page, HEADER + 2 * i) as usize;
        if at < upper || at + NODE > page.len() {
            return Err(self.damaged(format!("page {pgno}: node {i} at offset {at}")));
        }
        let ksize = u16_at(page, at + 6) as usize;
        let end = at + NODE + ksize;
        if end > page.len() {
            return Err(self.damaged(format!("page {pgno}: node {i}'s key ends past the page")));
        }
        Ok((at, &page[at + NODE..end]))
    }

    /// Whether node `i` (< the page's node count `n`, checked on entering it) of `page` has a key <=
    /// the probe's, as 0 or 1: one search step. The usual case, a key of the probe's length of at most
    /// 16 bytes, is three loads and a comparison without a branch (a search step is a chain of
    /// dependent loads, so every instruction on it counts); others take [`at_most`].
    #[inline(always)]
    fn at_most(&self, page: &[u8], pgno: u64, upper: usize, i: usize, p: &Probe<'_>) -> Found<usize> {
        let base = page.as_ptr();
        debug_assert!(HEADER + 2 * i + 2 <= page.len());
        // SAFETY: `i` < the page's node count n, and HEADER + 2n = lower <= psize = page.len()
        // (`node_page` checked both), so these 2 bytes are inside the page.
        let at = unsafe { (base.add(HEADER + 2 * i) as *const u16).read_unaligned() } as usize;
        if at >= upper && at + NODE + 16 <= page.len() && p.key.len() <= 16 {
            // SAFETY: at + NODE + 16 <= page.len(): the node's header and the 16 bytes after it are
            // inside the page.
            let (ksize, h, l) = unsafe {
                (
                    (base.add(at + 6) as *const u16).read_unaligned() as usize,
                    u64::from_be((base.add(at + NODE) as *const u64).read_unaligned()),
                    u64::from_be((base.add(at + NODE + 8) as *const u64).read_unaligned()),
                )
            };
            if ksize == p.key.len() {
                let (h, l) = (h & p.mask_hi, l & p.mask_lo);
                return Ok(((h < p.hi) | ((h == p.hi) & (l <= p.lo))) as usize);
            }
        }
        let (at, key) = self.node(page, pgno, upper, i)?;
        Ok(at_most(key, head_at(page, at + NODE, key.len()), p))
    }

    /// The data of the leaf node at `at`: inline or on overflow pages. `record`: the node must name a
    /// database (main database) instead of holding a value. A value node whose flags or size do not
    /// fit is handed back as an EMPTY value rather than an error: no value layout accepts an empty
    /// value (`value.rs`), so the caller reports it as a damaged value of its view, the same report as
    /// a value failing its checksum (and it never reads past the page, which LMDB's `get` would).
    #[inline(always)]
    fn data<'p>(&'p self, page: &'p [u8], pgno: u64, at: usize, last: u64, record: bool) -> Found<&'p [u8]> {
        match self.data_checked(page, pgno, at, last, record) {
            Err(Miss::Damaged(_)) if !record => Ok(&[]),
            r => r,
        }
    }

    #[inline(always)]
    fn data_checked<'p>(
        &'p self,
        page: &'p [u8],
        pgno: u64,
        at: usize,
        last: u64,
        record: bool,
    ) -> Found<&'p [u8]> {
        let (size, flags, ksize) = node_header(page, at);
        let start = at + NODE + ksize;
        let size = size as usize;
        let inline = |ok: bool| -> Found<&'p [u8]> {
            if !ok || start + size > page.len() {
                return Err(self.damaged(format!(
                    "page {pgno}: a node of {size} bytes with flags {flags:#x}"
                )));
            }
            Ok(&page[start..start + size])
        };
        match flags {
            F_SUBDATA if record => inline(size == DB_RECORD),
            0 if !record => inline(true),
            F_BIGDATA if !record => {
                if start + 8 > page.len() {
                    return Err(self.damaged(format!("page {pgno}: an overflow node past the page")));
                }
                let first = u64_at(page, start);
                let head = self.span(first, 1, last)?;
                let count = u32_at(head, PAGE_OVERFLOW_COUNT) as u64;
                if u64_at(head, PAGE_NO) != first
                    || kind(head) != P_OVERFLOW
                    || count == 0
                    || size > (count as usize) * self.psize - HEADER
                {
                    return Err(
                        self.damaged(format!("overflow page {first}: {count} pages for {size} bytes"))
                    );
                }
                let run = self.span(first, count, last)?;
                Ok(&run[HEADER..HEADER + size])
            }
            _ => inline(false),
        }
    }

    /// A 64-bit word of meta page `page` at `off` bytes into its record, read atomically: writers
    /// rewrite meta pages while readers read them.
    #[inline]
    fn meta_word(&self, page: usize, off: usize, order: Ordering) -> u64 {
        let at = page * self.psize + HEADER + off;
        // SAFETY: meta pages 0 and 1 are inside the mapping and the file (`open` checked both); `at` is
        // a multiple of 8 (the map is page-aligned, the record offsets are multiples of 8), as an atomic
        // u64 requires; the mapping lives as long as `self`. The bytes may change under the load (a
        // writer's commit), which is why it is atomic.
        unsafe { (*(self.map.as_ptr().add(at) as *const AtomicU64)).load(order) }
    }

    /// The roots of the snapshot `txn` reads, cached per transaction id.
    pub fn tree(&self, txn: &RoTxn) -> Found<Tree> {
        let txnid = txn.id() as u64;
        if let Some(t) = self.cache.get(txnid) {
            return Ok(t);
        }
        let t = self.read_meta(txnid)?;
        self.cache.put(t);
        Ok(t)
    }

    fn read_meta(&self, txnid: u64) -> Found<Tree> {
        let mine = (txnid & 1) as usize;
        if self.meta_word(mine, META_TXNID, Ordering::Acquire) != txnid {
            return Err(Miss::Fallback);
        }
        let mut rec = [0u8; DB_RECORD];
        for (k, chunk) in rec.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(
                &self
                    .meta_word(mine, META_MAIN_DB + 8 * k, Ordering::Relaxed)
                    .to_ne_bytes(),
            );
        }
        let last = self.meta_word(mine, META_LAST_PAGE, Ordering::Relaxed);
        let magic = self.meta_word(mine, META_MAGIC, Ordering::Relaxed).to_ne_bytes();
        // Orders the loads above before the two below (see the module docs for why these two decide).
        fence(Ordering::Acquire);
        let other = self.meta_word(1 - mine, META_TXNID, Ordering::Relaxed);
        if other >= txnid || self.meta_word(mine, META_TXNID, Ordering::Relaxed) != txnid {
            return Err(Miss::Fallback);
        }
        if u32_at(&magic, 0) != MAGIC {
            return Err(self.damaged("meta page magic".into()));
        }
        let main = DbRecord::parse(&rec);
        let main_tree = self.tree_of(txnid, main, last)?;
        let mut out = [None];
        self.search(&main_tree, &[Probe::new(&self.name)], &mut out, true)?;
        // Not found: a snapshot from before the database was created; LMDB says what that means.
        let rec = out[0].ok_or(Miss::Fallback)?;
        self.tree_of(txnid, DbRecord::parse(rec), last)
    }

    /// The tree of database record `db`, when this search implements its flags (none: byte keys in
    /// LMDB's default order, no duplicates).
    fn tree_of(&self, txnid: u64, db: DbRecord, last: u64) -> Found<Tree> {
        if db.flags != 0 {
            return Err(Miss::Fallback);
        }
        let depth = if db.root == P_INVALID { 0 } else { db.depth };
        if db.root != P_INVALID && (depth == 0 || depth > MAX_DEPTH) {
            return Err(self.damaged(format!("a database of depth {depth}")));
        }
        Ok(Tree {
            txnid,
            root: db.root,
            depth,
            last,
        })
    }

    /// Prefetches page `pgno`'s header and first node offsets, for the next level's pass (the address
    /// is only a hint: a page number past the map is checked when the page is entered).
    #[inline(always)]
    fn prefetch_page(&self, pgno: u64) {
        let first = self
            .map
            .as_ptr()
            .wrapping_add((pgno as usize).wrapping_mul(self.psize));
        prefetch(first);
        prefetch(first.wrapping_add(64));
    }

    /// The decoded root of `tree` (a branch page), from the cache when it is this snapshot's; `None`
    /// when its keys do not all fit in 16 bytes (it is searched in place then).
    fn decoded_root(&self, tree: &Tree) -> Found<Option<std::sync::Arc<Root>>> {
        let mine = |r: &&std::sync::Arc<Root>| r.txnid == tree.txnid && r.pgno == tree.root;
        if let Some(r) = self
            .root
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(mine)
        {
            return Ok((!r.kids.is_empty()).then(|| r.clone()));
        }
        let (page, n, upper) = self.node_page(tree.root, tree.last, false)?;
        let mut root = Root {
            txnid: tree.txnid,
            pgno: tree.root,
            heads: Vec::with_capacity(n),
            lens: Vec::with_capacity(n),
            kids: Vec::with_capacity(n),
            longest: 0,
            starts: Vec::new(),
        };
        for i in 0..n {
            let (at, key) = self.node(page, tree.root, upper, i)?;
            if i > 0 && key.len() > 16 {
                // Kept as an empty root: this snapshot's root is searched in place, decided once.
                root.heads.clear();
                root.lens.clear();
                root.kids.clear();
                break;
            }
            let (size, flags, _) = node_header(page, at);
            root.heads.push(if i == 0 {
                0
            } else {
                head_at(page, at + NODE, key.len())
            });
            if i > 0 {
                root.longest = root.longest.max(key.len());
            }
            root.lens.push(key.len() as u8);
            root.kids.push(child(size, flags));
        }
        root.starts = batch::starts(&root.heads, &root.kids);
        let root = std::sync::Arc::new(root);
        // Another thread storing its snapshot's root at the same moment: let it, this request has its own.
        if let Ok(mut slot) = self.root.try_write() {
            *slot = Some(root.clone());
        }
        Ok((!root.kids.is_empty()).then_some(root))
    }
}

mod batch;

#[cfg(test)]
mod tests;
