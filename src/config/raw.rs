//! The configuration file as written: the serde types that mirror the YAML (`Raw*`, with
//! `deny_unknown_fields`, and the rules' [`RuleSpec`]), the scalars they are made of ([`Text`],
//! [`Dur`]), and [`parse`], which turns YAML text into them.
//!
//! Nothing here substitutes `${VAR}` or judges a value: [`crate::config::vars`] substitutes in one
//! pass over what was parsed, and [`crate::config::load()`] validates. Each [`Text`] and [`Dur`]
//! remembers the line it was written on, so both can name it.

use crate::config::problem::Problem;
use crate::model::ChangeKind;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Scalars: strings and durations
// ---------------------------------------------------------------------------------------------

/// A string from the config, with the line it was written on. Until
/// [`crate::config::vars::substitute`] has run it holds the text as written (`${VAR}` included);
/// after, the substituted value.
#[derive(Clone, Default)]
pub struct Text {
    value: String,
    /// 0 when unknown (serde loses the place of values inside `type:`-tagged and untagged
    /// enums, such as a destination's keys).
    line: u64,
}

impl Text {
    /// The string.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The line it was written on, when known.
    pub(crate) fn line(&self) -> Option<u64> {
        (self.line > 0).then_some(self.line)
    }

    /// Replaces the string (the `${VAR}` pass).
    pub(crate) fn set(&mut self, value: String) {
        self.value = value;
    }
}

impl PartialEq for Text {
    /// Two texts are equal when their strings are: where they were written does not matter.
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for Text {}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.value, f)
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.value
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<String>::deserialize(d)?;
        Ok(Text {
            value: s.value,
            line: s.defined.line(),
        })
    }
}

/// The longest duration anything accepts, in a config file or on the command line: ten years.
/// Longer is a typo, and would overflow the time arithmetic it feeds (a cutoff `now - age`, a
/// deadline `now + wait`). Keys where less makes sense have their own, smaller bound.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// Parses `30s`, `5m`, `2h`, `1d`, `250ms`, or a combination such as `1h30m`; at most
/// [`MAX_DURATION`].
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let too_long = || format!("{s:?} is too long (at most 3650d, ten years)");
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| format!("{s:?} has no unit (write 30s, 5m, 2h)"))?;
        if digits == 0 {
            return Err(format!("{s:?} is not a duration (write 30s, 5m, 2h)"));
        }
        let n: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?} is not a duration"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86400.0,
            u => return Err(format!("{s:?}: unknown unit {u:?} (use ms, s, m, h or d)")),
        };
        // `try_from`: a number too large for a Duration (or infinite) is an error, not a panic.
        let part = Duration::try_from_secs_f64(secs).map_err(|_| too_long())?;
        total = total
            .checked_add(part)
            .filter(|t| *t <= MAX_DURATION)
            .ok_or_else(too_long)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A duration as written: `30s`, `5m`, `2h`, `1h30m` (or `${VAR}` holding one). It is read with
/// [`parse_duration`] once `${VAR}` is substituted, by [`crate::config::load()`], which reports a
/// bad one with its line and key.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub(crate) struct Dur(Text);

impl Dur {
    /// The text as written (substituted, after the `${VAR}` pass).
    pub(crate) fn text(&self) -> &Text {
        &self.0
    }

    /// The same, to substitute in.
    pub(crate) fn text_mut(&mut self) -> &mut Text {
        &mut self.0
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// One string or a list of them (`secret: whsec_..` or `secret: [whsec_a, whsec_b]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    /// A single value.
    One(Text),
    /// A list of values.
    Many(Vec<Text>),
}

impl OneOrMany {
    /// The values, in order.
    pub(crate) fn as_slice(&self) -> &[Text] {
        match self {
            OneOrMany::One(t) => std::slice::from_ref(t),
            OneOrMany::Many(v) => v,
        }
    }

