//! The LMDB environment of a store, shared by every handle on one path in one process.
//!
//! LMDB forbids opening one environment twice in a process, so handles go through a process-global
//! cache keyed by canonical path. Each store also remembers the fork generation its environment was
//! opened in: an LMDB environment must not be used across `fork()`, so the first use of a store in a
//! forked child (gunicorn `--preload`, multiprocessing's fork) closes the inherited environment (safe
//! there: the child holds none of its locks or reader slots) and opens the files again, behind the same
//! handle. The one case that cannot be repaired is a fork while another thread was inside a transaction
//! on the store: its lock stays held forever in the child, which then gets a `Storage` error saying so.
//!
//! Every transaction runs under a shared lock; changing the map size takes it exclusively, which is how
//! this module guarantees LMDB's rule that no transaction of the process is active during a resize.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, RwLock, RwLockReadGuard, TryLockError, Weak};

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, MdbError, RoTxn, RwTxn};

use crate::error::{Error, Result};
use crate::online::direct::Pages;
use crate::online::key::KEY_FORMAT_VERSION;
use crate::online::schema::{ViewSchema, SCHEMA_FORMAT_VERSION};
use crate::online::verify::{self, Verified};

pub type Db = Database<'static, Bytes, Bytes>;
pub type AnyDb<'e> = Database<'e, Bytes, Bytes>;

const META_DB: &str = "__skewless_meta__";
/// All views share one data database; a key starts with its view's 4-byte id (see `key.rs`). One
/// database, not one per view, because LMDB zero-fills a per-transaction table sized by `max_dbs` on
/// every read transaction: with thousands of named databases that memset dominated a one-key read.
const DATA_DB: &str = "__skewless_data__";
/// The store's format record: `[key format][legacy value layout][schema record format]`, one byte each.
/// The middle byte is always 1: it was the value layout of the whole store until schema record format 2
/// moved the layout version into each view's schema record; it is kept so that older builds, which
/// compare the whole record, refuse a store with format 2 schema records instead of misreading it.
const FORMAT_KEY: &[u8] = b"format";
const LEGACY_VALUE_FORMAT: u8 = 1;
const SCHEMA_PREFIX: &[u8] = b"schema/";
/// `viewid/<view>` -> u32 LE view id; `next_view_id` -> the next id to hand out (u32 LE).
const VIEW_ID_PREFIX: &[u8] = b"viewid/";
const NEXT_VIEW_ID: &[u8] = b"next_view_id";
/// Address space reserved for the map when the caller does not say; the file grows only with the data.
const DEFAULT_MAP_SIZE: usize = 1 << 30;
const MAX_DBS: u32 = 2;
/// Reader slots (one per reading thread per process, fixed by whoever creates the lock file). LMDB's
/// default of 126 is small for a service with a thread pool; a slot costs 64 bytes of lock file.
const MAX_READERS: u32 = 1024;

static FORK_GEN: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();
static CACHE: Mutex<Vec<(PathBuf, Weak<Store>)>> = Mutex::new(Vec::new());

extern "C" fn after_fork_in_child() {
    // Only an atomic add: the child of a multi-threaded parent may run nothing that could deadlock.
    FORK_GEN.fetch_add(1, Ordering::Relaxed);
}

/// Errors inside a write transaction: LMDB's (so a full map can be told apart) or the kernel's.
pub enum TxnError {
    Heed(heed::Error),
    Kernel(Error),
}

impl From<heed::Error> for TxnError {
    fn from(e: heed::Error) -> Self {
        TxnError::Heed(e)
    }
}

impl From<Error> for TxnError {
    fn from(e: Error) -> Self {
        TxnError::Kernel(e)
    }
}

pub fn storage(e: heed::Error) -> Error {
    match e {
        heed::Error::Mdb(MdbError::ReadersFull) => Error::Storage(format!(
            "the online store's reader table is full ({MAX_READERS} slots, one per reading thread): too many \
             processes or threads read at once; slots of killed processes are freed by \
             OnlineStore.clear_stale_readers() and on open"
        )),
        heed::Error::Mdb(MdbError::TxnFull) => Error::Storage(
            "one write touched more pages than an LMDB transaction can hold; split the data into smaller writes".into(),
        ),
        e => Error::Storage(format!("LMDB failed: {e}")),
    }
}

