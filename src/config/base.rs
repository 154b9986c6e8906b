//! The validated base of a config: how to reach Clinicea, the resources to poll, the store, the
//! health server; the types [`crate::config::load()`] builds and ingest, the store and the daemon
//! read.

use crate::config::raw::AuthMode;
use std::fmt;
use std::time::Duration;

/// A secret string (API key, password): its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Default)]
pub(crate) struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub(crate) fn new(s: impl Into<String>) -> Self {
        SecretString(s.into())
    }
    /// The secret itself, for the one place that sends it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"[redacted]\"")
    }
}

/// Where the first poll starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartFrom {
    /// Nothing from before the first start is sent.
    Now,
    /// Backfill from this instant.
    At(chrono::DateTime<chrono::Utc>),
}

/// Staff credentials for `auth: login`.
#[derive(Debug, Clone)]
pub(crate) struct Login {
    /// Staff user name.
    pub(crate) username: String,
    /// Staff password.
    pub(crate) password: SecretString,
    /// Path of the token endpoint.
    pub(crate) path: String,
}

/// The vendor's login endpoint, seen in public clients.
pub(crate) const DEFAULT_LOGIN_PATH: &str = "/api/v2/login/getTokenByStaffUsernamePwd";

/// The validated `clinicea:` section.
#[derive(Debug, Clone)]
pub struct Clinicea {
    /// Base URL without a trailing slash.
    pub(crate) base_url: url::Url,
    /// The API key.
    pub(crate) api_key: SecretString,
    /// How the key is sent.
    pub(crate) auth: AuthMode,
    /// Credentials for `auth: login`.
    pub(crate) login: Option<Login>,
    /// How far back each poll re-reads.
    pub overlap: Duration,
    /// Where the first poll starts.
    pub(crate) start_from: StartFrom,
    /// Zone of offset-less API timestamps.
    pub(crate) timezone: chrono_tz::Tz,
    /// Zone the since value is written in when its format has no offset.
    pub(crate) since_timezone: chrono_tz::Tz,
    /// Per-request timeout.
    pub(crate) timeout: Duration,
    /// Pause between two page requests of one poll.
    pub(crate) page_delay: Duration,
    /// Whether the API may be on a private address.
    pub(crate) allow_private: bool,
    /// The since of the silent baseline at a resource's first start; `None` when it is off.
    pub(crate) baseline: Option<chrono::DateTime<chrono::Utc>>,
    /// How often each resource is polled, unless the resource sets its own.
    pub(crate) poll_interval: Duration,
    /// The shortest gap of adaptive polling, unless the resource sets its own (`None`: each
    /// resource's `poll_interval`, i.e. no adaptation).
    pub(crate) poll_interval_min: Option<Duration>,
    /// The secret `POST /trigger/{clinic}/{resource}` asks for; `None`: the trigger is off.
    pub(crate) trigger_token: Option<SecretString>,
    /// The most API requests of this clinic in flight at once.
    pub(crate) max_concurrent_requests: usize,
}

/// One clinic (one Clinicea organization, one API key): how to reach it and what to poll there.
#[derive(Debug, Clone)]
pub struct Clinic {
    /// Its name under `clinics:` (`default` without that section): the store's namespace, the
    /// `clinic` of its changes, a metric label.
    pub(crate) name: String,
    /// Its settings, each key its own or inherited from `clinicea:`.
    pub clinicea: Clinicea,
    /// The resources it polls (all, or its `resources:` subset), with its intervals.
    pub resources: Vec<Resource>,
}

/// The most API requests one clinic has in flight at once, by default: a page and the prefetch
/// of the next, or two resources at a time.
pub(crate) const DEFAULT_CLINIC_CONCURRENCY: usize = 2;
/// The most API requests in flight at once across every clinic, by default: enough to keep a
/// fleet's polls on time, few enough to stay gentle with the API.
pub(crate) const DEFAULT_FLEET_CONCURRENCY: usize = 8;
/// The largest concurrency limit accepted: more would be a flood, not a poll.
pub(crate) const MAX_CONCURRENT_REQUESTS: usize = 256;

/// A validated resource: every knob resolved to its value.
#[derive(Debug, Clone)]
pub struct Resource {
    /// The resource key, e.g. `leads`.
    pub(crate) name: String,
    /// Path below the base URL.
    pub(crate) path: String,
    /// Since parameter name.
    pub(crate) since_param: String,
    /// chrono format of the since value.
    pub(crate) since_format: String,
    /// Page parameter name.
    pub(crate) page_param: String,
    /// Number of the first page.
    pub(crate) first_page: u32,
    /// Records per full page.
    pub(crate) page_size: u32,
    /// Page size parameter name, if it is sent.
    pub(crate) page_size_param: Option<String>,
    /// The id field.
    pub(crate) id_field: String,
    /// The server's change-flag field.
    pub(crate) status_field: String,
    /// How often it is polled.
    pub(crate) poll_interval: Duration,
    /// Whether the resource sets its own interval (else it takes its clinic's).
    pub(crate) own_poll_interval: bool,
    /// The shortest gap of adaptive polling (at most `poll_interval`; equal: no adaptation).
    pub(crate) poll_interval_min: Duration,
    /// Whether the resource sets its own `poll_interval_min` (else it takes its clinic's).
    pub(crate) own_poll_interval_min: bool,
    /// Extra query parameters.
    pub(crate) params: Vec<(String, String)>,
}

