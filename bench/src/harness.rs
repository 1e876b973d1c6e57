//! The one harness every benchmark driver runs on.
//!
//! A driver describes its servers ([`ServerSpec`]: a command line, its
//! environment, where its output goes) and its loads ([`Load`]: one of the
//! load generator programs of this crate and its flags), and the harness does
//! the rest the same way for every benchmark:
//!
//! * [`Rig`] starts each server pinned to the server CPU (the spawning
//!   thread is pinned with `sched_setaffinity` around `spawn`, so the child
//!   is pinned from its first instruction), waits for its port and stops it
//!   (SIGTERM, then SIGKILL) when its [`Server`] handle is dropped;
//! * [`Rig::load`] runs a load generator pinned to the client CPU and, when
//!   it prints `MEASURE_START` and `MEASURE_END`, samples the CPU ticks of
//!   the server and of the load generator (`/proc/PID/stat`) and the busy
//!   ticks of both CPUs (`/proc/stat`); its `RESULT` line is parsed into a
//!   [`Run`]. [`Rig::idle`] measures the server's RSS growth per idle
//!   connection with one of the idle holders;
//! * the disturbed-machine detector: [`Rig::measure`] waits for the two
//!   CPUs to be quiet before a run ([`Rig::wait_quiet`]) and re-runs a run in
//!   which anything else used more than [`OTHER_CPU_WARN`] of a CPU;
//! * [`Rig::rounds`] interleaves the runs round by round, scenario by
//!   scenario, server by server (A, B, C, A, B, C, ...), so that drifts of a
//!   shared or virtual machine hit every server alike;
//! * [`median`], [`median_run`] and [`paired_ratio_median`] (the ratio of
//!   two servers as the median of their per-round ratios) are the only
//!   statistics; [`Table`] and [`result_line`] print the report.
//!
//! [`Compare`] puts these together for the common case of a new benchmark:
//! N server variants, each a command line, on pp64, pipe64 (and pp512) and
//! idle, each variant against the first.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustix::process::{kill_process, Pid, Signal};

use crate::{affinity, procfs};

/// CPU use by anything else on the benchmark CPUs (in CPUs, over a measured
/// window) above which a run counts as disturbed.
pub const OTHER_CPU_WARN: f64 = 0.05;

// ---------------------------------------------------------------------------
// Statistics

/// The median of `values`: the middle value of an odd count, the mean of
/// the two middle values of an even count, `None` when there is none.
/// Values are ordered by `f64::total_cmp` (a NaN sorts last).
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().collect();
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

/// The run whose `key` is the median, to report one real run rather than
/// figures of different runs: of an even count the lower of the two middle
/// ones (a run cannot be averaged); `None` when there is none.
pub fn median_run<T>(runs: &[T], key: impl Fn(&T) -> f64) -> Option<&T> {
    let mut v: Vec<&T> = runs.iter().collect();
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let n = v.len();
    (n > 0).then(|| v[(n - 1) / 2])
}

/// `a / b` when both are finite and `b > 0`.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

/// The smallest and largest of `values`, `None` when there is none.
pub fn spread(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values.into_iter().fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// The per-round ratios `metric(a) / metric(b)`, pairing the runs of `a`
/// and `b` by [`Run::round`]; rounds missing on either side are skipped.
pub fn paired_ratios(a: &[Run], b: &[Run], metric: impl Fn(&Run) -> f64) -> Vec<f64> {
    paired_ratios_of(a, &metric, b, &metric)
}

/// [`paired_ratios`] of one figure of `a` (`ma`) to another of `b` (`mb`):
/// e.g. a server's kernel CPU per request against a peer's whole CPU.
pub fn paired_ratios_of(
    a: &[Run],
    ma: impl Fn(&Run) -> f64,
    b: &[Run],
    mb: impl Fn(&Run) -> f64,
) -> Vec<f64> {
    a.iter()
        .filter_map(|x| {
            let y = b.iter().find(|y| y.round == x.round)?;
            ratio(ma(x), mb(y))
        })
        .collect()
}

/// The ratio of a figure of `a` to that of `b` as the [`median`] of the
/// per-round paired ratios ([`paired_ratios`]): the runs of one round are
/// adjacent in time, so the pairing cancels most of the drift of a noisy
/// machine. `None` when no round has both.
pub fn paired_ratio_median(a: &[Run], b: &[Run], metric: impl Fn(&Run) -> f64) -> Option<f64> {
    median(paired_ratios(a, b, metric))
}

// ---------------------------------------------------------------------------
// Runs

/// One measured window of one load run: the load generator's `RESULT`
/// fields and the CPU time sampled at its `MEASURE_START` and `MEASURE_END`.
#[derive(Debug, Clone)]
pub struct Run {
    /// Round of the interleaved schedule this run belongs to (set by
    /// [`Rig::rounds`]; 0 otherwise).
    pub round: usize,
    /// The `key=value` fields of the `RESULT` line.
    pub fields: BTreeMap<String, String>,
    /// CPU time (`utime + stime`) of the server in the window.
    pub server_cpu_secs: f64,
    /// The system (kernel) part of `server_cpu_secs` (`stime`): what the
    /// server's system calls and the network stack under them cost it.
    pub server_sys_secs: f64,
    /// CPU time of the load generator in the window.
    pub loadgen_cpu_secs: f64,
    /// CPU time of anything else on the benchmark CPUs in the window
    /// (other processes, interrupts in kernel threads).
    pub other_cpu_secs: f64,
    /// Wall-clock time between the two samples.
    pub wall_secs: f64,
    /// How the load generator exited.
    pub status: ExitStatus,
}

impl Run {
    /// A numeric `RESULT` field.
    pub fn field(&self, k: &str) -> Option<f64> {
        self.fields.get(k).and_then(|v| v.parse().ok())
    }

    /// A numeric `RESULT` field that must be there.
    pub fn require(&self, k: &str) -> Result<f64> {
        self.field(k)
            .with_context(|| format!("RESULT line has no numeric {k}"))
    }

    /// Operations completed in the window: `msgs` (closed-loop
    /// generators) or `ops` (`tls-load`).
    pub fn count(&self) -> f64 {
        self.field("msgs")
            .or_else(|| self.field("ops"))
            .unwrap_or(0.0)
    }

    /// Operations per second as the load generator measured them.
    pub fn rate(&self) -> f64 {
        self.field("msgs_per_sec")
            .or_else(|| self.field("ops_per_sec"))
            .unwrap_or(0.0)
    }

    /// Errors the load generator reported.
    pub fn errors(&self) -> u64 {
        self.field("errors").unwrap_or(0.0) as u64
    }

    /// Microseconds of `secs` per operation (NaN when none completed).
    fn us_per_op(&self, secs: f64) -> f64 {
        let n = self.count();
        if n > 0.0 {
            secs * 1e6 / n
        } else {
            f64::NAN
        }
    }

    /// Server CPU microseconds per operation (NaN when none completed).
    pub fn cpu_us_per_op(&self) -> f64 {
        self.us_per_op(self.server_cpu_secs)
    }

    /// The kernel's part of [`Run::cpu_us_per_op`]: server system CPU
    /// microseconds per operation (NaN when none completed).
    pub fn sys_us_per_op(&self) -> f64 {
        self.us_per_op(self.server_sys_secs)
    }

    /// User space's part of [`Run::cpu_us_per_op`].
    pub fn user_us_per_op(&self) -> f64 {
        self.cpu_us_per_op() - self.sys_us_per_op()
    }

    /// The server's CPU use in the window, in CPUs.
    pub fn server_util(&self) -> f64 {
        self.server_cpu_secs / self.wall_secs.max(1e-9)
    }

    /// The load generator's CPU use in the window, in CPUs.
    pub fn loadgen_util(&self) -> f64 {
        self.loadgen_cpu_secs / self.wall_secs.max(1e-9)
    }

    /// Everything else's CPU use on the benchmark CPUs, in CPUs.
    pub fn other_util(&self) -> f64 {
        self.other_cpu_secs / self.wall_secs.max(1e-9)
    }

    /// Whether other work used more than [`OTHER_CPU_WARN`] meanwhile.
    pub fn disturbed(&self) -> bool {
        self.other_util() > OTHER_CPU_WARN
    }
}

/// The result of an idle-memory measurement ([`Rig::idle`]).
#[derive(Debug, Clone, Default)]
pub struct Idle {
    /// Idle connections held.
    pub connections: usize,
    /// Server RSS before the connections, in bytes.
    pub rss_before: u64,
    /// Server RSS with the connections open, in bytes.
    pub rss_after: u64,
    /// `(rss_after - rss_before) / connections`.
    pub bytes_per_conn: f64,
}

/// The runs of one server in one scenario ([`Rig::rounds`]).
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// The kept runs, in round order (a failed round is absent).
    pub runs: Vec<Run>,
    /// Why the scenario stopped being run on this server, if it did.
    pub error: Option<String>,
}

