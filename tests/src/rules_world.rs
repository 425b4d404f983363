//! The whole pipeline against the AWS API server, rules stage included:
//! uploads ingested, the state stream handed to the aggregate stage, the
//! totals stream handed to the rules stage, alerts delivered through SNS to
//! an SQS queue subscribed as on-call's tooling would be, and snapshots
//! written to the bucket. The rules stage's clock is the test's, so
//! `repeat:` and the outbox lease can be exercised without waiting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::streams::DynamoDbEventResponse;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tally_aws::alerts_table::DynamoAlertStore;
use tally_aws::bucket::S3ObjectStore;
use tally_aws::topic::SnsNotifier;
use tally_aws::totals_tables::DynamoTotalsStore;
use tally_core::rules::RuleSet;
use tally_rules::stage::{RulesReport, RulesStage, StageConfig};

use crate::streams::{StreamReader, lambda_event};
use crate::world::AwsPipelineWorld;
use crate::{alert_queue, receive_all, sdk_config, unique};

/// The rules stage as the Lambda wires it, over the test's server.
pub type Stage = RulesStage<DynamoTotalsStore, DynamoAlertStore, SnsNotifier, S3ObjectStore>;

pub struct RulesWorld {
    pub pipeline: AwsPipelineWorld,
    pub alerts_table: String,
    pub topic_arn: String,
    pub queue_url: String,
    pub sqs: aws_sdk_sqs::Client,
    pub totals_stream: StreamReader,
    pub rules: RuleSet,
    pub stage: Stage,
    /// The rules stage's clock.
    pub now: Arc<Mutex<DateTime<Utc>>>,
}

/// The day the tests upload for.
pub const DATE: &str = "2015-11-16";

impl RulesWorld {
    /// A world evaluating `rules` (YAML of one rules file).
    pub async fn new(rules: &str) -> RulesWorld {
        let rules = RuleSet::load(&[("rules.yaml", rules)]).expect("the test's rules load");
        RulesWorld::with_rules(rules).await
    }

    pub async fn with_rules(rules: RuleSet) -> RulesWorld {
        let pipeline = AwsPipelineWorld::new(false).await;
        let sdk = sdk_config().await;
        let alerts_table = unique("alerts");
        tally_aws::alerts_table::create_alerts_table(&pipeline.ingest.dynamodb, &alerts_table)
            .await
            .expect("create the alerts table");
        let (topic_arn, queue_url) = alert_queue(&sdk).await;
        let totals_stream =
            StreamReader::open(&sdk, &pipeline.ingest.dynamodb, &pipeline.totals_table).await;
        let now = Arc::new(Mutex::new(
            DateTime::parse_from_rfc3339("2015-11-16T08:00:00Z")
                .expect("a valid time")
                .to_utc(),
        ));
        let stage = RulesWorld::stage_over(&pipeline, &alerts_table, &topic_arn, &now, &sdk);
        RulesWorld {
            pipeline,
            alerts_table,
            topic_arn,
            queue_url,
            sqs: aws_sdk_sqs::Client::new(&sdk),
            totals_stream,
            rules,
            stage,
            now,
        }
    }

    /// Another rules stage over the same tables, topic and clock: a second
    /// concurrent invocation.
    pub async fn another_stage(&self) -> Stage {
        let sdk = sdk_config().await;
        RulesWorld::stage_over(
            &self.pipeline,
            &self.alerts_table,
            &self.topic_arn,
            &self.now,
            &sdk,
        )
    }

    fn stage_over(
        pipeline: &AwsPipelineWorld,
        alerts_table: &str,
        topic_arn: &str,
        now: &Arc<Mutex<DateTime<Utc>>>,
        sdk: &aws_config::SdkConfig,
    ) -> Stage {
        let dynamodb = pipeline.ingest.dynamodb.clone();
        let mut config = StageConfig::new(&pipeline.ingest.bucket);
        config.lease = Duration::from_secs(30);
        let clock = now.clone();
        RulesStage::new(
            DynamoTotalsStore::new(
                dynamodb.clone(),
                &pipeline.partials_table,
                &pipeline.totals_table,
            ),
            DynamoAlertStore::new(dynamodb, alerts_table),
            SnsNotifier::new(aws_sdk_sns::Client::new(sdk), topic_arn),
            S3ObjectStore::new(pipeline.ingest.s3.clone()),
            config,
        )
        .with_clock(Arc::new(move || *clock.lock().expect("the clock")))
    }

