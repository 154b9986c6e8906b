//! Quiet hours: when a destination is not sent to, in the clinic's own time zone, and when the
//! quiet time it is in ends. [`QuietHours`] is what a destination's `quiet_hours:` compiles to
//! ([`compile`] validates it); [`QuietHours::hold_until`] is the one piece of arithmetic the
//! worker, `status` and `test-rule` share.
//!
//! The meaning, as the README states it:
//!
//! - `from` / `to` (`"HH:MM"`, 24-hour) is a nightly window that applies every day: quiet from
//!   `from` up to, not including, `to`. When `to` is earlier than `from` the window crosses
//!   midnight (20:00 → 08:00 the next morning). Both or neither must be given, and they differ.
//! - `days` (`mon` … `sun`) are whole calendar days that are quiet, 00:00 to 24:00, in addition
//!   to the nightly window. `days` alone (no `from`/`to`) is allowed: quiet on weekends only.
//! - Quiet time is the union of the two, so Friday 20:00 → Saturday 08:00, Saturday, Sunday and
//!   Sunday 20:00 → Monday 08:00 are one stretch: a delivery held on Saturday goes out on Monday
//!   at 08:00.
//! - Everything is read on the clinic's wall clock. A window whose end does not exist on that
//!   day (it falls in a spring-forward gap) ends at the first instant after the gap; an end that
//!   happens twice (in a fall-back fold) is the first occurrence after the held time. In a fold
//!   the clock shows the window's times twice, and it is quiet both times.

use crate::config::problem::Problem;
use crate::config::raw::{RawDestination, RawQuietHours};
use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;
use std::fmt;

/// The longest spring-forward gap looked across when a window's end falls in one (the largest
/// ever was a whole day, Samoa's in 2011).
const MAX_GAP_MINUTES: i64 = 26 * 60;

/// A destination's validated quiet hours (see the module doc for the meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuietHours {
    /// The nightly window `[from, to)`, crossing midnight when `to < from`; `None`: days only.
    pub(crate) window: Option<(NaiveTime, NaiveTime)>,
    /// The whole days that are quiet, as a bit per weekday (bit 0 Monday … bit 6 Sunday).
    pub(crate) days: u8,
}

/// A weekday's bit in [`QuietHours::days`].
fn bit(d: Weekday) -> u8 {
    1 << d.num_days_from_monday()
}

impl QuietHours {
    /// Whether the clinic's wall clock reading `local` is quiet.
    pub(crate) fn quiet_at(&self, local: NaiveDateTime) -> bool {
        self.days & bit(local.weekday()) != 0
            || self.window.is_some_and(|(from, to)| {
                let t = local.time();
                if from < to {
                    from <= t && t < to
                } else {
                    t >= from || t < to
                }
            })
    }

    /// The wall-clock end of the quiet stretch `local` is in (`local` itself when it is not
    /// quiet): the latest end of the parts that hold it, followed through parts that begin
    /// exactly where the previous one ends (a night running into a quiet day).
    fn stretch_end(&self, local: NaiveDateTime) -> NaiveDateTime {
        let mut at = local;
        // Each step moves to the end of a day or a night; with at most six quiet days (seven
        // are refused) fifteen steps cover the longest stretch.
        for _ in 0..16 {
            let mut end = at;
            if self.days & bit(at.weekday()) != 0 {
                end = end.max(next_midnight(at));
            }
            if let Some((from, to)) = self.window {
                let t = at.time();
                let date = at.date();
                let night_end = if from < to {
                    (from <= t && t < to).then(|| date.and_time(to))
                } else if t >= from {
                    date.succ_opt().map(|d| d.and_time(to))
                } else if t < to {
                    Some(date.and_time(to))
                } else {
                    None
                };
                if let Some(e) = night_end {
                    end = end.max(e);
                }
            }
            if end == at {
                break;
            }
            at = end;
        }
        at
    }

