//! Delivery throughput per destination type (webhook, NATS JetStream, RabbitMQ), each beside a
//! ceiling measured in the same run against the same server:
//!
//! * webhook: signed POSTs from the on-disk outbox by the real worker to a local keep-alive
//!   receiver; ceiling: the same body POSTed by a plain reqwest loop at the same concurrency.
//! * nats: JetStream publishes, each waiting for the stream's ack, from the outbox by the real
//!   worker; ceiling: async-nats publishing the same body and awaiting each ack at the same
//!   concurrency.
//! * amqp: persistent, mandatory publishes on a confirm channel, each waiting for its confirm, from
//!   the outbox by the real worker; ceiling: lapin doing the same at the same concurrency.
//!
//! The outbox is filled the way a poll fills it: the sandbox holds `BENCH_DESTINATION_ENTRIES`
//! (default 5000) new leads, one poll queues one real `leads.added` delivery per lead. The brokers
//! come from `CLINICEA_TEST_NATS_URL` and `CLINICEA_TEST_AMQP_URL` (a row is skipped, saying so,
//! when its variable is unset); each run makes its own stream, or exchange and queue, and deletes
//! it. `BENCH_CONCURRENCY` (default 8, the brokers' default) sets every destination's concurrency.
//! Run with `bench/destinations.sh`. Loopback only; every loop is bounded.

mod common;
use axum::body::Bytes;
use clinicea_notifier::deliver::Event;
use clinicea_notifier::kit::sandbox::{Sandbox, SandboxHandle, SandboxOptions};
use clinicea_notifier::route::plan::Payload;
use common::{engine_in, env_or, spawn_worker, API_KEY, SECRET};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The longest a worker may take to deliver its outbox before the run is called failed.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(300);

/// A name no other run uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}{}{}", std::process::id(), rand::random::<u32>())
}

/// A minimal keep-alive webhook receiver answering 200 "ok".
async fn receiver() -> String {
    let app = axum::Router::new().fallback(|_body: Bytes| async { "ok" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

async fn sandbox(leads: usize) -> SandboxHandle {
    Sandbox::start(
        SandboxOptions {
            leads,
            patients: 0,
            appointments: 0,
            ..SandboxOptions::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("sandbox starts")
}

/// The sandbox's leads (backfilled, no baseline), every lead to the destination `dest` written as
/// `destination` (its YAML keys under the name).
fn config(base_url: &str, destination: &str) -> String {
    format!(
        "clinicea:\n  base_url: {base_url}\n  api_key: {API_KEY}\n  start_from: \"{}\"\n  poll_interval: 1s\n  timeout: 30s\n  baseline: {{ enabled: false }}\n\
resources:\n  leads:\n    path: /api/v1/leads\n\
store:\n  path: ./data\n  cache_mb: 64\n\
destinations:\n  dest:\n{destination}\
rules:\n  - name: all-leads\n    resource: leads\n    notify: [dest]\n",
        (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339()
    )
}

/// One poll fills the outbox; then the real worker delivers it. Returns (entries, deliveries/s,
/// the body of one entry, for the ceiling).
async fn through_worker(base_url: &str, destination: &str) -> (u64, f64, Bytes) {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path(), &config(base_url, destination)).await;
    let report = engine
        .poll_all()
        .await
        .remove(0)
        .result
        .expect("poll succeeds");
    let n = report.deliveries;
    let (_, first) = engine
        .store
        .outbox_entries("dest")
        .await
        .unwrap()
        .into_iter()
        .next()
        .expect("a queued delivery");
    let body = match first.payload {
        Payload::Webhook { body } | Payload::Publish { body, .. } => Bytes::from(body),
        other => panic!("unexpected payload {other:?}"),
    };
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let t = Instant::now();
    let (worker, _wake_tx, cancel) = spawn_worker(&engine, "dest", Some(ev_tx)).await;
    let mut delivered = 0u64;
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    let mut batch = Vec::with_capacity(4096);
    while delivered < n && Instant::now() < deadline {
        batch.clear();
        match tokio::time::timeout(Duration::from_secs(10), ev_rx.recv_many(&mut batch, 4096)).await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                for e in batch.drain(..) {
                    match e {
                        Event::Delivered { .. } => delivered += 1,
                        other => panic!("unexpected delivery event: {other:?}"),
                    }
                }
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    cancel.cancel();
    let _ = worker.await;
    assert_eq!(delivered, n, "every queued entry is delivered");
    (n, n as f64 / secs, body)
}

/// `concurrency` tasks sharing `n` steps of `step`; steps per second.
async fn ceiling<F, Fut>(n: u64, concurrency: usize, step: F) -> f64
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let next = next.clone();
        let step = step.clone();
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                step(i).await;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("a ceiling task succeeds");
    }
    n as f64 / t.elapsed().as_secs_f64()
}

async fn webhook(base_url: &str, concurrency: usize) -> (String, u64, f64, f64) {
    let url = receiver().await;
    let (n, rate, body) = through_worker(
        base_url,
        &format!(
            "    type: webhook\n    url: {url}\n    secret: {SECRET}\n    concurrency: {concurrency}\n"
        ),
    )
    .await;
    let client = reqwest::Client::new();
    let ceil = ceiling(n, concurrency, move |_| {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        async move {
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            let _ = r.bytes().await;
        }
    })
    .await;
    ("webhook (signed POST, 200)".into(), n, rate, ceil)
}

async fn nats(base_url: &str, url: &str, concurrency: usize) -> (String, u64, f64, f64) {
    let client = async_nats::connect(url).await.expect("NATS answers");
    let js = async_nats::jetstream::new(client);
    let name = unique("CLINICEA_BENCH_");
    let prefix = unique("clinicea-bench-");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    })
    .await
    .expect("stream created");
    let (n, rate, body) = through_worker(
        base_url,
        &format!(
            "    type: nats\n    url: {url}\n    subject: \"{prefix}.{{{{resource}}}}.{{{{change}}}}\"\n    concurrency: {concurrency}\n"
        ),
    )
    .await;
    let subject = format!("{prefix}.ceiling");
    let js2 = js.clone();
    let ceil = ceiling(n, concurrency, move |i| {
        let (js, subject, body) = (js2.clone(), subject.clone(), body.clone());
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("ceiling_{i}").as_str());
            js.publish_with_headers(subject, headers, body)
                .await
                .unwrap()
                .await
                .unwrap();
        }
    })
    .await;
    let mut stream = js.get_stream(&name).await.unwrap();
    let stored = stream.info().await.unwrap().state.messages;
    assert_eq!(stored, 2 * n, "every publish stored once");
    js.delete_stream(&name).await.unwrap();
    ("nats (JetStream publish + ack)".into(), n, rate, ceil)
}

