//! The step: one attempt of one outbox entry, and its outcome recorded.
//!
//! [`Deliverer::attempt`] loads the entry, sends it through its destination's sink, and records
//! what happened: on success the entry and its attempts log go; on a retryable failure the
//! attempt is logged and the entry rescheduled by its destination's retry policy; on a permanent
//! failure, or once the schedule is spent, it moves to the dead letters. A panic inside an attempt
//! is a failed attempt like any other ([`PANIC_REASON`]). The scheduler that decides which entry
//! is attempted when is [`crate::deliver::worker`].

use super::{Deliverer, Destination, Event, Target};
use crate::deliver::outcome::AttemptReport;
use crate::model::Verdict;
use crate::outbox::entry::{AttemptLog, DeadLetter, Hold, OutboxEntry};
use crate::outbox::store::{DestHealth, Store, StoreError};
use crate::route::plan::Payload;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::Instrument;

/// The reason recorded for an attempt that panicked. A panic is a bug, not the receiver's answer,
/// but it counts as a failed attempt like any other: the entry follows its retry schedule and
/// ends in the dead letters instead of being tried again forever.
pub(crate) const PANIC_REASON: &str = "the delivery attempt panicked (a bug in clinicea-notifier)";

/// What [`Deliverer::attempt`] did with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Delivered and removed from the outbox.
    Delivered,
    /// Rescheduled for this Unix ms.
    Retry(i64),
    /// Not attempted: held by the destination's quiet hours until this Unix ms.
    Held(i64),
    /// Moved to the dead letters.
    Dead,
    /// Not in the outbox any more (delivered or re-driven elsewhere).
    Gone,
}

/// Runs a pinned future (`Box::pin(f)` or `std::pin::pin!(f)`) and turns a panic inside it into
/// `Err(())`, so one attempt's bug is recorded against that attempt instead of unwinding through
/// the bookkeeping after it, or through the worker's lane that runs it.
pub(crate) struct CatchPanic<P>(pub(crate) P);

impl<P: Future + Unpin> Future for CatchPanic<P> {
    type Output = Result<P::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = Pin::new(&mut self.0);
        // After a panic the inner future is never polled again (this future is then done), so
        // no broken state can be observed.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
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
    AttemptReport::unanswered(
        Verdict::Retry {
            reason: PANIC_REASON.to_string(),
            retry_after: None,
        },
        duration,
    )
}

/// Whether a permanent failure means the destination itself is gone (a deleted chat webhook).
fn destination_gone(status: Option<u16>, dest: &Destination) -> bool {
    matches!(dest.target, Target::Chat { .. }) && matches!(status, Some(404) | Some(410))
}

/// The reason of an entry whose destination is no longer configured.
/// What a claim adds to an attempt's own time limit: the writes before and after the attempt.
/// A claim that outlives its attempt only delays a retry elsewhere after a crash; one that
/// ended before its attempt did could let a second replica send the same entry meanwhile.
const CLAIM_MARGIN: Duration = Duration::from_secs(30);
/// An email attempt's time limit is the SMTP session's (sending to a slow relay included).
const EMAIL_ATTEMPT_BOUND: Duration = Duration::from_secs(120);

/// How long a worker claims an entry for one attempt of `dest`.
fn claim_hold(dest: &Destination) -> Duration {
    let attempt = match &dest.target {
        Target::Webhook(w) => w.timeout,
        Target::Chat { timeout, .. } => *timeout,
        Target::Nats(n) => n.timeout,
        Target::Amqp(a) => a.timeout,
        Target::Email { .. } => EMAIL_ATTEMPT_BOUND,
    };
    attempt + CLAIM_MARGIN
}

fn orphan_reason(destination: &str) -> String {
    format!("destination {destination} is no longer in the config")
}

