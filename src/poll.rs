//! One poll of one resource: fetch every page since the checkpoint, diff each record against its
//! snapshot, plan the deliveries of each change, commit each page atomically, and advance the
//! checkpoint only when a pass over the window read every record in it.
//!
//! # Why no record is skipped for good
//!
//! Clinicea pages by offset and promises no order; between two page requests records are edited,
//! deleted and added, and in most orders (by modification time above all) that moves records
//! across page boundaries. A record that moves from the unread part of the window to the read
//! part shifts the rest right (some record is served twice); a record that moves from the read
//! part to the unread part shifts the rest left, and the record at the boundary is not served in
//! that pass at all. If its change time is older than the next since, nothing would read it again.
//!
//! Each pass over the window (from the first page to the first short one, with the same since)
//! remembers the ids it served (64-bit hashes of them: 8 bytes a record, about 16 MB for a
//! million-record backfill; a hash collision only costs a needless re-read). The argument is a
//! pigeonhole over the sync feed, whose window never shrinks (deleted records stay listed, flagged
//! deleted, so an edit, deletion or insert only moves a record or adds one):
//!
//! - pages `0..m` were full (`s` records each) and page `m` was short, so the pass took
//!   `m·s + |page m|` slots, and page `m` held the window's tail: `|W_m| = m·s + |page m|`, where
//!   `W_m` is the window at the last request;
//! - if no id was served twice (across pages; a page is one snapshot, so a record repeated inside
//!   one page is the feed listing it twice, not a move), the pass served `|W_m|` distinct records,
//!   every one of them still in `W_m` (the window never shrinks), so it served all of `W_m`: every
//!   record that was in the window throughout the pass, wherever the server put it.
//! - A record that entered the window or moved during the pass (and may have been missed) changed
//!   during the pass, so its change time is at or after the pass began, on the API's clock, which
//!   the next poll's since (the API's time at the start of this poll minus the overlap) covers.
//!
//! So a pass in which an id came back is re-read (another pass from the first page, same since)
//! before the checkpoint moves, up to [`MAX_PASSES`] passes. Pages are committed as they come: a
//! re-read compares equal to the snapshots and produces no change and no delivery, and a record
//! edited in between is a real change, delivered once. If no pass came out clean, the checkpoint
//! stays: the next poll reads the same window again (and more), a warning names the resource, and
//! `clinicea_polls_unsettled_total` counts it.
//!
//! What it costs: a quiet poll (one short page) is still exactly one request; a multi-page window
//! that did not shift costs nothing extra; a shifted one costs one more pass (rarely two). A window
//! that shifts in every pass (edits landing faster than a pass takes, or a server whose order
//! changes with every request) keeps its checkpoint and is re-read every poll until a pass comes
//! out clean: no change is lost, the requests are what grows.
//!
//! What the argument does not cover: a feed that drops records from the window (hard deletes, or
//! a record whose change time moves back before the since). Then a left shift can hide a record
//! with nothing served twice. Clinicea's sync feeds flag deletions instead of dropping records; a
//! feed that does drop them loses, at worst, the record at the boundary until it changes again
//! (its next change brings it into the next window). The overlap does not help there; paging by the
//! records' own times would, and the feed offers no such parameter.
//!
//! # Whose clock
//!
//! The records' change times come from the API's clock, so the since does too: the first response
//! of a poll carries a `Date`, and `Date - (our clock when it arrived)` is the skew, an
//! underestimate by at most a second plus the round trip (so the since errs early, which only
//! re-reads). The next poll asks from the API's time at this poll's start, minus the overlap. A
//! skew beyond half the overlap is logged as a warning (when it first appears or changes) and is
//! always exported as `clinicea_api_clock_skew_seconds`. A missing or absurd `Date` (unparseable,
//! or more than [`MAX_PLAUSIBLE_SKEW`] from our clock) falls back to our clock (shifted by a lag
//! measured before, if the API was behind) with twice the overlap, never to a since in the future.
//! If the API's clock goes back between two polls (its skew drops), the checkpoint moves to the
//! previous poll's start on the API's new clock instead, so what was changed in between, stamped
//! with the earlier times, is read by the next poll.

