//! Server-side request forgery: parameters that would make a service fetch from its own
//! network (loopback, private ranges, cloud metadata) or through dangerous URL schemes.
//! Only parameters (query and body) are scanned for it; header values such as `host` name
//! hosts legitimately.

use super::Hits;
use crate::net::{classify_host, parse_address, parse_ipv4_lenient, HostClass};
use crate::text::find_all;

/// Scans a flat normalized value.
pub fn scan(text: &str, hits: &mut Hits) {
    urls(text, hits);
    bare_address(text, hits);
    metadata_paths(text, hits);
}

/// Schemes that reach what HTTP cannot: local files, raw TCP (`gopher://` speaks to Redis
/// or SMTP), directories.
fn scheme_score(scheme: &str) -> Option<u32> {
    match scheme {
        "gopher" => Some(10),
        "dict" | "file" => Some(9),
        "php" | "expect" | "phar" => Some(8),
        "tftp" | "netdoc" | "jar" => Some(7),
        "ldap" | "ldaps" | "smb" => Some(6),
        "sftp" | "ftp" => Some(3),
        _ => None,
    }
}

fn host_score(class: HostClass) -> Option<(&'static str, u32)> {
    match class {
        HostClass::Metadata => Some(("metadata_host", 10)),
        HostClass::Loopback => Some(("loopback_host", 8)),
        HostClass::LinkLocal => Some(("link_local_host", 8)),
        HostClass::Private => Some(("private_host", 5)),
        HostClass::Public => None,
    }
}

/// The host of the URL whose authority starts at `rest` (after `://`).
fn url_host(rest: &str) -> &str {
    let authority = rest
        .split(['/', '?', '#', '\\', ' '])
        .next()
        .unwrap_or_default();
    // `http://trusted@10.0.0.1/`: the host is after the last `@`.
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    if host_port.starts_with('[') {
        return host_port
            .find(']')
            .map_or(host_port, |end| &host_port[..=end]);
    }
    host_port.split(':').next().unwrap_or(host_port)
}

fn urls(text: &str, hits: &mut Hits) {
    let bytes = text.as_bytes();
    for at in find_all(text, "://") {
        let scheme_len = bytes[..at]
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-'))
            .count();
        let start = at - scheme_len;
        let scheme = &text[start..at];
        if let Some(score) = scheme_score(scheme) {
            hits.add("dangerous_scheme", score, start);
        }
        let host = url_host(&text[at + 3..]);
        if let Some((signature, score)) = host_score(classify_host(host)) {
            hits.add(signature, score, start);
            if parse_address(host).is_none() && parse_ipv4_lenient(host).is_some() {
                // `http://2130706433/`, `http://0x7f.1/`: written to slip past filters.
                hits.add("obfuscated_address", 4, start);
            }
        }
    }
    // `file:/etc/passwd` and `file:///` both read local files.
    for at in find_all(text, "file:/") {
        if at == 0 || !bytes[at - 1].is_ascii_alphanumeric() {
            hits.add("dangerous_scheme", 9, at);
        }
    }
}

/// A parameter that is nothing but an internal address (`host=169.254.169.254`,
/// `target=localhost:6379`). Only plain forms count: numbers like `2130706433` are too
/// often just numbers.
fn bare_address(text: &str, hits: &mut Hits) {
    let value = text.trim();
    let host = if value.starts_with('[') {
        url_host(value)
    } else if value.matches(':').count() == 1 {
        value.split(':').next().unwrap_or(value)
    } else {
        value
    };
    // Names only in their unmistakable forms: `metadata` alone is an ordinary word.
    let is_name =
        host == "localhost" || (host.contains('.') && classify_host(host) == HostClass::Metadata);
    let is_plain_address = parse_address(host).is_some();
    if !is_name && !is_plain_address {
        return;
    }
    let score = match classify_host(host) {
        HostClass::Metadata => 8,
        HostClass::Loopback | HostClass::LinkLocal => 4,
        HostClass::Private => 2,
        HostClass::Public => return,
    };
    hits.add("internal_address_value", score, 0);
}

/// Paths of the cloud metadata APIs, which hand out credentials.
fn metadata_paths(text: &str, hits: &mut Hits) {
    for path in [
        "/latest/meta-data",
        "/latest/user-data",
        "/latest/api/token",
        "/computemetadata/v1",
        "/metadata/instance",
        "/metadata/identity",
        "/openstack/latest",
    ] {
        if let Some(at) = crate::text::find(text, path) {
            hits.add("metadata_path", 8, at);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::detect::testing::{scan, score};
    use crate::detect::Category::Ssrf;

    #[test]
    fn blatant_payloads_score_high() {
        for payload in [
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "gopher://127.0.0.1:6379/_SET%20x",
            "file:///etc/passwd",
            "dict://localhost:11211/stat",
            "http://2130706433/admin",
            "http://0x7f.1:8080/",
            "http://169.254.169.254",
        ] {
            assert!(
                score(Ssrf, payload) >= 9,
                "{payload}: {:?}",
                scan(Ssrf, payload)
            );
        }
    }

    #[test]
    fn graded_by_target() {
        assert_eq!(
            scan(Ssrf, "http://localhost:8080/admin").1,
            vec!["loopback_host"]
        );
        assert_eq!(score(Ssrf, "http://localhost:8080/admin"), 8);
        assert_eq!(score(Ssrf, "https://10.0.0.5/api"), 5);
        assert_eq!(score(Ssrf, "http://[::1]/server-status"), 8);
        assert_eq!(score(Ssrf, "http://user@127.0.0.1/"), 8);
        assert_eq!(
            scan(Ssrf, "http://2130706433/").1,
            vec!["loopback_host", "obfuscated_address"]
        );
        assert_eq!(score(Ssrf, "ftp://files.example.org/a"), 3);
        assert_eq!(score(Ssrf, "169.254.169.254"), 8);
        assert_eq!(score(Ssrf, "metadata.google.internal"), 8);
        assert_eq!(score(Ssrf, "localhost:6379"), 4);
        assert_eq!(score(Ssrf, "192.168.1.20"), 2);
        assert_eq!(score(Ssrf, "file:/etc/passwd"), 9);
    }

    #[test]
    fn ordinary_values_score_nothing() {
        for text in [
            "https://ws.agetic.gob.bo/segip/v2/personas",
            "https://www.entidad.gob.bo/notificaciones?id=1",
            "2130706433",
            "127",
            "1.5",
            "2024-01-15",
            "Bs 150.00",
            "profile://x",
            "El archivo del perfil",
            "8.8.8.8",
            "user@example.org",
            "metadata",
            "instance-data",
        ] {
            assert_eq!(score(Ssrf, text), 0, "{text}: {:?}", scan(Ssrf, text));
        }
    }
}
