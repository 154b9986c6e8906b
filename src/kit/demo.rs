//! `demo`: the whole product on one machine, with no network, no config file and no real data.
//!
//! In one process, on loopback ports the OS picks, it starts:
//! - the Clinicea sandbox ([`crate::kit::sandbox`]) with a few made-up records that change every 2 s;
//! - a webhook receiver that verifies every Standard Webhooks signature with the secret the demo
//!   generated, and answers a few requests with 503 so retries are seen;
//! - a Slack-style chat receiver (its first answer is a 429 with `Retry-After`);
//! - an SMTP catcher ([`crate::kit::catcher`]) that refuses its first transaction with 421;
//! - a second webhook receiver, `legacy-crm`, that is down (503 to everything), so the operator's
//!   alert (`alerts:`) is seen: one email to `ops@clinic.example` once it has failed for a few
//!   seconds ([`alert_demo`]);
//! - the notifier itself ([`crate::daemon::run`]) with a demo copy of the example rules, written
//!   to a temporary folder together with its store.
//!
//! It prints a live stream to stdout (changes, matched rules, deliveries, retries, emails, chat
//! messages) until Ctrl-C or `--duration`, then a summary, and exits 0. Changes and deliveries
//! come from the notifier's own event stream ([`crate::daemon::events`]); the receivers and the
//! catcher print what reaches them.
//!
//! Record contents: the product never logs them at the default level. The demo's stdout stream is
//! different: it is the command's explicit output, and everything in it is made-up sandbox data,
//! so it shows names in email subjects and chat text there (and only there; logs are unchanged).

use crate::config::Secret;
use crate::daemon::events::{Event, Events, Subscription};
use crate::daemon::intake::PollEvent;
use crate::daemon::settings::load_settings_with;
use crate::deliver::webhook;
use crate::deliver::Event as Delivery;
use crate::kit::catcher::{Catcher, CatcherHandle, CatcherOptions};
use crate::kit::sandbox::{Sandbox, SandboxOptions};
use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the sandbox changes some records.
pub(crate) const CHURN_EVERY: Duration = Duration::from_secs(2);
/// The demo runs a fleet of two clinics (two organizations of the sandbox).
const DEMO_CLINICS: usize = 2;
/// Webhook requests (numbered from 1) the demo receiver answers with 503, to show retries.
pub(crate) const WEBHOOK_FAILURES: [u64; 3] = [2, 3, 9];
/// How far back the notifier starts, so the sandbox's initial records flow too.
pub(crate) const BACKFILL: Duration = Duration::from_secs(2 * 3600);
/// How long a signature's timestamp may be off before the receiver rejects it.
pub(crate) const SIGNATURE_TOLERANCE: Duration = Duration::from_secs(300);

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Stop after this long (e.g. 20s, 2m); without it the demo runs until Ctrl-C.
    #[arg(long, value_parser = crate::config::parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Seed for the sandbox's made-up records and their changes.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
}

/// What the demo counted; the summary prints it.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Changes the polls detected.
    pub(crate) changes: AtomicU64,
    /// Rule matches (a change matching two rules counts two).
    pub(crate) rules_matched: AtomicU64,
    /// Deliveries that succeeded.
    pub(crate) delivered: AtomicU64,
    /// Failed attempts that will be retried.
    pub(crate) retries: AtomicU64,
    /// Deliveries moved to the dead letters.
    pub(crate) dead: AtomicU64,
    /// Webhook requests whose signature verified.
    pub(crate) signatures_ok: AtomicU64,
    /// Webhook requests whose signature did not verify.
    pub(crate) signatures_failed: AtomicU64,
    /// Webhook requests answered with an injected 503.
    pub(crate) injected_failures: AtomicU64,
    /// Chat messages received (all attempts).
    pub(crate) chat_messages: AtomicU64,
    /// Emails the SMTP catcher accepted.
    pub(crate) emails: AtomicU64,
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::SeqCst)
}

