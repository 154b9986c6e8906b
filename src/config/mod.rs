//! The configuration file: serde structs that mirror the YAML (`Raw*`), and [`load`], which parses
//! them, substitutes `${VAR}` from a map passed in, and validates everything once into the runtime
//! types the rest of the program uses, so a bad config fails at start and never at 3 a.m.
//!
//! Every problem is reported with the file, the line and the key, so `check` can print
//! `rules.yaml:14: rules[new-lead].where[1].matches: invalid regex ...`.

pub mod placeholder;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Problems
// ---------------------------------------------------------------------------------------------

/// One thing wrong with a config: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the config file, when known.
    pub line: Option<u64>,
    /// The dotted key path, e.g. `rules[new-lead].where[1].matches` or `destinations.front-desk.url`.
    pub key: String,
    /// What is wrong, in words a clinic's IT person understands.
    pub message: String,
}

impl Problem {
    /// A problem at a known line.
    pub fn at(line: Option<u64>, key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            line,
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// The line a spanned value was written on.
pub fn line_of<T>(s: &Spanned<T>) -> Option<u64> {
    let line = s.defined.line();
    (line > 0).then_some(line)
}

// ---------------------------------------------------------------------------------------------
// Scalars: `${VAR}` strings and durations
// ---------------------------------------------------------------------------------------------

thread_local! {
    /// The variables `${VAR}` reads while [`parse_raw`] runs on this thread. It is set and cleared
    /// around one parse, so tests pass their own map and never touch the process environment.
    static VARS: RefCell<Option<HashMap<String, String>>> = const { RefCell::new(None) };
}

/// Replaces every `${NAME}` in `s` from `vars`; `$${` writes a literal `${`.
pub fn expand_vars(s: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let name = &tail[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid variable name ${{{name}}}"));
            }
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => return Err(format!("environment variable {name} is not set")),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A string from the config with `${VAR}` already substituted.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Text(pub String);

impl Text {
    /// The substituted string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        if !raw.contains('$') {
            return Ok(Text(raw));
        }
        VARS.with(|vars| match vars.borrow().as_ref() {
            Some(map) => expand_vars(&raw, map).map(Text).map_err(de::Error::custom),
            None => Ok(Text(raw)),
        })
    }
}

/// The longest duration anything accepts, in a config file or on the command line: ten years.
/// Longer is a typo, and would overflow the time arithmetic it feeds (a cutoff `now - age`, a
/// deadline `now + wait`). Keys where less makes sense have their own, smaller bound.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// Parses `30s`, `5m`, `2h`, `1d`, `250ms`, or a combination such as `1h30m`; at most
/// [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
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

/// Adds a problem at `key` when `d` is longer than `max` (`max_text` writes it as the config
/// would, e.g. `1h`): for keys with a bound smaller than [`MAX_DURATION`].
pub fn check_at_most(
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

/// A duration written `30s`, `5m`, `2h`.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Dur(pub Duration);

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = Text::deserialize(d)?;
        parse_duration(&t).map(Dur).map_err(de::Error::custom)
    }
}

/// One string or a list of them (`secret: whsec_..` or `secret: [whsec_a, whsec_b]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(Text),
    /// A list of values.
    Many(Vec<Text>),
}

