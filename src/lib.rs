//! clinicea-notifier: signed, reliable webhooks, chat messages and staff emails for Clinicea.
//!
//! The pipeline, one folder per stage. Data flows down this map, and a module imports only its own
//! stage or the stages above it here (`tests/it/layers.rs` checks it):
//!
//! ```text
//!  foundation   model (Change, change_id) · config (YAML → validated settings) ·
//!               net (egress rules, Retry-After, scrubbing, mail addresses) · telemetry ·
//!               runtime (long synchronous work off the async workers)
//!      │
//!  ingest       client (one page of the API) → walk (the pages of a window) → poll (passes,
//!      │        checkpoint) → diff (record vs. last seen) ⇒ changes, handed to the Intake port
//!  route        rules (which destinations) → render / chat (templates, bodies) → plan
//!      │
//!  outbox       entry (typed entries, dead letters, attempt logs) · store (sled: snapshots,
//!      │        journal and outbox of a chunk in one transaction)
//!  deliver      worker (the one scheduler) → attempt (the step) → webhook | email | chat,
//!      │        judged by outcome (Success / Retry / Fail)
//!  daemon       run, reload, signals · engine (the one constructor) · settings (compiled all the
//!      │        way) · intake (ingest's port over route and outbox) · health · events
//!  commands     once, check, test-rule, status, dead, purge, verify
//!
//!  kit          sandbox (a simulated Clinicea), catcher (an SMTP server), demo: beside the
//!               pipeline, which never imports it
//! ```

#![warn(unreachable_pub)]
// The docs are for whoever maintains the notifier (`cargo doc --document-private-items`): module
// docs name the crate-private items that do the work, which rustdoc would otherwise flag.
#![allow(rustdoc::private_intra_doc_links)]

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
pub mod runtime;
pub mod telemetry;
