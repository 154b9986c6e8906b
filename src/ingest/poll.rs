//! One poll of one resource: fetch every page since the checkpoint, diff each record against its
//! snapshot, hand each page to the [`Intake`] (which routes its changes and commits it
//! atomically; a page larger than [`CHUNK_RECORDS`](crate::ingest::client::CHUNK_RECORDS) one
//! chunk at a time), and advance the checkpoint only when a pass over the window read every
//! record in it. A resource's first poll runs its silent baseline first (see
//! [`crate::ingest::baseline`]).
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

use crate::config::{Resource, StartFrom};
use crate::ingest::client::PageEnd;
use crate::ingest::ctx::{PollCtx, PollError};
use crate::ingest::diff::{self, DiffSpec, Skip};
use crate::ingest::intake::{DiffedChunk, Intake};
use crate::ingest::state::{Baseline, Checkpoint, PollStatus};
use crate::ingest::walk::{PageWalk, Step};
use crate::model::ChangeKind;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

/// The most passes one poll makes over a window that shifts while it is paged (see the module
/// docs); after that the checkpoint stays and the next poll reads the window again.
pub const MAX_PASSES: u32 = 3;
/// A `Date` further than this from our clock is not believed: the since falls back to our clock.
pub(crate) const MAX_PLAUSIBLE_SKEW: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// Two skew readings closer than this are the same skew (the `Date` header has one-second
/// resolution, plus the round trip): a warning is logged again only past it.
pub(crate) const SKEW_RESOLUTION: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

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
    /// Pages the silent baseline read in this poll (first start only).
    pub(crate) baseline_pages: u64,
    /// Records the silent baseline stored in this poll, sending nothing.
    pub baseline_records: u64,
    /// Passes over the window (more than one when it shifted while it was paged).
    pub passes: u32,
    /// Whether a pass read the window without any record served twice (then the checkpoint
    /// advanced); false when every pass saw the window shift.
    pub settled: bool,
}

/// Polls one resource once. On success the checkpoint has advanced if a pass came out clean
/// ([`PollReport::settled`]); on error it has not, and whatever pages were stored stay stored
/// (re-reading them produces nothing).
pub async fn poll_resource<I: Intake>(
    ctx: &PollCtx<I>,
    res: &Resource,
) -> Result<PollReport, PollError<I::Error>> {
    let started = Utc::now();
    let mut status = ctx
        .intake
        .poll_status(&ctx.clinic, &res.name)
        .await
        .map_err(PollError::Store)?;
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
            metrics::counter!(crate::telemetry::metric::POLLS, "clinic" => ctx.clinic.clone(), "resource" => res.name.clone()).increment(1);
            metrics::gauge!(crate::telemetry::metric::LAST_SUCCESS_TIMESTAMP, "clinic" => ctx.clinic.clone(), "resource" => res.name.clone())
                .set(finished.timestamp() as f64);
        }
        Err(e) => {
            status.last_error = Some(e.to_string());
            status.consecutive_failures += 1;
            metrics::counter!(crate::telemetry::metric::POLLS, "clinic" => ctx.clinic.clone(), "resource" => res.name.clone()).increment(1);
            metrics::counter!(crate::telemetry::metric::POLL_FAILURES, "clinic" => ctx.clinic.clone(), "resource" => res.name.clone())
                .increment(1);
        }
    }
    ctx.intake
        .set_poll_status(&ctx.clinic, &res.name, &status)
        .await
        .map_err(PollError::Store)?;
    result
}

