//! The host side of the plugin interfaces: per-store state and the
//! implementation of each capability.

use super::chasqui::plugin::{
    clock, context, crypto, incident, kv, ledger, log, metering, metrics,
};
use super::{CallContext, Capability, IncidentReport, KvBackend, PlatformSink};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::StoreLimits;

pub use context::RequestContext;

const MAX_KEY: usize = 512;
const MAX_VALUE: usize = 64 << 10;
const MAX_ENTRIES: usize = 10_000;
const MAX_LOG: usize = 4 << 10;

/// A stored value and its expiry.
type KvEntry = (Vec<u8>, Option<Instant>);

/// State a plugin shares across all its instances: its key-value namespace
/// and its metrics.
pub struct PluginShared {
    name: String,
    evidence: Option<Arc<dyn super::EvidenceSink>>,
    platform: Option<Arc<dyn PlatformSink>>,
    /// Where the kv namespace is written through, when policy makes it durable.
    durable: Option<Arc<dyn KvBackend>>,
    kv: Mutex<HashMap<String, KvEntry>>,
    /// Series -> (value, whether it counts a histogram's observations).
    metrics: Mutex<BTreeMap<String, (f64, bool)>>,
}

impl std::fmt::Debug for PluginShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginShared")
            .field("name", &self.name)
            .field("ledger", &self.evidence.is_some())
            .finish()
    }
}

impl PluginShared {
    /// Empty state for plugin `name`.
    pub fn new(
        name: &str,
        evidence: Option<Arc<dyn super::EvidenceSink>>,
        platform: Option<Arc<dyn PlatformSink>>,
    ) -> PluginShared {
        PluginShared {
            name: name.to_string(),
            evidence,
            platform,
            durable: None,
            kv: Mutex::default(),
            metrics: Mutex::default(),
        }
    }

    /// Makes the kv namespace durable: loads what `backend` holds for this
    /// plugin, then writes every change through to it.
    pub fn make_durable(&mut self, backend: Arc<dyn KvBackend>) -> Result<(), String> {
        let now = Instant::now();
        let now_ms = unix_ms();
        let mut map = self.kv.lock().unwrap_or_else(|p| p.into_inner());
        for (key, value, expires_at_ms) in backend.load(&self.name)? {
            let expiry = match expires_at_ms {
                Some(at) if at <= now_ms => continue,
                Some(at) => Some(now + std::time::Duration::from_millis((at - now_ms) as u64)),
                None => None,
            };
            map.insert(key, (value, expiry));
        }
        drop(map);
        self.durable = Some(backend);
        Ok(())
    }

    /// Writes one change through when the namespace is durable.
    fn persist(&self, key: &str, entry: Option<&KvEntry>) -> Result<(), kv::Error> {
        let Some(backend) = &self.durable else {
            return Ok(());
        };
        let expires_at_ms = entry.and_then(|(_, expiry)| {
            expiry.map(|at| {
                unix_ms() + at.saturating_duration_since(Instant::now()).as_millis() as i64
            })
        });
        backend
            .put(&self.name, key, entry.map(|(v, _)| v.as_slice()), expires_at_ms)
            .map_err(|e| {
                tracing::error!(plugin = %self.name, error = %e, "durable plugin state could not be written");
                kv::Error::Unavailable("durable state could not be written".into())
            })
    }

    /// Current value of a metric series, as `name{k="v",...}` without the
    /// plugin prefix (counters sum, histograms count observations).
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(series)
            .map(|(value, _)| *value)
    }

    /// Every series as `(name{k="v",...}, value, is a histogram's count)`,
    /// for the Prometheus exposition.
    pub fn series(&self) -> Vec<(String, f64, bool)> {
        self.metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(series, (value, histogram))| (series.clone(), *value, *histogram))
            .collect()
    }
}

/// Data of one store: one instance of one plugin.
pub struct HostState {
    shared: Arc<PluginShared>,
    /// Memory and instance limits, applied by the store's limiter.
    pub limits: StoreLimits,
    /// The request being served; shared by every plugin of the chain.
    context: Option<Arc<CallContext>>,
}

impl HostState {
    pub(super) fn new(
        shared: Arc<PluginShared>,
        limits: StoreLimits,
        context: Option<Arc<CallContext>>,
    ) -> HostState {
        HostState {
            shared,
            limits,
            context,
        }
    }

    pub(super) fn set_context(&mut self, context: Option<Arc<CallContext>>) {
        self.context = context;
    }

