//! Token authentication on the request path, from an in-memory cache.
//!
//! The cache maps a presented token to its record, or to "unknown"
//! (negative entries stop a stream of bad tokens from reaching the store).
//! Its key is the token's SipHash-2-4-128 under a random key drawn at start
//! and never shown: a keyed hash, so the cache holds no token and no value
//! an attacker could compute or aim a collision at (finding a second token
//! with the same key means guessing 128 bits blind). The SHA-256 the store
//! keeps is computed only on a miss: in software, on CPUs without SHA
//! extensions, it was the largest single cost of an authenticated call.
//!
//! The whole cache is invalidated whenever the catalog's change sequence
//! moves, which every token insert, revocation or expiry change does, so a
//! revocation is in force within one poll period.

use crate::problem::Problem;
use chasqui_catalog::model::now_unix;
use chasqui_catalog::{token, Store, TokenRecord};
use moka::future::Cache;
use siphasher::sip128::SipHasher24;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;

/// The token cache.
pub struct TokenCache {
    cache: Cache<u128, Option<Arc<TokenRecord>>>,
    /// The cache's keyed hash of a presented token (random key per process).
    keyed: SipHasher24,
    store: Store,
    control: Handle,
    /// Last use (Unix seconds) per token id, not yet written to the store.
    /// Sharded, and written at most once per token and second.
    last_used: dashmap::DashMap<i64, i64>,
    /// Bumped by every invalidation: a lookup that read the store before an
    /// invalidation but finished after it must not stay cached.
    generation: std::sync::atomic::AtomicU64,
}

impl TokenCache {
    /// A cache over `store`; misses run on the `control` runtime, where the
    /// store's pool lives.
    pub fn new(store: Store, control: Handle) -> TokenCache {
        let cache = Cache::builder()
            .max_capacity(200_000)
            // A safety net only: invalidation on change is what keeps it right.
            .time_to_live(Duration::from_secs(300))
            .build();
        TokenCache {
            cache,
            // rand's thread generator is a CSPRNG seeded from the OS.
            keyed: SipHasher24::new_with_keys(rand::random(), rand::random()),
            store,
            control,
            last_used: dashmap::DashMap::new(),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Authenticates the value of an `Authorization` header.
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
    ) -> Result<Arc<TokenRecord>, (Problem, &'static str)> {
        let Some(value) = authorization else {
            return Err((
                Problem::TokenMissing,
                "send the token as `Authorization: Bearer <token>`",
            ));
        };
        let value = std::str::from_utf8(value).map_err(|_| {
            (
                Problem::TokenInvalid,
                "the Authorization header is not valid text",
            )
        })?;
        let presented = match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => {
                return Err((
                    Problem::TokenMissing,
                    "the Authorization header must use the Bearer scheme",
                ))
            }
        };
        let key = u128::from(self.keyed.hash(presented.as_bytes()));
        // The steady state is a hit; only a miss checks the token's shape
        // and builds the lookup (only well-formed tokens are ever cached).
        let found = match self.cache.get(&key).await {
            Some(found) => found,
            None => {
                if token::parse(presented).is_none() {
                    return Err((Problem::TokenInvalid, "the token is malformed"));
                }
                self.load(key, token::hash(presented)).await?
            }
        };
        let record = found.ok_or((Problem::TokenInvalid, "the token is not known"))?;
        if record.revoked_at.is_some() {
            return Err((Problem::TokenRevoked, "the token was revoked"));
        }
        let now = now_unix();
        if record.expires_at.is_some_and(|at| at <= now) {
            return Err((Problem::TokenExpired, "the token has expired"));
        }
        if self.last_used.get(&record.token_id).map(|v| *v) != Some(now) {
            self.last_used.insert(record.token_id, now);
        }
        Ok(record)
    }

    /// Fills the cache entry `key` from the store, which knows the token by
    /// its SHA-256 `hash`; concurrent misses for the same token share one
    /// lookup.
    async fn load(
        &self,
        key: u128,
        hash: [u8; 32],
    ) -> Result<Option<Arc<TokenRecord>>, (Problem, &'static str)> {
        use std::sync::atomic::Ordering;
        let store = self.store.clone();
        let control = self.control.clone();
        let generation = self.generation.load(Ordering::Acquire);
        let found = self
            .cache
            .try_get_with(key, async move {
                control
                    .spawn(async move { store.lookup_token(&hash).await })
                    .await
                    .map_err(|e| e.to_string())?
                    .map(|found| found.map(Arc::new))
                    .map_err(|e| e.to_string())
            })
            .await;
        // The catalog changed while the lookup ran (a revocation committed
        // on this or another node): answer this request with what was read,
        // but do not keep it.
        if self.generation.load(Ordering::Acquire) != generation {
            self.cache.invalidate(&key).await;
        }
        found.map_err(|e| {
            tracing::error!(error = %e, "token lookup failed");
            (
                Problem::Internal,
                "the token could not be checked; try again",
            )
        })
    }

    /// Writes the pending last-use times to the store in one transaction.
    pub async fn flush_last_used(&self) -> Result<usize, chasqui_catalog::StoreError> {
        let ids: Vec<i64> = self.last_used.iter().map(|e| *e.key()).collect();
        let mut batch = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some((id, at)) = self.last_used.remove(&id) {
                batch.push((id, at));
            }
        }
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        self.store.record_last_used(&batch).await?;
        Ok(n)
    }

    /// Drops every cached entry.
    pub fn invalidate_all(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.cache.invalidate_all();
    }
}
