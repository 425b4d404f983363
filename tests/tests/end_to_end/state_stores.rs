//! The two state stores agree: DynamoDB (through the AWS API server) and
//! SQLite answer the same sequence of conditional writes the same way, so
//! the precondition rule stated as a condition expression and the one
//! checked in a transaction are the same rule.

use tally_aws::state_table::{DynamoStateStore, create_state_table};
use tally_core::key::{Date, UploadKey};
use tally_core::ordering::OrderingKey;
use tally_core::ports::{Precondition, PutOutcome, StateStore};
use tally_core::state::{Content, InstanceState};
use tally_embedded::state_table::SqliteStateStore;
use tally_tests::{sdk_config, unique};

fn state(ordering: OrderingKey, etag: Option<&str>) -> InstanceState {
    InstanceState {
        key: UploadKey {
            date: Date::parse("2015-11-16").unwrap(),
            instance: "web 1+ä".into(),
        },
        object_key: "counters/2015-11-16/web 1+ä".into(),
        ordering,
        content: match etag {
            Some(etag) => Content::Live {
                counters: [("#a".to_owned(), 1), (":v".to_owned(), -2)].into(),
                etag: etag.into(),
                version_id: None,
            },
            None => Content::Deleted,
        },
    }
}

async fn run(store: &impl StateStore) -> Vec<(PutOutcome, Option<InstanceState>)> {
    let seq = |s: &str| OrderingKey::from_sequencer(s).unwrap();
    let time = |t: i64| OrderingKey::from_event_time_millis(t).unwrap();
    let replaces = |o: OrderingKey, etag: Option<&str>| Precondition::Replaces {
        ordering: o,
        etag: etag.map(str::to_owned),
    };
    let steps: Vec<(InstanceState, Precondition)> = vec![
        // Nothing stored: Replaces fails, Supersedes lands.
        (state(seq("5"), Some("a")), replaces(seq("5"), Some("a"))),
        (state(seq("5"), Some("a")), Precondition::Supersedes),
        // The same sequencer again, and an older one: refused.
        (state(seq("5"), Some("b")), Precondition::Supersedes),
        (state(seq("4"), Some("b")), Precondition::Supersedes),
        // A longer sequencer is newer.
        (state(seq("0A"), None), Precondition::Supersedes),
        // Replacing exactly the stored tombstone; then a stale Replaces.
        (state(seq("0A"), Some("c")), replaces(seq("0A"), None)),
        (state(seq("0A"), Some("d")), replaces(seq("0A"), Some("x"))),
        (state(seq("0A"), Some("d")), replaces(seq("0A"), Some("c"))),
        // Time keys sort after sequencers, and equal times replace.
        (state(time(100), Some("e")), Precondition::Supersedes),
        (state(time(100), Some("f")), Precondition::Supersedes),
        (state(time(99), Some("g")), Precondition::Supersedes),
        (state(seq("FF"), Some("h")), Precondition::Supersedes),
    ];
    let mut seen = Vec::new();
    for (new, precondition) in steps {
        let outcome = store.put(&new, &precondition).await.expect("a store call");
        seen.push((outcome, store.get(&new.key).await.expect("a store read")));
    }
    seen
}

#[tokio::test]
async fn dynamodb_and_sqlite_apply_the_same_preconditions() {
    let sdk = sdk_config().await;
    let client = tally_aws::config::dynamodb(&sdk);
    let table = unique("state");
    create_state_table(&client, &table)
        .await
        .expect("create the table");
    let dynamodb = run(&DynamoStateStore::new(client, &table)).await;

    let dir = tempfile::tempdir().unwrap();
    let sqlite = run(&SqliteStateStore::open(dir.path().join("state.sqlite")).unwrap()).await;

    assert_eq!(dynamodb, sqlite);
    let outcomes: Vec<PutOutcome> = dynamodb.iter().map(|(o, _)| *o).collect();
    use PutOutcome::{PreconditionFailed as No, Written as Yes};
    assert_eq!(
        outcomes,
        [No, Yes, No, No, Yes, Yes, No, Yes, Yes, Yes, No, No]
    );
}
