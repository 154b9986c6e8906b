//! Webhook signing secrets as the config holds them: `whsec_<base64>`, parsed and checked once at
//! load ([`Secret::parse`]); signing with them is `deliver::webhook`'s business.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use std::fmt;

/// The prefix every Standard Webhooks secret carries.
pub(crate) const SECRET_PREFIX: &str = "whsec_";

/// The shortest key accepted, in bytes (128 bits). The Standard Webhooks spec recommends 24 to 64.
pub(crate) const MIN_SECRET_BYTES: usize = 16;

/// Standard base64, with or without padding (both appear in the wild).
pub(crate) const B64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A webhook signing secret: the key bytes behind `whsec_<base64>`.
///
/// `Debug` prints `Secret(..)`, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

/// Why a secret was rejected. The messages never contain the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// The value does not start with `whsec_`.
    #[error("a webhook secret must look like `whsec_<base64>` (the `whsec_` prefix is missing)")]
    MissingPrefix,
    /// The part after `whsec_` is not valid base64.
    #[error("the part of the webhook secret after `whsec_` is not valid base64")]
    InvalidBase64,
    /// The key is shorter than [`MIN_SECRET_BYTES`].
    #[error("the webhook secret's key is {0} bytes long; at least {MIN_SECRET_BYTES} are required (24 to 64 recommended)")]
    TooShort(usize),
}

impl Secret {
    /// Parses `whsec_<base64>` (surrounding whitespace ignored, base64 padding optional).
    ///
    /// A value without the `whsec_` prefix is rejected rather than guessed at, so that a password
    /// pasted by mistake is not silently used as base64.
    pub fn parse(s: &str) -> Result<Secret, SigningError> {
        let b64 = s
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SigningError::MissingPrefix)?;
        let key = B64_LENIENT
            .decode(b64)
            .map_err(|_| SigningError::InvalidBase64)?;
        if key.len() < MIN_SECRET_BYTES {
            return Err(SigningError::TooShort(key.len()));
        }
        Ok(Secret { key })
    }

    /// A fresh random 32-byte secret (for the demo and `init`-style helpers).
    pub(crate) fn generate() -> Secret {
        let mut key = vec![0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), key.as_mut_slice());
        Secret { key }
    }

    /// The secret in its `whsec_<base64>` form, to hand to a receiver. Treat the result as secret.
    pub(crate) fn to_whsec(&self) -> String {
        format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(&self.key)
        )
    }

    /// The key bytes, for signing.
    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}
