//! `write`: validate the whole batch, keep one winner per key in Rust, then one read-compare-put per
//! distinct key in key order inside one LMDB transaction.

use crate::error::{Error, Result};
use crate::online::cells::{Cells, Chunk};
use heed::RwTxn;

use crate::online::env::{check_view_name, put_schema, read_schema, schema_key, Db, Store, TxnError};
use crate::online::key;
use crate::online::schema::{ColumnDef, Kind, ViewSchema};
use crate::online::value::{damaged, Stamp};
use crate::table::Table;
use crate::time::instant_unit;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    pub rows_written: usize,
    pub rows_skipped: usize,
}

/// Column names of one write.
pub struct WriteSpec<'a> {
    pub keys: &'a [String],
    pub timestamp: &'a str,
    pub created: Option<&'a str>,
}

/// The schema a write implies: its key columns, and every other column except the timestamps as values.
pub fn infer_schema(table: &Table, spec: &WriteSpec<'_>) -> Result<ViewSchema> {
    if spec.keys.is_empty() {
        return Err(Error::InvalidArgument(
            "keys is empty; name at least one key column".into(),
        ));
    }
    for (i, k) in spec.keys.iter().enumerate() {
        if spec.keys[..i].contains(k) {
            return Err(Error::InvalidArgument(format!(
                "key column {k:?} is listed twice in keys"
            )));
        }
        if k == spec.timestamp || Some(k.as_str()) == spec.created {
            return Err(Error::InvalidArgument(format!(
                "column {k:?} is both a key and a timestamp; name different columns"
            )));
        }
    }
    if Some(spec.timestamp) == spec.created {
        return Err(Error::InvalidArgument(
            "timestamp and created_timestamp name the same column; name different columns".into(),
        ));
    }
    let ts = table.column(spec.timestamp, "data")?;
    instant_unit(&ts.name, &ts.data_type, "data")?;
    if let Some(c) = spec.created {
        let c = table.column(c, "data")?;
        instant_unit(&c.name, &c.data_type, "data")?;
    }
    let mut keys = Vec::new();
    for k in spec.keys {
        let col = table.column(k, "data")?;
        let kind = Kind::of(&col.data_type)
            .filter(Kind::is_key_kind)
            .ok_or_else(|| {
                Error::Dtype(format!(
                    "key column {k:?} has type {}; keys must be integers, strings or binary. Cast the column",
                    col.data_type
                ))
            })?;
        keys.push(ColumnDef {
            name: k.clone(),
            kind,
        });
    }
    let mut values = Vec::new();
    for f in table.schema.fields() {
        let n = f.name().as_str();
        if spec.keys.iter().any(|k| k == n) || n == spec.timestamp || Some(n) == spec.created {
            continue;
        }
        if let arrow::datatypes::DataType::Timestamp(_, None) = f.data_type() {
            instant_unit(n, f.data_type(), "data")?;
        }
        let kind = Kind::of(f.data_type()).ok_or_else(|| {
            Error::Dtype(format!(
                "value column {n:?} has type {}, which the online store cannot store; supported: int8..int64, \
                 uint8..uint64, float32/64, bool, string, binary, timestamp with a timezone, \
                 fixed_size_list<float32|float64>. Cast or drop the column",
                f.data_type()
            ))
        })?;
        if values.iter().any(|c: &ColumnDef| c.name == n) {
            return Err(Error::ColumnClash(format!(
                "column {n:?} appears twice in data; rename one"
            )));
        }
        values.push(ColumnDef {
            name: n.to_string(),
            kind,
        });
    }
    Ok(ViewSchema::new(keys, values))
}

