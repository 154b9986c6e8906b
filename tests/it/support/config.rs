//! A typed builder for the config files the tests write. A test names what it sets (a webhook
//! with a timeout, a rule, a page delay) and [`Config::to_yaml`] spells it the way the loader
//! reads it, so no test splices YAML text with `format!` or `replace`. Configs that are broken
//! on purpose (bad YAML, typos, line numbers under test) stay literal text in their tests.

use super::SECRET;
use std::fmt::Write as _;

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
}

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
        }
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

    /// Replaces the `store:` section.
    pub fn store(mut self, store: StoreSection) -> Config {
        self.store = Some(store);
        self
    }

    /// No `store:` section (for configs that are only loaded, never opened).
    pub fn without_store(mut self) -> Config {
        self.store = None;
        self
    }

    /// `listen: 127.0.0.1:0`, so the ports of parallel tests never collide.
    pub fn listen(mut self) -> Config {
        self.listen = true;
        self
    }

    /// `metrics_token: TOKEN` (literal, or `${VAR}`).
    pub fn metrics_token(mut self, token: &str) -> Config {
        self.metrics_token = Some(token.into());
        self
    }

    /// `watchdog: { stale_after: DURATION }`.
    pub fn watchdog_stale_after(mut self, duration: &str) -> Config {
        self.watchdog_stale_after = Some(duration.into());
        self
    }

    /// `templates: DIR`.
    pub fn templates(mut self, dir: &str) -> Config {
        self.templates = Some(dir.into());
        self
    }

    /// The `smtp:` section.
    pub fn smtp(mut self, smtp: Smtp) -> Config {
        self.smtp = Some(smtp);
        self
    }

    /// The top-level `retry:` section (every destination's default).
    pub fn retry(mut self, retry: Retry) -> Config {
        self.retry = Some(retry);
        self
    }

    /// A webhook destination signed with [`SECRET`]; `f` sets its other keys.
    pub fn webhook(mut self, name: &str, url: &str, f: impl FnOnce(Webhook) -> Webhook) -> Config {
        let hook = f(Webhook {
            url: url.into(),
            secret: SECRET.into(),
            timeout: None,
            concurrency: None,
            retry: None,
            allow_private: false,
        });
        self.destinations
            .push((name.into(), Destination::Webhook(hook)));
        self
    }

    /// A chat destination of `kind` (`slack`, `teams`, `discord`, `google_chat`) rendered with
    /// the shipped `lead-chat` template; `f` sets its other keys.
    pub fn chat(
        mut self,
        name: &str,
        kind: &str,
        url: &str,
        f: impl FnOnce(Chat) -> Chat,
    ) -> Config {
        let chat = f(Chat {
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
        };
        self.destinations
            .push((name.into(), Destination::Email(email)));
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
        if self.listen {
            y.line(0, "listen", "127.0.0.1:0");
        }
        if let Some(token) = &self.metrics_token {
            y.line(0, "metrics_token", token);
        }
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
        if let Some(dir) = &self.templates {
            y.line(0, "templates", dir);
        }
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
        y.text
    }
}

/// The `clinicea:` section.
#[derive(Debug, Clone)]
pub struct Clinicea {
    base_url: String,
    api_key: String,
    auth: Option<String>,
    login: Option<(String, String)>,
    start_from: Option<String>,
    poll_interval: Option<String>,
    overlap: Option<String>,
    timeout: Option<String>,
    page_delay: Option<String>,
    baseline_enabled: Option<bool>,
    allow_private: bool,
}

