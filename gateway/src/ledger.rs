//! The audit ledger: an append-only record of evidence in which each entry
//! carries the hash of the one before, with checkpoints signed by the node's
//! Ed25519 key.
//!
//! Appending is cheap and happens on the request path: the position and
//! hash are assigned in memory, under one lock, and the entry waits in a
//! queue that a flusher writes to the store in one transaction every
//! [`FLUSH_EVERY`] (or sooner when [`Ledger::flush`] is called, as at
//! shutdown).
//!
//! Every exchange of the data plane is appended too (kind `exchange`, a
//! digest of its operational record, [`exchange_digest`]), at the moment its
//! answer's head is about to be written. How that interacts with a crash is
//! the [`Durability`] setting (`ledger_durability`):
//!
//! - `strict` (the default): before the answer is sent, its entry (and
//!   every other entry) is written to the ledger's journal ([`journal`]:
//!   a copy into a shared map of the file, so into the page cache: no
//!   system call and no wait for a commit); the store
//!   gets it with the next batch. **A SIGKILL loses no acknowledged
//!   exchange**: what the store had not committed is recovered from the
//!   journal, checked against the chain, at the next start or before an
//!   offline `audit` command. Like SQLite's WAL with `synchronous = NORMAL`,
//!   this holds across a crash of the process, not across a power loss. If
//!   the journal cannot be written, answers wait for the (group) commit of
//!   their entry instead ([`Ledger::commit_exchange`]).
//! - `batched`: no journal; a crash may lose the entries appended since
//!   the last committed write: the last flush period ([`FLUSH_EVERY`]) plus
//!   the write in progress, acknowledged exchanges included (in the crash
//!   test, a debug build on two loaded cores, the oldest lost exchange had
//!   been answered 101 ms before the kill).
//!
//! Other entries (admin actions, plugin evidence) are journaled too under
//! `strict`, and follow the batched rule otherwise.
//!
//! Storage: entries are rows of `ledger_log`, except the exchanges of one
//! write, which share a row of `ledger_runs` (up to 256 entries of 93
//! bytes, see [`runs`]); readers merge the two by position, and the view
//! `ledger_entries` shows every entry as it is hashed.
//!
//! [`verify`] checks a ledger offline and names the first entry that was
//! altered, removed or moved, and any checkpoint whose signature or hash
//! does not match.

mod export;
mod journal;
mod runs;

pub use crate::{hex, hex_into};
use chasqui_catalog::appender::{AppendError, Appender};
pub use export::{export, verify_export, ExportError, ExportSummary};
pub use journal::JournalError;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use smol_str::SmolStr;
use sqlx::{Row, SqlitePool};
use std::borrow::Cow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// How often queued entries are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// A checkpoint is signed after this many entries (or [`CHECKPOINT_AFTER`]).
const CHECKPOINT_ENTRIES: u64 = 1_000;
/// ...or after this long with unsigned entries.
const CHECKPOINT_AFTER: Duration = Duration::from_secs(10);
const MAX_PAYLOAD: usize = 64 << 10;
/// How many times a strict commit lets the runtime's ready tasks run
/// first, while each round adds entries to it.
const MAX_COMMIT_YIELDS: usize = 4;
/// Entries per INSERT statement (8 parameters each, far below SQLite's limit).
const ROWS_PER_INSERT: usize = 100;
const DOMAIN: &[u8] = b"chasqui-ledger-checkpoint";
/// How long a start waits for the journal held by a gateway still exiting.
const JOURNAL_WAIT: Duration = Duration::from_secs(10);

/// What a crash may lose of the exchanges appended to the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// An answer is sent once its exchange's entry is in the journal (or,
    /// without one, committed): a crash of the process loses no
    /// acknowledged exchange.
    #[default]
    Strict,
    /// Entries are written every [`FLUSH_EVERY`]; a crash may lose that
    /// period's entries.
    Batched,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strict" => Ok(Durability::Strict),
            "batched" => Ok(Durability::Batched),
            other => Err(format!(
                "ledger_durability `{other}` is not one of strict, batched"
            )),
        }
    }
}

/// Where an appended entry sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The entry's position.
    pub position: u64,
    /// Its chained hash, lowercase hex.
    pub hash: String,
}

