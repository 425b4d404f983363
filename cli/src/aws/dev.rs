//! `tally dev up` and `tally dev pump`: the whole AWS pipeline on one laptop,
//! against an AWS-compatible endpoint such as moto's server.
//!
//! **`dev up`** creates, idempotently, what the deployment template creates
//! on AWS: the counters bucket, the upload topic with the bucket's
//! `ObjectCreated`/`ObjectRemoved` notifications for `counters/` sent to it,
//! the state, partials, totals and alert tables (streams on state and
//! totals), and the alert topic. Two things stand in for what an emulator
//! cannot do: a queue subscribed to the upload topic takes the place of
//! ingest's own SNS subscription (nothing can invoke a loop on a laptop, so
//! `pump` polls the queue; ingest accepts SQS messages carrying SNS
//! envelopes as one of its documented invocations), and a queue subscribed
//! to the alert topic lets people read the alerts. It prints the variables
//! each function reads as `export` lines (so `eval "$(tally dev up)"` sets
//! them for `tally invoke`, `backfill` and `reconcile`) and saves what it
//! made to a file (`.tally-dev.json`) that `pump` reads. Running it again
//! changes nothing and keeps `pump`'s saved positions.
//!
//! It refuses to run without `AWS_ENDPOINT_URL`: it is for emulators, and
//! creating these resources in a real account is the deployment's job.
//!
//! **`dev pump`** does what Lambda's event source mappings do:
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
//!   `ReportBatchItemFailures`; a failing batch is retried with backoff.
//!
//! Positions are saved in the dev file after every batch, so a second
//! `pump` continues where the first stopped. The handlers are built from
//! the same settings readers and wiring as the Lambdas, from the variables
//! `dev up` saved (the process environment adds what the file does not set,
//! such as `TALLY_ALERT_DAYS` or `TALLY_RULES_BUCKET`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tally_aws::bucket::S3ObjectStore;
use tally_aws::queue::Queue;
use tally_aws::streams::{self, Position, Stream};
use tally_core::rules::RuleSet;
use tally_ingest::IngestResponse;
use tally_rules::RuleSource;

use super::{Aws, count};

/// The dev file's default place.
pub const DEFAULT_CONFIG: &str = ".tally-dev.json";

/// How long a received upload message stays hidden before SQS delivers it
/// again (after ingest failed it).
const UPLOAD_VISIBILITY_SECONDS: u32 = 30;

/// Batches read from one stream per pass, so one busy stream does not keep
/// the others waiting.
const BATCHES_PER_PASS: usize = 10;

/// With `--once`, attempts at a failing batch before giving up.
const ONCE_ATTEMPTS: u32 = 3;

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Create the pipeline's bucket, topics, queues, tables and streams on
    /// an AWS-compatible endpoint, idempotently.
    ///
    /// For an emulator such as moto's server (AWS_ENDPOINT_URL must be
    /// set). Prints the variables each function reads as `export` lines
    /// and saves what it made to a file that `tally dev pump` reads.
    /// Running it again changes nothing.
    #[command(after_help = "\
Examples:
  moto_server -p 5000 &
  export AWS_ENDPOINT_URL=http://127.0.0.1:5000 AWS_REGION=us-east-1 \\
         AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
  eval \"$(tally dev up)\"
  aws --endpoint-url $AWS_ENDPOINT_URL s3 cp body.txt s3://tally-dev-counters/counters/2015-11-16/i-1
  tally dev pump --once

Exit codes: 0 ready; 1 a resource could not be created (the message says which and
why); 2 the command line was wrong.")]
    Up(UpArgs),
    /// Drive the three handlers from the upload queue and the two streams,
    /// as Lambda's event source mappings would.
    ///
    /// Upload notifications go to ingest (SQS event shape), the state
    /// table's stream to aggregate and the totals table's stream to rules
    /// (DynamoDB stream event shape), honouring batchItemFailures. One line
    /// per batch says what was processed. Runs until Ctrl-C, or with --once
    /// until everything currently available is processed. Positions are
    /// saved, so the next run continues where this one stopped.
    #[command(after_help = "\