    fn request_id(&self) -> &str {
        self.context
            .as_ref()
            .map_or("-", |c| c.request.request_id.as_str())
    }
}

/// Links exactly the granted interfaces.
pub(super) fn add_granted(
    linker: &mut Linker<HostState>,
    granted: &[Capability],
) -> anyhow::Result<()> {
    for cap in granted {
        match cap {
            Capability::Log => log::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?,
            Capability::Kv => kv::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?,
            Capability::Clock => clock::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?,
            Capability::Crypto => crypto::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?,
            Capability::Metrics => metrics::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?,
            Capability::Ledger => ledger::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?,
            Capability::Context => context::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?,
            Capability::Incident => incident::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?,
            Capability::Metering => metering::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?,
        }
    }
    debug_assert!(granted.iter().all(|c| Capability::ALL.contains(c)));
    Ok(())
}

impl log::Host for HostState {
    fn write(&mut self, level: log::Level, message: String) {
        let mut message = message;
        if message.len() > MAX_LOG {
            let mut cut = MAX_LOG;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let (plugin, request_id) = (self.shared.name.as_str(), self.request_id());
        match level {
            log::Level::Trace => {
                tracing::trace!(target: "chasqui::plugin", plugin, request_id, "{message}")
            }
            log::Level::Debug => {
                tracing::debug!(target: "chasqui::plugin", plugin, request_id, "{message}")
            }
            log::Level::Info => {
                tracing::info!(target: "chasqui::plugin", plugin, request_id, "{message}")
            }
            log::Level::Warn => {
                tracing::warn!(target: "chasqui::plugin", plugin, request_id, "{message}")
            }
            log::Level::Error => {
                tracing::error!(target: "chasqui::plugin", plugin, request_id, "{message}")
            }
        }
    }
}

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::Error> {
        let mut map = self.shared.kv.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&key) {
            Some((_, Some(expiry))) if *expiry <= Instant::now() => {
                map.remove(&key);
                Ok(None)
            }
            Some((value, _)) => Ok(Some(value.clone())),
            None => Ok(None),
        }
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), kv::Error> {
        if key.len() > MAX_KEY || value.len() > MAX_VALUE {
            return Err(kv::Error::TooLarge);
        }
        let now = Instant::now();
        let expiry = ttl_ms.map(|ms| now + std::time::Duration::from_millis(ms));
        let mut map = self.shared.kv.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES && !map.contains_key(&key) {
            map.retain(|_, (_, exp)| exp.is_none_or(|e| e > now));
            if map.len() >= MAX_ENTRIES {
                return Err(kv::Error::QuotaExceeded);
            }
        }
        let entry = (value, expiry);
        // Under the lock, so that writes reach the store in the order they
        // took effect.
        self.shared.persist(&key, Some(&entry))?;
        map.insert(key, entry);
        Ok(())
    }

    fn delete(&mut self, key: String) -> Result<(), kv::Error> {
        let mut map = self.shared.kv.lock().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(&key) {
            self.shared.persist(&key, None)?;
            map.remove(&key);
        }
        Ok(())
    }

    fn set_if_absent(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<Option<Vec<u8>>, kv::Error> {
        if key.len() > MAX_KEY || value.len() > MAX_VALUE {
            return Err(kv::Error::TooLarge);
        }
        let now = Instant::now();
        // One lock for the check and the write: that is the atomicity the
        // contract promises across instances.
        let mut map = self.shared.kv.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((existing, expiry)) = map.get(&key) {
            if expiry.is_none_or(|e| e > now) {
                return Ok(Some(existing.clone()));
            }
        }
        make_room(&mut map, &key, now)?;
        let expiry = ttl_ms.map(|ms| now + std::time::Duration::from_millis(ms));
        let entry = (value, expiry);
        // The claim is stored before anyone is told it succeeded.
        self.shared.persist(&key, Some(&entry))?;
        map.insert(key, entry);
        Ok(None)
    }

    fn increment(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64, kv::Error> {
        if key.len() > MAX_KEY {
            return Err(kv::Error::TooLarge);
        }
        let now = Instant::now();
        let mut map = self.shared.kv.lock().unwrap_or_else(|p| p.into_inner());
        let live = map
            .get(&key)
            .filter(|(_, expiry)| expiry.is_none_or(|e| e > now))
            .map(|(value, expiry)| {
                let current = <[u8; 8]>::try_from(value.as_slice())
                    .map(i64::from_le_bytes)
                    .unwrap_or(0);
                (current, *expiry)
            });
        let (current, expiry) = match live {
            Some(found) => found,
            None => {
                make_room(&mut map, &key, now)?;
                (
                    0,
                    ttl_ms.map(|ms| now + std::time::Duration::from_millis(ms)),
                )
            }
        };
        let next = current.saturating_add(delta);
        let entry = (next.to_le_bytes().to_vec(), expiry);
        self.shared.persist(&key, Some(&entry))?;
        map.insert(key, entry);
        Ok(next)
    }
}

/// Makes room for a new `key` within the namespace's entry quota, dropping
/// expired entries first.
fn make_room(map: &mut HashMap<String, KvEntry>, key: &str, now: Instant) -> Result<(), kv::Error> {
    if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
        map.retain(|_, (_, exp)| exp.is_none_or(|e| e > now));
        if map.len() >= MAX_ENTRIES {
            return Err(kv::Error::QuotaExceeded);
        }
    }
    Ok(())
}

