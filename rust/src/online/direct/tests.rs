//! Oracle tests: the direct search answers exactly what LMDB's own `get` answers, on stores shaped to
//! reach every path (many keys, missing keys, the first and last key of every page, overflow values,
//! freed pages reused after deletes, a grown map), and damage is an error, never a crash.

use std::path::Path;

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, EnvOpenOptions};

use super::*;
use crate::testing::Rng;

type Db = Database<'static, Bytes, Bytes>;

const NAME: &str = "__data__";

fn open(dir: &Path, map: usize) -> (Env, Db) {
    // SAFETY: a fresh directory, opened once per test (reopened only after the previous env is dropped).
    let env = unsafe { EnvOpenOptions::new().map_size(map).max_dbs(2).open(dir) }.unwrap();
    let wtxn = env.write_txn().unwrap();
    let db: Db = env
        .create_databases_and_commit(wtxn, |dbo, wtxn| {
            Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit(
                dbo.create_database(wtxn, Some(NAME))?,
            ))
        })
        .unwrap()
        .unwrap_commit();
    (env, db)
}

/// A key of the store's shape: a 4-byte view prefix and an 8-byte integer, or (when `long`) a longer
/// string-like tail, so that both the 16-byte head comparison and the full one are exercised.
fn key(view: u32, k: u64, long: bool) -> Vec<u8> {
    let mut b = view.to_be_bytes().to_vec();
    b.extend_from_slice(&k.to_be_bytes());
    if long {
        b.extend_from_slice(&[0u8, 0x01, (k % 7) as u8]);
        b.extend(std::iter::repeat_n(b'x', (k % 40) as usize));
    }
    b
}

fn value(k: u64, big: bool) -> Vec<u8> {
    let n = if big {
        5000 + (k % 9000) as usize
    } else {
        8 + (k % 90) as usize
    };
    (0..n).map(|i| (k as usize + i) as u8).collect()
}

/// Compares the direct search with heed's `get` for every key in `keys`, in one batch.
fn check(env: &Env, db: &Db, pages: &Pages, keys: &[Vec<u8>]) -> usize {
    let txn = env.read_txn().unwrap();
    let tree = pages.tree(&txn).unwrap();
    let probes: Vec<Probe<'_>> = keys.iter().map(|k| Probe::new(k)).collect();
    let mut out = vec![None; probes.len()];
    pages.search(&tree, &probes, &mut out, false).unwrap();
    let mut hits = 0;
    for (k, got) in keys.iter().zip(&out) {
        let want = if k.is_empty() {
            None
        } else {
            db.get(&txn, k).unwrap()
        };
        assert_eq!(*got, want, "key {k:?}");
        hits += got.is_some() as usize;
    }
    hits
}

/// Every key stored, plus neighbours that are not: each key with its last byte one above and below,
/// a prefix of it, and keys past both ends.
fn probes_around(stored: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for k in stored {
        out.push(k.clone());
        let mut up = k.clone();
        *up.last_mut().unwrap() = up.last().unwrap().wrapping_add(1);
        out.push(up);
        let mut down = k.clone();
        *down.last_mut().unwrap() = down.last().unwrap().wrapping_sub(1);
        out.push(down);
        out.push(k[..k.len() - 1].to_vec());
        let mut longer = k.clone();
        longer.push(0);
        out.push(longer);
    }
    out.push(vec![0]);
    out.push(vec![0xFF; 20]);
    out.push(Vec::new());
    out
}

