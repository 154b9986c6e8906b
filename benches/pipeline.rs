//! End-to-end performance of the notifier on this machine (issues 4 and 7), each figure beside a
//! ceiling measured in the same run on the same loopback servers:
//!
//! * A. delivery: signed deliveries/s from the on-disk outbox to a local keep-alive receiver, and
//!   enqueue-to-delivered latency; ceiling: a plain reqwest loop at the same concurrency.
//! * B. ingest: records/s through poll -> diff -> rules -> outbox from the sandbox holding 100,000
//!   changed leads; ceiling: the same pages fetched, parsed and written to sled by a bare loop.
//! * C. memory: peak RSS of a child process ingesting 1,000,000 records; RSS and CPU of an idle
//!   `clinicea-notifier run` polling three resources every second.
//! * D. API requests per poll when nothing changed.
//! * P. ingest and delivery (A and B at a smaller size, `BENCH_STORE_RECORDS`, default 20,000) on
//!   sled and then on PostgreSQL (a scratch database on `BENCH_POSTGRES_URL`, else
//!   `CLINICEA_TEST_POSTGRES_URL`, else the local server), each PostgreSQL figure beside sled's.
//!
//! Run with `bench/run.sh` (it builds the release binary that C needs first). `BENCH_ONLY=A,B`
//! picks parts; `BENCH_CONCURRENCY` (default 16), `BENCH_DELIVERIES` (default 100000),
//! `BENCH_BIG` (default 1000000), `BENCH_IDLE_SECS` (default 30) size them. Loopback only; every
//! loop is bounded.

mod common;
use axum::body::Bytes;
use clinicea_notifier::daemon::engine::Engine;
use clinicea_notifier::deliver::Event;
use clinicea_notifier::ingest::poll;
use clinicea_notifier::kit::sandbox::{Sandbox, SandboxHandle, SandboxOptions};
use clinicea_notifier::outbox::entry::OutboxEntry;
use clinicea_notifier::outbox::scratch::{ScratchDatabase, SERVER_VAR};
use clinicea_notifier::outbox::store::PageWrite;
use clinicea_notifier::route::plan::Payload;
use common::{
    engine_in, env_or, notifier_binary, print_table, row, spawn_worker, Row, API_KEY, SECRET,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The product's allocator and its options (see `src/main.rs`), so part C's in-process ingest
/// measures what the binary would.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8; 46] = clinicea_notifier::runtime::JEMALLOC_OPTIONS;

/// Entries per second offered in part P's latency phase: below what either store delivers.
const P_PACE: u64 = 1_000;

// --- loopback servers -------------------------------------------------------------------------

/// A minimal keep-alive webhook receiver answering 200 "ok"; counts requests.
async fn receiver() -> (String, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let app = axum::Router::new().fallback(move |_body: Bytes| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::Relaxed);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), count)
}

async fn sandbox(leads: usize, patients: usize, appointments: usize) -> SandboxHandle {
    Sandbox::start(
        SandboxOptions {
            leads,
            patients,
            appointments,
            ..SandboxOptions::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("sandbox starts")
}

fn requests(sb: &SandboxHandle) -> HashMap<String, u64> {
    sb.sandbox.stats().requests.into_iter().collect()
}

fn delta(after: &HashMap<String, u64>, before: &HashMap<String, u64>, k: &str) -> u64 {
    after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0)
}

// --- configs ----------------------------------------------------------------------------------

fn hours_ago(h: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::hours(h)).to_rfc3339()
}

/// Leads only, every change to one webhook destination. Without the silent baseline: the ingest
/// figures are for the poll that detects and queues every lead (bench/page_memory.sh runs both).
fn leads_config(base_url: &str, hook_url: &str, concurrency: usize, cache_mb: u64) -> String {
    leads_config_on(
        base_url,
        hook_url,
        concurrency,
        &format!("store:\n  path: ./data\n  cache_mb: {cache_mb}\n"),
    )
}

