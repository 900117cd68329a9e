//! A range of the ledger in a file of its own, that verifies offline without
//! the store: JSON Lines, a header first, then each entry as it was hashed
//! (its payload as the exact text), then the signed checkpoints that fall in
//! the range.
//!
//! The header holds the hash of the entry before the range, which the first
//! entry chains from; by itself it proves nothing. What authenticates the
//! range is a checkpoint in it: its signature covers the hash of the chain at
//! its position, so every entry up to it is as the node signed it. Entries
//! after the last checkpoint of the range are only consistent with each
//! other, and the verification says so.

use super::{
    exchange_payload_of, hex, unhex, ChainWalk, Payload, StoredCheckpoint, StoredEntry,
    Verification,
};
use serde::{Deserialize, Serialize};
use sqlx::{Row, SqlitePool};
use std::io::{BufRead, Write};

/// The version of the export's format, in its header.
const FORMAT: u32 = 1;

/// One line of an export.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum ExportLine {
    /// The first line: what the export holds.
    Header {
        format: u32,
        /// Positions of the first and last entry.
        from: u64,
        to: u64,
        /// Hex hash of the entry before `from` (64 zeros when `from` is 0).
        prev_hash: String,
    },
    /// An entry, as hashed.
    Entry {
        position: u64,
        at_ms: i64,
        kind: String,
        actor: String,
        request_id: String,
        /// The exact text that was hashed.
        payload: String,
        /// Hex of the stored hash.
        hash: String,
    },
    /// A signed checkpoint over an entry of the range.
    Checkpoint {
        position: u64,
        hash: String,
        at_ms: i64,
        public_key: String,
        signature: String,
    },
}

/// Why an export could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The store failed.
    #[error("ledger storage failed: {0}")]
    Store(#[from] sqlx::Error),
    /// Writing or reading the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The range asked for is not in the ledger.
    #[error("{0}")]
    Range(String),
    /// A line of the file is not part of an export.
    #[error("line {line}: {why}")]
    Format {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
}

/// What an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Positions of its first and last entry.
    pub from: u64,
    /// See `from`.
    pub to: u64,
    /// Entries written.
    pub entries: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
}

/// Writes the entries from `from` to `to` (the last entry when `None`) and
/// the checkpoints among them to `out`.
pub async fn export(
    pool: &SqlitePool,
    from: u64,
    to: Option<u64>,
    out: &mut impl Write,
) -> Result<ExportSummary, ExportError> {
    let last = super::last_entry(pool)
        .await?
        .map(|e| e.position)
        .ok_or_else(|| ExportError::Range("the ledger has no entries".into()))?;
    let to = to.unwrap_or(last).min(last);
    if from > to {
        return Err(ExportError::Range(format!(
            "no entries from {from} to {to} (the last entry is {last})"
        )));
    }
    let prev_hash = match from.checked_sub(1) {
        None => hex(&[0; 32]),
        Some(before) => {
            let hash = super::stored_hash(pool, before).await?;
            hex(&hash.ok_or_else(|| {
                ExportError::Range(format!("entry {before}, before the range, is missing"))
            })?)
        }
    };
    write_line(
        out,
        &ExportLine::Header {
            format: FORMAT,
            from,
            to,
            prev_hash,
        },
    )?;
    let mut summary = ExportSummary {
        from,
        to,
        entries: 0,
        checkpoints: 0,
    };
    let mut next = from;
    while next <= to {
        let page = super::read_entries(pool, next, to).await?;
        let Some(last_read) = page.last().map(|e| e.position) else {
            break;
        };
        for e in page {
            let payload = match e.payload {
                Some(Payload::Json(text)) => text,
                Some(Payload::Exchange(digest)) => exchange_payload_of(&digest),
                // Written as it is: its verification names it.
                None => String::new(),
            };
            write_line(
                out,
                &ExportLine::Entry {
                    position: e.position,
                    at_ms: e.at_ms,
                    kind: e.kind,
                    actor: e.actor,
                    request_id: e.request_id,
                    payload,
                    hash: hex(&e.hash),
                },
            )?;
            summary.entries += 1;
        }
        next = last_read + 1;
    }
    let checkpoints = sqlx::query(
        "SELECT position, hash, at_ms, public_key, signature FROM ledger_checkpoints
         WHERE position >= ? AND position <= ? ORDER BY position",
    )
    .bind(from as i64)
    .bind(to as i64)
    .fetch_all(pool)
    .await?;
    for row in checkpoints {
        write_line(
            out,
            &ExportLine::Checkpoint {
                position: row.try_get::<i64, _>(0)? as u64,
                hash: row.try_get(1)?,
                at_ms: row.try_get(2)?,
                public_key: row.try_get(3)?,
                signature: row.try_get(4)?,
            },
        )?;
        summary.checkpoints += 1;
    }
    out.flush()?;
    Ok(summary)
}