use crate::clinicea::{ApiError, Client, Page};
use crate::config::{Resource, StartFrom};
use crate::deliver::{Pipeline, Wake};
use crate::diff::{self, DiffSpec, Skip};
use crate::model::{Change, ChangeKind};
use crate::store::{decode_snapshot, Checkpoint, PageWrite, PollStatus, Store, StoreError};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

/// A guard against an endpoint that ignores the page parameter and never returns a short page:
/// the most pages one pass reads.
pub const MAX_PAGES_PER_POLL: u32 = 100_000;
/// The most passes one poll makes over a window that shifts while it is paged (see the module
/// docs); after that the checkpoint stays and the next poll reads the window again.
pub const MAX_PASSES: u32 = 3;
/// A `Date` further than this from our clock is not believed: the since falls back to our clock.
pub const MAX_PLAUSIBLE_SKEW: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// Two skew readings closer than this are the same skew (the `Date` header has one-second
/// resolution, plus the round trip): a warning is logged again only past it.
pub const SKEW_RESOLUTION: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// Why a poll failed. The checkpoint stays where it was in every case.
#[derive(Debug, Error)]
pub enum PollError {
    /// The API failed (after the retries inside the poll).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The poll was cancelled by shutdown between pages.
    #[error("{0}: poll cancelled by shutdown")]
    Cancelled(String),
}

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollReport {
    /// Pages fetched.
    pub pages: u32,
    /// Records fetched.
    pub records: u64,
    /// Changes detected.
    pub changes: u64,
    /// Records skipped (no id, not an object).
    pub skipped: u64,
    /// Outbox entries created.
    pub deliveries: u64,
    /// Passes over the window (more than one when it shifted while it was paged).
    pub passes: u32,
    /// Whether a pass read the window without any record served twice (then the checkpoint
    /// advanced); false when every pass saw the window shift.
    pub settled: bool,
}

/// One change a poll detected and stored, with where it is going: what an observer (the `demo`
/// command's live stream) is told. It carries ids and names only, never record contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollEvent {
    /// The resource key.
    pub resource: String,
    /// Added, modified or deleted.
    pub kind: ChangeKind,
    /// The record id.
    pub id: String,
    /// The change's stable id (the `webhook-id` of its deliveries).
    pub change_id: String,
    /// Every matching rule, in file order.
    pub rules: Vec<String>,
    /// The destinations it was queued for (one entry per destination).
    pub destinations: Vec<String>,
}

/// Everything a poll needs.
#[derive(Clone)]
pub struct PollCtx {
    /// The source (clinic) name.
    pub source: String,
    /// The store.
    pub store: Store,
    /// The API client of this source.
    pub client: Client,
    /// Rules, templates and destinations.
    pub pipeline: Arc<Pipeline>,
    /// How far back each poll re-reads.
    pub overlap: Duration,
    /// Where the first poll starts.
    pub start_from: StartFrom,
    /// Pause between pages.
    pub page_delay: Duration,
    /// Tells the delivery workers about new outbox entries.
    pub wake: Option<mpsc::UnboundedSender<Wake>>,
    /// Stop between pages when cancelled.
    pub cancel: tokio_util::sync::CancellationToken,
    /// Told about each change once its page is stored (`None`: nobody is watching).
    pub observer: Option<mpsc::UnboundedSender<PollEvent>>,
}

