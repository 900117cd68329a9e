//! The ledger's journal: under strict durability each entry is written to a
//! journal file (a copy into a shared memory map of the file, that is into
//! the page cache, on the appending thread: no system call) before the
//! answer it seals is sent, and reaches the store with the next
//! batch. A process crash does not lose what was written to the page cache:
//! at the next start (or before an offline `audit` command) the entries
//! journaled but not committed are recovered into the store, in order, each
//! checked against the chain. This is the guarantee SQLite's WAL gives
//! with `synchronous = NORMAL` (a process crash loses nothing committed, a
//! power cut may), without making every answer wait for a commit.
//!
//! Two files, `ledger.journal.0` and `.1`, are written in turn: once the
//! active one holds [`ROTATE_BYTES`] and everything in the other is
//! committed, the other is emptied and becomes the active one (a file is
//! [`FILE_BYTES`] long, written with zeros when the writer opens it; if the
//! store lags by a whole
//! file, answers wait for their commits until it catches up). A lock file
//! held by the writing process keeps a second process (an offline `audit`
//! command while the gateway runs) from recovering entries the gateway is
//! about to commit itself.
//!
//! A record: `u32` length of the rest, then `u64` position, `i64` at_ms,
//! kind, actor and request id (each a `u32` length and its bytes), the
//! payload (tag 0 and a `u32` length and JSON text, or tag 1 and a 32-byte
//! digest) and the 32-byte chained hash, little-endian. A record cut short
//! by the crash, or one that does not chain, ends the recovery.

use super::{EntryHead, Payload, Pending};
use memmap2::{MmapMut, MmapOptions};
use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Bytes after which the writer turns to the other file (when it can).
const ROTATE_BYTES: usize = 2 << 20;

/// Why the journal could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file could not be opened, read, written or locked.
    #[error("ledger journal {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Another process holds the journal (a gateway running on this data
    /// directory).
    #[error("the ledger journal in {0} is held by another process")]
    Busy(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The journal's files in `dir`.
fn paths(dir: &Path) -> [PathBuf; 2] {
    [dir.join("ledger.journal.0"), dir.join("ledger.journal.1")]
}

/// Whether `dir` holds a journal (a gateway under strict durability ran
/// there).
pub(super) fn exists(dir: &Path) -> bool {
    paths(dir).iter().any(|p| p.exists())
}

/// The exclusive hold of a journal: whoever has it may recover and write it.
pub(super) struct Lock(File);

/// Takes the journal of `dir`; [`JournalError::Busy`] while another
/// process (or another ledger of this one) holds it.
pub(super) fn take(dir: &Path) -> Result<Lock, JournalError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    lock(dir).map(Lock)
}

/// The lock that the writing process holds on the journal of `dir`.
fn lock(dir: &Path) -> Result<File, JournalError> {
    let path = dir.join("ledger.journal.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(JournalError::Busy(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(io(&path)(e)),
    }
}

/// The journal being written (by the process that holds its lock).
pub(super) struct Writer {
    /// Each file mapped whole, shared: a store into the map is in the page
    /// cache at once, as a `write` would be, without a system call.
    maps: [MmapMut; 2],
    /// Bytes written in each file.
    ends: [usize; 2],
    /// The last position written in each file, if any.
    last: [Option<u64>; 2],
    active: usize,
    /// [`ROTATE_BYTES`], but for tests.
    rotate_at: usize,
    record: Vec<u8>,
    _lock: File,
}

/// Bytes of each journal file (sparse until written).
const FILE_BYTES: usize = 4 << 20;

impl Writer {
    /// The writer of the journal of `dir`, held by `lock`, whose files
    /// must hold nothing left to recover ([`recoverable`] first): they are
    /// emptied.
    pub(super) fn open(lock: Lock, dir: &Path) -> Result<Writer, JournalError> {
        let paths = paths(dir);
        let open = |path: &Path| -> Result<MmapMut, JournalError> {
            let file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(path)
                .map_err(io(path))?;
            // Written whole now, so that its blocks are allocated: a store
            // into a mapped page without a block behind it would fault
            // (SIGBUS) if the disk filled up; this way a full disk fails here.
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..FILE_BYTES / zeros.len() {
                (&file).write_all(&zeros).map_err(io(path))?;
            }
            // SAFETY: `MmapMut` hands out the mapping as a `&mut [u8]`,
            // which is sound only if nothing else changes the file or its
            // length while it is mapped (the map outlives `file`, closed
            // here; the kernel keeps the mapping). This process created the
            // file in its data directory and holds the journal's exclusive
            // lock (`lock`, kept in the writer) for as long as the map lives, so
            // no other Chasqui process opens it for writing; this writer
            // is its only user in the process (behind the ledger's chain
            // mutex) and never changes its length. A process outside Chasqui that
            // ignores the lock and truncates the file could make a store
            // fault (SIGBUS); that is the same kind of outside damage as
            // deleting `ledger.db`.
            unsafe { MmapOptions::new().len(FILE_BYTES).map_mut(&file) }.map_err(io(path))
        };
        Ok(Writer {
            maps: [open(&paths[0])?, open(&paths[1])?],
            ends: [0, 0],
            last: [None, None],
            active: 0,
            rotate_at: ROTATE_BYTES,
            record: Vec::with_capacity(256),
            _lock: lock.0,
        })
    }

