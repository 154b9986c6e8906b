//! The bodies of the fuzz targets, shared with the test suite (`tests/it/props.rs` includes this
//! file with `#[path]`, so the committed corpus runs in every `cargo test`).
//!
//! Each body panics only when an invariant breaks: parsing never panics, a record compared with
//! itself is never a change, and a change's id is stable.

use clinicea_notifier::config::{self, yaml_options, RuleSpec};
use clinicea_notifier::daemon::settings;
use clinicea_notifier::ingest::{client, diff};
use clinicea_notifier::route::rules;
use std::collections::HashMap;
use std::path::Path;

/// `config_parse`: any bytes as a config file. Loading and compiling may fail, never panic, and
/// every failure names at least one problem.
pub fn config_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars: HashMap<String, String> = [
        ("CLINICEA_BASE_URL", "https://api.clinicea.com"),
        ("CLINICEA_API_KEY", "fuzz-key"),
        ("SMTP_HOST", "smtp.example.com"),
        ("SMTP_PASSWORD", "p"),
        (
            "AUTOMATION_WEBHOOK_URL",
            "https://automation.example.com/hooks",
        ),
        (
            "AUTOMATION_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
        (
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/X",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // A folder that does not exist: nothing is read from or written to disk but the text.
    let file = Path::new("/nonexistent-fuzz-dir/clinicea-notifier.yaml");
    match config::load_str(text, file, &vars) {
        Ok(cfg) => {
            if let Err(e) = settings::compile(cfg) {
                assert!(!e.problems.is_empty(), "a failed compile names a problem");
                let _ = e.to_string();
            }
        }
        Err(e) => {
            assert!(!e.problems.is_empty(), "a failed load names a problem");
            let _ = e.to_string();
        }
    }
    // The rule language on its own, too.
    if let Ok(specs) = serde_saphyr::from_str_with_options::<Vec<serde_saphyr::Spanned<RuleSpec>>>(
        text,
        yaml_options(),
    ) {
        let d = vec!["a".to_string(), "b".to_string()];
        let r = vec!["leads".to_string(), "patients".to_string()];
        let _ = rules::compile(
            &specs,
            &rules::CompileContext {
                destinations: &d,
                resources: &r,
                clinics: &[clinicea_notifier::model::DEFAULT_CLINIC.to_string()],
                timezone: chrono_tz::UTC,
                timezones: &std::collections::BTreeMap::new(),
            },
        );
    }
}

/// `api_page`: any bytes as a page body. Parsing may fail (with a message naming the resource and
/// page), never panic; each record with an id diffs as added, then as nothing against itself,
/// and against the record before it without panicking.
pub fn api_page(data: &[u8]) {
    let records = match client::parse_page("leads", 3, data) {
        Ok(r) => r,
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("leads") && msg.contains("page 3"), "{msg}");
            return;
        }
    };
    let spec = diff::DiffSpec {
        clinic: "default",
        resource: "leads",
        id_field: "ID",
        status_field: "DataStatusStr",
    };
    let now = chrono::Utc::now();
    let key =
        clinicea_notifier::model::IdKey::from_bytes(&[7; clinicea_notifier::model::IdKey::LEN]);
    let mut previous: Option<serde_json::Value> = None;
    for record in records {
        let Ok(id) = diff::record_id(&record, "ID") else {
            continue;
        };
        let added = diff::diff(&spec, id.clone(), None, record.clone(), now)
            .expect("an unknown id is always a change");
        let again = diff::diff(&spec, id.clone(), None, record.clone(), now).unwrap();
        assert_eq!(
            added.change_id(&key),
            again.change_id(&key),
            "change ids are stable"
        );
        assert!(
            diff::diff(&spec, id.clone(), Some(record.clone()), record.clone(), now).is_none(),
            "a record compared with itself is not a change"
        );
        if let Some(p) = previous.take() {
            let _ = diff::diff(&spec, id, Some(p), record.clone(), now).map(|c| c.change_id(&key));
        }
        previous = Some(record);
    }
}