/// Polls one resource once. On success the checkpoint has advanced if a pass came out clean
/// ([`PollReport::settled`]); on error it has not, and whatever pages were stored stay stored
/// (re-reading them produces nothing).
pub async fn poll_resource(ctx: &PollCtx, res: &Resource) -> Result<PollReport, PollError> {
    let started = Utc::now();
    let mut status = ctx.store.poll_status(&ctx.source, &res.name)?;
    status.last_started = Some(started);
    let result = poll_inner(ctx, res, started, &mut status).await;
    let finished = Utc::now();
    status.last_finished = Some(finished);
    match &result {
        Ok(rep) => {
            status.last_success = Some(finished);
            status.last_error = None;
            status.consecutive_failures = 0;
            status.last_records = rep.records;
            status.last_changes = rep.changes;
            status.last_pages = rep.pages;
            metrics::counter!("clinicea_polls_total", "resource" => res.name.clone()).increment(1);
            metrics::gauge!("clinicea_last_success_timestamp_seconds", "resource" => res.name.clone())
                .set(finished.timestamp() as f64);
        }
        Err(e) => {
            status.last_error = Some(e.to_string());
            status.consecutive_failures += 1;
            metrics::counter!("clinicea_polls_total", "resource" => res.name.clone()).increment(1);
            metrics::counter!("clinicea_poll_failures_total", "resource" => res.name.clone())
                .increment(1);
        }
    }
    ctx.store.set_poll_status(&ctx.source, &res.name, &status)?;
    result
}

async fn poll_inner(
    ctx: &PollCtx,
    res: &Resource,
    started: DateTime<Utc>,
    status: &mut PollStatus,
) -> Result<PollReport, PollError> {
    let cp = match ctx.store.checkpoint(&ctx.source, &res.name)? {
        Some(cp) => cp,
        None => {
            // Fix the origin durably on the very first poll, so `start_from: now` means the
            // first start, not the first successful poll.
            let (origin, origin_on_our_clock) = match ctx.start_from {
                StartFrom::Now => (started, true),
                StartFrom::At(t) => (t, false),
            };
            let cp = Checkpoint {
                origin,
                last_success_start: None,
                skew_ms: None,
                origin_on_our_clock,
            };
            ctx.store
                .set_checkpoint(&ctx.source, &res.name, &cp)
                .await?;
            cp
        }
    };
    let since = cp.since(ctx.overlap);
    let spec = DiffSpec {
        source: &ctx.source,
        resource: &res.name,
        id_field: &res.id_field,
        status_field: &res.status_field,
    };
    let mut report = PollReport::default();
    // The API's clock minus ours, from the poll's first response (`None`: no usable `Date`).
    let mut skew: Option<Option<TimeDelta>> = None;
    let hasher = RandomState::new();
    while report.passes < MAX_PASSES && !report.settled {
        report.passes += 1;
        let mut served = PassIds::new(&hasher);
        let mut page_no = res.first_page;
        let mut pass_pages = 0u32;
        // The next page's request, started while this page is diffed and stored (only after a
        // full page, which is always followed by another request; aborted if the poll stops).
        let mut prefetched: Option<AbortOnDropHandle<Result<Page, ApiError>>> = None;
        loop {
            if ctx.cancel.is_cancelled() {
                return Err(PollError::Cancelled(res.name.clone()));
            }
            let page = match prefetched.take() {
                Some(next) => next.await.map_err(|e| ApiError::Transport {
                    resource: res.name.clone(),
                    detail: format!("the page request task failed: {e}"),
                })??,
                None => ctx.client.fetch_page(res, since, page_no).await?,
            };
            if skew.is_none() {
                skew = Some(read_clock(ctx, res, &page, status));
            }
            report.pages += 1;
            pass_pages += 1;
            if !page.last && pass_pages < MAX_PAGES_PER_POLL && ctx.page_delay.is_zero() {
                let (client, res, next) = (ctx.client.clone(), res.clone(), page_no + 1);
                let fetch = async move { client.fetch_page(&res, since, next).await };
                prefetched = Some(AbortOnDropHandle::new(tokio::spawn(
                    fetch.instrument(tracing::Span::current()),
                )));
            }
            let last = page.last;
            let batch = diff_batch(
                ctx,
                res,
                &spec,
                page_no,
                page.records,
                &mut served,
                &mut report,
            )?;
            if served.page_repeats_previous() {
                return Err(ApiError::PageRepeats {
                    resource: res.name.clone(),
                    page: page_no,
                    param: res.page_param.clone(),
                }
                .into());
            }
            commit_batch(ctx, res, page_no, batch).await?;
            served.end_page();
            if last || pass_pages >= MAX_PAGES_PER_POLL {
                break;
            }
            page_no += 1;
            if !ctx.page_delay.is_zero() {
                tokio::time::sleep(ctx.page_delay).await;
            }
        }
        if served.repeats == 0 {
            report.settled = true;
        } else {
            metrics::counter!("clinicea_window_shifts_total", "resource" => res.name.clone())
                .increment(1);
            tracing::info!(resource = %res.name, pass = report.passes, records_served_twice = served.repeats, "the window shifted while it was paged; reading it again");
        }
    }
    if !report.settled {
        metrics::counter!("clinicea_polls_unsettled_total", "resource" => res.name.clone())
            .increment(1);
        tracing::warn!(resource = %res.name, passes = report.passes, "the window kept shifting while it was paged (records served twice in every pass); the checkpoint stays and the next poll reads the window again");
        return Ok(report);
    }
    let next = next_checkpoint(&cp, started, skew.flatten());
    ctx.store
        .set_checkpoint(&ctx.source, &res.name, &next)
        .await?;
    Ok(report)
}