/// Bytes free below which an I/O error while committing is taken for a full disk.
const LOW_SPACE: u64 = 64 << 20;

/// A write that failed because the disk is full, said so. LMDB reports ENOSPC, or EIO when a write came
/// back short (which on a full disk it does), so EIO with little space left counts as full too.
fn disk_full(e: &heed::Error, path: &Path) -> Option<Error> {
    let heed::Error::Io(io) = e else { return None };
    let code = io.raw_os_error()?;
    if code != libc::ENOSPC && code != libc::EIO {
        return None;
    }
    let free = free_bytes(path);
    if code == libc::EIO && free.is_none_or(|f| f >= LOW_SPACE) {
        return None;
    }
    let free = free.map_or(String::new(), |f| format!(" ({f} bytes free)"));
    Some(Error::Storage(format!(
        "the disk holding the online store {} is full{free}; nothing was written. Free some space (or \
         move the store to a larger disk) and write again",
        path.display()
    )))
}

/// Bytes available to this user on the file system holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` is writable memory of the right type.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

enum Attempt<T> {
    Done(Result<T>),
    /// Another process grew the map: adopt its size and retry.
    Resized,
    /// The map filled at this size: grow and retry.
    Full(usize),
}

pub struct Store {
    pub path: PathBuf,
    /// The fork generation `env` was opened in.
    gen: AtomicU64,
    env: RwLock<Option<Opened>>,
    max_map_size: Option<usize>,
    /// The databases of the environment in `env` (database handles belong to one environment).
    dbs: RwLock<Dbs>,
    /// Reader slots of dead processes cleared when this process opened the environment.
    pub stale_readers_cleared: usize,
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

fn round_to_pages(n: usize) -> usize {
    let p = page_size();
    n.div_ceil(p).max(16) * p
}

/// An open environment and this process's own read-only map of its pages, for the direct lookups of
/// the serving path (`direct.rs`; `None` when the file could not be mapped: LMDB's lookup serves).
/// Kept under the same lock as the environment, so a resize or a reopen replaces both while no
/// transaction of the process is active.
struct Opened {
    env: Env,
    pages: Option<Pages>,
}

impl Opened {
    fn new(env: Env, path: &Path) -> Opened {
        let pages = Pages::open(&env, path, DATA_DB.as_bytes());
        Opened { env, pages }
    }
}

impl std::ops::Deref for Opened {
    type Target = Env;
    fn deref(&self) -> &Env {
        &self.env
    }
}

#[derive(Clone, Copy)]
struct Dbs {
    meta: Db,
    data: Db,
}

/// Opens the files at `path`: the environment, its databases, and how many stale reader slots it cleared.
/// `verify`: check LMDB's pages first (`verify.rs`); a process reopening files its parent already checked
/// after a fork skips it.
fn open_files(path: &Path, map_size: usize, verify: bool) -> Result<(Env, Dbs, usize)> {
    let env = open_env(path, map_size)?;
    check_file_size(&env, path)?;
    if verify {
        verify_pages(&env, path)?;
    }
    let stale = env.clear_stale_readers().map_err(storage)?;
    let (meta, data) = init_dbs(&env)?;
    if verify {
        check_view_records(&env, &meta, path)?;
    }
    Ok((env, Dbs { meta, data }, stale))
}

/// The one place an LMDB environment is opened.
fn open_env(path: &Path, map_size: usize) -> Result<Env> {
    let mut opts = EnvOpenOptions::new();
    opts.map_size(map_size).max_dbs(MAX_DBS).max_readers(MAX_READERS);
    // SAFETY: LMDB memory-maps the data file; the map is only sound if the file is not modified except
    // through LMDB and the environment is opened at most once per process. The process-global cache in
    // this module is the only caller and keeps one environment per canonical path (per fork generation,
    // closing the inherited one before reopening in a child); skewless never writes the files itself.
    // A user modifying the files by hand, or a network file system, is outside this contract (documented
    // on OnlineStore).
    unsafe { opts.open(path) }
        .map_err(|e| Error::Storage(format!("cannot open the online store at {}: {e}", path.display())))
}

impl Store {
    /// Opens (or creates) the store at `path`, reusing this process's environment when one is open.
    pub fn open(path: &Path, map_size: Option<usize>, max_map_size: Option<usize>) -> Result<Arc<Store>> {
        ATFORK.call_once(|| {
            // SAFETY: registers a handler that only performs an atomic add.
            unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        });
        std::fs::create_dir_all(path).map_err(|e| {
            Error::Storage(format!(
                "cannot create the online store folder {}: {e}",
                path.display()
            ))
        })?;
        let canon = std::fs::canonicalize(path).map_err(|e| {
            Error::Storage(format!(
                "cannot resolve the online store path {}: {e}",
                path.display()
            ))
        })?;
        let gen = FORK_GEN.load(Ordering::Relaxed);
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let mut inherited = None;
        cache.retain(|(p, w)| match w.upgrade() {
            Some(s) if *p == canon => {
                inherited = Some(s);
                false
            }
            Some(_) => true,
            None => false,
        });
        if let Some(s) = inherited {
            s.reopen_locked(gen)?;
            cache.push((canon, Arc::downgrade(&s)));
            return Ok(s);
        }
        let size = round_to_pages(map_size.unwrap_or(DEFAULT_MAP_SIZE));
        if let Some(m) = max_map_size {
            if m < size {
                return Err(Error::InvalidArgument(format!(
                    "max_map_size ({m}) is smaller than map_size ({size}); pass max_map_size >= map_size or None"
                )));
            }
        }
        let (env, dbs, stale) = open_files(&canon, size, true)?;
        let store = Arc::new(Store {
            path: canon.clone(),
            gen: AtomicU64::new(gen),
            env: RwLock::new(Some(Opened::new(env, &canon))),
            max_map_size,
            dbs: RwLock::new(dbs),
            stale_readers_cleared: stale,
        });
        cache.push((canon, Arc::downgrade(&store)));
        Ok(store)
    }