#[test]
fn equals_lmdb_on_many_keys_missing_keys_and_page_edges() {
    let dir = tempfile::tempdir().unwrap();
    let (env, db) = open(dir.path(), 1 << 26);
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    let mut stored = Vec::new();
    let mut wtxn = env.write_txn().unwrap();
    for view in 1..4u32 {
        for _ in 0..6000 {
            let k = rng.below(1_000_000) as u64;
            let long = view == 3;
            let kb = key(view, k, long);
            db.put(&mut wtxn, &kb, &value(k, false)).unwrap();
            stored.push(kb);
        }
    }
    wtxn.commit().unwrap();
    let pages = Pages::open(&env, dir.path(), NAME.as_bytes()).unwrap();
    let probes = probes_around(&stored);
    let hits = check(&env, &db, &pages, &probes);
    assert!(hits >= stored.len() - 100, "{hits}"); // a few random keys repeat
                                                   // One key at a time too (a batch of one is the single-entity request).
    for k in probes.iter().step_by(97) {
        check(&env, &db, &pages, std::slice::from_ref(k));
    }
    // Every first and last key of a page is among the stored keys; make sure the tree has pages.
    let txn = env.read_txn().unwrap();
    assert!(db.stat(&txn).unwrap().depth >= 2);
}

/// The first probe of a page is guessed from its bounds as if its keys were spread evenly: keys that
/// are anything but (powers of two, dense clusters far apart, views of very different sizes sharing
/// pages, long keys whose first 16 bytes tie) must still find exactly what LMDB finds.
#[test]
fn uneven_keys_equal_lmdb_whatever_the_guess() {
    let dir = tempfile::tempdir().unwrap();
    let (env, db) = open(dir.path(), 1 << 26);
    let mut stored = Vec::new();
    let mut wtxn = env.write_txn().unwrap();
    let mut put = |kb: Vec<u8>, k: u64| {
        db.put(&mut wtxn, &kb, &value(k, false)).unwrap();
        stored.push(kb);
    };
    for s in 0..64u64 {
        for d in 0..40u64 {
            put(key(1, (1u64 << s).wrapping_add(d * d), false), s * 64 + d); // exponential
        }
    }
    for c in 0..6u64 {
        for d in 0..1500u64 {
            put(key(2, c * (u64::MAX / 6) + d, false), d); // dense clusters, far apart
        }
    }
    put(key(3, 42, false), 42); // a view of one key between large ones
    for d in 0..3000u64 {
        put(key(4, 7, true).into_iter().chain(d.to_be_bytes()).collect(), d); // heads all tie
    }
    wtxn.commit().unwrap();
    let pages = Pages::open(&env, dir.path(), NAME.as_bytes()).unwrap();
    let probes = probes_around(&stored);
    // With the guess taken, and with it off (as after many misses), whatever its recent rate.
    for rate in [256, 0, 256] {
        pages.guess_rate.store(rate, Ordering::Relaxed);
        assert!(check(&env, &db, &pages, &probes) >= stored.len() / 2); // check compares every key
    }
    for k in probes.iter().step_by(13) {
        check(&env, &db, &pages, std::slice::from_ref(k));
    }
    let txn = env.read_txn().unwrap();
    assert!(
        db.stat(&txn).unwrap().depth >= 3,
        "the guess is taken below the root only"
    );
}

