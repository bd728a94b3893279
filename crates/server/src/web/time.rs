//! UTC dates for display and for query parameters, by chrono.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime};

/// Days since 1970-01-01 → (year, month, day); 1970-01-01 for a day chrono cannot represent.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let d = days
        .checked_mul(86_400)
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .unwrap_or_default()
        .date_naive();
    (i64::from(d.year()), d.month(), d.day())
}

/// `2024-07-23 10:04:05` (UTC).
pub fn format_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// `2024-07-23` for a day number.
pub fn format_day(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parses a time bound from a query: milliseconds since the epoch, or a UTC date
/// `YYYY-MM-DD` optionally followed by `T` or a space and `HH:MM[:SS]` (a trailing `Z` is
/// accepted). A date alone means its first millisecond, or its last with `end_of_day`.
pub fn parse_time(s: &str, end_of_day: bool) -> Result<i64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| format!("time out of range: {s:?}"));
    }
    let bad = || format!("bad time {s:?}: use YYYY-MM-DD[THH:MM[:SS]] (UTC) or epoch milliseconds");
    let t = s.strip_suffix('Z').unwrap_or(s);
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        let start = d
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis();
        return Ok(if end_of_day {
            start + 86_400_000 - 1
        } else {
            start
        });
    }
    [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
    .map(|t| t.and_utc().timestamp_millis())
    .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_parses() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_927), (2024, 7, 23));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(format_day(11_016), "2000-02-29");
        assert_eq!(format_ms(0), "1970-01-01 00:00:00");
        let t = parse_time("2024-07-23T10:04:05Z", false).unwrap();
        assert_eq!(format_ms(t), "2024-07-23 10:04:05");
        assert_eq!(parse_time("2024-07-23", false).unwrap() % 86_400_000, 0);
        assert_eq!(
            parse_time("2024-07-23", true).unwrap() - parse_time("2024-07-23", false).unwrap(),
            86_400_000 - 1
        );
        assert_eq!(
            parse_time("1721729045000", false).unwrap(),
            1_721_729_045_000
        );
        for bad in [
            "",
            "2024-13-01",
            "yesterday",
            "2024-07-23T25:00",
            "2024-07-23-1",
        ] {
            assert!(parse_time(bad, false).is_err(), "{bad}");
        }
    }
}
