//! The change journal keeps what inspection needs (ids, kinds, changed field names, keyed hashes,
//! times) and no field value, on both backends; a store whose journal an older version filled
//! with whole records is rewritten in place when it opens, and nothing is detected or sent again.

use crate::support::*;
use clinicea_notifier::kit::sandbox::SandboxHandle;
use clinicea_notifier::model::{Change, ChangeKind};
use clinicea_notifier::outbox::scratch::ScratchDatabase;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// Every string value of the sandbox's leads that could only come from a record: not an id
/// (the journal names records by id), not a field name, and long enough to be unambiguous.
fn field_values(sb: &SandboxHandle) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in sb.sandbox.records("leads") {
        let Value::Object(fields) = &r else { continue };
        for (name, v) in fields {
            if let Some(s) = v.as_str() {
                if name != "ID" && s.len() >= 5 && !fields.contains_key(s) {
                    out.insert(s.to_string());
                }
            }
        }
    }
    out
}

/// The journal's stored entries, as bytes, straight from the backend under the store.
async fn raw_journal(t: &TestDir, pg: Option<&ScratchDatabase>) -> Vec<Vec<u8>> {
    match pg {
        None => {
            let db = sled::open(store_path(t)).unwrap();
            let tree = db.open_tree("changes").unwrap();
            // One value per page of entries, `[[seq, entry], ...]`: each entry's bytes.
            tree.iter()
                .values()
                .flat_map(|v| {
                    let page: Value = serde_json::from_slice(&v.unwrap()).unwrap();
                    page.as_array()
                        .expect("a page of entries")
                        .iter()
                        .map(|e| serde_json::to_vec(&e[1]).unwrap())
                        .collect::<Vec<_>>()
                })
                .collect()
        }
        Some(db) => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            sqlx::query_scalar("SELECT value FROM journal ORDER BY seq")
                .fetch_all(&pool)
                .await
                .unwrap()
        }
    }
}

/// Polls the sandbox's leads, edits two and polls again, and checks what the journal holds.
async fn journal_holds_no_field_values(pg: Option<ScratchDatabase>) {
    let sb = sandbox_with_leads(40).await;
    let rx = Receiver::start().await;
    let mut config = new_leads_to_hooks(&sb.base_url(), &rx.url);
    if let Some(db) = &pg {
        config = config.store(StoreSection::postgres(&db.url));
    }
    let t = TestDir::new(&config.to_yaml());
    let engine = t.engine().await;
    poll_report(&engine).await.expect("first poll");
    let ids: Vec<String> = sandbox_lead_ids(&sb).into_iter().take(2).collect();
    for id in &ids {
        sb.sandbox
            .modify(
                "leads",
                id,
                serde_json::json!({"Notes": "called back about the scan"}),
            )
            .unwrap();
    }
    poll_report(&engine).await.expect("second poll");
    drain_outbox(&engine, Duration::from_secs(15)).await;
    let journal = engine.store.changes().await.unwrap();
    assert_eq!(journal.len(), 42, "40 added, 2 modified");
    let modified: Vec<_> = journal
        .iter()
        .filter(|(_, e)| e.kind == ChangeKind::Modified)
        .collect();
    assert_eq!(modified.len(), 2);
    for (_, e) in &modified {
        assert!(ids.contains(&e.id));
        assert!(e.changed_fields.contains(&"Notes".to_string()), "{e:?}");
    }
    // Each added lead's entry names the webhook-id its delivery carried.
    let sent: BTreeSet<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    let added: BTreeSet<String> = journal
        .iter()
        .filter(|(_, e)| e.kind == ChangeKind::Added)
        .map(|(_, e)| e.change_id.clone())
        .collect();
    assert_eq!(sent.len(), 40);
    assert_eq!(added, sent);
    drop(engine);

    let values = field_values(&sb);
    assert!(values.len() > 40, "the check has values to look for");
    let raw = raw_journal(&t, pg.as_ref()).await;
    assert_eq!(raw.len(), 42);
    for bytes in raw {
        let text = String::from_utf8(bytes).unwrap();
        for v in &values {
            assert!(
                !text.contains(&serde_json::to_string(v).unwrap()),
                "a field value in the journal: {text}"
            );
        }
        for key in ["\"record\"", "\"previous\"", "server_status"] {
            assert!(!text.contains(key), "{key} in the journal: {text}");
        }
    }
}