#[test]
fn overflow_values_deletes_page_reuse_and_a_grown_map() {
    let dir = tempfile::tempdir().unwrap();
    let (env, db) = open(dir.path(), 1 << 20);
    let mut rng = Rng::new(7);
    let mut live: std::collections::BTreeSet<Vec<u8>> = Default::default();
    let mut pages = Pages::open(&env, dir.path(), NAME.as_bytes()).unwrap();
    let env = env;
    let mut size = 1usize << 20;
    for round in 0..40 {
        let mut wtxn = env.write_txn().unwrap();
        let mut full = false;
        for _ in 0..300 {
            let k = rng.below(5000) as u64;
            let kb = key(1, k, k % 3 == 0);
            if rng.below(3) == 0 {
                db.delete(&mut wtxn, &kb).unwrap();
                live.remove(&kb);
            } else {
                match db.put(&mut wtxn, &kb, &value(k, k % 11 == 0)) {
                    Ok(()) => {
                        live.insert(kb);
                    }
                    Err(heed::Error::Mdb(heed::MdbError::MapFull)) => {
                        full = true;
                        break;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        if full {
            wtxn.abort();
            // Grow the map as the store does (no transaction active), and the pages' map with it.
            size *= 2;
            drop(pages);
            // SAFETY: no transaction of this environment is active.
            unsafe { env.resize(size) }.unwrap();
            pages = Pages::open(&env, dir.path(), NAME.as_bytes()).unwrap();
            live = {
                let txn = env.read_txn().unwrap();
                db.iter(&txn).unwrap().map(|r| r.unwrap().0.to_vec()).collect()
            };
            continue;
        }
        wtxn.commit().unwrap();
        let stored: Vec<Vec<u8>> = live.iter().cloned().collect();
        let mut probes = probes_around(&stored);
        // Keys deleted earlier are probed too (their pages were freed and may have been reused).
        probes.extend((0..200).map(|k| key(1, k * 25, k % 3 == 0)));
        let hits = check(&env, &db, &pages, &probes);
        assert!(hits >= stored.len(), "round {round}");
    }
    assert!(size > 1 << 20, "the map never grew; the test lost its point");
    let txn = env.read_txn().unwrap();
    assert!(db.stat(&txn).unwrap().overflow_pages > 0);
    drop(txn);
    env.prepare_for_closing().wait();
}

#[test]
fn an_empty_database_and_a_stale_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (env, db) = open(dir.path(), 1 << 22);
    let pages = Pages::open(&env, dir.path(), NAME.as_bytes()).unwrap();
    assert_eq!(check(&env, &db, &pages, &[key(1, 5, false)]), 0);
    // A transaction older than two commits: its meta page was rewritten, so the search declines.
    let old = env.read_txn().unwrap();
    for k in 0..3 {
        let mut wtxn = env.write_txn().unwrap();
        db.put(&mut wtxn, &key(1, k, false), b"v").unwrap();
        wtxn.commit().unwrap();
    }
    // (The cached roots of its snapshot stay right: its pages are pinned. A fresh map has no cache.)
    assert_eq!(pages.tree(&old).unwrap().txnid, old.id() as u64);
    let fresh = Pages::open(&env, dir.path(), NAME.as_bytes()).unwrap();
    assert!(matches!(fresh.tree(&old), Err(Miss::Fallback)));
    drop(old);
    assert_eq!(check(&env, &db, &pages, &[key(1, 2, false)]), 1);
}

#[test]
fn damaged_pages_are_errors_never_crashes() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let (env, db) = open(dir.path(), 1 << 24);
    let mut wtxn = env.write_txn().unwrap();
    let keys: Vec<Vec<u8>> = (0..3000u64).map(|k| key(1, k, false)).collect();
    for (k, kb) in keys.iter().enumerate() {
        db.put(&mut wtxn, kb, &value(k as u64, k == 1500)).unwrap();
    }
    wtxn.commit().unwrap();
    let pages = Pages::open(&env, dir.path(), NAME.as_bytes()).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join("data.mdb"))
        .unwrap();
    let len = file.metadata().unwrap().len() as usize;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0).unwrap();
    let psize = 4096;
    // Flip bytes of every header field and node offset the search reads, page by page past the
    // metas: each search must answer as before or say the file is damaged.
    let mut rng = Rng::new(99);
    let mut errors = 0;
    for pg in 2..len / psize {
        for _ in 0..4 {
            let at = pg * psize
                + match rng.below(4) {
                    0 => 8 + rng.below(8),   // flags, lower, upper
                    1 => 16 + rng.below(64), // node offsets
                    2 => rng.below(8),       // page number
                    _ => rng.below(psize),
                };
            let old = bytes[at];
            file.write_all_at(&[old ^ (1 << rng.below(8))], at as u64)
                .unwrap();
            let txn = env.read_txn().unwrap();
            let tree = pages.tree(&txn).unwrap();
            // A large batch (its records on the heap) and a small one (on the stack).
            for step in [7, 1100] {
                let probes: Vec<Probe<'_>> = keys.iter().step_by(step).map(|k| Probe::new(k)).collect();
                let mut out = vec![None; probes.len()];
                match pages.search(&tree, &probes, &mut out, false) {
                    Ok(()) => {}
                    Err(Miss::Damaged(Error::Storage(m))) => {
                        assert!(m.contains("damaged") && m.contains("materialize"), "{m}");
                        errors += 1;
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
            drop(txn);
            file.write_all_at(&[old], at as u64).unwrap();
        }
    }
    assert!(errors > 0, "no flip was detected; the test lost its point");
    check(&env, &db, &pages, &keys);
}

/// The decoded root belongs to one snapshot: searches alternating between an old transaction and
/// newer ones (whose roots differ after splits, and whose pages reuse numbers freed by deletes), also
/// from several threads at once, each answer what LMDB answers in that same transaction.
#[test]
fn the_decoded_root_follows_each_transactions_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (env, db) = open(dir.path(), 1 << 26);
    let pages = Pages::open(&env, dir.path(), NAME.as_bytes()).unwrap();
    let put_range = |lo: u64, hi: u64, tag: u64| {
        let mut wtxn = env.write_txn().unwrap();
        for k in lo..hi {
            db.put(&mut wtxn, &key(1, k * 3, false), &value(k + tag, false))
                .unwrap();
        }
        wtxn.commit().unwrap();
    };
    // The roots of a snapshot are read while its meta page is current (later, `tree` declines and the
    // serving path asks LMDB), then kept: the old snapshot's pages stay pinned by its transaction.
    let same = |txn: &RoTxn, tree: Tree, keys: &[Vec<u8>]| {
        let probes: Vec<Probe<'_>> = keys.iter().map(|k| Probe::new(k)).collect();
        let mut out = vec![None; probes.len()];
        pages.search(&tree, &probes, &mut out, false).unwrap();
        for (k, got) in keys.iter().zip(&out) {
            assert_eq!(*got, db.get(txn, k).unwrap(), "key {k:?} in txn {}", txn.id());
        }
    };
    let keys: Vec<Vec<u8>> = (0..60_000u64).step_by(7).map(|k| key(1, k, false)).collect();
    put_range(0, 5000, 0);
    let old = env.read_txn().unwrap();
    let old_tree = pages.tree(&old).unwrap();
    assert!(db.stat(&old).unwrap().depth >= 2);
    for round in 1..6u64 {
        // Grow the tree (new root pages), then delete a range (freed pages, reused by the next round).
        put_range(round * 4000, round * 4000 + 4000, round);
        let mut wtxn = env.write_txn().unwrap();
        for k in (round - 1) * 4000..(round - 1) * 4000 + 2000 {
            db.delete(&mut wtxn, &key(1, k * 3, false)).unwrap();
        }
        wtxn.commit().unwrap();
        same(&old, old_tree, &keys);
        // A thread has one read transaction at a time: the new snapshot is read from another.
        std::thread::scope(|s| {
            s.spawn(|| {
                let new = env.read_txn().unwrap();
                let tree = pages.tree(&new).unwrap();
                assert_ne!(
                    tree.root, old_tree.root,
                    "the root never moved; the test lost its point"
                );
                same(&new, tree, &keys);
            });
        });
        same(&old, old_tree, &keys[..10]);
    }
    let depth = db.stat(&old).unwrap().depth;
    drop(old);
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let (env, db, pages) = (&env, &db, &pages);
            s.spawn(move || {
                for i in 0..30u64 {
                    if t == 0 {
                        let mut wtxn = env.write_txn().unwrap();
                        db.put(&mut wtxn, &key(1, i * 9 + 1, false), b"v").unwrap();
                        wtxn.commit().unwrap();
                    }
                    let txn = env.read_txn().unwrap();
                    let ks: Vec<Vec<u8>> = (0..200u64)
                        .map(|k| key(1, (k * 31 + i) % 60_000, false))
                        .collect();
                    // A commit racing the meta read declines (the serving path asks LMDB then).
                    let tree = match pages.tree(&txn) {
                        Ok(t) => t,
                        Err(Miss::Fallback) => continue,
                        Err(e) => panic!("{e:?}"),
                    };
                    let probes: Vec<Probe<'_>> = ks.iter().map(|k| Probe::new(k)).collect();
                    let mut out = vec![None; probes.len()];
                    pages.search(&tree, &probes, &mut out, false).unwrap();
                    for (k, got) in ks.iter().zip(&out) {
                        assert_eq!(*got, db.get(&txn, k).unwrap());
                    }
                }
            });
        }
    });
    assert!(depth >= 2);
}