/// Why an append or a flush failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The entry breaks a rule (kind, payload).
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error("ledger storage failed: {0}")]
    Store(#[from] sqlx::Error),
    /// The append connection failed.
    #[error("ledger storage failed: {0}")]
    Append(#[from] AppendError),
    /// The node key could not be read or made.
    #[error("ledger key: {0}")]
    Key(String),
    /// The journal could not be used.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

struct Pending {
    position: u64,
    at_ms: i64,
    kind: Cow<'static, str>,
    actor: Cow<'static, str>,
    /// Shared with the request's context for an exchange (no copy).
    request_id: SmolStr,
    payload: Payload,
    hash: [u8; 32],
}

/// What an entry says: JSON text, or an exchange's digest, stored as its 32
/// bytes and hashed as the JSON text [`exchange_payload_of`] makes of it.
enum Payload {
    Json(String),
    Exchange([u8; 32]),
}

impl Payload {
    /// The `payload` and `digest` columns of `ledger_log`.
    fn columns(&self) -> (Option<&str>, Option<&[u8]>) {
        match self {
            Payload::Json(text) => (Some(text), None),
            Payload::Exchange(digest) => (None, Some(digest)),
        }
    }

    /// The payload read back from its columns; `None` when neither holds
    /// what it should (a row altered in the store).
    fn from_columns(text: Option<String>, digest: Option<Vec<u8>>) -> Option<Payload> {
        match (text, digest) {
            (Some(text), None) => Some(Payload::Json(text)),
            (None, Some(digest)) => digest.try_into().ok().map(Payload::Exchange),
            _ => None,
        }
    }
}

struct Chain {
    next: u64,
    last_hash: [u8; 32],
    queue: Vec<Pending>,
    /// Told when the entries queued so far are committed.
    waiters: Vec<oneshot::Sender<()>>,
    unsigned: u64,
    last_checkpoint: Instant,
    /// The first position not yet committed to the store.
    committed: u64,
    /// The journal every entry is written to before it is queued (strict
    /// durability), when there is one.
    journal: Option<journal::Writer>,
}

/// Where an entry was put by [`Ledger::enqueue`].
struct Queued {
    position: u64,
    hash: [u8; 32],
    /// Told when the entry is committed, when that was asked for and the
    /// entry is not journaled.
    wait: Option<oneshot::Receiver<()>>,
    /// Whether the journal holds it (it survives a crash of the process).
    journaled: bool,
}

/// The ledger of one node.
pub struct Ledger {
    chain: Mutex<Chain>,
    /// Serialises flushes so batches are written in order.
    flushing: tokio::sync::Mutex<()>,
    pool: SqlitePool,
    /// The append connection of the ledger's file, when it has one: entries
    /// are written through it rather than through `pool`.
    appender: Option<Arc<Appender>>,
    key: Ed25519KeyPair,
    public_hex: String,
    /// Transactions that committed entries, and the entries they held: how
    /// well group commit groups (exposed as Prometheus counters).
    commits: AtomicU64,
    entries_written: AtomicU64,
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The chained hash of an entry.
pub fn entry_hash(
    prev: &[u8; 32],
    position: u64,
    at_ms: i64,
    kind: &str,
    actor: &str,
    request_id: &str,
    payload: &str,
) -> [u8; 32] {
    let head = EntryHead {
        position,
        at_ms,
        kind,
        actor,
        request_id,
    };
    let mut h = head.hasher(prev);
    hash_field(&mut h, payload.as_bytes());
    h.finish()
}

/// The fields of an entry hashed after the previous hash and before the
/// payload.
struct EntryHead<'a> {
    position: u64,
    at_ms: i64,
    kind: &'a str,
    actor: &'a str,
    request_id: &'a str,
}

impl EntryHead<'_> {
    /// The hash state of the entry after `prev`, up to its payload.
    fn hasher(&self, prev: &[u8; 32]) -> Sha256 {
        let mut h = Sha256::new();
        h.update(prev);
        h.update(self.position.to_be_bytes());
        h.update(self.at_ms.to_be_bytes());
        for field in [self.kind, self.actor, self.request_id] {
            hash_field(&mut h, field.as_bytes());
        }
        h
    }

    /// [`entry_hash`] of the entry with a stored payload: an exchange's JSON
    /// text is hashed piece by piece, never built.
    fn hash(&self, prev: &[u8; 32], payload: &Payload) -> [u8; 32] {
        let mut h = self.hasher(prev);
        match payload {
            Payload::Json(text) => hash_field(&mut h, text.as_bytes()),
            Payload::Exchange(digest) => {
                let mut digits = [0u8; 64];
                let digits = hex_into(digest, &mut digits);
                let (head, tail) = exchange_payload_parts();
                let len = head.len() + digits.len() + tail.len();
                h.update((len as u64).to_be_bytes());
                h.update(head);
                h.update(digits);
                h.update(tail);
            }
        }
        h.finish()
    }
}

/// SHA-256 as the ledger computes it on the request path: ring's
/// implementation, whose assembly uses the CPU's vector units (or its SHA
/// extensions) where present. The portable code of `sha2` took about a fifth
/// of a call's instructions on CPUs without SHA extensions (bench/README.md,
/// tenth session); the digests are the same.
struct Sha256(ring::digest::Context);

impl Sha256 {
    fn new() -> Sha256 {
        Sha256(ring::digest::Context::new(&ring::digest::SHA256))
    }

    fn update(&mut self, data: impl AsRef<[u8]>) {
        self.0.update(data.as_ref());
    }

    fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

/// A field hashed after its length: length prefixes keep field boundaries
/// unambiguous.
fn hash_field(h: &mut Sha256, field: &[u8]) {
    h.update((field.len() as u64).to_be_bytes());
    h.update(field);
}

fn checkpoint_message(position: u64, hash: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 8 + hash.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&position.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Loads the node's Ed25519 key from `path`, creating it (0600) if absent.
fn node_key(path: &Path) -> Result<Ed25519KeyPair, LedgerError> {
    let key_err = |e: String| LedgerError::Key(format!("{}: {e}", path.display()));
    if !path.exists() {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|e| key_err(e.to_string()))?;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| key_err(e.to_string()))?;
        f.write_all(pkcs8.as_ref())
            .map_err(|e| key_err(e.to_string()))?;
    }
    let bytes = std::fs::read(path).map_err(|e| key_err(e.to_string()))?;
    Ed25519KeyPair::from_pkcs8(&bytes).map_err(|e| key_err(e.to_string()))
}

impl Ledger {
    /// Opens the ledger in the store, continuing its chain, with the node
    /// key at `key_path`.
    pub async fn open(pool: SqlitePool, key_path: &Path) -> Result<Arc<Ledger>, LedgerError> {
        Self::open_appending(pool, None, key_path).await
    }

    /// [`Ledger::open`], writing entries through `appender` (an append
    /// connection to the same file as `pool`) when there is one.
    pub async fn open_appending(
        pool: SqlitePool,
        appender: Option<Arc<Appender>>,
        key_path: &Path,
    ) -> Result<Arc<Ledger>, LedgerError> {
        let key = node_key(key_path)?;
        let (next, last_hash) = match last_entry(&pool).await? {
            Some(last) => {
                let last_hash: [u8; 32] = last.hash.try_into().map_err(|_| {
                    LedgerError::Invalid(format!(
                        "the stored hash of entry {} is not a SHA-256",
                        last.position
                    ))
                })?;
                (last.position + 1, last_hash)
            }
            None => (0, [0u8; 32]),
        };
        let public_hex = hex(key.public_key().as_ref());
        Ok(Arc::new(Ledger {
            chain: Mutex::new(Chain {
                next,
                last_hash,
                queue: Vec::new(),
                waiters: Vec::new(),
                unsigned: 0,
                last_checkpoint: Instant::now(),
                committed: next,
                journal: None,
            }),
            flushing: tokio::sync::Mutex::new(()),
            pool,
            appender,
            key,
            public_hex,
            commits: AtomicU64::new(0),
            entries_written: AtomicU64::new(0),
        }))
    }

    /// [`Ledger::open_appending`] with a journal in `journal_dir` (strict
    /// durability, see [`journal`]): entries journaled by a run that
    /// crashed are recovered into the store first, then every entry is
    /// journaled before it is queued, and a strict answer need not wait for
    /// its commit. Fails if another process still holds the journal after
    /// [`JOURNAL_WAIT`].
    pub async fn open_journaled(
        pool: SqlitePool,
        appender: Option<Arc<Appender>>,
        key_path: &Path,
        journal_dir: &Path,
    ) -> Result<Arc<Ledger>, LedgerError> {
        // A gateway killed just before this start may not be gone yet.
        let started = Instant::now();
        let held = loop {
            match journal::take(journal_dir) {
                Err(JournalError::Busy(_)) if started.elapsed() < JOURNAL_WAIT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                taken => break taken?,
            }
        };
        let recovered = recover_held(&pool, &held, journal_dir).await?;
        if recovered > 0 {
            tracing::warn!(entries = recovered, "recovered ledger entries from the journal of a run that stopped without committing them");
        }
        // The chain continues from the store, recovered entries included.
        let ledger = Self::open_appending(pool, appender, key_path).await?;
        // Only now that the store holds them: opening empties the files.
        let writer = journal::Writer::open(held, journal_dir)?;
        ledger
            .chain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .journal = Some(writer);
        Ok(ledger)
    }

    /// Appends an entry after checking its kind and payload; its position
    /// and hash are final at once.
    pub fn append(
        &self,
        kind: &str,
        actor: &str,
        request_id: &str,
        payload_json: &str,
    ) -> Result<Receipt, LedgerError> {
        let kind_ok = !kind.is_empty()
            && kind.len() <= 64
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_".contains(&b));
        if !kind_ok {
            return Err(LedgerError::Invalid(format!(
                "kind `{}` must be [a-z0-9._-], 1 to 64 bytes",
                kind.escape_debug()
            )));
        }
        if payload_json.len() > MAX_PAYLOAD {
            return Err(LedgerError::Invalid(format!(
                "payload of {} bytes exceeds {MAX_PAYLOAD}",
                payload_json.len()
            )));
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(payload_json).is_err() {
            return Err(LedgerError::Invalid("payload is not JSON".into()));
        }
        let queued = self.enqueue(
            Cow::Owned(kind.to_string()),
            Cow::Owned(actor.to_string()),
            SmolStr::new(request_id),
            Payload::Json(payload_json.to_string()),
            false,
        );
        Ok(Receipt {
            position: queued.position,
            hash: hex(&queued.hash),
        })
    }

    /// Appends the entry of one exchange of the data plane (kind
    /// [`EXCHANGE_KIND`], actor [`EXCHANGE_ACTOR`], payload
    /// [`exchange_payload`] of its digest), written with the next flush
    /// (batched durability; [`Ledger::commit_exchange`] waits for it). The
    /// request path's append: its payload is known to be valid JSON and no
    /// receipt is made.
    pub fn append_exchange(&self, request_id: &SmolStr, digest: &[u8; 32]) {
        self.enqueue(
            Cow::Borrowed(EXCHANGE_KIND),
            Cow::Borrowed(EXCHANGE_ACTOR),
            request_id.clone(),
            Payload::Exchange(*digest),
            false,
        );
    }

    /// Chains a checked entry, journals it when there is a journal, and
    /// queues it.
    fn enqueue(
        &self,
        kind: Cow<'static, str>,
        actor: Cow<'static, str>,
        request_id: SmolStr,
        payload: Payload,
        wait: bool,
    ) -> Queued {
        let at_ms = now_ms();
        let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        let position = chain.next;
        let head = EntryHead {
            position,
            at_ms,
            kind: &kind,
            actor: &actor,
            request_id: &request_id,
        };
        let hash = head.hash(&chain.last_hash, &payload);
        let entry = Pending {
            position,
            at_ms,
            kind,
            actor,
            request_id,
            payload,
            hash,
        };
        let committed = chain.committed;
        let journaled = match chain.journal.as_mut().map(|j| j.write(&entry, committed)) {
            Some(Ok(written)) => written,
            Some(Err(e)) => {
                // Answers wait for their commits from now on, as without a
                // journal: slower, never less safe.
                tracing::error!(error = %e, "the ledger journal failed; strict answers wait for commits");
                chain.journal = None;
                false
            }
            None => false,
        };
        chain.queue.push(entry);
        chain.next += 1;
        chain.last_hash = hash;
        let wait = (wait && !journaled).then(|| {
            let (tx, rx) = oneshot::channel();
            chain.waiters.push(tx);
            rx
        });
        drop(chain);
        Queued {
            position,
            hash,
            wait,
            journaled,
        }
    }

    /// Writes every queued entry (and a checkpoint when one is due) in one
    /// transaction; returns how many entries were written.
    pub async fn flush(&self) -> Result<usize, LedgerError> {
        let order = self.flushing.lock().await;
        self.flush_locked(order).await
    }

    /// Appends the entry of one exchange and returns once it is journaled
    /// (at once) or, without a journal, committed; `false` when it was not
    /// within `within` (strict durability).
    ///
    /// Without a journal: group commit without a helper thread: the caller waits for the write
    /// lock; whoever gets it first writes everything queued by then (its
    /// own entry and those of every request that appended meanwhile), and
    /// the others find theirs already committed when their turn comes. All
    /// of it runs on the caller's runtime: waking the background flusher
    /// for each answer cost two thread switches per commit on the same
    /// core, and commits held one or two entries each.
    pub async fn commit_exchange(
        &self,
        request_id: &SmolStr,
        digest: &[u8; 32],
        within: Duration,
    ) -> bool {
        let queued = self.enqueue(
            Cow::Borrowed(EXCHANGE_KIND),
            Cow::Borrowed(EXCHANGE_ACTOR),
            request_id.clone(),
            Payload::Exchange(*digest),
            true,
        );
        if queued.journaled {
            // In the journal: a crash of the process cannot lose it.
            return true;
        }
        let Some(mut committed) = queued.wait else {
            return false;
        };
        let deadline = tokio::time::Instant::now() + within;
        let leader = async {
            let order = self.flushing.lock().await;
            if committed.try_recv().is_ok() {
                return true;
            }
            // Let the tasks that are ready on this runtime run first: those
            // about to answer append their entries now and join this write.
            // Under load this multiplies the entries per commit; alone, it
            // returns at once.
            let mut queued = self.queued();
            for _ in 0..MAX_COMMIT_YIELDS {
                tokio::task::yield_now().await;
                let now = self.queued();
                if now == queued {
                    break;
                }
                queued = now;
            }
            match self.flush_locked(order).await {
                Ok(_) => committed.try_recv().is_ok(),
                Err(e) => {
                    tracing::error!(error = %e, "ledger write failed; the flusher will retry");
                    false
                }
            }
        };
        match tokio::time::timeout_at(deadline, leader).await {
            Ok(true) => true,
            // The write failed: the entry is back in the queue, and the
            // background flusher retries it every FLUSH_EVERY.
            Ok(false) => matches!(
                tokio::time::timeout_at(deadline, committed).await,
                Ok(Ok(()))
            ),
            Err(_) => false,
        }
    }

    /// Entries waiting to be written.
    fn queued(&self) -> usize {
        self.chain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .queue
            .len()
    }

    /// [`Ledger::flush`] with the write lock held.
    async fn flush_locked(
        &self,
        _order: tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<usize, LedgerError> {
        let (batch, waiters, checkpoint) = {
            let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
            let batch = std::mem::take(&mut chain.queue);
            let waiters = std::mem::take(&mut chain.waiters);
            chain.unsigned += batch.len() as u64;
            let due = chain.unsigned > 0
                && (chain.unsigned >= CHECKPOINT_ENTRIES
                    || chain.last_checkpoint.elapsed() >= CHECKPOINT_AFTER);
            // Also when nothing new came in: a quiet ledger still gets its
            // last entries signed once they are old enough.
            let checkpoint = due.then(|| (chain.next - 1, chain.last_hash));
            (batch, waiters, checkpoint)
        };
        if batch.is_empty() && checkpoint.is_none() {
            return Ok(0);
        }
        let (batch, written) = self.write(batch, checkpoint).await;
        match written {
            Ok(()) => {
                if checkpoint.is_some() || !batch.is_empty() {
                    let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
                    if checkpoint.is_some() {
                        chain.unsigned = 0;
                        chain.last_checkpoint = Instant::now();
                    }
                    if let Some(last) = batch.last() {
                        // Batches are written in order (the flushing lock).
                        chain.committed = last.position + 1;
                    }
                }
                for waiter in waiters {
                    let _ = waiter.send(());
                }
                if !batch.is_empty() {
                    self.commits.fetch_add(1, Ordering::Relaxed);
                    self.entries_written
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                Ok(batch.len())
            }
            Err(e) => {
                // Put the batch back in front, in order, for the next flush;
                // its waiters keep waiting for that one.
                let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
                let newer = std::mem::replace(&mut chain.queue, batch);
                chain.queue.extend(newer);
                let newer = std::mem::replace(&mut chain.waiters, waiters);
                chain.waiters.extend(newer);
                Err(e)
            }
        }
    }

    /// Transactions that committed entries since start, and the entries
    /// they held.
    pub fn commit_counts(&self) -> (u64, u64) {
        (
            self.commits.load(Ordering::Relaxed),
            self.entries_written.load(Ordering::Relaxed),
        )
    }

    /// Signs a checkpoint now over everything appended so far, then flushes.
    pub async fn checkpoint(&self) -> Result<(), LedgerError> {
        {
            let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
            // Nothing unsigned and nothing queued: the last checkpoint
            // already covers everything.
            if chain.unsigned > 0 || !chain.queue.is_empty() {
                chain.unsigned = chain.unsigned.max(CHECKPOINT_ENTRIES);
            }
        }
        self.flush().await.map(|_| ())
    }

    /// Writes `batch` (and the checkpoint, signed here) in one transaction;
    /// hands the batch back, written or not (a failed one is queued again).
    async fn write(
        &self,
        batch: Vec<Pending>,
        checkpoint: Option<(u64, [u8; 32])>,
    ) -> (Vec<Pending>, Result<(), LedgerError>) {
        let checkpoint = checkpoint.map(|(position, hash)| CheckpointRow {
            position,
            hash: hex(&hash),
            at_ms: now_ms(),
            public_key: self.public_hex.clone(),
            signature: hex(self.key.sign(&checkpoint_message(position, &hash)).as_ref()),
        });
        let Some(appender) = &self.appender else {
            let written = self.write_pooled(&batch, checkpoint.as_ref()).await;
            return (batch, written);
        };
        let (give_back, given) = oneshot::channel();
        let written = appender
            .write(move |tx| {
                let written = append_entries(tx, &batch, checkpoint.as_ref());
                let _ = give_back.send(batch);
                written
            })
            .await;
        (
            given.await.unwrap_or_default(),
            written.map_err(LedgerError::from),
        )
    }

    /// [`Ledger::write`] through the sqlx pool (a ledger without an append
    /// connection: opened with [`Ledger::open`]).
    async fn write_pooled(
        &self,
        batch: &[Pending],
        checkpoint: Option<&CheckpointRow>,
    ) -> Result<(), LedgerError> {
        write_to_pool(&self.pool, batch, checkpoint).await
    }

    /// Flushes every [`FLUSH_EVERY`], on the current runtime, forever.
    pub fn spawn_flusher(self: &Arc<Self>) {
        let ledger = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = ledger.flush().await {
                    tracing::error!(error = %e, "ledger flush failed; will retry");
                }
            }
        });
    }
}

/// Writes `batch` and the checkpoint through `pool` (one statement, or one
/// transaction).
async fn write_to_pool(
    pool: &SqlitePool,
    batch: &[Pending],
    checkpoint: Option<&CheckpointRow>,
) -> Result<(), LedgerError> {
    // Many rows per statement: with every exchange in the ledger a batch
    // holds hundreds of entries, and one statement each would make the
    // write (and so a strict answer's wait) several times longer.
    let pieces = runs::pieces(batch, ROWS_PER_INSERT);
    let statements: Vec<(String, Vec<u8>)> = pieces.iter().map(piece_statement).collect();
    let queries = pieces
        .iter()
        .zip(&statements)
        .map(|(p, s)| piece_query(p, s));
    if let (1, None) = (pieces.len(), checkpoint) {
        // One statement is its own transaction: one round trip to the
        // connection's worker thread instead of three (BEGIN, INSERT,
        // COMMIT), on the path every strict answer waits for.
        for query in queries {
            query.execute(pool).await?;
        }
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for query in queries {
        query.execute(&mut *tx).await?;
    }
    if let Some(c) = checkpoint {
        sqlx::query(CHECKPOINT_INSERT)
            .bind(c.position as i64)
            .bind(&c.hash)
            .bind(c.at_ms)
            .bind(&c.public_key)
            .bind(&c.signature)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// `INSERT INTO ledger_log ... VALUES (...), ...` for `rows` entries.
/// The placeholders are anonymous: sqlx binds a numbered one (`$N`) by
/// asking SQLite for its name, which SQLite finds by a linear scan of the
/// statement's names, so 800 numbered parameters cost O(n^2) per statement
/// (a third of the gateway's CPU under load, measured).
fn entries_insert(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO ledger_log (position, at_ms, kind, actor, request_id, payload, digest, hash) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?)");
    }
    sql
}

const RUN_INSERT: &str = "INSERT INTO ledger_runs (first_position, body) VALUES (?1, ?2)";

/// The SQL text and the run body (empty for rows) that store `piece`.
fn piece_statement(piece: &runs::Piece<'_>) -> (String, Vec<u8>) {
    match piece {
        runs::Piece::Rows(rows) => (entries_insert(rows.len()), Vec::new()),
        runs::Piece::Run(entries) => {
            let mut body = Vec::new();
            runs::encode(entries, &mut body);
            (RUN_INSERT.to_string(), body)
        }
    }
}

/// The query that stores `piece` through the pool, with its statement made
/// by [`piece_statement`].
fn piece_query<'q>(
    piece: &runs::Piece<'q>,
    (sql, body): &'q (String, Vec<u8>),
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    match piece {
        runs::Piece::Rows(rows) => {
            let mut query = sqlx::query(sql);
            for e in rows.iter() {
                let (text, digest) = e.payload.columns();
                query = query
                    .bind(e.position as i64)
                    .bind(e.at_ms)
                    .bind(&*e.kind)
                    .bind(&*e.actor)
                    .bind(e.request_id.as_str())
                    .bind(text)
                    .bind(digest)
                    .bind(&e.hash[..]);
            }
            query
        }
        runs::Piece::Run(entries) => sqlx::query(sql)
            .bind(entries[0].position as i64)
            .bind(&body[..]),
    }
}

/// A signed checkpoint, as stored.
struct CheckpointRow {
    position: u64,
    hash: String,
    at_ms: i64,
    public_key: String,
    signature: String,
}

const CHECKPOINT_INSERT: &str =
    "INSERT INTO ledger_checkpoints (position, hash, at_ms, public_key, signature) \
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (position) DO NOTHING";

/// Inserts `batch` (its exchanges in runs, other entries one prepared row
/// at a time) and the checkpoint, in the append connection's transaction.
fn append_entries(
    tx: &rusqlite::Transaction<'_>,
    batch: &[Pending],
    checkpoint: Option<&CheckpointRow>,
) -> rusqlite::Result<()> {
    let mut body = Vec::new();
    for piece in runs::pieces(batch, usize::MAX) {
        match piece {
            runs::Piece::Rows(rows) => {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO ledger_log (position, at_ms, kind, actor, request_id, payload, digest, hash) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for e in rows {
                    let (text, digest) = e.payload.columns();
                    insert.execute(rusqlite::params![
                        e.position as i64,
                        e.at_ms,
                        &*e.kind,
                        &*e.actor,
                        e.request_id.as_str(),
                        text,
                        digest,
                        &e.hash[..],
                    ])?;
                }
            }
            runs::Piece::Run(entries) => {
                runs::encode(entries, &mut body);
                tx.prepare_cached(RUN_INSERT)?
                    .execute(rusqlite::params![entries[0].position as i64, &body[..]])?;
            }
        }
    }
    if let Some(c) = checkpoint {
        tx.prepare_cached(CHECKPOINT_INSERT)?
            .execute(rusqlite::params![
                c.position as i64,
                c.hash,
                c.at_ms,
                c.public_key,
                c.signature,
            ])?;
    }
    Ok(())
}

/// The kind of the entry of an exchange of the data plane.
pub const EXCHANGE_KIND: &str = "exchange";
/// The actor of an exchange's entry: the gateway itself.
pub const EXCHANGE_ACTOR: &str = "gateway";

/// Version of the canonical encoding hashed by [`exchange_digest`].
pub const EXCHANGE_DIGEST_VERSION: u8 = 1;

/// The SHA-256 of the canonical encoding of an exchange's operational
/// record: the fields known when the answer's head is written (request and
/// trace id, consumer entity and system, service, environment, method,
/// route template, status, request bytes, the received, sent-upstream and
/// upstream-answered times). The response size and the end time are not in
/// it: they are known only after the answer was sent, and the entry must be
/// committed before. Each field is length-prefixed (text) or fixed-width
/// big-endian (numbers, with a presence byte for optional ones), so two
/// different records never encode alike. Recomputable from `GET /records`.
pub fn exchange_digest(r: &chasqui_catalog::oprecords::OperationalRecord) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"chasqui-exchange");
    h.update([EXCHANGE_DIGEST_VERSION]);
    let trace = r.trace_id.as_deref().unwrap_or_default();
    for field in [
        r.request_id.as_str(),
        trace,
        &r.consumer_entity,
        &r.consumer_system,
        &r.service,
        &r.environment,
        &r.method,
        &r.route,
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.update(r.status.to_be_bytes());
    h.update(r.request_bytes.to_be_bytes());
    h.update(r.received_at_us.to_be_bytes());
    for at in [r.sent_upstream_at_us, r.upstream_answered_at_us] {
        match at {
            Some(t) => {
                h.update([1]);
                h.update(t.to_be_bytes());
            }
            None => h.update([0]),
        }
    }
    h.finish()
}

