//! `bench-pubsub`: issue 19's publish/subscribe benchmarks. Myriad's topics
//! (`pubsub-myriad`, on `myriad_ws::Topics`) against a tokio-tungstenite +
//! `tokio::sync::broadcast` baseline (`pubsub-tokio-broadcast`, one task per
//! connection, current-thread runtime), in the same run, on the same cores;
//! and the cluster's publish-to-delivery latency across two nodes through
//! NATS and through Redis.
//!
//! A third server, `floor` (`pubsub-floor`, bench/ws-baselines: a bare
//! `mio` loop that frames a message once and makes one `write` per
//! subscriber), measures what the sends alone cost when every message is
//! sent as it arrives: in the fixed-rate `fanout` scenario a server that
//! keeps up has no two messages for one subscriber to join, so its ratio to
//! the baseline bounds every such server's ratio from below, up to the
//! system calls' entry and exit that io_uring batching saves.
//!
//! All servers speak the same minimal protocol (text `sub TOPIC`, answered
//! `ok TOPIC`; a binary `[n][topic][rest]` is published as it is), so they
//! do the same work: what is measured is the topic fan-out, not a JSON
//! codec. Every server runs on one thread pinned to CPU 0; the load program
//! (`pubsub-load`, pinned to CPU 1) opens the subscribers, subscribes them,
//! waits for every confirmation, then publishes 100-byte messages and checks
//! every delivery (per-topic sequence numbers, every byte). Scenarios:
//!
//! * `fanout`: 1 publisher, 1 topic, 10,000 subscribers, at
//!   `--fanout-rate` publishes/s (each one 10,000 deliveries);
//! * `topics`: 10,000 topics × 10 subscribers (10,000 connections with 10
//!   topics each, 100,000 subscriptions), round robin over the topics at
//!   `--topics-rate` publishes/s (each one 10 deliveries);
//! * `fanout-sat`, `topics-sat`: the same at saturation, `--fanout-window`
//!   or `--topics-window` publishes outstanding (not yet delivered to all);
//! * `cluster-nats`, `cluster-redis`: a broker and two `pubsub-myriad`
//!   nodes (all on the server CPU); `--cluster-subscribers` on node B over
//!   `--cluster-topics` topics, the publisher on node A at `--cluster-rate`
//!   publishes/s: publish-to-delivery latency p50/p99 (the send time is in
//!   the payload, read on the same clock by the same process).
//!
//! For each single-node scenario and server: deliveries/s and the server's
//! CPU time per delivery (`utime + stime` over the measured window divided
//! by the deliveries in it), medians of `--repeat` interleaved rounds, then
//! Myriad's paired ratio to the baseline (median of per-round ratios); the
//! issue's target is CPU per delivery ≤ 0.3× the baseline. A fixed-rate run
//! whose publish rate fell below 95% of the stated one (the server could not
//! keep up) is marked `rate not kept`.
//!
//! ```text
//! cargo run --release -p myriad-bench --bin bench-pubsub -- [--duration 5] [--warmup 1] \
//!     [--repeat 3] [--servers myriad,tokio-broadcast,floor] \
//!     [--scenarios fanout,topics,fanout-sat,topics-sat,cluster-nats,cluster-redis] \
//!     [--subscribers 10000] [--fanout-rate 10] [--topics-rate 10000] \
//!     [--cluster-rate 1000] [--wait-quiet 60] [--busy-retries 2] [--no-build] [--json FILE]
//! ```
//!
//! Unless `--no-build`, it builds `pubsub-myriad` and `pubsub-load` and the
//! baseline (`bench/ws-baselines`, its own workspace, into
//! `target/ws-baselines`). The report ends with one `RESULT` line per
//! scenario and server.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;
use myriad_bench::harness::{
    cargo_build, median, median_run, num, paired_ratio_median, result_line, spread, Load, Rig, Run,
    ServerSpec, Table,
};

