//! A lenient reader of the strings in a JSON document.
//!
//! The detectors need every string of a body (keys and values) and the key each value sits
//! under, not the document's structure. Reading strings directly, instead of parsing,
//! also works on a body cut at the inspection limit or malformed on purpose, and cannot be
//! exhausted by deep nesting.

/// One string of a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonString {
    /// The key it belongs to: its own text for a key, the nearest enclosing key for a value
    /// (array items take the key of their array).
    pub key: Option<String>,
    /// Whether it is a key.
    pub is_key: bool,
    /// The string, unescaped.
    pub value: String,
    /// The offset of its opening quote in the document.
    pub start: usize,
}

/// Nesting deeper than this still has its strings read, under the last tracked key.
const MAX_TRACKED_DEPTH: usize = 256;

/// The strings of `document`, in order, at most `limit` of them; with the offset where
/// reading stopped when there were more.
pub fn strings(document: &str, limit: usize) -> (Vec<JsonString>, Option<usize>) {
    let bytes = document.as_bytes();
    let mut out = Vec::new();
    // The key in force at each open container.
    let mut keys: Vec<Option<String>> = Vec::new();
    let mut untracked = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' => {
                if keys.len() < MAX_TRACKED_DEPTH {
                    let inherited = if bytes[i] == b'[' {
                        keys.last().cloned().flatten()
                    } else {
                        None
                    };
                    keys.push(inherited);
                } else {
                    untracked += 1;
                }
                i += 1;
            }
            b'}' | b']' => {
                if untracked > 0 {
                    untracked -= 1;
                } else {
                    keys.pop();
                }
                i += 1;
            }
            b'"' if out.len() == limit => return (out, Some(i)),
            b'"' => {
                let start = i;
                let (value, end) = read_string(document, i + 1);
                i = end;
                let mut next = i;
                while bytes.get(next).is_some_and(u8::is_ascii_whitespace) {
                    next += 1;
                }
                if bytes.get(next) == Some(&b':') {
                    if let Some(top) = keys.last_mut() {
                        *top = Some(value.clone());
                    }
                    out.push(JsonString {
                        key: Some(value.clone()),
                        is_key: true,
                        value,
                        start,
                    });
                } else {
                    out.push(JsonString {
                        key: keys.last().cloned().flatten(),
                        is_key: false,
                        value,
                        start,
                    });
                }
            }
            _ => i += 1,
        }
    }
    (out, None)
}

/// Reads a string whose content starts at `start` (after the opening quote): its unescaped
/// text and the offset after the closing quote (or the end of a truncated document).
fn read_string(document: &str, start: usize) -> (String, usize) {
    let bytes = document.as_bytes();
    let mut value = String::new();
    let mut i = start;
    let mut run = start;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                value.push_str(&document[run..i]);
                return (value, i + 1);
            }
            b'\\' => {
                value.push_str(&document[run..i]);
                let (decoded, used) = escape(&bytes[i + 1..]);
                if let Some(c) = decoded {
                    value.push(c);
                }
                i += 1 + used;
                run = i;
            }
            _ => i += 1,
        }
    }
    // Only ASCII bytes were used as delimiters, so `run` is a char boundary.
    value.push_str(&document[run.min(bytes.len())..]);
    (value, bytes.len())
}

/// The character of the escape after a backslash, and how many bytes it used.
fn escape(rest: &[u8]) -> (Option<char>, usize) {
    let simple = match rest.first() {
        None => return (None, 0),
        Some(b'"') => '"',
        Some(b'\\') => '\\',
        Some(b'/') => '/',
        Some(b'b') => '\u{8}',
        Some(b'f') => '\u{c}',
        Some(b'n') => '\n',
        Some(b'r') => '\r',
        Some(b't') => '\t',
        Some(b'u') => return unicode_escape(rest),
        // Not a JSON escape: drop the backslash, keep the character.
        Some(_) => return (None, 0),
    };
    (Some(simple), 1)
}

