//! Staff emails: the message stored in the outbox ([`EmailMessage`], one recipient each, so one
//! failing recipient never makes another get the message twice) and the SMTP [`Mailer`] that sends
//! it with a pooled lettre transport.
//!
//! A message keeps its `Message-ID` across retries, so a mail client shows a retried message once.
//! SMTP 5xx answers fail at once; 4xx answers, timeouts and connection or TLS errors retry. Logs
//! show the recipient's domain only, never the address, subject or body.

use crate::config::{Problem, RawSmtp, SmtpTls};
use crate::deliver::outcome::{self, AttemptReport, RESPONSE_SNIPPET_BYTES};
use crate::model::{truncate_utf8, Verdict};
use crate::net::egress::is_loopback_host;
use crate::net::mail::{domain_of, validate_address};
use crate::route::plan::EmailMessage;
use lettre::message::header::ContentType;
use lettre::message::{Message, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::path::Path;
use std::time::{Duration, Instant};

/// Default per-command SMTP timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections kept open to the SMTP server.
pub const POOL_SIZE: u32 = 4;

/// AUTH needs both a user name and a password, or neither.
fn check_credentials(username: bool, password: bool) -> Result<(), Problem> {
    match (username, password) {
        (true, false) => Err(Problem::at(
            None,
            "smtp.password",
            "a username needs a password",
        )),
        (false, true) => Err(Problem::at(
            None,
            "smtp.username",
            "a password needs a username",
        )),
        _ => Ok(()),
    }
}

/// `tls: none` sends everything in clear: never with credentials (AUTH would show the password to
/// anyone on the path), and only to loopback unless `allow_cleartext` says the path is trusted.
fn check_cleartext(
    tls: SmtpTls,
    host: &str,
    credentials: bool,
    allow_cleartext: bool,
) -> Result<(), Problem> {
    if tls != SmtpTls::None {
        return if allow_cleartext {
            Err(Problem::at(
                None,
                "smtp.allow_cleartext",
                "only applies to tls: none; remove it",
            ))
        } else {
            Ok(())
        };
    }
    if credentials {
        return Err(Problem::at(
            None,
            "smtp.tls",
            "tls: none with a username and password would send them in clear (AUTH is never sent without TLS); use starttls or tls, or remove smtp.username and smtp.password for a relay that needs no AUTH",
        ));
    }
    if !allow_cleartext && !is_loopback_host(host) {
        return Err(Problem::at(
            None,
            "smtp.tls",
            "tls: none is only allowed to a relay on loopback (localhost, 127.0.0.1, ::1): messages hold patient data; use starttls or tls, or set smtp.allow_cleartext: true if the network to this host is trusted (dangerous)",
        ));
    }
    Ok(())
}

/// How to reach the SMTP server.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    /// Host name (also the name the TLS certificate must carry).
    pub host: String,
    /// Port.
    pub port: u16,
    /// STARTTLS, TLS from the first byte, or none.
    pub tls: SmtpTls,
    /// AUTH user name.
    pub username: Option<String>,
    /// AUTH password.
    pub password: Option<String>,
    /// Per-command timeout; a whole send is given twice this.
    pub timeout: Duration,
    /// Extra CA certificates (PEM) to trust besides the public roots.
    pub extra_root_cert_pem: Option<Vec<u8>>,
    /// Whether the host may be on a private address (`smtp.allow_private`).
    pub allow_private: bool,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("extra_root_cert_pem", &self.extra_root_cert_pem.is_some())
            .finish()
    }
}

impl SmtpSettings {
    /// The default port of a TLS mode: 587 for STARTTLS, 465 for TLS, 25 for none.
    pub fn default_port(tls: SmtpTls) -> u16 {
        match tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }

