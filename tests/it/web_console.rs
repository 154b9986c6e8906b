//! The web console of the real `run`: it lists a dead letter for anyone who reaches `listen`,
//! refuses actions and a dead letter's contents without `console.token`, and with it re-drives a
//! dead letter to the receiver (over HTTP with a bearer token or the sign-in cookie and its CSRF
//! field; and in headless Chromium, clicking as an operator would).

use crate::support::*;
use clinicea_notifier::kit::sandbox::SandboxHandle;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The console token of these tests.
const TOKEN: &str = "console-token-5b1e9c0d7a42";

/// A notifier whose one webhook refuses the first delivery (a 400: a dead letter at once) and
/// takes the next; the console signed with [`TOKEN`].
struct Setup {
    _sb: SandboxHandle,
    rx: Receiver,
    _t: TestDir,
    d: Notifier,
}

async fn setup() -> Setup {
    let sb = sandbox_with_leads(1).await;
    let rx = Receiver::with(Responder::script([
        Reply::status(400).body("{\"error\":\"no such field\"}")
    ]))
    .await;
    let config = new_leads_to_hooks(&sb.base_url(), &rx.url)
        .listen()
        .to_yaml()
        + "console:\n  token: ${CONSOLE_TOKEN}\n";
    let t = TestDir::new(&config);
    let d = Notifier::run(&t)
        .env(&[("CONSOLE_TOKEN", TOKEN)])
        .ready_within(Duration::from_secs(60))
        .start()
        .await;
    rx.wait_for(1, Duration::from_secs(30)).await;
    Setup {
        _sb: sb,
        rx,
        _t: t,
        d,
    }
}

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The console's overview, once it lists at least one dead letter: the page and the first
/// letter's number.
async fn overview_with_a_dead_letter(d: &Notifier, cookie: Option<&str>) -> (String, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut req = client().get(d.url("/"));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let page = req.send().await.unwrap().text().await.unwrap();
        if let Some(seq) = page
            .split("data-id=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|s| s.parse().ok())
        {
            return (page, seq);
        }
        assert!(Instant::now() < deadline, "no dead letter listed:\n{page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_lists_a_dead_letter_and_retries_it_only_with_the_token() {
    let mut s = setup().await;
    let webhook_id = s.rx.received()[0].header("webhook-id");
    let (page, seq) = overview_with_a_dead_letter(&s.d, None).await;
    assert!(page.contains(&webhook_id), "{page}");
    assert!(page.contains("Read-only"), "{page}");
    assert!(page.contains("HTTP 400"), "{page}");
    // The overview holds no record contents (the test lead's fields).
    for content in ["Ayesha", "Khan", "teeth whitening"] {
        assert!(!page.contains(content), "{content} on the overview");
    }

    // Without the token: actions and the dead letter's contents are refused.
    let c = client();
    let retry = s.d.url(&format!("/dead/{seq}/retry"));
    let r = c
        .post(&retry)
        .form(&[("csrf", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = c
        .post(&retry)
        .bearer_auth("not-the-console-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = c
        .get(s.d.url(&format!("/dead/{seq}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(!r.text().await.unwrap().contains("no such field"));
    let r = c.post(s.d.url("/dead/purge-all")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(s.rx.count(), 1, "nothing was re-sent");

    // Signing in sets an HttpOnly, SameSite=Strict cookie; a wrong token sets none.
    let r = c
        .post(s.d.url("/login"))
        .form(&[("token", "wrong-token-000000")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    let r = c
        .post(s.d.url("/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains(TOKEN), "the cookie is not the token");
    let cookie = set_cookie.split(';').next().unwrap().to_string();

    // The cookie alone (as a forged cross-site form would send it) is not enough: the CSRF field
    // is needed, and another site's Origin is refused.
    let r = c
        .post(&retry)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (page, _) = overview_with_a_dead_letter(&s.d, Some(&cookie)).await;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a signed-in page carries the CSRF field")
        .to_string();
    let r = c
        .post(&retry)
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(s.rx.count(), 1, "nothing was re-sent");

    // Signed in, the dead letter's page shows its attempt and the receiver's answer.
    let r = c
        .get(s.d.url(&format!("/dead/{seq}")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let letter = r.text().await.unwrap();
    assert!(letter.contains(&webhook_id), "{letter}");
    assert!(letter.contains("no such field"), "{letter}");

    // With the cookie and the CSRF field the retry works, and the receiver gets it again.
    let r = c
        .post(&retry)
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "{}", r.text().await.unwrap());
    let got = s.rx.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 2, "the retry was delivered");
    assert_eq!(got[1].header("webhook-id"), webhook_id);
    assert!(got[1].verified.is_ok(), "{:?}", got[1].verified);
    // The last deliveries show the refusal and the re-delivery, by webhook-id.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = c
            .get(s.d.url("/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let recent = page
            .split("id=\"deliveries\"")
            .nth(1)
            .and_then(|r| r.split("</table>").next())
            .unwrap_or("")
            .to_string();
        if recent.contains(">delivered<") {
            assert!(recent.contains(&webhook_id), "{recent}");
            assert!(recent.contains(">dead<"), "{recent}");
            break;
        }
        assert!(Instant::now() < deadline, "no delivery listed:\n{page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A bearer token works for scripts too: the letter is gone, so it is a 404 now.
    let r = c.post(&retry).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);

    s.d.terminate(Duration::from_secs(30))
        .await
        .expect("the daemon stops");
    let stderr = s.d.stderr_text();
    assert!(!stderr.contains(TOKEN), "the token reached the logs");
}

/// The Chrome DevTools protocol over one page's websocket: enough to navigate, click, read and
/// take screenshots.
struct Browser {
    child: tokio::process::Child,
    _profile: tempfile::TempDir,
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

/// How long the browser may take to start, load a page or answer a call.
const BROWSER_WAIT: Duration = Duration::from_secs(30);

impl Browser {
    /// Starts Debian's headless Chromium on a free port and attaches to its first page.
    async fn start() -> Browser {
        use tokio::io::AsyncBufReadExt;
        let profile = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1200,900",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("Debian's chromium is installed (.ci/run installs it)");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let browser_ws = tokio::time::timeout(BROWSER_WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    return url.trim().to_string();
                }
            }
            panic!("chromium exited without a DevTools address");
        })
        .await
        .expect("chromium starts");
        // Keep reading its stderr, or it blocks once the pipe fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let port = browser_ws
            .trim_start_matches("ws://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let list: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page_ws = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        let (ws, _) = tokio_tungstenite::connect_async(page_ws.as_str())
            .await
            .expect("the page's websocket");
        Browser {
            child,
            _profile: profile,
            ws,
            next_id: 1,
        }
    }

    /// One protocol call: its result (events in between are skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// One protocol call: its result, or the error the browser answered with.
    async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        use futures_util::{SinkExt, StreamExt};
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(msg.into()).await.unwrap();
        tokio::time::timeout(BROWSER_WAIT, async {
            while let Some(m) = self.ws.next().await {
                let m = m.unwrap();
                let Ok(text) = m.to_text() else { continue };
                let v: Value = serde_json::from_str(text).unwrap_or_default();
                if v["id"] == id {
                    return match v.get("error") {
                        Some(e) => Err(e.clone()),
                        None => Ok(v["result"].clone()),
                    };
                }
            }
            panic!("the browser closed");
        })
        .await
        .unwrap_or_else(|_| panic!("{method} got no answer"))
    }

    /// Evaluates JavaScript in the page (the DevTools protocol is not bound by the page's CSP).
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Waits until the page at `path` has loaded (after a navigation or a submitted form).
    async fn wait_for_page(&mut self, path: &str) {
        self.wait_until(&format!("location.pathname === {}", json!(path)))
            .await;
    }

    /// Waits until a loaded page makes `cond` (JavaScript) true.
    async fn wait_until(&mut self, cond: &str) {
        let deadline = Instant::now() + BROWSER_WAIT;
        let check = format!("document.readyState === 'complete' && ({cond})");
        loop {
            // A page that is navigating away answers with an error ("Inspected target
            // navigated or closed"): that is "not yet", not a failure.
            let now = self
                .try_call(
                    "Runtime.evaluate",
                    json!({"expression": check, "returnByValue": true}),
                )
                .await;
            if matches!(&now, Ok(r) if r["result"]["value"] == json!(true)) {
                break;
            }
            if Instant::now() > deadline {
                let at = self
                    .eval("location.href + ' ' + document.readyState + ': ' + document.body.innerText")
                    .await;
                panic!("never: {cond} (at {at})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn open(&mut self, url: &str, path: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
        self.wait_for_page(path).await;
    }

    /// Clicks the first element `selector` matches.
    async fn click(&mut self, selector: &str) {
        let found = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({}); if (!e) return false; e.click(); return true; }})()",
                json!(selector)
            ))
            .await;
        assert_eq!(found, json!(true), "nothing matches {selector}");
    }

    async fn text(&mut self) -> String {
        self.eval("document.body.innerText")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// A PNG of the page, written to `name` under the test's output folder.
    async fn screenshot(&mut self, name: &str) {
        use base64::Engine as _;
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium; .ci/run installs it and runs this test"]
async fn in_a_browser_retry_is_refused_without_the_token_and_redelivers_with_it() {
    let mut s = setup().await;
    let webhook_id = s.rx.received()[0].header("webhook-id");
    overview_with_a_dead_letter(&s.d, None).await;
    let mut b = Browser::start().await;

    // Read-only: the dead letter is listed; a click on retry is refused.
    b.open(&s.d.url("/"), "/").await;
    assert_eq!(
        b.eval("document.querySelectorAll('tr.dead-letter').length")
            .await,
        json!(1)
    );
    assert!(b.text().await.contains(&webhook_id));
    b.screenshot("console-overview.png").await;
    b.click("tr.dead-letter button.retry").await;
    b.wait_until("location.pathname.endsWith('/retry')").await;
    let refused = b.text().await;
    assert!(refused.contains("needs the console token"), "{refused}");
    b.screenshot("console-refused.png").await;
    assert_eq!(s.rx.count(), 1, "the refused click re-sent nothing");

    // Sign in with the token, open the dead letter, retry it.
    b.open(&s.d.url("/login"), "/login").await;
    b.screenshot("console-sign-in.png").await;
    b.eval(&format!(
        "document.querySelector('input[name=token]').value = {}",
        json!(TOKEN)
    ))
    .await;
    b.click("form[action='/login'] button").await;
    b.wait_for_page("/").await;
    assert!(b.text().await.contains("Signed in"));
    b.click("tr.dead-letter a").await;
    b.wait_until("document.getElementById('payload') !== null")
        .await;
    let letter = b.text().await;
    assert!(letter.contains("no such field"), "{letter}");
    b.screenshot("console-dead-letter.png").await;
    b.click("form[action$='/retry'] button").await;
    b.wait_for_page("/").await;
    let got = s.rx.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 2, "the click re-delivered it");
    assert_eq!(got[1].header("webhook-id"), webhook_id);
    // The overview no longer lists it (after its short snapshot interval).
    let deadline = Instant::now() + BROWSER_WAIT;
    loop {
        b.open(&s.d.url("/"), "/").await;
        if b.eval("document.querySelectorAll('tr.dead-letter').length")
            .await
            == json!(0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the retried letter stays listed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    b.screenshot("console-after-retry.png").await;
    s.d.terminate(Duration::from_secs(30))
        .await
        .expect("the daemon stops");
}

#[test]
fn a_short_or_placeholder_console_token_is_refused_by_check() {
    for (value, expected) in [
        ("tiny-tok", "shorter than 16 characters"),
        ("REPLACE_ME_with_a_random_token", "placeholder"),
    ] {
        let config =
            leads_only("http://127.0.0.1:1").to_yaml() + &format!("console:\n  token: {value}\n");
        let t = TestDir::new(&config);
        let err = match clinicea_notifier::daemon::settings::load_settings_with(&t.config, &t.vars)
        {
            Ok(_) => panic!("{value} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("console.token") && err.contains(expected),
            "{err}"
        );
        assert!(!err.contains(value), "the token is echoed: {err}");
    }
}
