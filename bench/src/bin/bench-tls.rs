//! The TLS benchmark: Myriad's `tls_echo` against a tokio-rustls echo
//! server with the same rustls version, provider (`ring`) and
//! configuration, each pinned to CPU 0 with the load generator
//! (`tls-load`, Myriad's own TLS client) pinned to CPU 1, in the same run.
//!
//! ```text
//! cargo run --release -p myriad-bench --bin bench-tls -- [--duration 5] [--warmup 1] [--repeat 3] [--idle 10000] [--no-build]
//! ```
//!
//! Figures per server: full handshakes/s, resumed handshakes/s, bulk
//! messages/s (100 connections × 16 KiB ping-pong) with server CPU per
//! operation, and server RSS per idle TLS connection. Then the ratios and
//! the issue's targets.

use anyhow::{bail, Context, Result};
use clap::Parser;
use myriad_bench::{affinity, procfs};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Idle TLS connections for the memory figure.
    #[arg(long, default_value_t = 10000)]
    idle: usize,
    /// Let the load generator verify the server's certificate chain and
    /// handshake signature. Off by default: a verifying client spends more
    /// per full handshake (two ECDSA verifications) than the server does
    /// (one signature), so on its one core it, not the server, would set
    /// the handshakes per second.
    #[arg(long)]
    verify: bool,
    /// Skip `cargo build`.
    #[arg(long)]
    no_build: bool,
}

struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn make_pki(dir: &Path) -> Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    std::fs::create_dir_all(dir)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?
        .signed_by(&key, &ca)?;
    std::fs::write(dir.join("server.pem"), cert.pem())?;
    std::fs::write(dir.join("server.key"), key.serialize_pem())?;
    Ok(())
}

