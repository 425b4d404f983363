//! `tally dev up`: what the deployment template creates on AWS, made on an
//! AWS-compatible endpoint such as moto's server, idempotently: the
//! counters bucket, the upload topic with the bucket's
//! `ObjectCreated`/`ObjectRemoved` notifications for `counters/` sent to it,
//! the state, partials, totals and alert tables (streams on state and
//! totals), and the alert topic.
//!
//! Two things stand in for what an emulator cannot do: a queue subscribed
//! to the upload topic takes the place of ingest's own SNS subscription
//! (nothing can invoke a function on a laptop, so `pump` polls the queue;
//! ingest accepts SQS messages carrying SNS envelopes as one of its
//! documented invocations), and a queue subscribed to the alert topic lets
//! people read the alerts. It prints the variables each function reads as
//! `export` lines (so `eval "$(tally dev up)"` sets them for `tally
//! invoke`, `backfill` and `reconcile`) and saves what it made to the dev
//! file that `pump` reads. Running it again changes nothing and keeps
//! `pump`'s saved positions in the streams that still exist.
//!
//! It refuses to run without `AWS_ENDPOINT_URL`: it is for emulators, and
//! creating these resources in a real account is the deployment's job.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;
use serde_json::json;
use tally_aws::queue::Queue;
use tally_aws::streams::Stream;

use super::{DEFAULT_CONFIG, DevFile, Tables, UPLOAD_VISIBILITY_SECONDS};
use crate::aws::Aws;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Names every resource: NAME-counters, NAME-state, NAME-alerts, ...
    #[arg(long, default_value = "tally-dev", value_parser = parse_name)]
    name: String,
    /// Where to save what was created.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
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

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
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
            text.contains(
                "export TALLY_STATE_TABLE='d-state'  # read by ingest, aggregate, rules\n"
            ),
            "{text}"
        );
        let odd = BTreeMap::from([("TALLY_BUCKET".to_owned(), "it's".to_owned())]);
        assert!(exports(&odd).starts_with(r"export TALLY_BUCKET='it'\''s'"));
    }
}
