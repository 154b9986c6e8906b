//! Quiet hours: a delivery due inside a destination's quiet hours is held in the outbox (no
//! attempt, no attempts log) and sent once when they end, on the clinic's clock and across a DST
//! change; a retry whose wait lands inside them waits for their end; `status` shows what is held
//! and until when (the real binary, text and JSON); a reload that removes or shortens them
//! releases what they held, at once or at their new end; `check` refuses quiet hours that are
//! wrong. The main case runs on PostgreSQL too.
//!
//! The in-process tests run the deliverer on a manual clock ([`Clock::manual`]) set to times after
//! the real now (so the entries a poll commits now are due by then), and step it across hours.

use crate::support::*;
use chrono::{DateTime, Timelike, Utc};
use clinicea_notifier::commands::status::status_text;
use clinicea_notifier::deliver::Clock;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The sandbox's leads in a clinic on `timezone`, every change to the webhook `hook` at `url`
/// with these quiet hours and retry schedule.
fn quiet_config(base_url: &str, timezone: &str, url: &str, quiet: &str, retry: Retry) -> String {
    Config::new(Clinicea::sandbox(base_url).timezone(timezone))
        .retry(retry)
        .webhook("hook", url, |w| w.timeout("5s").quiet_hours(quiet))
        .rule(Rule::new("r", &["hook"]).resource("leads"))
        .to_yaml()
}

#[tokio::test]
async fn a_delivery_due_in_quiet_hours_waits_for_their_end_across_a_dst_change_then_goes_once() {
    held_across_the_gap_then_sent_once(None).await;
}

#[tokio::test]
async fn on_postgresql_too_a_held_delivery_waits_in_the_shared_outbox_then_goes_once() {
    let Some(db) = ScratchDatabase::from_env().await else {
        return;
    };
    held_across_the_gap_then_sent_once(Some(StoreSection::postgres(&db.url))).await;
}

