//! Mail addresses: what config checks, what planning renders into a message and what the mailer
//! sends to, read one way: an address's syntax, its domain, and a delivery's stable `Message-ID`.

use lettre::message::Mailbox;
use sha2::{Digest, Sha256};

/// The domain a `Message-ID` falls back to when the sender's domain is empty or odd.
const FALLBACK_ID_DOMAIN: &str = "clinicea-notifier.invalid";

/// A stable `Message-ID` (`<hex@domain>`) for a delivery: the same key always gives the same id,
/// so a mail client shows a retried message once. An empty or odd `domain` becomes
/// `clinicea-notifier.invalid`.
pub fn message_id(delivery_key: &str, domain: &str) -> String {
    let digest = Sha256::digest(delivery_key.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let domain = domain.trim();
    let ok = !domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    let domain = if ok { domain } else { FALLBACK_ID_DOMAIN };
    format!("<{hex}@{domain}>")
}

/// The domain of an address (`Name <a@clinic.example>` → `clinic.example`), for Message-IDs and
/// logs; empty when there is none.
pub(crate) fn domain_of(address: &str) -> String {
    let addr = address
        .rsplit_once('<')
        .map(|(_, a)| a.trim_end_matches('>'))
        .unwrap_or(address);
    addr.rsplit_once('@')
        .map(|(_, d)| d.trim().trim_end_matches('>').to_ascii_lowercase())
        .unwrap_or_default()
}

/// Parses an address (`a@b` or `Name <a@b>`). The error does not repeat the address, which may
/// come from a record.
pub(crate) fn validate_address(s: &str) -> Result<Mailbox, String> {
    s.trim()
        .parse::<Mailbox>()
        .map_err(|e| format!("not a valid email address ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_addresses_and_domains() {
        let a = message_id("k1", "clinic.example");
        assert_eq!(a, message_id("k1", "clinic.example"));
        assert_ne!(a, message_id("k2", "clinic.example"));
        assert!(a.starts_with('<') && a.ends_with("@clinic.example>"));
        assert!(message_id("k", "").ends_with("@clinicea-notifier.invalid>"));
        assert_eq!(domain_of("Clinic <a@Clinic.Example>"), "clinic.example");
        assert_eq!(domain_of("a@b.c"), "b.c");
        assert!(validate_address("Front Desk <fd@clinic.example>").is_ok());
        let e = validate_address("patient-at-example.com").unwrap_err();
        assert!(!e.contains("patient"), "{e}");
    }
}
