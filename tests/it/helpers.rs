//! Shared test parts: a sandbox, a webhook receiver that records what it gets and answers from a
//! script, and configs written into a temporary directory.

#![allow(dead_code)]

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use clinicea_notifier::commands::{self, Settings};
use clinicea_notifier::daemon::engine::Engine;
use clinicea_notifier::daemon::events::Events;
use clinicea_notifier::kit::sandbox::{Sandbox, SandboxHandle, SandboxOptions};
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
        match commands::load_settings_with(&self.config, &self.vars) {
            Ok(s) => s,
            Err(e) => panic!("config should load: {e}"),
        }
    }

    /// Opens an engine (store in this directory).
    pub fn engine(&self) -> Engine {
        Engine::open(self.settings(), Events::none()).expect("engine opens")
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
                reply_after_delay(reply).await
            }
        });
        let addr = serve_on_loopback(app).await;
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

/// Waits the reply's delay, then answers with its status and headers (body `ok`).
async fn reply_after_delay(reply: Reply) -> axum::response::Response {
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

/// Serves `app` on a free loopback port and returns the address.
pub async fn serve_on_loopback(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
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
pub fn dead_list(engine: &Engine) -> Vec<clinicea_notifier::outbox::entry::DeadLetter> {
    store_dead_letters(&engine.store)
}

/// Every dead letter of a store, decoded.
pub fn store_dead_letters(
    store: &clinicea_notifier::outbox::store::Store,
) -> Vec<clinicea_notifier::outbox::entry::DeadLetter> {
    store
        .dead_entries()
        .unwrap()
        .into_iter()
        .map(|(_, dead)| dead)
        .collect()
}

/// Every queued outbox entry of a store, of every destination, decoded.
pub fn store_outbox(
    store: &clinicea_notifier::outbox::store::Store,
) -> Vec<clinicea_notifier::outbox::entry::OutboxEntry> {
    store.all_outbox().unwrap()
}

/// Every queued outbox entry of `destination`.
pub fn queued(
    engine: &Engine,
    destination: &str,
) -> Vec<clinicea_notifier::outbox::entry::OutboxEntry> {
    engine
        .store
        .outbox_entries(destination)
        .unwrap()
        .into_iter()
        .map(|(_, entry)| entry)
        .collect()
}

/// The attempts log of one delivery.
pub fn attempt_logs(
    engine: &Engine,
    seq: u64,
) -> Vec<clinicea_notifier::outbox::entry::AttemptLog> {
    engine.store.attempts(seq).unwrap()
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
pub fn mime_parts(m: &clinicea_notifier::kit::catcher::CaughtMessage) -> Vec<(String, String)> {
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

// ---------------------------------------------------------------------------------------------
// Operating the daemon (issue 6): the binary as a child process, and `/metrics` parsed.
// ---------------------------------------------------------------------------------------------

/// The `clinicea-notifier` binary running `run` as a child process, with its stderr captured.
/// A child process has its own metrics recorder, so counters start at zero.
pub struct MetricsDaemon {
    child: std::process::Child,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub addr: std::net::SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl MetricsDaemon {
    /// Starts `clinicea-notifier [args] --config CONFIG run` with `env` added to a clean
    /// environment (no `RUST_LOG`, so the default log level) and waits for its
    /// `listening on http://ADDR` line.
    pub fn start(config: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> MetricsDaemon {
        use std::io::{BufRead, Read};
        use std::process::{Command, Stdio};
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clinicea-notifier"));
        cmd.args(args)
            .arg("--config")
            .arg(config)
            .arg("run")
            .env_remove("RUST_LOG")
            .env_remove("CLINICEA_NOTIFIER_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the binary starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let out_pipe = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out_pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.trim().strip_prefix("listening on http://") {
                    let _ = tx.send(a.to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a.parse().expect("a socket address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the daemon did not say where it listens; stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        MetricsDaemon {
            child,
            addr,
            stderr,
        }
    }

    /// `http://ADDR/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits (up to 30 s) for it to exit; returns the exit status and stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("the daemon did not stop within 30s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // Let the reader thread take the last lines.
        std::thread::sleep(Duration::from_millis(100));
        (status, self.stderr())
    }
}

impl Drop for MetricsDaemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `/metrics` scrape, parsed: samples by name and label set, and `# TYPE` lines.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub text: String,
    pub samples: Vec<(String, std::collections::BTreeMap<String, String>, f64)>,
    pub types: HashMap<String, String>,
}

impl Scrape {
    /// Parses the Prometheus text exposition format (the subset the exporter writes).
    pub fn parse(text: &str) -> Scrape {
        let mut s = Scrape {
            text: text.to_string(),
            ..Scrape::default()
        };
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some((name, kind)) = rest.split_once(' ') {
                    s.types.insert(name.to_string(), kind.trim().to_string());
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or(f64::NAN),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), Default::default()),
                Some((name, rest)) => {
                    let body = rest.trim_end_matches('}');
                    let mut labels = std::collections::BTreeMap::new();
                    for pair in body.split("\",").filter(|p| !p.is_empty()) {
                        if let Some((k, v)) = pair.split_once("=\"") {
                            labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                        }
                    }
                    (name.to_string(), labels)
                }
            };
            s.samples.push((name, labels, value));
        }
        s
    }

    /// The value of the sample with exactly this name and label set.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: std::collections::BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .map(|(_, _, v)| *v)
    }

    /// The value, or 0 when the series does not exist (a counter never incremented).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Every sample of this name.
    pub fn all(&self, name: &str) -> Vec<(std::collections::BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, v)| (l.clone(), *v))
            .collect()
    }
}

