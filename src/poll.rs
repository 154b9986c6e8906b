//! One poll of one resource: fetch every page since the checkpoint, diff each record against its
//! snapshot, plan the deliveries of each change, commit each page atomically (a page larger than
//! [`CHUNK_RECORDS`](crate::clinicea::CHUNK_RECORDS) one chunk at a time), and advance the
//! checkpoint only when every page is stored. A resource's first poll runs its silent baseline
//! first (see [`crate::baseline`]).

use crate::clinicea::{ApiError, Client, PageEvent, PageReader};
use crate::config::{Resource, StartFrom};
use crate::deliver::{Pipeline, Wake};
use crate::diff::{self, DiffSpec, Skip};
use crate::model::{Change, ChangeKind};
use crate::store::{decode_snapshot, Baseline, Checkpoint, PageWrite, Store, StoreError};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;

/// A guard against an endpoint that ignores the page parameter and never returns a short page.
pub const MAX_PAGES_PER_POLL: u32 = 100_000;

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
    /// Pages the silent baseline read in this poll (first start only).
    pub baseline_pages: u64,
    /// Records the silent baseline stored in this poll, sending nothing.
    pub baseline_records: u64,
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
    /// The since of the silent baseline at a resource's first start; `None`: no baseline.
    pub baseline: Option<DateTime<Utc>>,
    /// Pause between pages.
    pub page_delay: Duration,
    /// Tells the delivery workers about new outbox entries.
    pub wake: Option<mpsc::UnboundedSender<Wake>>,
    /// Stop between pages when cancelled.
    pub cancel: tokio_util::sync::CancellationToken,
    /// Told about each change once its page is stored (`None`: nobody is watching).
    pub observer: Option<mpsc::UnboundedSender<PollEvent>>,
}

/// Polls one resource once. On success the checkpoint has advanced; on error it has not, and
/// whatever pages were stored stay stored (re-reading them produces nothing).
pub async fn poll_resource(ctx: &PollCtx, res: &Resource) -> Result<PollReport, PollError> {
    let started = Utc::now();
    let mut status = ctx.store.poll_status(&ctx.source, &res.name)?;
    status.last_started = Some(started);
    let result = poll_inner(ctx, res, started).await;
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
) -> Result<PollReport, PollError> {
    let cp = match ctx.store.checkpoint(&ctx.source, &res.name)? {
        Some(cp) => cp,
        None => {
            // Fix the origin durably on the very first poll, so `start_from: now` means the
            // first start, not the first successful poll; the baseline is due from then on.
            let origin = match ctx.start_from {
                StartFrom::Now => started,
                StartFrom::At(t) => t,
            };
            let cp = Checkpoint {
                origin,
                last_success_start: None,
            };
            let baseline = ctx
                .baseline
                .map(|since| Baseline::new(since, res.first_page, started));
            ctx.store
                .set_first_checkpoint(&ctx.source, &res.name, &cp, baseline.as_ref())
                .await?;
            cp
        }
    };
    let mut report = PollReport::default();
    // Until the first poll from the origin succeeds, the records the baseline stored are
    // consulted too (see `crate::baseline` for why they are kept apart until then).
    let mut catch_up = false;
    if cp.last_success_start.is_none() {
        if let Some(b) = ctx.store.baseline(&ctx.source, &res.name)? {
            if b.finished.is_none() {
                crate::baseline::run(ctx, res, b, &mut report).await?;
            }
            catch_up = true;
        }
    }
    let since = cp.since(ctx.overlap);
    let spec = DiffSpec {
        source: &ctx.source,
        resource: &res.name,
        id_field: &res.id_field,
        status_field: &res.status_field,
    };
    let mut walk = PageWalk::new(ctx, res, since, res.first_page);
    while let Some(step) = walk.next().await? {
        // A page requested again after it broke off: what it stored compares equal next time.
        let Step::Records { records, page, .. } = step else {
            continue;
        };
        store_chunk(ctx, res, &spec, records, page, catch_up, &mut report).await?;
    }
    report.pages = walk.pages;
    report.records = walk.records;
    if catch_up {
        let moved = ctx.store.merge_baseline(&ctx.source, &res.name)?;
        tracing::info!(resource = %res.name, records = moved, "baseline merged: from now on every known record is compared with the version the baseline read");
    }
    ctx.store
        .set_checkpoint(
            &ctx.source,
            &res.name,
            &Checkpoint {
                origin: cp.origin,
                last_success_start: Some(started),
            },
        )
        .await?;
    Ok(report)
}

