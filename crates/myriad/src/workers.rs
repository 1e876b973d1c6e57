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
//! When the supervisor runs under systemd (`NOTIFY_SOCKET` set), it gives
//! the workers a private notification socket, sends `READY=1` upstream once
//! every worker has reported ready, keeps `STATUS=` current, and sends
//! `STOPPING=1` on shutdown.

use std::collections::HashSet;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The environment variable that marks a worker process; its value is the
/// worker's index.
pub const WORKER_ENV: &str = "MYRIAD_WORKER";

/// This process's worker index, if it is a worker.
///
/// ```
/// // Not a worker unless started by `supervise`.
/// assert_eq!(myriad::workers::worker_index(), None);
/// ```
pub fn worker_index() -> Option<usize> {
    std::env::var(WORKER_ENV).ok()?.parse().ok()
}

fn send_upstream(msg: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        if let Ok(s) = UnixDatagram::unbound() {
            let _ = s.send_to(msg.as_bytes(), PathBuf::from(path));
        }
    }
}

struct Worker {
    child: Option<Child>,
    started: Instant,
}

/// Runs `n` workers made by `spawn(index)` (which should start the current
/// executable with the same arguments; [`WORKER_ENV`] is set for it) until
/// SIGTERM or SIGINT, restarting any that die. Returns the process exit
/// code: 0 after a signalled shutdown.
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
    // A private notification socket for the workers, relayed upstream.
    let relay_path = std::env::var_os("NOTIFY_SOCKET").map(|_| {
        std::env::temp_dir().join(format!("myriad-supervisor-{}.sock", std::process::id()))
    });
    let relay = match &relay_path {
        Some(p) => {
            let _ = std::fs::remove_file(p);
            let s = UnixDatagram::bind(p)?;
            s.set_nonblocking(true)?;
            Some(s)
        }
        None => None,
    };
    let mut start = |i: usize| -> io::Result<Child> {
        let mut c = spawn(i);
        c.env(WORKER_ENV, i.to_string());
        match &relay_path {
            Some(p) => {
                c.env("NOTIFY_SOCKET", p);
            }
            None => {
                c.env_remove("NOTIFY_SOCKET");
            }
        }
        c.spawn()
    };
    let mut workers = Vec::with_capacity(n);
    for i in 0..n {
        workers.push(Worker {
            child: Some(start(i)?),
            started: Instant::now(),
        });
    }
    tracing::info!(workers = n, "supervisor started");
    let mut restarts = 0u64;
    let mut ready: HashSet<u32> = HashSet::new();
    let mut announced = false;
    let mut buf = [0u8; 4096];
    loop {
        for sig in signals.pending() {
            if sig == SIGHUP {
                for w in &workers {
                    if let Some(c) = &w.child {
                        let _ = Command::new("kill")
                            .args(["-HUP", &c.id().to_string()])
                            .status();
                    }
                }
                continue;
            }
            tracing::info!(signal = sig, "supervisor: stopping workers");
            send_upstream("STOPPING=1");
            for w in &workers {
                if let Some(c) = &w.child {
                    let _ = Command::new("kill")
                        .args(["-TERM", &c.id().to_string()])
                        .status();
                }
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            for w in &mut workers {
                if let Some(mut c) = w.child.take() {
                    loop {
                        match c.try_wait() {
                            Ok(Some(_)) | Err(_) => break,
                            Ok(None) if Instant::now() > deadline => {
                                let _ = c.kill();
                                let _ = c.wait();
                                break;
                            }
                            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                        }
                    }
                }
            }
            if let Some(p) = &relay_path {
                let _ = std::fs::remove_file(p);
            }
            return Ok(0);
        }
        if let Some(r) = &relay {
            // Bounded: at most 1024 messages per tick.
            for _ in 0..1024 {
                match r.recv(&mut buf) {
                    Ok(len) => {
                        let msg = String::from_utf8_lossy(&buf[..len]);
                        if msg.lines().any(|l| l == "READY=1") {
                            // Attribute by MAINPID when given; else count.
                            let pid = msg
                                .lines()
                                .find_map(|l| l.strip_prefix("MAINPID="))
                                .and_then(|p| p.parse().ok())
                                .unwrap_or(ready.len() as u32 + 1_000_000);
                            ready.insert(pid);
                        }
                    }
                    Err(_) => break,
                }
            }
            if !announced && ready.len() >= n {
                announced = true;
                send_upstream(&format!("READY=1\nSTATUS={n} workers running"));
            }
        }
        for (i, w) in workers.iter_mut().enumerate() {
            let died = match &mut w.child {
                Some(c) => match c.try_wait() {
                    Ok(Some(status)) => Some(status.to_string()),
                    Ok(None) => None,
                    Err(e) => Some(e.to_string()),
                },
                None => Some("not running".into()),
            };
            if let Some(why) = died {
                // A worker that dies at once is crash-looping: back off.
                if w.started.elapsed() < Duration::from_secs(1) {
                    std::thread::sleep(Duration::from_millis(500));
                }
                restarts += 1;
                tracing::warn!(worker = i, status = %why, restarts, "worker died; restarting");
                w.child = start(i).ok();
                w.started = Instant::now();
                if relay.is_some() {
                    send_upstream(&format!("STATUS={n} workers, {restarts} restarts"));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
