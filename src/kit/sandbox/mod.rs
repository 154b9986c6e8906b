//! A simulated Clinicea API, for integration tests, the `demo` command and users who want to
//! rehearse their rules (`clinicea-notifier sandbox`) without touching patient data.
//!
//! It serves the three incremental-sync feeds the notifier polls, in the two styles the live API
//! shows (see `clinicea-api.md`):
//!
//! | feed | path | since | page | flag |
//! |---|---|---|---|---|
//! | leads | `GET /api/v1/leads` | `lastSyncTimestamp` (or `lastSyncDate`) | `intPageNo`, from 0, 100 a page | `DataStatusStr` |
//! | patients | `GET /api/v1/patients` | `lastSyncTimestamp` (or `lastSyncDate`) | `intPageNo`, from 0, 100 a page | `DataStatusStr` |
//! | appointments | `GET /api/v3/appointments/getChanges` | `lastSyncDTime` | `pageNo` from 1, `pageSize` (default 100, at least 10) | `DataStatusValue` + `IsDeleted` |
//!
//! A record is listed when its change time is at or after the since value, ordered by change time
//! (or, per [`SandboxOptions::order`], by id or in an order shuffled anew for every request); a
//! page past the end is `204 No Content`; bad parameters get `400` with a plain-text
//! body; a wrong or missing key gets `401 Invalid API key`. The key (or a token from
//! `GET /api/v2/login/getTokenByStaffUsernamePwd`) is accepted in the `api` header, the `api_key`
//! header or the `api_key` query parameter.
//!
//! Records change through the admin endpoints under `/admin` (no auth), the in-process methods of
//! [`Sandbox`], or random churn ([`SandboxOptions::churn_every`], [`Sandbox::churn_once`]). Faults
//! (error statuses, stalls, malformed bodies) can be queued for the next requests.
//!
//! Like a real sync API, the sandbox can move records under a client that pages through them:
//! [`SandboxOptions::page_edits`] random edits, inserts and deletions land after every page request.
//! Its clock can run ahead of or behind the host's ([`SandboxOptions::clock_offset`]): change times,
//! `ModifiedDatetime` and the `Date` header every response carries all come from that clock. These
//! three can also be changed while it runs, in process or through `GET`/`POST /admin/mode`.
//!
//! One sandbox can serve several organizations ([`SandboxOptions::clinics`]), each with its own
//! key, records, counters, faults, mode, login token and churn; the key a request presents picks
//! its organization, and `/clinics/{i}/admin/...` is organization i's admin (see `fleet.rs`).
//!
//! Records are kept per resource in change order behind an index, so a page costs O(log n + page)
//! even with a million records. Record contents are never logged.

pub mod command;
mod fleet;
mod gen;
mod since;
mod table;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use fleet::{ArrivalWindow, FleetStats};
use fleet::{ClinicNo, Fleet};
use gen::{PatientRef, TS_FORMAT, UNSET_DATE};
use table::Table;

/// Records per page on the v1 feeds (leads, patients); fixed, as on the live API.
pub(crate) const V1_PAGE_SIZE: usize = 100;
/// The default `pageSize` of the v3 appointments feed.
pub(crate) const V3_DEFAULT_PAGE_SIZE: usize = 100;
/// The smallest `pageSize` the v3 appointments feed accepts.
pub(crate) const V3_MIN_PAGE_SIZE: usize = 10;
/// The body of every 401 response.
pub(crate) const INVALID_KEY: &str = "Invalid API key";
/// The path of the login endpoint.
pub(crate) const LOGIN_PATH: &str = "/api/v2/login/getTokenByStaffUsernamePwd";
/// The `Date` header's format (IMF-fixdate, RFC 9110), always in GMT.
pub(crate) const HTTP_DATE_FORMAT: &str = "%a, %d %b %Y %H:%M:%S GMT";
/// The largest clock offset `POST /admin/mode` accepts, in days.
const MAX_CLOCK_OFFSET_DAYS: i64 = 3650;

/// The host's clock in milliseconds since the Unix epoch (0 before it, which no host is).
fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How a sandbox is set up. Its `Debug` output hides the API key and the password.
#[derive(Clone)]
pub struct SandboxOptions {
    /// Seeds every random choice (generated records, ids, churn), so the same seed and the same
    /// sequence of calls give the same records (timestamps aside, unless [`Self::start`] is set
    /// and no change happens after start). With several [`Self::clinics`], organization i is
    /// seeded from this seed and i (organization 1 from this seed itself), so their records differ.
    pub seed: u64,
    /// The API key clients must present; with several [`Self::clinics`], organization i's key is
    /// this key followed by `-i` (`sandbox-api-key-2`), and this key alone is nobody's.
    pub api_key: String,
    /// How many organizations the sandbox serves (default 1; 0 counts as 1), each with its own
    /// records, counters, faults, mode, login token and churn, built from these options.
    pub clinics: usize,
    /// How many leads exist at start (default 137: a full sync is two pages).
    pub leads: usize,
    /// How many patients exist at start (default 12).
    pub patients: usize,
    /// How many appointments exist at start (default 42).
    pub appointments: usize,
    /// How often the serving sandbox applies a round of random changes (to every organization);
    /// `None` (the default) means records change only through admin calls.
    pub churn_every: Option<Duration>,
    /// The zone of the offset-less timestamps the sandbox serves and of since values sent without
    /// an offset (default UTC).
    pub timezone: Tz,
    /// The user name the login endpoint accepts (default `sandbox`); with several
    /// [`Self::clinics`], organization i's is this name followed by `-i` (`sandbox-2`).
    pub username: String,
    /// The password the login endpoint accepts (default `sandbox`).
    pub password: String,
    /// How long a login token stays valid (default 1 hour).
    pub token_ttl: Duration,
    /// The initial records are timestamped spread over this long before start (default 1 hour).
    pub history: Duration,
    /// The instant the sandbox treats as its start (initial timestamps end there; new appointments
    /// are booked around its date). `None` (the default) means the moment [`Sandbox::new`] runs,
    /// on the sandbox's clock.
    pub start: Option<DateTime<Utc>>,
    /// Serve every record since the since value in one page, whatever page is asked for (as an
    /// endpoint that ignores the page parameter does); default false.
    pub ignore_paging: bool,
    /// How the feeds order the records they list (default: by change time).
    pub order: Order,
    /// How many random changes (edits, inserts, flagged deletions, of the requested resource) land
    /// after each page request is answered, before the next one (default 0).
    pub page_edits: u32,
    /// How far the sandbox's clock is ahead of the host's (negative: behind); change times and the
    /// `Date` header come from it (default 0).
    pub clock_offset: TimeDelta,
}

