//! Objects on S3: reading the counters the fleet uploads and listing a
//! key's versions ([`ObjectStore`]), and writing and listing the rules
//! stage's snapshots and rules files ([`ObjectWriter`]). One client serves
//! any bucket a call names.
//!
//! [`create_bucket`] and [`notify_topic`] set up a bucket like the
//! deployment's, for test servers and local tooling (`tally dev up`).

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, Event, FilterRule, FilterRuleName,
    NotificationConfiguration, NotificationConfigurationFilter, S3KeyFilter, TopicConfiguration,
};
use bytes::Bytes;
use tally_core::ports::{
    ListedObject, ObjectBody, ObjectLocation, ObjectMeta, ObjectStore, ObjectVersion, ObjectWriter,
    StoreError, normalize_etag,
};

use crate::store_error;

/// Objects in S3, through one client (any bucket the event names).
#[derive(Clone, Debug)]
pub struct S3ObjectStore {
    client: Client,
}

impl S3ObjectStore {
    /// Every object under `prefix`, as ListObjectsV2 describes it, in key
    /// order: all pages (1,000 keys a page, one request each). The port's
    /// listing and `tally backfill` both read the bucket through it.
    pub async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<aws_sdk_s3::types::Object>, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages
            .try_next()
            .await
            .map_err(|e| s3_error(format!("S3 ListObjectsV2 s3://{bucket}/{prefix}"), e))?
        {
            objects.extend(page.contents.unwrap_or_default());
        }
        Ok(objects)
    }

    pub fn new(client: Client) -> S3ObjectStore {
        S3ObjectStore { client }
    }
}

/// S3 answers 404 for a missing key or version (`NoSuchKey`, `NoSuchVersion`,
/// or a bodiless `NotFound` to HEAD): all mean "no such object".
fn is_not_found<E>(error: &SdkError<E, HttpResponse>) -> bool {
    error
        .raw_response()
        .is_some_and(|response| response.status().as_u16() == 404)
}

/// An S3 error with the hint a 403 needs: S3 answers 403, not 404, for a
/// missing key when the caller may not list the bucket.
fn s3_error<E>(operation: String, error: SdkError<E, HttpResponse>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let forbidden = error
        .raw_response()
        .is_some_and(|response| response.status().as_u16() == 403);
    let error = match error {
        SdkError::ServiceError(service) => store_error(operation, service.into_err()),
        other => StoreError::new(operation, DisplayErrorContext(other).to_string()),
    };
    if forbidden {
        StoreError::new(
            error.operation,
            format!(
                "{}; the function needs s3:GetObject and s3:GetObjectVersion on the objects, and s3:ListBucket (without it a missing key answers 403) and s3:ListBucketVersions on the bucket",
                error.source
            ),
        )
    } else {
        error
    }
}

