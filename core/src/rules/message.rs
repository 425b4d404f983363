//! The message on-call receive for a transition: its JSON body, its
//! subject for a phone's lock screen, its plain text for email, and the
//! summary template's fields. What decides that a message is due is
//! [`super::alert`]'s.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::alert::{AlertRecord, AlertState};
use super::evaluate::{Check, Finding, STALE_NAMED};
use super::load::{Condition, Rule, StaleLimit};
use super::spec::Severity;
use crate::fleet::Staleness;
use crate::key::Date;

/// A stale rule's verdict, as sent: counts, and the first silent
/// instances by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleSummary {
    /// How long an instance may stay silent (`5m`).
    pub after: String,
    /// How many stale instances the rule tolerates (`0`, `2%`).
    pub max: String,
    /// The instances that count: stale ones included, forgotten ones not.
    pub fleet: usize,
    pub stale: usize,
    pub forgotten: usize,
    /// The first [`STALE_NAMED`] stale instances, longest silent first.
    pub instances: Vec<SilentInstance>,
    /// The first [`STALE_NAMED`] forgotten instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forgotten_instances: Vec<SilentInstance>,
}

/// An instance and when its object was last written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilentInstance {
    pub instance: String,
    pub last_write: DateTime<Utc>,
}

impl StaleSummary {
    fn of(verdict: &Staleness, after: std::time::Duration, max: &StaleLimit) -> StaleSummary {
        let named = |list: &[crate::fleet::LastWrite]| {
            list.iter()
                .take(STALE_NAMED)
                .map(|write| SilentInstance {
                    instance: write.instance.clone(),
                    last_write: write.at,
                })
                .collect()
        };
        StaleSummary {
            after: super::duration::display(after),
            max: max.to_string(),
            fleet: verdict.fleet,
            stale: verdict.stale.len(),
            forgotten: verdict.forgotten.len(),
            instances: named(&verdict.stale),
            forgotten_instances: named(&verdict.forgotten),
        }
    }

