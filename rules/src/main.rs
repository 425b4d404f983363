//! The `rules` Lambda: clients built once, the handler borrowed into the runtime.

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use tally_aws::alerts_table::DynamoAlertStore;
use tally_aws::bucket::S3ObjectStore;
use tally_aws::topic::SnsNotifier;
use tally_aws::totals_tables::DynamoTotalsStore;
use tally_rules::settings::Settings;
use tally_rules::{RuleSource, RulesStage, StageConfig, bundled};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env()?;
    let sdk = tally_aws::config::load().await;
    let dynamodb = tally_aws::config::dynamodb(&sdk);
    let s3 = S3ObjectStore::new(tally_aws::config::s3(&sdk));
    let mut config = StageConfig::new(&settings.snapshot_bucket);
    config.snapshot_prefix = settings.snapshot_prefix.clone();
    config.alert_days = settings.alert_days;
    let stage = RulesStage::new(
        DynamoTotalsStore::new(
            dynamodb.clone(),
            &settings.partials_table,
            &settings.totals_table,
        ),
        DynamoAlertStore::new(dynamodb, &settings.alerts_table),
        SnsNotifier::new(tally_aws::config::sns(&sdk), &settings.alert_topic_arn),
        s3.clone(),
        config,
    );
    let source = match &settings.rules_location {
        Some((bucket, prefix)) => {
            RuleSource::from_bucket(s3, bucket, prefix, settings.rules_refresh, bundled::rules())
        }
        None => RuleSource::bundled(bundled::rules()),
    };
    let (stage, source) = (&stage, &source);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        let rules = source.current().await;
        let (response, _report) = stage.handle(&rules, &event.payload).await;
        Ok::<_, Error>(response)
    }))
    .await
}
