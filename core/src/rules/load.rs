//! Loading rules files: every problem at once, each at its file, line and
//! column, and never a panic.
//!
//! YAML is read with positions kept (anchors and aliases are refused, so a
//! "billion laughs" file cannot expand). Each rule's fields are then decoded
//! one at a time, so one rule with three mistakes yields three problems, and
//! each rule is checked as a whole (which fields it needs, its glob, its
//! expression, its template, its name being unique across files).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use marked_yaml::{LoaderOptions, Marker, Node, Span};

use super::duration;
use super::expr::Expression;
use super::spec::{RULE_KEYS, RuleSpec, Severity};
use super::template::Template;
use crate::fleet::Thresholds;

/// Largest rules file accepted.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Deepest flow nesting (`[`, `{`) and widest indentation accepted: the
/// YAML parser recurses, and no rules file needs more.
const MAX_FLOW_DEPTH: usize = 64;
const MAX_INDENT: usize = 128;
const MAX_COMPACT_PER_LINE: usize = 32;
/// Longest description, summary or runbook link, and label value, in
/// characters: an alert must fit an SNS message (256 KB) and its record a
/// DynamoDB item (400 KB), and on-call read it on a phone.
pub const MAX_TEXT_CHARS: usize = 2000;
pub const MAX_LABEL_CHARS: usize = 256;
pub const MAX_LABELS: usize = 32;

/// Where something is in a rules file; lines and columns count from 1.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One thing wrong with a rules file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Everything wrong with a set of rules files, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in &self.0 {
            writeln!(f, "{problem}")?;
        }
        write!(
            f,
            "{} problem{} in the rules",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )
    }
}

/// What a rule watches.
#[derive(Debug, Clone)]
pub enum Condition {
    /// A limit on one counter, or on each counter a glob matches.
    Limit {
        target: Target,
        min: Option<i64>,
        max: Option<i64>,
    },
    /// A boolean expression over the day's totals.
    Expr(Expression),
    /// Instances that stopped uploading, judged on ticks from the bucket's
    /// listing (see [`crate::fleet`]).
    Stale {
        thresholds: Thresholds,
        limit: StaleLimit,
    },
}

/// How many stale instances a `stale:` rule tolerates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StaleLimit {
    /// Fire when more than this many are stale.
    Count(u64),
    /// Fire when more than this share of the fleet (0 to 1) is stale.
    Share(f64),
}

impl StaleLimit {
    /// Whether `stale` instances out of a fleet of `fleet` breach it.
    pub fn breached(&self, stale: usize, fleet: usize) -> bool {
        match *self {
            StaleLimit::Count(max) => stale as u64 > max,
            StaleLimit::Share(share) => fleet > 0 && stale as f64 > share * fleet as f64,
        }
    }
}

impl std::fmt::Display for StaleLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StaleLimit::Count(max) => write!(f, "{max}"),
            StaleLimit::Share(share) => write!(f, "{}%", share * 100.0),
        }
    }
}

/// The counters a limit applies to.
#[derive(Debug, Clone)]
pub enum Target {
    Exact(String),
    Glob {
        pattern: String,
        matcher: GlobMatcher,
    },
}

impl Target {
    pub fn matches(&self, counter: &str) -> bool {
        match self {
            Target::Exact(name) => name == counter,
            Target::Glob { matcher, .. } => matcher.is_match(counter),
        }
    }
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub description: Option<String>,
    pub condition: Condition,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub summary: Template,
    pub summary_source: String,
    pub runbook: Option<String>,
    /// How long the condition must hold, at every evaluation, before the
    /// alert fires; zero fires at once.
    pub for_: Duration,
    /// How long a firing alert stays firing after the condition stops
    /// holding; zero resolves at once.
    pub keep_firing_for: Duration,
    /// While firing, a reminder once this long has passed since the last
    /// message.
    pub repeat: Option<Duration>,
    pub location: Location,
}

impl Rule {
    /// Whether a change of `counter` can change this rule's outcome.
    pub fn depends_on(&self, counter: &str) -> bool {
        match &self.condition {
            Condition::Limit { target, .. } => target.matches(counter),
            Condition::Expr(expression) => expression.depends_on(counter),
            // Silence changes no counter: decided on ticks only.
            Condition::Stale { .. } => false,
        }
    }
}

/// The summary a rule gets when it names none.
pub const DEFAULT_LIMIT_SUMMARY: &str = "{{counter}} is {{value}} on {{date}}: {{breach}}";
pub const DEFAULT_EXPR_SUMMARY: &str = "{{expr}} is true on {{date}} ({{values}})";

