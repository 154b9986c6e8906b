//! `check`: validate the config, templates and environment, and print what would run.

use crate::daemon::settings::{load_settings, Settings};
use std::path::Path;
use std::process::ExitCode;

/// `check`: validate and print what would run.
pub fn run(config: &Path) -> anyhow::Result<ExitCode> {
    match load_settings(config) {
        Ok(s) => {
            print!("{}", summary(&s));
            println!("{}: OK", config.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
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
            "{} (auth: {:?}, timezone {}, overlap {:?}, at most {} requests at once)",
            k.base_url.origin().ascii_serialization(),
            k.auth,
            k.timezone,
            k.overlap,
            k.max_concurrent_requests
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
            "  {:<14} GET {} every {:?} ({}, pages from {} by {}, {} per page)",
            r.name, r.path, r.poll_interval, r.since_param, r.first_page, r.page_param, r.page_size
        );
    }
    let _ = writeln!(out, "Destinations:");
    let mut dests: Vec<_> = s.pipeline.destinations.values().collect();
    dests.sort_by(|a, b| a.name.cmp(&b.name));
    for d in dests {
        let where_ = match &d.target {
            crate::config::Target::Webhook(t) => crate::net::scrub::redacted_url(&t.url),
            crate::config::Target::Chat { url, .. } => {
                format!("{}://{}/…", url.scheme(), url.host_str().unwrap_or(""))
            }
            crate::config::Target::Email { to, template, .. } => {
                format!("{} recipient(s), template {template}", to.len())
            }
            crate::config::Target::Nats(t) => format!(
                "{} subject {}",
                crate::net::scrub::redacted_url(&t.url),
                t.subject.source
            ),
            crate::config::Target::Amqp(t) => format!(
                "{} exchange {:?} routing key {}",
                crate::net::scrub::redacted_url(&t.url),
                t.exchange,
                t.routing_key.source
            ),
        };
        let _ = writeln!(
            out,
            "  {:<14} {:<11} {} (retries: {})",
            d.name,
            d.kind_str(),
            where_,
            d.retry.schedule.len()
        );
    }
    let _ = writeln!(out, "Rules:");
    for line in s.pipeline.rules.describe() {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(
        out,
        "Store: {}   Listen: {}",
        s.base.store.path.display(),
        s.base.listen
    );
    out
}
