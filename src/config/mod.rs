//! The configuration file, from YAML to the validated settings every stage runs on. The
//! foundation of the crate: it names no stage above it.
//!
//! - [`raw`]: the serde types that mirror the YAML (the rules' spec included) and the parser;
//! - [`vars`]: `${VAR}` substitution, one pass over what was parsed, with the variables passed in;
//! - [`load`]: the one compile step, raw to runtime types, every problem with its line and key;
//! - [`problem`]: what a problem is and how a failed config reads;
//! - the runtime types: [`base`] (Clinicea, resources, store), [`destination`], [`smtp`],
//!   [`retry`], [`secret`] (webhook signing secrets), and [`placeholder`] (example values `check`
//!   refuses).
//!
//! `check` prints problems as `rules.yaml:14: rules[new-lead].where[1].matches: invalid regex ...`.

pub mod base;
pub mod destination;
pub mod load;
pub mod placeholder;
pub mod problem;
pub mod raw;
pub mod retry;
pub mod secret;
pub mod smtp;
pub mod vars;

pub use base::{
    defaults, Base, Clinicea, Login, Resource, SecretString, StartFrom, StoreSettings,
    DEFAULT_LOGIN_PATH, MAX_POLL_INTERVAL, MAX_WAIT, MIN_METRICS_TOKEN_LEN,
};
pub use destination::{ChatKind, Destination, Target, WebhookTarget};
pub use load::{env_vars, load, load_str, Config};
pub use problem::{line_of, ConfigError, Problem};
pub use raw::{parse_duration, AuthMode, SmtpTls, Text, MAX_DURATION};
pub use retry::RetryPolicy;
pub use smtp::SmtpSettings;

/// Whether a URL's host is this machine: `localhost`, or an address the egress rules class as
/// loopback ([`crate::net::egress::is_loopback_ip`]: 127.0.0.0/8, `::1`, `::ffff:127.x.y.z`).
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => crate::net::egress::is_loopback_ip(ip.into()),
        Some(url::Host::Ipv6(ip)) => crate::net::egress::is_loopback_ip(ip.into()),
        None => false,
    }
}

/// [`is_loopback`] for a host name as written (`localhost`, `127.0.0.1`, `::1`, `[::1]`), such
/// as `smtp.host`.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim();
    let bracketed = if h.contains(':') && !h.starts_with('[') {
        format!("[{h}]")
    } else {
        h.to_string()
    };
    // Parsed as an http URL: only the special schemes parse IP addresses (`127.1` too) as such.
    url::Url::parse(&format!("http://{bracketed}/")).is_ok_and(|u| is_loopback(&u))
}

/// A resource or destination name: what can safely be part of a store key and a metric label.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_the_egress_rules_loopback_for_urls_and_hosts_alike() {
        for h in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.3.4.5",
            "::1",
            "[::1]",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_loopback_host(h), "{h}");
            let bracketed = if h.contains(':') && !h.starts_with('[') {
                format!("[{h}]")
            } else {
                h.to_string()
            };
            let url = url::Url::parse(&format!("http://{bracketed}/")).unwrap();
            assert!(is_loopback(&url), "{url}");
        }
        for h in [
            "smtp.example.com",
            "10.0.0.5",
            "127.0.0.1.nip.io",
            "::2",
            "",
            "localhost.evil.example",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
