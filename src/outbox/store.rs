//! The store seam: one [`Store`] over two backends, the embedded sled store
//! ([`super::embedded`], the default: one process, one directory) and PostgreSQL
//! ([`super::postgres`]: several replicas on one database). Both keep the same things (checkpoints,
//! poll status, baselines, snapshots, the change journal, the outbox, attempt logs, dead letters,
//! destination health, the operator alerts' failure streaks and incidents, and the change-id key)
//! with the same guarantees: a page is one transaction,
//! a checkpoint moves only once what came before it is durable, and every value comes back typed.
//!
//! Every accessor is async: PostgreSQL answers over the network. sled's answer is in memory
//! almost always, so its calls run in place.
//!
//! The same behaviour tests run against both backends (`super::tests`).

use super::embedded::SledStore;
use super::postgres::PgStore;
use crate::ingest::state::{Baseline, Checkpoint, PollStatus};
use crate::model::IdKey;
use crate::outbox::entry::{AttemptLog, DeadLetter, DigestMember, JournalEntry, OutboxEntry, Wake};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

pub use super::embedded::outbox_key;
pub use super::postgres::PgOptions;

/// What can go wrong with the store. Callers branch on `Locked` to explain a second process and on
/// `LeaseLost` to stop polling a clinic another replica now owns.
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
    /// The PostgreSQL database could not be reached or refused the connection.
    #[error("cannot connect to the PostgreSQL store at {target}: {reason}")]
    Connect {
        /// host:port/database, never the password.
        target: String,
        /// Why.
        reason: String,
    },
    /// The database's schema was made by a newer notifier than this one.
    #[error("the PostgreSQL store's schema is version {found}, newer than this notifier knows ({known}): upgrade the notifier, or point it at another database")]
    SchemaNewer {
        /// The newest version applied in the database.
        found: i64,
        /// The newest version this binary carries.
        known: i64,
    },
    /// A schema migration failed.
    #[error("the PostgreSQL store's schema could not be brought up to date: {0}")]
    Migrate(String),
    /// A query failed (the connection dropped, the server refused it).
    #[error("the PostgreSQL store failed: {0}")]
    Postgres(String),
    /// This replica no longer holds the clinic's lease (it expired or another replica took it), so
    /// what it read may be stale: nothing was written.
    #[error("this replica no longer holds the lease of clinic {clinic}: nothing was written, and its new owner polls it")]
    LeaseLost {
        /// The clinic.
        clinic: String,
    },
    /// A queued delivery's body is not where its entry says (see `outbox::bodies`).
    #[error("a queued delivery's body cannot be read: {0}")]
    Body(std::io::Error),
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

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Postgres(super::postgres::describe(&e))
    }
}

/// Result alias for store operations.
pub(crate) type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One change journal entry of a [`PageWrite`]: its key, what it is about, and its JSON.
#[derive(Debug)]
pub struct JournalWrite {
    /// The journal sequence number.
    pub seq: u64,
    /// The record id.
    pub record_id: String,
    /// When the change was detected (the journal's retention counts from here).
    pub detected_at: DateTime<Utc>,
    /// The change, encoded.
    pub value: Vec<u8>,
}

/// Everything one page writes, committed atomically by [`Store::commit_page`].
#[derive(Debug, Default)]
pub struct PageWrite {
    /// New snapshot versions: (record id, record JSON). A later version of the same id wins.
    pub snapshots: Vec<(String, Vec<u8>)>,
    /// Change journal entries.
    pub changes: Vec<JournalWrite>,
    /// Outbox entries.
    pub outbox: Vec<OutboxEntry>,
    /// Entries that go straight to the dead letters (e.g. a template that failed to render).
    pub dead: Vec<DeadLetter>,
    /// Deliveries to digest destinations: they wait in the store until their window closes
    /// ([`Store::flush_digest`]).
    pub digest: Vec<DigestMember>,
    /// `outbox` as the sled store writes it, when encoded ahead ([`PageWrite::encode_outbox`]):
    /// each entry's JSON and whether its body was left out of it (to go to a segment of its own,
    /// see `outbox::bodies`); left empty, the commit encodes them.
    pub outbox_values: Vec<(Vec<u8>, bool)>,
}

