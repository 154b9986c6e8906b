//! The running daemon (`run`): a poller per clinic and resource, a delivery worker per destination, the
//! `/metrics`, `/healthz` and `/readyz` server, the watchdog, journal maintenance, and signals
//! (SIGINT/SIGTERM stop, SIGHUP reloads the config without losing queued deliveries).

pub mod alerts;
pub(crate) mod console;
pub mod digest;
pub mod engine;
pub mod events;
pub(crate) mod health;
pub(crate) mod maintain;
pub(crate) mod schedule;
pub mod settings;
pub(crate) mod share;
pub(crate) mod trigger;

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

/// Polls one resource of one clinic on its schedule until cancelled, keeping `health` current.
/// The first poll waits `first_delay`: the spread of a fleet's polls over the interval, or what is
/// left of the interval since this resource's last poll before a reload. After that the gap
/// adapts ([`schedule::next_gap`]), and a poll trigger can bring any poll forward
/// ([`schedule::until_due`]).
async fn poll_loop(
    ctx: PollCtx<intake::OutboxIntake>,
    res: config::Resource,
    health: Arc<Health>,
    stale_after: std::time::Duration,
    first_delay: std::time::Duration,
) {
    let cancel = ctx.cancel.clone();
    let key = (ctx.clinic.clone(), res.name.clone());
    // Subscribed before the first wait, so a trigger during the fleet's spread counts.
    let mut trigger = health.triggers.subscribe(&ctx.clinic, &res.name);
    // Staleness counts from this loop's start until the first successful poll.
    let started = Utc::now();
    write_health(&health)
        .entry(key.clone())
        .or_default()
        .watched_since
        .get_or_insert(started);
    if !first_delay.is_zero() {
        let first = tokio::time::Instant::now() + first_delay;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = schedule::until_due(&mut trigger, None, first) => {}
        }
    }
    // The gap starts at the ceiling: a resource is presumed quiet until a poll finds changes.
    let mut gap = res.poll_interval;
    loop {
        let poll_started = std::time::Instant::now();
        // Every trigger that arrived before this poll starts is answered by it.
        if let Some(rx) = trigger.as_mut() {
            rx.borrow_and_update();
        }
        write_health(&health)
            .entry(key.clone())
            .or_default()
            .last_started = Some(poll_started);
        // `instrument`, not `span.enter()`: an entered guard held across an await leaks the span
        // into whatever else runs on this thread meanwhile, mislabelling other tasks' log lines.
        let span = tracing::info_span!("poll", clinic = %ctx.clinic, resource = %res.name);
        // Shutdown and reload do not wait for a poll held up by the API (a Retry-After of up
        // to a minute, a slow request): dropping it is safe, since a page is committed without
        // an await and the checkpoint advances only after its pages are flushed.
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = tracing::Instrument::instrument(poll::poll_resource(&ctx, &res), span) => r,
        };
        {
            let mut guard = write_health(&health);
            let h = guard.entry(key.clone()).or_default();
            h.stale_after = stale_after;
            match &result {
                Ok(rep) => {
                    h.last_success = Some(Utc::now());
                    h.consecutive_failures = 0;
                    h.last_error = None;
                    if h.unauthorized.take().is_some() {
                        health.alert_nudge.notify_one();
                    }
                    if rep.changes > 0 {
                        tracing::info!(clinic = %ctx.clinic, resource = %res.name, pages = rep.pages, records = rep.records, changes = rep.changes, deliveries = rep.deliveries, "poll done");
                    } else {
                        tracing::debug!(clinic = %ctx.clinic, resource = %res.name, pages = rep.pages, records = rep.records, "poll done, nothing changed");
                    }
                }
                Err(PollError::Cancelled(_)) => break,
                Err(e) => {
                    h.consecutive_failures += 1;
                    h.last_error = Some(e.to_string());
                    if let Some(status) = alerts::refused_key(e) {
                        h.unauthorized = Some(status);
                        health.alert_nudge.notify_one();
                    }
                    // The watchdog: a resource that has not polled successfully for too long is
                    // an error on every poll, so a silent death is impossible.
                    let since = h.last_success.unwrap_or(started);
                    let stale = (Utc::now() - since).to_std().unwrap_or_default() > stale_after;
                    if stale {
                        tracing::error!(clinic = %ctx.clinic, resource = %res.name, failures = h.consecutive_failures, error = %e, "resource is STALE: no successful poll within {stale_after:?}");
                    } else {
                        tracing::warn!(clinic = %ctx.clinic, resource = %res.name, failures = h.consecutive_failures, error = %e, "poll failed; the checkpoint stays and the next poll retries");
                    }
                }
            }
        }
        // The interval runs from poll start to poll start, so a fleet's spread holds however
        // long each poll takes (a poll longer than the interval is followed at once). A failed
        // poll counts as quiet: errors back off toward the ceiling, never speed polling up.
        let changed = matches!(&result, Ok(rep) if rep.changes > 0);
        gap = schedule::next_gap(gap, changed, res.poll_interval_min, res.poll_interval);
        let last = tokio::time::Instant::from_std(poll_started);
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = schedule::until_due(&mut trigger, Some(last), last + gap) => {}
        }
    }
}

