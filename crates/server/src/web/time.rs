//! UTC dates for display and for query parameters, without a calendar crate: the civil-date
//! conversions are a dozen lines (Howard Hinnant's algorithms).

/// Days since 1970-01-01 → (year, month, day).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2024-07-23 10:04:05` (UTC).
pub fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
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
    let s2 = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = match s2.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s2, None),
    };
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let num = |v: &str, len: usize| -> Result<u32, String> {
        if v.len() != len || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        v.parse().map_err(|_| bad())
    };
    let (y, m, d) = (num(y, 4)?, num(m, 2)?, num(d, 2)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let day_ms = days_from_civil(y as i64, m, d) * 86_400_000;
    let Some(time) = time else {
        return Ok(if end_of_day {
            day_ms + 86_400_000 - 1
        } else {
            day_ms
        });
    };
    let t: Vec<&str> = time.split(':').collect();
    if t.len() < 2 || t.len() > 3 {
        return Err(bad());
    }
    let h = num(t[0], 2)?;
    let mi = num(t[1], 2)?;
    let sec = if t.len() == 3 { num(t[2], 2)? } else { 0 };
    if h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    Ok(day_ms + ((h * 3600 + mi * 60 + sec) as i64) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_parses() {
        for day in [-800_000, -1, 0, 1, 19_927, 2_932_896] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
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
            "2024-7-23",
            "2024-13-01",
            "yesterday",
            "2024-07-23T25:00",
            "2024-07-23-1",
        ] {
            assert!(parse_time(bad, false).is_err(), "{bad}");
        }
    }
}
