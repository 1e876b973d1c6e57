//! `bench-ws`: Myriad's WebSocket echo (`ws_echo`) against tokio-tungstenite
//! and fastwebsockets echo servers, in the same run, on the same cores.
//!
//! Every server runs single-threaded, pinned to CPU 0; the load generator
//! (`ws-loadgen`, pinned to CPU 1) keeps a fixed number of binary messages
//! in flight on each connection and checks every echoed byte. For each
//! scenario and server it reports messages/s and the server's CPU time per
//! message (`utime + stime` sampled at the start and end of the measured
//! window), the median of `--repeat` interleaved runs (by CPU/message), then
//! Myriad's ratios to each baseline (medians of the per-round paired
//! ratios). Each run also reports how busy the server was and how much CPU
//! time anything else (not the server, not the load generator) used on the
//! two benchmark CPUs meanwhile (`other`): a run with much `other` was
//! disturbed (`--wait-quiet` and `--busy-retries`, off by default, wait for
//! quiet CPUs and re-run such runs as `bench-echo` does). The idle scenario
//! opens `--idle` WebSocket connections (`ws-idle`) on a fresh server
//! process and divides the growth of its `VmRSS` by their number (measured
//! from after a warm-up of 100 connections, so that code pages and the
//! loop's first allocations are not counted per connection); idle-deflate
//! does the same with clients that offer permessage-deflate as browsers do
//! (Myriad only: the baselines do not implement the extension).
//!
//! Two more servers can be named with `--servers`: `floor` and
//! `floor-epoll`, `ws-floor` (C, `bench/floors/ws-floor.c`,
//! compiled with `cc -O3 … -luring -lcrypto`; Debian `liburing-dev` and
//! `libssl-dev`, installed when missing). They echo each frame with the
//! least work possible (unmask in place, the server header over the
//! client's, one send from the same bytes): `floor` on io_uring as Myriad's
//! backend drives it for large messages (multishot receives into 32 KiB
//! provided buffers, echoes sent from them, one enter per turn),
//! `floor-epoll` with one `read` and one `write` per frame as
//! fastwebsockets does. Their ratios to fastwebsockets show how low
//! Myriad's can go with those system calls in the window at hand. For
//! ping-pong loads (a frame cut by a receive while earlier echoes of the
//! same connection are in flight closes it); no idle figure.
//!
//! ```text
//! cargo run --release -p myriad-bench --bin bench-ws -- [--duration 3] [--warmup 1] \
//!     [--repeat 3] [--idle 19000] [--servers myriad,tungstenite,fastwebsockets] \
//!     [--scenarios pp64,pipe64,pp16k,idle,idle-deflate] [--no-build] [--json FILE]
//! ```
//!
//! Unless `--no-build`, it first builds `ws_echo` (`cargo build --release -p
//! myriad-ws --example ws_echo`), the load tools, and the baselines
//! (`bench/ws-baselines`, its own workspace, into `target/ws-baselines`).
//! The report ends with one `RESULT` line per scenario and server.
//! Starting, pinning, sampling, rounds and statistics are
//! `myriad_bench::harness`'s.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;
use myriad_bench::harness::{
    cargo_build, is_floor, median_run, num, paired_ratio_median, result_line, Load, Rig, Run,
    Scenario, ServerSpec, Table, WS_FLOOR,
};

