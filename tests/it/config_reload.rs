//! SIGHUP reloads the config: a valid one is applied without losing queued entries (a removed
//! destination's go to the dead letters), one that cannot be applied is refused while the old one
//! keeps running, and a new metrics token replaces the old.

use crate::support::*;
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_refuses_a_broken_config_then_applies_a_valid_one_without_losing_queued_entries() {
    let sb = sandbox_with_leads(3).await;
    let a = Receiver::start().await;
    // `b` is down until after the reload: its entries sit queued, retrying.
    let b = Receiver::with(Responder::always(Reply::status(503))).await;
    let c = Receiver::start().await;
    let config = |with_c: bool| {
        let config = leads_only(&sb.base_url())
            .listen()
            .webhook("a", &a.url, |w| w.timeout("5s"))
            .webhook("b", &b.url, |w| {
                w.timeout("5s").retry(Retry::every("1s", 30))
            });
        if with_c {
            config
                .webhook("c", &c.url, |w| w.timeout("5s"))
                .rule(Rule::new("all-leads", &["a", "b", "c"]).resource("leads"))
        } else {
            config.rule(Rule::new("all-leads", &["a", "b"]).resource("leads"))
        }
    };
    let t = TestDir::new(&config(false).to_yaml());
    let mut d = Notifier::run(&t).start().await;
    let initial = sandbox_lead_ids(&sb);
    assert!(
        eventually(Duration::from_secs(30), || a.ok_ids() == initial
            && b.ok_ids().is_empty()
            && b.count() >= 3)
        .await,
        "first deliveries:\n{}",
        d.stderr_text()
    );

    // 1. A broken config (an unknown key, written literally) is refused; the old rules keep
    // running.
    t.rewrite(&format!("{}bogus_key: 1\n", config(true).to_yaml()));
    assert!(
        d.reload("reload rejected", 1, Duration::from_secs(10))
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
    t.rewrite(&config(true).to_yaml());
    assert!(
        d.reload("config reloaded", 1, Duration::from_secs(20))
            .await,
        "{}",
        d.stderr_text()
    );
    b.respond_with(Responder::ok());
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
    let status = d.terminate(Duration::from_secs(20)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let store = open_store(&t);
    assert_eq!(store.outbox_len().await.unwrap(), 0);
    assert_eq!(store.dead_len().await.unwrap(), 0);
    for r in [&a, &b, &c] {
        for x in r.received() {
            verify_with_library(&x).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_that_removes_a_destination_moves_its_queued_entries_to_the_dead_letters() {
    let sb = sandbox_with_leads(3).await;
    let a = Receiver::start().await;
    let b = Receiver::with(Responder::always(Reply::status(503))).await;
    let with_b = leads_only(&sb.base_url())
        .listen()
        .retry(Retry::every("1s", 20))
        .webhook("a", &a.url, |w| w)
        .webhook("b", &b.url, |w| w)
        .rule(Rule::new("all-leads", &["a", "b"]).resource("leads"));
    let without_b = leads_only(&sb.base_url())
        .listen()
        .webhook("a", &a.url, |w| w)
        .rule(Rule::new("all-leads", &["a"]).resource("leads"));
    let t = TestDir::new(&with_b.to_yaml());
    let mut d = Notifier::run(&t).start().await;
    assert!(
        eventually(Duration::from_secs(30), || a.ok_ids().len() == 3
            && b.count() >= 3)
        .await,
        "{}",
        d.stderr_text()
    );
    t.rewrite(&without_b.to_yaml());
    assert!(
        d.reload("config reloaded", 1, Duration::from_secs(20))
            .await,
        "{}",
        d.stderr_text()
    );
    // Give the new generation a moment, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = d.terminate(Duration::from_secs(20)).await;
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
        store.outbox_len().await.unwrap(),
        0,
        "nothing left queued for a destination that is gone"
    );
}

/// Starts `run` delivering one lead to a receiver, rewrites the config to `broken(base_url,
/// running)` (`running`: the running config), sends SIGHUP, and checks the reload is refused,
/// the notifier keeps running and still delivers with the old config, and stops cleanly.
/// Returns its log.
async fn a_refused_reload_keeps_the_old_config_running(
    broken: impl Fn(&str, Config) -> Config,
) -> String {
    let sb = sandbox_with_leads(1).await;
    let a = Receiver::start().await;
    let running = leads_only(&sb.base_url())
        .listen()
        .webhook("a", &a.url, |w| w)
        .rule(Rule::new("all-leads", &["a"]).resource("leads"));
    let t = TestDir::new(&running.to_yaml());
    let mut d = Notifier::run(&t).start().await;
    assert!(
        eventually(Duration::from_secs(30), || a.ok_ids().len() == 1).await,
        "{}",
        d.stderr_text()
    );
    t.rewrite(&broken(&sb.base_url(), running).to_yaml());
    assert!(
        d.reload("reload rejected", 1, Duration::from_secs(20))
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
    let status = d.terminate(Duration::from_secs(20)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    d.stderr_text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_an_smtp_username_but_no_password_keeps_the_old_config_running() {
    // An SMTP username without a password: the YAML is well-formed, but the mail transport
    // refuses it, so the reload must be refused rather than stop the notifier ("error: smtp: a
    // username needs a password").
    a_refused_reload_keeps_the_old_config_running(|_, running| {
        running.smtp(
            Smtp::host("localhost")
                .port(2525)
                .tls("none")
                .username("notifier")
                .from("n@example.com"),
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_huge_duration_keeps_the_old_config_running() {
    // Parsing it must not panic and take the daemon down.
    let log = a_refused_reload_keeps_the_old_config_running(|base_url, running| {
        running.clinicea(Clinicea::sandbox(base_url).overlap("99999999999999999999d"))
    })
    .await;
    assert!(
        log.contains("clinicea.overlap") && log.contains("too long"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_replaces_the_metrics_token() {
    let sb = empty_sandbox().await;
    let base = leads_only(&sb.base_url()).listen();
    let (old, new) = ("old-token-0123456789ab", "new-token-ba9876543210");
    let t = TestDir::new(&base.clone().metrics_token(old).to_yaml());
    let d = Notifier::run(&t).tag("token").start().await;
    let metrics = d.url("/metrics");
    let bearer = |tok: &str| format!("Bearer {tok}");
    assert_eq!(get_with_auth(&metrics, Some(&bearer(old))).await.0, 200);
    assert_eq!(get_with_auth(&metrics, Some(&bearer(new))).await.0, 401);

    t.rewrite(&base.clone().metrics_token(new).to_yaml());
    assert!(
        d.reload("config reloaded", 1, Duration::from_secs(20))
            .await,
        "{}",
        d.stderr_text()
    );
    assert_eq!(get_with_auth(&metrics, Some(&bearer(old))).await.0, 401);
    assert_eq!(get_with_auth(&metrics, Some(&bearer(new))).await.0, 200);

    // Removing the key opens /metrics again.
    t.rewrite(&base.to_yaml());
    assert!(
        d.reload("config reloaded", 2, Duration::from_secs(20))
            .await
    );
    assert_eq!(get_with_auth(&metrics, None).await.0, 200);
    let log = d.stderr_text();
    assert!(!log.contains(old) && !log.contains(new), "{log}");
    d.kill9().await;
}
