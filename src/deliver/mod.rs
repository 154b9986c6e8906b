//! Durable delivery: outbox entries, the per-destination workers that deliver what is due, retries
//! with jitter, the attempts log and the dead letters.
//!
//! Each destination has its own worker with its own queue (a heap of due times, rebuilt from the
//! outbox at start) and its own concurrency limit, so a slow or failing destination never delays
//! another. The step function [`Deliverer::attempt`] makes one attempt of one entry and records its
//! outcome; [`Deliverer::deliver_due`] runs every due entry of one destination (what `once` and the
//! tests call), and [`Deliverer::run_destination`] wraps the same step in a loop with `select!` on
//! a cancellation token.

pub mod chat;
pub mod email;
pub mod outcome;
pub mod webhook;

use crate::config::{Destination, Target};
use crate::model::{AttemptReport, Verdict};
use crate::outbox::entry::{AttemptLog, DeadLetter, OutboxEntry, Wake};
use crate::outbox::store::{Store, StoreError};
use crate::route::plan::Payload;
use email::Mailer;
use serde::Deserialize;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long shutdown waits for attempts in flight before leaving them queued.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The longest a worker sleeps before looking at its queue again, so a clock jump heals itself.
pub const MAX_IDLE_SLEEP: Duration = Duration::from_secs(30);
/// The least time between two sends to `d`: a chat service's rate limit
/// ([`chat::min_interval`]); nothing for webhooks and email.
fn pacing(d: &Destination) -> Duration {
    match &d.target {
        Target::Chat { kind, .. } => chat::min_interval(*kind),
        Target::Webhook(_) | Target::Email { .. } => Duration::ZERO,
    }
}

/// Something a delivery did, for the demo's live stream and for tests.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Delivered.
    Delivered {
        /// Destination.
        destination: String,
        /// Event type (`leads.added`).
        event_type: String,
        /// The webhook id.
        webhook_id: String,
        /// Attempt number.
        attempt: u32,
        /// Status code.
        status: Option<u16>,
        /// For email: the recipient; otherwise empty.
        detail: String,
    },
    /// Will be retried.
    Retrying {
        /// Destination.
        destination: String,
        /// The webhook id.
        webhook_id: String,
        /// Attempt number that failed.
        attempt: u32,
        /// Why.
        reason: String,
        /// When the next attempt is.
        in_ms: i64,
    },
    /// Went to the dead letters.
    Dead {
        /// Destination.
        destination: String,
        /// The webhook id.
        webhook_id: String,
        /// Why.
        reason: String,
    },
}

/// What [`Deliverer::attempt`] did with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Delivered and removed from the outbox.
    Delivered,
    /// Rescheduled for this Unix ms.
    Retry(i64),
    /// Moved to the dead letters.
    Dead,
    /// Not in the outbox any more (delivered or re-driven elsewhere).
    Gone,
}

/// Counts of what [`Deliverer::deliver_due`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Attempts made.
    pub attempted: u64,
    /// Delivered.
    pub delivered: u64,
    /// Rescheduled.
    pub retried: u64,
    /// Dead-lettered.
    pub dead: u64,
}

impl Outcome {
    fn add(&mut self, s: Step) {
        match s {
            Step::Delivered => self.delivered += 1,
            Step::Retry(_) => self.retried += 1,
            Step::Dead => self.dead += 1,
            Step::Gone => return,
        }
        self.attempted += 1;
    }
}

/// Delivers outbox entries.
#[derive(Clone)]
pub struct Deliverer {
    store: Store,
    destinations: Arc<HashMap<String, Arc<Destination>>>,
    /// One HTTP client per webhook and chat destination, each resolving names through that
    /// destination's egress rules.
    http: Arc<HashMap<String, reqwest::Client>>,
    mailer: Option<Arc<Mailer>>,
    events: Option<mpsc::UnboundedSender<Event>>,
    /// Destinations marked failing (mirrors the store's `dest_health`), so the success path only
    /// touches the store when a mark has to be cleared.
    failing: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Where the unit tests make an attempt panic.
    #[cfg(test)]
    fault: TestFault,
}

