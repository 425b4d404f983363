//! The aggregate stage over the AWS adapters, wired exactly as the Lambda
//! runs it. The Lambda's `main`, `tally invoke aggregate`, `tally reconcile`
//! and `tally dev pump` all build it here, from the same settings; the
//! Lambda's scheduled reconcile also reads the state table.

use tally_aws::config::SdkConfig;
use tally_aws::state_table::DynamoStateStore;
use tally_aws::totals_tables::DynamoTotalsStore;

use crate::Aggregator;
use crate::settings::Settings;

/// The aggregate stage over DynamoDB.
pub type AwsAggregator = Aggregator<DynamoTotalsStore>;

/// The aggregate stage over the partials and totals tables `settings` names.
pub fn aggregator(sdk: &SdkConfig, settings: &Settings) -> AwsAggregator {
    Aggregator::new(DynamoTotalsStore::new(
        tally_aws::config::dynamodb(sdk),
        &settings.partials_table,
        &settings.totals_table,
    ))
}

/// The state table the scheduled reconcile reads, if `settings` names one.
pub fn states(sdk: &SdkConfig, settings: &Settings) -> Option<DynamoStateStore> {
    settings
        .state_table
        .as_ref()
        .map(|table| DynamoStateStore::new(tally_aws::config::dynamodb(sdk), table))
}
