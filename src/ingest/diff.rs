//! The diff: decides what a fetched record means against the version the store last saw.
//!
//! * unknown id → `added`, or `deleted` when the server flags it so;
//! * known id, different content → `modified`, with the top-level fields that differ;
//! * server delete flag (`DataStatusStr`/`DataStatusValue` = `Deleted`, or `IsDeleted: true`) → `deleted`;
//! * identical content → nothing.
//!
//! The server's own status field is left out of the comparison: a record re-sent with only its
//! flag changed (`Added` → `Modified`) has not changed.
//!
//! A deleted record stays in the store as a [`tombstone`]: its id and the delete flag, nothing of
//! its contents (patient data the diff no longer needs). Against a tombstone, a record served
//! deleted again (the overlap window re-reads it) is nothing, and one served live again is back:
//! `added`, as if new.

use crate::model::{Change, ChangeKind};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// The field name of the boolean delete flag some endpoints send.
pub(crate) const IS_DELETED_FIELD: &str = "IsDeleted";

/// How a resource names its id and status fields.
#[derive(Debug, Clone)]
pub struct DiffSpec<'a> {
    /// The clinic's name.
    pub clinic: &'a str,
    /// The resource key.
    pub resource: &'a str,
    /// The id field.
    pub id_field: &'a str,
    /// The server's change-flag field.
    pub status_field: &'a str,
}

/// Why a record was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The record is not a JSON object.
    NotAnObject,
    /// The id field is missing, null, empty, or not a string or number.
    NoId,
}

/// Reads a record's id as a string (numbers are accepted and written in decimal).
pub fn record_id(record: &Value, id_field: &str) -> Result<String, Skip> {
    let obj = record.as_object().ok_or(Skip::NotAnObject)?;
    match obj.get(id_field) {
        Some(Value::String(s)) if !s.trim().is_empty() && !s.contains('\0') => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(Skip::NoId),
    }
}

/// The server's status flag as a string, if present.
pub(crate) fn server_status(record: &Value, status_field: &str) -> Option<String> {
    match record.get(status_field)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Whether the server flags the record as deleted.
pub fn is_deleted(record: &Value, status_field: &str) -> bool {
    let by_status = record
        .get(status_field)
        .and_then(Value::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case("deleted"));
    let by_flag = matches!(record.get(IS_DELETED_FIELD), Some(Value::Bool(true)));
    by_status || by_flag
}

/// The snapshot kept for a deleted record: `{"<id_field>": id, "IsDeleted": true}`.
pub(crate) fn tombstone(id_field: &str, id: &str) -> Vec<u8> {
    let mut m = serde_json::Map::new();
    m.insert(id_field.to_string(), Value::String(id.to_string()));
    m.insert(IS_DELETED_FIELD.to_string(), Value::Bool(true));
    serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
}

/// For a stored snapshot: the [`tombstone`] to keep instead, when it is a deleted record kept
/// whole (what older versions stored); `None` when it is live or already reduced.
pub(crate) fn reduce_stored(
    raw: &[u8],
    id_field: &str,
    status_field: &str,
    id: &str,
) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(raw).ok()?;
    if !is_deleted(&v, status_field) {
        return None;
    }
    let t = tombstone(id_field, id);
    (t != raw).then_some(t)
}

