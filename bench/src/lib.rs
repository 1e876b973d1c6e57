//! Shared pieces of the Myriad benchmark programs.
//!
//! The benchmark is a set of small programs rather than timed tests (see
//! `DESIGN.md`, "Testing"): baseline servers (`echo-tokio`, `echo-epoll`,
//! `tls-tokio`), load generators (`loadgen`, `ws-loadgen`, `tls-load`), idle
//! connection holders (`idle-conns`, `ws-idle`) and the drivers that run
//! them against Myriad and print ratios (`bench-echo`, `bench-ws`,
//! `bench-tls`, `bench-compare`). Every driver runs on [`harness`]: starting
//! and pinning servers, sampling their CPU and memory, interleaved rounds,
//! medians of paired ratios, the disturbed-machine detector and the report.
//! The rest of this library is what the load programs share: the payload
//! pattern, mass non-blocking connects, the epoll wait step, the closed-loop
//! generators' framing-independent parts, the idle holders' hold logic,
//! `/proc` readers and CPU pinning.

pub mod harness;

pub use harness::{
    median, paired_ratio_median, Compare, CompareArgs, Load, Rig, Run, Server, ServerSpec, Table,
};

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{self, AddressFamily, SocketFlags, SocketType};

pub mod pattern {
    //! Deterministic message payloads, checkable without allocation.
    //!
    //! Message `seq` on connection `conn` is `size` bytes: a 12-byte header
    //! (`conn` as u32 LE, then `seq` as u64 LE, truncated when `size < 12`)
    //! followed by a slice of a fixed template that starts at an offset
    //! derived from `conn` and `seq`. Any byte of any message can therefore
    //! be checked with a `memcmp` against the template.

    const HEADER: usize = 12;
    const SPREAD: usize = 251;

    /// Generator and checker of message payloads of one size.
    #[derive(Debug, Clone)]
    pub struct Pattern {
        size: usize,
        template: Vec<u8>,
    }

    impl Pattern {
        /// Payloads of `size` bytes (`size >= 1`).
        pub fn new(size: usize) -> Self {
            let len = size + SPREAD + 1;
            let template = (0..len)
                .map(|i| (i.wrapping_mul(7).wrapping_add(13) & 0xff) as u8)
                .collect();
            Self { size, template }
        }

        /// Message size in bytes.
        pub fn size(&self) -> usize {
            self.size
        }

        fn header(conn: u32, seq: u64) -> [u8; HEADER] {
            let mut h = [0u8; HEADER];
            h[..4].copy_from_slice(&conn.to_le_bytes());
            h[4..].copy_from_slice(&seq.to_le_bytes());
            h
        }

        fn body_start(conn: u32, seq: u64) -> usize {
            ((u64::from(conn).wrapping_mul(131).wrapping_add(seq)) % SPREAD as u64) as usize
        }

        /// Writes message `seq` of connection `conn` into `out`
        /// (`out.len()` must equal the message size).
        pub fn fill(&self, conn: u32, seq: u64, out: &mut [u8]) {
            debug_assert_eq!(out.len(), self.size);
            let h = Self::header(conn, seq);
            let hl = HEADER.min(self.size);
            out[..hl].copy_from_slice(&h[..hl]);
            if self.size > HEADER {
                let start = Self::body_start(conn, seq) + HEADER;
                out[HEADER..].copy_from_slice(&self.template[start..start + self.size - HEADER]);
            }
        }

        /// Checks `data`, which must be bytes `off..off + data.len()` of
        /// message `seq` of connection `conn` (`off + data.len() <= size`).
        pub fn check(&self, conn: u32, seq: u64, off: usize, data: &[u8]) -> bool {
            let end = off + data.len();
            if end > self.size {
                return false;
            }
            let mut ok = true;
            if off < HEADER {
                let h = Self::header(conn, seq);
                let hend = end.min(HEADER);
                ok &= data[..hend - off] == h[off..hend];
            }
            if end > HEADER {
                let boff = off.max(HEADER);
                let start = Self::body_start(conn, seq) + boff;
                ok &= data[boff - off..] == self.template[start..start + (end - boff)];
            }
            ok
        }
    }

