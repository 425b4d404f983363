//! The rules file as ops write it: the YAML shape, and the JSON Schema
//! generated from it that editors use to validate as ops type.
//!
//! Every field is optional here on purpose. The loader decodes each field of
//! a rule on its own, so that a file with three mistakes reports three
//! errors, each at its own line and column; whether a rule has the fields it
//! needs is then checked by [`super::load`], which knows where each field is.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A rules file: `rules-config/*.yaml`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "tally rules file",
    description = "Alert rules over tally's daily counter totals. See rules-config/README.md."
)]
pub struct RulesFileSpec {
    /// The rules of this file. Names are unique across all files.
    pub rules: Vec<RuleSpec>,
}

/// One rule: a limit on counters (`counter` or `match`, with `min` and/or
/// `max`), a boolean expression over the day's totals (`expr`), or a watch
/// on instances that stopped uploading (`stale`).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique name: letters, digits, `-`, `_` and `.`. It names the alert in
    /// messages and is how on-call filter them.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"))]
    pub name: Option<String>,
    /// What the rule is for, shown to on-call with the alert.
    pub description: Option<String>,
    /// A limit on one counter, by its exact name (any characters).
    pub counter: Option<String>,
    /// A limit on every counter whose name matches this glob (`*`, `?`,
    /// `[abc]`, `{a,b}`); each matching counter alerts on its own.
    #[serde(rename = "match")]
    pub match_: Option<String>,
    /// Fire when the total is below this.
    pub min: Option<i64>,
    /// Fire when the total is above this.
    pub max: Option<i64>,
    /// Fire when this evalexpr expression is true. Counters are named as
    /// identifiers (`COUNTER1 > 100`) or with `counter("bids-won")`; see
    /// rules-config/README.md for the functions.
    pub expr: Option<String>,
    /// Instances that stopped uploading: one alert for the fleet, never one
    /// per instance.
    pub stale: Option<StaleSpec>,
    /// How urgent the alert is; also an SNS message attribute to filter on.
    pub severity: Option<Severity>,
    /// Extra labels sent with the alert, for routing and filtering.
    pub labels: Option<BTreeMap<String, String>>,
    /// One line for on-call, with `{{field}}` placeholders: rule, severity,
    /// date, state, counter, value, threshold, min, max, expr, values,
    /// labels.NAME.
    pub summary: Option<String>,
    /// A link to the runbook, sent with the alert.
    pub runbook: Option<String>,
    /// Fire only after the condition held at every evaluation for this long
    /// (`10m`; units s, m, h, d). Until then the alert is pending: visible
    /// to `tally rules eval` and in the logs, not sent.
    #[serde(rename = "for")]
    #[schemars(regex(pattern = r"^([0-9]+[smhd])+$"))]
    pub for_: Option<String>,
    /// Once firing, stay firing this long after the condition stops
    /// holding, and resolve only if it stayed false (`10m`).
    #[schemars(regex(pattern = r"^([0-9]+[smhd])+$"))]
    pub keep_firing_for: Option<String>,
    /// While firing, send a reminder at the first evaluation (a tick, at
    /// the latest) once this long has passed since the last message
    /// (`30m`, `4h`, `1d`).
    #[schemars(regex(pattern = r"^([0-9]+[smhd])+$"))]
    pub repeat: Option<String>,
}

/// A `stale:` rule's settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StaleSpec {
    /// An instance is stale when its object was last written longer ago
    /// than this (`5m`).
    #[schemars(regex(pattern = r"^([0-9]+[smhd])+$"))]
    pub after: Option<String>,
    /// Fire when more than this many instances are stale (default 0).
    pub max: Option<u64>,
    /// Or: fire when more than this share of the fleet is stale (`"2%"`).
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?%$"))]
    pub max_share: Option<String>,
    /// An instance silent this long is taken for decommissioned: it stops
    /// counting, and the alert says so (default 6h).
    #[schemars(regex(pattern = r"^([0-9]+[smhd])+$"))]
    pub forget_after: Option<String>,
}

/// How urgent an alert is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The keys a rule may have, as the loader checks them one by one.
pub const RULE_KEYS: &[&str] = &[
    "name",
    "description",
    "counter",
    "match",
    "min",
    "max",
    "expr",
    "stale",
    "severity",
    "labels",
    "summary",
    "runbook",
    "for",
    "keep_firing_for",
    "repeat",
];

/// The JSON Schema of a rules file, as committed in
/// `rules-config/rules.schema.json` (a test keeps the two equal).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(RulesFileSpec);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_keys_are_the_schemas_properties() {
        let schema = schemars::schema_for!(RuleSpec);
        let value = serde_json::to_value(&schema).unwrap();
        let mut properties: Vec<&str> = value["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        properties.sort_unstable();
        let mut keys = RULE_KEYS.to_vec();
        keys.sort_unstable();
        assert_eq!(properties, keys);
        assert_eq!(value["additionalProperties"], false);
    }
}
