//! Scripts read `--output json` (`-o json`): `status`, `check`, `dead list` and `dead show` each
//! print one JSON document of a documented shape, parsed here with serde_json; `dead show` and
//! `dead retry` take a `webhook-id` as well as a number.

use crate::support::*;
use serde_json::Value;
use std::time::Duration;

/// Parses a command's stdout as the one JSON document it must be.
fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{}", output_text(out)))
}

/// Keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

#[tokio::test]
async fn dead_letters_are_listed_shown_and_retried_by_webhook_id_in_json() {
    let sb = empty_sandbox().await;
    // Both receivers refuse the first delivery (a 400: dead at once) and take the next.
    let a = Receiver::with(Responder::script([Reply::status(400).body("bad hook a")])).await;
    let b = Receiver::with(Responder::script([Reply::status(400).body("bad hook b")])).await;
    let config = leads_only(&sb.base_url())
        .webhook("hook-a", &a.url, |w| w.timeout("5s"))
        .webhook("hook-b", &b.url, |w| w.timeout("5s"))
        .rule(
            Rule::new("r", &["hook-a", "hook-b"])
                .resource("leads")
                .on(&["added"]),
        );
    let t = TestDir::new(&config.to_yaml());
    let record_id = {
        let engine = t.engine().await;
        let lead = sb.sandbox.insert("leads", test_lead());
        let id = lead["ID"]
            .as_str()
            .expect("the sandbox gives it an ID")
            .to_string();
        poll_report(&engine).await.unwrap();
        drain_outbox(&engine, Duration::from_secs(15)).await;
        assert_eq!(
            engine.store.dead_len().await.unwrap(),
            2,
            "one dead letter per destination"
        );
        id
    };

    let list = cli(&t, &["dead", "list", "--output", "json"]).await;
    assert!(list.status.success(), "{}", output_text(&list));
    let list = json_of(&list);
    assert_eq!(keys(&list), ["dead_letters"]);
    let letters = list["dead_letters"].as_array().expect("an array");
    assert_eq!(letters.len(), 2, "{list:#}");
    for d in letters {
        assert_eq!(
            keys(d),
            [
                "attempts",
                "clinic",
                "created_at",
                "destination",
                "died_at",
                "event_type",
                "id",
                "reason",
                "record_id",
                "resource",
                "rule",
                "webhook_id"
            ],
            "{d:#}"
        );
        assert_eq!(d["clinic"], "default");
        assert_eq!(d["resource"], "leads");
        assert_eq!(d["record_id"], record_id.as_str());
        assert_eq!(d["event_type"], "leads.added");
        assert_eq!(d["attempts"], 1);
        assert!(d["id"].is_u64(), "{d}");
        assert!(d["reason"].as_str().unwrap().contains("400"), "{d}");
        let died = d["died_at"].as_str().expect("died_at is a string");
        assert!(chrono::DateTime::parse_from_rfc3339(died).is_ok(), "{died}");
        // No record contents in the list.
        assert!(!d.to_string().contains("Ayesha"), "{d}");
    }
    let webhook_id = letters[0]["webhook_id"].as_str().unwrap().to_string();
    assert!(webhook_id.starts_with("msg_"), "{webhook_id}");
    assert_eq!(
        letters[1]["webhook_id"], webhook_id,
        "one change, one webhook-id"
    );
    let mut dests: Vec<&str> = letters
        .iter()
        .map(|d| d["destination"].as_str().unwrap())
        .collect();
    dests.sort_unstable();
    assert_eq!(dests, ["hook-a", "hook-b"]);

    // The text list names the webhook-id, clinic, resource and record id too.
    let text = cli(&t, &["dead", "list"]).await;
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    for part in [webhook_id.as_str(), "default", "leads", record_id.as_str()] {
        assert!(text.contains(part), "{part} missing:\n{text}");
    }

    // `dead show` by webhook-id: both letters, each with its attempt log.
    let show = cli(&t, &["-o", "json", "dead", "show", &webhook_id]).await;
    assert!(show.status.success(), "{}", output_text(&show));
    let show = json_of(&show);
    let shown = show["dead_letters"].as_array().expect("an array");
    assert_eq!(shown.len(), 2, "{show:#}");
    for d in shown {
        assert_eq!(d["webhook_id"], webhook_id.as_str());
        let log = d["attempt_log"].as_array().expect("attempt_log");
        assert_eq!(log.len(), 1, "{d:#}");
        assert_eq!(
            keys(&log[0]),
            [
                "at",
                "attempt",
                "duration_ms",
                "reason",
                "response",
                "status",
                "verdict"
            ]
        );
        assert_eq!(log[0]["attempt"], 1);
        assert_eq!(log[0]["status"], 400);
        assert_eq!(log[0]["verdict"], "fail");
        assert!(log[0]["response"].as_str().unwrap().starts_with("bad hook"));
    }
    // By number: that one letter alone.
    let seq = shown[0]["id"].as_u64().unwrap();
    let one = json_of(&cli(&t, &["dead", "show", &seq.to_string(), "-o", "json"]).await);
    assert_eq!(one["dead_letters"].as_array().unwrap().len(), 1);
    assert_eq!(one["dead_letters"][0]["id"], seq);
    // A webhook-id with no letter is an error, not an empty answer.
    let none = cli(
        &t,
        &["dead", "show", "msg_00000000000000000000000000000000"],
    )
    .await;
    assert_eq!(none.status.code(), Some(1), "{}", output_text(&none));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no dead letter msg_0000"));

    // `dead retry` by webhook-id puts both back; the next drain delivers both.
    let retry = cli(&t, &["dead", "retry", &webhook_id]).await;
    assert!(retry.status.success(), "{}", output_text(&retry));
    assert_eq!(
        String::from_utf8_lossy(&retry.stdout)
            .matches("queued again")
            .count(),
        2,
        "{}",
        output_text(&retry)
    );
    {
        let engine = t.engine().await;
        drain_outbox(&engine, Duration::from_secs(15)).await;
        assert_eq!(engine.store.dead_len().await.unwrap(), 0);
    }
    for rx in [&a, &b] {
        let got = rx.received();
        assert_eq!(got.len(), 2, "the refused attempt and the retried one");
        assert_eq!(got[1].header("webhook-id"), webhook_id);
    }
    let empty = json_of(&cli(&t, &["dead", "list", "-o", "json"]).await);
    assert_eq!(empty["dead_letters"], serde_json::json!([]));
}

