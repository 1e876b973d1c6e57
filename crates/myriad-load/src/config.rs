//! From flags to a run: checks that need more than one flag, defaults, and
//! each process's share of the load.

use std::time::Duration;

use myriad::{BackendKind, ConnectOptions};

use crate::cli::{Args, BackendArg, Framing};
use crate::client::{Mode, Plan, Proto};
use crate::payload::Wire;
use crate::run::{Pacing, RunOpts};
use crate::tls::{TlsOpts, TlsVersion, Trust};

/// A usage error: one line naming the flag; exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(flag: &str, msg: impl std::fmt::Display) -> UsageError {
    UsageError(format!("invalid value for '{flag}': {msg}"))
}

/// The whole run, before it is split among processes.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The flags.
    pub args: Args,
    /// The plan (conn_base 0).
    pub plan: Plan,
    /// Measured time in echo mode (`None`: until `--messages` are done).
    pub duration: Option<Duration>,
    /// Threads per process.
    pub threads: usize,
}

/// Default measured time of the echo mode.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Checks the flags together and builds the run.
pub fn setup(args: &Args) -> Result<Setup, UsageError> {
    let scheme = args.target.scheme;
    let http = http_plan(args)?;
    let proto = match (scheme.is_ws(), args.framing, args.text) {
        (false, _, true) => return Err(usage("--text", "needs a ws:// or wss:// target")),
        (false, Framing::Lp32, false) if http.is_some() => {
            return Err(usage(
                "--framing",
                "lp32 applies to tcp:// and tls:// targets only",
            ))
        }
        (false, Framing::None, false) if http.is_some() => Proto::Http,
        (false, Framing::None, false) => Proto::Tcp(Wire::Raw),
        (false, Framing::Lp32, false) => Proto::Tcp(Wire::Lp32),
        (true, Framing::Lp32, _) => {
            return Err(usage(
                "--framing",
                "lp32 applies to tcp:// and tls:// targets only",
            ))
        }
        (true, Framing::None, text) => Proto::Ws { text },
    };
    if args.deflate && !scheme.is_ws() {
        return Err(usage("--deflate", "needs a ws:// or wss:// target"));
    }
    let (filter, tls_connector) = match tls_filter(args)? {
        Some((f, c)) => (Some(f), Some(c)),
        None => (None, None),
    };
    let n = args.connections;
    if u64::from(args.processes) > n {
        return Err(usage(
            "--processes",
            format!("{} processes for {n} connections", args.processes),
        ));
    }
    let mode = if let Some(dur) = args.hold {
        if dur.is_zero() {
            return Err(usage("--hold", "must be longer than 0"));
        }
        Mode::Hold {
            dur,
            sample: args.hold_sample / 100.0,
        }
    } else if args.connect_only {
        Mode::ConnectOnly
    } else {
        Mode::Echo
    };
    let send_after_recv = args.send_after_recv || args.think.is_some();
    if (send_after_recv || mode != Mode::Echo) && args.window != 1 {
        let why = if send_after_recv {
            "--send-after-recv keeps one message in flight"
        } else {
            "--hold and --connect-only echo one message at a time"
        };
        return Err(usage("--window", why));
    }
    let interval_ns = match (args.rate, args.rate_per_conn) {
        (Some(r), _) => Some(n as f64 / r),
        (_, Some(r)) => Some(1.0 / r),
        _ => None,
    }
    .map(|secs| (secs * 1e9).clamp(1.0, 1e15) as u64);
    let duration = match (mode, args.duration, args.messages) {
        (Mode::Echo, Some(d), _) => {
            if d.is_zero() {
                return Err(usage("--duration", "must be longer than 0"));
            }
            Some(d)
        }
        (Mode::Echo, None, Some(_)) => None,
        (Mode::Echo, None, None) => Some(DEFAULT_DURATION),
        _ => None,
    };
    let source_ips = args.source_ips.clone().map(|s| s.0).unwrap_or_default();
    if let Some(bad) = source_ips
        .iter()
        .find(|ip| ip.is_ipv4() != args.target.addr.is_ipv4())
    {
        return Err(usage(
            "--source-ips",
            format!("{bad} is not of the target's address family"),
        ));
    }
    if args.connect_timeout.is_zero() {
        return Err(usage("--connect-timeout", "must be longer than 0"));
    }
    if args.timeout.is_zero() {
        return Err(usage("--timeout", "must be longer than 0"));
    }
    let threads = args.threads.unwrap_or_else(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
        (cpus / args.processes as usize).max(1)
    });
    let plan = Plan {
        addr: args.target.addr,
        proto,
        tls_connector,
        ws_host: host_header(args),
        http,
        ws_path: args.target.path.clone(),
        ws_deflate: args.deflate,
        mode,
        size: args.size,
        window: args.window as u32,
        messages: if mode == Mode::Echo {
            args.messages
        } else {
            None
        },
        interval_ns,
        think: if send_after_recv {
            Some(args.think.unwrap_or(Duration::ZERO))
        } else {
            None
        },
        verify: !args.no_verify,
        timeout: args.timeout,
        connect_opts: ConnectOptions {
            timeout: args.connect_timeout,
            nodelay: true,
            linger_zero: !args.fin_close,
            filter,
            handshake_timeout: args.handshake_timeout,
            ..ConnectOptions::default()
        },
        source_ips,
        conn_base: 0,
        max_inflight: 1,
    };
    Ok(Setup {
        args: args.clone(),
        plan,
        duration,
        threads,
    })
}

