//! The fleet load generator: a fleet's rounds of uploads driven through the
//! whole pipeline, with what each round took and cost.
//!
//! ```sh
//! cargo run --release -p tally-cli --example fleet_load -- --path embedded --instances 1000
//! scripts/with-moto cargo run --release -p tally-cli --example fleet_load -- --path aws --instances 100
//! ```
//!
//! Run each scale in its own process: the peak memory is the process's.
//!
//! **Workload** (deterministic: the same figures in, every run). Each of
//! `--instances` instances reports `--counters` counters named `COUNTER1`..;
//! instance i's counter c is `1000·i + c` in the first round, and every
//! later round (a steady minute) adds 1 to the first `--changed-percent`
//! (10 %) of the counters of every instance, so every instance uploads and
//! that share of the day's totals moves. `COUNTER1` crosses the shipped
//! `counter1-max` rule's 150,000 in the first round at any fleet of 18 or
//! more instances, so the first round publishes one alert; later rounds
//! keep it firing and publish none (one message per transition).
//!
//! **Paths.**
//!
//! - `embedded`: `tally run`'s local pipeline (the same source file, compiled in
//!   here so its per-cycle report can be read) over a temporary directory
//!   and SQLite. Each round writes every instance's file (write aside,
//!   rename into place, as upload tools do) and then runs one cycle: scan,
//!   ingest, aggregate, rules, snapshot, alerts. `tally run` starts that
//!   cycle within its `--interval-ms` (250 ms by default) of the writes;
//!   the reaction time here leaves that wait out.
//! - `aws`: the Lambdas' handlers in this process against the AWS API
//!   server `scripts/with-moto` starts (`TALLY_TEST_ENDPOINT`): each upload
//!   is a PUT through the S3 API and one SNS-wrapped S3 event to ingest
//!   (`--concurrency` invocations at once, as Lambda would run several);
//!   then the state table's stream, read through the DynamoDB Streams API
//!   in pages of `--batch` records (the deployment's 100) as Lambda's
//!   poller reads it, goes to aggregate a page at a time, and the totals'
//!   stream to rules likewise; alerts go through SNS to a queue.
//!   Stages run one after the other here; on AWS they overlap, and each
//!   stream waits its batching window (20 s by default) first, which this
//!   leaves out.
//!
//! **Figures**, per round:
//!
//! - `write ms`: writing the round's uploads (files, or S3 PUTs), before
//!   the clock for the reaction starts;
//! - `reaction ms`: from the round's uploads all being written to the
//!   day's snapshot written and the alert published (on `aws`, also split
//!   into ingest, reading the state stream, aggregate, reading the totals
//!   stream, rules: the reads are what Lambda's pollers do; `alert ms` is when the alert went
//!   out, within the reaction: on `aws` the end of the rules batch that
//!   published it, on `embedded` the end of the cycle, an upper bound);
//! - `uploads/s`, `counters/s`: the round's uploads, and the counters in
//!   them, over the reaction time;
//! - `WU`, `RU`: DynamoDB write and read units the stages consumed, by
//!   DynamoDB's item-size rules (the stages compute them; a test server's
//!   own figures are not real), ingest + aggregate + rules;
//! - `peak MB`: this process's resident high-water mark (`VmHWM`) after the
//!   round. On `embedded` that is the whole pipeline; on `aws` it is the
//!   handlers plus the harness, not one Lambda's (`scripts/lambda-footprint`
//!   measures those), and not the AWS API server's.
//!
//! The snapshot's `COUNTER1` is checked against the workload after each
//! round, so a figure from a wrong run is never printed as a good one.

#[allow(dead_code)]
#[path = "../src/local_pipeline.rs"]
mod local_pipeline;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use tally_core::key::Date;
use tally_embedded::notifier::JsonLinesNotifier;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PathKind {
    /// `tally run`'s runtime: a directory and SQLite.
    Embedded,
    /// The handlers against the AWS API server (`scripts/with-moto`).
    Aws,
}