#[test]
fn the_guess_is_a_node_of_the_page_and_follows_the_key() {
    // Against the interpolation computed in exact rationals (u128 products of the cut differences):
    // the signed conversion of the cut values must give the same node, and never node 0 or past the page.
    let mut rng = Rng::new(7);
    for _ in 0..20_000 {
        let lo = ((rng.next() as u128) << 64 | rng.next() as u128) >> rng.below(128);
        let span = (((rng.next() as u128) << 64 | rng.next() as u128) >> rng.below(128)).max(1);
        let Some(hi) = lo.checked_add(span) else { continue };
        let n = 4 + rng.below(400);
        let mut last = 0;
        for step in 0..=16u128 {
            let head = lo + span / 16 * step;
            let g = guess(lo, hi, head, n);
            assert!((1..n).contains(&g), "guess {g} of {n} nodes");
            assert!(g >= last, "the guess went back as the key grew");
            last = g;
            let cut = (128 - span.leading_zeros()).saturating_sub(53);
            let (num, den) = ((head - lo).min(span) >> cut, span >> cut);
            let exact = (num * n as u128 / den) as usize;
            // Rounding of the float division may move the answer by one node, never more.
            assert!(exact.clamp(1, n - 1).abs_diff(g) <= 1, "{g} vs {exact}");
        }
    }
    assert_eq!(guess(0, 100, 50, 3), 0, "too small a page is not guessed");
    assert_eq!(guess(100, 100, 100, 50), 0, "no span, no guess");
}