    /// In a process forked after this store was opened: closes the inherited environment and opens the
    /// files again, once (later calls in the same generation return at once). The caller holds `CACHE`,
    /// which serializes this with other threads of the child and with `Store::open`.
    fn reopen_locked(&self, gen: u64) -> Result<()> {
        if self.gen.load(Ordering::Acquire) == gen {
            return Ok(());
        }
        // Every thread of this process waits for the generation to match before it takes the lock, so the
        // lock can only be held here by a thread of the parent that was inside a transaction at fork time;
        // it stays held forever in the child, and reporting that beats deadlocking.
        let mut g = match self.env.try_write() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Storage(format!(
                    "the online store {} was in use by another thread when this process forked, so this \
                     process cannot reopen it; fork before using the store, or open it only after the fork",
                    self.path.display()
                )))
            }
        };
        let size = g.as_ref().map_or(DEFAULT_MAP_SIZE, |env| env.info().map_size);
        *g = None; // closes the inherited environment before LMDB may open the files again
        let (env, dbs, _) = open_files(&self.path, size, false)?;
        *self.dbs.write().unwrap_or_else(|e| e.into_inner()) = dbs;
        *g = Some(Opened::new(env, &self.path));
        self.gen.store(gen, Ordering::Release);
        Ok(())
    }

    /// Reopens the environment first when this process was forked after it was opened.
    fn current_gen(&self) -> Result<()> {
        let gen = FORK_GEN.load(Ordering::Acquire);
        if self.gen.load(Ordering::Acquire) != gen {
            let _cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
            self.reopen_locked(gen)?;
        }
        Ok(())
    }

    fn dbs(&self) -> Dbs {
        *self.dbs.read().unwrap_or_else(|e| e.into_inner())
    }

    fn env(&self) -> Result<RwLockReadGuard<'_, Option<Opened>>> {
        self.current_gen()?;
        let g = self.env.read().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            return Err(closed());
        }
        Ok(g)
    }

    /// Runs `f` in one read transaction, adopting a map grown by another process when LMDB asks for it.
    #[inline]
    pub fn read<T>(&self, mut f: impl FnMut(&RoTxn) -> Result<T>) -> Result<T> {
        self.read_pages(|txn, _| f(txn))
    }

    /// [`Store::read`], also handing `f` this process's map of the data file for direct lookups in
    /// the transaction's snapshot (`direct.rs`), when there is one.
    #[inline]
    pub fn read_pages<T>(&self, mut f: impl FnMut(&RoTxn, Option<&Pages>) -> Result<T>) -> Result<T> {
        loop {
            let g = self.env()?;
            let env = g.as_ref().ok_or_else(closed)?;
            let out = match env.read_txn() {
                Ok(txn) => Some(f(&txn, env.pages.as_ref())),
                Err(heed::Error::Mdb(MdbError::MapResized)) => None,
                Err(e) => Some(Err(storage(e))),
            };
            drop(g);
            match out {
                Some(r) => return r,
                None => self.resize(None)?,
            }
        }
    }

    /// Runs `f(txn, data, meta, view_prefix)` in one write transaction (the view gets its id when new),
    /// committing when it returns Ok. A full map aborts the transaction, doubles the map and runs `f`
    /// again from the start, so the caller's writes land in one transaction or not at all.
    pub fn write<T>(
        &self,
        view: &str,
        mut f: impl FnMut(&mut RwTxn, &Db, &Db, [u8; 4]) -> Result<T, TxnError>,
    ) -> Result<T> {
        check_view_name(view)?;
        loop {
            let g = self.env()?;
            let outcome = self.write_once(g.as_ref().ok_or_else(closed)?, view, &mut f);
            drop(g);
            match outcome {
                Attempt::Done(r) => return r,
                Attempt::Resized => self.resize(None)?,
                Attempt::Full(size) => self.resize(Some(size))?,
            }
        }
    }

    fn write_once<T>(
        &self,
        env: &Env,
        view: &str,
        f: &mut impl FnMut(&mut RwTxn, &Db, &Db, [u8; 4]) -> Result<T, TxnError>,
    ) -> Attempt<T> {
        let map_size = env.info().map_size;
        let mut wtxn = match env.write_txn() {
            Ok(t) => t,
            Err(heed::Error::Mdb(MdbError::MapResized)) => return Attempt::Resized,
            Err(e) => return Attempt::Done(Err(storage(e))),
        };
        let mut run = || -> Result<T, TxnError> {
            let prefix = self.view_prefix_rw(&mut wtxn, view)?;
            let dbs = self.dbs();
            f(&mut wtxn, &dbs.data, &dbs.meta, prefix)
        };
        let res = run().and_then(|out| wtxn.commit().map(|()| out).map_err(TxnError::from));
        match res {
            Ok(out) => Attempt::Done(Ok(out)),
            Err(TxnError::Heed(heed::Error::Mdb(MdbError::MapFull))) => Attempt::Full(map_size),
            Err(TxnError::Heed(e)) => {
                Attempt::Done(Err(disk_full(&e, &self.path).unwrap_or_else(|| storage(e))))
            }
            Err(TxnError::Kernel(e)) => Attempt::Done(Err(e)),
        }
    }

    /// The view's key prefix, handing out a new id inside `wtxn` when the view is new.
    pub(crate) fn view_prefix_rw(&self, wtxn: &mut RwTxn, view: &str) -> Result<[u8; 4], TxnError> {
        let key = view_id_key(view);
        let meta = self.dbs().meta;
        if let Some(v) = meta.get(wtxn, &key)? {
            return Ok(id_prefix(v)?);
        }
        let next = match meta.get(wtxn, NEXT_VIEW_ID)? {
            Some(v) => u32::from_le_bytes(v.try_into().map_err(|_| corrupt_meta())?),
            None => 1,
        };
        let after = next
            .checked_add(1)
            .ok_or_else(|| Error::Storage("the store ran out of view ids".into()))?;
        meta.put(wtxn, NEXT_VIEW_ID, &after.to_le_bytes())?;
        meta.put(wtxn, &key, &next.to_le_bytes())?;
        Ok(next.to_be_bytes())
    }

    /// With `full = Some(size)`: doubles a map that filled at `size`. With `None`: adopts the size another
    /// process grew the map to.
    fn resize(&self, full: Option<usize>) -> Result<()> {
        let mut g = self.env.write().unwrap_or_else(|e| e.into_inner());
        let Some(env) = g.as_ref() else {
            return Err(Error::Storage(
                "the online store was closed; open it again".into(),
            ));
        };
        let cur = env.info().map_size;
        let target = match full {
            None => 0,
            Some(size) if cur > size => return Ok(()), // another thread grew it already
            Some(_) => {
                let want = cur.saturating_mul(2);
                if self.max_map_size.is_some_and(|m| want > m) {
                    return Err(Error::MapFull(format!(
                        "the online store's map is full at {cur} bytes and may not grow past max_map_size={}; \
                         nothing was written. Open the store with a larger max_map_size (or None)",
                        self.max_map_size.unwrap_or(0)
                    )));
                }
                if !can_map(want) {
                    return Err(Error::MapFull(format!(
                        "the online store's map is full at {cur} bytes and the process cannot map {want} bytes \
                         (address space limit); nothing was written. Raise the limit (ulimit -v) or write less"
                    )));
                }
                want
            }
        };
        // SAFETY: the exclusive lock is held, and every transaction of this process runs under the shared
        // lock, so no transaction is active on this environment.
        if let Err(e) = unsafe { env.resize(target) } {
            // A failed remap leaves LMDB without a map; drop the environment rather than let a read touch it.
            *g = None;
            return Err(Error::MapFull(format!(
                "growing the online store's map failed ({e}); nothing was written. Open the store again"
            )));
        }
        check_file_size(env, &self.path)?;
        // The direct lookups' map follows LMDB's size (no transaction is active: the lock is exclusive).
        if let Some(o) = g.as_mut() {
            o.pages = None;
            o.pages = Pages::open(&o.env, &self.path, DATA_DB.as_bytes());
        }
        Ok(())
    }

    /// The key prefix of `view`, or `None` when the view has never been written.
    pub fn view_prefix(&self, view: &str) -> Result<Option<[u8; 4]>> {
        let key = view_id_key(view);
        self.read(|txn| match self.dbs().meta.get(txn, &key).map_err(storage)? {
            Some(v) => Ok(Some(id_prefix(v)?)),
            None => Ok(None),
        })
    }

    /// The value of `key` in the metadata database as of `txn`: for records other modules own (the
    /// window state's meta record, `crate::window::state`).
    pub fn meta_get<'t>(&self, txn: &'t RoTxn, key: &[u8]) -> Result<Option<&'t [u8]>> {
        self.dbs().meta.get(txn, key).map_err(storage)
    }

    /// The key prefix of `view` as of `txn`, or `None` when the view has never been written.
    pub fn view_prefix_in(&self, txn: &RoTxn, view: &str) -> Result<Option<[u8; 4]>> {
        match self.dbs().meta.get(txn, &view_id_key(view)).map_err(storage)? {
            Some(v) => Ok(Some(id_prefix(v)?)),
            None => Ok(None),
        }
    }

    /// The data database, for lookups in a transaction of [`Store::read`]. Take it again after a fork
    /// rather than keeping it: in a forked child the first use reopens the environment, whose databases
    /// are new handles (if reopening fails, so does the next transaction, before the handle is used).
    pub fn data(&self) -> Db {
        let _ = self.current_gen();
        self.dbs().data
    }

    pub fn schema(&self, view: &str) -> Result<Option<ViewSchema>> {
        let key = schema_key(view);
        self.read(|txn| read_schema(&self.dbs().meta, txn, &key))
    }

    /// The schema and key prefix of `view` as of `txn`, or `None` when the view has never been written.
    pub fn view_in(&self, txn: &RoTxn, view: &str) -> Result<Option<(ViewSchema, [u8; 4])>> {
        let meta = self.dbs().meta;
        let Some(schema) = read_schema(&meta, txn, &schema_key(view))? else {
            return Ok(None);
        };
        match meta.get(txn, &view_id_key(view)).map_err(storage)? {
            Some(v) => Ok(Some((schema, id_prefix(v)?))),
            // The schema and the id are written in one transaction; one without the other is damage.
            None => Err(corrupt_meta()),
        }
    }

    pub fn views(&self) -> Result<Vec<String>> {
        self.read(|txn| {
            let mut out = Vec::new();
            for item in self.dbs().meta.prefix_iter(txn, SCHEMA_PREFIX).map_err(storage)? {
                let (k, _) = item.map_err(storage)?;
                out.push(String::from_utf8_lossy(&k[SCHEMA_PREFIX.len()..]).into_owned());
            }
            Ok(out)
        })
    }

    pub fn clear_stale_readers(&self) -> Result<usize> {
        let g = self.env()?;
        g.as_ref()
            .ok_or_else(closed)?
            .clear_stale_readers()
            .map_err(storage)
    }

    /// Checks LMDB's pages of the snapshot readers see now, as on open (`verify.rs`).
    pub fn verify(&self) -> Result<Verified> {
        let g = self.env()?;
        verify_pages(g.as_ref().ok_or_else(closed)?, &self.path)
    }

    pub fn map_size(&self) -> Result<usize> {
        let g = self.env()?;
        Ok(g.as_ref().ok_or_else(closed)?.info().map_size)
    }
}

