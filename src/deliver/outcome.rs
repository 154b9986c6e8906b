//! The verdict of an attempt, for every sink: delivered ([`Verdict::Success`]), worth trying again
//! later ([`Verdict::Retry`]), or never going to work as it stands ([`Verdict::Fail`], straight to
//! the dead letters); and the retry schedule math.
//!
//! The rules follow the product spec's "Delivery promises":
//!
//! | outcome                                   | verdict  |
//! |-------------------------------------------|----------|
//! | 2xx                                       | Success  |
//! | 3xx (redirects are never followed)        | Fail     |
//! | 408, 429, 5xx                             | Retry    |
//! | other 4xx, anything else                  | Fail     |
//! | timeout, connect error, reset, DNS error  | Retry    |
//! | a request that cannot even be built       | Fail     |
//! | SMTP 5xx                                  | Fail     |
//! | SMTP 4xx, timeout, connection, TLS error  | Retry    |
//! | broker down, refused by egress, timeout    | Retry    |
//! | broker nack, no stream / queue for it      | Retry    |
//! | a message larger than the broker accepts  | Fail     |
//!
//! Webhooks are sorted by [`classify_http`], chat services (which add their own rate-limit hints
//! and a "webhook gone") by [`classify_chat`], any HTTP request that got no answer by
//! [`classify_transport`], SMTP errors by [`classify_smtp`], and NATS / AMQP failures by [`classify_broker`]: a broker that
//! is down or not set up yet is retried, never a lost change.
//!
//! Reasons are short human words ("HTTP 503 Service Unavailable", "connection refused", "timed out
//! after 15s"). They never contain a URL's path, query string or userinfo (which often carry tokens),
//! nor any body.
//!
//! [`RetryPolicy`] turns "attempt N failed with Retry" into "wait this long", or `None` once the
//! schedule is spent.

use crate::config::retry::RetryPolicy;
use crate::config::ChatKind;
use crate::model::Verdict;
use crate::net::retry_after::{
    bounded_secs, clamp_retry_after, parse_retry_after, retry_after_header, MAX_RETRY_AFTER,
    MIN_RETRY_AFTER,
};
use crate::net::scrub::{self, Scrubber};
use rand::Rng;
use reqwest::header::{HeaderMap, LOCATION};
use reqwest::StatusCode;
use std::time::{Duration, SystemTime};

/// How much of a response the attempts log keeps.
pub(crate) const RESPONSE_SNIPPET_BYTES: usize = 4096;

/// The longest reason text kept, in bytes; error chains can be long.
const MAX_REASON_BYTES: usize = 300;

/// What one attempt produced: the verdict plus what the attempts log keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptReport {
    /// Success, retry or fail.
    pub verdict: Verdict,
    /// HTTP status or SMTP reply code, when the peer answered.
    pub status: Option<u16>,
    /// The first [`RESPONSE_SNIPPET_BYTES`] of the response body (or SMTP reply text).
    pub(crate) response: String,
    /// How long the attempt took.
    pub(crate) duration: Duration,
}

impl AttemptReport {
    /// A report of an attempt that got no answer.
    pub(crate) fn unanswered(verdict: Verdict, duration: Duration) -> AttemptReport {
        AttemptReport {
            verdict,
            status: None,
            response: String::new(),
            duration,
        }
    }
}

