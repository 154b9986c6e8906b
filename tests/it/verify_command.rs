//! The `verify` command a receiver's developer runs: it accepts what the `standardwebhooks` crate
//! signs, refuses a tampered body, and takes its secret from a file or the environment.

use crate::support::*;
use std::path::Path;
use std::process::Command;

#[test]
fn verify_accepts_a_signature_made_by_the_standardwebhooks_crate_and_rejects_a_tampered_body() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    let body = br#"{"type":"leads.added","data":{"id":"x"}}"#;
    let ts = chrono::Utc::now().timestamp();
    let sig = wh.sign("msg_test", ts, body).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers.txt");
    std::fs::write(
        &headers,
        format!("webhook-id: msg_test\nwebhook-timestamp: {ts}\nwebhook-signature: {sig}\ncontent-type: application/json\n"),
    )
    .unwrap();
    let body_file = dir.path().join("body.json");
    std::fs::write(&body_file, body).unwrap();
    let run = |body_path: &Path| {
        Command::new(BIN)
            .args([
                "verify",
                "--secret",
                secret,
                "--headers-file",
                headers.to_str().unwrap(),
                "--body-file",
                body_path.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let ok = run(&body_file);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("valid"));
    let tampered = dir.path().join("tampered.json");
    std::fs::write(&tampered, br#"{"type":"leads.added","data":{"id":"y"}}"#).unwrap();
    let bad = run(&tampered);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("INVALID"));
}

/// A signed message for `verify`: (headers file, body file) in `dir`, signed with `secret` by the
/// `standardwebhooks` crate.
fn signed_message(dir: &Path, secret: &str) -> (String, String) {
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    let body = br#"{"type":"leads.added","data":{"id":"x"}}"#;
    let ts = chrono::Utc::now().timestamp();
    let sig = wh.sign("msg_file", ts, body).unwrap();
    let headers = dir.join("headers.txt");
    std::fs::write(
        &headers,
        format!("webhook-id: msg_file\nwebhook-timestamp: {ts}\nwebhook-signature: {sig}\n"),
    )
    .unwrap();
    let body_file = dir.join("body.json");
    std::fs::write(&body_file, body).unwrap();
    (
        headers.display().to_string(),
        body_file.display().to_string(),
    )
}

#[test]
fn verify_takes_the_secret_from_a_file_or_the_environment_and_warns_about_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (headers, body) = signed_message(dir.path(), FRESH_SECRET);
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{FRESH_SECRET}\n")).unwrap();
    let verify = |extra: &[&str], env: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["verify", "--headers-file", &headers, "--body-file", &body])
            .args(extra)
            .env_remove("CLINICEA_WEBHOOK_SECRET")
            .env_remove("WEBHOOK_SECRET");
        if let Some(v) = env {
            cmd.env("CLINICEA_WEBHOOK_SECRET", v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stdout, stderr) = verify(&["--secret-file", secret_file.to_str().unwrap()], None);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("valid"), "{stdout}");
    assert!(!stderr.contains("warning"), "{stderr}");

    let (code, stdout, stderr) = verify(&[], Some(FRESH_SECRET));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("valid"), "{stdout}");
    assert!(!stderr.contains("warning"), "{stderr}");

    // The file wins over the environment; a wrong secret there is a failed verification.
    let other = dir.path().join("other");
    std::fs::write(&other, "whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldA==").unwrap();
    let (code, stdout, _) = verify(
        &["--secret-file", other.to_str().unwrap()],
        Some(FRESH_SECRET),
    );
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("INVALID"), "{stdout}");

    // The flag still works, with a warning that it shows in the process list.
    let (code, stdout, stderr) = verify(&["--secret", FRESH_SECRET], None);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stderr.contains("warning: --secret"), "{stderr}");
    assert!(stderr.contains("--secret-file"), "{stderr}");

    // No secret at all, and an unreadable file: clear errors that name what to give.
    let (code, _, stderr) = verify(&[], None);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("--secret-file") && stderr.contains("CLINICEA_WEBHOOK_SECRET"),
        "{stderr}"
    );
    let missing = dir.path().join("missing");
    let (code, _, stderr) = verify(&["--secret-file", missing.to_str().unwrap()], None);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("cannot read the secret file"), "{stderr}");
    // A malformed secret in a file is reported without being echoed.
    std::fs::write(&other, "not-a-secret-value-xyz").unwrap();
    let (code, _, stderr) = verify(&["--secret-file", other.to_str().unwrap()], None);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("whsec_"), "{stderr}");
    assert!(!stderr.contains("not-a-secret-value-xyz"), "{stderr}");
}
