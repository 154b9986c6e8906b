//! The commands, one module each. A command's `run` builds what it needs from the config (the
//! store, or the daemon's [`Engine`](crate::daemon::engine::Engine)) and prints what a function of
//! its own returns as text (`status_text`, `dead_text`, ...), so the text can be tested without
//! a process. `main.rs` only parses the command line and calls `run`. Here: compiling a config
//! into [`Settings`], and what several commands share.

pub mod check;
pub mod dead;
pub mod once;
pub mod purge;
pub mod status;
pub mod test_rule;
pub mod verify;

use crate::config::{self, Base, Config, ConfigError, Problem};
use crate::deliver::email::SmtpSettings;
use crate::deliver::outcome::RetryPolicy;
use crate::deliver::Destination;
use crate::outbox::store::Store;
use crate::route::plan::Pipeline;
use crate::route::render::Templates;
use crate::route::rules::{self, CompileContext};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// A config compiled all the way: rules, templates, destinations, SMTP.
pub struct Settings {
    /// Clinicea, resources, store, listen.
    pub base: Base,
    /// Rules, templates and destinations.
    pub pipeline: Arc<Pipeline>,
    /// The SMTP server, when email destinations exist.
    pub smtp: Option<SmtpSettings>,
}

/// Compiles a parsed config; every problem is collected, with its line.
pub fn compile(cfg: Config) -> Result<Settings, ConfigError> {
    let Config { base, raw } = cfg;
    let file = base.file.clone();
    let mut problems: Vec<Problem> = Vec::new();
    let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();

    let mut templates = match Templates::load(base.templates_dir.as_deref()) {
        Ok(t) => t,
        Err(ps) => {
            problems.extend(ps);
            // Go on with the shipped templates alone, to report the rest of the config's problems
            // too; if even those fail (the unit tests rule that out), there is nothing to go on with.
            match Templates::shipped() {
                Ok(t) => t,
                Err(_) => return Err(ConfigError { file, problems }),
            }
        }
    };
    let default_retry = match &raw.retry {
        Some(r) => crate::deliver::retry_policy(Some(&r.value), &RetryPolicy::default())
            .unwrap_or_else(|e| {
                problems.push(Problem::at(config::line_of(r), "retry", e));
                RetryPolicy::default()
            }),
        None => RetryPolicy::default(),
    };
    let smtp = raw
        .smtp
        .as_ref()
        .and_then(|s| match SmtpSettings::from_raw(&s.value, &base_dir) {
            Ok(v) => Some(v),
            Err(mut p) => {
                p.line = p.line.or(config::line_of(s));
                problems.push(p);
                None
            }
        });
    // Example placeholders in secret-bearing keys (destinations check their own).
    let cline = config::line_of(&raw.clinicea);
    config::check_placeholder(
        &raw.clinicea.value.api_key,
        cline,
        "clinicea.api_key",
        &mut problems,
    );
    if let Some(l) = &raw.clinicea.value.login {
        config::check_placeholder(&l.password, cline, "clinicea.login.password", &mut problems);
    }
    if let Some(t) = &raw.metrics_token {
        config::check_placeholder(t, None, "metrics_token", &mut problems);
    }
    if let Some(s) = &raw.smtp {
        let line = config::line_of(s);
        if let Err(e) =
            crate::net::egress::Policy::smtp(s.value.allow_private).check_host(&s.value.host)
        {
            problems.push(Problem::at(line, "smtp.host", e.reason));
        }
        if let Some(p) = &s.value.password {
            config::check_placeholder(p, line, "smtp.password", &mut problems);
        }
    }
    let smtp_from = raw.smtp.as_ref().map(|s| s.value.from.0.clone());
    if let Some(from) = &smtp_from {
        if let Err(e) = crate::net::mail::validate_address(from) {
            problems.push(Problem::at(
                raw.smtp.as_ref().and_then(config::line_of),
                "smtp.from",
                e,
            ));
        }
    }
    let mut destinations = HashMap::new();
    for (name, spanned) in &raw.destinations {
        match Destination::from_raw(
            name,
            &spanned.value,
            config::line_of(spanned),
            &default_retry,
            smtp_from.as_deref(),
            &mut templates,
        ) {
            Ok(d) => {
                destinations.insert(name.clone(), Arc::new(d));
            }
            Err(ps) => problems.extend(ps),
        }
    }
    let dest_names: Vec<String> = raw.destinations.keys().cloned().collect();
    let resource_names: Vec<String> = base.resources.iter().map(|r| r.name.clone()).collect();
    let rules = match rules::compile(
        &raw.rules,
        &CompileContext {
            destinations: &dest_names,
            resources: &resource_names,
            timezone: base.clinicea.timezone,
        },
    ) {
        Ok(r) => Some(r),
        Err(ps) => {
            problems.extend(ps);
            None
        }
    };
    // Render every template a rule uses against a sample record of the rule's resource, so a
    // missing field or a helper error shows now and not at 3 a.m.
    if let Some(rules) = &rules {
        for (rule_resource, dest) in rules.resource_destinations() {
            let Some(d) = destinations.get(&dest) else {
                continue;
            };
            let resource = if rule_resource == "*" {
                resource_names.first().cloned().unwrap_or_default()
            } else {
                rule_resource
            };
            let names: Vec<String> = match &d.target {
                crate::deliver::Target::Webhook(_) => vec![],
                crate::deliver::Target::Chat { template, .. } => vec![format!("{template}.txt")],
                crate::deliver::Target::Email {
                    template, subject, ..
                } => {
                    let mut v = vec![format!("{template}.txt"), subject.clone()];
                    if templates.has(&format!("{template}.html")) {
                        v.push(format!("{template}.html"));
                    }
                    v
                }
            };
            for n in names {
                if let Err(mut p) = templates.check(&n, &resource) {
                    // Inline templates (subjects, recipients) are reported at their destination.
                    if let Some(rest) = n.strip_prefix("destination:") {
                        let mut parts = rest.splitn(3, ':');
                        let (dname, what, idx) = (
                            parts.next().unwrap_or(""),
                            parts.next().unwrap_or(""),
                            parts.next(),
                        );
                        p.key = match idx {
                            Some(i) => format!("destinations.{dname}.{what}[{i}]"),
                            None => format!("destinations.{dname}.{what}"),
                        };
                        p.line = raw.destinations.get(dname).and_then(config::line_of);
                    }
                    p.message = format!(
                        "{} (rendering for destination {dest} on a sample {resource} record)",
                        p.message
                    );
                    if !problems.contains(&p) {
                        problems.push(p);
                    }
                }
            }
        }
    }
    let rules = match rules {
        Some(r) if problems.is_empty() => r,
        _ => {
            problems.sort_by_key(|p| p.line.unwrap_or(0));
            return Err(ConfigError { file, problems });
        }
    };
    let pipeline = Pipeline {
        rules,
        templates,
        destinations,
        timezone: base.clinicea.timezone,
    };
    Ok(Settings {
        base,
        pipeline: Arc::new(pipeline),
        smtp,
    })
}

