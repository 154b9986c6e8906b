//! Standard Webhooks: secrets, signing, verification and the signed POST itself.
//!
//! A receiver gets `POST` with `content-type: application/json` and the headers `webhook-id` (the
//! change id, the same on every attempt), `webhook-timestamp` (seconds since the epoch, fresh on
//! every attempt) and `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
//! keyed with the bytes of the secret's base64 after `whsec_`, one space-separated entry per secret
//! while secrets rotate. See <https://www.standardwebhooks.com/>.
//!
//! [`send`] makes one attempt and sorts its outcome with [`crate::deliver::outcome`]; retrying is the
//! caller's business. Secrets, bodies, URLs' query strings and extra header values never appear in
//! errors, reasons or `Debug` output.

use crate::config::secret::B64_LENIENT;
use crate::deliver::outcome::{self, AttemptReport, RESPONSE_SNIPPET_BYTES};
use crate::model::{truncate_utf8, Verdict};
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, USER_AGENT};
use sha2::Sha256;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Secret, WebhookTarget};

type HmacSha256 = Hmac<Sha256>;

/// The `user-agent` sent with every webhook.
pub(crate) const USER_AGENT_VALUE: &str = concat!("clinicea-notifier/", env!("CARGO_PKG_VERSION"));

/// How far a receiver should let `webhook-timestamp` drift from its clock (the spec's 5 minutes).
pub(crate) const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The header carrying the message id.
pub(crate) const HEADER_ID: &str = "webhook-id";
/// The header carrying the signing time, seconds since the epoch.
pub(crate) const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying the signatures.
pub(crate) const HEADER_SIGNATURE: &str = "webhook-signature";