impl Series {
    /// The run with the median server CPU per operation ([`median_run`]);
    /// the error instead if any round failed or none ran.
    pub fn median_run(&self) -> Result<&Run, String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        median_run(&self.runs, Run::cpu_us_per_op).ok_or_else(|| "no run".to_string())
    }

    /// The runs, if no round failed.
    pub fn ok_runs(&self) -> Option<&[Run]> {
        self.error.is_none().then_some(&self.runs[..])
    }
}

/// Every [`Series`], by scenario, then server (indices as given to
/// [`Rig::rounds`]).
#[derive(Debug, Clone, Default)]
pub struct Grid(pub Vec<Vec<Series>>);

impl Grid {
    /// The series of server `server` in scenario `scenario`.
    pub fn get(&self, scenario: usize, server: usize) -> &Series {
        &self.0[scenario][server]
    }
}

// ---------------------------------------------------------------------------
// Servers

/// How to start a server: a program, its arguments (`{addr}` and `{port}`
/// in them are replaced by the address the rig chose), its environment,
/// where its output goes.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Name in the report.
    pub name: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// File for the server's stdout and stderr (`None`: discarded).
    pub log: Option<PathBuf>,
    /// A fixed address (the server's configuration names it) instead of a
    /// free port chosen by the rig.
    pub addr: Option<SocketAddr>,
    /// Pause after the port accepts, before the server is used (lets it
    /// drop the readiness probe, which is not a valid client).
    pub settle: Duration,
}

