//! A config compiled all the way ([`Settings`]): [`crate::config::load()`]'s validated config, then
//! the compile steps of routing, which sit above it: the template registry (the folder, every
//! destination's inline templates and template files) and the rules. Every problem of every step
//! comes back at once, in one [`ConfigError`], each with its line and key.

use crate::config::destination::{InlineTemplate, TemplateFile, TemplatePart};
use crate::config::{self, Base, Config, ConfigError, Problem, SmtpSettings, Target};
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
    pub(crate) smtp: Option<SmtpSettings>,
    /// `alerts:`, when the operator asked for alerts.
    pub(crate) alerts: Option<config::alerts::Alerts>,
}

/// Loads and compiles a config file with the process environment.
pub(crate) fn load_settings(path: &Path) -> Result<Settings, ConfigError> {
    load_settings_with(path, &config::env_vars())
}

/// Loads and compiles a config file with the given variables: the config's own problems and
/// those of the rules and templates, all at once.
pub fn load_settings_with(
    path: &Path,
    vars: &HashMap<String, String>,
) -> Result<Settings, ConfigError> {
    let (cfg, problems) = config::load::validate(config::load::parse_file(path, vars)?, path);
    finish(cfg, problems)
}

/// Compiles a validated config's rules and templates.
pub fn compile(cfg: Config) -> Result<Settings, ConfigError> {
    finish(cfg, Vec::new())
}

