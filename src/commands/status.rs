//! `status`: per clinic and resource, the checkpoint and the last poll; per destination, what is
//! queued, retrying and dead; read from the store. [`StatusReport`] is what both the text and
//! the JSON (`--output json`) are written from.

use super::{json_document, open_store_for_cli, terminal_safe, Output};
use crate::daemon::health::stale_after;
use crate::daemon::settings::{load_settings, Settings};
use crate::outbox::store::Store;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

/// `status`: per resource and per destination, from the store.
pub async fn run(config: &Path, output: Output) -> anyhow::Result<ExitCode> {
    let settings = load_settings(config)?;
    let store = open_store_for_cli(&settings).await?;
    print!("{}", status_output(&settings, &store, output).await?);
    Ok(ExitCode::SUCCESS)
}

/// What `status` prints, as text or JSON.
pub async fn status_output(
    settings: &Settings,
    store: &Store,
    output: Output,
) -> anyhow::Result<String> {
    let report = status_report(settings, store).await?;
    match output {
        Output::Text => Ok(report_text(&report, settings.base.is_fleet())),
        Output::Json => json_document(&report),
    }
}

/// The text of `status`.
pub async fn status_text(settings: &Settings, store: &Store) -> anyhow::Result<String> {
    status_output(settings, store, Output::Text).await
}

/// Everything `status` knows, in the shape `--output json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// Each clinic with its resources (one clinic, `default`, without a `clinics:` section).
    pub clinics: Vec<ClinicStatus>,
    /// Each configured destination, by name.
    pub destinations: Vec<DestinationStatus>,
    /// Changes kept in the journal.
    pub journal_changes: u64,
    /// Where the store is: a sled directory, or `postgres://host:port/db` (never a password).
    pub store: String,
}

/// One clinic in [`StatusReport`].
#[derive(Debug, Clone, Serialize)]
pub struct ClinicStatus {
    /// Its name under `clinics:` (`default` without that section).
    pub name: String,
    /// The resources it polls.
    pub resources: Vec<ResourceStatus>,
    /// On PostgreSQL, the replica whose lease on this clinic has not expired (it polls the
    /// clinic); `null` on sled, and while no replica holds it.
    pub polled_by: Option<LeaseHolder>,
}

/// The replica polling a clinic, from the shared store's leases.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseHolder {
    /// The replica's name: host (a pod's name), process id and a random tag.
    pub replica: String,
    /// Seconds until its lease runs out unless renewed.
    pub lease_expires_in_s: f64,
}

/// One resource of one clinic in [`StatusReport`].
#[derive(Debug, Clone, Serialize)]
pub struct ResourceStatus {
    /// The resource's key under `resources:`.
    pub name: String,
    /// The since value of the next poll; `null` before the first poll.
    pub next_since: Option<DateTime<Utc>>,
    /// The last poll; `null` before the first.
    pub last_poll: Option<LastPoll>,
    /// When the last successful poll ended.
    pub last_success: Option<DateTime<Utc>>,
    /// No successful poll within the stale window (`watchdog.stale_after`, or three intervals).
    pub stale: bool,
    /// Seconds since the last successful poll ended, when there was one.
    pub seconds_since_success: Option<i64>,
    /// Records stored (snapshots, and those of a baseline not yet merged).
    pub records_known: u64,
    /// The silent baseline, while it runs or until the first poll after it.
    pub baseline: Option<BaselineStatus>,
}

/// The last poll of a resource.
#[derive(Debug, Clone, Serialize)]
pub struct LastPoll {
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Whether it succeeded.
    pub ok: bool,
    /// Why it failed (scrubbed: no key, no body); `null` on success.
    pub error: Option<String>,
    /// Failed polls in a row.
    pub consecutive_failures: u32,
    /// Records it fetched.
    pub records: u64,
    /// Changes it detected.
    pub changes: u64,
}

/// A resource's baseline in [`ResourceStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct BaselineStatus {
    /// Whether its last page is stored.
    pub finished: bool,
    /// The page it reads next.
    pub next_page: u32,
    /// Pages stored so far.
    pub pages: u64,
    /// Records stored so far.
    pub records: u64,
    /// The since it reads from.
    pub since: DateTime<Utc>,
}

