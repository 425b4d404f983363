//! `tally backfill`: ingest what is already in the bucket.
//!
//! On a first deploy the bucket already holds the day's uploads, and S3
//! sends no event for an object until it is written again. Backfill lists
//! `<prefix>/[<date>/]`, makes up for each object the S3 event record ingest
//! decodes, and runs it through the ingest library exactly as the Lambda
//! would (same settings, same conditional writes, same checks), with a
//! progress bar on a terminal and a summary at the end.
//!
//! # Where a made-up event sits in the order of real ones
//!
//! Ingest orders the events of one key by S3's `sequencer` and writes a
//! state only over an older one. A listing has no sequencer, and the event
//! time a listing could give (`LastModified`, which becomes the record's
//! `eventTime`) is no help: events without a sequencer are ordered by time
//! *after every sequenced event* ([`tally_core::ordering`]), so a backfill
//! ordered by time would overwrite newer state written by a real event and
//! would never again be replaced by a real event. Any other made-up
//! sequencer could be larger than a real one to come.
//!
//! So a backfilled record carries the smallest sequencer there is, `0`:
//!
//! - where a real event already wrote the instance's state, the backfill
//!   finds it newer and leaves it alone ("kept newer" in the summary): a
//!   real event knows an order a listing cannot (the object may have been
//!   overwritten or deleted since it was listed);
//! - where there is no state yet, it writes the object's current body, and
//!   any real event after it (with any sequencer, or none) replaces it;
//! - run again, it finds its own earlier write (same ordering) and ingest's
//!   check after writing compares it with the object as it is now,
//!   correcting it if the object changed or went: a second backfill
//!   refreshes what the first one wrote and still never overrides a real
//!   event.
//!
//! The limit: an instance whose state came from a real event, and whose
//! later event was lost, is not repaired by a backfill. Writing the object
//! again (for example copying it onto itself) makes S3 send a fresh event.
//!
//! Rejected bodies are reported with their reasons, as ingest logs them;
//! they do not fail the command (the instance keeps its last accepted
//! state, as in production). Objects that could not be processed (a store
//! error after the SDK's retries) do: run the backfill again, it is
//! idempotent.

use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tally_core::key::{Date, encode_event_key};
use tally_ingest::event::{self, Record};
use tally_ingest::settings::Settings;
use tally_ingest::{Capacity, Outcome};

use super::{Aws, environment_with, parse_date, stderr_is_terminal};

/// The sequencer of a backfilled record: below every real one (see the module docs).
pub const BACKFILL_SEQUENCER: &str = "0";

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  tally backfill --bucket my-counters --date 2015-11-16
  TALLY_STATE_TABLE=tally-state tally backfill --bucket my-counters

Settings are ingest's (TALLY_STATE_TABLE, TALLY_COUNTERS_PREFIX, TALLY_MAX_BODY_BYTES,
TALLY_INGEST_CONCURRENCY); AWS_REGION, credentials and AWS_ENDPOINT_URL as usual.
A backfilled object never overrides state a real upload event wrote.

Exit codes: 0 every object was processed (rejected bodies are reported, not failures);
1 an object could not be processed or the listing failed (run it again: it is idempotent);
2 the command line was wrong.")]
pub struct BackfillArgs {
    /// The bucket the fleet uploads to [default: TALLY_BUCKET].
    #[arg(long, env = "TALLY_BUCKET", value_name = "BUCKET")]
    bucket: String,
    /// Only this date (YYYY-MM-DD); every date under the prefix when left out.
    #[arg(long, value_parser = parse_date, value_name = "DATE")]
    date: Option<Date>,
    /// The state table [default: TALLY_STATE_TABLE].
    #[arg(long, value_name = "TABLE")]
    state_table: Option<String>,
}

/// An object as the listing shows it.
#[derive(Debug, Clone)]
struct Listed {
    key: String,
    etag: Option<String>,
    size: i64,
    last_modified_millis: i64,
}

/// What the backfill did, by outcome.
#[derive(Debug, Default)]
struct Summary {
    objects: usize,
    accepted: usize,
    unchanged: usize,
    kept_newer: usize,
    gone: usize,
    ignored: Vec<(String, String)>,
    rejected: Vec<(String, String)>,
    failed: Vec<(String, String)>,
    capacity: Capacity,
}

