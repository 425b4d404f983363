//! Fuzzes expression rules: parsing and checking an `expr:` (evalexpr with
//! tally's `counter`, `sum`, `count` and `ratio`), loading it as a rule, and
//! evaluating it on a day's totals (`tally_core::rules::expr` and
//! `tally_core::rules::alert`).
//!
//! Ops write these expressions, and the rules stage evaluates every one
//! that a changed total can affect, on totals that are exact `i128`s and
//! may be anywhere in that range. An expression that cannot be evaluated
//! (a missing counter, division by zero, an overflow) must be that rule's
//! error, reported as such; a panic would fail the whole batch and silence
//! every other rule with it. Checked here:
//!
//! - no panic, stack overflow or hang in parsing, the load-time type check,
//!   or evaluation, with totals at 0, ±1, the `i64` and `i128` extremes and
//!   arbitrary values;
//! - an expression loads as a rule exactly when it parses on its own;
//! - the rule's evaluation through `alert::evaluate` is the expression's own;
//! - two evaluations in a row through the in-memory replay ops' rule tests
//!   use, with the messages rendered.
//!
//! Input: the expression as UTF-8 text up to the first NUL byte; the bytes
//! after it choose the totals (through `arbitrary`). Without a NUL, the
//! totals are a fixed small day.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::{Arbitrary, Unstructured};
use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use tally_core::key::Date;
use tally_core::rules::RuleSet;
use tally_core::rules::alert;
use tally_core::rules::expr::Expression;
use tally_core::rules::load::Condition;
use tally_core::rules::unit::Replay;

/// The counters a day may have; the seeds' expressions read these.
const NAMES: [&str; 10] = [
    "a",
    "b",
    "c",
    "COUNTER1",
    "COUNTER2",
    "bids",
    "bids-won",
    "errors.api",
    "requests.api",
    "x-y",
];

/// One counter's total, weighted towards the values where arithmetic breaks.
#[derive(Debug, Arbitrary)]
enum Total {
    Zero,
    One,
    MinusOne,
    I64Max,
    I64Min,
    /// Just outside `i64`: given to evalexpr as a float.
    I64MaxPlusOne,
    I64MinMinusOne,
    I128Max,
    I128Min,
    Small(i16),
    Int(i64),
    Wide(i128),
}

impl Total {
    fn value(&self) -> i128 {
        match *self {
            Total::Zero => 0,
            Total::One => 1,
            Total::MinusOne => -1,
            Total::I64Max => i64::MAX.into(),
            Total::I64Min => i64::MIN.into(),
            Total::I64MaxPlusOne => i128::from(i64::MAX) + 1,
            Total::I64MinMinusOne => i128::from(i64::MIN) - 1,
            Total::I128Max => i128::MAX,
            Total::I128Min => i128::MIN,
            Total::Small(v) => v.into(),
            Total::Int(v) => v.into(),
            Total::Wide(v) => v,
        }
    }
}

/// A day's totals: each of [`NAMES`] absent or at some value.
fn day(u: &mut Unstructured<'_>) -> BTreeMap<String, i128> {
    NAMES
        .iter()
        .filter_map(|name| {
            let total = Option::<Total>::arbitrary(u).ok().flatten()?;
            Some(((*name).to_owned(), total.value()))
        })
        .collect()
}

fn default_day() -> BTreeMap<String, i128> {
    [
        ("a", 1),
        ("b", 0),
        ("COUNTER1", 191_122),
        ("bids", 1000),
        ("bids-won", 10),
        ("errors.api", 5),
        ("requests.api", 100),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// The expression as a YAML double-quoted scalar with every character but
/// ASCII letters and digits escaped, so the YAML keeps it exactly and the
/// loader's textual guards (nesting, `- ` per line) see none of it.
fn yaml_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 4 + 2);
    out.push('"');
    for c in text.chars() {
        match c as u32 {
            _ if c.is_ascii_alphanumeric() => out.push(c),
            code @ 0..=0xff => out.push_str(&format!("\\x{code:02X}")),
            code @ 0x100..=0xffff => out.push_str(&format!("\\u{code:04X}")),
            code => out.push_str(&format!("\\U{code:08X}")),
        }
    }
    out.push('"');
    out
}

fuzz_target!(|data: &[u8]| {
    let (text, rest) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], Some(&data[nul + 1..])),
        None => (data, None),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let (first, second) = match rest {
        Some(rest) => {
            let mut u = Unstructured::new(rest);
            (day(&mut u), day(&mut u))
        }
        None => (default_day(), BTreeMap::new()),
    };

    let parsed = Expression::parse(text);
    let file = format!("rules:\n  - name: fuzz\n    expr: {}\n", yaml_quoted(text));
    let loaded = RuleSet::load(&[("rules.yaml", file.as_str())]);
    assert_eq!(
        parsed.is_ok(),
        loaded.is_ok(),
        "parse: {:?}\nload: {:?}",
        parsed.as_ref().err(),
        loaded.as_ref().err().map(ToString::to_string)
    );
    let (Ok(expression), Ok(rules)) = (parsed, loaded) else {
        return;
    };
    let Condition::Expr(loaded_expression) = &rules.rules()[0].condition else {
        panic!("an expr rule loaded as a limit");
    };
    assert_eq!(loaded_expression.source(), text);

    for totals in [&first, &second] {
        let direct = expression.evaluate(totals);
        let changed: BTreeSet<String> = totals
            .keys()
            .chain(expression.counters())
            .cloned()
            .collect();
        let checks = alert::evaluate(&rules, totals, &changed, None);
        assert!(checks.len() <= 1);
        if let Some(check) = checks.first() {
            let through_rule = check.result.clone().map(|f| (f.holds, f.values));
            let own = direct.map(|o| (o.holds, o.values));
            assert_eq!(through_rule, own);
        }
    }

    let date = Date::parse("2015-11-16").expect("a date");
    let now = DateTime::from_timestamp(1_447_632_000, 0).expect("a time");
    let mut replay = Replay::default();
    for totals in [first, second] {
        let (sent, _errors) = replay.evaluate(&rules, &date, Some(totals), now);
        for note in sent {
            let _ = (note.subject(), note.text());
        }
    }
});
