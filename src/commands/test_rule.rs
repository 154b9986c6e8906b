//! `test-rule`: which rules match a change, why the others do not, and each delivery as it
//! would be sent; nothing is sent.

use crate::daemon::settings::{load_settings, Settings};
use crate::outbox::store::Store;
use anyhow::Context;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `test-rule`.
#[derive(Debug, clap::Args)]
pub struct TestRuleArgs {
    /// The resource key the record belongs to.
    #[arg(long)]
    pub(crate) resource: String,
    /// The clinic the record comes from (a name under `clinics:`; `default` without them).
    #[arg(long, default_value = crate::model::DEFAULT_CLINIC)]
    pub(crate) clinic: String,
    /// A JSON file with the record as fetched now.
    #[arg(long)]
    pub(crate) record: PathBuf,
    /// A JSON file with the stored version before the change.
    #[arg(long)]
    pub(crate) previous: Option<PathBuf>,
    /// The time the change is detected, RFC 3339 (default now): decides whether a destination's
    /// quiet hours hold the delivery, and until when.
    #[arg(long, value_parser = parse_at)]
    pub(crate) at: Option<DateTime<Utc>>,
}

/// `--at`: an RFC 3339 time.
fn parse_at(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 time such as 2026-12-05T21:30:00Z ({e})"))
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    // A fixture page (an array) is accepted: its first record is used.
    Ok(match v {
        serde_json::Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    })
}

/// `test-rule`: prints [`test_rule_text`].
pub fn run(config: &Path, args: &TestRuleArgs) -> anyhow::Result<ExitCode> {
    let settings = load_settings(config)?;
    print!("{}", test_rule_text(&settings, args)?);
    Ok(ExitCode::SUCCESS)
}