    /// When a delivery due at `now` may be sent, if `now` is quiet in `tz`: the first instant
    /// after `now` at which the clinic's clock shows the end of the quiet stretch. `None` when
    /// `now` is not quiet (send it now).
    pub(crate) fn hold_until(&self, now: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let mut at = now;
        let mut held = false;
        // A second round only when the instant a gap or fold resolved to is quiet again (it
        // cannot be for the zones in use today; the bound makes sure of it).
        for _ in 0..8 {
            let local = at.with_timezone(&tz).naive_local();
            if !self.quiet_at(local) {
                break;
            }
            held = true;
            let next = resolve(self.stretch_end(local), tz, at);
            // Never go back or stand still, whatever the zone's rules.
            at = if next > at {
                next
            } else {
                at + Duration::minutes(1)
            };
        }
        held.then_some(at)
    }
}

/// The midnight that ends `local`'s day.
fn next_midnight(local: NaiveDateTime) -> NaiveDateTime {
    local
        .date()
        .succ_opt()
        .map_or(NaiveDateTime::MAX, |d| d.and_time(NaiveTime::MIN))
}

/// The first instant after `after` at which the clock of `tz` shows `wall`; a time skipped by a
/// spring-forward gap resolves to the first instant after the gap.
fn resolve(wall: NaiveDateTime, tz: Tz, after: DateTime<Utc>) -> DateTime<Utc> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, second) => {
            let first = first.with_timezone(&Utc);
            if first > after {
                first
            } else {
                second.with_timezone(&Utc)
            }
        }
        LocalResult::None => {
            // The wall time does not exist: walk forward to the first one that does, which is
            // the end of the gap (transitions fall on whole minutes in every zone in use).
            (1..=MAX_GAP_MINUTES)
                .find_map(|m| {
                    tz.from_local_datetime(&(wall + Duration::minutes(m)))
                        .earliest()
                })
                .map_or(after + Duration::hours(1), |t| t.with_timezone(&Utc))
        }
    }
}

impl fmt::Display for QuietHours {
    /// As `check` and `test-rule` print it: `20:00-08:00, all day sat sun`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some((from, to)) = self.window {
            parts.push(format!("{}-{}", from.format("%H:%M"), to.format("%H:%M")));
        }
        let days: Vec<&str> = DAYS
            .iter()
            .filter(|(_, d)| self.days & bit(*d) != 0)
            .map(|(n, _)| *n)
            .collect();
        if !days.is_empty() {
            parts.push(format!("all day {}", days.join(" ")));
        }
        f.write_str(&parts.join(", "))
    }
}

/// The day names `days` accepts (and their full forms, any case).
const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Mon),
    ("tue", Weekday::Tue),
    ("wed", Weekday::Wed),
    ("thu", Weekday::Thu),
    ("fri", Weekday::Fri),
    ("sat", Weekday::Sat),
    ("sun", Weekday::Sun),
];

/// A day name: `sat`, `Sat`, `saturday`.
fn parse_day(s: &str) -> Option<Weekday> {
    let s = s.trim().to_ascii_lowercase();
    DAYS.iter().find_map(|(short, d)| {
        let full = match d {
            Weekday::Mon => "monday",
            Weekday::Tue => "tuesday",
            Weekday::Wed => "wednesday",
            Weekday::Thu => "thursday",
            Weekday::Fri => "friday",
            Weekday::Sat => "saturday",
            Weekday::Sun => "sunday",
        };
        (s == *short || s == full).then_some(*d)
    })
}

/// A time of day, `HH:MM` (24-hour; `8:00` too). Midnight is `00:00`: `24:00` is refused, since
/// the window's end is exclusive and `00:00` already means the end of the day.
fn parse_time(s: &str) -> Result<NaiveTime, String> {
    let bad = || format!("{s:?} is not a time of day; write HH:MM, 24-hour, e.g. \"20:00\"");
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let digits = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
    if !digits(h) || h.len() > 2 || !digits(m) || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h == 24 && m == 0 {
        return Err(format!(
            "{s:?}: write \"00:00\" for midnight (the window ends just before it)"
        ));
    }
    NaiveTime::from_hms_opt(h, m, 0).ok_or_else(bad)
}

