//! The change model: what the diff produces, what rules test and what templates and webhook bodies see.
//!
//! A [`Change`] is one record that differs from the version the store last saw. Its
//! [`Change::change_id`] is derived from its content and the store's [`IdKey`], so the same change
//! detected twice (for example after a crash between a page's fetch and its checkpoint) gets the
//! same id, and a receiver can drop the duplicate by its `webhook-id`; and because the hash is
//! keyed, someone who reads the ids (in logs, at a receiver) cannot test guesses about the
//! record's fields against them.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use std::fmt;

/// The clinic of a config without `clinics:`. Every store key is namespaced by the clinic, so a
/// store made before `clinics:` existed is this clinic's store.
pub const DEFAULT_CLINIC: &str = "default";

/// What happened to a record, decided by the diff against the stored version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// The id was not known before.
    Added,
    /// The id was known and at least one field differs.
    Modified,
    /// The server flagged the record as deleted.
    Deleted,
}

impl ChangeKind {
    /// All kinds, in the order the spec lists them.
    pub const ALL: [ChangeKind; 3] = [ChangeKind::Added, ChangeKind::Modified, ChangeKind::Deleted];

    /// The lowercase name used in config files, event types and templates.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Modified => "modified",
            ChangeKind::Deleted => "deleted",
        }
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One detected change of one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The clinic the record came from (its name under `clinics:`; [`DEFAULT_CLINIC`] without one).
    #[serde(rename = "clinic", alias = "source")]
    pub clinic: String,
    /// The resource key from the config, e.g. `leads`.
    pub resource: String,
    /// The record's id (the configured id field, as a string).
    pub id: String,
    /// Added, modified or deleted.
    #[serde(rename = "change")]
    pub kind: ChangeKind,
    /// The record as fetched now.
    pub record: Value,
    /// The stored version before this change, if any.
    pub previous: Option<Value>,
    /// Top-level fields whose values differ from `previous` (every field of an added record).
    pub changed_fields: Vec<String>,
    /// The server's own change flag, as sent (`DataStatusStr`, `DataStatusValue`, ...).
    pub server_status: Option<String>,
    /// When the poll saw it.
    pub detected_at: DateTime<Utc>,
}

impl Change {
    /// The event type a webhook carries: `leads.added`, `appointments.modified`, ...
    pub(crate) fn event_type(&self) -> String {
        format!("{}.{}", self.resource, self.kind)
    }

    /// A stable id for this change, the same whenever the same change is detected again with the
    /// same `key` (the store's, see [`crate::outbox::store::Store::id_key`]).
    ///
    /// It is an HMAC-SHA256 under `key` of the clinic, resource, record id, kind, and the canonical
    /// JSON of `previous` and `record`; `detected_at` is left out on purpose, since a re-detection
    /// after a crash happens at another time but is the same change.
    pub fn change_id(&self, key: &IdKey) -> String {
        self.id_and_canonical_record(key).0
    }

    /// The change's [`Change::change_id`] and its record's [`record_version`], from one
    /// canonical encoding of the record (a poll needs both for every change it journals).
    pub(crate) fn ids(&self, key: &IdKey) -> (String, String) {
        let (id, canonical) = self.id_and_canonical_record(key);
        (id, key.version_of_canonical(&canonical))
    }

