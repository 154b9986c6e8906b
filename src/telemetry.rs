//! Logs and metrics: tracing in `pretty` (people) or `json` (machines) form, and a Prometheus
//! recorder for the `metrics` facade.
//!
//! At the default level nothing logs record contents, secrets or API keys: spans carry resource,
//! record id, rule, destination and `webhook-id`, never field values. Other crates log at
//! [`THIRD_PARTY_LEVEL`] whatever `-v` or a bare `RUST_LOG` level says, because their debug logs
//! are not written with that in mind (handlebars logs every value it renders); naming a crate in
//! `RUST_LOG` (`RUST_LOG=handlebars=debug`) still turns its logs on.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The level other crates log at unless `RUST_LOG` names them: their debug output is not ours to
/// vouch for (the template engine's logs every value it renders, HTTP clients log URLs).
pub(crate) const THIRD_PARTY_LEVEL: &str = "warn";

/// This crate's name as a log target.
const OUR_TARGET: &str = "clinicea_notifier";

/// The filter for a verbosity: 0 is info for this crate, each `-v` adds detail (debug, then
/// trace), each `-q` removes it; other crates stay at [`THIRD_PARTY_LEVEL`] (or quieter with
/// `-qq`). `RUST_LOG` overrides it (see [`filter_from_rust_log`]).
pub(crate) fn filter_for(verbosity: i8) -> String {
    match verbosity {
        i8::MIN..=-2 => "error".into(),
        -1 => "warn".into(),
        0 => format!("{THIRD_PARTY_LEVEL},{OUR_TARGET}=info"),
        1 => format!("{THIRD_PARTY_LEVEL},{OUR_TARGET}=debug"),
        _ => format!("{THIRD_PARTY_LEVEL},{OUR_TARGET}=trace"),
    }
}

/// Reads a `RUST_LOG` value so that a bare level (`RUST_LOG=debug`) applies to this crate only,
/// while other crates stay at [`THIRD_PARTY_LEVEL`] (a bare level quieter than that, such as
/// `error`, still applies to everything). Directives that name a target (`handlebars=debug`,
/// `hyper=trace`, `clinicea_notifier::ingest::poll=trace`) are kept as written: asking for a crate by name
/// is the way to get its debug output. A span filter without a target (`[delivery]=trace`) is
/// narrowed to this crate.
pub(crate) fn filter_from_rust_log(rust_log: &str) -> String {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let rank = |l: &str| LEVELS.iter().position(|x| x.eq_ignore_ascii_case(l));
    let third = rank(THIRD_PARTY_LEVEL).unwrap_or(2);
    let mut out: Vec<String> = Vec::new();
    let mut names_us = false;
    let mut bare: Option<usize> = None;
    for d in rust_log.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if let Some(r) = rank(d) {
            bare = Some(r);
        } else if d.starts_with('[') {
            out.push(format!("{OUR_TARGET}{d}"));
        } else {
            let target = d.split(['=', '[']).next().unwrap_or("");
            // A module of this crate (`clinicea_notifier::ingest::poll`) does not set the crate's level.
            if target == OUR_TARGET {
                names_us = true;
            }
            out.push(d.to_string());
        }
    }
    let mut head = Vec::new();
    if let Some(r) = bare {
        head.push(LEVELS[r.min(third)].to_string());
        if !names_us {
            head.push(format!("{OUR_TARGET}={}", LEVELS[r]));
        }
    }
    head.extend(out);
    head.join(",")
}

/// Starts logging to stderr. Calling it twice is harmless (the second call does nothing).
pub fn init_tracing(format: LogFormat, verbosity: i8) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(filter_from_rust_log(&v)).ok())
        .unwrap_or_else(|| EnvFilter::new(filter_for(verbosity)));
    // Colours only on a terminal: journald, `docker logs` and files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.compact().try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Delivery latency buckets (seconds), from a fast local receiver to a retried delivery.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 1800.0, 7200.0,
];