async fn poll_inner<I: Intake>(
    ctx: &PollCtx<I>,
    res: &Resource,
    started: DateTime<Utc>,
    status: &mut PollStatus,
) -> Result<PollReport, PollError<I::Error>> {
    let stored = ctx
        .intake
        .checkpoint(&ctx.clinic, &res.name)
        .await
        .map_err(PollError::Store)?;
    let cp = match stored {
        Some(cp) => cp,
        None => {
            // Fix the origin durably on the very first poll, so `start_from: now` means the
            // first start, not the first successful poll; the baseline is due from then on.
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
            let baseline = ctx
                .baseline
                .map(|since| Baseline::new(since, res.first_page, started));
            ctx.intake
                .set_first_checkpoint(&ctx.clinic, &res.name, &cp, baseline.as_ref())
                .await
                .map_err(PollError::Store)?;
            cp
        }
    };
    let mut report = PollReport::default();
    // Until the first poll from the origin succeeds, the records the baseline stored are
    // consulted too (see `crate::ingest::baseline` for why they are kept apart until then).
    let mut catch_up = false;
    if cp.last_success_start.is_none() {
        let stored = ctx
            .intake
            .baseline(&ctx.clinic, &res.name)
            .await
            .map_err(PollError::Store)?;
        if let Some(b) = stored {
            if b.finished.is_none() {
                let read = crate::ingest::baseline::run(ctx, res, b).await?;
                report.baseline_pages += read.pages;
                report.baseline_records += read.records;
            }
            catch_up = true;
        }
    }
    let since = cp.since(ctx.overlap);
    // The API's clock minus ours, from the poll's first response (`None`: no usable `Date`).
    let mut skew: Option<Option<TimeDelta>> = None;
    let mut chain = Chain::new();
    let read = read_passes(
        ctx,
        res,
        since,
        catch_up,
        status,
        &mut skew,
        &mut report,
        &mut chain,
    )
    .await;
    // Whatever was read before a failure is stored, as each chunk would have been on its own.
    let drained = chain.finish(ctx, res, &mut report).await;
    read?;
    drained?;
    if !report.settled {
        metrics::counter!(crate::telemetry::metric::POLLS_UNSETTLED, "clinic" => ctx.clinic.clone(), "resource" => res.name.clone())
            .increment(1);
        tracing::warn!(resource = %res.name, passes = report.passes, "the window kept shifting while it was paged (records served twice in every pass); the checkpoint stays and the next poll reads the window again");
        return Ok(report);
    }
    if catch_up {
        let moved = ctx
            .intake
            .merge_baseline(&ctx.clinic, &res.name)
            .await
            .map_err(PollError::Store)?;
        tracing::info!(resource = %res.name, records = moved, "baseline merged: from now on every known record is compared with the version the baseline read");
    }
    let next = next_checkpoint(&cp, started, skew.flatten());
    ctx.intake
        .set_checkpoint(&ctx.clinic, &res.name, &next)
        .await
        .map_err(PollError::Store)?;
    Ok(report)
}

