//! Fuzzes loading a rules file, `tally_core::rules::RuleSet::load`
//! (YAML with positions, each rule's fields, globs, expressions, summary
//! templates).
//!
//! Rules files are written by hand by ops and loaded by `tally rules check`
//! before a deploy and by the rules stage at start: a file with mistakes
//! must come back as problems with a file, line and column, never a panic,
//! a stack overflow (the YAML parser recurses) or a hang. Every problem
//! must point into the file. A file that loads is then evaluated once on a
//! small day of totals, through the same in-memory replay ops' rule tests
//! use, and its messages rendered, so what loading accepts can run.
//!
//! Input: bytes as UTF-8 text (others are skipped: files are read as UTF-8
//! before loading).

#![no_main]

use std::collections::BTreeMap;

use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use tally_core::key::Date;
use tally_core::rules::RuleSet;
use tally_core::rules::unit::Replay;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let rules = match RuleSet::load(&[("rules.yaml", text)]) {
        Ok(rules) => rules,
        Err(problems) => {
            assert!(!problems.0.is_empty());
            // Lines as YAML counts them: LF, CRLF and a lone CR each end
            // one. An error at the end of the input may be placed on the
            // line after the last.
            let lines = text.replace("\r\n", "\n").split(['\r', '\n']).count();
            for problem in &problems.0 {
                assert_eq!(problem.location.file, "rules.yaml");
                assert!(
                    (1..=lines + 1).contains(&problem.location.line),
                    "{problem} is outside a file of {lines} lines"
                );
                assert!(problem.location.column >= 1, "{problem}");
            }
            let _ = problems.to_string();
            return;
        }
    };
    let date = Date::parse("2015-11-16").expect("a date");
    let now = DateTime::from_timestamp(1_447_632_000, 0).expect("a time");
    let day: BTreeMap<String, i128> = [
        ("COUNTER1", 191_122),
        ("COUNTER2", -5),
        ("bids", 1000),
        ("bids-won", 0),
        ("errors.api", i128::from(i64::MAX)),
        ("requests.api", 0),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    let mut replay = Replay::default();
    for totals in [day, BTreeMap::new()] {
        let (sent, _errors) = replay.evaluate(&rules, &date, Some(totals), now);
        for note in sent {
            let _ = (note.subject(), note.text());
        }
    }
});