/// Loads and compiles a config file with the process environment.
pub fn load_settings(path: &Path) -> Result<Settings, ConfigError> {
    load_settings_with(path, &config::env_vars())
}

/// Loads and compiles a config file with the given variables.
pub fn load_settings_with(
    path: &Path,
    vars: &HashMap<String, String>,
) -> Result<Settings, ConfigError> {
    compile(config::load(path, vars)?)
}

/// The store, for a command that reads or changes it while no notifier runs; a store a running
/// notifier holds is named as such, with where its state can be read instead.
fn open_store_for_cli(settings: &Settings) -> anyhow::Result<Store> {
    Store::open(&settings.base.store.path, settings.base.store.cache_bytes).map_err(|e| match e {
        crate::outbox::store::StoreError::Locked { path } => anyhow::anyhow!(
            "the store at {path} is in use by a running notifier; stop it first (sled allows one process per store), or read its state from /metrics on the address it listens on ({})",
            settings.base.listen
        ),
        other => other.into(),
    })
}

/// Text from outside (a receiver's response, a reason quoting it, a record id) made safe to print
/// on a terminal: control characters (ESC, CSI, BEL, backspace, carriage return, newline, DEL,
/// the C1 range) and the invisible bidirectional overrides that reorder what a line shows are
/// written as `\u{..}` escapes, and a backslash as `\\` so an escape cannot be faked.
fn terminal_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() || bidi {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}
