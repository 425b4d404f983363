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
//! runs on every upload (docs/design.md §8: at least 30 million counters per second
//! per core; `cargo bench -p tally-core --bench parse` measures it).

use std::collections::HashSet;
use std::fmt;

/// The default cap on a body's size in bytes (docs/design.md §1: 1 MiB).
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

/// How the scanner sees a byte.
const SEPARATOR: u8 = 0;
/// Printable ASCII other than space: always fine in a name.
const PLAIN: u8 = 1;
/// Control characters, DEL and every byte of a non-ASCII character: a name
/// holding one needs the character-level check.
const OTHER: u8 = 2;

const CLASS: [u8; 256] = {
    let mut class = [OTHER; 256];
    let mut b = 0x21;
    while b < 0x7f {
        class[b] = PLAIN;
        b += 1;
    }
    class[b' ' as usize] = SEPARATOR;
    class[b'\t' as usize] = SEPARATOR;
    class[b'\r' as usize] = SEPARATOR;
    class[b'\n' as usize] = SEPARATOR;
    class
};

/// Parses a body into its counters, in body order.
///
/// Tokens are separated by runs of space, tab, CR and LF (and nothing else:
/// any other whitespace or control character inside a token makes it an
/// invalid name). A value is what `i64::from_str` accepts: an optional sign
/// and decimal digits.
///
/// One pass over the bytes with a class table finds names and values; plain
/// decimal values are converted in the same pass, and anything unusual (a
/// sign, an overflow, a stray character) falls back to `i64::from_str` on the
/// token so that accepting and error reporting stay exactly its rules.
pub fn parse(body: &[u8], cap: u64) -> Result<Vec<Counter<'_>>, BodyError> {
    check_size(body.len() as u64, cap)?;
    let text = std::str::from_utf8(body).map_err(|e| BodyError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let bytes = text.as_bytes();
    let end = bytes.len();

    let mut counters = Vec::with_capacity(end / 16);
    // foldhash is randomly seeded, so a producer cannot craft collisions, and
    // is several times faster than the default hasher on short names.
    let mut seen: HashSet<&str, foldhash::fast::RandomState> =
        HashSet::with_capacity_and_hasher(end / 16, Default::default());
    let mut pos = 0;
    let mut token = 0;
    loop {
        while pos < end && CLASS[bytes[pos] as usize] == SEPARATOR {
            pos += 1;
        }
        if pos == end {
            break;
        }
        let name_start = pos;
        let mut plain = true;
        // Eight bytes at a time up to the first byte that ends the name or
        // needs a closer look; then one at a time from there.
        while let Some(chunk) = bytes[pos..].first_chunk::<8>() {
            let unusual = unusual_bytes(u64::from_le_bytes(*chunk));
            if unusual != 0 {
                pos += (unusual.trailing_zeros() / 8) as usize;
                break;
            }
            pos += 8;
        }
        while pos < end {
            let class = CLASS[bytes[pos] as usize];
            if class == SEPARATOR {
                break;
            }
            plain &= class == PLAIN;
            pos += 1;
        }
        token += 1;
        let name_token = token;
        // Separators are ASCII, so token bounds fall on char boundaries.
        let name = &text[name_start..pos];
        check_name(name, plain, name_token, name_start)?;

        while pos < end && CLASS[bytes[pos] as usize] == SEPARATOR {
            pos += 1;
        }
        if pos == end {
            return Err(BodyError::MissingValue {
                tokens: token,
                name: Preview::of(name),
                offset: name_start,
            });
        }
        token += 1;
        let value_start = pos;
        let negative = bytes[pos] == b'-';
        if negative {
            pos += 1;
        }
        let digits_start = pos;
        let mut magnitude: u64 = 0;
        let mut digits_only = true;
        while pos < end {
            let b = bytes[pos];
            if CLASS[b as usize] == SEPARATOR {
                break;
            }
            let digit = b.wrapping_sub(b'0');
            digits_only &= digit < 10;
            magnitude = magnitude.wrapping_mul(10).wrapping_add(u64::from(digit));
            pos += 1;
        }
        // Up to 19 digits cannot overflow a u64, and the range check below is
        // then exact; longer or stranger tokens take `i64::from_str`.
        let digits = pos - digits_start;
        let fast = digits_only && (1..=19).contains(&digits);
        let value = match (fast, negative) {
            (true, false) if magnitude <= i64::MAX as u64 => magnitude as i64,
            (true, true) if magnitude <= 1 << 63 => (magnitude as i64).wrapping_neg(),
            _ => parse_value(&text[value_start..pos], token, value_start)?,
        };

        if !seen.insert(name) {
            let first_token = counters
                .iter()
                .position(|c: &Counter<'_>| c.name == name)
                .map_or(0, |index| index * 2 + 1);
            return Err(BodyError::DuplicateName {
                token: name_token,
                name: Preview::of(name),
                offset: name_start,
                first_token,
            });
        }
        counters.push(Counter { name, value });
    }
    Ok(counters)
}

/// The high bit of each byte of `word` that is below `!` (a separator or a
/// control character) or at or above DEL (DEL or part of a non-ASCII
/// character). Exact up to the first such byte, which is all the scan uses.
fn unusual_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below_bang = word.wrapping_sub(ONES * 0x21) & !word & HIGHS;
    let del_or_above = (((word & !HIGHS) + ONES) | word) & HIGHS;
    below_bang | del_or_above
}

