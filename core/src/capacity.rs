//! DynamoDB capacity, computed from item sizes by DynamoDB's published rules.
//!
//! tally's budgets are in write units, and a test server's own
//! `ConsumedCapacity` figures are not real (moto reports 0.5 per write
//! whatever the size), so the stages compute what AWS would bill from the
//! items they write and read:
//!
//! - an item's size is the sum of its attribute names' UTF-8 lengths and
//!   their values' sizes; a string is its UTF-8 length, a number about one
//!   byte per two significant digits plus one (plus one more if negative), a
//!   boolean or null one byte, a map or list 3 bytes plus one byte per element
//!   plus the elements (and, for a map, their names);
//! - a write costs one unit per started KiB of the larger of the old and the
//!   new item, and a write whose condition fails is billed on the existing item;
//! - a strongly consistent read costs one unit per started 4 KiB, at least one
//!   even when the item does not exist.

use serde_dynamo::{AttributeValue, Item};

/// The largest item DynamoDB stores.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// The size DynamoDB bills for an item.
pub fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(name, value)| name.len() + value_size(value) + 1)
                .sum::<usize>()
        }
        AttributeValue::L(list) => 3 + list.iter().map(|v| value_size(v) + 1).sum::<usize>(),
        AttributeValue::Ss(set) => set.iter().map(String::len).sum(),
        AttributeValue::Ns(set) => set.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(set) => set.iter().map(Vec::len).sum(),
    }
}

/// A number's size: significant digits (leading and trailing zeros trimmed)
/// packed two to a byte, one byte of exponent, one more for a sign.
pub fn number_size(number: &str) -> usize {
    let negative = number.starts_with('-');
    let mantissa = number.split(['e', 'E']).next().unwrap_or(number);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    significant.div_ceil(2) + 1 + usize::from(negative)
}

/// Write units for writing an item of `bytes` (the larger of old and new).
pub fn write_units(bytes: usize) -> u64 {
    (bytes.max(1)).div_ceil(1024) as u64
}

/// Read units for a strongly consistent read of an item of `bytes`
/// (`None` when the item does not exist, which still costs one unit).
pub fn consistent_read_units(bytes: Option<usize>) -> u64 {
    bytes.unwrap_or(1).max(1).div_ceil(4096) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn item(pairs: Vec<(&str, AttributeValue)>) -> Item {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<HashMap<_, _>>()
            .into()
    }

    #[test]
    fn strings_count_utf8_bytes_of_names_and_values() {
        // "Counter" (7) + "COUNTER1" (8) + "Date" (4) + "2015-11-16" (10)
        let it = item(vec![
            ("Counter", AttributeValue::S("COUNTER1".into())),
            ("Date", AttributeValue::S("2015-11-16".into())),
        ]);
        assert_eq!(item_size(&it), 29);
        assert_eq!(
            item_size(&item(vec![("zä", AttributeValue::S("計".into()))])),
            3 + 3
        );
    }

    #[test]
    fn numbers_pack_two_significant_digits_a_byte() {
        assert_eq!(number_size("191122"), 4);
        assert_eq!(number_size("1"), 2);
        assert_eq!(number_size("0"), 1);
        assert_eq!(number_size("1000"), 2); // trailing zeros are trimmed
        assert_eq!(number_size("-12345"), 5);
        assert_eq!(number_size("9223372036854775807"), 11);
        assert_eq!(number_size("123.45"), 4);
    }

    #[test]
    fn maps_add_three_bytes_and_one_per_element() {
        let counters: HashMap<String, AttributeValue> = [
            ("a".to_owned(), AttributeValue::N("12".into())),
            ("bc".to_owned(), AttributeValue::N("3".into())),
        ]
        .into();
        // "Counters" (8) + 3 + ("a" 1 + 2 + 1) + ("bc" 2 + 2 + 1)
        let it = item(vec![("Counters", AttributeValue::M(counters))]);
        assert_eq!(item_size(&it), 8 + 3 + 4 + 5);
        assert_eq!(
            item_size(&item(vec![("M", AttributeValue::M(HashMap::new()))])),
            1 + 3
        );
        assert_eq!(
            item_size(&item(vec![("Gone", AttributeValue::Bool(true))])),
            5
        );
    }

    #[test]
    fn units_round_up_per_kib_for_writes_and_4_kib_for_reads() {
        // DynamoDB's own examples: a 500-byte write is 1 unit, a 3.5 KB write 4.
        assert_eq!(write_units(500), 1);
        assert_eq!(write_units(3584), 4);
        assert_eq!(write_units(1024), 1);
        assert_eq!(write_units(1025), 2);
        // An 8 KB strongly consistent read is 2 units; a missing item still 1.
        assert_eq!(consistent_read_units(Some(8192)), 2);
        assert_eq!(consistent_read_units(Some(100)), 1);
        assert_eq!(consistent_read_units(None), 1);
    }
}
