//! The notifier beside Prometheus Alertmanager on the same machine (issue 17, "Must show"): how
//! fast each turns 20,000 events into HTTP notifications to the same counting receiver.
//!
//! * **notifier**: a real `target/release/clinicea-notifier run` (its defaults; a trigger token,
//!   a listener and one webhook destination) polls an empty sandbox. 20,000 generated leads are
//!   then put in the sandbox and the poll trigger is called, as Clinicea would; timed from the
//!   trigger call to the arrival of the 20,000th distinct signed webhook (poll -> diff -> rules ->
//!   outbox -> worker). Every webhook's signature is checked afterwards.
//! * **alertmanager**: Debian's `prometheus-alertmanager` on loopback (clustering off, since a
//!   lone instance needs no gossip port), its route with grouping off (`group_by: ['...']`,
//!   `group_wait: 0s`; `group_interval` and `repeat_interval` at their defaults, which are longer
//!   than a run, so each alert is sent once) and a `webhook_configs` entry pointing at the
//!   receiver. The same 20,000 leads, each an alert (its id a label, its fields annotations), are
//!   pushed to `POST /api/v2/alerts` in batches of 256, one at a time, as Prometheus sends them;
//!   timed from the first push to the arrival of the 20,000th distinct alert. A notification may
//!   carry several alerts, so alerts are counted, not requests (both are printed).
//!
//! The two alternate (`BENCH_VERSUS_PAIRS` pairs, default 5, the first of each pair switching
//! sides) because the machine is shared and noisy; each pair gives a ratio (notifier's rate over
//! Alertmanager's) and the table's last row is the pair with the median ratio. Target: >= 2.
//!
//! Run with `BENCH_ONLY=V bench/run.sh` (it builds the release binary and installs the package
//! when `alertmanager` is missing), or `cargo bench --bench versus_alertmanager` after
//! `cargo build --release --bin clinicea-notifier`. `BENCH_VERSUS_EVENTS` (default 20000) sizes a
//! run, `BENCH_VERSUS_BATCH` (default 256) the pushes, and `BENCH_ALERTMANAGER` names another
//! Alertmanager binary. Without Alertmanager it says so and exits 2; no figure is made up.
//! Loopback only; every wait has a deadline; each run's child process is killed and its temp dir
//! removed before the next.

mod common;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use clinicea_notifier::kit::sandbox::{Sandbox, SandboxHandle, SandboxOptions};
use common::{env_or, free_port, notifier_binary, print_table, row, Row, API_KEY, SECRET};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-versus-trigger-token-0123456789";
/// Alerts per `POST /api/v2/alerts` unless `BENCH_VERSUS_BATCH` says otherwise: Prometheus's
/// notifier sends at most 256 at a time, one request after another (`DefaultMaxBatchSize` in
/// its `notifier/manager.go`; 64 in Prometheus 2). The larger batch is the kinder to Alertmanager.
const PUSH_BATCH: usize = 256;
/// How long one run may take to get every event to the receiver.
const RUN_DEADLINE: Duration = Duration::from_secs(120);
/// How long a child process may take to start answering.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// The target for notifier rate / Alertmanager rate.
const TARGET_RATIO: f64 = 2.0;

// --- the counting receiver -------------------------------------------------------------------

/// What one path of the receiver has seen since it was armed.
#[derive(Default)]
struct Seen {
    /// HTTP requests (notifications).
    requests: u64,
    /// Events carried: one per webhook; each alert of an Alertmanager notification.
    events: u64,
    /// Distinct event ids (the lead's id on both sides), so a repeat is not counted twice.
    ids: HashSet<String>,
    /// Bodies that were not what the sender is documented to send.
    malformed: u64,
    /// How many distinct ids end the run, and when the last of them arrived.
    target: usize,
    reached: Option<Instant>,
    /// When the first event arrived.
    first: Option<Instant>,
    /// The notifier's signed webhooks (the three `webhook-*` headers and the body), checked after
    /// the run so the check costs nothing while it is timed.
    signed: Vec<([String; 3], Bytes)>,
}

impl Seen {
    fn note(&mut self, id: Option<&str>) {
        self.events += 1;
        self.first.get_or_insert_with(Instant::now);
        match id {
            Some(id) => {
                self.ids.insert(id.to_string());
            }
            None => self.malformed += 1,
        }
        if self.reached.is_none() && self.target > 0 && self.ids.len() >= self.target {
            self.reached = Some(Instant::now());
        }
    }
}

