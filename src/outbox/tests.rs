//! The store's behaviour, the same tests on both backends: sled in a temporary folder, and
//! PostgreSQL in a database of its own per test, made on the server `CLINICEA_TEST_POSTGRES_URL`
//! names (`.ci/run` sets it and checks the server answers; without it the PostgreSQL half says it
//! was skipped). Then what only PostgreSQL has: claims, fences, leases and the copy from sled.

use super::entry::{AttemptLog, DeadLetter, DigestMember, JournalEntry, OutboxEntry};
use super::lease::{hold_of, tick_of};
use super::scratch::ScratchDatabase;
use super::store::{
    Due, JournalWrite, PageWrite, PgOptions, Store, StoreError, DEFAULT_CACHE_BYTES,
};
use crate::ingest::state::{Baseline, Checkpoint, PollStatus};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// A database made for one test on the server `CLINICEA_TEST_POSTGRES_URL` names.
type PgDb = ScratchDatabase;

/// How a replica named `holder` (or an unfenced one) opens `db`.
fn options(db: &PgDb, holder: Option<&str>, lease: Duration) -> PgOptions {
    PgOptions {
        url: db.url.clone(),
        holder: holder.map(str::to_string),
        lease,
    }
}

/// An unfenced store on `db`.
async fn pg_store(db: &PgDb) -> Store {
    Store::open_postgres(&options(db, None, Duration::from_secs(30)))
        .await
        .unwrap()
}

/// Where a test's store lives while it runs (dropped with the test: the folder or database goes).
#[allow(dead_code)]
enum Home {
    Sled(tempfile::TempDir),
    Postgres(PgDb),
}

/// A test's store on one backend, or `None` when that backend is not available here.
async fn store_on(postgres: bool) -> Option<(Store, Home)> {
    if postgres {
        let db = PgDb::from_env().await?;
        Some((pg_store(&db).await, Home::Postgres(db)))
    } else {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data"), DEFAULT_CACHE_BYTES).unwrap();
        Some((store, Home::Sled(dir)))
    }
}

/// A pair of tests, one per backend, running the same body.
macro_rules! on_both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sled() {
                let (store, _home) = super::store_on(false).await.unwrap();
                super::$body(&store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                let Some((store, _home)) = super::store_on(true).await else {
                    return;
                };
                super::$body(&store).await;
            }
        }
    };
}

/// A queued webhook delivery of record `a`.
pub(crate) fn entry(destination: &str, seq: u64) -> OutboxEntry {
    OutboxEntry {
        seq,
        destination: destination.into(),
        clinic: "default".into(),
        webhook_id: format!("msg_{seq}"),
        event_type: "leads.added".into(),
        resource: "leads".into(),
        record_id: "a".into(),
        rule: "r".into(),
        change_seq: 1,
        payload: crate::route::plan::Payload::Webhook { body: "{}".into() },
        attempts: 0,
        next_attempt_ms: 0,
        created_ms: 0,
        held: None,
    }
}

/// A change of record `record` waiting in `destination`'s digest for `a@example.org`.
pub(crate) fn member(destination: &str, seq: u64, record: &str) -> DigestMember {
    DigestMember {
        seq,
        destination: destination.into(),
        clinic: "default".into(),
        recipient: "a@example.org".into(),
        change_id: format!("msg_change_{seq}"),
        event_type: "leads.added".into(),
        resource: "leads".into(),
        record_id: record.into(),
        rule: "r".into(),
        created_ms: 1_000 + seq as i64,
        item: serde_json::json!({"id": record, "text": format!("lead {record}")}),
    }
}

/// A digest's members are stored with the page, leave only with the one outbox entry they become
/// (in one transaction), and a second flush of the same members writes nothing.
async fn digest_members_become_one_entry_once(store: &Store) {
    let page = PageWrite {
        digest: vec![
            member("mail", 3, "a"),
            member("mail", 1, "b"),
            member("mail", 2, "c"),
        ],
        ..PageWrite::default()
    };
    store.commit_page("default", "leads", &page).await.unwrap();
    let seqs: Vec<u64> = store
        .digest_members()
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3], "members come back in order");
    assert_eq!(
        store.outbox_len().await.unwrap(),
        0,
        "no entry before the flush"
    );
    let mut digest = entry("mail", 10);
    digest.webhook_id = "msg_digest".into();
    assert!(store.flush_digest("mail", &[1, 2], &digest).await.unwrap());
    assert_eq!(store.outbox_len().await.unwrap(), 1);
    let left: Vec<u64> = store
        .digest_members()
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(left, [3]);
    // The same members again (a replica that rendered them too): refused, nothing written.
    let mut again = entry("mail", 11);
    again.webhook_id = "msg_digest".into();
    assert!(!store.flush_digest("mail", &[2, 3], &again).await.unwrap());
    assert_eq!(store.outbox_len().await.unwrap(), 1, "no second digest");
    assert_eq!(
        store.digest_members().await.unwrap().len(),
        1,
        "3 still waits"
    );
}
on_both!(digest_store, digest_members_become_one_entry_once);