/// The checkpoint after a settled poll that began at `started` (our clock), with the API's clock
/// `skew` ahead of ours (`None`: unknown). See the module docs.
fn next_checkpoint(cp: &Checkpoint, started: DateTime<Utc>, skew: Option<TimeDelta>) -> Checkpoint {
    match skew {
        Some(skew) => {
            let api_start = started + skew;
            let mut start = api_start;
            // The API's clock went back against ours: records changed since the last poll carry
            // times from before where this poll asked; the last poll's start, on the new clock.
            if let (Some(prev), Some(prev_skew)) = (cp.last_success_start, cp.skew_ms) {
                let fell_back = TimeDelta::milliseconds(prev_skew) - skew;
                if fell_back > SKEW_RESOLUTION {
                    start = start.min(prev - fell_back);
                }
            }
            Checkpoint {
                origin: if cp.origin_on_our_clock {
                    cp.origin + skew
                } else {
                    cp.origin
                },
                last_success_start: Some(start),
                skew_ms: Some(skew.num_milliseconds()),
                origin_on_our_clock: false,
            }
        }
        None => {
            // Our clock, moved back by a lag measured before: a since only ever earlier than ours.
            let lag = cp.skew_ms.filter(|ms| *ms < 0).unwrap_or(0);
            Checkpoint {
                origin: cp.origin,
                last_success_start: Some(started + TimeDelta::milliseconds(lag)),
                skew_ms: None,
                origin_on_our_clock: cp.origin_on_our_clock,
            }
        }
    }
}

/// Reads the API's clock off a poll's first response: the skew (API minus ours), or `None` when
/// its `Date` is missing or absurd. Logs a skew beyond half the overlap (once per change) and
/// exports it; records the reading in `status`.
fn read_clock(
    ctx: &PollCtx,
    res: &Resource,
    page: &Page,
    status: &mut PollStatus,
) -> Option<TimeDelta> {
    let skew = page
        .date
        .map(|date| date - page.received)
        .filter(|skew| skew.abs() <= MAX_PLAUSIBLE_SKEW);
    let previous = status.clock_skew_ms.map(TimeDelta::milliseconds);
    let was_unusable = status.api_date_unusable;
    status.clock_skew_ms = skew.map(|s| s.num_milliseconds());
    status.api_date_unusable = skew.is_none();
    let Some(skew) = skew else {
        if !was_unusable {
            let reason = if page.date.is_some() {
                "absurd"
            } else {
                "missing or unparseable"
            };
            tracing::warn!(resource = %res.name, reason, "the API's Date header is {reason}; the since falls back to our clock with twice the overlap");
        }
        return None;
    };
    metrics::gauge!("clinicea_api_clock_skew_seconds", "resource" => res.name.clone())
        .set(skew.num_milliseconds() as f64 / 1000.0);
    let bound = TimeDelta::from_std(ctx.overlap / 2).unwrap_or(TimeDelta::MAX);
    let beyond = |s: TimeDelta| s.abs() > bound;
    if beyond(skew) {
        let changed = previous.is_none_or(|p| !beyond(p) || (p - skew).abs() > SKEW_RESOLUTION);
        if changed {
            let secs = skew.num_milliseconds() as f64 / 1000.0;
            tracing::warn!(resource = %res.name, skew_seconds = secs, overlap = ?ctx.overlap, "the API's clock is {:.0} s {} ours, beyond half the overlap; the since follows the API's clock", secs.abs(), if secs < 0.0 { "behind" } else { "ahead of" });
        }
    } else if previous.is_some_and(beyond) {
        tracing::info!(resource = %res.name, skew_seconds = skew.num_milliseconds() as f64 / 1000.0, "the API's clock is back within half the overlap of ours");
    }
    Some(skew)
}