impl ObjectStore for S3ObjectStore {
    async fn get(
        &self,
        location: &ObjectLocation,
        max_bytes: u64,
    ) -> Result<Option<(ObjectMeta, ObjectBody)>, StoreError> {
        let operation = || {
            format!(
                "S3 GetObject s3://{}/{}{}",
                location.bucket,
                location.key,
                location
                    .version_id
                    .as_deref()
                    .map(|v| format!(" version {v}"))
                    .unwrap_or_default()
            )
        };
        let output = match self
            .client
            .get_object()
            .bucket(&location.bucket)
            .key(&location.key)
            .set_version_id(location.version_id.clone())
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(s3_error(operation(), e)),
        };
        let size = output.content_length.unwrap_or(0).max(0) as u64;
        let meta = ObjectMeta {
            etag: normalize_etag(output.e_tag.as_deref().unwrap_or_default()),
            version_id: output.version_id.clone(),
            size,
        };
        if size > max_bytes {
            // Dropping the body stream closes the connection without reading it.
            return Ok(Some((meta, ObjectBody::OverCap)));
        }
        // Read in chunks and stop past the cap, in case the length was absent
        // or wrong: never hold more than the cap and one chunk.
        let mut body = output.body;
        let mut read = Vec::with_capacity(size as usize);
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| StoreError::new(operation(), e))?
        {
            read.extend_from_slice(&chunk);
            if read.len() as u64 > max_bytes {
                let meta = ObjectMeta {
                    size: read.len() as u64,
                    ..meta
                };
                return Ok(Some((meta, ObjectBody::OverCap)));
            }
        }
        Ok(Some((meta, ObjectBody::Read(Bytes::from(read)))))
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => Ok(Some(ObjectMeta {
                etag: normalize_etag(output.e_tag.as_deref().unwrap_or_default()),
                version_id: output.version_id,
                size: output.content_length.unwrap_or(0).max(0) as u64,
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(s3_error(format!("S3 HeadObject s3://{bucket}/{key}"), e)),
        }
    }

    /// One entry per ListObjectVersions request. The SDK hands back a page's
    /// versions and delete markers as two lists, and their timestamps have
    /// one-second resolution, so a page of several entries cannot say
    /// whether a delete came before or after an upload in the same second; a
    /// page of one can, since S3 lists a key's history in order. A walk stops
    /// at the first accepted version or delete marker, usually the second
    /// entry, and only a rejected upload starts one.
    ///
    /// The key is the prefix, so keys that extend it (`i-1` and `i-10`) are
    /// listed too, after it: an entry of another key ends the history. An
    /// unversioned bucket lists its one object, with version id `null`.
    async fn versions(
        &self,
        bucket: &str,
        key: &str,
        after: Option<&str>,
    ) -> Result<Vec<ObjectVersion>, StoreError> {
        let page = self
            .client
            .list_object_versions()
            .bucket(bucket)
            .prefix(key)
            .set_key_marker(after.map(|_| key.to_owned()))
            .set_version_id_marker(after.map(str::to_owned))
            .max_keys(1)
            .send()
            .await
            .map_err(|e| s3_error(format!("S3 ListObjectVersions s3://{bucket}/{key}"), e))?;
        let object = page
            .versions
            .unwrap_or_default()
            .into_iter()
            .filter(|v| v.key.as_deref() == Some(key))
            .map(|v| ObjectVersion::Object {
                version_id: v.version_id.unwrap_or_else(|| NULL_VERSION.to_owned()),
                etag: normalize_etag(v.e_tag.as_deref().unwrap_or_default()),
            });
        let marker = page
            .delete_markers
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.key.as_deref() == Some(key))
            .map(|m| ObjectVersion::DeleteMarker {
                version_id: m.version_id.unwrap_or_else(|| NULL_VERSION.to_owned()),
            });
        Ok(object.chain(marker).collect())
    }
}

/// The version id S3 gives an object written while versioning was off.
const NULL_VERSION: &str = "null";

impl ObjectWriter for S3ObjectStore {
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        content_type: &str,
    ) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| s3_error(format!("S3 PutObject s3://{bucket}/{key}"), e))
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>, StoreError> {
        let objects = self.list_objects(bucket, prefix).await?;
        let mut listed = Vec::with_capacity(objects.len());
        for object in objects {
            let Some(key) = object.key else { continue };
            // S3 always sends it; without it the object's age is unknown,
            // and taking it for a date long past would call it stale.
            let last_modified = object
                .last_modified
                .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
                .ok_or_else(|| {
                    StoreError::new(
                        format!("S3 ListObjectsV2 s3://{bucket}/{prefix}"),
                        format!("the listing gives {key:?} no LastModified time; S3 always does, so the endpoint is not S3-compatible enough"),
                    )
                })?;
            listed.push(ListedObject {
                etag: normalize_etag(object.e_tag.as_deref().unwrap_or_default()),
                key,
                last_modified,
                size: object.size.map_or(0, |size| size.max(0) as u64),
            });
        }
        Ok(listed)
    }
}

