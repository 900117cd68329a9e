//! The plugin call of `benches/plugin_call.rs` (`shared/allowlist_call.rs`),
//! repeated a given number of times, for instruction counts that a noisy
//! machine does not blur:
//!
//! ```sh
//! cargo build --release -p chasqui-bench --example plugin_call_count
//! B=$CARGO_TARGET_DIR/release/examples/plugin_call_count
//! $B pooled 1 /tmp/pc-cache   # compiles the plugin into the cache once
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.2000 $B pooled 2000 /tmp/pc-cache
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.4000 $B pooled 4000 /tmp/pc-cache
//! ```
//!
//! The difference of the two totals over 2000 is the instructions of one
//! call (check out, request-headers phase, give back); `request` instead of
//! `pooled` counts a fresh instance per call. With `CHASQUI_PLUGIN_PERFMAP=1`
//! the process also writes `/tmp/perf-<pid>.map`, which names the addresses
//! of the plugin's compiled functions that callgrind shows as `???`.

#[path = "../shared/allowlist_call.rs"]
mod allowlist_call;

use allowlist_call::{build_allowlist, context, head, spec};
use chasqui::plugin::{HeadersAction, Isolation, PluginEngine};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let isolation = match args.next().as_deref() {
        Some("request") => Isolation::Request,
        _ => Isolation::Pooled,
    };
    let calls: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let cache = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "/tmp/plugin-call-cache".into()),
    );
    std::fs::create_dir_all(&cache)?;

    let component = build_allowlist()?;
    let engine = PluginEngine::new(&cache, None)?;
    let plugin = engine.load(spec(&component, isolation))?;
    let head = head();
    let mut passed = 0;
    for _ in 0..calls {
        let mut call = plugin.check_out(context())?;
        if matches!(call.on_request_headers(&head)?, HeadersAction::Modify(_)) {
            passed += 1;
        }
    }
    println!("{passed} of {calls} calls passed");
    Ok(())
}
