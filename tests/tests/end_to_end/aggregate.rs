//! The aggregate stage end to end against the AWS API server: uploads
//! ingested into the state table, its stream read through the DynamoDB
//! Streams API and handed to the handler in Lambda's shape, and the totals
//! table and its `ByDate` index read back.

use std::collections::BTreeMap;

use serde_json::Value;
use tally_aggregate::Aggregator;
use tally_aggregate::reconcile::reconcile;
use tally_core::key::Date;
use tally_core::ports::TotalsStore;
use tally_tests::streams::lambda_event;
use tally_tests::world::AwsPipelineWorld;

const DATE: &str = "2015-11-16";

fn date() -> Date {
    Date::parse(DATE).unwrap()
}

/// Uploads each (instance, body) and ingests it; returns nothing.
async fn upload_all(world: &AwsPipelineWorld, uploads: &[(&str, &str)]) {
    for (instance, body) in uploads {
        let uploaded = world
            .ingest
            .upload(&format!("counters/{DATE}/{instance}"), *body)
            .await;
        let (_, report) = world
            .ingest
            .ingestor
            .handle(&world.ingest.created_event(&uploaded))
            .await
            .expect("ingested");
        assert_eq!(report.failed, 0);
    }
}

/// Delivers `records` as one batch and returns the sequence number Lambda
/// is told to resume from, if any.
async fn deliver(world: &AwsPipelineWorld, records: &[Value]) -> Option<String> {
    let (response, _) = world.aggregator.handle(&lambda_event(records)).await;
    response
        .batch_item_failures
        .first()
        .and_then(|f| f.item_identifier.clone())
}