/// A whole change, as the journal stored it before it kept [`JournalEntry`]s.
fn whole_change(id: &str, secs: i64) -> crate::model::Change {
    crate::model::Change {
        clinic: "default".into(),
        resource: "leads".into(),
        id: id.into(),
        kind: crate::model::ChangeKind::Modified,
        record: serde_json::json!({"ID": id, "FirstName": "Zebulon", "Phone": "+44 7700 900123"}),
        previous: Some(serde_json::json!({"ID": id, "FirstName": "Zeb"})),
        changed_fields: vec!["FirstName".into(), "Phone".into()],
        server_status: Some("Modified".into()),
        detected_at: DateTime::from_timestamp(secs, 0).unwrap(),
    }
}

fn change(id: &str, secs: i64) -> JournalWrite {
    let c = whole_change(id, secs);
    let entry = JournalEntry::of(&c, &crate::model::IdKey::from_bytes(&[3; 32]));
    JournalWrite {
        seq: secs as u64,
        record_id: id.into(),
        detected_at: c.detected_at,
        value: serde_json::to_vec(&entry).unwrap(),
    }
}

/// Writes journal entries the way an older version did: on sled one value per change under its
/// seq (this version writes a page's entries as one value, and reads both), on PostgreSQL a row
/// per change as now.
async fn write_journal_as_before(store: &Store, changes: Vec<JournalWrite>) {
    match store {
        Store::Sled(s) => {
            for c in &changes {
                s.put_journal_value(c.seq, &c.value).unwrap();
            }
        }
        Store::Postgres(_) => {
            let page = PageWrite {
                changes,
                ..PageWrite::default()
            };
            store.commit_page("default", "leads", &page).await.unwrap();
        }
    }
}

/// Runs the one-time journal rewrite again, as an open does.
async fn slim(store: &Store) -> usize {
    match store {
        Store::Sled(s) => s.slim_journal_once().unwrap(),
        Store::Postgres(p) => p.slim_journal_once().await.unwrap(),
    }
}

/// Forgets that the journal rewrite was done, as in a store an older version left.
async fn forget_slimmed(store: &Store) {
    match store {
        Store::Sled(s) => s.forget_upgrade(super::store::SLIM_JOURNAL).unwrap(),
        Store::Postgres(p) => p.forget_upgrade(super::store::SLIM_JOURNAL).await.unwrap(),
    }
}

async fn journal_entries_stored_whole_are_rewritten_once_without_their_values(store: &Store) {
    let old: Vec<JournalWrite> = ["a", "b"]
        .iter()
        .zip([10, 20])
        .map(|(id, secs)| {
            let c = whole_change(id, secs);
            JournalWrite {
                seq: secs as u64,
                record_id: id.to_string(),
                detected_at: c.detected_at,
                value: serde_json::to_vec(&c).unwrap(),
            }
        })
        .collect();
    write_journal_as_before(store, old).await;
    let page = PageWrite {
        changes: vec![change("c", 30)],
        outbox: vec![entry("hook", 40)],
        ..PageWrite::default()
    };
    store.commit_page("default", "leads", &page).await.unwrap();
    forget_slimmed(store).await;
    assert_eq!(
        slim(store).await,
        2,
        "the two whole changes, not the slim one"
    );
    let journal = store.changes().await.unwrap();
    assert_eq!(journal.len(), 3);
    for (_, e) in &journal {
        let text = serde_json::to_string(e).unwrap();
        for value in ["Zebulon", "Zeb\"", "7700", "Modified\""] {
            assert!(!text.contains(value), "{value} in {text}");
        }
        assert_eq!(e.changed_fields, ["FirstName", "Phone"]);
        assert_eq!(e.kind, crate::model::ChangeKind::Modified);
    }
    let a = whole_change("a", 10);
    assert_eq!(journal[0].1.change_id, a.change_id(store.id_key()));
    assert_eq!(
        journal[0].1.version,
        crate::model::record_version(store.id_key(), &a.record)
    );
    assert_eq!(slim(store).await, 0, "once");
    assert_eq!(
        store.outbox_len().await.unwrap(),
        1,
        "the outbox is untouched"
    );
}
on_both!(
    slim_journal,
    journal_entries_stored_whole_are_rewritten_once_without_their_values
);

