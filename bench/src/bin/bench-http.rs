//! `bench-http`: Myriad's HTTP/1.1 server (`http_hello`, myriad-http's
//! router) against hyper 1.x (tokio `current_thread`) and may_minihttp, in
//! the same run, on the same cores, driven by two clients: `myriad-load
//! http://` and, as an independent client, `wrk`.
//!
//! Every server runs with one thread, pinned to CPU 0; the client (pinned
//! to CPU 1, one thread) keeps a fixed number of keep-alive connections
//! busy. Scenarios:
//!
//! * `get`: 256 connections, `GET /` of a 13-byte body, one request in
//!   flight per connection;
//! * `pipe16`: the same with 16 requests pipelined per connection
//!   (`myriad-load --window 16`; wrk: a Lua script sending 16 requests per
//!   write, the pattern of wrk's `pipeline.lua`);
//! * `static1m`: 16 connections fetching a 1 MiB file (`/static/big.bin`
//!   of a temporary directory; may_minihttp serves no files and is left
//!   out): CPU per byte = server CPU seconds ÷ body bytes served.
//!
//! Two more servers can be named with `--servers`: `floor` and
//! `floor-epoll`, `http-floor` (C, `bench/floors/http-floor.c`, compiled
//! with `cc -O3 … -luring`; Debian `liburing-dev`, installed when
//! missing). They answer every request head with hyper's response bytes
//! and do nothing else: `floor`
//! drives io_uring the way Myriad's backend does (multishot receives into
//! a provided-buffer ring, registered files, `DEFER_TASKRUN`, one enter per
//! turn), `floor-epoll` does one `read` and one `write` per readable
//! connection. Their CPU per request against hyper's (reported for `get`)
//! is how low the `get` ratio can go at all with those system calls on the
//! machine at hand; they are never "the best peer" of `pipe16`.
//!
//! Server CPU per request is the server's `utime + stime` over the client's
//! whole run (sampled when the client starts and when its output ends:
//! neither client prints markers, so connection set-up is included, which
//! for 256 connections is far below a millisecond of a multi-second run)
//! divided by the requests completed in that run (myriad-load's JSON
//! `messages_total`, wrk's "N requests in"); requests/s is the client's
//! own figure. The server's CPU per request is also shown split into user
//! and system (kernel) time (`utime`, `stime`), and for `get` the targets'
//! report adds Myriad's system time alone ÷ hyper's whole CPU per request
//! (reported, no target): the part of the 0.7× target that nothing in
//! Myriad's user space can move. Before each measured run the same client runs `--warmup`
//! seconds unmeasured. Runs are interleaved round by round (`--repeat`),
//! the table shows the median run (by CPU per request) and the spread over
//! the rounds; ratios are medians of the per-round paired ratios. The
//! issue's targets, per client:
//!
//! * `get`: Myriad's server CPU per request ≤ 0.7× hyper's;
//! * `pipe16`: Myriad's requests/s ≥ the best peer's (per round: Myriad ÷
//!   the fastest peer of that round);
//! * `static1m`: CPU per byte against hyper + tokio's file serving
//!   (reported; no numeric target).
//!
//! ```text
//! cargo run --release -p myriad-bench --bin bench-http -- [--duration 5] [--warmup 1] \
//!     [--repeat 3] [--servers myriad,hyper,may] [--clients myriad-load,wrk] \
//!     [--scenarios get,pipe16,static1m] [--no-build] [--json FILE]
//! ```
//!
//! `wrk` is the Debian package (`apt-get install wrk`); the program stops
//! with that advice when it is missing (or run with `--clients
//! myriad-load`). Unless `--no-build`, it first builds `http_hello`
//! (`cargo build --release -p myriad-http --example http_hello`),
//! `myriad-load`, and the baselines (`bench/http-baselines`, its own
//! workspace, into `target/http-baselines`). The report ends with one
//! `RESULT` line per client, scenario and server, and one per target.
//! Starting, pinning, sampling, rounds and statistics are
//! `myriad_bench::harness`'s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;
use myriad_bench::harness::{
    cargo_build, is_floor, median, num, paired_ratio_median, paired_ratios_of, result_line, spread,
    Load, Rig, Run, ServerSpec, Table, HTTP_FLOOR, OTHER_CPU_WARN,
};

