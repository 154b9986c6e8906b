//! `kill -9` at random-ish moments loses nothing: a sync killed twice journals every lead
//! exactly once, and so does a sync without pauses killed ten times (most kills inside a chunk's
//! write), deliveries killed four times all arrive with one `webhook-id` per change, and a
//! kill the instant a webhook lands leaves the store knowing what the receiver got. The notifier
//! runs as a child process; the sandbox and the receivers run in this process.

use crate::support::*;
use clinicea_notifier::outbox::store::Store;
use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Each id at most once: the duplicates, if any.
fn duplicates(ids: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    ids.iter()
        .filter(|id| !seen.insert(id.as_str()))
        .cloned()
        .collect()
}

/// Runs `once` to the end of the sync, then checks that the journal holds every lead of `all`
/// exactly once and that each has its snapshot; returns the store, opened.
async fn once_then_every_lead_journaled_once(t: &TestDir, all: &HashSet<String>) -> Store {
    let out = cli(t, &["once"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    let store = open_store(t);
    let ids = journal_ids(&store).await;
    let dups = duplicates(&ids);
    assert!(
        dups.is_empty(),
        "{} leads journaled twice, e.g. {:?}",
        dups.len(),
        dups.first()
    );
    let journaled: HashSet<String> = ids.into_iter().collect();
    let missing: Vec<&String> = all.difference(&journaled).collect();
    assert!(
        missing.is_empty(),
        "{} leads lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(journaled.len(), all.len());
    assert_eq!(
        store.snapshot_count("default", "leads").await.unwrap(),
        all.len()
    );
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_twice_in_the_middle_of_a_long_sync_then_once_journals_every_lead_exactly_once() {
    // 3,000 leads: 30 full pages and a 204, 50 ms apart, so a sync takes a few seconds.
    let sb = sandbox_with_leads(3000).await;
    let all = sandbox_lead_ids(&sb);
    assert_eq!(all.len(), 3000);
    let config = Config::new(Clinicea::sandbox(&sb.base_url()).page_delay("50ms")).listen();
    let t = TestDir::new(&config.to_yaml());

    let mut journaled_after_kill = Vec::new();
    let mut pages_before_kill = Vec::new();
    for (round, pages) in [6u64, 14].into_iter().enumerate() {
        let before = lead_requests(&sb);
        let d = Notifier::run(&t).tag(&format!("run{round}")).start().await;
        let reached = eventually(Duration::from_secs(30), || {
            lead_requests(&sb) >= before + pages
        })
        .await;
        assert!(
            reached,
            "round {round}: the sync never got {pages} pages in:\n{}",
            d.stderr_text()
        );
        d.kill9().await;
        pages_before_kill.push(lead_requests(&sb) - before);

        // The kill came before the end of the sync: the checkpoint never advanced.
        let store = open_store(&t);
        let cp = store
            .checkpoint("default", "leads")
            .await
            .expect("checkpoint reads")
            .expect("the origin is fixed durably before the first page");
        assert_eq!(
            cp.last_success_start, None,
            "round {round}: the sync finished before the kill; the test proves nothing"
        );
        let ids = journal_ids(&store).await;
        assert!(
            duplicates(&ids).is_empty(),
            "round {round}: twice in the journal"
        );
        assert!(ids.len() < 3000, "round {round}: {} journaled", ids.len());
        assert!(ids.iter().all(|id| all.contains(id)));
        journaled_after_kill.push(ids.len());
    }

    let store = once_then_every_lead_journaled_once(&t, &all).await;
    let cp = store.checkpoint("default", "leads").await.unwrap().unwrap();
    assert!(
        cp.last_success_start.is_some(),
        "the completed sync advanced the checkpoint"
    );
    drop(store);

    // And a further poll finds nothing new.
    let again = cli(&t, &["once"]).await;
    let text = String::from_utf8_lossy(&again.stdout).to_string();
    assert!(
        again.status.success() && text.contains(" 0 changes"),
        "{text}"
    );
    eprintln!(
        "sync crash test: pages fetched before each kill {pages_before_kill:?}, journal entries that survived each kill {journaled_after_kill:?}, final journal 3000 distinct"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_deliveries_four_times_loses_nothing_and_duplicates_keep_their_webhook_id() {
    const LEADS: usize = 300;
    let sb = sandbox_with_leads(LEADS).await;
    let all = sandbox_lead_ids(&sb);
    // Every 3rd request fails with 500, requests 120..160 get 503 with Retry-After, each takes
    // 30 ms: deliveries and retries are in progress all through the kills.
    let rx = Receiver::with(Responder::from_fn(|n| {
        let d = Duration::from_millis(30);
        if (120..160).contains(&n) {
            Reply::status(503).header("retry-after", "1").delay(d)
        } else if n % 3 == 2 {
            Reply::status(500).delay(d)
        } else {
            Reply::status(200).delay(d)
        }
    }))
    .await;
    // 300 ms between pages: the first kill lands while the poll is still running.
    let config = Config::new(Clinicea::sandbox(&sb.base_url()).page_delay("300ms"))
        .listen()
        .retry(Retry::schedule(&[
            "200ms", "200ms", "500ms", "1s", "1s", "2s", "2s", "5s",
        ]))
        .webhook("hook", &rx.url, |w| w.timeout("5s").concurrency(3))
        .rule(Rule::new("all-leads", &["hook"]).resource("leads"));
    let t = TestDir::new(&config.to_yaml());

    let mut rng = rand::thread_rng();
    let mut kills = Vec::new();
    for (round, base) in [10usize, 80, 160, 240].into_iter().enumerate() {
        let at = base + rng.gen_range(0..25);
        let d = Notifier::run(&t).tag(&format!("run{round}")).start().await;
        let reached = eventually(Duration::from_secs(45), || rx.count() >= at).await;
        assert!(
            reached,
            "round {round}: only {} requests arrived:\n{}",
            rx.count(),
            d.stderr_text()
        );
        d.kill9().await;
        kills.push((at, rx.count(), lead_requests(&sb)));
    }

    // A clean run finishes the work: wait until its outbox is empty and every lead arrived.
    let mut d = Notifier::run(&t).tag("final").start().await;
    let start = std::time::Instant::now();
    loop {
        let outbox = d.metric("clinicea_notifier_outbox_entries").await;
        if outbox == Some(0.0) && rx.ok_ids().len() == LEADS {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not done after 60 s: outbox {outbox:?}, {} of {LEADS} leads delivered:\n{}",
            rx.ok_ids().len(),
            d.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = d.terminate(Duration::from_secs(20)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        d.stderr_text()
    );

    let got = rx.received();
    // Every request is validly signed.
    for a in &got {
        verify_with_library(a)
            .unwrap_or_else(|e| panic!("request for {} fails verification: {e}", a.data_id()));
    }
    // Every lead arrived, and one change has one webhook-id however often it was sent.
    let mut by_id: HashMap<String, HashSet<String>> = HashMap::new();
    for a in &got {
        by_id
            .entry(a.data_id())
            .or_default()
            .insert(a.header("webhook-id"));
    }
    let odd: Vec<_> = by_id.iter().filter(|(_, w)| w.len() != 1).collect();
    assert!(
        odd.is_empty(),
        "{} leads were sent under several webhook-ids, e.g. {:?}",
        odd.len(),
        odd.first()
    );
    let delivered = rx.ok_ids();
    let missing: Vec<&String> = all.difference(&delivered).collect();
    assert!(
        missing.is_empty(),
        "{} leads never delivered, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(delivered.len(), LEADS);
    let webhook_ids: HashSet<String> = by_id.values().flatten().cloned().collect();
    assert_eq!(
        webhook_ids.len(),
        LEADS,
        "distinct leads, distinct webhook-ids"
    );
    let oks = got.iter().filter(|a| a.ok()).count();

    let store = open_store(&t);
    assert_eq!(store.outbox_len().await.unwrap(), 0);
    assert_eq!(store.dead_len().await.unwrap(), 0, "no dead letters");
    let ids = journal_ids(&store).await;
    assert!(duplicates(&ids).is_empty(), "each change journaled once");
    assert_eq!(ids.len(), LEADS);
    eprintln!(
        "delivery crash test: kills at (target, requests seen, lead pages served) {kills:?}; {} requests, {oks} answered 2xx, {} duplicate 2xx deliveries (same webhook-id), 0 lost, 0 dead",
        got.len(),
        oks - LEADS
    );
}

/// The receiver kills the notifier (`kill -9`) the instant the first webhook arrives, i.e. within
/// milliseconds of the page that produced it being committed; then the record changes before the
/// notifier comes back. The store must not have forgotten what the receiver already got: the
/// next change is `modified` (against the version delivered), not a second `added` under another
/// webhook-id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_the_instant_a_webhook_lands_then_an_edit_is_a_modified_not_a_second_added() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let sb = sandbox_with_leads(0).await;
    let pid = std::sync::Arc::new(AtomicU32::new(0));
    let p = pid.clone();
    let rx = Receiver::with(Responder::from_fn(move |n| {
        let pid = p.load(Ordering::SeqCst);
        if n == 0 && pid != 0 {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
        Reply::status(200)
    }))
    .await;
    // Two pages 3 s apart: the first page's deliveries go out while the poll is still running,
    // before the end-of-poll flush.
    let config = Config::new(Clinicea::sandbox(&sb.base_url()).page_delay("3s"))
        .listen()
        .webhook("hook", &rx.url, |w| w.timeout("5s"))
        .rule(Rule::new("all-leads", &["hook"]).resource("leads"));
    let t = TestDir::new(&config.to_yaml());
    let mut d = Notifier::run(&t).start().await;
    pid.store(d.pid, Ordering::SeqCst);
    for i in 0..101 {
        sb.sandbox.insert(
            "leads",
            serde_json::json!({"FirstName": format!("Ada{i}"), "LeadStatus": "HOT"}),
        );
    }
    let status = d.wait_exit(Duration::from_secs(20)).await;
    assert!(
        status.is_some_and(|s| !s.success()),
        "the receiver killed it: {status:?}\n{}",
        d.stderr_text()
    );
    let first = rx.received()[0].clone();
    assert_eq!(first.json()["type"], "leads.added");
    let id = first.data_id();
    let before_restart = rx.count();

    sb.sandbox
        .modify("leads", &id, serde_json::json!({"LeadStatus": "COLD"}))
        .expect("modified");
    let out = cli(&t, &["once"]).await;
    assert!(out.status.success(), "{}", output_text(&out));

    let got: Vec<Received> = rx.received()[before_restart..]
        .iter()
        .filter(|a| a.data_id() == id)
        .cloned()
        .collect();
    let later: Vec<serde_json::Value> = got.iter().map(|a| a.json()).collect();
    assert!(
        !later.is_empty(),
        "the edit was delivered: {}",
        output_text(&out)
    );
    for (a, body) in got.iter().zip(&later) {
        let same_as_first = a.header("webhook-id") == first.header("webhook-id");
        assert!(
            same_as_first || body["type"] == "leads.modified",
            "after the crash the lead came again as {} under a new webhook-id: the store forgot a change the receiver had already got",
            body["type"]
        );
    }
    let modified = later
        .iter()
        .find(|b| b["type"] == "leads.modified")
        .expect("the edit arrives as leads.modified");
    assert_eq!(modified["data"]["previous"], first.json()["data"]["record"]);
    assert!(
        modified["data"]["changed_fields"]
            .as_array()
            .is_some_and(|f| f.contains(&serde_json::json!("LeadStatus"))),
        "{modified}"
    );
    // And the journal holds the change that was delivered.
    let store = open_store(&t);
    let journal: HashSet<String> = store
        .changes()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, c)| c.change_id.clone())
        .collect();
    assert!(journal.contains(&first.header("webhook-id")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_ten_times_during_a_sync_without_pauses_journals_every_lead_exactly_once() {
    // No delay between pages, so most kills land inside a chunk's write; a restart takes back
    // what a cut chunk had written of changes whose snapshot had not landed (and logs it).
    let sb = sandbox_with_leads(20_000).await;
    let all = sandbox_lead_ids(&sb);
    let config = Config::new(Clinicea::sandbox(&sb.base_url())).listen();
    let t = TestDir::new(&config.to_yaml());
    let mut undone_at_start = 0;
    for round in 0..10 {
        let before = lead_requests(&sb);
        let d = Notifier::run(&t).tag(&format!("run{round}")).start().await;
        let _ = eventually(Duration::from_secs(30), || lead_requests(&sb) >= before + 3).await;
        let ms = rand::thread_rng().gen_range(50..400);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        if d.stderr_text().contains("a crash cut a page's write short") {
            undone_at_start += 1;
        }
        d.kill9().await;
    }
    once_then_every_lead_journaled_once(&t, &all).await;
    eprintln!("fast sync crash test: {undone_at_start} of 10 restarts took back a cut chunk");
}