    /// The change id, and the record's canonical JSON it hashed.
    fn id_and_canonical_record(&self, key: &IdKey) -> (String, Vec<u8>) {
        let mut h = key.mac.clone();
        for part in [
            self.clinic.as_str(),
            self.resource.as_str(),
            self.id.as_str(),
            self.kind.as_str(),
        ] {
            h.update(&(part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let mut buf = Vec::with_capacity(512);
        canonical_json(self.previous.as_ref().unwrap_or(&Value::Null), &mut buf);
        h.update(&(buf.len() as u64).to_be_bytes());
        h.update(&buf);
        buf.clear();
        canonical_json(&self.record, &mut buf);
        h.update(&buf);
        (hex_id("msg_", &h.finalize().into_bytes()), buf)
    }
}

/// A keyed hash of one version of a record, `ver_` and 32 hex digits: equal for equal content
/// (whatever the key order), different for any other, and, being keyed with the store's
/// [`IdKey`], useless for testing guesses about the record's fields. The change journal keeps
/// it instead of the record.
pub fn record_version(key: &IdKey, record: &Value) -> String {
    let mut buf = Vec::with_capacity(512);
    canonical_json(record, &mut buf);
    key.version_of_canonical(&buf)
}

/// `prefix` and the first 16 bytes of `digest` in lowercase hex.
fn hex_id(prefix: &str, digest: &[u8]) -> String {
    use std::fmt::Write;
    let mut id = String::with_capacity(prefix.len() + 32);
    id.push_str(prefix);
    for b in &digest[..16] {
        let _ = write!(id, "{b:02x}");
    }
    id
}

/// The secret key of [`Change::change_id`]: 32 random bytes made once per store and kept in it,
/// so ids stay stable across restarts but cannot be computed (or guesses checked) without it.
#[derive(Clone)]
pub struct IdKey {
    /// Keyed once; each id starts from a copy of this state.
    mac: Hmac<Sha256>,
}

impl IdKey {
    /// The key's length in bytes.
    pub const LEN: usize = 32;

    /// The key made of these bytes.
    pub fn from_bytes(bytes: &[u8; IdKey::LEN]) -> IdKey {
        IdKey {
            // HMAC takes keys of any length; 32 bytes can never be refused.
            mac: <Hmac<Sha256> as Mac>::new_from_slice(bytes)
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length")),
        }
    }

    /// Fresh random key bytes (from the operating system's generator, through `rand`'s CSPRNG).
    pub(crate) fn random_bytes() -> [u8; IdKey::LEN] {
        let mut b = [0u8; IdKey::LEN];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut b);
        b
    }

    /// The [`record_version`] of a record's canonical JSON. The domain tag keeps a version from
    /// ever equalling a change id's input.
    fn version_of_canonical(&self, canonical: &[u8]) -> String {
        let mut h = self.mac.clone();
        h.update(b"record-version\0");
        h.update(canonical);
        hex_id("ver_", &h.finalize().into_bytes())
    }

    /// The id of a digest (its `webhook-id`, and the key of its email's `Message-ID`): an HMAC
    /// under this key of its group (destination, clinic, recipient) and its members' change ids in
    /// order. The same members always make the same id, so a digest flushed again after a crash
    /// before its commit is the same digest; the domain tag keeps it from equalling a change id.
    pub fn digest_id(&self, group: [&str; 3], change_ids: &[&str]) -> String {
        let mut h = self.mac.clone();
        h.update(b"digest\0");
        for part in group.iter().chain(change_ids) {
            h.update(&(part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex_id("msg_", &h.finalize().into_bytes())
    }

    /// A key of fresh random bytes that is kept nowhere (for `test-rule` without a store).
    pub(crate) fn ephemeral() -> IdKey {
        IdKey::from_bytes(&IdKey::random_bytes())
    }
}

impl fmt::Debug for IdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdKey(<redacted>)")
    }
}

/// Writes `v` as JSON with object keys sorted, so equal values hash equally whatever their key order.
pub fn canonical_json(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Serializing a string into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                canonical_json(&map[k.as_str()], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(item, out);
            }
            out.push(b']');
        }
        // The same compact form as `to_string`, written in place.
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

/// How one delivery attempt ended, sorted the way the retry machinery needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    /// Delivered (2xx, SMTP 2xx).
    Success,
    /// Try again later (5xx, 408, 429, timeouts, connection errors, SMTP 4xx).
    Retry {
        /// Why, in words (status and cause); never record contents or secrets.
        reason: String,
        /// What the receiver asked for (`Retry-After`, Discord's `retry_after`), at most
        /// [`crate::net::retry_after::MAX_RETRY_AFTER`].
        retry_after: Option<std::time::Duration>,
    },
    /// Never going to work as it stands (3xx, other 4xx, SMTP 5xx): dead letters at once.
    Fail {
        /// Why, in words.
        reason: String,
    },
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(record: Value) -> Change {
        Change {
            clinic: DEFAULT_CLINIC.into(),
            resource: "leads".into(),
            id: "a".into(),
            kind: ChangeKind::Added,
            record,
            previous: None,
            changed_fields: vec![],
            server_status: None,
            detected_at: Utc::now(),
        }
    }

    #[test]
    fn change_id_ignores_key_order_and_detection_time() {
        let k = IdKey::from_bytes(&[7; IdKey::LEN]);
        let a = change(json!({"ID": "a", "X": 1}));
        let mut b = change(json!({"X": 1, "ID": "a"}));
        b.detected_at = DateTime::from_timestamp(0, 0).unwrap();
        assert_eq!(a.change_id(&k), b.change_id(&k));
        let c = change(json!({"ID": "a", "X": 2}));
        assert_ne!(a.change_id(&k), c.change_id(&k));
        assert!(a.change_id(&k).starts_with("msg_"));
        assert_eq!(a.change_id(&k).len(), 4 + 32);
    }

    #[test]
    fn change_id_depends_on_the_key() {
        let a = change(json!({"ID": "a", "FirstName": "Zebulon"}));
        let k1 = IdKey::from_bytes(&[1; IdKey::LEN]);
        let k2 = IdKey::from_bytes(&[2; IdKey::LEN]);
        assert_ne!(a.change_id(&k1), a.change_id(&k2));
        assert_eq!(
            a.change_id(&k1),
            a.change_id(&IdKey::from_bytes(&[1; IdKey::LEN]))
        );
        assert_ne!(
            a.change_id(&IdKey::ephemeral()),
            a.change_id(&IdKey::ephemeral())
        );
        assert_eq!(format!("{k1:?}"), "IdKey(<redacted>)");
    }
}
