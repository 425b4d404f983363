//! Prints what the aggregate stage writes for the sample workload of
//! the per-counter design tally replaces, against
//! an AWS API server on loopback:
//!
//!     scripts/with-moto cargo run -p tally-tests --example sample_workload_costs
//!
//! Write and read units are computed from item sizes by DynamoDB's rules.

use tally_tests::sample_workload::run_sample_rounds;
use tally_tests::world::AwsPipelineWorld;

#[tokio::main]
async fn main() {
    println!(
        "batch | round        | batches | partial writes | total writes | write units | read units"
    );
    for batch in [10, 100] {
        let mut world = AwsPipelineWorld::new(false).await;
        let rounds = run_sample_rounds(&mut world, batch, &[100, 10, 50, 100]).await;
        for (name, cost) in ["first upload", "10% changed", "50% changed", "100% changed"]
            .iter()
            .zip(rounds)
        {
            println!(
                "{batch:>5} | {name:<12} | {:>7} | {:>14} | {:>12} | {:>11} | {:>10}",
                cost.batches,
                cost.partial_writes,
                cost.total_writes,
                cost.write_units,
                cost.read_units
            );
        }
    }
}
