//! Worker processes: N copies of a server sharing its ports through
//! `SO_REUSEPORT`, under a supervisor that restarts a worker that dies and
//! forwards SIGTERM / SIGINT / SIGHUP.
//!
//! Workers are started as new processes (the current executable again,
//! marked with the `MYRIAD_WORKER` environment variable) rather than with a
//! bare `fork()`: a forked copy of a multi-threaded process may only call
//! async-signal-safe functions, and a fresh process has its own descriptor
//! table — which is the point: no single process needs a huge one, and a
//! crash takes down one worker's connections only.
//!
//! The supervisor gives the workers a private notification socket
//! (`NOTIFY_SOCKET`, in a fresh 0700 directory; senders are identified by
//! the kernel-supplied credentials, `SO_PASSCRED`) and learns from it when
//! each worker is ready and that it is alive. Upstream (under systemd) it
//! sends `READY=1` once every worker has reported ready, keeps `STATUS=`
//! current and sends `STOPPING=1` on shutdown.
//!
//! Watchdog: when the supervisor's own watchdog is on (`WATCHDOG_USEC`, with
//! `WATCHDOG_PID` absent or its pid), each worker gets the same
//! `WATCHDOG_USEC` (and no `WATCHDOG_PID`) and must send `WATCHDOG=1` to the
//! relay. A ready worker silent for longer than `WATCHDOG_USEC` is hung: the
//! supervisor kills it (SIGKILL) and starts another, and goes on feeding the
//! upstream watchdog meanwhile — one hung worker does not cost the other
//! workers' connections. It stops feeding (so the service manager restarts
//! everything) only when a worker it killed has not gone away within another
//! `WATCHDOG_USEC`, or when the supervisor itself is stuck.
//!
//! Crashes: a dead worker is restarted after a back-off (100 ms doubling to
//! 5 s, back to 100 ms after a worker that lived 30 s). The supervisor gives
//! up — stops the other workers and returns 1 — when a worker dies before any
//! worker in its place was ever ready (a start-up failure: bad config, port
//! taken), or when one worker place died more than 5 times within 60 s.
//! Crashes spaced further apart are restarted for ever. Workers get
//! `PR_SET_PDEATHSIG` = SIGTERM, so they shut down by themselves when the
//! supervisor dies.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The environment variable that marks a worker process; its value is the
/// worker's index.
pub const WORKER_ENV: &str = "MYRIAD_WORKER";

/// How often the supervisor looks at its signals, relay and workers.
const TICK: Duration = Duration::from_millis(100);
/// First restart delay after a crash; doubled per crash up to `BACKOFF_MAX`.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A worker that lived this long resets its place's back-off.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// More than `CRASH_LIMIT` deaths of one worker place within `CRASH_WINDOW`
/// make the supervisor give up.
const CRASH_LIMIT: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// With the watchdog on, a worker not ready after this long is hung
/// (systemd's default `TimeoutStartSec`).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Shutdown: how long workers get to drain before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// This process's worker index, if it is a worker.
///
/// ```
/// // Not a worker unless started by `supervise`.
/// assert_eq!(myriad::workers::worker_index(), None);
/// ```
pub fn worker_index() -> Option<usize> {
    std::env::var(WORKER_ENV).ok()?.parse().ok()
}

/// The watchdog interval this process must keep (`sd_watchdog_enabled`
/// semantics: `WATCHDOG_USEC` set and non-zero, and `WATCHDOG_PID` either
/// absent — as [`supervise`] leaves it for workers — or this process's pid).
/// Send `WATCHDOG=1` to `NOTIFY_SOCKET` at about half of it.
pub fn watchdog_usec() -> Option<Duration> {
    watchdog_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.parse().ok()?;
    let mine = pid.is_none_or(|p| p.parse::<u32>().ok() == Some(me));
    (usec > 0 && mine).then(|| Duration::from_micros(usec))
}

/// Sends one `sd_notify` message (`"READY=1"`, lines separated by `\n`) to
/// `NOTIFY_SOCKET`, a path or an abstract name (`@…`); does nothing without
/// it. For programs run under [`supervise`] that do not use an sd_notify
/// library.
pub fn notify(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(s) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(a) = std::os::unix::net::SocketAddr::from_abstract_name(name) {
            let _ = s.send_to_addr(msg.as_bytes(), &a);
        }
    } else {
        let _ = s.send_to(msg.as_bytes(), PathBuf::from(path));
    }
}

