//! The integration suite: one binary, real parts over loopback (the product's own Clinicea sandbox,
//! real webhook receivers, a real SMTP listener) and a temporary sled directory per test, or a
//! PostgreSQL database of its own where the test is about that store. Each file is named after the
//! behaviour it checks; `support` holds the parts they share.

mod alerts;
mod api_pages;
mod baseline;
mod broker_delivery;
mod chat_delivery;
mod config_check;
mod config_reload;
mod diff_properties;
mod digests;
mod egress;
mod email_delivery;
mod error_privacy;
mod failover;
mod fault_injection;
mod fuzz_corpus;
mod graceful_shutdown;
mod journal;
mod json_output;
mod kill_9_recovery;
mod layers;
mod log_privacy;
mod mailer;
mod many_clinics;
mod metrics_and_health;
mod move_to_postgres;
mod paging;
mod polling;
mod quiet_hours;
mod rehearsal_kit;
mod retention_and_erasure;
mod rule_matching;
mod sandbox_fleet;
mod shaping;
mod store_access;
mod store_privacy;
mod support;
mod trigger;
mod verify_command;
mod web_console;
mod webhook_delivery;
mod webhook_ids;
