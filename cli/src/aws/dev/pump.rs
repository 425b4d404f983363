//! `tally dev pump`: what Lambda's event source mappings do, for a dev
//! environment `tally dev up` made:
//!
//! - receives up to 10 messages from the upload queue, hands them to the
//!   ingest handler in the SQS event shape Lambda delivers, and deletes the
//!   ones not named in `batchItemFailures` (the others come back after the
//!   queue's visibility timeout);
//! - reads the state table's stream in batches of 100 records for the
//!   aggregate handler and the totals table's stream for the rules handler,
//!   in Lambda's DynamoDB event shape, each shard in order and parents
//!   before children. After a batch it moves past the batch, or, when the
//!   response names a failed record, to that record, as Lambda does with
//!   `ReportBatchItemFailures`; a failing batch is retried with backoff;
//! - ticks the rules stage's clock every `--tick` (default 1m), as the
//!   deployment's schedule invokes the rules function with `{"tick": {}}`:
//!   every rule for every alerting date, even when no total changed. With
//!   `--once` it ticks once, after the streams are drained. A failed tick
//!   is reported and the next one tries again (with `--once`, it fails the
//!   command).
//!
//! Where the pump stands in the streams is owned by one [`Cursor`]: it
//! alone moves a shard's position and saves it in the dev file, after every
//! batch, so a second `pump` continues where the first stopped and an
//! interrupted one repeats at most the batch in flight (every handler is
//! idempotent). The handlers are built from the same settings readers and
//! wiring as the Lambdas, from the variables `dev up` saved (the process
//! environment adds what the file does not set, such as `TALLY_ALERT_DAYS`
//! or `TALLY_RULES_BUCKET`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use clap::Args;
use tally_aws::bucket::S3ObjectStore;
use tally_aws::queue::Queue;
use tally_aws::streams::{self, Position, Stream};
use tally_core::rules::RuleSet;
use tally_ingest::IngestResponse;
use tally_rules::RuleSource;

use super::{DEFAULT_CONFIG, DevFile, ShardPosition, UPLOAD_VISIBILITY_SECONDS, load_rules_dir};
use crate::aws::{Aws, count};

/// Batches read from one stream per pass, so one busy stream does not keep
/// the others waiting.
const BATCHES_PER_PASS: usize = 10;

/// With `--once`, attempts at a failing batch before giving up.
const ONCE_ATTEMPTS: u32 = 3;

#[derive(Debug, Args)]
pub struct PumpArgs {
    /// The file `tally dev up` saved.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Process what is available now, then exit.
    #[arg(long)]
    once: bool,
    /// Evaluate the rules in this folder's *.yaml instead of the bundled
    /// ones (or TALLY_RULES_BUCKET's).
    #[arg(long, value_name = "DIR")]
    rules: Option<PathBuf>,
    /// How often the rules stage ticks (every rule evaluated on the clock),
    /// as the deployment's schedule does: 30s, 1m, 5m (at least 1s).
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = tally_core::rules::duration::parse)]
    tick: Duration,
}

/// Where the pump stands in every shard of both streams, kept in the dev
/// file. The only way to move a position is [`Cursor::advance`], which
/// saves the file before the pump reads on: a position on disk never runs
/// ahead of what the handlers have done.
struct Cursor {
    file: DevFile,
    path: PathBuf,
}

impl Cursor {
    fn new(file: DevFile, path: PathBuf) -> Cursor {
        Cursor { file, path }
    }

    /// The dev file the cursor keeps its positions in.
    fn file(&self) -> &DevFile {
        &self.file
    }

    fn saved(&self, stream_arn: &str, shard: &str) -> Option<&ShardPosition> {
        self.file
            .positions
            .get(stream_arn)
            .and_then(|positions| positions.get(shard))
    }

    /// Whether a closed shard has been read to its end.
    fn finished(&self, stream_arn: &str, shard: &str) -> bool {
        self.saved(stream_arn, shard) == Some(&ShardPosition::Finished)
    }

    /// Where to read a shard from next; `None` once it is finished.
    fn next_read(&self, stream_arn: &str, shard: &str) -> Option<Position> {
        match self.saved(stream_arn, shard) {
            Some(ShardPosition::After(sequence)) => Some(Position::After(sequence.clone())),
            Some(ShardPosition::At(sequence)) => Some(Position::At(sequence.clone())),
            Some(ShardPosition::Finished) => None,
            None => Some(Position::TrimHorizon),
        }
    }

