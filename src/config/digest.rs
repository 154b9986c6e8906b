//! A destination's digest: instead of one message per change, the changes of a window wait in the
//! store and go out as one message when the window closes ([`Digest`], [`DigestSchedule`]), as
//! [`crate::config::load()`] builds it from `digest:` and `digest_template:`.
//!
//! Windows are in the clinic's zone. `every: D` windows are aligned to the clinic's local midnight:
//! they close at midnight, midnight + D, midnight + 2D, ... each day (`every: 1h` closes at each
//! whole hour; a D that does not divide a day makes the day's last window shorter). `at:` lists the
//! local times of day at which a window closes. Across a DST change, a local time that happens
//! twice closes once (its first instant) and one that does not happen closes at the first instant
//! after the gap, so no window is lost or doubled.

use crate::config::destination::{InlineTemplate, TemplateFile, TemplatePart};
use crate::config::problem::Problem;
use crate::config::raw::{parse_duration, RawDigest, Text};
use chrono::{DateTime, Duration as Span, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use std::time::Duration;

/// The most changes in one digest when `max` is unset: a full group goes out at once.
pub(crate) const DEFAULT_DIGEST_MAX: usize = 50;
/// The largest `max`: a digest is one email or chat message, and past this it is unreadable.
pub(crate) const MAX_DIGEST_MAX: usize = 1000;
/// The digest template when `digest_template` is unset (`templates/digest.txt.hbs` and
/// `digest.html.hbs`, shipped).
pub(crate) const DEFAULT_DIGEST_TEMPLATE: &str = "digest";
/// A digest email's subject when `digest.subject` is unset.
pub(crate) const DEFAULT_DIGEST_SUBJECT: &str = "{{count}} new changes";
/// The shortest `every`: shorter is a stream of messages, which is what a digest is not.
pub(crate) const MIN_DIGEST_EVERY: Duration = Duration::from_secs(60);
/// The longest `every`: windows restart at each local midnight.
pub(crate) const MAX_DIGEST_EVERY: Duration = Duration::from_secs(86_400);
/// How far past a DST gap a close that falls into it is looked for (no zone skips more).
const DST_GAP_SEARCH_MINUTES: i64 = 180;

/// A destination's digest, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Digest {
    /// When windows close.
    pub(crate) schedule: DigestSchedule,
    /// The most changes in one digest; a group this full is flushed at once.
    pub(crate) max: usize,
    /// The digest's template files (`NAME.txt`, and `NAME.html` for email when it exists).
    pub(crate) template: TemplateFile,
    /// The subject of a digest email (an inline template that sees the digest context); `None`
    /// for chat.
    pub(crate) subject: Option<InlineTemplate>,
}

/// When a digest's windows close, in the clinic's zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DigestSchedule {
    /// Windows of this length from local midnight.
    Every(Duration),
    /// These local times of day, sorted, without duplicates.
    At(Vec<NaiveTime>),
}

impl DigestSchedule {
    /// The local times of day at which a window closes, sorted.
    fn times_of_day(&self) -> Vec<NaiveTime> {
        match self {
            DigestSchedule::At(times) => times.clone(),
            DigestSchedule::Every(d) => {
                let step = d.as_secs().max(1);
                (0..86_400u64)
                    .step_by(usize::try_from(step).unwrap_or(usize::MAX))
                    .filter_map(|s| {
                        NaiveTime::from_num_seconds_from_midnight_opt(
                            u32::try_from(s).unwrap_or(0),
                            0,
                        )
                    })
                    .collect()
            }
        }
    }

    /// The first window close strictly after `after`, in zone `tz`.
    pub(crate) fn next_close(&self, after: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let times = self.times_of_day();
        let today = after.with_timezone(&tz).date_naive();
        // Yesterday too: a close whose local date is yesterday can lie after `after` in a
        // zone change; two days ahead always holds one (every schedule closes daily).
        for day in -1..=2i64 {
            let Some(date) = today.checked_add_signed(Span::days(day)) else {
                continue;
            };
            for t in &times {
                if let Some(close) = local_instant(tz, date, *t) {
                    if close > after {
                        return close;
                    }
                }
            }
        }
        // Unreachable for any schedule load accepts; a day later is a safe answer.
        after + Span::days(1)
    }

