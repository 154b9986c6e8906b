//! A typed builder for the config files the tests write. A test names what it sets (a webhook
//! with a timeout, a rule, a page delay) and [`Config::to_yaml`] spells it the way the loader
//! reads it, so no test splices YAML text with `format!` or `replace`. Configs that are broken
//! on purpose (bad YAML, typos, line numbers under test) stay literal text in their tests.
//!
//! Durations are written as the config writes them (`"300ms"`), and `${VAR}` values pass through
//! for the loader to substitute.

use super::SECRET;
use std::fmt::{Display, Write as _};

/// Setters for optional keys: `name(value)` sets the key `name` (documented by the doc comment).
macro_rules! keys {
    ($ty:ident { $( $(#[$doc:meta])* $name:ident: $arg:ty ),* $(,)? }) => {
        impl $ty {
            $(
                $(#[$doc])*
                pub fn $name(mut self, value: $arg) -> $ty {
                    self.$name = Some(value.into());
                    self
                }
            )*
        }
    };
}

/// Setters for opt-ins: `name()` writes `name: true`.
macro_rules! flags {
    ($ty:ident { $( $(#[$doc:meta])* $name:ident ),* $(,)? }) => {
        impl $ty {
            $(
                $(#[$doc])*
                pub fn $name(mut self) -> $ty {
                    self.$name = true;
                    self
                }
            )*
        }
    };
}

/// An RFC 3339 time `hours` ago, for `start_from` backfills.
fn hours_ago(hours: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::hours(hours)).to_rfc3339()
}

/// A whole config file: the `clinicea:` section, the sandbox's leads and a store in `./data`
/// unless changed, and whatever the methods add.
#[derive(Debug, Clone)]
pub struct Config {
    clinicea: Clinicea,
    listen: bool,
    metrics_token: Option<String>,
    watchdog_stale_after: Option<String>,
    resources: Vec<Resource>,
    store: Option<StoreSection>,
    templates: Option<String>,
    smtp: Option<Smtp>,
    retry: Option<Retry>,
    destinations: Vec<(String, Destination)>,
    rules: Vec<Rule>,
    clinics: Vec<(String, Clinic)>,
    fleet_max_concurrent_requests: Option<usize>,
    alerts: Option<Alerts>,
}

keys!(Config {
    /// `fleet: { max_concurrent_requests: N }`.
    fleet_max_concurrent_requests: usize,
    /// `metrics_token: TOKEN` (literal, or `${VAR}`).
    metrics_token: &str,
    /// `watchdog: { stale_after: DURATION }`.
    watchdog_stale_after: &str,
    /// `templates: DIR`.
    templates: &str,
    /// The `smtp:` section.
    smtp: Smtp,
    /// The top-level `retry:` section (every destination's default).
    retry: Retry,
    /// Replaces the `store:` section.
    store: StoreSection,
    /// The `alerts:` section.
    alerts: Alerts,
});

flags!(Config {
    /// `listen: 127.0.0.1:0`, so the ports of parallel tests never collide.
    listen,
});

impl Config {
    /// `clinicea`, the leads at `/api/v1/leads` and a store in `./data`.
    pub fn new(clinicea: Clinicea) -> Config {
        Config {
            clinicea,
            listen: false,
            metrics_token: None,
            watchdog_stale_after: None,
            resources: vec![Resource::leads()],
            store: Some(StoreSection::default()),
            templates: None,
            smtp: None,
            retry: None,
            destinations: Vec::new(),
            rules: Vec::new(),
            clinics: Vec::new(),
            fleet_max_concurrent_requests: None,
            alerts: None,
        }
    }

    /// A clinic under `clinics:` (the `clinicea:` section then holds the defaults).
    pub fn clinic(mut self, name: &str, clinic: Clinic) -> Config {
        self.clinics.push((name.into(), clinic));
        self
    }

    /// Replaces the `clinicea:` section.
    pub fn clinicea(mut self, clinicea: Clinicea) -> Config {
        self.clinicea = clinicea;
        self
    }

    /// Polls these resources instead of the leads alone.
    pub fn resources(mut self, resources: impl IntoIterator<Item = Resource>) -> Config {
        self.resources = resources.into_iter().collect();
        self
    }

    /// Polls this resource as well.
    pub fn resource(mut self, resource: Resource) -> Config {
        self.resources.push(resource);
        self
    }

    /// No `store:` section (for configs that are only loaded, never opened).
    pub fn without_store(mut self) -> Config {
        self.store = None;
        self
    }

    /// A webhook destination signed with [`SECRET`]; `keys` sets its other keys.
    pub fn webhook(
        mut self,
        name: &str,
        url: &str,
        keys: impl FnOnce(Webhook) -> Webhook,
    ) -> Config {
        let hook = keys(Webhook {
            url: url.into(),
            secret: Some(SECRET.into()),
            timeout: None,
            concurrency: None,
            retry: None,
            quiet_hours: None,
            allow_private: false,
        });
        self.destinations
            .push((name.into(), Destination::Webhook(hook)));
        self
    }

    /// A chat destination of `kind` (`slack`, `teams`, `discord`, `google_chat`) rendered with
    /// the shipped `lead-chat` template; `keys` sets its other keys.
    pub fn chat(
        mut self,
        name: &str,
        kind: &str,
        url: &str,
        keys: impl FnOnce(Chat) -> Chat,
    ) -> Config {
        let chat = keys(Chat {
            kind: kind.into(),
            url: url.into(),
            template: "lead-chat".into(),
            timeout: None,
            allow_private: false,
        });
        self.destinations
            .push((name.into(), Destination::Chat(chat)));
        self
    }

    /// An email destination to `to`, with this subject and template.
    pub fn email(mut self, name: &str, to: &[&str], subject: &str, template: &str) -> Config {
        let email = Email {
            to: to.iter().map(|s| s.to_string()).collect(),
            subject: subject.into(),
            template: template.into(),
            digest: None,
        };
        self.destinations
            .push((name.into(), Destination::Email(email)));
        self
    }

    /// [`Config::email`] with `digest: DIGEST` (a YAML flow map, e.g. `{ every: 1h, max: 5 }`).
    pub fn email_digest(
        mut self,
        name: &str,
        to: &[&str],
        subject: &str,
        template: &str,
        digest: &str,
    ) -> Config {
        self = self.email(name, to, subject, template);
        if let Some((_, Destination::Email(e))) = self.destinations.last_mut() {
            e.digest = Some(digest.into());
        }
        self
    }

    /// A routing rule.
    pub fn rule(mut self, rule: Rule) -> Config {
        self.rules.push(rule);
        self
    }

    /// The config as YAML.
    pub fn to_yaml(&self) -> String {
        let mut y = Yaml::default();
        self.clinicea.write(&mut y);
        if !self.clinics.is_empty() {
            y.key(0, "clinics");
            for (name, c) in &self.clinics {
                y.key(1, name);
                c.write(&mut y);
            }
        }
        if let Some(n) = self.fleet_max_concurrent_requests {
            y.key(0, "fleet");
            y.raw(1, "max_concurrent_requests", &n.to_string());
        }
        y.flag(0, "listen: 127.0.0.1:0", self.listen);
        y.text(0, "metrics_token", &self.metrics_token);
        if let Some(stale) = &self.watchdog_stale_after {
            y.key(0, "watchdog");
            y.line(1, "stale_after", stale);
        }
        if !self.resources.is_empty() {
            y.key(0, "resources");
            for r in &self.resources {
                r.write(&mut y);
            }
        }
        if let Some(store) = &self.store {
            store.write(&mut y);
        }
        y.text(0, "templates", &self.templates);
        if let Some(smtp) = &self.smtp {
            smtp.write(&mut y);
        }
        if let Some(retry) = &self.retry {
            retry.write(&mut y, 0);
        }
        if !self.destinations.is_empty() {
            y.key(0, "destinations");
            for (name, d) in &self.destinations {
                y.key(1, name);
                d.write(&mut y);
            }
        }
        if !self.rules.is_empty() {
            y.key(0, "rules");
            for r in &self.rules {
                r.write(&mut y);
            }
        }
        if let Some(a) = &self.alerts {
            a.write(&mut y);
        }
        y.out
    }
}

/// The `clinicea:` section.
#[derive(Debug, Clone)]
pub struct Clinicea {
    base_url: String,
    api_key: Option<String>,
    auth: Option<String>,
    login: Option<(String, String)>,
    start_from: Option<String>,
    poll_interval: Option<String>,
    overlap: Option<String>,
    timeout: Option<String>,
    page_delay: Option<String>,
    poll_interval_min: Option<String>,
    trigger_token: Option<String>,
    timezone: Option<String>,
    baseline_off: bool,
    allow_private: bool,
}

keys!(Clinicea {
    /// `timezone: ZONE` (the clinic's IANA zone, which quiet hours are read in).
    timezone: &str,
    /// `api_key: KEY` (literal, or `${VAR}`).
    api_key: &str,
    /// `auth: MODE` (`header`, `api_key_header`, `query`, `login`).
    auth: &str,
    /// `start_from: TIME` (`now` or RFC 3339).
    start_from: &str,
    /// `poll_interval: DURATION`.
    poll_interval: &str,
    /// `overlap: DURATION`.
    overlap: &str,
    /// `timeout: DURATION` (per API request).
    timeout: &str,
    /// `page_delay: DURATION` between page requests.
    page_delay: &str,
    /// `poll_interval_min: DURATION` (adaptive polling's floor).
    poll_interval_min: &str,
    /// `trigger_token: TOKEN` (literal, or `${VAR}`).
    trigger_token: &str,
});

flags!(Clinicea {
    /// `baseline: { enabled: false }`: the first start sends what a backfill finds.
    baseline_off,
    /// `allow_private: true`.
    allow_private,
});

impl Clinicea {
    /// The API at `base_url` with this key, every other key at its default.
    pub fn new(base_url: &str, api_key: &str) -> Clinicea {
        Clinicea {
            base_url: base_url.into(),
            api_key: Some(api_key.into()),
            auth: None,
            login: None,
            start_from: None,
            poll_interval: None,
            overlap: None,
            timeout: None,
            page_delay: None,
            poll_interval_min: None,
            trigger_token: None,
            timezone: None,
            baseline_off: false,
            allow_private: false,
        }
    }

    /// A sandbox at `base_url` with its key, backfilling two hours so its records are seen,
    /// polled every second with a 5 s timeout.
    pub fn sandbox(base_url: &str) -> Clinicea {
        Clinicea::new(base_url, "sandbox-api-key")
            .start_from(&hours_ago(2))
            .poll_interval("1s")
            .timeout("5s")
    }

    /// A sandbox at `base_url` with its key and the default `start_from: now` (nothing from
    /// before the first start is sent), polled every second with a 10 s timeout.
    pub fn sandbox_from_now(base_url: &str) -> Clinicea {
        Clinicea::new(base_url, "sandbox-api-key")
            .poll_interval("1s")
            .timeout("10s")
    }

    /// `auth: login` with these staff credentials.
    pub fn login(mut self, username: &str, password: &str) -> Clinicea {
        self.auth = Some("login".into());
        self.login = Some((username.into(), password.into()));
        self
    }

    /// No `start_from:` key: the default, the first start.
    pub fn without_start_from(mut self) -> Clinicea {
        self.start_from = None;
        self
    }

    fn write(&self, y: &mut Yaml) {
        y.key(0, "clinicea");
        y.line(1, "base_url", &self.base_url);
        y.text(1, "api_key", &self.api_key);
        y.text(1, "auth", &self.auth);
        if let Some((user, password)) = &self.login {
            y.key(1, "login");
            y.line(2, "username", user);
            y.line(2, "password", password);
        }
        y.text(1, "start_from", &self.start_from);
        y.text(1, "poll_interval", &self.poll_interval);
        y.text(1, "overlap", &self.overlap);
        y.text(1, "timeout", &self.timeout);
        y.text(1, "page_delay", &self.page_delay);
        y.text(1, "poll_interval_min", &self.poll_interval_min);
        y.text(1, "trigger_token", &self.trigger_token);
        y.text(1, "timezone", &self.timezone);
        if self.baseline_off {
            y.key(1, "baseline");
            y.raw(2, "enabled", "false");
        }
        y.flag(1, "allow_private: true", self.allow_private);
    }
}

/// One entry of `clinics:`: what it sets of its own (the rest comes from `clinicea:`).
#[derive(Debug, Clone, Default)]
pub struct Clinic {
    base_url: Option<String>,
    api_key: Option<String>,
    timezone: Option<String>,
    trigger_token: Option<String>,
    resources: Option<Vec<String>>,
}

keys!(Clinic {
    /// `base_url: URL`.
    base_url: &str,
    /// `api_key: KEY`.
    api_key: &str,
    /// `timezone: ZONE`.
    timezone: &str,
    /// `trigger_token: TOKEN`.
    trigger_token: &str,
});

impl Clinic {
    /// A clinic at `base_url` with this key.
    pub fn at(base_url: &str, api_key: &str) -> Clinic {
        Clinic::default().base_url(base_url).api_key(api_key)
    }

    /// `resources: [NAMES]`: the subset it polls.
    pub fn polls(mut self, resources: &[&str]) -> Clinic {
        self.resources = Some(resources.iter().map(|s| s.to_string()).collect());
        self
    }

    fn write(&self, y: &mut Yaml) {
        y.text(2, "base_url", &self.base_url);
        y.text(2, "api_key", &self.api_key);
        y.text(2, "timezone", &self.timezone);
        y.text(2, "trigger_token", &self.trigger_token);
        if let Some(r) = &self.resources {
            y.raw(2, "resources", &flow(r));
        }
    }
}

/// One entry of `resources:`.
#[derive(Debug, Clone)]
pub struct Resource {
    name: String,
    path: String,
    id_field: Option<String>,
    since_param: Option<String>,
    since_format: Option<String>,
    page_param: Option<String>,
    first_page: Option<u32>,
    page_size: Option<u32>,
    page_size_param: Option<String>,
    status_field: Option<String>,
}

keys!(Resource {
    /// `id_field: FIELD`.
    id_field: &str,
    /// `since_param: NAME`.
    since_param: &str,
    /// `since_format: STRFTIME`.
    since_format: &str,
    /// `page_param: NAME`.
    page_param: &str,
    /// `first_page: N`.
    first_page: u32,
    /// `page_size: N`.
    page_size: u32,
    /// `page_size_param: NAME`.
    page_size_param: &str,
    /// `status_field: FIELD`.
    status_field: &str,
});

impl Resource {
    /// A resource served at `path`, every paging key at its default (the v1 API's).
    pub fn new(name: &str, path: &str) -> Resource {
        Resource {
            name: name.into(),
            path: path.into(),
            id_field: None,
            since_param: None,
            since_format: None,
            page_param: None,
            first_page: None,
            page_size: None,
            page_size_param: None,
            status_field: None,
        }
    }

    /// The leads at `/api/v1/leads`.
    pub fn leads() -> Resource {
        Resource::new("leads", "/api/v1/leads")
    }

    /// The patients at `/api/v1/patients`.
    pub fn patients() -> Resource {
        Resource::new("patients", "/api/v1/patients")
    }

    /// The appointments feed as the v3 API serves it: its own since parameter and format, pages
    /// of 100 numbered from 1, the status in `DataStatusValue`.
    pub fn appointments() -> Resource {
        Resource::new("appointments", "/api/v3/appointments/getChanges")
            .since_param("lastSyncDTime")
            .since_format("%Y-%m-%dT%H:%M:%S")
            .page_param("pageNo")
            .first_page(1)
            .page_size(100)
            .page_size_param("pageSize")
            .status_field("DataStatusValue")
    }

    /// No `since_format:` key (the default).
    pub fn without_since_format(mut self) -> Resource {
        self.since_format = None;
        self
    }

    fn write(&self, y: &mut Yaml) {
        y.key(1, &self.name);
        y.line(2, "path", &self.path);
        y.text(2, "id_field", &self.id_field);
        y.text(2, "since_param", &self.since_param);
        y.text(2, "since_format", &self.since_format);
        y.text(2, "page_param", &self.page_param);
        y.number(2, "first_page", self.first_page);
        y.number(2, "page_size", self.page_size);
        y.text(2, "page_size_param", &self.page_size_param);
        y.text(2, "status_field", &self.status_field);
    }
}

/// The `store:` section.
#[derive(Debug, Clone)]
pub struct StoreSection {
    backend: Backend,
    lease: Option<String>,
    journal_retention: Option<String>,
    dead_letter_retention: Option<String>,
}

/// Where a [`StoreSection`] keeps its data.
#[derive(Debug, Clone)]
enum Backend {
    /// `path: DIR` (the default backend, so `backend:` is not written).
    Sled(String),
    /// `backend: postgres` and `url: URL`.
    Postgres(String),
}

keys!(StoreSection {
    /// `lease: DURATION` (PostgreSQL only): how long a replica's clinics stay its own after its
    /// last renewal.
    lease: &str,
    /// `journal_retention: DURATION`.
    journal_retention: &str,
    /// `dead_letter_retention: DURATION`.
    dead_letter_retention: &str,
});

impl Default for StoreSection {
    /// `path: ./data` (below the config's folder, so inside the test's directory).
    fn default() -> StoreSection {
        StoreSection::at("./data")
    }
}

impl StoreSection {
    /// A sled store at `path`.
    pub fn at(path: &str) -> StoreSection {
        StoreSection::with(Backend::Sled(path.into()))
    }

    /// A PostgreSQL store at `url` (literal, or `${VAR}`).
    pub fn postgres(url: &str) -> StoreSection {
        StoreSection::with(Backend::Postgres(url.into()))
    }

    fn with(backend: Backend) -> StoreSection {
        StoreSection {
            backend,
            lease: None,
            journal_retention: None,
            dead_letter_retention: None,
        }
    }

    fn write(&self, y: &mut Yaml) {
        y.key(0, "store");
        match &self.backend {
            Backend::Sled(path) => y.line(1, "path", path),
            Backend::Postgres(url) => {
                y.line(1, "backend", "postgres");
                y.line(1, "url", url);
            }
        }
        y.text(1, "lease", &self.lease);
        y.text(1, "journal_retention", &self.journal_retention);
        y.text(1, "dead_letter_retention", &self.dead_letter_retention);
    }
}

/// The `smtp:` section.
#[derive(Debug, Clone)]
pub struct Smtp {
    host: String,
    port: Option<u16>,
    tls: Option<String>,
    from: Option<String>,
    timeout: Option<String>,
    username: Option<String>,
    password: Option<String>,
    ca_file: Option<String>,
    allow_cleartext: bool,
    allow_private: bool,
}

keys!(Smtp {
    /// `port: N`.
    port: u16,
    /// `tls: MODE` (`none`, `starttls`, ...).
    tls: &str,
    /// `from: ADDRESS`.
    from: &str,
    /// `timeout: DURATION`.
    timeout: &str,
    /// `username: NAME`.
    username: &str,
    /// `password: SECRET` (literal, or `${VAR}`).
    password: &str,
    /// `ca_file: PATH`.
    ca_file: &str,
});

flags!(Smtp {
    /// `allow_cleartext: true`.
    allow_cleartext,
    /// `allow_private: true`.
    allow_private,
});

impl Smtp {
    /// A relay at `host`, every other key at its default.
    pub fn host(host: &str) -> Smtp {
        Smtp {
            host: host.into(),
            port: None,
            tls: None,
            from: None,
            timeout: None,
            username: None,
            password: None,
            ca_file: None,
            allow_cleartext: false,
            allow_private: false,
        }
    }

    /// A relay on loopback at `port` without TLS (a catcher's).
    pub fn plain(port: u16) -> Smtp {
        Smtp::host("127.0.0.1").port(port).tls("none")
    }

    fn write(&self, y: &mut Yaml) {
        y.key(0, "smtp");
        y.line(1, "host", &self.host);
        y.number(1, "port", self.port);
        y.text(1, "tls", &self.tls);
        y.text(1, "username", &self.username);
        y.text(1, "password", &self.password);
        y.text(1, "ca_file", &self.ca_file);
        y.flag(1, "allow_cleartext: true", self.allow_cleartext);
        y.flag(1, "allow_private: true", self.allow_private);
        y.text(1, "from", &self.from);
        y.text(1, "timeout", &self.timeout);
    }
}

/// A `retry:` section, top-level or a destination's.
#[derive(Debug, Clone)]
pub struct Retry {
    schedule: Vec<String>,
    jitter: f64,
}

impl Retry {
    /// The waits before each retry, with no jitter.
    pub fn schedule(waits: &[&str]) -> Retry {
        Retry {
            schedule: waits.iter().map(|s| s.to_string()).collect(),
            jitter: 0.0,
        }
    }

    /// `n` retries, each `wait` after the last.
    pub fn every(wait: &str, n: usize) -> Retry {
        Retry::schedule(&vec![wait; n])
    }

    /// `jitter: FRACTION`.
    pub fn jitter(mut self, jitter: f64) -> Retry {
        self.jitter = jitter;
        self
    }

    fn write(&self, y: &mut Yaml, depth: usize) {
        y.key(depth, "retry");
        y.raw(depth + 1, "schedule", &flow(&self.schedule));
        y.raw(depth + 1, "jitter", &self.jitter.to_string());
    }
}

/// One entry of `destinations:`.
#[derive(Debug, Clone)]
enum Destination {
    Webhook(Webhook),
    Chat(Chat),
    Email(Email),
}

impl Destination {
    fn write(&self, y: &mut Yaml) {
        match self {
            Destination::Webhook(w) => w.write(y),
            Destination::Chat(c) => c.write(y),
            Destination::Email(e) => e.write(y),
        }
    }
}

/// A webhook destination's keys beyond its URL (see [`Config::webhook`]).
#[derive(Debug, Clone)]
pub struct Webhook {
    url: String,
    secret: Option<String>,
    timeout: Option<String>,
    concurrency: Option<u32>,
    retry: Option<Retry>,
    quiet_hours: Option<String>,
    allow_private: bool,
}

keys!(Webhook {
    /// `quiet_hours: { ... }`, written as given (a YAML flow mapping).
    quiet_hours: &str,
    /// `secret: SECRET` instead of [`SECRET`] (literal, or `${VAR}`).
    secret: &str,
    /// `timeout: DURATION`.
    timeout: &str,
    /// `concurrency: N`.
    concurrency: u32,
    /// The destination's own `retry:`.
    retry: Retry,
});

flags!(Webhook {
    /// `allow_private: true`.
    allow_private,
});

impl Webhook {
    fn write(&self, y: &mut Yaml) {
        y.line(2, "type", "webhook");
        y.line(2, "url", &self.url);
        y.text(2, "secret", &self.secret);
        y.text(2, "timeout", &self.timeout);
        y.number(2, "concurrency", self.concurrency);
        if let Some(r) = &self.retry {
            r.write(y, 2);
        }
        if let Some(q) = &self.quiet_hours {
            y.raw(2, "quiet_hours", q);
        }
        y.flag(2, "allow_private: true", self.allow_private);
    }
}

/// A chat destination's keys beyond its kind and URL (see [`Config::chat`]).
#[derive(Debug, Clone)]
pub struct Chat {
    kind: String,
    url: String,
    template: String,
    timeout: Option<String>,
    allow_private: bool,
}

keys!(Chat {
    /// `timeout: DURATION`.
    timeout: &str,
});

flags!(Chat {
    /// `allow_private: true`.
    allow_private,
});

impl Chat {
    fn write(&self, y: &mut Yaml) {
        y.line(2, "type", &self.kind);
        y.line(2, "url", &self.url);
        y.line(2, "template", &self.template);
        y.text(2, "timeout", &self.timeout);
        y.flag(2, "allow_private: true", self.allow_private);
    }
}

/// An email destination (see [`Config::email`]).
#[derive(Debug, Clone)]
struct Email {
    to: Vec<String>,
    subject: String,
    template: String,
    /// `digest:` as a YAML flow map.
    digest: Option<String>,
}

impl Email {
    fn write(&self, y: &mut Yaml) {
        y.line(2, "type", "email");
        y.raw(2, "to", &flow(&self.to));
        y.line(2, "subject", &self.subject);
        y.line(2, "template", &self.template);
        if let Some(d) = &self.digest {
            y.raw(2, "digest", d);
        }
    }
}

/// One routing rule of `rules:`.
#[derive(Debug, Clone)]
pub struct Rule {
    name: String,
    clinic: Vec<String>,
    resource: Option<String>,
    on: Vec<String>,
    changed_to: Option<(String, String)>,
    notify: Vec<String>,
}

keys!(Rule {
    /// `resource: NAME`.
    resource: &str,
});

impl Rule {
    /// A rule for every change of every resource, to `notify`.
    pub fn new(name: &str, notify: &[&str]) -> Rule {
        Rule {
            name: name.into(),
            clinic: Vec::new(),
            resource: None,
            on: Vec::new(),
            changed_to: None,
            notify: notify.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// `clinic: [NAMES]`: the clinics it is for.
    pub fn clinic(mut self, clinics: &[&str]) -> Rule {
        self.clinic = clinics.iter().map(|s| s.to_string()).collect();
        self
    }

    /// `on: [KINDS]` (`added`, `modified`, `deleted`).
    pub fn on(mut self, kinds: &[&str]) -> Rule {
        self.on = kinds.iter().map(|s| s.to_string()).collect();
        self
    }

    /// `changed: { FIELD: { to: VALUE } }`.
    pub fn changed_to(mut self, field: &str, value: &str) -> Rule {
        self.changed_to = Some((field.into(), value.into()));
        self
    }

    fn write(&self, y: &mut Yaml) {
        let _ = writeln!(y.out, "  - name: {}", scalar(&self.name));
        if !self.clinic.is_empty() {
            y.raw(2, "clinic", &flow(&self.clinic));
        }
        y.text(2, "resource", &self.resource);
        if !self.on.is_empty() {
            y.raw(2, "on", &flow(&self.on));
        }
        if let Some((field, value)) = &self.changed_to {
            y.key(2, "changed");
            y.key(3, field);
            y.line(4, "to", value);
        }
        y.raw(2, "notify", &flow(&self.notify));
    }
}

/// Block-style YAML being written, two spaces an indent.
#[derive(Default)]
struct Yaml {
    out: String,
}

impl Yaml {
    /// `key:` opening a nested block.
    fn key(&mut self, depth: usize, key: &str) {
        let _ = writeln!(self.out, "{:width$}{key}:", "", width = depth * 2);
    }

    /// `key: value` with a string value, quoted when plain YAML would read it otherwise.
    fn line(&mut self, depth: usize, key: &str, value: &str) {
        self.raw(depth, key, &scalar(value));
    }

    /// [`Yaml::line`] when the key is set.
    fn text(&mut self, depth: usize, key: &str, value: &Option<String>) {
        if let Some(v) = value {
            self.line(depth, key, v);
        }
    }

    /// `key: N` when the key is set.
    fn number(&mut self, depth: usize, key: &str, value: Option<impl Display>) {
        if let Some(v) = value {
            self.raw(depth, key, &v.to_string());
        }
    }

    /// The whole `key: value` line when `on`.
    fn flag(&mut self, depth: usize, line: &str, on: bool) {
        if on {
            let _ = writeln!(self.out, "{:width$}{line}", "", width = depth * 2);
        }
    }

    /// `key: value` with the value written as it is (numbers, booleans, flow lists).
    fn raw(&mut self, depth: usize, key: &str, value: &str) {
        let _ = writeln!(self.out, "{:width$}{key}: {value}", "", width = depth * 2);
    }
}

/// A string as a YAML scalar: plain where YAML reads it back as the same string, else
/// double-quoted (a JSON string is a valid YAML double-quoted scalar).
fn scalar(s: &str) -> String {
    if plain_is_safe(s) {
        s.to_string()
    } else {
        quoted(s)
    }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// A flow sequence of strings: `[a, b]`.
fn flow(items: &[String]) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|s| {
            if s.contains([',', '[', ']', '{', '}']) {
                quoted(s)
            } else {
                scalar(s)
            }
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// Whether `s` written plain reads back as the same string (conservatively: anything that
/// could be an indicator, a comment, a mapping, a number, a boolean or null is quoted).
fn plain_is_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let special = [
        "true", "false", "null", "~", "yes", "no", "on", "off", "y", "n",
    ];
    !"-?:,[]{}#&*!|>'\"%@`".contains(first)
        && !first.is_whitespace()
        && !s.ends_with(char::is_whitespace)
        && !s.ends_with(':')
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.contains(['\n', '\t', '"', '\\'])
        && !special.contains(&s.to_ascii_lowercase().as_str())
        && s.parse::<f64>().is_err()
}

/// The `alerts:` section (see [`Config::alerts`]).
#[derive(Debug, Clone)]
pub struct Alerts {
    notify: Vec<String>,
    destination_failing_for: Option<String>,
    stale_resource: Option<bool>,
    api_unauthorized: Option<bool>,
}

keys!(Alerts {
    /// `destination_failing_for: DURATION`.
    destination_failing_for: &str,
    /// `stale_resource: BOOL`.
    stale_resource: bool,
    /// `api_unauthorized: BOOL`.
    api_unauthorized: bool,
});

impl Alerts {
    /// Alerts to these destinations, every other key at its default.
    pub fn notify(names: &[&str]) -> Alerts {
        Alerts {
            notify: names.iter().map(|s| s.to_string()).collect(),
            destination_failing_for: None,
            stale_resource: None,
            api_unauthorized: None,
        }
    }

    fn write(&self, y: &mut Yaml) {
        y.key(0, "alerts");
        y.raw(1, "notify", &flow(&self.notify));
        y.text(1, "destination_failing_for", &self.destination_failing_for);
        y.number(1, "stale_resource", self.stale_resource);
        y.number(1, "api_unauthorized", self.api_unauthorized);
    }
}