#[derive(Debug, Parser)]
#[command(about = "Drives rounds of a fleet's uploads through the pipeline and reports each round")]
struct Args {
    #[arg(long, value_enum)]
    path: PathKind,
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    instances: u32,
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    counters: u32,
    /// Rounds: the first (everything new), then steady ones.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rounds: u32,
    /// Share of each instance's counters that move in a steady round.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100))]
    changed_percent: u32,
    /// Stream records per aggregate and rules invocation (aws).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Ingest invocations (and S3 PUTs) at once (aws).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

/// The deterministic workload.
struct Workload {
    instances: u32,
    counters: u32,
    changed_percent: u32,
}

impl Workload {
    /// Counters that move on each instance in a steady round.
    fn moving(&self) -> u32 {
        (self.counters * self.changed_percent).div_ceil(100)
    }

    /// Instance `i`'s body in round `round` (0 is the first).
    fn body(&self, i: u32, round: u32) -> String {
        let moving = self.moving();
        let mut body = String::with_capacity(self.counters as usize * 20);
        for c in 0..self.counters {
            let grown = if c < moving { i64::from(round) } else { 0 };
            let value = 1000 * i64::from(i) + i64::from(c) + grown;
            body.push_str("COUNTER");
            body.push_str(&(c + 1).to_string());
            body.push(' ');
            body.push_str(&value.to_string());
            body.push('\n');
        }
        body
    }

    /// COUNTER1's total after round `round`.
    fn counter1(&self, round: u32) -> i128 {
        let n = i128::from(self.instances);
        let grown = if self.moving() > 0 {
            i128::from(round)
        } else {
            0
        };
        1000 * n * (n - 1) / 2 + n * grown
    }

    fn instance(i: u32) -> String {
        format!("i-{i:06}")
    }
}

/// One round's figures.
#[derive(Debug, Default)]
struct Round {
    write: Duration,
    reaction: Duration,
    /// On aws: ingest, reading the state stream, aggregate, reading the
    /// totals stream, rules.
    stages: Option<[Duration; 5]>,
    /// When the alert went out, within the reaction.
    alert_at: Option<Duration>,
    alerts: u64,
    totals_changed: u64,
    write_units: [u64; 3],
    read_units: [u64; 3],
    peak_kb: Option<u64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let workload = Workload {
        instances: args.instances,
        counters: args.counters,
        changed_percent: args.changed_percent,
    };
    let path = match args.path {
        PathKind::Embedded => "embedded",
        PathKind::Aws => "aws",
    };
    println!(
        "fleet_load: {path}, {} instances × {} counters, {} round(s), {}% of counters moving in a steady round{}",
        args.instances,
        args.counters,
        args.rounds,
        args.changed_percent,
        if args.path == PathKind::Aws {
            format!(
                ", stream batches of {}, {} ingest invocations at once",
                args.batch, args.concurrency
            )
        } else {
            String::new()
        }
    );
    println!(
        "{:<8} | {:>9} | {:<6} | {:>9} | {:>11} | {:<37} | {:>8} | {:>9} | {:>10} | {:<26} | {:<24} | {:>7}",
        "path",
        "instances",
        "round",
        "write ms",
        "reaction ms",
        "ingest / read / agg / read / rules",
        "alert ms",
        "uploads/s",
        "counters/s",
        "WU ingest+agg+rules",
        "RU ingest+agg+rules",
        "peak MB"
    );
    let mut driver = match args.path {
        PathKind::Embedded => Driver::Embedded(Box::new(Embedded::open().await?)),
        PathKind::Aws => Driver::Aws(Box::new(Aws::open().await?)),
    };
    for round in 0..args.rounds {
        let figures = match &mut driver {
            Driver::Embedded(embedded) => embedded.round(&workload, round).await?,
            Driver::Aws(aws) => aws.round(&workload, round, &args).await?,
        };
        print_round(path, &workload, round, &figures);
    }
    Ok(())
}

fn print_round(path: &str, workload: &Workload, round: u32, figures: &Round) {
    let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1e3);
    let seconds = figures.reaction.as_secs_f64().max(1e-9);
    let uploads = f64::from(workload.instances);
    let counters = uploads * f64::from(workload.counters);
    let stages = figures
        .stages
        .map(|stages| stages.map(ms).join(" / "))
        .unwrap_or_else(|| "(one cycle)".to_owned());
    let units = |u: [u64; 3]| format!("{}+{}+{} = {}", u[0], u[1], u[2], u[0] + u[1] + u[2]);
    let name = if round == 0 { "first" } else { "steady" };
    println!(
        "{path:<8} | {:>9} | {name:<6} | {:>9} | {:>11} | {stages:<37} | {:>8} | {:>9.0} | {:>10.0} | {:<26} | {:<24} | {:>7}",
        workload.instances,
        ms(figures.write),
        ms(figures.reaction),
        figures.alert_at.map(ms).unwrap_or_else(|| "-".to_owned()),
        uploads / seconds,
        counters / seconds,
        units(figures.write_units),
        units(figures.read_units),
        figures
            .peak_kb
            .map(|kb| format!("{:.1}", kb as f64 / 1024.0))
            .unwrap_or_else(|| "?".to_owned()),
    );
    eprintln!(
        "fleet_load: round {} ({name}): {} totals changed, {} alert(s) published",
        round + 1,
        figures.totals_changed,
        figures.alerts
    );
}

