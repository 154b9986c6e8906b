//! What a digest says: each change's item (its template context and what the destination's
//! `template` rendered for it, kept in the store until the window closes) and the one message
//! the digest template renders from the items of a closed window.
//!
//! The digest template sees `changes` (the items, oldest first: each the change model of one
//! delivery plus `text`, and for email `html` and `subject`), `count`, `destination`, `clinic`,
//! `timezone`, `window.from` / `window.to` (RFC 3339, UTC; the `date` helper shows them in the
//! clinic's zone) and `early` (true when the digest went out because it was full).

use crate::config::destination::{InlineTemplate, TemplateFile, TemplatePart};
use crate::config::digest::{Digest, DEFAULT_DIGEST_SUBJECT, DEFAULT_DIGEST_TEMPLATE};
use crate::config::problem::Problem;
use crate::config::{Destination, Target};
use crate::net::mail;
use crate::route::chat;
use crate::route::plan::{EmailMessage, Payload, Pipeline};
use crate::route::render::{self, Templates};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

/// One change's element of a digest's `changes`: its template context with what the
/// destination's `template` rendered (`text`; `html` and `subject` for email).
pub(crate) fn item(ctx: &Value, text: &str, html: Option<&str>, subject: Option<&str>) -> Value {
    let mut item = ctx.clone();
    if let Value::Object(m) = &mut item {
        m.insert("text".into(), Value::String(text.to_string()));
        m.insert("html".into(), html.map_or(Value::Null, |h| h.into()));
        m.insert("subject".into(), subject.map_or(Value::Null, |s| s.into()));
    }
    item
}

/// The window a digest covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// When its oldest change was stored.
    pub(crate) from: DateTime<Utc>,
    /// When it closed (or, for an early digest, when it was flushed).
    pub(crate) to: DateTime<Utc>,
    /// Whether it went out early because it was full.
    pub(crate) early: bool,
}

/// The digest template's context.
pub(crate) fn context(
    items: Vec<Value>,
    destination: &str,
    clinic: &str,
    tz: chrono_tz::Tz,
    window: Window,
) -> Value {
    json!({
        "count": items.len(),
        "changes": items,
        "destination": destination,
        "clinic": clinic,
        "timezone": tz.name(),
        "window": {
            "from": window.from.to_rfc3339_opts(SecondsFormat::Secs, true),
            "to": window.to.to_rfc3339_opts(SecondsFormat::Secs, true),
        },
        "early": window.early,
    })
}

/// The digest template of a destination: its own, or the shipped default when it has no digest
/// (any more: a reload took it away while changes waited; they go out with the defaults).
fn template_of(dest: &Destination) -> TemplateFile {
    match &dest.digest {
        Some(d) => d.template.clone(),
        None => TemplateFile {
            base: DEFAULT_DIGEST_TEMPLATE.into(),
            part: match dest.target {
                Target::Email { .. } => TemplatePart::EmailBody,
                _ => TemplatePart::ChatText,
            },
            key: format!("destinations.{}.digest_template", dest.name),
            line: None,
        },
    }
}

/// Renders one digest of `dest` (to `recipient`, for email) as the payload of one outbox entry.
/// `id` is the digest's id (its `webhook-id`; the email's `Message-ID` derives from it). The error
/// names the template that failed, never a value.
pub(crate) fn render(
    pipeline: &Pipeline,
    dest: &Destination,
    recipient: &str,
    id: &str,
    ctx: &Value,
) -> Result<Payload, String> {
    let templates = &pipeline.templates;
    let template = template_of(dest);
    match &dest.target {
        Target::Email { from, reply_to, .. } => {
            let subject = match dest.digest.as_ref().and_then(|d| d.subject.as_ref()) {
                Some(s) => templates
                    .render(&s.name, ctx)
                    .map_err(|e| format!("digest subject of {}: {e}", dest.name))?,
                None => DEFAULT_DIGEST_SUBJECT.replace("{{count}}", &ctx["count"].to_string()),
            };
            let (text, html) = templates.render_email(&template, ctx)?;
            Ok(Payload::Email(EmailMessage {
                from: from.clone(),
                to: recipient.to_string(),
                reply_to: reply_to.clone(),
                subject: subject.trim().replace(['\r', '\n'], " "),
                text,
                html,
                message_id: mail::message_id(
                    &format!("{id}/{}/{recipient}", dest.name),
                    &mail::domain_of(from),
                ),
            }))
        }
        Target::Chat { kind, .. } => {
            let name = template.text();
            let text = templates
                .render_chat(*kind, &name, ctx)
                .map_err(|e| format!("digest template {name}: {e}"))?;
            // Cut to the service's limits as a single change's message is.
            Ok(Payload::Chat {
                body: chat::body(*kind, &text),
            })
        }
        Target::Webhook(_) | Target::Nats(_) | Target::Amqp(_) => Err(format!(
            "destination {} is not an email or chat destination and has no digests",
            dest.name
        )),
    }
}