/// One worker place.
struct Slot {
    child: Option<Child>,
    started: Instant,
    /// This incarnation sent `READY=1`.
    ready: bool,
    /// Some incarnation in this place was ready once.
    ever_ready: bool,
    /// The last `WATCHDOG=1` (or the start).
    last_feed: Instant,
    /// The supervisor killed this incarnation as hung, at this time.
    killed_at: Option<Instant>,
    /// A SIGHUP arrived while this incarnation was starting: sent once ready.
    pending_hup: bool,
    /// Without a child: when to start the next one.
    restart_at: Instant,
    backoff: Duration,
    deaths: VecDeque<Instant>,
}

impl Slot {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Books a death (or a failed start) of this place's worker, which is
    /// gone: schedules the restart after the back-off, or says why to give up.
    fn died(&mut self, now: Instant) -> Option<&'static str> {
        self.child = None;
        self.ready = false;
        self.killed_at = None;
        self.pending_hup = false;
        while self
            .deaths
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            self.deaths.pop_front();
        }
        self.deaths.push_back(now);
        if !self.ever_ready {
            return Some("before it was ever ready");
        }
        if self.deaths.len() > CRASH_LIMIT {
            return Some("too often");
        }
        if now.duration_since(self.started) >= STABLE_AFTER {
            self.backoff = BACKOFF_MIN;
        }
        self.restart_at = now + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        None
    }
}

/// Sends `sig` to a child not reaped yet (so its pid is still its own).
fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        crate::backend::sys::kill(pid, sig);
    }
}

/// The workers' notification socket: bound in a fresh 0700 directory (no
/// other user can reach it or race its creation), with `SO_PASSCRED` so each
/// message carries the sender's pid. Removed on drop.
struct Relay {
    sock: UnixDatagram,
    dir: PathBuf,
    path: PathBuf,
}

