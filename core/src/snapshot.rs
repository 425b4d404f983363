//! The day's totals as the downstream job reads them, computed from the
//! partial items.
//!
//! Two objects per date: `<prefix>/<date>` in the upload format (`NAME
//! VALUE` per line, sorted by name, so the downstream job's existing reader
//! works) and `<prefix>/<date>.json`. Both come from one strongly consistent
//! read of the day's partial items, the aggregate stage's exact sums, so a
//! snapshot is always a state the totals actually passed through. Its
//! *generation* (the sum of the partials' versions) only grows, which is what
//! lets concurrent writers agree on which snapshot is the newest.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::aggregate::{Basis, PartialItem, totals_from_partials};
use crate::key::Date;

/// A day's exact totals at one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayTotals {
    pub date: Date,
    /// Counter → total, for counters with at least one contributor.
    pub totals: BTreeMap<String, i128>,
    /// Counter → how many instances report it, for `contributors()`.
    pub contributors: BTreeMap<String, i64>,
    /// How many instances have a live body, for `instances()`.
    pub instances: i64,
    /// The sum of the partial items' versions; grows with every change.
    pub generation: u64,
    pub basis: Basis,
}

impl DayTotals {
    pub fn from_partials(date: &Date, partials: &[PartialItem]) -> DayTotals {
        let counters: BTreeSet<String> = partials
            .iter()
            .flat_map(|partial| partial.contributors.keys().cloned())
            .collect();
        let totals = totals_from_partials(date, partials, &counters)
            .into_iter()
            .filter_map(|total| total.value.map(|value| (total.counter, value.0)))
            .collect();
        let mut contributors: BTreeMap<String, i64> = BTreeMap::new();
        for partial in partials {
            for (name, count) in &partial.contributors {
                *contributors.entry(name.clone()).or_default() += count;
            }
        }
        DayTotals {
            date: date.clone(),
            totals,
            contributors,
            instances: partials.iter().map(|p| p.instances).sum(),
            generation: partials.iter().map(|p| p.version).sum(),
            basis: Basis::of(partials),
        }
    }
}

/// The rules read a day's totals, and the fleet's counts with them.
impl crate::rules::expr::Totals for DayTotals {
    fn get(&self, counter: &str) -> Option<i128> {
        self.totals.get(counter).copied()
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (&str, i128)> + '_> {
        Box::new(
            self.totals
                .iter()
                .map(|(name, value)| (name.as_str(), *value)),
        )
    }

    fn contributors(&self, counter: &str) -> Option<i64> {
        Some(self.contributors.get(counter).copied().unwrap_or(0))
    }

    fn instances(&self) -> Option<i64> {
        Some(self.instances)
    }
}

/// The JSON snapshot's shape.
#[derive(Debug, Serialize)]
struct JsonSnapshot<'a> {
    date: &'a Date,
    generated_at: String,
    counters: &'a BTreeMap<String, i128>,
    computed_from: ComputedFrom<'a>,
}

#[derive(Debug, Serialize)]
struct ComputedFrom<'a> {
    /// What the totals were summed from.
    source: &'static str,
    /// Grows with every change of the day's totals: a reader can tell a
    /// newer snapshot from an older one.
    generation: u64,
    /// The version of each bucket's partial item (64 buckets).
    bucket_versions: &'a [u64],
    counter_count: usize,
}

/// The object key of a date's snapshot in the upload format.
pub fn text_key(prefix: &str, date: &Date) -> String {
    format!("{}/{date}", prefix.trim_end_matches('/'))
}

/// The object key of a date's JSON snapshot.
pub fn json_key(prefix: &str, date: &Date) -> String {
    format!("{}.json", text_key(prefix, date))
}

/// The snapshot in the upload format.
pub fn render_text(day: &DayTotals) -> String {
    let mut text = String::with_capacity(day.totals.len() * 24);
    for (name, value) in &day.totals {
        let _ = writeln!(text, "{name} {value}");
    }
    text
}

/// The JSON snapshot.
pub fn render_json(day: &DayTotals, generated_at: DateTime<Utc>) -> String {
    let snapshot = JsonSnapshot {
        date: &day.date,
        generated_at: generated_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        counters: &day.totals,
        computed_from: ComputedFrom {
            source: "the aggregate stage's partial sums, read strongly consistently",
            generation: day.generation,
            bucket_versions: &day.basis.0,
            counter_count: day.totals.len(),
        },
    };
    let mut text = serde_json::to_string_pretty(&snapshot).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Exact;

    fn partial(date: &Date, bucket: u64, version: u64, sums: &[(&str, i128, i64)]) -> PartialItem {
        let mut item = PartialItem::empty(date, bucket);
        item.version = version;
        for (name, sum, contributors) in sums {
            item.sums.insert((*name).to_owned(), Exact(*sum));
            item.contributors.insert((*name).to_owned(), *contributors);
        }
        item
    }

    #[test]
    fn sums_buckets_and_renders_both_formats_sorted() {
        let date = Date::parse("2015-11-16").unwrap();
        let partials = [
            partial(
                &date,
                3,
                2,
                &[("COUNTER1", 12345 + 1000, 2), ("zeta", -5, 1)],
            ),
            partial(
                &date,
                9,
                5,
                &[("COUNTER1", 123456 + 54321, 2), ("a.b#c", 7, 1)],
            ),
        ];
        let day = DayTotals::from_partials(&date, &partials);
        assert_eq!(day.generation, 7);
        assert_eq!(render_text(&day), "COUNTER1 191122\na.b#c 7\nzeta -5\n");
        let at = DateTime::parse_from_rfc3339("2015-11-16T10:00:00Z")
            .unwrap()
            .to_utc();
        let json: serde_json::Value = serde_json::from_str(&render_json(&day, at)).unwrap();
        assert_eq!(json["date"], "2015-11-16");
        assert_eq!(json["generated_at"], "2015-11-16T10:00:00.000Z");
        assert_eq!(json["counters"]["COUNTER1"], 191122);
        assert_eq!(json["computed_from"]["generation"], 7);
        assert_eq!(json["computed_from"]["bucket_versions"][9], 5);
        assert_eq!(text_key("totals/", &date), "totals/2015-11-16");
        assert_eq!(json_key("totals", &date), "totals/2015-11-16.json");
    }

    #[test]
    fn an_empty_day_is_an_empty_body_and_an_empty_map() {
        let date = Date::parse("2015-11-16").unwrap();
        let day = DayTotals::from_partials(&date, &[partial(&date, 1, 3, &[])]);
        assert_eq!(render_text(&day), "");
        assert!(render_json(&day, Utc::now()).contains("\"counters\": {}"));
    }
}
