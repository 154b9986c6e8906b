//! The embedded sled store: one tree per purpose, keys namespaced by source and big-endian where
//! they carry a sequence number, so prefix scans come back in order.
//!
//! | tree          | key                                   | value                                 |
//! |---------------|---------------------------------------|---------------------------------------|
//! | `checkpoints` | source \0 resource                    | [`Checkpoint`] (JSON)                 |
//! | `polls`       | source \0 resource                    | [`PollStatus`] (JSON)                 |
//! | `snapshots`   | source \0 resource \0 record id       | the record as last fetched (JSON)     |
//! | `changes`     | seq (u64 BE)                          | the detected [`crate::model::Change`] |
//! | `outbox`      | destination \0 seq (u64 BE)           | an outbox entry (JSON, see `deliver`) |
//! | `attempts`    | seq (u64 BE) attempt (u32 BE)         | one attempt's log (JSON)              |
//! | `dead`        | seq (u64 BE)                          | a dead letter (JSON, see `deliver`)   |
//! | `dest_health` | destination                           | [`DestHealth`] while it is failing    |
//!
//! # Why a `kill -9` at any instant loses nothing
//!
//! * The snapshot updates, change journal entries and outbox entries of one page are written in one
//!   sled transaction ([`Store::commit_page`]): after a crash either all of a page's writes are there
//!   or none is. sled recovers its log to a consistent state made of whole transactions.
//! * The checkpoint advances only after every page of a poll is stored *and flushed to disk*
//!   ([`Store::set_checkpoint`] flushes before and after writing it). A crash before that leaves the
//!   old checkpoint, so the next poll reads the same window again.
//! * Reading a window again is harmless: pages that were stored compare equal to their snapshots and
//!   produce nothing; pages that were lost are detected again, and since a change's id is a hash of
//!   its content ([`crate::model::Change::change_id`]), the re-detected change has the same
//!   `webhook-id` as the lost one would have had.
//! * Nothing is sent before it is on disk: the poller flushes a page before it hands the page's
//!   deliveries to the workers (and `once` flushes before delivering). Otherwise a crash could
//!   lose a page whose webhook already went out, and if the record changed before the restart the
//!   re-detected change would differ (a second `added`, under another `webhook-id`).
//! * An outbox entry is removed only after its delivery succeeded (or moved to `dead` in one
//!   transaction). A crash between the success and the flush of the removal re-sends it: at least
//!   once, with the same `webhook-id`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use thiserror::Error;

/// What can go wrong with the store. Callers branch on `Locked` to explain a second process.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Another process has the store open (sled holds an exclusive lock on its directory).
    #[error(
        "the store at {path} is in use by another process (is `clinicea-notifier run` running?)"
    )]
    Locked {
        /// The store directory.
        path: String,
    },
    /// The directory could not be created or written.
    #[error("cannot open the store at {path}: {source}")]
    Open {
        /// The store directory.
        path: String,
        /// The underlying error.
        #[source]
        source: sled::Error,
    },
    /// A read or write failed (disk full, I/O error, corruption).
    // Not `#[from]`/`#[source]`: the cause is already in the message, and error chains would
    // print it twice.
    #[error("store I/O failed: {0}")]
    Sled(sled::Error),
    /// A stored value could not be decoded.
    #[error("a stored {what} could not be decoded: {source}")]
    Decode {
        /// Which kind of value.
        what: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(e)
    }
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where a resource's polling stands: the only state that decides what the next poll asks for.
///
/// Its instants are on the API's clock whenever the API sent a usable `Date` (see `poll.rs`): the
/// since values are compared with the records' change times, which come from that clock.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Nothing from before this instant is ever asked for (`start_from`, fixed at first start).
    pub origin: DateTime<Utc>,
    /// When the last poll whose pages were all stored began; the next poll asks from here minus the
    /// overlap (never before `origin`).
    pub last_success_start: Option<DateTime<Utc>>,
    /// The API's clock minus ours, in milliseconds, measured by the last successful poll. `None`
    /// when that poll had no usable `Date` (or the store predates this field): then
    /// `last_success_start` is on our clock, and the next since reaches back twice the overlap.
    #[serde(default)]
    pub skew_ms: Option<i64>,
    /// `origin` is still on our clock (`start_from: now`, fixed before the API's clock was
    /// known); the first usable `Date` moves it onto the API's.
    #[serde(default)]
    pub origin_on_our_clock: bool,
}

