//! Runs the detectors over the parts of a request (path, query, headers, body) and turns
//! what scores over the threshold into findings.

use crate::config::{DetectorSettings, Mode, Settings};
use crate::detect::{Category, Hit};
use crate::text::{self, Decoding, Prepared};
use chasqui_plugin_sdk::serde_json::{json, Value};

/// Where in the request a value was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Location {
    /// The path.
    Path,
    /// A query parameter.
    Query,
    /// A header value.
    Header,
    /// The body.
    Body,
}

impl Location {
    /// The name used in metrics, evidence and problem documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Path => "path",
            Location::Query => "query",
            Location::Header => "header",
            Location::Body => "body",
        }
    }
}

/// One value to inspect.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    /// Where it is.
    pub location: Location,
    /// The parameter, header or JSON key it belongs to.
    pub name: Option<&'a str>,
    /// Whether the value is the name itself (a parameter name or JSON key).
    pub is_name: bool,
    /// The value as it arrived.
    pub value: &'a str,
    /// Whether `+` means a space when decoding (queries and forms).
    pub plus_as_space: bool,
}

/// An attack found in one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The attack.
    pub category: Category,
    /// Where.
    pub location: Location,
    /// The field's name, made safe ([`text::label`]).
    pub field: Option<String>,
    /// Whether it was in the name rather than the value.
    pub in_name: bool,
    /// The score.
    pub score: u32,
    /// The signature names, strongest first.
    pub signatures: Vec<&'static str>,
    /// An escaped excerpt of the value around the strongest signature.
    pub excerpt: String,
    /// How decoded the value was when it matched.
    pub decoding: Decoding,
    /// What the detector's mode says to do.
    pub mode: Mode,
}

impl Finding {
    /// Where it was, for people (Spanish, English).
    pub fn place(&self) -> (String, String) {
        match (self.location, &self.field, self.in_name) {
            (Location::Path, _, _) => ("la ruta".into(), "the path".into()),
            (Location::Query, _, true) => (
                "el nombre de un parámetro de consulta".into(),
                "a query parameter name".into(),
            ),
            (Location::Query, Some(name), false) => (
                format!("el parámetro de consulta «{name}»"),
                format!("query parameter '{name}'"),
            ),
            (Location::Query, None, false) => ("la consulta".into(), "the query".into()),
            (Location::Header, Some(name), _) => {
                (format!("la cabecera «{name}»"), format!("header '{name}'"))
            }
            (Location::Header, None, _) => ("una cabecera".into(), "a header".into()),
            (Location::Body, _, true) => (
                "el nombre de un campo del cuerpo".into(),
                "a body field name".into(),
            ),
            (Location::Body, Some(name), false) => (
                format!("el campo «{name}» del cuerpo"),
                format!("body field '{name}'"),
            ),
            (Location::Body, None, false) => ("el cuerpo".into(), "the body".into()),
        }
    }

    /// The finding as evidence (JSON).
    pub fn evidence(&self) -> Value {
        json!({
            "category": self.category.as_str(),
            "location": self.location.as_str(),
            "field": self.field,
            "in_name": self.in_name,
            "score": self.score,
            "signatures": self.signatures,
            "decoding": self.decoding.as_str(),
            "excerpt": self.excerpt,
            "mode": self.mode.as_str(),
        })
    }
}

/// The most JSON strings inspected one by one in a body.
pub const MAX_JSON_STRINGS: usize = 2048;

/// Whether a value cannot hold any signature: under three bytes, or nothing but letters
/// and digits (ids, codes, single words, numbers). Most values are, so this saves most of
/// the work.
fn is_plain(value: &str) -> bool {
    value.len() < 3
        || value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b >= 0x80)
}

/// Strings this long made only of base64 characters are encoded files (PDFs in document
/// approval, signatures): no payload can hide in base64 text without being decoded first,
/// and the upstream does not execute them, so they are not scanned.
const BASE64_SKIP_LEN: usize = 256;

fn is_long_base64(value: &str) -> bool {
    value.len() >= BASE64_SKIP_LEN
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_' | b'\n' | b'\r')
        })
}

