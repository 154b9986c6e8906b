//! Validated destinations: where each delivery goes and how ([`Destination`], [`Target`]), as
//! [`crate::config::load()`] builds them from `destinations:`. Delivery builds its HTTP clients and
//! mailer from these; routing renders the templates they name ([`InlineTemplate`],
//! [`TemplateFile`]), which the engine's compile step registers and checks.

use crate::config::retry::RetryPolicy;
use crate::config::secret::Secret;
use crate::net::scrub::redacted_url;
use reqwest::header::{HeaderName, HeaderValue};
use std::fmt;
use std::time::Duration;

/// Default requests in flight per webhook destination.
pub(crate) const DEFAULT_WEBHOOK_CONCURRENCY: usize = 8;
/// Default messages in flight per email destination.
pub(crate) const DEFAULT_EMAIL_CONCURRENCY: usize = 2;
/// Default per-request timeout of webhook and chat destinations.
pub(crate) const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Default publishes in flight per NATS or AMQP destination: each waits for the broker's ack, so a
/// few in flight keep one connection busy.
pub(crate) const DEFAULT_BROKER_CONCURRENCY: usize = 8;
/// Default time one broker publish may take, connecting and the ack included.
pub(crate) const DEFAULT_BROKER_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest AMQP routing key (the protocol's short string).
pub(crate) const MAX_ROUTING_KEY_BYTES: usize = 255;

/// A validated destination.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The name from the config.
    pub(crate) name: String,
    /// Where and how it sends.
    pub(crate) target: Target,
    /// Its retry schedule.
    pub(crate) retry: RetryPolicy,
    /// Attempts in flight at once.
    pub(crate) concurrency: usize,
    /// Whether its receiver may be on a private address (`allow_private: true`).
    pub(crate) allow_private: bool,
    /// What the webhook body carries (webhook, NATS and AMQP destinations; the default for others).
    pub(crate) shape: Shape,
    /// Its digest (email and chat only): changes wait in the store and go out as one message
    /// per window (see [`crate::config::digest`]).
    pub(crate) digest: Option<crate::config::digest::Digest>,
    /// When deliveries are held, in the clinic's time zone (`quiet_hours:`); `None`: never.
    pub(crate) quiet_hours: Option<crate::config::quiet::QuietHours>,
}

impl Destination {
    /// A short word for the destination's type.
    pub(crate) fn kind_str(&self) -> &'static str {
        match &self.target {
            Target::Webhook(_) => "webhook",
            Target::Email { .. } => "email",
            Target::Chat { kind, .. } => kind.as_str(),
            Target::Nats(_) => "nats",
            Target::Amqp(_) => "amqp",
        }
    }
}

/// Where a destination sends, validated.
#[derive(Debug, Clone)]
pub enum Target {
    /// A signed webhook.
    Webhook(WebhookTarget),
    /// Email, one delivery per recipient.
    Email {
        /// The recipients, each an inline template (most are a plain address).
        to: Vec<InlineTemplate>,
        /// The subject, an inline template.
        subject: InlineTemplate,
        /// The body's template files (`NAME.txt`, optional `NAME.html`).
        template: TemplateFile,
        /// The From address.
        from: String,
        /// An optional Reply-To.
        reply_to: Option<String>,
    },
    /// A chat service webhook.
    Chat {
        /// Which service.
        kind: ChatKind,
        /// The webhook URL (a secret: never logged).
        url: url::Url,
        /// The message's template file (`NAME.txt`).
        template: TemplateFile,
        /// Per-request timeout.
        timeout: Duration,
    },
    /// A NATS JetStream subject.
    Nats(NatsTarget),
    /// A RabbitMQ exchange.
    Amqp(AmqpTarget),
}

/// Which fields of `record` and `previous` a shaped body carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum FieldFilter {
    /// Every field (no `fields` or `exclude_fields`).
    #[default]
    All,
    /// Only these (`fields`).
    Only(Vec<String>),
    /// All but these (`exclude_fields`).
    Except(Vec<String>),
}

impl FieldFilter {
    /// Whether a field of this name is kept.
    pub(crate) fn keeps(&self, field: &str) -> bool {
        match self {
            FieldFilter::All => true,
            FieldFilter::Only(names) => names.iter().any(|n| n == field),
            FieldFilter::Except(names) => !names.iter().any(|n| n == field),
        }
    }
}

