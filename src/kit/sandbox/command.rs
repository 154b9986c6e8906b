//! `sandbox`: serve the simulated Clinicea API on its own until Ctrl-C, for rehearsing rules
//! against made-up records.

use super::fleet::{Fleet, MAX_CLINICS};
use super::{Order, SandboxOptions};
use anyhow::Context;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Arguments of `sandbox`.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Address to listen on. Only loopback unless --allow-remote: the /admin endpoints have no
    /// authentication.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: std::net::SocketAddr,
    /// Listen on a non-loopback address (another container, a test network): whoever reaches it
    /// can change its records and inject faults through /admin.
    #[arg(long)]
    pub(crate) allow_remote: bool,
    /// Seed for the generated records and their changes.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// The API key clients must send (with --clinics N above 1, organization i's is this key
    /// followed by -i).
    #[arg(long, default_value = "sandbox-api-key", env = "SANDBOX_API_KEY")]
    pub(crate) api_key: String,
    /// How many organizations to serve, each with its own key, records, faults and churn
    /// (1 to 10000).
    #[arg(long, default_value_t = 1, value_parser = parse_clinics)]
    pub(crate) clinics: usize,
    /// How often records change on their own (0s: only through /admin).
    #[arg(long, default_value = "10s", value_parser = crate::config::parse_duration)]
    pub(crate) churn_every: std::time::Duration,
    /// Leads at start.
    #[arg(long, default_value_t = 137)]
    pub(crate) leads: usize,
    /// Patients at start.
    #[arg(long, default_value_t = 12)]
    pub(crate) patients: usize,
    /// Appointments at start.
    #[arg(long, default_value_t = 42)]
    pub(crate) appointments: usize,
    /// Serve every record in one page, whatever page is asked for (an endpoint that ignores the
    /// page parameter).
    #[arg(long)]
    pub(crate) ignore_paging: bool,
    /// How the feeds order records: modified (by change time), id, or unordered (reshuffled for
    /// every request).
    #[arg(long, default_value = "modified")]
    pub(crate) order: Order,
    /// Random changes that land after each page request (they shift the pages under a client).
    #[arg(long, default_value_t = 0)]
    pub(crate) page_edits: u32,
    /// Seconds the sandbox's clock runs ahead of the host's (negative: behind); the `Date` header
    /// and the change times come from it.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub(crate) clock_offset_secs: i64,
}

/// Reads `--clinics`: a whole number from 1 to [`MAX_CLINICS`].
fn parse_clinics(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_CLINICS).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from 1 to {MAX_CLINICS}")),
    }
}

/// `sandbox`: serve the simulated API until Ctrl-C.
pub async fn run(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    if !args.allow_remote && !crate::net::egress::is_loopback_ip(args.listen.ip()) {
        anyhow::bail!(
            "refusing to listen on {}: it is not a loopback address, and the sandbox's /admin endpoints (change records, inject faults) have no authentication; pass --allow-remote to do it anyway (e.g. inside a container network)",
            args.listen
        );
    }
    let opts = SandboxOptions {
        seed: args.seed,
        api_key: args.api_key,
        clinics: args.clinics,
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
    let clinics = opts.clinics;
    let username = opts.username.clone();
    let fleet = tokio::task::spawn_blocking(move || Fleet::new(opts)).await?;
    if clinics == 1 {
        println!(
            "Clinicea sandbox on http://{addr} (API key from --api-key; made-up records only)"
        );
    } else {
        // The scheme, never the keys themselves.
        println!(
            "Clinicea sandbox on http://{addr} ({clinics} organizations; made-up records only)"
        );
        println!("  organization i (1 to {clinics}): API key = the --api-key value followed by -i, login user {username}-i");
        println!("  /admin/... is organization 1's, /clinics/{{i}}/admin/... organization i's; GET /admin/fleet counts them all");
    }
    println!("  GET  /api/v1/leads?lastSyncTimestamp=...&intPageNo=0");
    println!("  GET  /api/v1/patients?lastSyncTimestamp=...&intPageNo=0");
    println!("  GET  /api/v3/appointments/getChanges?lastSyncDTime=...&pageNo=1&pageSize=100");
    println!("  POST /admin/{{resource}}, PATCH/DELETE /admin/{{resource}}/{{id}}, POST /admin/faults, POST /admin/churn, GET /admin/stats, GET/POST /admin/mode, GET /admin/fleet");
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        c2.cancel();
    });
    fleet.serve(listener, cancel).await?;
    Ok(ExitCode::SUCCESS)
}
