//! `migrate-store`: a one-way copy of a sled store into an empty PostgreSQL store (checkpoints,
//! poll status, baselines, snapshots, the journal, queued deliveries with their attempt logs,
//! dead letters, destination health and the change-id key), so a notifier that outgrows one
//! machine neither re-sends nor loses anything: the same key gives the same `webhook-id`s, the
//! checkpoints resume where sled stopped, and the snapshots keep known records known.

use super::open_store_for_cli;
use crate::daemon::settings::load_settings;
use crate::outbox::store::{PgOptions, Store};
use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `migrate-store`.
#[derive(Debug, clap::Args)]
pub struct MigrateStoreArgs {
    /// The PostgreSQL database to copy into (empty: the copy is one way, and never merges).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) to: String,
}

/// `migrate-store --to URL`: copies the sled store the config names into the database. The
/// notifier must be stopped (sled allows one process per store; its error says so).
pub async fn run(config: &Path, args: &MigrateStoreArgs) -> anyhow::Result<ExitCode> {
    let settings = load_settings(config)?;
    let source = open_store_for_cli(&settings).await?;
    let Some(sled) = source.sled() else {
        anyhow::bail!(
            "the config's store is already PostgreSQL; `migrate-store` copies a sled store (point --config at the config that names it)"
        );
    };
    let target = Store::open_postgres(&PgOptions {
        url: args.to.clone(),
        holder: None,
        lease: crate::config::defaults::LEASE,
    })
    .await
    .context("opening the PostgreSQL store to copy into")?;
    let Some(pg) = target.postgres() else {
        unreachable!("open_postgres opens PostgreSQL")
    };
    if !pg.is_empty().await? {
        anyhow::bail!(
            "{} already holds a notifier's state; the copy goes into an empty database only (it never merges two stores)",
            target.describe()
        );
    }
    let dump = sled.export().context("reading the sled store")?;
    let rows = pg
        .import(&dump)
        .await
        .context("writing into PostgreSQL (nothing was committed)")?;
    println!(
        "Copied {} into {}: {rows} rows ({} checkpoints and poll states, {} records, {} journal entries, {} queued deliveries, {} dead letters), and the change-id key.",
        source.describe(),
        target.describe(),
        dump.keyed.len(),
        dump.records.len(),
        dump.journal.len(),
        dump.outbox.len(),
        dump.dead.len(),
    );
    println!(
        "Next: set `store: {{ backend: postgres, url: ... }}` in the config and start the replicas; keep the sled folder until they run."
    );
    Ok(ExitCode::SUCCESS)
}
