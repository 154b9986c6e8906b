//! Placeholder and published secrets, which `check` refuses.
//!
//! The example files (the Kubernetes Secret, the compose file) hold `REPLACE_ME...` values where a
//! real secret goes, so that a copied example fails `check`, naming the key, until every value is
//! replaced. A webhook secret published somewhere (the Standard Webhooks specification's example,
//! an old example of this project) protects nothing: anyone can forge signatures with it, so it is
//! accepted only for a receiver on this machine (tests, the local demo).

/// What every placeholder in the example files starts with.
pub(crate) const PLACEHOLDER_PREFIX: &str = "REPLACE_ME";

/// Other values commonly left in place of a secret (compared without case).
const PLACEHOLDER_WORDS: [&str; 8] = [
    "replace-me",
    "replace_me",
    "replaceme",
    "changeme",
    "change-me",
    "change_me",
    "your-api-key",
    "your_api_key",
];

/// Webhook secrets that are public knowledge.
pub(crate) const PUBLISHED_WEBHOOK_SECRETS: [&str; 2] = [
    // The example secret of the Standard Webhooks specification.
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    // base64("replace-me-with-32-random-bytes"), once in this project's example Secret.
    "whsec_cmVwbGFjZS1tZS13aXRoLTMyLXJhbmRvbS1ieXRlcw==",
];

/// The command the messages suggest for making a webhook secret.
pub(crate) const MAKE_SECRET: &str = "echo whsec_$(head -c 32 /dev/urandom | base64)";

/// Why `value` is a placeholder rather than a real secret, or `None`. The reason never repeats
/// the value.
pub(crate) fn placeholder(value: &str) -> Option<String> {
    let v = value.trim();
    let upper = v.to_ascii_uppercase();
    if upper.contains(PLACEHOLDER_PREFIX) || upper.contains("REPLACE-ME") {
        return Some(format!(
            "is still the example's placeholder ({PLACEHOLDER_PREFIX}...); put the real value here (or in the variable this key reads)"
        ));
    }
    if PLACEHOLDER_WORDS.iter().any(|w| v.eq_ignore_ascii_case(w))
        || (v.starts_with('<') && v.ends_with('>'))
    {
        return Some(
            "is a placeholder, not a real value; put the real value here (or in the variable this key reads)"
                .to_string(),
        );
    }
    None
}

/// Whether a webhook secret is one of the [`PUBLISHED_WEBHOOK_SECRETS`] (padding and surrounding
/// space ignored).
pub(crate) fn is_published_webhook_secret(value: &str) -> bool {
    let v = value.trim().trim_end_matches('=');
    PUBLISHED_WEBHOOK_SECRETS
        .iter()
        .any(|p| p.trim_end_matches('=') == v)
}

/// The message for a published webhook secret used for a receiver elsewhere than this machine.
pub(crate) fn published_secret_message() -> String {
    format!(
        "is a published example secret: anyone can forge signatures with it, so it is accepted only for receivers on this machine; make your own with `{MAKE_SECRET}`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognised_and_real_values_are_not() {
        assert!(placeholder("REPLACE_ME").is_some());
        for v in [
            "REPLACE_ME_with_your_Clinicea_API_key",
            "replace-me",
            " ChangeMe ",
            "<your api key>",
            "https://hooks.slack.com/services/REPLACE_ME",
        ] {
            let why = placeholder(v).unwrap_or_else(|| panic!("{v} passed"));
            assert!(
                !why.contains(v.trim()),
                "the reason repeats the value: {why}"
            );
        }
        for v in ["sandbox-api-key", "k3y-8f2a", "hunter2-secret", "whsec_abc"] {
            assert_eq!(placeholder(v), None, "{v}");
        }
    }

    #[test]
    fn published_webhook_secrets_are_recognised_with_or_without_padding() {
        assert!(is_published_webhook_secret(PUBLISHED_WEBHOOK_SECRETS[0]));
        assert!(is_published_webhook_secret(
            "whsec_cmVwbGFjZS1tZS13aXRoLTMyLXJhbmRvbS1ieXRlcw"
        ));
        assert!(!is_published_webhook_secret(
            "whsec_dGhpcyBpcyBhIGZyZXNoIHJhbmRvbSBzZWNyZXQ="
        ));
    }
}
