//! Parsing benchmarks: upload bodies ([`tally_core::body::parse`]) and object
//! keys ([`tally_core::key::parse_key`], [`tally_core::key::decode_event_key`]).
//!
//! Why: docs/design.md §8 budgets the CPU so that parsing is never the
//! bottleneck: at least 30 million counters per second per core (the Python
//! split + dict of the per-counter design tally replaces does about 3
//! million). Every upload is parsed in full by ingest, so this is the number
//! that decides whether an invocation's CPU time stays a small fraction of
//! its AWS round trips. The budget is checked here, by a benchmark, rather
//! than by a timed test, which would be flaky on shared CI machines.
//!
//! What:
//!
//! - `body::parse/sample-100`: one instance's upload in the sample workload
//!   (100 instances × 100 counters every minute): 100 counters named
//!   `COUNTER<n>` with non-negative values (about 2 KB).
//! - `body::parse/sample-50000`: the same kind of body with 50,000 counters,
//!   just under the default 1 MiB cap, i.e. the largest body ingest accepts
//!   by default.
//! - `body::parse/mixed-100`, `body::parse/mixed-50000`: bodies of the same
//!   sizes with names such as `COUNTER17`, `requests.api-v2`,
//!   `db.pool#3:wait_ms` and some non-ASCII ones (`zähler.fehler`,
//!   `計數.請求`); values of 1 to 19 digits, some negative.
//!
//!   Every body is one `NAME VALUE` pair per line, generated from a fixed
//!   seed, so runs are comparable. Throughput is in counters (elements) per
//!   second; divide by 30e6 to read it against the budget. The timing
//!   includes the returned vector's allocation and drop, as ingest pays both.
//! - `key/parse_key`: a typical key under the default prefix.
//! - `key/decode_event_key+parse_key`: a key as an S3 event carries it,
//!   URL-encoded with `+` for a space and `%C3%A4` for `ä`. One key per
//!   upload, so this only has to be far cheaper than the body.
//!
//! Run with `cargo bench -p tally-core --bench parse`;
//! `cargo test -p tally-core --benches` runs each benchmark once as a smoke test.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tally_core::body::{self, DEFAULT_MAX_BODY_BYTES};
use tally_core::key::{self, DEFAULT_PREFIX};

/// A small deterministic generator (xorshift64*), so the bodies are the same
/// on every run and the benchmark needs no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Names as a service's counters tend to look; each one is made unique by
/// appending the counter's index, except the first few, which are used as-is.
const FIXED_NAMES: &[&str] = &[
    "requests.api-v2",
    "requests.api-v2.5xx",
    "latency_ms.p99",
    "db.pool#3:wait_ms",
    "zähler.fehler",
    "計數.請求",
    "queue/depth",
    "cache-hits",
];

fn name(i: usize, rng: &mut Rng) -> String {
    if let Some(fixed) = FIXED_NAMES.get(i) {
        return (*fixed).to_owned();
    }
    match rng.below(10) {
        0..=4 => format!("COUNTER{i}"),
        5 => format!("requests.api-v{}.{i}", i % 3 + 1),
        6 => format!("db#{i}:ms"),
        7 => format!("zähler.{i}"),
        8 => format!("計數/{i}"),
        _ => format!("q-{i}/depth"),
    }
}

fn value(rng: &mut Rng) -> i64 {
    // Mostly small and medium counts, some large, some negative (gauges and
    // corrections), and now and then one at the ends of the i64 range.
    match rng.below(20) {
        0 => 0,
        1..=6 => rng.below(100) as i64,
        7..=12 => rng.below(100_000) as i64,
        13..=15 => rng.below(1_000_000_000) as i64,
        16..=17 => -(rng.below(100_000) as i64),
        18 => rng.below(1 << 62) as i64 * if rng.below(2) == 0 { 1 } else { -1 },
        _ => {
            if rng.below(2) == 0 {
                i64::MAX
            } else {
                i64::MIN
            }
        }
    }
}

/// A body of `counters` distinct counters, one `NAME VALUE` pair per line.
fn make_body(counters: usize) -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ counters as u64);
    let mut body = String::with_capacity(counters * 24);
    for i in 0..counters {
        let name = name(i, &mut rng);
        let value = value(&mut rng);
        body.push_str(&name);
        body.push(' ');
        body.push_str(&value.to_string());
        body.push('\n');
    }
    body.into_bytes()
}

/// The sample workload's bodies: `COUNTER<n> <count>`, ASCII, non-negative.
fn make_sample_body(counters: usize) -> Vec<u8> {
    let mut rng = Rng(0x5eed ^ counters as u64);
    (0..counters)
        .map(|i| format!("COUNTER{} {}\n", i + 1, rng.below(1_000_000)))
        .collect::<String>()
        .into_bytes()
}

fn bench_body(c: &mut Criterion) {
    let mut group = c.benchmark_group("body::parse");
    let bodies = [
        ("mixed-100", make_body(100)),
        ("mixed-50000", make_body(50_000)),
        ("sample-100", make_sample_body(100)),
        ("sample-50000", make_sample_body(50_000)),
    ];
    for (label, body) in bodies {
        let counters: usize = label
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        // Check outside the timing that the body is what it claims to be: a
        // valid body under the default cap, so every iteration does a full parse.
        let parsed = body::parse(&body, DEFAULT_MAX_BODY_BYTES)
            .unwrap_or_else(|e| panic!("the {counters}-counter benchmark body is invalid: {e}"));
        assert_eq!(parsed.len(), counters);
        assert!(body.len() as u64 <= DEFAULT_MAX_BODY_BYTES);
        drop(parsed);
        eprintln!("body::parse/{label}: {} bytes", body.len());

        group.throughput(Throughput::Elements(counters as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &body, |b, body| {
            b.iter(|| body::parse(black_box(body), black_box(DEFAULT_MAX_BODY_BYTES)))
        });
    }
    group.finish();
}

fn bench_key(c: &mut Criterion) {
    let mut group = c.benchmark_group("key");
    group.throughput(Throughput::Elements(1));

    let plain = "counters/2015-11-16/i-0a1b2c3d4e5f67890";
    assert!(key::parse_key(plain, DEFAULT_PREFIX).is_ok());
    group.bench_function("parse_key", |b| {
        b.iter(|| key::parse_key(black_box(plain), black_box(DEFAULT_PREFIX)))
    });

    let encoded = "counters/2015-11-16/web+z%C3%A4hler+7";
    let decoded = key::decode_event_key(encoded).unwrap();
    assert_eq!(
        key::parse_key(&decoded, DEFAULT_PREFIX).unwrap().instance,
        "web zähler 7"
    );
    group.bench_function("decode_event_key+parse_key", |b| {
        b.iter(|| {
            let decoded = key::decode_event_key(black_box(encoded))?;
            key::parse_key(&decoded, black_box(DEFAULT_PREFIX))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_body, bench_key);
criterion_main!(benches);
