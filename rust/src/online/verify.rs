//! A structural check of LMDB's own pages, run before LMDB reads any of them.
//!
//! LMDB keeps no checksums on its pages and trusts them: a flipped node offset or key size makes its
//! search read past the end of `data.mdb` (SIGBUS), a flipped node flag (`F_DUPDATA` on a database
//! without duplicates) makes it follow a null sub-cursor (SIGSEGV), and neither is an error it could
//! return. The value checksums (`value.rs`) only cover what LMDB hands back. So when a process opens
//! the store, this walks every tree of the snapshot it reads (the free-page list, the main database and
//! each named database in it) and checks, for every page, what LMDB will later rely on without a check:
//! the page is inside the file and reached once; its header (its own page number, its kind for its
//! depth, `lower`/`upper`); each node offset, key size and data size stays inside the page; leaf node
//! flags are ones these databases can hold; a branch's child and an overflow run are inside the file;
//! keys are in order; the counts in each database record match the tree; every page of the free list
//! is inside the file and not in use. Any failure is a `Storage` error naming the page, and the store is
//! never read (the history rebuilds it). Why a walk and not the alternatives: extending the file so a
//! stray offset reads zeros covers the SIGBUS but not the null sub-cursor; a SIGSEGV/SIGBUS handler
//! around LMDB calls would need the raw transaction, which heed does not expose, and jumping out of a
//! handler across Rust frames is undefined behaviour. The walk reads each page once, through its own
//! read-only map of the file, in a read transaction (so no page it reaches is reused meanwhile). It
//! cannot see damage that appears after it ran: `Store::verify` runs it again on demand.
//!
//! The page format read here is defined once, in `lmdb_format.rs`.

use std::path::Path;

use heed::Env;

use crate::error::{Error, Result};
use crate::online::lmdb_format::{
    self, child, kind, node_header, u16_at, u32_at, u64_at, DbRecord, FileMap, DB_RECORD, DUPSORT, F_BIGDATA,
    F_SUBDATA, HEADER, INTEGER_KEY, MAGIC, MAX_DEPTH, META_FREE_DB, META_LAST_PAGE, META_MAGIC, META_MAIN_DB,
    META_RECORD, META_TXNID, NODE, PAGE_LOWER, PAGE_NO, PAGE_OVERFLOW_COUNT, PAGE_UPPER, P_BRANCH, P_INVALID,
    P_LEAF, P_OVERFLOW,
};

/// What a walk found: pages by kind and entries (reported by `OnlineStore.verify`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub branch_pages: u64,
    pub leaf_pages: u64,
    pub overflow_pages: u64,
    pub entries: u64,
}

struct Walk<'a> {
    file: &'a [u8],
    psize: usize,
    last: u64,
    seen: Vec<u64>,
    found: Verified,
}

type Check<T> = std::result::Result<T, String>;

