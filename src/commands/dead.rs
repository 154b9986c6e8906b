//! `dead`: list, show, re-drive and purge dead letters. A letter is named by its number (as
//! `dead list` prints it) or by its `webhook-id` (what a receiver logged); one change sent to
//! several destinations (or recipients) is one `webhook-id` on several letters, and naming it
//! names all of them. [`DeadLetterView`] is the shape `--output json` prints.

use super::{json_document, open_store_for_cli, terminal_safe, time_of_ms, Output};
use crate::daemon::maintain::cutoff_before;
use crate::daemon::settings::load_settings;
use crate::outbox::entry::{AttemptLog, DeadLetter};
use crate::outbox::store::Store;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::Path;
use std::process::ExitCode;

/// `dead` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DeadCommand {
    /// List dead letters: number, when, clinic, destination, resource, record id, webhook-id.
    List,
    /// Show dead letters with their attempts log.
    Show {
        /// A dead letter's number (as `dead list` prints it) or a webhook-id (`msg_...`), which
        /// names every letter of that change.
        id: DeadRef,
    },
    /// Put dead letters back in their destination's queue.
    Retry {
        /// Numbers or webhook-ids to re-drive.
        ids: Vec<DeadRef>,
        /// Re-drive every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters.
    Purge {
        /// Only those that died longer ago than this (e.g. 7d).
        #[arg(long, value_parser = crate::config::parse_duration)]
        older_than: Option<std::time::Duration>,
    },
}

/// How a command line names dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadRef {
    /// By number (the letter's sequence number).
    Seq(u64),
    /// By the `webhook-id` of its change.
    WebhookId(String),
}

impl std::str::FromStr for DeadRef {
    type Err = String;

    fn from_str(s: &str) -> Result<DeadRef, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<u64>() {
            return Ok(DeadRef::Seq(n));
        }
        if s.starts_with("msg_")
            && s.len() > 4
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Ok(DeadRef::WebhookId(s.to_string()));
        }
        Err("a dead letter's number (as `dead list` prints it) or a webhook-id (msg_...)".into())
    }
}

impl std::fmt::Display for DeadRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeadRef::Seq(n) => write!(f, "{n}"),
            DeadRef::WebhookId(id) => f.write_str(id),
        }
    }
}

impl From<u64> for DeadRef {
    fn from(n: u64) -> DeadRef {
        DeadRef::Seq(n)
    }
}

/// `dead ...`.
pub async fn run(config: &Path, cmd: DeadCommand, output: Output) -> anyhow::Result<ExitCode> {
    let settings = load_settings(config)?;
    let store = open_store_for_cli(&settings).await?;
    let out = dead_output(&store, cmd, output).await?;
    store.flush().await?;
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// The dead letters a reference names, oldest first; an error when it names none.
async fn resolve(store: &Store, r: &DeadRef) -> anyhow::Result<Vec<(u64, DeadLetter)>> {
    let found = match r {
        DeadRef::Seq(seq) => store
            .dead_get(*seq)
            .await?
            .map(|d| (*seq, d))
            .into_iter()
            .collect(),
        // Dead letters are few and this is a command, not the daemon: a scan is fine.
        DeadRef::WebhookId(id) => store
            .dead_entries()
            .await?
            .into_iter()
            .filter(|(_, d)| d.entry.webhook_id == *id)
            .collect::<Vec<_>>(),
    };
    if found.is_empty() {
        anyhow::bail!("no dead letter {r}");
    }
    Ok(found)
}

/// One dead letter as `--output json` prints it (`dead list`: without `attempt_log`). It holds
/// no record contents: the payload stays in the store.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterView {
    /// Its number, for `dead show` and `dead retry`.
    pub id: u64,
    /// The `webhook-id` of its change (shared by the letters of one change).
    pub webhook_id: String,
    /// The clinic the change came from.
    pub clinic: String,
    /// The destination it was for.
    pub destination: String,
    /// The resource of the record.
    pub resource: String,
    /// The record's id.
    pub record_id: String,
    /// The event type (`leads.added`).
    pub event_type: String,
    /// The first rule that matched.
    pub rule: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the delivery was planned.
    pub created_at: Option<DateTime<Utc>>,
    /// When it died.
    pub died_at: Option<DateTime<Utc>>,
    /// Why it died.
    pub reason: String,
    /// `dead show` only: each failed attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_log: Option<Vec<AttemptView>>,
}

/// One attempt in [`DeadLetterView::attempt_log`].
#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    /// The attempt's number, from 1.
    pub attempt: u32,
    /// When it started.
    pub at: Option<DateTime<Utc>>,
    /// HTTP status or SMTP code; `null` when there was no answer.
    pub status: Option<u16>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// `success`, `retry` or `fail`.
    pub verdict: String,
    /// Why it was retried or failed.
    pub reason: Option<String>,
    /// The start of the response (scrubbed).
    pub response: String,
}

/// What `dead list --output json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct DeadList {
    /// Every dead letter, oldest first.
    pub dead_letters: Vec<DeadLetterView>,
}

fn view(seq: u64, d: &DeadLetter, log: Option<Vec<AttemptLog>>) -> DeadLetterView {
    let e = &d.entry;
    DeadLetterView {
        id: seq,
        webhook_id: e.webhook_id.clone(),
        clinic: e.clinic.clone(),
        destination: e.destination.clone(),
        resource: e.resource.clone(),
        record_id: e.record_id.clone(),
        event_type: e.event_type.clone(),
        rule: e.rule.clone(),
        attempts: e.attempts,
        created_at: time_of_ms(e.created_ms),
        died_at: time_of_ms(d.died_ms),
        reason: d.reason.clone(),
        attempt_log: log.map(|l| l.into_iter().map(attempt_view).collect()),
    }
}

