//! Parses the `--since` / `--until` arguments: RFC 3339 or unix nanoseconds.

/// A time argument that is neither unix nanoseconds nor RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid time {input:?}: {reason} (expected RFC 3339 like 2024-05-01T12:00:00Z, or unix nanoseconds)"
)]
pub struct TimeArgError {
    pub input: String,
    pub reason: &'static str,
}

/// Nanoseconds since the Unix epoch of `s`, which is either a decimal number
/// of nanoseconds or an RFC 3339 timestamp (`2024-05-01T12:00:00.5+02:00`;
/// `Z`, a lower-case `t`/`z` and a space instead of `T` are accepted).
///
/// # Errors
/// `s` is neither, names an impossible date, or is outside what i64
/// nanoseconds can hold (years 1677 to 2262).
pub fn parse_time_arg(s: &str) -> Result<i64, TimeArgError> {
    let err = |reason| TimeArgError {
        input: s.to_owned(),
        reason,
    };
    let trimmed = s.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return trimmed.parse::<i64>().map_err(|_| err("number too large"));
    }
    parse_rfc3339(trimmed).map_err(err)
}

fn parse_rfc3339(s: &str) -> Result<i64, &'static str> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return Err("too short");
    }
    let year = digits(b, 0, 4)?;
    expect(b, 4, b'-')?;
    let month = digits(b, 5, 2)?;
    expect(b, 7, b'-')?;
    let day = digits(b, 8, 2)?;
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err("expected 'T' between date and time");
    }
    let hour = digits(b, 11, 2)?;
    expect(b, 13, b':')?;
    let minute = digits(b, 14, 2)?;
    expect(b, 16, b':')?;
    let second = digits(b, 17, 2)?;
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &b[start..i];
        if frac.is_empty() {
            return Err("empty fraction of a second");
        }
        if frac.len() > 9 {
            return Err("more than 9 digits of fraction");
        }
        for k in 0..9 {
            nanos = nanos * 10 + frac.get(k).map_or(0, |d| i64::from(d - b'0'));
        }
    }
    let offset_secs: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() => {
            let oh = digits(b, i + 1, 2)?;
            expect(b, i + 3, b':')?;
            let om = digits(b, i + 4, 2)?;
            if oh > 23 || om > 59 {
                return Err("invalid UTC offset");
            }
            let off = oh * 3600 + om * 60;
            if sign == b'-' { -off } else { off }
        }
        _ => return Err("expected 'Z' or a UTC offset like +02:00 at the end"),
    };
    if !(1..=12).contains(&month) {
        return Err("month out of range");
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err("day out of range for the month");
    }
    // 60 is a leap second; it counts as the first second of the next minute.
    if hour > 23 || minute > 59 || second > 60 {
        return Err("time of day out of range");
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    secs.checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(nanos))
        .ok_or("outside the years 1677 to 2262")
}

fn digits(b: &[u8], at: usize, n: usize) -> Result<i64, &'static str> {
    let field = b.get(at..at + n).ok_or("too short")?;
    let mut v: i64 = 0;
    for &d in field {
        if !d.is_ascii_digit() {
            return Err("expected a digit");
        }
        v = v * 10 + i64::from(d - b'0');
    }
    Ok(v)
}

fn expect(b: &[u8], at: usize, c: u8) -> Result<(), &'static str> {
    if b.get(at) == Some(&c) {
        Ok(())
    } else {
        Err("malformed date or time")
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_nanoseconds_pass_through() {
        assert_eq!(
            parse_time_arg("1700000000123456789"),
            Ok(1_700_000_000_123_456_789)
        );
        assert_eq!(parse_time_arg("0"), Ok(0));
    }

    #[test]
    fn rfc3339_in_utc_and_with_offsets_gives_unix_nanoseconds() {
        assert_eq!(parse_time_arg("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_time_arg("2023-11-14T22:13:20Z"),
            Ok(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_time_arg("2023-11-14T22:13:20.123456789Z"),
            Ok(1_700_000_000_123_456_789)
        );
        assert_eq!(
            parse_time_arg("2023-11-15T00:13:20.5+02:00"),
            Ok(1_700_000_000_500_000_000)
        );
        assert_eq!(
            parse_time_arg("2023-11-14 17:13:20-05:00"),
            Ok(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_time_arg("2024-02-29T00:00:00Z"),
            Ok(1_709_164_800_000_000_000)
        );
        assert_eq!(parse_time_arg("1969-12-31T23:59:59Z"), Ok(-1_000_000_000));
    }

    #[test]
    fn malformed_or_impossible_times_are_refused() {
        for bad in [
            "",
            "yesterday",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20.1234567891Z",
            "2023-11-14T22:13:20+2:00",
            "9999-01-01T00:00:00Z",
            "99999999999999999999",
            "-5",
        ] {
            assert!(parse_time_arg(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
