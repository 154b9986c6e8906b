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

// --- Added for the fault-injection and bad-input suites (issue 7) ------------------------------

/// The notifier binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_clinicea-notifier");

/// What a [`ChaosReceiver`] got, with the status it answered.
#[derive(Debug, Clone)]
pub struct Answered {
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
    got: Arc<Mutex<Vec<Answered>>>,
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
        let got: Arc<Mutex<Vec<Answered>>> = Arc::default();
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
                g.lock().unwrap().push(Answered {
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
    pub fn answered(&self) -> Vec<Answered> {
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