/// One destination in [`StatusReport`].
#[derive(Debug, Clone, Serialize)]
pub struct DestinationStatus {
    /// Its key under `destinations:`.
    pub name: String,
    /// `webhook`, `email`, `slack`, `teams`, `discord` or `google_chat`.
    pub kind: String,
    /// Deliveries waiting for their first attempt.
    pub queued: u64,
    /// Deliveries waiting to be retried.
    pub retrying: u64,
    /// Dead letters.
    pub dead: u64,
    /// Set while its deliveries fail: since when and why.
    pub failing: Option<Failing>,
    /// Its digest, for a destination with `digest:`: what waits and when it goes.
    pub digest: Option<DigestStatus>,
    /// Deliveries held by its quiet hours (part of `queued` and `retrying`), by clinic and the
    /// time they are held until, earliest first; empty without `quiet_hours`.
    pub held: Vec<Held>,
}

/// What waits in a destination's digests.
#[derive(Debug, Clone, Serialize)]
pub struct DigestStatus {
    /// When windows close (`every 1h`, `at 08:00, 13:00`), in each clinic's zone.
    pub schedule: String,
    /// Changes waiting in its digests.
    pub waiting: u64,
    /// When the next digest goes out (`null` while nothing waits).
    pub next_close: Option<DateTime<Utc>>,
}

/// Deliveries of one clinic held by a destination's quiet hours until one time.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    /// The clinic whose changes they are.
    pub clinic: String,
    /// How many.
    pub count: u64,
    /// When they are sent, in UTC.
    pub until: DateTime<Utc>,
    /// The same time on the clinic's clock (RFC 3339 with its offset).
    pub until_local: String,
    /// The clinic's time zone, which the quiet hours are read in.
    pub timezone: String,
}

/// A failing destination.
#[derive(Debug, Clone, Serialize)]
pub struct Failing {
    /// Since when.
    pub since: DateTime<Utc>,
    /// The last attempt's reason (scrubbed).
    pub reason: String,
}

/// Reads everything `status` shows from the store.
pub async fn status_report(settings: &Settings, store: &Store) -> anyhow::Result<StatusReport> {
    let now = Utc::now();
    let leases: HashMap<String, LeaseHolder> = match store.postgres() {
        None => HashMap::new(),
        Some(pg) => pg
            .leases()
            .await?
            .into_iter()
            .filter(|l| l.expires_in_ms > 0)
            .map(|l| {
                let holder = LeaseHolder {
                    replica: l.owner,
                    lease_expires_in_s: l.expires_in_ms as f64 / 1000.0,
                };
                (l.clinic, holder)
            })
            .collect(),
    };
    let mut clinics = Vec::new();
    for c in &settings.base.clinics {
        let mut resources = Vec::new();
        for r in &c.resources {
            resources.push(resource_status(settings, store, c, r, now).await?);
        }
        clinics.push(ClinicStatus {
            name: c.name.clone(),
            resources,
            polled_by: leases.get(&c.name).cloned(),
        });
    }
    let queued = store.outbox_counts().await?;
    let mut dead: HashMap<String, u64> = HashMap::new();
    for (_, d) in store.dead_entries().await? {
        *dead.entry(d.entry.destination).or_default() += 1;
    }
    let failing: HashMap<String, crate::outbox::store::DestHealth> =
        store.failing_destinations().await?.into_iter().collect();
    let digests = crate::daemon::digest::pending(store, &settings.pipeline).await?;
    let mut dests: Vec<_> = settings.pipeline.destinations.values().collect();
    dests.sort_by(|a, b| a.name.cmp(&b.name));
    let mut held = HashMap::new();
    for d in &dests {
        // Only destinations with quiet hours hold deliveries, so only their entries are read.
        if d.quiet_hours.is_some() {
            held.insert(
                d.name.clone(),
                held_of(settings, store, &d.name, now).await?,
            );
        }
    }
    let destinations = dests
        .into_iter()
        .map(|d| {
            let (q, r) = queued.get(&d.name).copied().unwrap_or_default();
            DestinationStatus {
                name: d.name.clone(),
                kind: d.kind_str().to_string(),
                queued: q,
                retrying: r,
                dead: dead.get(&d.name).copied().unwrap_or_default(),
                failing: failing.get(&d.name).map(|h| Failing {
                    since: h.since,
                    reason: h.reason.clone(),
                }),
                digest: d.digest.as_ref().map(|g| {
                    let p = digests.get(&d.name).cloned().unwrap_or_default();
                    DigestStatus {
                        schedule: g.schedule.describe(),
                        waiting: p.members as u64,
                        next_close: p.next,
                    }
                }),
                held: held.remove(&d.name).unwrap_or_default(),
            }
        })
        .collect();
    Ok(StatusReport {
        clinics,
        destinations,
        journal_changes: store.change_count().await? as u64,
        store: store.describe(),
    })
}

