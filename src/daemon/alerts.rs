//! Alerts for the operator (`alerts:`): the notifier tells someone when it is in trouble, without
//! anyone reading its logs.
//!
//! **Incidents.** Three kinds, each keyed by what it is about:
//!
//! | kind | key | starts | ends |
//! |---|---|---|---|
//! | `destination_failing` | `destination_failing/DEST` | every attempt of DEST has failed for `destination_failing_for` (its [`FailureStreak`] in the store, kept by the deliverer) | DEST delivers once (the streak is gone) |
//! | `stale_resource` | `stale_resource/CLINIC/RESOURCE` | no successful poll within the watchdog's window (`watchdog.stale_after`), counted as the watchdog counts | a successful poll |
//! | `api_unauthorized` | `api_unauthorized/CLINIC` | a poll of the clinic was answered 401 or 403 (a revoked key): at once | a successful poll of the clinic |
//!
//! A resource whose key was refused is not also reported stale: the key is the reason.
//!
//! **Once per incident.** Each incident's state ([`IncidentState`]: open or not, when its last
//! alert went out) is in the store, and moving it is one transaction with the outbox entries of
//! the alert ([`Store::incident_transition`], compare-and-set): an alert is queued exactly once
//! when the incident starts and a "recovered" once when it ends, across restarts, reloads and
//! replicas (on PostgreSQL the first replica to move the state wins; the others see it moved).
//! After a restart an incident judged from memory (stale, refused key) is not declared over
//! until a poll has succeeded since it began, so a restart neither re-alerts nor forgets.
//!
//! **Rate limit.** An incident that ends and starts again within [`REALERT_AFTER`] (15 minutes)
//! of its last alert is not alerted again until that time has passed (then, if it is still on,
//! it is): a flapping incident sends at most one alert and one "recovered" per 15 minutes.
//!
//! **Delivery.** Alerts are outbox entries like any delivery (durable, retried by each
//! destination's schedule), to every destination of `notify`, except that a destination's own
//! incident is never sent to that destination (logged). Email renders the shipped `alert`
//! templates (`alert.txt.hbs`, `alert.html.hbs`), chat `alert-chat.txt.hbs`, and webhooks, NATS
//! and AMQP get a JSON envelope of type `alert.destination_failing`, `alert.stale_resource`,
//! `alert.api_unauthorized` or `alert.recovered` ([`envelope`]). An alert carries names
//! (clinic, resource, destination), counts, times and a scrubbed reason; never record contents.

use crate::config::alerts::Alerts;
use crate::config::{ChatKind, Destination, Target};
use crate::daemon::health::Health;
use crate::daemon::settings::Settings;
use crate::ingest::client::ApiError;
use crate::ingest::ctx::PollError;
use crate::net::scrub::Scrubber;
use crate::outbox::entry::{OutboxEntry, Wake};
use crate::outbox::store::{FailureStreak, IncidentState, OpenIncident, Store, StoreError};
use crate::route::plan::{check_routing_key, check_subject, EmailMessage, Payload, Pipeline};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the monitor looks at the destinations and resources (a refused key is looked at
/// at once: the poll nudges the monitor).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The least time between two alerts of one incident (a "recovered" is never held back): the
/// rate limit of a flapping incident.
pub const REALERT_AFTER: Duration = Duration::from_secs(15 * 60);

/// The longest reason an alert shows, in characters.
const MAX_REASON_CHARS: usize = 300;

/// The `rule` of an alert's outbox entry (alerts follow no rule).
pub const ALERT_RULE: &str = "alerts";

/// The event type of every "recovered".
pub const RECOVERED_EVENT: &str = "alert.recovered";

/// The NATS subject / AMQP routing key of an alert when the destination's own does not render
/// to a valid one for an alert.
const FALLBACK_SUBJECT: &str = "clinicea-notifier.alerts";

/// The template an alert email renders (`alert.txt`, and `alert.html` when there is one).
const EMAIL_TEMPLATE: &str = "alert";
/// The template a chat alert renders.
const CHAT_TEMPLATE: &str = "alert-chat.txt";

/// The status of a poll error that is the API refusing the key (401 or 403).
pub(crate) fn refused_key<E>(e: &PollError<E>) -> Option<u16> {
    match e {
        PollError::Api(ApiError::Status { status, .. }) if matches!(*status, 401 | 403) => {
            Some(*status)
        }
        _ => None,
    }
}

/// What kind of trouble an incident is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A destination's deliveries have failed for `destination_failing_for`.
    DestinationFailing,
    /// A resource had no successful poll within the watchdog's window.
    StaleResource,
    /// The API answered 401 or 403.
    ApiUnauthorized,
}

impl Kind {
    /// Its name (the first part of an incident key, `incident` in the alert).
    pub fn name(self) -> &'static str {
        match self {
            Kind::DestinationFailing => "destination_failing",
            Kind::StaleResource => "stale_resource",
            Kind::ApiUnauthorized => "api_unauthorized",
        }
    }

    /// The event type of its alert.
    pub fn event(self) -> &'static str {
        match self {
            Kind::DestinationFailing => "alert.destination_failing",
            Kind::StaleResource => "alert.stale_resource",
            Kind::ApiUnauthorized => "alert.api_unauthorized",
        }
    }
}

/// What an incident is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Subject {
    clinic: Option<String>,
    resource: Option<String>,
    destination: Option<String>,
}

impl Subject {
    fn key(&self, kind: Kind) -> String {
        let parts: Vec<&str> = [&self.clinic, &self.resource, &self.destination]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        format!("{}/{}", kind.name(), parts.join("/"))
    }
}