/// How a feed orders the records it lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// By change time, then id: an edited record moves to the end (the live API's natural order).
    #[default]
    Modified,
    /// By id: edits do not move records, inserts land anywhere.
    Id,
    /// A shuffle drawn anew for every request (deterministic under the seed and the sequence of
    /// requests): no two pages come from the same order.
    Unordered,
}

impl std::str::FromStr for Order {
    type Err = String;

    fn from_str(s: &str) -> Result<Order, String> {
        match s {
            "modified" => Ok(Order::Modified),
            "id" => Ok(Order::Id),
            "unordered" => Ok(Order::Unordered),
            other => Err(format!(
                "unknown order '{other}' (expected modified, id or unordered)"
            )),
        }
    }
}

/// How the sandbox serves, changeable while it runs: the body of `GET`/`POST /admin/mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mode {
    /// See [`SandboxOptions::order`].
    pub(crate) order: Order,
    /// See [`SandboxOptions::page_edits`].
    pub(crate) page_edits: u32,
    /// See [`SandboxOptions::clock_offset`], in whole seconds.
    pub clock_offset_secs: i64,
}

/// A partial [`Mode`]: what `POST /admin/mode` changes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeSpec {
    order: Option<Order>,
    page_edits: Option<u32>,
    clock_offset_secs: Option<i64>,
}

impl std::fmt::Debug for SandboxOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxOptions")
            .field("seed", &self.seed)
            .field("api_key", &"<redacted>")
            .field("clinics", &self.clinics)
            .field("leads", &self.leads)
            .field("patients", &self.patients)
            .field("appointments", &self.appointments)
            .field("churn_every", &self.churn_every)
            .field("timezone", &self.timezone)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("token_ttl", &self.token_ttl)
            .field("history", &self.history)
            .field("start", &self.start)
            .field("ignore_paging", &self.ignore_paging)
            .field("order", &self.order)
            .field("page_edits", &self.page_edits)
            .field("clock_offset", &self.clock_offset)
            .finish()
    }
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            seed: 42,
            api_key: "sandbox-api-key".to_string(),
            clinics: 1,
            leads: 137,
            patients: 12,
            appointments: 42,
            churn_every: None,
            timezone: Tz::UTC,
            username: "sandbox".to_string(),
            password: "sandbox".to_string(),
            token_ttl: Duration::from_secs(3600),
            history: Duration::from_secs(3600),
            start: None,
            ignore_paging: false,
            order: Order::Modified,
            page_edits: 0,
            clock_offset: TimeDelta::zero(),
        }
    }
}

/// The resources the sandbox serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// `GET /api/v1/leads`.
    Leads,
    /// `GET /api/v1/patients`.
    Patients,
    /// `GET /api/v3/appointments/getChanges`.
    Appointments,
}

impl Resource {
    /// Every resource.
    pub(crate) const ALL: [Resource; 3] =
        [Resource::Leads, Resource::Patients, Resource::Appointments];

    /// The resource's name: `leads`, `patients` or `appointments`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Resource::Leads => "leads",
            Resource::Patients => "patients",
            Resource::Appointments => "appointments",
        }
    }

    /// The resource called `name`.
    pub(crate) fn from_name(name: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The path the sandbox serves the feed at.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Resource::Leads => "/api/v1/leads",
            Resource::Patients => "/api/v1/patients",
            Resource::Appointments => "/api/v3/appointments/getChanges",
        }
    }

    /// The field that carries the change flag (`Added`, `Modified`, `Deleted`).
    pub(crate) fn status_field(self) -> &'static str {
        match self {
            Resource::Appointments => "DataStatusValue",
            _ => "DataStatusStr",
        }
    }

    fn idx(self) -> usize {
        self as usize
    }
}

/// Why an in-process admin call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SandboxError {
    /// Not `leads`, `patients` or `appointments`.
    #[error("unknown resource '{0}' (expected leads, patients or appointments)")]
    UnknownResource(String),
    /// No such record, or it is already deleted.
    #[error("no such record")]
    NotFound,
    /// The body is not a usable record or field set.
    #[error("{0}")]
    BadRecord(String),
}

/// A fault served instead of (or before) the normal answer to the next `count` API requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// How many requests get it.
    pub(crate) count: u32,
    /// What they get.
    pub(crate) kind: FaultKind,
    /// Only requests for this resource (`leads`, `patients`, `appointments`, or `login` for the
    /// login endpoint); `None` means any API request.
    pub(crate) resource: Option<String>,
}

impl Fault {
    /// One request, any resource.
    pub fn new(kind: FaultKind) -> Fault {
        Fault {
            count: 1,
            kind,
            resource: None,
        }
    }

    /// The next `count` requests instead of one.
    pub fn times(mut self, count: u32) -> Fault {
        self.count = count;
        self
    }

    /// Only requests for `resource`.
    pub fn on(mut self, resource: &str) -> Fault {
        self.resource = Some(resource.to_string());
        self
    }

    fn applies_to(&self, resource: &str) -> bool {
        self.resource.as_deref().is_none_or(|r| r == resource)
    }
}

/// What a faulty request gets.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// This status with a plain-text body, and a `Retry-After` header (seconds) when set.
    Status {
        /// The HTTP status (an invalid one is served as 500).
        status: u16,
        /// The `Retry-After` header, in seconds.
        retry_after: Option<u64>,
        /// The plain-text body.
        body: String,
    },
    /// Wait this long, then answer normally (ends early with 503 when the sandbox stops).
    Stall(Duration),
    /// `200` with a truncated JSON body.
    MalformedJson,
    /// `200` with a JSON object (an ASP.NET-style error) where a list belongs.
    ObjectInsteadOfArray,
    /// The connection is closed without any response.
    ResetConnection,
}

/// A response body that fails at once: the server then closes the connection before anything
/// of the response (not even the status line) is sent.
struct FailingBody;

impl axum::body::HttpBody for FailingBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        std::task::Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "sandbox fault: connection reset",
        ))))
    }
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// API requests per resource (`leads`, `patients`, `appointments`, `login`), counting every
    /// request, also those answered with a fault or a 401.
    pub requests: BTreeMap<String, u64>,
    /// When the latest of those requests arrived, per resource, in milliseconds since the Unix
    /// epoch (the host's clock, as [`FleetStats::started_unix_ms`]): sampled, it tells when a
    /// client last polled an organization, where the counts alone tell only how often.
    pub last_request_unix_ms: BTreeMap<String, u64>,
    /// Requests answered with (or delayed by) a fault.
    pub faults_served: u64,
    /// Requests refused with 401.
    pub(crate) unauthorized: u64,
    /// Successful logins.
    pub logins: u64,
    /// Faults still queued (the sum of their remaining counts).
    pub(crate) pending_faults: u64,
    /// Records held per resource, deleted ones included.
    pub(crate) records: BTreeMap<String, usize>,
}

