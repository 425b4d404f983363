//! Ops' rule tests: "given these totals, expect these alerts".
//!
//! A test file (`rules-config/tests/*.yaml`) lists tests; each runs a
//! sequence of evaluations, each giving the day's totals (counters not
//! listed have none) and the messages that evaluation must send: an empty
//! list means silent. Evaluations go through the same decision code as the
//! rules stage, with a record store in memory: each is a new generation,
//! and the counters whose totals differ from the previous evaluation's are
//! the changed ones. An evaluation without `totals:` is a *tick*: the
//! clock moves and nothing changed, and every rule is decided again, as the
//! rules stage does on its schedule. `after:` moves the clock (default one
//! minute), for `for:`, `keep_firing_for:` and `repeat:`.
//!
//! ```yaml
//! tests:
//!   - name: COUNTER1 above the maximum fires once, then resolves
//!     evaluations:
//!       - totals: {COUNTER1: 191122}
//!         alerts: [{rule: counter1-max, state: firing, counter: COUNTER1}]
//!       - totals: {COUNTER1: 191500}
//!         alerts: []
//!       - totals: {COUNTER1: 1000}
//!         alerts: [{rule: counter1-max, state: resolved}]
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use marked_yaml::{LoaderOptions, Node};
use schemars::JsonSchema;
use serde::Deserialize;

use super::alert::{
    AlertRecord, AlertState, Notification, RuleError, StaleByRule, Trigger, decide,
};
use super::expr::Totals;
use super::load::{Condition, Location, RuleSet};
use super::spec::Severity;
use crate::fleet::Fleet;
use crate::key::Date;
use crate::ports::ListedObject;

/// A rule-test file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "tally rule tests")]
pub struct TestFileSpec {
    pub tests: Vec<TestSpec>,
}

/// One test: evaluations in order.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// What the test shows, printed when it fails.
    pub name: String,
    /// The date evaluated (default 2015-11-16).
    pub date: Option<String>,
    pub evaluations: Vec<EvaluationSpec>,
}

/// One evaluation: the day's totals, and the messages it must send.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationSpec {
    /// Time since the previous evaluation (`30s`, `30m`, `2h`); default 1m.
    pub after: Option<String>,
    /// Every total of the day at this evaluation. Left out, the evaluation
    /// is a tick: the totals stand still and every rule is decided again.
    pub totals: Option<BTreeMap<String, i64>>,
    /// How many instances have a live body, for `instances()`; once given,
    /// it stays until given again.
    pub instances: Option<i64>,
    /// How many instances report each counter, for `contributors()`
    /// (counters left out have none); once given, it stays until given
    /// again.
    pub contributors: Option<BTreeMap<String, i64>>,
    /// Each instance's uploads as the bucket lists them, for stale rules:
    /// `"08:00"` (its object for the test's date was last written then),
    /// `"yesterday 23:59"` (its object for the day before), `"deleted
    /// today"` (its object for the test's date was deleted), several joined
    /// by commas. Once given, they stay until given again.
    pub uploads: Option<BTreeMap<String, String>>,
    /// The messages sent, in any order; `[]` means none.
    pub alerts: Vec<ExpectedAlert>,
    /// Rules expected to fail to evaluate (division by zero, a missing counter).
    #[serde(default)]
    pub rule_errors: Vec<String>,
}

/// A message expected; fields left out are not compared.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectedAlert {
    pub rule: String,
    pub state: ExpectedState,
    pub counter: Option<String>,
    pub severity: Option<Severity>,
    pub value: Option<i64>,
    pub summary: Option<String>,
    pub reminder: Option<bool>,
    /// Why a resolution resolved (`back within limits`, ...).
    pub reason: Option<String>,
    /// Labels that must be on the message (others may be too).
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExpectedState {
    Firing,
    Resolved,
}

/// A failed or unreadable test, at the place in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub location: Location,
    pub test: String,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.test.is_empty() {
            write!(f, "{}: {}", self.location, self.message)
        } else {
            write!(
                f,
                "{}: test {:?}: {}",
                self.location, self.test, self.message
            )
        }
    }
}

/// What running a test file gave.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub passed: Vec<String>,
    pub failures: Vec<Failure>,
}

