//! Rule-evaluation benchmarks: 1,000 rules evaluated on a day's totals in
//! which 100 counters changed, through the entry point the rules stage
//! calls ([`tally_core::rules::alert::decide`], from `process_date` in the
//! rules crate's `stage` module), and through the evaluation alone
//! ([`tally_core::rules::alert::evaluate`]).
//!
//! Why: the rules stage runs this once per date per totals-stream batch,
//! between an isolated read of the day's partial items and its alert
//! writes. docs/design.md §8 asks that an invocation's own CPU time be a small
//! fraction of its AWS round trips (milliseconds each), and the functions
//! run at 128 MB, i.e. a fraction of a vCPU: evaluation must stay well
//! under a millisecond-scale budget even with a large rules directory, so
//! that adding rules never slows alerting down.
//!
//! What:
//!
//! - The rules: 1,000, generated as one rules file and loaded with
//!   [`RuleSet::load`] (so they are checked exactly as `tally rules check`
//!   checks ops' files):
//!   - 500 limits on one counter each (`counter: COUNTER<i>`, `max:`),
//!     a tenth of them breached;
//!   - 200 limits over globs (`match: "requests.svc<s>.*"` and
//!     `"errors.svc<s>.*"`, `min:`/`max:`), each alerting per matching
//!     changed counter;
//!   - 300 evalexpr expressions: 150 comparing two counters read with
//!     `counter("COUNTER<a>", 0)`, 50 over identifiers
//!     (`COUNTER<a> + COUNTER<b> > N`), and 100 error-share rules over
//!     `sum("errors.svc<s>.*")` and `sum("requests.svc<s>.*")`, which read
//!     every total of the day.
//! - The day: 1,000 totals (`COUNTER1`..`COUNTER500`, and 25
//!   `requests.svc<s>.<j>` and `errors.svc<s>.<j>` for each of 10 services);
//!   every tenth of them, 100 in all, changed in this batch.
//! - `decide/first`: the day's first evaluation: no alert records yet, so
//!   every breached rule writes a record with a message in its outbox.
//! - `decide/steady`: the next batch on the same totals, with the records
//!   the first one wrote (their messages sent): nothing moves, the common
//!   case while totals grow within their limits.
//! - `evaluate`: only the rule checks, without the alert state machine.
//!
//! Throughput is in rules per second (1,000 per iteration). The number of
//! alerts checked and records written is printed once before the timing.
//!
//! Run with `cargo bench -p tally-core --bench rules`
//! (add `-- --warm-up-time 1 --measurement-time 3` for a quick run);
//! `cargo test -p tally-core --benches` runs each benchmark once as a smoke test.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tally_core::key::Date;
use tally_core::rules::RuleSet;
use tally_core::rules::alert::{AlertRecord, Trigger, decide, evaluate};

const RULES: usize = 1_000;
const SERVICES: usize = 10;
const PER_SERVICE: usize = 25;
const COUNTERS: usize = 500;

/// One rules file of [`RULES`] rules, as ops would write it.
fn rules_yaml() -> String {
    let mut yaml = String::from("rules:\n");
    let mut push = |rule: String| yaml.push_str(&rule);
    // 500 limits on single counters; every tenth is breached.
    for i in 1..=COUNTERS {
        let max = if i % 10 == 0 {
            total_of_counter(i) - 1
        } else {
            total_of_counter(i) + 10_000
        };
        push(format!(
            "  - name: limit-{i}\n    counter: COUNTER{i}\n    max: {max}\n    severity: warning\n"
        ));
    }
    // 200 limits over globs: 10 per service and kind.
    for s in 0..SERVICES {
        for k in 0..10 {
            push(format!(
                "  - name: requests-svc{s}-{k}\n    match: \"requests.svc{s}.*\"\n    min: {}\n    max: {}\n    severity: info\n",
                k * 100,
                20_000 + k * 1_000
            ));
            push(format!(
                "  - name: errors-svc{s}-{k}\n    match: \"errors.svc{s}.*\"\n    max: {}\n    severity: critical\n    labels:\n      team: svc{s}\n",
                100 + k * 50
            ));
        }
    }
    // 150 comparisons of two counters by name.
    for i in 0..150 {
        let (a, b) = (i + 1, 500 - i);
        push(format!(
            "  - name: compare-{i}\n    expr: 'counter(\"COUNTER{a}\", 0) > 2 * counter(\"COUNTER{b}\", 0)'\n    severity: info\n"
        ));
    }
    // 50 sums of identifiers.
    for i in 0..50 {
        let (a, b) = (i * 10 + 1, i * 10 + 5);
        let limit = total_of_counter(a) + total_of_counter(b) + if i % 5 == 0 { -1 } else { 1 };
        push(format!(
            "  - name: sum-{i}\n    expr: 'COUNTER{a} + COUNTER{b} > {limit}'\n    severity: warning\n"
        ));
    }
    // 100 error shares over a whole service's counters.
    for i in 0..100 {
        let s = i % SERVICES;
        let percent = 1 + i / SERVICES;
        push(format!(
            "  - name: error-share-{i}\n    expr: 'sum(\"requests.svc{s}.*\") > 0 && sum(\"errors.svc{s}.*\") * 100 > {percent} * sum(\"requests.svc{s}.*\")'\n    severity: critical\n    summary: \"Errors above {percent}% of requests on {{{{date}}}}\"\n"
        ));
    }
    yaml
}

