//! The due times a timer may have: one range, the same on every timer store.

use std::ops::RangeInclusive;

use chrono::{DateTime, Utc};

/// The earliest accepted due time, `1970-01-01T00:00:00Z` (as a Unix timestamp in seconds).
const EARLIEST_SECS: i64 = 0;
/// The latest accepted due time, `9999-12-31T23:59:59.999999Z` (as a Unix timestamp in seconds, plus the
/// microseconds below).
const LATEST_SECS: i64 = 253_402_300_799;
const LATEST_NANOS: u32 = 999_999_000;

/// The due times every timer store keeps: from `1970-01-01T00:00:00Z` to `9999-12-31T23:59:59.999999Z`,
/// inclusive. A timer due outside it is refused with [`Error::DueOutOfRange`](crate::Error::DueOutOfRange)
/// before any store sees it.
///
/// Why these ends: chrono accepts years from -262,143 to 262,142, PostgreSQL's `timestamptz` only 4713 BC to
/// 294,276 AD, and a client's own date type often less (four-digit years, no sign). One range that every store
/// and every client can hold keeps a due time from being accepted on one backend and refused on another; a due
/// time in the past fires at once, so nothing earlier than 1970 is ever needed.
///
/// ```
/// use annals_process::timer_due_range;
/// use chrono::{DateTime, Utc};
///
/// let at = |text: &str| text.parse::<DateTime<Utc>>().unwrap();
/// let range = timer_due_range();
/// assert_eq!(range.start().to_rfc3339(), "1970-01-01T00:00:00+00:00");
/// assert!(!range.contains(&at("-5000-01-01T00:00:00Z")));
/// assert!(range.contains(&at("9999-12-31T23:59:59Z")));
/// ```
pub fn timer_due_range() -> RangeInclusive<DateTime<Utc>> {
    let earliest = DateTime::from_timestamp(EARLIEST_SECS, 0).unwrap_or(DateTime::UNIX_EPOCH);
    let latest = DateTime::from_timestamp(LATEST_SECS, LATEST_NANOS).unwrap_or(earliest);
    earliest..=latest
}

/// The range as text, for error messages: `1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z`.
pub(crate) fn describe() -> String {
    let range = timer_due_range();
    let show = |at: &DateTime<Utc>| at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    format!("{} to {}", show(range.start()), show(range.end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_is_1970_to_the_end_of_9999() {
        let range = timer_due_range();
        assert_eq!(range.end().to_rfc3339(), "9999-12-31T23:59:59.999999+00:00");
        assert_eq!(describe(), "1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z");
    }
}