/// Whether a value is a compact JWS or JWE (a JWT, as in `x-ciudadania-token`): three or
/// five base64url segments joined by dots, the first a JSON object (`eyJ` is `{"`). Such a
/// value has no quote, space, slash, angle bracket, percent sign or shell metacharacter,
/// so no payload of any detector fits in it; scanning a 700-byte token with every detector
/// and decoding was most of CGII's cost on a request that carries one.
fn is_compact_jwt(value: &str) -> bool {
    value.len() >= 32
        && value.starts_with("eyJ")
        && matches!(value.bytes().filter(|b| *b == b'.').count(), 2 | 4)
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The detectors in force for one request: what to run and the threshold to reach.
#[derive(Debug)]
pub struct Inspector<'s> {
    detectors: &'s [DetectorSettings],
    threshold: u32,
}

impl<'s> Inspector<'s> {
    /// The detectors of `settings` at `threshold`.
    pub fn new(settings: &'s Settings, threshold: u32) -> Self {
        Inspector {
            detectors: &settings.detectors,
            threshold,
        }
    }

    /// Inspects one field and adds what it finds, at most one finding per category (the
    /// best-scoring decoding of the value).
    pub fn field(&self, field: Field<'_>, findings: &mut Vec<Finding>) {
        if is_plain(field.value) || is_long_base64(field.value) || is_compact_jwt(field.value) {
            return;
        }
        let mut active: [Option<&DetectorSettings>; Category::ALL.len()] = Default::default();
        let applicable = self.detectors.iter().filter(|detector| {
            detector.enabled
                && !field.name.is_some_and(|name| detector.ignores(name))
                // SSRF is about parameters a service may fetch; header values such as
                // `host` or `referer` name hosts legitimately.
                && (detector.category != Category::Ssrf
                    || matches!(field.location, Location::Query | Location::Body))
        });
        for (slot, detector) in active.iter_mut().zip(applicable) {
            *slot = Some(detector);
        }
        if active[0].is_none() {
            return;
        }
        let mut best: Vec<(u32, Finding)> = Vec::new();
        for (decoding, form) in text::variants(field.value, field.plus_as_space) {
            let prepared = Prepared::new(&form);
            for detector in active.iter().flatten() {
                let hits = detector.category.scan(&prepared);
                let score = hits.score();
                if score < self.threshold {
                    continue;
                }
                let existing = best
                    .iter()
                    .position(|(_, finding)| finding.category == detector.category);
                if existing.is_some_and(|index| best[index].0 >= score) {
                    continue;
                }
                let sorted = hits.sorted();
                let Some(&Hit { at, .. }) = sorted.first() else {
                    continue;
                };
                let finding = Finding {
                    category: detector.category,
                    location: field.location,
                    field: field.name.map(text::label),
                    in_name: field.is_name,
                    score,
                    signatures: sorted.iter().map(|hit| hit.signature).collect(),
                    excerpt: text::excerpt(&form, prepared.original_offset(at)),
                    decoding,
                    mode: detector.mode,
                };
                match existing {
                    Some(index) => best[index] = (score, finding),
                    None => best.push((score, finding)),
                }
            }
        }
        findings.extend(best.into_iter().map(|(_, finding)| finding));
    }

    /// Inspects the path of a request target.
    pub fn path(&self, path: &str, findings: &mut Vec<Finding>) {
        self.field(
            Field {
                location: Location::Path,
                name: None,
                is_name: false,
                value: path,
                plus_as_space: false,
            },
            findings,
        );
    }

    /// Inspects query parameters or a form body: each name and each value.
    pub fn pairs(&self, location: Location, encoded: &str, findings: &mut Vec<Finding>) {
        for (name, value) in text::split_pairs(encoded) {
            let decoded_name = text::percent_decode(name, true);
            let name = decoded_name.as_deref().unwrap_or(name);
            self.field(
                Field {
                    location,
                    name: Some(name),
                    is_name: true,
                    value: name,
                    plus_as_space: true,
                },
                findings,
            );
            self.field(
                Field {
                    location,
                    name: Some(name),
                    is_name: false,
                    value,
                    plus_as_space: true,
                },
                findings,
            );
        }
    }

