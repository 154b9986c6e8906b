//! Pages of any size and shape: a one-page feed of 65,000 records stored in bounded chunks, a
//! page that breaks off mid-way read again, a 50 MB page taken and a 65 MiB one refused, and
//! malformed pages (records that are not objects, nesting deep enough to blow a stack, invalid
//! UTF-8) failing fast with a message that says what is wrong, never losing a change.

use crate::support::*;
use axum::body::Bytes;
use axum::response::IntoResponse;
use clinicea_notifier::ingest::client::{self, MAX_PAGE_BYTES};
use clinicea_notifier::kit::sandbox::SandboxOptions;
use clinicea_notifier::model::DEFAULT_CLINIC;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_page_feed_of_65000_records_is_stored_once_and_is_not_a_repeated_page() {
    let sb = sandbox(SandboxOptions {
        leads: 65_000,
        ignore_paging: true,
        ..SandboxOptions::default()
    })
    .await;
    let t = TestDir::new(&leads_only(&sb.base_url()).to_yaml());
    let engine = t.engine().await;
    let rep = poll_report(&engine)
        .await
        .expect("a one-page feed is not an error");
    // The baseline read the page, and page 1 repeating it ended the baseline; the same again for
    // the first poll from the origin (two hours back: every lead is in it, so every lead is sent).
    assert_eq!(rep.baseline_records, 65_000, "{rep:?}");
    assert_eq!((rep.records, rep.changes), (65_000, 65_000), "{rep:?}");
    assert_eq!(lead_requests(&sb), 4);
    let ids = sandbox_lead_ids(&sb);
    assert_eq!(ids.len(), 65_000);
    for id in &ids {
        let stored = engine
            .store
            .snapshot(DEFAULT_CLINIC, "leads", id)
            .await
            .unwrap();
        assert!(stored.is_some(), "lead {id} has no snapshot");
    }
    assert_eq!(
        engine
            .store
            .snapshot_count(DEFAULT_CLINIC, "leads")
            .await
            .unwrap(),
        65_000
    );
    let journal = journal_ids(&engine.store).await;
    assert_eq!(journal.len(), 65_000);
    assert_eq!(
        journal.into_iter().collect::<HashSet<_>>(),
        ids,
        "each once"
    );

    // A second poll (the leads changed within the overlap, still one page) finds nothing new.
    let rep = poll_report(&engine).await.expect("polls again");
    assert_eq!(rep.changes, 0, "{rep:?}");
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
    let config = Config::new(
        Clinicea::sandbox_from_now(&base_url)
            .baseline_off()
            .start_from("2020-01-01T00:00:00Z"),
    )
    .resources([Resource::leads().page_size(5000)]);
    let t = TestDir::new(&config.to_yaml());
    let engine = t.engine().await;
    let rep = poll_report(&engine)
        .await
        .expect("the retry reads the page whole");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one retry");
    assert_eq!(
        (rep.pages, rep.records, rep.changes),
        (1, 3000, 3000),
        "{rep:?}"
    );
    let journal = journal_ids(&engine.store).await;
    assert_eq!(journal.len(), 3000);
    assert_eq!(
        journal.iter().collect::<HashSet<_>>().len(),
        3000,
        "each once"
    );
    assert_eq!(
        engine
            .store
            .snapshot_count(DEFAULT_CLINIC, "leads")
            .await
            .unwrap(),
        3000
    );
}

/// The client takes pages up to MAX_PAGE_BYTES (64 MiB), so a 50 MB page (here one lead with a
/// 50 MB note) is a normal page: stored and diffed like any other. A 65 MiB page is refused with
/// a message naming the limit, and the checkpoint stays.
#[tokio::test]
async fn a_50_mb_page_is_accepted_and_a_65_mib_page_is_refused_clearly() {
    let sb = sandbox_with_leads(2).await;
    let big = "x".repeat(50_000_000);
    sb.sandbox
        .insert("leads", json!({"ID": "big-one", "Notes": big}));
    drop(big);
    let t = TestDir::new(&leads_only(&sb.base_url()).to_yaml());
    let engine = t.engine().await;
    let start = Instant::now();
    let rep = poll_report(&engine)
        .await
        .expect("a 50 MB page is accepted");
    println!("50 MB page: {:?}, {rep:?}", start.elapsed());
    assert_eq!((rep.records, rep.changes), (3, 3));
    let snap = engine
        .store
        .snapshot(DEFAULT_CLINIC, "leads", "big-one")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snap["Notes"].as_str().unwrap().len(), 50_000_000);
    let peak = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or_default()
        .to_string();
    println!("50 MB page: peak memory of the whole test process so far: {peak}");

    sb.sandbox.modify(
        "leads",
        "big-one",
        json!({"Notes": "y".repeat(MAX_PAGE_BYTES + 1024 * 1024)}),
    );
    let cp = engine
        .store
        .checkpoint(DEFAULT_CLINIC, "leads")
        .await
        .unwrap();
    let e = poll_report(&engine)
        .await
        .expect_err("a page over 64 MiB is refused");
    let msg = e.to_string();
    assert!(
        msg.contains("leads") && msg.contains("page 0") && msg.contains("larger than 64 MiB"),
        "{msg}"
    );
    assert_eq!(
        engine
            .store
            .checkpoint(DEFAULT_CLINIC, "leads")
            .await
            .unwrap(),
        cp,
        "the checkpoint stays"
    );
}