enum Driver {
    Embedded(Box<Embedded>),
    Aws(Box<Aws>),
}

/// This process's resident high-water mark in kB (Linux).
fn peak_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The local pipeline over a temporary directory.
struct Embedded {
    dir: tempfile::TempDir,
    folder: std::path::PathBuf,
    date: Date,
    pipeline: local_pipeline::LocalPipeline,
    notifier: JsonLinesNotifier,
}

impl Embedded {
    async fn open() -> Result<Embedded> {
        let dir = tempfile::tempdir().context("creating a temporary directory for the bucket")?;
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let date = Date::parse(&today).map_err(|e| anyhow::anyhow!("today, {today}: {e}"))?;
        let folder = dir.path().join("counters").join(date.as_str());
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("creating {}", folder.display()))?;
        let notifier = JsonLinesNotifier::silent().keeping();
        let mut pipeline =
            local_pipeline::LocalPipeline::open(local_pipeline::LocalPipelineConfig {
                root: dir.path().to_path_buf(),
                database: dir.path().join(".tally").join("tally.sqlite"),
                prefix: "counters".to_owned(),
                snapshot_prefix: "totals".to_owned(),
                rules: tally_rules::bundled::rules(),
                notifier: notifier.clone(),
                alert_days: 2,
            })?;
        // The runtime is up and has seen the empty bucket before the fleet
        // uploads, as `tally run` would be.
        pipeline.cycle(None).await?;
        Ok(Embedded {
            dir,
            folder,
            date,
            pipeline,
            notifier,
        })
    }

    async fn round(&mut self, workload: &Workload, round: u32) -> Result<Round> {
        let started = Instant::now();
        for i in 0..workload.instances {
            let name = Workload::instance(i);
            let partial = self.folder.join(format!(".{name}.partial"));
            let target = self.folder.join(&name);
            std::fs::write(&partial, workload.body(i, round))
                .with_context(|| format!("writing {}", partial.display()))?;
            std::fs::rename(&partial, &target)
                .with_context(|| format!("renaming into {}", target.display()))?;
        }
        let write = started.elapsed();
        let started = Instant::now();
        let report = self.pipeline.cycle(None).await?;
        let reaction = started.elapsed();
        if report.ingest.written != u64::from(workload.instances) {
            bail!(
                "round {}: ingest wrote {} of {} uploads ({:?})",
                round + 1,
                report.ingest.written,
                workload.instances,
                report.ingest.rejections
            );
        }
        let expected = workload.counter1(round);
        let snapshot = self.dir.path().join("totals").join(self.date.as_str());
        check_snapshot(
            &std::fs::read_to_string(&snapshot)
                .with_context(|| format!("reading the snapshot {}", snapshot.display()))?,
            expected,
        )?;
        let alerts = self.notifier.take_sent().len() as u64;
        Ok(Round {
            write,
            reaction,
            stages: None,
            // The cycle publishes within its rules stage, its last step.
            alert_at: (alerts > 0).then_some(reaction),
            alerts,
            totals_changed: report.total_changes as u64,
            write_units: [
                report.ingest.capacity.write_units,
                report.aggregate.write_units,
                report.rules.write_units,
            ],
            read_units: [
                report.ingest.capacity.read_units,
                report.aggregate.read_units,
                report.rules.read_units,
            ],
            peak_kb: peak_kb(),
        })
    }
}

