//! Issue 7: property tests for the diff and the rule matcher (through the public API), and the
//! fuzz targets' bodies run over their committed corpus (`fuzz/corpus/*`).

#[path = "../../fuzz/src/lib.rs"]
mod fuzz_bodies;

use chrono::{DateTime, Utc};
use clinicea_notifier::ingest::diff::{self, DiffSpec};
use clinicea_notifier::model::{Change, ChangeKind, IdKey, DEFAULT_SOURCE};
use clinicea_notifier::route::rules::{self, CompileContext, RuleSet, RuleSpec};
use proptest::prelude::*;
use serde_json::{Map, Value};

const SPEC: DiffSpec<'static> = DiffSpec {
    source: DEFAULT_SOURCE,
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

// --- the rule matcher -------------------------------------------------------------------------

const DESTS: [&str; 4] = ["d0", "d1", "d2", "d3"];

fn compile(yaml: &str) -> RuleSet {
    let specs: Vec<serde_saphyr::Spanned<RuleSpec>> =
        serde_saphyr::from_str_with_options(yaml, rules::yaml_options())
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let d: Vec<String> = DESTS.iter().map(|s| s.to_string()).collect();
    let r = vec!["leads".to_string(), "patients".to_string()];
    rules::compile(
        &specs,
        &CompileContext {
            destinations: &d,
            resources: &r,
            timezone: chrono_tz::UTC,
        },
    )
    .unwrap_or_else(|p| panic!("{p:?}\n{yaml}"))
}

/// A YAML double-quoted scalar (JSON strings are valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn change(resource: &str, kind: ChangeKind, record: Value) -> Change {
    Change {
        source: DEFAULT_SOURCE.into(),
        resource: resource.into(),
        id: "x".into(),
        kind,
        changed_fields: record
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default(),
        record,
        previous: None,
        server_status: None,
        detected_at: Utc::now(),
    }
}

fn matches(rs: &RuleSet, c: &Change) -> Vec<bool> {
    rs.explain(c).into_iter().map(|e| e.matched).collect()
}

/// Text values a field takes: no `$` (that starts a variable), small alphabet so equal happens.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ab]{0,2}",
        "[A-Za-z0-9 _.:+-]{0,10}",
        "\\PC{0,4}".prop_map(|s| s.replace('$', ""))
    ]
}

fn field_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        3 => text().prop_map(|s| Some(Value::String(s))),
        1 => Just(None),
        1 => Just(Some(Value::Null)),
    ]
}

