//! The web console `run` serves on `listen` at `/`: what is polled (each clinic's resources, last
//! success, failures, staleness), what is queued per destination (queued, retrying, dead,
//! failing), and the dead letters, with retry and purge, one and all.
//!
//! Server-rendered HTML (maud), no JavaScript. Without `console.token` in the config, or without
//! signing in, it is read-only: the overview shows names, counts, record ids and reasons, never
//! record contents. With the token (an `Authorization: Bearer TOKEN` header, or the sign-in form,
//! which sets an HttpOnly, SameSite=Strict cookie) the actions work and one dead letter's page
//! shows its attempts, their response excerpts and its payload, the only place contents appear.
//!
//! Safety of the actions: every action is a POST; a cookie-signed request must carry the form's
//! CSRF field (derived from the token, so a page on another site cannot know it) and, when the
//! browser sends `Origin`, come from this host. The cookie and the CSRF field are keyed hashes of
//! the token: changing the token in the config (and reloading) signs everyone out.
//!
//! Cheap refresh: the overview is built from the in-memory poll health and one snapshot of the
//! store's counts, taken at most every [`SNAPSHOT_TTL`] and again after every action.

use super::health::{constant_time_eq, Health};
use crate::config::SecretString;
use crate::daemon::events::{Event, Events};
use crate::outbox::entry::{DeadLetter, Wake};
use crate::outbox::store::Store;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use maud::{html, Markup, DOCTYPE};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// How long one snapshot of the store's counts serves the overview: a page refreshing every few
/// seconds, or many open at once, costs one store read per interval.
pub(crate) const SNAPSHOT_TTL: Duration = Duration::from_secs(2);
/// How often the overview reloads itself in the browser.
const PAGE_REFRESH_SECS: u32 = 10;
/// The most dead letters the overview lists (the newest); `dead list` shows them all.
const MAX_DEAD_LISTED: usize = 200;
/// How many of the last delivery outcomes the overview shows.
const RECENT_DELIVERIES: usize = 20;
/// The session cookie's name.
const SESSION_COOKIE: &str = "clinicea_console";
/// How long the session cookie lasts in the browser.
const SESSION_MAX_AGE_SECS: u64 = 12 * 3600;

/// What the console knows besides the store: the token and destinations of the running config,
/// the current generation's wake-up channel, the last snapshot.
#[derive(Debug, Default)]
pub(crate) struct ConsoleState {
    config: RwLock<ConsoleConfig>,
    wake: RwLock<Option<UnboundedSender<Wake>>>,
    snapshot: Mutex<Option<(Instant, Arc<Snapshot>)>>,
    /// The last delivery outcomes, newest last, at most [`RECENT_DELIVERIES`].
    recent: Mutex<std::collections::VecDeque<(DateTime<Utc>, crate::deliver::Event)>>,
}

/// Watches what the notifier does for the console's "last deliveries", passing every event on
/// to whoever watched before (`demo`): the events to hand to the engine instead of `events`.
pub(crate) fn watch(events: Events, health: Arc<Health>) -> Events {
    let (mine, mut sub) = Events::channel();
    let (changes, deliveries) = (events.changes(), events.deliveries());
    tokio::spawn(async move {
        while let Some(ev) = sub.recv().await {
            match ev {
                Event::Change(c) => {
                    if let Some(tx) = &changes {
                        let _ = tx.send(c);
                    }
                }
                Event::Delivery(d) => {
                    {
                        let mut recent = health
                            .console
                            .recent
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        recent.push_back((Utc::now(), d.clone()));
                        while recent.len() > RECENT_DELIVERIES {
                            recent.pop_front();
                        }
                    }
                    if let Some(tx) = &deliveries {
                        let _ = tx.send(d);
                    }
                }
            }
        }
    });
    mine
}