impl OneOrMany {
    /// The values as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(t) => vec![t.0.clone()],
            OneOrMany::Many(v) => v.iter().map(|t| t.0.clone()).collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The raw file
// ---------------------------------------------------------------------------------------------

/// The whole configuration file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// How to reach Clinicea and how often to poll it.
    pub clinicea: Spanned<RawClinicea>,
    /// The feeds to poll, by resource key.
    #[serde(default)]
    pub resources: BTreeMap<String, Spanned<RawResource>>,
    /// Where the sled store lives.
    #[serde(default)]
    pub store: RawStore,
    /// The folder of template overrides (`NAME.txt.hbs`, `NAME.html.hbs`).
    #[serde(default)]
    pub templates: Option<Text>,
    /// Address for `/metrics`, `/healthz`, `/readyz` while `run` runs.
    #[serde(default)]
    pub listen: Option<Text>,
    /// A bearer token `/metrics` asks for (`Authorization: Bearer TOKEN`); `/healthz` and
    /// `/readyz` stay open. Unset: `/metrics` is open to whoever reaches `listen`.
    #[serde(default)]
    pub metrics_token: Option<Text>,
    /// The SMTP server for email destinations.
    #[serde(default)]
    pub smtp: Option<Spanned<RawSmtp>>,
    /// Where deliveries go, by destination name.
    #[serde(default)]
    pub destinations: BTreeMap<String, Spanned<RawDestination>>,
    /// Which changes go where.
    #[serde(default)]
    pub rules: Vec<Spanned<crate::route::rules::RuleSpec>>,
    /// The default retry schedule.
    #[serde(default)]
    pub retry: Option<Spanned<RawRetry>>,
    /// The watchdog that makes a silent death impossible.
    #[serde(default)]
    pub watchdog: Option<RawWatchdog>,
}

/// How the API key is presented to Clinicea.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
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
pub struct RawLogin {
    /// Staff user name.
    pub username: Text,
    /// Staff password.
    pub password: Text,
    /// Path of the token endpoint (default `/api/v2/login/getTokenByStaffUsernamePwd`).
    #[serde(default)]
    pub path: Option<Text>,
}

/// The `clinicea:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClinicea {
    /// Base URL, e.g. `https://api.clinicea.com`.
    pub base_url: Text,
    /// The API key.
    pub api_key: Text,
    /// How the key is sent.
    #[serde(default)]
    pub auth: AuthMode,
    /// Credentials for `auth: login`.
    #[serde(default)]
    pub login: Option<RawLogin>,
    /// How often each resource is polled (default 60s).
    #[serde(default)]
    pub poll_interval: Option<Dur>,
    /// How far back each poll re-reads (default 2m).
    #[serde(default)]
    pub overlap: Option<Dur>,
    /// `now` or an RFC 3339 time.
    #[serde(default)]
    pub start_from: Option<Text>,
    /// IANA zone for offset-less API timestamps (default UTC).
    #[serde(default)]
    pub timezone: Option<Text>,
    /// The zone the since value is written in when its format has no offset (default UTC).
    #[serde(default)]
    pub since_timezone: Option<Text>,
    /// Per-request timeout (default 30s).
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// Pause between two page requests of one poll, to be gentle with the API (default 0).
    #[serde(default)]
    pub page_delay: Option<Dur>,
    /// Allow a plain http:// base URL to a host other than loopback (a sandbox in another container).
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Allow a base URL on a private address (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7),
    /// e.g. a sandbox in another container. Link-local and metadata addresses are never allowed.
    #[serde(default)]
    pub allow_private: bool,
    /// The silent baseline at a resource's first start (default: on, from 2000-01-01).
    #[serde(default)]
    pub baseline: Option<RawBaseline>,
}

/// The `clinicea.baseline:` section: at a resource's first start, read every existing record
/// once and store it without sending anything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBaseline {
    /// `false` turns the baseline off: records that existed before the first start are unknown,
    /// and the first edit of each is judged `added` (default `true`).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The oldest since the API accepts, RFC 3339 (default `2000-01-01T00:00:00Z`).
    #[serde(default)]
    pub since: Option<Text>,
}

