//! The aggregate Lambda's second job: the scheduled `reconcile` of
//! yesterday, the safety net under the stream path.
//!
//! The function is invoked two ways: by the state table's stream, with a
//! batch of records, and by an EventBridge Scheduler schedule, with
//! `{"reconcile": {"day": "yesterday"}}`. [`decode_invocation`] tells them
//! apart by the `reconcile` member, which no stream batch has; a batch goes
//! to [`Aggregator::handle`](crate::Aggregator::handle) as before.
//!
//! Why this function and not one of its own: reconcile is the aggregate
//! stage's code over the same tables (it repairs through the stage's
//! [`Aggregator`]), so the wiring, settings and role are the stage's, and a
//! function of its own would be a second zip to build, ship and keep at the
//! same version as the stage it repairs. The role gains only the two
//! queries reconcile makes (the day's state, the day's totals by date).
//!
//! Why only yesterday: a repair rebuilds a partial item from the state table
//! and keeps its `AppliedThrough`, so a change whose stream record has not
//! been folded yet would be folded a second time; while a day's uploads flow
//! there are always such records (the stream's batching window), and a check
//! of that day would report them as drift. So `today` is refused, with the
//! reason. Yesterday is run once its late deliveries are over: the schedule
//! starts after ingest's longest retry of an upload event.
//!
//! Reconcile holds the day's states in memory (about 9 KB per instance of
//! 100 counters with 20-byte names, measured): at the function's 128 MB
//! that is about ten thousand instances, beyond which reconcile must fold a
//! bucket at a time.
//!
//! The run's report is logged whole, and its drift (partial items plus
//! totals that differed, each repaired) becomes the metric `ReconcileDrift`
//! (`tally_aws::metrics::RECONCILE`), on which an alarm notifies operations:
//! drift means the stream path lost or doubled a change, which it never
//! should.

use aws_lambda_events::event::dynamodb::Event;
use chrono::{DateTime, Days, Utc};
use serde::Deserialize;
use serde_json::Value;
use tally_core::key::Date;
use tally_core::ports::{StateStore, StoreError, TotalsStore};

use crate::Aggregator;
use crate::reconcile::{ReconcileReport, reconcile};

/// What one invocation of the aggregate function asks for.
#[derive(Debug)]
pub enum Invocation {
    /// A batch of the state table's stream.
    Stream(Box<Event>),
    /// The scheduled reconcile.
    Reconcile(ReconcileRequest),
}

/// The scheduler's event: `{"reconcile": {"day": "yesterday"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileRequest {
    pub day: Day,
}

/// The day a scheduled reconcile checks and repairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Day {
    /// The UTC day before the invocation's.
    Yesterday,
}

impl Day {
    /// The date this day names, at `now`.
    pub fn date(self, now: DateTime<Utc>) -> Result<Date, StoreError> {
        let day = match self {
            Day::Yesterday => now.date_naive().checked_sub_days(Days::new(1)),
        };
        let text = day
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        Date::parse(&text)
            .map_err(|e| StoreError::new(format!("the day before {now} as a date"), e))
    }
}