fn total_of_counter(i: usize) -> i64 {
    i as i64 * 1_000 + 345
}

/// The day's totals, and the counters this batch changed (every tenth).
fn day() -> (BTreeMap<String, i128>, BTreeSet<String>) {
    let mut totals: BTreeMap<String, i128> = (1..=COUNTERS)
        .map(|i| (format!("COUNTER{i}"), i128::from(total_of_counter(i))))
        .collect();
    for s in 0..SERVICES {
        for j in 0..PER_SERVICE {
            totals.insert(
                format!("requests.svc{s}.{j}"),
                (10_000 + j * 100 + s) as i128,
            );
            totals.insert(
                format!("errors.svc{s}.{j}"),
                ((s * 37 + j * 11) % 300) as i128,
            );
        }
    }
    let changed = totals.keys().step_by(10).cloned().collect();
    (totals, changed)
}

fn bench_rules(c: &mut Criterion) {
    let rules = RuleSet::load(&[("generated.yaml", rules_yaml())])
        .unwrap_or_else(|problems| panic!("the generated rules do not load: {problems}"));
    assert_eq!(rules.rules().len(), RULES);
    let (totals, changed) = day();
    assert_eq!(totals.len(), 1_000);
    assert_eq!(changed.len(), 100);
    let date = Date::parse("2015-11-16").expect("a valid date");
    let now: DateTime<Utc> = DateTime::from_timestamp(1_447_675_200, 0).expect("a valid time");

    // The first evaluation of the day, and the records a store would then
    // hold once the messages were sent.
    let first = decide(
        &rules,
        &date,
        &totals,
        Trigger::Changed(&changed),
        &BTreeMap::new(),
        1,
        now,
    );
    assert!(first.errors.is_empty(), "rule errors: {:?}", first.errors);
    let records: BTreeMap<String, AlertRecord> = first
        .writes
        .iter()
        .cloned()
        .map(|mut record| {
            record.outbox = None;
            record.claimed_until = None;
            (record.alert.clone(), record)
        })
        .collect();
    let steady = decide(
        &rules,
        &date,
        &totals,
        Trigger::Changed(&changed),
        &records,
        2,
        now,
    );
    let mut note = String::new();
    let _ = write!(
        note,
        "rules: {} rules, {} totals, {} changed; first: {} alerts checked, {} records written \
         ({} with a message); steady: {} checked, {} written",
        rules.rules().len(),
        totals.len(),
        changed.len(),
        first.checked,
        first.writes.len(),
        first.writes.iter().filter(|r| r.outbox.is_some()).count(),
        steady.checked,
        steady.writes.len(),
    );
    eprintln!("{note}");

    let mut group = c.benchmark_group("rules");
    group.throughput(Throughput::Elements(RULES as u64));
    group.bench_function("decide/first", |b| {
        b.iter(|| {
            decide(
                black_box(&rules),
                &date,
                black_box(&totals),
                black_box(Trigger::Changed(&changed)),
                &BTreeMap::new(),
                1,
                now,
            )
        })
    });
    group.bench_function("decide/steady", |b| {
        b.iter(|| {
            decide(
                black_box(&rules),
                &date,
                black_box(&totals),
                black_box(Trigger::Changed(&changed)),
                black_box(&records),
                2,
                now,
            )
        })
    });
    group.bench_function("evaluate", |b| {
        b.iter(|| {
            evaluate(
                black_box(&rules),
                black_box(&totals),
                black_box(&changed),
                None,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench_rules);
criterion_main!(benches);
