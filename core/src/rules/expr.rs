//! Boolean expressions over a day's totals, in evalexpr's language.
//!
//! Counters whose names are identifiers are read as variables
//! (`COUNTER1 > 100`, `a.b`, non-ASCII names too). Any name at all, such as
//! `bids-won` (which evalexpr would read as a subtraction), is read with
//! `counter("bids-won")`. The functions tally adds:
//!
//! - `counter(NAME)`: the total; an error when the counter has none today;
//! - `counter(NAME, DEFAULT)`: the total, or DEFAULT when it has none;
//! - `sum(GLOB)` / `count(GLOB)`: the sum of, and number of, the totals whose
//!   names match a glob (0 when none do);
//! - `ratio(A, B)`: A / B as a float (evalexpr's `/` on integers truncates),
//!   an error when B is 0;
//! - `contributors(NAME)`: how many instances report the counter today (0
//!   when none do), from the aggregate stage's partial items;
//! - `instances()`: how many instances have a live body today (an empty
//!   body counts; a deleted object does not), from the same items. It moves
//!   with no counter's total (an empty body arriving), so a rule that reads
//!   only it is decided on the rules stage's ticks.
//!
//! Every name an expression reads is known when it is loaded, because names
//! and globs must be string literals; that is how the rules stage knows which
//! rules a changed counter can affect, and whether an expression needs the
//! day's other totals (only `sum` and `count` do).
//!
//! Totals are exact `i128`; one that does not fit evalexpr's `i64` is given
//! to the expression as a float, which is exact enough to compare.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use evalexpr::{Context, EvalexprError, EvalexprResult, Node, Operator, Value};
use globset::{Glob, GlobMatcher};

/// Longest expression accepted, in bytes: a rule is a line, not a program,
/// and evalexpr's parser recurses.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// Deepest nesting of parentheses accepted, for the same reason.
pub const MAX_NESTING: usize = 32;
/// Longest run of operators in a row (`>= -`, `!!`): each unary one nests
/// the parse a level deeper.
pub const MAX_OPERATOR_RUN: usize = 8;
/// Most `^` accepted: exponentiation is right-associative, so a chain of
/// them nests too.
pub const MAX_EXPONENTS: usize = 16;

/// Refuses, before evalexpr's recursive parser sees them, expressions that
/// would nest deeper than a thread's stack allows: parentheses, runs of
/// unary operators and chains of `^`, counted outside string literals.
fn check_shape(source: &str) -> Result<(), String> {
    let (mut depth, mut run, mut exponents) = (0usize, 0usize, 0usize);
    let mut in_string = false;
    let mut escaped = false;
    for c in source.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                run = 0;
            }
            '(' => {
                depth += 1;
                run = 0;
                if depth > MAX_NESTING {
                    return Err(format!("parentheses nest deeper than {MAX_NESTING} levels"));
                }
            }
            ')' => {
                depth = depth.saturating_sub(1);
                run = 0;
            }
            '-' | '!' | '+' | '*' | '/' | '%' | '^' | '&' | '|' | '=' | '<' | '>' => {
                run += 1;
                if c == '^' {
                    exponents += 1;
                }
                if run > MAX_OPERATOR_RUN {
                    return Err(format!(
                        "more than {MAX_OPERATOR_RUN} operators in a row; write the expression plainly"
                    ));
                }
                if exponents > MAX_EXPONENTS {
                    return Err(format!("more than {MAX_EXPONENTS} `^` in one expression"));
                }
            }
            c if c.is_whitespace() => {}
            _ => run = 0,
        }
    }
    Ok(())
}

/// A parsed, checked expression.
#[derive(Debug, Clone)]
pub struct Expression {
    source: String,
    tree: Node,
    /// Counters the expression reads by name.
    counters: BTreeSet<String>,
    /// Globs given to `sum` and `count`.
    globs: Vec<(String, GlobMatcher)>,
    /// Counters given to `contributors`.
    contributor_counters: BTreeSet<String>,
    /// Whether it calls `instances()`.
    reads_instances: bool,
}

/// What an expression found on a day's totals.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub holds: bool,
    /// The totals it read by name (those that exist), and what its `sum`
    /// and `count` calls found (as `sum("errors.*")`), for the alert.
    pub values: BTreeMap<String, i128>,
}

