//! One process's run: start the engine, open the connections at the asked
//! pace, drive the phases (connect, warm-up, measure or hold, drain), then
//! gather counters and histograms into a [`RawReport`].
//!
//! The control thread never touches a connection: it posts "open *n* more"
//! to the loops, flips the shared phase flags the handlers read, and samples
//! the loops' counters for the progress line and the time line.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use myriad::{BackendKind, Engine};

use crate::client::{self, Counters, Hists, LoopInit, Mode, Plan, Shared, Snapshot};
use crate::report::{Final, Point, RawReport};

/// Longest the loops may take to reset every connection at the end.
pub const TEARDOWN_GRACE: Duration = Duration::from_secs(120);

/// How connections are opened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// As fast as the in-flight limit allows.
    Unpaced,
    /// This many per second.
    Rate(f64),
    /// `size` at a time, every `delay`.
    Batch {
        /// Connections per batch.
        size: u64,
        /// Pause between batches.
        delay: Duration,
    },
}

/// What one process runs.
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// The per-connection plan (its `conn_base` set for this process).
    pub plan: Plan,
    /// Connections of this process.
    pub conns: u64,
    /// Event-loop threads.
    pub threads: usize,
    /// Engine backend.
    pub backend: BackendKind,
    /// Connect pacing (this process's share).
    pub pacing: Pacing,
    /// Connect attempts in flight (this process).
    pub concurrency: u64,
    /// Warm-up after the connect phase.
    pub warmup: Duration,
    /// Measured time (echo mode); `None`: until `--messages` are done.
    pub duration: Option<Duration>,
    /// `--connect-timeout`.
    pub connect_timeout: Duration,
    /// The target URL, for the report.
    pub target: String,
    /// `--batch-wait`: io_uring batched waits.
    pub batch_wait: Option<(u32, Duration)>,
}

/// A progress update.
#[derive(Debug, Clone, Copy)]
pub struct Status {
    /// Seconds since the start.
    pub elapsed: f64,
    /// Current phase.
    pub phase: &'static str,
    /// Connections asked for.
    pub target: u64,
    /// Counters now.
    pub snap: Snapshot,
}

/// Receives progress and takes part in the start barrier of several
/// processes.
pub trait Observer {
    /// Called a few times a second.
    fn progress(&mut self, st: &Status);
    /// Every connection of this process is up (or failed); return once the
    /// run may go on (all processes are up), `false` to abort.
    fn connected(&mut self, st: &Status) -> bool;
}

struct Ctl<'a> {
    engine: Engine,
    shared: Arc<Shared>,
    counters: Vec<Arc<Counters>>,
    inits: Vec<LoopInit>,
    obs: &'a mut dyn Observer,
    timeline: Vec<Point>,
    last_point: (f64, u64),
    last_progress: f64,
    phase: &'static str,
    target: u64,
    released: u64,
    rr: usize,
    /// How often `wait` samples the counters: 5 ms while connects are
    /// paced (the releases follow the clock), 25 ms otherwise. Every load
    /// process has this thread: at 5 ms, 56 processes woke 11,200 times a
    /// second, 8% of all CPU in the million-browser ramp.
    tick: Duration,
}

