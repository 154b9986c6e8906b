//! Egress rules: `check` refuses destinations, the API and the SMTP host on link-local and
//! metadata addresses, and on private ranges unless the config opts in; a name that resolves to
//! such an address is refused at connect time, before any connection is made.
//!
//! No test here sends anything to an address other than loopback: names are resolved by a fake
//! resolver, and the blocked answer it gives is `fe80::1`, which without a scope id cannot even be
//! connected to, so a broken guard would fail locally rather than reach another machine.

use crate::support::*;
use clinicea_notifier::config::{Secret, WebhookTarget};
use clinicea_notifier::daemon::settings::load_settings_with;
use clinicea_notifier::deliver::webhook;
use clinicea_notifier::model::Verdict;
use clinicea_notifier::net::egress::{GuardedResolver, Policy};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The `clinicea:` section of an API at `base_url`.
fn api(base_url: &str) -> Clinicea {
    Clinicea::new(base_url, "k3y-for-tests")
}

/// The config loader's verdict on a config (what `check` prints): `Ok` or the problems.
fn verdict(config: &Config) -> Result<(), String> {
    let t = TestDir::new(&config.to_yaml());
    load_settings_with(&t.config, &HashMap::new())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A config with one webhook destination at `url` (its other keys from `keys`).
fn webhook_to(url: &str, keys: fn(Webhook) -> Webhook) -> Config {
    Config::new(api("https://api.clinicea.com"))
        .webhook("hooks", url, |w| keys(w.secret(FRESH_SECRET)))
}

#[test]
fn check_refuses_a_metadata_url_and_a_private_url_unless_the_destination_opts_in() {
    let err = verdict(&webhook_to(
        "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
        |w| w,
    ))
    .unwrap_err();
    assert!(
        err.contains("destinations.hooks.url: 169.254.169.254 is a cloud metadata address"),
        "{err}"
    );
    assert!(
        !err.contains("security-credentials"),
        "the path is not echoed: {err}"
    );

    let err = verdict(&webhook_to("https://10.0.0.5/hook", |w| w)).unwrap_err();
    assert!(
        err.contains("destinations.hooks.url: 10.0.0.5 is a private address (10.0.0.0/8)"),
        "{err}"
    );
    assert!(
        err.contains("destinations.hooks.allow_private: true"),
        "{err}"
    );
    verdict(&webhook_to("https://10.0.0.5/hook", Webhook::allow_private)).unwrap();

    // The opt-in never covers link-local or metadata addresses, in any spelling.
    for url in [
        "https://169.254.169.254/",
        "https://[::ffff:169.254.169.254]/",
        "https://[::ffff:a9fe:a9fe]/",
        "https://[fd00:ec2::254]/",
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://169.254.10.20/",
        "https://[fe80::1]/",
    ] {
        let err = verdict(&webhook_to(url, Webhook::allow_private)).unwrap_err();
        assert!(err.contains("destinations.hooks.url"), "{url}: {err}");
        assert!(err.contains("never connects there"), "{url}: {err}");
    }
    // Every private range, IPv4-mapped ones included, needs the opt-in.
    for url in [
        "https://172.16.4.4/",
        "https://192.168.1.20/",
        "https://100.64.0.9/",
        "https://[fd12:3456::1]/",
        "https://[::ffff:10.0.0.1]/",
    ] {
        let err = verdict(&webhook_to(url, |w| w)).unwrap_err();
        assert!(err.contains("is a private address"), "{url}: {err}");
        verdict(&webhook_to(url, Webhook::allow_private)).unwrap();
    }
    // Loopback stays allowed, plain http included, in every spelling.
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]:9/hook",
    ] {
        verdict(&webhook_to(url, |w| w)).unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}

#[test]
fn check_applies_the_same_rules_to_chat_destinations_the_api_and_the_smtp_host() {
    let chat = |url: &str, keys: fn(Chat) -> Chat| {
        Config::new(api("https://api.clinicea.com")).chat("team", "slack", url, keys)
    };
    let err = verdict(&chat(
        "https://192.168.1.20/services/T0/B0/SECRET-TOKEN",
        |c| c,
    ))
    .unwrap_err();
    assert!(
        err.contains("destinations.team.url: 192.168.1.20 is a private address"),
        "{err}"
    );
    assert!(!err.contains("SECRET-TOKEN"), "{err}");
    verdict(&chat(
        "https://192.168.1.20/services/T0/B0/X",
        Chat::allow_private,
    ))
    .unwrap();

    let err = verdict(&Config::new(api("https://10.1.1.1"))).unwrap_err();
    assert!(
        err.contains("clinicea.base_url: 10.1.1.1 is a private address"),
        "{err}"
    );
    assert!(err.contains("clinicea.allow_private: true"), "{err}");
    verdict(&Config::new(api("https://10.1.1.1").allow_private())).unwrap();
    let err = verdict(&Config::new(api("https://169.254.169.254").allow_private())).unwrap_err();
    assert!(err.contains("clinicea.base_url"), "{err}");
    // The API on loopback written as an IPv4-mapped address is loopback too (plain http allowed).
    verdict(&Config::new(api("http://[::ffff:127.0.0.1]:8080"))).unwrap();

    let smtp = |host: &str, keys: fn(Smtp) -> Smtp| {
        Config::new(api("https://api.clinicea.com"))
            .smtp(keys(Smtp::host(host).from("notifier@clinic.example")))
    };
    let err = verdict(&smtp("10.0.0.25", |s| s)).unwrap_err();
    assert!(
        err.contains("smtp.host: 10.0.0.25 is a private address"),
        "{err}"
    );
    verdict(&smtp("10.0.0.25", Smtp::allow_private)).unwrap();
    let err = verdict(&smtp("metadata.google.internal", Smtp::allow_private)).unwrap_err();
    assert!(err.contains("smtp.host"), "{err}");
}

