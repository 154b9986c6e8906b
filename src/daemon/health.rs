//! Health: what the `/metrics`, `/healthz` and `/readyz` endpoints (and `/trigger`) and the watchdog know about
//! each clinic's resources, and the server that answers them.

use crate::config;
use crate::outbox::store::Store;
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A clinic's resource: the key of [`Health::resources`].
pub(crate) type PollKey = (String, String);

/// What the health endpoints and the watchdog know about one resource of one clinic.
#[derive(Debug, Clone, Default)]
pub(crate) struct ResourceHealth {
    /// When the last poll started (in this process), so a reload keeps each poll's phase.
    pub(crate) last_started: Option<std::time::Instant>,
    /// When the last successful poll ended.
    pub(crate) last_success: Option<chrono::DateTime<Utc>>,
    /// Failed polls since then.
    pub(crate) consecutive_failures: u32,
    /// The last error.
    pub(crate) last_error: Option<String>,
    /// Stale after this long without success.
    pub(crate) stale_after: std::time::Duration,
    /// When this process began watching the resource: staleness counts from here until the
    /// first success (the watchdog's rule, for the operator's alerts).
    pub(crate) watched_since: Option<chrono::DateTime<Utc>>,
    /// The API refused the key (401 or 403: this status) since the last successful poll.
    pub(crate) unauthorized: Option<u16>,
}

/// Shared health state of a running notifier.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// By clinic and resource key.
    pub(crate) resources: std::sync::RwLock<HashMap<PollKey, ResourceHealth>>,
    /// The bearer token `/metrics` asks for (`metrics_token`), replaced on reload.
    pub(crate) metrics_token: std::sync::RwLock<Option<config::SecretString>>,
    /// What the web console knows beside the store.
    pub(crate) console: super::console::ConsoleState,
    /// The poll triggers' tokens and channels, replaced on reload.
    pub(crate) triggers: super::trigger::Triggers,
    /// Woken when a poll's outcome may start or end an incident (a 401/403, a success after
    /// one), so the alert monitor looks at once instead of at its next round.
    pub(crate) alert_nudge: tokio::sync::Notify,
}

impl Health {
    /// Sets the token `/metrics` asks for (`None`: open).
    pub(crate) fn set_metrics_token(&self, token: Option<config::SecretString>) {
        *self
            .metrics_token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = token;
    }

    /// Whether a request with these headers may read `/metrics`: always when no token is set,
    /// else only with `Authorization: Bearer TOKEN`, compared in constant time.
    pub(crate) fn metrics_allowed(&self, headers: &axum::http::HeaderMap) -> bool {
        let guard = self
            .metrics_token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(token) = guard.as_ref() else {
            return true;
        };
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .unwrap_or("");
        constant_time_eq(given.as_bytes(), token.expose().as_bytes())
    }
}

/// Compares two secrets in time independent of where they differ: both are hashed first, so
/// neither the position of the first difference nor the length shows in the timing.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl Health {
    /// Whether every resource of every clinic has polled successfully and none is stale; the
    /// reasons if not: first the stale clinics by name (when there are clinics to tell apart),
    /// then each resource, as `clinic/resource` (just `resource` for the one `default` clinic).
    pub(crate) fn ready(&self) -> Result<(), Vec<String>> {
        let now = Utc::now();
        let guard = self
            .resources
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut why = Vec::new();
        if guard.is_empty() {
            why.push("no resources yet".to_string());
        }
        let fleet = guard
            .keys()
            .any(|(clinic, _)| clinic != crate::model::DEFAULT_CLINIC);
        let mut keys: Vec<_> = guard.keys().collect();
        keys.sort();
        let mut stale_clinics: Vec<&str> = Vec::new();
        for key in keys {
            let h = &guard[key];
            let (clinic, resource) = key;
            let name = if fleet {
                format!("{clinic}/{resource}")
            } else {
                resource.clone()
            };
            let reason = match h.last_success {
                None => Some(format!("{name}: no successful poll yet")),
                Some(t) if (now - t).to_std().unwrap_or_default() > h.stale_after => Some(format!(
                    "{name}: no successful poll for {}s ({} failures in a row)",
                    (now - t).num_seconds(),
                    h.consecutive_failures
                )),
                Some(_) => None,
            };
            if let Some(r) = reason {
                why.push(r);
                if stale_clinics.last() != Some(&clinic.as_str()) {
                    stale_clinics.push(clinic);
                }
            }
        }
        if fleet && !stale_clinics.is_empty() {
            why.insert(
                0,
                format!(
                    "clinics not ready: {} of {}: {}",
                    stale_clinics.len(),
                    guard
                        .keys()
                        .map(|(clinic, _)| clinic)
                        .collect::<std::collections::BTreeSet<_>>()
                        .len(),
                    stale_clinics.join(", ")
                ),
            );
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    }
}

