//! `bench-wasm-instances`: what a WebAssembly plugin instance costs, on the
//! wasm host (`myriad-wasm`) driven directly in this process, for the C and
//! JavaScript echo guests (`target/plugins/echo_wasm_c.wasm` and
//! `echo_wasm_js.wasm`, built and precompiled by `scripts/build-plugins`).
//!
//! * **Instantiation**: pre-instantiated component → instance, then the
//!   guest's `init` (what a loop pays for its first connection of a plugin,
//!   and again after a poisoning): `--samples` of them, median and p10/p90.
//!   A short microbenchmark: run it on a quiet machine, several times.
//! * **Memory per instance**: the linear memory an instance starts with,
//!   and the RSS that `--instances` live instances add, divided by their
//!   count (copy-on-write memory images: an instance's untouched initial
//!   memory is shared with the image, not copied).
//! * **Guest memory per connection**: one instance serves `--connections`
//!   connections as one loop does (on-open, then one 8-byte on-data each,
//!   so the echo's tally exists); at each checkpoint the linear memory's
//!   growth since the start, divided by the connections, and the RSS
//!   growth. The total at the loop's share of a million connections is
//!   what the memory cap (`wasm_memory`) must hold. Also the slowest call
//!   between checkpoints (wall-clock), which the call deadline
//!   (`wasm_deadline`) must hold: a guest's table of connections growing
//!   in one call is where it shows.
//!
//! ```text
//! cargo run --release -p myriad-bench --bin bench-wasm-instances -- --connections 1000000
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use myriad_bench::harness::result_line;
use myriad_bench::{median, procfs, Table};
use myriad_wasm::{Event, Limits, Origin, WasmPlugin};

#[derive(Parser, Debug)]
struct Args {
    /// Where the built plugins are.
    #[arg(long, default_value = "target/plugins")]
    plugins: PathBuf,
    /// Instantiations timed, per guest.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Live instances for the RSS per instance.
    #[arg(long, default_value_t = 20)]
    instances: usize,
    /// Connections on one instance (checkpoints at 1k, 10k, 100k, 500k, 1M
    /// up to this).
    #[arg(long, default_value_t = 1_000_000)]
    connections: u64,
    /// Only this guest: "c" or "js".
    #[arg(long)]
    only: Option<String>,
}

