//! Exchange entries stored in runs (table `ledger_runs`, migration 17):
//! the consecutive `exchange` entries of one commit in one row, 93 bytes
//! each, instead of a row each. An INSERT per answered request was the
//! largest part of what the ledger's writes cost; a run of up to
//! [`MAX_RUN`] entries is one.
//!
//! An entry's bytes: `at_ms` as 13 zero-padded ASCII digits, the request id
//! as the 16 bytes of its 32 hex digits, the digest (32 bytes) and the
//! chained hash (32 bytes). The fixed width lets the `ledger_entries` view
//! decode runs in SQL; an exchange entry that does not fit it (a request id
//! of another form) is stored as a row of `ledger_log`.

use super::{Payload, Pending, StoredEntry, EXCHANGE_ACTOR, EXCHANGE_KIND};
use chasqui_catalog::hex::id_bytes;

/// Bytes of one entry in a run's body.
pub(super) const RUN_ENTRY: usize = 13 + 16 + 32 + 32;
/// Entries in one run at most: a reader looking for position `p` needs only
/// the runs that start after `p - MAX_RUN`.
pub(super) const MAX_RUN: usize = 256;
/// `at_ms` must be below this to fit its 13 digits (year 2286).
const AT_MS_LIMIT: i64 = 10_000_000_000_000;

/// Whether `entry` can be stored in a run.
fn fits(entry: &Pending) -> bool {
    matches!(entry.payload, Payload::Exchange(_))
        && entry.kind == EXCHANGE_KIND
        && entry.actor == EXCHANGE_ACTOR
        && (0..AT_MS_LIMIT).contains(&entry.at_ms)
        && id_bytes(&entry.request_id).is_some()
}

/// A part of a batch as it is stored.
pub(super) enum Piece<'b> {
    /// Consecutive entries stored as rows of `ledger_log`.
    Rows(&'b [Pending]),
    /// Consecutive exchange entries stored as one row of `ledger_runs`.
    Run(&'b [Pending]),
}

/// Splits a batch (consecutive positions) into pieces, in order: each run
/// as long as the entries fit (up to [`MAX_RUN`]), each group of other
/// entries up to `rows_max`.
pub(super) fn pieces(batch: &[Pending], rows_max: usize) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut rest = batch;
    while let Some(first) = rest.first() {
        let in_run = fits(first);
        let len = rest
            .iter()
            .take(if in_run { MAX_RUN } else { rows_max.max(1) })
            .take_while(|e| fits(e) == in_run)
            .count();
        let (piece, after) = rest.split_at(len);
        pieces.push(if in_run {
            Piece::Run(piece)
        } else {
            Piece::Rows(piece)
        });
        rest = after;
    }
    pieces
}

/// The body of a run of `entries` (all of which [`fits`]), written into
/// `body` (cleared first).
pub(super) fn encode(entries: &[Pending], body: &mut Vec<u8>) {
    body.clear();
    body.reserve(entries.len() * RUN_ENTRY);
    for e in entries {
        // `fits` checked that it has at most 13 digits.
        let mut digits = [b'0'; 13];
        let mut at_ms = e.at_ms.unsigned_abs();
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (at_ms % 10) as u8;
            at_ms /= 10;
        }
        body.extend_from_slice(&digits);
        // `fits` checked that it spells 16 bytes.
        body.extend_from_slice(&id_bytes(&e.request_id).unwrap_or_default());
        if let Payload::Exchange(digest) = &e.payload {
            body.extend_from_slice(digest);
        }
        body.extend_from_slice(&e.hash);
    }
}

/// The entries of a stored run starting at `first_position`, as they are
/// hashed. A body altered in the store still decodes: bytes that are not a
/// whole entry, or beyond [`MAX_RUN`] entries, become one entry without a
/// readable payload (verification names it altered), and an `at_ms` that is
/// not digits reads as -1 (its hash then does not match).
pub(super) fn decode(first_position: u64, body: &[u8]) -> Vec<StoredEntry> {
    if body.is_empty() {
        // Every run holds an entry: a reader counts on it.
        return vec![unreadable(first_position)];
    }
    let mut entries = Vec::with_capacity((body.len() / RUN_ENTRY).min(MAX_RUN) + 1);
    let mut chunks = body.chunks(RUN_ENTRY);
    for (position, bytes) in (first_position..).zip(chunks.by_ref().take(MAX_RUN)) {
        if bytes.len() < RUN_ENTRY {
            entries.push(unreadable(position));
            return entries;
        }
        let (at_ms, rest) = bytes.split_at(13);
        let (id, rest) = rest.split_at(16);
        let (digest, hash) = rest.split_at(32);
        let at_ms = std::str::from_utf8(at_ms)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1);
        entries.push(StoredEntry {
            position,
            at_ms,
            kind: EXCHANGE_KIND.to_string(),
            actor: EXCHANGE_ACTOR.to_string(),
            request_id: crate::hex(id),
            payload: digest.try_into().ok().map(Payload::Exchange),
            hash: hash.to_vec(),
        });
    }
    if chunks.next().is_some() {
        entries.push(unreadable(first_position + MAX_RUN as u64));
    }
    entries
}

