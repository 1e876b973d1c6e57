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
//! Unless `--no-build`, it first runs `cargo build -p myriad-bench --bins`
//! (the sibling programs) and `cargo build -p myriad --example echo` with
//! the profile it was built with. It finds its sibling programs next to its
//! own executable and Myriad's echo in `examples/` below that directory. If
//! Myriad's echo cannot be built, is missing or does not start, the
//! baselines still run and the report says Myriad was skipped. Every child
//! process is stopped (SIGTERM, then SIGKILL) when the driver finishes or
//! fails; SIGTERM, SIGINT or SIGHUP to the driver stops it after the current
//! run, cleaning up. Logs of the servers go to `bench-echo-logs/` next to the
//! executable. The report ends with one `RESULT` line per scenario and
//! server. Starting, pinning, sampling, rounds, retries and statistics are
//! `myriad_bench::harness`'s.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use myriad_bench::harness::{
    cargo_build, fmt_rate, fmt_ratio, num, paired_ratio_median, ratio, result_line, Grid, Idle,
    Load, Rig, Run, Scenario, Series, ServerSpec, Table, OTHER_CPU_WARN, PIPE64, PP512, PP64,
};
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
    /// Do not run `cargo build` first.
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

const SERVERS: [&str; 5] = [
    "myriad-uring",
    "myriad-epoll",
    "tokio-current",
    "tokio-multi",
    "epoll",
];
const BASELINES: [&str; 3] = ["tokio-current", "tokio-multi", "epoll"];
const LOADS: [Scenario; 3] = [PP64, PIPE64, PP512];

fn is_myriad(name: &str) -> bool {
    name.starts_with("myriad-")
}

/// One server of the report.
struct Entry {
    name: &'static str,
    skipped: Option<String>,
    note: Option<String>,
    /// Per load scenario (in the order run).
    loads: Vec<Series>,
    idle: Option<Result<Idle, String>>,
}

impl Entry {
    fn load(&self, sc: usize) -> Option<&Run> {
        self.loads.get(sc)?.median_run().ok()
    }

