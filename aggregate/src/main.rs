//! The `aggregate` Lambda: clients built once, the handler borrowed into the runtime.

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use tally_aggregate::Aggregator;
use tally_aws::totals_tables::DynamoTotalsStore;

/// Reads a required setting, saying what it is for when it is missing.
fn setting(name: &str, what: &str) -> Result<String, Error> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        _ => Err(format!("{name} is not set: it must name {what}").into()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let partials = setting("TALLY_PARTIALS_TABLE", "the partial items table")?;
    let totals = setting("TALLY_TOTALS_TABLE", "the totals table")?;
    let sdk = tally_aws::config::load().await;
    let aggregator = Aggregator::new(DynamoTotalsStore::new(
        tally_aws::config::dynamodb(&sdk),
        partials,
        totals,
    ));
    let aggregator = &aggregator;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        let (response, _report) = aggregator.handle(&event.payload).await;
        Ok::<_, Error>(response)
    }))
    .await
}