    #[cfg(test)]
    mod tests {
        use super::Pattern;

        #[test]
        fn fill_then_check_any_split() {
            for size in [1usize, 5, 12, 13, 64, 512] {
                let p = Pattern::new(size);
                let mut m = vec![0u8; size];
                p.fill(7, 42, &mut m);
                for split in 0..=size {
                    assert!(p.check(7, 42, 0, &m[..split]));
                    assert!(p.check(7, 42, split, &m[split..]));
                }
                assert!(!p.check(8, 42, 0, &m) || size < 1);
                assert!(!p.check(7, 43, 0, &m) || size <= 4);
                if size > 12 {
                    let mut bad = m.clone();
                    bad[size - 1] ^= 1;
                    assert!(!p.check(7, 42, 0, &bad));
                }
            }
        }
    }
}

/// Opens a non-blocking IPv4/IPv6 TCP socket with `TCP_NODELAY`.
pub fn tcp_socket(addr: &SocketAddr) -> Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .context("socket()")?;
    net::sockopt::set_tcp_nodelay(&fd, true).context("TCP_NODELAY")?;
    Ok(fd)
}

/// Establishes `n` non-blocking TCP connections to `addr` (each with
/// `TCP_NODELAY`), at most `max_in_flight` handshakes at a time so that a
/// server's listen backlog is not flooded. Refused or reset attempts are
/// retried (a full accept queue on loopback shows up as slow or refused
/// connects). Fails if not all are established within `timeout`.
pub fn connect_many(
    addr: SocketAddr,
    n: usize,
    max_in_flight: usize,
    timeout: Duration,
) -> Result<Vec<OwnedFd>> {
    const MAX_ATTEMPTS: u32 = 20;
    let deadline = Instant::now() + timeout;
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).context("epoll_create")?;
    // Slot per connection: the socket while its handshake is in flight.
    let mut pending: Vec<Option<OwnedFd>> = (0..n).map(|_| None).collect();
    let mut attempts = vec![0u32; n];
    let mut done: Vec<Option<OwnedFd>> = (0..n).map(|_| None).collect();
    let mut retry: Vec<usize> = Vec::new();
    let mut next = 0usize;
    let mut in_flight = 0usize;
    let mut established = 0usize;
    let mut events = Vec::with_capacity(1024);
    let max_in_flight = max_in_flight.max(1);

    // Starts connection `i`; returns true if it is now in flight.
    let start = |i: usize,
                 pending: &mut Vec<Option<OwnedFd>>,
                 done: &mut Vec<Option<OwnedFd>>,
                 attempts: &mut Vec<u32>|
     -> Result<bool> {
        attempts[i] += 1;
        let fd = tcp_socket(&addr)?;
        match net::connect(&fd, &addr) {
            Ok(()) => {
                done[i] = Some(fd);
                Ok(false)
            }
            Err(Errno::INPROGRESS) | Err(Errno::AGAIN) => {
                epoll::add(
                    &ep,
                    &fd,
                    epoll::EventData::new_u64(i as u64),
                    epoll::EventFlags::OUT,
                )
                .context("epoll_ctl(ADD)")?;
                pending[i] = Some(fd);
                Ok(true)
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!("connect({addr})"))),
        }
    };

    let mut loops = 0u64;
    while established < n {
        loops += 1;
        if loops > 100_000_000 {
            bail!("connect loop did not converge");
        }
        let now = Instant::now();
        if now >= deadline {
            bail!(
                "only {established} of {n} connections to {addr} established within {:.1}s",
                timeout.as_secs_f64()
            );
        }
        // Keep the pipeline of handshakes full: retries first.
        while in_flight < max_in_flight {
            let i = if let Some(i) = retry.pop() {
                i
            } else if next < n {
                next += 1;
                next - 1
            } else {
                break;
            };
            if start(i, &mut pending, &mut done, &mut attempts)? {
                in_flight += 1;
            } else {
                established += 1;
            }
        }
        if established >= n {
            break;
        }
        let left = deadline.saturating_duration_since(now);
        wait_events(&ep, &mut events, left.min(Duration::from_millis(100)))?;
        for ev in events.iter() {
            let i = ev.data.u64() as usize;
            let Some(fd) = pending.get_mut(i).and_then(Option::take) else {
                continue;
            };
            in_flight -= 1;
            epoll::delete(&ep, &fd).context("epoll_ctl(DEL)")?;
            match net::sockopt::socket_error(&fd).context("SO_ERROR")? {
                Ok(()) => {
                    done[i] = Some(fd);
                    established += 1;
                }
                Err(e) => {
                    drop(fd);
                    if attempts[i] >= MAX_ATTEMPTS {
                        bail!("connect({addr}) failed {MAX_ATTEMPTS} times, last error: {e}");
                    }
                    // Back off a little: the listener is probably saturated.
                    std::thread::sleep(Duration::from_millis(5));
                    retry.push(i);
                }
            }
        }
    }
    let fds: Vec<OwnedFd> = done.into_iter().flatten().collect();
    if fds.len() != n {
        bail!("internal error: {} of {n} connections collected", fds.len());
    }
    Ok(fds)
}