/// Vendor-doc defaults for a resource.
pub(crate) mod defaults {
    use std::time::Duration;
    /// `lastSyncTimestamp`.
    pub(crate) const SINCE_PARAM: &str = "lastSyncTimestamp";
    /// ISO 8601 with an offset.
    pub(crate) const SINCE_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%:z";
    /// `intPageNo`.
    pub(crate) const PAGE_PARAM: &str = "intPageNo";
    /// Pages start at 0 in the vendor doc.
    pub(crate) const FIRST_PAGE: u32 = 0;
    /// 100 records a page.
    pub(crate) const PAGE_SIZE: u32 = 100;
    /// `ID`.
    pub(crate) const ID_FIELD: &str = "ID";
    /// `DataStatusStr`.
    pub(crate) const STATUS_FIELD: &str = "DataStatusStr";
    /// Poll every minute.
    pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(60);
    /// Re-read two minutes back, to cover clock skew and records committed late.
    pub(crate) const OVERLAP: Duration = Duration::from_secs(120);
    /// Give a slow API half a minute.
    pub(crate) const API_TIMEOUT: Duration = Duration::from_secs(30);
    /// `/metrics`, `/healthz`, `/readyz` on loopback.
    pub(crate) const LISTEN: &str = "127.0.0.1:9187";
    /// The sled directory.
    pub(crate) const STORE_PATH: &str = "./data";
    /// A PostgreSQL replica that stops renewing loses its clinics half a minute later.
    pub(crate) const LEASE: Duration = Duration::from_secs(30);
    /// sled's page cache: small, because the working set is one page of snapshots at a time.
    pub(crate) const STORE_CACHE_BYTES: u64 = 64 * 1024 * 1024;
    /// The baseline reads from here: before any clinic's records, and a date the API takes.
    pub(crate) const BASELINE_SINCE: &str = "2000-01-01T00:00:00Z";
    /// A week of detected changes stays inspectable.
    pub(crate) const JOURNAL_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
    /// A month to look into and re-drive a dead letter; then its patient data goes.
    pub(crate) const DEAD_LETTER_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
}

/// The longest poll interval: a feed polled less than once a day is not a notifier.
pub(crate) const MAX_POLL_INTERVAL: Duration = Duration::from_secs(86_400);

/// The longest request timeout or pause between requests: a request that waits longer is stuck.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Which store keeps the notifier's state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StoreBackend {
    /// sled, embedded in one process, at [`StoreSettings::path`].
    Sled,
    /// PostgreSQL, shared by replicas.
    Postgres {
        /// The database URL (it may hold a password).
        url: SecretString,
        /// How long a lease outlives its last renewal.
        lease: Duration,
    },
}

/// The validated `store:` section.
#[derive(Debug, Clone)]
pub(crate) struct StoreSettings {
    /// sled or PostgreSQL.
    pub(crate) backend: StoreBackend,
    /// The sled directory (absolute, or relative to the working directory if the config had none).
    pub(crate) path: std::path::PathBuf,
    /// sled's page cache in bytes.
    pub(crate) cache_bytes: u64,
    /// How long the change journal keeps entries.
    pub(crate) journal_retention: Duration,
    /// How long dead letters are kept.
    pub(crate) dead_letter_retention: Duration,
}

/// The validated base of a config file: what ingest, the store and the daemon read (the rest is
/// in [`crate::config::Config`]).
#[derive(Debug, Clone)]
pub struct Base {
    /// The config file.
    pub(crate) file: std::path::PathBuf,
    /// The clinics, in name order (one, `default`, without `clinics:`).
    pub clinics: Vec<Clinic>,
    /// The top-level resources, in key order, with the intervals of `clinicea:` (each clinic
    /// has its own copy in [`Clinic::resources`]).
    pub resources: Vec<Resource>,
    /// The most API requests in flight at once across every clinic.
    pub(crate) max_concurrent_requests: usize,
    /// The zone of `clinicea:` (UTC without one): what a rule for several clinics reads an
    /// offset-less time in.
    pub(crate) timezone: chrono_tz::Tz,
    /// The store.
    pub(crate) store: StoreSettings,
    /// The folder of template overrides.
    pub(crate) templates_dir: Option<std::path::PathBuf>,
    /// The address of the health and metrics server.
    pub(crate) listen: std::net::SocketAddr,
    /// A resource with no successful poll for this long is stale (`None`: three intervals).
    pub(crate) stale_after: Option<Duration>,
    /// The bearer token `/metrics` asks for, when set.
    pub(crate) metrics_token: Option<SecretString>,
    /// The token the console's actions and dead-letter contents ask for (`console.token`); the
    /// console is read-only without one.
    pub(crate) console_token: Option<SecretString>,
}

/// The shortest `trigger_token` accepted: it guards a URL anyone who reaches `listen` can call.
pub(crate) const MIN_TRIGGER_TOKEN_LEN: usize = 16;

/// The shortest `metrics_token` accepted: a guessable token protects nothing.
pub(crate) const MIN_METRICS_TOKEN_LEN: usize = 16;

impl Base {
    /// Every clinic's name, in name order.
    pub(crate) fn clinic_names(&self) -> Vec<String> {
        self.clinics.iter().map(|c| c.name.clone()).collect()
    }

    /// Whether the config names its clinics (`clinics:`), rather than being the one `default`.
    pub(crate) fn is_fleet(&self) -> bool {
        !(self.clinics.len() == 1 && self.clinics[0].name == crate::model::DEFAULT_CLINIC)
    }
}