    /// Inspects a JSON body: every string, keys included, with the key it belongs to; a
    /// string seen before in the body (repeated keys of a list of records) once. The
    /// scanner is lenient: it also reads a truncated or malformed document. Past
    /// [`MAX_JSON_STRINGS`] strings the rest of the document is inspected as one text, so
    /// a body padded with many tiny strings costs linear time and hides nothing.
    pub fn json(&self, body: &str, findings: &mut Vec<Finding>) {
        let (strings, rest) = crate::json::strings(body, MAX_JSON_STRINGS);
        let mut seen = std::collections::HashSet::new();
        for item in &strings {
            if !seen.insert((item.key.as_deref(), item.is_key, item.value.as_str())) {
                continue;
            }
            self.field(
                Field {
                    location: Location::Body,
                    name: item.key.as_deref(),
                    is_name: item.is_key,
                    value: &item.value,
                    plus_as_space: false,
                },
                findings,
            );
        }
        if let Some(rest) = rest {
            self.text(&body[rest..], findings);
        }
    }

    /// Inspects a text body as one value.
    pub fn text(&self, body: &str, findings: &mut Vec<Finding>) {
        self.field(
            Field {
                location: Location::Body,
                name: None,
                is_name: false,
                value: body,
                plus_as_space: false,
            },
            findings,
        );
    }
}