fn bump(a: &AtomicU64, n: u64) -> u64 {
    a.fetch_add(n, Ordering::SeqCst) + n
}

/// Prints one line of the live stream. A closed stdout (a pipe whose reader left) is ignored.
#[derive(Clone, Copy)]
struct Printer {
    start: Instant,
}

impl Printer {
    fn line(&self, tag: &str, text: &str) {
        let t = self.start.elapsed().as_secs_f64();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "[{t:6.1}s] {tag:<10} {text}");
    }

    fn plain(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
    }
}

/// The first `n` characters of an id, for a readable stream.
fn short(id: &str) -> &str {
    match id.char_indices().nth(12) {
        Some((i, _)) => &id[..i],
        None => id,
    }
}

struct ReceiverState {
    secret: Secret,
    tally: Arc<Tally>,
    printer: Printer,
    webhook_requests: AtomicU64,
    chat_requests: AtomicU64,
}

async fn webhook_handler(
    State(st): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let n = bump(&st.webhook_requests, 1);
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let id = h("webhook-id");
    let verdict = webhook::verify(
        &st.secret,
        &id,
        &h("webhook-timestamp"),
        &h("webhook-signature"),
        &body,
        chrono::Utc::now().timestamp(),
        SIGNATURE_TOLERANCE,
    );
    let parsed = serde_json::from_slice::<serde_json::Value>(&body).ok();
    let text_at = |path: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.pointer(path))
            .and_then(|t| t.as_str())
            .unwrap_or("?")
            .to_string()
    };
    let (clinic, event_type) = (text_at("/data/clinic"), text_at("/type"));
    let sig = match &verdict {
        Ok(()) => {
            bump(&st.tally.signatures_ok, 1);
            "signature OK".to_string()
        }
        Err(e) => {
            bump(&st.tally.signatures_failed, 1);
            format!("signature FAILED ({e})")
        }
    };
    let (status, note) = if WEBHOOK_FAILURES.contains(&n) {
        bump(&st.tally.injected_failures, 1);
        (
            StatusCode::SERVICE_UNAVAILABLE,
            " -> answering 503 (injected failure)",
        )
    } else {
        (StatusCode::OK, " -> 200")
    };
    st.printer.line(
        "receiver",
        &format!(
            "webhook #{n} {clinic} {event_type} {} {sig}{note}",
            short(&id)
        ),
    );
    (
        status,
        if status == StatusCode::OK {
            "ok"
        } else {
            "busy"
        },
    )
}

async fn chat_handler(
    State(st): State<Arc<ReceiverState>>,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let n = bump(&st.chat_requests, 1);
    bump(&st.tally.chat_messages, 1);
    // Made-up sandbox data: the demo shows the message's first line (see the module docs).
    let text = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_default();
    let first = text.lines().next().unwrap_or("");
    if n == 1 {
        st.printer.line(
            "slack",
            &format!("message #{n} \"{first}\" -> answering 429, Retry-After: 2 (injected)"),
        );
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "2")],
            "rate_limited",
        )
            .into_response();
    }
    st.printer
        .line("slack", &format!("message #{n} \"{first}\" -> 200"));
    (StatusCode::OK, "ok").into_response()
}

/// The demo's digest: the new leads again, collected into one email a minute (or every 5 leads,
/// early) to the catcher, so a digest shows within the demo's run.
fn digest_destination() -> &'static str {
    r#"  lead-digest:
    type: email
    to: [sales-lead@clinic.example]
    subject: "New lead: {{record.FirstName}} {{record.LastName}}"
    template: new-lead
    digest: { every: 1m, max: 5, subject: "{{count}} new leads" }
"#
}