/// Checks the trees of the snapshot `env` reads now, whose main database must name either no database
/// (a new store) or exactly `databases` (in key order). `Err(Storage)` names what is damaged.
pub fn verify(env: &Env, path: &Path, databases: &[&[u8]]) -> Result<Verified> {
    let damaged = |what: String| lmdb_format::damaged(path, &what);
    let io = |e: &dyn std::fmt::Display| {
        Error::Storage(format!(
            "cannot read the online store's data file in {}: {e}",
            path.display()
        ))
    };
    let psize = env.unnamed_database_stat().page_size as usize;
    if !(512..=65536).contains(&psize) || !psize.is_power_of_two() {
        return Err(damaged(format!("page size {psize}")));
    }
    let file = env.try_clone_inner_file().map_err(|e| io(&e))?;
    let mut attempts = 0;
    // The read transaction pins the snapshot the walk checks: no page it reaches is reused until it ends.
    let (_rtxn, map, meta) = loop {
        let rtxn = env.read_txn().map_err(crate::online::env::storage)?;
        let len = file.metadata().map_err(|e| io(&e))?.len() as usize;
        if len < 2 * psize {
            return Err(damaged(format!("{len} bytes, less than its two meta pages")));
        }
        let map = FileMap::new(&file, len).map_err(|e| io(&e))?;
        let txnid = rtxn.id() as u64;
        let record = |p: usize| -> [u8; META_RECORD] {
            let mut m = [0; META_RECORD];
            m.copy_from_slice(&map.bytes()[p * psize + HEADER..p * psize + HEADER + META_RECORD]);
            m
        };
        // The snapshot's meta page is the one with its transaction id. A writer committing twice while
        // this reads it rewrites that page (readers do not hold meta pages): so the id is read again
        // after the copy, and a changed one means try again, never damage.
        let found = (0..2).find_map(|p| {
            let m = record(p);
            (u64_at(&m, META_TXNID) == txnid && u64_at(&record(p), META_TXNID) == txnid).then_some(m)
        });
        match found {
            Some(m) => break (rtxn, map, m),
            None if attempts < 5 && env.info().last_txn_id as u64 != txnid => attempts += 1,
            None => return Err(damaged(format!("no meta page of transaction {txnid}"))),
        }
    };
    let meta = &meta[..];
    let bytes = map.bytes();
    let len = bytes.len();
    if u32_at(meta, META_MAGIC) != MAGIC {
        return Err(damaged("meta page magic".into()));
    }
    let last = u64_at(meta, META_LAST_PAGE);
    let end = (last.saturating_add(1)).saturating_mul(psize as u64);
    if end > len as u64 {
        return Err(damaged(format!(
            "its last page {last} ends at byte {end}, past the end of the file ({len} bytes)"
        )));
    }
    let mut walk = Walk {
        file: &bytes[..end as usize],
        psize,
        last,
        seen: vec![0; (last as usize + 1).div_ceil(64)],
        found: Verified::default(),
    };
    let free_db = DbRecord::parse(&meta[META_FREE_DB..META_FREE_DB + DB_RECORD]);
    let main_db = DbRecord::parse(&meta[META_MAIN_DB..META_MAIN_DB + DB_RECORD]);
    let mut free_lists = Vec::new();
    let mut check = |walk: &mut Walk| -> Check<()> {
        walk.tree("the free-page list", free_db, false, Some(&mut free_lists))?;
        let named = walk.tree("the main database", main_db, true, None)?;
        let names: Vec<&[u8]> = named.iter().map(|(n, _)| &n[..]).collect();
        if !names.is_empty() && names != databases {
            return Err(format!(
                "the main database names {:?}",
                names
                    .iter()
                    .map(|n| String::from_utf8_lossy(n))
                    .collect::<Vec<_>>()
            ));
        }
        for (name, rec) in named {
            walk.tree(
                &format!("database {:?}", String::from_utf8_lossy(&name)),
                rec,
                false,
                None,
            )?;
        }
        walk.free_pages(&free_lists)
    };
    check(&mut walk).map_err(damaged)?;
    Ok(walk.found)
}

