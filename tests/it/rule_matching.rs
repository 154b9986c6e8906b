//! The rule matcher: properties of `equals`, `in`, `not`, `any`, `all` and routing over random
//! rules (with and without a clinic filter) and records (through the public API), values that are
//! no timestamp never matching a date rule, and `test-rule` explaining a fixture lead against the
//! example config, in the clinic it is told.

use crate::support::*;
use chrono::Utc;
use clinicea_notifier::config::{yaml_options, RuleSpec};
use clinicea_notifier::model::{Change, ChangeKind, DEFAULT_CLINIC};
use clinicea_notifier::route::rules::{self, CompileContext, RuleSet};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const DESTS: [&str; 4] = ["d0", "d1", "d2", "d3"];
const CLINICS: [&str; 3] = [DEFAULT_CLINIC, "north", "south"];

fn compile(yaml: &str) -> RuleSet {
    let specs: Vec<serde_saphyr::Spanned<RuleSpec>> =
        serde_saphyr::from_str_with_options(yaml, yaml_options())
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let d: Vec<String> = DESTS.iter().map(|s| s.to_string()).collect();
    let r = vec!["leads".to_string(), "patients".to_string()];
    let clinics: Vec<String> = CLINICS.iter().map(|s| s.to_string()).collect();
    rules::compile(
        &specs,
        &CompileContext {
            destinations: &d,
            resources: &r,
            clinics: &clinics,
            timezone: chrono_tz::UTC,
            timezones: &BTreeMap::new(),
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
        clinic: DEFAULT_CLINIC.into(),
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
                prop::option::of(prop::sample::subsequence(CLINICS.to_vec(), 1..=2)),
            ),
            1..7,
        ),
        resource in prop::sample::select(vec!["leads", "patients"]),
        clinic in prop::sample::select(CLINICS.to_vec()),
        kind in prop::sample::select(ChangeKind::ALL.to_vec()),
        source in prop::option::of("[ab]{0,1}"),
    ) {
        let mut yaml = String::new();
        for (i, (res, on, eq, notify, enabled, clinics)) in specs.iter().enumerate() {
            yaml.push_str(&format!("- name: r{i}\n  resource: {}\n  on: [{}]\n", q(res), on.join(", ")));
            match clinics.as_deref() {
                None => {}
                Some([one]) => yaml.push_str(&format!("  clinic: {one}\n")),
                Some(many) => yaml.push_str(&format!("  clinic: [{}]\n", many.join(", "))),
            }
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
        let mut c = change(resource, kind, rec(&source.clone().map(Value::String)));
        c.clinic = clinic.to_string();
        let matched: Vec<usize> = (0..specs.len())
            .filter(|&i| {
                let (res, on, eq, _, enabled, clinics) = &specs[i];
                *enabled
                    && (*res == "*" || *res == resource)
                    && clinics.as_ref().is_none_or(|cs| cs.contains(&clinic))
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

#[test]
fn a_strange_timestamp_never_panics_and_never_matches_a_date_rule() {
    let yaml = r#"
- name: after
  where: [{ field: CreatedDatetime, gt: "2026-11-30T09:00:00+05:00" }]
  notify: [d]
- name: before
  where: [{ field: CreatedDatetime, lt: "2026-11-30T09:00:00+05:00" }]
  notify: [d]
- name: at-least-date
  where: [{ field: CreatedDatetime, gte: "2026-11-30" }]
  notify: [d]
"#;
    let specs: Vec<serde_saphyr::Spanned<RuleSpec>> =
        serde_saphyr::from_str_with_options(yaml, yaml_options()).unwrap();
    let rs = rules::compile(
        &specs,
        &CompileContext {
            destinations: &["d".to_string()],
            resources: &["leads".to_string()],
            clinics: &[DEFAULT_CLINIC.to_string()],
            timezone: chrono_tz::Asia::Karachi,
            timezones: &BTreeMap::from([(DEFAULT_CLINIC.to_string(), chrono_tz::Asia::Karachi)]),
        },
    )
    .unwrap();
    let strange = [
        json!("not a date"),
        json!("31/12/2026 10:00"),
        json!("2026-13-45T99:99:99"),
        json!("2026-02-30T10:00:00"),
        json!("+275760-09-13T00:00:00Z"),
        json!("-0001-01-01T00:00:00"),
        json!("99999999999-01-01T00:00:00"),
        json!("2026-11-30T09:00:00+99:99"),
        json!("0001-01-01T00:00:00"),
        json!("/Date(1732000000000)/"),
        json!(""),
        json!("  "),
        json!("\u{0}"),
        json!("２０２６-１１-３０"),
        json!(1732000000),
        json!(1e308),
        json!(-1e308),
        json!(true),
        json!(null),
        json!([]),
        json!({"date": "2026-12-01"}),
    ];
    for v in strange {
        let c = Change {
            clinic: DEFAULT_CLINIC.into(),
            resource: "leads".into(),
            id: "1".into(),
            kind: ChangeKind::Added,
            record: json!({"ID": "1", "CreatedDatetime": v.clone()}),
            previous: None,
            changed_fields: vec!["ID".into(), "CreatedDatetime".into()],
            server_status: None,
            detected_at: chrono::Utc::now(),
        };
        let routes = rs.route(&c);
        let why = rs.explain(&c);
        assert!(
            routes.is_empty(),
            "{v}: a value that is not a timestamp matches no date rule: {why:?}"
        );
        assert!(why.iter().all(|e| e.failed.is_some()), "{v}: {why:?}");
    }
}

/// Runs `test-rule` on a lead record file with the example config and `extra` arguments: its
/// success, stdout and stderr.
fn test_rule_with(record: &Path, extra: &[&str]) -> (bool, String, String) {
    let out = example_env(
        Command::new(BIN)
            .args([
                "test-rule",
                "--config",
                &example_config(),
                "--resource",
                "leads",
                "--record",
                record.to_str().unwrap(),
            ])
            .args(extra),
    )
    .output()
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `test-rule` on a lead record file with the example config; it must succeed.
fn test_rule_on(record: &Path) -> String {
    let (ok, stdout, stderr) = test_rule_with(record, &[]);
    assert!(ok, "{stdout}\n{stderr}");
    stdout
}

#[test]
fn test_rule_on_a_fixture_lead_shows_matches_failures_and_rendered_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    // A Website lead with an email: it matches new-lead-email and everything-to-automations.
    let lead = serde_json::json!({
        "ID": "16a6fc9c-4b99-7980-2f96-afd9f2235b9f", "FirstName": "Farhan", "LastName": "Butt",
        "Mobile": "+923009823391", "Email": "farhan.butt0@example.com", "LeadStatus": "HOT",
        "Source": "Website", "Notes": "Follow-up needed", "CreatedDatetime": "2026-11-27T09:00:00",
        "ModifiedDatetime": "2026-11-28T09:00:00", "DataStatusStr": "Added"
    });
    let f = dir.path().join("lead.json");
    std::fs::write(&f, lead.to_string()).unwrap();
    let stdout = test_rule_on(&f);
    assert!(stdout.contains("MATCH    new-lead-email"), "{stdout}");
    assert!(
        stdout.contains("MATCH    everything-to-automations"),
        "{stdout}"
    );
    assert!(
        stdout.contains("no match appointment-cancelled"),
        "{stdout}"
    );
    assert!(stdout.contains("To: frontdesk@example.com"), "{stdout}");
    assert!(
        stdout.contains("Subject: New lead: Farhan Butt"),
        "{stdout}"
    );
    assert!(stdout.contains("\"type\": \"leads.added\""), "{stdout}");

    // The fixture's first lead (Source: Referral) fails the `in` condition, and says so.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/leads-v1-page0.json");
    let stdout = test_rule_on(&fixture);
    assert!(
        stdout.contains("no match new-lead-email: where[1]"),
        "{stdout}"
    );
    assert!(stdout.contains("Referral"), "{stdout}");
}

#[test]
fn test_rule_builds_the_change_in_the_clinic_it_is_given_and_refuses_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("lead.json");
    let mut lead = test_lead();
    lead["ID"] = json!("lead-1");
    std::fs::write(&f, lead.to_string()).unwrap();
    // Without --clinic the change is the default clinic's, and its webhook body says so.
    let stdout = test_rule_on(&f);
    assert!(stdout.contains("of clinic default"), "{stdout}");
    assert!(stdout.contains("\"clinic\": \"default\""), "{stdout}");
    let (ok, named, stderr) = test_rule_with(&f, &["--clinic", "default"]);
    assert!(ok, "{named}\n{stderr}");
    assert!(named.contains("of clinic default"), "{named}");
    // The example config has no `clinics:`, so `default` is its only clinic.
    let (ok, stdout, stderr) = test_rule_with(&f, &["--clinic", "north"]);
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("no clinic \"north\" in the config (have: default)"),
        "{stderr}"
    );
}