#[derive(Parser, Debug)]
struct Args {
    /// Measured seconds per run (wrk: rounded up to whole seconds).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Unmeasured warm-up run before each measured one, in seconds (0:
    /// none; wrk: rounded up to whole seconds).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Interleaved rounds (runs per client, scenario and server).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Servers: myriad, myriad-epoll, hyper, may, floor, floor-epoll.
    #[arg(long, default_value = "myriad,hyper,may", value_delimiter = ',')]
    servers: Vec<String>,
    /// Clients: myriad-load, wrk.
    #[arg(long, default_value = "myriad-load,wrk", value_delimiter = ',')]
    clients: Vec<String>,
    /// Scenarios: get, pipe16, static1m.
    #[arg(long, default_value = "get,pipe16,static1m", value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Size of the static file in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    static_size: usize,
    /// CPU for the servers.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU for the clients.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// First port to use.
    #[arg(long, default_value_t = 19400)]
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
    /// Build and run the servers and load generators with this cargo
    /// profile (from `target/<PROFILE>`) instead of this program's own:
    /// `release-lto` gives Myriad and the baselines alike link-time
    /// optimisation across crates.
    #[arg(long)]
    profile: Option<String>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One load scenario.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    connections: usize,
    window: usize,
    /// Fetches the static file (else `GET /`).
    file: bool,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "get",
        connections: 256,
        window: 1,
        file: false,
    },
    Scenario {
        name: "pipe16",
        connections: 256,
        window: 16,
        file: false,
    },
    Scenario {
        name: "static1m",
        connections: 16,
        window: 1,
        file: true,
    },
];

const FILE_NAME: &str = "big.bin";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    MyriadLoad,
    Wrk,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::MyriadLoad => "myriad-load",
            Client::Wrk => "wrk",
        }
    }
}

/// What the rounds run: one client on one scenario.
#[derive(Debug, Clone, Copy)]
struct Job {
    client: Client,
    sc: Scenario,
}

/// Whether a server serves `/static/`.
fn serves_files(server: &str) -> bool {
    !matches!(server, "may" | "floor" | "floor-epoll")
}

fn spec(rig: &Rig, name: &str, dir: &Path) -> Result<ServerSpec> {
    let hello = rig.bin("examples/http_hello");
    let baseline = |b: &str| rig.baseline_bin("http-baselines", b);
    let dir = dir.display().to_string();
    Ok(match name {
        "myriad" | "myriad-epoll" => {
            let backend = if name == "myriad" {
                "io_uring"
            } else {
                "epoll"
            };
            ServerSpec::new(
                name,
                hello,
                [
                    "{addr}",
                    "--threads",
                    "1",
                    "--backend",
                    backend,
                    "--static",
                    &dir,
                ],
            )
        }
        "hyper" => ServerSpec::new(
            name,
            baseline("http-hello-hyper"),
            ["--addr", "{addr}", "--static", &dir],
        ),
        "may" => ServerSpec::new(name, baseline("http-hello-may"), ["--addr", "{addr}"]),
        "floor" => ServerSpec::new(name, baseline(HTTP_FLOOR.name), ["{addr}"]),
        "floor-epoll" => ServerSpec::new(name, baseline(HTTP_FLOOR.name), ["{addr}", "--epoll"]),
        other => bail!(
            "unknown server {other} (known: myriad, myriad-epoll, hyper, may, floor, floor-epoll)"
        ),
    })
}

fn build(rig: &Rig) -> Result<()> {
    let dir = rig.bin_dir();
    let ok = cargo_build(
        "bench-http",
        dir,
        &["-p", "myriad-http", "--example", "http_hello"],
        &[],
    )? && cargo_build("bench-http", dir, &["-p", "myriad-load"], &[])?
        && rig.build_baselines("bench-http", "http-baselines", &[])?;
    if !ok {
        bail!("cargo build failed");
    }
    Ok(())
}

