//! Polling the sandbox into a durable, diffed change stream: pages from 0 or 1 and the empty
//! page that ends them, edits, deletes and records without an id, `start_from`, every auth mode,
//! and the API's errors (429, 401, malformed JSON, stalls, a poll cut off between pages).

use crate::support::*;
use clinicea_notifier::kit::sandbox::{Fault, FaultKind, SandboxOptions};
use clinicea_notifier::model::{record_version, ChangeKind};
use clinicea_notifier::route::plan::Payload;
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test]
async fn syncs_137_leads_over_two_pages_from_page_0() {
    // Arrange
    let sb = default_sandbox().await;
    let t = TestDir::new(&leads_only(&sb.base_url()).to_yaml());
    let engine = t.engine().await;
    // Act
    let results = engine.poll_all().await;
    // Assert
    let rep = results[0].result.as_ref().expect("poll succeeds");
    assert_eq!((rep.pages, rep.records, rep.changes), (2, 137, 137));
    let ids = journal_ids(&engine.store).await;
    assert_eq!(ids.len(), 137);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 137, "each once");
    // Two pages for the silent baseline at first start, two for the poll from the origin.
    assert_eq!(sb.sandbox.stats().requests.get("leads"), Some(&4));
    let changes = engine.store.changes().await.unwrap();
    assert!(changes.iter().all(|(_, c)| c.kind == ChangeKind::Added));
}

#[tokio::test]
async fn syncs_137_appointments_v3_style_from_page_1() {
    let sb = sandbox(SandboxOptions {
        appointments: 137,
        ..SandboxOptions::default()
    })
    .await;
    let config = Config::new(Clinicea::sandbox(&sb.base_url()))
        .resources([Resource::appointments()])
        .without_store();
    let t = TestDir::new(&config.to_yaml());
    let engine = t.engine().await;
    let results = engine.poll_all().await;
    let rep = results[0].result.as_ref().expect("poll succeeds");
    assert_eq!((rep.pages, rep.records), (2, 137));
    // The sandbox's appointments include deleted ones; every record is a change of some kind.
    assert_eq!(rep.changes, 137);
    assert_eq!(
        journal_ids(&engine.store)
            .await
            .iter()
            .collect::<HashSet<_>>()
            .len(),
        137
    );
}

#[tokio::test]
async fn an_empty_page_is_a_204_and_ends_the_sync() {
    // Exactly 100 leads: page 0 is full, page 1 is a 204 with no body.
    let sb = sandbox_with_leads(100).await;
    let t = TestDir::new(&leads_only(&sb.base_url()).to_yaml());
    let engine = t.engine().await;
    let rep = poll_report(&engine).await.expect("poll succeeds");
    assert_eq!((rep.pages, rep.records, rep.changes), (2, 100, 100));
    // Nothing at all: a single 204.
    let sb0 = sandbox_with_leads(0).await;
    let t0 = TestDir::new(&leads_only(&sb0.base_url()).to_yaml());
    let rep0 = poll_report(&t0.engine().await)
        .await
        .expect("poll succeeds");
    assert_eq!((rep0.pages, rep0.records, rep0.changes), (1, 0, 0));
}

#[tokio::test]
async fn an_edit_is_modified_with_its_changed_fields_and_the_overlap_reread_is_silent() {
    let sb = default_sandbox().await;
    // The edit is queued for a webhook nobody serves: its body shows the previous version.
    let config = leads_only(&sb.base_url())
        .webhook("hooks", "http://127.0.0.1:9/", |w| w)
        .rule(
            Rule::new("r", &["hooks"])
                .resource("leads")
                .on(&["modified"]),
        );
    let t = TestDir::new(&config.to_yaml());
    let engine = t.engine().await;
    poll_report(&engine).await.expect("first poll");
    let lead = sb.sandbox.records("leads")[5].clone();
    let id = lead["ID"].as_str().unwrap().to_string();
    let new_status = if lead["LeadStatus"] == "HOT" {
        "COLD"
    } else {
        "HOT"
    };
    sb.sandbox
        .modify(
            "leads",
            &id,
            serde_json::json!({ "LeadStatus": new_status }),
        )
        .expect("modified");

    let rep = poll_report(&engine).await.expect("second poll");
    assert_eq!(rep.changes, 1);
    let (_, change) = engine.store.changes().await.unwrap().pop().unwrap();
    assert_eq!(change.kind, ChangeKind::Modified);
    assert_eq!(change.id, id);
    assert!(
        change.changed_fields.contains(&"LeadStatus".to_string()),
        "{:?}",
        change.changed_fields
    );
    assert!(!change.changed_fields.contains(&"DataStatusStr".to_string()));
    let edited = sb
        .sandbox
        .records("leads")
        .into_iter()
        .find(|r| r["ID"] == id.as_str())
        .unwrap();
    assert_eq!(
        change.version,
        record_version(engine.store.id_key(), &edited),
        "the journal names the version it saw"
    );
    let queued = queued(&engine, "hooks").await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].webhook_id, change.change_id);
    let Payload::Webhook { body } = &queued[0].payload else {
        panic!("a webhook body: {:?}", queued[0].payload)
    };
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["data"]["previous"]["LeadStatus"], lead["LeadStatus"]);
    assert_eq!(body["data"]["server_status"], "Modified");

    // The edited record is inside the overlap window: it is fetched again, and produces nothing.
    let rep = poll_report(&engine).await.expect("third poll");
    assert!(rep.records >= 1, "the overlap re-reads the edited record");
    assert_eq!(rep.changes, 0);
    assert_eq!(engine.store.change_count().await.unwrap(), 138);
}

