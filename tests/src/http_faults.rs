//! Faults the way AWS produces them, injected under the real SDK clients.
//!
//! [`FaultyHttpClient`] is an HTTP client for the AWS SDK for Rust that
//! wraps the ordinary one and, for a chosen fraction of calls, does what
//! AWS's endpoints do on a bad day instead of (or after) passing the call
//! on. Everything above it is production code: the SDK's retry policy and
//! error classification, tally's adapters, the handlers. That is the point:
//! a fault injected at the port level (see [`crate::faults`]) cannot tell
//! whether the SDK retries a timeout, or what tally does with the
//! `ConditionalCheckFailedException` the retry of a landed write gets back.
//!
//! The faults, chosen at random among those that fit the call:
//!
//! | fault | what the client sees | did the call happen? |
//! |---|---|---|
//! | throttled | DynamoDB `ProvisionedThroughputExceededException` or `ThrottlingException` (400); S3 `SlowDown` (503); SNS `Throttling` (400) | no |
//! | server error | 500 `InternalServerError`/`InternalError`, 503 `ServiceUnavailable` | no |
//! | connection reset | an I/O error before any response | no |
//! | lost response | a timeout, after the server handled the call | **yes**: the dangerous case |
//! | transaction conflict | `TransactionCanceledException` with `TransactionConflict` reasons, on TransactWriteItems | no |
//! | unprocessed keys | BatchGetItem answered for only part of its keys, the rest in `UnprocessedKeys` | in part |
//!
//! tally never calls BatchWriteItem (every write it makes is conditional,
//! which BatchWriteItem cannot express), so `UnprocessedItems` has no caller
//! to reach; its read-side twin, `UnprocessedKeys`, is injected instead.
//!
//! Decisions come from a seeded generator, so a failing run can be replayed
//! from its seed (as far as the order of concurrent calls allows), and every
//! injected fault is counted per operation for the test to report and bound.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use serde_json::Value;

/// One kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    Throttled,
    ServerError,
    ConnectionReset,
    /// The call reached the server and was handled; its response was lost.
    LostResponse,
    TransactionConflict,
    UnprocessedKeys,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::Throttled => "throttled",
            Fault::ServerError => "server error",
            Fault::ConnectionReset => "connection reset",
            Fault::LostResponse => "lost response",
            Fault::TransactionConflict => "transaction conflict",
            Fault::UnprocessedKeys => "unprocessed keys",
        })
    }
}

/// SplitMix64: a small seeded generator, enough to pick faults (and the
/// fault test's fleets) repeatably from a seed.
#[derive(Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[derive(Debug)]
struct Plan {
    /// Faults per 1,000 calls.
    per_mille: u64,
    random: Mutex<SplitMix64>,
    injected: Mutex<BTreeMap<(String, Fault), u64>>,
    calls: Mutex<BTreeMap<String, u64>>,
}

/// An HTTP client that fails a fraction of AWS calls as AWS does.
#[derive(Clone, Debug)]
pub struct FaultyHttpClient {
    inner: SharedHttpClient,
    plan: Arc<Plan>,
}

impl FaultyHttpClient {
    /// Faults on `rate` (0.0–1.0) of the calls, decided from `seed`.
    pub fn new(rate: f64, seed: u64) -> FaultyHttpClient {
        FaultyHttpClient {
            inner: aws_smithy_http_client::Builder::new().build_http(),
            plan: Arc::new(Plan {
                per_mille: (rate.clamp(0.0, 1.0) * 1000.0).round() as u64,
                random: Mutex::new(SplitMix64(seed)),
                injected: Mutex::new(BTreeMap::new()),
                calls: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Faults injected so far, per `Service.Operation` and kind.
    pub fn injected(&self) -> BTreeMap<(String, Fault), u64> {
        self.plan.injected.lock().expect("the fault counts").clone()
    }

    /// Calls seen so far (faulted or not), per `Service.Operation`.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.plan.calls.lock().expect("the call counts").clone()
    }

    /// How many faults of `kind` were injected on `operation`.
    pub fn count(&self, operation: &str, kind: Fault) -> u64 {
        self.injected()
            .get(&(operation.to_owned(), kind))
            .copied()
            .unwrap_or(0)
    }

    /// One line per operation: calls and the faults injected on them.
    pub fn summary(&self) -> String {
        let injected = self.injected();
        let mut lines = Vec::new();
        for (operation, calls) in self.calls() {
            let faults: Vec<String> = injected
                .iter()
                .filter(|((op, _), _)| *op == operation)
                .map(|((_, kind), n)| format!("{n} {kind}"))
                .collect();
            lines.push(format!(
                "  {operation}: {calls} calls; {}",
                if faults.is_empty() {
                    "no faults".to_owned()
                } else {
                    faults.join(", ")
                }
            ));
        }
        lines.join("\n")
    }
}

impl HttpClient for FaultyHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(FaultyConnector {
            inner: self.inner.http_connector(settings, components),
            plan: self.plan.clone(),
        })
    }
}

#[derive(Debug)]
struct FaultyConnector {
    inner: SharedHttpConnector,
    plan: Arc<Plan>,
}

/// Which AWS API a request is for, as far as faults care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    DynamoDb,
    S3,
    Sns,
    Other,
}

