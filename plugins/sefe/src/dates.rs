//! Calendar arithmetic for `fechaEmision` and for timestamps in answers.
//!
//! The SIN writes the date of issue as a local time of Bolivia without an offset
//! (`2026-01-15T10:30:00.000`). Bolivia keeps UTC-04:00 all year (no daylight saving), so a
//! fixed offset converts it to an instant exactly. There is no WASI clock or time-zone
//! database in a plugin: dates are computed here from the host's milliseconds.

/// Bolivia's offset from UTC in milliseconds (UTC-04:00, all year).
pub const BOLIVIA_OFFSET_MS: i64 = -4 * 3_600_000;

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date (year, month, day) of a count of days since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        _ => 28,
    }
}

/// Parses a local date-time of Bolivia in the SIN's form `YYYY-MM-DDTHH:MM:SS` with an
/// optional fraction of 1 to 3 digits, and returns the instant in milliseconds since the
/// Unix epoch. `None` if the text is not of that form or names no real date or time.
pub fn parse_local_datetime(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 19 {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(at, byte)| bytes[at] != byte) {
        return None;
    }
    let year = number(0..4)?;
    let month = u32::try_from(number(5..7)?).ok()?;
    let day = u32::try_from(number(8..10)?).ok()?;
    let hour = number(11..13)?;
    let minute = number(14..16)?;
    let second = number(17..19)?;
    let millis = match &bytes[19..] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=3).contains(&fraction.len()) => {
            let digits = number(20..bytes.len())?;
            digits * 10i64.pow(3 - fraction.len() as u32)
        }
        _ => return None,
    };
    if year < 1900
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let local_ms = days_from_civil(year, month, day) * MS_PER_DAY
        + ((hour * 60 + minute) * 60 + second) * 1000
        + millis;
    Some(local_ms - BOLIVIA_OFFSET_MS)
}

/// An instant as an RFC 3339 UTC timestamp with milliseconds (`2026-01-01T00:00:00.000Z`).
pub fn format_utc(epoch_ms: u64) -> String {
    let epoch_ms = i64::try_from(epoch_ms).unwrap_or(i64::MAX);
    let days = epoch_ms.div_euclid(MS_PER_DAY);
    let in_day = epoch_ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute) = (in_day / 3_600_000, in_day / 60_000 % 60);
    let (second, millis) = (in_day / 1000 % 60, in_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2026, 1, 1), 20_454);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        for days in [-1, 0, 59, 19_782, 20_454, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn local_times_of_bolivia_become_utc_instants() {
        // 2025-12-31T20:00 in La Paz is 2026-01-01T00:00Z.
        assert_eq!(
            parse_local_datetime("2025-12-31T20:00:00"),
            Some(1_767_225_600_000)
        );
        assert_eq!(
            parse_local_datetime("2025-12-31T20:00:00.5"),
            Some(1_767_225_600_500)
        );
        assert_eq!(
            parse_local_datetime("2025-12-31T20:00:00.123"),
            Some(1_767_225_600_123)
        );
        assert!(parse_local_datetime("2024-02-29T00:00:00").is_some());
    }

    #[test]
    fn malformed_or_impossible_dates_are_refused() {
        for text in [
            "",
            "2025-12-31",
            "2025-12-31 20:00:00",
            "2025-12-31T20:00:00Z",
            "2025-12-31T20:00:00-04:00",
            "2025-12-31T20:00:00.1234",
            "2025-12-31T20:00:00.",
            "2025-13-01T00:00:00",
            "2025-02-29T00:00:00",
            "2025-04-31T00:00:00",
            "2025-12-31T24:00:00",
            "2025-12-31T23:60:00",
            "2025-12-31T23:59:60",
            "+025-12-31T23:59:59",
            "2025-1a-31T23:59:59",
            "１９99-12-31T23:59:59",
        ] {
            assert_eq!(parse_local_datetime(text), None, "{text}");
        }
    }

    #[test]
    fn utc_timestamps_are_formatted() {
        assert_eq!(format_utc(1_767_225_600_000), "2026-01-01T00:00:00.000Z");
        assert_eq!(format_utc(1_767_225_661_007), "2026-01-01T00:01:01.007Z");
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000Z");
    }
}