/// How much further back a since reaches when its checkpoint is on our clock, not the API's.
pub const UNKNOWN_CLOCK_OVERLAP_FACTOR: u32 = 2;

impl Checkpoint {
    /// The instant the next poll asks from.
    pub fn since(&self, overlap: std::time::Duration) -> DateTime<Utc> {
        match self.last_success_start {
            Some(start) => {
                let overlap = match self.skew_ms {
                    Some(_) => overlap,
                    None => overlap.saturating_mul(UNKNOWN_CLOCK_OVERLAP_FACTOR),
                };
                let back = chrono::Duration::from_std(overlap).unwrap_or(chrono::Duration::zero());
                (start - back).max(self.origin)
            }
            None => self.origin,
        }
    }
}

/// The outcome of the last poll of a resource, for `status`, `/readyz` and the watchdog.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PollStatus {
    /// When the last poll began.
    pub last_started: Option<DateTime<Utc>>,
    /// When the last poll ended.
    pub last_finished: Option<DateTime<Utc>>,
    /// When the last successful poll ended.
    pub last_success: Option<DateTime<Utc>>,
    /// The last poll's error, or `None` if it succeeded.
    pub last_error: Option<String>,
    /// Failed polls since the last success.
    pub consecutive_failures: u32,
    /// Records fetched by the last poll.
    pub last_records: u64,
    /// Changes detected by the last poll.
    pub last_changes: u64,
    /// Pages fetched by the last poll.
    pub last_pages: u32,
    /// The API's clock minus ours, in milliseconds, as the last poll measured it (`None`: not
    /// measured, or the `Date` was missing or absurd).
    #[serde(default)]
    pub clock_skew_ms: Option<i64>,
    /// The last poll's first response had no usable `Date` (missing, unparseable or absurd).
    #[serde(default)]
    pub api_date_unusable: bool,
}

/// Everything one page writes, committed atomically by [`Store::commit_page`].
#[derive(Debug, Default)]
pub struct PageWrite {
    /// New snapshot versions: (record id, record JSON).
    pub snapshots: Vec<(String, Vec<u8>)>,
    /// Change journal entries: (seq, change JSON).
    pub changes: Vec<(u64, Vec<u8>)>,
    /// Outbox entries: (destination, seq, entry JSON).
    pub outbox: Vec<(String, u64, Vec<u8>)>,
    /// Entries that go straight to the dead letters (e.g. a template that failed to render): (seq, JSON).
    pub dead: Vec<(u64, Vec<u8>)>,
}

/// The sled database and its trees.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    checkpoints: sled::Tree,
    polls: sled::Tree,
    snapshots: sled::Tree,
    changes: sled::Tree,
    outbox: sled::Tree,
    attempts: sled::Tree,
    dead: sled::Tree,
    dest_health: sled::Tree,
    /// False while the attempts log is known to be empty (it was empty at open and nothing has been
    /// logged since), so a delivery that never failed skips the prefix scan when it is removed.
    attempts_used: Arc<AtomicBool>,
}

/// Why a destination is marked failing (e.g. its chat webhook answered 404: it was deleted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestHealth {
    /// Since when.
    pub since: DateTime<Utc>,
    /// The reason, as the attempt recorded it.
    pub reason: String,
}

/// The default page cache: small, because the working set is one page of snapshots at a time.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Joins key parts with a NUL separator (names are validated to contain none).
pub fn key(parts: &[&str]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p.as_bytes());
    }
    k
}

/// A prefix key: the parts followed by a trailing separator.
fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut k = key(parts);
    k.push(0);
    k
}

