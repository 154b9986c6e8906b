//! Who can read patient data at rest: a new store is owner-only whatever the umask, and a store
//! an older version left readable by others is a warning naming it, and is tightened.

use crate::support::*;
use clinicea_notifier::outbox::store::{Store, DEFAULT_CACHE_BYTES};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The warning a store others can read gets.
const LOOSE_STORE_WARNING: &str = "the store could be read by other users";

/// Every folder and file under `dir` (itself first) with its permission bits.
fn modes(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = vec![(
        dir.to_path_buf(),
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
    )];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path(), m.permissions().mode() & 0o777));
        }
    }
    out
}

/// Asserts the folders under `dir` are 0700 and the files 0600.
fn assert_owner_only(dir: &Path) {
    let all = modes(dir);
    assert!(
        all.iter().any(|(p, _)| p.ends_with("db")) && all.iter().any(|(p, _)| p.ends_with("conf")),
        "sled's files are there: {all:?}"
    );
    for (p, mode) in all {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", p.display());
    }
}

/// Runs the binary under `umask 022`, as a shell outside systemd would.
fn under_umask_022(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$@\"")
        .arg("sh")
        .arg(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn under_umask_022_a_new_store_is_0700_and_its_files_0600() {
    let t = TestDir::new(&leads_only("http://127.0.0.1:1").to_yaml());
    let out = under_umask_022(&t.config, &["status"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_owner_only(&store_path(&t));
    assert!(
        !output_text(&out).contains(LOOSE_STORE_WARNING),
        "a store it just made is no warning: {}",
        output_text(&out)
    );
}

#[test]
fn a_store_others_can_read_is_a_warning_naming_it_and_is_tightened() {
    let t = TestDir::new(&leads_only("http://127.0.0.1:1").to_yaml());
    let path = store_path(&t);
    drop(Store::open(&path, DEFAULT_CACHE_BYTES).unwrap());
    // As an older version left it under umask 022.
    for (p, _) in modes(&path) {
        let mode = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let out = under_umask_022(&t.config, &["status"]);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    // The path as the config gives it (`./data` below the config's folder).
    let named = t.dir.path().join("./data").display().to_string();
    assert!(
        text.contains(LOOSE_STORE_WARNING) && text.contains(&named) && text.contains("755"),
        "{text}"
    );
    assert_owner_only(&path);
    let again = under_umask_022(&t.config, &["status"]);
    assert!(
        !output_text(&again).contains(LOOSE_STORE_WARNING),
        "warned once, fixed: {}",
        output_text(&again)
    );
}
