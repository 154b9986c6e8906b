//! The Clinicea API client: authentication (every mode the spec names), one page of one resource
//! per call, and the retries inside a poll.
//!
//! What public clients learned about the live API shapes this code: the sync timestamp's colons
//! must not be percent-encoded, an empty page may be a 204 with no body, lists are bare arrays, and
//! a login token lasts about an hour. API keys, passwords and tokens never appear in errors or logs:
//! URLs that may carry them are never printed, and error bodies are scrubbed of them.

use crate::config::{AuthMode, Clinicea, Resource};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::Mutex;

/// How many times one page request is retried inside a poll before the poll fails.
pub const API_MAX_RETRIES: u32 = 4;
/// The first backoff between retries of a page request; it doubles each time.
pub const API_BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The longest backoff (and the longest `Retry-After` honoured) inside a poll: past this the poll
/// fails, keeps its checkpoint, and the next interval tries again.
pub const API_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A login token is renewed after this long, before the hour it is said to last is up.
pub const TOKEN_REFRESH_AFTER: Duration = Duration::from_secs(50 * 60);
/// The largest page body accepted; a larger one is an error, not an out-of-memory.
pub const MAX_PAGE_BYTES: usize = 64 * 1024 * 1024;
/// How much of an error body is quoted in an error message.
const ERROR_BODY_CHARS: usize = 200;

/// What can go wrong fetching a page.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The API answered with an error status.
    #[error("{resource}: the API answered HTTP {status}{hint}: {body:?}")]
    Status {
        /// The resource key.
        resource: String,
        /// The HTTP status.
        status: u16,
        /// A hint for common statuses (", check the API key").
        hint: &'static str,
        /// The start of the response body, scrubbed of secrets.
        body: String,
    },
    /// The body was not a JSON array of records.
    #[error("{resource}: page {page} is not a JSON array of records: {detail}")]
    Malformed {
        /// The resource key.
        resource: String,
        /// The page number.
        page: u32,
        /// What was wrong.
        detail: String,
    },
    /// The request did not complete (timeout, connection refused or reset).
    #[error("{resource}: request failed: {detail}")]
    Transport {
        /// The resource key.
        resource: String,
        /// What happened, without the URL.
        detail: String,
    },
    /// Logging in for a token failed.
    #[error("login for a session token failed: {0}")]
    Login(String),
    /// The server kept returning the same page: it ignores the page parameter.
    #[error(
        "{resource}: page {page} repeats the previous page; does the endpoint take `{param}`?"
    )]
    PageRepeats {
        /// The resource key.
        resource: String,
        /// The page number.
        page: u32,
        /// The page parameter name.
        param: String,
    },
}

impl ApiError {
    /// Whether retrying the same request may help (429, 5xx, 408, transport errors).
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Status { status, .. } => {
                *status == 429 || *status == 408 || (500..600).contains(status)
            }
            ApiError::Transport { .. } => true,
            _ => false,
        }
    }
}

/// One fetched page.
#[derive(Debug)]
pub struct Page {
    /// The records, as sent (some may not be objects; the diff skips those).
    pub records: Vec<Value>,
    /// Whether this was the last page (short, empty or 204).
    pub last: bool,
    /// How many request attempts it took.
    pub attempts: u32,
    /// The server's `Date` header (`None` when missing or unparseable).
    pub date: Option<DateTime<Utc>>,
    /// Our clock when the response headers arrived (the server's `Date` is no later than its
    /// clock at that moment).
    pub received: DateTime<Utc>,
}