    /// The same, to substitute in.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [Text] {
        match self {
            OneOrMany::One(t) => std::slice::from_mut(t),
            OneOrMany::Many(v) => v,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The raw file
// ---------------------------------------------------------------------------------------------

/// The whole configuration file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// How to reach Clinicea and how often to poll it; with `clinics:`, the defaults of every
    /// clinic (then it may be left out).
    #[serde(default)]
    pub(crate) clinicea: Option<Spanned<RawClinicea>>,
    /// Many clinics in one process, by name: each any key of `clinicea:` (which holds their
    /// defaults) and `resources:`, a subset of the top-level resources. Without it, `clinicea:` is
    /// one clinic named `default`.
    #[serde(default)]
    pub(crate) clinics: Option<Spanned<BTreeMap<String, Spanned<RawClinicea>>>>,
    /// Limits across every clinic.
    #[serde(default)]
    pub(crate) fleet: Option<RawFleet>,
    /// The feeds to poll, by resource key.
    #[serde(default)]
    pub(crate) resources: BTreeMap<String, Spanned<RawResource>>,
    /// Where the sled store lives.
    #[serde(default)]
    pub(crate) store: RawStore,
    /// The folder of template overrides (`NAME.txt.hbs`, `NAME.html.hbs`).
    #[serde(default)]
    pub(crate) templates: Option<Text>,
    /// Address for `/metrics`, `/healthz`, `/readyz` while `run` runs.
    #[serde(default)]
    pub(crate) listen: Option<Text>,
    /// A bearer token `/metrics` asks for (`Authorization: Bearer TOKEN`); `/healthz` and
    /// `/readyz` stay open. Unset: `/metrics` is open to whoever reaches `listen`.
    #[serde(default)]
    pub(crate) metrics_token: Option<Text>,
    /// The web console on `listen`.
    #[serde(default)]
    pub(crate) console: Option<Spanned<RawConsole>>,
    /// The SMTP server for email destinations.
    #[serde(default)]
    pub(crate) smtp: Option<Spanned<RawSmtp>>,
    /// Where deliveries go, by destination name.
    #[serde(default)]
    pub(crate) destinations: BTreeMap<String, Spanned<RawDestination>>,
    /// Which changes go where.
    #[serde(default)]
    pub(crate) rules: Vec<Spanned<RuleSpec>>,
    /// The default retry schedule.
    #[serde(default)]
    pub(crate) retry: Option<Spanned<RawRetry>>,
    /// The watchdog that makes a silent death impossible.
    #[serde(default)]
    pub(crate) watchdog: Option<RawWatchdog>,
    /// What the operator is told about the notifier itself, and where.
    #[serde(default)]
    pub(crate) alerts: Option<Spanned<super::alerts::RawAlerts>>,
}

/// `console:`: the web console `run` serves on `listen`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConsole {
    /// The token that allows actions (retry, purge) and a dead letter's contents; without one
    /// the console is read-only.
    #[serde(default)]
    pub(crate) token: Option<Text>,
}

/// How the API key is presented to Clinicea.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AuthMode {
    /// The vendor doc's header `api: KEY`.
    #[default]
    Header,
    /// A header `api_key: KEY`, seen in public clients.
    ApiKeyHeader,
    /// A query parameter `api_key=KEY`.
    Query,
    /// A session token from the staff login endpoint, refreshed before it expires.
    Login,
}

/// Staff credentials for `auth: login`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLogin {
    /// Staff user name.
    pub(crate) username: Text,
    /// Staff password.
    pub(crate) password: Text,
    /// Path of the token endpoint (default `/api/v2/login/getTokenByStaffUsernamePwd`).
    #[serde(default)]
    pub(crate) path: Option<Text>,
}

/// The `clinicea:` section, and one clinic under `clinics:` (every key optional there: what a
/// clinic leaves out it takes from `clinicea:`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClinicea {
    /// Base URL, e.g. `https://api.clinicea.com`.
    #[serde(default)]
    pub(crate) base_url: Option<Text>,
    /// The API key (it belongs to one Clinicea organization: one clinic).
    #[serde(default)]
    pub(crate) api_key: Option<Text>,
    /// How the key is sent (default `header`).
    #[serde(default)]
    pub(crate) auth: Option<AuthMode>,
    /// Credentials for `auth: login`.
    #[serde(default)]
    pub(crate) login: Option<RawLogin>,
    /// How often each resource is polled (default 60s): the longest gap between two polls.
    #[serde(default)]
    pub(crate) poll_interval: Option<Dur>,
    /// Adaptive polling: the shortest gap, taken right after a poll that found changes and
    /// doubled after each quiet poll back up to `poll_interval` (default: `poll_interval`, so
    /// no adaptation). Must be at most `poll_interval`.
    #[serde(default)]
    pub(crate) poll_interval_min: Option<Dur>,
    /// The secret of this clinic's poll trigger, `POST /trigger/{clinic}/{resource}` on
    /// `listen` (at least 16 URL-safe characters, since it may travel in the URL). Unset: the
    /// trigger is off for the clinic and answers 401.
    #[serde(default)]
    pub(crate) trigger_token: Option<Text>,
    /// How far back each poll re-reads (default 2m).
    #[serde(default)]
    pub(crate) overlap: Option<Dur>,
    /// `now` or an RFC 3339 time.
    #[serde(default)]
    pub(crate) start_from: Option<Text>,
    /// IANA zone for offset-less API timestamps (default UTC).
    #[serde(default)]
    pub(crate) timezone: Option<Text>,
    /// The zone the since value is written in when its format has no offset (default UTC).
    #[serde(default)]
    pub(crate) since_timezone: Option<Text>,
    /// Per-request timeout (default 30s).
    #[serde(default)]
    pub(crate) timeout: Option<Dur>,
    /// Pause between two page requests of one poll, to be gentle with the API (default 0).
    #[serde(default)]
    pub(crate) page_delay: Option<Dur>,
    /// Allow a plain http:// base URL to a host other than loopback (a sandbox in another container).
    #[serde(default)]
    pub(crate) allow_insecure_http: Option<bool>,
    /// Allow a base URL on a private address (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7),
    /// e.g. a sandbox in another container. Link-local and metadata addresses are never allowed.
    #[serde(default)]
    pub(crate) allow_private: Option<bool>,
    /// The silent baseline at a resource's first start (default: on, from 2000-01-01).
    #[serde(default)]
    pub(crate) baseline: Option<RawBaseline>,
    /// The most API requests of this clinic in flight at once (default 2).
    #[serde(default)]
    pub(crate) max_concurrent_requests: Option<usize>,
    /// The resources this clinic polls, a subset of the top-level `resources:` (default all).
    #[serde(default)]
    pub(crate) resources: Option<Spanned<Vec<Text>>>,
}

