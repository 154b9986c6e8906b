//! The Clinicea API client: authentication (every mode the spec names), one page of one resource
//! per call, and the retries inside a poll.
//!
//! What public clients learned about the live API shapes this code: the sync timestamp's colons
//! must not be percent-encoded, an empty page may be a 204 with no body, lists are bare arrays, and
//! a login token lasts about an hour. API keys, passwords and tokens never appear in errors or logs:
//! URLs that may carry them are never printed. Error bodies never appear in errors (which reach
//! `once`, `status` and the stored poll status) nor in logs at the default level, because they
//! may echo a request (with its key) or hold patient data; an error names the status, a hint and
//! the body's length, and a short excerpt scrubbed of every form of every secret is logged at
//! debug level only.

use crate::config::{AuthMode, Clinicea, Resource};
use crate::net::http::encode_query_value;
use crate::net::scrub::{self, Scrubber};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;
use tokio::sync::Mutex;

/// How many times one page request is retried inside a poll before the poll fails.
pub(crate) const API_MAX_RETRIES: u32 = 4;
/// The first backoff between retries of a page request; it doubles each time.
pub(crate) const API_BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The longest backoff (and the longest `Retry-After` honoured) inside a poll: past this the poll
/// fails, keeps its checkpoint, and the next interval tries again.
pub(crate) const API_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A login token is renewed after this long, before the hour it is said to last is up.
pub(crate) const TOKEN_REFRESH_AFTER: Duration = Duration::from_secs(50 * 60);
/// The largest page body accepted; a larger one is an error, not an out-of-memory.
pub const MAX_PAGE_BYTES: usize = 64 * 1024 * 1024;
/// How much of an error body the debug log quotes, after every secret is scrubbed from the whole
/// body.
const ERROR_EXCERPT_CHARS: usize = 200;
/// How many login tokens are remembered for scrubbing: the current one and the one before, which
/// a server may still echo in an answer to a request sent before a renewal.
const TOKENS_REMEMBERED: usize = 2;
/// A page is handed to the poll in chunks of at most this many records (or [`CHUNK_BYTES`]),
/// each diffed, planned and committed on its own, so memory stays bounded whatever the page size.
pub(crate) const CHUNK_RECORDS: usize = 1_000;
/// A chunk also ends once this much of the page's JSON went into it.
pub(crate) const CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Chunks parsed ahead of the poll: the body is read no faster than the poll takes them.
const CHUNKS_AHEAD: usize = 1;
/// The longest a page request may stay open while the poll works through its chunks. The
/// configured `timeout` bounds the time spent waiting on the API (for the answer and for each
/// piece of the body, in sum), not the time the poll spends storing what arrived.
const PAGE_REQUEST_LIMIT: Duration = Duration::from_secs(3600);

/// What can go wrong fetching a page.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The API answered with an error status. The body is not kept: it may echo the request's
    /// key or hold patient data.
    #[error("{resource}: the API answered HTTP {status}{hint}; {}", body_note(*body_bytes))]
    Status {
        /// The resource key.
        resource: String,
        /// The HTTP status.
        status: u16,
        /// A hint for common statuses (", check the API key").
        hint: &'static str,
        /// The length of the response body in bytes.
        body_bytes: usize,
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

/// What an error says about a body it does not show.
fn body_note(bytes: usize) -> String {
    if bytes == 0 {
        "the body was empty".to_string()
    } else {
        format!("its {bytes}-byte body is not shown (it may hold patient data; -v logs a scrubbed excerpt)")
    }
}

impl ApiError {
    /// Whether retrying the same request may help (429, 5xx, 408, transport errors).
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            ApiError::Status { status, .. } => {
                *status == 429 || *status == 408 || (500..600).contains(status)
            }
            ApiError::Transport { .. } => true,
            _ => false,
        }
    }
}

/// What a page reader hands the poll, in order.
#[derive(Debug)]
pub(crate) enum PageEvent {
    /// The next records of the page.
    Chunk(Chunk),
    /// The page failed part-way and is being requested again from its start: the records of the
    /// chunks already handed over will come again (storing them again is harmless).
    Restart,
}

