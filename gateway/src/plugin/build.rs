//! `chasqui plugin build`: compiles a plugin crate to a WebAssembly
//! component, choosing the toolchain by itself (see `TOOLCHAIN.md`).
//!
//! 1. If rustup has the `wasm32-unknown-unknown` target installed, the
//!    ordinary `cargo build --target wasm32-unknown-unknown` is used.
//! 2. Otherwise Debian's `rustc-web` toolchain builds `std` for the target
//!    itself (`-Zbuild-std`), linking with `wasm-ld-16`; its packages are
//!    installed when missing and the user is root.
//!
//! The core module is then wrapped into a component with `wit-component`
//! (the WIT world is embedded in the module by `wit-bindgen`).

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian packages of the fallback toolchain.
const DEBIAN_PACKAGES: &[&str] = &["rustc-web", "cargo-web", "rust-web-src", "lld-16"];

/// Release settings for plugins: optimised for speed, without unwinding, with the
/// function names kept. Speed, not size: a plugin runs on every request, and at `opt-level
/// = "s"` a pooled call of the example plugin executed 39,000 instructions against 26,500
/// at 3 (`bench/examples/plugin_call_count.rs` under callgrind). Components grow (the
/// example to about 160 KiB, the AGETIC plugins to 380-500 KiB), which costs only at the
/// compile once per content hash. The names section makes a trap's backtrace and a profile
/// (`CHASQUI_PLUGIN_PERFMAP`) name the plugin's functions.
const PROFILE: &[(&str, &str)] = &[
    ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3"),
    ("CARGO_PROFILE_RELEASE_LTO", "true"),
    ("CARGO_PROFILE_RELEASE_PANIC", "abort"),
    ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1"),
    ("CARGO_PROFILE_RELEASE_DEBUG", "false"),
    ("CARGO_PROFILE_RELEASE_STRIP", "false"),
];

/// The guest's shadow stack by default: 256 KiB instead of rustc's 1 MiB for wasm32.
/// `wasm-ld` lays the stack out first in linear memory (`--stack-first`), so
/// its size is where the data and heap begin and the least any instance's
/// memory is. The host scans a `request`-mode instance's whole memory for
/// dirty pages when it is dropped (`PAGEMAP_SCAN`), and a smaller memory is a
/// shorter scan. A plugin that overflows the stack writes below address 0,
/// out of bounds: a trap, answered like any other (`/deep` in the tests'
/// `misbehave` plugin). 256 KiB leaves room for serde_json's nesting limit
/// (128 levels) on a request body. `CHASQUI_PLUGIN_STACK` (bytes) sets another size, for
/// a plugin that needs more.
const STACK_BYTES: u32 = 256 << 10;

/// The linker flags of the plugin's stack size.
fn stack_flags() -> anyhow::Result<String> {
    let bytes = match std::env::var("CHASQUI_PLUGIN_STACK") {
        Err(_) => STACK_BYTES,
        Ok(text) => text
            .parse::<u32>()
            .ok()
            .filter(|b| b % 16 == 0 && *b >= 16 << 10)
            .with_context(|| {
                format!("CHASQUI_PLUGIN_STACK={text}: not a multiple of 16 bytes of at least 16384")
            })?,
    };
    Ok(format!("-C link-arg=-zstack-size={bytes}"))
}

/// Which toolchain builds the core module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toolchain {
    /// rustup with the wasm32 target installed.
    Rustup,
    /// Debian's rustc-web with `-Zbuild-std`.
    Debian,
}

/// Picks the toolchain, installing Debian's when needed and allowed.
pub fn toolchain() -> anyhow::Result<Toolchain> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-unknown-unknown")
        })
        .unwrap_or(false);
    if installed {
        return Ok(Toolchain::Rustup);
    }
    if debian_ready() {
        return Ok(Toolchain::Debian);
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if !is_root {
        bail!(
            "no wasm toolchain: run `rustup target add wasm32-unknown-unknown`, or `sudo apt-get install -y {}`",
            DEBIAN_PACKAGES.join(" ")
        );
    }
    tracing::info!(packages = %DEBIAN_PACKAGES.join(" "), "installing the wasm toolchain from Debian");
    let update = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .context("running apt-get update")?;
    if !update.success() {
        bail!("apt-get update failed");
    }
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(DEBIAN_PACKAGES)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install")?;
    if !install.success() || !debian_ready() {
        bail!("could not install {}", DEBIAN_PACKAGES.join(" "));
    }
    Ok(Toolchain::Debian)
}

