//! Replicas on one PostgreSQL store fail over: three `run` processes share fifty sandbox clinics
//! by lease, one of them is killed with SIGKILL every few seconds (and a new one started in its
//! place) while records change, and still every change is delivered, none under two webhook-ids,
//! and every clinic is polled again within the lease time after a replica died. Beside it, what
//! any process sees of the shared store: `status` and `dead list` while replicas run, and
//! `check` on a database it cannot reach or whose schema is newer than the binary.
//!
//! Each change is told apart by its clinic, record id and version (the lead's `Notes`, `v0` when
//! inserted, `v1`, `v2`, ... with each patch). A record is patched again only once its current
//! version has been delivered: polling sees the versions a poll finds, so a version overwritten
//! before any poll could not be delivered by any notifier, and is never made.

use crate::support::*;
use clinicea_notifier::kit::sandbox::{SandboxHandle, SandboxOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// Organizations on the sandbox, one clinic each.
const CLINICS: usize = 50;
/// Replicas running at once (one fewer for the moment between a kill and its replacement).
const REPLICAS: usize = 3;
/// The store's lease, as the config writes it, and as a duration.
const LEASE_TEXT: &str = "4s";
const LEASE: Duration = Duration::from_secs(4);
/// The clinics' poll interval, as the config writes it, and as a duration.
const POLL_TEXT: &str = "1s";
const POLL: Duration = Duration::from_secs(1);
/// What a takeover may take beyond the lease and one poll interval: the taker's renewal tick
/// (lease / 3), the poll's request and this machine's load.
const SLACK: Duration = Duration::from_secs(2);
/// How long records change (and replicas die) for.
const CHANGING_FOR: Duration = Duration::from_secs(36);
/// How often a replica is killed.
const KILL_EVERY: Duration = Duration::from_secs(5);
/// How often a record changes: about 900 changes in all.
const CHANGE_EVERY: Duration = Duration::from_millis(40);
/// How often the sandbox's per-clinic "latest request" times are read.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// How long the first replicas may take to poll every clinic once.
const FIRST_POLLS_WITHIN: Duration = Duration::from_secs(30);
/// How long the outbox may take to drain once the changes stop.
const DRAIN_WITHIN: Duration = Duration::from_secs(40);
/// How long a replica may take to start (migrations, fifty clinics) on a loaded machine.
const START_WITHIN: Duration = Duration::from_secs(60);
/// Seeds the choice of replica to kill and of the changes.
const SEED: u64 = 14;

/// One change made in the sandbox: clinic name, record id, version (`Notes`).
type ChangeKey = (String, String, String);

/// The clinic name of organization `i`.
fn clinic_name(i: usize) -> String {
    format!("c{i:02}")
}

/// The host's clock in milliseconds since the Unix epoch: the sandbox stamps requests with it.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The change a delivered body carries, and its type.
fn change_of(r: &Received) -> Option<(ChangeKey, String)> {
    let body: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    let data = &body["data"];
    let key = (
        data["clinic"].as_str()?.to_string(),
        data["id"].as_str()?.to_string(),
        data["record"]["Notes"].as_str()?.to_string(),
    );
    Some((key, body["type"].as_str().unwrap_or_default().to_string()))
}

/// Makes changes until `stop`: inserts leads (`v0`) into random clinics, and patches records
/// whose current version has been delivered to the next version. Returns every change made.
async fn make_changes(
    sb: Arc<SandboxHandle>,
    rx: Receiver,
    stop: CancellationToken,
) -> Vec<ChangeKey> {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut made: Vec<ChangeKey> = Vec::new();
    // Each record's organization, id and current version.
    let mut records: Vec<(usize, String, u32)> = Vec::new();
    let mut delivered: HashSet<ChangeKey> = HashSet::new();
    let mut read = 0;
    let mut inserted = 0u64;
    while !stop.is_cancelled() {
        let news = rx.received_since(read);
        read += news.len();
        delivered.extend(
            news.iter()
                .filter(|r| r.ok())
                .filter_map(change_of)
                .map(|c| c.0),
        );
        let ready: Vec<usize> = (0..records.len())
            .filter(|&n| {
                let (i, id, v) = &records[n];
                delivered.contains(&(clinic_name(*i), id.clone(), format!("v{v}")))
            })
            .collect();
        if !ready.is_empty() && rng.gen_bool(0.5) {
            let n = ready[rng.gen_range(0..ready.len())];
            let (i, id, v) = &mut records[n];
            *v += 1;
            let notes = format!("v{v}");
            sb.clinic(*i)
                .modify("leads", id, serde_json::json!({ "Notes": notes }))
                .expect("the lead exists");
            made.push((clinic_name(*i), id.clone(), notes));
        } else {
            let i = rng.gen_range(1..=CLINICS);
            inserted += 1;
            let lead = sb.clinic(i).insert(
                "leads",
                serde_json::json!({
                    "FirstName": "Fail",
                    "LastName": format!("Over {inserted}"),
                    "Notes": "v0",
                }),
            );
            let id = lead["ID"].as_str().expect("an id").to_string();
            made.push((clinic_name(i), id.clone(), "v0".into()));
            records.push((i, id, 0));
        }
        tokio::time::sleep(CHANGE_EVERY).await;
    }
    made
}

/// Reads every clinic's latest feed-request time every [`SAMPLE_EVERY`] until `stop`, keeping
/// each new one: per organization (index `i - 1`), the times its leads were asked for. Two
/// requests within one sample show as the later one, so a gap measured from them is at most one
/// sample longer than it was.
async fn sample_polls(
    sb: Arc<SandboxHandle>,
    polls: Arc<Mutex<Vec<Vec<u64>>>>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        {
            let mut polls = polls.lock().unwrap();
            for (i, times) in polls.iter_mut().enumerate() {
                if let Some(&at) = sb.clinic(i + 1).stats().last_request_unix_ms.get("leads") {
                    if times.last() != Some(&at) {
                        times.push(at);
                    }
                }
            }
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// The last lines of every replica's log, for failure messages.
fn replica_logs(t: &TestDir) -> String {
    let mut out = String::new();
    let mut files: Vec<_> = std::fs::read_dir(t.dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "stderr"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(25)..];
        out += &format!(
            "--- {} (last {} lines)\n{}\n",
            f.display(),
            tail.len(),
            tail.join("\n")
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_killed_one_after_another_lose_no_change_and_their_clinics_are_taken_over() {
    let Some(db) = ScratchDatabase::from_env().await else {
        return;
    };
    let sb = Arc::new(
        sandbox(SandboxOptions {
            clinics: CLINICS,
            leads: 0,
            patients: 0,
            appointments: 0,
            ..SandboxOptions::default()
        })
        .await,
    );
    let rx = Receiver::start().await;
    let mut config = Config::new(Clinicea::sandbox(&sb.base_url()).poll_interval(POLL_TEXT))
        .listen()
        .store(StoreSection::postgres(&db.url).lease(LEASE_TEXT))
        .webhook("hooks", &rx.url, |w| w.timeout("5s"))
        .rule(Rule::new("all-leads", &["hooks"]).resource("leads"));
    for i in 1..=CLINICS {
        config = config.clinic(&clinic_name(i), Clinic::at(&sb.base_url(), sb.api_key(i)));
    }
    let t = TestDir::new(&config.to_yaml());
    let mut started = 0;
    let start_replica = |started: &mut usize| {
        *started += 1;
        Notifier::run(&t)
            .tag(&format!("replica-{started}"))
            .ready_within(START_WITHIN)
            .start()
    };
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        replicas.push(start_replica(&mut started).await);
    }

    let stop_sampling = CancellationToken::new();
    let polls = Arc::new(Mutex::new(vec![Vec::new(); CLINICS]));
    let sampler = tokio::spawn(sample_polls(
        sb.clone(),
        polls.clone(),
        stop_sampling.clone(),
    ));
    assert!(
        eventually(FIRST_POLLS_WITHIN, || polls
            .lock()
            .unwrap()
            .iter()
            .all(|times| !times.is_empty()))
        .await,
        "the replicas did not poll every clinic within {FIRST_POLLS_WITHIN:?}\n{}",
        replica_logs(&t)
    );

    // Records change while a replica dies every few seconds and a new one takes its place.
    let stop_changes = CancellationToken::new();
    let changer = tokio::spawn(make_changes(sb.clone(), rx.clone(), stop_changes.clone()));
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut kills: Vec<(u64, u32)> = Vec::new();
    let changing = Instant::now();
    while changing.elapsed() + KILL_EVERY < CHANGING_FOR {
        tokio::time::sleep(KILL_EVERY).await;
        let victim = replicas.swap_remove(rng.gen_range(0..replicas.len()));
        let pid = victim.pid;
        kills.push((now_ms(), pid));
        victim.kill9().await;
        replicas.push(start_replica(&mut started).await);
    }
    tokio::time::sleep(CHANGING_FOR.saturating_sub(changing.elapsed())).await;
    stop_changes.cancel();
    let made = changer.await.unwrap();
    let last_kill = kills.last().map_or(0, |k| k.0);

    // Then the outbox drains: every change arrives, and a replica counts nothing queued.
    let wanted: HashSet<&ChangeKey> = made.iter().collect();
    let drained = Instant::now();
    let mut outbox = None;
    while drained.elapsed() < DRAIN_WITHIN {
        let got: HashSet<ChangeKey> = rx
            .received()
            .iter()
            .filter(|r| r.ok())
            .filter_map(|r| change_of(r).map(|c| c.0))
            .collect();
        outbox = replicas[0].metric("clinicea_notifier_outbox_entries").await;
        if wanted.iter().all(|c| got.contains(*c)) && outbox == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain_took = drained.elapsed();
    // Polls are sampled until the bound after the last kill has passed.
    let bound = LEASE + POLL + SLACK;
    let sample_until = last_kill + bound.as_millis() as u64 + SAMPLE_EVERY.as_millis() as u64;
    while now_ms() < sample_until {
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    stop_sampling.cancel();
    sampler.await.unwrap();
    let logs = replica_logs(&t);

    // Every change made was delivered, and with its kind.
    let received = rx.received();
    let mut ids: HashMap<ChangeKey, BTreeSet<String>> = HashMap::new();
    let mut kinds: HashMap<ChangeKey, BTreeSet<String>> = HashMap::new();
    for r in received.iter().filter(|r| r.ok()) {
        if let Some((key, kind)) = change_of(r) {
            ids.entry(key.clone())
                .or_default()
                .insert(r.header("webhook-id"));
            kinds.entry(key).or_default().insert(kind);
        }
    }
    let missing: Vec<&ChangeKey> = made.iter().filter(|c| !ids.contains_key(*c)).collect();
    eprintln!(
        "failover: {} changes made, {} deliveries ({} distinct changes), {} kills, {} replicas \
         started, outbox drained in {drain_took:?} (outbox gauge {outbox:?})",
        made.len(),
        received.len(),
        ids.len(),
        kills.len(),
        started,
    );
    assert!(
        made.len() > 300 && kills.len() >= 5,
        "the test made too little happen: {} changes, {} kills",
        made.len(),
        kills.len()
    );
    assert!(
        missing.is_empty(),
        "{} of {} changes were never delivered, e.g. {:?}\n{logs}",
        missing.len(),
        made.len(),
        &missing[..missing.len().min(10)]
    );
    let unasked: Vec<&ChangeKey> = ids.keys().filter(|c| !wanted.contains(c)).collect();
    assert!(
        unasked.is_empty(),
        "deliveries of changes nobody made: {unasked:?}"
    );
    let misnamed: Vec<(&ChangeKey, &BTreeSet<String>)> = kinds
        .iter()
        .filter(|((_, _, v), k)| {
            let want = if v == "v0" {
                "leads.added"
            } else {
                "leads.modified"
            };
            k.len() != 1 || !k.contains(want)
        })
        .collect();
    assert!(
        misnamed.is_empty(),
        "changes delivered with the wrong type: {misnamed:?}"
    );

    // None arrived under two webhook-ids (one id more than once is allowed: at least once).
    let twice: Vec<(&ChangeKey, &BTreeSet<String>)> =
        ids.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "{} changes arrived under two or more webhook-ids, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );

    // After each kill, every clinic (the dead replica's among them) was polled again in time.
    let polls = polls.lock().unwrap();
    let mut worst: Vec<(u32, u64, String)> = Vec::new();
    let mut late = Vec::new();
    for &(killed_at, pid) in &kills {
        let gaps: BTreeMap<String, Option<u64>> = polls
            .iter()
            .enumerate()
            .map(|(i, times)| {
                let next = times.iter().find(|&&at| at > killed_at);
                (clinic_name(i + 1), next.map(|at| at - killed_at))
            })
            .collect();
        let (clinic, gap) = gaps
            .iter()
            .max_by_key(|(_, g)| g.unwrap_or(u64::MAX))
            .map(|(c, g)| (c.clone(), g.unwrap_or(u64::MAX)))
            .unwrap();
        worst.push((pid, gap, clinic.clone()));
        if gap > bound.as_millis() as u64 {
            late.push((pid, clinic, gap));
        }
    }
    eprintln!("failover: the longest wait for a poll after each kill (pid, ms, clinic): {worst:?}");
    assert!(
        late.is_empty(),
        "clinics not polled within {bound:?} after a kill (pid, clinic, ms; u64::MAX: never): \
         {late:?}\n{logs}"
    );
    drop(replicas);
    drop(db);
}

/// `status` and `dead list`, run as their own processes on the shared store, show what the
/// running replicas did: every clinic with the replica that polls it (each replica with its fair
/// share), and the dead letters every replica made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_process_on_the_shared_store_shows_who_polls_each_clinic_and_every_dead_letter() {
    let Some(db) = ScratchDatabase::from_env().await else {
        return;
    };
    const N: usize = 4;
    let sb = sandbox(SandboxOptions {
        clinics: N,
        leads: 0,
        patients: 0,
        appointments: 0,
        ..SandboxOptions::default()
    })
    .await;
    // A receiver that refuses every delivery for good: each lead becomes a dead letter.
    let rx = Receiver::with(Responder::always(Reply::status(400))).await;
    let mut config = Config::new(Clinicea::sandbox(&sb.base_url()).poll_interval(POLL_TEXT))
        .listen()
        .store(StoreSection::postgres(&db.url).lease(LEASE_TEXT))
        .webhook("hooks", &rx.url, |w| w.timeout("5s"))
        .rule(Rule::new("all-leads", &["hooks"]).resource("leads"));
    for i in 1..=N {
        config = config.clinic(&clinic_name(i), Clinic::at(&sb.base_url(), sb.api_key(i)));
    }
    let t = TestDir::new(&config.to_yaml());
    let a = Notifier::run(&t)
        .tag("replica-a")
        .ready_within(START_WITHIN)
        .start()
        .await;
    let b = Notifier::run(&t)
        .tag("replica-b")
        .ready_within(START_WITHIN)
        .start()
        .await;
    for i in 1..=N {
        sb.clinic(i).insert(
            "leads",
            serde_json::json!({ "FirstName": "Dead", "LastName": format!("Letter {i}") }),
        );
    }

    // Both replicas settle on two clinics each, and the dead letters of all four are listed.
    let deadline = Instant::now() + Duration::from_secs(40);
    let (mut status, mut dead) = (serde_json::Value::Null, serde_json::Value::Null);
    let mut settled = false;
    while Instant::now() < deadline {
        let out = cli(&t, &["status", "--output", "json"]).await;
        assert!(out.status.success(), "{}", output_text(&out));
        status = serde_json::from_slice(&out.stdout).expect("status prints JSON");
        let out = cli(&t, &["dead", "list", "--output", "json"]).await;
        assert!(out.status.success(), "{}", output_text(&out));
        dead = serde_json::from_slice(&out.stdout).expect("dead list prints JSON");
        let owners: Vec<String> = status["clinics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["polled_by"]["replica"].as_str().unwrap_or("").to_string())
            .collect();
        let of = |pid: u32| {
            owners
                .iter()
                .filter(|o| o.contains(&format!("-{pid}-")))
                .count()
        };
        if of(a.pid) == N / 2
            && of(b.pid) == N / 2
            && dead["dead_letters"].as_array().map(Vec::len) == Some(N)
        {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        settled,
        "status or dead list did not show both replicas' work:\nstatus {status:#}\ndead {dead:#}\n{}",
        replica_logs(&t)
    );
    let clinics: BTreeSet<String> = dead["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["clinic"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(clinics.len(), N, "a dead letter from each clinic: {dead:#}");
    for c in status["clinics"].as_array().unwrap() {
        let left = c["polled_by"]["lease_expires_in_s"].as_f64().unwrap();
        assert!(left > 0.0 && left <= LEASE.as_secs_f64(), "{c:#}");
    }

    // The text names the shared store (without a password) and each clinic's replica.
    let out = cli(&t, &["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("(shared by replicas)"), "{text}");
    assert_eq!(text.matches(", polled by ").count(), N, "{text}");
    assert!(text.contains(&format!("-{}-", a.pid)), "{text}");

    // A replica killed is shown as polling nothing once its leases run out: the other one takes
    // its clinics.
    let b_pid = b.pid;
    b.kill9().await;
    let deadline = Instant::now() + LEASE + POLL + SLACK + Duration::from_secs(5);
    let mut text = String::new();
    while Instant::now() < deadline {
        let out = cli(&t, &["status"]).await;
        text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.matches(&format!("-{}-", a.pid)).count() == N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        text.matches(&format!("-{}-", a.pid)).count(),
        N,
        "the surviving replica took every clinic:\n{text}"
    );
    assert!(!text.contains(&format!("-{b_pid}-")), "{text}");
    drop(a);
    drop(db);
}

/// `check` names `store.url` for a server that does not answer and for a database whose schema
/// a newer notifier made, and `run` refuses that database; a database it can use passes, and the
/// password in the URL is never printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_database_it_cannot_reach_and_one_whose_schema_is_newer() {
    let Some(db) = ScratchDatabase::from_env().await else {
        return;
    };
    let sb = sandbox(SandboxOptions::default()).await;
    let rx = Receiver::start().await;
    let with_store = |url: &str| {
        Config::new(Clinicea::sandbox(&sb.base_url()))
            .store(StoreSection::postgres(url))
            .webhook("hooks", &rx.url, |w| w)
            .rule(Rule::new("all-leads", &["hooks"]).resource("leads"))
            .to_yaml()
    };

    // Nothing listens on port 1: refused at once.
    let t = TestDir::new(&with_store(
        "postgres://notifier:hunter2-secret@127.0.0.1:1/clinics",
    ));
    let (ok, out) = check(&t.config);
    assert!(!ok, "{out}");
    assert!(
        out.contains("store.url") && out.contains("127.0.0.1:1"),
        "{out}"
    );
    assert!(
        !out.contains("hunter2-secret"),
        "the password is never shown: {out}"
    );

    // A database it can use passes (empty: the schema is made when `run` starts).
    let t = TestDir::new(&with_store(&db.url));
    let (ok, out) = check(&t.config);
    assert!(ok, "{out}");

    // The schema a newer notifier left: `check` and `run` say so, and `run` changes nothing.
    let store = clinicea_notifier::outbox::store::Store::open_postgres(
        &clinicea_notifier::outbox::store::PgOptions {
            url: db.url.clone(),
            holder: None,
            lease: LEASE,
        },
    )
    .await
    .expect("the store opens and migrates");
    drop(store);
    let future = 29_991_231_000_000_i64;
    {
        use sqlx::{Connection, Executor};
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        conn.execute(
            format!(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
                 execution_time) VALUES ({future}, 'from the future', true, '\\x00', 0)"
            )
            .as_str(),
        )
        .await
        .unwrap();
    }
    let (ok, out) = check(&t.config);
    assert!(!ok, "{out}");
    assert!(
        out.contains("store.url") && out.contains("newer") && out.contains(&future.to_string()),
        "{out}"
    );
    let run = tokio::time::timeout(Duration::from_secs(60), cli(&t, &["run"]))
        .await
        .expect("run refuses the database and exits");
    assert!(!run.status.success(), "{}", output_text(&run));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("newer"), "{}", output_text(&run));
    drop(db);
}

/// Connections to the database refused, and those open cut, for a while: the replica keeps
/// running, says what is wrong without the URL's password, and once the database is back it
/// takes its clinic again and delivers what changed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_for_a_while_loses_nothing_and_the_replica_recovers() {
    let Some(db) = ScratchDatabase::from_env().await else {
        return;
    };
    let sb = sandbox(SandboxOptions {
        leads: 0,
        patients: 0,
        appointments: 0,
        ..SandboxOptions::default()
    })
    .await;
    let rx = Receiver::start().await;
    let t = TestDir::new(
        &Config::new(Clinicea::sandbox(&sb.base_url()).poll_interval(POLL_TEXT))
            .listen()
            .store(StoreSection::postgres(&db.url).lease(LEASE_TEXT))
            .webhook("hooks", &rx.url, |w| w.timeout("5s"))
            .rule(Rule::new("all-leads", &["hooks"]).resource("leads"))
            .to_yaml(),
    );
    let mut notifier = Notifier::run(&t).ready_within(START_WITHIN).start().await;
    let lead = |n: usize| serde_json::json!({ "FirstName": "Outage", "LastName": format!("{n}") });
    let before = sb.sandbox.insert("leads", lead(1));
    assert!(
        eventually(Duration::from_secs(20), || rx.count() >= 1).await,
        "the first lead was not delivered\n{}",
        notifier.stderr_text()
    );

    // The database refuses connections, and the open ones are cut.
    let name = url::Url::parse(&db.url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_string();
    let admin = std::env::var(clinicea_notifier::outbox::scratch::SERVER_VAR).unwrap();
    let sql = |q: String| {
        let admin = admin.clone();
        async move {
            use sqlx::{Connection, Executor};
            let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
            c.execute(q.as_str()).await.unwrap();
        }
    };
    sql(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false")).await;
    sql(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .await;
    let during = sb.sandbox.insert("leads", lead(2));
    tokio::time::sleep(LEASE * 2).await;
    assert!(
        notifier.is_running(),
        "the replica exited:\n{}",
        notifier.stderr_text()
    );

    // Back: the lead made during the outage arrives, once.
    sql(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true")).await;
    let id = during["ID"].as_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(30), || rx
            .received()
            .iter()
            .any(|r| r.data_id() == id))
        .await,
        "the lead made while the database was away was not delivered\n{}",
        notifier.stderr_text()
    );
    let first = before["ID"].as_str().unwrap().to_string();
    let ids: BTreeSet<String> = rx
        .received()
        .iter()
        .filter(|r| r.data_id() == first)
        .map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(ids.len(), 1, "the first lead kept one webhook-id: {ids:?}");
    let log = notifier.stderr_text();
    assert!(
        log.contains("PostgreSQL") || log.contains("database"),
        "{log}"
    );
    assert!(!log.contains(&admin) && !log.contains(&db.url), "{log}");
    let _ = notifier.terminate(Duration::from_secs(10)).await;
    drop(db);
}