fn snap(id: &str, v: u8) -> (String, Vec<u8>) {
    (
        id.to_string(),
        format!("{{\"ID\":\"{id}\",\"V\":{v}}}").into_bytes(),
    )
}

async fn a_page_is_committed_whole_and_entries_come_back_in_order(store: &Store) {
    let page = PageWrite {
        // `a` twice in one page: the later version wins.
        snapshots: vec![snap("a", 1), snap("b", 1), snap("a", 2)],
        changes: vec![change("a", 100)],
        outbox: vec![entry("hook", 300), entry("hook", 2), entry("hook2", 1)],
        ..PageWrite::default()
    };
    store.commit_page("default", "leads", &page).await.unwrap();
    assert_eq!(
        store.snapshot("default", "leads", "a").await.unwrap(),
        Some(serde_json::json!({"ID":"a","V":2}))
    );
    let raw = store
        .snapshots_raw("default", "leads", &["a", "b", "zz"])
        .await
        .unwrap();
    assert_eq!(raw.len(), 2, "only what is stored");
    assert_eq!(raw["b"], snap("b", 1).1, "the bytes as committed");
    assert_eq!(store.snapshot_count("default", "leads").await.unwrap(), 2);
    assert_eq!(store.snapshot_count("other", "leads").await.unwrap(), 0);
    let seqs: Vec<u64> = store
        .outbox_entries("hook")
        .await
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(seqs, vec![2, 300]);
    let due: Vec<Due> = store
        .outbox_due("hook")
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        due,
        vec![Due { seq: 2, at_ms: 0 }, Due { seq: 300, at_ms: 0 }]
    );
    let all = store.all_outbox().await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[2].destination, "hook2");
    assert_eq!(store.outbox_len().await.unwrap(), 3);
    assert_eq!(
        store
            .outbox_destinations()
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        ["hook", "hook2"]
    );
    let counts = store.outbox_counts().await.unwrap();
    assert_eq!(counts["hook"], (2, 0));
    // To the dead letters and back, each in one transaction.
    let dead = DeadLetter {
        entry: entry("hook", 2),
        reason: "dead".into(),
        died_ms: 5,
    };
    store.outbox_to_dead(&dead).await.unwrap();
    assert_eq!(store.outbox_entries("hook").await.unwrap().len(), 1);
    assert_eq!(store.dead_get(2).await.unwrap(), Some(dead));
    assert_eq!(store.dead_len().await.unwrap(), 1);
    let mut again = entry("hook", 2);
    again.attempts = 0;
    store.dead_to_outbox(&again).await.unwrap();
    assert_eq!(store.dead_len().await.unwrap(), 0);
    assert_eq!(store.outbox_get("hook", 2).await.unwrap(), Some(again));
    // A retry's new state replaces the entry.
    let mut retried = entry("hook", 2);
    retried.attempts = 1;
    retried.next_attempt_ms = 77;
    store.outbox_put(&retried).await.unwrap();
    assert_eq!(store.outbox_counts().await.unwrap()["hook"], (1, 1));
    store.delivered("hook", 2).await.unwrap();
    assert_eq!(store.outbox_get("hook", 2).await.unwrap(), None);
}
on_both!(
    page_commit,
    a_page_is_committed_whole_and_entries_come_back_in_order
);

