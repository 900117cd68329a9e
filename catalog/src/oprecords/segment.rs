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
//! Bodies are versioned by their first byte:
//! - [`BINARY_V2`] (written now): postcard's encoding of [`BodyV2`], the
//!   segment's distinct strings once and each record as indices into them,
//!   its request and trace ids as 16 bytes when they are 32 lowercase hex
//!   digits, and its times as differences (from the previous record's
//!   arrival, and from its own). About 40 bytes a record for the bench's
//!   calls, against 127 in version 1: the writer copies, checksums and
//!   checkpoints a third of the bytes, and a day of records takes a third
//!   of the disk.
//! - [`BINARY_V1`]: postcard's encoding of the records in field order
//!   (strings length-prefixed, integers as varints), written until version 2.
//! - `[`: a JSON array of objects named like the record's fields, which
//!   migration 0015 wrote for the rows an older version had stored one by
//!   one (SQLite's JSON functions could build it in SQL).

use super::{OperationalRecord, SmolStr};
use crate::hex::{hex_into, id_bytes};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// First byte of a body in the binary encoding, version 1.
const BINARY_V1: u8 = 1;
/// First byte of a body in the binary encoding, version 2.
const BINARY_V2: u8 = 2;
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
    /// A version 2 body names a string it does not hold.
    #[error("malformed operational record segment: string {0} of {1}")]
    StringIndex(u32, usize),
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
    let packed = BodyV2::pack(records);
    // About 40 bytes a record for the bench's calls: one allocation.
    let mut body = Vec::with_capacity(64 + records.len() * 48);
    body.push(BINARY_V2);
    let body = postcard::to_extend(&packed, body)?;
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
        Some(&BINARY_V2) => postcard::from_bytes::<BodyV2<'_>>(&body[1..])?.unpack(),
        Some(&BINARY_V1) => Ok(postcard::from_bytes(&body[1..])?),
        Some(&JSON_ARRAY) => Ok(serde_json::from_slice(body)?),
        other => Err(SegmentError::Encoding(other.copied())),
    }
}

/// A version 2 body: the segment's distinct strings, and its records
/// referring to them.
#[derive(Serialize, Deserialize)]
struct BodyV2<'a> {
    #[serde(borrow)]
    strings: Vec<&'a str>,
    records: Vec<PackedRecord>,
}

/// A request or trace id: 32 lowercase hex digits as the 16 bytes they
/// spell, any other text by its index in the segment's strings (so that it
/// reads back exactly as it was).
#[derive(Serialize, Deserialize)]
enum Id {
    Hex([u8; 16]),
    Text(u32),
}

/// The text fields of a record, in [`PackedRecord::texts`] order.
const TEXTS: usize = 8;

/// One record of a version 2 body.
#[derive(Serialize, Deserialize)]
struct PackedRecord {
    request_id: Id,
    trace_id: Option<Id>,
    /// Indices in the strings of consumer_entity, consumer_system, service,
    /// route, environment, method, plugin_outcome and error_type.
    texts: [u32; TEXTS],
    status: u16,
    request_bytes: u64,
    response_bytes: u64,
    /// `received_at_us` less the previous record's (the first: less 0);
    /// every difference wraps, so that any value reads back exactly.
    received_step: i64,
    /// `sent_upstream_at_us` less `received_at_us`.
    sent_upstream_after: Option<i64>,
    /// `upstream_answered_at_us` less `received_at_us`.
    upstream_answered_after: Option<i64>,
    /// `answered_at_us` less `received_at_us`.
    answered_after: i64,
}

