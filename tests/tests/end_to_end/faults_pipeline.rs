//! The whole pipeline under AWS's faults equals the same pipeline without them.
//!
//! A random fleet (instances, counters with names that look like DynamoDB
//! expression syntax, overwrites, identical re-uploads, deletes, counters
//! that disappear from a body, negative values) uploads in rounds. Each
//! round's S3 events are delivered to ingest out of order, some twice; the
//! state stream goes to aggregate and the totals stream to rules in batches
//! of random size, as Lambda would: a batch reporting failed records is
//! delivered again from the first of them, a failed ingest invocation is
//! invoked again, and some batches arrive twice anyway.
//!
//! The same fleet runs twice over its own bucket, tables and topics: once
//! with every AWS call of the three stages passing through an HTTP client
//! that fails 20% of them the way AWS does ([`tally_tests::http_faults`]:
//! throttling, 500/503, connection resets, responses lost after the write
//! landed, transaction conflicts, unprocessed keys), and once with none. After
//! every round the totals, the snapshot the downstream job reads and the batch job's
//! recomputation from the bucket must agree; at the end, the alert
//! transitions delivered to on-call must be the same, each once.
//!
//! What "each once" means: SNS accepts a Publish whose response is then lost
//! exactly as it accepts one that succeeded, and the SDK (or the rules stage
//! recovering its outbox) sends it again; no client can tell the two apart.
//! Every message carries its alert and transition number for that reason,
//! and a repeat delivery is the same message, byte for byte in its identity
//! and content. The test checks that the distinct transitions are exactly
//! the fault-free run's, that no transition is decided twice with different
//! content, and reports how many repeat deliveries the lost responses caused.
//!
//! The seed is random per run, printed first and in every failure message;
//! `TALLY_FAULT_SEED=<seed>` replays one, `TALLY_FAULT_FLEETS=<n>` runs more
//! fleets, `TALLY_FAULT_RATE=<0..1>` changes the rate.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use serde_json::Value;
use tally_aws::alerts_table::DynamoAlertStore;
use tally_aws::bucket::S3ObjectStore;
use tally_aws::state_table::DynamoStateStore;
use tally_aws::topic::SnsNotifier;
use tally_aws::totals_tables::DynamoTotalsStore;
use tally_ingest::{IngestConfig, Ingestor};
use tally_rules::stage::{RulesStage, StageConfig};
use tally_tests::http_faults::{Fault, FaultyHttpClient, SplitMix64};
use tally_tests::rules_world::{DATE, RulesWorld, Stage};
use tally_tests::streams::lambda_event;
use tally_tests::{receive_all, sdk_config};

/// The rules the fleet is checked against: a limit that fires and
/// resolves as COUNTER1 crosses it, a limit on every counter, and an
/// expression over two counters.
const RULES: &str = r#"
rules:
  - name: counter1-max
    counter: COUNTER1
    max: 150000
    severity: critical
  - name: negative
    match: "*"
    min: 0
    severity: info
  - name: error-share
    expr: 'counter("requests.api", 0) > 0 && counter("errors.api", 0) * 10 > counter("requests.api", 0)'
    severity: warning
"#;

const COUNTERS: &[&str] = &[
    "COUNTER1",
    "COUNTER2",
    "requests.api",
    "errors.api",
    "#a",
    ":v",
    ")OR(attribute_exists(x))",
    "Counter",
    "ünïcode/π",
];

const ROUNDS: usize = 6;

/// A fleet takes about a minute on two cores; ten is a stuck stage.
const FLEET_DEADLINE: Duration = Duration::from_secs(600);

/// The fleet's script and the delivery's choices, from the seed.
struct Random(SplitMix64);

