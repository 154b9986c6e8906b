//! Durable delivery: outbox entries, the per-destination workers that deliver what is due, retries
//! with jitter, the attempts log and the dead letters.

use crate::model::Change;
use serde::{Deserialize, Serialize};

/// What is sent, rendered once when the change is detected: what is signed is exactly what is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payload {
    /// A Standard Webhooks POST of this JSON body.
    Webhook {
        /// The JSON body, byte for byte.
        body: String,
    },
    /// A chat message: the JSON body the service expects.
    Chat {
        /// The JSON body.
        body: String,
    },
    /// One email to one recipient.
    Email(crate::email::EmailMessage),
}

/// One delivery of one change to one destination (one recipient, for email).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The delivery's sequence number (its outbox and dead-letter key).
    pub seq: u64,
    /// The destination name.
    pub destination: String,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wake {
    /// The destination.
    pub destination: String,
    /// The delivery's sequence number.
    pub seq: u64,
    /// When it is due (Unix ms).
    pub due_ms: i64,
}

/// One delivery a change should produce, before it has a sequence number.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The destination name.
    pub destination: String,
    /// The first matching rule.
    pub rule: String,
    /// The rendered payload, or why it could not be rendered.
    pub payload: Result<Payload, String>,
}

impl Planned {
    /// Turns the plan into an outbox entry, or a dead letter when rendering failed.
    pub fn into_entry(
        self,
        seq: u64,
        change_seq: u64,
        change: &Change,
    ) -> Result<OutboxEntry, DeadLetter> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut entry = OutboxEntry {
            seq,
            destination: self.destination,
            webhook_id: change.change_id(),
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
        };
        match self.payload {
            Ok(p) => {
                entry.payload = p;
                Ok(entry)
            }
            Err(reason) => Err(DeadLetter {
                entry,
                reason,
                died_ms: now,
            }),
        }
    }
}

/// Rules, templates and destinations: what turns a change into planned deliveries.
pub struct Pipeline {}

impl Pipeline {
    /// A pipeline with no rules: changes are journaled, nothing is delivered.
    pub fn empty() -> Pipeline {
        Pipeline {}
    }

    /// The deliveries a change should produce.
    pub fn plan(&self, _change: &Change) -> Vec<Planned> {
        Vec::new()
    }
}
