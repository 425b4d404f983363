//! Fuzzes the upload body parser, `tally_core::body::parse`.
//!
//! Every upload's body reaches it, written by whatever runs on the instances,
//! so it must never panic, and what it accepts must be exactly what docs/design.md §1
//! allows. The parser has a hand-written fast path (eight bytes at a time, a
//! byte-class table, its own decimal conversion, a shortcut for names that
//! cannot hold a forbidden character), so this target checks it against a
//! plain reference parser written straight from the rules: same accept or
//! reject, same counters. On an accepted body it also checks each name
//! (1–255 bytes, no whitespace or control character), that no name repeats,
//! and that rendering the counters as `NAME VALUE` lines and parsing that
//! again gives the same counters. The size cap is checked on the same input
//! with a cap one byte short of it.

#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use tally_core::body::{BodyError, DEFAULT_MAX_BODY_BYTES, MAX_NAME_BYTES, parse};

/// docs/design.md §1 as plainly as it reads: tokens split on space, tab, CR and LF;
/// pairs of NAME VALUE; names 1–255 bytes without whitespace or control
/// characters, each once; values what `i64::from_str` accepts.
fn reference(body: &[u8]) -> Option<Vec<(&str, i64)>> {
    let text = std::str::from_utf8(body).ok()?;
    let tokens: Vec<&str> = text
        .split([' ', '\t', '\r', '\n'])
        .filter(|t| !t.is_empty())
        .collect();
    if !tokens.len().is_multiple_of(2) {
        return None;
    }
    let mut seen = HashSet::new();
    let mut counters = Vec::new();
    for pair in tokens.chunks(2) {
        let (name, value) = (pair[0], pair[1]);
        if name.len() > MAX_NAME_BYTES
            || name.chars().any(|c| c.is_whitespace() || c.is_control())
            || !seen.insert(name)
        {
            return None;
        }
        counters.push((name, value.parse::<i64>().ok()?));
    }
    Some(counters)
}

fuzz_target!(|data: &[u8]| {
    let parsed = parse(data, DEFAULT_MAX_BODY_BYTES);
    let expected = reference(data);
    match &parsed {
        Ok(counters) => {
            let got: Vec<(&str, i64)> = counters.iter().map(|c| (c.name, c.value)).collect();
            assert_eq!(Some(&got), expected.as_ref(), "accepted differently");
            let mut names = HashSet::new();
            for counter in counters {
                assert!((1..=MAX_NAME_BYTES).contains(&counter.name.len()));
                assert!(
                    !counter
                        .name
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control()),
                    "accepted name {:?}",
                    counter.name
                );
                assert!(names.insert(counter.name), "{:?} twice", counter.name);
            }
            let rendered: String = counters
                .iter()
                .map(|c| format!("{} {}\n", c.name, c.value))
                .collect();
            let again = parse(rendered.as_bytes(), DEFAULT_MAX_BODY_BYTES)
                .expect("a rendered accepted body parses");
            assert_eq!(&again, counters, "the rendered body parses differently");
        }
        Err(error) => {
            assert_eq!(expected, None, "rejected a valid body: {error}");
            // Errors are logged: the message must render, bounded in size.
            assert!(error.to_string().len() < 1024);
        }
    }
    if !data.is_empty() {
        let cap = data.len() as u64 - 1;
        assert!(matches!(
            parse(data, cap),
            Err(BodyError::TooLarge { size, .. }) if size == data.len() as u64
        ));
    }
});