/// The `Date` header as an instant (IMF-fixdate; the obsolete HTTP date forms count as missing).
fn server_date(headers: &reqwest::header::HeaderMap) -> Option<DateTime<Utc>> {
    let v = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    DateTime::parse_from_rfc2822(v.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The Clinicea API client for one source.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    cfg: Arc<Clinicea>,
    token: Arc<Mutex<Option<(String, Instant)>>>,
}

/// Percent-encodes a query value, leaving unreserved characters and `:` as they are (the live API
/// rejects `%3A`); `+` becomes `%2B` so an offset is not read as a space.
pub fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Writes the since value for a resource: `since` in `tz`, in the resource's format.
pub fn format_since(since: DateTime<Utc>, format: &str, tz: chrono_tz::Tz) -> String {
    since.with_timezone(&tz).format(format).to_string()
}

fn hint_for(status: u16) -> &'static str {
    match status {
        400 => " (bad request: check since_format, page_param and first_page for this resource)",
        401 => " (unauthorized: check clinicea.api_key and clinicea.auth)",
        403 => " (forbidden: the API key's role may not cover this resource)",
        404 => " (not found: check the resource path and clinicea.base_url)",
        _ => "",
    }
}

impl Client {
    /// Builds a client for a validated `clinicea:` section.
    pub fn new(cfg: &Clinicea) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("clinicea-notifier/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            cfg: Arc::new(cfg.clone()),
            token: Arc::new(Mutex::new(None)),
        })
    }

    /// Replaces secrets in a text that came from outside (an error body may echo a request).
    fn scrub(&self, s: &str) -> String {
        let mut out: String = s
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(ERROR_BODY_CHARS)
            .collect();
        let key = self.cfg.api_key.expose();
        if !key.is_empty() {
            out = out.replace(key, "[redacted]");
        }
        if let Some(login) = &self.cfg.login {
            if !login.password.expose().is_empty() {
                out = out.replace(login.password.expose(), "[redacted]");
            }
        }
        out
    }

    fn transport(&self, resource: &str, e: &reqwest::Error) -> ApiError {
        let what = if e.is_timeout() {
            format!("timed out after {:?}", self.cfg.timeout)
        } else if e.is_connect() {
            "could not connect".to_string()
        } else if e.is_body() || e.is_decode() {
            "the response body was cut off".to_string()
        } else {
            "the connection failed".to_string()
        };
        // The URL may carry the key (auth: query), so only the cause chain without it is shown.
        let mut detail = what;
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            detail.push_str(": ");
            detail.push_str(&self.scrub(&s.to_string()));
            src = s.source();
        }
        ApiError::Transport {
            resource: resource.to_string(),
            detail,
        }
    }

    async fn session_token(&self, force: bool) -> Result<String, ApiError> {
        let mut guard = self.token.lock().await;
        if let (false, Some((tok, at))) = (force, guard.as_ref()) {
            if at.elapsed() < TOKEN_REFRESH_AFTER {
                return Ok(tok.clone());
            }
        }
        let login = self
            .cfg
            .login
            .as_ref()
            .ok_or_else(|| ApiError::Login("auth: login without login credentials".into()))?;
        let url = format!(
            "{}{}?apiKey={}&loginUserName={}&pwd={}",
            self.cfg.base_url.as_str().trim_end_matches('/'),
            login.path,
            encode_query_value(self.cfg.api_key.expose()),
            encode_query_value(&login.username),
            encode_query_value(login.password.expose()),
        );
        let resp = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| ApiError::Login(self.transport("login", &e).to_string()))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| ApiError::Login(self.transport("login", &e).to_string()))?;
        if !status.is_success() {
            return Err(ApiError::Login(format!(
                "HTTP {}: {:?}",
                status.as_u16(),
                self.scrub(&body)
            )));
        }
        let token = match serde_json::from_str::<Value>(&body) {
            Ok(Value::String(t)) if !t.is_empty() => t,
            _ => {
                return Err(ApiError::Login(
                    "the login endpoint did not return a JSON string token".into(),
                ))
            }
        };
        tracing::info!("logged in for a new session token");
        *guard = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    fn page_url(&self, res: &Resource, since: DateTime<Utc>, page: u32) -> String {
        let mut url = format!(
            "{}{}?{}={}&{}={}",
            self.cfg.base_url.as_str().trim_end_matches('/'),
            res.path,
            encode_query_value(&res.since_param),
            encode_query_value(&format_since(
                since,
                &res.since_format,
                self.cfg.since_timezone
            )),
            encode_query_value(&res.page_param),
            page
        );
        if let Some(p) = &res.page_size_param {
            url.push_str(&format!("&{}={}", encode_query_value(p), res.page_size));
        }
        for (k, v) in &res.params {
            url.push_str(&format!(
                "&{}={}",
                encode_query_value(k),
                encode_query_value(v)
            ));
        }
        url
    }

    async fn request_once(
        &self,
        res: &Resource,
        since: DateTime<Utc>,
        page: u32,
        fresh_token: bool,
    ) -> Result<
        (
            StatusCode,
            reqwest::header::HeaderMap,
            Vec<u8>,
            DateTime<Utc>,
        ),
        ApiError,
    > {
        let mut url = self.page_url(res, since, page);
        let mut req_headers = reqwest::header::HeaderMap::new();
        req_headers.insert(
            "accept",
            reqwest::header::HeaderValue::from_static("application/json"),
        );
        let secret = match self.cfg.auth {
            AuthMode::Login => self.session_token(fresh_token).await?,
            _ => self.cfg.api_key.expose().to_string(),
        };
        let mut value = reqwest::header::HeaderValue::from_str(&secret).map_err(|_| {
            ApiError::Login("the API key or token is not a valid header value".into())
        })?;
        value.set_sensitive(true);
        match self.cfg.auth {
            AuthMode::Header => {
                req_headers.insert("api", value);
            }
            AuthMode::ApiKeyHeader | AuthMode::Login => {
                req_headers.insert("api_key", value);
            }
            AuthMode::Query => {
                url.push_str("&api_key=");
                url.push_str(&encode_query_value(&secret));
            }
        }
        let resp = self
            .http
            .get(url)
            .headers(req_headers)
            .send()
            .await
            .map_err(|e| self.transport(&res.name, &e))?;
        let received = Utc::now();
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        let mut resp = resp;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transport(&res.name, &e))?
        {
            if body.len() + chunk.len() > MAX_PAGE_BYTES {
                return Err(ApiError::Malformed {
                    resource: res.name.clone(),
                    page,
                    detail: format!("the page is larger than {} MiB", MAX_PAGE_BYTES >> 20),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, headers, body, received))
    }

    /// Fetches one page, retrying 429, 5xx, 408 and transport errors with backoff (bounded by
    /// [`API_MAX_RETRIES`]), and logging in again once on a 401 in `auth: login` mode.
    pub async fn fetch_page(
        &self,
        res: &Resource,
        since: DateTime<Utc>,
        page: u32,
    ) -> Result<Page, ApiError> {
        let mut attempt = 0u32;
        let mut relogged = false;
        loop {
            attempt += 1;
            let outcome = self.request_once(res, since, page, false).await;
            let (status, headers, body, received) = match outcome {
                Ok(r) => r,
                Err(e) if e.is_retryable() && attempt <= API_MAX_RETRIES => {
                    let wait = backoff(attempt);
                    tracing::warn!(resource = %res.name, page, attempt, error = %e, "page request failed; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if status == StatusCode::UNAUTHORIZED && self.cfg.auth == AuthMode::Login && !relogged {
                relogged = true;
                tracing::info!(resource = %res.name, "401 with a session token; logging in again");
                *self.token.lock().await = None;
                continue;
            }
            if status == StatusCode::NO_CONTENT {
                return Ok(Page {
                    records: Vec::new(),
                    last: true,
                    attempts: attempt,
                    date: server_date(&headers),
                    received,
                });
            }
            if !status.is_success() {
                let err = ApiError::Status {
                    resource: res.name.clone(),
                    status: status.as_u16(),
                    hint: hint_for(status.as_u16()),
                    body: self.scrub(&String::from_utf8_lossy(&body)),
                };
                if err.is_retryable() && attempt <= API_MAX_RETRIES {
                    let wait = retry_after(&headers).unwrap_or_else(|| backoff(attempt));
                    if wait <= API_MAX_BACKOFF {
                        tracing::warn!(resource = %res.name, page, attempt, status = status.as_u16(), "API asked to retry; waiting {wait:?}");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                }
                return Err(err);
            }
            let records = parse_page(&res.name, page, &body)?;
            let last = records.len() < res.page_size as usize;
            return Ok(Page {
                records,
                last,
                attempts: attempt,
                date: server_date(&headers),
                received,
            });
        }
    }
}

/// Decodes a page body: a bare JSON array (an empty body counts as an empty page).
pub fn parse_page(resource: &str, page: u32, body: &[u8]) -> Result<Vec<Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let malformed = |detail: String| ApiError::Malformed {
        resource: resource.to_string(),
        page,
        detail,
    };
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) => Ok(items),
        Ok(Value::Object(_)) => Err(malformed("an object where an array belongs".into())),
        Ok(other) => Err(malformed(format!(
            "a JSON {} where an array belongs",
            match other {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::Number(_) => "number",
                _ => "string",
            }
        ))),
        Err(e) => Err(malformed(format!(
            "invalid JSON at line {} column {}: {}",
            e.line(),
            e.column(),
            json_error_cause(&e)
        ))),
    }
}

