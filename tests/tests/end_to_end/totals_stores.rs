//! The two stores of the aggregate stage's tables agree: DynamoDB (through
//! the AWS API server) and SQLite answer the same sequence of partial and
//! total writes, conflicts included, the same way, so the version and basis
//! conditions written as condition expressions and the ones checked in a
//! transaction are the same rules.

use std::collections::BTreeSet;

use tally_aws::totals_tables::{DynamoTotalsStore, create_partials_table, create_totals_table};
use tally_core::aggregate::{Basis, Exact, PartialItem, SequenceNumber, TotalItem};
use tally_core::key::Date;
use tally_core::ports::{PutOutcome, TotalsStore};
use tally_embedded::database::Database;
use tally_tests::{sdk_config, unique};

/// What one step saw: a write's outcome, or what a read returned.
#[derive(Debug, PartialEq)]
enum Seen {
    Put(PutOutcome),
    Partial(Option<PartialItem>),
    Partials(Vec<PartialItem>),
    Totals(Vec<TotalItem>),
}

fn date(text: &str) -> Date {
    Date::parse(text).unwrap()
}

/// A partial item of `bucket` at `version`, with awkward counter names.
fn partial(day: &str, bucket: u64, version: u64, requests: i128) -> PartialItem {
    PartialItem {
        sums: [
            ("requests".to_owned(), Exact(requests)),
            ("#a :v".to_owned(), Exact(i128::from(i64::MAX) * 3)),
        ]
        .into(),
        contributors: [("requests".to_owned(), 2), ("#a :v".to_owned(), 3)].into(),
        version,
        applied_through: SequenceNumber::parse(&(100 + version).to_string()).unwrap(),
        ..PartialItem::empty(&date(day), bucket)
    }
}

fn total(day: &str, counter: &str, value: Option<i128>, basis: &[u64]) -> TotalItem {
    TotalItem {
        counter: counter.to_owned(),
        date: date(day),
        value: value.map(Exact),
        contributors: if value.is_some() { 2 } else { 0 },
        basis: Basis(basis.to_vec()),
    }
}

/// The totals sorted by counter, their bases left out: the day's listing
/// (DynamoDB's `ByDate` index) does not project them.
fn listed(mut totals: Vec<TotalItem>) -> Vec<TotalItem> {
    totals.sort_by(|a, b| a.counter.cmp(&b.counter));
    for total in &mut totals {
        total.basis = Basis::none();
    }
    totals
}

async fn run(store: &impl TotalsStore) -> Vec<Seen> {
    const DAY: &str = "2015-11-16";
    let day = date(DAY);
    let mut seen = Vec::new();
    let put = |outcome: Result<PutOutcome, _>| Seen::Put(outcome.expect("a store call"));

    // Partials: a compare-and-swap on the version, 0 meaning "absent".
    seen.push(Seen::Partial(store.partial(&day, 7).await.unwrap()));
    seen.push(put(store.put_partial(&partial(DAY, 7, 1, 10), 0).await));
    seen.push(put(store.put_partial(&partial(DAY, 7, 1, 11), 0).await));
    seen.push(put(store.put_partial(&partial(DAY, 7, 2, 12), 1).await));
    seen.push(put(store.put_partial(&partial(DAY, 7, 3, 13), 1).await));
    seen.push(put(store.put_partial(&partial(DAY, 7, 3, 13), 5).await));
    seen.push(put(store.put_partial(&partial(DAY, 63, 1, -4), 0).await));
    seen.push(put(store
        .put_partial(&partial("2015-11-17", 7, 1, 1), 0)
        .await));
    seen.push(Seen::Partial(store.partial(&day, 7).await.unwrap()));
    let mut partials = store.partials(&day).await.unwrap();
    partials.sort_by_key(|p| p.bucket);
    seen.push(Seen::Partials(partials));
    let mut isolated = store.partials_isolated(&day).await.unwrap();
    isolated.sort_by_key(|p| p.bucket);
    seen.push(Seen::Partials(isolated));

    // Totals: a compare-and-swap on the basis, `None` meaning "absent".
    let counters: BTreeSet<String> = ["requests", "#a :v", "errors"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let read = |totals: std::collections::BTreeMap<String, TotalItem>| {
        Seen::Totals(totals.into_values().collect())
    };
    seen.push(read(store.totals_of(&day, &counters).await.unwrap()));
    let first = total(DAY, "requests", Some(10), &[0, 1]);
    seen.push(put(store.put_total(&first, None).await));
    seen.push(put(store.put_total(&first, None).await));
    let second = total(DAY, "requests", Some(12), &[0, 2]);
    seen.push(put(store.put_total(&second, Some(&first.basis)).await));
    // A writer that computed against the first basis is refused.
    let stale = total(DAY, "requests", Some(11), &[1, 1]);
    seen.push(put(store.put_total(&stale, Some(&first.basis)).await));
    seen.push(put(store.put_total(&stale, None).await));
    // Removed: no value, no contributors, still a row with its basis.
    let removed = total(DAY, "requests", None, &[0, 3]);
    seen.push(put(store.put_total(&removed, Some(&second.basis)).await));
    let awkward = total(DAY, "#a :v", Some(i128::from(i64::MAX) * 3), &[0, 2]);
    seen.push(put(store.put_total(&awkward, None).await));
    let tomorrow = total("2015-11-17", "requests", Some(1), &[1]);
    seen.push(put(store.put_total(&tomorrow, None).await));
    seen.push(read(store.totals_of(&day, &counters).await.unwrap()));
    seen.push(Seen::Totals(listed(store.totals(&day).await.unwrap())));
    seen.push(Seen::Totals(listed(
        store.totals(&date("2015-11-15")).await.unwrap(),
    )));
    seen
}

#[tokio::test]
async fn dynamodb_and_sqlite_apply_the_same_version_and_basis_conditions() {
    let sdk = sdk_config().await;
    let client = tally_aws::config::dynamodb(&sdk);
    let (partials, totals) = (unique("partials"), unique("totals"));
    create_partials_table(&client, &partials)
        .await
        .expect("create the partials table");
    create_totals_table(&client, &totals)
        .await
        .expect("create the totals table");
    let dynamodb = run(&DynamoTotalsStore::new(client, &partials, &totals)).await;

    let sqlite = run(&Database::open(":memory:").unwrap().totals()).await;

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
            Yes, No, Yes, No, No, Yes, Yes, Yes, No, Yes, No, No, Yes, Yes, Yes
        ]
    );
}