fn identify(request: &HttpRequest) -> (Service, String) {
    if let Some(target) = request.headers().get("x-amz-target") {
        let operation = target.rsplit('.').next().unwrap_or(target);
        return if target.starts_with("DynamoDB_") {
            (Service::DynamoDb, format!("DynamoDB.{operation}"))
        } else {
            (Service::Other, target.to_owned())
        };
    }
    let body = request.body().bytes().unwrap_or_default();
    if let Some(query) = body.strip_prefix(b"Action=") {
        let action = query.split(|b| *b == b'&').next().unwrap_or_default();
        return (
            Service::Sns,
            format!("SNS.{}", String::from_utf8_lossy(action)),
        );
    }
    let operation = match request.method() {
        "GET" if request.uri().contains("list-type=") => "ListObjectsV2",
        "GET" => "GetObject",
        "PUT" => "PutObject",
        "HEAD" => "HeadObject",
        "DELETE" => "DeleteObject",
        other => other,
    };
    (Service::S3, format!("S3.{operation}"))
}

impl Plan {
    /// The fault for this call, if it gets one.
    fn decide(&self, service: Service, operation: &str) -> Option<Fault> {
        *self
            .calls
            .lock()
            .expect("the call counts")
            .entry(operation.to_owned())
            .or_default() += 1;
        if service == Service::Other {
            return None;
        }
        let mut random = self.random.lock().expect("the fault generator");
        if random.below(1000) >= self.per_mille {
            return None;
        }
        let mut choices = vec![
            Fault::Throttled,
            Fault::ServerError,
            Fault::ConnectionReset,
            Fault::LostResponse,
        ];
        match operation {
            "DynamoDB.TransactWriteItems" => choices.push(Fault::TransactionConflict),
            "DynamoDB.BatchGetItem" => choices.push(Fault::UnprocessedKeys),
            _ => {}
        }
        let fault = choices[random.below(choices.len() as u64) as usize];
        *self
            .injected
            .lock()
            .expect("the fault counts")
            .entry((operation.to_owned(), fault))
            .or_default() += 1;
        Some(fault)
    }
}

impl HttpConnector for FaultyConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let (service, operation) = identify(&request);
        let Some(fault) = self.plan.decide(service, &operation) else {
            return self.inner.call(request);
        };
        // Variants within a kind (which throttling error, 500 or 503) come
        // from the same generator, after the decision.
        let variant = self
            .plan
            .random
            .lock()
            .expect("the fault generator")
            .below(2);
        let inner = self.inner.clone();
        HttpConnectorFuture::new(async move {
            match fault {
                Fault::Throttled => Ok(throttled(service, variant)),
                Fault::ServerError => Ok(server_error(service, variant)),
                Fault::TransactionConflict => Ok(transaction_conflict(&request)),
                Fault::ConnectionReset => Err(ConnectorError::io(Box::new(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection reset by peer (injected)",
                )))),
                Fault::LostResponse => {
                    // The server handles the call; the client never hears back.
                    let response = inner.call(request).await?;
                    drop(response);
                    Err(ConnectorError::timeout(
                        "response lost after the server handled the request (injected)".into(),
                    ))
                }
                Fault::UnprocessedKeys => unprocessed_keys(inner, request).await,
            }
        })
    }
}

fn response(status: u16, content_type: &str, body: String) -> HttpResponse {
    let status = StatusCode::try_from(status).unwrap_or_else(|_| panic!("{status} is a status"));
    let mut response = HttpResponse::new(status, SdkBody::from(body));
    response
        .headers_mut()
        .insert("content-type", content_type.to_owned());
    response
        .headers_mut()
        .insert("x-amzn-requestid", "injected-fault".to_owned());
    response
}

fn dynamodb_error(status: u16, kind: &str, message: &str) -> HttpResponse {
    let body = serde_json::json!({
        "__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"),
        "message": message,
    });
    response(status, "application/x-amz-json-1.0", body.to_string())
}

