//! Issue 7: bad input. Each case fails fast with a message that says what is wrong, and never
//! panics, hangs, blows the stack or memory, or loses a change.

use crate::helpers::*;
use axum::body::Bytes;
use axum::response::IntoResponse;
use clinicea_notifier::config;
use clinicea_notifier::daemon::engine::Engine;
use clinicea_notifier::ingest::client::{self, MAX_PAGE_BYTES};
use clinicea_notifier::ingest::ctx::PollError;
use clinicea_notifier::kit::sandbox::SandboxOptions;
use clinicea_notifier::model::{Change, ChangeKind, DEFAULT_SOURCE};
use clinicea_notifier::outbox::store::{Store, StoreError, DEFAULT_CACHE_BYTES};
use clinicea_notifier::route::rules::{self, CompileContext, RuleSpec};
use serde_json::json;
use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A fake Clinicea API serving a fixed body for page 0 of the leads and 204 after it.
pub(crate) struct StaticApi {
    pub(crate) base_url: String,
    body: Arc<Mutex<Vec<u8>>>,
}

impl StaticApi {
    pub(crate) async fn start(body: impl Into<Vec<u8>>) -> StaticApi {
        let body = Arc::new(Mutex::new(body.into()));
        let b = body.clone();
        let app = axum::Router::new().route(
            "/api/v1/leads",
            axum::routing::get(move |axum::extract::RawQuery(q): axum::extract::RawQuery| {
                let b = b.clone();
                async move {
                    let q = q.unwrap_or_default();
                    if q.contains("intPageNo=0") {
                        let body = b.lock().unwrap().clone();
                        (
                            axum::http::StatusCode::OK,
                            [("content-type", "application/json")],
                            Bytes::from(body),
                        )
                            .into_response()
                    } else {
                        axum::http::StatusCode::NO_CONTENT.into_response()
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        StaticApi {
            base_url: format!("http://{addr}"),
            body,
        }
    }

    pub(crate) fn set(&self, body: impl Into<Vec<u8>>) {
        *self.body.lock().unwrap() = body.into();
    }
}

fn load_err(text: &str) -> String {
    match config::load_str(
        text,
        std::path::Path::new("/tmp/x/clinicea-notifier.yaml"),
        &HashMap::new(),
    ) {
        Ok(_) => panic!("expected an error for {text:?}"),
        Err(e) => e.to_string(),
    }
}

fn check_cli(file: &std::path::Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    (out.status.success(), text)
}

// --- config files -----------------------------------------------------------------------------

#[test]
fn an_empty_config_says_it_is_empty() {
    for text in ["", "   \n\n", "# only a comment\n"] {
        let e = load_err(text);
        assert!(
            e.contains("empty") || e.contains("clinicea"),
            "{text:?}: {e}"
        );
    }
    let t = TestDir::new("");
    let (ok, text) = check_cli(&t.config);
    assert!(!ok);
    assert!(text.contains("the file is empty"), "{text}");
}

#[test]
fn a_binary_config_says_it_is_not_utf8() {
    let t = TestDir::new("");
    std::fs::write(&t.config, b"clinicea:\n  base_url: \xff\xfe\x00\x01binary").unwrap();
    let (ok, text) = check_cli(&t.config);
    assert!(!ok);
    assert!(
        text.contains("not UTF-8") && text.contains("invalid byte at offset"),
        "{text}"
    );
    let err = config::load(&t.config, &HashMap::new())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not UTF-8"), "{err}");
}

/// Billion laughs: 9 levels of 9 aliases each would expand to 9^9 strings.
#[test]
fn a_yaml_bomb_fails_fast_with_a_clear_error() {
    let mut bomb = String::from(
        "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..=9 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"
        ));
    }
    // Where the config really reads it: a rule's conditions are raw YAML nodes of any shape, so
    // every alias would be expanded into them.
    let mut in_rules = String::from(
        "clinicea:\n  base_url: http://127.0.0.1:1\n  api_key: k\nresources:\n  leads: { path: /api/v1/leads }\nrules:\n  - name: r\n    where:\n",
    );
    for line in bomb.lines() {
        let (_, value) = line.split_once(": ").unwrap();
        in_rules.push_str(&format!("      - {value}\n"));
    }
    in_rules.push_str("    notify: [x]\n");
    for text in [bomb.clone(), in_rules.clone()] {
        let start = Instant::now();
        let e = load_err(&text);
        let took = start.elapsed();
        println!("YAML bomb: {took:?}: {e}");
        assert!(took < Duration::from_secs(15), "fails fast, took {took:?}");
        assert!(e.len() < 2000, "a short message");
        assert!(!e.contains("lol"), "the expansion is not echoed");
        assert!(
            e.contains("unknown field `a0`")
                || e.contains("too large once its anchors and aliases"),
            "{e}"
        );
    }
    // The CLI under a 1 GiB address-space limit: the budget stops it long before memory does.
    let t = TestDir::new(&in_rules);
    let start = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 1048576; exec {BIN} check --config {}",
            t.config.display()
        ))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    println!(
        "check on the bomb: {:?} {:?}: {text}",
        start.elapsed(),
        out.status
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "an ordinary error exit, not a crash: {text}"
    );
    assert!(
        !text.contains("panicked") && !text.contains("memory allocation"),
        "{text}"
    );
}

// --- API pages --------------------------------------------------------------------------------

fn static_config(base_url: &str) -> String {
    leads_only(base_url)
}

async fn only_report(
    engine: &Engine,
) -> Result<clinicea_notifier::ingest::poll::PollReport, PollError<StoreError>> {
    engine.poll_all().await.remove(0).1
}

/// The client takes pages up to MAX_PAGE_BYTES (64 MiB), so a 50 MB page (here one lead with a
/// 50 MB note) is a normal page: stored and diffed like any other. A 65 MiB page is refused with
/// a message naming the limit, and the checkpoint stays.
#[tokio::test]
async fn a_50_mb_page_is_accepted_and_a_65_mib_page_is_refused_clearly() {
    let sb = sandbox(SandboxOptions {
        leads: 2,
        ..SandboxOptions::default()
    })
    .await;
    let big = "x".repeat(50_000_000);
    sb.sandbox
        .insert("leads", json!({"ID": "big-one", "Notes": big}));
    drop(big);
    let t = TestDir::new(&static_config(&sb.base_url()));
    let engine = t.engine();
    let start = Instant::now();
    let rep = only_report(&engine)
        .await
        .expect("a 50 MB page is accepted");
    println!("50 MB page: {:?}, {rep:?}", start.elapsed());
    assert_eq!((rep.records, rep.changes), (3, 3));
    let snap = engine
        .store
        .snapshot(DEFAULT_SOURCE, "leads", "big-one")
        .unwrap()
        .unwrap();
    assert_eq!(snap["Notes"].as_str().unwrap().len(), 50_000_000);
    let peak = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or_default()
        .to_string();
    println!("50 MB page: peak memory of the whole test process so far: {peak}");

    sb.sandbox.modify(
        "leads",
        "big-one",
        json!({"Notes": "y".repeat(MAX_PAGE_BYTES + 1024 * 1024)}),
    );
    let cp = engine.store.checkpoint(DEFAULT_SOURCE, "leads").unwrap();
    let e = only_report(&engine)
        .await
        .expect_err("a page over 64 MiB is refused");
    let msg = e.to_string();
    assert!(
        msg.contains("leads") && msg.contains("page 0") && msg.contains("larger than 64 MiB"),
        "{msg}"
    );
    assert_eq!(
        engine.store.checkpoint(DEFAULT_SOURCE, "leads").unwrap(),
        cp,
        "the checkpoint stays"
    );
}

#[tokio::test]
async fn records_that_are_not_objects_are_skipped_and_counted() {
    let api = StaticApi::start(
        r#"[1, "two", null, [3], true, {"ID": "ok-1", "Name": "A"}, {"Name": "no id"}]"#,
    )
    .await;
    let t = TestDir::new(&static_config(&api.base_url));
    let engine = t.engine();
    let rep = only_report(&engine).await.expect("the poll goes on");
    assert_eq!(
        (rep.records, rep.skipped, rep.changes),
        (7, 6, 1),
        "{rep:?}"
    );
    assert!(engine
        .store
        .snapshot(DEFAULT_SOURCE, "leads", "ok-1")
        .unwrap()
        .is_some());
}

fn nested(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

#[test]
fn deeply_nested_json_is_a_clear_malformed_error_not_a_stack_overflow() {
    for body in [
        nested(100_000),
        format!("[{{\"ID\":\"1\",\"N\":{}}}]", nested(100_000)),
        "[".repeat(1_000_000),
    ] {
        let e = client::parse_page("leads", 2, body.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("leads") && e.contains("page 2"), "{e}");
        assert!(
            e.contains("nested") || e.contains("recursion") || e.contains("end of input"),
            "{e}"
        );
        println!("{e}");
    }
    let e = client::parse_page("leads", 0, nested(100_000).as_bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("recursion limit"), "says why: {e}");
}

/// The deepest record the page parser takes still goes all the way: stored, journaled, queued
/// and delivered (its outbox entry and change journal entry embed it deeper still).
#[tokio::test]
async fn the_deepest_record_the_parser_takes_is_delivered() {
    // The deepest nesting inside a record that a page may carry.
    let page = |depth: usize| format!("[{{\"ID\":\"deep\",\"N\":{}}}]", nested(depth));
    let depth = (100..200)
        .take_while(|d| client::parse_page("leads", 0, page(*d).as_bytes()).is_ok())
        .last()
        .unwrap();
    println!("the deepest record nesting a page may carry: {depth}");
    let body = page(depth);
    let api = StaticApi::start(body).await;
    let rx = Receiver::start().await;
    let yaml = format!(
        "{}destinations:\n  hook:\n    type: webhook\n    url: {}\n    secret: {SECRET}\nrules:\n  - name: all\n    notify: [hook]\n",
        static_config(&api.base_url),
        rx.url
    );
    let t = TestDir::new(&yaml);
    let engine = t.engine();
    let rep = only_report(&engine).await.unwrap();
    assert_eq!(rep.changes, 1);
    let out = engine.deliverer.deliver_all_due().await.unwrap();
    assert_eq!(out.delivered, 1, "{out:?}");
    let got = rx.received();
    verify_with_library(&got[0]).unwrap();
    assert!(
        engine.store.changes().is_ok(),
        "the change journal still reads"
    );
    assert_eq!(engine.store.outbox_len(), 0);
}

#[tokio::test]
async fn invalid_utf8_in_a_page_fails_the_poll_clearly_and_the_next_poll_recovers() {
    let api = StaticApi::start(b"[{\"ID\":\"1\",\"Name\":\"Ay\xff\xfesha\"}]".to_vec()).await;
    let t = TestDir::new(&static_config(&api.base_url));
    let engine = t.engine();
    let e = only_report(&engine)
        .await
        .expect_err("invalid UTF-8 fails the poll");
    let msg = e.to_string();
    println!("{msg}");
    assert!(
        msg.contains("leads") && msg.contains("page 0") && msg.contains("invalid JSON"),
        "{msg}"
    );
    assert!(
        msg.contains("unicode") || msg.contains("UTF-8"),
        "says why: {msg}"
    );
    assert!(!msg.contains("Ay"), "no record content in the error: {msg}");
    let cp = engine
        .store
        .checkpoint(DEFAULT_SOURCE, "leads")
        .unwrap()
        .unwrap();
    assert_eq!(
        cp.last_success_start, None,
        "the checkpoint did not advance"
    );
    api.set(r#"[{"ID":"1","Name":"Aysha"}]"#);
    let rep = only_report(&engine).await.unwrap();
    assert_eq!(
        rep.changes, 1,
        "the record is picked up once the page is fixed"
    );
}

// --- odd values in records ----------------------------------------------------------------------

#[test]
fn a_strange_timestamp_never_panics_and_never_matches_a_date_rule() {
    let yaml = r#"
- name: after
  where: [{ field: CreatedDatetime, gt: "2026-11-30T09:00:00+05:00" }]
  notify: [d]
- name: before
  where: [{ field: CreatedDatetime, lt: "2026-11-30T09:00:00+05:00" }]
  notify: [d]
- name: at-least-date
  where: [{ field: CreatedDatetime, gte: "2026-11-30" }]
  notify: [d]
"#;
    let specs: Vec<serde_saphyr::Spanned<RuleSpec>> =
        serde_saphyr::from_str_with_options(yaml, rules::yaml_options()).unwrap();
    let rs = rules::compile(
        &specs,
        &CompileContext {
            destinations: &["d".to_string()],
            resources: &["leads".to_string()],
            timezone: chrono_tz::Asia::Karachi,
        },
    )
    .unwrap();
    let strange = [
        json!("not a date"),
        json!("31/12/2026 10:00"),
        json!("2026-13-45T99:99:99"),
        json!("2026-02-30T10:00:00"),
        json!("+275760-09-13T00:00:00Z"),
        json!("-0001-01-01T00:00:00"),
        json!("99999999999-01-01T00:00:00"),
        json!("2026-11-30T09:00:00+99:99"),
        json!("0001-01-01T00:00:00"),
        json!("/Date(1732000000000)/"),
        json!(""),
        json!("  "),
        json!("\u{0}"),
        json!("２０２６-１１-３０"),
        json!(1732000000),
        json!(1e308),
        json!(-1e308),
        json!(true),
        json!(null),
        json!([]),
        json!({"date": "2026-12-01"}),
    ];
    for v in strange {
        let c = Change {
            source: DEFAULT_SOURCE.into(),
            resource: "leads".into(),
            id: "1".into(),
            kind: ChangeKind::Added,
            record: json!({"ID": "1", "CreatedDatetime": v.clone()}),
            previous: None,
            changed_fields: vec!["ID".into(), "CreatedDatetime".into()],
            server_status: None,
            detected_at: chrono::Utc::now(),
        };
        let routes = rs.route(&c);
        let why = rs.explain(&c);
        assert!(
            routes.is_empty(),
            "{v}: a value that is not a timestamp matches no date rule: {why:?}"
        );
        assert!(why.iter().all(|e| e.failed.is_some()), "{v}: {why:?}");
    }
}

// --- the store ----------------------------------------------------------------------------------

#[test]
fn a_store_opened_twice_is_locked_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let _first = Store::open(&path, DEFAULT_CACHE_BYTES).unwrap();
    match Store::open(&path, DEFAULT_CACHE_BYTES) {
        Err(e @ StoreError::Locked { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string())
                    && msg.contains("in use by another process"),
                "{msg}"
            );
        }
        Err(e) => panic!("expected Locked, got {e:?}"),
        Ok(_) => panic!("a second open of the same store must fail"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_while_run_holds_the_store_says_it_is_in_use() {
    let sb = default_sandbox().await;
    let t = TestDir::new(&format!(
        "{}listen: 127.0.0.1:0\n",
        leads_only(&sb.base_url())
    ));
    let log = t.dir.path().join("run.log");
    let child = NotifierChild::run(&t.config, &log);
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("listening on")
    {
        assert!(start.elapsed() < Duration::from_secs(20), "run starts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = Command::new(BIN)
        .args(["status", "--config"])
        .arg(&t.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        text.contains("in use by a running notifier") && text.contains("stop it first"),
        "{text}"
    );
    assert!(
        child.terminate(Duration::from_secs(15)),
        "run stops cleanly on SIGTERM"
    );
    let out = Command::new(BIN)
        .args(["status", "--config"])
        .arg(&t.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "status works once run stopped: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_store_path_that_cannot_be_created_names_the_path_and_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    // A path under a regular file: no one, not even root, can create a directory there.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let path = file.join("data");
    let e = Store::open(&path, DEFAULT_CACHE_BYTES)
        .err()
        .expect("cannot open under a file");
    let msg = e.to_string();
    println!("{msg}");
    assert!(matches!(e, StoreError::Open { .. }), "{e:?}");
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("Not a directory"),
        "{msg}"
    );

    // A directory without permissions: only meaningful when not root (root bypasses the mode).
    let locked = dir.path().join("no-access");
    std::fs::create_dir(&locked).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::write(locked.join("probe"), "x").is_ok() {
        println!("SKIPPED the chmod 000 case: this process bypasses file modes (running as root)");
    } else {
        let e = Store::open(&locked.join("data"), DEFAULT_CACHE_BYTES)
            .err()
            .expect("no access");
        let msg = e.to_string();
        assert!(msg.contains("Permission denied"), "{msg}");
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// Unmounts on drop.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A disk that fills: the store on a 2 MiB tmpfs (needs root and mount rights; skipped with the
/// reason otherwise). The poll fails with an I/O error naming the cause, nothing panics, and once
/// space is freed the next run picks everything up: nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_poll_clearly_and_nothing_is_lost_once_space_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .output();
    let ok = matches!(&mounted, Ok(o) if o.status.success());
    if !ok {
        println!("SKIPPED the full-disk case: cannot mount a small tmpfs here ({mounted:?})");
        return;
    }
    let _mount = Mount(mnt.clone());
    // 300 leads with 20 KB of notes each: about 6 MB of snapshots, three times the disk.
    let sb = sandbox(SandboxOptions {
        leads: 0,
        ..SandboxOptions::default()
    })
    .await;
    for i in 0..300 {
        sb.sandbox.insert(
            "leads",
            json!({"ID": format!("lead-{i:03}"), "Notes": format!("{i}").repeat(20_000 / 3 + 1)}),
        );
    }
    let yaml = leads_only(&sb.base_url()).replace(
        "path: ./data",
        &format!("path: {}", mnt.join("data").display()),
    );
    let t = TestDir::new(&yaml);
    let out = Command::new(BIN)
        .args(["once", "--config"])
        .arg(&t.config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "once on a full disk: {:?}\n{}",
        out.status,
        &text[text.len().saturating_sub(1500)..]
    );
    assert!(!out.status.success(), "a full disk is a failure");
    assert!(!text.contains("panicked"), "no panic: {text}");
    assert!(
        text.contains("No space left on device") || text.contains("store"),
        "says why: {text}"
    );

    // Free space: grow the tmpfs, run again, and every lead is there.
    let grown = Command::new("mount")
        .args(["-o", "remount,size=256m"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(grown.success());
    let out = Command::new(BIN)
        .args(["once", "--config"])
        .arg(&t.config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "once with space back: {text}");
    let store = Store::open(&mnt.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    assert_eq!(
        store.snapshot_count(DEFAULT_SOURCE, "leads"),
        300,
        "every lead, none lost: {text}"
    );
}

// --- durations ----------------------------------------------------------------------------------

const SMALL_CONFIG: &str = "clinicea:\n  base_url: http://127.0.0.1:1\n  api_key: k\nresources:\n  leads: { path: /api/v1/leads }\n";

#[test]
fn a_huge_duration_is_refused_by_check_naming_the_file_line_and_key() {
    let cases = [
        (
            SMALL_CONFIG.replace(
                "  api_key: k\n",
                "  api_key: k\n  poll_interval: 99999999999999999999d\n",
            ),
            "clinicea-notifier.yaml:4: clinicea.poll_interval",
            "too long",
        ),
        (
            format!("{SMALL_CONFIG}store:\n  dead_letter_retention: 150000000000d\n"),
            "clinicea-notifier.yaml:7: store.dead_letter_retention",
            "too long",
        ),
        (
            format!("{SMALL_CONFIG}retry:\n  schedule: [5s, 99999999999999999999999999999999d]\n"),
            "clinicea-notifier.yaml:7: retry.schedule",
            "too long",
        ),
        // Below the ten-year bound, but over the key's own.
        (
            SMALL_CONFIG.replace("  api_key: k\n", "  api_key: k\n  timeout: 2h\n"),
            "clinicea.timeout: must be at most 1h",
            "",
        ),
        (
            SMALL_CONFIG.replace("  api_key: k\n", "  api_key: k\n  poll_interval: 2d\n"),
            "clinicea.poll_interval: must be at most 1d",
            "",
        ),
    ];
    for (yaml, key, message) in cases {
        let t = TestDir::new(&yaml);
        let (ok, text) = check_cli(&t.config);
        assert!(!ok, "{yaml}\n{text}");
        assert!(
            text.contains(key) && text.contains(message),
            "{key}:\n{text}"
        );
    }
}

#[tokio::test]
async fn dead_purge_with_a_huge_age_is_an_error_and_purges_nothing() {
    let t = TestDir::new(&leads_only("http://127.0.0.1:1"));
    let now = chrono::Utc::now().timestamp_millis();
    {
        let store = open_store(&t);
        crate::data::put_dead(&store, 1, "a", now - 3_600_000);
        crate::data::put_dead(&store, 2, "b", now - 40 * 86_400_000);
    }
    for age in ["150000000000d", "99999999999999999999d"] {
        let out = cli(&t, &["dead", "purge", "--older-than", age]).await;
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(
            text.contains("too long") && !text.contains("panicked"),
            "{text}"
        );
        assert_eq!(open_store(&t).dead_len(), 2, "nothing purged by {age}");
    }
    // The longest age there is purges what is older, which is nothing here.
    let out = cli(&t, &["dead", "purge", "--older-than", "3650d"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Purged 0 dead letters"));
    let out = cli(&t, &["dead", "purge", "--older-than", "30d"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("Purged 1 dead letters"));
    assert_eq!(open_store(&t).dead_len(), 1);
}
