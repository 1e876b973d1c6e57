//! A whole engine configuration on the simulated network (issue 17, part
//! 2): [`SimEngine`] runs an [`EngineBuilder`]'s services — their
//! handlers, filters and limits — in one or more loops whose backend and
//! sockets are the simulation's (`sim/`: the same world, faults and
//! schedule as the reactor's own scenarios), all turned on this thread
//! under a virtual clock.
//! Listeners are simulated addresses; a connection opened through the
//! loop's connector (`LoopCx::connect`, what a handler uses, reached here
//! through `LoopHandle::connect`) to one of them is accepted by it, and
//! the two ends — both engine connections with real handlers — get what
//! the other sends, split, delayed, reordered and reset by the seed.
//! Timers run on the virtual clock (it jumps to the next timer when
//! nothing else can happen). [`SimEngine::run`] checks the invariants of
//! `sim::check` at the end.
//!
//! [`run_echo`] is the engine-level scenario: an echo service and clients
//! made by the engine's connector.

// (the API is used by the layers' scenarios, feature `sim`)
#![cfg_attr(not(feature = "sim"), allow(dead_code))]

use super::sim::{check, Counted, Driver, Rng, Shared, World};
use super::testkit::{FakeBackend, FakeSockets};
use super::*;
use crate::engine::{EngineBuilder, Error, Service};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Mutex;

/// The low 56 bits of a [`ConnId`]: the token, without the loop index.
const TOKEN_MASK: u64 = (1 << 56) - 1;

/// An engine configuration running on the simulated network (see the
/// module documentation). Made by [`EngineBuilder::simulate`].
pub struct SimEngine {
    w: Shared,
    /// The loops, loop k's reactor `rs[k]` flushed into `bes[k]`.
    rs: Vec<Reactor>,
    bes: Vec<FakeBackend<World>>,
    driver: Driver,
    handles: Vec<LoopHandle>,
    local_addrs: Vec<Vec<SocketAddr>>,
    /// `on_close` calls by token (services' handlers and the handlers of
    /// [`SimEngine::connect`] are wrapped to count them).
    closes: Arc<Mutex<HashMap<u64, u32>>>,
    /// Tokens of outbound connections whose handlers count.
    counted: Arc<Mutex<HashSet<u64>>>,
}

/// What a run of a [`SimEngine`] ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimOutcome {
    /// The hash of everything that happened: the same seed (and the same
    /// handlers) must give the same.
    pub trace: u64,
    /// Loop turns taken.
    pub turns: u64,
}

impl SimEngine {
    pub(crate) fn new(
        b: EngineBuilder,
        seed: u64,
        faults: bool,
        loops: usize,
    ) -> Result<Self, Error> {
        if loops == 0 || loops > 255 {
            return Err(Error::Config(format!("loops must be 1..=255, got {loops}")));
        }
        let mut rng = Rng(seed ^ 0x51e6_e261_9e5e_ed00);
        let mut world = World::new(rng.one_in(2), faults, Rng(seed ^ 0x5eed));
        world.accept_faults = faults;
        world.loops = loops;
        let w: Shared = Rc::new(RefCell::new(world));
        let closes: Arc<Mutex<HashMap<u64, u32>>> = Default::default();
        let plan = b.plan();
        let driver = Driver::new(Rng(rng.next()));
        let (chunk_size, outbound, max_queued) = b.reactor_settings();
        let cell = Arc::new(OnceLock::new());
        let mut handles = Vec::new();
        let mut rs = Vec::new();
        for idx in 0..loops {
            let mut services = b.service_rts(&plan);
            for s in &mut services {
                let (inner, closes) = (s.factory.clone(), closes.clone());
                s.factory = Arc::new(move || {
                    Box::new(Counted {
                        inner: inner(),
                        closes: closes.clone(),
                    }) as Box<dyn Handler>
                });
            }
            let waker = Waker::new().map_err(|source| Error::Io {
                context: "eventfd",
                source,
            })?;
            let shared = LoopShared::new(Arc::new(waker));
            let (tx, rx) = mpsc::channel();
            handles.push(LoopHandle::new(idx, tx, shared.clone()));
            rs.push(Reactor::new(
                idx as u32,
                shared,
                rx,
                cell.clone(),
                services,
                plan.limits.clone(),
                chunk_size,
                outbound,
                max_queued,
                Box::new(FakeSockets(w.clone())),
                driver.epoch,
            ));
        }
        let _ = cell.set(handles.clone());
        // Every address a listener of its own on every loop (as with
        // SO_REUSEPORT); port 0 gets a free port.
        let mut local_addrs = Vec::new();
        let mut port = 40_000;
        for (si, addrs) in b.service_addrs().into_iter().enumerate() {
            let mut resolved = Vec::new();
            for mut a in addrs {
                let mut wm = w.borrow_mut();
                if a.port() == 0 {
                    a.set_port(port);
                    while wm.listen_addrs.contains(&a) {
                        port += 1;
                        a.set_port(port);
                    }
                }
                let li = rs[0].listeners.len();
                for r in &mut rs {
                    r.listeners.push(ListenerRt {
                        sock: Sock::from_raw(li as i32),
                        service: si as u16,
                        paused: false,
                        removed: false,
                    });
                }
                wm.listen_addrs.push(a);
                resolved.push(a);
            }
            local_addrs.push(resolved);
        }
        Ok(SimEngine {
            bes: (0..loops)
                .map(|k| FakeBackend(w.clone(), (k as u64) << 56))
                .collect(),
            w,
            rs,
            driver,
            handles,
            local_addrs,
            closes,
            counted: Default::default(),
        })
    }

