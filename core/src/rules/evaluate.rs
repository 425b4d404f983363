//! Evaluating rules on a day's totals: which rules a change (or a tick)
//! concerns, and what each found. What an evaluation then does to each
//! alert is [`super::alert`]'s.

use std::collections::{BTreeMap, BTreeSet};

use super::expr::Totals;
use super::load::{Condition, RuleSet, Target};
use crate::fleet::Staleness;

/// One alert's outcome at one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The rule's index in its [`RuleSet`].
    pub rule: usize,
    /// For a limit, the counter checked.
    pub counter: Option<String>,
    /// What was found, or why the rule could not be evaluated.
    pub result: Result<Finding, String>,
}

/// What an evaluation found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Finding {
    pub holds: bool,
    /// For a limit: the counter's total, when it has one; for a stale rule,
    /// how many instances are stale.
    pub value: Option<i128>,
    /// The totals an expression read.
    pub values: BTreeMap<String, i128>,
    /// For a stale rule: the verdict on the day's fleet.
    pub stale: Option<Staleness>,
}

/// The stale rules' verdicts a tick computed, by rule name.
pub type StaleByRule = BTreeMap<String, Staleness>;

/// How many silent instances a message names; the count says the rest.
pub const STALE_NAMED: usize = 20;

impl Check {
    /// The alert's identity within its date: `rule` or `rule#counter`
    /// (rule names cannot contain `#`; counter names can, and are kept whole).
    pub fn alert_key(&self, rules: &RuleSet) -> String {
        alert_key(&rules.rules()[self.rule].name, self.counter.as_deref())
    }
}

pub fn alert_key(rule: &str, counter: Option<&str>) -> String {
    match counter {
        Some(counter) => format!("{rule}#{counter}"),
        None => rule.to_owned(),
    }
}

/// Evaluates the rules that a change of `changed` can affect; on a tick
/// (`stale` given), every expression and every stale rule too.
pub fn evaluate(
    rules: &RuleSet,
    totals: &dyn Totals,
    changed: &BTreeSet<String>,
    stale: Option<&StaleByRule>,
) -> Vec<Check> {
    let every_expression = stale.is_some();
    let mut checks = Vec::new();
    for (index, rule) in rules.rules().iter().enumerate() {
        match &rule.condition {
            Condition::Limit { target, min, max } => {
                let counters: Vec<&String> = match target {
                    Target::Exact(name) => changed.get(name).into_iter().collect(),
                    Target::Glob { matcher, .. } => changed
                        .iter()
                        .filter(|c| matcher.is_match(c.as_str()))
                        .collect(),
                };
                for counter in counters {
                    let value = totals.get(counter);
                    let holds = value.is_some_and(|v| {
                        min.is_some_and(|min| v < i128::from(min))
                            || max.is_some_and(|max| v > i128::from(max))
                    });
                    checks.push(Check {
                        rule: index,
                        counter: Some(counter.clone()),
                        result: Ok(Finding {
                            holds,
                            value,
                            values: BTreeMap::new(),
                            stale: None,
                        }),
                    });
                }
            }
            Condition::Expr(expression) => {
                if every_expression || changed.iter().any(|c| expression.depends_on(c)) {
                    checks.push(Check {
                        rule: index,
                        counter: None,
                        result: expression.evaluate(totals).map(|outcome| Finding {
                            holds: outcome.holds,
                            value: None,
                            values: outcome.values,
                            stale: None,
                        }),
                    });
                }
            }
            Condition::Stale { limit, .. } => {
                let Some(verdicts) = stale else {
                    continue;
                };
                let result = match verdicts.get(&rule.name) {
                    Some(verdict) => Ok(Finding {
                        holds: limit.breached(verdict.stale.len(), verdict.fleet),
                        value: Some(verdict.stale.len() as i128),
                        values: BTreeMap::new(),
                        stale: Some(verdict.clone()),
                    }),
                    None => Err(
                        "a stale rule needs the uploads' listing, and this rules stage was not given the uploads bucket"
                            .to_owned(),
                    ),
                };
                checks.push(Check {
                    rule: index,
                    counter: None,
                    result,
                });
            }
        }
    }
    checks
}
