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

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder (once per process; the `metrics` facade is process-wide by
/// design) and returns the handle that renders `/metrics`.
pub(crate) fn metrics_handle() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), LATENCY_BUCKETS)
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

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
