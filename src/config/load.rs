//! The one compile step of the config file: [`load()`] reads it, parses it ([`raw::parse`]),
//! substitutes `${VAR}` ([`vars::substitute`]) and validates every section into the runtime types
//! the rest of the program uses ([`Config`]), so a bad config fails at start and never at 3 a.m.
//!
//! Every problem is collected, not only the first, each with its line and key path: the
//! `clinicea:` section, resources, store, listen address and metrics token, `smtp:` (its `from`
//! checked once, here), the retry schedules and every destination (URLs and their egress rules,
//! secrets, headers, recipients, subjects, template names). What other stages compile (the rules'
//! conditions, the template registry) is handed on as parsed ([`Config::rules`]) or as typed
//! references ([`InlineTemplate`], [`TemplateFile`]); `daemon::settings` runs those compiles and
//! reports their problems in the same list.

use crate::config::base::{
    defaults, Base, Clinic, Clinicea, Login, Resource, SecretString, StartFrom, StoreBackend,
    StoreSettings, DEFAULT_CLINIC_CONCURRENCY, DEFAULT_FLEET_CONCURRENCY, DEFAULT_LOGIN_PATH,
    MAX_CONCURRENT_REQUESTS, MAX_POLL_INTERVAL, MAX_WAIT, MIN_METRICS_TOKEN_LEN,
    MIN_TRIGGER_TOKEN_LEN,
};
use crate::config::destination::{
    check_url, AmqpTarget, ChatKind, Destination, FieldFilter, InlineTemplate, NatsAuth,
    NatsTarget, Shape, Target, TemplateFile, TemplatePart, WebhookTarget,
    DEFAULT_BROKER_CONCURRENCY, DEFAULT_BROKER_TIMEOUT, DEFAULT_EMAIL_CONCURRENCY,
    DEFAULT_HTTP_TIMEOUT, DEFAULT_WEBHOOK_CONCURRENCY,
};
use crate::config::placeholder;
use crate::config::problem::{line_of, ConfigError, Problem};
use crate::config::raw::{
    self, parse_duration, AuthMode, Dur, RawBaseline, RawClinicea, RawConfig, RawDestination,
    RawRetry, RawSmtp, RawStore, RuleSpec, Text,
};
use crate::config::retry::{RetryPolicy, DEFAULT_JITTER};
use crate::config::secret::Secret;
use crate::config::smtp::{self, SmtpSettings};
use crate::config::{valid_name, vars};
use crate::net::egress;
use crate::net::egress::is_loopback_url;
use crate::net::mail::validate_address;
use serde_saphyr::Spanned;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The shortest poll interval: faster is a busy loop against the clinic's API.
pub(crate) const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A config file, validated.
#[derive(Debug)]
pub struct Config {
    /// Clinicea, resources, store, listen address.
    pub(crate) base: Base,
    /// The SMTP server, when `smtp:` is there and valid.
    pub(crate) smtp: Option<SmtpSettings>,
    /// The destinations without problems, in name order.
    pub(crate) destinations: Vec<Destination>,
    /// Every name under `destinations:`, those with problems too, so a rule naming one is not
    /// also told the destination does not exist.
    pub(crate) destination_names: Vec<String>,
    /// Every inline template of every destination (those with problems too, so `check` reports
    /// all of their problems at once), in file order.
    pub(crate) inline_templates: Vec<InlineTemplate>,
    /// Every template file a destination names, likewise.
    pub(crate) template_files: Vec<TemplateFile>,
    /// The rules as written, for `route::rules::compile`.
    pub(crate) rules: Vec<Spanned<RuleSpec>>,
    /// `alerts:`, when written and valid.
    pub(crate) alerts: Option<super::alerts::Alerts>,
}

/// The process environment as a map, for [`load()`].
pub(crate) fn env_vars() -> HashMap<String, String> {
    std::env::vars().collect()
}

/// Reads, parses and validates a config file; `vars` feeds `${VAR}`.
pub fn load(file: &Path, vars: &HashMap<String, String>) -> Result<Config, ConfigError> {
    checked(file, validate(parse_file(file, vars)?, file))
}

/// Parses and validates config text as if read from `file` (relative paths resolve against its
/// folder).
pub fn load_str(
    text: &str,
    file: &Path,
    vars: &HashMap<String, String>,
) -> Result<Config, ConfigError> {
    checked(file, validate(parse_text(text, file, vars)?, file))
}

/// The config, or every problem found in it.
fn checked(file: &Path, (config, problems): (Config, Vec<Problem>)) -> Result<Config, ConfigError> {
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::new(file, problems))
    }
}

/// A parsed config, `${VAR}` substituted where it could be, and the strings it could not
/// substitute (unset variables), each a problem at its line and key. [`validate`] goes on with
/// the rest, so `check` reports every problem of the file in one run.
pub(crate) struct Parsed {
    /// The config as written, substituted.
    raw: RawConfig,
    /// The strings left unsubstituted.
    unset: Vec<Problem>,
}

/// Reads and parses a config file, `${VAR}` substituted from `vars`. A file that cannot be read
/// or parsed stops here: nothing after it could be judged. Unset variables do not: they are
/// problems that [`validate`] reports with its own.
pub(crate) fn parse_file(
    file: &Path,
    vars: &HashMap<String, String>,
) -> Result<Parsed, ConfigError> {
    let fail = |message: String| ConfigError::new(file, vec![Problem::at(None, "config", message)]);
    let bytes = std::fs::read(file).map_err(|e| fail(format!("cannot read the file: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        fail(format!(
            "the file is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    parse_text(&text, file, vars)
}

/// [`parse_file`] for text already read.
pub(crate) fn parse_text(
    text: &str,
    file: &Path,
    vars: &HashMap<String, String>,
) -> Result<Parsed, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::new(
            file,
            vec![Problem::at(None, "config", "the file is empty")],
        ));
    }
    let mut raw = raw::parse(text).map_err(|p| ConfigError::new(file, vec![p]))?;
    let unset = vars::substitute(&mut raw, text, vars);
    Ok(Parsed { raw, unset })
}

/// Whether `problem` is only the echo of an unset variable: a value left as `${VAR}` fails its
/// own check too (not a URL, not a duration), at the same line or key, and saying so twice
/// would hide the one thing to fix.
fn echoes_unset(problem: &Problem, unset: &[Problem]) -> bool {
    unset.iter().any(|u| {
        (u.line.is_some() && u.line == problem.line)
            || problem.key == u.key
            || problem.key.starts_with(&format!("{}.", u.key))
            || problem.key.starts_with(&format!("{}[", u.key))
    })
}

/// Validates a parsed config read from `file`: the runtime config, built as far as it goes, and
/// every problem found (none when it is valid).
pub(crate) fn validate(parsed: Parsed, file: &Path) -> (Config, Vec<Problem>) {
    let Parsed { raw, unset } = parsed;
    let mut problems = Vec::new();
    let base = base(&raw, file, &mut problems);
    secrets_are_not_placeholders(&raw, &mut problems);
    let smtp_from = raw.smtp.as_ref().map(|s| s.value.from.to_string());
    let smtp = raw
        .smtp
        .as_ref()
        .and_then(|s| smtp(s, &base_dir(file), &mut problems));
    let default_retry = match &raw.retry {
        Some(r) => retry(&r.value, line_of(r), "retry", &mut problems),
        None => RetryPolicy::default(),
    };
    let mut config = Config {
        base,
        smtp,
        destinations: Vec::new(),
        destination_names: raw.destinations.keys().cloned().collect(),
        inline_templates: Vec::new(),
        template_files: Vec::new(),
        rules: Vec::new(),
        alerts: None,
    };
    for (name, spanned) in &raw.destinations {
        let mut found = Vec::new();
        let d = destination(
            name,
            spanned,
            &base_dir(file),
            &default_retry,
            smtp_from.as_deref(),
            &mut config,
            &mut found,
        );
        match d {
            Some(d) if found.is_empty() => config.destinations.push(d),
            _ => problems.extend(found),
        }
    }
    config.rules = raw.rules;
    config.alerts = super::alerts::validate(
        raw.alerts.as_ref(),
        &config.destination_names,
        &mut problems,
    );
    // A default `clinicea:` key is checked once per clinic that inherits it: say it once.
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| seen.insert((p.line, p.key.clone(), p.message.clone())));
    problems.retain(|p| !echoes_unset(p, &unset));
    problems.extend(unset);
    (config, problems)
}

