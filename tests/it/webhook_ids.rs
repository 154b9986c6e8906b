//! Webhook ids (`webhook-id`, the receiver's idempotency key) are keyed per store: two stores give
//! the same change different ids, a reopened store the same one, and a store from before keyed ids
//! gets its key on first open and keeps its entries.

use crate::support::*;
use std::time::Duration;

/// The unkeyed id the keyed one replaced: SHA-256 over the change's parts, as anyone holding a
/// guessed record could compute it.
fn unkeyed_id(c: &clinicea_notifier::model::Change) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [&c.clinic, &c.resource, &c.id, c.kind.as_str()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let mut buf = Vec::new();
    let null = serde_json::Value::Null;
    clinicea_notifier::model::canonical_json(c.previous.as_ref().unwrap_or(&null), &mut buf);
    h.update((buf.len() as u64).to_be_bytes());
    h.update(&buf);
    buf.clear();
    clinicea_notifier::model::canonical_json(&c.record, &mut buf);
    h.update(&buf);
    let d = h.finalize();
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

/// The change a webhook body describes.
fn change_of(body: &serde_json::Value) -> clinicea_notifier::model::Change {
    let d = &body["data"];
    let text = |k: &str| d[k].as_str().unwrap().to_string();
    clinicea_notifier::model::Change {
        clinic: text("clinic"),
        resource: text("resource"),
        id: text("id"),
        kind: serde_json::from_value(d["change"].clone()).unwrap(),
        record: d["record"].clone(),
        previous: serde_json::from_value(d["previous"].clone()).unwrap(),
        changed_fields: serde_json::from_value(d["changed_fields"].clone()).unwrap(),
        server_status: serde_json::from_value(d["server_status"].clone()).unwrap(),
        detected_at: chrono::Utc::now(),
    }
}

#[tokio::test]
async fn webhook_ids_are_keyed_per_store_and_stable_across_a_reopen() {
    let sb = empty_sandbox().await;
    sb.sandbox.insert("leads", test_lead());
    let mut ids = Vec::new();
    let mut bodies = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let rx = Receiver::start().await;
        let t = TestDir::new(&new_leads_to_hooks(&sb.base_url(), &rx.url).to_yaml());
        let engine = t.engine().await;
        poll_report(&engine).await.unwrap();
        drain_outbox(&engine, Duration::from_secs(15)).await;
        let got = rx.received();
        assert_eq!(got.len(), 1);
        ids.push(got[0].header("webhook-id"));
        bodies.push(got[0].json());
        drop(engine);
        dirs.push(t);
    }
    assert_ne!(
        ids[0], ids[1],
        "two stores, the same change: different keys, different ids"
    );
    for ((t, id), body) in dirs.iter().zip(&ids).zip(&bodies) {
        // Reopened (a restart): the same key gives the same id for the same change (rebuilt from
        // the body the receiver got), the journal names it, and it is not the plain hash of
        // the record.
        let store = open_store(t);
        let changes = store.changes().await.unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(&changes[0].1.change_id, id);
        let change = change_of(body);
        assert_eq!(&change.change_id(store.id_key()), id);
        assert_ne!(&unkeyed_id(&change), id);
    }
}

#[tokio::test]
async fn a_store_from_before_keyed_ids_gets_its_key_on_first_open_and_keeps_its_entries() {
    use clinicea_notifier::outbox::store::{Store, DEFAULT_CACHE_BYTES};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    // A store as an older version left it: an outbox entry, no `meta` tree.
    let entry = br#"{"queued":"by an older version","webhook_id":"msg_0123"}"#;
    {
        let db = sled::open(&path).unwrap();
        db.open_tree("outbox")
            .unwrap()
            .insert(
                clinicea_notifier::outbox::store::outbox_key("hooks", 1),
                &entry[..],
            )
            .unwrap();
        assert!(!db.tree_names().iter().any(|n| &n[..] == b"meta"));
        db.flush().unwrap();
    }
    let change = clinicea_notifier::route::render::sample_change("leads");
    let first = {
        let store = Store::open(&path, DEFAULT_CACHE_BYTES).unwrap();
        change.change_id(store.id_key())
    };
    let store = Store::open(&path, DEFAULT_CACHE_BYTES).unwrap();
    assert_eq!(change.change_id(store.id_key()), first, "the key was kept");
    assert_ne!(unkeyed_id(&change), first);
    drop(store);
    // Read under the store, as the older version wrote it (the entry is not today's shape).
    let db = sled::open(&path).unwrap();
    let kept: Vec<sled::IVec> = db
        .open_tree("outbox")
        .unwrap()
        .iter()
        .values()
        .map(Result::unwrap)
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(&kept[0][..], &entry[..], "queued entries are untouched");
}
