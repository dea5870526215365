//! RFC 3339 timestamps ⇄ milliseconds since the Unix epoch (UTC), for `signers.json` and the CLI.
//!
//! Why our own ~80 lines instead of a date crate: we need exactly one format, in UTC, at
//! millisecond precision, and the audit crate's dependency set stays small. Leap seconds are not
//! representable in Unix time; `:60` is rejected rather than guessed.

use thiserror::Error;

/// The text is not an RFC 3339 date-time (`2025-11-18T09:30:00Z`, `...T09:30:00.250+01:00`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{text:?} is not an RFC 3339 time ({reason}); example: 2025-11-18T09:30:00Z")]
pub struct TimeError {
    /// The rejected text.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Days from 1970-01-01 to the civil date (proleptic Gregorian), in 400-year eras starting on
/// March 1 so that the leap day is the last day of a year.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]: `(year, month, day)` of a day count since 1970-01-01.
/// Public so that every human-readable time in the binary comes from this one implementation.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Formats `ms` as `YYYY-MM-DDTHH:MM:SSZ`, with `.mmm` when the milliseconds are not zero.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let (year, month, day) = civil_from_days(ms.div_euclid(86_400_000));
    let rem = ms.rem_euclid(86_400_000);
    let (h, m, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    if milli == 0 {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
    }
}

/// Parses an RFC 3339 date-time (`T`, `t` or a space between date and time; `Z`, `z` or
/// `±HH:MM` offset; any number of fraction digits, truncated to milliseconds) into milliseconds
/// since the Unix epoch.
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, TimeError> {
    let fail = |reason| TimeError { text: text.to_string(), reason };
    let b = text.as_bytes();
    if b.len() < 20 {
        return Err(fail("too short"));
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, TimeError> {
        let digits = &b[range];
        if digits.iter().all(u8::is_ascii_digit) {
            Ok(digits.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
        } else {
            Err(fail("expected digits"))
        }
    };
    if b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return Err(fail("expected YYYY-MM-DDTHH:MM:SS"));
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err(fail("expected T between date and time"));
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(fail("no such date"));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(fail("no such time of day"));
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(fail("empty fraction"));
        }
        let frac = &b[start..i.min(start + 3)];
        millis = frac.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
        millis *= 10i64.pow(3 - frac.len() as u32);
    }
    let offset_minutes = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return Err(fail("bad offset"));
            }
            let hours = i64::from(h1 - b'0') * 10 + i64::from(h2 - b'0');
            let minutes = i64::from(m1 - b'0') * 10 + i64::from(m2 - b'0');
            if hours > 23 || minutes > 59 {
                return Err(fail("bad offset"));
            }
            let total = hours * 60 + minutes;
            if *sign == b'-' {
                -total
            } else {
                total
            }
        }
        _ => return Err(fail("expected Z or an offset like +01:00 at the end")),
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Ok(seconds * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        // date -u -d 2025-11-18T09:30:00Z +%s → 1763458200
        assert_eq!(parse_rfc3339_ms("2025-11-18T09:30:00Z"), Ok(1_763_458_200_000));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339_ms("2025-11-18T10:30:00.25+01:00"), Ok(1_763_458_200_250));
        assert_eq!(parse_rfc3339_ms("2025-11-18t09:30:00.123456z"), Ok(1_763_458_200_123));
        assert_eq!(parse_rfc3339_ms("1969-12-31T23:59:59.999Z"), Ok(-1));
        assert_eq!(parse_rfc3339_ms("2024-02-29T00:00:00-00:30"), Ok(1_709_166_600_000));
    }

    #[test]
    fn formats_round_trip() {
        for ms in
            [0, 1, -1, 1_763_458_200_000, 1_763_458_200_250, 951_782_400_000, 253_402_300_799_999]
        {
            assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Ok(ms), "{ms}");
        }
        assert_eq!(format_rfc3339_ms(1_763_458_200_000), "2025-11-18T09:30:00Z");
        assert_eq!(format_rfc3339_ms(1_763_458_200_250), "2025-11-18T09:30:00.250Z");
    }

    #[test]
    fn rejects_non_times() {
        for bad in [
            "",
            "2025-11-18",
            "2025-11-18T09:30:00",
            "2025-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2025-11-18T24:00:00Z",
            "2025-11-18T09:30:60Z",
            "2025-11-18T09:30:00.Z",
            "2025-11-18T09:30:00+0100",
            "2025-11-18X09:30:00Z",
            "２０２５-11-18T09:30:00Z",
            "2025-11-18T09:30:00Zjunk",
        ] {
            assert!(parse_rfc3339_ms(bad).is_err(), "{bad:?} accepted");
        }
    }
}
