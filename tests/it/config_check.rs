//! `check` and the config loader on configs a user gets wrong: empty or binary files, a YAML
//! bomb, durations too long to mean anything, a missing variable, a typo'd key, unknown names in
//! rules, and the shipped deployment examples whose placeholder secrets must be replaced. Each
//! fails fast, names the file, line and key, and never panics. These configs are broken on
//! purpose, so their text is written out literally.

use crate::support::*;
use clinicea_notifier::config;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn load_err(text: &str) -> String {
    match config::load_str(
        text,
        std::path::Path::new("/tmp/x/clinicea-notifier.yaml"),
        &HashMap::new(),
    ) {
        Ok(_) => panic!("expected an error for {text:?}"),
        Err(e) => e.to_string(),
    }
}

/// [`check`], which must not panic.
fn check_cli(file: &Path) -> (bool, String) {
    let (ok, text) = check(file);
    assert!(!text.contains("panicked"), "{text}");
    (ok, text)
}

#[test]
fn an_empty_config_says_it_is_empty() {
    for text in ["", "   \n\n", "# only a comment\n"] {
        let e = load_err(text);
        assert!(
            e.contains("empty") || e.contains("clinicea"),
            "{text:?}: {e}"
        );
    }
    let t = TestDir::new("");
    let (ok, text) = check_cli(&t.config);
    assert!(!ok);
    assert!(text.contains("the file is empty"), "{text}");
}

#[test]
fn a_binary_config_says_it_is_not_utf8() {
    let t = TestDir::new("");
    std::fs::write(&t.config, b"clinicea:\n  base_url: \xff\xfe\x00\x01binary").unwrap();
    let (ok, text) = check_cli(&t.config);
    assert!(!ok);
    assert!(
        text.contains("not UTF-8") && text.contains("invalid byte at offset"),
        "{text}"
    );
    let err = config::load(&t.config, &HashMap::new())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not UTF-8"), "{err}");
}

/// Billion laughs: 9 levels of 9 aliases each would expand to 9^9 strings.
#[test]
fn a_yaml_bomb_fails_fast_with_a_clear_error() {
    let mut bomb = String::from(
        "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..=9 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"
        ));
    }
    // Where the config really reads it: a rule's conditions are raw YAML nodes of any shape, so
    // every alias would be expanded into them.
    let mut in_rules = String::from(
        "clinicea:\n  base_url: http://127.0.0.1:1\n  api_key: k\nresources:\n  leads: { path: /api/v1/leads }\nrules:\n  - name: r\n    where:\n",
    );
    for line in bomb.lines() {
        let (_, value) = line.split_once(": ").unwrap();
        in_rules.push_str(&format!("      - {value}\n"));
    }
    in_rules.push_str("    notify: [x]\n");
    for text in [bomb.clone(), in_rules.clone()] {
        let start = Instant::now();
        let e = load_err(&text);
        let took = start.elapsed();
        println!("YAML bomb: {took:?}: {e}");
        assert!(took < Duration::from_secs(15), "fails fast, took {took:?}");
        assert!(e.len() < 2000, "a short message");
        assert!(!e.contains("lol"), "the expansion is not echoed");
        assert!(
            e.contains("unknown field `a0`")
                || e.contains("too large once its anchors and aliases"),
            "{e}"
        );
    }
    // The CLI under a 1 GiB address-space limit: the budget stops it long before memory does.
    let t = TestDir::new(&in_rules);
    let start = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 1048576; exec {BIN} check --config {}",
            t.config.display()
        ))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    println!(
        "check on the bomb: {:?} {:?}: {text}",
        start.elapsed(),
        out.status
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "an ordinary error exit, not a crash: {text}"
    );
    assert!(
        !text.contains("panicked") && !text.contains("memory allocation"),
        "{text}"
    );
}

const SMALL_CONFIG: &str = "clinicea:\n  base_url: http://127.0.0.1:1\n  api_key: k\nresources:\n  leads: { path: /api/v1/leads }\n";

#[test]
fn a_huge_duration_is_refused_by_check_naming_the_file_line_and_key() {
    let cases = [
        (
            SMALL_CONFIG.replace(
                "  api_key: k\n",
                "  api_key: k\n  poll_interval: 99999999999999999999d\n",
            ),
            "clinicea-notifier.yaml:4: clinicea.poll_interval",
            "too long",
        ),
        (
            format!("{SMALL_CONFIG}store:\n  dead_letter_retention: 150000000000d\n"),
            "clinicea-notifier.yaml:7: store.dead_letter_retention",
            "too long",
        ),
        (
            format!("{SMALL_CONFIG}retry:\n  schedule: [5s, 99999999999999999999999999999999d]\n"),
            "clinicea-notifier.yaml:7: retry.schedule",
            "too long",
        ),
        // Below the ten-year bound, but over the key's own.
        (
            SMALL_CONFIG.replace("  api_key: k\n", "  api_key: k\n  timeout: 2h\n"),
            "clinicea.timeout: must be at most 1h",
            "",
        ),
        (
            SMALL_CONFIG.replace("  api_key: k\n", "  api_key: k\n  poll_interval: 2d\n"),
            "clinicea.poll_interval: must be at most 1d",
            "",
        ),
    ];
    for (yaml, key, message) in cases {
        let t = TestDir::new(&yaml);
        let (ok, text) = check_cli(&t.config);
        assert!(!ok, "{yaml}\n{text}");
        assert!(
            text.contains(key) && text.contains(message),
            "{key}:\n{text}"
        );
    }
}

