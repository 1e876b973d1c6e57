//! The connection core: slots, write queues, back-pressure, timers, limits
//! and the handler contexts. Backend-independent: it consumes
//! [`Event`]s and drives a [`Backend`] in [`Reactor::flush`].
//!
//! Handlers are only ever called from here, in three places: while a batch
//! of completions is dispatched, while timers fire, and during the flush at
//! the end of the turn. A handler's own calls on its [`Ctx`] never call a
//! handler back; they set flags (or a close request) and put the
//! connection on the dirty list, which the flush works through. That is
//! what keeps the stack flat however fast the peers answer.
//!
//! One file per concern: `slot` (the slab of connection slots, their
//! lifecycle and flags), `config` (limits, services, connect options),
//! `handle` (the thread-safe `ConnId`/`LoopHandle`), `ctx` (the handler-facing
//! `Ctx`/`LoopCx`), `dispatch` (completions → handler calls), `timers`,
//! `write` (queueing, back-pressure, connect), `lend` (sending slices of
//! the input without a copy) and `flush` (the end of the turn, the only
//! place that drives the backend).

mod config;
mod ctx;
mod dispatch;
mod flush;
mod handle;
mod lend;
mod slot;
mod timers;
mod write;

#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "sim"))]
pub(crate) mod sim;
#[cfg(any(test, feature = "sim"))]
pub(crate) mod sim_engine;
#[cfg(any(test, feature = "sim"))]
mod testkit;

pub use config::ConnectOptions;
use config::{at_after, clamp_u32};
pub(crate) use config::{dur_ms, Limits, ListenerRt, PerAddr, ServiceRt};
pub use ctx::{Ctx, LoopCx};
pub(crate) use handle::LoopShared;
pub use handle::{ConnId, LoopHandle, QUEUE_BUCKETS};
use slot::*;
use write::OutboundView;

use crate::backend::{
    token, untoken, AddMode, Backend, ConnectSpec, Event, InFlight, RecvEnd, SendOutcome, Sock,
    Sockets, Waker,
};
use crate::buf::{ChunkPool, InputPool, OutboundQueue, NIL};
use crate::filter::{DebugFactory, Filter, FilterError, FilterFactory, Outbound};
use crate::handler::{CloseReason, Handler};
use crate::stats::{LoopCounters, Stats};
use crate::timer::{TimerEntry, TimerKind, Timers};
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