impl PageWrite {
    /// Encodes the outbox entries ahead of the commit, so a poll does it on its own core while
    /// the page before is committed instead of inside the store's write. A body is left out of
    /// its entry's JSON (the JSON holds it empty), not copied: the commit writes it apart.
    pub(crate) fn encode_outbox(&mut self) {
        self.outbox_values = self.outbox.iter_mut().map(encode_apart).collect();
    }

    /// The `i`th outbox entry as the sled store writes it (see [`PageWrite::outbox_values`]):
    /// encoded ahead, or now.
    pub(crate) fn outbox_value(&self, i: usize) -> (std::borrow::Cow<'_, [u8]>, bool) {
        if self.outbox_values.len() == self.outbox.len() {
            let (v, apart) = &self.outbox_values[i];
            return (v.as_slice().into(), *apart);
        }
        let (v, apart) = encode_apart(&mut self.outbox[i].clone());
        (v.into(), apart)
    }

    /// Nothing to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
            && self.changes.is_empty()
            && self.outbox.is_empty()
            && self.dead.is_empty()
            && self.digest.is_empty()
    }
}

/// Why a destination is marked failing (e.g. its chat webhook answered 404: it was deleted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DestHealth {
    /// Since when.
    pub(crate) since: DateTime<Utc>,
    /// The reason, as the attempt recorded it.
    pub(crate) reason: String,
}

/// A destination's run of failed attempts since its last success, kept for the operator's
/// alerts (`crate::daemon::alerts`): the first failure's time is what `destination_failing_for`
/// counts from. Written on every failed attempt, removed by the next success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureStreak {
    /// The first failed attempt since the last success.
    pub since: DateTime<Utc>,
    /// Failed attempts since then.
    pub failures: u64,
    /// The last failure's reason, as the attempt recorded it (scrubbed again before an alert).
    pub reason: String,
}

/// One operator-alert incident's durable state, keyed by the incident (its kind and what it is
/// about, e.g. `destination_failing/crm`): whether it is open (its alert queued, its recovery
/// not yet) and when its last alert went out (the rate limit counts from there).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IncidentState {
    /// The incident is open: its alert was queued and its "recovered" not yet.
    #[serde(default)]
    pub open: Option<OpenIncident>,
    /// When the last alert (not "recovered") of this incident was queued, Unix ms.
    #[serde(default)]
    pub last_alert_ms: Option<i64>,
}

/// An open incident ([`IncidentState::open`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenIncident {
    /// The incident's id: the `webhook-id` of its alert and of its "recovered" derive from it.
    pub id: u64,
    /// When the trouble began (a streak's first failure, a resource's last success).
    pub since: DateTime<Utc>,
    /// When the alert was queued, Unix ms.
    pub alerted_ms: i64,
}

/// When an outbox entry is due ([`Store::outbox_due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Due {
    /// The delivery's sequence number.
    pub(crate) seq: u64,
    /// When its next attempt is due (Unix ms).
    pub(crate) at_ms: i64,
}

/// What [`Store::erase_record`] removed, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Erased {
    /// The record's snapshot (0 or 1).
    pub(crate) snapshots: usize,
    /// Change journal entries.
    pub(crate) changes: usize,
    /// Queued deliveries.
    pub(crate) outbox: usize,
    /// Dead letters.
    pub(crate) dead: usize,
    /// Attempt logs of those deliveries and dead letters.
    pub(crate) attempts: usize,
    /// Changes waiting in a digest.
    pub(crate) digest: usize,
}

impl Erased {
    /// Everything removed.
    pub(crate) fn total(&self) -> usize {
        self.snapshots + self.changes + self.outbox + self.dead + self.attempts + self.digest
    }
}

/// One journal entry of a [`Dump`]: (seq, clinic, resource, record id, detected at, value).
pub(crate) type DumpedChange = (u64, String, String, String, DateTime<Utc>, Vec<u8>);