/// Every metric's name, in one place so the call sites, the HELP texts, the dashboard and the
/// alerting rules in `deploy/` cannot drift apart. Names follow the Prometheus naming guide: the
/// `clinicea_notifier_` prefix, `_total` on counters, base units (seconds, bytes) as a suffix.
pub mod metric {
    /// Counter: polls finished, by clinic and resource (successful or not).
    pub const POLLS: &str = "clinicea_notifier_polls_total";
    /// Counter: polls that failed, by clinic and resource.
    pub const POLL_FAILURES: &str = "clinicea_notifier_poll_failures_total";
    /// Gauge: Unix time of the last successful poll, by clinic and resource.
    pub const LAST_SUCCESS_TIMESTAMP: &str = "clinicea_notifier_last_success_timestamp_seconds";
    /// Gauge: seconds since the last successful poll at scrape time, by clinic and resource.
    pub const LAST_SUCCESS_AGE: &str = "clinicea_notifier_last_success_age_seconds";
    /// Counter: passes a poll started again because the window shifted under it.
    pub const WINDOW_SHIFTS: &str = "clinicea_notifier_window_shifts_total";
    /// Counter: polls that gave up settling after their last pass.
    pub const POLLS_UNSETTLED: &str = "clinicea_notifier_polls_unsettled_total";
    /// Gauge: the API's clock minus ours, by clinic and resource.
    pub const API_CLOCK_SKEW: &str = "clinicea_notifier_api_clock_skew_seconds";
    /// Counter: records read from the API, by clinic and resource.
    pub const RECORDS_FETCHED: &str = "clinicea_notifier_records_fetched_total";
    /// Counter: records skipped, by clinic, resource and reason.
    pub const RECORDS_SKIPPED: &str = "clinicea_notifier_records_skipped_total";
    /// Counter: changes detected, by clinic, resource and change kind.
    pub const CHANGES: &str = "clinicea_notifier_changes_total";
    /// Gauge: records stored by a resource's baseline so far.
    pub const BASELINE_RECORDS: &str = "clinicea_notifier_baseline_records";
    /// Counter: delivery outcomes (delivered, retry, dead), by clinic and destination.
    pub const DELIVERIES: &str = "clinicea_notifier_deliveries_total";
    /// Counter: deliveries that became dead letters, by clinic and destination.
    pub const DEAD_LETTERS_CREATED: &str = "clinicea_notifier_dead_letters_total";
    /// Histogram: one delivery attempt's duration, by destination.
    pub const ATTEMPT_DURATION: &str = "clinicea_notifier_delivery_attempt_duration_seconds";
    /// Histogram: detection to successful delivery, by destination.
    pub const DELIVERY_LATENCY: &str = "clinicea_notifier_delivery_latency_seconds";
    /// Gauge: deliveries queued in the outbox at scrape time.
    pub const OUTBOX_ENTRIES: &str = "clinicea_notifier_outbox_entries";
    /// Gauge: dead letters stored at scrape time.
    pub const DEAD_LETTERS_STORED: &str = "clinicea_notifier_dead_letters_stored";
    /// Counter: poll trigger requests, by clinic, resource and outcome.
    pub const TRIGGERS: &str = "clinicea_notifier_triggers_total";
    /// Gauge: always 1, labelled with the running version.
    pub const BUILD_INFO: &str = "clinicea_notifier_build_info";
    /// The standard process metrics, written beside ours under their usual names.
    pub const PROCESS: &[&str] = &[
        "process_cpu_seconds_total",
        "process_start_time_seconds",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
    ];
    /// Every metric of ours, for whoever checks a dashboard or an alert against them.
    pub const ALL: &[&str] = &[
        POLLS,
        POLL_FAILURES,
        LAST_SUCCESS_TIMESTAMP,
        LAST_SUCCESS_AGE,
        WINDOW_SHIFTS,
        POLLS_UNSETTLED,
        API_CLOCK_SKEW,
        RECORDS_FETCHED,
        RECORDS_SKIPPED,
        CHANGES,
        BASELINE_RECORDS,
        DELIVERIES,
        DEAD_LETTERS_CREATED,
        ATTEMPT_DURATION,
        DELIVERY_LATENCY,
        OUTBOX_ENTRIES,
        DEAD_LETTERS_STORED,
        TRIGGERS,
        BUILD_INFO,
    ];
}

/// Gives every metric its HELP text and unit; the exporter writes them as `# HELP` lines.
fn describe_metrics() {
    use metric::*;
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        POLLS,
        "Polls finished, successful or not, by clinic and resource."
    );
    describe_counter!(POLL_FAILURES, "Polls that failed, by clinic and resource.");
    describe_gauge!(
        LAST_SUCCESS_TIMESTAMP,
        Unit::Seconds,
        "Unix time at which the last successful poll of a clinic's resource ended."
    );
    describe_gauge!(
        LAST_SUCCESS_AGE,
        Unit::Seconds,
        "Seconds since the last successful poll of a clinic's resource, at scrape time."
    );
    describe_counter!(
        WINDOW_SHIFTS,
        "Poll passes read again because records shifted between pages while the window was walked."
    );
    describe_counter!(
        POLLS_UNSETTLED,
        "Polls whose window still shifted in their last allowed pass."
    );
    describe_gauge!(
        API_CLOCK_SKEW,
        Unit::Seconds,
        "The Clinicea API's clock minus the notifier's, from the last poll's Date header."
    );
    describe_counter!(
        RECORDS_FETCHED,
        "Records read from the API, by clinic and resource."
    );
    describe_counter!(
        RECORDS_SKIPPED,
        "Records skipped (not diffed), by clinic, resource and reason."
    );
    describe_counter!(
        CHANGES,
        "Changes detected, by clinic, resource and kind (added, modified, deleted)."
    );
    describe_gauge!(
        BASELINE_RECORDS,
        "Records stored by a resource's silent baseline so far."
    );
    describe_counter!(
        DELIVERIES,
        "Delivery attempt outcomes by clinic, destination and outcome (delivered, retry, dead)."
    );
    describe_counter!(
        DEAD_LETTERS_CREATED,
        "Deliveries that became dead letters, by clinic and destination."
    );
    describe_histogram!(
        ATTEMPT_DURATION,
        Unit::Seconds,
        "Duration of one delivery attempt, by destination."
    );
    describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "Time from a change's detection to its successful delivery, by destination."
    );
    describe_gauge!(
        OUTBOX_ENTRIES,
        "Deliveries queued in the outbox, at scrape time."
    );
    describe_gauge!(DEAD_LETTERS_STORED, "Dead letters stored, at scrape time.");
    describe_counter!(
        TRIGGERS,
        "Poll trigger requests by clinic, resource and outcome (accepted, unauthorized, not_found, unavailable, too_large); names the config does not hold are (unknown)."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label names the running build."
    );
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder (once per process; the `metrics` facade is process-wide by
/// design), describes every metric and returns the handle that renders `/metrics`.
pub(crate) fn metrics_handle() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), LATENCY_BUCKETS)
                .ok()?
                .install_recorder()
                .ok()?;
            describe_metrics();
            metrics::gauge!(metric::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        })
        .clone()
}

