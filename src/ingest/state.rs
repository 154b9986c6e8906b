//! What ingest keeps about each resource between polls: the checkpoint (where the next poll
//! asks from), the silent baseline's progress and the last poll's status. The store keeps them
//! as JSON under the clinic and resource; the serde attributes here are that format, so a field
//! is only ever added, with `#[serde(default)]`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a resource's polling stands: the only state that decides what the next poll asks for.
///
/// Its instants are on the API's clock whenever the API sent a usable `Date` (see
/// [`crate::ingest::poll`]): the since values are compared with the records' change times, which
/// come from that clock.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Nothing from before this instant is ever asked for (`start_from`, fixed at first start).
    pub(crate) origin: DateTime<Utc>,
    /// When the last poll whose pages were all stored began; the next poll asks from here minus the
    /// overlap (never before `origin`).
    pub last_success_start: Option<DateTime<Utc>>,
    /// The API's clock minus ours, in milliseconds, measured by the last successful poll. `None`
    /// when that poll had no usable `Date` (or the store predates this field): then
    /// `last_success_start` is on our clock, and the next since reaches back twice the overlap.
    #[serde(default)]
    pub skew_ms: Option<i64>,
    /// `origin` is still on our clock (`start_from: now`, fixed before the API's clock was
    /// known); the first usable `Date` moves it onto the API's.
    #[serde(default)]
    pub origin_on_our_clock: bool,
}

/// How much further back a since reaches when its checkpoint is on our clock, not the API's.
pub(crate) const UNKNOWN_CLOCK_OVERLAP_FACTOR: u32 = 2;

impl Checkpoint {
    /// The instant the next poll asks from.
    pub fn since(&self, overlap: std::time::Duration) -> DateTime<Utc> {
        match self.last_success_start {
            Some(start) => {
                let overlap = match self.skew_ms {
                    Some(_) => overlap,
                    None => overlap.saturating_mul(UNKNOWN_CLOCK_OVERLAP_FACTOR),
                };
                let back = chrono::Duration::from_std(overlap).unwrap_or(chrono::Duration::zero());
                (start - back).max(self.origin)
            }
            None => self.origin,
        }
    }
}

/// Where a resource's silent baseline stands (see [`crate::ingest::baseline`]). Written with the
/// first checkpoint, advanced with each page it stores, finished once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The since it reads from (`clinicea.baseline.since`).
    pub(crate) since: DateTime<Utc>,
    /// The page to read next: where a baseline stopped by a crash or shutdown resumes.
    pub(crate) next_page: u32,
    /// Pages stored.
    #[serde(default)]
    pub pages: u64,
    /// Records stored.
    #[serde(default)]
    pub(crate) records: u64,
    /// When it began.
    pub(crate) started: DateTime<Utc>,
    /// When its last page was stored; `None` while it runs.
    #[serde(default)]
    pub finished: Option<DateTime<Utc>>,
}

impl Baseline {
    /// A baseline about to read from `since`, starting at page `first_page`.
    pub(crate) fn new(since: DateTime<Utc>, first_page: u32, started: DateTime<Utc>) -> Baseline {
        Baseline {
            since,
            next_page: first_page,
            pages: 0,
            records: 0,
            started,
            finished: None,
        }
    }
}

/// The outcome of the last poll of a resource, for `status`, `/readyz` and the watchdog.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PollStatus {
    /// When the last poll began.
    pub(crate) last_started: Option<DateTime<Utc>>,
    /// When the last poll ended.
    pub(crate) last_finished: Option<DateTime<Utc>>,
    /// When the last successful poll ended.
    pub(crate) last_success: Option<DateTime<Utc>>,
    /// The last poll's error, or `None` if it succeeded.
    pub last_error: Option<String>,
    /// Failed polls since the last success.
    pub consecutive_failures: u32,
    /// Records fetched by the last poll.
    pub(crate) last_records: u64,
    /// Changes detected by the last poll.
    pub(crate) last_changes: u64,
    /// Pages fetched by the last poll.
    pub(crate) last_pages: u32,
    /// The API's clock minus ours, in milliseconds, as the last poll measured it (`None`: not
    /// measured, or the `Date` was missing or absurd).
    #[serde(default)]
    pub clock_skew_ms: Option<i64>,
    /// The last poll's first response had no usable `Date` (missing, unparseable or absurd).
    #[serde(default)]
    pub api_date_unusable: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_baseline_record_without_its_counters_still_loads() {
        let b: Baseline = serde_json::from_str(
            r#"{"since":"2000-01-01T00:00:00Z","next_page":3,"started":"2026-12-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(
            (b.next_page, b.pages, b.records, b.finished),
            (3, 0, 0, None)
        );
    }

    #[test]
    fn checkpoint_since_never_before_origin() {
        let origin = DateTime::parse_from_rfc3339("2026-11-29T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut cp = Checkpoint {
            origin,
            last_success_start: None,
            skew_ms: Some(0),
            origin_on_our_clock: false,
        };
        let overlap = std::time::Duration::from_secs(120);
        assert_eq!(cp.since(overlap), origin);
        cp.last_success_start = Some(origin + chrono::Duration::seconds(60));
        assert_eq!(cp.since(overlap), origin);
        cp.last_success_start = Some(origin + chrono::Duration::seconds(600));
        assert_eq!(cp.since(overlap), origin + chrono::Duration::seconds(480));
        // On our clock (no usable Date), twice the overlap.
        cp.skew_ms = None;
        assert_eq!(cp.since(overlap), origin + chrono::Duration::seconds(360));
    }

    #[test]
    fn a_checkpoint_stored_before_the_clock_fields_still_loads() {
        let old =
            br#"{"origin":"2026-11-29T10:00:00Z","last_success_start":"2026-11-29T11:00:00Z"}"#;
        let cp: Checkpoint = serde_json::from_slice(old).unwrap();
        assert_eq!(cp.skew_ms, None);
        assert!(!cp.origin_on_our_clock);
        let status: PollStatus = serde_json::from_slice(br#"{"last_started":null,"last_finished":null,"last_success":null,"last_error":null,"consecutive_failures":0,"last_records":0,"last_changes":0,"last_pages":0}"#).unwrap();
        assert_eq!(status.clock_skew_ms, None);
    }

    /// The stored form is the store's format: these bytes are what older stores hold.
    #[test]
    fn the_stored_forms_are_unchanged() {
        let t = DateTime::parse_from_rfc3339("2026-11-29T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let cp = Checkpoint {
            origin: t,
            last_success_start: Some(t),
            skew_ms: Some(-1500),
            origin_on_our_clock: true,
        };
        assert_eq!(
            serde_json::to_string(&cp).unwrap(),
            r#"{"origin":"2026-11-29T10:00:00Z","last_success_start":"2026-11-29T10:00:00Z","skew_ms":-1500,"origin_on_our_clock":true}"#
        );
        let mut b = Baseline::new(t, 1, t);
        b.finished = Some(t);
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"since":"2026-11-29T10:00:00Z","next_page":1,"pages":0,"records":0,"started":"2026-11-29T10:00:00Z","finished":"2026-11-29T10:00:00Z"}"#
        );
        let status = PollStatus {
            last_error: Some("x".into()),
            consecutive_failures: 2,
            clock_skew_ms: Some(3),
            ..PollStatus::default()
        };
        assert_eq!(
            serde_json::to_string(&status).unwrap(),
            r#"{"last_started":null,"last_finished":null,"last_success":null,"last_error":"x","consecutive_failures":2,"last_records":0,"last_changes":0,"last_pages":0,"clock_skew_ms":3,"api_date_unusable":false}"#
        );
    }
}
