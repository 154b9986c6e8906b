//! The configuration file: serde structs that mirror the YAML (`Raw*`), and [`load`], which parses
//! them, substitutes `${VAR}` from a map passed in, and validates everything once into the runtime
//! types the rest of the program uses, so a bad config fails at start and never at 3 a.m.
//!
//! Every problem is reported with the file, the line and the key, so `check` can print
//! `rules.yaml:14: rules[new-lead].where[1].matches: invalid regex ...`.

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

/// Parses `30s`, `5m`, `2h`, `1d`, `250ms`, or a combination such as `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
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
        total += Duration::from_secs_f64(secs);
        rest = &rest[unit_len..];
    }
    Ok(total)
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
    /// The SMTP server for email destinations.
    #[serde(default)]
    pub smtp: Option<Spanned<RawSmtp>>,
    /// Where deliveries go, by destination name.
    #[serde(default)]
    pub destinations: BTreeMap<String, Spanned<RawDestination>>,
    /// Which changes go where.
    #[serde(default)]
    pub rules: Vec<Spanned<crate::rules::RuleSpec>>,
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
    /// No TLS: only for a relay on loopback or a test catcher.
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
    serde_saphyr::from_str::<RawConfig>(text).map_err(|e| {
        let line = e.location().map(|l| l.line()).filter(|l| *l > 0);
        Problem::at(line, "config", e.to_string())
    })
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
    fn vars() {
        let vars = HashMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(expand_vars("a${A}b", &vars).unwrap(), "axb");
        assert_eq!(expand_vars("$${A}", &vars).unwrap(), "${A}");
        assert_eq!(expand_vars("cost $5", &vars).unwrap(), "cost $5");
        let err = expand_vars("${MISSING}", &vars).unwrap_err();
        assert!(err.contains("MISSING"), "{err}");
    }
}
