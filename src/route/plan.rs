//! Planning: a change and the rules that matched it become one planned delivery per destination
//! (one per recipient, for email), each payload rendered once, here, at poll time.
//!
//! Webhook, NATS and AMQP destinations carry the same body: the webhook envelope, shaped by the
//! destination ([`Shape`]: only some fields, no previous version, or a custom JSON body). Rules
//! have routed the change on the whole record before any of that.

use crate::config::destination::{FieldFilter, InlineTemplate, Shape, MAX_ROUTING_KEY_BYTES};
use crate::config::{Destination, Target};
use crate::model::{Change, IdKey};
use crate::net::mail;
use crate::route::render::{self, Templates};
use crate::route::rules::{self, Route, RuleSet};
use crate::route::{chat, digest};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What is sent, rendered once when the change is detected: what is signed is exactly what is sent.
///
/// Stored as one JSON object, its variant named by `kind` beside the variant's fields
/// (`{"kind":"webhook","body":"..."}`, an email's fields inline). It is read by [`PayloadVisitor`],
/// not by serde's derive: a derived internally tagged enum buffers every field before it picks
/// the variant, and that buffering was most of the cost of loading an entry for its attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payload {
    /// A Standard Webhooks POST of this JSON body.
    Webhook {
        /// The JSON body, byte for byte.
        body: String,
    },
    /// A chat message: the JSON body the service expects.
    Chat {
        /// The JSON body.
        body: String,
    },
    /// One email to one recipient.
    Email(EmailMessage),
    /// A message published to a broker: a NATS subject or an AMQP routing key, and the body.
    Publish {
        /// The NATS subject or the AMQP routing key (rendered).
        subject: String,
        /// The JSON body (the webhook body), byte for byte.
        body: String,
    },
}

impl Payload {
    /// The JSON body of a webhook, chat or publish payload (an email has none).
    pub(crate) fn body(&self) -> Option<&str> {
        match self {
            Payload::Webhook { body } | Payload::Chat { body } | Payload::Publish { body, .. } => {
                Some(body)
            }
            Payload::Email(_) => None,
        }
    }

    /// The JSON body of a webhook, chat or publish payload (an email has none).
    pub(crate) fn body_mut(&mut self) -> Option<&mut String> {
        match self {
            Payload::Webhook { body } | Payload::Chat { body } | Payload::Publish { body, .. } => {
                Some(body)
            }
            Payload::Email(_) => None,
        }
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PayloadVisitor)
    }
}

/// Reads a stored [`Payload`] in one pass: every field of every variant is a string (or an
/// optional one), so each is kept as it comes, in any order (PostgreSQL's `jsonb` sorts the
/// keys), and `kind` then says which ones make the payload. Unknown fields are skipped, as the
/// derived reader skipped them; a missing one is an error naming it.
struct PayloadVisitor;

/// The fields of a stored [`Payload`], of all its variants.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum PayloadField {
    Kind,
    Body,
    Subject,
    From,
    To,
    ReplyTo,
    Text,
    Html,
    MessageId,
    #[serde(other)]
    Other,
}

/// The variant names a stored [`Payload`]'s `kind` may hold.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum PayloadKind {
    Webhook,
    Chat,
    Email,
    Publish,
}

