//! Chat messages: the services a chat destination may post to, how a record value is escaped for
//! each so it shows as the text it is, and the JSON body each service expects, cut to its limits.
//!
//! This is what planning renders at poll time (the body is stored in the outbox and sent as is);
//! posting it and reading the service's answer is the sink's part (`deliver::chat`).

use crate::config::ChatKind;
use crate::model::truncate_utf8;
use serde_json::{json, Value};

/// What is appended to a message that had to be cut.
pub(crate) const TRUNCATION_MARKER: &str = "… [truncated]";

/// Slack shows at most 40,000 characters of a message's `text`.
pub(crate) const SLACK_MAX_CHARS: usize = 40_000;
/// Discord rejects a `content` longer than 2,000 characters.
pub(crate) const DISCORD_MAX_CHARS: usize = 2_000;
/// Teams rejects a Workflows webhook payload above about 28 KB; this is the whole JSON body.
pub(crate) const TEAMS_MAX_BODY_BYTES: usize = 28_000;
/// Google Chat rejects a message above 32,000 bytes; this is the whole JSON body.
pub(crate) const GOOGLE_CHAT_MAX_BODY_BYTES: usize = 32_000;

/// Cuts `text` to at most `max` characters, ending with [`TRUNCATION_MARKER`] when cut.
fn cut_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let keep = max.saturating_sub(TRUNCATION_MARKER.chars().count());
    let mut out: String = text.chars().take(keep).collect();
    out.push_str(TRUNCATION_MARKER);
    out
}

/// A zero-width space: invisible, but it breaks the syntax a value would otherwise form
/// (`<users/all>`, `@everyone`, `](`) where the service has no escape for it.
const ZWSP: char = '\u{200B}';

/// Escapes one value from a record (anything a template prints with `{{...}}`) for the chat
/// service it goes to, so that it shows as the text it is and never becomes a mention, a link or
/// formatting. Templates' own text is not escaped: a template may use the service's markup.
///
/// * Slack: `&`, `<`, `>` as entities, as Slack asks (`<!channel>`, `<@U123>`, `<url|text>` are
///   made of them).
/// * Teams (Adaptive Card Markdown, a CommonMark subset) and Discord (Markdown): a backslash
///   before every character Markdown gives a meaning (emphasis, links, headings, quotes, code,
///   spoilers, `<...>` autolinks and mentions such as `<@id>`). Discord also gets a zero-width
///   space after the `@` of `@everyone` and `@here`, so they stay text even where
///   `allowed_mentions` is not honoured.
/// * Google Chat: a zero-width space after every `<` (`<users/all>`, `<users/123>` and
///   `<url|text>` are its mention and link syntax, with no escape) and between `]` and `(` (a
///   Markdown link, for spaces whose app reads Markdown).
pub(crate) fn escape(kind: ChatKind, value: &str) -> String {
    let mut out = String::with_capacity(value.len() + value.len() / 8);
    for (i, c) in value.char_indices() {
        let rest = &value[i + c.len_utf8()..];
        match kind {
            ChatKind::Slack => match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                c => out.push(c),
            },
            ChatKind::Teams | ChatKind::Discord => {
                if matches!(
                    c,
                    '\\' | '*' | '_' | '~' | '`' | '|' | '<' | '>' | '[' | ']' | '#'
                ) {
                    out.push('\\');
                }
                out.push(c);
                // Only before the two words Discord reads as everyone-mentions, so an email
                // address copied out of a message has no invisible character in it.
                if c == '@'
                    && kind == ChatKind::Discord
                    && (rest.starts_with("everyone") || rest.starts_with("here"))
                {
                    out.push(ZWSP);
                }
            }
            ChatKind::GoogleChat => {
                if c == '(' && out.ends_with(']') {
                    out.push(ZWSP);
                }
                out.push(c);
                if c == '<' {
                    out.push(ZWSP);
                }
            }
        }
    }
    out
}

fn envelope(kind: ChatKind, text: &str) -> Value {
    match kind {
        ChatKind::Slack | ChatKind::GoogleChat => json!({ "text": text }),
        // No @everyone / role / user pings from record contents.
        ChatKind::Discord => json!({ "content": text, "allowed_mentions": { "parse": [] } }),
        ChatKind::Teams => json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [{ "type": "TextBlock", "text": text, "wrap": true }]
                }
            }]
        }),
    }
}

