//! `purge`: erase everything stored about one record (an erasure request).

use super::open_store_for_cli;
use crate::config;
use crate::daemon::settings::{load_settings, Settings};
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `purge`.
#[derive(Debug, clap::Args)]
pub struct PurgeArgs {
    /// The clinic the record belongs to, as named under `clinics:`; needed only when the config
    /// has more than one. A clinic no longer in the config can still be named: its records stay
    /// in the store until erased.
    #[arg(long)]
    pub(crate) clinic: Option<String>,
    /// The resource key the record belongs to, as in the config (`leads`).
    #[arg(long)]
    pub(crate) resource: String,
    /// The record's id.
    #[arg(long)]
    pub(crate) id: String,
}

/// `purge`: erase everything stored about one record (an erasure request). Exits 1 when nothing
/// was stored about it.
pub async fn run(config: &Path, args: &PurgeArgs) -> anyhow::Result<ExitCode> {
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
    let clinic = match &args.clinic {
        Some(c) if config::valid_name(c) => c.clone(),
        Some(c) => anyhow::bail!("{c:?} is not a clinic name (letters, digits, '-', '_' and '.')"),
        None => match settings.base.clinics.as_slice() {
            [only] => only.name.clone(),
            all => anyhow::bail!(
                "this config has {} clinics: name the record's with --clinic ({})",
                all.len(),
                all.iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    let store = open_store_for_cli(&settings).await?;
    let erased = store
        .erase_record(&clinic, &args.resource, &args.id)
        .await?;
    store.flush().await?;
    let (text, found) = purge_text(&settings, &clinic, args, &erased);
    if found {
        print!("{text}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprint!("{text}");
        Ok(ExitCode::FAILURE)
    }
}

/// What `purge` prints, and whether anything was stored about the record.
pub(crate) fn purge_text(
    settings: &Settings,
    clinic: &str,
    args: &PurgeArgs,
    erased: &crate::outbox::store::Erased,
) -> (String, bool) {
    use std::fmt::Write;
    let mut out = String::new();
    if erased.total() == 0 {
        let _ = write!(
            out,
            "Nothing is stored about {}{} record {:?}: no snapshot, journal entry, queued delivery or dead letter. Nothing was erased.",
            clinic_prefix(settings, clinic), args.resource, args.id
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
        "Erased {}{} record {:?} from the store at {}:",
        clinic_prefix(settings, clinic),
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

/// `clinic north's ` when the config has clinics to tell apart, else nothing.
fn clinic_prefix(settings: &Settings, clinic: &str) -> String {
    if settings.base.is_fleet() || clinic != crate::model::DEFAULT_CLINIC {
        format!("clinic {clinic}'s ")
    } else {
        String::new()
    }
}