/// What `test-rule` prints for the record files in `args`: the change they make, which rules
/// match it and why the others do not, and each delivery as it would be sent.
pub(crate) fn test_rule_text(settings: &Settings, args: &TestRuleArgs) -> anyhow::Result<String> {
    let Some(res) = settings
        .base
        .resources
        .iter()
        .find(|r| r.name == args.resource)
    else {
        anyhow::bail!(
            "no resource {:?} in the config (have: {})",
            args.resource,
            settings
                .base
                .resources
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let clinics = settings.pipeline.rules.clinics();
    if !clinics.contains(&args.clinic) {
        anyhow::bail!(
            "no clinic {:?} in the config (have: {})",
            args.clinic,
            clinics.join(", ")
        );
    }
    let record = read_json(&args.record)?;
    let previous = args.previous.as_deref().map(read_json).transpose()?;
    let id = crate::ingest::diff::record_id(&record, &res.id_field).map_err(|_| {
        anyhow::anyhow!(
            "the record has no usable id in field {:?} (set id_field for this resource)",
            res.id_field
        )
    })?;
    let spec = crate::ingest::diff::DiffSpec {
        clinic: &args.clinic,
        resource: &res.name,
        id_field: &res.id_field,
        status_field: &res.status_field,
    };
    let at = args.at.unwrap_or_else(Utc::now);
    let Some(change) = crate::ingest::diff::diff(&spec, id, previous, record, at) else {
        return Ok(
            "No change: the record is identical to the previous version, so nothing is sent.\n"
                .to_string(),
        );
    };
    let (id_key, note) = test_rule_id_key(settings);
    let mut out = describe_test(settings, &change, &id_key, at);
    if let Some(note) = note {
        out.push_str(&format!("\nNote: {note}\n"));
    }
    Ok(out)
}

/// The key `test-rule` derives ids with: the store's when it exists and is free, so ids match what
/// the notifier would send; otherwise a one-off key, with a note saying so.
fn test_rule_id_key(settings: &Settings) -> (crate::model::IdKey, Option<String>) {
    let path = &settings.base.store.path;
    let one_off = "webhook-id and Message-ID above come from a one-off key";
    if !matches!(
        settings.base.store.backend,
        crate::config::StoreBackend::Sled
    ) {
        return (
            crate::model::IdKey::ephemeral(),
            Some(format!(
                "{one_off}: the notifier's ids come from the key kept in its PostgreSQL store"
            )),
        );
    }
    if !path.exists() {
        return (
            crate::model::IdKey::ephemeral(),
            Some(format!(
                "{one_off}: there is no store at {} yet, and the notifier's ids come from the key made in its store",
                path.display()
            )),
        );
    }
    match Store::open(path, settings.base.store.cache_bytes) {
        Ok(store) => (store.id_key().clone(), None),
        Err(e) => (
            crate::model::IdKey::ephemeral(),
            Some(format!(
                "{one_off}, since the store's key could not be read ({e}); the notifier's ids differ"
            )),
        ),
    }
}

/// What a destination's quiet hours do to a delivery of `clinic` at `at`: held until when, or
/// sent at once; `None` when the destination has none.
fn quiet_line(
    settings: &Settings,
    destination: &str,
    clinic: &str,
    at: DateTime<Utc>,
) -> Option<String> {
    let quiet = settings
        .pipeline
        .destinations
        .get(destination)?
        .quiet_hours?;
    let tz = settings
        .base
        .clinics
        .iter()
        .find(|c| c.name == clinic)
        .map_or(chrono_tz::UTC, |c| c.clinicea.timezone);
    let local = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z");
    Some(match quiet.hold_until(at, tz) {
        Some(until) => format!(
            "HELD by quiet hours ({quiet}, {tz}): at {} it would be sent at {} ({tz}), {}",
            local(at),
            local(until),
            until.format("%Y-%m-%d %H:%M UTC")
        ),
        None => format!(
            "quiet hours ({quiet}, {tz}) do not hold it: {} is outside them, so it is sent at once",
            local(at)
        ),
    })
}

/// The text `test-rule` prints for a change detected `at`; ids are derived with `id_key`.
pub(crate) fn describe_test(
    settings: &Settings,
    change: &crate::model::Change,
    id_key: &crate::model::IdKey,
    at: DateTime<Utc>,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Change: {} {} (id {}) of clinic {}, changed fields: [{}], server status: {}",
        change.resource,
        change.kind,
        change.id,
        change.clinic,
        change.changed_fields.join(", "),
        change.server_status.as_deref().unwrap_or("-")
    );
    let _ = writeln!(out, "\nRules:");
    for e in settings.pipeline.rules.explain(change) {
        if e.matched {
            let _ = writeln!(out, "  MATCH    {}", e.rule);
        } else {
            let _ = writeln!(
                out,
                "  no match {}: {}",
                e.rule,
                e.failed.as_deref().unwrap_or("")
            );
        }
    }
    let planned = settings.pipeline.plan(change, id_key);
    let _ = writeln!(out, "\nDeliveries ({}), nothing is sent:", planned.len());
    for p in planned {
        let _ = writeln!(out, "\n--- {} (rule {}) ---", p.destination, p.rule);
        let digest = settings
            .pipeline
            .destinations
            .get(&p.destination)
            .and_then(|d| d.digest.as_ref());
        if let (Some(g), true) = (digest, p.payload.is_ok()) {
            let tz = settings.pipeline.timezone(&change.clinic);
            let close = g.schedule.next_close(change.detected_at, tz);
            let _ = writeln!(
                out,
                "  digested ({}): not sent on its own; it waits in the digest, which goes out at {} \
                 ({} in {}), or at once when {} changes wait. Its part of the digest:",
                g.schedule.describe(),
                close.to_rfc3339(),
                close.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
                tz.name(),
                g.max
            );
        }
        if let Some(line) = quiet_line(settings, &p.destination, &change.clinic, at) {
            let _ = writeln!(out, "{line}");
        }
        match p.payload {
            Err(e) => {
                let _ = writeln!(out, "  would go to the dead letters: {e}");
            }
            Ok(crate::route::plan::Payload::Webhook { body }) => {
                let pretty = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| serde_json::to_string_pretty(&v).ok())
                    .unwrap_or(body);
                let _ = writeln!(
                    out,
                    "POST webhook, webhook-id: {}\n{pretty}",
                    change.change_id(id_key)
                );
            }
            Ok(crate::route::plan::Payload::Chat { body }) => {
                let _ = writeln!(out, "chat message body:\n{body}");
            }
            Ok(crate::route::plan::Payload::Publish { subject, body }) => {
                let _ = writeln!(
                    out,
                    "publish to {subject}, message id: {}\n{body}",
                    change.change_id(id_key)
                );
            }
            Ok(crate::route::plan::Payload::Email(m)) => {
                let _ = writeln!(
                    out,
                    "From: {}\nTo: {}\nSubject: {}\nMessage-ID: {}\n\n{}",
                    m.from, m.to, m.subject, m.message_id, m.text
                );
                if let Some(h) = m.html {
                    let _ = writeln!(out, "\n[HTML part]\n{h}");
                }
            }
        }
    }
    out
}
