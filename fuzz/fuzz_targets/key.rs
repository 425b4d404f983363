//! Fuzzes object keys: `decode_event_key`, `parse_key` and `encode_event_key`
//! (`tally_core::key`).
//!
//! Keys arrive URL-encoded in S3 events from whatever writes to the bucket,
//! and decide which day and instance an upload counts for, so decoding and
//! parsing must never panic, and an accepted key must be exactly the one it
//! was parsed from: `UploadKey::object_key` gives back the same key, which
//! parses to the same `UploadKey`. Encoding any key as S3 events carry it
//! and decoding it again gives the key back.
//!
//! Input: UTF-8 text. With a newline, the part before the first one is the
//! prefix and the rest the key; otherwise the prefix is the default,
//! `counters`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_core::key::{
    DEFAULT_PREFIX, MAX_INSTANCE_BYTES, decode_event_key, encode_event_key, parse_key,
};

/// Checks what `parse_key` says of `key`, and returns nothing.
fn check_parse(key: &str, prefix: &str) {
    let Ok(parsed) = parse_key(key, prefix) else {
        return;
    };
    let instance = &parsed.instance;
    assert!(!instance.is_empty() && instance.len() <= MAX_INSTANCE_BYTES);
    assert!(!instance.contains('/'), "instance {instance:?}");
    assert_eq!(parsed.date.as_str().len(), 10);
    let object_key = parsed.object_key(prefix);
    assert_eq!(object_key, key, "the key does not round-trip");
    assert_eq!(parse_key(&object_key, prefix).as_ref(), Ok(&parsed));
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (prefix, key) = text.split_once('\n').unwrap_or((DEFAULT_PREFIX, text));

    check_parse(key, prefix);
    if let Ok(decoded) = decode_event_key(key) {
        check_parse(&decoded, prefix);
        assert_eq!(decode_event_key(&encode_event_key(&decoded)), Ok(decoded));
    }

    let encoded = encode_event_key(key);
    // What S3 sends is printable ASCII; spaces become `+`.
    assert!(encoded.bytes().all(|b| b.is_ascii_graphic()), "{encoded:?}");
    assert_eq!(encoded.matches('+').count(), key.matches(' ').count());
    assert_eq!(decode_event_key(&encoded).as_deref(), Ok(key));
});
