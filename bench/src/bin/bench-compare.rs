//! `bench-compare`: N server variants, each a command line, compared on the
//! closed-loop echo scenarios and idle memory, each against the first
//! (`myriad_bench::harness::Compare`: servers pinned to CPU 0, `loadgen` to
//! CPU 1, interleaved rounds, medians of per-round paired ratios with their
//! spread, one `RESULT` line per scenario and variant).
//!
//! ```text
//! cargo run --release -p myriad-bench --bin bench-compare -- \
//!     --variant 'base=/tmp/echo-base {addr} --threads 1' \
//!     --variant 'new=target/release/examples/echo {addr} --threads 1' \
//!     [--scenarios pp64,pipe64,pp512,idle] [--repeat 3] [--duration 5] [--warmup 1]
//! ```
//!
//! `{addr}` (or `{port}`) in a command is replaced by a free loopback
//! address. `scripts/ab-echo.sh` runs it on two builds of the echo example.

use anyhow::Result;
use clap::Parser;
use myriad_bench::harness::{Compare, CompareArgs, ServerSpec};

/// Compares server variants (NAME=COMMAND, the first is the reference).
/// A flag given twice takes its last value (scripts add defaults first).
#[derive(Parser)]
#[command(args_override_self = true)]
struct Args {
    /// A variant, `NAME=COMMAND ARGS...`; give one per variant.
    #[arg(long = "variant", required = true)]
    variants: Vec<String>,
    /// Closed-loop load generator (`loadgen`, `ws-loadgen`, or a path).
    #[arg(long, default_value = "loadgen")]
    load: String,
    /// Idle holder (`idle-conns`, `ws-idle`, or a path).
    #[arg(long, default_value = "idle-conns")]
    holder: String,
    #[command(flatten)]
    bench: CompareArgs,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut c = Compare::new("bench-compare", args.bench).programs(&args.load, &args.holder);
    for v in &args.variants {
        c = c.variant(ServerSpec::parse(v)?);
    }
    c.run()?;
    Ok(())
}
