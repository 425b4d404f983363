//! The ingest stage over the AWS adapters, wired exactly as the Lambda runs
//! it. The Lambda's `main`, `tally invoke ingest`, `tally backfill` and
//! `tally dev pump` all build it here, so a command run on a laptop reads
//! the same settings and talks to the same tables and bucket the same way.

use tally_aws::bucket::S3ObjectStore;
use tally_aws::config::SdkConfig;
use tally_aws::state_table::DynamoStateStore;

use crate::Ingestor;
use crate::settings::Settings;

/// Ingest over DynamoDB and S3.
pub type AwsIngestor = Ingestor<DynamoStateStore, S3ObjectStore>;

/// Ingest over the state table and S3 that `settings` and `sdk` name.
pub fn ingestor(sdk: &SdkConfig, settings: Settings) -> AwsIngestor {
    Ingestor::new(
        DynamoStateStore::new(tally_aws::config::dynamodb(sdk), settings.state_table),
        S3ObjectStore::new(tally_aws::config::s3(sdk)),
        settings.ingest,
    )
}