impl Ctl<'_> {
    fn snap(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for c in &self.counters {
            c.add_to(&mut s);
        }
        s
    }

    fn elapsed(&self) -> f64 {
        self.shared.start.elapsed().as_secs_f64()
    }

    fn status(&self, snap: Snapshot) -> Status {
        Status {
            elapsed: self.elapsed(),
            phase: self.phase,
            target: self.target,
            snap,
        }
    }

    /// Samples the counters: time line every half second, progress every
    /// fifth of one.
    fn tick(&mut self) -> Snapshot {
        let snap = self.snap();
        let t = self.elapsed();
        if t - self.last_point.0 >= 0.5 {
            self.point(t, &snap);
        }
        if t - self.last_progress >= 0.2 {
            self.last_progress = t;
            let st = self.status(snap);
            self.obs.progress(&st);
        }
        snap
    }

    fn point(&mut self, t: f64, snap: &Snapshot) {
        self.timeline.push(Point {
            t,
            open: snap.open,
            established: snap.established,
            messages: snap.messages_total - self.last_point.1,
            dt: t - self.last_point.0,
            errors: snap.errors_total(),
        });
        self.last_point = (t, snap.messages_total);
    }

    /// Lets `n` more connections open, spread over the loops.
    fn release(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.released += n;
        let loops = self.inits.len() as u64;
        let (per, rem) = (n / loops, n % loops);
        for i in 0..loops {
            let k = per + u64::from((i + loops - self.rr as u64) % loops < rem);
            if k == 0 {
                continue;
            }
            let init = self.inits[i as usize].clone();
            self.engine
                .loop_handle(i as usize)
                .post(move |lcx| client::release(lcx, &init, k));
        }
        self.rr = ((self.rr as u64 + rem) % loops) as usize;
    }

    /// Tells every loop that the hold has begun (after `hold_start` is set):
    /// the connections waiting for it arm their checks.
    fn hold_began(&self) {
        for (i, init) in self.inits.iter().enumerate() {
            let init = init.clone();
            self.engine
                .loop_handle(i)
                .post(move |lcx| client::hold_began(lcx, &init));
        }
    }

    /// Ticks every `tick` until `until` or until `done` holds.
    /// Returns whether `done` held.
    fn wait(&mut self, until: Instant, mut done: impl FnMut(&Snapshot) -> bool) -> bool {
        loop {
            let snap = self.tick();
            if done(&snap) {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            std::thread::sleep((until - now).min(self.tick));
        }
    }

    fn set_now(&self, which: &std::sync::atomic::AtomicU64) -> u64 {
        let t = self.shared.now_ns();
        which.store(t, Relaxed);
        t
    }

    /// Copies of every loop's histograms, merged.
    fn collect(&self) -> Result<Hists> {
        let (tx, rx) = mpsc::channel();
        for (i, init) in self.inits.iter().enumerate() {
            let (tx, init) = (tx.clone(), init.clone());
            self.engine.loop_handle(i).post(move |_| {
                let _ = tx.send(client::collect(&init));
            });
        }
        drop(tx);
        let mut all = Hists::new()?;
        // Generous: with a million connections on two cores, the kernel can
        // be busy for a long while (other processes tearing down theirs).
        let until = Instant::now() + Duration::from_secs(120);
        for answered in 0..self.inits.len() {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(h) => all.add(&h),
                Err(_) => {
                    self.shared.add_note(format!(
                        "only {answered} of {} event loops returned their histograms",
                        self.inits.len()
                    ));
                    break;
                }
            }
        }
        Ok(all)
    }
}

/// Process CPU time (user + system) in seconds.
pub fn cpu_secs() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Resident set size of this process in bytes (0 if unknown).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * rustix::param::page_size() as u64)
}

fn mode_name(plan: &Plan) -> &'static str {
    match plan.mode {
        Mode::Echo if plan.interval_ns.is_some() => "echo-open-loop",
        Mode::Echo => "echo",
        Mode::Hold { .. } => "hold",
        Mode::ConnectOnly => "connect-only",
    }
}

