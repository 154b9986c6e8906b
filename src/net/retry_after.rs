//! `Retry-After`: the one parser of a peer's "come back later", shared by the API client and every
//! sink, and the bounds that keep any such wait sane.

use reqwest::header::{HeaderMap, RETRY_AFTER};
use std::time::{Duration, SystemTime};

/// The shortest wait a receiver's `Retry-After` can impose.
///
/// `Retry-After: 0` (or an HTTP-date in the past) would otherwise turn a struggling receiver into a
/// hot loop; one second is enough to stop that without noticeably delaying an honest request.
pub(crate) const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The longest wait a receiver's `Retry-After` can impose.
///
/// A buggy or hostile receiver could answer `Retry-After: 999999999` and park deliveries for years;
/// an hour is longer than any legitimate rate-limit window we have seen, and the regular schedule
/// (whose later steps are hours long) takes over beyond that.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Parses a `Retry-After` value: delta-seconds (`120`, and leniently `1.5`) or an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`).
///
/// A date in the past gives `Some(Duration::ZERO)`; anything longer than [`MAX_RETRY_AFTER`]
/// (`99999999999`, `1e20`, a date years ahead) gives [`MAX_RETRY_AFTER`], so no caller ever holds
/// a wait it cannot add to a clock. Returns `None` for anything else (negative numbers, NaN,
/// infinity, garbage). Pass the result through [`clamp_retry_after`] to impose a minimum too.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: only overflow can fail, and a huge wait is still a wait.
        let secs = v.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    if v.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '+' || c == '-') {
        return v.parse::<f64>().ok().and_then(bounded_secs);
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// A number of seconds as a wait of at most [`MAX_RETRY_AFTER`]; `None` when negative, NaN or
/// infinite. (`Duration::from_secs_f64` panics on those and on huge values.)
pub(crate) fn bounded_secs(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        secs.min(MAX_RETRY_AFTER.as_secs_f64()),
    ))
}

/// The wait a response's headers ask for: `Retry-After` (see [`parse_retry_after`]).
pub(crate) fn retry_after_header(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now))
}

/// Bounds a receiver's requested wait to `[min, max]` (normally [`MIN_RETRY_AFTER`] and
/// [`MAX_RETRY_AFTER`]). If `min > max`, `max` wins.
pub(crate) fn clamp_retry_after(d: Duration, min: Duration, max: Duration) -> Duration {
    d.max(min).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after("2", now()), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now()),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("", now()), None);
        assert_eq!(parse_retry_after("later", now()), None);
        let in_90s = httpdate::fmt_http_date(now() + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&in_90s, now()),
            Some(Duration::from_secs(90))
        );
        let past = httpdate::fmt_http_date(now() - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&past, now()), Some(Duration::ZERO));
    }

    #[test]
    fn the_header_is_read_when_present_and_valid() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after_header(&h, now()), None);
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after_header(&h, now()), Some(Duration::from_secs(7)));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after_header(&h, now()), None);
    }

    /// `Duration::from_secs_f64` panics on these; the parser must not, and must stay bounded.
    #[test]
    fn absurd_retry_after_values_never_panic_and_stay_bounded() {
        for huge in [
            "99999999999999999999999",
            "1e20",
            "1E308",
            "18446744073709551616.5",
            "99999999999.25",
        ] {
            assert_eq!(
                parse_retry_after(huge, now()),
                Some(MAX_RETRY_AFTER),
                "{huge}"
            );
        }
        let far = httpdate::fmt_http_date(now() + Duration::from_secs(10 * 365 * 86_400));
        assert_eq!(parse_retry_after(&far, now()), Some(MAX_RETRY_AFTER));
        for bad in [
            "-1", "-0.5", "-1e20", "NaN", "nan", "inf", "-inf", "+inf", "1e", "1..2",
        ] {
            assert_eq!(parse_retry_after(bad, now()), None, "{bad}");
        }
        assert_eq!(bounded_secs(f64::NAN), None);
        assert_eq!(bounded_secs(f64::INFINITY), None);
        assert_eq!(bounded_secs(-1.0), None);
        assert_eq!(bounded_secs(f64::MAX), Some(MAX_RETRY_AFTER));
        assert_eq!(bounded_secs(0.25), Some(Duration::from_millis(250)));
    }

    #[test]
    fn clamping() {
        let c = |s| clamp_retry_after(Duration::from_secs(s), MIN_RETRY_AFTER, MAX_RETRY_AFTER);
        assert_eq!(c(0), MIN_RETRY_AFTER);
        assert_eq!(c(30), Duration::from_secs(30));
        assert_eq!(c(1_000_000), MAX_RETRY_AFTER);
        assert_eq!(
            clamp_retry_after(
                Duration::from_secs(5),
                Duration::from_secs(10),
                Duration::from_secs(3)
            ),
            Duration::from_secs(3)
        );
    }
}
