//! Reading a test's store: opening it once a child has exited, and its queued deliveries, dead
//! letters, attempt logs and journal, decoded.

use super::TestDir;
use clinicea_notifier::daemon::engine::Engine;
use clinicea_notifier::outbox::entry::{AttemptLog, DeadLetter, OutboxEntry};
use clinicea_notifier::outbox::store::Store;
use std::path::PathBuf;

/// The store directory of a test whose config keeps the default `path: ./data`.
pub fn store_path(t: &TestDir) -> PathBuf {
    t.dir.path().join("data")
}

/// Opens the store of a test whose child has exited (sled allows one process per store).
pub fn open_store(t: &TestDir) -> Store {
    Store::open(
        &store_path(t),
        clinicea_notifier::outbox::store::DEFAULT_CACHE_BYTES,
    )
    .expect("the store opens once the child has exited")
}

/// Every dead letter of an engine's store.
pub async fn dead_list(engine: &Engine) -> Vec<DeadLetter> {
    store_dead_letters(&engine.store).await
}

/// Every dead letter of a store, decoded.
pub async fn store_dead_letters(store: &Store) -> Vec<DeadLetter> {
    store
        .dead_entries()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, dead)| dead)
        .collect()
}

/// Every queued outbox entry of a store, of every destination, decoded.
pub async fn store_outbox(store: &Store) -> Vec<OutboxEntry> {
    store.all_outbox().await.unwrap()
}

/// Every queued outbox entry of `destination` in an engine's store.
pub async fn queued(engine: &Engine, destination: &str) -> Vec<OutboxEntry> {
    queued_in(&engine.store, destination).await
}

/// Every queued outbox entry of `destination` in a store.
pub async fn queued_in(store: &Store, destination: &str) -> Vec<OutboxEntry> {
    store
        .outbox_entries(destination)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, entry)| entry)
        .collect()
}

/// The attempts log of one delivery.
pub async fn attempt_logs(engine: &Engine, seq: u64) -> Vec<AttemptLog> {
    engine.store.attempts(seq).await.unwrap()
}

/// The record ids in the change journal, in journal order.
pub async fn journal_ids(store: &Store) -> Vec<String> {
    store
        .changes()
        .await
        .expect("the journal reads")
        .into_iter()
        .map(|(_, c)| c.id)
        .collect()
}

/// Takes every entry out of a sled store's `changes` tree, which this version writes as one value
/// per page (`[[seq, entry], ...]`), so a test can write them back the way an older version did
/// (one value per seq). The tree is left empty.
pub fn take_journal_pages(changes: &sled::Tree) -> Vec<(u64, serde_json::Value)> {
    let pages: Vec<serde_json::Value> = changes
        .iter()
        .values()
        .map(|v| serde_json::from_slice(&v.unwrap()).unwrap())
        .collect();
    changes.clear().unwrap();
    pages
        .iter()
        .flat_map(|p| {
            p.as_array()
                .expect("a page of entries")
                .iter()
                .map(|e| (e[0].as_u64().unwrap(), e[1].clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}