pub mod procfs {
    //! Readers for `/proc/PID/stat` and `/proc/PID/status`.

    use anyhow::{bail, Context, Result};

    /// Clock ticks per second used by `/proc/PID/stat` (`sysconf(_SC_CLK_TCK)`).
    pub fn clock_ticks_per_second() -> u64 {
        rustix::param::clock_ticks_per_second()
    }

    /// `utime + stime` of process `pid` (all its threads, including exited
    /// ones), in clock ticks: fields 14 and 15 of `/proc/PID/stat`.
    pub fn cpu_ticks(pid: u32) -> Result<u64> {
        cpu_ticks_split(pid).map(|(u, s)| u + s)
    }

    /// `(utime, stime)` of process `pid`: its user and its system (kernel)
    /// CPU time, in clock ticks, as [`cpu_ticks`] reads them.
    pub fn cpu_ticks_split(pid: u32) -> Result<(u64, u64)> {
        let path = format!("/proc/{pid}/stat");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_cpu_ticks_split(&text).with_context(|| format!("parsing {path}"))
    }

    /// Parses utime+stime from the text of a `/proc/PID/stat` file.
    pub fn parse_cpu_ticks(text: &str) -> Result<u64> {
        parse_cpu_ticks_split(text).map(|(u, s)| u + s)
    }

    /// Parses `(utime, stime)` from the text of a `/proc/PID/stat` file.
    pub fn parse_cpu_ticks_split(text: &str) -> Result<(u64, u64)> {
        // The command name (field 2) is in parentheses and may contain
        // spaces or ')' itself: fields after it start past the last ')'.
        let Some(close) = text.rfind(')') else {
            bail!("no ')' in stat line");
        };
        // After ')' come field 3 (state), 4, ...; utime is field 14.
        let mut fields = text[close + 1..].split_ascii_whitespace();
        let utime = fields.nth(14 - 3).context("no utime field")?;
        let stime = fields.next().context("no stime field")?;
        let u: u64 = utime.parse().context("utime")?;
        let s: u64 = stime.parse().context("stime")?;
        Ok((u, s))
    }

    /// Busy clock ticks (everything but idle and iowait) of the given CPUs,
    /// summed, from `/proc/stat`.
    pub fn cpus_busy_ticks(cpus: &[usize]) -> Result<u64> {
        let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        parse_cpus_busy(&text, cpus).context("parsing /proc/stat")
    }