/// The `Host` header of the target: the host as written (IPv6 in
/// brackets), with the port unless it is the scheme's default.
fn host_header(args: &Args) -> String {
    let t = &args.target;
    let host = if t.host.contains(':') {
        format!("[{}]", t.host)
    } else {
        t.host.clone()
    };
    if t.scheme.default_port() == Some(t.port) {
        host
    } else {
        format!("{host}:{}", t.port)
    }
}

/// The request and response plan of an http:// or https:// target
/// (`None` for the others); HTTP flags without an HTTP target are a usage
/// error.
fn http_plan(args: &Args) -> Result<Option<crate::http::HttpPlan>, UsageError> {
    if !args.target.scheme.is_http() {
        let given = [
            ("--method", args.method != "GET"),
            ("--expect-status", args.expect_status != 200),
            ("--expect-echo", args.expect_echo),
            ("--max-head", args.max_head != 16 << 10),
            ("--max-body", args.max_body != 64 << 20),
        ];
        if let Some((flag, _)) = given.iter().find(|g| g.1) {
            return Err(usage(flag, "needs an http:// or https:// target"));
        }
        return Ok(None);
    }
    let mut plan = crate::http::HttpPlan::new(&args.method, &args.target.path, &host_header(args));
    if args.expect_echo && !plan.body {
        return Err(usage(
            "--expect-echo",
            format!("{} sends no body to echo (use --method POST)", args.method),
        ));
    }
    plan.expect_status = args.expect_status;
    plan.echo = args.expect_echo;
    plan.max_head = args.max_head as usize;
    plan.max_body = args.max_body;
    Ok(Some(plan))
}