/// The parts of the config the console shows or needs, replaced on reload.
#[derive(Debug, Default, Clone)]
struct ConsoleConfig {
    token: Option<SecretString>,
    /// Destination names and kinds, in name order.
    destinations: Vec<(String, &'static str)>,
}

impl ConsoleState {
    /// Takes the token and destinations of a (re)loaded config.
    pub(crate) fn configure(&self, settings: &crate::daemon::settings::Settings) {
        let mut destinations: Vec<(String, &'static str)> = settings
            .pipeline
            .destinations
            .values()
            .map(|d| (d.name.clone(), d.kind_str()))
            .collect();
        destinations.sort();
        *self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = ConsoleConfig {
            token: settings.base.console_token.clone(),
            destinations,
        };
        self.invalidate();
    }

    /// Where a re-driven dead letter is announced to its destination's worker.
    pub(crate) fn set_wake(&self, wake: UnboundedSender<Wake>) {
        *self
            .wake
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(wake);
    }

    fn config(&self) -> ConsoleConfig {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn invalidate(&self) {
        *self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// The current snapshot, taken anew when the last is older than [`SNAPSHOT_TTL`].
    async fn snapshot(
        &self,
        store: &Store,
    ) -> Result<Arc<Snapshot>, crate::outbox::store::StoreError> {
        {
            let guard = self
                .snapshot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((at, s)) = guard.as_ref() {
                if at.elapsed() < SNAPSHOT_TTL {
                    return Ok(s.clone());
                }
            }
        }
        // Taken without the lock (the store may answer over the network); two requests at once
        // may both take one, and the later one stays.
        let s = Arc::new(Snapshot::take(store).await?);
        *self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), s.clone()));
        Ok(s)
    }
}

/// The store's counts at one moment.
#[derive(Debug)]
struct Snapshot {
    /// By destination: (first attempt pending, retrying).
    queued: HashMap<String, (u64, u64)>,
    /// By destination.
    dead: HashMap<String, u64>,
    /// By destination: since when it fails, and why.
    failing: HashMap<String, (DateTime<Utc>, String)>,
    /// The newest dead letters, newest first, at most [`MAX_DEAD_LISTED`].
    letters: Vec<(u64, DeadLetter)>,
    /// All dead letters.
    dead_total: usize,
}

impl Snapshot {
    async fn take(store: &Store) -> Result<Snapshot, crate::outbox::store::StoreError> {
        let queued = store.outbox_counts().await?;
        let mut letters = store.dead_entries().await?;
        let mut dead: HashMap<String, u64> = HashMap::new();
        for (_, d) in &letters {
            *dead.entry(d.entry.destination.clone()).or_default() += 1;
        }
        let dead_total = letters.len();
        letters.reverse();
        letters.truncate(MAX_DEAD_LISTED);
        let failing = store
            .failing_destinations()
            .await?
            .into_iter()
            .map(|(n, h)| (n, (h.since, h.reason)))
            .collect();
        Ok(Snapshot {
            queued,
            dead,
            failing,
            letters,
            dead_total,
        })
    }
}

/// What the routes share.
#[derive(Clone)]
struct App {
    health: Arc<Health>,
    store: Store,
}

/// The console's routes, to be merged into the health server's.
pub(crate) fn routes(health: Arc<Health>, store: Store) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/dead/{id}", get(dead_letter))
        .route("/dead/{id}/retry", post(retry_one))
        .route("/dead/{id}/purge", post(purge_one))
        .route("/dead/retry-all", post(retry_all))
        .route("/dead/purge-all", post(purge_all))
        .with_state(App { health, store })
}

/// A keyed hash of the token for one purpose (`session`, `csrf`), hex.
fn derive(token: &SecretString, purpose: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(token.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(b"clinicea-notifier console\0");
    mac.update(purpose.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How a request proved it may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signed {
    /// It did not (or no token is configured).
    No,
    /// `Authorization: Bearer TOKEN`: a browser never adds it on its own, so no CSRF check.
    Bearer,
    /// The session cookie: the form's CSRF field is checked too.
    Cookie,
}

fn signed(headers: &HeaderMap, token: Option<&SecretString>) -> Signed {
    let Some(token) = token else {
        return Signed::No;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    if let Some(given) = bearer {
        return if constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
            Signed::Bearer
        } else {
            Signed::No
        };
    }
    let want = derive(token, "session");
    let cookie_ok = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .any(|(k, v)| k == SESSION_COOKIE && constant_time_eq(v.as_bytes(), want.as_bytes()));
    if cookie_ok {
        Signed::Cookie
    } else {
        Signed::No
    }
}

/// Whether a POST may act: signed, and (with the cookie) carrying the CSRF field and coming
/// from this host.
fn may_act(headers: &HeaderMap, form: &HashMap<String, String>, cfg: &ConsoleConfig) -> bool {
    match signed(headers, cfg.token.as_ref()) {
        Signed::No => false,
        Signed::Bearer => true,
        Signed::Cookie => {
            let Some(token) = cfg.token.as_ref() else {
                return false;
            };
            let csrf_ok = form
                .get("csrf")
                .is_some_and(|c| constant_time_eq(c.as_bytes(), derive(token, "csrf").as_bytes()));
            csrf_ok && same_origin(headers)
        }
    }
}

/// `Origin`, when the browser sends one, names this host. (The pages' referrer policy is
/// `same-origin`: under `no-referrer` browsers send `Origin: null` with a form, refused here.)
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host)
}

/// A page with the console's frame.
fn page(title: &str, refresh: bool, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if refresh { meta http-equiv="refresh" content=(PAGE_REFRESH_SECS); }
                meta name="referrer" content="same-origin";
                title { (title) " · clinicea-notifier" }
                style { (maud::PreEscaped(CSS)) }
            }
            body {
                header { a href="/" { "clinicea-notifier" } span.sub { (title) } }
                main { (body) }
            }
        }
    };
    let mut resp = axum::response::Html(markup.into_string()).into_response();
    let h = resp.headers_mut();
    // Nothing here is to be framed, sniffed, cached or sent on as a referrer.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}\
