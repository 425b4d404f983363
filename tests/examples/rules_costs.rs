//! Prints what the rules stage costs for the sample workload of the
//! per-counter design tally replaces (100 instances × 100 counters, with the rules in `rules-config/`), against an AWS API
//! server on loopback:
//!
//!     scripts/with-moto cargo run -p tally-tests --example rules_costs
//!
//! Each round uploads every instance, runs the aggregate stage on the state
//! stream, then hands the totals stream to the rules stage in batches of
//! 100, as the deployment's event source mapping would. Units are computed
//! from item sizes by DynamoDB's rules.

use std::time::Instant;

use tally_tests::rules_world::RulesWorld;

#[tokio::main]
async fn main() {
    let mut world = RulesWorld::with_rules(tally_rules::bundled::rules()).await;
    let mut values: Vec<Vec<i64>> = (0..100)
        .map(|i| (0..100).map(|c| 1_000 * i + c).collect())
        .collect();
    println!(
        "round        | totals changed | batches | alerts checked | messages | snapshots | read units | write units | rules time"
    );
    for (round, percent) in [100usize, 10, 50, 100, 0].into_iter().enumerate() {
        for (i, instance) in values.iter_mut().enumerate() {
            if round > 0 {
                for value in instance.iter_mut().take(percent) {
                    *value += 1;
                }
            }
            let body: String = instance
                .iter()
                .enumerate()
                .map(|(c, v)| format!("COUNTER{} {v}\n", c + 1))
                .collect();
            world.upload(&format!("i-{i:03}"), &body).await;
        }
        let records = world.aggregate().await;
        let started = Instant::now();
        let (mut batches, mut checked, mut sent, mut snapshots, mut reads, mut writes) =
            (0, 0, 0, 0, 0, 0);
        for chunk in records.chunks(100) {
            let (response, report) = world.evaluate(chunk).await;
            assert!(response.batch_item_failures.is_empty(), "{report:?}");
            batches += 1;
            checked += report.alerts_checked;
            sent += report.messages_sent;
            snapshots += report.snapshots_written;
            reads += report.read_units;
            writes += report.write_units;
        }
        let name = match round {
            0 => "first upload".to_owned(),
            _ if percent == 0 => "identical".to_owned(),
            _ => format!("{percent}% changed"),
        };
        println!(
            "{name:<12} | {:>14} | {batches:>7} | {checked:>14} | {sent:>8} | {snapshots:>9} | {reads:>10} | {writes:>11} | {:>7.0?}",
            records.len(),
            started.elapsed()
        );
    }
}