/// The outbox key of a delivery.
pub fn outbox_key(destination: &str, seq: u64) -> Vec<u8> {
    let mut k = prefix(&[destination]);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Reads the sequence number at the end of an outbox key.
pub fn seq_of_outbox_key(k: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = k.get(k.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

fn decode<T: for<'de> Deserialize<'de>>(what: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode { what, source })
}

/// Decodes a snapshot's raw bytes (see [`Store::snapshot_raw`]).
pub fn decode_snapshot(bytes: &[u8]) -> Result<serde_json::Value> {
    decode("snapshot", bytes)
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing our own plain data types to JSON cannot fail (no maps with non-string keys).
    serde_json::to_vec(v).unwrap_or_default()
}

impl Store {
    /// Opens (or creates) the store at `path` with a page cache of `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Store> {
        let shown = path.display().to_string();
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            // sled flushes on its own every 500 ms as well; the places that need durability flush
            // explicitly (see the module docs), this only bounds the loss of attempt logs.
            .flush_every_ms(Some(500))
            .open()
            .map_err(|e| match &e {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("lock") =>
                {
                    StoreError::Locked {
                        path: shown.clone(),
                    }
                }
                _ => StoreError::Open {
                    path: shown.clone(),
                    source: e,
                },
            })?;
        let attempts = db.open_tree("attempts")?;
        Ok(Store {
            attempts_used: Arc::new(AtomicBool::new(!attempts.is_empty())),
            attempts,
            checkpoints: db.open_tree("checkpoints")?,
            polls: db.open_tree("polls")?,
            snapshots: db.open_tree("snapshots")?,
            changes: db.open_tree("changes")?,
            outbox: db.open_tree("outbox")?,
            dead: db.open_tree("dead")?,
            dest_health: db.open_tree("dest_health")?,
            db,
        })
    }

    /// A fresh, unique, increasing id (sled persists its generator across restarts).
    pub fn next_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    /// Writes everything buffered to disk and waits for it.
    pub async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Writes everything buffered to disk (blocking).
    pub fn flush_blocking(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    // --- checkpoints and poll status ------------------------------------------------------

    /// The checkpoint of a resource, if it has ever been polled.
    pub fn checkpoint(&self, source: &str, resource: &str) -> Result<Option<Checkpoint>> {
        self.checkpoints
            .get(key(&[source, resource]))?
            .map(|v| decode("checkpoint", &v))
            .transpose()
    }

    /// Durably advances a checkpoint: flushes the pages written before it, writes it, flushes again.
    pub async fn set_checkpoint(
        &self,
        source: &str,
        resource: &str,
        cp: &Checkpoint,
    ) -> Result<()> {
        self.flush().await?;
        self.checkpoints
            .insert(key(&[source, resource]), encode(cp))?;
        self.flush().await
    }

    /// The last poll's status of a resource.
    pub fn poll_status(&self, source: &str, resource: &str) -> Result<PollStatus> {
        Ok(self
            .polls
            .get(key(&[source, resource]))?
            .map(|v| decode("poll status", &v))
            .transpose()?
            .unwrap_or_default())
    }

    /// Records the last poll's status (not flushed on its own: it is informational).
    pub fn set_poll_status(&self, source: &str, resource: &str, st: &PollStatus) -> Result<()> {
        self.polls.insert(key(&[source, resource]), encode(st))?;
        Ok(())
    }

    // --- snapshots and pages --------------------------------------------------------------

    /// The stored version of a record.
    pub fn snapshot(
        &self,
        source: &str,
        resource: &str,
        id: &str,
    ) -> Result<Option<serde_json::Value>> {
        self.snapshot_raw(source, resource, id)?
            .map(|v| decode_snapshot(&v))
            .transpose()
    }

    /// The stored version of a record as its raw JSON bytes (what [`Store::commit_page`] wrote), so
    /// a poll can compare bytes before decoding.
    pub fn snapshot_raw(
        &self,
        source: &str,
        resource: &str,
        id: &str,
    ) -> Result<Option<sled::IVec>> {
        Ok(self.snapshots.get(key(&[source, resource, id]))?)
    }

    /// The number of stored snapshots of a resource.
    pub fn snapshot_count(&self, source: &str, resource: &str) -> usize {
        self.snapshots
            .scan_prefix(prefix(&[source, resource]))
            .count()
    }

    /// Atomically writes a page's snapshots, change journal entries, outbox entries and dead letters.
    pub fn commit_page(&self, source: &str, resource: &str, page: &PageWrite) -> Result<()> {
        if page.snapshots.is_empty()
            && page.changes.is_empty()
            && page.outbox.is_empty()
            && page.dead.is_empty()
        {
            return Ok(());
        }
        let snap_keys: Vec<(Vec<u8>, &[u8])> = page
            .snapshots
            .iter()
            .map(|(id, v)| (key(&[source, resource, id]), v.as_slice()))
            .collect();
        let res: std::result::Result<(), TransactionError<()>> =
            (&self.snapshots, &self.changes, &self.outbox, &self.dead).transaction(
                |(snaps, changes, outbox, dead)| {
                    for (k, v) in &snap_keys {
                        snaps.insert(k.as_slice(), *v)?;
                    }
                    for (seq, v) in &page.changes {
                        changes.insert(&seq.to_be_bytes(), v.as_slice())?;
                    }
                    for (dest, seq, v) in &page.outbox {
                        outbox.insert(outbox_key(dest, *seq), v.as_slice())?;
                    }
                    for (seq, v) in &page.dead {
                        dead.insert(&seq.to_be_bytes(), v.as_slice())?;
                    }
                    Ok::<(), ConflictableTransactionError<()>>(())
                },
            );
        match res {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
            Err(TransactionError::Abort(())) => Ok(()),
        }
    }

    // --- change journal -------------------------------------------------------------------

    /// Every change in the journal, oldest first.
    pub fn changes(&self) -> Result<Vec<(u64, crate::model::Change)>> {
        self.changes
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let seq = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
                Ok((seq, decode("change", &v)?))
            })
            .collect()
    }

    /// The number of changes in the journal.
    pub fn change_count(&self) -> usize {
        self.changes.len()
    }

    /// Drops journal entries detected before `cutoff`, oldest first, and returns how many went.
    /// The journal is for inspection (deliveries live in the outbox), so it is kept for a
    /// retention period only; the cost is proportional to what is removed.
    pub fn prune_changes_before(&self, cutoff: DateTime<Utc>) -> Result<usize> {
        #[derive(Deserialize)]
        struct Detected {
            detected_at: DateTime<Utc>,
        }
        let mut removed = 0;
        for kv in self.changes.iter() {
            let (k, v) = kv?;
            let old = serde_json::from_slice::<Detected>(&v)
                .map(|d| d.detected_at < cutoff)
                .unwrap_or(true);
            if !old {
                break;
            }
            self.changes.remove(k)?;
            removed += 1;
        }
        Ok(removed)
    }

    // --- outbox ---------------------------------------------------------------------------

    /// Every outbox entry of a destination, in sequence order: (seq, raw JSON).
    pub fn outbox_entries(&self, destination: &str) -> Result<Vec<(u64, sled::IVec)>> {
        self.outbox
            .scan_prefix(prefix(&[destination]))
            .map(|kv| {
                let (k, v) = kv?;
                Ok((seq_of_outbox_key(&k).unwrap_or(0), v))
            })
            .collect()
    }

    /// All outbox entries of all destinations: (destination, seq, raw JSON).
    pub fn all_outbox(&self) -> Result<Vec<(String, u64, sled::IVec)>> {
        self.outbox
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let dest_end = k.len().saturating_sub(9);
                let dest = String::from_utf8_lossy(&k[..dest_end]).into_owned();
                Ok((dest, seq_of_outbox_key(&k).unwrap_or(0), v))
            })
            .collect()
    }

    /// One outbox entry.
    pub fn outbox_get(&self, destination: &str, seq: u64) -> Result<Option<sled::IVec>> {
        Ok(self.outbox.get(outbox_key(destination, seq))?)
    }

    /// Replaces an outbox entry (after a failed attempt: attempts and next time updated).
    pub fn outbox_put(&self, destination: &str, seq: u64, entry: &[u8]) -> Result<()> {
        self.outbox.insert(outbox_key(destination, seq), entry)?;
        Ok(())
    }

    /// Removes a delivered entry.
    pub fn outbox_remove(&self, destination: &str, seq: u64) -> Result<()> {
        self.outbox.remove(outbox_key(destination, seq))?;
        Ok(())
    }

    /// Number of outbox entries in all.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Moves an entry from the outbox to the dead letters in one transaction.
    pub fn outbox_to_dead(&self, destination: &str, seq: u64, dead_letter: &[u8]) -> Result<()> {
        let k = outbox_key(destination, seq);
        let res: std::result::Result<(), TransactionError<()>> = (&self.outbox, &self.dead)
            .transaction(|(outbox, dead)| {
                outbox.remove(k.as_slice())?;
                dead.insert(&seq.to_be_bytes(), dead_letter)?;
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        match res {
            Ok(()) | Err(TransactionError::Abort(())) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }

    // --- attempts log ---------------------------------------------------------------------

    /// Appends one attempt's log line to a delivery.
    pub fn log_attempt(&self, seq: u64, attempt: u32, log: &[u8]) -> Result<()> {
        let mut k = seq.to_be_bytes().to_vec();
        k.extend_from_slice(&attempt.to_be_bytes());
        // Set before the insert, so no clone of this store can miss it.
        self.attempts_used.store(true, Ordering::SeqCst);
        self.attempts.insert(k, log)?;
        Ok(())
    }

    /// Every attempt of a delivery, in order (raw JSON).
    pub fn attempts(&self, seq: u64) -> Result<Vec<sled::IVec>> {
        self.attempts
            .scan_prefix(seq.to_be_bytes())
            .values()
            .map(|v| Ok(v?))
            .collect()
    }

    /// Drops the attempt logs of a delivery.
    pub fn forget_attempts(&self, seq: u64) -> Result<()> {
        if !self.attempts_used.load(Ordering::SeqCst) {
            return Ok(());
        }
        for k in self.attempts.scan_prefix(seq.to_be_bytes()).keys() {
            self.attempts.remove(k?)?;
        }
        Ok(())
    }

    // --- destination health ---------------------------------------------------------------

    /// Every destination marked failing.
    pub fn failing_destinations(&self) -> Result<Vec<(String, DestHealth)>> {
        self.dest_health
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    decode("destination health", &v)?,
                ))
            })
            .collect()
    }

    /// Marks a destination failing, or clears the mark with `None`.
    pub fn set_destination_failing(
        &self,
        destination: &str,
        health: Option<&DestHealth>,
    ) -> Result<()> {
        match health {
            Some(h) => self.dest_health.insert(destination.as_bytes(), encode(h))?,
            None => self.dest_health.remove(destination.as_bytes())?,
        };
        Ok(())
    }

    // --- dead letters ---------------------------------------------------------------------

    /// Every dead letter, oldest first: (seq, raw JSON).
    pub fn dead_entries(&self) -> Result<Vec<(u64, sled::IVec)>> {
        self.dead
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((
                    u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])),
                    v,
                ))
            })
            .collect()
    }

    /// One dead letter.
    pub fn dead_get(&self, seq: u64) -> Result<Option<sled::IVec>> {
        Ok(self.dead.get(seq.to_be_bytes())?)
    }

    /// Moves a dead letter back into a destination's outbox in one transaction.
    pub fn dead_to_outbox(&self, seq: u64, destination: &str, entry: &[u8]) -> Result<()> {
        let k = outbox_key(destination, seq);
        let res: std::result::Result<(), TransactionError<()>> = (&self.outbox, &self.dead)
            .transaction(|(outbox, dead)| {
                dead.remove(&seq.to_be_bytes())?;
                outbox.insert(k.as_slice(), entry)?;
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        match res {
            Ok(()) | Err(TransactionError::Abort(())) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }

    /// Deletes a dead letter and its attempts log.
    pub fn dead_remove(&self, seq: u64) -> Result<()> {
        self.dead.remove(seq.to_be_bytes())?;
        self.forget_attempts(seq)
    }

    /// Number of dead letters.
    pub fn dead_len(&self) -> usize {
        self.dead.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_commit_is_visible_and_keys_sort() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let page = PageWrite {
            snapshots: vec![("a".into(), br#"{"ID":"a"}"#.to_vec())],
            changes: vec![(1, b"{}".to_vec())],
            outbox: vec![
                ("hook".into(), 300, b"3".to_vec()),
                ("hook".into(), 2, b"2".to_vec()),
                ("hook2".into(), 1, b"1".to_vec()),
            ],
            dead: vec![],
        };
        store.commit_page("default", "leads", &page).unwrap();
        assert_eq!(
            store.snapshot("default", "leads", "a").unwrap(),
            Some(serde_json::json!({"ID":"a"}))
        );
        let seqs: Vec<u64> = store
            .outbox_entries("hook")
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(seqs, vec![2, 300]);
        let all = store.all_outbox().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].0, "hook2");
        store.outbox_to_dead("hook", 2, b"dead").unwrap();
        assert_eq!(store.outbox_entries("hook").unwrap().len(), 1);
        assert_eq!(store.dead_get(2).unwrap().as_deref(), Some(&b"dead"[..]));
        store.dead_to_outbox(2, "hook", b"again").unwrap();
        assert_eq!(store.dead_len(), 0);
        assert_eq!(store.outbox_entries("hook").unwrap().len(), 2);
    }

    #[test]
    fn journal_prunes_by_age_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let mk = |secs: i64| {
            let c = crate::model::Change {
                source: "default".into(),
                resource: "leads".into(),
                id: secs.to_string(),
                kind: crate::model::ChangeKind::Added,
                record: serde_json::json!({}),
                previous: None,
                changed_fields: vec![],
                server_status: None,
                detected_at: DateTime::from_timestamp(secs, 0).unwrap(),
            };
            serde_json::to_vec(&c).unwrap()
        };
        let page = PageWrite {
            changes: vec![(1, mk(100)), (2, mk(200)), (3, mk(300))],
            ..PageWrite::default()
        };
        store.commit_page("default", "leads", &page).unwrap();
        let removed = store
            .prune_changes_before(DateTime::from_timestamp(250, 0).unwrap())
            .unwrap();
        assert_eq!(removed, 2);
        let left: Vec<String> = store
            .changes()
            .unwrap()
            .into_iter()
            .map(|(_, c)| c.id)
            .collect();
        assert_eq!(left, vec!["300"]);
    }

    #[test]
    fn second_open_reports_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let err = Store::open(dir.path(), DEFAULT_CACHE_BYTES).err().unwrap();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    }

    #[test]
    fn checkpoint_since_never_before_origin() {
        let origin = DateTime::parse_from_rfc3339("2026-11-29T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut cp = Checkpoint {
            origin,
            last_success_start: None,
            skew_ms: Some(0),
            origin_on_our_clock: false,
        };
        let overlap = std::time::Duration::from_secs(120);
        assert_eq!(cp.since(overlap), origin);
        cp.last_success_start = Some(origin + chrono::Duration::seconds(60));
        assert_eq!(cp.since(overlap), origin);
        cp.last_success_start = Some(origin + chrono::Duration::seconds(600));
        assert_eq!(cp.since(overlap), origin + chrono::Duration::seconds(480));
        // On our clock (no usable Date), twice the overlap.
        cp.skew_ms = None;
        assert_eq!(cp.since(overlap), origin + chrono::Duration::seconds(360));
    }

    #[test]
    fn a_checkpoint_stored_before_the_clock_fields_still_loads() {
        let old =
            br#"{"origin":"2026-11-29T10:00:00Z","last_success_start":"2026-11-29T11:00:00Z"}"#;
        let cp: Checkpoint = decode("checkpoint", old).unwrap();
        assert_eq!(cp.skew_ms, None);
        assert!(!cp.origin_on_our_clock);
        let status: PollStatus = decode("poll status", br#"{"last_started":null,"last_finished":null,"last_success":null,"last_error":null,"consecutive_failures":0,"last_records":0,"last_changes":0,"last_pages":0}"#).unwrap();
        assert_eq!(status.clock_skew_ms, None);
    }
}
