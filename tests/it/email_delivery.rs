//! Staff emails through a real SMTP server (the product's own catcher) on loopback: one message
//! per recipient with its planned Message-ID, multipart or plain, rejected recipients dead and
//! the others sent once across retries, STARTTLS to a private CA, and no credentials in clear.

use crate::support::*;
use clinicea_notifier::kit::catcher::{Catcher, CatcherOptions, CaughtMessage};
use clinicea_notifier::route::plan::Payload;
use std::collections::HashMap;
use std::time::Duration;

const FROM: &str = "Clinic Notifier <notifier@clinic.example>";
const RECIPIENTS: [&str; 3] = [
    "frontdesk@clinic.example",
    "manager@clinic.example",
    "sales@clinic.example",
];

/// A config: the sandbox's leads; new leads are emailed with `template` to `to` through `smtp`
/// (sending from [`FROM`], 3 s timeout), retried five times 200 ms apart.
fn email_config(base_url: &str, smtp: Smtp, to: &[&str], template: &str) -> Config {
    leads_only(base_url)
        .smtp(smtp.from(FROM).timeout("3s"))
        .retry(Retry::every("200ms", 5))
        .email(
            "front-desk",
            to,
            "New lead: {{record.FirstName}} {{record.LastName}}",
            template,
        )
        .rule(
            Rule::new("new-lead-email", &["front-desk"])
                .resource("leads")
                .on(&["added"]),
        )
}

fn by_recipient(got: &[CaughtMessage]) -> HashMap<String, Vec<CaughtMessage>> {
    let mut m: HashMap<String, Vec<CaughtMessage>> = HashMap::new();
    for g in got {
        for r in &g.rcpt_to {
            m.entry(r.clone()).or_default().push(g.clone());
        }
    }
    m
}

