//! Issue 10: pages of any size in bounded chunks, the silent baseline at first start, and `once`
//! keeping the journal to its retention period.

use crate::helpers::*;
use axum::body::Bytes;
use axum::response::IntoResponse;
use clinicea_notifier::kit::sandbox::SandboxOptions;
use clinicea_notifier::model::{ChangeKind, DEFAULT_SOURCE};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The appointments feed as the v3 API serves it.
const APPOINTMENTS: &str = "  appointments:\n    path: /api/v3/appointments/getChanges\n    since_param: lastSyncDTime\n    since_format: \"%Y-%m-%dT%H:%M:%S\"\n    page_param: pageNo\n    first_page: 1\n    page_size: 100\n    page_size_param: pageSize\n    status_field: DataStatusValue\n";

/// A `clinicea:` section with the default `start_from: now`.
fn from_now(base_url: &str, extra: &str) -> String {
    format!("clinicea:\n  base_url: {base_url}\n  api_key: sandbox-api-key\n  poll_interval: 1s\n  timeout: 10s\n{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_page_feed_of_65000_records_is_stored_once_and_is_not_a_repeated_page() {
    let sb = sandbox(SandboxOptions {
        leads: 65_000,
        ignore_paging: true,
        ..SandboxOptions::default()
    })
    .await;
    let t = TestDir::new(&leads_only(&sb.base_url()));
    let engine = t.engine();
    let rep = engine
        .poll_all()
        .await
        .remove(0)
        .1
        .expect("a one-page feed is not an error");
    // The baseline read the page, and page 1 repeating it ended the baseline; the same again for
    // the first poll from the origin (two hours back: every lead is in it, so every lead is sent).
    assert_eq!(rep.baseline_records, 65_000, "{rep:?}");
    assert_eq!((rep.records, rep.changes), (65_000, 65_000), "{rep:?}");
    assert_eq!(lead_requests(&sb), 4);
    let ids = sandbox_lead_ids(&sb);
    assert_eq!(ids.len(), 65_000);
    for id in &ids {
        let stored = engine.store.snapshot(DEFAULT_SOURCE, "leads", id).unwrap();
        assert!(stored.is_some(), "lead {id} has no snapshot");
    }
    assert_eq!(engine.store.snapshot_count(DEFAULT_SOURCE, "leads"), 65_000);
    let journal = journal_ids(&engine.store);
    assert_eq!(journal.len(), 65_000);
    assert_eq!(
        journal.into_iter().collect::<HashSet<_>>(),
        ids,
        "each once"
    );

    // A second poll (the leads changed within the overlap, still one page) finds nothing new.
    let rep = engine.poll_all().await.remove(0).1.expect("polls again");
    assert_eq!(rep.changes, 0, "{rep:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinic_with_2000_records_started_now_sends_nothing_then_an_old_appointment_cancelled_is_modified_with_previous(
) {
    let sb = sandbox(SandboxOptions {
        leads: 1000,
        appointments: 1000,
        history: Duration::from_secs(90 * 24 * 3600),
        ..SandboxOptions::default()
    })
    .await;
    let rx = Receiver::start().await;
    let yaml = format!(
        "{}resources:\n  leads:\n    path: /api/v1/leads\n{APPOINTMENTS}store:\n  path: ./data\ndestinations:\n{}rules:\n  - name: appointment-cancelled\n    resource: appointments\n    on: [modified]\n    changed: {{ AppointmentStatus: {{ to: Cancelled }} }}\n    notify: [hook]\n  - name: new-lead\n    resource: leads\n    on: [added]\n    notify: [hook]\n",
        from_now(&sb.base_url(), ""),
        webhook_destination("hook", &rx.url, "")
    );
    let t = TestDir::new(&yaml);
    let engine = t.engine();
    for (name, r) in engine.poll_all().await {
        let rep = r.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(rep.baseline_records, 1000, "{name}: {rep:?}");
        assert_eq!(rep.changes, 0, "{name}: {rep:?}");
    }
    assert_eq!(engine.store.outbox_len(), 0, "nothing queued at start");
    assert_eq!(engine.store.change_count(), 0, "nothing journaled at start");
    let out = engine.deliverer.deliver_all_due().await.unwrap();
    assert_eq!(out.attempted, 0);
    assert!(rx.received().is_empty());
    for r in ["leads", "appointments"] {
        assert_eq!(engine.store.snapshot_count(DEFAULT_SOURCE, r), 1000, "{r}");
    }

    // An old appointment is cancelled, an old lead is edited.
    let appointment = sb
        .sandbox
        .records("appointments")
        .into_iter()
        .find(|a| {
            a["IsDeleted"] == false
                && matches!(
                    a["AppointmentStatus"].as_str(),
                    Some("Scheduled" | "Confirmed")
                )
        })
        .expect("an open appointment");
    let appt_id = appointment["ID"].as_str().unwrap().to_string();
    sb.sandbox
        .modify(
            "appointments",
            &appt_id,
            json!({"AppointmentStatus": "Cancelled"}),
        )
        .unwrap();
    let lead = sb
        .sandbox
        .records("leads")
        .into_iter()
        .find(|l| l["DataStatusStr"] != "Deleted")
        .unwrap();
    let lead_id = lead["ID"].as_str().unwrap().to_string();
    sb.sandbox
        .modify("leads", &lead_id, json!({"LeadStatus": "Lost"}))
        .unwrap();

    for (name, r) in engine.poll_all().await {
        let rep = r.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (rep.baseline_records, rep.changes),
            (0, 1),
            "{name}: {rep:?}"
        );
    }
    let changes = engine.store.changes().unwrap();
    let kind_of = |id: &str| {
        changes
            .iter()
            .find(|(_, c)| c.id == id)
            .map(|(_, c)| c.kind)
    };
    assert_eq!(
        kind_of(&lead_id),
        Some(ChangeKind::Modified),
        "an old lead is no new lead"
    );
    assert_eq!(kind_of(&appt_id), Some(ChangeKind::Modified));
    let out = engine.deliverer.deliver_all_due().await.unwrap();
    assert_eq!(out.delivered, 1, "{out:?}");
    let got = rx.received();
    assert_eq!(got.len(), 1, "only the cancellation is sent");
    verify_with_library(&got[0]).unwrap();
    let body = got[0].json();
    assert_eq!(body["type"], "appointments.modified");
    let data = &body["data"];
    assert_eq!(data["id"], appt_id.as_str());
    assert_eq!(data["rule"], "appointment-cancelled");
    assert_eq!(data["record"]["AppointmentStatus"], "Cancelled");
    assert_eq!(
        data["previous"]["AppointmentStatus"],
        appointment["AppointmentStatus"]
    );
    assert_eq!(data["previous"]["ID"], appt_id.as_str());
    let fields: Vec<&str> = data["changed_fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(fields.contains(&"AppointmentStatus"), "{fields:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_in_the_middle_of_the_baseline_resumes_it_and_nothing_is_ever_sent() {
    // 3,000 leads: 30 full pages and a 204, 50 ms apart.
    let sb = sandbox(SandboxOptions {
        leads: 3000,
        history: Duration::from_secs(30 * 24 * 3600),
        ..SandboxOptions::default()
    })
    .await;
    let rx = Receiver::start().await;
    let yaml = format!(
        "{}listen: 127.0.0.1:0\nresources:\n  leads:\n    path: /api/v1/leads\nstore:\n  path: ./data\ndestinations:\n{}rules:\n  - name: everything\n    notify: [hook]\n",
        from_now(&sb.base_url(), "  page_delay: 50ms\n"),
        webhook_destination("hook", &rx.url, "")
    );
    let t = TestDir::new(&yaml);
    let d = Daemon::start(&t, "run0").await;
    let reached = eventually(Duration::from_secs(30), || lead_requests(&sb) >= 10).await;
    assert!(
        reached,
        "the baseline never got going:\n{}",
        d.stderr_text()
    );
    d.kill9().await;
    let before = lead_requests(&sb);

    let store = open_store(&t);
    let b = store
        .baseline(DEFAULT_SOURCE, "leads")
        .unwrap()
        .expect("the baseline is recorded with the first checkpoint");
    assert!(b.finished.is_none(), "the kill came too late: {b:?}");
    assert!(b.pages > 0 && b.pages < 31, "{b:?}");
    assert_eq!(store.outbox_len(), 0);
    assert_eq!(store.change_count(), 0);
    let cp = store.checkpoint(DEFAULT_SOURCE, "leads").unwrap().unwrap();
    assert_eq!(cp.last_success_start, None);
    drop(store);
    let status = cli(&t, &["status"]).await;
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        text.contains("BASELINE in progress"),
        "{}",
        output_text(&status)
    );

    let out = cli(&t, &["once"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    let resumed = lead_requests(&sb) - before;
    // The rest of the baseline (from the page it reached) and the first poll from the origin:
    // not the whole baseline again.
    assert!(
        resumed <= 31 - b.pages + 2,
        "{resumed} requests after the kill, with {} of 31 pages stored before it",
        b.pages
    );
    let store = open_store(&t);
    let done = store.baseline(DEFAULT_SOURCE, "leads").unwrap().unwrap();
    assert!(done.finished.is_some(), "{done:?}");
    assert_eq!(store.snapshot_count(DEFAULT_SOURCE, "leads"), 3000);
    assert_eq!(
        store.baseline_snapshot_count(DEFAULT_SOURCE, "leads"),
        0,
        "merged"
    );
    assert_eq!(store.change_count(), 0);
    assert_eq!(store.outbox_len(), 0);
    assert!(
        rx.received().is_empty(),
        "nothing is ever sent for existing records"
    );
    drop(store);

    // And a change after it is sent, as a modification.
    let id = sandbox_lead_ids(&sb).into_iter().next().unwrap();
    sb.sandbox
        .modify("leads", &id, json!({"Notes": "called back"}));
    let out = cli(&t, &["once"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["type"], "leads.modified");
    assert_eq!(got[0].json()["data"]["id"], id.as_str());
}

#[tokio::test]
async fn records_changed_while_the_baseline_runs_are_sent_by_the_first_poll_after_it() {
    let sb = sandbox(SandboxOptions {
        leads: 450,
        history: Duration::from_secs(30 * 24 * 3600),
        ..SandboxOptions::default()
    })
    .await;
    let yaml = format!(
        "{}resources:\n  leads:\n    path: /api/v1/leads\nstore:\n  path: ./data\n",
        from_now(&sb.base_url(), "  page_delay: 200ms\n")
    );
    let t = TestDir::new(&yaml);
    let engine = t.engine();
    let ids: Vec<String> = sb
        .sandbox
        .records("leads")
        .iter()
        .map(|l| l["ID"].as_str().unwrap().to_string())
        .collect();
    // While the baseline pages through (5 pages, 200 ms apart): one lead edited before its
    // page is read, one after (both move to the end of the feed, so the baseline reads the
    // second one twice), and one new lead.
    let sandbox = sb.sandbox.clone();
    let (early, late) = (ids[430].clone(), ids[10].clone());
    let (e2, l2) = (early.clone(), late.clone());
    let edits = tokio::spawn(async move {
        // Page 1 requested: page 0 is read, page 4 is not.
        while sandbox.stats().requests.get("leads").copied().unwrap_or(0) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sandbox.modify("leads", &e2, json!({"Notes": "edited early"}));
        sandbox.modify("leads", &l2, json!({"Notes": "edited late"}));
        sandbox.insert(
            "leads",
            json!({"ID": "new-during-baseline", "FirstName": "N"}),
        )
    });
    let rep = engine.poll_all().await.remove(0).1.unwrap();
    edits.await.unwrap();
    assert!(rep.baseline_records >= 450, "{rep:?}");
    let changes = engine.store.changes().unwrap();
    let kind_of = |id: &str| {
        changes
            .iter()
            .filter(|(_, c)| c.id == id)
            .map(|(_, c)| c.kind)
            .collect::<Vec<_>>()
    };
    // The lead on page 0 was read before its edit: the edit is a modification with its previous.
    assert_eq!(kind_of(&late), vec![ChangeKind::Modified], "{changes:?}");
    // The lead edited before the baseline read it and the new one: their earlier version was
    // never seen, so they are judged as a backfill judges them. Nothing is lost.
    assert_eq!(kind_of(&early).len(), 1);
    assert_eq!(kind_of("new-during-baseline"), vec![ChangeKind::Added]);
    assert_eq!(changes.len(), 3, "nothing else is sent: {changes:?}");
    // (The edit of a lead already read shifts every later lead one place towards page 0, so
    // the baseline's offset paging skips one unchanged lead at the next page boundary: it stays
    // unknown, and nothing changed is lost. Re-reading a shifted window is the page-shift part of
    // the poller, not the baseline's.)
    assert!(engine.store.snapshot_count(DEFAULT_SOURCE, "leads") >= 450);
}

#[tokio::test]
async fn once_prunes_the_journal_to_store_journal_retention() {
    let sb = default_sandbox().await;
    let yaml = format!(
        "{}resources:\n  leads:\n    path: /api/v1/leads\nstore:\n  path: ./data\n  journal_retention: 1s\n",
        clinicea_section(&sb.base_url())
    );
    let t = TestDir::new(&yaml);
    let out = cli(&t, &["once"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(open_store(&t).change_count(), 137);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = cli(&t, &["once"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    let store = open_store(&t);
    assert_eq!(store.change_count(), 0, "the journal is kept for 1s only");
    assert_eq!(
        store.snapshot_count(DEFAULT_SOURCE, "leads"),
        137,
        "snapshots stay"
    );
}

/// An API whose first answer for page 0 breaks off after `cut` bytes of a page of `n` leads (more
/// than one chunk), and whose later answers are whole.
async fn breaking_api(n: usize, cut: usize) -> (String, Arc<AtomicUsize>) {
    let leads: Vec<Value> = (0..n)
        .map(|i| json!({"ID": format!("lead-{i:05}"), "FirstName": "F", "Notes": "x".repeat(100)}))
        .collect();
    let body = Bytes::from(serde_json::to_vec(&leads).unwrap());
    assert!(cut < body.len());
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let app = axum::Router::new().route(
        "/api/v1/leads",
        axum::routing::get(move |axum::extract::RawQuery(q): axum::extract::RawQuery| {
            let (body, c) = (body.clone(), c.clone());
            async move {
                if !q.unwrap_or_default().contains("intPageNo=0") {
                    return axum::http::StatusCode::NO_CONTENT.into_response();
                }
                let first = c.fetch_add(1, Ordering::SeqCst) == 0;
                let body = if first {
                    axum::body::Body::new(CutBody(Some(body.slice(..cut))))
                } else {
                    axum::body::Body::from(body)
                };
                ([("content-type", "application/json")], body).into_response()
            }
        }),
    );
    let addr = serve_on_loopback(app).await;
    (format!("http://{addr}"), calls)
}

/// A body that sends its bytes, then fails (the server then resets the connection).
struct CutBody(Option<Bytes>);

impl http_body::Body for CutBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        std::task::Poll::Ready(Some(match self.0.take() {
            Some(b) => Ok(http_body::Frame::data(b)),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "cut",
            )),
        }))
    }
}

#[tokio::test]
async fn a_page_that_breaks_off_after_some_chunks_is_read_again_and_each_record_counts_once() {
    // 3,000 leads of ~150 bytes: three chunks; the first answer stops two thirds in.
    let (base_url, calls) = breaking_api(3000, 300_000).await;
    let yaml = format!(
        "{}resources:\n  leads:\n    path: /api/v1/leads\n    page_size: 5000\nstore:\n  path: ./data\n",
        from_now(&base_url, "  baseline: { enabled: false }\n  start_from: 2020-01-01T00:00:00Z\n")
    );
    let t = TestDir::new(&yaml);
    let engine = t.engine();
    let rep = engine
        .poll_all()
        .await
        .remove(0)
        .1
        .expect("the retry reads the page whole");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one retry");
    assert_eq!(
        (rep.pages, rep.records, rep.changes),
        (1, 3000, 3000),
        "{rep:?}"
    );
    let journal = journal_ids(&engine.store);
    assert_eq!(journal.len(), 3000);
    assert_eq!(
        journal.iter().collect::<HashSet<_>>().len(),
        3000,
        "each once"
    );
    assert_eq!(engine.store.snapshot_count(DEFAULT_SOURCE, "leads"), 3000);
}

#[test]
fn a_baseline_since_that_is_not_a_time_and_a_since_with_the_baseline_off_are_config_errors() {
    for (extra, says) in [
        (
            "  baseline: { since: yesterday }\n",
            "clinicea.baseline.since",
        ),
        (
            "  baseline: { enabled: false, since: 2000-01-01T00:00:00Z }\n",
            "turned off",
        ),
        ("  baseline: { enabeld: false }\n", "enabeld"),
    ] {
        let t = TestDir::new(&format!(
            "{}resources:\n  leads:\n    path: /api/v1/leads\n",
            from_now("http://127.0.0.1:1", extra)
        ));
        let e = match clinicea_notifier::commands::load_settings_with(&t.config, &t.vars) {
            Ok(_) => panic!("{extra} should not load"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(says), "{extra}: {e}");
    }
}