/// Everything a store holds, as [`SledStore::export`] reads it for a copy into PostgreSQL
/// ([`PgStore::import`]). Values stay the bytes they were stored as.
#[derive(Debug, Default)]
pub(crate) struct Dump {
    /// The change-id key.
    pub(crate) id_key: Vec<u8>,
    /// The other `meta` entries (one-time upgrades done): (name, value), a name's parts joined
    /// by `:` as PostgreSQL's `meta` names them.
    pub(crate) meta: Vec<(String, Vec<u8>)>,
    /// Checkpoints, poll status and baselines: (table, clinic, resource, value).
    pub(crate) keyed: Vec<(&'static str, String, String, Vec<u8>)>,
    /// Snapshots and the baseline's records: (baseline?, clinic, resource, record id, value).
    pub(crate) records: Vec<(bool, String, String, String, Vec<u8>)>,
    /// The change journal: (seq, clinic, resource, record id, detected at, value).
    pub(crate) journal: Vec<DumpedChange>,
    /// Queued deliveries.
    pub(crate) outbox: Vec<OutboxEntry>,
    /// Attempt logs: (seq, attempt, value).
    pub(crate) attempts: Vec<(u64, u32, Vec<u8>)>,
    /// Dead letters.
    pub(crate) dead: Vec<DeadLetter>,
    /// Destinations marked failing: (name, value).
    pub(crate) dest_health: Vec<(String, Vec<u8>)>,
    /// Changes waiting in digests.
    pub(crate) digest: Vec<DigestMember>,
    /// The next id the store would hand out.
    pub(crate) next_id: u64,
}

/// The default page cache (`store.cache_mb` unset).
pub const DEFAULT_CACHE_BYTES: u64 = crate::config::defaults::STORE_CACHE_BYTES;

/// What a stored outbox entry is called in a [`StoreError::Decode`].
pub(crate) const OUTBOX_ENTRY: &str = "outbox entry";
/// What a stored digest member is called in a [`StoreError::Decode`].
pub(crate) const DIGEST_MEMBER: &str = "digest member";
/// What a stored dead letter is called in a [`StoreError::Decode`].
pub(crate) const DEAD_LETTER: &str = "dead letter";
/// What a journal value is called in decode errors.
pub(crate) const JOURNAL_ENTRY: &str = "journal entry";
/// The one-time upgrade that rewrites journal entries holding whole changes into
/// [`JournalEntry`]s (`meta` records it as done).
pub(crate) const SLIM_JOURNAL: &str = "slim-journal";

/// Decodes a stored JSON value, naming what it was when it cannot be.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(what: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode { what, source })
}

/// An outbox entry's JSON with its body (if its payload has one) left empty, and whether it had
/// one: the body is taken out while the rest is encoded and put back, never copied.
pub(crate) fn encode_apart(entry: &mut OutboxEntry) -> (Vec<u8>, bool) {
    let Some(body) = entry.payload.body_mut().map(std::mem::take) else {
        return (encode(&*entry), false);
    };
    let json = encode(&*entry);
    if let Some(slot) = entry.payload.body_mut() {
        *slot = body;
    }
    (json, true)
}

/// Encodes a value for the store.
pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing our own plain data types to JSON cannot fail (no maps with non-string keys).
    serde_json::to_vec(v).unwrap_or_default()
}

/// Decodes a snapshot's raw bytes (see [`Store::snapshot_raw`]).
pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<serde_json::Value> {
    decode("snapshot", bytes)
}

/// The store: sled in one directory, or a PostgreSQL database shared by replicas.
#[derive(Clone)]
pub enum Store {
    /// The embedded default.
    Sled(SledStore),
    /// PostgreSQL.
    Postgres(PgStore),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Store::Sled(_) => "Store::Sled",
            Store::Postgres(_) => "Store::Postgres",
        })
    }
}

/// Says that an open rewrote old journal entries.
fn log_slimmed(n: usize) {
    if n > 0 {
        tracing::info!(
            rewritten = n,
            "journal entries that held whole records now keep ids, kinds, field names and hashes only"
        );
    }
}

impl Store {
    /// Opens (or creates) the sled store at `path` with a page cache of `cache_bytes`. The folder
    /// and its files are made readable by this user only.
    /// A store in an older format is brought up to date in place (see [`SledStore::slim_journal_once`]).
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Store> {
        let s = SledStore::open(path, cache_bytes)?;
        log_slimmed(s.slim_journal_once()?);
        Ok(Store::Sled(s))
    }

    /// Connects to a PostgreSQL store and brings its schema and its values up to date (see
    /// [`PgOptions`] and [`PgStore::slim_journal_once`]).
    pub async fn open_postgres(options: &PgOptions) -> Result<Store> {
        let p = PgStore::open(options).await?;
        log_slimmed(p.slim_journal_once().await?);
        Ok(Store::Postgres(p))
    }

