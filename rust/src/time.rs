//! Timestamps are instants: a timestamp column must carry a timezone, and the store's canonical unit is
//! UTC microseconds. Arrow keeps timestamps as UTC counts whatever the zone, so converting a zone is
//! free; only the unit changes the numbers.

use arrow::datatypes::{DataType, TimeUnit};

use crate::error::{Error, Result};

/// The unit of an instant column, or a typed error: `NaiveTimestamp` for a column with no timezone,
/// `Dtype` for a column that is not a timestamp at all.
pub fn instant_unit(name: &str, dt: &DataType, what: &str) -> Result<TimeUnit> {
    match dt {
        DataType::Timestamp(unit, Some(_)) => Ok(*unit),
        DataType::Timestamp(_, None) => Err(Error::NaiveTimestamp(format!(
            "column {name:?} of {what} is a timestamp without a timezone, so it is not an instant. \
             Attach the zone it was recorded in, e.g. pyarrow.compute.assume_timezone(col, 'UTC'), \
             polars .dt.replace_time_zone('UTC') or pandas .dt.tz_localize('UTC')"
        ))),
        other => Err(Error::Dtype(format!(
            "column {name:?} of {what} has type {other}, expected a timezone-aware timestamp"
        ))),
    }
}

/// How many ticks of `unit` make one second.
pub fn ticks_per_second(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    }
}

/// Converts a count of `unit` ticks to microseconds. Finer units are floored (an instant in the first
/// nanoseconds of a microsecond belongs to that microsecond); coarser ones are scaled exactly, or `None`
/// when the result does not fit in an i64.
pub fn to_micros(v: i64, unit: TimeUnit) -> Option<i64> {
    match unit {
        TimeUnit::Nanosecond => Some(v.div_euclid(1_000)),
        TimeUnit::Microsecond => Some(v),
        TimeUnit::Millisecond => v.checked_mul(1_000),
        TimeUnit::Second => v.checked_mul(1_000_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naive_and_non_timestamps_are_rejected_with_their_own_errors() {
        let naive = DataType::Timestamp(TimeUnit::Microsecond, None);
        assert!(matches!(
            instant_unit("t", &naive, "left"),
            Err(Error::NaiveTimestamp(_))
        ));
        assert!(matches!(
            instant_unit("t", &DataType::Int64, "left"),
            Err(Error::Dtype(_))
        ));
        let aware = DataType::Timestamp(TimeUnit::Nanosecond, Some("Europe/Tallinn".into()));
        assert_eq!(instant_unit("t", &aware, "left").unwrap(), TimeUnit::Nanosecond);
    }

    #[test]
    fn micros_floor_finer_units_and_check_coarser_ones() {
        assert_eq!(to_micros(-1, TimeUnit::Nanosecond), Some(-1));
        assert_eq!(to_micros(1_999, TimeUnit::Nanosecond), Some(1));
        assert_eq!(to_micros(3, TimeUnit::Second), Some(3_000_000));
        assert_eq!(to_micros(i64::MAX / 10, TimeUnit::Second), None);
        assert_eq!(ticks_per_second(TimeUnit::Millisecond), 1_000);
    }
}
