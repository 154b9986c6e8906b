//! The rehearsal kit: a simulated Clinicea API, a small SMTP server and the demo that runs them
//! with the notifier. The pipeline never imports the kit; the kit uses the pipeline as a user would.

pub mod catcher;
pub mod demo;
pub mod sandbox;
