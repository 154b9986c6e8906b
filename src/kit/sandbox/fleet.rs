//! Several organizations behind one HTTP server ([`SandboxOptions::clinics`]).
//!
//! Each organization is a [`Sandbox`] of its own, built from the same options: with one, it is
//! built from them unchanged and answers every request, whatever key it presents (a wrong key is
//! refused by it, as it always was). With N > 1, organization i (1..=N) gets key `{api_key}-{i}`,
//! login user `{username}-{i}` and a seed drawn from the seed and i; a request's key (header
//! `api`, header `api_key`, query `api_key`, or an organization's current login token) is looked
//! up in a map to pick its organization in O(1), which then serves it exactly as a lone sandbox
//! would (faults, auth, paging). A key of no organization gets the usual 401 from the fleet itself
//! and is counted as `unrouted`.
//!
//! Admin: `/admin/...` is organization 1's, `/clinics/{i}/admin/...` the same endpoints for
//! organization i, and `GET /admin/fleet` ([`FleetStats`]) every organization's counters plus the
//! number of feed requests that arrived in each second (a ring of [`ARRIVAL_WINDOW_SECS`]
//! counters, so memory stays bounded however long it runs).

use super::{
    admin_churn, admin_clear_faults, admin_delete, admin_faults, admin_get, admin_insert,
    admin_list, admin_mode, admin_patch, admin_set_mode, admin_stats, json_value, lock, param,
    parse_query, text, unix_ms_now, with_date, Resource, Sandbox, SandboxOptions, Stats,
    INVALID_KEY, LOGIN_PATH,
};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How many seconds of feed-request arrivals the fleet keeps, one counter per second: an hour,
/// enough for a benchmark of several poll intervals, in 14 KB.
pub(crate) const ARRIVAL_WINDOW_SECS: usize = 3600;
/// The most organizations `sandbox --clinics` serves.
pub(crate) const MAX_CLINICS: usize = 10_000;

/// Which organization (1-based) answered a request: put on its response for [`with_date`].
#[derive(Debug, Clone, Copy)]
pub(super) struct ClinicNo(pub(super) usize);

/// Every organization's counters: the body of `GET /admin/fleet`.
#[derive(Debug, Clone, Serialize)]
pub struct FleetStats {
    /// How many organizations the sandbox serves.
    pub clinics: usize,
    /// When the sandbox started, in milliseconds since the Unix epoch (the host's clock): second
    /// 0 of [`FleetStats::arrivals`].
    pub started_unix_ms: u64,
    /// Seconds since the sandbox started, when these counters were read.
    pub uptime_secs: f64,
    /// API requests per resource (and `login`), summed over the organizations.
    pub requests: BTreeMap<String, u64>,
    /// Requests whose key or token belongs to no organization (refused with 401, counted by
    /// none); with one organization that organization counts them, so this stays 0.
    pub unrouted: u64,
    /// Feed requests that arrived in each second.
    pub arrivals: ArrivalWindow,
    /// Each organization's counters, organization 1 first.
    pub organizations: Vec<Stats>,
}

/// Feed requests (every resource, any key, the refused ones too) per second since start, for the
/// last [`ARRIVAL_WINDOW_SECS`] seconds.
#[derive(Debug, Clone, Serialize)]
pub struct ArrivalWindow {
    /// The second (since start) that `per_second[0]` counts.
    pub first_second: u64,
    /// Arrivals in each second from `first_second` to the current one (still counting).
    pub per_second: Vec<u32>,
}

/// A ring of per-second counters.
struct Arrivals {
    counts: Vec<u32>,
    /// The latest second counted so far; the ring holds the seconds up to it.
    latest: Option<u64>,
}

impl Arrivals {
    fn new() -> Arrivals {
        Arrivals {
            counts: vec![0; ARRIVAL_WINDOW_SECS],
            latest: None,
        }
    }

    fn slot(&self, second: u64) -> usize {
        (second % self.counts.len() as u64) as usize
    }

    /// Counts one arrival in `second`.
    fn note(&mut self, second: u64) {
        let window = self.counts.len() as u64;
        match self.latest {
            Some(latest) if second <= latest => {
                if latest - second >= window {
                    return;
                }
            }
            latest => {
                // Seconds nobody arrived in since the latest one are zero now.
                let from = latest
                    .map_or(0, |l| l + 1)
                    .max((second + 1).saturating_sub(window));
                for s in from..=second {
                    let i = self.slot(s);
                    self.counts[i] = 0;
                }
                self.latest = Some(second);
            }
        }
        let i = self.slot(second);
        self.counts[i] = self.counts[i].saturating_add(1);
    }