/// The health map, for writing (a poisoned lock is still usable: health is advisory).
fn write_health(
    health: &Health,
) -> std::sync::RwLockWriteGuard<'_, HashMap<health::PollKey, health::ResourceHealth>> {
    health
        .resources
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Enters a poll loop in the health map (its staleness limit) and returns when this process
/// last started a poll of it.
fn note_loop(
    health: &Health,
    clinic: &str,
    resource: &str,
    stale: std::time::Duration,
) -> Option<std::time::Instant> {
    let mut guard = write_health(health);
    let h = guard
        .entry((clinic.to_string(), resource.to_string()))
        .or_default();
    h.stale_after = stale;
    h.last_started
}

/// When the first poll of a generation's loop is due: what is left of the interval since the
/// resource's last poll in this process (a reload keeps each poll's phase), else the clinic's
/// place in the spread: the `index`-th of `clinics` clinics starts `index / clinics` of the way
/// into the interval, so a fleet's polls do not all fire at once.
fn first_delay(
    last_started: Option<std::time::Instant>,
    interval: std::time::Duration,
    index: usize,
    clinics: usize,
) -> std::time::Duration {
    match last_started {
        Some(t) => (t + interval).saturating_duration_since(std::time::Instant::now()),
        None => interval.mul_f64(index as f64 / clinics.max(1) as f64),
    }
}