    fn idle(&self) -> Option<&Idle> {
        self.idle.as_ref()?.as_ref().ok()
    }
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
    let mut entries: Vec<Entry> = Vec::new();
    for s in args
        .servers
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        let Some(name) = SERVERS.into_iter().find(|k| *k == s) else {
            bail!("unknown server {s:?} (known: {})", SERVERS.join(", "));
        };
        entries.push(Entry {
            name,
            skipped: None,
            note: None,
            loads: Vec::new(),
            idle: None,
        });
    }
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

    let mut rig = Rig::new(
        "bench-echo",
        args.server_cpu,
        args.client_cpu,
        args.base_port,
    )?;
    rig.wait_quiet = args.wait_quiet;
    rig.busy_retries = args.busy_retries;
    let bin_dir = rig.bin_dir().to_path_buf();
    let myriad_echo = args
        .myriad_echo
        .clone()
        .unwrap_or_else(|| bin_dir.join("examples").join("echo"));

    let mut myriad_skip = None;
    if !args.no_build {
        if !cargo_build(
            "bench-echo",
            &bin_dir,
            &["-p", "myriad-bench", "--bins"],
            &[],
        )? {
            bail!("building the benchmark programs failed");
        }
        let myriad = entries.iter().any(|e| is_myriad(e.name));
        if myriad
            && !cargo_build(
                "bench-echo",
                &bin_dir,
                &["-p", "myriad", "--example", "echo"],
                &[],
            )?
        {
            myriad_skip = Some(
                "`cargo build --release -p myriad --example echo` failed (see above); \
                 Myriad was skipped"
                    .to_string(),
            );
        }
    }
    for prog in ["echo-tokio", "echo-epoll", "loadgen", "idle-conns"] {
        if !rig.bin(prog).is_file() {
            bail!(
                "{} not found; build the benchmark programs first: \
                 cargo build --release -p myriad-bench",
                rig.bin(prog).display()
            );
        }
    }
    if myriad_skip.is_none() && !myriad_echo.is_file() {
        myriad_skip = Some(format!(
            "{} not found; build it with: cargo build --release -p myriad --example echo",
            myriad_echo.display()
        ));
    }
    let log_dir = bin_dir.join("bench-echo-logs");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let spec = |name: &str, tag: &str| -> ServerSpec {
        let a = |prog: PathBuf, args: &[&str]| ServerSpec::new(name, prog, args.iter().copied());
        let mut s = match name {
            "myriad-uring" => a(
                myriad_echo.clone(),
                &["{addr}", "--threads", "1", "--backend", "io_uring"],
            ),
            "myriad-epoll" => a(
                myriad_echo.clone(),
                &["{addr}", "--threads", "1", "--backend", "epoll"],
            ),
            "tokio-current" => a(
                bin_dir.join("echo-tokio"),
                &["--addr", "{addr}", "--mode", "current"],
            ),
            "tokio-multi" => a(
                bin_dir.join("echo-tokio"),
                &["--addr", "{addr}", "--mode", "multi"],
            ),
            _ => a(bin_dir.join("echo-epoll"), &["--addr", "{addr}"]),
        };
        if let (Some(n), "tokio-multi") = (args.tokio_multi_threads, name) {
            s.args.extend(["--threads".to_string(), n.to_string()]);
        }
        s.log(log_dir.join(format!("{name}-{tag}.log")))
    };

    println!(
        "Myriad echo benchmark: servers pinned to CPU {}, load generator to CPU {}; \
         warm-up {} s, measured {} s per load scenario{}; CPU from /proc/PID/stat ({} ticks/s)",
        rig.server_cpu,
        rig.client_cpu,
        args.warmup,
        args.duration,
        if args.repeat > 1 {
            format!(" (median of {} runs by cpu/msg)", args.repeat)
        } else {
            String::new()
        },
        rig.clk_tck()
    );
    println!("Logs: {}", log_dir.display());
    println!();
    for e in entries.iter_mut().filter(|e| is_myriad(e.name)) {
        if let Some(why) = &myriad_skip {
            println!("{}: SKIPPED: {why}", e.name);
            e.skipped = Some(why.clone());
        }
    }

    if !loads.is_empty() {
        // Every server runs at once (idle while not driven).
        let mut servers = Vec::new();
        let mut index = Vec::new();
        for (i, e) in entries.iter_mut().enumerate() {
            if e.skipped.is_some() {
                continue;
            }
            rig.check_stop()?;
            match rig.start(&spec(e.name, "load")) {
                Ok(s) => {
                    println!("{}: listening on {} (pid {})", e.name, s.addr(), s.pid());
                    e.note = note(e.name, &s, rig.server_cpu);
                    servers.push(s);
                    index.push(i);
                }
                Err(err) => {
                    let msg = format!("did not start: {err:#}");
                    println!("{}: {msg}", e.name);
                    if is_myriad(e.name) {
                        e.skipped = Some(msg);
                    } else {
                        e.loads = vec![
                            Series {
                                runs: Vec::new(),
                                error: Some(msg)
                            };
                            loads.len()
                        ];
                    }
                }
            }
        }
        println!();
        let loadgen = rig.bin("loadgen");
        let repeat = args.repeat.max(1);
        let grid: Grid = rig.rounds(&mut servers, &loads, repeat, |rig, round, sc, server| {
            let tag = if repeat > 1 {
                format!("{:<14} {:<13} #{}", server.name(), sc.name, round + 1)
            } else {
                format!("{:<14} {:<13}", server.name(), sc.name)
            };
            let load = Load::closed_loop(&loadgen, sc, args.warmup, args.duration);
            rig.measure(server, &load, &tag, |r| {
                let errors = r.errors();
                if !r.status.success() || errors > 0 {
                    bail!(
                        "loadgen reported {errors} error(s) and exited with {}",
                        r.status
                    );
                }
                if r.count() == 0.0 {
                    bail!("no messages completed in the measured window");
                }
                println!(
                    "{tag} {:>10.0} msgs/s {:>7.3} us/msg  cpu: server {:>3.0}% \
                     loadgen {:>3.0}% other {:>3.0}%",
                    r.rate(),
                    r.cpu_us_per_op(),
                    r.server_util() * 100.0,
                    r.loadgen_util() * 100.0,
                    r.other_util() * 100.0
                );
                Ok(())
            })
        })?;
        for (vi, &i) in index.iter().enumerate() {
            entries[i].loads = (0..loads.len())
                .map(|si| grid.get(si, vi).clone())
                .collect();
        }
        for mut s in servers {
            s.stop(Duration::from_secs(6));
        }
        println!();
    }
    if want_idle {
        println!("Idle connections ({}, a fresh server each):", args.idle);
        let n = args.idle.to_string();
        let holder = Load::new(
            rig.bin("idle-conns"),
            [
                "--addr",
                "{addr}",
                "--connections",
                &n,
                "--hold-secs",
                "120",
                "--connect-timeout",
                "90",
            ],
        )
        .timeout_secs(240.0);
        for e in entries.iter_mut().filter(|e| e.skipped.is_none()) {
            rig.check_stop()?;
            let res = rig.idle(&spec(e.name, "idle"), &holder, args.idle, None);
            match &res {
                Ok(r) => println!(
                    "   {:<14} {:>10.1} B/conn at {} connections (RSS {:.1} -> {:.1} MiB)",
                    e.name,
                    r.bytes_per_conn,
                    r.connections,
                    r.rss_before as f64 / 1048576.0,
                    r.rss_after as f64 / 1048576.0
                ),
                Err(err) => println!("   {:<14} FAILED: {err:#}", e.name),
            }
            e.idle = Some(res.map_err(|e| format!("{e:#}")));
        }
    }

    println!();
    print!(
        "{}",
        render(&entries, &loads, want_idle, args.idle, &args.subjects)
    );
    if let Some(path) = &args.json {
        let v = to_json(&args, &rig, &entries, &loads, want_idle);
        let s = serde_json::to_string_pretty(&v)?;
        std::fs::write(path, s + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    Ok(())
}

/// What the report says about how a server ran.
fn note(name: &str, server: &myriad_bench::Server, cpu: usize) -> Option<String> {
    match name {
        "tokio-multi" => {
            // echo-tokio logs its worker count once listening.
            let text = server
                .log()
                .map(std::fs::read_to_string)
                .and_then(Result::ok);
            let workers = text
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.split(", ").nth(1).filter(|s| s.contains("worker")))
                .map(|s| s.to_string())
                .unwrap_or_else(|| "tokio's default worker count".to_string());
            Some(format!(
                "multi-thread runtime with {workers} (tokio's default follows the CPU mask), \
                 all pinned to CPU {cpu}"
            ))
        }
        "myriad-uring" | "myriad-epoll" => Some("--threads 1".to_string()),
        _ => None,
    }
}

