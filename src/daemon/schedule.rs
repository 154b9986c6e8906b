//! When a poll loop polls next: adaptive polling's gap ([`next_gap`]) and the wait that a poll
//! trigger can cut short ([`until_due`]), both pure enough to test with paused time.
//!
//! The schedule runs from poll start to poll start (a fleet's spread holds however long each
//! poll takes). After a poll that found changes the next comes `poll_interval_min` after it
//! started; each quiet (or failed) poll doubles the gap, up to `poll_interval`. A resource where
//! nothing happens therefore polls at its `poll_interval` exactly as before, and one where
//! something just happened is looked at again soon, when a follow-up edit is most likely. A
//! reload (or a clinic taken over by lease) starts each gap at the ceiling again.
//!
//! The request bound this keeps, per resource: scheduled polls start at least
//! `poll_interval_min` apart, so at most `poll_interval / poll_interval_min` times the base rate
//! (and only while changes keep coming: a quiet resource is back at its base rate after
//! `log2(poll_interval / poll_interval_min)` polls); a poll caused by a trigger starts at least
//! [`TRIGGER_MIN_GAP`] after the previous poll of that resource started. A clinic's requests in
//! flight stay capped by its `max_concurrent_requests` and the fleet's, whatever the schedule.

use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The shortest gap between the start of a resource's last poll and a poll a trigger causes.
/// A trigger inside the gap is not dropped: it makes the poll come at the gap's end. Two
/// seconds keep a flood of callbacks (a bulk import in Clinicea sends one per record) to one
/// poll every two seconds per resource, while a single trigger still delivers within a second
/// or two.
pub(crate) const TRIGGER_MIN_GAP: Duration = Duration::from_secs(2);

/// How long a poll waits after the latest trigger for more of its burst: triggers of one burst
/// (several callbacks for one save in Clinicea, or a retried request) arrive within
/// milliseconds of each other, and this quiet makes them one poll instead of two, while a lone
/// trigger polls after only this long.
pub(crate) const TRIGGER_QUIET: Duration = Duration::from_millis(100);

/// The longest a trigger waits for its burst to go quiet ([`TRIGGER_QUIET`]): a stream of
/// triggers with no pause in it still polls this long after its first.
pub(crate) const TRIGGER_SETTLE: Duration = Duration::from_millis(250);

/// The gap from the start of the poll that just ended to the start of the next: `min` after a
/// poll that found changes, else twice the previous gap, never more than `max` nor less than
/// `min`. With `min == max` (the default) it is always `max`.
pub(crate) fn next_gap(
    previous: Duration,
    changed: bool,
    min: Duration,
    max: Duration,
) -> Duration {
    let min = min.min(max);
    if changed {
        min
    } else {
        previous.saturating_mul(2).clamp(min, max)
    }
}

/// When a poll caused by triggers may start, the first of them having arrived at `first` and
/// the latest at `latest`: once [`TRIGGER_QUIET`] has passed since the latest, or
/// [`TRIGGER_SETTLE`] since the first if that is sooner, and no sooner than
/// [`TRIGGER_MIN_GAP`] after the last poll started (`None`: none in this loop).
pub(crate) fn trigger_due(first: Instant, latest: Instant, last_start: Option<Instant>) -> Instant {
    let settled = (latest + TRIGGER_QUIET).min(first + TRIGGER_SETTLE);
    match last_start {
        Some(t) => settled.max(t + TRIGGER_MIN_GAP),
        None => settled,
    }
}

/// Waits for the next trigger; never returns when there is no channel or it is closed (the
/// clinic left the config).
async fn fired(trigger: &mut Option<watch::Receiver<u64>>) {
    let ok = match trigger.as_mut() {
        Some(rx) => rx.changed().await.is_ok(),
        None => false,
    };
    if !ok {
        std::future::pending::<()>().await;
    }
}

