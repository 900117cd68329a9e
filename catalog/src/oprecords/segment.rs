//! Operational records in segments: on SQLite, the records of one writer's
//! transaction are stored as one row of `operational_record_segments`, their
//! times in columns and the records themselves encoded in the row's body.
//!
//! One row per record cost the writer about 12,000 instructions a record
//! (17 values bound and copied, the table's and the time index's B-trees),
//! two thirds of what metering and audit added to an exchange after the
//! request path. A segment is one insert per batch of up to
//! [`super::RECORDS_PER_TRANSACTION`] records; what reads records (the
//! listing, retention) selects segments by their time columns and decodes.
//!
//! Bodies are versioned by their first byte: [`BINARY_V1`] is postcard's
//! encoding of the records in field order (strings length-prefixed, integers
//! as varints); `[` is a JSON array of objects named like the record's
//! fields, which migration 0015 wrote for the rows an older version had
//! stored one by one (SQLite's JSON functions could build it in SQL).

use super::OperationalRecord;

/// First byte of a body in the binary encoding, version 1.
const BINARY_V1: u8 = 1;
/// First byte of a body written by migration 0015 (a JSON array).
const JSON_ARRAY: u8 = b'[';

/// A segment's body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The body is empty or starts with an unknown version byte.
    #[error("unknown operational record segment encoding (first byte {0:?})")]
    Encoding(Option<u8>),
    /// A binary body is malformed.
    #[error("malformed operational record segment: {0}")]
    Binary(#[from] postcard::Error),
    /// A JSON body is malformed.
    #[error("malformed operational record segment (JSON): {0}")]
    Json(#[from] serde_json::Error),
}

/// One segment ready to be stored: its columns and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The earliest `received_at_us` of its records.
    pub first_received_us: i64,
    /// The latest `received_at_us` of its records.
    pub last_received_us: i64,
    /// How many records it holds.
    pub records: i64,
    /// The encoded records.
    pub body: Vec<u8>,
}

/// Encodes `records` (at least one) into a segment.
pub fn encode(records: &[OperationalRecord]) -> Result<Segment, SegmentError> {
    let (first, last) = records
        .iter()
        .map(|r| r.received_at_us)
        .fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
    // About 130 bytes a record for the bench's calls: one allocation.
    let mut body = Vec::with_capacity(1 + records.len() * 160);
    body.push(BINARY_V1);
    let body = postcard::to_extend(records, body)?;
    Ok(Segment {
        first_received_us: first,
        last_received_us: last,
        records: i64::try_from(records.len()).unwrap_or(i64::MAX),
        body,
    })
}

/// Decodes a segment's body into its records, in the order they were stored.
pub fn decode(body: &[u8]) -> Result<Vec<OperationalRecord>, SegmentError> {
    match body.first() {
        Some(&BINARY_V1) => Ok(postcard::from_bytes(&body[1..])?),
        Some(&JSON_ARRAY) => Ok(serde_json::from_slice(body)?),
        other => Err(SegmentError::Encoding(other.copied())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: i64) -> OperationalRecord {
        OperationalRecord {
            request_id: format!("{n:032x}"),
            trace_id: (n % 2 == 0).then(|| "4bf92f3577b34da6a3ce929d0e0e4736".into()),
            consumer_entity: "sin".into(),
            consumer_system: "portal-tramites".into(),
            service: "segip/v2".into(),
            route: "/personas/{id}".into(),
            environment: "produccion".into(),
            method: "GET".into(),
            status: 200 + n as u16,
            request_bytes: 0,
            response_bytes: u64::MAX - n as u64,
            received_at_us: 1_790_000_000_000_000 - n * 7,
            sent_upstream_at_us: (n % 3 != 0).then_some(1_790_000_000_000_100),
            upstream_answered_at_us: None,
            answered_at_us: i64::MIN + n,
            plugin_outcome: if n == 1 { "403".into() } else { String::new() },
            error_type: "ñandú/ü".into(),
        }
    }

    #[test]
    fn a_segment_gives_back_exactly_its_records_and_their_time_span() {
        let records: Vec<_> = (0..500).map(record).collect();
        let segment = encode(&records).unwrap();
        assert_eq!(segment.records, 500);
        assert_eq!(segment.first_received_us, 1_790_000_000_000_000 - 499 * 7);
        assert_eq!(segment.last_received_us, 1_790_000_000_000_000);
        assert!(
            segment.body.len() < 500 * 200,
            "{} bytes for 500 records",
            segment.body.len()
        );
        assert_eq!(decode(&segment.body).unwrap(), records);
    }

    #[test]
    fn json_bodies_of_migrated_rows_decode_and_bad_bodies_are_errors() {
        let records = vec![record(1), record(2)];
        let json = serde_json::to_vec(&records).unwrap();
        assert_eq!(decode(&json).unwrap(), records);

        assert!(matches!(decode(b""), Err(SegmentError::Encoding(None))));
        assert!(matches!(
            decode(b"\x07abc"),
            Err(SegmentError::Encoding(Some(7)))
        ));
        let mut truncated = encode(&records).unwrap().body;
        truncated.truncate(truncated.len() - 3);
        assert!(matches!(decode(&truncated), Err(SegmentError::Binary(_))));
    }
}
