//! `bench-echo`: Myriad's echo server against baselines, in one run.
//!
//! Starts the echo servers — Myriad on io_uring and on epoll
//! (`target/<profile>/examples/echo --threads 1`), the idiomatic tokio echo
//! on a `current_thread` and on a multi-thread runtime (`echo-tokio`, 4 KiB
//! buffer per connection) and a minimal hand-written epoll echo
//! (`echo-epoll`) — pinned to CPU 0, and drives them one at a time with
//! `loadgen` pinned to CPU 1:
//!
//! | scenario | load |
//! |---|---|
//! | `pingpong-64` (pp64) | 100 connections × 64 B, ping-pong |
//! | `pipelined-64` (pipe64) | 100 connections × 64 B, 16 messages in flight per connection |
//! | `pingpong-512` (pp512) | 1,000 connections × 512 B, ping-pong |
//! | `idle` | server RSS per idle connection at 19,000 connections |
//!
//! For each server and load scenario it prints messages/s and **server CPU
//! microseconds per message**: `utime + stime` from `/proc/PID/stat`,
//! sampled when `loadgen` announces the start and the end of its measured
//! window. On a 2-core machine the load generator can be the bottleneck, so
//! messages/s may mostly measure the client; CPU per message is then the fair
//! figure (it is also why the table shows the CPU use of server and load
//! generator). On loopback part of the receive path of each side runs in the
//! sender's system calls, so kernel work is split between the two processes
//! the same way for every server.
//!
//! The idle figure is measured on a fresh server process: `VmRSS` from
//! `/proc/PID/status` before, then `idle-conns` (on CPU 1) opens the
//! connections and does one 8-byte echo on each, one second later `VmRSS`
//! again; the difference divided by the count is the user-space memory per
//! idle connection (kernel socket memory is not included, and is the same
//! for every server).
//!
//! Then ratios: for each Myriad backend against each baseline, and the
//! targets of the engine issue (against tokio `current_thread`). `--json
//! FILE` writes every figure as JSON.
//!
//! Run it with
//!
//! ```text
//! cargo run --release -p myriad-bench --bin bench-echo -- [--duration 5] [--warmup 1] \
//!     [--idle 19000] [--servers myriad-uring,myriad-epoll,tokio-current,tokio-multi,epoll] \
//!     [--scenarios pingpong-64,pipelined-64,pingpong-512,idle] [--repeat 3] [--json results.json]
//! ```
//!
//! All servers are started at once (an undriven server sleeps in its event
//! loop) and the load runs are interleaved — round by round, scenario by
//! scenario, server by server — so that drifts of a shared or virtual
//! machine hit every server alike. Each load scenario runs `--repeat` times
//! (3) per server and the run with the median CPU per message is reported:
//! single runs vary by ±20% on a small virtual machine. The report also
//! shows how much CPU time anything else used on the two benchmark CPUs
//! during each measured window (from `/proc/stat`) and warns when that is
//! above 5%: on a shared machine a concurrent build skews every figure.
//! Before each run it waits (`--wait-quiet`, 60 s at most) for the two CPUs
//! to be idle, and re-runs a disturbed run (`--busy-retries`, 2).
//!
//! When started by `cargo run` (the `CARGO` variable is set) it first runs
//! `cargo build -p myriad-bench --bins` (the sibling programs) and `cargo
//! build -p myriad --example echo` with the same profile; `--no-build`
//! skips that. It finds its sibling programs next to its own executable and
//! Myriad's echo in `examples/` below that directory. If Myriad's echo cannot
//! be built, is missing or does not start, the baselines still run and the
//! report says Myriad was skipped. Every child process is stopped (SIGTERM,
//! then SIGKILL) when the driver finishes or fails; SIGTERM, SIGINT or
//! SIGHUP to the driver stops it after the current run, cleaning up. Logs
//! of the servers go to `bench-echo-logs/` next to the executable.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use myriad_bench::{affinity, procfs};
use rustix::process::{kill_process, Pid, Signal};
use serde_json::{json, Value};

/// Myriad echo against tokio and a hand-written epoll echo, with ratios.
#[derive(Parser, Debug)]
struct Args {
    /// Measured seconds per load scenario.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Warm-up seconds per load scenario (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Idle connections for the memory scenario (0 skips it).
    #[arg(long, default_value_t = 19_000)]
    idle: usize,
    /// Servers to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "myriad-uring,myriad-epoll,tokio-current,tokio-multi,epoll"
    )]
    servers: Vec<String>,
    /// Scenarios to run, comma-separated (pingpong-64, pipelined-64,
    /// pingpong-512, idle).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "pingpong-64,pipelined-64,pingpong-512,idle"
    )]
    scenarios: Vec<String>,
    /// Runs per load scenario and server; the one with the median CPU per
    /// message is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Before each load run, wait up to this many seconds for the two
    /// benchmark CPUs to be idle (0 = do not wait).
    #[arg(long, default_value_t = 60.0)]
    wait_quiet: f64,
    /// Re-run a load run disturbed by other work on the benchmark CPUs
    /// (more than 5% CPU) up to this many times; the least disturbed run
    /// is kept.
    #[arg(long, default_value_t = 2)]
    busy_retries: usize,
    /// Write all figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// CPU for the server under test.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU for the load generator and the idle client.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// First port to try; each server instance gets its own free port.
    #[arg(long, default_value_t = 19_100)]
    base_port: u16,
    /// Worker threads of the tokio multi-thread baseline (default: tokio's
    /// own default, which follows the CPU mask, i.e. 1 when pinned).
    #[arg(long)]
    tokio_multi_threads: Option<usize>,
    /// Path of Myriad's echo example (default: `examples/echo` next to this
    /// program).
    #[arg(long)]
    myriad_echo: Option<PathBuf>,
    /// Do not run `cargo build` first, even when started by `cargo run`.
    #[arg(long)]
    no_build: bool,
    /// Servers whose ratios against the baselines are reported.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "myriad-uring,myriad-epoll"
    )]
    subjects: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    MyriadUring,
    MyriadEpoll,
    TokioCurrent,
    TokioMulti,
    Epoll,
}

