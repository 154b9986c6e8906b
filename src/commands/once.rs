//! `once`: poll every resource of every clinic once, deliver until nothing is due now, keep the store to its
//! retention periods, and exit (0 when every poll succeeded).

use crate::config::StoreBackend;
use crate::daemon::engine::Engine;
use crate::daemon::events::Events;
use crate::daemon::maintain::maintain_store;
use crate::daemon::settings::load_settings;
use chrono::Utc;
use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;

/// `once`: the poll lines are printed before delivery starts, so a slow receiver does not hide
/// what was read.
pub async fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let settings = load_settings(config)?;
    let shared = !matches!(settings.base.store.backend, StoreBackend::Sled);
    // On PostgreSQL, `once` is a replica for a moment: it polls the clinics no running replica
    // holds, under leases of its own, and gives them back when it is done.
    let holder = shared.then(|| format!("once-{}", crate::outbox::lease::replica_name()));
    let engine = Engine::open_as(settings, Events::none(), holder).await?;
    let (polled, ok) = match engine.store.postgres() {
        None => poll_text(&engine).await,
        Some(pg) => {
            let clinics = engine.settings.base.clinic_names();
            let held: BTreeSet<String> = pg
                .acquire_leases(&clinics, clinics.len())
                .await?
                .into_iter()
                .collect();
            let mut out = String::new();
            for c in clinics.iter().filter(|c| !held.contains(*c)) {
                let _ = writeln!(
                    out,
                    "{c}: skipped: a running replica polls this clinic (see `status`)"
                );
            }
            let (polled, ok) = poll_text_of(&engine, |c| held.contains(c)).await;
            out.push_str(&polled);
            (out, ok)
        }
    };
    print!("{polled}");
    let delivered = deliver_text(&engine).await;
    if let Some(pg) = engine.store.postgres() {
        pg.leave().await?;
    }
    print!("{}", delivered?);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Polls every resource of every clinic once: a line per resource (`clinic/resource` when
/// there are clinics to tell apart), and whether every poll succeeded.
pub(crate) async fn poll_text(engine: &Engine) -> (String, bool) {
    poll_text_of(engine, |_| true).await
}

/// [`poll_text`] of the clinics `polls` names.
async fn poll_text_of(engine: &Engine, polls: impl Fn(&str) -> bool) -> (String, bool) {
    let mut out = String::new();
    let mut ok = true;
    let fleet = engine.settings.base.is_fleet();
    for p in engine.poll_clinics(polls).await {
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
    // Digests whose window has closed (or that are full) go out with this run; the others wait
    // for a later `once` (or `run`).
    let digests =
        crate::daemon::digest::flush_due(&engine.store, &engine.settings.pipeline, Utc::now())
            .await?;
    if digests.digests > 0 {
        let _ = writeln!(
            text,
            "digests: {} queued, holding {} changes",
            digests.digests, digests.changes
        );
    }
    engine.deliverer.bury_orphans().await?;
    let out = engine.deliverer.deliver_all_due().await?;
    let _ = writeln!(
        text,
        "deliveries: {} attempted, {} delivered, {} to retry later, {} dead",
        out.attempted, out.delivered, out.retried, out.dead
    );
    if out.held > 0 {
        // Its own line, so the line above reads as it always has.
        let _ = writeln!(
            text,
            "held by quiet hours: {} (see `status` for until when)",
            out.held
        );
    }
    let m = maintain_store(&engine.store, &engine.settings.base.store, Utc::now()).await?;
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
