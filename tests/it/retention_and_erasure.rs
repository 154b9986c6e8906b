//! How long patient data is kept, and its erasure: dead letters past their retention deleted by
//! `once` and `run`, the change journal pruned, deleted records reduced to a tombstone, `dead
//! purge` refusing an age it cannot mean, and `purge` erasing one record everywhere.

use crate::support::*;
use clinicea_notifier::model::{ChangeKind, Verdict, DEFAULT_CLINIC};
use clinicea_notifier::outbox::entry::{AttemptLog, DeadLetter, OutboxEntry};
use clinicea_notifier::outbox::store::{PageWrite, Store};
use clinicea_notifier::route::plan::Payload;
use serde_json::json;
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;

// --- dead letter retention ----------------------------------------------------------------------

/// Stores a dead letter for `record_id` that died at `died_ms`, with one attempt log.
async fn put_dead(store: &Store, seq: u64, record_id: &str, died_ms: i64) {
    let entry = OutboxEntry {
        seq,
        destination: "hook".into(),
        clinic: "default".into(),
        webhook_id: format!("msg_{seq}"),
        event_type: "leads.added".into(),
        resource: "leads".into(),
        record_id: record_id.into(),
        rule: "all".into(),
        change_seq: seq,
        payload: Payload::Webhook {
            body: json!({"data": {"ID": record_id, "FirstName": "Ayesha"}}).to_string(),
        },
        attempts: 1,
        next_attempt_ms: died_ms,
        created_ms: died_ms,
        held: None,
    };
    let dead = DeadLetter {
        entry,
        reason: "HTTP 400".into(),
        died_ms,
    };
    store
        .commit_page(
            DEFAULT_CLINIC,
            "leads",
            &PageWrite {
                dead: vec![dead],
                ..PageWrite::default()
            },
        )
        .await
        .unwrap();
    let log = AttemptLog {
        at_ms: died_ms,
        attempt: 1,
        status: Some(400),
        duration_ms: 3,
        response: "bad request".into(),
        verdict: Verdict::Fail {
            reason: "HTTP 400".into(),
        },
    };
    store.log_attempt(seq, &log).await.unwrap();
    store.flush().await.unwrap();
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test]
async fn once_deletes_dead_letters_past_their_retention_and_keeps_the_rest() {
    let sb = empty_sandbox().await;
    let t = TestDir::new(&leads_only(&sb.base_url()).to_yaml());
    {
        let store = open_store(&t);
        put_dead(&store, 1, "old", now_ms() - 31 * DAY_MS).await;
        put_dead(&store, 2, "recent", now_ms() - DAY_MS).await;
    }
    // The default retention: 30 days.
    let out = cli(&t, &["once"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 dead letters deleted"),
        "{}",
        output_text(&out)
    );
    {
        let store = open_store(&t);
        let left: Vec<u64> = store
            .dead_entries()
            .await
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(left, vec![2]);
        assert!(
            store.attempts(1).await.unwrap().is_empty(),
            "its attempts went too"
        );
        assert_eq!(store.attempts(2).await.unwrap().len(), 1);
    }
    // A shorter retention from the config.
    t.rewrite(
        &leads_only(&sb.base_url())
            .store(StoreSection::default().dead_letter_retention("12h"))
            .to_yaml(),
    );
    let out = cli(&t, &["once"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    let store = open_store(&t);
    assert_eq!(store.dead_len().await.unwrap(), 0);
    assert!(store.attempts(2).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_deletes_dead_letters_past_their_retention() {
    let sb = empty_sandbox().await;
    let t = TestDir::new(&leads_only(&sb.base_url()).listen().to_yaml());
    {
        let store = open_store(&t);
        put_dead(&store, 1, "old", now_ms() - 31 * DAY_MS).await;
        put_dead(&store, 2, "recent", now_ms() - DAY_MS).await;
    }
    let mut d = Notifier::run(&t).start().await;
    assert!(
        d.wait_log(
            "deleted dead letters past their retention",
            1,
            Duration::from_secs(20)
        )
        .await,
        "{}",
        d.stderr_text()
    );
    assert!(d
        .terminate(Duration::from_secs(20))
        .await
        .is_some_and(|s| s.success()));
    let store = open_store(&t);
    assert_eq!(store.dead_len().await.unwrap(), 1);
    assert!(store.dead_get(2).await.unwrap().is_some());
}

#[tokio::test]
async fn dead_purge_with_a_huge_age_is_an_error_and_purges_nothing() {
    let t = TestDir::new(&leads_only("http://127.0.0.1:1").to_yaml());
    {
        let store = open_store(&t);
        put_dead(&store, 1, "a", now_ms() - 3_600_000).await;
        put_dead(&store, 2, "b", now_ms() - 40 * DAY_MS).await;
    }
    for age in ["150000000000d", "99999999999999999999d"] {
        let out = cli(&t, &["dead", "purge", "--older-than", age]).await;
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(
            text.contains("too long") && !text.contains("panicked"),
            "{text}"
        );
        assert_eq!(
            open_store(&t).dead_len().await.unwrap(),
            2,
            "nothing purged by {age}"
        );
    }
    // The longest age there is purges what is older, which is nothing here.
    let out = cli(&t, &["dead", "purge", "--older-than", "3650d"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Purged 0 dead letters"));
    let out = cli(&t, &["dead", "purge", "--older-than", "30d"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("Purged 1 dead letters"));
    assert_eq!(open_store(&t).dead_len().await.unwrap(), 1);
}

// --- the change journal -------------------------------------------------------------------------

#[tokio::test]
async fn once_prunes_the_journal_to_store_journal_retention() {
    let sb = default_sandbox().await;
    let config = leads_only(&sb.base_url()).store(StoreSection::default().journal_retention("1s"));
    let t = TestDir::new(&config.to_yaml());
    let out = cli(&t, &["once"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(open_store(&t).change_count().await.unwrap(), 137);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = cli(&t, &["once"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    let store = open_store(&t);
    assert_eq!(
        store.change_count().await.unwrap(),
        0,
        "the journal is kept for 1s only"
    );
    assert_eq!(
        store.snapshot_count(DEFAULT_CLINIC, "leads").await.unwrap(),
        137,
        "snapshots stay"
    );
}

// --- tombstones ---------------------------------------------------------------------------------

fn lead(status: &str) -> serde_json::Value {
    json!({"ID": "L1", "FirstName": "Ayesha", "LastName": "Khan", "Notes": "Asked about whitening", "DataStatusStr": status})
}

#[tokio::test]
async fn a_deleted_record_keeps_only_its_id_and_flag_and_comes_back_as_added() {
    let api = StaticApi::start(json!([lead("Added")]).to_string()).await;
    let t = TestDir::new(&leads_only(&api.base_url).to_yaml());
    let engine = t.engine().await;
    let poll = || async { poll_report(&engine).await.unwrap().changes };
    assert_eq!(poll().await, 1);
    api.set(json!([lead("Deleted")]).to_string());
    assert_eq!(poll().await, 1);
    assert_eq!(
        engine
            .store
            .snapshot(DEFAULT_CLINIC, "leads", "L1")
            .await
            .unwrap(),
        Some(json!({"ID": "L1", "IsDeleted": true})),
        "a tombstone holds nothing of the record"
    );
    assert_eq!(poll().await, 0, "served deleted again: nothing");
    // Back, with exactly the fields it had before: added again.
    api.set(json!([lead("Modified")]).to_string());
    assert_eq!(poll().await, 1);
    let kinds: Vec<ChangeKind> = engine
        .store
        .changes()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, c)| c.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![ChangeKind::Added, ChangeKind::Deleted, ChangeKind::Added]
    );
    assert_eq!(
        engine
            .store
            .snapshot(DEFAULT_CLINIC, "leads", "L1")
            .await
            .unwrap(),
        Some(lead("Modified"))
    );
}

#[tokio::test]
async fn deleted_records_an_older_version_kept_whole_are_reduced_at_start() {
    let api = StaticApi::start("[]").await;
    let t = TestDir::new(&leads_only(&api.base_url).to_yaml());
    {
        let store = open_store(&t);
        let page = PageWrite {
            snapshots: vec![
                ("L1".into(), serde_json::to_vec(&lead("Deleted")).unwrap()),
                ("L2".into(), serde_json::to_vec(&lead("Added")).unwrap()),
            ],
            ..PageWrite::default()
        };
        store
            .commit_page(DEFAULT_CLINIC, "leads", &page)
            .await
            .unwrap();
        store.flush().await.unwrap();
    }
    let engine = t.engine().await;
    assert_eq!(
        engine
            .store
            .snapshot(DEFAULT_CLINIC, "leads", "L1")
            .await
            .unwrap(),
        Some(json!({"ID": "L1", "IsDeleted": true}))
    );
    assert_eq!(
        engine
            .store
            .snapshot(DEFAULT_CLINIC, "leads", "L2")
            .await
            .unwrap(),
        Some(lead("Added")),
        "a live record is kept as it is"
    );
    // The deleted record served again is still nothing.
    api.set(json!([lead("Deleted")]).to_string());
    assert_eq!(poll_report(&engine).await.unwrap().changes, 0);
}

// --- erasure ------------------------------------------------------------------------------------

#[tokio::test]
async fn purge_erases_one_records_snapshot_journal_deliveries_and_dead_letters() {
    let sb = empty_sandbox().await;
    let down = Receiver::with(Responder::always(Reply::status(503))).await;
    let bad = Receiver::with(Responder::always(Reply::status(400))).await;
    let config = leads_only(&sb.base_url())
        .listen()
        .retry(Retry::schedule(&["1h"]))
        .webhook("down", &down.url, |w| w)
        .webhook("bad", &bad.url, |w| w)
        .rule(Rule::new("all", &["down", "bad"]).resource("leads"));
    let t = TestDir::new(&config.to_yaml());
    let one = sb.sandbox.insert("leads", test_lead());
    let other = sb.sandbox.insert("leads", test_lead());
    let (one, other) = (
        one["ID"].as_str().unwrap().to_string(),
        other["ID"].as_str().unwrap().to_string(),
    );
    {
        let engine = t.engine().await;
        poll_report(&engine).await.unwrap();
        // `down` retries in an hour (queued, one attempt logged); `bad` dies.
        engine.deliverer.deliver_all_due().await.unwrap();
        assert_eq!(engine.store.outbox_len().await.unwrap(), 2);
        assert_eq!(engine.store.dead_len().await.unwrap(), 2);
        engine.store.flush().await.unwrap();
    }
    let out = cli(&t, &["purge", "--resource", "leads", "--id", &one]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", output_text(&out));
    for line in [
        "1 snapshot",
        "1 change journal entries",
        "1 queued deliveries",
        "1 dead letters",
        "2 attempt logs",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
    assert!(text.contains(&one), "{text}");

    let store = open_store(&t);
    assert_eq!(
        store.snapshot(DEFAULT_CLINIC, "leads", &one).await.unwrap(),
        None
    );
    assert!(store
        .snapshot(DEFAULT_CLINIC, "leads", &other)
        .await
        .unwrap()
        .is_some());
    assert_eq!(journal_ids(&store).await, vec![other.clone()]);
    let outbox = store_outbox(&store).await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].record_id, other);
    let dead = store_dead_letters(&store).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].entry.record_id, other);
    // The other record's attempt logs are untouched.
    assert_eq!(store.attempts(outbox[0].seq).await.unwrap().len(), 1);
    assert_eq!(store.attempts(dead[0].entry.seq).await.unwrap().len(), 1);
    drop(store);

    // Again: nothing is left, and it says so.
    let out = cli(&t, &["purge", "--resource", "leads", "--id", &one]).await;
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Nothing is stored about leads record"),
        "{}",
        output_text(&out)
    );
    let out = cli(&t, &["purge", "--resource", "patients", "--id", &other]).await;
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("patients is not a resource in the config"),
        "{}",
        output_text(&out)
    );
    let out = cli(&t, &["purge", "--resource", "leads"]).await;
    assert_eq!(out.status.code(), Some(2), "--id is required");
}