const KINDS: [Kind; 5] = [
    Kind::MyriadUring,
    Kind::MyriadEpoll,
    Kind::TokioCurrent,
    Kind::TokioMulti,
    Kind::Epoll,
];
/// "Other" CPU use above which the report warns that the machine was busy.
const OTHER_CPU_WARN: f64 = 0.05;
const BASELINES: [&str; 3] = ["tokio-current", "tokio-multi", "epoll"];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::MyriadUring => "myriad-uring",
            Kind::MyriadEpoll => "myriad-epoll",
            Kind::TokioCurrent => "tokio-current",
            Kind::TokioMulti => "tokio-multi",
            Kind::Epoll => "epoll",
        }
    }

    fn is_myriad(self) -> bool {
        matches!(self, Kind::MyriadUring | Kind::MyriadEpoll)
    }

    fn parse(s: &str) -> Result<Kind> {
        KINDS
            .into_iter()
            .find(|k| k.name() == s.trim())
            .ok_or_else(|| {
                anyhow!(
                    "unknown server {s:?} (known: {})",
                    KINDS.map(Kind::name).join(", ")
                )
            })
    }
}

#[derive(Clone, Copy, Debug)]
struct Scenario {
    name: &'static str,
    short: &'static str,
    connections: usize,
    size: usize,
    window: usize,
    desc: &'static str,
}

const LOADS: [Scenario; 3] = [
    Scenario {
        name: "pingpong-64",
        short: "pp64",
        connections: 100,
        size: 64,
        window: 1,
        desc: "100 connections x 64 B, ping-pong",
    },
    Scenario {
        name: "pipelined-64",
        short: "pipe64",
        connections: 100,
        size: 64,
        window: 16,
        desc: "100 connections x 64 B, 16 in flight per connection",
    },
    Scenario {
        name: "pingpong-512",
        short: "pp512",
        connections: 1000,
        size: 512,
        window: 1,
        desc: "1,000 connections x 512 B, ping-pong",
    },
];

/// Everything the runs need to know.
struct Ctx {
    bin_dir: PathBuf,
    log_dir: PathBuf,
    myriad_echo: PathBuf,
    server_cpu: usize,
    client_cpu: usize,
    warmup: f64,
    duration: f64,
    clk_tck: u64,
    tokio_multi_threads: Option<usize>,
    next_port: u16,
    wait_quiet: f64,
    busy_retries: usize,
    /// Set by SIGTERM, SIGINT or SIGHUP: stop after the current run.
    stop: Arc<AtomicBool>,
}