header{background:#1d2330;color:#fff;padding:10px 20px}header a{color:#fff;font-weight:600;text-decoration:none}\
.sub{margin-left:12px;opacity:.7}main{padding:12px 20px;max-width:1200px}\
h2{font-size:16px;margin:22px 0 8px}table{border-collapse:collapse;width:100%;background:#fff}\
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e3e6eb;vertical-align:top}\
th{background:#eef0f4;font-weight:600}.bad{color:#b3261e;font-weight:600}.ok{color:#1e7b34}\
.muted{color:#6b7280}form.inline{display:inline}button{font:inherit;padding:2px 10px;cursor:pointer}\
.bar{margin:8px 0;padding:8px 12px;background:#fff;border:1px solid #e3e6eb}\
pre{white-space:pre-wrap;word-break:break-all;background:#fff;border:1px solid #e3e6eb;padding:8px}";

fn fmt_time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "—".into())
}

fn fmt_ms(ms: i64) -> String {
    fmt_time(DateTime::from_timestamp_millis(ms))
}

fn store_error(e: impl std::fmt::Display) -> Response {
    tracing::error!("console: the store could not be read: {e}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "the store could not be read; see the log\n",
    )
        .into_response()
}

/// The hidden CSRF field, for a signed-in page.
fn csrf_field(cfg: &ConsoleConfig, signed: Signed) -> Markup {
    match (signed, cfg.token.as_ref()) {
        (Signed::Cookie | Signed::Bearer, Some(t)) => {
            html! { input type="hidden" name="csrf" value=(derive(t, "csrf")); }
        }
        _ => html! {},
    }
}

fn action(path: &str, label: &str, class: &str, csrf: &Markup) -> Markup {
    html! {
        form.inline method="post" action=(path) {
            (csrf.clone())
            button class=(class) type="submit" { (label) }
        }
    }
}

async fn overview(State(app): State<App>, headers: HeaderMap) -> Response {
    let cfg = app.health.console.config();
    let who = signed(&headers, cfg.token.as_ref());
    let snap = match app.health.console.snapshot(&app.store).await {
        Ok(s) => s,
        Err(e) => return store_error(e),
    };
    let now = Utc::now();
    let mut resources: Vec<_> = app
        .health
        .resources
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    resources.sort_by(|a, b| a.0.cmp(&b.0));
    let recent: Vec<_> = app
        .health
        .console
        .recent
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .cloned()
        .collect();
    let csrf = csrf_field(&cfg, who);
    let body = html! {
        div.bar {
            @match (who, cfg.token.is_some()) {
                (Signed::No, true) => {
                    "Read-only. " a href="/login" { "Sign in" } " with the console token to retry, purge and open dead letters."
                }
                (Signed::No, false) => {
                    "Read-only: set " code { "console.token" } " in the config to allow actions."
                }
                _ => {
                    "Signed in. "
                    form.inline method="post" action="/logout" { (csrf.clone()) button type="submit" { "Sign out" } }
                }
            }
        }
        h2 { "Clinics and resources" }
        table #resources {
            tr { th { "clinic" } th { "resource" } th { "last success" } th { "result" } th { "state" } }
            @for ((clinic, resource), h) in &resources {
                @let stale = match h.last_success {
                    None => true,
                    Some(t) => (now - t).to_std().unwrap_or_default() > h.stale_after,
                };
                tr {
                    td { (clinic) } td { (resource) }
                    td { (fmt_time(h.last_success)) @if let Some(t) = h.last_success { span.muted { " (" ((now - t).num_seconds()) "s ago)" } } }
                    td {
                        @match &h.last_error {
                            None => span.ok { "ok" },
                            Some(e) => span.bad { "failed " (h.consecutive_failures) "× : " (e) },
                        }
                    }
                    td { @if stale { span.bad { "STALE" } } @else { span.ok { "fresh" } } }
                }
            }
        }
        h2 { "Destinations" }
        table #destinations {
            tr { th { "destination" } th { "kind" } th { "queued" } th { "retrying" } th { "dead" } th { "state" } }
            @for (name, kind) in &cfg.destinations {
                @let (q, r) = snap.queued.get(name).copied().unwrap_or_default();
                tr {
                    td { (name) } td { (kind) } td { (q) } td { (r) }
                    td { (snap.dead.get(name).copied().unwrap_or_default()) }
                    td {
                        @match snap.failing.get(name) {
                            Some((since, why)) => span.bad { "FAILING since " (fmt_time(Some(*since))) ": " (why) },
                            None => span.ok { "ok" },
                        }
                    }
                }
            }
        }
        h2 { "Last deliveries" }
        table #deliveries {
            tr { th { "at" } th { "destination" } th { "outcome" } th { "webhook-id" } th { "attempt" } th { "detail" } }
            @for (at, d) in recent.iter().rev() {
                tr {
                    td { (fmt_time(Some(*at))) }
                    @match d {
                        crate::deliver::Event::Delivered { destination, webhook_id, attempt, status, .. } => {
                            td { (destination) } td { span.ok { "delivered" } } td { code { (webhook_id) } } td { (attempt) }
                            td { (status.map_or(String::new(), |s| format!("status {s}"))) }
                        }
                        crate::deliver::Event::Retrying { destination, webhook_id, attempt, reason, .. } => {
                            td { (destination) } td { "retrying" } td { code { (webhook_id) } } td { (attempt) } td { (reason) }
                        }
                        crate::deliver::Event::Dead { destination, webhook_id, reason, .. } => {
                            td { (destination) } td { span.bad { "dead" } } td { code { (webhook_id) } } td {} td { (reason) }
                        }
                    }
                }
            }
        }
        h2 { "Dead letters (" (snap.dead_total) ")" }
        @if snap.dead_total > 0 {
            div.bar {
                (action("/dead/retry-all", "Retry all", "retry-all", &csrf)) " "
                (action("/dead/purge-all", "Purge all", "purge-all", &csrf))
                @if snap.dead_total > snap.letters.len() { span.muted { " (the newest " (snap.letters.len()) " are listed)" } }
            }
        }
        table #dead {
            tr { th { "#" } th { "died" } th { "clinic" } th { "destination" } th { "record" } th { "webhook-id" } th { "attempts" } th { "reason" } th {} }
            @for (seq, d) in &snap.letters {
                tr.dead-letter data-id=(seq) {
                    td { a href={ "/dead/" (seq) } { (seq) } }
                    td { (fmt_ms(d.died_ms)) }
                    td { (d.entry.clinic) }
                    td { (d.entry.destination) }
                    td { (d.entry.resource) " " (d.entry.record_id) }
                    td { code { (d.entry.webhook_id) } }
                    td { (d.entry.attempts) }
                    td { (d.reason) }
                    td {
                        (action(&format!("/dead/{seq}/retry"), "Retry", "retry", &csrf)) " "
                        (action(&format!("/dead/{seq}/purge"), "Purge", "purge", &csrf))
                    }
                }
            }
        }
    };
    page("console", true, body)
}

