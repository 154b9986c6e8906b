//! Sorting HTTP outcomes into success, retry or failure, and the retry schedule math.
//!
//! Every HTTP-based sink (webhooks, chat) answers the same question after an attempt: was it
//! delivered ([`Verdict::Success`]), is it worth trying again later ([`Verdict::Retry`]), or will it
//! never work as it stands ([`Verdict::Fail`], straight to the dead letters)? The rules follow the
//! product spec's "Delivery promises":
//!
//! | outcome                                   | verdict  |
//! |-------------------------------------------|----------|
//! | 2xx                                       | Success  |
//! | 3xx (redirects are never followed)        | Fail     |
//! | 408, 429, 5xx                             | Retry    |
//! | other 4xx, anything else                  | Fail     |
//! | timeout, connect error, reset, DNS error  | Retry    |
//! | a request that cannot even be built       | Fail     |
//!
//! Reasons are short human words ("HTTP 503 Service Unavailable", "connection refused", "timed out
//! after 15s"). They never contain a URL's path, query string or userinfo (which often carry tokens),
//! nor any body.
//!
//! [`RetryPolicy`] turns "attempt N failed with Retry" into "wait this long", or `None` once the
//! schedule is spent.

use crate::config::retry::RetryPolicy;
use crate::model::Verdict;
use rand::Rng;
use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::StatusCode;
use std::error::Error as StdError;
use std::time::{Duration, SystemTime};

/// The shortest wait a receiver's `Retry-After` can impose.
///
/// `Retry-After: 0` (or an HTTP-date in the past) would otherwise turn a struggling receiver into a
/// hot loop; one second is enough to stop that without noticeably delaying an honest request.
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The longest wait a receiver's `Retry-After` can impose.
///
/// A buggy or hostile receiver could answer `Retry-After: 999999999` and park deliveries for years;
/// an hour is longer than any legitimate rate-limit window we have seen, and the regular schedule
/// (whose later steps are hours long) takes over beyond that.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The longest reason text kept, in bytes; error chains can be long.
const MAX_REASON_BYTES: usize = 300;

/// Sorts an HTTP response by its status (and, for 3xx and retries, a few headers).
///
/// * 2xx → [`Verdict::Success`].
/// * 3xx → [`Verdict::Fail`] "HTTP 302 Found: redirect to example.org not followed"; only the
///   `Location` host is named, never its path or query string.
/// * 408, 429, 5xx → [`Verdict::Retry`], with `retry_after` from a valid `Retry-After` header
///   (at most [`MAX_RETRY_AFTER`], no minimum yet; see [`clamp_retry_after`]).
/// * anything else (other 4xx, 1xx) → [`Verdict::Fail`].
pub fn classify_http(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Verdict {
    let label = status_label(status);
    if status.is_success() {
        Verdict::Success
    } else if status.is_redirection() {
        let target = match headers.get(LOCATION).and_then(|v| v.to_str().ok()) {
            None => "no location".to_string(),
            Some(loc) => match url::Url::parse(loc) {
                Ok(u) => match u.host_str() {
                    Some(h) => format!("redirect to {h}"),
                    None => "redirect".to_string(),
                },
                // Relative references are relative to the same host.
                Err(url::ParseError::RelativeUrlWithoutBase) => {
                    "redirect within the same host".to_string()
                }
                Err(_) => "redirect to an invalid location".to_string(),
            },
        };
        Verdict::Fail {
            reason: format!("{label}: {target} not followed"),
        }
    } else if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Verdict::Retry {
            reason: label,
            retry_after: retry_after_header(headers, now),
        }
    } else {
        Verdict::Fail { reason: label }
    }
}

