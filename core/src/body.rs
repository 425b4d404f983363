//! The upload body: `NAME VALUE NAME VALUE ...`, an instance's cumulative
//! counters for one day.
//!
//! A body is accepted or rejected *whole*: a half-applied body would make the
//! fleet total disagree with what a batch job reading the bucket computes, so
//! any defect (not UTF-8, odd token count, bad name or value, a name twice,
//! over the size cap) rejects it and the instance keeps its last accepted
//! state. Errors carry the 1-based token number and the byte offset so the
//! producer's owner can find the defect in the object.
//!
//! Parsing borrows names from the body and checks duplicates with a hash set;
//! it allocates one vector and one set per body, never per token, because it
//! runs on every upload.

use std::fmt;

use fnv::FnvHashSet;

/// The default cap on a body's size in bytes (DESIGN §1: 1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;

/// The longest counter name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 255;

/// Why a body was rejected. Every variant names where in the body the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body is {size} bytes, over the {cap}-byte cap; split the counters or raise the cap")]
    TooLarge { size: u64, cap: u64 },
    #[error("body is not UTF-8: invalid byte at offset {offset}")]
    NotUtf8 { offset: usize },
    #[error(
        "body has an odd number of tokens ({tokens}): name {name:?} at byte {offset} has no value"
    )]
    MissingValue {
        tokens: usize,
        name: Preview,
        offset: usize,
    },
    #[error("token {token} ({text:?}) at byte {offset} is not an integer")]
    NotAnInteger {
        token: usize,
        text: Preview,
        offset: usize,
    },
    #[error(
        "token {token} ({text:?}) at byte {offset} is outside the signed 64-bit range [-9223372036854775808, 9223372036854775807]"
    )]
    OutOfRange {
        token: usize,
        text: Preview,
        offset: usize,
    },
    #[error(
        "token {token} ({text:?}) at byte {offset} is not a counter name: {len} bytes, over the {MAX_NAME_BYTES}-byte limit"
    )]
    NameTooLong {
        token: usize,
        text: Preview,
        offset: usize,
        len: usize,
    },
    #[error(
        "token {token} ({text:?}) at byte {offset} is not a counter name: it contains {found:?}, and names may not contain whitespace or control characters"
    )]
    NameHasForbiddenChar {
        token: usize,
        text: Preview,
        offset: usize,
        found: char,
    },
    #[error(
        "token {token} at byte {offset} repeats counter name {name:?} (first at token {first_token}); each counter may appear once"
    )]
    DuplicateName {
        token: usize,
        name: Preview,
        offset: usize,
        first_token: usize,
    },
}

/// A token as shown in an error: at most 64 characters, so an error about a
/// 1 MiB token does not become a 1 MiB log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Preview(String);