impl Random {
    fn new(seed: u64) -> Random {
        Random(SplitMix64(seed))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// What an instance does in a round.
#[derive(Debug, Clone)]
enum Step {
    Upload(String),
    Delete,
}

/// The fleet's whole script: per round, per instance, what it does.
fn fleet(seed: u64) -> Vec<Vec<(String, Step)>> {
    let mut random = Random::new(seed);
    let instances: Vec<String> = (0..5 + random.below(6))
        .map(|i| {
            if i == 0 {
                "i-0 with space".to_owned()
            } else {
                format!("i-{i}")
            }
        })
        .collect();
    let mut bodies: BTreeMap<String, String> = BTreeMap::new();
    (0..ROUNDS)
        .map(|round| {
            // Rounds alternate between quiet and busy values, so limits and
            // the expression fire in some rounds and resolve in others.
            let busy = round % 2 == 1;
            let mut steps = Vec::new();
            for instance in &instances {
                let roll = random.below(100);
                if roll < 55 || !bodies.contains_key(instance) {
                    let mut body = String::new();
                    for name in COUNTERS {
                        if random.chance(70) {
                            let ceiling = match (*name, busy) {
                                ("COUNTER1", true) => 80_000,
                                ("COUNTER1", false) => 20_000,
                                ("errors.api", true) => 5_000,
                                ("errors.api", false) => 500,
                                ("requests.api", _) => 20_000,
                                _ => 60_000,
                            };
                            let value = if random.chance(if busy { 20 } else { 2 }) {
                                -(random.below(100_000) as i64)
                            } else {
                                random.below(ceiling) as i64
                            };
                            body.push_str(&format!("{name} {value}\n"));
                        }
                    }
                    bodies.insert(instance.clone(), body.clone());
                    steps.push((instance.clone(), Step::Upload(body)));
                } else if roll < 70 {
                    let body = bodies[instance].clone();
                    steps.push((instance.clone(), Step::Upload(body)));
                } else if roll < 80 {
                    bodies.remove(instance);
                    steps.push((instance.clone(), Step::Delete));
                }
            }
            steps
        })
        .collect()
}

/// The three stages over one world's resources, their AWS calls going
/// through `client`.
struct Stages {
    ingest: Ingestor<DynamoStateStore, S3ObjectStore>,
    aggregate: tally_aggregate::Aggregator<DynamoTotalsStore>,
    rules: Stage,
    client: FaultyHttpClient,
}

/// The production SDK configuration over `client`, with retries that wait
/// milliseconds instead of seconds so the test stays quick; attempts and
/// the retry quota are production's.
async fn sdk_through(client: &FaultyHttpClient) -> SdkConfig {
    let base = sdk_config().await;
    let attempts = base
        .retry_config()
        .map_or(tally_aws::config::DEFAULT_MAX_ATTEMPTS, |r| {
            r.max_attempts()
        });
    let mut builder = base.into_builder();
    builder.set_http_client(Some(SharedHttpClient::new(client.clone())));
    builder.set_retry_config(Some(
        RetryConfig::standard()
            .with_max_attempts(attempts)
            .with_initial_backoff(Duration::from_millis(20))
            .with_max_backoff(Duration::from_millis(200)),
    ));
    builder.build()
}

async fn stages(world: &RulesWorld, client: FaultyHttpClient) -> Stages {
    let sdk = sdk_through(&client).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let s3 = tally_aws::config::s3(&sdk);
    let pipeline = &world.pipeline;
    let ingest = Ingestor::new(
        DynamoStateStore::new(dynamodb.clone(), &pipeline.ingest.table),
        S3ObjectStore::new(s3.clone()),
        IngestConfig::default(),
    );
    let aggregate = tally_aggregate::Aggregator::new(DynamoTotalsStore::new(
        dynamodb.clone(),
        &pipeline.partials_table,
        &pipeline.totals_table,
    ));
    let mut config = StageConfig::new(&pipeline.ingest.bucket);
    // Short, so a retried batch that finds a failed invocation's outbox
    // takes it over within seconds; the clock runs in real time.
    config.lease = Duration::from_secs(2);
    let started = Instant::now();
    let base = *world.now.lock().expect("the clock");
    let rules = RulesStage::new(
        DynamoTotalsStore::new(
            dynamodb.clone(),
            &pipeline.partials_table,
            &pipeline.totals_table,
        ),
        DynamoAlertStore::new(dynamodb, &world.alerts_table),
        SnsNotifier::new(aws_sdk_sns::Client::new(&sdk), &world.topic_arn),
        S3ObjectStore::new(s3),
        config,
    )
    .with_clock(Arc::new(move || {
        base + chrono::Duration::from_std(started.elapsed()).unwrap_or_default()
    }));
    Stages {
        ingest,
        aggregate,
        rules,
        client,
    }
}

/// Invocations of one Lambda before the test gives up on it: far more than
/// 20% faults need, few enough that a stage failing every time is reported.
const MAX_INVOCATIONS: usize = 40;

/// Delivers stream records in batches as Lambda's event source mapping
/// does with ReportBatchItemFailures: a batch is retried from its first
/// failed record; some successful batches are delivered again anyway.
async fn deliver<F, Fut>(
    records: &[Value],
    random: &mut Random,
    what: &str,
    seed: u64,
    mut handle: F,
) -> (usize, usize)
where
    F: FnMut(Vec<Value>) -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let mut position = 0;
    let mut invocations = 0;
    let mut failures = 0;
    while position < records.len() {
        let size = 1 + random.below(25) as usize;
        let batch: Vec<Value> = records[position..(position + size).min(records.len())].to_vec();
        invocations += 1;
        assert!(
            invocations <= MAX_INVOCATIONS + records.len(),
            "seed {seed}: {what} failed {invocations} times in a row; last batch starts at record {position}"
        );
        let failed = handle(batch.clone()).await;
        match failed.first() {
            None => {
                if random.chance(10) {
                    invocations += 1;
                    let again = handle(batch.clone()).await;
                    if !again.is_empty() {
                        failures += 1;
                        continue; // delivered again from the same position
                    }
                }
                position += batch.len();
            }
            Some(_) => {
                failures += 1;
                let first_failed = batch
                    .iter()
                    .position(|record| {
                        record["dynamodb"]["SequenceNumber"]
                            .as_str()
                            .is_some_and(|sequence| failed.iter().any(|f| f == sequence))
                    })
                    .unwrap_or_else(|| {
                        panic!("seed {seed}: {what} reported failures {failed:?} that name no record of the batch")
                    });
                position += first_failed;
            }
        }
    }
    (invocations, failures)
}

/// The sequence numbers a stream handler's response names as failed.
fn failed_records(response: DynamoDbEventResponse) -> Vec<String> {
    response
        .batch_item_failures
        .into_iter()
        .filter_map(|failure| failure.item_identifier)
        .collect()
}

/// One world: its resources, its stages, the stream positions and what it sent.
struct Run {
    world: RulesWorld,
    stages: Stages,
    messages: Vec<Value>,
}

impl Run {
    async fn new(rate: f64, fault_seed: u64) -> Run {
        let world = RulesWorld::new(RULES).await;
        let stages = stages(&world, FaultyHttpClient::new(rate, fault_seed)).await;
        Run {
            world,
            stages,
            messages: Vec::new(),
        }
    }