pub async fn run(args: BackfillArgs) -> anyhow::Result<()> {
    let aws = Aws::load().await?;
    let lookup = environment_with(vec![("TALLY_STATE_TABLE", args.state_table.clone())]);
    let mut settings =
        Settings::from_lookup(lookup).map_err(|e| anyhow!("{e} (or pass --state-table)"))?;
    // The bucket is the one named here; TALLY_BUCKET only filters events.
    settings.ingest.bucket = None;
    let concurrency = settings.ingest.concurrency.max(1);
    let prefix = match &args.date {
        Some(date) => format!("{}/{date}/", settings.ingest.prefix),
        None => format!("{}/", settings.ingest.prefix),
    };
    let where_ = format!("s3://{}/{prefix}", args.bucket);
    let table = settings.state_table.clone();

    let objects = list(&aws, &args.bucket, &prefix).await?;
    eprintln!(
        "backfill: {} objects under {where_} into table {table} on {}",
        objects.len(),
        aws.place()
    );

    let mut notices = Vec::with_capacity(objects.len());
    let mut summary = Summary {
        objects: objects.len(),
        ..Summary::default()
    };
    for object in &objects {
        let record = backfill_record(&args.bucket, &aws.region, object);
        let decoded = event::decode(&json!({ "Records": [record] }))
            .context("decoding a made-up S3 event (a bug in tally backfill)")?;
        for message in decoded.messages {
            let records = message.records.map_err(|e| {
                anyhow!(
                    "decoding the made-up S3 event for {} (a bug in tally backfill): {e}",
                    object.key
                )
            })?;
            for record in records {
                match record {
                    Record::Notice(notice) => notices.push(notice),
                    Record::Skipped(skipped) => {
                        summary.ignored.push((object.key.clone(), skipped.why))
                    }
                }
            }
        }
    }

    let bar = if stderr_is_terminal() {
        let bar = ProgressBar::new(notices.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} objects, {elapsed} so far, about {eta} left {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    } else {
        ProgressBar::hidden()
    };
    let ingestor = tally_ingest::wiring::ingestor(&aws.sdk, settings);
    let ingestor = &ingestor;
    let applies: Vec<_> = notices
        .iter()
        .map(|notice| async move { (notice, ingestor.apply(notice).await) })
        .collect();
    let mut results = futures::stream::iter(applies).buffer_unordered(concurrency);
    while let Some((notice, result)) = results.next().await {
        bar.inc(1);
        let key = notice.object_key.clone();
        match result {
            Ok((outcome, used)) => {
                summary.capacity += used;
                match outcome {
                    Outcome::Written { .. } => summary.accepted += 1,
                    Outcome::Unchanged | Outcome::Duplicate => summary.unchanged += 1,
                    Outcome::Stale | Outcome::Superseded => summary.kept_newer += 1,
                    Outcome::Gone => summary.gone += 1,
                    Outcome::Ignored(why) => summary.ignored.push((key, why)),
                    Outcome::Rejected(why) => summary.rejected.push((key, why.to_string())),
                }
            }
            Err(e) => {
                bar.set_message(format!("({} failed)", summary.failed.len() + 1));
                summary.failed.push((key, format!("{:#}", aws.explain(e))));
            }
        }
    }
    bar.finish_and_clear();
    print!("{}", render(&where_, &table, &summary));

    if let Some((key, error)) = summary.failed.first() {
        return Err(anyhow!(
            "{} of {} objects could not be ingested; first: {key}: {error}\nrun the backfill again once the cause is fixed: it is idempotent, and what was ingested is skipped",
            summary.failed.len(),
            summary.objects
        ));
    }
    Ok(())
}

/// Every object under `prefix`, in key order.
async fn list(aws: &Aws, bucket: &str, prefix: &str) -> anyhow::Result<Vec<Listed>> {
    let store = tally_aws::bucket::S3ObjectStore::new(tally_aws::config::s3(&aws.sdk));
    let objects = store
        .list_objects(bucket, prefix)
        .await
        .map_err(|e| aws.explain(e))?;
    Ok(objects
        .into_iter()
        .filter_map(|object| {
            Some(Listed {
                key: object.key?,
                etag: object.e_tag,
                size: object.size.unwrap_or(0),
                last_modified_millis: object
                    .last_modified
                    .and_then(|t| t.to_millis().ok())
                    .unwrap_or(0),
            })
        })
        .collect())
}

/// The S3 event record a backfilled object gets: an `ObjectCreated:Put` at
/// its `LastModified`, with the smallest sequencer (see the module docs)
/// and the key URL-encoded as S3 sends it.
fn backfill_record(bucket: &str, region: &str, object: &Listed) -> Value {
    let event_time = chrono::DateTime::from_timestamp_millis(object.last_modified_millis)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let mut s3_object = json!({
        "key": encode_event_key(&object.key),
        "size": object.size,
        "sequencer": BACKFILL_SEQUENCER,
    });
    if let Some(etag) = &object.etag {
        s3_object["eTag"] = etag.trim_matches('"').into();
    }
    json!({
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": event_time,
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "tally-backfill"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "tally-backfill",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "tally-backfill"},
                "arn": format!("arn:aws:s3:::{bucket}"),
            },
            "object": s3_object,
        },
    })
}

