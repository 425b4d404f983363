//! What one invocation of the rules function is: a batch of the totals
//! table's stream, or a tick of the rules stage's clock.
//!
//! EventBridge Scheduler invokes the function with the schedule's `Input`,
//! which the template sets to [`TICK_EVENT`], `{"tick": {}}`.
//! [`decode_invocation`] tells it from a stream batch by the `tick` member,
//! which no stream batch has (a batch is `{"Records": [...]}`), the way the
//! aggregate function tells its scheduled `{"reconcile": ...}` from a batch.
//! Our own input rather than the shape of a Scheduler event: Scheduler
//! sends a Lambda target exactly the `Input` it is given, so the input is
//! the contract, and the same JSON is what `tally invoke rules --tick` and
//! `tally dev pump` send.
//!
//! A tick runs [`RulesStage::tick`] with the rules the function already
//! uses. A tick that fails fails the invocation, so Scheduler's retry
//! policy tries again and the function's `Errors` alarm sees it; its
//! heartbeat ([`TickReport::heartbeat`]) is then 0. The heartbeat counts
//! ticks that evaluated every alerting date, so a schedule, function or
//! permission that is gone reads as silence on the dead man's switch
//! (`tally_aws::metrics::TICK`, the template's `TickHeartbeatAlarm`). A
//! batch goes to [`RulesStage::handle`] as before. Anything else is an
//! [`InvocationError`] naming both shapes the function takes.

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tally_core::ports::{AlertStore, Notifier, ObjectWriter, StateStore, TotalsStore};
use tally_core::rules::RuleSet;

use crate::stage::{RulesReport, RulesStage, StageError, Uploads};

/// The input the tick schedule sends the rules function.
pub const TICK_EVENT: &str = r#"{"tick": {}}"#;

/// What one invocation of the rules function asks for.
#[derive(Debug)]
pub enum Invocation {
    /// A batch of the totals table's stream.
    Stream(Box<Event>),
    /// A tick of the clock: evaluate every alerting date.
    Tick,
}

/// An invocation that is neither a stream batch nor a tick.
#[derive(Debug, thiserror::Error)]
#[error("rules invoked with an event it does not take: {reason}")]
pub struct InvocationError {
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scheduled {
    tick: TickFields,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TickFields {}

/// Tells a tick from a stream batch.
pub fn decode_invocation(payload: Value) -> Result<Invocation, InvocationError> {
    let fail = |reason: String| InvocationError { reason };
    if payload.get("tick").is_none() {
        return serde_json::from_value::<Event>(payload)
            .map(|event| Invocation::Stream(Box::new(event)))
            .map_err(|e| {
                fail(format!(
                    "not a DynamoDB stream batch ({e}), nor a tick ({TICK_EVENT}, as the tick schedule sends)"
                ))
            });
    }
    serde_json::from_value::<Scheduled>(payload)
        .map(
            |Scheduled {
                 tick: TickFields {},
             }| Invocation::Tick,
        )
        .map_err(|e| fail(format!("a tick is exactly {TICK_EVENT} ({e})")))
}

/// What a tick did, logged and turned into the tick's metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TickReport {
    #[serde(flatten)]
    pub rules: RulesReport,
    /// 1 when the tick evaluated every alerting date, 0 when it failed.
    pub heartbeat: u64,
}

/// What an invocation did.
#[derive(Debug)]
pub enum Handled {
    Stream {
        response: DynamoDbEventResponse,
        report: RulesReport,
    },
    Tick {
        report: TickReport,
        /// Why the tick failed, if it did.
        failure: Option<StageError>,
    },
}

/// A tick that failed: the invocation fails, and Scheduler retries it.
#[derive(Debug, thiserror::Error)]
#[error("the tick failed ({0}); the schedule's retry and the next tick try again")]
pub struct TickFailed(#[source] pub StageError);

impl Handled {
    /// What Lambda gets back: the batch's response (its
    /// `batchItemFailures`), or a tick's report; an error for a failed tick.
    pub fn into_response(self) -> Result<Value, TickFailed> {
        match self {
            Handled::Stream { response, .. } => Ok(serde_json::to_value(response)
                .unwrap_or_else(|_| Value::Object(serde_json::Map::new()))),
            Handled::Tick {
                failure: Some(e), ..
            } => Err(TickFailed(e)),
            Handled::Tick { report, .. } => Ok(serde_json::to_value(report).unwrap_or_default()),
        }
    }

    /// The invocation's metrics as one EMF line (`tally_aws::metrics`):
    /// the rules stage's for a batch, the tick's (with the heartbeat) for a
    /// tick.
    #[cfg(feature = "aws")]
    pub fn metrics_line(
        &self,
        function: &str,
        timestamp_ms: u64,
    ) -> Result<String, tally_aws::metrics::MetricsError> {
        use tally_aws::metrics::{Stage, line};
        match self {
            Handled::Stream { report, .. } => line(Stage::Rules, function, report, timestamp_ms),
            Handled::Tick { report, .. } => line(Stage::Tick, function, report, timestamp_ms),
        }
    }

    /// Prints the invocation's metrics line on stdout, as Lambda's log
    /// wants it ([`tally_aws::metrics::emit`]).
    #[cfg(feature = "aws")]
    pub fn emit(&self) {
        use tally_aws::metrics::{Stage, emit};
        match self {
            Handled::Stream { report, .. } => emit(Stage::Rules, report),
            Handled::Tick { report, .. } => emit(Stage::Tick, report),
        }
    }
}

impl<T, A, N, W> RulesStage<T, A, N, W>
where
    T: TotalsStore,
    A: AlertStore,
    N: Notifier,
    W: ObjectWriter,
{
    /// Handles one invocation, as the function's runtime delivers it. A
    /// tick judges stale rules on `uploads` when given.
    pub async fn invoke<S: StateStore>(
        &self,
        rules: &RuleSet,
        payload: Value,
        uploads: Option<&Uploads<'_, S>>,
    ) -> Result<Handled, InvocationError> {
        Ok(match decode_invocation(payload)? {
            Invocation::Stream(event) => {
                let (response, report) = self.handle(rules, &event).await;
                Handled::Stream { response, report }
            }
            Invocation::Tick => {
                let (report, failure) = self.run_tick(rules, uploads).await;
                Handled::Tick { report, failure }
            }
        })
    }

    /// One tick, with its heartbeat, logged as one line.
    pub async fn run_tick<S: StateStore>(
        &self,
        rules: &RuleSet,
        uploads: Option<&Uploads<'_, S>>,
    ) -> (TickReport, Option<StageError>) {
        let mut rules_report = RulesReport::default();
        let failure = match uploads {
            Some(uploads) => self.tick_watching(rules, uploads, &mut rules_report).await,
            None => self.tick(rules, &mut rules_report).await,
        }
        .err();
        let report = TickReport {
            rules: rules_report,
            heartbeat: u64::from(failure.is_none()),
        };
        match serde_json::to_string(&report) {
            Ok(json) => tracing::info!(report = %json, "rules tick done"),
            Err(e) => tracing::warn!(error = %e, "could not render the tick report"),
        }
        (report, failure)
    }
}
