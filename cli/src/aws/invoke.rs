//! `tally invoke`: run one function's handler once on an event file, as
//! Lambda would, and print the handler's response.
//!
//! For trying a function against real (or emulated) resources without
//! deploying it, and for replaying an event from a dead-letter queue or a
//! log. The stage is built by the same code as the Lambda's `main`
//! (`settings::Settings::from_env` and `wiring`), so it reads the same
//! environment variables and behaves the same; only the event comes from a
//! file instead of an event source. The event is decoded as the Lambda
//! runtime decodes it: ingest takes any JSON (SNS, S3 or SQS events),
//! aggregate a DynamoDB stream event, rules a DynamoDB stream event or the
//! tick schedule's `{"tick": {}}` (`--tick` sends it without a file).
//!
//! The response JSON (what Lambda would get back) goes to stdout; a line
//! saying what the handler did goes to stderr.
//!
//! With `--bootstrap PATH` the handler does not run in this process:
//! the built Lambda binary runs, as Lambda runs it, behind a local Runtime
//! API, and its init time, duration and peak memory are reported
//! ([`super::bootstrap`]). That measures the artefact that is deployed.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::{Args, ValueEnum};
use serde_json::Value;
use tally_rules::invocation::{Handled, TICK_EVENT};

use super::Aws;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Function {
    /// S3 upload notifications (SNS, S3 or SQS events) to the state table.
    Ingest,
    /// The state table's stream to the totals.
    Aggregate,
    /// The totals table's stream to alerts and the snapshot.
    Rules,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  tally invoke ingest --event tests/fixtures/aws-events/s3-put.json
  tally invoke aggregate --event batch.json
  tally invoke rules --tick
  aws sqs receive-message ... | jq '...' | tally invoke ingest --event -
  tally invoke ingest --event e.json --bootstrap target/lambda/x86_64/ingest/bootstrap

Each function reads its own environment, as the Lambda does:
  ingest     TALLY_STATE_TABLE (required), TALLY_COUNTERS_PREFIX, TALLY_MAX_BODY_BYTES,
             TALLY_BUCKET, TALLY_INGEST_CONCURRENCY
  aggregate  TALLY_PARTIALS_TABLE, TALLY_TOTALS_TABLE
  rules      TALLY_PARTIALS_TABLE, TALLY_TOTALS_TABLE, TALLY_ALERTS_TABLE,
             TALLY_ALERT_TOPIC_ARN, TALLY_SNAPSHOT_BUCKET (required), TALLY_SNAPSHOT_PREFIX,
             TALLY_RULES_BUCKET, TALLY_RULES_PREFIX, TALLY_RULES_REFRESH_SECONDS, TALLY_ALERT_DAYS
`eval \"$(tally dev up)\"` sets them for a dev environment. AWS_REGION, credentials and
AWS_ENDPOINT_URL as usual.

Exit codes: 0 the handler succeeded; 1 the invocation failed, or the handler reported
batch item failures that Lambda would retry (the response is still printed); 2 the
command line was wrong.")]
pub struct InvokeArgs {
    /// The function whose handler runs.
    #[arg(value_enum)]
    function: Function,
    /// The event as Lambda would deliver it: a JSON file, or - for stdin.
    #[arg(long, value_name = "FILE", required_unless_present = "tick")]
    event: Option<PathBuf>,
    /// For rules: a tick of the clock, the event the tick schedule sends
    /// ({"tick": {}}), instead of an event file.
    #[arg(long, conflicts_with = "event")]
    tick: bool,
    /// For rules: the rules in this folder's *.yaml instead of the bundled
    /// ones or TALLY_RULES_BUCKET.
    #[arg(long, value_name = "DIR")]
    rules: Option<PathBuf>,
    /// Run this built Lambda binary (an unzipped `bootstrap`) instead of the
    /// handler in this process, as Lambda would, for one invocation; report
    /// its init time, duration and peak memory on stderr.
    #[arg(long, value_name = "PATH")]
    bootstrap: Option<PathBuf>,
    /// With --bootstrap: the memory size the function is told it has, in MB.
    #[arg(long, default_value_t = 128, requires = "bootstrap", value_parser = clap::value_parser!(u32).range(128..=10_240))]
    memory_mb: u32,
    /// With --bootstrap: the invocation's timeout in seconds (default: the
    /// deployment's, 60 for ingest, 120 for aggregate, 150 for rules).
    #[arg(long, requires = "bootstrap", value_parser = clap::value_parser!(u64).range(1..=900))]
    timeout: Option<u64>,
    /// With --bootstrap: the function's name (default tally-<function>).
    #[arg(long, requires = "bootstrap")]
    function_name: Option<String>,
}

pub async fn run(args: InvokeArgs) -> anyhow::Result<()> {
    let (text, shown) = event_text(&args)?;
    let payload: Value = serde_json::from_str(&text)
        .with_context(|| format!("{shown} is not JSON; pass the event as Lambda delivers it"))?;
    if args.rules.is_some() && args.function != Function::Rules {
        return Err(anyhow!(
            "--rules applies to `tally invoke rules` only; leave it out"
        ));
    }
    if let Some(path) = &args.bootstrap {
        return run_bootstrap(&args, path, text, payload, &shown).await;
    }
    let (response, failed_items) = match args.function {
        Function::Ingest => {
            let settings =
                tally_ingest::settings::Settings::from_env().map_err(|e| anyhow!("{e}"))?;
            let aws = Aws::load().await?;
            let ingestor = tally_ingest::wiring::ingestor(&aws.sdk, settings);
            match ingestor.handle(&payload).await {
                Ok((response, report)) => {
                    eprintln!("ingest: {}", serde_json::to_string(&report)?);
                    let response = serde_json::to_value(&response)?;
                    let failed = count_failures(&response);
                    (response, failed)
                }
                Err(failed) => {
                    return Err(anyhow!(
                        "the invocation failed (Lambda would retry it): {failed}"
                    ));
                }
            }
        }
        Function::Aggregate => {
            let settings =
                tally_aggregate::settings::Settings::from_env().map_err(|e| anyhow!("{e}"))?;
            let event = stream_event(payload, &shown)?;
            let aws = Aws::load().await?;
            let aggregator = tally_aggregate::wiring::aggregator(&aws.sdk, &settings);
            let (response, report) = aggregator.handle(&event).await;
            eprintln!("aggregate: {}", serde_json::to_string(&report)?);
            let response = serde_json::to_value(&response)?;
            let failed = count_failures(&response);
            (response, failed)
        }
        Function::Rules => {
            // Checked before the environment, so a wrong file is named as such.
            tally_rules::invocation::decode_invocation(payload.clone())
                .with_context(|| format!("{shown} is not an event the rules function takes"))?;
            let settings =
                tally_rules::settings::Settings::from_env().map_err(|e| anyhow!("{e}"))?;
            let aws = Aws::load().await?;
            let stage = tally_rules::wiring::stage(&aws.sdk, &settings);
            let rules = match &args.rules {
                Some(dir) => std::sync::Arc::new(super::dev::load_rules_dir(dir)?),
                None => {
                    tally_rules::wiring::rule_source(&aws.sdk, &settings)
                        .current()
                        .await
                }
            };
            let states = tally_rules::wiring::state_store(&aws.sdk, &settings);
            let uploads = states
                .as_ref()
                .map(|states| tally_rules::wiring::uploads(&settings, states));
            let handled = stage
                .invoke(&rules, payload, uploads.as_ref())
                .await
                .with_context(|| format!("{shown} is not an event the rules function takes"))?;
            match &handled {
                Handled::Stream { report, .. } => {
                    eprintln!("rules: {}", serde_json::to_string(report)?)
                }
                Handled::Tick { report, .. } => {
                    eprintln!("rules tick: {}", serde_json::to_string(report)?)
                }
            }
            let response = handled
                .into_response()
                .map_err(|e| anyhow!("the invocation failed (the schedule would retry it): {e}"))?;
            let failed = count_failures(&response);
            (response, failed)
        }
    };
    println!("{}", serde_json::to_string_pretty(&response)?);
    if failed_items > 0 {
        return Err(anyhow!(
            "the handler reported {}; Lambda would deliver them again (the response above names them, and the log with --verbose says why)",
            super::count(failed_items as u64, "batch item failure")
        ));
    }
    Ok(())
}

/// `--bootstrap`: the built binary behind a local Runtime API.
async fn run_bootstrap(
    args: &InvokeArgs,
    path: &Path,
    text: String,
    payload: Value,
    shown: &str,
) -> anyhow::Result<()> {
    if args.rules.is_some() {
        return Err(anyhow!(
            "--rules applies to the handler in this process; a bootstrap evaluates its bundled rules or TALLY_RULES_BUCKET's, so leave --rules out"
        ));
    }
    // The same check the function's runtime makes, made here so a wrong
    // file is named as such rather than as the function's error.
    match args.function {
        Function::Ingest => {}
        Function::Aggregate => {
            stream_event(payload, shown)?;
        }
        Function::Rules => {
            tally_rules::invocation::decode_invocation(payload)
                .with_context(|| format!("{shown} is not an event the rules function takes"))?;
        }
    }
    let name = match args.function {
        Function::Ingest => "ingest",
        Function::Aggregate => "aggregate",
        Function::Rules => "rules",
    };
    let timeout = args.timeout.unwrap_or(match args.function {
        Function::Ingest => 60,
        Function::Aggregate => 120,
        Function::Rules => 150,
    });
    let region = std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|_| "us-east-1".to_owned());
    let options = super::bootstrap::Options {
        path: path.to_path_buf(),
        function_name: args
            .function_name
            .clone()
            .unwrap_or_else(|| format!("tally-{name}")),
        memory_mb: args.memory_mb,
        timeout: std::time::Duration::from_secs(timeout),
        region,
    };
    let measured = super::bootstrap::invoke(&options, text.into_bytes().into()).await?;
    let peak = match measured.peak_kb {
        Some(kb) => format!("peak memory {:.1} MB (VmHWM {kb} kB)", kb as f64 / 1024.0),
        None => "peak memory unknown (no /proc on this system)".to_owned(),
    };
    eprintln!(
        "{name} bootstrap {}: init {:.1} ms, duration {:.1} ms, {peak}, memory size {} MB",
        path.display(),
        measured.init.as_secs_f64() * 1e3,
        measured.duration.as_secs_f64() * 1e3,
        args.memory_mb
    );
    match measured.ending {
        super::bootstrap::Ending::Response(body) => {
            let failed = match serde_json::from_slice::<Value>(&body) {
                Ok(response) => {
                    println!("{}", serde_json::to_string_pretty(&response)?);
                    count_failures(&response)
                }
                Err(_) => {
                    println!("{}", String::from_utf8_lossy(&body));
                    0
                }
            };
            if failed > 0 {
                return Err(anyhow!(
                    "the function reported {}; Lambda would deliver them again (the response above names them, its log above says why)",
                    super::count(failed as u64, "batch item failure")
                ));
            }
            Ok(())
        }
        super::bootstrap::Ending::Error { kind, body } => Err(anyhow!(
            "the invocation failed (Lambda would retry it){}: {}; its log above says why",
            kind.map(|k| format!(" with {k}")).unwrap_or_default(),
            String::from_utf8_lossy(&body)
        )),
    }
}