pub(crate) type Task = Box<dyn FnOnce(&mut LoopCx<'_>) + Send>;
pub(crate) type Factory = Arc<dyn Fn() -> Box<dyn Handler> + Send + Sync>;

/// The per-loop connection core.
pub(crate) struct Reactor {
    pub(crate) loop_idx: u32,
    conns: Vec<Conn>,
    free_head: u32,
    live: usize,
    pool: ChunkPool,
    inputs: InputPool,
    timers: Timers,
    /// The cap on `pool.queued` (see `EngineBuilder::max_queued_per_loop`).
    max_queued: u64,
    /// Source addresses of this loop's connections, for services with a
    /// per-address limit only.
    sources: std::collections::HashMap<u32, IpAddr>,
    dirty: Vec<u32>,
    /// The loop clock as the driver last passed it ([`Reactor::set_now`],
    /// [`Reactor::tick`]; `Ctx::now`). The reactor never reads a clock
    /// itself, so that a test or a simulation owns time.
    now: Instant,
    /// The instant the loop's millisecond clock counts from.
    epoch: Instant,
    /// `now` in milliseconds since `epoch` (timers and idle times).
    now_ms: u64,
    pub(crate) shared: Arc<LoopShared>,
    pub(crate) services: Vec<ServiceRt>,
    limits: Vec<Limits>,
    pub(crate) listeners: Vec<ListenerRt>,
    accept_resume: bool,
    accept_retry_armed: bool,
    /// Every socket call that is not a completion (accept set-up,
    /// connect, addresses, shutdown, close): the reactor holds sockets
    /// only as opaque [`Sock`]s.
    socks: Box<dyn Sockets>,
    loops: Arc<OnceLock<Vec<LoopHandle>>>,
    rx: mpsc::Receiver<Task>,
    shutdown_at: Option<u64>,
    stop_listeners: bool,
    outbound_limits: Limits,
    /// Decoded application bytes of filtered connections (reused).
    scratch: Vec<u8>,
    /// Bytes of [`Ctx::write_with`] that cannot go straight into a chunk
    /// (a filtered connection, a fill larger than a chunk); reused.
    wscratch: Vec<u8>,
    /// Outbound connections still connecting whose filter starts once
    /// connected (few at a time; kept out of the slot to keep it small).
    pending_filters: Vec<(u32, FilterFactory, u32)>,
    /// The receive buffer `on_data` is handling, while slices of it may be
    /// lent ([`Ctx::write_from_input`]).
    lend_src: Option<lend::LendSrc>,
    /// Reservations for lent slices, filled when `on_data` returns.
    lends: Vec<lend::PendingLend>,
    lend_seq: u32,
}

impl Drop for Reactor {
    /// After a panic that escaped the loop, `close_all` never ran: the
    /// descriptors go now, so that the kernel stops handing this loop's
    /// listener its share of new connections (they would hang) and the
    /// loop's peers see their connections end. After `close_all` there is
    /// nothing left to do here.
    fn drop(&mut self) {
        for l in &mut self.listeners {
            if !l.removed {
                l.removed = true;
                self.socks.close(l.sock, false, &[]);
            }
        }
        for c in &mut self.conns {
            if c.phase != Phase::Free {
                self.socks.close(c.sock, false, &[]);
                // After a panic any phase may be left: no step check here.
                c.phase = Phase::Free;
                c.flags = 0;
                c.closing = Closing::No;
            }
        }
    }
}

impl Reactor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        loop_idx: u32,
        shared: Arc<LoopShared>,
        rx: mpsc::Receiver<Task>,
        loops: Arc<OnceLock<Vec<LoopHandle>>>,
        services: Vec<ServiceRt>,
        limits: Vec<Limits>,
        chunk_size: usize,
        outbound_limits: Limits,
        max_queued: u64,
        socks: Box<dyn Sockets>,
        epoch: Instant,
    ) -> Self {
        Reactor {
            max_queued,
            sources: std::collections::HashMap::new(),
            loop_idx,
            conns: Vec::new(),
            free_head: NIL,
            live: 0,
            pool: ChunkPool::new(chunk_size, 64),
            inputs: InputPool::new(1024, 1 << 20),
            timers: Timers::default(),
            dirty: Vec::with_capacity(1024),
            now_ms: 0,
            now: epoch,
            epoch,
            shared,
            services,
            limits,
            listeners: Vec::new(),
            accept_resume: false,
            accept_retry_armed: false,
            socks,
            loops,
            rx,
            shutdown_at: None,
            stop_listeners: false,
            outbound_limits,
            scratch: Vec::new(),
            wscratch: Vec::new(),
            pending_filters: Vec::new(),
            lend_src: None,
            lends: Vec::new(),
            lend_seq: 0,
        }
    }

    fn queue_histogram(&self) -> [u64; QUEUE_BUCKETS.len() + 1] {
        let mut h = [0u64; QUEUE_BUCKETS.len() + 1];
        for c in &self.conns {
            if c.phase.is_open() {
                let q = c.out.len as u64;
                let i = QUEUE_BUCKETS
                    .iter()
                    .position(|&b| q <= b)
                    .unwrap_or(QUEUE_BUCKETS.len());
                h[i] += 1;
            }
        }
        h
    }

    fn counters(&self) -> &LoopCounters {
        &self.shared.counters
    }

    /// Advances the loop clock to `now`. Never goes backwards.
    #[inline]
    pub(crate) fn set_now(&mut self, now: Instant) {
        debug_assert!(now >= self.now, "the loop clock went backwards");
        self.now = self.now.max(now);
        self.now_ms = self.now.saturating_duration_since(self.epoch).as_millis() as u64;
    }

    #[inline]
    fn now32(&self) -> u32 {
        self.now_ms as u32
    }

    /// How long the backend may sleep.
    pub(crate) fn next_timeout(&self) -> Option<Duration> {
        if !self.dirty.is_empty() || self.accept_resume || self.stop_listeners {
            return Some(Duration::ZERO);
        }
        self.timers
            .next_at()
            .map(|at| Duration::from_millis(at.saturating_sub(self.now_ms)))
    }

    pub(crate) fn begin_shutdown(&mut self, grace: Duration) {
        if self.shutdown_at.is_some() {
            return;
        }
        let at = at_after(self.now_ms, grace);
        self.shutdown_at = Some(at);
        self.stop_listeners = true;
        self.timers.push(TimerEntry {
            at_ms: at,
            slot: 0,
            gen: 0,
            kind: TimerKind::ShutdownDeadline,
        });
        for slot in 0..self.conns.len() as u32 {
            let c = &self.conns[slot as usize];
            if c.phase.is_open() && !c.is_closing() {
                self.call(slot, |h, cx| h.on_shutdown(cx));
            }
        }
    }

    /// True once shutdown is complete (no connection left) or overdue.
    /// Whether the loop may end: shutting down, with no connection left and
    /// no accept still able to hand one over (`accepts_pending`), or 2 s
    /// past the grace period whatever is left.
    pub(crate) fn finished(&self, accepts_pending: bool) -> bool {
        match self.shutdown_at {
            None => false,
            Some(at) => (self.live == 0 && !accepts_pending) || self.now_ms > at + 2000,
        }
    }

    /// Publishes whether this loop may still accept (`Engine::is_accepting`).
    pub(crate) fn shared_accepting(&self, on: bool) {
        self.shared.accepting.store(on, Ordering::Release);
    }

    /// Whether a listener of this loop is still registered.
    pub(crate) fn has_listeners(&self) -> bool {
        self.listeners.iter().any(|l| !l.removed)
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown_at.is_some()
    }
}