impl Ctx {
    /// Fails once a stop signal has arrived (children are then stopped by
    /// their guards as the error unwinds).
    fn check_stop(&self) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted by a signal");
        }
        Ok(())
    }
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
struct Proc {
    child: Child,
    name: String,
    log: Option<PathBuf>,
    reaped: bool,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited (it should not have).
    fn check_alive(&mut self) -> Result<()> {
        if self.reaped {
            bail!("{} is not running", self.name);
        }
        if let Some(st) = self.child.try_wait()? {
            self.reaped = true;
            bail!(
                "{} exited unexpectedly ({st}){}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let Some(path) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(10)..].join("\n    ");
        format!("; log {}:\n    {tail}", path.display())
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL and wait.
    fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.reaped {
            return None;
        }
        if let Ok(Some(st)) = self.child.try_wait() {
            self.reaped = true;
            return Some(st);
        }
        let pid = Pid::from_child(&self.child);
        let _ = kill_process(pid, Signal::TERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.reaped = true;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let st = self.child.wait().ok();
        self.reaped = true;
        st
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// Result of one load scenario on one server.
#[derive(Debug, Clone, Default)]
struct LoadResult {
    msgs: u64,
    secs: f64,
    msgs_per_sec: f64,
    server_cpu_secs: f64,
    cpu_us_per_msg: f64,
    server_cpu_util: f64,
    loadgen_cpu_util: f64,
    /// CPU use on the two benchmark CPUs by anything else (other
    /// processes, interrupts in kernel threads), in CPUs.
    other_cpu_util: f64,
    errors: u64,
    /// Round of the interleaved schedule this run belongs to.
    round: usize,
}

#[derive(Debug, Clone, Default)]
struct IdleResult {
    connections: usize,
    rss_before: u64,
    rss_after: u64,
    bytes_per_conn: f64,
}

#[derive(Debug, Default)]
struct ServerReport {
    /// The reported (median) run per load scenario.
    loads: BTreeMap<&'static str, Result<LoadResult, String>>,
    /// Every kept run per load scenario, one per round.
    rounds: BTreeMap<&'static str, Vec<LoadResult>>,
    idle: Option<Result<IdleResult, String>>,
    skipped: Option<String>,
    note: Option<String>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-echo: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    let duration_ok = args.duration.is_finite() && args.duration > 0.0;
    let warmup_ok = args.warmup.is_finite() && args.warmup >= 0.0;
    if !(duration_ok && warmup_ok) {
        bail!("--duration must be > 0 and --warmup >= 0");
    }
    if !(args.wait_quiet.is_finite() && args.wait_quiet >= 0.0) {
        bail!("--wait-quiet must be >= 0");
    }
    let kinds: Vec<Kind> = args
        .servers
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| Kind::parse(s))
        .collect::<Result<_>>()?;
    let mut loads = Vec::new();
    let mut want_idle = false;
    for s in args.scenarios.iter().map(|s| s.trim()) {
        if s == "idle" {
            want_idle = args.idle > 0;
        } else if let Some(sc) = LOADS.iter().find(|l| l.name == s || l.short == s) {
            loads.push(*sc);
        } else if !s.is_empty() {
            bail!(
                "unknown scenario {s:?} (known: {}, idle)",
                LOADS.map(|l| l.name).join(", ")
            );
        }
    }

    let exe = std::env::current_exe().context("locating this executable")?;
    let bin_dir = exe
        .parent()
        .context("executable has no parent directory")?
        .to_path_buf();
    let myriad_echo = args
        .myriad_echo
        .clone()
        .unwrap_or_else(|| bin_dir.join("examples").join("echo"));

    let cpus = affinity::allowed_cpus()?;
    for cpu in [args.server_cpu, args.client_cpu] {
        if !cpus.contains(&cpu) {
            bail!("CPU {cpu} is not available to this process (allowed: {cpus:?})");
        }
    }
    if args.server_cpu == args.client_cpu {
        eprintln!(
            "bench-echo: warning: server and load generator share CPU {}",
            args.server_cpu
        );
    }

    let mut myriad_build_error = None;
    if !args.no_build && std::env::var_os("CARGO").is_some() {
        build(
            &bin_dir,
            kinds.iter().any(|k| k.is_myriad()),
            &mut myriad_build_error,
        )?;
    }
    for prog in ["echo-tokio", "echo-epoll", "loadgen", "idle-conns"] {
        if !bin_dir.join(prog).is_file() {
            bail!(
                "{} not found; build the benchmark programs first: \
                 cargo build --release -p myriad-bench",
                bin_dir.join(prog).display()
            );
        }
    }

    let log_dir = bin_dir.join("bench-echo-logs");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let mut ctx = Ctx {
        bin_dir,
        log_dir,
        myriad_echo,
        server_cpu: args.server_cpu,
        client_cpu: args.client_cpu,
        warmup: args.warmup,
        duration: args.duration,
        clk_tck: procfs::clock_ticks_per_second(),
        tokio_multi_threads: args.tokio_multi_threads,
        next_port: args.base_port,
        wait_quiet: args.wait_quiet,
        busy_retries: args.busy_retries,
        stop,
    };

    println!(
        "Myriad echo benchmark: servers pinned to CPU {}, load generator to CPU {}; \
         warm-up {} s, measured {} s per load scenario{}; CPU from /proc/PID/stat ({} ticks/s)",
        ctx.server_cpu,
        ctx.client_cpu,
        ctx.warmup,
        ctx.duration,
        if args.repeat > 1 {
            format!(" (median of {} runs by cpu/msg)", args.repeat)
        } else {
            String::new()
        },
        ctx.clk_tck
    );
    println!("Logs: {}", ctx.log_dir.display());
    println!();

    let mut reports: Vec<(Kind, ServerReport)> = kinds
        .iter()
        .map(|&k| (k, ServerReport::default()))
        .collect();
    for (kind, rep) in reports.iter_mut() {
        if !kind.is_myriad() {
            continue;
        }
        if let Some(e) = &myriad_build_error {
            rep.skipped = Some(e.clone());
        } else if !ctx.myriad_echo.is_file() {
            rep.skipped = Some(format!(
                "{} not found; build it with: cargo build --release -p myriad --example echo",
                ctx.myriad_echo.display()
            ));
        }
        if let Some(why) = &rep.skipped {
            println!("{}: SKIPPED: {why}", kind.name());
        }
    }
    if !loads.is_empty() {
        run_loads(&mut ctx, &mut reports, &loads, args.repeat)?;
    }
    if want_idle {
        println!("Idle connections ({}, a fresh server each):", args.idle);
        for (kind, rep) in reports.iter_mut() {
            if rep.skipped.is_some() {
                continue;
            }
            ctx.check_stop()?;
            let res = run_idle(&mut ctx, *kind, args.idle);
            match &res {
                Ok(r) => println!(
                    "   {:<14} {:>10.1} B/conn at {} connections (RSS {:.1} -> {:.1} MiB)",
                    kind.name(),
                    r.bytes_per_conn,
                    r.connections,
                    r.rss_before as f64 / 1048576.0,
                    r.rss_after as f64 / 1048576.0
                ),
                Err(e) => println!("   {:<14} FAILED: {e:#}", kind.name()),
            }
            rep.idle = Some(res.map_err(|e| format!("{e:#}")));
        }
    }

    println!();
    let text = render(&reports, &loads, want_idle, args.idle, &args.subjects);
    print!("{text}");

    if let Some(path) = &args.json {
        let v = to_json(&args, &ctx, &reports, &loads, want_idle);
        let s = serde_json::to_string_pretty(&v)?;
        std::fs::write(path, s + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    Ok(())
}

/// Runs `cargo build` for the sibling programs and (if wanted) Myriad's
/// echo example, with the profile this program was built with.
fn build(bin_dir: &Path, myriad: bool, myriad_error: &mut Option<String>) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("Cargo.toml");
    let profile: Vec<&str> = match bin_dir.file_name().and_then(|s| s.to_str()) {
        Some("release") => vec!["--release"],
        Some("debug") => vec![],
        _ => {
            eprintln!(
                "bench-echo: {} is not a cargo profile directory; not building",
                bin_dir.display()
            );
            return Ok(());
        }
    };
    let run = |extra: &[&str]| -> Result<bool> {
        let mut cmd = Command::new(&cargo);
        cmd.arg("build")
            .arg("--manifest-path")
            .arg(&manifest)
            .args(&profile)
            .args(extra);
        eprintln!(
            "bench-echo: running cargo build {} {}",
            profile.join(" "),
            extra.join(" ")
        );
        let st = cmd.status().context("running cargo")?;
        Ok(st.success())
    };
    if !run(&["-p", "myriad-bench", "--bins"])? {
        bail!("building the benchmark programs failed");
    }
    if myriad && !run(&["-p", "myriad", "--example", "echo"])? {
        *myriad_error = Some(
            "`cargo build --release -p myriad --example echo` failed (see above); \
             Myriad was skipped"
                .to_string(),
        );
    }
    Ok(())
}

/// Finds a free local port, starting at `ctx.next_port`.
fn free_port(ctx: &mut Ctx) -> Result<u16> {
    for _ in 0..200 {
        let p = ctx.next_port;
        ctx.next_port = ctx.next_port.checked_add(1).context("ran out of ports")?;
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return Ok(p);
        }
    }
    bail!("no free port found near {}", ctx.next_port)
}

/// Starts a server pinned to the server CPU and waits until it accepts.
fn start_server(
    ctx: &mut Ctx,
    kind: Kind,
    tag: &str,
) -> Result<(Proc, SocketAddr, Option<String>)> {
    let port = free_port(ctx)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let a = addr.to_string();
    let (prog, args): (PathBuf, Vec<String>) = match kind {
        Kind::MyriadUring | Kind::MyriadEpoll => {
            let backend = if kind == Kind::MyriadUring {
                "io_uring"
            } else {
                "epoll"
            };
            (
                ctx.myriad_echo.clone(),
                vec![
                    a,
                    "--threads".into(),
                    "1".into(),
                    "--backend".into(),
                    backend.into(),
                ],
            )
        }
        Kind::TokioCurrent => (
            ctx.bin_dir.join("echo-tokio"),
            vec!["--addr".into(), a, "--mode".into(), "current".into()],
        ),
        Kind::TokioMulti => {
            let mut v = vec!["--addr".into(), a, "--mode".into(), "multi".into()];
            if let Some(n) = ctx.tokio_multi_threads {
                v.push("--threads".into());
                v.push(n.to_string());
            }
            (ctx.bin_dir.join("echo-tokio"), v)
        }
        Kind::Epoll => (ctx.bin_dir.join("echo-epoll"), vec!["--addr".into(), a]),
    };
    let log_path = ctx.log_dir.join(format!("{}-{tag}.log", kind.name()));
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = Command::new(&prog);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = affinity::with_cpu(ctx.server_cpu, || cmd.spawn())?
        .with_context(|| format!("starting {}", prog.display()))?;
    let mut proc = Proc {
        child,
        name: kind.name().to_string(),
        log: Some(log_path.clone()),
        reaped: false,
    };
    myriad_bench::wait_for_port(addr, Duration::from_secs(15), || proc.check_alive())?;
    let note = match kind {
        Kind::TokioMulti => {
            // echo-tokio logs its worker count once listening.
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let workers = text
                .lines()
                .find_map(|l| l.split(", ").nth(1).filter(|s| s.contains("worker")))
                .map(|s| s.to_string())
                .unwrap_or_else(|| "tokio's default worker count".to_string());
            Some(format!(
                "multi-thread runtime with {workers} (tokio's default follows the CPU mask), \
                 all pinned to CPU {}",
                ctx.server_cpu
            ))
        }
        Kind::MyriadUring | Kind::MyriadEpoll => Some("--threads 1".to_string()),
        _ => None,
    };
    Ok((proc, addr, note))
}

/// Runs a client program pinned to the client CPU, feeding each stdout line
/// to `on_line`; kills it if it has not finished within `timeout`.
fn run_client(
    ctx: &Ctx,
    prog: &str,
    args: &[String],
    timeout: Duration,
    piped_stdin: bool,
    mut on_line: impl FnMut(&str, u32, &mut Option<ChildStdin>) -> Result<()>,
) -> Result<ExitStatus> {
    let path = ctx.bin_dir.join(prog);
    let mut cmd = Command::new(&path);
    cmd.args(args)
        .stdin(if piped_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let child = affinity::with_cpu(ctx.client_cpu, || cmd.spawn())?
        .with_context(|| format!("starting {}", path.display()))?;
    let mut proc = Proc {
        child,
        name: prog.to_string(),
        log: None,
        reaped: false,
    };
    let pid = proc.pid();
    let mut stdin = proc.child.stdin.take();
    let stdout = proc.child.stdout.take().context("no stdout pipe")?;

    // Watchdog: SIGKILL the client if it overruns. It is joined before the
    // child is reaped, so the pid cannot have been reused.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(timeout) {
            if let Some(p) = Pid::from_raw(pid as i32) {
                let _ = kill_process(p, Signal::KILL);
            }
            return true;
        }
        false
    });

    let mut result = Ok(());
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    for _ in 0..1_000_000 {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {
                if result.is_ok() {
                    result = on_line(line.trim_end(), pid, &mut stdin);
                    if result.is_err() {
                        // Stop the client; the loop then sees EOF.
                        if let Some(p) = Pid::from_raw(pid as i32) {
                            let _ = kill_process(p, Signal::KILL);
                        }
                    }
                }
            }
            Err(e) => {
                result = Err(anyhow::Error::new(e).context("reading client output"));
                break;
            }
        }
    }
    drop(stdin);
    drop(tx);
    let timed_out = watchdog.join().unwrap_or(false);
    let status = proc.child.wait().context("waiting for client")?;
    proc.reaped = true;
    result?;
    if timed_out {
        bail!(
            "{prog} did not finish within {:.0}s and was killed",
            timeout.as_secs_f64()
        );
    }
    Ok(status)
}

fn parse_result_line(line: &str) -> Result<BTreeMap<String, String>> {
    let rest = line.strip_prefix("RESULT").context("not a RESULT line")?;
    Ok(rest
        .split_ascii_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn field<T: std::str::FromStr>(m: &BTreeMap<String, String>, k: &str) -> Result<T> {
    m.get(k)
        .with_context(|| format!("RESULT line has no {k}"))?
        .parse()
        .map_err(|_| anyhow!("RESULT field {k} is not a number"))
}

/// One load scenario against a running server.
fn run_load(ctx: &Ctx, server: &mut Proc, addr: SocketAddr, sc: &Scenario) -> Result<LoadResult> {
    server.check_alive()?;
    let spid = server.pid();
    let args: Vec<String> = vec![
        "--addr".into(),
        addr.to_string(),
        "--connections".into(),
        sc.connections.to_string(),
        "--size".into(),
        sc.size.to_string(),
        "--window".into(),
        sc.window.to_string(),
        "--warmup".into(),
        ctx.warmup.to_string(),
        "--duration".into(),
        ctx.duration.to_string(),
        "--connect-timeout".into(),
        "30".into(),
    ];
    let timeout = Duration::from_secs_f64(ctx.warmup + ctx.duration + 60.0);
    let cpus = &bench_cpus(ctx)[..];
    // Server, loadgen and both CPUs' busy ticks, and the time, at the start
    // and at the end of the measured window.
    let sample = |lpid: u32| -> Result<Sample> {
        Ok(Sample {
            server: procfs::cpu_ticks(spid)?,
            loadgen: procfs::cpu_ticks(lpid)?,
            cpus: procfs::cpus_busy_ticks(cpus)?,
            at: Instant::now(),
        })
    };
    let mut start: Option<Sample> = None;
    let mut end: Option<Sample> = None;
    let mut result: Option<BTreeMap<String, String>> = None;
    let status = run_client(ctx, "loadgen", &args, timeout, false, |line, lpid, _| {
        if line == "MEASURE_START" {
            start = Some(sample(lpid)?);
        } else if line == "MEASURE_END" {
            end = Some(sample(lpid)?);
        } else if line.starts_with("RESULT") {
            result = Some(parse_result_line(line)?);
        }
        Ok(())
    })?;
    let (Some(s), Some(e), Some(r)) = (start, end, result) else {
        bail!("loadgen exited ({status}) without a complete report");
    };
    let errors: u64 = field(&r, "errors")?;
    if !status.success() || errors > 0 {
        bail!("loadgen reported {errors} error(s) and exited with {status}");
    }
    let msgs: u64 = field(&r, "msgs")?;
    let secs: f64 = field(&r, "secs")?;
    let msgs_per_sec: f64 = field(&r, "msgs_per_sec")?;
    let wall = e.at.duration_since(s.at).as_secs_f64().max(1e-9);
    let tck = ctx.clk_tck.max(1) as f64;
    let server_ticks = e.server.saturating_sub(s.server);
    let loadgen_ticks = e.loadgen.saturating_sub(s.loadgen);
    let other_ticks = e
        .cpus
        .saturating_sub(s.cpus)
        .saturating_sub(server_ticks + loadgen_ticks);
    let server_cpu_secs = server_ticks as f64 / tck;
    let loadgen_cpu_secs = loadgen_ticks as f64 / tck;
    if msgs == 0 {
        bail!("no messages completed in the measured window");
    }
    Ok(LoadResult {
        msgs,
        secs,
        msgs_per_sec,
        server_cpu_secs,
        cpu_us_per_msg: server_cpu_secs * 1e6 / msgs as f64,
        server_cpu_util: server_cpu_secs / wall,
        loadgen_cpu_util: loadgen_cpu_secs / wall,
        other_cpu_util: other_ticks as f64 / tck / wall,
        errors,
        round: 0,
    })
}

/// A server process kept running through the load scenarios.
struct Running {
    /// Index into the reports.
    idx: usize,
    proc: Proc,
    addr: SocketAddr,
    results: BTreeMap<&'static str, Vec<LoadResult>>,
    errors: BTreeMap<&'static str, String>,
    dead: Option<String>,
}

/// Load scenarios: every server runs at once (idle while not driven), and
/// the runs are interleaved — round by round, scenario by scenario, server
/// by server — so that slow drifts of the machine hit all servers alike.
/// With `repeat > 1` the run with the median CPU per message is reported.
fn run_loads(
    ctx: &mut Ctx,
    reports: &mut [(Kind, ServerReport)],
    loads: &[Scenario],
    repeat: usize,
) -> Result<()> {
    let mut running: Vec<Running> = Vec::new();
    for (idx, (kind, rep)) in reports.iter_mut().enumerate() {
        if rep.skipped.is_some() {
            continue;
        }
        ctx.check_stop()?;
        match start_server(ctx, *kind, "load") {
            Ok((proc, addr, note)) => {
                println!("{}: listening on {addr} (pid {})", kind.name(), proc.pid());
                rep.note = note;
                running.push(Running {
                    idx,
                    proc,
                    addr,
                    results: BTreeMap::new(),
                    errors: BTreeMap::new(),
                    dead: None,
                });
            }
            Err(e) => {
                let msg = format!("did not start: {e:#}");
                println!("{}: {msg}", kind.name());
                if kind.is_myriad() {
                    rep.skipped = Some(msg);
                } else {
                    for sc in loads {
                        rep.loads.insert(sc.short, Err(msg.clone()));
                    }
                }
            }
        }
    }
    println!();
    let repeat = repeat.max(1);
    for round in 0..repeat {
        for sc in loads {
            for run in running.iter_mut() {
                if run.dead.is_some() || run.errors.contains_key(sc.short) {
                    continue;
                }
                ctx.check_stop()?;
                let name = reports[run.idx].0.name();
                let tag = if repeat > 1 {
                    format!("{name:<14} {:<13} #{}", sc.name, round + 1)
                } else {
                    format!("{name:<14} {:<13}", sc.name)
                };
                match run_with_retries(ctx, &mut run.proc, run.addr, sc, &tag) {
                    Ok(mut r) => {
                        r.round = round;
                        run.results.entry(sc.short).or_default().push(r);
                    }
                    Err(e) => {
                        run.errors.insert(sc.short, format!("{e:#}"));
                    }
                }
                if let Err(e) = run.proc.check_alive() {
                    println!("{tag} server died: {e:#}");
                    run.dead = Some(format!("{e:#}"));
                }
            }
        }
    }
    for mut run in running {
        let rep = &mut reports[run.idx].1;
        for sc in loads {
            let res = if let Some(e) = run.errors.get(sc.short) {
                Err(e.clone())
            } else if let Some(mut runs) = run.results.remove(sc.short) {
                rep.rounds.insert(sc.short, runs.clone());
                runs.sort_by(|a, b| a.cpu_us_per_msg.total_cmp(&b.cpu_us_per_msg));
                // The median; of an even count, the lower middle one.
                let n = runs.len();
                Ok(runs.swap_remove((n - 1) / 2))
            } else {
                Err(format!(
                    "not run: server died ({})",
                    run.dead.as_deref().unwrap_or("?")
                ))
            };
            rep.loads.insert(sc.short, res);
        }
        run.proc.stop(Duration::from_secs(6));
    }
    println!();
    Ok(())
}

/// One load run; a run disturbed by other work on the benchmark CPUs is
/// retried (`ctx.busy_retries` times) and the least disturbed one is kept.
fn run_with_retries(
    ctx: &Ctx,
    server: &mut Proc,
    addr: SocketAddr,
    sc: &Scenario,
    tag: &str,
) -> Result<LoadResult> {
    let mut best: Option<LoadResult> = None;
    for attempt in 0..=ctx.busy_retries {
        ctx.check_stop()?;
        wait_quiet(ctx)?;
        let r = match run_load(ctx, server, addr, sc) {
            Ok(r) => r,
            Err(e) => {
                println!("{tag} FAILED: {e:#}");
                return Err(e);
            }
        };
        println!(
            "{tag} {:>10.0} msgs/s {:>7.3} us/msg  cpu: server {:>3.0}% \
             loadgen {:>3.0}% other {:>3.0}%",
            r.msgs_per_sec,
            r.cpu_us_per_msg,
            r.server_cpu_util * 100.0,
            r.loadgen_cpu_util * 100.0,
            r.other_cpu_util * 100.0
        );
        let disturbed = r.other_cpu_util > OTHER_CPU_WARN;
        if best
            .as_ref()
            .is_none_or(|b| r.other_cpu_util < b.other_cpu_util)
        {
            best = Some(r);
        }
        if !disturbed {
            break;
        }
        if attempt < ctx.busy_retries {
            println!("{tag} disturbed by other work on the CPUs, retrying");
        }
    }
    best.context("no run")
}

/// The CPUs the benchmark uses.
fn bench_cpus(ctx: &Ctx) -> Vec<usize> {
    let mut v = vec![ctx.server_cpu, ctx.client_cpu];
    v.dedup();
    v
}

/// Waits (at most `ctx.wait_quiet` seconds) until the benchmark CPUs are
/// nearly idle, so that a run does not start in the middle of someone
/// else's build.
fn wait_quiet(ctx: &Ctx) -> Result<()> {
    if ctx.wait_quiet <= 0.0 {
        return Ok(());
    }
    let cpus = bench_cpus(ctx);
    let deadline = Instant::now() + Duration::from_secs_f64(ctx.wait_quiet);
    let step = Duration::from_millis(500);
    let capacity = step.as_secs_f64() * ctx.clk_tck as f64 * cpus.len() as f64;
    let mut said = false;
    let mut busy = 0.0;
    for _ in 0..100_000 {
        ctx.check_stop()?;
        let a = procfs::cpus_busy_ticks(&cpus)?;
        std::thread::sleep(step);
        let b = procfs::cpus_busy_ticks(&cpus)?;
        busy = b.saturating_sub(a) as f64 / capacity;
        if busy <= OTHER_CPU_WARN {
            return Ok(());
        }
        if Instant::now() >= deadline {
            break;
        }
        if !said {
            println!(
                "(CPUs {cpus:?} are {:.0}% busy with other work; waiting up to {:.0} s)",
                busy * 100.0,
                ctx.wait_quiet
            );
            said = true;
        }
    }
    println!(
        "(CPUs still {:.0}% busy after {:.0} s; running anyway)",
        busy * 100.0,
        ctx.wait_quiet
    );
    Ok(())
}

/// CPU counters at one moment of a load run.
struct Sample {
    server: u64,
    loadgen: u64,
    cpus: u64,
    at: Instant,
}

/// Idle-memory scenario on a fresh server instance.
fn run_idle(ctx: &mut Ctx, kind: Kind, n: usize) -> Result<IdleResult> {
    let (mut server, addr, _) = start_server(ctx, kind, "idle")?;
    // Let the server settle after the readiness probe connection.
    std::thread::sleep(Duration::from_millis(300));
    let spid = server.pid();
    let rss_before = procfs::rss_bytes(spid)?;
    let mut rss_after = None;
    let args: Vec<String> = vec![
        "--addr".into(),
        addr.to_string(),
        "--connections".into(),
        n.to_string(),
        "--hold-secs".into(),
        "120".into(),
        "--connect-timeout".into(),
        "90".into(),
    ];
    let status = run_client(
        ctx,
        "idle-conns",
        &args,
        Duration::from_secs(240),
        true,
        |line, _, stdin| {
            if line.starts_with("READY") {
                std::thread::sleep(Duration::from_secs(1));
                server.check_alive()?;
                rss_after = Some(procfs::rss_bytes(spid)?);
                // Closing stdin tells idle-conns to close the connections.
                stdin.take();
            }
            Ok(())
        },
    )?;
    let Some(rss_after) = rss_after else {
        bail!("idle-conns exited ({status}) before all connections were ready");
    };
    server.check_alive()?;
    server.stop(Duration::from_secs(6));
    Ok(IdleResult {
        connections: n,
        rss_before,
        rss_after,
        bytes_per_conn: (rss_after as f64 - rss_before as f64) / n as f64,
    })
}

fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Ratio of a load figure of server `s` to that of server `b`: the median
/// of the per-round ratios (runs of one round are adjacent in time, so the
/// pairing cancels most of the drift of a noisy machine), or the ratio of
/// the reported figures when no round has both.
fn load_ratio(
    reports: &[(Kind, ServerReport)],
    s: &str,
    b: &str,
    sc: &str,
    metric: fn(&LoadResult) -> f64,
) -> Option<f64> {
    let rounds = |name: &str| {
        reports
            .iter()
            .find(|(k, _)| k.name() == name)
            .and_then(|(_, r)| r.loads.get(sc).filter(|x| x.is_ok()).and(r.rounds.get(sc)))
    };
    if let (Some(rs), Some(rb)) = (rounds(s), rounds(b)) {
        let paired: Vec<f64> = rs
            .iter()
            .filter_map(|x| {
                let y = rb.iter().find(|y| y.round == x.round)?;
                ratio(metric(x), metric(y))
            })
            .collect();
        if let Some(m) = median(paired) {
            return Some(m);
        }
    }
    match (get_load(reports, s, sc), get_load(reports, b, sc)) {
        (Some(x), Some(y)) => ratio(metric(x), metric(y)),
        _ => None,
    }
}

fn cpu_metric(r: &LoadResult) -> f64 {
    r.cpu_us_per_msg
}

fn rate_metric(r: &LoadResult) -> f64 {
    r.msgs_per_sec
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"))
}

fn get_load<'a>(
    reports: &'a [(Kind, ServerReport)],
    name: &str,
    sc: &str,
) -> Option<&'a LoadResult> {
    reports
        .iter()
        .find(|(k, _)| k.name() == name)
        .and_then(|(_, r)| r.loads.get(sc))
        .and_then(|r| r.as_ref().ok())
}

fn get_idle<'a>(reports: &'a [(Kind, ServerReport)], name: &str) -> Option<&'a IdleResult> {
    reports
        .iter()
        .find(|(k, _)| k.name() == name)
        .and_then(|(_, r)| r.idle.as_ref())
        .and_then(|r| r.as_ref().ok())
}

