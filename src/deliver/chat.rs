//! Chat destinations: Slack, Microsoft Teams (Workflows webhooks), Discord and Google Chat.
//!
//! A chat delivery is one POST of a JSON body built by [`body`] from the rendered text to the
//! destination's incoming-webhook URL. [`classify`] turns the answer into a [`Verdict`]; [`send`]
//! does both. Webhook URLs carry their own credentials, so they never appear in errors or logs.

use crate::deliver::outcome;
use crate::model::{truncate_utf8, AttemptReport, Verdict, RESPONSE_SNIPPET_BYTES};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime};
use url::Url;

pub use crate::config::destination::ChatKind;

/// What is appended to a message that had to be cut.
pub const TRUNCATION_MARKER: &str = "… [truncated]";

/// Slack shows at most 40,000 characters of a message's `text`.
pub const SLACK_MAX_CHARS: usize = 40_000;
/// Discord rejects a `content` longer than 2,000 characters.
pub const DISCORD_MAX_CHARS: usize = 2_000;
/// Teams rejects a Workflows webhook payload above about 28 KB; this is the whole JSON body.
pub const TEAMS_MAX_BODY_BYTES: usize = 28_000;
/// Google Chat rejects a message above 32,000 bytes; this is the whole JSON body.
pub const GOOGLE_CHAT_MAX_BODY_BYTES: usize = 32_000;

/// Slack allows about one message per second per incoming webhook.
pub const SLACK_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Teams Workflows webhooks throttle bursts; four a second stays clear of it.
pub const TEAMS_MIN_INTERVAL: Duration = Duration::from_millis(250);
/// Google Chat allows 60 messages a minute per space.
pub const GOOGLE_CHAT_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Discord tells its limits in `X-RateLimit-*` headers and 429 answers, so no fixed pacing.
pub const DISCORD_MIN_INTERVAL: Duration = Duration::ZERO;

/// The least time between two messages to one destination of this kind, so a burst of changes does
/// not run into the service's rate limit. A 429 is still honoured by [`classify`].
pub fn min_interval(kind: ChatKind) -> Duration {
    match kind {
        ChatKind::Slack => SLACK_MIN_INTERVAL,
        ChatKind::Teams => TEAMS_MIN_INTERVAL,
        ChatKind::GoogleChat => GOOGLE_CHAT_MIN_INTERVAL,
        ChatKind::Discord => DISCORD_MIN_INTERVAL,
    }
}

/// Cuts `text` to at most `max` characters, ending with [`TRUNCATION_MARKER`] when cut.
fn cut_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let keep = max.saturating_sub(TRUNCATION_MARKER.chars().count());
    let mut out: String = text.chars().take(keep).collect();
    out.push_str(TRUNCATION_MARKER);
    out
}

/// A zero-width space: invisible, but it breaks the syntax a value would otherwise form
/// (`<users/all>`, `@everyone`, `](`) where the service has no escape for it.
const ZWSP: char = '\u{200B}';

