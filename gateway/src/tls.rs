//! The data plane's certificate: the configured one, or a self-signed one
//! generated at first start in the data directory.

use anyhow::Context;
use std::path::{Path, PathBuf};

/// Returns the certificate and key paths to serve with, generating a
/// self-signed pair under `data_dir/tls/` when none is configured and none
/// was generated before.
pub fn ensure_certificate(
    configured: Option<&(PathBuf, PathBuf)>,
    data_dir: &Path,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    if let Some((cert, key)) = configured {
        for p in [cert, key] {
            std::fs::metadata(p).with_context(|| format!("TLS file {}", p.display()))?;
        }
        return Ok((cert.clone(), key.clone()));
    }
    let dir = data_dir.join("tls");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    write_private(&key, certified.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, certified.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed certificate for localhost");
    Ok((cert, key))
}

/// Writes a file readable only by its owner.
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}