    /// Moves the pump in one shard and saves the dev file.
    fn advance(
        &mut self,
        stream_arn: &str,
        shard: &str,
        position: ShardPosition,
    ) -> anyhow::Result<()> {
        self.file
            .positions
            .entry(stream_arn.to_owned())
            .or_default()
            .insert(shard.to_owned(), position);
        self.file.save(&self.path)
    }
}

/// The three functions, built as their Lambdas build them.
struct Functions {
    ingestor: tally_ingest::wiring::AwsIngestor,
    aggregator: tally_aggregate::wiring::AwsAggregator,
    stage: tally_rules::wiring::AwsStage,
    rules: Rules,
    rules_settings: tally_rules::settings::Settings,
    states: Option<tally_aws::state_table::DynamoStateStore>,
}

enum Rules {
    Fixed(Arc<RuleSet>),
    Source(RuleSource<S3ObjectStore>),
}

/// The stream-fed functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fed {
    Aggregate,
    Rules,
}

impl Fed {
    fn name(self) -> &'static str {
        match self {
            Fed::Aggregate => "aggregate",
            Fed::Rules => "rules",
        }
    }
}

impl Functions {
    async fn rules(&self) -> Arc<RuleSet> {
        match &self.rules {
            Rules::Fixed(rules) => rules.clone(),
            Rules::Source(source) => source.current().await,
        }
    }

    /// One tick of the rules stage's clock; a line saying what it did, and
    /// why it failed if it did.
    async fn tick(&self) -> (String, Option<String>) {
        let rules = self.rules().await;
        let uploads = self
            .states
            .as_ref()
            .map(|states| tally_rules::wiring::uploads(&self.rules_settings, states));
        let (report, failure) = self.stage.run_tick(&rules, uploads.as_ref()).await;
        (rules_line(&report.rules), failure.map(|e| e.to_string()))
    }

    /// Runs a stream-fed handler on one batch; the response and a line
    /// saying what it did.
    async fn handle(&self, fed: Fed, event: &Event) -> (DynamoDbEventResponse, String) {
        match fed {
            Fed::Aggregate => {
                let (response, r) = self.aggregator.handle(event).await;
                let line = format!(
                    "{} ({} already applied): {}, {} written, {} removed; {} write units",
                    count(r.changes, "change"),
                    r.already_applied,
                    count(r.partial_writes, "partial write"),
                    count(r.total_writes, "total"),
                    r.totals_removed,
                    r.write_units
                );
                (response, line)
            }
            Fed::Rules => {
                let rules = self.rules().await;
                let (response, report) = self.stage.handle(&rules, event).await;
                (response, rules_line(&report))
            }
        }
    }
}

/// What a rules batch or tick did, in one line.
fn rules_line(r: &tally_rules::stage::RulesReport) -> String {
    format!(
        "{}: {} checked, {} sent, {} written{}",
        count(r.dates, "date"),
        count(r.alerts_checked, "alert"),
        count(r.messages_sent, "message"),
        count(r.snapshots_written, "snapshot"),
        if r.rule_errors > 0 {
            format!(", {} (see --verbose)", count(r.rule_errors, "rule error"))
        } else {
            String::new()
        }
    )
}

/// What one step of a pass did.
#[derive(Debug, Default)]
struct Step {
    /// Batches processed (successfully or not).
    batches: usize,
    /// A failure to retry, described.
    failure: Option<String>,
}

