//! The physical floor of an online lookup: LMDB's own cost (`mdb_get` in a Rust loop, no Python, no
//! decoding) beside the direct batched search of the serving path (`online::direct`) and the serving
//! plan called from Rust, over the workload of `benches/compare_serving.py` (100k keys x 5 float64, 100
//! random keys per batch). Prints ns per key.
//!
//!     cargo run --release --example lmdb_floor

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use skewless::error::{Error, Result};
use skewless::online::direct::Probe;
use skewless::online::{key, read, write, Store, WriteSpec};
use skewless::serve::{KeyColumn, KeyValues, PartSpec, Plan, Request};
use skewless::table::Table;

const N: i64 = 100_000;
const BATCHES: usize = 2_000;

/// xorshift: a fixed stream of keys without another dependency.
struct Rng(u64);
impl Rng {
    fn key(&mut self) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % N as u64) as i64
    }
}

fn p50(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("skewless-floor-{}", std::process::id()));
    let store = Store::open(&dir, Some(1 << 28), None)?;
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ];
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..N)),
        Arc::new(
            TimestampMicrosecondArray::from(vec![1_700_000_000_000_000; N as usize]).with_timezone("UTC"),
        ),
    ];
    for j in 0..5 {
        fields.push(Field::new(format!("f{j}"), DataType::Float64, true));
        cols.push(Arc::new(Float64Array::from_iter_values(
            (0..N).map(|i| (i * 5 + j) as f64),
        )));
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), cols).map_err(skewless::error::Error::from)?;
    let keys = ["id".to_string()];
    let spec = WriteSpec {
        keys: &keys,
        timestamp: "ts",
        created: None,
    };
    write(&store, "v", &Table::new(schema, vec![batch]), &spec)?;
    let prefix = store.view_prefix("v")?.unwrap_or_default();
    let data = store.data();

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let batches: Vec<Vec<i64>> = (0..BATCHES)
        .map(|_| (0..100).map(|_| rng.key()).collect())
        .collect();
    let encode = |k: i64| {
        let mut b = prefix.to_vec();
        key::push_i64(&mut b, k);
        b
    };

    // mdb_get over 100 keys in one read transaction (request order, then sorted), and one key per
    // transaction: the floor under any binding.
    let floor = |sorted: bool| -> Result<f64> {
        let mut per = Vec::with_capacity(BATCHES);
        for b in &batches {
            let mut ks: Vec<Vec<u8>> = b.iter().map(|&k| encode(k)).collect();
            if sorted {
                ks.sort_unstable();
            }
            let t = Instant::now();
            let found = store.read(|txn| {
                let mut n = 0usize;
                for k in &ks {
                    n += data
                        .get(txn, k)
                        .map_err(skewless::online::env::storage)?
                        .map_or(0, |v| v.len());
                }
                Ok(n)
            })?;
            per.push(t.elapsed().as_nanos() as f64 / 100.0);
            assert!(found > 0);
        }
        Ok(p50(per))
    };
    // The direct batched search (`online::direct`) over the same keys, no decoding.
    let direct = || -> Result<f64> {
        let mut per = Vec::with_capacity(BATCHES);
        for b in &batches {
            let ks: Vec<Vec<u8>> = b.iter().map(|&k| encode(k)).collect();
            let probes: Vec<Probe<'_>> = ks.iter().map(|k| Probe::new(k)).collect();
            let t = Instant::now();
            let found = store.read_pages(|txn, pages| {
                let mut out = vec![None; probes.len()];
                read::fetch(&data, txn, pages, &probes, &mut out)?;
                Ok(out.iter().map(|v| v.map_or(0, |v| v.len())).sum::<usize>())
            })?;
            per.push(t.elapsed().as_nanos() as f64 / 100.0);
            assert!(found > 0);
        }
        Ok(p50(per))
    };
    // The same search over ONE batch of keys again and again: its pages stay in the cache, so what is
    // left is the search's own work per key (the difference to `direct` is waiting for memory).
    let cached = || -> Result<f64> {
        let ks: Vec<Vec<u8>> = batches[0].iter().map(|&k| encode(k)).collect();
        let probes: Vec<Probe<'_>> = ks.iter().map(|k| Probe::new(k)).collect();
        let mut per = Vec::with_capacity(BATCHES);
        for _ in 0..BATCHES {
            let t = Instant::now();
            store.read_pages(|txn, pages| {
                let mut out = vec![None; probes.len()];
                read::fetch(&data, txn, pages, &probes, &mut out)
            })?;
            per.push(t.elapsed().as_nanos() as f64 / 100.0);
        }
        Ok(p50(per))
    };
    // The memory system's own floor: one byte of each of 100 random pages of the data file, read
    // through a map of it with independent loads (a search needs several dependent lines per page).
    let touch = || -> Result<f64> {
        let bytes = std::fs::read(dir.join("data.mdb")).map_err(|e| Error::Internal(e.to_string()))?;
        let pages = bytes.len() / 4096;
        let mut r = Rng(0x2545_F491_4F6C_DD1D);
        let mut per = Vec::with_capacity(BATCHES);
        let mut sum = 0u64;
        for _ in 0..BATCHES {
            let at: Vec<usize> = (0..100)
                .map(|_| (r.key() as usize % pages) * 4096 + (r.key() as usize % 64) * 64)
                .collect();
            let t = Instant::now();
            for &i in &at {
                sum = sum.wrapping_add(u64::from(std::hint::black_box(bytes[i])));
            }
            per.push(t.elapsed().as_nanos() as f64 / 100.0);
        }
        std::hint::black_box(sum);
        Ok(p50(per))
    };
    let direct = direct()?;
    let cached = cached()?;
    let touch = touch()?;
    let unsorted = floor(false)?;
    let sorted = floor(true)?;
    let mut one = Vec::with_capacity(BATCHES * 10);
    let mut one_direct = Vec::with_capacity(BATCHES * 10);
    // Separate passes over other keys: a lookup right after another of the same key finds its pages in
    // cache (both maps share the file's page cache).
    for b in &batches {
        for &k in &b[10..20] {
            let kb = encode(k);
            let probe = [Probe::new(&kb)];
            let t = Instant::now();
            // The search itself, as `read::fetch` runs it for a one-key request.
            let n = store.read_pages(|txn, pages| {
                let declined = || Error::Internal("the direct search declined".into());
                let p = pages.ok_or_else(declined)?;
                let mut out = [None];
                p.tree(txn)
                    .and_then(|t| p.search(&t, &probe, &mut out, false))
                    .map_err(|_| declined())?;
                Ok(out[0].map_or(0, |v| v.len()))
            })?;
            one_direct.push(t.elapsed().as_nanos() as f64);
            assert!(n > 0);
        }
    }
    for b in &batches {
        for &k in &b[..10] {
            let kb = encode(k);
            let t = Instant::now();
            let n = store.read(|txn| {
                Ok(data
                    .get(txn, &kb)
                    .map_err(skewless::online::env::storage)?
                    .map_or(0, |v| v.len()))
            })?;
            one.push(t.elapsed().as_nanos() as f64);
            assert!(n > 0);
        }
    }

    // The serving plan from Rust: keys given as values, checked, encoded, sorted, looked up, decoded.
    let plan = Plan::new(
        store.clone(),
        vec![PartSpec {
            view: "v".into(),
            keys: vec!["id".into()],
            columns: (0..5).map(|j| format!("f{j}")).collect(),
            ttl_micros: None,
            version: 1,
            declared: vec![DataType::Float64; 5],
            window: None,
        }],
    )?;
    let mut values = vec![0.0; 500];
    let mut status = vec![0i8; 100];
    let mut per = Vec::with_capacity(BATCHES);
    for b in &batches {
        let req = Request {
            n: 100,
            cols: vec![KeyColumn {
                values: KeyValues::Int(b.iter().map(|&k| k.into()).collect()),
                valid: vec![],
            }],
        };
        let t = Instant::now();
        plan.get_f64(&req, 1_800_000_000_000_000, &mut values, &mut status)?;
        per.push(t.elapsed().as_nanos() as f64 / 100.0);
    }
    // One key through the plan: what a one-key `get_numpy` costs below the binding.
    let mut one_plan = Vec::with_capacity(BATCHES * 10);
    let (mut v1, mut s1) = ([0.0; 5], [0i8; 1]);
    for b in &batches {
        for &k in &b[20..30] {
            let req = Request {
                n: 1,
                cols: vec![KeyColumn {
                    values: KeyValues::Int(vec![k.into()]),
                    valid: vec![],
                }],
            };
            let t = Instant::now();
            plan.get_f64(&req, 1_800_000_000_000_000, &mut v1, &mut s1)?;
            one_plan.push(t.elapsed().as_nanos() as f64);
        }
    }
    // An empty read transaction, begun and ended through heed as every request's is: the part of a
    // one-key call that a kept, reset and renewed transaction would shrink.
    let mut empty = Vec::with_capacity(BATCHES * 10);
    for _ in 0..BATCHES * 10 {
        let t = Instant::now();
        store.read(|txn| Ok(std::hint::black_box(txn).id()))?;
        empty.push(t.elapsed().as_nanos() as f64);
    }
    println!("| LMDB floor (Rust, heed mdb_get, no decoding) | ns per key |");
    println!("| --- | ---: |");
    println!("| 100 random keys, one read txn, request order | {unsorted:.0} |");
    println!("| 100 random keys, one read txn, keys sorted first | {sorted:.0} |");
    println!("| one key in its own read txn | {:.0} |", p50(one));
    println!(
        "| one key in its own read txn, direct search | {:.0} |",
        p50(one_direct)
    );
    println!("| 100 random keys, one read txn, direct batched search (online::direct) | {direct:.0} |");
    println!("| the same search, one batch of 100 keys repeated (its pages cached) | {cached:.0} |");
    println!("| one byte of each of 100 random pages of the data file (a copy in memory), independent loads | {touch:.0} |");
    println!(
        "| serving plan get_f64 (100 keys: check, encode, direct search, crc, decode 5 f64) | {:.0} |",
        p50(per)
    );
    println!(
        "| serving plan get_f64, one key per call | {:.0} |",
        p50(one_plan)
    );
    println!(
        "| an empty read transaction (heed's begin and end) | {:.0} |",
        p50(empty)
    );
    drop(plan);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
