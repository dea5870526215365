//! Civil dates and RFC 3339 times, the one implementation every crate uses (the codec's JSON
//! form, `signers.json`, the CLI's human-readable times, `audit verify --from/--to`).
//!
//! Why our own ~150 lines instead of a date crate: we need exactly one format, in UTC, and
//! conversions to and from integer instants; the proleptic Gregorian arithmetic is Howard
//! Hinnant's `days_from_civil` / `civil_from_days`, exact for every `i64` day count we can meet.
//! Leap seconds are not representable in Unix time: `:60` is rejected rather than guessed.

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
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]: `(year, month, day)` of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    // In range by construction: month 1..=12, day 1..=31.
    (yoe + era * 400 + i64::from(month <= 2), month as u32, day as u32)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Digits of a fixed-width field, or `None` when any byte is not an ASCII digit.
fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    b.iter().try_fold(0u32, |acc, d| acc.checked_mul(10)?.checked_add(u32::from(d - b'0')))
}

/// `YYYY-MM-DD` → `(year, month, day)`, validated.
fn parse_ymd(b: &[u8]) -> Result<(i64, u32, u32), &'static str> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err("expected YYYY-MM-DD");
    }
    let (Some(y), Some(m), Some(d)) = (digits(&b[0..4]), digits(&b[5..7]), digits(&b[8..10]))
    else {
        return Err("expected digits");
    };
    let y = i64::from(y);
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return Err("no such date");
    }
    Ok((y, m, d))
}

/// Days since the epoch of an ISO 8601 calendar date `YYYY-MM-DD` (Avro's `date`).
pub fn parse_date(text: &str) -> Result<i64, TimeError> {
    parse_ymd(text.as_bytes())
        .map(|(y, m, d)| days_from_civil(y, m, d))
        .map_err(|reason| TimeError { text: text.to_string(), reason })
}

/// Parses an RFC 3339 date-time (`T`, `t` or a space between date and time; `Z`, `z` or
/// `±HH:MM` offset; any number of fraction digits, the first nine kept) into seconds since the
/// Unix epoch and nanoseconds (`0..1e9`, so negative instants floor: 23:59:59.5 of 1969-12-31 is
/// `(-1, 500_000_000)`).
pub fn parse_rfc3339(text: &str) -> Result<(i64, u32), TimeError> {
    let fail = |reason| TimeError { text: text.to_string(), reason };
    let b = text.as_bytes();
    if b.len() < 20 {
        return Err(fail("too short"));
    }
    let (year, month, day) = parse_ymd(&b[..10]).map_err(fail)?;
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err(fail("expected T between date and time"));
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(fail("expected HH:MM:SS"));
    }
    let (Some(h), Some(mi), Some(s)) = (digits(&b[11..13]), digits(&b[14..16]), digits(&b[17..19]))
    else {
        return Err(fail("expected digits"));
    };
    if h > 23 || mi > 59 || s > 59 {
        return Err(fail("no such time of day"));
    }
    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return Err(fail("empty fraction"));
        }
        for (i, c) in frac[..n].iter().enumerate().take(9) {
            nanos += u32::from(c - b'0') * 10u32.pow(8 - i as u32);
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0i64,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (Some(oh), Some(om)) = (digits(&[*h1, *h2]), digits(&[*m1, *m2])) else {
                return Err(fail("bad offset"));
            };
            if oh > 23 || om > 59 {
                return Err(fail("bad offset"));
            }
            let o = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return Err(fail("expected Z or an offset like +01:00 at the end")),
    };
    let secs =
        days_from_civil(year, month, day) * 86_400 + i64::from(h * 3600 + mi * 60 + s) - offset;
    Ok((secs, nanos))
}

/// [`parse_rfc3339`] in milliseconds since the Unix epoch (fraction digits beyond the third are
/// dropped).
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, TimeError> {
    let (secs, nanos) = parse_rfc3339(text)?;
    secs.checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(nanos / 1_000_000)))
        .ok_or(TimeError { text: text.to_string(), reason: "out of range" })
}

/// `ms` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`, with `.mmm` only when the milliseconds
/// are not zero (files people read and edit, `signers.json`, messages).
pub fn format_rfc3339_ms(ms: i64) -> String {
    format(ms, false)
}

/// `ms` since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`, always with milliseconds, so that
/// the columns of a listing line up (`evalstream consume`, `dlq list`).
pub fn format_rfc3339_ms_aligned(ms: i64) -> String {
    format(ms, true)
}

fn format(ms: i64, always_millis: bool) -> String {
    let (year, month, day) = civil_from_days(ms.div_euclid(86_400_000));
    let rem = ms.rem_euclid(86_400_000);
    let (h, m, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    if milli == 0 && !always_millis {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
    }
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
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Ok((1_700_000_000, 0)));
        assert_eq!(parse_rfc3339("2023-11-15T00:13:20.5+02:00"), Ok((1_700_000_000, 500_000_000)));
        assert_eq!(parse_rfc3339("1969-12-31t23:59:59.999999999z"), Ok((-1, 999_999_999)));
        // 2024-02-29 is day 19782 (1_709_164_800 s); 12:00 at -01:30 is 13:30 UTC.
        assert_eq!(parse_rfc3339("2024-02-29 12:00:00-01:30"), Ok((1_709_213_400, 0)));
        assert_eq!(parse_date("1970-01-02"), Ok(1));
        assert_eq!(parse_date("1969-12-31"), Ok(-1));
    }

    #[test]
    fn formats_round_trip() {
        for ms in
            [0, 1, -1, 1_763_458_200_000, 1_763_458_200_250, 951_782_400_000, 253_402_300_799_999]
        {
            assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Ok(ms), "{ms}");
            assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms_aligned(ms)), Ok(ms), "{ms}");
        }
        assert_eq!(format_rfc3339_ms(1_763_458_200_000), "2025-11-18T09:30:00Z");
        assert_eq!(format_rfc3339_ms(1_763_458_200_250), "2025-11-18T09:30:00.250Z");
        assert_eq!(format_rfc3339_ms_aligned(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339_ms_aligned(951_825_600_500), "2000-02-29T12:00:00.500Z");
        assert_eq!(format_rfc3339_ms_aligned(1_714_557_600_123), "2024-05-01T10:00:00.123Z");
        assert_eq!(format_rfc3339_ms_aligned(-1), "1969-12-31T23:59:59.999Z");
        for days in [-800_000, -1, 0, 1, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn rejects_non_times() {
        for bad in [
            "",
            "x",
            "2025-11-18",
            "2025-11-18T09:30:00",
            "2025-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2025-11-18T24:00:00Z",
            "2025-11-18T09:30:60Z",
            "2025-11-18T09:30:00.Z",
            "2025-11-18T09:30:00+0100",
            "2023-11-14T22:13:20+2:00",
            "2025-11-18X09:30:00Z",
            "２０２５-11-18T09:30:00Z",
            "2025-11-18T09:30:00Zjunk",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_date("2025-02-29").is_err());
    }
}
