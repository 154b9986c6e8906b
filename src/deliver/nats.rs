//! The NATS JetStream sink: one publish of one outbox entry, acknowledged by the stream.
//!
//! Each NATS destination keeps one connection ([`Publisher`]), made at its first attempt and kept
//! between attempts; the client reconnects on its own when the server goes away, and a connection
//! that broke is dropped and made again at the next attempt. A publish carries `Nats-Msg-Id` =
//! the `webhook-id`, so JetStream's duplicate window drops a re-send of a message it already
//! stored (an attempt whose ack was lost is retried with the same id); it counts as delivered only
//! once the stream has acknowledged it. Servers the cluster advertises are ignored: the client
//! connects only to the configured host, which the egress rules checked (and, without TLS, to the
//! address they checked: see [`super::checked_broker_url`]).
//!
//! Failures are sorted by [`crate::deliver::outcome::classify_broker`]; their text never holds
//! the URL's userinfo or the password.

use crate::config::destination::NatsAuth;
use crate::config::NatsTarget;
use crate::deliver::outcome::{self, AttemptReport, BrokerFailure};
use crate::model::Verdict;
use crate::net::egress::Policy;
use crate::net::scrub::{self, Scrubber};
use std::time::Instant;
use tokio::sync::Mutex;

/// The header JetStream deduplicates on.
pub(crate) const HEADER_MSG_ID: &str = "Nats-Msg-Id";

/// The default NATS port, when the URL has none.
pub(crate) const DEFAULT_PORT: u16 = 4222;

/// One NATS destination's connection, made when first needed and kept.
pub(crate) struct Publisher {
    target: NatsTarget,
    egress: Policy,
    scrubber: Scrubber,
    conn: Mutex<Option<Conn>>,
}

/// A live connection and its JetStream context.
#[derive(Clone)]
struct Conn {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
}

impl Publisher {
    /// A publisher for `target`, connecting through `egress`'s rules; nothing connects yet.
    pub(crate) fn new(target: NatsTarget, egress: Policy) -> Publisher {
        let mut scrubber = Scrubber::new().url(&target.url);
        if let NatsAuth::UserPassword { password, .. } = &target.auth {
            scrubber = scrubber.secret(password);
        }
        Publisher {
            target,
            egress,
            scrubber,
            conn: Mutex::new(None),
        }
    }

    /// The kept connection, or a new one.
    async fn connection(&self) -> Result<Conn, BrokerFailure> {
        let mut kept = self.conn.lock().await;
        if let Some(c) = kept.as_ref() {
            return Ok(c.clone());
        }
        let url = super::checked_broker_url(&self.target.url, DEFAULT_PORT, "nats", &self.egress)
            .await
            .map_err(BrokerFailure::Connect)?;
        let mut opts = match &self.target.auth {
            NatsAuth::None => async_nats::ConnectOptions::new(),
            NatsAuth::CredsFile(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| {
                    BrokerFailure::Connect(format!(
                        "cannot read the creds_file {}: {}",
                        path.display(),
                        e.kind()
                    ))
                })?,
            NatsAuth::UserPassword { user, password } => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
        };
        opts = opts
            .connection_timeout(self.target.timeout)
            .ignore_discovered_servers()
            .max_reconnects(None)
            .name(concat!("clinicea-notifier/", env!("CARGO_PKG_VERSION")));
        if url.scheme() == "tls" {
            opts = opts.require_tls(true);
        }
        // The client takes `nats://` and `tls://` addresses, userinfo included.
        let client = opts
            .connect(url.as_str())
            .await
            .map_err(|e| BrokerFailure::Connect(self.cause(&e)))?;
        let mut js = async_nats::jetstream::new(client.clone());
        js.set_timeout(self.target.timeout);
        let conn = Conn { client, js };
        *kept = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the kept connection, so the next attempt makes a new one.
    async fn forget(&self) {
        if let Some(c) = self.conn.lock().await.take() {
            // Closing is best effort: the connection is already broken or unwanted.
            let _ = c.client.drain().await;
        }
    }

    /// An error's text and causes, scrubbed of the URL's secrets and the password.
    fn cause(&self, e: &(dyn std::error::Error + 'static)) -> String {
        let causes = scrub::source_text(e);
        let text = if causes.is_empty() {
            e.to_string()
        } else {
            format!("{e}: {causes}")
        };
        self.scrubber.scrub(&text)
    }

    /// Publishes `body` to `subject` with `Nats-Msg-Id: msg_id` and waits for the stream's ack.
    async fn publish(&self, subject: &str, msg_id: &str, body: &[u8]) -> Result<(), BrokerFailure> {
        use async_nats::jetstream::context::PublishErrorKind;
        let conn = self.connection().await?;
        let max = conn.client.server_info().max_payload;
        if max > 0 && body.len() > max {
            return Err(BrokerFailure::TooLarge(body.len(), max));
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(HEADER_MSG_ID, msg_id);
        headers.insert(crate::deliver::webhook::HEADER_ID, msg_id);
        headers.insert("content-type", "application/json");
        let sent = conn
            .js
            .publish_with_headers(
                subject.to_string(),
                headers,
                bytes::Bytes::copy_from_slice(body),
            )
            .await;
        let acked = match sent {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(_) => Ok(()),
            Err(e) => {
                // The client reconnects on its own, and a missing stream or an error ack says
                // nothing about the connection; only a broken pipe means the client itself is
                // gone, so the next attempt makes a new one.
                if matches!(e.kind(), PublishErrorKind::BrokenPipe) {
                    self.forget().await;
                }
                Err(BrokerFailure::NotAcknowledged(self.cause(&e)))
            }
        }
    }
}

/// Makes one publish attempt of an outbox entry through `publisher` and reports how it went,
/// within the destination's timeout (connecting and the ack included).
pub(crate) async fn send(
    publisher: &Publisher,
    subject: &str,
    msg_id: &str,
    body: &[u8],
) -> AttemptReport {
    let started = Instant::now();
    let timeout = publisher.target.timeout;
    let result = tokio::time::timeout(timeout, publisher.publish(subject, msg_id, body)).await;
    let verdict = match result {
        Ok(Ok(())) => Verdict::Success,
        Ok(Err(f)) => outcome::classify_broker(f),
        Err(_) => outcome::classify_broker(BrokerFailure::Timeout(timeout)),
    };
    AttemptReport::unanswered(verdict, started.elapsed())
}