    /// Parses the busy ticks of `cpus` from the text of `/proc/stat`.
    pub fn parse_cpus_busy(text: &str, cpus: &[usize]) -> Result<u64> {
        let mut total = 0u64;
        let mut found = 0usize;
        for line in text.lines() {
            let mut it = line.split_ascii_whitespace();
            let Some(name) = it.next() else { continue };
            let Some(n) = name
                .strip_prefix("cpu")
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            if !cpus.contains(&n) {
                continue;
            }
            // user nice system idle iowait irq softirq steal (guest is in user)
            let v: Vec<u64> = it.take(8).map(|x| x.parse().unwrap_or(0)).collect();
            if v.len() < 8 {
                bail!("short cpu{n} line");
            }
            total += v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
            found += 1;
        }
        if found != cpus.len() {
            bail!("not all of CPUs {cpus:?} found");
        }
        Ok(total)
    }

    /// Resident set size of process `pid` in bytes (`VmRSS` of
    /// `/proc/PID/status`).
    pub fn rss_bytes(pid: u32) -> Result<u64> {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_rss(&text).with_context(|| format!("parsing {path}"))
    }

    /// Parses `VmRSS` (in bytes) from the text of a `/proc/PID/status` file.
    pub fn parse_rss(text: &str) -> Result<u64> {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("VmRSS:") {
                let mut it = rest.split_ascii_whitespace();
                let kb: u64 = it.next().context("VmRSS value")?.parse()?;
                return Ok(kb * 1024);
            }
        }
        bail!("no VmRSS line")
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn stat_parse() {
            let line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 500 0 0 0 \
                        17 5 0 0 20 0 1 0 100 1000 200 18446744073709551615";
            assert_eq!(super::parse_cpu_ticks(line).unwrap(), 22);
            assert_eq!(super::parse_cpu_ticks_split(line).unwrap(), (17, 5));
        }

        #[test]
        fn stat_cpus_parse() {
            let text = "cpu  10 0 10 100 0 0 0 0 0 0\n\
                        cpu0 1 2 3 100 7 4 5 6 0 0\n\
                        cpu1 10 0 10 100 0 0 0 0 0 0\nintr 5\n";
            assert_eq!(super::parse_cpus_busy(text, &[0]).unwrap(), 21);
            assert_eq!(super::parse_cpus_busy(text, &[0, 1]).unwrap(), 41);
            assert!(super::parse_cpus_busy(text, &[2]).is_err());
        }

        #[test]
        fn status_parse() {
            let text = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    2048 kB\n";
            assert_eq!(super::parse_rss(text).unwrap(), 2048 * 1024);
        }

        #[test]
        fn self_readable() {
            let pid = std::process::id();
            super::cpu_ticks(pid).unwrap();
            assert!(super::rss_bytes(pid).unwrap() > 0);
        }
    }
}

pub mod affinity {
    //! CPU pinning through `sched_setaffinity`.

    use anyhow::{Context, Result};
    use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