/// The event's text, and how to name it in messages: the tick's, or the
/// file's (`-`: stdin).
fn event_text(args: &InvokeArgs) -> anyhow::Result<(String, String)> {
    if args.tick {
        if args.function != Function::Rules {
            return Err(anyhow!(
                "--tick applies to `tally invoke rules` only (the rules stage's clock); pass --event"
            ));
        }
        return Ok((TICK_EVENT.to_owned(), "the tick event".to_owned()));
    }
    let path = args
        .event
        .as_deref()
        .ok_or_else(|| anyhow!("pass --event FILE (or --tick for rules)"))?;
    let shown = if path.as_os_str() == "-" {
        "the event on stdin".to_owned()
    } else {
        path.display().to_string()
    };
    Ok((read_event(path)?, shown))
}

fn read_event(path: &Path) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the event from stdin")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the event file {}; pass a JSON file (or - for stdin)",
            path.display()
        )
    })
}

/// A DynamoDB stream event, decoded as the Lambda runtime decodes it.
fn stream_event(
    payload: Value,
    shown: &str,
) -> anyhow::Result<aws_lambda_events::event::dynamodb::Event> {
    serde_json::from_value(payload).with_context(|| {
        format!(
            "{shown} is not a DynamoDB stream event as Lambda delivers it (`Records` of stream records); `tally dev pump` shows how the streams' records look"
        )
    })
}

/// How many items a response asks Lambda to deliver again.
fn count_failures(response: &Value) -> usize {
    response
        .get("batchItemFailures")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_counts_its_batch_item_failures() {
        assert_eq!(count_failures(&serde_json::json!({"written": 1})), 0);
        assert_eq!(
            count_failures(&serde_json::json!({"batchItemFailures": []})),
            0
        );
        assert_eq!(
            count_failures(
                &serde_json::json!({"batchItemFailures": [{"itemIdentifier": "1"}, {"itemIdentifier": "2"}]})
            ),
            2
        );
    }

    #[test]
    fn an_event_that_is_not_a_stream_event_says_what_is_expected() {
        let error = stream_event(serde_json::json!({"Records": 5}), "e.json").unwrap_err();
        assert!(
            format!("{error:#}")
                .starts_with("e.json is not a DynamoDB stream event as Lambda delivers it"),
            "{error:#}"
        );
    }
}
