//! The grouping layer: rows grouped by key and ordered in time within each group, the shared base of
//! the as-of join (`asof`) and of kernels that walk a key's events in time order (`window`).
//!
//! - [`ids`]: key columns -> dense u32 group ids (one dictionary, optionally probed by a second table);
//! - [`index`]: row positions grouped by id and ordered by (on, ranks..., position), built by a stable
//!   parallel counting sort (two passes when many groups would thrash the cache);
//! - [`SortedGroups`]: both in one call for one table (events alone, without labels to probe with).
//!
//! Row positions and group ids are u32 throughout, with `u32::MAX` ([`NONE`]) reserved for "no group":
//! [`check_count`] turns anything larger into a typed error before any work starts.

pub mod bucket;
pub mod ids;
pub mod index;
pub mod partition;

use arrow::array::Array;
use arrow::datatypes::DataType;

use crate::error::{Error, Result};
use crate::table::Column;
use crate::time::instant_unit;
pub use ids::{group_ids, group_ids_of, GroupIds};
pub use index::{entry_on, entry_pos, BuildStats, Index, OnSource, Ranks};

/// The id of a row in no group (a null key component or a null `on`), and the position "nothing".
pub const NONE: u32 = u32::MAX;

/// `Ok` when `n` rows (or groups) fit the layer's u32 positions and ids (below [`NONE`]); else an
/// `InvalidArgument` error naming `what` (e.g. "the right table") and telling how to split the input.
pub fn check_count(n: usize, what: &str, unit: &str) -> Result<()> {
    if n as u64 >= NONE as u64 {
        return Err(Error::InvalidArgument(format!(
            "{what} has {n} {unit}; at most {} are supported. Split it into parts (e.g. by key) and \
             process them one at a time",
            NONE - 1
        )));
    }
    Ok(())
}

/// A raw pointer shared by threads that write disjoint slots of one buffer (scatters whose destinations
/// come from prefix sums, or one slot per input row).
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(pub(crate) *mut T);
// SAFETY: the pointer is only written through `write`, whose contract keeps threads on disjoint slots;
// `T: Send` makes moving values into those slots from another thread sound.
unsafe impl<T: Send> Send for SharedMut<T> {}
// SAFETY: as above; shared references only ever perform disjoint writes.
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    pub(crate) fn new(v: &mut [T]) -> Self {
        SharedMut(v.as_mut_ptr())
    }

    /// # Safety
    /// `i` is in bounds of the allocation and no other thread reads or writes slot `i`.
    #[inline]
    pub(crate) unsafe fn write(&self, i: usize, v: T) {
        // SAFETY: the caller guarantees `i` is in bounds and exclusively this thread's.
        unsafe { self.0.add(i).write(v) }
    }
}

/// Rows whose `c` is null get id [`NONE`]: they take part in nothing.
pub fn mark_null_rows(c: &Column, ids: &mut [u32]) {
    let mut row = 0;
    for chunk in &c.chunks {
        if chunk.null_count() > 0 {
            for i in 0..chunk.len() {
                if chunk.is_null(i) {
                    ids[row + i] = NONE;
                }
            }
        }
        row += chunk.len();
    }
}

/// `Ok` when `c` can rank rows (an integer column, or a timezone-aware timestamp); `what` names its role.
pub fn check_rank_column(c: &Column, what: &str) -> Result<()> {
    match &c.data_type {
        DataType::Timestamp(..) => instant_unit(&c.name, &c.data_type, "the table").map(|_| ()),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => Ok(()),
        dt => Err(Error::Dtype(format!(
            "{what} column {:?} has type {dt}; it must be an integer or timestamp column (larger values \
             rank higher among rows with equal key and time)",
            c.name
        ))),
    }
}

/// One table's rows grouped by key, each group ordered by (on, order columns..., position): what a
/// window kernel walks. Rows with a null key or a null `on` are in no group.
pub struct SortedGroups {
    /// Each row's group id, or [`NONE`].
    pub ids: Vec<u32>,
    pub index: Index,
}

