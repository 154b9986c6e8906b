//! Tests of the rule language: compiling, matching, explaining.

use super::*;
use crate::config::yaml_options;
use crate::model::DEFAULT_CLINIC;
use serde_json::json;

const DESTS: [&str; 3] = ["front-desk", "sales-chat", "automations"];
const RESOURCES: [&str; 3] = ["leads", "appointments", "patients"];
const CLINICS: [&str; 3] = [DEFAULT_CLINIC, "north", "south"];

fn owned(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The zones of [`CLINICS`]: `default` in `tz` (the default zone too), `north` in Karachi
/// (+05:00), `south` in New York (-05:00 in November).
fn zones(tz: Tz) -> BTreeMap<String, Tz> {
    BTreeMap::from([
        (DEFAULT_CLINIC.to_string(), tz),
        ("north".to_string(), chrono_tz::Asia::Karachi),
        ("south".to_string(), chrono_tz::America::New_York),
    ])
}

fn compile_with(yaml: &str, tz: Tz) -> Result<RuleSet, Vec<Problem>> {
    let specs: Vec<Spanned<RuleSpec>> = serde_saphyr::from_str(yaml).expect("yaml parses");
    let d = owned(&DESTS);
    let r = owned(&RESOURCES);
    let c = owned(&CLINICS);
    compile(
        &specs,
        &CompileContext {
            destinations: &d,
            resources: &r,
            clinics: &c,
            timezone: tz,
            timezones: &zones(tz),
        },
    )
}

fn set(yaml: &str) -> RuleSet {
    compile_with(yaml, chrono_tz::Asia::Karachi).unwrap_or_else(|p| panic!("{p:#?}"))
}

fn errs(yaml: &str) -> Vec<Problem> {
    match compile_with(yaml, Tz::UTC) {
        Ok(_) => panic!("expected problems for:\n{yaml}"),
        Err(p) => p,
    }
}

fn change(kind: ChangeKind, record: Value, previous: Option<Value>) -> Change {
    let changed_fields = match (&record, &previous) {
        (Value::Object(r), Some(Value::Object(p))) => r
            .iter()
            .filter(|(k, v)| p.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect(),
        (Value::Object(r), None) => r.keys().cloned().collect(),
        _ => vec![],
    };
    Change {
        clinic: DEFAULT_CLINIC.into(),
        resource: "leads".into(),
        id: "x".into(),
        kind,
        record,
        previous,
        changed_fields,
        server_status: None,
        detected_at: chrono::Utc::now(),
    }
}

/// Whether one condition holds for a modified change from `previous` to `record`.
fn holds2(cond: &str, record: Value, previous: Option<Value>) -> bool {
    let yaml = format!("- name: r\n  resource: leads\n  where: [{cond}]\n  notify: [front-desk]\n");
    let rs = set(&yaml);
    let c = change(ChangeKind::Modified, record, previous);
    let routed = !rs.route(&c).is_empty();
    let explained = rs.explain(&c);
    assert_eq!(
        explained[0].matched, routed,
        "{cond}: explain agrees with route"
    );
    assert_eq!(explained[0].failed.is_none(), routed);
    routed
}

fn holds(cond: &str, record: Value) -> bool {
    holds2(cond, record, None)
}

#[test]
fn operators() {
    let rec = json!({
        "Source": "Website", "Email": "a@example.com", "Mobile": "+923001234567",
        "Phone": "0300123", "Age": "42", "Duration": 30, "Price": 12.5, "Tags": ["vip", "new", 7],
        "Notes": "Asked about Laser hair removal", "Blank": "", "Nothing": null,
        "Start": "2026-11-30T09:30:00", "Unset": "0001-01-01T00:00:00", "Flag": true,
        "Patient": {"Address": {"City": "Lahore"}}, "Items": [{"Name": "Peel"}],
    });
    let table: &[(&str, bool)] = &[
        // equals / not_equals
        ("{field: Source, equals: Website}", true),
        ("{field: Source, equals: website}", false),
        ("{field: Source, not_equals: Website}", false),
        ("{field: Source, not_equals: Facebook}", true),
        ("{field: Missing, not_equals: Facebook}", true),
        ("{field: Missing, equals: Facebook}", false),
        ("{field: Duration, equals: 30}", true),
        ("{field: Duration, equals: 30.0}", true),
        ("{field: Duration, equals: \"30\"}", true),
        ("{field: Age, equals: 42}", true),
        ("{field: Price, equals: 12.5}", true),
        ("{field: Flag, equals: true}", true),
        ("{field: Flag, equals: \"true\"}", true),
        ("{field: Flag, equals: 1}", false),
        // in / not_in
        ("{field: Source, in: [Website, Facebook, Instagram]}", true),
        ("{field: Source, in: [Referral]}", false),
        ("{field: Source, not_in: [Referral, Walk-in]}", true),
        ("{field: Source, not_in: [Website]}", false),
        ("{field: Missing, not_in: [Website]}", true),
        ("{field: Missing, in: [Website]}", false),
        ("{field: Duration, in: [15, 30]}", true),
        // matches
        ("{field: Email, matches: '@example\\.com$'}", true),
        ("{field: Email, matches: '^A@'}", false),
        ("{field: Email, matches: '(?i)^A@'}", true),
        ("{field: Duration, matches: '^3'}", true),
        ("{field: Missing, matches: '.*'}", false),
        ("{field: Nothing, matches: '.*'}", false),
        // exists
        ("{field: Email, exists: true}", true),
        ("{field: Missing, exists: true}", false),
        ("{field: Nothing, exists: true}", false),
        ("{field: Blank, exists: true}", false),
        ("{field: Unset, exists: true}", false),
        ("{field: Missing, exists: false}", true),
        ("{field: Blank, exists: false}", true),
        ("{field: Duration, exists: true}", true),
        ("{field: Flag, exists: true}", true),
        // contains
        ("{field: Notes, contains: Laser}", true),
        ("{field: Notes, contains: laser}", false),
        ("{field: Tags, contains: vip}", true),
        ("{field: Tags, contains: vi}", false),
        ("{field: Tags, contains: 7}", true),
        ("{field: Missing, contains: x}", false),
        // gt / gte / lt / lte on numbers
        ("{field: Duration, gt: 29}", true),
        ("{field: Duration, gt: 30}", false),
        ("{field: Duration, gte: 30}", true),
        ("{field: Duration, lt: 30.5}", true),
        ("{field: Duration, lte: 29}", false),
        ("{field: Age, gt: 10}", true),
        ("{field: Age, lt: \"100\"}", true),
        ("{field: Price, gte: 12.5}", true),
        ("{field: Source, gt: 1}", false),
        ("{field: Missing, gt: 1}", false),
        ("{field: Tags, gt: 1}", false),
        // timestamps (Asia/Karachi, +05:00)
        ("{field: Start, gt: '2026-11-30T04:00:00Z'}", true),
        ("{field: Start, gt: '2026-11-30T04:30:00Z'}", false),
        ("{field: Start, gte: '2026-11-30T04:30:00Z'}", true),
        ("{field: Start, lt: '2026-11-30T09:30:01+05:00'}", true),
        ("{field: Start, lt: '2026-11-30T09:30:00'}", false),
        ("{field: Start, lte: '2026-11-30'}", false),
        ("{field: Start, gt: '2026-11-30'}", true),
        ("{field: Unset, lt: '2026-11-30T00:00:00Z'}", false),
        ("{field: Unset, gt: '1900-01-01T00:00:00Z'}", false),
        ("{field: Duration, gt: '2026-11-30T00:00:00Z'}", false),
        // dotted paths
        ("{field: Patient.Address.City, equals: Lahore}", true),
        ("{field: record.Patient.Address.City, equals: Lahore}", true),
        ("{field: Items.0.Name, equals: Peel}", true),
        ("{field: Items.1.Name, exists: true}", false),
        ("{field: Patient.Address.City.Nope, exists: true}", false),
        // combinators
        (
            "{any: [{field: Source, equals: Facebook}, {field: Duration, gt: 10}]}",
            true,
        ),
        (
            "{any: [{field: Source, equals: Facebook}, {field: Duration, gt: 100}]}",
            false,
        ),
        (
            "{all: [{field: Source, equals: Website}, {field: Duration, gt: 10}]}",
            true,
        ),
        (
            "{all: [{field: Source, equals: Website}, {field: Duration, gt: 100}]}",
            false,
        ),
        ("{not: {field: Source, equals: Website}}", false),
        ("{not: {field: Source, equals: Facebook}}", true),
        (
            "{not: {any: [{field: Source, equals: Facebook}, {field: Blank, exists: true}]}}",
            true,
        ),
        ("{not: {not: {field: Source, equals: Website}}}", true),
    ];
    for (cond, want) in table {
        assert_eq!(holds(cond, rec.clone()), *want, "{cond}");
    }
}

#[test]
fn phone_numbers_keep_their_leading_zeros_and_plus() {
    let rec = json!({"Phone": "0300123", "Mobile": "+923001234567", "Num": 300123});
    let table: &[(&str, bool)] = &[
        ("{field: Phone, equals: \"0300123\"}", true),
        ("{field: Phone, equals: 300123}", false),
        ("{field: Phone, in: [\"0300123\", \"0300999\"]}", true),
        ("{field: Phone, in: [300123]}", false),
        ("{field: Mobile, equals: \"+923001234567\"}", true),
        ("{field: Mobile, equals: 923001234567}", false),
        ("{field: Num, equals: \"0300123\"}", false),
        ("{field: Num, equals: \"300123\"}", true),
        ("{field: Phone, matches: '^0300'}", true),
        ("{field: Phone, contains: \"0300\"}", true),
        // Ordering is numeric, where leading zeros do not matter.
        ("{field: Phone, gt: 300122}", true),
    ];
    for (cond, want) in table {
        assert_eq!(holds(cond, rec.clone()), *want, "{cond}");
    }
}

#[test]
fn empty_missing_and_null_are_told_apart_by_equals() {
    let rec = json!({"Blank": "", "Nothing": null});
    let table: &[(&str, bool)] = &[
        ("{field: Blank, equals: \"\"}", true),
        ("{field: Nothing, equals: \"\"}", false),
        ("{field: Missing, equals: \"\"}", false),
        ("{field: Nothing, equals: null}", true),
        ("{field: Nothing, equals: ~}", true),
        ("{field: Blank, equals: null}", false),
        ("{field: Missing, equals: null}", false),
        ("{field: Nothing, not_equals: null}", false),
        ("{field: Missing, not_equals: null}", true),
        ("{field: Nothing, in: [null, \"\"]}", true),
        ("{field: Blank, in: [null, \"\"]}", true),
    ];
    for (cond, want) in table {
        assert_eq!(holds(cond, rec.clone()), *want, "{cond}");
    }
}

#[test]
fn number_strings_compare_numerically_only_for_ordering() {
    let rec = json!({"A": "42", "B": " 7 ", "C": "1e3", "D": "inf", "E": "0x10", "F": "abc"});
    let table: &[(&str, bool)] = &[
        ("{field: A, gt: 10}", true),
        ("{field: A, gt: 9}", true), // not "42" > "9" as text, which would be false
        ("{field: B, lt: 10}", true),
        ("{field: C, gte: 1000}", true),
        ("{field: D, gt: 0}", false),
        ("{field: E, gt: 0}", false),
        ("{field: F, gt: 0}", false),
        ("{field: A, equals: 42}", true),
        ("{field: B, equals: 7}", false),
    ];
    for (cond, want) in table {
        assert_eq!(holds(cond, rec.clone()), *want, "{cond}");
    }
}

#[test]
fn timestamps_without_offset_are_clinic_time() {
    // The same wall clock in two zones.
    let yaml = "- {name: r, resource: leads, where: [{field: T, gte: '2026-11-30T09:00:00+05:00'}], notify: [front-desk]}";
    let c = change(ChangeKind::Added, json!({"T": "2026-11-30T09:00:00"}), None);
    let karachi = compile_with(yaml, chrono_tz::Asia::Karachi).unwrap();
    assert_eq!(karachi.route(&c).len(), 1);
    let utc = compile_with(yaml, Tz::UTC).unwrap();
    assert_eq!(utc.route(&c).len(), 1, "09:00Z is after 04:00Z");
    let yaml = "- {name: r, resource: leads, where: [{field: T, lt: '2026-11-30T06:00:00Z'}], notify: [front-desk]}";
    assert_eq!(
        compile_with(yaml, chrono_tz::Asia::Karachi)
            .unwrap()
            .route(&c)
            .len(),
        1
    );
    assert_eq!(compile_with(yaml, Tz::UTC).unwrap().route(&c).len(), 0);
    // Values with their own offset, fractions and a space separator.
    for t in [
        "2026-11-30T04:00:00Z",
        "2026-11-30T09:00:00+05:00",
        "2026-11-30T09:00:00.500",
        "2026-11-30 09:00:00",
    ] {
        let c = change(ChangeKind::Added, json!({ "T": t }), None);
        assert_eq!(
            compile_with(yaml, chrono_tz::Asia::Karachi)
                .unwrap()
                .route(&c)
                .len(),
            1,
            "{t}"
        );
    }
}

#[test]
fn previous_prefix_reads_the_stored_version() {
    let prev = json!({"AppointmentStatus": "Confirmed"});
    let now = json!({"AppointmentStatus": "Cancelled"});
    let cond = "{field: previous.AppointmentStatus, equals: Confirmed}";
    assert!(holds2(cond, now.clone(), Some(prev.clone())));
    assert!(!holds2(cond, now.clone(), None));
    assert!(!holds2(
        "{field: previous.AppointmentStatus, exists: true}",
        now.clone(),
        None
    ));
    assert!(holds2(
        "{field: AppointmentStatus, equals: Cancelled}",
        now,
        Some(prev)
    ));
}

#[test]
fn changed_lists_and_transitions() {
    let prev = json!({"AppointmentStatus": "Confirmed", "Notes": "", "Staff": {"Name": "A"}});
    let now = json!({"AppointmentStatus": "Cancelled", "Notes": "", "Staff": {"Name": "B"}});
    let table: &[(&str, bool)] = &[
        ("[AppointmentStatus]", true),
        ("[Notes]", false),
        ("[Notes, AppointmentStatus]", true),
        ("[Staff.Name]", true),
        ("{AppointmentStatus: {to: Cancelled}}", true),
        ("{AppointmentStatus: {to: [No Show, Cancelled]}}", true),
        (
            "{AppointmentStatus: {from: Confirmed, to: Cancelled}}",
            true,
        ),
        (
            "{AppointmentStatus: {from: Scheduled, to: Cancelled}}",
            false,
        ),
        ("{AppointmentStatus: {from: Confirmed}}", true),
        ("{AppointmentStatus: {to: Confirmed}}", false),
        ("{AppointmentStatus: {}}", true),
        ("{AppointmentStatus: ~}", true),
        ("{Notes: {to: \"\"}}", false),
        (
            "{Notes: {to: \"\"}, AppointmentStatus: {to: Cancelled}}",
            true,
        ),
    ];
    for (changed, want) in table {
        let yaml = format!(
            "- name: r\n  resource: leads\n  on: [modified]\n  changed: {changed}\n  notify: [automations]\n"
        );
        let rs = set(&yaml);
        let c = change(ChangeKind::Modified, now.clone(), Some(prev.clone()));
        assert_eq!(!rs.route(&c).is_empty(), *want, "{changed}");
        assert_eq!(rs.explain(&c)[0].matched, *want, "{changed}");
    }
    // An added record has no previous version: `changed` never holds.
    let rs = set("- {name: r, changed: [AppointmentStatus], notify: [automations]}");
    assert!(rs.route(&change(ChangeKind::Added, now, None)).is_empty());
}

#[test]
fn resource_and_kind_filters() {
    let rs = set("
- {name: leads-added, resource: leads, on: [added], notify: [front-desk]}
- {name: leads-any, resource: leads, notify: [sales-chat]}
- {name: appts, resource: appointments, notify: [automations]}
- {name: all-deleted, resource: '*', on: [deleted], notify: [automations]}
- {name: off, enabled: false, notify: [automations]}
");
    let names = |c: &Change| -> Vec<String> {
        rs.route(c)
            .first()
            .map(|r| r.rules.clone())
            .unwrap_or_default()
    };
    let mut c = change(ChangeKind::Added, json!({}), None);
    assert_eq!(names(&c), ["leads-added", "leads-any"]);
    c.kind = ChangeKind::Deleted;
    assert_eq!(names(&c), ["leads-any", "all-deleted"]);
    c.resource = "appointments".into();
    assert_eq!(names(&c), ["appts", "all-deleted"]);
    c.resource = "patients".into();
    c.kind = ChangeKind::Modified;
    assert!(names(&c).is_empty());
    assert_eq!(rs.len(), 5);
    assert!(!rs.is_enabled("off"));
    assert!(rs.is_enabled("appts"));
    assert_eq!(rs.rule_names().collect::<Vec<_>>()[4], "off");
    let ex = rs.explain(&c);
    assert_eq!(
        ex[0].failed.as_deref(),
        Some("on: the change is modified, the rule is on [added]")
    );
    assert_eq!(
        ex[1].failed.as_deref(),
        Some("resource: the change is to patients, the rule is for leads")
    );
    assert_eq!(
        ex[4].failed.as_deref(),
        Some("the rule is disabled (enabled: false)")
    );
}

/// `change` as if it came from `clinic`.
fn from(clinic: &str, mut change: Change) -> Change {
    change.clinic = clinic.into();
    change
}

#[test]
fn a_rule_for_one_clinic_skips_the_others_and_explain_says_why() {
    let rs = set("
- {name: north-leads, clinic: north, resource: leads, notify: [front-desk]}
- {name: everywhere, resource: leads, notify: [automations]}
");
    let lead = change(ChangeKind::Added, json!({"ID": "1"}), None);
    let north = from("north", lead.clone());
    let routes = rs.route(&north);
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0].destination, "front-desk");
    assert_eq!(routes[0].rules, ["north-leads", "everywhere"]);
    assert!(rs.matches_any(&north));

    let south = from("south", lead.clone());
    let routes = rs.route(&south);
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0].destination, "automations");
    let ex = rs.explain(&south);
    assert!(!ex[0].matched);
    assert_eq!(
        ex[0].failed.as_deref(),
        Some("clinic: the change is from south, the rule is for north")
    );
    assert!(ex[1].matched);

    // Without `clinic:` a config's one clinic, `default`, is just another clinic.
    let default = from(DEFAULT_CLINIC, lead);
    assert_eq!(rs.route(&default).len(), 1);
    assert_eq!(
        rs.explain(&default)[0].failed.as_deref(),
        Some("clinic: the change is from default, the rule is for north")
    );
}