    /// The counters from `now` back over the window.
    fn window(&self, now: u64) -> ArrivalWindow {
        let window = self.counts.len() as u64;
        let first_second = (now + 1).saturating_sub(window);
        let per_second = (first_second..=now)
            .map(|s| match self.latest {
                Some(latest) if s <= latest && latest - s < window => self.counts[self.slot(s)],
                _ => 0,
            })
            .collect();
        ArrivalWindow {
            first_second,
            per_second,
        }
    }
}

/// Each organization's current login token, both ways, so a token finds its organization in
/// O(1) and a new login drops the token it replaces (at most one per organization).
#[derive(Default)]
struct Tokens {
    by_token: HashMap<String, usize>,
    by_clinic: HashMap<usize, String>,
}

impl Tokens {
    fn replace(&mut self, clinic: usize, token: String) {
        if let Some(old) = self.by_clinic.insert(clinic, token.clone()) {
            self.by_token.remove(&old);
        }
        self.by_token.insert(token, clinic);
    }
}

struct FleetShared {
    /// Organization i at index i - 1.
    clinics: Vec<Sandbox>,
    /// Organization index by API key; empty with one organization, which takes every request.
    by_key: HashMap<String, usize>,
    tokens: Mutex<Tokens>,
    arrivals: Mutex<Arrivals>,
    unrouted: AtomicU64,
    started: Instant,
    started_unix_ms: u64,
}

/// The organizations one server serves. Cheap to clone: clones share them. Its `Debug` output
/// shows how many there are, never keys or records.
#[derive(Clone)]
pub(super) struct Fleet {
    shared: Arc<FleetShared>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("clinics", &self.shared.clinics.len())
            .finish_non_exhaustive()
    }
}

