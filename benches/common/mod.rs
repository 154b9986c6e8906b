//! What the benchmarks that run the real binary share.

use std::path::{Path, PathBuf};

/// The release binary beside this benchmark's own: `target/release/deps/NAME-HASH` ->
/// `target/release/clinicea-notifier` (built by `cargo build --release --bin clinicea-notifier`).
pub fn notifier_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .map(|p| p.join("clinicea-notifier"))
        .unwrap()
}
