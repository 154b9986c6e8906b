//! `check`: validate the config, templates and environment, and print what would run, or every
//! problem found. [`CheckReport`] is the shape `--output json` prints.

use super::{json_document, Output};
use crate::config::{ConfigError, Target};
use crate::daemon::settings::{load_settings, Settings};
use serde::Serialize;
use std::path::Path;
use std::process::ExitCode;

/// `check`: validate and print what would run (exit 0), or the problems (exit 1). As text, the
/// problems go to stderr; as JSON, the one document goes to stdout either way.
pub async fn run(config: &Path, output: Output) -> anyhow::Result<ExitCode> {
    let loaded = load_settings(config);
    let store = match &loaded {
        Ok(s) => store_problem(s).await,
        Err(_) => None,
    };
    let ok = loaded.is_ok() && store.is_none();
    match output {
        Output::Json => {
            let mut report = check_report(config, &loaded);
            if let Some(p) = store {
                report.ok = false;
                report.summary = None;
                report.problems.push(p);
            }
            print!("{}", json_document(&report)?)
        }
        Output::Text => match (&loaded, store) {
            (Ok(s), None) => {
                print!("{}", summary(s));
                println!("{}: OK", config.display());
            }
            (Ok(_), Some(p)) => eprintln!("{}: {}: {}", config.display(), p.key, p.message),
            (Err(e), _) => eprintln!("{e}"),
        },
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A PostgreSQL store that cannot be reached, or whose schema is newer than this binary's, is a
/// problem of `store.url` (a sled folder is checked when the daemon opens it).
async fn store_problem(s: &Settings) -> Option<CheckProblem> {
    let crate::config::StoreBackend::Postgres { url, .. } = &s.base.store.backend else {
        return None;
    };
    match crate::outbox::postgres::probe(url.expose()).await {
        Ok(_) => None,
        Err(e) => Some(CheckProblem {
            line: None,
            key: "store.url".into(),
            message: e.to_string(),
        }),
    }
}

/// What `check --output json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The config file checked, as given.
    pub config: String,
    /// Whether it is valid (`problems` is empty and `summary` is set).
    pub ok: bool,
    /// Every problem, in file order.
    pub problems: Vec<CheckProblem>,
    /// What would run; `null` when the config has problems.
    pub summary: Option<CheckSummary>,
}

/// One problem of a config.
#[derive(Debug, Clone, Serialize)]
pub struct CheckProblem {
    /// The 1-based line, when known.
    pub line: Option<u64>,
    /// The dotted key path (`destinations.front-desk.url`, `rules[0].notify`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// What a valid config would run (no secrets: webhook URLs are redacted, chat URLs cut to
/// their host).
#[derive(Debug, Clone, Serialize)]
pub struct CheckSummary {
    /// Each clinic polled (one, `default`, without a `clinics:` section).
    pub clinics: Vec<ClinicSummary>,
    /// Every resource, with its settings.
    pub resources: Vec<ResourceSummary>,
    /// Every destination.
    pub destinations: Vec<DestinationSummary>,
    /// Each rule, described in one line.
    pub rules: Vec<String>,
    /// The store's folder.
    pub store: String,
    /// The address of `/metrics`, `/healthz` and `/readyz`.
    pub listen: String,
    /// The operator's alerts, in one line (absent without `alerts:`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts: Option<String>,
}

/// One clinic in [`CheckSummary`].
#[derive(Debug, Clone, Serialize)]
pub struct ClinicSummary {
    /// Its name.
    pub name: String,
    /// The API's origin (scheme, host, port).
    pub api: String,
    /// `header`, `api_key_header`, `query` or `login`.
    pub auth: String,
    /// The IANA zone of its timestamps without an offset.
    pub timezone: String,
    /// How far back each poll re-reads, in seconds.
    pub overlap_seconds: f64,
    /// Its API requests in flight at most.
    pub max_concurrent_requests: usize,
    /// Whether its poll trigger is on (a `trigger_token` is set; the token itself is never shown).
    pub trigger: bool,
    /// The resources it polls.
    pub resources: Vec<String>,
}

/// One resource in [`CheckSummary`].
#[derive(Debug, Clone, Serialize)]
pub struct ResourceSummary {
    /// Its key.
    pub name: String,
    /// The API path.
    pub path: String,
    /// Seconds between polls.
    pub poll_interval_seconds: f64,
    /// Seconds between polls right after a poll that found changes (adaptive polling's floor;
    /// equal to `poll_interval_seconds` when it does not adapt).
    pub poll_interval_min_seconds: f64,
    /// The since parameter's name.
    pub since_param: String,
    /// The page parameter's name.
    pub page_param: String,
    /// The first page's number.
    pub first_page: u32,
    /// Records per full page.
    pub page_size: u32,
}

/// One destination in [`CheckSummary`].
#[derive(Debug, Clone, Serialize)]
pub struct DestinationSummary {
    /// Its key.
    pub name: String,
    /// `webhook`, `email`, `slack`, `teams`, `discord` or `google_chat`.
    pub kind: String,
    /// Where it sends, without secrets.
    pub target: String,
    /// Retries in its schedule.
    pub retries: usize,
    /// Its quiet hours as `20:00-08:00, all day sat sun` (in each clinic's zone), or `null`.
    pub quiet_hours: Option<String>,
    /// Its digest as `every 1h, at most 50, template digest` (windows in each clinic's zone), or
    /// `null`.
    pub digest: Option<String>,
}

/// The report of one `check` run.
pub fn check_report(config: &Path, loaded: &Result<Settings, ConfigError>) -> CheckReport {
    let (problems, summary) = match loaded {
        Ok(s) => (Vec::new(), Some(check_summary(s))),
        Err(e) => (
            e.problems
                .iter()
                .map(|p| CheckProblem {
                    line: p.line,
                    key: p.key.clone(),
                    message: p.message.clone(),
                })
                .collect(),
            None,
        ),
    };
    CheckReport {
        config: config.display().to_string(),
        ok: loaded.is_ok(),
        problems,
        summary,
    }
}

/// Where a destination sends, without its secrets.
fn target_text(target: &Target) -> String {
    match target {
        Target::Webhook(t) => crate::net::scrub::redacted_url(&t.url),
        Target::Chat { url, .. } => {
            format!("{}://{}/…", url.scheme(), url.host_str().unwrap_or(""))
        }
        Target::Email { to, template, .. } => {
            format!("{} recipient(s), template {template}", to.len())
        }
        Target::Nats(t) => format!(
            "{} subject {}",
            crate::net::scrub::redacted_url(&t.url),
            t.subject.source
        ),
        Target::Amqp(t) => format!(
            "{} exchange {:?} routing key {}",
            crate::net::scrub::redacted_url(&t.url),
            t.exchange,
            t.routing_key.source
        ),
    }
}

/// The summary of a valid config.
fn check_summary(s: &Settings) -> CheckSummary {
    use crate::config::raw::AuthMode;
    let base = &s.base;
    let clinics = base
        .clinics
        .iter()
        .map(|c| {
            let k = &c.clinicea;
            ClinicSummary {
                name: c.name.clone(),
                api: k.base_url.origin().ascii_serialization(),
                auth: match k.auth {
                    AuthMode::Header => "header",
                    AuthMode::ApiKeyHeader => "api_key_header",
                    AuthMode::Query => "query",
                    AuthMode::Login => "login",
                }
                .to_string(),
                timezone: k.timezone.to_string(),
                overlap_seconds: k.overlap.as_secs_f64(),
                max_concurrent_requests: k.max_concurrent_requests,
                trigger: k.trigger_token.is_some(),
                resources: c.resources.iter().map(|r| r.name.clone()).collect(),
            }
        })
        .collect();
    let resources = base
        .resources
        .iter()
        .map(|r| ResourceSummary {
            name: r.name.clone(),
            path: r.path.clone(),
            poll_interval_seconds: r.poll_interval.as_secs_f64(),
            poll_interval_min_seconds: r.poll_interval_min.as_secs_f64(),
            since_param: r.since_param.clone(),
            page_param: r.page_param.clone(),
            first_page: r.first_page,
            page_size: r.page_size,
        })
        .collect();
    let mut dests: Vec<_> = s.pipeline.destinations.values().collect();
    dests.sort_by(|a, b| a.name.cmp(&b.name));
    CheckSummary {
        clinics,
        resources,
        destinations: dests
            .into_iter()
            .map(|d| DestinationSummary {
                name: d.name.clone(),
                kind: d.kind_str().to_string(),
                target: target_text(&d.target),
                retries: d.retry.schedule.len(),
                quiet_hours: d.quiet_hours.map(|q| q.to_string()),
                digest: d.digest.as_ref().map(digest_text),
            })
            .collect(),
        rules: s.pipeline.rules.describe(),
        store: store_text(s),
        listen: base.listen.to_string(),
        alerts: alerts_text(s),
    }
}

/// Where the store is: its folder, or the database without a password.
fn store_text(s: &Settings) -> String {
    match &s.base.store.backend {
        crate::config::StoreBackend::Sled => s.base.store.path.display().to_string(),
        crate::config::StoreBackend::Postgres { url, lease } => {
            match crate::outbox::postgres::connect_options(url.expose()) {
                Ok(o) => format!(
                    "postgres://{}:{}/{} (lease {}s)",
                    o.get_host(),
                    o.get_port(),
                    o.get_database().unwrap_or(""),
                    lease.as_secs()
                ),
                Err(_) => "postgres (an unreadable URL)".into(),
            }
        }
    }
}

/// A short, secret-free summary of what a config would run.
pub(crate) fn summary(s: &Settings) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let base = &s.base;
    let clinic_line = |c: &crate::config::Clinic| {
        let k = &c.clinicea;
        format!(
            "{} (auth: {:?}, timezone {}, overlap {:?}, at most {} requests at once{})",
            k.base_url.origin().ascii_serialization(),
            k.auth,
            k.timezone,
            k.overlap,
            k.max_concurrent_requests,
            if k.trigger_token.is_some() {
                ", poll trigger on"
            } else {
                ""
            }
        )
    };
    if base.is_fleet() {
        let _ = writeln!(
            out,
            "Clinics: {} (at most {} API requests at once in all)",
            base.clinics.len(),
            base.max_concurrent_requests
        );
        for c in &base.clinics {
            let names: Vec<&str> = c.resources.iter().map(|r| r.name.as_str()).collect();
            let _ = writeln!(out, "  {:<14} {}", c.name, clinic_line(c));
            let _ = writeln!(out, "  {:<14} polls {}", "", names.join(", "));
        }
    } else if let Some(c) = base.clinics.first() {
        let _ = writeln!(out, "Clinicea: {}", clinic_line(c));
    }
    let _ = writeln!(out, "Resources:");
    for r in &base.resources {
        let _ = writeln!(
            out,
            "  {:<14} GET {} every {:?}{} ({}, pages from {} by {}, {} per page)",
            r.name,
            r.path,
            r.poll_interval,
            if r.poll_interval_min < r.poll_interval {
                format!(" ({:?} after a change)", r.poll_interval_min)
            } else {
                String::new()
            },
            r.since_param,
            r.first_page,
            r.page_param,
            r.page_size
        );
    }
    let _ = writeln!(out, "Destinations:");
    let mut dests: Vec<_> = s.pipeline.destinations.values().collect();
    dests.sort_by(|a, b| a.name.cmp(&b.name));
    for d in dests {
        let quiet = match &d.quiet_hours {
            Some(q) => format!("; quiet hours, clinic time: {q}"),
            None => String::new(),
        };
        let digest = match &d.digest {
            Some(g) => format!("; digest, clinic time: {}", digest_text(g)),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:<14} {:<11} {} (retries: {}{quiet}{digest})",
            d.name,
            d.kind_str(),
            target_text(&d.target),
            d.retry.schedule.len()
        );
    }
    let _ = writeln!(out, "Rules:");
    for line in s.pipeline.rules.describe() {
        let _ = writeln!(out, "  {line}");
    }
    if let Some(a) = alerts_text(s) {
        let _ = writeln!(out, "Alerts: {a}");
    }
    let _ = writeln!(out, "Store: {}   Listen: {}", store_text(s), s.base.listen);
    out
}

/// A digest as `check` shows it: `every 1h, at most 50, template digest`.
fn digest_text(d: &crate::config::digest::Digest) -> String {
    format!(
        "{}, at most {}, template {}",
        d.schedule.describe(),
        d.max,
        d.template.base
    )
}

/// What `alerts:` raises and where, in one line: `to ops (a destination failing 30m, ...)`.
fn alerts_text(s: &Settings) -> Option<String> {
    let a = s.alerts.as_ref()?;
    let mut on = Vec::new();
    if let Some(d) = a.destination_failing_for {
        on.push(format!("a destination failing {d:?}"));
    }
    if a.stale_resource {
        on.push("a stale resource".to_string());
    }
    if a.api_unauthorized {
        on.push("a refused API key (401/403)".to_string());
    }
    let on = if on.is_empty() {
        "nothing".to_string()
    } else {
        on.join(", ")
    };
    Some(format!("to {} on {on}", a.notify.join(", ")))
}
