//! The outbox: what is durable. The typed values the store keeps (entries, dead letters, attempt
//! logs) and the store itself.

pub mod entry;
pub mod store;
