//! The one scheduler: a destination's worker, which attempts what is due, within the
//! destination's concurrency limit and pace, one [`Deliverer::attempt`] per entry.
//!
//! Each destination has its own worker with its own queue (a heap of due times, read from the
//! outbox at start) and its own limit, so a slow or failing destination never delays another.
//! The daemon runs a worker until it is cancelled ([`Deliverer::run_destination`]): it takes newly
//! committed entries from its wake channel and puts each retry back in the queue at its due time.
//! `once` and the tests run the same worker until it is idle ([`Deliverer::deliver_all_due`]):
//! it attempts each entry that was due when it started once, and stops when they are done.
//!
//! Attempts run on the worker's lanes: up to `concurrency` long-lived tasks, each making one
//! attempt at a time and reporting its end on one channel. A task spawned per attempt cost more
//! than the attempt's own bookkeeping on a fast receiver (see `bench/README.md`). A lane catches
//! a panic anywhere in its attempt ([`CatchPanic`]) and records it as a failed attempt.

use super::attempt::{CatchPanic, Step};
use super::Deliverer;
use crate::outbox::entry::{OutboxEntry, Wake};
use crate::outbox::store::StoreError;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for attempts in flight before leaving them queued.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The longest a worker sleeps before looking at its queue again, so a clock jump heals itself.
pub(crate) const MAX_IDLE_SLEEP: Duration = Duration::from_secs(30);
/// How often a worker on a PostgreSQL store looks for entries other replicas' pollers committed
/// (its own poller wakes it at once), and for entries whose claim expired with a dead replica.
const OUTBOX_RESCAN: Duration = Duration::from_secs(2);
/// How long a worker waits before trying an entry again after a store error during its attempt.
const STORE_ERROR_RETRY: Duration = Duration::from_secs(5);
/// The most just-committed entries a worker keeps in memory for their first attempt (a wake
/// carries the entry; past this many queued, the rest are read from the store when due). Bounds
/// the memory of a backlog behind a slow destination to this many entries (about 6 MB of
/// 1.5 KB webhook entries).
const FRESH_ENTRIES_MAX: usize = 4096;

/// Counts of what a worker did (what `once` prints).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Attempts made.
    pub attempted: u64,
    /// Delivered.
    pub delivered: u64,
    /// Rescheduled.
    pub retried: u64,
    /// Dead-lettered.
    pub(crate) dead: u64,
    /// Held by quiet hours instead of attempted (not counted in `attempted`).
    pub held: u64,
}

impl Outcome {
    fn add(&mut self, s: Step) {
        match s {
            Step::Delivered => self.delivered += 1,
            Step::Retry(_) => self.retried += 1,
            Step::Dead => self.dead += 1,
            Step::Held(_) => {
                self.held += 1;
                return;
            }
            Step::Gone => return,
        }
        self.attempted += 1;
    }

    fn merge(&mut self, o: Outcome) {
        self.attempted += o.attempted;
        self.delivered += o.delivered;
        self.retried += o.retried;
        self.dead += o.dead;
        self.held += o.held;
    }
}

/// How long a worker runs.
enum Until {
    /// Until `cancel` fires, taking newly committed entries from `wake` (the daemon).
    Cancelled {
        wake: mpsc::UnboundedReceiver<Wake>,
        cancel: CancellationToken,
    },
    /// Until each entry that was due at the start has been attempted once (`once`, the tests).
    Idle,
}

impl Deliverer {
    /// The worker of one destination: keeps a heap of due times (read from the outbox), takes new
    /// entries from `wake`, and attempts what is due within the concurrency limit until `cancel`
    /// fires; then it lets attempts in flight finish within [`SHUTDOWN_GRACE`].
    pub async fn run_destination(
        self,
        destination: String,
        wake: mpsc::UnboundedReceiver<Wake>,
        cancel: CancellationToken,
    ) {
        // Cancelled workers record store errors per entry and retry them; nothing to return.
        let _ = Worker::new(Arc::new(self), &destination)
            .run(Until::Cancelled { wake, cancel })
            .await;
    }

