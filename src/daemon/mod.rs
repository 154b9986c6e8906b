//! The running daemon (`run`): a poller per resource, a delivery worker per destination, the
//! `/metrics`, `/healthz` and `/readyz` server, the watchdog, journal maintenance, and signals
//! (SIGINT/SIGTERM stop, SIGHUP reloads the config without losing queued deliveries).

pub mod settings;

use crate::commands::{stale_after, Engine, Observers};
use crate::config;
use crate::daemon::settings::{load_settings_with, Settings};
use crate::deliver::email::Mailer;
use crate::deliver::Deliverer;
use crate::ingest::client::Client;
use crate::ingest::poll::{self, PollCtx, PollError};
use crate::outbox::entry::Wake;
use crate::outbox::store::Store;
use anyhow::Context;
use chrono::Utc;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the running notifier applies the store's retention periods (change journal, dead
/// letters) and tightens its file modes.
pub const MAINTENANCE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);
/// How long shutdown waits for pollers and workers before giving up on them.
pub const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// What the health endpoints and the watchdog know about each resource.
#[derive(Debug, Clone, Default)]
pub struct ResourceHealth {
    /// When the last successful poll ended.
    pub last_success: Option<chrono::DateTime<Utc>>,
    /// Failed polls since then.
    pub consecutive_failures: u32,
    /// The last error.
    pub last_error: Option<String>,
    /// Stale after this long without success.
    pub stale_after: std::time::Duration,
}

/// Shared health state of a running notifier.
#[derive(Debug, Default)]
pub struct Health {
    /// By resource key.
    pub resources: std::sync::RwLock<HashMap<String, ResourceHealth>>,
    /// The bearer token `/metrics` asks for (`metrics_token`), replaced on reload.
    pub metrics_token: std::sync::RwLock<Option<config::SecretString>>,
}

impl Health {
    /// Sets the token `/metrics` asks for (`None`: open).
    pub fn set_metrics_token(&self, token: Option<config::SecretString>) {
        *self
            .metrics_token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = token;
    }

    /// Whether a request with these headers may read `/metrics`: always when no token is set,
    /// else only with `Authorization: Bearer TOKEN`, compared in constant time.
    pub fn metrics_allowed(&self, headers: &axum::http::HeaderMap) -> bool {
        let guard = self
            .metrics_token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(token) = guard.as_ref() else {
            return true;
        };
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .unwrap_or("");
        constant_time_eq(given.as_bytes(), token.expose().as_bytes())
    }
}

