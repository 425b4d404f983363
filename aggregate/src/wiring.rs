//! The aggregate stage over the AWS adapters, wired exactly as the Lambda
//! runs it. The Lambda's `main`, `tally invoke aggregate`, `tally reconcile`
//! and `tally dev pump` all build it here, from the same settings.

use tally_aws::config::SdkConfig;
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
