//! Upstream pools: the addresses of one environment of one service, their
//! health, and weighted round-robin selection that skips unhealthy and
//! already-tried backends.

use pingora_core::protocols::tls::CaType;
use pingora_core::utils::tls::{parse_x509, WrappedX509};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Health of one upstream address, shared by every pool that uses it and
/// kept across catalog reloads.
#[derive(Debug)]
pub struct Health {
    healthy: AtomicBool,
    successes: AtomicU32,
    failures: AtomicU32,
}

impl Default for Health {
    fn default() -> Self {
        // Optimistic until the first probe says otherwise, so a new upstream
        // takes traffic at once.
        Health {
            healthy: AtomicBool::new(true),
            successes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
        }
    }
}

impl Health {
    /// Whether the address is taking traffic.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records an active probe's outcome; returns `Some(new state)` when it flipped.
    pub fn record_probe(&self, ok: bool, healthy_after: u32, unhealthy_after: u32) -> Option<bool> {
        if ok {
            self.failures.store(0, Ordering::Relaxed);
            let n = self
                .successes
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            if !self.is_healthy() && n >= healthy_after {
                self.healthy.store(true, Ordering::Relaxed);
                return Some(true);
            }
        } else {
            self.successes.store(0, Ordering::Relaxed);
            let n = self
                .failures
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            if self.is_healthy() && n >= unhealthy_after {
                self.healthy.store(false, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }

    /// A connection on the request path was refused: out at once; the
    /// active probe brings it back.
    pub fn record_connect_failure(&self) {
        self.successes.store(0, Ordering::Relaxed);
        self.healthy.store(false, Ordering::Relaxed);
    }
}

/// One upstream address of a pool.
#[derive(Debug)]
pub struct Backend {
    /// The URL as configured (for logs and operators, never sent to clients).
    pub url: String,
    /// Resolved socket address.
    pub addr: SocketAddr,
    /// Whether to speak TLS.
    pub tls: bool,
    /// SNI and certificate name to verify.
    pub sni: String,
    /// `Host` header value for the upstream.
    pub authority: String,
    /// Base path prefixed to the rest of the client's path (no trailing `/`).
    pub base_path: String,
    /// Shared health.
    pub health: Arc<Health>,
}

/// The upstreams of one environment of one service.
pub struct UpstreamPool {
    /// Backends in catalog order.
    pub backends: Vec<Backend>,
    /// Weighted round-robin order: backend indexes, each repeated by weight.
    schedule: Vec<usize>,
    cursor: AtomicUsize,
    /// CA certificates trusted for these upstreams (None: system roots).
    pub ca: Option<Arc<CaType>>,
    /// Connect timeout override.
    pub connect_timeout: Option<Duration>,
    /// Read timeout override.
    pub read_timeout: Option<Duration>,
    /// The same CA bundle as PEM text, for clients other than pingora's
    /// (store-and-forward deliveries).
    pub ca_pem: Option<Arc<str>>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("backends", &self.backends)
            .field("custom_ca", &self.ca.is_some())
            .finish_non_exhaustive()
    }
}

impl UpstreamPool {
    /// Builds a pool from backends with weights.
    pub fn new(
        backends: Vec<(Backend, u32)>,
        ca: Option<Arc<CaType>>,
        connect_timeout: Option<Duration>,
        read_timeout: Option<Duration>,
    ) -> UpstreamPool {
        let mut schedule = Vec::new();
        // Interleave by weight so that a heavy backend's turns are spread out.
        let max_weight = backends
            .iter()
            .map(|(_, w)| (*w).clamp(1, 100))
            .max()
            .unwrap_or(0);
        for round in 0..max_weight {
            for (i, (_, w)) in backends.iter().enumerate() {
                if round < (*w).clamp(1, 100) {
                    schedule.push(i);
                }
            }
        }
        UpstreamPool {
            backends: backends.into_iter().map(|(b, _)| b).collect(),
            schedule,
            cursor: AtomicUsize::new(0),
            ca,
            connect_timeout,
            read_timeout,
            ca_pem: None,
        }
    }

    /// Picks the next healthy backend not in `tried`.
    pub fn select(&self, tried: &[usize]) -> Option<usize> {
        let n = self.schedule.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| self.schedule[(start + k) % n])
            .find(|&i| !tried.contains(&i) && self.backends[i].health.is_healthy())
    }

    /// Whether some backend other than those in `tried` could take a retry.
    pub fn has_candidate(&self, tried: &[usize]) -> bool {
        self.backends
            .iter()
            .enumerate()
            .any(|(i, b)| !tried.contains(&i) && b.health.is_healthy())
    }
}

/// Parses a PEM bundle into the CA list pingora's rustls connector takes.
pub fn parse_ca_bundle(pem: &str) -> Result<Arc<CaType>, String> {
    let mut reader = std::io::Cursor::new(pem.as_bytes());
    let mut certs = Vec::new();
    for item in rustls_pemfile::certs(&mut reader) {
        let der = item.map_err(|e| format!("invalid PEM: {e}"))?;
        // parse_x509 panics on bad DER, so check with the same parser first.
        x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("invalid certificate: {e}"))?;
        certs.push(WrappedX509::new(der.as_ref().to_vec(), parse_x509));
    }
    if certs.is_empty() {
        return Err("no certificate in the CA bundle".into());
    }
    Ok(Arc::from(certs.into_boxed_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(port: u16) -> Backend {
        Backend {
            url: format!("http://127.0.0.1:{port}"),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            tls: false,
            sni: String::new(),
            authority: format!("127.0.0.1:{port}"),
            base_path: String::new(),
            health: Arc::new(Health::default()),
        }
    }

    #[test]
    fn round_robin_respects_weights_health_and_tried() {
        let pool = UpstreamPool::new(vec![(backend(1), 1), (backend(2), 3)], None, None, None);
        let picks: Vec<usize> = (0..8).map(|_| pool.select(&[]).unwrap()).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 6);
        assert_eq!(pool.select(&[1]), Some(0));
        pool.backends[0].health.record_connect_failure();
        assert_eq!(pool.select(&[1]), None);
        assert!(!pool.has_candidate(&[1]));
        assert_eq!(pool.select(&[]), Some(1));
    }

    #[test]
    fn probes_flip_health_after_thresholds() {
        let h = Health::default();
        assert_eq!(h.record_probe(false, 2, 2), None);
        assert_eq!(h.record_probe(false, 2, 2), Some(false));
        assert_eq!(h.record_probe(true, 2, 2), None);
        assert_eq!(h.record_probe(true, 2, 2), Some(true));
    }
}
