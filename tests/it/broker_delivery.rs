//! NATS JetStream and RabbitMQ destinations against the real servers over loopback: every change
//! published and acknowledged, read back by a consumer; `Nats-Msg-Id` / `message_id` = the
//! `webhook-id`, and JetStream dropping a re-send of the same id; persistent AMQP messages with
//! publisher confirms; a broker that goes away mid-run (a loopback TCP proxy in front of it, stopped
//! and started again) costs nothing; a subject no stream captures, a missing exchange and a
//! message no queue is bound for are retried, not lost; broker URLs follow the egress rules and no
//! error shows a password.
//!
//! The servers' addresses come from `CLINICEA_TEST_NATS_URL` (`nats://127.0.0.1:4222`) and
//! `CLINICEA_TEST_AMQP_URL` (`amqp://guest:guest@127.0.0.1:5672/%2f`); `.ci/run` sets and checks
//! both. Without one, its tests say that they were skipped and why, and pass. Each test makes its
//! own stream, or exchange and queue, under a unique name and deletes it afterwards.

use crate::support::*;
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The variable naming the NATS server.
const NATS_VAR: &str = "CLINICEA_TEST_NATS_URL";
/// The variable naming the RabbitMQ server.
const AMQP_VAR: &str = "CLINICEA_TEST_AMQP_URL";
/// How long a test waits for its deliveries at most.
const DRAIN: Duration = Duration::from_secs(30);

/// The server address in `var`, or `None` after saying the test is skipped.
fn server(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            eprintln!(
                "{test}: skipped: {var} is not set (no server to test against; .ci/run sets it)"
            );
            None
        }
    }
}

/// A name no other test (or run) uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}{}{}", std::process::id(), rand::random::<u32>())
}

/// A sandbox holding `n` new leads, and their ids.
async fn sandbox_with(
    n: usize,
) -> (
    clinicea_notifier::kit::sandbox::SandboxHandle,
    BTreeSet<String>,
) {
    let sb = empty_sandbox().await;
    let ids = (0..n).map(|_| insert_lead(&sb)).collect();
    (sb, ids)
}

