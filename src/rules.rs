//! Rules: the condition language, compiled once at start. (Placeholder until the rules work lands.)

use serde::Deserialize;

/// One rule as written in the config file.
#[derive(Debug, Clone, Deserialize)]
pub struct RuleSpec {
    /// The rule's name.
    pub name: String,
}