Examples:
  tally dev pump                 # until Ctrl-C
  tally dev pump --once          # what is there now, then exit
  tally dev pump --rules ./my-rules

Exit codes: 0 done (or stopped with Ctrl-C); 1 a batch kept failing or an upload
message failed (positions are saved: run it again once fixed), or the dev file is
missing (run `tally dev up`); 2 the command line was wrong.")]
    Pump(PumpArgs),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Names every resource: NAME-counters, NAME-state, NAME-alerts, ...
    #[arg(long, default_value = "tally-dev", value_parser = parse_name)]
    name: String,
    /// Where to save what was created.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

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
}

pub async fn run(command: DevCommand) -> anyhow::Result<()> {
    match command {
        DevCommand::Up(args) => up(args).await,
        DevCommand::Pump(args) => pump(args).await,
    }
}

/// A name that makes valid bucket, queue, topic and table names.
fn parse_name(text: &str) -> Result<String, String> {
    let ok = (1..=40).contains(&text.len())
        && text.starts_with(|c: char| c.is_ascii_lowercase())
        && text.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} cannot name a bucket: use 1 to 40 lowercase letters, digits and hyphens, starting with a letter (for example tally-dev)"
        ))
    }
}

/// The tables a dev environment has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tables {
    pub state: String,
    pub partials: String,
    pub totals: String,
    pub alerts: String,
}

/// Where a pump stands in one shard of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardPosition {
    /// Everything up to this sequence number was processed.
    After(String),
    /// This record failed and is processed next.
    At(String),
    /// A closed shard read to its end.
    Finished,
}

/// What `dev up` created, and where `dev pump` stands: the dev file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevFile {
    pub name: String,
    /// `AWS_ENDPOINT_URL` when it was created.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub upload_topic_arn: String,
    /// The queue standing in for ingest's subscription to the upload topic.
    pub upload_queue_url: String,
    pub alert_topic_arn: String,
    /// A queue subscribed to the alert topic, for people to read alerts.
    pub alert_queue_url: String,
    pub tables: Tables,
    /// What each function's environment is set to.
    pub environment: BTreeMap<String, String>,
    /// Stream ARN → shard id → position.
    #[serde(default)]
    pub positions: BTreeMap<String, BTreeMap<String, ShardPosition>>,
}

impl DevFile {
    fn load(path: &Path) -> anyhow::Result<DevFile> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow!(
                    "no dev environment at {}: run `tally dev up` first (with the same --config)",
                    path.display()
                )
            } else {
                anyhow!("cannot read {}: {e}", path.display())
            }
        })?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a file `tally dev up` wrote; run `tally dev up` again to rewrite it",
                path.display()
            )
        })
    }

    /// Writes the file whole (a temporary file renamed over it), so an
    /// interrupted pump never leaves half a file behind.
    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        std::fs::write(&temporary, format!("{text}\n"))
            .and_then(|()| std::fs::rename(&temporary, path))
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// The functions' settings: the file's variables, then the process's.
    fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |name: &str| {
            self.environment
                .get(name)
                .cloned()
                .or_else(|| std::env::var(name).ok())
        }
    }
}

/// What each function reads, for the `export` lines.
const FUNCTIONS: [(&str, &[&str]); 3] = [
    ("ingest", tally_ingest::settings::VARIABLES),
    ("aggregate", tally_aggregate::settings::VARIABLES),
    ("rules", tally_rules::settings::VARIABLES),
];

