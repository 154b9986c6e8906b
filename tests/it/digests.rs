//! Digests through a real SMTP server (the product's catcher): the changes of a window wait in the
//! store and go out as one email listing them; a full digest goes out early; `kill -9` while
//! digests are being flushed and sent loses no change and never sends one digest under two ids.
//! Time is chosen by the test: the flusher's step ([`flush_due`]) is called with the instant it
//! should act at.

use crate::support::*;
use chrono::{DateTime, Utc};
use clinicea_notifier::daemon::digest::flush_due;
use clinicea_notifier::kit::catcher::{CatcherOptions, CaughtMessage};
use clinicea_notifier::route::plan::Payload;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const FROM: &str = "Clinic Notifier <notifier@clinic.example>";
const TO: &str = "frontdesk@clinic.example";

/// New leads to a `front-desk` email digest with `digest` (a YAML flow map).
fn digest_config(base_url: &str, smtp_port: u16, digest: &str) -> Config {
    leads_only(base_url)
        .smtp(Smtp::plain(smtp_port).from(FROM).timeout("3s"))
        .retry(Retry::every("200ms", 5))
        .email_digest(
            "front-desk",
            &[TO],
            "New lead: {{record.FirstName}} {{record.LastName}}",
            "new-lead",
            digest,
        )
        .rule(
            Rule::new("new-lead-email", &["front-desk"])
                .resource("leads")
                .on(&["added"]),
        )
}

/// Inserts `n` leads named `Lead0` .. and returns their ids.
fn insert_leads(sb: &clinicea_notifier::kit::sandbox::SandboxHandle, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut lead = test_lead();
            lead["FirstName"] = format!("Lead{i}").into();
            let stored = sb.sandbox.insert("leads", lead);
            stored["ID"].as_str().unwrap().to_string()
        })
        .collect()
}

/// The plain-text part of a caught message.
fn text_of(m: &CaughtMessage) -> String {
    mime_parts(m)
        .into_iter()
        .find(|(ct, _)| ct.starts_with("text/plain"))
        .map(|(_, t)| t)
        .unwrap_or_default()
}

/// The leads (of `ids`) a digest's text lists: each item ends with the new-lead template's
/// footer `lead ID.`.
fn listed(text: &str, ids: &[String]) -> Vec<String> {
    ids.iter()
        .filter(|id| text.contains(&format!("lead {id}.")))
        .cloned()
        .collect()
}

/// The instant just after the oldest waiting member was stored (before any window close).
async fn oldest_member(engine: &clinicea_notifier::daemon::engine::Engine) -> DateTime<Utc> {
    let ms = engine
        .store
        .digest_members()
        .await
        .unwrap()
        .iter()
        .map(|m| m.created_ms)
        .min()
        .expect("members wait");
    DateTime::from_timestamp_millis(ms + 1).unwrap()
}