/// A destination's `quiet_hours:` as written, whatever its type (every type may set it).
pub(crate) fn raw_of(raw: &RawDestination) -> Option<&RawQuietHours> {
    match raw {
        RawDestination::Webhook(w) => w.quiet_hours.as_ref(),
        RawDestination::Email(e) => e.quiet_hours.as_ref(),
        RawDestination::Slack(c)
        | RawDestination::Teams(c)
        | RawDestination::Discord(c)
        | RawDestination::GoogleChat(c) => c.quiet_hours.as_ref(),
        RawDestination::Nats(n) => n.quiet_hours.as_ref(),
        RawDestination::Amqp(a) => a.quiet_hours.as_ref(),
    }
}

/// Validates a destination's `quiet_hours:` (at `key`, the destination on `line`); every
/// problem goes to `problems`, and `None` stands in for quiet hours that are wrong.
pub(crate) fn compile(
    raw: &RawQuietHours,
    line: Option<u64>,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<QuietHours> {
    let before = problems.len();
    let time = |t: &Option<crate::config::raw::Text>, k: &str, problems: &mut Vec<Problem>| {
        let t = t.as_ref()?;
        match parse_time(t) {
            Ok(v) => Some(v),
            Err(e) => {
                problems.push(Problem::at(t.line().or(line), format!("{key}.{k}"), e));
                None
            }
        }
    };
    let from = time(&raw.from, "from", problems);
    let to = time(&raw.to, "to", problems);
    let window = match (&raw.from, &raw.to) {
        (Some(_), None) => {
            problems.push(Problem::at(
                line,
                format!("{key}.to"),
                "`from` needs a `to`: quiet hours are a window, from one time to another",
            ));
            None
        }
        (None, Some(_)) => {
            problems.push(Problem::at(
                line,
                format!("{key}.from"),
                "`to` needs a `from`: quiet hours are a window, from one time to another",
            ));
            None
        }
        _ => match (from, to) {
            (Some(f), Some(t)) if f == t => {
                problems.push(Problem::at(
                    raw.to.as_ref().and_then(|t| t.line()).or(line),
                    format!("{key}.to"),
                    "`from` and `to` are the same time, which is either never or always quiet; \
                     list whole quiet days under `days`",
                ));
                None
            }
            (Some(f), Some(t)) => Some((f, t)),
            _ => None,
        },
    };
    let mut days = 0u8;
    for (i, d) in raw
        .days
        .as_ref()
        .map(|d| d.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let at = d.line().or(line);
        match parse_day(d) {
            Some(w) if days & bit(w) != 0 => problems.push(Problem::at(
                at,
                format!("{key}.days[{i}]"),
                format!("{:?} is listed twice", d.as_str()),
            )),
            Some(w) => days |= bit(w),
            None => problems.push(Problem::at(
                at,
                format!("{key}.days[{i}]"),
                format!(
                    "unknown day {:?}; use mon, tue, wed, thu, fri, sat, sun",
                    d.as_str()
                ),
            )),
        }
    }
    if raw.from.is_none()
        && raw.to.is_none()
        && raw.days.as_ref().is_none_or(|d| d.as_slice().is_empty())
    {
        problems.push(Problem::at(
            line,
            key,
            "quiet hours need `from` and `to` (a nightly window), `days` (whole quiet days), or both",
        ));
    }
    if days == 0x7f {
        problems.push(Problem::at(
            line,
            format!("{key}.days"),
            "every day of the week is quiet, so nothing would ever be sent",
        ));
    }
    (problems.len() == before).then_some(QuietHours { window, days })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn nightly(from: (u32, u32), to: (u32, u32)) -> QuietHours {
        QuietHours {
            window: Some((t(from.0, from.1), t(to.0, to.1))),
            days: 0,
        }
    }

    /// An instant given as the clinic's wall clock (unambiguous times only).
    fn wall(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const UTC: Tz = chrono_tz::UTC;
    const LONDON: Tz = chrono_tz::Europe::London;
    const NEW_YORK: Tz = chrono_tz::America::New_York;

    #[test]
    fn a_window_across_midnight_holds_until_the_next_morning() {
        let q = nightly((20, 0), (8, 0));
        // 2026-12-03 is a Thursday.
        assert_eq!(q.hold_until(wall(UTC, 2026, 12, 3, 19, 59), UTC), None);
        assert_eq!(
            q.hold_until(wall(UTC, 2026, 12, 3, 20, 0), UTC),
            Some(wall(UTC, 2026, 12, 4, 8, 0)),
            "from is inclusive"
        );
        assert_eq!(
            q.hold_until(wall(UTC, 2026, 12, 3, 23, 59), UTC),
            Some(wall(UTC, 2026, 12, 4, 8, 0))
        );
        assert_eq!(
            q.hold_until(wall(UTC, 2026, 12, 4, 3, 0), UTC),
            Some(wall(UTC, 2026, 12, 4, 8, 0)),
            "after midnight, the same morning"
        );
        assert_eq!(
            q.hold_until(wall(UTC, 2026, 12, 4, 8, 0), UTC),
            None,
            "to is exclusive"
        );
        assert_eq!(q.hold_until(wall(UTC, 2026, 12, 4, 12, 0), UTC), None);
    }

    #[test]
    fn a_window_within_one_day() {
        let q = nightly((12, 0), (13, 30));
        assert_eq!(q.hold_until(wall(UTC, 2026, 12, 3, 11, 59), UTC), None);
        assert_eq!(
            q.hold_until(wall(UTC, 2026, 12, 3, 12, 45), UTC),
            Some(wall(UTC, 2026, 12, 3, 13, 30))
        );
        assert_eq!(q.hold_until(wall(UTC, 2026, 12, 3, 13, 30), UTC), None);
        assert_eq!(q.hold_until(wall(UTC, 2026, 12, 3, 23, 0), UTC), None);
    }

    #[test]
    fn quiet_days_join_the_nights_around_them_into_one_stretch() {
        let q = QuietHours {
            window: Some((t(20, 0), t(8, 0))),
            days: bit(Weekday::Sat) | bit(Weekday::Sun),
        };
        let monday_8 = Some(wall(UTC, 2026, 12, 7, 8, 0));
        // Friday 2026-12-04 evening, Saturday noon, Sunday night: all until Monday 08:00.
        assert_eq!(q.hold_until(wall(UTC, 2026, 12, 4, 21, 0), UTC), monday_8);
        assert_eq!(q.hold_until(wall(UTC, 2026, 12, 5, 12, 0), UTC), monday_8);
        assert_eq!(q.hold_until(wall(UTC, 2026, 12, 6, 23, 0), UTC), monday_8);
        assert_eq!(q.hold_until(wall(UTC, 2026, 12, 7, 2, 0), UTC), monday_8);
        // Friday afternoon is not quiet.
        assert_eq!(q.hold_until(wall(UTC, 2026, 12, 4, 15, 0), UTC), None);
    }

    #[test]
    fn days_alone_hold_until_the_first_midnight_that_is_not_quiet() {
        let q = QuietHours {
            window: None,
            days: bit(Weekday::Sat) | bit(Weekday::Sun),
        };
        assert_eq!(q.hold_until(wall(UTC, 2026, 12, 4, 23, 59), UTC), None);
        assert_eq!(
            q.hold_until(wall(UTC, 2026, 12, 5, 0, 0), UTC),
            Some(wall(UTC, 2026, 12, 7, 0, 0))
        );
        assert_eq!(q.hold_until(wall(UTC, 2026, 12, 7, 0, 0), UTC), None);
    }

    #[test]
    fn the_clinic_zone_decides_not_utc() {
        let q = nightly((20, 0), (8, 0));
        let ny = NEW_YORK;
        // 2026-12-04 02:00 UTC is 21:00 in New York the evening before: quiet until 08:00 EST,
        // 13:00 UTC.
        assert_eq!(
            q.hold_until(utc("2026-12-04T02:00:00Z"), ny),
            Some(utc("2026-12-04T13:00:00Z"))
        );
        // 15:00 UTC is 10:00 in New York: not quiet, though it would be in Tokyo.
        assert_eq!(q.hold_until(utc("2026-12-04T15:00:00Z"), ny), None);
        assert!(q
            .hold_until(utc("2026-12-04T15:00:00Z"), chrono_tz::Asia::Tokyo)
            .is_some());
    }

    #[test]
    fn a_window_across_a_spring_forward_night_ends_at_its_wall_clock_time() {
        // London, 2027-03-28: 01:00 GMT becomes 02:00 BST. 20:00 GMT Saturday to 08:00 BST
        // Sunday is an hour shorter in real time, and ends at 07:00 UTC.
        let q = nightly((20, 0), (8, 0));
        assert_eq!(
            q.hold_until(utc("2027-03-27T21:00:00Z"), LONDON),
            Some(utc("2027-03-28T07:00:00Z"))
        );
        // And in the autumn (2027-10-31, 02:00 BST becomes 01:00 GMT) an hour longer.
        assert_eq!(
            q.hold_until(utc("2027-10-30T21:00:00Z"), LONDON),
            Some(utc("2027-10-31T08:00:00Z"))
        );
    }

    #[test]
    fn an_end_in_the_spring_forward_gap_is_the_first_instant_after_it() {
        // New York, 2027-03-14: 02:00 EST becomes 03:00 EDT, so 02:30 does not exist that day.
        let q = nightly((22, 0), (2, 30));
        let held = q.hold_until(utc("2027-03-14T04:00:00Z"), NEW_YORK); // 23:00 EST
        assert_eq!(
            held,
            Some(utc("2027-03-14T07:00:00Z")),
            "03:00 EDT, the first instant after the gap"
        );
        assert_eq!(
            held.unwrap().with_timezone(&NEW_YORK).naive_local(),
            NaiveDate::from_ymd_opt(2027, 3, 14)
                .unwrap()
                .and_hms_opt(3, 0, 0)
                .unwrap()
        );
        // At that instant the window is over.
        assert_eq!(q.hold_until(held.unwrap(), NEW_YORK), None);
        // The day before and after, 02:30 is 02:30.
        assert_eq!(
            q.hold_until(utc("2027-03-13T04:00:00Z"), NEW_YORK),
            Some(utc("2027-03-13T07:30:00Z"))
        );
        assert_eq!(
            q.hold_until(utc("2027-03-15T03:00:00Z"), NEW_YORK),
            Some(utc("2027-03-15T06:30:00Z"))
        );
    }

    #[test]
    fn a_window_starting_in_the_gap_is_quiet_from_the_first_instant_after_it() {
        // From 02:15 on the spring-forward day: the clock jumps from 01:59 EST to 03:00 EDT,
        // which is past 02:15, so quiet from 03:00 on.
        let q = nightly((2, 15), (6, 0));
        assert_eq!(q.hold_until(utc("2027-03-14T06:59:00Z"), NEW_YORK), None); // 01:59 EST
        assert_eq!(
            q.hold_until(utc("2027-03-14T07:00:00Z"), NEW_YORK), // 03:00 EDT
            Some(utc("2027-03-14T10:00:00Z"))                    // 06:00 EDT
        );
    }

    #[test]
    fn an_end_in_the_fall_back_fold_is_its_first_occurrence_after_the_held_time() {
        // New York, 2027-11-07: 02:00 EDT becomes 01:00 EST, so 01:00-02:00 happens twice.
        let q = nightly((22, 0), (1, 30));
        // Held at 23:00 EDT: until the first 01:30 (EDT, 05:30 UTC).
        assert_eq!(
            q.hold_until(utc("2027-11-07T03:00:00Z"), NEW_YORK),
            Some(utc("2027-11-07T05:30:00Z"))
        );
        // Between the two 01:30s it is not quiet (the clock shows 01:45 EDT, then 01:00 EST...).
        assert_eq!(q.hold_until(utc("2027-11-07T05:45:00Z"), NEW_YORK), None);
        // ... and when the clock shows 01:10 again (EST), that is quiet, until 01:30 EST.
        assert_eq!(
            q.hold_until(utc("2027-11-07T06:10:00Z"), NEW_YORK),
            Some(utc("2027-11-07T06:30:00Z"))
        );
    }

    #[test]
    fn quiet_days_follow_the_local_calendar_across_dst() {
        // Sunday 2027-03-14 in New York is 23 hours long: quiet from 05:00 UTC to 04:00 UTC.
        let q = QuietHours {
            window: None,
            days: bit(Weekday::Sun),
        };
        assert_eq!(
            q.hold_until(utc("2027-03-14T05:00:00Z"), NEW_YORK),
            Some(utc("2027-03-15T04:00:00Z"))
        );
        assert_eq!(q.hold_until(utc("2027-03-14T04:59:00Z"), NEW_YORK), None);
    }

    fn raw(from: Option<&str>, to: Option<&str>, days: &[&str]) -> RawQuietHours {
        let text = |s: &str| {
            let mut t = crate::config::raw::Text::default();
            t.set(s.to_string());
            t
        };
        RawQuietHours {
            from: from.map(text),
            to: to.map(text),
            days: (!days.is_empty()).then(|| {
                crate::config::raw::OneOrMany::Many(days.iter().map(|d| text(d)).collect())
            }),
        }
    }

    fn problems(r: RawQuietHours) -> Vec<String> {
        let mut p = Vec::new();
        let q = compile(&r, Some(7), "destinations.d.quiet_hours", &mut p);
        assert_eq!(q.is_some(), p.is_empty());
        p.into_iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect()
    }

    #[test]
    fn compile_accepts_what_the_readme_shows_and_refuses_the_rest() {
        let mut p = Vec::new();
        let q = compile(
            &raw(Some("20:00"), Some("08:00"), &["sat", "Sun"]),
            None,
            "k",
            &mut p,
        )
        .unwrap();
        assert!(p.is_empty());
        assert_eq!(q.to_string(), "20:00-08:00, all day sat sun");
        assert!(
            problems(raw(None, None, &["saturday"])).is_empty(),
            "days alone"
        );
        assert!(problems(raw(Some("8:05"), Some("00:00"), &[])).is_empty());

        let one = |r| {
            let p = problems(r);
            assert_eq!(p.len(), 1, "{p:?}");
            p[0].clone()
        };
        assert!(one(raw(Some("25:00"), Some("08:00"), &[]))
            .starts_with("destinations.d.quiet_hours.from: \"25:00\" is not a time"));
        assert!(one(raw(Some("20:00"), Some("8"), &[])).contains(".to: \"8\" is not a time"));
        assert!(one(raw(Some("20:00"), Some("08:60"), &[])).contains("is not a time"));
        assert!(one(raw(Some("20:00"), Some("24:00"), &[])).contains("00:00"));
        assert!(one(raw(Some("20:00"), Some("20:00"), &[])).contains("the same time"));
        assert!(one(raw(Some("20:00"), None, &[])).contains(".to: `from` needs a `to`"));
        assert!(one(raw(None, Some("08:00"), &[])).contains(".from: `to` needs a `from`"));
        assert!(one(raw(None, None, &[])).contains("need `from` and `to`"));
        assert!(
            one(raw(None, None, &["sat", "funday"])).contains("days[1]: unknown day \"funday\"")
        );
        assert!(one(raw(None, None, &["sat", "sat"])).contains("days[1]: \"sat\" is listed twice"));
        assert!(one(raw(
            None,
            None,
            &["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        ))
        .contains("nothing would ever be sent"));
    }
}