/// The ids one pass over a window has served, as 64-bit hashes, to tell whether the window
/// shifted under it (an id served twice, across pages).
struct PassIds<'a> {
    hasher: &'a RandomState,
    /// Every id of the pages before the current one.
    seen: HashSet<u64>,
    /// The current page's ids, in order.
    page: Vec<u64>,
    /// The previous page's ids, in order (an identical page means the page parameter is ignored).
    previous_page: Vec<u64>,
    /// How many records of this pass were served on an earlier page too.
    repeats: u64,
}

impl<'a> PassIds<'a> {
    fn new(hasher: &'a RandomState) -> Self {
        PassIds {
            hasher,
            seen: HashSet::new(),
            page: Vec::new(),
            previous_page: Vec::new(),
            repeats: 0,
        }
    }

    /// Notes one record served on the current page, by its id (or, without one, its content).
    fn note(&mut self, key: &str) {
        let h = self.hasher.hash_one(key);
        if self.seen.contains(&h) {
            self.repeats += 1;
        }
        self.page.push(h);
    }

    fn page_repeats_previous(&self) -> bool {
        !self.page.is_empty() && self.page == self.previous_page
    }

    /// Closes the current page.
    fn end_page(&mut self) {
        self.seen.extend(self.page.iter().copied());
        self.previous_page = std::mem::take(&mut self.page);
    }
}

/// What diffing a batch of records produced, to be committed as one unit.
struct Batch {
    write: PageWrite,
    wakes: Vec<Wake>,
    observed: Vec<PollEvent>,
}

/// Diffs a batch of records of page `page_no` against their snapshots and plans the deliveries
/// of each change, noting every record in `served`. Nothing is written yet.
fn diff_batch(
    ctx: &PollCtx,
    res: &Resource,
    spec: &DiffSpec<'_>,
    page_no: u32,
    records: Vec<serde_json::Value>,
    served: &mut PassIds<'_>,
    report: &mut PollReport,
) -> Result<Batch, PollError> {
    report.records += records.len() as u64;
    metrics::counter!("clinicea_records_fetched_total", "resource" => res.name.clone())
        .increment(records.len() as u64);
    let detected_at = Utc::now();
    let mut batch = Batch {
        write: PageWrite::default(),
        wakes: Vec::new(),
        observed: Vec::new(),
    };
    // Later copies of a record in the same batch compare against the earlier copy: its index
    // in `write.snapshots`.
    let mut pending: HashMap<String, usize> = HashMap::new();
    let mut kinds = [0u64; 3];
    for record in records {
        let id = match diff::record_id(&record, &res.id_field) {
            Ok(id) => id,
            Err(skip) => {
                served.note(&record.to_string());
                report.skipped += 1;
                let reason = match skip {
                    Skip::NoId => "no_id",
                    Skip::NotAnObject => "not_an_object",
                };
                metrics::counter!("clinicea_records_skipped_total", "resource" => res.name.clone(), "reason" => reason).increment(1);
                tracing::error!(resource = %res.name, page = page_no, reason, id_field = %res.id_field, "skipped a record without a usable id");
                continue;
            }
        };
        served.note(&id);
        // The record as it would be stored. Equal bytes mean an equal record: nothing changed,
        // and the stored version need not be decoded (the common case of an overlap re-read).
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        let write = &mut batch.write;
        let previous = match pending.get(&id) {
            Some(&i) if write.snapshots[i].1 == bytes => continue,
            Some(&i) => Some(decode_snapshot(&write.snapshots[i].1)?),
            None => match ctx.store.snapshot_raw(&ctx.source, &res.name, &id)? {
                Some(raw) if raw == bytes.as_slice() => continue,
                Some(raw) => Some(decode_snapshot(&raw)?),
                None => None,
            },
        };
        let Some(change) = diff::diff(spec, id.clone(), previous, record, detected_at) else {
            continue;
        };
        report.changes += 1;
        kinds[change.kind as usize] += 1;
        pending.insert(id.clone(), write.snapshots.len());
        write.snapshots.push((id, bytes));
        plan_change(ctx, &change, write, &mut batch.wakes, report)?;
        if ctx.observer.is_some() {
            batch.observed.push(observe(ctx, &change));
        }
    }
    for kind in [ChangeKind::Added, ChangeKind::Modified, ChangeKind::Deleted] {
        if kinds[kind as usize] > 0 {
            metrics::counter!("clinicea_changes_total", "resource" => res.name.clone(), "change" => kind.as_str()).increment(kinds[kind as usize]);
        }
    }
    Ok(batch)
}