/// Compiles the rules and templates of `cfg`, adding their problems to those `cfg` already has.
fn finish(cfg: Config, mut problems: Vec<Problem>) -> Result<Settings, ConfigError> {
    let file = cfg.base.file.clone();
    let mut templates = match Templates::load(cfg.base.templates_dir.as_deref()) {
        Ok(t) => t,
        Err(ps) => {
            problems.extend(ps);
            // Go on with the shipped templates alone, to report the rest of the config's problems
            // too; if even those fail (the unit tests rule that out), there is nothing to go on with.
            match Templates::shipped() {
                Ok(t) => t,
                Err(_) => return Err(ConfigError::new(file, problems)),
            }
        }
    };
    for t in &cfg.inline_templates {
        if let Err(p) = templates.register_inline(&t.name, &t.source) {
            // The inline template's own line 1 is its destination's line in the file.
            problems.push(Problem {
                line: t.line,
                key: t.key.clone(),
                ..p
            });
        }
    }
    for f in &cfg.template_files {
        if !templates.has(&f.required()) {
            problems.push(missing_template(f));
        }
    }
    if cfg.alerts.is_some() {
        problems.extend(crate::daemon::alerts::check_templates(&templates));
    }
    let resource_names: Vec<String> = cfg.base.resources.iter().map(|r| r.name.clone()).collect();
    let clinic_names = cfg.base.clinic_names();
    let timezones: std::collections::BTreeMap<String, chrono_tz::Tz> = cfg
        .base
        .clinics
        .iter()
        .map(|c| (c.name.clone(), c.clinicea.timezone))
        .collect();
    let rules = match rules::compile(
        &cfg.rules,
        &CompileContext {
            destinations: &cfg.destination_names,
            resources: &resource_names,
            clinics: &clinic_names,
            timezone: cfg.base.timezone,
            timezones: &timezones,
        },
    ) {
        Ok(r) => Some(r),
        Err(ps) => {
            problems.extend(ps);
            None
        }
    };
    let destinations: HashMap<String, Arc<config::Destination>> = cfg
        .destinations
        .into_iter()
        .map(|d| (d.name.clone(), Arc::new(d)))
        .collect();
    // Render every template a rule uses against a sample record of the rule's resource, so a
    // missing field or a helper error shows now and not at 3 a.m.
    if let Some(rules) = &rules {
        for (rule_resource, dest) in rules.resource_destinations() {
            // A destination whose templates did not register is reported already.
            let Some(d) = destinations
                .get(&dest)
                .filter(|d| templates_registered(d, &templates))
            else {
                continue;
            };
            let resource = if rule_resource == "*" {
                resource_names.first().cloned().unwrap_or_default()
            } else {
                rule_resource
            };
            // A custom body must be JSON for the sample, shaped as the destination shapes it.
            if let Some(body) = &d.shape.body_template {
                if let Err(mut p) = templates.check_body(&body.json(), &resource, &d.shape) {
                    p.message = format!("{} (body_template of destination {dest})", p.message);
                    if !problems.contains(&p) {
                        problems.push(p);
                    }
                }
            }
            // A subject or routing key must be one once rendered, not only render.
            type Valid = fn(&str) -> Result<(), &'static str>;
            let address: Option<(&InlineTemplate, Valid)> = match &d.target {
                Target::Nats(t) => Some((&t.subject, crate::route::plan::check_subject)),
                Target::Amqp(t) => Some((&t.routing_key, crate::route::plan::check_routing_key)),
                _ => None,
            };
            if let Some((t, valid)) = address {
                let reason = match templates.check_shaped(&t.name, &resource, &d.shape) {
                    Ok(text) => valid(&text).err().map(str::to_string),
                    Err(p) => Some(p.message),
                };
                if let Some(why) = reason {
                    problems.push(Problem::at(
                        t.line,
                        t.key.clone(),
                        format!("{why} (rendering for destination {dest} on a sample {resource} record)"),
                    ));
                }
            }
            // The registry names, each with the inline template it is, if it is one.
            let names: Vec<(String, Option<&InlineTemplate>)> = match &d.target {
                Target::Webhook(_) | Target::Nats(_) | Target::Amqp(_) => vec![],
                Target::Chat { template, .. } => vec![(template.text(), None)],
                Target::Email {
                    template, subject, ..
                } => {
                    let mut v = vec![
                        (template.text(), None),
                        (subject.name.clone(), Some(subject)),
                    ];
                    if templates.has(&template.html()) {
                        v.push((template.html(), None));
                    }
                    v
                }
            };
            // A digest template sees a list of changes, rendered against a sample digest.
            if let Some(dg) = d
                .digest
                .as_ref()
                .filter(|g| templates.has(&g.template.text()))
            {
                for p in crate::route::digest::check(&templates, d, dg, &resource) {
                    if !problems.contains(&p) {
                        problems.push(p);
                    }
                }
            }
            for (name, inline) in names {
                if let Err(mut p) = templates.check(&name, &resource) {
                    // Inline templates (subjects) are reported at their destination.
                    if let Some(t) = inline {
                        p.key = t.key.clone();
                        p.line = t.line;
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
        _ => return Err(ConfigError::new(file, problems)),
    };
    let pipeline = Pipeline {
        rules,
        templates,
        destinations,
        timezones,
    };
    Ok(Settings {
        base: cfg.base,
        pipeline: Arc::new(pipeline),
        smtp: cfg.smtp,
        alerts: cfg.alerts,
    })
}

/// Whether every template `d` names is in the registry (inline ones registered, files found).
fn templates_registered(d: &config::Destination, templates: &Templates) -> bool {
    let body = d
        .shape
        .body_template
        .as_ref()
        .is_none_or(|t| templates.has(&t.json()));
    body && match &d.target {
        Target::Webhook(_) => true,
        Target::Nats(t) => templates.has(&t.subject.name),
        Target::Amqp(t) => templates.has(&t.routing_key.name),
        Target::Chat { template, .. } => templates.has(&template.text()),
        Target::Email {
            to,
            subject,
            template,
            ..
        } => {
            templates.has(&template.text())
                && templates.has(&subject.name)
                && to.iter().all(|t| templates.has(&t.name))
        }
    }
}

/// The problem for a template file that neither the templates folder nor the binary has.
fn missing_template(f: &TemplateFile) -> Problem {
    let message = match f.part {
        TemplatePart::EmailBody => format!(
            "no template {:?} (expected {}.txt.hbs in the templates folder or built in)",
            f.base, f.base
        ),
        TemplatePart::ChatText => format!("no template {:?} (expected {}.txt.hbs)", f.base, f.base),
        TemplatePart::JsonBody => format!(
            "no template {:?} (expected {}.json.hbs in the templates folder)",
            f.base, f.base
        ),
    };
    Problem::at(f.line, f.key.clone(), message)
}
