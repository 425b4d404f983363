//! The events AWS sends, built from the samples AWS documents (as `sam local
//! generate-event` prints them, kept in `tests/fixtures/aws-events/`), so
//! every test hands the stages events in the shape Lambda delivers.

use serde_json::Value;

/// A sample event AWS documents.
pub fn aws_sample(name: &str) -> Value {
    let path = format!(
        "{}/../tests/fixtures/aws-events/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// What an S3 event record says about one object change.
#[derive(Debug, Clone)]
pub struct S3Change<'a> {
    pub event_name: &'a str,
    pub bucket: &'a str,
    /// The key as stored; the event carries it URL-encoded, as S3 does.
    pub key: &'a str,
    pub etag: Option<&'a str>,
    pub version_id: Option<&'a str>,
    pub sequencer: Option<&'a str>,
    /// `eventTime`, in milliseconds since 1970.
    pub event_millis: i64,
}

/// An S3 event in the shape of AWS's documented sample, describing `change`.
pub fn s3_event(change: &S3Change<'_>) -> Value {
    let sample = if change.event_name.starts_with("ObjectRemoved") {
        "s3-delete"
    } else {
        "s3-put"
    };
    let mut event = aws_sample(sample);
    let record = &mut event["Records"][0];
    record["eventName"] = change.event_name.into();
    record["eventTime"] = chrono::DateTime::from_timestamp_millis(change.event_millis)
        .expect("an event time within chrono's range")
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
        .into();
    record["s3"]["bucket"]["name"] = change.bucket.into();
    record["s3"]["bucket"]["arn"] = format!("arn:aws:s3:::{}", change.bucket).into();
    let object = record["s3"]["object"]
        .as_object_mut()
        .expect("the sample has s3.object");
    object.insert("key".into(), url_encode_key(change.key).into());
    for (field, value) in [
        ("eTag", change.etag),
        ("versionId", change.version_id),
        ("sequencer", change.sequencer),
    ] {
        match value {
            Some(value) => object.insert(field.into(), value.into()),
            None => object.remove(field),
        };
    }
    event
}

/// The SNS notification Lambda receives for `message`, in the shape of AWS's sample.
pub fn sns_event(message: &Value) -> Value {
    let mut event = aws_sample("sns-notification");
    let sns = &mut event["Records"][0]["Sns"];
    sns["Message"] = message.to_string().into();
    sns["Subject"] = "Amazon S3 Notification".into();
    event
}

/// The SQS event Lambda receives for these message bodies, in the shape of AWS's sample.
pub fn sqs_event(bodies: &[(String, String)]) -> Value {
    let sample = aws_sample("sqs-receive-message");
    let template = sample["Records"][0].clone();
    let records: Vec<Value> = bodies
        .iter()
        .map(|(id, body)| {
            let mut record = template.clone();
            record["messageId"] = id.as_str().into();
            record["body"] = body.as_str().into();
            record
        })
        .collect();
    serde_json::json!({ "Records": records })
}

/// URL-encodes a key the way S3 notifications do: form encoding, `+` for space.
pub fn url_encode_key(key: &str) -> String {
    tally_core::key::encode_event_key(key)
}
