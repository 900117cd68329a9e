//! A small YAML position index: the line of each key and list item of a
//! block-style YAML text, by JSON pointer, so that schema and semantic
//! errors (which come with a JSON pointer) can name the line to fix.
//!
//! It reads only the block structure (indentation, `key:`, `- `); a value
//! written in flow style (`{a: 1}` on one line) maps to the line of its
//! nearest block ancestor, which is the line that holds it.

use std::collections::HashMap;

/// Escapes one JSON pointer segment (RFC 6901).
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// JSON pointer → 1-based line, for a YAML text.
#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

struct Open {
    column: usize,
    pointer: String,
    item: bool,
}

impl LineIndex {
    /// Indexes `text`.
    pub fn new(text: &str) -> LineIndex {
        let mut lines = HashMap::new();
        let mut stack: Vec<Open> = Vec::new();
        let mut counters: HashMap<String, usize> = HashMap::new();
        for (n, raw) in text.lines().enumerate() {
            let line_no = n + 1;
            let trimmed = raw.trim_start_matches(' ');
            if trimmed.is_empty()
                || trimmed.starts_with('#')
                || trimmed.starts_with("---")
                || trimmed.starts_with("...")
            {
                continue;
            }
            let mut column = raw.len() - trimmed.len();
            let mut rest = trimmed;
            // A line nested in a multi-line flow value or block scalar
            // belongs to what is open; stop when a key or item is not found.
            loop {
                let is_item = rest == "-" || rest.starts_with("- ");
                while let Some(top) = stack.last() {
                    if top.column > column || (top.column == column && (!is_item || top.item)) {
                        stack.pop();
                    } else {
                        break;
                    }
                }
                let parent = stack.last().map_or(String::new(), |o| o.pointer.clone());
                if is_item {
                    let counter = counters.entry(parent.clone()).or_insert(0);
                    let pointer = format!("{parent}/{counter}");
                    *counter += 1;
                    lines.entry(pointer.clone()).or_insert(line_no);
                    stack.push(Open {
                        column,
                        pointer,
                        item: true,
                    });
                    let after = rest.get(1..).unwrap_or("");
                    let spaces = after.len() - after.trim_start_matches(' ').len();
                    column += 1 + spaces;
                    rest = after.trim_start_matches(' ');
                    if rest.is_empty() {
                        break;
                    }
                    continue;
                }
                if let Some(key) = key_of(rest) {
                    let pointer = format!("{parent}/{}", escape(&key));
                    // A new mapping under this parent restarts nothing, but
                    // a key seen again (a new list item) must point here.
                    lines.insert(pointer.clone(), line_no);
                    counters.remove(&pointer);
                    stack.push(Open {
                        column,
                        pointer,
                        item: false,
                    });
                }
                break;
            }
        }
        LineIndex { lines }
    }

    /// The line of `pointer`, or of its nearest indexed ancestor.
    pub fn line(&self, pointer: &str) -> Option<usize> {
        let mut p = pointer;
        loop {
            if let Some(line) = self.lines.get(p) {
                return Some(*line);
            }
            let cut = p.rfind('/')?;
            p = &p[..cut];
        }
    }

    /// `line N, at /pointer: message` (without the line when unknown).
    pub fn locate(&self, pointer: &str, message: &str) -> String {
        let at = if pointer.is_empty() { "/" } else { pointer };
        match self.line(pointer) {
            Some(line) => format!("line {line}, at {at}: {message}"),
            None => format!("at {at}: {message}"),
        }
    }
}

/// The key of a `key: value` or `key:` line, unquoted.
fn key_of(rest: &str) -> Option<String> {
    if let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = rest[1..].find(q)? + 1;
        let after = &rest[end + 1..];
        return after
            .trim_start()
            .starts_with(':')
            .then(|| rest[1..end].to_string());
    }
    if rest.starts_with(['{', '[', '|', '>', '&', '*', '!']) {
        return None;
    }
    let bytes = rest.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' ') {
            return Some(rest[..i].trim_end().to_string());
        }
        if *b == b' ' && bytes.get(i + 1) == Some(&b'#') {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_items_and_flow_values() {
        let text = "version: 1\nplugins:\n  - name: a\n    component: a.wasm\n    config:\n      mode: x\n  - name: b\n    component: b.wasm\nservices:\n  \"sefe/v1\":\n    rate_limit: {requests_per_second: 1}\n    plugins:\n    - name: a\n      enabled: false\n";
        let index = LineIndex::new(text);
        assert_eq!(index.line("/version"), Some(1));
        assert_eq!(index.line("/plugins/0"), Some(3));
        assert_eq!(index.line("/plugins/0/component"), Some(4));
        assert_eq!(index.line("/plugins/0/config/mode"), Some(6));
        assert_eq!(index.line("/plugins/1/name"), Some(7));
        assert_eq!(index.line("/plugins/1/component"), Some(8));
        assert_eq!(index.line("/services/sefe~1v1"), Some(10));
        assert_eq!(
            index.line("/services/sefe~1v1/rate_limit/requests_per_second"),
            Some(11)
        );
        assert_eq!(index.line("/services/sefe~1v1/plugins/0/enabled"), Some(14));
        assert_eq!(index.line("/nothing/here"), None);
    }
}