/// How one resource looks to the monitor now (from the health map, or a test).
#[derive(Debug, Clone)]
pub struct ResourceView {
    /// The clinic.
    pub clinic: String,
    /// The resource key.
    pub resource: String,
    /// When its last successful poll ended (in this process).
    pub last_success: Option<DateTime<Utc>>,
    /// When this process began watching it.
    pub watched_since: DateTime<Utc>,
    /// The watchdog's window.
    pub stale_after: Duration,
    /// The API refused the key (this status) since the last success.
    pub unauthorized: Option<u16>,
    /// Failed polls since the last success.
    pub failures: u32,
    /// The last poll's error (scrubbed again before an alert shows it).
    pub last_error: Option<String>,
}

/// The resources in the health map that a poll loop watches.
pub(crate) fn resource_views(health: &Health) -> Vec<ResourceView> {
    let map = health
        .resources
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    map.iter()
        .filter_map(|((clinic, resource), h)| {
            Some(ResourceView {
                clinic: clinic.clone(),
                resource: resource.clone(),
                last_success: h.last_success,
                watched_since: h.watched_since?,
                stale_after: h.stale_after,
                unauthorized: h.unauthorized,
                failures: h.consecutive_failures,
                last_error: h.last_error.clone(),
            })
        })
        .collect()
}

/// An incident as the monitor sees it this round.
#[derive(Debug, Clone)]
struct Seen {
    kind: Kind,
    subject: Subject,
    /// `Some`: the trouble is on, since then, with these details.
    on: Option<Trouble>,
    /// Whether an open incident may be declared over now (off, and known to be over: after a
    /// restart, a poll must have succeeded since the incident began).
    over_after: Option<DateTime<Utc>>,
}

/// The details of an ongoing trouble.
#[derive(Debug, Clone)]
struct Trouble {
    since: DateTime<Utc>,
    failures: Option<u64>,
    status: Option<u16>,
    reason: Option<String>,
}

/// The monitor of one generation: what it judges, and where alerts go.
pub struct Monitor {
    store: Store,
    alerts: Alerts,
    pipeline: Arc<Pipeline>,
    /// Each clinic's resources, as configured.
    clinics: HashMap<String, Vec<String>>,
    /// Each clinic's scrubber (its key, its base URL).
    clinic_scrub: HashMap<String, Scrubber>,
}

