//! A deterministic simulation of the reactor, the first step of the `sim`
//! backend (issue 17, part 2): a seeded PRNG and a virtual clock drive a
//! simulated backend and scripted peers, with faults — receives split down
//! to 1 byte, short sends, would-block sends (epoll style), receives that
//! end and must be re-armed (`ENOBUFS`), late data after a cancel, resets
//! mid-stream, completions reordered across connections and between a
//! connection's send and receive, stale completions for closed slots,
//! cancellations that complete later. Invariants are checked on every
//! run, and each seed runs twice: the traces must hash the same.
//!
//! [`run`] is the reactor's own scenario (echo handlers, random scripts);
//! [`run_peers`] runs another layer's handlers against its scripts, with
//! or without the faults, so that the layer can check that a faulted run
//! gives its peers the same application data as the unfaulted one
//! (`myriad-ws`'s `tests/sim.rs`: WebSocket frames split down to 1 byte).
//! [`run_talkers`] does the same for peers whose next bytes depend on what
//! they got (a [`Talker`]: a TLS client, whose handshake is a
//! conversation) in front of a service with a filter (`myriad-tls`'s
//! `tests/sim.rs`: records split down to 1 byte through the real filter).
//!
//! Sockets may also be linked to each other (an engine's own client and
//! the connection its listener accepted): `sim_engine.rs` runs a whole
//! `EngineBuilder` configuration that way. The same scenarios on loopback
//! are the layers' `tests/loopback.rs`.

use super::testkit::{fake_reactor, FakeBackend, Kernel, Op};

mod driver;
mod kernel;

use super::*;
pub(in crate::reactor) use driver::Driver;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Mutex;

/// splitmix64: small, fast, and the same on every machine. Public (as
/// `myriad::sim::Rng`) so that the other layers' scenarios draw from the
/// same generator as the simulation.
#[derive(Debug, Default)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits. (Not `Iterator::next`: the stream never
    /// ends, and `Option` would only add an unwrap at every draw.)
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True with probability 1/n.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

/// A scenario's limits: a random high-water mark (1..8 KiB, so that
/// back-pressure pauses and resumes often) and lingering on or off.
fn random_limits(rng: &mut Rng) -> Limits {
    Limits {
        idle_ms: 0,
        send_ms: 0,
        high_water: 1 + rng.below(8192) as u32,
        hard_limit: 1 << 30,
        max_input: 1 << 30,
        linger_ms: [0, 50][rng.below(2)],
    }
}

/// A completion the simulated kernel holds until the driver delivers it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pending {
    Sent(u64, i32),
    RecvEnd(u64, RecvEnd),
    Writable(u64),
    /// An outbound connect resolved (`-errno` or 0).
    Connected(u64, i32),
}

impl Pending {
    fn token(self) -> u64 {
        match self {
            Pending::Sent(t, _)
            | Pending::RecvEnd(t, _)
            | Pending::Writable(t)
            | Pending::Connected(t, _) => t,
        }
    }
}

/// A peer whose next bytes depend on what it got: a TLS client, whose
/// handshake is a conversation. The simulation hands it every byte the
/// server sends it as the send happens (in whatever pieces the faults
/// make), and sends what it appends, after what it had to say before.
pub trait Talker {
    /// The server sent `data`; append what the peer says in answer to
    /// `out`.
    fn received(&mut self, data: &[u8], out: &mut Vec<u8>);
    /// The peer has nothing more to say: its end of stream follows once
    /// everything it said is sent. Until then a peer that sent all it said
    /// waits for the server.
    fn done(&self) -> bool;
}

/// A peer of [`run_talkers`]: its first words, and what answers the
/// server afterwards (`None`: the first words are all it says).
pub type PeerSpec = (Vec<u8>, Option<Box<dyn Talker>>);

