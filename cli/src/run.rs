//! `tally run`: the embedded pipeline on a directory, until Ctrl-C.
//!
//! Human messages go to stderr; stdout carries only alerts, one JSON object
//! per line, so `tally run ... | jq` works.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tally_core::rules::RuleSet;
use tally_embedded::notifier::JsonLinesNotifier;
use tally_rules::stage::RulesReport;

use crate::error_line::error_line;
use crate::local_pipeline::{CycleReport, LocalPipeline, LocalPipelineConfig};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  tally run --bucket ./bucket
  tally run --bucket ./bucket --alerts alerts.jsonl --rules rules-config
  tally run --bucket ./bucket --once     # process what is there, exit 0")]
pub struct RunArgs {
    /// The directory laid out like the bucket: <DIR>/counters/<date>/<instance>.
    #[arg(long, value_name = "DIR")]
    bucket: PathBuf,
    /// The database holding the tables and the stages' positions (default:
    /// <DIR>/.tally/tally.sqlite). Keep it to resume after a restart.
    #[arg(long, value_name = "PATH")]
    state: Option<PathBuf>,
    /// Also append each alert, as a JSON line, to this file.
    #[arg(long, value_name = "FILE")]
    alerts: Option<PathBuf>,
    /// Load the rules from *.yaml in this folder instead of the ones built in.
    #[arg(long, value_name = "DIR")]
    rules: Option<PathBuf>,
    /// Process what is in the directory now, then exit (0 on success).
    #[arg(long)]
    once: bool,
    /// The uploads' key prefix.
    #[arg(long, default_value = "counters")]
    prefix: String,
    /// The snapshots' key prefix.
    #[arg(long, default_value = "totals")]
    snapshot_prefix: String,
    /// Alert on this many days, counting back from today (UTC); older
    /// dates get their snapshot only. Raise it to alert on an old folder.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    alert_days: u32,
    /// How often the rules are decided again on the clock, whatever
    /// changed (`for:`, `keep_firing_for:`, `repeat:`, stale instances):
    /// `1s`, `30s`, `1m`, `5m`.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = parse_tick)]
    tick: Duration,
    /// How often the directory is looked at, in milliseconds.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    interval_ms: u64,
}

fn parse_tick(text: &str) -> Result<Duration, String> {
    tally_core::rules::duration::parse(text)
}

/// Loads rules from a folder, or the built-in ones.
pub fn load_rules(folder: Option<&Path>) -> Result<RuleSet> {
    let Some(folder) = folder else {
        return Ok(tally_rules::bundled::rules());
    };
    let files = tally_rules::bundle::load_config_dir(folder, &folder.display().to_string())
        .map_err(|problems| {
            anyhow::anyhow!(
                "the rules in {} do not validate:\n{problems}",
                folder.display()
            )
        })?;
    let named: Vec<(&str, &str)> = files
        .iter()
        .map(|(name, _, text)| (name.as_str(), text.as_str()))
        .collect();
    RuleSet::load(&named).map_err(|problems| anyhow::anyhow!("{problems}"))
}

pub async fn run(args: RunArgs) -> Result<()> {
    let rules = load_rules(args.rules.as_deref())?;
    let mut notifier = JsonLinesNotifier::stdout();
    if let Some(path) = &args.alerts {
        notifier = notifier.appending_to(path)?;
    }
    let database = args
        .state
        .clone()
        .unwrap_or_else(|| args.bucket.join(".tally").join("tally.sqlite"));
    let mut pipeline = LocalPipeline::open(LocalPipelineConfig {
        root: args.bucket.clone(),
        database: database.clone(),
        prefix: args.prefix.trim_end_matches('/').to_owned(),
        snapshot_prefix: args.snapshot_prefix.trim_end_matches('/').to_owned(),
        rules,
        notifier,
        alert_days: args.alert_days,
    })?;
    eprintln!(
        "tally: {} {} (tables in {}); alerts to stdout{}",
        if args.once { "processing" } else { "watching" },
        args.bucket.join(&args.prefix).display(),
        database.display(),
        args.alerts
            .as_ref()
            .map(|p| format!(" and {}", p.display()))
            .unwrap_or_default()
    );

    let progress = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} ingesting {pos}/{len} uploads {wide_bar} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let first = pipeline
        .cycle(progress.as_ref())
        .await
        .context("processing what is in the directory")?;
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    describe(
        &pipeline,
        &first,
        args.snapshot_prefix.trim_end_matches('/'),
    );
    if args.once {
        // One tick, so what the clock decides (a `for:` run out while the
        // process was stopped, a reminder due) is decided too.
        describe_tick(&pipeline.tick().await);
        return Ok(());
    }

    eprintln!(
        "tally: watching for changes, rules decided again every {}; Ctrl-C to stop",
        tally_core::rules::duration::display(args.tick)
    );
    let mut stop = pin!(tokio::signal::ctrl_c());
    let interval = Duration::from_millis(args.interval_ms);
    let mut ticks = tokio::time::interval(args.tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = ticks.tick() => {
                describe_tick(&pipeline.tick().await);
                continue;
            }
            () = tokio::time::sleep(interval) => {}
        }
        // A cycle runs to its end: stopping only between cycles means a
        // stop never leaves a stage half done (a crash would be safe too,
        // just slower to resume).
        match pipeline.cycle(None).await {
            Ok(report) => describe(
                &pipeline,
                &report,
                args.snapshot_prefix.trim_end_matches('/'),
            ),
            Err(e) => eprintln!("tally: {}; trying again", error_line(&e)),
        }
    }
    eprintln!("tally: stopped; everything seen so far is processed");
    Ok(())
}

/// A line for a tick only when it sent something or failed: ticks come
/// every minute and mostly decide nothing new.
fn describe_tick(report: &RulesReport) {
    if report.messages_sent + report.outboxes_recovered + report.failed == 0 {
        return;
    }
    eprintln!(
        "tally: tick: {} alert(s) sent, {} date(s) not evaluated (tried again at the next tick)",
        report.messages_sent + report.outboxes_recovered,
        report.failed
    );
}

/// One line per cycle that did something, plus each rejected upload.
fn describe(pipeline: &LocalPipeline, report: &CycleReport, snapshot_prefix: &str) {
    for path in &report.unnamed {
        eprintln!(
            "tally: {}: the file name is not UTF-8, so it names no instance; rename it",
            path.display()
        );
    }
    for (key, reason) in &report.ingest.rejections {
        eprintln!("tally: rejected {key}: {reason} (the instance keeps its last accepted upload)");
    }
    if report.is_idle() {
        return;
    }
    let ingest = &report.ingest;
    eprintln!(
        "tally: {} upload(s), {} removal(s): {} written, {} unchanged, {} rejected; {} total(s) changed; {} alert(s) sent; {:.0?}",
        report.created,
        report.removed,
        ingest.written,
        ingest.unchanged,
        ingest.rejected,
        report.total_changes,
        report.rules.messages_sent,
        report.elapsed
    );
    for date in &report.dates {
        eprintln!(
            "tally: snapshot {}",
            pipeline
                .root()
                .join(snapshot_prefix)
                .join(date.as_str())
                .display()
        );
    }
}
