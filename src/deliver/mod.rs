//! Durable delivery: the sinks (webhook, email, chat), the verdict of an attempt, the step that
//! makes one attempt and records its outcome ([`attempt`]), and the one scheduler that runs the
//! steps per destination ([`worker`]): retries with jitter, the attempts log and the dead letters.

pub mod attempt;
pub mod chat;
pub mod email;
pub mod outcome;
pub mod webhook;
pub mod worker;

use crate::config::{Problem, RawDestination, RawRetry};
use crate::deliver::outcome::RetryPolicy;
use crate::outbox::store::Store;
use crate::route::chat::ChatKind;
use crate::route::render::Templates;
use email::Mailer;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use webhook::WebhookTarget;

/// Default requests in flight per webhook destination.
pub const DEFAULT_WEBHOOK_CONCURRENCY: usize = 8;
/// Default messages in flight per email destination.
pub const DEFAULT_EMAIL_CONCURRENCY: usize = 2;
/// Default per-request timeout of webhook and chat destinations.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a destination sends, validated.
#[derive(Debug, Clone)]
pub enum Target {
    /// A signed webhook.
    Webhook(WebhookTarget),
    /// Email, one delivery per recipient.
    Email {
        /// Inline template names of the recipients.
        to: Vec<String>,
        /// Inline template name of the subject.
        subject: String,
        /// Template base name (`NAME.txt`, optional `NAME.html`).
        template: String,
        /// The From address.
        from: String,
        /// An optional Reply-To.
        reply_to: Option<String>,
    },
    /// A chat service webhook.
    Chat {
        /// Which service.
        kind: ChatKind,
        /// The webhook URL (a secret: never logged).
        url: url::Url,
        /// Template base name (`NAME.txt`).
        template: String,
        /// Per-request timeout.
        timeout: Duration,
    },
}

/// A validated destination.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The name from the config.
    pub name: String,
    /// Where and how it sends.
    pub target: Target,
    /// Its retry schedule.
    pub retry: RetryPolicy,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// The least time between two sends (chat services' rate limits).
    pub min_interval: Duration,
    /// Whether its receiver may be on a private address (`allow_private: true`).
    pub allow_private: bool,
}

/// Builds a retry policy from the config (the default when absent).
pub fn retry_policy(raw: Option<&RawRetry>, default: &RetryPolicy) -> Result<RetryPolicy, String> {
    let Some(r) = raw else {
        return Ok(default.clone());
    };
    let jitter = r.jitter.unwrap_or(0.2);
    if !(0.0..=1.0).contains(&jitter) {
        return Err(format!("jitter must be between 0 and 1, not {jitter}"));
    }
    Ok(RetryPolicy {
        schedule: r.schedule.iter().map(|d| d.0).collect(),
        jitter,
    })
}

