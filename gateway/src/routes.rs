//! The route table: an immutable snapshot of the catalog built for lookups
//! on the request path, swapped atomically when the catalog changes.

use crate::upstream::{parse_ca_bundle, Backend, Health, UpstreamPool};
use chasqui_catalog::store::{EnvironmentRoute, Snapshot};
use chasqui_catalog::Environment;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A routable service with its per-environment pools.
#[derive(Debug)]
pub struct ServiceEntry {
    /// Row id.
    pub id: i64,
    /// Publishing entity's code.
    pub entity_code: String,
    /// Service code.
    pub code: String,
    /// Major version.
    pub version: u32,
    /// Catalog category (canonical name), for policy scopes.
    pub category: String,
    /// `entity/v{n}`, for headers and logs.
    pub route_name: String,
    pools: [Option<Arc<UpstreamPool>>; 2],
}

impl ServiceEntry {
    /// The pool of an environment, if the service is enabled there.
    pub fn pool(&self, env: Environment) -> Option<&Arc<UpstreamPool>> {
        self.pools[env_index(env)].as_ref()
    }
}

fn env_index(env: Environment) -> usize {
    match env {
        Environment::Pruebas => 0,
        Environment::Produccion => 1,
    }
}

/// Everything the request path looks up, built from one catalog snapshot.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// The catalog change sequence this table reflects.
    pub seq: i64,
    services: HashMap<String, Vec<(u32, Arc<ServiceEntry>)>>,
    grants: HashSet<(i64, i64, Environment)>,
}

impl RouteTable {
    /// Finds the service at `/{entity}/v{version}/`.
    pub fn service(&self, entity: &str, version: u32) -> Option<&Arc<ServiceEntry>> {
        self.services
            .get(entity)?
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, s)| s)
    }

    /// Finds a service by its route name, `entidad/v{n}`.
    pub fn service_named(&self, route_name: &str) -> Option<&Arc<ServiceEntry>> {
        let (entity, version) = route_name.split_once("/v")?;
        self.service(entity, version.parse().ok()?)
    }

    /// Whether a consumer holds an active grant for a service in an environment.
    pub fn granted(&self, consumer_id: i64, service_id: i64, env: Environment) -> bool {
        self.grants.contains(&(consumer_id, service_id, env))
    }

    /// Every routable service.
    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceEntry>> {
        self.services.values().flatten().map(|(_, s)| s)
    }

    /// Every pool, for the health checker.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<UpstreamPool>> {
        self.services
            .values()
            .flatten()
            .flat_map(|(_, s)| s.pools.iter().flatten())
    }
}

/// Health state per upstream address, kept across table rebuilds.
#[derive(Debug, Default)]
pub struct HealthRegistry {
    by_addr: Mutex<HashMap<SocketAddr, Arc<Health>>>,
}

impl HealthRegistry {
    fn get(&self, addr: SocketAddr) -> Arc<Health> {
        let mut map = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(addr).or_default().clone()
    }

    fn retain(&self, live: &HashSet<SocketAddr>) {
        let mut map = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|addr, _| live.contains(addr));
    }
}

/// Builds a table from a snapshot. Upstream host names are resolved here, off
/// the request path; an upstream that cannot be resolved or parsed is left
/// out with a warning instead of failing the whole catalog.
pub async fn build(snapshot: &Snapshot, health: &HealthRegistry) -> RouteTable {
    let mut table = RouteTable {
        seq: snapshot.seq,
        ..Default::default()
    };
    let mut live = HashSet::new();
    for s in &snapshot.services {
        let mut pools: [Option<Arc<UpstreamPool>>; 2] = [None, None];
        for env in Environment::ALL {
            if !s.serves(env) {
                continue;
            }
            let Some(env_route) = s.environment(env) else {
                continue;
            };
            if let Some(pool) =
                build_pool(&s.entity_code, s.version, env_route, health, &mut live).await
            {
                pools[env_index(env)] = Some(Arc::new(pool));
            }
        }
        let entry = ServiceEntry {
            id: s.id,
            entity_code: s.entity_code.clone(),
            code: s.code.clone(),
            version: s.version,
            category: s.category.clone(),
            route_name: format!("{}/v{}", s.entity_code, s.version),
            pools,
        };
        if s.status != "draft" {
            table
                .services
                .entry(s.entity_code.clone())
                .or_default()
                .push((s.version, Arc::new(entry)));
        }
    }
    table.grants = snapshot.grants.iter().copied().collect();
    health.retain(&live);
    table
}

