//! `dead`: list, show, re-drive and purge dead letters.

use super::{open_store_for_cli, terminal_safe};
use crate::daemon::maintain::cutoff_before;
use crate::daemon::settings::load_settings;
use crate::outbox::store::Store;
use chrono::Utc;
use std::path::Path;
use std::process::ExitCode;

/// `dead` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DeadCommand {
    /// List dead letters.
    List,
    /// Show one dead letter with its attempts log.
    Show {
        /// The dead letter's id (as `dead list` prints it).
        id: u64,
    },
    /// Put dead letters back in their destination's queue.
    Retry {
        /// Ids to re-drive.
        ids: Vec<u64>,
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

/// `dead ...`.
pub async fn run(config: &Path, cmd: DeadCommand) -> anyhow::Result<ExitCode> {
    let settings = load_settings(config)?;
    let store = open_store_for_cli(&settings)?;
    let out = dead_text(&store, cmd)?;
    store.flush().await?;
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Runs a `dead` subcommand against a store and returns what it prints.
pub fn dead_text(store: &Store, cmd: DeadCommand) -> anyhow::Result<String> {
    use std::fmt::Write;
    let mut out = String::new();
    match cmd {
        DeadCommand::List => {
            let entries = store.dead_entries()?;
            if entries.is_empty() {
                let _ = writeln!(out, "No dead letters.");
            }
            for (seq, d) in entries {
                let _ = writeln!(
                    out,
                    "{seq}  {}  {}  {}  {}  {} attempts  {}",
                    fmt_ms(d.died_ms),
                    terminal_safe(&d.entry.clinic),
                    terminal_safe(&d.entry.destination),
                    terminal_safe(&d.entry.event_type),
                    d.entry.attempts,
                    terminal_safe(&d.reason)
                );
            }
        }
        DeadCommand::Show { id } => {
            let d = store
                .dead_get(id)?
                .ok_or_else(|| anyhow::anyhow!("no dead letter {id}"))?;
            // Everything printed here may have come from outside (the record id from the API,
            // reasons and responses from receivers): all of it goes through `terminal_safe`.
            let t = terminal_safe;
            let _ = writeln!(out, "Dead letter {id}");
            let _ = writeln!(out, "  clinic:      {}", t(&d.entry.clinic));
            let _ = writeln!(out, "  destination: {}", t(&d.entry.destination));
            let _ = writeln!(
                out,
                "  event:       {} ({} {})",
                t(&d.entry.event_type),
                t(&d.entry.resource),
                t(&d.entry.record_id)
            );
            let _ = writeln!(out, "  webhook-id:  {}", t(&d.entry.webhook_id));
            let _ = writeln!(out, "  rule:        {}", t(&d.entry.rule));
            let _ = writeln!(out, "  created:     {}", fmt_ms(d.entry.created_ms));
            let _ = writeln!(out, "  died:        {}", fmt_ms(d.died_ms));
            let _ = writeln!(out, "  reason:      {}", t(&d.reason));
            let _ = writeln!(out, "  attempts:");
            for a in store.attempts(id)? {
                let _ = writeln!(
                    out,
                    "    #{} at {}: status {} in {} ms, {}; response: {}",
                    a.attempt,
                    fmt_ms(a.at_ms),
                    a.status.map_or("-".to_string(), |s| s.to_string()),
                    a.duration_ms,
                    t(&format!("{:?}", a.verdict)),
                    t(&a.response)
                );
            }
        }
        DeadCommand::Retry { ids, all } => {
            let targets: Vec<u64> = if all {
                store.dead_entries()?.into_iter().map(|(s, _)| s).collect()
            } else {
                ids
            };
            if targets.is_empty() {
                anyhow::bail!("name dead letter ids to retry, or --all");
            }
            for seq in targets {
                let d = store
                    .dead_get(seq)?
                    .ok_or_else(|| anyhow::anyhow!("no dead letter {seq}"))?;
                let mut entry = d.entry;
                entry.attempts = 0;
                entry.next_attempt_ms = Utc::now().timestamp_millis();
                store.forget_attempts(seq)?;
                store.dead_to_outbox(seq, &entry.destination, &entry)?;
                let _ = writeln!(out, "{seq}: queued again for {}", entry.destination);
            }
        }
        DeadCommand::Purge { older_than } => {
            let cutoff = older_than.map(|d| cutoff_before(Utc::now(), d).timestamp_millis());
            let n = store.purge_dead(cutoff)?;
            let _ = writeln!(out, "Purged {n} dead letters.");
        }
    }
    Ok(out)
}
