//! The ingest stage end to end against the AWS API server: objects uploaded
//! with the S3 client, events shaped as AWS sends them, the real handler, and
//! the state table read back through DynamoDB.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tally_core::body::DEFAULT_MAX_BODY_BYTES;
use tally_core::ordering::OrderingKey;
use tally_core::state::Content;
use tally_ingest::{IngestConfig, IngestResponse, Outcome};
use tally_tests::world::AwsIngestWorld;
use tally_tests::{S3Change, s3_event, sdk_config, sns_event, sqs_event, unique};

fn counters(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
}

fn live_counters(state: &tally_core::state::InstanceState) -> &BTreeMap<String, i64> {
    state.content.counters().expect("a live state")
}

#[tokio::test]
async fn an_sns_wrapped_upload_reaches_the_state_table_with_names_and_ids_intact() {
    let world = AwsIngestWorld::new().await;
    let names = [
        "a.b",
        "#hash",
        ":colon",
        "bids-won",
        "a/b",
        "\"quoted\"",
        "it's",
        "zähler",
        "計數",
        "#a",
        ":v",
        ")",
        "attribute_exists(x)",
    ];
    let body: String = names
        .iter()
        .enumerate()
        .map(|(i, name)| format!("{name} {}\n", i as i64 * 1_000 - 3))
        .collect();
    for instance in ["i-1", "web 1", "a+b", "100%", "インスタンス-7", "x%2By"] {
        let key = format!("counters/2015-11-16/{instance}");
        let uploaded = world.upload(&key, body.clone()).await;
        let event = sns_event(&world.created_event(&uploaded));
        let (_, report) = world.ingestor.handle(&event).await.expect("handled");
        assert_eq!(report.written, 1, "{instance}: {report:?}");

        let state = world
            .state("2015-11-16", instance)
            .await
            .unwrap_or_else(|| panic!("{instance}: no state"));
        assert_eq!(state.object_key, key);
        let expected: BTreeMap<String, i64> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), i as i64 * 1_000 - 3))
            .collect();
        assert_eq!(live_counters(&state), &expected, "{instance}");
        assert_eq!(state.content.etag(), Some(uploaded.etag.as_str()));
        assert_eq!(
            state.ordering,
            OrderingKey::from_sequencer(&uploaded.stamp.sequencer).unwrap()
        );
    }
    // The raw items, read with a Scan rather than through the store, carry the same text.
    let items = world.all_state().await;
    assert_eq!(items.len(), 6);
    assert!(items.iter().any(|item| item.instance == "インスタンス-7"
        && item.counters.get("計數") == Some(&7_997)
        && item.counters.get("attribute_exists(x)") == Some(&11_997)));
}

#[tokio::test]
async fn every_rejected_body_keeps_the_previous_state_and_says_exactly_why() {
    let world = AwsIngestWorld::new().await;
    let key = "counters/2015-11-16/i-1";
    let good = world.upload(key, "requests 10\nerrors 1\n").await;
    world
        .ingestor
        .handle(&world.created_event(&good))
        .await
        .expect("handled");
    let before = world.state("2015-11-16", "i-1").await.expect("state");

    let long_name = "n".repeat(256);
    let cases: Vec<(Vec<u8>, String)> = vec![
        (
            b"requests 11 errors \xff".to_vec(),
            "body is not UTF-8: invalid byte at offset 19".into(),
        ),
        (
            b"requests 11 errors".to_vec(),
            "body has an odd number of tokens (3): name \"errors\" at byte 12 has no value".into(),
        ),
        (
            b"requests 11 errors 12x".to_vec(),
            "token 4 (\"12x\") at byte 19 is not an integer".into(),
        ),
        (
            b"requests 9223372036854775808".to_vec(),
            "token 2 (\"9223372036854775808\") at byte 9 is outside the signed 64-bit range [-9223372036854775808, 9223372036854775807]".into(),
        ),
        (
            b"requests 11 errors 2 requests 12".to_vec(),
            "token 5 at byte 21 repeats counter name \"requests\" (first at token 1); each counter may appear once".into(),
        ),
        (
            "requests 11 bad\u{0c}name 2".as_bytes().to_vec(),
            "token 3 (\"bad\\u{c}name\") at byte 12 is not a counter name: it contains '\\u{c}', and names may not contain whitespace or control characters".into(),
        ),
        (
            format!("{long_name} 1").into_bytes(),
            format!("token 1 (\"{}…\") at byte 0 is not a counter name: 256 bytes, over the 255-byte limit", "n".repeat(64)),
        ),
    ];
    for (body, expected) in cases {
        let bad = world.upload(key, body).await;
        let event = world.created_event(&bad);
        let (response, report) = world
            .ingestor
            .handle(&event)
            .await
            .expect("a rejection is not a failure");
        assert_eq!(report.rejected, 1, "{expected}");
        assert_eq!(report.capacity.writes, 0, "{expected}");
        assert!(matches!(response, IngestResponse::Report(_)));
        // The same notice applied directly gives the precise reason.
        let notice = notice_of(&event);
        // A newer event for the same rejected object, so it is not a duplicate.
        let mut again = notice.clone();
        again.ordering = OrderingKey::from_sequencer(&world.next_sequencer()).unwrap();
        match world.ingestor.apply(&again).await.expect("applied").0 {
            Outcome::Rejected(reason) => assert_eq!(reason.to_string(), expected),
            other => panic!("expected a rejection ({expected}), got {other:?}"),
        }
        assert_eq!(
            world.state("2015-11-16", "i-1").await.as_ref(),
            Some(&before),
            "{expected}: the previous state must be untouched"
        );
    }
}

