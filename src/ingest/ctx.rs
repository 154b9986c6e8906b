//! What every step of one poll shares: its context (the API client, the settings that shape a
//! poll, and the [`Intake`](crate::ingest::intake::Intake) of the stages after it) and why a
//! poll fails.

use crate::config::StartFrom;
use crate::ingest::client::{ApiError, Client};
use chrono::{DateTime, Utc};
use std::time::Duration;
use thiserror::Error;

/// Why a poll failed. The checkpoint stays where it was in every case. `E` is the error of the
/// poll's [`Intake`](crate::ingest::intake::Intake) (the store's).
#[derive(Debug, Error)]
pub enum PollError<E> {
    /// The API failed (after the retries inside the poll).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The store failed.
    #[error(transparent)]
    Store(E),
    /// A stored snapshot is not the JSON a poll stored.
    #[error("a stored snapshot could not be decoded: {0}")]
    Snapshot(#[source] serde_json::Error),
    /// The poll was cancelled by shutdown between pages.
    #[error("{0}: poll cancelled by shutdown")]
    Cancelled(String),
}

/// Everything a poll needs.
#[derive(Clone)]
pub struct PollCtx<I> {
    /// The clinic's name (its store namespace).
    pub(crate) clinic: String,
    /// The stages after ingest: the stored state, and where diffed chunks go.
    pub(crate) intake: I,
    /// The API client of this clinic.
    pub(crate) client: Client,
    /// How far back each poll re-reads.
    pub(crate) overlap: Duration,
    /// Where the first poll starts.
    pub(crate) start_from: StartFrom,
    /// The since of the silent baseline at a resource's first start; `None`: no baseline.
    pub(crate) baseline: Option<DateTime<Utc>>,
    /// Pause between pages.
    pub(crate) page_delay: Duration,
    /// Stop between pages when cancelled.
    pub(crate) cancel: tokio_util::sync::CancellationToken,
}