/// The day's totals as an expression sees them.
pub trait Totals {
    fn get(&self, counter: &str) -> Option<i128>;
    /// Every total, for `sum` and `count`.
    fn iter(&self) -> Box<dyn Iterator<Item = (&str, i128)> + '_>;
    /// How many instances report `counter` today (0 when none do), for
    /// `contributors()`; `None` when these totals come without the fleet's
    /// counts (a snapshot file, a rule test that gives none).
    fn contributors(&self, _counter: &str) -> Option<i64> {
        None
    }
    /// How many instances have a live body today, for `instances()`;
    /// `None` when these totals come without the fleet's counts.
    fn instances(&self) -> Option<i64> {
        None
    }
}

impl Totals for BTreeMap<String, i128> {
    fn get(&self, counter: &str) -> Option<i128> {
        BTreeMap::get(self, counter).copied()
    }
    fn iter(&self) -> Box<dyn Iterator<Item = (&str, i128)> + '_> {
        Box::new(BTreeMap::iter(self).map(|(name, value)| (name.as_str(), *value)))
    }
}

impl Expression {
    /// Parses and checks an expression: syntax, names given as literals,
    /// globs, no assignment, and types (it is evaluated once with every
    /// total at 1 and must give true or false without a type error).
    pub fn parse(source: &str) -> Result<Expression, String> {
        if source.len() > MAX_EXPRESSION_BYTES {
            return Err(format!(
                "the expression is {} bytes; at most {MAX_EXPRESSION_BYTES} are accepted",
                source.len()
            ));
        }
        check_shape(source)?;
        if source.trim().is_empty() {
            return Err("the expression is empty".to_owned());
        }
        let tree =
            evalexpr::build_operator_tree(source).map_err(|e| format!("does not parse: {e}"))?;
        if let Some(name) = tree.iter_write_variable_identifiers().next() {
            return Err(format!(
                "assigns to {name:?}; an expression only reads totals (use == to compare)"
            ));
        }
        let mut expression = Expression {
            source: source.to_owned(),
            counters: tree
                .iter_read_variable_identifiers()
                .map(str::to_owned)
                .collect(),
            tree: tree.clone(),
            globs: Vec::new(),
            contributor_counters: BTreeSet::new(),
            reads_instances: false,
        };
        collect_literal_arguments(&tree, &mut expression)?;
        expression.type_check()?;
        Ok(expression)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The counters it reads by name.
    pub fn counters(&self) -> &BTreeSet<String> {
        &self.counters
    }

    /// Whether a change of `counter` can change the result.
    pub fn depends_on(&self, counter: &str) -> bool {
        self.counters.contains(counter)
            || self.contributor_counters.contains(counter)
            || self.globs.iter().any(|(_, g)| g.is_match(counter))
    }

    /// Whether it reads the fleet's counts (`instances()`,
    /// `contributors()`), which only the aggregate stage's items carry.
    pub fn reads_fleet(&self) -> bool {
        self.reads_instances || !self.contributor_counters.is_empty()
    }

    /// Whether it needs the day's other totals (it sums or counts a glob).
    pub fn needs_all_totals(&self) -> bool {
        !self.globs.is_empty()
    }

    /// Evaluates on a day's totals. An error (a missing counter, division
    /// by zero, overflow) is the rule's, reported as such.
    pub fn evaluate(&self, totals: &dyn Totals) -> Result<Outcome, String> {
        let context = DayContext::new(self, totals);
        check_divisors(&self.tree, &context).map_err(|e| describe(&e))?;
        let value = self
            .tree
            .eval_with_context(&context)
            .map_err(|e| describe(&e))?;
        let aggregates = context.aggregates.into_inner();
        let Value::Boolean(holds) = value else {
            return Err(format!(
                "gives {value} ({}), not true or false",
                type_name(&value)
            ));
        };
        let mut values: BTreeMap<String, i128> = self
            .counters
            .iter()
            .filter_map(|name| totals.get(name).map(|v| (name.clone(), v)))
            .collect();
        values.extend(aggregates);
        Ok(Outcome { holds, values })
    }

    fn type_check(&self) -> Result<(), String> {
        let context = ProbeContext {
            variables: self
                .counters
                .iter()
                .map(|name| (name.clone(), Value::Int(1)))
                .collect(),
        };
        match self.tree.eval_with_context(&context) {
            Ok(Value::Boolean(_)) => Ok(()),
            Ok(value) => Err(format!(
                "gives {} rather than true or false; compare it, as in `... > 100`",
                type_name(&value)
            )),
            // Arithmetic failures on the probe's values say nothing about
            // real totals; real failures are reported when they happen.
            Err(
                EvalexprError::AdditionError { .. }
                | EvalexprError::SubtractionError { .. }
                | EvalexprError::NegationError { .. }
                | EvalexprError::MultiplicationError { .. }
                | EvalexprError::DivisionError { .. }
                | EvalexprError::ModulationError { .. },
            ) => Ok(()),
            // evalexpr finds a missing operand only when evaluating.
            Err(e @ EvalexprError::WrongOperatorArgumentAmount { .. }) => {
                Err(format!("does not parse: {e}"))
            }
            Err(e) => Err(describe(&e)),
        }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Float(_) => "a number",
        Value::Int(_) => "a number",
        Value::Boolean(_) => "a boolean",
        Value::Tuple(_) => "a tuple",
        Value::Empty => "nothing",
    }
}

/// evalexpr's messages, with tally's wording where it has a better one.
fn describe(error: &EvalexprError) -> String {
    match error {
        EvalexprError::DivisionError { dividend, divisor } => {
            format!("division of {dividend} by {divisor} (division by zero or overflow)")
        }
        EvalexprError::FunctionIdentifierNotFound(name) => format!(
            "unknown function {name:?}; tally adds counter, sum, count, ratio, contributors and instances to evalexpr's own"
        ),
        // evalexpr says "Error adding 9223372036854775807 + 1" (and "Error
        // negating --9223372036854775808"), which does not say what went
        // wrong: on integers these errors only ever mean an overflow.
        EvalexprError::AdditionError { augend, addend } => overflow(format!("{augend} + {addend}")),
        EvalexprError::SubtractionError {
            minuend,
            subtrahend,
        } => overflow(format!("{minuend} - {subtrahend}")),
        EvalexprError::MultiplicationError {
            multiplicand,
            multiplier,
        } => overflow(format!("{multiplicand} * {multiplier}")),
        EvalexprError::NegationError { argument } => overflow(format!("-({argument})")),
        EvalexprError::ModulationError { dividend, divisor } => {
            format!("remainder of {dividend} by {divisor} (division by zero or overflow)")
        }
        EvalexprError::CustomMessage(message) => message.clone(),
        other => other.to_string(),
    }
}

fn overflow(operation: String) -> String {
    format!(
        "{operation} overflows the 64-bit integers expressions compute with; keep intermediate values in range (compare `a > b - c` rather than `a + c > b`) or use ratio(), which computes in floating point"
    )
}

/// Fails a division or remainder by zero that evalexpr would let through.
///
/// evalexpr refuses an integer division by zero, but divides floats without
/// a check: `counter("A") * 1.0 / counter("B")` with B at 0 is infinity (or
/// NaN), which then compares as true or false without a word, and a total
/// beyond i64 (given as a float) divided by a zero total does the same.
/// Every divisor is evaluated first, and a zero one is the rule's error, as
/// for integers. This changes no result: evalexpr evaluates every operand
/// of every operator anyway (`&&` and `||` do not short-circuit), so a
/// guard such as `B != 0 && A / B > 1` already fails on integers.
fn check_divisors(node: &Node, context: &DayContext<'_>) -> EvalexprResult<()> {
    if let (Operator::Div | Operator::Mod, [dividend, divisor]) = (node.operator(), node.children())
    {
        let by = divisor.eval_with_context(context)?;
        if matches!(by, Value::Int(0)) || matches!(by, Value::Float(f) if f == 0.0) {
            let dividend = dividend.eval_with_context(context)?;
            return Err(match node.operator() {
                Operator::Div => EvalexprError::DivisionError {
                    dividend,
                    divisor: by,
                },
                _ => EvalexprError::ModulationError {
                    dividend,
                    divisor: by,
                },
            });
        }
    }
    node.children()
        .iter()
        .try_for_each(|child| check_divisors(child, context))
}

/// evalexpr's `math::abs`, `shl` and `shr` apply Rust's plain operators to
/// integers: they panic on overflow in a debug build (a rule would crash
/// the whole batch) and silently wrap in a release build
/// (`math::abs(-9223372036854775808)` stays negative, `shl(1, 64)` is 1).
/// These are the same functions with the overflow reported as the rule's
/// evaluation error. `None` leaves the call to evalexpr (floats, and the
/// type errors it reports itself).
///
/// `str::substring(s, start[, end])` is here too: evalexpr slices `s` at
/// those byte offsets and panics, in any build, when one falls inside a
/// character (`str::substring("é", 0, 1)`), which would take down
/// `tally rules check` or a whole rules batch. Here such an offset is an
/// out-of-bounds access, as one past the end already is.
fn checked_builtin(identifier: &str, argument: &Value) -> Option<EvalexprResult<Value>> {
    match (identifier, argument) {
        ("str::substring", _) => Some(substring(argument)),
        ("math::abs", Value::Int(n)) => Some(
            n.checked_abs()
                .map(Value::Int)
                .ok_or_else(|| EvalexprError::CustomMessage(overflow(format!("math::abs({n})")))),
        ),
        ("shl" | "shr", Value::Tuple(values)) => {
            let [Value::Int(a), Value::Int(by)] = values.as_slice() else {
                return None;
            };
            let shifted = u32::try_from(*by).ok().and_then(|bits| {
                if identifier == "shl" {
                    a.checked_shl(bits)
                } else {
                    a.checked_shr(bits)
                }
            });
            Some(shifted.map(Value::Int).ok_or_else(|| {
                EvalexprError::CustomMessage(format!(
                    "{identifier}({a}, {by}) shifts by {by} bits; a shift is 0 to 63 bits"
                ))
            }))
        }
        _ => None,
    }
}

/// evalexpr's `str::substring`, with offsets that split a character refused.
fn substring(argument: &Value) -> EvalexprResult<Value> {
    let args = argument.as_ranged_len_tuple(2..=3)?;
    let subject = args[0].as_string()?;
    let offset = |value: &Value| -> EvalexprResult<usize> {
        usize::try_from(value.as_int()?).map_err(|_| EvalexprError::OutOfBoundsAccess)
    };
    let start = offset(&args[1])?;
    let end = match args.get(2) {
        Some(end) => offset(end)?,
        None => subject.len(),
    };
    // `get` is `None` past the end, for start > end, and off a char boundary.
    subject
        .get(start..end)
        .map(Value::from)
        .ok_or(EvalexprError::OutOfBoundsAccess)
}

/// Finds `counter`, `sum` and `count` calls, requiring literal names.
fn collect_literal_arguments(node: &Node, expression: &mut Expression) -> Result<(), String> {
    if let Operator::FunctionIdentifier { identifier } = node.operator() {
        let function = identifier.as_str();
        if function == "instances" {
            expression.reads_instances = true;
        }
        if matches!(function, "counter" | "contributors" | "sum" | "count") {
            let literal = first_argument(node).ok_or_else(|| {
                format!(
                    "{function}() takes the {} as a string literal, as in {function}(\"bids-won\")",
                    if matches!(function, "counter" | "contributors") {
                        "counter's name"
                    } else {
                        "glob"
                    }
                )
            })?;
            if function == "counter" {
                expression.counters.insert(literal.to_owned());
            } else if function == "contributors" {
                expression.contributor_counters.insert(literal.to_owned());
            } else {
                let glob = Glob::new(literal)
                    .map_err(|e| format!("{function}({literal:?}): bad glob: {}", e.kind()))?;
                expression
                    .globs
                    .push((literal.to_owned(), glob.compile_matcher()));
            }
        }
    }
    for child in node.children() {
        collect_literal_arguments(child, expression)?;
    }
    Ok(())
}

/// The string literal a call's argument starts with, if it does.
fn first_argument(call: &Node) -> Option<&str> {
    let mut argument = call.children().first()?;
    loop {
        match argument.operator() {
            Operator::RootNode | Operator::Tuple => argument = argument.children().first()?,
            Operator::Const {
                value: Value::String(text),
            } => return Some(text),
            _ => return None,
        }
    }
}

fn total_value(total: i128) -> Value {
    i64::try_from(total).map_or(Value::Float(total as f64), Value::Int)
}

/// The arguments of `counter(NAME[, DEFAULT])`.
fn counter_arguments(argument: &Value) -> EvalexprResult<(String, Option<Value>)> {
    match argument {
        Value::String(name) => Ok((name.clone(), None)),
        Value::Tuple(values) => match values.as_slice() {
            [Value::String(name), default] => Ok((name.clone(), Some(default.clone()))),
            _ => Err(EvalexprError::CustomMessage(
                "counter() takes a name and an optional default: counter(\"bids\", 0)".to_owned(),
            )),
        },
        _ => Err(EvalexprError::CustomMessage(
            "counter() takes the counter's name as a string".to_owned(),
        )),
    }
}

fn ratio(argument: &Value) -> EvalexprResult<Value> {
    let Value::Tuple(values) = argument else {
        return Err(EvalexprError::CustomMessage(
            "ratio() takes two numbers: ratio(a, b)".to_owned(),
        ));
    };
    let [a, b] = values.as_slice() else {
        return Err(EvalexprError::CustomMessage(
            "ratio() takes two numbers: ratio(a, b)".to_owned(),
        ));
    };
    let (a, b) = (a.as_number()?, b.as_number()?);
    if b == 0.0 {
        return Err(EvalexprError::CustomMessage(
            "ratio(): division by zero".to_owned(),
        ));
    }
    Ok(Value::Float(a / b))
}

/// Evaluation over real totals.
struct DayContext<'a> {
    expression: &'a Expression,
    totals: &'a dyn Totals,
    variables: HashMap<String, Value>,
    /// What `sum` and `count` calls found, to send with the alert.
    aggregates: std::cell::RefCell<BTreeMap<String, i128>>,
}

