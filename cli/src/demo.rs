//! `tally demo`: the whole pipeline on a sample fleet, on this machine.
//!
//! It writes a sample fleet (100 instances × 100 counters by default) into a
//! directory laid out like the bucket and runs compressed "minutes" of
//! uploads through the embedded pipeline, the same code as `tally run` and
//! the Lambdas, with the rules in rules-config/, on a clock of its own that
//! moves a minute per minute shown (the files get its time, as S3 stamps
//! uploads). In the later minutes one instance goes silent and the stale
//! rule fires, then resolves when it uploads again. Each minute it shows what
//! changed, the alerts sent, where the snapshot is and how long the minute
//! took, and what the same minute costs on DynamoDB next to the per-counter
//! design tally replaces (one item per counter holding every instance's
//! value, written on every upload). That design's write units come from the
//! same model of its item as `tally cost`'s, so the two commands cannot
//! disagree about it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};

use anyhow::{Context, Result};
use tally_core::key::{Date, UploadKey};
use tally_embedded::notifier::JsonLinesNotifier;

use crate::cost::per_counter_model;
use crate::local_pipeline::{CycleReport, LocalPipeline, LocalPipelineConfig};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Instances in the sample fleet.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(10..=100_000))]
    instances: u32,
    /// Counters each instance reports.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    counters: u32,
    /// Where to lay out the bucket and the database (default: a new
    /// temporary directory, kept so you can look at it).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The sample fleet: each instance's current cumulative counters.
struct Fleet {
    root: PathBuf,
    date: Date,
    counters: u32,
    /// Per instance, per counter; `None` for a retired instance.
    values: Vec<Option<Vec<i64>>>,
    /// The demo's clock: a minute passes with each minute shown, and every
    /// file written gets its time, as S3 stamps an upload.
    now: Arc<Mutex<DateTime<Utc>>>,
    /// An instance that stopped uploading, for the stale rule.
    silent: Option<usize>,
}

impl Fleet {
    fn counter_name(c: u32) -> String {
        format!("COUNTER{}", c + 1)
    }

    fn key(&self, i: usize) -> String {
        UploadKey {
            date: self.date.clone(),
            instance: format!("i-{i:05}"),
        }
        .object_key(tally_core::key::DEFAULT_PREFIX)
    }

