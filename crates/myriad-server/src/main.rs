//! `myriad`: the application server.
//!
//! ```text
//! myriad serve [--config FILE]        run (embedded default config without --config)
//! myriad check --config FILE          validate a config; errors name file:line:col (exit 2)
//! myriad service install [--user] [--config FILE] [--print]
//! myriad service uninstall [--user]
//! myriad stats [--url URL] [--once]   live view of a running server's /metrics
//! ```

use myriad_server::config;
mod metrics;
mod plugin;
mod pubsub;
mod services;
mod stats;
mod unit;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use config::Config;
use services::Running;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "myriad", about = "Myriad application server", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (in the foreground; under systemd use Type=notify).
    Serve {
        /// Configuration file (TOML); without it the embedded default runs.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Stay in the foreground (the default and only mode: no double fork).
        #[arg(long)]
        foreground: bool,
        /// Print the embedded default configuration and exit.
        #[arg(long)]
        print_default: bool,
        /// Worker processes (overrides `workers` in the config).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Validate a configuration file without starting anything.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Install or remove a systemd unit.
    Service {
        #[command(subcommand)]
        cmd: ServiceCmd,
    },
    /// Live view of a running server's counters.
    Stats {
        /// The metrics endpoint.
        #[arg(long, default_value = "http://127.0.0.1:9100/metrics")]
        url: String,
        /// Print one snapshot and exit.
        #[arg(long)]
        once: bool,
    },
}

#[derive(Subcommand)]
enum ServiceCmd {
    /// Write the unit file and print how to enable it.
    Install {
        /// A user unit (~/.config/systemd/user) instead of a system one.
        #[arg(long)]
        user: bool,
        /// Configuration file the service runs with.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the unit instead of writing it.
        #[arg(long)]
        print: bool,
        /// Run as this existing user (for example one whose group may read
        /// the certificates) instead of a dynamic user made by systemd.
        #[arg(long = "run-as", value_name = "USER")]
        run_as: Option<String>,
    },
    /// Remove the unit file.
    Uninstall {
        #[arg(long)]
        user: bool,
    },
}

/// How often the server gives the allocator's free memory back to the
/// kernel ([`myriad::trim_heap`]).
const TRIM_EVERY: Duration = Duration::from_secs(30);

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            print!("{e}");
            std::process::exit(0);
        }
        Err(e) => {
            let msg = e.to_string();
            eprintln!(
                "myriad: {}",
                msg.lines()
                    .next()
                    .unwrap_or("invalid arguments")
                    .trim_start_matches("error: ")
            );
            std::process::exit(2);
        }
    };
    let code = match cli.cmd {
        Cmd::Serve {
            config,
            foreground: _,
            print_default,
            workers,
        } => {
            if print_default {
                print!("{}", config::DEFAULT_CONFIG);
                0
            } else {
                match load(config.as_deref()) {
                    Ok(mut cfg) => {
                        if let Some(w) = workers.filter(|w| *w >= 1) {
                            cfg.workers = w;
                        }
                        if cfg.services.is_empty() {
                            eprintln!("myriad: {}: no [[service]] to serve", cfg.source);
                            std::process::exit(2);
                        }
                        match serve_or_supervise(cfg, config) {
                            Ok(()) => 0,
                            Err(e) => {
                                eprintln!("myriad: {e:#}");
                                // a plugin that cannot start is a
                                // configuration error, like a bad file
                                if e.downcast_ref::<services::PluginFailed>().is_some() {
                                    2
                                } else {
                                    1
                                }
                            }
                        }
                    }
                    Err(e) => {
                        eprintln!("myriad: {e}");
                        2
                    }
                }
            }
        }
        Cmd::Check { config } => match config::load(&config) {
            Ok(c) => match check_plugins(&c) {
                Ok(()) => {
                    for w in &c.warnings {
                        eprintln!("{w}");
                    }
                    println!("{}: ok ({} services)", config.display(), c.services.len());
                    0
                }
                Err(e) => {
                    eprintln!("{e}");
                    2
                }
            },
            Err(e) => {
                eprintln!("{e}");
                2
            }
        },
        Cmd::Service { cmd } => match unit::run(cmd) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("myriad: {e:#}");
                1
            }
        },
        Cmd::Stats { url, once } => match stats::run(&url, once) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("myriad: {e:#}");
                1
            }
        },
    };
    std::process::exit(code);
}

