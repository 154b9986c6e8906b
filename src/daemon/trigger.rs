//! The poll trigger: `POST /trigger/{clinic}/{resource}` on `listen` makes that resource's poll
//! loop poll now, so a change reaches its receivers within seconds instead of a poll interval.
//!
//! Clinicea can call a URL on its own events, unsigned and with an undocumented body, and only
//! a URL can be configured there. So the request carries nothing we trust: its body is never
//! read, and all it can do is move a poll earlier; what the poll finds is what the API says,
//! exactly as on the schedule. The clinic's `trigger_token` authenticates it, in the path
//! (`/trigger/{clinic}/{resource}/{token}`), as `Authorization: Bearer TOKEN`, or as
//! `?token=TOKEN`, compared in constant time; it is never logged, echoed or used as a label.
//!
//! Triggers are coalesced and rate-limited by the loop ([`super::schedule`]): each (clinic,
//! resource) has a `watch` channel whose value is bumped by every accepted trigger, and the
//! loop wakes on a change, waits until [`super::schedule::TRIGGER_QUIET`] passes without another
//! (at most [`super::schedule::TRIGGER_SETTLE`] after the first) and at least
//! [`super::schedule::TRIGGER_MIN_GAP`] after its last poll, then marks the channel seen as the
//! poll starts. A hundred triggers make one poll (or one more, if some arrive while it runs).
//! A reload keeps the channels but not what a stopped loop had not yet answered: a trigger
//! pending at that moment waits for the next generation's first poll, on its schedule.
//!
//! Answers: 202 accepted; 401 for a missing or wrong token, a clinic without `trigger_token`,
//! and an unknown clinic (the same answer as a wrong token, so an unauthenticated caller cannot
//! list the clinic names by trying them); 404 for a resource the (authenticated) clinic does not
//! poll; 413 for a body larger than [`MAX_BODY`]; 503 with `Retry-After` when no poll loop of the
//! resource runs in this process (a PostgreSQL replica that does not hold the clinic's lease, or
//! the moment of a reload): nothing polls then, and the scheduled poll of the replica that holds
//! it still comes.

use crate::config::{self, SecretString};
use crate::daemon::health::constant_time_eq;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use tokio::sync::watch;

/// The largest request body accepted (it is never read, so a bigger one is only a sign that
/// the caller is not what we expect; refusing it early keeps anyone from streaming into us).
pub(crate) const MAX_BODY: u64 = 64 * 1024;

/// What a 503 tells the caller to wait before trying again: about a lease tick, after which
/// another replica may have taken the clinic over, or a reload is done.
const RETRY_AFTER_SECS: u64 = 5;

/// The metric label of a clinic or resource the config does not name: a caller's made-up
/// names must not become label values (each would be a new time series).
const UNKNOWN_LABEL: &str = "(unknown)";

/// One clinic's trigger: its token (`None`: the trigger is off) and a channel per resource.
#[derive(Debug)]
struct ClinicTriggers {
    token: Option<SecretString>,
    resources: HashMap<String, watch::Sender<u64>>,
}

/// Every clinic's triggers, kept across reloads (the channels of resources that stay are kept,
/// so a loop of the next generation subscribes to the same one).
#[derive(Debug, Default)]
pub(crate) struct Triggers {
    clinics: RwLock<HashMap<String, ClinicTriggers>>,
}

/// What became of one trigger request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A poll is due soon.
    Accepted,
    /// Missing or wrong token, trigger off, or unknown clinic.
    Unauthorized,
    /// The clinic does not poll that resource.
    NotFound,
    /// No poll loop of the resource runs in this process right now.
    Unavailable,
    /// The body is larger than [`MAX_BODY`].
    TooLarge,
}

impl Outcome {
    /// The `outcome` label.
    fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Unauthorized => "unauthorized",
            Outcome::NotFound => "not_found",
            Outcome::Unavailable => "unavailable",
            Outcome::TooLarge => "too_large",
        }
    }
}

impl Triggers {
    /// Takes the clinics, resources and tokens of `base` (at start and on every reload).
    pub(crate) fn configure(&self, base: &config::Base) {
        let mut guard = self.clinics.write().unwrap_or_else(PoisonError::into_inner);
        let mut old = std::mem::take(&mut *guard);
        for clinic in &base.clinics {
            let mut kept = old
                .remove(&clinic.name)
                .map(|c| c.resources)
                .unwrap_or_default();
            let resources = clinic
                .resources
                .iter()
                .map(|r| {
                    let tx = kept.remove(&r.name).unwrap_or_else(|| watch::channel(0).0);
                    (r.name.clone(), tx)
                })
                .collect();
            guard.insert(
                clinic.name.clone(),
                ClinicTriggers {
                    token: clinic.clinicea.trigger_token.clone(),
                    resources,
                },
            );
        }
    }