/// The demo's config: the example rules, pointed at the local parts.
fn demo_config(
    sandbox_url: &str,
    keys: [&str; 2],
    receiver: &str,
    smtp_port: u16,
    secret: &str,
) -> String {
    let [north_key, south_key] = keys;
    let digest = digest_destination();
    let (alert_destinations, alert_rules, alert_section) = alert_demo(receiver, secret);
    let start_from = (chrono::Utc::now()
        - chrono::Duration::from_std(BACKFILL).unwrap_or_else(|_| chrono::Duration::hours(2)))
    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!(
        r#"# Written by `clinicea-notifier demo`: the example rules, pointed at local, made-up parts.
clinicea:                  # what the two clinics share
  base_url: {sandbox_url}
  poll_interval: 2s
  start_from: "{start_from}"
  timezone: UTC
  timeout: 5s
clinics:                   # two organizations of the sandbox, each with its own key and records
  north:
    api_key: {north_key}
  south:
    api_key: {south_key}
    timezone: Asia/Karachi
    resources: [leads, appointments]

resources:
  leads:
    path: /api/v1/leads
  patients:
    path: /api/v1/patients
  appointments:
    path: /api/v3/appointments/getChanges
    since_param: lastSyncDTime
    since_format: "%Y-%m-%dT%H:%M:%S"
    page_param: pageNo
    first_page: 1
    page_size: 100
    page_size_param: pageSize
    status_field: DataStatusValue

store:
  path: ./data
listen: 127.0.0.1:0

smtp:
  host: 127.0.0.1
  port: {smtp_port}
  tls: none
  from: "Clinic Notifier <notifier@clinic.example>"
  timeout: 5s

destinations:
  automations:
    type: webhook
    url: {receiver}/hooks/clinicea
    secret: {secret}
    headers: {{ X-Notifier: demo }}
    timeout: 5s
  front-desk:
    type: email
    to: [frontdesk@clinic.example, manager@clinic.example]
    subject: "New lead: {{{{record.FirstName}}}} {{{{record.LastName}}}}"
    template: new-lead
  reception:
    type: email
    to: [reception@clinic.example]
    subject: "Appointment {{{{default record.AppointmentStatus \"changed\"}}}}: {{{{record.PatientName}}}}"
    template: appointment-change
  sales-chat:
    type: slack
    url: {receiver}/chat/slack
    template: lead-chat
    timeout: 5s
{digest}
{alert_destinations}
rules:
  - name: new-lead-email
    clinic: north
    resource: leads
    on: [added]
    where:
      - {{ field: Email, exists: true }}
      - {{ field: Source, in: [Website, Facebook, Instagram] }}
    notify: [front-desk, sales-chat, lead-digest]
  - name: appointment-cancelled
    resource: appointments
    on: [modified]
    changed: {{ AppointmentStatus: {{ to: Cancelled }} }}
    notify: [automations, reception]
  - name: everything-to-automations
    resource: "*"
    notify: [automations]
{alert_rules}
retry:
  schedule: [1s, 2s, 5s, 10s, 30s]
  jitter: 0.2
{alert_section}"#
    )
}

/// What a failing destination of the demo raises after this long: one alert to the operator's
/// email, caught by the SMTP catcher like every email.
const DEMO_FAILING_FOR: &str = "5s";

/// The demo's operator alert, as three parts of its config: a webhook destination `legacy-crm`
/// that is down (its receiver answers every request with 503, [`legacy_crm_handler`]) and gets
/// the north patients, an `ops` email destination, and the `alerts:` section that tells `ops` once
/// `legacy-crm` has failed for [`DEMO_FAILING_FOR`]: (destinations, rules, alerts).
fn alert_demo(receiver: &str, secret: &str) -> (String, String, String) {
    (
        format!(
            "  legacy-crm:             # down for the whole demo: its failures raise an alert\n    \
             type: webhook\n    url: {receiver}/hooks/legacy\n    secret: {secret}\n    timeout: 5s\n  \
             ops:\n    type: email\n    to: [ops@clinic.example]\n    subject: unused\n    template: new-lead\n"
        ),
        "  - name: patients-to-legacy-crm\n    clinic: north\n    resource: patients\n    notify: [legacy-crm]\n"
            .to_string(),
        format!(
            "\nalerts:                    # for the operator: a destination failing, a stale resource, a revoked key\n  \
             notify: [ops]\n  destination_failing_for: {DEMO_FAILING_FOR}\n"
        ),
    )
}