fn debian_ready() -> bool {
    Path::new("/usr/bin/rustc").exists()
        && Path::new("/usr/bin/cargo").exists()
        && Path::new("/usr/lib/rustlib/src/rust/library").exists()
        && Command::new("wasm-ld-16")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// The package name in a crate's `Cargo.toml`.
fn package_name(crate_dir: &Path) -> anyhow::Result<String> {
    let manifest = crate_dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let value: toml::Value =
        toml::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
    value
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{} has no [package] name", manifest.display()))
}

/// Default directory for plugin builds, apart from the host's target.
pub fn default_target_dir() -> PathBuf {
    std::env::var_os("CHASQUI_WASM_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/chasqui-wasm-target"))
        })
        .unwrap_or_else(|| PathBuf::from("target-wasm"))
}

/// Where cargo builds a plugin by default: a directory of its own per
/// checkout (the nearest ancestor of `crate_dir` holding a `Cargo.lock`),
/// under the shared default directory.
///
/// Why not the shared directory itself: cargo identifies a workspace's
/// own packages by their path inside the workspace, so two checkouts of the
/// same plugin share one fingerprint and one output file, and freshness is
/// decided by the sources' modification times. A checkout whose files are
/// older than the other checkout's last build is taken as fresh and gets the
/// other's module: a stale plugin, silently (seen with CI's clone beside the
/// work tree). Per checkout, each build is also incremental again instead of
/// undoing the other's. The components still go to the shared `components/`: the plugin
/// directory that `serve` reads by default, where the last build wins.
fn checkout_build_dir(shared: &Path, crate_dir: &Path) -> PathBuf {
    let dir = crate_dir
        .canonicalize()
        .unwrap_or_else(|_| crate_dir.to_path_buf());
    let root = dir
        .ancestors()
        .find(|a| a.join("Cargo.lock").is_file())
        .unwrap_or(&dir);
    let digest = ring::digest::digest(&ring::digest::SHA256, root.as_os_str().as_encoded_bytes());
    let key: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let checkouts = shared.join("checkouts");
    prune_gone_checkouts(&checkouts);
    let dir = checkouts.join(key);
    // Best effort: without the note the directory is only never pruned.
    let _ = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::write(dir.join(CHECKOUT_NOTE), root.as_os_str().as_encoded_bytes())
    });
    dir
}

/// The file in a checkout's build directory that names the checkout.
const CHECKOUT_NOTE: &str = "checkout";

