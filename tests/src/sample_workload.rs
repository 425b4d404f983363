//! The sample workload of the per-counter design tally replaces, driven
//! through ingest and aggregate, with what each round costs: 100 instances
//! × 100 counters; after a first round, rounds in
//! which the first N% of the counters move on every instance.

use crate::streams::lambda_event;
use crate::world::AwsPipelineWorld;

/// What one round cost the aggregate stage, summed over its batches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundCost {
    pub changed_counters: u64,
    pub batches: u64,
    pub partial_writes: u64,
    pub total_writes: u64,
    pub write_units: u64,
    pub read_units: u64,
}

/// Runs one round per entry of `changed_percent` (the first is the first
/// upload whatever it says), delivering the state stream in batches of `batch`.
pub async fn run_sample_rounds(
    world: &mut AwsPipelineWorld,
    batch: usize,
    changed_percent: &[usize],
) -> Vec<RoundCost> {
    let mut values: Vec<Vec<i64>> = (0..100)
        .map(|i| (0..100).map(|c| 1_000 * i + c).collect())
        .collect();
    let mut costs = Vec::new();
    for (round, &percent) in changed_percent.iter().enumerate() {
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
            let uploaded = world
                .ingest
                .upload(&format!("counters/2015-11-16/i-{i:03}"), body)
                .await;
            world
                .ingest
                .ingestor
                .handle(&world.ingest.created_event(&uploaded))
                .await
                .expect("ingested");
        }
        let records = world.stream.read_new().await;
        let mut cost = RoundCost {
            changed_counters: if round == 0 { 100 } else { percent as u64 },
            ..RoundCost::default()
        };
        for chunk in records.chunks(batch) {
            let (response, report) = world.aggregator.handle(&lambda_event(chunk)).await;
            assert!(response.batch_item_failures.is_empty(), "{report:?}");
            cost.batches += 1;
            cost.partial_writes += report.partial_writes;
            cost.total_writes += report.total_writes;
            cost.write_units += report.write_units;
            cost.read_units += report.read_units;
        }
        costs.push(cost);
    }
    costs
}