/// Diffs one chunk of a page against the store, plans its changes' deliveries, commits it in one
/// transaction, and only then tells the observer and wakes the workers. `catch_up`: the first
/// poll after the baseline, which also consults the records the baseline stored.
async fn store_chunk(
    ctx: &PollCtx,
    res: &Resource,
    spec: &DiffSpec<'_>,
    records: Vec<Value>,
    page_no: u32,
    catch_up: bool,
    report: &mut PollReport,
) -> Result<(), PollError> {
    metrics::counter!("clinicea_records_fetched_total", "resource" => res.name.clone())
        .increment(records.len() as u64);
    let detected_at = Utc::now();
    let mut write = PageWrite::default();
    // Later copies of a record in the same chunk compare against the earlier copy: its index
    // in `write.snapshots` (an earlier chunk's copy is in the store already).
    let mut pending: HashMap<String, usize> = HashMap::new();
    let mut wakes = Vec::new();
    let mut observed = Vec::new();
    let mut kinds = [0u64; 3];
    for record in records {
        let id = match diff::record_id(&record, &res.id_field) {
            Ok(id) => id,
            Err(skip) => {
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
        // The record as it would be stored. Equal bytes mean an equal record: nothing changed,
        // and the stored version need not be decoded (the common case of an overlap re-read).
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        let previous = match pending.get(&id) {
            Some(&i) if write.snapshots[i].1 == bytes => continue,
            Some(&i) => Some(decode_snapshot(&write.snapshots[i].1)?),
            None => match ctx.store.snapshot_raw(&ctx.source, &res.name, &id)? {
                Some(raw) if raw == bytes.as_slice() => continue,
                Some(raw) => Some(decode_snapshot(&raw)?),
                None if catch_up => {
                    match ctx
                        .store
                        .baseline_snapshot_raw(&ctx.source, &res.name, &id)?
                    {
                        // Served since the origin, so changed after it, yet already so when the
                        // baseline read it: the version before that change was never seen, and
                        // the record is judged as a backfill judges it.
                        // (A deleted record is kept as its tombstone.)
                        Some(raw)
                            if raw == bytes.as_slice()
                                || (diff::is_deleted(&record, &res.status_field)
                                    && raw == diff::tombstone(&res.id_field, &id).as_slice()) =>
                        {
                            None
                        }
                        Some(raw) => Some(decode_snapshot(&raw)?),
                        None => None,
                    }
                }
                None => None,
            },
        };
        let Some(change) = diff::diff(spec, id.clone(), previous, record, detected_at) else {
            continue;
        };
        report.changes += 1;
        kinds[change.kind as usize] += 1;
        pending.insert(id.clone(), write.snapshots.len());
        // A deleted record is kept as a tombstone, not with its contents.
        let stored = if change.kind == ChangeKind::Deleted {
            diff::tombstone(&res.id_field, &id)
        } else {
            bytes
        };
        write.snapshots.push((id, stored));
        plan_change(ctx, &change, &mut write, &mut wakes, report)?;
        if ctx.observer.is_some() {
            observed.push(observe(ctx, &change));
        }
    }
    for kind in [ChangeKind::Added, ChangeKind::Modified, ChangeKind::Deleted] {
        if kinds[kind as usize] > 0 {
            metrics::counter!("clinicea_changes_total", "resource" => res.name.clone(), "change" => kind.as_str()).increment(kinds[kind as usize]);
        }
    }
    ctx.store.commit_page(&ctx.source, &res.name, &write)?;
    // The observer hears of a change before the workers are woken to deliver it.
    if let Some(tx) = &ctx.observer {
        for e in observed {
            let _ = tx.send(e);
        }
    }
    if let Some(tx) = &ctx.wake {
        // Nothing is sent before it is on disk: a delivery from a page a crash then loses
        // would be re-detected as another change (another webhook-id) if the record changed
        // in between, and the receiver would get e.g. `added` twice.
        if !wakes.is_empty() {
            ctx.store.flush().await?;
        }
        for w in wakes {
            let _ = tx.send(w);
        }
    }
    tracing::debug!(resource = %res.name, page = page_no, changes = write.changes.len(), "chunk stored");
    Ok(())
}

/// What [`PageWalk::next`] hands over.
pub(crate) enum Step {
    /// The next records of page `page`; `page_end` on its last chunk.
    Records {
        /// The records, as sent.
        records: Vec<Value>,
        /// Their page number.
        page: u32,
        /// Whether the page ends with them.
        page_end: bool,
    },
    /// The page broke off and is being read again from its start: its records come again.
    Restart,
}

/// The ids of one page, as far as read: their count and a hash of them in order, so that a page
/// repeating the previous one is recognised without keeping either page.
#[derive(Default)]
struct PageIds {
    count: u64,
    hash: std::hash::DefaultHasher,
}

/// The pages of one window (one `since`), walked in bounded chunks. It starts the next page's
/// request while the last chunk of a full page is stored (a full page is always followed by
/// another request, so requests per poll do not change; none when `page_delay` is set), refuses a
/// page that repeats the previous one, and stops at the first short page.
///
/// An endpoint that ignores the page parameter serves everything as page after page of the same
/// records: when such a page holds more records than `page_size`, it was the whole window, and
/// the walk ends after its first repeat (not stored again); a repeated page of at most
/// `page_size` records is the error it always was, since it may be one page of many.
pub(crate) struct PageWalk<'a> {
    ctx: &'a PollCtx,
    res: &'a Resource,
    since: DateTime<Utc>,
    page_no: u32,
    reader: Option<PageReader>,
    prefetched: Option<PageReader>,
    /// Pages requested.
    pub pages: u32,
    /// Records read (a page read again after it broke off counts once).
    pub records: u64,
    page_records: u64,
    ids: PageIds,
    /// The previous page's id count and hash, and its record count.
    previous: Option<(u64, u64, u64)>,
    done: bool,
}

impl<'a> PageWalk<'a> {
    /// A walk from page `first` of the window since `since`.
    pub(crate) fn new(
        ctx: &'a PollCtx,
        res: &'a Resource,
        since: DateTime<Utc>,
        first: u32,
    ) -> PageWalk<'a> {
        PageWalk {
            ctx,
            res,
            since,
            page_no: first,
            reader: None,
            prefetched: None,
            pages: 0,
            records: 0,
            page_records: 0,
            ids: PageIds::default(),
            previous: None,
            done: false,
        }
    }

    /// The next chunk; `None` once the window is read.
    pub(crate) async fn next(&mut self) -> Result<Option<Step>, PollError> {
        if self.done {
            return Ok(None);
        }
        let page = self.page_no;
        if self.reader.is_none() {
            if self.ctx.cancel.is_cancelled() {
                return Err(PollError::Cancelled(self.res.name.clone()));
            }
            if self.pages > 0 && !self.ctx.page_delay.is_zero() {
                tokio::time::sleep(self.ctx.page_delay).await;
            }
            self.pages += 1;
            let reader = match self.prefetched.take() {
                Some(r) => r,
                None => self.ctx.client.read_page(self.res, self.since, page),
            };
            self.reader = Some(reader);
        }
        let Some(reader) = self.reader.as_mut() else {
            return Ok(None);
        };
        let chunk = match reader.next().await? {
            PageEvent::Restart => {
                self.records -= self.page_records;
                self.page_records = 0;
                self.ids = PageIds::default();
                return Ok(Some(Step::Restart));
            }
            PageEvent::Chunk(c) => c,
        };
        let n = chunk.records.len() as u64;
        self.page_records += n;
        self.records += n;
        for r in &chunk.records {
            if let Ok(id) = diff::record_id(r, &self.res.id_field) {
                self.ids.count += 1;
                id.hash(&mut self.ids.hash);
            }
        }
        let Some(end) = chunk.end else {
            return Ok(Some(Step::Records {
                records: chunk.records,
                page,
                page_end: false,
            }));
        };
        self.reader = None;
        let ids = std::mem::take(&mut self.ids);
        let this = (ids.count, ids.hash.finish(), end.records);
        let page_records = std::mem::take(&mut self.page_records);
        if let Some(prev) = self.previous {
            if this.0 > 0 && (this.0, this.1) == (prev.0, prev.1) {
                if prev.2 > u64::from(self.res.page_size) {
                    tracing::warn!(resource = %self.res.name, page, records = prev.2, page_size = self.res.page_size, param = %self.res.page_param, "the endpoint ignores the page parameter: the page repeats the previous one, which held every record; taking that as the whole window");
                    self.records -= page_records;
                    self.done = true;
                    return Ok(None);
                }
                return Err(ApiError::PageRepeats {
                    resource: self.res.name.clone(),
                    page,
                    param: self.res.page_param.clone(),
                }
                .into());
            }
        }
        self.previous = Some(this);
        if end.last || self.pages >= MAX_PAGES_PER_POLL {
            self.done = true;
        } else {
            self.page_no += 1;
            if self.ctx.page_delay.is_zero() {
                self.prefetched = Some(self.ctx.client.read_page(
                    self.res,
                    self.since,
                    self.page_no,
                ));
            }
        }
        Ok(Some(Step::Records {
            records: chunk.records,
            page,
            page_end: true,
        }))
    }
}

/// What an observer is told about `change`.
fn observe(ctx: &PollCtx, change: &Change) -> PollEvent {
    let routes = ctx.pipeline.rules.route(change);
    PollEvent {
        resource: change.resource.clone(),
        kind: change.kind,
        id: change.id.clone(),
        change_id: change.change_id(ctx.store.id_key()),
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
    for planned in ctx.pipeline.plan(change, ctx.store.id_key()) {
        let seq = ctx.store.next_id()?;
        let webhook_id = webhook_id.get_or_insert_with(|| change.change_id(ctx.store.id_key()));
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
