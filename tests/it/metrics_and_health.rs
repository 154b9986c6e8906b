//! Operating the daemon over HTTP: `/metrics` counts what happened and asks for its bearer
//! token when one is set (a short or placeholder one is refused), `/readyz` follows the first poll
//! and the watchdog, and `/healthz` only says the process answers.
//!
//! Metrics are checked on the real binary as a child process: the metrics recorder is
//! process-wide, so only a process of its own gives exact counter values. Readiness is checked
//! in-process through `daemon::run`.

use crate::support::*;
use clinicea_notifier::kit::sandbox::{Fault, FaultKind};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_polls_records_changes_deliveries_and_latency() {
    let sb = default_sandbox().await; // 137 leads, 12 patients
                                      // Two 500s (retried, then delivered) and one 400 (dead at once); everything else 200.
    let hooks = Receiver::with(Responder::script([
        Reply::status(500),
        Reply::status(500),
        Reply::status(400),
    ]))
    .await;
    let team = Receiver::start().await;
    // One poll per resource during the test: the interval is an hour.
    let config = Config::new(
        Clinicea::sandbox(&sb.base_url())
            .api_key("${CLINICEA_API_KEY}")
            .poll_interval("1h"),
    )
    .resource(Resource::patients())
    .listen()
    .webhook("hooks", &hooks.url, |w| {
        w.timeout("5s").retry(Retry::every("1s", 3))
    })
    .webhook("team", &team.url, |w| w.timeout("5s"))
    .rule(
        Rule::new("leads-to-hooks", &["hooks"])
            .resource("leads")
            .on(&["added"]),
    )
    .rule(
        Rule::new("patients-to-team", &["team"])
            .resource("patients")
            .on(&["added"]),
    );
    let t = TestDir::new(&config.to_yaml());
    let mut d = Notifier::run(&t)
        .env(&[("CLINICEA_API_KEY", "sandbox-api-key")])
        .ready_within(Duration::from_secs(60))
        .start()
        .await;
    let base = d.url("");

    let deliveries = |s: &Scrape, dest: &str, outcome: &str| {
        s.value(
            "clinicea_notifier_deliveries_total",
            &[
                ("clinic", "default"),
                ("destination", dest),
                ("outcome", outcome),
            ],
        )
    };
    let s = scrape_until(&base, Duration::from_secs(60), |s| {
        deliveries(s, "hooks", "delivered") >= 136.0
            && deliveries(s, "hooks", "dead") >= 1.0
            && deliveries(s, "team", "delivered") >= 12.0
    })
    .await;

    // Polls, records, changes: exactly one poll of each resource, every record new.
    for (res, n) in [("leads", 137.0), ("patients", 12.0)] {
        let r = [("clinic", "default"), ("resource", res)];
        assert_eq!(
            s.get("clinicea_notifier_polls_total", &r),
            Some(1.0),
            "{res}"
        );
        assert_eq!(
            s.value("clinicea_notifier_poll_failures_total", &r),
            0.0,
            "{res}"
        );
        assert_eq!(
            s.get("clinicea_notifier_records_fetched_total", &r),
            Some(n),
            "{res}"
        );
        assert_eq!(
            s.get(
                "clinicea_notifier_changes_total",
                &[
                    ("clinic", "default"),
                    ("resource", res),
                    ("change", "added")
                ]
            ),
            Some(n),
            "{res}"
        );
        for kind in ["modified", "deleted"] {
            assert_eq!(
                s.value(
                    "clinicea_notifier_changes_total",
                    &[("clinic", "default"), ("resource", res), ("change", kind)]
                ),
                0.0
            );
        }
        let last = s
            .get("clinicea_notifier_last_success_timestamp_seconds", &r)
            .expect("last success timestamp");
        assert!((chrono::Utc::now().timestamp() as f64 - last).abs() < 120.0);
        let since = s
            .get("clinicea_notifier_last_success_age_seconds", &r)
            .expect("seconds since last success");
        assert!((0.0..120.0).contains(&since), "{since}");
    }
    assert_eq!(
        s.all("clinicea_notifier_polls_total").len(),
        2,
        "{}",
        s.text
    );

    // Deliveries by destination and outcome.
    assert_eq!(deliveries(&s, "hooks", "delivered"), 136.0);
    assert_eq!(deliveries(&s, "hooks", "retry"), 2.0);
    assert_eq!(deliveries(&s, "hooks", "dead"), 1.0);
    assert_eq!(deliveries(&s, "team", "delivered"), 12.0);
    assert_eq!(deliveries(&s, "team", "retry"), 0.0);
    assert_eq!(deliveries(&s, "team", "dead"), 0.0);
    assert_eq!(
        s.get(
            "clinicea_notifier_dead_letters_total",
            &[("clinic", "default"), ("destination", "hooks")]
        ),
        Some(1.0)
    );
    // The gauges read the store at scrape time: nothing queued, one dead letter.
    assert_eq!(
        s.get("clinicea_notifier_outbox_entries", &[]),
        Some(0.0),
        "{}",
        s.text
    );
    assert_eq!(
        s.get("clinicea_notifier_dead_letters_stored", &[]),
        Some(1.0)
    );

    // The latency histogram (detection to delivery) counts deliveries; the attempt-duration
    // histogram counts attempts (136 + 2 retried + 1 dead = 139).
    for (dest, delivered, attempts) in [("hooks", 136.0, 139.0), ("team", 12.0, 12.0)] {
        let l = [("destination", dest)];
        assert_eq!(
            s.get("clinicea_notifier_delivery_latency_seconds_count", &l),
            Some(delivered),
            "{dest}"
        );
        assert_eq!(
            s.get(
                "clinicea_notifier_delivery_latency_seconds_bucket",
                &[("destination", dest), ("le", "+Inf")]
            ),
            Some(delivered),
            "{dest}"
        );
        let sum = s
            .get("clinicea_notifier_delivery_latency_seconds_sum", &l)
            .expect("sum");
        assert!(sum > 0.0 && sum < delivered * 60.0, "{dest}: sum {sum}");
        assert_eq!(
            s.get(
                "clinicea_notifier_delivery_attempt_duration_seconds_count",
                &l
            ),
            Some(attempts),
            "{dest}"
        );
        // Buckets are cumulative.
        let mut buckets: Vec<(f64, f64)> = s
            .all("clinicea_notifier_delivery_latency_seconds_bucket")
            .into_iter()
            .filter(|(l, _)| l.get("destination").map(String::as_str) == Some(dest))
            .map(|(l, v)| (l["le"].parse::<f64>().unwrap_or(f64::INFINITY), v))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(buckets.len() > 5, "{dest}: {buckets:?}");
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    }
    // A retried delivery waited at least its 1s schedule: some latency is above one second.
    let under_1s = s.value(
        "clinicea_notifier_delivery_latency_seconds_bucket",
        &[("destination", "hooks"), ("le", "1")],
    );
    assert!(
        under_1s <= 134.0,
        "retried deliveries are counted late: {under_1s}"
    );

    // Prometheus types.
    for (name, kind) in [
        ("clinicea_notifier_polls_total", "counter"),
        ("clinicea_notifier_records_fetched_total", "counter"),
        ("clinicea_notifier_changes_total", "counter"),
        ("clinicea_notifier_deliveries_total", "counter"),
        ("clinicea_notifier_dead_letters_total", "counter"),
        ("clinicea_notifier_outbox_entries", "gauge"),
        ("clinicea_notifier_dead_letters_stored", "gauge"),
        ("clinicea_notifier_last_success_age_seconds", "gauge"),
        ("clinicea_notifier_delivery_latency_seconds", "histogram"),
        (
            "clinicea_notifier_delivery_attempt_duration_seconds",
            "histogram",
        ),
    ] {
        assert_eq!(
            s.types.get(name).map(String::as_str),
            Some(kind),
            "{name}\n{}",
            s.text
        );
    }

    // By the naming guide: every family has HELP text, our prefix (or the standard `process_`),
    // `_total` on counters and on nothing else.
    assert!(s.types.len() >= 15, "{}", s.text);
    for (name, kind) in &s.types {
        let help = s.helps.get(name).map(String::as_str).unwrap_or("");
        assert!(help.len() > 10, "{name} has no HELP text\n{}", s.text);
        assert!(
            name.starts_with("clinicea_notifier_") || name.starts_with("process_"),
            "{name}"
        );
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name}: {kind}"
        );
    }
    assert_eq!(
        s.get(
            "clinicea_notifier_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0),
        "{}",
        s.text
    );
    for (name, kind) in [
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert_eq!(s.types.get(name).map(String::as_str), Some(kind), "{name}");
        assert!(s.value(name, &[]) > 0.0, "{name}\n{}", s.text);
    }

    // What the receivers got agrees with the counters.
    assert_eq!(hooks.received().len(), 139);
    assert_eq!(team.received().len(), 12);
    assert!(hooks
        .received()
        .iter()
        .all(|r| verify_with_library(r).is_ok()));

    let status = d.terminate(Duration::from_secs(30)).await;
    let stderr = d.stderr_text();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}; stderr:\n{stderr}"
    );
    assert!(stderr.contains("stopped cleanly"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_first_poll_and_the_watchdog_while_healthz_stays_up() {
    let sb = default_sandbox().await;
    // The first poll hangs for 2 s, so the daemon is up but has not polled yet.
    sb.sandbox
        .inject_faults(Fault::new(FaultKind::Stall(Duration::from_secs(2))).on("leads"));
    let config = Config::new(Clinicea::sandbox(&sb.base_url()).poll_interval("500ms"))
        .watchdog_stale_after("2s");
    let t = TestDir::new(&config.to_yaml());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cancel = CancellationToken::new();
    let (_reload_tx, reload_rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let daemon = tokio::spawn(clinicea_notifier::daemon::run(
        t.settings(),
        t.config.clone(),
        listener,
        cancel.clone(),
        reload_rx,
        t.vars.clone(),
        clinicea_notifier::daemon::events::Events::none(),
    ));

    // Waits until /readyz answers `want`, checking /healthz is 200 on the way.
    let wait_ready = |want: u16, timeout: Duration| {
        let base = base.clone();
        async move {
            let start = Instant::now();
            loop {
                let (h, body) = get_text(&format!("{base}/healthz")).await;
                assert_eq!(h, 200, "/healthz must stay 200: {body}");
                let (r, body) = get_text(&format!("{base}/readyz")).await;
                if r == want {
                    return body;
                }
                assert!(
                    start.elapsed() < timeout,
                    "/readyz stayed {r} (wanted {want}): {body}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // Before the first poll: up, not ready ("no resources yet" for the first instants, then
    // the resource without a successful poll).
    let start = Instant::now();
    loop {
        let body = wait_ready(503, Duration::from_secs(5)).await;
        if body.contains("leads: no successful poll yet") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(2), "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the stall should still be on"
    );

    // After it: ready.
    let body = wait_ready(200, Duration::from_secs(20)).await;
    assert_eq!(body.trim(), "ready");
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "ready before the stalled first poll could end"
    );

    // The API starts failing: ready until the stale window (2 s) has passed, then not.
    sb.sandbox.inject_faults(
        Fault::new(FaultKind::Status {
            status: 500,
            retry_after: None,
            body: "Internal Server Error".into(),
        })
        .times(100_000),
    );
    let failing_since = Instant::now();
    let body = wait_ready(503, Duration::from_secs(20)).await;
    assert!(
        failing_since.elapsed() >= Duration::from_millis(800),
        "not ready after {:?}, before the 2s stale window could pass",
        failing_since.elapsed()
    );
    assert!(body.contains("leads: no successful poll for"), "{body}");
    // It stays not ready while the API fails.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(get_text(&format!("{base}/readyz")).await.0, 503);

    // The API recovers: ready again after the next successful poll.
    sb.sandbox.clear_faults();
    wait_ready(200, Duration::from_secs(30)).await;

    cancel.cancel();
    daemon.await.unwrap().expect("run stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_ask_for_the_bearer_token_when_one_is_set_and_health_stays_open() {
    let sb = empty_sandbox().await;
    let token = "mT0k3n-8f2a61c4d9e0b7a5";
    let config = leads_only(&sb.base_url())
        .listen()
        .metrics_token("${METRICS_TOKEN}");
    let t = TestDir::new(&config.to_yaml());
    let mut d = Notifier::run(&t)
        .env(&[("METRICS_TOKEN", token)])
        .ready_within(Duration::from_secs(60))
        .start()
        .await;
    let metrics = d.url("/metrics");
    let (status, www) = get_with_auth(&metrics, None).await;
    assert_eq!(status, 401);
    assert!(www.starts_with("Bearer"), "{www}");
    for wrong in [
        "Bearer wrong-token-0000000000",
        "Bearer mT0k3n-8f2a61c4d9e0b7a",
        "Basic bVQwazNuLThmMmE2MWM0ZDllMGI3YTU=",
        token,
    ] {
        assert_eq!(get_with_auth(&metrics, Some(wrong)).await.0, 401, "{wrong}");
    }
    let resp = reqwest::Client::new()
        .get(&metrics)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("clinicea_notifier_outbox_entries"), "{text}");
    // The probes need no token.
    assert_eq!(get_text(&d.url("/healthz")).await.0, 200);
    assert_ne!(get_with_auth(&d.url("/readyz"), None).await.0, 401);
    d.terminate(Duration::from_secs(30))
        .await
        .expect("the daemon stops within 30 s of SIGTERM");
    let stderr = d.stderr_text();
    assert!(
        !stderr.contains(token),
        "the token reached the logs:\n{stderr}"
    );
}

#[test]
fn a_short_or_placeholder_metrics_token_is_refused_by_check() {
    for (value, expected) in [
        ("tiny-tok", "shorter than 16 characters"),
        ("REPLACE_ME_with_a_random_token", "placeholder"),
    ] {
        let config = leads_only("http://127.0.0.1:1")
            .listen()
            .metrics_token(value);
        let t = TestDir::new(&config.to_yaml());
        let err = match clinicea_notifier::daemon::settings::load_settings_with(&t.config, &t.vars)
        {
            Ok(_) => panic!("{value} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("metrics_token") && err.contains(expected),
            "{err}"
        );
        assert!(!err.contains(value), "the token is echoed: {err}");
    }
}

#[test]
fn the_dashboard_and_the_alerts_name_only_metrics_the_daemon_exports() {
    use clinicea_notifier::telemetry::metric;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let known = |name: &str| {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        metric::ALL.contains(&name)
            || metric::ALL.contains(&base)
            || metric::PROCESS.contains(&name)
    };
    let names_in = |text: &str| -> Vec<String> {
        let re = regex::Regex::new(r"\b(clinicea_notifier_[a-z_]+|process_[a-z_]+)\b").unwrap();
        re.find_iter(text).map(|m| m.as_str().to_string()).collect()
    };
    let dashboard = std::fs::read_to_string(root.join("grafana-dashboard.json")).unwrap();
    let parsed: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs: Vec<String> = parsed["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let rules = std::fs::read_to_string(root.join("prometheus-rules.yaml")).unwrap();
    for (file, text) in [
        ("grafana-dashboard.json", exprs.join("\n")),
        ("prometheus-rules.yaml", rules),
    ] {
        let names = names_in(&text);
        assert!(names.len() >= 5, "{file}: {names:?}");
        for n in names {
            assert!(
                known(&n),
                "{file} reads {n}, which the daemon does not export"
            );
        }
    }
    // Each of our metrics is on the dashboard, so none goes unseen.
    let shown = exprs.join("\n");
    for name in metric::ALL {
        assert!(shown.contains(name), "{name} is not on the dashboard");
    }
}