/// The TLS filter factory of a tls://, wss:// or https:// target (`None` for the
/// others); TLS flags without a TLS target are a usage error.
fn tls_filter(
    args: &Args,
) -> Result<Option<(myriad::FilterFactory, myriad_tls::TlsConnector)>, UsageError> {
    if !args.target.scheme.is_tls() {
        let given = [
            ("--ca", args.ca.is_some()),
            ("--insecure", args.insecure),
            ("--sni", args.sni.is_some()),
            ("--alpn", !args.alpn.is_empty()),
            ("--tls-resume", args.tls_resume),
            ("--tls-version", args.tls_version != TlsVersion::Any),
            ("--client-cert", args.client_cert.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|g| g.1) {
            return Err(usage(flag, "needs a tls://, wss:// or https:// target"));
        }
        return Ok(None);
    }
    if args.handshake_timeout.is_zero() {
        return Err(usage("--handshake-timeout", "must be longer than 0"));
    }
    let trust = match (&args.ca, args.insecure) {
        (Some(ca), _) => Trust::Ca(ca.clone()),
        (None, true) => Trust::Insecure,
        (None, false) => match crate::tls::system_ca() {
            Some(path) => Trust::Ca(path),
            None => {
                return Err(usage(
                    "--ca",
                    "no system CA bundle found: give --ca FILE (or --insecure for testing)",
                ))
            }
        },
    };
    if let Some(p) = args.alpn.iter().find(|p| p.is_empty() || p.len() > 255) {
        return Err(usage(
            "--alpn",
            format!("{p:?} is not a protocol name (1..255 bytes)"),
        ));
    }
    // An https:// target offers http/1.1 unless told otherwise, as HTTP
    // clients do (a server that insists on ALPN then agrees).
    let alpn = if args.alpn.is_empty() && args.target.scheme.is_http() {
        vec!["http/1.1".to_string()]
    } else {
        args.alpn.clone()
    };
    let opts = TlsOpts {
        trust,
        server_name: args.sni.clone().unwrap_or_else(|| args.target.host.clone()),
        alpn,
        resume: args.tls_resume,
        tickets: usize::try_from(args.connections)
            .unwrap_or(usize::MAX)
            .clamp(64, 65_536),
        version: args.tls_version,
        client_cert: args.client_cert.clone().zip(args.client_key.clone()),
    };
    opts.factory()
        .map(Some)
        .map_err(|e| usage(e.flag, e.message))
}

impl Setup {
    /// Connections of process `i` of `p`, and the global index of its
    /// first.
    pub fn share(&self, i: u32, p: u32) -> (u64, u64) {
        let n = self.args.connections;
        let (per, rem) = (n / p as u64, n % p as u64);
        let i = i as u64;
        (per + u64::from(i < rem), i * per + i.min(rem))
    }

    /// What process `i` of `p` runs.
    pub fn run_opts(&self, i: u32, p: u32) -> RunOpts {
        let (conns, base) = self.share(i, p);
        let frac = conns as f64 / self.args.connections as f64;
        let pacing = match (self.args.connect_rate, self.args.batch) {
            (Some(r), _) => Pacing::Rate((r * frac).max(1e-3)),
            (None, Some(b)) => Pacing::Batch {
                size: ((b as f64 * frac).ceil() as u64).max(1),
                delay: self.args.batch_delay,
            },
            _ => Pacing::Unpaced,
        };
        let mut plan = self.plan.clone();
        plan.conn_base = base;
        RunOpts {
            plan,
            conns,
            threads: self.threads,
            backend: match self.args.backend {
                BackendArg::Auto => BackendKind::Auto,
                BackendArg::IoUring => BackendKind::IoUring,
                BackendArg::Epoll => BackendKind::Epoll,
            },
            pacing,
            concurrency: self.args.connect_concurrency,
            warmup: self.args.warmup,
            duration: self.duration,
            connect_timeout: self.args.connect_timeout,
            target: self.args.target.url.clone(),
            batch_wait: self.args.batch_wait,
        }
    }

    /// Sockets process `i` of `p` has open at most at once.
    pub fn max_open(&self, i: u32, p: u32) -> u64 {
        let (conns, _) = self.share(i, p);
        if self.args.connect_only {
            conns.min(self.args.connect_concurrency)
        } else {
            conns
        }
    }

    /// Longest a process may take, for the parent's watchdog.
    pub fn max_run_time(&self) -> Duration {
        let o = self.run_opts(0, self.args.processes);
        let pacing = match o.pacing {
            Pacing::Unpaced => Duration::ZERO,
            Pacing::Rate(r) => Duration::from_secs_f64(o.conns as f64 / r),
            Pacing::Batch { size, delay } => delay * o.conns.div_ceil(size).min(1 << 20) as u32,
        };
        let rounds = o.conns.div_ceil(o.concurrency).min(1 << 20) as u32;
        let connect = pacing + (o.connect_timeout + o.plan.timeout) * rounds;
        let main = match o.plan.mode {
            Mode::Hold { dur, .. } => dur,
            Mode::ConnectOnly => Duration::ZERO,
            Mode::Echo => o.duration.unwrap_or(Duration::from_secs(86_400)) + o.warmup,
        };
        let gap = o
            .plan
            .interval_ns
            .map(Duration::from_nanos)
            .unwrap_or_default();
        connect
            + main
            + o.plan.timeout * 2
            + gap
            + crate::run::TEARDOWN_GRACE
            + Duration::from_secs(60)
    }
}

/// Makes sure a process may open `conns` sockets: raises the soft
/// open-files limit up to the hard one if needed.
pub fn check_fd_limit(conns: u64, processes: u32) -> Result<(), UsageError> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let need = conns + 64;
    let lim = getrlimit(Resource::Nofile);
    let soft = lim.current.unwrap_or(u64::MAX);
    if soft >= need {
        return Ok(());
    }
    let hard = lim.maximum.unwrap_or(u64::MAX);
    if hard >= need {
        let new = rustix::process::Rlimit {
            current: Some(need),
            maximum: lim.maximum,
        };
        if setrlimit(Resource::Nofile, new).is_ok() {
            return Ok(());
        }
    }
    let per = hard.min(soft.max(hard)).saturating_sub(64).max(1);
    let total = conns * processes as u64;
    let suggest = total.div_ceil(per);
    Err(usage(
        "--connections",
        format!(
            "{conns} connections in one process exceed the open-files limit ({hard}); \
             use --processes {suggest} or more"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn setup_of(args: &[&str]) -> Result<Setup, UsageError> {
        let mut v = vec!["myriad-load"];
        v.extend_from_slice(args);
        setup(&Args::try_parse_from(v).unwrap())
    }

    #[test]
    fn shares_cover_every_connection_once() {
        let s = setup_of(&["tcp://127.0.0.1:1", "-c", "10", "-p", "3"]).unwrap();
        let shares: Vec<_> = (0..3).map(|i| s.share(i, 3)).collect();
        assert_eq!(shares, vec![(4, 0), (3, 4), (3, 7)]);
    }

    #[test]
    fn connect_only_needs_only_its_concurrency_in_sockets() {
        let s = setup_of(&["tcp://127.0.0.1:1", "-c", "50k", "--connect-only"]).unwrap();
        assert_eq!(s.max_open(0, 1), 1000);
        let s = setup_of(&["tcp://127.0.0.1:1", "-c", "50k", "-p", "4"]).unwrap();
        assert_eq!(s.max_open(0, 4), 12_500);
    }

    #[test]
    fn combinations_are_checked() {
        assert!(setup_of(&["tcp://127.0.0.1:1", "--text"]).is_err());
        assert!(setup_of(&["ws://127.0.0.1:1", "--framing", "lp32"]).is_err());
        assert!(setup_of(&["tcp://127.0.0.1:1", "--think", "1ms", "-w", "4"]).is_err());
        assert!(setup_of(&["tcp://127.0.0.1:1", "-c", "2", "-p", "3"]).is_err());
        assert!(setup_of(&["tcp://127.0.0.1:1", "--source-ips", "::1"]).is_err());
        assert!(setup_of(&["tcp://127.0.0.1:1", "--method", "POST"]).is_err());
        assert!(setup_of(&["ws://127.0.0.1:1", "--expect-echo"]).is_err());
        assert!(setup_of(&["http://127.0.0.1:1", "--expect-echo"]).is_err());
        assert!(setup_of(&["http://127.0.0.1:1", "--framing", "lp32"]).is_err());
        assert!(setup_of(&["http://127.0.0.1:1", "--text"]).is_err());
        let s = setup_of(&["http://[::1]:81/x", "--method", "PUT", "--expect-echo"]).unwrap();
        assert_eq!(s.plan.proto, Proto::Http);
        let h = s.plan.http.expect("http plan");
        assert!(h.echo && h.body);
        assert_eq!(h.prefix, b"PUT /x HTTP/1.1\r\nHost: [::1]:81\r\n");
        let s = setup_of(&["http://localhost/", "--method", "HEAD"]).unwrap();
        assert!(s.plan.http.is_some_and(|h| h.head_method && !h.body));
        assert_eq!(s.plan.ws_host, "localhost");
        let s = setup_of(&["tcp://127.0.0.1:1", "-c", "100", "--rate", "1000"]).unwrap();
        assert_eq!(s.plan.interval_ns, Some(100_000_000));
        assert_eq!(s.duration, Some(DEFAULT_DURATION));
        let s = setup_of(&["tcp://127.0.0.1:1", "-m", "5"]).unwrap();
        assert_eq!(s.duration, None);
    }
}