/// The `fleet:` section: limits across every clinic.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFleet {
    /// The most API requests in flight at once, all clinics together (default 8).
    #[serde(default)]
    pub(crate) max_concurrent_requests: Option<usize>,
}

/// The `clinicea.baseline:` section: at a resource's first start, read every existing record
/// once and store it without sending anything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBaseline {
    /// `false` turns the baseline off: records that existed before the first start are unknown,
    /// and the first edit of each is judged `added` (default `true`).
    #[serde(default)]
    pub(crate) enabled: Option<bool>,
    /// The oldest since the API accepts, RFC 3339 (default `2000-01-01T00:00:00Z`).
    #[serde(default)]
    pub(crate) since: Option<Text>,
}

/// One `resources:` entry. Every key has the vendor doc's default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResource {
    /// Path below the base URL.
    pub(crate) path: Text,
    /// Name of the since parameter (default `lastSyncTimestamp`).
    #[serde(default)]
    pub(crate) since_param: Option<Text>,
    /// chrono format of the since value (default `%Y-%m-%dT%H:%M:%S%:z`).
    #[serde(default)]
    pub(crate) since_format: Option<Text>,
    /// Name of the page parameter (default `intPageNo`).
    #[serde(default)]
    pub(crate) page_param: Option<Text>,
    /// Number of the first page (default 0).
    #[serde(default)]
    pub(crate) first_page: Option<u32>,
    /// Records per full page (default 100); a shorter page ends the sync.
    #[serde(default)]
    pub(crate) page_size: Option<u32>,
    /// Name of the page size parameter (default: not sent).
    #[serde(default)]
    pub(crate) page_size_param: Option<Text>,
    /// The id field (default `ID`).
    #[serde(default)]
    pub(crate) id_field: Option<Text>,
    /// The server's change flag field (default `DataStatusStr`).
    #[serde(default)]
    pub(crate) status_field: Option<Text>,
    /// This resource's own poll interval.
    #[serde(default)]
    pub(crate) poll_interval: Option<Dur>,
    /// This resource's own shortest gap of adaptive polling (see `clinicea.poll_interval_min`).
    #[serde(default)]
    pub(crate) poll_interval_min: Option<Dur>,
    /// Extra query parameters sent on every request.
    #[serde(default)]
    pub(crate) params: BTreeMap<String, Text>,
}

/// The `store:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    /// `sled` (the default: embedded, one process) or `postgres` (replicas on one database).
    #[serde(default)]
    pub(crate) backend: Option<Text>,
    /// The PostgreSQL URL (`postgres://user@host/db`, TLS as its `sslmode` says); postgres only.
    #[serde(default)]
    pub(crate) url: Option<Text>,
    /// How long a replica's hold on its clinics outlives its last renewal (default 30s); postgres
    /// only.
    #[serde(default)]
    pub(crate) lease: Option<Dur>,
    /// The sled directory (default `./data`); sled only.
    #[serde(default)]
    pub(crate) path: Option<Text>,
    /// sled's page cache in MiB (default 64).
    #[serde(default)]
    pub(crate) cache_mb: Option<u64>,
    /// How long the change journal keeps detected changes for inspection (default 7d).
    #[serde(default)]
    pub(crate) journal_retention: Option<Dur>,
    /// How long dead letters (full payloads, patient data) are kept before they are deleted
    /// (default 30d).
    #[serde(default)]
    pub(crate) dead_letter_retention: Option<Dur>,
}