    /// Uploads (or deletes) the round's objects, then delivers their events
    /// to ingest out of order, some twice, retrying failed invocations.
    /// Returns a line saying how many invocations each stage took.
    async fn round(&mut self, steps: &[(String, Step)], random: &mut Random, seed: u64) -> String {
        let started = Instant::now();
        let ingest = &self.world.pipeline.ingest;
        let mut events = Vec::new();
        for (instance, step) in steps {
            let key = format!("counters/{DATE}/{instance}");
            let event = match step {
                Step::Upload(body) => {
                    ingest.created_event(&ingest.upload(&key, body.clone()).await)
                }
                Step::Delete => ingest.removed_event(&ingest.delete(&key).await),
            };
            if random.chance(15) {
                events.push(event.clone());
            }
            events.push(event);
        }
        random.shuffle(&mut events);
        let (mut ingest_invocations, mut ingest_failures) = (0, 0);
        for event in &events {
            let sns = tally_tests::sns_event(event);
            let mut invocations = 0;
            loop {
                invocations += 1;
                ingest_invocations += 1;
                match self.stages.ingest.handle(&sns).await {
                    Ok((_, report)) if report.failed == 0 => break,
                    outcome => {
                        ingest_failures += 1;
                        assert!(
                            invocations < MAX_INVOCATIONS,
                            "seed {seed}: ingest failed {invocations} times: {outcome:?}"
                        )
                    }
                }
            }
        }

        let state_records = self.world.pipeline.stream.read_new().await;
        let records = &state_records;
        let aggregate = &self.stages.aggregate;
        let (aggregate_invocations, aggregate_failures) =
            deliver(records, random, "aggregate", seed, |batch| async move {
                failed_records(aggregate.handle(&lambda_event(&batch)).await.0)
            })
            .await;

        let totals_records = self.world.totals_stream.read_new().await;
        let rules = &self.stages.rules;
        let rule_set = &self.world.rules;
        let (rules_invocations, rules_failures) =
            deliver(&totals_records, random, "rules", seed, |batch| async move {
                failed_records(rules.handle(rule_set, &lambda_event(&batch)).await.0)
            })
            .await;
        format!(
            "ingest {ingest_invocations} invocations ({ingest_failures} failed) for {} events; \
             aggregate {aggregate_invocations} ({aggregate_failures} failed) for {} records; \
             rules {rules_invocations} ({rules_failures} failed) for {} records; {:.1} s",
            events.len(),
            state_records.len(),
            totals_records.len(),
            started.elapsed().as_secs_f64()
        )
    }