fn find<'a>(entries: &'a [Entry], name: &str) -> Option<&'a Entry> {
    entries.iter().find(|e| e.name == name)
}

/// Ratio of a load figure of server `s` to that of server `b`: the median
/// of the per-round paired ratios, or the ratio of the reported figures
/// when no round has both.
fn load_ratio(
    entries: &[Entry],
    s: &str,
    b: &str,
    sc: usize,
    metric: fn(&Run) -> f64,
) -> Option<f64> {
    let runs = |name: &str| find(entries, name)?.loads.get(sc)?.ok_runs();
    if let (Some(rs), Some(rb)) = (runs(s), runs(b)) {
        if let Some(m) = paired_ratio_median(rs, rb, metric) {
            return Some(m);
        }
    }
    let load = |name: &str| find(entries, name)?.load(sc);
    ratio(metric(load(s)?), metric(load(b)?))
}

fn idle_ratio(entries: &[Entry], s: &str, b: &str) -> Option<f64> {
    let idle = |name: &str| find(entries, name)?.idle().map(|r| r.bytes_per_conn);
    ratio(idle(s)?, idle(b)?)
}

/// The plain-text report: figures table, utilisation, ratios, targets, and
/// a `RESULT` line per scenario and server.
fn render(
    entries: &[Entry],
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
    let mut t = Table::new().left("server", 14);
    for sc in loads {
        t = t
            .right(format!("{} msgs/s", sc.short), 14)
            .right(format!("{} cpu us/msg", sc.short), 14);
    }
    if want_idle {
        t = t.right("idle B/conn", 12);
    }
    t = t.rule();
    for e in entries {
        if e.skipped.is_some() {
            t.line(format!("{:<14}  skipped", e.name));
            continue;
        }
        let mut row = vec![e.name.to_string()];
        for si in 0..loads.len() {
            let (rate, cpu) = match e.loads.get(si).map(Series::median_run) {
                Some(Ok(r)) => (fmt_rate(r.rate()), format!("{:.3}", r.cpu_us_per_op())),
                Some(Err(_)) => ("FAILED".into(), "FAILED".into()),
                None => ("-".into(), "-".into()),
            };
            row.extend([rate, cpu]);
        }
        if want_idle {
            row.push(match &e.idle {
                Some(Ok(r)) => format!("{:.1}", r.bytes_per_conn),
                Some(Err(_)) => "FAILED".into(),
                None => "-".into(),
            });
        }
        t.row(row);
    }
    let _ = writeln!(o, "{}", t.render());

    // Utilisation: shows which side was the bottleneck.
    if !loads.is_empty() {
        let mut t = Table::new().left("CPU use", 14);
        for sc in loads {
            t = t.right(format!("{} server/loadgen/other", sc.short), 26);
        }
        for e in entries.iter().filter(|e| e.skipped.is_none()) {
            let mut row = vec![e.name.to_string()];
            for si in 0..loads.len() {
                row.push(match e.load(si) {
                    Some(r) => format!(
                        "{:.0}% / {:.0}% / {:.0}%",
                        r.server_util() * 100.0,
                        r.loadgen_util() * 100.0,
                        r.other_util() * 100.0
                    ),
                    None => "-".into(),
                });
            }
            t.row(row);
        }
        o += &t.render();
        let _ = writeln!(
            o,
            "(a load generator near 100% means messages/s measures the client: compare cpu us/msg;\n \
             'other' is CPU time on the two benchmark CPUs used by anything else: if it is not\n \
             near 0%, the machine was busy and the figures are disturbed)"
        );
        let busy = entries
            .iter()
            .flat_map(|e| (0..loads.len()).filter_map(|si| e.load(si)))
            .any(Run::disturbed);
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
    for e in entries {
        if let Some(why) = &e.skipped {
            let _ = writeln!(o, "note: {} SKIPPED: {why}", e.name);
        } else if let Some(n) = &e.note {
            let _ = writeln!(o, "note: {}: {n}", e.name);
        }
        let mut failed: Vec<(&str, &str)> = loads
            .iter()
            .zip(&e.loads)
            .filter_map(|(sc, s)| Some((sc.short, s.error.as_deref()?)))
            .collect();
        failed.sort();
        for (sc, err) in failed {
            let _ = writeln!(o, "note: {} {sc} failed: {err}", e.name);
        }
        if let Some(Err(err)) = &e.idle {
            let _ = writeln!(o, "note: {} idle failed: {err}", e.name);
        }
    }
    let _ = writeln!(o);

    // Ratios.
    let present = |name: &str| find(entries, name).is_some_and(|e| e.skipped.is_none());
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
    } else {
        let _ = writeln!(
            o,
            "Ratios (subject / baseline; cpu/msg and idle: lower is better, msgs/s: higher is \
             better;\n load ratios are medians of the per-round paired ratios)"
        );
        let mut t = Table::new().left("", 32);
        for sc in loads {
            t = t
                .right(format!("{} cpu", sc.short), 12)
                .right(format!("{} msgs", sc.short), 12);
        }
        if want_idle {
            t = t.right("idle B", 10);
        }
        for s in &subjects {
            for b in BASELINES.into_iter().filter(|b| present(b) && s != b) {
                let mut row = vec![format!("{s} vs {b}")];
                for si in 0..loads.len() {
                    row.push(fmt_ratio(load_ratio(entries, s, b, si, Run::cpu_us_per_op)));
                    row.push(fmt_ratio(load_ratio(entries, s, b, si, Run::rate)));
                }
                if want_idle {
                    row.push(fmt_ratio(idle_ratio(entries, s, b)));
                }
                t.row(row);
            }
        }
        let _ = writeln!(o, "{}", t.render());

        // Targets of the engine issue (single I/O thread, vs tokio current_thread).
        let _ = writeln!(o, "Targets (single I/O thread, against tokio-current):");
        for s in &subjects {
            for t in targets(entries, loads, s) {
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
    }

    // One machine-readable line per scenario and server.
    for e in entries.iter().filter(|e| e.skipped.is_none()) {
        for (si, sc) in loads.iter().enumerate() {
            if let Some(r) = e.load(si) {
                let rounds = e.loads[si].runs.len();
                let _ = writeln!(
                    o,
                    "{}",
                    result_line(&[
                        ("bench", "echo".into()),
                        ("scenario", sc.short.into()),
                        ("server", e.name.into()),
                        ("msgs_per_sec", num(Some(r.rate()), 1)),
                        ("cpu_us_per_msg", num(Some(r.cpu_us_per_op()), 4)),
                        ("rounds", rounds.to_string()),
                    ])
                );
            }
        }
        if let Some(r) = e.idle() {
            let _ = writeln!(
                o,
                "{}",
                result_line(&[
                    ("bench", "echo".into()),
                    ("scenario", "idle".into()),
                    ("server", e.name.into()),
                    ("connections", r.connections.to_string()),
                    ("bytes_per_conn", num(Some(r.bytes_per_conn), 1)),
                ])
            );
        }
    }
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

fn targets(entries: &[Entry], loads: &[Scenario], s: &str) -> Vec<Target> {
    let base = "tokio-current";
    let sc = |short: &str| loads.iter().position(|l| l.short == short);
    let cpu = |short: &str| load_ratio(entries, s, base, sc(short)?, Run::cpu_us_per_op);
    let rate = |short: &str| load_ratio(entries, s, base, sc(short)?, Run::rate);
    let idle = find(entries, s)
        .and_then(Entry::idle)
        .map(|r| r.bytes_per_conn);
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
    rig: &Rig,
    entries: &[Entry],
    loads: &[Scenario],
    want_idle: bool,
) -> Value {
    let one = |r: &Run| {
        json!({
            "msgs": r.count() as u64,
            "secs": r.field("secs"),
            "msgs_per_sec": r.rate(),
            "server_cpu_secs": r.server_cpu_secs,
            "cpu_us_per_msg": r.cpu_us_per_op(),
            "server_cpu_util": r.server_util(),
            "loadgen_cpu_util": r.loadgen_util(),
            "other_cpu_util": r.other_util(),
            "round": r.round,
            "errors": r.errors(),
        })
    };
    let mut servers = serde_json::Map::new();
    for e in entries {
        let mut sc = serde_json::Map::new();
        for (l, s) in loads.iter().zip(&e.loads) {
            let v = match s.median_run() {
                Ok(r) => {
                    json!({ "median": one(r), "runs": s.runs.iter().map(one).collect::<Vec<_>>() })
                }
                Err(err) => json!({ "error": err }),
            };
            sc.insert(l.short.to_string(), v);
        }
        let idle = match &e.idle {
            Some(Ok(r)) => json!({
                "connections": r.connections,
                "rss_before": r.rss_before,
                "rss_after": r.rss_after,
                "bytes_per_conn": r.bytes_per_conn,
            }),
            Some(Err(err)) => json!({ "error": err }),
            None => Value::Null,
        };
        servers.insert(
            e.name.to_string(),
            json!({ "skipped": e.skipped, "note": e.note, "scenarios": sc, "idle": idle }),
        );
    }
    let mut ratios = Vec::new();
    let mut target_list = Vec::new();
    for s in args.subjects.iter().map(|s| s.trim()) {
        if find(entries, s).is_none_or(|e| e.skipped.is_some()) {
            continue;
        }
        for b in BASELINES.into_iter().filter(|b| *b != s) {
            let mut per = serde_json::Map::new();
            for (si, l) in loads.iter().enumerate() {
                let c = load_ratio(entries, s, b, si, Run::cpu_us_per_op);
                let m = load_ratio(entries, s, b, si, Run::rate);
                if c.is_some() || m.is_some() {
                    per.insert(
                        l.short.to_string(),
                        json!({ "cpu_per_msg": c, "msgs_per_sec": m }),
                    );
                }
            }
            let idle = idle_ratio(entries, s, b);
            ratios
                .push(json!({ "subject": s, "baseline": b, "scenarios": per, "idle_bytes": idle }));
        }
        for t in targets(entries, loads, s) {
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
            "duration_secs": args.duration,
            "warmup_secs": args.warmup,
            "repeat": args.repeat,
            "wait_quiet_secs": args.wait_quiet,
            "busy_retries": args.busy_retries,
            "server_cpu": rig.server_cpu,
            "client_cpu": rig.client_cpu,
            "clk_tck": rig.clk_tck(),
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