/// `myriad check`: loads every plugin, checks its ABI and lets it validate
/// its configuration (`init`, then `shutdown`); the error names the
/// service's `plugin` key as `file:line:col`.
fn check_plugins(cfg: &Config) -> Result<(), String> {
    for s in &cfg.services {
        if let Some(spec) = &s.plugin {
            plugin::start(s, None)
                .map_err(|e| format!("{}: service {:?}: {e:#}", spec.location, s.name))?;
        }
        // ws = "plugin" routes of http services, checked as on a ws stack
        for r in &s.routes {
            if let config::RouteKind::Ws(config::WsRoute::Plugin(spec)) = &r.kind {
                let as_ws = config::ServiceConfig {
                    stack: config::Stack::Ws,
                    handler: config::HandlerKind::Plugin,
                    plugin: Some(spec.clone()),
                    routes: Vec::new(),
                    ..s.clone()
                };
                plugin::start(&as_ws, None)
                    .map_err(|e| format!("{}: service {:?}: {e:#}", spec.location, s.name))?;
            }
        }
    }
    Ok(())
}

/// With `workers > 1`, this process supervises that many worker copies of
/// itself (each a full server on the same ports; worker `i` serves metrics
/// on the metrics port + `i`, and worker 0's listener, on the metrics port
/// itself, answers for all of them).
fn serve_or_supervise(mut cfg: Config, path: Option<PathBuf>) -> Result<()> {
    match myriad::workers::worker_index() {
        Some(i) => {
            if let Some(m) = cfg.metrics.as_mut() {
                m.set_port(m.port().saturating_add(i as u16));
            }
            serve(cfg, path)
        }
        None if cfg.workers > 1 => {
            init_logging(&cfg);
            let exe = std::env::current_exe().context("locating the myriad binary")?;
            let code = myriad::workers::supervise(cfg.workers, |_| {
                let mut c = std::process::Command::new(&exe);
                c.args(std::env::args_os().skip(1));
                c
            })?;
            if code != 0 {
                anyhow::bail!("a worker kept failing; the supervisor stopped (exit {code})");
            }
            Ok(())
        }
        None => serve(cfg, path),
    }
}

fn load(path: Option<&std::path::Path>) -> Result<Config, config::ConfigError> {
    match path {
        Some(p) => config::load(p),
        None => config::parse("<embedded default>", config::DEFAULT_CONFIG, None),
    }
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log_level));
    // Colour only on a terminal: journald and files want plain text.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if cfg.log_json {
        b.json().try_init()
    } else {
        b.try_init()
    };
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    // Without NOTIFY_SOCKET this does nothing.
    let _ = sd_notify::notify(false, states);
}

/// `MONOTONIC_USEC` for `RELOADING=1`: CLOCK_MONOTONIC, as systemd reads it.
fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64).saturating_mul(1_000_000) + (t.tv_nsec as u64) / 1000
}

struct Server {
    registry: metrics::Registry,
    /// Readiness, as sd_notify says it: set right after READY=1, cleared
    /// while a reload is in progress and when shutdown begins. `/readyz`
    /// (health routes, metrics listener) answers from it.
    ready: Arc<AtomicBool>,
    metrics: Option<myriad::Engine>,
    /// Engines that stopped accepting and drain until their last connection
    /// is gone.
    /// Engines a reload replaced, serving their connections until they
    /// close, with when they started draining.
    draining: Vec<(Arc<Running>, Instant)>,
}

fn start_all(cfg: &Config, ready: &Arc<AtomicBool>) -> Result<Vec<Arc<Running>>> {
    let mut out = Vec::new();
    for s in &cfg.services {
        out.push(Arc::new(services::start(cfg, s, Vec::new(), ready)?));
        tracing::info!(service = %s.name, listen = ?s.listen, stack = ?s.stack, handler = ?s.handler, "service started");
    }
    Ok(out)
}