    async fn drain_alerts(&mut self) {
        let delivered = receive_all(
            &self.world.sqs,
            &self.world.queue_url,
            0,
            Duration::from_secs(2),
        )
        .await;
        self.messages.extend(delivered);
    }
}

/// An alert message's identity and content, without its clock readings.
fn transition(envelope: &Value) -> (String, u64, Value) {
    let message = envelope["Message"].as_str().unwrap_or_default();
    let mut body: Value = serde_json::from_str(message)
        .unwrap_or_else(|e| panic!("an alert that is not JSON ({e}): {message}"));
    let alert = body["alert"].as_str().unwrap_or_default().to_owned();
    let number = body["transition"].as_u64().unwrap_or_default();
    if let Some(fields) = body.as_object_mut() {
        for clock_reading in ["since", "sent_at", "summary"] {
            fields.remove(clock_reading);
        }
    }
    (alert, number, body)
}

/// Distinct transitions, each with its content; fails if one transition
/// was delivered with two different contents.
fn distinct(messages: &[Value], seed: u64, what: &str) -> BTreeMap<(String, u64), Value> {
    let mut seen: BTreeMap<(String, u64), Value> = BTreeMap::new();
    for envelope in messages {
        let (alert, number, body) = transition(envelope);
        if let Some(earlier) = seen.get(&(alert.clone(), number)) {
            assert_eq!(
                earlier, &body,
                "seed {seed}: {what}: transition {number} of {alert} was sent twice with different content"
            );
        }
        seen.insert((alert, number), body);
    }
    seen
}

async fn one_fleet(seed: u64, rate: f64) {
    eprintln!(
        "fault-injection fleet: seed {seed}, {:.0}% faults (TALLY_FAULT_SEED={seed} replays it)",
        rate * 100.0
    );
    let script = fleet(seed);
    let mut clean = Run::new(0.0, seed).await;
    let mut faulty = Run::new(rate, seed ^ 0x5EED).await;
    let mut clean_random = Random::new(seed.rotate_left(17));
    let mut faulty_random = Random::new(seed.rotate_left(17));
    for (round, steps) in script.iter().enumerate() {
        let clean_line = clean.round(steps, &mut clean_random, seed).await;
        let faulty_line = faulty.round(steps, &mut faulty_random, seed).await;
        eprintln!(
            "round {round}, fault-free: {clean_line}\nround {round}, faults:     {faulty_line}"
        );

        let expected = clean.world.pipeline.batch_totals(DATE).await;
        let clean_totals = clean.world.pipeline.totals(DATE).await;
        let faulty_totals = faulty.world.pipeline.totals(DATE).await;
        assert_eq!(
            clean_totals, expected,
            "seed {seed}, round {round}: the fault-free totals differ from the batch recomputation"
        );
        assert_eq!(
            faulty_totals,
            expected,
            "seed {seed}, round {round}: the totals under faults differ from the batch recomputation\n{}",
            faulty.stages.client.summary()
        );
        let snapshot = format!("totals/{DATE}");
        let clean_snapshot = clean.world.object(&snapshot).await;
        let expected_text: String = expected
            .iter()
            .map(|(name, value)| format!("{name} {value}\n"))
            .collect();
        if !expected.is_empty() {
            assert_eq!(
                clean_snapshot.as_deref(),
                Some(expected_text.as_str()),
                "seed {seed}, round {round}: the fault-free snapshot"
            );
        }
        assert_eq!(
            faulty.world.object(&snapshot).await,
            clean_snapshot,
            "seed {seed}, round {round}: the snapshot under faults differs from the fault-free one\n{}",
            faulty.stages.client.summary()
        );
        let json = format!("totals/{DATE}.json");
        let counters = |text: Option<String>| {
            text.map(|t| {
                serde_json::from_str::<Value>(&t).expect("a JSON snapshot")["counters"].clone()
            })
        };
        assert_eq!(
            counters(faulty.world.object(&json).await),
            counters(clean.world.object(&json).await),
            "seed {seed}, round {round}: the JSON snapshot's counters under faults"
        );
        clean.drain_alerts().await;
        faulty.drain_alerts().await;
    }
    clean.drain_alerts().await;
    faulty.drain_alerts().await;

    let clean_transitions = distinct(&clean.messages, seed, "fault-free");
    let faulty_transitions = distinct(&faulty.messages, seed, "under faults");
    assert_eq!(
        clean.messages.len(),
        clean_transitions.len(),
        "seed {seed}: the fault-free run delivered a transition twice"
    );
    assert!(
        !clean_transitions.is_empty(),
        "seed {seed}: the fleet fired no alert, so alerts were not compared"
    );
    assert_eq!(
        faulty_transitions,
        clean_transitions,
        "seed {seed}: the alert transitions under faults differ from the fault-free run\n{}",
        faulty.stages.client.summary()
    );
    let client = &faulty.stages.client;
    let injected: u64 = client.injected().values().sum();
    let calls: u64 = client.calls().values().sum();
    let kinds: BTreeSet<Fault> = client.injected().keys().map(|(_, kind)| *kind).collect();
    assert!(
        injected * 100 >= calls * 10,
        "seed {seed}: only {injected} faults in {calls} calls; the fault layer is not reaching the stages"
    );
    assert!(
        client.count("DynamoDB.PutItem", Fault::LostResponse) > 0,
        "seed {seed}: no write's response was lost after it landed\n{}",
        client.summary()
    );
    for kind in [
        Fault::Throttled,
        Fault::ServerError,
        Fault::ConnectionReset,
        Fault::LostResponse,
    ] {
        assert!(
            kinds.contains(&kind),
            "seed {seed}: no {kind} fault was injected"
        );
    }
    eprintln!(
        "seed {seed}: {} transitions, {} repeat deliveries ({} Publish responses lost); {injected} faults in {calls} calls:\n{}",
        clean_transitions.len(),
        faulty.messages.len() - faulty_transitions.len(),
        client.count("SNS.Publish", Fault::LostResponse),
        client.summary()
    );
}

fn seed() -> u64 {
    match std::env::var("TALLY_FAULT_SEED") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("TALLY_FAULT_SEED={text:?} is not a number")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_under_20_percent_faults_equals_the_fault_free_run() {
    let rate = std::env::var("TALLY_FAULT_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0.2);
    let fleets = std::env::var("TALLY_FAULT_FLEETS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1u64);
    let first = seed();
    for n in 0..fleets {
        let seed = first.wrapping_add(n);
        // A stage stuck retrying must fail with its seed, not hang CI.
        tokio::time::timeout(FLEET_DEADLINE, one_fleet(seed, rate))
            .await
            .unwrap_or_else(|_| {
                panic!("seed {seed}: the fleet did not finish within {FLEET_DEADLINE:?}")
            });
    }
}
