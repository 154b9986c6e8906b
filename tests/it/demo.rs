//! Issue 6: the `demo` command, run as a child process the way a README reader runs it.

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
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

#[test]
fn the_demo_runs_for_20s_and_shows_changes_signed_webhooks_emails_and_retries() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_clinicea-notifier"))
        .args(["demo", "--duration", "20s"])
        // No config file and no environment are needed.
        .env_remove("CLINICEA_NOTIFIER_CONFIG")
        .env_remove("RUST_LOG")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("the demo did not stop within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
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
        "] change     leads added id ",
        "rules [new-lead-email, everything-to-automations]",
        "] receiver   webhook #1 ",
        "signature OK",
        "answering 503 (injected failure)",
        "] retry      ",
        "] delivered  automations: ",
        ", attempt 2, status 200",
        "] email      caught \"New lead: ",
        "to frontdesk@clinic.example",
        "] slack      message #",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?}\n{ctx}");
    }
    assert!(!stdout.contains("signature FAILED"), "{ctx}");
}
