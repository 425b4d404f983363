//! The `rules` Lambda: clients built once, the handler borrowed into the runtime.

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use tally_rules::settings::Settings;
use tally_rules::wiring;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env()?;
    let sdk = tally_aws::config::load().await;
    let stage = wiring::stage(&sdk, &settings);
    let source = wiring::rule_source(&sdk, &settings);
    let (stage, source) = (&stage, &source);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        let rules = source.current().await;
        let (response, report) = stage.handle(&rules, &event.payload).await;
        tally_aws::metrics::emit(tally_aws::metrics::Stage::Rules, &report);
        Ok::<_, Error>(response)
    }))
    .await
}