/// A resolver that answers every name with fixed addresses and counts the questions.
struct FakeDns {
    answer: Vec<SocketAddr>,
    asked: Arc<AtomicUsize>,
}

impl Resolve for FakeDns {
    fn resolve(&self, _name: Name) -> Resolving {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let addrs = self.answer.clone();
        Box::pin(async move { Ok(Box::new(addrs.into_iter()) as Addrs) })
    }
}

/// The product's webhook client, with names answered by `answer` and checked against `policy`.
fn client_resolving_to(answer: &[&str], policy: Policy) -> (reqwest::Client, Arc<AtomicUsize>) {
    let asked = Arc::new(AtomicUsize::new(0));
    let dns = FakeDns {
        answer: answer.iter().map(|a| a.parse().unwrap()).collect(),
        asked: asked.clone(),
    };
    let client = webhook::client_builder()
        .dns_resolver(Arc::new(GuardedResolver::new(dns, policy, vec![])))
        .build()
        .unwrap();
    (client, asked)
}

fn target(url: &str) -> WebhookTarget {
    WebhookTarget {
        name: "hooks".into(),
        url: url.parse().unwrap(),
        secrets: vec![Secret::parse(SECRET).unwrap()],
        headers: vec![],
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn a_name_resolving_to_a_blocked_address_is_refused_before_connecting() {
    let (client, asked) = client_resolving_to(&["[fe80::1]:0"], Policy::destination("hooks", true));
    let body = bytes::Bytes::from_static(br#"{"type":"leads.added"}"#);
    let report = webhook::send(
        &client,
        &target("https://receiver.clinic.test/hook?token=SECRET"),
        "msg_1",
        body.clone(),
    )
    .await;
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "the name went through the guard"
    );
    let Verdict::Retry { reason, .. } = &report.verdict else {
        panic!("{:?}", report.verdict)
    };
    assert!(reason.contains("destination hooks"), "{reason}");
    assert!(
        reason
            .contains("receiver.clinic.test resolves to fe80::1, which is link-local (fe80::/10)"),
        "{reason}"
    );
    assert!(reason.contains("refused before connecting"), "{reason}");
    assert!(!reason.contains("token=SECRET"), "{reason}");
    assert_eq!(report.status, None);
}

#[tokio::test]
async fn allowed_answers_are_used_and_blocked_ones_in_the_same_answer_are_dropped() {
    let rx = Receiver::start().await;
    let port = rx.addr.port();
    let (client, _) = client_resolving_to(
        &["[fe80::1]:0", &format!("127.0.0.1:{port}")],
        Policy::destination("hooks", false),
    );
    let report = webhook::send(
        &client,
        &target(&format!("http://receiver.clinic.test:{port}/hook")),
        "msg_3",
        bytes::Bytes::from_static(b"{}"),
    )
    .await;
    assert_eq!(report.verdict, Verdict::Success, "{:?}", report.verdict);
    let got = rx.received();
    assert_eq!(got.len(), 1);
    verify_with_library(&got[0]).unwrap();
}

#[tokio::test]
async fn a_chat_message_to_a_name_resolving_to_a_link_local_address_is_refused() {
    let (client, asked) = client_resolving_to(&["[fe80::1]:0"], Policy::destination("team", true));
    let url: url::Url = "https://hooks.slack.test/services/T0/B0/SECRET-TOKEN"
        .parse()
        .unwrap();
    let report = clinicea_notifier::deliver::chat::send(
        &client,
        clinicea_notifier::config::ChatKind::Slack,
        &url,
        br#"{"text":"x"}"#.to_vec(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    let Verdict::Retry { reason, .. } = &report.verdict else {
        panic!("{:?}", report.verdict)
    };
    assert!(reason.contains("destination team"), "{reason}");
    assert!(reason.contains("link-local"), "{reason}");
    assert!(!reason.contains("SECRET-TOKEN"), "{reason}");
}

#[tokio::test]
async fn the_api_and_a_receiver_on_localhost_are_reached_through_the_guarded_system_resolver() {
    // The API client's and the deliverer's own clients resolve `localhost` through the guard;
    // loopback stays allowed.
    let sb = empty_sandbox().await;
    let rx = Receiver::start().await;
    let url = rx.url.replace("127.0.0.1", "localhost");
    let config = leads_only(&sb.base_url().replace("127.0.0.1", "localhost"))
        .webhook("hooks", &url, |w| w.timeout("5s"))
        .rule(
            Rule::new("all", &["hooks"])
                .resource("leads")
                .on(&["added"]),
        );
    let t = TestDir::new(&config.to_yaml());
    let engine = t.engine().await;
    sb.sandbox.insert("leads", test_lead());
    let rep = poll_report(&engine).await.unwrap();
    assert_eq!(rep.deliveries, 1);
    drain_outbox(&engine, Duration::from_secs(15)).await;
    let got = rx.received();
    assert_eq!(got.len(), 1, "dead: {:?}", dead_list(&engine).await);
    verify_with_library(&got[0]).unwrap();
}