    /// The channel a poll loop of `clinic`'s `resource` waits on (`None` if it is not
    /// configured: then nothing can trigger it).
    pub(crate) fn subscribe(&self, clinic: &str, resource: &str) -> Option<watch::Receiver<u64>> {
        let guard = self.clinics.read().unwrap_or_else(PoisonError::into_inner);
        guard
            .get(clinic)?
            .resources
            .get(resource)
            .map(|tx| tx.subscribe())
    }

    /// Authenticates a trigger of `clinic`'s `resource` with `token` and, if it is accepted,
    /// tells its poll loop. Returns the outcome and the metric labels it may carry.
    fn fire(&self, clinic: &str, resource: &str, token: Option<&str>) -> (Outcome, String, String) {
        let guard = self.clinics.read().unwrap_or_else(PoisonError::into_inner);
        let given = token.unwrap_or("");
        let Some(c) = guard.get(clinic) else {
            // Compared anyway, so an unknown clinic takes as long as a wrong token.
            let _ = constant_time_eq(given.as_bytes(), b"no clinic of that name");
            return (
                Outcome::Unauthorized,
                UNKNOWN_LABEL.into(),
                UNKNOWN_LABEL.into(),
            );
        };
        let resource_label = if c.resources.contains_key(resource) {
            resource.to_string()
        } else {
            UNKNOWN_LABEL.to_string()
        };
        let authorized = match (&c.token, token) {
            (Some(want), Some(_)) => constant_time_eq(given.as_bytes(), want.expose().as_bytes()),
            _ => false,
        };
        if !authorized {
            return (Outcome::Unauthorized, clinic.to_string(), resource_label);
        }
        let Some(tx) = c.resources.get(resource) else {
            return (Outcome::NotFound, clinic.to_string(), resource_label);
        };
        if tx.receiver_count() == 0 {
            return (Outcome::Unavailable, clinic.to_string(), resource_label);
        }
        tx.send_modify(|n| *n = n.wrapping_add(1));
        (Outcome::Accepted, clinic.to_string(), resource_label)
    }
}

/// The token a request carries: in the path (the form for callers that can only be given a
/// URL), else `Authorization: Bearer`, else `?token=`. The first one present is the one judged.
fn token_of<'a>(
    path_token: Option<&'a str>,
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Option<std::borrow::Cow<'a, str>> {
    if let Some(t) = path_token {
        return Some(t.into());
    }
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
    {
        return Some(t.into());
    }
    let query = query?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

/// Answers one trigger request (the path already split into its segments).
fn answer(
    triggers: &Triggers,
    segments: &[&str],
    headers: &HeaderMap,
    query: Option<&str>,
) -> Response {
    let (clinic, resource, path_token) = match segments {
        [c, r] => (*c, *r, None),
        [c, r, t] => (*c, *r, Some(*t)),
        _ => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
    };
    let too_large = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BODY);
    let (outcome, clinic_label, resource_label) = if too_large {
        (
            Outcome::TooLarge,
            UNKNOWN_LABEL.to_string(),
            UNKNOWN_LABEL.to_string(),
        )
    } else {
        let token = token_of(path_token, headers, query);
        triggers.fire(clinic, resource, token.as_deref())
    };
    metrics::counter!(
        crate::telemetry::metric::TRIGGERS,
        "clinic" => clinic_label.clone(),
        "resource" => resource_label.clone(),
        "outcome" => outcome.label()
    )
    .increment(1);
    // Only the configured names reach the log: a caller's own are noise, and the token never.
    tracing::debug!(clinic = %clinic_label, resource = %resource_label, outcome = outcome.label(), "poll trigger");
    match outcome {
        Outcome::Accepted => {
            (StatusCode::ACCEPTED, "accepted: the resource polls soon\n").into_response()
        }
        Outcome::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"trigger\"")],
            "a trigger needs the clinic's trigger_token\n",
        )
            .into_response(),
        Outcome::NotFound => {
            (StatusCode::NOT_FOUND, "the clinic polls no such resource\n").into_response()
        }
        Outcome::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
            "this process does not poll that clinic right now\n",
        )
            .into_response(),
        Outcome::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "a trigger's body is ignored; send none\n",
        )
            .into_response(),
    }
}