/// The scrape: the recorder's metrics followed by the standard process metrics.
pub(crate) fn render_metrics(handle: &PrometheusHandle) -> String {
    let mut text = handle.render();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&process_metrics_text());
    text
}

/// The clock tick of the times in `/proc/self/stat`: Linux reports them in `USER_HZ`, which is
/// 100 on every architecture this runs on, whatever the kernel's own tick.
const USER_HZ: f64 = 100.0;

/// The standard process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
/// `process_start_time_seconds`) under their usual names, so stock dashboards and alerts work.
/// Read from `/proc` at scrape time and written as text, because the `metrics` facade's counters
/// are integers and CPU time is not; where `/proc` is missing (not Linux) they are left out.
fn process_metrics_text() -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut put = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // Fields after the command name, which is in parentheses and may itself hold spaces.
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // `fields[0]` is field 3 of proc(5): utime is field 14, stime 15, starttime 22.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        put(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            (utime + stime) / USER_HZ,
        );
    }
    let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    if let (Some(start), Some(boot)) = (field(22), boot_time) {
        put(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            boot + start / USER_HZ,
        );
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|k| k * 1024.0)
    };
    if let Some(rss) = kib("VmRSS:") {
        put(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            rss,
        );
    }
    if let Some(vsz) = kib("VmSize:") {
        put(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            vsz,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        put(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Max open files"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        });
    if let Some(max) = max_fds {
        put(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_metrics_are_read_from_proc_with_help_and_type() {
        let text = process_metrics_text();
        for name in metric::PROCESS {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}: {text}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}: {text}");
            let value: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name}: {text}"));
            // A test process may not have used a whole clock tick of CPU yet.
            let least = if name.starts_with("process_cpu") {
                0.0
            } else {
                1.0
            };
            assert!(value >= least, "{name} = {value}");
        }
        let start: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_start_time_seconds "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        let now = chrono::Utc::now().timestamp() as f64;
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
    }

    #[test]
    fn verbosity_never_raises_other_crates() {
        for v in [0, 1, 2, 5] {
            let f = filter_for(v);
            assert!(f.starts_with("warn,clinicea_notifier="), "{v}: {f}");
        }
        assert_eq!(filter_for(2), "warn,clinicea_notifier=trace");
        assert_eq!(filter_for(-2), "error");
    }

    #[test]
    fn a_bare_rust_log_level_applies_to_this_crate_only() {
        let f = filter_from_rust_log;
        assert_eq!(f("debug"), "warn,clinicea_notifier=debug");
        assert_eq!(f("TRACE"), "warn,clinicea_notifier=trace");
        assert_eq!(f("error"), "error,clinicea_notifier=error");
        assert_eq!(f("info"), "warn,clinicea_notifier=info");
        // Named crates are kept as asked.
        assert_eq!(f("handlebars=debug"), "handlebars=debug");
        assert_eq!(
            f("debug,handlebars=debug"),
            "warn,clinicea_notifier=debug,handlebars=debug"
        );
        assert_eq!(
            f("debug,clinicea_notifier::ingest::poll=trace"),
            "warn,clinicea_notifier=debug,clinicea_notifier::ingest::poll=trace"
        );
        assert_eq!(
            f("debug,clinicea_notifier=info"),
            "warn,clinicea_notifier=info"
        );
        assert_eq!(f("[delivery]=trace"), "clinicea_notifier[delivery]=trace");
        for s in [
            "debug",
            "trace,hyper=warn",
            "handlebars=debug",
            "[delivery]=trace",
        ] {
            assert!(EnvFilter::try_new(f(s)).is_ok(), "{s}");
        }
    }
}
