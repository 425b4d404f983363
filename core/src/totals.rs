//! Fleet totals as a batch job computes them: the invariant's oracle.
//!
//! `total(D, c)` is the sum, over the day's instances, of each one's last
//! accepted value for `c` (docs/design.md §1). Sums are `i128`: a hundred thousand
//! instances of `i64::MAX` must not overflow, and DynamoDB numbers hold 38
//! digits, more than any such sum needs.

use std::collections::BTreeMap;

use crate::state::InstanceState;

/// Sums the contributions of `states` per counter. Deleted instances
/// contribute nothing; a counter no live instance reports is absent.
pub fn sum<'a>(states: impl IntoIterator<Item = &'a InstanceState>) -> BTreeMap<String, i128> {
    let mut totals: BTreeMap<String, i128> = BTreeMap::new();
    for counters in states.into_iter().filter_map(|s| s.content.counters()) {
        for (name, value) in counters {
            *totals.entry(name.clone()).or_default() += i128::from(*value);
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::state::Content;

    fn state(instance: &str, content: Content) -> InstanceState {
        fixtures::state(instance, "1", content)
    }

    fn live(pairs: &[(&str, i64)]) -> Content {
        fixtures::live(pairs, "e")
    }

    #[test]
    fn the_seed_example_sums_to_191122() {
        let states = [
            state("i-1", live(&[("COUNTER1", 12_345)])),
            state("i-2", live(&[("COUNTER1", 123_456)])),
            state("i-3", live(&[("COUNTER1", 1_000)])),
            state("i-4", live(&[("COUNTER1", 54_321)])),
        ];
        assert_eq!(sum(&states), [("COUNTER1".to_owned(), 191_122)].into());
    }

    #[test]
    fn deleted_instances_and_missing_counters_contribute_nothing() {
        let states = [
            state("i-1", live(&[("a", 1), ("b", 2)])),
            state("i-2", Content::Deleted),
            state("i-3", live(&[("a", -5)])),
        ];
        assert_eq!(
            sum(&states),
            [("a".to_owned(), -4), ("b".to_owned(), 2)].into()
        );
        assert!(sum(&[state("i-2", Content::Deleted)]).is_empty());
    }

    #[test]
    fn sums_beyond_i64_are_exact() {
        let states: Vec<_> = (0..3)
            .map(|i| state(&format!("i-{i}"), live(&[("big", i64::MAX)])))
            .collect();
        assert_eq!(sum(&states)["big"], 3 * i128::from(i64::MAX));
    }
}
