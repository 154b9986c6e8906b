//! Change-to-webhook latency (issue 17): how long a lead made in the sandbox takes to reach its
//! receiver, for three ways of running the real `clinicea-notifier run` side by side in one run,
//! each on a sandbox and a receiver of its own:
//!
//! * `plain`: `poll_interval: 60s`, nothing else;
//! * `adaptive`: `poll_interval: 60s`, `poll_interval_min: 5s`;
//! * `trigger`: `poll_interval: 60s`, and each change is followed at once by the call Clinicea
//!   would make, `POST /trigger/default/leads/{token}`.
//!
//! Changes are made at random times (exponential gaps, mean `BENCH_LATENCY_MEAN_GAP_SECS`,
//! default 8 s) for `BENCH_LATENCY_SECS` (default 240 s); each is timed from its insert to the
//! arrival of its webhook. Prints p50, p90, p99 and max per mode. Needs the release binary:
//! `cargo build --release --bin clinicea-notifier && cargo bench --bench latency`.

mod common;
use axum::body::Bytes;
use clinicea_notifier::kit::sandbox::{Sandbox, SandboxHandle, SandboxOptions};
use common::{env_or, free_port, notifier_binary, API_KEY, SECRET};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-trigger-token-0123456789";
/// How long the last change may take to arrive once changes stop (beyond one poll interval).
const DRAIN: Duration = Duration::from_secs(70);

/// A receiver that notes when each record's first webhook arrived.
async fn receiver() -> (String, Arc<Mutex<HashMap<String, Instant>>>) {
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let s = s.clone();
        async move {
            let at = Instant::now();
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                if let Some(id) = v["data"]["id"].as_str() {
                    s.lock().unwrap().entry(id.to_string()).or_insert(at);
                }
            }
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

/// One mode: its sandbox, receiver, running notifier and the changes made on it.
struct Mode {
    name: &'static str,
    trigger_url: Option<String>,
    sb: SandboxHandle,
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    made: Vec<(String, Instant)>,
    _dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

async fn start(name: &'static str, extra: &str, trigger: bool) -> Mode {
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
    .expect("sandbox starts");
    let (hook, seen) = receiver().await;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let token = if trigger {
        format!("  trigger_token: {TOKEN}\n")
    } else {
        String::new()
    };
    let yaml = format!(
        "clinicea:\n  base_url: {}\n  api_key: {API_KEY}\n  poll_interval: 60s\n{extra}{token}  baseline: {{ enabled: false }}\n\
resources:\n  leads:\n    path: /api/v1/leads\n\
store:\n  path: ./data\n\
listen: 127.0.0.1:{port}\n\
destinations:\n  hook:\n    type: webhook\n    url: {hook}\n    secret: {SECRET}\n\
rules:\n  - name: all-leads\n    resource: leads\n    notify: [hook]\n",
        sb.base_url()
    );
    let config = dir.path().join("clinicea-notifier.yaml");
    std::fs::write(&config, yaml).unwrap();
    let child = tokio::process::Command::new(notifier_binary())
        .args(["--config", config.to_str().unwrap(), "-q", "run"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("target/release/clinicea-notifier exists (cargo build --release first)");
    let health = format!("http://127.0.0.1:{port}/healthz");
    let client = reqwest::Client::new();
    let up = Instant::now() + Duration::from_secs(30);
    while client.get(&health).send().await.is_err() {
        assert!(Instant::now() < up, "{name}: the notifier did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Mode {
        name,
        trigger_url: trigger
            .then(|| format!("http://127.0.0.1:{port}/trigger/default/leads/{TOKEN}")),
        sb,
        seen,
        made: Vec::new(),
        _dir: dir,
        _child: child,
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn main() {
    let secs = env_or::<u64>("BENCH_LATENCY_SECS", 240);
    let mean_gap = env_or::<u64>("BENCH_LATENCY_MEAN_GAP_SECS", 8) as f64;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut modes = vec![
            start("plain (interval 60s)", "", false).await,
            start("adaptive (60s, min 5s)", "  poll_interval_min: 5s\n", false).await,
            start("trigger (60s + POST /trigger)", "", true).await,
        ];
        // Past the first poll of each (at start) and its quiet period.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let client = reqwest::Client::new();
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let until = Instant::now() + Duration::from_secs(secs);
        let mut n = 0u64;
        while Instant::now() < until {
            let gap: f64 = -mean_gap * (1.0 - rng.gen::<f64>()).ln();
            tokio::time::sleep(Duration::from_secs_f64(gap.min(mean_gap * 4.0))).await;
            n += 1;
            // One change in every mode at the same instant, so they see the same arrivals.
            for m in &mut modes {
                let lead = m.sb.sandbox.insert(
                    "leads",
                    serde_json::json!({ "FirstName": "Latency", "LastName": format!("{n}") }),
                );
                let id = lead["ID"].as_str().unwrap().to_string();
                m.made.push((id, Instant::now()));
                if let Some(url) = &m.trigger_url {
                    let r = client.post(url).send().await.expect("the trigger answers");
                    assert_eq!(r.status().as_u16(), 202, "{}", m.name);
                }
            }
        }
        let drain = Instant::now() + DRAIN;
        while Instant::now() < drain
            && modes
                .iter()
                .any(|m| m.seen.lock().unwrap().len() < m.made.len())
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "\n{} changes per mode over {secs} s (mean gap {mean_gap} s)\n",
            modes[0].made.len()
        );
        println!(
            "| {:<30} | {:>8} | {:>8} | {:>8} | {:>8} | {:>9} |",
            "mode", "p50 s", "p90 s", "p99 s", "max s", "delivered"
        );
        println!(
            "|{:-<32}|{:-<10}|{:-<10}|{:-<10}|{:-<10}|{:-<11}|",
            "", "", "", "", "", ""
        );
        for m in &modes {
            let seen = m.seen.lock().unwrap();
            let mut lat: Vec<f64> = m
                .made
                .iter()
                .filter_map(|(id, at)| {
                    seen.get(id)
                        .map(|got| got.duration_since(*at).as_secs_f64())
                })
                .collect();
            lat.sort_by(f64::total_cmp);
            if lat.is_empty() {
                println!("| {:<30} | nothing delivered |", m.name);
                continue;
            }
            println!(
                "| {:<30} | {:>8.2} | {:>8.2} | {:>8.2} | {:>8.2} | {:>4}/{:<4} |",
                m.name,
                percentile(&lat, 0.5),
                percentile(&lat, 0.9),
                percentile(&lat, 0.99),
                lat[lat.len() - 1],
                lat.len(),
                m.made.len()
            );
        }
    });
}
