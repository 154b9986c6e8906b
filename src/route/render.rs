//! Templates: the handlebars registry that renders email bodies, subjects, recipients and chat
//! messages from the change model; [`context`] lists the names a template sees (`clinic`,
//! `record`, ...).
//!
//! Template names are file names without `.hbs`: `new-lead.txt` renders `new-lead.txt.hbs`,
//! `new-lead.html` renders `new-lead.html.hbs`. The shipped templates in `templates/` are embedded
//! in the binary; a file of the same name in the configured folder overrides one, and other files
//! there add templates.
//!
//! Escaping: `*.txt` templates (and inline templates, used for subjects and recipients) never
//! escape; `*.html` templates HTML-escape every `{{value}}` (use `{{{value}}}` to opt out). A
//! `*.txt` template rendered for a chat destination ([`Templates::render_chat`]) escapes every
//! `{{value}}` for that service ([`crate::route::chat::escape`]), so a record value never becomes a
//! mention, a link or formatting, while the template's own text may use the service's markup.
//!
//! `*.json` templates (a destination's `body_template`) escape every `{{value}}` as the inside
//! of a JSON string (quotes, backslashes, control characters), so `"name": "{{record.FirstName}}"`
//! stays valid JSON whatever the record holds; `{{json value}}` writes a value as a JSON literal
//! (`"text"` with its quotes, a number, an object). Triple braces, which would print a value
//! unescaped, are refused in them, and what they render must parse as JSON
//! ([`Templates::render_body`], [`Templates::check_body`]).
//!
//! Strictness: real deliveries render **leniently** (a field that is absent renders as an empty
//! string), because Clinicea omits optional fields and one absent field must not kill a staff
//! message. [`Templates::check`] renders **strictly** against a sample record, so a typo such as
//! `{{record.Frist}}` is an error at `check` time, with the template name and line.
//!
//! Helpers, besides handlebars' own (`if`, `each`, `eq`, ...):
//! - `{{date record.StartDateTime "%a %d %b %H:%M"}}`: a timestamp (RFC 3339, or offset-less and
//!   then read in the clinic's zone) shown in the clinic's zone (`timezone` in the context, or
//!   `tz="Europe/London"`); the unset `0001-01-01T00:00:00` renders empty. Default format
//!   [`DEFAULT_DATE_FORMAT`].
//! - `{{default record.Email "no email"}}`: the fallback when the value is absent, null or empty.
//! - `{{show from}}`: a value for people: timestamps formatted, empty as `(empty)`.
//! - `{{truncate record.Notes 80}}`: at most 80 characters, ending with `…` when cut.
//! - `{{json record}}` (`pretty=true`), `{{join changed_fields ", "}}`, `{{upper x}}`, `{{lower x}}`.

use crate::config::destination::{FieldFilter, Shape, TemplateFile};
use crate::config::{ChatKind, Problem};
use crate::model::{Change, ChangeKind};
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderErrorReason,
    ScopedJson,
};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;

/// The error a render returns (handlebars' own, with template name and line when known).
pub(crate) type RenderError = handlebars::RenderError;

/// The templates shipped in the binary: (file name, source).
pub(crate) const SHIPPED: &[(&str, &str)] = &[
    (
        "new-lead.txt.hbs",
        include_str!("../../templates/new-lead.txt.hbs"),
    ),
    (
        "new-lead.html.hbs",
        include_str!("../../templates/new-lead.html.hbs"),
    ),
    (
        "appointment-change.txt.hbs",
        include_str!("../../templates/appointment-change.txt.hbs"),
    ),
    (
        "appointment-change.html.hbs",
        include_str!("../../templates/appointment-change.html.hbs"),
    ),
    (
        "lead-chat.txt.hbs",
        include_str!("../../templates/lead-chat.txt.hbs"),
    ),
    (
        "appointment-chat.txt.hbs",
        include_str!("../../templates/appointment-chat.txt.hbs"),
    ),
    (
        "patient-chat.txt.hbs",
        include_str!("../../templates/patient-chat.txt.hbs"),
    ),
    (
        "change.txt.hbs",
        include_str!("../../templates/change.txt.hbs"),
    ),
    (
        "digest.txt.hbs",
        include_str!("../../templates/digest.txt.hbs"),
    ),
    (
        "digest.html.hbs",
        include_str!("../../templates/digest.html.hbs"),
    ),
    (
        "alert.txt.hbs",
        include_str!("../../templates/alert.txt.hbs"),
    ),
    (
        "alert.html.hbs",
        include_str!("../../templates/alert.html.hbs"),
    ),
    (
        "alert-chat.txt.hbs",
        include_str!("../../templates/alert-chat.txt.hbs"),
    ),
];

/// The unset date Clinicea sends for an empty timestamp; the `date` helper renders it as empty.
pub(crate) const UNSET_DATE_PREFIX: &str = "0001-01-01";

/// The format the `date` helper uses when none is given.
pub(crate) const DEFAULT_DATE_FORMAT: &str = "%Y-%m-%d %H:%M";

/// Every chat service, in the order of [`Templates`]' chat registries.
const CHAT_KINDS: [ChatKind; 4] = [
    ChatKind::Slack,
    ChatKind::Teams,
    ChatKind::Discord,
    ChatKind::GoogleChat,
];

/// The registered templates: handlebars registries that differ in how they escape values: one
/// that escapes HTML, one that does not, one that escapes for JSON strings (`*.json` bodies), and
/// one per chat service (the `*.txt` templates again, escaping for that service).
#[derive(Clone)]
pub(crate) struct Templates {
    text: Handlebars<'static>,
    html: Handlebars<'static>,
    json: Handlebars<'static>,
    chat: [Handlebars<'static>; 4],
}

fn chat_index(kind: ChatKind) -> usize {
    match kind {
        ChatKind::Slack => 0,
        ChatKind::Teams => 1,
        ChatKind::Discord => 2,
        ChatKind::GoogleChat => 3,
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("names", &self.names())
            .finish()
    }
}

/// How a registry escapes what `{{value}}` prints.
#[derive(Clone, Copy)]
enum Escaping {
    /// Plain text: nothing.
    None,
    /// HTML entities (handlebars' default).
    Html,
    /// The inside of a JSON string.
    Json,
    /// For one chat service.
    Chat(ChatKind),
}

/// `s` as the inside of a JSON string: what goes between the quotes.
pub(crate) fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted[1..quoted.len().saturating_sub(1).max(1)].to_string()
}