impl Monitor {
    /// The monitor of `settings`, or `None` when the config has no `alerts:`.
    pub fn new(store: Store, settings: &Settings) -> Option<Monitor> {
        let alerts = settings.alerts.clone()?;
        let clinics = settings
            .base
            .clinics
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    c.resources.iter().map(|r| r.name.clone()).collect(),
                )
            })
            .collect();
        let clinic_scrub = settings
            .base
            .clinics
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    Scrubber::new()
                        .secret(c.clinicea.api_key.expose())
                        .url(&c.clinicea.base_url),
                )
            })
            .collect();
        Some(Monitor {
            store,
            alerts,
            pipeline: settings.pipeline.clone(),
            clinics,
            clinic_scrub,
        })
    }

    /// One round at `now`: reads the destinations' failure streaks and the incidents from the
    /// store, judges them and `resources`, and moves every incident that started or ended,
    /// queueing its alert or "recovered". Returns the wakes of the entries it queued.
    pub async fn check(
        &self,
        now: DateTime<Utc>,
        resources: &[ResourceView],
    ) -> Result<Vec<Wake>, StoreError> {
        let streaks: HashMap<String, FailureStreak> =
            self.store.failure_streaks().await?.into_iter().collect();
        let incidents: HashMap<String, IncidentState> =
            self.store.incidents().await?.into_iter().collect();
        let seen = self.judge(now, &streaks, resources);
        let mut wakes = Vec::new();
        let mut judged = BTreeSet::new();
        for s in &seen {
            let key = s.subject.key(s.kind);
            judged.insert(key.clone());
            let state = incidents.get(&key);
            let open = state.and_then(|st| st.open.as_ref());
            match (&s.on, open) {
                (Some(trouble), None) => {
                    let last = state.and_then(|st| st.last_alert_ms);
                    if let Some(last) =
                        last.filter(|l| now.timestamp_millis() - l < ms(REALERT_AFTER))
                    {
                        tracing::debug!(incident = %key, last_alert_ms = last, "incident started again within {REALERT_AFTER:?} of its last alert; held back");
                        continue;
                    }
                    let id = self.store.next_id().await?;
                    let next = IncidentState {
                        open: Some(OpenIncident {
                            id,
                            since: trouble.since,
                            alerted_ms: now.timestamp_millis(),
                        }),
                        last_alert_ms: Some(now.timestamp_millis()),
                    };
                    let ctx = alert_context(s.kind, &s.subject, false, trouble, now);
                    let entries = self.entries(s.kind, &s.subject, id, &ctx, now).await?;
                    if self
                        .store
                        .incident_transition(&key, state, &next, &entries)
                        .await?
                    {
                        tracing::warn!(incident = %key, alerts = entries.len(), "ALERT: {}", ctx["title"].as_str().unwrap_or_default());
                        wakes.extend(entries.iter().map(|e| self.store.wake_of(e)));
                    }
                }
                (None, Some(o)) if s.over_after.is_some_and(|t| t >= o.since) => {
                    let trouble = Trouble {
                        since: o.since,
                        failures: None,
                        status: None,
                        reason: None,
                    };
                    let ctx = alert_context(s.kind, &s.subject, true, &trouble, now);
                    let entries = self.entries(s.kind, &s.subject, o.id, &ctx, now).await?;
                    let next = IncidentState {
                        open: None,
                        last_alert_ms: state.and_then(|st| st.last_alert_ms),
                    };
                    if self
                        .store
                        .incident_transition(&key, state, &next, &entries)
                        .await?
                    {
                        tracing::info!(incident = %key, alerts = entries.len(), "RECOVERED: {}", ctx["title"].as_str().unwrap_or_default());
                        wakes.extend(entries.iter().map(|e| self.store.wake_of(e)));
                    }
                }
                _ => {}
            }
        }
        // Open incidents about what the config no longer has (or no longer alerts on) end
        // without a message: nobody is waiting for them any more.
        for (key, state) in &incidents {
            if state.open.is_none() || judged.contains(key) || self.still_configured(key) {
                continue;
            }
            let next = IncidentState {
                open: None,
                last_alert_ms: state.last_alert_ms,
            };
            if self
                .store
                .incident_transition(key, Some(state), &next, &[])
                .await?
            {
                tracing::info!(incident = %key, "incident closed without a message: its subject or its alert left the config");
            }
        }
        Ok(wakes)
    }

    /// Whether an incident key's subject is still configured and its kind still alerted on
    /// (one not judged this round may be, e.g. a clinic another replica polls).
    fn still_configured(&self, key: &str) -> bool {
        let mut parts = key.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("destination_failing"), Some(d), None) => {
                self.alerts.destination_failing_for.is_some()
                    && self.pipeline.destinations.contains_key(d)
            }
            (Some("stale_resource"), Some(c), Some(r)) => {
                self.alerts.stale_resource
                    && self
                        .clinics
                        .get(c)
                        .is_some_and(|rs| rs.iter().any(|x| x == r))
            }
            (Some("api_unauthorized"), Some(c), None) => {
                self.alerts.api_unauthorized && self.clinics.contains_key(c)
            }
            _ => false,
        }
    }

    /// Every incident this round can judge, on or off.
    fn judge(
        &self,
        now: DateTime<Utc>,
        streaks: &HashMap<String, FailureStreak>,
        resources: &[ResourceView],
    ) -> Vec<Seen> {
        let mut seen = Vec::new();
        if let Some(limit) = self.alerts.destination_failing_for {
            let mut names: Vec<&String> = self.pipeline.destinations.keys().collect();
            names.sort();
            for name in names {
                let streak = streaks.get(name);
                let on = streak
                    .filter(|s| age(now, s.since) >= limit)
                    .map(|s| Trouble {
                        since: s.since,
                        failures: Some(s.failures),
                        status: None,
                        reason: Some(self.scrub_destination(name, &s.reason)),
                    });
                seen.push(Seen {
                    kind: Kind::DestinationFailing,
                    subject: Subject {
                        destination: Some(name.clone()),
                        ..Subject::default()
                    },
                    // The streak is in the store: a streak younger than the limit began after
                    // a success, so the incident that was on is over.
                    over_after: on.is_none().then_some(now),
                    on,
                });
            }
        }
        let configured = |r: &ResourceView| {
            self.clinics
                .get(&r.clinic)
                .is_some_and(|rs| rs.contains(&r.resource))
        };
        if self.alerts.stale_resource {
            for r in resources.iter().filter(|r| configured(r)) {
                let since = r.last_success.unwrap_or(r.watched_since);
                // A refused key is the reason, and its own incident.
                let stale = age(now, since) > r.stale_after && r.unauthorized.is_none();
                seen.push(Seen {
                    kind: Kind::StaleResource,
                    subject: Subject {
                        clinic: Some(r.clinic.clone()),
                        resource: Some(r.resource.clone()),
                        destination: None,
                    },
                    on: stale.then(|| Trouble {
                        since,
                        failures: Some(u64::from(r.failures)),
                        status: None,
                        reason: r
                            .last_error
                            .as_deref()
                            .map(|e| self.scrub_clinic(&r.clinic, e)),
                    }),
                    over_after: if stale { None } else { r.last_success },
                });
            }
        }
        if self.alerts.api_unauthorized {
            let mut by_clinic: HashMap<&str, Vec<&ResourceView>> = HashMap::new();
            for r in resources.iter().filter(|r| configured(r)) {
                by_clinic.entry(r.clinic.as_str()).or_default().push(r);
            }
            let mut clinics: Vec<_> = by_clinic.into_iter().collect();
            clinics.sort_by_key(|(c, _)| *c);
            for (clinic, rs) in clinics {
                let refused: Vec<&&ResourceView> =
                    rs.iter().filter(|r| r.unauthorized.is_some()).collect();
                let on = refused.first().map(|r| Trouble {
                    // Refused "now": when it began is the first refusal this monitor saw.
                    since: now,
                    failures: Some(refused.len() as u64),
                    status: r.unauthorized,
                    reason: Some(format!(
                        "the Clinicea API answered HTTP {} to {} of the clinic's resources",
                        r.unauthorized.unwrap_or_default(),
                        refused.len()
                    )),
                });
                let over_after = if on.is_some() {
                    None
                } else {
                    rs.iter().filter_map(|r| r.last_success).max()
                };
                seen.push(Seen {
                    kind: Kind::ApiUnauthorized,
                    subject: Subject {
                        clinic: Some(clinic.to_string()),
                        ..Subject::default()
                    },
                    on,
                    over_after,
                });
            }
        }
        seen
    }

    /// A destination's failure reason, scrubbed of its URL and secrets, cut short.
    fn scrub_destination(&self, name: &str, reason: &str) -> String {
        let scrubber = match self.pipeline.destinations.get(name).map(|d| &d.target) {
            Some(Target::Webhook(w)) => Scrubber::new().url(&w.url),
            Some(Target::Chat { url, .. }) => Scrubber::new().url(url),
            Some(Target::Nats(n)) => Scrubber::new().url(&n.url),
            Some(Target::Amqp(a)) => Scrubber::new().url(&a.url),
            Some(Target::Email { .. }) | None => Scrubber::new(),
        };
        cut(&without_addresses(&scrubber.scrub(reason)))
    }

    /// A poll error, scrubbed of the clinic's key and API URL, cut short.
    fn scrub_clinic(&self, clinic: &str, reason: &str) -> String {
        let scrubbed = match self.clinic_scrub.get(clinic) {
            Some(s) => s.scrub(reason),
            None => Scrubber::new().scrub(reason),
        };
        cut(&without_addresses(&scrubbed))
    }

    /// The outbox entries of one alert: one per `notify` destination (per recipient for email),
    /// never to the destination the incident is about.
    async fn entries(
        &self,
        kind: Kind,
        subject: &Subject,
        id: u64,
        ctx: &Value,
        now: DateTime<Utc>,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let recovered = ctx["recovered"].as_bool().unwrap_or(false);
        let webhook_id = format!(
            "alert_{id}_{}",
            if recovered { "recovered" } else { "open" }
        );
        let event = if recovered {
            RECOVERED_EVENT
        } else {
            kind.event()
        };
        let mut out = Vec::new();
        for name in &self.alerts.notify {
            if kind == Kind::DestinationFailing && subject.destination.as_deref() == Some(name) {
                tracing::warn!(destination = %name, "alerts.notify lists the failing destination itself: this alert is not sent there");
                continue;
            }
            let Some(dest) = self.pipeline.destinations.get(name) else {
                continue;
            };
            let payloads = match self.payloads(dest, &webhook_id, ctx) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(destination = %name, "cannot render an alert for this destination: {e}");
                    continue;
                }
            };
            for payload in payloads {
                let seq = self.store.next_id().await?;
                out.push(OutboxEntry {
                    seq,
                    destination: name.clone(),
                    clinic: subject.clinic.clone().unwrap_or_default(),
                    webhook_id: webhook_id.clone(),
                    event_type: event.to_string(),
                    resource: subject.resource.clone().unwrap_or_default(),
                    record_id: String::new(),
                    rule: ALERT_RULE.to_string(),
                    change_seq: 0,
                    payload,
                    attempts: 0,
                    next_attempt_ms: now.timestamp_millis(),
                    created_ms: now.timestamp_millis(),
                    held: None,
                });
            }
        }
        Ok(out)
    }

    /// What one destination is sent for an alert (one payload per email recipient).
    fn payloads(
        &self,
        dest: &Destination,
        webhook_id: &str,
        ctx: &Value,
    ) -> Result<Vec<Payload>, String> {
        let templates = &self.pipeline.templates;
        let body = || envelope(ctx).to_string();
        let subject_or = |t: &crate::config::destination::InlineTemplate,
                          check: fn(&str) -> Result<(), &'static str>| {
            templates
                .render(&t.name, ctx)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| check(s).is_ok())
                .unwrap_or_else(|| FALLBACK_SUBJECT.to_string())
        };
        Ok(match &dest.target {
            Target::Webhook(_) => vec![Payload::Webhook { body: body() }],
            Target::Nats(n) => vec![Payload::Publish {
                subject: subject_or(&n.subject, check_subject),
                body: body(),
            }],
            Target::Amqp(a) => vec![Payload::Publish {
                subject: subject_or(&a.routing_key, check_routing_key),
                body: body(),
            }],
            Target::Chat { kind, .. } => vec![chat_payload(templates, *kind, ctx)?],
            Target::Email {
                to, from, reply_to, ..
            } => {
                let text = templates
                    .render(&format!("{EMAIL_TEMPLATE}.txt"), ctx)
                    .map_err(|e| format!("template {EMAIL_TEMPLATE}.txt: {e}"))?;
                let html_name = format!("{EMAIL_TEMPLATE}.html");
                let html = if templates.has(&html_name) {
                    Some(
                        templates
                            .render(&html_name, ctx)
                            .map_err(|e| format!("template {html_name}: {e}"))?,
                    )
                } else {
                    None
                };
                let subject = format!(
                    "[clinicea-notifier] {}: {}",
                    if ctx["recovered"].as_bool().unwrap_or(false) {
                        "Recovered"
                    } else {
                        "ALERT"
                    },
                    ctx["title"].as_str().unwrap_or_default()
                )
                .replace(['\r', '\n'], " ");
                let domain = crate::net::mail::domain_of(from);
                let mut out = Vec::new();
                for t in to {
                    let addr = templates
                        .render(&t.name, ctx)
                        .map_err(|e| format!("recipient of {}: {e}", dest.name))?
                        .trim()
                        .to_string();
                    if addr.is_empty() || crate::net::mail::validate_address(&addr).is_err() {
                        tracing::warn!(destination = %dest.name, "a recipient does not render to an address for an alert; skipped");
                        continue;
                    }
                    out.push(Payload::Email(EmailMessage {
                        from: from.clone(),
                        message_id: crate::net::mail::message_id(
                            &format!("{webhook_id}/{}/{addr}", dest.name),
                            &domain,
                        ),
                        to: addr,
                        reply_to: reply_to.clone(),
                        subject: subject.clone(),
                        text: text.clone(),
                        html: html.clone(),
                    }));
                }
                out
            }
        })
    }
}

