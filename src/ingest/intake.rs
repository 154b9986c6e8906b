//! The port between ingest and the stages after it: what a poll reads of a resource's stored
//! state, and what it hands over once a chunk of a page is diffed. Ingest names no store, rules
//! or outbox; the daemon implements [`Intake`] over them (routing each change, queueing its
//! deliveries and committing the chunk in one transaction).
//!
//! The durability points a poll relies on are in the contract of each method: a chunk is committed
//! whole or not at all ([`Intake::commit_planned`]), and a checkpoint moves only after what was
//! committed before it is on disk ([`Intake::set_checkpoint`]).

use crate::ingest::state::{Baseline, Checkpoint, PollStatus};
use crate::model::Change;
use std::collections::HashMap;
use std::future::Future;

/// One diffed chunk of a page: the snapshots to store and the changes they carry.
#[derive(Debug, Default)]
pub struct DiffedChunk {
    /// New snapshot versions, in the order read: (record id, record JSON; a deleted record as its
    /// tombstone).
    pub(crate) snapshots: Vec<(String, Vec<u8>)>,
    /// The changes detected, in the order read.
    pub(crate) changes: Vec<Change>,
}

/// What a poll needs from the stages after it. Every method names the clinic and the resource
/// it is about, and every one may wait (the store may be a database across the network).
pub trait Intake: Clone + Send + Sync + 'static {
    /// A failure of the stages behind the port (the store); a poll reports it as it reads.
    type Error: std::error::Error + Send + Sync + 'static;
    /// A chunk routed and planned, not yet written.
    type Planned: Send + 'static;

    /// The checkpoint of a resource, if it has ever been polled.
    fn checkpoint(
        &self,
        clinic: &str,
        resource: &str,
    ) -> impl Future<Output = Result<Option<Checkpoint>, Self::Error>> + Send;

    /// Writes a resource's first checkpoint and, when one is due, its baseline, together and on
    /// disk when it returns: a crash leaves neither or both.
    fn set_first_checkpoint(
        &self,
        clinic: &str,
        resource: &str,
        cp: &Checkpoint,
        baseline: Option<&Baseline>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Advances a checkpoint durably: everything committed before it is on disk first, and the
    /// checkpoint is on disk when it returns.
    fn set_checkpoint(
        &self,
        clinic: &str,
        resource: &str,
        cp: &Checkpoint,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The last poll's status of a resource (the default when it was never polled).
    fn poll_status(
        &self,
        clinic: &str,
        resource: &str,
    ) -> impl Future<Output = Result<PollStatus, Self::Error>> + Send;

    /// Records the last poll's status (informational: not flushed on its own).
    fn set_poll_status(
        &self,
        clinic: &str,
        resource: &str,
        status: &PollStatus,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The baseline of a resource, if it ever had one.
    fn baseline(
        &self,
        clinic: &str,
        resource: &str,
    ) -> impl Future<Output = Result<Option<Baseline>, Self::Error>> + Send;

    /// Stores records the baseline read, apart from the snapshots (a record it holds already keeps
    /// the version read first), and with `progress` the baseline's new state, in one transaction.
    fn commit_baseline_chunk(
        &self,
        clinic: &str,
        resource: &str,
        snapshots: &[(String, Vec<u8>)],
        progress: Option<&Baseline>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Moves the baseline's records into the snapshots where no newer version is stored; returns
    /// how many moved. Idempotent.
    fn merge_baseline(
        &self,
        clinic: &str,
        resource: &str,
    ) -> impl Future<Output = Result<u64, Self::Error>> + Send;

    /// The stored versions of the records asked for (those stored), as the bytes committed: one
    /// read for a chunk's records.
    fn snapshots(
        &self,
        clinic: &str,
        resource: &str,
        ids: &[&str],
    ) -> impl Future<Output = Result<HashMap<String, Vec<u8>>, Self::Error>> + Send;

    /// The records asked for as the baseline read them, while the baseline is not merged.
    fn baseline_snapshots(
        &self,
        clinic: &str,
        resource: &str,
        ids: &[&str],
    ) -> impl Future<Output = Result<HashMap<String, Vec<u8>>, Self::Error>> + Send;

    /// Routes a diffed chunk's changes and plans their deliveries (rendering each payload), ready
    /// for [`Intake::commit_planned`]. It writes nothing, so a poll may plan the next chunk while
    /// the one before it commits, and a plan that is never committed leaves no trace.
    fn plan_chunk(
        &self,
        clinic: &str,
        resource: &str,
        chunk: DiffedChunk,
    ) -> impl Future<Output = Result<Self::Planned, Self::Error>> + Send;

    /// Commits a planned chunk: the snapshots, the changes and their deliveries in one
    /// transaction (all of it, or nothing after a crash); only then are the deliveries handed on,
    /// and never before they are on disk. Returns how many deliveries it queued.
    fn commit_planned(
        &self,
        clinic: &str,
        resource: &str,
        planned: Self::Planned,
    ) -> impl Future<Output = Result<u64, Self::Error>> + Send;

    /// Writes everything committed so far to disk and waits for it.
    fn flush(&self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}