async fn build_pool(
    entity: &str,
    version: u32,
    env_route: &EnvironmentRoute,
    health: &HealthRegistry,
    live: &mut HashSet<SocketAddr>,
) -> Option<UpstreamPool> {
    let env = env_route.environment;
    let ca = match &env_route.ca_pem {
        Some(pem) => match parse_ca_bundle(pem) {
            Ok(ca) => Some(ca),
            Err(e) => {
                tracing::warn!(service = %format!("{entity}/v{version}"), %env, error = %e, "upstream CA unusable; environment disabled");
                return None;
            }
        },
        None => None,
    };
    let mut backends = Vec::new();
    for up in &env_route.upstreams {
        match resolve(&up.url).await {
            Ok((addr, tls, host, authority, base_path)) => {
                live.insert(addr);
                backends.push((
                    Backend {
                        url: up.url.clone(),
                        addr,
                        tls,
                        sni: host,
                        authority,
                        base_path,
                        health: health.get(addr),
                    },
                    up.weight,
                ));
            }
            Err(e) => {
                tracing::warn!(service = %format!("{entity}/v{version}"), %env, url = %up.url, error = %e, "upstream left out");
            }
        }
    }
    if backends.is_empty() {
        return None;
    }
    let mut pool = UpstreamPool::new(
        backends,
        ca,
        env_route.connect_timeout_ms.map(Duration::from_millis),
        env_route.read_timeout_ms.map(Duration::from_millis),
    );
    pool.ca_pem = env_route.ca_pem.as_deref().map(Arc::from);
    Some(pool)
}

/// Splits an upstream URL into what a connection needs.
async fn resolve(url: &str) -> Result<(SocketAddr, bool, String, String, String), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("scheme must be http or https".into()),
    };
    let host = uri
        .host()
        .ok_or("URL has no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_else(|| host.clone());
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))?;
    let base_path = uri.path().trim_end_matches('/').to_string();
    Ok((addr, tls, host, authority, base_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chasqui_catalog::store::{ServiceRoute, UpstreamRow};

    fn service(id: i64, status: &str) -> ServiceRoute {
        ServiceRoute {
            id,
            entity_code: "segip".into(),
            code: format!("s{id}"),
            version: id as u32,
            name: "x".into(),
            category: "Identificación".into(),
            status: status.into(),
            environments: Environment::ALL
                .iter()
                .map(|&environment| EnvironmentRoute {
                    environment,
                    upstreams: vec![UpstreamRow {
                        url: "http://127.0.0.1:9/base/".into(),
                        weight: 1,
                    }],
                    ca_pem: None,
                    connect_timeout_ms: None,
                    read_timeout_ms: None,
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn status_decides_which_environments_route() {
        let snapshot = Snapshot {
            seq: 7,
            services: vec![
                service(1, "published"),
                service(2, "testing"),
                service(3, "draft"),
            ],
            grants: vec![(10, 1, Environment::Produccion)],
        };
        let table = build(&snapshot, &HealthRegistry::default()).await;
        let published = table.service("segip", 1).unwrap();
        assert!(published.pool(Environment::Produccion).is_some());
        assert_eq!(
            published.pool(Environment::Pruebas).unwrap().backends[0].base_path,
            "/base"
        );
        let testing = table.service("segip", 2).unwrap();
        assert!(
            testing.pool(Environment::Pruebas).is_some()
                && testing.pool(Environment::Produccion).is_none()
        );
        assert!(table.service("segip", 3).is_none());
        assert!(table.granted(10, 1, Environment::Produccion));
        assert!(!table.granted(10, 1, Environment::Pruebas));
        assert_eq!(table.seq, 7);
    }
}