/// Settings that never change after [`Sandbox::new`].
struct Config {
    tz: Tz,
    api_key: String,
    username: String,
    password: String,
    token_ttl: Duration,
    churn_every: Option<Duration>,
    ignore_paging: bool,
}

/// Everything that changes, behind one lock.
struct Inner {
    tz: Tz,
    start: DateTime<Utc>,
    rng: StdRng,
    tables: [Table; 3],
    serial: [u64; 3],
    faults: VecDeque<Fault>,
    /// The current login token and when it expires (`None`: never).
    token: Option<(String, Option<Instant>)>,
    stats: Stats,
    seed: u64,
    order: Order,
    page_edits: u32,
    clock_offset: TimeDelta,
}

struct Shared {
    config: Config,
    state: Mutex<Inner>,
    /// Cancelled when the serving loop stops, to end stalls early.
    stop: Mutex<Option<CancellationToken>>,
}

/// A simulated Clinicea API. Cheap to clone: clones share the same records. Its `Debug` output
/// shows record counts only, never records, keys or tokens.
#[derive(Clone)]
pub struct Sandbox {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("records", &self.stats().records)
            .finish_non_exhaustive()
    }
}

/// A sandbox serving in the background, from [`Sandbox::start`]. Dropping it stops the server
/// too (without waiting); [`SandboxHandle::stop`] stops and waits.
#[derive(Debug)]
pub struct SandboxHandle {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// The sandbox itself (organization 1 when it serves several), for in-process admin calls.
    pub sandbox: Sandbox,
    fleet: Fleet,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl SandboxHandle {
    /// `http://ADDR`, the base URL to configure the notifier with.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Organization `i` (1 to [`SandboxOptions::clinics`]), for in-process admin calls; with one
    /// organization, `clinic(1)` is [`SandboxHandle::sandbox`].
    ///
    /// # Panics
    /// When there is no organization `i`.
    pub fn clinic(&self, i: usize) -> &Sandbox {
        self.fleet.clinic(i)
    }

    /// The API key of organization `i` (see [`SandboxOptions::api_key`]).
    ///
    /// # Panics
    /// When there is no organization `i`.
    pub fn api_key(&self, i: usize) -> &str {
        &self.fleet.clinic(i).shared.config.api_key
    }

    /// Every organization's counters and the arrival times of feed requests, as
    /// `GET /admin/fleet` serves them.
    pub fn fleet_stats(&self) -> FleetStats {
        self.fleet.stats()
    }

    /// Stops serving and waits until the server has shut down.
    pub(crate) async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "sandbox server ended with an error"),
                Err(e) => tracing::warn!(error = %e, "sandbox server task failed"),
            }
        }
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Locks `m`, also after a panic elsewhere left it poisoned (every critical section leaves the
/// state consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_deleted(resource: Resource, record: &Value) -> bool {
    record[resource.status_field()] == "Deleted" || record["IsDeleted"] == true
}

impl Inner {
    fn local(&self, at: DateTime<Utc>) -> String {
        at.with_timezone(&self.tz).format(TS_FORMAT).to_string()
    }

    fn table(&self, r: Resource) -> &Table {
        &self.tables[r.idx()]
    }