/// Escapes one value from a record (anything a template prints with `{{...}}`) for the chat
/// service it goes to, so that it shows as the text it is and never becomes a mention, a link or
/// formatting. Templates' own text is not escaped: a template may use the service's markup.
///
/// * Slack: `&`, `<`, `>` as entities, as Slack asks (`<!channel>`, `<@U123>`, `<url|text>` are
///   made of them).
/// * Teams (Adaptive Card Markdown, a CommonMark subset) and Discord (Markdown): a backslash
///   before every character Markdown gives a meaning (emphasis, links, headings, quotes, code,
///   spoilers, `<...>` autolinks and mentions such as `<@id>`). Discord also gets a zero-width
///   space after the `@` of `@everyone` and `@here`, so they stay text even where
///   `allowed_mentions` is not honoured.
/// * Google Chat: a zero-width space after every `<` (`<users/all>`, `<users/123>` and
///   `<url|text>` are its mention and link syntax, with no escape) and between `]` and `(` (a
///   Markdown link, for spaces whose app reads Markdown).
pub fn escape(kind: ChatKind, value: &str) -> String {
    let mut out = String::with_capacity(value.len() + value.len() / 8);
    for (i, c) in value.char_indices() {
        let rest = &value[i + c.len_utf8()..];
        match kind {
            ChatKind::Slack => match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                c => out.push(c),
            },
            ChatKind::Teams | ChatKind::Discord => {
                if matches!(
                    c,
                    '\\' | '*' | '_' | '~' | '`' | '|' | '<' | '>' | '[' | ']' | '#'
                ) {
                    out.push('\\');
                }
                out.push(c);
                // Only before the two words Discord reads as everyone-mentions, so an email
                // address copied out of a message has no invisible character in it.
                if c == '@'
                    && kind == ChatKind::Discord
                    && (rest.starts_with("everyone") || rest.starts_with("here"))
                {
                    out.push(ZWSP);
                }
            }
            ChatKind::GoogleChat => {
                if c == '(' && out.ends_with(']') {
                    out.push(ZWSP);
                }
                out.push(c);
                if c == '<' {
                    out.push(ZWSP);
                }
            }
        }
    }
    out
}

fn envelope(kind: ChatKind, text: &str) -> Value {
    match kind {
        ChatKind::Slack | ChatKind::GoogleChat => json!({ "text": text }),
        // No @everyone / role / user pings from record contents.
        ChatKind::Discord => json!({ "content": text, "allowed_mentions": { "parse": [] } }),
        ChatKind::Teams => json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [{ "type": "TextBlock", "text": text, "wrap": true }]
                }
            }]
        }),
    }
}

