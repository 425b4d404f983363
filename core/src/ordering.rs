//! Ordering of events for one object key.
//!
//! S3 gives every event a `sequencer`: hex of no fixed length, where a larger
//! value (compared after left-padding to equal length) is a later event on the
//! same key. tally stores it as an [`OrderingKey`], a string whose plain byte
//! order is the event order, so DynamoDB can compare it in a condition
//! expression with `<`.
//!
//! **Without a sequencer** (some emulators omit it; AWS always sends one) the
//! key comes from the event's `eventTime` in milliseconds. Two uploads in the
//! same millisecond then tie, so a time-ordered event also replaces a stored
//! one of *equal* key ([`OrderingKey::replaces_equal`]). Time keys sort after
//! every sequencer key, so a key fed by both kinds of event follows the time
//! events; mixing the two on one key does not happen with a real S3. Either
//! way ingest re-checks the object after each write (see the ingest crate),
//! which is what keeps the state right when time order and upload order differ.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Significant hex digits a sequencer may have. S3's are 16–20 today.
const SEQUENCER_DIGITS: usize = 32;

/// Digits of a millisecond timestamp, enough for any `i64` value.
const TIME_DIGITS: usize = 20;

/// Why an event's ordering could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderingError {
    #[error("sequencer {text:?} is not hexadecimal")]
    NotHex { text: String },
    #[error("sequencer {text:?} has more than {SEQUENCER_DIGITS} significant hex digits")]
    TooLong { text: String },
    #[error("event time {millis} ms is before 1970")]
    BeforeEpoch { millis: i64 },
}

/// An event's place in the order of events on its key; byte order is event order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderingKey(String);

impl OrderingKey {
    /// From an S3 `sequencer`: `S` and the value in 32 upper-case hex digits.
    pub fn from_sequencer(sequencer: &str) -> Result<OrderingKey, OrderingError> {
        if sequencer.is_empty() || !sequencer.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(OrderingError::NotHex {
                text: sequencer.to_owned(),
            });
        }
        let significant = sequencer.trim_start_matches('0');
        if significant.len() > SEQUENCER_DIGITS {
            return Err(OrderingError::TooLong {
                text: sequencer.to_owned(),
            });
        }
        Ok(OrderingKey(format!(
            "S{:0>width$}",
            significant.to_ascii_uppercase(),
            width = SEQUENCER_DIGITS
        )))
    }

    /// The fallback for an event without a sequencer: `T` and the event time
    /// in milliseconds since 1970, zero-padded.
    pub fn from_event_time_millis(millis: i64) -> Result<OrderingKey, OrderingError> {
        if millis < 0 {
            return Err(OrderingError::BeforeEpoch { millis });
        }
        Ok(OrderingKey(format!("T{millis:0>TIME_DIGITS$}")))
    }

    /// Whether an event with this key also replaces state stored under an
    /// equal key. Sequencers are unique per event, so an equal sequencer is the
    /// same event delivered again; event times are not unique.
    pub fn replaces_equal(&self) -> bool {
        self.0.starts_with('T')
    }

    /// Whether an event with this key may replace state stored under `stored`.
    pub fn supersedes(&self, stored: &OrderingKey) -> bool {
        self > stored || (self == stored && self.replaces_equal())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Restores a key read back from a store, as written by this module.
    pub fn from_stored(text: String) -> OrderingKey {
        OrderingKey(text)
    }
}

impl fmt::Display for OrderingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(text: &str) -> OrderingKey {
        OrderingKey::from_sequencer(text).unwrap()
    }

    #[test]
    fn sequencers_of_different_lengths_compare_as_numbers() {
        assert!(seq("0055AED6DCD90281E5") < seq("0055AED6DCD90281E6"));
        // A longer sequencer is later even though "F" > "1" as text.
        assert!(seq("F") < seq("10"));
        assert!(seq("FFFFFFFFFFFFFFFF") < seq("010000000000000000"));
        assert_eq!(seq("00ab"), seq("AB"));
        assert_eq!(seq("0"), seq("000"));
    }

    #[test]
    fn the_same_sequencer_again_does_not_supersede_but_a_later_one_does() {
        let stored = seq("0A1B2C3D4E5F678901");
        assert!(!seq("0A1B2C3D4E5F678901").supersedes(&stored));
        assert!(!seq("0A1B2C3D4E5F678900").supersedes(&stored));
        assert!(seq("0A1B2C3D4E5F678902").supersedes(&stored));
    }

    #[test]
    fn event_times_order_by_millisecond_and_ties_supersede() {
        let a = OrderingKey::from_event_time_millis(1_447_632_000_000).unwrap();
        let b = OrderingKey::from_event_time_millis(1_447_632_000_001).unwrap();
        assert!(a < b);
        assert!(b.supersedes(&a));
        assert!(a.supersedes(&a.clone()));
        assert!(OrderingKey::from_event_time_millis(9).unwrap() < a);
    }

    #[test]
    fn time_keys_sort_after_sequencer_keys() {
        let t = OrderingKey::from_event_time_millis(0).unwrap();
        assert!(t > seq(&"F".repeat(32)));
    }

    #[test]
    fn malformed_sequencers_are_refused_with_the_text() {
        assert_eq!(
            OrderingKey::from_sequencer("12G4"),
            Err(OrderingError::NotHex {
                text: "12G4".into()
            })
        );
        assert!(matches!(
            OrderingKey::from_sequencer(""),
            Err(OrderingError::NotHex { .. })
        ));
        assert!(matches!(
            OrderingKey::from_sequencer(&"1".repeat(33)),
            Err(OrderingError::TooLong { .. })
        ));
        // Leading zeros do not count against the length.
        assert!(OrderingKey::from_sequencer(&format!("0000{}", "1".repeat(32))).is_ok());
        assert!(OrderingKey::from_event_time_millis(-1).is_err());
    }
}
