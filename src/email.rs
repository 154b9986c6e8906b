//! Email (placeholder until the email work lands).
use serde::{Deserialize, Serialize};
/// One email to one recipient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailMessage {
    /// Recipient.
    pub to: String,
}