/// The JSON Schema of a rule-test file.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(TestFileSpec);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Runs one test file against a rule set.
pub fn run_file(rules: &RuleSet, file: &str, text: &str) -> Outcome {
    let mut outcome = Outcome::default();
    let at = |node: Option<&Node>| {
        let start = node.and_then(super::load::start_of);
        Location {
            file: file.to_owned(),
            line: start.map_or(1, |m| m.line()),
            column: start.map_or(1, |m| m.column()),
        }
    };
    let fail = |outcome: &mut Outcome, location: Location, test: &str, message: String| {
        outcome.failures.push(Failure {
            location,
            test: test.to_owned(),
            message,
        })
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Err((line, message)) = super::load::guard_yaml(text) {
        let location = Location {
            file: file.to_owned(),
            line,
            column: 1,
        };
        fail(&mut outcome, location, "", message);
        return outcome;
    }
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .toplevel_mapping();
    let root = match marked_yaml::parse_yaml_with_options(0, text, options) {
        Ok(root) => root,
        Err(e) => {
            let message = e.to_string();
            fail(
                &mut outcome,
                at(None),
                "",
                format!("not a valid test file: {message}"),
            );
            return outcome;
        }
    };
    let spec: TestFileSpec = match marked_yaml::from_node(&root) {
        Ok(spec) => spec,
        Err(e) => {
            let mark = e.start_mark();
            fail(
                &mut outcome,
                Location {
                    file: file.to_owned(),
                    line: mark.map_or(1, |m| m.line()),
                    column: mark.map_or(1, |m| m.column()),
                },
                "",
                e.to_string(),
            );
            return outcome;
        }
    };
    let test_nodes = root
        .as_mapping()
        .and_then(|m| m.get_sequence("tests"))
        .map(|s| s.iter().collect::<Vec<_>>())
        .unwrap_or_default();
    for (index, test) in spec.tests.iter().enumerate() {
        let test_node = test_nodes.get(index).copied();
        let evaluation_nodes: Vec<&Node> = test_node
            .and_then(Node::as_mapping)
            .and_then(|m| m.get_sequence("evaluations"))
            .map(|s| s.iter().collect())
            .unwrap_or_default();
        let before = outcome.failures.len();
        let result = run_test(rules, test, |j| at(evaluation_nodes.get(j).copied()));
        for (location, message) in result {
            fail(&mut outcome, location, &test.name, message);
        }
        if outcome.failures.len() == before {
            outcome.passed.push(test.name.clone());
        }
    }
    outcome
}

fn run_test(
    rules: &RuleSet,
    test: &TestSpec,
    location_of: impl Fn(usize) -> Location,
) -> Vec<(Location, String)> {
    let mut failures = Vec::new();
    let date_text = test.date.clone().unwrap_or_else(|| "2015-11-16".to_owned());
    let date = match Date::parse(&date_text) {
        Ok(date) => date,
        Err(e) => return vec![(location_of(0), format!("date: {e}"))],
    };
    for expected in test.evaluations.iter().flat_map(|e| &e.alerts) {
        if rules.rule(&expected.rule).is_none() {
            failures.push((
                location_of(0),
                format!(
                    "expects an alert of rule {:?}, which no rules file defines",
                    expected.rule
                ),
            ));
        }
    }
    if !failures.is_empty() {
        return failures;
    }
    // The clock starts at the test's date's midnight (UTC).
    let mut now: DateTime<Utc> = chrono::NaiveDate::parse_from_str(date.as_str(), "%Y-%m-%d")
        .ok()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map_or_else(DateTime::<Utc>::default, |midnight| midnight.and_utc());
    let mut replay = Replay::default();
    for (index, evaluation) in test.evaluations.iter().enumerate() {
        let step = match evaluation.after.as_deref().map(super::duration::parse) {
            None => std::time::Duration::from_secs(60),
            Some(Ok(duration)) => duration,
            Some(Err(e)) => {
                failures.push((location_of(index), format!("after: {e}")));
                return failures;
            }
        };
        now += chrono::Duration::from_std(step).unwrap_or_default();
        let totals: Option<BTreeMap<String, i128>> = evaluation.totals.as_ref().map(|totals| {
            totals
                .iter()
                .map(|(name, value)| (name.clone(), i128::from(*value)))
                .collect()
        });
        if evaluation.instances.is_some() {
            replay.instances = evaluation.instances;
        }
        if let Some(contributors) = &evaluation.contributors {
            replay.contributors = Some(contributors.clone());
        }
        if let Some(uploads) = &evaluation.uploads {
            match Uploads::parse(&date, uploads) {
                Ok(uploads) => replay.uploads = Some(uploads),
                Err(e) => {
                    failures.push((location_of(index), format!("uploads: {e}")));
                    return failures;
                }
            }
        }
        let (sent, errors) = replay.evaluate(rules, &date, totals, now);
        let here = location_of(index);
        let mut unmatched: Vec<&Notification> = sent.iter().collect();
        for expected in &evaluation.alerts {
            match unmatched.iter().position(|note| matches(expected, note)) {
                Some(found) => {
                    unmatched.remove(found);
                }
                None => failures.push((
                    here.clone(),
                    format!(
                        "evaluation {}: expected {} but it sent {}",
                        index + 1,
                        describe_expected(expected),
                        describe_sent(&sent)
                    ),
                )),
            }
        }
        for note in unmatched {
            failures.push((
                here.clone(),
                format!(
                    "evaluation {}: it also sent {} ({:?}), which the test does not expect",
                    index + 1,
                    note.subject(),
                    note.summary
                ),
            ));
        }
        // A rule that reads the fleet's counts, or a stale rule, cannot be
        // judged by a test that gives no counts, or no uploads: it is left
        // out rather than failed.
        let counts_given = replay.instances.is_some() || replay.contributors.is_some();
        let uploads_given = replay.uploads.is_some();
        let judged = |rule: &str| {
            rules.rule(rule).is_none_or(|rule| match &rule.condition {
                Condition::Expr(expression) => counts_given || !expression.reads_fleet(),
                Condition::Stale { .. } => uploads_given,
                Condition::Limit { .. } => true,
            })
        };
        let errors: Vec<&RuleError> = errors.iter().filter(|e| judged(&e.rule)).collect();
        let errored: BTreeSet<&str> = errors.iter().map(|e| e.rule.as_str()).collect();
        let expected_errors: BTreeSet<&str> =
            evaluation.rule_errors.iter().map(String::as_str).collect();
        if errored != expected_errors {
            failures.push((
                here.clone(),
                format!(
                    "evaluation {}: rule errors were [{}], expected [{}]",
                    index + 1,
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                    evaluation.rule_errors.join(", ")
                ),
            ));
        }
    }
    failures
}

/// Evaluations in a row with the alert records kept in memory, as the
/// rules stage keeps them in its table: each evaluation is the next
/// generation, and the counters whose totals differ from the previous
/// evaluation's are the changed ones. Ops' rule tests run on it.
#[derive(Debug, Default)]
pub struct Replay {
    records: BTreeMap<String, AlertRecord>,
    previous: BTreeMap<String, i128>,
    generation: u64,
    /// The fleet's counts, when the test gives them.
    pub instances: Option<i64>,
    pub contributors: Option<BTreeMap<String, i64>>,
    /// The bucket's uploads, when the test gives them, for stale rules.
    pub uploads: Option<Uploads>,
}

/// A test's bucket as stale rules see it: the listings of the test's date
/// and of the day before, and the objects deleted on the test's date.
#[derive(Debug, Clone, Default)]
pub struct Uploads {
    today: Vec<ListedObject>,
    yesterday: Vec<ListedObject>,
    deleted: BTreeSet<String>,
}

impl Uploads {
    fn parse(date: &Date, given: &BTreeMap<String, String>) -> Result<Uploads, String> {
        let day = chrono::NaiveDate::parse_from_str(date.as_str(), "%Y-%m-%d")
            .map_err(|e| format!("date {date}: {e}"))?;
        let previous = day
            .pred_opt()
            .ok_or_else(|| format!("date {date} has no day before it"))?;
        let mut uploads = Uploads::default();
        for (instance, text) in given {
            for part in text.split(',').map(str::trim) {
                let (day, time) = match part.strip_prefix("yesterday ") {
                    _ if part == "deleted today" => {
                        uploads.deleted.insert(instance.clone());
                        continue;
                    }
                    Some(time) => (previous, time),
                    None => (day, part),
                };
                let time = chrono::NaiveTime::parse_from_str(time, "%H:%M:%S")
                    .or_else(|_| chrono::NaiveTime::parse_from_str(time, "%H:%M"))
                    .map_err(|_| {
                        format!(
                            "{instance}: {part:?} is not an upload; write \"08:00\", \"yesterday 23:59\" or \"deleted today\""
                        )
                    })?;
                let listed = ListedObject {
                    key: format!(
                        "{}/{}/{instance}",
                        crate::key::DEFAULT_PREFIX,
                        day.format("%Y-%m-%d")
                    ),
                    etag: String::new(),
                    last_modified: day.and_time(time).and_utc(),
                    size: 0,
                };
                if day == previous {
                    uploads.yesterday.push(listed);
                } else {
                    uploads.today.push(listed);
                }
            }
        }
        Ok(uploads)
    }

    /// Each stale rule's verdict at `now`, as the rules stage computes it
    /// from the bucket's listings and the state table's tombstones.
    fn verdicts(&self, rules: &RuleSet, date: &Date, now: DateTime<Utc>) -> StaleByRule {
        rules
            .rules()
            .iter()
            .filter_map(|rule| match &rule.condition {
                Condition::Stale { thresholds, .. } => {
                    let fleet = Fleet::new(
                        date,
                        crate::key::DEFAULT_PREFIX,
                        &self.today,
                        Some(&self.yesterday),
                        now,
                        thresholds,
                    );
                    Some((rule.name.clone(), fleet.staleness(&self.deleted)))
                }
                _ => None,
            })
            .collect()
    }
}

/// A test's day: its totals, and the fleet's counts the test gave.
struct TestDay<'a> {
    totals: &'a BTreeMap<String, i128>,
    instances: Option<i64>,
    contributors: Option<&'a BTreeMap<String, i64>>,
}

