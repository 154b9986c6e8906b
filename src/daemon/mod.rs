//! The running daemon (`run`): a poller per resource, a delivery worker per destination, the
//! `/metrics`, `/healthz` and `/readyz` server, the watchdog, journal maintenance, and signals
//! (SIGINT/SIGTERM stop, SIGHUP reloads the config without losing queued deliveries).

pub mod engine;
pub mod events;
pub(crate) mod health;
pub(crate) mod maintain;
pub mod settings;

use crate::config;
use crate::daemon::settings::{load_settings_with, Settings};
use crate::ingest::ctx::{PollCtx, PollError};
use crate::ingest::poll;
use crate::outbox::entry::Wake;
use anyhow::Context;
use chrono::Utc;
use engine::Engine;
use events::Events;
use health::{serve_health, stale_after, Health};
use maintain::{maintain_store, MAINTENANCE_INTERVAL};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub mod intake;
/// How long shutdown waits for pollers and workers before giving up on them.
const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Polls one resource on its interval until cancelled, keeping `health` current.
async fn poll_loop(
    ctx: PollCtx<intake::OutboxIntake>,
    res: config::Resource,
    health: Arc<Health>,
    stale_after: std::time::Duration,
) {
    let cancel = ctx.cancel.clone();
    // Staleness counts from this loop's start until the first successful poll.
    let started = Utc::now();
    loop {
        // `instrument`, not `span.enter()`: an entered guard held across an await leaks the span
        // into whatever else runs on this thread meanwhile, mislabelling other tasks' log lines.
        let span = tracing::info_span!("poll", resource = %res.name);
        // Shutdown and reload do not wait for a poll held up by the API (a Retry-After of up
        // to a minute, a slow request): dropping it is safe, since a page is committed without
        // an await and the checkpoint advances only after its pages are flushed.
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = tracing::Instrument::instrument(poll::poll_resource(&ctx, &res), span) => r,
        };
        {
            let mut guard = health
                .resources
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let h = guard.entry(res.name.clone()).or_default();
            h.stale_after = stale_after;
            match &result {
                Ok(rep) => {
                    h.last_success = Some(Utc::now());
                    h.consecutive_failures = 0;
                    h.last_error = None;
                    if rep.changes > 0 {
                        tracing::info!(resource = %res.name, pages = rep.pages, records = rep.records, changes = rep.changes, deliveries = rep.deliveries, "poll done");
                    } else {
                        tracing::debug!(resource = %res.name, pages = rep.pages, records = rep.records, "poll done, nothing changed");
                    }
                }
                Err(PollError::Cancelled(_)) => break,
                Err(e) => {
                    h.consecutive_failures += 1;
                    h.last_error = Some(e.to_string());
                    // The watchdog: a resource that has not polled successfully for too long is
                    // an error on every poll, so a silent death is impossible.
                    let since = h.last_success.unwrap_or(started);
                    let stale = (Utc::now() - since).to_std().unwrap_or_default() > stale_after;
                    if stale {
                        tracing::error!(resource = %res.name, failures = h.consecutive_failures, error = %e, "resource is STALE: no successful poll within {stale_after:?}");
                    } else {
                        tracing::warn!(resource = %res.name, failures = h.consecutive_failures, error = %e, "poll failed; the checkpoint stays and the next poll retries");
                    }
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(res.poll_interval) => {}
        }
    }
}

/// One generation of a running notifier: pollers and workers for one compiled config.
async fn run_generation(engine: Arc<Engine>, health: Arc<Health>, cancel: CancellationToken) {
    if let Err(e) = engine.deliverer.bury_orphans() {
        tracing::error!("cannot move the entries of removed destinations to the dead letters: {e}");
    }
    let (wake_tx, mut wake_rx) = mpsc::unbounded_channel::<Wake>();
    let mut tasks = tokio::task::JoinSet::new();
    let mut senders: HashMap<String, mpsc::UnboundedSender<Wake>> = HashMap::new();
    for name in engine.settings.pipeline.destinations.keys() {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.insert(name.clone(), tx);
        tasks.spawn(
            engine
                .deliverer
                .clone()
                .run_destination(name.clone(), rx, cancel.clone()),
        );
    }
    // Fan the pollers' wake-ups out to the destination workers.
    let fan_cancel = cancel.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = fan_cancel.cancelled() => break,
                w = wake_rx.recv() => match w {
                    Some(w) => {
                        if let Some(tx) = senders.get(&w.destination) {
                            let _ = tx.send(w);
                        }
                    }
                    None => break,
                }
            }
        }
    });
    // Maintenance: the change journal and the dead letters kept to their retention periods.
    let store = engine.store.clone();
    let store_settings = engine.settings.base.store.clone();
    let m_cancel = cancel.clone();
    tasks.spawn(async move {
        loop {
            if let Err(e) = maintain_store(&store, &store_settings, Utc::now()) {
                tracing::error!("store maintenance failed: {e:#}");
            }
            tokio::select! {
                _ = m_cancel.cancelled() => break,
                _ = tokio::time::sleep(MAINTENANCE_INTERVAL) => {}
            }
        }
    });
    let ctx = engine.poll_ctx(Some(wake_tx), cancel.clone());
    {
        let mut guard = health
            .resources
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.retain(|k, _| engine.settings.base.resources.iter().any(|r| &r.name == k));
    }
    for res in engine.settings.base.resources.clone() {
        let stale = stale_after(&engine.settings.base, &res);
        {
            let mut guard = health
                .resources
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            guard.entry(res.name.clone()).or_default().stale_after = stale;
        }
        tasks.spawn(poll_loop(ctx.clone(), res, health.clone(), stale));
    }
    cancel.cancelled().await;
    if tokio::time::timeout(SHUTDOWN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            "some tasks did not stop within {SHUTDOWN_TIMEOUT:?}; their work stays queued"
        );
        tasks.abort_all();
    }
}