/// TLS mode for SMTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only for a relay on loopback or a test catcher (elsewhere only with
    /// `allow_cleartext`), and never with AUTH.
    None,
}

/// The `smtp:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSmtp {
    /// Host name.
    pub(crate) host: Text,
    /// Port (default 587 for starttls, 465 for tls, 25 for none).
    #[serde(default)]
    pub(crate) port: Option<u16>,
    /// TLS mode.
    #[serde(default)]
    pub(crate) tls: SmtpTls,
    /// User name for AUTH.
    #[serde(default)]
    pub(crate) username: Option<Text>,
    /// Password for AUTH.
    #[serde(default)]
    pub(crate) password: Option<Text>,
    /// The From address, `Name <addr>` or `addr`.
    pub(crate) from: Text,
    /// Per-message timeout (default 30s).
    #[serde(default)]
    pub(crate) timeout: Option<Dur>,
    /// A PEM file of extra CA certificates to trust (for a relay with its own CA).
    #[serde(default)]
    pub(crate) ca_file: Option<Text>,
    /// Allow an SMTP host on a private address (a relay on the clinic's own network).
    #[serde(default)]
    pub(crate) allow_private: bool,
    /// Allow `tls: none` to a host other than loopback. Dangerous: every message, with the patient
    /// data in it, crosses the network in clear. Never allows AUTH without TLS.
    #[serde(default)]
    pub(crate) allow_cleartext: bool,
}

/// The `retry:` section, and a destination's own `retry:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetry {
    /// Waits between attempts; its length is the number of retries.
    pub(crate) schedule: Vec<Dur>,
    /// Relative jitter, 0.0 to 1.0 (default 0.2).
    #[serde(default)]
    pub(crate) jitter: Option<f64>,
}

/// The `watchdog:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWatchdog {
    /// A resource with no successful poll for this long is stale (default: three poll intervals).
    #[serde(default)]
    pub(crate) stale_after: Option<Dur>,
}

/// One `destinations:` entry, by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum RawDestination {
    /// A signed Standard Webhooks POST.
    Webhook(RawWebhook),
    /// An email to each recipient.
    Email(RawEmail),
    /// A Slack incoming webhook.
    Slack(RawChat),
    /// A Microsoft Teams Workflows webhook.
    Teams(RawChat),
    /// A Discord webhook.
    Discord(RawChat),
    /// A Google Chat space webhook.
    GoogleChat(RawChat),
    /// A NATS JetStream subject.
    Nats(RawNats),
    /// A RabbitMQ (AMQP 0-9-1) exchange.
    Amqp(RawAmqp),
}

/// A webhook destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    /// The receiver's URL.
    pub(crate) url: Text,
    /// `whsec_...`; a list signs with each (rotation).
    pub(crate) secret: OneOrMany,
    /// Extra headers.
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, Text>,
    /// Per-request timeout (default 15s).
    #[serde(default)]
    pub(crate) timeout: Option<Dur>,
    /// Allow plain http:// to hosts other than loopback.
    #[serde(default)]
    pub(crate) allow_insecure_http: bool,
    /// Allow a receiver on a private address (10/8, 172.16/12, 192.168/16, 100.64/10,
    /// fc00::/7), checked for literal addresses and for what the host name resolves to.
    #[serde(default)]
    pub(crate) allow_private: bool,
    /// Requests in flight at once (default 8).
    #[serde(default)]
    pub(crate) concurrency: Option<usize>,
    /// This destination's own retry schedule.
    #[serde(default)]
    pub(crate) retry: Option<RawRetry>,
    /// Only these fields of `record` and `previous` are sent (`exclude_fields` is the opposite).
    #[serde(default)]
    pub(crate) fields: Option<Vec<Text>>,
    /// These fields of `record` and `previous` are left out.
    #[serde(default)]
    pub(crate) exclude_fields: Option<Vec<Text>>,
    /// `false` leaves `previous` out of the body (default true).
    #[serde(default)]
    pub(crate) include_previous: Option<bool>,
    /// A custom JSON body: the template `NAME.json.hbs`, rendered with JSON escaping.
    #[serde(default)]
    pub(crate) body_template: Option<Text>,
    /// Refused: digests are for email and chat (`check` says so at its line).
    #[serde(default)]
    pub(crate) digest: Option<Node>,
    /// Refused with `digest`.
    #[serde(default)]
    pub(crate) digest_template: Option<Node>,
    /// Quiet hours: deliveries are held during them and sent when they end, in the clinic's
    /// time zone (see [`crate::config::quiet`]).
    #[serde(default)]
    pub(crate) quiet_hours: Option<RawQuietHours>,
}