pub async fn run(args: PumpArgs) -> anyhow::Result<()> {
    let aws = Aws::load().await?;
    let file = DevFile::load(&args.config)?;
    let normalize = |e: &str| e.trim_end_matches('/').to_owned();
    if file.endpoint.as_deref().map(normalize) != aws.endpoint.as_deref().map(normalize) {
        return Err(anyhow!(
            "{} was made on {} but AWS_ENDPOINT_URL is {}: point AWS_ENDPOINT_URL at the same server, or run `tally dev up` on this one",
            args.config.display(),
            file.endpoint.as_deref().unwrap_or("(not set)"),
            aws.endpoint.as_deref().unwrap_or("(not set)")
        ));
    }

    let (ingest_settings, aggregate_settings, rules_settings) = {
        let lookup = file.lookup();
        (
            tally_ingest::settings::Settings::from_lookup(&lookup)
                .map_err(|e| anyhow!("ingest: {e}"))?,
            tally_aggregate::settings::Settings::from_lookup(&lookup)
                .map_err(|e| anyhow!("aggregate: {e}"))?,
            tally_rules::settings::Settings::from_lookup(&lookup)
                .map_err(|e| anyhow!("rules: {e}"))?,
        )
    };
    let rules = match &args.rules {
        Some(dir) => {
            let rules = load_rules_dir(dir)?;
            eprintln!("rules: {} from {}", rules.rules().len(), dir.display());
            Rules::Fixed(Arc::new(rules))
        }
        None => Rules::Source(tally_rules::wiring::rule_source(&aws.sdk, &rules_settings)),
    };
    let functions = Functions {
        ingestor: tally_ingest::wiring::ingestor(&aws.sdk, ingest_settings),
        aggregator: tally_aggregate::wiring::aggregator(&aws.sdk, &aggregate_settings),
        stage: tally_rules::wiring::stage(&aws.sdk, &rules_settings),
        states: tally_rules::wiring::state_store(&aws.sdk, &rules_settings),
        rules_settings,
        rules,
    };
    let sqs = aws_sdk_sqs::Client::new(&aws.sdk);
    let dynamodb = tally_aws::config::dynamodb(&aws.sdk);
    let explain = |e| aws.explain(e);
    let upload_queue = Queue::open(&sqs, &file.upload_queue_url)
        .await
        .map_err(explain)?;
    let state_stream = Stream::of_table(&aws.sdk, &dynamodb, &file.tables.state)
        .await
        .map_err(explain)?;
    let totals_stream = Stream::of_table(&aws.sdk, &dynamodb, &file.tables.totals)
        .await
        .map_err(explain)?;
    let mut cursor = Cursor::new(file, args.config.clone());

    let stopping = Arc::new(AtomicBool::new(false));
    if !args.once {
        let stopping = stopping.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stopping after the current batch (Ctrl-C again stops at once)");
                stopping.store(true, Ordering::SeqCst);
                if tokio::signal::ctrl_c().await.is_ok() {
                    // Safe: every handler is idempotent and positions move
                    // only after a batch is done.
                    std::process::exit(130);
                }
            }
        });
        eprintln!(
            "pumping {} (uploads), {} and {} (streams); Ctrl-C stops",
            upload_queue.url(),
            cursor.file().tables.state,
            cursor.file().tables.totals
        );
    }

    let mut idle = false;
    let mut failed_uploads = 0usize;
    let mut attempts: BTreeMap<&str, u32> = BTreeMap::new();
    let mut totals = [0usize; 3];
    let mut ticks = 0usize;
    let mut next_tick = std::time::Instant::now() + args.tick;
    while !stopping.load(Ordering::SeqCst) {
        // Long-poll only when the last pass found nothing: then this pass
        // is the wait, and with --once the proof that nothing is left.
        let wait = if idle { 1 } else { 0 };
        let uploads = pump_uploads(&upload_queue, &functions, wait)
            .await
            .map_err(explain)?;
        if let Some(failure) = &uploads.failure {
            failed_uploads += 1;
            println!("ingest     {failure}");
        }
        let mut steps = vec![uploads];
        for (fed, stream) in [
            (Fed::Aggregate, &state_stream),
            (Fed::Rules, &totals_stream),
        ] {
            if stopping.load(Ordering::SeqCst) {
                break;
            }
            let step = pump_stream(&aws, &functions, fed, stream, &mut cursor, &stopping).await?;
            match &step.failure {
                Some(failure) => {
                    let attempt = attempts.entry(fed.name()).or_insert(0);
                    *attempt += 1;
                    println!(
                        "{:<10} {failure} (attempt {attempt}; retrying from the failed record)",
                        fed.name()
                    );
                    if args.once && *attempt >= ONCE_ATTEMPTS {
                        return Err(anyhow!(
                            "the {} batch kept failing ({attempt} attempts): {failure}\nits position is saved: run `tally dev pump` again once the cause is fixed (--verbose shows the handler's log)",
                            fed.name()
                        ));
                    }
                    let backoff = Duration::from_secs(1 << (*attempt).min(5));
                    tokio::time::sleep(backoff).await;
                }
                None => {
                    attempts.remove(fed.name());
                }
            }
            steps.push(step);
        }
        for (total, step) in totals.iter_mut().zip(&steps) {
            *total += step.batches;
        }
        let did = steps.iter().any(|step| step.batches > 0);
        if args.once && !did && wait > 0 {
            break;
        }
        idle = !did;
        if !args.once && std::time::Instant::now() >= next_tick {
            ticks += 1;
            let (line, failure) = functions.tick().await;
            match failure {
                None => println!("tick       {line}"),
                Some(e) => println!("tick       failed ({e}); the next tick tries again: {line}"),
            }
            next_tick = std::time::Instant::now() + args.tick;
        }
    }
    if args.once && !stopping.load(Ordering::SeqCst) {
        ticks += 1;
        let (line, failure) = functions.tick().await;
        println!("tick       {line}");
        if let Some(e) = failure {
            return Err(anyhow!(
                "the tick failed: {e}\nrun `tally dev pump --once` again once the cause is fixed (--verbose shows the stage's log)"
            ));
        }
    }
    eprintln!(
        "pump: {} upload batches, {} state stream batches, {} totals stream batches, {}; positions saved to {}",
        totals[0],
        totals[1],
        totals[2],
        count(ticks as u64, "tick"),
        args.config.display()
    );
    if failed_uploads > 0 {
        return Err(anyhow!(
            "{failed_uploads} upload batches had failed messages; they come back after the queue's visibility timeout ({UPLOAD_VISIBILITY_SECONDS} s): run `tally dev pump` again (--verbose shows why they failed)"
        ));
    }
    Ok(())
}

