//! SIGTERM stops the notifier promptly and cleanly without losing queued work: during
//! deliveries, and while the API asks it to wait 30 s.

use crate::support::*;
use clinicea_notifier::kit::sandbox::{Fault, FaultKind};
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_deliveries_exits_0_promptly_and_once_delivers_the_rest() {
    const LEADS: usize = 50;
    let sb = sandbox_with_leads(LEADS).await;
    let all = sandbox_lead_ids(&sb);
    let rx = Receiver::with(Responder::always(
        Reply::status(200).delay(Duration::from_millis(300)),
    ))
    .await;
    let config = leads_only(&sb.base_url())
        .listen()
        .webhook("hook", &rx.url, |w| w.timeout("5s").concurrency(2))
        .rule(Rule::new("all-leads", &["hook"]).resource("leads"));
    let t = TestDir::new(&config.to_yaml());
    let mut d = Notifier::run(&t).start().await;
    assert!(
        eventually(Duration::from_secs(30), || rx.count() >= 12).await,
        "deliveries never started:\n{}",
        d.stderr_text()
    );
    d.signal("TERM");
    let sent_at = Instant::now();
    let at_term = rx.count();
    let status = d.wait_exit(Duration::from_secs(15)).await;
    let took = sent_at.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?} after {took:?}:\n{}",
        d.stderr_text()
    );
    let log = d.stderr_text();
    assert!(log.contains("stopped cleanly"));
    // Each delivery's log line is about that delivery alone (no span leaking across awaits).
    let delivered_lines: Vec<&str> = log.lines().filter(|l| l.contains(" delivered")).collect();
    assert!(!delivered_lines.is_empty());
    for line in delivered_lines {
        assert_eq!(
            line.matches("webhook_id").count(),
            1,
            "one delivery, one webhook-id: {line}"
        );
        assert!(
            !line.contains("poll"),
            "a delivery is not part of a poll: {line}"
        );
    }
    let delivered_before = rx.ok_ids();
    assert!(
        delivered_before.len() < LEADS,
        "SIGTERM came after the end; the test proves nothing"
    );

    // Whatever was not delivered is still queued: none fell between the two.
    let store = open_store(&t);
    let queued: HashSet<String> = queued_in(&store, "hook")
        .await
        .into_iter()
        .map(|e| e.record_id)
        .collect();
    drop(store);
    let accounted: HashSet<String> = queued.union(&delivered_before).cloned().collect();
    assert_eq!(accounted, all, "every lead is delivered or queued");

    let out = cli(&t, &["once"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(rx.ok_ids(), all, "every lead arrived");
    let store = open_store(&t);
    assert_eq!(store.outbox_len().await.unwrap(), 0);
    assert_eq!(store.dead_len().await.unwrap(), 0);
    for a in rx.received() {
        verify_with_library(&a).unwrap();
    }
    eprintln!(
        "sigterm test: {at_term} requests at SIGTERM, exit 0 after {took:?}, {} delivered before, {} queued, {} requests in all",
        delivered_before.len(),
        queued.len(),
        rx.count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_api_says_retry_after_30s_still_stops_within_a_few_seconds() {
    let sb = sandbox_with_leads(3).await;
    let t = TestDir::new(&leads_only(&sb.base_url()).listen().to_yaml());
    // The first page request gets 429 with Retry-After: 30, and so would the next ones.
    sb.sandbox.inject_faults(
        Fault::new(FaultKind::Status {
            status: 429,
            retry_after: Some(30),
            body: "slow down".into(),
        })
        .times(10)
        .on("leads"),
    );
    let mut d = Notifier::run(&t).start().await;
    assert!(
        d.wait_log("API asked to retry", 1, Duration::from_secs(20))
            .await,
        "{}",
        d.stderr_text()
    );
    d.signal("TERM");
    let sent = Instant::now();
    let status = d.wait_exit(Duration::from_secs(30)).await;
    let took = sent.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}:\n{}",
        d.stderr_text()
    );
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM took {took:?}: a poll waiting on the API holds up shutdown\n{}",
        d.stderr_text()
    );
    assert!(
        !d.stderr_text().contains("did not stop"),
        "{}",
        d.stderr_text()
    );
    // The interrupted poll kept its checkpoint: the next `once` reads all 3 leads.
    sb.sandbox.clear_faults();
    let out = cli(&t, &["once"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && text.contains("3 changes"),
        "{}",
        output_text(&out)
    );
}
