//! The digest flusher: turns closed digest windows into outbox entries.
//!
//! A delivery to a destination with `digest:` is stored as a [`DigestMember`] in the page's
//! transaction (`daemon::intake`). Members are grouped by destination, clinic and recipient; each
//! group is one digest. [`flush_due`] is the step: at time `now`, a group with `max` members or
//! more gives its first `max` at once (an early digest), and the members whose window has closed
//! (the first close after they were stored, [`DigestSchedule::next_close`] in the clinic's zone)
//! become one digest. Each digest is rendered with the digest template (`route::digest`) into one
//! outbox entry, written in the same transaction that removes its members
//! ([`Store::flush_digest`]); the workers then deliver it like any other entry.
//!
//! Why a crash loses nothing and sends nothing twice under two ids: until that transaction commits
//! the members are in the store and nothing is queued; after it, the entry is, and the members are
//! not. The entry's `webhook-id` (and the email's `Message-ID`) is a keyed hash of the group and
//! its members' change ids ([`crate::model::IdKey::digest_id`]), so a flush redone after a crash
//! before the commit makes the same id for the same members. On PostgreSQL two replicas may
//! render the same digest; the transaction of the second finds the members gone and rolls back.
//!
//! [`run_flusher`] runs the step in the daemon, one task per generation: after each page commit
//! that stored members (for early digests) and otherwise at the next window close.

use crate::config::digest::{DigestSchedule, DEFAULT_DIGEST_MAX};
use crate::outbox::entry::{DigestMember, OutboxEntry, Wake};
use crate::outbox::store::Store;
use crate::route::digest::{self as render_digest, Window};
use crate::route::plan::Pipeline;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// The longest the flusher sleeps without looking at the store: a missed kick, or members another
/// replica stored, wait at most this long past their window.
pub(crate) const MAX_FLUSHER_SLEEP: Duration = Duration::from_secs(60);
/// How long the flusher waits after the store failed before it tries again.
pub(crate) const FLUSHER_RETRY: Duration = Duration::from_secs(5);
/// The `event_type` of a digest's outbox entry.
pub const DIGEST_EVENT_TYPE: &str = "digest";

/// A digest group: destination, clinic, recipient.
type GroupKey = (String, String, String);

/// What one [`flush_due`] did.
#[derive(Debug, Default)]
pub struct Flushed {
    /// Digests written to the outbox.
    pub digests: usize,
    /// Changes they hold.
    pub changes: usize,
    /// The wake of each new entry, for the workers.
    pub wakes: Vec<Wake>,
}

/// Every waiting member, grouped, each group oldest first.
async fn groups(store: &Store) -> anyhow::Result<BTreeMap<GroupKey, Vec<DigestMember>>> {
    let mut out: BTreeMap<GroupKey, Vec<DigestMember>> = BTreeMap::new();
    for m in store.digest_members().await? {
        let (d, c, r) = m.group();
        out.entry((d.to_string(), c.to_string(), r.to_string()))
            .or_default()
            .push(m);
    }
    for v in out.values_mut() {
        v.sort_by_key(|m| m.seq);
    }
    Ok(out)
}

/// When the window a member stored at `created_ms` falls in closes (now, for a destination that
/// has no digest any more: its members go out at once).
fn close_of(
    schedule: Option<&DigestSchedule>,
    created_ms: i64,
    tz: chrono_tz::Tz,
) -> DateTime<Utc> {
    let created = DateTime::from_timestamp_millis(created_ms).unwrap_or_else(Utc::now);
    match schedule {
        Some(s) => s.next_close(created, tz),
        None => created,
    }
}

/// What waits for one destination: members and when the next digest goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// Changes waiting.
    pub members: usize,
    /// Digests they make (one per clinic and recipient).
    pub groups: usize,
    /// When the next of them goes out (its window's close; at once when a group is full).
    pub next: Option<DateTime<Utc>>,
}