fn rec(v: &Option<Value>) -> Value {
    let mut m = Map::new();
    m.insert("ID".into(), Value::String("x".into()));
    if let Some(v) = v {
        m.insert("Source".into(), v.clone());
    }
    Value::Object(m)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn equals_matches_iff_equal(want in text(), got in field_value()) {
        let rs = compile(&format!(
            "- name: eq\n  where: [{{ field: Source, equals: {} }}]\n  notify: [d0]\n- name: not-eq\n  where: [{{ not: {{ field: Source, equals: {} }} }}]\n  notify: [d1]\n",
            q(&want), q(&want)
        ));
        let c = change("leads", ChangeKind::Added, rec(&got));
        let m = matches(&rs, &c);
        prop_assert_eq!(m[0], got == Some(Value::String(want)));
        prop_assert_eq!(m[1], !m[0], "not inverts");
        prop_assert_eq!(!rs.route(&c).is_empty(), true);
    }

    #[test]
    fn in_is_any_of_equals(set in prop::collection::vec(text(), 1..4), got in field_value()) {
        let list = set.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
        let any = set
            .iter()
            .map(|s| format!("{{ field: Source, equals: {} }}", q(s)))
            .collect::<Vec<_>>()
            .join(", ");
        let rs = compile(&format!(
            "- name: in\n  where: [{{ field: Source, in: [{list}] }}]\n  notify: [d0]\n- name: any\n  where: [{{ any: [{any}] }}]\n  notify: [d1]\n- name: not-in\n  where: [{{ field: Source, not_in: [{list}] }}]\n  notify: [d2]\n"
        ));
        let c = change("leads", ChangeKind::Added, rec(&got));
        let m = matches(&rs, &c);
        let expected = set.iter().any(|s| got == Some(Value::String(s.clone())));
        prop_assert_eq!(m[0], expected);
        prop_assert_eq!(m[1], m[0], "in ≡ any of equals");
        prop_assert_eq!(m[2], !m[0], "not_in is the negation of in");
    }

    #[test]
    fn any_is_or_and_all_is_and(a in text(), b in text(), got in field_value(), notes in field_value()) {
        let mut r = rec(&got);
        if let Some(n) = &notes {
            r["Notes"] = n.clone();
        }
        let c1 = format!("{{ field: Source, equals: {} }}", q(&a));
        let c2 = format!("{{ field: Notes, equals: {} }}", q(&b));
        let rs = compile(&format!(
            "- name: one\n  where: [{c1}]\n  notify: [d0]\n- name: two\n  where: [{c2}]\n  notify: [d0]\n- name: any\n  where: [{{ any: [{c1}, {c2}] }}]\n  notify: [d1]\n- name: all\n  where: [{{ all: [{c1}, {c2}] }}]\n  notify: [d2]\n- name: list\n  where: [{c1}, {c2}]\n  notify: [d3]\n"
        ));
        let m = matches(&rs, &change("leads", ChangeKind::Added, r));
        prop_assert_eq!(m[2], m[0] || m[1]);
        prop_assert_eq!(m[3], m[0] && m[1]);
        prop_assert_eq!(m[4], m[3], "a where list is all of it");
    }

    /// Random rule sets: route gives each destination once, in order of first appearance in the
    /// matching rules' notify lists, each with the first matching rule that names it, and `rules`
    /// lists every matching rule in file order.
    #[test]
    fn route_gives_each_destination_once_and_rules_in_file_order(
        specs in prop::collection::vec(
            (
                prop::sample::select(vec!["leads", "patients", "*"]),
                prop::sample::subsequence(vec!["added", "modified", "deleted"], 1..=3),
                prop::option::of("[ab]{0,1}"),
                prop::collection::vec(prop::sample::select(DESTS.to_vec()), 1..4),
                any::<bool>(),
            ),
            1..7,
        ),
        resource in prop::sample::select(vec!["leads", "patients"]),
        kind in prop::sample::select(ChangeKind::ALL.to_vec()),
        source in prop::option::of("[ab]{0,1}"),
    ) {
        let mut yaml = String::new();
        for (i, (res, on, eq, notify, enabled)) in specs.iter().enumerate() {
            yaml.push_str(&format!("- name: r{i}\n  resource: {}\n  on: [{}]\n", q(res), on.join(", ")));
            if let Some(v) = eq {
                yaml.push_str(&format!("  where: [{{ field: Source, equals: {} }}]\n", q(v)));
            }
            let mut dedup: Vec<&str> = Vec::new();
            for d in notify {
                if !dedup.contains(d) {
                    dedup.push(d);
                }
            }
            yaml.push_str(&format!("  notify: [{}]\n  enabled: {enabled}\n", dedup.join(", ")));
        }
        let rs = compile(&yaml);
        let c = change(resource, kind, rec(&source.clone().map(Value::String)));
        let matched: Vec<usize> = (0..specs.len())
            .filter(|&i| {
                let (res, on, eq, _, enabled) = &specs[i];
                *enabled
                    && (*res == "*" || *res == resource)
                    && on.contains(&kind.as_str())
                    && eq.as_ref().is_none_or(|v| source.as_ref() == Some(v))
            })
            .collect();
        let m = matches(&rs, &c);
        for (i, got) in m.iter().enumerate() {
            prop_assert_eq!(*got, matched.contains(&i), "explain agrees with the model for r{}", i);
        }
        let routes = rs.route(&c);
        let names: Vec<String> = matched.iter().map(|i| format!("r{i}")).collect();
        let mut want: Vec<(String, String)> = Vec::new();
        for &i in &matched {
            for d in &specs[i].3 {
                if !want.iter().any(|(w, _)| w == d) {
                    want.push((d.to_string(), format!("r{i}")));
                }
            }
        }
        let got: Vec<(String, String)> = routes.iter().map(|r| (r.destination.clone(), r.rule.clone())).collect();
        prop_assert_eq!(got, want);
        for r in &routes {
            prop_assert_eq!(&r.rules, &names);
        }
        prop_assert_eq!(rs.matches_any(&c), !matched.is_empty());
    }
}

// --- the fuzz corpus, run as ordinary tests ---------------------------------------------------

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "{} holds a corpus", dir.display());
    out
}

#[test]
fn fuzz_corpus_config_parse() {
    for (name, data) in corpus("config_parse") {
        println!("config_parse: {name}");
        fuzz_bodies::config_parse(&data);
    }
}

#[test]
fn fuzz_corpus_api_page() {
    for (name, data) in corpus("api_page") {
        println!("api_page: {name}");
        fuzz_bodies::api_page(&data);
    }
}
