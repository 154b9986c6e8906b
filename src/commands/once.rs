//! `once`: poll every resource of every clinic once, deliver until nothing is due now, keep the store to its
//! retention periods, and exit (0 when every poll succeeded).

use crate::daemon::engine::Engine;
use crate::daemon::events::Events;
use crate::daemon::maintain::maintain_store;
use crate::daemon::settings::load_settings;
use chrono::Utc;
use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;

/// `once`: the poll lines are printed before delivery starts, so a slow receiver does not hide
/// what was read.
pub async fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let engine = Engine::open(load_settings(config)?, Events::none())?;
    let (polled, ok) = poll_text(&engine).await;
    print!("{polled}");
    print!("{}", deliver_text(&engine).await?);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Polls every resource of every clinic once: a line per resource (`clinic/resource` when
/// there are clinics to tell apart), and whether every poll succeeded.
pub(crate) async fn poll_text(engine: &Engine) -> (String, bool) {
    let mut out = String::new();
    let mut ok = true;
    let fleet = engine.settings.base.is_fleet();
    for p in engine.poll_all().await {
        let name = if fleet {
            format!("{}/{}", p.clinic, p.resource)
        } else {
            p.resource
        };
        match p.result {
            Ok(rep) => {
                let _ = writeln!(
                    out,
                    "{name}: {}{} pages, {} records, {} changes, {} deliveries queued{}",
                    if rep.baseline_pages > 0 {
                        format!(
                            "baseline {} pages, {} records stored silently; then ",
                            rep.baseline_pages, rep.baseline_records
                        )
                    } else {
                        String::new()
                    },
                    rep.pages,
                    rep.records,
                    rep.changes,
                    rep.deliveries,
                    if rep.skipped > 0 {
                        format!(", {} records skipped (no id)", rep.skipped)
                    } else {
                        String::new()
                    }
                );
            }
            Err(e) => {
                ok = false;
                let _ = writeln!(out, "{name}: poll failed: {e}");
            }
        }
    }
    (out, ok)
}

/// Delivers everything due now, then applies the retention periods: what happened, as printed.
pub(crate) async fn deliver_text(engine: &Engine) -> anyhow::Result<String> {
    let mut text = String::new();
    // A failed poll leaves its stored pages unflushed; nothing is sent before it is on disk.
    engine.store.flush().await?;
    engine.deliverer.bury_orphans()?;
    let out = engine.deliverer.deliver_all_due().await?;
    let _ = writeln!(
        text,
        "deliveries: {} attempted, {} delivered, {} to retry later, {} dead",
        out.attempted, out.delivered, out.retried, out.dead
    );
    let m = maintain_store(&engine.store, &engine.settings.base.store, Utc::now())?;
    if m.journal + m.dead > 0 {
        let _ = writeln!(
            text,
            "retention: {} journal entries and {} dead letters deleted",
            m.journal, m.dead
        );
    }
    engine.store.flush().await?;
    Ok(text)
}