impl ServerSpec {
    /// `program` with `args`.
    pub fn new<I, S>(name: impl Into<String>, program: impl Into<PathBuf>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            name: name.into(),
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            log: None,
            addr: None,
            settle: Duration::ZERO,
        }
    }

    /// A command line split at whitespace: the program, then its
    /// arguments, e.g. `"target/release/examples/echo {addr} --threads 1"`.
    pub fn command(name: impl Into<String>, line: &str) -> Self {
        let mut words = line.split_whitespace();
        let program = words.next().unwrap_or_default();
        Self::new(name, program, words)
    }

    /// `NAME=COMMAND LINE`, as given on a command line.
    pub fn parse(s: &str) -> Result<Self> {
        let (name, line) = s
            .split_once('=')
            .with_context(|| format!("{s:?} is not NAME=COMMAND"))?;
        if name.trim().is_empty() || line.trim().is_empty() {
            bail!("{s:?} is not NAME=COMMAND");
        }
        Ok(Self::command(name.trim(), line))
    }

    /// Adds an environment variable.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Sends the server's output to `path`.
    pub fn log(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// Uses a fixed address (`host:port`) instead of a free port.
    pub fn at(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    /// Pauses this long after the port accepts.
    pub fn settle(mut self, d: Duration) -> Self {
        self.settle = d;
        self
    }

    /// Starts the server on `addr` pinned to `cpu` and waits (15 s at most)
    /// until it accepts connections.
    pub fn start(&self, addr: SocketAddr, cpu: usize) -> Result<Server> {
        let mut cmd = Command::new(&self.program);
        cmd.args(self.args.iter().map(|a| subst(a, addr)))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        match &self.log {
            Some(path) => {
                let f =
                    File::create(path).with_context(|| format!("creating {}", path.display()))?;
                cmd.stdout(f.try_clone()?).stderr(f);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = affinity::with_cpu(cpu, || cmd.spawn())?
            .with_context(|| format!("starting {}", self.program.display()))?;
        let mut server = Server {
            name: self.name.clone(),
            child,
            addr,
            log: self.log.clone(),
            reaped: false,
        };
        wait_for_port(addr, Duration::from_secs(15), || server.check_alive())
            .with_context(|| format!("{} on {addr}", self.name))?;
        std::thread::sleep(self.settle);
        Ok(server)
    }
}

fn subst(arg: &str, addr: SocketAddr) -> String {
    arg.replace("{addr}", &addr.to_string())
        .replace("{port}", &addr.port().to_string())
}

/// A running server, stopped (SIGTERM, then SIGKILL after 5 s) when dropped.
pub struct Server {
    name: String,
    child: Child,
    addr: SocketAddr,
    log: Option<PathBuf>,
    reaped: bool,
}

impl Server {
    /// Its name in the report.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its log file, if it has one.
    pub fn log(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// `utime + stime` of the server so far, in clock ticks.
    pub fn cpu_ticks(&self) -> Result<u64> {
        procfs::cpu_ticks(self.pid())
    }

    /// The server's resident set size, in bytes.
    pub fn rss_bytes(&self) -> Result<u64> {
        procfs::rss_bytes(self.pid())
    }

    /// Fails if the process has exited (it should not have), with the end
    /// of its log.
    pub fn check_alive(&mut self) -> Result<()> {
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
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.reaped {
            return None;
        }
        let _ = kill_process(Pid::from_child(&self.child), Signal::TERM);
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.reaped = true;
                return Some(st);
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let st = self.child.wait().ok();
        self.reaped = true;
        st
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Waits until a TCP connect to `addr` succeeds, or fails after `timeout`.
/// `alive` is polled between attempts; when it returns an error (for
/// example because the server process exited) waiting stops with it.
pub fn wait_for_port(
    addr: SocketAddr,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for _ in 0..100_000 {
        alive()?;
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "{addr} did not accept connections within {:.1}s",
        timeout.as_secs_f64()
    )
}

// ---------------------------------------------------------------------------
// Loads

/// A load generator or idle holder run: one of this crate's programs
/// (`loadgen`, `ws-loadgen`, `tls-load`, `idle-conns`, `ws-idle`), or an
/// outside client (`myriad-load`, `wrk`) with [`Window::Process`] and a
/// [`Load::parse`] function, and its arguments (`{addr}` and `{port}` are
/// replaced by the server's address).
#[derive(Debug, Clone)]
pub struct Load {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// It is killed if it has not finished within this time.
    pub timeout: Duration,
    /// Where the measured window starts and ends.
    pub window: Window,
    /// Turns the program's stdout (every line but the markers) into the
    /// fields of its [`Run`] (merged over those of a `RESULT` line), for
    /// programs that print no `RESULT` line. It should set `msgs` (the
    /// operations completed in the window) and `msgs_per_sec`.
    pub parse: Option<ParseOutput>,
}

/// See [`Load::parse`].
pub type ParseOutput = fn(&[String]) -> Result<BTreeMap<String, String>>;

/// Where the measured window of a [`Load`] run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Window {
    /// Between the `MEASURE_START` and `MEASURE_END` lines the program
    /// prints (this crate's load generators: the warm-up is left out).
    #[default]
    Markers,
    /// From the start of the program to the end of its output (clients
    /// that print no markers): the whole run is measured, connection set-up
    /// included, so [`Load::parse`] should count every operation of the
    /// run in `msgs`.
    Process,
}

impl Load {
    /// `program` with `args`, killed after 10 minutes.
    pub fn new<I, S>(program: impl Into<PathBuf>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            timeout: Duration::from_secs(600),
            window: Window::Markers,
            parse: None,
        }
    }

    /// An outside client measured over its whole run ([`Window::Process`]),
    /// its output turned into fields by `parse`.
    pub fn process(mut self, parse: ParseOutput) -> Self {
        self.window = Window::Process;
        self.parse = Some(parse);
        self
    }

    /// A closed-loop echo load (`loadgen`, `ws-loadgen`) of scenario `sc`,
    /// killed if it overruns its warm-up and window by a minute.
    pub fn closed_loop(
        program: impl Into<PathBuf>,
        sc: &Scenario,
        warmup: f64,
        duration: f64,
    ) -> Self {
        let mut l = Self::new(
            program,
            [
                "--addr".to_string(),
                "{addr}".into(),
                "--connections".into(),
                sc.connections.to_string(),
                "--size".into(),
                sc.size.to_string(),
                "--window".into(),
                sc.window.to_string(),
                "--warmup".into(),
                warmup.to_string(),
                "--duration".into(),
                duration.to_string(),
                "--connect-timeout".into(),
                "30".into(),
            ],
        );
        l.timeout = Duration::from_secs_f64(warmup + duration + 60.0);
        l
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    fn name(&self) -> String {
        self.program.file_name().map_or_else(
            || self.program.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }
}

/// A closed-loop load scenario.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Long name (`pingpong-64`).
    pub name: &'static str,
    /// Short name, used in tables (`pp64`).
    pub short: &'static str,
    /// Connections.
    pub connections: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Messages in flight per connection (1 = ping-pong).
    pub window: usize,
    /// One line for the report.
    pub desc: &'static str,
}

/// 100 connections × 64 B, ping-pong.
pub const PP64: Scenario = Scenario {
    name: "pingpong-64",
    short: "pp64",
    connections: 100,
    size: 64,
    window: 1,
    desc: "100 connections x 64 B, ping-pong",
};

/// 100 connections × 64 B, 16 in flight per connection.
pub const PIPE64: Scenario = Scenario {
    name: "pipelined-64",
    short: "pipe64",
    connections: 100,
    size: 64,
    window: 16,
    desc: "100 connections x 64 B, 16 in flight per connection",
};

/// 1,000 connections × 512 B, ping-pong.
pub const PP512: Scenario = Scenario {
    name: "pingpong-512",
    short: "pp512",
    connections: 1000,
    size: 512,
    window: 1,
    desc: "1,000 connections x 512 B, ping-pong",
};

// ---------------------------------------------------------------------------
// The rig

/// The two CPUs, the ports, the stop flag and the disturbed-machine
/// settings of one benchmark program.
pub struct Rig {
    /// Name of the benchmark program, for its messages.
    pub prog: &'static str,
    /// CPU the servers are pinned to.
    pub server_cpu: usize,
    /// CPU the load generators and idle holders are pinned to.
    pub client_cpu: usize,
    /// Before each measured run, wait up to this many seconds for the two
    /// CPUs to be idle (0: do not wait).
    pub wait_quiet: f64,
    /// Re-run a disturbed run up to this many times, keeping the least
    /// disturbed one.
    pub busy_retries: usize,
    bin_dir: PathBuf,
    next_port: u16,
    clk_tck: u64,
    stop: Arc<AtomicBool>,
}

impl Rig {
    /// A rig for program `prog`: checks that both CPUs are available (warns
    /// if they are the same), takes ports from `base_port` up, and makes
    /// SIGTERM, SIGINT and SIGHUP stop the program after the current run
    /// (see [`Rig::check_stop`]). Waiting for quiet and retries are off
    /// until set.
    pub fn new(
        prog: &'static str,
        server_cpu: usize,
        client_cpu: usize,
        base_port: u16,
    ) -> Result<Self> {
        let cpus = affinity::allowed_cpus()?;
        for cpu in [server_cpu, client_cpu] {
            if !cpus.contains(&cpu) {
                bail!("CPU {cpu} is not available to this process (allowed: {cpus:?})");
            }
        }
        if server_cpu == client_cpu {
            eprintln!("{prog}: warning: server and load generator share CPU {server_cpu}");
        }
        let stop = Arc::new(AtomicBool::new(false));
        for sig in [
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGHUP,
        ] {
            signal_hook::flag::register(sig, Arc::clone(&stop))?;
        }
        Ok(Self {
            prog,
            server_cpu,
            client_cpu,
            wait_quiet: 0.0,
            busy_retries: 0,
            bin_dir: bin_dir()?,
            next_port: base_port,
            clk_tck: procfs::clock_ticks_per_second(),
            stop,
        })
    }

    /// The directory of this executable, where its sibling programs are.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Takes the programs under test from the directory of cargo profile
    /// `profile` beside this executable's (`target/<profile>`; `dev` is
    /// `target/debug`) instead of this executable's own, and builds them
    /// with that profile.
    ///
    /// # Errors
    ///
    /// If this executable's directory has no parent.
    pub fn use_profile(&mut self, profile: &str) -> Result<()> {
        let dir = if profile == "dev" { "debug" } else { profile };
        let target = self
            .bin_dir
            .parent()
            .context("this executable's directory has no parent")?;
        self.bin_dir = target.join(dir);
        Ok(())
    }

    /// A sibling program of this executable.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// A program of the baseline workspace `bench/<ws>` (a cargo workspace
    /// of its own, built into `target/<ws>`: see [`Rig::build_baselines`]),
    /// from the directory of the profile the rig runs (`bench-http
    /// --profile release-lto` runs the baselines built with it too).
    pub fn baseline_bin(&self, ws: &str, name: &str) -> PathBuf {
        let profile = self.bin_dir.file_name().unwrap_or_default();
        workspace_root()
            .join("target")
            .join(ws)
            .join(profile)
            .join(name)
    }

    /// Compiles the C program `c.src` (relative to the workspace root)
    /// into [`Rig::baseline_bin`]`(c.ws, c.name)` with `cc -O3 -Wall`,
    /// linking `c.libs`; with `rebuild` false, only when that binary is
    /// missing (a driver's `--no-build`). Each `(header, package)` of
    /// `c.debs` whose header is missing under `/usr/include` is installed
    /// first with `apt-get` (as the cluster scripts install their brokers).
    ///
    /// # Errors
    ///
    /// A package could not be installed, `cc` could not be run, or it
    /// failed.
    pub fn build_c_baseline(&self, prog: &str, c: &CBaseline, rebuild: bool) -> Result<()> {
        let CBaseline {
            ws,
            name,
            src,
            libs,
            debs,
        } = *c;
        let out = self.baseline_bin(ws, name);
        if !rebuild && out.is_file() {
            return Ok(());
        }
        for (header, package) in debs {
            if Path::new("/usr/include").join(header).exists() {
                continue;
            }
            eprintln!("{prog}: {header} missing; apt-get install -y {package}");
            let ok = Command::new("apt-get")
                .args(["install", "-y", "-qq", package])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                bail!("{src} needs {package}: apt-get install {package} (as root)");
            }
        }
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        eprintln!(
            "{prog}: cc -O3 -Wall -o {} {src} {}",
            out.display(),
            libs.join(" ")
        );
        let st = Command::new("cc")
            .args(["-O3", "-Wall", "-o"])
            .arg(&out)
            .arg(workspace_root().join(src))
            .args(libs)
            .status()
            .context("running cc (Debian: apt-get install gcc)")?;
        if !st.success() {
            bail!("compiling {src} failed");
        }
        Ok(())
    }

    /// Builds the baseline workspace `bench/<ws>` (its binaries `bins`, or
    /// all of them when empty) into `target/<ws>` with the rig's profile;
    /// returns whether cargo succeeded, as [`cargo_build`].
    ///
    /// # Errors
    ///
    /// As [`cargo_build`]: the rig's directory is no profile directory, or
    /// cargo could not be run.
    pub fn build_baselines(&self, prog: &str, ws: &str, bins: &[&str]) -> Result<bool> {
        let manifest = format!("bench/{ws}/Cargo.toml");
        let mut args = vec!["--manifest-path", manifest.as_str()];
        for b in bins {
            args.extend(["--bin", b]);
        }
        let target = workspace_root().join("target").join(ws);
        cargo_build(prog, &self.bin_dir, &args, &[("CARGO_TARGET_DIR", target)])
    }

    /// Clock ticks per second of `/proc` CPU times.
    pub fn clk_tck(&self) -> u64 {
        self.clk_tck
    }

    /// The benchmark CPUs (server's, then client's, once each).
    pub fn cpus(&self) -> Vec<usize> {
        let mut v = vec![self.server_cpu, self.client_cpu];
        v.dedup();
        v
    }

    /// Fails once a stop signal has arrived (servers are then stopped by
    /// their handles as the error unwinds).
    pub fn check_stop(&self) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted by a signal");
        }
        Ok(())
    }

    /// A free loopback address, from the next port up.
    pub fn free_addr(&mut self) -> Result<SocketAddr> {
        for _ in 0..200 {
            let p = self.next_port;
            self.next_port = self.next_port.checked_add(1).context("ran out of ports")?;
            if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
                return Ok(SocketAddr::from(([127, 0, 0, 1], p)));
            }
        }
        bail!("no free port found near {}", self.next_port)
    }

    /// Starts `spec` pinned to the server CPU, on its fixed address or a
    /// free port.
    pub fn start(&mut self, spec: &ServerSpec) -> Result<Server> {
        let addr = match spec.addr {
            Some(a) => a,
            None => self.free_addr()?,
        };
        spec.start(addr, self.server_cpu)
    }

    /// One load run against `server`: the load generator pinned to the
    /// client CPU; at its `MEASURE_START` and `MEASURE_END` the CPU ticks of
    /// server, load generator and both CPUs are sampled. Fails if the
    /// server is not running or the generator printed no complete report;
    /// its exit status and errors are left to the caller to judge.
    pub fn load(&self, server: &mut Server, load: &Load) -> Result<Run> {
        server.check_alive()?;
        let spid = server.pid();
        let cpus = self.cpus();
        let args: Vec<String> = load.args.iter().map(|a| subst(a, server.addr())).collect();
        let sample = |lpid: u32| -> Result<Sample> {
            let (user, sys) = procfs::cpu_ticks_split(spid)?;
            Ok(Sample {
                server: user + sys,
                server_sys: sys,
                loadgen: procfs::cpu_ticks(lpid)?,
                cpus: procfs::cpus_busy_ticks(&cpus)?,
                at: Instant::now(),
            })
        };
        let mut start: Option<Sample> = None;
        let mut end: Option<Sample> = None;
        let mut fields: Option<BTreeMap<String, String>> = None;
        let mut output = Vec::new();
        let by_markers = load.window == Window::Markers;
        let status = self.client(load, &args, false, |out, lpid, _| {
            match out {
                Output::Started if !by_markers => start = Some(sample(lpid)?),
                Output::Eof if !by_markers => end = Some(sample(lpid)?),
                Output::Line("MEASURE_START") if by_markers => start = Some(sample(lpid)?),
                Output::Line("MEASURE_END") if by_markers => end = Some(sample(lpid)?),
                Output::Line(line) => {
                    if let Some(rest) = line.strip_prefix("RESULT") {
                        fields = Some(parse_fields(rest));
                    } else if load.parse.is_some() {
                        output.push(line.to_string());
                    }
                }
                _ => {}
            }
            Ok(())
        })?;
        if let Some(parse) = load.parse {
            let parsed =
                parse(&output).with_context(|| format!("{} output ({status})", load.name()))?;
            fields.get_or_insert_with(BTreeMap::new).extend(parsed);
        }
        let (Some(s), Some(e), Some(fields)) = (start, end, fields) else {
            bail!(
                "{} exited ({status}) without a complete report",
                load.name()
            );
        };
        let tck = self.clk_tck.max(1) as f64;
        let server_ticks = e.server.saturating_sub(s.server);
        let server_sys_ticks = e.server_sys.saturating_sub(s.server_sys);
        let loadgen_ticks = e.loadgen.saturating_sub(s.loadgen);
        let other_ticks = e
            .cpus
            .saturating_sub(s.cpus)
            .saturating_sub(server_ticks + loadgen_ticks);
        Ok(Run {
            round: 0,
            fields,
            server_cpu_secs: server_ticks as f64 / tck,
            server_sys_secs: server_sys_ticks as f64 / tck,
            loadgen_cpu_secs: loadgen_ticks as f64 / tck,
            other_cpu_secs: other_ticks as f64 / tck,
            wall_secs: e.at.duration_since(s.at).as_secs_f64().max(1e-9),
            status,
        })
    }

    /// [`Rig::load`] with the disturbed-machine detector: waits for quiet
    /// CPUs first ([`Rig::wait_quiet`]), hands each run to `report` (which
    /// prints its line, or fails to reject it), and re-runs a disturbed run
    /// up to [`Rig::busy_retries`] times, keeping the least disturbed one.
    /// A failed run prints `{tag} FAILED: ...` and fails.
    pub fn measure(
        &self,
        server: &mut Server,
        load: &Load,
        tag: &str,
        mut report: impl FnMut(&Run) -> Result<()>,
    ) -> Result<Run> {
        let mut best: Option<Run> = None;
        for attempt in 0..=self.busy_retries {
            self.check_stop()?;
            self.wait_quiet()?;
            let r = match self.load(server, load).and_then(|r| report(&r).map(|()| r)) {
                Ok(r) => r,
                Err(e) => {
                    println!("{tag} FAILED: {e:#}");
                    return Err(e);
                }
            };
            let disturbed = r.disturbed();
            if best
                .as_ref()
                .is_none_or(|b| r.other_util() < b.other_util())
            {
                best = Some(r);
            }
            if !disturbed {
                break;
            }
            if attempt < self.busy_retries {
                println!("{tag} disturbed by other work on the CPUs, retrying");
            }
        }
        best.context("no run")
    }

    /// Waits (at most [`Rig::wait_quiet`] seconds) until the benchmark CPUs
    /// are nearly idle, so that a run does not start in the middle of
    /// someone else's build.
    pub fn wait_quiet(&self) -> Result<()> {
        if self.wait_quiet <= 0.0 {
            return Ok(());
        }
        let cpus = self.cpus();
        let deadline = Instant::now() + Duration::from_secs_f64(self.wait_quiet);
        let step = Duration::from_millis(500);
        let capacity = step.as_secs_f64() * self.clk_tck as f64 * cpus.len() as f64;
        let mut said = false;
        let mut busy = 0.0;
        for _ in 0..100_000 {
            self.check_stop()?;
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
                    self.wait_quiet
                );
                said = true;
            }
        }
        println!(
            "(CPUs still {:.0}% busy after {:.0} s; running anyway)",
            busy * 100.0,
            self.wait_quiet
        );
        Ok(())
    }

    /// Interleaved rounds: for each of `repeat` rounds, each scenario, each
    /// server, `run(rig, round, scenario, server)` (normally a
    /// [`Rig::measure`]); the run gets its round number. A scenario that
    /// failed on a server is not run on it again; a server that died is not
    /// run at all any more. Fails only on a stop signal.
    pub fn rounds<S>(
        &self,
        servers: &mut [Server],
        scenarios: &[S],
        repeat: usize,
        mut run: impl FnMut(&Rig, usize, &S, &mut Server) -> Result<Run>,
    ) -> Result<Grid> {
        let mut grid = Grid(vec![
            vec![Series::default(); servers.len()];
            scenarios.len()
        ]);
        let mut dead: Vec<Option<String>> = vec![None; servers.len()];
        for round in 0..repeat.max(1) {
            for (si, sc) in scenarios.iter().enumerate() {
                for (vi, server) in servers.iter_mut().enumerate() {
                    let series = &mut grid.0[si][vi];
                    if dead[vi].is_some() || series.error.is_some() {
                        continue;
                    }
                    self.check_stop()?;
                    match run(self, round, sc, server) {
                        Ok(mut r) => {
                            r.round = round;
                            series.runs.push(r);
                        }
                        Err(e) => series.error = Some(format!("{e:#}")),
                    }
                    if let Err(e) = server.check_alive() {
                        println!("{} died: {e:#}", server.name());
                        dead[vi] = Some(format!("{e:#}"));
                    }
                }
            }
        }
        for row in grid.0.iter_mut() {
            for (series, dead) in row.iter_mut().zip(&dead) {
                if let (true, None, Some(why)) = (series.runs.is_empty(), &series.error, dead) {
                    series.error = Some(format!("not run: server died ({why})"));
                }
            }
        }
        Ok(grid)
    }

    /// Idle memory on a fresh server: starts `spec`, runs the optional
    /// `warm` client to completion (then 500 ms pause) or else pauses
    /// 300 ms, samples the server's RSS, starts `holder` (an idle holder
    /// opening `connections` connections), and when it prints `READY`,
    /// waits 1 s, samples the RSS again and releases the holder (a line on
    /// its stdin, then EOF). The server is stopped afterwards.
    pub fn idle(
        &mut self,
        spec: &ServerSpec,
        holder: &Load,
        connections: usize,
        warm: Option<&Load>,
    ) -> Result<Idle> {
        let mut server = self.start(spec)?;
        let addr = server.addr();
        let args = |l: &Load| -> Vec<String> { l.args.iter().map(|a| subst(a, addr)).collect() };
        match warm {
            Some(w) => {
                let st = self.client(w, &args(w), false, |_, _, _| Ok(()))?;
                if !st.success() {
                    bail!("warm-up against {} failed ({st})", spec.name);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            None => std::thread::sleep(Duration::from_millis(300)),
        }
        let rss_before = server.rss_bytes()?;
        let mut rss_after = None;
        let status = self.client(holder, &args(holder), true, |out, _, stdin| {
            if matches!(out, Output::Line(line) if line.starts_with("READY")) {
                std::thread::sleep(Duration::from_secs(1));
                server.check_alive()?;
                rss_after = Some(server.rss_bytes()?);
                // A line, then EOF, releases every holder.
                if let Some(mut i) = stdin.take() {
                    let _ = i.write_all(b"\n");
                }
            }
            Ok(())
        })?;
        let Some(rss_after) = rss_after else {
            bail!(
                "{} exited ({status}) before all connections were ready",
                holder.name()
            );
        };
        server.check_alive()?;
        server.stop(Duration::from_secs(6));
        Ok(Idle {
            connections,
            rss_before,
            rss_after,
            bytes_per_conn: (rss_after as f64 - rss_before as f64) / connections.max(1) as f64,
        })
    }

    /// Runs a client program pinned to the client CPU, telling `on_line`
    /// (with its pid and stdin) that it started, each stdout line, and the
    /// end of its output (before it is reaped, so its `/proc` entry is
    /// still there); kills it if it has not finished within `load.timeout`
    /// or if `on_line` fails.
    fn client(
        &self,
        load: &Load,
        args: &[String],
        piped_stdin: bool,
        mut on_line: impl FnMut(Output<'_>, u32, &mut Option<ChildStdin>) -> Result<()>,
    ) -> Result<ExitStatus> {
        let mut cmd = Command::new(&load.program);
        cmd.args(args)
            .stdin(if piped_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = affinity::with_cpu(self.client_cpu, || cmd.spawn())?
            .with_context(|| format!("starting {}", load.program.display()))?;
        let pid = child.id();
        let mut stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let kill = move || {
            if let Some(p) = Pid::from_raw(pid as i32) {
                let _ = kill_process(p, Signal::KILL);
            }
        };

        // Watchdog: SIGKILL the client if it overruns. It is joined before
        // the child is reaped, so the pid cannot have been reused.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let timeout = load.timeout;
        let watchdog = std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(timeout) {
                kill();
                return true;
            }
            false
        });

        let mut result = on_line(Output::Started, pid, &mut stdin);
        if result.is_err() {
            kill();
        }
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        for _ in 0..1_000_000 {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if result.is_ok() {
                        result = on_line(Output::Line(line.trim_end()), pid, &mut stdin);
                        if result.is_err() {
                            // Stop the client; the loop then sees EOF.
                            kill();
                        }
                    }
                }
                Err(e) => {
                    result = Err(anyhow::Error::new(e).context("reading client output"));
                    break;
                }
            }
        }
        if result.is_ok() {
            result = on_line(Output::Eof, pid, &mut stdin);
        }
        drop(stdin);
        drop(tx);
        let timed_out = watchdog.join().unwrap_or(false);
        let status = child.wait().context("waiting for client")?;
        result?;
        if timed_out {
            bail!(
                "{} did not finish within {:.0}s and was killed",
                load.name(),
                timeout.as_secs_f64()
            );
        }
        Ok(status)
    }
}