/// How a destination's body is shaped: which record fields it carries, whether it carries the
/// previous version, or a custom JSON body. Rules always see the whole record; `changed_fields`
/// always names every changed field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shape {
    /// The fields of `record` and `previous` that are sent.
    pub(crate) fields: FieldFilter,
    /// Whether `previous` is sent.
    pub(crate) include_previous: bool,
    /// A custom body (`NAME.json.hbs`) instead of the standard envelope.
    pub(crate) body_template: Option<TemplateFile>,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            fields: FieldFilter::All,
            include_previous: true,
            body_template: None,
        }
    }
}

/// Credentials for a NATS server besides those in the URL.
#[derive(Clone, Default)]
pub(crate) enum NatsAuth {
    /// None, or the URL's user and password.
    #[default]
    None,
    /// A `.creds` file (a JWT and an nkey seed).
    CredsFile(std::path::PathBuf),
    /// A user and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password (a secret: never logged).
        password: String,
    },
}

/// A NATS JetStream destination, validated.
#[derive(Clone)]
pub struct NatsTarget {
    /// `nats://` or `tls://` (its userinfo is a secret: never logged).
    pub(crate) url: url::Url,
    /// The subject template (`destination:NAME:subject`).
    pub(crate) subject: InlineTemplate,
    /// Credentials besides the URL's.
    pub(crate) auth: NatsAuth,
    /// How long one publish may take, connecting and the ack included.
    pub(crate) timeout: Duration,
}

impl fmt::Debug for NatsTarget {
    /// The URL's scheme, host and port only, and which kind of credentials: never a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.auth {
            NatsAuth::None => "none",
            NatsAuth::CredsFile(_) => "creds_file",
            NatsAuth::UserPassword { .. } => "user/password",
        };
        f.debug_struct("NatsTarget")
            .field("url", &redacted_url(&self.url))
            .field("subject", &self.subject.source)
            .field("auth", &auth)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A RabbitMQ destination, validated.
#[derive(Clone)]
pub struct AmqpTarget {
    /// `amqp://` or `amqps://`, credentials and vhost in it (a secret: never logged).
    pub(crate) url: url::Url,
    /// The exchange.
    pub(crate) exchange: String,
    /// The routing key template (`destination:NAME:routing_key`).
    pub(crate) routing_key: InlineTemplate,
    /// How long one publish may take, connecting and the confirm included.
    pub(crate) timeout: Duration,
}

impl fmt::Debug for AmqpTarget {
    /// The URL's scheme, host and port only: its userinfo is a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpTarget")
            .field("url", &redacted_url(&self.url))
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key.source)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A template written inline in the config (an email subject, a recipient), with the name the
/// template registry knows it by and the place `check` names when it is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineTemplate {
    /// Its name in the template registry (`destination:NAME:subject`, `destination:NAME:to:0`).
    pub(crate) name: String,
    /// The template source as written (after `${VAR}`).
    pub(crate) source: String,
    /// The key it was written at (`destinations.NAME.subject`, `destinations.NAME.to[0]`).
    pub(crate) key: String,
    /// The destination's line.
    pub(crate) line: Option<u64>,
}

/// A destination's template files, by base name: `new-lead` is `new-lead.txt.hbs` (and, for
/// email, `new-lead.html.hbs` when it exists), from the templates folder or built in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateFile {
    /// The base name as written.
    pub(crate) base: String,
    /// What the template renders, which decides what must exist.
    pub(crate) part: TemplatePart,
    /// The key it was written at (`destinations.NAME.template`).
    pub(crate) key: String,
    /// The destination's line.
    pub(crate) line: Option<u64>,
}

/// What a [`TemplateFile`] renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TemplatePart {
    /// An email body: `NAME.txt` and, when it exists, `NAME.html`.
    EmailBody,
    /// A chat message: `NAME.txt`.
    ChatText,
    /// A custom JSON body: `NAME.json`.
    JsonBody,
}

impl TemplateFile {
    /// The plain-text template's registry name (`NAME.txt`).
    pub(crate) fn text(&self) -> String {
        format!("{}.txt", self.base)
    }

    /// The HTML template's registry name (`NAME.html`), which an email body may have.
    pub(crate) fn html(&self) -> String {
        format!("{}.html", self.base)
    }

    /// The JSON body template's registry name (`NAME.json`).
    pub(crate) fn json(&self) -> String {
        format!("{}.json", self.base)
    }

    /// The registry name of the template that must exist for this file: `NAME.txt`, or
    /// `NAME.json` for a custom body.
    pub(crate) fn required(&self) -> String {
        match self.part {
            TemplatePart::EmailBody | TemplatePart::ChatText => self.text(),
            TemplatePart::JsonBody => self.json(),
        }
    }
}

impl fmt::Display for TemplateFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

