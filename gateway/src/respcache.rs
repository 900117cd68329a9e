//! The response cache (moka), set by policy per scope.
//!
//! Only GET and HEAD, only `200` answers, for a per-entry TTL, bounded in
//! bytes (a weigher counts body and header bytes). It sits after
//! authentication, the grant check, rate limits, quotas and the
//! request-header plugins: a hit skips only the upstream, never a check.
//!
//! The key is the service, the environment, the path and query, the values
//! of the `vary` header fields the policy names, and, unless the policy sets
//! `shared: true`, the consumer system: by default one system never gets an
//! answer fetched for another, even though both hold grants.
//!
//! Personalised answers are never stored unless the policy sets
//! `allow_personalised: true`: requests carrying a citizen's identity
//! (`x-ciudadania-*` fields, the citizen token included) or a `Cookie`, and
//! answers marked `Cache-Control: private`, `no-store` or `no-cache`, that
//! set cookies or `Vary: *`. A request with `Cache-Control: no-store` or
//! `no-cache` bypasses the cache.

use bytes::Bytes;
use http::HeaderMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The default bound of the whole cache: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// One stored answer.
#[derive(Debug)]
pub struct CachedResponse {
    /// Status (always 200 today).
    pub status: u16,
    /// Header fields as the client got them (hop-by-hop ones left out).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The body.
    pub body: Bytes,
    stored: Instant,
    ttl: Duration,
}

impl CachedResponse {
    /// Seconds since the answer was stored (the `Age` field).
    pub fn age_secs(&self) -> u64 {
        self.stored.elapsed().as_secs()
    }

    fn fresh(&self) -> bool {
        self.stored.elapsed() < self.ttl
    }

    fn weight(&self) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        u32::try_from(self.body.len() + headers + 64).unwrap_or(u32::MAX)
    }
}

/// The cache of one policy.
pub struct ResponseCache {
    /// Synchronous (moka's `sync` cache): an answer is stored in the body
    /// filter as its last chunk goes out, so that a client repeating the call
    /// at once finds it; that filter cannot await.
    cache: moka::sync::Cache<String, Arc<CachedResponse>>,
    max_bytes: u64,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl ResponseCache {
    /// A cache holding at most `max_bytes`.
    pub fn new(max_bytes: u64) -> ResponseCache {
        ResponseCache {
            cache: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_k: &String, v: &Arc<CachedResponse>| v.weight())
                .build(),
            max_bytes,
        }
    }

    /// The configured bound.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// A fresh answer for `key`, if there is one.
    pub fn get(&self, key: &str) -> Option<Arc<CachedResponse>> {
        let found = self.cache.get(key)?;
        if found.fresh() {
            Some(found)
        } else {
            self.cache.invalidate(key);
            None
        }
    }

    /// Stores an answer for `ttl`.
    pub fn put(
        &self,
        key: String,
        status: u16,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        body: Bytes,
        ttl: Duration,
    ) {
        let entry = Arc::new(CachedResponse {
            status,
            headers,
            body,
            stored: Instant::now(),
            ttl,
        });
        if u64::from(entry.weight()) > self.max_bytes {
            return;
        }
        self.cache.insert(key, entry);
        // Apply the bound now rather than at some later maintenance: only
        // misses insert, so this is off the hit path.
        self.cache.run_pending_tasks();
    }

    /// Bytes held now (after pending maintenance).
    pub fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }
}

/// Whether the request carries a citizen's identity or cookies.
pub fn personalised_request(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::COOKIE)
        || headers
            .keys()
            .any(|k| k.as_str().starts_with("x-ciudadania-"))
}

/// Whether the client asked not to be served from (or stored in) a cache.
pub fn request_bypasses(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            let d = d.trim();
            d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache")
        })
}

/// Whether an answer is personal or forbids caching.
pub fn uncacheable_response(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::SET_COOKIE)
        || headers
            .get_all(http::header::VARY)
            .iter()
            .any(|v| v.as_bytes().trim_ascii() == b"*")
        || headers
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|d| {
                let d = d.trim().to_ascii_lowercase();
                d == "private" || d.starts_with("private=") || d == "no-store" || d == "no-cache"
            })
}

/// Header fields never replayed from the cache.
pub fn replayable(name: &http::HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "date"
            | "x-request-id"
            | "x-cache"
            | "age"
            | "set-cookie"
    )
}

/// The cache key (see the module documentation).
pub fn key(
    service_id: i64,
    env: &str,
    consumer: Option<i64>,
    path_and_query: &str,
    vary: &[String],
    headers: &HeaderMap,
) -> String {
    let mut key = format!(
        "{service_id}\u{0}{env}\u{0}{}\u{0}{path_and_query}",
        consumer.map_or_else(|| "*".to_string(), |c| c.to_string())
    );
    for name in vary {
        key.push('\u{0}');
        key.push_str(&name.to_ascii_lowercase());
        key.push('=');
        for v in headers.get_all(name.as_str()) {
            key.push_str(&String::from_utf8_lossy(v.as_bytes()));
            key.push('\u{1}');
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_expire_and_the_bound_holds() {
        let cache = ResponseCache::new(10_000);
        cache.put(
            "a".into(),
            200,
            vec![],
            Bytes::from(vec![0u8; 100]),
            Duration::from_millis(50),
        );
        assert!(cache.get("a").is_some());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(cache.get("a").is_none(), "expired");
        for i in 0..50 {
            cache.put(
                format!("k{i}"),
                200,
                vec![],
                Bytes::from(vec![0u8; 1000]),
                Duration::from_secs(60),
            );
        }
        assert!(cache.weighted_size() <= 10_000);
    }

    #[test]
    fn personal_and_private_answers_are_recognised() {
        let mut h = HeaderMap::new();
        assert!(!personalised_request(&h));
        h.insert("x-ciudadania-token", "t".parse().unwrap());
        assert!(personalised_request(&h));
        let mut r = HeaderMap::new();
        r.insert("cache-control", "public, max-age=60".parse().unwrap());
        assert!(!uncacheable_response(&r));
        r.insert("cache-control", "Private".parse().unwrap());
        assert!(uncacheable_response(&r));
        let mut v = HeaderMap::new();
        v.insert("accept-language", "es".parse().unwrap());
        let k1 = key(1, "pruebas", Some(3), "/a", &["Accept-Language".into()], &v);
        v.insert("accept-language", "en".parse().unwrap());
        let k2 = key(1, "pruebas", Some(3), "/a", &["Accept-Language".into()], &v);
        assert_ne!(k1, k2);
        assert_ne!(
            key(1, "pruebas", Some(3), "/a", &[], &v),
            key(1, "pruebas", Some(4), "/a", &[], &v)
        );
    }
}
