//! Paging that cannot lose a change: windows that shift while they are paged (records edited,
//! deleted and added between page requests, in every order the sandbox serves), and an API whose
//! clock runs ahead of or behind ours.
//!
//! Knob: `PAGING_SEED` (default 1) picks the seeds of the property test, so a failure can be
//! replayed.

use crate::support::*;
use clinicea_notifier::daemon::engine::Engine;
use clinicea_notifier::ingest::poll::PollReport;
use clinicea_notifier::kit::sandbox::{Order, SandboxHandle, SandboxOptions};
use clinicea_notifier::model::{record_version, DEFAULT_CLINIC};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

const ORDERS: [Order; 3] = [Order::Modified, Order::Id, Order::Unordered];

/// A record version as the journal names it ([`record_version`] under the engine's key).
fn version(engine: &Engine, v: &Value) -> String {
    record_version(engine.store.id_key(), v)
}

/// The leads checkpoint of `engine`.
async fn checkpoint(engine: &Engine) -> clinicea_notifier::ingest::state::Checkpoint {
    engine
        .store
        .checkpoint(DEFAULT_CLINIC, "leads")
        .await
        .unwrap()
        .expect("a checkpoint once polled")
}

/// The leads poll of `engine`, which must succeed.
async fn poll_leads(engine: &Engine) -> PollReport {
    let mut results = engine.poll_all().await;
    let polled = results.remove(0);
    assert_eq!(polled.resource, "leads");
    match polled.result {
        Ok(rep) => rep,
        Err(e) => panic!("the poll fails: {e}"),
    }
}

/// The sandbox's leads (final versions) whose version is nowhere in the journal, and the
/// journal's (id, version) pairs recorded more than once.
async fn undelivered(sb: &SandboxHandle, engine: &Engine) -> (Vec<String>, Vec<String>) {
    let mut journal: HashMap<(String, String), usize> = HashMap::new();
    for (_, c) in engine.store.changes().await.unwrap() {
        *journal
            .entry((c.id.clone(), c.version.clone()))
            .or_default() += 1;
    }
    let missing = sb
        .sandbox
        .records("leads")
        .iter()
        .map(|r| (r["ID"].as_str().unwrap().to_string(), version(engine, r)))
        .filter(|key| !journal.contains_key(key))
        .map(|(id, _)| id)
        .collect();
    let twice = journal
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((id, _), n)| format!("{id} x{n}"))
        .collect();
    (missing, twice)
}