/// A chat alert: `alert-chat.txt`, escaped for the service, in its JSON body.
fn chat_payload(
    templates: &crate::route::render::Templates,
    kind: ChatKind,
    ctx: &Value,
) -> Result<Payload, String> {
    let text = templates
        .render_chat(kind, CHAT_TEMPLATE, ctx)
        .map_err(|e| format!("template {CHAT_TEMPLATE}: {e}"))?;
    Ok(Payload::Chat {
        body: crate::route::chat::body(kind, &text),
    })
}

/// The JSON envelope webhooks, NATS and AMQP get: `{"type", "timestamp", "data"}` as for
/// changes, `type` being the alert's event and `data` what the templates see.
pub fn envelope(ctx: &Value) -> Value {
    json!({
        "type": ctx["event"],
        "timestamp": ctx["at"],
        "data": {
            "incident": ctx["incident"],
            "recovered": ctx["recovered"],
            "title": ctx["title"],
            "clinic": ctx["clinic"],
            "resource": ctx["resource"],
            "destination": ctx["destination"],
            "since": ctx["since"],
            "duration_seconds": ctx["duration_seconds"],
            "failures": ctx["failures"],
            "status": ctx["status"],
            "reason": ctx["reason"],
        }
    })
}

/// What an alert's templates see: names, counts, times, a scrubbed reason.
fn alert_context(
    kind: Kind,
    subject: &Subject,
    recovered: bool,
    trouble: &Trouble,
    now: DateTime<Utc>,
) -> Value {
    let lasted = age(now, trouble.since);
    let for_ = human(lasted);
    let c = subject.clinic.as_deref().unwrap_or_default();
    let r = subject.resource.as_deref().unwrap_or_default();
    let d = subject.destination.as_deref().unwrap_or_default();
    let title = match (kind, recovered) {
        (Kind::DestinationFailing, false) => format!(
            "destination {d} has failed every delivery for {for_} ({} attempts)",
            trouble.failures.unwrap_or_default()
        ),
        (Kind::DestinationFailing, true) => {
            format!("destination {d} delivers again (it failed for {for_})")
        }
        (Kind::StaleResource, false) => {
            format!("clinic {c}: {r} is stale, no successful poll for {for_}")
        }
        (Kind::StaleResource, true) => {
            format!("clinic {c}: {r} polls again (stale for {for_})")
        }
        (Kind::ApiUnauthorized, false) => format!(
            "clinic {c}: the Clinicea API refused the key (HTTP {}); was it revoked?",
            trouble.status.unwrap_or_default()
        ),
        (Kind::ApiUnauthorized, true) => {
            format!("clinic {c}: the Clinicea API accepts the key again")
        }
    };
    json!({
        "event": if recovered { RECOVERED_EVENT } else { kind.event() },
        "incident": kind.name(),
        "recovered": recovered,
        "title": title,
        "clinic": subject.clinic,
        "resource": subject.resource,
        "destination": subject.destination,
        "since": trouble.since.to_rfc3339_opts(SecondsFormat::Secs, true),
        "at": now.to_rfc3339_opts(SecondsFormat::Secs, true),
        "for": for_,
        "duration_seconds": lasted.as_secs(),
        "failures": trouble.failures,
        "status": trouble.status,
        "reason": trouble.reason,
    })
}