fn start_server(bin: &Path, args: &[String], port: u16) -> Result<Guard> {
    let child = affinity::with_cpu(0, || {
        Command::new(bin)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    })??;
    let g = Guard(child);
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("{} did not start listening on {port}", bin.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(g)
}

struct Run {
    ops_per_sec: f64,
    cpu_us_per_op: f64,
    errors: u64,
    /// The load generator's share of its core.
    client_cpu: f64,
    /// Handshakes completed in the window, by kind (as the client saw them).
    full: u64,
    resumed: u64,
}

fn run_load(
    load: &Path,
    pid: u32,
    port: u16,
    ca: &Path,
    mode: &str,
    conns: usize,
    a: &Args,
) -> Result<Run> {
    let mut child = affinity::with_cpu(1, || {
        Command::new(load)
            .args([
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--mode",
                mode,
                "--connections",
                &conns.to_string(),
                "--warmup",
                &a.warmup.to_string(),
                "--duration",
                &a.duration.to_string(),
                "--size",
                "16384",
            ])
            .arg("--ca")
            .arg(ca)
            .args(if a.verify {
                &[][..]
            } else {
                &["--no-verify"][..]
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
    })??;
    let out = child.stdout.take().context("load stdout")?;
    let mut t0 = 0;
    let mut t1 = 0;
    let mut result = None;
    for line in BufReader::new(out).lines() {
        let line = line?;
        if line == "MEASURE_START" {
            t0 = procfs::cpu_ticks(pid)?;
        } else if line == "MEASURE_END" {
            t1 = procfs::cpu_ticks(pid)?;
        } else if line.starts_with("RESULT") {
            result = Some(line);
        }
    }
    let _ = child.wait();
    let line = result.context("tls-load printed no RESULT")?;
    let field = |k: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
    };
    let ops = field("ops").unwrap_or(0.0);
    let tick_us = 1e6 / procfs::clock_ticks_per_second() as f64;
    Ok(Run {
        ops_per_sec: field("ops_per_sec").unwrap_or(0.0),
        cpu_us_per_op: if ops > 0.0 {
            (t1 - t0) as f64 * tick_us / ops
        } else {
            f64::NAN
        },
        errors: field("errors").unwrap_or(0.0) as u64,
        client_cpu: field("client_cpu").unwrap_or(f64::NAN),
        full: field("full").unwrap_or(0.0) as u64,
        resumed: field("resumed").unwrap_or(0.0) as u64,
    })
}

fn idle_bytes(
    bin: &Path,
    args: &[String],
    port: u16,
    load: &Path,
    ca: &Path,
    n: usize,
) -> Result<f64> {
    let srv = start_server(bin, args, port)?;
    let pid = srv.0.id();
    std::thread::sleep(Duration::from_millis(300));
    let before = procfs::rss_bytes(pid)?;
    let mut child = affinity::with_cpu(1, || {
        Command::new(load)
            .args([
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--mode",
                "idle",
                "--connections",
                &n.to_string(),
                "--duration",
                "120",
            ])
            .arg("--ca")
            .arg(ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
    })??;
    let out = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(out).lines();
    let ready = lines.next().transpose()?.unwrap_or_default();
    if !ready.starts_with("READY") {
        bail!("idle load did not come up: {ready}");
    }
    std::thread::sleep(Duration::from_secs(1));
    let after = procfs::rss_bytes(pid)?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(b"\n");
    }
    let _ = child.wait();
    drop(srv);
    Ok((after as f64 - before as f64) / n as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> Result<()> {
    let a = Args::parse();
    if !a.no_build {
        let ok = Command::new("cargo")
            .args([
                "build",
                "--release",
                "-p",
                "myriad-bench",
                "--bin",
                "tls-tokio",
                "--bin",
                "tls-load",
            ])
            .status()?
            .success()
            && Command::new("cargo")
                .args([
                    "build",
                    "--release",
                    "-p",
                    "myriad-tls",
                    "--example",
                    "tls_echo",
                ])
                .status()?
                .success();
        if !ok {
            bail!("build failed");
        }
    }
    let dir = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .to_path_buf();
    let load = dir.join("tls-load");
    let myriad = dir.join("examples/tls_echo");
    let tokio = dir.join("tls-tokio");
    let pki = std::env::temp_dir().join(format!("myriad-bench-tls-{}", std::process::id()));
    make_pki(&pki)?;
    let (cert, key, ca) = (
        pki.join("server.pem"),
        pki.join("server.key"),
        pki.join("ca.pem"),
    );
    let s = |p: &PathBuf| p.display().to_string();
    let servers: Vec<(&str, PathBuf, Vec<String>, u16)> = vec![
        (
            "myriad-tls",
            myriad.clone(),
            vec![
                "127.0.0.1:19443".into(),
                "--cert".into(),
                s(&cert),
                "--key".into(),
                s(&key),
                "--threads".into(),
                "1".into(),
            ],
            19443,
        ),
        (
            "tokio-rustls",
            tokio.clone(),
            vec![
                "--addr".into(),
                "127.0.0.1:19444".into(),
                "--cert".into(),
                s(&cert),
                "--key".into(),
                s(&key),
            ],
            19444,
        ),
    ];
    let scenarios = [("handshake", 50usize), ("resume", 50), ("bulk", 100)];
    let mut table: Vec<Vec<(f64, f64)>> = vec![Vec::new(); servers.len()];
    let mut paired: Vec<(f64, f64)> = Vec::new();
    {
        let guards: Vec<Guard> = servers
            .iter()
            .map(|(_, bin, args, port)| start_server(bin, args, *port))
            .collect::<Result<_>>()?;
        for (mode, conns) in scenarios {
            let mut runs: Vec<Vec<Run>> = (0..servers.len()).map(|_| Vec::new()).collect();
            for r in 0..a.repeat {
                for (i, (name, _, _, port)) in servers.iter().enumerate() {
                    let run = run_load(&load, guards[i].0.id(), *port, &ca, mode, conns, &a)?;
                    // Handshakes completed in the window, by kind (their count
                    // differs from ops by those in flight at its edges).
                    let resumed = match mode {
                        "handshake" | "resume" => {
                            format!("  resumed {}/{}", run.resumed, run.resumed + run.full)
                        }
                        _ => String::new(),
                    };
                    eprintln!(
                        "{name:<13} {mode:<9} #{}  {:>10.0} ops/s  {:>8.2} us/op server cpu  server busy {:>3.0}%  client busy {:>3.0}%  errors {}{resumed}",
                        r + 1,
                        run.ops_per_sec,
                        run.cpu_us_per_op,
                        run.ops_per_sec * run.cpu_us_per_op / 1e4,
                        run.client_cpu * 100.0,
                        run.errors
                    );
                    runs[i].push(run);
                }
            }
            // The machine's speed drifts between runs (shared host): the
            // ratio of the two runs of one round, taken back to back, is
            // steadier than the ratio of the two servers' medians.
            let pair = |f: &dyn Fn(&Run) -> f64| {
                median(
                    runs[0]
                        .iter()
                        .zip(&runs[1])
                        .map(|(m, t)| f(m) / f(t))
                        .collect(),
                )
            };
            paired.push((pair(&|r| r.ops_per_sec), pair(&|r| r.cpu_us_per_op)));
            for (i, rs) in runs.into_iter().enumerate() {
                table[i].push((
                    median(rs.iter().map(|r| r.ops_per_sec).collect()),
                    median(rs.iter().map(|r| r.cpu_us_per_op).collect()),
                ));
            }
        }
    }
    let mut idle = Vec::new();
    for (i, (name, bin, args, port)) in servers.iter().enumerate() {
        let idle_port = *port + 10;
        let args: Vec<String> = args
            .iter()
            .map(|x| x.replace(&port.to_string(), &idle_port.to_string()))
            .collect();
        let b = idle_bytes(bin, &args, idle_port, &load, &ca, a.idle).or_else(|e| {
            eprintln!("{name}: idle measurement failed: {e:#}");
            Ok::<f64, anyhow::Error>(f64::NAN)
        })?;
        let _ = i;
        idle.push(b);
    }
    let _ = std::fs::remove_dir_all(&pki);
    println!();
    println!(
        "{:<13} {:>14} {:>10} {:>14} {:>10} {:>12} {:>10} {:>12}",
        "server",
        "full hs/s",
        "us/hs",
        "resumed hs/s",
        "us/hs",
        "bulk msg/s",
        "us/msg",
        "idle B/conn"
    );
    for (i, (name, ..)) in servers.iter().enumerate() {
        let t = &table[i];
        println!(
            "{:<13} {:>14.0} {:>10.2} {:>14.0} {:>10.2} {:>12.0} {:>10.2} {:>12.0}",
            name, t[0].0, t[0].1, t[1].0, t[1].1, t[2].0, t[2].1, idle[i]
        );
    }
    println!();
    println!(
        "Ratios myriad-tls / tokio-rustls (median over {} rounds of the ratio of the round's two back-to-back {}s runs):",
        a.repeat, a.duration
    );
    let check = |label: &str, v: f64, target: &str, ok: bool| {
        println!(
            "  {label:<34} {v:>6.2}x   target {target:<8} {}",
            if ok { "met" } else { "NOT met" }
        );
    };
    // Per phase: the rate against its target, then the CPU ratio behind it.
    let phases = [
        ("full handshakes/s", "server cpu per full handshake", 1.2),
        (
            "resumed handshakes/s",
            "server cpu per resumed handshake",
            1.2,
        ),
        (
            "bulk messages/s (100 x 16 KiB)",
            "server cpu per bulk message",
            1.1,
        ),
    ];
    for ((rate, cpu, target), (ops, us)) in phases.into_iter().zip(&paired) {
        check(rate, *ops, &format!(">= {target}x"), *ops >= target);
        println!("  {cpu:<34} {us:>6.2}x");
    }
    check(
        "idle memory per connection",
        idle[0] / idle[1],
        "<= 0.5x",
        idle[0] / idle[1] <= 0.5,
    );
    Ok(())
}
