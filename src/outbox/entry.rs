//! The outbox's typed values: an entry waiting for delivery, a dead letter, an attempt's log line,
//! the wake a worker gets when an entry is due, and a change as the journal keeps it.

use crate::model::{Change, ChangeKind, IdKey, Verdict};
use crate::route::plan::{Payload, Planned};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One delivery of one change to one destination (one recipient, for email).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The delivery's sequence number (its outbox and dead-letter key).
    pub seq: u64,
    /// The destination name.
    pub destination: String,
    /// The clinic the change came from (entries stored before `clinics:` existed are `default`).
    #[serde(default = "default_clinic")]
    pub clinic: String,
    /// The change's stable id, sent as `webhook-id`.
    pub webhook_id: String,
    /// `leads.added` etc.
    pub event_type: String,
    /// The resource key.
    pub resource: String,
    /// The record id.
    pub record_id: String,
    /// The first matching rule.
    pub rule: String,
    /// The change journal entry it came from.
    pub change_seq: u64,
    /// What is sent.
    pub payload: Payload,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (Unix ms).
    pub next_attempt_ms: i64,
    /// When the entry was created (Unix ms).
    pub created_ms: i64,
    /// Set while the entry is held by its destination's quiet hours. Holding is not an attempt.
    /// Absent in entries stored before quiet hours existed, and left out when unset, so those
    /// bytes stay as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Hold>,
}

/// Why an entry waits longer than it would: quiet hours, from when it was due until their end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// When it was due before the hold (Unix ms): its first attempt's time, or when its retry
    /// wait ended. Quiet hours changed by a reload are applied from here.
    pub due_ms: i64,
    /// The end of the quiet time (Unix ms), which is then also `next_attempt_ms`.
    pub until_ms: i64,
}

impl OutboxEntry {
    /// The hold on this entry, if it is held now: it is only believed while the entry still
    /// waits for that very time (a re-driven or rescheduled entry may carry a stale one).
    pub fn held_now(&self, now_ms: i64) -> Option<Hold> {
        self.held
            .filter(|h| h.until_ms == self.next_attempt_ms && h.until_ms > now_ms)
    }
}

/// One detected change as the change journal keeps it: which record, what kind of change, which
/// fields changed, when, and keyed hashes that tie it to its deliveries and to the record's
/// version. Never a field's value: the record lives in its snapshot and the delivered payloads,
/// and a third copy at rest would be health data kept for inspection only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The clinic the change came from.
    pub clinic: String,
    /// The resource key.
    pub resource: String,
    /// The record id.
    pub id: String,
    /// Added, modified or deleted.
    #[serde(rename = "change")]
    pub kind: ChangeKind,
    /// The names of the top-level fields that changed (every field of an added record).
    pub changed_fields: Vec<String>,
    /// The change's id, the `webhook-id` of its deliveries ([`Change::change_id`]).
    pub change_id: String,
    /// The keyed hash of the record as fetched ([`crate::model::record_version`]).
    pub version: String,
    /// When the poll saw it.
    pub detected_at: DateTime<Utc>,
}

impl JournalEntry {
    /// The journal's view of `change`, its hashes under `key`.
    pub(crate) fn of(change: &Change, key: &IdKey) -> JournalEntry {
        let (change_id, version) = change.ids(key);
        JournalEntry {
            clinic: change.clinic.clone(),
            resource: change.resource.clone(),
            id: change.id.clone(),
            kind: change.kind,
            changed_fields: change.changed_fields.clone(),
            change_id,
            version,
            detected_at: change.detected_at,
        }
    }

    /// A stored journal value in the current form, or converted from the form that held the
    /// whole change (record and previous version); `None` when it is neither.
    pub(crate) fn decode_any(bytes: &[u8], key: &IdKey) -> Option<(JournalEntry, bool)> {
        if let Ok(e) = serde_json::from_slice::<JournalEntry>(bytes) {
            return Some((e, false));
        }
        let old: Change = serde_json::from_slice(bytes).ok()?;
        Some((JournalEntry::of(&old, key), true))
    }
}

