//! One poll of one resource: fetch every page since the checkpoint, diff each record against its
//! snapshot, plan the deliveries of each change, commit each page atomically, and advance the
//! checkpoint only when every page is stored.

use crate::clinicea::{ApiError, Client, Page};
use crate::config::{Resource, StartFrom};
use crate::deliver::{Pipeline, Wake};
use crate::diff::{self, DiffSpec, Skip};
use crate::model::{Change, ChangeKind};
use crate::store::{decode_snapshot, Checkpoint, PageWrite, Store, StoreError};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

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
            // first start, not the first successful poll.
            let origin = match ctx.start_from {
                StartFrom::Now => started,
                StartFrom::At(t) => t,
            };
            let cp = Checkpoint {
                origin,
                last_success_start: None,
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
    let mut page_no = res.first_page;
    let mut previous_ids: Option<Vec<String>> = None;
    // The next page's request, started while this page is diffed and stored (only after a full
    // page, which is always followed by another request; aborted if the poll stops early).
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
        report.pages += 1;
        if !page.last && report.pages < MAX_PAGES_PER_POLL && ctx.page_delay.is_zero() {
            let (client, res, next) = (ctx.client.clone(), res.clone(), page_no + 1);
            let fetch = async move { client.fetch_page(&res, since, next).await };
            prefetched = Some(AbortOnDropHandle::new(tokio::spawn(
                fetch.instrument(tracing::Span::current()),
            )));
        }
        report.records += page.records.len() as u64;
        metrics::counter!("clinicea_records_fetched_total", "resource" => res.name.clone())
            .increment(page.records.len() as u64);

        let detected_at = Utc::now();
        let mut write = PageWrite::default();
        // Later copies of a record in the same page compare against the earlier copy: its index
        // in `write.snapshots`.
        let mut pending: HashMap<String, usize> = HashMap::new();
        let mut ids = Vec::with_capacity(page.records.len());
        let mut wakes = Vec::new();
        let mut observed = Vec::new();
        let mut kinds = [0u64; 3];
        for record in page.records {
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
            ids.push(id.clone());
            // The record as it would be stored. Equal bytes mean an equal record: nothing changed,
            // and the stored version need not be decoded (the common case of an overlap re-read).
            let bytes = serde_json::to_vec(&record).unwrap_or_default();
            let previous = match pending.get(&id) {
                Some(&i) if write.snapshots[i].1 == bytes => continue,
                Some(&i) => Some(decode_snapshot(&write.snapshots[i].1)?),
                None => match ctx.store.snapshot_raw(&ctx.source, &res.name, &id)? {
                    Some(raw) if raw == bytes.as_slice() => continue,
                    Some(raw) => Some(decode_snapshot(&raw)?),
                    None => None,
                },
            };
            let Some(change) = diff::diff(&spec, id.clone(), previous, record, detected_at) else {
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
            plan_change(ctx, &change, &mut write, &mut wakes, &mut report)?;
            if ctx.observer.is_some() {
                observed.push(observe(ctx, &change));
            }
        }
        for kind in [ChangeKind::Added, ChangeKind::Modified, ChangeKind::Deleted] {
            if kinds[kind as usize] > 0 {
                metrics::counter!("clinicea_changes_total", "resource" => res.name.clone(), "change" => kind.as_str()).increment(kinds[kind as usize]);
            }
        }
        if let Some(prev) = &previous_ids {
            if !ids.is_empty() && *prev == ids {
                return Err(ApiError::PageRepeats {
                    resource: res.name.clone(),
                    page: page_no,
                    param: res.page_param.clone(),
                }
                .into());
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
        tracing::debug!(resource = %res.name, page = page_no, changes = write.changes.len(), "page stored");
        if page.last || report.pages >= MAX_PAGES_PER_POLL {
            break;
        }
        previous_ids = Some(ids);
        page_no += 1;
        if !ctx.page_delay.is_zero() {
            tokio::time::sleep(ctx.page_delay).await;
        }
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
