//! Shared test parts: a sandbox, a webhook receiver that records what it gets and answers from a
//! script, and configs written into a temporary directory.

#![allow(dead_code)]

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use clinicea_notifier::app::{self, Engine, Settings};
use clinicea_notifier::sandbox::{Sandbox, SandboxHandle, SandboxOptions};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A webhook secret used by every test (Standard Webhooks' published example key).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Starts a sandbox on a free loopback port.
pub async fn sandbox(opts: SandboxOptions) -> SandboxHandle {
    Sandbox::start(opts, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("sandbox starts")
}

/// The default sandbox: 137 leads, 12 patients, 42 appointments, no churn.
pub async fn default_sandbox() -> SandboxHandle {
    sandbox(SandboxOptions::default()).await
}

/// An RFC 3339 time `hours` ago, for `start_from` backfills.
pub fn hours_ago(hours: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::hours(hours)).to_rfc3339()
}

/// A test's own directory with a config file in it.
pub struct TestDir {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub vars: HashMap<String, String>,
}

impl TestDir {
    /// Writes `yaml` as the config; `${VAR}` reads `vars`.
    pub fn new(yaml: &str) -> TestDir {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("clinicea-notifier.yaml");
        std::fs::write(&config, yaml).unwrap();
        TestDir {
            dir,
            config,
            vars: HashMap::new(),
        }
    }

    /// Rewrites the config.
    pub fn rewrite(&self, yaml: &str) {
        std::fs::write(&self.config, yaml).unwrap();
    }

    /// Loads and compiles the config.
    pub fn settings(&self) -> Settings {
        match app::load_settings_with(&self.config, &self.vars) {
            Ok(s) => s,
            Err(e) => panic!("config should load: {e}"),
        }
    }

    /// Opens an engine (store in this directory).
    pub fn engine(&self) -> Engine {
        Engine::open(self.settings()).expect("engine opens")
    }
}

/// The `clinicea:` section for a sandbox, backfilling two hours so its records are seen.
pub fn clinicea_section(base_url: &str) -> String {
    format!(
        "clinicea:\n  base_url: {base_url}\n  api_key: sandbox-api-key\n  start_from: \"{}\"\n  poll_interval: 1s\n  timeout: 5s\n",
        hours_ago(2)
    )
}

/// A config polling the sandbox's leads only, no destinations.
pub fn leads_only(base_url: &str) -> String {
    format!(
        "{}resources:\n  leads:\n    path: /api/v1/leads\nstore:\n  path: ./data\n",
        clinicea_section(base_url)
    )
}

/// What a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            delay: Duration::ZERO,
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

#[derive(Default)]
struct ReceiverState {
    got: Vec<Received>,
    script: VecDeque<Reply>,
    default: Option<Reply>,
}

/// A real HTTP webhook receiver on loopback.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    /// Starts a receiver that answers 200 unless scripted otherwise.
    pub async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let st = state.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let st = st.clone();
            async move {
                let reply = {
                    let mut s = st.lock().unwrap();
                    s.got.push(Received {
                        headers,
                        body,
                        at: Instant::now(),
                    });
                    s.script
                        .pop_front()
                        .or_else(|| s.default.clone())
                        .unwrap_or(Reply::status(200))
                };
                tokio::time::sleep(reply.delay).await;
                let mut resp = axum::response::Response::new(axum::body::Body::from("ok"));
                *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap();
                for (k, v) in reply.headers {
                    resp.headers_mut().insert(
                        axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        v.parse().unwrap(),
                    );
                }
                resp
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/hook"),
            state,
        }
    }

    /// Answers the next requests with these replies, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    /// Answers every unscripted request with this.
    pub fn set_default(&self, reply: Reply) {
        self.state.lock().unwrap().default = Some(reply);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().got.clone()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.received();
            if got.len() >= n || start.elapsed() > timeout {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Verifies a received webhook with the `standardwebhooks` crate (code nobody here wrote).
pub fn verify_with_library(r: &Received) -> Result<(), String> {
    let wh = standardwebhooks::Webhook::new(SECRET).map_err(|e| format!("{e:?}"))?;
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, r.header(name).parse().map_err(|_| "bad header")?);
    }
    wh.verify(&r.body, &headers).map_err(|e| format!("{e:?}"))
}

// ---- Added for the email, chat and demo tests. ----

/// A sandbox with no records at all (tests insert what they need).
pub async fn empty_sandbox() -> SandboxHandle {
    sandbox(SandboxOptions {
        leads: 0,
        patients: 0,
        appointments: 0,
        ..SandboxOptions::default()
    })
    .await
}

/// A made-up lead that the example rules' `new-lead-email` matches (Email set, Source Website).
pub fn test_lead() -> serde_json::Value {
    serde_json::json!({
        "FirstName": "Ayesha",
        "LastName": "Khan",
        "Email": "ayesha.khan@example.com",
        "Mobile": "+92 300 0000000",
        "Source": "Website",
        "LeadStatus": "New",
        "Notes": "Asked about teeth whitening"
    })
}