/// What a client run tells [`Rig::client`]'s callback.
#[derive(Debug, Clone, Copy)]
enum Output<'a> {
    /// The program was started.
    Started,
    /// One line of its stdout, without the line end.
    Line(&'a str),
    /// Its stdout ended (it has exited or is exiting, not yet reaped).
    Eof,
}

/// CPU counters at one edge of a measured window.
struct Sample {
    server: u64,
    /// `stime`, part of `server`.
    server_sys: u64,
    loadgen: u64,
    cpus: u64,
    at: Instant,
}

/// Parses `key=value` words (the rest of a `RESULT` line).
pub fn parse_fields(s: &str) -> BTreeMap<String, String> {
    s.split_ascii_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------
// Building

/// The directory of this executable (`target/<profile>`).
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    Ok(exe
        .parent()
        .context("executable has no parent directory")?
        .to_path_buf())
}

/// A C program among a baseline workspace's programs (the floors of
/// `bench/floors`), built by [`Rig::build_c_baseline`].
#[derive(Debug, Clone, Copy)]
pub struct CBaseline {
    /// The baseline workspace whose target directory it goes to.
    pub ws: &'static str,
    /// The binary's name.
    pub name: &'static str,
    /// The source, relative to the workspace root.
    pub src: &'static str,
    /// Libraries to link (`-luring`, …).
    pub libs: &'static [&'static str],
    /// `(header under /usr/include, Debian package)` it needs.
    pub debs: &'static [(&'static str, &'static str)],
}

