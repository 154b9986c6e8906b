//! Chat destinations (Slack, Teams, Discord, Google Chat) against real receivers on loopback:
//! each service's message shape, its way of saying "retry after", dead letters that never show
//! the secret URL, and record values that never become mentions, links or formatting.

use crate::support::*;
use clinicea_notifier::daemon::engine::Engine;
use std::time::Duration;

/// A config: new leads go to one chat destination of `kind` at `url`, rendered with `lead-chat`.
fn chat_config(base_url: &str, kind: &str, url: &str) -> String {
    leads_only(base_url)
        .retry(Retry::every("100ms", 3))
        .chat("team-chat", kind, url, |c| c.timeout("3s"))
        .rule(
            Rule::new("new-lead-chat", &["team-chat"])
                .resource("leads")
                .on(&["added"]),
        )
        .to_yaml()
}

/// Starts a sandbox, a receiver scripted with `replies` and an engine for `kind`; inserts one
/// lead, polls and delivers until the outbox is empty.
async fn one_lead_to(kind: &str, replies: Vec<Reply>) -> (Receiver, Engine, TestDir, Duration) {
    lead_to(kind, test_lead(), replies, Duration::from_secs(15)).await
}

/// [`one_lead_to`] with this lead, delivering for at most `drain` (a retry an hour later stays
/// queued).
async fn lead_to(
    kind: &str,
    lead: serde_json::Value,
    replies: Vec<Reply>,
    drain: Duration,
) -> (Receiver, Engine, TestDir, Duration) {
    let sb = empty_sandbox().await;
    let rx = Receiver::with(Responder::script(replies)).await;
    let t = TestDir::new(&chat_config(&sb.base_url(), kind, &rx.chat_url()));
    let engine = t.engine().await;
    sb.sandbox.insert("leads", lead);
    let rep = poll_report(&engine).await.unwrap();
    assert_eq!(rep.deliveries, 1);
    let started = std::time::Instant::now();
    drain_outbox(&engine, drain).await;
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
    assert_eq!(engine.store.outbox_len().await.unwrap(), 0);
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

fn gap(rx: &Receiver) -> Duration {
    let got = rx.received();
    assert_eq!(got.len(), 2, "one 429, then delivered");
    assert_eq!(got[0].body, got[1].body, "the same message again");
    got[1].at - got[0].at
}

#[tokio::test]
async fn slack_429_with_retry_after_waits_that_long() {
    let (rx, engine, _t, _) = one_lead_to(
        "slack",
        vec![Reply::status(429)
            .body("rate_limited")
            .header("retry-after", "2")],
    )
    .await;
    let g = gap(&rx);
    assert!(
        g >= Duration::from_millis(1900) && g < Duration::from_millis(3500),
        "{g:?}"
    );
    assert_eq!(engine.store.outbox_len().await.unwrap(), 0);
    assert!(dead_list(&engine).await.is_empty());
}

#[tokio::test]
async fn teams_and_google_chat_429_with_retry_after_wait_that_long() {
    for kind in ["teams", "google_chat"] {
        let (rx, engine, _t, _) = one_lead_to(
            kind,
            vec![Reply::status(429)
                .body("slow down")
                .header("retry-after", "2")],
        )
        .await;
        let g = gap(&rx);
        assert!(
            g >= Duration::from_millis(1900) && g < Duration::from_millis(3500),
            "{kind}: {g:?}"
        );
        assert!(dead_list(&engine).await.is_empty(), "{kind}");
    }
}

#[tokio::test]
async fn discord_429_json_retry_after_is_honoured() {
    // No header at all: only Discord's JSON body says how long to wait (v10: seconds, a float).
    let (rx, engine, _t, _) = one_lead_to(
        "discord",
        vec![Reply::status(429)
            .body(r#"{"message": "You are being rate limited.", "retry_after": 2.5, "global": false}"#)
            .header("content-type", "application/json")],
    )
    .await;
    let g = gap(&rx);
    assert!(
        g >= Duration::from_millis(2400) && g < Duration::from_millis(4000),
        "{g:?}"
    );
    assert!(dead_list(&engine).await.is_empty());
}

#[tokio::test]
async fn a_404_from_slack_or_discord_goes_to_the_dead_letters() {
    for kind in ["slack", "discord"] {
        let (rx, engine, _t, _) = one_lead_to(
            kind,
            vec![Reply::status(404)
                .body("no_service")
                .header("content-type", "text/plain")],
        )
        .await;
        assert_eq!(rx.received().len(), 1, "{kind}: no retry after a 404");
        let dead = dead_list(&engine).await;
        assert_eq!(dead.len(), 1, "{kind}");
        assert!(dead[0].reason.contains("404"), "{kind}: {}", dead[0].reason);
        assert!(
            !dead[0].reason.contains("secret-token"),
            "{kind}: the webhook URL is a secret: {}",
            dead[0].reason
        );
        assert_eq!(engine.store.outbox_len().await.unwrap(), 0);
        // And `status` shows the destination as failing.
        let text = clinicea_notifier::commands::status::status_text(&_t.settings(), &engine.store)
            .await
            .unwrap();
        assert!(text.contains("FAILING since"), "{kind}: {text}");
        assert!(text.contains("404"), "{kind}: {text}");
    }
}

/// `Retry-After: 1e20` (and Discord's reset headers saying the same) must not panic the delivery
/// task, which would then be re-queued every few seconds with its attempt count unchanged,
/// forever: the wait is bounded by the named maximum and the attempt counts.
#[tokio::test]
async fn a_429_with_an_absurd_retry_after_neither_panics_nor_waits_unbounded() {
    use clinicea_notifier::net::retry_after::MAX_RETRY_AFTER;
    for (kind, reply) in [
        (
            "slack",
            Reply::status(429)
                .body("rate_limited")
                .header("retry-after", "1e20"),
        ),
        (
            "teams",
            Reply::status(429)
                .body("slow down")
                .header("retry-after", "1e20"),
        ),
        (
            "discord",
            Reply::status(429)
                .body(r#"{"retry_after": 1e300}"#)
                .header("content-type", "application/json")
                .header("x-ratelimit-reset-after", "1e20")
                .header("retry-after", "NaN"),
        ),
    ] {
        let (rx, engine, _t, _) =
            lead_to(kind, test_lead(), vec![reply], Duration::from_millis(500)).await;
        assert_eq!(
            rx.received().len(),
            1,
            "{kind}: one attempt, then a long wait"
        );
        let q = queued(&engine, "team-chat").await;
        assert_eq!(q.len(), 1, "{kind}: still queued, not dead");
        assert_eq!(q[0].attempts, 1, "{kind}: the attempt was counted");
        let wait_ms = q[0].next_attempt_ms - chrono::Utc::now().timestamp_millis();
        let max_ms = MAX_RETRY_AFTER.as_millis() as i64;
        assert!(
            wait_ms > max_ms - 60_000 && wait_ms <= max_ms,
            "{kind}: the wait is bounded by MAX_RETRY_AFTER: {wait_ms} ms"
        );
        let logs = attempt_logs(&engine, q[0].seq).await;
        assert_eq!(logs.len(), 1, "{kind}");
        assert!(
            matches!(&logs[0].verdict, clinicea_notifier::model::Verdict::Retry { retry_after: Some(d), .. } if *d == MAX_RETRY_AFTER),
            "{kind}: {:?}",
            logs[0].verdict
        );
    }
}

/// A lead whose fields are chat markup: a Google Chat everyone-mention, a Markdown link, Discord
/// mentions and emphasis.
fn hostile_lead() -> serde_json::Value {
    let mut lead = test_lead();
    lead["FirstName"] = serde_json::json!("<users/all>");
    lead["LastName"] = serde_json::json!("[click](https://evil.example)");
    lead["Notes"] = serde_json::json!("@everyone <@123> **urgent**");
    lead
}

/// The message text a chat service received.
fn chat_text(kind: &str, body: &serde_json::Value) -> String {
    let v = match kind {
        "teams" => &body["attachments"][0]["content"]["body"][0]["text"],
        "discord" => &body["content"],
        _ => &body["text"],
    };
    v.as_str().expect("a text").to_string()
}

#[tokio::test]
async fn record_values_never_become_mentions_links_or_formatting_in_any_chat_service() {
    for kind in ["slack", "teams", "discord", "google_chat"] {
        let (rx, _engine, _t, _) =
            lead_to(kind, hostile_lead(), vec![], Duration::from_secs(15)).await;
        let got = rx.received();
        assert_eq!(got.len(), 1, "{kind}");
        let text = chat_text(kind, &got[0].json());
        // The template's own text is untouched.
        assert!(text.starts_with("New lead: "), "{kind}: {text}");
        assert!(
            text.contains("(source: Website, status: New)"),
            "{kind}: {text}"
        );
        assert!(
            !text.contains("<users/all>"),
            "{kind}: a live mention: {text}"
        );
        assert!(!text.contains("<@123>"), "{kind}: a live mention: {text}");
        match kind {
            "slack" => {
                assert!(
                    text.contains("&lt;users/all&gt; [click](https://evil.example)"),
                    "{text}"
                );
                assert!(text.contains("@everyone &lt;@123&gt; **urgent**"), "{text}");
            }
            "teams" | "discord" => {
                assert!(
                    text.contains(r"\<users/all\> \[click\](https://evil.example)"),
                    "{kind}: {text}"
                );
                assert!(!text.contains("[click]("), "{kind}: a live link: {text}");
                assert!(text.contains(r"\<@123\> \*\*urgent\*\*"), "{kind}: {text}");
                if kind == "discord" {
                    assert!(text.contains("@\u{200B}everyone"), "{text}");
                    assert!(!text.contains("@everyone"), "{text}");
                }
            }
            _ => {
                assert!(text.contains("<\u{200B}users/all>"), "{text}");
                assert!(
                    text.contains("[click]\u{200B}(https://evil.example)"),
                    "{text}"
                );
                assert!(!text.contains("[click]("), "a live link: {text}");
            }
        }
    }
}