pub fn schema_key(view: &str) -> Vec<u8> {
    let mut k = SCHEMA_PREFIX.to_vec();
    k.extend_from_slice(view.as_bytes());
    k
}

/// Records a new view's schema, and marks the store as holding schema records of this build's format
/// (so an older build refuses the store rather than misreading the record).
pub fn put_schema(meta: &Db, wtxn: &mut RwTxn, key: &[u8], schema: &ViewSchema) -> Result<(), TxnError> {
    meta.put(wtxn, key, &schema.encode())?;
    if meta.get(wtxn, FORMAT_KEY)? != Some(&format_record()[..]) {
        meta.put(wtxn, FORMAT_KEY, &format_record())?;
    }
    Ok(())
}

pub fn read_schema(meta: &AnyDb<'_>, txn: &RoTxn, key: &[u8]) -> Result<Option<ViewSchema>> {
    match meta.get(txn, key).map_err(storage)? {
        Some(b) => Ok(Some(ViewSchema::decode(b)?)),
        None => Ok(None),
    }
}

pub(crate) fn check_view_name(view: &str) -> Result<()> {
    if view.is_empty() || view.len() > 200 || view.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "view name {view:?} is not valid: use 1 to 200 bytes without NUL characters"
        )));
    }
    Ok(())
}