#[tokio::test]
async fn an_object_over_the_cap_is_refused_from_its_size_and_the_state_kept() {
    let world = AwsIngestWorld::new().await;
    let key = "counters/2015-11-16/big";
    let first = world.upload(key, "requests 1").await;
    world
        .ingestor
        .handle(&world.created_event(&first))
        .await
        .unwrap();
    let before = world.state("2015-11-16", "big").await;
    assert!(before.is_some());

    let body = vec![b' '; (DEFAULT_MAX_BODY_BYTES + 1) as usize];
    let uploaded = world.upload(key, body).await;
    let notice = notice_of(&world.created_event(&uploaded));
    match world.ingestor.apply(&notice).await.expect("applied").0 {
        Outcome::Rejected(reason) => assert_eq!(
            reason.to_string(),
            "body is 1048577 bytes, over the 1048576-byte cap; split the counters or raise the cap"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(world.state("2015-11-16", "big").await, before);

    // A configured cap applies the same way.
    let small = AwsIngestWorld::with(
        IngestConfig {
            max_body_bytes: 8,
            ..IngestConfig::default()
        },
        false,
    )
    .await;
    let uploaded = small.upload("counters/2015-11-16/i-1", "a 1 b 2 c 3").await;
    let notice = notice_of(&small.created_event(&uploaded));
    match small.ingestor.apply(&notice).await.unwrap().0 {
        Outcome::Rejected(reason) => assert_eq!(
            reason.to_string(),
            "body is 11 bytes, over the 8-byte cap; split the counters or raise the cap"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_body_too_big_for_one_item_is_rejected_with_the_item_size() {
    // 20,000 counters of 24-byte names parse (well under 1 MiB) but would
    // make a state item over DynamoDB's 400 KB limit.
    let world = AwsIngestWorld::new().await;
    let key = "counters/2015-11-16/i-1";
    let first = world.upload(key, "requests 1").await;
    world
        .ingestor
        .handle(&world.created_event(&first))
        .await
        .unwrap();
    let before = world.state("2015-11-16", "i-1").await;

    let body: String = (0..20_000)
        .map(|i| format!("counter.name.number.{i:05} 123456\n"))
        .collect();
    assert!(body.len() < DEFAULT_MAX_BODY_BYTES as usize);
    let uploaded = world.upload(key, body).await;
    let notice = notice_of(&world.created_event(&uploaded));
    match world.ingestor.apply(&notice).await.unwrap().0 {
        Outcome::Rejected(reason) => {
            let message = reason.to_string();
            assert!(
                message.starts_with("the body parses, but its state item would be "),
                "{message}"
            );
            assert!(message.ends_with(" bytes, over DynamoDB's 409600-byte item limit; report fewer or shorter counters per instance"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(world.state("2015-11-16", "i-1").await, before);
}

#[tokio::test]
async fn a_write_whose_response_was_lost_is_recognised_as_landed() {
    // The SDK retries a PutItem whose response timed out after it landed;
    // the retry fails its condition. Ingest must see that the state is its
    // own, report it written, and still run its check.
    let world = AwsIngestWorld::new().await;
    let uploaded = world.upload("counters/2015-11-16/i-1", "a 1").await;
    let retried = tally_ingest::Ingestor::new(
        tally_tests::faults::LostResponse::new(world.store.clone()),
        tally_aws::bucket::S3ObjectStore::new(world.s3.clone()),
        IngestConfig::default(),
    );
    let (outcome, used) = retried
        .apply(&notice_of(&world.created_event(&uploaded)))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Written { corrected: false });
    assert_eq!(used.writes, 1);
    let state = world.state("2015-11-16", "i-1").await.unwrap();
    assert_eq!(live_counters(&state), &counters(&[("a", 1)]));
}

#[tokio::test]
async fn events_without_a_sequencer_are_ordered_by_time_and_ties_settle_on_the_bucket() {
    // Two uploads in the same millisecond, delivered newest first, on a
    // versioned bucket: the older one reads its own version and writes it
    // (equal times count as newer), and the check puts the newest back.
    let world = AwsIngestWorld::versioned().await.timed();
    let key = "counters/2015-11-16/i-1";
    let first = world.upload(key, "a 1").await;
    world.same_millisecond_next();
    let second = world.upload(key, "a 2").await;
    assert_eq!(first.stamp.event_millis, second.stamp.event_millis);
    let later = world.upload(key, "a 3").await;

    world
        .ingestor
        .handle(&world.created_event(&second))
        .await
        .unwrap();
    world
        .ingestor
        .handle(&world.created_event(&first))
        .await
        .unwrap();
    let state = world.state("2015-11-16", "i-1").await.unwrap();
    assert_eq!(
        live_counters(&state),
        &counters(&[("a", 3)]),
        "the bucket holds a 3 by now"
    );

    // The newest event, then the oldest again: nothing lasting changes.
    world
        .ingestor
        .handle(&world.created_event(&later))
        .await
        .unwrap();
    world
        .ingestor
        .handle(&world.created_event(&first))
        .await
        .unwrap();
    let state = world.state("2015-11-16", "i-1").await.unwrap();
    assert_eq!(live_counters(&state), &counters(&[("a", 3)]));
}

fn notice_of(event: &Value) -> tally_ingest::event::Notice {
    match &tally_ingest::event::decode(event).unwrap().messages[0]
        .records
        .as_ref()
        .unwrap()[0]
    {
        tally_ingest::event::Record::Notice(n) => n.clone(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_identical_re_upload_costs_no_write() {
    let world = AwsIngestWorld::new().await;
    let key = "counters/2015-11-16/i-1";
    let first = world.upload(key, "a 1\nb 2\n").await;
    let (_, report) = world
        .ingestor
        .handle(&world.created_event(&first))
        .await
        .unwrap();
    assert_eq!((report.written, report.capacity.writes), (1, 1));
    let stored = world.state("2015-11-16", "i-1").await;

    // Same bytes: same ETag, no object read, no write.
    let same = world.upload(key, "a 1\nb 2\n").await;
    let (_, report) = world
        .ingestor
        .handle(&world.created_event(&same))
        .await
        .unwrap();
    assert_eq!(
        (
            report.unchanged,
            report.capacity.writes,
            report.capacity.write_units
        ),
        (1, 0, 0)
    );

    // Different bytes, same counters: read and parsed, still no write.
    let reformatted = world.upload(key, "b\t2 a 1").await;
    let (_, report) = world
        .ingestor
        .handle(&world.created_event(&reformatted))
        .await
        .unwrap();
    assert_eq!((report.unchanged, report.capacity.writes), (1, 0));
    assert_eq!(world.state("2015-11-16", "i-1").await, stored);
}

#[tokio::test]
async fn stale_and_duplicate_events_never_overwrite_newer_state() {
    let world = AwsIngestWorld::new().await;
    let key = "counters/2015-11-16/i-1";
    let older = world.upload(key, "a 1").await;
    let newer = world.upload(key, "a 2").await;
    let older_event = world.created_event(&older);
    let newer_event = world.created_event(&newer);

    let (_, report) = world.ingestor.handle(&newer_event).await.unwrap();
    assert_eq!(report.written, 1);
    let (_, report) = world.ingestor.handle(&older_event).await.unwrap();
    assert_eq!((report.stale, report.capacity.writes), (1, 0));
    let (_, report) = world.ingestor.handle(&newer_event).await.unwrap();
    assert_eq!((report.duplicate, report.capacity.writes), (1, 0));

    let state = world.state("2015-11-16", "i-1").await.unwrap();
    assert_eq!(live_counters(&state), &counters(&[("a", 2)]));
    assert_eq!(
        state.ordering,
        OrderingKey::from_sequencer(&newer.stamp.sequencer).unwrap()
    );
}

#[tokio::test]
async fn a_delete_leaves_a_tombstone_that_a_late_create_cannot_pass() {
    let world = AwsIngestWorld::versioned().await;
    let key = "counters/2015-11-16/i-1";
    let created = world.upload(key, "a 1").await;
    let removed = world.delete(key).await;

    // The removal arrives first; the create (its exact version still readable) after.
    let (_, report) = world
        .ingestor
        .handle(&sns_event(&world.removed_event(&removed)))
        .await
        .unwrap();
    assert_eq!(report.written, 1);
    let (_, report) = world
        .ingestor
        .handle(&sns_event(&world.created_event(&created)))
        .await
        .unwrap();
    assert_eq!(report.stale, 1);

    let state = world.state("2015-11-16", "i-1").await.unwrap();
    assert_eq!(state.content, Content::Deleted);
    assert_eq!(
        state.ordering,
        OrderingKey::from_sequencer(&removed.stamp.sequencer).unwrap()
    );
}

#[tokio::test]
async fn a_removal_after_a_create_drops_the_contribution() {
    let world = AwsIngestWorld::new().await;
    let key = "counters/2015-11-16/i-1";
    let created = world.upload(key, "a 1").await;
    world
        .ingestor
        .handle(&world.created_event(&created))
        .await
        .unwrap();
    let removed = world.delete(key).await;
    world
        .ingestor
        .handle(&world.removed_event(&removed))
        .await
        .unwrap();
    let state = world.state("2015-11-16", "i-1").await.unwrap();
    assert_eq!(state.content, Content::Deleted);
    assert!(state.content.counters().is_none());
}

/// On a versioned bucket, uploads A (`a 1`), B (`a 2`), A again; delivers the
/// two A events (the second finds A stored and writes nothing) and returns B's
/// upload, not yet delivered.
async fn a_b_a_with_b_undelivered() -> (AwsIngestWorld, tally_tests::world::Uploaded) {
    let world = AwsIngestWorld::versioned().await;
    let key = "counters/2015-11-16/i-1";
    let a1 = world.upload(key, "a 1").await;
    let b = world.upload(key, "a 2").await;
    let a2 = world.upload(key, "a 1").await;
    assert!(b.version_id.is_some(), "the bucket is versioned");
    world
        .ingestor
        .handle(&world.created_event(&a1))
        .await
        .unwrap();
    let (_, report) = world
        .ingestor
        .handle(&world.created_event(&a2))
        .await
        .unwrap();
    assert_eq!(report.unchanged, 1, "{report:?}");
    (world, b)
}

/// Delivers B's event: it writes B, and its check finds A in the bucket and
/// corrects the state back to A.
async fn deliver_b_and_expect_a_restored(world: &AwsIngestWorld, b: &tally_tests::world::Uploaded) {
    let (_, report) = world
        .ingestor
        .handle(&world.created_event(b))
        .await
        .unwrap();
    assert_eq!((report.written, report.corrected), (1, 1), "{report:?}");
    let state = world.state("2015-11-16", "i-1").await.unwrap();
    assert_eq!(live_counters(&state), &counters(&[("a", 1)]));
}

#[tokio::test]
async fn an_older_version_applied_late_is_corrected_to_what_the_bucket_holds() {
    // Uploads A, B, A on a versioned bucket. The third event finds A stored
    // and writes nothing; the second, delivered last, reads version B exactly
    // and writes it; the check after its write sees A in the bucket and
    // corrects the state back to A.
    let (world, b) = a_b_a_with_b_undelivered().await;
    deliver_b_and_expect_a_restored(&world, &b).await;
}

#[tokio::test]
async fn a_rejected_newest_upload_on_a_versioned_bucket_keeps_the_newest_accepted_version() {
    // Uploads A, B, A, then a rejected C. B's event, delivered last, writes
    // B; its check finds C, which cannot be stored, and walks back through
    // the versions S3 lists to the newest accepted one: A.
    let (world, b) = a_b_a_with_b_undelivered().await;
    let c = world.upload("counters/2015-11-16/i-1", "a 3 b").await;
    let (_, report) = world
        .ingestor
        .handle(&world.created_event(&c))
        .await
        .unwrap();
    assert_eq!(report.rejected, 1, "{report:?}");
    world
        .ingestor
        .handle(&world.created_event(&b))
        .await
        .unwrap();
    let state = world.state("2015-11-16", "i-1").await.unwrap();
    assert_eq!(live_counters(&state), &counters(&[("a", 1)]));
}

/// Delivers each event once, in the order given.
async fn deliver(world: &AwsIngestWorld, events: &[&Value]) {
    for event in events {
        world.ingestor.handle(event).await.unwrap();
    }
}

#[tokio::test]
async fn a_delete_and_a_re_upload_within_one_second_are_listed_in_their_order() {
    // A, delete, A again, then a rejected C, quicker than the listing's
    // one-second timestamps can order. The delete's event, delivered last,
    // writes a tombstone; its check walks back from C and must meet the
    // re-uploaded A before the delete marker.
    let world = AwsIngestWorld::versioned().await;
    let key = "counters/2015-11-16/i-1";
    let a1 = world.created_event(&world.upload(key, "a 1").await);
    let deleted = world.removed_event(&world.delete(key).await);
    let a3 = world.created_event(&world.upload(key, "a 1").await);
    let c4 = world.created_event(&world.upload(key, "a 3 b").await);
    deliver(&world, &[&a1, &a3, &c4, &deleted]).await;
    let state = world.state("2015-11-16", "i-1").await.unwrap();
    assert_eq!(live_counters(&state), &counters(&[("a", 1)]));
}

#[tokio::test]
async fn walking_back_from_a_rejected_upload_stops_at_the_delete_marker() {
    // A, delete, then a rejected C; A's event first. Its check walks back
    // from C to the marker: the instance has no accepted upload since.
    let world = AwsIngestWorld::versioned().await;
    let key = "counters/2015-11-16/i-1";
    let a1 = world.created_event(&world.upload(key, "a 1").await);
    let deleted = world.removed_event(&world.delete(key).await);
    let c3 = world.created_event(&world.upload(key, "a 3 b").await);
    deliver(&world, &[&a1, &c3, &deleted]).await;
    let state = world.state("2015-11-16", "i-1").await.unwrap();
    assert_eq!(state.content, Content::Deleted);
}

#[tokio::test]
async fn concurrent_invocations_for_one_instance_converge_on_the_last_upload() {
    // Versioned, so each event reads its own body: a late write of an older
    // body is possible and must not win.
    let world = AwsIngestWorld::versioned().await;
    let key = "counters/2015-11-16/i-1";
    let mut events = Vec::new();
    for value in 1..=6 {
        let uploaded = world
            .upload(key, format!("a {value} b {}", value * 10))
            .await;
        events.push(world.created_event(&uploaded));
    }
    // Every event twice, all at once, newest first.
    let deliveries = events.iter().rev().chain(events.iter());
    let results = futures::future::join_all(deliveries.map(|e| world.ingestor.handle(e))).await;
    assert!(results.iter().all(Result::is_ok));
    let state = world.state("2015-11-16", "i-1").await.unwrap();
    assert_eq!(live_counters(&state), &counters(&[("a", 6), ("b", 60)]));
}

#[tokio::test]
async fn keys_and_events_off_the_convention_are_ignored_not_failed() {
    let world = AwsIngestWorld::new().await;
    let mut records = Vec::new();
    for key in [
        "counters/2015-11-16/",
        "other/2015-11-16/i-1",
        "counters/2015-13-45/i-1",
        "counters/2015-11-16/sub/i-1",
    ] {
        let event = s3_event(&S3Change {
            event_name: "ObjectCreated:Put",
            bucket: &world.bucket,
            key,
            etag: Some("0123456789abcdef0123456789abcdef"),
            version_id: None,
            sequencer: Some("0A1B2C3D4E5F678901"),
            event_millis: 1_447_668_000_000,
        });
        records.push(event["Records"][0].clone());
    }
    let (_, report) = world
        .ingestor
        .handle(&json!({ "Records": records }))
        .await
        .expect("ignored keys do not fail the invocation");
    assert_eq!((report.records, report.ignored, report.failed), (4, 4, 0));
    assert!(world.all_state().await.is_empty());

    let test_event = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2015-11-16T10:00:00.000Z", "Bucket": world.bucket, "RequestId": "R", "HostId": "H"});
    let (_, report) = world
        .ingestor
        .handle(&sns_event(&test_event))
        .await
        .unwrap();
    assert_eq!(report.records, 0);
}

#[tokio::test]
async fn a_rejected_record_does_not_stop_the_others_in_its_event() {
    let world = AwsIngestWorld::new().await;
    let bad = world.upload("counters/2015-11-16/bad", "a").await;
    let good = world.upload("counters/2015-11-16/good", "a 1").await;
    let records = vec![
        world.created_event(&bad)["Records"][0].clone(),
        world.created_event(&good)["Records"][0].clone(),
    ];
    let (_, report) = world
        .ingestor
        .handle(&json!({ "Records": records }))
        .await
        .unwrap();
    assert_eq!((report.rejected, report.written), (1, 1));
    assert!(world.state("2015-11-16", "good").await.is_some());
    assert!(world.state("2015-11-16", "bad").await.is_none());
}

#[tokio::test]
async fn one_undecodable_sqs_message_fails_alone() {
    let world = AwsIngestWorld::new().await;
    let good = world.upload("counters/2015-11-16/i-1", "a 1").await;
    let event = sqs_event(&[
        ("m-good".into(), world.created_event(&good).to_string()),
        ("m-bad".into(), "{not json".into()),
    ]);
    let (response, report) = world.ingestor.handle(&event).await.unwrap();
    let IngestResponse::Sqs(response) = response else {
        panic!("an SQS invocation answers with batchItemFailures");
    };
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["m-bad"]);
    assert_eq!(report.written, 1);
    let json = serde_json::to_value(IngestResponse::Sqs(response)).unwrap();
    assert_eq!(
        json,
        json!({"batchItemFailures": [{"itemIdentifier": "m-bad"}]})
    );
}

#[tokio::test]
async fn a_store_failure_fails_the_invocation_and_names_the_table() {
    let world = AwsIngestWorld::new().await;
    let missing = unique("missing-table");
    let sdk = sdk_config().await;
    let broken = tally_ingest::Ingestor::new(
        tally_aws::state_table::DynamoStateStore::new(tally_aws::config::dynamodb(&sdk), &missing),
        tally_aws::bucket::S3ObjectStore::new(tally_aws::config::s3(&sdk)),
        IngestConfig::default(),
    );
    let uploaded = world.upload("counters/2015-11-16/i-1", "a 1").await;
    let error = broken
        .handle(&sns_event(&world.created_event(&uploaded)))
        .await
        .expect_err("the invocation must fail so Lambda retries it");
    let message = error.to_string();
    assert!(
        message.contains(&format!("GetItem on table {missing}")),
        "{message}"
    );
    assert!(message.contains("ResourceNotFoundException"), "{message}");
}

#[tokio::test]
async fn a_notification_as_the_server_itself_sends_it_through_sns_and_sqs_is_ingested() {
    // S3 -> SNS -> SQS wired on the server; the queued message is handed to
    // the handler exactly as received. The server's notifications have no
    // sequencer, userIdentity or requestParameters.
    let world = AwsIngestWorld::new().await;
    let sdk = sdk_config().await;
    let sns = aws_sdk_sns::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let topic = tally_aws::topic::create_topic(&sns, &unique("uploads"))
        .await
        .unwrap();
    let queue = tally_aws::queue::Queue::create(&sqs, &unique("ingest"), 30)
        .await
        .unwrap();
    queue.subscribe_to(&sns, &topic).await.unwrap();
    let queue_url = queue.url().to_owned();
    tally_aws::bucket::notify_topic(&world.s3, &world.bucket, &topic, "counters/")
        .await
        .unwrap();

    let key = "counters/2015-11-16/web 1+ä";
    world.upload(key, "requests 5\nbids-won 2\n").await;
    let event = receive_as_lambda_event(&sqs, &queue_url).await;
    // The event has the shape of AWS's documented sample, field for field.
    let sample = tally_tests::aws_sample("sqs-receive-message");
    let fields = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let (ours, theirs) = (&event["Records"][0], &sample["Records"][0]);
    assert_eq!(fields(ours), fields(theirs));
    assert_eq!(fields(&ours["attributes"]), fields(&theirs["attributes"]));
    assert_eq!(ours["eventSource"], "aws:sqs");
    assert_eq!(
        ours["eventSourceARN"].as_str().unwrap().split(':').nth(2),
        Some("sqs")
    );
    let (_, report) = world.ingestor.handle(&event).await.unwrap();
    assert_eq!(report.written, 1, "{report:?}");
    let state = world.state("2015-11-16", "web 1+ä").await.unwrap();
    assert_eq!(
        live_counters(&state),
        &counters(&[("requests", 5), ("bids-won", 2)])
    );

    world.delete(key).await;
    let event = receive_as_lambda_event(&sqs, &queue_url).await;
    let (_, report) = world.ingestor.handle(&event).await.unwrap();
    assert_eq!(report.written, 1, "{report:?}");
    assert_eq!(
        world.state("2015-11-16", "web 1+ä").await.unwrap().content,
        Content::Deleted
    );
}

/// Receives the queue's messages and wraps them as Lambda's SQS event
/// source would, with the same code `tally dev pump` uses.
async fn receive_as_lambda_event(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Value {
    let queue = tally_aws::queue::Queue::open(sqs, queue_url).await.unwrap();
    for _ in 0..20 {
        let messages = queue.receive(10, 1).await.unwrap();
        if messages.is_empty() {
            continue;
        }
        let handles: Vec<String> = messages
            .iter()
            .map(|m| m.receipt_handle.clone().unwrap())
            .collect();
        queue.delete(&handles).await.unwrap();
        return queue.lambda_event(&messages);
    }
    panic!("no notification reached the queue");
}

#[tokio::test]
async fn a_redelivered_event_finishes_the_check_its_crashed_delivery_never_ran() {
    // As in the A, B, A test, but the delivery of B crashes right after its
    // write, before the check. Lambda redelivers it; the redelivery finds
    // its own write and runs the check, which restores A.
    let (world, b) = a_b_a_with_b_undelivered().await;

    // Three operations succeed (read state, read object, write); the check's HEAD crashes.
    let (state, objects) = tally_tests::faults::crashing(
        world.store.clone(),
        tally_aws::bucket::S3ObjectStore::new(world.s3.clone()),
        3,
        false,
    );
    let crashing = tally_ingest::Ingestor::new(state, objects, IngestConfig::default());
    let error = crashing
        .handle(&world.created_event(&b))
        .await
        .expect_err("the crash fails the invocation");
    assert!(error.to_string().contains("injected crash"), "{error}");
    let written = world.state("2015-11-16", "i-1").await.unwrap();
    assert_eq!(
        live_counters(&written),
        &counters(&[("a", 2)]),
        "B landed before the crash"
    );

    deliver_b_and_expect_a_restored(&world, &b).await;
}

#[tokio::test]
async fn a_sample_round_costs_one_write_per_changed_upload_and_none_for_repeats() {
    // The per-counter design's sample workload: 100 instances × 100 counters, one direct S3 event
    // per round carrying every record. Write units come from the items'
    // sizes by DynamoDB's rules (the server's own figures are not real).
    let world = AwsIngestWorld::new().await;
    let mut values: Vec<Vec<i64>> = (0..100)
        .map(|i| (0..100).map(|c| 1_000 + i * 100 + c).collect())
        .collect();
    let body = |values: &[i64]| -> String {
        values
            .iter()
            .enumerate()
            .map(|(c, v)| format!("COUNTER{} {v}\n", c + 1))
            .collect()
    };
    let mut figures = Vec::new();
    for (round, changed) in [
        ("first upload", 0),
        ("identical re-upload", 0),
        ("10% of counters changed", 10),
    ] {
        let mut records = Vec::new();
        for (i, instance_values) in values.iter_mut().enumerate() {
            for value in instance_values.iter_mut().take(changed) {
                *value += 1;
            }
            let uploaded = world
                .upload(
                    &format!("counters/2015-11-16/i-{i:03}"),
                    body(instance_values),
                )
                .await;
            records.push(world.created_event(&uploaded)["Records"][0].clone());
        }
        let (_, report) = world
            .ingestor
            .handle(&json!({ "Records": records }))
            .await
            .unwrap();
        println!(
            "sample round, {round}: {} writes, {} write units, {} read units",
            report.capacity.writes, report.capacity.write_units, report.capacity.read_units
        );
        figures.push((report.capacity.writes, report.capacity.write_units));
    }
    // 100 writes of a ~1.7 KB item (2 units each), then none, then 100 again.
    assert_eq!(figures, [(100, 200), (0, 0), (100, 200)]);
}