/// Where a unit test makes every attempt panic: inside the send (caught by the attempt itself) or
/// after it (the whole task panics, which the worker catches).
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum TestFault {
    #[default]
    None,
    PanicInSend,
    PanicAfterSend,
}

/// The reason recorded for an attempt that panicked. A panic is a bug, not the receiver's answer,
/// but it counts as a failed attempt like any other: the entry follows its retry schedule and
/// ends in the dead letters instead of being tried again forever.
pub const PANIC_REASON: &str = "the delivery attempt panicked (a bug in clinicea-notifier)";

/// Runs a future and turns a panic inside it into `Err(())`, so one attempt's bug is recorded
/// against that attempt instead of unwinding through the bookkeeping after it.
struct CatchPanic<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for CatchPanic<F> {
    type Output = Result<F::Output, ()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        // After a panic the inner future is never polled again (this future is then done), so
        // no broken state can be observed.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(_) => std::task::Poll::Ready(Err(())),
        }
    }
}

/// An outbox entry ready for an attempt, or what became of it instead.
enum Loaded {
    /// The entry, its destination and the span of its attempt.
    Ready(Box<OutboxEntry>, Arc<Destination>, tracing::Span),
    /// Nothing to attempt: gone, or dead because its destination left the config.
    Done(Step),
}

/// The report of an attempt that panicked.
fn panic_report(duration: Duration) -> AttemptReport {
    AttemptReport {
        verdict: Verdict::Retry {
            reason: PANIC_REASON.to_string(),
            retry_after: None,
        },
        status: None,
        response: String::new(),
        duration,
    }
}

