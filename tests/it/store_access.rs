//! One process at a time on a store, and stores that cannot be used: a second open is refused
//! with a clear message, `status`, `dead list` and `once` read a stopped store and refuse one a
//! running notifier holds, and a path that cannot be created or a disk that fills fails clearly
//! and loses nothing.

use crate::support::*;
use clinicea_notifier::model::DEFAULT_CLINIC;
use clinicea_notifier::outbox::store::{Store, StoreError, DEFAULT_CACHE_BYTES};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

#[test]
fn a_store_opened_twice_is_locked_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let _first = Store::open(&path, DEFAULT_CACHE_BYTES).unwrap();
    match Store::open(&path, DEFAULT_CACHE_BYTES) {
        Err(e @ StoreError::Locked { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string())
                    && msg.contains("in use by another process"),
                "{msg}"
            );
        }
        Err(e) => panic!("expected Locked, got {e:?}"),
        Ok(_) => panic!("a second open of the same store must fail"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_while_run_holds_the_store_says_it_is_in_use() {
    let sb = default_sandbox().await;
    let t = TestDir::new(&leads_only(&sb.base_url()).listen().to_yaml());
    let mut child = Notifier::run(&t)
        .flags(&["-q"])
        .ready_within(Duration::from_secs(20))
        .start()
        .await;
    let out = Command::new(BIN)
        .args(["status", "--config"])
        .arg(&t.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        text.contains("in use by a running notifier") && text.contains("stop it first"),
        "{text}"
    );
    assert!(
        child
            .terminate(Duration::from_secs(15))
            .await
            .is_some_and(|s| s.success()),
        "run stops cleanly on SIGTERM"
    );
    let out = Command::new(BIN)
        .args(["status", "--config"])
        .arg(&t.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "status works once run stopped: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_store_path_that_cannot_be_created_names_the_path_and_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    // A path under a regular file: no one, not even root, can create a directory there.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let path = file.join("data");
    let Err(e) = Store::open(&path, DEFAULT_CACHE_BYTES) else {
        panic!("a store opened under a regular file");
    };
    let msg = e.to_string();
    println!("{msg}");
    assert!(matches!(e, StoreError::Open { .. }), "{e:?}");
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("Not a directory"),
        "{msg}"
    );

    // A directory without permissions: only meaningful when not root (root bypasses the mode).
    let locked = dir.path().join("no-access");
    std::fs::create_dir(&locked).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::write(locked.join("probe"), "x").is_ok() {
        println!("SKIPPED the chmod 000 case: this process bypasses file modes (running as root)");
    } else {
        let Err(e) = Store::open(&locked.join("data"), DEFAULT_CACHE_BYTES) else {
            panic!("a store opened in a directory without access");
        };
        let msg = e.to_string();
        assert!(msg.contains("Permission denied"), "{msg}");
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// `once` on the test's config, run to completion: its output, and stdout then stderr.
async fn once(t: &TestDir) -> (std::process::Output, String) {
    let out = cli(t, &["once"]).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

/// Unmounts on drop.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A disk that fills: the store on a 2 MiB tmpfs (needs root and mount rights; skipped with the
/// reason otherwise). The poll fails with an I/O error naming the cause, nothing panics, and once
/// space is freed the next run picks everything up: nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_poll_clearly_and_nothing_is_lost_once_space_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .output();
    let ok = matches!(&mounted, Ok(o) if o.status.success());
    if !ok {
        println!("SKIPPED the full-disk case: cannot mount a small tmpfs here ({mounted:?})");
        return;
    }
    let _mount = Mount(mnt.clone());
    // 300 leads with 20 KB of notes each: about 6 MB of snapshots, three times the disk.
    let sb = sandbox_with_leads(0).await;
    for i in 0..300 {
        sb.sandbox.insert(
            "leads",
            json!({"ID": format!("lead-{i:03}"), "Notes": format!("{i}").repeat(20_000 / 3 + 1)}),
        );
    }
    let config =
        leads_only(&sb.base_url()).store(StoreSection::at(&mnt.join("data").display().to_string()));
    let t = TestDir::new(&config.to_yaml());
    let (out, text) = once(&t).await;
    println!(
        "once on a full disk: {:?}\n{}",
        out.status,
        &text[text.len().saturating_sub(1500)..]
    );
    assert!(!out.status.success(), "a full disk is a failure");
    assert!(!text.contains("panicked"), "no panic: {text}");
    assert!(
        text.contains("No space left on device") || text.contains("store"),
        "says why: {text}"
    );

    // Free space: grow the tmpfs, run again, and every lead is there.
    let grown = Command::new("mount")
        .args(["-o", "remount,size=256m"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(grown.success());
    let (out, text) = once(&t).await;
    assert!(out.status.success(), "once with space back: {text}");
    let store = Store::open(&mnt.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    assert_eq!(
        store.snapshot_count(DEFAULT_CLINIC, "leads").await.unwrap(),
        300,
        "every lead, none lost: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_dead_list_read_a_stopped_store_and_refuse_a_running_ones() {
    let sb = sandbox_with_leads(3).await;
    let ok = Receiver::start().await;
    let flaky = Receiver::with(Responder::always(Reply::status(503))).await;
    let bad = Receiver::with(Responder::always(Reply::status(400))).await;
    let config = leads_only(&sb.base_url())
        .listen()
        .retry(Retry::schedule(&["1h"]))
        .webhook("ok", &ok.url, |w| w)
        .webhook("flaky", &flaky.url, |w| w)
        .webhook("bad", &bad.url, |w| w)
        .rule(Rule::new("all-leads", &["ok", "flaky", "bad"]).resource("leads"));
    let t = TestDir::new(&config.to_yaml());

    // Never polled.
    let out = cli(&t, &["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        text.contains("leads") && text.contains("never polled"),
        "{text}"
    );

    // Polled but nothing delivered yet: 3 queued for each destination.
    {
        let engine = t.engine().await;
        poll_report(&engine).await.unwrap();
    }
    let out = cli(&t, &["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", output_text(&out));
    for name in ["ok", "flaky", "bad"] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{text}"));
        assert!(line.contains("queued 3, retrying 0, dead 0"), "{line}");
    }
    let out = cli(&t, &["dead", "list"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("No dead letters"));

    // One `once`: ok delivers, flaky retries (in an hour), bad dies.
    let out = cli(&t, &["once"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    let out = cli(&t, &["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", output_text(&out));
    let line_of = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line_of("ok").contains("queued 0, retrying 0, dead 0"),
        "{text}"
    );
    assert!(
        line_of("flaky").contains("queued 0, retrying 3, dead 0"),
        "{text}"
    );
    assert!(
        line_of("bad").contains("queued 0, retrying 0, dead 3"),
        "{text}"
    );
    let leads = line_of("leads");
    assert!(
        leads.contains("next since 20")
            && leads.contains("last poll ok")
            && leads.contains("3 records known"),
        "{text}"
    );
    let out = cli(&t, &["dead", "list"]).await;
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", output_text(&out));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("bad") && l.contains("leads.added") && l.contains("400")),
        "{list}"
    );

    // While `run` holds the store, both refuse with a clear message and a non-zero exit.
    let mut d = Notifier::run(&t).start().await;
    for args in [&["status"][..], &["dead", "list"][..], &["once"][..]] {
        let out = cli(&t, args).await;
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{}", output_text(&out));
        assert!(
            err.contains("in use") && (err.contains("stop it first") || args == ["once"]),
            "{}",
            output_text(&out)
        );
    }
    let status = d.terminate(Duration::from_secs(20)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let out = cli(&t, &["status"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
}