fn rss() -> Result<u64> {
    procfs::rss_bytes(std::process::id())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn mib(b: f64) -> String {
    format!("{:.2}", b / (1 << 20) as f64)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.samples == 0 || args.instances == 0 || args.connections == 0 {
        bail!("--samples, --instances and --connections must be positive");
    }
    // room for whatever the measurement needs: the cap is what it informs.
    // A generous deadline: a guest's table of connections rehashing at a
    // few hundred thousand entries takes longer than the default 10 ms.
    let limits = Limits {
        memory: 4 << 30,
        deadline: std::time::Duration::from_secs(2),
    };
    let guests = [("c", "echo_wasm_c.wasm"), ("js", "echo_wasm_js.wasm")];
    for (tag, file) in guests {
        if args.only.as_deref().is_some_and(|o| o != tag) {
            continue;
        }
        let path = args.plugins.join(file);
        let (p, origin) = WasmPlugin::load(&path, limits)
            .with_context(|| format!("{} (build it: scripts/build-plugins)", path.display()))?;
        if origin != Origin::Precompiled {
            eprintln!("note: {} compiled now (no matching .cwasm)", path.display());
        }
        p.init("bench", "{}")?;

        // instantiation: a few unmeasured first, then the samples
        for _ in 0..5 {
            drop(p.new_instance()?);
        }
        let mut us = Vec::with_capacity(args.samples);
        for _ in 0..args.samples {
            let t = Instant::now();
            let i = p.new_instance()?;
            us.push(t.elapsed().as_secs_f64() * 1e6);
            drop(i);
        }
        us.sort_by(f64::total_cmp);
        let inst_med = median(us.iter().copied()).unwrap_or(0.0);
        let (inst_p10, inst_p90) = (percentile(&us, 0.1), percentile(&us, 0.9));

        // memory per instance
        let before = rss()?;
        let live: Vec<_> = (0..args.instances)
            .map(|_| p.new_instance())
            .collect::<Result<_, _>>()?;
        let after = rss()?;
        let linear_start = live.first().map_or(0, |i| i.memory_bytes());
        let rss_per_inst = (after as f64 - before as f64) / args.instances as f64;
        drop(live);

        // guest memory per connection: this thread's instance, as a loop's
        let mut t = Table::new()
            .right("connections", 12)
            .right("linear MiB", 11)
            .right("linear B/conn", 14)
            .right("RSS B/conn", 11)
            .right("slowest call ms (which)", 28);
        let g = p.call(u64::MAX, None, Event::Open)?.generation;
        let base_linear = p.memory_bytes().context("the loop's instance")?;
        let base_rss = rss()?;
        let checkpoints: Vec<u64> = [1_000, 10_000, 100_000, 500_000, 1_000_000]
            .into_iter()
            .filter(|&c| c <= args.connections)
            .chain(
                (!matches!(
                    args.connections,
                    1_000 | 10_000 | 100_000 | 500_000 | 1_000_000
                ))
                .then_some(args.connections),
            )
            .collect();
        let mut next = 0;
        let mut results = Vec::new();
        // the slowest call since the last checkpoint, and which: what the
        // call deadline (wasm_deadline) must hold as the guest's state grows
        let mut slowest = (0.0f64, 0u64, "");
        let t0 = Instant::now();
        for id in 1..=args.connections {
            let tc = Instant::now();
            let o = p
                .call(id, None, Event::Open)
                .with_context(|| format!("on-open of connection {id} after {:?}", tc.elapsed()))?;
            let ms = tc.elapsed().as_secs_f64() * 1e3;
            if ms > slowest.0 {
                slowest = (ms, id, "on-open");
            }
            if o.generation != g {
                bail!("the instance was replaced (poisoned?) at connection {id}");
            }
            let tc = Instant::now();
            p.call(id, Some(g), Event::Data(&id.to_le_bytes()))
                .with_context(|| format!("on-data of connection {id} after {:?}", tc.elapsed()))?;
            let ms = tc.elapsed().as_secs_f64() * 1e3;
            if ms > slowest.0 {
                slowest = (ms, id, "on-data");
            }
            if checkpoints.get(next) == Some(&id) {
                next += 1;
                let lin = p.memory_bytes().context("the loop's instance")? - base_linear;
                let r = rss()?.saturating_sub(base_rss);
                t.row([
                    id.to_string(),
                    mib(lin as f64),
                    format!("{:.1}", lin as f64 / id as f64),
                    format!("{:.1}", r as f64 / id as f64),
                    format!("{:.2} ({} {})", slowest.0, slowest.2, slowest.1),
                ]);
                results.push((id, lin, r, slowest.0));
                slowest = (0.0, 0, "");
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "== {tag}: {} ({:.1} MB)",
            path.display(),
            std::fs::metadata(&path)?.len() as f64 / 1e6
        );
        println!(
            "instantiate + init: median {inst_med:.1} us (p10 {inst_p10:.1}, p90 {inst_p90:.1}; {} samples)",
            args.samples
        );
        println!(
            "per instance: linear memory at start {} MiB; RSS {} MiB each ({} live instances)",
            mib(linear_start as f64),
            mib(rss_per_inst),
            args.instances
        );
        println!(
            "{} connections on one instance (on-open + 8-byte on-data each) in {secs:.1} s; linear memory at start {} MiB:",
            args.connections,
            mib(base_linear as f64)
        );
        print!("{}", t.render());
        let mut fields = vec![
            ("guest", tag.to_string()),
            ("instantiate_us_median", format!("{inst_med:.1}")),
            ("instantiate_us_p10", format!("{inst_p10:.1}")),
            ("instantiate_us_p90", format!("{inst_p90:.1}")),
            ("linear_start_bytes", linear_start.to_string()),
            ("rss_per_instance_bytes", format!("{rss_per_inst:.0}")),
        ];
        let slowest_ms = results.iter().map(|x| x.3).fold(0.0, f64::max);
        if let Some(&(n, lin, r, _)) = results.last() {
            fields.push(("connections", n.to_string()));
            fields.push(("linear_growth_bytes", lin.to_string()));
            fields.push((
                "linear_bytes_per_conn",
                format!("{:.1}", lin as f64 / n as f64),
            ));
            fields.push(("rss_bytes_per_conn", format!("{:.1}", r as f64 / n as f64)));
            fields.push(("slowest_call_ms", format!("{slowest_ms:.2}")));
        }
        println!("{}", result_line(&fields));
        for id in 1..=args.connections {
            p.call(id, Some(g), Event::Close(myriad_wasm::CloseReason::Peer, 0))
                .with_context(|| format!("on-close of connection {id}"))?;
        }
    }
    Ok(())
}
