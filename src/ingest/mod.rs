//! Ingest: read Clinicea and tell what changed. The API client, the incremental splitter of a
//! page body, the diff of a record against the version last seen, one poll of one resource and
//! the silent baseline at a resource's first start.

pub mod baseline;
pub mod client;
pub mod diff;
pub mod poll;
pub mod split;
