//! The rules stage over the AWS adapters, wired exactly as the Lambda runs
//! it. The Lambda's `main`, `tally invoke rules` and `tally dev pump` all
//! build it here, from the same settings: the same tables, topic, snapshot
//! place and rule source.

use tally_aws::alerts_table::DynamoAlertStore;
use tally_aws::bucket::S3ObjectStore;
use tally_aws::config::SdkConfig;
use tally_aws::state_table::DynamoStateStore;
use tally_aws::topic::SnsNotifier;
use tally_aws::totals_tables::DynamoTotalsStore;

use crate::settings::Settings;
use crate::stage::Uploads;
use crate::{RuleSource, RulesStage, StageConfig, bundled};

/// The rules stage over DynamoDB, SNS and S3.
pub type AwsStage = RulesStage<DynamoTotalsStore, DynamoAlertStore, SnsNotifier, S3ObjectStore>;

/// The rules stage over what `settings` names.
pub fn stage(sdk: &SdkConfig, settings: &Settings) -> AwsStage {
    let dynamodb = tally_aws::config::dynamodb(sdk);
    let mut config = StageConfig::new(&settings.snapshot_bucket);
    config.snapshot_prefix = settings.snapshot_prefix.clone();
    config.alert_days = settings.alert_days;
    RulesStage::new(
        DynamoTotalsStore::new(
            dynamodb.clone(),
            &settings.partials_table,
            &settings.totals_table,
        ),
        DynamoAlertStore::new(dynamodb, &settings.alerts_table),
        SnsNotifier::new(tally_aws::config::sns(sdk), &settings.alert_topic_arn),
        S3ObjectStore::new(tally_aws::config::s3(sdk)),
        config,
    )
}

/// The state table a tick reads tombstones from, for stale rules; `None`
/// when the settings name none.
pub fn state_store(sdk: &SdkConfig, settings: &Settings) -> Option<DynamoStateStore> {
    settings
        .state_table
        .as_ref()
        .map(|table| DynamoStateStore::new(tally_aws::config::dynamodb(sdk), table))
}

/// Where a tick lists the uploads, over `states`.
pub fn uploads<'a>(
    settings: &'a Settings,
    states: &'a DynamoStateStore,
) -> Uploads<'a, DynamoStateStore> {
    Uploads {
        states,
        bucket: &settings.uploads_bucket,
        prefix: &settings.counters_prefix,
    }
}

/// Where the rules come from: the bucket prefix `settings` names (the
/// bundled rules until it first loads), or the bundled rules.
pub fn rule_source(sdk: &SdkConfig, settings: &Settings) -> RuleSource<S3ObjectStore> {
    match &settings.rules_location {
        Some((bucket, prefix)) => RuleSource::from_bucket(
            S3ObjectStore::new(tally_aws::config::s3(sdk)),
            bucket,
            prefix,
            settings.rules_refresh,
            bundled::rules(),
        ),
        None => RuleSource::bundled(bundled::rules()),
    }
}