    /// The schedule as a user wrote it: `every 1h`, `at 08:00, 13:00`.
    pub(crate) fn describe(&self) -> String {
        match self {
            DigestSchedule::Every(d) => format!("every {}", humantime_short(*d)),
            DigestSchedule::At(times) => format!(
                "at {}",
                times
                    .iter()
                    .map(|t| t.format("%H:%M").to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// `90s` as `1m30s`, `3600s` as `1h`.
fn humantime_short(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

/// The instant local time `t` on `date` is in `tz`: its first instant when it happens twice, the
/// first minute after the gap when it does not happen.
fn local_instant(tz: Tz, date: NaiveDate, t: NaiveTime) -> Option<DateTime<Utc>> {
    let naive = date.and_time(t);
    for minutes in 0..=DST_GAP_SEARCH_MINUTES {
        if let Some(dt) = tz
            .from_local_datetime(&(naive + Span::minutes(minutes)))
            .earliest()
        {
            return Some(dt.with_timezone(&Utc));
        }
    }
    None
}

/// Reads `HH:MM` (or `HH:MM:SS`).
fn parse_time_of_day(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(s.trim(), "%H:%M:%S"))
        .ok()
}

/// Validates a destination's `digest:` and `digest_template:`; `email` says whether it is an
/// email destination (which has a subject). Every problem is reported at its key.
pub(crate) fn compile(
    dest: &str,
    raw: &RawDigest,
    template: Option<&Text>,
    email: bool,
    line: Option<u64>,
    problems: &mut Vec<Problem>,
) -> Option<Digest> {
    let key = |k: &str| format!("destinations.{dest}.digest.{k}");
    let before = problems.len();
    let schedule = match (&raw.every, &raw.at) {
        (Some(_), Some(_)) => {
            problems.push(Problem::at(
                line,
                format!("destinations.{dest}.digest"),
                "give either `every` or `at`, not both",
            ));
            None
        }
        (None, None) => {
            problems.push(Problem::at(
                line,
                format!("destinations.{dest}.digest"),
                "needs `every` (e.g. `every: 1h`) or `at` (e.g. `at: [\"08:00\", \"13:00\"]`)",
            ));
            None
        }
        (Some(every), None) => {
            let text = every.text();
            let at = text.line().or(line);
            match parse_duration(text) {
                Err(e) => {
                    problems.push(Problem::at(at, key("every"), e));
                    None
                }
                Ok(d) if d < MIN_DIGEST_EVERY || d > MAX_DIGEST_EVERY => {
                    problems.push(Problem::at(
                        at,
                        key("every"),
                        "must be between 1m and 24h (windows restart at the clinic's midnight)",
                    ));
                    None
                }
                Ok(d) => Some(DigestSchedule::Every(d)),
            }
        }
        (None, Some(times)) => {
            if times.is_empty() {
                problems.push(Problem::at(line, key("at"), "needs at least one time"));
            }
            let mut parsed = Vec::with_capacity(times.len());
            for (i, t) in times.iter().enumerate() {
                match parse_time_of_day(t) {
                    Some(v) => parsed.push(v),
                    None => problems.push(Problem::at(
                        t.line().or(line),
                        format!("{}[{i}]", key("at")),
                        format!("{:?} is not a time of day (write \"08:00\")", t.as_str()),
                    )),
                }
            }
            parsed.sort();
            parsed.dedup();
            (!parsed.is_empty()).then_some(DigestSchedule::At(parsed))
        }
    };
    let max = raw.max.unwrap_or(DEFAULT_DIGEST_MAX);
    if max == 0 || max > MAX_DIGEST_MAX {
        problems.push(Problem::at(
            line,
            key("max"),
            format!("must be between 1 and {MAX_DIGEST_MAX}"),
        ));
    }
    let subject = match (&raw.subject, email) {
        (Some(_), false) => {
            problems.push(Problem::at(
                line,
                key("subject"),
                "only email digests have a subject",
            ));
            None
        }
        (s, true) => Some(InlineTemplate {
            name: format!("destination:{dest}:digest:subject"),
            source: s
                .as_ref()
                .map_or(DEFAULT_DIGEST_SUBJECT.to_string(), |t| t.to_string()),
            key: key("subject"),
            line,
        }),
        (None, false) => None,
    };
    let template = TemplateFile {
        base: template.map_or(DEFAULT_DIGEST_TEMPLATE.to_string(), |t| t.to_string()),
        part: if email {
            TemplatePart::EmailBody
        } else {
            TemplatePart::ChatText
        },
        key: format!("destinations.{dest}.digest_template"),
        line,
    };
    if problems.len() > before {
        return None;
    }
    Some(Digest {
        schedule: schedule?,
        max,
        template,
        subject,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn every_hour_closes_at_each_whole_local_hour() {
        let s = DigestSchedule::Every(Duration::from_secs(3600));
        assert_eq!(
            s.next_close(utc("2026-12-03T07:42:10Z"), Tz::UTC),
            utc("2026-12-03T08:00:00Z")
        );
        assert_eq!(
            s.next_close(utc("2026-12-03T08:00:00Z"), Tz::UTC),
            utc("2026-12-03T09:00:00Z")
        );
        // Kolkata is +05:30: its whole hours are at half past in UTC.
        assert_eq!(
            s.next_close(utc("2026-12-03T07:42:10Z"), chrono_tz::Asia::Kolkata),
            utc("2026-12-03T08:30:00Z")
        );
        assert_eq!(
            s.next_close(utc("2026-12-03T23:59:00Z"), Tz::UTC),
            utc("2026-12-04T00:00:00Z")
        );
    }

    #[test]
    fn at_times_are_local_and_survive_dst_changes() {
        let s = DigestSchedule::At(vec![
            NaiveTime::from_hms_opt(2, 30, 0).unwrap(),
            NaiveTime::from_hms_opt(13, 0, 0).unwrap(),
        ]);
        let ny = chrono_tz::America::New_York;
        // 2026-03-08: 02:30 does not happen in New York; the close is the first minute after.
        assert_eq!(
            s.next_close(utc("2026-03-08T06:00:00Z"), ny),
            utc("2026-03-08T07:00:00Z")
        );
        // 2026-11-01: 01:00-02:00 happens twice; 02:30 once (EST).
        assert_eq!(
            s.next_close(utc("2026-11-01T05:00:00Z"), ny),
            utc("2026-11-01T07:30:00Z")
        );
        assert_eq!(
            s.next_close(utc("2026-11-01T07:30:00Z"), ny),
            utc("2026-11-01T18:00:00Z")
        );
        // 13:00 local in summer is 17:00 UTC.
        assert_eq!(
            s.next_close(utc("2026-07-01T12:00:00Z"), ny),
            utc("2026-07-01T17:00:00Z")
        );
    }

    #[test]
    fn every_hour_across_the_fall_back_night_closes_each_local_hour_once() {
        let s = DigestSchedule::Every(Duration::from_secs(3600));
        let ny = chrono_tz::America::New_York;
        // 2026-11-01 01:00 EDT is 05:00 UTC; the clock shows 01:00 again at 06:00 UTC (EST).
        let mut t = utc("2026-11-01T03:30:00Z");
        let mut closes = Vec::new();
        for _ in 0..4 {
            t = s.next_close(t, ny);
            closes.push(t);
        }
        assert_eq!(
            closes,
            [
                utc("2026-11-01T04:00:00Z"),
                utc("2026-11-01T05:00:00Z"),
                utc("2026-11-01T07:00:00Z"),
                utc("2026-11-01T08:00:00Z"),
            ],
            "01:00 closes once; the repeated hour is part of the window to 02:00 EST"
        );
    }

    fn raw(yaml: &str) -> RawDigest {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn bad_digests_are_problems_at_their_keys() {
        let mut p = Vec::new();
        assert!(compile("d", &raw("{every: 5q}"), None, true, Some(3), &mut p).is_none());
        assert!(p[0].key.ends_with("digest.every"), "{p:?}");
        p.clear();
        assert!(compile("d", &raw("{every: 10s}"), None, true, None, &mut p).is_none());
        assert!(p[0].message.contains("between 1m and 24h"), "{p:?}");
        p.clear();
        assert!(compile("d", &raw("{at: [\"25:00\"]}"), None, true, None, &mut p).is_none());
        assert_eq!(p[0].key, "destinations.d.digest.at[0]");
        p.clear();
        assert!(compile("d", &raw("{every: 1h, max: 0}"), None, true, None, &mut p).is_none());
        assert!(p[0].key.ends_with("digest.max"), "{p:?}");
        p.clear();
        assert!(compile(
            "d",
            &raw("{every: 1h, at: [\"08:00\"]}"),
            None,
            true,
            None,
            &mut p
        )
        .is_none());
        p.clear();
        let d = compile(
            "d",
            &raw("{at: [\"13:00\", \"08:00\"]}"),
            None,
            true,
            None,
            &mut p,
        )
        .unwrap();
        assert!(p.is_empty());
        assert_eq!(d.schedule.describe(), "at 08:00, 13:00");
        assert_eq!(d.max, DEFAULT_DIGEST_MAX);
        assert_eq!(d.template.base, DEFAULT_DIGEST_TEMPLATE);
        assert_eq!(d.subject.unwrap().source, DEFAULT_DIGEST_SUBJECT);
    }
}