/// A request of one key (the commonest, its record on the stack): it must find what LMDB finds for
/// every key around every stored one, on evenly spread keys (the guess hits), dense clusters far apart
/// (it misses) and long keys (compared in full).
#[test]
fn one_key_searches_equal_lmdb_for_every_probe() {
    let dir = tempfile::tempdir().unwrap();
    let (env, db) = open(dir.path(), 1 << 26);
    let mut rng = Rng::new(0x5EED_0001);
    let mut stored = Vec::new();
    let mut wtxn = env.write_txn().unwrap();
    for i in 0..20_000u64 {
        let k = match i % 3 {
            0 => rng.below(1_000_000) as u64,
            1 => (1 << 40) + i,
            _ => (1 << 50) + 1000 * i,
        };
        let kb = key(1 + (i % 2) as u32, k, i % 7 == 0);
        db.put(&mut wtxn, &kb, &value(k, i % 11 == 0)).unwrap();
        stored.push(kb);
    }
    wtxn.commit().unwrap();
    let pages = Pages::open(&env, dir.path(), NAME.as_bytes()).unwrap();
    let mut hits = 0;
    for k in probes_around(&stored) {
        hits += check(&env, &db, &pages, std::slice::from_ref(&k));
    }
    assert!(hits >= stored.len() - 20, "{hits}");
    let txn = env.read_txn().unwrap();
    assert!(
        db.stat(&txn).unwrap().depth >= 3,
        "the tree needs a level below the root's children"
    );
}

/// A probe's head and masks, read as two overlapping words, equal the key's first 16 bytes copied
/// into a zeroed buffer, for every key length.
#[test]
fn a_probe_is_its_keys_first_16_bytes_and_their_mask() {
    let mut rng = Rng::new(3);
    for n in 0..=40usize {
        for _ in 0..50 {
            let key: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
            let p = Probe::new(&key);
            let m = n.min(16);
            let mut a = [0u8; 16];
            a[..m].copy_from_slice(&key[..m]);
            let head = u128::from_be_bytes(a);
            let mask = if m == 16 {
                u128::MAX
            } else {
                !(u128::MAX >> (8 * m))
            };
            assert_eq!(
                (p.head, p.hi, p.lo, p.mask_hi, p.mask_lo),
                (
                    head,
                    (head >> 64) as u64,
                    head as u64,
                    (mask >> 64) as u64,
                    mask as u64
                ),
                "{key:?}"
            );
        }
    }
}