async fn amqp(base_url: &str, url: &str, concurrency: usize) -> (String, u64, f64, f64) {
    use lapin::options::{
        BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions,
    };
    use lapin::types::FieldTable;
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .expect("RabbitMQ answers");
    let admin = conn.create_channel().await.unwrap();
    let exchange = unique("clinicea-bench-x-");
    let queue = unique("clinicea-bench-q-");
    admin
        .exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    admin
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    admin
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "#".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (n, rate, body) = through_worker(
        base_url,
        &format!(
            "    type: amqp\n    url: \"{url}\"\n    exchange: {exchange}\n    routing_key: \"{{{{resource}}}}.{{{{change}}}}\"\n    concurrency: {concurrency}\n"
        ),
    )
    .await;
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let ex = exchange.clone();
    let ceil = ceiling(n, concurrency, move |i| {
        let (channel, ex, body) = (channel.clone(), ex.clone(), body.clone());
        async move {
            let props = lapin::BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(format!("ceiling_{i}").into())
                .with_content_type("application/json".into());
            let confirm = channel
                .basic_publish(
                    ex.as_str().into(),
                    "leads.ceiling".into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body,
                    props,
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(matches!(confirm, lapin::Confirmation::Ack(None)));
        }
    })
    .await;
    let stored = admin
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    assert_eq!(u64::from(stored), 2 * n, "every publish queued once");
    admin
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await
        .unwrap();
    ("amqp (persistent publish + confirm)".into(), n, rate, ceil)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let entries = env_or::<usize>("BENCH_DESTINATION_ENTRIES", 5000);
    let concurrency = env_or::<usize>("BENCH_CONCURRENCY", 8);
    let rows = rt.block_on(async {
        let sb = sandbox(entries).await;
        let base = sb.base_url();
        let mut rows = vec![webhook(&base, concurrency).await];
        match std::env::var("CLINICEA_TEST_NATS_URL") {
            Ok(url) if !url.is_empty() => rows.push(nats(&base, &url, concurrency).await),
            _ => eprintln!("nats: skipped: CLINICEA_TEST_NATS_URL is not set"),
        }
        match std::env::var("CLINICEA_TEST_AMQP_URL") {
            Ok(url) if !url.is_empty() => rows.push(amqp(&base, &url, concurrency).await),
            _ => eprintln!("amqp: skipped: CLINICEA_TEST_AMQP_URL is not set"),
        }
        rows
    });
    println!();
    println!(
        "| {:<38} | {:>7} | {:>11} | {:>12} | {:>5} |",
        "destination (concurrency {concurrency})"
            .replace("{concurrency}", &concurrency.to_string()),
        "entries",
        "deliv/s",
        "ceiling/s",
        "ratio"
    );
    println!(
        "|{:-<40}|{:-<9}|{:-<13}|{:-<14}|{:-<7}|",
        "", "", "", "", ""
    );
    for (name, n, rate, ceil) in rows {
        println!(
            "| {name:<38} | {n:>7} | {rate:>11.1} | {ceil:>12.1} | {:>5.2} |",
            rate / ceil
        );
    }
}