/// A NATS JetStream destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNats {
    /// `nats://host:port` or `tls://host:port` (user and password may be in it).
    pub(crate) url: Text,
    /// The subject, an inline template (`clinicea.{{clinic}}.{{resource}}.{{change}}`).
    pub(crate) subject: Text,
    /// A `.creds` file (JWT and nkey seed), relative to the config file.
    #[serde(default)]
    pub(crate) creds_file: Option<Text>,
    /// A user name (with `password`).
    #[serde(default)]
    pub(crate) user: Option<Text>,
    /// The user's password.
    #[serde(default)]
    pub(crate) password: Option<Text>,
    /// How long one publish may take, connecting and the stream's ack included (default 15s).
    #[serde(default)]
    pub(crate) timeout: Option<Dur>,
    /// Allow a server on a private address.
    #[serde(default)]
    pub(crate) allow_private: bool,
    /// Allow `nats://` (no TLS) to a host other than loopback.
    #[serde(default)]
    pub(crate) allow_cleartext: bool,
    /// Publishes in flight at once (default 8).
    #[serde(default)]
    pub(crate) concurrency: Option<usize>,
    /// This destination's own retry schedule.
    #[serde(default)]
    pub(crate) retry: Option<RawRetry>,
    /// Only these fields of `record` and `previous` are sent (`exclude_fields` is the opposite).
    #[serde(default)]
    pub(crate) fields: Option<Vec<Text>>,
    /// These fields of `record` and `previous` are left out.
    #[serde(default)]
    pub(crate) exclude_fields: Option<Vec<Text>>,
    /// `false` leaves `previous` out of the body (default true).
    #[serde(default)]
    pub(crate) include_previous: Option<bool>,
    /// A custom JSON body: the template `NAME.json.hbs`, rendered with JSON escaping.
    #[serde(default)]
    pub(crate) body_template: Option<Text>,
    /// Refused: digests are for email and chat (`check` says so at its line).
    #[serde(default)]
    pub(crate) digest: Option<Node>,
    /// Refused with `digest`.
    #[serde(default)]
    pub(crate) digest_template: Option<Node>,
    /// Quiet hours: deliveries are held during them and sent when they end, in the clinic's
    /// time zone (see [`crate::config::quiet`]).
    #[serde(default)]
    pub(crate) quiet_hours: Option<RawQuietHours>,
}

/// A RabbitMQ (AMQP 0-9-1) destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAmqp {
    /// `amqp://user:password@host:port/vhost` or `amqps://...`.
    pub(crate) url: Text,
    /// The exchange published to (`""` is the default exchange).
    pub(crate) exchange: Text,
    /// The routing key, an inline template (`{{resource}}.{{change}}`).
    pub(crate) routing_key: Text,
    /// How long one publish may take, connecting and the confirm included (default 15s).
    #[serde(default)]
    pub(crate) timeout: Option<Dur>,
    /// Allow a broker on a private address.
    #[serde(default)]
    pub(crate) allow_private: bool,
    /// Allow `amqp://` (no TLS) to a host other than loopback.
    #[serde(default)]
    pub(crate) allow_cleartext: bool,
    /// Publishes in flight at once (default 8).
    #[serde(default)]
    pub(crate) concurrency: Option<usize>,
    /// This destination's own retry schedule.
    #[serde(default)]
    pub(crate) retry: Option<RawRetry>,
    /// Only these fields of `record` and `previous` are sent (`exclude_fields` is the opposite).
    #[serde(default)]
    pub(crate) fields: Option<Vec<Text>>,
    /// These fields of `record` and `previous` are left out.
    #[serde(default)]
    pub(crate) exclude_fields: Option<Vec<Text>>,
    /// `false` leaves `previous` out of the body (default true).
    #[serde(default)]
    pub(crate) include_previous: Option<bool>,
    /// A custom JSON body: the template `NAME.json.hbs`, rendered with JSON escaping.
    #[serde(default)]
    pub(crate) body_template: Option<Text>,
    /// Refused: digests are for email and chat (`check` says so at its line).
    #[serde(default)]
    pub(crate) digest: Option<Node>,
    /// Refused with `digest`.
    #[serde(default)]
    pub(crate) digest_template: Option<Node>,
    /// Quiet hours: deliveries are held during them and sent when they end, in the clinic's
    /// time zone (see [`crate::config::quiet`]).
    #[serde(default)]
    pub(crate) quiet_hours: Option<RawQuietHours>,
}