/// The fields a summary may name: for every rule, then by kind.
const COMMON_FIELDS: &[&str] = &[
    "rule",
    "severity",
    "date",
    "state",
    "description",
    "runbook",
];
const LIMIT_FIELDS: &[&str] = &["counter", "value", "threshold", "breach", "min", "max"];
const EXPR_FIELDS: &[&str] = &["expr", "values"];
const STALE_FIELDS: &[&str] = &["stale", "fleet", "forgotten", "instances", "after", "max"];

/// The summary a `stale:` rule gets when it names none.
pub const DEFAULT_STALE_SUMMARY: &str =
    "{{stale}} of {{fleet}} instances silent for over {{after}} on {{date}}: {{instances}}";

/// How long a silent instance counts before it is taken for decommissioned,
/// when a `stale:` rule does not say.
pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(6 * 3600);

/// A checked set of rules, from one or more files.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    /// Loads rules files given as (name, contents), reporting every problem.
    pub fn load<N: AsRef<str>, T: AsRef<str>>(files: &[(N, T)]) -> Result<RuleSet, Problems> {
        let mut problems = Vec::new();
        let mut rules: Vec<Rule> = Vec::new();
        let mut seen: BTreeMap<String, Location> = BTreeMap::new();
        for (source, (name, text)) in files.iter().enumerate() {
            let file = FileLoader {
                name: name.as_ref(),
                source,
            };
            for rule in file.load(text.as_ref(), &mut problems) {
                if let Some(first) = seen.get(&rule.name) {
                    problems.push(Problem {
                        location: rule.location.clone(),
                        message: format!(
                            "rule {:?} is already defined at {first}; rule names must be unique",
                            rule.name
                        ),
                    });
                    continue;
                }
                seen.insert(rule.name.clone(), rule.location.clone());
                rules.push(rule);
            }
        }
        if problems.is_empty() {
            Ok(RuleSet { rules })
        } else {
            Err(Problems(problems))
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.name == name)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

struct FileLoader<'a> {
    name: &'a str,
    source: usize,
}