fn render(where_: &str, table: &str, summary: &Summary) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "backfill of {where_} into {table}: {} objects",
        summary.objects
    );
    let line = |out: &mut String, count: usize, what: &str, why: &str| {
        let _ = writeln!(out, "  {count:>7} {what:<11} {why}");
    };
    line(&mut out, summary.accepted, "accepted", "state written");
    line(
        &mut out,
        summary.unchanged,
        "unchanged",
        "the state already held this body",
    );
    line(
        &mut out,
        summary.kept_newer,
        "kept newer",
        "a real upload event had written newer state",
    );
    line(
        &mut out,
        summary.gone,
        "gone",
        "deleted since the listing (its removal event applies)",
    );
    for (count, what, why, items) in [
        (
            summary.ignored.len(),
            "ignored",
            "keys off the convention",
            &summary.ignored,
        ),
        (
            summary.rejected.len(),
            "rejected",
            "bodies refused; the instance keeps its last accepted state",
            &summary.rejected,
        ),
        (
            summary.failed.len(),
            "failed",
            "not processed",
            &summary.failed,
        ),
    ] {
        line(&mut out, count, what, why);
        for (key, reason) in items.iter().take(20) {
            let _ = writeln!(out, "              {key}: {reason}");
        }
        if items.len() > 20 {
            let _ = writeln!(out, "              ... and {} more", items.len() - 20);
        }
    }
    let _ = writeln!(
        out,
        "  DynamoDB: {} writes, {} write units, {} read units",
        summary.capacity.writes, summary.capacity.write_units, summary.capacity.read_units
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::ordering::OrderingKey;
    use tally_ingest::event::Change;

    fn listed(key: &str) -> Listed {
        Listed {
            key: key.into(),
            etag: Some("\"0123456789abcdef0123456789abcdef\"".into()),
            size: 12,
            last_modified_millis: 1_447_668_000_123,
        }
    }

    fn notice_of(record: Value) -> tally_ingest::event::Notice {
        let mut invocation = event::decode(&json!({ "Records": [record] })).unwrap();
        match invocation.messages.remove(0).records.unwrap().remove(0) {
            Record::Notice(notice) => notice,
            Record::Skipped(skipped) => panic!("skipped: {skipped:?}"),
        }
    }

    #[test]
    fn a_backfilled_record_decodes_to_the_object_with_the_smallest_ordering() {
        let notice = notice_of(backfill_record(
            "fleet",
            "eu-west-1",
            &listed("counters/2015-11-16/web 1+ä"),
        ));
        assert_eq!(notice.bucket, "fleet");
        assert_eq!(notice.object_key, "counters/2015-11-16/web 1+ä");
        assert_eq!(notice.version_id, None);
        assert_eq!(
            notice.change,
            Change::Created {
                etag: Some("0123456789abcdef0123456789abcdef".into())
            }
        );
        assert_eq!(notice.ordering, OrderingKey::from_sequencer("0").unwrap());
    }

    #[test]
    fn a_backfill_never_supersedes_a_real_event_and_every_real_event_supersedes_it() {
        let backfilled = notice_of(backfill_record("fleet", "eu-west-1", &listed("k"))).ordering;
        for real in [
            OrderingKey::from_sequencer("1").unwrap(),
            OrderingKey::from_sequencer("0055AED6DCD90281E5").unwrap(),
            // An emulator's event without a sequencer, even from 1970.
            OrderingKey::from_event_time_millis(0).unwrap(),
        ] {
            assert!(!backfilled.supersedes(&real), "{real}");
            assert!(real.supersedes(&backfilled), "{real}");
        }
        // Its own earlier write is the same event again, not newer.
        assert!(!backfilled.supersedes(&backfilled.clone()));
    }

    #[test]
    fn the_summary_names_each_rejected_key_and_its_reason() {
        let summary = Summary {
            objects: 3,
            accepted: 1,
            rejected: vec![(
                "counters/2015-11-16/i-9".into(),
                "token 2 (\"x\") at byte 2 is not an integer".into(),
            )],
            ignored: vec![("counters/2015-11-16/".into(), "folder marker".into())],
            ..Summary::default()
        };
        let text = render("s3://fleet/counters/", "state", &summary);
        assert!(text.contains("      1 accepted"), "{text}");
        assert!(
            text.contains("counters/2015-11-16/i-9: token 2 (\"x\") at byte 2 is not an integer"),
            "{text}"
        );
        assert!(text.contains("      1 rejected"), "{text}");
    }
}