/// A digest context of two sample changes of `resource` for destination `dest`, for `check`.
pub(crate) fn sample_context(dest: &str, resource: &str) -> Value {
    let change = render::sample_change(resource);
    let tz = chrono_tz::UTC;
    let ctx = render::context(&change, "check", &["check".to_string()], dest, tz);
    let one = item(
        &ctx,
        "(the change's message)",
        Some("<p>(html)</p>"),
        Some("(subject)"),
    );
    context(
        vec![one.clone(), one],
        dest,
        &change.clinic,
        tz,
        Window {
            from: change.detected_at,
            to: change.detected_at,
            early: false,
        },
    )
}

/// Renders a destination's digest templates strictly against a sample digest of `resource`, for
/// `check`: a misspelt field is a problem at `digest_template` (or the digest subject).
pub(crate) fn check(
    templates: &Templates,
    dest: &Destination,
    digest: &Digest,
    resource: &str,
) -> Vec<Problem> {
    let ctx = sample_context(&dest.name, resource);
    let mut names: Vec<(String, Option<&InlineTemplate>)> = vec![(digest.template.text(), None)];
    if matches!(dest.target, Target::Email { .. }) && templates.has(&digest.template.html()) {
        names.push((digest.template.html(), None));
    }
    if let Some(s) = &digest.subject {
        names.push((s.name.clone(), Some(s)));
    }
    let mut problems = Vec::new();
    for (name, inline) in names {
        if let Err(mut p) = templates.check_ctx(&name, resource, &ctx) {
            p.key = inline.map_or(digest.template.key.clone(), |t| t.key.clone());
            p.line = inline.map_or(digest.template.line, |t| t.line);
            p.message = format!(
                "{} (rendering the digest of destination {} on sample {resource} records)",
                p.message, dest.name
            );
            problems.push(p);
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_context_lists_the_items_and_counts_them() {
        let ctx = sample_context("front-desk", "leads");
        assert_eq!(ctx["count"], 2);
        assert_eq!(ctx["changes"][0]["text"], "(the change's message)");
        assert_eq!(ctx["changes"][1]["resource"], "leads");
        assert_eq!(ctx["window"]["from"], "2026-11-29T10:00:03Z");
    }

    #[test]
    fn a_chat_digest_is_cut_to_the_service_s_limit() {
        let items: Vec<Value> = (0..400)
            .map(|i| item(&json!({"id": i}), &"x".repeat(100), None, None))
            .collect();
        let w = Window {
            from: Utc::now(),
            to: Utc::now(),
            early: false,
        };
        let ctx = context(items, "chat", "default", chrono_tz::UTC, w);
        let t = Templates::shipped().unwrap();
        let text = t
            .render_chat(crate::config::ChatKind::Discord, "digest.txt", &ctx)
            .unwrap();
        assert!(text.starts_with("400 new changes for chat"), "{text:.80}");
        let body: Value =
            serde_json::from_str(&chat::body(crate::config::ChatKind::Discord, &text)).unwrap();
        let content = body["content"].as_str().unwrap();
        assert!(content.chars().count() <= 2000, "{}", content.len());
    }
}
