//! Issue 6: operating the daemon. `/metrics` counts what happened, `/readyz` follows the
//! watchdog, `/healthz` only says the process answers, and the logs at the default level hold no
//! record contents and no keys.
//!
//! Metrics and logs are checked on the real binary as a child process: the metrics recorder is
//! process-wide, so only a process of its own gives exact counter values, and only a real process
//! shows what really reaches stderr. Readiness is checked in-process through `daemon::run`.

use crate::helpers::*;
use clinicea_notifier::kit::catcher::{Catcher, CatcherOptions};
use clinicea_notifier::kit::sandbox::{Fault, FaultKind, SandboxOptions};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A `clinicea:` section reading the key from `${CLINICEA_API_KEY}`, with its own poll interval.
fn clinicea_env_section(base_url: &str, poll_interval: &str) -> String {
    format!(
        "clinicea:\n  base_url: {base_url}\n  api_key: ${{CLINICEA_API_KEY}}\n  start_from: \"{}\"\n  poll_interval: {poll_interval}\n  timeout: 5s\n",
        hours_ago(2)
    )
}

/// Scrapes until `done` holds (or panics after `timeout`, showing the last scrape).
async fn scrape_until(base: &str, timeout: Duration, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let start = Instant::now();
    loop {
        let s = scrape(base).await;
        if done(&s) {
            return s;
        }
        if start.elapsed() > timeout {
            panic!("metrics never got there; last scrape:\n{}", s.text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_polls_records_changes_deliveries_and_latency() {
    let sb = default_sandbox().await; // 137 leads, 12 patients
    let hooks = Receiver::start().await;
    // Two 500s (retried, then delivered) and one 400 (dead at once); everything else 200.
    hooks.script([Reply::status(500), Reply::status(500), Reply::status(400)]);
    let team = Receiver::start().await;
    // One poll per resource during the test: the interval is an hour.
    let yaml = format!(
        r#"{clinicea}resources:
  leads:
    path: /api/v1/leads
  patients:
    path: /api/v1/patients
store:
  path: ./data
listen: 127.0.0.1:0
destinations:
  hooks:
    type: webhook
    url: {hooks}
    secret: {SECRET}
    timeout: 5s
    retry: {{ schedule: [1s, 1s, 1s], jitter: 0 }}
  team:
    type: webhook
    url: {team}
    secret: {SECRET}
    timeout: 5s
rules:
  - {{ name: leads-to-hooks, resource: leads, on: [added], notify: [hooks] }}
  - {{ name: patients-to-team, resource: patients, on: [added], notify: [team] }}
"#,
        clinicea = clinicea_env_section(&sb.base_url(), "1h"),
        hooks = hooks.url,
        team = team.url
    );
    let t = TestDir::new(&yaml);
    let d = MetricsDaemon::start(&t.config, &[("CLINICEA_API_KEY", "sandbox-api-key")], &[]);
    let base = format!("http://{}", d.addr);

    let deliveries = |s: &Scrape, dest: &str, outcome: &str| {
        s.value(
            "clinicea_deliveries_total",
            &[("destination", dest), ("outcome", outcome)],
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
        let r = [("resource", res)];
        assert_eq!(s.get("clinicea_polls_total", &r), Some(1.0), "{res}");
        assert_eq!(s.value("clinicea_poll_failures_total", &r), 0.0, "{res}");
        assert_eq!(
            s.get("clinicea_records_fetched_total", &r),
            Some(n),
            "{res}"
        );
        assert_eq!(
            s.get(
                "clinicea_changes_total",
                &[("resource", res), ("change", "added")]
            ),
            Some(n),
            "{res}"
        );
        for kind in ["modified", "deleted"] {
            assert_eq!(
                s.value(
                    "clinicea_changes_total",
                    &[("resource", res), ("change", kind)]
                ),
                0.0
            );
        }
        let last = s
            .get("clinicea_last_success_timestamp_seconds", &r)
            .expect("last success timestamp");
        assert!((chrono::Utc::now().timestamp() as f64 - last).abs() < 120.0);
        let since = s
            .get("clinicea_seconds_since_last_success", &r)
            .expect("seconds since last success");
        assert!((0.0..120.0).contains(&since), "{since}");
    }
    assert_eq!(s.all("clinicea_polls_total").len(), 2, "{}", s.text);

    // Deliveries by destination and outcome.
    assert_eq!(deliveries(&s, "hooks", "delivered"), 136.0);
    assert_eq!(deliveries(&s, "hooks", "retry"), 2.0);
    assert_eq!(deliveries(&s, "hooks", "dead"), 1.0);
    assert_eq!(deliveries(&s, "team", "delivered"), 12.0);
    assert_eq!(deliveries(&s, "team", "retry"), 0.0);
    assert_eq!(deliveries(&s, "team", "dead"), 0.0);
    assert_eq!(
        s.get("clinicea_dead_letters_total", &[("destination", "hooks")]),
        Some(1.0)
    );
    // The gauges read the store at scrape time: nothing queued, one dead letter.
    assert_eq!(
        s.get("clinicea_outbox_entries", &[]),
        Some(0.0),
        "{}",
        s.text
    );
    assert_eq!(s.get("clinicea_dead_letters", &[]), Some(1.0));

    // The latency histogram (detection to delivery) counts deliveries; the attempt-duration
    // histogram counts attempts (136 + 2 retried + 1 dead = 139).
    for (dest, delivered, attempts) in [("hooks", 136.0, 139.0), ("team", 12.0, 12.0)] {
        let l = [("destination", dest)];
        assert_eq!(
            s.get("clinicea_delivery_latency_seconds_count", &l),
            Some(delivered),
            "{dest}"
        );
        assert_eq!(
            s.get(
                "clinicea_delivery_latency_seconds_bucket",
                &[("destination", dest), ("le", "+Inf")]
            ),
            Some(delivered),
            "{dest}"
        );
        let sum = s
            .get("clinicea_delivery_latency_seconds_sum", &l)
            .expect("sum");
        assert!(sum > 0.0 && sum < delivered * 60.0, "{dest}: sum {sum}");
        assert_eq!(
            s.get("clinicea_delivery_attempt_duration_seconds_count", &l),
            Some(attempts),
            "{dest}"
        );
        // Buckets are cumulative.
        let mut buckets: Vec<(f64, f64)> = s
            .all("clinicea_delivery_latency_seconds_bucket")
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
        "clinicea_delivery_latency_seconds_bucket",
        &[("destination", "hooks"), ("le", "1")],
    );
    assert!(
        under_1s <= 134.0,
        "retried deliveries are counted late: {under_1s}"
    );

    // Prometheus types.
    for (name, kind) in [
        ("clinicea_polls_total", "counter"),
        ("clinicea_records_fetched_total", "counter"),
        ("clinicea_changes_total", "counter"),
        ("clinicea_deliveries_total", "counter"),
        ("clinicea_dead_letters_total", "counter"),
        ("clinicea_outbox_entries", "gauge"),
        ("clinicea_dead_letters", "gauge"),
        ("clinicea_seconds_since_last_success", "gauge"),
        ("clinicea_delivery_latency_seconds", "histogram"),
        ("clinicea_delivery_attempt_duration_seconds", "histogram"),
    ] {
        assert_eq!(
            s.types.get(name).map(String::as_str),
            Some(kind),
            "{name}\n{}",
            s.text
        );
    }

    // What the receivers got agrees with the counters.
    assert_eq!(hooks.received().len(), 139);
    assert_eq!(team.received().len(), 12);
    assert!(hooks
        .received()
        .iter()
        .all(|r| verify_with_library(r).is_ok()));

    let (status, stderr) = d.stop();
    assert!(status.success(), "exit {status:?}; stderr:\n{stderr}");
    assert!(stderr.contains("stopped cleanly"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_first_poll_and_the_watchdog_while_healthz_stays_up() {
    let sb = default_sandbox().await;
    // The first poll hangs for 2 s, so the daemon is up but has not polled yet.
    sb.sandbox
        .inject_faults(Fault::new(FaultKind::Stall(Duration::from_secs(2))).on("leads"));
    let t = TestDir::new(&format!(
        "{}resources:\n  leads:\n    path: /api/v1/leads\nstore:\n  path: ./data\nwatchdog:\n  stale_after: 2s\n",
        clinicea_section(&sb.base_url()).replace("poll_interval: 1s", "poll_interval: 500ms")
    ));
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
async fn default_logs_hold_no_record_contents_and_no_keys() {
    let log = logs_hold_no_record_contents_and_no_keys(&[]).await;
    // stderr is a pipe here, as under journald or `docker logs`: no colour codes.
    assert!(
        !log.contains('\x1b'),
        "ANSI escapes in a non-terminal log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_hold_no_record_contents_and_no_keys_either() {
    let log = logs_hold_no_record_contents_and_no_keys(&["--log-format", "json"]).await;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
    }
}

/// Runs the binary with `args` at the default level through a poll failure, a retried webhook, a
/// delivered and a dead email; checks the log says so without record fields, keys or secrets;
/// returns the log.
async fn logs_hold_no_record_contents_and_no_keys(args: &[&str]) -> String {
    const API_KEY: &str = "ak_LEAKCHECK_5f1c2e9a7b";
    const SMTP_PASSWORD: &str = "smtp_LEAKCHECK_c0ffee42";
    let sb = sandbox(SandboxOptions {
        api_key: API_KEY.into(),
        leads: 0,
        patients: 0,
        appointments: 0,
        ..SandboxOptions::default()
    })
    .await;
    let lead = sb.sandbox.insert(
        "leads",
        serde_json::json!({
            "FirstName": "Zebulon",
            "LastName": "Quixotefeather",
            "Email": "zebulon.quixotefeather@example.org",
            "Mobile": "+92 300 7771234",
            "Source": "Website",
            "LeadStatus": "HOT",
            "Notes": "Allergic to penicillin"
        }),
    );
    let lead_id = lead["ID"]
        .as_str()
        .expect("the sandbox gives the lead an id")
        .to_string();
    // The first poll gets a 401 that echoes the key after 180 characters (where error bodies
    // used to be cut before the key was scrubbed); the second a 500 on every try whose body
    // names the patient and a diagnosis; the third a truncated body (a parse error); the fourth
    // a 500 once. Every failure is logged, and the poll after them succeeds.
    sb.sandbox.inject_faults(
        Fault::new(FaultKind::Status {
            status: 401,
            retry_after: None,
            body: format!("{}{API_KEY} is not a valid key", "x".repeat(180)),
        })
        .on("leads"),
    );
    sb.sandbox.inject_faults(
        Fault::new(FaultKind::Status {
            status: 500,
            retry_after: Some(0),
            body: "error saving Zebulon Quixotefeather: diagnosis chronic hepatitis B".into(),
        })
        .on("leads")
        .times(5),
    );
    sb.sandbox
        .inject_faults(Fault::new(FaultKind::MalformedJson).on("leads"));
    sb.sandbox.inject_faults(
        Fault::new(FaultKind::Status {
            status: 500,
            retry_after: None,
            body: "oops".into(),
        })
        .on("leads"),
    );
    let hooks = Receiver::start().await;
    hooks.script([Reply::status(500)]); // a retry, then delivered
    let smtp = Catcher::start(
        "127.0.0.1:0",
        CatcherOptions {
            reject_recipients: vec!["nobody@example.com".into()],
            ..CatcherOptions::default()
        },
    )
    .await
    .unwrap();
    let yaml = format!(
        r#"{clinicea}resources:
  leads:
    path: /api/v1/leads
store:
  path: ./data
listen: 127.0.0.1:0
smtp:
  host: 127.0.0.1
  port: {port}
  tls: none
  from: notifier@example.com
destinations:
  hooks:
    type: webhook
    url: {hooks}
    secret: ${{HOOK_SECRET}}
    timeout: 5s
    retry: {{ schedule: [200ms, 200ms], jitter: 0 }}
  front-desk:
    type: email
    to: [frontdesk@example.com, nobody@example.com]
    subject: "New lead: {{{{record.FirstName}}}} {{{{record.LastName}}}}"
    template: new-lead
rules:
  - {{ name: new-lead, resource: leads, on: [added], notify: [hooks, front-desk] }}
"#,
        clinicea = clinicea_env_section(&sb.base_url(), "500ms"),
        port = smtp.addr.port(),
        hooks = hooks.url,
    );
    let t = TestDir::new(&yaml);
    // SMTP_PASSWORD is in the environment but unused: it must not show up either.
    let d = MetricsDaemon::start(
        &t.config,
        &[
            ("CLINICEA_API_KEY", API_KEY),
            ("HOOK_SECRET", SECRET),
            ("SMTP_PASSWORD", SMTP_PASSWORD),
        ],
        args,
    );
    let base = format!("http://{}", d.addr);
    scrape_until(&base, Duration::from_secs(60), |s| {
        let dv = |dest: &str, o: &str| {
            s.value(
                "clinicea_deliveries_total",
                &[("destination", dest), ("outcome", o)],
            )
        };
        dv("hooks", "delivered") >= 1.0
            && dv("front-desk", "delivered") >= 1.0
            && dv("front-desk", "dead") >= 1.0
    })
    .await;
    assert_eq!(smtp.messages().len(), 1);
    let got = hooks.received();
    assert_eq!(got.len(), 2);
    assert!(String::from_utf8_lossy(&got[1].body).contains("Zebulon"));

    let (status, log) = d.stop();
    assert!(status.success(), "exit {status:?}; stderr:\n{log}");
    // The logs did say what happened...
    for expected in [
        "poll failed",
        "will retry",
        "dead letters",
        "delivered",
        lead_id.as_str(),
    ] {
        assert!(log.contains(expected), "the log lacks {expected:?}:\n{log}");
    }
    // ...without any record field, key or secret.
    let secret_b64 = SECRET.trim_start_matches("whsec_");
    for leak in [
        API_KEY,
        &API_KEY[..10],
        "hepatitis",
        SMTP_PASSWORD,
        secret_b64,
        "Zebulon",
        "Quixotefeather",
        "zebulon.quixotefeather",
        "7771234",
        "penicillin",
        "New lead:",
    ] {
        assert!(!log.contains(leak), "the log contains {leak:?}:\n{log}");
    }
    log
}

/// GET `url` with an optional `Authorization` header: the status and the
/// `WWW-Authenticate` header.
async fn get_with_auth(url: &str, auth: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.unwrap();
    let www = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (resp.status().as_u16(), www)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_ask_for_the_bearer_token_when_one_is_set_and_health_stays_open() {
    let sb = empty_sandbox().await;
    let token = "mT0k3n-8f2a61c4d9e0b7a5";
    let yaml = format!(
        "{}metrics_token: ${{METRICS_TOKEN}}\n",
        daemon_config(&sb.base_url(), "", "")
    );
    let t = TestDir::new(&yaml);
    let d = MetricsDaemon::start(&t.config, &[("METRICS_TOKEN", token)], &[]);
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
    assert!(text.contains("clinicea_outbox_entries"), "{text}");
    // The probes need no token.
    assert_eq!(get_text(&d.url("/healthz")).await.0, 200);
    assert_ne!(get_with_auth(&d.url("/readyz"), None).await.0, 401);
    let (_, stderr) = d.stop();
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
        let yaml = format!(
            "{}metrics_token: {value}\n",
            daemon_config("http://127.0.0.1:1", "", "")
        );
        let t = TestDir::new(&yaml);
        let err = match clinicea_notifier::commands::load_settings_with(&t.config, &t.vars) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_replaces_the_metrics_token() {
    let sb = empty_sandbox().await;
    let base = daemon_config(&sb.base_url(), "", "");
    let (old, new) = ("old-token-0123456789ab", "new-token-ba9876543210");
    let t = TestDir::new(&format!("{base}metrics_token: {old}\n"));
    let d = Daemon::start(&t, "token").await;
    let metrics = format!("http://{}/metrics", d.addr);
    let bearer = |tok: &str| format!("Bearer {tok}");
    assert_eq!(get_with_auth(&metrics, Some(&bearer(old))).await.0, 200);
    assert_eq!(get_with_auth(&metrics, Some(&bearer(new))).await.0, 401);

    t.rewrite(&format!("{base}metrics_token: {new}\n"));
    d.signal("HUP");
    assert!(
        d.wait_log("config reloaded", 1, Duration::from_secs(20))
            .await,
        "{}",
        d.stderr_text()
    );
    assert_eq!(get_with_auth(&metrics, Some(&bearer(old))).await.0, 401);
    assert_eq!(get_with_auth(&metrics, Some(&bearer(new))).await.0, 200);

    // Removing the key opens /metrics again.
    t.rewrite(&base);
    d.signal("HUP");
    assert!(
        d.wait_log("config reloaded", 2, Duration::from_secs(20))
            .await
    );
    assert_eq!(get_with_auth(&metrics, None).await.0, 200);
    let log = d.stderr_text();
    assert!(!log.contains(old) && !log.contains(new), "{log}");
    d.kill9().await;
}

/// `-vv` and `RUST_LOG=debug` used to turn on the template engine's own debug logging, which
/// prints every value it renders. Other crates now stay at warnings unless named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_and_debug_runs_log_no_record_values() {
    let sb = empty_sandbox().await;
    let hooks = Receiver::start().await;
    let chat = BodyReceiver::start().await;
    let yaml = format!(
        "{}destinations:\n{}  team-chat:\n    type: slack\n    url: {}\n    template: lead-chat\n    timeout: 5s\n\
         rules:\n  - {{ name: r, resource: leads, on: [added], notify: [hooks, team-chat] }}\n",
        leads_only(&sb.base_url()),
        webhook_destination("hooks", &hooks.url, "    timeout: 5s\n"),
        chat.url
    );
    let mut lead = test_lead();
    lead["FirstName"] = serde_json::json!("Zebulon");
    lead["LastName"] = serde_json::json!("Quixotefeather");
    lead["Notes"] = serde_json::json!("Allergic to penicillin");
    lead["Mobile"] = serde_json::json!("+92 300 7771234");
    let leaks = ["Zebulon", "Quixotefeather", "penicillin", "7771234"];
    /// Command-line flags and environment of one run.
    type Run<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let runs: [Run; 4] = [
        (&["-vv"], &[]),
        (&[], &[("RUST_LOG", "debug")]),
        (&[], &[("RUST_LOG", "trace")]),
        // Named explicitly, a crate's debug logs still come through: the check below can see them.
        (&[], &[("RUST_LOG", "handlebars=debug")]),
    ];
    for (i, (flags, env)) in runs.iter().enumerate() {
        // A fresh store each time, so the lead is new and rendered again.
        let t = TestDir::new(&yaml);
        if i == 0 {
            sb.sandbox.insert("leads", lead.clone());
        }
        let args: Vec<&str> = flags.iter().copied().chain(["once"]).collect();
        let out = cli_env(&t, &args, env).await;
        assert!(
            out.status.success(),
            "{flags:?} {env:?}: {}",
            output_text(&out)
        );
        assert_eq!(
            chat.received().len(),
            i + 1,
            "{flags:?} {env:?}: the chat message was rendered"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        if *env == [("RUST_LOG", "handlebars=debug")] {
            assert!(
                stderr.contains("Rendering"),
                "handlebars=debug no longer logs: {stderr}"
            );
            continue;
        }
        assert!(
            stderr.contains("DEBUG"),
            "{flags:?} {env:?}: not a debug run: {stderr}"
        );
        for leak in leaks {
            assert!(
                !stderr.contains(leak),
                "{flags:?} {env:?}: the log contains {leak:?}:\n{stderr}"
            );
        }
    }
    assert_eq!(hooks.received().len(), 4);
}