/// The environment the three functions get in a dev environment.
fn environment(bucket: &str, tables: &Tables, alert_topic_arn: &str) -> BTreeMap<String, String> {
    [
        ("TALLY_STATE_TABLE", tables.state.as_str()),
        ("TALLY_BUCKET", bucket),
        ("TALLY_PARTIALS_TABLE", tables.partials.as_str()),
        ("TALLY_TOTALS_TABLE", tables.totals.as_str()),
        ("TALLY_ALERTS_TABLE", tables.alerts.as_str()),
        ("TALLY_ALERT_TOPIC_ARN", alert_topic_arn),
        ("TALLY_SNAPSHOT_BUCKET", bucket),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
}

/// Checks that each function's settings read from `environment` load, so a
/// dev environment can never hand a function less than it needs.
fn check_settings(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
    tally_ingest::settings::Settings::from_lookup(&lookup).map_err(|e| anyhow!("ingest: {e}"))?;
    tally_aggregate::settings::Settings::from_lookup(&lookup)
        .map_err(|e| anyhow!("aggregate: {e}"))?;
    tally_rules::settings::Settings::from_lookup(&lookup).map_err(|e| anyhow!("rules: {e}"))?;
    Ok(())
}

/// `export NAME='value'  # functions` lines, quoted for any POSIX shell.
fn exports(environment: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (name, value) in environment {
        let readers: Vec<&str> = FUNCTIONS
            .iter()
            .filter(|(_, variables)| variables.contains(&name.as_str()))
            .map(|(function, _)| *function)
            .collect();
        let quoted = format!("'{}'", value.replace('\'', r"'\''"));
        out.push_str(&format!(
            "export {name}={quoted}  # read by {}\n",
            readers.join(", ")
        ));
    }
    out
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let aws = Aws::load().await?;
    let Some(endpoint) = aws.endpoint.clone() else {
        return Err(anyhow!(
            "AWS_ENDPOINT_URL is not set: `tally dev up` creates a pipeline on an AWS-compatible endpoint such as moto's server. Start one (for example `moto_server -p 5000`) and export AWS_ENDPOINT_URL=http://127.0.0.1:5000; in a real AWS account, deploy the template in deploy/ instead"
        ));
    };
    let name = &args.name;
    let bucket = format!("{name}-counters");
    let tables = Tables {
        state: format!("{name}-state"),
        partials: format!("{name}-partials"),
        totals: format!("{name}-totals"),
        alerts: format!("{name}-alerts"),
    };
    let s3 = tally_aws::config::s3(&aws.sdk);
    let sns = tally_aws::config::sns(&aws.sdk);
    let sqs = aws_sdk_sqs::Client::new(&aws.sdk);
    let dynamodb = tally_aws::config::dynamodb(&aws.sdk);
    let explain = |e| aws.explain(e);
    eprintln!("tally dev up: {name} on {}", aws.place());

    tally_aws::bucket::create_bucket(&s3, &bucket, &aws.region)
        .await
        .map_err(explain)?;
    eprintln!("  bucket      s3://{bucket}");

    let upload_topic_arn = tally_aws::topic::create_topic(&sns, &format!("{name}-uploads"))
        .await
        .map_err(explain)?;
    allow_bucket_to_publish(&sns, &upload_topic_arn, &bucket)
        .await
        .map_err(explain)?;
    let upload_queue = Queue::create(&sqs, &format!("{name}-ingest"), UPLOAD_VISIBILITY_SECONDS)
        .await
        .map_err(explain)?;
    upload_queue
        .subscribe_to(&sns, &upload_topic_arn)
        .await
        .map_err(explain)?;
    let prefix = format!("{}/", tally_core::key::DEFAULT_PREFIX);
    let changed = tally_aws::bucket::notify_topic(&s3, &bucket, &upload_topic_arn, &prefix)
        .await
        .map_err(explain)?;
    eprintln!(
        "  uploads     s3://{bucket}/{prefix} → {upload_topic_arn} → {} (notifications {})",
        upload_queue.url(),
        if changed {
            "configured"
        } else {
            "already configured"
        }
    );

    tally_aws::state_table::create_state_table(&dynamodb, &tables.state)
        .await
        .map_err(explain)?;
    tally_aws::totals_tables::create_partials_table(&dynamodb, &tables.partials)
        .await
        .map_err(explain)?;
    tally_aws::totals_tables::create_totals_table(&dynamodb, &tables.totals)
        .await
        .map_err(explain)?;
    tally_aws::alerts_table::create_alerts_table(&dynamodb, &tables.alerts)
        .await
        .map_err(explain)?;
    eprintln!(
        "  tables      {} (stream), {}, {} (stream), {}",
        tables.state, tables.partials, tables.totals, tables.alerts
    );

    let alert_topic_arn = tally_aws::topic::create_topic(&sns, &format!("{name}-alerts"))
        .await
        .map_err(explain)?;
    let alert_queue = Queue::create(&sqs, &format!("{name}-on-call"), 30)
        .await
        .map_err(explain)?;
    alert_queue
        .subscribe_to(&sns, &alert_topic_arn)
        .await
        .map_err(explain)?;
    eprintln!("  alerts      {alert_topic_arn} → {}", alert_queue.url());

    let environment = environment(&bucket, &tables, &alert_topic_arn);
    check_settings(|name| environment.get(name).cloned())?;

    // Keep the pump's positions in the streams that still exist; a
    // position in a stream of a deleted table means nothing.
    let mut positions = match DevFile::load(&args.config) {
        Ok(previous) => previous.positions,
        Err(_) => BTreeMap::new(),
    };
    let mut current_streams = Vec::new();
    for table in [&tables.state, &tables.totals] {
        let stream = Stream::of_table(&aws.sdk, &dynamodb, table)
            .await
            .map_err(explain)?;
        current_streams.push(stream.arn().to_owned());
    }
    positions.retain(|arn, _| current_streams.contains(arn));

    let file = DevFile {
        name: name.clone(),
        endpoint: Some(endpoint.clone()),
        region: aws.region.clone(),
        bucket: bucket.clone(),
        upload_topic_arn,
        upload_queue_url: upload_queue.url().to_owned(),
        alert_topic_arn,
        alert_queue_url: alert_queue.url().to_owned(),
        tables,
        environment,
        positions,
    };
    file.save(&args.config)?;
    eprintln!(
        "ready; saved to {}. Upload to s3://{bucket}/{prefix}<YYYY-MM-DD>/<instance>, then run `tally dev pump`.",
        args.config.display()
    );

    print!(
        "# tally dev environment {name} on {endpoint} (region {}), saved to {}\n\
         # alerts: aws --endpoint-url {endpoint} sqs receive-message --queue-url {}\n{}",
        aws.region,
        args.config.display(),
        file.alert_queue_url,
        exports(&file.environment)
    );
    Ok(())
}

/// Lets the bucket publish its notifications to the topic: AWS refuses
/// them otherwise (emulators do not check, and the same setup works on both).
async fn allow_bucket_to_publish(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    bucket: &str,
) -> Result<(), tally_core::ports::StoreError> {
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "bucket-may-publish",
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "SNS:Publish",
            "Resource": topic_arn,
            "Condition": {"ArnLike": {"aws:SourceArn": format!("arn:aws:s3:::{bucket}")}}
        }]
    });
    sns.set_topic_attributes()
        .topic_arn(topic_arn)
        .attribute_name("Policy")
        .attribute_value(policy.to_string())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            tally_aws::store_error(
                format!("SNS SetTopicAttributes Policy on {topic_arn}"),
                e.into_service_error(),
            )
        })
}

