//! Why no estimate can be made. Each case but the last is the user's to
//! fix, so its message names the flag and what to give instead.

use tally_core::capacity::MAX_ITEM_BYTES;

use super::numbers::grouped;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CostError {
    /// Instance ids of this width cannot tell the fleet apart.
    #[error(
        "--instance-id-bytes {bytes} cannot name {instances} distinct instances (i- and hex digits): give at least {needed}, or leave it out"
    )]
    IdsTooShort {
        bytes: u64,
        instances: u64,
        needed: u64,
    },
    /// Counter names of this width cannot tell the counters apart.
    #[error(
        "--counter-name-bytes {bytes} cannot name {counters} distinct counters (C and digits): give at least {needed}, or leave it out"
    )]
    NamesTooShort {
        bytes: u64,
        counters: u64,
        needed: u64,
    },
    /// tally cannot store this workload: an item would pass DynamoDB's limit.
    #[error(
        "this workload cannot be stored: {item} would be {} bytes, over DynamoDB's {}-byte item limit; give fewer --counters or shorter names (--counter-name-bytes)",
        grouped(*.bytes as f64),
        grouped(MAX_ITEM_BYTES as f64)
    )]
    ItemTooLarge { item: &'static str, bytes: usize },
    /// Building a representative item failed (a bug, not an input problem).
    #[error(
        "cannot build a representative item ({0}); this is a bug in tally cost, please report it with the command line"
    )]
    Item(String),
}