impl<'a> DayContext<'a> {
    fn new(expression: &'a Expression, totals: &'a dyn Totals) -> DayContext<'a> {
        let variables = expression
            .counters
            .iter()
            .filter_map(|name| totals.get(name).map(|v| (name.clone(), total_value(v))))
            .collect();
        DayContext {
            expression,
            totals,
            variables,
            aggregates: Default::default(),
        }
    }

    fn matching(&self, glob: &str) -> EvalexprResult<impl Iterator<Item = i128> + '_> {
        let matcher = self
            .expression
            .globs
            .iter()
            .find(|(text, _)| text == glob)
            .map(|(_, matcher)| matcher.clone())
            .ok_or_else(|| {
                EvalexprError::CustomMessage(format!("glob {glob:?} was not given as a literal"))
            })?;
        Ok(self
            .totals
            .iter()
            .filter(move |(name, _)| matcher.is_match(name))
            .map(|(_, value)| value))
    }
}

impl Context for DayContext<'_> {
    fn get_value(&self, identifier: &str) -> Option<&Value> {
        self.variables.get(identifier)
    }

    fn call_function(&self, identifier: &str, argument: &Value) -> EvalexprResult<Value> {
        match identifier {
            "counter" => {
                let (name, default) = counter_arguments(argument)?;
                match (self.totals.get(&name), default) {
                    (Some(total), _) => Ok(total_value(total)),
                    (None, Some(default)) => Ok(default),
                    (None, None) => Err(EvalexprError::CustomMessage(format!(
                        "counter {name:?} has no total on this date; counter({name:?}, 0) gives a default"
                    ))),
                }
            }
            "sum" => {
                let glob = argument.as_string()?;
                let sum = self
                    .matching(&glob)?
                    .fold(0i128, |sum, v| sum.saturating_add(v));
                self.aggregates
                    .borrow_mut()
                    .insert(format!("sum({glob:?})"), sum);
                Ok(total_value(sum))
            }
            "count" => {
                let glob = argument.as_string()?;
                let count = self.matching(&glob)?.count();
                self.aggregates
                    .borrow_mut()
                    .insert(format!("count({glob:?})"), count as i128);
                Ok(Value::Int(i64::try_from(count).unwrap_or(i64::MAX)))
            }
            "ratio" => ratio(argument),
            "contributors" => {
                let name = argument.as_string()?;
                let count = self.totals.contributors(&name).ok_or_else(|| {
                    EvalexprError::CustomMessage(format!(
                        "contributors({name:?}) needs the fleet's counts, which these totals do not carry"
                    ))
                })?;
                self.aggregates
                    .borrow_mut()
                    .insert(format!("contributors({name:?})"), i128::from(count));
                Ok(Value::Int(count))
            }
            "instances" => {
                argument.as_empty().map_err(|_| {
                    EvalexprError::CustomMessage("instances() takes no argument".to_owned())
                })?;
                let count = self.totals.instances().ok_or_else(|| {
                    EvalexprError::CustomMessage(
                        "instances() needs the fleet's counts, which these totals do not carry"
                            .to_owned(),
                    )
                })?;
                self.aggregates
                    .borrow_mut()
                    .insert("instances()".to_owned(), i128::from(count));
                Ok(Value::Int(count))
            }
            other => checked_builtin(other, argument).unwrap_or_else(|| {
                Err(EvalexprError::FunctionIdentifierNotFound(other.to_owned()))
            }),
        }
    }

    fn are_builtin_functions_disabled(&self) -> bool {
        false
    }

    fn set_builtin_functions_disabled(&mut self, _disabled: bool) -> EvalexprResult<()> {
        Err(EvalexprError::BuiltinFunctionsCannotBeDisabled)
    }
}