    /// The simulated addresses of service `service` (port 0 resolved).
    pub fn local_addrs(&self, service: usize) -> &[SocketAddr] {
        self.local_addrs.get(service).map_or(&[], |v| v.as_slice())
    }

    /// The handle of simulated loop `i` (post to it, connect on it).
    ///
    /// # Panics
    ///
    /// If there is no loop `i`.
    pub fn loop_handle(&self, i: usize) -> &LoopHandle {
        &self.handles[i]
    }

    /// The number of simulated loops.
    pub fn loop_count(&self) -> usize {
        self.handles.len()
    }

    /// Opens an outbound connection through loop `lp`'s connector (as
    /// [`LoopHandle::connect`] does, at the next turn), its handler's
    /// `on_close` counted for the checks; false if there is no loop `lp`.
    pub fn connect<H: Handler + Send>(
        &self,
        lp: usize,
        addr: SocketAddr,
        opts: ConnectOptions,
        handler: H,
    ) -> bool {
        let Some(handle) = self.handles.get(lp) else {
            return false;
        };
        let (closes, counted) = (self.closes.clone(), self.counted.clone());
        handle.post(move |lcx| {
            let h = Box::new(Counted {
                inner: Box::new(handler),
                closes,
            });
            if let Ok(id) = lcx.connect(addr, &opts, h) {
                let mut c = counted.lock().unwrap_or_else(|p| p.into_inner());
                c.insert(id.as_u64());
            }
        })
    }

    /// Begins a graceful shutdown of every loop (as
    /// [`crate::Engine::shutdown`]).
    pub fn shutdown(&self, grace: Duration) {
        for h in &self.handles {
            h.post(move |lcx| lcx.begin_shutdown(grace));
        }
    }

    /// The loops' counters, summed.
    pub fn stats(&self) -> Stats {
        self.handles
            .iter()
            .map(|h| h.stats())
            .fold(Stats::default(), |a, b| a + b)
    }

    /// The connection at the other end of `id` in the simulation (the
    /// one a listener accepted for a client, or the client of an
    /// accepted one), once both are registered.
    pub fn peer_of(&self, id: ConnId) -> Option<ConnId> {
        let w = self.w.borrow();
        let i = *w.by_token.get(&id.as_u64())?;
        let t = w.peers[w.peers[i].link?].token?;
        let (slot, gen) = untoken(t & TOKEN_MASK);
        Some(ConnId::new((t >> 56) as u32, slot, gen))
    }