/// Renders every alert template (email text and HTML, chat for each service) strictly against a
/// sample of each kind of alert, opening and recovered, so a template override that names a
/// field an alert does not have is a `check` problem, not a blank at 3 a.m.
pub(crate) fn check_templates(
    templates: &crate::route::render::Templates,
) -> Vec<crate::config::Problem> {
    let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    let trouble = Trouble {
        since: now - chrono::TimeDelta::minutes(31),
        failures: Some(3),
        status: Some(401),
        reason: Some("HTTP 503".into()),
    };
    let subject = Subject {
        clinic: Some("north".into()),
        resource: Some("leads".into()),
        destination: Some("crm".into()),
    };
    let mut problems = Vec::new();
    for kind in [
        Kind::DestinationFailing,
        Kind::StaleResource,
        Kind::ApiUnauthorized,
    ] {
        for recovered in [false, true] {
            let ctx = alert_context(kind, &subject, recovered, &trouble, now);
            let mut names = vec![format!("{EMAIL_TEMPLATE}.txt")];
            if templates.has(&format!("{EMAIL_TEMPLATE}.html")) {
                names.push(format!("{EMAIL_TEMPLATE}.html"));
            }
            names.push(CHAT_TEMPLATE.to_string());
            for name in names {
                if let Err(p) = templates.check_ctx(&name, "alert", &ctx) {
                    if !problems.contains(&p) {
                        problems.push(p);
                    }
                }
            }
        }
    }
    problems
}

/// How long ago `since` was at `now` (zero if in the future).
fn age(now: DateTime<Utc>, since: DateTime<Utc>) -> Duration {
    (now - since).to_std().unwrap_or_default()
}

/// A duration in milliseconds.
fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A duration as people write it: `45s`, `31m`, `2h 5m`, `3d 4h`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// What replaces a mail address in a reason.
const ADDRESS: &str = "[address]";