/// The type check's context: every total is 1.
struct ProbeContext {
    variables: HashMap<String, Value>,
}

impl Context for ProbeContext {
    fn get_value(&self, identifier: &str) -> Option<&Value> {
        self.variables.get(identifier)
    }

    fn call_function(&self, identifier: &str, argument: &Value) -> EvalexprResult<Value> {
        match identifier {
            "counter" => {
                counter_arguments(argument).map(|(_, default)| default.unwrap_or(Value::Int(1)))
            }
            "sum" | "count" | "contributors" => argument.as_string().map(|_| Value::Int(1)),
            "instances" => argument.as_empty().map(|()| Value::Int(1)).map_err(|_| {
                EvalexprError::CustomMessage("instances() takes no argument".to_owned())
            }),
            // The probe's values are made up: check the arguments' types
            // without dividing by them.
            "ratio" => ratio(argument).or_else(|e| match e {
                EvalexprError::CustomMessage(message) if message.contains("zero") => {
                    Ok(Value::Float(1.0))
                }
                other => Err(other),
            }),
            // Overflows on the probe's values say nothing about real totals,
            // as for the arithmetic operators.
            other => match checked_builtin(other, argument) {
                Some(Err(EvalexprError::CustomMessage(_))) => Ok(Value::Int(1)),
                Some(result) => result,
                None => Err(EvalexprError::FunctionIdentifierNotFound(other.to_owned())),
            },
        }
    }