impl<'de> serde::de::Visitor<'de> for PayloadVisitor {
    type Value = Payload;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a payload object with a kind")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Payload, A::Error> {
        use serde::de::Error;
        let mut kind = None;
        let (mut body, mut subject, mut from, mut to) = (None, None, None, None);
        let (mut reply_to, mut text, mut html, mut message_id) = (None, None, None, None);
        // A field given twice is an error, as with the derived reader.
        fn once<T, E: Error>(slot: &mut Option<T>, v: T, name: &'static str) -> Result<(), E> {
            if slot.replace(v).is_some() {
                return Err(E::duplicate_field(name));
            }
            Ok(())
        }
        while let Some(field) = map.next_key::<PayloadField>()? {
            match field {
                PayloadField::Kind => once(&mut kind, map.next_value::<PayloadKind>()?, "kind")?,
                PayloadField::Body => once(&mut body, map.next_value::<String>()?, "body")?,
                PayloadField::Subject => {
                    once(&mut subject, map.next_value::<String>()?, "subject")?
                }
                PayloadField::From => once(&mut from, map.next_value::<String>()?, "from")?,
                PayloadField::To => once(&mut to, map.next_value::<String>()?, "to")?,
                PayloadField::ReplyTo => once(
                    &mut reply_to,
                    map.next_value::<Option<String>>()?,
                    "reply_to",
                )?,
                PayloadField::Text => once(&mut text, map.next_value::<String>()?, "text")?,
                PayloadField::Html => once(&mut html, map.next_value::<Option<String>>()?, "html")?,
                PayloadField::MessageId => {
                    once(&mut message_id, map.next_value::<String>()?, "message_id")?
                }
                PayloadField::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let need =
            |v: Option<String>, name: &'static str| v.ok_or_else(|| A::Error::missing_field(name));
        Ok(match kind.ok_or_else(|| A::Error::missing_field("kind"))? {
            PayloadKind::Webhook => Payload::Webhook {
                body: need(body, "body")?,
            },
            PayloadKind::Chat => Payload::Chat {
                body: need(body, "body")?,
            },
            PayloadKind::Publish => Payload::Publish {
                subject: need(subject, "subject")?,
                body: need(body, "body")?,
            },
            PayloadKind::Email => Payload::Email(EmailMessage {
                from: need(from, "from")?,
                to: need(to, "to")?,
                reply_to: reply_to.flatten(),
                subject: need(subject, "subject")?,
                text: need(text, "text")?,
                html: html.flatten(),
                message_id: need(message_id, "message_id")?,
            }),
        })
    }
}

/// One email to one recipient, as stored in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailMessage {
    /// The From address, `Name <addr>` or `addr`.
    pub from: String,
    /// The one recipient.
    pub to: String,
    /// An optional Reply-To address.
    pub reply_to: Option<String>,
    /// The subject (rendered).
    pub subject: String,
    /// The plain-text body (rendered).
    pub text: String,
    /// The HTML body, when the template has an HTML part; the message is then multipart/alternative.
    pub html: Option<String>,
    /// The `Message-ID` header value, with angle brackets; the same on every attempt.
    pub message_id: String,
}

/// One delivery a change should produce, before it has a sequence number.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    /// The destination name.
    pub(crate) destination: String,
    /// The first matching rule.
    pub(crate) rule: String,
    /// The rendered payload, or why it could not be rendered.
    pub(crate) payload: Result<Payload, String>,
    /// For a destination with a digest: what the digest keeps of it (the recipient, empty for
    /// chat, and the item [`crate::route::digest::item`] made), instead of an outbox entry.
    pub(crate) digest_item: Option<(String, serde_json::Value)>,
}

/// A record as a shaped body shows it: an object with only the fields the filter keeps, serialized
/// without copying it.
struct Fields<'a>(&'a serde_json::Value, &'a FieldFilter);

impl Serialize for Fields<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match (self.0, self.1) {
            (serde_json::Value::Object(m), filter) if *filter != FieldFilter::All => {
                let mut map = s.serialize_map(None)?;
                for (k, v) in m.iter().filter(|(k, _)| filter.keeps(k)) {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            (v, _) => v.serialize(s),
        }
    }
}

