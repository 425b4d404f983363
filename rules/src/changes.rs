//! What a batch of the totals stream asks the rules stage to evaluate: per
//! date, the counters whose alerts are decided again, and the date's first
//! record (the one reported if the date fails, so Lambda redelivers it).
//! The Lambda handler and the embedded runtime both group their records
//! here, so the two read the stream by the same rule.
//!
//! **Every record counts**, one that changes only the total's basis
//! included. The aggregate stage writes such a record when changes cancel
//! across buckets (instance x goes 1→2 in one bucket, y 5→4 in another: the
//! total stays 6). The two partial writes are separate, and an evaluation of
//! any earlier record of the day that read the partials between them saw 7,
//! wrote a snapshot of 7 and may have fired on it. The basis-only record is
//! the counter's last, and the only one whose evaluation is sure to read
//! both writes: skipping it leaves the snapshot at 7 and an alert firing on
//! a total the day no longer has, until the counter happens to change again.
//!
//! **The counter is changed, not only its date.** Any evaluation of the
//! date rewrites the snapshot, but only the alerts of changed counters are
//! decided again, and the alert that fired on 7 is one of those. For `for:`
//! this means a batch whose partial writes moved the counter and cancelled
//! counts as one evaluation, like any batch that moved it. That is what
//! `for:` counts already: evaluations on new totals, each once (by its
//! generation), and their number depends on how the stream was batched (a
//! counter going 1→2→1 is one evaluation in one batch, two across two). The
//! condition must still hold on each evaluation's totals, a state the day
//! really passed through, so `for: N` never fires on fewer than N reads
//! where it held.

use std::collections::{BTreeMap, BTreeSet};

use tally_core::key::Date;

/// One date's share of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateChanges<R> {
    /// The counters whose totals the batch wrote.
    pub counters: BTreeSet<String>,
    /// The date's first record in the batch.
    pub first: R,
}

/// Groups a batch's records, each `(date, counter, record)` in stream order,
/// by date.
pub fn by_date<R>(
    records: impl IntoIterator<Item = (Date, String, R)>,
) -> BTreeMap<Date, DateChanges<R>> {
    let mut dates: BTreeMap<Date, DateChanges<R>> = BTreeMap::new();
    for (date, counter, record) in records {
        dates
            .entry(date)
            .or_insert_with(|| DateChanges {
                counters: BTreeSet::new(),
                first: record,
            })
            .counters
            .insert(counter);
    }
    dates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_date_keeps_its_counters_and_its_first_record() {
        let date = |text| Date::parse(text).unwrap();
        let dates = by_date([
            (date("2015-11-16"), "A".to_owned(), 1),
            (date("2015-11-15"), "B".to_owned(), 2),
            (date("2015-11-16"), "C".to_owned(), 3),
            (date("2015-11-16"), "A".to_owned(), 4),
        ]);
        assert_eq!(dates.len(), 2);
        let day = &dates[&date("2015-11-16")];
        assert_eq!(day.first, 1);
        assert_eq!(
            day.counters,
            BTreeSet::from(["A".to_owned(), "C".to_owned()])
        );
        assert_eq!(dates[&date("2015-11-15")].first, 2);
    }
}