/// New York, 2027-03-14: 02:00 EST jumps to 03:00 EDT, so the window's end, 02:30, does not
/// exist that night; it ends at the first instant after the gap, 03:00 EDT (07:00 UTC). `store`:
/// the store section (`None`: sled in the test's folder).
async fn held_across_the_gap_then_sent_once(store: Option<StoreSection>) {
    let sb = sandbox_with_leads(1).await;
    let rx = Receiver::start().await;
    let mut config = Config::new(Clinicea::sandbox(&sb.base_url()).timezone("America/New_York"))
        .retry(Retry::every("1s", 3))
        .webhook("hook", &rx.url, |w| {
            w.timeout("5s")
                .quiet_hours(r#"{ from: "22:00", to: "02:30" }"#)
        })
        .rule(Rule::new("r", &["hook"]).resource("leads"));
    if let Some(store) = store {
        config = config.store(store);
    }
    let t = TestDir::new(&config.to_yaml());
    let engine = t.engine().await;
    // 23:00 EST on Saturday 2027-03-13.
    let clock = Clock::manual(utc("2027-03-14T04:00:00Z"));
    let deliverer = engine.deliverer.clone().with_clock(clock.clone());
    poll_report(&engine).await.unwrap();

    let out = deliverer.deliver_all_due().await.unwrap();
    assert_eq!((out.attempted, out.held), (0, 1), "held, not attempted");
    assert!(rx.received().is_empty());
    let held = queued(&engine, "hook").await;
    assert_eq!(held.len(), 1, "the entry stays in the outbox");
    let end = utc("2027-03-14T07:00:00Z").timestamp_millis();
    assert_eq!(held[0].attempts, 0, "holding is not an attempt");
    assert_eq!(held[0].next_attempt_ms, end);
    let hold = held[0].held.expect("marked held");
    assert_eq!(hold.until_ms, end);
    assert!(hold.due_ms <= utc("2027-03-14T04:00:00Z").timestamp_millis());
    assert!(attempt_logs(&engine, held[0].seq).await.is_empty());

    // Just before the end (01:59:59 EST) nothing is due.
    clock.set(utc("2027-03-14T06:59:59Z"));
    let out = deliverer.deliver_all_due().await.unwrap();
    assert_eq!((out.attempted, out.held), (0, 0));
    assert!(rx.received().is_empty());

    // At 03:00 EDT it goes, once.
    clock.set(utc("2027-03-14T07:00:00Z"));
    let out = deliverer.deliver_all_due().await.unwrap();
    assert_eq!((out.attempted, out.delivered), (1, 1));
    clock.set(utc("2027-03-14T09:00:00Z"));
    deliverer.deliver_all_due().await.unwrap();
    assert_eq!(rx.received().len(), 1, "sent once");
    assert_eq!(engine.store.outbox_len().await.unwrap(), 0);
}

#[tokio::test]
async fn a_retry_whose_wait_lands_in_quiet_hours_waits_for_their_end() {
    let sb = sandbox_with_leads(1).await;
    let rx = Receiver::with(Responder::script([Reply::status(500)])).await;
    let t = TestDir::new(&quiet_config(
        &sb.base_url(),
        "Europe/London",
        &rx.url,
        r#"{ from: "20:00", to: "08:00", days: [sat, sun] }"#,
        Retry::every("1h", 3).jitter(0.0),
    ));
    let engine = t.engine().await;
    // Friday 2027-12-03, 19:30 GMT: not quiet, so the first attempt is made; its retry an hour
    // later would be inside the weekend's quiet stretch, which ends on Monday at 08:00.
    let clock = Clock::manual(utc("2027-12-03T19:30:00Z"));
    let deliverer = engine.deliverer.clone().with_clock(clock.clone());
    poll_report(&engine).await.unwrap();
    let out = deliverer.deliver_all_due().await.unwrap();
    assert_eq!((out.attempted, out.retried), (1, 1));
    let e = &queued(&engine, "hook").await[0];
    let monday = utc("2027-12-06T08:00:00Z").timestamp_millis();
    assert_eq!((e.attempts, e.next_attempt_ms), (1, monday));
    let hold = e.held.expect("marked held");
    assert_eq!(hold.until_ms, monday);
    assert_eq!(
        hold.due_ms,
        utc("2027-12-03T20:30:00Z").timestamp_millis(),
        "when the retry's wait ended"
    );
    assert_eq!(
        attempt_logs(&engine, e.seq).await.len(),
        1,
        "one attempt logged"
    );

    let status = status_text(&engine.settings, &engine.store).await.unwrap();
    // `status` reads the real clock, which is before Monday 2027-12-06: still held.
    assert!(
        status.contains(
            "held 1 until 2027-12-06 08:00 GMT (Europe/London), 2027-12-06 08:00 UTC by quiet hours"
        ),
        "{status}"
    );

    clock.set(utc("2027-12-05T12:00:00Z"));
    assert_eq!(deliverer.deliver_all_due().await.unwrap().attempted, 0);
    clock.set(utc("2027-12-06T08:00:00Z"));
    let out = deliverer.deliver_all_due().await.unwrap();
    assert_eq!((out.attempted, out.delivered), (1, 1));
    assert_eq!(
        rx.received().len(),
        2,
        "the failed attempt and the one after the weekend"
    );
}

#[tokio::test]
async fn removing_quiet_hours_releases_what_they_held_at_the_next_start() {
    let sb = sandbox_with_leads(1).await;
    let rx = Receiver::start().await;
    let quiet = r#"{ from: "20:00", to: "08:00" }"#;
    let yaml = |quiet: Option<&str>| {
        Config::new(Clinicea::sandbox(&sb.base_url()))
            .webhook("hook", &rx.url, |w| match quiet {
                Some(q) => w.timeout("5s").quiet_hours(q),
                None => w.timeout("5s"),
            })
            .rule(Rule::new("r", &["hook"]).resource("leads"))
            .to_yaml()
    };
    let t = TestDir::new(&yaml(Some(quiet)));
    let clock = Clock::manual(utc("2027-06-01T21:00:00Z"));
    {
        let engine = t.engine().await;
        poll_report(&engine).await.unwrap();
        let out = engine
            .deliverer
            .clone()
            .with_clock(clock.clone())
            .deliver_all_due()
            .await
            .unwrap();
        assert_eq!(out.held, 1);
    }
    // Still 21:00, but the config no longer has quiet hours: it goes now.
    t.rewrite(&yaml(None));
    let engine = t.engine().await;
    let out = engine
        .deliverer
        .clone()
        .with_clock(clock.clone())
        .deliver_all_due()
        .await
        .unwrap();
    assert_eq!((out.attempted, out.delivered), (1, 1));
    assert_eq!(rx.received().len(), 1);
}

#[tokio::test]
async fn shortened_quiet_hours_release_what_they_held_at_their_new_end() {
    let sb = sandbox_with_leads(1).await;
    let rx = Receiver::start().await;
    let yaml = |quiet: &str| {
        Config::new(Clinicea::sandbox(&sb.base_url()))
            .webhook("hook", &rx.url, |w| w.timeout("5s").quiet_hours(quiet))
            .rule(Rule::new("r", &["hook"]).resource("leads"))
            .to_yaml()
    };
    let t = TestDir::new(&yaml(r#"{ from: "20:00", to: "08:00" }"#));
    let clock = Clock::manual(utc("2027-06-01T21:00:00Z"));
    {
        let engine = t.engine().await;
        poll_report(&engine).await.unwrap();
        let d = engine.deliverer.clone().with_clock(clock.clone());
        assert_eq!(d.deliver_all_due().await.unwrap().held, 1);
    }
    // Now quiet until 06:00: still held at 21:00 and at 05:59, sent at 06:00, not 08:00.
    t.rewrite(&yaml(r#"{ from: "20:00", to: "06:00" }"#));
    for (at, sent) in [
        ("2027-06-01T21:00:00Z", 0),
        ("2027-06-02T05:59:00Z", 0),
        ("2027-06-02T06:00:00Z", 1),
    ] {
        // A new engine each time, as after a reload or restart.
        let engine = t.engine().await;
        clock.set(utc(at));
        let d = engine.deliverer.clone().with_clock(clock.clone());
        assert_eq!(
            d.deliver_all_due().await.unwrap().delivered,
            sent,
            "at {at}"
        );
        assert_eq!(rx.received().len() as u64, sent, "at {at}");
    }
}

#[tokio::test]
async fn status_of_the_real_binary_shows_what_is_held_and_until_when() {
    let sb = sandbox_with_leads(1).await;
    let rx = Receiver::start().await;
    // A window from an hour ago to two hours ahead, on the real clock (a UTC clinic).
    let now = Utc::now();
    let hhmm = |t: DateTime<Utc>| format!("{:02}:{:02}", t.hour(), t.minute());
    let end = now + chrono::Duration::hours(2);
    let quiet = format!(
        r#"{{ from: "{}", to: "{}" }}"#,
        hhmm(now - chrono::Duration::hours(1)),
        hhmm(end)
    );
    let t = TestDir::new(&quiet_config(
        &sb.base_url(),
        "UTC",
        &rx.url,
        &quiet,
        Retry::every("1s", 3),
    ));
    let once = cli(&t, &["once"]).await;
    let text = output_text(&once);
    assert!(once.status.success(), "{text}");
    assert!(text.contains("0 attempted"), "{text}");
    assert!(text.contains("held by quiet hours: 1"), "{text}");
    assert!(rx.received().is_empty(), "nothing is sent in quiet hours");

    let until = end.format("%Y-%m-%d %H:%M").to_string();
    let status = cli(&t, &["status"]).await;
    let text = output_text(&status);
    assert!(
        text.contains(&format!(
            "held 1 until {until} UTC (UTC), {until} UTC by quiet hours"
        )),
        "{text}"
    );
    let json = cli(&t, &["status", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", output_text(&json)));
    let held = &v["destinations"][0]["held"];
    assert_eq!(held[0]["count"], 1, "{v}");
    assert_eq!(held[0]["clinic"], "default");
    assert_eq!(held[0]["timezone"], "UTC");
    let json_until = utc(held[0]["until"].as_str().unwrap());
    assert_eq!(hhmm(json_until), hhmm(end), "{v}");
    assert!(json_until > now && json_until <= end, "{v}");
}

#[test]
fn check_refuses_quiet_hours_that_are_wrong_each_at_its_key() {
    let yaml = r#"clinicea:
  base_url: https://api.clinicea.com
  api_key: k
resources:
  leads:
    path: /api/v1/leads
destinations:
  front-desk:
    type: webhook
    url: http://127.0.0.1:9/hook
    secret: whsec_8vJ7wPz1m3Qx5tKcR0yNaBdEfGhIjKlM
    quiet_hours: { from: "20:00", to: "20:00", days: [sat, caturday] }
  team:
    type: slack
    url: https://hooks.slack.com/services/T0/B0/X
    template: lead-chat
    quiet_hours: { from: "7pm" }
rules:
  - name: r
    resource: leads
    notify: [front-desk, team]
"#;
    let t = TestDir::new(yaml);
    let (ok, text) = check(&t.config);
    assert!(!ok, "{text}");
    for expected in [
        "destinations.front-desk.quiet_hours.to: `from` and `to` are the same time",
        "destinations.front-desk.quiet_hours.days[1]: unknown day \"caturday\"",
        "destinations.team.quiet_hours.from: \"7pm\" is not a time of day",
        "destinations.team.quiet_hours.to: `from` needs a `to`",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // Each is placed at its destination's line.
    assert!(
        text.contains(":9: destinations.front-desk.quiet_hours"),
        "{text}"
    );
    assert!(
        text.contains(":14: destinations.team.quiet_hours"),
        "{text}"
    );

    // Fixed, it passes and says what it holds.
    t.rewrite(
        &yaml
            .replace(r#"to: "20:00""#, r#"to: "08:00""#)
            .replace("caturday", "sun")
            .replace(r#"{ from: "7pm" }"#, "{ days: [sun] }"),
    );
    let (ok, text) = check(&t.config);
    assert!(ok, "{text}");
    assert!(
        text.contains("quiet hours, clinic time: 20:00-08:00, all day sat sun"),
        "{text}"
    );
}

#[tokio::test]
async fn test_rule_says_whether_a_delivery_at_a_given_time_is_held_and_until_when() {
    let t = TestDir::new(&quiet_config(
        "https://api.clinicea.com",
        "Europe/London",
        "http://127.0.0.1:9/hook",
        r#"{ from: "20:00", to: "08:00" }"#,
        Retry::every("1s", 3),
    ));
    let record = t.dir.path().join("lead.json");
    let mut lead = test_lead();
    lead["ID"] = "L-1".into();
    std::fs::write(&record, lead.to_string()).unwrap();
    let record = record.display().to_string();
    let args = |at: &str| {
        [
            "test-rule",
            "--resource",
            "leads",
            "--record",
            record.as_str(),
            "--at",
            at,
        ]
        .map(str::to_string)
    };
    let run = |at: &'static str| {
        let args = args(at);
        let t = &t;
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = cli(t, &refs).await;
            (out.status.success(), output_text(&out))
        }
    };
    // Saturday 21:00 GMT, the night the clocks go forward: held until 08:00 BST, 07:00 UTC.
    let (ok, text) = run("2027-03-27T21:00:00Z").await;
    assert!(ok, "{text}");
    assert!(
        text.contains("HELD by quiet hours (20:00-08:00, Europe/London): at 2027-03-27 21:00 GMT")
            && text.contains("sent at 2027-03-28 08:00 BST (Europe/London), 2027-03-28 07:00 UTC"),
        "{text}"
    );
    let (ok, text) = run("2027-03-28T12:00:00Z").await;
    assert!(ok, "{text}");
    assert!(text.contains("do not hold it"), "{text}");
    assert!(!text.contains("HELD"), "{text}");
    let (ok, text) = run("tomorrow").await;
    assert!(!ok && text.contains("RFC 3339"), "{text}");
}