/// Runs the notifier until `cancel` fires; each message on `reload` re-reads `config_path` and,
/// when it is valid, swaps the rules, templates, destinations and resources without losing
/// queued deliveries or checkpoints. An invalid config is logged and the old one keeps running.
/// `events` is told what the polls and deliveries do, across reloads ([`Events::none`]: nobody).
pub async fn run(
    settings: Settings,
    config_path: PathBuf,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
    mut reload: mpsc::UnboundedReceiver<()>,
    vars: HashMap<String, String>,
    events: Events,
) -> anyhow::Result<()> {
    // Install the metrics recorder before any poller or worker runs: metrics recorded before
    // it exists go nowhere, and `serve_health` only installs it once its task first runs.
    let _ = crate::telemetry::metrics_handle();
    let mut engine = Arc::new(Engine::open(settings, events)?);
    let health = Arc::new(Health::default());
    health.set_metrics_token(engine.settings.base.metrics_token.clone());
    let server = tokio::spawn(serve_health(
        listener,
        health.clone(),
        engine.store.clone(),
        cancel.clone(),
    ));
    tracing::info!(
        resources = engine.settings.base.resources.len(),
        destinations = engine.settings.pipeline.destinations.len(),
        "notifier running"
    );
    let mut reload_open = true;
    loop {
        let gen_cancel = cancel.child_token();
        let gen = run_generation(engine.clone(), health.clone(), gen_cancel.clone());
        tokio::pin!(gen);
        let next = loop {
            tokio::select! {
                _ = &mut gen => break None,
                r = reload.recv(), if reload_open => {
                    if r.is_none() {
                        // Nobody can ask for a reload any more (the signal task ended): stop
                        // listening, or this branch would be ready forever and spin.
                        reload_open = false;
                        continue;
                    }
                    match load_settings_with(&config_path, &vars) {
                        Ok(new) if new.base.store.path != engine.settings.base.store.path => {
                            tracing::error!("reload rejected: store.path cannot change while running; keeping the old config");
                        }
                        // Build everything the new config needs before stopping the old one:
                        // a config that parses but cannot be applied is rejected like a broken one.
                        Ok(new) => match engine.reloaded(new) {
                            Ok(next) => break Some(next),
                            Err(e) => tracing::error!("reload rejected, keeping the old config: {e:#}"),
                        },
                        Err(e) => tracing::error!("reload rejected, keeping the old config: {e}"),
                    }
                }
            }
        };
        match next {
            None => break,
            Some(next) => {
                gen_cancel.cancel();
                gen.await;
                health.set_metrics_token(next.settings.base.metrics_token.clone());
                engine = Arc::new(next);
                tracing::info!("config reloaded");
            }
        }
    }
    engine.store.flush().await?;
    let _ = server.await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// `run`: the daemon, with signals wired: SIGINT/SIGTERM stop, SIGHUP reloads.
pub async fn run_command(config: &Path) -> anyhow::Result<ExitCode> {
    let vars = config::env_vars();
    let settings = load_settings_with(config, &vars)?;
    let listener = tokio::net::TcpListener::bind(settings.base.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.base.listen))?;
    println!("listening on http://{}", listener.local_addr()?);
    let cancel = CancellationToken::new();
    let (reload_tx, reload_rx) = mpsc::unbounded_channel();
    spawn_signal_handlers(cancel.clone(), reload_tx)?;
    run(
        settings,
        config.to_path_buf(),
        listener,
        cancel,
        reload_rx,
        vars,
        Events::none(),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// SIGINT and SIGTERM cancel `cancel`; SIGHUP sends on `reload`.
fn spawn_signal_handlers(
    cancel: CancellationToken,
    reload: mpsc::UnboundedSender<()>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); cancel.cancel(); break; }
                _ = int.recv() => { tracing::info!("SIGINT: stopping"); cancel.cancel(); break; }
                _ = hup.recv() => { tracing::info!("SIGHUP: reloading the config"); let _ = reload.send(()); }
            }
        }
    });
    Ok(())
}
