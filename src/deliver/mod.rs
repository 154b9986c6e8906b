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

/// The broker URL to connect to: its host resolved and checked by `egress` before each connection.
/// Without TLS (`plain_scheme`), the URL is pinned to the first allowed address, so the client
/// (which resolves and reconnects on its own) never reaches an address the rules did not check;
/// with TLS the name stays (the certificate is checked against it, which a rebinding cannot pass).
/// The error is the refusal's reason, naming the host, never the URL's userinfo.
pub(crate) async fn checked_broker_url(
    url: &url::Url,
    default_port: u16,
    plain_scheme: &str,
    egress: &crate::net::egress::Policy,
) -> Result<url::Url, String> {
    let host = url.host_str().unwrap_or_default();
    let port = url.port().unwrap_or(default_port);
    egress.check_host(host).map_err(|e| e.reason)?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() || url.scheme() != plain_scheme {
        egress
            .resolve_checked(host, port)
            .await
            .map_err(|e| e.reason)?;
        return Ok(url.clone());
    }
    let addrs = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| format!("{host} does not resolve ({})", e.kind()))?;
    let kept = egress.filter(host, addrs).map_err(|e| e.reason)?;
    let ip = kept[0].ip();
    let mut pinned = url.clone();
    let literal = match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    };
    pinned
        .set_host(Some(&literal))
        .map_err(|_| format!("{host} resolved to an address that cannot be used"))?;
    if pinned.port().is_none() {
        // Keep the port the name was checked with.
        let _ = pinned.set_port(Some(port));
    }
    Ok(pinned)
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
    /// Each clinic's time zone, which its destinations' quiet hours are read in (a clinic not
    /// in the config, whose entries wait for a destination, is read in UTC).
    zones: Arc<HashMap<String, chrono_tz::Tz>>,
    /// The clock due times are read from: the system's, or a test's.
    clock: Clock,
    /// Destinations with a run of failed attempts in the store (mirrors its failure streaks,
    /// for the operator's alerts), so on sled a success touches the store only to end one.
    streaks: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Where the unit tests make an attempt panic.
    #[cfg(test)]
    fault: TestFault,
}

/// The wall clock a deliverer schedules by: the system clock, or a manual one a test sets.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<std::sync::atomic::AtomicI64>>);

impl Clock {
    /// A clock that shows `at` until [`Clock::set`] moves it.
    pub fn manual(at: chrono::DateTime<chrono::Utc>) -> Clock {
        Clock(Some(Arc::new(std::sync::atomic::AtomicI64::new(
            at.timestamp_millis(),
        ))))
    }

    /// Moves a manual clock to `at` (the system clock cannot be moved: nothing happens).
    pub fn set(&self, at: chrono::DateTime<chrono::Utc>) {
        if let Some(ms) = &self.0 {
            ms.store(at.timestamp_millis(), std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Now, in Unix ms.
    pub(crate) fn now_ms(&self) -> i64 {
        match &self.0 {
            None => chrono::Utc::now().timestamp_millis(),
            Some(ms) => ms.load(std::sync::atomic::Ordering::SeqCst),
        }
    }
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
    pub async fn new(
        store: Store,
        destinations: HashMap<String, Arc<Destination>>,
        mailer: Option<Arc<Mailer>>,
        events: Option<mpsc::UnboundedSender<Event>>,
    ) -> anyhow::Result<Deliverer> {
        let failing = store
            .failing_destinations()
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let streaks = store
            .failure_streaks()
            .await?
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
            zones: Arc::new(HashMap::new()),
            clock: Clock::default(),
            streaks: Arc::new(std::sync::Mutex::new(streaks)),
            #[cfg(test)]
            fault: TestFault::None,
        })
    }

    /// The same deliverer, reading quiet hours in each clinic's own zone (`clinicea.timezone`,
    /// or the clinic's). The engine builds every deliverer with this.
    pub fn with_clinic_zones(
        mut self,
        zones: impl IntoIterator<Item = (String, chrono_tz::Tz)>,
    ) -> Deliverer {
        self.zones = Arc::new(zones.into_iter().collect());
        self
    }

    /// The same deliverer on `clock` instead of the system clock: what is due, when quiet hours
    /// end, and the times written to the attempts log all read it. For tests that step through
    /// hours without waiting for them.
    pub fn with_clock(mut self, clock: Clock) -> Deliverer {
        self.clock = clock;
        self
    }

    /// Now on this deliverer's clock, in Unix ms.
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// When a delivery of `clinic` to `dest` due at `at_ms` may go, when that is quiet for it:
    /// the end of the quiet time, in Unix ms. `None`: it may go at `at_ms`.
    pub(crate) fn quiet_until(&self, dest: &Destination, clinic: &str, at_ms: i64) -> Option<i64> {
        let quiet = dest.quiet_hours.as_ref()?;
        let tz = self.zones.get(clinic).copied().unwrap_or(chrono_tz::UTC);
        let at = chrono::DateTime::from_timestamp_millis(at_ms)?;
        quiet.hold_until(at, tz).map(|t| t.timestamp_millis())
    }

    fn emit(&self, e: Event) {
        if let Some(tx) = &self.events {
            let _ = tx.send(e);
        }
    }
}

#[cfg(test)]
mod broker_url_tests {
    use super::checked_broker_url;
    use crate::net::egress::Policy;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[tokio::test]
    async fn a_cleartext_broker_name_is_pinned_to_the_address_the_rules_checked() {
        let p = Policy::destination("bus", false);
        let pinned = checked_broker_url(&url("nats://alice:pw@localhost:4222"), 4222, "nats", &p)
            .await
            .unwrap();
        let host = pinned.host_str().unwrap();
        assert!(host == "127.0.0.1" || host == "[::1]", "{pinned}");
        assert_eq!(
            (pinned.username(), pinned.password()),
            ("alice", Some("pw"))
        );
        assert_eq!(pinned.port(), Some(4222));
        let pinned = checked_broker_url(&url("amqp://localhost/%2f"), 5672, "amqp", &p)
            .await
            .unwrap();
        assert_eq!((pinned.port(), pinned.path()), (Some(5672), "/%2f"));
        // With TLS the name stays, for the certificate check.
        let tls = url("tls://localhost:4222");
        assert_eq!(
            checked_broker_url(&tls, 4222, "nats", &p).await.unwrap(),
            tls
        );
        // Refused before any connection, naming the host and never the password.
        for refused in [
            "nats://alice:SECRET@169.254.169.254:4222",
            "nats://alice:SECRET@10.0.0.7:4222",
            "nats://alice:SECRET@metadata.google.internal:4222",
        ] {
            let e = checked_broker_url(&url(refused), 4222, "nats", &p)
                .await
                .unwrap_err();
            assert!(!e.contains("SECRET"), "{e}");
        }
        let private = Policy::destination("bus", true);
        assert!(
            checked_broker_url(&url("nats://10.0.0.7:4222"), 4222, "nats", &private)
                .await
                .is_ok()
        );
    }
}