/// The entries of `destination` held by quiet hours now, grouped by clinic and end.
async fn held_of(
    settings: &Settings,
    store: &Store,
    destination: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<Held>> {
    let mut groups: std::collections::BTreeMap<(i64, String), u64> = Default::default();
    for (_, e) in store.outbox_entries(destination).await? {
        if let Some(hold) = e.held_now(now.timestamp_millis()) {
            *groups.entry((hold.until_ms, e.clinic)).or_default() += 1;
        }
    }
    let zone = |clinic: &str| {
        settings
            .base
            .clinics
            .iter()
            .find(|c| c.name == clinic)
            .map_or(chrono_tz::UTC, |c| c.clinicea.timezone)
    };
    Ok(groups
        .into_iter()
        .filter_map(|((until, clinic), count)| {
            let until = DateTime::from_timestamp_millis(until)?;
            let tz = zone(&clinic);
            Some(Held {
                until_local: until.with_timezone(&tz).to_rfc3339(),
                timezone: tz.name().to_string(),
                clinic,
                count,
                until,
            })
        })
        .collect())
}

/// One resource of one clinic: its next since, its last poll, what is known, baseline, staleness.
async fn resource_status(
    settings: &Settings,
    store: &Store,
    clinic: &crate::config::Clinic,
    r: &crate::config::Resource,
    now: DateTime<Utc>,
) -> anyhow::Result<ResourceStatus> {
    let name = clinic.name.as_str();
    let cp = store.checkpoint(name, &r.name).await?;
    let st = store.poll_status(name, &r.name).await?;
    let last_poll = st.last_finished.map(|t| LastPoll {
        finished_at: t,
        ok: st.last_error.is_none(),
        error: st.last_error.clone(),
        consecutive_failures: st.consecutive_failures,
        records: st.last_records,
        changes: st.last_changes,
    });
    let stale_window = stale_after(&settings.base, r);
    let since_success = st.last_success.map(|t| now - t);
    let baseline = store.baseline(name, &r.name).await?.and_then(|b| {
        let waiting_first_poll = cp.as_ref().is_some_and(|c| c.last_success_start.is_none());
        (b.finished.is_none() || waiting_first_poll).then(|| BaselineStatus {
            finished: b.finished.is_some(),
            next_page: b.next_page,
            pages: b.pages,
            records: b.records,
            since: b.since,
        })
    });
    Ok(ResourceStatus {
        name: r.name.clone(),
        next_since: cp.as_ref().map(|c| c.since(clinic.clinicea.overlap)),
        last_poll,
        last_success: st.last_success,
        stale: since_success.is_some_and(|d| d.to_std().unwrap_or_default() > stale_window),
        seconds_since_success: since_success.map(|d| d.num_seconds()),
        records_known: store.snapshot_count(name, &r.name).await? as u64
            + store.baseline_snapshot_count(name, &r.name).await? as u64,
        baseline,
    })
}

/// The text of a report: the clinics (by name when there are several), then the destinations.
fn report_text(report: &StatusReport, fleet: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let shared = report.store.starts_with("postgres://");
    if shared {
        let _ = writeln!(out, "Store: {} (shared by replicas)", report.store);
    }
    if fleet || shared {
        let _ = writeln!(out, "Clinics: {}", report.clinics.len());
        for c in &report.clinics {
            let names: Vec<&str> = c.resources.iter().map(|r| r.name.as_str()).collect();
            let owner = match (&c.polled_by, shared) {
                (Some(h), _) => format!(
                    ", polled by {} (lease {:.0}s)",
                    terminal_safe(&h.replica),
                    h.lease_expires_in_s
                ),
                (None, true) => ", polled by no replica now".to_string(),
                (None, false) => String::new(),
            };
            let _ = writeln!(out, "  {} ({}){owner}", c.name, names.join(", "));
            for r in &c.resources {
                let _ = writeln!(out, "    {}", resource_line(r));
            }
        }
    } else {
        let _ = writeln!(out, "Resources:");
        for r in report.clinics.iter().flat_map(|c| &c.resources) {
            let _ = writeln!(out, "  {}", resource_line(r));
        }
    }
    let _ = writeln!(out, "Destinations:");
    for d in &report.destinations {
        let mark = match &d.failing {
            Some(h) => format!(
                "  FAILING since {}: {}",
                h.since.to_rfc3339(),
                terminal_safe(&h.reason)
            ),
            None => String::new(),
        };
        let digest = match &d.digest {
            Some(g) => format!(
                ", digest {}: {} waiting{}",
                g.schedule,
                g.waiting,
                g.next_close
                    .map(|t| format!(", next at {}", t.to_rfc3339()))
                    .unwrap_or_default()
            ),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:<14} queued {}, retrying {}, dead {}{digest}{mark}",
            d.name, d.queued, d.retrying, d.dead
        );
        for h in &d.held {
            let _ = writeln!(out, "    {}", held_line(h, fleet));
        }
    }
    let _ = writeln!(out, "Changes in the journal: {}", report.journal_changes);
    out
}