#[tokio::test]
async fn on_sled_the_journal_holds_ids_kinds_field_names_and_hashes_but_no_field_value() {
    journal_holds_no_field_values(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_the_journal_holds_ids_kinds_field_names_and_hashes_but_no_field_value() {
    let Some(db) = ScratchDatabase::from_env().await else {
        return;
    };
    journal_holds_no_field_values(Some(db)).await;
}

#[tokio::test]
async fn a_store_whose_journal_holds_whole_records_is_rewritten_at_open_and_nothing_is_sent_again()
{
    let sb = empty_sandbox().await;
    let rx = Receiver::start().await;
    let t = TestDir::new(&new_leads_to_hooks(&sb.base_url(), &rx.url).to_yaml());
    // Three leads delivered, two more detected and still queued when the process stops.
    let engine = t.engine().await;
    for _ in 0..3 {
        sb.sandbox.insert("leads", test_lead());
    }
    poll_report(&engine).await.unwrap();
    drain_outbox(&engine, Duration::from_secs(15)).await;
    assert_eq!(rx.received().len(), 3);
    for _ in 0..2 {
        sb.sandbox.insert("leads", test_lead());
    }
    poll_report(&engine).await.unwrap();
    assert_eq!(queued(&engine, "hooks").await.len(), 2);
    let before: Vec<(u64, String)> = engine
        .store
        .changes()
        .await
        .unwrap()
        .into_iter()
        .map(|(seq, e)| (seq, e.change_id))
        .collect();
    drop(engine);

    // The journal as an older version wrote it: each entry the whole change, and no record of
    // the rewrite having been done.
    let records: HashMap<String, Value> = sb
        .sandbox
        .records("leads")
        .into_iter()
        .map(|r| (r["ID"].as_str().unwrap().to_string(), r))
        .collect();
    {
        let db = sled::open(store_path(&t)).unwrap();
        let changes = db.open_tree("changes").unwrap();
        for (seq, slim) in take_journal_pages(&changes) {
            let k = seq.to_be_bytes();
            let id = slim["id"].as_str().unwrap().to_string();
            let whole = Change {
                clinic: slim["clinic"].as_str().unwrap().into(),
                resource: "leads".into(),
                record: records[&id].clone(),
                id,
                kind: ChangeKind::Added,
                previous: None,
                changed_fields: serde_json::from_value(slim["changed_fields"].clone()).unwrap(),
                server_status: None,
                detected_at: serde_json::from_value(slim["detected_at"].clone()).unwrap(),
            };
            changes
                .insert(k, serde_json::to_vec(&whole).unwrap())
                .unwrap();
        }
        let meta = db.open_tree("meta").unwrap();
        assert!(meta.remove(b"upgrade\0slim-journal").unwrap().is_some());
        db.flush().unwrap();
    }
    let first_name = |r: &Value| serde_json::to_string(&r["FirstName"]).unwrap();
    let holds_names = |t: &TestDir| {
        let db = sled::open(store_path(t)).unwrap();
        let tree = db.open_tree("changes").unwrap();
        let all: Vec<String> = tree
            .iter()
            .values()
            .map(|v| String::from_utf8(v.unwrap().to_vec()).unwrap())
            .collect();
        records
            .values()
            .filter(|r| all.iter().any(|e| e.contains(&first_name(r))))
            .count()
    };
    assert_eq!(
        holds_names(&t),
        5,
        "the old journal holds every lead's name"
    );

    // Reopened by this version: rewritten in place, the same entries under the same ids.
    let engine = t.engine().await;
    let after: Vec<(u64, String)> = engine
        .store
        .changes()
        .await
        .unwrap()
        .into_iter()
        .map(|(seq, e)| (seq, e.change_id))
        .collect();
    assert_eq!(after, before);
    // Polling again finds nothing new; the two queued deliveries go out once, and the three
    // delivered before are not sent again.
    let rep = poll_report(&engine).await.unwrap();
    assert_eq!(rep.changes, 0);
    drain_outbox(&engine, Duration::from_secs(15)).await;
    let got: Vec<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(got.len(), 5, "{got:?}");
    let distinct: BTreeSet<&String> = got.iter().collect();
    let journal: BTreeSet<&String> = before.iter().map(|(_, id)| id).collect();
    assert_eq!(distinct, journal);
    drop(engine);
    assert_eq!(holds_names(&t), 0, "no name is left in the journal");
}
