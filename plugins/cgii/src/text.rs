//! Text handling shared by the detectors: percent-decoding, query splitting, the normalized
//! form that signatures are matched on, and safe rendering of client text in evidence.

use std::borrow::Cow;

/// How many times a value was percent-decoded before a signature matched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Decoding {
    /// As the client sent it.
    Raw,
    /// Percent-decoded once (what an ordinary server sees).
    Once,
    /// Percent-decoded twice: the payload was double-encoded to slip past a filter.
    Twice,
}

impl Decoding {
    /// The name used in incident evidence.
    pub fn as_str(self) -> &'static str {
        match self {
            Decoding::Raw => "raw",
            Decoding::Once => "once",
            Decoding::Twice => "twice",
        }
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `input` (`%XX`, and the non-standard `%uXXXX` that IIS accepts, because
/// attackers use it); with `plus_as_space`, `+` is a space as in forms and queries. Invalid
/// escapes stay as they are and invalid UTF-8 becomes U+FFFD, so decoding never fails.
/// Returns `None` when there was nothing to decode.
pub fn percent_decode(input: &str, plus_as_space: bool) -> Option<String> {
    let bytes = input.as_bytes();
    if !bytes
        .iter()
        .any(|&b| b == b'%' || (plus_as_space && b == b'+'))
    {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'+' && plus_as_space {
            out.push(b' ');
            i += 1;
            continue;
        }
        if byte == b'%' {
            let pair = bytes
                .get(i + 1)
                .and_then(|&hi| hex_value(hi))
                .zip(bytes.get(i + 2).and_then(|&lo| hex_value(lo)));
            if let Some((hi, lo)) = pair {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
            if let Some(c) = decode_percent_u(&bytes[i + 1..]) {
                let mut buffer = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
                i += 6;
                continue;
            }
        }
        out.push(byte);
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&out).into_owned();
    (decoded != input).then_some(decoded)
}

/// `uXXXX` after a `%`: the character, if the four digits are hex and name one.
fn decode_percent_u(rest: &[u8]) -> Option<char> {
    if !matches!(rest.first(), Some(b'u' | b'U')) || rest.len() < 5 {
        return None;
    }
    let mut value = 0u32;
    for &digit in &rest[1..5] {
        value = value << 4 | u32::from(hex_value(digit)?);
    }
    char::from_u32(value)
}

/// The forms of a value that are inspected: as sent, decoded once, and decoded a second
/// time when the first decoding still left escapes (double encoding). Forms equal to the
/// previous one are left out.
pub fn variants(raw: &str, plus_as_space: bool) -> Vec<(Decoding, Cow<'_, str>)> {
    let mut forms = vec![(Decoding::Raw, Cow::Borrowed(raw))];
    if let Some(once) = percent_decode(raw, plus_as_space) {
        if let Some(twice) = percent_decode(&once, plus_as_space) {
            forms.push((Decoding::Once, Cow::Owned(once)));
            forms.push((Decoding::Twice, Cow::Owned(twice)));
        } else {
            forms.push((Decoding::Once, Cow::Owned(once)));
        }
    }
    forms
}

/// Splits a query string or form body into `(name, value)` pairs, still encoded. Empty
/// pairs (`a=1&&b=2`) are skipped; a pair without `=` has an empty value.
pub fn split_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Splits a request target into its path and its query (without `?`); a fragment, which
/// clients should not send, is dropped.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    let target = target.split('#').next().unwrap_or_default();
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// A value prepared for signature matching.
///
/// ASCII letters are lowercased, SQL block comments (`/**/`, used to split keywords) become
/// a space, and every run of whitespace becomes one space, or one `\n` when it holds a line
/// break (a command separator for shells). `flat` is the same text with `\n` as a space,
/// for detectors that only care about words. Both have the same length;
/// [`Prepared::original_offset`] maps an offset back to the original, so evidence can quote
/// what the client sent.
#[derive(Debug)]
pub struct Prepared<'a> {
    /// The original value.
    pub original: &'a str,
    /// Normalized, line breaks kept.
    pub norm: String,
    /// Normalized, line breaks as spaces.
    pub flat: String,
}

fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// One step of the normalization.
enum Step {
    /// A normalized byte, from this original offset.
    Byte(usize, u8),
    /// A line break inside a run of whitespace already emitted as a space: that space
    /// becomes `\n`.
    Newline,
}

/// Walks the normalization of `bytes`, calling `step` for each step; stops early when
/// `step` returns `false`.
fn normalize(bytes: &[u8], mut step: impl FnMut(Step) -> bool) {
    let mut i = 0;
    let mut unclosed = false;
    let mut last_space = false;
    while i < bytes.len() {
        let byte = bytes[i];
        let comment_end = if byte == b'/' && bytes.get(i + 1) == Some(&b'*') {
            if bytes.get(i + 2) == Some(&b'!') {
                // MySQL's executable comment `/*!50000union*/`: its content runs, so only
                // the marker and version digits become space.
                let digits = bytes[i + 3..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                Some(i + 3 + digits)
            } else if unclosed {
                None
            } else {
                let end = find_from(bytes, b"*/", i + 2).map(|end| end + 2);
                // Without a `*/` ahead, no later `/*` closes either: never search again
                // (a value of many `/*` must not cost quadratic time).
                unclosed = end.is_none();
                end
            }
        } else if byte == b'*' && bytes.get(i + 1) == Some(&b'/') {
            // The end of an executable comment (or a stray one).
            Some(i + 2)
        } else {
            None
        };
        let (out, next) = match comment_end {
            Some(end) => (b' ', end),
            None if matches!(byte, b'\n' | b'\r') => (b'\n', i + 1),
            None if is_space(byte) => (b' ', i + 1),
            None => (byte.to_ascii_lowercase(), i + 1),
        };
        let space = out == b' ' || out == b'\n';
        let go_on = if space && last_space {
            out != b'\n' || step(Step::Newline)
        } else {
            step(Step::Byte(i, out))
        };
        if !go_on {
            return;
        }
        last_space = space;
        i = next;
    }
}

impl<'a> Prepared<'a> {
    /// Normalizes `original`.
    pub fn new(original: &'a str) -> Self {
        let mut norm: Vec<u8> = Vec::with_capacity(original.len());
        normalize(original.as_bytes(), |step| {
            match step {
                Step::Byte(_, byte) => norm.push(byte),
                Step::Newline => {
                    if let Some(last) = norm.last_mut() {
                        *last = b'\n';
                    }
                }
            }
            true
        });
        // Only ASCII bytes were changed, and each into ASCII, so UTF-8 sequences are intact.
        let norm = String::from_utf8(norm).unwrap_or_default();
        let flat = norm.replace('\n', " ");
        Prepared {
            original,
            norm,
            flat,
        }
    }

    /// The original byte offset of normalized offset `at`, found by walking the
    /// normalization again (only evidence needs it, so it is not stored for every byte).
    pub fn original_offset(&self, at: usize) -> usize {
        let mut count = 0;
        let mut found = self.original.len();
        normalize(self.original.as_bytes(), |step| match step {
            Step::Byte(offset, _) if count == at => {
                found = offset;
                false
            }
            Step::Byte(..) => {
                count += 1;
                true
            }
            Step::Newline => true,
        });
        found
    }
}

/// The first offset at or after `from` where `needle` occurs in `haystack`.
pub fn find_from(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|position| position + from)
}

/// Every offset where `needle` occurs in `haystack` (overlapping occurrences included).
pub fn find_all<'h>(haystack: &'h str, needle: &'h str) -> impl Iterator<Item = usize> + 'h {
    let mut from = 0;
    std::iter::from_fn(move || {
        let at = from + first_match(haystack.as_bytes().get(from..)?, needle.as_bytes())?;
        // Non-overlapping, as `str::match_indices`.
        from = at + needle.len().max(1);
        Some(at)
    })
}

/// The offset of the first `needle` in `haystack`, as `str::find` gives it.
///
/// The detectors look for a hundred needles in values of a few dozen bytes; `str::find`
/// prepares a two-way searcher for every call, which cost more than the searches
/// themselves (about 60 % of CGII's time on an ordinary request). Scanning for the
/// needle's first byte and comparing the rest is quicker on such short values. A match is
/// always on a char boundary: the needle is whole UTF-8, so its first byte is not a
/// continuation byte.
pub fn find(haystack: &str, needle: &str) -> Option<usize> {
    first_match(haystack.as_bytes(), needle.as_bytes())
}

/// Whether `needle` occurs in `haystack` (see [`find`]).
pub fn contains(haystack: &str, needle: &str) -> bool {
    find(haystack, needle).is_some()
}

fn first_match(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let Some((&first, rest)) = needle.split_first() else {
        return Some(0);
    };
    let last_start = haystack.len().checked_sub(needle.len())?;
    let mut at = 0;
    while at <= last_start {
        at += haystack[at..=last_start].iter().position(|&b| b == first)?;
        if haystack[at + 1..at + needle.len()] == *rest {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// Whether a byte is part of a word: ASCII letters, digits, `_`, and any non-ASCII byte
/// (accented letters of Spanish text).
pub fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte >= 0x80
}

/// Whether `word` occurs at `at` in `text` as a whole word.
pub fn word_at(text: &str, at: usize, word: &str) -> bool {
    let bytes = text.as_bytes();
    text.get(at..).is_some_and(|rest| rest.starts_with(word))
        && (at == 0 || !is_word_byte(bytes[at - 1]))
        && bytes
            .get(at + word.len())
            .is_none_or(|&next| !is_word_byte(next))
}

/// Every offset where `word` occurs in `text` as a whole word.
pub fn find_words<'h>(text: &'h str, word: &'h str) -> impl Iterator<Item = usize> + 'h {
    find_all(text, word).filter(move |&at| word_at(text, at, word))
}

/// The offset of the first byte at or after `at` that is not a space.
pub fn skip_spaces(text: &str, mut at: usize) -> usize {
    let bytes = text.as_bytes();
    while bytes.get(at).is_some_and(|&b| b == b' ' || b == b'\n') {
        at += 1;
    }
    at
}

/// The largest char boundary of `text` at or below `at`.
pub fn floor_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// `text` cut to at most `max` bytes at a char boundary, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(format!("{}…", &text[..floor_boundary(text, max)]))
    }
}

/// Client text made safe to store and display: quotes, angle brackets, `&`, backslashes,
/// backticks, control and invisible characters (bidi overrides, zero-width) become
/// `\xNN` / `\u{N}` escapes, so a dashboard rendering the evidence can neither be
/// scripted nor misled. Letters of any script and printable ASCII stay readable.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' | '>' | '&' | '"' | '\'' | '`' | '\\' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            ' '..='~' => out.push(c),
            c if c.is_control() && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if !c.is_control() && (c.is_alphanumeric() || "¿¡«»°ºª".contains(c)) => {
                out.push(c)
            }
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    out
}

/// How many bytes of context an excerpt keeps before the match.
const EXCERPT_BEFORE: usize = 32;
/// How many bytes an excerpt keeps from the match on.
const EXCERPT_AFTER: usize = 96;

/// An escaped excerpt of `original` around byte offset `at`, marked with `…` where cut.
pub fn excerpt(original: &str, at: usize) -> String {
    let start = floor_boundary(original, at.saturating_sub(EXCERPT_BEFORE));
    let end = floor_boundary(original, at.saturating_add(EXCERPT_AFTER));
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    out.push_str(&escape(&original[start..end]));
    if end < original.len() {
        out.push('…');
    }
    out
}

/// The longest field name shown in problem details and incident evidence.
const MAX_LABEL_CHARS: usize = 48;

/// A client-chosen name (parameter, header, JSON key) reduced to characters that are safe
/// anywhere: letters, digits and `_ . - [ ] /`; anything else becomes `_`. Cut to 48
/// characters.
pub fn label(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(MAX_LABEL_CHARS)
        .map(|c| {
            if c.is_alphanumeric() || "_.-[]/".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.chars().nth(MAX_LABEL_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_agrees_with_the_standard_library() {
        let haystacks = [
            "",
            "a",
            "aaa",
            "../../etc/passwd",
            "x' OR '1'='1",
            "ñandú <script>",
            "abcabcab",
        ];
        let needles = [
            "",
            "a",
            "aa",
            "..",
            "etc/passwd",
            "'1'",
            "<script>",
            "dú",
            "abcab",
            "zzz",
            "abcabcabc",
        ];
        for haystack in haystacks {
            for needle in needles {
                assert_eq!(
                    find(haystack, needle),
                    haystack.find(needle),
                    "{haystack:?} {needle:?}"
                );
                if !needle.is_empty() {
                    let ours: Vec<usize> = find_all(haystack, needle).collect();
                    let std: Vec<usize> =
                        haystack.match_indices(needle).map(|(at, _)| at).collect();
                    assert_eq!(ours, std, "{haystack:?} {needle:?}");
                }
            }
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("abc", true), None);
        assert_eq!(
            percent_decode("%27%20OR%201%3D1", false).as_deref(),
            Some("' OR 1=1")
        );
        assert_eq!(percent_decode("a+b", true).as_deref(), Some("a b"));
        assert_eq!(percent_decode("a+b", false), None);
        // Invalid escapes stay; nothing panics on a trailing `%`.
        assert_eq!(percent_decode("100%", false), None);
        assert_eq!(percent_decode("%zz%4", false), None);
        assert_eq!(percent_decode("%41%", false).as_deref(), Some("A%"));
        // IIS `%u` escapes.
        assert_eq!(
            percent_decode("%u002e%u002e/", false).as_deref(),
            Some("../")
        );
        // Invalid UTF-8 becomes U+FFFD instead of failing.
        assert_eq!(
            percent_decode("%c0%af", false).as_deref(),
            Some("\u{fffd}\u{fffd}")
        );
        assert_eq!(percent_decode("%C3%B1", false).as_deref(), Some("ñ"));
    }

    #[test]
    fn variants_catch_double_encoding() {
        let forms = variants("%252e%252e%252f", false);
        let texts: Vec<(Decoding, &str)> = forms.iter().map(|(d, t)| (*d, t.as_ref())).collect();
        assert_eq!(
            texts,
            vec![
                (Decoding::Raw, "%252e%252e%252f"),
                (Decoding::Once, "%2e%2e%2f"),
                (Decoding::Twice, "../"),
            ]
        );
        assert_eq!(variants("plain", true).len(), 1);
        assert_eq!(variants("a%20b", true).len(), 2);
    }

    #[test]
    fn pairs_and_targets() {
        let pairs: Vec<_> = split_pairs("a=1&&b&c=x=y&").collect();
        assert_eq!(pairs, vec![("a", "1"), ("b", ""), ("c", "x=y")]);
        assert_eq!(split_target("/a/b?x=1#f"), ("/a/b", Some("x=1")));
        assert_eq!(split_target("/a/b"), ("/a/b", None));
        assert_eq!(split_target("/a?"), ("/a", Some("")));
    }

    #[test]
    fn normalization_collapses_comments_case_and_space() {
        let text = "1'/**/UNION/*x*/\t\tSELECT\r\nid";
        let prepared = Prepared::new(text);
        assert_eq!(prepared.norm, "1' union select\nid");
        assert_eq!(prepared.flat, "1' union select id");
        assert_eq!(prepared.norm.len(), prepared.flat.len());
        // Offsets map back to the original.
        let at = prepared.flat.find("select").unwrap();
        assert_eq!(&text[prepared.original_offset(at)..][..6], "SELECT");
        // MySQL executable comments keep their content.
        assert_eq!(
            Prepared::new("/*!50000UNION*/ SELECT").flat,
            " union select"
        );
        // An unclosed comment stays visible.
        assert_eq!(Prepared::new("admin'/*").flat, "admin'/*");
        // Non-ASCII text is untouched.
        assert_eq!(Prepared::new("Ñandú  PÉREZ").flat, "Ñandú pÉrez");
    }

    #[test]
    fn words_and_boundaries() {
        assert!(word_at("a union b", 2, "union"));
        assert!(!word_at("reunion b", 2, "union"));
        assert!(!word_at("unions", 0, "union"));
        assert!(!word_at("uniónx", 0, "union"));
        assert_eq!(
            find_words("or oro or", "or").collect::<Vec<_>>(),
            vec![0, 7]
        );
        assert_eq!(skip_spaces("a  \nb", 1), 4);
        assert_eq!(find_from(b"abcabc", b"bc", 2), Some(4));
        assert_eq!(find_from(b"abc", b"bc", 9), None);
    }

    #[test]
    fn escaping_is_safe_for_html_and_terminals() {
        assert_eq!(
            escape("<script>alert('x')</script>"),
            "\\x3cscript\\x3ealert(\\x27x\\x27)\\x3c/script\\x3e"
        );
        assert_eq!(escape("a\"b`c\\d&"), "a\\x22b\\x60c\\x5cd\\x26");
        assert_eq!(escape("línea\n\0"), "línea\\x0a\\x00");
        assert_eq!(escape("\u{202e}abc\u{200b}"), "\\u{202e}abc\\u{200b}");
        assert_eq!(escape("Ñandú 日本"), "Ñandú 日本");
    }

    #[test]
    fn excerpts_and_labels_are_bounded() {
        let long = format!("{}<x>{}", "a".repeat(100), "b".repeat(200));
        let cut = excerpt(&long, 100);
        assert!(cut.starts_with('…') && cut.ends_with('…'));
        assert!(cut.contains("\\x3cx\\x3e"));
        assert!(cut.chars().count() < 150);
        assert_eq!(excerpt("ab", 0), "ab");
        // Multi-byte characters are never split.
        let accents = "é".repeat(100);
        assert!(excerpt(&accents, 51).chars().all(|c| c == 'é' || c == '…'));
        assert_eq!(label("user-agent"), "user-agent");
        assert_eq!(label("id' OR \"1\"=\"1"), "id__OR__1___1");
        assert_eq!(label("niño[0]"), "niño[0]");
        assert_eq!(label(&"x".repeat(60)).chars().count(), 49);
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("ñññ", 3), "ñ…");
    }
}