/// "HTTP 503 Service Unavailable", or "HTTP 599" for a code without a canonical reason.
fn status_label(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(r) => format!("HTTP {} {r}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// Sorts a transport-level reqwest error (no HTTP response, or a failure while reading one).
///
/// Timeouts, connect errors (refused, DNS, TLS), resets and other send failures are
/// [`Verdict::Retry`]; an error building the request or a redirect error is [`Verdict::Fail`].
/// The reason is a short phrase ("timed out", "connection refused", "connection failed: dns error:
/// ...") built from the error's cause chain with the request URL scrubbed out.
pub fn classify_reqwest_error(e: &reqwest::Error) -> Verdict {
    let cause = root_cause(e);
    if e.is_builder() {
        return Verdict::Fail {
            reason: bounded(format!("invalid request: {cause}")),
        };
    }
    if e.is_redirect() {
        return Verdict::Fail {
            reason: "redirect not followed".to_string(),
        };
    }
    let reason = if e.is_timeout() {
        "timed out".to_string()
    } else if let Some(kind) = io_kind(e) {
        kind.to_string()
    } else if e.is_connect() {
        format!("connection failed: {cause}")
    } else if e.is_body() || e.is_decode() {
        format!("reading the response failed: {cause}")
    } else {
        format!("request failed: {cause}")
    };
    Verdict::Retry {
        reason: bounded(reason),
        retry_after: None,
    }
}

/// A short name for the first well-known `std::io::Error` kind in the cause chain.
fn io_kind(e: &reqwest::Error) -> Option<&'static str> {
    use std::io::ErrorKind;
    let mut src: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            let name = match io.kind() {
                ErrorKind::ConnectionRefused => "connection refused",
                ErrorKind::ConnectionReset => "connection reset",
                ErrorKind::ConnectionAborted => "connection aborted",
                ErrorKind::TimedOut => "timed out",
                ErrorKind::UnexpectedEof => "connection closed early",
                ErrorKind::BrokenPipe => "connection closed (broken pipe)",
                ErrorKind::AddrNotAvailable => "address not available",
                _ => return None,
            };
            return Some(name);
        }
        src = s.source();
    }
    None
}

/// The text of the deepest cause in `e`'s chain (reqwest's own message names the URL; its causes do
/// not, but any leftover URL, query string or userinfo is scrubbed anyway).
fn root_cause(e: &reqwest::Error) -> String {
    let mut last: Option<&(dyn StdError + 'static)> = None;
    let mut src: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = src {
        last = Some(s);
        src = s.source();
    }
    let text = match last {
        Some(s) => s.to_string(),
        None => "unknown error".to_string(),
    };
    scrub(text, e.url())
}

/// Removes the URL and its sensitive parts from `text`.
fn scrub(mut text: String, url: Option<&url::Url>) -> String {
    let Some(url) = url else { return text };
    let mut secrets: Vec<String> = vec![url.as_str().to_string()];
    if let Some(q) = url.query() {
        secrets.push(q.to_string());
    }
    if let Some(p) = url.password() {
        secrets.push(p.to_string());
    }
    // Paths of chat webhooks carry tokens; very short ones would only mangle the text.
    if url.path().len() > 4 {
        secrets.push(url.path().to_string());
    }
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(s.as_str(), "[redacted]");
    }
    text
}

/// Cuts a reason to [`MAX_REASON_BYTES`].
fn bounded(s: String) -> String {
    if s.len() <= MAX_REASON_BYTES {
        s
    } else {
        crate::model::truncate_utf8(&s, MAX_REASON_BYTES).to_string()
    }
}

/// Parses a `Retry-After` value: delta-seconds (`120`, and leniently `1.5`) or an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`), the one parser every sink uses (webhooks, chat, the API
/// client).
///
/// A date in the past gives `Some(Duration::ZERO)`; anything longer than [`MAX_RETRY_AFTER`]
/// (`99999999999`, `1e20`, a date years ahead) gives [`MAX_RETRY_AFTER`], so no caller ever holds
/// a wait it cannot add to a clock. Returns `None` for anything else (negative numbers, NaN,
/// infinity, garbage). Pass the result through [`clamp_retry_after`] to impose a minimum too.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
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
pub fn bounded_secs(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        secs.min(MAX_RETRY_AFTER.as_secs_f64()),
    ))
}

/// The wait a response's headers ask for: `Retry-After` (see [`parse_retry_after`]).
pub fn retry_after_header(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now))
}

/// Discord's rate-limit hints on a 429, the longest wait of: `Retry-After`,
/// `X-RateLimit-Reset-After` (seconds, a float) and the body's JSON `retry_after` (see
/// [`discord_body_retry_after`]); each bounded by [`MAX_RETRY_AFTER`]. `X-RateLimit-Reset` (a
/// Unix time) is not read: it says the same as `X-RateLimit-Reset-After`, but through two clocks,
/// so any skew between them would lengthen the wait.
pub fn discord_retry_after(headers: &HeaderMap, body: &str, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    [
        retry_after_header(headers, now),
        header("x-ratelimit-reset-after").and_then(|v| parse_retry_after(v, now)),
        discord_body_retry_after(body),
    ]
    .into_iter()
    .flatten()
    .max()
}