async fn message_ids(
    engine: &clinicea_notifier::daemon::engine::Engine,
) -> HashMap<String, String> {
    queued(engine, "front-desk")
        .await
        .into_iter()
        .map(|e| match e.payload {
            Payload::Email(m) => (m.to, m.message_id),
            other => panic!("not an email: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_new_lead_sends_one_multipart_email_to_each_recipient() {
    let sb = empty_sandbox().await;
    let catcher = start_catcher(CatcherOptions::default()).await;
    let t = TestDir::new(
        &email_config(
            &sb.base_url(),
            Smtp::plain(catcher.addr.port()),
            &RECIPIENTS,
            "new-lead",
        )
        .to_yaml(),
    );
    let engine = t.engine().await;
    let lead = sb.sandbox.insert("leads", test_lead());
    let rep = poll_report(&engine).await.unwrap();
    assert_eq!((rep.changes, rep.deliveries), (1, 3));
    let ids = message_ids(&engine).await;
    assert_eq!(ids.len(), 3);
    drain_outbox(&engine, Duration::from_secs(10)).await;
    let got = catcher.wait_for(3, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 3, "one message per recipient");
    let per = by_recipient(&got);
    for r in RECIPIENTS {
        let msgs = &per[r];
        assert_eq!(msgs.len(), 1, "{r} gets exactly one copy");
        let m = &msgs[0];
        assert_eq!(
            m.rcpt_to,
            vec![r.to_string()],
            "one envelope recipient each"
        );
        assert_eq!(m.mail_from, "notifier@clinic.example");
        assert_eq!(
            m.header("From").as_deref(),
            Some("\"Clinic Notifier\" <notifier@clinic.example>")
        );
        assert_eq!(m.header("To").as_deref(), Some(r));
        assert_eq!(
            m.header("Subject").as_deref(),
            Some("New lead: Ayesha Khan")
        );
        let mid = m.header("Message-ID").unwrap();
        assert_eq!(mid, ids[r], "the Message-ID planned with the delivery");
        assert!(mid.ends_with("@clinic.example>"), "{mid}");
        assert!(m.header("Date").is_some());
        let ct = m.header("Content-Type").unwrap();
        assert!(ct.starts_with("multipart/alternative"), "{ct}");
        let parts = mime_parts(m);
        assert_eq!(parts.len(), 2, "{}", m.data);
        assert!(parts[0].0.starts_with("text/plain"), "{:?}", parts[0].0);
        assert!(parts[1].0.starts_with("text/html"), "{:?}", parts[1].0);
        // Both parts were rendered from the shipped new-lead template.
        let (text, html) = (&parts[0].1, &parts[1].1);
        let id = lead["ID"].as_str().unwrap();
        assert!(text.starts_with("New lead: Ayesha Khan\r\n"), "{text}");
        assert!(text.contains("Name:    Ayesha Khan\r\n"), "{text}");
        assert!(text.contains("Source:  Website\r\n"), "{text}");
        assert!(
            text.contains("call Ayesha within the hour, or email"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "rule \"new-lead-email\", destination \"front-desk\", lead {id}."
            )),
            "{text}"
        );
        assert!(
            html.contains("<h2 style=\"margin: 0 0 12px 0;\">New lead: Ayesha Khan</h2>"),
            "{html}"
        );
        assert!(
            html.contains("<tr><td><strong>Source</strong></td><td>Website</td></tr>"),
            "{html}"
        );
        assert!(!html.contains("{{"), "{html}");
    }
    let mids: std::collections::HashSet<_> = ids.values().collect();
    assert_eq!(
        mids.len(),
        3,
        "each recipient's message has its own Message-ID"
    );
    assert_eq!(engine.store.outbox_len().await.unwrap(), 0);
    assert!(dead_list(&engine).await.is_empty());
}

#[tokio::test]
async fn a_text_only_template_sends_a_plain_email() {
    let sb = empty_sandbox().await;
    let catcher = start_catcher(CatcherOptions::default()).await;
    let config = email_config(
        &sb.base_url(),
        Smtp::plain(catcher.addr.port()),
        &["frontdesk@clinic.example"],
        "short-lead",
    )
    .templates("./templates");
    let t = TestDir::new(&config.to_yaml());
    let tdir = t.dir.path().join("templates");
    std::fs::create_dir_all(&tdir).unwrap();
    std::fs::write(
        tdir.join("short-lead.txt.hbs"),
        "Lead {{record.FirstName}} from {{record.Source}}.\nCall {{record.Mobile}}.\n",
    )
    .unwrap();
    let engine = t.engine().await;
    sb.sandbox.insert("leads", test_lead());
    poll_report(&engine).await.unwrap();
    drain_outbox(&engine, Duration::from_secs(10)).await;
    let got = catcher.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let m = &got[0];
    let ct = m.header("Content-Type").unwrap();
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert!(!m.data.contains("text/html"));
    assert_eq!(
        m.header("Subject").as_deref(),
        Some("New lead: Ayesha Khan")
    );
    let parts = mime_parts(m);
    assert_eq!(parts.len(), 1);
    assert_eq!(
        parts[0].1.trim_end(),
        "Lead Ayesha from Website.\r\nCall +92 300 0000000."
    );
}

#[tokio::test]
async fn a_rejected_recipient_is_dead_and_the_others_get_exactly_one_copy_across_retries() {
    let sb = empty_sandbox().await;
    // The first transaction is refused with 421 as well, so some delivery is retried.
    let catcher = start_catcher(CatcherOptions {
        reject_recipients: vec!["manager@clinic.example".into()],
        tempfail_first: 1,
        ..Default::default()
    })
    .await;
    let t = TestDir::new(
        &email_config(
            &sb.base_url(),
            Smtp::plain(catcher.addr.port()),
            &RECIPIENTS,
            "new-lead",
        )
        .to_yaml(),
    );
    let engine = t.engine().await;
    sb.sandbox.insert("leads", test_lead());
    poll_report(&engine).await.unwrap();
    drain_outbox(&engine, Duration::from_secs(10)).await;
    let got = catcher.wait_for(2, Duration::from_secs(5)).await;
    // Give any stray duplicate time to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = if catcher.messages().len() > got.len() {
        catcher.messages()
    } else {
        got
    };
    let per = by_recipient(&got);
    assert_eq!(got.len(), 2, "{per:?}");
    assert_eq!(per["frontdesk@clinic.example"].len(), 1);
    assert_eq!(per["sales@clinic.example"].len(), 1);
    assert!(!per.contains_key("manager@clinic.example"));
    let dead = dead_list(&engine).await;
    assert_eq!(dead.len(), 1);
    match &dead[0].entry.payload {
        Payload::Email(m) => assert_eq!(m.to, "manager@clinic.example"),
        other => panic!("{other:?}"),
    }
    assert!(dead[0].reason.contains("550"), "{}", dead[0].reason);
    assert_eq!(engine.store.outbox_len().await.unwrap(), 0);
}

#[tokio::test]
async fn a_421_is_retried_and_delivered_once_with_the_same_message_id() {
    let sb = empty_sandbox().await;
    let catcher = start_catcher(CatcherOptions {
        tempfail_first: 1,
        ..Default::default()
    })
    .await;
    let t = TestDir::new(
        &email_config(
            &sb.base_url(),
            Smtp::plain(catcher.addr.port()),
            &["frontdesk@clinic.example"],
            "new-lead",
        )
        .to_yaml(),
    );
    let engine = t.engine().await;
    sb.sandbox.insert("leads", test_lead());
    poll_report(&engine).await.unwrap();
    let planned = message_ids(&engine).await["frontdesk@clinic.example"].clone();

    let first = engine.deliverer.deliver_all_due().await.unwrap();
    assert_eq!((first.attempted, first.retried), (1, 1), "{first:?}");
    let entry = queued(&engine, "front-desk").await.remove(0);
    assert_eq!(entry.attempts, 1);
    let logs = attempt_logs(&engine, entry.seq).await;
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].status, Some(421));
    assert_eq!(
        message_ids(&engine).await["frontdesk@clinic.example"],
        planned,
        "the stored message keeps its Message-ID"
    );

    drain_outbox(&engine, Duration::from_secs(10)).await;
    let got = catcher.wait_for(1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(catcher.messages().len(), 1, "delivered once");
    assert_eq!(got[0].header("Message-ID"), Some(planned));
    assert!(dead_list(&engine).await.is_empty());
}