/// The ledger payload of an exchange: `{"digest":"<hex>","v":1}`.
pub fn exchange_payload(r: &chasqui_catalog::oprecords::OperationalRecord) -> String {
    exchange_payload_of(&exchange_digest(r))
}

/// [`exchange_payload`] of a digest already computed.
fn exchange_payload_of(digest: &[u8; 32]) -> String {
    let (head, tail) = exchange_payload_parts();
    let mut digits = [0u8; 64];
    let mut text = String::with_capacity(head.len() + 64 + tail.len());
    text.push_str(head);
    text.push_str(hex_into(digest, &mut digits));
    text.push_str(tail);
    text
}

/// The text of an exchange's payload before and after the digest's hex:
/// the migration of `ledger_entries` (0016) builds the same text in SQL.
fn exchange_payload_parts() -> (&'static str, &'static str) {
    // The version is 1: a change of it changes this text.
    const _: () = assert!(EXCHANGE_DIGEST_VERSION == 1);
    ("{\"digest\":\"", "\",\"v\":1}")
}

/// The result of checking a ledger.
#[derive(Debug, Default)]
pub struct Verification {
    /// Entries read.
    pub entries: u64,
    /// Checkpoints whose signature and hash matched.
    pub checkpoints: u64,
    /// The first problem found, if any.
    pub problem: Option<String>,
    /// The last entry a verified checkpoint covers.
    pub covered_to: Option<u64>,
}