#[tokio::test]
async fn a_delete_is_deleted() {
    let sb = default_sandbox().await;
    let t = TestDir::new(&leads_only(&sb.base_url()).to_yaml());
    let engine = t.engine().await;
    poll_report(&engine).await.expect("first poll");
    let id = sb.sandbox.records("leads")[7]["ID"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(sb.sandbox.delete("leads", &id));
    let rep = poll_report(&engine).await.expect("second poll");
    assert_eq!(rep.changes, 1);
    let (_, change) = engine.store.changes().await.unwrap().pop().unwrap();
    assert_eq!(
        (change.kind, change.id.as_str()),
        (ChangeKind::Deleted, id.as_str())
    );
}

#[tokio::test]
async fn a_record_without_an_id_is_skipped_and_the_poll_goes_on() {
    // The resource says records carry `LeadID`; two of three do not.
    let sb = sandbox_with_leads(2).await;
    sb.sandbox.insert(
        "leads",
        serde_json::json!({"LeadID": "L-1", "FirstName": "Ayesha", "LastName": "Khan"}),
    );
    let config = leads_only(&sb.base_url()).resources([Resource::leads().id_field("LeadID")]);
    let t = TestDir::new(&config.to_yaml());
    let engine = t.engine().await;
    let rep = poll_report(&engine).await.expect("the poll goes on");
    assert_eq!((rep.records, rep.skipped, rep.changes), (3, 2, 1));
    assert_eq!(journal_ids(&engine.store).await, vec!["L-1".to_string()]);
}

#[tokio::test]
async fn a_429_is_retried_inside_the_poll() {
    let sb = default_sandbox().await;
    sb.sandbox.inject_faults(
        Fault::new(FaultKind::Status {
            status: 429,
            retry_after: Some(1),
            body: "slow down".into(),
        })
        .times(1),
    );
    let t = TestDir::new(&leads_only(&sb.base_url()).to_yaml());
    let engine = t.engine().await;
    let started = std::time::Instant::now();
    let rep = poll_report(&engine)
        .await
        .expect("poll succeeds after the 429");
    assert_eq!(rep.changes, 137);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After: 1 was honoured"
    );
    assert_eq!(sb.sandbox.stats().faults_served, 1);
}

#[tokio::test]
async fn a_401_names_the_resource_and_status_and_never_the_key() {
    let sb = default_sandbox().await;
    let config = Config::new(Clinicea::sandbox(&sb.base_url()).api_key("wrong-key-123"));
    let t = TestDir::new(&config.to_yaml());
    let engine = t.engine().await;
    let err = poll_report(&engine).await.unwrap_err().to_string();
    assert!(err.contains("leads") && err.contains("401"), "{err}");
    assert!(
        err.contains("check clinicea.api_key") && err.contains("-byte body is not shown"),
        "a hint and the body's length, not the body (it may echo the key or hold patient data): {err}"
    );
    assert!(!err.contains("Invalid API key"), "{err}");
    assert!(
        !err.contains("wrong-key-123"),
        "the key never appears: {err}"
    );
    // The checkpoint did not move: nothing was stored.
    let cp = engine
        .store
        .checkpoint("default", "leads")
        .await
        .unwrap()
        .unwrap();
    assert!(cp.last_success_start.is_none());
    let st = engine.store.poll_status("default", "leads").await.unwrap();
    assert_eq!(st.consecutive_failures, 1);
}

#[tokio::test]
async fn malformed_json_names_the_resource_and_page() {
    let sb = default_sandbox().await;
    sb.sandbox
        .inject_faults(Fault::new(FaultKind::MalformedJson).times(1));
    let t = TestDir::new(&leads_only(&sb.base_url()).to_yaml());
    let engine = t.engine().await;
    let err = poll_report(&engine).await.unwrap_err().to_string();
    assert!(
        err.contains("leads") && err.contains("page 0") && err.contains("invalid JSON"),
        "{err}"
    );
    sb.sandbox
        .inject_faults(Fault::new(FaultKind::ObjectInsteadOfArray).times(1));
    let err = poll_report(&engine).await.unwrap_err().to_string();
    assert!(err.contains("an object where an array belongs"), "{err}");
    // And the next clean poll gets everything.
    let rep = poll_report(&engine).await.expect("clean poll");
    assert_eq!(rep.changes, 137);
}