    /// Runs the loop until nothing is left to happen (no connection, no
    /// completion to deliver, no connection to accept) or `max_turns`
    /// turns are spent, then checks the invariants: no operation started
    /// twice or closed under, every one completed, no slot or queued byte
    /// left, each socket closed once, each counted handler's `on_close`
    /// called once, the open-connection counter back at zero.
    pub fn run(&mut self, max_turns: u64) -> Result<SimOutcome, String> {
        let turns = self
            .driver
            .run(&mut self.rs, &mut self.bes, &self.w, max_turns);
        let closes = self.closes.lock().unwrap_or_else(|p| p.into_inner());
        let counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        check(&self.w.borrow(), &closes, &counted, &self.rs)?;
        let st = self.stats();
        if st.open != 0 {
            return Err(format!("{} connections counted open at the end", st.open));
        }
        let w = self.w.borrow();
        if (st.err_accept, st.refused_fd_limit) != (w.accept_failures, w.rejected) {
            return Err(format!(
                "accept errors and refusals counted {}, {}; happened {}, {}",
                st.err_accept, st.refused_fd_limit, w.accept_failures, w.rejected
            ));
        }
        // every accepted socket counted once, as accepted or refused (a
        // limit), and every connection opened closed by the end
        let refused = st.refused - st.refused_fd_limit;
        if st.accepted + refused != w.accepts_delivered {
            return Err(format!(
                "{} accepted + {refused} refused counted, {} accepted sockets handed over",
                st.accepted, w.accepts_delivered
            ));
        }
        if st.accepted + st.connected != st.closed {
            return Err(format!(
                "{} accepted + {} connected, {} closed at the end",
                st.accepted, st.connected, st.closed
            ));
        }
        drop(w);
        Ok(SimOutcome {
            trace: self.w.borrow().trace,
            turns,
        })
    }
}

/// How a client of [`run_echo`] ended.
struct ClientEnd {
    id: ConnId,
    got: Vec<u8>,
    reason: CloseReason,
}

/// A client of the echo scenario: writes its script in pieces (the first
/// on open, the others from timers), reads the echo, and closes once it
/// has it all — or, half-closing, shuts its sending side down after the
/// last piece and closes on the server's end of stream.
struct Client {
    script: Vec<u8>,
    /// Where the pieces end, and the delay before each after the first.
    cuts: Vec<(usize, u64)>,
    written: usize,
    next: usize,
    half_close: bool,
    got: Vec<u8>,
    ends: Arc<Mutex<Vec<(usize, ClientEnd)>>>,
    index: usize,
    /// Clients this one starts when it closes, with the loop's connector
    /// from its `on_close` (so that new connections take slots just freed,
    /// whose old tokens late completions still carry).
    then: Vec<(SocketAddr, ConnectOptions, Client)>,
}

impl Client {
    fn write_next(&mut self, cx: &mut Ctx<'_>) {
        if let Some(&(end, _)) = self.cuts.get(self.next) {
            cx.write(&self.script[self.written..end]);
            self.written = end;
            self.next += 1;
            match self.cuts.get(self.next) {
                Some(&(_, delay)) => cx.set_timer(Duration::from_millis(delay), 0),
                None if self.half_close => cx.shutdown_write(),
                None => {}
            }
        }
        self.maybe_done(cx);
    }

    fn maybe_done(&mut self, cx: &mut Ctx<'_>) {
        if !self.half_close && self.written == self.script.len() && self.got.len() >= self.written {
            cx.close();
        }
    }
}

impl Handler for Client {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        self.write_next(cx);
    }
    fn on_timer(&mut self, cx: &mut Ctx<'_>, _token: u64) {
        self.write_next(cx);
    }
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        self.got.extend_from_slice(data);
        self.maybe_done(cx);
        data.len()
    }
    fn on_close(&mut self, cx: &mut Ctx<'_>, reason: CloseReason) {
        let end = ClientEnd {
            id: cx.id(),
            got: std::mem::take(&mut self.got),
            reason,
        };
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        ends.push((self.index, end));
        drop(ends);
        for (addr, opts, next) in self.then.drain(..) {
            // (a failure leaves the client without an end: reported)
            let _ = cx.loop_cx().connect(addr, &opts, Box::new(next));
        }
    }
}

/// The echo service of [`run_echo`] (the reactor scenario's frame echo),
/// with a random high-water mark and linger drawn from `rng`.
fn echo_service(rng: &mut Rng, addr: SocketAddr, seen: Arc<Mutex<super::sim::Seen>>) -> Service {
    Service::new("echo", addr, move || super::sim::Echo {
        seen: seen.clone(),
    })
    .write_high_water(1 + rng.below(8192))
    .linger([None, Some(Duration::from_millis(50))][rng.below(2)])
}