/// Whether a permanent failure means the destination itself is gone (a deleted chat webhook).
fn destination_gone(status: Option<u16>, dest: &Destination) -> bool {
    matches!(dest.target, Target::Chat { .. }) && matches!(status, Some(404) | Some(410))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Deliverer {
    /// A deliverer over `store` for `destinations`.
    pub fn new(
        store: Store,
        destinations: HashMap<String, Arc<Destination>>,
        mailer: Option<Arc<Mailer>>,
    ) -> anyhow::Result<Deliverer> {
        let failing = store
            .failing_destinations()?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let mut http = HashMap::new();
        for (name, d) in &destinations {
            if matches!(d.target, Target::Webhook(_) | Target::Chat { .. }) {
                let policy = crate::net::egress::Policy::destination(name, d.allow_private);
                http.insert(name.clone(), webhook::client(policy)?);
            }
        }
        Ok(Deliverer {
            store,
            destinations: Arc::new(destinations),
            http: Arc::new(http),
            mailer,
            events: None,
            failing: Arc::new(std::sync::Mutex::new(failing)),
            #[cfg(test)]
            fault: TestFault::None,
        })
    }

    /// Sends [`Event`]s to `tx` as deliveries happen.
    pub fn with_events(mut self, tx: mpsc::UnboundedSender<Event>) -> Self {
        self.events = Some(tx);
        self
    }

    /// The destinations by name.
    pub fn destinations(&self) -> &HashMap<String, Arc<Destination>> {
        &self.destinations
    }

    fn emit(&self, e: Event) {
        if let Some(tx) = &self.events {
            let _ = tx.send(e);
        }
    }

    async fn send(&self, dest: &Destination, entry: &OutboxEntry) -> AttemptReport {
        #[cfg(test)]
        if self.fault == TestFault::PanicInSend {
            panic!("test fault: panic in send");
        }
        let fail = |reason: String| AttemptReport {
            verdict: Verdict::Fail { reason },
            status: None,
            response: String::new(),
            duration: Duration::ZERO,
        };
        let http = self.http.get(&dest.name);
        match (&dest.target, &entry.payload, http) {
            (Target::Webhook(t), Payload::Webhook { body }, Some(http)) => {
                webhook::send(
                    http,
                    t,
                    &entry.webhook_id,
                    bytes::Bytes::from(body.clone().into_bytes()),
                )
                .await
            }
            (
                Target::Chat {
                    kind, url, timeout, ..
                },
                Payload::Chat { body },
                Some(http),
            ) => chat::send(http, *kind, url, body.clone().into_bytes(), *timeout).await,
            (Target::Email { .. }, Payload::Email(msg), _) => match &self.mailer {
                Some(m) => m.send(msg).await,
                None => fail("no smtp: section is configured".into()),
            },
            _ => fail(format!(
                "the entry's payload does not fit destination {} (its type changed in the config?)",
                dest.name
            )),
        }
    }

    /// Loads an outbox entry with its destination and the span its attempt logs in. An entry that
    /// is gone, or whose destination left the config (it is then kept, visibly, as a dead
    /// letter), needs no attempt.
    fn load(&self, destination: &str, seq: u64) -> Result<Loaded, StoreError> {
        let Some(raw) = self.store.outbox_get(destination, seq)? else {
            return Ok(Loaded::Done(Step::Gone));
        };
        let entry: OutboxEntry =
            serde_json::from_slice(&raw).map_err(|source| StoreError::Decode {
                what: "outbox entry",
                source,
            })?;
        let Some(dest) = self.destinations.get(destination).cloned() else {
            let reason = format!("destination {destination} is no longer in the config");
            self.to_dead(&entry, reason)?;
            return Ok(Loaded::Done(Step::Dead));
        };
        let span = tracing::info_span!("delivery", destination = %destination, webhook_id = %entry.webhook_id, resource = %entry.resource, id = %entry.record_id, rule = %entry.rule, attempt = entry.attempts + 1);
        Ok(Loaded::Ready(Box::new(entry), dest, span))
    }

    /// Makes one attempt of one outbox entry and records the outcome: removes it on success,
    /// reschedules it on a retryable failure, moves it to the dead letters on a permanent one or
    /// when its schedule is spent.
    pub async fn attempt(&self, destination: &str, seq: u64) -> Result<Step, StoreError> {
        let (entry, dest, span) = match self.load(destination, seq)? {
            Loaded::Ready(entry, dest, span) => (*entry, dest, span),
            Loaded::Done(step) => return Ok(step),
        };
        let started_ms = now_ms();
        let started = std::time::Instant::now();
        // `instrument`, not `enter`: an entered span guard held across an await leaks the span into
        // whatever else runs on this thread meanwhile.
        let sent = CatchPanic(Box::pin(self.send(&dest, &entry)))
            .instrument(span.clone())
            .await;
        #[cfg(test)]
        if self.fault == TestFault::PanicAfterSend {
            panic!("test fault: panic after send");
        }
        // Nothing below awaits, so entering here is sound.
        let _enter = span.enter();
        let report = sent.unwrap_or_else(|()| {
            tracing::error!("{PANIC_REASON}; counted as a failed attempt");
            panic_report(started.elapsed())
        });
        self.record(&dest, seq, entry, report, started_ms)
    }

    /// Counts an attempt whose task panicked before it could record its outcome: the entry's
    /// attempt count goes up and it follows its retry schedule, like any failed attempt.
    pub fn record_panicked(&self, destination: &str, seq: u64) -> Result<Step, StoreError> {
        let (entry, dest, span) = match self.load(destination, seq)? {
            Loaded::Ready(entry, dest, span) => (*entry, dest, span),
            Loaded::Done(step) => return Ok(step),
        };
        let _enter = span.enter();
        tracing::error!("{PANIC_REASON}; counted as a failed attempt");
        self.record(&dest, seq, entry, panic_report(Duration::ZERO), now_ms())
    }

    /// Records one attempt's outcome: removes the entry on success, reschedules it on a retryable
    /// failure, moves it to the dead letters on a permanent one or when its schedule is spent.
    fn record(
        &self,
        dest: &Destination,
        seq: u64,
        mut entry: OutboxEntry,
        report: AttemptReport,
        started_ms: i64,
    ) -> Result<Step, StoreError> {
        let destination = dest.name.as_str();
        entry.attempts += 1;
        let labels = [("destination", destination.to_string())];
        metrics::histogram!("clinicea_delivery_attempt_duration_seconds", &labels)
            .record(report.duration.as_secs_f64());
        // The attempts log keeps failed attempts only (a success removes the entry and its log).
        let log = |report: &AttemptReport, attempt: u32| {
            serde_json::to_vec(&AttemptLog {
                at_ms: started_ms,
                attempt,
                status: report.status,
                duration_ms: report.duration.as_millis() as u64,
                response: report.response.clone(),
                verdict: report.verdict.clone(),
            })
            .unwrap_or_default()
        };
        match report.verdict {
            Verdict::Success => {
                let detail = match &entry.payload {
                    Payload::Email(m) => m.to.clone(),
                    _ => String::new(),
                };
                self.store.outbox_remove(destination, seq)?;
                self.store.forget_attempts(seq)?;
                let was_failing = self
                    .failing
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(destination);
                if was_failing {
                    self.store.set_destination_failing(destination, None)?;
                    tracing::info!(destination = %destination, "delivering again; no longer marked failing");
                }
                metrics::counter!("clinicea_deliveries_total", "destination" => destination.to_string(), "outcome" => "delivered").increment(1);
                metrics::histogram!("clinicea_delivery_latency_seconds", &labels)
                    .record((now_ms() - entry.created_ms).max(0) as f64 / 1000.0);
                tracing::info!(status = ?report.status, "delivered");
                self.emit(Event::Delivered {
                    destination: destination.to_string(),
                    event_type: entry.event_type.clone(),
                    webhook_id: entry.webhook_id.clone(),
                    attempt: entry.attempts,
                    status: report.status,
                    detail,
                });
                Ok(Step::Delivered)
            }
            Verdict::Retry {
                ref reason,
                retry_after,
            } => {
                self.store
                    .log_attempt(seq, entry.attempts, &log(&report, entry.attempts))?;
                let reason = reason.clone();
                let delay =
                    dest.retry
                        .next_delay(entry.attempts, retry_after, &mut rand::thread_rng());
                match delay {
                    Some(d) => {
                        entry.next_attempt_ms = now_ms() + d.as_millis() as i64;
                        self.store.outbox_put(
                            destination,
                            seq,
                            &serde_json::to_vec(&entry).unwrap_or_default(),
                        )?;
                        metrics::counter!("clinicea_deliveries_total", "destination" => destination.to_string(), "outcome" => "retry").increment(1);
                        tracing::warn!(status = ?report.status, %reason, retry_in = ?d, "delivery failed; will retry");
                        self.emit(Event::Retrying {
                            destination: destination.to_string(),
                            webhook_id: entry.webhook_id.clone(),
                            attempt: entry.attempts,
                            reason,
                            in_ms: d.as_millis() as i64,
                        });
                        Ok(Step::Retry(entry.next_attempt_ms))
                    }
                    None => {
                        let reason = format!(
                            "retry schedule spent after {} attempts; last error: {reason}",
                            entry.attempts
                        );
                        self.to_dead(&entry, reason)?;
                        Ok(Step::Dead)
                    }
                }
            }
            Verdict::Fail { ref reason } => {
                if destination_gone(report.status, dest) {
                    tracing::error!(destination = %destination, "the destination's webhook is gone ({reason}); marked failing in status");
                    self.store.set_destination_failing(
                        destination,
                        Some(&crate::outbox::store::DestHealth {
                            since: chrono::Utc::now(),
                            reason: reason.clone(),
                        }),
                    )?;
                    self.failing
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(destination.to_string());
                }
                self.store
                    .log_attempt(seq, entry.attempts, &log(&report, entry.attempts))?;
                let reason = reason.clone();
                self.to_dead(&entry, reason)?;
                Ok(Step::Dead)
            }
        }
    }

    fn to_dead(&self, entry: &OutboxEntry, reason: String) -> Result<(), StoreError> {
        tracing::error!(destination = %entry.destination, webhook_id = %entry.webhook_id, %reason, "delivery moved to the dead letters");
        metrics::counter!("clinicea_deliveries_total", "destination" => entry.destination.clone(), "outcome" => "dead").increment(1);
        metrics::counter!("clinicea_dead_letters_total", "destination" => entry.destination.clone()).increment(1);
        let dead = DeadLetter {
            entry: entry.clone(),
            reason: reason.clone(),
            died_ms: now_ms(),
        };
        self.store.outbox_to_dead(
            &entry.destination,
            entry.seq,
            &serde_json::to_vec(&dead).unwrap_or_default(),
        )?;
        self.emit(Event::Dead {
            destination: entry.destination.clone(),
            webhook_id: entry.webhook_id.clone(),
            reason,
        });
        Ok(())
    }

    /// Moves the outbox entries of destinations that are no longer in the config to the dead
    /// letters (no worker would ever look at them, and `status` lists configured destinations
    /// only), where `dead list` shows them and `dead retry` re-drives them once the destination
    /// is back. Returns how many moved.
    pub fn bury_orphans(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for (dest, _, raw) in self.store.all_outbox()? {
            if self.destinations.contains_key(&dest) {
                continue;
            }
            let entry: OutboxEntry =
                serde_json::from_slice(&raw).map_err(|source| StoreError::Decode {
                    what: "outbox entry",
                    source,
                })?;
            self.to_dead(
                &entry,
                format!("destination {dest} is no longer in the config"),
            )?;
            n += 1;
        }
        Ok(n)
    }

    /// The due entries of a destination, oldest first: (due ms, seq).
    fn due_entries(&self, destination: &str, now: i64) -> Result<Vec<(i64, u64)>, StoreError> {
        let mut due = Vec::new();
        for (seq, raw) in self.store.outbox_entries(destination)? {
            match serde_json::from_slice::<DueOnly>(&raw) {
                Ok(d) if d.next_attempt_ms <= now => due.push((d.next_attempt_ms, seq)),
                Ok(_) => {}
                Err(source) => {
                    return Err(StoreError::Decode {
                        what: "outbox entry",
                        source,
                    })
                }
            }
        }
        due.sort_unstable();
        Ok(due)
    }

    /// Attempts every entry of `destination` that is due now, within its concurrency limit.
    pub async fn deliver_due(&self, destination: &str) -> Result<Outcome, StoreError> {
        let due = self.due_entries(destination, now_ms())?;
        let limit = self
            .destinations
            .get(destination)
            .map_or(1, |d| d.concurrency.max(1));
        let min_interval = self
            .destinations
            .get(destination)
            .map_or(Duration::ZERO, |d| pacing(d));
        let mut out = Outcome::default();
        let mut set = tokio::task::JoinSet::new();
        let mut task_seq: HashMap<tokio::task::Id, u64> = HashMap::new();
        let sem = Arc::new(Semaphore::new(limit));
        for (_, seq) in due {
            let permit = sem
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| StoreError::Decode {
                    what: "semaphore",
                    source: serde_json::Error::io(std::io::Error::other("closed")),
                })?;
            let me = self.clone();
            let dest = destination.to_string();
            let handle = set.spawn(async move {
                let r = me.attempt(&dest, seq).await;
                drop(permit);
                r
            });
            task_seq.insert(handle.id(), seq);
            if !min_interval.is_zero() {
                tokio::time::sleep(min_interval).await;
            }
        }
        while let Some(r) = set.join_next_with_id().await {
            match r {
                Ok((id, step)) => {
                    task_seq.remove(&id);
                    out.add(step?)
                }
                Err(e) => {
                    // The attempt could not record itself; count it here.
                    if let Some(seq) = task_seq.remove(&e.id()) {
                        out.add(self.record_panicked(destination, seq)?);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Attempts everything due now in every destination, destinations side by side, until nothing
    /// is due now (entries rescheduled for later stay queued).
    pub async fn deliver_all_due(&self) -> Result<Outcome, StoreError> {
        let mut total = Outcome::default();
        loop {
            let mut set = tokio::task::JoinSet::new();
            for name in self.destinations.keys() {
                let me = self.clone();
                let name = name.clone();
                set.spawn(async move { me.deliver_due(&name).await });
            }
            let mut round = Outcome::default();
            while let Some(r) = set.join_next().await {
                if let Ok(o) = r {
                    let o = o?;
                    round.attempted += o.attempted;
                    round.delivered += o.delivered;
                    round.retried += o.retried;
                    round.dead += o.dead;
                }
            }
            total.attempted += round.attempted;
            total.delivered += round.delivered;
            total.retried += round.retried;
            total.dead += round.dead;
            if round.attempted == 0 {
                return Ok(total);
            }
        }
    }

    /// The worker of one destination: keeps a heap of due times (rebuilt from the outbox), takes
    /// new entries from `wake`, and attempts what is due within the concurrency limit until
    /// `cancel` fires; then it lets attempts in flight finish within [`SHUTDOWN_GRACE`].
    pub async fn run_destination(
        self,
        destination: String,
        mut wake: mpsc::UnboundedReceiver<Wake>,
        cancel: CancellationToken,
    ) {
        let mut queue = DueQueue::default();
        match self.store.outbox_entries(&destination) {
            Ok(entries) => {
                for (seq, raw) in entries {
                    if let Ok(d) = serde_json::from_slice::<DueOnly>(&raw) {
                        queue.push(d.next_attempt_ms, seq);
                    }
                }
            }
            Err(e) => tracing::error!(destination = %destination, "cannot read the outbox: {e}"),
        }
        let (limit, min_interval) = self
            .destinations
            .get(&destination)
            .map_or((1, Duration::ZERO), |d| (d.concurrency.max(1), pacing(d)));
        let mut inflight: tokio::task::JoinSet<Result<Step, StoreError>> =
            tokio::task::JoinSet::new();
        let mut task_seq: HashMap<tokio::task::Id, u64> = HashMap::new();
        let shared = Arc::new(self.clone());
        let dest_shared: Arc<str> = Arc::from(destination.as_str());
        let mut last_send = tokio::time::Instant::now() - min_interval;
        let mut wake_closed = false;
        loop {
            // Start what is due, within the limit and the service's rate.
            let now = now_ms();
            while inflight.len() < limit {
                if queue.next_due().is_none_or(|due| due > now) {
                    break;
                }
                if !min_interval.is_zero() && last_send.elapsed() < min_interval {
                    break;
                }
                let Some(seq) = queue.pop() else {
                    break;
                };
                // One shared handle per worker: an attempt costs two reference counts, not a
                // copy of every handle the deliverer holds.
                let (me, dest) = (shared.clone(), dest_shared.clone());
                last_send = tokio::time::Instant::now();
                let handle = inflight.spawn(async move { me.attempt(&dest, seq).await });
                task_seq.insert(handle.id(), seq);
            }
            let sleep_for = if inflight.len() >= limit {
                MAX_IDLE_SLEEP
            } else {
                let until_due = queue
                    .next_due()
                    .map(|due| Duration::from_millis((due - now_ms()).max(0) as u64))
                    .unwrap_or(MAX_IDLE_SLEEP);
                let until_rate = min_interval.saturating_sub(last_send.elapsed());
                until_due.max(until_rate).min(MAX_IDLE_SLEEP)
            };
            tokio::select! {
                // Shutdown first: with several branches ready, `select!` would otherwise pick one
                // at random and could start a long sleep after the token was cancelled.
                biased;
                _ = cancel.cancelled() => break,
                w = wake.recv(), if !wake_closed => match w {
                    Some(w) => {
                        queue.push(w.due_ms, w.seq);
                        // Take every wake-up already queued (a page brings a hundred at once).
                        while let Ok(w) = wake.try_recv() {
                            queue.push(w.due_ms, w.seq);
                        }
                    }
                    None => {
                        // No more producers; keep draining what is queued (without this branch,
                        // which would now be ready forever).
                        wake_closed = true;
                        if queue.is_empty() && inflight.is_empty() { break; }
                    }
                },
                Some(done) = inflight.join_next_with_id(), if !inflight.is_empty() => {
                    finished(&shared, done, &mut task_seq, &mut queue, &destination);
                    // Collect every other attempt that has finished too, before refilling.
                    while let Some(done) = inflight.try_join_next_with_id() {
                        finished(&shared, done, &mut task_seq, &mut queue, &destination);
                    }
                }
                _ = tokio::time::sleep(sleep_for) => {}
            }
        }
        // Shutdown: attempts in flight may finish; the rest stays queued in the outbox.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while inflight.join_next().await.is_some() {}
        })
        .await;
    }
}

/// How long a worker waits before trying an entry again after a store error during its attempt.
const STORE_ERROR_RETRY: Duration = Duration::from_secs(5);

/// Records a finished attempt in the worker's queue: a retry goes back in at its due time, an
/// entry that left the outbox is forgotten, a store error is tried again after
/// [`STORE_ERROR_RETRY`], and a task that panicked counts as a failed attempt
/// ([`Deliverer::record_panicked`]) and follows the entry's schedule.
fn finished(
    deliverer: &Deliverer,
    done: Result<(tokio::task::Id, Result<Step, StoreError>), tokio::task::JoinError>,
    task_seq: &mut HashMap<tokio::task::Id, u64>,
    queue: &mut DueQueue,
    destination: &str,
) {
    let (id, result) = match done {
        Ok((id, r)) => (id, Ok(r)),
        Err(e) => (e.id(), Err(e)),
    };
    let Some(seq) = task_seq.remove(&id) else {
        return;
    };
    let store_error_retry = STORE_ERROR_RETRY.as_millis() as i64;
    let result = match result {
        Ok(r) => r,
        Err(e) if e.is_panic() => deliverer.record_panicked(destination, seq),
        Err(e) => {
            // Cancelled (only at shutdown): the entry is still in the outbox, untouched.
            tracing::warn!(destination = %destination, "a delivery task ended early: {e}");
            Ok(Step::Retry(now_ms() + store_error_retry))
        }
    };
    match result {
        Ok(Step::Retry(due)) => queue.requeue(due, seq),
        Ok(_) => queue.done(seq),
        Err(e) => {
            tracing::error!(destination = %destination, "store error during delivery: {e}; retrying in {STORE_ERROR_RETRY:?}");
            queue.requeue(now_ms() + store_error_retry, seq);
        }
    }
}

/// A destination worker's queue: due times in a heap, and every sequence number it holds (queued
/// or in flight) in a set, so an entry announced twice (found by the start-up scan *and* woken by
/// the poller that just committed it) is never attempted twice at once.
#[derive(Default)]
struct DueQueue {
    heap: BinaryHeap<Reverse<(i64, u64)>>,
    known: std::collections::HashSet<u64>,
}

impl DueQueue {
    /// Queues `seq` unless it is already queued or in flight.
    fn push(&mut self, due: i64, seq: u64) {
        if self.known.insert(seq) {
            self.heap.push(Reverse((due, seq)));
        }
    }
    /// Queues an entry that is in flight again (it stays known).
    fn requeue(&mut self, due: i64, seq: u64) {
        self.heap.push(Reverse((due, seq)));
    }
    /// Forgets an entry that left the outbox.
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

/// Reads only the due time of an outbox entry.
#[derive(Deserialize)]
struct DueOnly {
    next_attempt_ms: i64,
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
mod panic_tests {
    use super::*;

    /// A webhook destination with a short schedule; its URL is never reached (the attempt panics
    /// first).
    fn destination() -> Destination {
        Destination {
            name: "hooks".into(),
            target: Target::Webhook(crate::config::WebhookTarget {
                name: "hooks".into(),
                url: url::Url::parse("http://127.0.0.1:9/hook").unwrap(),
                secrets: vec![
                    webhook::Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
                ],
                headers: vec![],
                timeout: Duration::from_secs(1),
            }),
            retry: crate::config::RetryPolicy {
                schedule: vec![Duration::from_millis(10), Duration::from_millis(10)],
                jitter: 0.0,
            },
            concurrency: 1,
            allow_private: false,
        }
    }

    /// A store with one due webhook entry, and a deliverer over it that panics where `fault` says.
    fn setup(fault: TestFault) -> (tempfile::TempDir, Deliverer) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), crate::outbox::store::DEFAULT_CACHE_BYTES).unwrap();
        let entry = OutboxEntry {
            seq: 1,
            destination: "hooks".into(),
            webhook_id: "msg_test".into(),
            event_type: "leads.added".into(),
            resource: "leads".into(),
            record_id: "1".into(),
            rule: "r".into(),
            change_seq: 0,
            payload: Payload::Webhook { body: "{}".into() },
            attempts: 0,
            next_attempt_ms: now_ms(),
            created_ms: now_ms(),
        };
        store
            .outbox_put("hooks", 1, &serde_json::to_vec(&entry).unwrap())
            .unwrap();
        let mut d = Deliverer::new(
            store,
            HashMap::from([("hooks".to_string(), Arc::new(destination()))]),
            None,
        )
        .unwrap();
        d.fault = fault;
        (dir, d)
    }

    fn queued(d: &Deliverer) -> Option<OutboxEntry> {
        d.store
            .outbox_get("hooks", 1)
            .unwrap()
            .map(|raw| serde_json::from_slice(&raw).unwrap())
    }

    fn assert_dead_after_the_schedule(d: &Deliverer) {
        assert!(queued(d).is_none(), "the entry left the outbox");
        let dead = d.store.dead_entries().unwrap();
        assert_eq!(dead.len(), 1);
        let dead: DeadLetter = serde_json::from_slice(&dead[0].1).unwrap();
        assert_eq!(dead.entry.attempts, 3, "first attempt plus two retries");
        assert!(
            dead.reason
                .contains("retry schedule spent after 3 attempts")
                && dead.reason.contains(PANIC_REASON),
            "{}",
            dead.reason
        );
        let logs = d.store.attempts(1).unwrap();
        assert_eq!(logs.len(), 3, "each panicked attempt is logged");
    }

    #[tokio::test]
    async fn an_attempt_that_panics_counts_and_follows_the_schedule_to_the_dead_letters() {
        let (_dir, d) = setup(TestFault::PanicInSend);
        let out = d.deliver_due("hooks").await.unwrap();
        assert_eq!((out.attempted, out.retried), (1, 1));
        assert_eq!(queued(&d).unwrap().attempts, 1, "the attempt was counted");
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            d.deliver_due("hooks").await.unwrap();
        }
        assert_dead_after_the_schedule(&d);
    }

    #[tokio::test]
    async fn a_delivery_task_that_panics_counts_as_an_attempt_in_deliver_due() {
        let (_dir, d) = setup(TestFault::PanicAfterSend);
        let out = d.deliver_due("hooks").await.unwrap();
        assert_eq!((out.attempted, out.retried), (1, 1));
        assert_eq!(queued(&d).unwrap().attempts, 1);
    }

    #[tokio::test]
    async fn the_worker_counts_a_panicked_task_and_buries_it_after_the_schedule() {
        let (_dir, d) = setup(TestFault::PanicAfterSend);
        let cancel = CancellationToken::new();
        let (_tx, rx) = mpsc::unbounded_channel();
        let worker = tokio::spawn(
            d.clone()
                .run_destination("hooks".into(), rx, cancel.clone()),
        );
        let start = std::time::Instant::now();
        while d.store.dead_len() == 0 && start.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
        worker.await.unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not re-queued on a fixed delay: the schedule's 10 ms waits were followed"
        );
        assert_dead_after_the_schedule(&d);
    }
}
