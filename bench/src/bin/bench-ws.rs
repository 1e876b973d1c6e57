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
//! disturbed. The idle scenario opens `--idle`
//! WebSocket connections (`ws-idle`) on a fresh server process and divides
//! the growth of its `VmRSS` by their number (measured from after a
//! warm-up of 100 connections, so that code pages and the loop's first
//! allocations are not counted per connection).
//!
//! ```text
//! cargo run --release -p myriad-bench --bin bench-ws -- [--duration 3] [--warmup 1] \
//!     [--repeat 3] [--idle 19000] [--servers myriad,tungstenite,fastwebsockets] \
//!     [--scenarios pp64,pipe64,pp16k,idle] [--no-build] [--json FILE]
//! ```
//!
//! Unless `--no-build`, it first builds `ws_echo` (`cargo build --release -p
//! myriad-ws --example ws_echo`), the load tools, and the baselines
//! (`bench/ws-baselines`, its own workspace, into `target/ws-baselines`).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use myriad_bench::{affinity, procfs};

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
    /// Servers to run.
    #[arg(
        long,
        default_value = "myriad,tungstenite,fastwebsockets",
        value_delimiter = ','
    )]
    servers: Vec<String>,
    /// Scenarios to run.
    #[arg(long, default_value = "pp64,pipe64,pp16k,idle", value_delimiter = ',')]
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
    /// Do not build anything (use binaries already built).
    #[arg(long)]
    no_build: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Scenario {
    name: &'static str,
    connections: usize,
    size: usize,
    window: usize,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "pp64",
        connections: 100,
        size: 64,
        window: 1,
    },
    Scenario {
        name: "pipe64",
        connections: 100,
        size: 64,
        window: 16,
    },
    Scenario {
        name: "pp16k",
        connections: 100,
        size: 16384,
        window: 1,
    },
];

#[derive(Clone, Copy, Debug, Default)]
struct RunResult {
    msgs_per_sec: f64,
    cpu_us_per_msg: f64,
    /// Share of one CPU the server used during the measured window.
    server_util: f64,
    /// Share of one CPU used by other processes on the two benchmark CPUs.
    other_util: f64,
}

struct Server {
    name: String,
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn build() -> Result<()> {
    let root = root();
    let run = |args: &[&str], envs: &[(&str, PathBuf)]| -> Result<()> {
        eprintln!("bench-ws: cargo {}", args.join(" "));
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.args(args).current_dir(&root);
        for (k, v) in envs {
            c.env(k, v);
        }
        let st = c.status().context("running cargo")?;
        if !st.success() {
            bail!("cargo {} failed", args.join(" "));
        }
        Ok(())
    };
    run(
        &[
            "build",
            "--release",
            "-p",
            "myriad-ws",
            "--example",
            "ws_echo",
        ],
        &[],
    )?;
    run(
        &[
            "build",
            "--release",
            "-p",
            "myriad-bench",
            "--bin",
            "ws-loadgen",
            "--bin",
            "ws-idle",
        ],
        &[],
    )?;
    run(
        &[
            "build",
            "--release",
            "--manifest-path",
            "bench/ws-baselines/Cargo.toml",
        ],
        &[("CARGO_TARGET_DIR", root.join("target/ws-baselines"))],
    )
}

fn server_cmd(name: &str, addr: SocketAddr) -> Result<Command> {
    let root = root();
    let a = addr.to_string();
    let mut c = match name {
        "myriad" => {
            let mut c = Command::new(root.join("target/release/examples/ws_echo"));
            c.args([a.as_str(), "--threads", "1", "--backend", "io_uring"]);
            c
        }
        "myriad-epoll" => {
            let mut c = Command::new(root.join("target/release/examples/ws_echo"));
            c.args([a.as_str(), "--threads", "1", "--backend", "epoll"]);
            c
        }
        "tungstenite" => {
            let mut c = Command::new(root.join("target/ws-baselines/release/ws-echo-tungstenite"));
            c.args(["--addr", a.as_str()]);
            c
        }
        "fastwebsockets" => {
            let mut c =
                Command::new(root.join("target/ws-baselines/release/ws-echo-fastwebsockets"));
            c.args(["--addr", a.as_str()]);
            c
        }
        other => bail!("unknown server {other}"),
    };
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env("RUST_LOG", "warn");
    Ok(c)
}

fn start_server(name: &str, addr: SocketAddr, cpu: usize) -> Result<Server> {
    let mut cmd = server_cmd(name, addr)?;
    let child =
        affinity::with_cpu(cpu, || cmd.spawn())?.with_context(|| format!("starting {name}"))?;
    let mut s = Server {
        name: name.to_owned(),
        child,
        addr,
    };
    let pid = s.child.id();
    myriad_bench::wait_for_port(addr, Duration::from_secs(10), || {
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            Ok(())
        } else {
            bail!("server exited")
        }
    })
    .with_context(|| format!("{} on {}", s.name, s.addr))?;
    // wait_for_port's probe connection is not a WebSocket: let it go
    std::thread::sleep(Duration::from_millis(100));
    let _ = s.child.try_wait();
    Ok(s)
}