/// An invocation that is neither a stream batch nor a reconcile request.
#[derive(Debug, thiserror::Error)]
#[error("aggregate invoked with an event it does not take: {reason}")]
pub struct InvocationError {
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scheduled {
    reconcile: RequestFields,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestFields {
    day: String,
}

/// Tells a scheduler's reconcile request from a stream batch.
pub fn decode_invocation(payload: Value) -> Result<Invocation, InvocationError> {
    let fail = |reason: String| InvocationError { reason };
    if payload.get("reconcile").is_none() {
        return serde_json::from_value::<Event>(payload)
            .map(|event| Invocation::Stream(Box::new(event)))
            .map_err(|e| fail(format!("not a DynamoDB stream batch ({e})")));
    }
    let scheduled: Scheduled = serde_json::from_value(payload).map_err(|e| {
        fail(format!(
            "a reconcile request is {{\"reconcile\": {{\"day\": \"yesterday\"}}}} ({e})"
        ))
    })?;
    match scheduled.reconcile.day.as_str() {
        "yesterday" => Ok(Invocation::Reconcile(ReconcileRequest {
            day: Day::Yesterday,
        })),
        "today" => Err(fail(
            "reconcile of today is refused: its uploads still flow, and a repair would fold the changes still in the stream a second time; schedule \"yesterday\", or check a day by hand with `tally reconcile --date DATE`".to_owned(),
        )),
        other => Err(fail(format!(
            "reconcile day {other:?} is not one it takes: \"yesterday\""
        ))),
    }
}

/// Checks and repairs the requested day, as of `now`.
pub async fn run_reconcile<S: StateStore, T: TotalsStore>(
    states: &S,
    aggregator: &Aggregator<T>,
    request: &ReconcileRequest,
    now: DateTime<Utc>,
) -> Result<(Date, ReconcileReport), StoreError> {
    let date = request.day.date(now)?;
    let report = reconcile(states, aggregator, &date, true).await?;
    Ok((date, report))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tally_aws::metrics::Stage;
    use tally_core::aggregate::{Exact, SequenceNumber, StateChange};
    use tally_core::key::UploadKey;
    use tally_core::ordering::OrderingKey;
    use tally_core::ports::{Precondition, TotalsStore};
    use tally_core::state::{Content, InstanceState, StateItem};
    use tally_embedded::database::Database;

    use super::*;

    #[test]
    fn the_schedulers_event_is_a_reconcile_of_yesterday() {
        let decoded = decode_invocation(serde_json::json!({"reconcile": {"day": "yesterday"}}));
        match decoded {
            Ok(Invocation::Reconcile(request)) => assert_eq!(request.day, Day::Yesterday),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stream_batch_is_still_a_stream_batch() {
        let batch = serde_json::json!({"Records": [{
            "eventID": "e-1",
            "eventName": "INSERT",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "Keys": {"Part": {"S": "2015-11-16#14"}, "Instance": {"S": "i-1"}},
                "SequenceNumber": "100",
                "SizeBytes": 10,
                "StreamViewType": "NEW_AND_OLD_IMAGES"
            },
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:1:table/state/stream/x"
        }]});
        match decode_invocation(batch) {
            Ok(Invocation::Stream(event)) => assert_eq!(event.records[0].event_id, "e-1"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn today_is_refused_with_the_reason() {
        let error = decode_invocation(serde_json::json!({"reconcile": {"day": "today"}}))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("reconcile of today is refused") && error.contains("a second time"),
            "{error}"
        );
    }

    #[test]
    fn a_misspelt_request_names_the_shape_it_takes() {
        for payload in [
            serde_json::json!({"reconcile": {"date": "yesterday"}}),
            serde_json::json!({"reconcile": "yesterday"}),
        ] {
            let error = decode_invocation(payload.clone())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                error.contains(r#"{"reconcile": {"day": "yesterday"}}"#),
                "{payload}: {error}"
            );
        }
        let error = decode_invocation(serde_json::json!({"reconcile": {"day": "monday"}}))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains(r#""monday""#), "{error}");
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn state(date: &str, instance: &str, counters: &[(&str, i64)]) -> InstanceState {
        let date = Date::parse(date).unwrap_or_else(|e| panic!("{e}"));
        InstanceState {
            object_key: format!("counters/{date}/{instance}"),
            key: UploadKey {
                date,
                instance: instance.to_owned(),
            },
            ordering: OrderingKey::from_sequencer("1").unwrap_or_else(|e| panic!("{e}")),
            content: Content::Live {
                counters: counters
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), *v))
                    .collect(),
                etag: format!("e-{instance}"),
                version_id: None,
            },
        }
    }

    async fn totals_of(db: &Database, date: &str) -> BTreeMap<String, Option<Exact>> {
        let date = Date::parse(date).unwrap_or_else(|e| panic!("{e}"));
        db.totals()
            .totals(&date)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|t| (t.counter, t.value))
            .collect()
    }

    /// The stream never delivered yesterday's last upload (say it expired
    /// while the stage was down): the morning's run repairs the day and
    /// says how much drifted; today's state is left to the stream.
    #[tokio::test]
    async fn the_morning_run_repairs_yesterdays_lost_change_and_reports_it_as_drift() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = Database::open(dir.path().join("tally.db")).unwrap_or_else(|e| panic!("{e}"));
        let states = db.state();
        let aggregator = Aggregator::new(db.totals());
        let delivered = state("2015-11-16", "i-1", &[("a", 1), ("b", 2)]);
        let lost = state("2015-11-16", "i-2", &[("a", 10)]);
        let today = state("2015-11-17", "i-1", &[("a", 5)]);
        for s in [&delivered, &lost, &today] {
            states
                .put(s, &Precondition::Supersedes)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let change = StateChange::from_images(
            SequenceNumber::parse("1").unwrap_or_else(|e| panic!("{e}")),
            None,
            Some(StateItem::from(&delivered)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (_, failures) = aggregator.apply(&[change]).await;
        assert!(failures.is_empty());

        let request = decode_invocation(serde_json::json!({"reconcile": {"day": "yesterday"}}));
        let Ok(Invocation::Reconcile(request)) = request else {
            panic!("{request:?}");
        };
        let (date, report) =
            run_reconcile(&states, &aggregator, &request, at("2015-11-17T06:30:00Z"))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(date.as_str(), "2015-11-16");
        assert!(report.repaired);
        // i-2's bucket, and the total of a.
        assert_eq!(
            (report.partials_repaired, report.totals_repaired),
            (1, 1),
            "{report:?}"
        );
        assert_eq!(
            totals_of(&db, "2015-11-16").await,
            BTreeMap::from([
                ("a".to_owned(), Some(Exact(11))),
                ("b".to_owned(), Some(Exact(2)))
            ])
        );
        assert!(totals_of(&db, "2015-11-17").await.is_empty());
        // The drift becomes the metric the alarm watches.
        let line = tally_aws::metrics::line(Stage::Reconcile, "aggregate", &report, 0)
            .unwrap_or_else(|e| panic!("{e}"));
        let document: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(document["ReconcileDrift"], 2);

        // Repaired: the next run finds nothing.
        let (_, again) = run_reconcile(&states, &aggregator, &request, at("2015-11-17T07:30:00Z"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((again.partials_repaired, again.totals_repaired), (0, 0));
        let line = tally_aws::metrics::line(Stage::Reconcile, "aggregate", &again, 0)
            .unwrap_or_else(|e| panic!("{e}"));
        let document: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(document["ReconcileDrift"], 0);
    }

    #[test]
    fn yesterday_is_the_utc_day_before_even_across_a_month_and_a_leap_day() {
        for (now, yesterday) in [
            ("2015-11-17T06:30:00Z", "2015-11-16"),
            ("2016-03-01T00:00:00Z", "2016-02-29"),
            ("2016-01-01T23:59:59Z", "2015-12-31"),
            // 01:30 in Tokyo is still the 16th in UTC.
            ("2015-11-17T01:30:00+09:00", "2015-11-15"),
        ] {
            let date = Day::Yesterday
                .date(at(now))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(date.as_str(), yesterday, "{now}");
        }
    }
}