/// One generation of a running notifier: pollers and workers for one compiled config.
async fn run_generation(engine: Arc<Engine>, health: Arc<Health>, cancel: CancellationToken) {
    if let Err(e) = engine.deliverer.bury_orphans().await {
        tracing::error!("cannot move the entries of removed destinations to the dead letters: {e}");
    }
    let (wake_tx, mut wake_rx) = mpsc::unbounded_channel::<Wake>();
    health.console.set_wake(wake_tx.clone());
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
            if let Err(e) = maintain_store(&store, &store_settings, Utc::now()).await {
                tracing::error!("store maintenance failed: {e:#}");
            }
            tokio::select! {
                _ = m_cancel.cancelled() => break,
                _ = tokio::time::sleep(MAINTENANCE_INTERVAL) => {}
            }
        }
    });
    // Digests: closed windows (and full groups) become outbox entries.
    tasks.spawn(digest::run_flusher(
        engine.store.clone(),
        engine.settings.pipeline.clone(),
        wake_tx.clone(),
        engine.digest_kick.clone(),
        cancel.clone(),
    ));
    // The operator's alerts (`alerts:`), queued through the outbox like any delivery.
    if let Some(monitor) = alerts::Monitor::new(engine.store.clone(), &engine.settings) {
        tasks.spawn(alerts::watch(
            monitor,
            health.clone(),
            wake_tx.clone(),
            cancel.clone(),
        ));
    }
    let polled = engine.poll_ctxs(Some(wake_tx), cancel.clone());
    // Removed clinics and resources leave the health map (their checkpoints stay in the store).
    write_health(&health).retain(|(clinic, resource), _| {
        polled
            .iter()
            .any(|(ctx, rs)| &ctx.clinic == clinic && rs.iter().any(|r| &r.name == resource))
    });
    match engine.store.postgres() {
        None => {
            let clinics = polled.len();
            for (index, (ctx, resources)) in polled.into_iter().enumerate() {
                for res in resources {
                    let stale = stale_after(&engine.settings.base, &res);
                    let last_started = note_loop(&health, &ctx.clinic, &res.name, stale);
                    let delay = first_delay(last_started, res.poll_interval, index, clinics);
                    tasks.spawn(poll_loop(ctx.clone(), res, health.clone(), stale, delay));
                }
            }
        }
        // Replicas on one database: this one polls the clinics it holds by lease.
        Some(pg) => {
            let names: Vec<String> = polled.iter().map(|(ctx, _)| ctx.clinic.clone()).collect();
            let by_clinic: HashMap<String, (PollCtx<intake::OutboxIntake>, Vec<config::Resource>)> =
                polled
                    .into_iter()
                    .map(|(ctx, rs)| (ctx.clinic.clone(), (ctx, rs)))
                    .collect();
            let (pg, base, health) = (pg.clone(), engine.settings.base.clone(), health.clone());
            let share_cancel = cancel.clone();
            tasks.spawn(async move {
                let start = |clinic: &str, token: CancellationToken| {
                    let mut loops = tokio::task::JoinSet::new();
                    let Some((ctx, resources)) = by_clinic.get(clinic) else {
                        return loops;
                    };
                    let mut ctx = ctx.clone();
                    ctx.cancel = token;
                    for res in resources {
                        let stale = stale_after(&base, res);
                        let last_started = note_loop(&health, clinic, &res.name, stale);
                        // A clinic taken over is polled at once: its last owner may have died
                        // a lease ago. One this process polled before a reload keeps its phase.
                        let delay = first_delay(last_started, res.poll_interval, 0, 1);
                        loops.spawn(poll_loop(
                            ctx.clone(),
                            res.clone(),
                            health.clone(),
                            stale,
                            delay,
                        ));
                    }
                    loops
                };
                let stopped = |clinic: &str| {
                    write_health(&health).retain(|(c, _), _| c != clinic);
                };
                share::keep_share(pg, names, start, stopped, share_cancel).await;
            });
        }
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
    let health = Arc::new(Health::default());
    let events = console::watch(events, health.clone());
    // On PostgreSQL this process is one replica among several: its name holds its leases.
    let replica = match settings.base.store.backend {
        config::StoreBackend::Sled => None,
        config::StoreBackend::Postgres { .. } => Some(crate::outbox::lease::replica_name()),
    };
    let mut engine = Arc::new(Engine::open_as(settings, events, replica.clone()).await?);
    if let Some(name) = &replica {
        tracing::info!(replica = %name, "sharing the fleet with the other replicas of this database");
    }
    health.set_metrics_token(engine.settings.base.metrics_token.clone());
    health.console.configure(&engine.settings);
    health.triggers.configure(&engine.settings.base);
    let server = tokio::spawn(serve_health(
        listener,
        health.clone(),
        engine.store.clone(),
        cancel.clone(),
    ));
    tracing::info!(
        clinics = engine.settings.base.clinics.len(),
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
                        Ok(new) if new.base.store.path != engine.settings.base.store.path
                            || new.base.store.backend != engine.settings.base.store.backend => {
                            tracing::error!("reload rejected: the store (store.backend, store.path, store.url) cannot change while running; keeping the old config");
                        }
                        // Build everything the new config needs before stopping the old one:
                        // a config that parses but cannot be applied is rejected like a broken one.
                        Ok(new) => match engine.reloaded(new).await {
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
                health.console.configure(&next.settings);
                health.triggers.configure(&next.settings.base);
                engine = Arc::new(next);
                tracing::info!("config reloaded");
            }
        }
    }
    engine.store.flush().await?;
    // A clean stop gives the clinics back at once, so the other replicas need not wait for the
    // leases to expire.
    if let Some(pg) = engine.store.postgres() {
        if let Err(e) = pg.leave().await {
            tracing::warn!(
                "cannot give back this replica's leases (they expire by themselves): {e}"
            );
        }
    }
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

#[cfg(test)]
mod tests {
    use super::first_delay;
    use std::time::{Duration, Instant};

    #[test]
    fn a_fleets_first_polls_are_spread_over_the_interval_and_a_reload_keeps_the_phase() {
        let every = Duration::from_secs(60);
        let delays: Vec<u64> = (0..4)
            .map(|i| first_delay(None, every, i, 4).as_secs())
            .collect();
        assert_eq!(delays, [0, 15, 30, 45]);
        assert_eq!(
            first_delay(None, every, 0, 1),
            Duration::ZERO,
            "one clinic: at once"
        );
        // Polled 20 s ago: the next is due in 40 s, wherever the clinic sits in the spread.
        let last = Instant::now() - Duration::from_secs(20);
        let d = first_delay(Some(last), every, 3, 4);
        assert!(
            d <= Duration::from_secs(40) && d > Duration::from_secs(38),
            "{d:?}"
        );
        // Overdue: at once.
        let long_ago = Instant::now() - Duration::from_secs(600);
        assert_eq!(first_delay(Some(long_ago), every, 3, 4), Duration::ZERO);
    }
}