fn view_id_key(view: &str) -> Vec<u8> {
    view_id_key_of(view.as_bytes())
}

fn view_id_key_of(view: &[u8]) -> Vec<u8> {
    let mut k = VIEW_ID_PREFIX.to_vec();
    k.extend_from_slice(view);
    k
}

/// A stored view id (u32 LE) as the big-endian key prefix, so one view's keys are one contiguous range.
fn id_prefix(v: &[u8]) -> Result<[u8; 4]> {
    let id: [u8; 4] = v.try_into().map_err(|_| corrupt_meta())?;
    Ok(u32::from_le_bytes(id).to_be_bytes())
}

fn closed() -> Error {
    Error::Storage("the online store was closed after a failed map resize or a fork; open it again".into())
}

fn corrupt_meta() -> Error {
    Error::Storage("the online store's metadata is corrupt; rebuild the store".into())
}

/// The format record this build writes (see `FORMAT_KEY`).
fn format_record() -> [u8; 3] {
    [KEY_FORMAT_VERSION, LEGACY_VALUE_FORMAT, SCHEMA_FORMAT_VERSION]
}

/// Whether this build reads a store with format record `f`: the same key format, and schema records of
/// format 1 (stores written before per-view layouts) or 2.
fn readable(f: &[u8]) -> bool {
    matches!(f, [KEY_FORMAT_VERSION, LEGACY_VALUE_FORMAT, 1 | 2])
}