impl FileLoader<'_> {
    fn at(&self, marker: Option<&Marker>) -> Location {
        Location {
            file: self.name.to_owned(),
            line: marker.map_or(1, Marker::line),
            column: marker.map_or(1, Marker::column),
        }
    }

    fn at_span(&self, span: &Span) -> Location {
        self.at(span.start())
    }

    fn at_node(&self, node: &Node) -> Location {
        self.at(start_of(node).as_ref())
    }

    fn problem(&self, problems: &mut Vec<Problem>, span: &Span, message: impl Into<String>) {
        problems.push(Problem {
            location: self.at_span(span),
            message: message.into(),
        });
    }

    fn load(&self, text: &str, problems: &mut Vec<Problem>) -> Vec<Rule> {
        // Some Windows editors start UTF-8 files with a byte-order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if let Err(problem) = self.guard(text) {
            problems.push(problem);
            return Vec::new();
        }
        let options = LoaderOptions::default()
            .error_on_duplicate_keys(true)
            .toplevel_mapping();
        let root = match marked_yaml::parse_yaml_with_options(self.source, text, options) {
            Ok(root) => root,
            Err(e) => {
                problems.push(self.load_error(&e));
                return Vec::new();
            }
        };
        let Some(root) = root.as_mapping() else {
            self.problem(
                problems,
                root.span(),
                "a rules file is a mapping with a `rules:` list",
            );
            return Vec::new();
        };
        let mut unknown = false;
        for (key, _) in root.iter() {
            if key.as_str() != "rules" {
                unknown = true;
                self.problem(
                    problems,
                    key.span(),
                    format!(
                        "unknown key {:?}; a rules file has only `rules:`",
                        key.as_str()
                    ),
                );
            }
        }
        let Some(list) = root.get_node("rules") else {
            if !unknown {
                problems.push(Problem {
                    location: self.at_node(&Node::Mapping(root.clone())),
                    message: "missing `rules:` (a list of rules)".to_owned(),
                });
            }
            return Vec::new();
        };
        let items: &[Node] = match list {
            Node::Sequence(sequence) => sequence,
            // `rules:` with nothing after it: a file with no rules yet.
            Node::Scalar(scalar) if scalar.as_str().is_empty() => &[],
            other => {
                self.problem(problems, other.span(), "`rules:` must be a list of rules");
                return Vec::new();
            }
        };
        items
            .iter()
            .filter_map(|item| self.rule(item, problems))
            .collect()
    }

    /// Refuses what the YAML parser should not be given.
    fn guard(&self, text: &str) -> Result<(), Problem> {
        guard_yaml(text).map_err(|(line, message)| Problem {
            location: Location {
                file: self.name.to_owned(),
                line,
                column: 1,
            },
            message,
        })
    }

    fn load_error(&self, error: &marked_yaml::LoadError) -> Problem {
        use marked_yaml::LoadError::*;
        let (marker, message) = match error {
            TopLevelMustBeMapping(m) | TopLevelMustBeSequence(m) => (
                Some(*m),
                "a rules file is a mapping with a `rules:` list".to_owned(),
            ),
            UnexpectedAnchor(m) => (
                Some(*m),
                "anchors and aliases (& and *) are not allowed in rules files; write each rule out"
                    .to_owned(),
            ),
            MappingKeyMustBeScalar(m) => (Some(*m), "keys must be plain names".to_owned()),
            UnexpectedTag(m) => (Some(*m), "YAML tags (!) are not allowed".to_owned()),
            ScanError(m, e) => (Some(*m), format!("not valid YAML: {}", e.info())),
            DuplicateKey(inner) => (
                inner.key.span().start().copied(),
                format!(
                    "key {:?} appears twice in the same mapping (first at line {})",
                    inner.key.as_str(),
                    inner.prev_key.span().start().map_or(0, Marker::line)
                ),
            ),
        };
        Problem {
            location: self.at(marker.as_ref()),
            message,
        }
    }

    /// Decodes and checks one rule, adding its problems.
    fn rule(&self, node: &Node, problems: &mut Vec<Problem>) -> Option<Rule> {
        let Some(mapping) = node.as_mapping() else {
            self.problem(
                problems,
                node.span(),
                "each rule is a mapping with at least `name:`",
            );
            return None;
        };
        let before = problems.len();
        let rule_name = mapping
            .get_scalar("name")
            .map(|name| name.as_str().to_owned());
        let context = rule_name
            .as_deref()
            .map_or_else(String::new, |name| format!("rule {name:?}: "));
        // Each field on its own, so every mistake is reported.
        for (key, value) in mapping.iter() {
            if !RULE_KEYS.contains(&key.as_str()) {
                let hint = closest(key.as_str(), RULE_KEYS)
                    .map_or_else(String::new, |near| format!(" (did you mean `{near}`?)"));
                self.problem(
                    problems,
                    key.span(),
                    format!(
                        "{context}unknown key {:?}{hint}; a rule has {}",
                        key.as_str(),
                        RULE_KEYS.join(", ")
                    ),
                );
                continue;
            }
            let single: marked_yaml::types::MarkedMappingNode =
                std::iter::once((key.clone(), value.clone())).collect();
            if let Err(e) = marked_yaml::from_node::<RuleSpec>(&Node::Mapping(single)) {
                let marker = e.start_mark().or_else(|| value.span().start().copied());
                problems.push(Problem {
                    location: self.at(marker.as_ref()),
                    message: format!("{context}{}: {}", key.as_str(), field_error(&e)),
                });
            }
        }
        if problems.len() > before {
            return None;
        }
        let spec: RuleSpec = match marked_yaml::from_node(node) {
            Ok(spec) => spec,
            Err(e) => {
                let marker = e.start_mark();
                problems.push(Problem {
                    location: self.at(marker.as_ref().or(node.span().start())),
                    message: format!("{context}{}", field_error(&e)),
                });
                return None;
            }
        };
        let span_of = |key: &str| -> Span {
            mapping
                .get_node(key)
                .map_or(*node.span(), |value| *value.span())
        };
        self.check(spec, node, &span_of, problems)
    }

    fn check(
        &self,
        spec: RuleSpec,
        rule_node: &Node,
        span_of: &dyn Fn(&str) -> Span,
        problems: &mut Vec<Problem>,
    ) -> Option<Rule> {
        let before = problems.len();
        let Some(name) = spec.name.clone() else {
            problems.push(Problem {
                location: self.at_node(rule_node),
                message: "a rule needs a `name:`".to_owned(),
            });
            return None;
        };
        let context = format!("rule {name:?}: ");
        let mut fail = |key: &str, message: String| {
            self.problem(problems, &span_of(key), format!("{context}{message}"));
        };
        if !valid_rule_name(&name) {
            fail(
                "name",
                "a name is 1 to 128 letters, digits, `-`, `_` or `.`, starting with a letter or digit".to_owned(),
            );
        }
        let kinds = [
            ("counter", spec.counter.is_some()),
            ("match", spec.match_.is_some()),
            ("expr", spec.expr.is_some()),
            ("stale", spec.stale.is_some()),
        ];
        let given: Vec<&str> = kinds
            .iter()
            .filter(|(_, set)| *set)
            .map(|(k, _)| *k)
            .collect();
        let condition = match given.as_slice() {
            [] => {
                fail(
                    "name",
                    "a rule needs `counter:` or `match:` (with `min:`/`max:`), `expr:`, or `stale:`"
                        .to_owned(),
                );
                None
            }
            [_, second, ..] => {
                fail(
                    second,
                    format!(
                        "a rule has exactly one of `counter:`, `match:`, `expr:` and `stale:`; this one has {}",
                        given.join(" and ")
                    ),
                );
                None
            }
            ["stale"] => {
                for key in ["min", "max"] {
                    if (key == "min" && spec.min.is_some()) || (key == "max" && spec.max.is_some())
                    {
                        fail(
                            key,
                            format!(
                                "`{key}:` belongs to a counter limit; a stale rule says `max:` inside `stale:`"
                            ),
                        );
                    }
                }
                let stale = spec.stale.clone().unwrap_or_default();
                let after = match stale.after.as_deref().map(duration::parse) {
                    None => {
                        fail(
                            "stale",
                            "stale: needs `after:`, how long an instance may stay silent (`after: 5m`)"
                                .to_owned(),
                        );
                        None
                    }
                    Some(Ok(after)) => Some(after),
                    Some(Err(e)) => {
                        fail("stale", format!("stale: after: {e}"));
                        None
                    }
                };
                let forget_after = match stale.forget_after.as_deref().map(duration::parse) {
                    None => Some(DEFAULT_FORGET_AFTER),
                    Some(Ok(forget_after)) => Some(forget_after),
                    Some(Err(e)) => {
                        fail("stale", format!("stale: forget_after: {e}"));
                        None
                    }
                };
                if let (Some(after), Some(forget_after)) = (after, forget_after)
                    && forget_after <= after
                {
                    fail(
                        "stale",
                        format!(
                            "stale: forget_after ({}) must be longer than after ({}): an instance is stale before it is forgotten",
                            duration::display(forget_after),
                            duration::display(after)
                        ),
                    );
                }
                let limit = match (stale.max, stale.max_share.as_deref()) {
                    (Some(_), Some(_)) => {
                        fail(
                            "stale",
                            "stale: give `max:` (a count) or `max_share:` (a share of the fleet), not both"
                                .to_owned(),
                        );
                        None
                    }
                    (Some(max), None) => Some(StaleLimit::Count(max)),
                    (None, None) => Some(StaleLimit::Count(0)),
                    (None, Some(text)) => match parse_share(text) {
                        Ok(share) => Some(StaleLimit::Share(share)),
                        Err(e) => {
                            fail("stale", format!("stale: max_share: {e}"));
                            None
                        }
                    },
                };
                match (after, forget_after, limit) {
                    (Some(after), Some(forget_after), Some(limit)) => Some(Condition::Stale {
                        thresholds: Thresholds {
                            after,
                            forget_after,
                        },
                        limit,
                    }),
                    _ => None,
                }
            }
            ["expr"] => {
                for key in ["min", "max"] {
                    if (key == "min" && spec.min.is_some()) || (key == "max" && spec.max.is_some())
                    {
                        fail(
                            key,
                            format!(
                                "`{key}:` belongs to a counter limit; an expression states its own comparison"
                            ),
                        );
                    }
                }
                match Expression::parse(spec.expr.as_deref().unwrap_or_default()) {
                    Ok(expression) => Some(Condition::Expr(expression)),
                    Err(e) => {
                        fail("expr", format!("expr: {e}"));
                        None
                    }
                }
            }
            [kind] => {
                if spec.min.is_none() && spec.max.is_none() {
                    fail(
                        kind,
                        "a counter limit needs `min:`, `max:` or both".to_owned(),
                    );
                }
                if let (Some(min), Some(max)) = (spec.min, spec.max)
                    && min > max
                {
                    fail(
                        "min",
                        format!("min ({min}) is above max ({max}); the rule would always fire"),
                    );
                }
                let target = if *kind == "counter" {
                    let counter = spec.counter.clone().unwrap_or_default();
                    if counter.is_empty()
                        || counter.len() > 255
                        || counter.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        fail(
                            "counter",
                            format!(
                                "{counter:?} cannot be a counter name: names are 1 to 255 bytes without whitespace or control characters"
                            ),
                        );
                    }
                    Some(Target::Exact(counter))
                } else {
                    let pattern = spec.match_.clone().unwrap_or_default();
                    match Glob::new(&pattern) {
                        Ok(glob) => Some(Target::Glob {
                            matcher: glob.compile_matcher(),
                            pattern,
                        }),
                        Err(e) => {
                            fail(
                                "match",
                                format!("match: {pattern:?} is not a valid glob: {}", e.kind()),
                            );
                            None
                        }
                    }
                };
                target.map(|target| Condition::Limit {
                    target,
                    min: spec.min,
                    max: spec.max,
                })
            }
        };
        for (key, text) in [
            ("description", &spec.description),
            ("summary", &spec.summary),
            ("runbook", &spec.runbook),
        ] {
            if let Some(text) = text
                && text.chars().count() > MAX_TEXT_CHARS
            {
                fail(
                    key,
                    format!(
                        "{key}: longer than {MAX_TEXT_CHARS} characters; link to a runbook for the detail"
                    ),
                );
            }
        }
        let labels = spec.labels.clone().unwrap_or_default();
        if labels.len() > MAX_LABELS {
            fail("labels", format!("more than {MAX_LABELS} labels"));
        }
        if labels
            .values()
            .any(|value| value.chars().count() > MAX_LABEL_CHARS)
        {
            fail(
                "labels",
                format!("a label value is longer than {MAX_LABEL_CHARS} characters"),
            );
        }
        for key in labels.keys() {
            if !valid_label_name(key) {
                fail(
                    "labels",
                    format!(
                        "label {key:?}: label names are letters, digits and `_`, starting with a letter or `_`"
                    ),
                );
            } else if key == "counter" || key == "rule" {
                fail("labels", format!("label {key:?} is set by tally itself"));
            }
        }
        let mut duration_of = |key: &str, text: Option<&str>| -> Option<Duration> {
            let text = text?;
            match duration::parse(text) {
                Ok(duration) => Some(duration),
                Err(_) if key == "for" && text.trim().parse::<u64>().is_ok() => {
                    let count = text.trim().parse::<u64>().unwrap_or(1).max(1);
                    fail(
                        key,
                        format!(
                            "for: {count} counts evaluations, but `for:` is a time (rules are evaluated on a clock as well as on changes); write how long the condition must hold, like `for: {count}m`"
                        ),
                    );
                    None
                }
                Err(e) => {
                    fail(key, format!("{key}: {e}"));
                    None
                }
            }
        };
        let for_ = duration_of("for", spec.for_.as_deref());
        let keep_firing_for = duration_of("keep_firing_for", spec.keep_firing_for.as_deref());
        let repeat = duration_of("repeat", spec.repeat.as_deref());
        let kind = if spec.expr.is_some() {
            Kind::Expr
        } else if spec.stale.is_some() {
            Kind::Stale
        } else {
            Kind::Limit
        };
        let fields = summary_fields(kind, &labels, spec.min, spec.max);
        let summary_source = spec.summary.clone().unwrap_or_else(|| {
            match kind {
                Kind::Expr => DEFAULT_EXPR_SUMMARY,
                Kind::Stale => DEFAULT_STALE_SUMMARY,
                Kind::Limit => DEFAULT_LIMIT_SUMMARY,
            }
            .to_owned()
        });
        let summary = match Template::parse(&summary_source, &fields) {
            Ok(summary) => Some(summary),
            Err(e) => {
                fail("summary", format!("summary: {e}"));
                None
            }
        };
        if problems.len() > before {
            return None;
        }
        Some(Rule {
            name,
            description: spec.description,
            condition: condition?,
            severity: spec.severity.unwrap_or(Severity::Warning),
            labels,
            summary: summary?,
            summary_source,
            runbook: spec.runbook,
            for_: for_.unwrap_or_default(),
            keep_firing_for: keep_firing_for.unwrap_or_default(),
            repeat,
            location: self.at_node(rule_node),
        })
    }
}

