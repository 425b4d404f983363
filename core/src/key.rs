//! Object keys: `<prefix>/<YYYY-MM-DD>/<instance-id>`.
//!
//! The key is the only place an upload says which day and which instance it
//! belongs to, so it is checked strictly: a real calendar date, a non-empty
//! instance id of at most 255 bytes. Keys that do not follow the convention
//! (folder markers, other prefixes, `2015-13-45`) are not errors: the bucket
//! may hold other things, so callers log and ignore them.
//!
//! S3 event notifications URL-encode keys the way HTML forms do (`+` is a
//! space, `%2B` a plus); [`decode_event_key`] undoes that before parsing.

use std::fmt;

use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

/// The default key prefix of uploads (docs/design.md §1).
pub const DEFAULT_PREFIX: &str = "counters";

/// The longest instance id, in bytes of UTF-8.
pub const MAX_INSTANCE_BYTES: usize = 255;

/// A calendar day, always written `YYYY-MM-DD`, so that string order is date order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Date(String);

impl Date {
    pub fn parse(text: &str) -> Result<Date, KeyError> {
        let bytes = text.as_bytes();
        let shape_ok = bytes.len() == 10
            && bytes[4] == b'-'
            && bytes[7] == b'-'
            && bytes
                .iter()
                .enumerate()
                .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
        if !shape_ok {
            return Err(KeyError::BadDate {
                text: text.to_owned(),
            });
        }
        // chrono knows the calendar (month lengths, leap years); the shape check
        // above keeps it from accepting unpadded forms such as 2015-1-6.
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| KeyError::BadDate {
            text: text.to_owned(),
        })?;
        Ok(Date(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Date {
    type Error = KeyError;

    fn try_from(text: String) -> Result<Date, KeyError> {
        Date::parse(&text)
    }
}

impl From<Date> for String {
    fn from(date: Date) -> String {
        date.0
    }
}

/// Where one upload belongs: its day and its instance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UploadKey {
    pub date: Date,
    pub instance: String,
}

impl UploadKey {
    /// The object key this upload lives at under `prefix`.
    pub fn object_key(&self, prefix: &str) -> String {
        format!("{prefix}/{}/{}", self.date, self.instance)
    }
}

/// Why a key is not an upload. Callers ignore such keys with a log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is not under the prefix {prefix:?}/")]
    OtherPrefix { prefix: String },
    #[error("key should be <prefix>/<YYYY-MM-DD>/<instance-id> with no further '/'")]
    WrongShape,
    #[error("{text:?} is not a calendar date in YYYY-MM-DD form")]
    BadDate { text: String },
    #[error("the instance id (the last path segment) is empty")]
    EmptyInstance,
    #[error("the instance id is {len} bytes, over the {MAX_INSTANCE_BYTES}-byte limit")]
    InstanceTooLong { len: usize },
    #[error("the key's %-escapes do not decode to UTF-8")]
    NotUtf8,
}

/// Parses a decoded object key. `prefix` may itself contain `/` (`a/b/counters`).
pub fn parse_key(key: &str, prefix: &str) -> Result<UploadKey, KeyError> {
    let rest = key
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(|| KeyError::OtherPrefix {
            prefix: prefix.to_owned(),
        })?;
    let (date, instance) = rest.split_once('/').ok_or(KeyError::WrongShape)?;
    if instance.contains('/') {
        return Err(KeyError::WrongShape);
    }
    let date = Date::parse(date)?;
    if instance.is_empty() {
        return Err(KeyError::EmptyInstance);
    }
    if instance.len() > MAX_INSTANCE_BYTES {
        return Err(KeyError::InstanceTooLong {
            len: instance.len(),
        });
    }
    Ok(UploadKey {
        date,
        instance: instance.to_owned(),
    })
}

/// Decodes a key as S3 event notifications carry it: `+` is a space and
/// `%XX` is a byte, and the bytes must be UTF-8.
pub fn decode_event_key(encoded: &str) -> Result<String, KeyError> {
    let spaced = encoded.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| KeyError::NotUtf8)
}