/// The demo's `legacy-crm` receiver: down, every request answered 503.
async fn legacy_crm_handler() -> (StatusCode, &'static str) {
    (StatusCode::SERVICE_UNAVAILABLE, "down")
}

/// Prints the notifier's events as they come: each change with where it is going, and each
/// delivery's outcome.
async fn print_events(mut sub: Subscription, tally: Arc<Tally>, p: Printer) {
    while let Some(e) = sub.recv().await {
        match e {
            Event::Change(c) => print_change(&c, &tally, p),
            Event::Delivery(d) => print_delivery(d, &tally, p),
        }
    }
}

fn print_change(e: &PollEvent, tally: &Tally, p: Printer) {
    bump(&tally.changes, 1);
    bump(&tally.rules_matched, e.rules.len() as u64);
    let routing = if e.rules.is_empty() {
        "no rule matched".to_string()
    } else {
        format!(
            "rules [{}] -> [{}]",
            e.rules.join(", "),
            e.destinations.join(", ")
        )
    };
    p.line(
        "change",
        &format!(
            "{} {} {} id {}  {routing}",
            e.clinic,
            e.resource,
            e.kind.as_str(),
            short(&e.id)
        ),
    );
}

fn print_delivery(e: Delivery, tally: &Tally, p: Printer) {
    match e {
        Delivery::Delivered {
            destination,
            event_type,
            webhook_id,
            attempt,
            status,
            detail,
        } => {
            bump(&tally.delivered, 1);
            let to = if detail.is_empty() {
                String::new()
            } else {
                format!(" to {detail}")
            };
            let status = status.map_or_else(String::new, |s| format!(", status {s}"));
            p.line(
                "delivered",
                &format!(
                    "{destination}: {event_type} {}{to}, attempt {attempt}{status}",
                    short(&webhook_id)
                ),
            );
        }
        Delivery::Retrying {
            destination,
            webhook_id,
            attempt,
            reason,
            in_ms,
        } => {
            bump(&tally.retries, 1);
            p.line(
                "retry",
                &format!(
                    "{destination}: {} attempt {attempt} failed ({reason}); next try in {:.1}s",
                    short(&webhook_id),
                    in_ms as f64 / 1000.0
                ),
            );
        }
        Delivery::Dead {
            destination,
            webhook_id,
            reason,
        } => {
            bump(&tally.dead, 1);
            p.line(
                "dead",
                &format!(
                    "{destination}: {} moved to the dead letters ({reason})",
                    short(&webhook_id)
                ),
            );
        }
    }
}

/// Prints each email the catcher accepts, until `cancel` fires (then once more for stragglers).
async fn print_emails(
    catcher: Arc<CatcherHandle>,
    tally: Arc<Tally>,
    p: Printer,
    cancel: CancellationToken,
) {
    let mut seen = 0usize;
    loop {
        let stop = cancel.is_cancelled();
        let msgs = catcher.wait_for(seen + 1, Duration::from_millis(300)).await;
        for m in msgs.iter().skip(seen) {
            bump(&tally.emails, 1);
            // Made-up sandbox data: the subject is shown (see the module docs).
            let subject = m.header("Subject").unwrap_or_default();
            let kind = if m
                .header("Content-Type")
                .is_some_and(|c| c.starts_with("multipart/alternative"))
            {
                "text + HTML"
            } else {
                "text"
            };
            p.line(
                "email",
                &format!(
                    "caught \"{subject}\" to {} ({kind}, {})",
                    m.rcpt_to.join(", "),
                    m.header("Message-ID").unwrap_or_default()
                ),
            );
        }
        seen = seen.max(msgs.len());
        if stop {
            break;
        }
    }
}

/// A fresh folder under the system's temporary folder, removed when dropped.
struct TempDir {
    path: std::path::PathBuf,
}