/// An email destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEmail {
    /// Recipients; each is its own delivery. May contain templates.
    pub(crate) to: OneOrMany,
    /// Subject template.
    pub(crate) subject: Text,
    /// Template name (`NAME.txt.hbs`, optional `NAME.html.hbs`).
    pub(crate) template: Text,
    /// Overrides `smtp.from`.
    #[serde(default)]
    pub(crate) from: Option<Text>,
    /// Reply-To address.
    #[serde(default)]
    pub(crate) reply_to: Option<Text>,
    /// Messages in flight at once (default 2).
    #[serde(default)]
    pub(crate) concurrency: Option<usize>,
    /// This destination's own retry schedule.
    #[serde(default)]
    pub(crate) retry: Option<RawRetry>,
    /// Collect deliveries into one message per window (`{ every: 1h }` or `{ at: [...] }`).
    #[serde(default)]
    pub(crate) digest: Option<RawDigest>,
    /// The digest's template (`NAME.txt.hbs`, and for email `NAME.html.hbs`; default `digest`).
    #[serde(default)]
    pub(crate) digest_template: Option<Text>,
    /// Quiet hours: deliveries are held during them and sent when they end, in the clinic's
    /// time zone (see [`crate::config::quiet`]).
    #[serde(default)]
    pub(crate) quiet_hours: Option<RawQuietHours>,
}

/// A chat destination (Slack, Teams, Discord, Google Chat).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChat {
    /// The incoming-webhook URL.
    pub(crate) url: Text,
    /// Template name (`NAME.txt.hbs` renders the message text).
    pub(crate) template: Text,
    /// Per-request timeout (default 15s).
    #[serde(default)]
    pub(crate) timeout: Option<Dur>,
    /// Allow plain http:// to hosts other than loopback.
    #[serde(default)]
    pub(crate) allow_insecure_http: bool,
    /// Allow a receiver on a private address (10/8, 172.16/12, 192.168/16, 100.64/10,
    /// fc00::/7), checked for literal addresses and for what the host name resolves to.
    #[serde(default)]
    pub(crate) allow_private: bool,
    /// This destination's own retry schedule.
    #[serde(default)]
    pub(crate) retry: Option<RawRetry>,
    /// Collect deliveries into one message per window (`{ every: 1h }` or `{ at: [...] }`).
    #[serde(default)]
    pub(crate) digest: Option<RawDigest>,
    /// The digest's template (`NAME.txt.hbs`, and for email `NAME.html.hbs`; default `digest`).
    #[serde(default)]
    pub(crate) digest_template: Option<Text>,
    /// Quiet hours: deliveries are held during them and sent when they end, in the clinic's
    /// time zone (see [`crate::config::quiet`]).
    #[serde(default)]
    pub(crate) quiet_hours: Option<RawQuietHours>,
}

/// A destination's `digest:` (see [`crate::config::digest`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDigest {
    /// Windows of this length, aligned to the clinic's local midnight (`1h` closes at each
    /// whole hour).
    #[serde(default)]
    pub(crate) every: Option<Dur>,
    /// Local times of day (`"08:00"`) at which a window closes, in the clinic's zone.
    #[serde(default)]
    pub(crate) at: Option<Vec<Text>>,
    /// The most changes in one digest; a group this full goes out at once (default 50).
    #[serde(default)]
    pub(crate) max: Option<usize>,
    /// The digest email's subject, an inline template that sees `count` (default
    /// `"{{count}} new changes"`).
    #[serde(default)]
    pub(crate) subject: Option<Text>,
}

/// A destination's `quiet_hours:`, as written: `{ from: "20:00", to: "08:00", days: [sat, sun] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQuietHours {
    /// Start of the nightly window, `HH:MM` in the clinic's zone.
    #[serde(default)]
    pub(crate) from: Option<Text>,
    /// End of the nightly window (exclusive); earlier than `from` crosses midnight.
    #[serde(default)]
    pub(crate) to: Option<Text>,
    /// Whole days that are quiet (`mon` ... `sun`), besides the nightly window.
    #[serde(default)]
    pub(crate) days: Option<OneOrMany>,
}

// ---------------------------------------------------------------------------------------------
// The rules, as written (compiled by `crate::route::rules::compile`)
// ---------------------------------------------------------------------------------------------

/// One rule as written in the config file.
///
/// `where` conditions, `changed` and `clinic` are kept as raw YAML nodes and checked by
/// `route::rules::compile`, so a misspelt operator gets a precise message (and every problem is
/// reported, not only the first).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// The rule's name, unique in the file.
    pub(crate) name: Spanned<Text>,
    /// A resource key from `resources:`, or `"*"` for all (the default).
    #[serde(default)]
    pub resource: Option<Spanned<Text>>,
    /// The clinic the rule is for, or a list of them (default: every clinic). Kept as a node so
    /// each name keeps its line, for the problem of one that is not a clinic.
    #[serde(default)]
    pub(crate) clinic: Option<Spanned<Node>>,
    /// Which kinds of change the rule is for (default: all three).
    #[serde(default)]
    pub on: Option<Spanned<Vec<ChangeKind>>>,
    /// Conditions that must all hold.
    #[serde(default, rename = "where")]
    pub(crate) conditions: Vec<Spanned<Node>>,
    /// Field names of which any changed, or `{Field: {from: X, to: Y}}`.
    #[serde(default)]
    pub(crate) changed: Option<Spanned<Node>>,
    /// The destinations that get a matching change.
    #[serde(default)]
    pub(crate) notify: Option<Spanned<Vec<Spanned<Text>>>>,
    /// `false` keeps the rule in the file (still checked) without it ever matching.
    #[serde(default)]
    pub(crate) enabled: Option<bool>,
}

