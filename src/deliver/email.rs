//! Staff emails: the message stored in the outbox ([`EmailMessage`], one recipient each, so one
//! failing recipient never makes another get the message twice) and the SMTP [`Mailer`] that sends
//! it with a pooled lettre transport.
//!
//! A message keeps its `Message-ID` across retries, so a mail client shows a retried message once.
//! SMTP 5xx answers fail at once; 4xx answers, timeouts and connection or TLS errors retry. Logs
//! show the recipient's domain only, never the address, subject or body.

use crate::config::smtp::check_credentials;
use crate::config::{Problem, SmtpSettings, SmtpTls};
use crate::deliver::outcome::{self, AttemptReport, RESPONSE_SNIPPET_BYTES};
use crate::model::{truncate_utf8, Verdict};
use crate::net::mail::{domain_of, validate_address};
use crate::route::plan::EmailMessage;
use lettre::message::header::ContentType;
use lettre::message::{Message, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::time::{Duration, Instant};

/// Connections kept open to the SMTP server.
pub(crate) const POOL_SIZE: u32 = 4;

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
        // `config::load` already refuses this; the transport itself refuses it too, so no path can
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