/// The far side of one simulated socket of the reactor. A scripted peer
/// sends `script`, then its end of stream, and collects what the echo
/// server sends back; a peer with a `talker` extends its script as the
/// server's bytes arrive. A socket whose far side is another socket of
/// the reactor (`link`: an engine's own client and the connection its
/// listener accepted) gets in `script` what that one sends, and its end
/// of stream once that one shut down or closed.
#[derive(Default)]
pub(super) struct Peer {
    pub(super) script: Vec<u8>,
    talker: Option<Box<dyn Talker>>,
    fed: usize,
    got: Vec<u8>,
    pub(super) token: Option<u64>,
    recv_armed: bool,
    /// A cancel of the receive is submitted (io_uring style): data may
    /// still arrive before its end.
    cancelling: bool,
    eof_sent: bool,
    /// The peer reset the connection (an injected fault).
    reset: bool,
    closes: u32,
    fin: bool,
    /// The socket at the other end, when it is one of the reactor's too.
    pub(super) link: Option<usize>,
    /// Made by the reactor's connect (not accepted).
    pub(super) outbound: bool,
    /// This connection is reset half-way (an injected fault): once half
    /// the script is fed (a scripted peer) or `reset_after` bytes (a
    /// linked socket, whose script grows as the other end sends).
    will_reset: bool,
    reset_after: usize,
    /// The other end reset the connection (or closed it with our bytes
    /// unread): the next receive ends with `ECONNRESET`, sends fail.
    rst_pending: bool,
    /// Clogged (an injected fault between two engine connections, as
    /// between hosts): nothing reaches this end before this virtual
    /// millisecond; nothing is lost.
    clogged_until: u64,
}

#[derive(Default)]
pub(super) struct World {
    /// io_uring style (false) or epoll style (true).
    pub(super) sync: bool,
    pub(super) peers: Vec<Peer>,
    pub(super) by_token: HashMap<u64, usize>,
    pending: Vec<Pending>,
    /// Tokens of closed connections, for stale completions.
    dead: Vec<u64>,
    /// Operations submitted and completed (an armed receive counts until
    /// its end, a send until its completion).
    submitted: u64,
    completed: u64,
    violations: Vec<String>,
    pub(super) trace: u64,
    /// Decides how much of each send goes through.
    pub(super) send_rng: Rng,
    /// Whether to inject faults (short receives and sends, would-block
    /// sends, `ENOBUFS` ends, stale completions, resets).
    pub(super) faults: bool,
    /// Connections waiting to be accepted: (listener, socket).
    accepts: std::collections::VecDeque<(usize, usize)>,
    /// The virtual clock (ms), as the driver last set it.
    pub(super) now: u64,
    /// Whether an accept may fail for want of descriptors (`EMFILE`,
    /// `ENFILE`): only where both ends are engine connections
    /// (`SimEngine`), whose client sees the refusal as a reset; scripted
    /// peers expect to be served.
    pub(super) accept_faults: bool,
    /// Listeners whose accepting stopped at such an error, until the
    /// reactor arms it again (as a real backend's multishot accept ends);
    /// by listener index with the loop above bit 16 (each loop has its
    /// own listener on a shared address, as with `SO_REUSEPORT`).
    accept_paused: Vec<usize>,
    /// Loops turned (each a listener on every address).
    pub(super) loops: usize,
    /// Listeners removed, by the same ids: an address refuses what waits
    /// once every loop's listener on it is gone.
    removed: Vec<usize>,
    /// Connections closed unaccepted by `reject_pending`.
    pub(super) rejected: u64,
    /// Accepts failed for want of descriptors.
    pub(super) accept_failures: u64,
    /// Accepted sockets handed to a loop.
    pub(super) accepts_delivered: u64,
    /// The listeners' simulated addresses, by listener index (the
    /// reactor's connect reaches the listener whose address it names).
    pub(super) listen_addrs: Vec<SocketAddr>,
}

