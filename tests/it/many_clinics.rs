//! Many clinics in one process: each clinic polls with its own key, its changes carry its name
//! (`data.clinic`, its own `webhook-id`s), one clinic's broken key or stalled API holds up no
//! other, a reload adds a clinic, and a store made before `clinics:` existed goes on unchanged.
//!
//! Each clinic here is its own sandbox (its own organization, key and records), reached through
//! the clinic's own `base_url`.

use crate::support::*;
use clinicea_notifier::kit::sandbox::{Fault, FaultKind, SandboxHandle, SandboxOptions};
use std::collections::HashSet;
use std::time::Duration;

/// The key the south clinic's sandbox accepts.
const SOUTH_KEY: &str = "south-sandbox-key";

/// A sandbox of its own for the south clinic: another organization, another key, other records.
async fn south_sandbox(leads: usize) -> SandboxHandle {
    sandbox(SandboxOptions {
        seed: 7,
        api_key: SOUTH_KEY.into(),
        leads,
        patients: 0,
        appointments: 0,
        ..SandboxOptions::default()
    })
    .await
}

/// Two clinics polling their leads, every change to the webhook `hooks` at `url`.
fn two_clinics(north: &SandboxHandle, south_url: &str, south_key: &str, url: &str) -> Config {
    leads_only(&north.base_url())
        .clinic("north", Clinic::at(&north.base_url(), "sandbox-api-key"))
        .clinic("south", Clinic::at(south_url, south_key))
        .webhook("hooks", url, |w| w.timeout("5s"))
        .rule(Rule::new("all-leads", &["hooks"]).resource("leads"))
}