/// `wrk` on the `PATH`.
fn find_wrk() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("wrk"))
        .find(|p| p.is_file())
        .context(
            "wrk is not installed: install the Debian package with `apt-get install wrk` \
             (or run with --clients myriad-load)",
        )
}

/// wrk's `pipeline.lua` pattern: `init` builds N requests (the script's
/// argument) into one string, `request` returns it, so that every write
/// sends N pipelined requests and wrk waits for their N responses.
const PIPELINE_LUA: &str = r#"-- bench-http: N pipelined requests per write (wrk's pipeline.lua)
init = function(args)
  local n = tonumber(args[1]) or 1
  local r = {}
  for i = 1, n do
    r[i] = wrk.format()
  end
  req = table.concat(r)
end

request = function()
  return req
end
"#;

/// A temporary directory with the static file and the Lua script, removed
/// when dropped.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(file_size: usize) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("bench-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let s = Scratch { dir };
        // Incompressible-looking but deterministic bytes.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let body: Vec<u8> = (0..file_size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(s.dir.join(FILE_NAME), body)?;
        std::fs::write(s.lua(), PIPELINE_LUA)?;
        Ok(s)
    }

    fn lua(&self) -> PathBuf {
        self.dir.join("pipeline.lua")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The client run of `job` for `secs` seconds.
fn client_load(rig: &Rig, job: &Job, secs: f64, wrk: &Path, lua: &Path) -> Load {
    let sc = &job.sc;
    let url = if sc.file {
        format!("http://{{addr}}/static/{FILE_NAME}")
    } else {
        "http://{addr}/".to_string()
    };
    let (c, w) = (sc.connections.to_string(), sc.window.to_string());
    let l = match job.client {
        Client::MyriadLoad => Load::new(
            rig.bin("myriad-load"),
            [
                url,
                "-c".into(),
                c,
                "-w".into(),
                w,
                "-d".into(),
                format!("{}ms", (secs * 1000.0).round() as u64),
                "--warmup".into(),
                "0s".into(),
                "-t".into(),
                "1".into(),
                "--timeout".into(),
                "30s".into(),
                "--quiet".into(),
                "--json".into(),
                "/dev/stdout".into(),
            ],
        )
        .process(parse_myriad_load),
        Client::Wrk => {
            let mut args = vec![
                "-t1".to_string(),
                "-c".into(),
                c,
                "-d".into(),
                format!("{}s", secs.ceil().max(1.0) as u64),
                "--latency".into(),
                "--timeout".into(),
                "10s".into(),
            ];
            if sc.window > 1 {
                args.extend(["-s".into(), lua.display().to_string()]);
            }
            args.push(url);
            if sc.window > 1 {
                args.extend(["--".into(), w]);
            }
            Load::new(wrk, args).process(parse_wrk)
        }
    };
    l.timeout_secs(secs.ceil() + 60.0)
}

/// myriad-load's `--json /dev/stdout` report, after its text summary.
fn parse_myriad_load(lines: &[String]) -> Result<BTreeMap<String, String>> {
    let at = lines
        .iter()
        .position(|l| l == "{")
        .context("no JSON report in myriad-load's output")?;
    let v: serde_json::Value = serde_json::from_str(&lines[at..].join("\n"))
        .context("parsing myriad-load's JSON report")?;
    let n = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("no {k} in the report"))
    };
    let mut f = BTreeMap::new();
    f.insert("msgs".into(), n("messages_total")?.to_string());
    f.insert("msgs_per_sec".into(), n("messages_per_sec")?.to_string());
    f.insert("errors".into(), n("errors_total")?.to_string());
    for (k, q) in [("p50_us", "p50"), ("p99_us", "p99")] {
        if let Some(x) = v["latency_us"][q].as_f64() {
            f.insert(k.into(), x.to_string());
        }
    }
    Ok(f)
}