impl World {
    fn note(&mut self, what: u64) {
        // FNV-1a over the trace
        for b in what.to_le_bytes() {
            self.trace = (self.trace ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn peer(&mut self, token: u64) -> &mut Peer {
        let i = self.by_token[&token];
        &mut self.peers[i]
    }
    /// The peer of `token` receives `bytes` (and its talker answers); a
    /// linked socket's other end gets them to read, unless it is closed
    /// (then a reset comes back, as from a kernel).
    fn deliver(&mut self, token: u64, bytes: &[u8]) {
        let i = self.by_token[&token];
        let p = &mut self.peers[i];
        p.got.extend_from_slice(bytes);
        if let Some(t) = &mut p.talker {
            t.received(bytes, &mut p.script);
        }
        if let Some(j) = p.link {
            if self.peers[j].closes > 0 {
                self.peers[i].rst_pending = true;
            } else {
                self.peers[j].script.extend_from_slice(bytes);
            }
        }
    }
    /// Whether the reactor's receive on socket `i` has something to get:
    /// bytes, a reset, or (all bytes fed) an end of stream — for a linked
    /// socket once the other end shut down or closed, for a talker once
    /// it is done.
    fn readable(&self, i: usize) -> bool {
        let p = &self.peers[i];
        if !p.recv_armed || p.eof_sent || p.token.is_none() || p.clogged_until > self.now {
            return false;
        }
        if p.rst_pending || p.fed < p.script.len() {
            return true;
        }
        match p.link {
            Some(j) => self.peers[j].fin || self.peers[j].closes > 0,
            None => p.talker.as_ref().is_none_or(|t| t.done()),
        }
    }
    /// A socket is used (`what`) before its connect resolved: a kernel
    /// would refuse it (`ENOTCONN`, `EAGAIN`).
    fn check_connected(&mut self, token: u64, what: &str) {
        let connecting = self
            .pending
            .iter()
            .any(|p| matches!(p, Pending::Connected(t, _) if *t == token));
        if connecting {
            self.violations
                .push(format!("{what} on {token:#x} before its connect resolved"));
        }
    }
    /// A world with no socket yet: io_uring's style or (`sync`) epoll's,
    /// with or without faults, its sends cut by `send_rng`.
    pub(super) fn new(sync: bool, faults: bool, send_rng: Rng) -> Self {
        World {
            sync,
            faults,
            send_rng,
            loops: 1,
            ..Default::default()
        }
    }
    /// A new socket's far side: scripted peers and both ends of a connect
    /// to a listener.
    pub(super) fn add_peer(&mut self, mut p: Peer, will_reset: bool) -> usize {
        p.will_reset = will_reset;
        self.peers.push(p);
        self.peers.len() - 1
    }
}

pub(super) type Shared = Rc<RefCell<World>>;

/// Socket numbers are peer indices plus this (listeners' are below it).
const SOCK_BASE: i32 = 1000;

fn sock_index(s: Sock) -> usize {
    (s.number() - SOCK_BASE) as usize
}

/// What the echo handlers saw, by token.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) data: HashMap<u64, Vec<u8>>,
    closes: HashMap<u64, u32>,
    reasons: HashMap<u64, String>,
}

/// The echo handlers consume whole frames of this many bytes (the scripts
/// are whole frames).
pub(super) const FRAME: usize = 7;

/// Echoes what it consumes: whole frames, nothing past the high-water
/// mark.
pub(super) struct Echo {
    pub(super) seen: Arc<Mutex<Seen>>,
}

impl Handler for Echo {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        // past the high-water mark, stop: the engine keeps the input and
        // delivers it again once the queue drained
        // Frames of FRAME bytes: a receive that splits one leaves the
        // rest to the engine, which delivers it again with what follows.
        let n = if cx.is_backpressured() {
            0
        } else {
            data.len() - data.len() % FRAME
        };
        cx.write(&data[..n]);
        let tok = cx.id().as_u64();
        let mut s = self.seen.lock().unwrap();
        s.data.entry(tok).or_default().extend_from_slice(&data[..n]);
        n
    }
    fn on_close(&mut self, cx: &mut Ctx<'_>, reason: CloseReason) {
        let tok = cx.id().as_u64();
        let mut s = self.seen.lock().unwrap();
        *s.closes.entry(tok).or_default() += 1;
        s.reasons.insert(tok, format!("{reason:?}"));
    }
}

/// Runs one seed; returns the trace hash, or what went wrong.
pub(crate) fn run(seed: u64) -> Result<u64, String> {
    let mut rng = Rng(seed);
    let w: Shared = Rc::new(RefCell::new(World {
        sync: rng.one_in(2),
        faults: true,
        ..Default::default()
    }));
    let n_peers = 1 + rng.below(6);
    for _ in 0..n_peers {
        let len = match rng.below(3) {
            0 => rng.below(16),
            1 => rng.below(3000),
            _ => rng.below(40_000),
        };
        let len = len - len % FRAME;
        let script = (0..len).map(|_| rng.next() as u8).collect();
        // this peer resets the connection half-way
        let reset = rng.one_in(8);
        w.borrow_mut().add_peer(
            Peer {
                script,
                ..Default::default()
            },
            reset,
        );
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    let factory: Factory = Arc::new(move || {
        Box::new(Echo {
            seen: seen2.clone(),
        }) as Box<dyn Handler>
    });
    let lim = random_limits(&mut rng);
    let r = drive(&mut rng, &w, seed, factory, None, lim);
    let seen = seen.lock().unwrap();
    check(
        &w.borrow(),
        &seen.closes,
        &Default::default(),
        std::slice::from_ref(&r),
    )?;
    check_echo(&w.borrow(), &seen)?;
    let t = w.borrow().trace;
    Ok(t)
}

/// Runs the world `w` (its peers set up, each to be accepted by listener
/// 0) against a reactor with handlers from `factory` until every peer is
/// done or the step budget is spent; the reactor, for the checks. `rng`
/// drives the schedule and the faults (none without `w.faults`: whole
/// receives, whole sends, no resets, no stale completions; only the
/// schedule is random).
fn drive(
    rng: &mut Rng,
    w: &Shared,
    seed: u64,
    factory: Factory,
    filter: Option<FilterFactory>,
    lim: Limits,
) -> Reactor {
    {
        let mut w = w.borrow_mut();
        w.send_rng = Rng(seed ^ 0x5eed);
        w.accepts = (0..w.peers.len()).map(|i| (0, i)).collect();
    }
    let mut d = Driver::new(Rng(rng.next()));
    let (mut r, mut be) = fake_reactor(w, factory, lim, d.epoch);
    r.services[0].filter = filter;
    d.run(
        std::slice::from_mut(&mut r),
        std::slice::from_mut(&mut be),
        w,
        200_000,
    );
    r
}

/// What every scenario must keep: no broken rule on the way (an operation
/// started twice, a socket closed under an operation), nothing left (no
/// slot, no queued byte, every operation completed), each socket closed
/// once and its handler's `on_close` called once (`closes`, by token; for
/// outbound connections only those in `counted`, whose handlers were
/// wrapped to count).
pub(super) fn check(
    w: &World,
    closes: &HashMap<u64, u32>,
    counted: &std::collections::HashSet<u64>,
    rs: &[Reactor],
) -> Result<(), String> {
    if let Some(v) = w.violations.first() {
        return Err(v.clone());
    }
    for r in rs {
        if r.live != 0 {
            return Err(format!("{} slots still in use at the end", r.live));
        }
        if r.pool.queued != 0 {
            return Err(format!("{} bytes still queued at the end", r.pool.queued));
        }
    }
    if w.submitted != w.completed {
        return Err(format!(
            "{} operations submitted, {} completed",
            w.submitted, w.completed
        ));
    }
    if !w.accepts.is_empty() {
        return Err(format!("{} connections never accepted", w.accepts.len()));
    }
    for (i, p) in w.peers.iter().enumerate() {
        if p.closes != 1 {
            return Err(format!("socket {i}: closed {} times", p.closes));
        }
        let scripted = p.link.is_none() && !p.outbound;
        let Some(t) = p.token else {
            // (a connection refused at once, never registered)
            if scripted {
                return Err(format!("peer {i} never registered"));
            }
            continue;
        };
        if (!p.outbound || counted.contains(&t)) && closes.get(&t) != Some(&1) {
            return Err(format!("socket {i}: on_close {:?} times", closes.get(&t)));
        }
    }
    Ok(())
}

/// The echo scenario's own check: the handler got each script in order
/// exactly once (a prefix of it for a peer that reset), and the peer got
/// it back.
fn check_echo(w: &World, seen: &Seen) -> Result<(), String> {
    for (i, p) in w.peers.iter().enumerate() {
        let t = p.token.unwrap_or(0);
        let data = seen.data.get(&t).map_or(&[][..], |d| &d[..]);
        if p.will_reset {
            // a prefix, in order, exactly once
            if !p.script.starts_with(data) || !data.starts_with(&p.got) {
                return Err(format!("peer {i} (reset): bytes out of order"));
            }
            continue;
        }
        if data != &p.script[..] {
            return Err(format!(
                "peer {i}: the handler got {} bytes of {} ({})",
                data.len(),
                p.script.len(),
                seen.reasons.get(&t).map_or("open", |s| s.as_str())
            ));
        }
        if p.got != p.script {
            return Err(format!(
                "peer {i}: {} bytes echoed of {}",
                p.got.len(),
                p.script.len()
            ));
        }
    }
    Ok(())
}

/// Counts `on_close` calls by token around any handler (the scenarios of
/// other crates bring their own handlers).
pub(super) struct Counted {
    pub(super) inner: Box<dyn Handler>,
    pub(super) closes: Arc<Mutex<HashMap<u64, u32>>>,
}

impl Handler for Counted {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        self.inner.on_open(cx)
    }
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        self.inner.on_data(cx, data)
    }
    fn on_drain(&mut self, cx: &mut Ctx<'_>) {
        self.inner.on_drain(cx)
    }
    fn on_eof(&mut self, cx: &mut Ctx<'_>) {
        self.inner.on_eof(cx)
    }
    fn on_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
        self.inner.on_timer(cx, token)
    }
    fn on_shutdown(&mut self, cx: &mut Ctx<'_>) {
        self.inner.on_shutdown(cx)
    }
    fn on_close(&mut self, cx: &mut Ctx<'_>, reason: CloseReason) {
        let tok = cx.id().as_u64();
        *self.closes.lock().unwrap().entry(tok).or_default() += 1;
        self.inner.on_close(cx, reason)
    }
}

