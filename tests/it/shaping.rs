//! Payload shaping on webhook destinations against a real receiver: `fields` and
//! `exclude_fields` keep and remove fields in `record` and `previous`, `include_previous: false`
//! leaves the previous version out, a `body_template` renders valid JSON whatever the record holds,
//! a template that would not is refused at `check`, and one that breaks on a real record is a dead
//! letter with a clear reason. Rules still see the whole record; `changed_fields` still names
//! every changed field.

use crate::support::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// A config polling the sandbox's leads (retried twice, 100 ms apart) with `templates` as its
/// templates folder when given, then the YAML of `destinations:` and `rules:` as written.
fn config(base_url: &str, templates: Option<&std::path::Path>, rest: &str) -> String {
    let mut c = leads_only(base_url).retry(Retry::every("100ms", 2));
    if let Some(dir) = templates {
        c = c.templates(&dir.display().to_string());
    }
    format!("{}{rest}", c.to_yaml())
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The body each destination's receiver got last.
fn last_body(rx: &Receiver) -> Value {
    rx.received().last().expect("a delivery arrived").json()
}

#[tokio::test]
async fn fields_and_exclude_fields_shape_record_and_previous_but_not_rules_or_changed_fields() {
    let sb = empty_sandbox().await;
    let lead = sb.sandbox.insert("leads", test_lead());
    let id = lead["ID"].as_str().unwrap().to_string();
    let (only, except) = (Receiver::start().await, Receiver::start().await);
    let yaml = config(
        &sb.base_url(),
        None,
        &format!(
            "destinations:
  crm:
    type: webhook
    url: {}
    secret: {SECRET}
    fields: [ID, FirstName, Mobile]
  minimal:
    type: webhook
    url: {}
    secret: {SECRET}
    exclude_fields: [Notes, Email]
    include_previous: false
rules:
  - name: notes-rule
    resource: leads
    where:
      - {{ field: Notes, contains: whitening }}
    notify: [crm, minimal]
",
            only.url, except.url
        ),
    );
    let t = TestDir::new(&yaml);
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();
    drain_outbox(&engine, Duration::from_secs(10)).await;
    let added = last_body(&only);
    assert_eq!(
        keys(&added["data"]["record"]),
        set(&["ID", "FirstName", "Mobile"])
    );
    assert_eq!(added["data"]["record"]["FirstName"], "Ayesha");
    assert!(added["data"]["previous"].is_null());
    // Names are not contents: every field of the added record is still named as changed.
    let changed: BTreeSet<String> =
        serde_json::from_value(added["data"]["changed_fields"].clone()).unwrap();
    assert!(
        changed.contains("Notes") && changed.contains("Email"),
        "{changed:?}"
    );

    // A modification: the rule matches on Notes, which neither body may carry in full.
    sb.sandbox.modify(
        "leads",
        &id,
        json!({"Notes": "Asked about whitening again", "Email": "new@example.com"}),
    );
    poll_report(&engine).await.unwrap();
    drain_outbox(&engine, Duration::from_secs(10)).await;
    assert_eq!(
        only.count(),
        2,
        "the rule saw the whole record, Notes included"
    );
    let modified = last_body(&only);
    assert_eq!(modified["data"]["change"], "modified");
    assert_eq!(
        keys(&modified["data"]["record"]),
        set(&["ID", "FirstName", "Mobile"])
    );
    assert_eq!(
        keys(&modified["data"]["previous"]),
        set(&["ID", "FirstName", "Mobile"])
    );
    let changed: BTreeSet<String> =
        serde_json::from_value(modified["data"]["changed_fields"].clone()).unwrap();
    assert!(
        changed.contains("Notes") && changed.contains("Email"),
        "changed_fields names fields the body leaves out: {changed:?}"
    );
    let body = modified.to_string();
    assert!(
        !body.contains("Asked about") && !body.contains("new@example.com"),
        "{body}"
    );

    let minimal = last_body(&except);
    let record = keys(&minimal["data"]["record"]);
    assert!(
        record.contains("FirstName") && record.contains("LeadStatus"),
        "{record:?}"
    );
    assert!(
        !record.contains("Notes") && !record.contains("Email"),
        "{record:?}"
    );
    assert!(
        minimal["data"].get("previous").is_none(),
        "include_previous: false leaves previous out: {minimal}"
    );
    for r in only.received().iter().chain(except.received().iter()) {
        verify_with_library(r).expect("a shaped body is signed like any other");
    }
}

/// A CRM's inbound shape: strings quoted by the template, values escaped by the registry, lists
/// and numbers as JSON literals.
const CRM_TEMPLATE: &str = r#"{
  "source": "clinicea",
  "clinic": "{{clinic}}",
  "event": "{{resource}}.{{change}}",
  "contact": {
    "name": "{{record.FirstName}} {{record.LastName}}",
    "phone": {{json record.Mobile}},
    "note": "{{default record.Notes "none"}}"
  },
  "changed": {{json changed_fields}}
}
"#;