    /// `i-3 (last wrote 08:01:00), i-7 (...)`, and how many more.
    fn named(&self, instances: &[SilentInstance], total: usize) -> String {
        if total == 0 {
            return "none".to_owned();
        }
        let mut text = instances
            .iter()
            .map(|i| {
                format!(
                    "{} (last wrote {})",
                    i.instance,
                    i.last_write.format("%H:%M:%S")
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        if total > instances.len() {
            let _ = write!(text, " and {} more", total - instances.len());
        }
        text
    }
}

/// A limit's bounds, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Threshold {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
}

/// The message of one transition: the JSON body on-call and their tools get.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// `<date>/<rule>[#<counter>]`: stable for the alert across transitions.
    pub alert: String,
    /// Counts this alert's messages from 1, so that `alert` + `transition`
    /// identifies a message and a subscriber can drop a repeat delivery.
    pub transition: u64,
    pub rule: String,
    pub state: AlertState,
    /// A reminder that the alert is still firing (`repeat:`).
    #[serde(default)]
    pub reminder: bool,
    /// Why a resolved alert resolved: back within limits, no longer
    /// reported, no longer true, the stale instances wrote again or were
    /// forgotten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a stale rule: the silent instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<StaleSummary>,
    pub severity: Severity,
    pub date: Date,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<String>,
    /// The limit's counter total, or the totals the expression read.
    pub counters: BTreeMap<String, i128>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<i128>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Threshold>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expr: Option<String>,
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// When the condition started holding (for a resolution, when the
    /// alert that resolves started).
    pub since: DateTime<Utc>,
    pub sent_at: DateTime<Utc>,
}

/// The message of a transition, rendered from the rule and what the
/// evaluation found.
#[allow(clippy::too_many_arguments)]
pub(super) fn notification(
    rule: &Rule,
    date: &Date,
    check: &Check,
    finding: &Finding,
    record: &AlertRecord,
    state: AlertState,
    reminder: bool,
    now: DateTime<Utc>,
) -> Notification {
    let (threshold, expr) = match &rule.condition {
        Condition::Limit { min, max, .. } => (
            Some(Threshold {
                min: *min,
                max: *max,
            }),
            None,
        ),
        Condition::Expr(expression) => (None, Some(expression.source().to_owned())),
        Condition::Stale { .. } => (None, None),
    };
    let stale = match (&rule.condition, &finding.stale) {
        (Condition::Stale { thresholds, limit }, Some(verdict)) => {
            Some(StaleSummary::of(verdict, thresholds.after, limit))
        }
        _ => None,
    };
    let counters = match (&check.counter, finding.value) {
        (Some(counter), Some(value)) => BTreeMap::from([(counter.clone(), value)]),
        _ => finding.values.clone(),
    };
    let mut labels = rule.labels.clone();
    if let Some(counter) = &check.counter {
        labels.insert("counter".to_owned(), counter.clone());
    }
    let reason = (state == AlertState::Resolved).then(|| {
        let mut reason = match (&rule.condition, finding.value) {
            (Condition::Limit { .. }, Some(_)) => "back within limits".to_owned(),
            (Condition::Limit { .. }, None) => {
                "no longer reported: the counter has no contributor today".to_owned()
            }
            (Condition::Expr(_), _) => "the expression is no longer true".to_owned(),
            (Condition::Stale { .. }, _) if finding.stale.as_ref().is_some_and(|v| v.day_over) => {
                "the day is over: its instances upload under the next day, whose alert watches them"
                    .to_owned()
            }
            (Condition::Stale { limit, .. }, _) => match &stale {
                Some(summary) if summary.forgotten > 0 => format!(
                    "at most {limit} instance(s) stale: the others wrote again or were forgotten after {} silent; forgotten: {}",
                    match &rule.condition {
                        Condition::Stale { thresholds, .. } =>
                            super::duration::display(thresholds.forget_after),
                        _ => String::new(),
                    },
                    summary.named(&summary.forgotten_instances, summary.forgotten)
                ),
                _ => "the stale instances wrote again".to_owned(),
            },
        };
        if !rule.keep_firing_for.is_zero() {
            reason.push_str(&format!(
                ", and stayed so for {}",
                super::duration::display(rule.keep_firing_for)
            ));
        }
        reason
    });
    let mut note = Notification {
        alert: format!("{date}/{}", record.alert),
        transition: record.transitions,
        rule: rule.name.clone(),
        state,
        reminder,
        reason,
        stale,
        severity: rule.severity,
        date: date.clone(),
        counter: check.counter.clone(),
        counters,
        value: finding.value,
        threshold,
        expr,
        summary: String::new(),
        description: rule.description.clone(),
        runbook: rule.runbook.clone(),
        labels,
        since: record.since.unwrap_or(now),
        sent_at: now,
    };
    note.summary = rule.summary.render(&note.fields());
    note
}

impl Notification {
    /// The values a summary template can name.
    fn fields(&self) -> BTreeMap<String, String> {
        let mut fields = BTreeMap::new();
        let mut set = |key: &str, value: String| {
            fields.insert(key.to_owned(), value);
        };
        set("rule", self.rule.clone());
        set("severity", self.severity.to_string());
        set("date", self.date.to_string());
        set("state", self.state.as_str().to_owned());
        set("description", self.description.clone().unwrap_or_default());
        set("runbook", self.runbook.clone().unwrap_or_default());
        if let Some(counter) = &self.counter {
            set("counter", counter.clone());
        }
        set(
            "value",
            self.value
                .map_or_else(|| "absent".to_owned(), |v| v.to_string()),
        );
        if let Some(threshold) = &self.threshold {
            if let Some(min) = threshold.min {
                set("min", min.to_string());
            }
            if let Some(max) = threshold.max {
                set("max", max.to_string());
            }
            let (breach, limit) = match (self.value, threshold.min, threshold.max) {
                (Some(v), _, Some(max)) if v > i128::from(max) => {
                    (format!("above the maximum {max}"), max.to_string())
                }
                (Some(v), Some(min), _) if v < i128::from(min) => {
                    (format!("below the minimum {min}"), min.to_string())
                }
                (None, min, max) => (
                    "no longer reported".to_owned(),
                    max.or(min).map_or_else(String::new, |l| l.to_string()),
                ),
                (_, min, max) => (
                    "back within limits".to_owned(),
                    max.or(min).map_or_else(String::new, |l| l.to_string()),
                ),
            };
            set("breach", breach);
            set("threshold", limit);
        }
        if let Some(expr) = &self.expr {
            set("expr", expr.clone());
        }
        if let Some(stale) = &self.stale {
            set("stale", stale.stale.to_string());
            set("fleet", stale.fleet.to_string());
            set("forgotten", stale.forgotten.to_string());
            set("after", stale.after.clone());
            set("instances", stale.named(&stale.instances, stale.stale));
            set("max", stale.max.clone());
        }
        set(
            "values",
            self.counters
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        for (key, value) in &self.labels {
            set(&format!("labels.{key}"), value.clone());
        }
        fields
    }

    /// A subject line for a phone's lock screen: state first, ASCII only
    /// (SNS requires it), under 100 characters.
    pub fn subject(&self) -> String {
        let state = match (self.state, self.reminder) {
            (AlertState::Firing, false) => format!("FIRING {}", self.severity),
            (AlertState::Firing, true) => format!("STILL FIRING {}", self.severity),
            (AlertState::Resolved, _) => "RESOLVED".to_owned(),
        };
        let mut subject = format!("{state}: {}", self.rule);
        if let Some(stale) = &self.stale {
            let _ = write!(
                subject,
                " {} of {} instances silent over {}",
                stale.stale, stale.fleet, stale.after
            );
        }
        if let Some(counter) = &self.counter {
            let value = self
                .value
                .map_or_else(|| "absent".to_owned(), |v| v.to_string());
            let _ = write!(subject, " {counter}={value}");
            if self.state == AlertState::Firing
                && let Some(threshold) = &self.threshold
            {
                match (self.value, threshold.min, threshold.max) {
                    (Some(v), _, Some(max)) if v > i128::from(max) => {
                        let _ = write!(subject, " > {max}");
                    }
                    (Some(v), Some(min), _) if v < i128::from(min) => {
                        let _ = write!(subject, " < {min}");
                    }
                    _ => {}
                }
            }
        }
        let _ = write!(subject, " ({})", self.date);
        ascii_subject(&subject)
    }

    /// The plain-text rendering, for email subscribers.
    pub fn text(&self) -> String {
        let mut text = format!("{}\n\n{}\n\n", self.subject(), self.summary);
        let mut line = |key: &str, value: &str| {
            let _ = writeln!(text, "{key:<12}{value}");
        };
        line("rule", &self.rule);
        line("state", self.state.as_str());
        line("severity", self.severity.as_str());
        line("date", &self.date.to_string());
        if let Some(counter) = &self.counter {
            line("counter", counter);
        }
        if let Some(value) = self.value {
            line("value", &value.to_string());
        }
        if let Some(threshold) = &self.threshold {
            if let Some(min) = threshold.min {
                line("min", &min.to_string());
            }
            if let Some(max) = threshold.max {
                line("max", &max.to_string());
            }
        }
        if let Some(expr) = &self.expr {
            line("expr", expr);
            for (name, value) in &self.counters {
                line("", &format!("{name} = {value}"));
            }
        }
        if let Some(stale) = &self.stale {
            line(
                "stale",
                &format!(
                    "{} of {} instances silent over {} (more than {} fires)",
                    stale.stale, stale.fleet, stale.after, stale.max
                ),
            );
            for silent in &stale.instances {
                line(
                    "",
                    &format!(
                        "{}  last wrote {}",
                        silent.instance,
                        silent.last_write.to_rfc3339()
                    ),
                );
            }
            if stale.stale > stale.instances.len() {
                line(
                    "",
                    &format!("and {} more", stale.stale - stale.instances.len()),
                );
            }
            if stale.forgotten > 0 {
                line(
                    "forgotten",
                    &format!(
                        "{} instance(s) silent long enough to be taken for decommissioned: {}",
                        stale.forgotten,
                        stale.named(&stale.forgotten_instances, stale.forgotten)
                    ),
                );
            }
        }
        if let Some(reason) = &self.reason {
            line("reason", reason);
        }
        line("since", &self.since.to_rfc3339());
        for (key, value) in &self.labels {
            line(&format!("{key}:"), value);
        }
        if let Some(description) = &self.description {
            let _ = writeln!(text, "\n{description}");
        }
        if let Some(runbook) = &self.runbook {
            let _ = writeln!(text, "\nRunbook: {runbook}");
        }
        let _ = writeln!(text, "\nalert {} message {}", self.alert, self.transition);
        text
    }
}

/// SNS subjects are ASCII without control characters, under 100
/// characters: anything else becomes `?`, and a long one ends in `...`.
fn ascii_subject(subject: &str) -> String {
    let mut out: String = subject
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect();
    if out.len() > 99 {
        out.truncate(96);
        out.push_str("...");
    }
    out
}
