//! Issue 6: SIGTERM stops cleanly without losing queued work, SIGHUP reloads the config (and a
//! broken one is refused while the old one keeps running), and the `status` and `dead` commands
//! read a stopped store and refuse a store a running notifier holds.

use crate::helpers::*;
use clinicea_notifier::kit::sandbox::{Fault, FaultKind, SandboxOptions};
use clinicea_notifier::outbox::entry::OutboxEntry;
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn small(leads: usize) -> SandboxOptions {
    SandboxOptions {
        leads,
        ..SandboxOptions::default()
    }
}

fn rules_to(dests: &[&str]) -> String {
    format!(
        "rules:\n  - name: all-leads\n    resource: leads\n    notify: [{}]\n",
        dests.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_deliveries_exits_0_promptly_and_once_delivers_the_rest() {
    const LEADS: usize = 50;
    let sb = sandbox(small(LEADS)).await;
    let all = sandbox_lead_ids(&sb);
    let rx = FnReceiver::start(|_, _| Reply::status(200).delay(Duration::from_millis(300))).await;
    let rest = format!(
        "destinations:\n{}{}",
        webhook_destination("hook", &rx.url, "    timeout: 5s\n    concurrency: 2\n"),
        rules_to(&["hook"])
    );
    let t = TestDir::new(&daemon_config(&sb.base_url(), "", &rest));
    let mut d = Daemon::start(&t, "run").await;
    assert!(
        eventually(Duration::from_secs(30), || rx.count() >= 12).await,
        "deliveries never started:\n{}",
        d.stderr_text()
    );
    d.signal("TERM");
    let sent_at = Instant::now();
    let at_term = rx.count();
    let status = d.wait_exit(Duration::from_secs(15)).await;
    let took = sent_at.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?} after {took:?}:\n{}",
        d.stderr_text()
    );
    let log = d.stderr_text();
    assert!(log.contains("stopped cleanly"));
    // Each delivery's log line is about that delivery alone (no span leaking across awaits).
    let delivered_lines: Vec<&str> = log.lines().filter(|l| l.contains(" delivered")).collect();
    assert!(!delivered_lines.is_empty());
    for line in delivered_lines {
        assert_eq!(
            line.matches("webhook_id").count(),
            1,
            "one delivery, one webhook-id: {line}"
        );
        assert!(
            !line.contains("poll"),
            "a delivery is not part of a poll: {line}"
        );
    }
    let delivered_before = rx.ok_ids();
    assert!(
        delivered_before.len() < LEADS,
        "SIGTERM came after the end; the test proves nothing"
    );

    // Whatever was not delivered is still queued: none fell between the two.
    let store = open_store(&t);
    let queued: HashSet<String> = store
        .outbox_entries("hook")
        .unwrap()
        .into_iter()
        .map(|(_, entry): (u64, OutboxEntry)| entry.record_id)
        .collect();
    drop(store);
    let accounted: HashSet<String> = queued.union(&delivered_before).cloned().collect();
    assert_eq!(accounted, all, "every lead is delivered or queued");

    let out = cli(&t, &["once"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(rx.ok_ids(), all, "every lead arrived");
    let store = open_store(&t);
    assert_eq!(store.outbox_len(), 0);
    assert_eq!(store.dead_len(), 0);
    for a in rx.answered() {
        verify_with_library(&a.req).unwrap();
    }
    eprintln!(
        "sigterm test: {at_term} requests at SIGTERM, exit 0 after {took:?}, {} delivered before, {} queued, {} requests in all",
        delivered_before.len(),
        queued.len(),
        rx.count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_refuses_a_broken_config_then_applies_a_valid_one_without_losing_queued_entries() {
    let sb = sandbox(small(3)).await;
    let a = FnReceiver::start(|_, _| Reply::status(200)).await;
    // `b` is down until after the reload: its entries sit queued, retrying.
    let b = FnReceiver::start(|_, _| Reply::status(503)).await;
    let c = FnReceiver::start(|_, _| Reply::status(200)).await;
    let dests = |with_c: bool| {
        let mut y = String::from("destinations:\n");
        y.push_str(&webhook_destination("a", &a.url, "    timeout: 5s\n"));
        y.push_str(&webhook_destination(
            "b",
            &b.url,
            "    timeout: 5s\n    retry:\n      schedule: [1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s]\n      jitter: 0\n",
        ));
        if with_c {
            y.push_str(&webhook_destination("c", &c.url, "    timeout: 5s\n"));
            y.push_str(&rules_to(&["a", "b", "c"]));
        } else {
            y.push_str(&rules_to(&["a", "b"]));
        }
        y
    };
    let t = TestDir::new(&daemon_config(&sb.base_url(), "", &dests(false)));
    let mut d = Daemon::start(&t, "run").await;
    let initial = sandbox_lead_ids(&sb);
    assert!(
        eventually(Duration::from_secs(30), || a.ok_ids() == initial
            && b.ok_ids().is_empty()
            && b.count() >= 3)
        .await,
        "first deliveries:\n{}",
        d.stderr_text()
    );

    // 1. A broken config (an unknown key) is refused; the old rules keep running.
    t.rewrite(&format!(
        "{}bogus_key: 1\n",
        daemon_config(&sb.base_url(), "", &dests(true))
    ));
    d.signal("HUP");
    assert!(
        d.wait_log("reload rejected", 1, Duration::from_secs(10))
            .await,
        "{}",
        d.stderr_text()
    );
    assert!(d.is_running(), "a broken config must not stop the notifier");
    let l4 = sb.sandbox.insert(
        "leads",
        serde_json::json!({"FirstName": "Four", "Email": "four@example.com"}),
    );
    let l4 = l4["ID"].as_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(15), || a.ok_ids().contains(&l4)).await,
        "the old rules still deliver after a refused reload:\n{}",
        d.stderr_text()
    );
    assert_eq!(c.count(), 0, "the refused config's destination is not used");

    // 2. A valid config adds destination c; queued entries for b survive the swap.
    assert!(
        b.ok_ids().is_empty(),
        "b is still failing: 4 entries queued"
    );
    t.rewrite(&daemon_config(&sb.base_url(), "", &dests(true)));
    d.signal("HUP");
    assert!(
        d.wait_log("config reloaded", 1, Duration::from_secs(20))
            .await,
        "{}",
        d.stderr_text()
    );
    b.set(|_, _| Reply::status(200));
    let l5 = sb.sandbox.insert(
        "leads",
        serde_json::json!({"FirstName": "Five", "Email": "five@example.com"}),
    );
    let l5 = l5["ID"].as_str().unwrap().to_string();
    let mut everything = initial.clone();
    everything.insert(l4.clone());
    everything.insert(l5.clone());
    let c_expect: HashSet<String> = [l5.clone()].into();
    assert!(
        eventually(Duration::from_secs(30), || a.ok_ids() == everything
            && b.ok_ids() == everything
            && c.ok_ids() == c_expect)
        .await,
        "a {:?}, b {:?}, c {:?} of {everything:?}:\n{}",
        a.ok_ids(),
        b.ok_ids(),
        c.ok_ids(),
        d.stderr_text()
    );
    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(20)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let store = open_store(&t);
    assert_eq!(store.outbox_len(), 0);
    assert_eq!(store.dead_len(), 0);
    for r in [&a, &b, &c] {
        for x in r.answered() {
            verify_with_library(&x.req).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_dead_list_read_a_stopped_store_and_refuse_a_running_ones() {
    let sb = sandbox(small(3)).await;
    let ok = FnReceiver::start(|_, _| Reply::status(200)).await;
    let flaky = FnReceiver::start(|_, _| Reply::status(503)).await;
    let bad = FnReceiver::start(|_, _| Reply::status(400)).await;
    let mut rest = String::from("retry:\n  schedule: [1h]\n  jitter: 0\ndestinations:\n");
    rest.push_str(&webhook_destination("ok", &ok.url, ""));
    rest.push_str(&webhook_destination("flaky", &flaky.url, ""));
    rest.push_str(&webhook_destination("bad", &bad.url, ""));
    rest.push_str(&rules_to(&["ok", "flaky", "bad"]));
    let t = TestDir::new(&daemon_config(&sb.base_url(), "", &rest));

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
        let engine = t.engine();
        engine.poll_all().await.remove(0).1.unwrap();
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
    let mut d = Daemon::start(&t, "run").await;
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
    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(20)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let out = cli(&t, &["status"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_api_says_retry_after_30s_still_stops_within_a_few_seconds() {
    let sb = sandbox(small(3)).await;
    let t = TestDir::new(&daemon_config(&sb.base_url(), "", ""));
    // The first page request gets 429 with Retry-After: 30, and so would the next ones.
    sb.sandbox.inject_faults(
        Fault::new(FaultKind::Status {
            status: 429,
            retry_after: Some(30),
            body: "slow down".into(),
        })
        .times(10)
        .on("leads"),
    );
    let mut d = Daemon::start(&t, "run").await;
    assert!(
        d.wait_log("API asked to retry", 1, Duration::from_secs(20))
            .await,
        "{}",
        d.stderr_text()
    );
    d.signal("TERM");
    let sent = Instant::now();
    let status = d.wait_exit(Duration::from_secs(30)).await;
    let took = sent.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}:\n{}",
        d.stderr_text()
    );
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM took {took:?}: a poll waiting on the API holds up shutdown\n{}",
        d.stderr_text()
    );
    assert!(
        !d.stderr_text().contains("did not stop"),
        "{}",
        d.stderr_text()
    );
    // The interrupted poll kept its checkpoint: the next `once` reads all 3 leads.
    sb.sandbox.clear_faults();
    let out = cli(&t, &["once"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && text.contains("3 changes"),
        "{}",
        output_text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_that_removes_a_destination_moves_its_queued_entries_to_the_dead_letters() {
    let sb = sandbox(small(3)).await;
    let a = FnReceiver::start(|_, _| Reply::status(200)).await;
    let b = FnReceiver::start(|_, _| Reply::status(503)).await;
    let with_b = format!(
        "retry:\n  schedule: [1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s]\n  jitter: 0\ndestinations:\n{}{}{}",
        webhook_destination("a", &a.url, ""),
        webhook_destination("b", &b.url, ""),
        rules_to(&["a", "b"])
    );
    let without_b = format!(
        "destinations:\n{}{}",
        webhook_destination("a", &a.url, ""),
        rules_to(&["a"])
    );
    let t = TestDir::new(&daemon_config(&sb.base_url(), "", &with_b));
    let mut d = Daemon::start(&t, "run").await;
    assert!(
        eventually(Duration::from_secs(30), || a.ok_ids().len() == 3
            && b.count() >= 3)
        .await,
        "{}",
        d.stderr_text()
    );
    t.rewrite(&daemon_config(&sb.base_url(), "", &without_b));
    d.signal("HUP");
    assert!(
        d.wait_log("config reloaded", 1, Duration::from_secs(20))
            .await,
        "{}",
        d.stderr_text()
    );
    // Give the new generation a moment, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(20)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");

    // b's three entries are not silently parked where neither `status` nor `dead list` shows
    // them: they are dead letters, and `dead list` names b and why.
    let out = cli(&t, &["dead", "list"]).await;
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", output_text(&out));
    let lines: Vec<&str> = list.lines().filter(|l| l.contains("  b  ")).collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(
        lines.iter().all(|l| l.contains("no longer in the config")),
        "{list}"
    );
    let store = open_store(&t);
    assert_eq!(
        store.outbox_len(),
        0,
        "nothing left queued for a destination that is gone"
    );
}

/// Starts `run` delivering one lead to a receiver, rewrites the config to `broken(base_url,
/// rest)` (`rest`: the running config's destinations and rules), sends SIGHUP, and checks the
/// reload is refused, the notifier keeps running and still delivers with the old config, and
/// stops cleanly. Returns its log.
async fn a_refused_reload_keeps_the_old_config_running(
    broken: impl Fn(&str, &str) -> String,
) -> String {
    let sb = sandbox(small(1)).await;
    let a = FnReceiver::start(|_, _| Reply::status(200)).await;
    let rest = format!(
        "destinations:\n{}{}",
        webhook_destination("a", &a.url, ""),
        rules_to(&["a"])
    );
    let t = TestDir::new(&daemon_config(&sb.base_url(), "", &rest));
    let mut d = Daemon::start(&t, "run").await;
    assert!(
        eventually(Duration::from_secs(30), || a.ok_ids().len() == 1).await,
        "{}",
        d.stderr_text()
    );
    t.rewrite(&broken(&sb.base_url(), &rest));
    d.signal("HUP");
    assert!(
        d.wait_log("reload rejected", 1, Duration::from_secs(20))
            .await,
        "{}",
        d.stderr_text()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        d.is_running(),
        "a reload that cannot be applied must not stop the notifier:\n{}",
        d.stderr_text()
    );
    let lead = sb
        .sandbox
        .insert("leads", serde_json::json!({"FirstName": "After"}));
    let id = lead["ID"].as_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(15), || a.ok_ids().contains(&id)).await,
        "still delivering with the old config:\n{}",
        d.stderr_text()
    );
    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(20)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    d.stderr_text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_an_smtp_username_but_no_password_keeps_the_old_config_running() {
    // An SMTP username without a password: the YAML is well-formed, but the mail transport
    // refuses it. Before the fix `check` said OK and this SIGHUP stopped the notifier
    // ("error: smtp: a username needs a password").
    a_refused_reload_keeps_the_old_config_running(|base_url, rest| {
        format!(
            "{}smtp:\n  host: localhost\n  port: 2525\n  tls: none\n  username: notifier\n  from: \"n@example.com\"\n",
            daemon_config(base_url, "", rest)
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_huge_duration_keeps_the_old_config_running() {
    // Before the fix, parsing it panicked and took the daemon down.
    let log = a_refused_reload_keeps_the_old_config_running(|base_url, rest| {
        daemon_config(base_url, "  overlap: 99999999999999999999d\n", rest)
    })
    .await;
    assert!(
        log.contains("clinicea.overlap") && log.contains("too long"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}