/// As [`leads_config`], with the `store:` section given (sled or PostgreSQL).
fn leads_config_on(base_url: &str, hook_url: &str, concurrency: usize, store: &str) -> String {
    format!(
        "clinicea:\n  base_url: {base_url}\n  api_key: {API_KEY}\n  start_from: \"{}\"\n  poll_interval: 1s\n  timeout: 30s\n  baseline: {{ enabled: false }}\n\
resources:\n  leads:\n    path: /api/v1/leads\n\
{store}\
destinations:\n  hook:\n    type: webhook\n    url: {hook_url}\n    secret: {SECRET}\n    concurrency: {concurrency}\n\
rules:\n  - name: all-leads\n    resource: leads\n    notify: [hook]\n",
        hours_ago(2)
    )
}

/// The three sandbox resources, polled every second.
fn three_resources_config(base_url: &str, hook_url: &str, start_from: &str) -> String {
    format!(
        "clinicea:\n  base_url: {base_url}\n  api_key: {API_KEY}\n  start_from: \"{start_from}\"\n  poll_interval: 1s\n  timeout: 10s\n\
resources:\n  leads:\n    path: /api/v1/leads\n  patients:\n    path: /api/v1/patients\n  appointments:\n    path: /api/v3/appointments/getChanges\n    since_param: lastSyncDTime\n    since_format: \"%Y-%m-%dT%H:%M:%S\"\n    page_param: pageNo\n    first_page: 1\n    page_size: 100\n    page_size_param: pageSize\n    status_field: DataStatusValue\n\
store:\n  path: ./data\n  cache_mb: 16\n\
listen: 127.0.0.1:0\n\
destinations:\n  hook:\n    type: webhook\n    url: {hook_url}\n    secret: {SECRET}\n\
rules:\n  - name: everything\n    resource: leads\n    notify: [hook]\n"
    )
}

/// The first entry queued for `hook`: a real delivery, to copy for the paced latency phase.
async fn first_queued(engine: &Engine) -> OutboxEntry {
    let mut queued = engine.store.outbox_entries("hook").await.unwrap();
    assert!(!queued.is_empty(), "the ingest queued deliveries");
    queued.swap_remove(0).1
}

// --- B: ingest --------------------------------------------------------------------------------

/// Polls leads once through the real pipeline: (records, seconds, outbox entries).
async fn ingest(engine: &Engine) -> (u64, f64, u64) {
    let ctx = engine
        .poll_ctx("default", None, CancellationToken::new())
        .unwrap();
    let res = engine.settings.base.resources[0].clone();
    let t = Instant::now();
    let rep = poll::poll_resource(&ctx, &res)
        .await
        .expect("poll succeeds");
    (rep.records, t.elapsed().as_secs_f64(), rep.deliveries)
}

/// The ceiling: the same pages fetched, parsed and written to sled in one batch per page by a bare
/// loop. With `write == false`, only fetched (how fast the sandbox serves).
async fn bare_ingest(base_url: &str, dir: &Path, cache_mb: u64, write: bool) -> (u64, f64) {
    let http = reqwest::Client::new();
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(cache_mb * 1024 * 1024)
        .open()
        .unwrap();
    let tree = db.open_tree("snapshots").unwrap();
    let t = Instant::now();
    let mut records = 0u64;
    for page in 0..100_000u32 {
        let body = http
            .get(format!("{base_url}/api/v1/leads?intPageNo={page}"))
            .header("api", API_KEY)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        if !write {
            // Count records cheaply: the sandbox serves compact JSON, one `"ID":` per record.
            let n = memchr_count(&body, b"\"ID\":");
            records += n as u64;
            if n < 100 {
                break;
            }
            continue;
        }
        if body.is_empty() {
            break;
        }
        let recs: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        let mut batch = sled::Batch::default();
        for r in &recs {
            let id = r.get("ID").and_then(|v| v.as_str()).unwrap_or_default();
            batch.insert(id.as_bytes(), serde_json::to_vec(r).unwrap());
        }
        tree.apply_batch(batch).unwrap();
        records += recs.len() as u64;
        if recs.len() < 100 {
            break;
        }
    }
    if write {
        db.flush_async().await.unwrap();
    }
    (records, t.elapsed().as_secs_f64())
}

fn memchr_count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

// --- A: delivery ------------------------------------------------------------------------------

/// How often part A's throughput phase looks at the receiver's count and the outbox.
const THROUGHPUT_POLL: Duration = Duration::from_millis(10);