/// Discord's JSON `retry_after`, bounded by [`MAX_RETRY_AFTER`]. API v10 sends seconds as a float
/// (`0.5`, `64.57`); older versions sent whole milliseconds (`1500`). Decision: a whole number
/// above 60 is read as milliseconds (Discord's per-webhook waits are seconds long, and a v10 value
/// is rarely a whole number), any other value as seconds.
pub fn discord_body_retry_after(body: &str) -> Option<Duration> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let n = v.get("retry_after")?.as_f64()?;
    if n > 60.0 && n.fract() == 0.0 {
        bounded_secs(n / 1000.0)
    } else {
        bounded_secs(n)
    }
}

/// Bounds a receiver's requested wait to `[min, max]` (normally [`MIN_RETRY_AFTER`] and
/// [`MAX_RETRY_AFTER`]). If `min > max`, `max` wins.
pub fn clamp_retry_after(d: Duration, min: Duration, max: Duration) -> Duration {
    d.max(min).min(max)
}

/// The schedule math needs the receiver's `Retry-After` bounds, which are delivery's; the
/// policy's data is the config's ([`crate::config::retry`]).
impl RetryPolicy {
    /// How long to wait before the next attempt, or `None` when the schedule is spent (the delivery
    /// goes to the dead letters).
    ///
    /// `attempts_done` counts the attempts made so far, including the one that just failed (so 1
    /// after the first failure; 0 is treated like 1). `retry_after` is the receiver's request from
    /// [`Verdict::Retry`] (no minimum applied yet).
    ///
    /// The wait is `max(scheduled wait with jitter, clamped retry_after)`:
    /// * taking the larger never retries earlier than the receiver asked (within
    ///   [`MAX_RETRY_AFTER`]), which is what honouring `Retry-After` means;
    /// * it never shortens our own back-off either: a receiver answering every 503 with
    ///   `Retry-After: 1` would otherwise burn the whole schedule in seconds and dead-letter
    ///   deliveries during an outage the schedule was designed to ride out;
    /// * every attempt, whoever chose its wait, uses up one step of the schedule, so the number of
    ///   attempts stays bounded.
    pub fn next_delay(
        &self,
        attempts_done: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        let index = attempts_done.saturating_sub(1) as usize;
        let scheduled = *self.schedule.get(index)?;
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let jittered = if jitter > 0.0 {
            let factor = 1.0 + rng.gen_range(-jitter..=jitter);
            Duration::try_from_secs_f64(scheduled.as_secs_f64() * factor).unwrap_or(scheduled)
        } else {
            scheduled
        };
        let asked = retry_after
            .map(|d| clamp_retry_after(d, MIN_RETRY_AFTER, MAX_RETRY_AFTER))
            .unwrap_or(Duration::ZERO);
        Some(jittered.max(asked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use reqwest::header::HeaderValue;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn classify(code: u16, headers: &[(&'static str, &str)]) -> Verdict {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        classify_http(StatusCode::from_u16(code).unwrap(), &map, now())
    }

    #[test]
    fn statuses() {
        assert_eq!(classify(200, &[]), Verdict::Success);
        assert_eq!(classify(204, &[]), Verdict::Success);
        for code in [408, 429, 500, 502, 503, 504, 599] {
            assert!(
                matches!(classify(code, &[]), Verdict::Retry { .. }),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 410, 413, 422] {
            assert!(
                matches!(classify(code, &[]), Verdict::Fail { .. }),
                "{code}"
            );
        }
        assert_eq!(
            classify(503, &[]),
            Verdict::Retry {
                reason: "HTTP 503 Service Unavailable".into(),
                retry_after: None
            }
        );
    }

    #[test]
    fn retry_after_header_is_carried_up_to_the_maximum() {
        let v = classify(429, &[("retry-after", "1800")]);
        assert_eq!(
            v,
            Verdict::Retry {
                reason: "HTTP 429 Too Many Requests".into(),
                retry_after: Some(Duration::from_secs(1800))
            }
        );
        let v = classify(429, &[("retry-after", "7200")]);
        assert!(matches!(
            v,
            Verdict::Retry {
                retry_after: Some(MAX_RETRY_AFTER),
                ..
            }
        ));
        let v = classify(503, &[("retry-after", "soon")]);
        assert!(matches!(
            v,
            Verdict::Retry {
                retry_after: None,
                ..
            }
        ));
    }

    #[test]
    fn redirects_fail_without_leaking_the_location() {
        let v = classify(
            302,
            &[(
                "location",
                "https://user:pw@evil.example/steal?token=SECRET#x",
            )],
        );
        let Verdict::Fail { reason } = v else {
            panic!("{v:?}")
        };
        assert_eq!(
            reason,
            "HTTP 302 Found: redirect to evil.example not followed"
        );
        let Verdict::Fail { reason } = classify(301, &[("location", "/new?token=SECRET")]) else {
            panic!()
        };
        assert!(
            !reason.contains("SECRET") && !reason.contains("/new"),
            "{reason}"
        );
        assert!(matches!(classify(307, &[]), Verdict::Fail { .. }));
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
    fn discord_hints_are_bounded_and_the_longest_wins() {
        let mut h = HeaderMap::new();
        let body = r#"{"message": "You are being rate limited.", "retry_after": 2.5}"#;
        assert_eq!(
            discord_retry_after(&h, body, now()),
            Some(Duration::from_millis(2500))
        );
        // Old API: whole milliseconds.
        assert_eq!(
            discord_body_retry_after(r#"{"retry_after": 1500}"#),
            Some(Duration::from_millis(1500))
        );
        h.insert("x-ratelimit-reset-after", HeaderValue::from_static("3.25"));
        h.insert("retry-after", HeaderValue::from_static("1"));
        assert_eq!(
            discord_retry_after(&h, body, now()),
            Some(Duration::from_millis(3250))
        );
        let reset = now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 900;
        h.insert(
            "x-ratelimit-reset",
            HeaderValue::from_str(&format!("{reset}.5")).unwrap(),
        );
        assert_eq!(
            discord_retry_after(&h, body, now()),
            Some(Duration::from_millis(3250)),
            "the absolute reset time is not read (clock skew would lengthen the wait)"
        );
        // Absurd values in every place: bounded, no panic.
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset-after", HeaderValue::from_static("1e20"));
        h.insert("x-ratelimit-reset", HeaderValue::from_static("1e300"));
        h.insert("retry-after", HeaderValue::from_static("NaN"));
        assert_eq!(
            discord_retry_after(&h, r#"{"retry_after": 1e300}"#, now()),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(discord_body_retry_after(r#"{"retry_after": -3}"#), None);
        assert_eq!(discord_body_retry_after("not json"), None);
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

    #[test]
    fn schedule_with_jitter_and_retry_after() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts(), 8);
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let d = p.next_delay(1, None, &mut rng).unwrap();
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(6),
                "{d:?}"
            );
            let d = p.next_delay(2, None, &mut rng).unwrap();
            assert!(d >= Duration::from_secs(240) && d <= Duration::from_secs(360));
        }
        assert!(p.next_delay(0, None, &mut rng).unwrap() <= Duration::from_secs(6));
        assert!(p.next_delay(7, None, &mut rng).is_some());
        assert_eq!(p.next_delay(8, None, &mut rng), None);
        // A larger Retry-After wins; a smaller one does not shorten the back-off.
        let d = p
            .next_delay(1, Some(Duration::from_secs(120)), &mut rng)
            .unwrap();
        assert_eq!(d, Duration::from_secs(120));
        let d = p
            .next_delay(2, Some(Duration::from_secs(2)), &mut rng)
            .unwrap();
        assert!(d >= Duration::from_secs(240));
        // An absurd Retry-After is clamped to an hour.
        let d = p
            .next_delay(1, Some(Duration::from_secs(u64::MAX)), &mut rng)
            .unwrap();
        assert_eq!(d, MAX_RETRY_AFTER);
        // No jitter: exact.
        let exact = RetryPolicy {
            schedule: vec![Duration::from_secs(3)],
            jitter: 0.0,
        };
        assert_eq!(
            exact.next_delay(1, None, &mut rng),
            Some(Duration::from_secs(3))
        );
        assert_eq!(exact.next_delay(2, None, &mut rng), None);
        // Nonsense jitter is tamed.
        let wild = RetryPolicy {
            schedule: vec![Duration::from_secs(10)],
            jitter: f64::NAN,
        };
        assert_eq!(
            wild.next_delay(1, None, &mut rng),
            Some(Duration::from_secs(10))
        );
        let empty = RetryPolicy {
            schedule: vec![],
            jitter: 0.2,
        };
        assert_eq!(empty.next_delay(1, None, &mut rng), None);
    }

    #[test]
    fn scrubbing() {
        let u = url::Url::parse("https://me:pw@h.example/hook/abc?token=SECRET").unwrap();
        let t = scrub(
            format!("failed for {u} with token=SECRET and pw and /hook/abc"),
            Some(&u),
        );
        assert!(
            !t.contains("SECRET") && !t.contains("pw") && !t.contains("/hook/abc"),
            "{t}"
        );
    }
}