    /// Attempts every entry of `destination` that is due now, once, within its concurrency limit
    /// and pace; entries rescheduled stay queued for a later pass.
    pub(crate) async fn deliver_due(&self, destination: &str) -> Result<Outcome, StoreError> {
        Worker::new(Arc::new(self.clone()), destination)
            .run(Until::Idle)
            .await
    }

    /// Attempts everything due now in every destination, destinations side by side, pass after
    /// pass until nothing is due now (entries rescheduled for later stay queued).
    pub async fn deliver_all_due(&self) -> Result<Outcome, StoreError> {
        let mut total = Outcome::default();
        loop {
            let mut passes = JoinSet::new();
            for name in self.destinations.keys() {
                let (me, name) = (self.clone(), name.clone());
                passes.spawn(async move { me.deliver_due(&name).await });
            }
            let mut round = Outcome::default();
            let mut failed = None;
            // Every pass finishes (no attempt is cut off half-recorded) before an error is told.
            while let Some(pass) = passes.join_next().await {
                match pass {
                    Ok(Ok(o)) => round.merge(o),
                    Ok(Err(e)) => failed = failed.or(Some(e)),
                    // A worker that panicked outside an attempt: its entries stay queued.
                    Err(_) => {}
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
            total.merge(round);
            if round.attempted == 0 {
                return Ok(total);
            }
        }
    }
}

/// One destination's scheduler state.
struct Worker {
    deliverer: Arc<Deliverer>,
    /// Shared with every attempt task: an attempt costs two reference counts, not a copy of every
    /// handle the deliverer holds.
    destination: Arc<str>,
    queue: DueQueue,
    /// Entries queued with the copy their wake carried, until their first attempt (at most
    /// [`FRESH_ENTRIES_MAX`]; sled's wakes carry one, PostgreSQL's do not).
    fresh: HashMap<u64, Arc<OutboxEntry>>,
    /// The lanes, started as attempts need them (aborted when the worker ends: an attempt still
    /// running after the shutdown grace stays queued in the outbox).
    lanes: JoinSet<()>,
    /// Each lane's inbox of entries to attempt (room for one: a lane is handed an entry only
    /// when it is idle), by lane number.
    lane_inbox: Vec<mpsc::Sender<(u64, Option<Arc<OutboxEntry>>)>>,
    /// The numbers of the lanes that are idle.
    idle: Vec<usize>,
    /// Attempts in flight (lanes that are busy).
    busy: usize,
    /// Where lanes report the end of their attempts.
    done_tx: mpsc::UnboundedSender<Attempted>,
    done_rx: mpsc::UnboundedReceiver<Attempted>,
    /// Attempts in flight at once.
    limit: usize,
    /// The least time between two sends.
    min_interval: Duration,
    last_send: tokio::time::Instant,
    /// Until idle: each entry is attempted once, so a retry is not queued again.
    once_each: bool,
    /// Until idle: the first store error, told once the attempts in flight are done.
    failed: Option<StoreError>,
    outcome: Outcome,
    /// Whether the outbox has been scanned yet (held entries are looked at on the first scan).
    scanned: bool,
}

impl Worker {
    fn new(deliverer: Arc<Deliverer>, destination: &str) -> Worker {
        let (limit, min_interval) = deliverer
            .destinations
            .get(destination)
            .map_or((1, Duration::ZERO), |d| {
                (d.concurrency.max(1), super::pacing(d))
            });
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Worker {
            deliverer,
            destination: Arc::from(destination),
            queue: DueQueue::default(),
            fresh: HashMap::new(),
            lanes: JoinSet::new(),
            lane_inbox: Vec::new(),
            idle: Vec::new(),
            busy: 0,
            done_tx,
            done_rx,
            limit,
            min_interval,
            last_send: tokio::time::Instant::now() - min_interval,
            once_each: false,
            failed: None,
            outcome: Outcome::default(),
            scanned: false,
        }
    }

    /// Queues the destination's outbox entries: all of them when running until cancelled (an
    /// entry that cannot be read is skipped and logged), those due now when running until idle
    /// (an entry that cannot be read is an error).
    async fn scan(&mut self) -> Result<(), StoreError> {
        let now = self.deliverer.now_ms();
        let found = match self.deliverer.store.outbox_due(&self.destination).await {
            Ok(found) => found,
            Err(e) if self.once_each => return Err(e),
            Err(e) => {
                tracing::error!(destination = %self.destination, "cannot read the outbox: {e}");
                return Ok(());
            }
        };
        let released = if self.scanned {
            HashMap::new()
        } else {
            self.scanned = true;
            self.released(now, &found).await
        };
        for due in found {
            match due {
                Ok(mut d) => {
                    if let Some(&at) = released.get(&d.seq) {
                        d.at_ms = at;
                    }
                    if !(self.once_each && d.at_ms > now) {
                        self.queue.push(d.at_ms, d.seq);
                    }
                }
                Err(e) if self.once_each => return Err(e),
                Err(StoreError::Decode { what, .. }) => {
                    // The decode error is not logged: its text may quote the stored value.
                    tracing::error!(destination = %self.destination, "a stored {what} cannot be read; it is skipped");
                }
                Err(e) => {
                    tracing::error!(destination = %self.destination, "cannot read the outbox: {e}")
                }
            }
        }
        Ok(())
    }

    /// The entries held by quiet hours that the destination's quiet hours as configured now
    /// release earlier (they were removed or changed since, and a reload or restart brought
    /// that in): seq → when it is due now. An entry held longer by the new hours is not listed;
    /// its attempt holds it again, to their end. Entries are read only when some wait for a
    /// later time, and a store error only means they wait for their old time.
    async fn released(
        &self,
        now: i64,
        found: &[Result<crate::outbox::store::Due, StoreError>],
    ) -> HashMap<u64, i64> {
        let mut released = HashMap::new();
        if !found
            .iter()
            .any(|d| d.as_ref().is_ok_and(|d| d.at_ms > now))
        {
            return released;
        }
        let Some(dest) = self.deliverer.destinations.get(&*self.destination) else {
            return released;
        };
        let entries = match self.deliverer.store.outbox_entries(&self.destination).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(destination = %self.destination, "cannot look at held deliveries: {e}");
                return released;
            }
        };
        for (seq, entry) in entries {
            let Some(hold) = entry.held_now(now) else {
                continue;
            };
            // When it would go under the hours configured now, from when it was due.
            let from = hold.due_ms.max(now);
            let due = self
                .deliverer
                .quiet_until(dest, &entry.clinic, from)
                .unwrap_or(from);
            if due < hold.until_ms {
                released.insert(seq, due);
            }
        }
        released
    }