async fn checkpoints_status_and_attempts_round_trip(store: &Store) {
    assert_eq!(store.checkpoint("c", "leads").await.unwrap(), None);
    let t = DateTime::from_timestamp(1_000, 0).unwrap();
    let cp = Checkpoint {
        origin: t,
        last_success_start: Some(t),
        skew_ms: Some(3),
        origin_on_our_clock: true,
    };
    store
        .set_first_checkpoint("c", "leads", &cp, Some(&Baseline::new(t, 0, t)))
        .await
        .unwrap();
    assert_eq!(
        store.checkpoint("c", "leads").await.unwrap(),
        Some(cp.clone())
    );
    assert!(store.baseline("c", "leads").await.unwrap().is_some());
    let st = PollStatus {
        last_pages: 4,
        ..PollStatus::default()
    };
    store.set_poll_status("c", "leads", &st).await.unwrap();
    assert_eq!(store.poll_status("c", "leads").await.unwrap().last_pages, 4);
    let log = |attempt| AttemptLog {
        at_ms: 1,
        attempt,
        status: Some(503),
        duration_ms: 3,
        response: "busy".into(),
        verdict: crate::model::Verdict::Fail {
            reason: "HTTP 503".into(),
        },
    };
    store.log_attempt(7, &log(2)).await.unwrap();
    store.log_attempt(7, &log(1)).await.unwrap();
    assert_eq!(store.attempts(7).await.unwrap(), vec![log(1), log(2)]);
    store.forget_attempts(7).await.unwrap();
    assert!(store.attempts(7).await.unwrap().is_empty());
    let first = store.next_id().await.unwrap();
    let second = store.next_id().await.unwrap();
    assert!(second > first, "ids increase");
}
on_both!(round_trips, checkpoints_status_and_attempts_round_trip);

async fn the_journal_prunes_by_age_only(store: &Store) {
    let page = PageWrite {
        changes: vec![change("a", 100), change("b", 200), change("c", 300)],
        ..PageWrite::default()
    };
    store.commit_page("default", "leads", &page).await.unwrap();
    let removed = store
        .prune_changes_before(DateTime::from_timestamp(250, 0).unwrap())
        .await
        .unwrap();
    assert_eq!(removed, 2);
    let left: Vec<String> = store
        .changes()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, c)| c.id)
        .collect();
    assert_eq!(left, vec!["c"]);
    assert_eq!(store.change_count().await.unwrap(), 1);
}
on_both!(journal, the_journal_prunes_by_age_only);

async fn the_baseline_keeps_the_version_read_first_and_merges_where_nothing_newer_is_stored(
    store: &Store,
) {
    let t = DateTime::from_timestamp(1_000, 0).unwrap();
    let mut b = Baseline::new(t, 0, t);
    store
        .commit_baseline_chunk("default", "leads", &[snap("a", 1), snap("b", 1)], None)
        .await
        .unwrap();
    b.next_page = 1;
    store
        .commit_baseline_chunk("default", "leads", &[snap("a", 2), snap("c", 1)], Some(&b))
        .await
        .unwrap();
    assert_eq!(store.baseline("default", "leads").await.unwrap(), Some(b));
    let raw = store
        .baseline_snapshots_raw("default", "leads", &["a"])
        .await
        .unwrap();
    assert_eq!(raw["a"], snap("a", 1).1);
    assert_eq!(
        store
            .baseline_snapshot_count("default", "leads")
            .await
            .unwrap(),
        3
    );
    let page = PageWrite {
        snapshots: vec![snap("c", 9)],
        ..PageWrite::default()
    };
    store.commit_page("default", "leads", &page).await.unwrap();
    assert_eq!(store.merge_baseline("default", "leads").await.unwrap(), 2);
    assert_eq!(
        store
            .baseline_snapshot_count("default", "leads")
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.snapshot_count("default", "leads").await.unwrap(), 3);
    let c = store
        .snapshot("default", "leads", "c")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c["V"], 9);
    assert_eq!(
        store.merge_baseline("default", "leads").await.unwrap(),
        0,
        "idempotent"
    );
}
on_both!(
    baseline,
    the_baseline_keeps_the_version_read_first_and_merges_where_nothing_newer_is_stored
);