/// The `templates:` folder, resolved; `None` (and a problem saying how to get the shipped
/// templates to edit) when it is not there. A config copied from the example into a folder of
/// its own has none, and the shipped templates, built into the binary, need none.
fn templates_folder(t: &Text, base_dir: &Path, problems: &mut Vec<Problem>) -> Option<PathBuf> {
    // `./templates` under the config's folder reads better without its `./`.
    let dir: PathBuf = resolve_path(base_dir, t)
        .components()
        .filter(|c| *c != std::path::Component::CurDir)
        .collect();
    if dir.is_dir() {
        return Some(dir);
    }
    let what = if dir.exists() {
        "is not a folder"
    } else {
        "does not exist"
    };
    let shown = if dir.is_relative() {
        format!("./{}", dir.display())
    } else {
        dir.display().to_string()
    };
    problems.push(Problem::at(
        t.line(),
        "templates",
        format!(
            "the folder {shown} {what}. Remove `templates:` to use the shipped templates (built \
             into the binary), or write them there to edit: clinicea-notifier templates {shown}"
        ),
    ));
    None
}

/// The folder relative paths in `file` resolve against.
fn base_dir(file: &Path) -> PathBuf {
    file.parent().map(Path::to_path_buf).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Scalars
// ---------------------------------------------------------------------------------------------

/// Reads a duration, if one is written; a bad one is a problem at its own line (else `line`)
/// and `key`.
fn duration(
    d: Option<&Dur>,
    line: Option<u64>,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<Duration> {
    let text = d?.text();
    parse_duration(text)
        .map_err(|e| problems.push(Problem::at(text.line().or(line), key, e)))
        .ok()
}

/// [`duration`], with the default when none is written (or it is bad: the problem is reported).
fn duration_or(
    d: Option<&Dur>,
    default: Duration,
    line: Option<u64>,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Duration {
    duration(d, line, key, problems).unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// The base: clinicea, resources, store, listen
// ---------------------------------------------------------------------------------------------

/// The shortest lease: renewals come every third of it, and a database round trip must fit.
const MIN_LEASE: Duration = Duration::from_secs(2);
/// The longest lease: a dead replica's clinics wait this long for another.
const MAX_LEASE: Duration = Duration::from_secs(600);

/// The `store:` section's backend, with its keys checked against it.
fn store_backend(raw: &RawStore, problems: &mut Vec<Problem>) -> StoreBackend {
    let backend = raw.backend.as_deref().unwrap_or("sled");
    match backend {
        "sled" => {
            for (set, key) in [(raw.url.is_some(), "url"), (raw.lease.is_some(), "lease")] {
                if set {
                    problems.push(Problem::at(
                        None,
                        format!("store.{key}"),
                        "is for `backend: postgres`; the sled store keeps its state in `path`",
                    ));
                }
            }
            StoreBackend::Sled
        }
        "postgres" => {
            if raw.path.is_some() {
                problems.push(Problem::at(
                    None,
                    "store.path",
                    "is for `backend: sled`; a PostgreSQL store is named by `url`",
                ));
            }
            let url = match raw.url.as_deref().map(str::trim) {
                None | Some("") => {
                    problems.push(Problem::at(
                        None,
                        "store.url",
                        "is required with `backend: postgres` (postgres://user@host:5432/db, e.g. `${DATABASE_URL}`)",
                    ));
                    String::new()
                }
                Some(u) if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) => {
                    problems.push(Problem::at(
                        None,
                        "store.url",
                        "must start with postgres:// or postgresql://",
                    ));
                    u.to_string()
                }
                Some(u) => u.to_string(),
            };
            let lease = duration_or(
                raw.lease.as_ref(),
                defaults::LEASE,
                None,
                "store.lease",
                problems,
            );
            if !(MIN_LEASE..=MAX_LEASE).contains(&lease) {
                problems.push(Problem::at(
                    None,
                    "store.lease",
                    format!(
                        "must be between {}s and {}s",
                        MIN_LEASE.as_secs(),
                        MAX_LEASE.as_secs()
                    ),
                ));
            }
            StoreBackend::Postgres {
                url: SecretString::new(url),
                lease,
            }
        }
        other => {
            problems.push(Problem::at(
                None,
                "store.backend",
                format!("{other:?} is not a store: `sled` (the default) or `postgres`"),
            ));
            StoreBackend::Sled
        }
    }
}

/// Where one clinic's settings come from: its own entry under `clinics:` (when there is one) over
/// the `clinicea:` section, key by key. A key is reported where it is written: at
/// `clinics.NAME.KEY` when the clinic sets it, at `clinicea.KEY` when it inherits it.
struct Layers<'a> {
    /// The clinic's name and its entry, with the entry's line.
    own: Option<(&'a str, &'a RawClinicea, Option<u64>)>,
    /// The `clinicea:` section and its line.
    defaults: Option<(&'a RawClinicea, Option<u64>)>,
}

impl<'a> Layers<'a> {
    /// The value of one key, the key path it is reported at and the nearest line: the clinic's
    /// own value first, then the default. Without a value anywhere, the path and line of where
    /// it would be written (the clinic's entry if there is one).
    fn pick<T>(
        &self,
        field: &str,
        get: impl Fn(&'a RawClinicea) -> Option<&'a T>,
    ) -> (Option<&'a T>, String, Option<u64>) {
        if let Some((name, own, line)) = self.own {
            if let Some(v) = get(own) {
                return (Some(v), format!("clinics.{name}.{field}"), line);
            }
        }
        if let Some((d, line)) = self.defaults {
            if let Some(v) = get(d) {
                return (Some(v), format!("clinicea.{field}"), line);
            }
        }
        match self.own {
            Some((name, _, line)) => (None, format!("clinics.{name}.{field}"), line),
            None => (
                None,
                format!("clinicea.{field}"),
                self.defaults.and_then(|d| d.1),
            ),
        }
    }
}

/// One clinic's connection and polling settings, from its layers; `problems` collects every error.
fn clinicea(l: &Layers<'_>, problems: &mut Vec<Problem>) -> Clinicea {
    let (insecure, _, _) = l.pick("allow_insecure_http", |c| c.allow_insecure_http.as_ref());
    let allow_insecure_http = insecure.copied().unwrap_or(false);
    let (private, _, _) = l.pick("allow_private", |c| c.allow_private.as_ref());
    let allow_private = private.copied().unwrap_or(false);
    let (url_text, url_key, url_line) = l.pick("base_url", |c| c.base_url.as_ref());
    let url_line = url_text.and_then(|t| t.line()).or(url_line);
    let base_url = match url_text.map(|t| url::Url::parse(t.trim_end_matches('/'))) {
        None => {
            problems.push(Problem::at(
                url_line,
                url_key.clone(),
                "is missing: the Clinicea API's address, e.g. https://api.clinicea.com",
            ));
            None
        }
        Some(Ok(u)) if u.scheme() == "https" => Some(u),
        Some(Ok(u)) if u.scheme() == "http" && (is_loopback_url(&u) || allow_insecure_http) => {
            Some(u)
        }
        Some(Ok(u)) if u.scheme() == "http" => {
            problems.push(Problem::at(
                url_line,
                url_key.clone(),
                "plain http:// is only allowed to loopback; use https:// (or set allow_insecure_http: true for a sandbox on another host)",
            ));
            Some(u)
        }
        Some(Ok(_)) => {
            problems.push(Problem::at(
                url_line,
                url_key.clone(),
                "must be an http(s) URL",
            ));
            None
        }
        Some(Err(e)) => {
            problems.push(Problem::at(
                url_line,
                url_key.clone(),
                format!("not a URL: {e}"),
            ));
            None
        }
    };
    let (auth, auth_key, auth_line) = l.pick("auth", |c| c.auth.as_ref());
    let auth = auth.copied().unwrap_or_default();
    let (raw_login, login_key, login_line) = l.pick("login", |c| c.login.as_ref());
    let login = match (auth, raw_login) {
        (AuthMode::Login, Some(lg)) => Some(Login {
            username: lg.username.to_string(),
            password: SecretString::new(lg.password.as_str()),
            path: lg
                .path
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_else(|| DEFAULT_LOGIN_PATH.to_string()),
        }),
        (AuthMode::Login, None) => {
            problems.push(Problem::at(
                auth_line,
                login_key.clone(),
                "auth: login needs login: { username, password }",
            ));
            None
        }
        (_, Some(_)) => {
            problems.push(Problem::at(
                login_line,
                login_key.clone(),
                format!("login: is only used with auth: login (see {auth_key})"),
            ));
            None
        }
        (_, None) => None,
    };
    let (key_text, key_key, key_line) = l.pick("api_key", |c| c.api_key.as_ref());
    match key_text {
        None => problems.push(Problem::at(
            key_line,
            key_key,
            "is missing: the clinic's Clinicea API key (e.g. api_key: ${CLINICEA_API_KEY})",
        )),
        Some(k) if k.trim().is_empty() => {
            problems.push(Problem::at(k.line().or(key_line), key_key, "is empty"))
        }
        Some(k) => check_placeholder(k, k.line().or(key_line), &key_key, problems),
    }
    if let Some(lg) = raw_login {
        check_placeholder(
            &lg.password,
            login_line,
            &format!("{login_key}.password"),
            problems,
        );
    }
    if let Some(u) = &base_url {
        if let Err(e) = crate::net::egress::Policy::clinicea(allow_private).check_url(u) {
            problems.push(Problem::at(url_line, url_key, e.reason));
        }
    }
    let (start, start_key, start_line) = l.pick("start_from", |c| c.start_from.as_ref());
    let start_from = match start.map(|t| t.trim()) {
        None | Some("now") => StartFrom::Now,
        Some(s) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => StartFrom::At(t.with_timezone(&chrono::Utc)),
            Err(e) => {
                problems.push(Problem::at(
                    start_line,
                    start_key,
                    format!("{s:?} is neither `now` nor an RFC 3339 time such as 2026-11-01T00:00:00Z: {e}"),
                ));
                StartFrom::Now
            }
        },
    };
    let (raw_baseline, baseline_key, baseline_line) = l.pick("baseline", |c| c.baseline.as_ref());
    let baseline = match raw_baseline {
        Some(RawBaseline {
            enabled: Some(false),
            since: Some(_),
        }) => {
            problems.push(Problem::at(
                baseline_line,
                format!("{baseline_key}.since"),
                "is set, but the baseline is turned off (enabled: false)",
            ));
            None
        }
        Some(RawBaseline {
            enabled: Some(false),
            ..
        }) => None,
        other => {
            let s = other
                .and_then(|b| b.since.as_deref())
                .unwrap_or(defaults::BASELINE_SINCE)
                .trim();
            match chrono::DateTime::parse_from_rfc3339(s) {
                Ok(t) => Some(t.with_timezone(&chrono::Utc)),
                Err(e) => {
                    problems.push(Problem::at(
                        baseline_line,
                        format!("{baseline_key}.since"),
                        format!("{s:?} is not an RFC 3339 time such as 2000-01-01T00:00:00Z: {e}"),
                    ));
                    None
                }
            }
        }
    };
    let dur = |field: &str, get: fn(&RawClinicea) -> Option<&Dur>, problems: &mut Vec<Problem>| {
        let (d, key, line) = l.pick(field, get);
        (duration(d, line, &key, problems), key, line)
    };
    let (poll, poll_key, poll_line) = dur("poll_interval", |c| c.poll_interval.as_ref(), problems);
    let poll_interval = poll.unwrap_or(defaults::POLL_INTERVAL);
    if poll_interval < MIN_POLL_INTERVAL {
        problems.push(Problem::at(poll_line, &poll_key, "must be at least 100ms"));
    }
    check_at_most(
        poll_interval,
        MAX_POLL_INTERVAL,
        "1d",
        poll_line,
        &poll_key,
        problems,
    );
    // Adaptive polling's floor: at most the ceiling it adapts under, written at the same layer
    // or inherited (a clinic's own `poll_interval: 10s` under a `clinicea.poll_interval_min: 30s`
    // is a contradiction the user should see, not one silently resolved).
    let (poll_min, min_key, min_line) = dur(
        "poll_interval_min",
        |c| c.poll_interval_min.as_ref(),
        problems,
    );
    if let Some(m) = poll_min {
        if m < MIN_POLL_INTERVAL {
            problems.push(Problem::at(min_line, &min_key, "must be at least 100ms"));
        } else if m > poll_interval {
            problems.push(Problem::at(
                min_line,
                &min_key,
                format!("must be at most poll_interval ({poll_interval:?}, {poll_key})"),
            ));
        }
    }
    let (token_text, token_key, token_line) = l.pick("trigger_token", |c| c.trigger_token.as_ref());
    let trigger_token = token_text.map(|t| {
        let line = t.line().or(token_line);
        trigger_token(t.trim(), line, &token_key, problems);
        SecretString::new(t.trim())
    });
    let (overlap, _, _) = dur("overlap", |c| c.overlap.as_ref(), problems);
    let (timeout, timeout_key, timeout_line) = dur("timeout", |c| c.timeout.as_ref(), problems);
    let (page_delay, delay_key, delay_line) =
        dur("page_delay", |c| c.page_delay.as_ref(), problems);
    for (d, k, line) in [
        (timeout, timeout_key, timeout_line),
        (page_delay, delay_key, delay_line),
    ] {
        if let Some(d) = d {
            check_at_most(d, MAX_WAIT, "1h", line, &k, problems);
        }
    }
    let tz = |field: &str, get: fn(&RawClinicea) -> Option<&Text>, problems: &mut Vec<Problem>| {
        let (t, key, line) = l.pick(field, get);
        parse_tz(t, &key, t.and_then(|t| t.line()).or(line), problems)
    };
    let timezone = tz("timezone", |c| c.timezone.as_ref(), problems);
    let since_timezone = tz("since_timezone", |c| c.since_timezone.as_ref(), problems);
    let (limit, limit_key, limit_line) = l.pick("max_concurrent_requests", |c| {
        c.max_concurrent_requests.as_ref()
    });
    let max_concurrent_requests = limit.copied().unwrap_or(DEFAULT_CLINIC_CONCURRENCY);
    if !(1..=MAX_CONCURRENT_REQUESTS).contains(&max_concurrent_requests) {
        problems.push(Problem::at(
            limit_line,
            limit_key,
            format!("must be between 1 and {MAX_CONCURRENT_REQUESTS}"),
        ));
    }
    Clinicea {
        base_url: base_url
            .unwrap_or_else(|| url::Url::parse("http://127.0.0.1/").expect("static URL")),
        api_key: SecretString::new(key_text.map_or("", |k| k.as_str())),
        auth,
        login,
        overlap: overlap.unwrap_or(defaults::OVERLAP),
        start_from,
        timezone,
        since_timezone,
        timeout: timeout.unwrap_or(defaults::API_TIMEOUT),
        page_delay: page_delay.unwrap_or(Duration::ZERO),
        allow_private,
        baseline,
        poll_interval,
        poll_interval_min: poll_min.map(|m| m.clamp(MIN_POLL_INTERVAL, poll_interval)),
        trigger_token,
        max_concurrent_requests: max_concurrent_requests.clamp(1, MAX_CONCURRENT_REQUESTS),
    }
}

/// Checks a `trigger_token`: long enough to resist guessing, and made of URL-safe characters
/// only, since Clinicea's callback can carry it only in the URL (path or query), where `/`, `+`,
/// `=` or `%` would be split or decoded differently along the way. The message never shows it.
fn trigger_token(t: &str, line: Option<u64>, key: &str, problems: &mut Vec<Problem>) {
    const MAKE: &str = "make one with `openssl rand -hex 32`";
    if t.len() < MIN_TRIGGER_TOKEN_LEN {
        problems.push(Problem::at(
            line,
            key,
            format!("is shorter than {MIN_TRIGGER_TOKEN_LEN} characters; {MAKE}"),
        ));
    } else if !t
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    {
        problems.push(Problem::at(
            line,
            key,
            format!("may hold only letters, digits and - _ . ~ (it travels in a URL); {MAKE}"),
        ));
    } else {
        check_placeholder(t, line, key, problems);
    }
}

/// The top-level resources, their intervals inherited from `poll_interval` (a clinic's, or the
/// `clinicea:` default when `clinic` is `None`); `problems` collects every error, reported once
/// (for the top-level resources, not again for each clinic).
fn resources(
    raw: &RawConfig,
    (poll_interval, poll_interval_min): (Duration, Option<Duration>),
    problems: &mut Vec<Problem>,
) -> Vec<Resource> {
    let mut resources = Vec::new();
    for (name, spanned) in &raw.resources {
        let r = &spanned.value;
        let line = line_of(spanned);
        let key = |k: &str| format!("resources.{name}.{k}");
        check_name("resources", "a resource key", name, line, problems);
        if !r.path.starts_with('/') {
            problems.push(Problem::at(line, key("path"), "must start with /"));
        }
        let since_format = r
            .since_format
            .as_ref()
            .map_or(defaults::SINCE_FORMAT.to_string(), |t| t.to_string());
        if !valid_strftime(&since_format) {
            problems.push(Problem::at(
                line,
                key("since_format"),
                format!("{since_format:?} is not a valid chrono format"),
            ));
        }
        let page_size = r.page_size.unwrap_or(defaults::PAGE_SIZE);
        if page_size == 0 {
            problems.push(Problem::at(line, key("page_size"), "must be at least 1"));
        }
        let own_poll = duration(
            r.poll_interval.as_ref(),
            line,
            &key("poll_interval"),
            problems,
        );
        let poll = own_poll.unwrap_or(poll_interval);
        // An inherited interval is reported where it is written.
        if own_poll.is_some() {
            if poll < MIN_POLL_INTERVAL {
                problems.push(Problem::at(
                    line,
                    key("poll_interval"),
                    "must be at least 100ms",
                ));
            }
            check_at_most(
                poll,
                MAX_POLL_INTERVAL,
                "1d",
                line,
                &key("poll_interval"),
                problems,
            );
        }
        let own_min = duration(
            r.poll_interval_min.as_ref(),
            line,
            &key("poll_interval_min"),
            problems,
        );
        if let Some(m) = own_min {
            if m < MIN_POLL_INTERVAL {
                problems.push(Problem::at(
                    line,
                    key("poll_interval_min"),
                    "must be at least 100ms",
                ));
            } else if m > poll {
                let from = if own_poll.is_some() {
                    key("poll_interval")
                } else {
                    "clinicea.poll_interval".to_string()
                };
                problems.push(Problem::at(
                    line,
                    key("poll_interval_min"),
                    format!("must be at most poll_interval ({poll:?}, {from})"),
                ));
            }
        }
        resources.push(Resource {
            name: name.clone(),
            path: r.path.to_string(),
            since_param: r
                .since_param
                .as_ref()
                .map_or(defaults::SINCE_PARAM.into(), |t| t.to_string()),
            since_format,
            page_param: r
                .page_param
                .as_ref()
                .map_or(defaults::PAGE_PARAM.into(), |t| t.to_string()),
            first_page: r.first_page.unwrap_or(defaults::FIRST_PAGE),
            page_size: page_size.max(1),
            page_size_param: r.page_size_param.as_ref().map(|t| t.to_string()),
            id_field: r
                .id_field
                .as_ref()
                .map_or(defaults::ID_FIELD.into(), |t| t.to_string()),
            status_field: r
                .status_field
                .as_ref()
                .map_or(defaults::STATUS_FIELD.into(), |t| t.to_string()),
            poll_interval: poll,
            own_poll_interval: own_poll.is_some(),
            // The `clinicea:` floor when the resource has none; each clinic's copy takes its own.
            poll_interval_min: own_min
                .or(poll_interval_min)
                .unwrap_or(poll)
                .clamp(MIN_POLL_INTERVAL, poll.max(MIN_POLL_INTERVAL)),
            own_poll_interval_min: own_min.is_some(),
            params: r
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
        });
    }
    resources
}

/// Every clinic: the entries of `clinics:`, or `clinicea:` as the one clinic `default`.
fn clinics(raw: &RawConfig, resources: &[Resource], problems: &mut Vec<Problem>) -> Vec<Clinic> {
    let defaults = raw.clinicea.as_ref().map(|c| (&c.value, line_of(c)));
    let Some(entries) = &raw.clinics else {
        if defaults.is_none() {
            problems.push(Problem::at(
                None,
                "clinicea",
                "is missing: say how to reach Clinicea (base_url, api_key), or list clinics under clinics:",
            ));
        }
        let clinicea = clinicea(
            &Layers {
                own: None,
                defaults,
            },
            problems,
        );
        return vec![Clinic {
            name: crate::model::DEFAULT_CLINIC.to_string(),
            resources: clinic_resources(resources, &clinicea),
            clinicea,
        }];
    };
    if entries.value.is_empty() {
        problems.push(Problem::at(
            line_of(entries),
            "clinics",
            "is empty; name at least one clinic (or leave clinics: out for one clinic)",
        ));
    }
    let mut out = Vec::new();
    for (name, spanned) in &entries.value {
        let line = line_of(spanned);
        check_name("clinics", "a clinic name", name, line, problems);
        let own = &spanned.value;
        let layers = Layers {
            own: Some((name.as_str(), own, line)),
            defaults,
        };
        let clinicea = clinicea(&layers, problems);
        let mut polled = clinic_resources(resources, &clinicea);
        let (subset, subset_key, subset_line) = layers.pick("resources", |c| c.resources.as_ref());
        if let Some(subset) = subset {
            let line = line_of(subset).or(subset_line);
            if subset.value.is_empty() {
                problems.push(Problem::at(
                    line,
                    &subset_key,
                    "is empty; leave it out to poll every resource",
                ));
            }
            for r in &subset.value {
                if !resources.iter().any(|x| x.name == r.as_str()) {
                    let known: Vec<&str> = resources.iter().map(|x| x.name.as_str()).collect();
                    problems.push(Problem::at(
                        r.line().or(line),
                        &subset_key,
                        format!(
                            "resource `{}` is not defined under `resources:` ({})",
                            r.as_str(),
                            known.join(", ")
                        ),
                    ));
                }
            }
            polled.retain(|x| subset.value.iter().any(|r| r.as_str() == x.name));
        }
        out.push(Clinic {
            name: name.clone(),
            clinicea,
            resources: polled,
        });
    }
    out
}

/// The resources a clinic polls, every inherited interval its own. An inherited
/// `poll_interval_min` longer than a resource's own (shorter) `poll_interval` is cut to it: the
/// clinic-wide floor cannot make a faster resource slower, and a resource that wants to adapt
/// says so with its own `poll_interval_min`.
fn clinic_resources(resources: &[Resource], clinic: &Clinicea) -> Vec<Resource> {
    resources
        .iter()
        .map(|r| {
            let poll_interval = if r.own_poll_interval {
                r.poll_interval
            } else {
                clinic.poll_interval
            };
            let min = if r.own_poll_interval_min {
                r.poll_interval_min
            } else {
                clinic.poll_interval_min.unwrap_or(poll_interval)
            };
            Resource {
                poll_interval,
                poll_interval_min: min.min(poll_interval),
                ..r.clone()
            }
        })
        .collect()
}

/// The sections [`Base`] holds; `problems` collects every error.
fn base(raw: &RawConfig, file: &Path, problems: &mut Vec<Problem>) -> Base {
    let base_dir = base_dir(file);
    if raw.resources.is_empty() {
        problems.push(Problem::at(
            None,
            "resources",
            "no resources to poll; add at least one (e.g. leads: { path: /api/v1/leads })",
        ));
    }
    // The top-level resources take the `clinicea:` interval, each clinic's copy its own; the
    // clinics report any problem with either.
    let (default_poll, default_zone) = {
        let d = raw.clinicea.as_ref().map(|c| (&c.value, line_of(c)));
        let mut quiet = Vec::new();
        let l = Layers {
            own: None,
            defaults: d,
        };
        let (p, key, line) = l.pick("poll_interval", |c| c.poll_interval.as_ref());
        let (m, mkey, mline) = l.pick("poll_interval_min", |c| c.poll_interval_min.as_ref());
        let (z, zkey, zline) = l.pick("timezone", |c| c.timezone.as_ref());
        (
            (
                duration(p, line, &key, &mut quiet).unwrap_or(defaults::POLL_INTERVAL),
                duration(m, mline, &mkey, &mut quiet),
            ),
            parse_tz(z, &zkey, zline, &mut quiet),
        )
    };
    let resources = resources(raw, default_poll, problems);
    let clinics = clinics(raw, &resources, problems);
    let fleet_limit = raw
        .fleet
        .as_ref()
        .and_then(|f| f.max_concurrent_requests)
        .unwrap_or(DEFAULT_FLEET_CONCURRENCY);
    if !(1..=MAX_CONCURRENT_REQUESTS).contains(&fleet_limit) {
        problems.push(Problem::at(
            None,
            "fleet.max_concurrent_requests",
            format!("must be between 1 and {MAX_CONCURRENT_REQUESTS}"),
        ));
    }

    let store = StoreSettings {
        backend: store_backend(&raw.store, problems),
        path: resolve_path(
            &base_dir,
            raw.store.path.as_deref().unwrap_or(defaults::STORE_PATH),
        ),
        cache_bytes: raw
            .store
            .cache_mb
            .map_or(defaults::STORE_CACHE_BYTES, |mb| mb * 1024 * 1024),
        journal_retention: duration_or(
            raw.store.journal_retention.as_ref(),
            defaults::JOURNAL_RETENTION,
            None,
            "store.journal_retention",
            problems,
        ),
        dead_letter_retention: duration_or(
            raw.store.dead_letter_retention.as_ref(),
            defaults::DEAD_LETTER_RETENTION,
            None,
            "store.dead_letter_retention",
            problems,
        ),
    };
    let templates_dir = raw
        .templates
        .as_ref()
        .and_then(|t| templates_folder(t, &base_dir, problems));
    let listen_s = raw.listen.as_deref().unwrap_or(defaults::LISTEN);
    let listen = listen_s.parse().unwrap_or_else(|_| {
        problems.push(Problem::at(
            None,
            "listen",
            format!("{listen_s:?} is not an address such as 127.0.0.1:9187"),
        ));
        std::net::SocketAddr::from(([127, 0, 0, 1], 9187))
    });
    let metrics_token = raw.metrics_token.as_ref().map(|t| {
        if t.trim().len() < MIN_METRICS_TOKEN_LEN {
            problems.push(Problem::at(
                None,
                "metrics_token",
                format!("is shorter than {MIN_METRICS_TOKEN_LEN} characters; make one with `head -c 32 /dev/urandom | base64`"),
            ));
        }
        SecretString::new(t.trim())
    });
    let console_token = raw
        .console
        .as_ref()
        .and_then(|c| c.value.token.as_ref())
        .map(|t| {
            if t.trim().len() < MIN_METRICS_TOKEN_LEN {
                problems.push(Problem::at(
                    t.line(),
                    "console.token",
                    format!("is shorter than {MIN_METRICS_TOKEN_LEN} characters; make one with `head -c 32 /dev/urandom | base64`"),
                ));
            }
            SecretString::new(t.trim())
        });
    Base {
        file: file.to_path_buf(),
        clinics,
        resources,
        max_concurrent_requests: fleet_limit.clamp(1, MAX_CONCURRENT_REQUESTS),
        timezone: default_zone,
        store,
        templates_dir,
        listen,
        stale_after: raw.watchdog.as_ref().and_then(|w| {
            duration(
                w.stale_after.as_ref(),
                None,
                "watchdog.stale_after",
                problems,
            )
        }),
        metrics_token,
        console_token,
    }
}

/// Adds a problem at `key` when `d` is longer than `max` (`max_text` writes it as the config
/// would, e.g. `1h`): for keys with a bound smaller than [`raw::MAX_DURATION`].
fn check_at_most(
    d: Duration,
    max: Duration,
    max_text: &str,
    line: Option<u64>,
    key: &str,
    problems: &mut Vec<Problem>,
) {
    if d > max {
        problems.push(Problem::at(
            line,
            key,
            format!("must be at most {max_text}"),
        ));
    }
}

/// Checks a chrono format string.
fn valid_strftime(f: &str) -> bool {
    use chrono::format::{Item, StrftimeItems};
    !f.is_empty() && StrftimeItems::new(f).all(|i| !matches!(i, Item::Error))
}

/// An IANA zone (UTC when none is written, or a bad one, which is a problem).
fn parse_tz(
    s: Option<&Text>,
    key: &str,
    line: Option<u64>,
    problems: &mut Vec<Problem>,
) -> chrono_tz::Tz {
    match s {
        None => chrono_tz::UTC,
        Some(t) => t.parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
            problems.push(Problem::at(
                line,
                key,
                format!(
                    "unknown time zone {:?} (use an IANA name such as Asia/Karachi)",
                    t.as_str()
                ),
            ));
            chrono_tz::UTC
        }),
    }
}

/// Resolves a path from the config against the folder that holds the config file.
fn resolve_path(base_dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// Adds a problem when a name under `section` cannot be part of a store key or metric label.
fn check_name(
    section: &str,
    what: &str,
    name: &str,
    line: Option<u64>,
    problems: &mut Vec<Problem>,
) {
    if !valid_name(name) {
        problems.push(Problem::at(
            line,
            format!("{section}.{name}"),
            format!("{what} may use only letters, digits, '-', '_' and '.'"),
        ));
    }
}

/// Adds a problem when a secret-bearing value is an example's placeholder.
fn check_placeholder(value: &str, line: Option<u64>, key: &str, problems: &mut Vec<Problem>) {
    if let Some(why) = placeholder::placeholder(value) {
        problems.push(Problem::at(line, key, why));
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets, SMTP, retries
// ---------------------------------------------------------------------------------------------

/// Example placeholders in the secret-bearing keys outside `destinations:` (destinations check
/// their own).
fn secrets_are_not_placeholders(raw: &RawConfig, problems: &mut Vec<Problem>) {
    // The API keys and login passwords are checked with each clinic.
    if let Some(t) = &raw.metrics_token {
        check_placeholder(t, None, "metrics_token", problems);
    }
    if let Some(t) = raw.console.as_ref().and_then(|c| c.value.token.as_ref()) {
        check_placeholder(t, t.line(), "console.token", problems);
    }
    if let Some(p) = raw.smtp.as_ref().and_then(|s| s.value.password.as_ref()) {
        check_placeholder(
            p,
            raw.smtp.as_ref().and_then(line_of),
            "smtp.password",
            problems,
        );
    }
}

/// The `smtp:` section. `smtp.from` is checked here, once; destinations that inherit it do not
/// check it again. Problems are at the section's line.
fn smtp(
    s: &Spanned<RawSmtp>,
    base_dir: &Path,
    problems: &mut Vec<Problem>,
) -> Option<SmtpSettings> {
    let line = line_of(s);
    let raw = &s.value;
    let before = problems.len();
    let mut at = |p: Problem| {
        problems.push(Problem {
            line: p.line.or(line),
            ..p
        })
    };
    if let Err(e) = egress::Policy::smtp(raw.allow_private).check_host(&raw.host) {
        at(Problem::at(None, "smtp.host", e.reason));
    }
    if let Err(e) = validate_address(&raw.from) {
        at(Problem::at(None, "smtp.from", e));
    }
    let extra_root_cert_pem = match &raw.ca_file {
        None => None,
        Some(f) => {
            let path = base_dir.join(f.as_str());
            std::fs::read(&path)
                .map_err(|e| {
                    at(Problem::at(
                        None,
                        "smtp.ca_file",
                        format!("cannot read {}: {e}", path.display()),
                    ))
                })
                .ok()
        }
    };
    // The transport refuses these (see `deliver::email::Mailer::new`); say so in `check`, not
    // at start.
    let credentials = raw.username.is_some() || raw.password.is_some();
    if let Err(p) = smtp::check_credentials(raw.username.is_some(), raw.password.is_some()) {
        at(p);
    }
    if let Err(p) = smtp::check_cleartext(raw.tls, &raw.host, credentials, raw.allow_cleartext) {
        at(p);
    }
    let mut timeout_problems = Vec::new();
    let timeout = duration_or(
        raw.timeout.as_ref(),
        smtp::DEFAULT_TIMEOUT,
        None,
        "smtp.timeout",
        &mut timeout_problems,
    );
    timeout_problems.into_iter().for_each(&mut at);
    if timeout > MAX_WAIT {
        at(Problem::at(None, "smtp.timeout", "must be at most 1h"));
    }
    (problems.len() == before).then(|| SmtpSettings {
        host: raw.host.to_string(),
        port: raw
            .port
            .unwrap_or_else(|| SmtpSettings::default_port(raw.tls)),
        tls: raw.tls,
        username: raw.username.as_ref().map(|t| t.to_string()),
        password: raw.password.as_ref().map(|t| t.to_string()),
        timeout,
        extra_root_cert_pem,
        allow_private: raw.allow_private,
    })
}

/// A `retry:` section (the default schedule at `retry`, a destination's own at
/// `destinations.NAME.retry`); the default policy stands in for a bad one.
fn retry(r: &RawRetry, line: Option<u64>, key: &str, problems: &mut Vec<Problem>) -> RetryPolicy {
    let mut schedule = Vec::with_capacity(r.schedule.len());
    for (i, d) in r.schedule.iter().enumerate() {
        if let Some(d) = duration(Some(d), line, &format!("{key}.schedule[{i}]"), problems) {
            schedule.push(d);
        }
    }
    let jitter = r.jitter.unwrap_or(DEFAULT_JITTER);
    if !(0.0..=1.0).contains(&jitter) {
        problems.push(Problem::at(
            line,
            key,
            format!("jitter must be between 0 and 1, not {jitter}"),
        ));
        return RetryPolicy::default();
    }
    RetryPolicy { schedule, jitter }
}

// ---------------------------------------------------------------------------------------------
// Destinations
// ---------------------------------------------------------------------------------------------

/// Validates one `destinations:` entry into `problems`; its templates are added to `config`'s
/// lists whether or not it has problems. `None` when it cannot be built at all.
fn destination(
    name: &str,
    spanned: &Spanned<RawDestination>,
    base_dir: &Path,
    default_retry: &RetryPolicy,
    smtp_from: Option<&str>,
    config: &mut Config,
    problems: &mut Vec<Problem>,
) -> Option<Destination> {
    let raw = &spanned.value;
    let line = line_of(spanned);
    let key = |k: &str| format!("destinations.{name}.{k}");
    check_name("destinations", "a destination name", name, line, problems);
    let parse_url =
        |u: &str, insecure: bool, private: bool, problems: &mut Vec<Problem>| -> Option<url::Url> {
            check_placeholder(u, line, &key("url"), problems);
            match url::Url::parse(u) {
                Ok(url) => match check_url(&url, insecure).and_then(|()| {
                    egress::Policy::destination(name, private)
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
    let (own_retry, allow_private) = match raw {
        RawDestination::Webhook(w) => (w.retry.as_ref(), w.allow_private),
        RawDestination::Email(e) => (e.retry.as_ref(), false),
        RawDestination::Slack(c)
        | RawDestination::Teams(c)
        | RawDestination::Discord(c)
        | RawDestination::GoogleChat(c) => (c.retry.as_ref(), c.allow_private),
        RawDestination::Nats(n) => (n.retry.as_ref(), n.allow_private),
        RawDestination::Amqp(a) => (a.retry.as_ref(), a.allow_private),
    };
    let retry = match own_retry {
        Some(r) => retry(r, line, &key("retry"), problems),
        None => default_retry.clone(),
    };
    let mut concurrency = 1;
    let mut shape = Shape::default();
    let target = match raw {
        RawDestination::Webhook(w) => {
            shape = shape_of(
                name,
                line,
                ShapeKeys {
                    fields: w.fields.as_deref(),
                    exclude_fields: w.exclude_fields.as_deref(),
                    include_previous: w.include_previous,
                    body_template: w.body_template.as_ref(),
                },
                config,
                problems,
            );
            let url = parse_url(&w.url, w.allow_insecure_http, w.allow_private, problems);
            let mut secrets = Vec::new();
            for (i, s) in w.secret.as_slice().iter().enumerate() {
                let skey = format!("{}[{i}]", key("secret"));
                if let Some(why) = placeholder::placeholder(s) {
                    problems.push(Problem::at(line, skey, why));
                    continue;
                }
                if placeholder::is_published_webhook_secret(s)
                    && !url.as_ref().is_some_and(is_loopback_url)
                {
                    problems.push(Problem::at(
                        line,
                        skey.clone(),
                        placeholder::published_secret_message(),
                    ));
                }
                match Secret::parse(s) {
                    Ok(sec) => secrets.push(sec),
                    Err(e) => problems.push(Problem::at(line, skey, e.to_string())),
                }
            }
            let mut headers = Vec::new();
            for (h, v) in &w.headers {
                let hkey = format!("{}.{h}", key("headers"));
                check_placeholder(v, line, &hkey, problems);
                match (
                    reqwest::header::HeaderName::from_bytes(h.as_bytes()),
                    reqwest::header::HeaderValue::from_str(v),
                ) {
                    (Ok(hn), Ok(hv)) => headers.push((hn, hv)),
                    _ => problems.push(Problem::at(line, hkey, "not a valid HTTP header")),
                }
            }
            concurrency = w.concurrency.unwrap_or(DEFAULT_WEBHOOK_CONCURRENCY).max(1);
            let timeout = duration_or(
                w.timeout.as_ref(),
                DEFAULT_HTTP_TIMEOUT,
                line,
                &key("timeout"),
                problems,
            );
            url.map(|url| {
                Target::Webhook(WebhookTarget {
                    name: name.to_string(),
                    url,
                    secrets,
                    headers,
                    timeout,
                })
            })
        }
        RawDestination::Email(e) => {
            concurrency = e.concurrency.unwrap_or(DEFAULT_EMAIL_CONCURRENCY).max(1);
            if smtp_from.is_none() {
                problems.push(Problem::at(
                    line,
                    format!("destinations.{name}"),
                    "email destinations need an smtp: section",
                ));
            }
            // Its own `from:` is checked here; an inherited `smtp.from` was checked at its key.
            let from = match (&e.from, smtp_from) {
                (Some(own), _) => {
                    if let Err(err) = validate_address(own) {
                        problems.push(Problem::at(line, key("from"), err));
                    }
                    own.to_string()
                }
                (None, Some(inherited)) => inherited.to_string(),
                (None, None) => {
                    problems.push(Problem::at(
                        line,
                        key("from"),
                        "an email destination needs an smtp: section (or its own from:)",
                    ));
                    String::new()
                }
            };
            let recipients = e.to.as_slice();
            if recipients.is_empty() {
                problems.push(Problem::at(line, key("to"), "needs at least one recipient"));
            }
            let mut to = Vec::with_capacity(recipients.len());
            for (i, r) in recipients.iter().enumerate() {
                let rkey = format!("{}[{i}]", key("to"));
                if !r.contains("{{") {
                    if let Err(err) = validate_address(r) {
                        problems.push(Problem::at(line, rkey.clone(), err));
                    }
                }
                to.push(InlineTemplate {
                    name: format!("destination:{name}:to:{i}"),
                    source: r.to_string(),
                    key: rkey,
                    line,
                });
            }
            let subject = InlineTemplate {
                name: format!("destination:{name}:subject"),
                source: e.subject.to_string(),
                key: key("subject"),
                line,
            };
            let template = TemplateFile {
                base: e.template.to_string(),
                part: TemplatePart::EmailBody,
                key: key("template"),
                line,
            };
            config.inline_templates.extend(to.iter().cloned());
            config.inline_templates.push(subject.clone());
            config.template_files.push(template.clone());
            Some(Target::Email {
                to,
                subject,
                template,
                from,
                reply_to: e.reply_to.as_ref().map(|r| r.to_string()),
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
            let template = TemplateFile {
                base: c.template.to_string(),
                part: TemplatePart::ChatText,
                key: key("template"),
                line,
            };
            config.template_files.push(template.clone());
            let timeout = duration_or(
                c.timeout.as_ref(),
                DEFAULT_HTTP_TIMEOUT,
                line,
                &key("timeout"),
                problems,
            );
            parse_url(&c.url, c.allow_insecure_http, c.allow_private, problems).map(|url| {
                Target::Chat {
                    kind,
                    url,
                    template,
                    timeout,
                }
            })
        }
        RawDestination::Nats(n) => {
            shape = shape_of(
                name,
                line,
                ShapeKeys {
                    fields: n.fields.as_deref(),
                    exclude_fields: n.exclude_fields.as_deref(),
                    include_previous: n.include_previous,
                    body_template: n.body_template.as_ref(),
                },
                config,
                problems,
            );
            concurrency = n.concurrency.unwrap_or(DEFAULT_BROKER_CONCURRENCY).max(1);
            let timeout = duration_or(
                n.timeout.as_ref(),
                DEFAULT_BROKER_TIMEOUT,
                line,
                &key("timeout"),
                problems,
            );
            let auth = match (&n.creds_file, &n.user, &n.password) {
                (None, None, None) => NatsAuth::None,
                (Some(f), None, None) => NatsAuth::CredsFile(resolve_path(base_dir, f)),
                (None, Some(user), Some(password)) => {
                    check_placeholder(password, line, &key("password"), problems);
                    NatsAuth::UserPassword {
                        user: user.to_string(),
                        password: password.to_string(),
                    }
                }
                (None, _, _) => {
                    problems.push(Problem::at(
                        line,
                        key("user"),
                        "user and password go together",
                    ));
                    NatsAuth::None
                }
                (Some(_), _, _) => {
                    problems.push(Problem::at(
                        line,
                        key("creds_file"),
                        "use creds_file or user/password, not both",
                    ));
                    NatsAuth::None
                }
            };
            let subject = InlineTemplate {
                name: format!("destination:{name}:subject"),
                source: n.subject.to_string(),
                key: key("subject"),
                line,
            };
            config.inline_templates.push(subject.clone());
            let url = broker_url(
                name,
                &n.url,
                BrokerUrl {
                    plain: "nats",
                    tls: "tls",
                    allow_cleartext: n.allow_cleartext,
                    allow_private: n.allow_private,
                    line,
                },
                problems,
            );
            url.map(|url| {
                Target::Nats(NatsTarget {
                    url,
                    subject,
                    auth,
                    timeout,
                })
            })
        }
        RawDestination::Amqp(a) => {
            shape = shape_of(
                name,
                line,
                ShapeKeys {
                    fields: a.fields.as_deref(),
                    exclude_fields: a.exclude_fields.as_deref(),
                    include_previous: a.include_previous,
                    body_template: a.body_template.as_ref(),
                },
                config,
                problems,
            );
            concurrency = a.concurrency.unwrap_or(DEFAULT_BROKER_CONCURRENCY).max(1);
            let timeout = duration_or(
                a.timeout.as_ref(),
                DEFAULT_BROKER_TIMEOUT,
                line,
                &key("timeout"),
                problems,
            );
            if a.exchange.len() > crate::config::destination::MAX_ROUTING_KEY_BYTES {
                problems.push(Problem::at(
                    line,
                    key("exchange"),
                    "an exchange name has at most 255 bytes",
                ));
            }
            let routing_key = InlineTemplate {
                name: format!("destination:{name}:routing_key"),
                source: a.routing_key.to_string(),
                key: key("routing_key"),
                line,
            };
            config.inline_templates.push(routing_key.clone());
            let url = broker_url(
                name,
                &a.url,
                BrokerUrl {
                    plain: "amqp",
                    tls: "amqps",
                    allow_cleartext: a.allow_cleartext,
                    allow_private: a.allow_private,
                    line,
                },
                problems,
            );
            url.map(|url| {
                Target::Amqp(AmqpTarget {
                    url,
                    exchange: a.exchange.to_string(),
                    routing_key,
                    timeout,
                })
            })
        }
    };
    let digest = digest_of(name, raw, line, config, problems);
    let quiet_hours = crate::config::quiet::raw_of(raw)
        .and_then(|q| crate::config::quiet::compile(q, line, &key("quiet_hours"), problems));
    target.map(|target| Destination {
        name: name.to_string(),
        target,
        retry,
        concurrency,
        allow_private,
        shape,
        digest,
        quiet_hours,
    })
}

/// A destination's digest: validated for email and chat, refused on the others; its templates are
/// added to `config`'s (the digest template must exist, its subject must parse).
fn digest_of(
    name: &str,
    raw: &RawDestination,
    line: Option<u64>,
    config: &mut Config,
    problems: &mut Vec<Problem>,
) -> Option<crate::config::digest::Digest> {
    let (digest, template, email) = match raw {
        RawDestination::Email(e) => (e.digest.as_ref(), e.digest_template.as_ref(), true),
        RawDestination::Slack(c)
        | RawDestination::Teams(c)
        | RawDestination::Discord(c)
        | RawDestination::GoogleChat(c) => (c.digest.as_ref(), c.digest_template.as_ref(), false),
        RawDestination::Webhook(raw::RawWebhook {
            digest,
            digest_template,
            ..
        })
        | RawDestination::Nats(raw::RawNats {
            digest,
            digest_template,
            ..
        })
        | RawDestination::Amqp(raw::RawAmqp {
            digest,
            digest_template,
            ..
        }) => {
            for (k, v) in [
                ("digest", digest.is_some()),
                ("digest_template", digest_template.is_some()),
            ] {
                if v {
                    problems.push(Problem::at(
                        line,
                        format!("destinations.{name}.{k}"),
                        "digests are for email and chat destinations; a webhook, NATS or AMQP \
                         receiver gets each change as it happens (batch on the receiving side)",
                    ));
                }
            }
            return None;
        }
    };
    let Some(raw_digest) = digest else {
        if template.is_some() {
            problems.push(Problem::at(
                line,
                format!("destinations.{name}.digest_template"),
                "needs `digest:` (when the digest goes out)",
            ));
        }
        return None;
    };
    let Some(d) = crate::config::digest::compile(name, raw_digest, template, email, line, problems)
    else {
        // Its other keys are wrong; a missing template is still worth saying at once.
        if let Some(t) = template {
            config
                .template_files
                .push(crate::config::destination::TemplateFile {
                    base: t.to_string(),
                    part: if email {
                        crate::config::destination::TemplatePart::EmailBody
                    } else {
                        crate::config::destination::TemplatePart::ChatText
                    },
                    key: format!("destinations.{name}.digest_template"),
                    line,
                });
        }
        return None;
    };
    config.template_files.push(d.template.clone());
    config.inline_templates.extend(d.subject.iter().cloned());
    Some(d)
}

/// The shaping keys of a webhook, NATS or AMQP destination, as written.
struct ShapeKeys<'a> {
    fields: Option<&'a [Text]>,
    exclude_fields: Option<&'a [Text]>,
    include_previous: Option<bool>,
    body_template: Option<&'a Text>,
}

/// A destination's [`Shape`]; its body template, if any, is added to `config`'s template files.
fn shape_of(
    name: &str,
    line: Option<u64>,
    keys: ShapeKeys<'_>,
    config: &mut Config,
    problems: &mut Vec<Problem>,
) -> Shape {
    let key = |k: &str| format!("destinations.{name}.{k}");
    let names = |list: &[Text], k: &str, problems: &mut Vec<Problem>| -> Vec<String> {
        if list.is_empty() {
            problems.push(Problem::at(line, key(k), "lists no field"));
        }
        list.iter().map(|t| t.to_string()).collect()
    };
    let fields = match (keys.fields, keys.exclude_fields) {
        (None, None) => FieldFilter::All,
        (Some(only), None) => FieldFilter::Only(names(only, "fields", problems)),
        (None, Some(except)) => FieldFilter::Except(names(except, "exclude_fields", problems)),
        (Some(_), Some(_)) => {
            problems.push(Problem::at(
                line,
                key("fields"),
                "use fields or exclude_fields, not both",
            ));
            FieldFilter::All
        }
    };
    let body_template = keys.body_template.map(|t| TemplateFile {
        base: t.to_string(),
        part: TemplatePart::JsonBody,
        key: key("body_template"),
        line,
    });
    if let Some(t) = &body_template {
        config.template_files.push(t.clone());
    }
    Shape {
        fields,
        include_previous: keys.include_previous.unwrap_or(true),
        body_template,
    }
}

/// What a broker URL may be.
struct BrokerUrl {
    /// The scheme without TLS (`nats`, `amqp`).
    plain: &'static str,
    /// The scheme with TLS (`tls`, `amqps`).
    tls: &'static str,
    /// Whether the plain scheme may go to a host other than loopback.
    allow_cleartext: bool,
    /// Whether the broker may be on a private address.
    allow_private: bool,
    /// The destination's line.
    line: Option<u64>,
}

/// A NATS or AMQP URL, checked: its scheme, a host, cleartext only to loopback (unless
/// `allow_cleartext`), and the egress rules. Its userinfo is a password: never echoed.
fn broker_url(
    name: &str,
    u: &str,
    rules: BrokerUrl,
    problems: &mut Vec<Problem>,
) -> Option<url::Url> {
    let key = format!("destinations.{name}.url");
    let line = rules.line;
    check_placeholder(u, line, &key, problems);
    let url = match url::Url::parse(u) {
        Ok(url) => url,
        Err(e) => {
            problems.push(Problem::at(line, key, format!("not a valid URL ({e})")));
            return None;
        }
    };
    let egress_refusal = || {
        egress::Policy::destination(name, rules.allow_private)
            .check_url(&url)
            .err()
            .map(|e| e.reason)
    };
    // Not `is_loopback_url`: these schemes are not special, so their hosts stay text.
    let loopback = egress::is_loopback_host(url.host_str().unwrap_or_default());
    let problem = if url.host_str().is_none_or(str::is_empty) {
        Some("the URL has no host".to_string())
    } else if url.scheme() != rules.tls && url.scheme() != rules.plain {
        Some(format!(
            "unsupported URL scheme `{}`; use {}:// or {}://",
            url.scheme(),
            rules.tls,
            rules.plain
        ))
    } else if let Some(refused) = egress_refusal() {
        Some(refused)
    } else if url.scheme() == rules.plain && !rules.allow_cleartext && !loopback {
        Some(format!(
            "{}:// without TLS is only allowed to loopback hosts; use {}:// or set \
             `allow_cleartext: true`",
            rules.plain, rules.tls
        ))
    } else {
        None
    };
    match problem {
        Some(p) => {
            problems.push(Problem::at(line, key, p));
            None
        }
        None => Some(url),
    }
}

#[cfg(test)]
mod adaptive_and_trigger_tests {
    use super::*;

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        load_str(yaml, Path::new("/tmp/c.yaml"), &HashMap::new())
    }

    const HEAD: &str = "clinicea:\n  base_url: https://api.clinicea.com\n  api_key: k\n";

    #[test]
    fn poll_interval_min_defaults_to_the_interval_and_is_inherited_and_capped_per_resource() {
        let c = load(&format!(
            "{HEAD}  poll_interval: 60s\n  poll_interval_min: 5s\nresources:\n  leads: {{ path: /l }}\n  fast: {{ path: /f, poll_interval: 2s }}\n  own: {{ path: /o, poll_interval_min: 10s }}\n"
        ))
        .unwrap();
        let r = &c.base.clinics[0].resources;
        let get = |n: &str| r.iter().find(|x| x.name == n).unwrap();
        assert_eq!(get("leads").poll_interval_min, Duration::from_secs(5));
        // A clinic-wide floor above a resource's own interval is cut to it.
        assert_eq!(get("fast").poll_interval_min, Duration::from_secs(2));
        assert_eq!(get("own").poll_interval_min, Duration::from_secs(10));
        // Unset: equal to the interval (no adaptation).
        let c = load(&format!("{HEAD}resources:\n  leads: {{ path: /l }}\n")).unwrap();
        let leads = &c.base.clinics[0].resources[0];
        assert_eq!(leads.poll_interval_min, leads.poll_interval);
    }

    #[test]
    fn a_floor_above_its_ceiling_is_an_error_at_its_key() {
        let e = load(&format!(
            "{HEAD}  poll_interval: 30s\n  poll_interval_min: 1m\nresources:\n  leads: {{ path: /l, poll_interval: 10s, poll_interval_min: 20s }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("clinicea.poll_interval_min"), "{e}");
        assert!(e.contains("resources.leads.poll_interval_min"), "{e}");
    }

    #[test]
    fn a_trigger_token_is_per_clinic_and_never_shown() {
        let c = load(&format!(
            "{HEAD}clinics:\n  north:\n    trigger_token: aaaaaaaaaaaaaaaa-1\n  south: {{}}\nresources:\n  leads: {{ path: /l }}\n"
        ))
        .unwrap();
        let by = |n: &str| c.base.clinics.iter().find(|x| x.name == n).unwrap();
        assert_eq!(
            by("north")
                .clinicea
                .trigger_token
                .as_ref()
                .map(|t| t.expose()),
            Some("aaaaaaaaaaaaaaaa-1")
        );
        assert!(by("south").clinicea.trigger_token.is_none());
        assert!(!format!("{:?}", by("north").clinicea).contains("aaaaaaaaaaaaaaaa"));
        let e = load(&format!(
            "{HEAD}  trigger_token: \"bbbbbbbbbbbbbbbb/+\"\nresources:\n  leads: {{ path: /l }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("clinicea.trigger_token") && !e.contains("bbbbbbbb"),
            "{e}"
        );
    }
}