    /// Number of CPUs in this thread's current affinity mask.
    pub fn allowed_cpus() -> Result<Vec<usize>> {
        let set = sched_getaffinity(None).context("sched_getaffinity")?;
        Ok((0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect())
    }

    /// Pins the calling thread (and so every process or thread it starts
    /// afterwards) to `cpu`.
    pub fn pin_current_thread(cpu: usize) -> Result<()> {
        let mut set = CpuSet::new();
        set.set(cpu);
        sched_setaffinity(None, &set).with_context(|| format!("sched_setaffinity(cpu {cpu})"))
    }

    /// Runs `f` with the calling thread pinned to `cpu`, then restores the
    /// previous mask. A process spawned inside `f` inherits the pinning
    /// from its first instruction on, before it starts any threads.
    pub fn with_cpu<T>(cpu: usize, f: impl FnOnce() -> T) -> Result<T> {
        let old = sched_getaffinity(None).context("sched_getaffinity")?;
        pin_current_thread(cpu)?;
        let out = f();
        sched_setaffinity(None, &old).context("restoring sched_setaffinity")?;
        Ok(out)
    }
}

/// Parses a socket address given as `host:port`, `:port` or `port`
/// (the latter two mean 127.0.0.1).
pub fn parse_addr(s: &str) -> Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let port = s.strip_prefix(':').unwrap_or(s);
    let port: u16 = port
        .parse()
        .with_context(|| format!("not an address or port: {s:?}"))?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Reads (`recv`) as many bytes as available from a non-blocking socket
/// into `buf`: `Ok(Some(n))` with `n > 0`, `Ok(None)` if nothing was ready,
/// `Ok(Some(0))` at end of stream. `recv`/`send` rather than `read`/`write`
/// as the Rust standard library (and so tokio) does: they skip the VFS layer.
pub fn read_nb(fd: impl AsFd, buf: &mut [u8]) -> rustix::io::Result<Option<usize>> {
    for _ in 0..1000 {
        match net::recv(&fd, &mut *buf, net::RecvFlags::empty()) {
            Ok((n, _)) => return Ok(Some(n)),
            Err(Errno::AGAIN) => return Ok(None),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::INTR)
}

/// Writes (`send`, `MSG_NOSIGNAL`) as much of `buf` as the socket takes
/// without blocking; returns the number of bytes written (0 if the socket
/// buffer is full).
pub fn write_nb(fd: impl AsFd, buf: &[u8]) -> rustix::io::Result<usize> {
    for _ in 0..1000 {
        match net::send(&fd, buf, net::SendFlags::NOSIGNAL) {
            Ok(n) => return Ok(n),
            Err(Errno::AGAIN) => return Ok(0),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::INTR)
}

/// A `Timespec` for `d`, for `epoll::wait`.
pub fn timespec(d: Duration) -> rustix::event::Timespec {
    rustix::event::Timespec {
        tv_sec: d.as_secs() as _,
        tv_nsec: d.subsec_nanos() as _,
    }
}

/// Waits up to `timeout` for events on `ep`, into `events` (cleared first).
///
/// Every event loop here waits towards a deadline of its own and re-checks
/// it on waking, so a signal interrupting the wait (`EINTR`) is just an
/// early wake-up rather than an error; only real failures are returned.
#[inline]
pub fn wait_events(ep: impl AsFd, events: &mut Vec<epoll::Event>, timeout: Duration) -> Result<()> {
    let ts = timespec(timeout);
    events.clear();
    match epoll::wait(&ep, rustix::buffer::spare_capacity(events), Some(&ts)) {
        Ok(_) | Err(Errno::INTR) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context("epoll_wait")),
    }
}

pub mod idle {
    //! What the idle-connection holders (`idle-conns`, `ws-idle`) share: the
    //! checks of their timing flags and the hold after `READY`, so the
    //! driver can treat both the same way.

    use std::io::{Read, Write};
    use std::time::Duration;

    use anyhow::{bail, Result};

    /// Rejects hold and connect times that would make the holder exit at
    /// once, never, or panic when turned into a `Duration`, with the one
    /// message the driver's logs have always shown for either flag.
    pub fn check_times(hold_secs: f64, connect_timeout: f64) -> Result<()> {
        let hold_ok = hold_secs.is_finite() && hold_secs >= 0.0;
        let timeout_ok = connect_timeout.is_finite() && connect_timeout > 0.0;
        if !(hold_ok && timeout_ok) {
            bail!("--hold-secs and --connect-timeout must be positive numbers");
        }
        Ok(())
    }

    /// Prints `READY n` (flushed: the driver samples the server's memory
    /// when it reads that line), then holds until stdin closes or anything
    /// arrives on it (the driver is done measuring) or `hold_secs` pass (the
    /// driver died without closing it). The caller keeps the connections
    /// open across this call and closes them afterwards.
    pub fn ready_then_hold(n: usize, hold_secs: f64) -> Result<()> {
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "READY {n}")?;
            out.flush()?;
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut b = [0u8; 64];
            let _ = std::io::stdin().read(&mut b);
            let _ = tx.send(());
        });
        let _ = rx.recv_timeout(Duration::from_secs_f64(hold_secs));
        Ok(())
    }
}