#[derive(Parser, Debug)]
struct Args {
    /// Measured seconds per run.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Warm-up seconds per run.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Runs per scenario and server (median reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Idle connections for the memory scenario.
    #[arg(long, default_value_t = 19_000)]
    idle: usize,
    /// Servers to run: myriad, myriad-epoll, tungstenite, fastwebsockets,
    /// floor, floor-epoll.
    #[arg(
        long,
        default_value = "myriad,tungstenite,fastwebsockets",
        value_delimiter = ','
    )]
    servers: Vec<String>,
    /// Scenarios to run.
    #[arg(
        long,
        default_value = "pp64,pipe64,pp16k,idle,idle-deflate",
        value_delimiter = ','
    )]
    scenarios: Vec<String>,
    /// CPU for the servers.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU for the load generator.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// First port to use.
    #[arg(long, default_value_t = 19300)]
    port: u16,
    /// Before each run, wait up to this many seconds for the two CPUs to be
    /// idle (0 = do not wait).
    #[arg(long, default_value_t = 0.0)]
    wait_quiet: f64,
    /// Re-run a run disturbed by other work on the CPUs up to this many
    /// times (the least disturbed one is kept).
    #[arg(long, default_value_t = 0)]
    busy_retries: usize,
    /// Do not build anything (use binaries already built; a C floor whose
    /// binary is missing is still compiled).
    #[arg(long)]
    no_build: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

const fn scenario(name: &'static str, size: usize, window: usize) -> Scenario {
    Scenario {
        name,
        short: name,
        connections: 100,
        size,
        window,
        desc: "",
    }
}

const SCENARIOS: [Scenario; 3] = [
    scenario("pp64", 64, 1),
    scenario("pipe64", 64, 16),
    scenario("pp16k", 16384, 1),
];

fn spec(rig: &Rig, name: &str) -> Result<ServerSpec> {
    let ws_echo = rig.bin("examples/ws_echo");
    let baseline = |b: &str| rig.baseline_bin("ws-baselines", b);
    let s = match name {
        "myriad" => ServerSpec::new(
            name,
            ws_echo,
            ["{addr}", "--threads", "1", "--backend", "io_uring"],
        ),
        "myriad-epoll" => ServerSpec::new(
            name,
            ws_echo,
            ["{addr}", "--threads", "1", "--backend", "epoll"],
        ),
        "tungstenite" => {
            ServerSpec::new(name, baseline("ws-echo-tungstenite"), ["--addr", "{addr}"])
        }
        "fastwebsockets" => ServerSpec::new(
            name,
            baseline("ws-echo-fastwebsockets"),
            ["--addr", "{addr}"],
        ),
        "floor" => ServerSpec::new(name, baseline(WS_FLOOR.name), ["{addr}"]),
        "floor-epoll" => ServerSpec::new(name, baseline(WS_FLOOR.name), ["{addr}", "--epoll"]),
        other => bail!(
            "unknown server {other} (known: myriad, myriad-epoll, tungstenite, fastwebsockets, \
             floor, floor-epoll)"
        ),
    };
    // The readiness probe is not a WebSocket client: let the server drop it.
    Ok(s.env("RUST_LOG", "warn").settle(Duration::from_millis(100)))
}