/// What a peer of [`run_peers`] ended with.
#[derive(Debug)]
pub struct PeerOutcome {
    /// Every byte the server sent it, in order.
    pub got: Vec<u8>,
    /// It reset its connection half-way (an injected fault): it may have
    /// got only a prefix of what an unfaulted run gives.
    pub reset: bool,
}

/// Runs seed `seed` of a scenario given by another layer: one peer per
/// script, each sending its script then the end of its stream, served by
/// handlers from `factory`. With `faults`, everything [`run`] injects
/// (receives down to 1 byte, short and would-block sends, `ENOBUFS` ends,
/// stale completions, resets of some peers half-way); without, whole
/// receives and sends in a random schedule: the reference run. The
/// invariants of [`check`] hold in both; the trace hash and what each peer
/// got, or the first invariant broken.
pub(crate) fn run_peers(
    seed: u64,
    scripts: &[Vec<u8>],
    factory: Factory,
    faults: bool,
) -> Result<(u64, Vec<PeerOutcome>), String> {
    let peers = scripts.iter().map(|s| (s.clone(), None)).collect();
    run_talkers(seed, peers, factory, None, faults)
}

/// [`run_peers`] with peers that may answer what they get (a [`Talker`]
/// with its first words, or a script alone) and a service with a filter
/// (`filter`: TLS) in front of the handlers.
pub(crate) fn run_talkers(
    seed: u64,
    peers: Vec<PeerSpec>,
    factory: Factory,
    filter: Option<FilterFactory>,
    faults: bool,
) -> Result<(u64, Vec<PeerOutcome>), String> {
    let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
    let w: Shared = Rc::new(RefCell::new(World {
        sync: rng.one_in(2),
        faults,
        ..Default::default()
    }));
    let mut resets = Vec::new();
    for (script, talker) in peers {
        resets.push(faults && rng.one_in(8));
        let p = Peer {
            script,
            talker,
            ..Default::default()
        };
        w.borrow_mut().add_peer(p, resets[resets.len() - 1]);
    }
    let closes: Arc<Mutex<HashMap<u64, u32>>> = Default::default();
    let closes2 = closes.clone();
    let counted: Factory = Arc::new(move || {
        Box::new(Counted {
            inner: factory(),
            closes: closes2.clone(),
        }) as Box<dyn Handler>
    });
    let lim = random_limits(&mut rng);
    let r = drive(&mut rng, &w, seed, counted, filter, lim);
    check(
        &w.borrow(),
        &closes.lock().unwrap(),
        &Default::default(),
        std::slice::from_ref(&r),
    )?;
    let w = w.borrow();
    let peers = w
        .peers
        .iter()
        .zip(&resets)
        .map(|(p, &reset)| PeerOutcome {
            got: p.got.clone(),
            reset,
        })
        .collect();
    Ok((w.trace, peers))
}