/// The plain-text report: figures table, utilisation, ratios, targets.
fn render(
    reports: &[(Kind, ServerReport)],
    loads: &[Scenario],
    want_idle: bool,
    idle_n: usize,
    subjects: &[String],
) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Scenarios:");
    for sc in loads {
        let _ = writeln!(o, "  {:<7} {}", sc.short, sc.desc);
    }
    if want_idle {
        let _ = writeln!(
            o,
            "  {:<7} server RSS growth per idle connection at {idle_n} connections (fresh server)",
            "idle"
        );
    }
    let _ = writeln!(o);

    // Figures.
    let mut head = format!("{:<14}", "server");
    for sc in loads {
        head += &format!(
            " {:>14} {:>14}",
            format!("{} msgs/s", sc.short),
            format!("{} cpu us/msg", sc.short)
        );
    }
    if want_idle {
        head += &format!(" {:>12}", "idle B/conn");
    }
    let _ = writeln!(o, "{head}");
    let _ = writeln!(o, "{}", "-".repeat(head.chars().count()));
    for (kind, rep) in reports {
        let mut row = format!("{:<14}", kind.name());
        if rep.skipped.is_some() {
            row += "  skipped";
            let _ = writeln!(o, "{row}");
            continue;
        }
        for sc in loads {
            match rep.loads.get(sc.short) {
                Some(Ok(r)) => {
                    row += &format!(
                        " {:>14} {:>14.3}",
                        fmt_rate(r.msgs_per_sec),
                        r.cpu_us_per_msg
                    )
                }
                Some(Err(_)) => row += &format!(" {:>14} {:>14}", "FAILED", "FAILED"),
                None => row += &format!(" {:>14} {:>14}", "-", "-"),
            }
        }
        if want_idle {
            match &rep.idle {
                Some(Ok(r)) => row += &format!(" {:>12.1}", r.bytes_per_conn),
                Some(Err(_)) => row += &format!(" {:>12}", "FAILED"),
                None => row += &format!(" {:>12}", "-"),
            }
        }
        let _ = writeln!(o, "{row}");
    }
    let _ = writeln!(o);

    // Utilisation: shows which side was the bottleneck.
    if !loads.is_empty() {
        let mut head = format!("{:<14}", "CPU use");
        for sc in loads {
            head += &format!(" {:>26}", format!("{} server/loadgen/other", sc.short));
        }
        let _ = writeln!(o, "{head}");
        for (kind, rep) in reports {
            if rep.skipped.is_some() {
                continue;
            }
            let mut row = format!("{:<14}", kind.name());
            for sc in loads {
                match rep.loads.get(sc.short) {
                    Some(Ok(r)) => {
                        row += &format!(
                            " {:>26}",
                            format!(
                                "{:.0}% / {:.0}% / {:.0}%",
                                r.server_cpu_util * 100.0,
                                r.loadgen_cpu_util * 100.0,
                                r.other_cpu_util * 100.0
                            )
                        )
                    }
                    _ => row += &format!(" {:>26}", "-"),
                }
            }
            let _ = writeln!(o, "{row}");
        }
        let _ = writeln!(
            o,
            "(a load generator near 100% means messages/s measures the client: compare cpu us/msg;\n \
             'other' is CPU time on the two benchmark CPUs used by anything else: if it is not\n \
             near 0%, the machine was busy and the figures are disturbed)"
        );
        let busy = reports.iter().flat_map(|(_, r)| r.loads.values()).any(|r| {
            r.as_ref()
                .map(|r| r.other_cpu_util > OTHER_CPU_WARN)
                .unwrap_or(false)
        });
        if busy {
            let _ = writeln!(
                o,
                "WARNING: other processes used more than {:.0}% CPU during some runs; \
                 repeat on a quiet machine",
                OTHER_CPU_WARN * 100.0
            );
        }
        let _ = writeln!(o);
    }

    // Notes and skips.
    for (kind, rep) in reports {
        if let Some(why) = &rep.skipped {
            let _ = writeln!(o, "note: {} SKIPPED: {why}", kind.name());
        } else if let Some(n) = &rep.note {
            let _ = writeln!(o, "note: {}: {n}", kind.name());
        }
        for (sc, r) in &rep.loads {
            if let Err(e) = r {
                let _ = writeln!(o, "note: {} {sc} failed: {e}", kind.name());
            }
        }
        if let Some(Err(e)) = &rep.idle {
            let _ = writeln!(o, "note: {} idle failed: {e}", kind.name());
        }
    }
    let _ = writeln!(o);

    // Ratios.
    let present = |name: &str| {
        reports
            .iter()
            .any(|(k, r)| k.name() == name && r.skipped.is_none())
    };
    let subjects_all: Vec<&str> = subjects.iter().map(|s| s.trim()).collect();
    let subjects: Vec<&str> = subjects_all
        .iter()
        .copied()
        .filter(|s| present(s))
        .collect();
    if subjects.is_empty() {
        let _ = writeln!(
            o,
            "Ratios: no results for {} (not run or skipped), nothing to compare.",
            subjects_all.join(", ")
        );
        return o;
    }
    let _ = writeln!(
        o,
        "Ratios (subject / baseline; cpu/msg and idle: lower is better, msgs/s: higher is \
         better;\n load ratios are medians of the per-round paired ratios)"
    );
    let mut head = format!("{:<32}", "");
    for sc in loads {
        head += &format!(
            " {:>12} {:>12}",
            format!("{} cpu", sc.short),
            format!("{} msgs", sc.short)
        );
    }
    if want_idle {
        head += &format!(" {:>10}", "idle B");
    }
    let _ = writeln!(o, "{head}");
    for s in &subjects {
        for b in BASELINES {
            if !present(b) || *s == b {
                continue;
            }
            let mut row = format!("{:<32}", format!("{s} vs {b}"));
            for sc in loads {
                let c = load_ratio(reports, s, b, sc.short, cpu_metric);
                let m = load_ratio(reports, s, b, sc.short, rate_metric);
                row += &format!(" {:>12} {:>12}", fmt_ratio(c), fmt_ratio(m));
            }
            if want_idle {
                let r = match (get_idle(reports, s), get_idle(reports, b)) {
                    (Some(x), Some(y)) => ratio(x.bytes_per_conn, y.bytes_per_conn),
                    _ => None,
                };
                row += &format!(" {:>10}", fmt_ratio(r));
            }
            let _ = writeln!(o, "{row}");
        }
    }
    let _ = writeln!(o);

    // Targets of the engine issue (single I/O thread, vs tokio current_thread).
    let _ = writeln!(o, "Targets (single I/O thread, against tokio-current):");
    for s in &subjects {
        for t in targets(reports, s) {
            let _ = writeln!(
                o,
                "  {:<14} {:<44} {:>10}  {}",
                s,
                t.what,
                t.value.map_or_else(|| "-".to_string(), |v| t.fmt_value(v)),
                match t.met {
                    Some(true) => "met",
                    Some(false) => "NOT met",
                    None => "n/a",
                }
            );
        }
    }
    let _ = writeln!(o);
    o
}