/// Delivers the outbox of `hook` (`n` entries) with the real worker until every entry has reached
/// the receiver counting in `received` and left the outbox, then measures enqueue-to-delivered
/// latency with entries offered at `pace` a second. Returns (deliveries/s, p50 ms, p99 ms, pace).
async fn deliver(
    engine: &Engine,
    n: u64,
    template: &OutboxEntry,
    pace: u64,
    received: &AtomicU64,
) -> (f64, f64, f64, u64) {
    // Throughput: a worker with no event subscriber, watched from outside. A subscriber here is
    // the harness's own thread (`block_on`) woken once per delivery, a futex wake and a context
    // switch each: about 7 % of this phase's CPU in perf, which `run`'s console, a task on the
    // same runtime, does not cost.
    let before = received.load(Ordering::Relaxed);
    let t = Instant::now();
    let (worker, _wake_tx, cancel) = spawn_worker(engine, "hook", None).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    // Every request received, then every delivery recorded (the outbox is empty).
    while received.load(Ordering::Relaxed) - before < n && Instant::now() < deadline {
        tokio::time::sleep(THROUGHPUT_POLL).await;
    }
    while engine.store.outbox_len().await.unwrap() > 0 && Instant::now() < deadline {
        tokio::time::sleep(THROUGHPUT_POLL).await;
    }
    let secs = t.elapsed().as_secs_f64();
    cancel.cancel();
    worker.await.unwrap();
    assert_eq!(
        engine.store.outbox_len().await.unwrap(),
        0,
        "every queued entry is delivered"
    );
    assert_eq!(
        received.load(Ordering::Relaxed) - before,
        n,
        "each entry reached the receiver once"
    );
    let rate = n as f64 / secs;

    // A deliverer of its own, over the engine's store, that reports each attempt to the harness.
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let (worker, wake_tx, cancel) = spawn_worker(engine, "hook", Some(ev_tx)).await;

    // Latency: commit pages of 100 entries the way a poll does (one transaction, then a wake per
    // entry) at a paced rate, and time each from its commit to its Delivered event.
    let batches = 100u64; // 100 x 100 = 10,000 entries, over 2 s at 5,000/s
    let store = engine.store.clone();
    let tmpl = template.clone();
    let sent_at: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let sent = sent_at.clone();
    let producer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1000 * 100 / pace));
        for b in 0..batches {
            tick.tick().await;
            let mut write = PageWrite::default();
            let mut wakes = Vec::with_capacity(100);
            let now = chrono::Utc::now().timestamp_millis();
            for i in 0..100 {
                let seq = store.next_id().await.unwrap();
                let mut e = tmpl.clone();
                e.seq = seq;
                e.webhook_id = format!("msg_lat_{b}_{i}");
                e.created_ms = now;
                e.next_attempt_ms = now;
                wakes.push(store.wake_of(&e));
                write.outbox.push(e);
            }
            store.commit_page("default", "leads", &write).await.unwrap();
            let at = Instant::now();
            {
                let mut m = sent.lock().unwrap();
                for i in 0..100 {
                    m.insert(format!("msg_lat_{b}_{i}"), at);
                }
            }
            for w in wakes {
                wake_tx.send(w).unwrap();
            }
        }
        wake_tx
    });
    let mut lat = Vec::with_capacity((batches * 100) as usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    while (lat.len() as u64) < batches * 100 && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), ev_rx.recv()).await {
            Ok(Some(Event::Delivered { webhook_id, .. })) => {
                let now = Instant::now();
                let at = sent_at.lock().unwrap().get(&webhook_id).copied();
                if let Some(at) = at {
                    lat.push(now.duration_since(at).as_secs_f64() * 1000.0);
                }
            }
            Ok(Some(other)) => panic!("unexpected delivery event: {other:?}"),
            _ => break,
        }
    }
    let _keep = producer.await.unwrap();
    cancel.cancel();
    let _ = worker.await;
    assert_eq!(
        lat.len() as u64,
        batches * 100,
        "every paced entry delivered"
    );
    lat.sort_by(f64::total_cmp);
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    (rate, p(0.50), p(0.99), pace)
}

