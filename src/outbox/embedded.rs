//! The embedded sled store: one tree per purpose, keys namespaced by clinic and big-endian where
//! they carry a sequence number, so prefix scans come back in order. Its accessors take and give
//! typed values, encoded and decoded here, once; a value that cannot be read is a
//! [`StoreError::Decode`] naming what it was. Two things stay bytes: snapshots (a poll compares
//! them before decoding) and a [`PageWrite`] (its values are encoded by the poll that builds it).
//!
//! | tree          | key                                   | value                                 |
//! |---------------|---------------------------------------|---------------------------------------|
//! | `checkpoints` | clinic \0 resource                    | [`Checkpoint`] (JSON)                 |
//! | `polls`       | clinic \0 resource                    | [`PollStatus`] (JSON)                 |
//! | `snapshots`   | clinic \0 resource \0 record id       | the record as last fetched (JSON)     |
//! | `changes`     | seq (u64 BE) of a page's first change | the journal: a page's [`JournalEntry`]s, `[[seq, entry], ...]` (older stores: one entry per seq; both are read) |
//! | `outbox`      | destination \0 seq (u64 BE)           | an [`OutboxEntry`] (JSON), or, committed by a poll, a [`BodyRef`] and the entry's JSON with its body in a segment ([`crate::outbox::bodies`]) |
//! | `attempts`    | seq (u64 BE) attempt (u32 BE)         | an [`AttemptLog`] (JSON)              |
//! | `dead`        | seq (u64 BE)                          | a [`DeadLetter`] (JSON)               |
//! | `dest_health` | destination                           | [`DestHealth`] while it is failing    |
//! | `baselines`   | clinic \0 resource                    | [`Baseline`] (JSON)                   |
//! | `baseline_snapshots` | clinic \0 resource \0 record id | a record as the baseline read it (JSON), until merged into `snapshots` |
//! | `digest`      | destination \0 seq (u64 BE)           | a [`DigestMember`] (JSON): a change waiting in a digest |
//! | `meta`        | name                                  | `change_id_key` ([`crate::model::IdKey`], 32 bytes), one-time upgrades |
//! | `pending_pages` | id (u64 BE)                         | a [`PendingPage`] (JSON): a page being written, until it is whole |
//!
//! # Who can read it
//!
//! Every value is patient data. The folder is created 0700 and every file sled made is set to 0600
//! when the store opens, whatever the umask; a store whose files others could read is a warning
//! naming it, and is tightened (its folder only when this user owns it). Files sled creates later
//! (`snap.*` snapshot files, `blobs/`) are out of others' reach because the folder is (the body
//! segments in `outbox-bodies/` are made 0600 in a 0700 folder), and
//! [`Store::tighten_permissions`] (run with the daemon's maintenance) sets them to 0600 too. The
//! process umask is left alone: no global state changes for the sake of one folder.
//!
//! # Why a `kill -9` at any instant loses nothing
//!
//! * Of the changes of one page, after a crash either all of a change's writes are there (its
//!   snapshot, journal entry and outbox entries) or none is ([`Store::commit_page`]). The page is
//!   written under a [`PendingPage`] marker, the snapshots last (and the outbox entries' bodies,
//!   kept apart in [`crate::outbox::bodies`], are synced before the marker); sled's log recovers a prefix of
//!   the writes in the order made, and the next open takes back the traces of every change whose
//!   snapshot did not land. A page larger than one chunk ([`crate::ingest::client::CHUNK_RECORDS`])
//!   is committed a chunk at a time: a crash between two chunks leaves part of the page stored,
//!   which is the case of a poll stopped between two pages (below): the checkpoint has not moved,
//!   the window is read again, and the stored chunks compare equal.
//! * The checkpoint advances only after every page of a poll is stored *and flushed to disk*
//!   ([`Store::set_checkpoint`] flushes before and after writing it). A crash before that leaves the
//!   old checkpoint, so the next poll reads the same window again.
//! * Reading a window again is harmless: pages that were stored compare equal to their snapshots and
//!   produce nothing; pages that were lost are detected again, and since a change's id is a hash of
//!   its content under the store's own key ([`crate::model::Change::change_id`], the key made once
//!   in `meta` and flushed before any id is used), the re-detected change has the same
//!   `webhook-id` as the lost one would have had.
//! * Nothing is sent before it is on disk: the poller flushes a page before it hands the page's
//!   deliveries to the workers (and `once` flushes before delivering). Otherwise a crash could
//!   lose a page whose webhook already went out, and if the record changed before the restart the
//!   re-detected change would differ (a second `added`, under another `webhook-id`).
//! * An outbox entry is removed only after its delivery succeeded (or moved to `dead` in one
//!   transaction). A crash between the success and the flush of the removal re-sends it: at least
//!   once, with the same `webhook-id`.

use super::bodies::{self, BodyLog, BodyRef};
use super::store::{
    decode, encode, DestHealth, Due, Dump, Erased, JournalWrite, PageWrite, Result, StoreError,
    DEAD_LETTER, DIGEST_MEMBER, JOURNAL_ENTRY, OUTBOX_ENTRY, SLIM_JOURNAL,
};
use crate::ingest::state::{Baseline, Checkpoint, PollStatus};
use crate::model::IdKey;
use crate::outbox::entry::{
    default_clinic, AttemptLog, DeadLetter, DigestMember, JournalEntry, OutboxEntry,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The sled database and its trees.
#[derive(Clone)]
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    checkpoints: sled::Tree,
    polls: sled::Tree,
    snapshots: sled::Tree,
    changes: sled::Tree,
    outbox: sled::Tree,
    attempts: sled::Tree,
    dead: sled::Tree,
    dest_health: sled::Tree,
    meta: sled::Tree,
    /// The key of every change id this store hands out (see [`Store::id_key`]).
    id_key: Arc<IdKey>,
    baselines: sled::Tree,
    baseline_snapshots: sled::Tree,
    /// Changes waiting in digests.
    digest: sled::Tree,
    /// The pages being committed (see [`PendingPage`]).
    pending: sled::Tree,
    /// False while the attempts log is known to be empty (it was empty at open and nothing has been
    /// logged since), so a delivery that never failed skips the prefix scan when it is removed.
    attempts_used: Arc<AtomicBool>,
    /// One flush at a time, shared by whoever asked for it meanwhile (see [`Store::flush`]).
    flushes: Arc<FlushGate>,
    /// The bodies of the outbox entries polls committed.
    bodies: Arc<BodyLog>,
}

/// Serializes flushes and lets a caller skip its own when a whole flush began after it asked:
/// that flush wrote everything the caller had written. A fleet's pollers each flush around
/// their checkpoints; this way a burst of them costs one or two fsyncs, not one each.
#[derive(Debug, Default)]
struct FlushGate {
    /// Held while a flush runs.
    lock: tokio::sync::Mutex<()>,
    /// How many flushes have begun.
    begun: std::sync::atomic::AtomicU64,
    /// How many flushes have finished (the tests check what waited for one).
    #[cfg(test)]
    finished: std::sync::atomic::AtomicU64,
}

