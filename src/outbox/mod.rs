//! The outbox: what is durable. The typed values the store keeps (entries, dead letters, attempt
//! logs), the store seam ([`store::Store`]) and its two backends: sled, embedded (queued bodies in
//! segment files beside it, [`bodies`]), and PostgreSQL,
//! shared by replicas that hold their clinics by lease ([`lease`]); and throwaway PostgreSQL
//! databases ([`scratch`]) for the tests and benchmarks of that backend.

pub(crate) mod bodies;
pub(crate) mod embedded;
pub mod entry;
pub mod lease;
pub(crate) mod postgres;
pub mod scratch;
pub mod store;
#[cfg(test)]
mod tests;