#[derive(Clone, Default)]
struct Counters {
    hook: Arc<Mutex<Seen>>,
    am: Arc<Mutex<Seen>>,
}

/// The notifier's webhook: one event per request, the lead's id at `data.id`.
async fn on_hook(State(c): State<Counters>, headers: HeaderMap, body: Bytes) -> &'static str {
    let id = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["data"]["id"].as_str().map(str::to_string));
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let signed = [
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ];
    let mut s = c.hook.lock().unwrap();
    s.requests += 1;
    s.note(id.as_deref());
    s.signed.push((signed, body));
    "ok"
}

/// Alertmanager's webhook: `alerts` holds the notification's alerts, the lead's id a label.
async fn on_am(State(c): State<Counters>, body: Bytes) -> &'static str {
    let v = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let mut s = c.am.lock().unwrap();
    s.requests += 1;
    match v["alerts"].as_array() {
        Some(alerts) => {
            for a in alerts {
                s.note(a["labels"]["id"].as_str());
            }
        }
        None => s.malformed += 1,
    }
    "ok"
}

/// Starts the receiver on 127.0.0.1: `/hook` for the notifier, `/am` for Alertmanager.
async fn receiver() -> (String, Counters) {
    let counters = Counters::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(on_hook))
        .route("/am", axum::routing::post(on_am))
        .with_state(counters.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), counters)
}

/// Clears `seen` and sets how many distinct ids end the next run.
fn arm(seen: &Mutex<Seen>, target: usize) {
    *seen.lock().unwrap() = Seen {
        target,
        ..Seen::default()
    };
}