#[tokio::test]
async fn a_server_that_is_down_is_retried_then_delivered_when_it_comes_up() {
    let sb = empty_sandbox().await;
    let port = free_port();
    let t = TestDir::new(
        &email_config(
            &sb.base_url(),
            Smtp::plain(port),
            &["frontdesk@clinic.example"],
            "new-lead",
        )
        .to_yaml(),
    );
    let engine = t.engine().await;
    sb.sandbox.insert("leads", test_lead());
    poll_report(&engine).await.unwrap();
    let planned = message_ids(&engine).await["frontdesk@clinic.example"].clone();

    let out = engine.deliverer.deliver_all_due().await.unwrap();
    assert_eq!((out.attempted, out.retried), (1, 1), "{out:?}");
    let entry = queued(&engine, "front-desk").await.remove(0);
    assert_eq!(entry.attempts, 1, "still queued, one attempt made");
    let logs = attempt_logs(&engine, entry.seq).await;
    assert_eq!(logs.len(), 1);
    let reason = format!("{:?}", logs[0].verdict);
    assert!(
        reason.contains("Retry") && reason.contains("SMTP"),
        "{reason}"
    );

    // The server comes up on that port; the next attempt delivers.
    let catcher = Catcher::start(("127.0.0.1", port), CatcherOptions::default())
        .await
        .unwrap();
    drain_outbox(&engine, Duration::from_secs(10)).await;
    let got = catcher.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("Message-ID"), Some(planned));
    assert!(dead_list(&engine).await.is_empty());
    assert_eq!(engine.store.outbox_len().await.unwrap(), 0);
}

#[tokio::test]
async fn starttls_to_a_server_with_a_self_signed_certificate_trusted_through_ca_file() {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let cert_pem = ck.cert.pem();
    let key_pem = ck.key_pair.serialize_pem();
    let catcher = start_catcher(CatcherOptions {
        tls: Some((cert_pem.clone().into_bytes(), key_pem.into_bytes())),
        require_auth: Some(("notifier".into(), "s3cret".into())),
        ..Default::default()
    })
    .await;
    let sb = empty_sandbox().await;
    let smtp = Smtp::host("localhost")
        .port(catcher.addr.port())
        .tls("starttls")
        .username("notifier")
        .password("${SMTP_PASSWORD}")
        .ca_file("relay-ca.pem");
    let mut t = TestDir::new(
        &email_config(
            &sb.base_url(),
            smtp,
            &["frontdesk@clinic.example"],
            "new-lead",
        )
        .to_yaml(),
    );
    t.vars.insert("SMTP_PASSWORD".into(), "s3cret".into());
    std::fs::write(t.dir.path().join("relay-ca.pem"), &cert_pem).unwrap();
    let engine = t.engine().await;
    sb.sandbox.insert("leads", test_lead());
    poll_report(&engine).await.unwrap();
    drain_outbox(&engine, Duration::from_secs(10)).await;
    let got = catcher.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "dead: {:?}", dead_list(&engine).await);
    assert!(got[0].tls, "the message came over TLS");
    assert_eq!(got[0].auth_user.as_deref(), Some("notifier"));
    assert_eq!(
        got[0].header("Subject").as_deref(),
        Some("New lead: Ayesha Khan")
    );
}

