//! Webhook delivery against real receivers: the outbox, Standard Webhooks signatures and body
//! shape, retries on 5xx, 429 and timeouts with one `webhook-id`, dead letters and `dead retry`,
//! redirects refused, and destinations that do not hold each other up.

use crate::support::*;
use clinicea_notifier::commands::dead::{self, DeadCommand};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// One webhook destination of [`webhook_config`]: its name, its URL and its keys beyond a 2 s
/// timeout.
type Hook<'a> = (&'a str, &'a str, fn(Webhook) -> Webhook);

/// A config: the sandbox's leads, every change to each webhook destination, retried three times
/// 100 ms apart.
fn webhook_config(base_url: &str, hooks: &[Hook]) -> String {
    let mut config = leads_only(base_url).retry(Retry::every("100ms", 3));
    for (name, url, keys) in hooks {
        config = config.webhook(name, url, |w| keys(w.timeout("2s")));
    }
    let names: Vec<&str> = hooks.iter().map(|h| h.0).collect();
    config
        .rule(Rule::new("all-leads", &names).resource("leads"))
        .to_yaml()
}

#[tokio::test]
async fn success_on_the_first_try_signed_and_shaped_as_the_spec_says() {
    let sb = sandbox_with_leads(1).await;
    let rx = Receiver::start().await;
    let t = TestDir::new(&webhook_config(&sb.base_url(), &[("hook", &rx.url, |w| w)]));
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();
    let out = engine.deliverer.deliver_all_due().await.unwrap();
    assert_eq!((out.attempted, out.delivered), (1, 1));
    let got = rx.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    verify_with_library(r).expect("the standardwebhooks crate accepts our signature");
    assert_eq!(r.header("content-type"), "application/json");
    assert!(r.header("user-agent").starts_with("clinicea-notifier/"));
    assert!(r.header("webhook-id").starts_with("msg_"));
    let body = r.json();
    assert_eq!(body["type"], "leads.added");
    assert_eq!(body["data"]["change"], "added");
    assert_eq!(body["data"]["resource"], "leads");
    assert_eq!(body["data"]["rule"], "all-leads");
    assert_eq!(body["data"]["rules"], serde_json::json!(["all-leads"]));
    assert_eq!(body["data"]["id"], body["data"]["record"]["ID"]);
    assert!(body["data"]["previous"].is_null());
    assert_eq!(engine.store.outbox_len().await.unwrap(), 0);
}

#[tokio::test]
async fn two_500s_then_200_is_three_attempts_with_one_webhook_id() {
    let sb = sandbox_with_leads(1).await;
    let rx = Receiver::with(Responder::script([Reply::status(500), Reply::status(500)])).await;
    let t = TestDir::new(&webhook_config(&sb.base_url(), &[("hook", &rx.url, |w| w)]));
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();
    drain_outbox(&engine, Duration::from_secs(10)).await;
    let got = rx.received();
    assert_eq!(got.len(), 3);
    let ids: HashSet<String> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 1, "the same webhook-id on every attempt");
    for r in &got {
        verify_with_library(r).expect("every attempt is validly signed");
    }
    assert!(
        got.windows(2).all(|w| w[0].body == w[1].body),
        "the same bytes every time"
    );
    assert_eq!(engine.store.outbox_len().await.unwrap(), 0);
    assert!(dead_list(&engine).await.is_empty());
}

#[tokio::test]
async fn a_429_with_retry_after_2_waits_about_2_seconds() {
    let sb = sandbox_with_leads(1).await;
    let rx = Receiver::with(Responder::script([
        Reply::status(429).header("retry-after", "2")
    ]))
    .await;
    let t = TestDir::new(&webhook_config(&sb.base_url(), &[("hook", &rx.url, |w| w)]));
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();
    drain_outbox(&engine, Duration::from_secs(10)).await;
    let got = rx.received();
    assert_eq!(got.len(), 2);
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(1900) && gap < Duration::from_millis(3500),
        "{gap:?}"
    );
}