#[tokio::test]
async fn the_worked_example_totals_191122() {
    let mut world = AwsPipelineWorld::new(false).await;
    upload_all(
        &world,
        &[
            ("i-1", "COUNTER1 12345"),
            ("i-2", "COUNTER1 123456"),
            ("i-3", "COUNTER1 1000"),
            ("i-4", "COUNTER1 54321"),
        ],
    )
    .await;
    let records = world.stream.read_new().await;
    assert_eq!(records.len(), 4);
    assert_eq!(deliver(&world, &records).await, None);
    assert_eq!(
        world.totals(DATE).await,
        BTreeMap::from([("COUNTER1".to_owned(), 191_122)])
    );

    // The item itself: Value a number, as readers of the per-counter design's table expect.
    let item = world
        .ingest
        .dynamodb
        .get_item()
        .table_name(&world.totals_table)
        .key(
            "Counter",
            aws_sdk_dynamodb::types::AttributeValue::S("COUNTER1".into()),
        )
        .key(
            "Date",
            aws_sdk_dynamodb::types::AttributeValue::S(DATE.into()),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(
        item["Value"],
        aws_sdk_dynamodb::types::AttributeValue::N("191122".into())
    );
}

#[tokio::test]
async fn the_same_batch_three_times_whole_bisected_and_resumed_keeps_totals_exact() {
    let mut world = AwsPipelineWorld::new(false).await;
    upload_all(
        &world,
        &[
            ("i-1", "a 1 b 10"),
            ("i-2", "a 2 c 20"),
            ("i-3", "a 3"),
            ("i-1", "a 4 b 10"),
            ("web 7", "b 5 zähler 9"),
            ("i-2", "c 21"),
        ],
    )
    .await;
    let records = world.stream.read_new().await;
    assert_eq!(records.len(), 6);
    let expected = world.batch_totals(DATE).await;
    assert_eq!(
        expected,
        BTreeMap::from([
            ("a".to_owned(), 7),
            ("b".to_owned(), 15),
            ("c".to_owned(), 21),
            ("zähler".to_owned(), 9),
        ])
    );

    // The first attempt dies after six table operations, its last write
    // landed but unanswered; Lambda delivers the batch again, whole.
    let crashing = Aggregator::new(tally_tests::faults::Crashing::new(
        world.aggregator.store().clone(),
        6,
        true,
    ));
    let (response, _) = crashing.handle(&lambda_event(&records)).await;
    assert!(
        !response.batch_item_failures.is_empty(),
        "the crash is reported"
    );
    assert_eq!(deliver(&world, &records).await, None);
    assert_eq!(world.totals(DATE).await, expected, "delivered again whole");

    // Lambda bisects the batch and delivers both halves again.
    let (first, second) = records.split_at(records.len() / 2);
    assert_eq!(deliver(&world, first).await, None);
    assert_eq!(deliver(&world, second).await, None);
    assert_eq!(
        world.totals(DATE).await,
        expected,
        "after the bisected halves"
    );

    // A delivery from a reported failure onwards: the tail again.
    assert_eq!(deliver(&world, &records[2..]).await, None);
    assert_eq!(
        world.totals(DATE).await,
        expected,
        "after resuming from record 3"
    );

    let report = reconcile(&world.ingest.store, &world.aggregator, &date(), false)
        .await
        .unwrap();
    assert_eq!((report.partials_repaired, report.totals_repaired), (0, 0));
}

#[tokio::test]
async fn a_failed_batch_reports_where_to_resume_and_the_retry_completes_it() {
    let mut world = AwsPipelineWorld::new(false).await;
    upload_all(&world, &[("i-1", "a 1"), ("i-2", "a 2"), ("i-3", "b 3")]).await;
    let records = world.stream.read_new().await;

    // A handler whose partials table does not exist fails every record.
    let broken =
        tally_aggregate::Aggregator::new(tally_aws::totals_tables::DynamoTotalsStore::new(
            world.ingest.dynamodb.clone(),
            "no-such-partials-table",
            &world.totals_table,
        ));
    let (response, report) = broken.handle(&lambda_event(&records)).await;
    let first_sequence = records[0]["dynamodb"]["SequenceNumber"].as_str().unwrap();
    assert_eq!(
        response.batch_item_failures[0].item_identifier.as_deref(),
        Some(first_sequence)
    );
    assert_eq!(report.failed, 3);

    assert_eq!(deliver(&world, &records).await, None);
    assert_eq!(world.totals(DATE).await, world.batch_totals(DATE).await);
}

#[tokio::test]
async fn removed_counters_and_deleted_instances_leave_no_stale_total() {
    let mut world = AwsPipelineWorld::new(false).await;
    upload_all(&world, &[("i-1", "a 1 b 2"), ("i-2", "a 10")]).await;
    let records = world.stream.read_new().await;
    deliver(&world, &records).await;
    assert_eq!(
        world.totals(DATE).await,
        BTreeMap::from([("a".to_owned(), 11), ("b".to_owned(), 2)])
    );

    // i-1 stops reporting b; i-2's object is deleted.
    upload_all(&world, &[("i-1", "a 1")]).await;
    let deleted = world.ingest.delete(&format!("counters/{DATE}/i-2")).await;
    world
        .ingest
        .ingestor
        .handle(&world.ingest.removed_event(&deleted))
        .await
        .unwrap();
    let records = world.stream.read_new().await;
    let (response, report) = world.aggregator.handle(&lambda_event(&records)).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(report.totals_removed, 1);
    assert_eq!(
        world.totals(DATE).await,
        BTreeMap::from([("a".to_owned(), 1)])
    );

    let all = world.aggregator.store().totals(&date()).await.unwrap();
    let b = all
        .iter()
        .find(|t| t.counter == "b")
        .expect("b is kept as removed");
    assert!(b.is_removed() && b.value.is_none());
}

#[tokio::test]
async fn an_undecodable_record_stops_the_batch_there_and_is_reported() {
    let mut world = AwsPipelineWorld::new(false).await;
    upload_all(&world, &[("i-1", "a 1"), ("i-2", "a 2"), ("i-1", "a 3")]).await;
    let mut records = world.stream.read_new().await;
    records[1]["dynamodb"]["NewImage"]["Counters"] = serde_json::json!({"S": "not a map"});
    let bad_sequence = records[1]["dynamodb"]["SequenceNumber"].clone();
    let (response, report) = world.aggregator.handle(&lambda_event(&records)).await;
    assert_eq!(
        response.batch_item_failures[0].item_identifier.as_deref(),
        bad_sequence.as_str()
    );
    assert_eq!(report.failed, 1);
    // Only the record before it was applied; i-1's later change was not.
    assert_eq!(
        world.totals(DATE).await,
        BTreeMap::from([("a".to_owned(), 1)])
    );

    // Lambda redelivers from the bad record; once it decodes (a fixed
    // deployment), the rest follows.
    let fresh = {
        let mut again = AwsPipelineWorld::new(false).await;
        upload_all(&again, &[("i-2", "a 2")]).await;
        again.stream.read_new().await.remove(0)
    };
    records[1]["dynamodb"]["NewImage"] = fresh["dynamodb"]["NewImage"].clone();
    assert_eq!(deliver(&world, &records[1..]).await, None);
    assert_eq!(
        world.totals(DATE).await,
        BTreeMap::from([("a".to_owned(), 5)])
    );
}

#[tokio::test]
async fn a_time_to_live_expiry_leaves_the_totals_alone() {
    let mut world = AwsPipelineWorld::new(false).await;
    upload_all(&world, &[("i-1", "a 5")]).await;
    let records = world.stream.read_new().await;
    deliver(&world, &records).await;
    let mut expiry = records[0].clone();
    expiry["eventName"] = "REMOVE".into();
    expiry["dynamodb"]["OldImage"] = expiry["dynamodb"]["NewImage"].take();
    expiry["dynamodb"]
        .as_object_mut()
        .unwrap()
        .remove("NewImage");
    expiry["dynamodb"]["SequenceNumber"] = "99999999999999999999999999".into();
    expiry["userIdentity"] =
        serde_json::json!({"type": "Service", "principalId": "dynamodb.amazonaws.com"});
    assert_eq!(deliver(&world, &[expiry]).await, None);
    assert_eq!(
        world.totals(DATE).await,
        BTreeMap::from([("a".to_owned(), 5)])
    );
}

#[tokio::test]
async fn stream_records_convert_to_the_shape_of_the_documented_lambda_event() {
    let mut world = AwsPipelineWorld::new(false).await;
    upload_all(&world, &[("i-1", "a 1")]).await;
    upload_all(&world, &[("i-1", "a 2")]).await;
    let records = world.stream.read_new().await;
    let converted = &records[1];
    let sample = tally_tests::aws_sample("dynamodb-update");
    let documented = &sample["Records"][1]; // a MODIFY, like ours
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(converted), keys(documented));
    assert_eq!(keys(&converted["dynamodb"]), keys(&documented["dynamodb"]));
    assert_eq!(converted["eventName"], "MODIFY");
    assert!(converted["dynamodb"]["ApproximateCreationDateTime"].is_number());
    assert!(converted["dynamodb"]["NewImage"]["Counters"]["M"]["a"]["N"] == "2");
    // Both decode as Lambda's event type.
    let ours = lambda_event(&records);
    let theirs: aws_lambda_events::event::dynamodb::Event = serde_json::from_value(sample).unwrap();
    assert_eq!(ours.records[1].event_name, theirs.records[1].event_name);
}

