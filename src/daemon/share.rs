//! A replica's share of the fleet (PostgreSQL store): every tick ([`tick_of`] the lease) it marks
//! itself alive, renews the leases it holds, gives back what it holds beyond a fair share and
//! takes free clinics up to it; it runs the poll loops of exactly the clinics it holds.
//!
//! Losing a lease stops that clinic's loops. So does a database this replica cannot reach for
//! longer than its leases are held ([`hold_of`], measured from before the last renewal was
//! sent): by then another replica may own them. The fence in the store refuses any write a
//! loop that has not stopped yet might attempt.
//!
//! A clinic given back is given back only after its loops have stopped, so its next owner
//! never polls it at the same time.

use crate::outbox::lease::{fair_share, hold_of, tick_of};
use crate::outbox::postgres::PgStore;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long giving back a clinic waits for its poll loops to stop (a poll stops between pages,
/// and a page is committed without an await).
const STOP_WAIT: Duration = Duration::from_secs(10);

/// The loops of one clinic this replica holds.
struct Held {
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl Held {
    /// Stops the loops and waits for them (at most [`STOP_WAIT`]; then they are aborted).
    async fn stop(mut self) {
        self.cancel.cancel();
        if tokio::time::timeout(STOP_WAIT, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            self.tasks.abort_all();
        }
    }
}

/// What a tick decided: the clinics to stop (lost or given back) and to start.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    stop: Vec<String>,
    give_back: Vec<String>,
    want: usize,
}

/// Decides a tick from what the database says this replica holds.
fn plan(
    configured: &BTreeSet<String>,
    running: &BTreeSet<String>,
    held: &BTreeSet<String>,
    live: usize,
) -> Plan {
    let share = fair_share(configured.len(), live);
    // Held and still configured; held but no longer configured goes back at once.
    let mut keep: Vec<String> = held.intersection(configured).cloned().collect();
    let mut give_back: Vec<String> = held.difference(configured).cloned().collect();
    if keep.len() > share {
        give_back.extend(keep.split_off(share));
    }
    let keep: BTreeSet<String> = keep.into_iter().collect();
    Plan {
        stop: running.difference(&keep).cloned().collect(),
        want: share.saturating_sub(keep.len()),
        give_back,
    }
}

/// Runs this replica's share of `clinics` until `cancel` fires: `start(clinic, token)` starts a
/// clinic's poll loops under `token` and returns their tasks; `stopped(clinic)` is told when
/// they have stopped. The leases themselves stay when it returns (a reload renews them; a
/// shutdown gives them all back with [`PgStore::leave`]).
pub(crate) async fn keep_share(
    pg: PgStore,
    clinics: Vec<String>,
    start: impl Fn(&str, CancellationToken) -> JoinSet<()>,
    stopped: impl Fn(&str),
    cancel: CancellationToken,
) {
    let configured: BTreeSet<String> = clinics.into_iter().collect();
    let tick = tick_of(pg.lease);
    let mut running: BTreeMap<String, Held> = BTreeMap::new();
    // The database's hold on this replica's leases, as this replica can vouch for it.
    let mut valid_until = tokio::time::Instant::now();
    loop {
        let asked = tokio::time::Instant::now();
        match share_tick(&pg, &configured, &running).await {
            Ok((plan, taken)) => {
                valid_until = asked + hold_of(pg.lease);
                for clinic in &plan.stop {
                    if let Some(h) = running.remove(clinic) {
                        h.stop().await;
                        stopped(clinic);
                        tracing::info!(%clinic, "this replica no longer polls the clinic");
                    }
                }
                if !plan.give_back.is_empty() {
                    if let Err(e) = pg.release_leases(&plan.give_back).await {
                        tracing::warn!("cannot give back leases (they expire by themselves): {e}");
                    }
                }
                for clinic in taken {
                    if running.contains_key(&clinic) {
                        continue;
                    }
                    let token = cancel.child_token();
                    let tasks = start(&clinic, token.clone());
                    tracing::info!(%clinic, "this replica polls the clinic");
                    running.insert(
                        clinic,
                        Held {
                            cancel: token,
                            tasks,
                        },
                    );
                }
            }
            Err(e) => {
                if tokio::time::Instant::now() >= valid_until && !running.is_empty() {
                    tracing::error!(clinics = running.len(), "cannot renew this replica's leases ({e}) and they may have expired: it stops polling until it can");
                    for (clinic, h) in std::mem::take(&mut running) {
                        h.stop().await;
                        stopped(&clinic);
                    }
                } else {
                    tracing::warn!(
                        "cannot renew this replica's leases ({e}); trying again in {} ms",
                        tick.as_millis()
                    );
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(tick) => {}
        }
    }
    for (_, h) in running {
        h.stop().await;
    }
}

/// One tick's database work: alive, renew, decide, take. Returns the plan and every clinic this
/// replica holds afterwards that it should run.
async fn share_tick(
    pg: &PgStore,
    configured: &BTreeSet<String>,
    running: &BTreeMap<String, Held>,
) -> Result<(Plan, Vec<String>), crate::outbox::store::StoreError> {
    let live = pg.heartbeat().await?;
    let held: BTreeSet<String> = pg.renew_leases().await?.into_iter().collect();
    let running_names: BTreeSet<String> = running.keys().cloned().collect();
    let plan = plan(configured, &running_names, &held, live);
    let mut run: Vec<String> = held
        .intersection(configured)
        .filter(|c| !plan.give_back.contains(c))
        .cloned()
        .collect();
    if plan.want > 0 {
        let mut candidates: Vec<String> = configured.difference(&held).cloned().collect();
        // Replicas that look for free clinics at the same moment should not all race for the
        // same ones first.
        use rand::seq::SliceRandom;
        candidates.shuffle(&mut rand::thread_rng());
        run.extend(pg.acquire_leases(&candidates, plan.want).await?);
    }
    Ok((plan, run))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_replica_keeps_a_fair_share_gives_back_the_rest_and_asks_for_what_it_lacks() {
        let all = set(&["a", "b", "c", "d", "e", "f"]);
        // Alone: everything.
        let p = plan(&all, &set(&[]), &set(&[]), 1);
        assert_eq!(p.want, 6);
        assert!(p.stop.is_empty() && p.give_back.is_empty());
        // A second replica appeared: keep three, give back three (their loops stop first).
        let p = plan(&all, &all, &all, 2);
        assert_eq!(p.want, 0);
        assert_eq!(p.give_back.len(), 3);
        assert_eq!(p.stop, p.give_back);
        // A lease was lost (it expired or moved): its loops stop, and one more is asked for.
        let p = plan(&all, &set(&["a", "b", "c"]), &set(&["a", "b"]), 2);
        assert_eq!(p.stop, vec!["c".to_string()]);
        assert_eq!(p.want, 1);
        // A clinic removed from the config goes back at once.
        let p = plan(&set(&["a"]), &set(&["a", "z"]), &set(&["a", "z"]), 1);
        assert_eq!(p.give_back, vec!["z".to_string()]);
        assert_eq!(p.stop, vec!["z".to_string()]);
    }
}
