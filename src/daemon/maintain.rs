//! The store's housekeeping, run by `once` and every [`MAINTENANCE_INTERVAL`] by `run`: the
//! change journal and the dead letters kept to their retention periods (they hold patient data),
//! and the store's file modes tightened.

use crate::config;
use crate::outbox::store::Store;
use anyhow::Context;
use chrono::Utc;

/// How often the running notifier applies the store's retention periods (change journal, dead
/// letters) and tightens its file modes.
pub(crate) const MAINTENANCE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// `now - age`, or the earliest instant there is when that underflows (nothing is older).
pub(crate) fn cutoff_before(
    now: chrono::DateTime<Utc>,
    age: std::time::Duration,
) -> chrono::DateTime<Utc> {
    chrono::Duration::from_std(age)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC)
}

/// What one round of [`maintain_store`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Maintenance {
    /// Change journal entries past `store.journal_retention`.
    pub(crate) journal: usize,
    /// Dead letters past `store.dead_letter_retention`.
    pub(crate) dead: usize,
}

/// One round of housekeeping on `store` with the retention periods of `s`, as of `now`.
pub(crate) async fn maintain_store(
    store: &Store,
    s: &config::StoreSettings,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<Maintenance> {
    let journal = store
        .prune_changes_before(cutoff_before(now, s.journal_retention))
        .await
        .context("pruning the change journal")?;
    let dead = store
        .purge_dead(Some(
            cutoff_before(now, s.dead_letter_retention).timestamp_millis(),
        ))
        .await
        .context("deleting expired dead letters")?;
    if journal > 0 {
        tracing::info!(removed = journal, "pruned the change journal");
    }
    if dead > 0 {
        tracing::info!(
            removed = dead,
            retention = ?s.dead_letter_retention,
            "deleted dead letters past their retention"
        );
    }
    store.tighten_permissions();
    Ok(Maintenance { journal, dead })
}