/// The snapshot (the downstream job's format) must carry COUNTER1's expected total.
fn check_snapshot(snapshot: &str, expected: i128) -> Result<()> {
    let found = snapshot
        .lines()
        .find_map(|line| line.strip_prefix("COUNTER1 "))
        .and_then(|value| value.trim().parse::<i128>().ok());
    if found != Some(expected) {
        bail!("the snapshot's COUNTER1 is {found:?}, the workload's total is {expected}");
    }
    Ok(())
}

/// One table's stream read as Lambda's poller reads it: `GetRecords`
/// pages of at most one batch, each page handed on as one batch. (Asking
/// the AWS API server for thousands of records at once outlasts the SDK's
/// 40 s operation timeout.)
struct Poller {
    stream: tally_aws::streams::Stream,
    iterator: Option<String>,
}

impl Poller {
    async fn open(world: &tally_tests::rules_world::RulesWorld, table: &str) -> Result<Poller> {
        let sdk = tally_tests::sdk_config().await;
        let stream =
            tally_aws::streams::Stream::of_table(&sdk, &world.pipeline.ingest.dynamodb, table)
                .await?;
        let shard = stream
            .shards()
            .await?
            .into_iter()
            .next()
            .with_context(|| format!("the stream of {table} has no shard"))?;
        let iterator = stream
            .iterator(&shard.id, &tally_aws::streams::Position::TrimHorizon)
            .await?;
        Ok(Poller { stream, iterator })
    }

    /// The next page of at most `batch` records; empty when caught up.
    async fn next(&mut self, batch: usize) -> Result<Vec<serde_json::Value>> {
        let Some(iterator) = self.iterator.clone() else {
            return Ok(Vec::new());
        };
        let page = self
            .stream
            .read(
                iterator,
                i32::try_from(batch).unwrap_or(1000).clamp(1, 1000),
            )
            .await?;
        self.iterator = page.next;
        Ok(page.records)
    }
}

/// The handlers against the AWS API server.
struct Aws {
    world: tally_tests::rules_world::RulesWorld,
    state: Poller,
    totals: Poller,
}

impl Aws {
    async fn open() -> Result<Aws> {
        let world =
            tally_tests::rules_world::RulesWorld::with_rules(tally_rules::bundled::rules()).await;
        let state = Poller::open(&world, &world.pipeline.ingest.table).await?;
        let totals = Poller::open(&world, &world.pipeline.totals_table).await?;
        Ok(Aws {
            world,
            state,
            totals,
        })
    }

