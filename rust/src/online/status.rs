//! Lookup statuses and the rule that assigns them: the one definition. Python's
//! `skewless.online.Status` takes its values from here (`skewless._core.STATUS_CODES`).
//!
//! At a request instant `t` a stored value with event timestamp `ts` is:
//! - `NOT_YET_VALID` when `ts > t`: the online store keeps only the latest value, so it cannot answer for
//!   an instant before it, and serving it would leak the future (the point-in-time join at `t` never
//!   sees it either);
//! - `EXPIRED` when `ts < t - ttl` (the boundary itself is present, as in the join's tolerance);
//! - `PRESENT` otherwise.
//!
//! A key with no stored value (or a null key) is `NOT_FOUND`. Every status but `PRESENT` reads as null.
//!
//! `IMPUTED` is set after the lookup, by the serving plan's post-stage (`crate::serve::transform`): in a
//! row where a value of the view was missing (for any of the reasons above, or a stored null) and its
//! imputation strategy filled it.

pub const PRESENT: i8 = 0;
pub const NOT_FOUND: i8 = 1;
pub const EXPIRED: i8 = 2;
pub const NOT_YET_VALID: i8 = 3;
pub const IMPUTED: i8 = 4;

/// Every status, by name, in code order.
pub const ALL: [(&str, i8); 5] = [
    ("PRESENT", PRESENT),
    ("NOT_FOUND", NOT_FOUND),
    ("EXPIRED", EXPIRED),
    ("NOT_YET_VALID", NOT_YET_VALID),
    ("IMPUTED", IMPUTED),
];

/// The request instant and the expiry cut-off derived from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub as_of: i64,
    /// `as_of - ttl`; `None` without a TTL (nothing expires).
    pub cutoff: Option<i64>,
}

impl Window {
    /// The window of a request at `as_of` (UTC microseconds) for a view with `ttl` (microseconds, >= 0).
    pub fn new(as_of: i64, ttl: Option<i64>) -> Window {
        Window {
            as_of,
            cutoff: ttl.map(|t| as_of.saturating_sub(t)),
        }
    }

    /// The status of a stored value with event timestamp `ts`.
    #[inline]
    pub fn status(&self, ts: i64) -> i8 {
        if ts > self.as_of {
            NOT_YET_VALID
        } else if self.cutoff.is_some_and(|c| ts < c) {
            EXPIRED
        } else {
            PRESENT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn future_values_are_not_yet_valid_with_or_without_ttl_and_boundaries_are_present() {
        let w = Window::new(100, None);
        assert_eq!(w.status(100), PRESENT);
        assert_eq!(w.status(101), NOT_YET_VALID);
        assert_eq!(w.status(i64::MIN), PRESENT);
        let w = Window::new(100, Some(10));
        assert_eq!(w.status(90), PRESENT);
        assert_eq!(w.status(89), EXPIRED);
        assert_eq!(w.status(100), PRESENT);
        assert_eq!(w.status(101), NOT_YET_VALID);
        // A huge ttl saturates instead of wrapping.
        assert_eq!(
            Window::new(i64::MIN + 5, Some(i64::MAX)).status(i64::MIN),
            PRESENT
        );
        let codes: Vec<i8> = ALL.iter().map(|(_, c)| *c).collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4]);
    }
}