impl<'a> Walk<'a> {
    fn page(&self, pgno: u64) -> Check<&'a [u8]> {
        if pgno < 2 || pgno > self.last {
            return Err(format!(
                "page {pgno} is outside the file's pages 2..={}",
                self.last
            ));
        }
        let (file, at) = (self.file, pgno as usize * self.psize);
        Ok(&file[at..at + self.psize])
    }

    fn mark(&mut self, pgno: u64) -> Check<()> {
        let (w, b) = ((pgno / 64) as usize, pgno % 64);
        if self.seen[w] & (1 << b) != 0 {
            return Err(format!("page {pgno} is reached twice"));
        }
        self.seen[w] |= 1 << b;
        Ok(())
    }

    /// Walks one tree; returns the named databases recorded in its leaves (`F_SUBDATA` nodes), and
    /// collects each leaf's data into `values` when asked (the free list's page lists).
    fn tree(
        &mut self,
        what: &str,
        db: DbRecord,
        main: bool,
        mut values: Option<&mut Vec<Vec<u8>>>,
    ) -> Check<Vec<(Vec<u8>, DbRecord)>> {
        let within = |e: String| format!("{what}: {e}");
        let mut named = Vec::new();
        if db.root == P_INVALID {
            if db.depth != 0 || db.entries != 0 {
                return Err(within("empty, but its record counts entries".into()));
            }
            return Ok(named);
        }
        if db.flags & DUPSORT != 0 || db.depth == 0 || db.depth > MAX_DEPTH {
            return Err(within(format!("flags {:#x}, depth {}", db.flags, db.depth)));
        }
        let integer = db.flags & INTEGER_KEY != 0;
        let before = self.found;
        let mut stack = vec![(db.root, 1u16)];
        while let Some((pgno, depth)) = stack.pop() {
            let children = self
                .node_page(
                    pgno,
                    depth == db.depth,
                    integer,
                    main,
                    &mut named,
                    values.as_deref_mut(),
                )
                .map_err(|e| within(format!("page {pgno}: {e}")))?;
            for child in children.into_iter().rev() {
                stack.push((child, depth + 1));
            }
            if depth < db.depth {
                self.found.branch_pages += 1;
            } else {
                self.found.leaf_pages += 1;
            }
        }
        let counted = (
            self.found.branch_pages - before.branch_pages,
            self.found.leaf_pages - before.leaf_pages,
            self.found.overflow_pages - before.overflow_pages,
            self.found.entries - before.entries,
        );
        let recorded = (db.branch_pages, db.leaf_pages, db.overflow_pages, db.entries);
        if counted != recorded {
            return Err(within(format!(
                "the tree holds (branch, leaf, overflow pages, entries) {counted:?}, its record says {recorded:?}"
            )));
        }
        Ok(named)
    }

    /// Checks one branch or leaf page; returns a branch's children in key order.
    fn node_page(
        &mut self,
        pgno: u64,
        leaf: bool,
        integer: bool,
        main: bool,
        named: &mut Vec<(Vec<u8>, DbRecord)>,
        mut values: Option<&mut Vec<Vec<u8>>>,
    ) -> Check<Vec<u64>> {
        let page = self.page(pgno)?;
        self.mark(pgno)?;
        let psize = self.psize;
        if u64_at(page, PAGE_NO) != pgno {
            return Err(format!("its header says page {}", u64_at(page, PAGE_NO)));
        }
        let kind = kind(page);
        let want = if leaf { P_LEAF } else { P_BRANCH };
        if kind != want {
            return Err(format!(
                "kind {kind:#x} where a {} page belongs",
                if leaf { "leaf" } else { "branch" }
            ));
        }
        let (lower, upper) = (
            u16_at(page, PAGE_LOWER) as usize,
            u16_at(page, PAGE_UPPER) as usize,
        );
        // A branch needs a node (LMDB searches from its last one); a leaf may be empty.
        let least = if leaf { HEADER } else { HEADER + 2 };
        if lower < least || lower > upper || upper > psize || (lower - HEADER) % 2 != 0 {
            return Err(format!("lower {lower}, upper {upper}"));
        }
        let n = (lower - HEADER) / 2;
        let mut children = Vec::new();
        let mut prev: Option<&[u8]> = None;
        for i in 0..n {
            let at = u16_at(page, HEADER + 2 * i) as usize;
            if at < upper || at + NODE > psize {
                return Err(format!("node {i} at offset {at}, outside {upper}..{psize}"));
            }
            let (size, flags, ksize) = node_header(page, at);
            let key_end = at + NODE + ksize;
            if key_end > psize {
                return Err(format!(
                    "node {i}: key of {ksize} bytes at offset {at} ends past the page"
                ));
            }
            let key = &page[at + NODE..key_end];
            // A branch's first key is never compared (it stands for everything below the second).
            if leaf || i > 0 {
                if integer && ksize != 8 {
                    return Err(format!("node {i}: an integer key of {ksize} bytes"));
                }
                if let Some(p) = prev {
                    let ordered = if integer {
                        u64_at(p, 0) < u64_at(key, 0)
                    } else {
                        p < key
                    };
                    if !ordered {
                        return Err(format!("node {i}: keys out of order"));
                    }
                }
                prev = Some(key);
            }
            if !leaf {
                children.push(child(size, flags));
                continue;
            }
            self.found.entries += 1;
            let size = size as usize;
            // Only the main database records other databases (F_SUBDATA); none has duplicates (F_DUPDATA).
            let allowed = if main { F_SUBDATA } else { F_BIGDATA };
            if flags != 0 && flags != allowed {
                return Err(format!("node {i}: flags {flags:#x}"));
            }
            let data = if flags & F_BIGDATA != 0 {
                if key_end + 8 > psize {
                    return Err(format!("node {i}: its overflow page number ends past the page"));
                }
                self.overflow(u64_at(page, key_end), size)
                    .map_err(|e| format!("node {i}: {e}"))?
            } else {
                if key_end + size > psize {
                    return Err(format!(
                        "node {i}: {size} bytes of data at offset {key_end} end past the page"
                    ));
                }
                &page[key_end..key_end + size]
            };
            if flags & F_SUBDATA != 0 {
                if size != DB_RECORD {
                    return Err(format!("node {i}: a database record of {size} bytes"));
                }
                named.push((key.to_vec(), DbRecord::parse(data)));
            }
            if let Some(v) = values.as_deref_mut() {
                v.push(data.to_vec());
            }
        }
        Ok(children)
    }

    /// The data of an overflow run starting at `pgno` holding `size` bytes.
    fn overflow(&mut self, pgno: u64, size: usize) -> Check<&'a [u8]> {
        let page = self.page(pgno)?;
        let pages = u32_at(page, PAGE_OVERFLOW_COUNT) as u64;
        if u64_at(page, PAGE_NO) != pgno || kind(page) != P_OVERFLOW || pages == 0 {
            return Err(format!("overflow page {pgno}: header"));
        }
        if pgno + pages - 1 > self.last || size > pages as usize * self.psize - HEADER {
            return Err(format!("overflow page {pgno}: {pages} pages for {size} bytes"));
        }
        for p in pgno..pgno + pages {
            self.mark(p)?;
        }
        self.found.overflow_pages += pages;
        let (file, at) = (self.file, pgno as usize * self.psize + HEADER);
        Ok(&file[at..at + size])
    }

    /// Every page a free list names: inside the file, and in no tree (a writer reuses these pages, so a
    /// live page listed here would be overwritten).
    fn free_pages(&self, lists: &[Vec<u8>]) -> Check<()> {
        for list in lists {
            // An ID list: a u64 count, then that many page numbers.
            let count = if list.len() >= 8 {
                u64_at(list, 0) as usize
            } else {
                usize::MAX
            };
            // LMDB may leave a reserved record longer than its list, never shorter.
            if count
                .checked_add(1)
                .and_then(|c| c.checked_mul(8))
                .is_none_or(|n| n > list.len())
            {
                return Err(format!("the free-page list: a list of {} bytes", list.len()));
            }
            for i in 1..=count {
                let pgno = u64_at(list, 8 * i);
                if pgno < 2 || pgno > self.last {
                    return Err(format!("the free-page list names page {pgno}, outside the file"));
                }
                if self.seen[(pgno / 64) as usize] & (1 << (pgno % 64)) != 0 {
                    return Err(format!("the free-page list names page {pgno}, which is in use"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use heed::types::Bytes;
    use heed::{CommitOrAbort, Database, EnvOpenOptions};

    use super::*;

    const PAGE: usize = 4096;

    /// An environment with one named database of `n` small records (several leaves under a branch).
    fn env_with(dir: &Path, n: u32) -> Env {
        // SAFETY: a fresh directory, opened once in this test.
        let env = unsafe { EnvOpenOptions::new().map_size(1 << 24).max_dbs(2).open(dir) }.unwrap();
        let wtxn = env.write_txn().unwrap();
        let db: Database<'_, Bytes, Bytes> = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| {
                Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit(
                    dbo.create_database(wtxn, Some("d"))?,
                ))
            })
            .unwrap()
            .unwrap_commit();
        let mut wtxn = env.write_txn().unwrap();
        for i in 0..n {
            db.put(&mut wtxn, &i.to_be_bytes(), &[7u8; 40]).unwrap();
        }
        // One big value, on overflow pages.
        db.put(&mut wtxn, b"big", &[1u8; 3 * PAGE]).unwrap();
        wtxn.commit().unwrap();
        env
    }

    fn data(dir: &Path) -> Vec<u8> {
        std::fs::read(dir.join("data.mdb")).unwrap()
    }

    /// The page holding `needle` once, and the needle's offset.
    fn find(dir: &Path, needle: &[u8]) -> usize {
        let d = data(dir);
        let at = d.windows(needle.len()).position(|w| w == needle).unwrap();
        assert!(d[at + 1..].windows(needle.len()).all(|w| w != needle));
        at
    }

    fn poke(dir: &Path, at: usize, bytes: &[u8]) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("data.mdb"))
            .unwrap();
        f.write_all_at(bytes, at as u64).unwrap();
    }

    fn verify_err(env: &Env, dir: &Path) -> String {
        match verify(env, dir, &[b"d"]) {
            Err(Error::Storage(m)) => m,
            other => panic!("not a storage error: {other:?}"),
        }
    }

    #[test]
    fn a_healthy_environment_counts_its_pages_and_entries() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with(dir.path(), 500);
        let v = verify(&env, dir.path(), &[b"d"]).unwrap();
        // 501 records in "d", its one record in the main database, and the free list's one record (the
        // second commit freed the pages the first one wrote).
        assert_eq!(v.entries, 503);
        assert!(v.branch_pages >= 1 && v.leaf_pages >= 3);
        assert_eq!(v.overflow_pages, 4);
        // The main database must name exactly the expected databases.
        assert!(matches!(
            verify(&env, dir.path(), &[b"other"]),
            Err(Error::Storage(_))
        ));
    }

    #[test]
    fn damaged_nodes_pages_and_records_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with(dir.path(), 500);
        let key = find(dir.path(), &250u32.to_be_bytes());
        let node = key - NODE;
        let page = key / PAGE * PAGE;
        let cases: Vec<(usize, Vec<u8>, &str)> = vec![
            (node + 4, 0x04u16.to_le_bytes().to_vec(), "flags 0x4"),
            (node + 6, 0xFFFFu16.to_le_bytes().to_vec(), "ends past the page"),
            (node + 2, 0x0001u16.to_le_bytes().to_vec(), "end past the page"),
            (page + 16, 0xFFF0u16.to_le_bytes().to_vec(), "outside"),
            (page + 12, 0x0011u16.to_le_bytes().to_vec(), "lower 17"),
            (page + 10, 0x0001u16.to_le_bytes().to_vec(), "kind 0x1"),
            (page, 99u64.to_le_bytes().to_vec(), "header says page 99"),
            (key + 3, vec![0xFF], "out of order"),
        ];
        for (at, bytes, what) in cases {
            let before = data(dir.path())[at..at + bytes.len()].to_vec();
            poke(dir.path(), at, &bytes);
            let msg = verify_err(&env, dir.path());
            assert!(msg.contains(what) && msg.contains("materialize"), "{what}: {msg}");
            poke(dir.path(), at, &before);
            verify(&env, dir.path(), &[b"d"]).unwrap();
        }
    }

    #[test]
    fn a_tree_reaching_a_page_twice_or_past_the_last_page_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with(dir.path(), 500);
        let last = env.info().last_page_number as u64;
        let big = find(dir.path(), b"big");
        // The big value's node holds its first overflow page number after the key.
        let first = u64::from_ne_bytes(data(dir.path())[big + 3..big + 11].try_into().unwrap());
        for (pgno, what) in [(last + 1, "outside the file"), (first + 1, "overflow page")] {
            let before = data(dir.path())[big + 3..big + 11].to_vec();
            poke(dir.path(), big + 3, &pgno.to_le_bytes());
            let msg = verify_err(&env, dir.path());
            assert!(msg.contains(what), "{what}: {msg}");
            poke(dir.path(), big + 3, &before);
        }
    }
}
