//! The two alert stores agree: DynamoDB (through the AWS API server) and
//! SQLite answer the same sequence of claims and record writes the same
//! way, so the mark and version conditions written as condition expressions
//! and transactions and the ones checked in a SQLite transaction are the
//! same rules. Records come from core's own decisions, so the stores hold
//! what the rules stage would write: a firing alert's outbox, the lease on
//! it while it is published, its clearing, a resolution.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use tally_aws::alerts_table::{DynamoAlertStore, create_alerts_table};
use tally_core::key::Date;
use tally_core::ports::{AlertStore, PutOutcome};
use tally_core::rules::RuleSet;
use tally_core::rules::alert::{AlertRecord, Trigger, decide};
use tally_embedded::database::Database;
use tally_tests::{sdk_config, unique};

const DATE: &str = "2015-11-16";

/// One limit on every counter, so any counter name makes its own alert.
const RULES: &str = "rules:
  - name: too-high
    match: '*'
    max: 100
    severity: critical
";

fn date(text: &str) -> Date {
    Date::parse(text).unwrap()
}

/// 2015-11-16T10:00:00Z plus some minutes.
fn at(minute: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_447_668_000 + minute * 60, 0).unwrap()
}

/// The record one evaluation of one counter's total decides.
fn decide_one(
    day: &str,
    counter: &str,
    total: i128,
    read: Option<&AlertRecord>,
    generation: u64,
) -> AlertRecord {
    let rules = RuleSet::load(&[("rules.yaml", RULES)]).unwrap();
    let totals: BTreeMap<String, i128> = [(counter.to_owned(), total)].into();
    let changed: BTreeSet<String> = totals.keys().cloned().collect();
    let records: BTreeMap<String, AlertRecord> = read
        .map(|r| (r.alert.clone(), r.clone()))
        .into_iter()
        .collect();
    let mut decisions = decide(
        &rules,
        &date(day),
        &totals,
        Trigger::Changed(&changed),
        &records,
        generation,
        at(generation as i64),
    );
    assert!(decisions.errors.is_empty(), "{:?}", decisions.errors);
    assert_eq!(decisions.writes.len(), 1, "{:?}", decisions.writes);
    decisions.writes.remove(0)
}

/// `record` rewritten as the rules stage rewrites it around a publish:
/// leased to `by` until `until`, or (with `None`) published and cleared.
fn leased(record: &AlertRecord, lease: Option<(&str, i64)>) -> AlertRecord {
    let mut next = record.clone();
    next.version += 1;
    match lease {
        Some((by, until)) => {
            next.claimed_by = Some(by.to_owned());
            next.claimed_until = Some(at(until));
        }
        None => {
            next.outbox = None;
            next.claimed_by = None;
            next.claimed_until = None;
        }
    }
    next
}

/// What one step saw: a write's outcome, a mark, or a day's records.
#[derive(Debug, PartialEq)]
enum Seen {
    Put(PutOutcome),
    Mark(u64),
    Alerts(Vec<AlertRecord>),
}

async fn alerts(store: &impl AlertStore, day: &str) -> Seen {
    let mut records = store.alerts(&date(day)).await.expect("a store read");
    records.sort_by(|a, b| a.alert.cmp(&b.alert));
    Seen::Alerts(records)
}

async fn run(store: &impl AlertStore) -> Vec<Seen> {
    let day = date(DATE);
    let mut seen = Vec::new();
    let put = |outcome: Result<PutOutcome, _>| Seen::Put(outcome.expect("a store call"));

    // The mark: raised, never lowered, an equal claim accepted.
    seen.push(Seen::Mark(store.mark(&day).await.unwrap()));
    seen.push(put(store.claim(&day, 5).await));
    seen.push(put(store.claim(&day, 4).await));
    seen.push(put(store.claim(&day, 5).await));
    seen.push(Seen::Mark(store.mark(&day).await.unwrap()));

    // Firing, with a message in the outbox: created once, under the mark.
    let firing = decide_one(DATE, "#a :v", 150, None, 5);
    assert!(firing.outbox.is_some());
    seen.push(put(store.put_alert(&firing, 0, Some(5)).await));
    seen.push(put(store.put_alert(&firing, 0, Some(5)).await));
    seen.push(put(store.put_alert(&firing, 0, None).await));

    // The publisher's lease, then the cleared outbox; a second lease on
    // the version it read is refused.
    let lease = leased(&firing, Some(("evaluation-1", 10)));
    seen.push(put(store.put_alert(&lease, firing.version, None).await));
    let rival = leased(&firing, Some(("evaluation-2", 11)));
    seen.push(put(store.put_alert(&rival, firing.version, None).await));
    let cleared = leased(&lease, None);
    seen.push(put(store.put_alert(&cleared, lease.version, None).await));
    seen.push(alerts(store, DATE).await);

    // A newer evaluation claims 6: a write under 5 is refused even at the
    // right version, and one at a stale version under 6 too.
    seen.push(put(store.claim(&day, 6).await));
    let resolved = decide_one(DATE, "#a :v", 50, Some(&cleared), 6);
    seen.push(put(store
        .put_alert(&resolved, cleared.version, Some(5))
        .await));
    seen.push(put(store
        .put_alert(&resolved, firing.version, Some(6))
        .await));
    seen.push(put(store
        .put_alert(&resolved, cleared.version, Some(6))
        .await));

    // Mark 0 holds only on a day without one.
    let other = "2015-11-17";
    let elsewhere = decide_one(other, "requests", 101, None, 1);
    seen.push(put(store.put_alert(&elsewhere, 0, Some(0)).await));
    seen.push(put(store.claim(&date(other), 1).await));
    let next = decide_one(other, "requests", 5, Some(&elsewhere), 2);
    seen.push(put(store
        .put_alert(&next, elsewhere.version, Some(0))
        .await));

    seen.push(alerts(store, DATE).await);
    seen.push(alerts(store, other).await);
    seen.push(alerts(store, "2015-11-15").await);
    seen.push(Seen::Mark(store.mark(&date(other)).await.unwrap()));
    seen
}

#[tokio::test]
async fn dynamodb_and_sqlite_apply_the_same_mark_and_version_conditions() {
    let sdk = sdk_config().await;
    let client = tally_aws::config::dynamodb(&sdk);
    let table = unique("alerts");
    create_alerts_table(&client, &table)
        .await
        .expect("create the alerts table");
    let dynamodb = run(&DynamoAlertStore::new(client, table)).await;

    let sqlite = run(&Database::open(":memory:").unwrap().alerts()).await;

    assert_eq!(dynamodb, sqlite);
    let outcomes: Vec<PutOutcome> = dynamodb
        .iter()
        .filter_map(|seen| match seen {
            Seen::Put(outcome) => Some(*outcome),
            _ => None,
        })
        .collect();
    use PutOutcome::{PreconditionFailed as No, Written as Yes};
    assert_eq!(
        outcomes,
        [
            Yes, No, Yes, Yes, No, No, Yes, No, Yes, Yes, No, No, Yes, Yes, Yes, No
        ]
    );
}