/// `bench-http`'s floors (`floor`, `floor-epoll`).
pub const HTTP_FLOOR: CBaseline = CBaseline {
    ws: "http-baselines",
    name: "http-floor",
    src: "bench/floors/http-floor.c",
    libs: &["-luring"],
    debs: &[("liburing.h", "liburing-dev")],
};

/// `bench-ws`'s floors (`floor`, `floor-epoll`).
pub const WS_FLOOR: CBaseline = CBaseline {
    ws: "ws-baselines",
    name: "ws-floor",
    src: "bench/floors/ws-floor.c",
    libs: &["-luring", "-lcrypto"],
    debs: &[
        ("liburing.h", "liburing-dev"),
        ("openssl/sha.h", "libssl-dev"),
    ],
};

/// Whether a server name of `bench-http`/`bench-ws` is one of the floors
/// (`floor`, `floor-epoll`: the C programs of `bench/floors`), which are
/// measured and compared with but are nobody's peer.
pub fn is_floor(server: &str) -> bool {
    server.starts_with("floor")
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs `cargo build ARGS` in the workspace root with the profile of
/// `bin_dir` (`--release` for `target/release`, `--profile P` for
/// `target/P`; `$CARGO` if set, else
/// `cargo`) plus `env`; returns whether it succeeded. Fails if `bin_dir`
/// is not a profile directory.
pub fn cargo_build(
    prog: &str,
    bin_dir: &Path,
    args: &[&str],
    env: &[(&str, PathBuf)],
) -> Result<bool> {
    // Cargo names a profile's directory after the profile, except `dev`
    // (`debug`); `release-lto` (the workspace's link-time-optimised
    // profile) lands in `target/release-lto`.
    let profile: Vec<&str> = match bin_dir.file_name().and_then(|s| s.to_str()) {
        Some("release") => vec!["--release"],
        Some("debug") => vec![],
        Some(p) if !matches!(p, "deps" | "examples" | "build") => vec!["--profile", p],
        _ => bail!(
            "{} is not a cargo profile directory; build with --no-build",
            bin_dir.display()
        ),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "{prog}: running cargo build {} {}",
        profile.join(" "),
        args.join(" ")
    );
    let st = Command::new(cargo)
        .arg("build")
        .args(&profile)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(workspace_root())
        .status()
        .context("running cargo")?;
    Ok(st.success())
}

// ---------------------------------------------------------------------------
// Report

/// A text table: columns of fixed width (the first usually left-aligned,
/// the others right-aligned), separated by one space.
#[derive(Debug, Clone, Default)]
pub struct Table {
    cols: Vec<(String, usize, bool)>,
    rule: bool,
    rows: Vec<String>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a left-aligned column.
    pub fn left(mut self, head: impl Into<String>, width: usize) -> Self {
        self.cols.push((head.into(), width, true));
        self
    }

    /// Adds a right-aligned column.
    pub fn right(mut self, head: impl Into<String>, width: usize) -> Self {
        self.cols.push((head.into(), width, false));
        self
    }

    /// Underlines the header with dashes.
    pub fn rule(mut self) -> Self {
        self.rule = true;
        self
    }

    fn cells<S: AsRef<str>>(&self, cells: impl IntoIterator<Item = S>) -> String {
        let mut o = String::new();
        for (i, (c, (_, w, left))) in cells.into_iter().zip(&self.cols).enumerate() {
            if i > 0 {
                o.push(' ');
            }
            let c = c.as_ref();
            let _ = if *left {
                write!(o, "{c:<w$}")
            } else {
                write!(o, "{c:>w$}")
            };
        }
        o
    }

    /// Adds a row, one cell per column (fewer cells end the row early).
    pub fn row<S: AsRef<str>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let r = self.cells(cells);
        self.rows.push(r);
    }

    /// Adds a free-form line.
    pub fn line(&mut self, text: impl Into<String>) {
        self.rows.push(text.into());
    }

    /// The header, the rule if asked for, and the rows, each ending in a
    /// newline.
    pub fn render(&self) -> String {
        let head = self.cells(self.cols.iter().map(|(h, ..)| h.as_str()));
        let mut o = format!("{head}\n");
        if self.rule {
            let _ = writeln!(o, "{}", "-".repeat(head.chars().count()));
        }
        for r in &self.rows {
            let _ = writeln!(o, "{r}");
        }
        o
    }
}