/// The JSON body of a webhook: the spec's envelope around the change model, `data.clinic` first,
/// with only the fields `fields` keeps in `record` and `previous`, and without `previous` unless
/// `include_previous`.
///
/// Serialized straight from the change (no intermediate `Value`, so the record and its previous
/// version are not copied); the bytes are the same as building the envelope with `json!`.
pub(crate) fn webhook_body(
    change: &Change,
    rule: &str,
    rules: &[String],
    fields: &FieldFilter,
    include_previous: bool,
) -> String {
    #[derive(Serialize)]
    struct Envelope<'a> {
        #[serde(rename = "type")]
        kind: String,
        timestamp: String,
        data: Data<'a>,
    }
    #[derive(Serialize)]
    struct Data<'a> {
        clinic: &'a str,
        resource: &'a str,
        change: crate::model::ChangeKind,
        id: &'a str,
        record: Fields<'a>,
        #[serde(skip_serializing_if = "Omitted::is_omitted")]
        previous: Omitted<Option<Fields<'a>>>,
        changed_fields: &'a [String],
        server_status: &'a Option<String>,
        rule: &'a str,
        rules: &'a [String],
    }
    let body = Envelope {
        kind: change.event_type(),
        timestamp: change
            .detected_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        data: Data {
            clinic: &change.clinic,
            resource: &change.resource,
            change: change.kind,
            id: &change.id,
            record: Fields(&change.record, fields),
            previous: if include_previous {
                Omitted::Shown(change.previous.as_ref().map(|p| Fields(p, fields)))
            } else {
                Omitted::Left
            },
            changed_fields: &change.changed_fields,
            server_status: &change.server_status,
            rule,
            rules,
        },
    };
    // Serializing plain data (string keys only) cannot fail.
    serde_json::to_string(&body).unwrap_or_default()
}

/// A key of the envelope that a shaped body may leave out.
enum Omitted<T> {
    /// Sent, with this value.
    Shown(T),
    /// Left out of the body.
    Left,
}

impl<T> Omitted<T> {
    fn is_omitted(&self) -> bool {
        matches!(self, Omitted::Left)
    }
}

impl<T: Serialize> Serialize for Omitted<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Omitted::Shown(v) => v.serialize(s),
            Omitted::Left => s.serialize_none(),
        }
    }
}

/// Whether `subject` may be published to: NATS tokens separated by dots, none empty, no
/// whitespace, no wildcard. The reason says what is wrong, not what the subject is (it may hold
/// record values).
pub(crate) fn check_subject(subject: &str) -> Result<(), &'static str> {
    if subject.is_empty() {
        return Err("the subject rendered empty");
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the subject holds whitespace");
    }
    if subject.split('.').any(|t| t.is_empty()) {
        return Err("the subject has an empty token (two dots in a row, or one at an end)");
    }
    if subject.split('.').any(|t| t == "*" || t == ">") {
        return Err("the subject has a wildcard token (* or >)");
    }
    Ok(())
}

/// Whether `key` may be an AMQP routing key: at most [`MAX_ROUTING_KEY_BYTES`].
pub(crate) fn check_routing_key(key: &str) -> Result<(), &'static str> {
    if key.len() > MAX_ROUTING_KEY_BYTES {
        return Err("the routing key is longer than 255 bytes");
    }
    Ok(())
}

/// Rules, templates and destinations: what turns a change into planned deliveries.
pub struct Pipeline {
    /// The compiled rules.
    pub(crate) rules: RuleSet,
    /// The registered templates.
    pub(crate) templates: Templates,
    /// Destinations by name.
    pub destinations: HashMap<String, Arc<Destination>>,
    /// Each clinic's zone: a change's templates show times in its clinic's (see
    /// [`Pipeline::timezone`]).
    pub(crate) timezones: BTreeMap<String, Tz>,
}

impl Pipeline {
    /// The body of a webhook, NATS or AMQP delivery: the envelope shaped by `shape`, or its
    /// custom JSON body (which must parse as JSON: otherwise the error, a dead letter's reason).
    fn body(
        &self,
        change: &Change,
        route: &Route,
        destination: &str,
        shape: &Shape,
        tz: Tz,
    ) -> Result<String, String> {
        match &shape.body_template {
            None => Ok(webhook_body(
                change,
                &route.rule,
                &route.rules,
                &shape.fields,
                shape.include_previous,
            )),
            Some(t) => {
                let shaped = render::shaped_change(change, shape);
                let ctx = render::context(&shaped, &route.rule, &route.rules, destination, tz);
                self.templates.render_body(&t.json(), &ctx)
            }
        }
    }