/// Organization `i`'s seed: the fleet's seed for organization 1, a SplitMix64 step of the seed
/// and `i` for the others, so neighbouring organizations draw unrelated records.
fn clinic_seed(seed: u64, i: usize) -> u64 {
    if i == 1 {
        return seed;
    }
    let mut z = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Fleet {
    /// Generates every organization's records (a while for many large ones: call it off the
    /// async runtime).
    pub(super) fn new(opts: SandboxOptions) -> Fleet {
        let n = opts.clinics.max(1);
        let clinics: Vec<Sandbox> = if n == 1 {
            vec![Sandbox::new(opts)]
        } else {
            // One start for all, so every organization's history ends at the same instant.
            let start = opts.start.unwrap_or_else(|| Utc::now() + opts.clock_offset);
            (1..=n)
                .map(|i| {
                    Sandbox::new(SandboxOptions {
                        seed: clinic_seed(opts.seed, i),
                        api_key: format!("{}-{i}", opts.api_key),
                        username: format!("{}-{i}", opts.username),
                        start: Some(start),
                        clinics: 1,
                        ..opts.clone()
                    })
                })
                .collect()
        };
        let by_key = match n {
            1 => HashMap::new(),
            _ => clinics
                .iter()
                .enumerate()
                .map(|(i, c)| (c.shared.config.api_key.clone(), i))
                .collect(),
        };
        let started_unix_ms = unix_ms_now();
        Fleet {
            shared: Arc::new(FleetShared {
                clinics,
                by_key,
                tokens: Mutex::new(Tokens::default()),
                arrivals: Mutex::new(Arrivals::new()),
                unrouted: AtomicU64::new(0),
                started: Instant::now(),
                started_unix_ms,
            }),
        }
    }

    /// Organization `i` (1-based).
    ///
    /// # Panics
    /// When there is no organization `i`.
    pub(super) fn clinic(&self, i: usize) -> &Sandbox {
        let n = self.shared.clinics.len();
        match i
            .checked_sub(1)
            .and_then(|idx| self.shared.clinics.get(idx))
        {
            Some(sb) => sb,
            None => panic!("no organization {i}: the sandbox serves 1 to {n}"),
        }
    }

    fn is_single(&self) -> bool {
        self.shared.clinics.len() == 1
    }

    /// The organization (1-based) whose key or login token `presented` is.
    fn by_key(&self, tokens: &Tokens, presented: &str) -> Option<usize> {
        self.shared
            .by_key
            .get(presented)
            .or_else(|| tokens.by_token.get(presented))
            .map(|idx| idx + 1)
    }

    /// The organization a feed request goes to, by the first key it presents that belongs to one.
    fn route(&self, headers: &HeaderMap, raw: &str) -> Option<usize> {
        if self.is_single() {
            return Some(1);
        }
        let params = parse_query(raw);
        let tokens = lock(&self.shared.tokens);
        ["api", "api_key"]
            .iter()
            .filter_map(|h| headers.get(*h))
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .chain(
                params
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case("api_key"))
                    .map(|(_, v)| v.as_str()),
            )
            .find_map(|key| self.by_key(&tokens, key))
    }

    fn seconds_since_start(&self) -> u64 {
        self.shared.started.elapsed().as_secs()
    }

    fn refuse_unrouted(&self) -> Response {
        self.shared.unrouted.fetch_add(1, Ordering::Relaxed);
        text(StatusCode::UNAUTHORIZED, INVALID_KEY)
    }

    /// `GET` on one of the feeds: counted as an arrival, then served by its organization.
    async fn feed(&self, r: Resource, headers: &HeaderMap, raw: &str) -> Response {
        let second = self.seconds_since_start();
        lock(&self.shared.arrivals).note(second);
        let Some(i) = self.route(headers, raw) else {
            return self.refuse_unrouted();
        };
        let mut resp = self.clinic(i).feed(r, headers, raw).await;
        resp.extensions_mut().insert(ClinicNo(i));
        resp
    }

    /// The login endpoint: its `apiKey` picks the organization, whose new token is then routed
    /// to it.
    async fn login(&self, raw: &str) -> Response {
        let i = if self.is_single() {
            Some(1)
        } else {
            let params = parse_query(raw);
            param(&params, "apiKey").and_then(|k| self.shared.by_key.get(k).map(|idx| idx + 1))
        };
        let Some(i) = i else {
            return self.refuse_unrouted();
        };
        let (mut resp, token) = self.clinic(i).login(raw).await;
        if let (Some(token), false) = (token, self.is_single()) {
            lock(&self.shared.tokens).replace(i - 1, token);
        }
        resp.extensions_mut().insert(ClinicNo(i));
        resp
    }

    /// Every organization's counters.
    pub(super) fn stats(&self) -> FleetStats {
        let organizations: Vec<Stats> = self.shared.clinics.iter().map(Sandbox::stats).collect();
        let mut requests = BTreeMap::new();
        for stats in &organizations {
            for (resource, n) in &stats.requests {
                *requests.entry(resource.clone()).or_default() += n;
            }
        }
        let uptime = self.shared.started.elapsed();
        FleetStats {
            clinics: organizations.len(),
            started_unix_ms: self.shared.started_unix_ms,
            uptime_secs: uptime.as_secs_f64(),
            requests,
            unrouted: self.shared.unrouted.load(Ordering::Relaxed),
            arrivals: lock(&self.shared.arrivals).window(uptime.as_secs()),
            organizations,
        }
    }

    /// The HTTP API: the feeds and login routed by key, each organization's admin, the fleet's.
    pub(super) fn router(&self) -> Router {
        fn feed(r: Resource) -> axum::routing::MethodRouter<Fleet> {
            get(
                move |State(fleet): State<Fleet>, headers: HeaderMap, RawQuery(q): RawQuery| async move {
                    fleet.feed(r, &headers, q.as_deref().unwrap_or("")).await
                },
            )
        }
        let mut router = Router::new();
        for r in Resource::ALL {
            router = router.route(r.path(), feed(r));
        }
        router
            .route(
                LOGIN_PATH,
                get(
                    |State(fleet): State<Fleet>, RawQuery(q): RawQuery| async move {
                        fleet.login(q.as_deref().unwrap_or("")).await
                    },
                ),
            )
            .route(
                "/admin/fleet",
                get(|State(fleet): State<Fleet>| async move {
                    json_value(StatusCode::OK, &fleet.stats())
                }),
            )
            .nest(
                "/admin",
                admin_routes().route_layer(axum::middleware::from_fn_with_state(
                    self.clone(),
                    first_clinic,
                )),
            )
            .nest(
                "/clinics/{clinic}/admin",
                admin_routes().route_layer(axum::middleware::from_fn_with_state(
                    self.clone(),
                    nth_clinic,
                )),
            )
            .layer(axum::middleware::map_response_with_state(
                self.clone(),
                with_date,
            ))
            .with_state(self.clone())
    }

    /// Serves the API on `listener` until `cancel` fires, applying a round of churn to every
    /// organization every [`SandboxOptions::churn_every`] meanwhile.
    pub(super) async fn serve(
        self,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> std::io::Result<()> {
        let stop = cancel.child_token();
        for sb in &self.shared.clinics {
            *lock(&sb.shared.stop) = Some(stop.clone());
        }
        let churn = self.clinic(1).shared.config.churn_every.map(|every| {
            let fleet = self.clone();
            let stop = stop.clone();
            let every = every.max(Duration::from_millis(1));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => {
                            let changes: usize = fleet
                                .shared
                                .clinics
                                .iter()
                                .map(|sb| sb.churn_once().len())
                                .sum();
                            tracing::debug!(changes, "sandbox churn");
                        }
                    }
                }
            })
        });
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, clinics = self.shared.clinics.len(), "sandbox Clinicea API listening");
        }
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        stop.cancel();
        if let Some(task) = churn {
            let _ = task.await;
        }
        result
    }

    /// Runs an admin request as organization `i`'s: the handler finds it in the request's
    /// extensions, and the response is stamped with its clock.
    async fn admin(&self, i: usize, mut req: Request, next: Next) -> Response {
        req.extensions_mut().insert(self.clinic(i).clone());
        let mut resp = next.run(req).await;
        resp.extensions_mut().insert(ClinicNo(i));
        resp
    }
}

