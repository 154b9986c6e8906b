//! The command line as a user meets it: `check` and `test-rule`, run as the real binary.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_clinicea-notifier");

/// A webhook secret nobody published (the specification's example is refused for remote receivers).
const FRESH_SECRET: &str = "whsec_8vJ7wPz1m3Qx5tKcR0yNaBdEfGhIjKlM";

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
        .env("AUTOMATION_WEBHOOK_SECRET", FRESH_SECRET)
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

#[test]
fn sandbox_refuses_a_non_loopback_listen_address_unless_allowed() {
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
    use std::io::BufRead;
    let mut child = Command::new(BIN)
        .args(["sandbox", "--listen", "0.0.0.0:0", "--allow-remote"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let port: u16 = first
        .trim()
        .strip_prefix("Clinicea sandbox on http://0.0.0.0:")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    let stream = std::net::TcpStream::connect(("127.0.0.1", port));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(stream.is_ok(), "the sandbox did not listen: {stream:?}");
}

/// Runs `check` on `config` with exactly `env` as the variables it reads (plus PATH).
fn check_with(config: &Path, env: &[(String, String)]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["check", "--config", config.to_str().unwrap()])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn deploy_file(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn yaml(text: &str) -> serde_json::Value {
    serde_saphyr::from_str(text).unwrap()
}

#[test]
fn check_refuses_the_example_kubernetes_secret_until_its_values_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let configmap = yaml(&deploy_file("k8s/configmap.yaml"));
    let config = dir.path().join("clinicea-notifier.yaml");
    std::fs::write(
        &config,
        configmap["data"]["clinicea-notifier.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let secret = yaml(&deploy_file("k8s/example-secret/secret.yaml"));
    let env: Vec<(String, String)> = secret["stringData"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let (code, out) = check_with(&config, &env);
    assert_eq!(code, Some(1), "{out}");
    for key in [
        "clinicea.api_key",
        "smtp.password",
        "destinations.automations.secret[0]",
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains(key) && l.contains("placeholder")),
            "{key} is not refused as a placeholder:\n{out}"
        );
    }
    // Filled in, the same config passes: the placeholders were the only problem.
    let filled: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| {
            let v = match k.as_str() {
                "AUTOMATION_WEBHOOK_SECRET" => FRESH_SECRET.to_string(),
                _ if v.starts_with("REPLACE_ME") => format!("real-{k}-value-1234"),
                _ => v.clone(),
            };
            (k.clone(), v)
        })
        .collect();
    let (code, out) = check_with(&config, &filled);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn check_refuses_the_compose_files_webhook_secret_and_the_published_example_secret() {
    let compose = yaml(&deploy_file("docker-compose.yml"));
    let environment = compose["services"]["notifier"]["environment"]
        .as_object()
        .unwrap();
    // What compose passes with nothing set: `${VAR:-default}` gives the default.
    let env: Vec<(String, String)> = environment
        .iter()
        .map(|(k, v)| {
            let v = v.as_str().unwrap();
            let v = match v.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
                Some(inner) => inner.split_once(":-").map_or("", |(_, d)| d),
                None => v,
            };
            (k.clone(), v.to_string())
        })
        .collect();
    assert!(env.iter().any(|(k, _)| k == "WEBHOOK_SECRET"), "{env:?}");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/compose-config.yaml");
    let secret_key = "destinations.automations.secret[0]";
    let (code, out) = check_with(&config, &env);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(secret_key) && l.contains("placeholder")),
        "{out}"
    );

    // The specification's example secret, which the compose file once carried, is public: refused
    // for a receiver on another host ...
    let with = |secret: &str| -> Vec<(String, String)> {
        env.iter()
            .map(|(k, v)| match k.as_str() {
                "WEBHOOK_SECRET" => (k.clone(), secret.to_string()),
                _ => (k.clone(), v.clone()),
            })
            .collect()
    };
    let (code, out) = check_with(&config, &with("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(secret_key) && l.contains("published example secret")),
        "{out}"
    );
    assert!(!out.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "{out}");
    // ... and a fresh one is not refused.
    let (_, out) = check_with(&config, &with(FRESH_SECRET));
    assert!(!out.contains(secret_key), "{out}");
}
