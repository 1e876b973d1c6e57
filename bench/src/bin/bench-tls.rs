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
//! operation, and server RSS per idle TLS connection. Each phase runs its
//! `--repeat` rounds (the two servers back to back in each) before the
//! next phase starts. Then the ratios (medians of the per-round paired
//! ratios), the issue's targets, and one `RESULT` line per phase and
//! server. Starting, pinning, sampling, rounds and statistics are
//! `myriad_bench::harness`'s.

use anyhow::{bail, Result};
use clap::Parser;
use myriad_bench::harness::{
    cargo_build, median, num, paired_ratio_median, result_line, Load, Rig, Run, ServerSpec,
};
use std::path::Path;

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

fn main() -> Result<()> {
    let a = Args::parse();
    let mut rig = Rig::new("bench-tls", 0, 1, 19443)?;
    if !a.no_build {
        let dir = rig.bin_dir().to_path_buf();
        let ok = cargo_build(
            "bench-tls",
            &dir,
            &[
                "-p",
                "myriad-bench",
                "--bin",
                "tls-tokio",
                "--bin",
                "tls-load",
            ],
            &[],
        )? && cargo_build(
            "bench-tls",
            &dir,
            &["-p", "myriad-tls", "--example", "tls_echo"],
            &[],
        )?;
        if !ok {
            bail!("build failed");
        }
    }
    let pki = std::env::temp_dir().join(format!("myriad-bench-tls-{}", std::process::id()));
    make_pki(&pki)?;
    let s = |f: &str| pki.join(f).display().to_string();
    let (cert, key, ca) = (s("server.pem"), s("server.key"), s("ca.pem"));
    let servers = [
        ServerSpec::new(
            "myriad-tls",
            rig.bin("examples/tls_echo"),
            ["{addr}", "--cert", &cert, "--key", &key, "--threads", "1"],
        ),
        ServerSpec::new(
            "tokio-rustls",
            rig.bin("tls-tokio"),
            ["--addr", "{addr}", "--cert", &cert, "--key", &key],
        ),
    ];
    let tls_load = rig.bin("tls-load");
    let scenarios = [("handshake", 50usize), ("resume", 50), ("bulk", 100)];
    // Per scenario: per server (median ops/s, median CPU per op), and the
    // paired ratios (ops/s, CPU per op) of the first server to the second.
    let mut table: Vec<Vec<(f64, f64)>> = vec![Vec::new(); servers.len()];
    let mut paired: Vec<(f64, f64)> = Vec::new();
    let mut results = Vec::new();
    {
        let mut running = Vec::new();
        for spec in &servers {
            running.push(rig.start(spec)?);
        }
        for sc in scenarios {
            // One phase at a time: its rounds, the servers back to back.
            let grid = rig.rounds(&mut running, &[sc], a.repeat, |rig, r, &(mode, conns), srv| {
                let conns = conns.to_string();
                let (warmup, duration) = (a.warmup.to_string(), a.duration.to_string());
                let load = Load::new(
                    &tls_load,
                    [
                        "--addr",
                        "{addr}",
                        "--mode",
                        mode,
                        "--connections",
                        &conns,
                        "--warmup",
                        &warmup,
                        "--duration",
                        &duration,
                        "--size",
                        "16384",
                        "--ca",
                        &ca,
                    ],
                )
                .args(if a.verify { None } else { Some("--no-verify") })
                .timeout_secs(a.warmup + a.duration + 60.0);
                let tag = format!("{:<13} {mode:<9} #{}", srv.name(), r + 1);
                rig.measure(srv, &load, &tag, |run| {
                    // Handshakes completed in the window, by kind (their count
                    // differs from ops by those in flight at its edges).
                    let f = |k| run.field(k).unwrap_or(0.0);
                    let resumed = match mode {
                        "handshake" | "resume" => format!(
                            "  resumed {}/{}",
                            f("resumed"),
                            f("resumed") + f("full")
                        ),
                        _ => String::new(),
                    };
                    eprintln!(
                        "{tag}  {:>10.0} ops/s  {:>8.2} us/op server cpu  server busy {:>3.0}%  client busy {:>3.0}%  errors {}{resumed}",
                        run.rate(),
                        run.cpu_us_per_op(),
                        run.rate() * run.cpu_us_per_op() / 1e4,
                        run.field("client_cpu").unwrap_or(f64::NAN) * 100.0,
                        run.errors()
                    );
                    Ok(())
                })
            })?;
            // The machine's speed drifts between runs (shared host): the
            // ratio of the two runs of one round, taken back to back, is
            // steadier than the ratio of the two servers' medians.
            let (m, t) = (&grid.get(0, 0).runs, &grid.get(0, 1).runs);
            let pair = |f: fn(&Run) -> f64| paired_ratio_median(m, t, f).unwrap_or(f64::NAN);
            paired.push((pair(Run::rate), pair(Run::cpu_us_per_op)));
            for (i, spec) in servers.iter().enumerate() {
                let runs = &grid.get(0, i).runs;
                let med = |f: fn(&Run) -> f64| median(runs.iter().map(f)).unwrap_or(f64::NAN);
                let (ops, cpu) = (med(Run::rate), med(Run::cpu_us_per_op));
                table[i].push((ops, cpu));
                results.push(result_line(&[
                    ("bench", "tls".into()),
                    ("scenario", sc.0.into()),
                    ("server", spec.name.clone()),
                    ("ops_per_sec", num(Some(ops), 1)),
                    ("cpu_us_per_op", num(Some(cpu), 3)),
                    ("rounds", runs.len().to_string()),
                ]));
            }
        }
    }
    let mut idle = Vec::new();
    let n = a.idle.to_string();
    let holder = Load::new(
        &tls_load,
        [
            "--addr",
            "{addr}",
            "--mode",
            "idle",
            "--connections",
            &n,
            "--duration",
            "120",
            "--ca",
            &ca,
        ],
    )
    .timeout_secs(240.0);
    for spec in &servers {
        let b = match rig.idle(spec, &holder, a.idle, None) {
            Ok(r) => r.bytes_per_conn,
            Err(e) => {
                eprintln!("{}: idle measurement failed: {e:#}", spec.name);
                f64::NAN
            }
        };
        results.push(result_line(&[
            ("bench", "tls".into()),
            ("scenario", "idle".into()),
            ("server", spec.name.clone()),
            ("connections", n.clone()),
            ("bytes_per_conn", num(Some(b), 1)),
        ]));
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
    for (i, spec) in servers.iter().enumerate() {
        let t = &table[i];
        println!(
            "{:<13} {:>14.0} {:>10.2} {:>14.0} {:>10.2} {:>12.0} {:>10.2} {:>12.0}",
            spec.name, t[0].0, t[0].1, t[1].0, t[1].1, t[2].0, t[2].1, idle[i]
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
    for r in &results {
        println!("{r}");
    }
    Ok(())
}
