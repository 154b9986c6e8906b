//! The AMQP (RabbitMQ) sink: one publish of one outbox entry, confirmed by the broker.
//!
//! Each AMQP destination keeps one connection and one channel in confirm mode ([`Publisher`]),
//! made at its first attempt and kept between attempts; an attempt that finds it broken, or whose
//! publish fails, drops it and the next attempt connects again. A message is persistent
//! (`delivery_mode` 2), `mandatory` (a message no queue is bound for comes back instead of
//! vanishing), carries `message_id` = the `webhook-id` and `content_type: application/json`, and
//! counts as delivered only once the broker has confirmed it (an ack, and not returned).
//!
//! Failures are sorted by [`crate::deliver::outcome::classify_broker`]; their text never holds
//! the URL's userinfo.

use crate::config::AmqpTarget;
use crate::deliver::outcome::{self, AttemptReport, BrokerFailure};
use crate::model::Verdict;
use crate::net::egress::Policy;
use crate::net::scrub::{self, Scrubber};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation};
use std::time::Instant;
use tokio::sync::Mutex;

/// The default AMQP port, when the URL has none.
pub(crate) const DEFAULT_PORT: u16 = 5672;
/// The default AMQPS port, when the URL has none.
pub(crate) const DEFAULT_TLS_PORT: u16 = 5671;
/// `delivery_mode` of a message the broker writes to disk.
const PERSISTENT: u8 = 2;
/// The reply code of a normal close.
const REPLY_SUCCESS: u16 = 200;

/// One AMQP destination's connection and confirm channel, made when first needed and kept.
pub(crate) struct Publisher {
    target: AmqpTarget,
    egress: Policy,
    scrubber: Scrubber,
    conn: Mutex<Option<Conn>>,
}

/// A live connection and its channel in confirm mode.
#[derive(Clone)]
struct Conn {
    connection: std::sync::Arc<lapin::Connection>,
    channel: lapin::Channel,
}

impl Publisher {
    /// A publisher for `target`, connecting through `egress`'s rules; nothing connects yet.
    pub(crate) fn new(target: AmqpTarget, egress: Policy) -> Publisher {
        let scrubber = Scrubber::new().url(&target.url);
        Publisher {
            target,
            egress,
            scrubber,
            conn: Mutex::new(None),
        }
    }

    /// The kept connection if it is still up, or a new one.
    async fn connection(&self) -> Result<Conn, BrokerFailure> {
        let mut kept = self.conn.lock().await;
        if let Some(c) = kept.as_ref() {
            if c.connection.status().connected() && c.channel.status().connected() {
                return Ok(c.clone());
            }
            // Broken: closing it is best effort.
            if let Some(c) = kept.take() {
                let _ = c
                    .connection
                    .close(REPLY_SUCCESS, "reconnecting".into())
                    .await;
            }
        }
        let default_port = if self.target.url.scheme() == "amqps" {
            DEFAULT_TLS_PORT
        } else {
            DEFAULT_PORT
        };
        let url = super::checked_broker_url(&self.target.url, default_port, "amqp", &self.egress)
            .await
            .map_err(BrokerFailure::Connect)?;
        let props = lapin::ConnectionProperties::default()
            .with_connection_name(concat!("clinicea-notifier/", env!("CARGO_PKG_VERSION")).into());
        let connection = lapin::Connection::connect(url.as_str(), props)
            .await
            .map_err(|e| BrokerFailure::Connect(self.cause(&e)))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| BrokerFailure::Connect(self.cause(&e)))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| BrokerFailure::Connect(self.cause(&e)))?;
        let conn = Conn {
            connection: std::sync::Arc::new(connection),
            channel,
        };
        *kept = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the kept connection, so the next attempt makes a new one.
    async fn forget(&self) {
        if let Some(c) = self.conn.lock().await.take() {
            let _ = c
                .connection
                .close(REPLY_SUCCESS, "reconnecting".into())
                .await;
        }
    }

    /// An error's text and causes, scrubbed of the URL's secrets.
    fn cause(&self, e: &(dyn std::error::Error + 'static)) -> String {
        let causes = scrub::source_text(e);
        let text = if causes.is_empty() {
            e.to_string()
        } else {
            format!("{e}: {causes}")
        };
        self.scrubber.scrub(&text)
    }

    /// Publishes `body` with `routing_key` and waits for the broker's confirm.
    async fn publish(
        &self,
        routing_key: &str,
        msg_id: &str,
        body: &[u8],
    ) -> Result<(), BrokerFailure> {
        let conn = self.connection().await?;
        let props = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_message_id(msg_id.into())
            .with_content_type("application/json".into());
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirmed = match conn
            .channel
            .basic_publish(
                self.target.exchange.as_str().into(),
                routing_key.into(),
                options,
                body,
                props,
            )
            .await
        {
            Ok(confirm) => confirm.await,
            Err(e) => Err(e),
        };
        let failure = match confirmed {
            Ok(Confirmation::Ack(None)) => return Ok(()),
            Ok(Confirmation::Ack(Some(_))) => {
                // The connection is fine: nothing is bound for this key (yet).
                return Err(BrokerFailure::NotAcknowledged(
                    "returned unroutable: no queue is bound to the exchange for this routing key"
                        .to_string(),
                ));
            }
            Ok(Confirmation::Nack(_)) => "the broker refused the message (nack)".to_string(),
            Ok(Confirmation::NotRequested) => "the channel is not in confirm mode".to_string(),
            Err(e) => self.cause(&e),
        };
        self.forget().await;
        Err(BrokerFailure::NotAcknowledged(failure))
    }
}

/// Makes one publish attempt of an outbox entry through `publisher` and reports how it went,
/// within the destination's timeout (connecting and the confirm included).
pub(crate) async fn send(
    publisher: &Publisher,
    routing_key: &str,
    msg_id: &str,
    body: &[u8],
) -> AttemptReport {
    let started = Instant::now();
    let timeout = publisher.target.timeout;
    let result = tokio::time::timeout(timeout, publisher.publish(routing_key, msg_id, body)).await;
    let verdict = match result {
        Ok(Ok(())) => Verdict::Success,
        Ok(Err(f)) => outcome::classify_broker(f),
        Err(_) => {
            // The connection may be stuck half-way: start afresh next time.
            publisher.forget().await;
            outcome::classify_broker(BrokerFailure::Timeout(timeout))
        }
    };
    AttemptReport::unanswered(verdict, started.elapsed())
}