/// The ceiling: `concurrency` tasks POSTing the same body with a plain reqwest client.
async fn plain_posts(url: &str, body: Bytes, n: u64, concurrency: usize) -> f64 {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let next = next.clone();
        let body = body.clone();
        let url = url.to_string();
        set.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
                let _ = r.bytes().await;
            }
        });
    }
    while set.join_next().await.is_some() {}
    n as f64 / t.elapsed().as_secs_f64()
}

// --- C: memory --------------------------------------------------------------------------------

fn proc_status(pid: &str, field: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state is [0]; utime is field 14 overall, i.e. [11]; stime [12].
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// In the child: ingest everything the sandbox at `base_url` holds, print `records secs hwm_mb`.
fn child_ingest(base_url: &str, cache_mb: u64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_in(
            dir.path(),
            &leads_config(base_url, "http://127.0.0.1:9/hook", 8, cache_mb),
        )
        .await;
        let (records, secs, _) = ingest(&engine).await;
        println!(
            "{records} {secs} {}",
            proc_status("self", "VmHWM:") // MB
        );
    });
}

// --- main -------------------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child-ingest") {
        child_ingest(&args[i + 1], args[i + 2].parse().unwrap());
        return;
    }
    let only = std::env::var("BENCH_ONLY").unwrap_or_else(|_| "A,B,C,D,P".into());
    let on = |p: &str| only.split(',').any(|x| x.trim().eq_ignore_ascii_case(p));
    let concurrency = env_or::<usize>("BENCH_CONCURRENCY", 16);
    let n_deliveries = env_or::<usize>("BENCH_DELIVERIES", 100_000) as u64;
    let big = env_or::<usize>("BENCH_BIG", 1_000_000);
    let idle_secs = env_or::<usize>("BENCH_IDLE_SECS", 30) as u64;
    // The ingest runs with the product's default cache; the memory run sets it explicitly lower.
    let cache_b = env_or::<usize>("BENCH_CACHE_MB", 64) as u64;
    let cache_mb = env_or::<usize>("BENCH_MEM_CACHE_MB", 16) as u64;

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rows: Vec<Row> = Vec::new();
    rt.block_on(async {
        let (hook_url, received) = receiver().await;

        if on("A") || on("B") {
            // B: 100,000 changed leads through the pipeline; their outbox entries feed A.
            let t = Instant::now();
            let sb = sandbox(n_deliveries as usize, 0, 0).await;
            eprintln!(
                "sandbox with {n_deliveries} leads built in {:?}",
                t.elapsed()
            );
            let dir = tempfile::tempdir().unwrap();
            let engine = engine_in(
                dir.path(),
                &leads_config(&sb.base_url(), &hook_url, concurrency, cache_b),
            )
            .await;
            let (fetch_n, fetch_s) = {
                let d = tempfile::tempdir().unwrap();
                bare_ingest(&sb.base_url(), d.path(), cache_b, false).await
            };
            let (bare_n, bare_s) = {
                let d = tempfile::tempdir().unwrap();
                bare_ingest(&sb.base_url(), d.path(), cache_b, true).await
            };
            let (n, secs, deliveries) = ingest(&engine).await;
            assert_eq!(n, bare_n);
            assert_eq!(deliveries, n);
            let ceiling = bare_n as f64 / bare_s;
            let rate = n as f64 / secs;
            eprintln!(
                "B: {n} records in {secs:.2}s; bare loop {bare_s:.2}s; fetch only {fetch_s:.2}s"
            );
            if on("B") {
                rows.push(
                    row(
                        &format!("B ingest poll->diff->rules->outbox (100k, cache {cache_b}MB)"),
                        rate,
                        "records/s",
                        Some(ceiling),
                    )
                    .target(">= 0.6 ceiling", rate >= 0.6 * ceiling),
                );
                rows.push(row(
                    "B   sandbox serving, fetch only (no parse)",
                    fetch_n as f64 / fetch_s,
                    "records/s",
                    None,
                ));
            }
            // D (large): a second poll when nothing changed re-reads the overlap window.
            if on("D") {
                let before = requests(&sb);
                let ctx = engine
                    .poll_ctx("default", None, CancellationToken::new())
                    .unwrap();
                let rep = poll::poll_resource(&ctx, &engine.settings.base.resources[0])
                    .await
                    .unwrap();
                assert_eq!(rep.changes, 0);
                let after = requests(&sb);
                rows.push(row(
                    "D requests, unchanged re-poll, 100k leads/1h (2m overlap)",
                    delta(&after, &before, "leads") as f64,
                    "req/poll",
                    None,
                ));
            }

            if on("A") {
                // A template for the paced latency phase: one of the real entries.
                let template = first_queued(&engine).await;
                let body = match &template.payload {
                    Payload::Webhook { body } => Bytes::from(body.clone()),
                    _ => unreachable!(),
                };
                let before = received.load(Ordering::Relaxed);
                let (rate, p50, p99, pace) = deliver(&engine, n, &template, 5_000, &received).await;
                let got = received.load(Ordering::Relaxed) - before;
                assert!(got >= n + 10_000, "the receiver got every delivery");
                let ceiling = plain_posts(&hook_url, body.clone(), n, concurrency).await;
                eprintln!("A: body {} bytes, concurrency {concurrency}", body.len());
                rows.push(
                    row(
                        &format!(
                            "A deliveries from outbox (c={concurrency}, {}B body)",
                            body.len()
                        ),
                        rate,
                        "deliv/s",
                        Some(ceiling),
                    )
                    .target(
                        ">= 10,000/s and >= 0.5 ceiling",
                        rate >= 10_000.0 && rate >= ceiling / 2.0,
                    ),
                );
                rows.push(row(
                    &format!("A   enqueue->delivered p50 (offered {pace}/s)"),
                    p50,
                    "ms",
                    None,
                ));
                rows.push(row(
                    &format!("A   enqueue->delivered p99 (offered {pace}/s)"),
                    p99,
                    "ms",
                    None,
                ));
            }
        }

        if on("P") {
            // P: the same ingest and delivery on each store, one after the other in this run.
            let n = env_or::<usize>("BENCH_STORE_RECORDS", 20_000);
            let server = std::env::var("BENCH_POSTGRES_URL")
                .or_else(|_| std::env::var(SERVER_VAR))
                .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
            let mut by_store: Vec<(&str, f64, f64, f64, f64)> = Vec::new();
            for backend in ["sled", "postgres"] {
                let sb = sandbox(n, 0, 0).await;
                let dir = tempfile::tempdir().unwrap();
                let db = if backend == "postgres" {
                    Some(ScratchDatabase::on(&server, "cn_bench").await)
                } else {
                    None
                };
                let store = match &db {
                    Some(db) => format!("store:\n  backend: postgres\n  url: {}\n", db.url),
                    None => format!("store:\n  path: ./data\n  cache_mb: {cache_b}\n"),
                };
                let engine = engine_in(
                    dir.path(),
                    &leads_config_on(&sb.base_url(), &hook_url, concurrency, &store),
                )
                .await;
                let (records, secs, deliveries) = ingest(&engine).await;
                assert_eq!((records, deliveries), (n as u64, n as u64));
                let template = first_queued(&engine).await;
                // Offered below both stores' rates, so the latency is a delivery's, not a queue's.
                let (rate, p50, p99, _) =
                    deliver(&engine, n as u64, &template, P_PACE, &received).await;
                eprintln!("P {backend}: ingest {records} in {secs:.2}s, delivery {rate:.0}/s");
                by_store.push((backend, records as f64 / secs, rate, p50, p99));
                drop(engine);
                drop(db);
            }
            let (_, sled_in, sled_out, sled_p50, sled_p99) = by_store[0];
            for &(backend, ingest_rate, deliver_rate, p50, p99) in &by_store {
                let ceiling = |sled: f64| (backend != "sled").then_some(sled);
                rows.push(row(
                    &format!("P ingest on {backend} ({n} leads; ratio: to sled)"),
                    ingest_rate,
                    "records/s",
                    ceiling(sled_in),
                ));
                rows.push(row(
                    &format!("P deliveries on {backend} (c={concurrency}; ratio: to sled)"),
                    deliver_rate,
                    "deliv/s",
                    ceiling(sled_out),
                ));
                rows.push(row(
                    &format!("P   enqueue->delivered p50 on {backend} ({P_PACE}/s)"),
                    p50,
                    "ms",
                    ceiling(sled_p50),
                ));
                rows.push(row(
                    &format!("P   enqueue->delivered p99 on {backend} ({P_PACE}/s)"),
                    p99,
                    "ms",
                    ceiling(sled_p99),
                ));
            }
        }

        if on("D") {
            // D (default sandbox): the three resources, a full poll then an unchanged one.
            let sb = sandbox(137, 12, 42).await;
            let dir = tempfile::tempdir().unwrap();
            let engine = engine_in(
                dir.path(),
                &three_resources_config(&sb.base_url(), &hook_url, &hours_ago(2)),
            )
            .await;
            for p in engine.poll_all().await {
                p.result.unwrap();
            }
            let before = requests(&sb);
            for p in engine.poll_all().await {
                assert_eq!(p.result.unwrap().changes, 0);
            }
            let after = requests(&sb);
            let total: u64 = ["leads", "patients", "appointments"]
                .iter()
                .map(|k| delta(&after, &before, k))
                .sum();
            let per = total as f64 / 3.0;
            rows.push(
                row(
                    "D requests per resource, unchanged poll (default sandbox)",
                    per,
                    "req/poll",
                    None,
                )
                .target("1 per resource", per <= 1.0),
            );
        }

        if on("C") {
            // C1: peak RSS of a child ingesting `big` records with store.cache_mb set.
            let t = Instant::now();
            let sb = sandbox(big, 0, 0).await;
            eprintln!("sandbox with {big} leads built in {:?}", t.elapsed());
            let exe = std::env::current_exe().unwrap();
            let base = sb.base_url();
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new(exe)
                    .args(["--child-ingest", &base, &cache_mb.to_string()])
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let f: Vec<f64> = text
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            assert!(
                out.status.success() && f.len() == 3,
                "child ingest: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!("C: child ingested {} records in {:.1}s", f[0], f[1]);
            rows.push(
                row(
                    &format!(
                        "C peak RSS ingesting {} records (cache_mb {cache_mb})",
                        f[0]
                    ),
                    f[2],
                    "MB",
                    None,
                )
                .target("< 150 MB", f[2] < 150.0),
            );
            rows.push(row(
                "C   ... its ingest rate (1M, with outbox writes)",
                f[0] / f[1],
                "records/s",
                None,
            ));
            drop(sb);

            // C2: an idle `run` polling three resources every second.
            let sb = sandbox(137, 12, 42).await;
            let dir = tempfile::tempdir().unwrap();
            let config = dir.path().join("clinicea-notifier.yaml");
            std::fs::write(
                &config,
                three_resources_config(&sb.base_url(), &hook_url, "now"),
            )
            .unwrap();
            let mut child = tokio::process::Command::new(notifier_binary())
                .args(["--config", config.to_str().unwrap(), "-q", "run"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("target/release/clinicea-notifier exists (bench/run.sh builds it)");
            let pid = child.id().unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            let before_req = requests(&sb);
            let t0 = cpu_ticks(pid);
            let w = Instant::now();
            tokio::time::sleep(Duration::from_secs(idle_secs)).await;
            let ticks = cpu_ticks(pid) - t0;
            let wall = w.elapsed().as_secs_f64();
            let after_req = requests(&sb);
            let rss = proc_status(&pid.to_string(), "VmRSS:");
            let hwm = proc_status(&pid.to_string(), "VmHWM:");
            let cpu = ticks as f64 / clk_tck() / wall * 100.0;
            sigterm(pid);
            let _ = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
            let reqs: u64 = ["leads", "patients", "appointments"]
                .iter()
                .map(|k| delta(&after_req, &before_req, k))
                .sum();
            rows.push(
                row(
                    &format!("C idle run RSS (3 resources @1s, {idle_secs}s)"),
                    rss,
                    "MB",
                    None,
                )
                .target("< 30 MB", rss < 30.0),
            );
            rows.push(row("C   idle run peak RSS (VmHWM)", hwm, "MB", None));
            rows.push(row("C idle run CPU", cpu, "% of core", None).target("< 1%", cpu < 1.0));
            let per = reqs as f64 / 3.0 / wall;
            rows.push(
                row(
                    "D idle run requests per resource per second",
                    per,
                    "req/s",
                    None,
                )
                .target("~1 (one per poll)", per <= 1.05),
            );
        }
    });
    print_table(&rows);
}

/// SIGTERM via the `kill` command (no libc dependency); `run` stops cleanly on it.
fn sigterm(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}