/// The `data.clinic` of each delivery, by record id.
fn clinics_by_id(got: &[Received]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            let body = r.json();
            (
                body["data"]["id"].as_str().unwrap_or_default().to_string(),
                body["data"]["clinic"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_revoked_key_fails_only_its_clinic_and_the_other_delivers_every_change_with_its_name() {
    let north = sandbox_with_leads(6).await;
    let south = south_sandbox(4).await;
    let rx = Receiver::start().await;
    let t =
        TestDir::new(&two_clinics(&north, &south.base_url(), "a-revoked-key", &rx.url).to_yaml());
    let engine = t.engine().await;
    let polled = engine.poll_all().await;
    let outcome: Vec<(&str, bool)> = polled
        .iter()
        .map(|p| (p.clinic.as_str(), p.result.is_ok()))
        .collect();
    assert_eq!(outcome, [("north", true), ("south", false)], "{polled:?}");
    let south_error = polled[1].result.as_ref().unwrap_err().to_string();
    assert!(south_error.contains("401"), "{south_error}");
    assert!(!south_error.contains("a-revoked-key"), "{south_error}");
    drain_outbox(&engine, Duration::from_secs(20)).await;

    let got = rx.received();
    let want: Vec<(String, String)> = {
        let mut v: Vec<_> = sandbox_lead_ids(&north)
            .into_iter()
            .map(|id| (id, "north".to_string()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        clinics_by_id(&got),
        want,
        "every north lead, once, named north"
    );
    for r in &got {
        verify_with_library(r).expect("signed");
        assert_eq!(r.json()["type"], "leads.added");
    }

    // The CLI says the same: `once` fails for south only, `status` names both.
    drop(engine);
    let once = cli(&t, &["once"]).await;
    let text = String::from_utf8_lossy(&once.stdout);
    assert_eq!(once.status.code(), Some(1), "{text}");
    assert!(text.contains("north/leads: 1 pages"), "{text}");
    assert!(text.contains("south/leads: poll failed"), "{text}");
    let status = cli(&t, &["status"]).await;
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("Clinics: 2"), "{status}");
    let south_block = &status[status.find("  south").expect("south listed")..];
    assert!(south_block.contains("FAILED"), "{status}");
    let north_block = &status[status.find("  north").expect("north listed")..];
    assert!(
        north_block
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("ok at")),
        "{status}"
    );
}

#[tokio::test]
async fn the_same_record_in_two_clinics_is_two_changes_with_two_webhook_ids() {
    let north = sandbox(SandboxOptions {
        leads: 0,
        patients: 0,
        appointments: 0,
        ..SandboxOptions::default()
    })
    .await;
    let south = south_sandbox(0).await;
    let lead = serde_json::json!({"ID": "L-1", "FirstName": "Same", "Email": "same@example.com"});
    let a = north.sandbox.insert("leads", lead.clone());
    let b = south.sandbox.insert("leads", lead);
    assert_eq!(a["ID"], b["ID"]);
    let rx = Receiver::start().await;
    let t = TestDir::new(&two_clinics(&north, &south.base_url(), SOUTH_KEY, &rx.url).to_yaml());
    let engine = t.engine().await;
    for p in engine.poll_all().await {
        p.result.unwrap_or_else(|e| panic!("{}: {e}", p.clinic));
    }
    drain_outbox(&engine, Duration::from_secs(20)).await;
    let got = rx.received();
    assert_eq!(
        clinics_by_id(&got),
        [
            ("L-1".to_string(), "north".to_string()),
            ("L-1".to_string(), "south".to_string())
        ]
    );
    let ids: HashSet<String> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 2, "one webhook-id per (clinic, change): {ids:?}");
    // Stable per clinic: the journal's changes hash to the ids that were sent.
    drop(engine);
    let store = open_store(&t);
    let sent: HashSet<String> = store
        .changes()
        .await
        .unwrap()
        .iter()
        .map(|(_, c)| c.change_id.clone())
        .collect();
    assert_eq!(sent, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_clinic_delays_neither_the_polls_nor_the_deliveries_of_another() {
    let north = sandbox_with_leads(0).await;
    let south = south_sandbox(0).await;
    // Every south request stalls far past its timeout, for the whole test.
    south
        .sandbox
        .inject_faults(Fault::new(FaultKind::Stall(Duration::from_secs(600))).times(1000));
    let rx = Receiver::start().await;
    let config = two_clinics(&north, &south.base_url(), SOUTH_KEY, &rx.url)
        .clinicea(Clinicea::sandbox_from_now(&north.base_url()).timeout("20s"))
        // South's two stalled requests (its own limit) leave north one of the fleet's three.
        .fleet_max_concurrent_requests(3)
        .listen();
    let t = TestDir::new(&config.to_yaml());
    let mut d = Notifier::run(&t)
        .ready_within(Duration::from_secs(60))
        .start()
        .await;
    // Past north's baseline (one request) and its first poll, so new leads are changes.
    assert!(eventually(Duration::from_secs(15), || lead_requests(&north) >= 2).await);
    // North goes on polling every second while south's first request hangs.
    let first = north.sandbox.insert("leads", test_lead());
    let second = north.sandbox.insert("leads", test_lead());
    let want: HashSet<String> = [&first, &second]
        .iter()
        .map(|r| r["ID"].as_str().unwrap().to_string())
        .collect();
    assert!(
        eventually(Duration::from_secs(15), || rx.ok_ids() == want).await,
        "north's leads arrive while south stalls: {:?}\n{}",
        rx.ok_ids(),
        d.stderr_text()
    );
    assert!(south.sandbox.stats().faults_served >= 1, "south was asked");
    let (code, ready) = get_text(&d.url("/readyz")).await;
    assert_eq!(code, 503, "{ready}");
    assert!(
        ready.contains("clinics not ready: 1 of 2: south"),
        "{ready}"
    );
    assert!(!ready.contains("north/"), "{ready}");
    let s = scrape_until(&d.url(""), Duration::from_secs(10), |s| {
        s.value(
            "clinicea_notifier_polls_total",
            &[("clinic", "north"), ("resource", "leads")],
        ) >= 2.0
    })
    .await;
    assert_eq!(
        s.value(
            "clinicea_notifier_deliveries_total",
            &[
                ("clinic", "north"),
                ("destination", "hooks"),
                ("outcome", "delivered")
            ]
        ),
        2.0
    );
    d.terminate(Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_a_clinic_and_a_removed_one_keeps_its_checkpoint_for_its_return() {
    let north = sandbox_with_leads(0).await;
    let south = south_sandbox(0).await;
    let rx = Receiver::start().await;
    let base = || {
        leads_only(&north.base_url())
            .clinicea(Clinicea::sandbox_from_now(&north.base_url()).overlap("1s"))
            .listen()
            .webhook("hooks", &rx.url, |w| w.timeout("5s"))
            .rule(Rule::new("all-leads", &["hooks"]).resource("leads"))
            .clinic("north", Clinic::at(&north.base_url(), "sandbox-api-key"))
    };
    let t = TestDir::new(&base().to_yaml());
    let mut d = Notifier::run(&t)
        .ready_within(Duration::from_secs(60))
        .start()
        .await;
    assert!(eventually(Duration::from_secs(15), || lead_requests(&north) >= 2).await);
    let n1 = north.sandbox.insert("leads", test_lead());
    assert!(
        eventually(Duration::from_secs(15), || rx.count() == 1).await,
        "{}",
        d.stderr_text()
    );

    // Add south: its first poll is its baseline (nothing sent), then its new leads arrive. Its
    // lead from before is older than the overlap (1 s), so not a change since the first start.
    south.sandbox.insert("leads", test_lead());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    t.rewrite(
        &base()
            .clinic("south", Clinic::at(&south.base_url(), SOUTH_KEY))
            .to_yaml(),
    );
    assert!(
        d.reload("config reloaded", 1, Duration::from_secs(10))
            .await,
        "{}",
        d.stderr_text()
    );
    assert!(
        eventually(Duration::from_secs(15), || lead_requests(&south) >= 2).await,
        "south is polled after the reload"
    );
    let s1 = south.sandbox.insert("leads", test_lead());
    let n2 = north.sandbox.insert("leads", test_lead());
    let id = |r: &serde_json::Value| r["ID"].as_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(15), || {
            let got = clinics_by_id(&rx.received());
            got.contains(&(id(&s1), "south".into())) && got.contains(&(id(&n2), "north".into()))
        })
        .await,
        "{:?}\n{}",
        clinics_by_id(&rx.received()),
        d.stderr_text()
    );
    assert_eq!(
        rx.count(),
        3,
        "the lead south had before it was added is its baseline: {:?}\n{}",
        rx.received()
            .iter()
            .map(|r| (
                r.data_id(),
                r.json()["data"]["clinic"].clone(),
                r.header("webhook-id")
            ))
            .collect::<Vec<_>>(),
        d.stderr_text()
    );

    // Remove south again: its checkpoint stays in the store.
    t.rewrite(&base().to_yaml());
    assert!(
        d.reload("config reloaded", 2, Duration::from_secs(10))
            .await
    );
    d.terminate(Duration::from_secs(30)).await;
    let store = open_store(&t);
    assert!(store.checkpoint("south", "leads").await.unwrap().is_some());
    assert!(store.checkpoint("north", "leads").await.unwrap().is_some());
    assert!(clinics_by_id(&rx.received()).contains(&(id(&n1), "north".into())));
}

#[tokio::test]
async fn a_store_made_before_clinics_is_the_default_clinic_and_nothing_is_sent_again() {
    let sb = sandbox_with_leads(5).await;
    let rx = Receiver::start().await;
    let single = new_leads_to_hooks(&sb.base_url(), &rx.url);
    let t = TestDir::new(&single.to_yaml());
    {
        let engine = t.engine().await;
        poll_report(&engine).await.unwrap();
        drain_outbox(&engine, Duration::from_secs(20)).await;
    }
    assert_eq!(rx.count(), 5);
    // What the version before clinics wrote: journal entries hold the whole change and name its
    // `source`, outbox entries no clinic. One such entry is still queued.
    let path = store_path(&t);
    let records: std::collections::HashMap<String, serde_json::Value> = sb
        .sandbox
        .records("leads")
        .into_iter()
        .map(|r| (r["ID"].as_str().unwrap().to_string(), r))
        .collect();
    {
        let db = sled::open(&path).unwrap();
        let changes = db.open_tree("changes").unwrap();
        for (seq, slim) in take_journal_pages(&changes) {
            let k = seq.to_be_bytes();
            assert_eq!(slim["clinic"], "default", "{slim}");
            let id = slim["id"].as_str().unwrap();
            let whole = serde_json::json!({
                "source": "default", "resource": slim["resource"], "id": id,
                "change": slim["change"], "record": records[id], "previous": null,
                "changed_fields": slim["changed_fields"], "server_status": null,
                "detected_at": slim["detected_at"],
            });
            changes
                .insert(k, serde_json::to_vec(&whole).unwrap())
                .unwrap();
        }
        db.open_tree("meta")
            .unwrap()
            .remove(b"upgrade\0slim-journal")
            .unwrap()
            .expect("the journal rewrite is recorded as done");
        let old_entry = serde_json::json!({
            "seq": 900_001, "destination": "hooks", "webhook_id": "msg_queued_by_the_old_version",
            "event_type": "leads.added", "resource": "leads", "record_id": "OLD-1", "rule": "r",
            "change_seq": 1, "payload": {"kind": "webhook", "body": "{\"queued\":true}"},
            "attempts": 0, "next_attempt_ms": 0, "created_ms": 0
        });
        db.open_tree("outbox")
            .unwrap()
            .insert(
                clinicea_notifier::outbox::store::outbox_key("hooks", 900_001),
                serde_json::to_vec(&old_entry).unwrap(),
            )
            .unwrap();
        db.flush().unwrap();
    }
    // The same config, then a `clinics:` config naming a clinic `default`: the old store is that
    // clinic's, nothing is detected again, and the queued entry goes out.
    let fleet = new_leads_to_hooks(&sb.base_url(), &rx.url)
        .clinic("default", Clinic::at(&sb.base_url(), "sandbox-api-key"));
    for (i, config) in [single, fleet].into_iter().enumerate() {
        t.rewrite(&config.to_yaml());
        let engine = t.engine().await;
        let rep = poll_report(&engine).await.unwrap();
        assert_eq!(
            (rep.changes, rep.baseline_records),
            (0, 0),
            "config {i}: {rep:?}"
        );
        drain_outbox(&engine, Duration::from_secs(20)).await;
    }
    let got = rx.received();
    assert_eq!(
        got.len(),
        6,
        "the five first deliveries and the old queued entry, nothing more"
    );
    assert_eq!(got[5].header("webhook-id"), "msg_queued_by_the_old_version");
    let store = open_store(&t);
    assert!(store
        .changes()
        .await
        .unwrap()
        .iter()
        .all(|(_, c)| c.clinic == "default"));
}

#[tokio::test]
async fn check_lists_each_clinic_and_the_resources_it_polls() {
    let t = TestDir::new(
        &Config::new(Clinicea::new("https://api.clinicea.com", "default-key"))
            .without_store()
            .resources([Resource::leads(), Resource::appointments()])
            .clinic(
                "north",
                Clinic::default()
                    .api_key("north-key")
                    .timezone("Asia/Karachi"),
            )
            .clinic(
                "south",
                Clinic::default()
                    .api_key("south-key")
                    .polls(&["appointments"]),
            )
            .to_yaml(),
    );
    let out = cli(&t, &["check"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Clinics: 2 (at most 8 API requests at once in all)"),
        "{text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    let at = |name: &str| {
        lines
            .iter()
            .position(|l| l.trim_start().starts_with(name))
            .unwrap()
    };
    assert!(
        lines[at("north")].contains("timezone Asia/Karachi"),
        "{text}"
    );
    assert!(
        lines[at("north") + 1].contains("polls appointments, leads"),
        "{text}"
    );
    assert!(
        lines[at("south") + 1]
            .trim_end()
            .ends_with("polls appointments"),
        "{text}"
    );
    for key in ["default-key", "north-key", "south-key"] {
        assert!(!text.contains(key), "check prints no key: {text}");
    }
}

#[tokio::test]
async fn a_broken_clinic_is_named_with_its_key_and_line() {
    let yaml = "clinicea:\n  base_url: https://api.clinicea.com\n  timezone: Mars/Olympus\nclinics:\n  north:\n    api_key: k1\n    resources: [leads, bills]\n  south:\n    base_url: ftp://x\nresources:\n  leads: { path: /api/v1/leads }\n";
    let t = TestDir::new(yaml);
    let out = cli(&t, &["check"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(":7: clinics.north.resources: resource `bills` is not defined"),
        "{err}"
    );
    assert!(err.contains("clinics.south.api_key: is missing"), "{err}");
    assert!(
        err.contains(":9: clinics.south.base_url: must be an http(s) URL"),
        "{err}"
    );
    // The inherited zone is wrong once, and said once.
    assert_eq!(err.matches("clinicea.timezone").count(), 1, "{err}");
}

#[tokio::test]
async fn a_rule_for_one_clinic_sends_only_that_clinics_changes() {
    let north = sandbox_with_leads(3).await;
    let south = south_sandbox(2).await;
    let (all, north_only) = (Receiver::start().await, Receiver::start().await);
    let config = leads_only(&north.base_url())
        .clinic("north", Clinic::at(&north.base_url(), "sandbox-api-key"))
        .clinic("south", Clinic::at(&south.base_url(), SOUTH_KEY))
        .webhook("all", &all.url, |w| w.timeout("5s"))
        .webhook("north-desk", &north_only.url, |w| w.timeout("5s"))
        .rule(Rule::new("everything", &["all"]))
        .rule(
            Rule::new("north-leads", &["north-desk"])
                .clinic(&["north"])
                .resource("leads"),
        );
    let t = TestDir::new(&config.to_yaml());
    let engine = t.engine().await;
    for p in engine.poll_all().await {
        p.result.unwrap_or_else(|e| panic!("{}: {e}", p.clinic));
    }
    drain_outbox(&engine, Duration::from_secs(20)).await;
    let per_clinic = |rx: &Receiver, clinic: &str| {
        clinics_by_id(&rx.received())
            .iter()
            .filter(|(_, c)| c == clinic)
            .count()
    };
    assert_eq!(
        (per_clinic(&all, "north"), per_clinic(&all, "south")),
        (3, 2)
    );
    assert_eq!(
        (per_clinic(&north_only, "north"), north_only.count()),
        (3, 3),
        "the north rule sends north's leads and nothing of south's"
    );
    for r in north_only.received() {
        let rules = r.json()["data"]["rules"].clone();
        assert!(
            rules.as_array().unwrap().contains(&"north-leads".into()),
            "{rules}"
        );
    }
    // A rule naming a clinic that is not configured is refused, with its line.
    let bad = config.rule(Rule::new("typo", &["all"]).clinic(&["nort"]));
    t.rewrite(&bad.to_yaml());
    let out = cli(&t, &["check"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("rules[typo].clinic"), "{err}");
    assert!(err.contains("nort"), "{err}");
}
