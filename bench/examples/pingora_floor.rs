//! The floor of a pingora reverse proxy on this machine: pingora's own
//! request path and nothing of the gateway's, configured as `chasqui serve`
//! configures pingora (one worker thread on a single-threaded runtime, no
//! downstream modules, mimalloc, rustls with HTTP/2 offered, a keep-alive
//! upstream pool, the same timeouts). No routing, token, grant, policy,
//! record, ledger, metric or log: each call goes to the one upstream as it
//! came, path and head untouched.
//!
//! `bench/run.sh`'s scenario `floor` runs it beside nginx `proxy_pass` so
//! that one run shows how much of chasqui's distance to nginx is pingora's
//! own and how much is the gateway's work.
//!
//! Usage: `pingora_floor UPSTREAM_ADDR HTTP_ADDR HTTPS_ADDR CERT_PEM KEY_PEM`

use async_trait::async_trait;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A proxy that sends every call to one upstream.
struct Floor {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    /// As in chasqui: no compression module running idle on every call.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_error::Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream.as_str(), false, String::new());
        // chasqui's defaults for a service's upstream.
        peer.options.connection_timeout = Some(Duration::from_secs(5));
        peer.options.total_connection_timeout = Some(Duration::from_secs(5));
        peer.options.read_timeout = Some(Duration::from_secs(30));
        peer.options.write_timeout = Some(Duration::from_secs(30));
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [upstream, http, https, cert, key] = args.as_slice() else {
        return Err(
            "usage: pingora_floor UPSTREAM_ADDR HTTP_ADDR HTTPS_ADDR CERT_PEM KEY_PEM".into(),
        );
    };
    let conf = ServerConf {
        threads: 1,
        upstream_keepalive_pool_size: 1024,
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(
        &server.configuration,
        Floor {
            upstream: upstream.clone(),
        },
    );
    let mut tls = TlsSettings::intermediate(cert, key).map_err(|e| format!("TLS settings: {e}"))?;
    tls.enable_h2();
    proxy.add_tls_with_settings(https, None, tls);
    proxy.add_tcp(http);
    server.add_service(proxy);
    server.run_forever()
}