pub mod closed_loop {
    //! The framing-independent parts of the closed-loop echo load
    //! generators (`loadgen` over raw TCP, `ws-loadgen` over WebSocket):
    //! flags, setup, per-connection state, the measured window and the
    //! `RESULT` line. Keeping them in one place keeps the two generators'
    //! flags, timing and output identical, so the driver parses both alike
    //! and their figures compare. The per-message code (queueing, reading,
    //! checking) stays in each program, where the framing differs.

    use std::io::Write;
    use std::net::SocketAddr;
    use std::os::fd::OwnedFd;
    use std::time::{Duration, Instant};

    use anyhow::{bail, Context, Result};
    use rustix::event::epoll::{self, EventData, EventFlags};

    /// Size of the read buffer shared by all connections: large enough
    /// that one `recv` normally drains a socket, small enough for the cache.
    pub const READ_BUF: usize = 256 * 1024;

    /// Errors beyond this many are counted but not printed, so that a
    /// failing server does not flood the driver's log.
    const MAX_REPORTED_ERRORS: u64 = 5;

    /// The command-line flags both generators take, flattened into each
    /// program's own parser (which supplies its `--help` title).
    #[derive(clap::Args, Debug)]
    pub struct LoadArgs {
        /// Server address (`host:port`).
        #[arg(long)]
        pub addr: String,
        /// Number of connections.
        #[arg(long, default_value_t = 100)]
        pub connections: usize,
        /// Message size in bytes.
        #[arg(long, default_value_t = 64)]
        pub size: usize,
        /// Messages in flight per connection (1 = ping-pong).
        #[arg(long, default_value_t = 1)]
        pub window: usize,
        /// Warm-up seconds before the measured window.
        #[arg(long, default_value_t = 1.0)]
        pub warmup: f64,
        /// Length of the measured window in seconds.
        #[arg(long, default_value_t = 5.0)]
        pub duration: f64,
        /// Seconds allowed for establishing all connections.
        #[arg(long, default_value_t = 30.0)]
        pub connect_timeout: f64,
        /// Connection handshakes in flight at once while connecting.
        #[arg(long, default_value_t = 256)]
        pub connect_batch: usize,
        /// Pin this process to the given CPU.
        #[arg(long)]
        pub cpu: Option<usize>,
    }

    /// The validated flags, plus the established connections, so a program
    /// cannot start measuring with unchecked values.
    pub struct Setup {
        /// The server address.
        pub addr: SocketAddr,
        /// Warm-up before the measured window.
        pub warmup: Duration,
        /// Length of the measured window.
        pub duration: Duration,
        /// Time allowed for connecting (and for any handshake after it).
        pub connect_timeout: Duration,
        /// The connections, non-blocking, `TCP_NODELAY`.
        pub fds: Vec<OwnedFd>,
    }

    /// Turns a seconds flag into a `Duration`, naming the flag on bad
    /// input instead of letting `Duration::from_secs_f64` panic.
    pub fn secs(s: f64, what: &str) -> Result<Duration> {
        if !(s.is_finite() && s >= 0.0) {
            bail!("--{what} must be a non-negative number of seconds");
        }
        Ok(Duration::from_secs_f64(s))
    }

    impl LoadArgs {
        /// Checks the flags, pins the process if asked (before connecting,
        /// so every socket is set up on the measuring CPU) and connects.
        pub fn setup(&self) -> Result<Setup> {
            let addr = crate::parse_addr(&self.addr)?;
            if self.connections == 0 || self.size == 0 || self.window == 0 {
                bail!("--connections, --size and --window must be at least 1");
            }
            if self.connections > u32::MAX as usize {
                bail!("too many connections");
            }
            let warmup = secs(self.warmup, "warmup")?;
            let duration = secs(self.duration, "duration")?;
            let connect_timeout = secs(self.connect_timeout, "connect-timeout")?;
            if let Some(cpu) = self.cpu {
                crate::affinity::pin_current_thread(cpu)?;
            }
            let fds =
                crate::connect_many(addr, self.connections, self.connect_batch, connect_timeout)?;
            Ok(Setup {
                addr,
                warmup,
                duration,
                connect_timeout,
                fds,
            })
        }
    }

