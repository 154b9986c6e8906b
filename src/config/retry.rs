//! Retry schedules: the default and each destination's own ([`RetryPolicy`]), read from `retry:`
//! sections by `config::load`. How a schedule turns a failed attempt into a wait is
//! delivery's business (`deliver::outcome`).

use std::time::Duration;

/// The jitter a `retry:` section without `jitter:` gets.
pub(crate) const DEFAULT_JITTER: f64 = 0.2;

/// When to try again: a schedule of waits with relative jitter.
///
/// The schedule's length is the number of retries: after the first attempt fails the worker waits
/// `schedule[0]`, after the second `schedule[1]`, and once the last wait has been used up the next
/// failure goes to the dead letters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RetryPolicy {
    /// Waits between attempts.
    pub(crate) schedule: Vec<Duration>,
    /// Relative jitter, 0.0 to 1.0: each wait is scaled by a uniform factor in `[1 - j, 1 + j]` so
    /// that many deliveries failing together do not come back together. Out-of-range values are
    /// clamped.
    pub(crate) jitter: f64,
}

impl Default for RetryPolicy {
    /// 5s, 5m, 30m, 2h, 5h, 10h, 10h with 20% jitter: about 28 hours from first failure to dead
    /// letter, so a receiver that is down over a night or a weekend day still gets everything.
    fn default() -> Self {
        const M: u64 = 60;
        const H: u64 = 60 * M;
        RetryPolicy {
            schedule: [5, 5 * M, 30 * M, 2 * H, 5 * H, 10 * H, 10 * H]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            jitter: DEFAULT_JITTER,
        }
    }
}

impl RetryPolicy {
    /// How many attempts a delivery gets in total: the first plus one per schedule step. The
    /// worker never counts them (it stops when `next_delay` has no step left); tests pin it.
    #[cfg(test)]
    pub(crate) fn max_attempts(&self) -> u32 {
        u32::try_from(self.schedule.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }
}