/// A wrk duration (`812.00us`, `1.23ms`, `2.00s`, `1.50m`) in µs.
fn wrk_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let (n, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600e6)
    } else {
        return None;
    };
    n.parse::<f64>().ok().map(|v| v * mult)
}

/// wrk's summary (with `--latency`): `N requests in Ts, ...`,
/// `Requests/sec: R`, the latency distribution, `Socket errors: ...` and
/// `Non-2xx or 3xx responses: N` (the last two only when not zero).
fn parse_wrk(lines: &[String]) -> Result<BTreeMap<String, String>> {
    let mut f = BTreeMap::new();
    let mut errors = 0u64;
    let mut in_dist = false;
    for line in lines.iter().map(|l| l.trim()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            let r: f64 = rest.trim().parse().context("Requests/sec")?;
            f.insert("msgs_per_sec".into(), r.to_string());
        } else if words.len() >= 3 && words[1] == "requests" && words[2] == "in" {
            let n: u64 = words[0].parse().context("N requests in")?;
            f.insert("msgs".into(), n.to_string());
            in_dist = false;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in rest.split(',') {
                let n = part.split_whitespace().nth(1).and_then(|n| n.parse().ok());
                errors += n.unwrap_or(0);
            }
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += rest.trim().parse::<u64>().context("Non-2xx")?;
        } else if line == "Latency Distribution" {
            in_dist = true;
        } else if in_dist && words.len() == 2 {
            let key = match words[0] {
                "50%" => "p50_us",
                "99%" => "p99_us",
                _ => continue,
            };
            // With pipelining wrk records one latency per batch and prints
            // 0.00us for most percentiles: a 0 is no figure.
            if let Some(us) = wrk_us(words[1]).filter(|&us| us > 0.0) {
                f.insert(key.into(), us.to_string());
            }
        }
    }
    if !f.contains_key("msgs") || !f.contains_key("msgs_per_sec") {
        bail!("no 'requests in' or 'Requests/sec:' line in wrk's output");
    }
    f.insert("errors".into(), errors.to_string());
    Ok(f)
}

/// Server CPU nanoseconds per body byte of a static-file run.
fn cpu_ns_per_byte(r: &Run, file_size: usize) -> f64 {
    let bytes = r.count() * file_size as f64;
    if bytes > 0.0 {
        r.server_cpu_secs * 1e9 / bytes
    } else {
        f64::NAN
    }
}

/// One line of the targets' report.
struct Target {
    client: &'static str,
    scenario: &'static str,
    what: String,
    server: String,
    baseline: String,
    ratio: Option<f64>,
    /// `(limit, higher is better)`; `None`: reported only.
    limit: Option<(f64, bool)>,
}