/// Compares two secrets in time independent of where they differ: both are hashed first, so
/// neither the position of the first difference nor the length shows in the timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl Health {
    /// Whether every resource has polled successfully and none is stale; the reasons if not.
    pub fn ready(&self) -> Result<(), Vec<String>> {
        let now = Utc::now();
        let guard = self
            .resources
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut why = Vec::new();
        if guard.is_empty() {
            why.push("no resources yet".to_string());
        }
        let mut names: Vec<_> = guard.keys().collect();
        names.sort();
        for name in names {
            let h = &guard[name];
            match h.last_success {
                None => why.push(format!("{name}: no successful poll yet")),
                Some(t) if (now - t).to_std().unwrap_or_default() > h.stale_after => {
                    why.push(format!(
                        "{name}: no successful poll for {}s ({} failures in a row)",
                        (now - t).num_seconds(),
                        h.consecutive_failures
                    ))
                }
                Some(_) => {}
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `cancel` fires.
pub async fn serve_health(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    store: Store,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    use axum::response::IntoResponse;
    use axum::{http::StatusCode, routing::get, Router};
    let metrics = crate::telemetry::metrics_handle();
    let h2 = health.clone();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let h = h2.clone();
                async move {
                    match h.ready() {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready:\n{}\n", why.join("\n")),
                        ),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                let h = health.clone();
                let m = metrics.clone();
                let store = store.clone();
                async move {
                    if !h.metrics_allowed(&headers) {
                        return (
                            StatusCode::UNAUTHORIZED,
                            [(axum::http::header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\"")],
                            "/metrics needs the bearer token set in metrics_token\n".to_string(),
                        )
                            .into_response();
                    }
                    let now = Utc::now();
                    if let Ok(guard) = h.resources.read() {
                        for (name, r) in guard.iter() {
                            if let Some(t) = r.last_success {
                                metrics::gauge!("clinicea_seconds_since_last_success", "resource" => name.clone())
                                    .set((now - t).num_milliseconds() as f64 / 1000.0);
                            }
                        }
                    }
                    metrics::gauge!("clinicea_outbox_entries").set(store.outbox_len() as f64);
                    metrics::gauge!("clinicea_dead_letters").set(store.dead_len() as f64);
                    match m {
                        Some(m) => (StatusCode::OK, m.render()).into_response(),
                        None => (StatusCode::SERVICE_UNAVAILABLE, "metrics recorder unavailable\n").into_response(),
                    }
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}

/// Polls one resource on its interval until cancelled, keeping `health` current.
pub async fn poll_loop(
    ctx: PollCtx,
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
            if let Err(e) = crate::commands::maintain_store(&store, &store_settings, Utc::now()) {
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
        let stale = stale_after(&engine.settings, &res);
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
pub async fn run(
    settings: Settings,
    config_path: PathBuf,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
    reload: mpsc::UnboundedReceiver<()>,
    vars: HashMap<String, String>,
) -> anyhow::Result<()> {
    run_with(
        settings,
        config_path,
        listener,
        cancel,
        reload,
        vars,
        Observers::default(),
    )
    .await
}

/// [`run`], with watchers of the polls and deliveries (kept across reloads).
pub async fn run_with(
    settings: Settings,
    config_path: PathBuf,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
    mut reload: mpsc::UnboundedReceiver<()>,
    vars: HashMap<String, String>,
    observers: Observers,
) -> anyhow::Result<()> {
    // Install the metrics recorder before any poller or worker runs: metrics recorded before
    // it exists go nowhere, and `serve_health` only installs it once its task first runs.
    let _ = crate::telemetry::metrics_handle();
    let mut engine = Arc::new(Engine::open_with(settings, observers)?);
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
                        // a config that parses but cannot be applied (an SMTP username without
                        // a password, a bad CA file) is rejected like a broken one.
                        Ok(new) => match reload_parts(&engine.store, &new) {
                            Ok((client, deliverer)) => break Some((new, client, deliverer)),
                            Err(e) => tracing::error!("reload rejected, keeping the old config: {e:#}"),
                        },
                        Err(e) => tracing::error!("reload rejected, keeping the old config: {e}"),
                    }
                }
            }
        };
        match next {
            None => break,
            Some((new, client, deliverer)) => {
                gen_cancel.cancel();
                gen.await;
                health.set_metrics_token(new.base.metrics_token.clone());
                engine = Arc::new(Engine {
                    settings: new,
                    store: engine.store.clone(),
                    client,
                    deliverer: engine.observers.attach(deliverer),
                    observers: engine.observers.clone(),
                });
                tracing::info!("config reloaded");
            }
        }
    }
    engine.store.flush().await?;
    let _ = server.await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The API client and deliverer of a reloaded config, over the running store.
fn reload_parts(store: &Store, new: &Settings) -> anyhow::Result<(Client, Deliverer)> {
    let client = Client::new(&new.base.clinicea)?;
    let mailer = match &new.smtp {
        Some(s) => Some(Arc::new(
            Mailer::new(s.clone()).map_err(|p| anyhow::anyhow!("smtp: {}", p.message))?,
        )),
        None => None,
    };
    let deliverer = Deliverer::new(store.clone(), new.pipeline.destinations.clone(), mailer)?;
    Ok((client, deliverer))
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
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// SIGINT and SIGTERM cancel `cancel`; SIGHUP sends on `reload`.
pub fn spawn_signal_handlers(
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
    use super::*;
    use axum::http::{header::AUTHORIZATION, HeaderMap, HeaderValue};

    fn with_auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn metrics_need_the_exact_bearer_token_once_one_is_set() {
        let health = Health::default();
        assert!(health.metrics_allowed(&HeaderMap::new()), "no token: open");
        health.set_metrics_token(Some(config::SecretString::new("s3cret-token-123456")));
        assert!(!health.metrics_allowed(&HeaderMap::new()));
        assert!(health.metrics_allowed(&with_auth("Bearer s3cret-token-123456")));
        assert!(health.metrics_allowed(&with_auth("bearer  s3cret-token-123456 ")));
        for wrong in [
            "Bearer s3cret-token-12345",
            "Bearer s3cret-token-1234567",
            "Bearer ",
            "Basic s3cret-token-123456",
            "s3cret-token-123456",
        ] {
            assert!(!health.metrics_allowed(&with_auth(wrong)), "{wrong}");
        }
        // A reload that removes the token opens /metrics again.
        health.set_metrics_token(None);
        assert!(health.metrics_allowed(&HeaderMap::new()));
    }
}
