//! The engine: everything a notifier runs with for one compiled config — the store, the API
//! client and the deliverer — built in one place, for `run`, each reload, `once` and the tests.

use crate::config::{self, Base};
use crate::daemon::events::Events;
use crate::daemon::intake::OutboxIntake;
use crate::daemon::settings::Settings;
use crate::deliver::email::Mailer;
use crate::deliver::Deliverer;
use crate::ingest::client::Client;
use crate::ingest::ctx::{PollCtx, PollError};
use crate::ingest::poll::{self, PollReport};
use crate::outbox::entry::Wake;
use crate::outbox::store::{Store, StoreError};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Everything a running notifier holds.
pub struct Engine {
    /// The compiled settings.
    pub settings: Settings,
    /// The store.
    pub store: Store,
    /// The API client.
    pub(crate) client: Client,
    /// The deliverer.
    pub deliverer: Deliverer,
    /// Who watches its polls and deliveries; a reload's engine tells the same watcher.
    events: Events,
}

impl Engine {
    /// Opens the store and builds the client and deliverer over it; `events` is told what the
    /// polls and deliveries do ([`Events::none`]: nobody).
    pub fn open(settings: Settings, events: Events) -> anyhow::Result<Engine> {
        let store = Store::open(&settings.base.store.path, settings.base.store.cache_bytes)?;
        reduce_tombstones(&store, &settings.base)?;
        Engine::over(store, settings, events)
    }

    /// The engine a reload to `settings` runs: this one's store and watcher, a new client and
    /// deliverer. It is built before the running generation stops, so a config that parses but
    /// cannot be applied (an SMTP username without a password, a bad CA file) is rejected while
    /// the old one keeps running.
    pub(crate) fn reloaded(&self, settings: Settings) -> anyhow::Result<Engine> {
        Engine::over(self.store.clone(), settings, self.events.clone())
    }

    fn over(store: Store, settings: Settings, events: Events) -> anyhow::Result<Engine> {
        let client = Client::new(&settings.base.clinicea)?;
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
        )?;
        Ok(Engine {
            settings,
            store,
            client,
            deliverer,
            events,
        })
    }

    /// The poll context for this engine.
    pub fn poll_ctx(
        &self,
        wake: Option<mpsc::UnboundedSender<Wake>>,
        cancel: CancellationToken,
    ) -> PollCtx<OutboxIntake> {
        PollCtx {
            clinic: crate::model::DEFAULT_CLINIC.to_string(),
            intake: OutboxIntake {
                store: self.store.clone(),
                pipeline: self.settings.pipeline.clone(),
                wake,
                events: self.events.changes(),
            },
            client: self.client.clone(),
            overlap: self.settings.base.clinicea.overlap,
            start_from: self.settings.base.clinicea.start_from,
            baseline: self.settings.base.clinicea.baseline,
            page_delay: self.settings.base.clinicea.page_delay,
            cancel,
        }
    }

    /// Polls every resource once, side by side.
    pub async fn poll_all(&self) -> Vec<(String, Result<PollReport, PollError<StoreError>>)> {
        let ctx = self.poll_ctx(None, CancellationToken::new());
        let mut set = tokio::task::JoinSet::new();
        for res in self.settings.base.resources.clone() {
            let ctx = ctx.clone();
            set.spawn(async move {
                let r = poll::poll_resource(&ctx, &res).await;
                (res.name.clone(), r)
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(r) = r {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Reduces the deleted records an older version stored whole to tombstones (see
/// [`crate::ingest::diff::tombstone`]); the work is done once per store.
fn reduce_tombstones(store: &Store, base: &Base) -> anyhow::Result<()> {
    let n = store.upgrade_snapshots_once("reduced-tombstones", |resource, id, raw| {
        let (id_field, status_field) = base.resources.iter().find(|r| r.name == resource).map_or(
            (config::defaults::ID_FIELD, config::defaults::STATUS_FIELD),
            |r| (r.id_field.as_str(), r.status_field.as_str()),
        );
        crate::ingest::diff::reduce_stored(raw, id_field, status_field, id)
    })?;
    if n > 0 {
        tracing::info!(
            reduced = n,
            "deleted records kept whole were reduced to their id and delete flag"
        );
    }
    Ok(())
}