    /// Exits with the generators' convention: 0 if every message was
    /// echoed correctly, 1 if any connection failed, 2 if the run itself
    /// could not be done; the driver tells these apart.
    pub fn exit(prog: &str, res: Result<u64>) -> ! {
        match res {
            Ok(errors) => std::process::exit(if errors > 0 { 1 } else { 0 }),
            Err(e) => {
                eprintln!("{prog}: error: {e:#}");
                std::process::exit(2);
            }
        }
    }

    /// One connection's state. Public fields because the per-message code
    /// lives in each program and must stay as cheap as a local struct.
    pub struct Conn {
        /// The socket (registered edge-triggered for input and output).
        pub fd: OwnedFd,
        /// Connection number, part of every payload.
        pub id: u32,
        /// Messages queued for sending so far (the next one to send is `sent`).
        pub sent: u64,
        /// Messages fully echoed back so far (the one being received is `done`).
        pub done: u64,
        /// Bytes of message `done` received so far.
        pub recv_off: usize,
        /// Bytes queued but not yet written: `out[out_off..]`. After a short
        /// write the rest goes out on the next `EPOLLOUT` edge.
        pub out: Vec<u8>,
        /// See `out`.
        pub out_off: usize,
    }

    impl Conn {
        /// Writes what is queued with one `send`. On a short write the rest
        /// waits for the next `EPOLLOUT` edge (the socket is registered for
        /// it once), so no `epoll_ctl` is ever needed after setup.
        #[inline]
        pub fn flush(&mut self) -> Result<()> {
            if self.out_off == self.out.len() {
                return Ok(());
            }
            let w = crate::write_nb(&self.fd, &self.out[self.out_off..]).context("write")?;
            self.out_off += w;
            if self.out_off == self.out.len() {
                self.out.clear();
                self.out_off = 0;
            }
            Ok(())
        }
    }

