//! The connection core: slots, write queues, back-pressure, timers, limits
//! and the handler contexts. Backend-independent: it consumes
//! [`Event`]s and drives a [`Backend`] in [`Core::flush`].
//!
//! Handlers are only ever called from here, in three places: while a batch
//! of completions is dispatched, while timers fire, and during the flush at
//! the end of the turn. A handler's own calls on its [`Ctx`] never call a
//! handler back; they set flags and put the connection on the dirty list,
//! which the flush works through. That is what keeps the stack flat however
//! fast the peers answer.

use crate::backend::{
    sys, token, untoken, AddMode, Backend, Event, InFlight, RecvEnd, SendOutcome,
};
use crate::buf::{ChunkPool, InputPool, OutQueue, NIL};
use crate::filter::{DebugFactory, Filter, FilterError, FilterFactory, Outbound};
use crate::handler::{CloseReason, Handler};
use crate::stats::{LoopCounters, Stats};
use crate::timer::{TimerEntry, TimerKind, Timers};
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{IntoRawFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

pub(crate) type Task = Box<dyn FnOnce(&mut LoopCx<'_>) + Send>;
pub(crate) type Factory = Arc<dyn Fn() -> Box<dyn Handler> + Send + Sync>;

/// Slots a loop may have: a token keeps 24 bits for the slot and 32 for the
/// generation (the loop index or the io_uring operation kind take the top
/// byte), so a slot must be reused four billion times before a stale
/// token (a long user timer, an id kept by a room) could match again.
const MAX_SLOTS: usize = 1 << 24;
pub(crate) const OUTBOUND: u16 = u16::MAX;

// Connection flags.
const USED: u32 = 1;
const OPEN: u32 = 1 << 1;
const CONNECTING: u32 = 1 << 2;
const NEEDS_REG: u32 = 1 << 3;
const REGISTERED: u32 = 1 << 4;
const RECV_ACTIVE: u32 = 1 << 5;
const RECV_CANCEL: u32 = 1 << 6;
const SEND_INFLIGHT: u32 = 1 << 7;
const WAIT_WRITABLE: u32 = 1 << 8;
const CONNECT_INFLIGHT: u32 = 1 << 9;
const PAUSE_USER: u32 = 1 << 10;
const PAUSE_BP: u32 = 1 << 11;
const EOF: u32 = 1 << 12;
const EOF_PENDING: u32 = 1 << 13;
const CLOSE_REQ: u32 = 1 << 14;
const ABORT_REQ: u32 = 1 << 15;
const SLOW: u32 = 1 << 16;
const OVERFLOW: u32 = 1 << 17;
const SHUT_WR_REQ: u32 = 1 << 18;
const SHUT_WR_DONE: u32 = 1 << 19;
const DIRTY: u32 = 1 << 20;
const REDELIVER: u32 = 1 << 21;
const LINGER0: u32 = 1 << 22;
const CANCEL_ALL: u32 = 1 << 23;
const COUNTED: u32 = 1 << 24;
const IDLE_ARMED: u32 = 1 << 25;
/// The filter's handshake is in progress; `on_open` has not been called.
const HANDSHAKING: u32 = 1 << 26;
/// Try to send what is queued (a TLS alert) before closing after an error.
const FLUSH_ON_CLOSE: u32 = 1 << 27;
/// A handler call panicked: the connection is aborted and counted.
const PANICKED: u32 = 1 << 28;
/// A send-progress timer is pending for this connection.
const SEND_ARMED: u32 = 1 << 29;
/// Bytes were sent since the send-progress timer was (re)armed.
const SENT_SINCE: u32 = 1 << 30;
/// Closed to bring the loop's queued bytes under its cap.
const SHED: u32 = 1 << 31;

const INFLIGHT: u32 = RECV_ACTIVE | SEND_INFLIGHT | CONNECT_INFLIGHT;
const CLOSING: u32 = CLOSE_REQ | ABORT_REQ | SLOW | OVERFLOW | PANICKED | SHED;

/// A graceful close whose queued bytes are all sent and whose sending side
/// the engine shut down: it waits for the peer's end of stream (lingering
/// close). `SHUT_WR_DONE` without `SHUT_WR_REQ` is set only here.
fn is_lingering(f: u32) -> bool {
    f & (CLOSING | SHUT_WR_REQ | SHUT_WR_DONE | EOF) == CLOSE_REQ | SHUT_WR_DONE
}

/// Closing gracefully, with the peer's stream not ended: keep receiving
/// (and discarding), so that nothing unread is left in the socket when it
/// is closed (which would send a reset that can destroy the last reply on
/// its way to the peer).
fn drains_input(f: u32) -> bool {
    f & (CLOSING | EOF) == CLOSE_REQ
}

/// Identifies a connection anywhere in one engine: its loop, slot and
/// generation. Stale ids (the connection closed, the slot was reused) are
/// detected and ignored.
///
/// ```
/// # use myriad::{Ctx, Handler, ConnId};
/// struct Remember(Option<ConnId>);
/// impl Handler for Remember {
///     fn on_open(&mut self, cx: &mut Ctx<'_>) { self.0 = Some(cx.id()); }
///     fn on_data(&mut self, _cx: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    fn new(loop_idx: u32, slot: u32, gen: u32) -> Self {
        ConnId(((loop_idx as u64) << 56) | token(slot, gen))
    }

    /// Index of the loop that owns the connection.
    ///
    /// ```
    /// # fn f(id: myriad::ConnId) -> usize {
    /// id.loop_index()
    /// # }
    /// ```
    pub fn loop_index(self) -> usize {
        (self.0 >> 56) as usize
    }

    /// The id as one number (unique among the engine's open connections;
    /// a closed connection's number may come back later).
    ///
    /// ```
    /// # fn f(id: myriad::ConnId) -> u64 {
    /// id.as_u64()
    /// # }
    /// ```
    pub fn as_u64(self) -> u64 {
        self.0
    }

    fn parts(self) -> (u32, u32) {
        untoken(self.0 & ((1 << 56) - 1))
    }
}

/// Limits applied to one connection. Durations are milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub idle_ms: u32,
    /// Close a connection whose queued bytes make no progress this long
    /// (0: never).
    pub send_ms: u32,
    pub high_water: u32,
    pub hard_limit: u32,
    pub max_input: u32,
    /// After a graceful close, wait this long for the peer's end of stream
    /// with the sending side shut down, discarding what it still sends
    /// (0: close at once). See `Core::flush_open`.
    pub linger_ms: u32,
}

/// A connection's write queue as a filter's [`Outbound`].
struct QueueOut<'a> {
    out: &'a mut OutQueue,
    pool: &'a mut ChunkPool,
}

impl Outbound for QueueOut<'_> {
    fn push(&mut self, bytes: &[u8]) {
        self.out.push(self.pool, bytes);
    }

    fn push_with(&mut self, max: usize, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> usize {
        if max <= OutQueue::max_fill(self.pool) {
            return self.out.push_with(self.pool, max, fill);
        }
        // Larger than a chunk: through a buffer of its own (rare; the TLS
        // filter asks for one record at a time).
        let mut tmp = vec![0u8; max];
        let n = fill(&mut tmp).min(max);
        self.out.push(self.pool, &tmp[..n]);
        n
    }
}

/// Writes are dropped once a connection is closing, half-closed by us, or
/// not open (yet or any more).
#[inline]
fn refuses_writes(flags: u32) -> bool {
    flags & OPEN == 0 || flags & CLOSING != 0 || flags & SHUT_WR_REQ != 0
}

/// Connections per source address of one service, shared by its loops
/// (taken on accept and close only, never on the data path).
pub(crate) type PerAddr = Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, u32>>>;

pub(crate) struct ServiceRt {
    pub factory: Factory,
    pub limits: u16,
    pub max_conns: usize,
    /// At most this many connections from one source address (0: any).
    pub max_per_addr: u32,
    pub per_addr: PerAddr,
    pub open: Arc<AtomicUsize>,
    pub nodelay: bool,
    pub filter: Option<FilterFactory>,
    pub handshake_ms: u32,
}

pub(crate) struct ListenerRt {
    pub fd: RawFd,
    pub service: u16,
    pub paused: bool,
    pub removed: bool,
}

/// Options for an outbound connection.
///
/// ```
/// use std::time::Duration;
/// let opts = myriad::ConnectOptions {
///     timeout: Duration::from_secs(3),
///     ..Default::default()
/// };
/// assert!(opts.nodelay);
/// ```
#[derive(Clone)]
pub struct ConnectOptions {
    /// Give up connecting after this long ([`CloseReason::ConnectTimeout`]).
    pub timeout: Duration,
    /// Local source address (port chosen by the kernel at connect time, with
    /// `IP_BIND_ADDRESS_NO_PORT`), to spread many connections over several
    /// loopback addresses.
    pub source: Option<IpAddr>,
    /// `TCP_NODELAY` (default on).
    pub nodelay: bool,
    /// Close with a RST instead of a FIN (leaves no TIME_WAIT behind).
    pub linger_zero: bool,
    /// Close after this long without received bytes.
    pub idle_timeout: Option<Duration>,
    /// Pause reading while this many bytes are queued for sending.
    pub write_high_water: usize,
    /// Close the connection if this many bytes are queued.
    pub write_hard_limit: usize,
    /// Close the connection if this many unconsumed input bytes pile up.
    pub max_input: usize,
    /// A filter (TLS client) for the connection; `on_open` waits for its
    /// handshake.
    pub filter: Option<FilterFactory>,
    /// Close if the filter's handshake takes longer than this.
    pub handshake_timeout: Duration,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("timeout", &self.timeout)
            .field("source", &self.source)
            .field("nodelay", &self.nodelay)
            .field("linger_zero", &self.linger_zero)
            .field("idle_timeout", &self.idle_timeout)
            .field("write_high_water", &self.write_high_water)
            .field("write_hard_limit", &self.write_hard_limit)
            .field("max_input", &self.max_input)
            .field("filter", &DebugFactory(&self.filter))
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            timeout: Duration::from_secs(10),
            source: None,
            nodelay: true,
            linger_zero: false,
            idle_timeout: None,
            write_high_water: 1 << 20,
            write_hard_limit: 64 << 20,
            max_input: 16 << 20,
            filter: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

pub(crate) fn dur_ms(d: Option<Duration>) -> u32 {
    d.map_or(0, |d| d.as_millis().clamp(1, u32::MAX as u128) as u32)
}

fn clamp_u32(v: usize) -> u32 {
    v.min(u32::MAX as usize) as u32
}

/// State shared between a loop and the handles that post to it.
pub(crate) struct LoopShared {
    pub waker: Arc<sys::EventFd>,
    pub notified: AtomicBool,
    pub counters: LoopCounters,
    /// Filter (TLS) failures by kind. A lock, but only taken when a
    /// connection fails, never on the data path.
    pub filter_errors: std::sync::Mutex<Vec<(&'static str, u64)>>,
    /// The loop may still accept connections (a listener is registered, or
    /// a removed one's accept has not ended yet).
    pub accepting: AtomicBool,
}

impl LoopShared {
    pub(crate) fn count_filter_error(&self, kind: &'static str) {
        LoopCounters::add(&self.counters.err_filter, 1);
        let mut v = match self.filter_errors.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match v.iter_mut().find(|e| e.0 == kind) {
            Some(e) => e.1 += 1,
            None => v.push((kind, 1)),
        }
    }
}

/// A handle to one event loop, usable from any thread: post work to it,
/// open outbound connections on it, read its counters.
///
/// ```no_run
/// # fn f(engine: &myriad::Engine) {
/// let h = engine.loop_handle(0);
/// h.post(|lcx| println!("running on loop {}", lcx.loop_index()));
/// # }
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    idx: usize,
    tx: mpsc::Sender<Task>,
    shared: Arc<LoopShared>,
}

impl LoopHandle {
    pub(crate) fn accepting(&self) -> bool {
        self.shared.accepting.load(Ordering::Acquire)
    }