#[tokio::test]
async fn a_400_goes_to_the_dead_letters_at_once_and_dead_retry_redelivers() {
    let sb = sandbox_with_leads(1).await;
    let rx = Receiver::with(Responder::script([Reply::status(400)])).await;
    let t = TestDir::new(&webhook_config(&sb.base_url(), &[("hook", &rx.url, |w| w)]));
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();
    drain_outbox(&engine, Duration::from_secs(5)).await;
    assert_eq!(rx.received().len(), 1, "no retry after a 400");
    let dead = dead_list(&engine).await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("400"), "{}", dead[0].reason);
    let show = dead::dead_text(
        &engine.store,
        DeadCommand::Show {
            id: dead[0].entry.seq.into(),
        },
    )
    .await
    .unwrap();
    assert!(show.contains("#1") && show.contains("status 400"), "{show}");

    // Re-drive it: it goes back to the queue and is delivered with the same webhook-id.
    let out = dead::dead_text(
        &engine.store,
        DeadCommand::Retry {
            ids: vec![],
            all: true,
        },
    )
    .await
    .unwrap();
    assert!(out.contains("queued again"), "{out}");
    drain_outbox(&engine, Duration::from_secs(5)).await;
    let got = rx.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert!(dead_list(&engine).await.is_empty());
    assert_eq!(engine.store.outbox_len().await.unwrap(), 0);
}

#[tokio::test]
async fn a_timeout_and_a_refused_connection_are_retried_then_dead_when_the_schedule_is_spent() {
    let sb = sandbox_with_leads(1).await;
    let slow = Receiver::with(Responder::always(
        Reply::status(200).delay(Duration::from_secs(3)),
    ))
    .await;
    // A port with nothing listening.
    let refused = format!("http://127.0.0.1:{}/hook", free_port());
    let t = TestDir::new(&webhook_config(
        &sb.base_url(),
        &[
            ("slow", &slow.url, |w| w.timeout("300ms")),
            ("gone", &refused, |w| w),
        ],
    ));
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();
    drain_outbox(&engine, Duration::from_secs(20)).await;
    let dead = dead_list(&engine).await;
    assert_eq!(dead.len(), 2, "both spent their schedule of 3 retries");
    for d in &dead {
        assert_eq!(d.entry.attempts, 4, "1 try + 3 retries");
        assert!(d.reason.contains("retry schedule spent"), "{}", d.reason);
    }
    let slow_dead = dead.iter().find(|d| d.entry.destination == "slow").unwrap();
    assert!(
        slow_dead.reason.contains("timed out"),
        "{}",
        slow_dead.reason
    );
    let gone_dead = dead.iter().find(|d| d.entry.destination == "gone").unwrap();
    assert!(
        gone_dead.reason.contains("refused") || gone_dead.reason.contains("connect"),
        "{}",
        gone_dead.reason
    );
}

#[tokio::test]
async fn a_302_is_a_failure_and_the_redirect_is_not_followed() {
    let sb = sandbox_with_leads(1).await;
    let target = Receiver::start().await;
    let rx = Receiver::with(Responder::script([
        Reply::status(302).header("location", &target.url)
    ]))
    .await;
    let t = TestDir::new(&webhook_config(&sb.base_url(), &[("hook", &rx.url, |w| w)]));
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();
    drain_outbox(&engine, Duration::from_secs(5)).await;
    assert_eq!(rx.received().len(), 1);
    assert!(
        target.received().is_empty(),
        "the redirect target was never asked"
    );
    let dead = dead_list(&engine).await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("302"), "{}", dead[0].reason);
}

#[tokio::test]
async fn a_slow_destination_does_not_delay_a_fast_one() {
    // 20 leads to both; the slow receiver takes 5 s per request.
    let sb = sandbox_with_leads(20).await;
    let fast = Receiver::start().await;
    let slow = Receiver::with(Responder::always(
        Reply::status(200).delay(Duration::from_secs(5)),
    ))
    .await;
    let yaml = webhook_config(
        &sb.base_url(),
        &[
            ("fast", &fast.url, |w| w),
            ("slow", &slow.url, |w| w.timeout("10s").concurrency(2)),
        ],
    );
    let t = TestDir::new(&yaml);
    let settings = t.settings();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let daemon = tokio::spawn(clinicea_notifier::daemon::run(
        settings,
        t.config.clone(),
        listener,
        cancel.clone(),
        reload_rx,
        t.vars.clone(),
        clinicea_notifier::daemon::events::Events::none(),
    ));
    let got = fast.wait_for(20, Duration::from_secs(4)).await;
    let fast_done = started.elapsed();
    assert_eq!(got.len(), 20, "the fast destination got everything");
    assert!(fast_done < Duration::from_secs(4), "{fast_done:?}");
    assert!(
        slow.received().len() <= 4,
        "the slow one is still working through its queue"
    );
    cancel.cancel();
    daemon.await.unwrap().unwrap();
    // Nothing was lost: what the slow one did not get is still queued.
    let engine = t.engine().await;
    let queued = queued(&engine, "slow").await;
    assert_eq!(queued.len() + slow.received().len().min(20), 20);
}
