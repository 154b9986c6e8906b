//! The commands, one module each. A command's `run` builds what it needs from the config (the
//! store, or the daemon's [`Engine`](crate::daemon::engine::Engine)) and prints what a function of
//! its own returns as text (`status_text`, `dead_text`, ...), so the text can be tested without
//! a process. `main.rs` only parses the command line and calls `run`. Here: compiling a config
//! into [`Settings`], and what several commands share.
//!
//! `status`, `check`, `dead list` and `dead show` also print JSON ([`Output::Json`]): each builds
//! one serializable report, and the text is written from the same report, so the two never tell
//! different stories. The JSON shapes are documented in the README ("Scripting: JSON output");
//! fields are added, never renamed or removed.

pub mod check;
pub mod dead;
pub mod migrate_store;
pub mod once;
pub mod purge;
pub mod status;
pub mod templates;
pub mod test_rule;
pub mod verify;

use crate::outbox::store::Store;

use crate::daemon::settings::Settings;

/// What a command prints: text for people, or one JSON document for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// Lines for a terminal.
    #[default]
    Text,
    /// One pretty-printed JSON document on stdout.
    Json,
}

/// A report as the JSON document a command prints, with its final newline.
fn json_document<T: serde::Serialize>(report: &T) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(report)?;
    text.push('\n');
    Ok(text)
}

/// A Unix time in milliseconds as a time (`None` out of range); JSON writes it as RFC 3339.
fn time_of_ms(ms: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_millis(ms)
}

/// Opens the store a command reads (on PostgreSQL, shared with the running replicas: nothing
/// is fenced, since a command writes no poll state).
async fn open_store_for_cli(settings: &Settings) -> anyhow::Result<Store> {
    Store::open_configured(&settings.base.store, None).await.map_err(|e| match e {
        crate::outbox::store::StoreError::Locked { path } => anyhow::anyhow!(
            "the store at {path} is in use by a running notifier; stop it first (sled allows one process per store), or read its state from /metrics on the address it listens on ({})",
            settings.base.listen
        ),
        other => other.into(),
    })
}

/// Text from outside (a receiver's response, a reason quoting it, a record id) made safe to print
/// on a terminal: control characters (ESC, CSI, BEL, backspace, carriage return, newline, DEL,
/// the C1 range) and the invisible bidirectional overrides that reorder what a line shows are
/// written as `\u{..}` escapes, and a backslash as `\\` so an escape cannot be faked.
fn terminal_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() || bidi {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}