impl Preview {
    fn of(text: &str) -> Preview {
        const MAX_CHARS: usize = 64;
        match text.char_indices().nth(MAX_CHARS) {
            None => Preview(text.to_owned()),
            Some((cut, _)) => Preview(format!("{}…", &text[..cut])),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Preview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// One counter of a parsed body, borrowed from the body's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter<'a> {
    pub name: &'a str,
    pub value: i64,
}

/// Checks the body's size against the cap before anything reads it whole.
pub fn check_size(size: u64, cap: u64) -> Result<(), BodyError> {
    if size > cap {
        Err(BodyError::TooLarge { size, cap })
    } else {
        Ok(())
    }
}

/// Parses a body into its counters, in body order.
///
/// Tokens are separated by runs of space, tab, CR and LF (and nothing else:
/// any other whitespace or control character inside a token makes it an
/// invalid name). A value is what `i64::from_str` accepts: an optional sign
/// and decimal digits.
pub fn parse(body: &[u8], cap: u64) -> Result<Vec<Counter<'_>>, BodyError> {
    check_size(body.len() as u64, cap)?;
    let text = std::str::from_utf8(body).map_err(|e| BodyError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;

    let mut counters = Vec::with_capacity(body.len() / 16);
    // FNV rather than a keyed hasher: names are short and the keyed hash would
    // cost more than the parse. A producer crafting collisions only slows the
    // parse of its own body.
    let mut seen: FnvHashSet<&str> =
        FnvHashSet::with_capacity_and_hasher(body.len() / 16, Default::default());
    let mut tokens = Tokens { text, pos: 0 };
    let mut token_number = 0usize;
    while let Some((name_offset, name)) = tokens.next() {
        token_number += 1;
        let name_token = token_number;
        check_name(name, name_token, name_offset)?;
        let Some((value_offset, value_text)) = tokens.next() else {
            return Err(BodyError::MissingValue {
                tokens: token_number,
                name: Preview::of(name),
                offset: name_offset,
            });
        };
        token_number += 1;
        let value = parse_value(value_text, token_number, value_offset)?;
        if !seen.insert(name) {
            let first_token = counters
                .iter()
                .position(|c: &Counter<'_>| c.name == name)
                .map_or(0, |index| index * 2 + 1);
            return Err(BodyError::DuplicateName {
                token: name_token,
                name: Preview::of(name),
                offset: name_offset,
                first_token,
            });
        }
        counters.push(Counter { name, value });
    }
    Ok(counters)
}

fn check_name(name: &str, token: usize, offset: usize) -> Result<(), BodyError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(BodyError::NameTooLong {
            token,
            text: Preview::of(name),
            offset,
            len: name.len(),
        });
    }
    let forbidden = |c: char| c.is_whitespace() || c.is_control();
    // Most names are ASCII; only bytes below 0x20 and DEL are forbidden there.
    let ascii_ok = name.bytes().all(|b| (0x21..0x7f).contains(&b));
    if !ascii_ok && let Some(found) = name.chars().find(|&c| forbidden(c)) {
        return Err(BodyError::NameHasForbiddenChar {
            token,
            text: Preview::of(name),
            offset,
            found,
        });
    }
    Ok(())
}

fn parse_value(text: &str, token: usize, offset: usize) -> Result<i64, BodyError> {
    text.parse::<i64>().map_err(|e| {
        let text = Preview::of(text);
        match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                BodyError::OutOfRange {
                    token,
                    text,
                    offset,
                }
            }
            _ => BodyError::NotAnInteger {
                token,
                text,
                offset,
            },
        }
    })
}

/// Splits on runs of the four separators DESIGN §1 names.
struct Tokens<'a> {
    text: &'a str,
    pos: usize,
}