/// Runs the load in this process.
pub fn run(opts: RunOpts, obs: &mut dyn Observer) -> Result<Final> {
    let shared = Arc::new(Shared::new());
    let mut builder = Engine::builder()
        .threads(opts.threads)
        .backend(opts.backend);
    if let Some((n, d)) = opts.batch_wait {
        builder = builder.batch_wait(n, d);
    }
    if matches!(opts.plan.mode, Mode::Hold { .. } | Mode::ConnectOnly) {
        // Little data: a small receive ring keeps the fixed memory of each
        // loop small next to what the connections cost.
        builder = builder.recv_buffers(128, 4096);
    }
    let engine = builder.start().context("starting the engine")?;
    let backend = engine.backend().to_string();
    let loops = engine.loop_count();
    let mut plan = opts.plan.clone();
    plan.max_inflight = opts
        .concurrency
        .div_ceil(loops as u64)
        .clamp(1, u32::MAX as u64) as u32;
    let plan = Arc::new(plan);
    let empty = Arc::new(Hists::new()?);
    let counters: Vec<Arc<Counters>> = (0..loops).map(|_| Arc::new(Counters::default())).collect();
    let inits = counters
        .iter()
        .map(|c| LoopInit {
            plan: plan.clone(),
            shared: shared.clone(),
            counters: c.clone(),
            hists: empty.clone(),
        })
        .collect();
    let mut ctl = Ctl {
        engine,
        shared: shared.clone(),
        counters,
        inits,
        obs,
        timeline: Vec::new(),
        last_point: (0.0, 0),
        last_progress: -1.0,
        phase: "connecting",
        target: opts.conns,
        released: 0,
        rr: 0,
        tick: match opts.pacing {
            Pacing::Unpaced => Duration::from_millis(25),
            Pacing::Rate(_) | Pacing::Batch { .. } => Duration::from_millis(5),
        },
    };
    let rss_before = rss_bytes();
    let cpu0 = cpu_secs();
    let n = opts.conns;
    let connect_only = plan.mode == Mode::ConnectOnly;
    let echo = plan.mode == Mode::Echo;
    if connect_only || (echo && opts.warmup.is_zero()) {
        shared.measure_start.store(0, Relaxed);
    }

    // ---- connect phase ----
    let t0 = Instant::now();
    let per_round = if connect_only {
        opts.connect_timeout + plan.timeout
    } else {
        opts.connect_timeout
    };
    let rounds = n.div_ceil(opts.concurrency.max(1)).min(u32::MAX as u64) as u32;
    let pacing_time = match opts.pacing {
        Pacing::Unpaced => Duration::ZERO,
        Pacing::Rate(r) => Duration::from_secs_f64(n as f64 / r),
        Pacing::Batch { size, delay } => delay * n.div_ceil(size).min(u32::MAX as u64) as u32,
    };
    let connect_deadline =
        t0 + pacing_time + per_round * rounds + plan.timeout + Duration::from_secs(5);
    match opts.pacing {
        Pacing::Unpaced => ctl.release(n),
        Pacing::Rate(_) | Pacing::Batch { .. } => {}
    }
    let mut next_batch = t0;
    let all_settled = loop {
        match opts.pacing {
            Pacing::Unpaced => {}
            Pacing::Rate(r) => {
                let due = ((t0.elapsed().as_secs_f64() * r) as u64 + 1).min(n);
                let k = due.saturating_sub(ctl.released);
                ctl.release(k);
            }
            Pacing::Batch { size, delay } => {
                if Instant::now() >= next_batch && ctl.released < n {
                    let k = size.min(n - ctl.released);
                    ctl.release(k);
                    next_batch += delay;
                }
            }
        }
        let step = (Instant::now() + ctl.tick.max(Duration::from_millis(10))).min(connect_deadline);
        if ctl.wait(step, |s| s.settled >= n) {
            break true;
        }
        if Instant::now() >= connect_deadline {
            break false;
        }
    };
    let connect_secs = t0.elapsed().as_secs_f64();
    if !all_settled {
        shared.add_note(format!(
            "connect phase ended after {connect_secs:.1} s with connections still pending"
        ));
    }
    let snap = ctl.tick();
    let mut rss_connected = rss_bytes();
    let mut open_at_rss = snap.open;
    ctl.phase = "connected";
    let st = ctl.status(snap);
    let go = ctl.obs.connected(&st);

    // ---- main phase ----
    let mut cpu_start = cpu0;
    if !go {
        shared.stopping.store(true, Relaxed);
    } else {
        match plan.mode {
            Mode::Echo => {
                let t_go = Instant::now();
                if !opts.warmup.is_zero() {
                    ctl.phase = "warm-up";
                    ctl.wait(t_go + opts.warmup, |s| {
                        s.closed >= s.attempted && s.attempted >= n
                    });
                    cpu_start = cpu_secs();
                    ctl.set_now(&shared.measure_start);
                }
                ctl.phase = "running";
                let end = match opts.duration {
                    Some(d) => t_go + opts.warmup + d,
                    None => t_go + Duration::from_secs(86_400),
                };
                ctl.wait(end, |s| s.closed >= s.attempted && s.attempted >= n);
            }
            Mode::Hold { dur, .. } => {
                ctl.phase = "holding";
                cpu_start = cpu_secs();
                let t = ctl.set_now(&shared.hold_start);
                shared.measure_start.store(t, Relaxed);
                ctl.hold_began();
                ctl.wait(Instant::now() + dur, |s| {
                    s.closed >= s.attempted && s.attempted >= n
                });
                // Memory at the end of the hold, once the checks have
                // touched whatever buffers they use.
                let rss = rss_bytes();
                if rss > rss_connected {
                    rss_connected = rss;
                    open_at_rss = ctl.snap().open;
                }
            }
            Mode::ConnectOnly => {}
        }
    }
    let cpu_end = cpu_secs();
    shared.stopping.store(true, Relaxed);
    let measure_end = match plan.mode {
        Mode::Hold { .. } => {
            // Let re-verifications in flight finish.
            ctl.phase = "draining";
            ctl.wait(
                Instant::now() + plan.timeout + Duration::from_millis(500),
                |s| s.checks_ok + s.checks_failed >= s.checks_sent,
            );
            ctl.set_now(&shared.measure_end)
        }
        _ => ctl.set_now(&shared.measure_end),
    };
    if plan.mode == Mode::Echo {
        ctl.phase = "draining";
        let gap = plan
            .interval_ns
            .map(Duration::from_nanos)
            .or(plan.think)
            .unwrap_or_default();
        let until = Instant::now() + plan.timeout + gap + Duration::from_millis(500);
        ctl.wait(until, |s| s.closed >= s.attempted);
    }

    // ---- results ----
    let hists = ctl.collect()?;
    // Every handler resets its connection as soon as shutdown begins; the
    // loops exit once all sockets are gone. The long grace only matters on
    // an overloaded machine (a million sockets reset at once by dozens of
    // processes on two cores): a loop that gives up waiting (grace + 2 s)
    // closes what is left with a FIN (TIME_WAIT), not a RST.
    ctl.engine.shutdown(TEARDOWN_GRACE);
    let wait_res = ctl.engine.wait();
    let snap = ctl.snap();
    let t = ctl.elapsed();
    ctl.point(t, &snap);
    ctl.phase = "done";
    let st = ctl.status(snap);
    ctl.obs.progress(&st);
    if let Err(e) = wait_res {
        shared.add_note(format!("engine: {e}"));
    }
    let start_ns = shared.measure_start.load(Relaxed);
    let window_secs = if start_ns == u64::MAX {
        0.0
    } else {
        measure_end.saturating_sub(start_ns) as f64 / 1e9
    };
    let per_sec = |v: u64, secs: f64| if secs > 0.0 { v as f64 / secs } else { 0.0 };
    let mut errors = std::collections::BTreeMap::new();
    for k in client::ErrorKind::ALL {
        errors.insert(k.name().to_string(), snap.errors[k as usize]);
    }
    let tls = plan
        .tls_connector
        .as_ref()
        .map(|c| c.handshakes())
        .unwrap_or_default();
    let raw = RawReport {
        target: opts.target.clone(),
        mode: mode_name(&plan).to_string(),
        processes: 1,
        threads: loops,
        backend,
        connections_target: n,
        connections_attempted: snap.attempted,
        connections_established: snap.established,
        connections_done: snap.done,
        connect_secs,
        window_secs,
        messages: snap.messages,
        messages_total: snap.messages_total,
        bytes: snap.bytes,
        messages_per_sec: per_sec(snap.messages, window_secs),
        bytes_per_sec: per_sec(snap.bytes, window_secs),
        connections_per_sec: if connect_only {
            per_sec(snap.ready, connect_secs)
        } else {
            per_sec(snap.established, connect_secs)
        },
        reconnects: snap.reconnects,
        checks_sent: snap.checks_sent,
        checks_ok: snap.checks_ok,
        tls_full: tls.full,
        tls_resumed: tls.resumed,
        errors,
        error_samples: shared.samples.lock().map(|v| v.clone()).unwrap_or_default(),
        notes: shared.notes.lock().map(|v| v.clone()).unwrap_or_default(),
        cpu_secs: cpu_end - cpu_start,
        rss_before,
        rss_connected,
        open_at_rss,
        latency_hist: String::new(),
        connect_hist: String::new(),
        timeline: std::mem::take(&mut ctl.timeline),
    };
    Final::from_parts(raw, &hists)
}