    /// Writes `entry` (the next position); `committed` is the first
    /// position not yet in the store. `Ok(false)` when there is no room
    /// now (the store lags by a whole file: the caller waits for the
    /// entry's commit instead); on an error the journal is unusable.
    pub(super) fn write(&mut self, entry: &Pending, committed: u64) -> Result<bool, JournalError> {
        encode(entry, &mut self.record);
        let other = 1 - self.active;
        let full = self.ends[self.active] + self.record.len() > FILE_BYTES;
        if (full || self.ends[self.active] >= self.rotate_at)
            && self.last[other].is_none_or(|l| l < committed)
        {
            // Everything in the other file is in the store: reuse it.
            self.reuse(other);
            self.active = other;
        }
        let at = self.active;
        let (start, end) = (self.ends[at], self.ends[at] + self.record.len());
        let Some(slot) = self.maps[at].get_mut(start..end) else {
            return Ok(false);
        };
        slot.copy_from_slice(&self.record);
        self.ends[at] = end;
        self.last[at] = Some(entry.position);
        Ok(true)
    }

    /// Empties file `at`: what was written becomes zeros again (in place,
    /// keeping its blocks), so a recovery reads nothing stale after what
    /// is written next.
    fn reuse(&mut self, at: usize) {
        self.maps[at][..self.ends[at]].fill(0);
        self.ends[at] = 0;
        self.last[at] = None;
    }
}