/// One seed's clients of [`run_echo`], drawn from `rng`: 1 to 6, each
/// with a random script sent in pieces over timers, half-closing or not,
/// one in ten addressed to `refused` (nothing listens there); some start
/// from an earlier one's `on_close`.
struct EchoClients {
    scripts: Vec<Vec<u8>>,
    refused: Vec<bool>,
    /// Those started at once, each carrying those it starts when it closes.
    roots: Vec<(SocketAddr, ConnectOptions, Client)>,
    ends: Arc<Mutex<Vec<(usize, ClientEnd)>>>,
}

fn echo_clients(rng: &mut Rng, addr: SocketAddr, refused_addr: SocketAddr) -> EchoClients {
    let ends: Arc<Mutex<Vec<(usize, ClientEnd)>>> = Default::default();
    let n = 1 + rng.below(6);
    let mut scripts = Vec::new();
    let mut refused = Vec::new();
    let mut clients: Vec<Option<(SocketAddr, ConnectOptions, Client)>> = Vec::new();
    // which earlier client starts each one when it closes (none: at once)
    let mut parent = Vec::new();
    for index in 0..n {
        let len = match rng.below(3) {
            0 => rng.below(16),
            1 => rng.below(3000),
            _ => rng.below(40_000),
        };
        let len = len - len % super::sim::FRAME;
        let script: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let mut cuts: Vec<(usize, u64)> = (0..rng.below(4))
            .map(|_| (rng.below(len + 1), rng.below(20) as u64))
            .collect();
        cuts.push((len, rng.below(20) as u64));
        cuts.sort_unstable();
        let to = if rng.one_in(10) {
            refused.push(true);
            refused_addr
        } else {
            refused.push(false);
            addr
        };
        let opts = ConnectOptions {
            write_high_water: 1 + rng.below(8192),
            ..Default::default()
        };
        let client = Client {
            script: script.clone(),
            cuts,
            written: 0,
            next: 0,
            half_close: rng.one_in(2),
            got: Vec::new(),
            ends: ends.clone(),
            index,
            then: Vec::new(),
        };
        clients.push(Some((to, opts, client)));
        parent.push((index > 0 && rng.one_in(2)).then(|| rng.below(index)));
        scripts.push(script);
    }
    // children first: each is complete (with its own children) when it
    // moves into its parent
    for k in (0..n).rev() {
        let Some(c) = clients[k].take() else { continue };
        match parent[k] {
            Some(j) => {
                if let Some(p) = clients[j].as_mut() {
                    p.2.then.push(c);
                }
            }
            None => clients[k] = Some(c),
        }
    }
    EchoClients {
        scripts,
        refused,
        roots: clients.into_iter().flatten().collect(),
        ends,
    }
}

impl EchoClients {
    /// Each client ended once, refused when it should be; otherwise the
    /// server got (`served`, where known) a prefix of its script in order,
    /// exactly once, and the client a prefix of that — all of it when it
    /// closed cleanly. With `clean`, every client not refused must have
    /// closed cleanly (no faults: loopback).
    fn check(&self, served: &dyn Fn(ConnId) -> Option<Vec<u8>>, clean: bool) -> Result<(), String> {
        let ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        let mut once = vec![0u32; self.scripts.len()];
        for (i, _) in ends.iter() {
            once[*i] += 1;
        }
        if let Some(i) = once.iter().position(|&k| k != 1) {
            return Err(format!("client {i}: on_close {} times", once[i]));
        }
        for (i, end) in ends.iter() {
            let (i, script) = (*i, &self.scripts[*i]);
            if self.refused[i] {
                if !matches!(end.reason, CloseReason::ConnectFailed(_)) {
                    return Err(format!("client {i}: {:?}, not refused", end.reason));
                }
                continue;
            }
            let data = served(end.id);
            let data = data.as_deref().unwrap_or(&script[..]);
            if !script.starts_with(data) || !data.starts_with(&end.got) {
                return Err(format!(
                    "client {i}: bytes out of order ({} sent, {} served, {} back, {:?})",
                    script.len(),
                    data.len(),
                    end.got.len(),
                    end.reason
                ));
            }
            let closed_clean = matches!(end.reason, CloseReason::Local | CloseReason::PeerClosed);
            if clean && !closed_clean {
                return Err(format!("client {i}: {:?} without faults", end.reason));
            }
            if closed_clean && end.got != *script {
                return Err(format!(
                    "client {i}: closed cleanly with {} bytes of {} back ({} served)",
                    end.got.len(),
                    script.len(),
                    data.len()
                ));
            }
        }
        Ok(())
    }
}

