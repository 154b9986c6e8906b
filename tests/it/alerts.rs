//! Alerts for the operator, with the real binary: a revoked key alerts once and recovers once
//! (across the reloads that revoke and restore it), and a destination failing for
//! `destination_failing_for` alerts once, never to itself, not again after a `kill -9` and
//! restart over the same store, and recovers once. (The same incidents on a 30-minute limit, on
//! an injected clock and over both stores, are the unit tests of `daemon::alerts`.)

use crate::support::*;
use std::time::Duration;

/// The key the sandbox knows.
const SANDBOX_KEY: &str = "sandbox-api-key";

/// How long a test waits for an alert to arrive.
const ARRIVES_WITHIN: Duration = Duration::from_secs(20);

/// How long a test watches for a second alert that must not come (several monitor rounds).
const NOTHING_MORE_FOR: Duration = Duration::from_secs(5);

/// The alert envelopes a receiver got (bodies whose `type` starts with `alert.`), in order.
fn alerts(rx: &Receiver) -> Vec<serde_json::Value> {
    rx.received()
        .iter()
        .map(Received::json)
        .filter(|b| b["type"].as_str().unwrap_or_default().starts_with("alert."))
        .collect()
}

/// Waits until `rx` got `n` alerts (or the time is up) and returns them.
async fn wait_alerts(rx: &Receiver, n: usize) -> Vec<serde_json::Value> {
    let start = std::time::Instant::now();
    loop {
        let got = alerts(rx);
        if got.len() >= n || start.elapsed() > ARRIVES_WITHIN {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn revoked_key_config(base_url: &str, key: &str, ops: &str) -> String {
    Config::new(
        Clinicea::new(base_url, key)
            .poll_interval("300ms")
            .timeout("5s"),
    )
    .listen()
    .webhook("ops", ops, |w| w.timeout("2s"))
    .alerts(
        Alerts::notify(&["ops"])
            .api_unauthorized(true)
            .stale_resource(false),
    )
    .to_yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_alerts_once_and_recovers_once() {
    let sb = sandbox_with_leads(1).await;
    let ops = Receiver::start().await;
    let t = TestDir::new(&revoked_key_config(&sb.base_url(), SANDBOX_KEY, &ops.url));
    let mut d = Notifier::run(&t).start().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(alerts(&ops).is_empty(), "no alert while the key works");
    // The key is revoked: the sandbox answers 401 to it.
    t.rewrite(&revoked_key_config(&sb.base_url(), "revoked-key", &ops.url));
    assert!(d.reload("config reloaded", 1, ARRIVES_WITHIN).await);
    let got = wait_alerts(&ops, 1).await;
    assert_eq!(got.len(), 1, "one alert: {}", d.stderr_text());
    assert_eq!(got[0]["type"], "alert.api_unauthorized");
    assert_eq!(got[0]["data"]["clinic"], "default");
    assert_eq!(got[0]["data"]["status"], 401);
    tokio::time::sleep(NOTHING_MORE_FOR).await;
    assert_eq!(
        alerts(&ops).len(),
        1,
        "still one alert while every poll is refused"
    );
    // The key works again.
    t.rewrite(&revoked_key_config(&sb.base_url(), SANDBOX_KEY, &ops.url));
    assert!(d.reload("config reloaded", 2, ARRIVES_WITHIN).await);
    let got = wait_alerts(&ops, 2).await;
    assert_eq!(got.len(), 2, "{}", d.stderr_text());
    assert_eq!(got[1]["type"], "alert.recovered");
    assert_eq!(got[1]["data"]["incident"], "api_unauthorized");
    tokio::time::sleep(NOTHING_MORE_FOR).await;
    assert_eq!(alerts(&ops).len(), 2, "one alert and one recovery in all");
    for r in ops.received() {
        verify_with_library(&r).expect("alerts are signed like any webhook");
        let body = String::from_utf8_lossy(&r.body).to_string();
        assert!(
            !body.contains("revoked-key") && !body.contains(SANDBOX_KEY),
            "{body}"
        );
    }
    assert!(!d.stderr_text().contains("revoked-key"));
    d.terminate(Duration::from_secs(15)).await;
}

fn failing_config(base_url: &str, crm: &str, ops: &str) -> String {
    Config::new(Clinicea::sandbox_from_now(base_url).poll_interval("300ms"))
        .listen()
        .webhook("crm", crm, |w| {
            w.timeout("2s").retry(Retry::every("300ms", 500))
        })
        .webhook("ops", ops, |w| w.timeout("2s"))
        .rule(Rule::new("leads-to-crm", &["crm"]).resource("leads"))
        .alerts(
            Alerts::notify(&["ops", "crm"])
                .destination_failing_for("2s")
                .stale_resource(false),
        )
        .to_yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_alerts_once_never_itself_not_again_after_a_restart_and_recovers_once(
) {
    let sb = empty_sandbox().await;
    let crm = Receiver::with(Responder::always(Reply::status(503))).await;
    let ops = Receiver::start().await;
    let t = TestDir::new(&failing_config(&sb.base_url(), &crm.url, &ops.url));
    let d = Notifier::run(&t).start().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sb.sandbox.insert("leads", test_lead());
    let got = wait_alerts(&ops, 1).await;
    assert_eq!(got.len(), 1, "{}", d.stderr_text());
    assert_eq!(got[0]["type"], "alert.destination_failing");
    assert_eq!(got[0]["data"]["destination"], "crm");
    assert!(
        got[0]["data"]["failures"].as_u64().unwrap() >= 2,
        "{}",
        got[0]
    );
    assert!(got[0]["data"]["duration_seconds"].as_u64().unwrap() >= 2);
    // Nothing of the record is in it.
    let text = got[0].to_string();
    for field in ["FirstName", "LastName", "Mobile", "Email"] {
        let value = test_lead()[field].as_str().unwrap_or("\u{0}").to_string();
        assert!(!text.contains(&value), "{field} leaked: {text}");
    }
    assert!(
        d.stderr_text().contains("not sent there"),
        "the skip is logged"
    );
    tokio::time::sleep(NOTHING_MORE_FOR).await;
    assert_eq!(alerts(&ops).len(), 1, "one alert while it keeps failing");
    // A crash and a restart over the same store: still failing, not alerted again.
    d.kill9().await;
    let d = Notifier::run(&t).tag("run2").start().await;
    tokio::time::sleep(NOTHING_MORE_FOR).await;
    assert_eq!(alerts(&ops).len(), 1, "a restart does not re-alert");
    // It accepts deliveries again: one "recovered".
    crm.respond_with(Responder::ok());
    let got = wait_alerts(&ops, 2).await;
    assert_eq!(got.len(), 2, "{}", d.stderr_text());
    assert_eq!(got[1]["type"], "alert.recovered");
    assert_eq!(got[1]["data"]["destination"], "crm");
    tokio::time::sleep(NOTHING_MORE_FOR).await;
    assert_eq!(alerts(&ops).len(), 2);
    // The failing destination never got an alert about itself: only the change, retried.
    assert!(alerts(&crm).is_empty(), "{:?}", alerts(&crm));
    assert!(crm
        .received()
        .iter()
        .any(|r| r.json()["type"] == "leads.added"));
}

#[test]
fn check_says_what_alerts_would_run() {
    let t = TestDir::new(
        &Config::new(Clinicea::sandbox("http://127.0.0.1:9"))
            .webhook("ops", "http://127.0.0.1:9/hook", |w| w)
            .alerts(
                Alerts::notify(&["ops"])
                    .destination_failing_for("10m")
                    .stale_resource(false),
            )
            .to_yaml(),
    );
    let (ok, out) = check(&t.config);
    assert!(ok, "{out}");
    assert!(
        out.contains("Alerts: to ops on a destination failing 600s, a refused API key (401/403)"),
        "{out}"
    );
}

#[test]
fn check_reports_each_alerts_problem_at_its_line() {
    let t = TestDir::new(
        "clinicea:\n  base_url: http://127.0.0.1:9\n  api_key: k\nresources:\n  leads: { path: /api/v1/leads }\n\
destinations:\n  ops:\n    type: webhook\n    url: http://127.0.0.1:9/hook\n    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n\
alerts:\n  notify: [ops, nowhere, ops]\n  destination_failing_for: soon\n",
    );
    let (ok, out) = check(&t.config);
    assert!(!ok, "{out}");
    assert!(
        out.contains("alerts.notify[1]") && out.contains("nowhere"),
        "{out}"
    );
    assert!(
        out.contains("alerts.notify[2]") && out.contains("twice"),
        "{out}"
    );
    assert!(out.contains("alerts.destination_failing_for"), "{out}");
    assert!(out.contains("line 12") || out.contains(":12"), "{out}");
    let t = TestDir::new(
        "clinicea:\n  base_url: http://127.0.0.1:9\n  api_key: k\nresources:\n  leads: { path: /api/v1/leads }\n\
alerts:\n  notify: []\n  page_me: true\n",
    );
    let (ok, out) = check(&t.config);
    assert!(!ok, "{out}");
    assert!(out.contains("page_me"), "an unknown key is refused: {out}");
}
