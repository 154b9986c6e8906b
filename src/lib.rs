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

pub mod app;
pub mod baseline;
pub mod catcher;
pub mod chat;
pub mod clinicea;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod demo;
pub mod diff;
pub mod egress;
pub mod email;
pub mod model;
pub mod outcome;
pub mod placeholder;
pub mod poll;
pub mod render;
pub mod rules;
pub mod sandbox;
pub mod split;
pub mod store;
pub mod telemetry;
pub mod webhook;