/// `check` on a config with this `smtp:` section (sending from [`FROM`]): (success, stdout +
/// stderr).
fn check_smtp(smtp: Smtp) -> (bool, String) {
    let t = TestDir::new(
        &leads_only("http://127.0.0.1:1")
            .smtp(smtp.from(FROM))
            .to_yaml(),
    );
    check(&t.config)
}

#[test]
fn check_refuses_tls_none_to_a_remote_host_unless_cleartext_is_allowed() {
    let remote = || Smtp::host("smtp.example.com").port(25).tls("none");
    let (ok, text) = check_smtp(remote());
    assert!(!ok, "{text}");
    assert!(
        text.contains("clinicea-notifier.yaml:")
            && text.contains(": smtp.tls: ")
            && text.contains("loopback"),
        "{text}"
    );
    assert!(
        text.contains("smtp.allow_cleartext"),
        "names the opt-in: {text}"
    );
    let (ok, text) = check_smtp(remote().allow_cleartext());
    assert!(ok, "{text}");
    let (ok, text) = check_smtp(Smtp::host("localhost").port(25).tls("none"));
    assert!(ok, "{text}");
    // The opt-in is for `tls: none` only.
    let (ok, text) = check_smtp(Smtp::host("smtp.example.com").allow_cleartext());
    assert!(!ok && text.contains("smtp.allow_cleartext"), "{text}");
}

#[tokio::test]
async fn credentials_with_tls_none_are_refused_and_the_server_never_sees_auth() {
    // A server that offers AUTH on a plain connection, as a careless relay does.
    let catcher = start_catcher(CatcherOptions {
        require_auth: Some(("notifier".into(), "s3cret-smtp-pass".into())),
        ..Default::default()
    })
    .await;
    let sb = empty_sandbox().await;
    for allow_cleartext in [false, true] {
        let smtp = Smtp::plain(catcher.addr.port())
            .username("notifier")
            .password("s3cret-smtp-pass");
        let smtp = if allow_cleartext {
            smtp.allow_cleartext()
        } else {
            smtp
        };
        let t = TestDir::new(
            &email_config(
                &sb.base_url(),
                smtp,
                &["frontdesk@clinic.example"],
                "new-lead",
            )
            .to_yaml(),
        );
        sb.sandbox.insert("leads", test_lead());
        // `once` polls and would send: it refuses the config before anything goes out.
        let out = cli(&t, &["once"]).await;
        let text = output_text(&out);
        assert!(!out.status.success(), "{text}");
        assert!(
            text.contains(": smtp.tls: ") && text.contains("in clear"),
            "{text}"
        );
        assert!(!text.contains("s3cret-smtp-pass"), "{text}");
    }
    // Whoever builds the transport: it refuses credentials without TLS.
    let settings = clinicea_notifier::config::SmtpSettings {
        host: "127.0.0.1".into(),
        port: catcher.addr.port(),
        tls: clinicea_notifier::config::SmtpTls::None,
        username: Some("notifier".into()),
        password: Some("s3cret-smtp-pass".into()),
        timeout: Duration::from_secs(3),
        extra_root_cert_pem: None,
        allow_private: false,
    };
    let refused = clinicea_notifier::deliver::email::Mailer::new(settings)
        .err()
        .unwrap();
    assert_eq!(refused.key, "smtp.tls");
    assert_eq!(catcher.auth_commands(), (0, 0), "no AUTH ever reached it");
    assert!(catcher.messages().is_empty());
}