struct Target {
    key: &'static str,
    what: &'static str,
    value: Option<f64>,
    met: Option<bool>,
    absolute: bool,
}

impl Target {
    fn fmt_value(&self, v: f64) -> String {
        if self.absolute {
            format!("{v:.1} B")
        } else {
            format!("{v:.3}x")
        }
    }
}

fn targets(reports: &[(Kind, ServerReport)], s: &str) -> Vec<Target> {
    let base = "tokio-current";
    let cpu = |sc: &str| load_ratio(reports, s, base, sc, cpu_metric);
    let rate = |sc: &str| load_ratio(reports, s, base, sc, rate_metric);
    let idle = get_idle(reports, s).map(|r| r.bytes_per_conn);
    let mk = |key, what, value: Option<f64>, ok: fn(f64) -> bool, absolute| Target {
        key,
        what,
        value,
        met: value.map(ok),
        absolute,
    };
    vec![
        mk(
            "pipe64_cpu_per_msg",
            "pipe64 cpu/msg <= 0.85x tokio-current",
            cpu("pipe64"),
            |v| v <= 0.85,
            false,
        ),
        mk(
            "pp64_cpu_per_msg",
            "pp64 cpu/msg <= 0.95x tokio-current",
            cpu("pp64"),
            |v| v <= 0.95,
            false,
        ),
        mk(
            "pp512_cpu_per_msg",
            "pp512 cpu/msg <= 0.95x tokio-current",
            cpu("pp512"),
            |v| v <= 0.95,
            false,
        ),
        mk(
            "pp512_msgs_per_sec",
            "pp512 msgs/s >= 1.1x tokio-current",
            rate("pp512"),
            |v| v >= 1.1,
            false,
        ),
        mk(
            "idle_bytes_per_conn",
            "idle memory <= 256 B/conn",
            idle,
            |v| v <= 256.0,
            true,
        ),
    ]
}