    /// Moves the rules stage's clock on.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().expect("the clock");
        *now += chrono::Duration::from_std(by).expect("a short duration");
    }

    /// Uploads `body` as `instance`'s object for [`DATE`] and ingests it.
    pub async fn upload(&self, instance: &str, body: &str) {
        let ingest = &self.pipeline.ingest;
        let uploaded = ingest
            .upload(&format!("counters/{DATE}/{instance}"), body)
            .await;
        let (_, report) = ingest
            .ingestor
            .handle(&ingest.created_event(&uploaded))
            .await
            .expect("ingested");
        assert_eq!(report.failed, 0, "{instance}: not ingested");
    }

    /// Moves the state stream's new records through the aggregate stage and
    /// returns the totals stream's new records, as Lambda would batch them.
    pub async fn aggregate(&mut self) -> Vec<Value> {
        let records = self.pipeline.stream.read_new().await;
        if !records.is_empty() {
            let (response, _) = self
                .pipeline
                .aggregator
                .handle(&lambda_event(&records))
                .await;
            assert!(response.batch_item_failures.is_empty(), "aggregate failed");
        }
        self.totals_stream.read_new().await
    }

    /// Hands one batch of the totals stream to the rules stage.
    pub async fn evaluate(&self, records: &[Value]) -> (DynamoDbEventResponse, RulesReport) {
        self.stage.handle(&self.rules, &lambda_event(records)).await
    }

    /// Invokes the rules stage with the tick schedule's event, as the
    /// function's runtime hands it over, listing the world's bucket and
    /// reading its state table for stale rules; the tick must succeed.
    pub async fn tick(&self) -> RulesReport {
        let uploads = tally_rules::stage::Uploads {
            states: &self.pipeline.ingest.store,
            bucket: &self.pipeline.ingest.bucket,
            prefix: "counters",
        };
        let event = serde_json::from_str(tally_rules::invocation::TICK_EVENT)
            .expect("the tick event is JSON");
        match self
            .stage
            .invoke(&self.rules, event, Some(&uploads))
            .await
            .expect("a tick is an invocation the function takes")
        {
            tally_rules::invocation::Handled::Tick { report, failure } => {
                assert!(failure.is_none(), "the tick failed: {failure:?}");
                report.rules
            }
            other => panic!("a tick handled as a batch: {other:?}"),
        }
    }

    /// Aggregates what was ingested and evaluates it, as one batch; the
    /// batch must succeed.
    pub async fn pump(&mut self) -> RulesReport {
        let records = self.aggregate().await;
        let (response, report) = self.evaluate(&records).await;
        assert!(
            response.batch_item_failures.is_empty(),
            "rules batch failed: {report:?}"
        );
        report
    }

    /// The alert messages delivered to the queue: at least `expected`, or,
    /// with 0, whatever arrives within a few seconds.
    pub async fn messages(&self, expected: usize) -> Vec<Value> {
        let wait = if expected == 0 {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(10)
        };
        receive_all(&self.sqs, &self.queue_url, expected, wait).await
    }

    /// An object of the bucket as text, `None` when it does not exist.
    pub async fn object(&self, key: &str) -> Option<String> {
        let ingest = &self.pipeline.ingest;
        let output = ingest
            .s3
            .get_object()
            .bucket(&ingest.bucket)
            .key(key)
            .send()
            .await
            .ok()?;
        let bytes = output
            .body
            .collect()
            .await
            .expect("read the object")
            .into_bytes();
        Some(String::from_utf8(bytes.to_vec()).expect("a UTF-8 object"))
    }
}

/// An SNS envelope's `Message`, parsed as the alert's JSON body.
pub fn body(envelope: &Value) -> Value {
    let message = envelope["Message"].as_str().expect("a Message");
    serde_json::from_str(message).unwrap_or_else(|e| panic!("not JSON ({e}): {message}"))
}
