//! The rehearsal kit as a README reader meets it: `demo` runs for its duration and shows changes,
//! signed webhooks, emails and retries; `sandbox` refuses a non-loopback address unless allowed.

use crate::support::*;
use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// The summary's `  key: value` lines.
fn summary(stdout: &str) -> HashMap<String, u64> {
    let tail = stdout
        .split("\nSummary after ")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    tail.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_for_20s_and_shows_changes_signed_webhooks_emails_and_retries() {
    // No config file and no environment are needed.
    let dir = tempfile::tempdir().unwrap();
    let mut child = Notifier::command(dir.path(), &["demo", "--duration", "20s"]).spawn();
    let started = Instant::now();
    let Some(status) = child.wait_exit(Duration::from_secs(90)).await else {
        panic!("the demo did not stop within 90 s");
    };
    let stdout = child.stdout_text();
    let stderr = child.stderr_text();
    let ctx = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(status.success(), "exit status {status:?}\n{ctx}");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(20), "{elapsed:?}");

    let s = summary(&stdout);
    let n = |k: &str| {
        *s.get(k)
            .unwrap_or_else(|| panic!("no {k:?} in the summary\n{ctx}"))
    };
    assert!(n("changes detected") > 0, "{ctx}");
    assert!(n("rules matched") > 0, "{ctx}");
    assert!(n("deliveries delivered") > 0, "{ctx}");
    assert!(n("signatures verified OK") > 0, "{ctx}");
    assert_eq!(n("signatures failed"), 0, "{ctx}");
    assert!(n("emails caught") > 0, "{ctx}");
    assert!(n("chat messages") > 0, "{ctx}");
    assert!(n("retries") > 0, "a retry was seen\n{ctx}");

    // The live stream shows each kind of line.
    for needle in [
        // Two clinics, each change named with its own.
        "] change     north leads added id ",
        "] change     south leads added id ",
        "rules [new-lead-email, everything-to-automations]",
        "] receiver   webhook #1 ",
        "signature OK",
        "answering 503 (injected failure)",
        "] retry      ",
        "] delivered  automations: ",
        ", attempt 2, status 200",
        "] email      caught \"New lead: ",
        "to frontdesk@clinic.example",
        // The digest: five new leads (or a minute's) in one email.
        " new leads\" to sales-lead@clinic.example",
        "] slack      message #",
        // The demo's operator alert: legacy-crm is down, ops is told once.
        "] email      caught \"[clinicea-notifier] ALERT: destination legacy-crm has failed",
        "to ops@clinic.example",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?}\n{ctx}");
    }
    assert!(!stdout.contains("signature FAILED"), "{ctx}");
    // The lead email rule is north's: no south change matches it.
    assert!(
        !stdout
            .lines()
            .any(|l| l.contains("] change     south ") && l.contains("new-lead-email")),
        "{ctx}"
    );
    // South polls only its leads and appointments.
    assert!(!stdout.contains("] change     south patients"), "{ctx}");
}

#[tokio::test]
async fn sandbox_refuses_a_non_loopback_listen_address_unless_allowed() {
    let out = Command::new(BIN)
        .args(["sandbox", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-remote"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Asked for explicitly, it serves (checked over loopback, then killed).
    let dir = tempfile::tempdir().unwrap();
    let mut child = Notifier::command(
        dir.path(),
        &["sandbox", "--listen", "0.0.0.0:0", "--allow-remote"],
    )
    .spawn();
    let first = child
        .stdout_line(Duration::from_secs(30), |_| true)
        .await
        .unwrap_or_default();
    let port: u16 = first
        .trim()
        .strip_prefix("Clinicea sandbox on http://0.0.0.0:")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    let stream = std::net::TcpStream::connect(("127.0.0.1", port));
    child.kill9().await;
    assert!(stream.is_ok(), "the sandbox did not listen: {stream:?}");
}
