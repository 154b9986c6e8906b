//! Durable delivery: the sinks (webhook, email, chat, NATS, AMQP), the verdict of an attempt, the step that
//! makes one attempt and records its outcome ([`attempt`]), and the one scheduler that runs the
//! steps per destination ([`worker`]): retries with jitter, the attempts log and the dead letters.

pub(crate) mod amqp;
pub mod attempt;
pub mod chat;
pub mod email;
pub(crate) mod nats;
pub(crate) mod outcome;
pub mod webhook;
pub(crate) mod worker;

use crate::config::{Destination, Target};
use crate::outbox::store::Store;
use email::Mailer;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The least time between two sends to `d`: a chat service's rate limit
/// ([`chat::min_interval`]); nothing for webhooks and email.
pub(crate) fn pacing(d: &Destination) -> Duration {
    match &d.target {
        Target::Chat { kind, .. } => chat::min_interval(*kind),
        Target::Webhook(_) | Target::Email { .. } | Target::Nats(_) | Target::Amqp(_) => {
            Duration::ZERO
        }
    }
}

/// Something a delivery did, for the demo's live stream and for tests.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Delivered.
    Delivered {
        /// Destination.
        destination: String,
        /// Event type (`leads.added`).
        event_type: String,
        /// The webhook id.
        webhook_id: String,
        /// Attempt number.
        attempt: u32,
        /// Status code.
        status: Option<u16>,
        /// For email: the recipient; otherwise empty.
        detail: String,
    },
    /// Will be retried.
    Retrying {
        /// Destination.
        destination: String,
        /// The webhook id.
        webhook_id: String,
        /// Attempt number that failed.
        attempt: u32,
        /// Why.
        reason: String,
        /// When the next attempt is.
        in_ms: i64,
    },
    /// Went to the dead letters.
    Dead {
        /// Destination.
        destination: String,
        /// The webhook id.
        webhook_id: String,
        /// Why.
        reason: String,
    },
}

/// Delivers outbox entries.
#[derive(Clone)]
pub struct Deliverer {
    store: Store,
    destinations: Arc<HashMap<String, Arc<Destination>>>,
    /// One HTTP client per webhook and chat destination, each resolving names through that
    /// destination's egress rules.
    http: Arc<HashMap<String, reqwest::Client>>,
    /// One kept broker connection per NATS and AMQP destination.
    brokers: Arc<HashMap<String, Broker>>,
    mailer: Option<Arc<Mailer>>,
    events: Option<mpsc::UnboundedSender<Event>>,
    /// Destinations marked failing (mirrors the store's `dest_health`), so the success path only
    /// touches the store when a mark has to be cleared.
    failing: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Where the unit tests make an attempt panic.
    #[cfg(test)]
    fault: TestFault,
}

/// A broker destination's publisher, with the connection it keeps (boxed: the two differ a lot
/// in size).
pub(crate) enum Broker {
    /// A NATS JetStream server.
    Nats(Box<nats::Publisher>),
    /// A RabbitMQ broker.
    Amqp(Box<amqp::Publisher>),
}

/// Where a unit test makes every attempt panic: inside the send (caught by the attempt itself) or
/// after it (the whole task panics, which the worker catches).
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum TestFault {
    #[default]
    None,
    PanicInSend,
    PanicAfterSend,
}

impl Deliverer {
    /// A deliverer over `store` for `destinations`; `events` is told what each attempt did
    /// (`None`: nobody watches).
    pub fn new(
        store: Store,
        destinations: HashMap<String, Arc<Destination>>,
        mailer: Option<Arc<Mailer>>,
        events: Option<mpsc::UnboundedSender<Event>>,
    ) -> anyhow::Result<Deliverer> {
        let failing = store
            .failing_destinations()?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let mut http = HashMap::new();
        let mut brokers = HashMap::new();
        for (name, d) in &destinations {
            let policy = crate::net::egress::Policy::destination(name, d.allow_private);
            match &d.target {
                Target::Webhook(_) | Target::Chat { .. } => {
                    http.insert(name.clone(), webhook::client(policy)?);
                }
                Target::Nats(t) => {
                    brokers.insert(
                        name.clone(),
                        Broker::Nats(Box::new(nats::Publisher::new(t.clone(), policy))),
                    );
                }
                Target::Amqp(t) => {
                    brokers.insert(
                        name.clone(),
                        Broker::Amqp(Box::new(amqp::Publisher::new(t.clone(), policy))),
                    );
                }
                Target::Email { .. } => {}
            }
        }
        Ok(Deliverer {
            store,
            destinations: Arc::new(destinations),
            http: Arc::new(http),
            brokers: Arc::new(brokers),
            mailer,
            events,
            failing: Arc::new(std::sync::Mutex::new(failing)),
            #[cfg(test)]
            fault: TestFault::None,
        })
    }

    fn emit(&self, e: Event) {
        if let Some(tx) = &self.events {
            let _ = tx.send(e);
        }
    }
}
