//! A Prometheus `/metrics` scrape, parsed into samples by name and label set, and plain GETs
//! of the notifier's HTTP endpoints.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// How long one GET may take.
const GET_TIMEOUT: Duration = Duration::from_secs(10);

/// A `/metrics` scrape, parsed: samples by name and label set, `# TYPE` and `# HELP` lines.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub text: String,
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
    pub types: HashMap<String, String>,
    pub helps: HashMap<String, String>,
}

impl Scrape {
    /// Parses the Prometheus text exposition format (the subset the exporter writes).
    pub fn parse(text: &str) -> Scrape {
        let mut s = Scrape {
            text: text.to_string(),
            ..Scrape::default()
        };
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some((name, kind)) = rest.split_once(' ') {
                    s.types.insert(name.to_string(), kind.trim().to_string());
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                if let Some((name, help)) = rest.split_once(' ') {
                    s.helps.insert(name.to_string(), help.trim().to_string());
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or(f64::NAN),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), Default::default()),
                Some((name, rest)) => {
                    let body = rest.trim_end_matches('}');
                    let mut labels = BTreeMap::new();
                    for pair in body.split("\",").filter(|p| !p.is_empty()) {
                        if let Some((k, v)) = pair.split_once("=\"") {
                            labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                        }
                    }
                    (name.to_string(), labels)
                }
            };
            s.samples.push((name, labels, value));
        }
        s
    }

    /// The value of the sample with exactly this name and label set.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .map(|(_, _, v)| *v)
    }

    /// The value, or 0 when the series does not exist (a counter never incremented).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Every sample of this name.
    pub fn all(&self, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, v)| (l.clone(), *v))
            .collect()
    }
}

/// GETs a URL: the status and the body.
pub async fn get_text(url: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(url)
        .timeout(GET_TIMEOUT)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// Scrapes `/metrics` at `base` (`http://ADDR`).
async fn scrape(base: &str) -> Scrape {
    let (status, text) = get_text(&format!("{base}/metrics")).await;
    assert_eq!(status, 200, "/metrics: {text}");
    Scrape::parse(&text)
}

/// How often [`scrape_until`] scrapes again.
const SCRAPE_STEP: Duration = Duration::from_millis(100);

/// Scrapes `base` until `done` holds (or panics after `timeout`, showing the last scrape).
pub async fn scrape_until(base: &str, timeout: Duration, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let start = std::time::Instant::now();
    loop {
        let s = scrape(base).await;
        if done(&s) {
            return s;
        }
        if start.elapsed() > timeout {
            panic!("metrics never got there; last scrape:\n{}", s.text);
        }
        tokio::time::sleep(SCRAPE_STEP).await;
    }
}

/// GETs `url` with an optional `Authorization` header: the status and the `WWW-Authenticate`
/// header.
pub async fn get_with_auth(url: &str, auth: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(url).timeout(GET_TIMEOUT);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.unwrap();
    let www = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (resp.status().as_u16(), www)
}