    /// Opens the store a config names.
    pub(crate) async fn open_configured(
        settings: &crate::config::StoreSettings,
        holder: Option<String>,
    ) -> Result<Store> {
        match &settings.backend {
            crate::config::StoreBackend::Sled => Store::open(&settings.path, settings.cache_bytes),
            crate::config::StoreBackend::Postgres { url, lease } => {
                Store::open_postgres(&PgOptions {
                    url: url.expose().to_string(),
                    holder,
                    lease: *lease,
                })
                .await
            }
        }
    }

    /// The PostgreSQL store, when this is one (replicas, leases and claims exist only there).
    pub(crate) fn postgres(&self) -> Option<&PgStore> {
        match self {
            Store::Sled(_) => None,
            Store::Postgres(p) => Some(p),
        }
    }

    /// Where the store is, for messages: a folder, or host:port/database.
    pub(crate) fn describe(&self) -> String {
        match self {
            Store::Sled(s) => s.path().display().to_string(),
            Store::Postgres(p) => format!("postgres://{}", p.target()),
        }
    }

    /// The sled store, when this is one.
    pub(crate) fn sled(&self) -> Option<&SledStore> {
        match self {
            Store::Sled(s) => Some(s),
            Store::Postgres(_) => None,
        }
    }

    /// Sets the folders and files of a sled store to 0700 and 0600 where they allow more; returns
    /// how many it changed (PostgreSQL keeps its own files).
    pub(crate) fn tighten_permissions(&self) -> usize {
        match self {
            Store::Sled(s) => s.tighten_permissions(),
            Store::Postgres(_) => 0,
        }
    }

    /// The key of this store's change ids (`webhook-id`, email `Message-ID`): made once, at the
    /// first open, and the same at every later open (and for every replica of one database).
    pub fn id_key(&self) -> &IdKey {
        match self {
            Store::Sled(s) => s.id_key(),
            Store::Postgres(p) => p.id_key(),
        }
    }

    /// A fresh, unique, increasing id.
    pub async fn next_id(&self) -> Result<u64> {
        match self {
            Store::Sled(s) => s.next_id(),
            Store::Postgres(p) => p.next_id().await,
        }
    }

    /// Makes everything written so far durable and waits for it (PostgreSQL's commits already are).
    pub async fn flush(&self) -> Result<()> {
        match self {
            Store::Sled(s) => s.flush().await,
            Store::Postgres(_) => Ok(()),
        }
    }

    /// The checkpoint of a resource, if it has ever been polled.
    pub async fn checkpoint(&self, clinic: &str, resource: &str) -> Result<Option<Checkpoint>> {
        match self {
            Store::Sled(s) => s.checkpoint(clinic, resource),
            Store::Postgres(p) => p.checkpoint(clinic, resource).await,
        }
    }

    /// Durably advances a checkpoint, once everything written before it is durable.
    pub(crate) async fn set_checkpoint(
        &self,
        clinic: &str,
        resource: &str,
        cp: &Checkpoint,
    ) -> Result<()> {
        match self {
            Store::Sled(s) => s.set_checkpoint(clinic, resource, cp).await,
            Store::Postgres(p) => p.set_checkpoint(clinic, resource, cp).await,
        }
    }

    /// Writes a resource's first checkpoint and, when one is due, its baseline, in one durable
    /// transaction.
    pub(crate) async fn set_first_checkpoint(
        &self,
        clinic: &str,
        resource: &str,
        cp: &Checkpoint,
        baseline: Option<&Baseline>,
    ) -> Result<()> {
        match self {
            Store::Sled(s) => s.set_first_checkpoint(clinic, resource, cp, baseline).await,
            Store::Postgres(p) => p.set_first_checkpoint(clinic, resource, cp, baseline).await,
        }
    }

    /// The baseline of a resource, if it ever had one.
    pub async fn baseline(&self, clinic: &str, resource: &str) -> Result<Option<Baseline>> {
        match self {
            Store::Sled(s) => s.baseline(clinic, resource),
            Store::Postgres(p) => p.baseline(clinic, resource).await,
        }
    }