    pub(crate) fn new(idx: usize, tx: mpsc::Sender<Task>, shared: Arc<LoopShared>) -> Self {
        LoopHandle { idx, tx, shared }
    }

    /// The loop's index.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine) {
    /// assert_eq!(engine.loop_handle(1).index(), 1);
    /// # }
    /// ```
    pub fn index(&self) -> usize {
        self.idx
    }

    /// Runs `f` on the loop's thread at its next turn. Returns `false` if
    /// the loop has exited. Costs one allocation and, when the loop sleeps,
    /// one eventfd write.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine, id: myriad::ConnId) {
    /// engine.loop_handle(id.loop_index()).post(move |lcx| {
    ///     lcx.write_to(id, b"pushed from another thread\n");
    /// });
    /// # }
    /// ```
    pub fn post(&self, f: impl FnOnce(&mut LoopCx<'_>) + Send + 'static) -> bool {
        if self.tx.send(Box::new(f)).is_err() {
            return false;
        }
        if !self.shared.notified.swap(true, Ordering::SeqCst) {
            self.shared.waker.notify();
        }
        true
    }

    /// Opens an outbound connection on this loop, driven by `handler`.
    /// Failures arrive as [`Handler::on_close`] with
    /// [`CloseReason::ConnectFailed`] or [`CloseReason::ConnectTimeout`].
    ///
    /// ```no_run
    /// # use myriad::{Ctx, Handler, ConnectOptions};
    /// # struct Client;
    /// # impl Handler for Client { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// # fn f(engine: &myriad::Engine) {
    /// let addr = "127.0.0.1:7000".parse().unwrap();
    /// engine.loop_handle(0).connect(addr, ConnectOptions::default(), Client);
    /// # }
    /// ```
    pub fn connect<H: Handler + Send>(
        &self,
        addr: SocketAddr,
        opts: ConnectOptions,
        handler: H,
    ) -> bool {
        self.post(move |lcx| {
            let _ = lcx.connect(addr, &opts, Box::new(handler));
        })
    }

    /// A histogram of the write-queue depth of this loop's open
    /// connections (buckets: [`QUEUE_BUCKETS`] upper bounds in bytes, then
    /// everything above). Computed on the loop, when asked: nothing is
    /// tracked per write. `None` if the loop does not answer within 1 s.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine) {
    /// if let Some(h) = engine.loop_handle(0).write_queue_histogram() { println!("{h:?}"); }
    /// # }
    /// ```
    pub fn write_queue_histogram(&self) -> Option<[u64; QUEUE_BUCKETS.len() + 1]> {
        let (tx, rx) = mpsc::channel();
        if !self.post(move |lcx| {
            let _ = tx.send(lcx.core.queue_histogram());
        }) {
            return None;
        }
        rx.recv_timeout(Duration::from_secs(1)).ok()
    }

    /// Filter (TLS) failures of this loop by kind.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine) {
    /// println!("{:?}", engine.loop_handle(0).filter_errors());
    /// # }
    /// ```
    pub fn filter_errors(&self) -> Vec<(&'static str, u64)> {
        match self.shared.filter_errors.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The loop's counters right now.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine) {
    /// println!("{} open", engine.loop_handle(0).stats().open);
    /// # }
    /// ```
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }
}

/// Upper bounds (bytes) of the write-queue depth histogram buckets.
pub const QUEUE_BUCKETS: [u64; 6] = [0, 1 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20];

/// One connection slot. Kept small: this is most of the user-space cost of
/// an idle connection (the handler box is free for zero-sized handlers).
/// What most connections never use is behind thin (8-byte) pointers: the
/// filter (TLS) and the leftover input, which is only there while a handler
/// leaves bytes unconsumed (72 bytes in all, `slot_is_small`).
struct Conn {
    handler: Option<Box<dyn Handler>>,
    /// TLS or another filter; `None` for plain connections. Boxed twice so
    /// that the slot holds a thin pointer (filtered connections pay one
    /// more small allocation, plain ones 8 bytes less).
    filter: Option<Box<Box<dyn Filter>>>,
    /// Leftover input (see [`Conn::take_input`]); boxed for a thin pointer.
    #[allow(clippy::box_collection)]
    input: Option<Box<Vec<u8>>>,
    out: OutQueue,
    fd: RawFd,
    gen: u32,
    flags: u32,
    /// Milliseconds (loop clock, wrapping) of the last received bytes; for a
    /// free slot, the index of the next free slot.
    last_active: u32,
    idle_ms: u32,
    limits: u16,
    service: u16,
    /// The pending deadline ([`Ctx::set_deadline`]): [`DEADLINE_SET`] plus
    /// the sequence number of its timer entry; without that bit, the last
    /// sequence number used.
    deadline: u16,
}

/// Bit of [`Conn::deadline`] set while a deadline is pending.
const DEADLINE_SET: u16 = 1 << 15;

impl Conn {
    /// Bytes of leftover input.
    #[inline]
    fn input_len(&self) -> usize {
        self.input.as_ref().map_or(0, |v| v.len())
    }

    /// Takes the leftover input (an empty `Vec` when there is none).
    #[inline]
    fn take_input(&mut self) -> Vec<u8> {
        self.input.take().map_or_else(Vec::new, |b| *b)
    }

    /// Keeps `v` as the leftover input (nothing for a `Vec` without memory).
    #[inline]
    fn set_input(&mut self, v: Vec<u8>) {
        self.input = (v.capacity() > 0).then(|| Box::new(v));
    }
}

/// The per-loop connection core.
pub(crate) struct Core {
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
    now_ms: u64,
    /// The loop's clock (`Ctx::now`): read once per turn, after the wait.
    now: Instant,
    start: Instant,
    pub(crate) shared: Arc<LoopShared>,
    pub(crate) services: Vec<ServiceRt>,
    limits: Vec<Limits>,
    pub(crate) listeners: Vec<ListenerRt>,
    accept_resume: bool,
    accept_retry_armed: bool,
    /// A spare descriptor for accept-and-close when out of descriptors
    /// (`sys::reject_pending`).
    reserve_fd: Option<std::os::fd::OwnedFd>,
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
}

impl Drop for Core {
    /// After a panic that escaped the loop, `close_all` never ran: the
    /// descriptors go now, so that the kernel stops handing this loop's
    /// listener its share of new connections (they would hang) and the
    /// loop's peers see their connections end. After `close_all` there is
    /// nothing left to do here.
    fn drop(&mut self) {
        for l in &mut self.listeners {
            if !l.removed {
                l.removed = true;
                sys::close(l.fd);
            }
        }
        for c in &mut self.conns {
            if c.flags & USED != 0 {
                sys::close(c.fd);
                c.flags = 0;
            }
        }
    }
}

impl Core {
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
    ) -> Self {
        Core {
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
            now: Instant::now(),
            start: Instant::now(),
            shared,
            services,
            limits,
            listeners: Vec::new(),
            accept_resume: false,
            accept_retry_armed: false,
            reserve_fd: sys::open_reserve(),
            loops,
            rx,
            shutdown_at: None,
            stop_listeners: false,
            outbound_limits,
            scratch: Vec::new(),
            wscratch: Vec::new(),
            pending_filters: Vec::new(),
        }
    }