/// The finding that speaks for a request: blocking ones first, then the highest score, then
/// the earliest.
pub fn primary(findings: &[Finding]) -> Option<&Finding> {
    let rank = |finding: &Finding| (finding.mode == Mode::Block, finding.score);
    findings.iter().fold(None, |best, finding| match best {
        Some(best) if rank(best) >= rank(finding) => Some(best),
        _ => Some(finding),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Settings};
    use chasqui_plugin_sdk::serde_json;

    fn settings(config: Value) -> Settings {
        Settings::new(serde_json::from_value::<Config>(config).unwrap()).unwrap()
    }

    fn inspect(
        settings: &Settings,
        threshold: u32,
        f: impl Fn(&Inspector, &mut Vec<Finding>),
    ) -> Vec<Finding> {
        let inspector = Inspector::new(settings, threshold);
        let mut findings = Vec::new();
        f(&inspector, &mut findings);
        findings
    }

    #[test]
    fn double_encoded_payloads_are_found_and_marked() {
        let settings = settings(json!({}));
        let findings = inspect(&settings, 6, |inspector, out| {
            inspector.pairs(
                Location::Query,
                "file=%252e%252e%252f%252e%252e%252fetc%252fpasswd",
                out,
            )
        });
        assert_eq!(findings.len(), 1);
        let finding = &findings[0];
        assert_eq!(finding.category, Category::Traversal);
        assert_eq!(finding.decoding, Decoding::Twice);
        assert_eq!(finding.field.as_deref(), Some("file"));
        assert!(finding.signatures.contains(&"dot_dot_sequence"));
        assert!(finding.signatures.contains(&"sensitive_file"));
        assert!(finding.excerpt.contains("etc/passwd"));
    }

    #[test]
    fn parameter_names_are_inspected_too() {
        let settings = settings(json!({}));
        let findings = inspect(&settings, 6, |inspector, out| {
            inspector.pairs(Location::Query, "id%27%20OR%20%271%27%3D%271=1", out)
        });
        assert_eq!(findings.len(), 1);
        assert!(findings[0].in_name);
        assert_eq!(findings[0].place().1, "a query parameter name");
    }

    #[test]
    fn ignored_fields_and_disabled_detectors_are_skipped() {
        let settings = settings(json!({ "detectors": {
            "sqli": { "ignore_fields": ["consulta_sql"] },
            "xss": { "enabled": false }
        } }));
        let findings = inspect(&settings, 6, |inspector, out| {
            inspector.pairs(
                Location::Query,
                "consulta_sql=1%20UNION%20SELECT%201&nota=%3Cscript%3Ex%3C/script%3E&redirect_uri=http://localhost:3000/cb",
                out,
            )
        });
        assert!(findings.is_empty(), "{findings:?}");
        let findings = inspect(&settings, 6, |inspector, out| {
            inspector.pairs(Location::Query, "callback=http://localhost:3000/cb", out)
        });
        assert_eq!(findings[0].category, Category::Ssrf);
    }

    #[test]
    fn ssrf_is_not_looked_for_in_headers_or_the_path() {
        let settings = settings(json!({}));
        let inspector = Inspector::new(&settings, 4);
        let mut findings = Vec::new();
        inspector.field(
            Field {
                location: Location::Header,
                name: Some("host"),
                is_name: false,
                value: "localhost:8443",
                plus_as_space: false,
            },
            &mut findings,
        );
        inspector.path("/fake/segip/v2/personas/http://127.0.0.1/", &mut findings);
        assert!(findings.is_empty(), "{findings:?}");
    }

    #[test]
    fn json_bodies_name_the_key_and_long_base64_is_skipped() {
        let settings = settings(json!({}));
        let pdf = "JVBERi0xLjQK".repeat(100);
        let body = format!(
            r#"{{"documento": "{pdf}", "datos": {{"nombre": "x\u0027 OR \u00271\u0027=\u00271"}}}}"#
        );
        let findings = inspect(&settings, 6, |inspector, out| inspector.json(&body, out));
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].field.as_deref(), Some("nombre"));
        assert_eq!(findings[0].place().0, "el campo «nombre» del cuerpo");
        assert!(is_long_base64(&pdf));
        assert!(!is_long_base64("short"));
    }

    #[test]
    fn compact_jwts_are_skipped_and_look_alikes_are_not() {
        let jws = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjMiLCJzY29wZSI6Im9wZW5pZCJ9.c2lnbmF0dXJl";
        assert!(is_compact_jwt(jws));
        assert!(is_compact_jwt(
            "eyJhbGciOiJkaXIifQ..aXY.Y2lwaGVydGV4dGZvcmFqd2U.dGFn"
        ));
        // Anything outside base64url and dots is scanned as usual.
        assert!(!is_compact_jwt(&format!("{jws}' OR '1'='1")));
        assert!(!is_compact_jwt(
            "eyJ.../../../etc/passwd.xxxxxxxxxxxxxxxxxxxxxxxx"
        ));
        assert!(!is_compact_jwt("169.254.169.254"));
        assert!(!is_compact_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjMifQ"));
        let settings = settings(json!({}));
        let findings = inspect(&settings, 6, |inspector, out| {
            inspector.field(
                Field {
                    location: Location::Header,
                    name: Some("x-token"),
                    is_name: false,
                    value: &format!("{jws}<script>alert(1)</script>"),
                    plus_as_space: false,
                },
                out,
            )
        });
        assert_eq!(findings.len(), 1, "{findings:?}");
    }

    #[test]
    fn one_finding_per_category_and_field_with_the_best_decoding() {
        let settings = settings(json!({}));
        let findings = inspect(&settings, 6, |inspector, out| {
            inspector.text("<script>alert(1)</script> ' OR '1'='1", out)
        });
        let categories: Vec<Category> = findings.iter().map(|f| f.category).collect();
        assert_eq!(categories, vec![Category::Sqli, Category::Xss]);
    }

    #[test]
    fn the_primary_finding_prefers_blocking_then_score() {
        let settings = settings(json!({ "detectors": { "xss": { "mode": "report" } } }));
        let findings = inspect(&settings, 6, |inspector, out| {
            inspector.text("<script>alert(document.cookie)</script> 1 OR 1=1", out)
        });
        assert_eq!(findings.len(), 2);
        let primary = primary(&findings).unwrap();
        assert_eq!(primary.category, Category::Sqli);
        assert_eq!(primary.mode, Mode::Block);
        assert!(super::primary(&[]).is_none());
    }
}