/// Removes the build directories of checkouts that no longer exist (a CI
/// clone in a temporary directory leaves about half a GiB behind). Best
/// effort; a directory without its note (being made) is left alone.
fn prune_gone_checkouts(checkouts: &Path) {
    let Ok(entries) = std::fs::read_dir(checkouts) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(root) = std::fs::read(entry.path().join(CHECKOUT_NOTE)) else {
            continue;
        };
        let Ok(root) = String::from_utf8(root) else {
            continue;
        };
        if !Path::new(&root).exists() {
            tracing::info!(checkout = %root, dir = %entry.path().display(), "removing the plugin build directory of a checkout that is gone");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Builds the plugin crate in `crate_dir` and writes its component to `out`
/// (default: `<target>/components/<package>.wasm`). Returns the path. With no
/// `target_dir`, cargo builds under the default directory in a directory of
/// the checkout's own (see `checkout_build_dir`).
pub fn build(
    crate_dir: &Path,
    out: Option<&Path>,
    target_dir: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let name = package_name(crate_dir)?;
    let (target_dir, cargo_dir) = match target_dir {
        Some(dir) => (dir.to_path_buf(), dir.to_path_buf()),
        None => {
            let shared = default_target_dir();
            let cargo_dir = checkout_build_dir(&shared, crate_dir);
            (shared, cargo_dir)
        }
    };
    let toolchain = toolchain()?;
    let mut cmd = match toolchain {
        Toolchain::Rustup => Command::new("cargo"),
        Toolchain::Debian => Command::new("/usr/bin/cargo"),
    };
    // Start from a clean slate: a build started from inside another cargo
    // (tests, scripts) must not inherit its settings.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_")
            || key.starts_with("RUSTC")
            || key == "RUSTFLAGS"
            || key == "RUSTDOCFLAGS"
        {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd.arg("build")
        .args([
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "--package",
            &name,
            "--manifest-path",
        ])
        .arg(crate_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &cargo_dir)
        .envs(PROFILE.iter().copied())
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
            stack_flags()?,
        );
    if toolchain == Toolchain::Debian {
        cmd.env_remove("RUSTUP_TOOLCHAIN")
            .arg("-Zbuild-std=std,panic_abort")
            .env("RUSTC_BOOTSTRAP", "1")
            .env("RUSTC", "/usr/bin/rustc")
            .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", "wasm-ld-16");
    }
    let status = cmd
        .status()
        .with_context(|| format!("running cargo for {name}"))?;
    if !status.success() {
        bail!("building {name} for wasm32 failed ({status})");
    }
    let module_path = cargo_dir
        .join("wasm32-unknown-unknown/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    let module = std::fs::read(&module_path)
        .with_context(|| format!("reading {}", module_path.display()))?;
    let component = componentize(&module)
        .with_context(|| format!("making a component of {}", module_path.display()))?;
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| target_dir.join("components").join(format!("{name}.wasm")));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Write under a temporary name, then rename: concurrent builds and
    // readers never see half a file.
    let tmp = out.with_extension(format!("wasm.tmp{}", std::process::id()));
    std::fs::write(&tmp, &component)?;
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}

/// Wraps a core module (with its embedded WIT world) into a component.
pub fn componentize(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut encoder = wit_component::ComponentEncoder::default();
    encoder.module(module)?.validate(true);
    encoder.encode()
}

/// The SDK's template, compiled in so that `plugin new` works anywhere.
const TEMPLATE: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../../sdk-plugin/template/Cargo.toml"),
    ),
    (
        "config.schema.json",
        include_str!("../../../sdk-plugin/template/config.schema.json"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../sdk-plugin/template/src/lib.rs"),
    ),
];

/// `chasqui plugin new`: writes the SDK's template into `dir` as plugin
/// `name`, depending on the SDK at `sdk` (a path as written in Cargo.toml).
pub fn new_plugin(dir: &Path, name: &str, sdk: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!("a plugin name is [a-z][a-z0-9-]*, at most 64 characters");
    }
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    for (file, text) in TEMPLATE {
        let text = text
            .replace("chasqui-plugin-template", &format!("chasqui-plugin-{name}"))
            .replace("name: \"template\"", &format!("name: \"{name}\""))
            .replace(
                "chasqui-plugin-sdk = { path = \"..\" }",
                &format!("chasqui-plugin-sdk = {{ path = \"{sdk}\" }}"),
            );
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_checkout_builds_apart_and_gone_checkouts_are_pruned() {
        let shared = tempfile::tempdir().unwrap();
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        for checkout in [&one, &two] {
            std::fs::write(checkout.path().join("Cargo.lock"), "").unwrap();
            std::fs::create_dir_all(checkout.path().join("plugins/p")).unwrap();
        }
        let dir_one = checkout_build_dir(shared.path(), &one.path().join("plugins/p"));
        let dir_two = checkout_build_dir(shared.path(), &two.path().join("plugins/p"));
        assert_ne!(dir_one, dir_two);
        // The same checkout, another plugin: the same directory (shared deps).
        std::fs::create_dir_all(one.path().join("plugins/q")).unwrap();
        assert_eq!(
            checkout_build_dir(shared.path(), &one.path().join("plugins/q")),
            dir_one
        );
        assert!(dir_one.is_dir() && dir_two.is_dir());
        // A directory being made (no note yet) is never pruned.
        let making = shared.path().join("checkouts/making");
        std::fs::create_dir_all(&making).unwrap();

        drop(two);
        checkout_build_dir(shared.path(), &one.path().join("plugins/p"));
        assert!(dir_one.is_dir(), "a live checkout's directory stays");
        assert!(!dir_two.exists(), "a gone checkout's directory is removed");
        assert!(making.is_dir());
    }
}