impl SortedGroups {
    /// Groups the rows by `keys` (integer, string or binary columns; none: one group) and orders each
    /// group by `on` (a timezone-aware timestamp, compared in its own unit, or an int64), then by the
    /// `order` columns (integers or timestamps; larger ranks later, null first), then by position.
    ///
    /// The rows of group `g` are `index.group(g)`, each entry giving [`entry_on`] and [`entry_pos`].
    pub fn build(keys: &[Column], on: &Column, order: &[Column]) -> Result<SortedGroups> {
        match &on.data_type {
            DataType::Timestamp(..) => {
                instant_unit(&on.name, &on.data_type, "the table")?;
            }
            DataType::Int64 => {}
            dt => {
                return Err(Error::Dtype(format!(
                    "time column {:?} has type {dt}; it must be a timezone-aware timestamp or an int64",
                    on.name
                )))
            }
        }
        for c in order {
            check_rank_column(c, "order")?;
        }
        let n = on.len();
        if keys.iter().any(|k| k.len() != n) || order.iter().any(|c| c.len() != n) {
            return Err(Error::InvalidArgument(
                "the key, time and order columns must have the same number of rows".into(),
            ));
        }
        let (mut ids, n_groups) = group_ids_of(keys, n)?;
        mark_null_rows(on, &mut ids);
        let ranks = Ranks::new(order)?;
        let index = Index::build(&ids, &OnSource::column(on, 1), n_groups, &ranks);
        Ok(SortedGroups { ids, index })
    }

    pub fn n_groups(&self) -> usize {
        self.index.n_groups()
    }

    /// The row positions of group `g` in (on, order, position) order.
    pub fn positions(&self, g: u32) -> impl Iterator<Item = u32> + '_ {
        self.index.group(g).iter().map(|&e| entry_pos(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};
    use std::sync::Arc;

    #[test]
    fn counts_at_and_above_u32_max_are_typed_errors() {
        assert!(check_count(0, "t", "rows").is_ok());
        assert!(check_count(u32::MAX as usize - 1, "t", "rows").is_ok());
        let e = check_count(u32::MAX as usize, "the right table", "rows").unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m.contains("the right table") && m.contains("Split"))
        );
        assert!(matches!(
            check_count(usize::MAX, "t", "groups"),
            Err(Error::InvalidArgument(_))
        ));
        #[cfg(target_pointer_width = "64")]
        assert!(check_count(u32::MAX as usize + 1, "t", "rows").is_err());
    }

    fn col(name: &str, a: ArrayRef) -> Column {
        Column {
            name: name.into(),
            data_type: a.data_type().clone(),
            chunks: vec![a.slice(0, 2), a.slice(2, a.len() - 2)],
        }
    }

    #[test]
    fn sorted_groups_order_each_key_by_time_then_order_columns() {
        let keys = [col(
            "k",
            Arc::new(StringArray::from(vec![
                Some("b"),
                Some("a"),
                Some("b"),
                None,
                Some("a"),
                Some("b"),
                Some("b"),
            ])),
        )];
        let on = col(
            "t",
            Arc::new(
                TimestampMillisecondArray::from(vec![
                    Some(5),
                    Some(9),
                    Some(5),
                    Some(1),
                    Some(2),
                    None,
                    Some(3),
                ])
                .with_timezone("UTC"),
            ),
        );
        let seq = [col("seq", Arc::new(Int64Array::from(vec![7, 0, 2, 0, 0, 0, 0])))];
        let g = SortedGroups::build(&keys, &on, &seq).unwrap();
        assert_eq!(g.n_groups(), 2);
        let b = g.ids[0];
        assert_eq!((g.ids[3], g.ids[5]), (NONE, NONE));
        // b: t=3 (6), then the two t=5 rows by seq: 2 (row 2) before 7 (row 0).
        assert_eq!(g.positions(b).collect::<Vec<_>>(), vec![6, 2, 0]);
        assert_eq!(g.positions(g.ids[1]).collect::<Vec<_>>(), vec![4, 1]);
        let float = col("f", Arc::new(arrow::array::Float64Array::from(vec![0.0; 7])));
        assert!(matches!(
            SortedGroups::build(&keys, &float, &[]),
            Err(Error::Dtype(_))
        ));
        assert!(matches!(
            SortedGroups::build(&keys, &on, &[float]),
            Err(Error::Dtype(_))
        ));
    }
}