/// The columns of `ledger_log` that [`StoredEntry::read`] reads, in order.
const ENTRY_COLUMNS: &str = "position, at_ms, kind, actor, request_id, payload, digest, hash";

/// An entry as the store holds it (possibly altered there).
struct StoredEntry {
    position: u64,
    at_ms: i64,
    kind: String,
    actor: String,
    request_id: String,
    /// `None` when neither payload column holds what it should.
    payload: Option<Payload>,
    /// The stored hash (32 bytes unless altered).
    hash: Vec<u8>,
}

impl StoredEntry {
    /// Reads a row selected with [`ENTRY_COLUMNS`].
    fn read(row: &sqlx::sqlite::SqliteRow) -> Result<StoredEntry, sqlx::Error> {
        Ok(StoredEntry {
            position: row.try_get::<i64, _>(0)? as u64,
            at_ms: row.try_get(1)?,
            kind: row.try_get(2)?,
            actor: row.try_get(3)?,
            request_id: row.try_get(4)?,
            payload: Payload::from_columns(row.try_get(5)?, row.try_get(6)?),
            hash: row.try_get(7)?,
        })
    }

    /// Its hash recomputed as if it followed `prev` at `position`; `None`
    /// when its payload is unreadable.
    fn hash_at(&self, prev: &[u8; 32], position: u64) -> Option<[u8; 32]> {
        let payload = self.payload.as_ref()?;
        let head = EntryHead {
            position,
            at_ms: self.at_ms,
            kind: &self.kind,
            actor: &self.actor,
            request_id: &self.request_id,
        };
        Some(head.hash(prev, payload))
    }