#[tokio::test]
async fn an_hourly_digest_of_12_leads_is_one_email_listing_12() {
    let sb = empty_sandbox().await;
    let catcher = start_catcher(CatcherOptions::default()).await;
    let t = TestDir::new(
        &digest_config(&sb.base_url(), catcher.addr.port(), "{ every: 1h }").to_yaml(),
    );
    let engine = t.engine().await;
    let ids = insert_leads(&sb, 12);
    let rep = poll_report(&engine).await.unwrap();
    assert_eq!((rep.changes, rep.deliveries), (12, 12));
    assert_eq!(
        engine.store.outbox_len().await.unwrap(),
        0,
        "nothing is queued on its own"
    );
    assert_eq!(engine.store.digest_members().await.unwrap().len(), 12);

    // `status` shows them waiting, and the next close at the next whole hour.
    let report =
        clinicea_notifier::commands::status::status_report(&engine.settings, &engine.store)
            .await
            .unwrap();
    let d = report
        .destinations
        .iter()
        .find(|d| d.name == "front-desk")
        .unwrap();
    let dg = d.digest.as_ref().expect("a digest destination");
    assert_eq!(dg.waiting, 12);
    let next = dg.next_close.expect("a next close");
    assert_eq!(next.timestamp() % 3600, 0, "closes at a whole hour: {next}");
    let text = clinicea_notifier::commands::status::status_text(&engine.settings, &engine.store)
        .await
        .unwrap();
    assert!(
        text.contains(&format!(
            "digest every 1h: 12 waiting, next at {}",
            next.to_rfc3339()
        )),
        "{text}"
    );

    // Before the window closes nothing goes; at its close, one digest of all 12.
    let start = oldest_member(&engine).await;
    let early = flush_due(&engine.store, &engine.settings.pipeline, start)
        .await
        .unwrap();
    assert_eq!(early.digests, 0, "the window is still open");
    let f = flush_due(&engine.store, &engine.settings.pipeline, next)
        .await
        .unwrap();
    assert_eq!((f.digests, f.changes), (1, 12));
    assert!(engine.store.digest_members().await.unwrap().is_empty());
    let entries = queued(&engine, "front-desk").await;
    assert_eq!(entries.len(), 1);
    let Payload::Email(planned) = &entries[0].payload else {
        panic!("not an email: {:?}", entries[0].payload)
    };
    drain_outbox(&engine, Duration::from_secs(10)).await;
    let got = catcher.wait_for(1, Duration::from_secs(5)).await;
    // A moment more: a second message would be a bug.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_all = catcher.messages();
    assert_eq!((got.len(), got_all.len()), (1, 1), "one email");
    let m = &got_all[0];
    assert_eq!(m.rcpt_to, vec![TO.to_string()]);
    assert_eq!(m.header("Subject").as_deref(), Some("12 new changes"));
    assert_eq!(m.header("Message-ID").unwrap(), planned.message_id);
    let text = text_of(m);
    let mut shown = listed(&text, &ids);
    shown.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(shown, want, "every lead is listed:\n{text}");
    for i in 0..12 {
        assert_eq!(
            text.matches(&format!("New lead: Lead{i} Khan")).count(),
            2,
            "lead {i}: its subject line and its body's first line, once each:\n{text}"
        );
    }
    assert!(text.starts_with("12 new changes for front-desk"), "{text}");
    let parts = mime_parts(m);
    assert!(parts
        .iter()
        .any(|(ct, h)| ct.starts_with("text/html") && h.contains("12 new changes")));
    // Flushing again sends nothing more.
    let again = flush_due(
        &engine.store,
        &engine.settings.pipeline,
        next + chrono::Duration::hours(5),
    )
    .await
    .unwrap();
    assert_eq!(again.digests, 0);
}

#[tokio::test]
async fn a_full_digest_goes_out_early_with_at_most_max_changes() {
    let sb = empty_sandbox().await;
    let catcher = start_catcher(CatcherOptions::default()).await;
    let t = TestDir::new(
        &digest_config(&sb.base_url(), catcher.addr.port(), "{ every: 1h, max: 5 }").to_yaml(),
    );
    let engine = t.engine().await;
    let ids = insert_leads(&sb, 12);
    poll_report(&engine).await.unwrap();
    // Within the window: the two full digests go at once, the last 2 changes wait.
    let now = oldest_member(&engine).await;
    let f = flush_due(&engine.store, &engine.settings.pipeline, now)
        .await
        .unwrap();
    assert_eq!((f.digests, f.changes), (2, 10));
    assert_eq!(engine.store.digest_members().await.unwrap().len(), 2);
    drain_outbox(&engine, Duration::from_secs(10)).await;
    let got = catcher.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 2);
    let mut seen = Vec::new();
    for m in &got {
        let text = text_of(m);
        let l = listed(&text, &ids);
        assert_eq!(l.len(), 5, "{text}");
        assert!(text.contains("sent early"), "{text}");
        assert_eq!(m.header("Subject").as_deref(), Some("5 new changes"));
        seen.extend(l);
    }
    // The rest at the window's close.
    let close = now + chrono::Duration::hours(1);
    let f = flush_due(&engine.store, &engine.settings.pipeline, close)
        .await
        .unwrap();
    assert_eq!((f.digests, f.changes), (1, 2));
    drain_outbox(&engine, Duration::from_secs(10)).await;
    let got = catcher.wait_for(3, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 3);
    let last = got
        .iter()
        .find(|m| m.header("Subject").as_deref() == Some("2 new changes"))
        .expect("the last digest");
    seen.extend(listed(&text_of(last), &ids));
    seen.sort();
    let mut want = ids;
    want.sort();
    assert_eq!(seen, want, "each lead in exactly one digest");
}