impl Deliverer {
    async fn send(&self, dest: &Destination, entry: &OutboxEntry) -> AttemptReport {
        #[cfg(test)]
        if self.fault == super::TestFault::PanicInSend {
            panic!("test fault: panic in send");
        }
        let fail =
            |reason: String| AttemptReport::unanswered(Verdict::Fail { reason }, Duration::ZERO);
        let http = self.http.get(&dest.name);
        match (&dest.target, &entry.payload, http) {
            (Target::Webhook(t), Payload::Webhook { body }, Some(http)) => {
                super::webhook::send(
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
            ) => super::chat::send(http, *kind, url, body.clone().into_bytes(), *timeout).await,
            (Target::Nats(_), Payload::Publish { subject, body }, _) => {
                match self.brokers.get(&dest.name) {
                    Some(super::Broker::Nats(p)) => {
                        super::nats::send(p, subject, &entry.webhook_id, body.as_bytes()).await
                    }
                    _ => fail(format!("no NATS connection for destination {}", dest.name)),
                }
            }
            (Target::Amqp(_), Payload::Publish { subject, body }, _) => {
                match self.brokers.get(&dest.name) {
                    Some(super::Broker::Amqp(p)) => {
                        super::amqp::send(p, subject, &entry.webhook_id, body.as_bytes()).await
                    }
                    _ => fail(format!("no AMQP connection for destination {}", dest.name)),
                }
            }
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
    /// letter), needs no attempt. `fresh` is the entry as its wake carried it when it was just
    /// committed: on sled it is used once the store confirms the entry is still queued (only an
    /// attempt rewrites a queued entry, and this is its first), instead of a read and a decode.
    async fn load(
        &self,
        destination: &str,
        seq: u64,
        fresh: Option<Arc<OutboxEntry>>,
    ) -> Result<Loaded, StoreError> {
        let dest = self.destinations.get(destination).cloned();
        let hold = dest.as_deref().map_or(CLAIM_MARGIN, claim_hold);
        let stored = match (fresh, &self.store) {
            (Some(entry), Store::Sled(s)) => s
                .outbox_contains(destination, seq)?
                .then(|| Arc::unwrap_or_clone(entry)),
            // A claim, not a read: on PostgreSQL another replica's worker may have the same
            // entry in its queue, and only one of them may attempt it (`None`: gone, or theirs).
            _ => self.store.outbox_claim(destination, seq, hold).await?,
        };
        let Some(entry) = stored else {
            return Ok(Loaded::Done(Step::Gone));
        };
        let Some(dest) = dest else {
            self.to_dead(&entry, orphan_reason(destination)).await?;
            return Ok(Loaded::Done(Step::Dead));
        };
        let span = tracing::info_span!("delivery", clinic = %entry.clinic, destination = %destination, webhook_id = %entry.webhook_id, resource = %entry.resource, id = %entry.record_id, rule = %entry.rule, attempt = entry.attempts + 1);
        Ok(Loaded::Ready(Box::new(entry), dest, span))
    }

    /// Makes one attempt of one outbox entry and records the outcome: removes it on success,
    /// reschedules it on a retryable failure, moves it to the dead letters on a permanent one or
    /// when its schedule is spent.
    pub(crate) async fn attempt(
        &self,
        destination: &str,
        seq: u64,
        fresh: Option<Arc<OutboxEntry>>,
    ) -> Result<Step, StoreError> {
        let (entry, dest, span) = match self.load(destination, seq, fresh).await? {
            Loaded::Ready(entry, dest, span) => (*entry, dest, span),
            Loaded::Done(step) => return Ok(step),
        };
        let now = self.now_ms();
        if let Some(until) = self.quiet_until(&dest, &entry.clinic, now) {
            // Due since its hold began, or since its own time when it was not held yet.
            let due_ms = entry
                .held
                .map_or(entry.next_attempt_ms, |h| h.due_ms)
                .min(now);
            return self.hold(entry, due_ms, until).instrument(span).await;
        }
        let started_ms = now;
        let started = std::time::Instant::now();
        // `instrument`, not `enter`: an entered span guard held across an await leaks the span into
        // whatever else runs on this thread meanwhile.
        let sent = CatchPanic(std::pin::pin!(self.send(&dest, &entry)))
            .instrument(span.clone())
            .await;
        #[cfg(test)]
        if self.fault == super::TestFault::PanicAfterSend {
            panic!("test fault: panic after send");
        }
        let report = span.in_scope(|| {
            sent.unwrap_or_else(|()| {
                tracing::error!("{PANIC_REASON}; counted as a failed attempt");
                panic_report(started.elapsed())
            })
        });
        self.record(&dest, seq, entry, report, started_ms)
            .instrument(span)
            .await
    }

    /// Holds an entry that is due during its destination's quiet hours until they end: written
    /// back with its next attempt at `until` (which also frees a PostgreSQL claim), its attempt
    /// count, retry budget and attempts log untouched, since nothing was attempted.
    async fn hold(
        &self,
        mut entry: OutboxEntry,
        due_ms: i64,
        until: i64,
    ) -> Result<Step, StoreError> {
        entry.next_attempt_ms = until;
        entry.held = Some(Hold {
            due_ms,
            until_ms: until,
        });
        self.store.outbox_put(&entry).await?;
        let until_utc = chrono::DateTime::from_timestamp_millis(until).unwrap_or_default();
        tracing::info!(held_until = %until_utc.to_rfc3339(), "held by quiet hours");
        Ok(Step::Held(until))
    }

    /// Counts an attempt whose task panicked before it could record its outcome: the entry's
    /// attempt count goes up and it follows its retry schedule, like any failed attempt.
    pub(crate) async fn record_panicked(
        &self,
        destination: &str,
        seq: u64,
    ) -> Result<Step, StoreError> {
        let (entry, dest, span) = match self.load(destination, seq, None).await? {
            Loaded::Ready(entry, dest, span) => (*entry, dest, span),
            Loaded::Done(step) => return Ok(step),
        };
        span.in_scope(|| tracing::error!("{PANIC_REASON}; counted as a failed attempt"));
        self.record(
            &dest,
            seq,
            entry,
            panic_report(Duration::ZERO),
            self.now_ms(),
        )
        .instrument(span)
        .await
    }

    /// Records one attempt's outcome: removes the entry on success, reschedules it on a retryable
    /// failure, moves it to the dead letters on a permanent one or when its schedule is spent.
    async fn record(
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
        metrics::histogram!(crate::telemetry::metric::ATTEMPT_DURATION, &labels)
            .record(report.duration.as_secs_f64());
        // The attempts log keeps failed attempts only (a success removes the entry and its log).
        let log = |report: &AttemptReport, attempt: u32| AttemptLog {
            at_ms: started_ms,
            attempt,
            status: report.status,
            duration_ms: report.duration.as_millis() as u64,
            response: report.response.clone(),
            verdict: report.verdict.clone(),
        };
        match report.verdict {
            Verdict::Success => {
                let detail = match &entry.payload {
                    Payload::Email(m) => m.to.clone(),
                    _ => String::new(),
                };
                self.store.delivered(destination, seq).await?;
                let was_failing = self
                    .failing
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(destination);
                if was_failing {
                    self.store
                        .set_destination_failing(destination, None)
                        .await?;
                    tracing::info!(destination = %destination, "delivering again; no longer marked failing");
                }
                self.end_streak(destination).await;
                metrics::counter!(crate::telemetry::metric::DELIVERIES, "clinic" => entry.clinic.clone(), "destination" => destination.to_string(), "outcome" => "delivered").increment(1);
                metrics::histogram!(crate::telemetry::metric::DELIVERY_LATENCY, &labels)
                    .record((self.now_ms() - entry.created_ms).max(0) as f64 / 1000.0);
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
                    .log_attempt(seq, &log(&report, entry.attempts))
                    .await?;
                let reason = reason.clone();
                self.note_streak(destination, &reason).await;
                let delay =
                    dest.retry
                        .next_delay(entry.attempts, retry_after, &mut rand::thread_rng());
                match delay {
                    Some(d) => {
                        let now = self.now_ms();
                        // A retry that would fall in quiet hours waits for their end instead.
                        let due = now + d.as_millis() as i64;
                        entry.held =
                            self.quiet_until(dest, &entry.clinic, due)
                                .map(|until_ms| Hold {
                                    due_ms: due,
                                    until_ms,
                                });
                        entry.next_attempt_ms = entry.held.map_or(due, |h| h.until_ms);
                        let d = Duration::from_millis((entry.next_attempt_ms - now).max(0) as u64);
                        self.store.outbox_put(&entry).await?;
                        metrics::counter!(crate::telemetry::metric::DELIVERIES, "clinic" => entry.clinic.clone(), "destination" => destination.to_string(), "outcome" => "retry").increment(1);
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
                        self.to_dead(&entry, reason).await?;
                        Ok(Step::Dead)
                    }
                }
            }
            Verdict::Fail { ref reason } => {
                if destination_gone(report.status, dest) {
                    tracing::error!(destination = %destination, "the destination's webhook is gone ({reason}); marked failing in status");
                    self.store
                        .set_destination_failing(
                            destination,
                            Some(&DestHealth {
                                since: chrono::Utc::now(),
                                reason: reason.clone(),
                            }),
                        )
                        .await?;
                    self.failing
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(destination.to_string());
                }
                self.store
                    .log_attempt(seq, &log(&report, entry.attempts))
                    .await?;
                let reason = reason.clone();
                self.note_streak(destination, &reason).await;
                self.to_dead(&entry, reason).await?;
                Ok(Step::Dead)
            }
        }
    }

    /// Counts a failed attempt in the destination's run of failures (for the operator's alerts).
    /// Advisory: a store error is logged, and the attempt's own bookkeeping goes on.
    async fn note_streak(&self, destination: &str, reason: &str) {
        self.streaks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(destination.to_string());
        if let Err(e) = self
            .store
            .note_failure(destination, chrono::Utc::now(), reason)
            .await
        {
            tracing::warn!(destination = %destination, "cannot count the failed attempt for the alerts: {e}");
        }
    }

    /// Ends the destination's run of failures after a success. On sled only when this process
    /// saw one; on PostgreSQL always (another replica may have started it).
    async fn end_streak(&self, destination: &str) {
        let had = self
            .streaks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(destination);
        if had || self.store.postgres().is_some() {
            if let Err(e) = self.store.clear_failure_streak(destination).await {
                tracing::warn!(destination = %destination, "cannot end the run of failures for the alerts: {e}");
            }
        }
    }

    /// Moves an entry to the dead letters, counted and announced.
    async fn to_dead(&self, entry: &OutboxEntry, reason: String) -> Result<(), StoreError> {
        tracing::error!(destination = %entry.destination, webhook_id = %entry.webhook_id, %reason, "delivery moved to the dead letters");
        metrics::counter!(crate::telemetry::metric::DELIVERIES, "clinic" => entry.clinic.clone(), "destination" => entry.destination.clone(), "outcome" => "dead").increment(1);
        metrics::counter!(crate::telemetry::metric::DEAD_LETTERS_CREATED, "clinic" => entry.clinic.clone(), "destination" => entry.destination.clone()).increment(1);
        let dead = DeadLetter {
            entry: entry.clone(),
            reason: reason.clone(),
            died_ms: self.now_ms(),
        };
        self.store.outbox_to_dead(&dead).await?;
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
    pub(crate) async fn bury_orphans(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for dest in self.store.outbox_destinations().await? {
            if self.destinations.contains_key(&dest) {
                continue;
            }
            for (_, entry) in self.store.outbox_entries(&dest).await? {
                self.to_dead(&entry, orphan_reason(&dest)).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}