/// Joins key parts with a NUL separator (names are validated to contain none).
fn key(parts: &[&str]) -> Vec<u8> {
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

/// Whether a journal value is a page of entries (see [`journal_page`]).
fn is_journal_page(v: &[u8]) -> bool {
    v.first() == Some(&b'[')
}

/// A page's journal entries as one value under the first entry's seq, `[[seq, entry], ...]`:
/// one insert per page instead of one per change (sled's cost grows with the entries a
/// transaction writes, much less with their size). `None` for a page without changes.
fn journal_page(changes: &[JournalWrite]) -> Option<([u8; 8], Vec<u8>)> {
    let first = changes.first()?;
    let len = changes.iter().map(|c| c.value.len() + 24).sum::<usize>() + 2;
    let mut v = Vec::with_capacity(len);
    v.push(b'[');
    for (i, c) in changes.iter().enumerate() {
        if i > 0 {
            v.push(b',');
        }
        v.push(b'[');
        v.extend_from_slice(c.seq.to_string().as_bytes());
        v.push(b',');
        v.extend_from_slice(&c.value);
        v.push(b']');
    }
    v.push(b']');
    Some((first.seq.to_be_bytes(), v))
}

/// The entries of one journal value: a page's, or the single entry keyed by its seq that
/// stores wrote before pages (both forms are read; neither is rewritten).
fn journal_value<T: for<'de> Deserialize<'de>>(k: &[u8], v: &[u8]) -> Result<Vec<(u64, T)>> {
    if is_journal_page(v) {
        return decode(JOURNAL_ENTRY, v);
    }
    let seq = u64::from_be_bytes(k.try_into().unwrap_or([0; 8]));
    Ok(vec![(seq, decode(JOURNAL_ENTRY, v)?)])
}

/// A journal value written again without the entries `drop` marks (by position): a page whose
/// other entries stay (pruning across the cutoff, erasing one record).
fn journal_without(k: &[u8], v: &[u8], drop: &[bool]) -> Result<Vec<u8>> {
    let kept: Vec<(u64, serde_json::Value)> = journal_value(k, v)?
        .into_iter()
        .zip(drop)
        .filter(|(_, d)| !**d)
        .map(|(e, _)| e)
        .collect();
    Ok(encode(&kept))
}

/// A page being committed, written before its other writes and removed after them, so a page
/// a crash cuts short is found when the store next opens.
///
/// A page is not written in a sled transaction: sled runs every transaction under one lock of
/// the whole process, and while it is held no other read or write of any tree goes on (the
/// next chunk's reads, every delivery's). Instead the writes follow an order: this marker, the
/// journal page, the outbox entries and dead letters, and the snapshots last. sled's log
/// recovers a prefix of the writes in the order they were made (its recovery stops at the first
/// message that is not whole), so after a crash every snapshot of the page that is there has
/// its change's traces there too. At the next open, for every marker left, the traces of the
/// changes whose snapshot is not there are taken back ([`SledStore::undo_cut_pages`]); the
/// checkpoint did not move, the window is read again, and exactly those changes are detected
/// again, under the same change ids. A page this does not describe (digest members, whose link
/// to their change is not kept here) is written in one transaction.
#[derive(Debug, serde::Serialize, Deserialize)]
struct PendingPage {
    clinic: String,
    resource: String,
    /// The key (first seq) of the page's journal value.
    journal: Option<u64>,
    /// The snapshots in the order written: record id, [`version_hash`] of the version, and the
    /// seq of its change.
    snapshots: Vec<(String, u64, u64)>,
    /// The outbox entries: destination, seq, and the seq of their change.
    outbox: Vec<(String, u64, u64)>,
    /// The dead letters: seq, and the seq of their change.
    dead: Vec<(u64, u64)>,
}

impl PendingPage {
    /// The marker of a page whose snapshots are its changes' one for one (as a poll writes
    /// them), else `None`.
    fn of(clinic: &str, resource: &str, page: &PageWrite) -> Option<PendingPage> {
        let one_for_one = page.snapshots.len() == page.changes.len()
            && page
                .snapshots
                .iter()
                .zip(&page.changes)
                .all(|((id, _), c)| *id == c.record_id);
        if !one_for_one || page.snapshots.is_empty() || !page.digest.is_empty() {
            return None;
        }
        Some(PendingPage {
            clinic: clinic.to_string(),
            resource: resource.to_string(),
            journal: page.changes.first().map(|c| c.seq),
            snapshots: page
                .snapshots
                .iter()
                .zip(&page.changes)
                .map(|((id, v), c)| (id.clone(), version_hash(v), c.seq))
                .collect(),
            outbox: page
                .outbox
                .iter()
                .map(|e| (e.destination.clone(), e.seq, e.change_seq))
                .collect(),
            dead: page
                .dead
                .iter()
                .map(|d| (d.entry.seq, d.entry.change_seq))
                .collect(),
        })
    }
}

/// Tells one stored version of a record from another: its length and CRC-32. Two versions that
/// collide count as landed, which costs a duplicate delivery at worst, never a lost change.
fn version_hash(v: &[u8]) -> u64 {
    ((v.len() as u64) << 32) | u64::from(crc32fast::hash(v))
}

/// The outbox key of a delivery.
pub fn outbox_key(destination: &str, seq: u64) -> Vec<u8> {
    let mut k = prefix(&[destination]);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Reads the sequence number at the end of an outbox key.
fn seq_of_outbox_key(k: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = k.get(k.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// Where in the `meta` tree the change-id key is kept.
const ID_KEY: &[u8] = b"change_id_key";

/// Journal entries rewritten per batch by [`SledStore::slim_journal_once`]: bounds the memory
/// of an upgrade of a long journal.
const REWRITE_BATCH: usize = 1000;

/// Reads the change-id key, or makes one when the store has none (a new store, or one from before
/// ids were keyed: the ids already in its outbox entries stay as they are). A new key is flushed
/// before it is used, so no id goes out under a key a crash could lose.
fn load_or_make_id_key(db: &sled::Db) -> Result<IdKey> {
    let meta = db.open_tree("meta")?;
    let fresh = IdKey::random_bytes();
    // Compare-and-swap: if the key appeared meanwhile, the stored one wins.
    let stored = match meta.compare_and_swap(ID_KEY, None as Option<&[u8]>, Some(&fresh[..]))? {
        Ok(()) => {
            meta.flush()?;
            fresh.to_vec()
        }
        Err(current) => current.current.map(|v| v.to_vec()).unwrap_or_default(),
    };
    let bytes: [u8; IdKey::LEN] = stored
        .as_slice()
        .try_into()
        .map_err(|_| StoreError::Decode {
            what: "change-id key",
            source: serde_json::Error::io(std::io::Error::other(format!(
                "the key in the meta tree is {} bytes long, not {}",
                stored.len(),
                IdKey::LEN
            ))),
        })?;
    Ok(IdKey::from_bytes(&bytes))
}

/// How long [`SledStore::open`] waits for the store's file lock before it reports
/// [`StoreError::Locked`]. The lock is released only when sled's last background write of a
/// store that was just closed has finished (in this process, or in one that is still exiting
/// after a restart), which takes milliseconds; a store another running process holds stays
/// locked for the whole wait, and the error then names it.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How often [`SledStore::open`] tries the lock again while it waits.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// The mode of the store folder (and its subfolders): its owner only.
pub(crate) const DIR_MODE: u32 = 0o700;
/// The mode of every file in the store: its owner only.
pub(crate) const FILE_MODE: u32 = 0o600;

/// What was loose about an existing store folder before it was opened.
#[derive(Debug, Clone, Copy)]
struct Loose {
    /// The folder's permission bits (some for group or others).
    dir_mode: u32,
    /// Files in it that group or others may read.
    readable_files: usize,
}

/// Creates the store folder with [`DIR_MODE`], or inspects an existing one: `Some` when it lets
/// group or others in.
fn prepare_dir(path: &Path) -> std::io::Result<Option<Loose>> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(path)?;
            // The umask may have taken bits from the owner too.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE))?;
            Ok(None)
        }
        Err(e) => Err(e),
        // Not a folder: sled's own open reports it.
        Ok(m) if !m.is_dir() => Ok(None),
        Ok(m) => {
            let dir_mode = m.permissions().mode() & 0o7777;
            if dir_mode & 0o077 == 0 {
                return Ok(None);
            }
            let mut readable_files = 0;
            walk(path, &mut |_, m| {
                if m.is_file() && m.permissions().mode() & 0o044 != 0 {
                    readable_files += 1;
                }
                Ok(())
            })?;
            Ok(Some(Loose {
                dir_mode,
                readable_files,
            }))
        }
    }
}

/// Calls `f` on every folder and file below `dir` (not `dir` itself), not following symbolic
/// links; an entry sled removes meanwhile (an old snapshot file) is skipped.
fn walk(
    dir: &Path,
    f: &mut dyn FnMut(&Path, &std::fs::Metadata) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let m = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let p = entry.path();
            f(&p, &m)?;
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok(())
}

/// Sets `p` to `want` when its mode allows group or others anything; 1 when it changed it.
fn tighten(p: &Path, m: &std::fs::Metadata, want: u32) -> std::io::Result<usize> {
    use std::os::unix::fs::PermissionsExt;
    if m.permissions().mode() & 0o077 == 0 {
        return Ok(0);
    }
    match std::fs::set_permissions(p, std::fs::Permissions::from_mode(want)) {
        Ok(()) => Ok(1),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Sets every folder below `dir` to [`DIR_MODE`] and every file to [`FILE_MODE`] where they allow
/// more; returns how many it changed. `dir` itself is handled at open (see [`Store::open`]).
fn tighten_below(dir: &Path) -> std::io::Result<usize> {
    let mut changed = 0;
    walk(dir, &mut |p, m| {
        if m.is_dir() {
            changed += tighten(p, m, DIR_MODE)?;
        } else if m.is_file() {
            changed += tighten(p, m, FILE_MODE)?;
        }
        Ok(())
    })?;
    Ok(changed)
}

/// After sled opened the store: tightens the folder and everything in it, and says so when the
/// store was readable by others before (a warning) or its folder cannot be tightened.
fn tighten_at_open(path: &Path, loose: Option<Loose>) {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let below = tighten_below(path);
    let dir = match loose {
        None => Ok(()),
        Some(_) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE)),
    };
    if let Err(e) = &below {
        tracing::warn!(path = %shown, "cannot make the store's files readable by this user only: {e}");
    }
    let Some(l) = loose else {
        return;
    };
    let files_ok = below.is_ok();
    match (&dir, l.readable_files > 0) {
        (Ok(()), true) => tracing::warn!(
            path = %shown,
            "the store could be read by other users (folder mode {:o}, {} files readable by others); tightened the folder to {DIR_MODE:o} and its files to {FILE_MODE:o}",
            l.dir_mode, l.readable_files
        ),
        (Err(e), true) => tracing::warn!(
            path = %shown,
            "the store could be read by other users (folder mode {:o}, {} files readable by others); {} but the folder cannot be changed ({e}): make it {DIR_MODE:o}, owned by the notifier's user",
            l.dir_mode, l.readable_files,
            if files_ok { "its files are now readable by this user only" } else { "its files could not all be tightened" }
        ),
        // Others could list the folder but read none of its files.
        (Ok(()), false) => tracing::info!(
            path = %shown,
            "the store folder was mode {:o}; tightened it to {DIR_MODE:o}",
            l.dir_mode
        ),
        (Err(e), false) => tracing::info!(
            path = %shown,
            "the store folder is mode {:o} and cannot be changed ({e}); its files are readable by this user only",
            l.dir_mode
        ),
    }
}

/// One record's bytes in a tree keyed by clinic, resource and record id (the snapshots and the
/// baseline's records are laid out alike).
fn record_in(
    tree: &sled::Tree,
    clinic: &str,
    resource: &str,
    id: &str,
) -> Result<Option<sled::IVec>> {
    Ok(tree.get(key(&[clinic, resource, id]))?)
}

/// How many records of one resource a tree laid out as [`record_in`] reads holds.
fn count_in(tree: &sled::Tree, clinic: &str, resource: &str) -> usize {
    tree.scan_prefix(prefix(&[clinic, resource])).count()
}

impl SledStore {
    /// Opens (or creates) the store at `path` with a page cache of `cache_bytes`. The folder and
    /// its files are made readable by this user only (see the module docs).
    pub(crate) fn open(path: &Path, cache_bytes: u64) -> Result<SledStore> {
        let shown = path.display().to_string();
        let loose = prepare_dir(path).map_err(|e| StoreError::Open {
            path: shown.clone(),
            source: sled::Error::Io(e),
        })?;
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            // sled flushes on its own every 500 ms as well; the places that need durability flush
            // explicitly (see the module docs), this only bounds the loss of attempt logs.
            .flush_every_ms(Some(500));
        let waited_since = std::time::Instant::now();
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(io))
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("lock") =>
                {
                    if waited_since.elapsed() >= LOCK_WAIT {
                        return Err(StoreError::Locked { path: shown });
                    }
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(e) => {
                    return Err(StoreError::Open {
                        path: shown,
                        source: e,
                    })
                }
            }
        };
        let attempts = db.open_tree("attempts")?;
        let id_key = Arc::new(load_or_make_id_key(&db)?);
        let outbox = db.open_tree("outbox")?;
        let mut refs = Vec::new();
        for v in outbox.iter().values() {
            refs.extend(BodyRef::of_stored(&v?).map(|(r, _)| r));
        }
        let bodies = BodyLog::open(path, refs).map_err(|e| StoreError::Open {
            path: path.join(bodies::DIR).display().to_string(),
            source: sled::Error::Io(e),
        })?;
        let store = SledStore {
            bodies: Arc::new(bodies),
            id_key,
            path: path.to_path_buf(),
            attempts_used: Arc::new(AtomicBool::new(!attempts.is_empty())),
            flushes: Arc::default(),
            attempts,
            checkpoints: db.open_tree("checkpoints")?,
            polls: db.open_tree("polls")?,
            snapshots: db.open_tree("snapshots")?,
            changes: db.open_tree("changes")?,
            outbox,
            dead: db.open_tree("dead")?,
            dest_health: db.open_tree("dest_health")?,
            meta: db.open_tree("meta")?,
            baselines: db.open_tree("baselines")?,
            baseline_snapshots: db.open_tree("baseline_snapshots")?,
            digest: db.open_tree("digest")?,
            pending: db.open_tree("pending_pages")?,
            db,
        };
        // sled has just created its files with the process umask.
        tighten_at_open(path, loose);
        store.undo_cut_pages()?;
        Ok(store)
    }

    /// Sets the folders and files in the store to 0700 and 0600 where they allow more (files sled
    /// made since the last call); returns how many it changed. A failure is logged, not returned:
    /// the store folder's own mode already keeps others out.
    pub(crate) fn tighten_permissions(&self) -> usize {
        match tighten_below(&self.path) {
            Ok(n) => {
                if n > 0 {
                    tracing::debug!(path = %self.path.display(), changed = n, "tightened store file modes");
                }
                n
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "cannot tighten the store's file modes: {e}");
                0
            }
        }
    }

    /// The store folder.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The stored records of the ids asked for that are there: the snapshots, or with `baseline`
    /// the records the baseline read apart.
    pub(crate) fn records_raw(
        &self,
        baseline: bool,
        clinic: &str,
        resource: &str,
        ids: &[&str],
    ) -> Result<HashMap<String, Vec<u8>>> {
        let tree = if baseline {
            &self.baseline_snapshots
        } else {
            &self.snapshots
        };
        let mut found = HashMap::new();
        for id in ids {
            if let Some(v) = record_in(tree, clinic, resource, id)? {
                found.insert(id.to_string(), v.to_vec());
            }
        }
        Ok(found)
    }

    /// Reads everything the store holds, for a copy into another store. A value that cannot be
    /// decoded where its columns must be read from it (a journal entry, an outbox entry, a dead
    /// letter) is an error: a copy that drops something would lose it.
    pub(crate) fn export(&self) -> Result<Dump> {
        fn split(k: &[u8], n: usize) -> Vec<String> {
            k.splitn(n, |b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect()
        }
        #[derive(Deserialize)]
        struct JournalKey {
            #[serde(rename = "clinic", alias = "source")]
            clinic: String,
            resource: String,
            id: String,
            detected_at: DateTime<Utc>,
        }
        let mut d = Dump {
            id_key: self
                .meta
                .get(ID_KEY)?
                .map(|v| v.to_vec())
                .unwrap_or_default(),
            ..Dump::default()
        };
        for kv in self.meta.iter() {
            let (k, v) = kv?;
            if k.as_ref() != ID_KEY {
                // PostgreSQL's text names hold no NUL: the parts are joined as it names them.
                let name = String::from_utf8_lossy(&k).replace('\0', ":");
                d.meta.push((name, v.to_vec()));
            }
        }
        for (table, tree) in [
            ("checkpoints", &self.checkpoints),
            ("poll_status", &self.polls),
            ("baselines", &self.baselines),
        ] {
            for kv in tree.iter() {
                let (k, v) = kv?;
                let parts = split(&k, 2);
                if let [clinic, resource] = parts.as_slice() {
                    d.keyed
                        .push((table, clinic.clone(), resource.clone(), v.to_vec()));
                }
            }
        }
        for (baseline, tree) in [(false, &self.snapshots), (true, &self.baseline_snapshots)] {
            for kv in tree.iter() {
                let (k, v) = kv?;
                let parts = split(&k, 3);
                if let [clinic, resource, id] = parts.as_slice() {
                    d.records.push((
                        baseline,
                        clinic.clone(),
                        resource.clone(),
                        id.clone(),
                        v.to_vec(),
                    ));
                }
            }
        }
        for kv in self.changes.iter() {
            let (k, v) = kv?;
            for (seq, entry) in journal_value::<serde_json::Value>(&k, &v)? {
                let j: JournalKey =
                    serde_json::from_value(entry.clone()).map_err(|source| StoreError::Decode {
                        what: "change",
                        source,
                    })?;
                d.journal.push((
                    seq,
                    j.clinic,
                    j.resource,
                    j.id,
                    j.detected_at,
                    encode(&entry),
                ));
            }
        }
        d.outbox = self.all_outbox()?;
        for kv in self.attempts.iter() {
            let (k, v) = kv?;
            if k.len() == 12 {
                let seq = u64::from_be_bytes(k[..8].try_into().unwrap_or([0; 8]));
                let attempt = u32::from_be_bytes(k[8..].try_into().unwrap_or([0; 4]));
                d.attempts.push((seq, attempt, v.to_vec()));
            }
        }
        d.dead = self.dead_entries()?.into_iter().map(|(_, l)| l).collect();
        for kv in self.dest_health.iter() {
            let (k, v) = kv?;
            d.dest_health
                .push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        d.digest = self.digest_members()?;
        d.next_id = self.db.generate_id()?;
        Ok(d)
    }

    /// The key of this store's change ids (`webhook-id`, email `Message-ID`): made once, at the
    /// first open, and the same at every later open.
    pub(crate) fn id_key(&self) -> &IdKey {
        &self.id_key
    }

    /// A fresh, unique, increasing id (sled persists its generator across restarts).
    pub(crate) fn next_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    /// Writes everything buffered to disk and waits for it.
    pub(crate) async fn flush(&self) -> Result<()> {
        // A read-modify-write, not a load: the flush that later counts itself reads from it, so
        // this caller's writes happen before that flush begins.
        let asked = self.flushes.begun.fetch_add(0, Ordering::SeqCst);
        let _turn = self.flushes.lock.lock().await;
        // Flushes run one at a time: one that began after this call had finished by the time
        // the lock came free, and it wrote this caller's writes too.
        if self.flushes.begun.load(Ordering::SeqCst) > asked {
            return Ok(());
        }
        self.flushes.begun.fetch_add(1, Ordering::SeqCst);
        // Not sled's `flush_async`: it runs the flush on sled's own small thread pool, and enough
        // of them in flight at once take every thread of it while the writes they wait for need
        // one (sled issues 1241 and 1308): the store stops. The blocking flush runs on tokio's
        // blocking pool instead, so no async worker waits on the disk either.
        // Segments no entry refers to go once the removals that freed them are on disk.
        let doomed = self.bodies.doomed();
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(Err(e)) => {
                self.bodies.keep(doomed);
                Err(e.into())
            }
            Ok(Ok(_)) => {
                self.bodies.delete(doomed);
                #[cfg(test)]
                self.flushes.finished.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => {
                self.bodies.keep(doomed);
                Err(StoreError::Sled(sled::Error::Io(std::io::Error::other(
                    format!("the store flush task failed: {e}"),
                ))))
            }
        }
    }

    /// How many flushes have finished.
    #[cfg(test)]
    pub(crate) fn flushes_finished(&self) -> u64 {
        self.flushes.finished.load(Ordering::SeqCst)
    }

    // --- checkpoints and poll status ------------------------------------------------------

    /// The checkpoint of a resource, if it has ever been polled.
    pub(crate) fn checkpoint(&self, clinic: &str, resource: &str) -> Result<Option<Checkpoint>> {
        self.checkpoints
            .get(key(&[clinic, resource]))?
            .map(|v| decode("checkpoint", &v))
            .transpose()
    }

    /// Durably advances a checkpoint: flushes the pages written before it, writes it, flushes again.
    pub(crate) async fn set_checkpoint(
        &self,
        clinic: &str,
        resource: &str,
        cp: &Checkpoint,
    ) -> Result<()> {
        self.flush().await?;
        self.checkpoints
            .insert(key(&[clinic, resource]), encode(cp))?;
        self.flush().await
    }

    /// Writes a resource's first checkpoint and, when one is due, its baseline, in one transaction,
    /// flushed: a crash can leave neither or both, never a checkpoint whose baseline is lost.
    pub(crate) async fn set_first_checkpoint(
        &self,
        clinic: &str,
        resource: &str,
        cp: &Checkpoint,
        baseline: Option<&Baseline>,
    ) -> Result<()> {
        let k = key(&[clinic, resource]);
        let (cp, baseline) = (encode(cp), baseline.map(encode));
        let res: std::result::Result<(), TransactionError<()>> =
            (&self.checkpoints, &self.baselines).transaction(|(checkpoints, baselines)| {
                checkpoints.insert(k.as_slice(), cp.as_slice())?;
                if let Some(b) = &baseline {
                    baselines.insert(k.as_slice(), b.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        match res {
            Ok(()) | Err(TransactionError::Abort(())) => {}
            Err(TransactionError::Storage(e)) => return Err(StoreError::Sled(e)),
        }
        self.flush().await
    }

    /// The baseline of a resource, if it ever had one.
    pub(crate) fn baseline(&self, clinic: &str, resource: &str) -> Result<Option<Baseline>> {
        self.baselines
            .get(key(&[clinic, resource]))?
            .map(|v| decode("baseline", &v))
            .transpose()
    }

    /// Stores records the baseline read (those it has not read before), and with a page's last
    /// chunk its progress, in one transaction (not flushed: a crash re-reads a page or two, which
    /// is harmless).
    pub(crate) fn commit_baseline_chunk(
        &self,
        clinic: &str,
        resource: &str,
        snapshots: &[(String, Vec<u8>)],
        progress: Option<&Baseline>,
    ) -> Result<()> {
        let keys: Vec<(Vec<u8>, &[u8])> = snapshots
            .iter()
            .map(|(id, v)| (key(&[clinic, resource, id]), v.as_slice()))
            .collect();
        let (bk, progress) = (key(&[clinic, resource]), progress.map(encode));
        let res: std::result::Result<(), TransactionError<()>> =
            (&self.baseline_snapshots, &self.baselines).transaction(|(snaps, baselines)| {
                for (k, v) in &keys {
                    // The first version read is kept: a record read again (it moved to a later
                    // page when it changed, or its page is read again after a crash) changed
                    // after the origin, and the first poll from the origin compares with it.
                    if snaps.get(k.as_slice())?.is_none() {
                        snaps.insert(k.as_slice(), *v)?;
                    }
                }
                if let Some(p) = &progress {
                    baselines.insert(bk.as_slice(), p.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        match res {
            Ok(()) | Err(TransactionError::Abort(())) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }

    /// The number of records the baseline holds apart (before it is merged).
    pub(crate) fn baseline_snapshot_count(&self, clinic: &str, resource: &str) -> usize {
        count_in(&self.baseline_snapshots, clinic, resource)
    }

    /// Moves the baseline's records into the snapshots, where no newer version is stored, and
    /// returns how many moved. Idempotent, so a crash part-way only means doing the rest again.
    pub(crate) fn merge_baseline(&self, clinic: &str, resource: &str) -> Result<u64> {
        const BATCH: usize = 1_000;
        let mut moved = 0;
        loop {
            let batch: Vec<(sled::IVec, sled::IVec)> = self
                .baseline_snapshots
                .scan_prefix(prefix(&[clinic, resource]))
                .take(BATCH)
                .collect::<std::result::Result<_, _>>()?;
            if batch.is_empty() {
                return Ok(moved);
            }
            let mut into = sled::Batch::default();
            let mut out = sled::Batch::default();
            for (k, v) in &batch {
                if !self.snapshots.contains_key(k)? {
                    into.insert(k.clone(), v.clone());
                    moved += 1;
                }
                out.remove(k.clone());
            }
            // Into the snapshots first: a crash between the two leaves the records in both, and
            // the next merge finds them stored already.
            self.snapshots.apply_batch(into)?;
            self.baseline_snapshots.apply_batch(out)?;
        }
    }

    /// The last poll's status of a resource.
    pub(crate) fn poll_status(&self, clinic: &str, resource: &str) -> Result<PollStatus> {
        Ok(self
            .polls
            .get(key(&[clinic, resource]))?
            .map(|v| decode("poll status", &v))
            .transpose()?
            .unwrap_or_default())
    }

    /// Records the last poll's status (not flushed on its own: it is informational).
    pub(crate) fn set_poll_status(
        &self,
        clinic: &str,
        resource: &str,
        st: &PollStatus,
    ) -> Result<()> {
        self.polls.insert(key(&[clinic, resource]), encode(st))?;
        Ok(())
    }

    // --- snapshots and pages --------------------------------------------------------------

    /// The number of stored snapshots of a resource.
    pub(crate) fn snapshot_count(&self, clinic: &str, resource: &str) -> usize {
        count_in(&self.snapshots, clinic, resource)
    }

    /// Writes a page's snapshots, change journal entries, outbox entries and dead letters, all or
    /// (after a crash) none of the changes: see [`PendingPage`] for how, without a transaction.
    pub(crate) fn commit_page(&self, clinic: &str, resource: &str, page: &PageWrite) -> Result<()> {
        match PendingPage::of(clinic, resource, page) {
            Some(marker) => self.commit_page_marked(&marker, page, usize::MAX),
            None => self.commit_page_at_once(clinic, resource, page),
        }
    }

    /// Writes a page in the order [`PendingPage`] needs, under its marker; `writes` stops it
    /// after that many writes past the marker, as a crash would (the tests use it).
    fn commit_page_marked(
        &self,
        marker: &PendingPage,
        page: &PageWrite,
        writes: usize,
    ) -> Result<()> {
        // The bodies are on disk before sled holds anything of the page (see `outbox::bodies`).
        let values = self.outbox_values_apart(page)?;
        let marker_key = self.db.generate_id()?.to_be_bytes();
        if let Err(e) = self.pending.insert(marker_key, encode(marker)) {
            self.release_values(&values);
            return Err(e.into());
        }
        match self.write_marked(marker, page, &values, writes) {
            Ok(true) => {
                self.pending.remove(marker_key)?;
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => {
                // Undone now as the next open would, so a poll reading the window again in this
                // process detects the changes that did not land once, not twice. (The bodies of
                // entries never inserted stay counted, holding their segment until the next open
                // counts again: a rare cost of a failed write, never a lost body.)
                if let Err(undo) = self.undo_cut_page(&marker_key, marker) {
                    tracing::error!(error = %undo, "a page whose write failed could not be undone; the store's next open undoes it");
                }
                Err(e)
            }
        }
    }

    /// A page's outbox entries as [`SledStore::commit_page_marked`] writes them: the bodies
    /// left out of their JSON written to a segment and synced, the entries referring to them.
    fn outbox_values_apart<'p>(
        &self,
        page: &'p PageWrite,
    ) -> Result<Vec<std::borrow::Cow<'p, [u8]>>> {
        let encoded: Vec<_> = (0..page.outbox.len())
            .map(|i| page.outbox_value(i))
            .collect();
        let bodies: Vec<&[u8]> = page
            .outbox
            .iter()
            .zip(&encoded)
            .filter(|(_, (_, apart))| *apart)
            .map(|(e, _)| e.payload.body().unwrap_or_default().as_bytes())
            .collect();
        if bodies.is_empty() {
            return Ok(encoded.into_iter().map(|(v, _)| v).collect());
        }
        let mut refs = self
            .bodies
            .append(&bodies)
            .map_err(StoreError::Body)?
            .into_iter();
        Ok(encoded
            .into_iter()
            .map(|(v, apart)| match apart.then(|| refs.next()).flatten() {
                Some(r) => r.stored_with(&v).into(),
                None => v,
            })
            .collect())
    }

    /// Releases the bodies of outbox values that were not stored.
    fn release_values(&self, values: &[std::borrow::Cow<'_, [u8]>]) {
        for v in values {
            self.release_stored(v);
        }
    }

    /// Releases the body a stored outbox value refers to, if any: the value is gone from the
    /// tree (removed or replaced).
    fn release_stored(&self, value: &[u8]) {
        if let Some((r, _)) = BodyRef::of_stored(value) {
            self.bodies.release(&r);
        }
    }

    /// Decodes a stored outbox value, its body read from its segment if it is there.
    fn decode_entry(&self, value: &[u8]) -> Result<OutboxEntry> {
        let Some((r, json)) = BodyRef::of_stored(value) else {
            return decode(OUTBOX_ENTRY, value);
        };
        let mut entry: OutboxEntry = decode(OUTBOX_ENTRY, json)?;
        let body = self.bodies.read(&r).map_err(StoreError::Body)?;
        if let Some(slot) = entry.payload.body_mut() {
            *slot = body;
        }
        Ok(entry)
    }

    /// The writes of a marked page: the changes' traces first, the snapshots last. `Ok(false)`:
    /// stopped after `limit` writes.
    fn write_marked(
        &self,
        marker: &PendingPage,
        page: &PageWrite,
        values: &[std::borrow::Cow<'_, [u8]>],
        limit: usize,
    ) -> Result<bool> {
        let mut left = limit;
        let mut go = || {
            let more = left > 0;
            left = left.saturating_sub(1);
            more
        };
        if let Some((k, v)) = journal_page(&page.changes) {
            if !go() {
                return Ok(false);
            }
            self.changes.insert(k, v)?;
        }
        for (e, v) in page.outbox.iter().zip(values) {
            if !go() {
                return Ok(false);
            }
            self.outbox
                .insert(outbox_key(&e.destination, e.seq), v.as_ref())?;
        }
        for d in &page.dead {
            if !go() {
                return Ok(false);
            }
            self.dead.insert(d.entry.seq.to_be_bytes(), encode(d))?;
        }
        for (id, v) in &page.snapshots {
            if !go() {
                return Ok(false);
            }
            self.snapshots
                .insert(key(&[&marker.clinic, &marker.resource, id]), v.as_slice())?;
        }
        Ok(true)
    }

    /// Undoes what landed of the changes of every page a crash cut short (at open, before anything
    /// reads the store); returns how many changes were undone.
    fn undo_cut_pages(&self) -> Result<usize> {
        let mut undone = 0;
        for kv in self.pending.iter() {
            let (k, v) = kv?;
            let marker: PendingPage = decode("pending page", &v)?;
            undone += self.undo_cut_page(&k, &marker)?;
        }
        if undone > 0 {
            tracing::warn!(changes = undone, "a crash cut a page's write short: the changes it had not finished writing were taken back, and the next poll detects them again");
        }
        Ok(undone)
    }

    /// Takes back the journal entries, outbox entries and dead letters of the changes of a cut
    /// page whose snapshot did not land, then drops the marker; returns how many changes.
    fn undo_cut_page(&self, marker_key: &[u8], marker: &PendingPage) -> Result<usize> {
        // Per record, the versions the page wrote, in order; those after the version now
        // stored did not land (a version written twice counts as landed: a repeat costs a
        // duplicate at worst, never a change).
        let mut by_id: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
        for (id, version, change_seq) in &marker.snapshots {
            by_id.entry(id).or_default().push((*version, *change_seq));
        }
        let mut undone: HashSet<u64> = HashSet::new();
        for (id, versions) in by_id {
            let now = self
                .snapshots
                .get(key(&[&marker.clinic, &marker.resource, id]))?
                .map(|v| version_hash(&v));
            let landed = versions.iter().rposition(|(v, _)| Some(*v) == now);
            let first_lost = landed.map_or(0, |i| i + 1);
            undone.extend(versions[first_lost..].iter().map(|(_, seq)| *seq));
        }
        if !undone.is_empty() {
            for (destination, seq, change_seq) in &marker.outbox {
                if undone.contains(change_seq) {
                    if let Some(old) = self.outbox.remove(outbox_key(destination, *seq))? {
                        self.release_stored(&old);
                    }
                    self.forget_attempts(*seq)?;
                }
            }
            for (seq, change_seq) in &marker.dead {
                if undone.contains(change_seq) {
                    self.dead.remove(seq.to_be_bytes())?;
                }
            }
            if let Some(first) = marker.journal {
                let k = first.to_be_bytes();
                if let Some(v) = self.changes.get(k)? {
                    let seqs: Vec<u64> = journal_value::<serde::de::IgnoredAny>(&k, &v)?
                        .into_iter()
                        .map(|(seq, _)| seq)
                        .collect();
                    let drop: Vec<bool> = seqs.iter().map(|s| undone.contains(s)).collect();
                    if drop.iter().all(|d| *d) {
                        self.changes.remove(k)?;
                    } else {
                        self.changes.insert(k, journal_without(&k, &v, &drop)?)?;
                    }
                }
            }
        }
        self.pending.remove(marker_key)?;
        Ok(undone.len())
    }

    /// Writes a page in one sled transaction: the pages [`PendingPage`] does not describe.
    fn commit_page_at_once(&self, clinic: &str, resource: &str, page: &PageWrite) -> Result<()> {
        let snap_keys: Vec<(Vec<u8>, &[u8])> = page
            .snapshots
            .iter()
            .map(|(id, v)| (key(&[clinic, resource, id]), v.as_slice()))
            .collect();
        let outbox: Vec<(Vec<u8>, std::borrow::Cow<'_, [u8]>)> = page
            .outbox
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let v = match page.outbox_value(i) {
                    (v, false) => v,
                    // One transaction: the body goes inline, as every such value did before.
                    (_, true) => encode(e).into(),
                };
                (outbox_key(&e.destination, e.seq), v)
            })
            .collect();
        let journal = journal_page(&page.changes);
        let dead: Vec<([u8; 8], Vec<u8>)> = page
            .dead
            .iter()
            .map(|d| (d.entry.seq.to_be_bytes(), encode(d)))
            .collect();
        let digest: Vec<(Vec<u8>, Vec<u8>)> = page
            .digest
            .iter()
            .map(|m| (outbox_key(&m.destination, m.seq), encode(m)))
            .collect();
        let res: std::result::Result<(), TransactionError<()>> = (
            &self.snapshots,
            &self.changes,
            &self.outbox,
            &self.dead,
            &self.digest,
        )
            .transaction(|(snaps, changes, ob, de, dg)| {
                for (k, v) in &snap_keys {
                    snaps.insert(k.as_slice(), *v)?;
                }
                if let Some((k, v)) = &journal {
                    changes.insert(k, v.as_slice())?;
                }
                for (k, v) in &outbox {
                    ob.insert(k.as_slice(), v.as_ref())?;
                }
                for (k, v) in &dead {
                    de.insert(k, v.as_slice())?;
                }
                for (k, v) in &digest {
                    dg.insert(k.as_slice(), v.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        match res {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
            Err(TransactionError::Abort(())) => Ok(()),
        }
    }

    // --- change journal -------------------------------------------------------------------

    /// Every change in the journal, oldest first.
    pub(crate) fn changes(&self) -> Result<Vec<(u64, JournalEntry)>> {
        let mut all = Vec::new();
        for kv in self.changes.iter() {
            let (k, v) = kv?;
            all.extend(journal_value::<JournalEntry>(&k, &v)?);
        }
        Ok(all)
    }

    /// Rewrites journal entries stored in the form that held the whole change (the record and
    /// its previous version) to [`JournalEntry`]s, once per store: the first open after an
    /// upgrade does it, in batches, and records it in `meta`; later opens return 0 at once.
    /// Outbox entries, snapshots and checkpoints are untouched, so nothing is detected or sent
    /// again. Returns how many entries were rewritten.
    pub(crate) fn slim_journal_once(&self) -> Result<usize> {
        let marker = key(&["upgrade", SLIM_JOURNAL]);
        if self.meta.contains_key(&marker)? {
            return Ok(0);
        }
        let (mut rewritten, mut dropped) = (0, 0);
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for kv in self.changes.iter() {
            let (k, v) = kv?;
            // A page of entries was written in the current form.
            if is_journal_page(&v) {
                continue;
            }
            match JournalEntry::decode_any(&v, &self.id_key) {
                Some((_, false)) => {}
                Some((entry, true)) => {
                    batch.insert(k, encode(&entry));
                    in_batch += 1;
                }
                // Neither form: nothing can be read from it, and it may hold a record. The
                // journal is for inspection only, so it goes.
                None => {
                    batch.remove(k);
                    in_batch += 1;
                    dropped += 1;
                }
            }
            if in_batch == REWRITE_BATCH {
                self.changes.apply_batch(std::mem::take(&mut batch))?;
                rewritten += in_batch;
                in_batch = 0;
            }
        }
        self.changes.apply_batch(batch)?;
        rewritten += in_batch;
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "journal entries that could not be read in any known form were removed"
            );
        }
        self.meta.insert(marker, &b"done"[..])?;
        self.db.flush()?;
        Ok(rewritten)
    }

    /// The number of changes in the journal.
    pub(crate) fn change_count(&self) -> Result<usize> {
        let mut n = 0;
        for kv in self.changes.iter() {
            let (k, v) = kv?;
            n += if is_journal_page(&v) {
                journal_value::<serde::de::IgnoredAny>(&k, &v)?.len()
            } else {
                1
            };
        }
        Ok(n)
    }

    /// Drops journal entries detected before `cutoff`, oldest first, and returns how many went.
    /// The journal is for inspection (deliveries live in the outbox), so it is kept for a
    /// retention period only; the cost is proportional to what is removed.
    pub(crate) fn prune_changes_before(&self, cutoff: DateTime<Utc>) -> Result<usize> {
        #[derive(Deserialize)]
        struct Detected {
            detected_at: DateTime<Utc>,
        }
        let mut removed = 0;
        for kv in self.changes.iter() {
            let (k, v) = kv?;
            // An entry whose time cannot be read goes: the journal is for inspection only.
            let entries: Vec<(u64, Option<Detected>)> = journal_value(&k, &v).unwrap_or_default();
            let old = |d: &Option<Detected>| d.as_ref().is_none_or(|d| d.detected_at < cutoff);
            let gone = entries.iter().filter(|(_, d)| old(d)).count();
            if gone == 0 && !entries.is_empty() {
                break;
            }
            if gone == entries.len() {
                self.changes.remove(k)?;
                removed += gone.max(1);
                continue;
            }
            // A page detected across the cutoff keeps its newer entries, under its own key.
            let drop: Vec<bool> = entries.iter().map(|(_, d)| old(d)).collect();
            self.changes.insert(&k, journal_without(&k, &v, &drop)?)?;
            removed += gone;
            break;
        }
        Ok(removed)
    }

    /// Writes one journal value under `seq`, as versions before journal pages did (tests make an
    /// older version's store so).
    #[cfg(test)]
    pub(crate) fn put_journal_value(&self, seq: u64, value: &[u8]) -> Result<()> {
        self.changes.insert(seq.to_be_bytes(), value)?;
        Ok(())
    }

    /// Forgets that a one-time upgrade was done (tests make an older version's store so).
    #[cfg(test)]
    pub(crate) fn forget_upgrade(&self, upgrade: &str) -> Result<()> {
        self.meta.remove(key(&["upgrade", upgrade]))?;
        Ok(())
    }

    /// Runs `rewrite` over every snapshot once per store: the first call with a given `upgrade`
    /// name rewrites each snapshot it returns new bytes for (`rewrite(resource, id, bytes)`) and
    /// records the upgrade in `meta`; later calls return 0 at once. Returns how many changed.
    pub(crate) fn upgrade_snapshots_once(
        &self,
        upgrade: &str,
        rewrite: impl Fn(&str, &str, &[u8]) -> Option<Vec<u8>>,
    ) -> Result<usize> {
        let marker = key(&["upgrade", upgrade]);
        if self.meta.contains_key(&marker)? {
            return Ok(0);
        }
        let mut changed = 0;
        for kv in self.snapshots.iter() {
            let (k, v) = kv?;
            let mut parts = k.splitn(3, |b| *b == 0);
            let (Some(_source), Some(resource), Some(id)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (resource, id) = (
                String::from_utf8_lossy(resource),
                String::from_utf8_lossy(id),
            );
            if let Some(new) = rewrite(&resource, &id, &v) {
                self.snapshots.insert(k, new)?;
                changed += 1;
            }
        }
        self.meta.insert(marker, &b"done"[..])?;
        self.db.flush()?;
        Ok(changed)
    }

    /// Erases everything stored about one record: its snapshot, its change journal entries, its
    /// queued deliveries and dead letters and their attempt logs, in one transaction.
    pub(crate) fn erase_record(&self, clinic: &str, resource: &str, id: &str) -> Result<Erased> {
        #[derive(Deserialize)]
        struct JournalKey {
            #[serde(rename = "clinic", alias = "source")]
            clinic: String,
            resource: String,
            id: String,
        }
        #[derive(Deserialize)]
        struct EntryKey {
            #[serde(default = "default_clinic")]
            clinic: String,
            resource: String,
            record_id: String,
        }
        #[derive(Deserialize)]
        struct DeadKey {
            entry: EntryKey,
        }
        let is_it =
            |e: &EntryKey| e.clinic == clinic && e.resource == resource && e.record_id == id;
        let snap_key = key(&[clinic, resource, id]);
        let mut erased = Erased {
            snapshots: usize::from(self.snapshots.contains_key(&snap_key)?),
            ..Erased::default()
        };
        // Journal values to remove (`None`) or to write again without the record's entries.
        let mut changes: Vec<(sled::IVec, Option<Vec<u8>>)> = Vec::new();
        let mut erased_changes = 0;
        for kv in self.changes.iter() {
            let (k, v) = kv?;
            let Ok(entries) = journal_value::<Option<JournalKey>>(&k, &v) else {
                continue;
            };
            let hit = |c: &Option<JournalKey>| {
                c.as_ref()
                    .is_some_and(|c| c.clinic == clinic && c.resource == resource && c.id == id)
            };
            let hits = entries.iter().filter(|(_, c)| hit(c)).count();
            if hits == 0 {
                continue;
            }
            erased_changes += hits;
            if hits == entries.len() {
                changes.push((k, None));
                continue;
            }
            let drop: Vec<bool> = entries.iter().map(|(_, c)| hit(c)).collect();
            let kept = journal_without(&k, &v, &drop)?;
            changes.push((k, Some(kept)));
        }
        let mut outbox = Vec::new();
        let mut seqs = Vec::new();
        let mut erased_bodies = Vec::new();
        for kv in self.outbox.iter() {
            let (k, v) = kv?;
            if serde_json::from_slice::<EntryKey>(bodies::json_of(&v)).is_ok_and(|e| is_it(&e)) {
                seqs.extend(seq_of_outbox_key(&k));
                outbox.push(k);
                erased_bodies.extend(BodyRef::of_stored(&v).map(|(r, _)| r));
            }
        }
        let mut dead = Vec::new();
        for kv in self.dead.iter() {
            let (k, v) = kv?;
            if serde_json::from_slice::<DeadKey>(&v).is_ok_and(|d| is_it(&d.entry)) {
                seqs.extend(k.as_ref().try_into().ok().map(u64::from_be_bytes));
                dead.push(k);
            }
        }
        let mut attempts = Vec::new();
        for seq in seqs {
            for k in self.attempts.scan_prefix(seq.to_be_bytes()).keys() {
                attempts.push(k?);
            }
        }
        let mut digest = Vec::new();
        for kv in self.digest.iter() {
            let (k, v) = kv?;
            if serde_json::from_slice::<EntryKey>(&v).is_ok_and(|e| is_it(&e)) {
                digest.push(k);
            }
        }
        erased.digest = digest.len();
        erased.changes = erased_changes;
        erased.outbox = outbox.len();
        erased.dead = dead.len();
        erased.attempts = attempts.len();
        let res: std::result::Result<(), TransactionError<()>> = (
            &self.snapshots,
            &self.changes,
            &self.outbox,
            &self.dead,
            &self.attempts,
            &self.digest,
        )
            .transaction(|(snaps, ch, ob, de, at, dg)| {
                snaps.remove(snap_key.as_slice())?;
                for k in &digest {
                    dg.remove(k)?;
                }
                for (k, kept) in &changes {
                    match kept {
                        Some(v) => ch.insert(k, v.as_slice())?,
                        None => ch.remove(k)?,
                    };
                }
                for k in &outbox {
                    ob.remove(k)?;
                }
                for k in &dead {
                    de.remove(k)?;
                }
                for k in &attempts {
                    at.remove(k)?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        match res {
            Ok(()) | Err(TransactionError::Abort(())) => {
                // The erased entries' bodies are overwritten where they lie, not only forgotten.
                for r in &erased_bodies {
                    self.bodies.erase(r).map_err(StoreError::Body)?;
                }
                Ok(erased)
            }
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }

    // --- digests --------------------------------------------------------------------------

    /// Every digest member, by destination and then sequence.
    pub(crate) fn digest_members(&self) -> Result<Vec<DigestMember>> {
        self.digest
            .iter()
            .map(|kv| decode(DIGEST_MEMBER, &kv?.1))
            .collect()
    }

    /// Removes the members and writes the entry in one transaction over the `digest` and
    /// `outbox` trees; `false` (nothing written) when a member is gone already.
    pub(crate) fn flush_digest(
        &self,
        destination: &str,
        seqs: &[u64],
        entry: &OutboxEntry,
    ) -> Result<bool> {
        let keys: Vec<Vec<u8>> = seqs.iter().map(|s| outbox_key(destination, *s)).collect();
        let ek = outbox_key(&entry.destination, entry.seq);
        let ev = encode(entry);
        let res: std::result::Result<(), TransactionError<()>> = (&self.digest, &self.outbox)
            .transaction(|(dg, ob)| {
                for k in &keys {
                    if dg.remove(k.as_slice())?.is_none() {
                        return Err(ConflictableTransactionError::Abort(()));
                    }
                }
                ob.insert(ek.as_slice(), ev.as_slice())?;
                Ok(())
            });
        match res {
            Ok(()) => Ok(true),
            Err(TransactionError::Abort(())) => Ok(false),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }

    // --- outbox ---------------------------------------------------------------------------

    /// Every outbox entry of a destination, in sequence order: (seq, entry).
    pub(crate) fn outbox_entries(&self, destination: &str) -> Result<Vec<(u64, OutboxEntry)>> {
        self.outbox
            .scan_prefix(prefix(&[destination]))
            .map(|kv| {
                let (k, v) = kv?;
                Ok((seq_of_outbox_key(&k).unwrap_or(0), self.decode_entry(&v)?))
            })
            .collect()
    }

    /// When each outbox entry of a destination is due, in sequence order, one result per entry
    /// (only the due time is decoded), so a scheduler can queue every entry it can read even when
    /// one cannot be.
    pub(crate) fn outbox_due(&self, destination: &str) -> impl Iterator<Item = Result<Due>> + '_ {
        #[derive(Deserialize)]
        struct DueOnly {
            next_attempt_ms: i64,
        }
        self.outbox.scan_prefix(prefix(&[destination])).map(|kv| {
            let (k, v) = kv?;
            let d: DueOnly = decode(OUTBOX_ENTRY, bodies::json_of(&v))?;
            Ok(Due {
                seq: seq_of_outbox_key(&k).unwrap_or(0),
                at_ms: d.next_attempt_ms,
            })
        })
    }

    /// All outbox entries of all destinations, by destination and then sequence.
    pub(crate) fn all_outbox(&self) -> Result<Vec<OutboxEntry>> {
        self.outbox
            .iter()
            .values()
            .map(|v| self.decode_entry(&v?))
            .collect()
    }

    /// Per destination, its queued entries: how many wait for a first attempt and how many for a
    /// retry (for `status` and the console).
    pub(crate) fn outbox_counts(&self) -> Result<HashMap<String, (u64, u64)>> {
        // Only what is counted is decoded: no body is read.
        #[derive(Deserialize)]
        struct Counted {
            destination: String,
            attempts: u32,
        }
        let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
        for v in self.outbox.iter().values() {
            let e: Counted = decode(OUTBOX_ENTRY, bodies::json_of(&v?))?;
            let slot = counts.entry(e.destination).or_default();
            if e.attempts == 0 {
                slot.0 += 1;
            } else {
                slot.1 += 1;
            }
        }
        Ok(counts)
    }

    /// The names of the destinations that have entries in the outbox (nothing is decoded).
    pub(crate) fn outbox_destinations(&self) -> Result<std::collections::BTreeSet<String>> {
        self.outbox
            .iter()
            .keys()
            .map(|k| {
                let k = k?;
                let dest_end = k.len().saturating_sub(9);
                Ok(String::from_utf8_lossy(&k[..dest_end]).into_owned())
            })
            .collect()
    }

    /// One outbox entry.
    pub(crate) fn outbox_get(&self, destination: &str, seq: u64) -> Result<Option<OutboxEntry>> {
        self.outbox
            .get(outbox_key(destination, seq))?
            .map(|v| self.decode_entry(&v))
            .transpose()
    }

    /// Overwrites an outbox entry's stored bytes (tests of what an attempt reads).
    #[cfg(test)]
    pub(crate) fn outbox_put_raw(&self, destination: &str, seq: u64, bytes: &[u8]) {
        self.outbox
            .insert(outbox_key(destination, seq), bytes)
            .unwrap();
    }

    /// Whether an entry is in the outbox (no decode).
    pub(crate) fn outbox_contains(&self, destination: &str, seq: u64) -> Result<bool> {
        Ok(self.outbox.contains_key(outbox_key(destination, seq))?)
    }

    /// Replaces an outbox entry (after a failed attempt: attempts and next time updated).
    pub(crate) fn outbox_put(
        &self,
        destination: &str,
        seq: u64,
        entry: &OutboxEntry,
    ) -> Result<()> {
        // Written whole, body included: a retried entry holds no segment (see `bodies`).
        if let Some(old) = self
            .outbox
            .insert(outbox_key(destination, seq), encode(entry))?
        {
            self.release_stored(&old);
        }
        Ok(())
    }

    /// Removes a delivered entry.
    pub(crate) fn outbox_remove(&self, destination: &str, seq: u64) -> Result<()> {
        if let Some(old) = self.outbox.remove(outbox_key(destination, seq))? {
            self.release_stored(&old);
        }
        Ok(())
    }

    /// Number of outbox entries in all.
    pub(crate) fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Moves an entry from the outbox to the dead letters in one transaction.
    pub(crate) fn outbox_to_dead(
        &self,
        destination: &str,
        seq: u64,
        dead_letter: &DeadLetter,
    ) -> Result<()> {
        let k = outbox_key(destination, seq);
        // The dead letter holds the entry whole, body included.
        let dead_letter = encode(dead_letter);
        let res: std::result::Result<Option<sled::IVec>, TransactionError<()>> =
            (&self.outbox, &self.dead).transaction(|(outbox, dead)| {
                let old = outbox.remove(k.as_slice())?;
                dead.insert(&seq.to_be_bytes(), dead_letter.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(old)
            });
        match res {
            Ok(old) => {
                if let Some(old) = old {
                    self.release_stored(&old);
                }
                Ok(())
            }
            Err(TransactionError::Abort(())) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }

    // --- attempts log ---------------------------------------------------------------------

    /// Appends one attempt's log line to a delivery, under its attempt number.
    pub(crate) fn log_attempt(&self, seq: u64, log: &AttemptLog) -> Result<()> {
        let mut k = seq.to_be_bytes().to_vec();
        k.extend_from_slice(&log.attempt.to_be_bytes());
        // Set before the insert, so no clone of this store can miss it.
        self.attempts_used.store(true, Ordering::SeqCst);
        self.attempts.insert(k, encode(log))?;
        Ok(())
    }

    /// Every attempt of a delivery, in order.
    pub(crate) fn attempts(&self, seq: u64) -> Result<Vec<AttemptLog>> {
        self.attempts
            .scan_prefix(seq.to_be_bytes())
            .values()
            .map(|v| decode("attempt log", &v?))
            .collect()
    }

    /// Drops the attempt logs of a delivery.
    pub(crate) fn forget_attempts(&self, seq: u64) -> Result<()> {
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
    pub(crate) fn failing_destinations(&self) -> Result<Vec<(String, DestHealth)>> {
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
    pub(crate) fn set_destination_failing(
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

    /// Every dead letter, oldest first: (seq, dead letter).
    pub(crate) fn dead_entries(&self) -> Result<Vec<(u64, DeadLetter)>> {
        self.dead
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((
                    u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])),
                    decode(DEAD_LETTER, &v)?,
                ))
            })
            .collect()
    }

    /// One dead letter.
    pub(crate) fn dead_get(&self, seq: u64) -> Result<Option<DeadLetter>> {
        self.dead
            .get(seq.to_be_bytes())?
            .map(|v| decode(DEAD_LETTER, &v))
            .transpose()
    }

    /// Moves a dead letter back into a destination's outbox in one transaction.
    pub(crate) fn dead_to_outbox(
        &self,
        seq: u64,
        destination: &str,
        entry: &OutboxEntry,
    ) -> Result<()> {
        let k = outbox_key(destination, seq);
        let entry = encode(entry);
        let res: std::result::Result<(), TransactionError<()>> = (&self.outbox, &self.dead)
            .transaction(|(outbox, dead)| {
                dead.remove(&seq.to_be_bytes())?;
                outbox.insert(k.as_slice(), entry.as_slice())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        match res {
            Ok(()) | Err(TransactionError::Abort(())) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }

    /// Deletes a dead letter and its attempts log.
    pub(crate) fn dead_remove(&self, seq: u64) -> Result<()> {
        self.dead.remove(seq.to_be_bytes())?;
        self.forget_attempts(seq)
    }

    /// Number of dead letters.
    pub(crate) fn dead_len(&self) -> usize {
        self.dead.len()
    }

    /// Deletes the dead letters that died before `cutoff_ms` (Unix ms; `None`: every one) and
    /// their attempt logs, and returns how many went. Dead letters are keyed by delivery, not by
    /// when they died, so each is looked at (only its `died_ms` is decoded); one that cannot be
    /// read is of no use to anyone and goes too.
    pub(crate) fn purge_dead(&self, cutoff_ms: Option<i64>) -> Result<usize> {
        #[derive(Deserialize)]
        struct Died {
            died_ms: i64,
        }
        let mut removed = 0;
        for kv in self.dead.iter() {
            let (k, v) = kv?;
            let old = cutoff_ms
                .is_none_or(|c| serde_json::from_slice::<Died>(&v).map_or(true, |d| d.died_ms < c));
            if !old {
                continue;
            }
            let Ok(seq) = <[u8; 8]>::try_from(k.as_ref()).map(u64::from_be_bytes) else {
                self.dead.remove(k)?;
                removed += 1;
                continue;
            };
            self.dead_remove(seq)?;
            removed += 1;
        }
        Ok(removed)
    }
}

// --- operator alerts ----------------------------------------------------------------------
//
// Two trees of their own, opened by name when used (sled keeps opened trees): `dest_streaks`
// (destination → `FailureStreak`) and `incidents` (incident key → `IncidentState`).

/// The tree of destinations' runs of failed attempts.
const STREAKS_TREE: &str = "dest_streaks";
/// The tree of operator-alert incidents.
const INCIDENTS_TREE: &str = "incidents";

impl SledStore {
    /// Every destination's run of failed attempts since its last success.
    pub(crate) fn failure_streaks(&self) -> Result<Vec<(String, super::store::FailureStreak)>> {
        self.db
            .open_tree(STREAKS_TREE)?
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    decode("failure streak", &v)?,
                ))
            })
            .collect()
    }

    /// Counts one failed attempt (atomically: the streak keeps its first failure's time).
    pub(crate) fn note_failure(
        &self,
        destination: &str,
        at: chrono::DateTime<chrono::Utc>,
        reason: &str,
    ) -> Result<()> {
        self.db
            .open_tree(STREAKS_TREE)?
            .update_and_fetch(destination.as_bytes(), |old| {
                let old: Option<super::store::FailureStreak> =
                    old.and_then(|v| serde_json::from_slice(v).ok());
                let next = match old {
                    Some(s) => super::store::FailureStreak {
                        since: s.since,
                        failures: s.failures.saturating_add(1),
                        reason: reason.to_string(),
                    },
                    None => super::store::FailureStreak {
                        since: at,
                        failures: 1,
                        reason: reason.to_string(),
                    },
                };
                Some(encode(&next))
            })?;
        Ok(())
    }

    /// Ends a destination's run of failures.
    pub(crate) fn clear_failure_streak(&self, destination: &str) -> Result<()> {
        self.db
            .open_tree(STREAKS_TREE)?
            .remove(destination.as_bytes())?;
        Ok(())
    }

    /// Every incident's state, by key.
    pub(crate) fn incidents(&self) -> Result<Vec<(String, super::store::IncidentState)>> {
        self.db
            .open_tree(INCIDENTS_TREE)?
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    decode("incident", &v)?,
                ))
            })
            .collect()
    }

    /// Moves an incident from `expected` to `next` and queues `outbox` in one transaction, when
    /// the stored state is still `expected`; flushed before it returns, so an alert is never
    /// sent before the state that stops it being sent twice is on disk.
    pub(crate) fn incident_transition(
        &self,
        key: &str,
        expected: Option<&super::store::IncidentState>,
        next: &super::store::IncidentState,
        outbox: &[OutboxEntry],
    ) -> Result<bool> {
        let incidents = self.db.open_tree(INCIDENTS_TREE)?;
        let expected = expected.map(encode);
        let next = encode(next);
        let entries: Vec<(Vec<u8>, Vec<u8>)> = outbox
            .iter()
            .map(|e| (outbox_key(&e.destination, e.seq), encode(e)))
            .collect();
        let res: std::result::Result<(), TransactionError<()>> = (&incidents, &self.outbox)
            .transaction(|(incidents, out)| {
                let stored = incidents.get(key.as_bytes())?;
                if stored.as_deref() != expected.as_deref() {
                    return Err(ConflictableTransactionError::Abort(()));
                }
                incidents.insert(key.as_bytes(), next.as_slice())?;
                for (k, v) in &entries {
                    out.insert(k.as_slice(), v.as_slice())?;
                }
                Ok(())
            });
        match res {
            Ok(()) => {
                self.db.flush()?;
                Ok(true)
            }
            Err(TransactionError::Abort(())) => Ok(false),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::store::DEFAULT_CACHE_BYTES;
    use crate::outbox::tests::entry;

    /// A poll's page of one change per version given: (record id, version), each with its
    /// journal entry (seq 10, 11, ...) and one outbox entry (seq 20, 21, ...).
    fn poll_page(versions: &[(&str, u8)]) -> PageWrite {
        let mut page = PageWrite::default();
        for (i, (id, v)) in versions.iter().enumerate() {
            let change_seq = 10 + i as u64;
            page.snapshots.push((
                id.to_string(),
                format!("{{\"ID\":\"{id}\",\"V\":{v}}}").into_bytes(),
            ));
            page.changes.push(JournalWrite {
                seq: change_seq,
                record_id: id.to_string(),
                detected_at: Utc::now(),
                value: serde_json::to_vec(&serde_json::json!({"id": id, "v": v})).unwrap(),
            });
            let mut e = entry("hook", 20 + i as u64);
            e.record_id = id.to_string();
            e.change_seq = change_seq;
            page.outbox.push(e);
        }
        page
    }

    /// What the store holds of a page's changes: the seqs of the journal entries and outbox
    /// entries there, and the stored version of each record.
    fn traces(store: &SledStore, ids: &[&str]) -> (Vec<u64>, Vec<u64>, Vec<Option<u8>>) {
        let journal: Vec<u64> = store
            .changes
            .iter()
            .flat_map(|kv| {
                let (k, v) = kv.unwrap();
                journal_value::<serde::de::IgnoredAny>(&k, &v)
                    .unwrap()
                    .into_iter()
                    .map(|(s, _)| s)
            })
            .collect();
        let outbox: Vec<u64> = store
            .outbox_entries("hook")
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.change_seq)
            .collect();
        let versions = ids
            .iter()
            .map(|id| {
                store
                    .snapshots
                    .get(key(&["default", "leads", id]))
                    .unwrap()
                    .map(|v| {
                        serde_json::from_slice::<serde_json::Value>(&v).unwrap()["V"]
                            .as_u64()
                            .unwrap() as u8
                    })
            })
            .collect();
        (journal, outbox, versions)
    }

    #[test]
    fn a_page_cut_short_anywhere_keeps_exactly_the_changes_whose_snapshot_landed() {
        let ids = ["a", "b", "c"];
        let page = poll_page(&[("a", 1), ("b", 1), ("c", 1)]);
        let marker = PendingPage::of("default", "leads", &page).expect("a poll's page is marked");
        // 1 journal page + 3 outbox entries + 3 snapshots: cut after 0 to 6 of them, or whole.
        for writes in 0..=7 {
            let dir = tempfile::tempdir().unwrap();
            {
                let store = SledStore::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
                store.commit_page_marked(&marker, &page, writes).unwrap();
                let cut = usize::from(writes < 7);
                assert_eq!(store.pending.len(), cut, "cut after {writes} writes");
            }
            let store = SledStore::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
            let landed = writes.saturating_sub(4).min(3);
            let kept: Vec<u64> = (10..10 + landed as u64).collect();
            let (journal, outbox, versions) = traces(&store, &ids);
            assert_eq!(journal, kept, "journal after {writes} writes");
            assert_eq!(outbox, kept, "outbox after {writes} writes");
            let expected: Vec<Option<u8>> = (0..3).map(|i| (i < landed).then_some(1)).collect();
            assert_eq!(versions, expected, "snapshots after {writes} writes");
            assert!(store.pending.is_empty(), "the marker goes with the undo");
        }
    }

    #[test]
    fn a_record_twice_in_a_cut_page_keeps_the_change_to_the_version_stored() {
        let page = poll_page(&[("a", 1), ("a", 2)]);
        let marker = PendingPage::of("default", "leads", &page).unwrap();
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
            // The journal page, both outbox entries and the first version's snapshot.
            store.commit_page_marked(&marker, &page, 4).unwrap();
        }
        let store = SledStore::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(traces(&store, &["a"]), (vec![10], vec![10], vec![Some(1)]));
    }

    #[test]
    fn a_whole_page_leaves_no_marker_and_a_page_with_digest_members_is_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let page = poll_page(&[("a", 1), ("b", 1)]);
        store.commit_page("default", "leads", &page).unwrap();
        assert!(store.pending.is_empty());
        assert_eq!(
            traces(&store, &["a", "b"]),
            (vec![10, 11], vec![10, 11], vec![Some(1), Some(1)])
        );
        let mut digested = poll_page(&[("c", 1)]);
        digested
            .digest
            .push(crate::outbox::tests::member("digest", 30, "c"));
        assert!(PendingPage::of("default", "leads", &digested).is_none());
        let mut unmatched = poll_page(&[("d", 1)]);
        unmatched.changes.clear();
        assert!(PendingPage::of("default", "leads", &unmatched).is_none());
    }

    /// `poll_page`, each outbox entry with a body of its own.
    fn page_with_bodies(versions: &[(&str, u8)]) -> PageWrite {
        let mut page = poll_page(versions);
        for e in &mut page.outbox {
            e.payload = crate::route::plan::Payload::Webhook {
                body: format!(
                    "{{\"record\":\"{}\",\"secret\":\"Zebulon-{}\"}}",
                    e.record_id, e.seq
                ),
            };
        }
        page.encode_outbox();
        page
    }

    /// Every byte of the store's body segments, concatenated.
    fn segment_bytes(dir: &Path) -> Vec<u8> {
        let mut all = Vec::new();
        for f in std::fs::read_dir(dir.join(bodies::DIR)).unwrap() {
            all.extend(std::fs::read(f.unwrap().path()).unwrap());
        }
        all
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_polled_page_keeps_its_bodies_in_a_segment_and_reads_them_back_whole_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let page = page_with_bodies(&[("a", 1), ("b", 1)]);
        {
            let store = SledStore::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
            store.commit_page("default", "leads", &page).unwrap();
            let raw = store.outbox.get(outbox_key("hook", 20)).unwrap().unwrap();
            assert!(BodyRef::of_stored(&raw).is_some(), "stored apart");
            assert!(!contains(&raw, b"Zebulon"), "the tree holds no body");
            assert!(contains(&segment_bytes(dir.path()), b"Zebulon-20"));
        }
        let store = SledStore::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let got = store.outbox_get("hook", 20).unwrap().unwrap();
        assert_eq!(got, page.outbox[0], "the entry reads back as committed");
        assert_eq!(store.all_outbox().unwrap(), page.outbox);
        let counts = store.outbox_counts().unwrap();
        assert_eq!(counts.get("hook"), Some(&(2, 0)));
        let due: Vec<u64> = store.outbox_due("hook").map(|d| d.unwrap().seq).collect();
        assert_eq!(due, vec![20, 21]);
    }

    #[tokio::test]
    async fn a_spent_segment_goes_after_the_flush_that_follows_its_last_removal_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        store
            .commit_page("default", "leads", &page_with_bodies(&[("a", 1), ("b", 1)]))
            .unwrap();
        // The next page goes to a new segment, as after a full one.
        store.bodies.fill_segment();
        let mut next = page_with_bodies(&[("c", 1)]);
        next.outbox[0].seq = 30;
        next.outbox_values.clear();
        store.commit_page("default", "leads", &next).unwrap();
        let before = store.bodies.segments_on_disk();
        assert_eq!(before.len(), 2, "{before:?}");
        store.outbox_remove("hook", 20).unwrap();
        // Retried: written back whole, so it no longer holds the segment.
        let mut retried = store.outbox_get("hook", 21).unwrap().unwrap();
        retried.attempts = 1;
        store.outbox_put("hook", 21, &retried).unwrap();
        let raw = store.outbox.get(outbox_key("hook", 21)).unwrap().unwrap();
        assert!(BodyRef::of_stored(&raw).is_none() && contains(&raw, b"Zebulon-21"));
        assert_eq!(
            store.bodies.segments_on_disk(),
            before,
            "nothing goes before a flush"
        );
        store.flush().await.unwrap();
        assert_eq!(store.bodies.segments_on_disk(), before[1..].to_vec());
        assert_eq!(store.outbox_get("hook", 21).unwrap().unwrap(), retried);
        assert!(store.outbox_get("hook", 30).unwrap().is_some());
    }

    #[test]
    fn a_body_missing_from_its_segment_is_an_error_naming_where_not_what() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
            store
                .commit_page("default", "leads", &page_with_bodies(&[("a", 1)]))
                .unwrap();
        }
        for f in std::fs::read_dir(dir.path().join(bodies::DIR)).unwrap() {
            let f = f.unwrap().path();
            if std::fs::metadata(&f).unwrap().len() > 0 {
                std::fs::write(&f, b"").unwrap();
            }
        }
        let store = SledStore::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let err = store.outbox_get("hook", 20).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StoreError::Body(_)), "{text}");
        assert!(
            text.contains("segment") && !text.contains("Zebulon"),
            "{text}"
        );
        // What needs no body still reads.
        assert_eq!(store.outbox_counts().unwrap().get("hook"), Some(&(1, 0)));
    }

    #[test]
    fn erasing_a_record_overwrites_its_queued_bodies_in_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        store
            .commit_page("default", "leads", &page_with_bodies(&[("a", 1), ("b", 1)]))
            .unwrap();
        let erased = store.erase_record("default", "leads", "a").unwrap();
        assert_eq!(erased.outbox, 1);
        let bytes = segment_bytes(dir.path());
        assert!(
            !contains(&bytes, b"Zebulon-20"),
            "the erased record's body is gone"
        );
        assert!(contains(&bytes, b"Zebulon-21"));
        assert!(store.outbox_get("hook", 21).unwrap().is_some());
    }

    #[test]
    fn values_are_stored_as_their_json_and_a_bad_one_is_a_decode_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let e = entry("hook", 7);
        store.outbox_put("hook", 7, &e).unwrap();
        let raw = store.outbox.get(outbox_key("hook", 7)).unwrap().unwrap();
        assert_eq!(
            &raw[..],
            &serde_json::to_vec(&e).unwrap()[..],
            "the same bytes as ever"
        );
        store
            .outbox
            .insert(outbox_key("hook", 8), &b"{\"seq\":"[..])
            .unwrap();
        assert!(matches!(
            store.outbox_get("hook", 8),
            Err(StoreError::Decode {
                what: "outbox entry",
                ..
            })
        ));
        // The due scan reads every entry it can and says which one it could not.
        let due: Vec<Result<Due>> = store.outbox_due("hook").collect();
        assert_eq!(due.len(), 2);
        assert_eq!(*due[0].as_ref().unwrap(), Due { seq: 7, at_ms: 0 });
        assert!(due[1].is_err());
        let log = AttemptLog {
            at_ms: 1,
            attempt: 2,
            status: Some(503),
            duration_ms: 3,
            response: "busy".into(),
            verdict: crate::model::Verdict::Fail {
                reason: "HTTP 503".into(),
            },
        };
        store.log_attempt(7, &log).unwrap();
        let mut k = 7u64.to_be_bytes().to_vec();
        k.extend_from_slice(&2u32.to_be_bytes());
        assert!(
            store.attempts.get(k).unwrap().is_some(),
            "keyed by its attempt number"
        );
        assert_eq!(store.attempts(7).unwrap(), vec![log]);
    }

    #[test]
    fn files_created_after_open_are_tightened_by_the_maintenance_call() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let store = SledStore::open(&path, DEFAULT_CACHE_BYTES).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), DIR_MODE);
        // As sled makes a snapshot file or a blob later, under the process umask.
        let later = path.join("blobs").join("123");
        std::fs::write(&later, "x").unwrap();
        std::fs::set_permissions(&later, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(store.tighten_permissions(), 1);
        assert_eq!(mode(&later), FILE_MODE);
        assert_eq!(store.tighten_permissions(), 0);
    }

    #[test]
    fn second_open_reports_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _a = SledStore::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let err = SledStore::open(dir.path(), DEFAULT_CACHE_BYTES)
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    }

    /// A fleet's pollers flush side by side: every flush returns, and what was written before a
    /// flush returned is on disk after a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_flushes_at_once_all_return_and_keep_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let store = SledStore::open(&path, DEFAULT_CACHE_BYTES).unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for clinic in 0..64 {
            let store = store.clone();
            tasks.spawn(async move {
                for round in 0..10u32 {
                    let st = PollStatus {
                        last_pages: round,
                        ..PollStatus::default()
                    };
                    store
                        .set_poll_status(&format!("c{clinic}"), "leads", &st)
                        .unwrap();
                    store.flush().await.unwrap();
                }
            });
        }
        tokio::time::timeout(std::time::Duration::from_secs(120), async {
            while let Some(r) = tasks.join_next().await {
                r.unwrap();
            }
        })
        .await
        .expect("640 flushes from 64 tasks all return");
        drop(store);
        let store = SledStore::open(&path, DEFAULT_CACHE_BYTES).unwrap();
        for clinic in 0..64 {
            let st = store.poll_status(&format!("c{clinic}"), "leads").unwrap();
            assert_eq!(st.last_pages, 9, "clinic {clinic}");
        }
    }
}