/// Waits until the next poll is due: `next` (the schedule), or earlier when `trigger` fires
/// first (then at [`trigger_due`] of the burst it starts, or `next` if that comes sooner).
/// Every trigger that arrived before this returns is covered by the poll that follows: the
/// caller marks the channel seen when that poll starts, so triggers during the poll make
/// exactly one more.
pub(crate) async fn until_due(
    trigger: &mut Option<watch::Receiver<u64>>,
    last_start: Option<Instant>,
    next: Instant,
) {
    tokio::select! {
        _ = tokio::time::sleep_until(next) => return,
        _ = fired(trigger) => {}
    }
    let first = Instant::now();
    let mut latest = first;
    loop {
        let at = trigger_due(first, latest, last_start).min(next);
        tokio::select! {
            _ = tokio::time::sleep_until(at) => return,
            _ = fired(trigger) => latest = Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_change_polls_at_the_floor_and_quiet_polls_double_the_gap_up_to_the_ceiling() {
        let (min, max) = (5 * S, 60 * S);
        let mut gap = max;
        gap = next_gap(gap, true, min, max);
        assert_eq!(gap, 5 * S);
        let mut gaps = Vec::new();
        for _ in 0..6 {
            gap = next_gap(gap, false, min, max);
            gaps.push(gap.as_secs());
        }
        assert_eq!(gaps, [10, 20, 40, 60, 60, 60]);
        // A change in the middle of the back-off starts it again at the floor.
        assert_eq!(next_gap(40 * S, true, min, max), 5 * S);
        // The default (min == max): the plain interval, changes or not.
        assert_eq!(next_gap(max, true, max, max), max);
        assert_eq!(next_gap(max, false, max, max), max);
        // A floor above the ceiling (never accepted by the config) is cut to it.
        assert_eq!(next_gap(max, true, 2 * max, max), max);
    }

    #[test]
    fn a_trigger_waits_for_quiet_at_most_the_settle_and_keeps_the_minimum_gap_to_the_last_poll() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        // A lone trigger: the quiet after it.
        assert_eq!(trigger_due(now, now, None), now + TRIGGER_QUIET);
        // The latest of a burst moves it on, up to the settle after the first.
        assert_eq!(
            trigger_due(now, now + ms(60), None),
            now + ms(60) + TRIGGER_QUIET
        );
        assert_eq!(trigger_due(now, now + ms(240), None), now + TRIGGER_SETTLE);
        // The last poll started long ago: only the quiet.
        assert_eq!(
            trigger_due(now, now, Some(now - 10 * S)),
            now + TRIGGER_QUIET
        );
        // It started half a second ago: the end of the minimum gap.
        let last = now - ms(500);
        assert_eq!(trigger_due(now, now, Some(last)), last + TRIGGER_MIN_GAP);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_trigger_the_wait_ends_at_the_schedule() {
        let start = Instant::now();
        let (_tx, rx) = watch::channel(0u64);
        let mut rx = Some(rx);
        until_due(&mut rx, Some(start), start + 60 * S).await;
        assert_eq!(start.elapsed(), 60 * S);
        let mut none = None;
        until_due(&mut none, Some(start), start + 90 * S).await;
        assert_eq!(start.elapsed(), 90 * S);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_triggers_ends_the_wait_once_after_its_quiet_or_the_gap() {
        let start = Instant::now();
        let (tx, rx) = watch::channel(0u64);
        let mut rx = Some(rx);
        // A burst 10 s into a 60 s wait: the poll comes the quiet after it.
        let burst = tokio::spawn({
            let tx = tx.clone();
            async move {
                tokio::time::sleep(10 * S).await;
                for _ in 0..100 {
                    tx.send_modify(|n| *n += 1);
                }
            }
        });
        until_due(&mut rx, Some(start), start + 60 * S).await;
        assert_eq!(start.elapsed(), 10 * S + TRIGGER_QUIET);
        burst.await.unwrap();
        // The poll starts: the burst is seen, and nothing more is pending.
        let poll_start = Instant::now();
        rx.as_mut().unwrap().borrow_and_update();
        assert!(!rx.as_ref().unwrap().has_changed().unwrap());
        // A trigger right after that poll started waits for the end of the minimum gap.
        tx.send_modify(|n| *n += 1);
        until_due(&mut rx, Some(poll_start), poll_start + 60 * S).await;
        assert_eq!(Instant::now() - poll_start, TRIGGER_MIN_GAP);
        // A trigger that would come after the schedule's own poll: the schedule wins.
        let p = Instant::now();
        rx.as_mut().unwrap().borrow_and_update();
        tx.send_modify(|n| *n += 1);
        until_due(&mut rx, Some(p), p + S).await;
        assert_eq!(Instant::now() - p, S);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_of_triggers_without_a_pause_polls_a_settle_after_its_first() {
        let start = Instant::now();
        let (tx, rx) = watch::channel(0u64);
        let mut rx = Some(rx);
        // One trigger every 10 ms, for longer than the settle: never quiet for long enough.
        let stream = tokio::spawn(async move {
            for _ in 0..100 {
                tx.send_modify(|n| *n += 1);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        until_due(&mut rx, None, start + 60 * S).await;
        assert_eq!(start.elapsed(), TRIGGER_SETTLE);
        stream.abort();
    }
}