    /// Settings from the `smtp:` section; `ca_file` is read relative to `base_dir` (the config
    /// file's folder).
    pub fn from_raw(raw: &RawSmtp, base_dir: &Path) -> Result<SmtpSettings, Problem> {
        let extra_root_cert_pem = match &raw.ca_file {
            None => None,
            Some(f) => {
                let path = base_dir.join(f.as_str());
                Some(std::fs::read(&path).map_err(|e| {
                    Problem::at(
                        None,
                        "smtp.ca_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?)
            }
        };
        // The transport refuses these (see `Mailer::new`); say so in `check`, not at start.
        check_credentials(raw.username.is_some(), raw.password.is_some())?;
        check_cleartext(
            raw.tls,
            &raw.host,
            raw.username.is_some() || raw.password.is_some(),
            raw.allow_cleartext,
        )?;
        let timeout = raw.timeout.map(|d| d.0).unwrap_or(DEFAULT_TIMEOUT);
        if timeout > crate::config::MAX_WAIT {
            return Err(Problem::at(None, "smtp.timeout", "must be at most 1h"));
        }
        Ok(SmtpSettings {
            host: raw.host.0.clone(),
            port: raw.port.unwrap_or_else(|| Self::default_port(raw.tls)),
            tls: raw.tls,
            username: raw.username.as_ref().map(|t| t.0.clone()),
            password: raw.password.as_ref().map(|t| t.0.clone()),
            timeout,
            extra_root_cert_pem,
            allow_private: raw.allow_private,
        })
    }
}

/// Sends [`EmailMessage`]s over one pooled SMTP transport.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    timeout: Duration,
    /// The host and port, checked against the egress rules before each send.
    host: String,
    port: u16,
    egress: crate::net::egress::Policy,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").finish_non_exhaustive()
    }
}

impl Mailer {
    /// Builds the transport (nothing is connected until the first send). Fails on a bad CA file,
    /// a username without a password, or credentials with `tls: none`.
    pub fn new(settings: SmtpSettings) -> Result<Mailer, Problem> {
        let tls_params = || -> Result<TlsParameters, Problem> {
            let mut b = TlsParameters::builder(settings.host.clone());
            if let Some(pem) = &settings.extra_root_cert_pem {
                let cert = Certificate::from_pem(pem)
                    .map_err(|e| Problem::at(None, "smtp.ca_file", format!("invalid PEM: {e}")))?;
                b = b.add_root_certificate(cert);
            }
            b.build()
                .map_err(|e| Problem::at(None, "smtp.tls", format!("TLS setup failed: {e}")))
        };
        let tls = match settings.tls {
            SmtpTls::Starttls => Tls::Required(tls_params()?),
            SmtpTls::Tls => Tls::Wrapper(tls_params()?),
            SmtpTls::None => Tls::None,
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.clone())
            .port(settings.port)
            .tls(tls)
            .timeout(Some(settings.timeout))
            .pool_config(PoolConfig::new().max_size(POOL_SIZE));
        check_credentials(settings.username.is_some(), settings.password.is_some())?;
        // `from_raw` already refuses this; the transport itself refuses it too, so no path can
        // build a mailer that offers the password on a cleartext connection.
        if settings.tls == SmtpTls::None && settings.username.is_some() {
            return Err(Problem::at(
                None,
                "smtp.tls",
                "AUTH is never sent without TLS: use starttls or tls with a username and password",
            ));
        }
        if let (Some(u), Some(p)) = (&settings.username, &settings.password) {
            b = b.credentials(Credentials::new(u.clone(), p.clone()));
        }
        Ok(Mailer {
            transport: b.build(),
            timeout: settings.timeout,
            egress: crate::net::egress::Policy::smtp(settings.allow_private),
            host: settings.host,
            port: settings.port,
        })
    }

    /// Sends one message: multipart/alternative when it has HTML, with its own `Message-ID` and a
    /// `Date` header. SMTP 5xx → fail; 4xx, timeouts, connection and TLS errors → retry; a message
    /// that cannot be built (bad address) → fail.
    pub async fn send(&self, msg: &EmailMessage) -> AttemptReport {
        let started = Instant::now();
        let domain = domain_of(&msg.to);
        let report = |verdict: Verdict, status: Option<u16>, response: String| AttemptReport {
            verdict,
            status,
            response,
            duration: started.elapsed(),
        };
        let message = match build_message(msg) {
            Ok(m) => m,
            Err(reason) => {
                tracing::warn!(recipient_domain = %domain, "email could not be built");
                return report(Verdict::Fail { reason }, None, String::new());
            }
        };
        // The transport resolves the host itself: check what it resolves to first, so a name
        // that now points at a blocked address is refused before a connection is made.
        if let Err(refused) = self.egress.resolve_checked(&self.host, self.port).await {
            tracing::warn!(recipient_domain = %domain, "email refused by the egress rules");
            return report(
                Verdict::Retry {
                    reason: refused.to_string(),
                    retry_after: None,
                },
                None,
                String::new(),
            );
        }
        let result = tokio::time::timeout(self.timeout * 2, self.transport.send(message)).await;
        match result {
            Err(_) => {
                tracing::info!(recipient_domain = %domain, "email send timed out");
                report(
                    Verdict::Retry {
                        reason: "SMTP send timed out".into(),
                        retry_after: None,
                    },
                    None,
                    String::new(),
                )
            }
            Ok(Ok(resp)) => {
                let code = u16::from(resp.code());
                let text = resp.message().collect::<Vec<_>>().join(" ");
                tracing::debug!(recipient_domain = %domain, code, "email accepted");
                report(
                    Verdict::Success,
                    Some(code),
                    truncate_utf8(&text, RESPONSE_SNIPPET_BYTES).to_string(),
                )
            }
            Ok(Err(e)) => {
                let code = e.status().map(u16::from);
                let text = truncate_utf8(&e.to_string(), RESPONSE_SNIPPET_BYTES).to_string();
                tracing::info!(recipient_domain = %domain, code, "email attempt failed");
                report(outcome::classify_smtp(&e), code, text)
            }
        }
    }
}

/// The lettre message for `msg`.
fn build_message(msg: &EmailMessage) -> Result<Message, String> {
    let from = validate_address(&msg.from).map_err(|e| format!("from: {e}"))?;
    let to = validate_address(&msg.to).map_err(|e| format!("to: {e}"))?;
    let mut b = Message::builder()
        .from(from)
        .to(to)
        .subject(msg.subject.clone())
        .message_id(Some(msg.message_id.clone()))
        .date_now();
    if let Some(r) = &msg.reply_to {
        b = b.reply_to(validate_address(r).map_err(|e| format!("reply_to: {e}"))?);
    }
    let built = match &msg.html {
        Some(html) => b.multipart(MultiPart::alternative_plain_html(
            msg.text.clone(),
            html.clone(),
        )),
        None => b.header(ContentType::TEXT_PLAIN).body(msg.text.clone()),
    };
    built.map_err(|e| format!("cannot build the message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(port: u16) -> SmtpSettings {
        SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            tls: SmtpTls::None,
            username: None,
            password: None,
            timeout: Duration::from_secs(5),
            extra_root_cert_pem: None,
            allow_private: false,
        }
    }

    fn msg(to: &str, html: Option<&str>) -> EmailMessage {
        EmailMessage {
            from: "Clinic Notifier <notifier@clinic.example>".into(),
            to: to.into(),
            reply_to: Some("frontdesk@clinic.example".into()),
            subject: "New lead: Mehwish Qureshi".into(),
            text: "New lead: Mehwish Qureshi\n.dot line\nCall within the hour.\n".into(),
            html: html.map(str::to_string),
            message_id: crate::net::mail::message_id("msg_abc/front-desk/0", "clinic.example"),
        }
    }

    #[test]
    fn cleartext_only_to_loopback_or_by_opt_in_and_never_with_auth() {
        let key = |r: Result<(), Problem>| r.err().map(|p| p.key);
        assert_eq!(
            key(check_cleartext(SmtpTls::None, "127.0.0.1", false, false)),
            None
        );
        assert_eq!(
            key(check_cleartext(
                SmtpTls::None,
                "smtp.example.com",
                false,
                false
            ))
            .as_deref(),
            Some("smtp.tls")
        );
        assert_eq!(
            key(check_cleartext(
                SmtpTls::None,
                "smtp.example.com",
                false,
                true
            )),
            None
        );
        // Credentials without TLS: refused whatever the host and the opt-in.
        for (host, allow) in [("127.0.0.1", false), ("smtp.example.com", true)] {
            assert_eq!(
                key(check_cleartext(SmtpTls::None, host, true, allow)).as_deref(),
                Some("smtp.tls")
            );
        }
        assert_eq!(
            key(check_cleartext(
                SmtpTls::Starttls,
                "smtp.example.com",
                true,
                true
            ))
            .as_deref(),
            Some("smtp.allow_cleartext")
        );
        assert_eq!(
            key(check_cleartext(
                SmtpTls::Tls,
                "smtp.example.com",
                true,
                false
            )),
            None
        );
    }

    #[test]
    fn the_transport_refuses_credentials_without_tls() {
        let mut s = settings(2525);
        s.username = Some("notifier".into());
        s.password = Some("s3cret".into());
        let p = Mailer::new(s).expect_err("refused");
        assert_eq!(p.key, "smtp.tls");
        assert!(!p.message.contains("s3cret"), "{}", p.message);
    }

    #[tokio::test]
    async fn server_down_retries() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let m = Mailer::new(settings(port)).unwrap();
        let r = m.send(&msg("frontdesk@clinic.example", None)).await;
        assert!(matches!(r.verdict, Verdict::Retry { .. }), "{r:?}");
        assert_eq!(r.status, None);
    }
}
