//! What the benchmarks share: the sandbox's key and a webhook secret, sizes from the
//! environment, an engine from a config text, a delivery worker over its store, the release
//! binary to run as a child, a free loopback port and the result table.

// Each benchmark is a crate of its own and uses a part of this module.
#![allow(dead_code)]

use clinicea_notifier::daemon::engine::Engine;
use clinicea_notifier::daemon::events::Events;
use clinicea_notifier::daemon::settings::load_settings_with;
use clinicea_notifier::deliver::{Deliverer, Event};
use clinicea_notifier::outbox::entry::Wake;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The webhook secret of every benchmark destination.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The sandbox's default API key.
pub const API_KEY: &str = "sandbox-api-key";

/// `name` from the environment, parsed; `default` when unset or not a number.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An engine on the config `yaml`, written into `dir` (its store's relative paths land there).
pub async fn engine_in(dir: &Path, yaml: &str) -> Engine {
    let config = dir.join("clinicea-notifier.yaml");
    std::fs::write(&config, yaml).unwrap();
    let settings = match load_settings_with(&config, &HashMap::new()) {
        Ok(s) => s,
        Err(e) => panic!("bench config should load: {e}"),
    };
    Engine::open(settings, Events::none())
        .await
        .expect("engine opens")
}

/// A delivery worker for `destination` over the engine's store, with a deliverer of its own that
/// reports each attempt on `events` when given: the worker's task, the sender of its wake-ups
/// and the token that stops it.
pub async fn spawn_worker(
    engine: &Engine,
    destination: &str,
    events: Option<mpsc::UnboundedSender<Event>>,
) -> (
    tokio::task::JoinHandle<()>,
    mpsc::UnboundedSender<Wake>,
    CancellationToken,
) {
    let deliverer = Deliverer::new(
        engine.store.clone(),
        engine.settings.pipeline.destinations.clone(),
        None,
        events,
    )
    .await
    .expect("deliverer builds");
    let (wake_tx, wake_rx) = mpsc::unbounded_channel::<Wake>();
    let cancel = CancellationToken::new();
    let worker =
        tokio::spawn(deliverer.run_destination(destination.to_string(), wake_rx, cancel.clone()));
    (worker, wake_tx, cancel)
}

/// The release binary beside this benchmark's own: `target/release/deps/NAME-HASH` ->
/// `target/release/clinicea-notifier` (built by `cargo build --release --bin clinicea-notifier`).
pub fn notifier_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .map(|p| p.join("clinicea-notifier"))
        .unwrap()
}

/// A free port on 127.0.0.1 (bound, read and released: a child process binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One line of the result table (`print_table`): a figure, its unit, the ceiling it is compared
/// with in the same run (the ratio column is figure / ceiling) and a target with its verdict.
pub struct Row {
    name: String,
    figure: f64,
    unit: &'static str,
    ceiling: Option<f64>,
    target: String,
    met: Option<bool>,
}

/// A row without a target.
pub fn row(name: &str, figure: f64, unit: &'static str, ceiling: Option<f64>) -> Row {
    Row {
        name: name.to_string(),
        figure,
        unit,
        ceiling,
        target: String::new(),
        met: None,
    }
}

impl Row {
    /// The target text and whether this run met it.
    pub fn target(mut self, text: &str, met: bool) -> Row {
        self.target = text.to_string();
        self.met = Some(met);
        self
    }
}

/// Prints the rows as a Markdown table, as `bench/README.md` quotes them.
pub fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| {:<52} | {:>12} | {:<9} | {:>12} | {:>6} | {:<28} | {:<4} |",
        "measure", "figure", "unit", "ceiling", "ratio", "target", "met"
    );
    println!(
        "|{:-<54}|{:-<14}|{:-<11}|{:-<14}|{:-<8}|{:-<30}|{:-<6}|",
        "", "", "", "", "", "", ""
    );
    for r in rows {
        let ceiling = r.ceiling.map_or("-".to_string(), |c| format!("{c:.1}"));
        let ratio = r
            .ceiling
            .filter(|c| *c > 0.0)
            .map_or("-".to_string(), |c| format!("{:.2}", r.figure / c));
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!(
            "| {:<52} | {:>12.1} | {:<9} | {:>12} | {:>6} | {:<28} | {:<4} |",
            r.name, r.figure, r.unit, ceiling, ratio, r.target, met
        );
    }
}