/// Why serde_json refused a body, in words: "recursion limit exceeded (nested more than 128
/// levels deep)", "invalid unicode code point", "EOF while parsing a string". Parsing into a
/// `Value` only fails on syntax, whose messages are fixed texts that never quote the body (so no
/// record content reaches a log); anything else is named by its category only.
fn json_error_cause(e: &serde_json::Error) -> String {
    if e.classify() != serde_json::error::Category::Syntax
        && e.classify() != serde_json::error::Category::Eof
    {
        return e.classify_str().to_string();
    }
    let full = e.to_string();
    let cause = full.split(" at line ").next().unwrap_or(&full);
    if cause.contains("recursion limit") {
        format!("{cause} (nested more than 128 levels deep)")
    } else {
        cause.to_string()
    }
}

trait ClassifyStr {
    fn classify_str(&self) -> &'static str;
}

impl ClassifyStr for serde_json::Error {
    fn classify_str(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "unexpected end of input",
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    API_BACKOFF_BASE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(API_MAX_BACKOFF)
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colons_stay_plus_is_encoded() {
        assert_eq!(
            encode_query_value("2026-11-29T10:00:00+05:00"),
            "2026-11-29T10:00:00%2B05:00"
        );
        assert_eq!(encode_query_value("a b&c"), "a%20b%26c");
    }

    #[test]
    fn since_formats() {
        let t = DateTime::parse_from_rfc3339("2026-11-29T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            format_since(t, "%Y-%m-%dT%H:%M:%S%:z", chrono_tz::UTC),
            "2026-11-29T10:00:00+00:00"
        );
        assert_eq!(
            format_since(t, "%Y-%m-%dT%H:%M:%S", chrono_tz::Asia::Karachi),
            "2026-11-29T15:00:00"
        );
    }

    #[test]
    fn pages() {
        assert_eq!(parse_page("leads", 0, b"").unwrap().len(), 0);
        assert_eq!(parse_page("leads", 0, b"[{},{}]").unwrap().len(), 2);
        let e = parse_page("leads", 3, b"{\"a\":1}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("leads") && e.contains("page 3") && e.contains("object"),
            "{e}"
        );
        let e = parse_page("leads", 1, b"[{\"a\":").unwrap_err().to_string();
        assert!(
            e.contains("invalid JSON") && e.contains("EOF while parsing"),
            "{e}"
        );
        let deep = "[".repeat(100_000);
        let e = parse_page("leads", 1, deep.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("recursion limit exceeded (nested more than 128"),
            "{e}"
        );
        let e = parse_page("leads", 1, b"[\"Ay\xffsha\"]")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("invalid unicode code point") && !e.contains("Ay"),
            "{e}"
        );
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(30), API_MAX_BACKOFF);
    }
}
