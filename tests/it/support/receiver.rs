//! The one HTTP receiver the tests deliver to: a real server on loopback that records every
//! request it gets (with the status it answered and whether its signature verified on arrival)
//! and answers through a [`Responder`]: a script of replies, a fixed reply, a function of the
//! request's number, or seeded chaos; swappable while it runs.

use super::SECRET;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The path of [`Receiver::chat_url`]: shaped like a chat service's webhook URL, whose last part
/// is the secret token no error text may show.
const CHAT_PATH: &str = "/chat/T000/B000/secret-token";

/// How often [`Receiver::wait_for`] looks again.
const WAIT_STEP: Duration = Duration::from_millis(20);

/// One answer: a status, headers and a body (`ok` unless set), after an optional delay.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    /// `status` with the body `ok`, at once.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: "ok".into(),
            delay: Duration::ZERO,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Answers with this body instead of `ok`.
    pub fn body(mut self, body: &str) -> Reply {
        self.body = body.into();
        self
    }

    /// Waits this long before answering (the request is recorded on arrival).
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    fn into_response(self) -> axum::response::Response {
        let mut resp = axum::response::Response::new(axum::body::Body::from(self.body));
        *resp.status_mut() = StatusCode::from_u16(self.status).unwrap();
        for (k, v) in self.headers {
            resp.headers_mut().insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        resp
    }
}

/// How a [`Receiver`] decides each reply: a function of the request's number (from 0, counting
/// every request the receiver got, in arrival order).
#[derive(Clone)]
pub struct Responder(Arc<dyn Fn(usize) -> Reply + Send + Sync>);

impl Responder {
    /// `200 ok` to everything.
    pub fn ok() -> Responder {
        Responder::always(Reply::status(200))
    }

    /// The same reply to everything.
    pub fn always(reply: Reply) -> Responder {
        Responder::from_fn(move |_| reply.clone())
    }

    /// The first requests get these replies in order, every later one `200 ok`.
    pub fn script(replies: impl IntoIterator<Item = Reply>) -> Responder {
        let replies: Vec<Reply> = replies.into_iter().collect();
        Responder::from_fn(move |n| {
            replies
                .get(n)
                .cloned()
                .unwrap_or_else(|| Reply::status(200))
        })
    }

    /// Replies from `f`, given the request's number.
    pub fn from_fn(f: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Responder {
        Responder(Arc::new(f))
    }

    /// Random answers from `seed`: mostly 200, sometimes 500 or 503, 429 with `Retry-After: 1`,
    /// or a 200 after 300 ms or 2.5 s (slower than a 2 s delivery timeout).
    pub fn chaos(seed: u64) -> Responder {
        let rng = Mutex::new(rand::rngs::StdRng::seed_from_u64(seed));
        Responder::from_fn(move |_| {
            let roll: f64 = rng.lock().unwrap().gen();
            match roll {
                r if r < 0.10 => Reply::status(500),
                r if r < 0.16 => Reply::status(503),
                r if r < 0.22 => Reply::status(429).header("retry-after", "1"),
                r if r < 0.30 => Reply::status(200).delay(Duration::from_millis(300)),
                r if r < 0.33 => Reply::status(200).delay(Duration::from_millis(2500)),
                _ => Reply::status(200),
            }
        })
    }
}

/// One request a [`Receiver`] got, with the status it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
    /// The status it was answered with.
    pub status: u16,
    /// [`verify_with_library`] on arrival (the library refuses timestamps older than 5 minutes,
    /// so a long run cannot check them at its end).
    pub verified: Result<(), String>,
}

impl Received {
    /// A header's value, empty when absent.
    pub fn header(&self, name: &str) -> String {
        header(&self.headers, name)
    }

    /// The body as JSON (panics when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// `data.id` of a webhook body (panics when the body is not JSON).
    pub fn data_id(&self) -> String {
        self.json()["data"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Whether it was answered 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

struct State {
    got: Vec<Received>,
    responder: Responder,
}

/// A real HTTP receiver on loopback; clones share it.
#[derive(Clone)]
pub struct Receiver {
    /// `http://ADDR/hook`.
    pub url: String,
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    /// A receiver answering `200 ok` to everything.
    pub async fn start() -> Receiver {
        Receiver::with(Responder::ok()).await
    }

    /// A receiver answering through `responder`.
    pub async fn with(responder: Responder) -> Receiver {
        let state = Arc::new(Mutex::new(State {
            got: Vec::new(),
            responder,
        }));
        let st = state.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let st = st.clone();
            async move {
                let at = Instant::now();
                let verified = verify(&headers, &body);
                // Choosing the reply and recording it happen under one lock, so the recorded
                // status is the one sent and the numbers follow arrival order.
                let reply = {
                    let mut s = st.lock().unwrap();
                    let reply = (s.responder.0)(s.got.len());
                    s.got.push(Received {
                        headers,
                        body,
                        at,
                        status: reply.status,
                        verified,
                    });
                    reply
                };
                tokio::time::sleep(reply.delay).await;
                reply.into_response()
            }
        });
        let addr = super::serve_on_loopback(app).await;
        Receiver {
            url: format!("http://{addr}/hook"),
            addr,
            state,
        }
    }

    /// Answers from now on through `responder` (requests being answered keep their reply).
    pub fn respond_with(&self, responder: Responder) {
        self.state.lock().unwrap().responder = responder;
    }

    /// A URL of this receiver shaped like a chat webhook's, ending in a secret token.
    pub fn chat_url(&self) -> String {
        format!("http://{}{CHAT_PATH}", self.addr)
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().got.clone()
    }

    /// What arrived after the first `n` requests, in arrival order (for a test that reads along
    /// while deliveries go on, without copying everything again each time).
    pub fn received_since(&self, n: usize) -> Vec<Received> {
        let s = self.state.lock().unwrap();
        s.got.get(n..).map(<[Received]>::to_vec).unwrap_or_default()
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.state.lock().unwrap().got.len()
    }

    /// Waits until at least `n` requests arrived or `timeout` passed; what arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.received();
            if got.len() >= n || start.elapsed() > timeout {
                return got;
            }
            tokio::time::sleep(WAIT_STEP).await;
        }
    }

    /// The `data.id`s answered 2xx.
    pub fn ok_ids(&self) -> HashSet<String> {
        self.received()
            .iter()
            .filter(|r| r.ok())
            .map(Received::data_id)
            .collect()
    }
}

/// Verifies a received webhook with the `standardwebhooks` crate (code nobody here wrote).
pub fn verify_with_library(r: &Received) -> Result<(), String> {
    verify(&r.headers, &r.body)
}

fn verify(headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let wh = standardwebhooks::Webhook::new(SECRET).map_err(|e| format!("{e:?}"))?;
    let mut signed = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        signed.insert(
            name,
            header(headers, name).parse().map_err(|_| "bad header")?,
        );
    }
    wh.verify(body, &signed).map_err(|e| format!("{e:?}"))
}