fn bin(name: &str) -> PathBuf {
    root().join("target/release").join(name)
}

fn load_run(server: &Server, sc: &Scenario, args: &Args) -> Result<RunResult> {
    let pid = server.child.id();
    let mut cmd = Command::new(bin("ws-loadgen"));
    cmd.args([
        "--addr",
        &server.addr.to_string(),
        "--connections",
        &sc.connections.to_string(),
        "--size",
        &sc.size.to_string(),
        "--window",
        &sc.window.to_string(),
        "--warmup",
        &args.warmup.to_string(),
        "--duration",
        &args.duration.to_string(),
        "--cpu",
        &args.client_cpu.to_string(),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let mut child = cmd.spawn().context("starting ws-loadgen")?;
    let lpid = child.id();
    let cpus = [args.server_cpu, args.client_cpu];
    // (server ticks, loadgen ticks, busy ticks of both CPUs, when)
    let sample = || -> Result<(u64, u64, u64, Instant)> {
        Ok((
            procfs::cpu_ticks(pid)?,
            procfs::cpu_ticks(lpid)?,
            procfs::cpus_busy_ticks(&cpus)?,
            Instant::now(),
        ))
    };
    let out = child.stdout.take().context("loadgen stdout")?;
    let mut t0 = None;
    let mut t1 = None;
    let mut result = None;
    for line in BufReader::new(out).lines().take(100) {
        let line = line?;
        if line == "MEASURE_START" {
            t0 = Some(sample()?);
        } else if line == "MEASURE_END" {
            t1 = Some(sample()?);
        } else if let Some(r) = line.strip_prefix("RESULT ") {
            result = Some(r.to_owned());
        }
    }
    let st = child.wait()?;
    let (Some(t0), Some(t1), Some(r)) = (t0, t1, result) else {
        bail!("ws-loadgen against {} gave no result", server.name);
    };
    if !st.success() {
        bail!("ws-loadgen against {} failed: {r}", server.name);
    }
    let field = |k: &str| -> Result<f64> {
        r.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .context("RESULT field")?
            .parse::<f64>()
            .context("RESULT number")
    };
    let msgs = field("msgs")?;
    let rate = field("msgs_per_sec")?;
    let tck = procfs::clock_ticks_per_second().max(1) as f64;
    let server = t1.0.saturating_sub(t0.0);
    let loadgen = t1.1.saturating_sub(t0.1);
    let other = t1.2.saturating_sub(t0.2).saturating_sub(server + loadgen);
    let wall = t1.3.duration_since(t0.3).as_secs_f64().max(1e-9);
    let cpu_s = server as f64 / tck;
    Ok(RunResult {
        msgs_per_sec: rate,
        cpu_us_per_msg: if msgs > 0.0 { cpu_s * 1e6 / msgs } else { 0.0 },
        server_util: cpu_s / wall,
        other_util: other as f64 / tck / wall,
    })
}

fn idle_run(name: &str, addr: SocketAddr, args: &Args) -> Result<f64> {
    let server = start_server(name, addr, args.server_cpu)?;
    let pid = server.child.id();
    // Warm up with a few connections first (code pages, the loop's first
    // allocations), so that `before` holds what does not grow with N.
    let warm = Command::new(bin("ws-idle"))
        .args([
            "--addr",
            &addr.to_string(),
            "--connections",
            "100",
            "--hold-secs",
            "0",
        ])
        .stdout(Stdio::null())
        .status()
        .context("warm-up ws-idle")?;
    if !warm.success() {
        bail!("warm-up against {name} failed");
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = procfs::rss_bytes(pid)?;
    let mut cmd = Command::new(bin("ws-idle"));
    cmd.args([
        "--addr",
        &addr.to_string(),
        "--connections",
        &args.idle.to_string(),
        "--hold-secs",
        "60",
        "--cpu",
        &args.client_cpu.to_string(),
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let mut child = cmd.spawn().context("starting ws-idle")?;
    let out = child.stdout.take().context("ws-idle stdout")?;
    let mut ready = false;
    let mut lines = BufReader::new(out).lines();
    if let Some(Ok(l)) = lines.next() {
        ready = l.starts_with("READY");
    }
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        bail!("ws-idle against {name} did not get ready");
    }
    std::thread::sleep(Duration::from_secs(1));
    let after = procfs::rss_bytes(pid)?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"x");
    }
    let _ = child.wait();
    drop(server);
    Ok(after.saturating_sub(before) as f64 / args.idle as f64)
}

fn median_f64(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn median(mut v: Vec<RunResult>) -> RunResult {
    v.sort_by(|a, b| a.cpu_us_per_msg.total_cmp(&b.cpu_us_per_msg));
    v.get(v.len() / 2).copied().unwrap_or_default()
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
    if !args.no_build {
        build()?;
    }
    let mut port = args.port;
    let mut next_addr = || -> SocketAddr {
        port += 1;
        SocketAddr::from(([127, 0, 0, 1], port))
    };
    let load: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| args.scenarios.iter().any(|n| n == s.name))
        .collect();
    // (scenario, server, median run, highest `other` of its runs)
    let mut table: Vec<(String, String, RunResult, f64)> = Vec::new();
    // (scenario, baseline, median paired msgs/s ratio, median paired CPU/msg ratio)
    let mut paired: Vec<(String, String, f64, f64)> = Vec::new();
    if !load.is_empty() {
        let mut servers = Vec::new();
        for name in &args.servers {
            servers.push(start_server(name, next_addr(), args.server_cpu)?);
        }
        let mut runs: Vec<Vec<Vec<RunResult>>> = vec![vec![Vec::new(); servers.len()]; load.len()];
        for round in 0..args.repeat {
            for (si, sc) in load.iter().enumerate() {
                for (vi, server) in servers.iter().enumerate() {
                    let r = load_run(server, sc, &args)?;
                    eprintln!(
                        "bench-ws: round {} {:<7} {:<15} {:>10.0} msg/s {:>8.3} us/msg  server {:>3.0}%  other {:>3.0}%",
                        round + 1,
                        sc.name,
                        server.name,
                        r.msgs_per_sec,
                        r.cpu_us_per_msg,
                        r.server_util * 100.0,
                        r.other_util * 100.0
                    );
                    runs[si][vi].push(r);
                }
            }
        }
        for (si, sc) in load.iter().enumerate() {
            // paired ratios: myriad against each baseline, round by round
            if let Some(mi) = servers.iter().position(|s| s.name == "myriad") {
                for (vi, server) in servers.iter().enumerate() {
                    if vi == mi {
                        continue;
                    }
                    let (m, b) = (&runs[si][mi], &runs[si][vi]);
                    let mut rate: Vec<f64> = m
                        .iter()
                        .zip(b)
                        .map(|(m, b)| m.msgs_per_sec / b.msgs_per_sec.max(1e-9))
                        .collect();
                    let mut cpu: Vec<f64> = m
                        .iter()
                        .zip(b)
                        .map(|(m, b)| m.cpu_us_per_msg / b.cpu_us_per_msg.max(1e-9))
                        .collect();
                    paired.push((
                        sc.name.to_owned(),
                        server.name.clone(),
                        median_f64(&mut rate),
                        median_f64(&mut cpu),
                    ));
                }
            }
            for (vi, server) in servers.iter().enumerate() {
                let v = std::mem::take(&mut runs[si][vi]);
                let other_max = v.iter().map(|r| r.other_util).fold(0.0, f64::max);
                let m = median(v);
                table.push((sc.name.to_owned(), server.name.clone(), m, other_max));
            }
        }
    }
    let mut idle: Vec<(String, f64)> = Vec::new();
    if args.scenarios.iter().any(|s| s == "idle") {
        for name in &args.servers {
            let per = idle_run(name, next_addr(), &args)?;
            eprintln!("bench-ws: idle {name:<15} {per:>10.0} B/connection");
            idle.push((name.clone(), per));
        }
    }

    println!();
    println!(
        "{:<8} {:<15} {:>12} {:>14} {:>8} {:>10}",
        "scenario", "server", "msgs/s", "CPU us/msg", "server", "other max"
    );
    for (sc, server, r, other_max) in &table {
        println!(
            "{sc:<8} {server:<15} {:>12.0} {:>14.3} {:>7.0}% {:>9.0}%",
            r.msgs_per_sec,
            r.cpu_us_per_msg,
            r.server_util * 100.0,
            other_max * 100.0
        );
    }
    for (server, per) in &idle {
        println!(
            "{:<8} {server:<15} {:>12.0} B per idle connection",
            "idle", per
        );
    }
    println!();
    println!(
        "ratios myriad / baseline, medians of per-round paired ratios \
         (msgs/s: higher is better; CPU/msg and memory: lower is better)"
    );
    for (sc, base, rate, cpu) in &paired {
        println!("{sc:<8} vs {base:<15} msgs/s {rate:>6.2}x   CPU/msg {cpu:>6.3}x");
    }
    if let Some((_, m)) = idle.iter().find(|(n, _)| n == "myriad") {
        for (n, b) in idle.iter().filter(|(n, _)| n != "myriad") {
            println!("idle     vs {n:<15} memory {:>6.3}x", m / b.max(1e-9));
        }
    }
    if let Some(path) = &args.json {
        let rows: Vec<serde_json::Value> = table
            .iter()
            .map(|(s, v, r, other_max)| {
                serde_json::json!({"scenario": s, "server": v,
                    "msgs_per_sec": r.msgs_per_sec, "cpu_us_per_msg": r.cpu_us_per_msg,
                    "server_cpu_util": r.server_util, "other_cpu_util_max": other_max})
            })
            .chain(paired.iter().map(|(s, b, rate, cpu)| {
                serde_json::json!({"scenario": s, "server": "myriad", "baseline": b,
                    "paired_msgs_ratio": rate, "paired_cpu_ratio": cpu})
            }))
            .chain(idle.iter().map(|(v, per)| {
                serde_json::json!({"scenario": "idle", "server": v, "bytes_per_conn": per})
            }))
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}