/// The record of `entry`, into `out` (cleared first).
fn encode(entry: &Pending, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&entry.position.to_le_bytes());
    out.extend_from_slice(&entry.at_ms.to_le_bytes());
    for text in [&*entry.kind, &*entry.actor, entry.request_id.as_str()] {
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    match &entry.payload {
        Payload::Json(text) => {
            out.push(0);
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        Payload::Exchange(digest) => {
            out.push(1);
            out.extend_from_slice(digest);
        }
    }
    out.extend_from_slice(&entry.hash);
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
}

/// A reader of one record's fields.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn text(&mut self) -> Option<String> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

/// The records of one file, in order, up to the first that is cut short
/// or unreadable.
fn decode_all(bytes: &[u8]) -> Vec<Pending> {
    let mut entries = Vec::new();
    let mut rest = Fields(bytes);
    while let Some(len) = rest.array::<4>() {
        let Some(record) = rest.take(u32::from_le_bytes(len) as usize) else {
            break;
        };
        match decode(record) {
            Some(entry) => entries.push(entry),
            None => break,
        }
    }
    entries
}

fn decode(record: &[u8]) -> Option<Pending> {
    let mut f = Fields(record);
    let position = u64::from_le_bytes(f.array()?);
    let at_ms = i64::from_le_bytes(f.array()?);
    let kind = f.text()?;
    let actor = f.text()?;
    let request_id = f.text()?;
    let payload = match f.array::<1>()?[0] {
        0 => {
            let len = u32::from_le_bytes(f.array()?) as usize;
            Payload::Json(String::from_utf8(f.take(len)?.to_vec()).ok()?)
        }
        1 => Payload::Exchange(f.array()?),
        _ => return None,
    };
    let hash = f.array()?;
    f.0.is_empty().then_some(Pending {
        position,
        at_ms,
        kind: Cow::Owned(kind),
        actor: Cow::Owned(actor),
        request_id: request_id.into(),
        payload,
        hash,
    })
}

/// The entries journaled in `dir` that continue a chain whose next position
/// is `next` after the hash `last_hash`: in order, each hashing to what it
/// holds, up to the first missing or broken one. `_held` proves that no
/// other process writes it meanwhile.
pub(super) fn recoverable(
    _held: &Lock,
    dir: &Path,
    next: u64,
    last_hash: [u8; 32],
) -> Result<Vec<Pending>, JournalError> {
    let mut journaled = Vec::new();
    for path in paths(dir) {
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut file) => file.read_to_end(&mut bytes).map_err(io(&path))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&path)(e)),
        };
        journaled.extend(decode_all(&bytes));
    }
    journaled.retain(|e| e.position >= next);
    journaled.sort_by_key(|e| e.position);
    let mut chain = Vec::new();
    let mut prev = last_hash;
    for entry in journaled {
        let expected = next + chain.len() as u64;
        if entry.position < expected {
            // The same position in both files: the first one read that chains.
            continue;
        }
        let head = EntryHead {
            position: entry.position,
            at_ms: entry.at_ms,
            kind: &entry.kind,
            actor: &entry.actor,
            request_id: &entry.request_id,
        };
        if entry.position != expected || head.hash(&prev, &entry.payload) != entry.hash {
            break;
        }
        prev = entry.hash;
        chain.push(entry);
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn entry(position: u64, prev: &[u8; 32], payload: Payload) -> Pending {
        let head = EntryHead {
            position,
            at_ms: 1_795_000_000_000 + position as i64,
            kind: if matches!(payload, Payload::Json(_)) {
                "admin.grant.create"
            } else {
                "exchange"
            },
            actor: "gateway",
            request_id: "0123456789abcdef0123456789abcdef",
        };
        let hash = head.hash(prev, &payload);
        Pending {
            position,
            at_ms: head.at_ms,
            kind: Cow::Owned(head.kind.to_string()),
            actor: Cow::Owned(head.actor.to_string()),
            request_id: head.request_id.into(),
            payload,
            hash,
        }
    }

    fn chain(from: u64, count: u64, mut prev: [u8; 32]) -> Vec<Pending> {
        (from..from + count)
            .map(|p| {
                let payload = if p % 10 == 3 {
                    Payload::Json(format!("{{\"n\":{p}}}"))
                } else {
                    Payload::Exchange([p as u8; 32])
                };
                let e = entry(p, &prev, payload);
                prev = e.hash;
                e
            })
            .collect()
    }

    #[test]
    fn journaled_entries_after_the_store_are_recovered_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let entries = chain(0, 40, [0; 32]);
        let mut writer = Writer::open(take(dir.path()).unwrap(), dir.path()).unwrap();
        for e in &entries {
            writer.write(e, 0).unwrap();
        }
        // Nobody else takes the journal while the writer lives.
        assert!(matches!(take(dir.path()), Err(JournalError::Busy(_))));
        drop(writer);
        let held = take(dir.path()).unwrap();
        // The store holds the first 25.
        let got = recoverable(&held, dir.path(), 25, entries[24].hash).unwrap();
        let positions: Vec<u64> = got.iter().map(|e| e.position).collect();
        assert_eq!(positions, (25..40).collect::<Vec<_>>());
        assert!(matches!(&got[8].payload, Payload::Json(t) if t == "{\"n\":33}"));
        // A store whose last hash differs recovers nothing.
        assert!(recoverable(&held, dir.path(), 25, [7; 32])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_record_cut_by_the_crash_ends_the_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let entries = chain(0, 5, [0; 32]);
        let mut writer = Writer::open(take(dir.path()).unwrap(), dir.path()).unwrap();
        for e in &entries {
            assert!(writer.write(e, 0).unwrap());
        }
        let end = writer.ends[0] as u64;
        drop(writer);
        let path = dir.path().join("ledger.journal.0");
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(end - 3).unwrap();
        let held = take(dir.path()).unwrap();
        let got = recoverable(&held, dir.path(), 0, [0; 32]).unwrap();
        assert_eq!(got.len(), 4);
        // A changed byte breaks the chain at that entry.
        file.write_all_at(&[0xff], 30).unwrap();
        assert!(recoverable(&held, dir.path(), 0, [0; 32])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn the_files_rotate_once_the_other_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Writer::open(take(dir.path()).unwrap(), dir.path()).unwrap();
        writer.rotate_at = 1;
        let entries = chain(0, 4, [0; 32]);
        writer.write(&entries[0], 0).unwrap();
        // File 1 is empty: the writer turns to it.
        writer.write(&entries[1], 0).unwrap();
        assert_eq!(writer.active, 1);
        // Entry 0, in file 0, is not committed: file 1 keeps growing.
        writer.write(&entries[2], 0).unwrap();
        assert_eq!(writer.active, 1);
        // Now it is: file 0 is emptied and written again.
        writer.write(&entries[3], 1).unwrap();
        assert_eq!(writer.active, 0);
        drop(writer);
        let held = take(dir.path()).unwrap();
        let got = recoverable(&held, dir.path(), 1, entries[0].hash).unwrap();
        let positions: Vec<u64> = got.iter().map(|e| e.position).collect();
        assert_eq!(positions, [1, 2, 3]);
    }

    #[test]
    fn a_journal_the_store_lags_a_whole_file_behind_takes_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Writer::open(take(dir.path()).unwrap(), dir.path()).unwrap();
        writer.rotate_at = 1;
        let entries = chain(0, 2, [0; 32]);
        assert!(writer.write(&entries[0], 0).unwrap());
        assert!(writer.write(&entries[1], 0).unwrap());
        assert_eq!(writer.active, 1);
        // Entry 0 is never committed: file 1 fills up, then there is no room.
        let mut written = 0;
        while writer.write(&entries[1], 0).unwrap() {
            written += 1;
        }
        assert!(written > 1000);
        assert_eq!(writer.active, 1);
        // Once entry 0 is committed, file 0 is emptied and taken.
        assert!(writer.write(&entries[1], 1).unwrap());
        assert_eq!((writer.active, writer.ends[0] > 0), (0, true));
    }
}