/// Inserts one lead; its id.
fn insert_lead(sb: &clinicea_notifier::kit::sandbox::SandboxHandle) -> String {
    sb.sandbox.insert("leads", test_lead())["ID"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A config polling the sandbox's leads, every lead to each of `destinations` (YAML, as written
/// under `destinations:`), retried every 200 ms up to 100 times.
fn config(base_url: &str, names: &[&str], destinations: &str) -> String {
    format!(
        "{}destinations:\n{destinations}rules:\n  - {{ name: all, resource: leads, notify: [{}] }}\n",
        leads_only(base_url).retry(Retry::every("200ms", 100)).to_yaml(),
        names.join(", ")
    )
}

// ---------------------------------------------------------------------------------------------
// A loopback TCP proxy that can be stopped (every connection cut) and started again
// ---------------------------------------------------------------------------------------------

/// A TCP proxy on a fixed loopback port in front of `upstream`.
struct Proxy {
    port: u16,
    upstream: SocketAddr,
    tasks: Arc<Mutex<Option<JoinSet<()>>>>,
}

impl Proxy {
    /// A proxy for `upstream` on a free port, not listening yet.
    fn new(upstream: SocketAddr) -> Proxy {
        Proxy {
            port: free_port(),
            upstream,
            tasks: Arc::new(Mutex::new(None)),
        }
    }

    /// Listens and forwards until [`Proxy::stop`].
    async fn start(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let upstream = self.upstream;
        let mut set = JoinSet::new();
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let inner = conns.clone();
        set.spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                inner.lock().unwrap().spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        // Dropping the connections' set aborts them: kept alive by a task that waits forever.
        set.spawn(async move {
            let _keep = conns;
            std::future::pending::<()>().await;
        });
        *self.tasks.lock().unwrap() = Some(set);
    }

    /// Stops listening and cuts every connection, as a broker that dies does.
    fn stop(&self) {
        if let Some(mut set) = self.tasks.lock().unwrap().take() {
            set.abort_all();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The first address `url`'s host and port resolve to.
fn socket_of(url: &url::Url, default_port: u16) -> SocketAddr {
    use std::net::ToSocketAddrs;
    (url.host_str().unwrap(), url.port().unwrap_or(default_port))
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap()
}

/// `url` with its host and port replaced by the proxy's.
fn through(url: &url::Url, proxy: &Proxy) -> String {
    let mut u = url.clone();
    u.set_host(Some("127.0.0.1")).unwrap();
    u.set_port(Some(proxy.port)).unwrap();
    u.to_string()
}

// ---------------------------------------------------------------------------------------------
// NATS
// ---------------------------------------------------------------------------------------------

/// A JetStream stream of its own, capturing `PREFIX.>`, deleted by [`TestStream::delete`].
struct TestStream {
    js: async_nats::jetstream::Context,
    name: String,
    prefix: String,
}

impl TestStream {
    async fn create(url: &str) -> TestStream {
        let client = async_nats::connect(url)
            .await
            .expect("the NATS server answers");
        let js = async_nats::jetstream::new(client);
        let name = unique("CLINICEA_TEST_");
        let prefix = unique("clinicea-test-");
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{prefix}.>")],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .expect("the stream is created");
        TestStream { js, name, prefix }
    }

    /// Every message in the stream, read by a consumer of its own and acknowledged.
    async fn read_all(&self) -> Vec<async_nats::jetstream::Message> {
        use async_nats::jetstream::consumer::pull;
        let stream = self.js.get_stream(&self.name).await.unwrap();
        let consumer = stream
            .create_consumer(pull::Config {
                ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut out = Vec::new();
        loop {
            let mut batch = consumer
                .fetch()
                .max_messages(100)
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .unwrap();
            let before = out.len();
            while let Some(m) = batch.next().await {
                let m = m.unwrap();
                m.ack().await.unwrap();
                out.push(m);
            }
            if out.len() == before {
                return out;
            }
        }
    }

    /// How many messages the stream holds.
    async fn count(&self) -> u64 {
        let mut stream = self.js.get_stream(&self.name).await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    async fn delete(self) {
        self.js.delete_stream(&self.name).await.unwrap();
    }
}

/// A NATS destination's YAML, publishing under `prefix`.
fn nats_destination(name: &str, url: &str, prefix: &str) -> String {
    format!(
        "  {name}:\n    type: nats\n    url: {url}\n    subject: \"{prefix}.{{{{clinic}}}}.{{{{resource}}}}.{{{{change}}}}\"\n    timeout: 2s\n"
    )
}

/// A header of a NATS message, or empty.
fn nats_header(m: &async_nats::jetstream::Message, name: &str) -> String {
    // Parsed, so a well-known name (`Nats-Msg-Id`) is looked up as the client stores it.
    let name: async_nats::header::HeaderName = name.parse().unwrap();
    m.headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_string())
        .unwrap_or_default()
}

/// The record ids in the bodies of `bodies`.
fn data_ids<'a>(bodies: impl IntoIterator<Item = &'a [u8]>) -> BTreeSet<String> {
    bodies
        .into_iter()
        .map(|b| {
            let v: Value = serde_json::from_slice(b).expect("the body is JSON");
            v["data"]["id"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test]
async fn nats_publishes_every_change_acked_with_the_webhook_id_as_msg_id() {
    let Some(url) = server(NATS_VAR, "nats_publishes_every_change") else {
        return;
    };
    let stream = TestStream::create(&url).await;
    let (sb, ids) = sandbox_with(5).await;
    let t = TestDir::new(&config(
        &sb.base_url(),
        &["bus"],
        &nats_destination("bus", &url, &stream.prefix),
    ));
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();
    let ids_queued: HashSet<String> = queued(&engine, "bus")
        .await
        .into_iter()
        .map(|e| e.webhook_id)
        .collect();
    drain_outbox(&engine, DRAIN).await;
    assert_eq!(
        engine.store.outbox_len().await.unwrap(),
        0,
        "every publish was acknowledged"
    );
    assert!(dead_list(&engine).await.is_empty());

    let got = stream.read_all().await;
    assert_eq!(got.len(), 5, "a consumer reads every change");
    let subject = format!("{}.default.leads.added", stream.prefix);
    assert!(got.iter().all(|m| m.subject.as_str() == subject));
    let msg_ids: HashSet<String> = got.iter().map(|m| nats_header(m, "Nats-Msg-Id")).collect();
    assert_eq!(
        msg_ids, ids_queued,
        "Nats-Msg-Id is each change's webhook-id"
    );
    assert!(got
        .iter()
        .all(|m| nats_header(m, "webhook-id") == nats_header(m, "Nats-Msg-Id")));
    assert!(got
        .iter()
        .all(|m| nats_header(m, "content-type") == "application/json"));
    assert_eq!(data_ids(got.iter().map(|m| m.payload.as_ref())), ids);
    let body: Value = serde_json::from_slice(&got[0].payload).unwrap();
    assert_eq!(body["type"], "leads.added", "the body is the webhook body");
    stream.delete().await;
}

#[tokio::test]
async fn nats_carries_the_webhook_body_shaped_as_the_destination_says() {
    let Some(url) = server(NATS_VAR, "nats_carries_the_webhook_body_shaped") else {
        return;
    };
    let stream = TestStream::create(&url).await;
    let (sb, ids) = sandbox_with(2).await;
    let t = TestDir::new(&config(
        &sb.base_url(),
        &["bus"],
        &format!(
            "{}    fields: [ID, FirstName]\n    include_previous: false\n",
            // By name: the connection goes to the address the egress rules checked.
            nats_destination(
                "bus",
                &url.replace("127.0.0.1", "localhost"),
                &stream.prefix
            )
        ),
    ));
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();
    drain_outbox(&engine, DRAIN).await;
    let got = stream.read_all().await;
    assert_eq!(data_ids(got.iter().map(|m| m.payload.as_ref())), ids);
    for m in &got {
        let body: Value = serde_json::from_slice(&m.payload).unwrap();
        let record: BTreeSet<&str> = body["data"]["record"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(record, BTreeSet::from(["ID", "FirstName"]));
        assert!(body["data"].get("previous").is_none(), "{body}");
        assert!(!String::from_utf8_lossy(&m.payload).contains("whitening"));
    }
    stream.delete().await;
}

#[tokio::test]
async fn nats_drops_a_re_send_with_the_same_msg_id() {
    let Some(url) = server(NATS_VAR, "nats_drops_a_re_send") else {
        return;
    };
    let stream = TestStream::create(&url).await;
    let (sb, _ids) = sandbox_with(3).await;
    // Two destinations publishing each change to the same subject: the second publish of a change
    // carries the same webhook-id, as a retry after a lost ack does.
    let t = TestDir::new(&config(
        &sb.base_url(),
        &["bus", "again"],
        &format!(
            "{}{}",
            nats_destination("bus", &url, &stream.prefix),
            nats_destination("again", &url, &stream.prefix)
        ),
    ));
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();
    assert_eq!(engine.store.outbox_len().await.unwrap(), 6);
    drain_outbox(&engine, DRAIN).await;
    assert_eq!(
        engine.store.outbox_len().await.unwrap(),
        0,
        "a duplicate's ack is a success"
    );
    assert!(dead_list(&engine).await.is_empty());
    assert_eq!(stream.count().await, 3, "JetStream kept one of each id");
    stream.delete().await;
}

#[tokio::test]
async fn nats_down_then_back_mid_run_loses_nothing_and_stores_nothing_twice() {
    let Some(url) = server(NATS_VAR, "nats_down_then_back") else {
        return;
    };
    let stream = TestStream::create(&url).await;
    let proxy = Proxy::new(socket_of(&url::Url::parse(&url).unwrap(), 4222));
    let (sb, mut ids) = sandbox_with(3).await;
    let via = through(&url::Url::parse(&url).unwrap(), &proxy);
    let t = TestDir::new(&config(
        &sb.base_url(),
        &["bus"],
        &nats_destination("bus", &via, &stream.prefix),
    ));
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();

    // Down from the start: every attempt is a retry, nothing is dead.
    let out = engine.deliverer.deliver_all_due().await.unwrap();
    assert_eq!((out.attempted, out.delivered), (3, 0));
    assert_eq!(engine.store.outbox_len().await.unwrap(), 3);
    assert!(dead_list(&engine).await.is_empty());

    proxy.start().await;
    drain_outbox(&engine, DRAIN).await;
    assert_eq!(engine.store.outbox_len().await.unwrap(), 0);

    // Stopped mid-run, with a connection open: new changes wait, then go.
    proxy.stop();
    ids.insert(insert_lead(&sb));
    ids.insert(insert_lead(&sb));
    poll_report(&engine).await.unwrap();
    let out = engine.deliverer.deliver_all_due().await.unwrap();
    assert_eq!(
        out.delivered, 0,
        "nothing is acknowledged while the broker is away"
    );
    assert_eq!(engine.store.outbox_len().await.unwrap(), 2);
    proxy.start().await;
    drain_outbox(&engine, DRAIN).await;
    assert_eq!(
        engine.store.outbox_len().await.unwrap(),
        0,
        "delivered once the broker is back"
    );
    assert!(dead_list(&engine).await.is_empty());

    let got = stream.read_all().await;
    assert_eq!(got.len(), 5, "nothing lost, nothing stored twice");
    assert_eq!(data_ids(got.iter().map(|m| m.payload.as_ref())), ids);
    stream.delete().await;
}

#[tokio::test]
async fn nats_a_subject_no_stream_captures_is_retried_until_one_does() {
    let Some(url) = server(NATS_VAR, "nats_a_subject_no_stream_captures") else {
        return;
    };
    let prefix = unique("clinicea-test-nostream-");
    let (sb, ids) = sandbox_with(2).await;
    let t = TestDir::new(&config(
        &sb.base_url(),
        &["bus"],
        &nats_destination("bus", &url, &prefix),
    ));
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();
    let out = engine.deliverer.deliver_all_due().await.unwrap();
    assert_eq!((out.attempted, out.delivered), (2, 0), "no stream: retried");
    assert!(dead_list(&engine).await.is_empty());
    // The stream appears (the operator creates it): the same entries go.
    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let name = unique("CLINICEA_TEST_");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    let stream = TestStream { js, name, prefix };
    drain_outbox(&engine, DRAIN).await;
    assert_eq!(engine.store.outbox_len().await.unwrap(), 0);
    let got = stream.read_all().await;
    assert_eq!(data_ids(got.iter().map(|m| m.payload.as_ref())), ids);
    stream.delete().await;
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ
// ---------------------------------------------------------------------------------------------

/// An exchange and a queue of their own, deleted by [`TestQueue::delete`].
struct TestQueue {
    channel: lapin::Channel,
    exchange: String,
    queue: String,
}

impl TestQueue {
    /// A topic exchange; with `bind`, a durable queue bound to it for `leads.*`.
    async fn create(url: &str, bind: bool) -> TestQueue {
        use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
        use lapin::types::FieldTable;
        let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
            .await
            .expect("the AMQP broker answers");
        let channel = conn.create_channel().await.unwrap();
        // The connection lives as long as its channel is used; leak it for the test's length.
        std::mem::forget(conn);
        let exchange = unique("clinicea-test-x-");
        let queue = unique("clinicea-test-q-");
        channel
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
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
        let q = TestQueue {
            channel,
            exchange,
            queue,
        };
        if bind {
            q.bind().await;
        }
        q
    }

    async fn bind(&self) {
        self.channel
            .queue_bind(
                self.queue.as_str().into(),
                self.exchange.as_str().into(),
                "leads.*".into(),
                lapin::options::QueueBindOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap();
    }

    /// Every message in the queue, read and acknowledged.
    async fn read_all(&self) -> Vec<lapin::message::Delivery> {
        use lapin::options::{BasicAckOptions, BasicGetOptions};
        let mut out = Vec::new();
        while let Some(m) = self
            .channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            m.delivery.ack(BasicAckOptions::default()).await.unwrap();
            out.push(m.delivery);
        }
        out
    }

    async fn delete(self) {
        self.channel
            .queue_delete(self.queue.as_str().into(), Default::default())
            .await
            .unwrap();
        self.channel
            .exchange_delete(self.exchange.as_str().into(), Default::default())
            .await
            .unwrap();
    }
}

/// An AMQP destination's YAML.
fn amqp_destination(name: &str, url: &str, exchange: &str) -> String {
    format!(
        "  {name}:\n    type: amqp\n    url: \"{url}\"\n    exchange: {exchange}\n    routing_key: \"{{{{resource}}}}.{{{{change}}}}\"\n    timeout: 2s\n"
    )
}

#[tokio::test]
async fn amqp_publishes_persistent_confirmed_messages_with_the_webhook_id() {
    let Some(url) = server(AMQP_VAR, "amqp_publishes_persistent_confirmed_messages") else {
        return;
    };
    let q = TestQueue::create(&url, true).await;
    let (sb, ids) = sandbox_with(5).await;
    let t = TestDir::new(&config(
        &sb.base_url(),
        &["queue"],
        &amqp_destination("queue", &url, &q.exchange),
    ));
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();
    let ids_queued: HashSet<String> = queued(&engine, "queue")
        .await
        .into_iter()
        .map(|e| e.webhook_id)
        .collect();
    drain_outbox(&engine, DRAIN).await;
    assert_eq!(
        engine.store.outbox_len().await.unwrap(),
        0,
        "every publish was confirmed"
    );
    assert!(dead_list(&engine).await.is_empty());

    let got = q.read_all().await;
    assert_eq!(got.len(), 5, "a consumer reads every change");
    assert!(got.iter().all(|m| m.routing_key.as_str() == "leads.added"));
    assert!(
        got.iter().all(|m| m.properties.delivery_mode() == &Some(2)),
        "persistent"
    );
    assert!(got.iter().all(|m| m
        .properties
        .content_type()
        .as_ref()
        .is_some_and(|c| c.as_str() == "application/json")));
    let msg_ids: HashSet<String> = got
        .iter()
        .filter_map(|m| m.properties.message_id().as_ref().map(|s| s.to_string()))
        .collect();
    assert_eq!(
        msg_ids, ids_queued,
        "message_id is each change's webhook-id"
    );
    assert_eq!(data_ids(got.iter().map(|m| m.data.as_slice())), ids);
    q.delete().await;
}

#[tokio::test]
async fn amqp_down_then_back_mid_run_loses_nothing() {
    let Some(url) = server(AMQP_VAR, "amqp_down_then_back") else {
        return;
    };
    let q = TestQueue::create(&url, true).await;
    let parsed = url::Url::parse(&url).unwrap();
    let proxy = Proxy::new(socket_of(&parsed, 5672));
    let (sb, mut ids) = sandbox_with(3).await;
    let t = TestDir::new(&config(
        &sb.base_url(),
        &["queue"],
        &amqp_destination("queue", &through(&parsed, &proxy), &q.exchange),
    ));
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();
    let out = engine.deliverer.deliver_all_due().await.unwrap();
    assert_eq!((out.attempted, out.delivered), (3, 0), "down: retried");
    assert!(dead_list(&engine).await.is_empty());

    proxy.start().await;
    drain_outbox(&engine, DRAIN).await;
    assert_eq!(engine.store.outbox_len().await.unwrap(), 0);

    proxy.stop();
    ids.insert(insert_lead(&sb));
    ids.insert(insert_lead(&sb));
    poll_report(&engine).await.unwrap();
    let out = engine.deliverer.deliver_all_due().await.unwrap();
    assert_eq!(
        out.delivered, 0,
        "nothing is confirmed while the broker is away"
    );
    proxy.start().await;
    drain_outbox(&engine, DRAIN).await;
    assert_eq!(
        engine.store.outbox_len().await.unwrap(),
        0,
        "delivered once the broker is back"
    );
    assert!(dead_list(&engine).await.is_empty());

    let got = q.read_all().await;
    assert_eq!(
        data_ids(got.iter().map(|m| m.data.as_slice())),
        ids,
        "nothing lost"
    );
    q.delete().await;
}

#[tokio::test]
async fn amqp_a_message_no_queue_is_bound_for_is_retried_until_one_is() {
    let Some(url) = server(AMQP_VAR, "amqp_a_message_no_queue_is_bound_for") else {
        return;
    };
    let q = TestQueue::create(&url, false).await;
    let (sb, ids) = sandbox_with(2).await;
    let t = TestDir::new(&config(
        &sb.base_url(),
        &["queue"],
        &amqp_destination("queue", &url, &q.exchange),
    ));
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();
    let out = engine.deliverer.deliver_all_due().await.unwrap();
    assert_eq!(
        (out.attempted, out.delivered),
        (2, 0),
        "returned as unroutable: retried"
    );
    let logs = attempt_logs(&engine, queued(&engine, "queue").await[0].seq).await;
    assert!(
        format!("{:?}", logs[0].verdict).contains("no queue is bound"),
        "{:?}",
        logs[0].verdict
    );
    q.bind().await;
    drain_outbox(&engine, DRAIN).await;
    assert_eq!(engine.store.outbox_len().await.unwrap(), 0);
    let got = q.read_all().await;
    assert_eq!(data_ids(got.iter().map(|m| m.data.as_slice())), ids);
    q.delete().await;
}

#[tokio::test]
async fn amqp_a_missing_exchange_is_retried_until_it_exists() {
    let Some(url) = server(AMQP_VAR, "amqp_a_missing_exchange_is_retried") else {
        return;
    };
    // The queue's exchange is declared only after the first attempts.
    let q = TestQueue::create(&url, false).await;
    let missing = unique("clinicea-test-missing-");
    let (sb, ids) = sandbox_with(2).await;
    let t = TestDir::new(&config(
        &sb.base_url(),
        &["queue"],
        &amqp_destination("queue", &url, &missing),
    ));
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();
    let out = engine.deliverer.deliver_all_due().await.unwrap();
    assert_eq!(
        (out.attempted, out.delivered),
        (2, 0),
        "no exchange: retried"
    );
    assert!(dead_list(&engine).await.is_empty());
    q.channel
        .exchange_declare(
            missing.as_str().into(),
            lapin::ExchangeKind::Topic,
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    q.channel
        .queue_bind(
            q.queue.as_str().into(),
            missing.as_str().into(),
            "leads.*".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    drain_outbox(&engine, DRAIN).await;
    assert_eq!(engine.store.outbox_len().await.unwrap(), 0);
    let got = q.read_all().await;
    assert_eq!(data_ids(got.iter().map(|m| m.data.as_slice())), ids);
    q.channel
        .exchange_delete(missing.as_str().into(), Default::default())
        .await
        .unwrap();
    q.delete().await;
}

// ---------------------------------------------------------------------------------------------
// Config and privacy (no server needed, except the AMQP half of the last test)
// ---------------------------------------------------------------------------------------------

/// The problems of a config with this one destination (YAML under `destinations:`), each as
/// `key: message`; empty when it loads.
fn problems_of(destination: &str) -> Vec<String> {
    let t = TestDir::new(&config("http://127.0.0.1:9", &["d"], destination));
    match clinicea_notifier::daemon::settings::load_settings_with(&t.config, &t.vars) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect(),
    }
}

#[test]
fn broker_urls_follow_the_egress_rules_and_never_echo_credentials() {
    let nats = |url: &str, extra: &str| {
        problems_of(&format!(
            "  d:\n    type: nats\n    url: \"{url}\"\n    subject: \"a.{{{{resource}}}}\"\n{extra}"
        ))
    };
    let amqp = |url: &str, extra: &str| {
        problems_of(&format!(
            "  d:\n    type: amqp\n    url: \"{url}\"\n    exchange: x\n    routing_key: \"{{{{resource}}}}\"\n{extra}"
        ))
    };
    assert!(nats("nats://127.0.0.1:4222", "").is_empty());
    assert!(amqp("amqp://guest:guest@localhost:5672/%2f", "").is_empty());
    assert!(nats("tls://nats.example.com:4222", "").is_empty());

    let metadata = nats("nats://alice:SECRETPW@169.254.169.254:4222", "");
    assert!(
        metadata.len() == 1 && metadata[0].contains("never connects there"),
        "{metadata:?}"
    );
    let private = amqp("amqps://guest:SECRETPW@10.1.2.3:5671/%2f", "");
    assert!(
        private.len() == 1 && private[0].contains("destinations.d.allow_private"),
        "{private:?}"
    );
    assert!(amqp(
        "amqps://guest:SECRETPW@10.1.2.3/%2f",
        "    allow_private: true\n"
    )
    .is_empty());
    let clear = amqp("amqp://guest:SECRETPW@mq.example.com/%2f", "");
    assert!(
        clear.len() == 1 && clear[0].contains("allow_cleartext"),
        "{clear:?}"
    );
    let clear = nats("nats://nats.example.com:4222", "");
    assert!(clear.len() == 1 && clear[0].contains("tls://"), "{clear:?}");
    let scheme = nats("http://127.0.0.1:4222", "");
    assert!(
        scheme.len() == 1 && scheme[0].contains("unsupported URL scheme"),
        "{scheme:?}"
    );
    for p in metadata.iter().chain(&private).chain(&clear) {
        assert!(!p.contains("SECRETPW"), "{p}");
    }

    let both = nats(
        "nats://127.0.0.1:4222",
        "    creds_file: x.creds\n    user: a\n    password: b\n",
    );
    assert!(both.iter().any(|p| p.contains("not both")), "{both:?}");
    let half = nats("nats://127.0.0.1:4222", "    user: a\n");
    assert!(half.iter().any(|p| p.contains("go together")), "{half:?}");
    let shape = nats(
        "nats://127.0.0.1:4222",
        "    fields: [ID]\n    exclude_fields: [Notes]\n",
    );
    assert!(
        shape.iter().any(|p| p.contains("fields or exclude_fields")),
        "{shape:?}"
    );
    let subject = problems_of(
        "  d:\n    type: nats\n    url: nats://127.0.0.1:4222\n    subject: \"a.{{record.Notes}}\"\n",
    );
    assert!(
        subject
            .iter()
            .any(|p| p.contains("destinations.d.subject") && p.contains("whitespace")),
        "a subject that renders with spaces on the sample is refused: {subject:?}"
    );
    let hidden = problems_of(
        "  d:\n    type: nats\n    url: nats://127.0.0.1:4222\n    subject: \"a.{{record.FirstName}}\"\n    fields: [ID]\n",
    );
    assert!(
        hidden
            .iter()
            .any(|p| p.contains("destinations.d.subject") && p.contains("record.FirstName")),
        "a subject sees only the fields the body carries: {hidden:?}"
    );
}

#[tokio::test]
async fn a_broker_error_never_shows_the_password() {
    let (sb, _) = sandbox_with(1).await;
    let closed = free_port();
    let t = TestDir::new(&config(
        &sb.base_url(),
        &["bus"],
        &format!(
            "  bus:\n    type: nats\n    url: nats://alice:SECRETPW@127.0.0.1:{closed}\n    subject: a.b\n    timeout: 2s\n"
        ),
    ));
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();
    let out = engine.deliverer.deliver_all_due().await.unwrap();
    assert_eq!(out.delivered, 0);
    let entry = &queued(&engine, "bus").await[0];
    let reason = format!("{:?}", attempt_logs(&engine, entry.seq).await[0].verdict);
    assert!(reason.contains("connection failed"), "{reason}");
    assert!(!reason.contains("SECRETPW"), "{reason}");

    let Some(url) = server(
        AMQP_VAR,
        "a_broker_error_never_shows_the_password (AMQP part)",
    ) else {
        return;
    };
    let mut wrong = url::Url::parse(&url).unwrap();
    wrong.set_password(Some("WRONG-SECRETPW")).unwrap();
    let t = TestDir::new(&config(
        &sb.base_url(),
        &["queue"],
        &amqp_destination("queue", wrong.as_str(), "amq.topic"),
    ));
    let engine = t.engine().await;
    poll_report(&engine).await.unwrap();
    let out = engine.deliverer.deliver_all_due().await.unwrap();
    assert_eq!(out.delivered, 0, "a refused login is retried");
    let entry = &queued(&engine, "queue").await[0];
    let reason = format!("{:?}", attempt_logs(&engine, entry.seq).await[0].verdict);
    assert!(reason.contains("Retry"), "{reason}");
    assert!(!reason.contains("SECRETPW"), "{reason}");
}
