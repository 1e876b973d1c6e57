//! `bench-plugins`: the `myriad` server's built-in echo against the same
//! echo as a Rust plugin and as a C plugin (`examples/plugins/echo-rust`,
//! `echo-c`), and as WebAssembly components built from C and from
//! JavaScript (`echo-wasm-c`, `echo-wasm-js`, loaded from their
//! precompiled artifacts), one I/O thread each, on the one harness
//! (`myriad_bench::harness::Compare`: servers pinned to CPU 0, `loadgen`
//! to CPU 1, interleaved rounds, medians of per-round paired ratios with
//! their spread).
//!
//! ```text
//! cargo run --release -p myriad-bench --bin bench-plugins -- [--repeat 3] [--duration 5] [--warmup 1] [--idle 19000]
//! ```
//!
//! Targets (server CPU per message against the built-in echo): native
//! plugins 100 × 64 B ping-pong ≤ 1.03×, 100 × 64 B with 16 in flight ≤
//! 1.10×; the C wasm guest ≤ 1.15× and ≤ 1.5× (the JS guest's figures
//! are recorded); idle memory
//! per connection ≤ built-in + the plugin's own per-connection state (the
//! echo plugins keep none; the host's per-connection record is reported).

use anyhow::{bail, Context, Result};
use clap::Parser;
use myriad_bench::harness::{workspace_root, Compare, CompareArgs, ServerSpec};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
#[command(args_override_self = true)]
struct Args {
    /// Use the binaries and plugins as built (no `cargo build`, no
    /// `scripts/build-plugins`).
    #[arg(long)]
    no_build: bool,
    #[command(flatten)]
    bench: CompareArgs,
}

/// A free loopback port from `from` up: below the ephemeral range, so that
/// the idle holder's many client sockets cannot take a variant's port
/// between its runs.
fn free_addr(from: &mut u16) -> Result<SocketAddr> {
    for _ in 0..1000 {
        let p = *from;
        *from = from.checked_add(1).context("ran out of ports")?;
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return Ok(SocketAddr::from(([127, 0, 0, 1], p)));
        }
    }
    bail!("no free port")
}

/// A one-service config for `myriad serve`: one I/O thread, no metrics.
fn config(dir: &Path, name: &str, addr: SocketAddr, handler: &str) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "io_threads = 1\nbackend = \"io_uring\"\n[log]\nsummary_secs = 0\n[[service]]\nname = \"{name}\"\nlisten = \"{addr}\"\nstack = \"tcp\"\n{handler}\n"
        ),
    )?;
    Ok(path)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let root = workspace_root();
    if !args.no_build {
        let st = Command::new("cargo")
            .current_dir(&root)
            .args(["build", "--release", "--quiet", "-p", "myriad-server"])
            .status()?;
        if !st.success() {
            bail!("cargo build of myriad failed");
        }
        let st = Command::new(root.join("scripts/build-plugins"))
            .current_dir(&root)
            .status()?;
        if !st.success() {
            bail!("scripts/build-plugins failed");
        }
    }
    let myriad = root.join("target/release/myriad");
    let plugins = root.join("target/plugins");
    for f in [
        myriad.clone(),
        plugins.join("libecho_rust.so"),
        plugins.join("libecho_c.so"),
        plugins.join("echo_wasm_c.wasm"),
        plugins.join("echo_wasm_js.wasm"),
    ] {
        if !f.is_file() {
            bail!("{} is missing (run without --no-build)", f.display());
        }
    }
    let dir = std::env::temp_dir().join(format!("bench-plugins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("temp dir")?;
    // the harness's own servers and clients use ports from base_port up
    let mut port = args.bench.base_port.saturating_add(500);
    let mut c = Compare::new("bench-plugins", args.bench);
    for (name, handler) in [
        ("builtin", "handler = \"echo\"".to_owned()),
        (
            "rust-plugin",
            format!(
                "handler = \"plugin\"\nplugin = \"{}\"",
                plugins.join("libecho_rust.so").display()
            ),
        ),
        (
            "c-plugin",
            format!(
                "handler = \"plugin\"\nplugin = \"{}\"",
                plugins.join("libecho_c.so").display()
            ),
        ),
        (
            "wasm-c",
            format!(
                "handler = \"plugin\"\nplugin = \"{}\"",
                plugins.join("echo_wasm_c.wasm").display()
            ),
        ),
        (
            "wasm-js",
            // Some JS calls ran past the default 10 ms deadline (likely the
            // engine's garbage collection): 1-2 of 100 connections closed as
            // plugin_timeout per run; none in runs at 30 ms and 100 ms.
            format!(
                "handler = \"plugin\"\nplugin = \"{}\"\nwasm_deadline = \"100ms\"",
                plugins.join("echo_wasm_js.wasm").display()
            ),
        ),
    ] {
        let addr = free_addr(&mut port)?;
        let cfg = config(&dir, name, addr, &handler)?;
        let cfg = cfg.display().to_string();
        c = c.variant(
            ServerSpec::new(name, &myriad, ["serve", "--config", cfg.as_str()])
                .at(addr)
                .log(dir.join(format!("{name}.log"))),
        );
    }
    let r = c.run();
    let _ = std::fs::remove_dir_all(&dir);
    r?;
    Ok(())
}
