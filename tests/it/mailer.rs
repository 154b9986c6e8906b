//! The mailer against the product's own SMTP catcher on loopback: what arrives (headers, parts,
//! dot-stuffing), how rejections and temporary failures are sorted, STARTTLS with AUTH.

use clinicea_notifier::config::SmtpSettings;
use clinicea_notifier::config::SmtpTls;
use clinicea_notifier::deliver::email::Mailer;
use clinicea_notifier::kit::catcher::{Catcher, CatcherOptions};
use clinicea_notifier::model::Verdict;
use clinicea_notifier::net::mail::message_id;
use clinicea_notifier::route::plan::EmailMessage;
use std::time::Duration;

fn settings(port: u16) -> SmtpSettings {
    SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        tls: SmtpTls::None,
        username: None,
        password: None,
        timeout: Duration::from_secs(5),
        extra_root_cert_pem: None,
        allow_private: false,
    }
}

fn msg(to: &str, html: Option<&str>) -> EmailMessage {
    EmailMessage {
        from: "Clinic Notifier <notifier@clinic.example>".into(),
        to: to.into(),
        reply_to: Some("frontdesk@clinic.example".into()),
        subject: "New lead: Mehwish Qureshi".into(),
        text: "New lead: Mehwish Qureshi\n.dot line\nCall within the hour.\n".into(),
        html: html.map(str::to_string),
        message_id: message_id("msg_abc/front-desk/0", "clinic.example"),
    }
}

#[tokio::test]
async fn plain_and_multipart_arrive_with_headers() {
    let c = Catcher::start("127.0.0.1:0", CatcherOptions::default())
        .await
        .unwrap();
    let m = Mailer::new(settings(c.addr.port())).unwrap();
    let plain = msg("frontdesk@clinic.example", None);
    let r = m.send(&plain).await;
    assert_eq!(r.verdict, Verdict::Success, "{r:?}");
    assert_eq!(r.status, Some(250));
    let html = msg(
        "manager@clinic.example",
        Some("<p>New lead: <b>Mehwish</b></p>"),
    );
    assert_eq!(m.send(&html).await.verdict, Verdict::Success);
    let got = c.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 2);

    let p = &got[0];
    assert_eq!(p.mail_from, "notifier@clinic.example");
    assert_eq!(p.rcpt_to, vec!["frontdesk@clinic.example"]);
    assert_eq!(
        p.header("Subject").as_deref(),
        Some("New lead: Mehwish Qureshi")
    );
    assert_eq!(
        p.header("From").as_deref(),
        Some("\"Clinic Notifier\" <notifier@clinic.example>")
    );
    assert_eq!(p.header("To").as_deref(), Some("frontdesk@clinic.example"));
    assert_eq!(
        p.header("Reply-To").as_deref(),
        Some("frontdesk@clinic.example")
    );
    assert_eq!(p.header("Message-ID"), Some(plain.message_id.clone()));
    assert!(p.header("Date").is_some());
    assert!(
        p.header("Content-Type").unwrap().starts_with("text/plain"),
        "{:?}",
        p.header("Content-Type")
    );
    assert!(
        p.data
            .contains("\r\n.dot line\r\nCall within the hour.\r\n"),
        "{}",
        p.data
    );

    let h = &got[1];
    assert!(h
        .header("Content-Type")
        .unwrap()
        .starts_with("multipart/alternative"));
    assert!(h.data.contains("Content-Type: text/plain"));
    assert!(h.data.contains("Content-Type: text/html"));
    assert!(h.data.contains("<p>New lead: <b>Mehwish</b></p>"));
    assert_eq!(h.header("Message-ID"), Some(html.message_id.clone()));
}

#[tokio::test]
async fn rejection_fails_and_tempfail_retries() {
    let c = Catcher::start(
        "127.0.0.1:0",
        CatcherOptions {
            reject_recipients: vec!["gone@clinic.example".into()],
            tempfail_first: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let m = Mailer::new(settings(c.addr.port())).unwrap();
    let first = m.send(&msg("frontdesk@clinic.example", None)).await;
    assert!(matches!(first.verdict, Verdict::Retry { .. }), "{first:?}");
    assert_eq!(first.status, Some(421));
    let again = m.send(&msg("frontdesk@clinic.example", None)).await;
    assert_eq!(again.verdict, Verdict::Success, "{again:?}");
    let rejected = m.send(&msg("gone@clinic.example", None)).await;
    assert!(
        matches!(rejected.verdict, Verdict::Fail { .. }),
        "{rejected:?}"
    );
    assert_eq!(rejected.status, Some(550));
    // A record value with a line break cannot add a header.
    let mut evil = msg("frontdesk@clinic.example", None);
    evil.subject = "Lead\r\nBcc: evil@attacker.example".into();
    assert_eq!(m.send(&evil).await.verdict, Verdict::Success);
    let got = c.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got[1].header("Bcc"), None, "{}", got[1].data);
    assert_eq!(got[1].rcpt_to, vec!["frontdesk@clinic.example"]);
    // The pool still works after a rejection.
    assert_eq!(
        m.send(&msg("frontdesk@clinic.example", None)).await.verdict,
        Verdict::Success
    );
    assert_eq!(c.wait_for(3, Duration::from_secs(5)).await.len(), 3);
}

#[tokio::test]
async fn starttls_with_a_trusted_self_signed_certificate_and_auth() {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let cert_pem = ck.cert.pem().into_bytes();
    let key_pem = ck.key_pair.serialize_pem().into_bytes();
    let c = Catcher::start(
        "127.0.0.1:0",
        CatcherOptions {
            tls: Some((cert_pem.clone(), key_pem)),
            require_auth: Some(("notifier".into(), "s3cret".into())),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut s = settings(c.addr.port());
    s.tls = SmtpTls::Starttls;
    s.username = Some("notifier".into());
    s.password = Some("s3cret".into());
    s.extra_root_cert_pem = Some(cert_pem);
    let m = Mailer::new(s.clone()).unwrap();
    let r = m
        .send(&msg("frontdesk@clinic.example", Some("<p>hi</p>")))
        .await;
    assert_eq!(r.verdict, Verdict::Success, "{r:?}");
    let got = c.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].tls);
    assert_eq!(got[0].auth_user.as_deref(), Some("notifier"));

    // Without trusting the certificate: a TLS error, retried, nothing delivered.
    s.extra_root_cert_pem = None;
    let untrusting = Mailer::new(s).unwrap();
    let r = untrusting
        .send(&msg("frontdesk@clinic.example", None))
        .await;
    assert!(matches!(r.verdict, Verdict::Retry { .. }), "{r:?}");
    assert_eq!(c.messages().len(), 1);
}

#[test]
fn the_transport_refuses_credentials_without_tls() {
    let mut s = settings(2525);
    s.username = Some("notifier".into());
    s.password = Some("s3cret".into());
    let p = Mailer::new(s).expect_err("refused");
    assert_eq!(p.key, "smtp.tls");
    assert!(!p.message.contains("s3cret"), "{}", p.message);
}

#[tokio::test]
async fn server_down_retries() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let m = Mailer::new(settings(port)).unwrap();
    let r = m.send(&msg("frontdesk@clinic.example", None)).await;
    assert!(matches!(r.verdict, Verdict::Retry { .. }), "{r:?}");
    assert_eq!(r.status, None);
}