impl Destination {
    /// Validates one `destinations:` entry; templates for subjects and recipients are registered
    /// into `templates`.
    pub fn from_raw(
        name: &str,
        raw: &RawDestination,
        line: Option<u64>,
        default_retry: &RetryPolicy,
        smtp_from: Option<&str>,
        templates: &mut Templates,
    ) -> Result<Destination, Vec<Problem>> {
        let key = |k: &str| format!("destinations.{name}.{k}");
        let mut problems = Vec::new();
        if !crate::config::valid_name(name) {
            problems.push(Problem::at(
                line,
                format!("destinations.{name}"),
                "a destination name may use only letters, digits, '-', '_' and '.'",
            ));
        }
        let parse_url = |u: &str,
                         insecure: bool,
                         private: bool,
                         problems: &mut Vec<Problem>|
         -> Option<url::Url> {
            crate::config::check_placeholder(u, line, &key("url"), problems);
            match url::Url::parse(u) {
                Ok(url) => match webhook::check_url(&url, insecure).and_then(|()| {
                    crate::net::egress::Policy::destination(name, private)
                        .check_url(&url)
                        .map_err(|e| e.reason)
                }) {
                    Ok(()) => Some(url),
                    Err(e) => {
                        problems.push(Problem::at(line, key("url"), e));
                        None
                    }
                },
                // The URL may be a secret (chat webhooks): do not echo it.
                Err(e) => {
                    problems.push(Problem::at(
                        line,
                        key("url"),
                        format!("not a valid URL ({e})"),
                    ));
                    None
                }
            }
        };
        let retry_raw = match raw {
            RawDestination::Webhook(w) => w.retry.as_ref(),
            RawDestination::Email(e) => e.retry.as_ref(),
            RawDestination::Slack(c)
            | RawDestination::Teams(c)
            | RawDestination::Discord(c)
            | RawDestination::GoogleChat(c) => c.retry.as_ref(),
        };
        let retry = retry_policy(retry_raw, default_retry).unwrap_or_else(|e| {
            problems.push(Problem::at(line, key("retry"), e));
            default_retry.clone()
        });
        let mut concurrency = 1;
        let mut min_interval = Duration::ZERO;
        let allow_private = match raw {
            RawDestination::Webhook(w) => w.allow_private,
            RawDestination::Email(_) => false,
            RawDestination::Slack(c)
            | RawDestination::Teams(c)
            | RawDestination::Discord(c)
            | RawDestination::GoogleChat(c) => c.allow_private,
        };
        let target = match raw {
            RawDestination::Webhook(w) => {
                let url = parse_url(
                    &w.url,
                    w.allow_insecure_http,
                    w.allow_private,
                    &mut problems,
                );
                let mut secrets = Vec::new();
                for (i, s) in w.secret.to_vec().iter().enumerate() {
                    let skey = format!("{}[{i}]", key("secret"));
                    if let Some(why) = crate::config::placeholder::placeholder(s) {
                        problems.push(Problem::at(line, skey, why));
                        continue;
                    }
                    if crate::config::placeholder::is_published_webhook_secret(s)
                        && !url.as_ref().is_some_and(crate::config::is_loopback)
                    {
                        problems.push(Problem::at(
                            line,
                            skey.clone(),
                            crate::config::placeholder::published_secret_message(),
                        ));
                    }
                    match webhook::Secret::parse(s) {
                        Ok(sec) => secrets.push(sec),
                        Err(e) => problems.push(Problem::at(line, skey, e.to_string())),
                    }
                }
                let mut headers = Vec::new();
                for (h, v) in &w.headers {
                    crate::config::check_placeholder(
                        v,
                        line,
                        &format!("{}.{h}", key("headers")),
                        &mut problems,
                    );
                    match (
                        reqwest::header::HeaderName::from_bytes(h.as_bytes()),
                        reqwest::header::HeaderValue::from_str(v),
                    ) {
                        (Ok(hn), Ok(hv)) => headers.push((hn, hv)),
                        _ => problems.push(Problem::at(
                            line,
                            format!("{}.{h}", key("headers")),
                            "not a valid HTTP header",
                        )),
                    }
                }
                concurrency = w.concurrency.unwrap_or(DEFAULT_WEBHOOK_CONCURRENCY).max(1);
                url.map(|url| {
                    Target::Webhook(WebhookTarget {
                        name: name.to_string(),
                        url,
                        secrets,
                        headers,
                        timeout: w.timeout.map_or(DEFAULT_HTTP_TIMEOUT, |d| d.0),
                    })
                })
            }
            RawDestination::Email(e) => {
                concurrency = e.concurrency.unwrap_or(DEFAULT_EMAIL_CONCURRENCY).max(1);
                let from = match e.from.as_deref().or(smtp_from) {
                    Some(f) => f.to_string(),
                    None => {
                        problems.push(Problem::at(
                            line,
                            key("from"),
                            "an email destination needs an smtp: section (or its own from:)",
                        ));
                        String::new()
                    }
                };
                if smtp_from.is_none() {
                    problems.push(Problem::at(
                        line,
                        format!("destinations.{name}"),
                        "email destinations need an smtp: section",
                    ));
                }
                if !from.is_empty() {
                    if let Err(err) = crate::net::mail::validate_address(&from) {
                        problems.push(Problem::at(line, key("from"), err));
                    }
                }
                let mut to = Vec::new();
                let recipients = e.to.to_vec();
                if recipients.is_empty() {
                    problems.push(Problem::at(line, key("to"), "needs at least one recipient"));
                }
                for (i, r) in recipients.iter().enumerate() {
                    let tname = format!("destination:{name}:to:{i}");
                    if !r.contains("{{") {
                        if let Err(err) = crate::net::mail::validate_address(r) {
                            problems.push(Problem::at(line, format!("{}[{i}]", key("to")), err));
                        }
                    }
                    if let Err(mut p) = templates.register_inline(&tname, r) {
                        // The inline template's own line 1 is the destination's line in the file.
                        p.line = line;
                        p.key = format!("{}[{i}]", key("to"));
                        problems.push(p);
                    }
                    to.push(tname);
                }
                let subject = format!("destination:{name}:subject");
                if let Err(mut p) = templates.register_inline(&subject, &e.subject) {
                    p.line = line;
                    p.key = key("subject");
                    problems.push(p);
                }
                if !templates.has(&format!("{}.txt", e.template.as_str())) {
                    problems.push(Problem::at(line, key("template"), format!("no template {:?} (expected {}.txt.hbs in the templates folder or built in)", e.template.as_str(), e.template.as_str())));
                }
                Some(Target::Email {
                    to,
                    subject,
                    template: e.template.0.clone(),
                    from,
                    reply_to: e.reply_to.as_ref().map(|r| r.0.clone()),
                })
            }
            RawDestination::Slack(c)
            | RawDestination::Teams(c)
            | RawDestination::Discord(c)
            | RawDestination::GoogleChat(c) => {
                let kind = match raw {
                    RawDestination::Slack(_) => ChatKind::Slack,
                    RawDestination::Teams(_) => ChatKind::Teams,
                    RawDestination::Discord(_) => ChatKind::Discord,
                    _ => ChatKind::GoogleChat,
                };
                min_interval = chat::min_interval(kind);
                if !templates.has(&format!("{}.txt", c.template.as_str())) {
                    problems.push(Problem::at(
                        line,
                        key("template"),
                        format!(
                            "no template {:?} (expected {}.txt.hbs)",
                            c.template.as_str(),
                            c.template.as_str()
                        ),
                    ));
                }
                parse_url(
                    &c.url,
                    c.allow_insecure_http,
                    c.allow_private,
                    &mut problems,
                )
                .map(|url| Target::Chat {
                    kind,
                    url,
                    template: c.template.0.clone(),
                    timeout: c.timeout.map_or(DEFAULT_HTTP_TIMEOUT, |d| d.0),
                })
            }
        };
        match target {
            Some(target) if problems.is_empty() => Ok(Destination {
                name: name.to_string(),
                target,
                retry,
                concurrency,
                min_interval,
                allow_private,
            }),
            _ => Err(problems),
        }
    }

    /// A short word for the destination's type.
    pub fn kind_str(&self) -> &'static str {
        match &self.target {
            Target::Webhook(_) => "webhook",
            Target::Email { .. } => "email",
            Target::Chat { kind, .. } => kind.as_str(),
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
    mailer: Option<Arc<Mailer>>,
    events: Option<mpsc::UnboundedSender<Event>>,
    /// Destinations marked failing (mirrors the store's `dest_health`), so the success path only
    /// touches the store when a mark has to be cleared.
    failing: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Where the unit tests make an attempt panic.
    #[cfg(test)]
    fault: TestFault,
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
        for (name, d) in &destinations {
            if matches!(d.target, Target::Webhook(_) | Target::Chat { .. }) {
                let policy = crate::net::egress::Policy::destination(name, d.allow_private);
                http.insert(name.clone(), webhook::client(policy)?);
            }
        }
        Ok(Deliverer {
            store,
            destinations: Arc::new(destinations),
            http: Arc::new(http),
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
