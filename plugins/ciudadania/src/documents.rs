//! Documents sent for approval or with a notification: only PDF and JSON, checked by
//! content and not only by declared type, bounded in count and size, and hashed with
//! SHA-256 by the host.

use crate::problem::{self, Problem};
use crate::records::hex;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use chasqui_plugin_sdk::host;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::borrow::Cow;

/// Standard base64 (RFC 4648 §4), padding optional, no line breaks.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Longest document name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// How far from the end of a PDF its `%%EOF` marker may be (as PDF readers tolerate).
const PDF_EOF_WINDOW: usize = 1024;

/// One document as the client sends it. Borrowed from the body where possible, so a
/// large base64 content is not copied before it is decoded.
#[derive(Debug, Deserialize)]
pub struct DocumentInput<'a> {
    /// The file name.
    #[serde(borrow)]
    pub nombre: Cow<'a, str>,
    /// The declared media type: `application/pdf` or `application/json`.
    #[serde(borrow)]
    pub tipo: Cow<'a, str>,
    /// The content, standard base64.
    #[serde(borrow)]
    pub contenido: Cow<'a, str>,
}

/// A checked document: what is kept and recorded (never the content itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentSummary {
    /// The file name.
    pub name: String,
    /// `application/pdf` or `application/json`.
    pub media_type: String,
    /// Decoded size in bytes.
    pub bytes: u64,
    /// SHA-256 of the decoded content, lowercase hex.
    pub sha256: String,
}

impl DocumentSummary {
    /// The document as answers show it.
    pub fn view(&self) -> Value {
        json!({
            "nombre": self.name,
            "tipo": self.media_type,
            "bytes": self.bytes,
            "sha256": self.sha256,
        })
    }

    /// The document as ledger evidence records it.
    pub fn evidence(&self) -> Value {
        json!({
            "name": self.name,
            "media_type": self.media_type,
            "bytes": self.bytes,
            "sha256": self.sha256,
        })
    }
}

/// Limits on documents.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most documents in one request.
    pub max_documents: usize,
    /// Largest decoded document.
    pub max_document_bytes: usize,
}

/// The accepted media types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaType {
    Pdf,
    Json,
}

impl MediaType {
    /// The declared type, ignoring case, whitespace and parameters (`; charset=utf-8`).
    fn from_declared(declared: &str) -> Option<MediaType> {
        let essence = declared.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/pdf") {
            Some(MediaType::Pdf)
        } else if essence.eq_ignore_ascii_case("application/json") {
            Some(MediaType::Json)
        } else {
            None
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            MediaType::Pdf => "application/pdf",
            MediaType::Json => "application/json",
        }
    }
}

/// Checks every document and returns their summaries, or the first problem found:
/// count (413), name (400), declared type (415), base64 (400), size (413), content (415).
pub fn check(
    documents: &[DocumentInput<'_>],
    limits: Limits,
) -> Result<Vec<DocumentSummary>, Problem> {
    if documents.len() > limits.max_documents {
        return Err(problem::too_many_documents(
            documents.len(),
            limits.max_documents,
        ));
    }
    documents
        .iter()
        .enumerate()
        .map(|(index, document)| check_one(index, document, limits))
        .collect()
}

fn check_one(
    index: usize,
    document: &DocumentInput<'_>,
    limits: Limits,
) -> Result<DocumentSummary, Problem> {
    let name = document.nombre.trim();
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(problem::invalid_body(format!(
            "documentos[{index}].nombre must be 1 to {MAX_NAME_BYTES} bytes without control characters"
        )));
    }
    let media_type = MediaType::from_declared(&document.tipo).ok_or_else(|| {
        problem::document_type_not_allowed(index, &problem::printable(&document.tipo))
    })?;
    let encoded = document.contenido.as_bytes();
    // Refuse an oversized document before decoding it: 4 base64 characters carry 3 bytes.
    if encoded.len() / 4 * 3 > limits.max_document_bytes.saturating_add(3) {
        return Err(problem::document_too_large(
            index,
            limits.max_document_bytes,
        ));
    }
    let content = BASE64
        .decode(encoded)
        .map_err(|_| problem::invalid_base64(index))?;
    if content.is_empty() {
        return Err(problem::invalid_body(format!(
            "documentos[{index}].contenido is empty"
        )));
    }
    if content.len() > limits.max_document_bytes {
        return Err(problem::document_too_large(
            index,
            limits.max_document_bytes,
        ));
    }
    match media_type {
        MediaType::Pdf => check_pdf(&content),
        MediaType::Json => check_json(&content),
    }
    .map_err(|why| problem::document_content_mismatch(index, why))?;
    Ok(DocumentSummary {
        name: name.to_string(),
        media_type: media_type.as_str().to_string(),
        bytes: content.len() as u64,
        sha256: hex(&host::crypto::sha256(&content)),
    })
}

/// A PDF starts with `%PDF-` and ends with `%%EOF` (within its last 1024 bytes, as
/// readers allow trailing bytes after the marker).
fn check_pdf(content: &[u8]) -> Result<(), &'static str> {
    if !content.starts_with(b"%PDF-") {
        return Err("declared application/pdf but does not start with %PDF-");
    }
    let tail = &content[content.len().saturating_sub(PDF_EOF_WINDOW)..];
    if !tail.windows(5).any(|window| window == b"%%EOF") {
        return Err("declared application/pdf but has no %%EOF trailer (truncated?)");
    }
    Ok(())
}

/// A JSON document parses as JSON (UTF-8, one value).
fn check_json(content: &[u8]) -> Result<(), &'static str> {
    serde_json::from_slice::<serde::de::IgnoredAny>(content)
        .map(|_| ())
        .map_err(|_| "declared application/json but is not valid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_ignore_case_and_parameters() {
        assert_eq!(
            MediaType::from_declared("Application/JSON; charset=utf-8"),
            Some(MediaType::Json)
        );
        assert_eq!(
            MediaType::from_declared(" application/pdf "),
            Some(MediaType::Pdf)
        );
        assert_eq!(MediaType::from_declared("application/msword"), None);
        assert_eq!(MediaType::from_declared("text/json"), None);
    }

    #[test]
    fn pdfs_need_the_magic_and_a_trailer() {
        assert!(check_pdf(b"%PDF-1.7\n1 0 obj\n%%EOF\n").is_ok());
        assert!(check_pdf(b"%PDF-1.7\n1 0 obj\n").is_err());
        assert!(check_pdf(b"PK\x03\x04 %%EOF").is_err());
        let mut far = b"%PDF-1.4\n%%EOF".to_vec();
        far.extend(std::iter::repeat_n(b' ', 2000));
        assert!(check_pdf(&far).is_err());
    }

    #[test]
    fn json_must_parse() {
        assert!(check_json(br#"{"a": [1, 2]}"#).is_ok());
        assert!(check_json(b"\"text\"").is_ok());
        assert!(check_json(b"{\"a\": ").is_err());
        assert!(check_json(b"%PDF-1.7").is_err());
    }
}