    /// The sandbox's clock: the host's plus the offset.
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }

    fn change_time(&self, r: Resource) -> DateTime<Utc> {
        self.table(r).next_time(self.now())
    }

    /// One page of `r` in the current order: the records changed at or after `since`, skipping
    /// `skip`, at most `limit`. `nonce` (the request's number) draws the unordered shuffle.
    fn page(
        &self,
        r: Resource,
        since: Option<DateTime<Utc>>,
        skip: usize,
        limit: usize,
        nonce: u64,
    ) -> Vec<&str> {
        use std::hash::{Hash, Hasher};
        let table = self.table(r);
        let mut window: Vec<&table::Slot> = match self.order {
            Order::Modified => return table.page(since, skip, limit),
            Order::Id | Order::Unordered => table.window(since).collect(),
        };
        if self.order == Order::Id {
            window.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        } else {
            window.sort_by_cached_key(|s| {
                let mut h = std::hash::DefaultHasher::new();
                (self.seed, nonce, &*s.id).hash(&mut h);
                h.finish()
            });
        }
        window
            .into_iter()
            .skip(skip)
            .take(limit)
            .filter_map(|s| s.json.as_deref())
            .collect()
    }

    /// The random changes that land after a page request of `r` ([`SandboxOptions::page_edits`]).
    fn edit_between_pages(&mut self, r: Resource) {
        for _ in 0..self.page_edits {
            match self.rng.gen_range(0..10) {
                0..=5 => {
                    if let Some((id, _)) = self.pick(r, |_| true) {
                        let n: u32 = self.rng.gen();
                        let fields =
                            serde_json::json!({"Notes": format!("edited between pages {n:08x}")});
                        let _ = self.modify(r, &id, fields);
                    }
                }
                6..=7 => {
                    self.add_generated(r, "Scheduled");
                }
                _ => {
                    if let Some((id, _)) = self.pick(r, |_| true) {
                        let _ = self.delete(r, &id);
                    }
                }
            }
        }
    }

    fn mode(&self) -> Mode {
        Mode {
            order: self.order,
            page_edits: self.page_edits,
            clock_offset_secs: self.clock_offset.num_seconds(),
        }
    }

    fn current(&self, r: Resource, id: &str) -> Option<Value> {
        self.table(r)
            .get(id)
            .and_then(|json| serde_json::from_str(json).ok())
    }

    fn store(&mut self, r: Resource, id: &str, at: DateTime<Utc>, record: &Value) {
        self.tables[r.idx()].put(id, at, record.to_string());
    }

    fn next_serial(&mut self, r: Resource) -> u64 {
        let s = self.serial[r.idx()];
        self.serial[r.idx()] += 1;
        s
    }

    /// Adds (or replaces) a record; see [`Sandbox::insert`].
    fn insert(&mut self, r: Resource, record: Value) -> Result<Value, SandboxError> {
        let Value::Object(fields) = record else {
            return Err(SandboxError::BadRecord(
                "the record must be a JSON object".into(),
            ));
        };
        let id = match fields.get("ID") {
            None | Some(Value::Null) => gen::guid(&mut self.rng),
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => {
                return Err(SandboxError::BadRecord(
                    "ID must be a non-empty string".into(),
                ))
            }
        };
        let at = self.change_time(r);
        let now = self.local(at);
        let previous = self.current(r, &id).filter(|p| !is_deleted(r, p));
        let status = if previous.is_some() {
            "Modified"
        } else {
            "Added"
        };
        let mut out = Map::new();
        out.insert("ID".into(), Value::String(id.clone()));
        for (k, v) in fields {
            if k != "ID" && k != r.status_field() && k != "IsDeleted" {
                out.insert(k, v);
            }
        }
        if r != Resource::Appointments {
            let created = previous
                .as_ref()
                .and_then(|p| p.get("CreatedDatetime").cloned())
                .unwrap_or_else(|| Value::String(now.clone()));
            out.entry("CreatedDatetime").or_insert(created);
            out.entry("ModifiedDatetime")
                .or_insert(Value::String(now.clone()));
        } else {
            out.insert("IsDeleted".into(), Value::Bool(false));
        }
        out.insert(r.status_field().into(), Value::String(status.into()));
        let record = Value::Object(out);
        self.store(r, &id, at, &record);
        Ok(record)
    }

    /// Merges fields into a live record; see [`Sandbox::modify`].
    fn modify(&mut self, r: Resource, id: &str, fields: Value) -> Result<Value, SandboxError> {
        let Value::Object(fields) = fields else {
            return Err(SandboxError::BadRecord(
                "the fields must be a JSON object".into(),
            ));
        };
        let Some(mut record) = self.current(r, id).filter(|p| !is_deleted(r, p)) else {
            return Err(SandboxError::NotFound);
        };
        let at = self.change_time(r);
        let now = self.local(at);
        let map = record.as_object_mut().ok_or(SandboxError::NotFound)?;
        let bump = (r != Resource::Appointments || map.contains_key("ModifiedDatetime"))
            && !fields.contains_key("ModifiedDatetime");
        for (k, v) in fields {
            if k != "ID" && k != r.status_field() && k != "IsDeleted" {
                map.insert(k, v);
            }
        }
        if bump {
            map.insert("ModifiedDatetime".into(), Value::String(now));
        }
        map.insert(r.status_field().into(), Value::String("Modified".into()));
        self.store(r, id, at, &record);
        Ok(record)
    }

    /// Flags a live record deleted; see [`Sandbox::delete`].
    fn delete(&mut self, r: Resource, id: &str) -> Result<Value, SandboxError> {
        let Some(mut record) = self.current(r, id).filter(|p| !is_deleted(r, p)) else {
            return Err(SandboxError::NotFound);
        };
        let at = self.change_time(r);
        let now = self.local(at);
        let map = record.as_object_mut().ok_or(SandboxError::NotFound)?;
        if r == Resource::Appointments {
            map.insert("IsDeleted".into(), Value::Bool(true));
        }
        if r != Resource::Appointments || map.contains_key("ModifiedDatetime") {
            map.insert("ModifiedDatetime".into(), Value::String(now));
        }
        map.insert(r.status_field().into(), Value::String("Deleted".into()));
        self.store(r, id, at, &record);
        Ok(record)
    }

    /// A random record of `r` that is not deleted and passes `keep` (a few tries).
    fn pick(&mut self, r: Resource, keep: impl Fn(&Value) -> bool) -> Option<(String, Value)> {
        for _ in 0..8 {
            let k: usize = self.rng.gen();
            let record: Value = self
                .table(r)
                .nth(k)
                .and_then(|s| s.json.as_deref())
                .and_then(|json| serde_json::from_str(json).ok())?;
            if !is_deleted(r, &record) && keep(&record) {
                let id = record["ID"].as_str()?.to_string();
                return Some((id, record));
            }
        }
        None
    }

    fn patient_ref(&mut self) -> PatientRef {
        match self.pick(Resource::Patients, |_| true) {
            Some((_, p)) => PatientRef::from_patient(&p),
            None => None,
        }
        .unwrap_or_else(|| PatientRef::made_up(&mut self.rng))
    }

    fn today(&self) -> chrono::NaiveDate {
        self.start.with_timezone(&self.tz).date_naive()
    }

    /// Generates the initial records, timestamped spread over `history` before `start`.
    fn populate(&mut self, counts: [usize; 3], history: Duration) {
        let history = TimeDelta::from_std(history)
            .ok()
            .and_then(|h| h.num_microseconds())
            .unwrap_or(3_600_000_000)
            .max(0);
        for r in [Resource::Patients, Resource::Leads, Resource::Appointments] {
            let n = counts[r.idx()];
            let mut offsets: Vec<i64> = (0..n)
                .map(|_| {
                    if history == 0 {
                        0
                    } else {
                        self.rng.gen_range(0..history)
                    }
                })
                .collect();
            offsets.sort_unstable();
            let base = self.start - TimeDelta::microseconds(history);
            for off in offsets {
                let at = self.table(r).next_time(base + TimeDelta::microseconds(off));
                let id = gen::guid(&mut self.rng);
                let roll: f64 = self.rng.gen();
                let record = self.generate(r, &id, at, roll);
                self.store(r, &id, at, &record);
            }
        }
    }

    /// One generated record of `r` changed at `at`; `roll` picks its change flag.
    fn generate(&mut self, r: Resource, id: &str, at: DateTime<Utc>, roll: f64) -> Value {
        let now = self.local(at);
        let serial = self.next_serial(r);
        let status = if r == Resource::Appointments && roll < 0.02 {
            "Deleted"
        } else if roll < 0.35 {
            "Modified"
        } else {
            "Added"
        };
        let created = if status == "Added" {
            now.clone()
        } else {
            let days_back = self.rng.gen_range(1..60);
            self.local(at - TimeDelta::days(days_back) - TimeDelta::minutes(days_back * 7))
        };
        match r {
            Resource::Leads => gen::lead(&mut self.rng, id, serial, &created, &now, status),
            Resource::Patients => {
                let modified = if self.rng.gen_bool(0.2) {
                    UNSET_DATE.to_string()
                } else {
                    now.clone()
                };
                gen::patient(&mut self.rng, id, serial, &created, &modified, status)
            }
            Resource::Appointments => {
                let patient = self.patient_ref();
                let today = self.today();
                let start = gen::appointment_start(&mut self.rng, today);
                let appt_status = gen::initial_status(&mut self.rng, start.date(), today);
                gen::appointment(&mut self.rng, id, &patient, start, appt_status, status)
            }
        }
    }

    /// A new record of `r` made now through [`Inner::insert`], so it is flagged `Added`.
    fn add_generated(&mut self, r: Resource, appointment_status: &str) -> Option<String> {
        let id = gen::guid(&mut self.rng);
        let at = self.change_time(r);
        let mut record = match r {
            Resource::Appointments => {
                let patient = self.patient_ref();
                let today = self.today();
                let start = gen::appointment_start(&mut self.rng, today);
                gen::appointment(
                    &mut self.rng,
                    &id,
                    &patient,
                    start,
                    appointment_status,
                    "Added",
                )
            }
            _ => self.generate(r, &id, at, 1.0),
        };
        if let Some(map) = record.as_object_mut() {
            map.remove("CreatedDatetime");
            map.remove("ModifiedDatetime");
        }
        self.insert(r, record).ok()?;
        Some(id)
    }

    /// One round of random changes; see [`Sandbox::churn_once`].
    fn churn(&mut self) -> Vec<(String, String, &'static str)> {
        let mut out = Vec::new();
        let mut note = |r: Resource, id: String, op: &'static str| {
            out.push((r.name().to_string(), id, op));
        };
        for _ in 0..self.rng.gen_range(1..=3) {
            if let Some(id) = self.add_generated(Resource::Leads, "") {
                note(Resource::Leads, id, "added");
            }
        }
        for _ in 0..self.rng.gen_range(1..=2) {
            if let Some((id, lead)) = self.pick(Resource::Leads, |_| true) {
                let fields = match self.rng.gen_range(0..3) {
                    0 => {
                        let current = lead["LeadStatus"].as_str().unwrap_or("");
                        serde_json::json!({"LeadStatus": gen::other_lead_status(&mut self.rng, current)})
                    }
                    1 => serde_json::json!({"Notes": gen::lead_note(&mut self.rng)}),
                    _ => serde_json::json!({"Mobile": gen::lead_mobile(&mut self.rng)}),
                };
                if self.modify(Resource::Leads, &id, fields).is_ok() {
                    note(Resource::Leads, id, "modified");
                }
            }
        }
        for _ in 0..self.rng.gen_range(0..=2) {
            if let Some((id, _)) = self.pick(Resource::Patients, |_| true) {
                let fields = match self.rng.gen_range(0..3) {
                    0 => serde_json::json!({"Mobile": gen::patient_mobile(&mut self.rng)}),
                    1 => serde_json::json!({"Address1": gen::address(&mut self.rng)}),
                    _ => {
                        let (city, postal) = gen::city(&mut self.rng);
                        serde_json::json!({"City": city, "PostalCode": postal})
                    }
                };
                if self.modify(Resource::Patients, &id, fields).is_ok() {
                    note(Resource::Patients, id, "modified");
                }
            }
        }
        for _ in 0..self.rng.gen_range(1..=3) {
            let open = |a: &Value| {
                let s = a["AppointmentStatus"].as_str().unwrap_or("");
                !matches!(s, "Completed" | "Cancelled" | "No Show")
            };
            match self.pick(Resource::Appointments, open) {
                Some((id, appt)) => {
                    let current = appt["AppointmentStatus"].as_str().unwrap_or("");
                    let Some(next) = gen::next_appointment_status(&mut self.rng, current) else {
                        continue;
                    };
                    let fields = serde_json::json!({
                        "AppointmentStatus": next,
                        "ModifiedStaffName": gen::desk_staff(&mut self.rng),
                    });
                    if self.modify(Resource::Appointments, &id, fields).is_ok() {
                        note(Resource::Appointments, id, "modified");
                    }
                }
                None => {
                    if let Some(id) = self.add_generated(Resource::Appointments, "Scheduled") {
                        note(Resource::Appointments, id, "added");
                    }
                }
            }
        }
        if self.rng.gen_bool(0.25) {
            if let Some(id) = self.add_generated(Resource::Appointments, "Scheduled") {
                note(Resource::Appointments, id, "added");
            }
        }
        if self.rng.gen_bool(0.1) {
            if let Some(id) = self.add_generated(Resource::Patients, "") {
                note(Resource::Patients, id, "added");
            }
        }
        if self.rng.gen_bool(0.1) {
            let r = if self.rng.gen_bool(0.5) {
                Resource::Leads
            } else {
                Resource::Appointments
            };
            if let Some((id, _)) = self.pick(r, |_| true) {
                if self.delete(r, &id).is_ok() {
                    note(r, id, "deleted");
                }
            }
        }
        out
    }

    /// Takes one use of the first queued fault that applies to `resource`.
    fn take_fault(&mut self, resource: &str) -> Option<FaultKind> {
        let pos = self.faults.iter().position(|f| f.applies_to(resource))?;
        let fault = &mut self.faults[pos];
        let kind = fault.kind.clone();
        fault.count = fault.count.saturating_sub(1);
        if fault.count == 0 {
            self.faults.remove(pos);
        }
        self.stats.faults_served += 1;
        Some(kind)
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

fn json_body(status: StatusCode, body: impl Into<Body>) -> Response {
    (
        status,
        [(CONTENT_TYPE, "application/json; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

fn json_value(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(s) => json_body(status, s),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The query string, decoded (`+` kept apart from spaces only where it matters: see callers).
fn parse_query(raw: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The first value of parameter `name` (names match case-insensitively, as on ASP.NET).
fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn parse_int(params: &[(String, String)], name: &str, default: i64) -> Result<i64, String> {
    match param(params, name) {
        None | Some("") => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("The value '{v}' is not valid for {name}.")),
    }
}

fn admin_error(e: SandboxError) -> Response {
    match e {
        SandboxError::UnknownResource(_) | SandboxError::NotFound => {
            text(StatusCode::NOT_FOUND, e.to_string())
        }
        SandboxError::BadRecord(_) => text(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

fn resource_of(name: &str) -> Result<Resource, SandboxError> {
    Resource::from_name(name).ok_or_else(|| SandboxError::UnknownResource(name.to_string()))
}

/// The body of `POST /admin/faults`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    count: Option<u32>,
    resource: Option<String>,
    status: Option<u16>,
    retry_after: Option<u64>,
    body: Option<String>,
    stall_ms: Option<u64>,
    #[serde(default)]
    malformed: bool,
    #[serde(default)]
    object: bool,
    #[serde(default)]
    reset: bool,
}

impl FaultSpec {
    fn into_fault(self) -> Result<Fault, String> {
        let kinds = [
            self.status.is_some(),
            self.stall_ms.is_some(),
            self.malformed,
            self.object,
            self.reset,
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(
                "give exactly one of status, stall_ms, malformed: true, object: true, reset: true"
                    .into(),
            );
        }
        if (self.retry_after.is_some() || self.body.is_some()) && self.status.is_none() {
            return Err("retry_after and body go with status".into());
        }
        let count = self.count.unwrap_or(1);
        if count == 0 {
            return Err("count must be at least 1".into());
        }
        if let Some(r) = &self.resource {
            if Resource::from_name(r).is_none() && r != "login" {
                return Err(format!(
                    "unknown resource '{r}' (expected leads, patients, appointments or login)"
                ));
            }
        }
        let kind = if let Some(status) = self.status {
            let code = StatusCode::from_u16(status)
                .map_err(|_| format!("{status} is not an HTTP status"))?;
            FaultKind::Status {
                status,
                retry_after: self.retry_after,
                body: self
                    .body
                    .unwrap_or_else(|| code.canonical_reason().unwrap_or("Error").to_string()),
            }
        } else if let Some(ms) = self.stall_ms {
            FaultKind::Stall(Duration::from_millis(ms))
        } else if self.malformed {
            FaultKind::MalformedJson
        } else if self.reset {
            FaultKind::ResetConnection
        } else {
            FaultKind::ObjectInsteadOfArray
        };
        Ok(Fault {
            count,
            kind,
            resource: self.resource,
        })
    }
}

impl Sandbox {
    /// A sandbox with its initial records generated (this takes a while for millions of
    /// records; [`Sandbox::start`] does it off the async runtime).
    pub(crate) fn new(opts: SandboxOptions) -> Sandbox {
        let start = opts.start.unwrap_or_else(|| Utc::now() + opts.clock_offset);
        let mut state = Inner {
            tz: opts.timezone,
            start,
            rng: StdRng::seed_from_u64(opts.seed),
            tables: [Table::new(), Table::new(), Table::new()],
            serial: [0; 3],
            faults: VecDeque::new(),
            token: None,
            stats: Stats::default(),
            seed: opts.seed,
            order: opts.order,
            page_edits: opts.page_edits,
            clock_offset: opts.clock_offset,
        };
        state.populate([opts.leads, opts.patients, opts.appointments], opts.history);
        Sandbox {
            shared: Arc::new(Shared {
                config: Config {
                    tz: opts.timezone,
                    api_key: opts.api_key,
                    username: opts.username,
                    password: opts.password,
                    token_ttl: opts.token_ttl,
                    churn_every: opts.churn_every,
                    ignore_paging: opts.ignore_paging,
                },
                state: Mutex::new(state),
                stop: Mutex::new(None),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, Inner> {
        lock(&self.shared.state)
    }

    /// Binds `addr` (port 0 picks a free port), generates the records of every organization and
    /// serves in the background.
    pub async fn start(opts: SandboxOptions, addr: SocketAddr) -> std::io::Result<SandboxHandle> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let fleet = tokio::task::spawn_blocking(move || Fleet::new(opts))
            .await
            .map_err(std::io::Error::other)?;
        let cancel = CancellationToken::new();
        let task = tokio::spawn(fleet.clone().serve(listener, cancel.clone()));
        Ok(SandboxHandle {
            addr,
            sandbox: fleet.clinic(1).clone(),
            fleet,
            cancel,
            task: Some(task),
        })
    }

    /// Adds a record, as `POST /admin/{resource}` does: `ID` is generated when absent, the change
    /// flag is `Added` (`Modified` when a live record with that id exists, which it replaces),
    /// `IsDeleted` is false on appointments, and leads and patients get `CreatedDatetime` and
    /// `ModifiedDatetime` (now) unless given. Returns the stored record.
    ///
    /// # Panics
    /// When `resource` is unknown or `record` is not a JSON object with a string `ID` (if any);
    /// [`Sandbox::try_insert`] returns those as errors.
    pub fn insert(&self, resource: &str, record: Value) -> Value {
        match self.try_insert(resource, record) {
            Ok(v) => v,
            Err(e) => panic!("Sandbox::insert: {e}"),
        }
    }

    /// [`Sandbox::insert`], returning errors instead of panicking.
    pub(crate) fn try_insert(&self, resource: &str, record: Value) -> Result<Value, SandboxError> {
        let r = resource_of(resource)?;
        self.state().insert(r, record)
    }

    /// Merges `fields` (a JSON object) into a record, as `PATCH /admin/{resource}/{id}` does: the
    /// flag becomes `Modified`, the change time and `ModifiedDatetime` move to now (unless
    /// `fields` sets `ModifiedDatetime`). `ID`, the flag and `IsDeleted` cannot be patched.
    /// `None` when the resource or record is unknown, the record is deleted, or `fields` is not
    /// an object.
    pub fn modify(&self, resource: &str, id: &str, fields: Value) -> Option<Value> {
        self.try_modify(resource, id, fields).ok()
    }

    /// [`Sandbox::modify`], saying why it failed.
    pub(crate) fn try_modify(
        &self,
        resource: &str,
        id: &str,
        fields: Value,
    ) -> Result<Value, SandboxError> {
        let r = resource_of(resource)?;
        self.state().modify(r, id, fields)
    }

    /// Flags a record deleted, as `DELETE /admin/{resource}/{id}` does: the flag becomes
    /// `Deleted` (and `IsDeleted` true on appointments), the change time moves to now, and the
    /// record stays listed. False when there is no such live record.
    pub fn delete(&self, resource: &str, id: &str) -> bool {
        match resource_of(resource) {
            Ok(r) => self.state().delete(r, id).is_ok(),
            Err(_) => false,
        }
    }

    /// Queues a fault for the next API requests (after the faults already queued).
    pub fn inject_faults(&self, fault: Fault) {
        if fault.count > 0 {
            self.state().faults.push_back(fault);
        }
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Applies one round of random changes and returns them as `(resource, id, op)` with op
    /// `added`, `modified` or `deleted`: 1-3 new leads, edits to a couple of leads and patients,
    /// appointments moved along Scheduled → Confirmed → Arrived → Engaged → Check Out →
    /// Completed (sometimes Cancelled or No Show), sometimes a new appointment or patient, and
    /// now and then a deletion. Deterministic under the seed for the same sequence of calls.
    pub fn churn_once(&self) -> Vec<(String, String, &'static str)> {
        self.state().churn()
    }

    /// How the sandbox serves now (order, edits between pages, clock offset).
    pub fn mode(&self) -> Mode {
        self.state().mode()
    }

    /// Changes how the feeds order their records, from the next request on.
    pub fn set_order(&self, order: Order) {
        self.state().order = order;
    }

    /// Changes how many random changes land after each page request.
    pub fn set_page_edits(&self, n: u32) {
        self.state().page_edits = n;
    }

    /// Moves the sandbox's clock to `offset` from the host's. Change times never go back (the
    /// feeds are kept in change order): after a move back, changes are stamped just after the
    /// latest change time until the clock catches up with it.
    pub fn set_clock_offset(&self, offset: TimeDelta) {
        self.state().clock_offset = offset;
    }

    /// The sandbox's clock: the time its `Date` header and new change times come from.
    pub(crate) fn clock(&self) -> DateTime<Utc> {
        self.state().now()
    }

    /// Request and fault counters.
    pub fn stats(&self) -> Stats {
        let state = self.state();
        let mut stats = state.stats.clone();
        stats.pending_faults = state.faults.iter().map(|f| u64::from(f.count)).sum();
        stats.records = Resource::ALL
            .iter()
            .map(|r| (r.name().to_string(), state.table(*r).len()))
            .collect();
        stats
    }

    /// Every record of `resource` as served now (deleted ones included, flagged), in change
    /// order; empty for an unknown resource.
    pub fn records(&self, resource: &str) -> Vec<Value> {
        let Some(r) = Resource::from_name(resource) else {
            return Vec::new();
        };
        let state = self.state();
        state
            .table(r)
            .iter()
            .filter_map(|s| s.json.as_deref())
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect()
    }

    /// One record of `resource` as served now.
    pub(crate) fn record(&self, resource: &str, id: &str) -> Option<Value> {
        let r = Resource::from_name(resource)?;
        self.state().current(r, id)
    }

    /// Serves a fault if one is due for `resource`; `None` means answer normally.
    async fn fault(&self, resource: &str) -> Option<Response> {
        let kind = {
            let mut state = self.state();
            *state
                .stats
                .requests
                .entry(resource.to_string())
                .or_default() += 1;
            state
                .stats
                .last_request_unix_ms
                .insert(resource.to_string(), unix_ms_now());
            state.take_fault(resource)?
        };
        match kind {
            FaultKind::Status {
                status,
                retry_after,
                body,
            } => {
                let code =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut resp = text(code, body);
                if let Some(secs) = retry_after {
                    resp.headers_mut().insert(RETRY_AFTER, secs.into());
                }
                Some(resp)
            }
            FaultKind::Stall(d) => {
                let stop = lock(&self.shared.stop).clone().unwrap_or_default();
                tokio::select! {
                    _ = tokio::time::sleep(d) => None,
                    _ = stop.cancelled() => Some(text(StatusCode::SERVICE_UNAVAILABLE, "The sandbox is shutting down")),
                }
            }
            FaultKind::MalformedJson => Some(json_body(
                StatusCode::OK,
                r#"[{"ID":"5c1f0b7e-2d4a-4e8b-9f3c-1a2b3c4d5e6f","FirstName":"Ay"#,
            )),
            FaultKind::ObjectInsteadOfArray => Some(json_body(
                StatusCode::OK,
                r#"{"Message":"An error has occurred."}"#,
            )),
            FaultKind::ResetConnection => Some(Response::new(Body::new(FailingBody))),
        }
    }

    /// Whether `presented` is the API key or the current, unexpired login token.
    fn key_ok(&self, presented: &str) -> bool {
        if presented.is_empty() {
            return false;
        }
        if presented == self.shared.config.api_key {
            return true;
        }
        let mut state = self.state();
        match &state.token {
            Some((token, expires)) if token == presented => {
                if expires.is_none_or(|at| Instant::now() < at) {
                    true
                } else {
                    state.token = None;
                    false
                }
            }
            _ => false,
        }
    }

    fn authorized(&self, headers: &HeaderMap, params: &[(String, String)]) -> bool {
        let from_headers = ["api", "api_key"]
            .iter()
            .filter_map(|h| headers.get(*h))
            .filter_map(|v| v.to_str().ok())
            .any(|v| self.key_ok(v.trim()));
        let ok = from_headers
            || params
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("api_key"))
                .any(|(_, v)| self.key_ok(v));
        if !ok {
            self.state().stats.unauthorized += 1;
        }
        ok
    }

    /// `GET` on one of the feeds.
    async fn feed(&self, r: Resource, headers: &HeaderMap, raw: &str) -> Response {
        if let Some(resp) = self.fault(r.name()).await {
            return resp;
        }
        let params = parse_query(raw);
        if !self.authorized(headers, &params) {
            return text(StatusCode::UNAUTHORIZED, INVALID_KEY);
        }
        let since_names: &[&str] = match r {
            Resource::Appointments => &["lastSyncDTime"],
            _ => &["lastSyncTimestamp", "lastSyncDate"],
        };
        if raw.to_ascii_lowercase().contains("%3a") {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "Invalid {}: colons must not be percent-encoded (%3A)",
                    since_names[0]
                ),
            );
        }
        let since = match since_names
            .iter()
            .find_map(|n| param(&params, n).map(|v| (*n, v)))
        {
            None | Some((_, "")) => None,
            // A literal `+` in a query decodes to a space; the offset sign is what was meant.
            Some((name, v)) => {
                match since::parse_since(&v.replace(' ', "+"), self.shared.config.tz) {
                    Ok(t) => Some(t),
                    Err(e) => return text(StatusCode::BAD_REQUEST, format!("Invalid {name}: {e}")),
                }
            }
        };
        let (page_index, size) = match r {
            Resource::Appointments => {
                let page = match parse_int(&params, "pageNo", 1) {
                    Ok(p) => p,
                    Err(e) => return text(StatusCode::BAD_REQUEST, e),
                };
                if page < 1 {
                    return text(StatusCode::BAD_REQUEST, "pageNo must be 1 or more");
                }
                let size = match parse_int(&params, "pageSize", V3_DEFAULT_PAGE_SIZE as i64) {
                    Ok(s) => s,
                    Err(e) => return text(StatusCode::BAD_REQUEST, e),
                };
                if size < V3_MIN_PAGE_SIZE as i64 {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("pageSize must be {V3_MIN_PAGE_SIZE} or more"),
                    );
                }
                (page - 1, size)
            }
            _ => {
                let page = match parse_int(&params, "intPageNo", 0) {
                    Ok(p) => p,
                    Err(e) => return text(StatusCode::BAD_REQUEST, e),
                };
                if page < 0 {
                    return text(StatusCode::BAD_REQUEST, "intPageNo must be 0 or more");
                }
                (page, V1_PAGE_SIZE as i64)
            }
        };
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let Some((skip, size)) = (match self.shared.config.ignore_paging {
            true => Some((0, usize::MAX)),
            false => usize::try_from(page_index)
                .ok()
                .and_then(|p| p.checked_mul(size))
                .map(|skip| (skip, size)),
        }) else {
            return StatusCode::NO_CONTENT.into_response();
        };
        let body = {
            let mut state = self.state();
            let nonce = state.stats.requests.get(r.name()).copied().unwrap_or(0);
            let records = state.page(r, since, skip, size, nonce);
            let body = if records.is_empty() {
                None
            } else {
                let len = records.iter().map(|j| j.len() + 1).sum::<usize>() + 2;
                let mut body = String::with_capacity(len);
                body.push('[');
                for (i, json) in records.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    body.push_str(json);
                }
                body.push(']');
                Some(body)
            };
            // The records move only once this page is taken, as on an API edited between requests.
            state.edit_between_pages(r);
            body
        };
        match body {
            Some(body) => json_body(StatusCode::OK, body),
            None => StatusCode::NO_CONTENT.into_response(),
        }
    }
}

impl Sandbox {
    /// `GET /api/v2/login/getTokenByStaffUsernamePwd?apiKey=..&loginUserName=..&pwd=..`; on
    /// success also returns the new token (it replaces the previous one).
    async fn login(&self, raw: &str) -> (Response, Option<String>) {
        if let Some(resp) = self.fault("login").await {
            return (resp, None);
        }
        let params = parse_query(raw);
        let config = &self.shared.config;
        if param(&params, "apiKey") != Some(config.api_key.as_str()) {
            self.state().stats.unauthorized += 1;
            return (text(StatusCode::UNAUTHORIZED, INVALID_KEY), None);
        }
        if param(&params, "loginUserName") != Some(config.username.as_str())
            || param(&params, "pwd") != Some(config.password.as_str())
        {
            self.state().stats.unauthorized += 1;
            return (
                text(StatusCode::UNAUTHORIZED, "Invalid username or password"),
                None,
            );
        }
        // Tokens come from the thread RNG, so logins do not shift the seeded sequence.
        let token = format!(
            "{:032x}{:032x}",
            rand::thread_rng().gen::<u128>(),
            rand::thread_rng().gen::<u128>()
        );
        let expires = Instant::now().checked_add(config.token_ttl);
        {
            let mut state = self.state();
            state.token = Some((token.clone(), expires));
            state.stats.logins += 1;
        }
        (json_value(StatusCode::OK, &token), Some(token))
    }
}

/// The `{resource}` of an admin path.
#[derive(Debug, Deserialize)]
struct ResourcePath {
    resource: String,
}

/// The `{resource}/{id}` of an admin path.
#[derive(Debug, Deserialize)]
struct RecordPath {
    resource: String,
    id: String,
}

async fn admin_faults(Extension(sb): Extension<Sandbox>, body: Bytes) -> Response {
    let spec: FaultSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("Invalid fault: {e}")),
    };
    match spec.into_fault() {
        Ok(fault) => {
            sb.inject_faults(fault);
            json_value(
                StatusCode::OK,
                &serde_json::json!({"pending_faults": sb.stats().pending_faults}),
            )
        }
        Err(e) => text(StatusCode::BAD_REQUEST, format!("Invalid fault: {e}")),
    }
}

async fn admin_clear_faults(Extension(sb): Extension<Sandbox>) -> Response {
    sb.clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_churn(Extension(sb): Extension<Sandbox>) -> Response {
    let changes: Vec<Value> = sb
        .churn_once()
        .into_iter()
        .map(|(resource, id, op)| serde_json::json!({"resource": resource, "id": id, "op": op}))
        .collect();
    json_value(StatusCode::OK, &changes)
}

async fn admin_stats(Extension(sb): Extension<Sandbox>) -> Response {
    json_value(StatusCode::OK, &sb.stats())
}

async fn admin_list(
    Extension(sb): Extension<Sandbox>,
    Path(ResourcePath { resource }): Path<ResourcePath>,
) -> Response {
    match resource_of(&resource) {
        Ok(_) => json_value(StatusCode::OK, &sb.records(&resource)),
        Err(e) => admin_error(e),
    }
}

async fn admin_get(
    Extension(sb): Extension<Sandbox>,
    Path(RecordPath { resource, id }): Path<RecordPath>,
) -> Response {
    if let Err(e) = resource_of(&resource) {
        return admin_error(e);
    }
    match sb.record(&resource, &id) {
        Some(record) => json_value(StatusCode::OK, &record),
        None => admin_error(SandboxError::NotFound),
    }
}

async fn admin_insert(
    Extension(sb): Extension<Sandbox>,
    Path(ResourcePath { resource }): Path<ResourcePath>,
    body: Bytes,
) -> Response {
    let record: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("Invalid JSON: {e}")),
    };
    match sb.try_insert(&resource, record) {
        Ok(record) => json_value(StatusCode::CREATED, &record),
        Err(e) => admin_error(e),
    }
}

async fn admin_patch(
    Extension(sb): Extension<Sandbox>,
    Path(RecordPath { resource, id }): Path<RecordPath>,
    body: Bytes,
) -> Response {
    let fields: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("Invalid JSON: {e}")),
    };
    match sb.try_modify(&resource, &id, fields) {
        Ok(record) => json_value(StatusCode::OK, &record),
        Err(e) => admin_error(e),
    }
}

async fn admin_delete(
    Extension(sb): Extension<Sandbox>,
    Path(RecordPath { resource, id }): Path<RecordPath>,
) -> Response {
    let r = match resource_of(&resource) {
        Ok(r) => r,
        Err(e) => return admin_error(e),
    };
    let result = sb.state().delete(r, &id);
    match result {
        Ok(record) => json_value(StatusCode::OK, &record),
        Err(e) => admin_error(e),
    }
}

async fn admin_mode(Extension(sb): Extension<Sandbox>) -> Response {
    json_value(StatusCode::OK, &sb.mode())
}

async fn admin_set_mode(Extension(sb): Extension<Sandbox>, body: Bytes) -> Response {
    let spec: ModeSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("Invalid mode: {e}")),
    };
    if let Some(order) = spec.order {
        sb.set_order(order);
    }
    if let Some(n) = spec.page_edits {
        sb.set_page_edits(n);
    }
    if let Some(secs) = spec.clock_offset_secs {
        match TimeDelta::try_seconds(secs).filter(|d| d.num_days().abs() <= MAX_CLOCK_OFFSET_DAYS) {
            Some(d) => sb.set_clock_offset(d),
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                    "Invalid mode: clock_offset_secs must be within {MAX_CLOCK_OFFSET_DAYS} days"
                ),
                )
            }
        }
    }
    json_value(StatusCode::OK, &sb.mode())
}

/// Stamps every response with the clock of the organization that answered it (organization 1's
/// when none did: the fleet's own answers), as hyper would stamp the host's.
async fn with_date(State(fleet): State<Fleet>, mut resp: Response) -> Response {
    let sb = match resp.extensions().get::<ClinicNo>() {
        Some(ClinicNo(i)) => fleet.clinic(*i),
        None => fleet.clinic(1),
    };
    let date = sb.clock().format(HTTP_DATE_FORMAT).to_string();
    if let Ok(v) = axum::http::HeaderValue::from_str(&date) {
        resp.headers_mut().insert(axum::http::header::DATE, v);
    }
    resp
}

#[cfg(test)]
mod tests;