#[test]
fn check_passes_on_the_example_with_its_variables_set() {
    let out = example_env(Command::new(BIN).args(["check", "--config", &example_config()]))
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
        .args(["check", "--config", &example_config()])
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
    let text = std::fs::read_to_string(example_config()).unwrap().replace(
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
    let text = std::fs::read_to_string(example_config())
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

/// The variables `rules.example.yaml` reads, each with the key it is read at, in file order.
const EXAMPLE_VARS: &[(&str, &str)] = &[
    ("CLINICEA_BASE_URL", "clinicea.base_url"),
    ("CLINICEA_API_KEY", "clinicea.api_key"),
    ("SMTP_HOST", "smtp.host"),
    ("SMTP_PASSWORD", "smtp.password"),
    ("AUTOMATION_WEBHOOK_URL", "destinations.automations.url"),
    (
        "AUTOMATION_WEBHOOK_SECRET",
        "destinations.automations.secret[0]",
    ),
    ("SLACK_WEBHOOK_URL", "destinations.sales-chat.url"),
    ("SLACK_WEBHOOK_URL", "destinations.team-chat.url"),
];

/// The example copied, as a newcomer would, into a folder of its own (nothing else in it).
fn copied_example() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(example_config()).unwrap();
    let path = dir.path().join("clinicea-notifier.yaml");
    std::fs::write(&path, &text).unwrap();
    (dir, path, text)
}

#[test]
fn a_copied_example_names_every_unset_variable_in_one_run_each_at_its_line_and_key() {
    let (_dir, path, text) = copied_example();
    let (code, out) = check_with(&path, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("has {} problems:", EXAMPLE_VARS.len())),
        "only the unset variables, nothing echoing them:\n{out}"
    );
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with('#'));
    for (var, key) in EXAMPLE_VARS {
        let (n, _) = lines
            .find(|(_, l)| l.contains(&format!("${{{var}}}")))
            .unwrap_or_else(|| panic!("{var} is not in the example"));
        let want = format!(
            "clinicea-notifier.yaml:{}: {key}: environment variable {var} is not set",
            n + 1
        );
        assert!(out.contains(&want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn unset_variables_and_the_configs_other_problems_come_in_the_same_run() {
    let (_dir, path, text) = copied_example();
    std::fs::write(
        &path,
        text.replace("poll_interval: 60s", "poll_interval: sixty"),
    )
    .unwrap();
    let env: Vec<(String, String)> = vec![("CLINICEA_API_KEY".into(), "test-key".into())];
    let (code, out) = check_with(&path, &env);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("clinicea.poll_interval"), "{out}");
    assert!(out.contains("CLINICEA_BASE_URL is not set"), "{out}");
    assert!(out.contains("SMTP_HOST is not set"), "{out}");
    assert!(!out.contains("CLINICEA_API_KEY is not set"), "{out}");
}

#[test]
fn the_example_checks_cleanly_wherever_it_is_copied() {
    let (_dir, path, _) = copied_example();
    let out = example_env(Command::new(BIN).args(["check", "--config", path.to_str().unwrap()]))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": OK"));
}

#[test]
fn a_missing_templates_folder_says_how_to_get_the_shipped_templates() {
    let (dir, path, text) = copied_example();
    let text = text.replace("# templates: ./templates ", "templates: ./templates ");
    let line = text
        .lines()
        .position(|l| l.starts_with("templates: ./templates"))
        .expect("the example names a templates folder, commented out")
        + 1;
    std::fs::write(&path, &text).unwrap();
    let out = example_env(Command::new(BIN).args(["check", "--config", path.to_str().unwrap()]))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has 1 problem:"), "{stderr}");
    assert!(
        stderr.contains(&format!("clinicea-notifier.yaml:{line}: templates: ")),
        "{stderr}"
    );
    assert!(
        stderr.contains("does not exist") && stderr.contains("Remove `templates:`"),
        "{stderr}"
    );
    // The command it names writes the shipped templates there, and then check passes.
    let folder = dir.path().join("templates");
    let hint = format!("clinicea-notifier templates {}", folder.display());
    assert!(stderr.contains(&hint), "{hint:?} not in:\n{stderr}");
    let wrote = Command::new(BIN)
        .args(["templates", folder.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(wrote.status.success(), "{}", output_text(&wrote));
    assert!(folder.join("new-lead.txt.hbs").is_file());
    let out = example_env(Command::new(BIN).args(["check", "--config", path.to_str().unwrap()]))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
}