impl TempDir {
    fn create() -> anyhow::Result<TempDir> {
        let name = format!(
            "clinicea-notifier-demo-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `demo`: runs everything locally and prints the live stream; see the module docs.
pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let p = Printer {
        start: Instant::now(),
    };
    let tally = Arc::new(Tally::default());

    // The sandbox: two organizations (clinics), a handful of records each, changing every 2 s.
    let sandbox = Sandbox::start(
        SandboxOptions {
            seed: args.seed,
            clinics: DEMO_CLINICS,
            leads: 5,
            patients: 3,
            appointments: 6,
            churn_every: Some(CHURN_EVERY),
            ..SandboxOptions::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await
    .context("cannot start the sandbox")?;

    // The webhook and chat receiver, with a fresh secret.
    let secret = Secret::generate();
    let whsec = secret.to_whsec();
    let state = Arc::new(ReceiverState {
        secret,
        tally: tally.clone(),
        printer: p,
        webhook_requests: AtomicU64::new(0),
        chat_requests: AtomicU64::new(0),
    });
    let router = axum::Router::new()
        .route("/hooks/clinicea", axum::routing::post(webhook_handler))
        .route("/chat/slack", axum::routing::post(chat_handler))
        .route("/hooks/legacy", axum::routing::post(legacy_crm_handler))
        .with_state(state);
    let rx_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot start the webhook receiver")?;
    let receiver = format!("http://{}", rx_listener.local_addr()?);
    let stop_parts = CancellationToken::new();
    let rx_stop = stop_parts.clone();
    let receiver_task = tokio::spawn(async move {
        axum::serve(rx_listener, router)
            .with_graceful_shutdown(rx_stop.cancelled_owned())
            .await
    });

    // The SMTP catcher: the first transaction is refused with 421.
    let catcher = Arc::new(
        Catcher::start(
            "127.0.0.1:0",
            CatcherOptions {
                tempfail_first: 1,
                ..Default::default()
            },
        )
        .await
        .context("cannot start the SMTP catcher")?,
    );

    // The notifier's config and store, in a temporary folder.
    let dir = TempDir::create()?;
    let config_path = dir.path.join("clinicea-notifier.yaml");
    std::fs::write(
        &config_path,
        demo_config(
            &sandbox.base_url(),
            [sandbox.api_key(1), sandbox.api_key(2)],
            &receiver,
            catcher.addr.port(),
            &whsec,
        ),
    )
    .context("cannot write the demo config")?;
    let vars = HashMap::new();
    let settings = load_settings_with(&config_path, &vars)?;
    let health = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let health_addr = health.local_addr()?;

    p.plain(
        "clinicea-notifier demo: the whole product on this machine, with made-up sandbox data.",
    );
    p.plain(&format!(
        "  Clinicea sandbox      {}  ({DEMO_CLINICS} organizations, the clinics north and south; records change every {}s)",
        sandbox.base_url(),
        CHURN_EVERY.as_secs()
    ));
    p.plain(&format!(
        "  webhook receiver      {receiver}/hooks/clinicea  (verifies every signature; answers 503 to requests {})",
        WEBHOOK_FAILURES.map(|n| format!("#{n}")).join(", ")
    ));
    p.plain(&format!(
        "  Slack-style receiver  {receiver}/chat/slack  (answers its first message with 429)"
    ));
    p.plain(&format!(
        "  SMTP catcher          smtp://{}  (refuses the first transaction with 421)",
        catcher.addr
    ));
    p.plain(&format!(
        "  notifier              config {}, /metrics on http://{health_addr}",
        config_path.display()
    ));
    p.plain(&format!(
        "  rules                 new-lead-email (leads added -> front-desk email, sales-chat, a lead-digest email every minute or 5 leads), appointment-cancelled, everything-to-automations; backfilling {}h",
        BACKFILL.as_secs() / 3600
    ));
    p.plain(&format!(
        "  alerts                legacy-crm (north patients) is down: after {DEMO_FAILING_FOR} of failures one alert email goes to ops@clinic.example"
    ));
    match args.duration {
        Some(d) => p.plain(&format!("Running for {d:?} (Ctrl-C stops earlier).\n")),
        None => p.plain("Running until Ctrl-C.\n"),
    }

    let (events, subscription) = Events::channel();
    let printer = tokio::spawn(print_events(subscription, tally.clone(), p));
    let emails = tokio::spawn(print_emails(
        catcher.clone(),
        tally.clone(),
        p,
        stop_parts.clone(),
    ));

    let cancel = CancellationToken::new();
    let (_reload_tx, reload_rx) = mpsc::unbounded_channel();
    let notifier = tokio::spawn(crate::daemon::run(
        settings,
        config_path.clone(),
        health,
        cancel.clone(),
        reload_rx,
        vars,
        events,
    ));

    let stop_reason = tokio::select! {
        _ = async {
            match args.duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        } => "time is up",
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
    };
    p.plain(&format!("\nStopping ({stop_reason})..."));
    cancel.cancel();
    let run_result = notifier.await;
    // The notifier has stopped, so its event senders are gone: the printer finishes what is queued.
    let _ = printer.await;
    stop_parts.cancel();
    let _ = emails.await;
    let _ = receiver_task.await;
    sandbox.stop().await;
    let queued = match load_settings_with(&config_path, &HashMap::new())
        .ok()
        .and_then(|s| {
            crate::outbox::store::Store::open(&s.base.store.path, s.base.store.cache_bytes).ok()
        }) {
        Some(st) => st.outbox_len().await.ok(),
        None => None,
    };

    let t = &tally;
    p.plain(&format!(
        "\nSummary after {:.1}s:",
        p.start.elapsed().as_secs_f64()
    ));
    let rows: [(&str, String); 11] = [
        ("changes detected", get(&t.changes).to_string()),
        ("rules matched", get(&t.rules_matched).to_string()),
        ("deliveries delivered", get(&t.delivered).to_string()),
        ("retries", get(&t.retries).to_string()),
        ("dead letters", get(&t.dead).to_string()),
        (
            "still queued",
            queued.map_or_else(|| "unknown".into(), |n| n.to_string()),
        ),
        (
            "webhooks received",
            get(&t.signatures_ok)
                .saturating_add(get(&t.signatures_failed))
                .to_string(),
        ),
        ("signatures verified OK", get(&t.signatures_ok).to_string()),
        ("signatures failed", get(&t.signatures_failed).to_string()),
        ("emails caught", get(&t.emails).to_string()),
        ("chat messages", get(&t.chat_messages).to_string()),
    ];
    for (k, v) in rows {
        p.plain(&format!("  {:<24}{v}", format!("{k}:")));
    }
    p.plain(&format!(
        "  (injected failures: {} webhook 503s, one SMTP 421, one chat 429)",
        get(&t.injected_failures)
    ));
    match run_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.context("the notifier stopped with an error")),
        Err(e) => anyhow::bail!("the notifier task failed: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_compiles() {
        let dir = TempDir::create().unwrap();
        let path = dir.path.join("c.yaml");
        let secret = Secret::generate().to_whsec();
        std::fs::write(
            &path,
            demo_config(
                "http://127.0.0.1:1",
                ["k1", "k2"],
                "http://127.0.0.1:2",
                25,
                &secret,
            ),
        )
        .unwrap();
        let s = load_settings_with(&path, &HashMap::new()).unwrap();
        assert_eq!(s.base.resources.len(), 3);
        assert_eq!(s.base.clinic_names(), ["north", "south"]);
        assert_eq!(s.base.clinics[1].resources.len(), 2);
        assert_eq!(s.pipeline.destinations.len(), 7);
        assert!(s.pipeline.destinations["lead-digest"].digest.is_some());
        assert_eq!(s.alerts.as_ref().unwrap().notify, ["ops"]);
        assert!(s.smtp.is_some());
    }

    #[test]
    fn short_ids() {
        assert_eq!(short("abc"), "abc");
        assert_eq!(short("msg_0123456789abcdef"), "msg_01234567");
    }
}