/// Delivers until the outbox is empty or `timeout` passes.
pub async fn drain_outbox(engine: &Engine, timeout: Duration) {
    let start = Instant::now();
    while engine.store.outbox_len() > 0 && start.elapsed() < timeout {
        engine.deliverer.deliver_all_due().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every dead letter.
pub fn dead_list(engine: &Engine) -> Vec<clinicea_notifier::deliver::DeadLetter> {
    engine
        .store
        .dead_entries()
        .unwrap()
        .into_iter()
        .map(|(_, raw)| serde_json::from_slice(&raw).unwrap())
        .collect()
}

/// Every queued outbox entry of `destination`.
pub fn queued(engine: &Engine, destination: &str) -> Vec<clinicea_notifier::deliver::OutboxEntry> {
    engine
        .store
        .outbox_entries(destination)
        .unwrap()
        .into_iter()
        .map(|(_, raw)| serde_json::from_slice(&raw).unwrap())
        .collect()
}

/// The attempts log of one delivery.
pub fn attempt_logs(engine: &Engine, seq: u64) -> Vec<clinicea_notifier::deliver::AttemptLog> {
    engine
        .store
        .attempts(seq)
        .unwrap()
        .into_iter()
        .map(|raw| serde_json::from_slice(&raw).unwrap())
        .collect()
}

/// A loopback port with nothing listening on it (at the moment of asking).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One scripted answer with a body, for [`BodyReceiver`].
#[derive(Debug, Clone)]
pub struct BodyReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl BodyReply {
    pub fn new(status: u16, body: &str) -> BodyReply {
        BodyReply {
            status,
            headers: vec![],
            body: body.into(),
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> BodyReply {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// A loopback HTTP receiver like [`Receiver`], whose scripted answers carry a body (Discord's
/// 429s put `retry_after` in JSON). Unscripted requests get `200 ok`.
#[derive(Clone)]
pub struct BodyReceiver {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<BodyReply>>>,
}

impl BodyReceiver {
    pub async fn start() -> BodyReceiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script: Arc<Mutex<VecDeque<BodyReply>>> = Arc::default();
        let (g, s) = (got.clone(), script.clone());
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let (g, s) = (g.clone(), s.clone());
            async move {
                g.lock().unwrap().push(Received {
                    headers,
                    body,
                    at: Instant::now(),
                });
                let reply = s
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or_else(|| BodyReply::new(200, "ok"));
                let mut resp = axum::response::Response::new(axum::body::Body::from(reply.body));
                *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap();
                for (k, v) in reply.headers {
                    resp.headers_mut().insert(
                        axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        v.parse().unwrap(),
                    );
                }
                resp
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        BodyReceiver {
            url: format!("http://{addr}/chat/T000/B000/secret-token"),
            got,
            script,
        }
    }

    pub fn script(&self, replies: impl IntoIterator<Item = BodyReply>) {
        self.script.lock().unwrap().extend(replies);
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

/// Decodes quoted-printable text (soft line breaks and `=XX`).
pub fn decode_qp(s: &str) -> String {
    let s = s.replace("=\r\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The parts of a caught message as (content type, decoded body): the one part of a single-part
/// message, or each part of a multipart one (one level deep).
pub fn mime_parts(m: &clinicea_notifier::catcher::CaughtMessage) -> Vec<(String, String)> {
    use base64::Engine as _;
    fn decode(head: &str, body: &str) -> (String, String) {
        let find = |name: &str| {
            head.split("\r\n")
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        let ct = find("Content-Type");
        let cte = find("Content-Transfer-Encoding").to_ascii_lowercase();
        let text = match cte.as_str() {
            "quoted-printable" => decode_qp(body),
            "base64" => String::from_utf8_lossy(
                &base64::engine::general_purpose::STANDARD
                    .decode(body.replace("\r\n", ""))
                    .unwrap(),
            )
            .into_owned(),
            _ => body.to_string(),
        };
        (ct, text)
    }
    let (head, body) = m.data.split_once("\r\n\r\n").unwrap();
    let ct = m.header("Content-Type").unwrap_or_default();
    match ct.split("boundary=").nth(1) {
        None => vec![decode(head, body)],
        Some(b) => {
            let boundary = format!("--{}", b.trim_matches('"'));
            body.split(boundary.as_str())
                .skip(1)
                .filter(|p| !p.starts_with("--"))
                .filter_map(|p| {
                    let p = p.strip_prefix("\r\n").unwrap_or(p);
                    let (h, b) = p.split_once("\r\n\r\n")?;
                    Some(decode(h, b.strip_suffix("\r\n").unwrap_or(b)))
                })
                .collect()
        }
    }
}