fn build(rig: &Rig) -> Result<()> {
    let dir = rig.bin_dir();
    let ok = cargo_build(
        "bench-ws",
        dir,
        &["-p", "myriad-ws", "--example", "ws_echo"],
        &[],
    )? && cargo_build(
        "bench-ws",
        dir,
        &[
            "-p",
            "myriad-bench",
            "--bin",
            "ws-loadgen",
            "--bin",
            "ws-idle",
        ],
        &[],
    )? && rig.build_baselines("bench-ws", "ws-baselines", &[])?;
    if !ok {
        bail!("cargo build failed");
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let durations_ok = args.duration.is_finite()
        && args.duration > 0.0
        && args.warmup.is_finite()
        && args.warmup >= 0.0;
    if args.repeat == 0 || !durations_ok {
        bail!("--repeat and --duration must be positive, --warmup not negative");
    }
    let mut rig = Rig::new("bench-ws", args.server_cpu, args.client_cpu, args.port)?;
    rig.wait_quiet = args.wait_quiet;
    rig.busy_retries = args.busy_retries;
    if !args.no_build {
        build(&rig)?;
    }
    if args.servers.iter().any(|s| is_floor(s)) {
        rig.build_c_baseline("bench-ws", &WS_FLOOR, !args.no_build)?;
    }
    let specs: Vec<ServerSpec> = args
        .servers
        .iter()
        .map(|n| spec(&rig, n))
        .collect::<Result<_>>()?;
    let load: Vec<Scenario> = SCENARIOS
        .into_iter()
        .filter(|s| args.scenarios.iter().any(|n| n == s.name))
        .collect();
    let mut table = Table::new()
        .left("scenario", 8)
        .left("server", 15)
        .right("msgs/s", 12)
        .right("CPU us/msg", 14)
        .right("server", 8)
        .right("other max", 10);
    let mut results = Vec::new();
    // JSON rows: the table's, then the ratios, then idle memory.
    let (mut json, mut json_ratios, mut json_idle) = (Vec::new(), Vec::new(), Vec::new());
    let mut ratios = Vec::new();
    if !load.is_empty() {
        let mut servers = Vec::new();
        for s in &specs {
            servers.push(rig.start(s)?);
        }
        let loadgen = rig.bin("ws-loadgen");
        let grid = rig.rounds(
            &mut servers,
            &load,
            args.repeat,
            |rig, round, sc, server| {
                let l = Load::closed_loop(&loadgen, sc, args.warmup, args.duration);
                let tag = format!(
                    "bench-ws: round {} {:<7} {:<15}",
                    round + 1,
                    sc.name,
                    server.name()
                );
                rig.measure(server, &l, &tag, |r| {
                    eprintln!(
                        "{tag} {:>10.0} msg/s {:>8.3} us/msg  server {:>3.0}%  other {:>3.0}%",
                        r.rate(),
                        r.cpu_us_per_op(),
                        r.server_util() * 100.0,
                        r.other_util() * 100.0
                    );
                    if !r.status.success() {
                        bail!("ws-loadgen failed ({}, {} errors)", r.status, r.errors());
                    }
                    Ok(())
                })
            },
        )?;
        for (si, sc) in load.iter().enumerate() {
            // Paired ratios, round by round: myriad against each other
            // server, and each floor against fastwebsockets (how low
            // Myriad's ratio to it can go with the floors' system calls).
            let at = |name: &str| specs.iter().position(|s| s.name == name);
            let mut pairs: Vec<(usize, usize)> = Vec::new();
            if let Some(mi) = at("myriad") {
                pairs.extend((0..specs.len()).filter(|&vi| vi != mi).map(|vi| (mi, vi)));
            }
            if let Some(fws) = at("fastwebsockets") {
                pairs.extend(
                    (0..specs.len())
                        .filter(|&fi| is_floor(&specs[fi].name))
                        .map(|fi| (fi, fws)),
                );
            }
            for (ai, bi) in pairs {
                let (a, b) = (&specs[ai].name, &specs[bi].name);
                let (m, r) = (&grid.get(si, ai).runs, &grid.get(si, bi).runs);
                let rate = paired_ratio_median(m, r, Run::rate).unwrap_or(f64::NAN);
                let cpu = paired_ratio_median(m, r, Run::cpu_us_per_op).unwrap_or(f64::NAN);
                // Myriad's lines keep their old form (no server name).
                let who = if a == "myriad" {
                    String::new()
                } else {
                    format!("{a} ")
                };
                ratios.push(format!(
                    "{:<8} {who}vs {b:<15} msgs/s {rate:>6.2}x   CPU/msg {cpu:>6.3}x",
                    sc.name
                ));
                json_ratios.push(serde_json::json!({"scenario": sc.name, "server": a,
                    "baseline": b, "paired_msgs_ratio": rate, "paired_cpu_ratio": cpu}));
            }
            for (vi, s) in specs.iter().enumerate() {
                let runs = &grid.get(si, vi).runs;
                let Some(m) = median_run(runs, Run::cpu_us_per_op) else {
                    table.row([sc.name, s.name.as_str(), "FAILED"]);
                    continue;
                };
                let other_max = runs.iter().map(Run::other_util).fold(0.0, f64::max);
                table.row([
                    sc.name.to_string(),
                    s.name.clone(),
                    format!("{:.0}", m.rate()),
                    format!("{:.3}", m.cpu_us_per_op()),
                    format!("{:.0}%", m.server_util() * 100.0),
                    format!("{:.0}%", other_max * 100.0),
                ]);
                json.push(serde_json::json!({"scenario": sc.name, "server": s.name,
                    "msgs_per_sec": m.rate(), "cpu_us_per_msg": m.cpu_us_per_op(),
                    "server_cpu_util": m.server_util(), "other_cpu_util_max": other_max}));
                results.push(result_line(&[
                    ("bench", "ws".into()),
                    ("scenario", sc.name.into()),
                    ("server", s.name.clone()),
                    ("msgs_per_sec", num(Some(m.rate()), 1)),
                    ("cpu_us_per_msg", num(Some(m.cpu_us_per_op()), 4)),
                    ("rounds", runs.len().to_string()),
                    ("other_max", num(Some(other_max), 3)),
                ]));
            }
        }
    }
    let mut idle: Vec<(String, f64)> = Vec::new();
    // idle: clients offering no extension; idle-deflate: clients offering
    // permessage-deflate as browsers do (Myriad only: the baselines do not
    // implement the extension, so they would measure the plain case again).
    for (scenario, deflate) in [("idle", false), ("idle-deflate", true)] {
        if !args.scenarios.iter().any(|s| s == scenario) {
            continue;
        }
        let ws_idle = rig.bin("ws-idle");
        let extra: &[&str] = if deflate { &["--deflate"] } else { &[] };
        let warm = Load::new(
            &ws_idle,
            [
                "--addr",
                "{addr}",
                "--connections",
                "100",
                "--hold-secs",
                "0",
            ]
            .into_iter()
            .chain(extra.iter().copied()),
        );
        let n = args.idle.to_string();
        let holder = Load::new(
            &ws_idle,
            ["--addr", "{addr}", "--connections", &n, "--hold-secs", "60"]
                .into_iter()
                .chain(extra.iter().copied()),
        );
        for s in &specs {
            // The floors keep a 128 KiB buffer per connection: no idle
            // figure.
            if (deflate && !s.name.starts_with("myriad")) || is_floor(&s.name) {
                continue;
            }
            rig.check_stop()?;
            match rig.idle(s, &holder, args.idle, Some(&warm)) {
                Ok(r) => {
                    let per = r.bytes_per_conn;
                    eprintln!(
                        "bench-ws: {scenario} {:<15} {per:>10.0} B/connection",
                        s.name
                    );
                    table.line(format!(
                        "{:<12} {:<15} {per:>12.0} B per idle connection",
                        scenario, s.name
                    ));
                    json_idle.push(serde_json::json!({"scenario": scenario, "server": s.name,
                        "bytes_per_conn": per}));
                    results.push(result_line(&[
                        ("bench", "ws".into()),
                        ("scenario", scenario.into()),
                        ("server", s.name.clone()),
                        ("connections", r.connections.to_string()),
                        ("bytes_per_conn", num(Some(per), 1)),
                    ]));
                    if !deflate {
                        idle.push((s.name.clone(), per));
                    }
                }
                Err(e) => {
                    eprintln!("bench-ws: {scenario} {:<15} FAILED: {e:#}", s.name);
                    table.line(format!("{:<12} {:<15} {:>12}", scenario, s.name, "FAILED"));
                }
            }
        }
    }

    println!();
    print!("{}", table.render());
    println!();
    println!(
        "ratios myriad (or the floor named) / baseline, medians of per-round paired ratios \
         (msgs/s: higher is better; CPU/msg and memory: lower is better)"
    );
    for r in &ratios {
        println!("{r}");
    }
    if let Some((_, m)) = idle.iter().find(|(n, _)| n == "myriad") {
        for (n, b) in idle.iter().filter(|(n, _)| n != "myriad") {
            println!("idle     vs {n:<15} memory {:>6.3}x", m / b.max(1e-9));
        }
    }
    for r in &results {
        println!("{r}");
    }
    if let Some(path) = &args.json {
        json.extend(json_ratios.into_iter().chain(json_idle));
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}