#[derive(Parser, Debug)]
struct Args {
    /// Measured seconds per run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Warm-up seconds per run (publishing, not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Runs per scenario and server (median reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Servers to run (single-node scenarios).
    #[arg(
        long,
        default_value = "myriad,tokio-broadcast,floor",
        value_delimiter = ','
    )]
    servers: Vec<String>,
    /// Scenarios to run.
    #[arg(
        long,
        default_value = "fanout,topics,fanout-sat,topics-sat,cluster-nats,cluster-redis",
        value_delimiter = ','
    )]
    scenarios: Vec<String>,
    /// Subscriber connections of the single-node scenarios (fanout: all on
    /// one topic; topics: 10 topics each, `subscribers` topics).
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// fanout: publishes per second (x subscribers = deliveries per second).
    #[arg(long, default_value_t = 10.0)]
    fanout_rate: f64,
    /// topics: publishes per second (x 10 = deliveries per second).
    #[arg(long, default_value_t = 10_000.0)]
    topics_rate: f64,
    /// fanout-sat: publishes outstanding.
    #[arg(long, default_value_t = 4)]
    fanout_window: usize,
    /// topics-sat: publishes outstanding.
    #[arg(long, default_value_t = 2000)]
    topics_window: usize,
    /// cluster: subscribers on node B.
    #[arg(long, default_value_t = 1000)]
    cluster_subscribers: usize,
    /// cluster: topics (subscribers spread evenly, one topic each).
    #[arg(long, default_value_t = 10)]
    cluster_topics: usize,
    /// cluster: publishes per second on node A.
    #[arg(long, default_value_t = 1000.0)]
    cluster_rate: f64,
    /// CPU for the servers (and the brokers).
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU for the load program.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// First port to use.
    #[arg(long, default_value_t = 19500)]
    port: u16,
    /// Before each run, wait up to this many seconds for the two CPUs to be
    /// idle (0 = do not wait).
    #[arg(long, default_value_t = 0.0)]
    wait_quiet: f64,
    /// Re-run a run disturbed by other work on the CPUs up to this many
    /// times (the least disturbed one is kept).
    #[arg(long, default_value_t = 0)]
    busy_retries: usize,
    /// Do not build anything (use binaries already built).
    #[arg(long)]
    no_build: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A single-node scenario: the load program's shape.
struct Scenario {
    name: &'static str,
    subscribers: usize,
    topics: usize,
    per_conn: usize,
    /// Publishes per second, 0 = saturation.
    rate: f64,
    window: usize,
}

fn spec(rig: &Rig, name: &str) -> Result<ServerSpec> {
    let s = match name {
        "myriad" => ServerSpec::new(
            name,
            rig.bin("pubsub-myriad"),
            [
                "--addr",
                "{addr}",
                "--threads",
                "1",
                "--backend",
                "io_uring",
            ],
        ),
        "myriad-epoll" => ServerSpec::new(
            name,
            rig.bin("pubsub-myriad"),
            ["--addr", "{addr}", "--threads", "1", "--backend", "epoll"],
        ),
        "tokio-broadcast" => ServerSpec::new(
            name,
            rig.baseline_bin("ws-baselines", "pubsub-tokio-broadcast"),
            ["--addr", "{addr}"],
        ),
        "floor" => ServerSpec::new(
            name,
            rig.baseline_bin("ws-baselines", "pubsub-floor"),
            ["--addr", "{addr}"],
        ),
        other => {
            bail!("unknown server {other} (known: myriad, myriad-epoll, tokio-broadcast, floor)")
        }
    };
    // The readiness probe is not a WebSocket client: let the server drop it.
    Ok(s.env("RUST_LOG", "warn").settle(Duration::from_millis(100)))
}

fn build(rig: &Rig) -> Result<()> {
    let dir = rig.bin_dir();
    let ok = cargo_build(
        "bench-pubsub",
        dir,
        &[
            "-p",
            "myriad-bench",
            "--bin",
            "pubsub-myriad",
            "--bin",
            "pubsub-load",
        ],
        &[],
    )? && rig.build_baselines(
        "bench-pubsub",
        "ws-baselines",
        &["pubsub-tokio-broadcast", "pubsub-floor"],
    )?;
    if !ok {
        bail!("cargo build failed");
    }
    Ok(())
}

