//! Fault injection: a mixed workload of sandbox edits, polls and deliveries while the
//! sandbox answers with random 5xx, 429, stalls, malformed bodies and resets, the receivers answer
//! with random 5xx, 429 and slow replies, and the notifier process is `kill -9`ed at random
//! moments and restarted. The windows are several pages long and shift while they are paged
//! (random edits between page requests, in a random order that changes during the run), and the
//! sandbox's clock runs minutes ahead of or behind ours (more than the overlap), moving now and
//! then. At the end nothing the sandbox did may be lost.
//!
//! Knobs: `FAULT_SOAK_SECS` (default 20: seconds of faulty activity) and `FAULT_SEED` (default:
//! from the clock, printed so a failure can be replayed).

use crate::support::*;
use clinicea_notifier::kit::sandbox::{Fault, FaultKind, Order, SandboxOptions};
use clinicea_notifier::model::canonical_json;
use clinicea_notifier::outbox::entry::DeadLetter;
use clinicea_notifier::outbox::store::{Store, DEFAULT_CACHE_BYTES};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Three resources (appointments in pages of 10) polled every 200 ms with a 30 s overlap and a
/// 1 s timeout, to three webhooks (`legacy` gets the patients), retried with jitter.
fn config(base_url: &str, crm: &str, ops: &str, legacy: &str) -> String {
    Config::new(
        Clinicea::sandbox(base_url)
            .poll_interval("200ms")
            .overlap("30s")
            .timeout("1s"),
    )
    .resources([
        Resource::leads(),
        Resource::patients(),
        Resource::appointments()
            .without_since_format()
            .page_size(10),
    ])
    .listen()
    .retry(
        Retry::schedule(&[
            "100ms", "200ms", "300ms", "500ms", "500ms", "1s", "1s", "1s", "1s", "1s", "1s", "1s",
            "1s", "1s", "1s",
        ])
        .jitter(0.1),
    )
    .webhook("crm", crm, |w| w.timeout("2s"))
    .webhook("ops", ops, |w| w.timeout("2s"))
    .webhook("legacy", legacy, |w| w.timeout("2s"))
    .rule(Rule::new("leads-to-crm", &["crm"]).resource("leads"))
    .rule(Rule::new("patients-to-crm", &["crm"]).resource("patients"))
    .rule(Rule::new("appointments-to-ops", &["ops"]).resource("appointments"))
    .rule(
        Rule::new("lead-deletions-to-ops", &["ops"])
            .resource("leads")
            .on(&["deleted"]),
    )
    .rule(Rule::new("patients-to-legacy", &["legacy"]).resource("patients"))
    .to_yaml()
}

/// A random sandbox fault.
fn random_fault(rng: &mut StdRng) -> Fault {
    let kind = match rng.gen_range(0..9) {
        0 => FaultKind::Status {
            status: 500,
            retry_after: None,
            body: "boom".into(),
        },
        1 => FaultKind::Status {
            status: 503,
            retry_after: None,
            body: "busy".into(),
        },
        2 => FaultKind::Status {
            status: 502,
            retry_after: None,
            body: "bad gateway".into(),
        },
        3 => FaultKind::Status {
            status: 429,
            retry_after: Some(1),
            body: "slow down".into(),
        },
        // Longer than the client's 1 s timeout, or shorter.
        4 => FaultKind::Stall(Duration::from_millis(1500)),
        5 => FaultKind::Stall(Duration::from_millis(300)),
        6 => FaultKind::MalformedJson,
        7 => FaultKind::ObjectInsteadOfArray,
        _ => FaultKind::ResetConnection,
    };
    let mut f = Fault::new(kind).times(rng.gen_range(1..=3));
    if rng.gen_bool(0.5) {
        f = f.on(["leads", "patients", "appointments"][rng.gen_range(0..3)]);
    }
    f
}

/// A live (not deleted) record id of `resource`, at random.
fn live_id(
    sb: &clinicea_notifier::kit::sandbox::Sandbox,
    resource: &str,
    rng: &mut StdRng,
) -> Option<String> {
    let live: Vec<String> = sb
        .records(resource)
        .into_iter()
        .filter(|r| {
            r["DataStatusStr"] != "Deleted"
                && r["DataStatusValue"] != "Deleted"
                && r["IsDeleted"] != true
        })
        .filter_map(|r| r["ID"].as_str().map(str::to_string))
        .collect();
    if live.is_empty() {
        None
    } else {
        Some(live[rng.gen_range(0..live.len())].clone())
    }
}

fn is_deleted(r: &Value) -> bool {
    r["DataStatusStr"] == "Deleted" || r["DataStatusValue"] == "Deleted" || r["IsDeleted"] == true
}