    /// Stores records the baseline read (those it has not read before), and with a page's last
    /// chunk its progress, in one transaction.
    pub(crate) async fn commit_baseline_chunk(
        &self,
        clinic: &str,
        resource: &str,
        snapshots: &[(String, Vec<u8>)],
        progress: Option<&Baseline>,
    ) -> Result<()> {
        match self {
            Store::Sled(s) => s.commit_baseline_chunk(clinic, resource, snapshots, progress),
            Store::Postgres(p) => {
                p.commit_baseline_chunk(clinic, resource, snapshots, progress)
                    .await
            }
        }
    }

    /// The records the baseline read, of the ids asked for that it holds.
    pub(crate) async fn baseline_snapshots_raw(
        &self,
        clinic: &str,
        resource: &str,
        ids: &[&str],
    ) -> Result<HashMap<String, Vec<u8>>> {
        match self {
            Store::Sled(s) => s.records_raw(true, clinic, resource, ids),
            Store::Postgres(p) => p.records_raw(true, clinic, resource, ids).await,
        }
    }

    /// The number of records the baseline holds apart (before it is merged).
    pub async fn baseline_snapshot_count(&self, clinic: &str, resource: &str) -> Result<usize> {
        match self {
            Store::Sled(s) => Ok(s.baseline_snapshot_count(clinic, resource)),
            Store::Postgres(p) => p.count_records(true, clinic, resource).await,
        }
    }

    /// Moves the baseline's records into the snapshots, where no newer version is stored, and
    /// returns how many moved. Idempotent.
    pub(crate) async fn merge_baseline(&self, clinic: &str, resource: &str) -> Result<u64> {
        match self {
            Store::Sled(s) => s.merge_baseline(clinic, resource),
            Store::Postgres(p) => p.merge_baseline(clinic, resource).await,
        }
    }

    /// The last poll's status of a resource.
    pub async fn poll_status(&self, clinic: &str, resource: &str) -> Result<PollStatus> {
        match self {
            Store::Sled(s) => s.poll_status(clinic, resource),
            Store::Postgres(p) => p.poll_status(clinic, resource).await,
        }
    }

    /// Records the last poll's status (informational: not flushed on its own).
    pub(crate) async fn set_poll_status(
        &self,
        clinic: &str,
        resource: &str,
        st: &PollStatus,
    ) -> Result<()> {
        match self {
            Store::Sled(s) => s.set_poll_status(clinic, resource, st),
            Store::Postgres(p) => p.set_poll_status(clinic, resource, st).await,
        }
    }

    /// The stored version of a record.
    pub async fn snapshot(
        &self,
        clinic: &str,
        resource: &str,
        id: &str,
    ) -> Result<Option<serde_json::Value>> {
        let raw = self.snapshots_raw(clinic, resource, &[id]).await?;
        raw.get(id).map(|v| decode_snapshot(v)).transpose()
    }

    /// The stored versions of the records asked for, as the raw JSON bytes [`Store::commit_page`]
    /// wrote (a poll compares bytes before decoding): one read for a whole chunk.
    pub(crate) async fn snapshots_raw(
        &self,
        clinic: &str,
        resource: &str,
        ids: &[&str],
    ) -> Result<HashMap<String, Vec<u8>>> {
        match self {
            Store::Sled(s) => s.records_raw(false, clinic, resource, ids),
            Store::Postgres(p) => p.records_raw(false, clinic, resource, ids).await,
        }
    }

    /// The number of stored snapshots of a resource.
    pub async fn snapshot_count(&self, clinic: &str, resource: &str) -> Result<usize> {
        match self {
            Store::Sled(s) => Ok(s.snapshot_count(clinic, resource)),
            Store::Postgres(p) => p.count_records(false, clinic, resource).await,
        }
    }

    /// Writes a page's snapshots, change journal entries, outbox entries and dead letters; after a
    /// crash each change of it is there whole or not at all (on sled see `PendingPage`).
    pub async fn commit_page(&self, clinic: &str, resource: &str, page: &PageWrite) -> Result<()> {
        if page.is_empty() {
            return Ok(());
        }
        match self {
            // A page's write holds its thread for milliseconds.
            Store::Sled(s) => crate::runtime::hold_thread(|| s.commit_page(clinic, resource, page)),
            Store::Postgres(p) => p.commit_page(clinic, resource, page).await,
        }
    }

    /// Every change in the journal, oldest first.
    pub async fn changes(&self) -> Result<Vec<(u64, JournalEntry)>> {
        match self {
            Store::Sled(s) => s.changes(),
            Store::Postgres(p) => p.changes().await,
        }
    }