/// The load program's run of a scenario against `{addr}`.
#[allow(clippy::too_many_arguments)]
fn load(
    rig: &Rig,
    args: &Args,
    subscribers: usize,
    topics: usize,
    per_conn: usize,
    rate: f64,
    window: usize,
    pub_addr: Option<String>,
) -> Load {
    let mut l = Load::new(
        rig.bin("pubsub-load"),
        [
            "--addr".to_string(),
            "{addr}".into(),
            "--subscribers".into(),
            subscribers.to_string(),
            "--topics".into(),
            topics.to_string(),
            "--per-conn".into(),
            per_conn.to_string(),
            "--size".into(),
            args.size.to_string(),
            "--rate".into(),
            rate.to_string(),
            "--window".into(),
            window.to_string(),
            "--warmup".into(),
            args.warmup.to_string(),
            "--duration".into(),
            args.duration.to_string(),
            "--connect-timeout".into(),
            "60".into(),
            "--drain".into(),
            "10".into(),
        ],
    );
    if let Some(p) = pub_addr {
        l = l.args(["--pub-addr".to_string(), p]);
    }
    l.timeout = Duration::from_secs_f64(args.warmup + args.duration + 60.0 + 10.0 + 60.0);
    l
}

/// Judges one run: every delivery must have arrived and been right.
fn check(r: &Run) -> Result<()> {
    let lost = r.field("lost").unwrap_or(f64::NAN);
    if !r.status.success() || r.errors() > 0 {
        bail!(
            "pubsub-load failed ({}, {} errors, {lost} lost)",
            r.status,
            r.errors()
        );
    }
    Ok(())
}