impl Clinicea {
    /// The API at `base_url` with this key, every other key at its default.
    pub fn new(base_url: &str, api_key: &str) -> Clinicea {
        Clinicea {
            base_url: base_url.into(),
            api_key: api_key.into(),
            auth: None,
            login: None,
            start_from: None,
            poll_interval: None,
            overlap: None,
            timeout: None,
            page_delay: None,
            baseline_enabled: None,
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

    /// `api_key: KEY` (literal, or `${VAR}`).
    pub fn api_key(mut self, key: &str) -> Clinicea {
        self.api_key = key.into();
        self
    }

    /// `auth: MODE` (`header`, `api_key_header`, `query`, `login`).
    pub fn auth(mut self, mode: &str) -> Clinicea {
        self.auth = Some(mode.into());
        self
    }

    /// `auth: login` with these staff credentials.
    pub fn login(mut self, username: &str, password: &str) -> Clinicea {
        self.auth = Some("login".into());
        self.login = Some((username.into(), password.into()));
        self
    }

    /// `start_from: TIME` (`now` or RFC 3339).
    pub fn start_from(mut self, time: &str) -> Clinicea {
        self.start_from = Some(time.into());
        self
    }

    /// No `start_from:` key: the default, the first start.
    pub fn without_start_from(mut self) -> Clinicea {
        self.start_from = None;
        self
    }

    /// `poll_interval: DURATION`.
    pub fn poll_interval(mut self, d: &str) -> Clinicea {
        self.poll_interval = Some(d.into());
        self
    }

    /// `overlap: DURATION`.
    pub fn overlap(mut self, d: &str) -> Clinicea {
        self.overlap = Some(d.into());
        self
    }

    /// `timeout: DURATION` (per API request).
    pub fn timeout(mut self, d: &str) -> Clinicea {
        self.timeout = Some(d.into());
        self
    }

    /// `page_delay: DURATION` between page requests.
    pub fn page_delay(mut self, d: &str) -> Clinicea {
        self.page_delay = Some(d.into());
        self
    }

    /// `baseline: { enabled: false }`: the first start sends what a backfill finds.
    pub fn baseline_off(mut self) -> Clinicea {
        self.baseline_enabled = Some(false);
        self
    }

    /// `allow_private: true`.
    pub fn allow_private(mut self) -> Clinicea {
        self.allow_private = true;
        self
    }

    fn write(&self, y: &mut Yaml) {
        y.key(0, "clinicea");
        y.line(1, "base_url", &self.base_url);
        y.line(1, "api_key", &self.api_key);
        if let Some(auth) = &self.auth {
            y.line(1, "auth", auth);
        }
        if let Some((user, password)) = &self.login {
            y.key(1, "login");
            y.line(2, "username", user);
            y.line(2, "password", password);
        }
        if let Some(t) = &self.start_from {
            y.line(1, "start_from", t);
        }
        if let Some(d) = &self.poll_interval {
            y.line(1, "poll_interval", d);
        }
        if let Some(d) = &self.overlap {
            y.line(1, "overlap", d);
        }
        if let Some(d) = &self.timeout {
            y.line(1, "timeout", d);
        }
        if let Some(d) = &self.page_delay {
            y.line(1, "page_delay", d);
        }
        if let Some(enabled) = self.baseline_enabled {
            y.key(1, "baseline");
            y.raw(2, "enabled", &enabled.to_string());
        }
        if self.allow_private {
            y.raw(1, "allow_private", "true");
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

    /// `id_field: FIELD`.
    pub fn id_field(mut self, field: &str) -> Resource {
        self.id_field = Some(field.into());
        self
    }

    /// `since_param: NAME`.
    pub fn since_param(mut self, name: &str) -> Resource {
        self.since_param = Some(name.into());
        self
    }

    /// `since_format: STRFTIME`.
    pub fn since_format(mut self, format: &str) -> Resource {
        self.since_format = Some(format.into());
        self
    }

    /// No `since_format:` key (the default).
    pub fn without_since_format(mut self) -> Resource {
        self.since_format = None;
        self
    }

    /// `page_param: NAME`.
    pub fn page_param(mut self, name: &str) -> Resource {
        self.page_param = Some(name.into());
        self
    }

    /// `first_page: N`.
    pub fn first_page(mut self, n: u32) -> Resource {
        self.first_page = Some(n);
        self
    }

    /// `page_size: N`.
    pub fn page_size(mut self, n: u32) -> Resource {
        self.page_size = Some(n);
        self
    }

    /// `page_size_param: NAME`.
    pub fn page_size_param(mut self, name: &str) -> Resource {
        self.page_size_param = Some(name.into());
        self
    }

    /// `status_field: FIELD`.
    pub fn status_field(mut self, field: &str) -> Resource {
        self.status_field = Some(field.into());
        self
    }

    fn write(&self, y: &mut Yaml) {
        y.key(1, &self.name);
        y.line(2, "path", &self.path);
        if let Some(f) = &self.id_field {
            y.line(2, "id_field", f);
        }
        if let Some(p) = &self.since_param {
            y.line(2, "since_param", p);
        }
        if let Some(f) = &self.since_format {
            y.line(2, "since_format", f);
        }
        if let Some(p) = &self.page_param {
            y.line(2, "page_param", p);
        }
        if let Some(n) = self.first_page {
            y.raw(2, "first_page", &n.to_string());
        }
        if let Some(n) = self.page_size {
            y.raw(2, "page_size", &n.to_string());
        }
        if let Some(p) = &self.page_size_param {
            y.line(2, "page_size_param", p);
        }
        if let Some(f) = &self.status_field {
            y.line(2, "status_field", f);
        }
    }
}

/// The `store:` section.
#[derive(Debug, Clone)]
pub struct StoreSection {
    path: String,
    journal_retention: Option<String>,
    dead_letter_retention: Option<String>,
}

impl Default for StoreSection {
    /// `path: ./data` (below the config's folder, so inside the test's directory).
    fn default() -> StoreSection {
        StoreSection::at("./data")
    }
}

impl StoreSection {
    /// A store at `path`.
    pub fn at(path: &str) -> StoreSection {
        StoreSection {
            path: path.into(),
            journal_retention: None,
            dead_letter_retention: None,
        }
    }

    /// `journal_retention: DURATION`.
    pub fn journal_retention(mut self, d: &str) -> StoreSection {
        self.journal_retention = Some(d.into());
        self
    }

    /// `dead_letter_retention: DURATION`.
    pub fn dead_letter_retention(mut self, d: &str) -> StoreSection {
        self.dead_letter_retention = Some(d.into());
        self
    }

    fn write(&self, y: &mut Yaml) {
        y.key(0, "store");
        y.line(1, "path", &self.path);
        if let Some(d) = &self.journal_retention {
            y.line(1, "journal_retention", d);
        }
        if let Some(d) = &self.dead_letter_retention {
            y.line(1, "dead_letter_retention", d);
        }
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

    /// `port: N`.
    pub fn port(mut self, port: u16) -> Smtp {
        self.port = Some(port);
        self
    }

    /// `tls: MODE` (`none`, `starttls`, ...).
    pub fn tls(mut self, mode: &str) -> Smtp {
        self.tls = Some(mode.into());
        self
    }

    /// `from: ADDRESS`.
    pub fn from(mut self, address: &str) -> Smtp {
        self.from = Some(address.into());
        self
    }

    /// `timeout: DURATION`.
    pub fn timeout(mut self, d: &str) -> Smtp {
        self.timeout = Some(d.into());
        self
    }

    /// `username: NAME`.
    pub fn username(mut self, name: &str) -> Smtp {
        self.username = Some(name.into());
        self
    }

    /// `password: SECRET` (literal, or `${VAR}`).
    pub fn password(mut self, password: &str) -> Smtp {
        self.password = Some(password.into());
        self
    }

    /// `ca_file: PATH`.
    pub fn ca_file(mut self, path: &str) -> Smtp {
        self.ca_file = Some(path.into());
        self
    }

    /// `allow_cleartext: true`.
    pub fn allow_cleartext(mut self) -> Smtp {
        self.allow_cleartext = true;
        self
    }

    /// `allow_private: true`.
    pub fn allow_private(mut self) -> Smtp {
        self.allow_private = true;
        self
    }

    fn write(&self, y: &mut Yaml) {
        y.key(0, "smtp");
        y.line(1, "host", &self.host);
        if let Some(port) = self.port {
            y.raw(1, "port", &port.to_string());
        }
        if let Some(tls) = &self.tls {
            y.line(1, "tls", tls);
        }
        if let Some(user) = &self.username {
            y.line(1, "username", user);
        }
        if let Some(password) = &self.password {
            y.line(1, "password", password);
        }
        if let Some(ca) = &self.ca_file {
            y.line(1, "ca_file", ca);
        }
        if self.allow_cleartext {
            y.raw(1, "allow_cleartext", "true");
        }
        if self.allow_private {
            y.raw(1, "allow_private", "true");
        }
        if let Some(from) = &self.from {
            y.line(1, "from", from);
        }
        if let Some(d) = &self.timeout {
            y.line(1, "timeout", d);
        }
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
    secret: String,
    timeout: Option<String>,
    concurrency: Option<u32>,
    retry: Option<Retry>,
    allow_private: bool,
}

impl Webhook {
    /// `secret: SECRET` instead of [`SECRET`] (literal, or `${VAR}`).
    pub fn secret(mut self, secret: &str) -> Webhook {
        self.secret = secret.into();
        self
    }

    /// `timeout: DURATION`.
    pub fn timeout(mut self, d: &str) -> Webhook {
        self.timeout = Some(d.into());
        self
    }

    /// `concurrency: N`.
    pub fn concurrency(mut self, n: u32) -> Webhook {
        self.concurrency = Some(n);
        self
    }

    /// The destination's own `retry:`.
    pub fn retry(mut self, retry: Retry) -> Webhook {
        self.retry = Some(retry);
        self
    }

    /// `allow_private: true`.
    pub fn allow_private(mut self) -> Webhook {
        self.allow_private = true;
        self
    }

    fn write(&self, y: &mut Yaml) {
        y.line(2, "type", "webhook");
        y.line(2, "url", &self.url);
        y.line(2, "secret", &self.secret);
        if let Some(d) = &self.timeout {
            y.line(2, "timeout", d);
        }
        if let Some(n) = self.concurrency {
            y.raw(2, "concurrency", &n.to_string());
        }
        if let Some(r) = &self.retry {
            r.write(y, 2);
        }
        if self.allow_private {
            y.raw(2, "allow_private", "true");
        }
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

impl Chat {
    /// `timeout: DURATION`.
    pub fn timeout(mut self, d: &str) -> Chat {
        self.timeout = Some(d.into());
        self
    }

    /// `allow_private: true`.
    pub fn allow_private(mut self) -> Chat {
        self.allow_private = true;
        self
    }

    fn write(&self, y: &mut Yaml) {
        y.line(2, "type", &self.kind);
        y.line(2, "url", &self.url);
        y.line(2, "template", &self.template);
        if let Some(d) = &self.timeout {
            y.line(2, "timeout", d);
        }
        if self.allow_private {
            y.raw(2, "allow_private", "true");
        }
    }
}

/// An email destination (see [`Config::email`]).
#[derive(Debug, Clone)]
struct Email {
    to: Vec<String>,
    subject: String,
    template: String,
}

impl Email {
    fn write(&self, y: &mut Yaml) {
        y.line(2, "type", "email");
        y.raw(2, "to", &flow(&self.to));
        y.line(2, "subject", &self.subject);
        y.line(2, "template", &self.template);
    }
}

/// One routing rule of `rules:`.
#[derive(Debug, Clone)]
pub struct Rule {
    name: String,
    resource: Option<String>,
    on: Vec<String>,
    changed_to: Option<(String, String)>,
    notify: Vec<String>,
}

impl Rule {
    /// A rule for every change of every resource, to `notify`.
    pub fn new(name: &str, notify: &[&str]) -> Rule {
        Rule {
            name: name.into(),
            resource: None,
            on: Vec::new(),
            changed_to: None,
            notify: notify.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// `resource: NAME`.
    pub fn resource(mut self, resource: &str) -> Rule {
        self.resource = Some(resource.into());
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
        let _ = writeln!(y.text, "  - name: {}", scalar(&self.name));
        if let Some(r) = &self.resource {
            y.line(2, "resource", r);
        }
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
    text: String,
}

impl Yaml {
    /// `key:` opening a nested block.
    fn key(&mut self, depth: usize, key: &str) {
        let _ = writeln!(self.text, "{:width$}{key}:", "", width = depth * 2);
    }

    /// `key: value` with a string value, quoted when plain YAML would read it otherwise.
    fn line(&mut self, depth: usize, key: &str, value: &str) {
        self.raw(depth, key, &scalar(value));
    }

    /// `key: value` with the value written as it is (numbers, booleans, flow lists).
    fn raw(&mut self, depth: usize, key: &str, value: &str) {
        let _ = writeln!(self.text, "{:width$}{key}: {value}", "", width = depth * 2);
    }
}

/// A string as a YAML scalar: plain where YAML reads it back as the same string, else
/// double-quoted (a JSON string is a valid YAML double-quoted scalar).
fn scalar(s: &str) -> String {
    if plain_is_safe(s) {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("a string serializes")
    }
}

/// A flow sequence of strings: `[a, b]`.
fn flow(items: &[String]) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|s| {
            if s.contains([',', '[', ']', '{', '}']) {
                serde_json::to_string(s).expect("a string serializes")
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
