//! Issue 5: chat destinations (Slack, Teams, Discord, Google Chat) against real receivers on
//! loopback.

use crate::helpers::*;
use clinicea_notifier::app::Engine;
use std::time::Duration;

/// A config: new leads go to one chat destination of `kind` at `url`, rendered with `lead-chat`.
fn chat_config(base_url: &str, kind: &str, url: &str) -> String {
    format!(
        "{}retry:\n  schedule: [100ms, 100ms, 100ms]\n  jitter: 0\n\
         destinations:\n  team-chat:\n    type: {kind}\n    url: {url}\n    template: lead-chat\n    timeout: 3s\n\
         rules:\n  - name: new-lead-chat\n    resource: leads\n    on: [added]\n    notify: [team-chat]\n",
        leads_only(base_url)
    )
}

/// Starts a sandbox, a receiver scripted with `replies` and an engine for `kind`; inserts one
/// lead, polls and delivers until the outbox is empty.
async fn one_lead_to(
    kind: &str,
    replies: Vec<BodyReply>,
) -> (BodyReceiver, Engine, TestDir, Duration) {
    let sb = empty_sandbox().await;
    let rx = BodyReceiver::start().await;
    rx.script(replies);
    let t = TestDir::new(&chat_config(&sb.base_url(), kind, &rx.url));
    let engine = t.engine();
    sb.sandbox.insert("leads", test_lead());
    let rep = engine.poll_all().await.remove(0).1.unwrap();
    assert_eq!(rep.deliveries, 1);
    let started = std::time::Instant::now();
    drain_outbox(&engine, Duration::from_secs(15)).await;
    (rx, engine, t, started.elapsed())
}

const TEXT_START: &str = "New lead: Ayesha Khan (source: Website, status: New)";

#[tokio::test]
async fn slack_gets_text() {
    let (rx, engine, _t, _) = one_lead_to("slack", vec![]).await;
    let got = rx.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("content-type"), "application/json");
    let body = got[0].json();
    let obj = body.as_object().unwrap();
    assert_eq!(obj.len(), 1, "only text: {body}");
    let text = body["text"].as_str().unwrap();
    assert!(text.starts_with(TEXT_START), "{text}");
    assert!(text.contains("Please call within the hour."), "{text}");
    assert_eq!(engine.store.outbox_len(), 0);
}

#[tokio::test]
async fn teams_gets_an_adaptive_card() {
    let (rx, _engine, _t, _) = one_lead_to("teams", vec![]).await;
    let got = rx.received();
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    assert_eq!(body["type"], "message");
    let att = &body["attachments"][0];
    assert_eq!(
        att["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(att["content"]["type"], "AdaptiveCard");
    assert_eq!(att["content"]["version"], "1.4");
    let block = &att["content"]["body"][0];
    assert_eq!(block["type"], "TextBlock");
    assert_eq!(block["wrap"], true);
    assert!(block["text"].as_str().unwrap().starts_with(TEXT_START));
}

#[tokio::test]
async fn discord_gets_content_without_mentions() {
    let (rx, _engine, _t, _) = one_lead_to("discord", vec![]).await;
    let got = rx.received();
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    assert!(body["content"].as_str().unwrap().starts_with(TEXT_START));
    assert_eq!(
        body["allowed_mentions"],
        serde_json::json!({"parse": []}),
        "record text cannot ping anyone"
    );
}

#[tokio::test]
async fn google_chat_gets_text() {
    let (rx, _engine, _t, _) = one_lead_to("google_chat", vec![]).await;
    let got = rx.received();
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    assert!(body["text"].as_str().unwrap().starts_with(TEXT_START));
}

fn gap(rx: &BodyReceiver) -> Duration {
    let got = rx.received();
    assert_eq!(got.len(), 2, "one 429, then delivered");
    assert_eq!(got[0].body, got[1].body, "the same message again");
    got[1].at - got[0].at
}

#[tokio::test]
async fn slack_429_with_retry_after_waits_that_long() {
    let (rx, engine, _t, _) = one_lead_to(
        "slack",
        vec![BodyReply::new(429, "rate_limited").header("retry-after", "2")],
    )
    .await;
    let g = gap(&rx);
    assert!(
        g >= Duration::from_millis(1900) && g < Duration::from_millis(3500),
        "{g:?}"
    );
    assert_eq!(engine.store.outbox_len(), 0);
    assert!(dead_list(&engine).is_empty());
}

#[tokio::test]
async fn teams_and_google_chat_429_with_retry_after_wait_that_long() {
    for kind in ["teams", "google_chat"] {
        let (rx, engine, _t, _) = one_lead_to(
            kind,
            vec![BodyReply::new(429, "slow down").header("retry-after", "2")],
        )
        .await;
        let g = gap(&rx);
        assert!(
            g >= Duration::from_millis(1900) && g < Duration::from_millis(3500),
            "{kind}: {g:?}"
        );
        assert!(dead_list(&engine).is_empty(), "{kind}");
    }
}

#[tokio::test]
async fn discord_429_json_retry_after_is_honoured() {
    // No header at all: only Discord's JSON body says how long to wait (v10: seconds, a float).
    let (rx, engine, _t, _) = one_lead_to(
        "discord",
        vec![BodyReply::new(
            429,
            r#"{"message": "You are being rate limited.", "retry_after": 2.5, "global": false}"#,
        )
        .header("content-type", "application/json")],
    )
    .await;
    let g = gap(&rx);
    assert!(
        g >= Duration::from_millis(2400) && g < Duration::from_millis(4000),
        "{g:?}"
    );
    assert!(dead_list(&engine).is_empty());
}

#[tokio::test]
async fn a_404_from_slack_or_discord_goes_to_the_dead_letters() {
    for kind in ["slack", "discord"] {
        let (rx, engine, _t, _) = one_lead_to(
            kind,
            vec![BodyReply::new(404, "no_service").header("content-type", "text/plain")],
        )
        .await;
        assert_eq!(rx.received().len(), 1, "{kind}: no retry after a 404");
        let dead = dead_list(&engine);
        assert_eq!(dead.len(), 1, "{kind}");
        assert!(dead[0].reason.contains("404"), "{kind}: {}", dead[0].reason);
        assert!(
            !dead[0].reason.contains("secret-token"),
            "{kind}: the webhook URL is a secret: {}",
            dead[0].reason
        );
        assert_eq!(engine.store.outbox_len(), 0);
        // And `status` shows the destination as failing.
        let text = clinicea_notifier::app::status_text(&_t.settings(), &engine.store).unwrap();
        assert!(text.contains("FAILING since"), "{kind}: {text}");
        assert!(text.contains("404"), "{kind}: {text}");
    }
}