fn is_separator(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

impl<'a> Iterator for Tokens<'a> {
    /// The token's byte offset in the body, and the token.
    type Item = (usize, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let bytes = self.text.as_bytes();
        let start = self.pos + bytes[self.pos..].iter().position(|&b| !is_separator(b))?;
        let end = bytes[start..]
            .iter()
            .position(|&b| is_separator(b))
            .map_or(bytes.len(), |len| start + len);
        self.pos = end;
        // Separators are ASCII, so `start` and `end` fall on char boundaries.
        Some((start, &self.text[start..end]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Vec<(String, i64)> {
        parse(body.as_bytes(), DEFAULT_MAX_BODY_BYTES)
            .unwrap()
            .into_iter()
            .map(|c| (c.name.to_owned(), c.value))
            .collect()
    }

    fn err(body: &[u8]) -> BodyError {
        parse(body, DEFAULT_MAX_BODY_BYTES).unwrap_err()
    }

    #[test]
    fn empty_and_blank_bodies_report_no_counters() {
        assert!(ok("").is_empty());
        assert!(ok(" \t\r\n \n").is_empty());
    }

    #[test]
    fn every_separator_and_runs_of_them_split_tokens() {
        assert_eq!(
            ok("a 1\tb\t\t2\r\nc\n3   d\r-4\n"),
            vec![
                ("a".into(), 1),
                ("b".into(), 2),
                ("c".into(), 3),
                ("d".into(), -4)
            ]
        );
    }

    #[test]
    fn values_cover_the_whole_signed_64_bit_range() {
        assert_eq!(
            ok("min -9223372036854775808 max 9223372036854775807 plus +5 zeros 007"),
            vec![
                ("min".into(), i64::MIN),
                ("max".into(), i64::MAX),
                ("plus".into(), 5),
                ("zeros".into(), 7)
            ]
        );
    }

    #[test]
    fn names_keep_punctuation_and_non_ascii_unchanged() {
        let body = "a.b 1 #x 2 :v 3 a-b/c 4 \"q\" 5 'q' 6 zähler 7 計數 8 ) 9";
        let names: Vec<String> = ok(body).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "a.b", "#x", ":v", "a-b/c", "\"q\"", "'q'", "zähler", "計數", ")"
            ]
        );
    }

    #[test]
    fn a_bad_value_names_its_token_number_text_and_offset() {
        let e = err(b"a 1 b 2 c 3 d 12x");
        assert_eq!(
            e,
            BodyError::NotAnInteger {
                token: 8,
                text: Preview::of("12x"),
                offset: 14
            }
        );
        assert_eq!(
            e.to_string(),
            "token 8 (\"12x\") at byte 14 is not an integer"
        );
        assert!(matches!(
            err(b"a 1.5"),
            BodyError::NotAnInteger { token: 2, .. }
        ));
        assert!(matches!(err(b"a -"), BodyError::NotAnInteger { .. }));
        assert!(matches!(err(b"a 0x10"), BodyError::NotAnInteger { .. }));
    }

    #[test]
    fn a_value_beyond_i64_is_out_of_range_not_wrapped() {
        assert_eq!(
            err(b"big 9223372036854775808"),
            BodyError::OutOfRange {
                token: 2,
                text: Preview::of("9223372036854775808"),
                offset: 4
            }
        );
        assert!(matches!(
            err(b"small -9223372036854775809"),
            BodyError::OutOfRange { .. }
        ));
    }

    #[test]
    fn an_odd_token_count_names_the_dangling_name() {
        let e = err(b"a 1\nb 2\nlonely\n");
        assert_eq!(
            e,
            BodyError::MissingValue {
                tokens: 5,
                name: Preview::of("lonely"),
                offset: 8
            }
        );
        assert_eq!(
            e.to_string(),
            "body has an odd number of tokens (5): name \"lonely\" at byte 8 has no value"
        );
    }

    #[test]
    fn a_repeated_name_points_at_both_places() {
        let e = err(b"a 1 b 2 a 3");
        assert_eq!(
            e,
            BodyError::DuplicateName {
                token: 5,
                name: Preview::of("a"),
                offset: 8,
                first_token: 1
            }
        );
        assert_eq!(
            e.to_string(),
            "token 5 at byte 8 repeats counter name \"a\" (first at token 1); each counter may appear once"
        );
    }

    #[test]
    fn invalid_utf8_reports_the_first_bad_byte() {
        assert_eq!(err(b"ok 1 bad\xff 2"), BodyError::NotUtf8 { offset: 8 });
        // A truncated multi-byte character at the end.
        assert_eq!(err(b"z\xc3"), BodyError::NotUtf8 { offset: 1 });
    }

    #[test]
    fn over_the_cap_is_rejected_before_parsing() {
        let body: String = (0..10).map(|i| format!("c{i} 1 ")).collect();
        assert_eq!(
            parse(body.as_bytes(), 49).unwrap_err(),
            BodyError::TooLarge { size: 50, cap: 49 }
        );
        assert_eq!(parse(body.as_bytes(), 50).unwrap().len(), 10);
        assert_eq!(
            check_size(DEFAULT_MAX_BODY_BYTES + 1, DEFAULT_MAX_BODY_BYTES),
            Err(BodyError::TooLarge {
                size: DEFAULT_MAX_BODY_BYTES + 1,
                cap: DEFAULT_MAX_BODY_BYTES
            })
        );
    }

    #[test]
    fn names_longer_than_255_bytes_are_rejected() {
        let long = "n".repeat(256);
        let body = format!("{long} 1");
        assert!(matches!(
            err(body.as_bytes()),
            BodyError::NameTooLong {
                token: 1,
                len: 256,
                offset: 0,
                ..
            }
        ));
        let exact = format!("{} 1", "é".repeat(127)); // 254 bytes
        assert_eq!(ok(&exact).len(), 1);
    }

    #[test]
    fn names_with_other_whitespace_or_control_characters_are_rejected() {
        for (body, found) in [
            ("a\u{0b}b 1", '\u{0b}'),
            ("a\u{0c}b 1", '\u{0c}'),
            ("nul\u{0}x 1", '\u{0}'),
            ("del\u{7f} 1", '\u{7f}'),
            ("nb\u{a0}sp 1", '\u{a0}'),
            ("em\u{2003}space 1", '\u{2003}'),
            ("c1\u{85} 1", '\u{85}'),
        ] {
            match err(body.as_bytes()) {
                BodyError::NameHasForbiddenChar {
                    found: f, token: 1, ..
                } => assert_eq!(f, found, "{body:?}"),
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn error_previews_are_bounded() {
        let huge = "x".repeat(10_000);
        let e = err(format!("a {huge}").as_bytes());
        assert!(e.to_string().len() < 200, "{e}");
    }
}