impl Target {
    fn verdict(&self) -> &'static str {
        match (self.ratio, self.limit) {
            (_, None) => "reported",
            (None, Some(_)) => "no data",
            (Some(r), Some((l, true))) if r >= l => "met",
            (Some(r), Some((l, false))) if r <= l => "met",
            _ => "not met",
        }
    }
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
    if args.static_size == 0 {
        bail!("--static-size must be positive");
    }
    let mut clients = Vec::new();
    for c in &args.clients {
        clients.push(match c.as_str() {
            "myriad-load" => Client::MyriadLoad,
            "wrk" => Client::Wrk,
            other => bail!("unknown client {other} (known: myriad-load, wrk)"),
        });
    }
    let mut scenarios = Vec::new();
    for n in &args.scenarios {
        match SCENARIOS.iter().find(|s| s.name == n) {
            Some(s) => scenarios.push(*s),
            None => bail!("unknown scenario {n} (known: get, pipe16, static1m)"),
        }
    }
    // Fail before building anything if wrk is wanted and missing.
    let wrk = if clients.contains(&Client::Wrk) {
        find_wrk()?
    } else {
        PathBuf::from("wrk")
    };
    let mut rig = Rig::new("bench-http", args.server_cpu, args.client_cpu, args.port)?;
    rig.wait_quiet = args.wait_quiet;
    rig.busy_retries = args.busy_retries;
    if let Some(p) = &args.profile {
        rig.use_profile(p)?;
        eprintln!(
            "bench-http: servers and clients from {}",
            rig.bin_dir().display()
        );
    }
    if !args.no_build {
        build(&rig)?;
    }
    if args.servers.iter().any(|s| is_floor(s)) {
        rig.build_c_baseline("bench-http", &HTTP_FLOOR, !args.no_build)?;
    }
    let scratch = Scratch::new(args.static_size)?;
    let specs: Vec<ServerSpec> = args
        .servers
        .iter()
        .map(|n| spec(&rig, n, &scratch.dir))
        .collect::<Result<_>>()?;
    let jobs: Vec<Job> = clients
        .iter()
        .flat_map(|&client| scenarios.iter().map(move |&sc| Job { client, sc }))
        .collect();
    println!(
        "bench-http: servers pinned to CPU {}, clients to CPU {}; warm-up {} s, measured {} s, \
         {} interleaved rounds",
        args.server_cpu, args.client_cpu, args.warmup, args.duration, args.repeat
    );
    let mut servers = Vec::new();
    for s in &specs {
        let server = rig.start(s)?;
        println!(
            "bench-http: {} listening on {} (pid {})",
            server.name(),
            server.addr(),
            server.pid()
        );
        servers.push(server);
    }
    let lua = scratch.lua();
    let size = args.static_size;
    let grid = rig.rounds(&mut servers, &jobs, args.repeat, |rig, round, job, server| {
        let tag = format!(
            "bench-http: round {} {:<11} {:<8} {:<12}",
            round + 1,
            job.client.name(),
            job.sc.name,
            server.name()
        );
        if job.sc.file && !serves_files(server.name()) {
            bail!("serves no files");
        }
        if args.warmup > 0.0 {
            let warm = client_load(rig, job, args.warmup, &wrk, &lua);
            if let Err(e) = rig.load(server, &warm) {
                println!("{tag} FAILED (warm-up): {e:#}");
                return Err(e.context("warm-up"));
            }
        }
        let l = client_load(rig, job, args.duration, &wrk, &lua);
        rig.measure(server, &l, &tag, |r| {
            let per_byte = if job.sc.file {
                format!("  {:.3} ns/B", cpu_ns_per_byte(r, size))
            } else {
                String::new()
            };
            println!(
                "{tag} {:>10.0} req/s {:>8.3} us/req{per_byte}  server {:>3.0}%  client {:>3.0}%  other {:>3.0}%",
                r.rate(),
                r.cpu_us_per_op(),
                r.server_util() * 100.0,
                r.loadgen_util() * 100.0,
                r.other_util() * 100.0
            );
            if !r.status.success() || r.errors() > 0 || r.count() == 0.0 {
                bail!(
                    "{} exited {} with {} errors, {} requests",
                    job.client.name(),
                    r.status,
                    r.errors(),
                    r.count()
                );
            }
            Ok(())
        })
    })?;
    drop(servers);

    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let mine: Vec<usize> = (0..names.len())
        .filter(|&i| names[i].starts_with("myriad"))
        .collect();
    let peers: Vec<usize> = (0..names.len())
        .filter(|&i| !names[i].starts_with("myriad"))
        .collect();
    // The servers a target's "best peer" is chosen from: not the floors.
    let rivals: Vec<usize> = peers
        .iter()
        .copied()
        .filter(|&i| !is_floor(names[i]))
        .collect();
    let hyper = names.iter().position(|&n| n == "hyper");
    let mut json = Vec::new();
    let mut results = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    let mut out = String::new();
    for &client in &clients {
        let mut table = Table::new()
            .left("scenario", 8)
            .left("server", 12)
            .right("req/s", 10)
            .right("CPU us/req", 10)
            .right("us/req rounds", 15)
            .right("user/sys us", 11)
            .right("CPU ns/B", 8)
            .right("p99 ms", 7)
            .right("server", 6)
            .right("client", 6)
            .right("other max", 9)
            .rule();
        for (ji, job) in jobs.iter().enumerate() {
            if job.client != client {
                continue;
            }
            let sc = job.sc;
            for (vi, name) in names.iter().enumerate() {
                let series = grid.get(ji, vi);
                if sc.file && !serves_files(name) {
                    table.row([sc.name, name, "n/a (serves no files)"]);
                    continue;
                }
                let m = match series.median_run() {
                    Ok(m) => m,
                    Err(e) => {
                        table.row([sc.name, name, "FAILED"]);
                        table.line(format!("  {e}"));
                        continue;
                    }
                };
                let runs = &series.runs;
                let rounds = spread(runs.iter().map(Run::cpu_us_per_op));
                let other = runs.iter().map(Run::other_util).fold(0.0, f64::max);
                let per_byte = sc.file.then(|| cpu_ns_per_byte(m, size));
                // wrk records one latency per pipelined batch: no figure.
                let latency = client == Client::MyriadLoad || sc.window == 1;
                let p99 = m.field("p99_us").filter(|_| latency);
                table.row([
                    sc.name.to_string(),
                    name.to_string(),
                    format!("{:.0}", m.rate()),
                    format!("{:.3}", m.cpu_us_per_op()),
                    rounds.map_or("-".into(), |(lo, hi)| format!("{lo:.3}-{hi:.3}")),
                    format!("{:.3}/{:.3}", m.user_us_per_op(), m.sys_us_per_op()),
                    per_byte.map_or("-".into(), |v| format!("{v:.3}")),
                    p99.map_or("-".into(), |v| format!("{:.2}", v / 1e3)),
                    format!("{:.0}%", m.server_util() * 100.0),
                    format!("{:.0}%", m.loadgen_util() * 100.0),
                    format!("{:.0}%", other * 100.0),
                ]);
                json.push(
                    serde_json::json!({"client": client.name(), "scenario": sc.name,
                    "server": name, "requests_per_sec": m.rate(), "requests": m.count(),
                    "cpu_us_per_request": m.cpu_us_per_op(), "cpu_ns_per_byte": per_byte,
                    "cpu_us_per_request_rounds": rounds.map(|(a, b)| [a, b]),
                    "user_us_per_request": m.user_us_per_op(),
                    "sys_us_per_request": m.sys_us_per_op(),
                    "p50_us": m.field("p50_us").filter(|_| latency), "p99_us": p99,
                    "server_cpu_util": m.server_util(), "client_cpu_util": m.loadgen_util(),
                    "other_cpu_util_max": other, "rounds": runs.len()}),
                );
                results.push(result_line(&[
                    ("bench", "http".into()),
                    ("client", client.name().into()),
                    ("scenario", sc.name.into()),
                    ("server", name.to_string()),
                    ("req_per_sec", num(Some(m.rate()), 1)),
                    ("cpu_us_per_req", num(Some(m.cpu_us_per_op()), 4)),
                    ("user_us_per_req", num(Some(m.user_us_per_op()), 4)),
                    ("sys_us_per_req", num(Some(m.sys_us_per_op()), 4)),
                    ("cpu_ns_per_byte", num(per_byte, 4)),
                    ("p99_us", num(p99, 0)),
                    ("rounds", runs.len().to_string()),
                    ("other_max", num(Some(other), 3)),
                ]));
            }
        }
        out.push_str(&format!(
            "\nclient {} (pinned to CPU {}, one thread); median run by CPU/req\n",
            client.name(),
            args.client_cpu
        ));
        out.push_str(&table.render());

        // Ratios: each Myriad variant against each peer, then the targets.
        out.push_str(&format!(
            "ratios, client {} (medians of per-round paired ratios; CPU: lower is better, \
             req/s: higher is better)\n",
            client.name()
        ));
        for (ji, job) in jobs.iter().enumerate() {
            if job.client != client {
                continue;
            }
            let sc = job.sc;
            // Server `i`'s figure `ma` against hyper's `mb`, per round.
            let vs_hyper = |i: usize, ma: fn(&Run) -> f64, mb: fn(&Run) -> f64| {
                let b = grid.get(ji, hyper?).ok_runs()?;
                median(paired_ratios_of(grid.get(ji, i).ok_runs()?, ma, b, mb))
            };
            for &mi in &mine {
                for &pi in &peers {
                    if sc.file && !serves_files(names[pi]) {
                        continue;
                    }
                    let (Some(m), Some(p)) =
                        (grid.get(ji, mi).ok_runs(), grid.get(ji, pi).ok_runs())
                    else {
                        continue;
                    };
                    let cpu = paired_ratio_median(m, p, Run::cpu_us_per_op);
                    let rate = paired_ratio_median(m, p, Run::rate);
                    out.push_str(&format!(
                        "  {:<8} {:<12} vs {:<8} {} {:>7}   req/s {:>7}\n",
                        sc.name,
                        names[mi],
                        names[pi],
                        if sc.file { "CPU/byte" } else { "CPU/req " },
                        fmt_x(cpu),
                        fmt_x(rate)
                    ));
                    json.push(
                        serde_json::json!({"client": client.name(), "scenario": sc.name,
                        "server": names[mi], "baseline": names[pi],
                        "paired_cpu_ratio": cpu, "paired_rate_ratio": rate}),
                    );
                }
                let target = |what: &str, baseline: &str, ratio, limit| Target {
                    client: client.name(),
                    scenario: sc.name,
                    what: what.into(),
                    server: names[mi].into(),
                    baseline: baseline.into(),
                    ratio,
                    limit,
                };
                match sc.name {
                    "get" => {
                        let cpu = vs_hyper(mi, Run::cpu_us_per_op, Run::cpu_us_per_op);
                        targets.push(target("server CPU/req", "hyper", cpu, Some((0.7, false))));
                        // What user space cannot move: the server's kernel
                        // CPU per request alone against hyper's whole CPU.
                        let kernel = vs_hyper(mi, Run::sys_us_per_op, Run::cpu_us_per_op);
                        targets.push(target("kernel CPU/req", "hyper (all CPU)", kernel, None));
                    }
                    "pipe16" => {
                        // Per round: Myriad's rate over the fastest peer's.
                        let mr = grid.get(ji, mi).ok_runs().unwrap_or(&[]);
                        let per_round: Vec<f64> = mr
                            .iter()
                            .filter_map(|r| {
                                let best = rivals
                                    .iter()
                                    .filter_map(|&pi| {
                                        grid.get(ji, pi).runs.iter().find(|x| x.round == r.round)
                                    })
                                    .map(Run::rate)
                                    .fold(f64::NAN, f64::max);
                                (best > 0.0).then(|| r.rate() / best)
                            })
                            .collect();
                        let best_name = rivals
                            .iter()
                            .filter_map(|&pi| {
                                let rate = median(grid.get(ji, pi).runs.iter().map(Run::rate))?;
                                Some((names[pi], rate))
                            })
                            .max_by(|a, b| a.1.total_cmp(&b.1))
                            .map_or("-", |(n, _)| n);
                        let baseline = format!("best peer ({best_name})");
                        targets.push(target(
                            "req/s",
                            &baseline,
                            median(per_round),
                            Some((1.0, true)),
                        ));
                    }
                    "static1m" => {
                        let cpu = vs_hyper(mi, Run::cpu_us_per_op, Run::cpu_us_per_op);
                        targets.push(target("server CPU/byte", "hyper", cpu, None));
                    }
                    _ => {}
                }
            }
            // The floors against hyper (reported): how low the `get` ratio
            // can go at all with these system calls on this kernel.
            if sc.name == "get" {
                for &fi in peers.iter().filter(|&&i| is_floor(names[i])) {
                    let ratio = vs_hyper(fi, Run::cpu_us_per_op, Run::cpu_us_per_op);
                    targets.push(Target {
                        client: client.name(),
                        scenario: sc.name,
                        what: "server CPU/req".into(),
                        server: names[fi].into(),
                        baseline: "hyper".into(),
                        ratio,
                        limit: None,
                    });
                }
            }
        }
    }
    print!("{out}");
    println!("\ntargets (issue 18)");
    for t in &targets {
        let limit = match t.limit {
            Some((l, true)) => format!(">= {l:.2}x"),
            Some((l, false)) => format!("<= {l:.2}x"),
            None => "-".into(),
        };
        println!(
            "  {:<11} {:<8} {:<15} {:<12} / {:<20} {:>7}  target {:<9} {}",
            t.client,
            t.scenario,
            t.what,
            t.server,
            t.baseline,
            fmt_x(t.ratio),
            limit,
            t.verdict()
        );
        json.push(
            serde_json::json!({"client": t.client, "scenario": t.scenario,
            "target": t.what, "server": t.server, "baseline": t.baseline, "ratio": t.ratio,
            "limit": t.limit.map(|l| l.0), "verdict": t.verdict()}),
        );
        results.push(result_line(&[
            ("bench", "http".into()),
            ("client", t.client.into()),
            ("scenario", t.scenario.into()),
            ("target", t.what.clone()),
            ("server", t.server.clone()),
            ("baseline", t.baseline.clone()),
            ("ratio", num(t.ratio, 4)),
            ("limit", num(t.limit.map(|l| l.0), 2)),
            ("verdict", t.verdict().into()),
        ]));
    }
    let disturbed = grid
        .0
        .iter()
        .flatten()
        .flat_map(|s| &s.runs)
        .any(Run::disturbed);
    if disturbed {
        println!(
            "WARNING: other processes used more than {:.0}% CPU during some runs; \
             repeat on a quiet machine",
            OTHER_CPU_WARN * 100.0
        );
    }
    for r in &results {
        println!("{r}");
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}