/// A line of held deliveries: `held 3 until 2026-12-05 08:00 GMT (Europe/London),
/// 2026-12-05 08:00 UTC`, with the clinic in a fleet.
fn held_line(h: &Held, fleet: bool) -> String {
    let local = DateTime::parse_from_rfc3339(&h.until_local)
        .ok()
        .zip(h.timezone.parse::<chrono_tz::Tz>().ok())
        .map(|(t, tz)| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string())
        .unwrap_or_else(|| h.until_local.clone());
    let clinic = if fleet {
        format!(" of clinic {}", h.clinic)
    } else {
        String::new()
    };
    format!(
        "held {}{clinic} until {local} ({}), {} by quiet hours",
        h.count,
        h.timezone,
        h.until.format("%Y-%m-%d %H:%M UTC"),
    )
}

/// One resource's line of text.
fn resource_line(r: &ResourceStatus) -> String {
    let since = r
        .next_since
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| "never polled".into());
    let last = match &r.last_poll {
        None => "no poll yet".to_string(),
        Some(p) => match &p.error {
            None => format!(
                "ok at {} ({} records, {} changes)",
                p.finished_at.to_rfc3339(),
                p.records,
                p.changes
            ),
            Some(e) => format!(
                "FAILED at {} ({} in a row): {}",
                p.finished_at.to_rfc3339(),
                p.consecutive_failures,
                terminal_safe(e)
            ),
        },
    };
    let stale_note = match (r.stale, r.seconds_since_success) {
        (true, Some(s)) => format!("  STALE: no successful poll for {s}s"),
        _ => String::new(),
    };
    let baseline = match &r.baseline {
        Some(b) if !b.finished => format!(
            "; BASELINE in progress: page {} next, {} pages and {} records stored so far (since {})",
            b.next_page,
            b.pages,
            b.records,
            b.since.to_rfc3339()
        ),
        Some(b) => format!(
            "; baseline of {} records done, the first poll from the origin is next",
            b.records
        ),
        None => String::new(),
    };
    format!(
        "{:<14} next since {since}; last poll {last}; {} records known{baseline}{stale_note}",
        r.name, r.records_known
    )
}