impl Relay {
    fn new() -> io::Result<Relay> {
        use std::hash::{BuildHasher, Hasher};
        let mut err = None;
        for _ in 0..8 {
            // RandomState is seeded from the OS's random source.
            let r = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            let dir = std::env::temp_dir()
                .join(format!("myriad-supervisor-{}-{r:016x}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    err = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            }
            let path = dir.join("notify");
            let sock = match UnixDatagram::bind(&path).and_then(|s| {
                socket2::SockRef::from(&s).set_passcred(true)?;
                Ok(s)
            }) {
                Ok(s) => s,
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    let _ = std::fs::remove_dir(&dir);
                    return Err(e);
                }
            };
            return Ok(Relay { sock, dir, path });
        }
        Err(err.unwrap_or_else(|| io::Error::other("no relay directory")))
    }

    /// One datagram, without blocking, and the sender's pid as the kernel
    /// tells it. Descriptors passed along are closed.
    fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Option<u32>)> {
        crate::backend::sys::recv_with_sender(self.sock.as_raw_fd(), buf)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// SIGTERM to every worker, SIGKILL to those still there after
/// `STOP_TIMEOUT`; reaps them all.
fn stop_all(slots: &mut [Slot]) {
    for s in slots.iter() {
        if let Some(c) = &s.child {
            signal(c, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let mut left = 0;
        for s in slots.iter_mut() {
            if let Some(c) = &mut s.child {
                match c.try_wait() {
                    Ok(None) if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        s.child = None;
                    }
                    Ok(None) => left += 1,
                    Ok(Some(_)) | Err(_) => s.child = None,
                }
            }
        }
        if left == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `n` workers made by `spawn(index)` (which should start the current
/// executable with the same arguments; [`WORKER_ENV`] and `NOTIFY_SOCKET`
/// are set for it) until SIGTERM or SIGINT, restarting any that die. Returns
/// the process exit code: 0 after a signalled shutdown, 1 after giving up on
/// a crash loop (see the module docs).
///
/// Workers must send `READY=1` to `NOTIFY_SOCKET` once they serve (with
/// their SIGHUP handler installed: SIGHUP is forwarded only to ready
/// workers, to a starting one once it is ready), and `WATCHDOG=1` at half of
/// [`watchdog_usec`] when that is set. A worker that dies before any worker
/// in its place was ready makes the supervisor give up.
///
/// ```no_run
/// let code = myriad::workers::supervise(4, |_i| {
///     let mut c = std::process::Command::new(std::env::current_exe().unwrap());
///     c.args(std::env::args_os().skip(1));
///     c
/// })?;
/// std::process::exit(code);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn supervise(n: usize, mut spawn: impl FnMut(usize) -> Command) -> io::Result<i32> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let watchdog = watchdog_usec();
    let relay = Relay::new()?;
    let supervisor = std::process::id();
    let mut start = |i: usize| -> io::Result<Child> {
        let mut c = spawn(i);
        c.env(WORKER_ENV, i.to_string());
        c.env("NOTIFY_SOCKET", &relay.path);
        c.env_remove("WATCHDOG_PID");
        match watchdog {
            Some(w) => c.env("WATCHDOG_USEC", w.as_micros().to_string()),
            None => c.env_remove("WATCHDOG_USEC"),
        };
        let parent = libc::pid_t::try_from(supervisor).unwrap_or(0);
        crate::backend::sys::die_with_parent(&mut c, parent);
        c.spawn()
    };
    let now = Instant::now();
    let mut slots: Vec<Slot> = Vec::with_capacity(n);
    for i in 0..n {
        let child = match start(i) {
            Ok(c) => c,
            Err(e) => {
                stop_all(&mut slots);
                return Err(e);
            }
        };
        slots.push(Slot {
            child: Some(child),
            started: now,
            ready: false,
            ever_ready: false,
            last_feed: now,
            killed_at: None,
            pending_hup: false,
            restart_at: now,
            backoff: BACKOFF_MIN,
            deaths: VecDeque::new(),
        });
    }
    tracing::info!(workers = n, watchdog = ?watchdog, "supervisor started");
    let mut restarts = 0u64;
    let mut announced = false;
    let mut last_upstream_feed = Instant::now();
    if watchdog.is_some() {
        notify("WATCHDOG=1");
    }
    let mut buf = [0u8; 4096];
    loop {
        for sig in signals.pending() {
            if sig == SIGHUP {
                for s in &mut slots {
                    match &s.child {
                        Some(c) if s.ready => signal(c, libc::SIGHUP),
                        Some(_) => s.pending_hup = true,
                        None => {}
                    }
                }
                continue;
            }
            tracing::info!(signal = sig, "supervisor: stopping workers");
            notify("STOPPING=1");
            stop_all(&mut slots);
            return Ok(0);
        }
        // Bounded: at most 4096 messages per tick.
        for _ in 0..4096 {
            let (len, pid) = match relay.recv(&mut buf) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            // Only our live workers count (not a stale message of a dead one).
            let Some(s) = slots.iter_mut().find(|s| pid.is_some() && s.pid() == pid) else {
                continue;
            };
            let msg = String::from_utf8_lossy(&buf[..len]);
            for line in msg.lines() {
                match line {
                    "READY=1" => {
                        s.ready = true;
                        s.ever_ready = true;
                        s.last_feed = Instant::now();
                        if std::mem::take(&mut s.pending_hup) {
                            if let Some(c) = &s.child {
                                signal(c, libc::SIGHUP);
                            }
                        }
                    }
                    "WATCHDOG=1" => s.last_feed = Instant::now(),
                    _ => {}
                }
            }
        }
        if !announced && slots.iter().all(|s| s.ready) {
            announced = true;
            notify(&format!("READY=1\nSTATUS={n} workers running"));
        }
        let now = Instant::now();
        let mut give_up = None;
        for (i, s) in slots.iter_mut().enumerate() {
            let Some(c) = &mut s.child else {
                if now >= s.restart_at {
                    match start(i) {
                        Ok(c) => {
                            s.child = Some(c);
                            s.started = now;
                            s.last_feed = now;
                            restarts += 1;
                            tracing::info!(worker = i, restarts, "worker restarted");
                            notify(&format!("STATUS={n} workers, {restarts} restarts"));
                        }
                        Err(e) => {
                            let why = format!("could not start: {e}");
                            s.started = now;
                            if let Some(when) = s.died(now) {
                                give_up = Some((i, when, why));
                                break;
                            }
                            tracing::error!(worker = i, error = %e, "starting a worker failed");
                        }
                    }
                }
                continue;
            };
            let why = match c.try_wait() {
                Ok(Some(status)) => status.to_string(),
                Ok(None) => {
                    if let (Some(w), None) = (watchdog, s.killed_at) {
                        let hung = if s.ready {
                            now.duration_since(s.last_feed) > w
                        } else {
                            now.duration_since(s.started) > START_TIMEOUT.max(w)
                        };
                        if hung {
                            tracing::error!(
                                worker = i,
                                pid = c.id(),
                                ready = s.ready,
                                "worker hung (no watchdog ping); killing it"
                            );
                            signal(c, libc::SIGKILL);
                            s.killed_at = Some(now);
                        }
                    }
                    continue;
                }
                Err(e) => e.to_string(),
            };
            if let Some(when) = s.died(now) {
                give_up = Some((i, when, why));
                break;
            }
            tracing::warn!(worker = i, status = %why, restart_in = ?s.restart_at.duration_since(now), "worker died; restarting");
        }
        if let Some((i, when, why)) = give_up {
            tracing::error!(worker = i, status = %why, "worker died {when}; stopping the others and giving up");
            notify(&format!("STATUS=worker {i} died {when} ({why}); giving up"));
            stop_all(&mut slots);
            return Ok(1);
        }
        if let Some(w) = watchdog {
            // Feed while no killed worker is stuck past another interval.
            let stuck = slots
                .iter()
                .any(|s| s.killed_at.is_some_and(|t| now.duration_since(t) > w));
            if !stuck && now.duration_since(last_upstream_feed) >= w / 2 {
                notify("WATCHDOG=1");
                last_upstream_feed = now;
            }
        }
        std::thread::sleep(TICK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(ever_ready: bool, t: Instant) -> Slot {
        Slot {
            child: None,
            started: t,
            ready: false,
            ever_ready,
            last_feed: t,
            killed_at: None,
            pending_hup: false,
            restart_at: t,
            backoff: BACKOFF_MIN,
            deaths: VecDeque::new(),
        }
    }

    #[test]
    fn a_death_before_ready_gives_up() {
        let t = Instant::now();
        assert_eq!(slot(false, t).died(t), Some("before it was ever ready"));
    }

    #[test]
    fn quick_crashes_back_off_and_then_give_up() {
        let t0 = Instant::now();
        let mut s = slot(true, t0);
        let mut t = t0;
        let mut delays = Vec::new();
        for _ in 0..CRASH_LIMIT {
            // Each worker lives one second after its delay.
            t += Duration::from_secs(1);
            assert_eq!(s.died(t), None);
            delays.push(s.restart_at - t);
            t = s.restart_at;
            s.started = t;
        }
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600]);
        t += Duration::from_secs(1);
        assert_eq!(s.died(t), Some("too often"));
    }

    #[test]
    fn spaced_out_crashes_never_give_up() {
        // A client that crashes the worker every 13 s, for an hour: fewer
        // than CRASH_LIMIT + 1 deaths in any window; restarted each time.
        let t0 = Instant::now();
        let mut s = slot(true, t0);
        let mut t = t0;
        for _ in 0..300 {
            t += Duration::from_secs(13);
            assert_eq!(s.died(t), None);
            assert!(s.restart_at - t <= BACKOFF_MAX);
            s.started = s.restart_at;
        }
    }

    #[test]
    fn a_worker_that_lived_long_resets_the_backoff() {
        let t0 = Instant::now();
        let mut s = slot(true, t0);
        s.backoff = BACKOFF_MAX;
        let t = t0 + STABLE_AFTER;
        assert_eq!(s.died(t), None);
        assert_eq!(s.restart_at - t, BACKOFF_MIN);
    }

    #[test]
    fn watchdog_env() {
        let two = Some(Duration::from_secs(2));
        assert_eq!(watchdog_from(Some("2000000"), None, 7), two);
        assert_eq!(watchdog_from(Some("2000000"), Some("7"), 7), two);
        assert_eq!(watchdog_from(Some("2000000"), Some("1"), 7), None);
        assert_eq!(watchdog_from(Some("2000000"), Some("x"), 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(Some("soon"), None, 7), None);
        assert_eq!(watchdog_from(None, Some("7"), 7), None);
    }
}
