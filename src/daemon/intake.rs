//! Where ingest's chunks go: the [`Intake`] over the rules and the store. Each diffed chunk's
//! changes are routed and planned (one outbox entry per delivery, a dead letter where a payload
//! could not be rendered), committed with the chunk's snapshots in one page write
//! (`Store::commit_page`), and only then handed on: to whoever watches the polls, and, once on
//! disk, to the delivery workers.

use crate::ingest::intake::{DiffedChunk, Intake};
use crate::ingest::state::{Baseline, Checkpoint, PollStatus};
use crate::model::{Change, ChangeKind};
use crate::outbox::entry::{DigestMember, JournalEntry, Wake};
use crate::outbox::store::{JournalWrite, PageWrite, Store, StoreError};
use crate::route::plan::Pipeline;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// One change a poll detected and stored, with where it is going: what a watcher of the polls
/// (the `demo` command's live stream) is told. It carries ids and names only, never record
/// contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PollEvent {
    /// The clinic.
    pub(crate) clinic: String,
    /// The resource key.
    pub(crate) resource: String,
    /// Added, modified or deleted.
    pub(crate) kind: ChangeKind,
    /// The record id.
    pub(crate) id: String,
    /// The change's stable id (the `webhook-id` of its deliveries).
    pub(crate) change_id: String,
    /// Every matching rule, in file order.
    pub(crate) rules: Vec<String>,
    /// The destinations it was queued for (one entry per destination).
    pub(crate) destinations: Vec<String>,
}

/// Ingest's [`Intake`] for one store and one set of rules, templates and destinations.
#[derive(Clone)]
pub struct OutboxIntake {
    /// The store.
    pub(crate) store: Store,
    /// Rules, templates and destinations.
    pub(crate) pipeline: Arc<Pipeline>,
    /// Tells the delivery workers about new outbox entries once they are on disk (`None`: nobody
    /// delivers meanwhile, as in `once`, and a chunk is not flushed on its own).
    pub(crate) wake: Option<Announcer>,
    /// Told about each change once its chunk is stored, before the workers are woken (`None`:
    /// nobody is watching).
    pub(crate) events: Option<mpsc::UnboundedSender<PollEvent>>,
    /// Kicks the digest flusher after a chunk stored digest members, so a full digest goes out
    /// early (`None`: no flusher runs).
    pub(crate) digest_kick: Option<Arc<tokio::sync::Notify>>,
}

impl OutboxIntake {
    /// Adds a change's journal entry and its planned deliveries to the page write, and its event
    /// when someone watches; returns how many deliveries it queued.
    async fn plan_change(
        &self,
        change: &Change,
        write: &mut PageWrite,
        wakes: &mut Vec<Wake>,
        events: &mut Vec<PollEvent>,
    ) -> Result<u64, StoreError> {
        let id_key = self.store.id_key();
        let change_seq = self.store.next_id().await?;
        let journal = JournalEntry::of(change, id_key);
        write.changes.push(JournalWrite {
            seq: change_seq,
            record_id: change.id.clone(),
            detected_at: change.detected_at,
            value: serde_json::to_vec(&journal).unwrap_or_default(),
        });
        let webhook_id = journal.change_id;
        let routes = self.pipeline.rules.route(change);
        let mut deliveries = 0;
        for mut planned in self.pipeline.plan_routes(change, &routes, id_key) {
            let seq = self.store.next_id().await?;
            // A digest destination's delivery waits in its digest instead of the outbox (one
            // whose payload failed to render goes to the dead letters as any other).
            if let (true, Some((recipient, item))) =
                (planned.payload.is_ok(), planned.digest_item.take())
            {
                write.digest.push(DigestMember {
                    seq,
                    destination: planned.destination,
                    clinic: change.clinic.clone(),
                    recipient,
                    change_id: webhook_id.clone(),
                    event_type: change.event_type(),
                    resource: change.resource.clone(),
                    record_id: change.id.clone(),
                    rule: planned.rule,
                    created_ms: chrono::Utc::now().timestamp_millis(),
                    item,
                });
                deliveries += 1;
                continue;
            }
            match planned.into_entry(seq, change_seq, change, &webhook_id) {
                Ok(entry) => {
                    wakes.push(self.store.wake_of(&entry));
                    write.outbox.push(entry);
                    deliveries += 1;
                }
                Err(dead) => write.dead.push(*dead),
            }
        }
        if self.events.is_some() {
            events.push(PollEvent {
                clinic: change.clinic.clone(),
                resource: change.resource.clone(),
                kind: change.kind,
                id: change.id.clone(),
                change_id: webhook_id,
                rules: routes.first().map(|r| r.rules.clone()).unwrap_or_default(),
                destinations: routes.into_iter().map(|r| r.destination).collect(),
            });
        }
        Ok(deliveries)
    }
}

