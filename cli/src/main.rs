//! The `tally` command: the whole pipeline on one machine, rules tooling for
//! ops, and tools for the AWS path.
//!
//! Exit codes: 0 success; 1 the command failed, or found what it checks for
//! (invalid rules, failing rule tests, drift), and the message says why and
//! what to do; 2 the command line was wrong.

mod aws;
mod cost;
mod demo;
mod error_line;
mod local_pipeline;
mod rules;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// tally keeps a fleet-wide daily total of every counter a fleet of
/// instances uploads to S3, alerts on-call when ops' rules say so, and
/// writes each day's totals back for downstream jobs.
#[derive(Debug, Parser)]
#[command(
    name = "tally",
    version,
    about,
    after_help = "Exit codes: 0 success; 1 the command failed or found problems (the message says what to do); 2 the command line was wrong."
)]
struct Cli {
    /// Log what each stage does (to stderr); RUST_LOG refines it.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch the whole pipeline work on a sample fleet, on this machine.
    ///
    /// Builds the sample fleet (100 instances × 100 counters) in a temporary
    /// directory and runs a few compressed "minutes" of uploads through the
    /// embedded runtime (the Lambda code over SQLite and a directory), with
    /// the rules in rules-config/: totals changing, an alert firing and
    /// resolving, where the snapshot is, and how long each round took.
    ///
    /// Example: tally demo
    Demo(demo::DemoArgs),
    /// Run the pipeline on a directory laid out like the bucket.
    ///
    /// Ingests what is under DIR/counters/ (a progress bar on a terminal),
    /// then watches DIR and reacts to creates, overwrites and deletes within
    /// a second. Alerts go to stdout as JSON lines; snapshots to
    /// DIR/totals/<date> and DIR/totals/<date>.json. State lives in an
    /// embedded database, so a restart resumes without re-alerting. Ctrl-C
    /// stops cleanly.
    ///
    /// Example: tally run --bucket ./bucket --alerts alerts.jsonl
    Run(run::RunArgs),
    /// Check, test and try out ops' rules.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Ingest what already is in an S3 bucket (a first deploy).
    ///
    /// Lists the counters prefix (one date, or all) and runs each object
    /// through the ingest code, as the Lambda would on its event. Reads the
    /// state table's name from TALLY_STATE_TABLE (or --state-table); honours
    /// AWS_ENDPOINT_URL and the usual AWS configuration.
    ///
    /// Example: tally backfill --bucket my-counters --date 2015-11-16
    Backfill(aws::backfill::BackfillArgs),
    /// Recompute a date's totals from the state table and repair drift.
    ///
    /// Checks by default and exits 1 when the totals table disagrees with
    /// the state table, naming each drifted total; --repair writes the
    /// recomputed partial items and totals.
    ///
    /// Example: tally reconcile --date 2015-11-16 --repair
    Reconcile(aws::reconcile::ReconcileArgs),
    /// Run one Lambda handler once on an event file, as Lambda would.
    ///
    /// Reads the same environment variables as the function.
    ///
    /// Example: tally invoke ingest --event tests/fixtures/aws-events/s3-put.json
    Invoke(aws::invoke::InvokeArgs),
    /// The whole AWS pipeline on an AWS-compatible endpoint (moto's server).
    #[command(subcommand)]
    Dev(aws::dev::DevCommand),
    /// What tally costs on AWS per month, next to the per-counter design it
    /// replaces.
    ///
    /// Example: tally cost --instances 100 --counters 100 --period 60
    Cost(cost::CostArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.verbose {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tally: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Rules(command) => rules::run(command).await,
            Command::Backfill(args) => aws::backfill::run(args).await,
            Command::Reconcile(args) => aws::reconcile::run(args).await,
            Command::Invoke(args) => aws::invoke::run(args).await,
            Command::Dev(command) => aws::dev::run(command).await,
            Command::Cost(args) => cost::run(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tally: {}", error_line::error_line(&e));
            ExitCode::FAILURE
        }
    }
}
