//! `status`: per clinic and resource, the checkpoint and the last poll; per destination, what is
//! queued, retrying and dead; read from the store.

use super::{open_store_for_cli, terminal_safe};
use crate::daemon::health::stale_after;
use crate::daemon::settings::{load_settings, Settings};
use crate::outbox::store::Store;
use chrono::Utc;
use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

/// `status`: per resource and per destination, from the store.
pub fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let settings = load_settings(config)?;
    let store = open_store_for_cli(&settings)?;
    print!("{}", status_text(&settings, &store)?);
    Ok(ExitCode::SUCCESS)
}

/// The text of `status`.
pub fn status_text(settings: &Settings, store: &Store) -> anyhow::Result<String> {
    use std::fmt::Write;
    let mut out = String::new();
    let now = Utc::now();
    let base = &settings.base;
    if base.is_fleet() {
        let _ = writeln!(out, "Clinics: {}", base.clinics.len());
        for c in &base.clinics {
            let names: Vec<&str> = c.resources.iter().map(|r| r.name.as_str()).collect();
            let _ = writeln!(out, "  {} ({})", c.name, names.join(", "));
            for r in &c.resources {
                let line = resource_line(settings, store, c, r, now)?;
                let _ = writeln!(out, "    {line}");
            }
        }
    } else {
        let _ = writeln!(out, "Resources:");
        for c in &base.clinics {
            for r in &c.resources {
                let line = resource_line(settings, store, c, r, now)?;
                let _ = writeln!(out, "  {line}");
            }
        }
    }
    let _ = writeln!(out, "Destinations:");
    let mut queued: HashMap<String, (u64, u64)> = HashMap::new();
    for e in store.all_outbox()? {
        let slot = queued.entry(e.destination).or_default();
        if e.attempts == 0 {
            slot.0 += 1;
        } else {
            slot.1 += 1;
        }
    }
    let mut dead: HashMap<String, u64> = HashMap::new();
    for (_, d) in store.dead_entries()? {
        *dead.entry(d.entry.destination).or_default() += 1;
    }
    let failing: HashMap<String, crate::outbox::store::DestHealth> =
        store.failing_destinations()?.into_iter().collect();
    let mut names: Vec<&String> = settings.pipeline.destinations.keys().collect();
    names.sort();
    for n in names {
        let (q, r) = queued.get(n).copied().unwrap_or_default();
        let d = dead.get(n).copied().unwrap_or_default();
        let mark = match failing.get(n) {
            Some(h) => format!(
                "  FAILING since {}: {}",
                h.since.to_rfc3339(),
                terminal_safe(&h.reason)
            ),
            None => String::new(),
        };
        let _ = writeln!(out, "  {n:<14} queued {q}, retrying {r}, dead {d}{mark}");
    }
    let _ = writeln!(out, "Changes in the journal: {}", store.change_count());
    Ok(out)
}

/// One resource of one clinic: its next since, its last poll, what is known, baseline, staleness.
fn resource_line(
    settings: &Settings,
    store: &Store,
    clinic: &crate::config::Clinic,
    r: &crate::config::Resource,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<String> {
    let name = clinic.name.as_str();
    let cp = store.checkpoint(name, &r.name)?;
    let st = store.poll_status(name, &r.name)?;
    let since = cp
        .as_ref()
        .map(|c| c.since(clinic.clinicea.overlap).to_rfc3339())
        .unwrap_or_else(|| "never polled".into());
    let last = match (&st.last_finished, &st.last_error) {
        (None, _) => "no poll yet".to_string(),
        (Some(t), None) => format!(
            "ok at {} ({} records, {} changes)",
            t.to_rfc3339(),
            st.last_records,
            st.last_changes
        ),
        (Some(t), Some(e)) => format!(
            "FAILED at {} ({} in a row): {}",
            t.to_rfc3339(),
            st.consecutive_failures,
            terminal_safe(e)
        ),
    };
    let stale = stale_after(&settings.base, r);
    let stale_note = match st.last_success {
        Some(t) if (now - t).to_std().unwrap_or_default() > stale => {
            format!(
                "  STALE: no successful poll for {}s",
                (now - t).num_seconds()
            )
        }
        _ => String::new(),
    };
    let baseline = match store.baseline(name, &r.name)? {
        Some(b) if b.finished.is_none() => format!(
            "; BASELINE in progress: page {} next, {} pages and {} records stored so far (since {})",
            b.next_page,
            b.pages,
            b.records,
            b.since.to_rfc3339()
        ),
        Some(b) if cp.as_ref().is_some_and(|c| c.last_success_start.is_none()) => format!(
            "; baseline of {} records done, the first poll from the origin is next",
            b.records
        ),
        _ => String::new(),
    };
    Ok(format!(
        "{:<14} next since {since}; last poll {last}; {} records known{baseline}{stale_note}",
        r.name,
        store.snapshot_count(name, &r.name) + store.baseline_snapshot_count(name, &r.name)
    ))
}
