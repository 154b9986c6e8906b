//! The commands: each builds what it needs from the config and runs it. `main.rs` only parses the
//! command line and calls these.

use crate::config::{self, Base};
use crate::deliver::email::Mailer;
use crate::deliver::Deliverer;
use crate::ingest::client::Client;
use crate::ingest::poll::{self, PollCtx, PollError, PollReport};
use crate::outbox::entry::{DeadLetter, OutboxEntry, Wake};
use crate::outbox::store::Store;
use anyhow::Context;
use chrono::Utc;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Compiling a config all the way lives beside the engine that runs it; the commands use it.
pub use crate::daemon::settings::{compile, load_settings, load_settings_with, Settings};

/// Optional watchers of a running notifier (the `demo` command's live stream). The default watches
/// nothing, and then the notifier behaves exactly as without them.
#[derive(Clone, Default)]
pub struct Observers {
    /// Told about each change a poll stores, with its matched rules and destinations.
    pub poll: Option<mpsc::UnboundedSender<crate::ingest::poll::PollEvent>>,
    /// Told about each delivery attempt's outcome.
    pub deliveries: Option<mpsc::UnboundedSender<crate::deliver::Event>>,
}

impl Observers {
    /// Hands the delivery watcher, if any, to a deliverer.
    pub fn attach(&self, deliverer: Deliverer) -> Deliverer {
        match &self.deliveries {
            Some(tx) => deliverer.with_events(tx.clone()),
            None => deliverer,
        }
    }
}

/// Everything a running notifier holds.
pub struct Engine {
    /// The compiled settings.
    pub settings: Settings,
    /// The store.
    pub store: Store,
    /// The API client.
    pub client: Client,
    /// The deliverer.
    pub deliverer: Deliverer,
    /// Who watches its polls and deliveries.
    pub observers: Observers,
}

impl Engine {
    /// Opens the store and builds the client and deliverer.
    pub fn open(settings: Settings) -> anyhow::Result<Engine> {
        Engine::open_with(settings, Observers::default())
    }

    /// [`Engine::open`], with watchers of its polls and deliveries.
    pub fn open_with(settings: Settings, observers: Observers) -> anyhow::Result<Engine> {
        let store = Store::open(&settings.base.store.path, settings.base.store.cache_bytes)?;
        reduce_tombstones(&store, &settings.base)?;
        let client = Client::new(&settings.base.clinicea)?;
        let mailer = match &settings.smtp {
            Some(s) => Some(Arc::new(
                Mailer::new(s.clone()).map_err(|p| anyhow::anyhow!("smtp: {}", p.message))?,
            )),
            None => None,
        };
        let deliverer = observers.attach(Deliverer::new(
            store.clone(),
            settings.pipeline.destinations.clone(),
            mailer,
        )?);
        Ok(Engine {
            settings,
            store,
            client,
            deliverer,
            observers,
        })
    }

    /// The poll context for this engine.
    pub fn poll_ctx(
        &self,
        wake: Option<mpsc::UnboundedSender<Wake>>,
        cancel: CancellationToken,
    ) -> PollCtx {
        PollCtx {
            source: crate::model::DEFAULT_SOURCE.to_string(),
            store: self.store.clone(),
            client: self.client.clone(),
            pipeline: self.settings.pipeline.clone(),
            overlap: self.settings.base.clinicea.overlap,
            start_from: self.settings.base.clinicea.start_from,
            baseline: self.settings.base.clinicea.baseline,
            page_delay: self.settings.base.clinicea.page_delay,
            wake,
            cancel,
            observer: self.observers.poll.clone(),
        }
    }