/// Creates `bucket` unless this account already owns it. `region` is the
/// client's region: outside us-east-1 S3 needs it as the location
/// constraint. For test servers and local tooling.
pub async fn create_bucket(client: &Client, bucket: &str, region: &str) -> Result<(), StoreError> {
    let request = client.create_bucket().bucket(bucket);
    let request = if region == "us-east-1" {
        request
    } else {
        request.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        )
    };
    match request.send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let operation = format!("S3 CreateBucket {bucket}");
            match e.as_service_error() {
                Some(service) if service.is_bucket_already_owned_by_you() => Ok(()),
                Some(service) if service.is_bucket_already_exists() => Err(StoreError::new(
                    operation,
                    "the name is taken by another account (bucket names are global); choose another name",
                )),
                _ => Err(s3_error(operation, e)),
            }
        }
    }
}

/// Sends the bucket's `ObjectCreated` and `ObjectRemoved` events for keys
/// under `prefix` to the SNS topic `topic_arn`, keeping the bucket's other
/// notifications. Returns whether the configuration changed: an identical
/// one is left alone, since each change makes S3 send a test event.
pub async fn notify_topic(
    client: &Client,
    bucket: &str,
    topic_arn: &str,
    prefix: &str,
) -> Result<bool, StoreError> {
    const EVENTS: [&str; 2] = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"];
    let current = match client
        .get_bucket_notification_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(current) => current,
        // moto (5.2) answers a bucket without notifications with a 200 whose
        // XML root is not `NotificationConfiguration`, which the SDK cannot
        // parse; AWS sends an empty `NotificationConfiguration`. Both mean
        // "none configured".
        Err(e)
            if e.raw_response()
                .is_some_and(|response| response.status().as_u16() == 200) =>
        {
            aws_sdk_s3::operation::get_bucket_notification_configuration::GetBucketNotificationConfigurationOutput::builder().build()
        }
        Err(e) => {
            return Err(s3_error(
                format!("S3 GetBucketNotificationConfiguration {bucket}"),
                e,
            ));
        }
    };
    let prefix_of = |config: &TopicConfiguration| -> Option<String> {
        config
            .filter
            .as_ref()
            .and_then(|f| f.key.as_ref())
            .and_then(|k| k.filter_rules.as_ref())
            .and_then(|rules| {
                rules.iter().find(|rule| {
                    rule.name
                        .as_ref()
                        .is_some_and(|n| n.as_str().eq_ignore_ascii_case("prefix"))
                })
            })
            .and_then(|rule| rule.value.clone())
    };
    let topics = current.topic_configurations.unwrap_or_default();
    let already = topics.iter().any(|config| {
        let mut events: Vec<&str> = config.events.iter().map(Event::as_str).collect();
        events.sort_unstable();
        config.topic_arn == topic_arn
            && events == EVENTS
            && prefix_of(config).as_deref() == Some(prefix)
    });
    if already {
        return Ok(false);
    }
    let operation = || format!("S3 PutBucketNotificationConfiguration {bucket}");
    let ours = TopicConfiguration::builder()
        .id("tally-uploads")
        .topic_arn(topic_arn)
        .events(Event::from(EVENTS[0]))
        .events(Event::from(EVENTS[1]))
        .filter(
            NotificationConfigurationFilter::builder()
                .key(
                    S3KeyFilter::builder()
                        .filter_rules(
                            FilterRule::builder()
                                .name(FilterRuleName::Prefix)
                                .value(prefix)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .build()
        .map_err(|e| StoreError::new(operation(), e))?;
    let mut topics: Vec<TopicConfiguration> = topics
        .into_iter()
        .filter(|config| config.topic_arn != topic_arn)
        .collect();
    topics.push(ours);
    client
        .put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .set_topic_configurations(Some(topics))
                .set_queue_configurations(current.queue_configurations)
                .set_lambda_function_configurations(current.lambda_function_configurations)
                .set_event_bridge_configuration(current.event_bridge_configuration)
                .build(),
        )
        .send()
        .await
        .map_err(|e| s3_error(operation(), e))?;
    Ok(true)
}