impl<'a> BodyV2<'a> {
    /// Packs records, each distinct string once.
    fn pack(records: &'a [OperationalRecord]) -> BodyV2<'a> {
        let mut strings: Vec<&'a str> = Vec::new();
        let mut index: HashMap<&'a str, u32> = HashMap::new();
        let mut intern = |text: &'a str| -> u32 {
            *index.entry(text).or_insert_with(|| {
                strings.push(text);
                u32::try_from(strings.len() - 1).unwrap_or(u32::MAX)
            })
        };
        // Consecutive records mostly repeat their texts: compared with the
        // previous record's first, no hashing.
        let mut previous: [(&str, u32); TEXTS] = [("", u32::MAX); TEXTS];
        let mut previous_received = 0i64;
        let mut packed = Vec::with_capacity(records.len());
        for r in records {
            let texts = text_fields(r);
            let mut indices = [0u32; TEXTS];
            for ((text, at), last) in texts.into_iter().zip(&mut indices).zip(&mut previous) {
                if last.1 == u32::MAX || last.0 != text {
                    *last = (text, intern(text));
                }
                *at = last.1;
            }
            let mut id = |text: &'a str| match id_bytes(text) {
                Some(bytes) => Id::Hex(bytes),
                None => Id::Text(intern(text)),
            };
            let received = r.received_at_us;
            packed.push(PackedRecord {
                request_id: id(&r.request_id),
                trace_id: r.trace_id.as_deref().map(&mut id),
                texts: indices,
                status: r.status,
                request_bytes: r.request_bytes,
                response_bytes: r.response_bytes,
                received_step: received.wrapping_sub(previous_received),
                sent_upstream_after: r.sent_upstream_at_us.map(|t| t.wrapping_sub(received)),
                upstream_answered_after: r
                    .upstream_answered_at_us
                    .map(|t| t.wrapping_sub(received)),
                answered_after: r.answered_at_us.wrapping_sub(received),
            });
            previous_received = received;
        }
        BodyV2 {
            strings,
            records: packed,
        }
    }

    /// The records, as they were packed.
    fn unpack(self) -> Result<Vec<OperationalRecord>, SegmentError> {
        let text = |at: u32| -> Result<SmolStr, SegmentError> {
            usize::try_from(at)
                .ok()
                .and_then(|i| self.strings.get(i))
                .map(SmolStr::new)
                .ok_or(SegmentError::StringIndex(at, self.strings.len()))
        };
        let id = |id: &Id| match id {
            Id::Hex(bytes) => Ok(hex_text(bytes)),
            Id::Text(at) => text(*at),
        };
        let mut received = 0i64;
        let mut records = Vec::with_capacity(self.records.len());
        for p in &self.records {
            received = received.wrapping_add(p.received_step);
            let [entity, system, service, route, environment, method, plugin, error] = p.texts;
            records.push(OperationalRecord {
                request_id: id(&p.request_id)?,
                trace_id: p.trace_id.as_ref().map(id).transpose()?,
                consumer_entity: text(entity)?,
                consumer_system: text(system)?,
                service: text(service)?,
                route: text(route)?,
                environment: text(environment)?,
                method: text(method)?,
                status: p.status,
                request_bytes: p.request_bytes,
                response_bytes: p.response_bytes,
                received_at_us: received,
                sent_upstream_at_us: p.sent_upstream_after.map(|d| received.wrapping_add(d)),
                upstream_answered_at_us: p
                    .upstream_answered_after
                    .map(|d| received.wrapping_add(d)),
                answered_at_us: received.wrapping_add(p.answered_after),
                plugin_outcome: text(plugin)?,
                error_type: text(error)?,
            });
        }
        Ok(records)
    }
}

/// A record's text fields, in [`PackedRecord::texts`] order.
fn text_fields(r: &OperationalRecord) -> [&str; TEXTS] {
    [
        &r.consumer_entity,
        &r.consumer_system,
        &r.service,
        &r.route,
        &r.environment,
        &r.method,
        &r.plugin_outcome,
        &r.error_type,
    ]
}