/// Reads the window from `since`, pass after pass, until a pass comes out clean or
/// [`MAX_PASSES`] were made (see the module docs); each pass's chunks are committed by its end.
#[allow(clippy::too_many_arguments)]
async fn read_passes<I: Intake>(
    ctx: &PollCtx<I>,
    res: &Resource,
    since: DateTime<Utc>,
    catch_up: bool,
    status: &mut PollStatus,
    skew: &mut Option<Option<TimeDelta>>,
    report: &mut PollReport,
    chain: &mut Chain<I>,
) -> Result<(), PollError<I::Error>> {
    let hasher = RandomState::new();
    while report.passes < MAX_PASSES && !report.settled {
        report.passes += 1;
        let mut served = PassIds::new(&hasher);
        let mut walk = PageWalk::new(ctx, res, since, res.first_page);
        while let Some(step) = walk.next().await? {
            // A page requested again after it broke off: its records come again, and what it
            // stored compares equal.
            let Step::Records(chunk) = step else {
                served.discard_page();
                continue;
            };
            if skew.is_none() {
                if let Some(end) = &walk.first_end {
                    *skew = Some(read_clock(ctx, res, end, status));
                }
            }
            let page_end = chunk.page_end;
            store_chunk(
                ctx,
                res,
                chunk.records,
                chunk.page,
                catch_up,
                &mut served,
                report,
                chain,
            )
            .await?;
            if page_end {
                served.end_page();
            }
        }
        if walk.ended_on_repeat {
            // The endpoint ignores the page parameter: its repeat of the whole window is not a
            // shift (and was not stored again past its first chunks, which compared equal).
            served.discard_page();
        }
        chain.finish(ctx, res, report).await?;
        report.pages += walk.pages;
        report.records += walk.records;
        if served.repeats == 0 {
            report.settled = true;
        } else {
            metrics::counter!(crate::telemetry::metric::WINDOW_SHIFTS, "clinic" => ctx.clinic.clone(), "resource" => res.name.clone())
                .increment(1);
            tracing::info!(resource = %res.name, pass = report.passes, records_served_twice = served.repeats, "the window shifted while it was paged; reading it again");
        }
    }
    Ok(())
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
fn read_clock<I>(
    ctx: &PollCtx<I>,
    res: &Resource,
    end: &PageEnd,
    status: &mut PollStatus,
) -> Option<TimeDelta> {
    let skew = end
        .date
        .map(|date| date - end.received)
        .filter(|skew| skew.abs() <= MAX_PLAUSIBLE_SKEW);
    let previous = status.clock_skew_ms.map(TimeDelta::milliseconds);
    let was_unusable = status.api_date_unusable;
    status.clock_skew_ms = skew.map(|s| s.num_milliseconds());
    status.api_date_unusable = skew.is_none();
    let Some(skew) = skew else {
        if !was_unusable {
            let reason = if end.date.is_some() {
                "absurd"
            } else {
                "missing or unparseable"
            };
            tracing::warn!(resource = %res.name, reason, "the API's Date header is {reason}; the since falls back to our clock with twice the overlap");
        }
        return None;
    };
    metrics::gauge!(crate::telemetry::metric::API_CLOCK_SKEW, "clinic" => ctx.clinic.clone(), "resource" => res.name.clone())
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
    /// The current page's ids, as far as read.
    page: Vec<u64>,
    /// How many records of this pass were served on an earlier page too.
    repeats: u64,
    /// How many of those are on the current page.
    page_repeats: u64,
}

impl<'a> PassIds<'a> {
    fn new(hasher: &'a RandomState) -> Self {
        PassIds {
            hasher,
            seen: HashSet::new(),
            page: Vec::new(),
            repeats: 0,
            page_repeats: 0,
        }
    }

    /// Notes one record served on the current page, by its id (or, without one, its content).
    fn note(&mut self, key: &str) {
        let h = self.hasher.hash_one(key);
        if self.seen.contains(&h) {
            self.repeats += 1;
            self.page_repeats += 1;
        }
        self.page.push(h);
    }

    /// Forgets what the current page noted: it is being read again from its start, or it was no
    /// page of its own.
    fn discard_page(&mut self) {
        self.repeats -= self.page_repeats;
        self.page_repeats = 0;
        self.page.clear();
    }

    /// Closes the current page.
    fn end_page(&mut self) {
        self.seen.extend(self.page.drain(..));
        self.page_repeats = 0;
    }
}

/// A poll's chunks between the page reader and the store: while one chunk is committed (on the
/// poll's own task, so a poll dropped by shutdown never leaves a commit running behind it), the
/// next is diffed and planned on a task of its own, on the other core. Chunks are committed in
/// the order read; the next chunk is diffed against the stored snapshots overlaid with the
/// snapshots of the chunk not yet committed, so it sees exactly what a strictly sequential poll
/// would.
struct Chain<I: Intake> {
    /// The chunk being diffed and planned.
    next: Option<DiffTask<I>>,
}

/// The task diffing and planning one chunk.
type DiffTask<I> = tokio::task::JoinHandle<
    Result<Diffed<<I as Intake>::Planned>, PollError<<I as Intake>::Error>>,
>;

/// New snapshot versions by record id.
type Overlay = HashMap<String, Vec<u8>>;

impl<I: Intake> Chain<I> {
    fn new() -> Self {
        Chain { next: None }
    }

    /// Waits for the chunk being diffed, if any.
    async fn take(&mut self) -> Result<Option<Diffed<I::Planned>>, PollError<I::Error>> {
        let Some(handle) = self.next.take() else {
            return Ok(None);
        };
        match handle.await {
            Ok(diffed) => diffed.map(Some),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime shutting down cancels a spawned task.
            Err(_) => Err(PollError::Cancelled("runtime shutting down".into())),
        }
    }

    /// Commits the chunk being diffed, once it is planned: the end of a pass, or of a poll that
    /// failed while reading (the chunks read before the failure are stored, as without a chain).
    async fn finish(
        &mut self,
        ctx: &PollCtx<I>,
        res: &Resource,
        report: &mut PollReport,
    ) -> Result<(), PollError<I::Error>> {
        if let Some(diffed) = self.take().await? {
            commit(ctx, res, diffed, report).await?;
        }
        Ok(())
    }
}

/// One chunk diffed and planned, ready to commit.
struct Diffed<P> {
    planned: P,
    /// The new snapshot versions it writes, by id: what the next chunk compares against while
    /// this one is not committed yet.
    overlay: Overlay,
    /// Changes detected, by [`ChangeKind`].
    kinds: [u64; 3],
    page: u32,
}

/// Commits a diffed chunk and counts it.
async fn commit<I: Intake>(
    ctx: &PollCtx<I>,
    res: &Resource,
    diffed: Diffed<I::Planned>,
    report: &mut PollReport,
) -> Result<(), PollError<I::Error>> {
    report.deliveries += ctx
        .intake
        .commit_planned(&ctx.clinic, &res.name, diffed.planned)
        .await
        .map_err(PollError::Store)?;
    // Counted once committed: a plan dropped with its poll detected nothing for good.
    for kind in [ChangeKind::Added, ChangeKind::Modified, ChangeKind::Deleted] {
        if diffed.kinds[kind as usize] > 0 {
            metrics::counter!(crate::telemetry::metric::CHANGES, "clinic" => ctx.clinic.clone(), "resource" => res.name.clone(), "change" => kind.as_str()).increment(diffed.kinds[kind as usize]);
        }
    }
    let changes: u64 = diffed.kinds.iter().sum();
    report.changes += changes;
    tracing::debug!(resource = %res.name, page = diffed.page, changes, "chunk stored");
    Ok(())
}

/// What one chunk's diff needs, moved to the task that diffs it.
struct ChunkInput {
    clinic: String,
    resource: String,
    id_field: String,
    status_field: String,
    /// The records with an id, in the order read.
    keyed: Vec<(String, Value)>,
    /// Their stored versions (those stored).
    stored: HashMap<String, Vec<u8>>,
    /// The chunk before, not committed yet: its new versions win over `stored`.
    overlay: Overlay,
    /// `catch_up`: the versions the baseline read, of records neither stored nor in `overlay`.
    baseline_read: HashMap<String, Vec<u8>>,
    catch_up: bool,
    detected_at: DateTime<Utc>,
    page: u32,
}

/// Takes one chunk of a page: notes its ids, and starts reading their stored versions, diffing
/// and planning it on a task of its own; meanwhile the chunk before it (if any) is committed here.
/// `catch_up`: the first poll after the baseline, which also consults the records the baseline
/// stored.
#[allow(clippy::too_many_arguments)]
async fn store_chunk<I: Intake>(
    ctx: &PollCtx<I>,
    res: &Resource,
    records: Vec<Value>,
    page_no: u32,
    catch_up: bool,
    served: &mut PassIds<'_>,
    report: &mut PollReport,
    chain: &mut Chain<I>,
) -> Result<(), PollError<I::Error>> {
    metrics::counter!(crate::telemetry::metric::RECORDS_FETCHED, "clinic" => ctx.clinic.clone(), "resource" => res.name.clone())
        .increment(records.len() as u64);
    let detected_at = Utc::now();
    // Every record's id first, then one read of the stored versions of them all.
    let mut keyed: Vec<(String, Value)> = Vec::with_capacity(records.len());
    for record in records {
        match diff::record_id(&record, &res.id_field) {
            Ok(id) => {
                served.note(&id);
                keyed.push((id, record));
            }
            Err(skip) => {
                served.note(&record.to_string());
                report.skipped += 1;
                let reason = match skip {
                    Skip::NoId => "no_id",
                    Skip::NotAnObject => "not_an_object",
                };
                metrics::counter!(crate::telemetry::metric::RECORDS_SKIPPED, "clinic" => ctx.clinic.clone(), "resource" => res.name.clone(), "reason" => reason).increment(1);
                tracing::error!(resource = %res.name, page = page_no, reason, id_field = %res.id_field, "skipped a record without a usable id");
            }
        }
    }
    let mut previous = chain.take().await?;
    let overlay = previous
        .as_mut()
        .map(|p| std::mem::take(&mut p.overlay))
        .unwrap_or_default();
    let input = ChunkInput {
        clinic: ctx.clinic.clone(),
        resource: res.name.clone(),
        id_field: res.id_field.clone(),
        status_field: res.status_field.clone(),
        keyed,
        stored: HashMap::new(),
        overlay,
        baseline_read: HashMap::new(),
        catch_up,
        detected_at,
        page: page_no,
    };
    let intake = ctx.intake.clone();
    // The stored versions are read on the chunk's own task too, while the chunk before is
    // committed: a record of both is taken from the overlay, and the commit writes no other.
    let next = tokio::spawn(crate::runtime::hold_thread_async(async move {
        let mut input = input;
        read_stored(&intake, &mut input).await?;
        let (chunk, kinds, overlay) = diff_chunk(&mut input)?;
        let planned = intake
            .plan_chunk(&input.clinic, &input.resource, chunk)
            .await
            .map_err(PollError::Store)?;
        Ok(Diffed {
            planned,
            overlay,
            kinds,
            page: input.page,
        })
    }));
    // A failed commit drops the chunk after it (its task ends by itself, having written
    // nothing): what is committed stays a prefix of what was read.
    if let Some(previous) = previous {
        commit(ctx, res, previous, report).await?;
    }
    chain.next = Some(next);
    Ok(())
}

/// Reads the stored versions of a chunk's records (and, catching up, the versions the baseline
/// read of those neither stored nor in the overlay), in one read each.
async fn read_stored<I: Intake>(
    intake: &I,
    input: &mut ChunkInput,
) -> Result<(), PollError<I::Error>> {
    let ids: Vec<&str> = input.keyed.iter().map(|(id, _)| id.as_str()).collect();
    let stored = intake
        .snapshots(&input.clinic, &input.resource, &ids)
        .await
        .map_err(PollError::Store)?;
    if input.catch_up {
        let unseen: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !stored.contains_key(*id) && !input.overlay.contains_key(*id))
            .collect();
        input.baseline_read = intake
            .baseline_snapshots(&input.clinic, &input.resource, &unseen)
            .await
            .map_err(PollError::Store)?;
    }
    drop(ids);
    input.stored = stored;
    Ok(())
}

