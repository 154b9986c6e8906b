//! Ingest: read Clinicea and tell what changed. The API client, the incremental splitter of a
//! page body, the diff of a record against the version last seen, the page walk, one poll of one
//! resource and the silent baseline at a resource's first start.
//!
//! Ingest sits on the foundation only: what it needs from the stages after it (the stored state
//! of a resource, and a place to hand each diffed chunk) is the port [`intake::Intake`], which
//! the daemon implements over the rules and the store.

pub mod baseline;
pub mod client;
pub mod ctx;
pub mod diff;
pub mod intake;
pub mod poll;
pub(crate) mod split;
pub mod state;
pub(crate) mod walk;