    /// Whether its stored hash is what it hashes to after `prev`.
    fn follows(&self, prev: &[u8; 32]) -> bool {
        self.hash_at(prev, self.position)
            .is_some_and(|h| h[..] == self.hash[..])
    }
}

/// Entries [`verify`] reads per query: the ledger is walked page by page,
/// never held whole in memory.
const VERIFY_PAGE: i64 = 4_096;

/// Whether `entry`, which does not follow the chain at its position, is an
/// entry of a nearby position moved there: its stored hash is what it
/// hashes to at another position after one of the hashes `near` it (a swap
/// of two rows leaves each one's predecessor's hash a row away).
fn was_moved(entry: &StoredEntry, near: &[[u8; 32]]) -> bool {
    let p = entry.position;
    (p.saturating_sub(2)..=p + 2).filter(|&q| q != p).any(|q| {
        near.iter().any(|prev| {
            entry
                .hash_at(prev, q)
                .is_some_and(|h| h[..] == entry.hash[..])
        })
    })
}

/// A checkpoint as stored, and whether its signature verified.
struct StoredCheckpoint {
    position: u64,
    hash: String,
    signed: bool,
}

impl StoredCheckpoint {
    /// A checkpoint whose signature is checked here: valid for `public_key`
    /// (hex), and by the key `pinned` when one is given.
    fn checked(
        position: u64,
        hash: String,
        public_key: &str,
        signature: &str,
        pinned: Option<&str>,
    ) -> StoredCheckpoint {
        let key_ok = pinned.is_none_or(|k| k.eq_ignore_ascii_case(public_key));
        let signed = key_ok
            && match (unhex(&hash), unhex(public_key), unhex(signature)) {
                (Some(h), Some(pk), Some(sig)) => UnparsedPublicKey::new(&ED25519, pk)
                    .verify(&checkpoint_message(position, &h), &sig)
                    .is_ok(),
                _ => false,
            };
        StoredCheckpoint {
            position,
            hash,
            signed,
        }
    }
}