/// How long the [`Announcer`] waits before it tries again a flush that failed.
pub(crate) const ANNOUNCE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Wakes the delivery workers for committed outbox entries once a flush has put them on disk,
/// without holding up the poll that committed them: the poll goes on to commit its next chunk
/// while the disk syncs, and the wakes of every chunk committed meanwhile wait for one flush.
///
/// Nothing is sent before it is on disk: a delivery from a page a crash then loses would be
/// re-detected as another change (another webhook-id) if the record changed in between, and the
/// receiver would get e.g. `added` twice. A wake is passed on only after a flush that began after
/// its chunk was committed, and the checkpoint's own flushes still come before it advances. A
/// failed flush keeps the wakes, logs the cause and is tried again after [`ANNOUNCE_RETRY`]; the
/// entries themselves are in the outbox either way, and a restarted worker finds them there.
#[derive(Clone)]
pub(crate) struct Announcer {
    inner: Arc<AnnouncerInner>,
}

struct AnnouncerInner {
    store: Store,
    tx: mpsc::UnboundedSender<Wake>,
    /// The wakes waiting for a flush, and whether a task is flushing for them.
    pending: std::sync::Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    wakes: Vec<Wake>,
    flushing: bool,
}

impl Announcer {
    /// An announcer passing wakes to `tx` once `store` has flushed them.
    pub(crate) fn new(store: Store, tx: mpsc::UnboundedSender<Wake>) -> Self {
        Announcer {
            inner: Arc::new(AnnouncerInner {
                store,
                tx,
                pending: std::sync::Mutex::default(),
            }),
        }
    }

    /// Queues the wakes of a committed chunk; they are sent, in order, after the next flush.
    fn announce(&self, wakes: Vec<Wake>) {
        if wakes.is_empty() {
            return;
        }
        let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.wakes.extend(wakes);
        if !pending.flushing {
            pending.flushing = true;
            tokio::spawn(self.clone().flush_and_send());
        }
    }

    /// Flushes and sends until no wakes wait. The flag is cleared under the same lock that
    /// `announce` takes, so a wake queued at any time is either taken here or starts a new task.
    async fn flush_and_send(self) {
        loop {
            let wakes = {
                let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
                if pending.wakes.is_empty() {
                    pending.flushing = false;
                    return;
                }
                std::mem::take(&mut pending.wakes)
            };
            while let Err(e) = self.inner.store.flush().await {
                // Nobody receives any more (shutdown, or a reload's new generation, whose
                // workers find the entries in the outbox when they start).
                if self.inner.tx.is_closed() {
                    return;
                }
                tracing::error!(error = %e, waiting = wakes.len(), retry_in = ?ANNOUNCE_RETRY, "the store could not be flushed; the committed deliveries wait for the flush before they are sent");
                tokio::time::sleep(ANNOUNCE_RETRY).await;
            }
            for w in wakes {
                let _ = self.inner.tx.send(w);
            }
        }
    }
}

/// A chunk's changes routed and planned: the page write, and what is told once it is committed.
#[derive(Debug, Default)]
pub struct PlannedChunk {
    write: PageWrite,
    wakes: Vec<Wake>,
    events: Vec<PollEvent>,
    deliveries: u64,
}

impl Intake for OutboxIntake {
    type Error = StoreError;
    type Planned = PlannedChunk;

    async fn checkpoint(
        &self,
        clinic: &str,
        resource: &str,
    ) -> Result<Option<Checkpoint>, StoreError> {
        self.store.checkpoint(clinic, resource).await
    }

    async fn set_first_checkpoint(
        &self,
        clinic: &str,
        resource: &str,
        cp: &Checkpoint,
        baseline: Option<&Baseline>,
    ) -> Result<(), StoreError> {
        self.store
            .set_first_checkpoint(clinic, resource, cp, baseline)
            .await
    }

    async fn set_checkpoint(
        &self,
        clinic: &str,
        resource: &str,
        cp: &Checkpoint,
    ) -> Result<(), StoreError> {
        self.store.set_checkpoint(clinic, resource, cp).await
    }

    async fn poll_status(&self, clinic: &str, resource: &str) -> Result<PollStatus, StoreError> {
        self.store.poll_status(clinic, resource).await
    }

    async fn set_poll_status(
        &self,
        clinic: &str,
        resource: &str,
        status: &PollStatus,
    ) -> Result<(), StoreError> {
        self.store.set_poll_status(clinic, resource, status).await
    }

    async fn baseline(&self, clinic: &str, resource: &str) -> Result<Option<Baseline>, StoreError> {
        self.store.baseline(clinic, resource).await
    }

