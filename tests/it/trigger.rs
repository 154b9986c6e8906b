//! The poll trigger, `POST /trigger/{clinic}/{resource}` on `listen`, against the real binary and
//! the sandbox: a burst of triggers is one poll, a wrong token polls nothing (and is never
//! echoed or logged), and a trigger brings a change to its receiver long before the poll
//! interval; on PostgreSQL only the replica holding the clinic's lease accepts it. The adaptive
//! schedule's gaps are checked on the running loop here, and exactly as unit tests with paused
//! time (`daemon::schedule`); its config keys are checked here too.

use crate::support::*;
use std::time::{Duration, Instant};

/// The clinic's trigger token in these tests (URL-safe, as the config asks).
const TOKEN: &str = "trg-0123456789abcdef-XYZ";

/// Long enough for a triggered poll to have started and ended: the settle (at most 250 ms), the
/// minimum gap to the previous poll (2 s), and a poll of the sandbox.
const AFTER_TRIGGER: Duration = Duration::from_secs(4);

/// A notifier polling the sandbox's leads every 60 s (so only a trigger polls during a test),
/// with the trigger on, started and through its first poll.
async fn started(
    sb: &clinicea_notifier::kit::sandbox::SandboxHandle,
    config: Config,
) -> (TestDir, Notifier) {
    let t = TestDir::new(&config.to_yaml());
    let d = Notifier::run(&t).start().await;
    let start = Instant::now();
    loop {
        let (code, _) = get_text(&d.url("/readyz")).await;
        if code == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never ready:\n{}",
            d.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The first poll is done; let its request count settle (the baseline came before it).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(lead_requests(sb) >= 1, "the sandbox was never polled");
    (t, d)
}

fn slow_leads(sb: &clinicea_notifier::kit::sandbox::SandboxHandle) -> Config {
    Config::new(
        Clinicea::sandbox(&sb.base_url())
            .poll_interval("60s")
            .trigger_token(TOKEN),
    )
    .listen()
}

/// Asserts the trigger counter of the default clinic's leads for `outcome`; returns the scrape.
async fn triggers_counted(d: &Notifier, outcome: &str, want: f64) -> Scrape {
    let scrape = Scrape::parse(&get_text(&d.url("/metrics")).await.1);
    assert_eq!(
        scrape.get(
            "clinicea_notifier_triggers_total",
            &[
                ("clinic", "default"),
                ("resource", "leads"),
                ("outcome", outcome)
            ]
        ),
        Some(want),
        "{}",
        scrape.text
    );
    scrape
}

async fn post(url: &str, bearer: Option<&str>) -> u16 {
    let mut req = reqwest::Client::new()
        .post(url)
        .body("{\"Event\":\"anything\"}");
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    req.send()
        .await
        .expect("the trigger answers")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_100_triggers_gives_one_poll() {
    // Five leads: one poll is one page request.
    let sb = sandbox_with_leads(5).await;
    let (_t, d) = started(&sb, slow_leads(&sb)).await;
    let before = lead_requests(&sb);

    // 100 at once, in each of the token's forms.
    let client = reqwest::Client::new();
    let sends = (0..100).map(|i| {
        let req = match i % 3 {
            0 => client.post(d.url(&format!("/trigger/default/leads/{TOKEN}"))),
            1 => client
                .post(d.url("/trigger/default/leads"))
                .bearer_auth(TOKEN),
            _ => client.post(d.url(&format!("/trigger/default/leads?token={TOKEN}"))),
        };
        async move { req.send().await.expect("answered").status().as_u16() }
    });
    let burst_started = Instant::now();
    let codes = futures_util::future::join_all(sends).await;
    let burst_took = burst_started.elapsed();
    assert!(codes.iter().all(|c| *c == 202), "{codes:?}");

    tokio::time::sleep(AFTER_TRIGGER).await;
    let polls = lead_requests(&sb) - before;
    // Sent within the trigger's 100 ms of quiet (as a real burst is, and as it is here unless
    // the machine is badly loaded), no two triggers are that far apart: it is one poll. Triggers
    // still arriving once that poll has started may make exactly one more.
    let allowed = if burst_took < Duration::from_millis(100) {
        1
    } else {
        2
    };
    assert!(
        (1..=allowed).contains(&polls),
        "a burst of 100 (sent in {burst_took:?}) made {polls} polls:\n{}",
        d.stderr_text()
    );
    triggers_counted(&d, "accepted", 100.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_with_a_wrong_token_is_401_and_polls_nothing() {
    let sb = sandbox_with_leads(5).await;
    let (_t, d) = started(&sb, slow_leads(&sb)).await;
    let before = lead_requests(&sb);
    let wrong = "trg-0123456789abcdef-XYy";
    for (url, bearer) in [
        (d.url("/trigger/default/leads"), None),
        (d.url(&format!("/trigger/default/leads/{wrong}")), None),
        (d.url("/trigger/default/leads"), Some(wrong)),
        (
            d.url(&format!("/trigger/default/leads?token={wrong}")),
            None,
        ),
        // A clinic that does not exist is the same 401, so names cannot be probed.
        (d.url(&format!("/trigger/elsewhere/leads/{TOKEN}")), None),
    ] {
        assert_eq!(post(&url, bearer).await, 401, "{url}");
    }
    // With the right token, a resource the clinic does not poll is 404.
    assert_eq!(
        post(&d.url(&format!("/trigger/default/bills/{TOKEN}")), None).await,
        404
    );
    tokio::time::sleep(AFTER_TRIGGER).await;
    assert_eq!(lead_requests(&sb), before, "a refused trigger polled");
    let scrape = triggers_counted(&d, "unauthorized", 4.0).await;
    // A made-up clinic is not a label value.
    assert!(!scrape.text.contains("elsewhere"), "{}", scrape.text);
    assert!(!scrape.text.contains(TOKEN) && !d.stderr_text().contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triggered_change_reaches_the_receiver_well_before_the_poll_interval() {
    let sb = empty_sandbox().await;
    let rx = Receiver::start().await;
    let config = slow_leads(&sb)
        .webhook("hooks", &rx.url, |w| w.timeout("5s"))
        .rule(Rule::new("r", &["hooks"]).resource("leads").on(&["added"]));
    let (_t, d) = started(&sb, config).await;
    sb.sandbox.insert("leads", test_lead());
    let at = Instant::now();
    assert_eq!(
        post(&d.url("/trigger/default/leads"), Some(TOKEN)).await,
        202
    );
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    let took = at.elapsed();
    assert_eq!(got.len(), 1, "nothing arrived:\n{}", d.stderr_text());
    assert!(got[0].verified.is_ok(), "the delivery is signed");
    // The poll interval is 60 s; the trigger's settle and the delivery take well under 5.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn poll_interval_min_above_poll_interval_and_a_weak_trigger_token_are_config_errors_naming_the_key()
{
    let bad_min = Config::new(
        Clinicea::new("https://api.clinicea.com", "k")
            .poll_interval("30s")
            .poll_interval_min("1m"),
    )
    .without_store();
    let t = TestDir::new(&bad_min.to_yaml());
    let (ok, out) = check(&t.config);
    assert!(!ok, "{out}");
    assert!(out.contains("clinicea.poll_interval_min"), "{out}");
    assert!(out.contains("at most poll_interval"), "{out}");

    for (token, why) in [
        ("short-token", "shorter than 16"),
        ("has/a+slash=and-more", "URL"),
    ] {
        let weak = Config::new(Clinicea::new("https://api.clinicea.com", "k").trigger_token(token))
            .without_store();
        let t = TestDir::new(&weak.to_yaml());
        let (ok, out) = check(&t.config);
        assert!(!ok, "{out}");
        assert!(
            out.contains("clinicea.trigger_token") && out.contains(why),
            "{out}"
        );
        assert!(!out.contains(token), "the token is echoed: {out}");
    }

    let good = Config::new(
        Clinicea::new("https://api.clinicea.com", "k")
            .poll_interval("60s")
            .poll_interval_min("5s")
            .trigger_token(TOKEN),
    )
    .without_store();
    let t = TestDir::new(&good.to_yaml());
    let (ok, out) = check(&t.config);
    assert!(ok, "{out}");
    assert!(!out.contains(TOKEN), "check prints the token: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_clinic_has_its_own_token_a_trigger_cuts_the_fleets_spread_and_a_reload_changes_it() {
    const SOUTH: &str = "south-token-0123456789";
    let sb = sandbox_with_leads(5).await;
    let fleet = |north: &str| {
        Config::new(Clinicea::sandbox(&sb.base_url()).poll_interval("60s"))
            .listen()
            .clinic("east", Clinic::at(&sb.base_url(), "sandbox-api-key"))
            .clinic(
                "north",
                Clinic::at(&sb.base_url(), "sandbox-api-key").trigger_token(north),
            )
            .clinic(
                "south",
                Clinic::at(&sb.base_url(), "sandbox-api-key").trigger_token(SOUTH),
            )
    };
    // North and south wait 20 s and 40 s for their first poll (the fleet's spread over the
    // interval); a trigger does not wait for that.
    let t = TestDir::new(&fleet(TOKEN).to_yaml());
    let d = Notifier::run(&t).start().await;
    // 503 until the first generation's loops run.
    let start = Instant::now();
    let mut code = 0;
    while start.elapsed() < Duration::from_secs(10) {
        code = post(&d.url("/trigger/south/leads"), Some(SOUTH)).await;
        if code != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(code, 202, "{}", d.stderr_text());
    let south_polled = async {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let (_, body) = get_text(&d.url("/readyz")).await;
            if !body.contains("south/leads") {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(
        south_polled.await,
        "the trigger did not bring south's first poll forward"
    );
    // One clinic's token opens no other; a clinic without one refuses everything.
    assert_eq!(post(&d.url("/trigger/north/leads"), Some(SOUTH)).await, 401);
    assert_eq!(post(&d.url("/trigger/north/leads"), Some(TOKEN)).await, 202);
    assert_eq!(post(&d.url("/trigger/east/leads"), Some(TOKEN)).await, 401);
    assert_eq!(post(&d.url("/trigger/east/leads"), None).await, 401);

    // A reload with a new token for north: the old one is refused from then on.
    let rotated = "north-rotated-0123456789";
    t.rewrite(&fleet(rotated).to_yaml());
    assert!(
        d.reload("config reloaded", 1, Duration::from_secs(10))
            .await,
        "{}",
        d.stderr_text()
    );
    assert_eq!(post(&d.url("/trigger/north/leads"), Some(TOKEN)).await, 401);
    let start = Instant::now();
    loop {
        // 503 for a moment while the next generation's loops start.
        let code = post(&d.url("/trigger/north/leads"), Some(rotated)).await;
        if code == 202 {
            break;
        }
        assert!(
            code == 503 && start.elapsed() < Duration::from_secs(10),
            "{code}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!d.stderr_text().contains(rotated) && !d.stderr_text().contains(SOUTH));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_change_polls_come_at_the_floor_and_back_off_to_the_interval_while_quiet() {
    // Every 3 s, 500 ms after a change: 0.5, 1, 2, then 3 s again (the exact gaps are the
    // schedule's unit tests; this is the running loop, sampled from the sandbox's side).
    let sb = empty_sandbox().await;
    let config = Config::new(
        Clinicea::sandbox(&sb.base_url())
            .poll_interval("3s")
            .poll_interval_min("500ms"),
    )
    .listen();
    let (_t, d) = started(&sb, config).await;
    sb.sandbox.insert("leads", test_lead());
    // One request per poll (an empty page, or one short page): note when each count appears.
    let mut polls: Vec<Instant> = Vec::new();
    let mut seen = lead_requests(&sb);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(14) && polls.len() < 6 {
        let now = lead_requests(&sb);
        if now > seen {
            polls.push(Instant::now());
            seen = now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        polls.len() >= 5,
        "{} polls:\n{}",
        polls.len(),
        d.stderr_text()
    );
    // polls[0] found the change; the gaps after it.
    let gaps: Vec<f64> = polls
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    for (got, want) in gaps.iter().zip([0.5, 1.0, 2.0, 3.0]) {
        assert!(
            (got - want).abs() < 0.3,
            "gaps {gaps:?}, wanted about [0.5, 1, 2, 3]:\n{}",
            d.stderr_text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_only_the_replica_holding_the_lease_accepts_a_trigger_and_the_other_says_503()
{
    let Some(db) = ScratchDatabase::from_env().await else {
        return;
    };
    let sb = sandbox(clinicea_notifier::kit::sandbox::SandboxOptions {
        clinics: 2,
        leads: 0,
        patients: 0,
        appointments: 0,
        ..clinicea_notifier::kit::sandbox::SandboxOptions::default()
    })
    .await;
    let mut config = Config::new(Clinicea::sandbox(&sb.base_url()).poll_interval("60s"))
        .listen()
        .store(StoreSection::postgres(&db.url).lease("2s"));
    for i in 1..=2 {
        config = config.clinic(
            &format!("c{i}"),
            Clinic::at(&sb.base_url(), sb.api_key(i)).trigger_token(TOKEN),
        );
    }
    let t = TestDir::new(&config.to_yaml());
    let a = Notifier::run(&t).tag("a").start().await;
    let b = Notifier::run(&t).tag("b").start().await;
    // Once the two share the clinics (one each, a few lease ticks after the second joined),
    // each clinic's trigger is 202 on its holder and 503 with Retry-After on the other.
    let client = reqwest::Client::new();
    let answer = |url: String| {
        let client = client.clone();
        async move {
            let r = client.post(url).bearer_auth(TOKEN).send().await.unwrap();
            let retry = r.headers().get("retry-after").is_some();
            (r.status().as_u16(), retry)
        }
    };
    let start = Instant::now();
    loop {
        let mut got = Vec::new();
        for clinic in ["c1", "c2"] {
            for d in [&a, &b] {
                got.push(answer(d.url(&format!("/trigger/{clinic}/leads"))).await);
            }
        }
        // Per clinic: (a, b).
        let split = |x: (u16, bool), y: (u16, bool)| {
            (x.0 == 202 && y == (503, true)) || (y.0 == 202 && x == (503, true))
        };
        if split(got[0], got[1]) && split(got[2], got[3]) && got[0].0 != got[2].0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the replicas never split the clinics: {got:?}\n--- a\n{}\n--- b\n{}",
            a.stderr_text(),
            b.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
