//! The engine: everything a notifier runs with for one compiled config — the store, an API client
//! per clinic and the deliverer — built in one place, for `run`, each reload, `once` and the tests.

use crate::config::{self, Base};
use crate::daemon::events::Events;
use crate::daemon::intake::{Announcer, OutboxIntake};
use crate::daemon::settings::Settings;
use crate::deliver::email::Mailer;
use crate::deliver::Deliverer;
use crate::ingest::client::{Client, FleetLimit};
use crate::ingest::ctx::{PollCtx, PollError};
use crate::ingest::poll::{self, PollReport};
use crate::outbox::entry::Wake;
use crate::outbox::store::{Store, StoreError};
use anyhow::Context;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Everything a running notifier holds.
pub struct Engine {
    /// The compiled settings.
    pub settings: Settings,
    /// The store.
    pub store: Store,
    /// An API client per clinic, in the order of `settings.base.clinics`; they share the fleet's
    /// limit on requests in flight and, where their settings agree, one HTTP connection pool.
    clients: Vec<Client>,
    /// The deliverer.
    pub deliverer: Deliverer,
    /// Who watches its polls and deliveries; a reload's engine tells the same watcher.
    events: Events,
    /// Kicks this generation's digest flusher after a page stored digest members.
    pub digest_kick: Arc<tokio::sync::Notify>,
}

/// What one poll of one clinic's resource came to, for `once` and the tests.
#[derive(Debug)]
pub struct Polled {
    /// The clinic.
    pub clinic: String,
    /// The resource key.
    pub resource: String,
    /// The poll's report, or why it failed.
    pub result: Result<PollReport, PollError<StoreError>>,
}

impl Engine {
    /// Opens the store and builds the clients and deliverer over it; `events` is told what the
    /// polls and deliveries do ([`Events::none`]: nobody).
    pub async fn open(settings: Settings, events: Events) -> anyhow::Result<Engine> {
        Engine::open_as(settings, events, None).await
    }

    /// [`Engine::open`] for `holder`: on PostgreSQL, the replica (or one-off command) whose
    /// leases fence its poll writes; `None` writes unfenced.
    pub(crate) async fn open_as(
        settings: Settings,
        events: Events,
        holder: Option<String>,
    ) -> anyhow::Result<Engine> {
        let store = Store::open_configured(&settings.base.store, holder).await?;
        reduce_tombstones(&store, &settings.base).await?;
        Engine::over(store, settings, events).await
    }

    /// The engine a reload to `settings` runs: this one's store and watcher, new clients and
    /// deliverer. It is built before the running generation stops, so a config that parses but
    /// cannot be applied (an SMTP username without a password, a bad CA file) is rejected while
    /// the old one keeps running.
    pub(crate) async fn reloaded(&self, settings: Settings) -> anyhow::Result<Engine> {
        Engine::over(self.store.clone(), settings, self.events.clone()).await
    }

    async fn over(store: Store, settings: Settings, events: Events) -> anyhow::Result<Engine> {
        let fleet = FleetLimit::new(settings.base.max_concurrent_requests);
        // One HTTP client (and connection pool) per distinct timeout and egress rule, not per
        // clinic: a thousand clinics on one API share its connections.
        let mut pools: HashMap<(std::time::Duration, bool), reqwest::Client> = HashMap::new();
        let mut clients = Vec::with_capacity(settings.base.clinics.len());
        for c in &settings.base.clinics {
            let cfg = &c.clinicea;
            let http = match pools.entry((cfg.timeout, cfg.allow_private)) {
                std::collections::hash_map::Entry::Occupied(e) => e.get().clone(),
                std::collections::hash_map::Entry::Vacant(e) => e
                    .insert(
                        Client::http_for(cfg)
                            .with_context(|| format!("clinic {}: the HTTP client", c.name))?,
                    )
                    .clone(),
            };
            clients.push(Client::new(
                cfg,
                http,
                fleet.clinic(cfg.max_concurrent_requests),
            ));
        }
        let mailer = match &settings.smtp {
            Some(s) => Some(Arc::new(
                Mailer::new(s.clone()).map_err(|p| anyhow::anyhow!("smtp: {}", p.message))?,
            )),
            None => None,
        };
        let deliverer = Deliverer::new(
            store.clone(),
            settings.pipeline.destinations.clone(),
            mailer,
            events.deliveries(),
        )
        .await?
        .with_clinic_zones(
            settings
                .base
                .clinics
                .iter()
                .map(|c| (c.name.clone(), c.clinicea.timezone)),
        );
        Ok(Engine {
            settings,
            store,
            clients,
            deliverer,
            events,
            digest_kick: Arc::default(),
        })
    }