fn write_line(out: &mut impl Write, line: &ExportLine) -> Result<(), ExportError> {
    serde_json::to_writer(&mut *out, line).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Checks an export offline: the chain from its header's hash through every
/// entry, each checkpoint's signature (by `pinned`, hex, when given) and that
/// it holds the chain's hash at its position, and that no entry up to the
/// header's `to` is missing. The report's `covered_to` says how far a
/// verified checkpoint vouches for the range.
pub fn verify_export(
    input: impl BufRead,
    pinned: Option<&str>,
) -> Result<(ExportSummary, Verification), ExportError> {
    let mut header = None;
    let mut entries = std::collections::VecDeque::new();
    let mut checkpoints = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let line = line?;
        let at = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ExportLine = serde_json::from_str(&line).map_err(|e| ExportError::Format {
            line: at,
            why: e.to_string(),
        })?;
        match parsed {
            ExportLine::Header {
                format,
                from,
                to,
                prev_hash,
            } if header.is_none() && at == 1 => {
                if format != FORMAT {
                    return Err(ExportError::Format {
                        line: at,
                        why: format!("format {format} is not {FORMAT}"),
                    });
                }
                let prev: [u8; 32] = unhex(&prev_hash)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| ExportError::Format {
                        line: at,
                        why: "prev_hash is not a hex SHA-256".into(),
                    })?;
                header = Some((from, to, prev));
            }
            ExportLine::Header { .. } => {
                return Err(ExportError::Format {
                    line: at,
                    why: "the header must be the first line, once".into(),
                })
            }
            _ if header.is_none() => {
                return Err(ExportError::Format {
                    line: at,
                    why: "the first line must be the header".into(),
                })
            }
            ExportLine::Entry {
                position,
                at_ms,
                kind,
                actor,
                request_id,
                payload,
                hash,
            } => entries.push_back(StoredEntry {
                position,
                at_ms,
                kind,
                actor,
                request_id,
                payload: Some(Payload::Json(payload)),
                // Not hex: no hash, which nothing follows.
                hash: unhex(&hash).unwrap_or_default(),
            }),
            ExportLine::Checkpoint {
                position,
                hash,
                public_key,
                signature,
                ..
            } => checkpoints.push(StoredCheckpoint::checked(
                position,
                hash,
                &public_key,
                &signature,
                pinned,
            )),
        }
    }
    let (from, to, prev) = header.ok_or_else(|| ExportError::Format {
        line: 1,
        why: "the file is empty".into(),
    })?;
    let summary = ExportSummary {
        from,
        to,
        entries: entries.len() as u64,
        checkpoints: checkpoints.len() as u64,
    };
    let mut walk = ChainWalk::new(from, prev, &checkpoints);
    let mut complete = true;
    while let Some(entry) = entries.pop_front() {
        if !walk.step(&entry, &entries) {
            complete = false;
            break;
        }
    }
    if complete && walk.expected <= to {
        walk.report.problem = Some(format!("entry {} is missing (removed)", walk.expected));
    }
    Ok((summary, walk.finish()))
}