/// One `resources:` entry. Every key has the vendor doc's default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResource {
    /// Path below the base URL.
    pub path: Text,
    /// Name of the since parameter (default `lastSyncTimestamp`).
    #[serde(default)]
    pub since_param: Option<Text>,
    /// chrono format of the since value (default `%Y-%m-%dT%H:%M:%S%:z`).
    #[serde(default)]
    pub since_format: Option<Text>,
    /// Name of the page parameter (default `intPageNo`).
    #[serde(default)]
    pub page_param: Option<Text>,
    /// Number of the first page (default 0).
    #[serde(default)]
    pub first_page: Option<u32>,
    /// Records per full page (default 100); a shorter page ends the sync.
    #[serde(default)]
    pub page_size: Option<u32>,
    /// Name of the page size parameter (default: not sent).
    #[serde(default)]
    pub page_size_param: Option<Text>,
    /// The id field (default `ID`).
    #[serde(default)]
    pub id_field: Option<Text>,
    /// The server's change flag field (default `DataStatusStr`).
    #[serde(default)]
    pub status_field: Option<Text>,
    /// This resource's own poll interval.
    #[serde(default)]
    pub poll_interval: Option<Dur>,
    /// Extra query parameters sent on every request.
    #[serde(default)]
    pub params: BTreeMap<String, Text>,
}

/// The `store:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// The sled directory (default `./data`).
    #[serde(default)]
    pub path: Option<Text>,
    /// sled's page cache in MiB (default 64).
    #[serde(default)]
    pub cache_mb: Option<u64>,
    /// How long the change journal keeps detected changes for inspection (default 7d).
    #[serde(default)]
    pub journal_retention: Option<Dur>,
    /// How long dead letters (full payloads, patient data) are kept before they are deleted
    /// (default 30d).
    #[serde(default)]
    pub dead_letter_retention: Option<Dur>,
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
pub struct RawSmtp {
    /// Host name.
    pub host: Text,
    /// Port (default 587 for starttls, 465 for tls, 25 for none).
    #[serde(default)]
    pub port: Option<u16>,
    /// TLS mode.
    #[serde(default)]
    pub tls: SmtpTls,
    /// User name for AUTH.
    #[serde(default)]
    pub username: Option<Text>,
    /// Password for AUTH.
    #[serde(default)]
    pub password: Option<Text>,
    /// The From address, `Name <addr>` or `addr`.
    pub from: Text,
    /// Per-message timeout (default 30s).
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// A PEM file of extra CA certificates to trust (for a relay with its own CA).
    #[serde(default)]
    pub ca_file: Option<Text>,
    /// Allow an SMTP host on a private address (a relay on the clinic's own network).
    #[serde(default)]
    pub allow_private: bool,
    /// Allow `tls: none` to a host other than loopback. Dangerous: every message, with the patient
    /// data in it, crosses the network in clear. Never allows AUTH without TLS.
    #[serde(default)]
    pub allow_cleartext: bool,
}

/// The `retry:` section, and a destination's own `retry:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Waits between attempts; its length is the number of retries.
    pub schedule: Vec<Dur>,
    /// Relative jitter, 0.0 to 1.0 (default 0.2).
    #[serde(default)]
    pub jitter: Option<f64>,
}

/// The `watchdog:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWatchdog {
    /// A resource with no successful poll for this long is stale (default: three poll intervals).
    #[serde(default)]
    pub stale_after: Option<Dur>,
}

/// One `destinations:` entry, by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RawDestination {
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
}

/// A webhook destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// The receiver's URL.
    pub url: Text,
    /// `whsec_...`; a list signs with each (rotation).
    pub secret: OneOrMany,
    /// Extra headers.
    #[serde(default)]
    pub headers: BTreeMap<String, Text>,
    /// Per-request timeout (default 15s).
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// Allow plain http:// to hosts other than loopback.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Allow a receiver on a private address (10/8, 172.16/12, 192.168/16, 100.64/10,
    /// fc00::/7), checked for literal addresses and for what the host name resolves to.
    #[serde(default)]
    pub allow_private: bool,
    /// Requests in flight at once (default 8).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// This destination's own retry schedule.
    #[serde(default)]
    pub retry: Option<RawRetry>,
}