#[tokio::test]
async fn status_prints_clinics_resources_and_destinations_as_json() {
    let sb = sandbox_with_leads(3).await;
    let rx = Receiver::with(Responder::script([Reply::status(400)])).await;
    let t = TestDir::new(&new_leads_to_hooks(&sb.base_url(), &rx.url).to_yaml());
    {
        let engine = t.engine().await;
        poll_report(&engine).await.unwrap();
        drain_outbox(&engine, Duration::from_secs(15)).await;
    }
    let out = cli(&t, &["status", "--output", "json"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    let s = json_of(&out);
    assert_eq!(
        keys(&s),
        ["clinics", "destinations", "journal_changes", "store"]
    );
    assert!(
        s["store"].as_str().unwrap().ends_with("data"),
        "the sled directory: {s:#}"
    );
    let clinics = s["clinics"].as_array().unwrap();
    assert_eq!(clinics.len(), 1);
    assert_eq!(clinics[0]["name"], "default");
    assert_eq!(
        clinics[0]["polled_by"],
        serde_json::Value::Null,
        "sled: no leases"
    );
    let leads = &clinics[0]["resources"][0];
    assert_eq!(
        keys(leads),
        [
            "baseline",
            "last_poll",
            "last_success",
            "name",
            "next_since",
            "records_known",
            "seconds_since_success",
            "stale"
        ]
    );
    assert_eq!(leads["name"], "leads");
    assert_eq!(leads["records_known"], 3);
    assert_eq!(leads["stale"], false);
    let poll = &leads["last_poll"];
    assert_eq!(poll["ok"], true, "{poll}");
    assert_eq!(poll["error"], Value::Null);
    assert_eq!(poll["records"], 3);
    assert_eq!(poll["changes"], 3);
    assert!(chrono::DateTime::parse_from_rfc3339(poll["finished_at"].as_str().unwrap()).is_ok());
    let dests = s["destinations"].as_array().unwrap();
    assert_eq!(dests.len(), 1);
    let hooks = &dests[0];
    assert_eq!(
        keys(hooks),
        ["dead", "digest", "failing", "held", "kind", "name", "queued", "retrying"]
    );
    assert_eq!(hooks["name"], "hooks");
    assert_eq!(hooks["kind"], "webhook");
    assert_eq!(hooks["dead"], 1, "{hooks}");
    assert_eq!(
        hooks["queued"].as_u64().unwrap() + hooks["retrying"].as_u64().unwrap(),
        0
    );
    assert_eq!(s["journal_changes"], 3);
}

#[test]
fn check_prints_its_summary_or_every_problem_as_json() {
    let ok = example_env(std::process::Command::new(BIN).args([
        "check",
        "-o",
        "json",
        "--config",
        &example_config(),
    ]))
    .output()
    .unwrap();
    assert!(ok.status.success(), "{}", output_text(&ok));
    let r = json_of(&ok);
    assert_eq!(keys(&r), ["config", "ok", "problems", "summary"]);
    assert_eq!(r["ok"], true);
    assert_eq!(r["problems"], serde_json::json!([]));
    let summary = &r["summary"];
    assert_eq!(
        keys(summary),
        [
            "clinics",
            "destinations",
            "listen",
            "resources",
            "rules",
            "store"
        ]
    );
    assert_eq!(summary["clinics"][0]["auth"], "header");
    assert_eq!(summary["clinics"][0]["name"], "default");
    let rules: Vec<&str> = summary["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        rules.iter().any(|r| r.contains("new-lead-email")),
        "{rules:?}"
    );
    let text = r.to_string();
    assert!(!text.contains("test-key"), "no secret in the summary");
    assert!(
        !text.contains("services/T0/B0/X"),
        "chat URLs are secrets too"
    );

    // A broken config: exit 1, still one JSON document on stdout, each problem with its line.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(example_config())
        .unwrap()
        .replace("poll_interval: 60s", "poll_interval: sixty")
        .replace(
            "notify: [front-desk, sales-chat]",
            "notify: [front-desk, nowhere]",
        );
    std::fs::write(&bad, &text).unwrap();
    let out = example_env(std::process::Command::new(BIN).args([
        "check",
        "--output",
        "json",
        "--config",
        bad.to_str().unwrap(),
    ]))
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let r = json_of(&out);
    assert_eq!(r["ok"], false);
    assert_eq!(r["summary"], Value::Null);
    let problems = r["problems"].as_array().unwrap();
    assert!(problems.len() >= 2, "{r:#}");
    for p in problems {
        assert_eq!(keys(p), ["key", "line", "message"]);
    }
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() as u64 + 1;
    assert!(
        problems
            .iter()
            .any(|p| p["line"] == line_of("poll_interval: sixty")
                && p["key"].as_str().unwrap().contains("poll_interval")),
        "{r:#}"
    );
    assert!(
        problems.iter().any(|p| p["line"] == line_of("nowhere")
            && p["message"].as_str().unwrap().contains("nowhere")),
        "{r:#}"
    );
}

#[test]
fn json_output_is_refused_where_a_command_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["--output", "json", "once", "--config"])
        .arg(dir.path().join("missing.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--output json is for status, check, dead list and dead show"),
        "{}",
        output_text(&out)
    );
}