    /// The number of changes in the journal.
    pub async fn change_count(&self) -> Result<usize> {
        match self {
            Store::Sled(s) => s.change_count(),
            Store::Postgres(p) => p.change_count().await,
        }
    }

    /// Drops journal entries detected before `cutoff` and returns how many went.
    pub(crate) async fn prune_changes_before(&self, cutoff: DateTime<Utc>) -> Result<usize> {
        match self {
            Store::Sled(s) => s.prune_changes_before(cutoff),
            Store::Postgres(p) => p.prune_changes_before(cutoff).await,
        }
    }

    /// Runs `rewrite` over every snapshot once per store (see [`SledStore::upgrade_snapshots_once`]).
    pub(crate) async fn upgrade_snapshots_once(
        &self,
        upgrade: &str,
        rewrite: impl Fn(&str, &str, &[u8]) -> Option<Vec<u8>>,
    ) -> Result<usize> {
        match self {
            Store::Sled(s) => s.upgrade_snapshots_once(upgrade, rewrite),
            Store::Postgres(p) => p.upgrade_snapshots_once(upgrade, rewrite).await,
        }
    }

    /// Erases everything stored about one record, in one transaction.
    pub(crate) async fn erase_record(
        &self,
        clinic: &str,
        resource: &str,
        id: &str,
    ) -> Result<Erased> {
        match self {
            Store::Sled(s) => s.erase_record(clinic, resource, id),
            Store::Postgres(p) => p.erase_record(clinic, resource, id).await,
        }
    }

    /// Every outbox entry of a destination, in sequence order: (seq, entry).
    pub async fn outbox_entries(&self, destination: &str) -> Result<Vec<(u64, OutboxEntry)>> {
        match self {
            Store::Sled(s) => s.outbox_entries(destination),
            Store::Postgres(p) => p.outbox_entries(destination).await,
        }
    }

    /// When each outbox entry of a destination is due, in sequence order, one result per entry, so
    /// a scheduler can queue every entry it can read even when one cannot be. On PostgreSQL, only
    /// entries no replica has claimed.
    pub(crate) async fn outbox_due(&self, destination: &str) -> Result<Vec<Result<Due>>> {
        match self {
            Store::Sled(s) => Ok(s.outbox_due(destination).collect()),
            Store::Postgres(p) => p.outbox_due(destination).await,
        }
    }

    /// All outbox entries of all destinations, by destination and then sequence.
    pub async fn all_outbox(&self) -> Result<Vec<OutboxEntry>> {
        match self {
            Store::Sled(s) => s.all_outbox(),
            Store::Postgres(p) => p.all_outbox().await,
        }
    }

    /// Per destination, its queued entries: how many wait for a first attempt and how many for a
    /// retry (for `status` and the console).
    pub(crate) async fn outbox_counts(&self) -> Result<HashMap<String, (u64, u64)>> {
        match self {
            Store::Sled(s) => s.outbox_counts(),
            Store::Postgres(p) => p.outbox_counts().await,
        }
    }

    /// The names of the destinations that have entries in the outbox.
    pub(crate) async fn outbox_destinations(&self) -> Result<BTreeSet<String>> {
        match self {
            Store::Sled(s) => s.outbox_destinations(),
            Store::Postgres(p) => p.outbox_destinations().await,
        }
    }

    /// How many flushes of a sled store have finished (PostgreSQL: none, it commits durably).
    #[cfg(test)]
    pub(crate) fn flushes_finished(&self) -> u64 {
        match self {
            Store::Sled(s) => s.flushes_finished(),
            Store::Postgres(_) => 0,
        }
    }

    /// One outbox entry (the tests read what a worker left).
    #[cfg(test)]
    pub(crate) async fn outbox_get(
        &self,
        destination: &str,
        seq: u64,
    ) -> Result<Option<OutboxEntry>> {
        match self {
            Store::Sled(s) => s.outbox_get(destination, seq),
            Store::Postgres(p) => p.outbox_get(destination, seq).await,
        }
    }

    /// Takes an outbox entry for one attempt. On sled (one process) that is reading it; on
    /// PostgreSQL it is a claim for `hold` that no other replica can take meanwhile (`None`: it is
    /// gone, or another replica holds it).
    pub(crate) async fn outbox_claim(
        &self,
        destination: &str,
        seq: u64,
        hold: Duration,
    ) -> Result<Option<OutboxEntry>> {
        match self {
            Store::Sled(s) => s.outbox_get(destination, seq),
            Store::Postgres(p) => p.outbox_claim(destination, seq, hold).await,
        }
    }