/// Reads every checkpoint and checks its signature.
async fn read_checkpoints(pool: &SqlitePool) -> Result<Vec<StoredCheckpoint>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT position, hash, public_key, signature FROM ledger_checkpoints ORDER BY position",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let (public_key, signature): (String, String) = (row.try_get(2)?, row.try_get(3)?);
            Ok(StoredCheckpoint::checked(
                row.try_get::<i64, _>(0)? as u64,
                row.try_get(1)?,
                &public_key,
                &signature,
                None,
            ))
        })
        .collect()
}

/// The check of a chain of entries given in order (from the store a page at
/// a time, or from an export), against the checkpoints over it.
struct ChainWalk<'c> {
    checkpoints: &'c [StoredCheckpoint],
    /// The signed checkpoints' hashes by position, removed when matched.
    unmatched: std::collections::BTreeMap<u64, &'c str>,
    /// The hashes of the last two entries that followed the chain.
    behind: std::collections::VecDeque<[u8; 32]>,
    expected: u64,
    report: Verification,
}

impl<'c> ChainWalk<'c> {
    /// A walk whose first entry is at `first`, after an entry hashed `prev`.
    fn new(first: u64, prev: [u8; 32], checkpoints: &'c [StoredCheckpoint]) -> ChainWalk<'c> {
        ChainWalk {
            checkpoints,
            unmatched: checkpoints
                .iter()
                .filter(|c| c.signed)
                .map(|c| (c.position, c.hash.as_str()))
                .collect(),
            behind: [prev].into(),
            expected: first,
            report: Verification::default(),
        }
    }

    /// Checks the next entry, with the (up to) two entries after it in
    /// `ahead`; `false` once a problem is found (the walk is over).
    fn step(
        &mut self,
        entry: &StoredEntry,
        ahead: &std::collections::VecDeque<StoredEntry>,
    ) -> bool {
        let expected = self.expected;
        self.report.entries += 1;
        if entry.position != expected {
            // In a store positions are unique and ordered; in an export an
            // entry may also come later than its place.
            let later = ahead.iter().take(2).any(|e| e.position == expected);
            self.report.problem = Some(if later {
                format!("entry {expected} was moved (reordered)")
            } else {
                format!("entry {expected} is missing (removed)")
            });
            return false;
        }
        let running = self.behind.back().copied().unwrap_or([0; 32]);
        if !entry.follows(&running) {
            let mut near: Vec<[u8; 32]> = self.behind.iter().copied().collect();
            near.extend(
                ahead
                    .iter()
                    .take(2)
                    .filter_map(|e| <[u8; 32]>::try_from(e.hash.as_slice()).ok()),
            );
            near.push([0; 32]);
            self.report.problem = Some(if was_moved(entry, &near) {
                format!("entry {expected} was moved (reordered)")
            } else {
                format!("entry {expected} was altered")
            });
            return false;
        }
        // `follows` compared it with a 32-byte hash.
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&entry.hash);
        if let Some(signed) = self.unmatched.remove(&expected) {
            if signed != hex(&hash) {
                self.report.problem = Some(format!(
                    "checkpoint at entry {expected} does not match the ledger"
                ));
                return false;
            }
            self.report.checkpoints += 1;
            self.report.covered_to = Some(expected);
        }
        if self.behind.len() == 2 {
            self.behind.pop_front();
        }
        self.behind.push_back(hash);
        self.expected += 1;
        true
    }

