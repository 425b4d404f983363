//! The `aggregate` Lambda: clients built once, the handler borrowed into the runtime.

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use tally_aggregate::settings::Settings;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env()?;
    let sdk = tally_aws::config::load().await;
    let aggregator = tally_aggregate::wiring::aggregator(&sdk, &settings);
    let aggregator = &aggregator;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        let (response, report) = aggregator.handle(&event.payload).await;
        tally_aws::metrics::emit(tally_aws::metrics::Stage::Aggregate, &report);
        Ok::<_, Error>(response)
    }))
    .await
}