    /// The wake of an entry this store has just committed. On sled it carries a copy of the
    /// entry for its first attempt; on PostgreSQL every attempt claims the entry from the
    /// database, so no copy is made.
    pub fn wake_of(&self, entry: &OutboxEntry) -> Wake {
        Wake {
            destination: entry.destination.clone(),
            seq: entry.seq,
            due_ms: entry.next_attempt_ms,
            entry: match self {
                Store::Sled(_) => Some(Arc::new(entry.clone())),
                Store::Postgres(_) => None,
            },
        }
    }

    /// Replaces an outbox entry (after a failed attempt: attempts and next time updated), and
    /// gives up this replica's claim of it.
    pub(crate) async fn outbox_put(&self, entry: &OutboxEntry) -> Result<()> {
        match self {
            Store::Sled(s) => s.outbox_put(&entry.destination, entry.seq, entry),
            Store::Postgres(p) => p.outbox_put(entry).await,
        }
    }

    /// Removes a delivered entry and its attempt logs.
    pub(crate) async fn delivered(&self, destination: &str, seq: u64) -> Result<()> {
        match self {
            Store::Sled(s) => {
                s.outbox_remove(destination, seq)?;
                s.forget_attempts(seq)
            }
            Store::Postgres(p) => p.delivered(destination, seq).await,
        }
    }

    /// Number of outbox entries in all.
    pub async fn outbox_len(&self) -> Result<usize> {
        match self {
            Store::Sled(s) => Ok(s.outbox_len()),
            Store::Postgres(p) => p.outbox_len().await,
        }
    }

    /// Moves an entry from the outbox to the dead letters in one transaction.
    pub(crate) async fn outbox_to_dead(&self, dead_letter: &DeadLetter) -> Result<()> {
        match self {
            Store::Sled(s) => s.outbox_to_dead(
                &dead_letter.entry.destination,
                dead_letter.entry.seq,
                dead_letter,
            ),
            Store::Postgres(p) => p.outbox_to_dead(dead_letter).await,
        }
    }

    /// Appends one attempt's log line to a delivery, under its attempt number.
    pub async fn log_attempt(&self, seq: u64, log: &AttemptLog) -> Result<()> {
        match self {
            Store::Sled(s) => s.log_attempt(seq, log),
            Store::Postgres(p) => p.log_attempt(seq, log).await,
        }
    }

    /// Every attempt of a delivery, in order.
    pub async fn attempts(&self, seq: u64) -> Result<Vec<AttemptLog>> {
        match self {
            Store::Sled(s) => s.attempts(seq),
            Store::Postgres(p) => p.attempts(seq).await,
        }
    }

    /// Drops the attempt logs of a delivery.
    pub(crate) async fn forget_attempts(&self, seq: u64) -> Result<()> {
        match self {
            Store::Sled(s) => s.forget_attempts(seq),
            Store::Postgres(p) => p.forget_attempts(seq).await,
        }
    }

    /// Every destination marked failing.
    pub(crate) async fn failing_destinations(&self) -> Result<Vec<(String, DestHealth)>> {
        match self {
            Store::Sled(s) => s.failing_destinations(),
            Store::Postgres(p) => p.failing_destinations().await,
        }
    }

    /// Marks a destination failing, or clears the mark with `None`.
    pub(crate) async fn set_destination_failing(
        &self,
        destination: &str,
        health: Option<&DestHealth>,
    ) -> Result<()> {
        match self {
            Store::Sled(s) => s.set_destination_failing(destination, health),
            Store::Postgres(p) => p.set_destination_failing(destination, health).await,
        }
    }

    /// Every dead letter, oldest first: (seq, dead letter).
    pub async fn dead_entries(&self) -> Result<Vec<(u64, DeadLetter)>> {
        match self {
            Store::Sled(s) => s.dead_entries(),
            Store::Postgres(p) => p.dead_entries().await,
        }
    }

    /// One dead letter.
    pub async fn dead_get(&self, seq: u64) -> Result<Option<DeadLetter>> {
        match self {
            Store::Sled(s) => s.dead_get(seq),
            Store::Postgres(p) => p.dead_get(seq).await,
        }
    }