    /// The report once every entry was given: a checkpoint whose signature
    /// failed, or one signed over an entry the chain did not reach, is a
    /// problem when the chain itself had none.
    fn finish(mut self) -> Verification {
        if self.report.problem.is_none() {
            self.report.problem = self
                .checkpoints
                .iter()
                .find(|c| !c.signed)
                .map(|c| {
                    format!(
                        "checkpoint at entry {} has an invalid signature",
                        c.position
                    )
                })
                .or_else(|| {
                    // Signed over entries the ledger no longer has.
                    self.unmatched.keys().next().map(|position| {
                        format!("checkpoint at entry {position} does not match the ledger")
                    })
                });
        }
        self.report
    }
}

/// Checks a ledger offline: the chain from the first entry (read a page at
/// a time), every checkpoint's signature, and that each signed checkpoint
/// holds the hash the chain has at its position.
pub async fn verify(pool: &SqlitePool) -> Result<Verification, sqlx::Error> {
    let checkpoints = read_checkpoints(pool).await?;
    let mut walk = ChainWalk::new(0, [0; 32], &checkpoints);
    let mut ahead = std::collections::VecDeque::new();
    let mut next_page = Some(0u64);
    loop {
        // A mismatch looks at the next two entries: keep three read ahead.
        while ahead.len() < 3 {
            let Some(from) = next_page else { break };
            let read = read_entries(pool, from, u64::MAX).await?;
            next_page = match read.last() {
                Some(last) if read.len() as i64 == VERIFY_PAGE => Some(last.position + 1),
                _ => None,
            };
            ahead.extend(read);
        }
        let Some(entry) = ahead.pop_front() else {
            break;
        };
        if !walk.step(&entry, &ahead) {
            break;
        }
    }
    Ok(walk.finish())
}

/// Up to [`VERIFY_PAGE`] stored entries from position `from` to `to`, in
/// order, from both tables (rows of `ledger_log`, runs of `ledger_runs`).
async fn read_entries(
    pool: &SqlitePool,
    from: u64,
    to: u64,
) -> Result<Vec<StoredEntry>, sqlx::Error> {
    let first = i64::try_from(from).unwrap_or(i64::MAX);
    let to = i64::try_from(to).unwrap_or(i64::MAX);
    let rows = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS} FROM ledger_log WHERE position >= ? AND position <= ? \
         ORDER BY position LIMIT ?"
    ))
    .bind(first)
    .bind(to)
    .bind(VERIFY_PAGE)
    .fetch_all(pool)
    .await?;
    let logged = rows
        .iter()
        .map(StoredEntry::read)
        .collect::<Result<Vec<_>, _>>()?;
    // A run holding `from` starts at most MAX_RUN entries before it (one
    // more for an overlong, altered body's last, unreadable entry); each
    // run holds an entry, so a page of runs holds a page of entries.
    let runs = sqlx::query(
        "SELECT first_position, body FROM ledger_runs \
         WHERE first_position >= ? AND first_position <= ? ORDER BY first_position LIMIT ?",
    )
    .bind(first.saturating_sub(runs::MAX_RUN as i64))
    .bind(to)
    .bind(VERIFY_PAGE)
    .fetch_all(pool)
    .await?;
    let mut in_runs = Vec::new();
    for row in &runs {
        let (first_position, body): (i64, Vec<u8>) = (row.try_get(0)?, row.try_get(1)?);
        in_runs.extend(
            runs::decode(first_position as u64, &body)
                .into_iter()
                .filter(|e| (from..=to as u64).contains(&e.position)),
        );
    }
    let mut entries = merge_by_position(logged, in_runs);
    entries.truncate(VERIFY_PAGE as usize);
    Ok(entries)
}

/// Two lists ordered by position as one (an entry stored twice, only in an
/// altered store, is kept twice).
fn merge_by_position(a: Vec<StoredEntry>, b: Vec<StoredEntry>) -> Vec<StoredEntry> {
    if b.is_empty() {
        return a;
    }
    if a.is_empty() {
        return b;
    }
    let mut merged = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.position <= y.position => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, _) => b.next(),
        };
        match next {
            Some(e) => merged.push(e),
            None => return merged,
        }
    }
}

/// Every stored entry from `from` to `to`, page by page (a bounded range:
/// a receipt's way to its checkpoint).
async fn read_range(
    pool: &SqlitePool,
    from: u64,
    to: u64,
) -> Result<Vec<StoredEntry>, sqlx::Error> {
    let mut entries = Vec::new();
    let mut next = from;
    while next <= to {
        let page = read_entries(pool, next, to).await?;
        let full = page.len() as i64 == VERIFY_PAGE;
        let Some(last) = page.last().map(|e| e.position) else {
            break;
        };
        entries.extend(page);
        if !full {
            break;
        }
        next = last + 1;
    }
    Ok(entries)
}

