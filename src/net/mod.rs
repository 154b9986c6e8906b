//! The network's ground rules and helpers, shared by every stage that connects anywhere (the API
//! client and every sink): where the notifier may connect at all ([`egress`]), how long a peer
//! may ask it to wait ([`retry_after`]), what never leaves in error text ([`scrub`]), query
//! encoding ([`http`]) and mail addresses ([`mail`]).

pub mod egress;
pub(crate) mod http;
pub mod mail;
pub mod retry_after;
pub(crate) mod scrub;