    fn write(&self, i: usize, body: &str) -> Result<()> {
        let path = self.root.join(self.key(i));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
        let now = *self
            .now
            .lock()
            .map_err(|_| anyhow::anyhow!("the demo's clock"))?;
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_modified(now.into()))
            .with_context(|| format!("setting the time of {}", path.display()))
    }

    /// Moves the demo's clock on by a minute.
    fn next_minute(&self) -> Result<()> {
        let mut now = self
            .now
            .lock()
            .map_err(|_| anyhow::anyhow!("the demo's clock"))?;
        *now += chrono::Duration::minutes(1);
        Ok(())
    }

    /// Every live instance uploads its current counters, but the silent one.
    fn upload_all(&self) -> Result<()> {
        for (i, values) in self.values.iter().enumerate() {
            if self.silent == Some(i) {
                continue;
            }
            if let Some(values) = values {
                let mut body = String::with_capacity(values.len() * 16);
                for (c, value) in values.iter().enumerate() {
                    body.push_str(&Self::counter_name(c as u32));
                    body.push(' ');
                    body.push_str(&value.to_string());
                    body.push('\n');
                }
                self.write(i, &body)?;
            }
        }
        Ok(())
    }

    /// The first `share` of counters grow by `by` on every live instance.
    fn grow(&mut self, share: f64, by: i64) {
        let moving = ((f64::from(self.counters) * share).ceil() as usize).max(1);
        for values in self.values.iter_mut().flatten() {
            for value in values.iter_mut().take(moving) {
                *value += by;
            }
        }
    }

    fn retire(&mut self, i: usize) -> Result<()> {
        self.values[i] = None;
        let path = self.root.join(self.key(i));
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
    }

    fn live(&self) -> usize {
        self.values.iter().flatten().count()
    }

    /// Write units one upload costs in the per-counter design: every
    /// counter's item rewritten whole, each holding every live instance's
    /// value (sized with COUNTER1's, the largest).
    fn per_counter_upload_units(&self) -> u64 {
        let date = self.date.as_str();
        let values = self
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.as_ref().map(|v| (format!("i-{i:05}"), v[0])));
        let values_bytes = per_counter_model::values_bytes(&Self::counter_name(0), date, values);
        let names: Vec<String> = (0..self.counters).map(Self::counter_name).collect();
        per_counter_model::upload_write_units(names.iter().map(String::as_str), date, values_bytes)
    }
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let root = match args.dir {
        Some(dir) => dir,
        None => tempfile::Builder::new()
            .prefix("tally-demo-")
            .tempdir()
            .context("creating a temporary directory")?
            .keep(),
    };
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let notifier = JsonLinesNotifier::silent().keeping();
    let now = Arc::new(Mutex::new(Utc::now()));
    let clock = now.clone();
    let mut pipeline = LocalPipeline::open(LocalPipelineConfig {
        root: root.clone(),
        database: root.join(".tally").join("tally.sqlite"),
        prefix: tally_core::key::DEFAULT_PREFIX.to_owned(),
        snapshot_prefix: "totals".to_owned(),
        rules: tally_rules::bundled::rules(),
        notifier: notifier.clone(),
        alert_days: 2,
    })?
    .with_clock(Arc::new(move || {
        clock
            .lock()
            .map_or_else(|poisoned| *poisoned.into_inner(), |now| *now)
    }));
    // Today: the rules stage alerts on recent days only.
    let today = Utc::now().date_naive().format("%Y-%m-%d").to_string();
    let date = Date::parse(&today).context("today's date")?;
    let mut fleet = Fleet {
        root: root.clone(),
        date: date.clone(),
        counters: args.counters,
        values: (0..args.instances)
            .map(|_| {
                Some(
                    (0..args.counters)
                        .map(|c| if c == 0 { 1_000 } else { 10 * i64::from(c) })
                        .collect(),
                )
            })
            .collect(),
        now,
        silent: None,
    };
    let instances = args.instances as usize;

    println!(
        "tally demo: {} instances × {} counters uploading to {}/counters/{date}/",
        args.instances,
        args.counters,
        root.display()
    );
    println!(
        "rules: rules-config/ as built in ({} rules); counter1-max fires when COUNTER1 passes 150000 for the day",
        tally_rules::bundled::rules().rules().len()
    );
    println!(
        "write units are shown next to the per-counter design tally replaces: one DynamoDB item per counter holding every instance's value, written on every upload"
    );
    println!();

    let mut show = Show {
        pipeline: &mut pipeline,
        notifier: &notifier,
        date: &date,
        root: &root,
    };

    fleet.upload_all()?;
    show.minute(
        1,
        "every instance uploads its counters (COUNTER1 = 1000 each)",
        &fleet,
    )
    .await?;

    fleet.upload_all()?;
    show.minute(
        2,
        "every instance uploads again, nothing changed (the per-counter design pays in full for this)",
        &fleet,
    )
    .await?;

    fleet.grow(0.1, 600);
    fleet.upload_all()?;
    show.minute(
        3,
        "the first 10% of counters grow by 600 on every instance: COUNTER1 passes 150000",
        &fleet,
    )
    .await?;

    fleet.grow(0.1, 100);
    fleet.upload_all()?;
    show.minute(
        4,
        "they grow again; the alert keeps firing and sends nothing new",
        &fleet,
    )
    .await?;

    let retiring = instances / 5;
    for i in 0..retiring {
        fleet.retire(i)?;
    }
    fleet.write(instances - 1, "COUNTER1 12x\n")?;
    show.minute(
        5,
        &format!("{retiring} instances retire (objects deleted), and one uploads a broken body"),
        &fleet,
    )
    .await?;

    // From minute 6 every instance uploads each minute, the same bytes,
    // but one, which goes silent: only the objects' times tell.
    let silent = instances / 2;
    fleet.silent = Some(silent);
    fleet.upload_all()?;
    show.minute(
        6,
        &format!(
            "every instance uploads the same counters again, but i-{silent:05}, which goes silent"
        ),
        &fleet,
    )
    .await?;
    for _ in 7..=9 {
        fleet.upload_all()?;
        show.pipeline.cycle(None).await?;
        show.pipeline.tick().await;
        fleet.next_minute()?;
    }
    fleet.upload_all()?;
    show.minute(
        10,
        &format!(
            "minutes 7 to 9 went the same; i-{silent:05} has not uploaded since minute 4: stale after 5 minutes"
        ),
        &fleet,
    )
    .await?;
    fleet.silent = None;
    fleet.upload_all()?;
    show.minute(11, &format!("i-{silent:05} uploads again"), &fleet)
        .await?;

    let snapshot = root.join("totals").join(date.as_str());
    println!("the snapshot for downstream jobs: {}", snapshot.display());
    println!(
        "                       and JSON: {}.json",
        snapshot.display()
    );
    let text = std::fs::read_to_string(&snapshot)
        .with_context(|| format!("reading {}", snapshot.display()))?;
    for line in text.lines().take(3) {
        println!("    {line}");
    }
    println!("    ... ({} counters)", text.lines().count());
    println!();
    println!(
        "Run it yourself: `tally run --bucket {}` watches the folder; copy files into counters/<date>/ and see.",
        root.display()
    );
    Ok(())
}

