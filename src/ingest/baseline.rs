//! The silent baseline: at a resource's first start, every record the API still serves is read
//! once, from the oldest since (`clinicea.baseline.since`), and stored without sending anything,
//! so that a record that existed before the notifier did is known: its first edit is `modified`,
//! with its real `previous` and `changed_fields`, never `added`.
//!
//! It costs one request per page, once: `N / page_size` (rounded up, plus the closing empty page)
//! for a resource of `N` records. It runs inside the resource's first poll, page by page, one
//! transaction per chunk; its progress ([`Baseline`]) is stored with each page's last chunk, so a
//! baseline stopped by a crash or a shutdown resumes at the page it reached (the page it was in is
//! read again, which only overwrites what it stored).
//!
//! # Why no change is lost, and none made up
//!
//! The origin (`start_from`) is fixed durably before the baseline reads anything, and the first
//! normal poll after it asks from that origin, as without a baseline: every record changed since
//! the origin is served again then, those changed *during* the baseline included. The baseline's
//! records are kept apart from the snapshots (tree `baseline_snapshots`) until that first poll from
//! the origin has succeeded, and that poll compares what it is served with them:
//!
//! * a different version: the record changed after the baseline read it; it is `modified`, with
//!   the baseline's version as `previous` (a record the baseline reads twice, because its change
//!   moved it to a later page, keeps the version read first);
//! * the same version: the record was served since the origin, so it changed after the origin,
//!   but before the baseline read it; the version before that change was never seen, and the
//!   record is judged as a backfill judges it (`added`, or `deleted` when flagged so). With
//!   `start_from: RFC3339` in the past this is every record changed since then, exactly as
//!   without a baseline; with `start_from: now` it is only records changed while the baseline ran;
//! * not read by the baseline at all (created after its page was read): `added`.
//!
//! Once that poll succeeded, the baseline's remaining records (those unchanged since the origin)
//! are merged into the snapshots, and from then on every poll is a normal one.
//!
//! A store that has a checkpoint (from before baselines existed, or with the baseline turned off)
//! never runs one.

use crate::config::Resource;
use crate::ingest::client::CHUNK_RECORDS;
use crate::ingest::ctx::{PollCtx, PollError};
use crate::ingest::diff;
use crate::ingest::intake::Intake;
use crate::ingest::state::Baseline;
use crate::ingest::walk::{PageWalk, Step};
use chrono::Utc;

/// The baseline logs its progress every this many pages.
pub(crate) const BASELINE_LOG_EVERY_PAGES: u64 = 50;

/// What one run of the baseline read (a resumed baseline counts only what it read this time).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Read {
    /// Pages stored.
    pub(crate) pages: u64,
    /// Records stored, sending nothing.
    pub(crate) records: u64,
}

/// Runs (or resumes) a resource's baseline to its end, and marks it finished.
pub(crate) async fn run<I: Intake>(
    ctx: &PollCtx<I>,
    res: &Resource,
    mut b: Baseline,
) -> Result<Read, PollError<I::Error>> {
    let (clinic, name) = (ctx.clinic.as_str(), res.name.as_str());
    let mut read = Read::default();
    if ctx.baseline.is_none() {
        // Turned off part-way: what it read is kept, the rest is not read.
        tracing::info!(resource = %name, pages = b.pages, records = b.records, "baseline turned off part-way; keeping the records it read");
        finish(ctx, res, b).await?;
        return Ok(read);
    }
    if b.pages == 0 {
        tracing::info!(resource = %name, since = %b.since.to_rfc3339(), "baseline: reading every existing record once; nothing is sent");
    } else {
        tracing::info!(resource = %name, page = b.next_page, pages = b.pages, records = b.records, "baseline: resuming");
    }
    let before = b.records;
    let mut walk = PageWalk::new(ctx, res, b.since, b.next_page);
    // Records of the current page stored so far (a page read again counts once).
    let mut in_page = 0u64;
    let mut snaps = Vec::with_capacity(CHUNK_RECORDS);
    while let Some(step) = walk.next().await? {
        let Step::Records(chunk) = step else {
            in_page = 0;
            continue;
        };
        snaps.clear();
        for record in &chunk.records {
            // Records without an id are skipped (and reported) by the normal polls.
            if let Ok(id) = diff::record_id(record, &res.id_field) {
                // A deleted record is kept as a tombstone, as the normal polls keep it.
                let bytes = if diff::is_deleted(record, &res.status_field) {
                    diff::tombstone(&res.id_field, &id)
                } else {
                    serde_json::to_vec(record).unwrap_or_default()
                };
                snaps.push((id, bytes));
            }
        }
        in_page += snaps.len() as u64;
        if chunk.page_end {
            b.next_page = chunk.page.saturating_add(1);
            b.pages += 1;
            b.records += std::mem::take(&mut in_page);
            read.pages += 1;
        }
        ctx.intake
            .commit_baseline_chunk(clinic, name, &snaps, chunk.page_end.then_some(&b))
            .await
            .map_err(PollError::Store)?;
        if chunk.page_end {
            metrics::gauge!(crate::telemetry::metric::BASELINE_RECORDS, "clinic" => ctx.clinic.clone(), "resource" => res.name.clone())
                .set(b.records as f64);
            if b.pages.is_multiple_of(BASELINE_LOG_EVERY_PAGES) {
                tracing::info!(resource = %name, pages = b.pages, records = b.records, "baseline: in progress");
            }
        }
    }
    read.records = b.records - before;
    finish(ctx, res, b).await?;
    Ok(read)
}

/// Marks a baseline finished, durably.
async fn finish<I: Intake>(
    ctx: &PollCtx<I>,
    res: &Resource,
    mut b: Baseline,
) -> Result<(), PollError<I::Error>> {
    b.finished = Some(Utc::now());
    ctx.intake
        .commit_baseline_chunk(&ctx.clinic, &res.name, &[], Some(&b))
        .await
        .map_err(PollError::Store)?;
    ctx.intake.flush().await.map_err(PollError::Store)?;
    tracing::info!(resource = %res.name, pages = b.pages, records = b.records, "baseline done; changes from the origin on are read next");
    Ok(())
}