fn serve(cfg: Config, path: Option<PathBuf>) -> Result<()> {
    init_logging(&cfg);
    tracing::info!(config = %cfg.source, "myriad starting");
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    // Handlers first: a SIGHUP that comes while starting is a reload once
    // serving, never the default action (death). READY=1 comes after this.
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    // Not ready until every service is up and READY=1 is sent.
    let ready = Arc::new(AtomicBool::new(false));
    let registry: metrics::Registry = Arc::new(RwLock::new(start_all(&cfg, &ready)?));
    let metrics = match cfg.metrics {
        Some(addr) => {
            // one thread renders (a scrape asks every service loop); a
            // few scrapes may wait, more get 503
            let pool = myriad::Pool::new(1, 16);
            // worker 0 answers for every worker (see metrics::Peers)
            let peers = match myriad::workers::worker_index() {
                Some(0) if cfg.workers > 1 => (1..cfg.workers)
                    .map(|i| {
                        let mut a = addr;
                        if a.ip().is_unspecified() {
                            a.set_ip(if a.is_ipv4() {
                                std::net::Ipv4Addr::LOCALHOST.into()
                            } else {
                                std::net::Ipv6Addr::LOCALHOST.into()
                            });
                        }
                        a.set_port(a.port().saturating_add(i as u16));
                        a
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let svc = metrics::service(addr, registry.clone(), pool, ready.clone(), peers)?
                .idle_timeout(Some(Duration::from_secs(10)))
                .max_connections(4096);
            let e = myriad::Engine::builder()
                .threads(1)
                .backend(cfg.backend)
                .service(svc)
                .start()
                .context("metrics listener")?;
            tracing::info!(listen = %e.local_addrs(0)[0], "metrics at /metrics, health at /healthz and /readyz");
            Some(e)
        }
        None => None,
    };
    let mut server = Server {
        registry,
        ready,
        metrics,
        draining: Vec::new(),
    };
    let mut cfg = cfg;
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving"),
    ]);
    server.ready.store(true, Ordering::Release);
    // As sd_watchdog_enabled: a worker has WATCHDOG_USEC without WATCHDOG_PID.
    let watchdog = myriad::workers::watchdog_usec();
    let mut last_summary = Instant::now();
    let mut last_watchdog = Instant::now();
    let mut last_trim = Instant::now();
    let mut prev = total(&server);
    let mut loop_died = None;
    'run: loop {
        for sig in signals.pending() {
            match sig {
                SIGHUP => reload(&mut server, &mut cfg, path.as_deref()),
                _ => {
                    tracing::info!(signal = sig, "shutting down");
                    break 'run;
                }
            }
        }
        // Draining engines go when their last connection does, or at
        // drain_timeout (then they get shutdown_grace like a SIGTERM); at
        // most MAX_DRAINING generations stay, the oldest go first, so
        // threads and rings cannot pile up across reloads.
        let excess = server.draining.len().saturating_sub(MAX_DRAINING);
        for (i, (r, since)) in server.draining.iter().enumerate() {
            if i < excess || since.elapsed() >= cfg.drain_timeout {
                r.engine.shutdown(cfg.shutdown_grace);
            }
        }
        server.draining.retain(|(r, _)| {
            // not while an accept may still hand it a connection
            if !r.engine.is_accepting() && r.engine.stats().open == 0 {
                r.engine.shutdown(Duration::ZERO);
                false
            } else {
                true
            }
        });
        // A loop that ended on its own (a panic outside handler calls, a
        // backend error) lost its connections: exit non-zero so that the
        // supervisor or systemd starts a whole server again (its listener
        // is closed, so the other loops take the new connections meanwhile).
        let dead = server
            .registry
            .read()
            .map_or_else(|p| p.into_inner().clone(), |g| g.clone())
            .iter()
            .find(|r| r.engine.stopped_loops() > 0)
            .map(|r| r.config.name.clone());
        if let Some(name) = dead {
            tracing::error!(service = %name, "an event loop died; stopping so that the server is restarted");
            loop_died = Some(name);
            break 'run;
        }
        if watchdog.is_some_and(|w| last_watchdog.elapsed() >= w / 2) {
            notify(&[sd_notify::NotifyState::Watchdog]);
            last_watchdog = Instant::now();
        }
        if cfg.summary_secs > 0 && last_summary.elapsed() >= Duration::from_secs(cfg.summary_secs) {
            let now = total(&server);
            let secs = last_summary.elapsed().as_secs_f64();
            let rate = (now.reads.saturating_sub(prev.reads)) as f64 / secs;
            let errors = now.err_reset
                + now.err_idle_timeout
                + now.err_filter
                + now.err_slow_reader
                + now.err_input_overflow;
            tracing::info!(
                open = now.open,
                accepted = now.accepted,
                reads_per_sec = format!("{rate:.0}"),
                errors,
                "summary"
            );
            notify(&[sd_notify::NotifyState::Status(&format!(
                "{} connections open, {:.0} reads/s, {} errors",
                now.open, rate, errors
            ))]);
            prev = now;
            last_summary = Instant::now();
        }
        if last_trim.elapsed() >= TRIM_EVERY {
            // The allocator's arenas keep what connections freed; give it
            // back so that RSS follows the live heap (see myriad::trim_heap).
            let t = Instant::now();
            let released = myriad::trim_heap();
            tracing::debug!(
                released,
                took_us = t.elapsed().as_micros() as u64,
                "heap trimmed"
            );
            last_trim = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Draining from here on: load balancers polling /readyz stop sending
    // new clients while the grace period lets the current ones finish.
    server.ready.store(false, Ordering::Release);
    notify(&[sd_notify::NotifyState::Stopping]);
    let all: Vec<Arc<Running>> = match server.registry.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    // Graceful drain: stop accepting everywhere, tell handlers (WebSocket
    // peers get 1001), close what is left after the grace period.
    let draining: Vec<Arc<Running>> = server.draining.iter().map(|d| d.0.clone()).collect();
    for r in all.iter().chain(draining.iter()) {
        r.engine.shutdown(cfg.shutdown_grace);
    }
    for r in all.iter().chain(draining.iter()) {
        let _ = r.engine.wait();
    }
    if let Some(m) = &server.metrics {
        m.shutdown(Duration::ZERO);
        let _ = m.wait();
    }
    tracing::info!("stopped");
    match loop_died {
        Some(name) => anyhow::bail!("service {name:?}: an event loop died"),
        None => Ok(()),
    }
}

fn total(s: &Server) -> myriad::Stats {
    let all: Vec<Arc<Running>> = match s.registry.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    all.iter()
        .fold(myriad::Stats::default(), |a, r| a + r.engine.stats())
}

/// Sets readiness again when a reload ends, on every path out of it (each
/// of which sends READY=1 first).
struct ReadyAgain<'a>(&'a AtomicBool);

impl Drop for ReadyAgain<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Generations of replaced engines that may drain at once.
const MAX_DRAINING: usize = 4;

/// The listening sockets a new or changed service `s` takes over: those of
/// the running engines that the reload replaces (an engine kept as it is
/// keeps its own) for the addresses `s` listens on.
fn inherited(old: &[Arc<Running>], new: &Config, s: &config::ServiceConfig) -> services::Inherited {
    let mut out = Vec::new();
    for r in old {
        let kept = new
            .services
            .iter()
            .any(|n| n.name == r.config.name && *n == r.config);
        if kept {
            continue;
        }
        match r.engine.listeners(0) {
            Ok(ls) => out.extend(ls.into_iter().filter(|(a, _)| s.listen.contains(a))),
            Err(e) => {
                tracing::warn!(service = %r.config.name, error = %e, "cannot hand its listening sockets over; binding new ones")
            }
        }
    }
    out
}

/// SIGHUP: re-read the config; on any error keep everything as it is.
/// Unchanged services keep running (TLS certificates re-read); changed
/// ones get a new engine on the same port (`SO_REUSEPORT`) while the old
/// one stops accepting and drains; removed ones drain; new ones start.
fn reload(server: &mut Server, cfg: &mut Config, path: Option<&std::path::Path>) {
    // Not ready while reloading (as RELOADING=1 says); ready again with
    // READY=1 whatever the outcome.
    server.ready.store(false, Ordering::Release);
    let ready = Arc::clone(&server.ready);
    let _ready_again = ReadyAgain(&ready);
    notify(&[
        sd_notify::NotifyState::Reloading,
        sd_notify::NotifyState::Custom(&format!("MONOTONIC_USEC={}", monotonic_usec())),
    ]);
    let new = match load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload rejected; the running configuration stays");
            notify(&[sd_notify::NotifyState::Ready]);
            return;
        }
    };
    let old: Vec<Arc<Running>> = match server.registry.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    let mut next: Vec<Arc<Running>> = Vec::new();
    let mut started: Vec<Arc<Running>> = Vec::new();
    let mut failed = None;
    for s in &new.services {
        match old.iter().find(|r| r.config.name == s.name) {
            Some(r) if r.config == *s => {
                if let Err(e) = services::reload_tls(r) {
                    tracing::error!(service = %s.name, error = %e, "certificate reload failed; keeping the old ones");
                }
                next.push(r.clone());
            }
            _ => match services::start(&new, s, inherited(&old, &new, s), &server.ready) {
                Ok(r) => {
                    let r = Arc::new(r);
                    started.push(r.clone());
                    next.push(r);
                }
                Err(e) => {
                    failed = Some(format!("{e:#}"));
                    break;
                }
            },
        }
    }
    if let Some(e) = failed {
        tracing::error!(error = %e, "reload failed; the running configuration stays");
        // Engines started for the failed reload may already have accepted
        // connections (they shared the old sockets), and take what their
        // accepts' last look at those sockets' queues finds: they drain
        // like replaced engines, serving those connections, instead of
        // shutting them down (which would close them).
        for r in started {
            r.engine.stop_accepting();
            server.draining.push((r, Instant::now()));
        }
        notify(&[sd_notify::NotifyState::Ready]);
        return;
    }
    for r in &old {
        if !next.iter().any(|n| Arc::ptr_eq(n, r)) {
            tracing::info!(service = %r.config.name, "draining (removed or changed)");
            r.engine.stop_accepting();
            server.draining.push((r.clone(), Instant::now()));
        }
    }
    match server.registry.write() {
        Ok(mut g) => *g = next,
        Err(p) => *p.into_inner() = next,
    }
    *cfg = new;
    tracing::info!("configuration reloaded");
    notify(&[sd_notify::NotifyState::Ready]);
}