async fn erasing_a_record_removes_every_trace_of_it_and_nothing_else(store: &Store) {
    let mut other = entry("hook", 2);
    other.record_id = "b".into();
    let dead_a = DeadLetter {
        entry: entry("hook", 3),
        reason: "x".into(),
        died_ms: 1,
    };
    let page = PageWrite {
        snapshots: vec![snap("a", 1), snap("b", 1)],
        changes: vec![change("a", 10), change("b", 20)],
        outbox: vec![entry("hook", 1), other],
        dead: vec![dead_a],
        digest: vec![member("mail", 4, "a"), member("mail", 5, "b")],
        ..PageWrite::default()
    };
    // As a poll commits it: the outbox entries encoded ahead.
    let mut page = page;
    page.encode_outbox();
    store.commit_page("default", "leads", &page).await.unwrap();
    store
        .log_attempt(
            1,
            &AttemptLog {
                at_ms: 1,
                attempt: 1,
                status: None,
                duration_ms: 1,
                response: String::new(),
                verdict: crate::model::Verdict::Success,
            },
        )
        .await
        .unwrap();
    let erased = store.erase_record("default", "leads", "a").await.unwrap();
    assert_eq!(
        (
            erased.snapshots,
            erased.changes,
            erased.outbox,
            erased.dead,
            erased.attempts
        ),
        (1, 1, 1, 1, 1)
    );
    assert_eq!(store.snapshot("default", "leads", "a").await.unwrap(), None);
    assert!(store
        .snapshot("default", "leads", "b")
        .await
        .unwrap()
        .is_some());
    assert_eq!(store.outbox_len().await.unwrap(), 1);
    assert_eq!(store.change_count().await.unwrap(), 1);
    assert_eq!(store.dead_len().await.unwrap(), 0);
    assert_eq!(erased.digest, 1, "the record's digest member is erased");
    let left: Vec<String> = store
        .digest_members()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.record_id)
        .collect();
    assert_eq!(left, ["b"]);
}
on_both!(
    erasure,
    erasing_a_record_removes_every_trace_of_it_and_nothing_else
);

async fn dead_letters_purge_by_age_and_health_marks_clear(store: &Store) {
    for (seq, died) in [(1, 100), (2, 200)] {
        let d = DeadLetter {
            entry: entry("hook", seq),
            reason: "x".into(),
            died_ms: died,
        };
        store.outbox_to_dead(&d).await.unwrap();
    }
    assert_eq!(store.purge_dead(Some(150)).await.unwrap(), 1);
    assert_eq!(store.dead_entries().await.unwrap()[0].0, 2);
    assert_eq!(store.purge_dead(None).await.unwrap(), 1);
    let h = super::store::DestHealth {
        since: Utc::now(),
        reason: "gone".into(),
    };
    store
        .set_destination_failing("hook", Some(&h))
        .await
        .unwrap();
    assert_eq!(store.failing_destinations().await.unwrap().len(), 1);
    store.set_destination_failing("hook", None).await.unwrap();
    assert!(store.failing_destinations().await.unwrap().is_empty());
}
on_both!(
    dead_letters,
    dead_letters_purge_by_age_and_health_marks_clear
);

async fn a_snapshot_upgrade_runs_once_per_store(store: &Store) {
    let page = PageWrite {
        snapshots: vec![snap("a", 1), snap("b", 1)],
        ..PageWrite::default()
    };
    store.commit_page("default", "leads", &page).await.unwrap();
    // Rewrites `a` only: a rewrite that returns None leaves the record as it is.
    let rewrite = |_: &str, id: &str, _: &[u8]| (id == "a").then(|| snap("a", 9).1);
    assert_eq!(
        store
            .upgrade_snapshots_once("test-upgrade", rewrite)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.snapshot("default", "leads", "a").await.unwrap(),
        Some(serde_json::json!({"ID":"a","V":9}))
    );
    assert_eq!(
        store.snapshot("default", "leads", "b").await.unwrap(),
        Some(serde_json::json!({"ID":"b","V":1}))
    );
    let again = |_: &str, _: &str, _: &[u8]| Some(snap("a", 10).1);
    assert_eq!(
        store
            .upgrade_snapshots_once("test-upgrade", again)
            .await
            .unwrap(),
        0,
        "an upgrade already recorded is not run again"
    );
    assert_eq!(
        store.snapshot("default", "leads", "a").await.unwrap(),
        Some(serde_json::json!({"ID":"a","V":9}))
    );
}
on_both!(upgrades, a_snapshot_upgrade_runs_once_per_store);

