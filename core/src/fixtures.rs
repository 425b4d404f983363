//! States for the unit tests of this crate.

use crate::key::{Date, UploadKey};
use crate::ordering::OrderingKey;
use crate::state::{Content, InstanceState};

/// Instance `instance`'s state on 2015-11-16, ordered by `sequencer`.
pub fn state(instance: &str, sequencer: &str, content: Content) -> InstanceState {
    InstanceState {
        key: UploadKey {
            date: Date::parse("2015-11-16").unwrap(),
            instance: instance.into(),
        },
        object_key: format!("counters/2015-11-16/{instance}"),
        ordering: OrderingKey::from_sequencer(sequencer).unwrap(),
        content,
    }
}

/// A live body with these counters, read from an object with this ETag.
pub fn live(pairs: &[(&str, i64)], etag: &str) -> Content {
    Content::Live {
        counters: pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        etag: etag.into(),
        version_id: None,
    }
}
