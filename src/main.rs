//! The `clinicea-notifier` binary: parse the command line, start logging, hand over to the library.

use clap::{Parser, Subcommand};
use clinicea_notifier::commands::{
    check, dead, migrate_store, once, purge, status, templates, test_rule, verify, Output,
};
use clinicea_notifier::daemon;
use clinicea_notifier::kit::{demo, sandbox};
use clinicea_notifier::runtime;
use clinicea_notifier::telemetry::{self, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc, not glibc's malloc: deliveries and pages are allocated on one Tokio worker and freed
/// on another, and glibc then takes the owning arena's lock on every such free (about a third
/// of the daemon's CPU in perf, with the wake-ups it causes). See `bench/README.md`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at its start ([`runtime::JEMALLOC_OPTIONS`]).
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8; 46] = runtime::JEMALLOC_OPTIONS;

/// Signed, reliable webhooks, chat messages and staff emails for Clinicea.
#[derive(Debug, Parser)]
#[command(name = "clinicea-notifier", version, about)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        env = "CLINICEA_NOTIFIER_CONFIG",
        default_value = "clinicea-notifier.yaml"
    )]
    config: PathBuf,
    /// Log format: pretty for people, json for machines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    /// More detail in the logs (-v, -vv); record contents never appear in them, and other
    /// crates stay at warnings unless RUST_LOG names them.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less detail in the logs (-q, -qq).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    quiet: u8,
    /// What status, check, dead list and dead show print: text for people, or one JSON
    /// document for scripts (the README documents its shape).
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Poll every resource forever, deliver, serve /metrics, /healthz and /readyz.
    Run,
    /// Poll every resource once, deliver until nothing is due now, then exit (0 when every poll succeeded).
    Once,
    /// Validate the config, templates and environment; print what would run.
    Check,
    /// Show which rules match a change and print each delivery as it would be sent; sends nothing.
    TestRule(test_rule::TestRuleArgs),
    /// Per resource: checkpoint and last poll; per destination: queued, retrying, dead.
    Status,
    /// Inspect and re-drive dead letters.
    #[command(subcommand)]
    Dead(dead::DeadCommand),
    /// Erase everything stored about one record: snapshot, journal, queued deliveries, dead letters.
    Purge(purge::PurgeArgs),
    /// Copy a sled store into an empty PostgreSQL store, one way (stop the notifier first).
    MigrateStore(migrate_store::MigrateStoreArgs),
    /// Write the shipped templates into a folder to edit them (files already there are kept).
    Templates(templates::TemplatesArgs),
    /// Check a Standard Webhooks signature (for people writing receivers).
    Verify(verify::VerifyArgs),
    /// Serve a simulated Clinicea API with generated, changing data.
    Sandbox(sandbox::command::SandboxArgs),
    /// Run the whole product locally: sandbox, webhook receiver, SMTP catcher and the notifier.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let mut verbosity = cli.verbose as i8 - cli.quiet as i8;
    if matches!(cli.command, Command::Demo(_)) {
        // The demo prints its own live stream on stdout; logs (stderr) show errors only unless -v.
        verbosity -= 2;
    }
    telemetry::init_tracing(cli.log_format, verbosity);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let config = cli.config;
    let output = cli.output;
    let json_capable = matches!(
        cli.command,
        Command::Status
            | Command::Check
            | Command::Dead(dead::DeadCommand::List | dead::DeadCommand::Show { .. })
    );
    if output == Output::Json && !json_capable {
        anyhow::bail!("--output json is for status, check, dead list and dead show");
    }
    rt.block_on(async move {
        match cli.command {
            Command::Run => daemon::run_command(&config).await,
            Command::Once => once::run(&config).await,
            Command::Check => check::run(&config, output).await,
            Command::TestRule(args) => test_rule::run(&config, &args),
            Command::Status => status::run(&config, output).await,
            Command::Dead(cmd) => dead::run(&config, cmd, output).await,
            Command::Purge(args) => purge::run(&config, &args).await,
            Command::MigrateStore(args) => migrate_store::run(&config, &args).await,
            Command::Verify(args) => verify::run(&args),
            Command::Templates(args) => templates::run(&args),
            Command::Sandbox(args) => sandbox::command::run(args).await,
            Command::Demo(args) => demo::run(args).await,
        }
    })
}