#[tokio::test]
async fn records_that_are_not_objects_are_skipped_and_counted() {
    let api = StaticApi::start(
        r#"[1, "two", null, [3], true, {"ID": "ok-1", "Name": "A"}, {"Name": "no id"}]"#,
    )
    .await;
    let t = TestDir::new(&leads_only(&api.base_url).to_yaml());
    let engine = t.engine().await;
    let rep = poll_report(&engine).await.expect("the poll goes on");
    assert_eq!(
        (rep.records, rep.skipped, rep.changes),
        (7, 6, 1),
        "{rep:?}"
    );
    assert!(engine
        .store
        .snapshot(DEFAULT_CLINIC, "leads", "ok-1")
        .await
        .unwrap()
        .is_some());
}

fn nested(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

#[test]
fn deeply_nested_json_is_a_clear_malformed_error_not_a_stack_overflow() {
    for body in [
        nested(100_000),
        format!("[{{\"ID\":\"1\",\"N\":{}}}]", nested(100_000)),
        "[".repeat(1_000_000),
    ] {
        let e = client::parse_page("leads", 2, body.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("leads") && e.contains("page 2"), "{e}");
        assert!(
            e.contains("nested") || e.contains("recursion") || e.contains("end of input"),
            "{e}"
        );
        println!("{e}");
    }
    let e = client::parse_page("leads", 0, nested(100_000).as_bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("recursion limit"), "says why: {e}");
}

/// The deepest record the page parser takes still goes all the way: stored, journaled, queued
/// and delivered (its outbox entry and change journal entry embed it deeper still).
#[tokio::test]
async fn the_deepest_record_the_parser_takes_is_delivered() {
    // The deepest nesting inside a record that a page may carry.
    let page = |depth: usize| format!("[{{\"ID\":\"deep\",\"N\":{}}}]", nested(depth));
    let depth = (100..200)
        .take_while(|d| client::parse_page("leads", 0, page(*d).as_bytes()).is_ok())
        .last()
        .unwrap();
    println!("the deepest record nesting a page may carry: {depth}");
    let body = page(depth);
    let api = StaticApi::start(body).await;
    let rx = Receiver::start().await;
    let config = leads_only(&api.base_url)
        .webhook("hook", &rx.url, |w| w)
        .rule(Rule::new("all", &["hook"]));
    let t = TestDir::new(&config.to_yaml());
    let engine = t.engine().await;
    let rep = poll_report(&engine).await.unwrap();
    assert_eq!(rep.changes, 1);
    let out = engine.deliverer.deliver_all_due().await.unwrap();
    assert_eq!(out.delivered, 1, "{out:?}");
    let got = rx.received();
    verify_with_library(&got[0]).unwrap();
    assert!(
        engine.store.changes().await.is_ok(),
        "the change journal still reads"
    );
    assert_eq!(engine.store.outbox_len().await.unwrap(), 0);
}

#[tokio::test]
async fn invalid_utf8_in_a_page_fails_the_poll_clearly_and_the_next_poll_recovers() {
    let api = StaticApi::start(b"[{\"ID\":\"1\",\"Name\":\"Ay\xff\xfesha\"}]".to_vec()).await;
    let t = TestDir::new(&leads_only(&api.base_url).to_yaml());
    let engine = t.engine().await;
    let e = poll_report(&engine)
        .await
        .expect_err("invalid UTF-8 fails the poll");
    let msg = e.to_string();
    println!("{msg}");
    assert!(
        msg.contains("leads") && msg.contains("page 0") && msg.contains("invalid JSON"),
        "{msg}"
    );
    assert!(
        msg.contains("unicode") || msg.contains("UTF-8"),
        "says why: {msg}"
    );
    assert!(!msg.contains("Ay"), "no record content in the error: {msg}");
    let cp = engine
        .store
        .checkpoint(DEFAULT_CLINIC, "leads")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        cp.last_success_start, None,
        "the checkpoint did not advance"
    );
    api.set(r#"[{"ID":"1","Name":"Aysha"}]"#);
    let rep = poll_report(&engine).await.unwrap();
    assert_eq!(
        rep.changes, 1,
        "the record is picked up once the page is fixed"
    );
}