/// Sorts an HTTP response by its status (and, for 3xx and retries, a few headers).
///
/// * 2xx → [`Verdict::Success`].
/// * 3xx → [`Verdict::Fail`] "HTTP 302 Found: redirect to example.org not followed"; only the
///   `Location` host is named, never its path or query string.
/// * 408, 429, 5xx → [`Verdict::Retry`], with `retry_after` from a valid `Retry-After` header
///   (at most [`MAX_RETRY_AFTER`], no minimum yet; see [`clamp_retry_after`]).
/// * anything else (other 4xx, 1xx) → [`Verdict::Fail`].
pub(crate) fn classify_http(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Verdict {
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

/// Sorts one answer of a chat service:
/// - 2xx: success;
/// - 429: retry after the longest wait the service asked for: `Retry-After`, and for Discord also
///   its reset headers and the body's `retry_after` (see [`discord_retry_after`]); every hint is
///   bounded by [`MAX_RETRY_AFTER`];
/// - 408 and 5xx: retry (honouring `Retry-After`);
/// - 404 and 410 from Slack or Discord: fail with `webhook gone (404)` (the webhook or channel was
///   deleted; the destination should be marked failing);
/// - 3xx (redirects are not followed) and other 4xx: fail.
pub(crate) fn classify_chat(
    kind: ChatKind,
    status: u16,
    headers: &HeaderMap,
    body_snippet: &str,
    now: SystemTime,
) -> Verdict {
    let retry_after_header = retry_after_header(headers, now);
    match status {
        200..=299 => Verdict::Success,
        429 => Verdict::Retry {
            reason: format!("rate limited by {} (429)", kind.as_str()),
            retry_after: if kind == ChatKind::Discord {
                discord_retry_after(headers, body_snippet, now)
            } else {
                retry_after_header
            },
        },
        408 | 500..=599 => Verdict::Retry {
            reason: format!("{} answered {status}", kind.as_str()),
            retry_after: retry_after_header,
        },
        404 | 410 if matches!(kind, ChatKind::Slack | ChatKind::Discord) => Verdict::Fail {
            reason: format!("webhook gone ({status})"),
        },
        300..=399 => Verdict::Fail {
            reason: format!(
                "{} answered {status} (redirects are not followed)",
                kind.as_str()
            ),
        },
        _ => Verdict::Fail {
            reason: format!("{} answered {status}", kind.as_str()),
        },
    }
}

/// Sorts an HTTP request to `url` that got no usable answer (a transport-level reqwest error: no
/// response, or a failure while reading one).
///
/// Timeouts, connect errors (refused, DNS, TLS, an address the egress rules refuse), resets and
/// other send failures are [`Verdict::Retry`]; an error building the request or a redirect error
/// is [`Verdict::Fail`]. The reason is a short phrase ("timed out after 15s", naming the request's
/// `timeout`; "connection refused"; "connection failed: dns error: ...") built from the error's
/// cause chain with every sensitive part of `url` scrubbed out.
pub(crate) fn classify_transport(e: &reqwest::Error, url: &url::Url, timeout: Duration) -> Verdict {
    let cause = Scrubber::new()
        .url(url)
        .scrub(&scrub::root_cause(e).unwrap_or_else(|| "unknown error".to_string()));
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
        format!("timed out after {}", human(timeout))
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
    let io = scrub::sources(e).find_map(|s| s.downcast_ref::<std::io::Error>())?;
    Some(match io.kind() {
        ErrorKind::ConnectionRefused => "connection refused",
        ErrorKind::ConnectionReset => "connection reset",
        ErrorKind::ConnectionAborted => "connection aborted",
        ErrorKind::TimedOut => "timed out",
        ErrorKind::UnexpectedEof => "connection closed early",
        ErrorKind::BrokenPipe => "connection closed (broken pipe)",
        ErrorKind::AddrNotAvailable => "address not available",
        _ => return None,
    })
}

/// What went wrong publishing to a NATS or AMQP broker. Each text is scrubbed by the sink (no
/// URL userinfo, no password) before it gets here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BrokerFailure {
    /// Connecting failed (refused, DNS, TLS, authentication), or the egress rules refused the
    /// address.
    Connect(String),
    /// The publish, connecting and the ack included, took longer than the destination's timeout.
    Timeout(Duration),
    /// The broker took the message but did not acknowledge it (a nack, an ack timeout, a closed
    /// channel, no stream for the subject, no queue for the routing key).
    NotAcknowledged(String),
    /// The message is larger than the broker accepts (bytes, and its limit).
    TooLarge(usize, usize),
}

/// Sorts a broker failure: only a message the broker can never take fails; a broker that is down,
/// slow or not set up yet is retried, so no change is lost while it is fixed.
pub(crate) fn classify_broker(f: BrokerFailure) -> Verdict {
    let retry = |reason: String| Verdict::Retry {
        reason: bounded(reason),
        retry_after: None,
    };
    match f {
        BrokerFailure::Connect(why) => retry(format!("connection failed: {why}")),
        BrokerFailure::Timeout(t) => retry(format!("timed out after {}", human(t))),
        BrokerFailure::NotAcknowledged(why) => retry(format!("not acknowledged: {why}")),
        BrokerFailure::TooLarge(size, max) => Verdict::Fail {
            reason: format!(
                "the message ({size} bytes) is larger than the broker accepts ({max} bytes)"
            ),
        },
    }
}

/// "15s", "1.5s", "250ms": a timeout in words.
fn human(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Sorts an SMTP error: a permanent (5xx) answer fails; a transient (4xx) answer, a timeout, a
/// TLS or connection error retries. The reason names the code, never the reply text (which may
/// quote the recipient).
pub(crate) fn classify_smtp(e: &lettre::transport::smtp::Error) -> Verdict {
    let code = e.status().map(u16::from);
    let retry = |reason: String| Verdict::Retry {
        reason,
        retry_after: None,
    };
    if e.is_permanent() {
        Verdict::Fail {
            reason: format!("SMTP {} permanent failure", code.unwrap_or(500)),
        }
    } else if e.is_transient() {
        retry(format!("SMTP {} temporary failure", code.unwrap_or(400)))
    } else if e.is_timeout() {
        retry("SMTP timed out".into())
    } else if e.is_tls() {
        retry("SMTP TLS error".into())
    } else {
        retry("SMTP connection error".into())
    }
}

/// Cuts a reason to [`MAX_REASON_BYTES`].
fn bounded(s: String) -> String {
    if s.len() <= MAX_REASON_BYTES {
        s
    } else {
        crate::model::truncate_utf8(&s, MAX_REASON_BYTES).to_string()
    }
}

/// Discord's rate-limit hints on a 429, the longest wait of: `Retry-After`,
/// `X-RateLimit-Reset-After` (seconds, a float) and the body's JSON `retry_after` (see
/// [`discord_body_retry_after`]); each bounded by [`MAX_RETRY_AFTER`]. `X-RateLimit-Reset` (a
/// Unix time) is not read: it says the same as `X-RateLimit-Reset-After`, but through two clocks,
/// so any skew between them would lengthen the wait.
pub(crate) fn discord_retry_after(
    headers: &HeaderMap,
    body: &str,
    now: SystemTime,
) -> Option<Duration> {
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
pub(crate) fn discord_body_retry_after(body: &str) -> Option<Duration> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let n = v.get("retry_after")?.as_f64()?;
    if n > 60.0 && n.fract() == 0.0 {
        bounded_secs(n / 1000.0)
    } else {
        bounded_secs(n)
    }
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
    pub(crate) fn next_delay(
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
    fn classify_answers() {
        let now = SystemTime::now();
        let none = HeaderMap::new();
        assert_eq!(
            classify_chat(ChatKind::Slack, 200, &none, "ok", now),
            Verdict::Success
        );
        assert_eq!(
            classify_chat(ChatKind::Discord, 204, &none, "", now),
            Verdict::Success
        );
        assert_eq!(
            classify_chat(ChatKind::Slack, 404, &none, "no_service", now),
            Verdict::Fail {
                reason: "webhook gone (404)".into()
            }
        );
        assert_eq!(
            classify_chat(ChatKind::Discord, 404, &none, "{}", now),
            Verdict::Fail {
                reason: "webhook gone (404)".into()
            }
        );
        assert!(
            matches!(classify_chat(ChatKind::Slack, 410, &none, "", now), Verdict::Fail { reason } if reason == "webhook gone (410)")
        );
        assert!(matches!(
            classify_chat(ChatKind::Teams, 400, &none, "", now),
            Verdict::Fail { .. }
        ));
        assert!(matches!(
            classify_chat(ChatKind::Teams, 302, &none, "", now),
            Verdict::Fail { .. }
        ));
        assert!(matches!(
            classify_chat(ChatKind::GoogleChat, 503, &none, "", now),
            Verdict::Retry {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(
            classify_chat(ChatKind::GoogleChat, 408, &none, "", now),
            Verdict::Retry { .. }
        ));
    }

    fn retry_after(v: Verdict) -> Option<Duration> {
        match v {
            Verdict::Retry { retry_after, .. } => retry_after,
            other => panic!("not a retry: {other:?}"),
        }
    }

    #[test]
    fn rate_limits_are_honoured() {
        let now = SystemTime::now();
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(
            retry_after(classify_chat(ChatKind::Slack, 429, &h, "", now)),
            Some(Duration::from_secs(7))
        );
        let none = HeaderMap::new();
        let body =
            r#"{"message": "You are being rate limited.", "retry_after": 2.5, "global": false}"#;
        assert_eq!(
            retry_after(classify_chat(ChatKind::Discord, 429, &none, body, now)),
            Some(Duration::from_millis(2500))
        );
        // Old API: whole milliseconds.
        let old = r#"{"retry_after": 1500}"#;
        assert_eq!(
            retry_after(classify_chat(ChatKind::Discord, 429, &none, old, now)),
            Some(Duration::from_millis(1500))
        );
        // Discord headers; the longest hint wins.
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset-after", HeaderValue::from_static("3.25"));
        h.insert("retry-after", HeaderValue::from_static("1"));
        assert_eq!(
            retry_after(classify_chat(ChatKind::Discord, 429, &h, body, now)),
            Some(Duration::from_millis(3250))
        );
        // Only Discord reads the body.
        assert_eq!(
            retry_after(classify_chat(ChatKind::Slack, 429, &none, body, now)),
            None
        );
        // HTTP date.
        let mut h = HeaderMap::new();
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        h.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let d = retry_after(classify_chat(ChatKind::Teams, 503, &h, "", now)).unwrap();
        assert!(
            d <= Duration::from_secs(120) && d >= Duration::from_secs(118),
            "{d:?}"
        );
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(15)), "15s");
        assert_eq!(human(Duration::from_millis(300)), "300ms");
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn a_broker_that_is_down_or_not_set_up_is_retried_and_only_an_oversized_message_fails() {
        let retried = [
            BrokerFailure::Connect("connection refused".into()),
            BrokerFailure::Timeout(Duration::from_secs(2)),
            BrokerFailure::NotAcknowledged("no stream found for given subject".into()),
        ];
        for f in retried {
            assert!(matches!(classify_broker(f), Verdict::Retry { .. }));
        }
        assert_eq!(
            classify_broker(BrokerFailure::Timeout(Duration::from_millis(1500))),
            Verdict::Retry {
                reason: "timed out after 1.5s".into(),
                retry_after: None
            }
        );
        assert!(matches!(
            classify_broker(BrokerFailure::TooLarge(2_000_000, 1_048_576)),
            Verdict::Fail { .. }
        ));
    }
}