#[test]
fn check_refuses_bad_digests_at_their_keys() {
    let bad = [
        ("type: email\n    to: [a@clinic.example]\n    subject: s\n    template: new-lead\n    digest: { every: 5q }", "digest.every"),
        ("type: email\n    to: [a@clinic.example]\n    subject: s\n    template: new-lead\n    digest: { at: [\"25:61\"] }", "digest.at[0]"),
        ("type: email\n    to: [a@clinic.example]\n    subject: s\n    template: new-lead\n    digest: { every: 1h, max: 0 }", "digest.max"),
        ("type: email\n    to: [a@clinic.example]\n    subject: s\n    template: new-lead\n    digest: { every: 1h }\n    digest_template: no-such-digest", "digest_template"),
        ("type: webhook\n    url: https://hooks.example.org/x\n    secret: whsec_8vJ7wPz1m3Qx5tKcR0yNaBdEfGhIjKlM\n    digest: { every: 1h }", "digest"),
    ];
    for (dest, key) in bad {
        let yaml = format!(
            "clinicea:\n  base_url: https://api.clinicea.example\n  api_key: k\nresources:\n  leads:\n    path: /api/v1/leads\nsmtp:\n  host: smtp.clinic.example\n  from: n@clinic.example\ndestinations:\n  d:\n    {dest}\nrules:\n  - name: r\n    notify: [d]\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, &yaml).unwrap();
        let err = match clinicea_notifier::daemon::settings::load_settings_with(
            &file,
            &Default::default(),
        ) {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains(&format!("destinations.d.{key}")),
            "{key}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_digests_flush_loses_nothing_and_a_resent_digest_keeps_its_id() {
    const LEADS: usize = 150;
    let sb = sandbox_with_leads(LEADS).await;
    let all: Vec<String> = sandbox_lead_ids(&sb).into_iter().collect();
    let catcher = start_catcher(CatcherOptions::default()).await;
    // Full digests of 4 go out early, all through the poll: flushes happen all the time.
    let config = Config::new(Clinicea::sandbox(&sb.base_url()).page_delay("150ms"))
        .listen()
        .smtp(Smtp::plain(catcher.addr.port()).from(FROM).timeout("3s"))
        .retry(Retry::every("200ms", 8))
        .email_digest(
            "front-desk",
            &[TO],
            "Lead {{record.FirstName}}",
            "new-lead",
            "{ every: 24h, max: 4 }",
        )
        .rule(
            Rule::new("all-leads", &["front-desk"])
                .resource("leads")
                .on(&["added"]),
        );
    let t = TestDir::new(&config.to_yaml());
    let mut rng = rand::thread_rng();
    let mut kills = Vec::new();
    for round in 0..4 {
        let before = catcher.messages().len();
        let d = Notifier::run(&t).tag(&format!("run{round}")).start().await;
        // Kill soon after a digest lands (a flush and a send are in progress around it), or
        // after a random moment.
        let wait = Duration::from_millis(rand::Rng::gen_range(&mut rng, 300..1500));
        let _ = eventually(wait, || catcher.messages().len() > before).await;
        tokio::time::sleep(Duration::from_millis(rand::Rng::gen_range(&mut rng, 0..60))).await;
        d.kill9().await;
        kills.push(catcher.messages().len() - before);
    }
    // Then a run to the end of the poll and of the deliveries.
    for _ in 0..3 {
        let out = cli(&t, &["once"]).await;
        assert!(out.status.success(), "{}", output_text(&out));
    }
    let store = open_store(&t);
    let waiting: Vec<String> = store
        .digest_members()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.record_id)
        .collect();
    assert!(
        waiting.len() < 4,
        "a full group would have gone: {}",
        waiting.len()
    );
    assert_eq!(
        store.outbox_len().await.unwrap(),
        0,
        "everything queued was sent"
    );
    assert_eq!(store.dead_len().await.unwrap(), 0);
    drop(store);
    // Per Message-ID, the leads it lists: every copy of one id lists the same leads.
    let mut by_id: HashMap<String, Vec<String>> = HashMap::new();
    for m in catcher.messages() {
        let id = m.header("Message-ID").unwrap();
        let mut l = listed(&text_of(&m), &all);
        l.sort();
        assert!(
            !l.is_empty() && l.len() <= 4,
            "{} leads in one digest",
            l.len()
        );
        if let Some(prev) = by_id.get(&id) {
            assert_eq!(
                prev, &l,
                "a digest sent again under its id lists the same leads"
            );
        }
        by_id.insert(id, l);
    }
    // Each lead in exactly one digest (or still waiting), none lost.
    let mut count: HashMap<&str, usize> = HashMap::new();
    for id in by_id.values().flatten().chain(&waiting) {
        *count.entry(id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "leads in two digests (two ids): {twice:?}"
    );
    let seen: HashSet<&str> = count.keys().copied().collect();
    let lost: Vec<&String> = all
        .iter()
        .filter(|id| !seen.contains(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} leads lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    eprintln!(
        "digest crash test: messages caught per run before its kill {kills:?}, {} distinct digests, {} copies, {} waiting",
        by_id.len(),
        catcher.messages().len(),
        waiting.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_digest_is_flushed_as_soon_as_its_page_is_stored() {
    let sb = empty_sandbox().await;
    let catcher = start_catcher(CatcherOptions::default()).await;
    let t = TestDir::new(
        &digest_config(
            &sb.base_url(),
            catcher.addr.port(),
            "{ every: 24h, max: 3 }",
        )
        .to_yaml(),
    );
    let engine = t.engine().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = tokio_util::sync::CancellationToken::new();
    let flusher = tokio::spawn(clinicea_notifier::daemon::digest::run_flusher(
        engine.store.clone(),
        engine.settings.pipeline.clone(),
        tx,
        engine.digest_kick.clone(),
        cancel.clone(),
    ));
    // Its first round finds nothing and goes to sleep (for a minute, or until kicked).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err());
    insert_leads(&sb, 3);
    poll_report(&engine).await.unwrap();
    let w = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the page's kick woke the flusher")
        .unwrap();
    assert_eq!(w.destination, "front-desk");
    assert_eq!(engine.store.outbox_len().await.unwrap(), 1);
    assert!(engine.store.digest_members().await.unwrap().is_empty());
    cancel.cancel();
    flusher.await.unwrap();
}

#[tokio::test]
async fn test_rule_says_a_delivery_would_be_digested_and_when() {
    let t =
        TestDir::new(&digest_config("https://api.clinicea.com", 2525, "{ every: 1h }").to_yaml());
    let record = t.dir.path().join("lead.json");
    let mut lead = test_lead();
    lead["ID"] = "L-1".into();
    std::fs::write(&record, lead.to_string()).unwrap();
    let record = record.display().to_string();
    let out = cli(
        &t,
        &[
            "test-rule",
            "--resource",
            "leads",
            "--record",
            record.as_str(),
        ],
    )
    .await;
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("digested (every 1h): not sent on its own")
            && text.contains("or at once when 50 changes wait"),
        "{text}"
    );
    // The time it names is the next whole hour.
    let at = text
        .split("which goes out at ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(at).unwrap();
    assert_eq!(at.timestamp() % 3600, 0, "{at}");
    assert!(at.timestamp() > Utc::now().timestamp());
}