impl Totals for TestDay<'_> {
    fn get(&self, counter: &str) -> Option<i128> {
        self.totals.get(counter).copied()
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (&str, i128)> + '_> {
        Box::new(
            self.totals
                .iter()
                .map(|(name, value)| (name.as_str(), *value)),
        )
    }

    fn contributors(&self, counter: &str) -> Option<i64> {
        self.contributors
            .map(|counts| counts.get(counter).copied().unwrap_or(0))
    }

    fn instances(&self) -> Option<i64> {
        self.instances
    }
}

impl Replay {
    /// Evaluates the day's `totals`, or ticks when there are none (the
    /// totals stand still); returns the messages sent and the rules that
    /// failed.
    pub fn evaluate(
        &mut self,
        rules: &RuleSet,
        date: &Date,
        totals: Option<BTreeMap<String, i128>>,
        now: DateTime<Utc>,
    ) -> (Vec<Notification>, Vec<RuleError>) {
        let ticked = totals.is_none();
        let totals = totals.unwrap_or_else(|| self.previous.clone());
        let changed: BTreeSet<String> = self
            .previous
            .keys()
            .chain(totals.keys())
            .filter(|name| self.previous.get(*name) != totals.get(*name))
            .cloned()
            .collect();
        if !ticked {
            self.generation += 1;
        }
        let verdicts = self
            .uploads
            .as_ref()
            .map(|uploads| uploads.verdicts(rules, date, now))
            .unwrap_or_default();
        let trigger = if ticked {
            Trigger::Tick(&verdicts)
        } else {
            Trigger::Changed(&changed)
        };
        let day = TestDay {
            totals: &totals,
            instances: self.instances,
            contributors: self.contributors.as_ref(),
        };
        let decisions = decide(
            rules,
            date,
            &day,
            trigger,
            &self.records,
            self.generation,
            now,
        );
        let mut sent = Vec::new();
        for mut record in decisions.writes {
            sent.extend(record.outbox.take());
            self.records.insert(record.alert.clone(), record);
        }
        self.previous = totals;
        (sent, decisions.errors)
    }
}