/// A machine-readable report line: `RESULT k=v k=v ...` (one per scenario
/// and server in every benchmark's report; a value's spaces become `_`).
pub fn result_line(fields: &[(&str, String)]) -> String {
    let mut o = String::from("RESULT");
    for (k, v) in fields {
        let _ = write!(o, " {k}={}", v.replace(' ', "_"));
    }
    o
}

/// A figure for a `RESULT` line: `-` when it is missing or not finite.
pub fn num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "-".to_string(),
    }
}

/// `1.23x`, or `-` when missing.
pub fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"))
}

/// Messages/s in short form: `2.31M`, `162.4k`, `950`.
pub fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

// ---------------------------------------------------------------------------
// Comparing N variants

/// The flags of a [`Compare`] benchmark, to flatten into a program's own
/// `clap` parser (`#[command(flatten)]`).
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Measured seconds per load run.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Warm-up seconds per load run (not measured).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Interleaved rounds (runs per scenario and variant).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Idle connections for the memory scenario.
    #[arg(long, default_value_t = 19_000)]
    pub idle: usize,
    /// Scenarios, comma-separated: pp64, pipe64, pp512, idle.
    #[arg(long, value_delimiter = ',', default_value = "pp64,pipe64,idle")]
    pub scenarios: Vec<String>,
    /// CPU for the servers.
    #[arg(long, default_value_t = 0)]
    pub server_cpu: usize,
    /// CPU for the load generator and the idle holder.
    #[arg(long, default_value_t = 1)]
    pub client_cpu: usize,
    /// First port to try for variants without a fixed address.
    #[arg(long, default_value_t = 19_600)]
    pub base_port: u16,
    /// Before each run, wait up to this many seconds for the two CPUs to
    /// be idle (0 = do not wait).
    #[arg(long, default_value_t = 60.0)]
    pub wait_quiet: f64,
    /// Re-run a run disturbed by other work on the CPUs up to this many
    /// times (the least disturbed one is kept).
    #[arg(long, default_value_t = 2)]
    pub busy_retries: usize,
}