/// A keyed HMAC ready for input.
fn mac(secret: &Secret) -> HmacSha256 {
    match HmacSha256::new_from_slice(secret.key()) {
        Ok(m) => m,
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// The MAC over `{msg_id}.{timestamp}.{body}`.
fn mac_over(secret: &Secret, msg_id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = mac(secret);
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Signs one message: `v1,<base64>` per secret, space-separated, in the order given.
///
/// An empty `secrets` gives an empty string; [`send`] refuses to send in that case.
pub(crate) fn sign(secrets: &[Secret], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mut out = String::new();
    for secret in secrets {
        if !out.is_empty() {
            out.push(' ');
        }
        let tag = mac_over(secret, msg_id, &ts, body).finalize().into_bytes();
        out.push_str("v1,");
        out.push_str(&base64::engine::general_purpose::STANDARD.encode(tag));
    }
    out
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum VerifyError {
    /// `webhook-timestamp` is empty.
    #[error("missing webhook-timestamp")]
    MissingTimestamp,
    /// `webhook-timestamp` is not an integer number of seconds.
    #[error("webhook-timestamp is not an integer")]
    BadTimestamp,
    /// The timestamp is older than the tolerance allows (a replay, or a very slow path).
    #[error("webhook-timestamp is too old")]
    TooOld,
    /// The timestamp is further in the future than the tolerance allows.
    #[error("webhook-timestamp is too far in the future")]
    TooNew,
    /// `webhook-signature` is empty or has no `version,signature` entry at all.
    #[error("webhook-signature is malformed")]
    MalformedHeader,
    /// No `v1` entry matches the expected signature.
    #[error("no matching signature")]
    NoMatchingSignature,
}

/// Verifies one message against one secret, as a receiver would.
///
/// `timestamp` and `signature_header` are the raw header values; `now` is seconds since the epoch.
/// The timestamp must be within `tolerance` of `now` either way. Entries of other versions (`v1a,...`)
/// and undecodable entries are skipped; a `v1` entry matching in constant time is enough.
pub(crate) fn verify(
    secret: &Secret,
    msg_id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let ts_text = timestamp.trim();
    if ts_text.is_empty() {
        return Err(VerifyError::MissingTimestamp);
    }
    let ts: i64 = ts_text.parse().map_err(|_| VerifyError::BadTimestamp)?;
    let tol = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if now.saturating_sub(ts) > tol {
        return Err(VerifyError::TooOld);
    }
    if ts.saturating_sub(now) > tol {
        return Err(VerifyError::TooNew);
    }
    let entries: Vec<(&str, &str)> = signature_header
        .split_whitespace()
        .filter_map(|e| e.split_once(','))
        .collect();
    if entries.is_empty() {
        return Err(VerifyError::MalformedHeader);
    }
    // Sign over the timestamp as sent, the way the sender formatted it.
    let expected = mac_over(secret, msg_id, ts_text, body);
    let matched = entries
        .iter()
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, sig)| B64_LENIENT.decode(sig).ok())
        .any(|sig| expected.clone().verify_slice(&sig).is_ok());
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

/// The HTTP client for one webhook or chat destination's deliveries.
///
/// It never follows redirects (a 3xx is a failure, see [`crate::deliver::outcome`]), keeps idle connections
/// for 90 seconds, uses rustls and sends [`USER_AGENT_VALUE`]. Every name it resolves goes through
/// the destination's egress rules ([`crate::net::egress::guard`]): a name that resolves to a
/// link-local, metadata or (without `allow_private`) private address fails before connecting.
/// Proxy settings from the environment (`HTTPS_PROXY`, ...) are honoured as usual. Fails only if
/// the TLS backend cannot start.
pub(crate) fn client(
    egress: crate::net::egress::Policy,
) -> Result<reqwest::Client, reqwest::Error> {
    crate::net::egress::guard(client_builder(), egress).build()
}

/// [`client`]'s settings, before the resolver is chosen.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT_VALUE)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Duration::from_secs(60))
        .use_rustls_tls()
}

/// Seconds since the epoch, now.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Makes one signed delivery attempt and reports how it went.
///
/// Sends `POST target.url` with the body as is, `content-type: application/json`, `webhook-id:
/// msg_id`, `webhook-timestamp` (now) and `webhook-signature` signed afresh for this attempt, plus
/// the target's extra headers, within `target.timeout`. At most [`RESPONSE_SNIPPET_BYTES`] of the
/// response body are read (streamed; the rest is never downloaded). The verdict comes from
/// [`outcome::classify_http`] or [`outcome::classify_transport`]; a timeout reads
/// "timed out after 15s".
///
/// `client` should come from [`client`]: a client that follows redirects would hide 3xx answers.
pub async fn send(
    client: &reqwest::Client,
    target: &WebhookTarget,
    msg_id: &str,
    body: bytes::Bytes,
) -> AttemptReport {
    let started = Instant::now();
    let fail = |reason: &str| {
        AttemptReport::unanswered(
            Verdict::Fail {
                reason: reason.to_string(),
            },
            started.elapsed(),
        )
    };
    if target.secrets.is_empty() {
        return fail("no signing secret configured");
    }
    let Ok(id_value) = HeaderValue::from_str(msg_id) else {
        return fail("webhook-id is not a valid header value");
    };
    let timestamp = unix_now();
    let signature = sign(&target.secrets, msg_id, timestamp, &body);
    let Ok(sig_value) = HeaderValue::from_str(&signature) else {
        return fail("signature is not a valid header value");
    };

    let mut headers = HeaderMap::new();
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    for (name, value) in &target.headers {
        let mut value = value.clone();
        value.set_sensitive(true);
        headers.insert(name.clone(), value);
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(HeaderName::from_static(HEADER_ID), id_value);
    headers.insert(
        HeaderName::from_static(HEADER_TIMESTAMP),
        HeaderValue::from(timestamp),
    );
    headers.insert(HeaderName::from_static(HEADER_SIGNATURE), sig_value);

    let request = client
        .post(target.url.clone())
        .headers(headers)
        .timeout(target.timeout)
        .body(body);
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            return AttemptReport::unanswered(
                outcome::classify_transport(&e, &target.url, target.timeout),
                started.elapsed(),
            )
        }
    };

    let status = response.status();
    let verdict = outcome::classify_http(status, response.headers(), SystemTime::now());
    let mut snippet: Vec<u8> = Vec::new();
    // Stream the body and stop at the limit; a read error or timeout here does not change what
    // the status said (a 2xx was delivered whatever happens to its body).
    while snippet.len() < RESPONSE_SNIPPET_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = RESPONSE_SNIPPET_BYTES - snippet.len();
                snippet.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    drop(response);
    let text = String::from_utf8_lossy(&snippet);
    AttemptReport {
        verdict,
        status: Some(status.as_u16()),
        response: truncate_utf8(&text, RESPONSE_SNIPPET_BYTES).to_string(),
        duration: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::secret::SigningError;

    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn spec_secret() -> Secret {
        Secret::parse(SPEC_SECRET).unwrap()
    }

    #[test]
    fn spec_test_vector() {
        assert_eq!(
            sign(&[spec_secret()], SPEC_ID, SPEC_TS, SPEC_BODY),
            SPEC_SIG
        );
        verify(
            &spec_secret(),
            SPEC_ID,
            "1614265330",
            SPEC_SIG,
            SPEC_BODY,
            SPEC_TS + 10,
            DEFAULT_TOLERANCE,
        )
        .unwrap();
    }

    #[test]
    fn secret_parsing_and_redaction() {
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(SigningError::MissingPrefix)
        );
        let bad = Secret::parse("whsec_not base64!!").unwrap_err();
        assert_eq!(bad, SigningError::InvalidBase64);
        assert!(!bad.to_string().contains("not base64"));
        assert_eq!(
            Secret::parse("whsec_dGVzdA=="),
            Err(SigningError::TooShort(4))
        );
        assert_eq!(Secret::parse("whsec_"), Err(SigningError::TooShort(0)));
        // Whitespace (a trailing newline from a file or env var) is ignored; padding is optional.
        assert_eq!(
            Secret::parse(&format!(" {SPEC_SECRET}\n")).unwrap(),
            spec_secret()
        );
        let g = Secret::generate();
        assert_eq!(Secret::parse(&g.to_whsec()).unwrap(), g);
        let unpadded = g.to_whsec().trim_end_matches('=').to_string();
        assert_eq!(Secret::parse(&unpadded).unwrap(), g);
        assert_ne!(Secret::generate(), g);
        assert_eq!(format!("{g:?}"), "Secret(..)");
        assert_eq!(format!("{:?}", spec_secret()), "Secret(..)");
    }

    #[test]
    fn rotation_signs_with_each_secret() {
        let old = spec_secret();
        let new = Secret::generate();
        let header = sign(&[old.clone(), new.clone()], SPEC_ID, SPEC_TS, SPEC_BODY);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], SPEC_SIG);
        for s in [&old, &new] {
            verify(
                s,
                SPEC_ID,
                "1614265330",
                &header,
                SPEC_BODY,
                SPEC_TS,
                DEFAULT_TOLERANCE,
            )
            .unwrap();
        }
        let stranger = Secret::generate();
        assert_eq!(
            verify(
                &stranger,
                SPEC_ID,
                "1614265330",
                &header,
                SPEC_BODY,
                SPEC_TS,
                DEFAULT_TOLERANCE
            ),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(sign(&[], SPEC_ID, SPEC_TS, SPEC_BODY), "");
    }

    #[test]
    fn tolerance() {
        let s = spec_secret();
        let v = |now: i64| {
            verify(
                &s,
                SPEC_ID,
                "1614265330",
                SPEC_SIG,
                SPEC_BODY,
                now,
                DEFAULT_TOLERANCE,
            )
        };
        assert_eq!(v(SPEC_TS + 300), Ok(()));
        assert_eq!(v(SPEC_TS - 300), Ok(()));
        assert_eq!(v(SPEC_TS + 301), Err(VerifyError::TooOld));
        assert_eq!(v(SPEC_TS - 301), Err(VerifyError::TooNew));
        let r = |ts: &str| {
            verify(
                &s,
                SPEC_ID,
                ts,
                SPEC_SIG,
                SPEC_BODY,
                SPEC_TS,
                DEFAULT_TOLERANCE,
            )
        };
        assert_eq!(r(""), Err(VerifyError::MissingTimestamp));
        assert_eq!(r("soon"), Err(VerifyError::BadTimestamp));
        assert_eq!(r("1614265330.5"), Err(VerifyError::BadTimestamp));
        // A timestamp other than the signed one does not verify.
        assert_eq!(r("1614265331"), Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn tampering_is_detected() {
        let s = spec_secret();
        let v = |id: &str, sig: &str, body: &[u8]| {
            verify(&s, id, "1614265330", sig, body, SPEC_TS, DEFAULT_TOLERANCE)
        };
        assert_eq!(v(SPEC_ID, SPEC_SIG, SPEC_BODY), Ok(()));
        assert_eq!(
            v(SPEC_ID, SPEC_SIG, br#"{"test": 2432232315}"#),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            v("msg_other", SPEC_SIG, SPEC_BODY),
            Err(VerifyError::NoMatchingSignature)
        );
        let flipped = SPEC_SIG.replace("g0hM", "g1hM");
        assert_eq!(
            v(SPEC_ID, &flipped, SPEC_BODY),
            Err(VerifyError::NoMatchingSignature)
        );
        // Right signature under another version tag does not count.
        let v1a = SPEC_SIG.replace("v1,", "v1a,");
        assert_eq!(
            v(SPEC_ID, &v1a, SPEC_BODY),
            Err(VerifyError::NoMatchingSignature)
        );
        // Garbage entries are skipped when a good one follows.
        let mixed = format!("v1,!!!notb64 v2,abc {SPEC_SIG}");
        assert_eq!(v(SPEC_ID, &mixed, SPEC_BODY), Ok(()));
        assert_eq!(v(SPEC_ID, "", SPEC_BODY), Err(VerifyError::MalformedHeader));
        assert_eq!(
            v(
                SPEC_ID,
                "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                SPEC_BODY
            ),
            Err(VerifyError::MalformedHeader)
        );
    }

    #[test]
    fn cross_check_with_standardwebhooks_crate() {
        let theirs = standardwebhooks::Webhook::new(SPEC_SECRET).unwrap();
        let ours = spec_secret();
        let now = unix_now();
        let body = br#"{"type":"leads.added","data":{"id":"42","name":"\u00e9"}}"#;
        // Ours signs, theirs verifies.
        let other = Secret::generate();
        let sig = sign(&[other, ours.clone()], "msg_x", now, body);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(HEADER_ID, HeaderValue::from_static("msg_x"));
        headers.insert(HEADER_TIMESTAMP, HeaderValue::from(now));
        headers.insert(HEADER_SIGNATURE, HeaderValue::from_str(&sig).unwrap());
        theirs.verify(body, &headers).unwrap();
        // Theirs signs, ours verifies.
        let their_sig = theirs.sign("msg_y", now, body).unwrap();
        verify(
            &ours,
            "msg_y",
            &now.to_string(),
            &their_sig,
            body,
            now,
            DEFAULT_TOLERANCE,
        )
        .unwrap();
        // And both agree on the spec vector.
        assert_eq!(theirs.sign(SPEC_ID, SPEC_TS, SPEC_BODY).unwrap(), SPEC_SIG);
    }

    mod loopback {
        use super::super::*;
        use axum::body::Bytes as AxBytes;
        use axum::extract::State;
        use axum::http::{StatusCode, Uri};
        use axum::response::{IntoResponse, Response};
        use std::net::SocketAddr;
        use std::sync::{Arc, Mutex};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

        /// Every request the test server saw: path and query, headers, body.
        type Seen = Arc<Mutex<Vec<(String, HeaderMap, AxBytes)>>>;

        async fn handler(
            State(seen): State<Seen>,
            uri: Uri,
            headers: HeaderMap,
            body: AxBytes,
        ) -> Response {
            seen.lock().unwrap().push((uri.to_string(), headers, body));
            match uri.path() {
                "/ok" => (StatusCode::OK, "thanks").into_response(),
                "/500" => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
                "/429" => (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "2")],
                    "slow down",
                )
                    .into_response(),
                "/400" => (StatusCode::BAD_REQUEST, "bad").into_response(),
                "/302" => (
                    StatusCode::FOUND,
                    [("location", "/target?token=SECRET")],
                    "",
                )
                    .into_response(),
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    (StatusCode::OK, "late").into_response()
                }
                "/big" => (StatusCode::OK, "é".repeat(512 * 1024)).into_response(),
                _ => (StatusCode::NOT_FOUND, "target").into_response(),
            }
        }

        async fn server() -> (SocketAddr, Seen) {
            let seen: Seen = Arc::default();
            let app = axum::Router::new()
                .fallback(handler)
                .with_state(seen.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            (addr, seen)
        }

        fn target(addr: SocketAddr, path: &str, timeout: Duration) -> WebhookTarget {
            WebhookTarget {
                name: "test".into(),
                url: url::Url::parse(&format!("http://{addr}{path}")).unwrap(),
                secrets: vec![Secret::parse(SECRET).unwrap()],
                headers: vec![
                    (
                        HeaderName::from_static("x-extra"),
                        HeaderValue::from_static("yes"),
                    ),
                    // Extra headers cannot forge the signed ones.
                    (
                        HeaderName::from_static("webhook-id"),
                        HeaderValue::from_static("forged"),
                    ),
                ],
                timeout,
            }
        }

        const BODY: &[u8] = br#"{"type":"leads.added","data":{"id":"42"}}"#;

        async fn send_to(addr: SocketAddr, path: &str, timeout: Duration) -> AttemptReport {
            let c = client(crate::net::egress::Policy::destination("test", false)).unwrap();
            let t = target(addr, path, timeout);
            send(&c, &t, "msg_abc", bytes::Bytes::from_static(BODY)).await
        }

        #[tokio::test]
        async fn success_is_signed_and_verifiable() {
            let (addr, seen) = server().await;
            let r = send_to(addr, "/ok", Duration::from_secs(5)).await;
            assert_eq!(r.verdict, Verdict::Success);
            assert_eq!(r.status, Some(200));
            assert_eq!(r.response, "thanks");
            let r2 = send_to(addr, "/ok", Duration::from_secs(5)).await;
            assert_eq!(r2.verdict, Verdict::Success);
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 2);
            let theirs = standardwebhooks::Webhook::new(SECRET).unwrap();
            for (_, headers, body) in seen.iter() {
                assert_eq!(&body[..], BODY);
                theirs.verify(body, headers).unwrap();
                assert_eq!(headers["webhook-id"], "msg_abc");
                assert_eq!(headers.get_all("webhook-id").iter().count(), 1);
                assert_eq!(headers["content-type"], "application/json");
                assert_eq!(headers["x-extra"], "yes");
                assert_eq!(headers["user-agent"], USER_AGENT_VALUE);
                assert!(headers["webhook-signature"]
                    .to_str()
                    .unwrap()
                    .starts_with("v1,"));
            }
        }

        #[tokio::test]
        async fn statuses_are_classified() {
            let (addr, seen) = server().await;
            let t = Duration::from_secs(5);
            let r = send_to(addr, "/500", t).await;
            assert_eq!(
                r.verdict,
                Verdict::Retry {
                    reason: "HTTP 500 Internal Server Error".into(),
                    retry_after: None
                }
            );
            assert_eq!((r.status, r.response.as_str()), (Some(500), "boom"));
            let r = send_to(addr, "/429", t).await;
            assert_eq!(
                r.verdict,
                Verdict::Retry {
                    reason: "HTTP 429 Too Many Requests".into(),
                    retry_after: Some(Duration::from_secs(2))
                }
            );
            let r = send_to(addr, "/400", t).await;
            assert!(matches!(r.verdict, Verdict::Fail { .. }), "{r:?}");
            assert_eq!(r.status, Some(400));
            let r = send_to(addr, "/302", t).await;
            let Verdict::Fail { reason } = &r.verdict else {
                panic!("{r:?}")
            };
            assert!(
                reason.contains("not followed") && !reason.contains("SECRET"),
                "{reason}"
            );
            assert_eq!(r.status, Some(302));
            // The redirect target was never requested.
            let paths: Vec<String> = seen.lock().unwrap().iter().map(|s| s.0.clone()).collect();
            assert_eq!(paths, ["/500", "/429", "/400", "/302"]);
        }

        #[tokio::test]
        async fn timeout_is_retried() {
            let (addr, _) = server().await;
            let r = send_to(addr, "/slow", Duration::from_millis(300)).await;
            assert_eq!(
                r.verdict,
                Verdict::Retry {
                    reason: "timed out after 300ms".into(),
                    retry_after: None
                }
            );
            assert_eq!(r.status, None);
            assert!(r.duration < Duration::from_secs(2), "{:?}", r.duration);
        }

        #[tokio::test]
        async fn connection_refused_is_retried() {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            drop(listener);
            let c = client(crate::net::egress::Policy::destination("test", false)).unwrap();
            let mut t = target(addr, "/hook", Duration::from_secs(5));
            t.url = url::Url::parse(&format!("http://{addr}/hook/TOKEN?key=SECRET")).unwrap();
            let r = send(&c, &t, "msg_abc", bytes::Bytes::from_static(BODY)).await;
            let Verdict::Retry { reason, .. } = &r.verdict else {
                panic!("{r:?}")
            };
            assert_eq!(reason, "connection refused");
            assert_eq!(r.status, None);
        }

        #[tokio::test]
        async fn dropped_connection_is_retried() {
            // A server that accepts, reads the request and hangs up without answering.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 8192];
                let _ = sock.read(&mut buf).await;
                drop(sock);
            });
            let r = send_to(addr, "/hook?token=SECRET", Duration::from_secs(5)).await;
            let Verdict::Retry { reason, .. } = &r.verdict else {
                panic!("{r:?}")
            };
            eprintln!("dropped connection reason: {reason}");
            assert!(
                !reason.contains("SECRET") && !reason.contains("127.0.0.1"),
                "{reason}"
            );
        }

        #[tokio::test]
        async fn dns_failure_is_retried() {
            let c = client(crate::net::egress::Policy::destination("test", false)).unwrap();
            let mut t = target("127.0.0.1:1".parse().unwrap(), "/", Duration::from_secs(5));
            t.url = url::Url::parse("https://no-such-host.invalid/hook?token=SECRET").unwrap();
            let r = send(&c, &t, "msg_abc", bytes::Bytes::from_static(BODY)).await;
            let Verdict::Retry { reason, .. } = &r.verdict else {
                panic!("{r:?}")
            };
            eprintln!("dns failure reason: {reason}");
            assert!(!reason.contains("SECRET"), "{reason}");
        }

        #[tokio::test]
        async fn big_response_is_cut() {
            let (addr, _) = server().await;
            let r = send_to(addr, "/big", Duration::from_secs(10)).await;
            assert_eq!(r.verdict, Verdict::Success);
            // "é" is two bytes, so 4096 bytes hold exactly 2048 of them.
            assert_eq!(r.response.len(), RESPONSE_SNIPPET_BYTES);
            assert!(r.response.chars().all(|c| c == 'é'));
        }

        #[tokio::test]
        async fn endless_response_is_not_buffered() {
            // A raw server answering 200 with a body that never ends.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = sock.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n")
                    .await;
                let chunk = vec![b'x'; 64 * 1024];
                while sock.write_all(&chunk).await.is_ok() {}
            });
            let r = send_to(addr, "/endless", Duration::from_secs(20)).await;
            assert_eq!(r.verdict, Verdict::Success);
            assert_eq!(r.response.len(), RESPONSE_SNIPPET_BYTES);
            assert!(r.duration < Duration::from_secs(10), "{:?}", r.duration);
        }

        #[tokio::test]
        async fn refuses_without_secrets() {
            let (addr, seen) = server().await;
            let c = client(crate::net::egress::Policy::destination("test", false)).unwrap();
            let mut t = target(addr, "/ok", Duration::from_secs(5));
            t.secrets.clear();
            let r = send(&c, &t, "msg_abc", bytes::Bytes::from_static(BODY)).await;
            assert!(matches!(r.verdict, Verdict::Fail { .. }));
            assert!(seen.lock().unwrap().is_empty());
        }
    }
}