fn attempt_view(a: AttemptLog) -> AttemptView {
    use crate::model::Verdict;
    let (verdict, reason) = match a.verdict {
        Verdict::Success => ("success", None),
        Verdict::Retry { reason, .. } => ("retry", Some(reason)),
        Verdict::Fail { reason } => ("fail", Some(reason)),
    };
    AttemptView {
        attempt: a.attempt,
        at: time_of_ms(a.at_ms),
        status: a.status,
        duration_ms: a.duration_ms,
        verdict: verdict.to_string(),
        reason,
        response: a.response,
    }
}

fn fmt_time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Runs a `dead` subcommand against a store and returns what it prints as text.
pub async fn dead_text(store: &Store, cmd: DeadCommand) -> anyhow::Result<String> {
    dead_output(store, cmd, Output::Text).await
}

/// Runs a `dead` subcommand against a store and returns what it prints. `retry` and `purge`
/// print text either way: what they did, one line each.
pub async fn dead_output(
    store: &Store,
    cmd: DeadCommand,
    output: Output,
) -> anyhow::Result<String> {
    use std::fmt::Write;
    let mut out = String::new();
    // Everything printed as text may have come from outside (the record id from the API,
    // reasons and responses from receivers): all of it goes through `terminal_safe`.
    let t = terminal_safe;
    match cmd {
        DeadCommand::List => {
            let letters: Vec<DeadLetterView> = store
                .dead_entries()
                .await?
                .iter()
                .map(|(seq, d)| view(*seq, d, None))
                .collect();
            if output == Output::Json {
                return json_document(&DeadList {
                    dead_letters: letters,
                });
            }
            if letters.is_empty() {
                let _ = writeln!(out, "No dead letters.");
            }
            for d in letters {
                let _ = writeln!(
                    out,
                    "{}  {}  {}  {}  {} {}  {}  {}  {} attempts  {}",
                    d.id,
                    fmt_time(d.died_at),
                    t(&d.clinic),
                    t(&d.destination),
                    t(&d.resource),
                    t(&d.record_id),
                    t(&d.webhook_id),
                    t(&d.event_type),
                    d.attempts,
                    t(&d.reason)
                );
            }
        }
        DeadCommand::Show { id } => {
            let mut letters = Vec::new();
            for (seq, d) in resolve(store, &id).await? {
                letters.push(view(seq, &d, Some(store.attempts(seq).await?)));
            }
            if output == Output::Json {
                return json_document(&DeadList {
                    dead_letters: letters,
                });
            }
            for (i, d) in letters.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                let _ = writeln!(out, "Dead letter {}", d.id);
                let _ = writeln!(out, "  clinic:      {}", t(&d.clinic));
                let _ = writeln!(out, "  destination: {}", t(&d.destination));
                let _ = writeln!(
                    out,
                    "  event:       {} ({} {})",
                    t(&d.event_type),
                    t(&d.resource),
                    t(&d.record_id)
                );
                let _ = writeln!(out, "  webhook-id:  {}", t(&d.webhook_id));
                let _ = writeln!(out, "  rule:        {}", t(&d.rule));
                let _ = writeln!(out, "  created:     {}", fmt_time(d.created_at));
                let _ = writeln!(out, "  died:        {}", fmt_time(d.died_at));
                let _ = writeln!(out, "  reason:      {}", t(&d.reason));
                let _ = writeln!(out, "  attempts:");
                for a in d.attempt_log.iter().flatten() {
                    let verdict = match &a.reason {
                        Some(r) => format!("{} ({r})", a.verdict),
                        None => a.verdict.clone(),
                    };
                    let _ = writeln!(
                        out,
                        "    #{} at {}: status {} in {} ms, {}; response: {}",
                        a.attempt,
                        fmt_time(a.at),
                        a.status.map_or("-".to_string(), |s| s.to_string()),
                        a.duration_ms,
                        t(&verdict),
                        t(&a.response)
                    );
                }
            }
        }
        DeadCommand::Retry { ids, all } => {
            let targets: Vec<(u64, DeadLetter)> = if all {
                store.dead_entries().await?
            } else {
                let mut found = Vec::new();
                for r in &ids {
                    for (seq, d) in resolve(store, r).await? {
                        if !found.iter().any(|(s, _)| *s == seq) {
                            found.push((seq, d));
                        }
                    }
                }
                found
            };
            if targets.is_empty() {
                anyhow::bail!("name dead letters to retry (numbers or webhook-ids), or --all");
            }
            for (seq, d) in targets {
                let mut entry = d.entry;
                entry.attempts = 0;
                entry.next_attempt_ms = Utc::now().timestamp_millis();
                store.forget_attempts(seq).await?;
                store.dead_to_outbox(&entry).await?;
                let _ = writeln!(
                    out,
                    "{seq}: queued again for {} ({})",
                    t(&entry.destination),
                    t(&entry.webhook_id)
                );
            }
        }
        DeadCommand::Purge { older_than } => {
            let cutoff = older_than.map(|d| cutoff_before(Utc::now(), d).timestamp_millis());
            let n = store.purge_dead(cutoff).await?;
            let _ = writeln!(out, "Purged {n} dead letters.");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_is_named_by_number_or_webhook_id() {
        assert_eq!("42".parse::<DeadRef>(), Ok(DeadRef::Seq(42)));
        assert_eq!(
            "msg_0123abcd".parse::<DeadRef>(),
            Ok(DeadRef::WebhookId("msg_0123abcd".into()))
        );
        for bad in ["", "msg_", "-1", "abc", "msg_a b", "msg_../x"] {
            assert!(bad.parse::<DeadRef>().is_err(), "{bad:?}");
        }
    }
}
