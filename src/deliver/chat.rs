//! Chat sinks: posting a message to Slack, Microsoft Teams (Workflows webhooks), Discord and
//! Google Chat, and pacing posts to each service's rate.
//!
//! A chat delivery is one POST of the JSON body planning built ([`crate::route::chat::body`]) to
//! the destination's incoming-webhook URL; the answer is sorted by
//! [`crate::deliver::outcome::classify_chat`]. Webhook URLs carry their own credentials, so they
//! never appear in errors or logs.

use crate::config::ChatKind;
use crate::deliver::outcome::{self, AttemptReport, RESPONSE_SNIPPET_BYTES};
use crate::model::{truncate_utf8, Verdict};
use std::time::{Duration, Instant, SystemTime};
use url::Url;

/// Slack allows about one message per second per incoming webhook.
pub(crate) const SLACK_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Teams Workflows webhooks throttle bursts; four a second stays clear of it.
pub(crate) const TEAMS_MIN_INTERVAL: Duration = Duration::from_millis(250);
/// Google Chat allows 60 messages a minute per space.
pub(crate) const GOOGLE_CHAT_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Discord tells its limits in `X-RateLimit-*` headers and 429 answers, so no fixed pacing.
pub(crate) const DISCORD_MIN_INTERVAL: Duration = Duration::ZERO;

/// The least time between two messages to one destination of this kind, so a burst of changes does
/// not run into the service's rate limit. A 429 is still honoured
/// ([`crate::deliver::outcome::classify_chat`]).
pub(crate) fn min_interval(kind: ChatKind) -> Duration {
    match kind {
        ChatKind::Slack => SLACK_MIN_INTERVAL,
        ChatKind::Teams => TEAMS_MIN_INTERVAL,
        ChatKind::GoogleChat => GOOGLE_CHAT_MIN_INTERVAL,
        ChatKind::Discord => DISCORD_MIN_INTERVAL,
    }
}

/// POSTs `body` (JSON) to the webhook `url` with `client` (build it with
/// `redirect(reqwest::redirect::Policy::none())`, so a 3xx is seen and failed as the spec says),
/// reads at most [`RESPONSE_SNIPPET_BYTES`] of the answer and classifies it. Timeouts and
/// connection errors retry; a request that cannot even be built fails. Error text never contains
/// the URL's path or query (the webhook's token).
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
            // The service's name first: the reason is read in a list of every destination's.
            let verdict = match outcome::classify_transport(&e, url, timeout) {
                Verdict::Retry {
                    reason,
                    retry_after,
                } => Verdict::Retry {
                    reason: format!("{} {reason}", kind.as_str()),
                    retry_after,
                },
                Verdict::Fail { reason } => Verdict::Fail {
                    reason: format!("{} {reason}", kind.as_str()),
                },
                success => success,
            };
            tracing::debug!(
                chat = kind.as_str(),
                "chat delivery attempt failed before an answer"
            );
            return AttemptReport::unanswered(verdict, started.elapsed());
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
    let verdict = outcome::classify_chat(kind, status, &headers, &snippet, SystemTime::now());
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
    use crate::route::chat::body;

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
            body(ChatKind::Discord, "x").into_bytes(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(r.status, Some(429));
        assert!(
            matches!(r.verdict, Verdict::Retry { retry_after: Some(d), .. } if d == Duration::from_millis(750)),
            "{:?}",
            r.verdict
        );

        // Nothing listens: retry, and the secret path is not in the reason.
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let url = Url::parse(&format!("http://{dead_addr}/services/T0/B0/SECRET-TOKEN")).unwrap();
        let r = send(
            &client,
            ChatKind::Slack,
            &url,
            body(ChatKind::Slack, "x").into_bytes(),
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