    /// Registers every connection once, edge-triggered for input and
    /// output, and reserves `out_capacity` bytes of output buffer each, so
    /// the measured window needs neither `epoll_ctl` nor allocation.
    pub fn register(
        fds: Vec<OwnedFd>,
        out_capacity: usize,
    ) -> Result<(OwnedFd, Vec<Option<Conn>>)> {
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).context("epoll_create")?;
        let mut conns: Vec<Option<Conn>> = Vec::with_capacity(fds.len());
        for (i, fd) in fds.into_iter().enumerate() {
            epoll::add(
                &ep,
                &fd,
                EventData::new_u64(i as u64),
                EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET,
            )
            .context("epoll_ctl")?;
            conns.push(Some(Conn {
                fd,
                id: i as u32,
                sent: 0,
                done: 0,
                recv_off: 0,
                out: Vec::with_capacity(out_capacity),
                out_off: 0,
            }));
        }
        Ok((ep, conns))
    }

    /// Counts connection failures and prints the first few, so one bad
    /// run shows its cause without flooding the log.
    pub struct ErrorLog {
        prog: &'static str,
        count: u64,
    }

    impl ErrorLog {
        /// An empty log whose lines start with `prog:`.
        pub fn new(prog: &'static str) -> Self {
            Self { prog, count: 0 }
        }

        /// Errors counted so far.
        pub fn count(&self) -> u64 {
            self.count
        }

        /// Counts one error and prints it if it is among the first few.
        pub fn report(&mut self, msg: std::fmt::Arguments<'_>) {
            self.count += 1;
            if self.count <= MAX_REPORTED_ERRORS {
                eprintln!("{}: {msg}", self.prog);
            } else if self.count == MAX_REPORTED_ERRORS + 1 {
                eprintln!("{}: more errors, not shown", self.prog);
            }
        }
    }

    /// Primes every connection with a full window (`queue` appends it) and
    /// sends it; a connection whose write fails is reported and dropped.
    /// Returns the number of connections still alive.
    pub fn prime(
        conns: &mut [Option<Conn>],
        errors: &mut ErrorLog,
        mut queue: impl FnMut(&mut Conn),
    ) -> usize {
        let mut alive = conns.len();
        for slot in conns.iter_mut() {
            let Some(conn) = slot else { continue };
            queue(conn);
            if let Err(e) = conn.flush() {
                errors.report(format_args!("conn {}: write: {e}", conn.id));
                *slot = None;
                alive -= 1;
            }
        }
        alive
    }

    /// The warm-up and the measured window: prints `MEASURE_START` and
    /// `MEASURE_END` (the driver samples the server's CPU time at them)
    /// and remembers the message count at each edge.
    pub struct Window {
        measure_at: Instant,
        end_at: Instant,
        duration: Duration,
        measure: Option<(Instant, u64)>,
        stdout: std::io::Stdout,
    }

    /// What the event loop does next, decided by [`Window::step`].
    pub enum Step {
        /// Wait for events at most this long (until the next window edge).
        Wait(Duration),
        /// The window is over: stop and report.
        End(Span),
    }

    /// The measured window as it really was: its start and end times and
    /// the completed-message counts at both.
    pub struct Span {
        t_start: Instant,
        start_done: u64,
        t_end: Instant,
        end_done: u64,
    }

    impl Window {
        /// Starts the warm-up now; the measured window follows it.
        pub fn start(warmup: Duration, duration: Duration) -> Self {
            let t0 = Instant::now();
            let measure_at = t0 + warmup;
            Self {
                measure_at,
                // Set when the measured window really starts, so it lasts `duration`.
                end_at: measure_at + duration,
                duration,
                measure: None,
                stdout: std::io::stdout(),
            }
        }

        /// Called once per turn of the event loop, at `now`, with the
        /// messages completed so far: crosses a window edge if one is due
        /// (printing its line) and says how long to wait, or that the run
        /// is over (the window ended or `all_failed`).
        #[inline]
        pub fn step(&mut self, now: Instant, total_done: u64, all_failed: bool) -> Result<Step> {
            if self.measure.is_none() && now >= self.measure_at {
                self.measure = Some((now, total_done));
                self.end_at = now + self.duration;
                let mut out = self.stdout.lock();
                writeln!(out, "MEASURE_START")?;
                out.flush()?;
            }
            if now >= self.end_at || all_failed {
                let (ts, sd) = self.measure.unwrap_or((now, total_done));
                let mut out = self.stdout.lock();
                writeln!(out, "MEASURE_END")?;
                out.flush()?;
                return Ok(Step::End(Span {
                    t_start: ts,
                    start_done: sd,
                    t_end: now,
                    end_done: total_done,
                }));
            }
            let next = if self.measure.is_some() {
                self.end_at
            } else {
                self.measure_at
            };
            Ok(Step::Wait(next.saturating_duration_since(now)))
        }
    }

    /// The run's shape, echoed in the `RESULT` line so a log line is
    /// self-describing.
    pub struct Shape {
        /// Connections asked for.
        pub connections: usize,
        /// Message size in bytes.
        pub size: usize,
        /// Messages in flight per connection.
        pub window: usize,
    }

    impl Span {
        /// Prints the `RESULT` line the driver parses and returns the
        /// error count to exit with: at least 1 when no connection
        /// survived, even if no error was counted.
        pub fn report(&self, prog: &str, errors: u64, shape: &Shape, alive: usize) -> u64 {
            let msgs = self.end_done - self.start_done;
            let secs = self.t_end.duration_since(self.t_start).as_secs_f64();
            let rate = if secs > 0.0 { msgs as f64 / secs } else { 0.0 };
            let Shape {
                connections,
                size,
                window,
            } = shape;
            println!(
                "RESULT msgs={msgs} secs={secs:.6} msgs_per_sec={rate:.1} errors={errors} \
                 connections={connections} size={size} window={window} alive={alive}"
            );
            if alive == 0 {
                eprintln!("{prog}: all connections failed");
                return errors.max(1);
            }
            errors
        }
    }
}