fn to_json(
    args: &Args,
    ctx: &Ctx,
    reports: &[(Kind, ServerReport)],
    loads: &[Scenario],
    want_idle: bool,
) -> Value {
    let mut servers = serde_json::Map::new();
    for (kind, rep) in reports {
        let mut sc = serde_json::Map::new();
        for (name, r) in &rep.loads {
            let one = |r: &LoadResult| {
                json!({
                    "msgs": r.msgs,
                    "secs": r.secs,
                    "msgs_per_sec": r.msgs_per_sec,
                    "server_cpu_secs": r.server_cpu_secs,
                    "cpu_us_per_msg": r.cpu_us_per_msg,
                    "server_cpu_util": r.server_cpu_util,
                    "loadgen_cpu_util": r.loadgen_cpu_util,
                    "other_cpu_util": r.other_cpu_util,
                    "round": r.round,
                    "errors": r.errors,
                })
            };
            let v = match r {
                Ok(r) => {
                    let all: Vec<Value> = rep
                        .rounds
                        .get(name)
                        .map(|v| v.iter().map(one).collect())
                        .unwrap_or_default();
                    json!({ "median": one(r), "runs": all })
                }
                Err(e) => json!({ "error": e }),
            };
            sc.insert((*name).to_string(), v);
        }
        let idle = match &rep.idle {
            Some(Ok(r)) => json!({
                "connections": r.connections,
                "rss_before": r.rss_before,
                "rss_after": r.rss_after,
                "bytes_per_conn": r.bytes_per_conn,
            }),
            Some(Err(e)) => json!({ "error": e }),
            None => Value::Null,
        };
        servers.insert(
            kind.name().to_string(),
            json!({
                "skipped": rep.skipped,
                "note": rep.note,
                "scenarios": sc,
                "idle": idle,
            }),
        );
    }
    let mut ratios = Vec::new();
    let mut target_list = Vec::new();
    for s in args.subjects.iter().map(|s| s.trim()) {
        if !reports
            .iter()
            .any(|(k, r)| k.name() == s && r.skipped.is_none())
        {
            continue;
        }
        for b in BASELINES {
            if s == b {
                continue;
            }
            let mut per = serde_json::Map::new();
            for sc in loads {
                let c = load_ratio(reports, s, b, sc.short, cpu_metric);
                let m = load_ratio(reports, s, b, sc.short, rate_metric);
                if c.is_some() || m.is_some() {
                    per.insert(
                        sc.short.to_string(),
                        json!({ "cpu_per_msg": c, "msgs_per_sec": m }),
                    );
                }
            }
            let idle = match (get_idle(reports, s), get_idle(reports, b)) {
                (Some(x), Some(y)) => ratio(x.bytes_per_conn, y.bytes_per_conn),
                _ => None,
            };
            ratios
                .push(json!({ "subject": s, "baseline": b, "scenarios": per, "idle_bytes": idle }));
        }
        for t in targets(reports, s) {
            target_list.push(json!({
                "subject": s,
                "target": t.key,
                "description": t.what,
                "value": t.value,
                "met": t.met,
            }));
        }
    }
    json!({
        "config": {
            "duration_secs": ctx.duration,
            "warmup_secs": ctx.warmup,
            "repeat": args.repeat,
            "wait_quiet_secs": args.wait_quiet,
            "busy_retries": args.busy_retries,
            "server_cpu": ctx.server_cpu,
            "client_cpu": ctx.client_cpu,
            "clk_tck": ctx.clk_tck,
            "idle_connections": if want_idle { Some(args.idle) } else { None },
            "scenarios": loads.iter().map(|s| json!({
                "name": s.name,
                "short": s.short,
                "connections": s.connections,
                "size": s.size,
                "window": s.window,
            })).collect::<Vec<_>>(),
        },
        "servers": servers,
        "ratios": ratios,
        "targets": target_list,
    })
}