#[test]
fn a_rule_for_a_list_of_clinics_matches_each_of_them_and_no_other() {
    let rs = set("
- name: two
  clinic: [north, south, north]
  notify: [front-desk]
- {name: only-default, clinic: default, notify: [automations]}
");
    let lead = change(ChangeKind::Added, json!({"ID": "1"}), None);
    for clinic in ["north", "south"] {
        let routes = rs.route(&from(clinic, lead.clone()));
        let dests: Vec<&str> = routes.iter().map(|r| r.destination.as_str()).collect();
        assert_eq!(dests, ["front-desk"], "{clinic}");
    }
    let routes = rs.route(&from(DEFAULT_CLINIC, lead.clone()));
    let dests: Vec<&str> = routes.iter().map(|r| r.destination.as_str()).collect();
    assert_eq!(dests, ["automations"]);
    // A clinic the list does not hold (`test-rule --clinic` refuses one the config lacks, but the
    // rules must not match it either way).
    let elsewhere = from("east", lead);
    assert!(rs.route(&elsewhere).is_empty());
    assert_eq!(
        rs.explain(&elsewhere)[0].failed.as_deref(),
        Some("clinic: the change is from east, the rule is for [north, south]")
    );
    assert_eq!(rs.clinics(), CLINICS);
}

#[test]
fn check_shows_the_clinics_of_a_rule_that_names_some() {
    let rs = set("
- {name: north-leads, clinic: north, resource: leads, on: [added], notify: [front-desk]}
- {name: two, clinic: [north, south], notify: [automations]}
- {name: everywhere, resource: leads, notify: [automations]}
");
    let lines = rs.describe();
    assert!(
        lines[0].ends_with("leads from north on [added] -> front-desk"),
        "{lines:?}"
    );
    assert!(
        lines[1].ends_with("* from [north, south] on [added, modified, deleted] -> automations"),
        "{lines:?}"
    );
    assert!(!lines[2].contains("from"), "{lines:?}");
}

#[test]
fn a_timestamp_without_offset_is_read_in_the_clinic_s_zone() {
    // 09:00 wall clock is 04:00Z in Karachi (north) and 14:00Z in New York (south).
    let at_nine = change(ChangeKind::Added, json!({"T": "2026-11-30T09:00:00"}), None);
    let after_noon_utc =
        "- {name: r, where: [{field: T, gt: '2026-11-30T12:00:00Z'}], notify: [front-desk]}";
    let rs = compile_with(after_noon_utc, Tz::UTC).unwrap();
    assert!(rs.route(&from("north", at_nine.clone())).is_empty());
    assert_eq!(rs.route(&from("south", at_nine.clone())).len(), 1);
    assert!(rs.route(&from(DEFAULT_CLINIC, at_nine.clone())).is_empty());
    // A clinic without a zone reads it in UTC.
    assert!(rs.route(&from("east", at_nine)).is_empty());

    // The rule's own offset-less literal: in its clinic's zone when it names exactly one, else in
    // the default zone (UTC here). 10:00 in New York is 15:00Z; 10:00 in UTC is 10:00Z.
    let at = |t: &str| from("south", change(ChangeKind::Added, json!({ "T": t }), None));
    let noon_utc = at("2026-11-30T12:00:00Z");
    let yaml = |clinic: &str| {
        format!("- {{name: r, clinic: {clinic}, where: [{{field: T, gt: '2026-11-30T10:00:00'}}], notify: [front-desk]}}")
    };
    let one = compile_with(&yaml("south"), Tz::UTC).unwrap();
    assert!(one.route(&noon_utc).is_empty(), "12:00Z is before 15:00Z");
    assert_eq!(one.route(&at("2026-11-30T15:30:00Z")).len(), 1);
    let several = compile_with(&yaml("[south, north]"), Tz::UTC).unwrap();
    assert_eq!(several.route(&noon_utc).len(), 1, "12:00Z is after 10:00Z");
    let every = compile_with(
        "- {name: r, where: [{field: T, gt: '2026-11-30T10:00:00'}], notify: [front-desk]}",
        Tz::UTC,
    )
    .unwrap();
    assert_eq!(every.route(&noon_utc).len(), 1);
}

#[test]
fn each_destination_once_with_first_rule_and_all_rules() {
    let rs = set("
- {name: a, notify: [automations]}
- {name: b, where: [{field: X, equals: 1}], notify: [front-desk]}
- {name: c, notify: [front-desk, automations, sales-chat]}
");
    let c = change(ChangeKind::Added, json!({"X": 1}), None);
    let routes = rs.route(&c);
    let all = owned(&["a", "b", "c"]);
    assert_eq!(
        routes,
        vec![
            Route {
                destination: "automations".into(),
                rule: "a".into(),
                rules: all.clone()
            },
            Route {
                destination: "front-desk".into(),
                rule: "b".into(),
                rules: all.clone()
            },
            Route {
                destination: "sales-chat".into(),
                rule: "c".into(),
                rules: all
            },
        ]
    );
    let c = change(ChangeKind::Added, json!({"X": 2}), None);
    let routes = rs.route(&c);
    assert_eq!(routes.len(), 3);
    assert_eq!(routes[1].rule, "c");
    assert_eq!(routes[1].rules, owned(&["a", "c"]));
}

#[test]
fn explanations_name_the_first_failing_condition() {
    let rs = set("
- name: new-lead-email
  resource: leads
  on: [added]
  where:
    - { field: Email, exists: true }
    - { field: Source, in: [Website, Facebook, Instagram] }
  notify: [front-desk, sales-chat]
");
    let c = change(
        ChangeKind::Added,
        json!({"Email": "a@b.c", "Source": "Referral"}),
        None,
    );
    let ex = rs.explain(&c);
    assert_eq!(
        ex,
        vec![Explanation {
            rule: "new-lead-email".into(),
            matched: false,
            failed: Some(
                "where[1]: Source is \"Referral\", not in [Website, Facebook, Instagram]".into()
            ),
        }]
    );
    let c = change(
        ChangeKind::Added,
        json!({"Email": "", "Source": "Website"}),
        None,
    );
    assert_eq!(
        rs.explain(&c)[0].failed.as_deref(),
        Some("where[0]: Email is empty (\"\"), so it does not exist")
    );
    let c = change(
        ChangeKind::Added,
        json!({"Email": "a@b", "Source": "Website"}),
        None,
    );
    assert_eq!(
        rs.explain(&c)[0],
        Explanation {
            rule: "new-lead-email".into(),
            matched: true,
            failed: None
        }
    );

    let rs = set("
- {name: n, where: [{not: {field: S, equals: X}}], notify: [front-desk]}
- {name: a, where: [{any: [{field: S, equals: 'Y'}, {field: T, gt: 5}]}], notify: [front-desk]}
- {name: t, where: [{field: U, lt: '2026-01-01T00:00:00Z'}], notify: [front-desk]}
- {name: ch, changed: {S: {to: Z}}, notify: [front-desk]}
");
    let c = change(
        ChangeKind::Modified,
        json!({"S": "X", "T": 3, "U": "0001-01-01T00:00:00"}),
        Some(json!({"S": "W", "T": 3, "U": "0001-01-01T00:00:00"})),
    );
    let failed: Vec<String> = rs
        .explain(&c)
        .into_iter()
        .map(|e| e.failed.unwrap())
        .collect();
    assert_eq!(failed[0], "where[0]: not: S is \"X\", which equals X held");
    assert_eq!(
        failed[1],
        "where[0]: none of any held (any[0]: S is \"X\", not Y; any[1]: T is 3, not greater than 5)"
    );
    assert_eq!(
        failed[2],
        "where[0]: U is the unset date \"0001-01-01T00:00:00\", which is never less than anything"
    );
    assert_eq!(
        failed[3],
        "changed: S changed from \"W\" to \"X\", not to Z"
    );
}

#[test]
fn variables_are_substituted_in_condition_values() {
    // Parsing alone leaves `${X}` as written: `config::vars::substitute` replaces it in condition
    // strings like everywhere else (exercised in that module's tests with a map).
    let rs = set("- {name: r, where: [{field: A, equals: '${X}'}], notify: [front-desk]}");
    assert_eq!(
        rs.route(&change(ChangeKind::Added, json!({"A": "${X}"}), None))
            .len(),
        1
    );
}

#[test]
fn fixture_records_route() {
    let leads: Vec<Value> =
        serde_json::from_str(include_str!("../../../tests/fixtures/leads-v1-page0.json")).unwrap();
    let rs = set("
- name: new-lead-email
  resource: leads
  on: [added]
  where:
    - { field: Email, exists: true }
    - { field: Source, in: [Website, Facebook, Instagram] }
  notify: [front-desk, sales-chat]
");
    let hits = leads
        .iter()
        .filter(|l| {
            !rs.route(&change(ChangeKind::Added, (*l).clone(), None))
                .is_empty()
        })
        .count();
    let want = leads
        .iter()
        .filter(|l| {
            l["Email"].as_str().is_some_and(|e| !e.is_empty())
                && ["Website", "Facebook", "Instagram"]
                    .contains(&l["Source"].as_str().unwrap_or(""))
        })
        .count();
    assert_eq!(hits, want);
    assert!(hits > 0);
}

// ---------------------------------------------------------------------------------------------
// Config errors
// ---------------------------------------------------------------------------------------------

/// Asserts exactly one problem, at `line`, with `key`, whose message names rule `rule` and contains
/// `text`.
fn one_problem(yaml: &str, line: u64, key: &str, rule: &str, text: &str) {
    let p = errs(yaml);
    assert_eq!(p.len(), 1, "{p:#?}");
    let p = &p[0];
    assert_eq!(p.key, key, "{p}");
    assert_eq!(p.line, Some(line), "{p}");
    assert!(p.message.contains(&format!("rule `{rule}`")), "{p}");
    assert!(p.message.contains(text), "{p}");
}

#[test]
fn config_errors() {
    let table: &[(&str, u64, &str, &str)] = &[
        (
            "- name: new-lead-email\n  where:\n    - {field: Email, exists: true}\n    - {field: Email, matches: '(unclosed'}\n  notify: [front-desk]\n",
            4,
            "rules[new-lead-email].where[1].matches",
            "invalid regular expression \"(unclosed\": unclosed group",
        ),
        (
            "- name: r\n  where:\n    - field: Source\n      equal: Website\n  notify: [front-desk]\n",
            4,
            "rules[r].where[0].equal",
            "unknown operator `equal` (did you mean `equals`?)",
        ),
        (
            "- name: r\n  where:\n    - {field: Source}\n  notify: [front-desk]\n",
            3,
            "rules[r].where[0]",
            "the condition on `Source` has no operator",
        ),
        (
            "- name: r\n  where:\n    - {field: Source, equals: A, in: [B]}\n  notify: [front-desk]\n",
            3,
            "rules[r].where[0]",
            "has 2 operators (`equals`, `in`)",
        ),
        (
            "- name: r\n  where:\n    - {equals: A}\n  notify: [front-desk]\n",
            3,
            "rules[r].where[0].field",
            "has no `field`",
        ),
        (
            "- name: r\n  where:\n    - {field: A, equals: 1, any: [{field: B, exists: true}]}\n  notify: [front-desk]\n",
            3,
            "rules[r].where[0]",
            "`any` must stand alone",
        ),
        (
            "- name: r\n  notify: [front-desk, nowhere]\n",
            2,
            "rules[r].notify[1]",
            "destination `nowhere` is not defined under `destinations:` (defined: front-desk, sales-chat, automations)",
        ),
        (
            "- name: r\n  resource: bills\n  notify: [front-desk]\n",
            2,
            "rules[r].resource",
            "resource `bills` is not defined under `resources:`",
        ),
        (
            "- name: r\n  on: [added]\n  changed: [Email]\n  notify: [front-desk]\n",
            3,
            "rules[r].changed",
            "can never fire",
        ),
        (
            "- name: r\n  on: []\n  notify: [front-desk]\n",
            2,
            "rules[r].on",
            "can never fire",
        ),
        (
            "- name: r\n  where:\n    - {field: Source, in: []}\n  notify: [front-desk]\n",
            3,
            "rules[r].where[0].in",
            "can never fire",
        ),
        (
            "- name: r\n  where:\n    - any: []\n  notify: [front-desk]\n",
            3,
            "rules[r].where[0].any",
            "can never fire",
        ),
        (
            "- name: r\n  changed: []\n  notify: [front-desk]\n",
            2,
            "rules[r].changed",
            "can never fire",
        ),
        (
            "- name: r\n  notify: []\n",
            2,
            "rules[r].notify",
            "`notify` is empty",
        ),
        (
            "- name: r\n  resource: leads\n",
            1,
            "rules[r].notify",
            "has no `notify`",
        ),
        (
            "- name: r\n  where:\n    - {field: Age, gt: ten}\n  notify: [front-desk]\n",
            3,
            "rules[r].where[0].gt",
            "\"ten\" is neither",
        ),
        (
            "- name: r\n  where:\n    - {field: Age, lte: true}\n  notify: [front-desk]\n",
            3,
            "rules[r].where[0].lte",
            "a boolean is neither",
        ),
        (
            "- name: r\n  where:\n    - {field: D, gt: '0001-01-01T00:00:00'}\n  notify: [front-desk]\n",
            3,
            "rules[r].where[0].gt",
            "unset date",
        ),
        (
            "- name: r\n  where:\n    - {field: A, equals: [1, 2]}\n  notify: [front-desk]\n",
            3,
            "rules[r].where[0].equals",
            "for a list of values use `in`",
        ),
        (
            "- name: r\n  where:\n    - {field: A, exists: yes please}\n  notify: [front-desk]\n",
            3,
            "rules[r].where[0].exists",
            "takes true or false",
        ),
        (
            "- name: r\n  where:\n    - {field: A, in: Website}\n  notify: [front-desk]\n",
            3,
            "rules[r].where[0].in",
            "takes a list",
        ),
        (
            "- name: r\n  where:\n    - {field: 'A..B', exists: true}\n  notify: [front-desk]\n",
            3,
            "rules[r].where[0].field",
            "empty part",
        ),
        (
            "- name: r\n  where:\n    - not:\n        field: A\n        matches: '['\n  notify: [front-desk]\n",
            5,
            "rules[r].where[0].not.matches",
            "invalid regular expression",
        ),
        (
            "- name: r\n  where:\n    - any:\n        - {field: A, exists: true}\n        - {field: B, eq: 1}\n  notify: [front-desk]\n",
            5,
            "rules[r].where[0].any[1].eq",
            "unknown operator `eq`",
        ),
        (
            "- name: r\n  changed: {Status: {too: X}}\n  notify: [front-desk]\n",
            2,
            "rules[r].changed.Status.too",
            "use `from` and/or `to`",
        ),
        (
            "- name: r\n  changed: [previous.Status]\n  notify: [front-desk]\n",
            2,
            "rules[r].changed[0]",
            "without `previous.`",
        ),
        (
            "- name: r\n  where:\n    - Source\n  notify: [front-desk]\n",
            3,
            "rules[r].where[0]",
            "a condition is a map",
        ),
    ];
    for (yaml, line, key, text) in table {
        let rule = &key["rules[".len()..key.find(']').unwrap()];
        one_problem(yaml, *line, key, rule, text);
    }
}

#[test]
fn a_clinic_that_is_not_in_the_config_is_a_problem_at_its_line() {
    one_problem(
        "- name: r\n  clinic: east\n  notify: [front-desk]\n",
        2,
        "rules[r].clinic",
        "r",
        "clinic `east` is not defined under `clinics:` (defined: default, north, south); leave `clinic` out for every clinic",
    );
    one_problem(
        "- name: r\n  clinic:\n    - north\n    - est\n  notify: [front-desk]\n",
        4,
        "rules[r].clinic[1]",
        "r",
        "clinic `est` is not defined under `clinics:`",
    );
    one_problem(
        "- name: r\n  clinic: []\n  notify: [front-desk]\n",
        2,
        "rules[r].clinic",
        "r",
        "`clinic: []` names no clinic, so the rule can never fire",
    );
    one_problem(
        "- name: r\n  clinic: {north: true}\n  notify: [front-desk]\n",
        2,
        "rules[r].clinic",
        "r",
        "expected a clinic name or a list of them, found a map",
    );
    // A config without `clinics:` has one clinic, and the message says which.
    let specs: Vec<Spanned<RuleSpec>> =
        serde_saphyr::from_str("- {name: r, clinic: north, notify: [front-desk]}").unwrap();
    let d = owned(&DESTS);
    let r = owned(&RESOURCES);
    let only = owned(&[DEFAULT_CLINIC]);
    let p = compile(
        &specs,
        &CompileContext {
            destinations: &d,
            resources: &r,
            clinics: &only,
            timezone: Tz::UTC,
            timezones: &BTreeMap::new(),
        },
    )
    .unwrap_err();
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].message
            .contains("(defined: default; without `clinics:` the one clinic is `default`)"),
        "{}",
        p[0]
    );
}

#[test]
fn a_clinic_named_by_a_number_is_that_name() {
    let specs: Vec<Spanned<RuleSpec>> =
        serde_saphyr::from_str("- {name: r, clinic: [12], notify: [front-desk]}").unwrap();
    let d = owned(&DESTS);
    let r = owned(&RESOURCES);
    let clinics = owned(&["12"]);
    let rs = compile(
        &specs,
        &CompileContext {
            destinations: &d,
            resources: &r,
            clinics: &clinics,
            timezone: Tz::UTC,
            timezones: &BTreeMap::new(),
        },
    )
    .unwrap_or_else(|p| panic!("{p:#?}"));
    let lead = change(ChangeKind::Added, json!({"ID": "1"}), None);
    assert_eq!(rs.route(&from("12", lead.clone())).len(), 1);
    assert!(rs.route(&from(DEFAULT_CLINIC, lead)).is_empty());
}

#[test]
fn duplicate_names() {
    let p = errs("- {name: a, notify: [front-desk]}\n- {name: b, notify: [front-desk]}\n- {name: a, notify: [front-desk]}\n");
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(p[0].key, "rules[a].name");
    assert_eq!(p[0].line, Some(3));
    assert!(p[0].message.contains("rule `a`"));
    assert!(p[0].message.contains("first on line 1"), "{}", p[0]);
}

#[test]
fn every_problem_is_reported() {
    let p = errs(
        "
- name: one
  resource: bills
  where:
    - {field: A, matches: '('}
    - {field: B, gt: soon}
  notify: [nowhere]
- name: two
  on: []
  notify: []
",
    );
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "rules[one].resource",
            "rules[one].where[0].matches",
            "rules[one].where[1].gt",
            "rules[one].notify[0]",
            "rules[two].on",
            "rules[two].notify",
        ]
    );
    let lines: Vec<Option<u64>> = p.iter().map(|p| p.line).collect();
    assert_eq!(
        lines,
        [Some(3), Some(5), Some(6), Some(7), Some(9), Some(10)]
    );
    assert!(p[4].message.contains("rule `two`"));
}

#[test]
fn unknown_rule_keys_and_kinds_are_serde_errors() {
    let e = serde_saphyr::from_str::<Vec<Spanned<RuleSpec>>>("- {name: a, notfy: [x]}")
        .unwrap_err()
        .to_string();
    assert!(e.contains("notfy"), "{e}");
    let e =
        serde_saphyr::from_str::<Vec<Spanned<RuleSpec>>>("- {name: a, on: [created], notify: [x]}")
            .unwrap_err()
            .to_string();
    assert!(e.contains("created"), "{e}");
}

#[test]
fn fixture_shapes_unset_dates() {
    let patients: Vec<Value> =
        serde_json::from_str(include_str!("../../../tests/fixtures/patients-v1.json")).unwrap();
    let rs =
        set("- {name: r, where: [{field: ModifiedDatetime, exists: true}], notify: [front-desk]}");
    let unset = patients
        .iter()
        .filter(|p| p["ModifiedDatetime"] == "0001-01-01T00:00:00")
        .count();
    assert!(unset > 0);
    let routed = patients
        .iter()
        .filter(|p| {
            !rs.route(&change(ChangeKind::Added, (*p).clone(), None))
                .is_empty()
        })
        .count();
    assert_eq!(routed, patients.len() - unset);
}

#[test]
fn yaml_1_1_booleans_and_leading_zeros_need_the_recommended_options() {
    // With serde-saphyr's defaults an unquoted `Y` is the boolean true and `0300123` the number
    // 300123; with `yaml_options()` both stay strings, as the operator meant.
    let yaml = "- {name: r, where: [{field: A, equals: Y}, {field: P, equals: 0300123}], notify: [front-desk]}";
    let c = change(ChangeKind::Added, json!({"A": "Y", "P": "0300123"}), None);
    let d = owned(&DESTS);
    let r = owned(&RESOURCES);
    let clinics = owned(&CLINICS);
    let ctx = CompileContext {
        destinations: &d,
        resources: &r,
        clinics: &clinics,
        timezone: Tz::UTC,
        timezones: &zones(Tz::UTC),
    };
    let default: Vec<Spanned<RuleSpec>> = serde_saphyr::from_str(yaml).unwrap();
    assert!(compile(&default, &ctx).unwrap().route(&c).is_empty());
    let strict: Vec<Spanned<RuleSpec>> =
        serde_saphyr::from_str_with_options(yaml, yaml_options()).unwrap();
    assert_eq!(compile(&strict, &ctx).unwrap().route(&c).len(), 1);
    // Real booleans and numbers still are.
    let yaml =
        "- {name: r, where: [{field: B, equals: true}, {field: N, gt: 10}], notify: [front-desk]}";
    let c = change(ChangeKind::Added, json!({"B": true, "N": 11}), None);
    let strict: Vec<Spanned<RuleSpec>> =
        serde_saphyr::from_str_with_options(yaml, yaml_options()).unwrap();
    assert_eq!(compile(&strict, &ctx).unwrap().route(&c).len(), 1);
}

#[test]
fn dotted_paths() {
    let get = |v, p| Path::parse(p).unwrap().in_value(v).cloned();
    let v = json!({"a": {"b": [10, {"c": null}]}});
    assert_eq!(get(&v, "a.b.0"), Some(json!(10)));
    assert_eq!(get(&v, "a.b.1.c"), Some(Value::Null));
    assert_eq!(get(&v, "a.x"), None);
    assert_eq!(get(&v, "a.b.x"), None);
}