/// `reason` with every word that holds an `@` replaced by [`ADDRESS`]: an SMTP server's answer
/// may echo the recipient, who may be a patient (`to: "{{record.Email}}"`).
fn without_addresses(reason: &str) -> String {
    reason
        .split_whitespace()
        .map(|w| if w.contains('@') { ADDRESS } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A reason cut to [`MAX_REASON_CHARS`].
fn cut(s: &str) -> String {
    crate::route::render::truncate_chars(s, MAX_REASON_CHARS)
}

/// Runs `monitor` until `cancel`: a round every [`CHECK_INTERVAL`], and at once when a poll
/// nudges it; the entries it queues wake their workers through `wake`.
pub(crate) async fn watch(
    monitor: Monitor,
    health: Arc<Health>,
    wake: mpsc::UnboundedSender<Wake>,
    cancel: CancellationToken,
) {
    loop {
        let views = resource_views(&health);
        match monitor.check(Utc::now(), &views).await {
            Ok(wakes) => {
                for w in wakes {
                    let _ = wake.send(w);
                }
            }
            Err(e) => tracing::error!("the alert monitor cannot read or write the store: {e}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(CHECK_INTERVAL) => {}
            _ = health.alert_nudge.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    //! The monitor on an injected clock, over a real store: sled in a temporary folder and,
    //! when `CLINICEA_TEST_POSTGRES_URL` names a server, PostgreSQL in a database of its own.

    use super::*;
    use crate::outbox::scratch::ScratchDatabase;
    use crate::outbox::store::{PgOptions, DEFAULT_CACHE_BYTES};
    use crate::route::plan::Payload;
    use chrono::TimeDelta;

    const YAML: &str = "\
clinicea:
  base_url: https://api.clinicea.com
  api_key: KEY-THAT-MUST-NOT-SHOW
resources:
  leads: { path: /api/v1/leads }
smtp:
  host: 127.0.0.1
  port: 2525
  from: notifier@clinic.example
destinations:
  crm:
    type: webhook
    url: https://crm.example/hook/SECRET-PATH-TOKEN
    secret: whsec_Anosux//B7ArbYviwgw2UiZGtkFolNS3DLG8vqVJDWo=
  ops-email:
    type: email
    to: [ops@clinic.example]
    subject: x
    template: new-lead
  ops-hook:
    type: webhook
    url: https://ops.example/alerts
    secret: whsec_Anosux//B7ArbYviwgw2UiZGtkFolNS3DLG8vqVJDWo=
rules:
  - { name: r, resource: leads, notify: [crm] }
alerts:
  notify: [ops-email, ops-hook, crm]
  destination_failing_for: 30m
";

    fn settings() -> Settings {
        let cfg = crate::config::load_str(
            YAML,
            std::path::Path::new("/tmp/c.yaml"),
            &std::collections::HashMap::new(),
        )
        .unwrap();
        crate::daemon::settings::compile(cfg).unwrap()
    }

    /// A store on sled (`postgres` false) or PostgreSQL (`None` when no server is named), with
    /// what keeps it alive.
    async fn store_on(postgres: bool) -> Option<(Store, Box<dyn std::any::Any>)> {
        if postgres {
            let db = ScratchDatabase::from_env().await?;
            let store = Store::open_postgres(&PgOptions {
                url: db.url.clone(),
                holder: None,
                lease: Duration::from_secs(30),
            })
            .await
            .unwrap();
            Some((store, Box::new(db)))
        } else {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("data"), DEFAULT_CACHE_BYTES).unwrap();
            Some((store, Box::new(dir)))
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn mins(m: i64) -> TimeDelta {
        TimeDelta::minutes(m)
    }

    /// Every queued alert entry: (destination, event type, webhook id).
    async fn queued(store: &Store) -> Vec<(String, String, String)> {
        let mut v: Vec<_> = store
            .all_outbox()
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.destination, e.event_type, e.webhook_id))
            .collect();
        v.sort();
        v
    }

    async fn a_destination_failing_for_30_minutes_alerts_once_never_to_itself_and_recovers_once(
        postgres: bool,
    ) {
        let Some((store, _home)) = store_on(postgres).await else {
            return;
        };
        let s = settings();
        let monitor = Monitor::new(store.clone(), &s).unwrap();
        // Failing since t0, attempt after attempt.
        for i in 0..5 {
            store
                .note_failure(
                    "crm",
                    t0() + mins(i),
                    "HTTP 503 from https://crm.example/hook/SECRET-PATH-TOKEN",
                )
                .await
                .unwrap();
        }
        // 29 minutes: nothing yet.
        assert!(monitor
            .check(t0() + mins(29), &[])
            .await
            .unwrap()
            .is_empty());
        assert!(queued(&store).await.is_empty());
        // 31 minutes: one alert to each notify destination but crm itself.
        let wakes = monitor.check(t0() + mins(31), &[]).await.unwrap();
        let q = queued(&store).await;
        assert_eq!(wakes.len(), 2, "{q:?}");
        let dests: Vec<&str> = q.iter().map(|(d, _, _)| d.as_str()).collect();
        assert_eq!(dests, ["ops-email", "ops-hook"]);
        assert!(q.iter().all(|(_, ev, _)| ev == "alert.destination_failing"));
        // What it says: names, counts, a scrubbed reason; no secret.
        let entries = store.all_outbox().await.unwrap();
        for e in &entries {
            let text = match &e.payload {
                Payload::Webhook { body } => body.clone(),
                Payload::Email(m) => format!("{}\n{}\n{:?}", m.subject, m.text, m.html),
                other => panic!("unexpected payload {other:?}"),
            };
            assert!(text.contains("crm"), "{text}");
            assert!(!text.contains("SECRET-PATH-TOKEN"), "{text}");
            assert!(!text.contains("KEY-THAT-MUST-NOT-SHOW"), "{text}");
        }
        let hook = entries
            .iter()
            .find(|e| e.destination == "ops-hook")
            .unwrap();
        let Payload::Webhook { body } = &hook.payload else {
            panic!()
        };
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["type"], "alert.destination_failing");
        assert_eq!(v["data"]["destination"], "crm");
        assert_eq!(v["data"]["failures"], 5);
        assert_eq!(v["data"]["duration_seconds"], 31 * 60);
        let mail = entries
            .iter()
            .find(|e| e.destination == "ops-email")
            .unwrap();
        let Payload::Email(m) = &mail.payload else {
            panic!()
        };
        assert_eq!(m.to, "ops@clinic.example");
        assert!(
            m.subject.contains("destination crm has failed"),
            "{}",
            m.subject
        );
        assert!(m.html.is_some());
        // Still failing: no second alert, also from a new monitor over the same store (a restart).
        assert!(monitor
            .check(t0() + mins(40), &[])
            .await
            .unwrap()
            .is_empty());
        let restarted = Monitor::new(store.clone(), &s).unwrap();
        assert!(restarted
            .check(t0() + mins(50), &[])
            .await
            .unwrap()
            .is_empty());
        assert_eq!(queued(&store).await.len(), 2);
        // It delivers again: one "recovered" each, then nothing more.
        store.clear_failure_streak("crm").await.unwrap();
        let wakes = restarted.check(t0() + mins(51), &[]).await.unwrap();
        assert_eq!(wakes.len(), 2);
        assert!(restarted
            .check(t0() + mins(52), &[])
            .await
            .unwrap()
            .is_empty());
        let q = queued(&store).await;
        let recovered: Vec<_> = q
            .iter()
            .filter(|(_, ev, _)| ev == RECOVERED_EVENT)
            .collect();
        assert_eq!(recovered.len(), 2, "{q:?}");
        assert!(recovered.iter().all(|(d, _, _)| d != "crm"));
        // Flapping: failing again at once is held back until 15 minutes after the last alert.
        store
            .note_failure("crm", t0() + mins(10), "HTTP 503")
            .await
            .unwrap();
        assert!(restarted
            .check(t0() + mins(45), &[])
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            restarted.check(t0() + mins(47), &[]).await.unwrap().len(),
            2,
            "after the limit it alerts again"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn destination_failing_on_sled() {
        a_destination_failing_for_30_minutes_alerts_once_never_to_itself_and_recovers_once(false)
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn destination_failing_on_postgres() {
        a_destination_failing_for_30_minutes_alerts_once_never_to_itself_and_recovers_once(true)
            .await;
    }

    fn view(
        last_success: Option<DateTime<Utc>>,
        unauthorized: Option<u16>,
        watched_since: DateTime<Utc>,
    ) -> ResourceView {
        ResourceView {
            clinic: "default".into(),
            resource: "leads".into(),
            last_success,
            watched_since,
            stale_after: Duration::from_secs(180),
            unauthorized,
            failures: 3,
            last_error: Some("leads: the API answered HTTP 401 for KEY-THAT-MUST-NOT-SHOW".into()),
        }
    }

    async fn a_refused_key_alerts_at_once_and_once_and_a_restart_neither_repeats_nor_forgets(
        postgres: bool,
    ) {
        let Some((store, _home)) = store_on(postgres).await else {
            return;
        };
        let s = settings();
        let monitor = Monitor::new(store.clone(), &s).unwrap();
        let ok = t0();
        // A 401 a second after the last success: at once, and not also "stale".
        let refused = [view(Some(ok), Some(401), ok)];
        assert_eq!(
            monitor
                .check(ok + TimeDelta::seconds(1), &refused)
                .await
                .unwrap()
                .len(),
            3
        );
        let q = queued(&store).await;
        assert!(
            q.iter().all(|(_, ev, _)| ev == "alert.api_unauthorized"),
            "{q:?}"
        );
        assert!(monitor
            .check(ok + mins(20), &refused)
            .await
            .unwrap()
            .is_empty());
        // A restart forgets the memory of polls: no success yet, so the incident stays open.
        let restarted = Monitor::new(store.clone(), &s).unwrap();
        let fresh = [view(None, None, ok + mins(21))];
        assert!(restarted
            .check(ok + mins(21), &fresh)
            .await
            .unwrap()
            .is_empty());
        // The key works again: one "recovered" to each.
        let back = [view(Some(ok + mins(22)), None, ok + mins(21))];
        assert_eq!(
            restarted.check(ok + mins(22), &back).await.unwrap().len(),
            3
        );
        assert!(restarted
            .check(ok + mins(23), &back)
            .await
            .unwrap()
            .is_empty());
        let q = queued(&store).await;
        assert_eq!(
            q.iter().filter(|(_, ev, _)| ev == RECOVERED_EVENT).count(),
            3
        );
        assert_eq!(q.len(), 6);
        for e in store.all_outbox().await.unwrap() {
            assert!(!format!("{e:?}").contains("KEY-THAT-MUST-NOT-SHOW"));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_key_on_sled() {
        a_refused_key_alerts_at_once_and_once_and_a_restart_neither_repeats_nor_forgets(false)
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_key_on_postgres() {
        a_refused_key_alerts_at_once_and_once_and_a_restart_neither_repeats_nor_forgets(true).await;
    }

    #[tokio::test]
    async fn a_stale_resource_alerts_once_with_a_scrubbed_reason_and_recovers_after_a_success() {
        let (store, _home) = store_on(false).await.unwrap();
        let monitor = Monitor::new(store.clone(), &settings()).unwrap();
        let ok = t0();
        let failing = [view(Some(ok), None, ok)];
        // Within the watchdog's window (3 minutes): nothing.
        assert!(monitor
            .check(ok + mins(2), &failing)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            monitor.check(ok + mins(4), &failing).await.unwrap().len(),
            3
        );
        assert!(monitor
            .check(ok + mins(5), &failing)
            .await
            .unwrap()
            .is_empty());
        let entries = store.all_outbox().await.unwrap();
        assert!(entries
            .iter()
            .all(|e| e.event_type == "alert.stale_resource"));
        for e in &entries {
            let dbg = format!("{e:?}");
            assert!(!dbg.contains("KEY-THAT-MUST-NOT-SHOW"), "{dbg}");
            assert!(dbg.contains("[redacted]"), "{dbg}");
        }
        let back = [view(Some(ok + mins(6)), None, ok)];
        assert_eq!(monitor.check(ok + mins(6), &back).await.unwrap().len(), 3);
        assert!(monitor.check(ok + mins(7), &back).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_incident_whose_subject_left_the_config_closes_without_a_message() {
        let (store, _home) = store_on(false).await.unwrap();
        let monitor = Monitor::new(store.clone(), &settings()).unwrap();
        store.note_failure("crm", t0(), "HTTP 500").await.unwrap();
        assert_eq!(monitor.check(t0() + mins(31), &[]).await.unwrap().len(), 2);
        let yaml = YAML.replace(
            "  destination_failing_for: 30m\n",
            "  destination_failing_for: off\n",
        );
        let cfg = crate::config::load_str(
            &yaml,
            std::path::Path::new("/tmp/c.yaml"),
            &std::collections::HashMap::new(),
        )
        .unwrap();
        let off = Monitor::new(
            store.clone(),
            &crate::daemon::settings::compile(cfg).unwrap(),
        )
        .unwrap();
        assert!(off.check(t0() + mins(32), &[]).await.unwrap().is_empty());
        let incidents = store.incidents().await.unwrap();
        assert_eq!(incidents.len(), 1);
        assert!(incidents[0].1.open.is_none(), "{incidents:?}");
    }

    /// A transition is a compare-and-set: of two monitors (two replicas) moving the same
    /// incident from the same state, one wins and the loser queues nothing.
    async fn an_incident_moves_once_and_its_alert_with_it(postgres: bool) {
        let Some((store, _home)) = store_on(postgres).await else {
            return;
        };
        let open = IncidentState {
            open: Some(OpenIncident {
                id: 7,
                since: t0(),
                alerted_ms: 1,
            }),
            last_alert_ms: Some(1),
        };
        let mut alert = OutboxEntry {
            seq: store.next_id().await.unwrap(),
            destination: "ops".into(),
            clinic: String::new(),
            webhook_id: "alert_7_open".into(),
            event_type: "alert.destination_failing".into(),
            resource: String::new(),
            record_id: String::new(),
            rule: ALERT_RULE.into(),
            change_seq: 0,
            payload: Payload::Webhook { body: "{}".into() },
            attempts: 0,
            next_attempt_ms: 0,
            created_ms: 0,
            held: None,
        };
        let key = "destination_failing/crm";
        assert!(store
            .incident_transition(key, None, &open, std::slice::from_ref(&alert))
            .await
            .unwrap());
        alert.seq = store.next_id().await.unwrap();
        assert!(!store
            .incident_transition(key, None, &open, std::slice::from_ref(&alert))
            .await
            .unwrap());
        assert_eq!(
            store.outbox_len().await.unwrap(),
            1,
            "the loser queued nothing"
        );
        let closed = IncidentState {
            open: None,
            last_alert_ms: Some(1),
        };
        assert!(store
            .incident_transition(key, Some(&open), &closed, &[])
            .await
            .unwrap());
        assert!(!store
            .incident_transition(key, Some(&open), &closed, &[])
            .await
            .unwrap());
        assert_eq!(
            store.incidents().await.unwrap(),
            vec![(key.to_string(), closed)]
        );
        // Streaks keep their first failure and count the rest.
        store.note_failure("crm", t0(), "a").await.unwrap();
        store
            .note_failure("crm", t0() + mins(5), "b")
            .await
            .unwrap();
        let streaks = store.failure_streaks().await.unwrap();
        assert_eq!(
            streaks,
            vec![(
                "crm".to_string(),
                FailureStreak {
                    since: t0(),
                    failures: 2,
                    reason: "b".into()
                }
            )]
        );
        store.clear_failure_streak("crm").await.unwrap();
        assert!(store.failure_streaks().await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transitions_on_sled() {
        an_incident_moves_once_and_its_alert_with_it(false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transitions_on_postgres() {
        an_incident_moves_once_and_its_alert_with_it(true).await;
    }

    #[test]
    fn the_shipped_alert_templates_pass_a_strict_check_and_an_override_with_a_typo_does_not() {
        let t = crate::route::render::Templates::shipped().unwrap();
        assert_eq!(check_templates(&t), vec![]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("alert.txt.hbs"),
            "{{title}} {{record.FirstName}}\n",
        )
        .unwrap();
        let t = crate::route::render::Templates::load(Some(dir.path())).unwrap();
        let problems = check_templates(&t);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].message.contains("record.FirstName"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_destination_reason_shows_no_mail_address() {
        assert_eq!(
            without_addresses("550 5.1.1 <ayesha.khan@example.com>: Recipient address rejected"),
            "550 5.1.1 [address] Recipient address rejected"
        );
        assert_eq!(
            without_addresses("webhook answered 503"),
            "webhook answered 503"
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_secs(31 * 60 + 5)), "31m");
        assert_eq!(human(Duration::from_secs(2 * 3600 + 5 * 60)), "2h 5m");
        assert_eq!(human(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d 4h");
    }
}
