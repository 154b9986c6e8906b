//! `alerts:`: what the operator is told about the notifier itself (a destination that keeps
//! failing, a stale resource, a revoked API key), and where. The section as written
//! ([`RawAlerts`]) is validated once into [`Alerts`]; the monitor that raises the alerts is
//! `crate::daemon::alerts`.

use super::problem::{line_of, Problem};
use super::raw::{parse_duration, Dur, Text};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::time::Duration;

/// How long a destination fails before it is an incident, when `destination_failing_for` is not
/// written.
pub const DEFAULT_DESTINATION_FAILING_FOR: Duration = Duration::from_secs(30 * 60);

/// What `destination_failing_for` is written as to turn that incident off.
const OFF: &str = "off";

/// `alerts:` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlerts {
    /// The destinations alerts go to.
    #[serde(default)]
    pub(crate) notify: Vec<Text>,
    /// Consecutive failures this long make a destination an incident (`off`: never).
    #[serde(default)]
    pub(crate) destination_failing_for: Option<Dur>,
    /// A stale resource (per the watchdog) is an incident (default true).
    #[serde(default)]
    pub(crate) stale_resource: Option<bool>,
    /// A 401/403 from the API is an incident (default true).
    #[serde(default)]
    pub(crate) api_unauthorized: Option<bool>,
}

/// `alerts:`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alerts {
    /// The destinations alerts go to, as written (each one exists).
    pub notify: Vec<String>,
    /// Consecutive failures this long make a destination an incident; `None`: never.
    pub destination_failing_for: Option<Duration>,
    /// Whether a stale resource is an incident.
    pub stale_resource: bool,
    /// Whether a 401/403 from the API is an incident.
    pub api_unauthorized: bool,
}

/// Validates `alerts:` against the destination names of the file (those with problems of their
/// own count as existing, so they are not reported twice). Every problem is pushed at its line.
pub(crate) fn validate(
    raw: Option<&Spanned<RawAlerts>>,
    destination_names: &[String],
    problems: &mut Vec<Problem>,
) -> Option<Alerts> {
    let spanned = raw?;
    let line = line_of(spanned);
    let raw = &spanned.value;
    let before = problems.len();
    if raw.notify.is_empty() {
        problems.push(Problem::at(
            line,
            "alerts.notify",
            "lists no destination: name at least one (e.g. an email destination of the operator)",
        ));
    }
    let mut notify: Vec<String> = Vec::new();
    for (i, t) in raw.notify.iter().enumerate() {
        let key = format!("alerts.notify[{i}]");
        let name = t.trim().to_string();
        if !destination_names.contains(&name) {
            problems.push(Problem::at(
                t.line().or(line),
                key,
                format!("no destination named {name:?} under destinations:"),
            ));
        } else if notify.contains(&name) {
            problems.push(Problem::at(
                t.line().or(line),
                key,
                format!("{name:?} is listed twice"),
            ));
        } else {
            notify.push(name);
        }
    }
    let destination_failing_for = match &raw.destination_failing_for {
        None => Some(DEFAULT_DESTINATION_FAILING_FOR),
        Some(d) if d.text().trim() == OFF => None,
        Some(d) => match parse_duration(d.text()) {
            Ok(v) if v.is_zero() => {
                problems.push(Problem::at(
                    d.text().line().or(line),
                    "alerts.destination_failing_for",
                    "must be longer than 0 (or `off`)",
                ));
                None
            }
            Ok(v) => Some(v),
            Err(e) => {
                problems.push(Problem::at(
                    d.text().line().or(line),
                    "alerts.destination_failing_for",
                    format!("{e} (or `off`)"),
                ));
                None
            }
        },
    };
    (problems.len() == before).then(|| Alerts {
        notify,
        destination_failing_for,
        stale_resource: raw.stale_resource.unwrap_or(true),
        api_unauthorized: raw.api_unauthorized.unwrap_or(true),
    })
}