fn new_registry(escaping: Escaping) -> Handlebars<'static> {
    let mut r = Handlebars::new();
    match escaping {
        Escaping::None => r.register_escape_fn(handlebars::no_escape),
        Escaping::Html => {}
        Escaping::Json => r.register_escape_fn(json_escape),
        Escaping::Chat(kind) => {
            r.register_escape_fn(move |s: &str| crate::route::chat::escape(kind, s))
        }
    }
    r.register_helper("date", Box::new(ValueHelper(date_helper)));
    r.register_helper("default", Box::new(ValueHelper(default_helper)));
    r.register_helper("truncate", Box::new(ValueHelper(truncate_helper)));
    r.register_helper("json", Box::new(ValueHelper(json_helper)));
    r.register_helper("join", Box::new(ValueHelper(join_helper)));
    r.register_helper("upper", Box::new(ValueHelper(upper_helper)));
    r.register_helper("lower", Box::new(ValueHelper(lower_helper)));
    r.register_helper("show", Box::new(ValueHelper(show_helper)));
    if matches!(escaping, Escaping::Json) {
        // A JSON literal is written as it is: escaping it again would turn it into a string.
        r.register_helper("json", Box::new(JsonLiteralHelper));
    }
    r
}

fn is_html(name: &str) -> bool {
    name.ends_with(".html")
}

fn is_json(name: &str) -> bool {
    name.ends_with(".json")
}

impl Templates {
    /// The shipped templates only.
    pub(crate) fn shipped() -> Result<Templates, Vec<Problem>> {
        Self::load(None)
    }

    /// The shipped templates, overridden and extended by `NAME.txt.hbs` / `NAME.html.hbs` files in
    /// `dir`. Every problem (unreadable file, syntax error with its line, badly named file) is
    /// returned, keyed by the file's path.
    pub(crate) fn load(dir: Option<&Path>) -> Result<Templates, Vec<Problem>> {
        let mut t = Templates {
            text: new_registry(Escaping::None),
            html: new_registry(Escaping::Html),
            json: new_registry(Escaping::Json),
            chat: CHAT_KINDS.map(|k| new_registry(Escaping::Chat(k))),
        };
        let mut problems = Vec::new();
        for (file, src) in SHIPPED {
            if let Err(p) = t.register_file(file, src, &format!("(built-in) {file}")) {
                problems.push(p);
            }
        }
        if let Some(dir) = dir {
            match std::fs::read_dir(dir) {
                Err(e) => problems.push(Problem::at(
                    None,
                    dir.display().to_string(),
                    format!("cannot read the templates folder: {e}"),
                )),
                Ok(entries) => {
                    let mut paths: Vec<_> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "hbs"))
                        .collect();
                    paths.sort();
                    for path in paths {
                        let key = path.display().to_string();
                        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
                            problems.push(Problem::at(None, key, "file name is not UTF-8"));
                            continue;
                        };
                        match std::fs::read_to_string(&path) {
                            Ok(src) => {
                                if let Err(p) = t.register_file(file, &src, &key) {
                                    problems.push(p);
                                }
                            }
                            Err(e) => problems.push(Problem::at(
                                None,
                                key,
                                format!("cannot read template: {e}"),
                            )),
                        }
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(t)
        } else {
            Err(problems)
        }
    }

    fn register_file(&mut self, file: &str, src: &str, key: &str) -> Result<(), Problem> {
        let name = file.strip_suffix(".hbs").unwrap_or(file);
        if !(name.ends_with(".txt") || is_html(name) || is_json(name)) {
            return Err(Problem::at(
                None,
                key,
                "template files are named NAME.txt.hbs (plain text), NAME.html.hbs (HTML) or \
                 NAME.json.hbs (a JSON body)",
            ));
        }
        self.register(name, src, key)
    }

    fn register(&mut self, name: &str, src: &str, key: &str) -> Result<(), Problem> {
        if is_json(name) {
            if let Some(at) = src.find("{{{") {
                let line = src[..at].matches('\n').count() as u64 + 1;
                return Err(Problem::at(
                    Some(line),
                    key,
                    "triple braces print a value unescaped, which can break the JSON; use \
                     \"{{value}}\" inside a string or {{json value}} for a JSON value",
                ));
            }
        }
        let reg = if is_html(name) {
            &mut self.html
        } else if is_json(name) {
            &mut self.json
        } else {
            &mut self.text
        };
        reg.register_template_string(name, src).map_err(|e| {
            let line = e.pos().map(|(line, _)| line as u64);
            let message = match e.pos() {
                Some((_, col)) => format!("template syntax error (column {col}): {}", e.reason()),
                None => format!("template syntax error: {}", e.reason()),
            };
            Problem::at(line, key, message)
        })?;
        // Chat messages are rendered from `*.txt` templates; the parsed template is shared, not
        // parsed again.
        if name.ends_with(".txt") {
            if let Some(parsed) = self.text.get_template(name).cloned() {
                for reg in &mut self.chat {
                    reg.register_template(name, parsed.clone());
                }
            }
        }
        Ok(())
    }

    /// Registers a template given inline in the config (an email subject, a recipient). It never
    /// escapes unless its name ends in `.html`. `name` is what [`Templates::render`] uses; the
    /// problem's key is that name too.
    pub(crate) fn register_inline(&mut self, name: &str, src: &str) -> Result<(), Problem> {
        self.register(name, src, name)
    }

    /// Whether a template of that name exists (`new-lead.txt`, `new-lead.html`, an inline name).
    pub(crate) fn has(&self, name: &str) -> bool {
        if is_html(name) {
            self.html.has_template(name)
        } else if is_json(name) {
            self.json.has_template(name)
        } else {
            self.text.has_template(name)
        }
    }

    /// Every template name, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .text
            .get_templates()
            .keys()
            .chain(self.html.get_templates().keys())
            .chain(self.json.get_templates().keys())
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Renders a template leniently: an absent field renders as an empty string.
    pub(crate) fn render(&self, name: &str, ctx: &Value) -> Result<String, RenderError> {
        self.registry(name).render(name, ctx)
    }