/// Refuses a YAML text before it reaches the parser, which recurses once per
/// level of nesting: oversized files, and nesting deeper than any rules or
/// test file needs, whether by indentation, brackets, or compact
/// collections on one line (`- - - a`). Gives the line and the reason.
pub(crate) fn guard_yaml(text: &str) -> Result<(), (usize, String)> {
    if text.len() > MAX_FILE_BYTES {
        return Err((
            1,
            format!(
                "the file is {} bytes; rules files are at most {MAX_FILE_BYTES}",
                text.len()
            ),
        ));
    }
    let mut depth = 0usize;
    for (index, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        if indent > MAX_INDENT {
            return Err((
                index + 1,
                format!("indented more than {MAX_INDENT} columns; nest less deeply"),
            ));
        }
        // Each `- `, `? ` or `: ` may open a collection on the same line.
        let bytes = line.as_bytes();
        let compact = bytes
            .windows(2)
            .filter(|pair| matches!(pair, [b'-' | b'?' | b':', b' ']))
            .count();
        if compact > MAX_COMPACT_PER_LINE {
            return Err((
                index + 1,
                format!(
                    "more than {MAX_COMPACT_PER_LINE} `- `, `? ` or `: ` on one line; put nested items on lines of their own"
                ),
            ));
        }
        for c in line.chars() {
            match c {
                '[' | '{' => depth += 1,
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth > MAX_FLOW_DEPTH {
                return Err((
                    index + 1,
                    format!("brackets nest deeper than {MAX_FLOW_DEPTH} levels"),
                ));
            }
        }
    }
    Ok(())
}

/// Where a node starts as a person sees it: a mapping's first key (the
/// parser marks a block mapping where its first `:` is).
pub(crate) fn start_of(node: &Node) -> Option<Marker> {
    node.as_mapping()
        .and_then(|mapping| mapping.keys().next())
        .and_then(|key| key.span().start().copied())
        .or_else(|| node.span().start().copied())
}

/// The fields a rule's summary may name.
/// A rule's kind, for the fields its summary may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Limit,
    Expr,
    Stale,
}