fn process_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

impl clock::Host for HostState {
    fn now_ms(&mut self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn monotonic_ns(&mut self) -> u64 {
        process_start().elapsed().as_nanos() as u64
    }
}

impl crypto::Host for HostState {
    fn sha256(&mut self, data: Vec<u8>) -> Vec<u8> {
        Sha256::digest(&data).to_vec()
    }

    fn hmac_sha256(&mut self, key: Vec<u8>, data: Vec<u8>) -> Vec<u8> {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
        ring::hmac::sign(&key, &data).as_ref().to_vec()
    }

    fn verify_signature(
        &mut self,
        alg: crypto::Algorithm,
        jwk: String,
        signing_input: Vec<u8>,
        signature: Vec<u8>,
    ) -> Result<bool, String> {
        verify_jws(alg, &jwk, &signing_input, &signature)
    }
}

fn b64(jwk: &serde_json::Value, member: &str) -> Result<Vec<u8>, String> {
    let text = jwk
        .get(member)
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("the JWK has no `{member}`"))?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|e| format!("the JWK's `{member}` is not base64url: {e}"))
}

/// Verifies a JWS signature with a JWK; `Err` when the key is unusable.
pub(crate) fn verify_jws(
    alg: crypto::Algorithm,
    jwk: &str,
    input: &[u8],
    sig: &[u8],
) -> Result<bool, String> {
    use ring::signature;
    let jwk: serde_json::Value =
        serde_json::from_str(jwk).map_err(|e| format!("the JWK is not JSON: {e}"))?;
    let member = |m: &str| jwk.get(m).and_then(|v| v.as_str());
    let (expected_kty, expected_alg) = match alg {
        crypto::Algorithm::Rs256 => ("RSA", "RS256"),
        crypto::Algorithm::Es256 => ("EC", "ES256"),
    };
    if member("kty") != Some(expected_kty) {
        return Err(format!(
            "{expected_alg} needs a JWK with kty {expected_kty}"
        ));
    }
    if let Some(named) = member("alg") {
        if named != expected_alg {
            return Err(format!("the JWK is for {named}, not {expected_alg}"));
        }
    }
    match alg {
        crypto::Algorithm::Rs256 => {
            let n = b64(&jwk, "n")?;
            let e = b64(&jwk, "e")?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if !(2048..=8192).contains(&bits) {
                return Err(format!(
                    "RSA modulus of {bits} bits is out of range (2048 to 8192)"
                ));
            }
            let key = signature::RsaPublicKeyComponents { n: &n, e: &e };
            Ok(key
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, input, sig)
                .is_ok())
        }
        crypto::Algorithm::Es256 => {
            if member("crv") != Some("P-256") {
                return Err("ES256 needs a JWK with crv P-256".into());
            }
            let (x, y) = (b64(&jwk, "x")?, b64(&jwk, "y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates must be 32 bytes".into());
            }
            if sig.len() != 64 {
                return Ok(false);
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let key = signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point);
            Ok(key.verify(input, sig).is_ok())
        }
    }
}

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 64
}

