//! The integration suite: one binary, real parts over loopback (the product's own Clinicea sandbox,
//! real webhook receivers, a real SMTP listener) and a temporary sled directory per test.

mod bad_input;
mod baseline;
mod chat;
mod cli;
mod crash;
mod data;
mod delivery;
mod demo;
mod egress;
mod email;
mod faults;
mod foundation;
mod helpers;
mod layers;
mod leaks;
mod mailer;
mod ops;
mod paging;
mod props;
mod signals;