/// Serves `/metrics`, `/healthz`, `/readyz` and the console until `cancel` fires.
pub(crate) async fn serve_health(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    store: Store,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    use axum::response::IntoResponse;
    use axum::{http::StatusCode, routing::get, Router};
    let metrics = crate::telemetry::metrics_handle();
    let h2 = health.clone();
    let console = super::console::routes(health.clone(), store.clone());
    let trigger = super::trigger::routes(health.clone());
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let h = h2.clone();
                async move {
                    match h.ready() {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready:\n{}\n", why.join("\n")),
                        ),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                let h = health.clone();
                let m = metrics.clone();
                let store = store.clone();
                async move {
                    if !h.metrics_allowed(&headers) {
                        return (
                            StatusCode::UNAUTHORIZED,
                            [(axum::http::header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\"")],
                            "/metrics needs the bearer token set in metrics_token\n".to_string(),
                        )
                            .into_response();
                    }
                    let now = Utc::now();
                    if let Ok(guard) = h.resources.read() {
                        for ((clinic, resource), r) in guard.iter() {
                            if let Some(t) = r.last_success {
                                metrics::gauge!(crate::telemetry::metric::LAST_SUCCESS_AGE, "clinic" => clinic.clone(), "resource" => resource.clone())
                                    .set((now - t).num_milliseconds() as f64 / 1000.0);
                            }
                        }
                    }
                    // A store that cannot count leaves the last values (and says so in its log).
                    match store.outbox_len().await {
                        Ok(n) => metrics::gauge!(crate::telemetry::metric::OUTBOX_ENTRIES).set(n as f64),
                        Err(e) => tracing::warn!("cannot count the outbox for /metrics: {e}"),
                    }
                    match store.dead_len().await {
                        Ok(n) => metrics::gauge!(crate::telemetry::metric::DEAD_LETTERS_STORED).set(n as f64),
                        Err(e) => tracing::warn!("cannot count the dead letters for /metrics: {e}"),
                    }
                    match m {
                        Some(m) => (StatusCode::OK, crate::telemetry::render_metrics(&m)).into_response(),
                        None => (StatusCode::SERVICE_UNAVAILABLE, "metrics recorder unavailable\n").into_response(),
                    }
                }
            }),
        )
        .merge(console)
        .merge(trigger);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}

/// How long a resource may go without a successful poll before it is stale: `watchdog.stale_after`,
/// else three of its poll intervals.
pub(crate) fn stale_after(base: &config::Base, r: &config::Resource) -> std::time::Duration {
    base.stale_after.unwrap_or(r.poll_interval * 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header::AUTHORIZATION, HeaderMap, HeaderValue};

    fn with_auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn metrics_need_the_exact_bearer_token_once_one_is_set() {
        let health = Health::default();
        assert!(health.metrics_allowed(&HeaderMap::new()), "no token: open");
        health.set_metrics_token(Some(config::SecretString::new("s3cret-token-123456")));
        assert!(!health.metrics_allowed(&HeaderMap::new()));
        assert!(health.metrics_allowed(&with_auth("Bearer s3cret-token-123456")));
        assert!(health.metrics_allowed(&with_auth("bearer  s3cret-token-123456 ")));
        for wrong in [
            "Bearer s3cret-token-12345",
            "Bearer s3cret-token-1234567",
            "Bearer ",
            "Basic s3cret-token-123456",
            "s3cret-token-123456",
        ] {
            assert!(!health.metrics_allowed(&with_auth(wrong)), "{wrong}");
        }
        // A reload that removes the token opens /metrics again.
        health.set_metrics_token(None);
        assert!(health.metrics_allowed(&HeaderMap::new()));
    }
}
