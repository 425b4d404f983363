//! The aggregate Lambda's second job: the scheduled `reconcile`, the safety
//! net under the stream path.
//!
//! The function is invoked two ways: by the state table's stream, with a
//! batch of records, and by EventBridge Scheduler, with
//! `{"reconcile": {"day": "yesterday"}}` or `{"reconcile": {"day":
//! "today"}}`. [`decode_invocation`] tells them apart by the `reconcile`
//! member, which no stream batch has; a batch goes to
//! [`Aggregator::handle`](crate::Aggregator::handle) as before.
//!
//! Why this function and not one of its own: reconcile is the aggregate
//! stage's code over the same tables (it repairs through the stage's
//! [`Aggregator`]), so the wiring, settings and role are the stage's, and a
//! function of its own would be a second zip to build, ship and keep at the
//! same version as the stage it repairs. The role gains only the two
//! queries reconcile makes (the day's state, the day's totals by date).
//!
//! **Yesterday** is checked and repaired, once its late deliveries are over
//! (the schedule starts after ingest's longest retry of an upload event).
//!
//! **Today** is only checked, and only drift that holds still is counted. A
//! repair rebuilds a partial item from the state table and keeps its
//! `AppliedThrough`, so a change whose stream record is not folded yet would
//! be folded a second time; while a day's uploads flow there are always such
//! changes (the stream's batching window), and one check counts them as
//! drift. So today is checked twice, [`SETTLE`] apart (longer than the stage
//! takes to fold what is in the stream, when it keeps up), and a counter
//! counts only if both checks found the same stored total and the same
//! recomputed one. Say a check saw in-flight changes summing to d ≠ 0: for
//! the second to see the same pair, the changes folded in between must sum
//! to −d (the stored total did not move) while those written in between sum
//! to zero (the recomputed one did not), so d must come back in flight. With
//! counters that only grow, every change is ≥ 0 and that cannot happen; with
//! counters that go both ways it needs an exact cancellation. Drift on a
//! counter that moves every minute is never confirmed the same day: the next
//! morning's run of yesterday finds and repairs it. A stage stuck behind
//! the stream (its `IteratorAge` alarm) also holds still and is counted.
//!
//! Reconcile holds one bucket's states in memory at a time (see
//! [`crate::reconcile`]), so the function's 128 MB does for any fleet the
//! state table's 64 buckets spread.
//!
//! The run's report is logged whole, and its drift (yesterday: partial items
//! plus totals that differed, each repaired; today: totals whose drift held
//! still) becomes the metric `ReconcileDrift` (`tally_aws::metrics::RECONCILE`),
//! on which an alarm notifies operations: drift means the stream path lost
//! or doubled a change, which it never should.

use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::dynamodb::Event;
use chrono::{DateTime, Days, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tally_core::key::Date;
use tally_core::ports::{StateStore, StoreError, TotalsStore};

use crate::Aggregator;
use crate::reconcile::{ReconcileReport, TotalDrift, reconcile};

/// How long today's check waits between its two looks: three times the
/// template's default batching window (20 s), so the changes in flight at
/// the first look are folded by the second when the stage keeps up.
pub const SETTLE: Duration = Duration::from_secs(60);

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

/// The day a scheduled reconcile checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Day {
    /// The UTC day before the invocation's: checked and repaired.
    Yesterday,
    /// The invocation's UTC day: checked twice, never repaired.
    Today,
}

impl Day {
    /// The date this day names, at `now`.
    pub fn date(self, now: DateTime<Utc>) -> Result<Date, StoreError> {
        let day = match self {
            Day::Yesterday => now.date_naive().checked_sub_days(Days::new(1)),
            Day::Today => Some(now.date_naive()),
        };
        let text = day
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        Date::parse(&text).map_err(|e| StoreError::new(format!("the day of {now} as a date"), e))
    }

    fn name(self) -> &'static str {
        match self {
            Day::Yesterday => "yesterday",
            Day::Today => "today",
        }
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
            "a reconcile request is {{\"reconcile\": {{\"day\": \"yesterday\"}}}} or \"today\" ({e})"
        ))
    })?;
    let day = match scheduled.reconcile.day.as_str() {
        "yesterday" => Day::Yesterday,
        "today" => Day::Today,
        other => {
            return Err(fail(format!(
                "reconcile day {other:?} is not one it takes: \"yesterday\" or \"today\""
            )));
        }
    };
    Ok(Invocation::Reconcile(ReconcileRequest { day }))
}

