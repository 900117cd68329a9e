//! Path traversal: climbing out of a directory (`../`, encoded or not) and probing for the
//! files attackers want (`/etc/passwd`, `.env`, `.git/`).

use super::Hits;
use crate::text::find_all;

/// Scans a flat normalized value (decoding variants are scanned separately, so `%2e%2e%2f`
/// decoded once is `../` in the next variant).
pub fn scan(text: &str, hits: &mut Hits) {
    dot_dot(text, hits);
    encoded(text, hits);
    sensitive_files(text, hits);
    if let Some(at) = text.find('\0') {
        // A NUL cuts the path in C-based file APIs: `report.pdf%00.jpg`.
        hits.add("null_byte", 5, at);
    }
}

/// `../` and `..\`, and `..;/` (Tomcat's path parameter trick). One climb is weak (relative
/// links have them); two in a row is a traversal.
fn dot_dot(text: &str, hits: &mut Hits) {
    let bytes = text.as_bytes();
    // The length of the climb at `at`, if there is one.
    let climb = |at: usize| -> Option<usize> {
        let rest = bytes.get(at..)?;
        if rest.starts_with(b"..;/") {
            Some(4)
        } else if rest.starts_with(b"..") && matches!(rest.get(2), Some(b'/' | b'\\') | None) {
            Some(3)
        } else {
            None
        }
    };
    let mut climbs = 0;
    let mut first = None;
    for at in find_all(text, "..") {
        // `...` is not a climb; only a dot pair that starts a segment.
        let starts_segment = at == 0 || matches!(bytes[at - 1], b'/' | b'\\' | b'=' | b' ');
        let Some(len) = climb(at).filter(|_| starts_segment) else {
            continue;
        };
        climbs += 1;
        first.get_or_insert(at);
        if climb(at + len).is_some() {
            hits.add("dot_dot_sequence", 8, at);
        }
    }
    if let Some(at) = first {
        hits.add("dot_dot", 4, at);
        if climbs >= 3 {
            hits.add("dot_dot_sequence", 8, at);
        }
    }
    // Patterns that survive a filter deleting `../` once.
    for bypass in ["....//", "....\\\\", "..././", "...\\.\\"] {
        if let Some(at) = crate::text::find(text, bypass) {
            hits.add("dot_dot_bypass", 8, at);
        }
    }
}

/// Encoded dots and slashes: nobody encodes `..` by accident, and overlong UTF-8 forms
/// (`%c0%af`) exist only to fool decoders.
fn encoded(text: &str, hits: &mut Hits) {
    for needle in [
        "%2e%2e",
        "%2e.",
        ".%2e",
        "..%2f",
        "..%5c",
        "%252e",
        "%252f",
        "%c0%ae",
        "%c0%af",
        "%c1%9c",
        "%c1%1c",
        "%e0%80%ae",
        "%e0%80%af",
        "%u002e",
        "%uff0e",
        "%u2215",
        "%u2216",
    ] {
        if let Some(at) = crate::text::find(text, needle) {
            hits.add("encoded_dot_dot", 7, at);
            return;
        }
    }
}

/// Files and directories that a request has no business naming.
fn sensitive_files(text: &str, hits: &mut Hits) {
    const FILES: &[(&str, u32)] = &[
        ("etc/passwd", 8),
        ("etc/shadow", 8),
        ("etc/group", 6),
        ("etc/hosts", 6),
        ("etc/issue", 6),
        ("proc/self/", 8),
        ("proc/version", 7),
        ("win.ini", 8),
        ("boot.ini", 8),
        ("windows/system32", 7),
        ("windows\\system32", 7),
        ("web-inf/", 7),
        ("meta-inf/", 6),
        ("/.htaccess", 7),
        ("/.htpasswd", 8),
        (".ssh/", 7),
        ("id_rsa", 7),
        ("/.env", 7),
        ("/.git/", 7),
        ("/.svn/", 7),
        ("wp-config.php", 7),
        ("/var/log/", 6),
        ("/.aws/credentials", 8),
        ("/.docker/config", 7),
    ];
    let bytes = text.as_bytes();
    for (file, score) in FILES {
        let found = find_all(text, file).find(|&at| {
            // `/.env` but not `/.environment`; `etc/passwd` anywhere.
            let end = at + file.len();
            !file.ends_with(|c: char| c.is_ascii_alphanumeric())
                || bytes.get(end).is_none_or(|b| !b.is_ascii_alphanumeric())
        });
        if let Some(at) = found {
            hits.add("sensitive_file", *score, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::detect::testing::{scan, score};
    use crate::detect::Category::Traversal;

    #[test]
    fn blatant_payloads_score_high() {
        for payload in [
            "../../../etc/passwd",
            "..\\..\\..\\windows\\win.ini",
            "/ppe/v1/../../etc/shadow",
            "....//....//etc/passwd",
            "%2e%2e/%2e%2e/etc/passwd",
            "..%c0%af..%c0%afetc/passwd",
            "/files/..;/..;/WEB-INF/web.xml",
            "../../../../proc/self/environ",
        ] {
            assert!(
                score(Traversal, payload) >= 9,
                "{payload}: {:?}",
                scan(Traversal, payload)
            );
        }
    }

    #[test]
    fn signatures_are_named() {
        assert_eq!(
            scan(Traversal, "../../etc/passwd").1,
            vec!["dot_dot_sequence", "sensitive_file", "dot_dot"]
        );
        assert_eq!(scan(Traversal, "informe.pdf\0.jpg").1, vec!["null_byte"]);
        assert_eq!(scan(Traversal, "%2e%2e/").1, vec!["encoded_dot_dot"]);
    }

    #[test]
    fn lone_signs_score_by_strength() {
        assert_eq!(score(Traversal, "../img/logo.png"), 4);
        assert_eq!(score(Traversal, "/.env"), 7);
        assert_eq!(score(Traversal, "/segip/v2/.git/config"), 7);
    }

    #[test]
    fn ordinary_text_scores_nothing() {
        for text in [
            "Esperando respuesta...",
            "Continúa... y luego ... fin",
            "v1.2.3",
            "/ppe/v1/transaccion/deuda",
            "https://ws.agetic.gob.bo/segip/v2/personas",
            "archivo.environment.json",
            "/.envio/estado",
            "15/01/2024",
            "C:\\Documentos\\informe.pdf",
            "aGVsbG8gd29ybGQ=",
        ] {
            assert_eq!(
                score(Traversal, text),
                0,
                "{text}: {:?}",
                scan(Traversal, text)
            );
        }
    }
}