    /// Moves a dead letter back into its destination's outbox in one transaction.
    pub(crate) async fn dead_to_outbox(&self, entry: &OutboxEntry) -> Result<()> {
        match self {
            Store::Sled(s) => s.dead_to_outbox(entry.seq, &entry.destination, entry),
            Store::Postgres(p) => p.dead_to_outbox(entry).await,
        }
    }

    /// Deletes a dead letter and its attempts log.
    pub(crate) async fn dead_remove(&self, seq: u64) -> Result<()> {
        match self {
            Store::Sled(s) => s.dead_remove(seq),
            Store::Postgres(p) => p.dead_remove(seq).await,
        }
    }

    /// Number of dead letters.
    pub async fn dead_len(&self) -> Result<usize> {
        match self {
            Store::Sled(s) => Ok(s.dead_len()),
            Store::Postgres(p) => p.dead_len().await,
        }
    }

    /// Deletes the dead letters that died before `cutoff_ms` (Unix ms; `None`: every one) and
    /// their attempt logs, and returns how many went.
    pub(crate) async fn purge_dead(&self, cutoff_ms: Option<i64>) -> Result<usize> {
        match self {
            Store::Sled(s) => s.purge_dead(cutoff_ms),
            Store::Postgres(p) => p.purge_dead(cutoff_ms).await,
        }
    }

    /// Every change waiting in a digest, by destination and then sequence.
    pub async fn digest_members(&self) -> Result<Vec<DigestMember>> {
        match self {
            Store::Sled(s) => s.digest_members(),
            Store::Postgres(p) => p.digest_members().await,
        }
    }

    /// Turns digest members into one outbox entry in one transaction: the members of
    /// `destination` with these sequence numbers are removed and `entry` is written. Returns
    /// `false`, writing nothing, when one of them is gone already (another replica, or an earlier
    /// flush, took it), so no change is ever in two digests.
    pub(crate) async fn flush_digest(
        &self,
        destination: &str,
        seqs: &[u64],
        entry: &OutboxEntry,
    ) -> Result<bool> {
        match self {
            Store::Sled(s) => s.flush_digest(destination, seqs, entry),
            Store::Postgres(p) => p.flush_digest(destination, seqs, entry).await,
        }
    }

    // --- operator alerts ------------------------------------------------------------------

    /// Every destination's run of failed attempts since its last success.
    pub async fn failure_streaks(&self) -> Result<Vec<(String, FailureStreak)>> {
        match self {
            Store::Sled(s) => s.failure_streaks(),
            Store::Postgres(p) => p.failure_streaks().await,
        }
    }

    /// Counts one failed attempt of `destination` at `at`: the first since the last success
    /// starts a streak there, a later one adds to it (the streak keeps its start).
    pub(crate) async fn note_failure(
        &self,
        destination: &str,
        at: DateTime<Utc>,
        reason: &str,
    ) -> Result<()> {
        match self {
            Store::Sled(s) => s.note_failure(destination, at, reason),
            Store::Postgres(p) => p.note_failure(destination, at, reason).await,
        }
    }

    /// Ends `destination`'s run of failures (it delivered).
    pub(crate) async fn clear_failure_streak(&self, destination: &str) -> Result<()> {
        match self {
            Store::Sled(s) => s.clear_failure_streak(destination),
            Store::Postgres(p) => p.clear_failure_streak(destination).await,
        }
    }

    /// Every incident's state, by key.
    pub async fn incidents(&self) -> Result<Vec<(String, IncidentState)>> {
        match self {
            Store::Sled(s) => s.incidents(),
            Store::Postgres(p) => p.incidents().await,
        }
    }

    /// Moves incident `key` from `expected` (`None`: never stored) to `next` and queues `outbox`
    /// (the alert or the "recovered") in one transaction, only if the stored state still is
    /// `expected`; `false` (nothing written) when it is not: another replica moved it first.
    pub(crate) async fn incident_transition(
        &self,
        key: &str,
        expected: Option<&IncidentState>,
        next: &IncidentState,
        outbox: &[OutboxEntry],
    ) -> Result<bool> {
        match self {
            Store::Sled(s) => s.incident_transition(key, expected, next, outbox),
            Store::Postgres(p) => p.incident_transition(key, expected, next, outbox).await,
        }
    }
}