/// Appends the encoded key of `row` (of `chunks`, one per key column) to `out`; false on a null key.
#[inline]
pub fn encode_key(chunks: &[Chunk<'_>], row: usize, out: &mut Vec<u8>) -> bool {
    let n = chunks.len();
    for (i, c) in chunks.iter().enumerate() {
        if c.is_null(row) {
            return false;
        }
        if let Some(v) = c.i64_at(row) {
            key::push_i64(out, v);
        } else if let Some(v) = c.u64_at(row) {
            key::push_u64(out, v);
        } else if let Some(b) = c.bytes_at(row) {
            key::push_bytes(out, b, i + 1 == n);
        }
    }
    true
}

struct Row {
    key: (u32, u32),
    stamp: Stamp,
    batch: u32,
    row: u32,
}

/// Writes `table` into `view`. Every check runs before LMDB is touched; the schema is checked again
/// inside the transaction, so a concurrent first write by another process cannot slip a different one in.
pub fn write(store: &Store, view: &str, table: &Table, spec: &WriteSpec<'_>) -> Result<WriteStats> {
    let mut out = write_many(store, &[(view, table, spec)])?;
    Ok(out.remove(0))
}

/// Writes each `(view, table, spec)` as [`write`] does, all in ONE transaction: every view's rows land
/// or none do. A view's records that must never be out of step with another's (the last non-null
/// values of the `previous` imputation beside the latest rows) are written this way.
pub fn write_many(store: &Store, items: &[(&str, &Table, &WriteSpec<'_>)]) -> Result<Vec<WriteStats>> {
    let Some(&(first, _, _)) = items.first() else {
        return Ok(Vec::new());
    };
    let mut preps = Vec::with_capacity(items.len());
    for &(view, table, spec) in items {
        check_view_name(view)?;
        preps.push(prepare(store, view, table, spec)?);
    }
    let mut buf = Vec::new();
    let mut kbuf = Vec::with_capacity(64);
    let written = store.write(first, |wtxn, db, meta, prefix| {
        let mut out = Vec::with_capacity(preps.len());
        for (i, p) in preps.iter().enumerate() {
            let prefix = if i == 0 {
                prefix
            } else {
                store.view_prefix_rw(wtxn, p.view)?
            };
            out.push(apply(p, wtxn, db, meta, prefix, &mut buf, &mut kbuf)?);
        }
        Ok::<_, TxnError>(out)
    })?;
    Ok(preps
        .iter()
        .zip(written)
        .map(|(p, w)| WriteStats {
            rows_written: w,
            rows_skipped: p.rows.len() - w,
        })
        .collect())
}

/// One write's checked rows and per-key winners, before the transaction.
struct Prepared<'a> {
    view: &'a str,
    table: &'a Table,
    schema: ViewSchema,
    arena: Vec<u8>,
    rows: Vec<Row>,
    winners: Vec<u32>,
}

fn prepare<'a>(store: &Store, view: &'a str, table: &'a Table, spec: &WriteSpec<'_>) -> Result<Prepared<'a>> {
    let schema = infer_schema(table, spec)?;
    if let Some(stored) = store.schema(view)? {
        stored.conform(&schema, view)?;
    }

    // Encode every key and stamp (errors on nulls before any write).
    let ts_idx = table
        .schema
        .index_of(spec.timestamp)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let created_idx = match spec.created {
        Some(c) => Some(
            table
                .schema
                .index_of(c)
                .map_err(|e| Error::Internal(e.to_string()))?,
        ),
        None => None,
    };
    let key_idx: Vec<usize> = spec
        .keys
        .iter()
        .map(|k| {
            table
                .schema
                .index_of(k)
                .map_err(|e| Error::Internal(e.to_string()))
        })
        .collect::<Result<_>>()?;
    check_no_null_elements(table, &schema)?;
    let n = table.num_rows();
    let mut arena: Vec<u8> = Vec::with_capacity(n * 9);
    let mut rows: Vec<Row> = Vec::with_capacity(n);
    let mut base = 0usize;
    for (b, batch) in table.batches.iter().enumerate() {
        let keys: Vec<Chunk> = key_idx
            .iter()
            .map(|&i| Chunk::new(batch.column(i)))
            .collect::<Result<_>>()?;
        let ts = Chunk::new(batch.column(ts_idx))?;
        let created = match created_idx {
            Some(i) => Some(Chunk::new(batch.column(i))?),
            None => None,
        };
        for r in 0..batch.num_rows() {
            let start = arena.len();
            if !encode_key(&keys, r, &mut arena) {
                let col = key_idx
                    .iter()
                    .zip(&keys)
                    .find(|(_, c)| c.is_null(r))
                    .map(|(&i, _)| table.schema.field(i).name().clone())
                    .unwrap_or_default();
                return Err(Error::NullKey(format!(
                    "key column {col:?} is null at row {}; every row written to the online store needs a key. \
                     Drop or fill those rows first",
                    base + r
                )));
            }
            key::check_len(&arena[start..])?;
            if arena.len() == start {
                return Err(Error::InvalidArgument(format!(
                    "row {} has an empty key (an empty string or bytes); LMDB cannot store an empty key. \
                     Drop those rows or give them a key",
                    base + r
                )));
            }
            if ts.is_null(r) {
                return Err(Error::InvalidArgument(format!(
                    "timestamp column {:?} is null at row {}; every row needs an event timestamp. Drop or fill \
                     those rows first",
                    spec.timestamp,
                    base + r
                )));
            }
            let t = ts
                .micros_at(r)
                .ok_or_else(|| out_of_range(spec.timestamp, base + r))?;
            let c = match &created {
                Some(c) if !c.is_null(r) => Some(
                    c.micros_at(r)
                        .ok_or_else(|| out_of_range(spec.created.unwrap_or(""), base + r))?,
                ),
                _ => None,
            };
            let end = arena.len();
            if end > u32::MAX as usize {
                return Err(Error::InvalidArgument(
                    "one write's keys add up to more than 4 GiB; split the data into smaller writes".into(),
                ));
            }
            rows.push(Row {
                key: (start as u32, end as u32),
                stamp: (t, c),
                batch: b as u32,
                row: r as u32,
            });
        }
        base += batch.num_rows();
    }

    // One winner per key: sort by (key, stamp, input position) and keep the last of each key. Entries
    // carry the key's first 8 bytes inline so most comparisons never touch the arena (an int key is
    // exactly 8 bytes, so for it they never do).
    let kb = |r: &Row| &arena[r.key.0 as usize..r.key.1 as usize];
    let mut order: Vec<(u64, u32)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let k = kb(r);
            let mut head = [0u8; 8];
            let m = k.len().min(8);
            head[..m].copy_from_slice(&k[..m]);
            (u64::from_be_bytes(head), i as u32)
        })
        .collect();
    let cmp = |a: &(u64, u32), b: &(u64, u32)| {
        a.0.cmp(&b.0).then_with(|| {
            let (ra, rb) = (&rows[a.1 as usize], &rows[b.1 as usize]);
            kb(ra)
                .cmp(kb(rb))
                .then(ra.stamp.cmp(&rb.stamp))
                .then(a.1.cmp(&b.1))
        })
    };
    if order.len() >= 1 << 16 {
        use rayon::slice::ParallelSliceMut;
        order.par_sort_unstable_by(cmp);
    } else {
        order.sort_unstable_by(cmp);
    }
    let mut winners: Vec<u32> = Vec::with_capacity(order.len());
    for (i, &(_, r)) in order.iter().enumerate() {
        let last = order.get(i + 1).is_none_or(|&(head, next)| {
            head != order[i].0 || kb(&rows[next as usize]) != kb(&rows[r as usize])
        });
        if last {
            winners.push(r);
        }
    }

    Ok(Prepared {
        view,
        table,
        schema,
        arena,
        rows,
        winners,
    })
}