#[tokio::test]
async fn a_poll_interrupted_after_its_first_page_loses_and_repeats_nothing() {
    let sb = default_sandbox().await;
    // Without the baseline, whose own pages would come first (baseline.rs covers it).
    let config = Config::new(
        Clinicea::sandbox(&sb.base_url())
            .page_delay("300ms")
            .baseline_off(),
    );
    let t = TestDir::new(&config.to_yaml());
    let engine = t.engine().await;
    // Fail the second page with a 400 (not retried), injected while the poll waits between pages.
    let sandbox = sb.sandbox.clone();
    let injector = tokio::spawn(async move {
        while sandbox.stats().requests.get("leads").copied().unwrap_or(0) < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sandbox.inject_faults(
            Fault::new(FaultKind::Status {
                status: 400,
                retry_after: None,
                body: "bad page".into(),
            })
            .times(1),
        );
    });
    let err = poll_report(&engine).await.unwrap_err();
    injector.await.unwrap();
    assert!(err.to_string().contains("400"), "{err}");
    assert_eq!(
        engine.store.change_count().await.unwrap(),
        100,
        "the first page was stored"
    );

    let rep = poll_report(&engine).await.expect("re-run succeeds");
    assert_eq!(rep.changes, 37, "only the rest is new");
    let ids = journal_ids(&engine.store).await;
    assert_eq!(ids.len(), 137);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        137,
        "every change exactly once"
    );
}

#[tokio::test]
async fn start_from_now_sends_nothing_from_before_the_first_start() {
    let sb = default_sandbox().await;
    let config = Config::new(Clinicea::sandbox(&sb.base_url()).without_start_from());
    let t = TestDir::new(&config.to_yaml());
    let engine = t.engine().await;
    let rep = poll_report(&engine).await.expect("poll");
    assert_eq!(
        rep.changes, 0,
        "the 137 existing leads predate the first start"
    );
    let new = sb.sandbox.insert(
        "leads",
        serde_json::json!({"FirstName": "Sana", "LastName": "Malik", "Email": "sana@example.com"}),
    );
    let rep = poll_report(&engine).await.expect("poll");
    assert_eq!(rep.changes, 1);
    assert_eq!(
        journal_ids(&engine.store).await,
        vec![new["ID"].as_str().unwrap().to_string()]
    );
}

#[tokio::test]
async fn every_auth_mode_reaches_the_sandbox() {
    let sb = sandbox_with_leads(3).await;
    for mode in ["header", "api_key_header", "query"] {
        let config = Config::new(Clinicea::sandbox(&sb.base_url()).auth(mode));
        let t = TestDir::new(&config.to_yaml());
        let rep = poll_report(&t.engine().await).await;
        assert_eq!(rep.expect(mode).changes, 3, "{mode}");
    }
}

#[tokio::test]
async fn login_mode_fetches_a_token_and_logs_in_again_once_on_a_401() {
    let sb = sandbox(SandboxOptions {
        leads: 3,
        token_ttl: Duration::from_millis(500),
        ..SandboxOptions::default()
    })
    .await;
    let login = |password: &str| {
        Config::new(Clinicea::sandbox(&sb.base_url()).login("sandbox", password)).to_yaml()
    };
    let t = TestDir::new(&login("sandbox"));
    let engine = t.engine().await;
    poll_report(&engine).await.expect("first poll logs in");
    assert_eq!(sb.sandbox.stats().logins, 1);
    // The token expires; the next request gets a 401, logs in again once, and succeeds.
    tokio::time::sleep(Duration::from_millis(700)).await;
    poll_report(&engine)
        .await
        .expect("second poll logs in again");
    assert_eq!(sb.sandbox.stats().logins, 2);
    // A wrong password is a clear login error without the password in it.
    let t2 = TestDir::new(&login("hunter2-secret"));
    let err = poll_report(&t2.engine().await)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("login"), "{err}");
    assert!(
        !err.contains("hunter2-secret") && !err.contains("sandbox-api-key"),
        "{err}"
    );
}

#[tokio::test]
async fn a_stalled_request_times_out_and_is_retried_inside_the_poll() {
    let sb = sandbox_with_leads(3).await;
    sb.sandbox
        .inject_faults(Fault::new(FaultKind::Stall(Duration::from_secs(5))).times(1));
    let config = Config::new(Clinicea::sandbox(&sb.base_url()).timeout("1s"));
    let t = TestDir::new(&config.to_yaml());
    let started = std::time::Instant::now();
    let rep = poll_report(&t.engine().await)
        .await
        .expect("retried after the timeout");
    assert_eq!(rep.changes, 3);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(started.elapsed() < Duration::from_secs(5));
}