    /// Runs the loop until `until` says stop, and returns what it did.
    async fn run(mut self, until: Until) -> Result<Outcome, StoreError> {
        let (mut wake, cancel) = match until {
            Until::Cancelled { wake, cancel } => (Some(wake), cancel),
            Until::Idle => {
                self.once_each = true;
                // Never cancelled: an idle worker stops by itself.
                (None, CancellationToken::new())
            }
        };
        self.scan().await?;
        let mut wake_closed = wake.is_none();
        // Replicas on one database queue what the others' pollers commit by looking again.
        let rescan = match self.deliverer.store.postgres() {
            Some(_) if !self.once_each => Some(OUTBOX_RESCAN),
            _ => None,
        };
        let mut next_rescan = tokio::time::Instant::now() + OUTBOX_RESCAN;
        loop {
            self.start_due();
            if self.once_each && self.busy == 0 && (self.queue.is_empty() || self.failed.is_some())
            {
                break;
            }
            let sleep_for = self.sleep_for();
            tokio::select! {
                // Shutdown first: with several branches ready, `select!` would otherwise pick one
                // at random and could start a long sleep after the token was cancelled.
                biased;
                _ = cancel.cancelled() => break,
                w = recv(&mut wake), if !wake_closed => match w {
                    Some(w) => {
                        self.woken(w);
                        // Take every wake-up already queued (a page brings a hundred at once).
                        while let Some(Ok(w)) = wake.as_mut().map(|r| r.try_recv()) {
                            self.woken(w);
                        }
                    }
                    None => {
                        // No more producers; keep draining what is queued (without this branch,
                        // which would now be ready forever).
                        wake_closed = true;
                        if self.queue.is_empty() && self.busy == 0 { break; }
                    }
                },
                Some(done) = self.done_rx.recv(), if self.busy > 0 => {
                    self.finished(done);
                    // Collect every other attempt that has finished too, before refilling.
                    while let Ok(done) = self.done_rx.try_recv() {
                        self.finished(done);
                    }
                }
                _ = tokio::time::sleep_until(next_rescan), if rescan.is_some() => {
                    let _ = self.scan().await;
                    next_rescan = tokio::time::Instant::now() + OUTBOX_RESCAN;
                }
                // A full worker has nothing to start until an attempt ends, which the branch
                // above sees: no timer is set per finished attempt.
                _ = tokio::time::sleep(sleep_for), if self.busy < self.limit => {}
            }
        }
        // Shutdown: attempts in flight may finish; the rest stays queued in the outbox. (An idle
        // worker has nothing in flight by now.) Each attempt records its own outcome; the
        // reports only count down. The lanes are aborted when `self` drops.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while self.busy > 0 && self.done_rx.recv().await.is_some() {
                self.busy -= 1;
            }
        })
        .await;
        match self.failed {
            Some(e) => Err(e),
            None => Ok(self.outcome),
        }
    }

    /// Starts what is due, within the limit and the service's rate (nothing new after a store
    /// error, when running until idle).
    fn start_due(&mut self) {
        let now = self.deliverer.now_ms();
        while self.busy < self.limit && self.failed.is_none() {
            if self.queue.next_due().is_none_or(|due| due > now) {
                break;
            }
            if !self.min_interval.is_zero() && self.last_send.elapsed() < self.min_interval {
                break;
            }
            let Some(seq) = self.queue.pop() else {
                break;
            };
            self.last_send = tokio::time::Instant::now();
            let fresh = self.fresh.remove(&seq);
            self.hand_to_lane(seq, fresh);
            self.busy += 1;
        }
    }

    /// Queues a woken entry, keeping the copy it carries (sled's wakes only) for its first
    /// attempt while there is room.
    fn woken(&mut self, w: Wake) {
        if self.queue.push(w.due_ms, w.seq) && self.fresh.len() < FRESH_ENTRIES_MAX {
            if let Some(entry) = w.entry {
                self.fresh.insert(w.seq, entry);
            }
        }
    }

    /// Gives `seq` to an idle lane, starting one when none is idle (the caller keeps the number
    /// of busy lanes under the limit, so at most `limit` are ever started).
    fn hand_to_lane(&mut self, seq: u64, fresh: Option<Arc<OutboxEntry>>) {
        let mut job = (seq, fresh);
        loop {
            let lane = match self.idle.pop() {
                Some(lane) => lane,
                None => {
                    let lane = self.lane_inbox.len();
                    let inbox = self.start_lane(lane);
                    self.lane_inbox.push(inbox);
                    lane
                }
            };
            match self.lane_inbox[lane].try_send(job) {
                Ok(()) => return,
                // The lane ended (only a panic outside its attempt could end one): it is
                // started again under its number.
                Err(mpsc::error::TrySendError::Closed(j)) => {
                    job = j;
                    self.lane_inbox[lane] = self.start_lane(lane);
                    self.idle.push(lane);
                }
                // An idle lane's inbox is empty, so this does not happen; should it, that lane
                // is left to finish and report, and the next idle or new lane takes the job.
                Err(mpsc::error::TrySendError::Full(j)) => job = j,
            }
        }
    }

    /// Starts lane number `lane` and returns its inbox.
    fn start_lane(&mut self, lane: usize) -> mpsc::Sender<(u64, Option<Arc<OutboxEntry>>)> {
        let (tx, mut rx) = mpsc::channel(1);
        let (deliverer, destination, done) = (
            self.deliverer.clone(),
            self.destination.clone(),
            self.done_tx.clone(),
        );
        self.lanes.spawn(async move {
            while let Some((seq, fresh)) = rx.recv().await {
                let attempt = deliverer.attempt(&destination, seq, fresh);
                let result = match CatchPanic(std::pin::pin!(attempt)).await {
                    Ok(result) => result,
                    Err(()) => {
                        match CatchPanic(std::pin::pin!(
                            deliverer.record_panicked(&destination, seq)
                        ))
                        .await
                        {
                            Ok(result) => result,
                            // Even counting it failed: the entry is tried again later, as
                            // after a store error.
                            Err(()) => Ok(Step::Retry(
                                deliverer.now_ms() + STORE_ERROR_RETRY.as_millis() as i64,
                            )),
                        }
                    }
                };
                if done.send(Attempted { lane, seq, result }).is_err() {
                    return;
                }
            }
        });
        tx
    }

    /// How long to wait for something to do: the next due time or the end of the pause the
    /// service's rate asks for, at most [`MAX_IDLE_SLEEP`] (a full worker waits for an attempt
    /// instead).
    fn sleep_for(&self) -> Duration {
        let until_due = self
            .queue
            .next_due()
            .map(|due| Duration::from_millis((due - self.deliverer.now_ms()).max(0) as u64))
            .unwrap_or(MAX_IDLE_SLEEP);
        let until_rate = self.min_interval.saturating_sub(self.last_send.elapsed());
        until_due.max(until_rate).min(MAX_IDLE_SLEEP)
    }

    /// Records a finished attempt and frees its lane: a retry goes back in the queue at its due
    /// time (when running until cancelled), an entry that left the outbox is forgotten, and a
    /// store error is tried again after [`STORE_ERROR_RETRY`] (or, until idle, ends the run). An
    /// attempt that panicked was counted by its lane ([`Deliverer::record_panicked`]) and
    /// follows the entry's schedule.
    fn finished(&mut self, done: Attempted) {
        let Attempted { lane, seq, result } = done;
        self.idle.push(lane);
        self.busy -= 1;
        let store_error_retry = STORE_ERROR_RETRY.as_millis() as i64;
        match result {
            Ok(step) => {
                self.outcome.add(step);
                match step {
                    Step::Retry(due) | Step::Held(due) if !self.once_each => {
                        self.queue.requeue(due, seq)
                    }
                    _ => self.queue.done(seq),
                }
            }
            Err(e) if self.once_each => {
                self.queue.done(seq);
                self.failed.get_or_insert(e);
            }
            Err(e) => {
                tracing::error!(destination = %self.destination, "store error during delivery: {e}; retrying in {STORE_ERROR_RETRY:?}");
                self.queue
                    .requeue(self.deliverer.now_ms() + store_error_retry, seq);
            }
        }
    }
}