/// Which chat service a destination posts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChatKind {
    /// Slack incoming webhook: `{"text": ...}`.
    Slack,
    /// Microsoft Teams Workflows webhook: an Adaptive Card message.
    Teams,
    /// Discord webhook: `{"content": ...}`.
    Discord,
    /// Google Chat space webhook: `{"text": ...}`.
    GoogleChat,
}

impl ChatKind {
    /// The name used in config files (`slack`, `teams`, `discord`, `google_chat`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChatKind::Slack => "slack",
            ChatKind::Teams => "teams",
            ChatKind::Discord => "discord",
            ChatKind::GoogleChat => "google_chat",
        }
    }
}

/// Where and how to deliver one webhook destination's messages.
#[derive(Clone)]
pub struct WebhookTarget {
    /// The destination's name from the config, for logs and the attempts log.
    pub name: String,
    /// The receiver's URL (checked with [`check_url`] when the config is loaded).
    pub url: url::Url,
    /// Signing secrets; each adds a signature (rotation). Must not be empty.
    pub secrets: Vec<Secret>,
    /// Extra headers. They may replace `user-agent` but never `content-type` or the `webhook-*`
    /// headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Per-request timeout, from connecting until the response (snippet) has been read.
    pub timeout: Duration,
}

impl fmt::Debug for WebhookTarget {
    /// Shows the URL's scheme, host and port only, the number of secrets and the extra headers'
    /// names: paths, query strings, secrets and header values often carry tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("WebhookTarget")
            .field("name", &self.name)
            .field("url", &redacted_url(&self.url))
            .field("secrets", &self.secrets.len())
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Checks that a destination URL may be used.
///
/// `https` is always fine; plain `http` only to a loopback host (`localhost`, 127.0.0.0/8, `::1`)
/// unless `allow_insecure_http`; every other scheme is rejected. The error never repeats the URL,
/// whose path or query may hold a token.
pub(crate) fn check_url(url: &url::Url, allow_insecure_http: bool) -> Result<(), String> {
    if url.host().is_none() {
        return Err("the URL has no host".to_string());
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || crate::net::egress::is_loopback_url(url) => Ok(()),
        "http" => Err(
            "plain http:// is only allowed to loopback hosts (localhost, 127.0.0.1, ::1); \
             use https:// or set `allow_insecure_http: true`"
                .to_string(),
        ),
        other => Err(format!("unsupported URL scheme `{other}`; use https://")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn spec_secret() -> Secret {
        Secret::parse(SPEC_SECRET).unwrap()
    }

    #[test]
    fn url_checks() {
        let ok = |u: &str, insecure| check_url(&url::Url::parse(u).unwrap(), insecure);
        assert!(ok("https://example.org/hook?token=x", false).is_ok());
        assert!(ok("http://localhost:8080/hook", false).is_ok());
        assert!(ok("http://LOCALHOST/hook", false).is_ok());
        assert!(ok("http://127.0.0.1/hook", false).is_ok());
        assert!(ok("http://127.8.9.10/hook", false).is_ok());
        assert!(ok("http://[::1]:9000/hook", false).is_ok());
        assert!(ok("http://[::ffff:127.0.0.1]/hook", false).is_ok());
        let err = ok("http://example.org/hook?token=SECRET", false).unwrap_err();
        assert!(
            !err.contains("SECRET") && !err.contains("example.org"),
            "{err}"
        );
        assert!(ok("http://example.org/hook", true).is_ok());
        assert!(ok("http://10.0.0.1/hook", false).is_err());
        assert!(ok("http://localhost.evil.example/hook", false).is_err());
        assert!(ok("http://[::2]/hook", false).is_err());
        assert!(ok("ftp://example.org/x", true).is_err());
        assert!(ok("file:///etc/passwd", true).is_err());
        assert!(ok("unix:/run/x.sock", true).is_err());
    }

    #[test]
    fn debug_output_hides_tokens() {
        let t = WebhookTarget {
            name: "automation".into(),
            url: url::Url::parse("https://hooks.example:8443/T0/B0/XYZSECRET?k=SECRET").unwrap(),
            secrets: vec![spec_secret()],
            headers: vec![(
                HeaderName::from_static("authorization"),
                HeaderValue::from_static("Bearer SECRET"),
            )],
            timeout: Duration::from_secs(15),
        };
        let d = format!("{t:?}");
        assert!(!d.contains("SECRET") && !d.contains("MfKQ"), "{d}");
        assert!(
            d.contains("hooks.example:8443") && d.contains("authorization"),
            "{d}"
        );
    }
}
