//! Writes the events Lambda would deliver to tally's functions, from real
//! resources, so a built function can be invoked on them (`tally invoke
//! FUNCTION --event FILE --bootstrap PATH`; `scripts/lambda-footprint` does
//! this for the sample workload of the per-counter design tally replaces).
//!
//! ```sh
//! # the SNS notification ingest gets for an object already uploaded
//! cargo run -p tally-cli --example lambda_events -- upload --bucket B --key counters/2015-11-16/i-000 --out ingest.json
//! # the first batch of a table's stream, as aggregate (state) or rules (totals) gets it
//! cargo run -p tally-cli --example lambda_events -- stream --table T --batch 100 --out aggregate.json
//! ```
//!
//! Why from the resources rather than made up: the ingest event must name
//! the object's real ETag and size, and a stream batch must carry the
//! images the stages wrote. Events take the shapes AWS documents (the
//! samples in tests/fixtures/aws-events/, the stream records converted as
//! `tally dev pump` converts them). AWS configuration is the usual one,
//! `AWS_ENDPOINT_URL` included.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Writes the event Lambda would deliver to a tally function")]
struct Args {
    #[command(subcommand)]
    event: Event,
}

#[derive(Debug, Subcommand)]
enum Event {
    /// The SNS-wrapped S3 `ObjectCreated:Put` event for an existing object.
    Upload {
        #[arg(long)]
        bucket: String,
        #[arg(long)]
        key: String,
        /// The event's S3 sequencer (AWS always sends one).
        #[arg(long, default_value = "0A1B2C3D4E5F678901")]
        sequencer: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// The first `--batch` records of a table's stream, from its oldest.
    Stream {
        #[arg(long)]
        table: String,
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long)]
        out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let sdk = tally_aws::config::load().await;
    let (event, out, what) = match args.event {
        Event::Upload {
            bucket,
            key,
            sequencer,
            out,
        } => {
            let s3 = tally_aws::config::s3(&sdk);
            let head = s3
                .head_object()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await
                .with_context(|| {
                    format!("HeadObject s3://{bucket}/{key}: upload it first, and check AWS_ENDPOINT_URL")
                })?;
            let etag = tally_core::ports::normalize_etag(head.e_tag().unwrap_or_default());
            let mut s3_event = tally_tests::s3_event(&tally_tests::S3Change {
                event_name: "ObjectCreated:Put",
                bucket: &bucket,
                key: &key,
                etag: Some(&etag),
                version_id: head.version_id(),
                sequencer: Some(&sequencer),
                event_millis: chrono::Utc::now().timestamp_millis(),
            });
            s3_event["Records"][0]["s3"]["object"]["size"] =
                head.content_length().unwrap_or_default().into();
            (
                tally_tests::sns_event(&s3_event),
                out,
                format!("the SNS notification for s3://{bucket}/{key}"),
            )
        }
        Event::Stream { table, batch, out } => {
            let dynamodb = tally_aws::config::dynamodb(&sdk);
            let mut reader = tally_aws::streams::StreamReader::open(&sdk, &dynamodb, &table)
                .await
                .with_context(|| {
                    format!("opening the stream of {table}: does the table exist, with a stream?")
                })?;
            let mut records = reader
                .read_new()
                .await
                .with_context(|| format!("reading the stream of {table}"))?;
            if records.is_empty() {
                bail!("the stream of {table} has no records yet: write to the table first");
            }
            let total = records.len();
            records.truncate(batch.max(1));
            (
                serde_json::json!({ "Records": records }),
                out,
                format!(
                    "{} of the {total} records of {table}'s stream",
                    records.len()
                ),
            )
        }
    };
    let text = serde_json::to_string_pretty(&event).context("encoding the event")?;
    std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("{}: {what}", out.display());
    Ok(())
}