/// What a scheduled reconcile found, for the log and the metric.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScheduledReport {
    /// `yesterday` or `today`.
    pub day: String,
    pub date: String,
    /// What the alarm counts: yesterday, the partial items and totals that
    /// differed (all repaired); today, the totals whose drift held still.
    pub drift: u64,
    /// Yesterday's drift was written right; today's is left to tomorrow's run.
    pub repaired: bool,
    /// Today's totals whose drift held still between the two checks.
    pub confirmed: Vec<TotalDrift>,
    /// The (last) check's own report.
    pub reconcile: ReconcileReport,
}

/// Runs the requested reconcile as of `now`. Today's check calls `settle`
/// between its two looks (in the Lambda, a sleep of [`SETTLE`]).
pub async fn run_reconcile<S, T, F, P>(
    states: &S,
    aggregator: &Aggregator<T>,
    request: &ReconcileRequest,
    now: DateTime<Utc>,
    settle: P,
) -> Result<ScheduledReport, StoreError>
where
    S: StateStore,
    T: TotalsStore,
    P: FnOnce() -> F,
    F: Future<Output = ()>,
{
    let date = request.day.date(now)?;
    let mut report = ScheduledReport {
        day: request.day.name().to_owned(),
        date: date.to_string(),
        ..ScheduledReport::default()
    };
    match request.day {
        Day::Yesterday => {
            let repaired = reconcile(states, aggregator, &date, true).await?;
            report.drift = repaired.partials_repaired + repaired.totals_repaired;
            report.repaired = true;
            report.reconcile = repaired;
        }
        Day::Today => {
            let first = reconcile(states, aggregator, &date, false).await?;
            if !first.drift.is_empty() {
                settle().await;
                let second = reconcile(states, aggregator, &date, false).await?;
                report.confirmed = second
                    .drift
                    .iter()
                    .filter(|d| first.drift.contains(d))
                    .cloned()
                    .collect();
                report.drift = report.confirmed.len() as u64;
                report.reconcile = second;
            } else {
                report.reconcile = first;
            }
        }
    }
    Ok(report)
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
    use tally_embedded::totals_tables::SqliteTotalsStore;

    use super::*;

    fn request(day: &str) -> ReconcileRequest {
        match decode_invocation(serde_json::json!({"reconcile": {"day": day}})) {
            Ok(Invocation::Reconcile(request)) => request,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_schedulers_events_are_reconciles_of_yesterday_and_today() {
        assert_eq!(request("yesterday").day, Day::Yesterday);
        assert_eq!(request("today").day, Day::Today);
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
                error.contains(r#"{"reconcile": {"day": "yesterday"}} or "today""#),
                "{payload}: {error}"
            );
        }
        let error = decode_invocation(serde_json::json!({"reconcile": {"day": "monday"}}))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains(r#""monday" is not one it takes: "yesterday" or "today""#),
            "{error}"
        );
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

    /// A fresh database with `states` written to the state table.
    async fn world(states: &[&InstanceState]) -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = Database::open(dir.path().join("tally.db")).unwrap_or_else(|e| panic!("{e}"));
        for s in states {
            db.state()
                .put(s, &Precondition::Supersedes)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        (dir, db)
    }

    /// The stage folding `new` (over `old`), as the stream would deliver it.
    async fn fold(
        aggregator: &Aggregator<SqliteTotalsStore>,
        sequence: &str,
        old: Option<&InstanceState>,
        new: &InstanceState,
    ) {
        let change = StateChange::from_images(
            SequenceNumber::parse(sequence).unwrap_or_else(|e| panic!("{e}")),
            old.map(StateItem::from),
            Some(StateItem::from(new)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (_, failures) = aggregator.apply(&[change]).await;
        assert!(failures.is_empty());
    }

    fn drift_metric(report: &ScheduledReport) -> Value {
        let line = tally_aws::metrics::line(Stage::Reconcile, "aggregate", report, 0)
            .unwrap_or_else(|e| panic!("{e}"));
        let document: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}"));
        document["ReconcileDrift"].clone()
    }

    async fn never_settles() {
        panic!("yesterday's reconcile does not wait")
    }

    /// The stream never delivered yesterday's last upload (say it expired
    /// while the stage was down): the morning's run repairs the day and
    /// says how much drifted; today's state is left to the stream.
    #[tokio::test]
    async fn the_morning_run_repairs_yesterdays_lost_change_and_reports_it_as_drift() {
        let delivered = state("2015-11-16", "i-1", &[("a", 1), ("b", 2)]);
        let lost = state("2015-11-16", "i-2", &[("a", 10)]);
        let today = state("2015-11-17", "i-1", &[("a", 5)]);
        let (_dir, db) = world(&[&delivered, &lost, &today]).await;
        let (states, aggregator) = (db.state(), Aggregator::new(db.totals()));
        fold(&aggregator, "1", None, &delivered).await;

        let morning = at("2015-11-17T06:30:00Z");
        let report = run_reconcile(
            &states,
            &aggregator,
            &request("yesterday"),
            morning,
            never_settles,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (report.day.as_str(), report.date.as_str()),
            ("yesterday", "2015-11-16")
        );
        assert!(report.repaired);
        // i-2's bucket, and the total of a.
        let r = &report.reconcile;
        assert_eq!(
            (r.partials_repaired, r.totals_repaired),
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
        assert_eq!(drift_metric(&report), 2);

        // Repaired: the next run finds nothing.
        let again = run_reconcile(
            &states,
            &aggregator,
            &request("yesterday"),
            morning,
            never_settles,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(drift_metric(&again), 0);
    }

    /// Today, i-2's upload is in the stream when the check first looks; the
    /// stage folds it while the check settles. Not drift, and nothing written.
    #[tokio::test]
    async fn todays_check_does_not_count_a_change_the_stage_folds_while_it_settles() {
        let folded = state("2015-11-17", "i-1", &[("a", 1)]);
        let in_flight = state("2015-11-17", "i-2", &[("a", 10)]);
        let (_dir, db) = world(&[&folded, &in_flight]).await;
        let (states, aggregator) = (db.state(), Aggregator::new(db.totals()));
        fold(&aggregator, "1", None, &folded).await;

        let noon = at("2015-11-17T12:00:00Z");
        let report = run_reconcile(&states, &aggregator, &request("today"), noon, || {
            fold(&aggregator, "2", None, &in_flight)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (report.day.as_str(), report.date.as_str()),
            ("today", "2015-11-17")
        );
        assert!(!report.repaired);
        assert!(report.confirmed.is_empty(), "{report:?}");
        assert_eq!(drift_metric(&report), 0);
        assert_eq!(
            totals_of(&db, "2015-11-17").await,
            BTreeMap::from([("a".to_owned(), Some(Exact(11)))])
        );
    }

    /// A counter that keeps moving: the first look's in-flight change is
    /// folded while the check settles, and another arrives. Not drift.
    #[tokio::test]
    async fn todays_check_does_not_count_a_counter_that_moved_while_it_settled() {
        let first = state("2015-11-17", "i-1", &[("a", 1)]);
        let mut second = state("2015-11-17", "i-1", &[("a", 2)]);
        second.ordering = OrderingKey::from_sequencer("2").unwrap_or_else(|e| panic!("{e}"));
        let (_dir, db) = world(&[&first]).await;
        let (states, aggregator) = (db.state(), Aggregator::new(db.totals()));

        let report = run_reconcile(
            &states,
            &aggregator,
            &request("today"),
            at("2015-11-17T12:00:00Z"),
            || async {
                fold(&aggregator, "1", None, &first).await;
                db.state()
                    .put(&second, &Precondition::Supersedes)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        // The second look sees i-1's newer upload in flight: drift, but not
        // the same drift as the first look's.
        assert_eq!(report.reconcile.totals_repaired, 1, "{report:?}");
        assert_eq!(drift_metric(&report), 0);
    }

    /// i-2's change was lost today (a dead-lettered batch) and nothing moves
    /// its counter: both looks see the same drift. It is counted and left to
    /// tomorrow morning's repair.
    #[tokio::test]
    async fn todays_check_counts_a_lost_change_that_holds_still_and_writes_nothing() {
        let folded = state("2015-11-17", "i-1", &[("a", 1), ("b", 4)]);
        let lost = state("2015-11-17", "i-2", &[("a", 10)]);
        let (_dir, db) = world(&[&folded, &lost]).await;
        let (states, aggregator) = (db.state(), Aggregator::new(db.totals()));
        fold(&aggregator, "1", None, &folded).await;

        let report = run_reconcile(
            &states,
            &aggregator,
            &request("today"),
            at("2015-11-17T12:00:00Z"),
            || async {},
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!report.repaired);
        let counters: Vec<&str> = report
            .confirmed
            .iter()
            .map(|d| d.counter.as_str())
            .collect();
        assert_eq!(counters, ["a"], "{report:?}");
        assert_eq!(
            (report.confirmed[0].stored, report.confirmed[0].recomputed),
            (Some(Exact(1)), Some(Exact(11)))
        );
        assert_eq!(drift_metric(&report), 1);
        assert_eq!(
            totals_of(&db, "2015-11-17").await,
            BTreeMap::from([
                ("a".to_owned(), Some(Exact(1))),
                ("b".to_owned(), Some(Exact(4)))
            ])
        );
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
