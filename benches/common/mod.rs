//! What the benchmarks share: the sandbox's key and a webhook secret, sizes from the
//! environment, an engine from a config text, and the release binary to run as a child.

// Each benchmark is a crate of its own and uses a part of this module.
#![allow(dead_code)]

use clinicea_notifier::daemon::engine::Engine;
use clinicea_notifier::daemon::events::Events;
use clinicea_notifier::daemon::settings::load_settings_with;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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

/// The release binary beside this benchmark's own: `target/release/deps/NAME-HASH` ->
/// `target/release/clinicea-notifier` (built by `cargo build --release --bin clinicea-notifier`).
pub fn notifier_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .map(|p| p.join("clinicea-notifier"))
        .unwrap()
}