    /// The poll context of one clinic (by its index in `settings.base.clinics`).
    fn ctx_of(
        &self,
        index: usize,
        wake: Option<Announcer>,
        cancel: CancellationToken,
    ) -> PollCtx<OutboxIntake> {
        let clinic = &self.settings.base.clinics[index];
        PollCtx {
            clinic: clinic.name.clone(),
            intake: OutboxIntake {
                store: self.store.clone(),
                pipeline: self.settings.pipeline.clone(),
                wake,
                events: self.events.changes(),
                digest_kick: Some(self.digest_kick.clone()),
            },
            client: self.clients[index].clone(),
            overlap: clinic.clinicea.overlap,
            start_from: clinic.clinicea.start_from,
            baseline: clinic.clinicea.baseline,
            page_delay: clinic.clinicea.page_delay,
            cancel,
        }
    }

    /// The poll context of the clinic named `clinic`, if there is one.
    pub fn poll_ctx(
        &self,
        clinic: &str,
        wake: Option<mpsc::UnboundedSender<Wake>>,
        cancel: CancellationToken,
    ) -> Option<PollCtx<OutboxIntake>> {
        let index = self
            .settings
            .base
            .clinics
            .iter()
            .position(|c| c.name == clinic)?;
        let wake = wake.map(|tx| Announcer::new(self.store.clone(), tx));
        Some(self.ctx_of(index, wake, cancel))
    }

    /// Every clinic's poll context with the resources it polls, in clinic order.
    pub(crate) fn poll_ctxs(
        &self,
        wake: Option<mpsc::UnboundedSender<Wake>>,
        cancel: CancellationToken,
    ) -> Vec<(PollCtx<OutboxIntake>, Vec<config::Resource>)> {
        // One announcer for the fleet: the wakes of every clinic committed during a flush wait
        // for the same next one.
        let wake = wake.map(|tx| Announcer::new(self.store.clone(), tx));
        (0..self.settings.base.clinics.len())
            .map(|i| {
                (
                    self.ctx_of(i, wake.clone(), cancel.clone()),
                    self.settings.base.clinics[i].resources.clone(),
                )
            })
            .collect()
    }

    /// Polls every resource of every clinic once, side by side (within the request limits);
    /// the results in clinic, then resource order.
    pub async fn poll_all(&self) -> Vec<Polled> {
        self.poll_clinics(|_| true).await
    }

    /// [`Engine::poll_all`] for the clinics `polls` names.
    pub(crate) async fn poll_clinics(&self, polls: impl Fn(&str) -> bool) -> Vec<Polled> {
        let mut set = tokio::task::JoinSet::new();
        for (ctx, resources) in self.poll_ctxs(None, CancellationToken::new()) {
            if !polls(&ctx.clinic) {
                continue;
            }
            for res in resources {
                let ctx = ctx.clone();
                set.spawn(async move {
                    let result = poll::poll_resource(&ctx, &res).await;
                    Polled {
                        clinic: ctx.clinic.clone(),
                        resource: res.name.clone(),
                        result,
                    }
                });
            }
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(r) = r {
                out.push(r);
            }
        }
        out.sort_by(|a, b| (&a.clinic, &a.resource).cmp(&(&b.clinic, &b.resource)));
        out
    }
}

/// Reduces the deleted records an older version stored whole to tombstones (see
/// [`crate::ingest::diff::tombstone`]); the work is done once per store.
async fn reduce_tombstones(store: &Store, base: &Base) -> anyhow::Result<()> {
    let n = store
        .upgrade_snapshots_once("reduced-tombstones", |resource, id, raw| {
            let (id_field, status_field) =
                base.resources.iter().find(|r| r.name == resource).map_or(
                    (config::defaults::ID_FIELD, config::defaults::STATUS_FIELD),
                    |r| (r.id_field.as_str(), r.status_field.as_str()),
                );
            crate::ingest::diff::reduce_stored(raw, id_field, status_field, id)
        })
        .await?;
    if n > 0 {
        tracing::info!(
            reduced = n,
            "deleted records kept whole were reduced to their id and delete flag"
        );
    }
    Ok(())
}