    fn are_builtin_functions_disabled(&self) -> bool {
        false
    }

    fn set_builtin_functions_disabled(&mut self, _disabled: bool) -> EvalexprResult<()> {
        Err(EvalexprError::BuiltinFunctionsCannotBeDisabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(pairs: &[(&str, i128)]) -> BTreeMap<String, i128> {
        pairs.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect()
    }

    #[test]
    fn reads_identifiers_and_quoted_names() {
        let e = Expression::parse(r#"counter("bids-won") * 10 < bids && a.b > 0"#).unwrap();
        assert_eq!(
            e.counters().iter().map(String::as_str).collect::<Vec<_>>(),
            ["a.b", "bids", "bids-won"]
        );
        assert!(e.depends_on("bids-won") && !e.depends_on("other"));
        assert!(!e.needs_all_totals());
        let outcome = e
            .evaluate(&totals(&[("bids-won", 5), ("bids", 100), ("a.b", 1)]))
            .unwrap();
        assert!(outcome.holds);
        assert_eq!(outcome.values.len(), 3);
    }

    #[test]
    fn non_ascii_names_are_identifiers() {
        let e = Expression::parse("заказы > 3").unwrap();
        assert!(e.evaluate(&totals(&[("заказы", 4)])).unwrap().holds);
    }

    #[test]
    fn sums_and_counts_globs_over_all_totals() {
        let e = Expression::parse(r#"sum("err.*") > 10 && count("err.*") == 2"#).unwrap();
        assert!(e.needs_all_totals() && e.depends_on("err.db") && !e.depends_on("ok"));
        let day = totals(&[("err.db", 6), ("err.net", 5), ("ok", 100)]);
        let outcome = e.evaluate(&day).unwrap();
        assert!(outcome.holds);
        // On-call see what the sums came to.
        assert_eq!(outcome.values[r#"sum("err.*")"#], 11);
        assert_eq!(outcome.values[r#"count("err.*")"#], 2);
    }

    #[test]
    fn a_missing_counter_is_an_error_unless_defaulted() {
        let e = Expression::parse("COUNTER9 > 1").unwrap();
        let error = e.evaluate(&totals(&[])).unwrap_err();
        assert!(error.contains("COUNTER9"), "{error}");
        let e = Expression::parse(r#"counter("x-y") > 1"#).unwrap();
        let error = e.evaluate(&totals(&[])).unwrap_err();
        assert!(error.contains(r#"counter("x-y", 0)"#), "{error}");
        let e = Expression::parse(r#"counter("x-y", 0) == 0"#).unwrap();
        assert!(e.evaluate(&totals(&[])).unwrap().holds);
    }

    #[test]
    fn division_by_zero_and_overflow_are_errors_of_the_evaluation() {
        let e = Expression::parse("a / b > 1").unwrap();
        let error = e.evaluate(&totals(&[("a", 1), ("b", 0)])).unwrap_err();
        assert!(error.contains("division"), "{error}");
        let e = Expression::parse("ratio(a, b) > 0.5").unwrap();
        assert!(
            e.evaluate(&totals(&[("a", 1), ("b", 0)]))
                .unwrap_err()
                .contains("zero")
        );
        assert!(e.evaluate(&totals(&[("a", 3), ("b", 4)])).unwrap().holds);
        let e = Expression::parse("a + a > 0").unwrap();
        assert!(e.evaluate(&totals(&[("a", i64::MAX as i128)])).is_err());
    }

    /// evalexpr's parser recurses per unary operator and per `^`; on a
    /// thread with a small stack, such expressions are refused rather than
    /// overflowing it.
    #[test]
    fn expressions_that_would_nest_too_deeply_are_refused_without_overflowing() {
        let hostile = [
            format!("{}a > 1", "-".repeat(4000)),
            format!("{}a", "!".repeat(4000)),
            format!("{}a > 1", "- ".repeat(2000)),
            format!("a{} > 1", "^a".repeat(2000)),
        ];
        let refused = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                hostile
                    .iter()
                    .map(|e| Expression::parse(e).is_err())
                    .collect::<Vec<_>>()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(refused, [true; 4]);
        assert!(Expression::parse("a >= -1 && !(b < -2)").is_ok());
    }

    #[test]
    fn overflows_name_the_operation_and_what_to_do() {
        let max = i64::MAX as i128;
        for (source, day, expected) in [
            (
                "a + 1 > 0",
                [("a", max)],
                "9223372036854775807 + 1 overflows",
            ),
            (
                "a - -1 > 0",
                [("a", max)],
                "9223372036854775807 - -1 overflows",
            ),
            (
                "a * 2 > 0",
                [("a", max)],
                "9223372036854775807 * 2 overflows",
            ),
            (
                "-a > 0",
                [("a", -max - 1)],
                "-(-9223372036854775808) overflows",
            ),
            (
                "a % 0 > 0",
                [("a", 1)],
                "remainder of 1 by 0 (division by zero",
            ),
        ] {
            let error = Expression::parse(source)
                .unwrap()
                .evaluate(&totals(&day))
                .unwrap_err();
            assert!(error.starts_with(expected), "{source}: {error}");
        }
    }

    #[test]
    fn float_division_by_zero_is_an_error_like_integer_division() {
        let zero = [("a", 10), ("b", 0)];
        for (source, expected) in [
            ("a * 1.0 / b > 1.5", "division of 10 by 0"),
            ("a / 0.0 > 1", "division of 10 by 0"),
            ("a % b == 0", "remainder of 10 by 0"),
            ("a * 1.0 % b == 0", "remainder of 10 by 0"),
        ] {
            let error = Expression::parse(source)
                .unwrap()
                .evaluate(&totals(&zero))
                .unwrap_err();
            assert!(error.starts_with(expected), "{source}: {error}");
        }
        // A total beyond i64 is a float; divided by a zero total it was infinity.
        let huge = [("a", i128::from(i64::MAX) * 2), ("b", 0)];
        let e = Expression::parse("a / b > 1").unwrap();
        assert!(e.evaluate(&totals(&huge)).unwrap_err().contains("division"));
        // Non-zero divisors, and divisions by non-constant expressions, as before.
        let e = Expression::parse("a * 1.0 / b == 2.5 && a / (b - 1) == 10 / 3").unwrap();
        assert!(e.evaluate(&totals(&[("a", 10), ("b", 4)])).unwrap().holds);
    }

    /// evalexpr's own `math::abs`, `shl` and `shr` panic on overflow in a
    /// debug build and wrap in a release one; on real totals the overflow
    /// is the rule's error, and on the load-time probe it is no error.
    #[test]
    fn builtin_functions_that_overflow_are_errors_not_panics() {
        let min = i64::MIN as i128;
        for (source, day, expected) in [
            (
                "math::abs(a) > 0",
                [("a", min)],
                "math::abs(-9223372036854775808) overflows",
            ),
            ("shl(1, a) > 0", [("a", 64)], "shl(1, 64) shifts by 64 bits"),
            ("shr(1, a) > 0", [("a", -1)], "shr(1, -1) shifts by -1 bits"),
        ] {
            let expression = Expression::parse(source).unwrap();
            let error = expression.evaluate(&totals(&day)).unwrap_err();
            assert!(error.starts_with(expected), "{source}: {error}");
        }
        assert!(Expression::parse("shl(1, 64) > 0").is_ok());
        let e =
            Expression::parse("math::abs(a) == 5 && shl(a, 2) == 20 && shr(a, 1) == 2").unwrap();
        assert!(e.evaluate(&totals(&[("a", 5)])).unwrap().holds);
        // A total beyond i64 is a float, which evalexpr's own abs takes.
        let e = Expression::parse("math::abs(a) > 0").unwrap();
        assert!(e.evaluate(&totals(&[("a", -4 * min)])).unwrap().holds);
        assert!(Expression::parse(r#"shl("x", 1) > 0"#).is_err());
    }

    #[test]
    fn totals_beyond_i64_are_compared_as_floats() {
        let e = Expression::parse("a > 9000000000000000000").unwrap();
        assert!(
            e.evaluate(&totals(&[("a", i128::from(i64::MAX) * 4)]))
                .unwrap()
                .holds
        );
    }

    #[test]
    fn refuses_what_cannot_be_evaluated() {
        for (source, expected) in [
            ("a >", "does not parse"),
            ("a = 5", "assigns"),
            ("a + 1", "rather than true or false"),
            (r#"a > "x""#, ""),
            ("nosuch(a) > 1", "unknown function"),
            ("counter(a) > 1", "string literal"),
            (r#"sum("[a") > 1"#, "bad glob"),
            ("", "empty"),
        ] {
            let error = Expression::parse(source).unwrap_err();
            assert!(error.contains(expected), "{source}: {error}");
        }
        let deep = format!("{}a{} > 1", "(".repeat(100), ")".repeat(100));
        assert!(Expression::parse(&deep).unwrap_err().contains("nest"));
        // Parentheses inside a name are not nesting.
        assert!(
            Expression::parse(r#"counter("((((((((((((((((((((((((((((((((((((x", 0) > 1"#).is_ok()
        );
        let long = format!("a > {}", "1".repeat(MAX_EXPRESSION_BYTES));
        assert!(Expression::parse(&long).unwrap_err().contains("bytes"));
    }

    /// The expression fuzz target (fuzz/fuzz_targets/expression.rs) crashed
    /// on these: evalexpr's `str::substring` panicked on a byte offset
    /// inside a character, at load (the type check evaluates the
    /// expression) or, with an offset read from a total, on real totals.
    #[test]
    fn a_substring_that_would_split_a_character_is_an_error_not_a_panic() {
        let error = Expression::parse(r#"str::substring("é", 0, 1) == """#).unwrap_err();
        assert!(error.contains("invalid index"), "{error}");
        let e = Expression::parse(r#"str::substring("aé", counter("n", 0)) == "é""#).unwrap();
        assert!(e.evaluate(&totals(&[("n", 2)])).is_err());
        assert!(e.evaluate(&totals(&[("n", 1)])).unwrap().holds);
        assert!(e.evaluate(&totals(&[("n", -1)])).is_err());
        assert!(e.evaluate(&totals(&[("n", 9)])).is_err());
        let e = Expression::parse(r#"str::substring("aéb", 1, 3) == "é""#).unwrap();
        assert!(e.evaluate(&totals(&[])).unwrap().holds);
    }

    /// A day with the fleet's counts, as the rules stage reads it.
    struct Fleet {
        totals: BTreeMap<String, i128>,
        contributors: BTreeMap<String, i64>,
        instances: i64,
    }

    impl Totals for Fleet {
        fn get(&self, counter: &str) -> Option<i128> {
            self.totals.get(counter).copied()
        }
        fn iter(&self) -> Box<dyn Iterator<Item = (&str, i128)> + '_> {
            Totals::iter(&self.totals)
        }
        fn contributors(&self, counter: &str) -> Option<i64> {
            Some(self.contributors.get(counter).copied().unwrap_or(0))
        }
        fn instances(&self) -> Option<i64> {
            Some(self.instances)
        }
    }

    #[test]
    fn instances_and_contributors_read_the_fleets_counts() {
        let fleet = Fleet {
            totals: totals(&[("COUNTER1", 10)]),
            contributors: [("COUNTER1".to_owned(), 2)].into(),
            instances: 5,
        };
        let e = Expression::parse(r#"contributors("COUNTER1") * 2 < instances()"#).unwrap();
        let outcome = e.evaluate(&fleet).unwrap();
        assert!(outcome.holds);
        assert_eq!(outcome.values["instances()"], 5);
        assert_eq!(outcome.values["contributors(\"COUNTER1\")"], 2);
        assert!(
            e.depends_on("COUNTER1"),
            "a contributor count moves with its counter"
        );
        assert!(!e.depends_on("COUNTER2"));
        // A counter nobody reports has no contributors, not an error.
        let e = Expression::parse(r#"contributors("gone") == 0"#).unwrap();
        assert!(e.evaluate(&fleet).unwrap().holds);
        // Totals without the fleet's counts (a snapshot file) say so.
        let error = e.evaluate(&totals(&[])).unwrap_err();
        assert!(error.contains("needs the fleet's counts"), "{error}");
        assert!(
            Expression::parse("instances(3) > 1")
                .unwrap_err()
                .contains("instances() takes no argument")
        );
        assert!(
            Expression::parse("contributors(name) > 1")
                .unwrap_err()
                .contains("as a string literal")
        );
    }
}
