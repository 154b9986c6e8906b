//! Keeping secrets out of text that leaves the process (errors, logs, stored reasons): the one
//! scrubber of secrets and URLs, the one walk along an error's chain of causes, and the form of a
//! URL that may be shown.
//!
//! Text from outside (an error body that echoes a request, a transport error that names the URL)
//! is scrubbed whole, before any cut, so no part of a secret survives at the edge of an excerpt.

use std::error::Error;
use url::Url;

/// What a secret is replaced with.
pub(crate) const REDACTED: &str = "[redacted]";

/// URL paths this short or shorter are left in scrubbed text: they carry no token (`/`, `/api`),
/// and replacing them would only mangle the text around them.
const MAX_PLAIN_PATH_BYTES: usize = 4;

/// The secrets one text must not show, each in every form it may take there.
///
/// No `Debug`: it holds the secrets themselves.
#[derive(Clone, Default)]
pub(crate) struct Scrubber {
    /// Every form of every secret, longest first once [`Scrubber::scrub`] runs.
    forms: Vec<String>,
}

impl Scrubber {
    /// A scrubber that removes nothing yet.
    pub(crate) fn new() -> Scrubber {
        Scrubber::default()
    }

    /// Adds a secret in every form a text that echoes a request may show it: as sent,
    /// percent-encoded the way [`crate::net::http::encode_query_value`] encodes query values
    /// (upper- and lowercase hex), form-encoded (`+` for a space, as servers often re-encode),
    /// and inside a JSON string. An empty secret adds nothing.
    pub(crate) fn secret(mut self, secret: &str) -> Scrubber {
        if secret.is_empty() {
            return self;
        }
        let encoded = crate::net::http::encode_query_value(secret);
        let lower_hex = lower_percent_hex(&encoded);
        let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let json = serde_json::to_string(secret).unwrap_or_default();
        let json = json.trim_matches('"').to_string();
        self.forms
            .extend([secret.to_string(), encoded, lower_hex, form, json]);
        self
    }

    /// Adds every secret of `secrets` (see [`Scrubber::secret`]).
    pub(crate) fn secrets<'a>(self, secrets: impl IntoIterator<Item = &'a str>) -> Scrubber {
        secrets.into_iter().fold(self, Scrubber::secret)
    }

    /// Adds the parts of a URL that carry credentials: the whole URL, its query string, its
    /// password, and its path unless it is very short (chat webhook paths are tokens). The host is
    /// kept: it helps, and it is not secret.
    pub(crate) fn url(self, url: &Url) -> Scrubber {
        let path = url.path();
        let path = (path.len() > MAX_PLAIN_PATH_BYTES).then_some(path);
        self.secret(url.as_str())
            .secret(url.query().unwrap_or(""))
            .secret(url.password().unwrap_or(""))
            .secret(path.unwrap_or(""))
    }

    /// `text` with every form of every secret replaced by [`REDACTED`], longest first, so no
    /// form is left half replaced by a shorter one.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut forms: Vec<&str> = self.forms.iter().map(String::as_str).collect();
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup();
        let mut out = text.to_string();
        for f in forms {
            if out.contains(f) {
                out = out.replace(f, REDACTED);
            }
        }
        out
    }
}

/// A percent-encoded text with the two hex digits after each `%` in lowercase.
fn lower_percent_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut after_percent = 0;
    for c in encoded.chars() {
        if c == '%' {
            after_percent = 2;
            out.push(c);
        } else if after_percent > 0 {
            after_percent -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The causes of `e` (its sources, not `e` itself), outermost first.
pub(crate) fn sources<'a>(
    e: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(e.source(), |s: &&'a (dyn Error + 'static)| (*s).source())
}

/// The messages of `e`'s causes, outermost first, joined by `": "`; empty when it has none.
/// Scrub the result: a cause may name a URL.
pub(crate) fn source_text(e: &(dyn Error + 'static)) -> String {
    sources(e)
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// The message of `e`'s deepest cause, if it has one. Scrub the result: a cause may name a URL.
pub(crate) fn root_cause(e: &(dyn Error + 'static)) -> Option<String> {
    sources(e).last().map(|s| s.to_string())
}

/// `scheme://host:port/…`: the part of a URL that may be shown (paths, query strings and
/// userinfo often carry tokens).
pub(crate) fn redacted_url(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{}://{host}:{p}/…", url.scheme()),
        None => format!("{}://{host}/…", url.scheme()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_of_a_secret_is_scrubbed_and_an_empty_one_is_ignored() {
        let pw = "p w/ä";
        let s = Scrubber::new().secret(pw).secret("");
        for form in ["p w/ä", "p%20w%2F%C3%A4", "p%20w%2f%c3%a4", "p+w%2F%C3%A4"] {
            assert_eq!(s.scrub(&format!("<{form}>")), "<[redacted]>", "{form}");
        }
        assert_eq!(s.scrub("as it was"), "as it was");
    }

    #[test]
    fn a_url_loses_its_path_query_and_password_but_keeps_its_host() {
        let u = Url::parse("https://me:pw@h.example/hook/abc?token=SECRET").unwrap();
        let t = Scrubber::new().url(&u).scrub(&format!(
            "failed for {u} with token=SECRET and pw and /hook/abc at h.example"
        ));
        assert!(
            !t.contains("SECRET") && !t.contains("pw") && !t.contains("/hook/abc"),
            "{t}"
        );
        assert!(t.contains("h.example"), "{t}");
        // A short path is no token, and stays.
        let short = Url::parse("https://h.example/api").unwrap();
        assert_eq!(Scrubber::new().url(&short).scrub("GET /api"), "GET /api");
    }

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn Error + 'static))
        }
    }

    #[test]
    fn the_chain_of_causes_is_walked_outermost_first() {
        let e = Layer(
            "request failed",
            Some(Box::new(Layer(
                "connect error",
                Some(Box::new(Layer("connection refused", None))),
            ))),
        );
        assert_eq!(source_text(&e), "connect error: connection refused");
        assert_eq!(root_cause(&e).as_deref(), Some("connection refused"));
        let alone = Layer("alone", None);
        assert_eq!(source_text(&alone), "");
        assert_eq!(root_cause(&alone), None);
    }

    #[test]
    fn a_shown_url_is_scheme_host_and_port() {
        let u = Url::parse("https://user:pw@hooks.example:8443/T0/B0/SECRET?x=1").unwrap();
        assert_eq!(redacted_url(&u), "https://hooks.example:8443/…");
        let u = Url::parse("http://127.0.0.1/hook").unwrap();
        assert_eq!(redacted_url(&u), "http://127.0.0.1/…");
    }
}
