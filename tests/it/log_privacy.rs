//! What the logs hold: at the default level, as JSON, at `-vv` and with `RUST_LOG=debug` or
//! `trace`, the logs say what happened (poll failures, retries, deliveries, dead letters) without
//! any record field, API key, SMTP password or webhook secret.
//!
//! Checked on the real binary as a child process: only a real process shows what really reaches
//! stderr.

use crate::support::*;
use clinicea_notifier::kit::catcher::CatcherOptions;
use clinicea_notifier::kit::sandbox::{Fault, FaultKind, SandboxOptions};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_logs_hold_no_record_contents_and_no_keys() {
    let log = logs_hold_no_record_contents_and_no_keys(&[]).await;
    // stderr is no terminal here (a file, as under journald or `docker logs`): no colour codes.
    assert!(
        !log.contains('\x1b'),
        "ANSI escapes in a non-terminal log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_hold_no_record_contents_and_no_keys_either() {
    let log = logs_hold_no_record_contents_and_no_keys(&["--log-format", "json"]).await;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
    }
}

/// Runs the binary with `args` at the default level through a poll failure, a retried webhook, a
/// delivered and a dead email; checks the log says so without record fields, keys or secrets;
/// returns the log.
async fn logs_hold_no_record_contents_and_no_keys(args: &[&str]) -> String {
    const API_KEY: &str = "ak_LEAKCHECK_5f1c2e9a7b";
    const SMTP_PASSWORD: &str = "smtp_LEAKCHECK_c0ffee42";
    let sb = sandbox(SandboxOptions {
        api_key: API_KEY.into(),
        leads: 0,
        patients: 0,
        appointments: 0,
        ..SandboxOptions::default()
    })
    .await;
    let lead = sb.sandbox.insert(
        "leads",
        serde_json::json!({
            "FirstName": "Zebulon",
            "LastName": "Quixotefeather",
            "Email": "zebulon.quixotefeather@example.org",
            "Mobile": "+92 300 7771234",
            "Source": "Website",
            "LeadStatus": "HOT",
            "Notes": "Allergic to penicillin"
        }),
    );
    let lead_id = lead["ID"]
        .as_str()
        .expect("the sandbox gives the lead an id")
        .to_string();
    // The first poll gets a 401 that echoes the key after 180 characters (across where an error
    // body cut before scrubbing would split it); the second a 500 on every try whose body
    // names the patient and a diagnosis; the third a truncated body (a parse error); the fourth
    // a 500 once. Every failure is logged, and the poll after them succeeds.
    sb.sandbox.inject_faults(
        Fault::new(FaultKind::Status {
            status: 401,
            retry_after: None,
            body: format!("{}{API_KEY} is not a valid key", "x".repeat(180)),
        })
        .on("leads"),
    );
    sb.sandbox.inject_faults(
        Fault::new(FaultKind::Status {
            status: 500,
            retry_after: Some(0),
            body: "error saving Zebulon Quixotefeather: diagnosis chronic hepatitis B".into(),
        })
        .on("leads")
        .times(5),
    );
    sb.sandbox
        .inject_faults(Fault::new(FaultKind::MalformedJson).on("leads"));
    sb.sandbox.inject_faults(
        Fault::new(FaultKind::Status {
            status: 500,
            retry_after: None,
            body: "oops".into(),
        })
        .on("leads"),
    );
    // A retry, then delivered.
    let hooks = Receiver::with(Responder::script([Reply::status(500)])).await;
    let smtp = start_catcher(CatcherOptions {
        reject_recipients: vec!["nobody@example.com".into()],
        ..CatcherOptions::default()
    })
    .await;
    let config = Config::new(
        Clinicea::sandbox(&sb.base_url())
            .api_key("${CLINICEA_API_KEY}")
            .poll_interval("500ms"),
    )
    .listen()
    .smtp(Smtp::plain(smtp.addr.port()).from("notifier@example.com"))
    .webhook("hooks", &hooks.url, |w| {
        w.secret("${HOOK_SECRET}")
            .timeout("5s")
            .retry(Retry::every("200ms", 2))
    })
    .email(
        "front-desk",
        &["frontdesk@example.com", "nobody@example.com"],
        "New lead: {{record.FirstName}} {{record.LastName}}",
        "new-lead",
    )
    .rule(
        Rule::new("new-lead", &["hooks", "front-desk"])
            .resource("leads")
            .on(&["added"]),
    );
    let t = TestDir::new(&config.to_yaml());
    // SMTP_PASSWORD is in the environment but unused: it must not show up either.
    let mut d = Notifier::run(&t)
        .flags(args)
        .env(&[
            ("CLINICEA_API_KEY", API_KEY),
            ("HOOK_SECRET", SECRET),
            ("SMTP_PASSWORD", SMTP_PASSWORD),
        ])
        .ready_within(Duration::from_secs(60))
        .start()
        .await;
    let base = d.url("");
    scrape_until(&base, Duration::from_secs(60), |s| {
        let dv = |dest: &str, o: &str| {
            s.value(
                "clinicea_notifier_deliveries_total",
                &[("clinic", "default"), ("destination", dest), ("outcome", o)],
            )
        };
        dv("hooks", "delivered") >= 1.0
            && dv("front-desk", "delivered") >= 1.0
            && dv("front-desk", "dead") >= 1.0
    })
    .await;
    assert_eq!(smtp.messages().len(), 1);
    let got = hooks.received();
    assert_eq!(got.len(), 2);
    assert!(String::from_utf8_lossy(&got[1].body).contains("Zebulon"));

    let status = d.terminate(Duration::from_secs(30)).await;
    let log = d.stderr_text();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}; stderr:\n{log}"
    );
    // The logs did say what happened...
    for expected in [
        "poll failed",
        "will retry",
        "dead letters",
        "delivered",
        lead_id.as_str(),
    ] {
        assert!(log.contains(expected), "the log lacks {expected:?}:\n{log}");
    }
    // ...without any record field, key or secret.
    let secret_b64 = SECRET.trim_start_matches("whsec_");
    for leak in [
        API_KEY,
        &API_KEY[..10],
        "hepatitis",
        SMTP_PASSWORD,
        secret_b64,
        "Zebulon",
        "Quixotefeather",
        "zebulon.quixotefeather",
        "7771234",
        "penicillin",
        "New lead:",
    ] {
        assert!(!log.contains(leak), "the log contains {leak:?}:\n{log}");
    }
    log
}