/// Loads `dir/*.yaml` for `--rules`, refusing a folder without rules: a
/// typo in the path must not silence every alert.
pub(crate) fn load_rules_dir(dir: &Path) -> anyhow::Result<RuleSet> {
    let rules = crate::run::load_rules(Some(dir))?;
    if rules.is_empty() {
        return Err(anyhow!(
            "{} has no rules (no *.yaml file with a rule in it); point --rules at a folder like rules-config/",
            dir.display()
        ));
    }
    Ok(rules)
}

/// The three functions, built as their Lambdas build them.
struct Functions {
    ingestor: tally_ingest::wiring::AwsIngestor,
    aggregator: tally_aggregate::wiring::AwsAggregator,
    stage: tally_rules::wiring::AwsStage,
    rules: Rules,
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
                let rules = match &self.rules {
                    Rules::Fixed(rules) => rules.clone(),
                    Rules::Source(source) => source.current().await,
                };
                let (response, r) = self.stage.handle(&rules, event).await;
                let line = format!(
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
                );
                (response, line)
            }
        }
    }
}

/// What one step of a pass did.
#[derive(Debug, Default)]
struct Step {
    /// Batches processed (successfully or not).
    batches: usize,
    /// A failure to retry, described.
    failure: Option<String>,
}

async fn pump(args: PumpArgs) -> anyhow::Result<()> {
    let aws = Aws::load().await?;
    let mut file = DevFile::load(&args.config)?;
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
            file.tables.state,
            file.tables.totals
        );
    }

    let mut idle = false;
    let mut failed_uploads = 0usize;
    let mut attempts: BTreeMap<&str, u32> = BTreeMap::new();
    let mut totals = [0usize; 3];
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
            let step = pump_stream(
                &aws,
                &functions,
                fed,
                stream,
                &mut file,
                &args.config,
                &stopping,
            )
            .await?;
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
    }
    eprintln!(
        "pump: {} upload batches, {} state stream batches, {} totals stream batches; positions saved to {}",
        totals[0],
        totals[1],
        totals[2],
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

/// Batches from one stream through its handler, saving positions.
async fn pump_stream(
    aws: &Aws,
    functions: &Functions,
    fed: Fed,
    stream: &Stream,
    file: &mut DevFile,
    config: &Path,
    stopping: &AtomicBool,
) -> Result<Step, anyhow::Error> {
    let mut step = Step::default();
    let explain = |e| aws.explain(e);
    let shards = stream.shards().await.map_err(explain)?;
    let known: Vec<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    for shard in &shards {
        let positions = file.positions.get(stream.arn());
        let finished =
            |id: &str| positions.and_then(|p| p.get(id)) == Some(&ShardPosition::Finished);
        if finished(&shard.id) {
            continue;
        }
        // Lambda finishes a parent shard before its children, so records
        // of one item stay in order across a split.
        if let Some(parent) = &shard.parent
            && known.contains(&parent.as_str())
            && !finished(parent)
        {
            continue;
        }
        for _ in 0..BATCHES_PER_PASS {
            if stopping.load(Ordering::SeqCst) {
                return Ok(step);
            }
            let saved = file
                .positions
                .get(stream.arn())
                .and_then(|positions| positions.get(&shard.id));
            let position = match saved {
                Some(ShardPosition::After(sequence)) => Position::After(sequence.clone()),
                Some(ShardPosition::At(sequence)) => Position::At(sequence.clone()),
                Some(ShardPosition::Finished) => break,
                None => Position::TrimHorizon,
            };
            let Some(iterator) = stream
                .iterator(&shard.id, &position)
                .await
                .map_err(explain)?
            else {
                set_position(
                    file,
                    config,
                    stream.arn(),
                    &shard.id,
                    ShardPosition::Finished,
                )?;
                break;
            };
            let page = stream
                .read(iterator, streams::DEFAULT_BATCH)
                .await
                .map_err(explain)?;
            if page.records.is_empty() {
                if page.next.is_none() {
                    set_position(
                        file,
                        config,
                        stream.arn(),
                        &shard.id,
                        ShardPosition::Finished,
                    )?;
                }
                break;
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
                None => {
                    set_position(
                        file,
                        config,
                        stream.arn(),
                        &shard.id,
                        ShardPosition::After(last.clone()),
                    )?;
                }
                Some(failed) => {
                    // A failed record outside the batch cannot be resumed
                    // from; the whole batch is retried, as Lambda would.
                    let from = if sequences.contains(&failed) {
                        failed
                    } else {
                        first.clone()
                    };
                    step.failure = Some(format!(
                        "the batch reported record {from} failed (of {first}..{last})"
                    ));
                    set_position(
                        file,
                        config,
                        stream.arn(),
                        &shard.id,
                        ShardPosition::At(from),
                    )?;
                    return Ok(step);
                }
            }
            if page.next.is_none() {
                set_position(
                    file,
                    config,
                    stream.arn(),
                    &shard.id,
                    ShardPosition::Finished,
                )?;
                break;
            }
        }
    }
    Ok(step)
}

/// Moves the pump in one shard and saves the dev file.
fn set_position(
    file: &mut DevFile,
    config: &Path,
    stream_arn: &str,
    shard: &str,
    position: ShardPosition,
) -> anyhow::Result<()> {
    file.positions
        .entry(stream_arn.to_owned())
        .or_default()
        .insert(shard.to_owned(), position);
    file.save(config)
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

    fn tables() -> Tables {
        Tables {
            state: "d-state".into(),
            partials: "d-partials".into(),
            totals: "d-totals".into(),
            alerts: "d-alerts".into(),
        }
    }

    #[test]
    fn names_that_cannot_name_a_bucket_are_refused_with_an_example() {
        assert_eq!(parse_name("tally-dev").unwrap(), "tally-dev");
        for bad in ["", "Tally", "1dev", "dev-", "dev_1", &"a".repeat(41)] {
            let error = parse_name(bad).unwrap_err();
            assert!(error.contains("for example tally-dev"), "{error}");
        }
    }

    #[test]
    fn the_environment_gives_every_function_what_it_needs_and_nothing_it_does_not_read() {
        let environment = environment("d-counters", &tables(), "arn:aws:sns:us-east-1:1:d-alerts");
        check_settings(|name| environment.get(name).cloned()).unwrap();
        for name in environment.keys() {
            assert!(
                FUNCTIONS
                    .iter()
                    .any(|(_, variables)| variables.contains(&name.as_str())),
                "{name} is read by no function"
            );
        }
    }

    #[test]
    fn exports_are_quoted_and_say_which_functions_read_them() {
        let environment = environment("d-counters", &tables(), "arn:aws:sns:us-east-1:1:d-alerts");
        let text = exports(&environment);
        assert!(
            text.contains("export TALLY_PARTIALS_TABLE='d-partials'  # read by aggregate, rules\n"),
            "{text}"
        );
        assert!(
            text.contains("export TALLY_STATE_TABLE='d-state'  # read by ingest\n"),
            "{text}"
        );
        let odd = BTreeMap::from([("TALLY_BUCKET".to_owned(), "it's".to_owned())]);
        assert!(exports(&odd).starts_with(r"export TALLY_BUCKET='it'\''s'"));
    }

    #[test]
    fn the_dev_file_round_trips_with_positions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.json");
        let mut file = DevFile {
            name: "d".into(),
            endpoint: Some("http://127.0.0.1:5000".into()),
            region: "us-east-1".into(),
            bucket: "d-counters".into(),
            upload_topic_arn: "t".into(),
            upload_queue_url: "q".into(),
            alert_topic_arn: "a".into(),
            alert_queue_url: "aq".into(),
            tables: tables(),
            environment: environment("d-counters", &tables(), "a"),
            positions: BTreeMap::new(),
        };
        file.positions.insert(
            "arn:stream".into(),
            BTreeMap::from([
                ("shard-1".into(), ShardPosition::Finished),
                ("shard-2".into(), ShardPosition::After("42".into())),
            ]),
        );
        file.save(&path).unwrap();
        assert_eq!(DevFile::load(&path).unwrap(), file);
        let missing = DevFile::load(&dir.path().join("none.json")).unwrap_err();
        assert!(
            missing.to_string().contains("run `tally dev up` first"),
            "{missing}"
        );
    }

    #[test]
    fn a_stream_arn_names_its_table() {
        assert_eq!(
            table_of(
                "arn:aws:dynamodb:us-east-1:123456789012:table/d-state/stream/2015-11-16T10:00:00.000"
            ),
            "d-state"
        );
    }
}