/// One case of the property: a backfill of `leads` leads (several pages) with `edits` random
/// edits, deletions and inserts after every page request, for two polls; then the edits stop and
/// the polls go on until every final version is in the journal. Returns what went wrong.
async fn backfill_case(seed: u64, order: Order, leads: usize, edits: u32) -> Result<u32, String> {
    let sb = sandbox(SandboxOptions {
        seed,
        leads,
        patients: 0,
        appointments: 0,
        order,
        page_edits: edits,
        ..SandboxOptions::default()
    })
    .await;
    let t = TestDir::new(&leads_only(&sb.base_url()).to_yaml());
    let engine = t.engine().await;
    for _ in 0..2 {
        poll_leads(&engine).await;
    }
    sb.sandbox.set_page_edits(0);
    // Without edits a pass over a stable order comes out clean at once; the unordered sandbox
    // reshuffles for every request, so no multi-page pass is ever clean there and it takes as
    // many polls as its random pages need to cover everything.
    let max_polls = if order == Order::Unordered { 40 } else { 1 };
    let mut polls = 0;
    loop {
        polls += 1;
        let rep = poll_leads(&engine).await;
        if order != Order::Unordered && !rep.settled {
            return Err(format!(
                "a poll without edits did not settle: {rep:?} (seed {seed}, {order:?})"
            ));
        }
        let (missing, twice) = undelivered(&sb, &engine).await;
        if !twice.is_empty() {
            return Err(format!(
                "versions journaled twice (seed {seed}, {order:?}): {twice:?}"
            ));
        }
        if missing.is_empty() {
            return Ok(polls);
        }
        if polls >= max_polls {
            return Err(format!(
                "{} of {} final versions never delivered after {polls} settling polls (seed {seed}, {order:?}, {edits} edits a page): {:?}",
                missing.len(),
                sb.sandbox.records("leads").len(),
                &missing[..missing.len().min(5)]
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_final_version_is_delivered_whatever_the_order_and_the_edits_between_pages() {
    let base = std::env::var("PAGING_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1u64);
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for i in 0..4 {
        let seed = base.wrapping_mul(1000).wrapping_add(i);
        let mut rng = StdRng::seed_from_u64(seed);
        for order in ORDERS {
            // 5 to 10 pages of 100.
            let leads = rng.gen_range(450..1000);
            let edits = rng.gen_range(1..=3);
            match backfill_case(seed, order, leads, edits).await {
                Ok(polls) => summary.push(format!("{seed}/{order:?}/{leads}/{edits}: {polls}")),
                Err(e) => failures.push(e),
            }
        }
    }
    println!("paging property (seed/order/leads/edits: settling polls): {summary:?}");
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn a_shifted_window_is_read_again_and_a_steady_one_costs_no_extra_request() {
    let sb = sandbox(SandboxOptions {
        leads: 350,
        patients: 0,
        appointments: 0,
        ..SandboxOptions::default()
    })
    .await;
    let t = TestDir::new(&leads_only(&sb.base_url()).to_yaml());
    let engine = t.engine().await;
    // A steady window of four pages: four requests, one pass.
    let rep = poll_leads(&engine).await;
    assert_eq!((rep.pages, rep.passes, rep.settled), (4, 1, true));
    // Four more before it: the silent baseline reads the same four pages once at first start.
    assert_eq!(lead_requests(&sb), 8);
    // A quiet poll: one short page, one request.
    let rep = poll_leads(&engine).await;
    assert_eq!((rep.pages, rep.passes, rep.changes), (1, 1, 0));
    assert_eq!(lead_requests(&sb), 9);
    let cp = checkpoint(&engine).await;

    // Records edited after each request move to the end; when one of them had been read, every
    // record after it moves one place left, and the pass that saw it twice is read again.
    let t2 = TestDir::new(&leads_only(&sb.base_url()).to_yaml());
    let fresh = t2.engine().await;
    sb.sandbox.set_page_edits(3);
    let rep = poll_leads(&fresh).await;
    sb.sandbox.set_page_edits(0);
    assert!(rep.passes >= 2, "the shift is noticed: {rep:?}");
    assert!(rep.settled || rep.passes == 3, "{rep:?}");
    let rep = poll_leads(&fresh).await;
    assert!(rep.settled, "{rep:?}");
    let (missing, twice) = undelivered(&sb, &fresh).await;
    assert!(missing.is_empty(), "undelivered: {missing:?}");
    assert!(twice.is_empty(), "journaled twice: {twice:?}");
    assert!(
        cp.last_success_start.is_some(),
        "a settled poll moves the checkpoint"
    );
}

#[tokio::test]
async fn an_unsettled_poll_keeps_the_checkpoint() {
    let sb = sandbox(SandboxOptions {
        leads: 250,
        patients: 0,
        appointments: 0,
        order: Order::Unordered,
        ..SandboxOptions::default()
    })
    .await;
    let t = TestDir::new(&leads_only(&sb.base_url()).to_yaml());
    let engine = t.engine().await;
    let rep = poll_leads(&engine).await;
    assert!(
        !rep.settled,
        "every reshuffled pass serves ids twice: {rep:?}"
    );
    assert_eq!(rep.passes, clinicea_notifier::ingest::poll::MAX_PASSES);
    let cp = checkpoint(&engine).await;
    assert_eq!(cp.last_success_start, None, "the checkpoint did not move");
    // Once the order is stable again, the next poll settles and moves it.
    sb.sandbox.set_order(Order::Id);
    let rep = poll_leads(&engine).await;
    assert!(rep.settled, "{rep:?}");
    let cp = checkpoint(&engine).await;
    assert!(cp.last_success_start.is_some());
    let (missing, twice) = undelivered(&sb, &engine).await;
    assert!(
        missing.is_empty() && twice.is_empty(),
        "{missing:?} {twice:?}"
    );
}

/// Polls with edits in between against a sandbox whose clock is `offset_secs` from ours, with
/// `start_from: now` and the default two-minute overlap: every edit is delivered.
async fn edits_between_polls_with_clock_offset(offset_secs: i64) {
    let sb = sandbox(SandboxOptions {
        leads: 20,
        patients: 0,
        appointments: 0,
        clock_offset: chrono::TimeDelta::seconds(offset_secs),
        ..SandboxOptions::default()
    })
    .await;
    let config = Config::new(
        Clinicea::new(&sb.base_url(), "sandbox-api-key")
            .start_from("now")
            .timeout("5s"),
    );
    let t = TestDir::new(&config.to_yaml());
    let engine = t.engine().await;
    poll_leads(&engine).await;
    let ids: Vec<String> = sandbox_lead_ids(&sb).into_iter().collect();
    let mut expected = BTreeSet::new();
    for round in 0..4 {
        for id in ids.iter().skip(round * 3).take(3) {
            let r = sb
                .sandbox
                .modify("leads", id, json!({"Notes": format!("round {round}")}))
                .unwrap();
            expected.insert((id.clone(), version(&engine, &r)));
        }
        let added = sb.sandbox.insert("leads", test_lead());
        expected.insert((
            added["ID"].as_str().unwrap().to_string(),
            version(&engine, &added),
        ));
        poll_leads(&engine).await;
    }
    let journal: BTreeSet<(String, String)> = engine
        .store
        .changes()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, c)| (c.id.clone(), c.version.clone()))
        .collect();
    let lost: Vec<&(String, String)> = expected.difference(&journal).collect();
    assert!(
        lost.is_empty(),
        "clock offset {offset_secs} s: {} of {} edits lost",
        lost.len(),
        expected.len()
    );
    let status = engine
        .store
        .poll_status(DEFAULT_CLINIC, "leads")
        .await
        .unwrap();
    let skew = status.clock_skew_ms.expect("the skew is measured") as f64 / 1000.0;
    assert!(
        (skew - offset_secs as f64).abs() < 3.0,
        "measured skew {skew} s for an offset of {offset_secs} s"
    );
    let cp = checkpoint(&engine).await;
    assert!(
        !cp.origin_on_our_clock,
        "the origin moved onto the API's clock"
    );
    assert!(cp.skew_ms.is_some());
}

#[tokio::test]
async fn an_api_clock_ten_minutes_behind_loses_no_edit() {
    edits_between_polls_with_clock_offset(-600).await;
}

#[tokio::test]
async fn an_api_clock_ten_minutes_ahead_loses_no_edit() {
    edits_between_polls_with_clock_offset(600).await;
}

#[tokio::test]
async fn an_absurd_api_date_falls_back_to_our_clock_with_twice_the_overlap() {
    // Two days ahead: beyond the plausible bound, so not believed.
    let sb = sandbox(SandboxOptions {
        leads: 5,
        patients: 0,
        appointments: 0,
        clock_offset: chrono::TimeDelta::days(2),
        ..SandboxOptions::default()
    })
    .await;
    let t = TestDir::new(&leads_only(&sb.base_url()).to_yaml());
    let engine = t.engine().await;
    let before = chrono::Utc::now();
    poll_leads(&engine).await;
    let status = engine
        .store
        .poll_status(DEFAULT_CLINIC, "leads")
        .await
        .unwrap();
    assert!(status.api_date_unusable);
    assert_eq!(status.clock_skew_ms, None);
    let cp = checkpoint(&engine).await;
    assert_eq!(cp.skew_ms, None);
    let start = cp.last_success_start.unwrap();
    assert!(start >= before && start <= chrono::Utc::now(), "our clock");
    let overlap = t.settings().base.clinics[0].clinicea.overlap;
    let since = cp.since(overlap);
    assert_eq!(
        since,
        start - chrono::TimeDelta::from_std(overlap * 2).unwrap(),
        "twice the overlap, never in the future"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_skew_is_exported_and_warned_about_once() {
    let sb = sandbox(SandboxOptions {
        leads: 5,
        patients: 0,
        appointments: 0,
        clock_offset: chrono::TimeDelta::minutes(-10),
        ..SandboxOptions::default()
    })
    .await;
    let t = TestDir::new(&leads_only(&sb.base_url()).listen().to_yaml());
    let mut d = Notifier::run(&t)
        .ready_within(Duration::from_secs(60))
        .start()
        .await;
    let leads = [("clinic", "default"), ("resource", "leads")];
    let s = scrape_until(&d.url(""), Duration::from_secs(30), |s| {
        s.get("clinicea_notifier_polls_total", &leads)
            .unwrap_or(0.0)
            >= 4.0
    })
    .await;
    let skew = s
        .get("clinicea_notifier_api_clock_skew_seconds", &leads)
        .expect("the skew gauge is exported");
    assert!((skew + 600.0).abs() < 3.0, "skew {skew}");
    let status = d.terminate(Duration::from_secs(30)).await;
    let log = d.stderr_text();
    assert!(status.is_some_and(|s| s.success()), "{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("beyond half the overlap"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning for one skew:\n{log}");
    assert!(warnings[0].contains("resource=leads") && warnings[0].contains("behind"));
}