fn fmt_x(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.3}x"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_string).collect()
    }

    #[test]
    fn wrk_summary() {
        let out = lines(
            "Running 1s test @ http://127.0.0.1:19551/
  1 threads and 256 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.97ms  293.31us   5.93ms   89.32%
    Req/Sec   136.49k    13.20k  143.76k    90.00%
  Latency Distribution
     50%  910.00us
     75%    0.97ms
     90%    1.17ms
     99%    1.85ms
  135795 requests in 1.01s, 14.89MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec: 133925.53
Transfer/sec:     14.69MB",
        );
        let f = parse_wrk(&out).unwrap();
        assert_eq!(f["msgs"], "135795");
        assert_eq!(f["msgs_per_sec"], "133925.53");
        assert_eq!(f["errors"], "7");
        assert_eq!(f["p50_us"], "910");
        assert_eq!(f["p99_us"], "1850");
        assert!(parse_wrk(&out[..3]).is_err());
        // Pipelined: the zero percentiles are no figures.
        let out = lines(
            "  Latency Distribution
     50%    2.40ms
     99%    0.00us
  1434336 requests in 1.03s, 157.31MB read
Requests/sec: 1393870.54",
        );
        let f = parse_wrk(&out).unwrap();
        assert_eq!(f["errors"], "0");
        assert_eq!(f["p50_us"], "2400");
        assert!(!f.contains_key("p99_us"));
    }

    #[test]
    fn myriad_load_json() {
        let out = lines(
            "myriad-load http://127.0.0.1:1/ (closed loop; 1 process, 1 thread, io_uring)
  connections  256 of 256 established in 0.01 s
{
  \"messages\": 100,
  \"messages_total\": 120,
  \"messages_per_sec\": 50.5,
  \"errors_total\": 0,
  \"latency_us\": {\"p50\": 10, \"p99\": 20}
}",
        );
        let f = parse_myriad_load(&out).unwrap();
        assert_eq!(f["msgs"], "120");
        assert_eq!(f["msgs_per_sec"], "50.5");
        assert_eq!(f["errors"], "0");
        assert_eq!(f["p99_us"], "20");
        assert!(parse_myriad_load(&out[..2]).is_err());
    }
}