/// Runs seed `seed` of the engine-level echo scenario: an engine with an
/// echo service ([`echo_service`]) on the simulated network and the
/// clients of [`echo_clients`], made by the engine's own connector.
/// Checks [`SimEngine::run`]'s invariants and [`EchoClients::check`] (the
/// server's side of each connection from its echo handler's record). The
/// trace hash.
pub(crate) fn run_echo(seed: u64) -> Result<u64, String> {
    let mut rng = Rng(seed);
    let seen = Arc::new(Mutex::new(super::sim::Seen::default()));
    let service = echo_service(&mut rng, ([192, 0, 2, 2], 0).into(), seen.clone());
    // 1 to 3 loops: connections accepted on any, clients on any
    let loops = 1 + (seed % 3) as usize;
    let mut sim = EngineBuilder::default()
        .service(service)
        .simulate(seed, loops)
        .map_err(|e| e.to_string())?;
    let addr = sim.local_addrs(0)[0];
    let mut clients = echo_clients(&mut rng, addr, ([192, 0, 2, 3], 9).into());
    for (k, (to, opts, client)) in std::mem::take(&mut clients.roots).into_iter().enumerate() {
        sim.connect(k % loops, to, opts, client);
    }
    let out = sim.run(500_000)?;
    let served = |id: ConnId| {
        let t = sim.peer_of(id)?.as_u64();
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        Some(seen.data.get(&t).cloned().unwrap_or_default())
    };
    clients.check(&served, false)?;
    Ok(out.trace)
}

/// The loopback twin of [`run_echo`]: the same seed's service and clients
/// on a real [`Engine`](crate::Engine) over 127.0.0.1 (backend `kind`,
/// one loop), the refused clients sent to a port nothing listens on.
/// Without faults every client must end cleanly with its whole echo.
#[cfg(test)]
fn run_echo_loopback(seed: u64, kind: crate::BackendKind) -> Result<(), String> {
    let mut rng = Rng(seed);
    let seen = Arc::new(Mutex::new(super::sim::Seen::default()));
    let service = echo_service(&mut rng, ([127, 0, 0, 1], 0).into(), seen);
    let engine = EngineBuilder::default()
        .threads(1)
        .backend(kind)
        .service(service)
        .start()
        .map_err(|e| e.to_string())?;
    let addr = engine.local_addrs(0)[0];
    // a port bound but not listening (kept until the end, so that nothing
    // else takes it): connects to it are refused
    let refuser = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .and_then(|s| {
            s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
            Ok(s)
        })
        .map_err(|e| e.to_string())?;
    let refused_addr = refuser
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or("no address")?;
    let mut clients = echo_clients(&mut rng, addr, refused_addr);
    for (to, opts, client) in std::mem::take(&mut clients.roots) {
        engine.loop_handle(0).connect(to, opts, client);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let done = clients.ends.lock().unwrap_or_else(|p| p.into_inner()).len();
        if done == clients.scripts.len() || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    engine.shutdown(Duration::from_secs(1));
    drop(refuser);
    clients.check(&|_| None, true)
}

#[cfg(test)]
#[test]
fn engine_echo_over_the_simulated_network_keeps_its_invariants() {
    super::sim::check_seeds(
        300,
        run_echo,
        "cargo test -p myriad --features sim --lib engine_echo",
    );
}

#[cfg(test)]
#[test]
fn engine_echo_scenarios_run_the_same_on_loopback() {
    // fewer seeds: real sockets and timers (each seed's pieces are up to
    // 20 ms apart)
    let mut failures = Vec::new();
    for seed in super::sim::seed_range(300).step_by(10) {
        for kind in [crate::BackendKind::IoUring, crate::BackendKind::Epoll] {
            if let Err(e) = run_echo_loopback(seed, kind) {
                failures.push(format!(
                    "seed {seed} on {kind:?}: {e} (replay: MYRIAD_SIM_SEED={seed} cargo test -p myriad --features sim --lib loopback)"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
