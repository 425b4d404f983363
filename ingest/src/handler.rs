//! The Lambda handler: one invocation in, one report (or SQS batch response) out.
//!
//! Failure policy, by what went wrong:
//!
//! - a **rejected body** or an **ignored key** is logged and counted, never
//!   retried: the producer's next upload is the fix, and the other records of
//!   the invocation go on;
//! - an **undecodable event** and a **store failure** that outlived the SDK's
//!   retries fail the work so Lambda retries it (ingest is idempotent) and,
//!   past the retries, parks it in the dead-letter queue where nothing is
//!   lost: for SQS only the failing messages (`batchItemFailures`), for SNS
//!   and direct S3 invocations the invocation.

use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use tally_core::ports::{ObjectStore, StateStore, StoreError};
use tracing::{error, info, warn};

use crate::apply::{Capacity, Ingestor, Outcome};
use crate::event::{self, Notice, Record, Source};

/// Counts of what one invocation did, logged and returned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    pub records: u64,
    pub written: u64,
    pub corrected: u64,
    pub unchanged: u64,
    pub stale: u64,
    pub duplicate: u64,
    pub superseded: u64,
    pub gone: u64,
    pub rejected: u64,
    pub ignored: u64,
    pub failed: u64,
    pub capacity: Capacity,
    /// The rejected uploads' keys and reasons, for callers that show them
    /// (the embedded runtime prints them; the Lambda logs them).
    #[serde(skip)]
    pub rejections: Vec<(String, String)>,
}

impl IngestReport {
    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Ignored(_) => self.ignored += 1,
            Outcome::Stale => self.stale += 1,
            Outcome::Duplicate => self.duplicate += 1,
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::Gone => self.gone += 1,
            Outcome::Rejected(_) => self.rejected += 1,
            Outcome::Written { corrected } => {
                self.written += 1;
                self.corrected += u64::from(*corrected);
            }
            Outcome::Superseded => self.superseded += 1,
        }
    }
}

/// The invocation failed and Lambda should retry it; the message says why.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} records failed; first: {first}")]
pub struct InvocationFailed {
    pub failed: usize,
    pub total: usize,
    pub first: String,
}

/// What the handler returns to Lambda.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum IngestResponse {
    /// For SQS: the messages to redeliver.
    Sqs(aws_lambda_events::event::sqs::SqsBatchResponse),
    /// For SNS and S3 invocations, which have no partial-failure protocol.
    Report(IngestReport),
}

impl<S: StateStore, O: ObjectStore> Ingestor<S, O> {
    /// Applies notices concurrently (at most `concurrency` at once), counts
    /// and logs each outcome into `report`, and returns the positions of the
    /// notices that failed with their errors.
    pub async fn apply_all(
        &self,
        notices: &[Notice],
        report: &mut IngestReport,
    ) -> Vec<(usize, StoreError)> {
        // The futures are built before they are streamed: a closure inside
        // the stream would make the whole future unprovably Send.
        let applies: Vec<_> = notices
            .iter()
            .enumerate()
            .map(|(position, notice)| async move { (position, notice, self.apply(notice).await) })
            .collect();
        let results: Vec<_> = futures::stream::iter(applies)
            .buffer_unordered(self.config().concurrency.max(1))
            .collect()
            .await;
        let mut failed = Vec::new();
        for (position, notice, result) in results {
            let key = &notice.object_key;
            match result {
                Ok((outcome, used)) => {
                    report.capacity += used;
                    report.count(&outcome);
                    match &outcome {
                        Outcome::Rejected(reason) => {
                            warn!(key = %key, reason = %reason, "upload rejected: {key}: {reason}");
                            report.rejections.push((key.clone(), reason.to_string()));
                        }
                        Outcome::Ignored(reason) => {
                            info!(key = %key, reason = %reason, "key ignored")
                        }
                        _ => {
                            info!(key = %key, outcome = %outcome, ordering = %notice.ordering, "applied")
                        }
                    }
                }
                Err(e) => {
                    report.failed += 1;
                    error!(key = %key, error = %e, "record failed; it will be retried");
                    failed.push((position, e));
                }
            }
        }
        failed
    }

    /// Handles one invocation's payload as Lambda delivers it.
    pub async fn handle(
        &self,
        payload: &Value,
    ) -> Result<(IngestResponse, IngestReport), InvocationFailed> {
        let invocation = event::decode(payload).map_err(|e| {
            error!(error = %e, "undecodable event");
            InvocationFailed {
                failed: 1,
                total: 1,
                first: e.to_string(),
            }
        })?;
        if invocation.source == Source::Test {
            info!("s3:TestEvent acknowledged");
        }

        // (message index, notice) for every notice of the invocation.
        let mut work: Vec<(usize, Notice)> = Vec::new();
        let mut failures: Vec<(usize, String)> = Vec::new();
        let mut report = IngestReport::default();
        for (index, message) in invocation.messages.iter().enumerate() {
            match &message.records {
                Err(e) => {
                    error!(error = %e, "undecodable message");
                    failures.push((index, e.to_string()));
                }
                Ok(records) => {
                    for record in records {
                        report.records += 1;
                        match record {
                            Record::Notice(notice) => work.push((index, notice.clone())),
                            Record::Skipped(skipped) => {
                                report.ignored += 1;
                                info!(event = %skipped.what, reason = %skipped.why, "record ignored");
                            }
                        }
                    }
                }
            }
        }

        let (message_of, notices): (Vec<usize>, Vec<Notice>) = work.into_iter().unzip();
        let failed = self.apply_all(&notices, &mut report).await;
        for (position, error) in failed {
            failures.push((
                message_of[position],
                format!("{}: {error}", notices[position].object_key),
            ));
        }
        info!(
            report = %serde_json::to_string(&report).unwrap_or_default(),
            read_units = report.capacity.read_units,
            write_units = report.capacity.write_units,
            "ingest done"
        );

        if invocation.source == Source::Sqs {
            let mut response = aws_lambda_events::event::sqs::SqsBatchResponse::default();
            let mut failed: Vec<usize> = failures.iter().map(|(index, _)| *index).collect();
            failed.sort_unstable();
            failed.dedup();
            for index in failed {
                // A message without an id cannot be named; fail the invocation instead.
                match &invocation.messages[index].id {
                    Some(id) => response.add_failure(id.clone()),
                    None => {
                        return Err(InvocationFailed {
                            failed: failures.len(),
                            total: invocation.messages.len(),
                            first: "an SQS message without messageId failed".into(),
                        });
                    }
                }
            }
            return Ok((IngestResponse::Sqs(response), report));
        }
        if let Some((_, first)) = failures.first() {
            return Err(InvocationFailed {
                failed: failures.len(),
                total: report.records.max(1) as usize,
                first: first.clone(),
            });
        }
        Ok((IngestResponse::Report(report.clone()), report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded runtime spawns handlers on tasks: their futures must be Send.
    #[allow(dead_code)]
    fn handler_futures_are_send<S: StateStore, O: ObjectStore>(
        ingestor: &Ingestor<S, O>,
        payload: &Value,
        notices: &[Notice],
        report: &mut IngestReport,
    ) {
        fn send<T: Send>(_: T) {}
        send(ingestor.handle(payload));
        send(ingestor.apply_all(notices, report));
    }
}
