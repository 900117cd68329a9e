//! Compiled components, cached on disk by content hash and engine settings.
//!
//! Compiling a component takes tens of milliseconds; loading a precompiled
//! artifact takes well under one. Each component is compiled once per
//! (SHA-256 of its bytes, engine compatibility hash) and the artifact kept in
//! the cache directory; an artifact made by an engine with other settings is
//! refused by wasmtime and simply compiled again.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Where an artifact for `bytes` lives.
fn artifact_path(engine: &Engine, bytes: &[u8], dir: &Path) -> PathBuf {
    let content = Sha256::digest(bytes);
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let engine_hash = hasher.finish();
    let mut name = crate::hex(&content[..16]);
    name.push_str(&format!("-{engine_hash:016x}.cwasm"));
    dir.join(name)
}

/// Loads a component, from the cache when possible. Returns the component
/// and whether it came from the cache.
pub fn load(engine: &Engine, bytes: &[u8], dir: &Path) -> anyhow::Result<(Component, bool)> {
    let path = artifact_path(engine, bytes, dir);
    if path.exists() {
        // SAFETY: `deserialize_file` runs native code from the file, so the
        // file must be one that `Engine::precompile_component` produced. The
        // cache directory belongs to the gateway (created 0700 below) and
        // every artifact in it is written by `store` under a temporary name
        // and renamed into place, so a partially written or foreign file never
        // carries a final name. Wasmtime additionally checks the artifact's
        // header and engine compatibility and refuses mismatches.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok((component, true)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "stale plugin artifact; recompiling")
            }
        }
    }
    let component = Component::new(engine, bytes)?;
    if let Err(e) = store(&component, dir, &path) {
        tracing::warn!(error = %e, "could not cache the compiled plugin");
    }
    Ok((component, false))
}

/// Writes the artifact of a component just compiled: its own serialisation, so that a cache
/// miss compiles once (`Engine::precompile_component` would compile a second time).
fn store(component: &Component, dir: &Path, path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let artifact = component.serialize()?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, artifact)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
