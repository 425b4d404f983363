//! The `tally` command.
//!
//! Exit codes: 0 success, 1 the command failed (the message says why and
//! what to do), 2 the command line was wrong.

mod demo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// tally keeps a fleet-wide daily total of every counter a fleet of instances
/// uploads to S3.
#[derive(Debug, Parser)]
#[command(name = "tally", version, about, long_about = None)]
struct Cli {
    /// Log what each stage does (to stderr).
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the ingest stage at work on a sample fleet, on this machine.
    ///
    /// Builds the seed's fleet (100 instances × 100 counters) in a directory
    /// laid out like the bucket, and runs rounds of uploads through the same
    /// ingest code the Lambda runs, over SQLite instead of DynamoDB: a first
    /// upload, an identical re-upload, a round where 10% of counters change,
    /// a broken body and a delete, and a late duplicate event. For each round
    /// it prints what was written and the DynamoDB write units it would cost,
    /// next to the seed's per-counter design.
    ///
    /// Example: tally demo --instances 1000
    Demo(demo::DemoArgs),
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
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tally: {e:#}");
            ExitCode::FAILURE
        }
    }
}