impl Default for CompareArgs {
    fn default() -> Self {
        Self {
            duration: 5.0,
            warmup: 1.0,
            repeat: 3,
            idle: 19_000,
            scenarios: vec!["pp64".into(), "pipe64".into(), "idle".into()],
            server_cpu: 0,
            client_cpu: 1,
            base_port: 19_600,
            wait_quiet: 60.0,
            busy_retries: 2,
        }
    }
}

/// N server variants compared on closed-loop echo scenarios and idle
/// memory, each against the first.
///
/// Every variant is started once for the load scenarios (all at once; an
/// undriven server sleeps) and once more, fresh, for the idle scenario.
/// Runs are interleaved round by round ([`Rig::rounds`]) through the
/// disturbed-machine detector ([`Rig::measure`]), with `loadgen` (or
/// another closed-loop generator, [`Compare::programs`]) pinned to the
/// client CPU. The report has, per scenario and variant, msgs/s and server
/// CPU µs per message of the median run, the spread (min–max) of CPU per
/// message over the rounds, and the variant's ratio to the first variant —
/// the [`paired_ratio_median`] of CPU per message and of msgs/s, with the
/// spread of the per-round ratios — then one [`result_line`] each.
///
/// ```no_run
/// use clap::Parser;
/// use myriad_bench::harness::{Compare, CompareArgs, ServerSpec};
///
/// /// Built-in echo against the echo plugins.
/// #[derive(Parser)]
/// struct Args {
///     #[command(flatten)]
///     bench: CompareArgs,
/// }
///
/// fn main() -> anyhow::Result<()> {
///     let args = Args::parse();
///     Compare::new("bench-plugins", args.bench)
///         // `{addr}` is replaced by a free loopback address ...
///         .variant(ServerSpec::command(
///             "builtin",
///             "target/release/examples/echo {addr} --threads 1",
///         ))
///         // ... or the configuration names the address.
///         .variant(
///             ServerSpec::command(
///                 "rust-plugin",
///                 "target/release/myriad serve --config bench/plugins/echo-rust.toml",
///             )
///             .at("127.0.0.1:7300".parse()?),
///         )
///         .run()?;
///     Ok(())
/// }
/// ```
pub struct Compare {
    /// Program name, for messages and the `RESULT` lines' `bench=`.
    pub prog: &'static str,
    /// The flags.
    pub args: CompareArgs,
    /// The variants; the first is the reference of the ratios.
    pub variants: Vec<ServerSpec>,
    /// Closed-loop load generator (a sibling program's name or a path).
    pub load: String,
    /// Idle holder (a sibling program's name or a path).
    pub holder: String,
}

/// What [`Compare::run`] measured.
pub struct CompareReport {
    /// The load scenarios run.
    pub scenarios: Vec<Scenario>,
    /// Variant names, in order.
    pub variants: Vec<String>,
    /// Every run, by scenario and variant.
    pub grid: Grid,
    /// Idle memory per variant (`None`: not run).
    pub idle: Vec<Option<Result<Idle, String>>>,
}

impl Compare {
    /// No variants yet; `loadgen` and `idle-conns` as the clients.
    pub fn new(prog: &'static str, args: CompareArgs) -> Self {
        Self {
            prog,
            args,
            variants: Vec::new(),
            load: "loadgen".into(),
            holder: "idle-conns".into(),
        }
    }

    /// Adds a variant.
    pub fn variant(mut self, spec: ServerSpec) -> Self {
        self.variants.push(spec);
        self
    }

    /// Other clients, e.g. `ws-loadgen` and `ws-idle` for WebSocket servers.
    pub fn programs(mut self, load: &str, holder: &str) -> Self {
        self.load = load.into();
        self.holder = holder.into();
        self
    }

    /// Runs everything, prints progress, the report and the `RESULT` lines,
    /// and returns the figures.
    pub fn run(&self) -> Result<CompareReport> {
        let a = &self.args;
        if !(a.duration.is_finite() && a.duration > 0.0 && a.warmup.is_finite() && a.warmup >= 0.0)
        {
            bail!("--duration must be > 0 and --warmup >= 0");
        }
        if self.variants.is_empty() {
            bail!("no variants to compare");
        }
        let mut scenarios = Vec::new();
        let mut want_idle = false;
        for s in a.scenarios.iter().map(|s| s.trim()) {
            match [PP64, PIPE64, PP512]
                .into_iter()
                .find(|x| x.short == s || x.name == s)
            {
                Some(sc) if scenarios.iter().any(|x: &Scenario| x.short == sc.short) => {}
                Some(sc) => scenarios.push(sc),
                None if s == "idle" => want_idle = a.idle > 0,
                None if s.is_empty() => {}
                None => bail!("unknown scenario {s:?} (known: pp64, pipe64, pp512, idle)"),
            }
        }
        let mut rig = Rig::new(self.prog, a.server_cpu, a.client_cpu, a.base_port)?;
        rig.wait_quiet = a.wait_quiet;
        rig.busy_retries = a.busy_retries;
        let prog = |p: &str| {
            if p.contains('/') {
                PathBuf::from(p)
            } else {
                rig.bin(p)
            }
        };
        let (load, holder) = (prog(&self.load), prog(&self.holder));
        println!(
            "{}: servers pinned to CPU {}, load generator to CPU {}; warm-up {} s, measured {} s, \
             {} interleaved rounds",
            self.prog, a.server_cpu, a.client_cpu, a.warmup, a.duration, a.repeat
        );
        let mut servers = Vec::new();
        for spec in &self.variants {
            let s = rig.start(spec)?;
            println!("{}: listening on {} (pid {})", s.name(), s.addr(), s.pid());
            servers.push(s);
        }
        let grid = rig.rounds(&mut servers, &scenarios, a.repeat, |rig, round, sc, server| {
            let tag = format!("{:<16} {:<7} #{}", server.name(), sc.short, round + 1);
            let l = Load::closed_loop(&load, sc, a.warmup, a.duration);
            rig.measure(server, &l, &tag, |r| {
                if !r.status.success() || r.errors() > 0 || r.count() == 0.0 {
                    bail!("{} errors, {} messages, exit {}", r.errors(), r.count(), r.status);
                }
                println!(
                    "{tag} {:>10.0} msgs/s {:>8.3} us/msg  cpu: server {:>3.0}% loadgen {:>3.0}% other {:>3.0}%",
                    r.rate(),
                    r.cpu_us_per_op(),
                    r.server_util() * 100.0,
                    r.loadgen_util() * 100.0,
                    r.other_util() * 100.0
                );
                Ok(())
            })
        })?;
        drop(servers);
        let mut idle = vec![None; self.variants.len()];
        if want_idle {
            let l = Load::new(
                &holder,
                [
                    "--addr",
                    "{addr}",
                    "--connections",
                    &a.idle.to_string(),
                    "--hold-secs",
                    "120",
                    "--connect-timeout",
                    "90",
                ],
            )
            .timeout_secs(240.0);
            for (i, spec) in self.variants.iter().enumerate() {
                rig.check_stop()?;
                let r = rig.idle(spec, &l, a.idle, None);
                match &r {
                    Ok(r) => println!(
                        "{:<16} idle    {:>10.1} B/conn",
                        spec.name, r.bytes_per_conn
                    ),
                    Err(e) => println!("{:<16} idle    FAILED: {e:#}", spec.name),
                }
                idle[i] = Some(r.map_err(|e| format!("{e:#}")));
            }
        }
        let report = CompareReport {
            scenarios,
            variants: self.variants.iter().map(|v| v.name.clone()).collect(),
            grid,
            idle,
        };
        println!();
        print!("{}", report.render(self.prog));
        Ok(report)
    }
}