fn matches(expected: &ExpectedAlert, note: &Notification) -> bool {
    let state = match expected.state {
        ExpectedState::Firing => AlertState::Firing,
        ExpectedState::Resolved => AlertState::Resolved,
    };
    expected.rule == note.rule
        && state == note.state
        && expected
            .counter
            .as_ref()
            .is_none_or(|c| note.counter.as_ref() == Some(c))
        && expected.severity.is_none_or(|s| s == note.severity)
        && expected
            .value
            .is_none_or(|v| note.value == Some(i128::from(v)))
        && expected.summary.as_ref().is_none_or(|s| *s == note.summary)
        && expected.reminder.is_none_or(|r| r == note.reminder)
        && expected
            .reason
            .as_ref()
            .is_none_or(|r| note.reason.as_ref() == Some(r))
        && expected
            .labels
            .as_ref()
            .is_none_or(|labels| labels.iter().all(|(k, v)| note.labels.get(k) == Some(v)))
}

fn describe_expected(expected: &ExpectedAlert) -> String {
    let mut text = format!(
        "{} {}",
        expected.rule,
        match expected.state {
            ExpectedState::Firing => "firing",
            ExpectedState::Resolved => "resolved",
        }
    );
    if let Some(counter) = &expected.counter {
        text.push_str(&format!(" on {counter}"));
    }
    if let Some(summary) = &expected.summary {
        text.push_str(&format!(" with summary {summary:?}"));
    }
    text
}

