//! A batch that fails in one (date, bucket) group and succeeds in the
//! others, redelivered as Lambda does (from the lowest reported record on)
//! and as the embedded runtime does (from its checkpoint): every group is
//! then folded in exactly once, over the SQLite tables, with no server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tally_aggregate::Aggregator;
use tally_core::aggregate::{SequenceNumber, StateChange};
use tally_core::key::Date;
use tally_core::ports::TotalsStore;
use tally_core::state::bucket_of;
use tally_embedded::database::Database;
use tally_testkit::faults::{FailingPart, Part};

const DATE: &str = "2015-11-16";

fn body(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect()
}

fn change(
    sequence: u64,
    instance: &str,
    old: BTreeMap<String, i64>,
    new: BTreeMap<String, i64>,
) -> StateChange {
    StateChange {
        sequence: SequenceNumber::parse(&sequence.to_string()).unwrap(),
        date: Date::parse(DATE).unwrap(),
        bucket: bucket_of(instance),
        instance: instance.to_owned(),
        was_live: !old.is_empty(),
        is_live: !new.is_empty(),
        old,
        new,
    }
}

/// Two instances whose states live in different buckets.
fn instances_in_two_buckets() -> (String, String) {
    let first = "i-0".to_owned();
    let second = (1..)
        .map(|n| format!("i-{n}"))
        .find(|name| bucket_of(name) != bucket_of(&first))
        .unwrap();
    (first, second)
}

async fn live_totals<T: TotalsStore>(store: &T) -> BTreeMap<String, i128> {
    store
        .totals(&Date::parse(DATE).unwrap())
        .await
        .unwrap()
        .into_iter()
        .filter_map(|t| t.value.map(|v| (t.counter, v.0)))
        .collect()
}

#[tokio::test]
async fn a_net_zero_group_then_a_failure_in_another_group_redelivers_its_tail_exactly() {
    let db = Database::open(":memory:").unwrap();
    let (i, j) = instances_in_two_buckets();
    let failing = Arc::new(AtomicBool::new(false));
    // Throttling on j's group alone, its writes lost, while the switch is on.
    let j_group = Part::Partial {
        date: Date::parse(DATE).unwrap(),
        bucket: bucket_of(&j),
    };
    let store = FailingPart::new(db.totals(), j_group, false).while_set(failing.clone());
    let aggregator = Aggregator::new(store);
    let a = body(&[("requests", 10)]);
    let b = body(&[("requests", 3)]);
    let j_body = body(&[("requests", 100)]);

    let (_, failures) = aggregator
        .apply(&[change(9, &i, BTreeMap::new(), a.clone())])
        .await;
    assert!(failures.is_empty());

    // r10: i goes A → B; r11: j, in another bucket, fails; r12: i goes back
    // B → A. Bucket i's group nets to zero.
    let batch = [
        change(10, &i, a.clone(), b.clone()),
        change(11, &j, BTreeMap::new(), j_body.clone()),
        change(12, &i, b.clone(), a.clone()),
    ];
    failing.store(true, Ordering::SeqCst);
    let (_, failures) = aggregator.apply(&batch).await;
    let lowest = failures.iter().map(|f| f.from.clone()).min();
    assert_eq!(
        lowest.as_ref().map(|s| s.to_string()),
        Some("11".to_owned())
    );

    // Redelivered from the reported record on, the failure gone.
    failing.store(false, Ordering::SeqCst);
    let (_, failures) = aggregator.apply(&batch[1..]).await;
    assert!(failures.is_empty());

    // The batch job: i holds A, j holds its body.
    assert_eq!(
        live_totals(aggregator.store()).await,
        [("requests".to_owned(), 110)].into()
    );
}