fn hex4(digits: &[u8]) -> Option<u32> {
    let digits = digits.get(..4)?;
    digits.iter().try_fold(0u32, |value, &digit| {
        let nibble = (digit as char).to_digit(16)?;
        Some(value << 4 | nibble)
    })
}

/// `uXXXX`, with a following `\uXXXX` when it is a surrogate pair; a lone surrogate is
/// U+FFFD.
fn unicode_escape(rest: &[u8]) -> (Option<char>, usize) {
    let Some(high) = hex4(&rest[1..]) else {
        // Not a valid escape: drop the backslash, keep the text.
        return (None, 0);
    };
    if (0xd800..0xdc00).contains(&high) {
        let low = rest
            .get(5..7)
            .filter(|marker| *marker == b"\\u")
            .and_then(|_| hex4(&rest[7..]))
            .filter(|low| (0xdc00..0xe000).contains(low));
        if let Some(low) = low {
            let c = char::from_u32(0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00));
            return (c, 11);
        }
    }
    (Some(char::from_u32(high).unwrap_or('\u{fffd}')), 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(document: &str) -> Vec<JsonString> {
        strings(document, usize::MAX).0
    }

    fn pairs(document: &str) -> Vec<(Option<String>, bool, String)> {
        all(document)
            .into_iter()
            .map(|s| (s.key, s.is_key, s.value))
            .collect()
    }

    fn s(text: &str) -> String {
        text.to_string()
    }

    #[test]
    fn keys_values_and_nesting() {
        let found = pairs(r#"{"a": "1", "b": {"c": ["x", "y"], "d": 2}, "e": "z"}"#);
        assert_eq!(
            found,
            vec![
                (Some(s("a")), true, s("a")),
                (Some(s("a")), false, s("1")),
                (Some(s("b")), true, s("b")),
                (Some(s("c")), true, s("c")),
                (Some(s("c")), false, s("x")),
                (Some(s("c")), false, s("y")),
                (Some(s("d")), true, s("d")),
                (Some(s("e")), true, s("e")),
                (Some(s("e")), false, s("z")),
            ]
        );
        assert_eq!(pairs(r#"["a", 1, true]"#), vec![(None, false, s("a"))]);
        assert_eq!(pairs(r#""solo""#), vec![(None, false, s("solo"))]);
    }

    #[test]
    fn escapes_are_decoded() {
        let found = all(r#"{"k": "O\u0027Brien \"x\" \\ \/ \n \ud83d\ude00 \ud800 \q"}"#);
        assert_eq!(found[1].value, "O'Brien \"x\" \\ / \n 😀 \u{fffd} q");
        let found = all(r#"{"k": "\u00"}"#);
        assert_eq!(found[1].value, "u00");
    }

    #[test]
    fn reading_stops_at_the_limit_and_says_where() {
        let document = r#"{"a": "1", "b": "2"}"#;
        let (found, rest) = strings(document, 3);
        assert_eq!(found.len(), 3);
        assert_eq!(found[2].start, 11);
        assert_eq!(&document[rest.unwrap()..], r#""2"}"#);
        assert_eq!(strings(document, 4).1, None);
    }

    #[test]
    fn truncated_and_malformed_documents_are_read() {
        let found = pairs(r#"{"nombre": "Juan", "nota": "' OR 1=1"#);
        assert_eq!(
            found.last().unwrap(),
            &(Some(s("nota")), false, s("' OR 1=1"))
        );
        let found = pairs(r#"{"a": "x\"#);
        assert_eq!(found.last().unwrap().2, "x");
        assert_eq!(pairs("}}]]\"a\""), vec![(None, false, s("a"))]);
        assert!(pairs("").is_empty());
        let deep = format!("{}\"v\"{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(pairs(&deep), vec![(None, false, s("v"))]);
        // Multi-byte text around escapes stays intact.
        assert_eq!(all(r#"["ñ\nü"]"#)[0].value, "ñ\nü");
    }
}
