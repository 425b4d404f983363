//! The `aggregate` Lambda: clients built once, the handler borrowed into the
//! runtime. A stream batch goes to the stage; the scheduler's reconcile
//! request to [`tally_aggregate::scheduled`].

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use tally_aggregate::scheduled::{Invocation, SETTLE, decode_invocation, run_reconcile};
use tally_aggregate::settings::Settings;
use tally_aws::metrics::{Stage, emit};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env()?;
    let sdk = tally_aws::config::load().await;
    let aggregator = tally_aggregate::wiring::aggregator(&sdk, &settings);
    let states = tally_aggregate::wiring::states(&sdk, &settings);
    let (aggregator, states) = (&aggregator, &states);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        match decode_invocation(event.payload)? {
            Invocation::Stream(batch) => {
                let (response, report) = aggregator.handle(&batch).await;
                emit(Stage::Aggregate, &report);
                Ok::<_, Error>(serde_json::to_value(response)?)
            }
            Invocation::Reconcile(request) => {
                let states = states.as_ref().ok_or(
                    "a reconcile request needs the state table: set TALLY_STATE_TABLE on the function",
                )?;
                let report = run_reconcile(states, aggregator, &request, chrono::Utc::now(), || {
                    tokio::time::sleep(SETTLE)
                })
                .await?;
                tracing::info!(report = %serde_json::to_string(&report)?, "scheduled reconcile");
                emit(Stage::Reconcile, &report);
                Ok(serde_json::to_value(report)?)
            }
        }
    }))
    .await
}