/// An entry whose bytes could not be read.
fn unreadable(position: u64) -> StoredEntry {
    StoredEntry {
        position,
        at_ms: -1,
        kind: EXCHANGE_KIND.to_string(),
        actor: EXCHANGE_ACTOR.to_string(),
        request_id: String::new(),
        payload: None,
        hash: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn exchange(position: u64, request_id: &str) -> Pending {
        Pending {
            position,
            at_ms: 1_795_000_000_123,
            kind: Cow::Borrowed(EXCHANGE_KIND),
            actor: Cow::Borrowed(EXCHANGE_ACTOR),
            request_id: request_id.into(),
            payload: Payload::Exchange([position as u8; 32]),
            hash: [(position as u8).wrapping_add(100); 32],
        }
    }

    fn other(position: u64) -> Pending {
        Pending {
            kind: Cow::Borrowed("admin.grant.create"),
            payload: Payload::Json("{}".into()),
            ..exchange(position, "r")
        }
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_run_decodes_to_the_entries_it_was_made_of() {
        let entries: Vec<Pending> = (7..10).map(|p| exchange(p, ID)).collect();
        let mut body = Vec::new();
        encode(&entries, &mut body);
        assert_eq!(body.len(), 3 * RUN_ENTRY);
        let decoded = decode(7, &body);
        assert_eq!(decoded.len(), 3);
        for (d, e) in decoded.iter().zip(&entries) {
            assert_eq!(
                (d.position, d.at_ms, d.request_id.as_str()),
                (e.position, e.at_ms, ID)
            );
            assert_eq!((d.kind.as_str(), d.actor.as_str()), ("exchange", "gateway"));
            assert!(matches!(d.payload, Some(Payload::Exchange(x)) if x == [e.position as u8; 32]));
            assert_eq!(d.hash, e.hash);
        }
    }

    #[test]
    fn a_batch_splits_into_runs_and_rows_in_order() {
        let batch = vec![
            exchange(0, ID),
            exchange(1, ID),
            other(2),
            exchange(3, "not-hex"),
            exchange(4, ID),
        ];
        let shape: Vec<(bool, u64, usize)> = pieces(&batch, 100)
            .iter()
            .map(|p| match p {
                Piece::Run(e) => (true, e[0].position, e.len()),
                Piece::Rows(e) => (false, e[0].position, e.len()),
            })
            .collect();
        assert_eq!(shape, [(true, 0, 2), (false, 2, 2), (true, 4, 1)]);
        let long: Vec<Pending> = (0..600).map(|p| exchange(p, ID)).collect();
        let lens: Vec<usize> = pieces(&long, 100)
            .iter()
            .map(|p| match p {
                Piece::Run(e) | Piece::Rows(e) => e.len(),
            })
            .collect();
        assert_eq!(lens, [256, 256, 88]);
    }

    #[test]
    fn an_altered_body_still_decodes_and_shows_the_damage() {
        let entries: Vec<Pending> = (0..2).map(|p| exchange(p, ID)).collect();
        let mut body = Vec::new();
        encode(&entries, &mut body);
        body.pop();
        let decoded = decode(0, &body);
        assert_eq!(decoded.len(), 2);
        assert!(decoded[1].payload.is_none());
        body[0] = b'x';
        assert_eq!(decode(0, &body)[0].at_ms, -1);
        let long = vec![0u8; RUN_ENTRY * (MAX_RUN + 3)];
        let decoded = decode(0, &long);
        assert_eq!(decoded.len(), MAX_RUN + 1);
        assert!(decoded[MAX_RUN].payload.is_none());
    }
}
