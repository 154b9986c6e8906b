//! The SMTP server email destinations send through, as `smtp:` describes it ([`SmtpSettings`]),
//! and the rules about it that both `check` and the mailer apply: addresses, AUTH, cleartext.

use crate::config::problem::Problem;
use crate::config::raw::SmtpTls;
use std::time::Duration;

/// Default per-command SMTP timeout.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// AUTH needs both a user name and a password, or neither. `config::load` and the mailer both
/// ask, so no path builds a transport that would refuse to log in.
pub(crate) fn check_credentials(username: bool, password: bool) -> Result<(), Problem> {
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
pub(crate) fn check_cleartext(
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
    if !allow_cleartext && !crate::net::egress::is_loopback_host(host) {
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
    pub(crate) fn default_port(tls: SmtpTls) -> u16 {
        match tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