fn describe_sent(sent: &[Notification]) -> String {
    if sent.is_empty() {
        return "nothing".to_owned();
    }
    sent.iter()
        .map(|note| format!("{} ({:?})", note.subject(), note.summary))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = "rules:\n  - name: counter1-max\n    counter: COUNTER1\n    max: 150000\n";

    fn rules() -> RuleSet {
        RuleSet::load(&[("rules.yaml", RULES)]).unwrap()
    }

    #[test]
    fn a_correct_test_passes() {
        let file = "tests:\n  - name: fires then resolves\n    evaluations:\n      - totals: {COUNTER1: 191122}\n        alerts: [{rule: counter1-max, state: firing, counter: COUNTER1, value: 191122}]\n      - totals: {COUNTER1: 191123}\n        alerts: []\n      - totals: {COUNTER1: 5}\n        alerts: [{rule: counter1-max, state: resolved}]\n";
        let outcome = run_file(&rules(), "t.yaml", file);
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
        assert_eq!(outcome.passed, ["fires then resolves"]);
    }

    #[test]
    fn a_wrong_expectation_fails_at_its_evaluation() {
        let file = "tests:\n  - name: wrongly silent\n    evaluations:\n      - totals: {COUNTER1: 1}\n        alerts: []\n      - totals: {COUNTER1: 191122}\n        alerts: []\n";
        let outcome = run_file(&rules(), "t.yaml", file);
        assert_eq!(outcome.failures.len(), 1);
        let failure = outcome.failures[0].to_string();
        assert!(
            failure.starts_with(
                "t.yaml:6:9: test \"wrongly silent\": evaluation 2: it also sent FIRING"
            ),
            "{failure}"
        );
    }

    #[test]
    fn a_missing_alert_and_an_unknown_rule_are_named() {
        let file = "tests:\n  - name: expects one\n    evaluations:\n      - totals: {COUNTER1: 1}\n        alerts: [{rule: counter1-max, state: firing}]\n";
        let failure = run_file(&rules(), "t.yaml", file).failures[0].to_string();
        assert!(
            failure.contains("expected counter1-max firing but it sent nothing"),
            "{failure}"
        );
        let file = "tests:\n  - name: typo\n    evaluations:\n      - totals: {}\n        alerts: [{rule: counter1-mx, state: firing}]\n";
        let failure = run_file(&rules(), "t.yaml", file).failures[0].to_string();
        assert!(failure.contains("which no rules file defines"), "{failure}");
    }

    #[test]
    fn a_hostile_test_file_is_refused_before_parsing() {
        let file = format!("tests:\n  {}a\n", "- ".repeat(30_000));
        let failure = run_file(&rules(), "t.yaml", &file).failures[0].to_string();
        assert!(failure.starts_with("t.yaml:2:1: more than 32"), "{failure}");
    }

    #[test]
    fn a_malformed_test_file_is_reported_with_its_position() {
        let file = "tests:\n  - name: x\n    evaluations:\n      - totals: {COUNTER1: lots}\n        alerts: []\n";
        let failure = run_file(&rules(), "t.yaml", file).failures[0].to_string();
        assert!(failure.starts_with("t.yaml:4:"), "{failure}");
    }
}