impl HostState {
    fn record_metric(
        &mut self,
        name: &str,
        value: f64,
        labels: &[metrics::Label],
        histogram: bool,
    ) {
        if !valid_metric_name(name) || labels.iter().any(|l| !valid_metric_name(&l.key)) {
            tracing::debug!(plugin = %self.shared.name, name, "metric sample dropped: invalid name");
            return;
        }
        let mut series = name.to_string();
        if !labels.is_empty() {
            let parts: Vec<String> = labels
                .iter()
                .take(4)
                .map(|l| format!("{}=\"{}\"", l.key, l.value.escape_debug()))
                .collect();
            series.push('{');
            series.push_str(&parts.join(","));
            series.push('}');
        }
        let mut map = self
            .shared
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Bounded label cardinality: at most 1,000 series per plugin.
        if map.len() >= 1_000 && !map.contains_key(&series) {
            return;
        }
        let entry = map.entry(series).or_insert((0.0, histogram));
        entry.0 += if histogram { 1.0 } else { value };
    }
}

impl metrics::Host for HostState {
    fn counter_add(&mut self, name: String, value: u64, labels: Vec<metrics::Label>) {
        self.record_metric(&name, value as f64, &labels, false);
    }

    fn histogram_record(&mut self, name: String, value: f64, labels: Vec<metrics::Label>) {
        self.record_metric(&name, value, &labels, true);
    }
}

impl ledger::Host for HostState {
    fn append(&mut self, kind: String, payload_json: String) -> Result<ledger::Receipt, String> {
        let Some(sink) = self.shared.evidence.clone() else {
            return Err("the audit ledger is not available on this gateway".into());
        };
        let actor = format!("plugin:{}", self.shared.name);
        let (position, hash) = sink.append(&kind, &actor, self.request_id(), &payload_json)?;
        Ok(ledger::Receipt { position, hash })
    }
}

impl context::Host for HostState {
    fn client_address(&mut self) -> Option<String> {
        self.context.as_ref().and_then(|c| c.client_address.clone())
    }

    fn get(&mut self) -> RequestContext {
        self.context
            .as_ref()
            .map(|c| c.request.clone())
            .unwrap_or_else(|| RequestContext {
                consumer_entity: None,
                consumer_system: None,
                service: String::new(),
                environment: String::new(),
                request_id: String::new(),
                trace_id: None,
            })
    }
}

/// `[a-z0-9._-]`, 1 to 64 bytes: the shape of ledger kinds, incident kinds
/// and fee items.
fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

impl incident::Host for HostState {
    fn report(&mut self, report: incident::IncidentReport) -> Result<String, String> {
        let Some(sink) = self.shared.platform.clone() else {
            return Err("incident reporting is not available on this gateway".into());
        };
        let Some(context) = self.context.clone() else {
            return Err("incidents can only be reported while serving a request".into());
        };
        if !valid_kind(&report.kind) {
            return Err(format!(
                "the kind {:?} is not [a-z0-9._-] of at most 64 bytes",
                report.kind
            ));
        }
        if report.summary.len() > 256 {
            return Err("the summary is over 256 bytes".into());
        }
        if report.detail_json.len() > 16 << 10 {
            return Err("the detail is over 16 KiB".into());
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(&report.detail_json).is_err() {
            return Err("the detail is not JSON".into());
        }
        let severity = match report.severity {
            incident::Severity::Low => "low",
            incident::Severity::Medium => "medium",
            incident::Severity::High => "high",
            incident::Severity::Critical => "critical",
        };
        let mut notify: Vec<&'static str> = report
            .notify
            .iter()
            .map(|party| match party {
                incident::Party::Publisher => "publisher",
                incident::Party::Consumer => "consumer",
            })
            .collect();
        notify.dedup();
        sink.incident(
            &context,
            IncidentReport {
                plugin: self.shared.name.clone(),
                kind: report.kind,
                severity,
                summary: report.summary,
                detail_json: report.detail_json,
                blocked: report.blocked,
                notify,
            },
        )
    }
}

impl metering::Host for HostState {
    fn record_fee(&mut self, item: String, amount_minor: u64, currency: String) {
        let currency_ok = currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase());
        if !valid_kind(&item) || !currency_ok {
            tracing::warn!(plugin = %self.shared.name, item, currency, "fee dropped: invalid item or currency");
            return;
        }
        match (self.shared.platform.clone(), self.context.as_ref()) {
            (Some(sink), Some(context)) => {
                sink.fee(context, &self.shared.name, &item, amount_minor, &currency)
            }
            _ => {
                tracing::info!(plugin = %self.shared.name, item, amount_minor, currency, "fee recorded outside a request or without metering")
            }
        }
    }
}

/// Wall-clock time in Unix milliseconds.
fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