async fn login_page(State(app): State<App>) -> Response {
    let has_token = app.health.console.config().token.is_some();
    page(
        "sign in",
        false,
        html! {
            @if has_token {
                form method="post" action="/login" {
                    p { label { "Console token " input type="password" name="token" autocomplete="current-password" autofocus; } }
                    button type="submit" { "Sign in" }
                }
            } @else {
                p { "No " code { "console.token" } " is set in the config: the console is read-only." }
            }
        },
    )
}

async fn login(State(app): State<App>, body: Bytes) -> Response {
    let form = form_fields(&body);
    let cfg = app.health.console.config();
    let given = form.get("token").map(|t| t.trim()).unwrap_or("");
    match cfg.token.as_ref() {
        Some(t) if constant_time_eq(given.as_bytes(), t.expose().as_bytes()) => {
            let cookie = format!(
                "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_MAX_AGE_SECS}",
                derive(t, "session")
            );
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        _ => refused("That is not the console token."),
    }
}

async fn logout() -> Response {
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

fn refused(why: &str) -> Response {
    let mut r = page(
        "refused",
        false,
        html! { p.bad { (why) } p { a href="/login" { "Sign in" } " · " a href="/" { "Back" } } },
    );
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    r
}

fn not_found(seq: u64) -> Response {
    let mut r = page(
        "not found",
        false,
        html! { p { "No dead letter " (seq) " (retried or purged already?)." } p { a href="/" { "Back" } } },
    );
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

async fn dead_letter(
    State(app): State<App>,
    UrlPath(seq): UrlPath<u64>,
    headers: HeaderMap,
) -> Response {
    let cfg = app.health.console.config();
    let who = signed(&headers, cfg.token.as_ref());
    if who == Signed::No {
        return refused(
            "A dead letter holds record contents: sign in with the console token to open it.",
        );
    }
    let d = match app.store.dead_get(seq).await {
        Ok(Some(d)) => d,
        Ok(None) => return not_found(seq),
        Err(e) => return store_error(e),
    };
    let attempts = match app.store.attempts(seq).await {
        Ok(a) => a,
        Err(e) => return store_error(e),
    };
    let pretty = |body: &String| {
        serde_json::from_str::<serde_json::Value>(body)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or_else(|_| body.clone())
    };
    let payload = match &d.entry.payload {
        crate::route::plan::Payload::Webhook { body }
        | crate::route::plan::Payload::Chat { body } => pretty(body),
        crate::route::plan::Payload::Publish { subject, body } => {
            format!("Subject: {subject}\n\n{}", pretty(body))
        }
        crate::route::plan::Payload::Email(m) => {
            format!("To: {}\nSubject: {}\n\n{}", m.to, m.subject, m.text)
        }
    };
    let csrf = csrf_field(&cfg, who);
    let e = &d.entry;
    page(
        &format!("dead letter {seq}"),
        false,
        html! {
            table #letter {
                tr { th { "clinic" } td { (e.clinic) } }
                tr { th { "destination" } td { (e.destination) } }
                tr { th { "event" } td { (e.event_type) " (" (e.resource) " " (e.record_id) ")" } }
                tr { th { "webhook-id" } td { code { (e.webhook_id) } } }
                tr { th { "rule" } td { (e.rule) } }
                tr { th { "created" } td { (fmt_ms(e.created_ms)) } }
                tr { th { "died" } td { (fmt_ms(d.died_ms)) } }
                tr { th { "reason" } td { (d.reason) } }
            }
            div.bar {
                (action(&format!("/dead/{seq}/retry"), "Retry", "retry", &csrf)) " "
                (action(&format!("/dead/{seq}/purge"), "Purge", "purge", &csrf))
            }
            h2 { "Attempts" }
            table #attempts {
                tr { th { "#" } th { "at" } th { "status" } th { "ms" } th { "verdict" } th { "response (excerpt)" } }
                @for a in &attempts {
                    tr {
                        td { (a.attempt) } td { (fmt_ms(a.at_ms)) }
                        td { (a.status.map_or("—".to_string(), |s| s.to_string())) }
                        td { (a.duration_ms) }
                        td { (verdict_text(&a.verdict)) }
                        td { code { (a.response) } }
                    }
                }
            }
            h2 { "Payload" }
            pre #payload { (payload) }
        },
    )
}

fn verdict_text(v: &crate::model::Verdict) -> String {
    use crate::model::Verdict;
    match v {
        Verdict::Success => "success".into(),
        Verdict::Retry { reason, .. } => format!("retry: {reason}"),
        Verdict::Fail { reason } => format!("fail: {reason}"),
    }
}

/// Re-drives one dead letter: a fresh schedule, its old attempts forgotten, its worker woken.
async fn redrive(app: &App, seq: u64) -> Result<bool, crate::outbox::store::StoreError> {
    let Some(d) = app.store.dead_get(seq).await? else {
        return Ok(false);
    };
    let mut entry = d.entry;
    entry.attempts = 0;
    entry.next_attempt_ms = Utc::now().timestamp_millis();
    app.store.forget_attempts(seq).await?;
    app.store.dead_to_outbox(&entry).await?;
    let wake = app
        .health
        .console
        .wake
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Some(w) = wake {
        let _ = w.send(Wake {
            destination: entry.destination.clone(),
            seq,
            due_ms: entry.next_attempt_ms,
            entry: None,
        });
    }
    tracing::info!(seq, destination = %entry.destination, webhook_id = %entry.webhook_id, "console: dead letter queued again");
    Ok(true)
}

/// A form body's fields (a POST without a body has none).
fn form_fields(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The refusal of an action when the request may not act.
fn refused_action(
    app: &App,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Option<Response> {
    (!may_act(headers, form, &app.health.console.config())).then(|| {
        refused("This action needs the console token (sign in, or send it as a bearer token).")
    })
}

/// After an action: the overview, or the dead letter that was not there, or the store's error.
fn acted(app: &App, done: Result<Option<u64>, crate::outbox::store::StoreError>) -> Response {
    app.health.console.invalidate();
    match done {
        Ok(Some(missing)) => not_found(missing),
        Ok(None) => Redirect::to("/").into_response(),
        Err(e) => store_error(e),
    }
}

async fn retry_one(
    State(app): State<App>,
    UrlPath(seq): UrlPath<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(no) = refused_action(&app, &headers, &form_fields(&body)) {
        return no;
    }
    let done = redrive(&app, seq)
        .await
        .map(|found| (!found).then_some(seq));
    acted(&app, done)
}

async fn purge_one(
    State(app): State<App>,
    UrlPath(seq): UrlPath<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(no) = refused_action(&app, &headers, &form_fields(&body)) {
        return no;
    }
    let done = async {
        if app.store.dead_get(seq).await?.is_none() {
            return Ok(Some(seq));
        }
        app.store.dead_remove(seq).await?;
        tracing::info!(seq, "console: dead letter purged");
        Ok(None)
    }
    .await;
    acted(&app, done)
}

async fn retry_all(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(no) = refused_action(&app, &headers, &form_fields(&body)) {
        return no;
    }
    let done = async {
        for (seq, _) in app.store.dead_entries().await? {
            redrive(&app, seq).await?;
        }
        Ok(None)
    }
    .await;
    acted(&app, done)
}

async fn purge_all(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(no) = refused_action(&app, &headers, &form_fields(&body)) {
        return no;
    }
    let done = async {
        let n = app.store.purge_dead(None).await?;
        tracing::info!(n, "console: every dead letter purged");
        Ok(None)
    }
    .await;
    acted(&app, done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn cfg() -> ConsoleConfig {
        ConsoleConfig {
            token: Some(SecretString::new("console-token-0123456789")),
            destinations: Vec::new(),
        }
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn an_action_needs_the_bearer_token_or_the_cookie_with_its_csrf_field_from_this_host() {
        let c = cfg();
        let t = c.token.clone().unwrap();
        let cookie = format!("{SESSION_COOKIE}={}", derive(&t, "session"));
        let csrf = HashMap::from([("csrf".to_string(), derive(&t, "csrf"))]);
        let none = HashMap::new();
        // Bearer: no CSRF field needed.
        let bearer = headers(&[(header::AUTHORIZATION, "Bearer console-token-0123456789")]);
        assert!(may_act(&bearer, &none, &c));
        assert!(!may_act(
            &headers(&[(header::AUTHORIZATION, "Bearer wrong")]),
            &none,
            &c
        ));
        // Cookie: only with the CSRF field, and from this host when Origin is sent.
        let with_cookie = headers(&[(header::COOKIE, &cookie), (header::HOST, "127.0.0.1:9187")]);
        assert!(may_act(&with_cookie, &csrf, &c));
        assert!(!may_act(&with_cookie, &none, &c), "no CSRF field");
        let bad_csrf = HashMap::from([("csrf".to_string(), derive(&t, "session"))]);
        assert!(!may_act(&with_cookie, &bad_csrf, &c));
        let mut cross = with_cookie.clone();
        cross.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!may_act(&cross, &csrf, &c), "another site");
        let mut same = with_cookie.clone();
        same.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:9187"),
        );
        assert!(may_act(&same, &csrf, &c));
        // A cookie for another token, or nothing at all.
        let other = SecretString::new("another-token-0123456789");
        let stale = headers(&[(
            header::COOKIE,
            &format!("{SESSION_COOKIE}={}", derive(&other, "session")),
        )]);
        assert!(!may_act(
            &stale,
            &HashMap::from([("csrf".to_string(), derive(&other, "csrf"))]),
            &c
        ));
        assert!(!may_act(&HeaderMap::new(), &csrf, &c));
        // Without a configured token nothing may act.
        let open = ConsoleConfig::default();
        assert!(!may_act(&bearer, &none, &open));
    }
}
