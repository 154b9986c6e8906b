//! The configuration file, from YAML to the validated settings every stage runs on. The
//! foundation of the crate: it names no stage above it.
//!
//! - [`raw`]: the serde types that mirror the YAML (the rules' spec included) and the parser;
//! - [`vars`]: `${VAR}` substitution, one pass over what was parsed, with the variables passed in;
//! - [`mod@load`]: the one compile step, raw to runtime types, every problem with its line and key;
//! - [`problem`]: what a problem is and how a failed config reads;
//! - the runtime types: [`base`] (Clinicea, resources, store), [`destination`], [`smtp`],
//!   [`retry`], [`quiet`] (quiet hours and their arithmetic), [`secret`] (webhook signing
//!   secrets), and [`placeholder`] (example values `check` refuses).
//!
//! `check` prints problems as `rules.yaml:14: rules[new-lead].where[1].matches: invalid regex ...`.

pub mod alerts;
pub(crate) mod base;
pub(crate) mod destination;
pub(crate) mod digest;
pub(crate) mod load;
pub(crate) mod placeholder;
pub(crate) mod problem;
pub(crate) mod quiet;
pub(crate) mod raw;
pub(crate) mod retry;
pub(crate) mod secret;
pub(crate) mod smtp;
pub(crate) mod vars;

pub(crate) use base::{
    defaults, Base, Clinic, Clinicea, Resource, SecretString, StartFrom, StoreBackend,
    StoreSettings,
};
pub use destination::{AmqpTarget, ChatKind, Destination, NatsTarget, Target, WebhookTarget};
pub(crate) use load::env_vars;
pub use load::{load, load_str, Config};
pub use problem::{line_of, ConfigError, Problem};
pub(crate) use raw::{parse_duration, AuthMode};
pub use raw::{yaml_options, RuleSpec, SmtpTls, Text};
pub use secret::Secret;
pub use smtp::SmtpSettings;

/// A clinic, resource or destination name: what can safely be part of a store key and a metric label.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}