/// A lane's report of one attempt.
struct Attempted {
    lane: usize,
    seq: u64,
    result: Result<Step, StoreError>,
}

/// The next wake-up, or never when the worker has no wake channel.
async fn recv(wake: &mut Option<mpsc::UnboundedReceiver<Wake>>) -> Option<Wake> {
    match wake {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A destination worker's queue: due times in a heap, and every sequence number it holds (queued
/// or in flight) in a set, so an entry announced twice (found by the start-up scan *and* woken by
/// the poller that just committed it) is never attempted twice at once.
#[derive(Default)]
struct DueQueue {
    heap: BinaryHeap<Reverse<(i64, u64)>>,
    known: HashSet<u64>,
}

impl DueQueue {
    /// Queues `seq` unless it is already queued or in flight; says whether it was queued.
    fn push(&mut self, due: i64, seq: u64) -> bool {
        let new = self.known.insert(seq);
        if new {
            self.heap.push(Reverse((due, seq)));
        }
        new
    }
    /// Queues an entry that is in flight again (it stays known).
    fn requeue(&mut self, due: i64, seq: u64) {
        self.heap.push(Reverse((due, seq)));
    }
    /// Forgets an entry that left the outbox (or, until idle, is done for this run).
    fn done(&mut self, seq: u64) {
        self.known.remove(&seq);
    }
    fn next_due(&self) -> Option<i64> {
        self.heap.peek().map(|Reverse((due, _))| *due)
    }
    /// Takes the earliest entry; it stays known while in flight.
    fn pop(&mut self) -> Option<u64> {
        self.heap.pop().map(|Reverse((_, seq))| seq)
    }
    fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod queue_tests {
    use super::DueQueue;

    #[test]
    fn an_entry_announced_twice_is_queued_once() {
        let mut q = DueQueue::default();
        q.push(10, 1);
        q.push(10, 1); // the poller's wake after the start-up scan found it
        q.push(5, 2);
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.pop(), None);
        // In flight, it is still known: a late wake does not queue it again.
        q.push(10, 1);
        assert!(q.is_empty());
        q.requeue(20, 1);
        assert_eq!(q.next_due(), Some(20));
        assert_eq!(q.pop(), Some(1));
        q.done(1);
        q.push(30, 1);
        assert_eq!(q.next_due(), Some(30));
    }
}

#[cfg(test)]
mod attempt_tests {
    use super::*;
    use crate::config::retry::RetryPolicy;
    use crate::config::{Destination, Secret, Target, WebhookTarget};
    use crate::deliver::attempt::PANIC_REASON;
    use crate::deliver::TestFault;
    use crate::outbox::entry::OutboxEntry;
    use crate::outbox::store::Store;
    use crate::route::plan::Payload;

    /// A webhook destination with a short schedule; its URL is never reached (the attempt panics
    /// first).
    fn destination() -> Destination {
        Destination {
            name: "hooks".into(),
            target: Target::Webhook(WebhookTarget {
                name: "hooks".into(),
                url: url::Url::parse("http://127.0.0.1:9/hook").unwrap(),
                secrets: vec![Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()],
                headers: vec![],
                timeout: Duration::from_secs(1),
            }),
            retry: RetryPolicy {
                schedule: vec![Duration::from_millis(10), Duration::from_millis(10)],
                jitter: 0.0,
            },
            concurrency: 1,
            allow_private: false,
            shape: Default::default(),
            digest: None,
            quiet_hours: None,
        }
    }

    /// A store with one due webhook entry, and a deliverer over it that panics where `fault` says.
    async fn setup(fault: TestFault) -> (tempfile::TempDir, Deliverer) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), crate::outbox::store::DEFAULT_CACHE_BYTES).unwrap();
        let entry = OutboxEntry {
            seq: 1,
            destination: "hooks".into(),
            clinic: "default".into(),
            webhook_id: "msg_test".into(),
            event_type: "leads.added".into(),
            resource: "leads".into(),
            record_id: "1".into(),
            rule: "r".into(),
            change_seq: 0,
            payload: Payload::Webhook { body: "{}".into() },
            attempts: 0,
            next_attempt_ms: chrono::Utc::now().timestamp_millis(),
            created_ms: chrono::Utc::now().timestamp_millis(),
            held: None,
        };
        store.outbox_put(&entry).await.unwrap();
        let mut d = Deliverer::new(
            store,
            HashMap::from([("hooks".to_string(), Arc::new(destination()))]),
            None,
            None,
        )
        .await
        .unwrap();
        d.fault = fault;
        (dir, d)
    }

    async fn queued(d: &Deliverer) -> Option<OutboxEntry> {
        d.store.outbox_get("hooks", 1).await.unwrap()
    }

    async fn assert_dead_after_the_schedule(d: &Deliverer) {
        assert!(queued(d).await.is_none(), "the entry left the outbox");
        let dead = d.store.dead_entries().await.unwrap();
        assert_eq!(dead.len(), 1);
        let dead = &dead[0].1;
        assert_eq!(dead.entry.attempts, 3, "first attempt plus two retries");
        assert!(
            dead.reason
                .contains("retry schedule spent after 3 attempts")
                && dead.reason.contains(PANIC_REASON),
            "{}",
            dead.reason
        );
        let logs = d.store.attempts(1).await.unwrap();
        assert_eq!(logs.len(), 3, "each panicked attempt is logged");
    }

    #[tokio::test]
    async fn an_attempt_that_panics_counts_and_follows_the_schedule_to_the_dead_letters() {
        let (_dir, d) = setup(TestFault::PanicInSend).await;
        let out = d.deliver_due("hooks").await.unwrap();
        assert_eq!((out.attempted, out.retried), (1, 1));
        assert_eq!(
            queued(&d).await.unwrap().attempts,
            1,
            "the attempt was counted"
        );
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            d.deliver_due("hooks").await.unwrap();
        }
        assert_dead_after_the_schedule(&d).await;
    }

    #[tokio::test]
    async fn a_delivery_task_that_panics_counts_as_an_attempt_in_deliver_due() {
        let (_dir, d) = setup(TestFault::PanicAfterSend).await;
        let out = d.deliver_due("hooks").await.unwrap();
        assert_eq!((out.attempted, out.retried), (1, 1));
        assert_eq!(queued(&d).await.unwrap().attempts, 1);
    }

    #[tokio::test]
    async fn the_worker_counts_a_panicked_task_and_buries_it_after_the_schedule() {
        let (_dir, d) = setup(TestFault::PanicAfterSend).await;
        let cancel = CancellationToken::new();
        let (_tx, rx) = mpsc::unbounded_channel();
        let worker = tokio::spawn(
            d.clone()
                .run_destination("hooks".into(), rx, cancel.clone()),
        );
        let start = std::time::Instant::now();
        while d.store.dead_len().await.unwrap() == 0 && start.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
        worker.await.unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not re-queued on a fixed delay: the schedule's 10 ms waits were followed"
        );
        assert_dead_after_the_schedule(&d).await;
    }

    #[tokio::test]
    async fn a_woken_entry_that_left_the_outbox_meanwhile_is_not_attempted_from_its_copy() {
        let (_dir, d) = setup(TestFault::None).await;
        let entry = queued(&d).await.unwrap();
        let wake = d.store.wake_of(&entry);
        d.store.delivered("hooks", 1).await.unwrap();
        let step = d.attempt("hooks", 1, wake.entry).await.unwrap();
        assert_eq!(step, Step::Gone);
        assert!(
            d.store.attempts(1).await.unwrap().is_empty(),
            "nothing was attempted"
        );
    }

    #[tokio::test]
    async fn a_just_committed_entry_is_attempted_from_the_copy_its_wake_carried() {
        let (_dir, d) = setup(TestFault::None).await;
        let entry = queued(&d).await.unwrap();
        let wake = d.store.wake_of(&entry);
        // What is stored can no longer be decoded: an attempt that read it would fail with a
        // store error instead of reaching the (closed) port.
        d.store
            .sled()
            .unwrap()
            .outbox_put_raw("hooks", 1, b"not json");
        assert!(
            d.attempt("hooks", 1, None).await.is_err(),
            "the stored value is unreadable"
        );
        let step = d.attempt("hooks", 1, wake.entry).await.unwrap();
        assert!(matches!(step, Step::Retry(_)), "{step:?}");
        let logs = d.store.attempts(1).await.unwrap();
        assert_eq!(logs.len(), 1, "the attempt was made and logged");
        assert_eq!(queued(&d).await.unwrap().attempts, 1, "and written back");
    }
}
