//! LMDB's on-disk page format, as far as skewless reads it itself: the one definition, shared by the
//! structural check on open (`verify.rs`) and the direct lookups of the serving path (`direct.rs`).
//!
//! This is LMDB 0.9's format (`mdb.c` as vendored by heed's `lmdb-master-sys`, 64-bit build, `PAGEBASE`
//! 0, integers in the machine's byte order). It is LMDB's, not ours, so it has no skewless version
//! number: a store is readable by this code exactly when LMDB 0.9 (data version 1, magic `0xBEEFC0DE`)
//! wrote it, which the meta page's magic says.
//!
//! - A page: header `pgno u64, pad u16, flags u16, lower u16, upper u16` (16 bytes; an overflow page
//!   keeps its page count, u32, where `lower`/`upper` are), then `(lower - 16) / 2` u16 node offsets
//!   in key order; the nodes themselves sit between `upper` and the end of the page.
//! - A node: `lo u16, hi u16, flags u16, ksize u16, key, data`. In a leaf, the data size is
//!   `lo | hi << 16` and the data follows the key, unless `F_BIGDATA` is set: then an u64 page number
//!   of the first overflow page follows the key, and the data starts 16 bytes into that page. In a
//!   branch, the node's child page is `lo | hi << 16 | flags << 32`, and node 0's key is never
//!   compared: it stands for everything below node 1's key.
//! - A meta page (pages 0 and 1, the one of transaction `t` is page `t & 1`) holds, 16 bytes in,
//!   `magic u32, version u32, address u64, mapsize u64, db[2] (free pages, main), last_pg u64,
//!   txnid u64`.
//! - A database record (`db[]` above, and the data of an `F_SUBDATA` node of the main database, which
//!   names a database): `pad u32, flags u16, depth u16, branch_pages u64, leaf_pages u64,
//!   overflow_pages u64, entries u64, root u64` (48 bytes). An empty database's root is `P_INVALID`.
//! - Keys are ordered by LMDB's default comparison: bytes, then length (a prefix sorts first), which is
//!   Rust's order of `[u8]`.

/// Bytes of a page header.
pub const HEADER: usize = 16;
/// Bytes of a node header.
pub const NODE: usize = 8;
/// Bytes of a database record.
pub const DB_RECORD: usize = 48;
/// Bytes of the meta record that follows a meta page's header.
pub const META_RECORD: usize = 136;
pub const MAGIC: u32 = 0xBEEF_C0DE;

/// Offsets in the meta record (after the page header).
pub const META_MAGIC: usize = 0;
pub const META_FREE_DB: usize = 24;
pub const META_MAIN_DB: usize = 72;
pub const META_LAST_PAGE: usize = 120;
pub const META_TXNID: usize = 128;

/// Offsets in a page header.
pub const PAGE_NO: usize = 0;
pub const PAGE_FLAGS: usize = 10;
pub const PAGE_LOWER: usize = 12;
pub const PAGE_UPPER: usize = 14;
/// An overflow page's page count (u32), where `lower`/`upper` are in other pages.
pub const PAGE_OVERFLOW_COUNT: usize = 12;

pub const P_BRANCH: u16 = 0x01;
pub const P_LEAF: u16 = 0x02;
pub const P_OVERFLOW: u16 = 0x04;
/// The bits of a page's flags that say what kind of page it is (the others are in-memory markers).
pub const P_KINDS: u16 = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40;

/// Leaf node flags: the data is on overflow pages / the data is a database record.
pub const F_BIGDATA: u16 = 0x01;
pub const F_SUBDATA: u16 = 0x02;

/// Database flags: `MDB_INTEGERKEY` (native u64 keys, the free-page database), `MDB_DUPSORT`.
pub const INTEGER_KEY: u16 = 0x08;
pub const DUPSORT: u16 = 0x04;
/// The root of an empty database.
pub const P_INVALID: u64 = u64::MAX;
/// LMDB's cursor stack depth: a deeper tree cannot be searched.
pub const MAX_DEPTH: u16 = 32;

#[inline(always)]
pub fn u16_at(b: &[u8], at: usize) -> u16 {
    // One bounds check and one load (indexing the two bytes apart checked and loaded each).
    let mut a = [0; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_ne_bytes(a)
}

#[inline(always)]
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(a)
}

#[inline(always)]
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(a)
}

/// A database record (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbRecord {
    pub flags: u16,
    pub depth: u16,
    pub branch_pages: u64,
    pub leaf_pages: u64,
    pub overflow_pages: u64,
    pub entries: u64,
    pub root: u64,
}

impl DbRecord {
    /// Parses the first [`DB_RECORD`] bytes of `b`.
    pub fn parse(b: &[u8]) -> DbRecord {
        DbRecord {
            flags: u16_at(b, 4),
            depth: u16_at(b, 6),
            branch_pages: u64_at(b, 8),
            leaf_pages: u64_at(b, 16),
            overflow_pages: u64_at(b, 24),
            entries: u64_at(b, 32),
            root: u64_at(b, 40),
        }
    }
}

/// A page's kind bits.
#[inline(always)]
pub fn kind(page: &[u8]) -> u16 {
    u16_at(page, PAGE_FLAGS) & P_KINDS
}

/// The fields of the node at offset `at` of a page: `(lo | hi << 16, flags, ksize)`. The caller checked
/// that `at + NODE` is inside the page.
#[inline(always)]
pub fn node_header(page: &[u8], at: usize) -> (u64, u16, usize) {
    let lo = u16_at(page, at) as u64;
    let hi = u16_at(page, at + 2) as u64;
    (lo | hi << 16, u16_at(page, at + 4), u16_at(page, at + 6) as usize)
}

/// A branch node's child page number from its header fields.
#[inline(always)]
pub fn child(size: u64, flags: u16) -> u64 {
    size | (flags as u64) << 32
}

/// The error for a damaged data file: what is wrong, and the repair.
#[cold]
pub fn damaged(path: &std::path::Path, what: &str) -> crate::error::Error {
    crate::error::Error::Storage(format!(
        "the online store's data file in {} is damaged ({what}); LMDB keeps no checksums on its own \
         pages, so it cannot be read safely. Delete the online folder and run materialize to rebuild \
         it from the history (or restore it from a copy)",
        path.display()
    ))
}

/// A read-only shared map of an environment's data file (the structural check's and the direct
/// lookups'), released on drop.
pub struct FileMap {
    ptr: *mut libc::c_void,
    len: usize,
}

impl FileMap {
    pub fn new(file: &std::fs::File, len: usize) -> std::io::Result<FileMap> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared read-only mapping of `len` bytes of an open file; nothing else owns it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(FileMap { ptr, len })
    }

    /// The start of the mapping, for a reader that maps more than the file holds (the environment's
    /// map size) and checks each page against the file's size itself.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr as *const u8
    }

    /// Bytes mapped.
    pub fn mapped(&self) -> usize {
        self.len
    }

    /// The whole mapping as bytes: only for a map no longer than the file (see below).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` bytes, readable, and lives as long as `self`. The caller maps no
        // more than the file holds, and LMDB never shrinks its data file, so no byte of it can SIGBUS;
        // LMDB's writers only change pages no snapshot reaches (the caller holds a read transaction).
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

// SAFETY: the mapping is read-only and owned by the `FileMap`, unmapped only on drop; nothing is written
// through it, so moving or sharing it between threads is sound.
unsafe impl Send for FileMap {}
// SAFETY: as above; every method takes `&self` and only reads.
unsafe impl Sync for FileMap {}

impl Drop for FileMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, once.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}
