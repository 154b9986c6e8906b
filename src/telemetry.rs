//! Logs and metrics: tracing in `pretty` (people) or `json` (machines) form, and a Prometheus
//! recorder for the `metrics` facade.
//!
//! At the default level nothing logs record contents, secrets or API keys: spans carry resource,
//! record id, rule, destination and `webhook-id`, never field values.

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

/// The filter for a verbosity: 0 is info for this crate and warnings for libraries; each `-v`
/// adds detail, each `-q` removes it. `RUST_LOG` overrides it.
pub fn filter_for(verbosity: i8) -> String {
    match verbosity {
        i8::MIN..=-2 => "error".into(),
        -1 => "warn".into(),
        0 => "warn,clinicea_notifier=info".into(),
        1 => "info,clinicea_notifier=debug".into(),
        _ => "debug,clinicea_notifier=trace".into(),
    }
}

/// Starts logging to stderr. Calling it twice is harmless (the second call does nothing).
pub fn init_tracing(format: LogFormat, verbosity: i8) {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| EnvFilter::new(filter_for(verbosity)));
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
pub fn metrics_handle() -> Option<PrometheusHandle> {
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