fn to_bytes(v: &Value) -> Vec<u8> {
    // Serializing a `Value` cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// The JSON body for one message of `text`, cut with [`TRUNCATION_MARKER`] to the service's limit:
/// Slack `{"text"}` (at most [`SLACK_MAX_CHARS`]), Teams an Adaptive Card with one wrapping
/// `TextBlock` (body at most [`TEAMS_MAX_BODY_BYTES`]), Discord `{"content"}` (at most
/// [`DISCORD_MAX_CHARS`], `allowed_mentions` empty so nothing in it can ping), Google Chat
/// `{"text"}` (body at most [`GOOGLE_CHAT_MAX_BODY_BYTES`]).
///
/// `text` is the rendered template, whose record values are already escaped for `kind` (see
/// [`escape`]); the template's own markup is sent as written.
pub fn body(kind: ChatKind, text: &str) -> Vec<u8> {
    match kind {
        ChatKind::Slack => to_bytes(&envelope(kind, &cut_chars(text, SLACK_MAX_CHARS))),
        ChatKind::Discord => to_bytes(&envelope(kind, &cut_chars(text, DISCORD_MAX_CHARS))),
        ChatKind::Teams => cut_to_bytes(kind, text, TEAMS_MAX_BODY_BYTES),
        ChatKind::GoogleChat => cut_to_bytes(kind, text, GOOGLE_CHAT_MAX_BODY_BYTES),
    }
}

/// Cuts the text until the whole serialized body fits in `max` bytes (JSON escaping can make the
/// body longer than the text, so the size is measured after serializing).
fn cut_to_bytes(kind: ChatKind, text: &str, max: usize) -> Vec<u8> {
    let full = to_bytes(&envelope(kind, text));
    if full.len() <= max {
        return full;
    }
    let build = |keep: usize| {
        let mut t = truncate_utf8(text, keep).to_string();
        t.push_str(TRUNCATION_MARKER);
        to_bytes(&envelope(kind, &t))
    };
    // Binary search for the longest prefix whose body fits.
    let (mut lo, mut hi) = (0usize, text.len().min(max));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if build(mid).len() <= max {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    build(lo)
}

/// Sorts one answer of a chat service:
/// - 2xx: success;
/// - 429: retry after the longest wait the service asked for: `Retry-After`, and for Discord also
///   its reset headers and the body's `retry_after` (see [`outcome::discord_retry_after`]); every
///   hint is bounded by [`outcome::MAX_RETRY_AFTER`];
/// - 408 and 5xx: retry (honouring `Retry-After`);
/// - 404 and 410 from Slack or Discord: fail with `webhook gone (404)` (the webhook or channel was
///   deleted; the destination should be marked failing);
/// - 3xx (redirects are not followed) and other 4xx: fail.
pub fn classify(
    kind: ChatKind,
    status: u16,
    headers: &HeaderMap,
    body_snippet: &str,
    now: SystemTime,
) -> Verdict {
    let retry_after_header = outcome::retry_after_header(headers, now);
    match status {
        200..=299 => Verdict::Success,
        429 => Verdict::Retry {
            reason: format!("rate limited by {} (429)", kind.as_str()),
            retry_after: if kind == ChatKind::Discord {
                outcome::discord_retry_after(headers, body_snippet, now)
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

/// An error's text with the URL, its path and its query removed (chat webhook URLs are secrets;
/// the host is kept, it helps and is not secret).
fn scrub(text: &str, url: &Url) -> String {
    let mut s = text.replace(url.as_str(), "<webhook url>");
    if url.path().len() > 1 {
        s = s.replace(url.path(), "/…");
    }
    if let Some(q) = url.query().filter(|q| !q.is_empty()) {
        s = s.replace(q, "…");
    }
    s
}

fn error_text(e: &reqwest::Error, url: &Url) -> String {
    let mut msg = String::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&err.to_string());
        cur = err.source();
    }
    scrub(&msg, url)
}

/// POSTs `body` (JSON) to the webhook `url` with `client` (build it with
/// `redirect(reqwest::redirect::Policy::none())`, so a 3xx is seen and failed as the spec says),
/// reads at most [`RESPONSE_SNIPPET_BYTES`] of the
/// answer and classifies it. Timeouts and connection errors retry; a request that cannot even be
/// built fails. Error text never contains the URL.
pub async fn send(
    client: &reqwest::Client,
    kind: ChatKind,
    url: &Url,
    body: Vec<u8>,
    timeout: Duration,
) -> AttemptReport {
    let started = Instant::now();
    let result = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .timeout(timeout)
        .body(body)
        .send()
        .await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            let e = e.without_url();
            let reason = error_text(&e, url);
            let verdict = if e.is_builder() {
                Verdict::Fail { reason }
            } else {
                let what = if e.is_timeout() {
                    "timed out"
                } else {
                    "request failed"
                };
                Verdict::Retry {
                    reason: format!("{} {what}: {reason}", kind.as_str()),
                    retry_after: None,
                }
            };
            tracing::debug!(
                chat = kind.as_str(),
                "chat delivery attempt failed before an answer"
            );
            return AttemptReport {
                verdict,
                status: None,
                response: String::new(),
                duration: started.elapsed(),
            };
        }
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut buf: Vec<u8> = Vec::new();
    // Read at most the snippet; a body error after the status is known does not change the verdict.
    while buf.len() < RESPONSE_SNIPPET_BYTES {
        match tokio::time::timeout(timeout, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => buf.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let snippet = truncate_utf8(&text, RESPONSE_SNIPPET_BYTES).to_string();
    let verdict = classify(kind, status, &headers, &snippet, SystemTime::now());
    tracing::debug!(
        chat = kind.as_str(),
        status,
        "chat delivery attempt answered"
    );
    AttemptReport {
        verdict,
        status: Some(status),
        response: snippet,
        duration: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn body_shapes() {
        // The body carries the rendered text as it is: values were escaped while rendering, and
        // the template's own markup (a Slack link) must survive.
        assert_eq!(
            parse(&body(
                ChatKind::Slack,
                "hi <https://clinic.example|open> & co"
            )),
            json!({"text": "hi <https://clinic.example|open> & co"})
        );
        assert_eq!(
            parse(&body(ChatKind::GoogleChat, "hi")),
            json!({"text": "hi"})
        );
        assert_eq!(
            parse(&body(ChatKind::Discord, "hi @everyone")),
            json!({"content": "hi @everyone", "allowed_mentions": {"parse": []}})
        );
        let t = parse(&body(ChatKind::Teams, "hi"));
        assert_eq!(t["type"], "message");
        let a = &t["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(a["content"]["type"], "AdaptiveCard");
        assert_eq!(a["content"]["version"], "1.4");
        assert_eq!(
            a["content"]["body"][0],
            json!({"type": "TextBlock", "text": "hi", "wrap": true})
        );
    }

    #[test]
    fn values_are_escaped_for_each_service() {
        let hostile = "<users/all> [click](https://evil.example) @everyone <@123> **x** a_b";
        assert_eq!(
            escape(ChatKind::Slack, hostile),
            "&lt;users/all&gt; [click](https://evil.example) @everyone &lt;@123&gt; **x** a_b"
        );
        assert_eq!(
            escape(ChatKind::Slack, "<!channel> & co"),
            "&lt;!channel&gt; &amp; co"
        );
        let md = r"\<users/all\> \[click\](https://evil.example) @everyone \<@123\> \*\*x\*\* a\_b";
        assert_eq!(escape(ChatKind::Teams, hostile), md);
        assert_eq!(
            escape(ChatKind::Discord, hostile),
            md.replace("@everyone", "@\u{200B}everyone")
        );
        assert_eq!(
            escape(ChatKind::Discord, "@here a@b.example"),
            "@\u{200B}here a@b.example"
        );
        assert_eq!(
            escape(ChatKind::GoogleChat, hostile),
            "<\u{200B}users/all> [click]\u{200B}(https://evil.example) @everyone <\u{200B}@123> **x** a_b"
        );
        // Plain values are left alone.
        for kind in [
            ChatKind::Slack,
            ChatKind::Teams,
            ChatKind::Discord,
            ChatKind::GoogleChat,
        ] {
            assert_eq!(
                escape(kind, "Ayesha Khan, +92 300 1234567 (Website)"),
                "Ayesha Khan, +92 300 1234567 (Website)"
            );
        }
    }

    #[test]
    fn long_messages_are_cut_with_a_marker() {
        let long = "é".repeat(50_000);
        let d = parse(&body(ChatKind::Discord, &long));
        let c = d["content"].as_str().unwrap();
        assert_eq!(c.chars().count(), DISCORD_MAX_CHARS);
        assert!(c.ends_with(TRUNCATION_MARKER));
        let s = parse(&body(ChatKind::Slack, &long));
        assert_eq!(s["text"].as_str().unwrap().chars().count(), SLACK_MAX_CHARS);
        // Quotes double in JSON: the byte limit is on the serialized body.
        let quoted = "\"".repeat(40_000);
        let t = body(ChatKind::Teams, &quoted);
        assert!(
            t.len() <= TEAMS_MAX_BODY_BYTES && t.len() > TEAMS_MAX_BODY_BYTES - 100,
            "{}",
            t.len()
        );
        assert!(parse(&t)["attachments"][0]["content"]["body"][0]["text"]
            .as_str()
            .unwrap()
            .ends_with(TRUNCATION_MARKER));
        let g = body(ChatKind::GoogleChat, &long);
        assert!(
            g.len() <= GOOGLE_CHAT_MAX_BODY_BYTES && g.len() > GOOGLE_CHAT_MAX_BODY_BYTES - 100
        );
        assert!(parse(&g)["text"]
            .as_str()
            .unwrap()
            .ends_with(TRUNCATION_MARKER));
        // Short messages are untouched.
        assert_eq!(parse(&body(ChatKind::Discord, "short"))["content"], "short");
    }

    #[test]
    fn classify_answers() {
        let now = SystemTime::now();
        let none = HeaderMap::new();
        assert_eq!(
            classify(ChatKind::Slack, 200, &none, "ok", now),
            Verdict::Success
        );
        assert_eq!(
            classify(ChatKind::Discord, 204, &none, "", now),
            Verdict::Success
        );
        assert_eq!(
            classify(ChatKind::Slack, 404, &none, "no_service", now),
            Verdict::Fail {
                reason: "webhook gone (404)".into()
            }
        );
        assert_eq!(
            classify(ChatKind::Discord, 404, &none, "{}", now),
            Verdict::Fail {
                reason: "webhook gone (404)".into()
            }
        );
        assert!(
            matches!(classify(ChatKind::Slack, 410, &none, "", now), Verdict::Fail { reason } if reason == "webhook gone (410)")
        );
        assert!(matches!(
            classify(ChatKind::Teams, 400, &none, "", now),
            Verdict::Fail { .. }
        ));
        assert!(matches!(
            classify(ChatKind::Teams, 302, &none, "", now),
            Verdict::Fail { .. }
        ));
        assert!(matches!(
            classify(ChatKind::GoogleChat, 503, &none, "", now),
            Verdict::Retry {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(
            classify(ChatKind::GoogleChat, 408, &none, "", now),
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
            retry_after(classify(ChatKind::Slack, 429, &h, "", now)),
            Some(Duration::from_secs(7))
        );
        let none = HeaderMap::new();
        let body =
            r#"{"message": "You are being rate limited.", "retry_after": 2.5, "global": false}"#;
        assert_eq!(
            retry_after(classify(ChatKind::Discord, 429, &none, body, now)),
            Some(Duration::from_millis(2500))
        );
        // Old API: whole milliseconds.
        let old = r#"{"retry_after": 1500}"#;
        assert_eq!(
            retry_after(classify(ChatKind::Discord, 429, &none, old, now)),
            Some(Duration::from_millis(1500))
        );
        // Discord headers; the longest hint wins.
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset-after", HeaderValue::from_static("3.25"));
        h.insert("retry-after", HeaderValue::from_static("1"));
        assert_eq!(
            retry_after(classify(ChatKind::Discord, 429, &h, body, now)),
            Some(Duration::from_millis(3250))
        );
        // Only Discord reads the body.
        assert_eq!(
            retry_after(classify(ChatKind::Slack, 429, &none, body, now)),
            None
        );
        // HTTP date.
        let mut h = HeaderMap::new();
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        h.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let d = retry_after(classify(ChatKind::Teams, 503, &h, "", now)).unwrap();
        assert!(
            d <= Duration::from_secs(120) && d >= Duration::from_secs(118),
            "{d:?}"
        );
    }

    #[test]
    fn min_intervals() {
        assert_eq!(min_interval(ChatKind::Slack), Duration::from_secs(1));
        assert_eq!(min_interval(ChatKind::Teams), Duration::from_millis(250));
        assert_eq!(min_interval(ChatKind::GoogleChat), Duration::from_secs(1));
        assert_eq!(min_interval(ChatKind::Discord), Duration::ZERO);
    }

    #[tokio::test]
    async fn send_against_a_local_server_and_a_dead_port() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let _ = s.read(&mut buf).await.unwrap();
            let body = r#"{"retry_after": 0.75}"#;
            let resp = format!(
                "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await.unwrap();
        });
        let client = reqwest::Client::new();
        let url = Url::parse(&format!("http://{addr}/api/webhooks/123/SECRET-TOKEN")).unwrap();
        let r = send(
            &client,
            ChatKind::Discord,
            &url,
            body(ChatKind::Discord, "x"),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(r.status, Some(429));
        assert_eq!(retry_after(r.verdict), Some(Duration::from_millis(750)));

        // Nothing listens: retry, and the secret path is not in the reason.
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let url = Url::parse(&format!("http://{dead_addr}/services/T0/B0/SECRET-TOKEN")).unwrap();
        let r = send(
            &client,
            ChatKind::Slack,
            &url,
            body(ChatKind::Slack, "x"),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(r.status, None);
        match r.verdict {
            Verdict::Retry { reason, .. } => assert!(!reason.contains("SECRET"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