    /// The registry a template of this name is in.
    fn registry(&self, name: &str) -> &Handlebars<'static> {
        if is_html(name) {
            &self.html
        } else if is_json(name) {
            &self.json
        } else {
            &self.text
        }
    }

    /// Renders a custom JSON body (`NAME.json`) leniently and checks that it parses as JSON. The
    /// error names the template and where the JSON broke, never a value.
    pub(crate) fn render_body(&self, name: &str, ctx: &Value) -> Result<String, String> {
        let body = self
            .render(name, ctx)
            .map_err(|e| format!("body template {name}: {e}"))?;
        valid_json(&body)
            .map_err(|e| format!("body template {name} rendered invalid JSON: {e}"))?;
        Ok(body)
    }

    /// Checks a custom JSON body for `check`: rendered strictly against the sample `resource`
    /// record shaped as the destination shapes it, and again with every string of the sample
    /// holding a quote, a backslash and a newline; both must parse as JSON.
    pub(crate) fn check_body(
        &self,
        name: &str,
        resource: &str,
        shape: &Shape,
    ) -> Result<String, Problem> {
        let sample = sample_change(resource);
        let mut hostile = sample.clone();
        hostile.record = hostile_strings(&hostile.record);
        hostile.previous = hostile.previous.as_ref().map(hostile_strings);
        let mut first = None;
        for (change, what) in [
            (sample, "a sample"),
            (
                hostile,
                "a sample (quotes, backslashes and newlines in every string)",
            ),
        ] {
            let shaped = shaped_change(&change, shape);
            let ctx = context(
                &shaped,
                "check",
                &["check".to_string()],
                "check",
                chrono_tz::UTC,
            );
            let body = self.check_ctx(name, resource, &ctx)?;
            if let Err(e) = valid_json(&body) {
                return Err(Problem::at(
                    None,
                    name,
                    format!("renders invalid JSON on {what} {resource} record: {e}"),
                ));
            }
            first.get_or_insert(body);
        }
        Ok(first.unwrap_or_default())
    }

    /// Renders a `*.txt` template for a chat destination of `kind`, leniently, with every
    /// `{{value}}` escaped for that service ([`crate::route::chat::escape`]).
    pub(crate) fn render_chat(
        &self,
        kind: ChatKind,
        name: &str,
        ctx: &Value,
    ) -> Result<String, RenderError> {
        self.chat[chat_index(kind)].render(name, ctx)
    }

    /// Renders an email body leniently: `NAME.txt` (required) and `NAME.html` when it exists.
    /// Returns `(text, html)`; an error names the template that failed.
    pub(crate) fn render_email(
        &self,
        body: &TemplateFile,
        ctx: &Value,
    ) -> Result<(String, Option<String>), String> {
        let render = |name: String| {
            self.render(&name, ctx)
                .map_err(|e| format!("template {name}: {e}"))
        };
        let text = render(body.text())?;
        let html_name = body.html();
        let html = if self.has(&html_name) {
            Some(render(html_name)?)
        } else {
            None
        };
        Ok((text, html))
    }

    /// Renders `name` strictly against [`sample_change`]`(resource)`, so a field the record does
    /// not have is an error. The problem names the template and the line. Returns the rendered
    /// text, for `check` and `test-rule` to show.
    pub(crate) fn check(&self, name: &str, resource: &str) -> Result<String, Problem> {
        if !self.has(name) {
            return Err(Problem::at(None, name, "no such template"));
        }
        let change = sample_change(resource);
        let ctx = context(
            &change,
            "check",
            &["check".to_string()],
            "check",
            chrono_tz::UTC,
        );
        self.check_ctx(name, resource, &ctx)
    }

    /// [`Templates::check`] against the sample record shaped as `shape` shapes it: for a NATS
    /// subject or an AMQP routing key, which see what the destination's body sees.
    pub(crate) fn check_shaped(
        &self,
        name: &str,
        resource: &str,
        shape: &Shape,
    ) -> Result<String, Problem> {
        let shaped = shaped_change(&sample_change(resource), shape);
        let ctx = context(
            &shaped,
            "check",
            &["check".to_string()],
            "check",
            chrono_tz::UTC,
        );
        self.check_ctx(name, resource, &ctx)
    }

    /// Renders `name` strictly against `ctx`, the context of a sample `resource` record (or of
    /// another sample the caller names as `resource`, e.g. an operator alert).
    pub(crate) fn check_ctx(
        &self,
        name: &str,
        resource: &str,
        ctx: &Value,
    ) -> Result<String, Problem> {
        if !self.has(name) {
            return Err(Problem::at(None, name, "no such template"));
        }
        let mut reg = self.registry(name).clone();
        reg.set_strict_mode(true);
        reg.render(name, ctx).map_err(|e| {
            let line = e.line_no.map(|l| l as u64);
            let reason = match e.reason() {
                RenderErrorReason::MissingVariable(Some(path)) => format!(
                    "field {path:?} is not in a sample {resource} record (is it spelled right?)"
                ),
                RenderErrorReason::MissingVariable(None) => {
                    format!("a helper got a field that is not in a sample {resource} record")
                }
                other => other.to_string(),
            };
            Problem::at(line, e.template_name.clone().unwrap_or(name.into()), reason)
        })
    }
}

/// Whether `text` parses as JSON; the error says where it broke (line and column), not what was
/// there.
fn valid_json(text: &str) -> Result<(), serde_json::Error> {
    serde_json::from_str::<serde::de::IgnoredAny>(text).map(|_| ())
}

