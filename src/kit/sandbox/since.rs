//! Parsing the sync timestamp the way the live API does.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// Parses a since value: `YYYY-MM-DDTHH:MM:SS`, read in `tz`, optionally followed by an offset
/// written `+05:00`, `+0500`, `+5:00` (the vendor's own example is `+0:00`) or `+05`.
/// Milliseconds and a trailing `Z` are refused, as the live API refuses them.
pub(super) fn parse_since(value: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    if value.ends_with(['Z', 'z']) {
        return Err("a trailing Z is not accepted; send an offset such as +00:00".into());
    }
    let bad = || format!("'{value}' is not a date and time like 2026-11-29T10:00:00+05:00");
    if value.len() < 19 || !value.is_char_boundary(19) {
        return Err(bad());
    }
    let (main, rest) = value.split_at(19);
    let local = NaiveDateTime::parse_from_str(main, "%Y-%m-%dT%H:%M:%S").map_err(|_| bad())?;
    if rest.is_empty() {
        return Ok(in_zone(local, tz));
    }
    if rest.starts_with(['.', ',']) {
        return Err("fractional seconds (milliseconds) are not accepted".into());
    }
    let sign = match rest.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return Err(bad()),
    };
    let off = &rest[1..];
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (hours, minutes) = match off.split_once(':') {
        Some((h, m)) if (1..=2).contains(&h.len()) && m.len() == 2 => (h, m),
        None if off.len() == 4 => off.split_at(2),
        None if off.len() == 2 => (off, "00"),
        _ => return Err(bad()),
    };
    if !all_digits(hours) || !all_digits(minutes) {
        return Err(bad());
    }
    let hours: i32 = hours.parse().map_err(|_| bad())?;
    let minutes: i32 = minutes.parse().map_err(|_| bad())?;
    if hours > 23 || minutes > 59 {
        return Err(bad());
    }
    let offset = FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60)).ok_or_else(bad)?;
    offset
        .from_local_datetime(&local)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(bad)
}

/// Reads an offset-less local time in `tz`: the earlier instant when the clock went back, and the
/// instant an hour later when the local time fell into a gap.
pub(super) fn in_zone(local: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    tz.from_local_datetime(&local)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(local + TimeDelta::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&local))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn accepts_the_live_api_forms() {
        let tz = Tz::UTC;
        assert_eq!(
            parse_since("2026-11-29T10:00:00", tz).unwrap(),
            utc("2026-11-29T10:00:00Z")
        );
        assert_eq!(
            parse_since("2026-11-29T10:00:00+05:00", tz).unwrap(),
            utc("2026-11-29T05:00:00Z")
        );
        assert_eq!(
            parse_since("2026-11-29T10:00:00+0500", tz).unwrap(),
            utc("2026-11-29T05:00:00Z")
        );
        assert_eq!(
            parse_since("2026-11-29T10:00:00+0:00", tz).unwrap(),
            utc("2026-11-29T10:00:00Z")
        );
        assert_eq!(
            parse_since("2026-11-29T10:00:00-03:30", tz).unwrap(),
            utc("2026-11-29T13:30:00Z")
        );
        let karachi: Tz = "Asia/Karachi".parse().unwrap();
        assert_eq!(
            parse_since("2026-11-29T10:00:00", karachi).unwrap(),
            utc("2026-11-29T05:00:00Z")
        );
    }

    #[test]
    fn refuses_milliseconds_z_and_junk() {
        let tz = Tz::UTC;
        for bad in [
            "2026-11-29T10:00:00.000",
            "2026-11-29T10:00:00.123+05:00",
            "2026-11-29T10:00:00Z",
            "2026-11-29",
            "2026-11-29 10:00:00",
            "2026-11-29T10:00:00+5",
            "2026-11-29T10:00:00+05:0",
            "2026-11-29T10:00:00+99:00",
            "2026-11-29T10:00:00 05:00",
            "yesterday",
            "2026-11-29T1é:00:00",
        ] {
            assert!(parse_since(bad, tz).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn local_times_in_a_gap_or_overlap_resolve() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let gap =
            NaiveDateTime::parse_from_str("2026-03-08T02:30:00", "%Y-%m-%dT%H:%M:%S").unwrap();
        assert_eq!(in_zone(gap, ny), utc("2026-03-08T07:30:00Z"));
        let overlap =
            NaiveDateTime::parse_from_str("2026-11-01T01:30:00", "%Y-%m-%dT%H:%M:%S").unwrap();
        assert_eq!(in_zone(overlap, ny), utc("2026-11-01T05:30:00Z"));
    }
}