    async fn commit_baseline_chunk(
        &self,
        clinic: &str,
        resource: &str,
        snapshots: &[(String, Vec<u8>)],
        progress: Option<&Baseline>,
    ) -> Result<(), StoreError> {
        self.store
            .commit_baseline_chunk(clinic, resource, snapshots, progress)
            .await
    }

    async fn merge_baseline(&self, clinic: &str, resource: &str) -> Result<u64, StoreError> {
        self.store.merge_baseline(clinic, resource).await
    }

    async fn snapshots(
        &self,
        clinic: &str,
        resource: &str,
        ids: &[&str],
    ) -> Result<HashMap<String, Vec<u8>>, StoreError> {
        self.store.snapshots_raw(clinic, resource, ids).await
    }

    async fn baseline_snapshots(
        &self,
        clinic: &str,
        resource: &str,
        ids: &[&str],
    ) -> Result<HashMap<String, Vec<u8>>, StoreError> {
        self.store
            .baseline_snapshots_raw(clinic, resource, ids)
            .await
    }

    async fn plan_chunk(
        &self,
        _clinic: &str,
        _resource: &str,
        chunk: DiffedChunk,
    ) -> Result<PlannedChunk, StoreError> {
        let mut planned = PlannedChunk {
            write: PageWrite {
                snapshots: chunk.snapshots,
                ..PageWrite::default()
            },
            ..PlannedChunk::default()
        };
        // Each change is dropped once planned: what stays is what is written.
        for change in chunk.changes {
            planned.deliveries += self
                .plan_change(
                    &change,
                    &mut planned.write,
                    &mut planned.wakes,
                    &mut planned.events,
                )
                .await?;
        }
        planned.write.encode_outbox();
        Ok(planned)
    }

    async fn commit_planned(
        &self,
        clinic: &str,
        resource: &str,
        planned: PlannedChunk,
    ) -> Result<u64, StoreError> {
        let PlannedChunk {
            write,
            wakes,
            events,
            deliveries,
        } = planned;
        let digested = !write.digest.is_empty();
        self.store.commit_page(clinic, resource, &write).await?;
        // Told only once committed: a plan dropped with its poll left nothing to tell.
        for dead in &write.dead {
            tracing::error!(destination = %dead.entry.destination, clinic = %dead.entry.clinic, resource = %resource, id = %dead.entry.record_id, reason = %dead.reason, "a delivery could not be prepared; it went to the dead letters");
            metrics::counter!(crate::telemetry::metric::DEAD_LETTERS_CREATED, "clinic" => dead.entry.clinic.clone(), "destination" => dead.entry.destination.clone()).increment(1);
            metrics::counter!(crate::telemetry::metric::DELIVERIES, "clinic" => dead.entry.clinic.clone(), "destination" => dead.entry.destination.clone(), "outcome" => "dead").increment(1);
        }
        if let (true, Some(kick)) = (digested, &self.digest_kick) {
            kick.notify_one();
        }
        // The watcher hears of a change before the workers are woken to deliver it.
        if let Some(tx) = &self.events {
            for e in events {
                let _ = tx.send(e);
            }
        }
        if let Some(announcer) = &self.wake {
            announcer.announce(wakes);
        }
        Ok(deliveries)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.store.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::store::DEFAULT_CACHE_BYTES;

    fn wake(seq: u64) -> Wake {
        Wake {
            destination: "hook".into(),
            seq,
            due_ms: 0,
            entry: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_announcer_passes_every_wake_on_in_the_order_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data"), DEFAULT_CACHE_BYTES).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let announcer = Announcer::new(store, tx);
        // Chunks announced while a flush runs wait for the next one, behind those before them.
        for chunk in 0..50u64 {
            announcer.announce((chunk * 10..chunk * 10 + 10).map(wake).collect());
            if chunk % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        announcer.announce(Vec::new());
        let mut got = Vec::new();
        while got.len() < 500 {
            let w = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
                .await
                .expect("every wake arrives")
                .expect("the announcer holds its sender");
            got.push(w.seq);
        }
        assert_eq!(got, (0..500).collect::<Vec<u64>>());
        assert!(rx.try_recv().is_err(), "nothing twice");
    }

    #[tokio::test]
    async fn the_announcer_sends_a_wake_only_once_a_flush_has_finished() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data"), DEFAULT_CACHE_BYTES).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let announcer = Announcer::new(store.clone(), tx);
        for round in 0..3u64 {
            let before = store.flushes_finished();
            announcer.announce(vec![wake(round)]);
            let w = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
                .await
                .expect("the wake arrives")
                .expect("the announcer holds its sender");
            assert_eq!(w.seq, round);
            assert!(
                store.flushes_finished() > before,
                "a flush finished between the announcement and the wake"
            );
        }
    }
}