/// A record's content as the notifier judges it: the server's `Added`/`Modified` flag alone is no
/// change (a record re-flagged `Modified` within the second it was added, with nothing else
/// changed, is the version already delivered), so the two count as one; `Deleted` stays apart.
fn content(v: &Value) -> String {
    let mut v = v.clone();
    for flag in ["DataStatusStr", "DataStatusValue"] {
        if v[flag] == "Added" {
            v[flag] = Value::String("Modified".into());
        }
    }
    canon(&v)
}

fn canon(v: &Value) -> String {
    let mut buf = Vec::new();
    canonical_json(v, &mut buf);
    String::from_utf8(buf).unwrap()
}

/// Deliveries a receiver accepted (2xx).
fn accepted(rx: &Receiver) -> Vec<Received> {
    rx.received().into_iter().filter(Received::ok).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_faults_everywhere_lose_nothing() {
    let soak = Duration::from_secs(env_u64("FAULT_SOAK_SECS").unwrap_or(20));
    let seed = env_u64("FAULT_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    });
    println!(
        "fault injection: FAULT_SEED={seed} FAULT_SOAK_SECS={}",
        soak.as_secs()
    );
    let mut rng = StdRng::seed_from_u64(seed);

    // More than the 30 s overlap either way, so a since on our clock would lose changes.
    let skew = |rng: &mut StdRng| {
        let secs = rng.gen_range(60..900);
        chrono::TimeDelta::seconds(if rng.gen_bool(0.5) { secs } else { -secs })
    };
    let orders = [Order::Modified, Order::Id, Order::Unordered];
    // The first offset and order from the seed itself, so consecutive seeds cover both signs and
    // every order.
    let clock_offset = skew(&mut rng).abs() * if seed.is_multiple_of(2) { -1 } else { 1 };
    let order = orders[(seed / 2 % 3) as usize];
    // Leads: two pages of 100 and more; appointments: pages of 10.
    let sb = sandbox(SandboxOptions {
        seed,
        leads: 130,
        patients: 6,
        appointments: 25,
        order,
        page_edits: 1,
        clock_offset,
        ..SandboxOptions::default()
    })
    .await;
    println!(
        "fault injection: sandbox clock {} s from ours, order {order:?}",
        clock_offset.num_seconds()
    );
    let sandbox = sb.sandbox.clone();
    let crm = Receiver::with(Responder::chaos(seed ^ 1)).await;
    let ops = Receiver::with(Responder::chaos(seed ^ 2)).await;
    let legacy = Receiver::with(Responder::always(Reply::status(400))).await;
    let t = TestDir::new(&config(&sb.base_url(), &crm.url, &ops.url, &legacy.url));
    // Each start logs to the same file (the tag), quietly.
    let notifier = || Notifier::run(&t).tag("notifier").flags(&["-q"]).spawn();

    // --- the faulty phase ---------------------------------------------------------------------
    let mut kills = 0u32;
    let mut edits: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut child = Some(notifier());
    let log = child.as_ref().unwrap().stderr_path().to_path_buf();
    let started = Instant::now();
    let mut next_kill = started + Duration::from_millis(rng.gen_range(500..3000));
    while started.elapsed() < soak {
        match rng.gen_range(0..100) {
            0..=34 => {
                for (_, _, op) in sandbox.churn_once() {
                    *edits.entry(op).or_default() += 1;
                }
            }
            35..=44 => {
                let resource = ["leads", "patients", "appointments"][rng.gen_range(0..3)];
                sandbox.insert(
                    resource,
                    json!({"FirstName": format!("F{}", rng.gen::<u32>()), "Notes": "inserted by the fault test"}),
                );
                *edits.entry("added").or_default() += 1;
            }
            45..=59 => {
                let resource = ["leads", "patients", "appointments"][rng.gen_range(0..3)];
                if let Some(id) = live_id(&sandbox, resource, &mut rng) {
                    let n: u32 = rng.gen();
                    if sandbox
                        .modify(resource, &id, json!({"Notes": format!("edit {n}")}))
                        .is_some()
                    {
                        *edits.entry("modified").or_default() += 1;
                    }
                }
            }
            60..=64 => {
                let resource = ["leads", "appointments"][rng.gen_range(0..2)];
                if let Some(id) = live_id(&sandbox, resource, &mut rng) {
                    if sandbox.delete(resource, &id) {
                        *edits.entry("deleted").or_default() += 1;
                    }
                }
            }
            65..=67 => {
                sandbox.set_order(orders[rng.gen_range(0..3)]);
                sandbox.set_page_edits(rng.gen_range(0..=3));
                *edits.entry("mode").or_default() += 1;
            }
            68 => {
                sandbox.set_clock_offset(skew(&mut rng));
                *edits.entry("clock").or_default() += 1;
            }
            _ => sandbox.inject_faults(random_fault(&mut rng)),
        }
        if Instant::now() >= next_kill {
            if let Some(c) = child.take() {
                c.kill9().await;
                kills += 1;
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..300))).await;
            child = Some(notifier());
            next_kill = Instant::now() + Duration::from_millis(rng.gen_range(300..3000));
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..200))).await;
    }

    // --- the clean phase: no faults, let it drain ----------------------------------------------
    // A steady order without edits between pages, so every window can come out clean and its
    // checkpoint move; the clock stays skewed.
    sandbox.clear_faults();
    sandbox.set_page_edits(0);
    sandbox.set_order(Order::Modified);
    crm.respond_with(Responder::ok());
    ops.respond_with(Responder::ok());
    let total = |crm: &Receiver, ops: &Receiver, legacy: &Receiver| {
        crm.count() + ops.count() + legacy.count()
    };
    let calm_from = Instant::now();
    let mut last = (total(&crm, &ops, &legacy), Instant::now());
    while calm_from.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n = total(&crm, &ops, &legacy);
        if n != last.0 {
            last = (n, Instant::now());
        } else if calm_from.elapsed() > Duration::from_secs(5)
            && last.1.elapsed() > Duration::from_secs(3)
        {
            break;
        }
    }
    let clean_exit = child
        .as_mut()
        .unwrap()
        .terminate(Duration::from_secs(25))
        .await
        .is_some_and(|s| s.success());
    assert!(
        clean_exit,
        "SIGTERM stops the notifier cleanly; log:\n{}",
        tail(&log)
    );
    // A last poll (the run's may have been cut short by a fault's backoff when it was stopped),
    // and whatever is still queued (a retry not yet due): `once`, until the outbox is empty.
    let store_path = t.dir.path().join("data");
    for round in 0..20 {
        let queued = Store::open(&store_path, DEFAULT_CACHE_BYTES)
            .unwrap()
            .outbox_len()
            .await
            .unwrap();
        if round > 0 && queued == 0 {
            break;
        }
        let config = t.config.clone();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(BIN)
                .args(["once", "-q", "--config"])
                .arg(&config)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "once: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let store = Store::open(&store_path, DEFAULT_CACHE_BYTES).unwrap();
    assert_eq!(store.outbox_len().await.unwrap(), 0, "the outbox drains");
    let dead: Vec<DeadLetter> = store_dead_letters(&store).await;
    let changes = store.change_count().await.unwrap();
    let journal = store.changes().await.unwrap();
    let mut checkpoints: Vec<String> = Vec::new();
    for r in ["leads", "patients", "appointments"] {
        checkpoints.push(format!(
            "{r}: {:?}",
            store.checkpoint("default", r).await.unwrap()
        ));
    }
    drop(store);

    // --- what must hold ------------------------------------------------------------------------
    let crm_ok = accepted(&crm);
    let ops_ok = accepted(&ops);
    let mut everything: Vec<(&str, Received)> = Vec::new();
    let mut bad_signatures = Vec::new();
    for (dest, rx) in [("crm", &crm), ("ops", &ops), ("legacy", &legacy)] {
        for a in rx.received() {
            // Every request is validly signed (checked by the library on arrival).
            if let Err(e) = &a.verified {
                bad_signatures.push(format!("{dest}: {e}"));
            }
            everything.push((dest, a));
        }
    }
    // One change, one webhook-id, the same bytes each time it is sent to one destination; and
    // the same change (same record before and after) never gets two webhook-ids.
    let mut by_id: HashMap<(&str, String), Vec<&Received>> = HashMap::new();
    let mut ids_of_change: HashMap<(&str, String), BTreeSet<String>> = HashMap::new();
    for (dest, r) in &everything {
        let body = r.json();
        by_id
            .entry((dest, r.header("webhook-id")))
            .or_default()
            .push(r);
        let key = format!(
            "{}|{}|{}|{}",
            body["data"]["id"],
            body["data"]["change"],
            canon(&body["data"]["record"]),
            canon(&body["data"]["previous"])
        );
        ids_of_change
            .entry((dest, key))
            .or_default()
            .insert(r.header("webhook-id"));
    }
    let mut id_problems = Vec::new();
    for ((dest, _), ids) in &ids_of_change {
        if ids.len() != 1 {
            id_problems.push(format!(
                "{dest}: one change sent under several webhook-ids: {ids:?}"
            ));
        }
    }
    for ((dest, id), rs) in &by_id {
        let data: BTreeSet<String> = rs.iter().map(|r| canon(&r.json()["data"])).collect();
        if data.len() != 1 {
            id_problems.push(format!("{dest}: webhook-id {id} carried different data"));
        }
    }
    let accepted_ids = |rs: &[Received]| -> BTreeSet<String> {
        rs.iter().map(|r| r.header("webhook-id")).collect()
    };
    let crm_ids = accepted_ids(&crm_ok);
    let ops_ids = accepted_ids(&ops_ok);
    let duplicates = (crm_ok.len() - crm_ids.len()) + (ops_ok.len() - ops_ids.len());

    // Every record's final version, and so every id ever created and every delete, reached
    // every destination its rules name.
    let delivered = |rs: &[Received]| -> BTreeSet<(String, String)> {
        rs.iter()
            .map(|r| {
                let b = r.json();
                (
                    b["data"]["id"].as_str().unwrap_or_default().to_string(),
                    content(&b["data"]["record"]),
                )
            })
            .collect()
    };
    let (crm_got, ops_got) = (delivered(&crm_ok), delivered(&ops_ok));
    let legacy_got = delivered(&legacy.received());
    let mut losses = Vec::new();
    let mut finals = 0usize;
    for resource in ["leads", "patients", "appointments"] {
        for record in sandbox.records(resource) {
            finals += 1;
            let key = (record["ID"].as_str().unwrap().to_string(), content(&record));
            let want: Vec<(&str, &BTreeSet<(String, String)>)> = match resource {
                "leads" if is_deleted(&record) => vec![("crm", &crm_got), ("ops", &ops_got)],
                "leads" => vec![("crm", &crm_got)],
                "patients" => vec![("crm", &crm_got), ("legacy", &legacy_got)],
                _ => vec![("ops", &ops_got)],
            };
            for (dest, got) in want {
                if !got.contains(&key) {
                    // What the journal holds of it, to tell a missed read from a lost delivery.
                    let seen: Vec<String> = journal
                        .iter()
                        .filter(|(_, c)| c.resource == resource && c.id == key.0)
                        .map(|(seq, c)| {
                            format!("#{seq} {:?} at {} {}", c.kind, c.detected_at, c.version)
                        })
                        .collect();
                    losses.push(format!(
                        "{resource} {} (final version) never reached {dest}; final {}; journal: {seen:#?}",
                        key.0, key.1
                    ));
                }
            }
        }
    }
    // The dead letters hold exactly the deliveries to `legacy` (always 400): one per patient change.
    let dead_ids: BTreeSet<String> = dead.iter().map(|d| d.entry.webhook_id.clone()).collect();
    let patient_ids: BTreeSet<String> = crm_ok
        .iter()
        .filter(|r| r.json()["data"]["resource"] == "patients")
        .map(|r| r.header("webhook-id"))
        .collect();
    let foreign: Vec<&DeadLetter> = dead
        .iter()
        .filter(|d| d.entry.destination != "legacy")
        .collect();

    let stats = sandbox.stats();
    let api_requests: u64 = stats.requests.values().sum();
    println!(
        "fault injection (seed {seed}, {} s, clock offset at the end {} s): kills {kills}, sandbox edits {edits:?}, API requests {api_requests} \
         ({:?}), sandbox faults served {}, changes journaled {changes}, final records {finals}, \
         deliveries accepted crm {} ops {}, requests crm {} ops {} legacy {}, duplicates {duplicates}, \
         dead letters {}, losses {}",
        soak.as_secs(),
        sandbox.mode().clock_offset_secs,
        stats.requests,
        stats.faults_served,
        crm_ok.len(),
        ops_ok.len(),
        crm.count(),
        ops.count(),
        legacy.count(),
        dead.len(),
        losses.len()
    );
    assert!(
        bad_signatures.is_empty(),
        "signatures that do not verify: {bad_signatures:?}"
    );
    assert!(id_problems.is_empty(), "{id_problems:#?}");
    assert!(
        losses.is_empty(),
        "lost changes (seed {seed}):\n{}\ncheckpoints: {checkpoints:#?}\nlog:\n{}",
        losses.join("\n"),
        tail(&log)
    );
    assert!(
        foreign.is_empty(),
        "only legacy deliveries may be dead: {:?}",
        foreign
            .iter()
            .map(|d| (&d.entry.destination, &d.reason))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        dead_ids, patient_ids,
        "the dead letters are exactly the patient changes (seed {seed})"
    );
    assert_eq!(dead.len(), dead_ids.len(), "one dead letter per change");
    assert!(
        kills > 0 || soak < Duration::from_secs(3),
        "the notifier was killed at least once"
    );
}

fn tail(log: &std::path::Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