/// Puts `p`'s winners that are newer than the stored rows, inside the caller's transaction; returns how
/// many it put.
fn apply(
    p: &Prepared<'_>,
    wtxn: &mut RwTxn,
    db: &Db,
    meta: &Db,
    prefix: [u8; 4],
    buf: &mut Vec<u8>,
    kbuf: &mut Vec<u8>,
) -> Result<usize, TxnError> {
    let (view, table, schema, rows, arena) = (p.view, p.table, &p.schema, &p.rows, &p.arena);
    let kb = |r: &Row| &arena[r.key.0 as usize..r.key.1 as usize];
    // The value columns' chunks, resolved once per batch, in the order the view records (or will record).
    let stored_or_new = |stored: &Option<ViewSchema>| -> Result<(ViewSchema, Vec<usize>)> {
        match stored {
            Some(s) => Ok((s.clone(), s.conform(schema, view)?)),
            None => Ok((schema.clone(), (0..schema.values.len()).collect())),
        }
    };
    let skey = schema_key(view);
    {
        let stored = read_schema(meta, wtxn, &skey)?;
        let (vs, order_map) = stored_or_new(&stored)?;
        if stored.is_none() {
            put_schema(meta, wtxn, &skey, &vs)?;
        }
        let layout = vs.layout()?;
        let value_idx: Vec<usize> = order_map
            .iter()
            .map(|&j| {
                table
                    .schema
                    .index_of(&schema.values[j].name)
                    .map_err(|e| Error::Internal(e.to_string()))
            })
            .collect::<Result<_>>()?;
        let chunks: Vec<Vec<Chunk>> = table
            .batches
            .iter()
            .map(|b| {
                value_idx
                    .iter()
                    .map(|&i| Chunk::new(b.column(i)))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        let mut written = 0usize;
        for &w in &p.winners {
            let row = &rows[w as usize];
            kbuf.clear();
            kbuf.extend_from_slice(&prefix);
            kbuf.extend_from_slice(kb(row));
            let k = kbuf.as_slice();
            if let Some(old) = db.get(wtxn, k)? {
                // A damaged stored value fails the whole write: its stamp cannot be trusted to decide
                // whether this row is newer.
                let old = layout.check(k, old).map_err(|_| damaged(view))?;
                if layout.stamp(old) >= row.stamp {
                    continue;
                }
            }
            layout.encode(&chunks[row.batch as usize], row.row as usize, row.stamp, k, buf)?;
            db.put(wtxn, k, buf)?;
            written += 1;
        }
        Ok(written)
    }
}

/// Refuses a null element inside a (non-null) fixed-size list. The value layout keeps one validity bit
/// per column, not per element, so such an element could only come back as NaN, while the history (and
/// so a training set) keeps it null: the two paths would disagree. A whole null list is fine.
fn check_no_null_elements(table: &Table, schema: &ViewSchema) -> Result<()> {
    for c in &schema.values {
        if !matches!(c.kind, Kind::ListF32(_) | Kind::ListF64(_)) {
            continue;
        }
        let i = table
            .schema
            .index_of(&c.name)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mut base = 0usize;
        for batch in &table.batches {
            let chunk = Chunk::new(batch.column(i))?;
            let (n, elems) = match &chunk.cells {
                Cells::ListF32(_, n, m) | Cells::ListF64(_, n, m) => (*n, *m),
                _ => (0, None),
            };
            if let Some(m) = elems.filter(|m| m.null_count() > 0) {
                for r in 0..batch.num_rows() {
                    if !chunk.is_null(r) && (0..n).any(|k| m.is_null(r * n + k)) {
                        return Err(Error::InvalidArgument(format!(
                            "value column {:?} has a null element inside the array at row {}; arrays are \
                             stored whole, without per-element nulls. Fill the element (e.g. with NaN) or \
                             make the whole array null",
                            c.name,
                            base + r
                        )));
                    }
                }
            }
            base += batch.num_rows();
        }
    }
    Ok(())
}

fn out_of_range(col: &str, row: usize) -> Error {
    Error::InvalidArgument(format!(
        "timestamp column {col:?} at row {row} does not fit in microseconds since 1970; use dates within about \
         292,000 years of 1970"
    ))
}