/// Opens the metadata and data databases, creating them (and the format record) in a new store.
fn init_dbs(env: &Env) -> Result<(Db, Db)> {
    let rtxn = env.read_txn().map_err(storage)?;
    let existing = env
        .open_databases_and_commit(rtxn, |dbo, rtxn| {
            let meta: Option<AnyDb<'_>> = dbo.open_database(rtxn, Some(META_DB))?;
            let data: Option<AnyDb<'_>> = dbo.open_database(rtxn, Some(DATA_DB))?;
            if let Some(db) = &meta {
                if let Some(f) = db.get(rtxn, FORMAT_KEY)? {
                    if !readable(f) {
                        return Ok(CommitOrAbort::Abort(f.to_vec()));
                    }
                }
            }
            Ok::<_, heed::Error>(CommitOrAbort::Commit(meta.zip(data)))
        })
        .map_err(storage)?;
    match existing {
        CommitOrAbort::Abort(f) => Err(Error::Storage(format!(
            "the online store was written with formats {f:?} (key, value, schema); this skewless reads {:?} \
             and stores with schema format 1. Use the skewless version that wrote it, or rebuild the store",
            format_record()
        ))),
        CommitOrAbort::Commit(Some(dbs)) => Ok(dbs),
        CommitOrAbort::Commit(None) => {
            let wtxn = env.write_txn().map_err(storage)?;
            env.create_databases_and_commit(wtxn, |dbo, wtxn| {
                let meta: AnyDb<'_> = dbo.create_database(wtxn, Some(META_DB))?;
                let data: AnyDb<'_> = dbo.create_database(wtxn, Some(DATA_DB))?;
                if meta.get(wtxn, FORMAT_KEY)?.is_none() {
                    meta.put(wtxn, FORMAT_KEY, &format_record())?;
                }
                Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit((meta, data)))
            })
            .map_err(storage)
            .map(|c| c.unwrap_commit())
        }
    }
}