/// Per destination, what waits in its digests (for `status`, `test-rule` and the flusher's sleep).
/// Destinations no longer configured are left out: their members wait for them to come back.
pub async fn pending(
    store: &Store,
    pipeline: &Pipeline,
) -> anyhow::Result<BTreeMap<String, Pending>> {
    let mut out: BTreeMap<String, Pending> = BTreeMap::new();
    for ((dest, clinic, _), members) in groups(store).await? {
        let Some(d) = pipeline.destinations.get(&dest) else {
            continue;
        };
        let digest = d.digest.as_ref();
        let max = digest.map_or(DEFAULT_DIGEST_MAX, |g| g.max);
        let tz = pipeline.timezone(&clinic);
        let next = if members.len() >= max {
            members
                .last()
                .and_then(|m| DateTime::from_timestamp_millis(m.created_ms))
        } else {
            members
                .first()
                .map(|m| close_of(digest.map(|g| &g.schedule), m.created_ms, tz))
        };
        let p = out.entry(dest).or_default();
        p.members += members.len();
        p.groups += 1;
        p.next = match (p.next, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(out)
}

/// The step: flushes every digest due at `now` (full groups early, closed windows), each into one
/// outbox entry in one transaction with the removal of its members, and makes them durable before
/// returning their wakes (nothing is sent before it is on disk).
pub async fn flush_due(
    store: &Store,
    pipeline: &Pipeline,
    now: DateTime<Utc>,
) -> anyhow::Result<Flushed> {
    let mut flushed = Flushed::default();
    for ((dest_name, clinic, recipient), mut members) in groups(store).await? {
        // A removed destination's members wait for it, as its outbox entries would.
        let Some(dest) = pipeline.destinations.get(&dest_name) else {
            continue;
        };
        let digest = dest.digest.as_ref();
        let max = digest.map_or(DEFAULT_DIGEST_MAX, |g| g.max);
        let tz = pipeline.timezone(&clinic);
        loop {
            let (take, window) = if members.len() >= max {
                let from = members[0].created_ms;
                (
                    members.drain(..max).collect::<Vec<_>>(),
                    Window {
                        from: DateTime::from_timestamp_millis(from).unwrap_or(now),
                        to: now,
                        early: true,
                    },
                )
            } else {
                let (due, rest): (Vec<_>, Vec<_>) = members
                    .into_iter()
                    .partition(|m| close_of(digest.map(|g| &g.schedule), m.created_ms, tz) <= now);
                members = rest;
                let Some(first) = due.first() else {
                    break;
                };
                let to = due
                    .iter()
                    .map(|m| close_of(digest.map(|g| &g.schedule), m.created_ms, tz))
                    .max()
                    .unwrap_or(now);
                let from = DateTime::from_timestamp_millis(first.created_ms).unwrap_or(now);
                (
                    due,
                    Window {
                        from,
                        to,
                        early: false,
                    },
                )
            };
            if take.is_empty() {
                break;
            }
            let change_ids: Vec<&str> = take.iter().map(|m| m.change_id.as_str()).collect();
            let id = store
                .id_key()
                .digest_id([&dest_name, &clinic, &recipient], &change_ids);
            let items = take.iter().map(|m| m.item.clone()).collect();
            let ctx = render_digest::context(items, &dest_name, &clinic, tz, window);
            let payload = match render_digest::render(pipeline, dest, &recipient, &id, &ctx) {
                Ok(p) => p,
                Err(reason) => {
                    // The reason names a template and a line, never a value. The changes are not
                    // lost: they go out with the shipped digest template instead.
                    tracing::error!(destination = %dest_name, clinic = %clinic, %reason, "a digest could not be rendered with its template; sending it with the shipped one");
                    let mut plain = (**dest).clone();
                    plain.digest = None;
                    render_digest::render(pipeline, &plain, &recipient, &id, &ctx)
                        .map_err(|e| anyhow::anyhow!("digest of {dest_name}: {e}"))?
                }
            };
            let resource = if take.iter().all(|m| m.resource == take[0].resource) {
                take[0].resource.clone()
            } else {
                "*".to_string()
            };
            let now_ms = Utc::now().timestamp_millis();
            let entry = OutboxEntry {
                seq: store.next_id().await?,
                destination: dest_name.clone(),
                clinic: clinic.clone(),
                webhook_id: id,
                event_type: DIGEST_EVENT_TYPE.to_string(),
                resource,
                // A digest is about many records; `purge` erases members, not sent digests.
                record_id: String::new(),
                rule: take[0].rule.clone(),
                change_seq: 0,
                payload,
                attempts: 0,
                next_attempt_ms: now_ms,
                created_ms: now_ms,
                held: None,
            };
            let seqs: Vec<u64> = take.iter().map(|m| m.seq).collect();
            if !store.flush_digest(&dest_name, &seqs, &entry).await? {
                // Another replica (or an earlier flush) took them: look again next time.
                tracing::debug!(destination = %dest_name, clinic = %clinic, "digest members were flushed elsewhere");
                break;
            }
            tracing::info!(destination = %dest_name, clinic = %clinic, webhook_id = %entry.webhook_id, changes = take.len(), early = window.early, "digest queued");
            flushed.digests += 1;
            flushed.changes += take.len();
            flushed.wakes.push(store.wake_of(&entry));
        }
    }
    if flushed.digests > 0 {
        store.flush().await?;
    }
    Ok(flushed)
}

/// Runs [`flush_due`] until cancelled: at once, after every `kick` (a page stored members), and
/// at the next window close, at least every [`MAX_FLUSHER_SLEEP`].
pub async fn run_flusher(
    store: Store,
    pipeline: Arc<Pipeline>,
    wake: mpsc::UnboundedSender<Wake>,
    kick: Arc<Notify>,
    cancel: CancellationToken,
) {
    loop {
        let sleep = match flush_due(&store, &pipeline, Utc::now()).await {
            Ok(f) => {
                for w in f.wakes {
                    let _ = wake.send(w);
                }
                match pending(&store, &pipeline).await {
                    Ok(p) => p
                        .values()
                        .filter_map(|p| p.next)
                        .min()
                        .map_or(MAX_FLUSHER_SLEEP, |t| {
                            (t - Utc::now()).to_std().unwrap_or(Duration::ZERO)
                        })
                        .min(MAX_FLUSHER_SLEEP),
                    Err(e) => {
                        tracing::warn!("cannot read the waiting digests: {e:#}");
                        FLUSHER_RETRY
                    }
                }
            }
            Err(e) => {
                tracing::error!("digest flush failed (the changes stay waiting): {e:#}");
                FLUSHER_RETRY
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = kick.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}