/// 32 lowercase hex digits of 16 bytes.
fn hex_text(bytes: &[u8; 16]) -> SmolStr {
    let mut text = [0u8; 32];
    SmolStr::new(hex_into(bytes, &mut text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oprecords::SmolStr;

    fn record(n: i64) -> OperationalRecord {
        OperationalRecord {
            request_id: format!("{n:032x}").into(),
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
            plugin_outcome: if n == 1 {
                "403".into()
            } else {
                SmolStr::default()
            },
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
        // Strings once, ids as 16 bytes, times as differences; version 1
        // took about 150 bytes a record here (these sizes and times are
        // extreme: 10-byte varints).
        assert!(
            segment.body.len() < 500 * 64,
            "{} bytes for 500 records",
            segment.body.len()
        );
        assert_eq!(decode(&segment.body).unwrap(), records);
    }

    #[test]
    fn the_records_of_a_busy_service_take_about_40_bytes_each() {
        // The bench's call, every 40 µs, answered in 35 µs; 127 bytes a
        // record in version 1.
        let records: Vec<_> = (0..500)
            .map(|n| {
                let at = 1_790_000_000_000_000 + n * 40;
                OperationalRecord {
                    request_id: format!("{:032x}", n * 7919).into(),
                    trace_id: None,
                    status: 200,
                    response_bytes: 104,
                    received_at_us: at,
                    sent_upstream_at_us: Some(at + 12),
                    upstream_answered_at_us: Some(at + 30),
                    answered_at_us: at + 35,
                    plugin_outcome: SmolStr::default(),
                    error_type: SmolStr::default(),
                    ..record(0)
                }
            })
            .collect();
        let segment = encode(&records).unwrap();
        let per_record = segment.body.len() / records.len();
        assert!(per_record <= 40, "{per_record} bytes a record");
        assert_eq!(decode(&segment.body).unwrap(), records);
    }

    #[test]
    fn ids_and_texts_of_any_form_read_back_exactly() {
        let mut records: Vec<_> = (0..6).map(record).collect();
        // Ids that are not 32 lowercase hex digits stay text.
        records[0].request_id = "0123456789ABCDEF0123456789abcdef".into();
        records[1].request_id = "req-1".into();
        records[2].trace_id = Some("0123456789abcdef0123456789abcde".into());
        records[3].request_id = "".into();
        // Texts that change and come back, and an empty record.
        records[3].route = "/otra/{id}".into();
        records[4].consumer_entity = "".into();
        records[5].error_type = "upstream-timeout".into();
        records[5].received_at_us = i64::MIN;
        records[5].sent_upstream_at_us = Some(i64::MAX);
        records[5].upstream_answered_at_us = Some(i64::MIN);
        records.push(OperationalRecord {
            request_id: "".into(),
            trace_id: None,
            consumer_entity: "".into(),
            consumer_system: "".into(),
            service: "".into(),
            route: "".into(),
            environment: "".into(),
            method: "".into(),
            status: 0,
            request_bytes: 0,
            response_bytes: 0,
            received_at_us: i64::MAX,
            sent_upstream_at_us: None,
            upstream_answered_at_us: None,
            answered_at_us: i64::MIN,
            plugin_outcome: "".into(),
            error_type: "".into(),
        });
        let segment = encode(&records).unwrap();
        assert_eq!(segment.first_received_us, i64::MIN);
        assert_eq!(segment.last_received_us, i64::MAX);
        assert_eq!(decode(&segment.body).unwrap(), records);
    }

    #[test]
    fn version_1_bodies_still_decode() {
        let records: Vec<_> = (0..20).map(record).collect();
        let v1 = postcard::to_extend(&records, vec![BINARY_V1]).unwrap();
        assert_eq!(decode(&v1).unwrap(), records);
    }

    #[test]
    fn a_string_index_beyond_the_strings_is_an_error() {
        let body = BodyV2 {
            strings: vec!["a"],
            records: vec![PackedRecord {
                request_id: Id::Text(0),
                trace_id: None,
                texts: [0, 0, 0, 0, 0, 0, 0, 5],
                status: 200,
                request_bytes: 0,
                response_bytes: 0,
                received_step: 1,
                sent_upstream_after: None,
                upstream_answered_after: None,
                answered_after: 1,
            }],
        };
        let bytes = postcard::to_extend(&body, vec![BINARY_V2]).unwrap();
        assert!(matches!(
            decode(&bytes),
            Err(SegmentError::StringIndex(5, 1))
        ));
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