/// The seeds a simulation test runs: `MYRIAD_SIM_SEED=S` replays seed S
/// alone, else the first `MYRIAD_SIM_SEEDS` seeds (`default` without it).
/// Public (as `myriad::sim::seed_range`) so that every layer's scenarios
/// read the same variables the same way.
pub fn seed_range(default: u64) -> std::ops::Range<u64> {
    let env = |k: &str| std::env::var(k).ok().and_then(|s| s.parse::<u64>().ok());
    match env("MYRIAD_SIM_SEED") {
        Some(s) => s..s.saturating_add(1),
        None => 0..env("MYRIAD_SIM_SEEDS").unwrap_or(default),
    }
}

/// Runs `run` on the seeds the environment names ([`seed_range`] with
/// `default`), twice each: every run must keep its invariants (a panic
/// fails the seed, not the others) and a seed's two outcomes (its trace,
/// and whatever else the scenario compares) must be equal. Public (as
/// `myriad::sim::check_seeds`) so that every layer's scenarios check
/// seeds the same way. Returns each passing seed's outcome, for the
/// scenario's own tallies.
///
/// # Panics
///
/// If a seed failed: with every failing seed, each with the command that
/// replays it (`MYRIAD_SIM_SEED=S` and `replay`).
pub fn check_seeds<T: PartialEq>(
    default: u64,
    run: impl Fn(u64) -> Result<T, String>,
    replay: &str,
) -> Vec<T> {
    let once = |seed| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(seed)))
            .unwrap_or_else(|_| Err("panicked".into()))
    };
    let mut failures = Vec::new();
    let mut outcomes = Vec::new();
    for seed in seed_range(default) {
        let verdict = match (once(seed), once(seed)) {
            (Ok(x), Ok(y)) if x == y => {
                outcomes.push(x);
                continue;
            }
            (Ok(_), Ok(_)) => "two runs of the seed differ".to_string(),
            (Err(e), _) | (_, Err(e)) => e,
        };
        failures.push(format!(
            "seed {seed}: {verdict} (replay: MYRIAD_SIM_SEED={seed} {replay})"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    outcomes
}

#[cfg(test)]
#[test]
fn simulated_echo_keeps_its_invariants_and_is_deterministic() {
    check_seeds(
        300,
        run,
        "cargo test -p myriad --features sim --lib simulated_echo",
    );
}

/// `run_peers` as another layer uses it: a faulted run gives each peer
/// what the unfaulted run gives it (a prefix, for a peer that reset), and
/// the unfaulted run gives back each script whole.
#[cfg(test)]
#[test]
fn run_peers_faulted_gives_what_the_unfaulted_run_gives() {
    let factory: Factory = Arc::new(|| {
        Box::new(Echo {
            seen: Default::default(),
        }) as Box<dyn Handler>
    });
    let mut failures = Vec::new();
    // every third seed (each costs three runs: faulted twice, unfaulted)
    for seed in seed_range(300).step_by(3) {
        let mut rng = Rng(seed);
        let scripts: Vec<Vec<u8>> = (0..1 + rng.below(4))
            .map(|_| {
                let len = rng.below(5000);
                (0..len - len % FRAME).map(|_| rng.next() as u8).collect()
            })
            .collect();
        let faulted = run_peers(seed, &scripts, factory.clone(), true);
        let again = run_peers(seed, &scripts, factory.clone(), true);
        let clean = run_peers(seed, &scripts, factory.clone(), false);
        let verdict = match (faulted, again, clean) {
            (Ok((t, f)), Ok((t2, _)), Ok((_, c))) => {
                let mut v = (t != t2).then(|| "two runs, two traces".to_string());
                for (i, ((f, c), s)) in f.iter().zip(&c).zip(&scripts).enumerate() {
                    if c.got != *s {
                        v = Some(format!("peer {i}: the unfaulted run lost bytes"));
                    } else if !c.got.starts_with(&f.got) || (!f.reset && f.got != c.got) {
                        v = Some(format!(
                            "peer {i}: {} bytes of {}",
                            f.got.len(),
                            c.got.len()
                        ));
                    }
                }
                v
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Some(e),
        };
        if let Some(v) = verdict {
            failures.push(format!("seed {seed}: {v}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