#[tokio::test]
async fn reconcile_finds_drift_and_repairs_it() {
    let mut world = AwsPipelineWorld::new(false).await;
    upload_all(
        &world,
        &[("i-1", "a 1 b 2"), ("i-2", "a 10"), ("i-3", "c 7")],
    )
    .await;
    let records = world.stream.read_new().await;
    // The aggregate stage never sees the last record (say the stream expired).
    deliver(&world, &records[..2]).await;
    let checked = reconcile(&world.ingest.store, &world.aggregator, &date(), false)
        .await
        .unwrap();
    assert_eq!(
        (checked.partials_repaired, checked.totals_repaired),
        (1, 1),
        "{checked:?}"
    );
    assert_ne!(world.totals(DATE).await, world.batch_totals(DATE).await);

    let repaired = reconcile(&world.ingest.store, &world.aggregator, &date(), true)
        .await
        .unwrap();
    assert_eq!(repaired.totals_repaired, 1);
    assert_eq!(world.totals(DATE).await, world.batch_totals(DATE).await);
    let again = reconcile(&world.ingest.store, &world.aggregator, &date(), false)
        .await
        .unwrap();
    assert_eq!((again.partials_repaired, again.totals_repaired), (0, 0));
}

/// The scheduler's event through the aggregate function's decoding and the
/// reconcile it runs, over DynamoDB: the stream left yesterday one record
/// short, and the morning's run repairs it and reports the drift.
#[tokio::test]
async fn the_scheduled_reconcile_of_yesterday_repairs_what_the_stream_left_out() {
    use tally_aggregate::scheduled::{Invocation, decode_invocation, run_reconcile};

    let mut world = AwsPipelineWorld::new(false).await;
    upload_all(
        &world,
        &[("i-1", "a 1 b 2"), ("i-2", "a 10"), ("i-3", "c 7")],
    )
    .await;
    let records = world.stream.read_new().await;
    deliver(&world, &records[..2]).await;
    assert_ne!(world.totals(DATE).await, world.batch_totals(DATE).await);

    let event = serde_json::json!({"reconcile": {"day": "yesterday"}});
    let request = match decode_invocation(event) {
        Ok(Invocation::Reconcile(request)) => request,
        other => panic!("{other:?}"),
    };
    let morning = chrono::DateTime::parse_from_rfc3339("2015-11-17T06:30:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let report = run_reconcile(
        &world.ingest.store,
        &world.aggregator,
        &request,
        morning,
        || async { panic!("yesterday's reconcile does not wait") },
    )
    .await
    .unwrap();
    assert_eq!(report.date, DATE);
    assert_eq!(
        (
            report.reconcile.partials_repaired,
            report.reconcile.totals_repaired
        ),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(world.totals(DATE).await, world.batch_totals(DATE).await);
    let line = tally_aws::metrics::line(
        tally_aws::metrics::Stage::Reconcile,
        "aggregate",
        &report,
        0,
    )
    .unwrap();
    let document: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(document["ReconcileDrift"], 2);
}

/// Today's hourly check over DynamoDB: a record still in the stream at the
/// first look is delivered while the check settles, so nothing is drift;
/// one the stage never gets holds still and is counted, and not written.
#[tokio::test]
async fn the_hourly_check_of_today_counts_only_drift_that_holds_still() {
    use tally_aggregate::scheduled::{Invocation, decode_invocation, run_reconcile};

    let mut world = AwsPipelineWorld::new(false).await;
    upload_all(&world, &[("i-1", "a 1 b 2"), ("i-2", "a 10")]).await;
    let records = world.stream.read_new().await;
    deliver(&world, &records[..1]).await;
    let request = match decode_invocation(serde_json::json!({"reconcile": {"day": "today"}})) {
        Ok(Invocation::Reconcile(request)) => request,
        other => panic!("{other:?}"),
    };
    let noon = chrono::DateTime::parse_from_rfc3339("2015-11-16T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let in_flight = records[1..].to_vec();
    let report = run_reconcile(
        &world.ingest.store,
        &world.aggregator,
        &request,
        noon,
        || async {
            deliver(&world, &in_flight).await;
        },
    )
    .await
    .unwrap();
    assert_eq!(report.drift, 0, "{report:?}");
    assert_eq!(world.totals(DATE).await, world.batch_totals(DATE).await);

    // i-3's upload never reaches the stage: it holds still, and is counted.
    upload_all(&world, &[("i-3", "c 7")]).await;
    let report = run_reconcile(
        &world.ingest.store,
        &world.aggregator,
        &request,
        noon,
        || async {},
    )
    .await
    .unwrap();
    assert_eq!(report.drift, 1, "{report:?}");
    assert!(!report.repaired);
    assert_eq!(report.confirmed[0].counter, "c");
    assert_ne!(world.totals(DATE).await, world.batch_totals(DATE).await);
}

#[tokio::test]
async fn a_sample_round_writes_each_changed_total_once_per_batch() {
    // The per-counter design's sample workload, 100 instances × 100 counters, in one batch of
    // 100 records: a first round, then one where 10% of the counters move.
    // (`cargo run -p tally-tests --example sample_workload_costs` prints the full table.)
    let mut world = AwsPipelineWorld::new(false).await;
    let rounds = tally_tests::sample_workload::run_sample_rounds(&mut world, 100, &[100, 10]).await;
    for round in &rounds {
        assert_eq!(round.total_writes, round.changed_counters, "{round:?}");
        assert!(round.partial_writes <= 64, "{round:?}");
    }
    assert_eq!(world.totals(DATE).await, world.batch_totals(DATE).await);
}

#[tokio::test]
async fn an_invocation_overtaken_by_a_stale_one_recomputes_and_wins() {
    // Two instances in different buckets report counter a; their changes
    // come through different shards, and two invocations interleave so:
    //   B folds y's change, reads the partials (without x), then waits;
    //   A folds x's change, reads the partials (x and y) and the stored
    //     totals (none), then waits before writing;
    //   B reads the stored totals (none) and writes a = y, from partials
    //     that lack x;
    //   A's write, expecting no total, fails: it must read again and write
    //     a = x + y over B's, whose basis its own covers.
    use tally_tests::faults::{PauseBefore, Paused};
    let mut world = AwsPipelineWorld::new(false).await;
    let (x, y) = ("i-1", "i-2");
    assert_ne!(
        tally_core::state::bucket_of(x),
        tally_core::state::bucket_of(y)
    );
    upload_all(&world, &[(x, "a 5"), (y, "a 7")]).await;
    let records = world.stream.read_new().await;
    let of = |instance: &str| -> Vec<Value> {
        records
            .iter()
            .filter(|r| r["dynamodb"]["Keys"]["Instance"]["S"] == instance)
            .cloned()
            .collect()
    };
    let (x_records, y_records) = (of(x), of(y));
    let store = world.aggregator.store().clone();
    let a = Paused::new(store.clone(), PauseBefore::PutTotal);
    let b = Paused::new(store.clone(), PauseBefore::TotalsOf);
    let (a_aggregator, b_aggregator) = (Aggregator::new(a.clone()), Aggregator::new(b.clone()));

    let b_event = lambda_event(&y_records);
    let b_run = tokio::spawn(async move { b_aggregator.handle(&b_event).await });
    b.reached.notified().await;
    let a_event = lambda_event(&x_records);
    let a_run = tokio::spawn(async move { a_aggregator.handle(&a_event).await });
    a.reached.notified().await;
    b.resume.notify_one();
    let (b_response, _) = b_run.await.unwrap();
    assert!(b_response.batch_item_failures.is_empty());
    assert_eq!(
        world.totals(DATE).await,
        BTreeMap::from([("a".to_owned(), 7)]),
        "B's stale total"
    );
    a.resume.notify_one();
    let (a_response, a_report) = a_run.await.unwrap();
    assert!(a_response.batch_item_failures.is_empty());
    assert_eq!(a_report.total_writes, 1, "{a_report:?}");
    assert_eq!(
        world.totals(DATE).await,
        BTreeMap::from([("a".to_owned(), 12)])
    );
}

#[tokio::test]
async fn changes_that_cancel_across_buckets_still_correct_a_total_read_between_them() {
    // x (one bucket) goes e 1 → 2 and y (another bucket) e 5 → 4 in one
    // batch: the net change of e is zero. Between the batch's two partial
    // writes, an invocation on another shard folds z's e 10 and writes
    // e = 17 from partials with x's change but not y's. The batch must
    // still recompute e (16), though its own net change is zero.
    use tally_tests::faults::{PauseBefore, Paused};
    let mut world = AwsPipelineWorld::new(false).await;
    let (x, y, z) = ("i-1", "i-2", "web 1");
    let bucket = tally_core::state::bucket_of;
    assert!(bucket(x) != bucket(y) && bucket(y) != bucket(z) && bucket(x) != bucket(z));
    upload_all(&world, &[(x, "e 1"), (y, "e 5")]).await;
    let first = world.stream.read_new().await;
    deliver(&world, &first).await;
    assert_eq!(
        world.totals(DATE).await,
        BTreeMap::from([("e".to_owned(), 6)])
    );

    upload_all(&world, &[(x, "e 2"), (y, "e 4"), (z, "e 10")]).await;
    let records = world.stream.read_new().await;
    let of = |instances: &[&str]| -> Vec<Value> {
        records
            .iter()
            .filter(|r| {
                instances
                    .iter()
                    .any(|i| r["dynamodb"]["Keys"]["Instance"]["S"] == *i)
            })
            .cloned()
            .collect()
    };
    let (ours, theirs) = (of(&[x, y]), of(&[z]));
    let paused = Paused::new(
        world.aggregator.store().clone(),
        PauseBefore::PutPartial(bucket(y)),
    );
    let aggregator = Aggregator::new(paused.clone());
    let event = lambda_event(&ours);
    let run = tokio::spawn(async move { aggregator.handle(&event).await });
    paused.reached.notified().await;
    // Let x's partial land before the other shard reads (x's fold is not paused).
    let x_part = tally_core::aggregate::partial_key(&date(), bucket(x));
    for _ in 0..100 {
        let stored = world
            .aggregator
            .store()
            .partial(&date(), bucket(x))
            .await
            .unwrap();
        if stored.is_some_and(|p| p.version >= 2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(deliver(&world, &theirs).await, None, "{x_part}");
    assert_eq!(
        world.totals(DATE).await,
        BTreeMap::from([("e".to_owned(), 17)]),
        "read between the writes"
    );
    paused.resume.notify_one();
    let (response, _) = run.await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        world.totals(DATE).await,
        BTreeMap::from([("e".to_owned(), 16)])
    );
    assert_eq!(world.totals(DATE).await, world.batch_totals(DATE).await);
}
