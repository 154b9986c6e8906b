//! Shared test parts: a directory with a config per test ([`TestDir`], written with the typed
//! [`Config`] builder), spawn-style starters for the sandbox, a fake API and the SMTP catcher,
//! the one [`Receiver`], the one child-process wrapper ([`Notifier`]), readers for a store and a
//! `/metrics` scrape, a PostgreSQL database per test (the store's `ScratchDatabase`), and MIME decoding for
//! caught email.

mod config;
mod mail;
mod metrics;
mod notifier;
mod receiver;
mod store;

pub use clinicea_notifier::outbox::scratch::ScratchDatabase;
pub use config::{
    Alerts, Chat, Clinic, Clinicea, Config, Resource, Retry, Rule, Smtp, StoreSection, Webhook,
};
pub use mail::mime_parts;
pub use metrics::{get_text, get_with_auth, scrape_until, Scrape};
pub use notifier::{check, cli, cli_env, output_text, Notifier, BIN};
pub use receiver::{verify_with_library, Received, Receiver, Reply, Responder};
pub use store::{
    attempt_logs, dead_list, journal_ids, open_store, queued, queued_in, store_dead_letters,
    store_outbox, store_path, take_journal_pages,
};

use axum::body::Bytes;
use axum::response::IntoResponse;
use clinicea_notifier::daemon::engine::Engine;
use clinicea_notifier::daemon::events::Events;
use clinicea_notifier::daemon::settings::{load_settings_with, Settings};
use clinicea_notifier::ingest::ctx::PollError;
use clinicea_notifier::ingest::poll::PollReport;
use clinicea_notifier::kit::catcher::{Catcher, CatcherHandle, CatcherOptions};
use clinicea_notifier::kit::sandbox::{Sandbox, SandboxHandle, SandboxOptions};
use clinicea_notifier::outbox::store::StoreError;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A webhook secret used by every test (Standard Webhooks' published example key).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How often [`eventually`] and [`drain_outbox`] look again.
const POLL_STEP: Duration = Duration::from_millis(20);

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
        match load_settings_with(&self.config, &self.vars) {
            Ok(s) => s,
            Err(e) => panic!("config should load: {e}"),
        }
    }

    /// Opens an engine (store in this directory).
    pub async fn engine(&self) -> Engine {
        Engine::open(self.settings(), Events::none())
            .await
            .expect("engine opens")
    }
}

/// A config polling the sandbox's leads at `base_url` only, no destinations.
pub fn leads_only(base_url: &str) -> Config {
    Config::new(Clinicea::sandbox(base_url))
}

/// A config: the sandbox's new leads go to the webhook `hooks` at `url` (rule `r`, 5 s timeout).
pub fn new_leads_to_hooks(base_url: &str, url: &str) -> Config {
    leads_only(base_url)
        .webhook("hooks", url, |w| w.timeout("5s"))
        .rule(Rule::new("r", &["hooks"]).resource("leads").on(&["added"]))
}

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

/// A default sandbox with `leads` leads.
pub async fn sandbox_with_leads(leads: usize) -> SandboxHandle {
    sandbox(SandboxOptions {
        leads,
        ..SandboxOptions::default()
    })
    .await
}

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

/// Starts the product's SMTP catcher on a free loopback port.
pub async fn start_catcher(opts: CatcherOptions) -> CatcherHandle {
    Catcher::start("127.0.0.1:0", opts)
        .await
        .expect("the catcher starts")
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

/// A fake Clinicea API serving a fixed body for page 0 of the leads and 204 after it.
pub struct StaticApi {
    pub base_url: String,
    body: Arc<Mutex<Vec<u8>>>,
}

impl StaticApi {
    /// Starts it on a free loopback port, serving `body`.
    pub async fn start(body: impl Into<Vec<u8>>) -> StaticApi {
        let body = Arc::new(Mutex::new(body.into()));
        let b = body.clone();
        let app = axum::Router::new().route(
            "/api/v1/leads",
            axum::routing::get(move |axum::extract::RawQuery(q): axum::extract::RawQuery| {
                let b = b.clone();
                async move {
                    let q = q.unwrap_or_default();
                    if q.contains("intPageNo=0") {
                        let body = b.lock().unwrap().clone();
                        (
                            axum::http::StatusCode::OK,
                            [("content-type", "application/json")],
                            Bytes::from(body),
                        )
                            .into_response()
                    } else {
                        axum::http::StatusCode::NO_CONTENT.into_response()
                    }
                }
            }),
        );
        let addr = serve_on_loopback(app).await;
        StaticApi {
            base_url: format!("http://{addr}"),
            body,
        }
    }

    /// Serves `body` from now on.
    pub fn set(&self, body: impl Into<Vec<u8>>) {
        *self.body.lock().unwrap() = body.into();
    }
}

/// Serves `app` on a free loopback port and returns the address.
pub async fn serve_on_loopback(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A loopback port with nothing listening on it (at the moment of asking).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Polls every resource once: the report of the first (in most configs the only one).
pub async fn poll_report(engine: &Engine) -> Result<PollReport, PollError<StoreError>> {
    engine.poll_all().await.remove(0).result
}

/// Delivers until the outbox is empty or `timeout` passes.
pub async fn drain_outbox(engine: &Engine, timeout: Duration) {
    let start = Instant::now();
    while engine.store.outbox_len().await.unwrap() > 0 && start.elapsed() < timeout {
        engine.deliverer.deliver_all_due().await.unwrap();
        tokio::time::sleep(POLL_STEP).await;
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
        tokio::time::sleep(POLL_STEP).await;
    }
}

/// A webhook secret nobody published (the specification's example is refused for remote
/// receivers).
pub const FRESH_SECRET: &str = "whsec_8vJ7wPz1m3Qx5tKcR0yNaBdEfGhIjKlM";

/// The shipped example config, `rules.example.yaml`.
pub fn example_config() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("rules.example.yaml")
        .display()
        .to_string()
}

/// Sets the variables the example config reads.
pub fn example_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.env("CLINICEA_BASE_URL", "https://api.clinicea.com")
        .env("CLINICEA_API_KEY", "test-key")
        .env("SMTP_HOST", "smtp.example.com")
        .env("SMTP_PASSWORD", "p")
        .env(
            "AUTOMATION_WEBHOOK_URL",
            "https://automation.example.com/hooks/clinicea",
        )
        .env("AUTOMATION_WEBHOOK_SECRET", FRESH_SECRET)
        .env(
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/X",
        )
}