fn verify_pages(env: &Env, path: &Path) -> Result<Verified> {
    verify::verify(env, path, &[DATA_DB.as_bytes(), META_DB.as_bytes()])
}

/// Refuses view records whose keys are damaged (LMDB checksums no key; the page walk sees only the
/// structure): every name under `schema/` and `viewid/` must be a valid view name, and every schema
/// record has its view id (both are written in one transaction). Without this a flipped key size of a
/// view's records reads as "view never written", a missing view instead of reported damage.
fn check_view_records(env: &Env, meta: &Db, path: &Path) -> Result<()> {
    let rtxn = env.read_txn().map_err(storage)?;
    let damaged = |key: &[u8]| {
        Error::Storage(format!(
            "the online store's metadata in {} is damaged (a record under the key {:?}); delete the online \
             folder and run materialize to rebuild it from the history",
            path.display(),
            String::from_utf8_lossy(key)
        ))
    };
    for prefix in [SCHEMA_PREFIX, VIEW_ID_PREFIX] {
        for item in meta.prefix_iter(&rtxn, prefix).map_err(storage)? {
            let (k, _) = item.map_err(storage)?;
            let valid = std::str::from_utf8(&k[prefix.len()..]).is_ok_and(|v| check_view_name(v).is_ok());
            if !valid
                || (prefix == SCHEMA_PREFIX
                    && meta
                        .get(&rtxn, &view_id_key_of(&k[prefix.len()..]))
                        .map_err(storage)?
                        .is_none())
            {
                return Err(damaged(k));
            }
        }
    }
    Ok(())
}

/// Refuses a data file shorter than its newest meta page says it is (a truncated copy, a file cut by a
/// full disk outside LMDB's control). Pages past the end of the file are in the map but have no backing:
/// touching one kills the process with SIGBUS instead of raising, so this runs before any page is read
/// (on open) and whenever the map is remapped (growth, or adopting another process's size).
fn check_file_size(env: &Env, path: &Path) -> Result<()> {
    let last = env.info().last_page_number as u64;
    let page = env.unnamed_database_stat().page_size as u64;
    let need = (last + 1).saturating_mul(page);
    let have = env.real_disk_size().map_err(|e| {
        Error::Storage(format!(
            "cannot read the size of the online store's data file in {}: {e}",
            path.display()
        ))
    })?;
    if have < need {
        return Err(Error::Storage(format!(
            "the online store's data file in {} is truncated: {have} bytes, but its last committed \
             transaction uses {need} ({} pages of {page} bytes). It cannot be read safely; restore it from a \
             copy, or delete the online folder and run materialize to rebuild it from the history",
            path.display(),
            last + 1
        )));
    }
    Ok(())
}

/// Whether the process can map `bytes` more of address space (an anonymous reservation, released at once).
fn can_map(bytes: usize) -> bool {
    // SAFETY: an anonymous, inaccessible, unreserved mapping that is unmapped before returning.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return false;
        }
        libc::munmap(p, bytes);
        true
    }
}