/// A copy of `v` with a quote, a backslash and a newline added to every string in it.
fn hostile_strings(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(format!("{s} \"q\" \\ \n end")),
        Value::Array(items) => Value::Array(items.iter().map(hostile_strings).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), hostile_strings(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// An object with only the fields `filter` keeps; anything else (a deleted record's stub is an
/// object too) as it is.
pub(crate) fn shaped_record(v: &Value, filter: &FieldFilter) -> Value {
    match (v, filter) {
        (_, FieldFilter::All) => v.clone(),
        (Value::Object(m), _) => Value::Object(
            m.iter()
                .filter(|(k, _)| filter.keeps(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        _ => v.clone(),
    }
}

/// The change as a shaped body shows it: `record` and `previous` with only the kept fields, and
/// no `previous` unless `include_previous`. `changed_fields` keeps every name (names are not
/// contents).
pub(crate) fn shaped_change(change: &Change, shape: &Shape) -> Change {
    Change {
        record: shaped_record(&change.record, &shape.fields),
        previous: if shape.include_previous {
            change
                .previous
                .as_ref()
                .map(|p| shaped_record(p, &shape.fields))
        } else {
            None
        },
        ..change.clone()
    }
}

/// Fields left out of the context's `changes` list because they change with every edit and say
/// nothing to a person (they stay in `changed_fields`).
pub(crate) const BOOKKEEPING_FIELDS: &[&str] = &[
    "DataStatusStr",
    "DataStatusValue",
    "ModifiedDatetime",
    "ModifiedDateTime",
    "LastModifiedDatetime",
    "LastModifiedDateTime",
];

/// The template context of one delivery: the spec's change model (`clinic`, `change`, `resource`,
/// `id`, `record`, `previous`, `changed_fields`, `server_status`, `detected_at`, `rule`, `rules`,
/// `destination`) plus `timezone` (`tz`, the IANA zone of the change's clinic, which the `date`
/// helper uses) and
/// `changes`, a list of `{field, from, to}` for each changed field of a modified record except the
/// [`BOOKKEEPING_FIELDS`] (empty for added and deleted records).
pub(crate) fn context(
    change: &Change,
    rule: &str,
    rules: &[String],
    destination: &str,
    tz: chrono_tz::Tz,
) -> Value {
    let changes: Vec<Value> = match (&change.previous, change.kind) {
        (Some(prev), ChangeKind::Modified) => change
            .changed_fields
            .iter()
            .filter(|f| !BOOKKEEPING_FIELDS.contains(&f.as_str()))
            .map(|f| {
                json!({
                    "field": f,
                    "from": prev.get(f).cloned().unwrap_or(Value::Null),
                    "to": change.record.get(f).cloned().unwrap_or(Value::Null),
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    json!({
        "clinic": change.clinic,
        "change": change.kind.as_str(),
        "resource": change.resource,
        "id": change.id,
        "record": change.record,
        "previous": change.previous,
        "changed_fields": change.changed_fields,
        "changes": changes,
        "server_status": change.server_status,
        "detected_at": change.detected_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        "rule": rule,
        "rules": rules,
        "destination": destination,
        "timezone": tz.name(),
    })
}

/// A made-up change in the shape of the fixture records, for `check` and examples: an added lead,
/// a modified appointment (rescheduled and cancelled), an added patient, or for any other resource
/// a modified generic record.
pub fn sample_change(resource: &str) -> Change {
    let detected_at = DateTime::parse_from_rfc3339("2026-11-29T10:00:03Z")
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc::now());
    let (kind, record, previous, status) = match resource {
        "leads" => (
            ChangeKind::Added,
            json!({
                "ID": "16a6fc9c-4b99-7980-2f96-afd9f2235b9f",
                "FirstName": "Farhan",
                "LastName": "Butt",
                "Mobile": "+923009823391",
                "Email": "farhan.butt0@example.com",
                "LeadStatus": "HOT",
                "Source": "Website",
                "Notes": "Price enquiry: Hydrafacial",
                "CreatedDatetime": "2026-11-27T09:00:00",
                "ModifiedDatetime": "2026-11-28T09:00:00",
                "DataStatusStr": "Added"
            }),
            None,
            "Added",
        ),
        "appointments" => {
            let prev = json!({
                "ID": "70570871-71c5-b01d-8987-24fb6abc8b22",
                "PatientID": "fbc4457f-7347-ab06-46d0-b0c2d1f5f92b",
                "StartDateTime": "2026-11-30T09:30:00",
                "EndDateTime": "2026-11-30T09:59:00",
                "ServiceName": "Hydrafacial",
                "ServiceCategory": "Skin",
                "StaffTitle": "Dr.",
                "StaffFirstName": "Sana",
                "StaffLastName": "Hussain",
                "CreatedStaffName": "Front Desk",
                "CreatedStaffID": "575f09a6-12c2-f587-30c0-60a12b9796c8",
                "ModifiedStaffName": "Front Desk",
                "PatientName": "Bilal Raza",
                "PatientMobile": "+923218905547",
                "AppointmentStatus": "Confirmed",
                "Notes": "",
                "Duration": 30,
                "IsDeleted": false,
                "DataStatusValue": "Added"
            });
            let mut rec = prev.clone();
            rec["StartDateTime"] = json!("2026-11-30T11:00:00");
            rec["EndDateTime"] = json!("2026-11-30T11:29:00");
            rec["AppointmentStatus"] = json!("Cancelled");
            rec["DataStatusValue"] = json!("Modified");
            (ChangeKind::Modified, rec, Some(prev), "Modified")
        }
        "patients" => (
            ChangeKind::Added,
            json!({
                "ID": "e1c99c58-f8d6-09e1-c2c1-29914de1e402",
                "FullName": "Daniyal Sheikh",
                "FirstName": "Daniyal",
                "LastName": "Sheikh",
                "FileNo": "F1002",
                "PatientUniqueIDNumber": "",
                "Mobile": "3006923559",
                "MobileCountryCode": "+92",
                "Email": "daniyal2@example.com",
                "Gender": "M",
                "Address1": "House 5, Street 12",
                "City": "Islamabad",
                "PostalCode": "54000",
                "CreatedDatetime": "2026-11-01T10:02:00",
                "ModifiedDatetime": "0001-01-01T00:00:00",
                "DataStatusStr": "Added"
            }),
            None,
            "Added",
        ),
        _ => {
            let prev = json!({"ID": "sample-1", "Name": "Sample", "Status": "Active",
                              "ModifiedDatetime": "2026-11-28T09:00:00", "DataStatusStr": "Added"});
            let mut rec = prev.clone();
            rec["Status"] = json!("Inactive");
            rec["ModifiedDatetime"] = json!("2026-11-29T09:59:00");
            rec["DataStatusStr"] = json!("Modified");
            (ChangeKind::Modified, rec, Some(prev), "Modified")
        }
    };
    // What the poller would find changed between the two versions.
    let changed_fields = crate::ingest::diff::changed_fields(
        previous.as_ref(),
        &record,
        crate::config::defaults::STATUS_FIELD,
    );
    Change {
        clinic: crate::model::DEFAULT_CLINIC.into(),
        resource: resource.into(),
        id: record
            .get("ID")
            .and_then(Value::as_str)
            .unwrap_or("sample")
            .into(),
        kind,
        record,
        previous,
        changed_fields,
        server_status: Some(status.into()),
        detected_at,
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

type HelperFn = fn(&Helper<'_>, &Handlebars<'_>, &Context) -> Result<Value, RenderError>;

/// Adapts a plain function to a handlebars helper that returns a value, so the registry's escape
/// function applies to its output and it works in subexpressions.
struct ValueHelper(HelperFn);

impl HelperDef for ValueHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _rc: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        (self.0)(h, r, ctx).map(ScopedJson::Derived)
    }
}

/// `{{json value}}` in a `*.json` template: the value as a JSON literal, written unescaped (it is
/// JSON already); `pretty=true` indents it.
struct JsonLiteralHelper;

impl HelperDef for JsonLiteralHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        match json_helper(h, r, ctx)? {
            Value::String(s) => out.write(&s).map_err(RenderError::from),
            _ => Ok(()),
        }
    }
}

/// Parameter `i`: its value, `None` when absent; in strict mode an absent one is an error.
fn param<'a>(
    h: &'a Helper<'_>,
    r: &Handlebars<'_>,
    i: usize,
) -> Result<Option<&'a Value>, RenderError> {
    match h.param(i) {
        None => Ok(None),
        Some(p) if p.is_value_missing() => {
            if r.strict_mode() {
                Err(RenderErrorReason::MissingVariable(p.relative_path().cloned()).into())
            } else {
                Ok(None)
            }
        }
        Some(p) => Ok(Some(p.value())),
    }
}

fn param_str(h: &Helper<'_>, i: usize) -> Option<String> {
    h.param(i).map(|p| as_text(p.value()))
}

/// A value as text: strings as they are, null as empty, others as JSON.
fn as_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn is_blank(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

fn default_helper(h: &Helper<'_>, _: &Handlebars<'_>, _: &Context) -> Result<Value, RenderError> {
    // Never strict: handling an absent value is the point of `default`.
    let v = h
        .param(0)
        .filter(|p| !p.is_value_missing())
        .map(|p| p.value());
    if is_blank(v) {
        Ok(h.param(1).map(|p| p.value().clone()).unwrap_or(Value::Null))
    } else {
        Ok(v.cloned().unwrap_or(Value::Null))
    }
}

/// The zone dates are shown in: the helper's `tz=` argument, else the context's `timezone`, else UTC.
fn clinic_tz(h: &Helper<'_>, ctx: &Context) -> chrono_tz::Tz {
    h.hash_get("tz")
        .map(|p| as_text(p.value()))
        .or_else(|| ctx.data().get("timezone").map(as_text))
        .and_then(|s| s.parse().ok())
        .unwrap_or(chrono_tz::UTC)
}

/// Formats a timestamp in the clinic's zone. See [`format_date`].
fn date_helper(h: &Helper<'_>, r: &Handlebars<'_>, ctx: &Context) -> Result<Value, RenderError> {
    let Some(v) = param(h, r, 0)? else {
        return Ok(json!(""));
    };
    let fmt = param_str(h, 1).unwrap_or_else(|| DEFAULT_DATE_FORMAT.to_string());
    let tz = clinic_tz(h, ctx);
    format_date(&as_text(v), &fmt, tz)
        .map(Value::String)
        .map_err(|e| RenderErrorReason::Other(e).into())
}

/// Reads a timestamp: RFC 3339, or an offset-less `2026-11-30T09:30:00` (also with a space or
/// fractional seconds, or a bare date) taken to be in `tz`. `None` when `s` is not a timestamp or
/// is Clinicea's unset `0001-01-01T00:00:00`.
pub(crate) fn parse_timestamp(s: &str, tz: chrono_tz::Tz) -> Option<DateTime<chrono_tz::Tz>> {
    let s = s.trim();
    if s.is_empty() || s.starts_with(UNSET_DATE_PREFIX) {
        return None;
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&tz));
    }
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })?;
    // A local time in a DST gap is read as UTC rather than dropped.
    Some(
        tz.from_local_datetime(&naive)
            .earliest()
            .unwrap_or_else(|| Utc.from_utc_datetime(&naive).with_timezone(&tz)),
    )
}

/// Formats `s` (see [`parse_timestamp`]) in `tz` with the chrono format `fmt`. Empty input and
/// Clinicea's unset `0001-01-01T00:00:00` give an empty string; text that is not a timestamp is
/// returned as it is; an invalid format is an error.
pub(crate) fn format_date(s: &str, fmt: &str, tz: chrono_tz::Tz) -> Result<String, String> {
    if s.trim().is_empty() || s.trim().starts_with(UNSET_DATE_PREFIX) {
        return Ok(String::new());
    }
    match parse_timestamp(s, tz) {
        None => Ok(s.to_string()),
        Some(d) => {
            let mut out = String::new();
            write!(out, "{}", d.format(fmt)).map_err(|_| {
                format!("invalid date format {fmt:?} (use chrono's %Y-%m-%d %H:%M)")
            })?;
            Ok(out)
        }
    }
}

/// `{{show value}}`: a value as a person reads it: timestamps in the clinic's zone
/// ([`SHOW_DATE_FORMAT`]), empty and null as `(empty)`, the unset date as `(not set)`, others as
/// text. Meant for the `from`/`to` of `changes`.
fn show_helper(h: &Helper<'_>, r: &Handlebars<'_>, ctx: &Context) -> Result<Value, RenderError> {
    let v = param(h, r, 0)?;
    let tz = clinic_tz(h, ctx);
    Ok(Value::String(match v {
        None | Some(Value::Null) => "(empty)".into(),
        Some(Value::String(s)) if s.trim().is_empty() => "(empty)".into(),
        Some(Value::String(s)) if s.starts_with(UNSET_DATE_PREFIX) => "(not set)".into(),
        Some(Value::String(s)) => match parse_timestamp(s, tz) {
            Some(d) => d.format(SHOW_DATE_FORMAT).to_string(),
            None => s.clone(),
        },
        Some(other) => as_text(other),
    }))
}

/// The format `{{show}}` gives timestamps.
pub(crate) const SHOW_DATE_FORMAT: &str = "%a %d %b %Y, %H:%M";

fn truncate_helper(h: &Helper<'_>, r: &Handlebars<'_>, _: &Context) -> Result<Value, RenderError> {
    let text = param(h, r, 0)?.map(as_text).unwrap_or_default();
    let max = h.param(1).and_then(|p| p.value().as_u64()).ok_or_else(|| {
        RenderErrorReason::Other("truncate needs a length: {{truncate x 80}}".into())
    })?;
    Ok(Value::String(truncate_chars(&text, max as usize)))
}

/// Cuts `s` to at most `max` characters, the last being `…` when it was cut.
pub(crate) fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

fn json_helper(h: &Helper<'_>, r: &Handlebars<'_>, _: &Context) -> Result<Value, RenderError> {
    let v = param(h, r, 0)?.cloned().unwrap_or(Value::Null);
    let pretty = h
        .hash_get("pretty")
        .and_then(|p| p.value().as_bool())
        .unwrap_or(false);
    let s = if pretty {
        serde_json::to_string_pretty(&v)
    } else {
        serde_json::to_string(&v)
    };
    s.map(Value::String)
        .map_err(|e| RenderErrorReason::Other(e.to_string()).into())
}

fn join_helper(h: &Helper<'_>, r: &Handlebars<'_>, _: &Context) -> Result<Value, RenderError> {
    let sep = param_str(h, 1).unwrap_or_else(|| ", ".to_string());
    Ok(Value::String(match param(h, r, 0)? {
        Some(Value::Array(items)) => items.iter().map(as_text).collect::<Vec<_>>().join(&sep),
        Some(v) => as_text(v),
        None => String::new(),
    }))
}

fn upper_helper(h: &Helper<'_>, r: &Handlebars<'_>, _: &Context) -> Result<Value, RenderError> {
    Ok(Value::String(
        param(h, r, 0)?
            .map(as_text)
            .unwrap_or_default()
            .to_uppercase(),
    ))
}

fn lower_helper(h: &Helper<'_>, r: &Handlebars<'_>, _: &Context) -> Result<Value, RenderError> {
    Ok(Value::String(
        param(h, r, 0)?
            .map(as_text)
            .unwrap_or_default()
            .to_lowercase(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(file: &str, idx: usize) -> Value {
        let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
        let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        all[idx].clone()
    }

    fn change_of(resource: &str, record: Value, previous: Option<Value>) -> Change {
        let mut c = sample_change(resource);
        c.kind = if previous.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        c.id = record["ID"].as_str().unwrap().into();
        c.changed_fields = match &previous {
            Some(p) => record
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, v)| p.get(*k) != Some(*v))
                .map(|(k, _)| k.clone())
                .collect(),
            None => record.as_object().unwrap().keys().cloned().collect(),
        };
        c.record = record;
        c.previous = previous;
        c
    }

    fn ctx(c: &Change) -> Value {
        context(
            c,
            "r1",
            &["r1".into()],
            "front-desk",
            chrono_tz::Asia::Karachi,
        )
    }

    fn lines(s: &str) -> Vec<&str> {
        s.lines().collect()
    }

    #[test]
    fn every_shipped_template_passes_strict_check() {
        let t = Templates::shipped().unwrap();
        assert_eq!(t.names().len(), SHIPPED.len());
        // Each against the sample record its name suggests.
        let resource = |name: &str| {
            ["lead", "appointment", "patient"]
                .into_iter()
                .find(|r| name.contains(r))
                .map_or("records".to_string(), |r| format!("{r}s"))
        };
        // The operator's alert templates see an alert, not a change (checked in `daemon::alerts`).
        let problems: Vec<Problem> = t
            .names()
            .iter()
            .filter(|n| !n.starts_with("digest."))
            .filter(|n| !n.starts_with("alert"))
            .filter_map(|n| t.check(n, &resource(n)).err())
            .collect();
        assert_eq!(problems, vec![]);
        // The digest templates see a list of changes.
        let digest = crate::route::digest::sample_context("front-desk", "leads");
        for n in ["digest.txt", "digest.html"] {
            assert!(t.check_ctx(n, "leads", &digest).is_ok(), "{n}");
        }
    }

    #[test]
    fn new_lead_text_and_html() {
        let t = Templates::shipped().unwrap();
        let c = change_of("leads", fixture("leads-v1-page0.json", 1), None);
        let out = t.render("new-lead.txt", &ctx(&c)).unwrap();
        let l = lines(&out);
        assert_eq!(l[0], "New lead: Mehwish Qureshi");
        assert!(l.contains(&"Phone:   +923008085297"), "{out}");
        assert!(l.contains(&"Email:   mehwish.qureshi1@example.com"));
        assert!(l.contains(&"Source:  Instagram"));
        assert!(l.contains(&"Created: Fri 27 Nov 2026, 10:01"), "{out}");
        assert!(l.contains(&"Notes:   Price enquiry: Hydrafacial"));
        assert!(out.contains("What to do: call Mehwish within the hour, or email"));
        let html = t.render("new-lead.html", &ctx(&c)).unwrap();
        assert!(html.contains("<h2 style=\"margin: 0 0 12px 0;\">New lead: Mehwish Qureshi</h2>"));
        assert!(html.contains("<td>mehwish.qureshi1@example.com</td>"));
        let body = |base: &str| TemplateFile {
            base: base.into(),
            part: crate::config::destination::TemplatePart::EmailBody,
            key: "destinations.front-desk.template".into(),
            line: None,
        };
        let (t2, h2) = t.render_email(&body("new-lead"), &ctx(&c)).unwrap();
        assert_eq!((t2, h2), (out.clone(), Some(html.clone())));
        let (_, none) = t.render_email(&body("lead-chat"), &ctx(&c)).unwrap();
        assert_eq!(none, None);

        // A lead with no email: the default shows and the email advice is left out.
        let c = change_of("leads", fixture("leads-v1-page1.json", 1), None);
        let out = t.render("new-lead.txt", &ctx(&c)).unwrap();
        assert!(out.contains("Email:   no email given\n"), "{out}");
        assert!(
            out.contains("call Hamza within the hour, then update"),
            "{out}"
        );
    }

    #[test]
    fn html_escapes_but_text_does_not() {
        let t = Templates::shipped().unwrap();
        let mut rec = fixture("leads-v1-page0.json", 0);
        rec["FirstName"] = json!("<script>alert(1)</script>");
        rec["Notes"] = json!("Tom & Jerry");
        let c = change_of("leads", rec, None);
        let html = t.render("new-lead.html", &ctx(&c)).unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("Tom &amp; Jerry"));
        let text = t.render("new-lead.txt", &ctx(&c)).unwrap();
        assert!(text.starts_with("New lead: <script>alert(1)</script> Butt"));
        assert!(text.contains("Notes:   Tom & Jerry"));
    }

    #[test]
    fn chat_rendering_escapes_values_for_the_service_but_not_the_template() {
        let mut t = Templates::shipped().unwrap();
        t.register_inline(
            "link.txt",
            "<https://clinic.example/leads/{{id}}|Open> *{{record.FirstName}}* {{upper record.FirstName}}",
        )
        .unwrap();
        let mut c = sample_change("leads");
        c.id = "a<b".into();
        c.record["FirstName"] = json!("<users/all> [x](https://evil.example)");
        let ctx = ctx(&c);
        assert_eq!(
            t.render_chat(ChatKind::Slack, "link.txt", &ctx).unwrap(),
            "<https://clinic.example/leads/a&lt;b|Open> *&lt;users/all&gt; [x](https://evil.example)* \
             &lt;USERS/ALL&gt; [X](HTTPS://EVIL.EXAMPLE)"
        );
        assert_eq!(
            t.render_chat(ChatKind::Discord, "link.txt", &ctx).unwrap(),
            r"<https://clinic.example/leads/a\<b|Open> *\<users/all\> \[x\](https://evil.example)* \<USERS/ALL\> \[X\](HTTPS://EVIL.EXAMPLE)"
        );
        // Plain text (email) is not escaped at all.
        assert!(t
            .render("link.txt", &ctx)
            .unwrap()
            .contains("*<users/all> [x](https://evil.example)*"));
        // Inline templates that are not `.txt` (subjects, recipients) are not chat templates.
        t.register_inline("destination:d:subject", "x").unwrap();
        assert!(t
            .render_chat(ChatKind::Slack, "destination:d:subject", &ctx)
            .is_err());
    }

    #[test]
    fn appointment_change_shows_what_changed() {
        let t = Templates::shipped().unwrap();
        let prev = fixture("appointments-v3-getChanges.json", 0);
        let mut rec = prev.clone();
        rec["AppointmentStatus"] = json!("Cancelled");
        rec["StartDateTime"] = json!("2026-11-30T11:00:00");
        let c = change_of("appointments", rec, Some(prev));
        let out = t.render("appointment-change.txt", &ctx(&c)).unwrap();
        let l = lines(&out);
        assert_eq!(l[0], "Appointment modified: Bilal Raza, Mon 30 Nov 11:00");
        assert!(l.contains(&"Patient: Bilal Raza (+923218905547)"), "{out}");
        assert!(l.contains(&"When:    Monday 30 November 2026, 11:00 to 09:59 (Asia/Karachi)"));
        assert!(l.contains(&"With:    Dr. Sana Hussain"));
        assert!(l.contains(&"Service: Hydrafacial"));
        assert!(
            l.contains(&"  - StartDateTime: Mon 30 Nov 2026, 09:30 -> Mon 30 Nov 2026, 11:00"),
            "{out}"
        );
        assert!(!out.contains("DataStatusValue"), "{out}");
        assert!(
            l.contains(&"  - AppointmentStatus: Confirmed -> Cancelled"),
            "{out}"
        );
        assert!(!out.contains("Notes:"));
        let html = t.render("appointment-change.html", &ctx(&c)).unwrap();
        assert!(html.contains("<tr><td>AppointmentStatus</td><td>Confirmed</td><td><strong>Cancelled</strong></td></tr>"));

        let chat = t.render("appointment-chat.txt", &ctx(&c)).unwrap();
        assert_eq!(
            lines(&chat)[0],
            "Appointment modified: Bilal Raza with Dr. Sana Hussain, Mon 30 Nov 11:00 (Hydrafacial, Cancelled)"
        );
        assert!(chat.contains("- AppointmentStatus: Confirmed -> Cancelled\n"));
        assert!(
            chat.contains("- StartDateTime: Mon 30 Nov 2026, 09:30 -> Mon 30 Nov 2026, 11:00\n")
        );
    }

    #[test]
    fn chat_templates() {
        let t = Templates::shipped().unwrap();
        let c = change_of("leads", fixture("leads-v1-page0.json", 1), None);
        let out = t.render("lead-chat.txt", &ctx(&c)).unwrap();
        assert_eq!(
            lines(&out),
            vec![
                "New lead: Mehwish Qureshi (source: Instagram, status: HOT)",
                "Phone: +923008085297 | Email: mehwish.qureshi1@example.com",
                "Notes: Price enquiry: Hydrafacial",
                "Please call within the hour.",
            ]
        );
        let c = change_of("patients", fixture("patients-v1.json", 2), None);
        let out = t.render("patient-chat.txt", &ctx(&c)).unwrap();
        assert_eq!(
            out.trim_end(),
            "New patient: Daniyal Sheikh (file F1002), Islamabad. Registered Sun 01 Nov 10:02."
        );
        let c = change_of(
            "records",
            json!({"ID": "x", "A": 1}),
            Some(json!({"ID": "x", "A": 0})),
        );
        let out = t.render("change.txt", &ctx(&c)).unwrap();
        assert_eq!(
            lines(&out)[0],
            "records record x was modified (rule \"r1\")."
        );
        assert!(out.contains("- A: 0 -> 1\n"), "{out}");
        assert!(out.contains("Detected 2026-11-29 15:00 PKT."), "{out}");
    }

    #[test]
    fn helpers() {
        let mut t = Templates::shipped().unwrap();
        let ctx = json!({"timezone": "Asia/Karachi", "r": {
            "Start": "2026-11-30T09:30:00", "Utc": "2026-11-30T04:30:00Z", "Unset": "0001-01-01T00:00:00",
            "Email": "", "Name": "Ada", "Tags": ["a", "b"], "Long": "abcdefghij"}});
        let cases = [
            ("{{date r.Start \"%H:%M %Z\"}}", "09:30 PKT"),
            ("{{date r.Utc \"%H:%M\"}}", "09:30"),
            ("{{date r.Unset \"%H:%M\"}}", ""),
            ("{{date r.Start}}", "2026-11-30 09:30"),
            ("{{date r.Utc \"%H:%M\" tz=\"Europe/London\"}}", "04:30"),
            ("{{default r.Email \"no email\"}}", "no email"),
            ("{{default r.Missing \"none\"}}", "none"),
            ("{{default r.Name \"none\"}}", "Ada"),
            ("{{truncate r.Long 5}}", "abcd…"),
            ("{{truncate r.Long 50}}", "abcdefghij"),
            ("{{join r.Tags \" / \"}}", "a / b"),
            ("{{json r.Tags}}", "[\"a\",\"b\"]"),
            ("{{upper r.Name}} {{lower r.Name}}", "ADA ada"),
            ("{{upper (default r.Email \"x\")}}", "X"),
            (
                "{{show r.Start}}|{{show r.Email}}|{{show r.Unset}}|{{show r.Name}}",
                "Mon 30 Nov 2026, 09:30|(empty)|(not set)|Ada",
            ),
        ];
        for (i, (src, want)) in cases.iter().enumerate() {
            let name = format!("case{i}");
            t.register_inline(&name, src).unwrap();
            assert_eq!(t.render(&name, &ctx).unwrap(), *want, "{src}");
        }
        // Lenient: an absent field is empty.
        t.register_inline("subject", "Lead {{r.Nope}}!").unwrap();
        assert_eq!(t.render("subject", &ctx).unwrap(), "Lead !");
        t.register_inline("badfmt", "{{date r.Start \"%Q\"}}")
            .unwrap();
        assert!(t.render("badfmt", &ctx).is_err());
    }

    #[test]
    fn a_template_sees_the_change_s_clinic_and_check_s_sample_has_one() {
        let mut t = Templates::shipped().unwrap();
        t.register_inline("c.txt", "{{clinic}}: {{record.FirstName}}")
            .unwrap();
        let mut c = sample_change("leads");
        c.clinic = "north".into();
        assert_eq!(ctx(&c)["clinic"], "north");
        assert_eq!(t.render("c.txt", &ctx(&c)).unwrap(), "north: Farhan");
        // Strict: `clinic` must be in the sample context, or this would be an error.
        assert_eq!(t.check("c.txt", "leads").unwrap(), "default: Farhan");
    }

    #[test]
    fn check_reports_template_and_line() {
        let mut t = Templates::shipped().unwrap();
        t.register_inline("subj.txt", "line one\nNew lead: {{record.Frist}}")
            .unwrap();
        let p = t.check("subj.txt", "leads").unwrap_err();
        assert_eq!(p.key, "subj.txt");
        assert_eq!(p.line, Some(2));
        assert!(p.message.contains("record.Frist"), "{p}");
        t.register_inline("d.txt", "{{date record.Nope \"%H\"}}")
            .unwrap();
        assert!(t.check("d.txt", "leads").is_err());
        assert!(t.check("new-lead.txt", "leads").is_ok());
        assert!(t.check("nope.txt", "leads").is_err());
    }

    #[test]
    fn folder_overrides_and_syntax_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("new-lead.txt.hbs"),
            "Custom {{record.FirstName}}",
        )
        .unwrap();
        std::fs::write(dir.path().join("extra.html.hbs"), "<b>{{id}}</b>").unwrap();
        std::fs::write(dir.path().join("README.md"), "ignored").unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        let c = sample_change("leads");
        assert_eq!(t.render("new-lead.txt", &ctx(&c)).unwrap(), "Custom Farhan");
        assert!(t.has("extra.html") && t.has("change.txt") && !t.has("extra.txt"));

        std::fs::write(
            dir.path().join("broken.txt.hbs"),
            "ok\nok\n{{#if x}}never closed",
        )
        .unwrap();
        std::fs::write(dir.path().join("noext.hbs"), "x").unwrap();
        let problems = Templates::load(Some(dir.path())).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        let broken = problems
            .iter()
            .find(|p| p.key.ends_with("broken.txt.hbs"))
            .unwrap();
        assert!(broken.line.is_some(), "{broken}");
        assert!(problems.iter().any(|p| p.key.ends_with("noext.hbs")));
        assert!(Templates::load(Some(&dir.path().join("missing"))).is_err());
    }

    #[test]
    fn json_templates_escape_values_and_write_json_literals_raw() {
        let mut t = Templates::shipped().unwrap();
        t.register_inline(
            "body.json",
            r#"{"name": "{{record.N}}", "n": {{json record.Num}}, "all": {{json record}}, "d": "{{default record.Missing "none"}}"}"#,
        )
        .unwrap();
        let nasty = "a\"b\\c\nd\u{1}</x>";
        let ctx = json!({"record": {"N": nasty, "Num": 3}});
        let body = t.render_body("body.json", &ctx).unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["name"], nasty);
        assert_eq!(v["n"], 3);
        assert_eq!(v["all"]["N"], nasty);
        assert_eq!(v["d"], "none");
        assert_eq!(json_escape("q\"\\\n"), r#"q\"\\\n"#);
        assert_eq!(json_escape(""), "");
    }

    #[test]
    fn json_templates_refuse_triple_braces_and_bodies_that_do_not_parse() {
        let mut t = Templates::shipped().unwrap();
        let p = t
            .register_inline("raw.json", "{\n\"a\": \"{{{record.N}}}\"}")
            .unwrap_err();
        assert_eq!(p.line, Some(2));
        assert!(p.message.contains("triple braces"), "{p}");
        t.register_inline("bare.json", "{\"a\": {{record.FirstName}}}")
            .unwrap();
        let err = t
            .render_body("bare.json", &json!({"record": {"FirstName": "Ada"}}))
            .unwrap_err();
        assert!(
            err.starts_with("body template bare.json rendered invalid JSON"),
            "{err}"
        );
        assert!(!err.contains("Ada"), "a reason never holds a value: {err}");
        let p = t
            .check_body("bare.json", "leads", &Shape::default())
            .unwrap_err();
        assert!(
            p.message.contains("invalid JSON on a sample leads record"),
            "{p}"
        );
        // A numeric field outside quotes is fine for the sample, and the quotes-and-newlines pass.
        t.register_inline(
            "ok.json",
            "{\"name\": \"{{record.FirstName}}\", \"id\": {{json id}}}",
        )
        .unwrap();
        assert!(t.check_body("ok.json", "leads", &Shape::default()).is_ok());
        // A field the shape leaves out is not in the template's record.
        let shape = Shape {
            fields: FieldFilter::Only(vec!["ID".into()]),
            ..Shape::default()
        };
        let p = t.check_body("ok.json", "leads", &shape).unwrap_err();
        assert!(p.message.contains("record.FirstName"), "{p}");
    }

    #[test]
    fn shaping_a_change_keeps_changed_fields_and_can_drop_previous() {
        let c = sample_change("appointments");
        let shape = Shape {
            fields: FieldFilter::Except(vec!["Notes".into(), "PatientMobile".into()]),
            include_previous: false,
            body_template: None,
        };
        let s = shaped_change(&c, &shape);
        assert!(s.record.get("PatientMobile").is_none() && s.record.get("ID").is_some());
        assert!(s.previous.is_none());
        assert_eq!(s.changed_fields, c.changed_fields);
        let keep = Shape {
            fields: FieldFilter::Only(vec!["ID".into(), "AppointmentStatus".into()]),
            ..Shape::default()
        };
        let s = shaped_change(&c, &keep);
        assert_eq!(s.record.as_object().unwrap().len(), 2);
        assert_eq!(s.previous.unwrap().as_object().unwrap().len(), 2);
    }
}
