//! clinicea-notifier: signed, reliable webhooks, chat messages and staff emails for Clinicea.
//!
//! The pipeline, one module per capability:
//!
//! ```text
//!  config ──► clinicea (poll a resource, page by page)
//!                 │
//!                 ▼
//!               diff (against the last version in store) ──► model::Change
//!                 │
//!                 ▼
//!               rules (which destinations get it) ──► render (body rendered once)
//!                 │
//!                 ▼
//!               store (snapshots + changes + outbox entries of a page: one sled transaction)
//!                 │
//!                 ▼
//!               deliver (per-destination workers) ──► webhook | email | chat
//!                 │                                       │
//!                 └── retries, attempts log, dead letters ◄┘
//! ```
//!
//! `sandbox` is a simulated Clinicea API for tests, rehearsals and the demo; `catcher` is a small
//! SMTP server; `demo` runs the sandbox, a receiver, the catcher and the notifier in one process;
//! `telemetry` sets up logs and metrics.

#![warn(unreachable_pub)]

pub mod commands;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod ingest;
pub mod kit;
pub mod model;
pub mod net;
pub mod outbox;
pub mod route;
pub mod telemetry;