    /// Polls every resource once, side by side.
    pub async fn poll_all(&self) -> Vec<(String, Result<PollReport, PollError>)> {
        let ctx = self.poll_ctx(None, CancellationToken::new());
        let mut set = tokio::task::JoinSet::new();
        for res in self.settings.base.resources.clone() {
            let ctx = ctx.clone();
            set.spawn(async move {
                let r = poll::poll_resource(&ctx, &res).await;
                (res.name.clone(), r)
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(r) = r {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Reduces the deleted records an older version stored whole to tombstones (see
/// [`crate::ingest::diff::tombstone`]); the work is done once per store.
fn reduce_tombstones(store: &Store, base: &Base) -> anyhow::Result<()> {
    let n = store.upgrade_snapshots_once("reduced-tombstones", |resource, id, raw| {
        let (id_field, status_field) = base.resources.iter().find(|r| r.name == resource).map_or(
            (config::defaults::ID_FIELD, config::defaults::STATUS_FIELD),
            |r| (r.id_field.as_str(), r.status_field.as_str()),
        );
        crate::ingest::diff::reduce_stored(raw, id_field, status_field, id)
    })?;
    if n > 0 {
        tracing::info!(
            reduced = n,
            "deleted records kept whole were reduced to their id and delete flag"
        );
    }
    Ok(())
}

/// `now - age`, or the earliest instant there is when that underflows (nothing is older).
pub fn cutoff_before(
    now: chrono::DateTime<Utc>,
    age: std::time::Duration,
) -> chrono::DateTime<Utc> {
    chrono::Duration::from_std(age)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC)
}

/// What one round of [`maintain_store`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Change journal entries past `store.journal_retention`.
    pub journal: usize,
    /// Dead letters past `store.dead_letter_retention`.
    pub dead: usize,
}

/// The store's housekeeping, by `once` and periodically by `run`: the change journal and the dead
/// letters kept to their retention periods (they hold patient data), and file modes tightened.
pub fn maintain_store(
    store: &Store,
    s: &config::StoreSettings,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<Maintenance> {
    let journal = store
        .prune_changes_before(cutoff_before(now, s.journal_retention))
        .context("pruning the change journal")?;
    let dead = store
        .purge_dead(Some(
            cutoff_before(now, s.dead_letter_retention).timestamp_millis(),
        ))
        .context("deleting expired dead letters")?;
    if journal > 0 {
        tracing::info!(removed = journal, "pruned the change journal");
    }
    if dead > 0 {
        tracing::info!(
            removed = dead,
            retention = ?s.dead_letter_retention,
            "deleted dead letters past their retention"
        );
    }
    store.tighten_permissions();
    Ok(Maintenance { journal, dead })
}

/// `once`: one poll of every resource, then deliver until nothing is due now.
pub async fn once_command(config: &Path) -> anyhow::Result<ExitCode> {
    let settings = load_settings(config)?;
    let engine = Engine::open(settings)?;
    let results = engine.poll_all().await;
    let mut ok = true;
    for (name, r) in &results {
        match r {
            Ok(rep) => println!(
                "{name}: {}{} pages, {} records, {} changes, {} deliveries queued{}",
                if rep.baseline_pages > 0 {
                    format!(
                        "baseline {} pages, {} records stored silently; then ",
                        rep.baseline_pages, rep.baseline_records
                    )
                } else {
                    String::new()
                },
                rep.pages,
                rep.records,
                rep.changes,
                rep.deliveries,
                if rep.skipped > 0 {
                    format!(", {} records skipped (no id)", rep.skipped)
                } else {
                    String::new()
                }
            ),
            Err(e) => {
                ok = false;
                println!("{name}: poll failed: {e}");
            }
        }
    }
    // A failed poll leaves its stored pages unflushed; nothing is sent before it is on disk.
    engine.store.flush().await?;
    engine.deliverer.bury_orphans()?;
    let out = engine.deliverer.deliver_all_due().await?;
    println!(
        "deliveries: {} attempted, {} delivered, {} to retry later, {} dead",
        out.attempted, out.delivered, out.retried, out.dead
    );
    let m = maintain_store(&engine.store, &engine.settings.base.store, Utc::now())?;
    if m.journal + m.dead > 0 {
        println!(
            "retention: {} journal entries and {} dead letters deleted",
            m.journal, m.dead
        );
    }
    engine.store.flush().await?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `check`: validate and print what would run.
pub fn check_command(config: &Path) -> anyhow::Result<ExitCode> {
    match load_settings(config) {
        Ok(s) => {
            print!("{}", summary(&s));
            println!("{}: OK", config.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A short, secret-free summary of what a config would run.
pub fn summary(s: &Settings) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let c = &s.base.clinicea;
    let _ = writeln!(
        out,
        "Clinicea: {} (auth: {:?}, timezone {}, overlap {:?})",
        c.base_url.origin().ascii_serialization(),
        c.auth,
        c.timezone,
        c.overlap
    );
    let _ = writeln!(out, "Resources:");
    for r in &s.base.resources {
        let _ = writeln!(
            out,
            "  {:<14} GET {} every {:?} ({}, pages from {} by {}, {} per page)",
            r.name, r.path, r.poll_interval, r.since_param, r.first_page, r.page_param, r.page_size
        );
    }
    let _ = writeln!(out, "Destinations:");
    let mut dests: Vec<_> = s.pipeline.destinations.values().collect();
    dests.sort_by(|a, b| a.name.cmp(&b.name));
    for d in dests {
        let where_ = match &d.target {
            crate::config::Target::Webhook(t) => crate::deliver::webhook::redacted_url(&t.url),
            crate::config::Target::Chat { url, .. } => {
                format!("{}://{}/…", url.scheme(), url.host_str().unwrap_or(""))
            }
            crate::config::Target::Email { to, template, .. } => {
                format!("{} recipient(s), template {template}", to.len())
            }
        };
        let _ = writeln!(
            out,
            "  {:<14} {:<11} {} (retries: {})",
            d.name,
            d.kind_str(),
            where_,
            d.retry.schedule.len()
        );
    }
    let _ = writeln!(out, "Rules:");
    for line in s.pipeline.rules.describe() {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(
        out,
        "Store: {}   Listen: {}",
        s.base.store.path.display(),
        s.base.listen
    );
    out
}

/// Arguments of `test-rule`.
#[derive(Debug, clap::Args)]
pub struct TestRuleArgs {
    /// The resource key the record belongs to.
    #[arg(long)]
    pub resource: String,
    /// A JSON file with the record as fetched now.
    #[arg(long)]
    pub record: PathBuf,
    /// A JSON file with the stored version before the change.
    #[arg(long)]
    pub previous: Option<PathBuf>,
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    // A fixture page (an array) is accepted: its first record is used.
    Ok(match v {
        serde_json::Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    })
}

/// `test-rule`: which rules match, why the others do not, and each delivery as it would be sent.
pub fn test_rule_command(config: &Path, args: &TestRuleArgs) -> anyhow::Result<ExitCode> {
    let settings = load_settings(config)?;
    let Some(res) = settings
        .base
        .resources
        .iter()
        .find(|r| r.name == args.resource)
    else {
        anyhow::bail!(
            "no resource {:?} in the config (have: {})",
            args.resource,
            settings
                .base
                .resources
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let record = read_json(&args.record)?;
    let previous = args.previous.as_deref().map(read_json).transpose()?;
    let id = crate::ingest::diff::record_id(&record, &res.id_field).map_err(|_| {
        anyhow::anyhow!(
            "the record has no usable id in field {:?} (set id_field for this resource)",
            res.id_field
        )
    })?;
    let spec = crate::ingest::diff::DiffSpec {
        source: crate::model::DEFAULT_SOURCE,
        resource: &res.name,
        id_field: &res.id_field,
        status_field: &res.status_field,
    };
    let Some(change) = crate::ingest::diff::diff(&spec, id, previous, record, Utc::now()) else {
        println!("No change: the record is identical to the previous version, so nothing is sent.");
        return Ok(ExitCode::SUCCESS);
    };
    let (id_key, note) = test_rule_id_key(&settings);
    print!("{}", describe_test(&settings, &change, &id_key));
    if let Some(note) = note {
        println!("\nNote: {note}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The key `test-rule` derives ids with: the store's when it exists and is free, so ids match what
/// the notifier would send; otherwise a one-off key, with a note saying so.
fn test_rule_id_key(settings: &Settings) -> (crate::model::IdKey, Option<String>) {
    let path = &settings.base.store.path;
    let one_off = "webhook-id and Message-ID above come from a one-off key";
    if !path.exists() {
        return (
            crate::model::IdKey::ephemeral(),
            Some(format!(
                "{one_off}: there is no store at {} yet, and the notifier's ids come from the key made in its store",
                path.display()
            )),
        );
    }
    match Store::open(path, settings.base.store.cache_bytes) {
        Ok(store) => (store.id_key().clone(), None),
        Err(e) => (
            crate::model::IdKey::ephemeral(),
            Some(format!(
                "{one_off}, since the store's key could not be read ({e}); the notifier's ids differ"
            )),
        ),
    }
}

/// The text `test-rule` prints for a change; ids are derived with `id_key`.
pub fn describe_test(
    settings: &Settings,
    change: &crate::model::Change,
    id_key: &crate::model::IdKey,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Change: {} {} (id {}), changed fields: [{}], server status: {}",
        change.resource,
        change.kind,
        change.id,
        change.changed_fields.join(", "),
        change.server_status.as_deref().unwrap_or("-")
    );
    let _ = writeln!(out, "\nRules:");
    for e in settings.pipeline.rules.explain(change) {
        if e.matched {
            let _ = writeln!(out, "  MATCH    {}", e.rule);
        } else {
            let _ = writeln!(
                out,
                "  no match {}: {}",
                e.rule,
                e.failed.as_deref().unwrap_or("")
            );
        }
    }
    let planned = settings.pipeline.plan(change, id_key);
    let _ = writeln!(out, "\nDeliveries ({}), nothing is sent:", planned.len());
    for p in planned {
        let _ = writeln!(out, "\n--- {} (rule {}) ---", p.destination, p.rule);
        match p.payload {
            Err(e) => {
                let _ = writeln!(out, "  would go to the dead letters: {e}");
            }
            Ok(crate::route::plan::Payload::Webhook { body }) => {
                let pretty = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| serde_json::to_string_pretty(&v).ok())
                    .unwrap_or(body);
                let _ = writeln!(
                    out,
                    "POST webhook, webhook-id: {}\n{pretty}",
                    change.change_id(id_key)
                );
            }
            Ok(crate::route::plan::Payload::Chat { body }) => {
                let _ = writeln!(out, "chat message body:\n{body}");
            }
            Ok(crate::route::plan::Payload::Email(m)) => {
                let _ = writeln!(
                    out,
                    "From: {}\nTo: {}\nSubject: {}\nMessage-ID: {}\n\n{}",
                    m.from, m.to, m.subject, m.message_id, m.text
                );
                if let Some(h) = m.html {
                    let _ = writeln!(out, "\n[HTML part]\n{h}");
                }
            }
        }
    }
    out
}

/// `status`: per resource and per destination, from the store.
pub fn status_command(config: &Path) -> anyhow::Result<ExitCode> {
    let settings = load_settings(config)?;
    let store = open_store_for_cli(&settings)?;
    print!("{}", status_text(&settings, &store)?);
    Ok(ExitCode::SUCCESS)
}

fn open_store_for_cli(settings: &Settings) -> anyhow::Result<Store> {
    Store::open(&settings.base.store.path, settings.base.store.cache_bytes).map_err(|e| match e {
        crate::outbox::store::StoreError::Locked { path } => anyhow::anyhow!(
            "the store at {path} is in use by a running notifier; stop it first (sled allows one process per store), or read its state from /metrics on the address it listens on ({})",
            settings.base.listen
        ),
        other => other.into(),
    })
}

/// The text of `status`.
pub fn status_text(settings: &Settings, store: &Store) -> anyhow::Result<String> {
    use std::fmt::Write;
    let mut out = String::new();
    let source = crate::model::DEFAULT_SOURCE;
    let now = Utc::now();
    let _ = writeln!(out, "Resources:");
    for r in &settings.base.resources {
        let cp = store.checkpoint(source, &r.name)?;
        let st = store.poll_status(source, &r.name)?;
        let since = cp
            .as_ref()
            .map(|c| c.since(settings.base.clinicea.overlap).to_rfc3339())
            .unwrap_or_else(|| "never polled".into());
        let last = match (&st.last_finished, &st.last_error) {
            (None, _) => "no poll yet".to_string(),
            (Some(t), None) => format!(
                "ok at {} ({} records, {} changes)",
                t.to_rfc3339(),
                st.last_records,
                st.last_changes
            ),
            (Some(t), Some(e)) => format!(
                "FAILED at {} ({} in a row): {}",
                t.to_rfc3339(),
                st.consecutive_failures,
                terminal_safe(e)
            ),
        };
        let stale = stale_after(settings, r);
        let stale_note = match st.last_success {
            Some(t) if (now - t).to_std().unwrap_or_default() > stale => {
                format!(
                    "  STALE: no successful poll for {}s",
                    (now - t).num_seconds()
                )
            }
            _ => String::new(),
        };
        let baseline = match store.baseline(source, &r.name)? {
            Some(b) if b.finished.is_none() => format!(
                "; BASELINE in progress: page {} next, {} pages and {} records stored so far (since {})",
                b.next_page,
                b.pages,
                b.records,
                b.since.to_rfc3339()
            ),
            Some(b) if cp.as_ref().is_some_and(|c| c.last_success_start.is_none()) => format!(
                "; baseline of {} records done, the first poll from the origin is next",
                b.records
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:<14} next since {since}; last poll {last}; {} records known{baseline}{stale_note}",
            r.name,
            store.snapshot_count(source, &r.name) + store.baseline_snapshot_count(source, &r.name)
        );
    }
    let _ = writeln!(out, "Destinations:");
    let mut queued: HashMap<String, (u64, u64)> = HashMap::new();
    for (dest, _, raw) in store.all_outbox()? {
        let e: OutboxEntry = serde_json::from_slice(&raw)?;
        let slot = queued.entry(dest).or_default();
        if e.attempts == 0 {
            slot.0 += 1;
        } else {
            slot.1 += 1;
        }
    }
    let mut dead: HashMap<String, u64> = HashMap::new();
    for (_, raw) in store.dead_entries()? {
        let d: DeadLetter = serde_json::from_slice(&raw)?;
        *dead.entry(d.entry.destination).or_default() += 1;
    }
    let failing: HashMap<String, crate::outbox::store::DestHealth> =
        store.failing_destinations()?.into_iter().collect();
    let mut names: Vec<&String> = settings.pipeline.destinations.keys().collect();
    names.sort();
    for n in names {
        let (q, r) = queued.get(n).copied().unwrap_or_default();
        let d = dead.get(n).copied().unwrap_or_default();
        let mark = match failing.get(n) {
            Some(h) => format!(
                "  FAILING since {}: {}",
                h.since.to_rfc3339(),
                terminal_safe(&h.reason)
            ),
            None => String::new(),
        };
        let _ = writeln!(out, "  {n:<14} queued {q}, retrying {r}, dead {d}{mark}");
    }
    let _ = writeln!(out, "Changes in the journal: {}", store.change_count());
    Ok(out)
}

/// How long a resource may go without a successful poll before it is stale.
pub fn stale_after(settings: &Settings, r: &config::Resource) -> std::time::Duration {
    settings.base.stale_after.unwrap_or(r.poll_interval * 3)
}

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
        #[arg(long, value_parser = parse_dur_arg)]
        older_than: Option<std::time::Duration>,
    },
}

pub(crate) fn parse_dur_arg(s: &str) -> Result<std::time::Duration, String> {
    config::parse_duration(s)
}

/// `dead ...`.
pub async fn dead_command(config: &Path, cmd: DeadCommand) -> anyhow::Result<ExitCode> {
    let settings = load_settings(config)?;
    let store = open_store_for_cli(&settings)?;
    let out = dead_text(&store, cmd)?;
    store.flush().await?;
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// Text from outside (a receiver's response, a reason quoting it, a record id) made safe to print
/// on a terminal: control characters (ESC, CSI, BEL, backspace, carriage return, newline, DEL,
/// the C1 range) and the invisible bidirectional overrides that reorder what a line shows are
/// written as `\u{..}` escapes, and a backslash as `\\` so an escape cannot be faked.
pub fn terminal_safe(s: &str) -> String {
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
            for (seq, raw) in entries {
                let d: DeadLetter = serde_json::from_slice(&raw)?;
                let _ = writeln!(
                    out,
                    "{seq}  {}  {}  {}  {} attempts  {}",
                    fmt_ms(d.died_ms),
                    terminal_safe(&d.entry.destination),
                    terminal_safe(&d.entry.event_type),
                    d.entry.attempts,
                    terminal_safe(&d.reason)
                );
            }
        }
        DeadCommand::Show { id } => {
            let raw = store
                .dead_get(id)?
                .ok_or_else(|| anyhow::anyhow!("no dead letter {id}"))?;
            let d: DeadLetter = serde_json::from_slice(&raw)?;
            // Everything printed here may have come from outside (the record id from the API,
            // reasons and responses from receivers): all of it goes through `terminal_safe`.
            let t = terminal_safe;
            let _ = writeln!(out, "Dead letter {id}");
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
            for raw in store.attempts(id)? {
                let a: crate::outbox::entry::AttemptLog = serde_json::from_slice(&raw)?;
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
                let raw = store
                    .dead_get(seq)?
                    .ok_or_else(|| anyhow::anyhow!("no dead letter {seq}"))?;
                let d: DeadLetter = serde_json::from_slice(&raw)?;
                let mut entry = d.entry;
                entry.attempts = 0;
                entry.next_attempt_ms = Utc::now().timestamp_millis();
                store.forget_attempts(seq)?;
                store.dead_to_outbox(seq, &entry.destination, &serde_json::to_vec(&entry)?)?;
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

/// The environment variable `verify` reads the secret from when no flag gives it.
pub const VERIFY_SECRET_ENV: &str = "CLINICEA_WEBHOOK_SECRET";
/// The older name of [`VERIFY_SECRET_ENV`], still read after it.
pub const VERIFY_SECRET_ENV_OLD: &str = "WEBHOOK_SECRET";

/// Arguments of `purge`.
#[derive(Debug, clap::Args)]
pub struct PurgeArgs {
    /// The resource key the record belongs to, as in the config (`leads`).
    #[arg(long)]
    pub resource: String,
    /// The record's id.
    #[arg(long)]
    pub id: String,
}

/// `purge`: erase everything stored about one record (an erasure request). Exits 1 when nothing
/// was stored about it.
pub async fn purge_command(config: &Path, args: &PurgeArgs) -> anyhow::Result<ExitCode> {
    let settings = load_settings(config)?;
    if !config::valid_name(&args.resource) {
        anyhow::bail!(
            "{:?} is not a resource key (letters, digits, '-', '_' and '.')",
            args.resource
        );
    }
    if args.id.trim().is_empty() || args.id.contains('\0') {
        anyhow::bail!("give the record's id with --id");
    }
    let store = open_store_for_cli(&settings)?;
    let erased = store.erase_record(crate::model::DEFAULT_SOURCE, &args.resource, &args.id)?;
    store.flush().await?;
    let (text, found) = purge_text(&settings, args, &erased);
    if found {
        print!("{text}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprint!("{text}");
        Ok(ExitCode::FAILURE)
    }
}

/// What `purge` prints, and whether anything was stored about the record.
pub fn purge_text(
    settings: &Settings,
    args: &PurgeArgs,
    erased: &crate::outbox::store::Erased,
) -> (String, bool) {
    use std::fmt::Write;
    let mut out = String::new();
    if erased.total() == 0 {
        let _ = write!(
            out,
            "Nothing is stored about {} record {:?}: no snapshot, journal entry, queued delivery or dead letter. Nothing was erased.",
            args.resource, args.id
        );
        if !settings
            .base
            .resources
            .iter()
            .any(|r| r.name == args.resource)
        {
            let _ = write!(out, " ({} is not a resource in the config.)", args.resource);
        }
        let _ = writeln!(out);
        return (out, false);
    }
    let _ = writeln!(
        out,
        "Erased {} record {:?} from the store at {}:",
        args.resource,
        args.id,
        settings.base.store.path.display()
    );
    for (n, what) in [
        (erased.snapshots, "snapshot"),
        (erased.changes, "change journal entries"),
        (erased.outbox, "queued deliveries"),
        (erased.dead, "dead letters"),
        (erased.attempts, "attempt logs"),
    ] {
        let _ = writeln!(out, "  {n:>4} {what}");
    }
    (out, true)
}

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The endpoint's secret (`whsec_...`). Discouraged: a command line is visible to every user
    /// of the machine (`ps`) and stays in the shell history; use --secret-file or the
    /// CLINICEA_WEBHOOK_SECRET environment variable.
    #[arg(long, conflicts_with = "secret_file")]
    pub secret: Option<String>,
    /// A file holding the endpoint's secret (`whsec_...`; surrounding whitespace is ignored).
    /// Without this and --secret, CLINICEA_WEBHOOK_SECRET (or WEBHOOK_SECRET) is read.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// The `webhook-id` header.
    #[arg(long)]
    pub id: Option<String>,
    /// The `webhook-timestamp` header.
    #[arg(long)]
    pub timestamp: Option<String>,
    /// The `webhook-signature` header.
    #[arg(long)]
    pub signature: Option<String>,
    /// A file of `name: value` header lines (as a receiver logged them) instead of the three flags.
    #[arg(long)]
    pub headers_file: Option<PathBuf>,
    /// The body, as received.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// A file with the body, as received.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Accept any timestamp age (for checking a logged request later).
    #[arg(long)]
    pub ignore_time: bool,
}

/// The secret `verify` uses: `--secret-file`, else `--secret` (with a warning on stderr), else
/// `env(CLINICEA_WEBHOOK_SECRET)`, else `env(WEBHOOK_SECRET)`. Errors never contain the secret.
pub fn verify_secret(
    args: &VerifyArgs,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<crate::deliver::webhook::Secret> {
    let (text, from) = if let Some(f) = &args.secret_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the secret file {}", f.display()))?;
        (text, format!("the secret file {}", f.display()))
    } else if let Some(s) = &args.secret {
        eprintln!(
            "warning: --secret puts the secret in the process list and the shell history; use --secret-file or {VERIFY_SECRET_ENV}"
        );
        (s.clone(), "--secret".to_string())
    } else if let Some(s) = env(VERIFY_SECRET_ENV).filter(|s| !s.trim().is_empty()) {
        (s, VERIFY_SECRET_ENV.to_string())
    } else if let Some(s) = env(VERIFY_SECRET_ENV_OLD).filter(|s| !s.trim().is_empty()) {
        (s, VERIFY_SECRET_ENV_OLD.to_string())
    } else {
        anyhow::bail!(
            "give the endpoint's secret with --secret-file PATH or the {VERIFY_SECRET_ENV} environment variable"
        );
    };
    crate::deliver::webhook::Secret::parse(&text).with_context(|| format!("the secret from {from}"))
}

/// `verify`: check a Standard Webhooks signature.
pub fn verify_command(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let secret = verify_secret(args, |name| std::env::var(name).ok())?;
    let mut id = args.id.clone();
    let mut ts = args.timestamp.clone();
    let mut sig = args.signature.clone();
    if let Some(f) = &args.headers_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        for line in text.lines() {
            if let Some((k, v)) = line.split_once(':') {
                let v = v.trim().to_string();
                match k.trim().to_ascii_lowercase().as_str() {
                    "webhook-id" => id = id.or(Some(v)),
                    "webhook-timestamp" => ts = ts.or(Some(v)),
                    "webhook-signature" => sig = sig.or(Some(v)),
                    _ => {}
                }
            }
        }
    }
    let body = match (&args.body, &args.body_file) {
        (Some(b), _) => b.clone().into_bytes(),
        (None, Some(f)) => {
            std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?
        }
        (None, None) => anyhow::bail!("give the body with --body or --body-file"),
    };
    let (Some(id), Some(ts), Some(sig)) = (id, ts, sig) else {
        anyhow::bail!(
            "need webhook-id, webhook-timestamp and webhook-signature (flags or --headers-file)"
        );
    };
    let now = if args.ignore_time {
        ts.parse::<i64>().unwrap_or(0)
    } else {
        Utc::now().timestamp()
    };
    match crate::deliver::webhook::verify(
        &secret,
        &id,
        &ts,
        &sig,
        &body,
        now,
        crate::deliver::webhook::DEFAULT_TOLERANCE,
    ) {
        Ok(()) => {
            println!("valid: the signature matches (webhook-id {id})");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("INVALID: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Arguments of `sandbox`.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Address to listen on. Only loopback unless --allow-remote: the /admin endpoints have no
    /// authentication.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Listen on a non-loopback address (another container, a test network): whoever reaches it
    /// can change its records and inject faults through /admin.
    #[arg(long)]
    pub allow_remote: bool,
    /// Seed for the generated records and their changes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The API key clients must send.
    #[arg(long, default_value = "sandbox-api-key", env = "SANDBOX_API_KEY")]
    pub api_key: String,
    /// How often records change on their own (0s: only through /admin).
    #[arg(long, default_value = "10s", value_parser = parse_dur_arg)]
    pub churn_every: std::time::Duration,
    /// Leads at start.
    #[arg(long, default_value_t = 137)]
    pub leads: usize,
    /// Patients at start.
    #[arg(long, default_value_t = 12)]
    pub patients: usize,
    /// Appointments at start.
    #[arg(long, default_value_t = 42)]
    pub appointments: usize,
    /// Serve every record in one page, whatever page is asked for (an endpoint that ignores the
    /// page parameter).
    #[arg(long)]
    pub ignore_paging: bool,
    /// How the feeds order records: modified (by change time), id, or unordered (reshuffled for
    /// every request).
    #[arg(long, default_value = "modified")]
    pub order: crate::kit::sandbox::Order,
    /// Random changes that land after each page request (they shift the pages under a client).
    #[arg(long, default_value_t = 0)]
    pub page_edits: u32,
    /// Seconds the sandbox's clock runs ahead of the host's (negative: behind); the `Date` header
    /// and the change times come from it.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub clock_offset_secs: i64,
}

/// `sandbox`: serve the simulated API until Ctrl-C.
pub async fn sandbox_command(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    if !args.allow_remote && !crate::net::egress::is_loopback_ip(args.listen.ip()) {
        anyhow::bail!(
            "refusing to listen on {}: it is not a loopback address, and the sandbox's /admin endpoints (change records, inject faults) have no authentication; pass --allow-remote to do it anyway (e.g. inside a container network)",
            args.listen
        );
    }
    let opts = crate::kit::sandbox::SandboxOptions {
        seed: args.seed,
        api_key: args.api_key,
        leads: args.leads,
        patients: args.patients,
        appointments: args.appointments,
        churn_every: (!args.churn_every.is_zero()).then_some(args.churn_every),
        ignore_paging: args.ignore_paging,
        order: args.order,
        page_edits: args.page_edits,
        clock_offset: chrono::TimeDelta::try_seconds(args.clock_offset_secs)
            .context("--clock-offset-secs is out of range")?,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("Clinicea sandbox on http://{addr} (API key from --api-key; made-up records only)");
    println!("  GET  /api/v1/leads?lastSyncTimestamp=...&intPageNo=0");
    println!("  GET  /api/v1/patients?lastSyncTimestamp=...&intPageNo=0");
    println!("  GET  /api/v3/appointments/getChanges?lastSyncDTime=...&pageNo=1&pageSize=100");
    println!("  POST /admin/{{resource}}, PATCH/DELETE /admin/{{resource}}/{{id}}, POST /admin/faults, POST /admin/churn, GET /admin/stats, GET/POST /admin/mode");
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        c2.cancel();
    });
    crate::kit::sandbox::Sandbox::new(opts)
        .serve(listener, cancel)
        .await?;
    Ok(ExitCode::SUCCESS)
}