fn s3_error(status: u16, code: &str, message: &str) -> HttpResponse {
    response(
        status,
        "application/xml",
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>injected-fault</RequestId></Error>"
        ),
    )
}

fn sns_error(status: u16, kind: &str, code: &str, message: &str) -> HttpResponse {
    response(
        status,
        "text/xml",
        format!(
            "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>injected-fault</RequestId></ErrorResponse>"
        ),
    )
}

fn throttled(service: Service, variant: u64) -> HttpResponse {
    match (service, variant) {
        (Service::DynamoDb, 0) => dynamodb_error(
            400,
            "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded.",
        ),
        (Service::DynamoDb, _) => dynamodb_error(
            400,
            "ThrottlingException",
            "Rate of requests exceeds the allowed throughput.",
        ),
        (Service::Sns, _) => sns_error(400, "Sender", "Throttling", "Rate exceeded"),
        _ => s3_error(503, "SlowDown", "Please reduce your request rate."),
    }
}

fn server_error(service: Service, variant: u64) -> HttpResponse {
    match (service, variant) {
        (Service::DynamoDb, 0) => {
            dynamodb_error(500, "InternalServerError", "Internal server error")
        }
        (Service::DynamoDb, _) => {
            dynamodb_error(503, "ServiceUnavailable", "Service is unavailable")
        }
        (Service::Sns, 0) => sns_error(500, "Receiver", "InternalError", "Internal failure"),
        (Service::Sns, _) => {
            sns_error(503, "Receiver", "ServiceUnavailable", "Service unavailable")
        }
        (_, 0) => s3_error(
            500,
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
        _ => s3_error(
            503,
            "ServiceUnavailable",
            "Service is unable to handle request.",
        ),
    }
}

/// What DynamoDB answers when another transaction touched the same items.
fn transaction_conflict(request: &HttpRequest) -> HttpResponse {
    let items = request
        .body()
        .bytes()
        .and_then(|body| serde_json::from_slice::<Value>(body).ok())
        .and_then(|body| body["TransactItems"].as_array().map(Vec::len))
        .unwrap_or(1);
    let reasons: Vec<Value> = (0..items)
        .map(|_| {
            serde_json::json!({
                "Code": "TransactionConflict",
                "Message": "Transaction is ongoing for the item",
            })
        })
        .collect();
    let body = serde_json::json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": format!(
            "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
            vec!["TransactionConflict"; items].join(", ")
        ),
        "CancellationReasons": reasons,
    });
    response(400, "application/x-amz-json-1.0", body.to_string())
}

/// BatchGetItem answered for the first half of each table's keys only: the
/// request is cut down before it is sent, and the keys left out come back
/// in `UnprocessedKeys`, with the rest of their table's request.
async fn unprocessed_keys(
    inner: SharedHttpConnector,
    mut request: HttpRequest,
) -> Result<HttpResponse, ConnectorError> {
    let parsed = request
        .body()
        .bytes()
        .and_then(|body| serde_json::from_slice::<Value>(body).ok());
    let Some(mut body) = parsed else {
        return inner.call(request).await;
    };
    let mut unprocessed = serde_json::Map::new();
    if let Some(tables) = body["RequestItems"].as_object_mut() {
        for (table, spec) in tables.iter_mut() {
            let Some(keys) = spec["Keys"].as_array_mut() else {
                continue;
            };
            if keys.len() < 2 {
                continue;
            }
            let left_out = keys.split_off(keys.len().div_ceil(2));
            let mut rest = spec.clone();
            rest["Keys"] = Value::Array(left_out);
            unprocessed.insert(table.clone(), rest);
        }
    }
    if unprocessed.is_empty() {
        return inner.call(request).await;
    }
    let text = body.to_string();
    request
        .headers_mut()
        .insert("content-length", text.len().to_string());
    *request.body_mut() = SdkBody::from(text);
    let mut response = inner.call(request).await?;
    if !response.status().is_success() {
        return Ok(response);
    }
    let bytes = ByteStream::new(response.take_body())
        .collect()
        .await
        .map_err(|e| ConnectorError::io(Box::new(e)))?
        .into_bytes();
    let mut answer: Value =
        serde_json::from_slice(&bytes).map_err(|e| ConnectorError::other(Box::new(e), None))?;
    answer["UnprocessedKeys"] = Value::Object(unprocessed);
    let text = answer.to_string();
    // The body changed, so a checksum of the original would not match it.
    response.headers_mut().remove("x-amz-crc32");
    response
        .headers_mut()
        .insert("content-length", text.len().to_string());
    *response.body_mut() = SdkBody::from(text);
    Ok(response)
}