/// GETs a URL: the status and the body.
pub async fn get_text(url: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// Scrapes `/metrics` at `base` (`http://ADDR`).
pub async fn scrape(base: &str) -> Scrape {
    let (status, text) = get_text(&format!("{base}/metrics")).await;
    assert_eq!(status, 200, "/metrics: {text}");
    Scrape::parse(&text)
}

// --- child processes, for the crash and signal tests ---------------------------------------------

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_clinicea-notifier");

/// A config for a child `run`/`once`: the sandbox's leads, `listen: 127.0.0.1:0` (so ports never
/// collide), `clinicea_extra` appended to the `clinicea:` section (e.g. `"  page_delay: 50ms\n"`)
/// and `rest` (retry, destinations, rules) at the end.
pub fn daemon_config(base_url: &str, clinicea_extra: &str, rest: &str) -> String {
    format!(
        "{}{clinicea_extra}listen: 127.0.0.1:0\nresources:\n  leads:\n    path: /api/v1/leads\nstore:\n  path: ./data\n{rest}",
        clinicea_section(base_url)
    )
}

/// One webhook destination's YAML (signed with [`SECRET`]); `extra` is more indented keys.
pub fn webhook_destination(name: &str, url: &str, extra: &str) -> String {
    format!("  {name}:\n    type: webhook\n    url: {url}\n    secret: {SECRET}\n{extra}")
}

/// The store directory of a [`daemon_config`] test.
pub fn store_path(t: &TestDir) -> PathBuf {
    t.dir.path().join("data")
}

/// Opens the store of a test whose child has exited (sled allows one process per store).
pub fn open_store(t: &TestDir) -> clinicea_notifier::outbox::store::Store {
    clinicea_notifier::outbox::store::Store::open(
        &store_path(t),
        clinicea_notifier::outbox::store::DEFAULT_CACHE_BYTES,
    )
    .expect("the store opens once the child has exited")
}

/// The record ids in the change journal, in journal order.
pub fn journal_ids(store: &clinicea_notifier::outbox::store::Store) -> Vec<String> {
    store
        .changes()
        .expect("the journal reads")
        .into_iter()
        .map(|(_, c)| c.id)
        .collect()
}

/// The ids of every lead the sandbox serves.
pub fn sandbox_lead_ids(sb: &SandboxHandle) -> std::collections::HashSet<String> {
    sb.sandbox
        .records("leads")
        .iter()
        .filter_map(|r| r["ID"].as_str().map(str::to_string))
        .collect()
}

/// How many lead pages the sandbox has served.
pub fn lead_requests(sb: &SandboxHandle) -> u64 {
    sb.sandbox
        .stats()
        .requests
        .get("leads")
        .copied()
        .unwrap_or(0)
}

/// Runs a one-shot command (`once`, `status`, `dead list`, ...) against the test's config.
pub async fn cli(t: &TestDir, args: &[&str]) -> std::process::Output {
    cli_env(t, args, &[]).await
}

/// [`cli`] with `env` added to the environment (`RUST_LOG` is removed unless given here).
pub async fn cli_env(t: &TestDir, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--config")
        .arg(&t.config)
        .args(args)
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let fut = cmd.output();
    match tokio::time::timeout(Duration::from_secs(60), fut).await {
        Ok(out) => out.expect("the binary starts"),
        Err(_) => panic!("`{}` did not finish within 60 s", args.join(" ")),
    }
}

/// Stdout and stderr of a finished command, for assertion messages.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A `clinicea-notifier run` child process. Its stdout and stderr go to files in the test's
/// directory (a pipe nobody reads could fill up and stall the child). Dropping it kills it.
pub struct Daemon {
    child: tokio::process::Child,
    /// The child's pid.
    pub pid: u32,
    /// The address it serves `/metrics` on (`127.0.0.1:PORT`).
    pub addr: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Daemon {
    /// Starts `run` and waits until it prints `listening on http://ADDR`.
    pub async fn start(t: &TestDir, tag: &str) -> Daemon {
        let stdout = t.dir.path().join(format!("{tag}.stdout"));
        let stderr = t.dir.path().join(format!("{tag}.stderr"));
        let child = tokio::process::Command::new(BIN)
            .arg("--config")
            .arg(&t.config)
            .arg("run")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        let pid = child.id().expect("a running child has a pid");
        let mut d = Daemon {
            child,
            pid,
            addr: String::new(),
            stdout,
            stderr,
        };
        let start = Instant::now();
        loop {
            let out = std::fs::read_to_string(&d.stdout).unwrap_or_default();
            if let Some(rest) = out.split("listening on http://").nth(1) {
                if let Some(addr) = rest.lines().next() {
                    d.addr = addr.trim().to_string();
                    return d;
                }
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!(
                    "`run` exited before listening ({status}):\n{}",
                    d.stderr_text()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "`run` did not start listening within 30 s:\n{}",
                d.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal by name (`TERM`, `HUP`, `INT`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{sig}"), self.pid.to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{sig} {} failed", self.pid);
    }

    /// SIGKILL (`kill -9`), then reaps the child.
    pub async fn kill9(mut self) {
        self.child.kill().await.expect("SIGKILL is delivered");
    }

    /// Waits up to `timeout` for the child to exit on its own.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .map(|r| r.expect("wait works"))
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the child logged so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the child's log holds `needle` `n` times; false on timeout.
    pub async fn wait_log(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        let start = Instant::now();
        loop {
            if self.stderr_text().matches(needle).count() >= n {
                return true;
            }
            if start.elapsed() > timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The value of a gauge or counter without labels from the child's `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(format!("http://{}/metrics", self.addr))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

/// Waits until `cond` holds, checking every 20 ms; false on timeout.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request a [`FnReceiver`] answered, with the status it answered.
#[derive(Debug, Clone)]
pub struct Answered {
    pub req: Received,
    pub status: u16,
}

impl Answered {
    /// `data.id` of the webhook body.
    pub fn data_id(&self) -> String {
        self.req.json()["data"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    /// Whether it was answered 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Decides the reply to the request numbered `n` (from 0).
pub type Replier = Arc<dyn Fn(usize, &Received) -> Reply + Send + Sync>;

/// A webhook receiver whose replies come from a function that can be swapped while it runs, and
/// that records the status it answered each request with.
#[derive(Clone)]
pub struct FnReceiver {
    pub url: String,
    got: Arc<Mutex<Vec<Answered>>>,
    replier: Arc<Mutex<Replier>>,
}

impl FnReceiver {
    /// Starts a receiver on loopback answering with `f`.
    pub async fn start(
        f: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> FnReceiver {
        let got: Arc<Mutex<Vec<Answered>>> = Arc::default();
        let replier: Arc<Mutex<Replier>> = Arc::new(Mutex::new(Arc::new(f)));
        let (g, r) = (got.clone(), replier.clone());
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let (g, r) = (g.clone(), r.clone());
            async move {
                let req = Received {
                    headers,
                    body,
                    at: Instant::now(),
                };
                // Choosing the reply and recording it happen under one lock, so the recorded
                // status is the one sent and `n` counts requests in arrival order.
                let reply = {
                    let mut g = g.lock().unwrap();
                    let f = r.lock().unwrap().clone();
                    let reply = f(g.len(), &req);
                    g.push(Answered {
                        req,
                        status: reply.status,
                    });
                    reply
                };
                reply_after_delay(reply).await
            }
        });
        let addr = serve_on_loopback(app).await;
        FnReceiver {
            url: format!("http://{addr}/hook"),
            got,
            replier,
        }
    }

    /// Replaces the reply function (requests already being answered keep their reply).
    pub fn set(&self, f: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static) {
        *self.replier.lock().unwrap() = Arc::new(f);
    }

    /// Everything answered so far.
    pub fn answered(&self) -> Vec<Answered> {
        self.got.lock().unwrap().clone()
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// The `data.id`s answered 2xx.
    pub fn ok_ids(&self) -> std::collections::HashSet<String> {
        self.answered()
            .iter()
            .filter(|a| a.ok())
            .map(Answered::data_id)
            .collect()
    }
}

// --- Added for the fault-injection and bad-input suites (issue 7) ------------------------------

/// What a [`ChaosReceiver`] got, with the status it answered.
#[derive(Debug, Clone)]
pub struct ChaosAnswered {
    pub got: Received,
    pub status: u16,
    /// [`verify_with_library`] on arrival (the library refuses timestamps older than 5 minutes,
    /// so a long run cannot check them at its end).
    pub verified: Result<(), String>,
}

/// A webhook receiver that, while chaotic, answers at random: mostly 200, sometimes 500/503,
/// 429 with `Retry-After: 1`, or a slow reply (some slower than the notifier's timeout).
/// [`ChaosReceiver::calm`] makes it answer 200 at once from then on.
#[derive(Clone)]
pub struct ChaosReceiver {
    pub url: String,
    got: Arc<Mutex<Vec<ChaosAnswered>>>,
    chaotic: Arc<std::sync::atomic::AtomicBool>,
}

impl ChaosReceiver {
    /// A receiver that always answers `status` at once.
    pub async fn always(status: u16) -> ChaosReceiver {
        ChaosReceiver::start_with(0, Some(status)).await
    }

    pub async fn start(seed: u64) -> ChaosReceiver {
        ChaosReceiver::start_with(seed, None).await
    }

    async fn start_with(seed: u64, fixed: Option<u16>) -> ChaosReceiver {
        use rand::{Rng, SeedableRng};
        let got: Arc<Mutex<Vec<ChaosAnswered>>> = Arc::default();
        let chaotic = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let rng = Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)));
        let (g, c) = (got.clone(), chaotic.clone());
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let (g, c, rng) = (g.clone(), c.clone(), rng.clone());
            async move {
                let (status, delay, retry_after) = if let Some(status) = fixed {
                    (status, 0, false)
                } else if c.load(std::sync::atomic::Ordering::SeqCst) {
                    let roll: f64 = rng.lock().unwrap().gen();
                    match roll {
                        r if r < 0.10 => (500, 0, false),
                        r if r < 0.16 => (503, 0, false),
                        r if r < 0.22 => (429, 0, true),
                        r if r < 0.30 => (200, 300, false),
                        r if r < 0.33 => (200, 2500, false),
                        _ => (200, 0, false),
                    }
                } else {
                    (200, 0, false)
                };
                let got = Received {
                    headers,
                    body,
                    at: Instant::now(),
                };
                let verified = verify_with_library(&got);
                g.lock().unwrap().push(ChaosAnswered {
                    got,
                    status,
                    verified,
                });
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let mut resp = axum::response::Response::new(axum::body::Body::from("ok"));
                *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                if retry_after {
                    resp.headers_mut()
                        .insert("retry-after", axum::http::HeaderValue::from_static("1"));
                }
                resp
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        ChaosReceiver {
            url: format!("http://{addr}/hook"),
            got,
            chaotic,
        }
    }

    /// From now on, answer 200 at once.
    pub fn calm(&self) {
        self.chaotic
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every request so far with its answer.
    pub fn answered(&self) -> Vec<ChaosAnswered> {
        self.got.lock().unwrap().clone()
    }
}

/// A notifier process (`run`), its output appended to a log file.
pub struct NotifierChild {
    pub child: std::process::Child,
}

impl NotifierChild {
    /// Starts `clinicea-notifier run --config CONFIG -q`, output to `log`.
    pub fn run(config: &std::path::Path, log: &std::path::Path) -> NotifierChild {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = std::process::Command::new(BIN)
            .args(["run", "-q", "--config"])
            .arg(config)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("the notifier starts");
        NotifierChild { child }
    }

    /// `kill -9`, and reaps it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `timeout` for it to exit (kill -9 after that). True when it
    /// exited on its own with success.
    pub fn terminate(mut self, timeout: Duration) -> bool {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for NotifierChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
