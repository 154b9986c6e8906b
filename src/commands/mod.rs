//! The commands, one module each. A command's `run` builds what it needs from the config (the
//! store, or the daemon's [`Engine`](crate::daemon::engine::Engine)) and prints what a function of
//! its own returns as text (`status_text`, `dead_text`, ...), so the text can be tested without
//! a process. `main.rs` only parses the command line and calls `run`. Here: compiling a config
//! into [`Settings`], and what several commands share.

pub mod check;
pub mod dead;
pub mod once;
pub mod purge;
pub mod status;
pub mod test_rule;
pub mod verify;

use crate::outbox::store::Store;

use crate::daemon::settings::Settings;

fn open_store_for_cli(settings: &Settings) -> anyhow::Result<Store> {
    Store::open(&settings.base.store.path, settings.base.store.cache_bytes).map_err(|e| match e {
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