/// `2%`, `0.5%`: a share of the fleet, as a fraction.
fn parse_share(text: &str) -> Result<f64, String> {
    let number = text
        .trim()
        .strip_suffix('%')
        .ok_or_else(|| format!("{text:?} is not a percentage; write it like \"2%\""))?;
    match number.trim().parse::<f64>() {
        Ok(percent) if (0.0..=100.0).contains(&percent) => Ok(percent / 100.0),
        _ => Err(format!(
            "{text:?} is not a percentage from 0% to 100%; write it like \"2%\""
        )),
    }
}

fn summary_fields(
    kind: Kind,
    labels: &BTreeMap<String, String>,
    min: Option<i64>,
    max: Option<i64>,
) -> Vec<String> {
    let mut fields: Vec<String> = COMMON_FIELDS.iter().map(|f| (*f).to_owned()).collect();
    if kind == Kind::Expr {
        fields.extend(EXPR_FIELDS.iter().map(|f| (*f).to_owned()));
    } else if kind == Kind::Stale {
        fields.extend(STALE_FIELDS.iter().map(|f| (*f).to_owned()));
    } else {
        fields.extend(
            LIMIT_FIELDS
                .iter()
                .filter(|f| (**f != "min" || min.is_some()) && (**f != "max" || max.is_some()))
                .map(|f| (*f).to_owned()),
        );
    }
    fields.extend(labels.keys().map(|key| format!("labels.{key}")));
    fields
}