/// Commits a batch atomically, then tells the observer and wakes the delivery workers.
async fn commit_batch(
    ctx: &PollCtx,
    res: &Resource,
    page_no: u32,
    batch: Batch,
) -> Result<(), PollError> {
    ctx.store
        .commit_page(&ctx.source, &res.name, &batch.write)?;
    // The observer hears of a change before the workers are woken to deliver it.
    if let Some(tx) = &ctx.observer {
        for e in batch.observed {
            let _ = tx.send(e);
        }
    }
    if let Some(tx) = &ctx.wake {
        // Nothing is sent before it is on disk: a delivery from a page a crash then loses
        // would be re-detected as another change (another webhook-id) if the record changed
        // in between, and the receiver would get e.g. `added` twice.
        if !batch.wakes.is_empty() {
            ctx.store.flush().await?;
        }
        for w in batch.wakes {
            let _ = tx.send(w);
        }
    }
    tracing::debug!(resource = %res.name, page = page_no, changes = batch.write.changes.len(), "page stored");
    Ok(())
}

/// What an observer is told about `change`.
fn observe(ctx: &PollCtx, change: &Change) -> PollEvent {
    let routes = ctx.pipeline.rules.route(change);
    PollEvent {
        resource: change.resource.clone(),
        kind: change.kind,
        id: change.id.clone(),
        change_id: change.change_id(),
        rules: routes.first().map(|r| r.rules.clone()).unwrap_or_default(),
        destinations: routes.into_iter().map(|r| r.destination).collect(),
    }
}