/// An email destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmail {
    /// Recipients; each is its own delivery. May contain templates.
    pub to: OneOrMany,
    /// Subject template.
    pub subject: Text,
    /// Template name (`NAME.txt.hbs`, optional `NAME.html.hbs`).
    pub template: Text,
    /// Overrides `smtp.from`.
    #[serde(default)]
    pub from: Option<Text>,
    /// Reply-To address.
    #[serde(default)]
    pub reply_to: Option<Text>,
    /// Messages in flight at once (default 2).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// This destination's own retry schedule.
    #[serde(default)]
    pub retry: Option<RawRetry>,
}

/// A chat destination (Slack, Teams, Discord, Google Chat).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChat {
    /// The incoming-webhook URL.
    pub url: Text,
    /// Template name (`NAME.txt.hbs` renders the message text).
    pub template: Text,
    /// Per-request timeout (default 15s).
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// Allow plain http:// to hosts other than loopback.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Allow a receiver on a private address (10/8, 172.16/12, 192.168/16, 100.64/10,
    /// fc00::/7), checked for literal addresses and for what the host name resolves to.
    #[serde(default)]
    pub allow_private: bool,
    /// This destination's own retry schedule.
    #[serde(default)]
    pub retry: Option<RawRetry>,
}

/// Parses the YAML text into raw structs, substituting `${VAR}` from `vars`.
///
/// Errors carry the line and column serde-saphyr reports.
pub fn parse_raw(text: &str, vars: &HashMap<String, String>) -> Result<RawConfig, Problem> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            VARS.with(|v| *v.borrow_mut() = None);
        }
    }
    VARS.with(|v| *v.borrow_mut() = Some(vars.clone()));
    let _reset = Reset;
    serde_saphyr::from_str_with_options::<RawConfig>(text, crate::route::rules::yaml_options()).map_err(
        |e| {
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
pub fn key_path_at_line(text: &str, line: usize) -> String {
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
    fn vars() {
        let vars = HashMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(expand_vars("a${A}b", &vars).unwrap(), "axb");
        assert_eq!(expand_vars("$${A}", &vars).unwrap(), "${A}");
        assert_eq!(expand_vars("cost $5", &vars).unwrap(), "cost $5");
        let err = expand_vars("${MISSING}", &vars).unwrap_err();
        assert!(err.contains("MISSING"), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Validated runtime types
// ---------------------------------------------------------------------------------------------

/// A secret string (API key, password): its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        SecretString(s.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
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
pub enum StartFrom {
    /// Nothing from before the first start is sent.
    Now,
    /// Backfill from this instant.
    At(chrono::DateTime<chrono::Utc>),
}

/// Staff credentials for `auth: login`.
#[derive(Debug, Clone)]
pub struct Login {
    /// Staff user name.
    pub username: String,
    /// Staff password.
    pub password: SecretString,
    /// Path of the token endpoint.
    pub path: String,
}

/// The vendor's login endpoint, seen in public clients.
pub const DEFAULT_LOGIN_PATH: &str = "/api/v2/login/getTokenByStaffUsernamePwd";

/// The validated `clinicea:` section.
#[derive(Debug, Clone)]
pub struct Clinicea {
    /// Base URL without a trailing slash.
    pub base_url: url::Url,
    /// The API key.
    pub api_key: SecretString,
    /// How the key is sent.
    pub auth: AuthMode,
    /// Credentials for `auth: login`.
    pub login: Option<Login>,
    /// Default poll interval.
    pub poll_interval: Duration,
    /// How far back each poll re-reads.
    pub overlap: Duration,
    /// Where the first poll starts.
    pub start_from: StartFrom,
    /// Zone of offset-less API timestamps.
    pub timezone: chrono_tz::Tz,
    /// Zone the since value is written in when its format has no offset.
    pub since_timezone: chrono_tz::Tz,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Pause between two page requests of one poll.
    pub page_delay: Duration,
    /// Whether the API may be on a private address.
    pub allow_private: bool,
    /// The since of the silent baseline at a resource's first start; `None` when it is off.
    pub baseline: Option<chrono::DateTime<chrono::Utc>>,
}

/// A validated resource: every knob resolved to its value.
#[derive(Debug, Clone)]
pub struct Resource {
    /// The resource key, e.g. `leads`.
    pub name: String,
    /// Path below the base URL.
    pub path: String,
    /// Since parameter name.
    pub since_param: String,
    /// chrono format of the since value.
    pub since_format: String,
    /// Page parameter name.
    pub page_param: String,
    /// Number of the first page.
    pub first_page: u32,
    /// Records per full page.
    pub page_size: u32,
    /// Page size parameter name, if it is sent.
    pub page_size_param: Option<String>,
    /// The id field.
    pub id_field: String,
    /// The server's change-flag field.
    pub status_field: String,
    /// How often it is polled.
    pub poll_interval: Duration,
    /// Extra query parameters.
    pub params: Vec<(String, String)>,
}

/// Vendor-doc defaults for a resource.
pub mod defaults {
    use std::time::Duration;
    /// `lastSyncTimestamp`.
    pub const SINCE_PARAM: &str = "lastSyncTimestamp";
    /// ISO 8601 with an offset.
    pub const SINCE_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%:z";
    /// `intPageNo`.
    pub const PAGE_PARAM: &str = "intPageNo";
    /// Pages start at 0 in the vendor doc.
    pub const FIRST_PAGE: u32 = 0;
    /// 100 records a page.
    pub const PAGE_SIZE: u32 = 100;
    /// `ID`.
    pub const ID_FIELD: &str = "ID";
    /// `DataStatusStr`.
    pub const STATUS_FIELD: &str = "DataStatusStr";
    /// Poll every minute.
    pub const POLL_INTERVAL: Duration = Duration::from_secs(60);
    /// Re-read two minutes back, to cover clock skew and records committed late.
    pub const OVERLAP: Duration = Duration::from_secs(120);
    /// Give a slow API half a minute.
    pub const API_TIMEOUT: Duration = Duration::from_secs(30);
    /// `/metrics`, `/healthz`, `/readyz` on loopback.
    pub const LISTEN: &str = "127.0.0.1:9187";
    /// The sled directory.
    pub const STORE_PATH: &str = "./data";
    /// The baseline reads from here: before any clinic's records, and a date the API takes.
    pub const BASELINE_SINCE: &str = "2000-01-01T00:00:00Z";
    /// A week of detected changes stays inspectable.
    pub const JOURNAL_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
    /// A month to look into and re-drive a dead letter; then its patient data goes.
    pub const DEAD_LETTER_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
}

/// The longest poll interval: a feed polled less than once a day is not a notifier.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(86_400);

/// The longest request timeout or pause between requests: a request that waits longer is stuck.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// The validated `store:` section.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The sled directory (absolute, or relative to the working directory if the config had none).
    pub path: std::path::PathBuf,
    /// sled's page cache in bytes.
    pub cache_bytes: u64,
    /// How long the change journal keeps entries.
    pub journal_retention: Duration,
    /// How long dead letters are kept.
    pub dead_letter_retention: Duration,
}

/// A validated config file, minus the parts other modules compile (see [`Config`]).
#[derive(Debug, Clone)]
pub struct Base {
    /// The config file.
    pub file: std::path::PathBuf,
    /// The `clinicea:` section.
    pub clinicea: Clinicea,
    /// The resources, in key order.
    pub resources: Vec<Resource>,
    /// The store.
    pub store: StoreSettings,
    /// The folder of template overrides.
    pub templates_dir: Option<std::path::PathBuf>,
    /// The address of the health and metrics server.
    pub listen: std::net::SocketAddr,
    /// A resource with no successful poll for this long is stale (`None`: three intervals).
    pub stale_after: Option<Duration>,
    /// The bearer token `/metrics` asks for, when set.
    pub metrics_token: Option<SecretString>,
}

/// Whether a URL's host is on this machine: `localhost`, 127.0.0.0/8, `::1` or `::ffff:127.x.y.z`.
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => crate::net::egress::is_loopback_ip(ip.into()),
        Some(url::Host::Ipv6(ip)) => crate::net::egress::is_loopback_ip(ip.into()),
        None => false,
    }
}

/// Adds a problem when a secret-bearing value is an example's placeholder.
pub fn check_placeholder(value: &str, line: Option<u64>, key: &str, problems: &mut Vec<Problem>) {
    if let Some(why) = crate::config::placeholder::placeholder(value) {
        problems.push(Problem::at(line, key, why));
    }
}

/// A resource or destination name: what can safely be part of a store key and a metric label.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Checks a chrono format string.
pub fn valid_strftime(f: &str) -> bool {
    use chrono::format::{Item, StrftimeItems};
    !f.is_empty() && StrftimeItems::new(f).all(|i| !matches!(i, Item::Error))
}

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
pub fn resolve_path(base_dir: &std::path::Path, p: &str) -> std::path::PathBuf {
    let p = std::path::Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// Validates the sections this module owns; `problems` collects every error.
pub fn validate_base(raw: &RawConfig, file: &std::path::Path, problems: &mut Vec<Problem>) -> Base {
    let base_dir = file
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let c = &raw.clinicea.value;
    let cline = line_of(&raw.clinicea);

    let base_url = match url::Url::parse(c.base_url.trim_end_matches('/')) {
        Ok(u) if u.scheme() == "https" => Some(u),
        Ok(u) if u.scheme() == "http" && (is_loopback(&u) || c.allow_insecure_http) => Some(u),
        Ok(u) if u.scheme() == "http" => {
            problems.push(Problem::at(
                cline,
                "clinicea.base_url",
                "plain http:// is only allowed to loopback; use https:// (or set clinicea.allow_insecure_http: true for a sandbox on another host)",
            ));
            Some(u)
        }
        Ok(_) => {
            problems.push(Problem::at(
                cline,
                "clinicea.base_url",
                "must be an http(s) URL",
            ));
            None
        }
        Err(e) => {
            problems.push(Problem::at(
                cline,
                "clinicea.base_url",
                format!("not a URL: {e}"),
            ));
            None
        }
    };
    let login = match (c.auth, &c.login) {
        (AuthMode::Login, Some(l)) => Some(Login {
            username: l.username.0.clone(),
            password: SecretString::new(l.password.0.clone()),
            path: l
                .path
                .as_ref()
                .map(|p| p.0.clone())
                .unwrap_or_else(|| DEFAULT_LOGIN_PATH.to_string()),
        }),
        (AuthMode::Login, None) => {
            problems.push(Problem::at(
                cline,
                "clinicea.login",
                "auth: login needs login: { username, password }",
            ));
            None
        }
        (_, Some(_)) => {
            problems.push(Problem::at(
                cline,
                "clinicea.login",
                "login: is only used with auth: login",
            ));
            None
        }
        (_, None) => None,
    };
    if c.api_key.trim().is_empty() {
        problems.push(Problem::at(cline, "clinicea.api_key", "is empty"));
    }
    if let Some(u) = &base_url {
        if let Err(e) = crate::net::egress::Policy::clinicea(c.allow_private).check_url(u) {
            problems.push(Problem::at(cline, "clinicea.base_url", e.reason));
        }
    }
    let start_from = match c.start_from.as_deref().map(str::trim) {
        None | Some("now") => StartFrom::Now,
        Some(s) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => StartFrom::At(t.with_timezone(&chrono::Utc)),
            Err(e) => {
                problems.push(Problem::at(
                    cline,
                    "clinicea.start_from",
                    format!("{s:?} is neither `now` nor an RFC 3339 time such as 2026-11-01T00:00:00Z: {e}"),
                ));
                StartFrom::Now
            }
        },
    };
    let baseline = match &c.baseline {
        Some(RawBaseline {
            enabled: Some(false),
            since: Some(_),
        }) => {
            problems.push(Problem::at(
                cline,
                "clinicea.baseline.since",
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
                .as_ref()
                .and_then(|b| b.since.as_deref())
                .unwrap_or(defaults::BASELINE_SINCE)
                .trim();
            match chrono::DateTime::parse_from_rfc3339(s) {
                Ok(t) => Some(t.with_timezone(&chrono::Utc)),
                Err(e) => {
                    problems.push(Problem::at(
                        cline,
                        "clinicea.baseline.since",
                        format!("{s:?} is not an RFC 3339 time such as 2000-01-01T00:00:00Z: {e}"),
                    ));
                    None
                }
            }
        }
    };
    let poll_interval = c.poll_interval.map_or(defaults::POLL_INTERVAL, |d| d.0);
    if poll_interval < Duration::from_millis(100) {
        problems.push(Problem::at(
            cline,
            "clinicea.poll_interval",
            "must be at least 100ms",
        ));
    }
    check_at_most(
        poll_interval,
        MAX_POLL_INTERVAL,
        "1d",
        cline,
        "clinicea.poll_interval",
        problems,
    );
    for (d, k) in [
        (c.timeout, "clinicea.timeout"),
        (c.page_delay, "clinicea.page_delay"),
    ] {
        if let Some(d) = d {
            check_at_most(d.0, MAX_WAIT, "1h", cline, k, problems);
        }
    }
    let clinicea = Clinicea {
        base_url: base_url
            .unwrap_or_else(|| url::Url::parse("http://127.0.0.1/").expect("static URL")),
        api_key: SecretString::new(c.api_key.0.clone()),
        auth: c.auth,
        login,
        poll_interval,
        overlap: c.overlap.map_or(defaults::OVERLAP, |d| d.0),
        start_from,
        timezone: parse_tz(c.timezone.as_ref(), "clinicea.timezone", cline, problems),
        since_timezone: parse_tz(
            c.since_timezone.as_ref(),
            "clinicea.since_timezone",
            cline,
            problems,
        ),
        timeout: c.timeout.map_or(defaults::API_TIMEOUT, |d| d.0),
        page_delay: c.page_delay.map_or(Duration::ZERO, |d| d.0),
        allow_private: c.allow_private,
        baseline,
    };

    if raw.resources.is_empty() {
        problems.push(Problem::at(
            None,
            "resources",
            "no resources to poll; add at least one (e.g. leads: { path: /api/v1/leads })",
        ));
    }
    let mut resources = Vec::new();
    for (name, spanned) in &raw.resources {
        let r = &spanned.value;
        let line = line_of(spanned);
        let key = |k: &str| format!("resources.{name}.{k}");
        if !valid_name(name) {
            problems.push(Problem::at(
                line,
                format!("resources.{name}"),
                "a resource key may use only letters, digits, '-', '_' and '.'",
            ));
        }
        if !r.path.starts_with('/') {
            problems.push(Problem::at(line, key("path"), "must start with /"));
        }
        let since_format = r
            .since_format
            .as_ref()
            .map_or(defaults::SINCE_FORMAT.to_string(), |t| t.0.clone());
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
        let poll = r.poll_interval.map_or(poll_interval, |d| d.0);
        if poll < Duration::from_millis(100) {
            problems.push(Problem::at(
                line,
                key("poll_interval"),
                "must be at least 100ms",
            ));
        }
        // An inherited interval is reported at `clinicea.poll_interval`.
        if r.poll_interval.is_some() {
            check_at_most(
                poll,
                MAX_POLL_INTERVAL,
                "1d",
                line,
                &key("poll_interval"),
                problems,
            );
        }
        resources.push(Resource {
            name: name.clone(),
            path: r.path.0.clone(),
            since_param: r
                .since_param
                .as_ref()
                .map_or(defaults::SINCE_PARAM.into(), |t| t.0.clone()),
            since_format,
            page_param: r
                .page_param
                .as_ref()
                .map_or(defaults::PAGE_PARAM.into(), |t| t.0.clone()),
            first_page: r.first_page.unwrap_or(defaults::FIRST_PAGE),
            page_size: page_size.max(1),
            page_size_param: r.page_size_param.as_ref().map(|t| t.0.clone()),
            id_field: r
                .id_field
                .as_ref()
                .map_or(defaults::ID_FIELD.into(), |t| t.0.clone()),
            status_field: r
                .status_field
                .as_ref()
                .map_or(defaults::STATUS_FIELD.into(), |t| t.0.clone()),
            poll_interval: poll,
            params: r
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
        });
    }

    let store = StoreSettings {
        path: resolve_path(
            &base_dir,
            raw.store.path.as_deref().unwrap_or(defaults::STORE_PATH),
        ),
        cache_bytes: raw
            .store
            .cache_mb
            .map_or(crate::outbox::store::DEFAULT_CACHE_BYTES, |mb| {
                mb * 1024 * 1024
            }),
        journal_retention: raw
            .store
            .journal_retention
            .map_or(defaults::JOURNAL_RETENTION, |d| d.0),
        dead_letter_retention: raw
            .store
            .dead_letter_retention
            .map_or(defaults::DEAD_LETTER_RETENTION, |d| d.0),
    };
    let templates_dir = raw.templates.as_ref().map(|t| resolve_path(&base_dir, t));
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
    Base {
        file: file.to_path_buf(),
        clinicea,
        resources,
        store,
        templates_dir,
        listen,
        stale_after: raw
            .watchdog
            .as_ref()
            .and_then(|w| w.stale_after)
            .map(|d| d.0),
        metrics_token,
    }
}

/// The shortest `metrics_token` accepted: a guessable token protects nothing.
pub const MIN_METRICS_TOKEN_LEN: usize = 16;

/// A config that failed to load: the file and every problem found.
#[derive(Debug)]
pub struct ConfigError {
    /// The config file.
    pub file: std::path::PathBuf,
    /// What is wrong, in file order where known.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{} has {} problem{}:",
            self.file.display(),
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            match p.line {
                Some(line) => write!(
                    f,
                    "\n  {}:{}: {}: {}",
                    self.file.display(),
                    line,
                    p.key,
                    p.message
                )?,
                None => write!(f, "\n  {}: {}: {}", self.file.display(), p.key, p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The whole validated configuration.
pub struct Config {
    /// Clinicea, resources, store, listen address.
    pub base: Base,
    /// The file as parsed, for the parts compiled elsewhere.
    pub raw: RawConfig,
}

/// The process environment as a map, for [`load`].
pub fn env_vars() -> HashMap<String, String> {
    std::env::vars().collect()
}

/// Reads, parses and validates a config file; `vars` feeds `${VAR}`.
pub fn load(file: &std::path::Path, vars: &HashMap<String, String>) -> Result<Config, ConfigError> {
    let fail = |problems: Vec<Problem>| ConfigError {
        file: file.to_path_buf(),
        problems,
    };
    let bytes = std::fs::read(file).map_err(|e| {
        fail(vec![Problem::at(
            None,
            "config",
            format!("cannot read the file: {e}"),
        )])
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        fail(vec![Problem::at(
            None,
            "config",
            format!(
                "the file is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )])
    })?;
    load_str(&text, file, vars)
}

/// Parses and validates config text as if read from `file` (relative paths resolve against its folder).
pub fn load_str(
    text: &str,
    file: &std::path::Path,
    vars: &HashMap<String, String>,
) -> Result<Config, ConfigError> {
    let fail = |problems: Vec<Problem>| ConfigError {
        file: file.to_path_buf(),
        problems,
    };
    if text.trim().is_empty() {
        return Err(fail(vec![Problem::at(None, "config", "the file is empty")]));
    }
    let raw = parse_raw(text, vars).map_err(|p| fail(vec![p]))?;
    let mut problems = Vec::new();
    let base = validate_base(&raw, file, &mut problems);
    if !problems.is_empty() {
        problems.sort_by_key(|p| p.line.unwrap_or(0));
        return Err(fail(problems));
    }
    Ok(Config { base, raw })
}