/// Random trees of every depth from 1 to 4, with keys of every shape the search treats differently
/// (12-byte integers, which take the two-word comparisons; any length up to 16 bytes; longer keys,
/// which take the checked search; clusters far apart, where the guess misses), searched in batches of
/// every size (one key, the stack's sizes around `STACK_KEYS`, and larger) holding stored keys, their
/// neighbours that are not stored, empty keys and the same key more than once: every answer is
/// LMDB's, with the guess taken and with it off.
#[test]
fn random_trees_of_every_depth_equal_lmdb_in_batches_of_every_size() {
    let mut depths = std::collections::BTreeSet::new();
    let mut rng = Rng::new(0xB47C_4001);
    for case in 0..20u64 {
        let dir = tempfile::tempdir().unwrap();
        let (env, db) = open(dir.path(), 1 << 27);
        let shape = case % 5;
        let count = [1, 20, 300, 4000, 25_000][rng.below(5)];
        let mut stored: Vec<Vec<u8>> = Vec::new();
        let mut wtxn = env.write_txn().unwrap();
        for i in 0..count as u64 {
            let kb = match shape {
                0 => key(1 + (i % 3) as u32, rng.below(1 << 30) as u64, false),
                1 => (0..1 + rng.below(16)).map(|_| rng.below(256) as u8).collect(),
                2 => (0..17 + rng.below(44)).map(|_| rng.below(4) as u8).collect(),
                3 => key(2, (i % 4) << 50 | rng.below(1 << 20) as u64, false),
                // Long keys: few per page, so a tree of a few thousand keys is 4 levels deep.
                _ => {
                    let mut k = key(1, rng.below(1 << 30) as u64, false);
                    k.extend(std::iter::repeat_n(b'k', 240));
                    k
                }
            };
            db.put(&mut wtxn, &kb, &value(i, i % 97 == 0)).unwrap();
            stored.push(kb);
        }
        wtxn.commit().unwrap();
        let depth = {
            let txn = env.read_txn().unwrap();
            db.stat(&txn).unwrap().depth
        };
        depths.insert(depth);
        let pages = Pages::open(&env, dir.path(), NAME.as_bytes()).unwrap();
        let mut probes = Vec::new();
        for _ in 0..600 {
            let k = &stored[rng.below(stored.len())];
            probes.push(match rng.below(6) {
                0..=2 => k.clone(),
                3 => {
                    let mut m = k.clone();
                    let at = rng.below(m.len());
                    m[at] = m[at].wrapping_add(1 + rng.below(3) as u8);
                    m
                }
                4 => k[..rng.below(k.len() + 1)].to_vec(),
                _ => [k.as_slice(), &[rng.below(256) as u8]].concat(),
            });
        }
        for _ in 0..20 {
            let j = rng.below(probes.len());
            let i = rng.below(probes.len());
            probes[i] = probes[j].clone(); // the same key twice in a request
        }
        let mut rest = &probes[..];
        for rate in [256, 0] {
            pages.guess_rate.store(rate, Ordering::Relaxed);
            rest = &probes[..];
            for size in [1, 2, 7, 8, 9, 100, 1, 300] {
                let (batch, more) = rest.split_at(size.min(rest.len()));
                check(&env, &db, &pages, batch);
                rest = more;
            }
        }
        check(&env, &db, &pages, rest);
    }
    assert_eq!(
        depths.iter().copied().collect::<Vec<_>>(),
        vec![1, 2, 3, 4],
        "the trees lost a depth; the test lost its point"
    );
}