    fn queue_histogram(&self) -> [u64; QUEUE_BUCKETS.len() + 1] {
        let mut h = [0u64; QUEUE_BUCKETS.len() + 1];
        for c in &self.conns {
            if c.flags & OPEN != 0 {
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

    pub(crate) fn update_now(&mut self) {
        let now = Instant::now();
        self.now = now;
        self.now_ms = now.saturating_duration_since(self.start).as_millis() as u64;
    }

    #[inline]
    fn now32(&self) -> u32 {
        self.now_ms as u32
    }

    // ----- slots -----

    fn alloc(
        &mut self,
        fd: RawFd,
        flags: u32,
        handler: Box<dyn Handler>,
        limits: u16,
        service: u16,
    ) -> u32 {
        let idle_ms = self.limits[limits as usize].idle_ms;
        let now = self.now32();
        self.live += 1;
        if self.free_head != NIL {
            let slot = self.free_head;
            let c = &mut self.conns[slot as usize];
            self.free_head = c.last_active;
            c.handler = Some(handler);
            c.fd = fd;
            c.flags = flags | USED;
            c.last_active = now;
            c.idle_ms = idle_ms;
            c.limits = limits;
            c.service = service;
            c.deadline = 0;
            slot
        } else {
            let slot = self.conns.len() as u32;
            self.conns.push(Conn {
                handler: Some(handler),
                filter: None,
                input: None,
                out: OutQueue::default(),
                fd,
                gen: 0,
                flags: flags | USED,
                last_active: now,
                idle_ms,
                limits,
                service,
                deadline: 0,
            });
            slot
        }
    }

    fn free_slot(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        c.gen = c.gen.wrapping_add(1);
        c.flags = 0;
        c.handler = None;
        c.filter = None;
        c.fd = -1;
        c.last_active = self.free_head;
        self.free_head = slot;
        self.live -= 1;
    }

    /// The slot of a live token (in use and same generation).
    #[inline]
    fn slot_of(&self, token: u64) -> Option<u32> {
        let (slot, gen) = untoken(token);
        let c = self.conns.get(slot as usize)?;
        (c.flags & USED != 0 && c.gen == gen).then_some(slot)
    }

    fn slot_of_id(&self, id: ConnId) -> Option<u32> {
        if id.loop_index() != self.loop_idx as usize {
            return None;
        }
        let (slot, gen) = id.parts();
        let c = self.conns.get(slot as usize)?;
        (c.flags & OPEN != 0 && c.gen == gen).then_some(slot)
    }

    #[inline]
    fn mark_dirty(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.flags & DIRTY == 0 {
            c.flags |= DIRTY;
            self.dirty.push(slot);
        }
    }

    fn arm_idle(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.idle_ms > 0 && c.flags & IDLE_ARMED == 0 {
            c.flags |= IDLE_ARMED;
            let e = TimerEntry {
                at_ms: self.now_ms + c.idle_ms as u64,
                slot,
                gen: c.gen,
                kind: TimerKind::Idle,
            };
            self.timers.push(e);
        }
    }

    // ----- handler calls -----

    /// Calls `f` with the connection's handler and a context. The handler is
    /// moved out of its slot for the call, so a (buggy) re-entrant call for
    /// the same connection finds no handler and does nothing.
    fn call<R: Default>(
        &mut self,
        slot: u32,
        f: impl FnOnce(&mut dyn Handler, &mut Ctx<'_>) -> R,
    ) -> R {
        let c = &mut self.conns[slot as usize];
        let gen = c.gen;
        let Some(mut h) = c.handler.take() else {
            return R::default();
        };
        let r = {
            let mut cx = Ctx {
                lcx: LoopCx { core: self },
                slot,
                gen,
            };
            // One panic-catching point for every handler call (built-in
            // handlers, protocol layers and plugins alike): a panic costs
            // its own connection, never the loop's other connections.
            // `AssertUnwindSafe`: after a panic the handler is only asked
            // to clean up (`on_close`) and then dropped, never used again.
            panic::catch_unwind(AssertUnwindSafe(|| f(&mut *h, &mut cx)))
        };
        let c = &mut self.conns[slot as usize];
        let same = c.gen == gen;
        if same && c.flags & OPEN != 0 && c.handler.is_none() {
            c.handler = Some(h);
        }
        match r {
            Ok(r) => r,
            Err(_) => {
                if same {
                    self.set_flag(slot, PANICKED);
                }
                R::default()
            }
        }
    }

    /// Ends a connection from the handler's point of view: counts it, calls
    /// `on_close`, drops the handler. The socket is cleaned up by the flush.
    fn finalize(&mut self, slot: u32, reason: CloseReason) {
        let c = &mut self.conns[slot as usize];
        if c.flags & OPEN == 0 {
            return;
        }
        c.flags &= !(OPEN | HANDSHAKING);
        let counted = c.flags & COUNTED != 0;
        let service = c.service;
        let input = c.take_input();
        let handler = c.handler.take();
        self.inputs.give(input);
        if counted {
            LoopCounters::sub(&self.counters().open, 1);
            LoopCounters::add(&self.counters().closed, 1);
        }
        if service != OUTBOUND {
            if let Some(s) = self.services.get(service as usize) {
                s.open.fetch_sub(1, Ordering::Relaxed);
                if let Some(ip) = self.sources.remove(&slot) {
                    let mut m = s.per_addr.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(n) = m.get_mut(&ip) {
                        *n -= 1;
                        if *n == 0 {
                            m.remove(&ip);
                        }
                    }
                }
            }
            if self.listeners.iter().any(|l| l.paused) {
                self.accept_resume = true;
            }
        }
        if let Some(i) = self.pending_filters.iter().position(|p| p.0 == slot) {
            self.pending_filters.swap_remove(i);
        }
        if let Some(mut h) = handler {
            let gen = self.conns[slot as usize].gen;
            let mut cx = Ctx {
                lcx: LoopCx { core: self },
                slot,
                gen,
            };
            // A panic here has nothing left to close: it is counted and
            // the handler dropped.
            if panic::catch_unwind(AssertUnwindSafe(|| h.on_close(&mut cx, reason))).is_err() {
                LoopCounters::add(&self.counters().err_handler_panic, 1);
            }
        }
        self.mark_dirty(slot);
    }

    // ----- events -----

    pub(crate) fn handle_event(&mut self, ev: Event<'_>) {
        match ev {
            Event::Recv { token, data } => self.on_recv(token, data),
            Event::Sent { token, res } => self.on_sent(token, res),
            Event::RecvEnd { token, how } => self.on_recv_end(token, how),
            Event::Accept { listener, res } => self.on_accept(listener, res),
            Event::Writable { token } => {
                if let Some(slot) = self.slot_of(token) {
                    self.conns[slot as usize].flags &= !WAIT_WRITABLE;
                    self.mark_dirty(slot);
                }
            }
            Event::Connected { token, res } => self.on_connected(token, res),
            Event::Wake => {}
        }
    }

    fn on_accept(&mut self, listener: usize, res: Result<RawFd, i32>) {
        let fd = match res {
            Ok(fd) => fd,
            Err(errno) => {
                LoopCounters::add(&self.counters().err_accept, 1);
                let err = io::Error::from_raw_os_error(errno);
                let mut rejected = 0;
                if let Some(l) = self.listeners.get_mut(listener) {
                    l.paused = true;
                    if matches!(errno, libc::EMFILE | libc::ENFILE) && !l.removed {
                        rejected = sys::reject_pending(l.fd, &mut self.reserve_fd, 256);
                    }
                }
                if rejected > 0 {
                    let c = self.counters();
                    LoopCounters::add(&c.refused, rejected as u64);
                    LoopCounters::add(&c.refused_fd_limit, rejected as u64);
                }
                tracing::warn!(loop_idx = self.loop_idx, error = %err, rejected, "accept failed; waiting connections closed, accepts paused until a descriptor frees");
                if !self.accept_retry_armed {
                    self.accept_retry_armed = true;
                    self.timers.push(TimerEntry {
                        at_ms: self.now_ms + 250,
                        slot: 0,
                        gen: 0,
                        kind: TimerKind::AcceptRetry,
                    });
                }
                return;
            }
        };
        let Some(l) = self.listeners.get(listener) else {
            sys::close(fd);
            return;
        };
        // A connection accepted just before the listener was removed (a
        // reload handing the socket to a new engine) is served here: closing
        // it would reset a client that did nothing wrong.
        if self.shutdown_at.is_some() {
            sys::close(fd);
            return;
        }
        let service = l.service;
        let svc = &self.services[service as usize];
        // Reserve first, then check: two loops accepting at once can never
        // both take the last place.
        let full = self.free_head == NIL && self.conns.len() >= MAX_SLOTS;
        if full || svc.open.fetch_add(1, Ordering::Relaxed) >= svc.max_conns {
            if full {
                svc.open.fetch_add(1, Ordering::Relaxed);
            }
            svc.open.fetch_sub(1, Ordering::Relaxed);
            sys::close(fd);
            LoopCounters::add(&self.counters().refused, 1);
            return;
        }
        let mut source = None;
        if svc.max_per_addr > 0 {
            // One getpeername per accept, only for services with the limit.
            let ip = sys::peer_addr(fd).map(|a| a.ip()).ok();
            let admitted = ip.is_some_and(|ip| {
                let mut m = svc.per_addr.lock().unwrap_or_else(|p| p.into_inner());
                let n = m.entry(ip).or_insert(0);
                if *n >= svc.max_per_addr {
                    false
                } else {
                    *n += 1;
                    true
                }
            });
            if !admitted {
                svc.open.fetch_sub(1, Ordering::Relaxed);
                sys::close(fd);
                LoopCounters::add(&self.counters().refused, 1);
                LoopCounters::add(&self.counters().refused_per_addr, 1);
                return;
            }
            source = ip;
        }
        let svc = &self.services[service as usize];
        if svc.nodelay {
            // Not inherited from the listener on every kernel; a failure
            // (the peer is already gone) shows up on the first recv.
            let _ = sys::set_nodelay(fd);
        }
        let handler = (svc.factory)();
        let filter = svc.filter.as_ref().map(|f| f());
        let handshake_ms = svc.handshake_ms;
        let limits = svc.limits;
        let slot = self.alloc(fd, OPEN | NEEDS_REG | COUNTED, handler, limits, service);
        if let Some(ip) = source {
            self.sources.insert(slot, ip);
        }
        LoopCounters::add(&self.counters().accepted, 1);
        LoopCounters::add(&self.counters().open, 1);
        self.arm_idle(slot);
        self.mark_dirty(slot);
        match filter {
            Some(f) => self.start_filter(slot, f, handshake_ms, false),
            None => self.call(slot, |h, cx| h.on_open(cx)),
        }
    }

    /// Attaches a filter; `on_open` waits for its handshake (bounded by
    /// `handshake_ms`).
    fn start_filter(&mut self, slot: u32, mut f: Box<dyn Filter>, handshake_ms: u32, client: bool) {
        let gen = self.conns[slot as usize].gen;
        let started = if client {
            let Core { conns, pool, .. } = self;
            let out = &mut conns[slot as usize].out;
            f.start(&mut QueueOut { out, pool })
        } else {
            Ok(())
        };
        let handshaking = f.is_handshaking();
        let c = &mut self.conns[slot as usize];
        c.filter = Some(Box::new(f));
        if let Err(e) = started {
            c.flags |= FLUSH_ON_CLOSE;
            self.shared.count_filter_error(e.kind);
            self.finalize(slot, CloseReason::Filter(e));
            return;
        }
        self.mark_dirty(slot);
        if handshaking {
            self.conns[slot as usize].flags |= HANDSHAKING;
            if handshake_ms > 0 {
                self.timers.push(TimerEntry {
                    at_ms: self.now_ms + handshake_ms as u64,
                    slot,
                    gen,
                    kind: TimerKind::Handshake,
                });
            }
        } else {
            self.call(slot, |h, cx| h.on_open(cx));
        }
    }

    fn on_recv(&mut self, token: u64, data: &mut [u8]) {
        let Some(slot) = self.slot_of(token) else {
            return;
        };
        let counters = &self.shared.counters;
        LoopCounters::add(&counters.bytes_in, data.len() as u64);
        LoopCounters::add(&counters.reads, 1);
        let now = self.now32();
        let c = &mut self.conns[slot as usize];
        if c.flags & OPEN == 0 || c.flags & CLOSING != 0 {
            return;
        }
        c.last_active = now;
        if c.filter.is_some() {
            self.recv_filtered(slot, data);
        } else {
            self.deliver_bytes(slot, data);
        }
    }

    /// Runs received bytes through the connection's filter, then delivers
    /// the application bytes they carried.
    fn recv_filtered(&mut self, slot: u32, data: &mut [u8]) {
        let Some(mut f) = self.conns[slot as usize].filter.take() else {
            return;
        };
        let mut app = std::mem::take(&mut self.scratch);
        app.clear();
        let res = {
            let Core { conns, pool, .. } = self;
            let out = &mut conns[slot as usize].out;
            f.decode(data, &mut app, &mut QueueOut { out, pool })
        };
        let done_handshake = !f.is_handshaking();
        let c = &mut self.conns[slot as usize];
        c.filter = Some(f);
        self.mark_dirty(slot);
        if let Err(e) = res {
            self.scratch = app;
            let c = &mut self.conns[slot as usize];
            c.flags |= FLUSH_ON_CLOSE;
            self.shared.count_filter_error(e.kind);
            self.finalize(slot, CloseReason::Filter(e));
            return;
        }
        let c = &mut self.conns[slot as usize];
        if done_handshake && c.flags & HANDSHAKING != 0 {
            c.flags &= !HANDSHAKING;
            self.call(slot, |h, cx| h.on_open(cx));
        }
        let c = &self.conns[slot as usize];
        if !app.is_empty() && c.flags & OPEN != 0 && c.flags & CLOSING == 0 {
            self.deliver_bytes(slot, &mut app[..]);
        }
        // Keep the scratch buffer, but not a huge one.
        if app.capacity() <= 1 << 20 {
            self.scratch = app;
        }
    }

    /// Hands application bytes to the handler, honouring pauses and kept
    /// input.
    fn deliver_bytes(&mut self, slot: u32, data: &mut [u8]) {
        let c = &self.conns[slot as usize];
        if c.flags & (PAUSE_USER | PAUSE_BP | CONNECTING | HANDSHAKING) != 0 {
            // Arrived after reading was paused (the cancel was in flight):
            // keep it for when reading resumes.
            self.append_input(slot, data);
            return;
        }
        if c.input_len() == 0 {
            let n = data.len();
            let consumed = self.call(slot, |h, cx| h.on_data(cx, data)).min(n);
            if consumed < n {
                self.append_input(slot, &data[consumed..]);
            }
        } else if self.append_input(slot, data) {
            self.deliver_input(slot);
        }
    }

    /// Appends to the connection's leftover input; false if over the limit
    /// (the connection is then closed with [`CloseReason::InputOverflow`]).
    fn append_input(&mut self, slot: u32, data: &[u8]) -> bool {
        let c = &mut self.conns[slot as usize];
        if c.flags & OPEN == 0 {
            return false;
        }
        let max = self.limits[c.limits as usize].max_input as usize;
        if c.input_len() + data.len() > max {
            c.flags |= OVERFLOW;
            self.mark_dirty(slot);
            return false;
        }
        let inputs = &mut self.inputs;
        c.input
            .get_or_insert_with(|| Box::new(inputs.take()))
            .extend_from_slice(data);
        true
    }

    fn deliver_input(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        let mut buf = c.take_input();
        if buf.is_empty() {
            self.inputs.give(buf);
            return;
        }
        let consumed = self
            .call(slot, |h, cx| h.on_data(cx, &mut buf[..]))
            .min(buf.len());
        let c = &mut self.conns[slot as usize];
        if consumed == buf.len() || c.flags & OPEN == 0 {
            self.inputs.give(buf);
        } else {
            buf.drain(..consumed);
            let old = c.take_input();
            if !old.is_empty() {
                // Bytes were appended meanwhile (cannot happen today: input
                // is only appended by the loop, never by a handler); keep order.
                buf.extend_from_slice(&old);
            }
            c.set_input(buf);
            self.inputs.give(old);
        }
    }

    fn on_recv_end(&mut self, token: u64, how: RecvEnd) {
        let Some(slot) = self.slot_of(token) else {
            return;
        };
        let c = &mut self.conns[slot as usize];
        c.flags &= !(RECV_ACTIVE | RECV_CANCEL);
        match how {
            RecvEnd::Eof => {
                // (A connection being torn down ends its receive with a
                // read-side shutdown, which also reads as an end of stream:
                // that is no news from the peer.)
                if c.flags & EOF == 0 && c.flags & OPEN != 0 {
                    c.flags |= EOF | EOF_PENDING;
                    if let Some(f) = c.filter.as_mut() {
                        // A TLS peer that closes without close_notify may
                        // have truncated the stream: count it.
                        if let Err(e) = f.eof() {
                            self.shared.count_filter_error(e.kind);
                        }
                    }
                }
            }
            RecvEnd::Stopped => {}
            RecvEnd::NoBuffers => LoopCounters::add(&self.shared.counters.ring_exhausted, 1),
            RecvEnd::Error(errno) => {
                c.flags |= EOF;
                if c.flags & OPEN != 0 {
                    LoopCounters::add(&self.shared.counters.err_reset, 1);
                    self.finalize(slot, CloseReason::Io(io::Error::from_raw_os_error(errno)));
                }
            }
        }
        self.mark_dirty(slot);
    }

    fn on_sent(&mut self, token: u64, res: i32) {
        let Some(slot) = self.slot_of(token) else {
            return;
        };
        let c = &mut self.conns[slot as usize];
        c.flags &= !SEND_INFLIGHT;
        self.mark_dirty(slot);
        if res < 0 {
            if self.conns[slot as usize].flags & OPEN != 0 {
                LoopCounters::add(&self.shared.counters.err_reset, 1);
                self.finalize(slot, CloseReason::Io(io::Error::from_raw_os_error(-res)));
            }
            return;
        }
        let counters = &self.shared.counters;
        LoopCounters::add(&counters.bytes_out, res as u64);
        LoopCounters::add(&counters.writes, 1);
        let c = &mut self.conns[slot as usize];
        if res > 0 {
            c.flags |= SENT_SINCE;
        }
        c.out.advance(&mut self.pool, res as usize);
        self.arm_send(slot);
        let c = &self.conns[slot as usize];
        if c.out.is_empty() && c.flags & OPEN != 0 {
            self.drained(slot);
        }
    }

    /// Arms the send-progress timer if bytes are left behind after a send
    /// (the peer's window or our socket buffer is full). A reply sent whole
    /// in one go, the common case, costs no timer at all.
    fn arm_send(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.out.is_empty() || c.flags & (SEND_ARMED | OPEN) != OPEN {
            return;
        }
        let send_ms = self.limits[c.limits as usize].send_ms;
        if send_ms > 0 {
            c.flags = (c.flags | SEND_ARMED) & !SENT_SINCE;
            let e = TimerEntry {
                at_ms: self.now_ms + u64::from(send_ms),
                slot,
                gen: c.gen,
                kind: TimerKind::Send,
            };
            self.timers.push(e);
        }
    }

    fn drained(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.flags & PAUSE_BP != 0 {
            // Input that arrived while the pause took effect is delivered
            // now, not only when the peer sends again.
            c.flags = (c.flags & !PAUSE_BP) | REDELIVER;
            self.mark_dirty(slot);
        }
        if self.conns[slot as usize].flags & CLOSING == 0 {
            self.call(slot, |h, cx| h.on_drain(cx));
        }
    }

    fn on_connected(&mut self, token: u64, res: i32) {
        let Some(slot) = self.slot_of(token) else {
            return;
        };
        let c = &mut self.conns[slot as usize];
        c.flags &= !CONNECT_INFLIGHT;
        self.mark_dirty(slot);
        let c = &mut self.conns[slot as usize];
        if c.flags & OPEN == 0 || c.flags & CONNECTING == 0 {
            return;
        }
        let err = if res < 0 {
            Some(io::Error::from_raw_os_error(-res))
        } else {
            match sys::take_socket_error(c.fd) {
                Ok(e) => e,
                Err(e) => Some(e),
            }
        };
        if let Some(e) = err {
            LoopCounters::add(&self.shared.counters.err_connect, 1);
            self.finalize(slot, CloseReason::ConnectFailed(e));
            return;
        }
        let now = self.now32();
        let c = &mut self.conns[slot as usize];
        c.flags = (c.flags & !CONNECTING) | COUNTED;
        c.last_active = now;
        LoopCounters::add(&self.shared.counters.connected, 1);
        LoopCounters::add(&self.shared.counters.open, 1);
        self.arm_idle(slot);
        match self.pending_filters.iter().position(|p| p.0 == slot) {
            Some(i) => {
                let (_, factory, ms) = self.pending_filters.swap_remove(i);
                self.start_filter(slot, factory(), ms, true);
            }
            None => self.call(slot, |h, cx| h.on_open(cx)),
        }
    }

    // ----- timers and tasks -----

    /// Fires due timers and runs posted tasks.
    pub(crate) fn tick(&mut self) {
        self.update_now();
        while let Some(t) = self.timers.pop_due(self.now_ms) {
            self.fire(t);
        }
        let conns = &self.conns;
        self.timers.maybe_compact(|t| match t.kind {
            TimerKind::AcceptRetry | TimerKind::ShutdownDeadline => true,
            TimerKind::Deadline { seq, .. } => conns.get(t.slot as usize).is_some_and(|c| {
                c.flags & OPEN != 0 && c.gen == t.gen && c.deadline == DEADLINE_SET | seq
            }),
            _ => conns
                .get(t.slot as usize)
                .is_some_and(|c| c.flags & OPEN != 0 && c.gen == t.gen),
        });
        LoopCounters::set(&self.shared.counters.timers, self.timers.len() as u64);
        self.shared.notified.store(false, Ordering::SeqCst);
        // Bounded: tasks posted by tasks run at the next turn.
        for _ in 0..4096 {
            let Ok(task) = self.rx.try_recv() else { break };
            // A posted task that panics loses its own work, not the loop.
            let r = panic::catch_unwind(AssertUnwindSafe(|| task(&mut LoopCx { core: self })));
            if r.is_err() {
                LoopCounters::add(&self.shared.counters.err_handler_panic, 1);
            }
        }
    }

    fn timer_target(&self, t: &TimerEntry) -> Option<u32> {
        let c = self.conns.get(t.slot as usize)?;
        (c.flags & OPEN != 0 && c.gen == t.gen).then_some(t.slot)
    }

    fn fire(&mut self, t: TimerEntry) {
        match t.kind {
            TimerKind::Idle => {
                let Some(slot) = self.timer_target(&t) else {
                    return;
                };
                let now = self.now32();
                let c = &mut self.conns[slot as usize];
                if c.idle_ms == 0 {
                    c.flags &= !IDLE_ARMED;
                    return;
                }
                let elapsed = now.wrapping_sub(c.last_active);
                if elapsed >= c.idle_ms {
                    c.flags &= !IDLE_ARMED;
                    LoopCounters::add(&self.shared.counters.err_idle_timeout, 1);
                    self.finalize(slot, CloseReason::IdleTimeout);
                } else {
                    let at = self.now_ms + (c.idle_ms - elapsed) as u64;
                    self.timers.push(TimerEntry { at_ms: at, ..t });
                }
            }
            TimerKind::Linger => {
                let Some(slot) = self.timer_target(&t) else {
                    return;
                };
                if is_lingering(self.conns[slot as usize].flags) {
                    self.finalize(slot, CloseReason::Local);
                }
            }
            TimerKind::Connect => {
                let Some(slot) = self.timer_target(&t) else {
                    return;
                };
                if self.conns[slot as usize].flags & CONNECTING != 0 {
                    LoopCounters::add(&self.shared.counters.err_connect_timeout, 1);
                    self.finalize(slot, CloseReason::ConnectTimeout);
                }
            }
            TimerKind::Handshake => {
                let Some(slot) = self.timer_target(&t) else {
                    return;
                };
                if self.conns[slot as usize].flags & HANDSHAKING != 0 {
                    LoopCounters::add(&self.shared.counters.err_handshake_timeout, 1);
                    self.finalize(slot, CloseReason::HandshakeTimeout);
                }
            }
            TimerKind::Deadline { token, seq } => {
                let Some(slot) = self.timer_target(&t) else {
                    return;
                };
                let c = &mut self.conns[slot as usize];
                if c.deadline != DEADLINE_SET | seq {
                    return;
                }
                c.deadline = seq;
                if c.flags & CLOSING == 0 {
                    self.call(slot, |h, cx| h.on_timer(cx, token));
                }
            }
            TimerKind::User(token) => {
                let Some(slot) = self.timer_target(&t) else {
                    return;
                };
                if self.conns[slot as usize].flags & CLOSING == 0 {
                    self.call(slot, |h, cx| h.on_timer(cx, token));
                }
            }
            TimerKind::Send => {
                let Some(slot) = self.timer_target(&t) else {
                    return;
                };
                let send_ms = {
                    let c = &self.conns[slot as usize];
                    self.limits[c.limits as usize].send_ms
                };
                let c = &mut self.conns[slot as usize];
                if c.out.is_empty() || send_ms == 0 {
                    c.flags &= !SEND_ARMED;
                } else if c.flags & SENT_SINCE != 0 {
                    c.flags &= !SENT_SINCE;
                    let at = self.now_ms + u64::from(send_ms);
                    self.timers.push(TimerEntry { at_ms: at, ..t });
                } else {
                    c.flags = (c.flags & !SEND_ARMED) | LINGER0;
                    LoopCounters::add(&self.shared.counters.err_send_timeout, 1);
                    self.finalize(slot, CloseReason::SendTimeout);
                }
            }
            TimerKind::AcceptRetry => {
                self.accept_retry_armed = false;
                self.accept_resume = true;
            }
            TimerKind::ShutdownDeadline => {
                for slot in 0..self.conns.len() as u32 {
                    let f = self.conns[slot as usize].flags;
                    if f & OPEN == 0 {
                        continue;
                    }
                    if is_lingering(f) {
                        // closed by its handler, everything sent: only
                        // the wait for the peer's FIN is cut short
                        self.finalize(slot, CloseReason::Local);
                    } else {
                        self.conns[slot as usize].flags |= LINGER0;
                        self.finalize(slot, CloseReason::Shutdown);
                    }
                }
            }
        }
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
        self.update_now();
        let at = self.now_ms + grace.as_millis() as u64;
        self.shutdown_at = Some(at);
        self.stop_listeners = true;
        self.timers.push(TimerEntry {
            at_ms: at,
            slot: 0,
            gen: 0,
            kind: TimerKind::ShutdownDeadline,
        });
        for slot in 0..self.conns.len() as u32 {
            let f = self.conns[slot as usize].flags;
            if f & OPEN != 0 && f & CLOSING == 0 {
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

    // ----- flush: the only place that drives the backend -----

    /// Applies listener changes, then works through the dirty list.
    pub(crate) fn flush<B: Backend>(&mut self, be: &mut B) {
        if self.stop_listeners {
            self.stop_listeners = false;
            for (i, l) in self.listeners.iter_mut().enumerate() {
                if !l.removed {
                    l.removed = true;
                    be.remove_listener(i);
                    sys::close(l.fd);
                }
            }
        }
        if self.accept_resume {
            self.accept_resume = false;
            for (i, l) in self.listeners.iter_mut().enumerate() {
                if l.paused && !l.removed {
                    l.paused = false;
                    be.arm_accept(i);
                }
            }
        }
        let mut i = 0;
        while i < self.dirty.len() {
            let slot = self.dirty[i];
            i += 1;
            self.conns[slot as usize].flags &= !DIRTY;
            self.flush_conn(slot, be);
        }
        self.dirty.clear();
        if self.dirty.capacity() > 4096 {
            // a burst (many connections at once) left it large
            self.dirty.shrink_to(4096);
        }
        // After the sends: epoll sends in the flush itself, so a gauge set
        // before it would keep the bytes an idle loop has already sent.
        LoopCounters::set(&self.shared.counters.queued_bytes, self.pool.queued);
    }

    fn flush_conn<B: Backend>(&mut self, slot: u32, be: &mut B) {
        let f = self.conns[slot as usize].flags;
        if f & USED == 0 {
            return;
        }
        if f & OPEN != 0 {
            if f & (ABORT_REQ | SLOW | OVERFLOW | PANICKED | SHED) != 0 {
                let reason = if f & PANICKED != 0 {
                    LoopCounters::add(&self.shared.counters.err_handler_panic, 1);
                    CloseReason::HandlerPanic
                } else if f & SHED != 0 {
                    LoopCounters::add(&self.shared.counters.err_queue_cap, 1);
                    CloseReason::SlowReader
                } else if f & SLOW != 0 {
                    LoopCounters::add(&self.shared.counters.err_slow_reader, 1);
                    CloseReason::SlowReader
                } else if f & OVERFLOW != 0 {
                    LoopCounters::add(&self.shared.counters.err_input_overflow, 1);
                    CloseReason::InputOverflow
                } else {
                    CloseReason::Local
                };
                self.conns[slot as usize].flags |= LINGER0;
                self.finalize(slot, reason);
            } else {
                self.flush_open(slot, be);
            }
        }
        if self.conns[slot as usize].flags & (USED | OPEN) == USED {
            self.cleanup(slot, be);
        }
    }

    fn flush_open<B: Backend>(&mut self, slot: u32, be: &mut B) {
        let c = &mut self.conns[slot as usize];
        let tok = token(slot, c.gen);
        if c.flags & NEEDS_REG != 0 {
            c.flags &= !NEEDS_REG;
            let mode = if c.flags & CONNECTING != 0 {
                AddMode::Connect
            } else {
                AddMode::Recv
            };
            match be.add_conn(tok, c.fd, mode) {
                Ok(()) => {
                    c.flags |= REGISTERED
                        | match mode {
                            AddMode::Recv => RECV_ACTIVE,
                            AddMode::Connect => CONNECT_INFLIGHT,
                        };
                }
                Err(e) => {
                    self.finalize(slot, CloseReason::Io(e));
                    return;
                }
            }
        }
        self.try_send(slot, be);
        let c = &mut self.conns[slot as usize];
        if c.flags & OPEN == 0 {
            return;
        }
        if c.out.is_empty() && c.flags & CONNECTING == 0 {
            if c.flags & (SHUT_WR_REQ | SHUT_WR_DONE) == SHUT_WR_REQ {
                c.flags |= SHUT_WR_DONE;
                let _ = sys::shutdown(c.fd, libc::SHUT_WR);
            }
            if c.flags & CLOSE_REQ != 0 {
                let linger_ms = self.limits[c.limits as usize].linger_ms;
                if is_lingering(c.flags) {
                    // waiting for the peer's end of stream or the timer
                } else if c.flags & EOF != 0 || linger_ms == 0 {
                    // (SHUT_WR_DONE without SHUT_WR_REQ: we lingered, and
                    // the peer's end of stream answered our close)
                    let lingered = c.flags & (SHUT_WR_REQ | SHUT_WR_DONE) == SHUT_WR_DONE;
                    let reason = if c.flags & EOF != 0 && !lingered {
                        CloseReason::PeerClosed
                    } else {
                        CloseReason::Local
                    };
                    self.finalize(slot, reason);
                    return;
                } else {
                    // Lingering close: FIN first (the handler's own
                    // shutdown_write may have sent it already), then wait
                    // for the peer's, bounded by the timer.
                    if c.flags & SHUT_WR_DONE == 0 {
                        let _ = sys::shutdown(c.fd, libc::SHUT_WR);
                    }
                    c.flags = (c.flags & !SHUT_WR_REQ) | SHUT_WR_DONE;
                    let e = TimerEntry {
                        at_ms: self.now_ms + u64::from(linger_ms),
                        slot,
                        gen: c.gen,
                        kind: TimerKind::Linger,
                    };
                    self.timers.push(e);
                }
            }
        }
        let c = &mut self.conns[slot as usize];
        if c.flags & (PAUSE_USER | PAUSE_BP | CLOSING | CONNECTING) == 0 {
            if c.flags & REDELIVER != 0 {
                c.flags &= !REDELIVER;
                self.deliver_input(slot);
            }
            let c = &mut self.conns[slot as usize];
            if c.flags & (EOF_PENDING | HANDSHAKING) == (EOF_PENDING | HANDSHAKING) {
                // The peer gave up before the handshake finished.
                c.flags &= !EOF_PENDING;
                self.finalize(slot, CloseReason::PeerClosed);
                return;
            }
            let c = &mut self.conns[slot as usize];
            if c.flags & (EOF_PENDING | OPEN | PAUSE_USER | PAUSE_BP | CLOSING)
                == (EOF_PENDING | OPEN)
            {
                c.flags &= !EOF_PENDING;
                self.call(slot, |h, cx| h.on_eof(cx));
            }
        }
        self.reconcile_recv(slot, be);
    }

    fn reconcile_recv<B: Backend>(&mut self, slot: u32, be: &mut B) {
        let c = &mut self.conns[slot as usize];
        let f = c.flags;
        let want = f & (OPEN | REGISTERED) == (OPEN | REGISTERED)
            && (f & (CONNECTING | EOF | PAUSE_USER | PAUSE_BP | CLOSING) == 0
                || f & CONNECTING == 0 && drains_input(f));
        let tok = token(slot, c.gen);
        if want && f & RECV_ACTIVE == 0 {
            c.flags |= RECV_ACTIVE;
            be.arm_recv(tok, c.fd);
        } else if !want && f & RECV_ACTIVE != 0 && f & RECV_CANCEL == 0 {
            if be.cancel_recv(tok, c.fd) {
                c.flags &= !RECV_ACTIVE;
            } else {
                c.flags |= RECV_CANCEL;
            }
        }
    }

    fn try_send<B: Backend>(&mut self, slot: u32, be: &mut B) {
        let mut sent = false;
        for _ in 0..64 {
            let c = &self.conns[slot as usize];
            if c.flags & (SEND_INFLIGHT | WAIT_WRITABLE | CONNECTING) != 0
                || c.flags & REGISTERED == 0
                || c.out.is_empty()
            {
                break;
            }
            if be.sends_one_buffer() {
                // No send is in flight here (checked above): the front
                // chunks may move.
                let Core { conns, pool, .. } = self;
                conns[slot as usize].out.coalesce_front(pool);
            }
            let c = &self.conns[slot as usize];
            let out = c.out;
            let (fd, tok) = (c.fd, token(slot, c.gen));
            let outcome = match out.front_file(&self.pool) {
                Some((file, offset, len)) => be.send_file(tok, fd, file, offset, len),
                None => {
                    // Slices up to the next file segment, if any.
                    let mut iov = [IoSlice::new(&[]); 16];
                    let n = out.slices(&self.pool, &mut iov);
                    be.send(tok, fd, &iov[..n])
                }
            };
            match outcome {
                SendOutcome::InFlight => {
                    self.conns[slot as usize].flags |= SEND_INFLIGHT;
                    return;
                }
                SendOutcome::WouldBlock => {
                    self.conns[slot as usize].flags |= WAIT_WRITABLE;
                    self.arm_send(slot);
                    return;
                }
                SendOutcome::Done(Ok(n)) => {
                    LoopCounters::add(&self.shared.counters.bytes_out, n as u64);
                    LoopCounters::add(&self.shared.counters.writes, 1);
                    if n > 0 {
                        self.conns[slot as usize].flags |= SENT_SINCE;
                    }
                    self.conns[slot as usize].out.advance(&mut self.pool, n);
                    sent = true;
                    if n == 0 {
                        break;
                    }
                }
                SendOutcome::Done(Err(e)) => {
                    LoopCounters::add(&self.shared.counters.err_reset, 1);
                    self.finalize(slot, CloseReason::Io(e));
                    return;
                }
            }
        }
        let c = &self.conns[slot as usize];
        if sent && c.out.is_empty() && c.flags & OPEN != 0 {
            self.drained(slot);
        }
    }

    /// Tears down a closed connection once nothing is in flight on it.
    fn cleanup<B: Backend>(&mut self, slot: u32, be: &mut B) {
        let c = &mut self.conns[slot as usize];
        let tok = token(slot, c.gen);
        if c.flags & REGISTERED != 0 && c.flags & (INFLIGHT | WAIT_WRITABLE) != 0 {
            if c.flags & CANCEL_ALL == 0 {
                c.flags |= CANCEL_ALL;
                let ops = InFlight {
                    recv: c.flags & RECV_ACTIVE != 0,
                    send: c.flags & SEND_INFLIGHT != 0,
                    connect: c.flags & CONNECT_INFLIGHT != 0,
                    writable: c.flags & WAIT_WRITABLE != 0,
                };
                if be.cancel_all(tok, c.fd, ops) {
                    c.flags &= !(INFLIGHT | WAIT_WRITABLE | RECV_CANCEL);
                }
            }
            if c.flags & INFLIGHT != 0 {
                return;
            }
        }
        if c.flags & FLUSH_ON_CLOSE != 0 && !c.out.is_empty() {
            // Best effort, one non-blocking send: a TLS alert is a few bytes.
            let mut iov = [IoSlice::new(&[]); 4];
            let n = c.out.slices(&self.pool, &mut iov);
            let _ = sys::send_vectored(c.fd, &iov[..n]);
        }
        be.remove_conn(tok, c.fd);
        if c.flags & LINGER0 != 0 {
            let _ = sys::set_linger_zero(c.fd);
        }
        sys::close(c.fd);
        c.out.clear(&mut self.pool);
        let input = c.take_input();
        self.inputs.give(input);
        self.free_slot(slot);
    }

    /// Closes everything at exit (after the loop stopped).
    pub(crate) fn close_all(&mut self) {
        for slot in 0..self.conns.len() {
            let c = &mut self.conns[slot];
            if c.flags & USED != 0 {
                if c.flags & OPEN != 0 {
                    self.finalize(slot as u32, CloseReason::Shutdown);
                }
                let c = &mut self.conns[slot];
                if c.flags & LINGER0 != 0 {
                    let _ = sys::set_linger_zero(c.fd);
                }
                sys::close(c.fd);
                c.flags = 0;
            }
        }
        for l in &mut self.listeners {
            if !l.removed {
                l.removed = true;
                sys::close(l.fd);
            }
        }
    }

    // ----- operations behind Ctx / LoopCx -----

    fn write(&mut self, slot: u32, parts: &[&[u8]]) {
        let Core { conns, pool, .. } = self;
        let c = &mut conns[slot as usize];
        if refuses_writes(c.flags) {
            return;
        }
        if let Some(f) = c.filter.as_mut() {
            let out = &mut c.out;
            let mut failed: Option<FilterError> = None;
            for p in parts {
                if let Err(e) = f.encode(p, &mut QueueOut { out, pool }) {
                    failed = Some(e);
                    break;
                }
            }
            if failed.is_some() {
                // Encoding cannot fail for a healthy TLS session; treat it
                // as fatal for this connection.
                c.flags |= ABORT_REQ;
            }
        } else {
            c.out.push_parts(pool, parts);
        }
        self.after_write(slot);
    }

    fn write_with(
        &mut self,
        slot: u32,
        max: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> usize {
        let c = &self.conns[slot as usize];
        if refuses_writes(c.flags) {
            return 0;
        }
        if c.filter.is_some() || max > OutQueue::max_fill(&self.pool) {
            // Through a reused buffer, then the ordinary path (the filter
            // encodes; a large write spans chunks).
            let mut tmp = std::mem::take(&mut self.wscratch);
            if tmp.len() < max {
                tmp.resize(max, 0);
            }
            let n = fill(&mut tmp[..max]).min(max);
            if n > 0 {
                self.write(slot, &[&tmp[..n]]);
            }
            if tmp.len() <= 1 << 20 {
                self.wscratch = tmp;
            }
            return n;
        }
        let Core { conns, pool, .. } = self;
        let n = conns[slot as usize].out.push_with(pool, max, fill);
        if n > 0 {
            self.after_write(slot);
        }
        n
    }

    /// Graceful close: a filter queues its goodbye (close_notify) first.
    fn close_graceful(&mut self, slot: u32) {
        let Core { conns, pool, .. } = self;
        let c = &mut conns[slot as usize];
        if c.flags & OPEN == 0 || c.flags & CLOSING != 0 {
            return;
        }
        if let Some(f) = c.filter.as_mut() {
            let out = &mut c.out;
            f.close(&mut QueueOut { out, pool });
        }
        self.set_flag(slot, CLOSE_REQ);
    }

    /// Back-pressure bookkeeping after bytes were queued.
    fn after_write(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        let lim = self.limits[c.limits as usize];
        if c.out.len >= lim.hard_limit {
            c.flags |= SLOW;
        } else if c.out.len >= lim.high_water && c.flags & PAUSE_BP == 0 {
            c.flags |= PAUSE_BP;
            LoopCounters::add(&self.shared.counters.backpressure_pauses, 1);
        }
        self.mark_dirty(slot);
        if self.pool.queued > self.max_queued {
            self.shed();
        }
    }

    /// The loop's queued bytes passed its cap: closes the connections with
    /// the largest queues (a reset, their queues dropped) until what stays
    /// is under nine tenths of the cap. O(connections), but only when the
    /// cap is passed, and a shed connection no longer counts.
    fn shed(&mut self) {
        let target = self.max_queued / 10 * 9;
        let mut queued = self.pool.queued;
        for c in &self.conns {
            if c.flags & SHED != 0 {
                queued = queued.saturating_sub(u64::from(c.out.len));
            }
        }
        if queued <= self.max_queued {
            return;
        }
        let mut big: Vec<(u32, u32)> = self
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.flags & (OPEN | SHED) == OPEN && c.out.len > 0)
            .map(|(i, c)| (c.out.len, i as u32))
            .collect();
        big.sort_unstable_by(|a, b| b.cmp(a));
        for (len, slot) in big {
            if queued <= target {
                break;
            }
            queued = queued.saturating_sub(u64::from(len));
            self.set_flag(slot, SHED);
        }
    }

    fn write_shared(&mut self, slot: u32, bytes: &Arc<[u8]>) {
        let c = &mut self.conns[slot as usize];
        if refuses_writes(c.flags) {
            return;
        }
        if c.filter.is_some() {
            // Encrypted per connection anyway: no sharing possible.
            self.write(slot, &[&bytes[..]]);
            return;
        }
        c.out.push_shared(&mut self.pool, bytes.clone());
        self.after_write(slot);
    }

    fn send_file(&mut self, slot: u32, file: &Arc<std::fs::File>, offset: u64, len: u64) -> bool {
        let c = &mut self.conns[slot as usize];
        if refuses_writes(c.flags) || c.filter.is_some() {
            return false;
        }
        if len > 0 {
            c.out.push_file(&mut self.pool, file, offset, len);
            self.after_write(slot);
        }
        true
    }

    fn set_flag(&mut self, slot: u32, flag: u32) {
        let c = &mut self.conns[slot as usize];
        if c.flags & OPEN != 0 {
            c.flags |= flag;
            self.mark_dirty(slot);
        }
    }

    fn limits_index(&mut self, l: Limits) -> u16 {
        if let Some(i) = self.limits.iter().position(|x| *x == l) {
            return i as u16;
        }
        self.limits.push(l);
        (self.limits.len() - 1) as u16
    }

    fn connect(
        &mut self,
        addr: SocketAddr,
        opts: &ConnectOptions,
        handler: Box<dyn Handler>,
    ) -> io::Result<ConnId> {
        use socket2::{Domain, Protocol, Socket, Type};
        if self.shutdown_at.is_some() {
            return Err(io::Error::other("loop is shutting down"));
        }
        if self.free_head == NIL && self.conns.len() >= MAX_SLOTS {
            return Err(io::Error::other("loop has no free connection slot"));
        }
        let res = (|| {
            let sock = Socket::new(
                Domain::for_address(addr),
                Type::STREAM.nonblocking().cloexec(),
                Some(Protocol::TCP),
            )?;
            if opts.nodelay {
                sock.set_tcp_nodelay(true)?;
            }
            if opts.linger_zero {
                // Set now, not at close: however the socket ends up closed
                // (even by process exit), it goes with a RST.
                sock.set_linger(Some(Duration::ZERO))?;
            }
            if let Some(src) = opts.source {
                use std::os::fd::AsRawFd;
                sys::set_bind_address_no_port(sock.as_raw_fd())?;
                sock.bind(&SocketAddr::new(src, 0).into())?;
            }
            match sock.connect(&addr.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => return Err(e),
            }
            Ok(sock)
        })();
        let sock = match res {
            Ok(s) => s,
            Err(e) => {
                LoopCounters::add(&self.shared.counters.err_connect, 1);
                return Err(e);
            }
        };
        let fd = sock.into_raw_fd();
        let mut lim = self.outbound_limits;
        lim.idle_ms = dur_ms(opts.idle_timeout);
        lim.high_water = clamp_u32(opts.write_high_water);
        lim.hard_limit = clamp_u32(opts.write_hard_limit);
        lim.max_input = clamp_u32(opts.max_input);
        let li = self.limits_index(lim);
        let mut flags = OPEN | CONNECTING | NEEDS_REG;
        if opts.linger_zero {
            flags |= LINGER0;
        }
        let slot = self.alloc(fd, flags, handler, li, OUTBOUND);
        if let Some(f) = &opts.filter {
            self.pending_filters
                .push((slot, f.clone(), dur_ms(Some(opts.handshake_timeout))));
        }
        let gen = self.conns[slot as usize].gen;
        self.timers.push(TimerEntry {
            at_ms: self.now_ms + opts.timeout.as_millis().max(1) as u64,
            slot,
            gen,
            kind: TimerKind::Connect,
        });
        self.mark_dirty(slot);
        Ok(ConnId::new(self.loop_idx, slot, gen))
    }
}

/// Loop-level context: what a task posted to a loop, or a handler through
/// [`Ctx::loop_cx`], can do on that loop.
pub struct LoopCx<'a> {
    core: &'a mut Core,
}

impl LoopCx<'_> {
    /// Index of this loop.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine) {
    /// engine.loop_handle(0).post(|lcx| assert_eq!(lcx.loop_index(), 0));
    /// # }
    /// ```
    pub fn loop_index(&self) -> usize {
        self.core.loop_idx as usize
    }

    /// Number of loops in the engine.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine) {
    /// engine.loop_handle(0).post(|lcx| println!("{} loops", lcx.loop_count()));
    /// # }
    /// ```
    pub fn loop_count(&self) -> usize {
        self.core.loops.get().map_or(1, |l| l.len())
    }

    /// Queues `data` on connection `id` of this loop. Returns `false` if the
    /// connection is gone, closing, or lives on another loop (post there).
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine, id: myriad::ConnId) {
    /// engine.loop_handle(id.loop_index()).post(move |lcx| { lcx.write_to(id, b"hi"); });
    /// # }
    /// ```
    pub fn write_to(&mut self, id: ConnId, data: &[u8]) -> bool {
        match self.core.slot_of_id(id) {
            Some(slot) if self.core.conns[slot as usize].flags & CLOSING == 0 => {
                self.core.write(slot, &[data]);
                true
            }
            _ => false,
        }
    }

    /// Queues a shared buffer on connection `id` of this loop by reference
    /// (see [`Ctx::write_shared`]). Returns `false` if the connection is
    /// gone, closing, or lives on another loop.
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # fn f(engine: &myriad::Engine, ids: Vec<myriad::ConnId>) {
    /// let msg: Arc<[u8]> = Arc::from(&b"to everyone\n"[..]);
    /// engine.loop_handle(0).post(move |lcx| {
    ///     for id in ids { lcx.write_shared_to(id, &msg); }
    /// });
    /// # }
    /// ```
    pub fn write_shared_to(&mut self, id: ConnId, bytes: &Arc<[u8]>) -> bool {
        match self.core.slot_of_id(id) {
            Some(slot) if self.core.conns[slot as usize].flags & CLOSING == 0 => {
                self.core.write_shared(slot, bytes);
                true
            }
            _ => false,
        }
    }

    /// Closes connection `id` of this loop once its queued bytes are sent.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine, id: myriad::ConnId) {
    /// engine.loop_handle(id.loop_index()).post(move |lcx| { lcx.close(id); });
    /// # }
    /// ```
    pub fn close(&mut self, id: ConnId) -> bool {
        match self.core.slot_of_id(id) {
            Some(slot) => {
                self.core.close_graceful(slot);
                true
            }
            None => false,
        }
    }

    /// Opens an outbound connection on this loop.
    ///
    /// ```no_run
    /// # use myriad::{Ctx, Handler, ConnectOptions};
    /// # struct Client;
    /// # impl Handler for Client { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// # fn f(engine: &myriad::Engine) {
    /// engine.loop_handle(0).post(|lcx| {
    ///     let addr = "127.0.0.1:7000".parse().unwrap();
    ///     let _ = lcx.connect(addr, &ConnectOptions::default(), Box::new(Client));
    /// });
    /// # }
    /// ```
    pub fn connect(
        &mut self,
        addr: SocketAddr,
        opts: &ConnectOptions,
        handler: Box<dyn Handler>,
    ) -> io::Result<ConnId> {
        self.core.connect(addr, opts, handler)
    }

    /// Posts `f` to loop `loop_index` (possibly this one). Returns `false`
    /// if there is no such loop or it has exited.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine) {
    /// engine.loop_handle(0).post(|lcx| { lcx.post(1, |other| println!("on {}", other.loop_index())); });
    /// # }
    /// ```
    pub fn post(
        &self,
        loop_index: usize,
        f: impl FnOnce(&mut LoopCx<'_>) + Send + 'static,
    ) -> bool {
        match self.core.loops.get().and_then(|l| l.get(loop_index)) {
            Some(h) => h.post(f),
            None => false,
        }
    }

    /// Handles to every loop of the engine (for fan-out).
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine) {
    /// engine.loop_handle(0).post(|lcx| println!("{}", lcx.loops().len()));
    /// # }
    /// ```
    pub fn loops(&self) -> &[LoopHandle] {
        self.core.loops.get().map_or(&[], |l| l.as_slice())
    }

    /// Is the engine shutting down?
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine) {
    /// engine.loop_handle(0).post(|lcx| assert!(!lcx.is_shutting_down()));
    /// # }
    /// ```
    pub fn is_shutting_down(&self) -> bool {
        self.core.is_shutting_down()
    }

    pub(crate) fn begin_shutdown(&mut self, grace: Duration) {
        self.core.begin_shutdown(grace);
    }

    /// Runs `f` with the context of connection `id` of this loop, if it is
    /// still open. Returns whether it ran.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine, id: myriad::ConnId) {
    /// engine.loop_handle(id.loop_index()).post(move |lcx| {
    ///     lcx.with_conn(id, |cx| cx.write(b"result is ready\n"));
    /// });
    /// # }
    /// ```
    pub fn with_conn(&mut self, id: ConnId, f: impl FnOnce(&mut Ctx<'_>)) -> bool {
        let Some(slot) = self.core.slot_of_id(id) else {
            return false;
        };
        let gen = self.core.conns[slot as usize].gen;
        let mut cx = Ctx {
            lcx: LoopCx {
                core: &mut *self.core,
            },
            slot,
            gen,
        };
        f(&mut cx);
        true
    }

    pub(crate) fn stop_accepting(&mut self) {
        self.core.stop_listeners = true;
    }
}

/// A connection's context, handed to every [`Handler`] callback.
pub struct Ctx<'a> {
    lcx: LoopCx<'a>,
    slot: u32,
    gen: u32,
}

impl<'a> Ctx<'a> {
    fn conn(&self) -> &Conn {
        &self.lcx.core.conns[self.slot as usize]
    }

    /// This connection's id, valid on any thread.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// let id = cx.id();
    /// # let _ = id; d.len() } }
    /// ```
    pub fn id(&self) -> ConnId {
        ConnId::new(self.lcx.core.loop_idx, self.slot, self.gen)
    }

    /// Queues a copy of `data` for sending. Everything written during one
    /// loop turn leaves in one send. Ignored once the connection is closing.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// cx.write(b"ok\n");
    /// # d.len() } }
    /// ```
    #[inline]
    pub fn write(&mut self, data: &[u8]) {
        self.lcx.core.write(self.slot, &[data]);
    }

    /// Queues up to `max` bytes that `fill` writes straight into the
    /// connection's outbound buffer, and returns how many: `fill` gets a
    /// slice of `max` bytes (whatever they held before: overwrite, do not
    /// read) and returns how many it filled from the front (clamped to
    /// `max`). Saves the copy of [`Ctx::write`] for a handler that would
    /// otherwise encode into a buffer of its own first. Over a filter (TLS)
    /// or for `max` above the chunk size it goes through a reused buffer of
    /// the loop and costs what `write` costs. Nothing is queued (0) once the
    /// connection is closing.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// let n = d.len();
    /// cx.write_with(4 + n, |buf| {
    ///     buf[..4].copy_from_slice(&(n as u32).to_be_bytes());
    ///     buf[4..4 + n].copy_from_slice(d);
    ///     4 + n
    /// });
    /// # d.len() } }
    /// ```
    #[inline]
    pub fn write_with(&mut self, max: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> usize {
        self.lcx.core.write_with(self.slot, max, fill)
    }

    /// Queues several slices in order (a header and a payload, say) without
    /// joining them first.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// let len = (d.len() as u32).to_be_bytes();
    /// cx.write_vectored(&[&len, d]);
    /// # d.len() } }
    /// ```
    #[inline]
    pub fn write_vectored(&mut self, parts: &[&[u8]]) {
        self.lcx.core.write(self.slot, parts);
    }

    /// Queues a shared, immutable buffer by reference: no copy of its bytes
    /// is made, however many connections it is written to (fan-out of one
    /// encoded message). The buffer is released when the last connection
    /// has sent it.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # use std::sync::Arc;
    /// # struct H { news: Arc<[u8]> }
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// cx.write_shared(&self.news);
    /// # d.len() } }
    /// ```
    #[inline]
    pub fn write_shared(&mut self, bytes: &Arc<[u8]>) {
        self.lcx.core.write_shared(self.slot, bytes);
    }

    /// Queues `len` bytes of `file` from `offset`, to be sent by the kernel
    /// (`sendfile(2)`: from the page cache to the socket, no copy through
    /// user space) after what is queued before them. Returns `false`, with
    /// nothing queued, over a filter (TLS encrypts in user space: read the
    /// bytes and [`Ctx::write`] them instead) or once the connection is
    /// closing.
    ///
    /// The bytes count as queued like any others (high-water mark, limits),
    /// so queue a big file a window at a time from
    /// [`Handler::on_drain`](crate::Handler::on_drain). The file must not
    /// shrink meanwhile: bytes past its end are not sent, the connection
    /// then ends with an error. A cold file is read from disk in the loop
    /// thread, as with any `sendfile` server.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # use std::sync::Arc;
    /// # struct H { file: Arc<std::fs::File>, len: u64 }
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// cx.write(b"here it comes\n");
    /// if !cx.send_file(&self.file, 0, self.len) {
    ///     // over TLS: read and write the bytes
    /// }
    /// # d.len() } }
    /// ```
    pub fn send_file(&mut self, file: &Arc<std::fs::File>, offset: u64, len: u64) -> bool {
        self.lcx.core.send_file(self.slot, file, offset, len)
    }

    /// Whether [`Ctx::send_file`] can be used on this connection (no
    /// filter: plain TCP).
    pub fn can_send_file(&self) -> bool {
        self.lcx.core.conns[self.slot as usize].filter.is_none()
    }

    /// Bytes queued and not yet sent.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// if cx.queued() > 1 << 20 { cx.pause_reading(); }
    /// # d.len() } }
    /// ```
    pub fn queued(&self) -> usize {
        self.conn().out.len as usize
    }

    /// Whether the queued output passed the service's high-water mark
    /// ([`crate::Service::write_high_water`]): reading is paused until it
    /// drains. A handler that decodes several requests from one receive
    /// stops at the next request boundary while this holds and returns
    /// what it consumed; the engine keeps the rest and delivers it again
    /// when the output has drained, so that one receive cannot make it
    /// queue an unbounded amount of replies.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// let mut used = 0;
    /// for line in d.split_inclusive(|&b| b == b'\n') {
    ///     if cx.is_backpressured() || !line.ends_with(b"\n") {
    ///         break;
    ///     }
    ///     cx.write(line);
    ///     used += line.len();
    /// }
    /// used
    /// # } }
    /// ```
    pub fn is_backpressured(&self) -> bool {
        self.conn().flags & PAUSE_BP != 0
    }

    /// Closes the connection after the queued bytes are sent.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// cx.write(b"bye\n");
    /// cx.close();
    /// # d.len() } }
    /// ```
    pub fn close(&mut self) {
        self.lcx.core.close_graceful(self.slot);
    }

    /// Closes at once with a RST, dropping queued bytes.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// if d.first() == Some(&0xff) { cx.abort(); return 0; }
    /// # d.len() } }
    /// ```
    pub fn abort(&mut self) {
        self.lcx.core.set_flag(self.slot, ABORT_REQ);
    }

    /// Shuts down the sending side (FIN) after the queued bytes are sent;
    /// receiving goes on. Later writes are ignored.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// cx.write(b"last words");
    /// cx.shutdown_write();
    /// # d.len() } }
    /// ```
    pub fn shutdown_write(&mut self) {
        self.lcx.core.set_flag(self.slot, SHUT_WR_REQ);
    }

    /// Stops delivering data (and, soon after, reading from the socket)
    /// until [`Ctx::resume_reading`].
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// cx.pause_reading();
    /// # d.len() } }
    /// ```
    pub fn pause_reading(&mut self) {
        self.lcx.core.set_flag(self.slot, PAUSE_USER);
    }

    /// Resumes reading; kept input is delivered again at once.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H {
    /// # fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() }
    /// fn on_timer(&mut self, cx: &mut Ctx<'_>, _token: u64) {
    ///     cx.resume_reading();
    /// }
    /// # }
    /// ```
    pub fn resume_reading(&mut self) {
        let core = &mut *self.lcx.core;
        let c = &mut core.conns[self.slot as usize];
        if c.flags & OPEN != 0 && c.flags & PAUSE_USER != 0 {
            c.flags &= !PAUSE_USER;
            c.flags |= REDELIVER;
            core.mark_dirty(self.slot);
        }
    }

    /// The peer's address (one `getpeername` call).
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H {
    /// # fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() }
    /// fn on_open(&mut self, cx: &mut Ctx<'_>) {
    ///     if let Ok(peer) = cx.peer_addr() { println!("hello {peer}"); }
    /// }
    /// # }
    /// ```
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        sys::peer_addr(self.conn().fd)
    }

    /// The local address (one `getsockname` call).
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H {
    /// # fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() }
    /// fn on_open(&mut self, cx: &mut Ctx<'_>) {
    ///     let _ = cx.local_addr();
    /// }
    /// # }
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        sys::local_addr(self.conn().fd)
    }

    /// Sets (or with `None` clears) the idle timeout: close with
    /// [`CloseReason::IdleTimeout`] when no bytes arrive for that long.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # use std::time::Duration;
    /// # struct H;
    /// # impl Handler for H {
    /// # fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() }
    /// fn on_open(&mut self, cx: &mut Ctx<'_>) {
    ///     cx.set_idle_timeout(Some(Duration::from_secs(30)));
    /// }
    /// # }
    /// ```
    pub fn set_idle_timeout(&mut self, timeout: Option<Duration>) {
        let core = &mut *self.lcx.core;
        let c = &mut core.conns[self.slot as usize];
        if c.flags & OPEN == 0 {
            return;
        }
        c.idle_ms = dur_ms(timeout);
        c.last_active = core.now_ms as u32;
        core.arm_idle(self.slot);
    }

    /// Calls [`Handler::on_timer`] with `token` after `after`. Timers cannot
    /// be cancelled; ignore stale tokens instead.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # use std::time::Duration;
    /// # struct H;
    /// # impl Handler for H {
    /// # fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() }
    /// fn on_open(&mut self, cx: &mut Ctx<'_>) {
    ///     cx.set_timer(Duration::from_secs(1), 7);
    /// }
    /// fn on_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
    ///     if token == 7 { cx.write(b"tick\n"); cx.set_timer(Duration::from_secs(1), 7); }
    /// }
    /// # }
    /// ```
    pub fn set_timer(&mut self, after: Duration, token: u64) {
        let core = &mut *self.lcx.core;
        let at = core.now_ms + after.as_millis() as u64;
        core.timers.push(TimerEntry {
            at_ms: at,
            slot: self.slot,
            gen: self.gen,
            kind: TimerKind::User(token),
        });
    }

    /// Calls [`Handler::on_timer`] with `token` after `after`, unless
    /// [`Ctx::clear_deadline`] comes first: the connection's one deadline
    /// (a new one replaces it), such as a protocol's handshake timeout.
    /// Unlike a [`Ctx::set_timer`] timer, which stays in the loop's timer
    /// heap until it is due, a cleared deadline leaves nothing behind: its
    /// entry is dropped when the heap is next compacted. So a deadline
    /// that is almost always cleared long before it is due (a 10 s
    /// handshake timeout of a connection that upgrades at once) costs an
    /// idle connection nothing.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # use std::time::Duration;
    /// # struct H { greeted: bool }
    /// # impl Handler for H {
    /// fn on_open(&mut self, cx: &mut Ctx<'_>) {
    ///     cx.set_deadline(Duration::from_secs(5), 1);
    /// }
    /// fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    ///     if !self.greeted && d.starts_with(b"HELLO") {
    ///         self.greeted = true;
    ///         cx.clear_deadline();
    ///     }
    ///     d.len()
    /// }
    /// fn on_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
    ///     if token == 1 { cx.close(); } // no greeting in time
    /// }
    /// # }
    /// ```
    pub fn set_deadline(&mut self, after: Duration, token: u64) {
        let core = &mut *self.lcx.core;
        let c = &mut core.conns[self.slot as usize];
        if c.flags & OPEN == 0 {
            return;
        }
        // 15-bit sequence numbers: a stale entry could only match again
        // after 32,768 deadlines set within one timeout.
        let seq = (c.deadline.wrapping_add(1)) & !DEADLINE_SET;
        c.deadline = DEADLINE_SET | seq;
        let at = core.now_ms + after.as_millis() as u64;
        core.timers.push(TimerEntry {
            at_ms: at,
            slot: self.slot,
            gen: self.gen,
            kind: TimerKind::Deadline { token, seq },
        });
    }

    /// Cancels the deadline set with [`Ctx::set_deadline`], if pending.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H {
    /// # fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// cx.clear_deadline();
    /// # d.len() }
    /// # }
    /// ```
    pub fn clear_deadline(&mut self) {
        let c = &mut self.lcx.core.conns[self.slot as usize];
        c.deadline &= !DEADLINE_SET;
    }

    /// The loop-level context: write to other connections of this loop,
    /// connect, post to other loops.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler, ConnId};
    /// # struct H { peer: ConnId }
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// // Relay to another connection on the same loop.
    /// cx.loop_cx().write_to(self.peer, d);
    /// # d.len() } }
    /// ```
    pub fn loop_cx(&mut self) -> &mut LoopCx<'a> {
        &mut self.lcx
    }

    /// The loop's clock: read once per loop turn, when the turn's events
    /// start being handled (after the wait), so at most a turn old. The
    /// timers of [`Ctx::set_timer`] count from it. A protocol that notes
    /// times per message (deadlines) saves a clock read per message
    /// (`clock_gettime` was 1.4% of an HTTP server's CPU samples in a
    /// keep-alive GET profile).
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// # struct H;
    /// # impl Handler for H { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
    /// let since = cx.now();
    /// # let _ = since; d.len() } }
    /// ```
    #[inline]
    pub fn now(&self) -> Instant {
        self.lcx.core.now
    }
}

#[cfg(test)]
mod slot_tests {
    /// The slot is most of the engine's cost of an idle connection.
    #[test]
    fn slot_is_small() {
        let size = std::mem::size_of::<super::Conn>();
        assert!(size <= 72, "Conn is {size} bytes");
    }
}