/// One batch from the upload queue through ingest; deletes what succeeded.
async fn pump_uploads(
    queue: &Queue,
    functions: &Functions,
    wait_seconds: i32,
) -> Result<Step, tally_core::ports::StoreError> {
    let messages = queue.receive(10, wait_seconds).await?;
    if messages.is_empty() {
        return Ok(Step::default());
    }
    let event = queue.lambda_event(&messages);
    let mut step = Step {
        batches: 1,
        failure: None,
    };
    match functions.ingestor.handle(&event).await {
        Ok((response, report)) => {
            let failed: Vec<String> = match &response {
                IngestResponse::Sqs(response) => response
                    .batch_item_failures
                    .iter()
                    .map(|f| f.item_identifier.clone())
                    .collect(),
                IngestResponse::Report(_) => Vec::new(),
            };
            let done: Vec<String> = messages
                .iter()
                .filter(|m| m.message_id.as_ref().is_none_or(|id| !failed.contains(id)))
                .filter_map(|m| m.receipt_handle.clone())
                .collect();
            queue.delete(&done).await?;
            let records = if report.records == 0 {
                "no records (S3 test events)".to_owned()
            } else {
                count(report.records, "record")
            };
            println!(
                "ingest     {}, {records}: {} written, {} unchanged, {} stale or duplicate, {} rejected, {} ignored; {} write units",
                count(messages.len() as u64, "message"),
                report.written,
                report.unchanged,
                report.stale + report.duplicate + report.superseded,
                report.rejected,
                report.ignored,
                report.capacity.write_units
            );
            if !failed.is_empty() {
                step.failure = Some(format!(
                    "{} of {} messages failed; SQS delivers them again after {UPLOAD_VISIBILITY_SECONDS} s",
                    failed.len(),
                    messages.len()
                ));
            }
        }
        Err(failed) => {
            step.failure = Some(format!(
                "the invocation failed ({failed}); its {} messages come back after {UPLOAD_VISIBILITY_SECONDS} s",
                messages.len()
            ));
        }
    }
    Ok(step)
}
/// What to do after one batch of a shard.
enum Then {
    /// Read the shard's next batch.
    ReadOn,
    /// Go to the next shard.
    NextShard,
    /// Stop this stream's pass: a batch failed and is retried after a backoff.
    Retry,
}

/// Batches from one stream through its handler, moving the cursor after
/// each.
async fn pump_stream(
    aws: &Aws,
    functions: &Functions,
    fed: Fed,
    stream: &Stream,
    cursor: &mut Cursor,
    stopping: &AtomicBool,
) -> Result<Step, anyhow::Error> {
    let mut step = Step::default();
    let explain = |e| aws.explain(e);
    let shards = stream.shards().await.map_err(explain)?;
    let known: Vec<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    for shard in &shards {
        if cursor.finished(stream.arn(), &shard.id) {
            continue;
        }
        // Lambda finishes a parent shard before its children, so records
        // of one item stay in order across a split.
        if let Some(parent) = &shard.parent
            && known.contains(&parent.as_str())
            && !cursor.finished(stream.arn(), parent)
        {
            continue;
        }
        for _ in 0..BATCHES_PER_PASS {
            if stopping.load(Ordering::SeqCst) {
                return Ok(step);
            }
            let Some(position) = cursor.next_read(stream.arn(), &shard.id) else {
                break;
            };
            let (moved, then) =
                pump_batch(aws, functions, fed, stream, &shard.id, &position, &mut step).await?;
            if let Some(moved) = moved {
                cursor.advance(stream.arn(), &shard.id, moved)?;
            }
            match then {
                Then::ReadOn => {}
                Then::NextShard => break,
                Then::Retry => return Ok(step),
            }
        }
    }
    Ok(step)
}

