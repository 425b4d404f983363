//! The `ingest` Lambda: clients built once, the handler borrowed into the runtime.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use tally_aws::bucket::S3ObjectStore;
use tally_aws::state_table::DynamoStateStore;
use tally_ingest::settings::Settings;
use tally_ingest::{IngestResponse, Ingestor};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env()?;
    let sdk = tally_aws::config::load().await;
    let ingestor = Ingestor::new(
        DynamoStateStore::new(tally_aws::config::dynamodb(&sdk), settings.state_table),
        S3ObjectStore::new(tally_aws::config::s3(&sdk)),
        settings.ingest,
    );
    let ingestor = &ingestor;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let (response, _report): (IngestResponse, _) = ingestor.handle(&event.payload).await?;
        Ok::<_, Error>(response)
    }))
    .await
}