/// Waits until `seen` reached its target (Some(when)) or the deadline passed (None). The instant
/// is taken in the handler, so this loop's 10 ms steps do not add to the measured time.
/// `sample` runs at every step (the notifier's side notes when the sandbox stopped being read).
async fn reached(
    seen: &Mutex<Seen>,
    deadline: Instant,
    mut sample: impl FnMut(),
) -> Option<Instant> {
    loop {
        sample();
        if let Some(at) = seen.lock().unwrap().reached {
            return Some(at);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// --- one run of each side --------------------------------------------------------------------

/// What one run measured.
struct Run {
    secs: f64,
    /// Distinct events received, and everything received (repeats included).
    distinct: usize,
    events: u64,
    requests: u64,
    /// A line for stderr about where the time went.
    note: String,
}

impl Run {
    fn rate(&self) -> f64 {
        self.distinct as f64 / self.secs
    }
}

/// A child process, killed (and reaped) when the run ends, with its log file.
struct ChildProc {
    child: tokio::process::Child,
    log: PathBuf,
}

impl ChildProc {
    fn spawn(cmd: &mut tokio::process::Command, log: PathBuf, what: &str) -> Result<Self, String> {
        let file = std::fs::File::create(&log).map_err(|e| format!("{what}: log file: {e}"))?;
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{what} did not start: {e}"))?;
        Ok(ChildProc { child, log })
    }

    /// The end of its log, for a failure's message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Fails if the process has exited already (it should be serving).
    fn check_alive(&mut self, what: &str) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!("{what} exited ({status}):\n{}", self.log_tail())),
            _ => Ok(()),
        }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Polls `url` until it answers 200 (the child is up), within [`START_DEADLINE`].
async fn wait_ok(
    http: &reqwest::Client,
    url: &str,
    child: &mut ChildProc,
    what: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        child.check_alive(what)?;
        if let Ok(r) = http.get(url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{what} did not answer {url} within {START_DEADLINE:?}:\n{}",
                child.log_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Seconds from `t0` to `at` (0 when it never happened).
fn since(t0: Instant, at: Option<Instant>) -> f64 {
    at.map_or(0.0, |at| at.duration_since(t0).as_secs_f64())
}

fn leads_requested(sb: &SandboxHandle) -> u64 {
    sb.sandbox
        .stats()
        .requests
        .into_iter()
        .find(|(k, _)| k == "leads")
        .map_or(0, |(_, n)| n)
}

/// The notifier's side: `run` on an empty sandbox, then `leads` added and the trigger called.
async fn notifier_run(leads: &[Value], base: &str, counters: &Counters) -> Result<Run, String> {
    let sb = Sandbox::start(
        SandboxOptions {
            leads: 0,
            patients: 0,
            appointments: 0,
            ..SandboxOptions::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .map_err(|e| format!("sandbox: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = free_port();
    // What a user writes: the defaults (60 s interval, silent baseline, `start_from: now`,
    // concurrency 8, sled with its default cache) plus the trigger Clinicea calls on a change.
    let yaml = format!(
        "clinicea:\n  base_url: {}\n  api_key: {API_KEY}\n  trigger_token: {TOKEN}\n\
resources:\n  leads:\n    path: /api/v1/leads\n\
store:\n  path: ./data\n\
listen: 127.0.0.1:{port}\n\
destinations:\n  hook:\n    type: webhook\n    url: {base}/hook\n    secret: {SECRET}\n\
rules:\n  - name: all-leads\n    resource: leads\n    notify: [hook]\n",
        sb.base_url()
    );
    let config = dir.path().join("clinicea-notifier.yaml");
    std::fs::write(&config, yaml).map_err(|e| e.to_string())?;
    let mut child = ChildProc::spawn(
        tokio::process::Command::new(notifier_binary())
            .args(["--config", config.to_str().unwrap(), "-q", "run"])
            .current_dir(dir.path()),
        dir.path().join("notifier.log"),
        "clinicea-notifier run",
    )?;
    let result = async {
        let http = reqwest::Client::new();
        let health = format!("http://127.0.0.1:{port}/healthz");
        wait_ok(&http, &health, &mut child, "clinicea-notifier").await?;
        // The first poll (at start, after the empty baseline), then past the trigger's minimum
        // gap after it (2 s), so the triggered poll waits only for the trigger's 100 ms of quiet.
        let deadline = Instant::now() + START_DEADLINE;
        while leads_requested(&sb) == 0 {
            if Instant::now() >= deadline {
                return Err("the notifier never polled leads".to_string());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(2_500)).await;

        // The changes exist in Clinicea before the clock starts, as the alerts exist in the
        // client before its first push.
        let t = Instant::now();
        for lead in leads {
            sb.sandbox.insert("leads", lead.clone());
        }
        let insert_secs = t.elapsed().as_secs_f64();
        arm(&counters.hook, leads.len());
        let before = leads_requested(&sb);

        let t0 = Instant::now();
        let trigger = format!("http://127.0.0.1:{port}/trigger/default/leads/{TOKEN}");
        let r = http
            .post(&trigger)
            .send()
            .await
            .map_err(|e| format!("trigger: {e}"))?;
        if r.status().as_u16() != 202 {
            return Err(format!("the trigger answered {}", r.status()));
        }
        // When the sandbox served its last page, to 10 ms: the ingest's end; and how many
        // webhooks had arrived by then (how much delivery overlapped the ingest).
        let (mut requests, mut last_read, mut by_last_read) = (before, t0, 0);
        let got = reached(&counters.hook, t0 + RUN_DEADLINE, || {
            let now = leads_requested(&sb);
            if now != requests {
                (requests, last_read) = (now, Instant::now());
                by_last_read = counters.hook.lock().unwrap().ids.len();
            }
        })
        .await;
        child.check_alive("clinicea-notifier")?;
        let s = counters.hook.lock().unwrap();
        let Some(at) = got else {
            return Err(format!(
                "notifier: {} of {} webhooks within {RUN_DEADLINE:?}",
                s.ids.len(),
                leads.len()
            ));
        };
        let wh = standardwebhooks::Webhook::new(SECRET).map_err(|e| format!("{e:?}"))?;
        let mut bad = 0usize;
        for ([id, ts, sig], body) in &s.signed {
            let mut h = axum::http::HeaderMap::new();
            for (name, value) in [
                ("webhook-id", id),
                ("webhook-timestamp", ts),
                ("webhook-signature", sig),
            ] {
                if let Ok(v) = value.parse() {
                    h.insert(name, v);
                }
            }
            if wh.verify(body, &h).is_err() {
                bad += 1;
            }
        }
        if bad > 0 || s.malformed > 0 {
            return Err(format!(
                "notifier: {bad} webhooks failed verification, {} malformed",
                s.malformed
            ));
        }
        Ok(Run {
            secs: at.duration_since(t0).as_secs_f64(),
            distinct: s.ids.len(),
            events: s.events,
            requests: s.requests,
            note: format!(
                "first webhook at {:.2}s, last page read at ~{:.2}s ({} API requests, \
                 {by_last_read} webhooks by then); {} leads inserted in {insert_secs:.2}s before the clock; every signature verified",
                since(t0, s.first),
                last_read.duration_since(t0).as_secs_f64(),
                leads_requested(&sb) - before,
                leads.len(),
            ),
        })
    }
    .await;
    child.stop().await;
    drop(dir);
    result
}

/// Alertmanager's config: grouping off (every alert its own group, sent without waiting), the
/// route's other timings at their defaults, one webhook receiver.
fn alertmanager_config(url: &str) -> String {
    format!(
        "route:\n  receiver: count\n  group_by: ['...']\n  group_wait: 0s\n  group_interval: 5m\n  repeat_interval: 4h\n\
receivers:\n  - name: count\n    webhook_configs:\n      - url: {url}\n"
    )
}

/// The alerts for `leads`, serialized into bodies of `batch` alerts each: the lead's id a
/// label (so each alert is distinct), its other fields annotations (so an alert carries what a
/// webhook carries).
fn alert_batches(leads: &[Value], batch: usize) -> Vec<Vec<u8>> {
    let now = chrono::Utc::now().to_rfc3339();
    leads
        .chunks(batch)
        .map(|chunk| {
            let alerts: Vec<Value> = chunk
                .iter()
                .map(|lead| {
                    let mut annotations = Map::new();
                    let mut id = String::new();
                    for (k, v) in lead.as_object().into_iter().flatten() {
                        let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                        if k == "ID" {
                            id = text;
                        } else {
                            annotations.insert(k.clone(), Value::String(text));
                        }
                    }
                    json!({
                        "labels": { "alertname": "LeadAdded", "resource": "leads", "id": id },
                        "annotations": annotations,
                        "startsAt": now,
                    })
                })
                .collect();
            serde_json::to_vec(&alerts).unwrap()
        })
        .collect()
}

/// Alertmanager's side: a fresh instance, the alerts pushed batch by batch.
async fn alertmanager_run(
    bin: &Path,
    leads: &[Value],
    base: &str,
    counters: &Counters,
) -> Result<Run, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(&config, alertmanager_config(&format!("{base}/am")))
        .map_err(|e| e.to_string())?;
    let port = free_port();
    let mut child = ChildProc::spawn(
        tokio::process::Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .current_dir(dir.path()),
        dir.path().join("alertmanager.log"),
        "alertmanager",
    )?;
    let result = async {
        let http = reqwest::Client::new();
        let api = format!("http://127.0.0.1:{port}");
        wait_ok(&http, &format!("{api}/-/ready"), &mut child, "alertmanager").await?;
        let batch = env_or::<usize>("BENCH_VERSUS_BATCH", PUSH_BATCH).max(1);
        let batches = alert_batches(leads, batch);
        arm(&counters.am, leads.len());
        let url = format!("{api}/api/v2/alerts");

        let t0 = Instant::now();
        for body in batches {
            let r = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .map_err(|e| format!("push: {e}"))?;
            if !r.status().is_success() {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                return Err(format!("alertmanager refused a push: {status} {text}"));
            }
            if t0.elapsed() > RUN_DEADLINE {
                return Err("alertmanager: the push took longer than the deadline".into());
            }
        }
        let push_secs = t0.elapsed().as_secs_f64();
        let got = reached(&counters.am, t0 + RUN_DEADLINE, || ()).await;
        child.check_alive("alertmanager")?;
        let s = counters.am.lock().unwrap();
        let Some(at) = got else {
            return Err(format!(
                "alertmanager: {} of {} alerts within {RUN_DEADLINE:?}:\n{}",
                s.ids.len(),
                leads.len(),
                child.log_tail()
            ));
        };
        if s.malformed > 0 {
            return Err(format!(
                "alertmanager: {} malformed notifications",
                s.malformed
            ));
        }
        Ok(Run {
            secs: at.duration_since(t0).as_secs_f64(),
            distinct: s.ids.len(),
            events: s.events,
            requests: s.requests,
            note: format!(
                "first notification at {:.2}s, pushed in {push_secs:.2}s ({} POSTs of \
                 {batch}); {:.2} alerts per notification",
                since(t0, s.first),
                leads.len().div_ceil(batch),
                s.events as f64 / s.requests.max(1) as f64
            ),
        })
    }
    .await;
    child.stop().await;
    drop(dir);
    result
}

// --- main -------------------------------------------------------------------------------------

/// `BENCH_ALERTMANAGER`, else `alertmanager` on `PATH`, else Debian's binary.
fn find_alertmanager() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("BENCH_ALERTMANAGER") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("alertmanager"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin/prometheus-alertmanager")).filter(|p| p.is_file()))
}

fn version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default()
}

fn main() {
    let Some(am_bin) = find_alertmanager() else {
        eprintln!(
            "V: Alertmanager not found (no BENCH_ALERTMANAGER, no `alertmanager` on PATH, no \
             /usr/bin/prometheus-alertmanager). Install Debian's package \
             (`apt-get install -y prometheus-alertmanager`; bench/run.sh does). No figures."
        );
        std::process::exit(2);
    };
    if !notifier_binary().is_file() {
        eprintln!(
            "V: {} is missing: run `cargo build --release --bin clinicea-notifier` first. No figures.",
            notifier_binary().display()
        );
        std::process::exit(2);
    }
    let n = env_or::<usize>("BENCH_VERSUS_EVENTS", 20_000);
    let pairs = env_or::<usize>("BENCH_VERSUS_PAIRS", 5).max(1);
    eprintln!(
        "V: {} ({}), {n} events, {pairs} pairs",
        am_bin.display(),
        version(&am_bin)
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let outcome: Result<Vec<(Run, Run)>, String> = rt.block_on(async {
        // The same generated leads on both sides (the sandbox's own generator, its seed fixed).
        let leads = {
            let generator = Sandbox::start(
                SandboxOptions {
                    leads: n,
                    patients: 0,
                    appointments: 0,
                    ..SandboxOptions::default()
                },
                "127.0.0.1:0".parse().unwrap(),
            )
            .await
            .map_err(|e| format!("sandbox: {e}"))?;
            generator.sandbox.records("leads")
        };
        let (base, counters) = receiver().await;
        let mut done = Vec::new();
        for pair in 0..pairs {
            // Each pair switches which side goes first, so neither always runs on a machine the
            // other just warmed (or just loaded).
            let (notifier, am) = if pair % 2 == 0 {
                let nr = notifier_run(&leads, &base, &counters).await?;
                let ar = alertmanager_run(&am_bin, &leads, &base, &counters).await?;
                (nr, ar)
            } else {
                let ar = alertmanager_run(&am_bin, &leads, &base, &counters).await?;
                let nr = notifier_run(&leads, &base, &counters).await?;
                (nr, ar)
            };
            for (side, r) in [("notifier", &notifier), ("alertmanager", &am)] {
                eprintln!(
                    "V pair {}: {side:<12} {:>6} events in {:.2}s = {:>8.0}/s ({} received, {} requests); {}",
                    pair + 1,
                    r.distinct,
                    r.secs,
                    r.rate(),
                    r.events,
                    r.requests,
                    r.note
                );
            }
            done.push((notifier, am));
        }
        Ok(done)
    });
    let done = match outcome {
        Ok(d) => d,
        Err(e) => {
            eprintln!("V: FAILED, no figures: {e}");
            std::process::exit(1);
        }
    };

    let mut rows: Vec<Row> = Vec::new();
    let mut ratios: Vec<(f64, usize)> = Vec::new();
    for (i, (nr, ar)) in done.iter().enumerate() {
        let ratio = nr.rate() / ar.rate();
        ratios.push((ratio, i));
        rows.push(
            row(
                &format!("V pair {}: notifier ({n}); ceiling: alertmanager", i + 1),
                nr.rate(),
                "events/s",
                Some(ar.rate()),
            )
            .target(">= 2 (ratio)", ratio >= TARGET_RATIO),
        );
    }
    ratios.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (median, at) = ratios[ratios.len() / 2];
    let (nr, ar) = &done[at];
    rows.push(
        row(
            &format!("V median ratio of {pairs} pairs (pair {})", at + 1),
            nr.rate(),
            "events/s",
            Some(ar.rate()),
        )
        .target(">= 2 (ratio)", median >= TARGET_RATIO),
    );
    print_table(&rows);
}
