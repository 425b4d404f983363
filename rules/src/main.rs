//! The `rules` Lambda: clients built once, the handler borrowed into the
//! runtime. A stream batch or a tick of the schedule goes to the stage
//! ([`tally_rules::invocation`]); its metrics line goes to the log.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use tally_rules::settings::Settings;
use tally_rules::wiring;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env()?;
    let sdk = tally_aws::config::load().await;
    let stage = wiring::stage(&sdk, &settings);
    let source = wiring::rule_source(&sdk, &settings);
    let states = wiring::state_store(&sdk, &settings);
    let uploads = states
        .as_ref()
        .map(|states| wiring::uploads(&settings, states));
    let (stage, source, uploads) = (&stage, &source, &uploads);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let rules = source.current().await;
        let handled = stage
            .invoke(&rules, event.payload, uploads.as_ref())
            .await?;
        handled.emit();
        Ok::<_, Error>(handled.into_response()?)
    }))
    .await
}
