//! Request bodies: which are inspected, and holding them back (bounded) until they are.

use crate::config::Oversize;

/// How a body is read for inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// JSON (`application/json`, `*/*+json`): its strings.
    Json,
    /// A form (`application/x-www-form-urlencoded`): its names and values.
    Form,
    /// Text (`text/*`, XML, or no content type): as one value, or as JSON if it is JSON.
    Text,
}

/// Why a body is not inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A media type the detectors cannot read (PDF, images, multipart, binary).
    MediaType,
    /// A compressed body (`content-encoding` other than `identity`).
    Encoded,
}

impl Skip {
    /// The name used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::MediaType => "skipped_media_type",
            Skip::Encoded => "skipped_encoded",
        }
    }
}

/// Chooses how to read a body from its `content-type` and `content-encoding`.
pub fn classify(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<BodyKind, Skip> {
    if content_encoding.is_some_and(|encoding| !encoding.trim().eq_ignore_ascii_case("identity")) {
        return Err(Skip::Encoded);
    }
    let Some(content_type) = content_type else {
        // No declared type: servers often parse it anyway, so it is read as text.
        return Ok(BodyKind::Text);
    };
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media == "application/json" || media.ends_with("+json") {
        Ok(BodyKind::Json)
    } else if media == "application/x-www-form-urlencoded" {
        Ok(BodyKind::Form)
    } else if media.starts_with("text/")
        || media == "application/xml"
        || media.ends_with("+xml")
        || media == "application/graphql"
        || media.is_empty()
    {
        Ok(BodyKind::Text)
    } else {
        Err(Skip::MediaType)
    }
}

/// What to do with a body chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Pass the chunk on as it is.
    Continue,
    /// Hold the chunk back (pass nothing on yet).
    Hold,
    /// Inspect [`BodyBuffer::text`] now; then [`BodyBuffer::release`] if it may go on.
    Inspect,
    /// The body is over the limit and the configuration refuses it.
    Reject,
}

/// A request body being collected for inspection.
#[derive(Debug)]
pub struct BodyBuffer {
    /// How it is read.
    pub kind: BodyKind,
    /// Whether chunks are held back until inspected (some detector blocks) or only copied
    /// (every detector reports, so nothing need wait).
    hold: bool,
    limit: usize,
    oversize: Oversize,
    data: Vec<u8>,
    /// Whether more than `limit` bytes arrived.
    pub truncated: bool,
    done: bool,
}

impl BodyBuffer {
    /// A buffer for a body of `kind`, inspecting at most `limit` bytes.
    pub fn new(kind: BodyKind, hold: bool, limit: usize, oversize: Oversize) -> Self {
        BodyBuffer {
            kind,
            hold,
            limit,
            oversize,
            data: Vec::new(),
            truncated: false,
            done: false,
        }
    }

    /// Takes one chunk.
    pub fn push(&mut self, data: &[u8], end_of_stream: bool) -> Step {
        if self.done {
            return Step::Continue;
        }
        let over = self.data.len() + data.len() > self.limit;
        if over && self.oversize == Oversize::Reject {
            self.done = true;
            self.data = Vec::new();
            return Step::Reject;
        }
        if self.hold {
            // Held bytes go on unchanged after inspection, so all of them are kept; the
            // limit bounds this to `limit` plus one chunk.
            self.data.extend_from_slice(data);
        } else {
            let room = self.limit.saturating_sub(self.data.len());
            self.data.extend_from_slice(&data[..room.min(data.len())]);
        }
        if over {
            self.truncated = true;
            return Step::Inspect;
        }
        if end_of_stream {
            return Step::Inspect;
        }
        if self.hold {
            Step::Hold
        } else {
            Step::Continue
        }
    }