fn field_error(error: &marked_yaml::FromNodeError) -> String {
    match &**error {
        marked_yaml::Error::IntegerParseFailure(e, _) => {
            format!("expected a whole number ({e})")
        }
        marked_yaml::Error::NotBoolean(_) => "expected true or false".to_owned(),
        marked_yaml::Error::FloatParseFailure(e, _) => format!("expected a number ({e})"),
        marked_yaml::Error::UnknownFieldError(field, expected, _) => {
            format!(
                "unknown key {field:?}; expected one of {}",
                expected.join(", ")
            )
        }
        marked_yaml::Error::Other(message, _) => message.clone(),
    }
}

fn valid_rule_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The known key nearest a misspelt one, when it is near enough to suggest.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|candidate| (edit_distance(key, candidate), *candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        match RuleSet::load(&[("ops/limits.yaml", yaml)]) {
            Ok(_) => Vec::new(),
            Err(Problems(problems)) => problems.iter().map(ToString::to_string).collect(),
        }
    }

    /// Asserts exactly one problem, at this line and column, saying this.
    fn one(yaml: &str, line: usize, column: usize, says: &str) {
        let found = problems(yaml);
        assert_eq!(found.len(), 1, "{found:#?}");
        let prefix = format!("ops/limits.yaml:{line}:{column}: ");
        assert!(
            found[0].starts_with(&prefix),
            "{} does not start with {prefix}",
            found[0]
        );
        assert!(
            found[0].contains(says),
            "{} does not say {says:?}",
            found[0]
        );
    }

    #[test]
    fn a_good_file_loads_every_kind_of_rule() {
        let yaml = r#"
rules:
  - name: counter1-max
    counter: COUNTER1
    max: 150000
    severity: critical
    labels: {team: payments}
    summary: "{{counter}} = {{value}} > {{threshold}} ({{labels.team}})"
    repeat: 4h
  - name: errors-any
    match: "errors.*"
    min: 0
    max: 10
    for: 3m
    keep_firing_for: 10m
  - name: win-rate
    expr: 'ratio(counter("bids-won"), bids) < 0.1'
"#;
        let rules = RuleSet::load(&[("ops/limits.yaml", yaml)]).unwrap();
        assert_eq!(rules.rules().len(), 3);
        let first = &rules.rules()[0];
        assert_eq!(first.severity, Severity::Critical);
        assert_eq!(first.repeat, Some(Duration::from_secs(4 * 3600)));
        assert_eq!(first.location.to_string(), "ops/limits.yaml:3:5");
        assert!(rules.rules()[1].depends_on("errors.db"));
        assert_eq!(rules.rules()[1].for_, Duration::from_secs(180));
        assert_eq!(rules.rules()[1].keep_firing_for, Duration::from_secs(600));
        assert!(rules.rules()[2].depends_on("bids-won"));
        assert_eq!(rules.rules()[2].severity, Severity::Warning);
    }

    #[test]
    fn an_empty_rules_list_is_valid() {
        assert!(
            RuleSet::load(&[("a.yaml", "rules: []\n")])
                .unwrap()
                .is_empty()
        );
        assert!(RuleSet::load(&[("a.yaml", "rules:\n")]).unwrap().is_empty());
    }

    #[test]
    fn a_stale_rule_loads_with_its_defaults_and_its_mistakes_are_named() {
        let rules = RuleSet::load(&[(
            "fleet.yaml",
            "rules:\n  - name: silent\n    stale: {after: 5m, max_share: \"2%\"}\n",
        )])
        .unwrap();
        match &rules.rules()[0].condition {
            Condition::Stale { thresholds, limit } => {
                assert_eq!(thresholds.after, Duration::from_secs(300));
                assert_eq!(thresholds.forget_after, DEFAULT_FORGET_AFTER);
                assert_eq!(*limit, StaleLimit::Share(0.02));
                assert!(limit.breached(3, 100) && !limit.breached(2, 100));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            !rules.rules()[0].depends_on("anything"),
            "decided on ticks only"
        );
        let stale = |body: &str| format!("rules:\n  - name: s\n    stale: {body}\n");
        one(&stale("{max: 1}"), 3, 12, "stale: needs `after:`");
        one(
            &stale("{after: 5m, max: 1, max_share: \"1%\"}"),
            3,
            12,
            "not both",
        );
        one(
            &stale("{after: 1h, forget_after: 30m}"),
            3,
            12,
            "forget_after (30m) must be longer than after (1h)",
        );
        one(
            &stale("{after: 5m, max_share: \"two\"}"),
            3,
            12,
            "is not a percentage",
        );
        one(&stale("{after: 5 minutes}"), 3, 12, "stale: after:");
        one(
            "rules:\n  - name: s\n    stale: {after: 5m}\n    max: 3\n",
            4,
            10,
            "a stale rule says `max:` inside `stale:`",
        );
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        one(
            "rules:\n  - name: a\n    counter: X\n    max: 1\n    sumary: hi\n",
            5,
            5,
            "unknown key \"sumary\" (did you mean `summary`?)",
        );
        one("rule:\n  - name: a\n", 1, 1, "unknown key \"rule\"");
    }

    #[test]
    fn bad_globs_are_reported_at_the_pattern() {
        one(
            "rules:\n  - name: a\n    match: 'bids-[won'\n    max: 1\n",
            3,
            12,
            "not a valid glob",
        );
    }

    #[test]
    fn expressions_that_do_not_parse_are_reported_at_the_expression() {
        one(
            "rules:\n  - name: a\n    expr: 'COUNTER1 >'\n",
            3,
            11,
            "rule \"a\": expr: does not parse",
        );
    }

    #[test]
    fn type_errors_in_expressions_are_reported() {
        one(
            "rules:\n  - name: a\n    expr: 'COUNTER1 > \"lots\"'\n",
            3,
            11,
            "rule \"a\": expr:",
        );
        one(
            "rules:\n  - name: a\n    expr: 'COUNTER1 + 1'\n",
            3,
            11,
            "rather than true or false",
        );
    }

    #[test]
    fn duplicate_rule_names_are_reported_at_the_second_with_the_first() {
        let yaml = "rules:\n  - name: a\n    counter: X\n    max: 1\n";
        let error = RuleSet::load(&[("one.yaml", yaml), ("two.yaml", yaml)]).unwrap_err();
        assert_eq!(error.0.len(), 1);
        assert_eq!(
            error.0[0].to_string(),
            "two.yaml:2:5: rule \"a\" is already defined at one.yaml:2:5; rule names must be unique"
        );
    }

    #[test]
    fn templates_naming_unknown_fields_are_reported() {
        one(
            "rules:\n  - name: a\n    counter: X\n    max: 1\n    summary: '{{countr}} high'\n",
            5,
            14,
            "{{countr}} is not a field of this rule",
        );
        // An expression rule has no single counter or value.
        one(
            "rules:\n  - name: a\n    expr: 'X > 1'\n    summary: '{{value}}'\n",
            4,
            14,
            "{{value}} is not a field",
        );
    }

    #[test]
    fn wrong_types_of_values_are_reported_at_the_value() {
        one(
            "rules:\n  - name: a\n    counter: X\n    max: lots\n",
            4,
            10,
            "max: expected a whole number",
        );
        one(
            "rules:\n  - name: a\n    counter: X\n    max: 1\n    severity: urgent\n",
            5,
            15,
            "severity",
        );
        one(
            "rules:\n  - name: a\n    counter: X\n    max: 1\n    for: 2\n",
            5,
            10,
            "for: 2 counts evaluations, but `for:` is a time (rules are evaluated on a clock as well as on changes); write how long the condition must hold, like `for: 2m`",
        );
        one(
            "rules:\n  - name: a\n    counter: X\n    max: 1\n    keep_firing_for: 1.5h\n",
            5,
            22,
            "keep_firing_for: \"1.5h\" is not a duration",
        );
        one(
            "rules:\n  - name: a\n    counter: X\n    max: 1\n    repeat: often\n",
            5,
            13,
            "like 30s, 10m, 4h or 1h30m",
        );
        one(
            "rules:\n  - name: a\n    counter: X\n    max: 1\n    labels: {team-x: y}\n",
            5,
            13,
            "label \"team-x\"",
        );
    }

    #[test]
    fn rules_missing_what_they_need_are_reported() {
        one(
            "rules:\n  - counter: X\n    max: 1\n",
            2,
            5,
            "needs a `name:`",
        );
        one(
            "rules:\n  - name: a\n",
            2,
            11,
            "needs `counter:` or `match:`",
        );
        one(
            "rules:\n  - name: a\n    counter: X\n",
            3,
            14,
            "needs `min:`, `max:`",
        );
        one(
            "rules:\n  - name: a\n    counter: X\n    expr: 'X > 1'\n",
            4,
            11,
            "exactly one of",
        );
        one(
            "rules:\n  - name: a\n    counter: X\n    min: 5\n    max: 1\n",
            4,
            10,
            "min (5) is above max (1)",
        );
        one(
            "rules:\n  - name: a\n    expr: 'X > 1'\n    max: 1\n",
            4,
            10,
            "belongs to a counter limit",
        );
        one(
            "rules:\n  - name: 'a b'\n    counter: X\n    max: 1\n",
            2,
            11,
            "a name is",
        );
        one(
            "rules:\n  - just a string\n",
            2,
            5,
            "each rule is a mapping",
        );
        one("rules: 5\n", 1, 8, "must be a list");
    }

    #[test]
    fn yaml_that_does_not_parse_is_reported_where_it_breaks() {
        one(
            "rules:\n  - name: a\n   counter: [\n",
            3,
            11,
            "not valid YAML",
        );
        one(
            "rules:\n  - name: a\n    name: b\n    counter: X\n    max: 1\n",
            3,
            5,
            "appears twice",
        );
    }

    #[test]
    fn anchors_are_refused_so_a_yaml_bomb_cannot_expand() {
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nrules: []\n";
        one(bomb, 1, 7, "anchors and aliases");
    }

    #[test]
    fn deep_nesting_and_huge_files_are_refused_before_parsing() {
        let deep = format!("rules: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
        one(&deep, 1, 1, "nest deeper");
        let wide = format!("rules:\n{}x: 1\n", " ".repeat(300));
        one(&wide, 2, 1, "indented more than");
        let huge = format!("rules: []\n#{}\n", "x".repeat(MAX_FILE_BYTES));
        one(&huge, 1, 1, "rules files are at most");
    }

    #[test]
    fn compact_nesting_on_one_line_is_refused_without_overflowing() {
        let hostile = [
            format!("rules:\n  {}a\n", "- ".repeat(30_000)),
            format!("rules:\n  - {}x\n", "a: ".repeat(30_000)),
        ];
        let found = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || hostile.iter().map(|h| problems(h)).collect::<Vec<_>>())
            .unwrap()
            .join()
            .unwrap();
        for problems in found {
            assert_eq!(problems.len(), 1);
            assert!(
                problems[0].starts_with("ops/limits.yaml:2:1: more than 32"),
                "{}",
                problems[0]
            );
        }
    }

    #[test]
    fn texts_too_long_for_a_message_are_refused() {
        let long = "x".repeat(MAX_TEXT_CHARS + 1);
        one(
            &format!("rules:\n  - name: a\n    counter: X\n    max: 1\n    description: {long}\n"),
            5,
            18,
            "description: longer than 2000 characters",
        );
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        let yaml = "\u{feff}rules:\n  - name: a\n    counter: X\n    max: 1\n";
        assert_eq!(RuleSet::load(&[("a.yaml", yaml)]).unwrap().rules().len(), 1);
    }

    #[test]
    fn every_problem_of_a_file_is_reported_at_once() {
        let yaml = "rules:\n  - name: a\n    counter: X\n    max: lots\n    colour: red\n  - name: b\n    match: '[x'\n    max: 1\n  - name: c\n    expr: 'X >'\n";
        let found = problems(yaml);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found[0].starts_with("ops/limits.yaml:4:10:"));
        assert!(found[1].starts_with("ops/limits.yaml:5:5:"));
        assert!(found[2].starts_with("ops/limits.yaml:7:12:"));
        assert!(found[3].starts_with("ops/limits.yaml:10:11:"));
    }
}
