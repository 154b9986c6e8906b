//! What must never leak from an API's error bodies (which echo the key, the login token or
//! patient data): no error text, no `once` or `status` output and no stored poll status holds
//! them; and `dead show` prints a receiver's escape sequences as text.
//!
//! The API cases run the real binary: only a real process shows what reaches its stdout and
//! stderr at the default level.

use crate::support::*;
use clinicea_notifier::kit::sandbox::{Fault, FaultKind, SandboxOptions};
use std::time::Duration;

/// What an operator sees after a failed poll: `once`'s stdout and stderr, `status`'s, and the
/// poll status stored for `leads`.
struct Seen {
    once: String,
    status: String,
    stored: String,
}

impl Seen {
    fn all(&self) -> String {
        format!("{}\n{}\n{}", self.once, self.status, self.stored)
    }
}

/// Runs `once` (which must fail its poll) and `status` at the default level, and reads the
/// stored poll status; checks that none of it contains any of `leaks`, and that the error still
/// names the resource and the status.
async fn once_then_status(t: &TestDir, status: u16, leaks: &[&str]) -> Seen {
    let once = cli(t, &["once"]).await;
    assert!(!once.status.success(), "the poll must fail");
    let status_out = cli(t, &["status"]).await;
    assert!(status_out.status.success(), "{}", output_text(&status_out));
    let stored = open_store(t)
        .poll_status("default", "leads")
        .await
        .unwrap()
        .last_error
        .expect("the failure is stored");
    let seen = Seen {
        once: output_text(&once),
        status: output_text(&status_out),
        stored,
    };
    for leak in leaks {
        assert!(
            !seen.all().contains(leak),
            "{leak:?} leaked:\n{}",
            seen.all()
        );
    }
    // Still useful: the resource, the status and the body's length.
    for text in [&seen.once, &seen.status, &seen.stored] {
        assert!(
            text.contains("leads") && text.contains(&format!("HTTP {status}")),
            "{text}"
        );
        assert!(text.contains("-byte body is not shown"), "{text}");
    }
    seen
}

#[tokio::test]
async fn an_api_key_echoed_after_180_characters_of_a_401_leaks_nowhere() {
    const KEY: &str = "ak_LEAKCHECK_5f1c2e9a7b";
    let sb = sandbox(SandboxOptions {
        api_key: KEY.into(),
        ..SandboxOptions::default()
    })
    .await;
    // The key straddles the 200th character: cutting the excerpt there before scrubbing it would
    // leave half the key unscrubbed.
    sb.sandbox.inject_faults(
        Fault::new(FaultKind::Status {
            status: 401,
            retry_after: None,
            body: format!("{}{KEY} is not a valid key", "x".repeat(180)),
        })
        .times(3),
    );
    let t = TestDir::new(&Config::new(Clinicea::sandbox(&sb.base_url()).api_key(KEY)).to_yaml());
    let seen = once_then_status(&t, 401, &[KEY, &KEY[..10], &KEY[KEY.len() - 10..]]).await;
    assert!(
        seen.once.contains("check clinicea.api_key"),
        "{}",
        seen.once
    );
    // At -v the excerpt is logged, scrubbed before it was cut.
    let verbose = cli(&t, &["-v", "once"]).await;
    let text = output_text(&verbose);
    assert!(text.contains("[redacted]"), "{text}");
    assert!(!text.contains(&KEY[..10]), "{text}");
}

#[tokio::test]
async fn a_percent_encoded_key_echoed_in_a_url_leaks_nowhere() {
    // A key with characters the query encoding changes: `+`, `/`, `=`.
    const KEY: &str = "ak+LEAKCHECK/q=5f1c2e9a7b";
    const ENCODED: &str = "ak%2BLEAKCHECK%2Fq%3D5f1c2e9a7b";
    let sb = sandbox(SandboxOptions {
        api_key: KEY.into(),
        ..SandboxOptions::default()
    })
    .await;
    sb.sandbox.inject_faults(Fault::new(FaultKind::Status {
        status: 400,
        retry_after: None,
        body: format!(
            "Bad request: GET /api/v1/leads?lastSyncTimestamp=x&intPageNo=0&api_key={ENCODED} \
             (normalized: api_key={}; form: {})",
            ENCODED.to_lowercase(),
            KEY.replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D")
        ),
    }));
    let config = Config::new(Clinicea::sandbox(&sb.base_url()).api_key(KEY).auth("query"));
    let t = TestDir::new(&config.to_yaml());
    once_then_status(
        &t,
        400,
        &[KEY, ENCODED, "LEAKCHECK", "leakcheck", "5f1c2e9a7b"],
    )
    .await;
}