/// Whether a name holding non-plain bytes may hold a forbidden character:
/// every whitespace or control character is at most 0x20, DEL, or starts with
/// one of the UTF-8 lead bytes C2, E1, E2 or E3 (U+0080–U+00A0, U+1680,
/// U+2000–U+205F, U+3000). Names in other scripts skip the char-level check.
fn may_hold_forbidden(name: &str) -> bool {
    name.bytes()
        .any(|b| b <= 0x20 || b == 0x7f || matches!(b, 0xc2 | 0xe1 | 0xe2 | 0xe3))
}

fn check_name(name: &str, plain: bool, token: usize, offset: usize) -> Result<(), BodyError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(BodyError::NameTooLong {
            token,
            text: Preview::of(name),
            offset,
            len: name.len(),
        });
    }
    if !plain
        && may_hold_forbidden(name)
        && let Some(found) = name.chars().find(|&c| c.is_whitespace() || c.is_control())
    {
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

    /// The plain reading of the format: split on the four separators,
    /// `i64::from_str` each value, refuse repeats.
    fn reference(body: &[u8]) -> Option<Vec<(String, i64)>> {
        let text = std::str::from_utf8(body).ok()?;
        let tokens: Vec<&str> = text
            .split([' ', '\t', '\r', '\n'])
            .filter(|t| !t.is_empty())
            .collect();
        if tokens.len() % 2 == 1 {
            return None;
        }
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for pair in tokens.chunks(2) {
            let name = pair[0];
            let bad_char = name.chars().any(|c| c.is_whitespace() || c.is_control());
            if name.len() > MAX_NAME_BYTES || bad_char || !seen.insert(name) {
                return None;
            }
            out.push((name.to_owned(), pair[1].parse().ok()?));
        }
        Some(out)
    }

    proptest::proptest! {
        #[test]
        fn the_fast_parser_accepts_exactly_what_the_plain_reading_accepts(
            tokens in proptest::collection::vec(
                proptest::prop_oneof![
                    "[a-c]{1,3}",
                    "-?[0-9]{1,20}",
                    "[+-]?[0-9]{0,3}[a-z.]?",
                    "9223372036854775[0-9]{3}",
                    "-9223372036854775[0-9]{3}",
                    "\\PC{1,4}",
                    "[\\x00-\\x1f\\x7f\\u{85}\\u{a0}]",
                ],
                0..12,
            ),
            separators in proptest::collection::vec("[ \t\r\n]{1,3}", 12),
        ) {
            let mut body = String::new();
            for (token, separator) in tokens.iter().zip(&separators) {
                body.push_str(token);
                body.push_str(separator);
            }
            let fast = parse(body.as_bytes(), DEFAULT_MAX_BODY_BYTES)
                .ok()
                .map(|counters| counters.into_iter().map(|c| (c.name.to_owned(), c.value)).collect::<Vec<_>>());
            proptest::prop_assert_eq!(fast, reference(body.as_bytes()), "body {:?}", body);
        }
    }

    #[test]
    fn the_lead_byte_filter_covers_every_whitespace_and_control_character() {
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            if c.is_whitespace() || c.is_control() {
                assert!(may_hold_forbidden(c.encode_utf8(&mut [0; 4])), "{c:?}");
            }
        }
    }

    #[test]
    fn the_word_scan_finds_the_first_unusual_byte() {
        for (text, first) in [
            (*b"abcdefgh", None),
            (*b"abc defg", Some(3)),
            (*b"abcdefg\n", Some(7)),
            (*b"\tbcdefgh", Some(0)),
            (*b"ab\x7fdefgh", Some(2)),
            (*b"abcd\xc3\xa4gh", Some(4)),
            (*b"~~~~~~~!", None),
        ] {
            let mask = unusual_bytes(u64::from_le_bytes(text));
            let found = (mask != 0).then(|| (mask.trailing_zeros() / 8) as usize);
            assert_eq!(found, first, "{text:?}");
        }
    }

    #[test]
    fn error_previews_are_bounded() {
        let huge = "x".repeat(10_000);
        let e = err(format!("a {huge}").as_bytes());
        assert!(e.to_string().len() < 200, "{e}");
    }
}