/// Diffs one chunk against its stored versions (the chunk before it overlaid): the snapshots to
/// write and the changes, the count of each kind, and the new versions by id.
fn diff_chunk<E>(input: &mut ChunkInput) -> Result<(DiffedChunk, [u64; 3], Overlay), PollError<E>> {
    let spec = DiffSpec {
        clinic: &input.clinic,
        resource: &input.resource,
        id_field: &input.id_field,
        status_field: &input.status_field,
    };
    let mut chunk = DiffedChunk::default();
    // Later copies of a record in the same chunk compare against the earlier copy: its index
    // in `chunk.snapshots`.
    let mut pending: HashMap<String, usize> = HashMap::new();
    let mut kinds = [0u64; 3];
    for (id, record) in std::mem::take(&mut input.keyed) {
        // The record as it would be stored. Equal bytes mean an equal record: nothing changed,
        // and the stored version need not be decoded (the common case of an overlap re-read).
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        let stored = input.overlay.get(&id).or_else(|| input.stored.get(&id));
        let previous = match pending.get(&id) {
            Some(&i) if chunk.snapshots[i].1 == bytes => continue,
            Some(&i) => Some(decode_snapshot(&chunk.snapshots[i].1)?),
            None => match stored {
                Some(raw) if raw.as_slice() == bytes.as_slice() => continue,
                Some(raw) => Some(decode_snapshot(raw)?),
                None if input.catch_up => {
                    match input.baseline_read.get(&id) {
                        // Served since the origin, so changed after it, yet already so when the
                        // baseline read it: the version before that change was never seen, and
                        // the record is judged as a backfill judges it.
                        // (A deleted record is kept as its tombstone.)
                        Some(raw)
                            if raw.as_slice() == bytes.as_slice()
                                || (diff::is_deleted(&record, spec.status_field)
                                    && raw.as_slice()
                                        == diff::tombstone(spec.id_field, &id).as_slice()) =>
                        {
                            None
                        }
                        Some(raw) => Some(decode_snapshot(raw)?),
                        None => None,
                    }
                }
                None => None,
            },
        };
        let Some(change) = diff::diff(&spec, id.clone(), previous, record, input.detected_at)
        else {
            continue;
        };
        kinds[change.kind as usize] += 1;
        pending.insert(id.clone(), chunk.snapshots.len());
        // A deleted record is kept as a tombstone, not with its contents.
        let kept = if change.kind == ChangeKind::Deleted {
            diff::tombstone(spec.id_field, &id)
        } else {
            bytes
        };
        chunk.snapshots.push((id, kept));
        chunk.changes.push(change);
    }
    let overlay = chunk.snapshots.iter().cloned().collect();
    Ok((chunk, kinds, overlay))
}

/// Decodes a stored snapshot: the JSON a poll (or the baseline) stored.
fn decode_snapshot<E>(bytes: &[u8]) -> Result<Value, PollError<E>> {
    serde_json::from_slice(bytes).map_err(PollError::Snapshot)
}