/// Reads one batch of a shard from `position` and runs the handler on it:
/// where the shard's position moves to (if anywhere) and what to do next.
async fn pump_batch(
    aws: &Aws,
    functions: &Functions,
    fed: Fed,
    stream: &Stream,
    shard: &str,
    position: &Position,
    step: &mut Step,
) -> Result<(Option<ShardPosition>, Then), anyhow::Error> {
    let explain = |e| aws.explain(e);
    let Some(iterator) = stream.iterator(shard, position).await.map_err(explain)? else {
        return Ok((Some(ShardPosition::Finished), Then::NextShard));
    };
    let page = stream
        .read(iterator, streams::DEFAULT_BATCH)
        .await
        .map_err(explain)?;
    let closed = page.next.is_none();
    if page.records.is_empty() {
        return Ok((closed.then_some(ShardPosition::Finished), Then::NextShard));
    }
    let sequences: Vec<String> = page
        .records
        .iter()
        .filter_map(|r| streams::sequence_number(r).map(str::to_owned))
        .collect();
    let (Some(first), Some(last)) = (sequences.first(), sequences.last()) else {
        return Err(anyhow!(
            "the stream {} gave records without sequence numbers",
            stream.arn()
        ));
    };
    let event = streams::lambda_event(&page.records)
        .with_context(|| format!("records of {} in Lambda's shape", stream.arn()))?;
    let (response, line) = functions.handle(fed, &event).await;
    step.batches += 1;
    println!(
        "{:<10} {} from {}: {line}",
        fed.name(),
        count(page.records.len() as u64, "record"),
        table_of(stream.arn())
    );
    match response
        .batch_item_failures
        .first()
        .and_then(|f| f.item_identifier.clone())
    {
        // A closed shard read to its end: everything in it is processed.
        None if closed => Ok((Some(ShardPosition::Finished), Then::NextShard)),
        None => Ok((Some(ShardPosition::After(last.clone())), Then::ReadOn)),
        Some(failed) => {
            // A failed record outside the batch cannot be resumed from; the
            // whole batch is retried, as Lambda would.
            let from = if sequences.contains(&failed) {
                failed
            } else {
                first.clone()
            };
            step.failure = Some(format!(
                "the batch reported record {from} failed (of {first}..{last})"
            ));
            Ok((Some(ShardPosition::At(from)), Then::Retry))
        }
    }
}

/// The table a stream ARN belongs to (`arn:...:table/NAME/stream/LABEL`).
fn table_of(stream_arn: &str) -> &str {
    stream_arn
        .split("table/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or(stream_arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_arn_names_its_table() {
        assert_eq!(
            table_of(
                "arn:aws:dynamodb:us-east-1:123456789012:table/d-state/stream/2015-11-16T10:00:00.000"
            ),
            "d-state"
        );
    }

    #[test]
    fn a_moved_cursor_is_where_the_next_pump_starts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.json");
        let file = super::super::tests::dev_file();
        file.save(&path).unwrap();
        let mut cursor = Cursor::new(DevFile::load(&path).unwrap(), path.clone());
        assert_eq!(
            cursor.next_read("arn:s", "shard-1"),
            Some(Position::TrimHorizon)
        );
        cursor
            .advance("arn:s", "shard-1", ShardPosition::After("42".into()))
            .unwrap();
        cursor
            .advance("arn:s", "shard-2", ShardPosition::Finished)
            .unwrap();
        // A second pump loads the file the first left behind.
        let next = Cursor::new(DevFile::load(&path).unwrap(), path);
        assert_eq!(
            next.next_read("arn:s", "shard-1"),
            Some(Position::After("42".into()))
        );
        assert!(next.finished("arn:s", "shard-2"));
        assert_eq!(next.next_read("arn:s", "shard-2"), None);
        assert_eq!(next.file(), cursor.file());
    }
}