    /// The inspected part of the body, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        let end = self.data.len().min(self.limit);
        String::from_utf8_lossy(&self.data[..end]).into_owned()
    }

    /// Ends inspection after a pass: the held bytes to send on, or `None` to pass the
    /// current chunk as it is (nothing was held). Later chunks continue.
    pub fn release(&mut self) -> Option<Vec<u8>> {
        self.done = true;
        let data = std::mem::take(&mut self.data);
        self.hold.then_some(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(classify(Some("application/json"), None), Ok(BodyKind::Json));
        assert_eq!(
            classify(Some("Application/JSON; charset=utf-8"), None),
            Ok(BodyKind::Json)
        );
        assert_eq!(
            classify(Some("application/problem+json"), None),
            Ok(BodyKind::Json)
        );
        assert_eq!(
            classify(Some("application/x-www-form-urlencoded"), None),
            Ok(BodyKind::Form)
        );
        assert_eq!(classify(Some("text/plain"), None), Ok(BodyKind::Text));
        assert_eq!(
            classify(Some("application/soap+xml"), None),
            Ok(BodyKind::Text)
        );
        assert_eq!(classify(None, None), Ok(BodyKind::Text));
        assert_eq!(
            classify(Some("application/pdf"), None),
            Err(Skip::MediaType)
        );
        assert_eq!(
            classify(Some("multipart/form-data; boundary=x"), None),
            Err(Skip::MediaType)
        );
        assert_eq!(
            classify(Some("application/json"), Some("gzip")),
            Err(Skip::Encoded)
        );
        assert_eq!(
            classify(Some("application/json"), Some("identity")),
            Ok(BodyKind::Json)
        );
    }

    #[test]
    fn held_bodies_are_released_whole() {
        let mut buffer = BodyBuffer::new(BodyKind::Json, true, 10, Oversize::InspectPrefix);
        assert_eq!(buffer.push(b"abc", false), Step::Hold);
        assert_eq!(buffer.push(b"def", true), Step::Inspect);
        assert_eq!(buffer.text(), "abcdef");
        assert_eq!(buffer.release(), Some(b"abcdef".to_vec()));
        assert_eq!(buffer.push(b"late", true), Step::Continue);
    }

    #[test]
    fn over_the_limit_the_prefix_is_inspected_and_all_released() {
        let mut buffer = BodyBuffer::new(BodyKind::Text, true, 4, Oversize::InspectPrefix);
        assert_eq!(buffer.push(b"abc", false), Step::Hold);
        assert_eq!(buffer.push(b"defg", false), Step::Inspect);
        assert!(buffer.truncated);
        assert_eq!(buffer.text(), "abcd");
        assert_eq!(buffer.release(), Some(b"abcdefg".to_vec()));
        assert_eq!(buffer.push(b"h", true), Step::Continue);
    }

    #[test]
    fn copied_bodies_pass_at_once_and_keep_only_the_limit() {
        let mut buffer = BodyBuffer::new(BodyKind::Text, false, 4, Oversize::InspectPrefix);
        assert_eq!(buffer.push(b"abc", false), Step::Continue);
        assert_eq!(buffer.push(b"defg", true), Step::Inspect);
        assert_eq!(buffer.text(), "abcd");
        assert_eq!(buffer.release(), None);
    }

    #[test]
    fn over_the_limit_with_reject() {
        let mut buffer = BodyBuffer::new(BodyKind::Text, true, 4, Oversize::Reject);
        assert_eq!(buffer.push(b"abcd", false), Step::Hold);
        assert_eq!(buffer.push(b"e", true), Step::Reject);
        assert_eq!(buffer.push(b"f", true), Step::Continue);
    }

    #[test]
    fn invalid_utf8_is_read_lossily() {
        let mut buffer = BodyBuffer::new(BodyKind::Text, true, 16, Oversize::InspectPrefix);
        assert_eq!(buffer.push(&[b'a', 0xff, b'b'], true), Step::Inspect);
        assert_eq!(buffer.text(), "a\u{fffd}b");
    }
}