/// The clinic of an entry stored before entries named theirs.
pub(crate) fn default_clinic() -> String {
    crate::model::DEFAULT_CLINIC.to_string()
}

/// A delivery that will not be attempted again until someone re-drives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The entry as it was when it died.
    pub entry: OutboxEntry,
    /// Why it died.
    pub reason: String,
    /// When it died (Unix ms).
    pub died_ms: i64,
}

/// Tells a destination's worker that an entry is due at `due_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Wake {
    /// The destination.
    pub destination: String,
    /// The delivery's sequence number.
    pub seq: u64,
    /// When it is due (Unix ms).
    pub due_ms: i64,
    /// The entry as it was just committed, so its first attempt need not read and decode it
    /// again (the store is still asked whether it is there). `None`: read it from the store.
    /// Set by [`crate::outbox::store::Store::wake_of`] on sled only.
    pub entry: Option<std::sync::Arc<OutboxEntry>>,
}

impl Planned {
    /// Turns the plan into an outbox entry, or a dead letter when rendering failed. `webhook_id`
    /// is the change's [`Change::change_id`], computed once per change by the caller.
    pub(crate) fn into_entry(
        self,
        seq: u64,
        change_seq: u64,
        change: &Change,
        webhook_id: &str,
    ) -> Result<OutboxEntry, Box<DeadLetter>> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut entry = OutboxEntry {
            seq,
            destination: self.destination,
            clinic: change.clinic.clone(),
            webhook_id: webhook_id.to_string(),
            event_type: change.event_type(),
            resource: change.resource.clone(),
            record_id: change.id.clone(),
            rule: self.rule,
            change_seq,
            payload: Payload::Chat {
                body: String::new(),
            },
            attempts: 0,
            next_attempt_ms: now,
            created_ms: now,
            held: None,
        };
        match self.payload {
            Ok(p) => {
                entry.payload = p;
                Ok(entry)
            }
            Err(reason) => Err(Box::new(DeadLetter {
                entry,
                reason,
                died_ms: now,
            })),
        }
    }
}

/// One attempt's line in the attempts log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptLog {
    /// When it started (Unix ms).
    pub at_ms: i64,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// HTTP status or SMTP code.
    pub status: Option<u16>,
    /// How long it took (ms).
    pub duration_ms: u64,
    /// The first 4 KiB of the response.
    pub response: String,
    /// Success, retry or fail, with the reason.
    pub verdict: Verdict,
}

/// One change waiting in a digest: what the digest needs to render it later, kept in the store
/// (written in the page transaction, as an outbox entry would be) until its window closes and it
/// becomes part of one outbox entry ([`crate::outbox::store::Store::flush_digest`]).
///
/// Members are grouped by destination, clinic and recipient: each group is one digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestMember {
    /// Its sequence number (its key, and its order in the digest).
    pub seq: u64,
    /// The destination name.
    pub destination: String,
    /// The clinic the change came from.
    pub clinic: String,
    /// The one recipient of an email digest; empty for chat.
    pub recipient: String,
    /// The change's stable id (what the delivery's `webhook-id` would have been).
    pub change_id: String,
    /// `leads.added` etc.
    pub event_type: String,
    /// The resource key.
    pub resource: String,
    /// The record id.
    pub record_id: String,
    /// The first matching rule.
    pub rule: String,
    /// When it was stored (Unix ms): its window is the one this falls in.
    pub created_ms: i64,
    /// The per-change template context plus what the destination's `template` rendered for it
    /// (`text`, and for email `html` and `subject`): one element of the digest's `changes`.
    pub item: serde_json::Value,
}

impl DigestMember {
    /// The group (one digest) it belongs to: destination, clinic, recipient.
    pub fn group(&self) -> (&str, &str, &str) {
        (&self.destination, &self.clinic, &self.recipient)
    }
}