fn to_text(v: &Value) -> String {
    // Serializing a `Value` cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

/// The JSON body for one message of `text`, cut with [`TRUNCATION_MARKER`] to the service's limit:
/// Slack `{"text"}` (at most [`SLACK_MAX_CHARS`]), Teams an Adaptive Card with one wrapping
/// `TextBlock` (body at most [`TEAMS_MAX_BODY_BYTES`]), Discord `{"content"}` (at most
/// [`DISCORD_MAX_CHARS`], `allowed_mentions` empty so nothing in it can ping), Google Chat
/// `{"text"}` (body at most [`GOOGLE_CHAT_MAX_BODY_BYTES`]).
///
/// `text` is the rendered template, whose record values are already escaped for `kind` (see
/// [`escape`]); the template's own markup is sent as written.
pub(crate) fn body(kind: ChatKind, text: &str) -> String {
    match kind {
        ChatKind::Slack => to_text(&envelope(kind, &cut_chars(text, SLACK_MAX_CHARS))),
        ChatKind::Discord => to_text(&envelope(kind, &cut_chars(text, DISCORD_MAX_CHARS))),
        ChatKind::Teams => cut_to_body(kind, text, TEAMS_MAX_BODY_BYTES),
        ChatKind::GoogleChat => cut_to_body(kind, text, GOOGLE_CHAT_MAX_BODY_BYTES),
    }
}

/// Cuts the text until the whole serialized body fits in `max` bytes (JSON escaping can make the
/// body longer than the text, so the size is measured after serializing).
fn cut_to_body(kind: ChatKind, text: &str, max: usize) -> String {
    let full = to_text(&envelope(kind, text));
    if full.len() <= max {
        return full;
    }
    let build = |keep: usize| {
        let mut t = truncate_utf8(text, keep).to_string();
        t.push_str(TRUNCATION_MARKER);
        to_text(&envelope(kind, &t))
    };
    // Binary search for the longest prefix whose body fits.
    let (mut lo, mut hi) = (0usize, text.len().min(max));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if build(mid).len() <= max {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    build(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &str) -> Value {
        serde_json::from_str(b).unwrap()
    }

    #[test]
    fn body_shapes() {
        // The body carries the rendered text as it is: values were escaped while rendering, and
        // the template's own markup (a Slack link) must survive.
        assert_eq!(
            parse(&body(
                ChatKind::Slack,
                "hi <https://clinic.example|open> & co"
            )),
            json!({"text": "hi <https://clinic.example|open> & co"})
        );
        assert_eq!(
            parse(&body(ChatKind::GoogleChat, "hi")),
            json!({"text": "hi"})
        );
        assert_eq!(
            parse(&body(ChatKind::Discord, "hi @everyone")),
            json!({"content": "hi @everyone", "allowed_mentions": {"parse": []}})
        );
        let t = parse(&body(ChatKind::Teams, "hi"));
        assert_eq!(t["type"], "message");
        let a = &t["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(a["content"]["type"], "AdaptiveCard");
        assert_eq!(a["content"]["version"], "1.4");
        assert_eq!(
            a["content"]["body"][0],
            json!({"type": "TextBlock", "text": "hi", "wrap": true})
        );
    }

    #[test]
    fn values_are_escaped_for_each_service() {
        let hostile = "<users/all> [click](https://evil.example) @everyone <@123> **x** a_b";
        assert_eq!(
            escape(ChatKind::Slack, hostile),
            "&lt;users/all&gt; [click](https://evil.example) @everyone &lt;@123&gt; **x** a_b"
        );
        assert_eq!(
            escape(ChatKind::Slack, "<!channel> & co"),
            "&lt;!channel&gt; &amp; co"
        );
        let md = r"\<users/all\> \[click\](https://evil.example) @everyone \<@123\> \*\*x\*\* a\_b";
        assert_eq!(escape(ChatKind::Teams, hostile), md);
        assert_eq!(
            escape(ChatKind::Discord, hostile),
            md.replace("@everyone", "@\u{200B}everyone")
        );
        assert_eq!(
            escape(ChatKind::Discord, "@here a@b.example"),
            "@\u{200B}here a@b.example"
        );
        assert_eq!(
            escape(ChatKind::GoogleChat, hostile),
            "<\u{200B}users/all> [click]\u{200B}(https://evil.example) @everyone <\u{200B}@123> **x** a_b"
        );
        // Plain values are left alone.
        for kind in [
            ChatKind::Slack,
            ChatKind::Teams,
            ChatKind::Discord,
            ChatKind::GoogleChat,
        ] {
            assert_eq!(
                escape(kind, "Ayesha Khan, +92 300 1234567 (Website)"),
                "Ayesha Khan, +92 300 1234567 (Website)"
            );
        }
    }

    #[test]
    fn long_messages_are_cut_with_a_marker() {
        let long = "é".repeat(50_000);
        let d = parse(&body(ChatKind::Discord, &long));
        let c = d["content"].as_str().unwrap();
        assert_eq!(c.chars().count(), DISCORD_MAX_CHARS);
        assert!(c.ends_with(TRUNCATION_MARKER));
        let s = parse(&body(ChatKind::Slack, &long));
        assert_eq!(s["text"].as_str().unwrap().chars().count(), SLACK_MAX_CHARS);
        // Quotes double in JSON: the byte limit is on the serialized body.
        let quoted = "\"".repeat(40_000);
        let t = body(ChatKind::Teams, &quoted);
        assert!(
            t.len() <= TEAMS_MAX_BODY_BYTES && t.len() > TEAMS_MAX_BODY_BYTES - 100,
            "{}",
            t.len()
        );
        assert!(parse(&t)["attachments"][0]["content"]["body"][0]["text"]
            .as_str()
            .unwrap()
            .ends_with(TRUNCATION_MARKER));
        let g = body(ChatKind::GoogleChat, &long);
        assert!(
            g.len() <= GOOGLE_CHAT_MAX_BODY_BYTES && g.len() > GOOGLE_CHAT_MAX_BODY_BYTES - 100
        );
        assert!(parse(&g)["text"]
            .as_str()
            .unwrap()
            .ends_with(TRUNCATION_MARKER));
        // Short messages are untouched.
        assert_eq!(parse(&body(ChatKind::Discord, "short"))["content"], "short");
    }
}