fn rate_kept(r: &Run, stated: f64) -> bool {
    stated <= 0.0 || r.field("publish_rate").unwrap_or(0.0) >= 0.95 * stated
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
    let mut rig = Rig::new("bench-pubsub", args.server_cpu, args.client_cpu, args.port)?;
    rig.wait_quiet = args.wait_quiet;
    rig.busy_retries = args.busy_retries;
    if !args.no_build {
        build(&rig)?;
    }
    let n = args.subscribers;
    let all = [
        Scenario {
            name: "fanout",
            subscribers: n,
            topics: 1,
            per_conn: 1,
            rate: args.fanout_rate,
            window: args.fanout_window.max(64),
        },
        Scenario {
            name: "topics",
            subscribers: n,
            topics: n,
            per_conn: 10.min(n),
            rate: args.topics_rate,
            window: args.topics_window.max(20_000),
        },
        Scenario {
            name: "fanout-sat",
            subscribers: n,
            topics: 1,
            per_conn: 1,
            rate: 0.0,
            window: args.fanout_window,
        },
        Scenario {
            name: "topics-sat",
            subscribers: n,
            topics: n,
            per_conn: 10.min(n),
            rate: 0.0,
            window: args.topics_window,
        },
    ];
    let scenarios: Vec<&Scenario> = all
        .iter()
        .filter(|s| args.scenarios.iter().any(|n| n == s.name))
        .collect();
    let specs: Vec<ServerSpec> = args
        .servers
        .iter()
        .map(|n| spec(&rig, n))
        .collect::<Result<_>>()?;

    let mut table = Table::new()
        .left("scenario", 13)
        .left("server", 16)
        .right("deliveries/s", 13)
        .right("CPU us/deliv", 13)
        .right("server", 7)
        .right("p50 us", 8)
        .right("p99 us", 8)
        .right("other max", 10);
    let mut results = Vec::new();
    let mut ratios = Vec::new();
    let mut json = Vec::new();

    if !scenarios.is_empty() && !specs.is_empty() {
        let mut servers = Vec::new();
        for s in &specs {
            servers.push(rig.start(s)?);
        }
        let grid = rig.rounds(
            &mut servers,
            &scenarios,
            args.repeat,
            |rig, round, sc, server| {
                let l = load(
                    rig,
                    &args,
                    sc.subscribers,
                    sc.topics,
                    sc.per_conn,
                    sc.rate,
                    sc.window,
                    None,
                );
                let tag = format!(
                    "bench-pubsub: round {} {:<10} {:<16}",
                    round + 1,
                    sc.name,
                    server.name()
                );
                rig.measure(server, &l, &tag, |r| {
                    eprintln!(
                        "{tag} {:>10.0} deliveries/s {:>8.4} us/delivery  publishes/s {:>8.0}{}  \
                         p99 {} us  server {:>3.0}%  other {:>3.0}%",
                        r.rate(),
                        r.cpu_us_per_op(),
                        r.field("publish_rate").unwrap_or(f64::NAN),
                        if rate_kept(r, sc.rate) {
                            ""
                        } else {
                            " (rate not kept)"
                        },
                        num(r.field("p99_us"), 0),
                        r.server_util() * 100.0,
                        r.other_util() * 100.0
                    );
                    check(r)
                })
            },
        )?;
        for (si, sc) in scenarios.iter().enumerate() {
            if let Some(mi) = specs.iter().position(|s| s.name == "myriad") {
                let m = &grid.get(si, mi).runs;
                for (vi, s) in specs.iter().enumerate().filter(|(vi, _)| *vi != mi) {
                    let b = &grid.get(si, vi).runs;
                    let rate = paired_ratio_median(m, b, Run::rate);
                    let cpu = paired_ratio_median(m, b, Run::cpu_us_per_op);
                    ratios.push(format!(
                        "{:<13} myriad vs {:<16} deliveries/s {:>7}   CPU/delivery {:>7}{}",
                        sc.name,
                        s.name,
                        num(rate, 2) + "x",
                        num(cpu, 3) + "x",
                        if s.name == "tokio-broadcast" {
                            " (target <= 0.300x)"
                        } else {
                            ""
                        }
                    ));
                    json.push(serde_json::json!({"scenario": sc.name, "server": "myriad",
                        "baseline": s.name, "paired_deliveries_ratio": rate,
                        "paired_cpu_ratio": cpu}));
                }
            }
            // The floor's own ratio to the baseline: one write(2) per
            // delivery and nothing else. A server that sends each message as
            // it arrives pays at least those sends; batching the system calls
            // (io_uring) can save only their entry and exit.
            let fi = specs.iter().position(|s| s.name == "floor");
            let bi = specs.iter().position(|s| s.name == "tokio-broadcast");
            if let (Some(fi), Some(bi)) = (fi, bi) {
                let (f, b) = (&grid.get(si, fi).runs, &grid.get(si, bi).runs);
                let rate = paired_ratio_median(f, b, Run::rate);
                let cpu = paired_ratio_median(f, b, Run::cpu_us_per_op);
                ratios.push(format!(
                    "{:<13} floor  vs {:<16} deliveries/s {:>7}   CPU/delivery {:>7} (one write per \
                     delivery, nothing else)",
                    sc.name,
                    "tokio-broadcast",
                    num(rate, 2) + "x",
                    num(cpu, 3) + "x"
                ));
                json.push(serde_json::json!({"scenario": sc.name, "server": "floor",
                    "baseline": "tokio-broadcast", "paired_deliveries_ratio": rate,
                    "paired_cpu_ratio": cpu}));
            }
            for (vi, s) in specs.iter().enumerate() {
                let series = grid.get(si, vi);
                let runs = &series.runs;
                let Some(m) = median_run(runs, Run::cpu_us_per_op) else {
                    let why = series.error.clone().unwrap_or_default();
                    table.line(format!("{:<13} {:<16} FAILED: {why}", sc.name, s.name));
                    continue;
                };
                let other_max = runs.iter().map(Run::other_util).fold(0.0, f64::max);
                let kept = runs.iter().all(|r| rate_kept(r, sc.rate));
                let cpu_spread = spread(runs.iter().map(Run::cpu_us_per_op));
                table.row([
                    sc.name.to_string(),
                    s.name.clone(),
                    format!("{:.0}", m.rate()),
                    format!("{:.4}", m.cpu_us_per_op()),
                    format!("{:.0}%", m.server_util() * 100.0),
                    num(m.field("p50_us"), 0),
                    num(m.field("p99_us"), 0),
                    format!(
                        "{:.0}%{}",
                        other_max * 100.0,
                        if kept { "" } else { " rate not kept" }
                    ),
                ]);
                json.push(serde_json::json!({"scenario": sc.name, "server": s.name,
                    "deliveries_per_sec": m.rate(), "cpu_us_per_delivery": m.cpu_us_per_op(),
                    "cpu_us_per_delivery_spread": cpu_spread,
                    "publishes_per_sec": m.field("publish_rate"),
                    "stated_publish_rate": sc.rate, "rate_kept": kept,
                    "p50_us": m.field("p50_us"), "p99_us": m.field("p99_us"),
                    "server_cpu_util": m.server_util(), "other_cpu_util_max": other_max}));
                results.push(result_line(&[
                    ("bench", "pubsub".into()),
                    ("scenario", sc.name.into()),
                    ("server", s.name.clone()),
                    ("subscribers", sc.subscribers.to_string()),
                    ("topics", sc.topics.to_string()),
                    ("size", args.size.to_string()),
                    ("stated_publish_rate", num(Some(sc.rate), 1)),
                    ("publish_rate", num(m.field("publish_rate"), 1)),
                    ("rate_kept", kept.to_string()),
                    ("deliveries_per_sec", num(Some(m.rate()), 1)),
                    ("cpu_us_per_delivery", num(Some(m.cpu_us_per_op()), 4)),
                    (
                        "cpu_spread",
                        cpu_spread.map_or("-".into(), |(a, b)| format!("{a:.4}-{b:.4}")),
                    ),
                    ("p50_us", num(m.field("p50_us"), 0)),
                    ("p99_us", num(m.field("p99_us"), 0)),
                    ("rounds", runs.len().to_string()),
                    ("other_max", num(Some(other_max), 3)),
                ]));
            }
        }
    }

    // Cluster latency: fresh broker and nodes per run, brokers interleaved
    // round by round.
    let brokers: Vec<&str> = ["nats", "redis"]
        .into_iter()
        .filter(|b| args.scenarios.iter().any(|s| *s == format!("cluster-{b}")))
        .collect();
    let mut cluster_runs: Vec<Vec<Run>> = vec![Vec::new(); brokers.len()];
    let mut cluster_err: Vec<Option<String>> = vec![None; brokers.len()];
    for round in 0..args.repeat {
        for (bi, broker) in brokers.iter().enumerate() {
            if cluster_err[bi].is_some() {
                continue;
            }
            rig.check_stop()?;
            match cluster_run(&mut rig, &args, broker, round) {
                Ok(r) => cluster_runs[bi].push(r),
                Err(e) => {
                    eprintln!("bench-pubsub: cluster-{broker} FAILED: {e:#}");
                    cluster_err[bi] = Some(format!("{e:#}"));
                }
            }
        }
    }
    for (bi, broker) in brokers.iter().enumerate() {
        let runs = &cluster_runs[bi];
        let name = format!("cluster-{broker}");
        if runs.is_empty() {
            let why = cluster_err[bi].clone().unwrap_or_default();
            table.line(format!("{name:<13} {:<16} FAILED: {why}", "myriad x2"));
            continue;
        }
        let p50 = median(runs.iter().filter_map(|r| r.field("p50_us")));
        let p99 = median(runs.iter().filter_map(|r| r.field("p99_us")));
        let p99_spread = spread(runs.iter().filter_map(|r| r.field("p99_us")));
        let kept = runs.iter().all(|r| rate_kept(r, args.cluster_rate));
        let rate = median(runs.iter().map(Run::rate));
        table.row([
            name.clone(),
            "myriad x2".into(),
            num(rate, 0),
            "-".into(),
            "-".into(),
            num(p50, 0),
            num(p99, 0),
            if kept { "" } else { "rate not kept" }.into(),
        ]);
        json.push(serde_json::json!({"scenario": name, "broker": broker,
            "publishes_per_sec_stated": args.cluster_rate, "rate_kept": kept,
            "deliveries_per_sec": rate, "p50_us": p50, "p99_us": p99,
            "p99_us_spread": p99_spread}));
        results.push(result_line(&[
            ("bench", "pubsub".into()),
            ("scenario", name),
            ("broker", broker.to_string()),
            ("nodes", "2".into()),
            ("subscribers", args.cluster_subscribers.to_string()),
            ("topics", args.cluster_topics.to_string()),
            ("size", args.size.to_string()),
            ("stated_publish_rate", num(Some(args.cluster_rate), 1)),
            ("rate_kept", kept.to_string()),
            ("deliveries_per_sec", num(rate, 1)),
            ("p50_us", num(p50, 0)),
            ("p99_us", num(p99, 0)),
            (
                "p99_spread",
                p99_spread.map_or("-".into(), |(a, b)| format!("{a:.0}-{b:.0}")),
            ),
            ("rounds", runs.len().to_string()),
        ]));
    }

    println!();
    print!("{}", table.render());
    println!();
    if !ratios.is_empty() {
        println!(
            "ratios myriad / baseline, medians of per-round paired ratios \
             (deliveries/s: higher is better; CPU/delivery: lower is better)"
        );
        for r in &ratios {
            println!("{r}");
        }
    }
    for r in &results {
        println!("{r}");
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}

/// One cluster latency run: the broker and nodes A and B on the server
/// CPU, subscribers on B, the publisher on A.
fn cluster_run(rig: &mut Rig, args: &Args, broker: &str, round: usize) -> Result<Run> {
    let bspec = match broker {
        "nats" => ServerSpec::new(
            "nats-server",
            "nats-server",
            ["-a", "127.0.0.1", "-p", "{port}"],
        ),
        _ => ServerSpec::new(
            "redis-server",
            "redis-server",
            [
                "--bind",
                "127.0.0.1",
                "--port",
                "{port}",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        ),
    };
    let b = rig.start(&bspec)?;
    let url = format!("{broker}://{}", b.addr());
    let node = |name: &str| {
        ServerSpec::new(
            name,
            rig.bin("pubsub-myriad"),
            [
                "--addr",
                "{addr}",
                "--threads",
                "1",
                "--backend",
                "io_uring",
                "--broker",
                broker,
                "--broker-url",
                &url,
            ],
        )
        .env("RUST_LOG", "warn")
        .settle(Duration::from_millis(100))
    };
    let (sa, sb) = (node("node-a"), node("node-b"));
    let a = rig.start(&sa)?;
    let mut nb = rig.start(&sb)?;
    let per_topic_ok = args.cluster_subscribers % args.cluster_topics.max(1) == 0;
    if !per_topic_ok {
        bail!("--cluster-subscribers must be a multiple of --cluster-topics");
    }
    let l = load(
        rig,
        args,
        args.cluster_subscribers,
        args.cluster_topics,
        1,
        args.cluster_rate,
        100_000,
        Some(a.addr().to_string()),
    );
    let tag = format!("bench-pubsub: round {} cluster-{broker:<6}", round + 1);
    let r = rig.measure(&mut nb, &l, &tag, |r| {
        eprintln!(
            "{tag} publishes/s {:>8.0}{}  deliveries/s {:>9.0}  p50 {} us  p99 {} us  max {} us",
            r.field("publish_rate").unwrap_or(f64::NAN),
            if rate_kept(r, args.cluster_rate) {
                ""
            } else {
                " (rate not kept)"
            },
            r.rate(),
            num(r.field("p50_us"), 0),
            num(r.field("p99_us"), 0),
            num(r.field("max_us"), 0),
        );
        check(r)
    })?;
    drop((a, nb, b));
    Ok(r)
}
