//! The command line as a user meets it: `check` and `test-rule`, run as the real binary.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_clinicea-notifier");

/// The variables rules.example.yaml reads.
fn example_env(cmd: &mut Command) -> &mut Command {
    cmd.env("CLINICEA_BASE_URL", "https://api.clinicea.com")
        .env("CLINICEA_API_KEY", "test-key")
        .env("SMTP_HOST", "smtp.example.com")
        .env("SMTP_PASSWORD", "p")
        .env(
            "AUTOMATION_WEBHOOK_URL",
            "https://automation.example.com/hooks/clinicea",
        )
        .env(
            "AUTOMATION_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .env(
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/X",
        )
}

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("rules.example.yaml")
        .display()
        .to_string()
}

#[test]
fn check_passes_on_the_example_with_its_variables_set() {
    let out = example_env(Command::new(BIN).args(["check", "--config", &example()]))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("new-lead-email"), "{stdout}");
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(!stdout.contains("test-key"), "no secret in the summary");
    assert!(
        !stdout.contains("services/T0/B0/X"),
        "chat URLs are secrets too"
    );
}

#[test]
fn check_names_the_missing_variable() {
    let out = Command::new(BIN)
        .args(["check", "--config", &example()])
        .env_remove("CLINICEA_BASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CLINICEA_BASE_URL"), "{stderr}");
    assert!(stderr.contains("rules.example.yaml:"), "{stderr}");
}

#[test]
fn a_typo_in_a_key_names_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(example()).unwrap().replace(
        "    on: [added]                            # added",
        "    onn: [added]  # added",
    );
    let bad = dir.path().join("typo.yaml");
    std::fs::write(&bad, &text).unwrap();
    let line = text.lines().position(|l| l.contains("onn:")).unwrap() + 1;
    let out = example_env(Command::new(BIN).args(["check", "--config", bad.to_str().unwrap()]))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("typo.yaml:{line}: rules[0].onn")),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `onn`"), "{stderr}");
}

#[test]
fn semantic_errors_name_the_rule_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(example())
        .unwrap()
        .replace(
            "notify: [front-desk, sales-chat]",
            "notify: [front-desk, sales-chatt]",
        )
        .replace(
            "in: [Website, Facebook, Instagram]",
            "matches: \"(unclosed\"",
        );
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, &text).unwrap();
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    let out = example_env(Command::new(BIN).args(["check", "--config", bad.to_str().unwrap()]))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let notify_line = text
        .lines()
        .position(|l| l.contains("sales-chatt"))
        .unwrap()
        + 1;
    let regex_line = text.lines().position(|l| l.contains("(unclosed")).unwrap() + 1;
    assert!(stderr.contains("2 problems"), "{stderr}");
    assert!(
        stderr.contains(&format!("bad.yaml:{notify_line}:")) && stderr.contains("sales-chatt"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("bad.yaml:{regex_line}:")) && stderr.contains("new-lead-email"),
        "{stderr}"
    );
}

/// Runs `test-rule` on a lead record file with the example config; it must succeed.
fn test_rule_on(record: &Path) -> String {
    let out = example_env(Command::new(BIN).args([
        "test-rule",
        "--config",
        &example(),
        "--resource",
        "leads",
        "--record",
        record.to_str().unwrap(),
    ]))
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn test_rule_on_a_fixture_lead_shows_matches_failures_and_rendered_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    // A Website lead with an email: it matches new-lead-email and everything-to-automations.
    let lead = serde_json::json!({
        "ID": "16a6fc9c-4b99-7980-2f96-afd9f2235b9f", "FirstName": "Farhan", "LastName": "Butt",
        "Mobile": "+923009823391", "Email": "farhan.butt0@example.com", "LeadStatus": "HOT",
        "Source": "Website", "Notes": "Follow-up needed", "CreatedDatetime": "2026-11-27T09:00:00",
        "ModifiedDatetime": "2026-11-28T09:00:00", "DataStatusStr": "Added"
    });
    let f = dir.path().join("lead.json");
    std::fs::write(&f, lead.to_string()).unwrap();
    let stdout = test_rule_on(&f);
    assert!(stdout.contains("MATCH    new-lead-email"), "{stdout}");
    assert!(
        stdout.contains("MATCH    everything-to-automations"),
        "{stdout}"
    );
    assert!(
        stdout.contains("no match appointment-cancelled"),
        "{stdout}"
    );
    assert!(stdout.contains("To: frontdesk@example.com"), "{stdout}");
    assert!(
        stdout.contains("Subject: New lead: Farhan Butt"),
        "{stdout}"
    );
    assert!(stdout.contains("\"type\": \"leads.added\""), "{stdout}");

    // The fixture's first lead (Source: Referral) fails the `in` condition, and says so.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/leads-v1-page0.json");
    let stdout = test_rule_on(&fixture);
    assert!(
        stdout.contains("no match new-lead-email: where[1]"),
        "{stdout}"
    );
    assert!(stdout.contains("Referral"), "{stdout}");
}

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