/// Adds a change's journal entry and its planned deliveries to the page write.
fn plan_change(
    ctx: &PollCtx,
    change: &Change,
    write: &mut PageWrite,
    wakes: &mut Vec<Wake>,
    report: &mut PollReport,
) -> Result<(), PollError> {
    let change_seq = ctx.store.next_id()?;
    write
        .changes
        .push((change_seq, serde_json::to_vec(change).unwrap_or_default()));
    // The change id hashes the whole record: compute it once, not once per delivery.
    let mut webhook_id = None;
    for planned in ctx.pipeline.plan(change) {
        let seq = ctx.store.next_id()?;
        let webhook_id = webhook_id.get_or_insert_with(|| change.change_id());
        match planned.into_entry(seq, change_seq, change, webhook_id) {
            Ok(entry) => {
                wakes.push(Wake {
                    destination: entry.destination.clone(),
                    seq,
                    due_ms: entry.next_attempt_ms,
                });
                write.outbox.push((
                    entry.destination.clone(),
                    seq,
                    serde_json::to_vec(&entry).unwrap_or_default(),
                ));
                report.deliveries += 1;
            }
            Err(dead) => {
                tracing::error!(destination = %dead.entry.destination, resource = %change.resource, id = %change.id, reason = %dead.reason, "a delivery could not be prepared; it went to the dead letters");
                metrics::counter!("clinicea_dead_letters_total", "destination" => dead.entry.destination.clone()).increment(1);
                metrics::counter!("clinicea_deliveries_total", "destination" => dead.entry.destination.clone(), "outcome" => "dead").increment(1);
                write
                    .dead
                    .push((seq, serde_json::to_vec(&dead).unwrap_or_default()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_next_since_is_on_the_apis_clock() {
        let cp = Checkpoint {
            origin: t("2026-12-01T10:00:00Z"),
            last_success_start: None,
            skew_ms: None,
            origin_on_our_clock: true,
        };
        let started = t("2026-12-01T10:00:05Z");
        let next = next_checkpoint(&cp, started, Some(TimeDelta::minutes(-10)));
        assert_eq!(next.last_success_start, Some(t("2026-12-01T09:50:05Z")));
        assert_eq!(
            next.origin,
            t("2026-12-01T09:50:00Z"),
            "start_from: now, on the API's clock"
        );
        assert!(!next.origin_on_our_clock);
        assert_eq!(next.skew_ms, Some(-600_000));
        let overlap = Duration::from_secs(120);
        assert_eq!(
            next.since(overlap),
            t("2026-12-01T09:50:00Z"),
            "never before the origin"
        );
        // A later poll: API time of its start minus the overlap.
        let later = next_checkpoint(
            &next,
            t("2026-12-01T10:05:00Z"),
            Some(TimeDelta::minutes(-10)),
        );
        assert_eq!(later.since(overlap), t("2026-12-01T09:53:00Z"));
        assert_eq!(later.origin, next.origin, "the origin moves once");
    }

    #[test]
    fn an_api_clock_that_goes_back_keeps_the_previous_start() {
        let cp = Checkpoint {
            origin: t("2026-12-01T08:00:00Z"),
            last_success_start: Some(t("2026-12-01T10:10:00Z")),
            skew_ms: Some(600_000),
            origin_on_our_clock: false,
        };
        // Our clock 10:01: the API was 10 min ahead at the last poll (our 10:00), now it is on time.
        let next = next_checkpoint(&cp, t("2026-12-01T10:01:00Z"), Some(TimeDelta::zero()));
        assert_eq!(next.last_success_start, Some(t("2026-12-01T10:00:00Z")));
        // Jitter within the resolution moves nothing back.
        let next = next_checkpoint(
            &cp,
            t("2026-12-01T10:01:00Z"),
            Some(TimeDelta::seconds(598)),
        );
        assert_eq!(next.last_success_start, Some(t("2026-12-01T10:10:58Z")));
    }

    #[test]
    fn without_a_usable_date_the_since_is_ours_widened_and_keeps_a_known_lag() {
        let cp = Checkpoint {
            origin: t("2026-12-01T08:00:00Z"),
            last_success_start: Some(t("2026-12-01T09:50:00Z")),
            skew_ms: Some(-600_000),
            origin_on_our_clock: false,
        };
        let started = t("2026-12-01T10:01:00Z");
        let next = next_checkpoint(&cp, started, None);
        assert_eq!(next.last_success_start, Some(t("2026-12-01T09:51:00Z")));
        assert_eq!(next.skew_ms, None);
        let overlap = Duration::from_secs(120);
        assert_eq!(
            next.since(overlap),
            t("2026-12-01T09:47:00Z"),
            "twice the overlap"
        );
        // An API ahead of us gives no lag: our clock, never a since in our future.
        let ahead = Checkpoint {
            skew_ms: Some(600_000),
            ..cp
        };
        let next = next_checkpoint(&ahead, started, None);
        assert_eq!(next.last_success_start, Some(started));
    }

    #[test]
    fn an_id_served_on_an_earlier_page_counts_and_one_inside_a_page_does_not() {
        let hasher = RandomState::new();
        let mut ids = PassIds::new(&hasher);
        for id in ["a", "b", "b"] {
            ids.note(id);
        }
        ids.end_page();
        assert_eq!(ids.repeats, 0, "a repeat inside one page is not a shift");
        for id in ["c", "a"] {
            ids.note(id);
        }
        assert!(!ids.page_repeats_previous());
        ids.end_page();
        assert_eq!(ids.repeats, 1);
        for id in ["c", "a"] {
            ids.note(id);
        }
        assert!(ids.page_repeats_previous());
    }
}