/// `-vv` and `RUST_LOG=debug` must not turn on the template engine's own debug logging, which
/// prints every value it renders: other crates stay at warnings unless named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_and_debug_runs_log_no_record_values() {
    let sb = empty_sandbox().await;
    let hooks = Receiver::start().await;
    let chat = Receiver::start().await;
    let yaml = leads_only(&sb.base_url())
        .webhook("hooks", &hooks.url, |w| w.timeout("5s"))
        .chat("team-chat", "slack", &chat.chat_url(), |c| c.timeout("5s"))
        .rule(
            Rule::new("r", &["hooks", "team-chat"])
                .resource("leads")
                .on(&["added"]),
        )
        .to_yaml();
    let mut lead = test_lead();
    lead["FirstName"] = serde_json::json!("Zebulon");
    lead["LastName"] = serde_json::json!("Quixotefeather");
    lead["Notes"] = serde_json::json!("Allergic to penicillin");
    lead["Mobile"] = serde_json::json!("+92 300 7771234");
    let leaks = ["Zebulon", "Quixotefeather", "penicillin", "7771234"];
    /// Command-line flags and environment of one run.
    type Run<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let runs: [Run; 4] = [
        (&["-vv"], &[]),
        (&[], &[("RUST_LOG", "debug")]),
        (&[], &[("RUST_LOG", "trace")]),
        // Named explicitly, a crate's debug logs still come through: the check below can see them.
        (&[], &[("RUST_LOG", "handlebars=debug")]),
    ];
    for (i, (flags, env)) in runs.iter().enumerate() {
        // A fresh store each time, so the lead is new and rendered again.
        let t = TestDir::new(&yaml);
        if i == 0 {
            sb.sandbox.insert("leads", lead.clone());
        }
        let args: Vec<&str> = flags.iter().copied().chain(["once"]).collect();
        let out = cli_env(&t, &args, env).await;
        assert!(
            out.status.success(),
            "{flags:?} {env:?}: {}",
            output_text(&out)
        );
        assert_eq!(
            chat.received().len(),
            i + 1,
            "{flags:?} {env:?}: the chat message was rendered"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        if *env == [("RUST_LOG", "handlebars=debug")] {
            assert!(
                stderr.contains("Rendering"),
                "handlebars=debug no longer logs: {stderr}"
            );
            continue;
        }
        assert!(
            stderr.contains("DEBUG"),
            "{flags:?} {env:?}: not a debug run: {stderr}"
        );
        for leak in leaks {
            assert!(
                !stderr.contains(leak),
                "{flags:?} {env:?}: the log contains {leak:?}:\n{stderr}"
            );
        }
    }
    assert_eq!(hooks.received().len(), 4);
}
