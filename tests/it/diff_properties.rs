//! Properties of the diff (through the public API): what is and is not a change, which fields
//! changed, and change ids that ignore key order and detection time but not content.

use chrono::{DateTime, Utc};
use clinicea_notifier::ingest::diff::{self, DiffSpec};
use clinicea_notifier::model::{Change, ChangeKind, IdKey, DEFAULT_CLINIC};
use proptest::prelude::*;
use serde_json::{Map, Value};

const SPEC: DiffSpec<'static> = DiffSpec {
    clinic: DEFAULT_CLINIC,
    resource: "leads",
    id_field: "ID",
    status_field: "DataStatusStr",
};

/// A fixed change-id key: the properties hold under any key.
fn id_key() -> IdKey {
    IdKey::from_bytes(&[7; IdKey::LEN])
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
        "\\PC{0,6}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[A-Za-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A record: an id, some fields (never the id, status or delete flag), a status flag.
fn record() -> impl Strategy<Value = Value> {
    (
        "[a-f0-9]{1,8}",
        prop::collection::btree_map("F[A-Za-z]{0,5}", value(), 0..8),
        prop::sample::select(vec!["Added", "Modified"]),
    )
        .prop_map(|(id, fields, status)| {
            let mut m = Map::new();
            m.insert("ID".into(), Value::String(id));
            for (k, v) in fields {
                m.insert(k, v);
            }
            m.insert("DataStatusStr".into(), Value::String(status.into()));
            Value::Object(m)
        })
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

fn run(prev: Option<Value>, rec: Value, detected_at: DateTime<Utc>) -> Option<Change> {
    let id = diff::record_id(&rec, "ID").unwrap();
    diff::diff(&SPEC, id, prev, rec, detected_at)
}

fn reversed(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .rev()
                .map(|(k, v)| (k.clone(), reversed(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(reversed).collect()),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn an_identical_record_is_no_change(r in record()) {
        prop_assert!(run(Some(r.clone()), r, Utc::now()).is_none());
    }

    #[test]
    fn the_status_field_alone_is_no_change(r in record(), s in "[A-Za-z]{0,8}") {
        let mut other = r.clone();
        other["DataStatusStr"] = Value::String(s);
        prop_assume!(!diff::is_deleted(&other, "DataStatusStr"));
        prop_assert!(run(Some(r), other, Utc::now()).is_none());
    }

    #[test]
    fn one_field_changed_is_modified_with_exactly_that_field(
        r in record(),
        field in "F[A-Za-z]{0,5}",
        new in value(),
    ) {
        prop_assume!(r.get(&field) != Some(&new));
        let mut cur = r.clone();
        cur[&field] = new;
        let c = run(Some(r), cur, Utc::now()).expect("a changed field is a change");
        prop_assert_eq!(c.kind, ChangeKind::Modified);
        prop_assert_eq!(c.changed_fields, vec![field]);
    }

    #[test]
    fn a_removed_field_is_modified_with_that_field(r in record(), pick in any::<prop::sample::Index>()) {
        let keys: Vec<String> = r.as_object().unwrap().keys().filter(|k| k.starts_with('F')).cloned().collect();
        prop_assume!(!keys.is_empty());
        let field = keys[pick.index(keys.len())].clone();
        let mut cur = r.clone();
        cur.as_object_mut().unwrap().shift_remove(&field);
        let c = run(Some(r), cur, Utc::now()).unwrap();
        prop_assert_eq!(c.kind, ChangeKind::Modified);
        prop_assert_eq!(c.changed_fields, vec![field]);
    }

    #[test]
    fn change_id_ignores_key_order_and_detection_time(
        prev in record(),
        r in record(),
        t1 in 0i64..4_000_000_000,
        t2 in 0i64..4_000_000_000,
    ) {
        let mut r = r;
        r["ID"] = prev["ID"].clone();
        let a = run(Some(prev.clone()), r.clone(), at(t1));
        let b = run(Some(reversed(&prev)), reversed(&r), at(t2));
        prop_assert_eq!(a.is_some(), b.is_some());
        if let (Some(a), Some(b)) = (a, b) {
            prop_assert_eq!(a.change_id(&id_key()), b.change_id(&id_key()));
        }
        let a = run(None, r.clone(), at(t1)).unwrap();
        let b = run(None, reversed(&r), at(t2)).unwrap();
        prop_assert_eq!(a.change_id(&id_key()), b.change_id(&id_key()));
    }

    #[test]
    fn change_id_differs_when_the_record_differs(r in record(), field in "F[A-Za-z]{0,5}", new in value()) {
        prop_assume!(r.get(&field) != Some(&new));
        let mut other = r.clone();
        other[&field] = new;
        let a = run(None, r, at(0)).unwrap();
        let b = run(None, other, at(0)).unwrap();
        prop_assert_ne!(a.change_id(&id_key()), b.change_id(&id_key()));
    }

    #[test]
    fn is_deleted_true_is_deleted(r in record(), known in any::<bool>(), field in "F[A-Za-z]{0,5}", new in value()) {
        let mut cur = r.clone();
        cur["IsDeleted"] = Value::Bool(true);
        cur[&field] = new;
        let prev = if known { Some(r) } else { None };
        let c = run(prev, cur, Utc::now()).expect("a deletion is a change");
        prop_assert_eq!(c.kind, ChangeKind::Deleted);
    }

    #[test]
    fn changed_fields_never_names_the_status_field(a in record(), b in record()) {
        let f = diff::changed_fields(Some(&a), &b, "DataStatusStr");
        prop_assert!(!f.iter().any(|k| k == "DataStatusStr"));
        // And is symmetric as a set.
        let mut g = diff::changed_fields(Some(&b), &a, "DataStatusStr");
        let mut f = f;
        f.sort();
        g.sort();
        prop_assert_eq!(f, g);
    }
}