/// One organization's admin endpoints (each finds its [`Sandbox`] in the request's extensions).
fn admin_routes() -> Router<Fleet> {
    Router::new()
        .route("/faults", post(admin_faults).delete(admin_clear_faults))
        .route("/churn", post(admin_churn))
        .route("/stats", get(admin_stats))
        .route("/mode", get(admin_mode).post(admin_set_mode))
        .route("/{resource}", get(admin_list).post(admin_insert))
        .route(
            "/{resource}/{id}",
            get(admin_get).patch(admin_patch).delete(admin_delete),
        )
}

/// `/admin/...`: organization 1.
async fn first_clinic(State(fleet): State<Fleet>, req: Request, next: Next) -> Response {
    fleet.admin(1, req, next).await
}

/// The `{clinic}` of `/clinics/{clinic}/admin/...`.
#[derive(Debug, Deserialize)]
struct ClinicPath {
    clinic: String,
}

/// `/clinics/{clinic}/admin/...`: organization `clinic`, or 404 when there is none.
async fn nth_clinic(
    State(fleet): State<Fleet>,
    Path(ClinicPath { clinic }): Path<ClinicPath>,
    req: Request,
    next: Next,
) -> Response {
    let n = fleet.shared.clinics.len();
    match clinic.parse::<usize>() {
        Ok(i) if (1..=n).contains(&i) => fleet.admin(i, req, next).await,
        _ => text(
            StatusCode::NOT_FOUND,
            format!("no such clinic (the sandbox serves clinics 1 to {n})"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_count_per_second_and_forget_past_the_window() {
        let mut a = Arrivals::new();
        assert_eq!(a.window(2).per_second, vec![0, 0, 0]);
        a.note(0);
        a.note(0);
        a.note(2);
        // Late by a second (taken before another request's lock): still counted in its second.
        a.note(1);
        let w = a.window(3);
        assert_eq!((w.first_second, w.per_second), (0, vec![2, 1, 1, 0]));

        let far = ARRIVAL_WINDOW_SECS as u64 + 10;
        a.note(far);
        let w = a.window(far);
        assert_eq!(w.first_second, 11);
        assert_eq!(w.per_second.len(), ARRIVAL_WINDOW_SECS);
        assert_eq!(w.per_second.iter().sum::<u32>(), 1, "the old seconds left");
        assert_eq!(*w.per_second.last().unwrap(), 1);
        // An arrival older than the window is dropped, not folded into a recent second.
        a.note(3);
        assert_eq!(a.window(far).per_second.iter().sum::<u32>(), 1);
    }

    #[test]
    fn clinic_seeds_differ_and_the_first_is_the_seed() {
        assert_eq!(clinic_seed(42, 1), 42);
        let seeds: std::collections::HashSet<u64> =
            (1..=1000).map(|i| clinic_seed(42, i)).collect();
        assert_eq!(seeds.len(), 1000);
    }
}