// --- PostgreSQL only -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_change_id_key_and_never_hand_out_one_id_twice() {
    let Some(db) = PgDb::from_env().await else {
        return;
    };
    let (a, b) = (pg_store(&db).await, pg_store(&db).await);
    let id = |s: &Store| {
        let c = crate::model::Change {
            clinic: "default".into(),
            resource: "leads".into(),
            id: "1".into(),
            kind: crate::model::ChangeKind::Added,
            record: serde_json::json!({"ID": "1"}),
            previous: None,
            changed_fields: vec![],
            server_status: None,
            detected_at: Utc::now(),
        };
        c.change_id(s.id_key())
    };
    assert_eq!(id(&a), id(&b), "the same webhook-id from either replica");
    let mut ids = std::collections::HashSet::new();
    for _ in 0..1500 {
        assert!(ids.insert(a.next_id().await.unwrap()));
        assert!(ids.insert(b.next_id().await.unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_claims_an_entry_and_the_other_gets_nothing_until_the_claim_ends() {
    let Some(db) = PgDb::from_env().await else {
        return;
    };
    let (a, b) = (pg_store(&db).await, pg_store(&db).await);
    let page = PageWrite {
        outbox: vec![entry("hook", 1)],
        ..PageWrite::default()
    };
    a.commit_page("default", "leads", &page).await.unwrap();
    let hold = Duration::from_millis(400);
    assert!(a.outbox_claim("hook", 1, hold).await.unwrap().is_some());
    assert!(
        b.outbox_claim("hook", 1, hold).await.unwrap().is_none(),
        "claimed by the other replica"
    );
    assert!(
        b.outbox_due("hook").await.unwrap().is_empty(),
        "a claimed entry is not due elsewhere"
    );
    // A replica that died mid-attempt: its claim expires and the entry is free again.
    tokio::time::sleep(hold + Duration::from_millis(200)).await;
    assert_eq!(b.outbox_due("hook").await.unwrap().len(), 1);
    let mut e = b.outbox_claim("hook", 1, hold).await.unwrap().unwrap();
    // Putting it back (a retry) ends the claim at once.
    e.attempts = 1;
    b.outbox_put(&e).await.unwrap();
    assert!(a.outbox_claim("hook", 1, hold).await.unwrap().is_some());
    // Two claims at the same instant: exactly one wins.
    let page = PageWrite {
        outbox: (10..30).map(|s| entry("hook", s)).collect(),
        ..PageWrite::default()
    };
    a.commit_page("default", "leads", &page).await.unwrap();
    let mut wins = 0;
    for seq in 10..30 {
        let (x, y) = tokio::join!(
            a.outbox_claim("hook", seq, Duration::from_secs(30)),
            b.outbox_claim("hook", seq, Duration::from_secs(30))
        );
        wins += usize::from(x.unwrap().is_some()) + usize::from(y.unwrap().is_some());
    }
    assert_eq!(wins, 20, "one claim per entry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_writes_a_clinic_only_while_it_holds_its_lease() {
    let Some(db) = PgDb::from_env().await else {
        return;
    };
    let lease = Duration::from_secs(3);
    let a = Store::open_postgres(&options(&db, Some("replica-a"), lease))
        .await
        .unwrap();
    let b = Store::open_postgres(&options(&db, Some("replica-b"), lease))
        .await
        .unwrap();
    let (pa, pb) = (a.postgres().unwrap(), b.postgres().unwrap());
    let page = || PageWrite {
        snapshots: vec![snap("x", 1)],
        ..PageWrite::default()
    };
    // Without the lease: refused, nothing written.
    let e = a.commit_page("north", "leads", &page()).await.unwrap_err();
    assert!(
        matches!(e, StoreError::LeaseLost { ref clinic } if clinic == "north"),
        "{e}"
    );
    assert_eq!(a.snapshot_count("north", "leads").await.unwrap(), 0);
    let clinics: Vec<String> = vec!["north".into(), "south".into()];
    // Alone, a replica takes all; the other finds nothing free.
    assert_eq!(pa.heartbeat().await.unwrap(), 1);
    assert_eq!(pa.acquire_leases(&clinics, 2).await.unwrap().len(), 2);
    assert!(pb.acquire_leases(&clinics, 2).await.unwrap().is_empty());
    a.commit_page("north", "leads", &page()).await.unwrap();
    assert_eq!(pb.heartbeat().await.unwrap(), 2, "both alive");
    // A gives one back (its fair share is one now); B takes it and may write it.
    pa.release_leases(&["south".to_string()]).await.unwrap();
    assert_eq!(pb.acquire_leases(&clinics, 1).await.unwrap(), vec!["south"]);
    b.commit_page("south", "leads", &page()).await.unwrap();
    // A stops renewing (it died, or was cut off): its lease expires and B takes north over;
    // A's late write is refused.
    let half = (hold_of(lease) + tick_of(lease)) / 2;
    tokio::time::sleep(half).await;
    assert_eq!(pb.renew_leases().await.unwrap(), vec!["south"], "B renews");
    tokio::time::sleep(half).await;
    assert_eq!(pb.renew_leases().await.unwrap(), vec!["south"]);
    assert_eq!(pb.acquire_leases(&clinics, 1).await.unwrap(), vec!["north"]);
    let e = a.commit_page("north", "leads", &page()).await.unwrap_err();
    assert!(matches!(e, StoreError::LeaseLost { .. }), "{e}");
    assert!(
        pa.renew_leases().await.unwrap().is_empty(),
        "A holds nothing now"
    );
    let cp = Checkpoint {
        origin: Utc::now(),
        last_success_start: None,
        skew_ms: None,
        origin_on_our_clock: true,
    };
    assert!(a.set_checkpoint("north", "leads", &cp).await.is_err());
    b.set_checkpoint("north", "leads", &cp).await.unwrap();
    // A clean stop gives everything back at once.
    pb.leave().await.unwrap();
    assert!(pb.leases().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_store_copied_into_postgres_keeps_its_ids_checkpoints_and_queue() {
    let Some(db) = PgDb::from_env().await else {
        return;
    };
    let (sled, _dir) = store_on(false).await.unwrap();
    let t = DateTime::from_timestamp(5_000, 0).unwrap();
    let cp = Checkpoint {
        origin: t,
        last_success_start: Some(t),
        skew_ms: None,
        origin_on_our_clock: false,
    };
    sled.set_first_checkpoint("default", "leads", &cp, None)
        .await
        .unwrap();
    let page = PageWrite {
        snapshots: vec![snap("a", 1), snap("b", 2)],
        changes: vec![change("a", 10)],
        outbox: vec![entry("hook", 5)],
        dead: vec![DeadLetter {
            entry: entry("hook", 6),
            reason: "x".into(),
            died_ms: 1,
        }],
        digest: vec![member("mail", 7, "b")],
        ..PageWrite::default()
    };
    sled.commit_page("default", "leads", &page).await.unwrap();
    for _ in 0..10 {
        sled.next_id().await.unwrap();
    }
    let last_sled_id = sled.next_id().await.unwrap();
    // A one-time upgrade sled has done is done on the copy too.
    let keep = |_: &str, _: &str, _: &[u8]| None;
    sled.upgrade_snapshots_once("test-upgrade", keep)
        .await
        .unwrap();
    let pg = pg_store(&db).await;
    let p = pg.postgres().unwrap();
    assert!(p.is_empty().await.unwrap());
    p.import(&sled.sled().unwrap().export().unwrap())
        .await
        .unwrap();
    assert!(!p.is_empty().await.unwrap());
    // Reopened: the key read is the copied one, so every webhook-id stays the same.
    let pg = pg_store(&db).await;
    let probe = crate::model::Change {
        clinic: "default".into(),
        resource: "leads".into(),
        id: "a".into(),
        kind: crate::model::ChangeKind::Added,
        record: serde_json::json!({"ID": "a"}),
        previous: None,
        changed_fields: vec![],
        server_status: None,
        detected_at: t,
    };
    assert_eq!(probe.change_id(pg.id_key()), probe.change_id(sled.id_key()));
    assert_eq!(pg.checkpoint("default", "leads").await.unwrap(), Some(cp));
    assert_eq!(pg.snapshot_count("default", "leads").await.unwrap(), 2);
    assert_eq!(
        pg.snapshot("default", "leads", "b").await.unwrap(),
        sled.snapshot("default", "leads", "b").await.unwrap()
    );
    assert_eq!(
        pg.all_outbox().await.unwrap(),
        sled.all_outbox().await.unwrap()
    );
    assert_eq!(
        pg.dead_entries().await.unwrap(),
        sled.dead_entries().await.unwrap()
    );
    assert_eq!(pg.change_count().await.unwrap(), 1);
    assert_eq!(
        pg.digest_members().await.unwrap(),
        sled.digest_members().await.unwrap(),
        "digest members are copied"
    );
    assert_eq!(pg.digest_members().await.unwrap().len(), 1);
    let rewrite = |_: &str, _: &str, _: &[u8]| Some(snap("a", 9).1);
    assert_eq!(
        pg.upgrade_snapshots_once("test-upgrade", rewrite)
            .await
            .unwrap(),
        0,
        "the upgrade sled did is not run again"
    );
    assert!(
        pg.next_id().await.unwrap() > last_sled_id,
        "new ids come after every copied one"
    );
}