/// The stored entry with the highest position, in either table.
async fn last_entry(pool: &SqlitePool) -> Result<Option<StoredEntry>, sqlx::Error> {
    let logged: Option<i64> = sqlx::query_scalar("SELECT MAX(position) FROM ledger_log")
        .fetch_one(pool)
        .await?;
    let run: Option<i64> = sqlx::query_scalar("SELECT MAX(first_position) FROM ledger_runs")
        .fetch_one(pool)
        .await?;
    let Some(start) = logged.max(run) else {
        return Ok(None);
    };
    // The last run's entries all come after its start.
    let tail = read_range(pool, start as u64, u64::MAX).await?;
    Ok(tail.into_iter().last())
}

/// The stored hash of the entry at `position`, if it is stored.
async fn stored_hash(pool: &SqlitePool, position: u64) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let entries = read_entries(pool, position, position).await?;
    Ok(entries.into_iter().next().map(|e| e.hash))
}

/// Recovers into the store (through `pool`) the entries journaled in
/// `journal_dir` by a gateway that stopped before committing them (see
/// [`Ledger::open_journaled`]); returns how many. Does nothing while a
/// running gateway holds the journal: it commits them itself.
pub async fn recover_journal(pool: &SqlitePool, journal_dir: &Path) -> Result<usize, LedgerError> {
    if !journal::exists(journal_dir) {
        return Ok(0);
    }
    let held = match journal::take(journal_dir) {
        Ok(held) => held,
        Err(JournalError::Busy(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    recover_held(pool, &held, journal_dir).await
}

/// Writes into the store (through `pool`) the entries of the journal in
/// `journal_dir`, which `held` holds, that continue the stored chain;
/// returns how many.
async fn recover_held(
    pool: &SqlitePool,
    held: &journal::Lock,
    journal_dir: &Path,
) -> Result<usize, LedgerError> {
    let (next, last_hash) = match last_entry(pool).await? {
        Some(last) => match <[u8; 32]>::try_from(last.hash.as_slice()) {
            Ok(hash) => (last.position + 1, hash),
            // An altered store: verification names it; nothing chains on it.
            Err(_) => return Ok(0),
        },
        None => (0, [0; 32]),
    };
    let recovered = journal::recoverable(held, journal_dir, next, last_hash)?;
    if !recovered.is_empty() {
        write_to_pool(pool, &recovered, None).await?;
    }
    Ok(recovered.len())
}

impl crate::plugin::EvidenceSink for Ledger {
    fn append(
        &self,
        kind: &str,
        actor: &str,
        request_id: &str,
        payload_json: &str,
    ) -> Result<(u64, String), String> {
        Ledger::append(self, kind, actor, request_id, payload_json)
            .map(|r| (r.position, r.hash))
            .map_err(|e| e.to_string())
    }
}

/// What checking a receipt found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReceiptCheck {
    /// The entry holds the receipt's hash and is covered by a checkpoint
    /// whose signature verifies.
    Valid {
        /// Position of the covering checkpoint.
        checkpoint: u64,
        /// Hex Ed25519 public key that signed it.
        signed_by: String,
    },
    /// The entry matches, but no checkpoint covers it yet.
    NotYetCheckpointed,
    /// The receipt does not match the ledger; the text says why.
    Invalid(String),
}

/// Checks a receipt (position and hash) against the ledger: the entry's
/// content must hash to it, and the chain from it must reach the hash of a
/// signed checkpoint.
pub async fn verify_receipt(
    pool: &SqlitePool,
    position: u64,
    hash: &str,
) -> Result<ReceiptCheck, sqlx::Error> {
    let checkpoint = sqlx::query(
        "SELECT position, hash, public_key, signature FROM ledger_checkpoints WHERE position >= ? ORDER BY position LIMIT 1",
    )
    .bind(position as i64)
    .fetch_optional(pool)
    .await?;
    let last = checkpoint
        .as_ref()
        .map(|c| c.try_get::<i64, _>(0))
        .transpose()?
        .unwrap_or(position as i64);
    // From the entry before it, whose stored hash the chain starts from
    // (a wrong one cannot reach the checkpoint's hash).
    let entries = read_range(pool, position.saturating_sub(1), last as u64).await?;
    let mut entries = entries.iter().peekable();
    let mut running = [0u8; 32];
    if let Some(before) = position.checked_sub(1) {
        let stored = entries
            .next_if(|e| e.position == before)
            .map(|e| e.hash.as_slice().try_into());
        running = match stored {
            Some(Ok(hash)) => hash,
            Some(Err(_)) => {
                return Ok(ReceiptCheck::Invalid(format!(
                    "the stored hash of entry {before} is not a SHA-256"
                )))
            }
            None => return Ok(ReceiptCheck::Invalid(format!("entry {before} is missing"))),
        };
    }
    if entries.peek().is_none_or(|e| e.position != position) {
        return Ok(ReceiptCheck::Invalid(format!(
            "there is no entry {position}"
        )));
    }
    for (expected, entry) in (position..).zip(entries) {
        if entry.position != expected {
            return Ok(ReceiptCheck::Invalid(format!(
                "entry {expected} is missing"
            )));
        }
        let Some(computed) = entry.hash_at(&running, expected) else {
            return Ok(ReceiptCheck::Invalid(format!(
                "entry {expected} has no readable payload"
            )));
        };
        if expected == position && hex(&computed) != hash {
            return Ok(ReceiptCheck::Invalid(format!(
                "entry {position} does not hash to the receipt's hash"
            )));
        }
        running = computed;
    }
    let Some(cp) = checkpoint else {
        return Ok(ReceiptCheck::NotYetCheckpointed);
    };
    let (cp_position, cp_hash, public_key, signature): (i64, String, String, String) = (
        cp.try_get(0)?,
        cp.try_get(1)?,
        cp.try_get(2)?,
        cp.try_get(3)?,
    );
    if hex(&running) != cp_hash {
        return Ok(ReceiptCheck::Invalid(format!(
            "the chain from entry {position} does not reach checkpoint {cp_position}"
        )));
    }
    let signed = match (unhex(&cp_hash), unhex(&public_key), unhex(&signature)) {
        (Some(h), Some(pk), Some(sig)) => UnparsedPublicKey::new(&ED25519, pk)
            .verify(&checkpoint_message(cp_position as u64, &h), &sig)
            .is_ok(),
        _ => false,
    };
    if !signed {
        return Ok(ReceiptCheck::Invalid(format!(
            "checkpoint {cp_position} has an invalid signature"
        )));
    }
    Ok(ReceiptCheck::Valid {
        checkpoint: cp_position as u64,
        signed_by: public_key,
    })
}