/// Runs a minute through the pipeline and prints what happened.
struct Show<'a> {
    pipeline: &'a mut LocalPipeline,
    notifier: &'a JsonLinesNotifier,
    date: &'a Date,
    root: &'a std::path::Path,
}

impl Show<'_> {
    async fn minute(&mut self, minute: u32, what: &str, fleet: &Fleet) -> Result<()> {
        let started = Instant::now();
        let report = self.pipeline.cycle(None).await?;
        // The minute's tick: what the clock decides (a silent instance).
        self.pipeline.tick().await;
        let took = started.elapsed();
        fleet.next_minute()?;
        let totals = self.pipeline.totals(self.date)?;
        println!("minute {minute}: {what}");
        print_report(&report, fleet);
        println!(
            "  totals: {} counters; COUNTER1 = {}",
            totals.len(),
            totals
                .get("COUNTER1")
                .map_or_else(|| "none".to_owned(), i128::to_string)
        );
        let sent = self.notifier.take_sent();
        if sent.is_empty() {
            println!("  alerts: none sent");
        }
        for note in sent {
            println!("  ALERT  {}", note.subject());
            println!("         {}", note.summary);
            if let Some(reason) = &note.reason {
                println!("         why: {reason}");
            }
        }
        println!(
            "  snapshot: {} ({:.0?} from files to snapshot and alerts)",
            self.root.join("totals").join(self.date.as_str()).display(),
            took
        );
        println!();
        Ok(())
    }
}

fn print_report(report: &CycleReport, fleet: &Fleet) {
    let ingest = &report.ingest;
    for (key, reason) in &ingest.rejections {
        println!("  rejected {key}: {reason}");
        println!("    (the instance keeps its last accepted upload)");
    }
    let state_units = ingest.capacity.write_units;
    let per_counter_units = if report.created == 0 {
        0
    } else {
        report.created as u64 * fleet.per_counter_upload_units()
    };
    println!(
        "  {} uploads, {} deletions: {} state writes ({} write units; the per-counter design: {} write units), {} unchanged",
        report.created,
        report.removed,
        ingest.written,
        state_units,
        per_counter_units,
        ingest.unchanged
    );
    println!(
        "  aggregate: {} totals changed ({} write units); {} live instances",
        report.aggregate.total_writes,
        report.aggregate.write_units,
        fleet.live()
    );
}