/// Consecutive records of one page.
#[derive(Debug)]
pub(crate) struct Chunk {
    /// The records, as sent (some may not be objects; the diff skips those).
    pub(crate) records: Vec<Value>,
    /// Set on the page's last chunk.
    pub(crate) end: Option<PageEnd>,
}

/// How a page ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageEnd {
    /// The records the page held.
    pub(crate) records: u64,
    /// Whether this was the last page (short, empty or 204).
    pub(crate) last: bool,
    /// The server's `Date` header (`None` when missing or unparseable).
    pub(crate) date: Option<DateTime<Utc>>,
    /// Our clock when the response headers arrived (the server's `Date` is no later than its
    /// clock at that moment).
    pub(crate) received: DateTime<Utc>,
}

/// The `Date` header as an instant (IMF-fixdate; the obsolete HTTP date forms count as missing).
fn server_date(headers: &reqwest::header::HeaderMap) -> Option<DateTime<Utc>> {
    let v = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    DateTime::parse_from_rfc2822(v.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// One page being read in the background: its chunks arrive as the poll asks for them. Dropping
/// it stops the request.
pub(crate) struct PageReader {
    resource: String,
    rx: tokio::sync::mpsc::Receiver<Result<PageEvent, ApiError>>,
    _task: tokio_util::task::AbortOnDropHandle<()>,
}

impl PageReader {
    /// The page's next event. After the chunk that carries [`Chunk::end`] (or after an error)
    /// there is nothing more to ask for.
    pub(crate) async fn next(&mut self) -> Result<PageEvent, ApiError> {
        match self.rx.recv().await {
            Some(event) => event,
            None => Err(ApiError::Transport {
                resource: self.resource.clone(),
                detail: "the page request task ended early".into(),
            }),
        }
    }
}

/// How many API requests may be in flight at once: a limit for the whole fleet, shared by every
/// clinic's client, and one for this clinic. A request holds a permit of each while it is sent and
/// its body read, never while it waits to retry, so a clinic whose API is slow or failing holds at
/// most its own limit of the fleet's and the others go on.
#[derive(Clone, Debug)]
pub(crate) struct ApiLimits {
    /// Shared by every clinic.
    fleet: Arc<tokio::sync::Semaphore>,
    /// This clinic's own.
    clinic: Arc<tokio::sync::Semaphore>,
}

/// The permits one request holds; dropping it lets the next request go.
pub(crate) struct RequestPermit {
    _clinic: tokio::sync::OwnedSemaphorePermit,
    _fleet: tokio::sync::OwnedSemaphorePermit,
}

/// The fleet-wide limit on API requests in flight, shared by every clinic's [`ApiLimits`].
#[derive(Clone, Debug)]
pub(crate) struct FleetLimit(Arc<tokio::sync::Semaphore>);

impl FleetLimit {
    /// At most `n` requests in flight across every clinic.
    pub(crate) fn new(n: usize) -> FleetLimit {
        FleetLimit(Arc::new(tokio::sync::Semaphore::new(n.max(1))))
    }

    /// One clinic's limits: this fleet's, and at most `n` requests of its own.
    pub(crate) fn clinic(&self, n: usize) -> ApiLimits {
        ApiLimits {
            fleet: self.0.clone(),
            clinic: Arc::new(tokio::sync::Semaphore::new(n.max(1))),
        }
    }
}

impl ApiLimits {
    /// Waits for a permit of the clinic's, then one of the fleet's: a clinic waiting on its own
    /// limit holds none of the fleet's meanwhile.
    pub(crate) async fn acquire(&self) -> RequestPermit {
        // The semaphores are never closed, so acquiring cannot fail.
        let clinic = self.clinic.clone().acquire_owned().await;
        let fleet = self.fleet.clone().acquire_owned().await;
        match (clinic, fleet) {
            (Ok(c), Ok(f)) => RequestPermit {
                _clinic: c,
                _fleet: f,
            },
            _ => unreachable!("the request limits' semaphores are never closed"),
        }
    }
}

/// The Clinicea API client for one clinic.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    limits: ApiLimits,
    cfg: Arc<Clinicea>,
    token: Arc<Mutex<Option<(String, Instant)>>>,
    /// The latest login tokens (newest last), for scrubbing; a plain mutex, never held across an
    /// await, so scrubbing needs no `.await`.
    issued_tokens: Arc<std::sync::Mutex<Vec<String>>>,
}

/// Writes the since value for a resource: `since` in `tz`, in the resource's format.
pub(crate) fn format_since(since: DateTime<Utc>, format: &str, tz: chrono_tz::Tz) -> String {
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
    /// The HTTP client for a validated `clinicea:` section (or clinic). The base URL's name is
    /// resolved through the egress rules: a link-local, metadata or (without
    /// `clinicea.allow_private`) private address is refused before connecting. Clinics with the
    /// same timeout and egress rule can share one, and its connection pool.
    pub(crate) fn http_for(cfg: &Clinicea) -> anyhow::Result<reqwest::Client> {
        let builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("clinicea-notifier/", env!("CARGO_PKG_VERSION")));
        Ok(crate::net::egress::guard(
            builder,
            crate::net::egress::Policy::clinicea(cfg.allow_private),
        )
        .build()?)
    }

    /// A client for one clinic over `http` (from [`Client::http_for`] of the same settings), its
    /// requests within `limits`.
    pub(crate) fn new(cfg: &Clinicea, http: reqwest::Client, limits: ApiLimits) -> Client {
        Client {
            http,
            limits,
            cfg: Arc::new(cfg.clone()),
            token: Arc::new(Mutex::new(None)),
            issued_tokens: Arc::default(),
        }
    }

    /// Every secret this client sends: the API key, the login password and user name, and the
    /// latest session tokens.
    fn secrets(&self) -> Vec<String> {
        let mut v = vec![self.cfg.api_key.expose().to_string()];
        if let Some(login) = &self.cfg.login {
            v.push(login.password.expose().to_string());
            v.push(login.username.clone());
        }
        v.extend(
            self.issued_tokens
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .cloned(),
        );
        v
    }

    /// Removes every secret from a whole text that came from outside (an error body may echo a
    /// request, its URL or its headers), in each form it may take there; see [`Scrubber::secret`].
    fn scrub(&self, s: &str) -> String {
        Scrubber::new()
            .secrets(self.secrets().iter().map(String::as_str))
            .scrub(s)
    }

    /// Logs a scrubbed excerpt of an error body at debug level (the only place any of it goes).
    fn log_error_body(&self, resource: &str, status: u16, body: &[u8]) {
        if !body.is_empty() && tracing::enabled!(tracing::Level::DEBUG) {
            let excerpt = excerpt(&self.scrub(&String::from_utf8_lossy(body)));
            tracing::debug!(resource, status, excerpt = %excerpt, "the API's error body (scrubbed)");
        }
    }

    /// The error for an error status, with the body's length only; a scrubbed excerpt of the body
    /// goes to the debug log.
    fn status_error(&self, resource: &str, status: u16, body: &[u8]) -> ApiError {
        self.log_error_body(resource, status, body);
        ApiError::Status {
            resource: resource.to_string(),
            status,
            hint: hint_for(status),
            body_bytes: body.len(),
        }
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
        let causes = scrub::source_text(e);
        if !causes.is_empty() {
            detail.push_str(": ");
            detail.push_str(&self.scrub(&causes));
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
            let code = status.as_u16();
            self.log_error_body("login", code, body.as_bytes());
            let hint = if code == 401 || code == 403 {
                " (check clinicea.login and clinicea.api_key)"
            } else {
                ""
            };
            return Err(ApiError::Login(format!(
                "HTTP {code}{hint}; {}",
                body_note(body.len())
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
        {
            let mut issued = self
                .issued_tokens
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            issued.push(token.clone());
            let extra = issued.len().saturating_sub(TOKENS_REMEMBERED);
            issued.drain(..extra);
        }
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
        budget: &mut Duration,
    ) -> Result<reqwest::Response, ApiError> {
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
        let send = self
            .http
            .get(url)
            .headers(req_headers)
            .timeout(PAGE_REQUEST_LIMIT)
            .send();
        let waited = Instant::now();
        let resp = match tokio::time::timeout(*budget, send).await {
            Ok(r) => r.map_err(|e| self.transport(&res.name, &e))?,
            Err(_) => return Err(self.timed_out(&res.name)),
        };
        *budget = budget.saturating_sub(waited.elapsed());
        Ok(resp)
    }

    /// The error of a request that waited longer than `timeout` on the API.
    fn timed_out(&self, resource: &str) -> ApiError {
        ApiError::Transport {
            resource: resource.to_string(),
            detail: format!("timed out after {:?}", self.cfg.timeout),
        }
    }

    /// The next piece of a body, waiting on the API at most what is left of `budget`.
    async fn next_piece(
        &self,
        resource: &str,
        resp: &mut reqwest::Response,
        budget: &mut Duration,
    ) -> Result<Option<bytes::Bytes>, ApiError> {
        let waited = Instant::now();
        let piece = tokio::time::timeout(*budget, resp.chunk()).await;
        *budget = budget.saturating_sub(waited.elapsed());
        match piece {
            Ok(p) => p.map_err(|e| self.transport(resource, &e)),
            Err(_) => Err(self.timed_out(resource)),
        }
    }

    /// A whole (error) body, up to [`MAX_PAGE_BYTES`].
    async fn read_body(
        &self,
        res: &Resource,
        page: u32,
        mut resp: reqwest::Response,
        budget: &mut Duration,
    ) -> Result<Vec<u8>, ApiError> {
        let mut body = Vec::new();
        while let Some(piece) = self.next_piece(&res.name, &mut resp, budget).await? {
            if body.len() + piece.len() > MAX_PAGE_BYTES {
                return Err(too_large(&res.name, page));
            }
            body.extend_from_slice(&piece);
        }
        Ok(body)
    }

    /// Streams a successful page body to `tx` in chunks. The error comes with whether any chunk
    /// was handed over already; `Ok(false)` means the reader was dropped.
    async fn stream_body(
        &self,
        res: &Resource,
        page: u32,
        mut resp: reqwest::Response,
        budget: &mut Duration,
        tx: &tokio::sync::mpsc::Sender<Result<PageEvent, ApiError>>,
    ) -> Result<bool, (ApiError, bool)> {
        let (date, received) = (server_date(resp.headers()), Utc::now());
        let malformed = |detail: String| ApiError::Malformed {
            resource: res.name.clone(),
            page,
            detail,
        };
        let mut splitter = crate::ingest::split::ArraySplitter::new();
        let mut records = Vec::new();
        let (mut total, mut in_chunk, mut handed) = (0usize, 0usize, 0u64);
        loop {
            let sent = handed > 0;
            let piece = match self.next_piece(&res.name, &mut resp, budget).await {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => return Err((e, sent)),
            };
            total += piece.len();
            if total > MAX_PAGE_BYTES {
                return Err((too_large(&res.name, page), sent));
            }
            splitter
                .feed(&piece, &mut records)
                .map_err(|d| (malformed(d), sent))?;
            in_chunk += piece.len();
            if records.len() >= CHUNK_RECORDS || (in_chunk >= CHUNK_BYTES && !records.is_empty()) {
                handed += records.len() as u64;
                in_chunk = 0;
                let chunk = Chunk {
                    records: std::mem::take(&mut records),
                    end: None,
                };
                if tx.send(Ok(PageEvent::Chunk(chunk))).await.is_err() {
                    return Ok(false);
                }
            }
        }
        let sent = handed > 0;
        match splitter.finish() {
            Ok(None) => {}
            // Not a list: say what it is (an empty body is an empty page).
            Ok(Some(whole)) => {
                records = judge_whole(&res.name, page, &whole).map_err(|e| (e, sent))?
            }
            Err(d) => return Err((malformed(d), sent)),
        }
        let count = handed + records.len() as u64;
        let end = PageEnd {
            records: count,
            last: count < u64::from(res.page_size),
            date,
            received,
        };
        let chunk = Chunk {
            records,
            end: Some(end),
        };
        Ok(tx.send(Ok(PageEvent::Chunk(chunk))).await.is_ok())
    }

    /// Starts reading one page in the background; its records arrive in bounded chunks (see
    /// [`PageReader`]). 429, 5xx, 408 and transport errors are retried with backoff (bounded by
    /// [`API_MAX_RETRIES`]), also when the body breaks off after some chunks were handed over (the
    /// reader then says [`PageEvent::Restart`]); a 401 in `auth: login` mode logs in again once.
    pub(crate) fn read_page(&self, res: &Resource, since: DateTime<Utc>, page: u32) -> PageReader {
        use tracing::Instrument;
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
        let (client, res2) = (self.clone(), res.clone());
        let task = async move {
            if let Err(e) = client.stream_page(&res2, since, page, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        };
        PageReader {
            resource: res.name.clone(),
            rx,
            _task: tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
                task.instrument(tracing::Span::current()),
            )),
        }
    }

    async fn stream_page(
        &self,
        res: &Resource,
        since: DateTime<Utc>,
        page: u32,
        tx: &tokio::sync::mpsc::Sender<Result<PageEvent, ApiError>>,
    ) -> Result<(), ApiError> {
        let mut attempt = 0u32;
        let mut relogged = false;
        loop {
            attempt += 1;
            // Each attempt may wait on the API for `timeout` in all, once its turn has come.
            let permit = self.limits.acquire().await;
            let mut budget = self.cfg.timeout;
            let resp = match self
                .request_once(res, since, page, false, &mut budget)
                .await
            {
                Ok(r) => r,
                Err(e) if e.is_retryable() && attempt <= API_MAX_RETRIES => {
                    let wait = backoff(attempt);
                    tracing::warn!(resource = %res.name, page, attempt, error = %e, "page request failed; retrying in {wait:?}");
                    drop(permit);
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && self.cfg.auth == AuthMode::Login && !relogged {
                relogged = true;
                tracing::info!(resource = %res.name, "401 with a session token; logging in again");
                *self.token.lock().await = None;
                continue;
            }
            if status == StatusCode::NO_CONTENT {
                let end = PageEnd {
                    records: 0,
                    last: true,
                    date: server_date(resp.headers()),
                    received: Utc::now(),
                };
                let chunk = Chunk {
                    records: Vec::new(),
                    end: Some(end),
                };
                let _ = tx.send(Ok(PageEvent::Chunk(chunk))).await;
                return Ok(());
            }
            if !status.is_success() {
                let headers = resp.headers().clone();
                let body = match self.read_body(res, page, resp, &mut budget).await {
                    Ok(b) => b,
                    Err(e) if e.is_retryable() && attempt <= API_MAX_RETRIES => {
                        drop(permit);
                        tokio::time::sleep(backoff(attempt)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let err = self.status_error(&res.name, status.as_u16(), &body);
                if err.is_retryable() && attempt <= API_MAX_RETRIES {
                    let wait =
                        crate::net::retry_after::retry_after_header(&headers, SystemTime::now())
                            .unwrap_or_else(|| backoff(attempt));
                    if wait <= API_MAX_BACKOFF {
                        tracing::warn!(resource = %res.name, page, attempt, status = status.as_u16(), "API asked to retry; waiting {wait:?}");
                        drop(permit);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                }
                return Err(err);
            }
            match self.stream_body(res, page, resp, &mut budget, tx).await {
                Ok(_) => return Ok(()),
                Err((e, handed)) if e.is_retryable() && attempt <= API_MAX_RETRIES => {
                    if handed && tx.send(Ok(PageEvent::Restart)).await.is_err() {
                        return Ok(());
                    }
                    let wait = backoff(attempt);
                    tracing::warn!(resource = %res.name, page, attempt, error = %e, "the page broke off; requesting it again in {wait:?}");
                    drop(permit);
                    tokio::time::sleep(wait).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}

fn too_large(resource: &str, page: u32) -> ApiError {
    ApiError::Malformed {
        resource: resource.to_string(),
        page,
        detail: format!("the page is larger than {} MiB", MAX_PAGE_BYTES >> 20),
    }
}

/// Decodes a whole page body: a bare JSON array (an empty body counts as an empty page). The poll
/// reads pages in chunks instead ([`Client::read_page`]); both split the array the same way.
pub fn parse_page(resource: &str, page: u32, body: &[u8]) -> Result<Vec<Value>, ApiError> {
    let mut records = Vec::new();
    let mut splitter = crate::ingest::split::ArraySplitter::new();
    let split = splitter
        .feed(body, &mut records)
        .and_then(|()| splitter.finish());
    match split {
        Ok(None) => Ok(records),
        Ok(Some(whole)) => judge_whole(resource, page, &whole),
        Err(detail) => Err(ApiError::Malformed {
            resource: resource.to_string(),
            page,
            detail,
        }),
    }
}

/// Judges a body parsed whole: a bare JSON array (an empty body counts as an empty page), or an
/// error that says what it is instead.
fn judge_whole(resource: &str, page: u32, body: &[u8]) -> Result<Vec<Value>, ApiError> {
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
            crate::ingest::split::json_error_cause(&e)
        ))),
    }
}

fn backoff(attempt: u32) -> Duration {
    API_BACKOFF_BASE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(API_MAX_BACKOFF)
}

/// The start of an already scrubbed text for a log line: control characters as spaces, at most
/// [`ERROR_EXCERPT_CHARS`] characters.
fn excerpt(scrubbed: &str) -> String {
    scrubbed
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(ERROR_EXCERPT_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn every_form_of_a_secret_is_scrubbed_before_any_cut() {
        let key = "ak_Q/9+z=k y&LEAK";
        let token = "tok-1234567890abcdef";
        let secrets = [key, token, ""];
        let encoded = encode_query_value(key);
        assert_eq!(encoded, "ak_Q%2F9%2Bz%3Dk%20y%26LEAK");
        let form: String = url::form_urlencoded::byte_serialize(key.as_bytes()).collect();
        let body = format!(
            "{pad}{key} url=/api?api_key={encoded}&x=1 lower={lower} form={form} json={json} token {token}",
            pad = "x".repeat(180),
            lower = encoded.to_lowercase().replace("ak_q", "ak_Q").replace("leak", "LEAK"),
            json = serde_json::to_string(key).unwrap(),
        );
        let out = Scrubber::new().secrets(secrets).scrub(&body);
        for leak in ["ak_Q", "LEAK", "tok-1234", "%2F9", "%2f9"] {
            assert!(!out.contains(leak), "{leak} survived: {out}");
        }
        assert_eq!(out.matches("[redacted]").count(), 6, "{out}");
        // The key straddling the excerpt's edge: nothing of it is left in the excerpt.
        let e = excerpt(&out);
        assert_eq!(e.chars().count(), ERROR_EXCERPT_CHARS);
        assert!(!e.contains("ak_"), "{e}");
        assert_eq!(excerpt("a\u{1b}[2Jb\n"), "a [2Jb ");
    }

    #[test]
    fn status_errors_name_the_status_and_length_but_not_the_body() {
        let e = ApiError::Status {
            resource: "leads".into(),
            status: 500,
            hint: hint_for(500),
            body_bytes: 1234,
        };
        let text = e.to_string();
        assert!(
            text.contains("leads") && text.contains("HTTP 500") && text.contains("1234-byte"),
            "{text}"
        );
        let e = ApiError::Status {
            resource: "leads".into(),
            status: 401,
            hint: hint_for(401),
            body_bytes: 0,
        };
        assert!(e.to_string().contains("check clinicea.api_key"), "{e}");
        assert!(e.to_string().contains("empty"), "{e}");
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(30), API_MAX_BACKOFF);
    }

    #[tokio::test]
    async fn a_clinic_at_its_own_limit_holds_no_more_of_the_fleet_than_that() {
        let fleet = FleetLimit::new(3);
        let (slow, other) = (fleet.clinic(2), fleet.clinic(2));
        // The slow clinic's two requests hang; its third waits on its own limit, not the fleet's.
        let held = [slow.acquire().await, slow.acquire().await];
        let third = tokio::spawn({
            let slow = slow.clone();
            async move { slow.acquire().await }
        });
        tokio::task::yield_now().await;
        assert_eq!(
            fleet.0.available_permits(),
            1,
            "two of three taken, the waiter takes none"
        );
        // The other clinic gets the fleet's last permit at once, and then waits like everyone.
        let mine = tokio::time::timeout(Duration::from_secs(5), other.acquire())
            .await
            .expect("a permit is free");
        assert_eq!(fleet.0.available_permits(), 0);
        // Now the fleet is full: the other clinic's second request waits on it.
        let second = tokio::spawn({
            let other = other.clone();
            async move { other.acquire().await }
        });
        tokio::task::yield_now().await;
        assert!(!third.is_finished() && !second.is_finished());
        drop(held);
        let _third = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("the slow clinic's waiter goes once its own requests end")
            .unwrap();
        let _second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("so does the other's")
            .unwrap();
        drop(mine);
    }
}