#[tokio::test]
async fn a_body_template_is_valid_json_for_quotes_backslashes_and_newlines() {
    let sb = empty_sandbox().await;
    let nasty_name = "Ay\"esha\\ \n\t</script>";
    let nasty_note = "line one\nline \"two\" \\ {{ }} \u{1}";
    let mut lead = test_lead();
    lead["FirstName"] = json!(nasty_name);
    lead["Notes"] = json!(nasty_note);
    sb.sandbox.insert("leads", lead);
    let templates = tempfile::tempdir().unwrap();
    std::fs::write(templates.path().join("crm.json.hbs"), CRM_TEMPLATE).unwrap();
    let rx = Receiver::start().await;
    let yaml = config(
        &sb.base_url(),
        Some(templates.path()),
        &format!(
            "destinations:
  crm:
    type: webhook
    url: {}
    secret: {SECRET}
    fields: [FirstName, LastName, Mobile, Notes]
    body_template: crm
rules:
  - {{ name: all, resource: leads, notify: [crm] }}
",
            rx.url
        ),
    );
    let t = TestDir::new(&yaml);
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();
    drain_outbox(&engine, Duration::from_secs(10)).await;
    let got = rx.received();
    assert_eq!(got.len(), 1);
    verify_with_library(&got[0]).expect("a custom body is signed");
    let body: Value = serde_json::from_slice(&got[0].body).expect("the body parses as JSON");
    assert_eq!(body["contact"]["name"], format!("{nasty_name} Khan"));
    assert_eq!(body["contact"]["note"], nasty_note);
    assert_eq!(body["contact"]["phone"], "+92 300 0000000");
    assert_eq!(body["clinic"], "default");
    assert_eq!(body["event"], "leads.added");
    assert!(body["changed"].as_array().is_some_and(|a| !a.is_empty()));
}

#[tokio::test]
async fn a_body_template_that_would_produce_invalid_json_is_refused_at_check() {
    let sb = empty_sandbox().await;
    let templates = tempfile::tempdir().unwrap();
    // A value outside quotes: fine for a number, not for the sample's strings.
    std::fs::write(
        templates.path().join("bare.json.hbs"),
        "{\n  \"name\": {{record.FirstName}}\n}\n",
    )
    .unwrap();
    let yaml = config(
        &sb.base_url(),
        Some(templates.path()),
        &format!(
            "destinations:
  bare:
    type: webhook
    url: http://127.0.0.1:9/hook
    secret: {SECRET}
    body_template: bare
  missing:
    type: webhook
    url: http://127.0.0.1:9/hook
    secret: {SECRET}
    body_template: nowhere
rules:
  - {{ name: all, resource: leads, notify: [bare, missing] }}
"
        ),
    );
    let t = TestDir::new(&yaml);
    let err = load_settings_problems(&t);
    assert!(
        err.iter().any(|p| p.contains("bare.json")
            && p.contains("invalid JSON")
            && p.contains("sample leads record")),
        "{err:?}"
    );
    assert!(
        err.iter()
            .any(|p| p.contains("destinations.missing.body_template")
                && p.contains("nowhere.json.hbs")),
        "{err:?}"
    );
    // The `check` command says the same and fails.
    let (ok, out) = check(&t.config);
    assert!(!ok && out.contains("invalid JSON"), "{out}");

    // Triple braces would print a value unescaped: the template is refused as it is read.
    let raw = tempfile::tempdir().unwrap();
    std::fs::write(
        raw.path().join("raw.json.hbs"),
        "{\"name\": \"{{{record.FirstName}}}\"}",
    )
    .unwrap();
    let t = TestDir::new(&config(&sb.base_url(), Some(raw.path()), ""));
    let err = load_settings_problems(&t);
    assert!(
        err.iter()
            .any(|p| p.contains("raw.json.hbs") && p.contains("triple braces")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_body_that_breaks_on_a_real_record_is_a_dead_letter_with_a_clear_reason() {
    let sb = empty_sandbox().await;
    let mut lead = test_lead();
    lead["Notes"] = json!("");
    sb.sandbox.insert("leads", lead);
    let templates = tempfile::tempdir().unwrap();
    // Valid for the sample (which has notes), not for a lead without any.
    std::fs::write(
        templates.path().join("notes.json.hbs"),
        "{{#if record.Notes}}{\"note\": \"{{record.Notes}}\"}{{else}}no notes{{/if}}",
    )
    .unwrap();
    let rx = Receiver::start().await;
    let yaml = config(
        &sb.base_url(),
        Some(templates.path()),
        &format!(
            "destinations:
  notes:
    type: webhook
    url: {}
    secret: {SECRET}
    body_template: notes
rules:
  - {{ name: all, resource: leads, notify: [notes] }}
",
            rx.url
        ),
    );
    let t = TestDir::new(&yaml);
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();
    drain_outbox(&engine, Duration::from_secs(5)).await;
    assert_eq!(rx.count(), 0, "nothing invalid is sent");
    let dead = dead_list(&engine).await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .reason
            .contains("body template notes.json rendered invalid JSON"),
        "{}",
        dead[0].reason
    );
}

/// The problems of a config that must not load, each as `key: message`.
fn load_settings_problems(t: &TestDir) -> Vec<String> {
    match clinicea_notifier::daemon::settings::load_settings_with(&t.config, &t.vars) {
        Ok(_) => panic!("the config should be refused"),
        Err(e) => e
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect(),
    }
}