    /// The zone `clinic`'s changes are rendered in; UTC for a clinic without one.
    pub(crate) fn timezone(&self, clinic: &str) -> Tz {
        rules::zone_of(&self.timezones, clinic)
    }

    /// The deliveries a change should produce: one per destination whose rules match, one per
    /// recipient for email. `id_key` is the store's key of change ids (email `Message-ID`s are
    /// derived from the change's id).
    pub(crate) fn plan(&self, change: &Change, id_key: &IdKey) -> Vec<Planned> {
        self.plan_routes(change, &self.rules.route(change), id_key)
    }

    /// [`Pipeline::plan`] for the routes of `change` already found (`self.rules.route(change)`),
    /// for a caller that needs the routes as well.
    pub(crate) fn plan_routes(
        &self,
        change: &Change,
        routes: &[Route],
        id_key: &IdKey,
    ) -> Vec<Planned> {
        let mut out = Vec::with_capacity(routes.len());
        // Hashed at most once, and only when an email destination needs it.
        let change_id = std::cell::OnceCell::new();
        let tz = self.timezone(&change.clinic);
        for route in routes {
            let Some(dest) = self.destinations.get(&route.destination) else {
                continue;
            };
            let digested = dest.digest.is_some();
            let mut push =
                |payload: Result<Payload, String>,
                 digest_item: Option<(String, serde_json::Value)>| {
                    out.push(Planned {
                        destination: dest.name.clone(),
                        rule: route.rule.clone(),
                        payload,
                        digest_item,
                    })
                };
            // Chat and email render templates against the change model; webhooks do not.
            let ctx = || render::context(change, &route.rule, &route.rules, &dest.name, tz);
            let body = || self.body(change, route, &dest.name, &dest.shape, tz);
            // A NATS subject or an AMQP routing key sees what the body sees: with `fields` or
            // `exclude_fields`, a field left out of the body is left out of the subject too.
            let address = |t: &InlineTemplate, check: fn(&str) -> Result<(), &'static str>| {
                let ctx = if dest.shape.fields == FieldFilter::All {
                    ctx()
                } else {
                    let shaped = render::shaped_change(change, &dest.shape);
                    render::context(&shaped, &route.rule, &route.rules, &dest.name, tz)
                };
                let text = self
                    .templates
                    .render(&t.name, &ctx)
                    .map_err(|e| format!("{} of {}: {e}", t.key, dest.name))?;
                check(&text).map_err(|e| format!("{} of {}: {e}", t.key, dest.name))?;
                Ok::<String, String>(text)
            };
            match &dest.target {
                Target::Webhook(_) => push(body().map(|body| Payload::Webhook { body }), None),
                Target::Nats(t) => push(
                    address(&t.subject, check_subject).and_then(|subject| {
                        Ok(Payload::Publish {
                            subject,
                            body: body()?,
                        })
                    }),
                    None,
                ),
                Target::Amqp(t) => push(
                    address(&t.routing_key, check_routing_key).and_then(|subject| {
                        Ok(Payload::Publish {
                            subject,
                            body: body()?,
                        })
                    }),
                    None,
                ),
                Target::Chat { kind, template, .. } => {
                    let ctx = ctx();
                    let name = template.text();
                    let text = self
                        .templates
                        .render_chat(*kind, &name, &ctx)
                        .map_err(|e| format!("template {name}: {e}"));
                    let item = match (&text, digested) {
                        (Ok(t), true) => Some((String::new(), digest::item(&ctx, t, None, None))),
                        _ => None,
                    };
                    push(
                        text.map(|text| Payload::Chat {
                            body: chat::body(*kind, &text),
                        }),
                        item,
                    );
                }
                Target::Email {
                    to,
                    subject,
                    template,
                    from,
                    reply_to,
                } => {
                    let ctx = ctx();
                    let rendered = self
                        .templates
                        .render(&subject.name, &ctx)
                        .map_err(|e| format!("subject of {}: {e}", dest.name))
                        .and_then(|subj| {
                            let (text, html) = self.templates.render_email(template, &ctx)?;
                            Ok((subj.trim().replace(['\r', '\n'], " "), text, html))
                        });
                    // One Message-ID key per recipient; the change id behind it is hashed once.
                    let change_id = change_id.get_or_init(|| change.change_id(id_key));
                    let domain = mail::domain_of(from);
                    for to_tpl in to {
                        let payload = rendered.clone().and_then(|(subject, text, html)| {
                            let addr = self
                                .templates
                                .render(&to_tpl.name, &ctx)
                                .map_err(|e| format!("recipient of {}: {e}", dest.name))?
                                .trim()
                                .to_string();
                            if addr.is_empty() {
                                return Err(format!("a recipient of {} rendered empty", dest.name));
                            }
                            mail::validate_address(&addr)
                                .map_err(|e| format!("recipient of {}: {e}", dest.name))?;
                            Ok::<_, String>(Payload::Email(EmailMessage {
                                from: from.clone(),
                                message_id: mail::message_id(
                                    &format!("{change_id}/{}/{addr}", dest.name),
                                    &domain,
                                ),
                                to: addr,
                                reply_to: reply_to.clone(),
                                subject,
                                text,
                                html,
                            }))
                        });
                        let item = match (&payload, digested) {
                            (Ok(Payload::Email(m)), true) => Some((
                                m.to.clone(),
                                digest::item(&ctx, &m.text, m.html.as_deref(), Some(&m.subject)),
                            )),
                            _ => None,
                        };
                        push(payload, item);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod body_tests {
    use super::*;
    use crate::model::ChangeKind;

    /// The serialized envelope is byte for byte what building it as a `Value` gives.
    #[test]
    fn webhook_body_matches_the_value_envelope() {
        let change = Change {
            clinic: "north".into(),
            resource: "leads".into(),
            id: "a\"1".into(),
            kind: ChangeKind::Modified,
            record: serde_json::json!({"ID": "a\"1", "Z": 1.5, "A": [1, {"b": null}], "S": "é\n"}),
            previous: Some(serde_json::json!({"ID": "a\"1", "Z": 1})),
            changed_fields: vec!["Z".into(), "A".into()],
            server_status: None,
            detected_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        };
        let rules = vec!["r1".to_string(), "r2".to_string()];
        let expected = serde_json::json!({
            "type": change.event_type(),
            "timestamp": change.detected_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "data": {
                "clinic": "north",
                "resource": change.resource,
                "change": change.kind,
                "id": change.id,
                "record": change.record,
                "previous": change.previous,
                "changed_fields": change.changed_fields,
                "server_status": change.server_status,
                "rule": "r1",
                "rules": rules,
            }
        })
        .to_string();
        assert_eq!(
            webhook_body(&change, "r1", &rules, &FieldFilter::All, true),
            expected
        );
    }

    /// Shaped, the same envelope with fewer fields, and without `previous` when asked.
    #[test]
    fn a_shaped_body_keeps_the_named_fields_and_every_changed_field_name() {
        let change = Change {
            clinic: "north".into(),
            resource: "leads".into(),
            id: "1".into(),
            kind: ChangeKind::Modified,
            record: serde_json::json!({"ID": "1", "Name": "Ada", "Notes": "private"}),
            previous: Some(serde_json::json!({"ID": "1", "Name": "Ad", "Notes": "old"})),
            changed_fields: vec!["Name".into(), "Notes".into()],
            server_status: None,
            detected_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        };
        let only = FieldFilter::Only(vec!["ID".into(), "Name".into()]);
        let v: serde_json::Value =
            serde_json::from_str(&webhook_body(&change, "r", &[], &only, true)).unwrap();
        assert_eq!(
            v["data"]["record"],
            serde_json::json!({"ID": "1", "Name": "Ada"})
        );
        assert_eq!(
            v["data"]["previous"],
            serde_json::json!({"ID": "1", "Name": "Ad"})
        );
        assert_eq!(
            v["data"]["changed_fields"],
            serde_json::json!(["Name", "Notes"])
        );
        let except = FieldFilter::Except(vec!["Notes".into()]);
        let body = webhook_body(&change, "r", &[], &except, false);
        assert!(
            !body.contains("private") && !body.contains("\"previous\""),
            "{body}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["data"]["record"],
            serde_json::json!({"ID": "1", "Name": "Ada"})
        );
    }

    #[test]
    fn subjects_and_routing_keys_are_checked_once_rendered() {
        assert!(check_subject("clinicea.north.leads.added").is_ok());
        for bad in ["", "a..b", ".a", "a.", "a b", "a.*.b", "a.>", "a\tb"] {
            assert!(check_subject(bad).is_err(), "{bad:?}");
        }
        assert!(check_routing_key("leads.added").is_ok());
        assert!(check_routing_key(&"k".repeat(256)).is_err());
    }
}

#[cfg(test)]
mod payload_tests {
    use super::*;

    /// The reader serde derives for the stored format, kept here only to check the hand-written
    /// one against it.
    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum Derived {
        Webhook { body: String },
        Chat { body: String },
        Email(EmailMessage),
        Publish { subject: String, body: String },
    }

    impl From<Derived> for Payload {
        fn from(d: Derived) -> Payload {
            match d {
                Derived::Webhook { body } => Payload::Webhook { body },
                Derived::Chat { body } => Payload::Chat { body },
                Derived::Email(m) => Payload::Email(m),
                Derived::Publish { subject, body } => Payload::Publish { subject, body },
            }
        }
    }

    fn payloads() -> Vec<Payload> {
        vec![
            Payload::Webhook {
                body: r#"{"type":"leads.added","data":{"Name":"A \"quoted\" name\n"}}"#.into(),
            },
            Payload::Chat {
                body: r#"{"text":"new lead"}"#.into(),
            },
            Payload::Publish {
                subject: "clinicea.leads.added".into(),
                body: "{}".into(),
            },
            Payload::Email(EmailMessage {
                from: "Front desk <desk@clinic.example>".into(),
                to: "staff@clinic.example".into(),
                reply_to: None,
                subject: "New lead".into(),
                text: "Call them".into(),
                html: Some("<p>Call them</p>".into()),
                message_id: "<m1@clinic.example>".into(),
            }),
        ]
    }

    /// Both readers over the same text: the same payload, or both an error.
    fn same(text: &str) -> Result<Payload, String> {
        let ours = serde_json::from_str::<Payload>(text).map_err(|e| e.to_string());
        let derived = serde_json::from_str::<Derived>(text)
            .map(Payload::from)
            .map_err(|e| e.to_string());
        assert_eq!(
            ours.is_ok(),
            derived.is_ok(),
            "{text}: {ours:?} / {derived:?}"
        );
        if let (Ok(a), Ok(b)) = (&ours, &derived) {
            assert_eq!(a, b, "{text}");
        }
        ours
    }

    #[test]
    fn a_payload_reads_back_as_written_and_as_the_derived_reader_reads_it() {
        for p in payloads() {
            let text = serde_json::to_string(&p).unwrap();
            assert_eq!(same(&text).unwrap(), p, "{text}");
            // Keys in another order (as PostgreSQL's jsonb keeps them) and unknown keys.
            let mut value: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&text).unwrap();
            value.insert("zz_later".into(), serde_json::json!({"nested": [1, 2]}));
            let reversed: serde_json::Map<_, _> = value.into_iter().rev().collect();
            let text = serde_json::to_string(&reversed).unwrap();
            assert!(!text.starts_with(r#"{"kind""#), "{text}");
            assert_eq!(same(&text).unwrap(), p, "{text}");
        }
    }

    #[test]
    fn a_stored_email_of_an_older_version_reads_with_its_optional_fields_absent() {
        let text = r#"{"kind":"email","from":"a@x.example","to":"b@x.example","subject":"s","text":"t","message_id":"<m@x>"}"#;
        let Payload::Email(m) = same(text).unwrap() else {
            panic!("an email");
        };
        assert_eq!((m.reply_to, m.html), (None, None));
    }

    #[test]
    fn a_broken_payload_is_an_error_naming_what_is_wrong() {
        for (text, says) in [
            (r#"{"body":"{}"}"#, "missing field `kind`"),
            (r#"{"kind":"webhook"}"#, "missing field `body`"),
            (
                r#"{"kind":"publish","body":"{}"}"#,
                "missing field `subject`",
            ),
            (r#"{"kind":"fax","body":"{}"}"#, "unknown variant `fax`"),
            (r#"{"kind":"webhook","body":1}"#, "invalid type"),
            (
                r#"{"kind":"webhook","body":"a","body":"b"}"#,
                "duplicate field `body`",
            ),
        ] {
            let err = same(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}

#[cfg(test)]
mod zone_tests {
    use super::*;
    use crate::config::destination::{TemplateFile, TemplatePart};
    use crate::config::{ChatKind, RuleSpec};
    use crate::model::ChangeKind;
    use crate::route::rules::CompileContext;
    use serde_saphyr::Spanned;

    /// A pipeline with one Slack destination whose template shows the clinic, a time and the
    /// zone; `north` is in Karachi, `south` has no zone of its own.
    fn pipeline() -> Pipeline {
        let mut templates = Templates::shipped().unwrap();
        templates
            .register_inline(
                "when.txt",
                "{{clinic}} {{date record.T \"%H:%M\"}} {{timezone}}",
            )
            .unwrap();
        let dest = Destination {
            name: "chat".into(),
            target: Target::Chat {
                kind: ChatKind::Slack,
                url: "https://hooks.slack.example/x".parse().unwrap(),
                template: TemplateFile {
                    base: "when".into(),
                    part: TemplatePart::ChatText,
                    key: "destinations.chat.template".into(),
                    line: None,
                },
                timeout: std::time::Duration::from_secs(1),
            },
            retry: Default::default(),
            concurrency: 1,
            allow_private: false,
            shape: Default::default(),
            digest: None,
            quiet_hours: None,
        };
        let specs: Vec<Spanned<RuleSpec>> =
            serde_saphyr::from_str("- {name: all, notify: [chat]}").unwrap();
        let timezones = BTreeMap::from([("north".to_string(), chrono_tz::Asia::Karachi)]);
        let rules = rules::compile(
            &specs,
            &CompileContext {
                destinations: &["chat".to_string()],
                resources: &["leads".to_string()],
                clinics: &["north".to_string(), "south".to_string()],
                timezone: Tz::UTC,
                timezones: &timezones,
            },
        )
        .unwrap();
        Pipeline {
            rules,
            templates,
            destinations: HashMap::from([("chat".to_string(), Arc::new(dest))]),
            timezones,
        }
    }

    fn chat_text(p: &Pipeline, clinic: &str) -> String {
        let change = Change {
            clinic: clinic.into(),
            resource: "leads".into(),
            id: "1".into(),
            kind: ChangeKind::Added,
            record: serde_json::json!({"ID": "1", "T": "2026-11-30T04:00:00Z"}),
            previous: None,
            changed_fields: vec!["ID".into(), "T".into()],
            server_status: None,
            detected_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        };
        let planned = p.plan(&change, &IdKey::ephemeral());
        assert_eq!(planned.len(), 1);
        let Ok(Payload::Chat { body }) = &planned[0].payload else {
            panic!("{planned:?}")
        };
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        body["text"].as_str().unwrap().to_string()
    }

    #[test]
    fn a_change_is_rendered_with_its_clinic_in_its_clinic_s_zone() {
        let p = pipeline();
        assert_eq!(chat_text(&p, "north"), "north 09:00 Asia/Karachi");
        assert_eq!(chat_text(&p, "south"), "south 04:00 UTC");
        assert_eq!(p.timezone("nowhere"), Tz::UTC);
    }
}