/// The trigger's routes, for the `listen` server: `POST /trigger/{clinic}/{resource}` and
/// `POST /trigger/{clinic}/{resource}/{token}`. The path is split here rather than by axum's
/// extractors, whose rejections would echo what they could not parse (a token among it).
pub(crate) fn routes(health: Arc<super::health::Health>) -> axum::Router {
    axum::Router::new().route(
        "/trigger/{*rest}",
        axum::routing::post(move |uri: axum::http::Uri, headers: HeaderMap| {
            let h = health.clone();
            async move {
                let rest = uri.path().strip_prefix("/trigger/").unwrap_or("");
                let segments: Vec<&str> = rest.split('/').collect();
                answer(&h.triggers, &segments, &headers, uri.query())
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const TOKEN: &str = "0123456789abcdef0123";

    fn triggers() -> Triggers {
        let t = Triggers::default();
        let mut clinics = HashMap::new();
        clinics.insert(
            "north".to_string(),
            ClinicTriggers {
                token: Some(SecretString::new(TOKEN)),
                resources: [("leads".to_string(), watch::channel(0).0)]
                    .into_iter()
                    .collect(),
            },
        );
        clinics.insert(
            "south".to_string(),
            ClinicTriggers {
                token: None,
                resources: [("leads".to_string(), watch::channel(0).0)]
                    .into_iter()
                    .collect(),
            },
        );
        *t.clinics.write().unwrap() = clinics;
        t
    }

    fn status(t: &Triggers, segments: &[&str], headers: &HeaderMap, query: Option<&str>) -> u16 {
        answer(t, segments, headers, query).status().as_u16()
    }

    #[test]
    fn the_token_is_taken_from_the_path_the_header_or_the_query() {
        let t = triggers();
        let mut rx = t.subscribe("north", "leads").unwrap();
        let none = HeaderMap::new();
        assert_eq!(status(&t, &["north", "leads", TOKEN], &none, None), 202);
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        let mut bearer = HeaderMap::new();
        bearer.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
        );
        assert_eq!(status(&t, &["north", "leads"], &bearer, None), 202);
        assert_eq!(
            status(
                &t,
                &["north", "leads"],
                &none,
                Some(&format!("token={TOKEN}"))
            ),
            202
        );
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn a_wrong_or_missing_token_an_unknown_clinic_or_a_trigger_left_off_is_401_and_fires_nothing() {
        let t = triggers();
        let mut north = t.subscribe("north", "leads").unwrap();
        let mut south = t.subscribe("south", "leads").unwrap();
        let none = HeaderMap::new();
        for (segments, query) in [
            (vec!["north", "leads"], None),
            (vec!["north", "leads", "0123456789abcdef012"], None),
            (vec!["north", "leads"], Some("token=wrong")),
            (vec!["nowhere", "leads", TOKEN], None),
            (vec!["south", "leads", TOKEN], None),
            (vec!["south", "leads", ""], None),
            // An unknown resource without the token: 401 too, so it reveals nothing.
            (vec!["north", "bills"], None),
        ] {
            assert_eq!(
                status(&t, &segments, &none, query),
                401,
                "{segments:?} {query:?}"
            );
        }
        assert!(!north.has_changed().unwrap() && !south.has_changed().unwrap());
        north.borrow_and_update();
        south.borrow_and_update();
        // With the token, an unknown resource is 404; a body too large is refused unread.
        assert_eq!(status(&t, &["north", "bills", TOKEN], &none, None), 404);
        let mut big = HeaderMap::new();
        big.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1000000"));
        assert_eq!(status(&t, &["north", "leads", TOKEN], &big, None), 413);
        assert!(!north.has_changed().unwrap());
        // Extra segments are not a trigger.
        assert_eq!(
            status(&t, &["north", "leads", TOKEN, "x"], &none, None),
            404
        );
    }

    #[test]
    fn a_resource_no_loop_polls_here_is_503() {
        let t = triggers();
        assert_eq!(
            status(&t, &["north", "leads", TOKEN], &HeaderMap::new(), None),
            503
        );
        let _rx = t.subscribe("north", "leads").unwrap();
        assert_eq!(
            status(&t, &["north", "leads", TOKEN], &HeaderMap::new(), None),
            202
        );
    }
}
