//! Alerts: the state machine of each alert, its record, and deciding a
//! day's alerts on an evaluation.
//!
//! An alert is one rule on one date, and for a limit over a glob, one
//! counter: its identity is `(date, rule[#counter])`. Its record holds where
//! it stands (pending, firing, resolved), since when the condition held
//! (and, under `keep_firing_for:`, since when it stopped), when a message
//! was last sent, and the *generation* of the totals it was last moved on.
//! Alerts move by time ([`step`]): the same evaluation delivered twice
//! decides the same, and an evaluation of totals older than the record's
//! decides nothing.
//!
//! A transition that must be sent is written into the record's outbox in the
//! same conditional write that changes its state; the message
//! ([`super::message`]) is published after, and the outbox cleared. See
//! the rules stage for how the outbox is delivered when a process dies in
//! between.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use super::evaluate::{Check, Finding, STALE_NAMED, StaleByRule, alert_key, evaluate};
use super::expr::Totals;
use super::load::{Rule, RuleSet};
use super::message::notification;
pub use super::message::{Notification, SilentInstance, StaleSummary, Threshold};
use crate::key::Date;

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Held, but not yet on `for:` consecutive evaluations.
    Pending,
    Firing,
    /// Not holding (after firing or pending).
    Resolved,
}

/// The state a message announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// An alert's record, as the alert-state table stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    #[serde(rename = "Date")]
    pub date: Date,
    /// `rule` or `rule#counter`.
    #[serde(rename = "Alert")]
    pub alert: String,
    #[serde(rename = "Phase")]
    pub phase: Phase,
    /// When the condition started holding (pending or firing).
    #[serde(rename = "Since", default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// While firing under `keep_firing_for:`, when the condition stopped
    /// holding; cleared when it holds again.
    #[serde(
        rename = "ClearedSince",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cleared_since: Option<DateTime<Utc>>,
    #[serde(rename = "LastSent", default, skip_serializing_if = "Option::is_none")]
    pub last_sent: Option<DateTime<Utc>>,
    /// The totals' generation this record was last changed on.
    #[serde(rename = "Generation")]
    pub generation: u64,
    /// Messages decided so far.
    #[serde(rename = "Transitions")]
    pub transitions: u64,
    /// Bumped by every write; writes are conditional on it.
    #[serde(rename = "Version")]
    pub version: u64,
    /// A message decided but not yet known to be published. Stored as its
    /// JSON text: totals are `i128`, which DynamoDB's item mapping lacks.
    #[serde(
        rename = "Outbox",
        default,
        skip_serializing_if = "Option::is_none",
        with = "outbox_json"
    )]
    pub outbox: Option<Notification>,
    /// Until when the process that wrote the outbox is publishing it.
    #[serde(
        rename = "ClaimedUntil",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub claimed_until: Option<DateTime<Utc>>,
    /// Which evaluation holds that lease: a token of its own, so that a
    /// write whose response was lost, read back, is told from an identical
    /// write by a concurrent evaluation of the same totals.
    #[serde(rename = "ClaimedBy", default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
    /// When the store may forget the record (time to live, epoch seconds).
    #[serde(rename = "Expires")]
    pub expires: i64,
}

mod outbox_json {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Notification;

