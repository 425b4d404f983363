//! The `ingest` Lambda: clients built once, the handler borrowed into the runtime.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use tally_ingest::IngestResponse;
use tally_ingest::settings::Settings;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env()?;
    let sdk = tally_aws::config::load().await;
    let ingestor = tally_ingest::wiring::ingestor(&sdk, settings);
    let ingestor = &ingestor;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let (response, report): (IngestResponse, _) = ingestor.handle(&event.payload).await?;
        tally_aws::metrics::emit(tally_aws::metrics::Stage::Ingest, &report);
        Ok::<_, Error>(response)
    }))
    .await
}