    async fn round(&mut self, workload: &Workload, round: u32, args: &Args) -> Result<Round> {
        let date = tally_tests::rules_world::DATE;
        let world = &self.world;
        let concurrency = args.concurrency.max(1);
        let started = Instant::now();
        let ingest = &world.pipeline.ingest;
        let puts: Vec<_> = (0..workload.instances)
            .map(|i| {
                let key = format!("counters/{date}/{}", Workload::instance(i));
                let body = workload.body(i, round);
                async move { ingest.upload(&key, body).await }
            })
            .collect();
        let uploaded: Vec<_> = futures::stream::iter(puts)
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let write = started.elapsed();

        let started = Instant::now();
        let invocations: Vec<_> = uploaded
            .iter()
            .map(|upload| {
                let event = tally_tests::sns_event(&ingest.created_event(upload));
                async move { ingest.ingestor.handle(&event).await }
            })
            .collect();
        let results: Vec<_> = futures::stream::iter(invocations)
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let (mut ingest_wu, mut ingest_ru, mut written) = (0, 0, 0);
        for result in results {
            match result {
                Ok((_, report)) => {
                    ingest_wu += report.capacity.write_units;
                    ingest_ru += report.capacity.read_units;
                    written += report.written;
                }
                Err(failed) => bail!("round {}: an ingest invocation failed: {failed}", round + 1),
            }
        }
        if written != u64::from(workload.instances) {
            bail!(
                "round {}: ingest wrote {written} of {} uploads",
                round + 1,
                workload.instances
            );
        }
        let ingested = started.elapsed();

        let batch = args.batch.max(1);
        let (mut aggregate_wu, mut aggregate_ru) = (0, 0);
        let mut state_read = Duration::ZERO;
        loop {
            let reading = Instant::now();
            let chunk = self.state.next(batch).await?;
            state_read += reading.elapsed();
            if chunk.is_empty() {
                break;
            }
            let (response, report) = world
                .pipeline
                .aggregator
                .handle(&tally_tests::streams::lambda_event(&chunk))
                .await;
            if !response.batch_item_failures.is_empty() {
                bail!("round {}: an aggregate batch failed: {report:?}", round + 1);
            }
            aggregate_wu += report.write_units;
            aggregate_ru += report.read_units;
        }
        let aggregated = started.elapsed();

        let (mut rules_wu, mut rules_ru, mut alerts, mut totals_changed) = (0, 0, 0, 0);
        let mut alert_at = None;
        let mut totals_read = Duration::ZERO;
        loop {
            let reading = Instant::now();
            let chunk = self.totals.next(batch).await?;
            totals_read += reading.elapsed();
            if chunk.is_empty() {
                break;
            }
            totals_changed += chunk.len() as u64;
            let (response, report) = world.evaluate(&chunk).await;
            if !response.batch_item_failures.is_empty() {
                bail!("round {}: a rules batch failed: {report:?}", round + 1);
            }
            rules_wu += report.write_units;
            rules_ru += report.read_units;
            alerts += report.messages_sent;
            if report.messages_sent > 0 && alert_at.is_none() {
                alert_at = Some(started.elapsed());
            }
        }
        let reaction = started.elapsed();

        // Outside the clock: what came out is right.
        let snapshot = world
            .object(&format!("totals/{date}"))
            .await
            .context("the round wrote no snapshot")?;
        check_snapshot(&snapshot, workload.counter1(round))?;
        if alerts > 0 {
            let delivered = world.messages(alerts as usize).await;
            if delivered.len() as u64 != alerts {
                bail!(
                    "round {}: {alerts} alert(s) published, {} delivered to the queue",
                    round + 1,
                    delivered.len()
                );
            }
        }
        Ok(Round {
            write,
            reaction,
            stages: Some([
                ingested,
                state_read,
                aggregated - ingested - state_read,
                totals_read,
                reaction - aggregated - totals_read,
            ]),
            alert_at,
            alerts,
            totals_changed,
            write_units: [ingest_wu, aggregate_wu, rules_wu],
            read_units: [ingest_ru, aggregate_ru, rules_ru],
            peak_kb: peak_kb(),
        })
    }
}