/// Top-level fields whose values differ, ignoring `status_field`, in the record's field order
/// (fields only in `previous` come last).
pub fn changed_fields(previous: Option<&Value>, record: &Value, status_field: &str) -> Vec<String> {
    let empty = serde_json::Map::new();
    let prev = previous.and_then(Value::as_object).unwrap_or(&empty);
    let cur = record.as_object().unwrap_or(&empty);
    let mut out: Vec<String> = cur
        .iter()
        .filter(|(k, v)| k.as_str() != status_field && prev.get(k.as_str()) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    out.extend(
        prev.keys()
            .filter(|k| k.as_str() != status_field && !cur.contains_key(k.as_str()))
            .cloned(),
    );
    out
}

/// Compares a fetched record with its stored version. `None` means nothing changed.
pub fn diff(
    spec: &DiffSpec<'_>,
    id: String,
    previous: Option<Value>,
    record: Value,
    detected_at: DateTime<Utc>,
) -> Option<Change> {
    let deleted_now = is_deleted(&record, spec.status_field);
    // A tombstone (or a deleted record kept whole) stands for a record that is gone.
    let previous = match previous {
        Some(prev) if is_deleted(&prev, spec.status_field) => {
            if deleted_now {
                return None;
            }
            None
        }
        other => other,
    };
    let fields = changed_fields(previous.as_ref(), &record, spec.status_field);
    let kind = match &previous {
        _ if deleted_now => ChangeKind::Deleted,
        None => ChangeKind::Added,
        Some(_) if fields.is_empty() => return None,
        Some(_) => ChangeKind::Modified,
    };
    Some(Change {
        clinic: spec.clinic.to_string(),
        resource: spec.resource.to_string(),
        id,
        kind,
        server_status: server_status(&record, spec.status_field),
        record,
        previous,
        changed_fields: fields,
        detected_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC: DiffSpec<'static> = DiffSpec {
        clinic: "default",
        resource: "leads",
        id_field: "ID",
        status_field: "DataStatusStr",
    };

    fn run(prev: Option<Value>, rec: Value) -> Option<Change> {
        let id = record_id(&rec, "ID").unwrap();
        diff(&SPEC, id, prev, rec, Utc::now())
    }

    #[test]
    fn kinds() {
        let a = json!({"ID": "1", "Name": "A", "DataStatusStr": "Added"});
        let c = run(None, a.clone()).unwrap();
        assert_eq!(c.kind, ChangeKind::Added);
        assert_eq!(c.changed_fields, vec!["ID", "Name"]);
        assert_eq!(c.server_status.as_deref(), Some("Added"));

        // Same content with only the flag changed: nothing.
        let a2 = json!({"ID": "1", "Name": "A", "DataStatusStr": "Modified"});
        assert!(run(Some(a.clone()), a2).is_none());

        let b = json!({"ID": "1", "Name": "B", "DataStatusStr": "Modified"});
        let c = run(Some(a.clone()), b.clone()).unwrap();
        assert_eq!(c.kind, ChangeKind::Modified);
        assert_eq!(c.changed_fields, vec!["Name"]);
        assert_eq!(c.previous, Some(a.clone()));

        // The delete flag alone is a deletion, even with no other field changed.
        let d = json!({"ID": "1", "Name": "B", "DataStatusStr": "Deleted"});
        let c = run(Some(b.clone()), d.clone()).unwrap();
        assert_eq!(c.kind, ChangeKind::Deleted);
        assert!(c.changed_fields.is_empty());
        // A tombstone read again is nothing.
        assert!(run(Some(d.clone()), d.clone()).is_none());
        let d2 = json!({"ID": "1", "Name": "B", "IsDeleted": true});
        assert_eq!(run(Some(b), d2).unwrap().kind, ChangeKind::Deleted);
        // Unknown id flagged deleted.
        assert_eq!(run(None, d).unwrap().kind, ChangeKind::Deleted);
    }

    #[test]
    fn against_a_tombstone_deleted_again_is_nothing_and_back_is_added() {
        let t: Value = serde_json::from_slice(&tombstone("ID", "1")).unwrap();
        assert_eq!(t, json!({"ID": "1", "IsDeleted": true}));
        let d = json!({"ID": "1", "Name": "B", "Notes": "x", "DataStatusStr": "Deleted"});
        assert!(run(Some(t.clone()), d.clone()).is_none());
        let d2 = json!({"ID": "1", "Name": "C", "IsDeleted": true});
        assert!(run(Some(t.clone()), d2).is_none());
        // Back with exactly the fields it had, only the flag changed: added, not nothing.
        let back = json!({"ID": "1", "Name": "B", "Notes": "x", "DataStatusStr": "Modified"});
        let c = run(Some(t.clone()), back.clone()).unwrap();
        assert_eq!(c.kind, ChangeKind::Added);
        assert_eq!(c.previous, None);
        assert_eq!(c.changed_fields, vec!["ID", "Name", "Notes"]);
        // The same against a deleted record kept whole (older stores).
        assert_eq!(run(Some(d.clone()), back).unwrap().kind, ChangeKind::Added);
        let undeleted = json!({"ID": "1", "Name": "B", "IsDeleted": false});
        let whole = json!({"ID": "1", "Name": "B", "IsDeleted": true});
        assert_eq!(run(Some(whole), undeleted).unwrap().kind, ChangeKind::Added);
    }

    #[test]
    fn only_deleted_records_kept_whole_are_reduced() {
        let whole = br#"{"ID":"1","Name":"B","DataStatusStr":"Deleted"}"#;
        let reduced = reduce_stored(whole, "ID", "DataStatusStr", "1").unwrap();
        assert_eq!(reduced, tombstone("ID", "1"));
        assert_eq!(reduce_stored(&reduced, "ID", "DataStatusStr", "1"), None);
        let live = br#"{"ID":"1","Name":"B","DataStatusStr":"Added"}"#;
        assert_eq!(reduce_stored(live, "ID", "DataStatusStr", "1"), None);
    }

    #[test]
    fn deleted_by_status_with_other_changes() {
        let prev = json!({"ID": "1", "Name": "A", "DataStatusStr": "Added"});
        let cur = json!({"ID": "1", "Name": "A", "Mobile": "1", "DataStatusStr": "Deleted"});
        assert_eq!(run(Some(prev), cur).unwrap().kind, ChangeKind::Deleted);
    }

    #[test]
    fn removed_fields_count_as_changed() {
        let prev = json!({"ID": "1", "A": 1, "B": 2});
        let cur = json!({"ID": "1", "A": 1});
        assert_eq!(run(Some(prev), cur).unwrap().changed_fields, vec!["B"]);
    }

    #[test]
    fn ids() {
        assert_eq!(record_id(&json!({"ID": 7}), "ID").unwrap(), "7");
        assert_eq!(record_id(&json!({"ID": ""}), "ID"), Err(Skip::NoId));
        assert_eq!(record_id(&json!({"ID": null}), "ID"), Err(Skip::NoId));
        assert_eq!(record_id(&json!({"X": 1}), "ID"), Err(Skip::NoId));
        assert_eq!(record_id(&json!([1]), "ID"), Err(Skip::NotAnObject));
    }
}