#[tokio::test]
async fn a_login_token_password_and_user_echoed_by_the_api_leak_nowhere() {
    const TOKEN: &str = "tok_LEAKCHECK_0123456789abcdef";
    const USER: &str = "staff_LEAKCHECK_amina";
    const PASSWORD: &str = "pw_LEAKCHECK_hunter2";
    // A fake API: the login endpoint hands out TOKEN, every page request answers 401 and echoes
    // what it was sent.
    let app = axum::Router::new()
        .route(
            "/api/v2/login/getTokenByStaffUsernamePwd",
            axum::routing::get(|| async { format!("\"{TOKEN}\"") }),
        )
        .fallback(|| async {
            (
                axum::http::StatusCode::UNAUTHORIZED,
                format!("session {TOKEN} expired for user {USER} (pwd={PASSWORD})"),
            )
        });
    let addr = serve_on_loopback(app).await;
    let config = Config::new(
        Clinicea::sandbox(&format!("http://{addr}"))
            .api_key("ak_LEAKCHECK_login")
            .login(USER, PASSWORD),
    );
    let t = TestDir::new(&config.to_yaml());
    once_then_status(
        &t,
        401,
        &[
            TOKEN,
            "0123456789abcdef",
            USER,
            PASSWORD,
            "ak_LEAKCHECK_login",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_500_with_a_patients_name_and_diagnosis_leaks_nowhere() {
    let sb = default_sandbox().await;
    // Every try inside the poll gets it (Retry-After: 0 keeps the test fast), so the poll fails.
    sb.sandbox.inject_faults(
        Fault::new(FaultKind::Status {
            status: 500,
            retry_after: Some(0),
            body: "NullReferenceException while saving patient Zebulon Quixotefeather \
                   (DOB 1990-01-01): diagnosis chronic hepatitis B"
                .into(),
        })
        .times(10),
    );
    let t = TestDir::new(&leads_only(&sb.base_url()).to_yaml());
    once_then_status(
        &t,
        500,
        &["Zebulon", "Quixotefeather", "hepatitis", "1990-01-01"],
    )
    .await;
}

#[tokio::test]
async fn dead_show_prints_a_receivers_escape_sequences_as_text() {
    const HOSTILE: &str = "\x1b]0;pwned\x07\x1b[2J";
    let sb = empty_sandbox().await;
    let rx = Receiver::with(Responder::script([Reply::status(400).body(HOSTILE)])).await;
    let t = TestDir::new(&new_leads_to_hooks(&sb.base_url(), &rx.url).to_yaml());
    let seq = {
        let engine = t.engine().await;
        sb.sandbox.insert("leads", test_lead());
        poll_report(&engine).await.unwrap();
        drain_outbox(&engine, Duration::from_secs(15)).await;
        let dead = engine.store.dead_entries().await.unwrap();
        assert_eq!(dead.len(), 1, "the 400 is a dead letter");
        let log = attempt_logs(&engine, dead[0].0).await;
        assert_eq!(log[0].response, HOSTILE, "the response is kept as it came");
        dead[0].0
    };
    let show = cli(&t, &["dead", "show", &seq.to_string()]).await;
    let list = cli(&t, &["dead", "list"]).await;
    for out in [&show, &list] {
        assert!(out.status.success(), "{}", output_text(out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !stdout.contains(['\x1b', '\x07', '\u{9b}']),
            "a raw control character reached the terminal: {stdout:?}"
        );
    }
    let stdout = String::from_utf8_lossy(&show.stdout);
    assert!(
        stdout.contains(r"response: \u{1b}]0;pwned\u{7}\u{1b}[2J"),
        "{stdout}"
    );
}