/// A YAML node as written: scalars (strings with `${VAR}` substituted), lists and maps, each with
/// the place it was written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A number with a fraction or exponent.
    Float(f64),
    /// A string.
    Str(String),
    /// A list.
    Seq(Vec<Spanned<Node>>),
    /// A map, in the order written.
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a YAML value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Int(v.into()))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
                i128::try_from(v)
                    .map(Node::Int)
                    .map_err(|_| E::custom("number too large"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
                // `${VAR}` is substituted later, by `config::vars`, like everywhere else.
                Ok(Node::Str(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<Node>>()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<Spanned<String>, Spanned<Node>>()? {
                    entries.push((k, v));
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

impl Node {
    /// What kind of value it is, for messages (`a string`, `a list`).
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Int(_) | Node::Float(_) => "a number",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a map",
        }
    }
}

/// The serde-saphyr options the config file (rule conditions above all) is parsed with.
///
/// With serde-saphyr's defaults an unquoted `yes`, `no`, `on`, `off`, `y`, `n` is read as a YAML 1.1
/// boolean (so `in: [NO, PK]` would hold `false`), and an unquoted `0300123` as the number 300123,
/// losing the leading zero. These options keep both as the strings the operator wrote; `true`,
/// `false` and ordinary numbers are unaffected.
pub fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options!(strict_booleans: true, leading_zero_numbers_as_strings: true)
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Parses YAML text into the raw structs, `${VAR}` left as written.
///
/// Errors carry the line and column serde-saphyr reports, and the key path of that line.
pub(crate) fn parse(text: &str) -> Result<RawConfig, Problem> {
    serde_saphyr::from_str_with_options::<RawConfig>(text, yaml_options()).map_err(|e| {
            let line = e.location().map(|l| l.line()).filter(|l| *l > 0);
            let full = e.to_string();
            let first = full.lines().next().unwrap_or_default();
            // "error: line 4 column 3: unknown field ..." -> "unknown field ..."
            let message = first
                .strip_prefix("error: ")
                .unwrap_or(first)
                .split_once(": ")
                .filter(|(head, _)| head.starts_with("line "))
                .map_or(first, |(_, rest)| rest)
                .to_string();
            // serde-saphyr's parse budget (a "billion laughs" of anchors and aliases) speaks of
            // its internals; say what it means for the file.
            let message = if message.starts_with("budget breached") {
                format!("the YAML is too large once its anchors and aliases (*name) are expanded; write the values out instead ({message})")
            } else {
                message
            };
            let key = line
                .map(|l| key_path_at_line(text, l as usize))
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| "config".to_string());
            Problem::at(line, key, message)
        },
    )
}

/// Reconstructs the dotted key path of the YAML line `line` (1-based) from indentation, e.g.
/// `clinicea.poll_interval` or `rules[2].where[0].matches`. Good enough for block-style YAML,
/// which is what config files are written in; it only labels error messages.
pub(crate) fn key_path_at_line(text: &str, line: usize) -> String {
    /// (indent of a leading `- `, indent of the key, the key).
    fn parse(l: &str) -> Option<(Option<usize>, usize, String)> {
        let indent = l.len() - l.trim_start().len();
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            return None;
        }
        let (dash, rest, key_indent) = match t.strip_prefix('-') {
            Some(r) if r.is_empty() || r.starts_with(' ') => {
                let r2 = r.trim_start();
                (Some(indent), r2, indent + 1 + (r.len() - r2.len()))
            }
            _ => (None, t, indent),
        };
        let key = rest
            .split_once(':')
            .map(|(k, _)| k.trim().trim_matches('"').trim_matches('\'').to_string())
            .filter(|k| !k.is_empty() && !k.contains(' ') && !k.starts_with('{'))
            .unwrap_or_default();
        Some((dash, key_indent, key))
    }
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = line.checked_sub(1).filter(|i| *i < lines.len()) else {
        return String::new();
    };
    let Some((dash, key_indent, key)) = parse(lines[start]) else {
        return String::new();
    };
    let mut parts: Vec<String> = Vec::new();
    if !key.is_empty() {
        parts.push(key);
    }
    // The indent a parent must be left of; `inclusive` once we are a list item, since a compact
    // list may sit at its parent key's own indent.
    let mut level = key_indent;
    let mut inclusive = false;
    let item_index = |at: usize, d: usize| -> usize {
        let mut idx = 0;
        for l in lines[..at].iter().rev() {
            match parse(l) {
                Some((Some(d2), _, _)) if d2 == d => idx += 1,
                Some((Some(d2), _, _)) if d2 < d => break,
                Some((None, k2, _)) if k2 <= d => break,
                _ => {}
            }
        }
        idx
    };
    if let Some(d) = dash {
        parts.push(format!("[{}]", item_index(start, d)));
        level = d;
        inclusive = true;
    }
    let mut i = start;
    while i > 0 && (level > 0 || inclusive) {
        i -= 1;
        let Some((dash, key_indent, key)) = parse(lines[i]) else {
            continue;
        };
        let is_parent_key = if inclusive {
            dash.is_none() && key_indent <= level || dash.is_some() && key_indent < level
        } else {
            key_indent < level
        };
        if is_parent_key && !key.is_empty() && dash.is_none_or(|d| d < level) {
            parts.push(key);
            level = key_indent;
            inclusive = false;
            if let Some(d) = dash {
                parts.push(format!("[{}]", item_index(i, d)));
                level = d;
                inclusive = true;
            }
        } else if let Some(d) = dash {
            if d < level {
                parts.push(format!("[{}]", item_index(i, d)));
                level = d;
                inclusive = true;
            }
        }
    }
    parts.reverse();
    let mut out = String::new();
    for p in parts {
        if !p.starts_with('[') && !out.is_empty() {
            out.push('.');
        }
        out.push_str(&p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn huge_durations_are_errors_not_panics() {
        for s in [
            "99999999999999999999d",
            "150000000000d",
            "3651d",
            "3650d1s",
            &"9".repeat(400),
            &format!("{}s", "9".repeat(400)),
        ] {
            let e = parse_duration(s).unwrap_err();
            assert!(e.contains("too long") || e.contains("no unit"), "{s}: {e}");
        }
        assert_eq!(parse_duration("3650d").unwrap(), MAX_DURATION);
    }

    #[test]
    fn key_paths() {
        let y = "clinicea:\n  base_url: x\n  poll_intervl: 1s\nrules:\n  - name: a\n    notify: [x]\n  - name: b\n    where:\n      - { field: A, equals: 1 }\n      - field: B\n        matchs: x\n";
        assert_eq!(key_path_at_line(y, 3), "clinicea.poll_intervl");
        assert_eq!(key_path_at_line(y, 6), "rules[0].notify");
        assert_eq!(key_path_at_line(y, 7), "rules[1].name");
        assert_eq!(key_path_at_line(y, 11), "rules[1].where[1].matchs");
        let compact = "rules:\n- name: a\n- name: b\n  on: [x]\n";
        assert_eq!(key_path_at_line(compact, 4), "rules[1].on");
    }

    #[test]
    fn texts_and_durations_remember_their_line_where_serde_keeps_it() {
        let y = "clinicea:\n  base_url: ${URL}\n  api_key: k\n  poll_interval: ${EVERY}\nstore:\n  journal_retention: 2d\ndestinations:\n  hook:\n    type: webhook\n    url: https://x.example/\n    secret: [whsec_a, whsec_b]\n";
        let raw = parse(y).unwrap();
        let c = &raw.clinicea.as_ref().unwrap().value;
        let (url, key) = (c.base_url.as_ref().unwrap(), c.api_key.as_ref().unwrap());
        assert_eq!((url.as_str(), url.line()), ("${URL}", Some(2)));
        assert_eq!(key.line(), Some(3));
        let every = c.poll_interval.as_ref().unwrap().text();
        assert_eq!((every.as_str(), every.line()), ("${EVERY}", Some(4)));
        let kept = raw.store.journal_retention.as_ref().unwrap().text();
        assert_eq!((kept.as_str(), kept.line()), ("2d", Some(6)));
        // Inside a `type:`-tagged destination serde keeps no place: the destination's own line
        // stands in (see `config::vars`).
        let hook = &raw.destinations["hook"];
        let RawDestination::Webhook(w) = &hook.value else {
            panic!("{hook:?}")
        };
        assert_eq!((w.url.as_str(), w.url.line()), ("https://x.example/", None));
        let secrets: Vec<&str> = w.secret.as_slice().iter().map(|t| t.as_str()).collect();
        assert_eq!(secrets, ["whsec_a", "whsec_b"]);
    }
}