impl Load {
    /// Sets the timeout in seconds.
    pub fn timeout_secs(mut self, secs: f64) -> Self {
        self.timeout = Duration::from_secs_f64(secs);
        self
    }
}

impl CompareReport {
    /// The table, the notes and the `RESULT` lines.
    pub fn render(&self, prog: &str) -> String {
        let range = |v: Option<(f64, f64)>, d: usize| {
            v.map_or_else(|| "-".into(), |(lo, hi)| format!("{lo:.d$}-{hi:.d$}"))
        };
        let mut t = Table::new()
            .left("scenario", 8)
            .left("variant", 16)
            .right("msgs/s", 10)
            .right("cpu us/msg", 10)
            .right("us/msg rounds", 15)
            .right("cpu vs first", 12)
            .right("(rounds)", 13)
            .right("msgs vs first", 13)
            .right("(rounds)", 13);
        let mut results = Vec::new();
        let mut notes = Vec::new();
        for (si, sc) in self.scenarios.iter().enumerate() {
            let first = &self.grid.get(si, 0).runs;
            for (vi, name) in self.variants.iter().enumerate() {
                let series = self.grid.get(si, vi);
                let m = match series.median_run() {
                    Ok(m) => m,
                    Err(e) => {
                        t.row([sc.short, name, "FAILED"]);
                        notes.push(format!("note: {name} {} failed: {e}", sc.short));
                        continue;
                    }
                };
                let cpu = paired_ratios(&series.runs, first, Run::cpu_us_per_op);
                let rate = paired_ratios(&series.runs, first, Run::rate);
                let (cpu_m, rate_m) = (median(cpu.iter().copied()), median(rate.iter().copied()));
                let rounds = spread(series.runs.iter().map(Run::cpu_us_per_op));
                t.row([
                    sc.short.to_string(),
                    name.clone(),
                    fmt_rate(m.rate()),
                    format!("{:.3}", m.cpu_us_per_op()),
                    range(rounds, 3),
                    fmt_ratio(cpu_m),
                    range(spread(cpu.iter().copied()), 2),
                    fmt_ratio(rate_m),
                    range(spread(rate.iter().copied()), 2),
                ]);
                let other = series.runs.iter().map(Run::other_util).fold(0.0, f64::max);
                results.push(result_line(&[
                    ("bench", prog.to_string()),
                    ("scenario", sc.short.to_string()),
                    ("variant", name.clone()),
                    ("msgs_per_sec", num(Some(m.rate()), 1)),
                    ("cpu_us_per_msg", num(Some(m.cpu_us_per_op()), 4)),
                    ("cpu_ratio", num(cpu_m, 4)),
                    (
                        "cpu_ratio_min",
                        num(spread(cpu.iter().copied()).map(|s| s.0), 4),
                    ),
                    (
                        "cpu_ratio_max",
                        num(spread(cpu.iter().copied()).map(|s| s.1), 4),
                    ),
                    ("msgs_ratio", num(rate_m, 4)),
                    (
                        "msgs_ratio_min",
                        num(spread(rate.iter().copied()).map(|s| s.0), 4),
                    ),
                    (
                        "msgs_ratio_max",
                        num(spread(rate.iter().copied()).map(|s| s.1), 4),
                    ),
                    ("rounds", series.runs.len().to_string()),
                    ("other_max", num(Some(other), 3)),
                ]));
            }
        }
        let first_idle = self.idle.first().and_then(|r| r.as_ref()?.as_ref().ok());
        for (name, r) in self.variants.iter().zip(&self.idle) {
            match r {
                Some(Ok(r)) => {
                    let rel = first_idle.and_then(|f| ratio(r.bytes_per_conn, f.bytes_per_conn));
                    t.row([
                        "idle".to_string(),
                        name.clone(),
                        format!("{:.1}", r.bytes_per_conn),
                        "B/conn".to_string(),
                        String::new(),
                        fmt_ratio(rel),
                    ]);
                    results.push(result_line(&[
                        ("bench", prog.to_string()),
                        ("scenario", "idle".into()),
                        ("variant", name.clone()),
                        ("connections", r.connections.to_string()),
                        ("bytes_per_conn", num(Some(r.bytes_per_conn), 1)),
                        ("bytes_ratio", num(rel, 4)),
                    ]));
                }
                Some(Err(e)) => {
                    t.row(["idle", name, "FAILED"]);
                    notes.push(format!("note: {name} idle failed: {e}"));
                }
                None => {}
            }
        }
        let mut o = t.render();
        let _ = writeln!(
            o,
            "(median run by cpu/msg; ratios to {}: medians of the per-round paired ratios, \
             cpu/msg and idle lower is better, msgs/s higher is better)",
            self.variants.first().map_or("-", |s| s.as_str())
        );
        let busy = self
            .grid
            .0
            .iter()
            .flatten()
            .flat_map(|s| &s.runs)
            .any(Run::disturbed);
        if busy {
            let _ = writeln!(
                o,
                "WARNING: other processes used more than {:.0}% CPU during some runs; \
                 repeat on a quiet machine",
                OTHER_CPU_WARN * 100.0
            );
        }
        for n in notes {
            let _ = writeln!(o, "{n}");
        }
        for r in results {
            let _ = writeln!(o, "{r}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median([]), None);
        assert_eq!(median_run(&[3.0, 1.0, 4.0, 2.0], |x| *x), Some(&2.0));
        assert_eq!(median_run::<f64>(&[], |x| *x), None);
    }

    fn run(round: usize, msgs: f64, cpu: f64) -> Run {
        Run {
            round,
            fields: parse_fields(&format!("msgs={msgs} msgs_per_sec={msgs}")),
            server_cpu_secs: cpu,
            server_sys_secs: 0.0,
            loadgen_cpu_secs: 0.0,
            other_cpu_secs: 0.0,
            wall_secs: 1.0,
            status: ExitStatus::default(),
        }
    }

    #[test]
    fn paired_by_round() {
        let a = [run(0, 100.0, 1.0), run(1, 100.0, 2.0), run(2, 100.0, 3.0)];
        let b = [run(0, 100.0, 2.0), run(2, 100.0, 3.0)];
        assert_eq!(paired_ratios(&a, &b, Run::cpu_us_per_op), vec![0.5, 1.0]);
        assert_eq!(paired_ratio_median(&a, &b, Run::cpu_us_per_op), Some(0.75));
        assert_eq!(paired_ratio_median(&a, &[], Run::rate), None);
        assert_eq!(spread([2.0, 1.0, 3.0]), Some((1.0, 3.0)));
    }

    #[test]
    fn table_and_result() {
        let mut t = Table::new().left("a", 4).right("b", 3).rule();
        t.row(["x", "1"]);
        assert_eq!(t.render(), "a      b\n--------\nx      1\n");
        assert_eq!(
            result_line(&[("scenario", "pp64".into()), ("x", "1 2".into())]),
            "RESULT scenario=pp64 x=1_2"
        );
    }
}