    pub fn serialize<S: Serializer>(
        outbox: &Option<Notification>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match outbox {
            Some(note) => {
                let text = serde_json::to_string(note).map_err(serde::ser::Error::custom)?;
                serializer.serialize_some(&text)
            }
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Notification>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| serde_json::from_str(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl AlertRecord {
    /// The item's size by DynamoDB's billing rules.
    pub fn item_size(&self) -> usize {
        serde_dynamo::to_item(self).map_or(0, |item| crate::capacity::item_size(&item))
    }
}

/// How long alert records outlive their date.
pub const RECORD_DAYS: i64 = 35;

/// What an evaluation does to an alert.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to write: the evaluation changes nothing, or the record was
    /// already moved on newer totals.
    Unchanged,
    /// Write this record (its outbox holds the message to send, if any).
    Write(Box<AlertRecord>),
}

/// Moves an alert on by one evaluation at `now`.
///
/// Time, not the number of evaluations, decides: `for:` fires once the
/// condition has held at every evaluation since `since` for that long,
/// `keep_firing_for:` resolves once it has been false at every evaluation
/// for that long, and `repeat:` reminds once that long has passed since the
/// last message. So the same evaluation delivered twice (a redelivered
/// batch, a tick on unchanged totals) decides the same, and only a tick
/// later in time can move an alert that no change touches. A record moved
/// on newer totals than these is left alone: this evaluation lost a race.
pub fn step(
    rule: &Rule,
    date: &Date,
    check: &Check,
    finding: &Finding,
    record: Option<&AlertRecord>,
    generation: u64,
    now: DateTime<Utc>,
) -> Step {
    if record.is_some_and(|r| r.generation > generation) {
        return Step::Unchanged;
    }
    let elapsed = |since: Option<DateTime<Utc>>, wanted: std::time::Duration| {
        since.is_some_and(|since| {
            now.signed_duration_since(since)
                .to_std()
                .is_ok_and(|d| d >= wanted)
        })
    };
    let previous = record.map(|r| r.phase);
    let mut next = record.cloned().unwrap_or_else(|| AlertRecord {
        date: date.clone(),
        alert: alert_key(&rule.name, check.counter.as_deref()),
        phase: Phase::Resolved,
        since: None,
        cleared_since: None,
        last_sent: None,
        generation: 0,
        transitions: 0,
        version: 0,
        outbox: None,
        claimed_until: None,
        claimed_by: None,
        expires: expiry(date),
    });
    let mut send: Option<(AlertState, bool)> = None;
    match (finding.holds, previous) {
        (true, Some(Phase::Firing)) => {
            let reminder_due = rule
                .repeat
                .is_some_and(|every| next.last_sent.is_none() || elapsed(next.last_sent, every));
            if reminder_due {
                send = Some((AlertState::Firing, true));
            } else if next.cleared_since.is_none() {
                return Step::Unchanged;
            }
            next.cleared_since = None;
        }
        (true, Some(Phase::Pending)) => {
            if !elapsed(next.since, rule.for_) {
                return Step::Unchanged;
            }
            next.phase = Phase::Firing;
            send = Some((AlertState::Firing, false));
        }
        (true, None | Some(Phase::Resolved)) => {
            next.since = Some(now);
            next.cleared_since = None;
            if rule.for_.is_zero() {
                next.phase = Phase::Firing;
                send = Some((AlertState::Firing, false));
            } else {
                next.phase = Phase::Pending;
            }
        }
        (false, Some(Phase::Firing)) => {
            if next.cleared_since.is_none() {
                next.cleared_since = Some(now);
            }
            if !rule.keep_firing_for.is_zero() && !elapsed(next.cleared_since, rule.keep_firing_for)
            {
                // Stays firing; the first false evaluation is written so
                // that the time is counted from it.
                if record.is_some_and(|r| r.cleared_since.is_some()) {
                    return Step::Unchanged;
                }
            } else {
                next.phase = Phase::Resolved;
                send = Some((AlertState::Resolved, false));
            }
        }
        (false, Some(Phase::Pending)) => {
            next.phase = Phase::Resolved;
            next.since = None;
        }
        (false, None | Some(Phase::Resolved)) => return Step::Unchanged,
    }
    next.generation = next.generation.max(generation);
    next.version += 1;
    if let Some((state, reminder)) = send {
        next.transitions += 1;
        next.last_sent = Some(now);
        next.outbox = Some(notification(
            rule, date, check, finding, &next, state, reminder, now,
        ));
        if state == AlertState::Resolved {
            next.since = None;
            next.cleared_since = None;
        }
    }
    Step::Write(Box::new(next))
}

/// When a day's alert records (and its mark) may be forgotten:
/// [`RECORD_DAYS`] after the day's midnight (UTC), in epoch seconds.
pub fn expiry(date: &Date) -> i64 {
    chrono::NaiveDate::parse_from_str(date.as_str(), "%Y-%m-%d")
        .ok()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map_or(0, |midnight| midnight.and_utc().timestamp())
        + RECORD_DAYS * 86_400
}

/// A rule that could not be evaluated on real totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub rule: String,
    pub counter: Option<String>,
    pub message: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rule {:?}", self.rule)?;
        if let Some(counter) = &self.counter {
            write!(f, " on counter {counter:?}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What one evaluation of a day decides: the records to write (those with
/// an outbox carry a message) and the rules that failed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decisions {
    pub writes: Vec<AlertRecord>,
    pub errors: Vec<RuleError>,
    /// Alerts evaluated.
    pub checked: usize,
}

/// Why a date is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger<'a> {
    /// A batch changed these counters' totals: only the alerts they can
    /// move are decided.
    Changed(&'a BTreeSet<String>),
    /// The clock: every alert is decided, whatever changed, so that `for:`,
    /// `keep_firing_for:` and `repeat:` move on totals that stand still,
    /// and an evaluation lost anywhere is redone; with the stale rules'
    /// verdicts the tick computed from the bucket's listing.
    Tick(&'a StaleByRule),
}

/// Evaluates the rules that `trigger` concerns on one day's totals and
/// moves each alert on; `records` are the day's alert records by key. The
/// rules stage and ops' rule tests both decide through this.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    rules: &RuleSet,
    date: &Date,
    totals: &dyn Totals,
    trigger: Trigger<'_>,
    records: &BTreeMap<String, AlertRecord>,
    generation: u64,
    now: DateTime<Utc>,
) -> Decisions {
    let mut decisions = Decisions::default();
    let ticked: BTreeSet<String>;
    let (changed, stale) = match trigger {
        Trigger::Changed(changed) => (changed, None),
        Trigger::Tick(stale) => {
            // Every counter with a total, and every counter an alert
            // record names: one that lost its total still resolves.
            ticked =
                totals
                    .iter()
                    .map(|(name, _)| name.to_owned())
                    .chain(records.keys().filter_map(|key| {
                        key.split_once('#').map(|(_, counter)| counter.to_owned())
                    }))
                    .collect();
            (&ticked, Some(stale))
        }
    };
    for check in evaluate(rules, totals, changed, stale) {
        decisions.checked += 1;
        let rule = &rules.rules()[check.rule];
        match &check.result {
            Ok(finding) => {
                let record = records.get(&check.alert_key(rules));
                if let Step::Write(next) =
                    step(rule, date, &check, finding, record, generation, now)
                {
                    decisions.writes.push(*next);
                }
            }
            Err(message) => decisions.errors.push(RuleError {
                rule: rule.name.clone(),
                counter: check.counter.clone(),
                message: message.clone(),
            }),
        }
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> RuleSet {
        RuleSet::load(&[("rules.yaml", yaml)]).unwrap()
    }

    fn day(pairs: &[(&str, i128)]) -> BTreeMap<String, i128> {
        pairs.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect()
    }

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_447_632_000 + minute * 60, 0).unwrap()
    }

    /// A day's totals as a test writes them.
    type Pairs<'a> = &'a [(&'a str, i128)];

    /// Runs evaluations in order, keeping records as a store would, and
    /// returns the messages each one sends.
    fn run(rules: &RuleSet, steps: &[(i64, &[(&str, i128)])]) -> Vec<Vec<Notification>> {
        let steps: Vec<(i64, Option<Pairs>)> = steps
            .iter()
            .map(|(minute, pairs)| (*minute, Some(*pairs)))
            .collect();
        run_ticking(rules, &steps)
    }

    /// The same, where `None` is a tick: the clock moved, the totals did not.
    fn run_ticking(rules: &RuleSet, steps: &[(i64, Option<Pairs>)]) -> Vec<Vec<Notification>> {
        let date = Date::parse("2015-11-16").unwrap();
        let mut replay = crate::rules::unit::Replay::default();
        steps
            .iter()
            .map(|(minute, pairs)| replay.evaluate(rules, &date, pairs.map(day), at(*minute)).0)
            .collect()
    }

    fn counts(sent: &[Vec<Notification>]) -> Vec<usize> {
        sent.iter().map(Vec::len).collect()
    }

    const LIMIT: &str = "rules:\n  - name: counter1-max\n    counter: COUNTER1\n    max: 150000\n    severity: critical\n";

    #[test]
    fn a_limit_fires_once_stays_silent_and_resolves() {
        let sent = run(
            &rules(LIMIT),
            &[
                (0, &[("COUNTER1", 191_122)]),
                (1, &[("COUNTER1", 191_200)]),
                (2, &[("COUNTER1", 1000)]),
            ],
        );
        assert_eq!(sent[0].len(), 1);
        let firing = &sent[0][0];
        assert_eq!(firing.state, AlertState::Firing);
        assert_eq!(firing.value, Some(191_122));
        assert_eq!(firing.alert, "2015-11-16/counter1-max#COUNTER1");
        assert_eq!(
            firing.subject(),
            "FIRING critical: counter1-max COUNTER1=191122 > 150000 (2015-11-16)"
        );
        assert_eq!(
            firing.summary,
            "COUNTER1 is 191122 on 2015-11-16: above the maximum 150000"
        );
        assert!(sent[1].is_empty());
        assert_eq!(sent[2][0].state, AlertState::Resolved);
        assert_eq!(sent[2][0].since, firing.since);
        assert_eq!(sent[2][0].transition, 2);
    }

    #[test]
    fn the_same_generation_twice_changes_nothing() {
        let rules = rules(LIMIT);
        let date = Date::parse("2015-11-16").unwrap();
        let totals = day(&[("COUNTER1", 200_000)]);
        let changed = BTreeSet::from(["COUNTER1".to_owned()]);
        let changed = Trigger::Changed(&changed);
        let first = decide(&rules, &date, &totals, changed, &BTreeMap::new(), 4, at(0));
        let record = first.writes[0].clone();
        let records = BTreeMap::from([(record.alert.clone(), record)]);
        let again = decide(&rules, &date, &totals, changed, &records, 4, at(1));
        assert!(again.writes.is_empty());
        // An evaluation of older totals, late, decides nothing either,
        // even where its totals say the alert is over.
        let older = day(&[("COUNTER1", 5)]);
        let late = decide(&rules, &date, &older, changed, &records, 3, at(2));
        assert!(late.writes.is_empty());
    }

    #[test]
    fn for_fires_once_the_condition_held_that_long_even_with_no_change() {
        let rules = rules(&format!("{LIMIT}    for: 10m\n"));
        let high: &[(&str, i128)] = &[("COUNTER1", 200_000)];
        let sent = run_ticking(
            &rules,
            &[
                (0, Some(high)),
                (5, None),
                (9, None),
                (10, None),
                (11, None),
            ],
        );
        assert_eq!(counts(&sent), [0, 0, 0, 1, 0]);
        assert_eq!(
            sent[3][0].since,
            at(0),
            "firing since the condition began to hold"
        );
    }

    #[test]
    fn for_starts_again_after_an_evaluation_where_the_condition_failed() {
        let rules = rules("rules:\n  - name: hot\n    match: 'cpu.*'\n    max: 10\n    for: 3m\n");
        let sent = run(
            &rules,
            &[
                (0, &[("cpu.a", 11)]),
                (1, &[("cpu.a", 12)]),
                (2, &[("cpu.a", 5)]),
                (3, &[("cpu.a", 13)]),
                (5, &[("cpu.a", 14)]),
                (6, &[("cpu.a", 15)]),
            ],
        );
        assert_eq!(counts(&sent), [0, 0, 0, 0, 0, 1]);
        assert_eq!(sent[5][0].labels["counter"], "cpu.a");
        assert_eq!(sent[5][0].since, at(3));
    }

    #[test]
    fn keep_firing_for_resolves_only_after_the_condition_stayed_false_that_long() {
        let rules = rules(&format!("{LIMIT}    keep_firing_for: 10m\n"));
        let high: &[(&str, i128)] = &[("COUNTER1", 200_000)];
        let low: &[(&str, i128)] = &[("COUNTER1", 100)];
        let sent = run_ticking(
            &rules,
            &[
                (0, Some(high)),
                (1, Some(low)),
                (6, Some(high)),
                (7, Some(low)),
                (16, None),
                (17, None),
                (18, None),
            ],
        );
        // Back above at minute 6: the ten minutes count from minute 7.
        assert_eq!(counts(&sent), [1, 0, 0, 0, 0, 1, 0]);
        let resolved = &sent[5][0];
        assert_eq!(resolved.state, AlertState::Resolved);
        assert_eq!(
            resolved.reason.as_deref(),
            Some("back within limits, and stayed so for 10m")
        );
        assert!(resolved.text().contains("reason      back within limits"));
    }

    #[test]
    fn reminders_come_on_ticks_while_the_total_stands_still() {
        let rules = rules(&format!("{LIMIT}    repeat: 30m\n"));
        let high: &[(&str, i128)] = &[("COUNTER1", 200_000)];
        let sent = run_ticking(
            &rules,
            &[
                (0, Some(high)),
                (29, None),
                (30, None),
                (45, None),
                (60, None),
            ],
        );
        assert_eq!(counts(&sent), [1, 0, 1, 0, 1]);
        assert!(sent[2][0].reminder && sent[4][0].reminder);
    }

    #[test]
    fn a_tick_resolves_an_alert_whose_counter_lost_its_total() {
        let rules = rules("rules:\n  - name: errors-high\n    match: 'errors.*'\n    max: 10\n");
        let date = Date::parse("2015-11-16").unwrap();
        let changed = BTreeSet::from(["errors.db".to_owned()]);
        let fired = decide(
            &rules,
            &date,
            &day(&[("errors.db", 11)]),
            Trigger::Changed(&changed),
            &BTreeMap::new(),
            1,
            at(0),
        );
        let record = fired.writes[0].clone();
        let records = BTreeMap::from([(record.alert.clone(), record)]);
        // The batch that removed the total was lost; the tick finds the
        // record and the missing total.
        let ticked = decide(
            &rules,
            &date,
            &day(&[]),
            Trigger::Tick(&StaleByRule::new()),
            &records,
            2,
            at(1),
        );
        let resolved = ticked.writes[0].outbox.as_ref().unwrap();
        assert_eq!(resolved.state, AlertState::Resolved);
        assert_eq!(
            resolved.reason.as_deref(),
            Some("no longer reported: the counter has no contributor today")
        );
        assert_eq!(
            resolved.summary,
            "errors.db is absent on 2015-11-16: no longer reported"
        );
    }

    #[test]
    fn a_reminder_comes_only_after_the_repeat_interval() {
        let rules = rules(&format!("{LIMIT}    repeat: 1h\n"));
        let sent = run(
            &rules,
            &[
                (0, &[("COUNTER1", 200_000)]),
                (30, &[("COUNTER1", 200_001)]),
                (61, &[("COUNTER1", 200_002)]),
                (70, &[("COUNTER1", 200_003)]),
            ],
        );
        let counts: Vec<usize> = sent.iter().map(Vec::len).collect();
        assert_eq!(counts, [1, 0, 1, 0]);
        assert!(sent[2][0].reminder);
        assert!(sent[2][0].subject().starts_with("STILL FIRING critical:"));
    }

    #[test]
    fn a_removed_counter_resolves_its_alert() {
        let sent = run(&rules(LIMIT), &[(0, &[("COUNTER1", 200_000)]), (1, &[])]);
        assert_eq!(sent[1][0].state, AlertState::Resolved);
        assert_eq!(sent[1][0].value, None);
    }

    #[test]
    fn a_failing_expression_is_reported_and_the_other_rules_still_run() {
        let rules = rules(&format!(
            "{LIMIT}  - name: ratio\n    expr: 'bids / won > 2'\n"
        ));
        let date = Date::parse("2015-11-16").unwrap();
        let totals = day(&[("COUNTER1", 200_000), ("bids", 4), ("won", 0)]);
        let changed = totals.keys().cloned().collect();
        let decisions = decide(
            &rules,
            &date,
            &totals,
            Trigger::Changed(&changed),
            &BTreeMap::new(),
            1,
            at(0),
        );
        assert_eq!(decisions.errors.len(), 1);
        assert_eq!(decisions.errors[0].rule, "ratio");
        assert!(decisions.errors[0].to_string().contains("division"));
        assert_eq!(decisions.writes.len(), 1);
    }

    #[test]
    fn only_rules_a_change_can_affect_are_evaluated() {
        let rules = rules(&format!(
            "{LIMIT}  - name: errors\n    expr: 'sum(\"err.*\") > 3'\n"
        ));
        let totals = day(&[("COUNTER1", 5), ("err.a", 9)]);
        let checks = evaluate(&rules, &totals, &BTreeSet::from(["other".to_owned()]), None);
        assert!(checks.is_empty());
        let checks = evaluate(
            &rules,
            &totals,
            &BTreeSet::from(["other".to_owned()]),
            Some(&StaleByRule::new()),
        );
        assert_eq!(checks.len(), 1, "a tick evaluates every expression");
        let checks = evaluate(&rules, &totals, &BTreeSet::from(["err.b".to_owned()]), None);
        assert_eq!(checks.len(), 1);
        assert!(checks[0].result.as_ref().unwrap().holds);
    }

    #[test]
    fn subjects_are_ascii_and_short() {
        let rules = rules("rules:\n  - name: long\n    match: '*'\n    max: 1\n");
        let name = format!("заказы-{}", "x".repeat(200));
        let sent = run(&rules, &[(0, &[(name.as_str(), 2)])]);
        let subject = sent[0][0].subject();
        assert!(subject.is_ascii() && subject.len() < 100, "{subject}");
        assert!(subject.ends_with("..."));
        assert!(sent[0][0].text().contains(&name));
    }

    #[test]
    fn records_and_messages_survive_the_item_and_json_mappings() {
        let sent = run(&rules(LIMIT), &[(0, &[("COUNTER1", 191_122)])]);
        let note = sent[0][0].clone();
        let json: serde_json::Value = serde_json::to_value(&note).unwrap();
        assert_eq!(json["value"], 191_122);
        assert_eq!(json["threshold"]["max"], 150_000);
        assert_eq!(json["state"], "firing");
        assert_eq!(json["severity"], "critical");
        let rules = rules(LIMIT);
        let date = Date::parse("2015-11-16").unwrap();
        let totals = day(&[("COUNTER1", i128::from(i64::MAX) * 3)]);
        let changed = BTreeSet::from(["COUNTER1".to_owned()]);
        let record = decide(
            &rules,
            &date,
            &totals,
            Trigger::Changed(&changed),
            &BTreeMap::new(),
            1,
            at(0),
        )
        .writes
        .remove(0);
        let item: serde_dynamo::Item = serde_dynamo::to_item(&record).unwrap();
        let back: AlertRecord = serde_dynamo::from_item(item).unwrap();
        assert_eq!(back, record);
    }
}