/// Encodes a key the way S3 event notifications carry it (form encoding:
/// `+` for a space, `%XX` for other bytes outside the unreserved set); the
/// inverse of [`decode_event_key`]. For events made up rather than
/// received: a backfill's, and tests'.
pub fn encode_event_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' | b'/' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_encode_as_s3_sends_them_and_decode_back() {
        let key = "counters/2015-11-16/web 1+zä%";
        let encoded = encode_event_key(key);
        assert_eq!(encoded, "counters/2015-11-16/web+1%2Bz%C3%A4%25");
        assert_eq!(decode_event_key(&encoded).unwrap(), key);
    }

    fn key(date: &str, instance: &str) -> UploadKey {
        UploadKey {
            date: Date::parse(date).unwrap(),
            instance: instance.into(),
        }
    }

    #[test]
    fn parses_the_convention_with_the_default_and_a_nested_prefix() {
        assert_eq!(
            parse_key("counters/2015-11-16/i-1", DEFAULT_PREFIX),
            Ok(key("2015-11-16", "i-1"))
        );
        assert_eq!(
            parse_key("a/b/counters/2015-11-16/i-1", "a/b/counters"),
            Ok(key("2015-11-16", "i-1"))
        );
    }

    #[test]
    fn instance_ids_keep_spaces_plus_percent_and_non_ascii() {
        for instance in ["web 1", "a+b", "100%", "インスタンス", "i.2:#x"] {
            let k = format!("counters/2015-11-16/{instance}");
            assert_eq!(parse_key(&k, DEFAULT_PREFIX).unwrap().instance, instance);
        }
    }

    #[test]
    fn keys_off_the_convention_say_why() {
        let p = DEFAULT_PREFIX;
        assert!(matches!(
            parse_key("other/2015-11-16/i-1", p),
            Err(KeyError::OtherPrefix { .. })
        ));
        // A prefix match must end at a '/': "countersX" is another prefix.
        assert!(matches!(
            parse_key("countersX/2015-11-16/i-1", p),
            Err(KeyError::OtherPrefix { .. })
        ));
        assert_eq!(
            parse_key("counters/2015-11-16/", p),
            Err(KeyError::EmptyInstance)
        );
        assert_eq!(
            parse_key("counters/2015-11-16", p),
            Err(KeyError::WrongShape)
        );
        assert_eq!(parse_key("counters/", p), Err(KeyError::WrongShape));
        assert_eq!(
            parse_key("counters/2015-11-16/sub/i-1", p),
            Err(KeyError::WrongShape)
        );
        assert_eq!(
            parse_key(&format!("counters/2015-11-16/{}", "i".repeat(256)), p),
            Err(KeyError::InstanceTooLong { len: 256 })
        );
        assert!(parse_key(&format!("counters/2015-11-16/{}", "i".repeat(255)), p).is_ok());
    }

    #[test]
    fn only_real_calendar_dates_are_accepted() {
        for good in ["2015-11-16", "2016-02-29", "2000-02-29", "1999-12-31"] {
            assert!(Date::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "2015-13-45",
            "2015-02-29",
            "1900-02-29",
            "2015-04-31",
            "2015-00-10",
            "2015-1-06",
            "15-11-16",
            "2015/11/16",
            "2015-11-16x",
            "２０１５-11-16",
            "",
        ] {
            assert_eq!(
                Date::parse(bad),
                Err(KeyError::BadDate { text: bad.into() }),
                "{bad}"
            );
        }
    }

    #[test]
    fn event_keys_decode_plus_as_space_and_escapes_as_bytes() {
        assert_eq!(
            decode_event_key("counters/2015-11-16/web+1").unwrap(),
            "counters/2015-11-16/web 1"
        );
        assert_eq!(decode_event_key("a%2Bb").unwrap(), "a+b");
        assert_eq!(decode_event_key("100%25").unwrap(), "100%");
        assert_eq!(decode_event_key("z%C3%A4hler").unwrap(), "zähler");
        assert_eq!(decode_event_key("bad%FF"), Err(KeyError::NotUtf8));
        // A stray % that is not an escape stays as it is, as S3 would never send it.
        assert_eq!(decode_event_key("50%").unwrap(), "50%");
    }

    #[test]
    fn dates_round_trip_through_serde_and_reject_bad_text() {
        let d: Date = serde_json::from_str("\"2015-11-16\"").unwrap();
        assert_eq!(d.as_str(), "2015-11-16");
        assert!(serde_json::from_str::<Date>("\"2015-13-45\"").is_err());
    }
}
