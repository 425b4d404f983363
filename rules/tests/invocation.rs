//! What the rules function does with what it is invoked with, as its
//! Lambda `main` hands it over: the tick schedule's `{"tick": {}}` runs a
//! tick of the clock and beats the heartbeat, a stream batch is a batch,
//! and anything else is refused by name. Over the whole pipeline on one
//! machine (SQLite tables, an in-memory bucket and topic); no runtime, no
//! server.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tally_core::ports::TotalsStore;
use tally_core::rules::RuleSet;
use tally_core::rules::alert::AlertState;
use tally_rules::invocation::{Handled, TICK_EVENT};
use tally_rules::stage::{RulesStage, StageConfig, Uploads};
use tally_testkit::faults::Crashing;
use tally_testkit::memory::MemoryTopic;
use tally_testkit::world::{EmbeddedPipelineWorld, IngestWorld, PipelineWorld};

const LIMIT: &str = r#"
rules:
  - name: counter1-max
    counter: COUNTER1
    max: 150000
    severity: critical
"#;

struct World {
    pipeline: EmbeddedPipelineWorld,
    rules: RuleSet,
    topic: MemoryTopic,
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl World {
    fn new() -> World {
        World {
            pipeline: EmbeddedPipelineWorld::new(false),
            rules: RuleSet::load(&[("rules.yaml", LIMIT)]).expect("the rules load"),
            topic: MemoryTopic::default(),
            now: Arc::new(Mutex::new(
                DateTime::parse_from_rfc3339("2015-11-16T08:00:00Z")
                    .expect("a valid time")
                    .to_utc(),
            )),
        }
    }

    /// The rules stage over the pipeline's tables, or over `totals` instead.
    fn stage_over<T: TotalsStore>(
        &self,
        totals: T,
    ) -> RulesStage<
        T,
        tally_embedded::alerts_table::SqliteAlertStore,
        MemoryTopic,
        tally_testkit::memory::MemoryBucket,
    > {
        let clock = self.now.clone();
        RulesStage::new(
            totals,
            self.pipeline.ingest.db.alerts(),
            self.topic.clone(),
            self.pipeline.ingest.bucket.clone(),
            StageConfig::new("fleet"),
        )
        .with_clock(Arc::new(move || *clock.lock().expect("the clock")))
    }

    /// Where a tick lists the uploads: the pipeline's bucket and state table.
    fn uploads(&self) -> Uploads<'_, tally_embedded::state_table::SqliteStateStore> {
        Uploads {
            states: &self.pipeline.ingest.store,
            bucket: "fleet",
            prefix: "counters",
        }
    }

    /// An upload ingested and folded into the totals, whose stream batch
    /// never reaches the rules stage.
    async fn upload_and_aggregate(&mut self, body: &str) {
        let ingest = self.pipeline.ingest();
        let event = ingest.upload("counters/2015-11-16/i-1", body).await;
        let (_, report) = ingest.ingestor().handle(&event).await.expect("ingested");
        assert_eq!(report.failed, 0);
        let changes = self.pipeline.read_new().await;
        let (_, failures) = self.pipeline.aggregator.apply(&changes).await;
        assert!(failures.is_empty(), "aggregate failed");
    }
}

fn metrics(handled: &Handled) -> Value {
    let line = handled
        .metrics_line("tally-RulesFunction-x", 0)
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}"))
}

fn tick_event() -> Value {
    serde_json::from_str(TICK_EVENT).expect("the tick event is JSON")
}

#[tokio::test]
async fn the_schedules_tick_decides_on_the_clock_and_beats_the_heartbeat() {
    let mut world = World::new();
    // Uploaded two minutes before the tick.
    world.pipeline.ingest.bucket.set_now(
        DateTime::parse_from_rfc3339("2015-11-16T07:58:00Z")
            .expect("a valid time")
            .to_utc(),
    );
    world.upload_and_aggregate("COUNTER1 200000").await;
    let stage = world.stage_over(world.pipeline.ingest.db.totals());
    let handled = stage
        .invoke(&world.rules, tick_event(), Some(&world.uploads()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let Handled::Tick { report, failure } = &handled else {
        panic!("a tick event handled as a batch: {handled:?}");
    };
    assert!(failure.is_none(), "{failure:?}");
    assert_eq!(report.rules.ticks, 1);
    assert_eq!(report.heartbeat, 1);
    // The alert the lost batch would have sent, sent by the tick.
    let sent = world.topic.sent();
    assert_eq!(sent.len(), 1, "{report:?}");
    assert_eq!(sent[0].state, AlertState::Firing);
    // Its metrics line: the heartbeat and the message, in the tick's metrics.
    let line = metrics(&handled);
    assert_eq!(line["Heartbeat"], 1);
    assert_eq!(
        line["NewestUploadAge"], 120,
        "the dead man's switch's upload age"
    );
    assert_eq!(line["AlertsSent"], 1);
    assert_eq!(line["Function"], "tally-RulesFunction-x");
    let response = handled.into_response().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response["ticks"], 1);
}

#[tokio::test]
async fn a_tick_that_fails_fails_the_invocation_and_its_heartbeat_is_zero() {
    let world = World::new();
    // The tables are out of reach (a permission gone, throttling past the
    // SDK's retries): the first read fails.
    let stage = world.stage_over(Crashing::new(world.pipeline.ingest.db.totals(), 0, false));
    let handled = stage
        .invoke(&world.rules, tick_event(), Some(&world.uploads()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let line = metrics(&handled);
    assert_eq!(line["Heartbeat"], 0, "{line}");
    let error = handled
        .into_response()
        .err()
        .unwrap_or_else(|| panic!("a failed tick succeeded"));
    let message = error.to_string();
    assert!(
        message.starts_with("the tick failed (") && message.contains("injected crash"),
        "{message}"
    );
}

#[tokio::test]
async fn a_stream_batch_is_a_batch_and_has_no_heartbeat() {
    let world = World::new();
    let stage = world.stage_over(world.pipeline.ingest.db.totals());
    let handled = stage
        .invoke(&world.rules, json!({"Records": []}), Some(&world.uploads()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let Handled::Stream { report, .. } = &handled else {
        panic!("a stream batch handled as a tick: {handled:?}");
    };
    assert_eq!(report.ticks, 0);
    let line = metrics(&handled);
    assert!(line.get("Heartbeat").is_none(), "{line}");
    let response = handled.into_response().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response["batchItemFailures"], json!([]));
    assert!(world.topic.sent().is_empty());
}

#[tokio::test]
async fn anything_else_is_refused_naming_what_the_function_takes() {
    let world = World::new();
    let stage = world.stage_over(world.pipeline.ingest.db.totals());
    let cases = [
        (
            json!({"hello": 1}),
            r#"rules invoked with an event it does not take: not a DynamoDB stream batch (missing field `Records`), nor a tick ({"tick": {}}, as the tick schedule sends)"#,
        ),
        (
            json!({"tick": {"at": "now"}}),
            r#"rules invoked with an event it does not take: a tick is exactly {"tick": {}} (unknown field `at`, there are no fields)"#,
        ),
    ];
    for (payload, expected) in cases {
        let error = stage
            .invoke(&world.rules, payload.clone(), Some(&world.uploads()))
            .await
            .err()
            .unwrap_or_else(|| panic!("{payload} was taken"));
        assert_eq!(error.to_string(), expected, "{payload}");
    }
    assert!(world.topic.sent().is_empty());
}
