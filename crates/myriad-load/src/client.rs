//! The load client proper: one Myriad [`Handler`] per connection, and the
//! per-loop state the handlers of one loop share.
//!
//! Everything here runs on the engine's loop threads. A loop's state lives
//! in a thread-local ([`LoopState`], reached by the handlers through an
//! `Rc`): counters (atomics with a single writer, read by the control
//! thread), the HDR histograms, a scratch buffer for building messages, and
//! the queue of connections still to open. Nothing is allocated per message.
//!
//! A connection's life: connect → (WebSocket upgrade) → messages →
//! finish (close with RST unless `--fin-close`). What "messages" means
//! depends on the mode:
//!
//! * echo (closed loop): keep `window` messages in flight; each echo that
//!   completes sends the next one (or, with `--send-after-recv`, waits
//!   `--think` first);
//! * echo (open loop, `--rate`): message *k* is due at `start + k·interval`;
//!   due messages are sent from a per-connection timer (at most `window` in
//!   flight) and their latency counts from the due time, so a stalled server
//!   cannot hide its stall (coordinated omission, corrected as wrk2 does);
//! * hold: one echo, then idle; a sampled connection echoes once more at a
//!   point of the hold picked from its id;
//! * connect-only: one echo, then close.
//!
//! Over HTTP a message is a request and its response (pipelined when the
//! window is above one); a server that ends the connection
//! (`Connection: close`) has it reopened by [`Client::reconnect`], which
//! hands the connection's state to the new one.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use myriad::{CloseReason, ConnId, ConnectOptions, Ctx, Handler, LoopCx};
use myriad_ws::{ClientConfig, ClientConnection, CloseCode, DeflateConfig, Event, Sink};

use crate::http::{Eof, Ev, HttpPlan, Rx};
use crate::payload::{append_payload, key, mix64, verify_payload, SizeRange, Wire};

/// Highest latency the histograms hold (one hour, in microseconds); larger
/// values are clamped.
pub const HIST_MAX_US: u64 = 3_600_000_000;

/// What kind of error happened. Names are the keys of the `errors` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The server refused the connection (ECONNREFUSED).
    ConnectRefused,
    /// The connect did not finish within `--connect-timeout`.
    ConnectTimeout,
    /// No local port or address was left (EADDRNOTAVAIL): use more
    /// `--source-ips`.
    ConnectNoPorts,
    /// Another connect failure (EMFILE, ENETUNREACH, ...).
    ConnectError,
    /// An echoed byte differs from the byte sent.
    Mismatch,
    /// Bytes arrived that were never sent.
    UnexpectedData,
    /// The server closed the connection before the client was done.
    EarlyClose,
    /// The connection was reset.
    Reset,
    /// An echo did not come back within `--timeout`.
    Timeout,
    /// Another socket error.
    Io,
    /// The WebSocket upgrade failed.
    WsHandshake,
    /// The server broke the WebSocket protocol.
    WsProtocol,
    /// TLS: the server's certificate does not chain to a trusted CA.
    TlsUnknownCa,
    /// TLS: the server's certificate is not valid (wrong name, expired,
    /// malformed, not for a server).
    TlsBadCertificate,
    /// TLS: the handshake failed otherwise (an alert from the server, no
    /// common version or cipher, not TLS at all, the server closed or
    /// reset the connection during the handshake).
    TlsHandshake,
    /// TLS: the handshake did not finish within `--handshake-timeout`.
    TlsHandshakeTimeout,
    /// TLS: a failure after the handshake (a bad record, a failed
    /// decryption, an alert).
    Tls,
    /// HTTP: a response with another status than `--expect-status` (the
    /// connection goes on; the response is not counted as a message).
    HttpStatus,
    /// HTTP: a response that cannot be decoded (garbled head, bad
    /// framing, a head or body over its limit).
    HttpProtocol,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 19] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectTimeout,
        ErrorKind::ConnectNoPorts,
        ErrorKind::ConnectError,
        ErrorKind::Mismatch,
        ErrorKind::UnexpectedData,
        ErrorKind::EarlyClose,
        ErrorKind::Reset,
        ErrorKind::Timeout,
        ErrorKind::Io,
        ErrorKind::WsHandshake,
        ErrorKind::WsProtocol,
        ErrorKind::TlsUnknownCa,
        ErrorKind::TlsBadCertificate,
        ErrorKind::TlsHandshake,
        ErrorKind::TlsHandshakeTimeout,
        ErrorKind::Tls,
        ErrorKind::HttpStatus,
        ErrorKind::HttpProtocol,
    ];

    /// The kind's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::ConnectNoPorts => "connect_no_ports",
            ErrorKind::ConnectError => "connect_error",
            ErrorKind::Mismatch => "mismatch",
            ErrorKind::UnexpectedData => "unexpected_data",
            ErrorKind::EarlyClose => "early_close",
            ErrorKind::Reset => "reset",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Io => "io",
            ErrorKind::WsHandshake => "ws_handshake",
            ErrorKind::WsProtocol => "ws_protocol",
            ErrorKind::TlsUnknownCa => "tls_unknown_ca",
            ErrorKind::TlsBadCertificate => "tls_bad_certificate",
            ErrorKind::TlsHandshake => "tls_handshake",
            ErrorKind::TlsHandshakeTimeout => "tls_handshake_timeout",
            ErrorKind::Tls => "tls_error",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::HttpProtocol => "http_protocol",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The kind of a failed connect.
    pub fn of_connect(e: &std::io::Error) -> ErrorKind {
        match e.raw_os_error() {
            Some(c) if c == rustix::io::Errno::CONNREFUSED.raw_os_error() => {
                ErrorKind::ConnectRefused
            }
            Some(c) if c == rustix::io::Errno::ADDRNOTAVAIL.raw_os_error() => {
                ErrorKind::ConnectNoPorts
            }
            Some(c) if c == rustix::io::Errno::TIMEDOUT.raw_os_error() => ErrorKind::ConnectTimeout,
            _ => ErrorKind::ConnectError,
        }
    }

    /// The kind of a TLS failure (`myriad-tls` error kinds);
    /// `handshaking`: it happened before the handshake was done.
    pub fn of_tls(kind: &str, handshaking: bool) -> ErrorKind {
        match kind {
            "unknown_ca" => ErrorKind::TlsUnknownCa,
            "bad_certificate" => ErrorKind::TlsBadCertificate,
            _ if handshaking => ErrorKind::TlsHandshake,
            _ => ErrorKind::Tls,
        }
    }

    /// The kind of a socket error on an open connection.
    pub fn of_io(e: &std::io::Error) -> ErrorKind {
        match e.kind() {
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe => ErrorKind::Reset,
            _ => ErrorKind::Io,
        }
    }
}

/// The load shape of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Messages for the whole measured time (or `--messages`).
    Echo,
    /// `--hold`: echo once, hold idle, re-verify a sample.
    Hold {
        /// Length of the hold.
        dur: Duration,
        /// Fraction (0..=1) of connections re-verified.
        sample: f64,
    },
    /// `--connect-only`: connect, echo once, close.
    ConnectOnly,
}

/// The protocol spoken on each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Raw TCP echo, with or without a length prefix.
    Tcp(Wire),
    /// WebSocket messages (text or binary).
    Ws {
        /// Text messages instead of binary.
        text: bool,
    },
    /// HTTP/1.1 requests ([`Plan::http`] says which).
    Http,
}

/// Everything a loop needs to know about the run (immutable, shared).
#[derive(Debug, Clone)]
pub struct Plan {
    /// Server address.
    pub addr: SocketAddr,
    /// Protocol.
    pub proto: Proto,
    /// Over TLS: the connector behind the filter the connect options carry
    /// (it counts handshakes).
    pub tls_connector: Option<myriad_tls::TlsConnector>,
    /// WebSocket `Host` header.
    pub ws_host: String,
    /// HTTP: the requests and what their responses must be.
    pub http: Option<HttpPlan>,
    /// WebSocket request path.
    pub ws_path: String,
    /// WebSocket: offer permessage-deflate.
    pub ws_deflate: bool,
    /// Load shape.
    pub mode: Mode,
    /// Payload sizes.
    pub size: SizeRange,
    /// Messages in flight per connection.
    pub window: u32,
    /// Messages per connection (echo mode), then close.
    pub messages: Option<u64>,
    /// Open loop: nanoseconds between a connection's messages.
    pub interval_ns: Option<u64>,
    /// Send-after-receive: pause after each echo (0: none).
    pub think: Option<Duration>,
    /// Check every echoed byte.
    pub verify: bool,
    /// An echo must come back within this long.
    pub timeout: Duration,
    /// Options of every connect (source filled per connection).
    pub connect_opts: ConnectOptions,
    /// Source addresses, used round-robin by connection index.
    pub source_ips: Vec<IpAddr>,
    /// Global index of this process's first connection.
    pub conn_base: u64,
    /// Connect attempts (or, in connect-only mode, connections) in flight
    /// per loop.
    pub max_inflight: u32,
}

/// State shared by the control thread and every loop of the process.
#[derive(Debug)]
pub struct Shared {
    /// Time zero of the run (all `*_ns` values count from here).
    pub start: Instant,
    /// Start of the measured window (ns; `u64::MAX` until set).
    pub measure_start: AtomicU64,
    /// End of the measured window (ns; `u64::MAX` until set).
    pub measure_end: AtomicU64,
    /// Start of the hold (ns; `u64::MAX` until set).
    pub hold_start: AtomicU64,
    /// No new messages (and no new connections) from now on.
    pub stopping: AtomicBool,
    /// Connections handed out so far (this process).
    pub next_conn: AtomicU64,
    /// The first few error descriptions.
    pub samples: Mutex<Vec<String>>,
    /// Remarks about the run that are not errors of a connection.
    pub notes: Mutex<Vec<String>>,
}

/// Error descriptions kept per process.
pub const MAX_SAMPLES: usize = 10;

impl Shared {
    /// A fresh state with time zero now.
    pub fn new() -> Self {
        Shared {
            start: Instant::now(),
            measure_start: AtomicU64::new(u64::MAX),
            measure_end: AtomicU64::new(u64::MAX),
            hold_start: AtomicU64::new(u64::MAX),
            stopping: AtomicBool::new(false),
            next_conn: AtomicU64::new(0),
            samples: Mutex::new(Vec::new()),
            notes: Mutex::new(Vec::new()),
        }
    }

    /// Records a remark for the report.
    pub fn add_note(&self, s: String) {
        if let Ok(mut v) = self.notes.lock() {
            v.push(s);
        }
    }

    /// Nanoseconds since time zero.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    #[inline]
    fn in_window(&self, t: u64) -> bool {
        t >= self.measure_start.load(Relaxed) && t < self.measure_end.load(Relaxed)
    }

    fn add_sample(&self, s: String) {
        if let Ok(mut v) = self.samples.lock() {
            if v.len() < MAX_SAMPLES {
                v.push(s);
            }
        }
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// One loop's counters: written only by its loop thread (relaxed
        /// load + store), read by the control thread.
        #[derive(Debug, Default)]
        pub struct Counters {
            $( $(#[$doc])* pub $name: AtomicU64, )*
            /// Errors by [`ErrorKind`].
            pub errors: [AtomicU64; ErrorKind::ALL.len()],
        }

        /// A snapshot of [`Counters`], summed over loops.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Snapshot {
            $( $(#[$doc])* pub $name: u64, )*
            /// Errors by [`ErrorKind`].
            pub errors: [u64; ErrorKind::ALL.len()],
        }

        impl Counters {
            /// Adds this loop's counters to `s`.
            pub fn add_to(&self, s: &mut Snapshot) {
                $( s.$name += self.$name.load(Relaxed); )*
                for (a, b) in s.errors.iter_mut().zip(self.errors.iter()) {
                    *a += b.load(Relaxed);
                }
            }
        }
    };
}

counters! {
    /// Connect calls made (successful or not).
    attempted,
    /// Connections established (TCP).
    established,
    /// Connections ready: open (echo mode) or open and echoed once (hold).
    ready,
    /// Connections past the connect phase: ready, or failed before that.
    settled,
    /// Connections open now (gauge).
    open,
    /// Connections whose life is over (including failed connect calls).
    closed,
    /// Connections that finished everything they had to do.
    done,
    /// Echoes completed (all of them).
    messages_total,
    /// Echoes completed in the measured window.
    messages,
    /// Payload bytes echoed in the measured window.
    bytes,
    /// Hold re-verifications sent.
    checks_sent,
    /// Hold re-verifications completed and verified.
    checks_ok,
    /// Hold re-verifications that failed (the connection erred).
    checks_failed,
    /// HTTP: connections the server closed (`Connection: close`, or idle)
    /// that were reopened to go on.
    reconnects,
}

impl Snapshot {
    /// All errors together.
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }
}

#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

#[inline]
fn drop1(c: &AtomicU64) {
    c.store(c.load(Relaxed).wrapping_sub(1), Relaxed);
}

/// The histograms of one loop (microseconds).
#[derive(Debug, Clone)]
pub struct Hists {
    /// Echo latency in the measured window.
    pub latency: Histogram<u64>,
    /// Time from the connect call to the established connection.
    pub connect: Histogram<u64>,
}

impl Hists {
    /// Empty histograms, 1 µs to one hour, three significant digits.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Hists {
            latency: Histogram::new_with_bounds(1, HIST_MAX_US, 3)?,
            connect: Histogram::new_with_bounds(1, HIST_MAX_US, 3)?,
        })
    }

    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &Hists) {
        // Same bounds on both sides: adding cannot fail; if it ever did, the
        // values would be out of range and are better dropped than panicked on.
        let _ = self.latency.add(&o.latency);
        let _ = self.connect.add(&o.connect);
    }
}

/// What the control thread hands a loop when it first posts to it.
#[derive(Clone)]
pub struct LoopInit {
    /// The run.
    pub plan: Arc<Plan>,
    /// Shared state.
    pub shared: Arc<Shared>,
    /// This loop's counters.
    pub counters: Arc<Counters>,
    /// Empty histograms, copied for the loop when it starts.
    pub hists: Arc<Hists>,
}

/// Per-loop state, shared by the loop's connections.
pub struct LoopState {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    ctr: Arc<Counters>,
    hists: RefCell<Hists>,
    /// Messages being encoded for one write.
    out: RefCell<Vec<u8>>,
    /// WebSocket payloads before framing.
    scratch: RefCell<Vec<u8>>,
    /// Connections released by the control thread and not yet started.
    pending: Cell<u64>,
    /// Connect attempts (connect-only: connections) in flight.
    inflight: Cell<u32>,
    /// A latency value and how many times it was seen in a row, not yet
    /// in the histogram (messages sent in one turn and echoed in one read
    /// share it).
    lat_run: Cell<(u64, u64)>,
    /// Connections whose hold check is waiting for the hold to begin, with
    /// their offset into it (at most one entry per connection): armed by
    /// [`hold_began`] when the control thread starts the hold. They used
    /// to poll every offset until then, which cost more the longer the
    /// ramp took (a fifth of all CPU samples, in `BinaryHeap::pop` and
    /// `on_timer`, in a 100-second ramp to 1,000,000 connections).
    hold_waiting: RefCell<Vec<(ConnId, Duration)>>,
}

thread_local! {
    static STATE: RefCell<Option<Rc<LoopState>>> = const { RefCell::new(None) };
}

fn state(init: &LoopInit) -> Rc<LoopState> {
    STATE.with(|s| {
        s.borrow_mut()
            .get_or_insert_with(|| {
                Rc::new(LoopState {
                    plan: init.plan.clone(),
                    shared: init.shared.clone(),
                    ctr: init.counters.clone(),
                    hists: RefCell::new((*init.hists).clone()),
                    out: RefCell::new(Vec::new()),
                    scratch: RefCell::new(Vec::new()),
                    pending: Cell::new(0),
                    inflight: Cell::new(0),
                    lat_run: Cell::new((0, 0)),
                    hold_waiting: RefCell::new(Vec::new()),
                })
            })
            .clone()
    })
}

/// On a loop thread: the hold has begun (`Shared::hold_start` is set); arms
/// the check timer of every connection that found it not begun.
pub fn hold_began(lcx: &mut LoopCx<'_>, init: &LoopInit) {
    let st = state(init);
    let waiting = std::mem::take(&mut *st.hold_waiting.borrow_mut());
    for (id, off) in waiting {
        // false when the connection has closed since: nothing to arm
        lcx.with_conn(id, |cx| cx.set_timer(off, TIMER_HOLD));
    }
}

/// On a loop thread: `n` more connections may be opened.
pub fn release(lcx: &mut LoopCx<'_>, init: &LoopInit, n: u64) {
    let st = state(init);
    st.pending.set(st.pending.get() + n);
    st.pump(lcx);
}

/// On a loop thread: a copy of the loop's histograms.
pub fn collect(init: &LoopInit) -> Hists {
    let st = state(init);
    st.flush_latency();
    let h = st.hists.borrow().clone();
    h
}

impl LoopState {
    #[inline]
    fn now(&self) -> u64 {
        self.shared.now_ns()
    }

    #[inline]
    fn record_latency(&self, us: u64) {
        let (v, n) = self.lat_run.get();
        if v == us {
            self.lat_run.set((v, n + 1));
        } else {
            if n > 0 {
                let _ = self.hists.borrow_mut().latency.record_n(v, n);
            }
            self.lat_run.set((us, 1));
        }
    }

    fn flush_latency(&self) {
        let (v, n) = self.lat_run.replace((0, 0));
        if n > 0 {
            let _ = self.hists.borrow_mut().latency.record_n(v, n);
        }
    }

    /// Opens pending connections while the in-flight limit allows.
    fn pump(self: &Rc<Self>, lcx: &mut LoopCx<'_>) {
        // Bounded by the pending count and the in-flight limit.
        while self.pending.get() > 0
            && self.inflight.get() < self.plan.max_inflight
            && !self.shared.stopping.load(Relaxed)
        {
            self.pending.set(self.pending.get() - 1);
            let id = self.plan.conn_base + self.shared.next_conn.fetch_add(1, Relaxed);
            let opts = self.connect_opts(id);
            bump(&self.ctr.attempted, 1);
            let client = Client::new(self.clone(), id, self.now());
            match lcx.connect(self.plan.addr, &opts, Box::new(client)) {
                Ok(_) => self.inflight.set(self.inflight.get() + 1),
                Err(e) => {
                    let kind = ErrorKind::of_connect(&e);
                    self.error(kind, id, || format!("connect: {e}"));
                    bump(&self.ctr.settled, 1);
                    bump(&self.ctr.closed, 1);
                }
            }
        }
    }

    /// The connect options of connection `id` (its source address).
    fn connect_opts(&self, id: u64) -> ConnectOptions {
        let mut opts = self.plan.connect_opts.clone();
        if !self.plan.source_ips.is_empty() {
            let n = self.plan.source_ips.len() as u64;
            opts.source = Some(self.plan.source_ips[(id % n) as usize]);
        }
        opts
    }

    fn error(&self, kind: ErrorKind, conn: u64, detail: impl FnOnce() -> String) {
        bump(&self.ctr.errors[kind.index()], 1);
        let few = self.shared.samples.lock().map(|v| v.len() < MAX_SAMPLES);
        if few.unwrap_or(false) {
            self.shared
                .add_sample(format!("{}: connection {conn}: {}", kind.name(), detail()));
        }
    }
}

/// A [`Sink`] over the connection's context: WebSocket frames go straight
/// into the engine's outbound buffers.
struct CxSink<'a, 'b>(&'a mut Ctx<'b>);

impl Sink for CxSink<'_, '_> {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }
    fn write_vectored(&mut self, parts: &[&[u8]]) {
        self.0.write_vectored(parts);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Handshake,
    Running,
    Holding,
    HoldCheck,
    Done,
    Failed,
    /// HTTP: the server closed; a new connection carries on with this
    /// one's state, and this one only has to go.
    Handed,
}

const TIMER_RATE: u64 = 1;
const TIMER_THINK: u64 = 2;
const TIMER_HOLD: u64 = 3;

/// The HTTP state of a connection (boxed: the other protocols do not pay
/// for it in every connection).
struct HttpConn {
    rx: Rx,
    /// Requests below this sequence number were sent on a connection the
    /// server closed before answering them: they go again, keeping their
    /// first send time (their latency includes the reconnect).
    resend_until: u64,
    /// The response being received has the expected status.
    status_ok: bool,
    /// This connection continues one the server closed: it is not a new
    /// connection of the run (not counted as established, no connect
    /// time).
    continued: bool,
}

/// Why a connection's HTTP input failed.
type HttpFail = (ErrorKind, String);

/// One connection of the load.
struct Client {
    st: Rc<LoopState>,
    ws: Option<Box<ClientConnection>>,
    http: Option<Box<HttpConn>>,
    /// Send (closed loop) or due (open loop) time of the messages in
    /// flight, by sequence number modulo the window.
    times: Box<[u64]>,
    /// Global connection index (the payload's identity).
    id: u64,
    /// When the connect started (ns).
    t_connect: u64,
    /// Open loop: due time of the next message.
    next_due: u64,
    /// Messages sent; the next one has this sequence number.
    sent: u64,
    /// Messages fully echoed.
    recvd: u64,
    /// Bytes of message `recvd` received so far (TCP).
    recv_off: u32,
    phase: Phase,
    settled: bool,
    holds_slot: bool,
    rate_timer: bool,
}

impl Client {
    fn new(st: Rc<LoopState>, id: u64, now: u64) -> Self {
        let http = st.plan.http.as_ref().map(|p| {
            Box::new(HttpConn {
                rx: Rx::new(p),
                resend_until: 0,
                status_ok: false,
                continued: false,
            })
        });
        Client {
            st,
            ws: None,
            http,
            times: Box::new([]),
            id,
            t_connect: now,
            next_due: 0,
            sent: 0,
            recvd: 0,
            recv_off: 0,
            phase: Phase::Connecting,
            settled: false,
            holds_slot: true,
            rate_timer: false,
        }
    }

    fn settle(&mut self) {
        if !self.settled {
            self.settled = true;
            bump(&self.st.ctr.settled, 1);
        }
    }

    fn release_slot(&mut self, cx: &mut Ctx<'_>) {
        if self.holds_slot {
            self.holds_slot = false;
            let st = self.st.clone();
            st.inflight.set(st.inflight.get().saturating_sub(1));
            st.pump(cx.loop_cx());
        }
    }

    /// Counts an error, marks the connection failed and resets it.
    fn fail(&mut self, cx: &mut Ctx<'_>, kind: ErrorKind, detail: impl FnOnce() -> String) {
        if matches!(self.phase, Phase::Failed | Phase::Done) {
            return;
        }
        if self.phase == Phase::HoldCheck {
            bump(&self.st.ctr.checks_failed, 1);
        }
        self.phase = Phase::Failed;
        self.st.error(kind, self.id, detail);
        cx.abort();
    }

    /// Everything done: close politely (RST unless `--fin-close`).
    fn finish(&mut self, cx: &mut Ctx<'_>) {
        self.phase = Phase::Done;
        bump(&self.st.ctr.done, 1);
        if let Some(ws) = self.ws.as_mut() {
            let _ = ws.close(&mut CxSink(cx), CloseCode::NORMAL, "");
        }
        cx.close();
    }

    fn can_send(&self) -> bool {
        !self.st.shared.stopping.load(Relaxed)
            && self.st.plan.messages.is_none_or(|m| self.sent < m)
    }

    /// The connection is usable (TCP connected, WebSocket upgraded).
    fn begin(&mut self, cx: &mut Ctx<'_>, now: u64) {
        let plan = self.st.plan.clone();
        self.phase = Phase::Running;
        let continued = self.http.as_ref().is_some_and(|h| h.continued);
        let slots = (plan.window as usize).next_power_of_two();
        if self.times.len() != slots {
            // (A continued HTTP connection keeps the stamps of the
            // requests it sends again.)
            self.times = vec![0u64; slots].into_boxed_slice();
        }
        match plan.mode {
            Mode::Echo => {
                if !continued {
                    bump(&self.st.ctr.ready, 1);
                    self.settle();
                }
                let gap = match (plan.interval_ns, plan.think) {
                    (Some(i), _) => Duration::from_nanos(i),
                    (None, Some(t)) => t,
                    _ => Duration::ZERO,
                };
                cx.set_idle_timeout(Some(plan.timeout + gap));
                if let Some(interval) = plan.interval_ns.filter(|_| !continued) {
                    // Spread the connections' schedules over one interval.
                    self.next_due = now + mix64(self.id) % interval.max(1);
                }
                self.send_more(cx, now);
                self.maybe_finish(cx);
            }
            Mode::Hold { .. } | Mode::ConnectOnly => {
                cx.set_idle_timeout(Some(plan.timeout));
                self.send_one(cx, now);
            }
        }
    }

    /// The stamp (send or due time) of the next message if it may go now;
    /// open loop: arms the rate timer when it is not due yet.
    #[inline]
    fn next_stamp(&mut self, cx: &mut Ctx<'_>, now: u64) -> Option<u64> {
        let Some(interval) = self.st.plan.interval_ns else {
            return Some(now);
        };
        if self.next_due > now {
            if !self.rate_timer {
                self.rate_timer = true;
                let wait = (self.next_due - now).div_ceil(1_000_000).max(1);
                cx.set_timer(Duration::from_millis(wait), TIMER_RATE);
            }
            return None;
        }
        let due = self.next_due;
        self.next_due += interval;
        Some(due)
    }

    /// Sends what the mode allows now: every message due goes out with a
    /// single write (TCP: encoded straight into the engine's outbound
    /// buffer).
    fn send_more(&mut self, cx: &mut Ctx<'_>, now: u64) {
        let window = self.st.plan.window as u64;
        let text = match self.st.plan.proto {
            Proto::Tcp(wire) => {
                let first = self.sent;
                let mut total = 0;
                // Bounded by the window.
                while self.sent - self.recvd < window && self.can_send() {
                    let Some(stamp) = self.next_stamp(cx, now) else {
                        break;
                    };
                    total += wire.header_len() + self.claim(stamp);
                }
                self.write_tcp(cx, wire, first, total);
                return;
            }
            Proto::Http => {
                self.send_http(cx, now, window);
                return;
            }
            Proto::Ws { text } => text,
        };
        let (mut out, mut scratch) = (self.st.out.take(), self.st.scratch.take());
        let mut res = Ok(());
        // Bounded by the window.
        while self.sent - self.recvd < window && self.can_send() {
            let Some(stamp) = self.next_stamp(cx, now) else {
                break;
            };
            res = self.encode_ws(&mut out, &mut scratch, stamp, text);
            if res.is_err() {
                break;
            }
        }
        self.flush_out(cx, out, scratch, res);
    }

    /// Sends the next message now.
    fn send_one(&mut self, cx: &mut Ctx<'_>, stamp: u64) {
        let text = match self.st.plan.proto {
            Proto::Tcp(wire) => {
                let first = self.sent;
                let total = wire.header_len() + self.claim(stamp);
                self.write_tcp(cx, wire, first, total);
                return;
            }
            Proto::Http => {
                let st = self.st.clone();
                let Some(hp) = st.plan.http.as_ref() else {
                    return;
                };
                let first = self.sent;
                let total = hp.request_len(self.claim(stamp));
                self.write_http(cx, hp, first, total);
                return;
            }
            Proto::Ws { text } => text,
        };
        let (mut out, mut scratch) = (self.st.out.take(), self.st.scratch.take());
        let res = self.encode_ws(&mut out, &mut scratch, stamp, text);
        self.flush_out(cx, out, scratch, res);
    }

    /// Takes sequence number `sent` for a message stamped `stamp`; returns
    /// its payload size.
    #[inline]
    fn claim(&mut self, stamp: u64) -> usize {
        let seq = self.sent;
        let mask = self.times.len().wrapping_sub(1);
        if let Some(t) = self.times.get_mut(seq as usize & mask) {
            *t = stamp;
        }
        self.sent += 1;
        self.st.plan.size.size_of(self.id, seq)
    }

    /// Writes messages `first..sent` (`total` wire bytes) with one write,
    /// encoded in place.
    fn write_tcp(&mut self, cx: &mut Ctx<'_>, wire: Wire, first: u64, total: usize) {
        if total == 0 {
            return;
        }
        let (id, sizes, last) = (self.id, self.st.plan.size, self.sent);
        cx.write_with(total, |buf| {
            let mut off = 0;
            // Bounded by the window; `total` covers every message.
            for seq in first..last {
                let size = sizes.size_of(id, seq);
                off += wire.write_to(key(id, seq), size, &mut buf[off..]);
            }
            off
        });
    }

    /// HTTP: sends what the window allows, requests to send again first,
    /// all with one write (pipelined when the window is above 1).
    fn send_http(&mut self, cx: &mut Ctx<'_>, now: u64, window: u64) {
        let st = self.st.clone();
        let Some(hp) = st.plan.http.as_ref() else {
            return;
        };
        let resend = self.http.as_ref().map_or(0, |h| h.resend_until);
        let first = self.sent;
        let mut total = 0;
        // Bounded by the window.
        while self.sent - self.recvd < window {
            let size = if self.sent < resend {
                // Stamped when first sent: only the sequence number moves.
                self.sent += 1;
                st.plan.size.size_of(self.id, self.sent - 1)
            } else {
                if !self.can_send() {
                    break;
                }
                let Some(stamp) = self.next_stamp(cx, now) else {
                    break;
                };
                self.claim(stamp)
            };
            total += hp.request_len(size);
        }
        self.write_http(cx, hp, first, total);
    }

    /// Writes requests `first..sent` (`total` bytes) with one write,
    /// encoded straight into the outbound buffer.
    fn write_http(&mut self, cx: &mut Ctx<'_>, hp: &HttpPlan, first: u64, total: usize) {
        if total == 0 {
            return;
        }
        let (id, sizes, last) = (self.id, self.st.plan.size, self.sent);
        cx.write_with(total, |buf| {
            let mut off = 0;
            // Bounded by the window; `total` covers every request.
            for seq in first..last {
                off += hp.write_request(key(id, seq), sizes.size_of(id, seq), &mut buf[off..]);
            }
            off
        });
    }

    fn flush_out(
        &mut self,
        cx: &mut Ctx<'_>,
        mut out: Vec<u8>,
        scratch: Vec<u8>,
        res: Result<(), myriad_ws::Error>,
    ) {
        if !out.is_empty() {
            cx.write(&out);
            out.clear();
        }
        self.st.out.replace(out);
        self.st.scratch.replace(scratch);
        if let Err(e) = res {
            self.fail(cx, ErrorKind::WsProtocol, || format!("send: {e}"));
        }
    }

    /// Appends WebSocket message `sent` (as it goes on the wire) to `out`.
    /// (TCP messages are encoded in place by [`Client::write_tcp`].)
    fn encode_ws(
        &mut self,
        out: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
        stamp: u64,
        text: bool,
    ) -> Result<(), myriad_ws::Error> {
        let seq = self.sent;
        let size = self.claim(stamp);
        scratch.clear();
        append_payload(key(self.id, seq), size, scratch, text);
        let Some(ws) = self.ws.as_mut() else {
            return Ok(());
        };
        if text {
            match std::str::from_utf8(&scratch[..size]) {
                Ok(s) => ws.send_text(out, s),
                Err(_) => Ok(()),
            }
        } else {
            ws.send_binary(out, &scratch[..size])
        }
    }

    /// Bookkeeping of one completed echo (no socket work: may run inside
    /// the WebSocket decoder's callback).
    #[inline]
    fn completed(&mut self, seq: u64, size: usize, now: u64) {
        self.recvd += 1;
        let mask = self.times.len().wrapping_sub(1);
        let sent_at = self.times.get(seq as usize & mask).copied().unwrap_or(now);
        let ctr = &self.st.ctr;
        bump(&ctr.messages_total, 1);
        if self.st.shared.in_window(now) {
            bump(&ctr.messages, 1);
            bump(&ctr.bytes, size as u64);
            let us = (now.saturating_sub(sent_at) / 1000).clamp(1, HIST_MAX_US);
            self.st.record_latency(us);
        }
    }

    /// After echoes completed: next messages, phase changes.
    fn after_receive(&mut self, cx: &mut Ctx<'_>, now: u64) {
        if self.recvd > 0 && self.st.plan.mode != Mode::ConnectOnly {
            self.release_slot(cx);
        }
        match (self.phase, self.st.plan.mode) {
            (Phase::Running, Mode::Echo) => {
                if self.maybe_finish(cx) {
                    return;
                }
                match self.st.plan.think {
                    Some(t) if !t.is_zero() => {
                        if self.recvd == self.sent && self.can_send() {
                            cx.set_timer(t, TIMER_THINK);
                        }
                    }
                    _ => self.send_more(cx, now),
                }
            }
            (Phase::Running, Mode::Hold { dur, sample }) if self.recvd >= 1 => {
                self.phase = Phase::Holding;
                bump(&self.st.ctr.ready, 1);
                self.settle();
                cx.set_idle_timeout(None);
                let h = mix64(self.id ^ 0x686F_6C64);
                if ((h >> 11) as f64 / (1u64 << 53) as f64) < sample {
                    let frac = 0.02 + 0.93 * ((mix64(h) >> 11) as f64 / (1u64 << 53) as f64);
                    let off = dur.mul_f64(frac).max(Duration::from_millis(1));
                    cx.set_timer(off, TIMER_HOLD);
                }
            }
            (Phase::HoldCheck, _) if self.recvd == self.sent => {
                self.phase = Phase::Holding;
                bump(&self.st.ctr.checks_ok, 1);
                cx.set_idle_timeout(None);
            }
            (Phase::Running, Mode::ConnectOnly) if self.recvd >= 1 => {
                bump(&self.st.ctr.ready, 1);
                self.finish(cx);
            }
            _ => {}
        }
    }

    /// Echo mode: close once nothing is in flight and nothing more will be
    /// sent. Returns whether it closed.
    fn maybe_finish(&mut self, cx: &mut Ctx<'_>) -> bool {
        if self.phase == Phase::Running && self.recvd == self.sent && !self.can_send() {
            self.finish(cx);
            return true;
        }
        false
    }

    fn hold_check(&mut self, cx: &mut Ctx<'_>, now: u64) {
        if self.phase != Phase::Holding || self.st.shared.stopping.load(Relaxed) {
            return;
        }
        let Mode::Hold { dur, .. } = self.st.plan.mode else {
            return;
        };
        let h = mix64(self.id ^ 0x686F_6C64);
        let frac = 0.02 + 0.93 * ((mix64(h) >> 11) as f64 / (1u64 << 53) as f64);
        let off = dur.mul_f64(frac).max(Duration::from_millis(1));
        let hs = self.st.shared.hold_start.load(Relaxed);
        if hs == u64::MAX {
            // The hold has not begun (other connections are still being
            // opened): `hold_began` arms the check when it does.
            self.st.hold_waiting.borrow_mut().push((cx.id(), off));
            return;
        }
        let target = hs + off.as_nanos() as u64;
        if now < target {
            let wait = (target - now).div_ceil(1_000_000).max(1);
            cx.set_timer(Duration::from_millis(wait), TIMER_HOLD);
            return;
        }
        self.phase = Phase::HoldCheck;
        bump(&self.st.ctr.checks_sent, 1);
        cx.set_idle_timeout(Some(self.st.plan.timeout));
        self.send_one(cx, now);
    }

    fn on_tcp_data(&mut self, cx: &mut Ctx<'_>, data: &[u8], wire: Wire, now: u64) {
        let (sizes, verify) = (self.st.plan.size, self.st.plan.verify);
        let h = wire.header_len();
        let mut pos = 0;
        // Bounded by the input length: every pass consumes at least a byte.
        while pos < data.len() {
            if self.recvd >= self.sent {
                let n = data.len() - pos;
                self.fail(cx, ErrorKind::UnexpectedData, || {
                    format!("{n} bytes arrived with no message in flight")
                });
                return;
            }
            let seq = self.recvd;
            let size = sizes.size_of(self.id, seq);
            let total = h + size;
            let off = self.recv_off as usize;
            let take = (total - off).min(data.len() - pos);
            let got = &data[pos..pos + take];
            if verify {
                let k = key(self.id, seq);
                if let Some(i) = wire.verify(k, size, off, got) {
                    let at = off + i;
                    let (want, have) = (wire.expected_byte(k, size, at), got[i]);
                    self.fail(cx, ErrorKind::Mismatch, || {
                        format!(
                            "message {seq} ({total} bytes on the wire), byte {at}: \
                             expected {want:#04x}, got {have:#04x}"
                        )
                    });
                    return;
                }
            }
            pos += take;
            if off + take == total {
                self.recv_off = 0;
                self.completed(seq, size, now);
            } else {
                self.recv_off = (off + take) as u32;
            }
        }
        self.after_receive(cx, now);
    }

    /// HTTP: decodes the responses in `data`; returns the bytes consumed
    /// (an incomplete head or chunk-size line stays with the engine, which
    /// shows it again with the next bytes: no copy of it is kept here).
    fn on_http_data(&mut self, cx: &mut Ctx<'_>, data: &[u8], now: u64) -> usize {
        let Some(mut h) = self.http.take() else {
            return data.len();
        };
        let mut pos = 0;
        let res = self.http_events(&mut h, data, &mut pos, now);
        self.http = Some(h);
        match res {
            Err((kind, detail)) => {
                self.fail(cx, kind, || detail);
                data.len()
            }
            Ok(true) => {
                // Whatever follows the last response is not looked at.
                self.http_closed(cx, now);
                data.len()
            }
            Ok(false) => {
                self.after_receive(cx, now);
                pos
            }
        }
    }

    /// Runs the decoder over `data[*pos..]`; `Ok(true)` when a response
    /// that ends the connection (`Connection: close`) is complete.
    fn http_events(
        &mut self,
        h: &mut HttpConn,
        data: &[u8],
        pos: &mut usize,
        now: u64,
    ) -> Result<bool, HttpFail> {
        let st = self.st.clone();
        let Some(hp) = st.plan.http.as_ref() else {
            return Ok(false);
        };
        let verify = hp.echo && st.plan.verify;
        let mut close = false;
        // Bounded by the input: every event but the last consumes bytes or
        // ends a response (see `Rx::next`).
        loop {
            let seq = self.recvd;
            let ev =
                h.rx.next(data, pos)
                    .map_err(|e| (ErrorKind::HttpProtocol, format!("response {seq}: {e}")))?;
            match ev {
                Ev::NeedMore => return Ok(false),
                Ev::Head {
                    status,
                    length,
                    close: c,
                } => {
                    if self.recvd >= self.sent {
                        return Err((
                            ErrorKind::UnexpectedData,
                            "a response arrived with no request in flight".into(),
                        ));
                    }
                    close = c;
                    h.status_ok = status == hp.expect_status;
                    if !h.status_ok {
                        // Counted, and the connection goes on (a server
                        // answering 503 under load is measured, not
                        // stopped at the first one).
                        st.error(ErrorKind::HttpStatus, self.id, || {
                            format!(
                                "response {seq}: status {status}, expected {}",
                                hp.expect_status
                            )
                        });
                    } else if let (true, Some(n)) = (verify, length) {
                        let size = st.plan.size.size_of(self.id, seq);
                        if n != size as u64 {
                            return Err((
                                ErrorKind::Mismatch,
                                format!("response {seq}: Content-Length {n}, request body {size}"),
                            ));
                        }
                    }
                }
                Ev::Body { off, bytes } => {
                    if h.status_ok && verify {
                        let size = st.plan.size.size_of(self.id, seq);
                        if off + bytes.len() as u64 > size as u64 {
                            return Err((
                                ErrorKind::Mismatch,
                                format!("response {seq}: body longer than the {size}-byte request"),
                            ));
                        }
                        if let Some(i) =
                            verify_payload(key(self.id, seq), off as usize, bytes, false)
                        {
                            let at = off + i as u64;
                            return Err((
                                ErrorKind::Mismatch,
                                format!("response {seq} ({size} bytes): body byte {at} differs"),
                            ));
                        }
                    }
                }
                Ev::End { len } => {
                    self.http_end(h, len, now)?;
                    if close {
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// A response of `len` body bytes is complete.
    fn http_end(&mut self, h: &HttpConn, len: u64, now: u64) -> Result<(), HttpFail> {
        let seq = self.recvd;
        if !h.status_ok {
            // Answered, but not a success: no latency, not a message.
            self.recvd += 1;
            return Ok(());
        }
        let plan = &self.st.plan;
        if plan.verify && plan.http.as_ref().is_some_and(|p| p.echo) {
            let size = plan.size.size_of(self.id, seq);
            if len != size as u64 {
                return Err((
                    ErrorKind::Mismatch,
                    format!("response {seq}: body of {len} bytes, request body {size}"),
                ));
            }
        }
        self.completed(seq, len as usize, now);
        Ok(())
    }

    /// HTTP: the server ends the connection after the responses so far
    /// (`Connection: close`, a body delimited by the close, or an idle
    /// keep-alive connection closed). In echo mode the run goes on over a
    /// new connection (counted in `reconnects`), as HTTP clients do; a held
    /// connection that the server closes is an `early_close`.
    fn http_closed(&mut self, cx: &mut Ctx<'_>, now: u64) {
        if self.recvd > 0 && self.st.plan.mode != Mode::ConnectOnly {
            self.release_slot(cx);
        }
        match (self.phase, self.st.plan.mode) {
            (Phase::Running, Mode::Echo) => {
                if !self.maybe_finish(cx) {
                    self.reconnect(cx, now);
                }
            }
            (Phase::Running, Mode::ConnectOnly) if self.recvd >= 1 => {
                bump(&self.st.ctr.ready, 1);
                self.finish(cx);
            }
            _ => {
                let n = self.recvd;
                self.fail(cx, ErrorKind::EarlyClose, || {
                    format!("server closed the connection after {n} responses")
                });
            }
        }
    }

    /// Opens a new connection that carries on with this one's state:
    /// requests sent here and not answered go again there.
    fn reconnect(&mut self, cx: &mut Ctx<'_>, now: u64) {
        if self.st.shared.stopping.load(Relaxed) {
            self.phase = Phase::Done;
            cx.abort();
            return;
        }
        let st = self.st.clone();
        let mut next = Client::new(st.clone(), self.id, now);
        next.times = std::mem::take(&mut self.times);
        next.next_due = self.next_due;
        next.sent = self.recvd;
        next.recvd = self.recvd;
        next.settled = self.settled;
        next.holds_slot = self.holds_slot;
        if let Some(h) = next.http.as_mut() {
            h.resend_until = self.sent;
            h.continued = true;
        }
        let opts = st.connect_opts(self.id);
        match cx.loop_cx().connect(st.plan.addr, &opts, Box::new(next)) {
            Ok(_) => {
                bump(&st.ctr.reconnects, 1);
                // The slot (if still held) went with the new connection.
                self.holds_slot = false;
                self.phase = Phase::Handed;
                cx.close();
            }
            Err(e) => {
                let kind = ErrorKind::of_connect(&e);
                self.fail(cx, kind, || format!("reconnect: {e}"));
            }
        }
    }

    fn on_ws_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8], text: bool, now: u64) -> usize {
        let Some(mut ws) = self.ws.take() else {
            return data.len();
        };
        let was_handshake = self.phase == Phase::Handshake;
        let mut err: Option<(ErrorKind, String)> = None;
        let mut peer_close: Option<String> = None;
        let (sizes, verify) = (self.st.plan.size, self.st.plan.verify);
        let res = ws.feed(data, &mut CxSink(cx), &mut |ev, _tx| {
            if err.is_some() {
                return;
            }
            let (payload, is_text) = match ev {
                Event::Binary(b) => (b, false),
                Event::Text(t) => (t.as_bytes(), true),
                Event::Close { code, reason } => {
                    peer_close = Some(format!(
                        "server sent close {} {reason:?}",
                        code.map_or(0, |c| c.0)
                    ));
                    return;
                }
                Event::Ping(_) | Event::Pong(_) => return,
            };
            if self.recvd >= self.sent {
                err = Some((
                    ErrorKind::UnexpectedData,
                    format!(
                        "a {}-byte message arrived with none in flight",
                        payload.len()
                    ),
                ));
                return;
            }
            let seq = self.recvd;
            let size = sizes.size_of(self.id, seq);
            if verify {
                if is_text != text {
                    err = Some((
                        ErrorKind::Mismatch,
                        format!("message {seq}: wrong message type"),
                    ));
                    return;
                }
                if payload.len() != size {
                    err = Some((
                        ErrorKind::Mismatch,
                        format!("message {seq}: {} bytes, expected {size}", payload.len()),
                    ));
                    return;
                }
                if let Some(i) = verify_payload(key(self.id, seq), 0, payload, text) {
                    err = Some((
                        ErrorKind::Mismatch,
                        format!("message {seq} ({size} bytes), byte {i} differs"),
                    ));
                    return;
                }
            }
            self.completed(seq, payload.len(), now);
        });
        self.ws = Some(ws);
        let n = match res {
            Ok(n) => n,
            Err(e) => {
                let kind = match e {
                    myriad_ws::Error::Handshake(_) => ErrorKind::WsHandshake,
                    _ => ErrorKind::WsProtocol,
                };
                self.fail(cx, kind, || e.to_string());
                return data.len();
            }
        };
        if let Some((kind, detail)) = err {
            self.fail(cx, kind, || detail);
            return data.len();
        }
        if let Some(detail) = peer_close {
            if self.phase == Phase::Done {
                cx.close();
            } else {
                self.fail(cx, ErrorKind::EarlyClose, || detail);
            }
            return data.len();
        }
        if was_handshake && self.ws.as_ref().is_some_and(|w| w.is_open()) {
            if self.st.plan.mode != Mode::ConnectOnly {
                self.release_slot(cx);
            }
            self.begin(cx, now);
        } else if !was_handshake {
            self.after_receive(cx, now);
            // Held idle: the frame decoder is not needed until the next
            // echo (a hold check makes a new one); dropping it keeps a
            // held WebSocket connection under 1 KB of client memory.
            if self.phase == Phase::Holding {
                if let Some(ws) = self.ws.as_mut() {
                    drop(ws.park_decoder());
                }
            }
        }
        n
    }
}

impl Handler for Client {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        let now = self.st.now();
        let us = ((now.saturating_sub(self.t_connect)) / 1000).clamp(1, HIST_MAX_US);
        if !self.http.as_ref().is_some_and(|h| h.continued) {
            let _ = self.st.hists.borrow_mut().connect.record(us);
        }
        if !self.http.as_ref().is_some_and(|h| h.continued) {
            bump(&self.st.ctr.established, 1);
        }
        bump(&self.st.ctr.open, 1);
        // An open-loop connection may not send for a while: it frees its
        // connect slot now. Others free it when the server has answered
        // (first echo, WebSocket upgrade), so that no more than the
        // in-flight limit wait in the server's accept queue.
        if self.st.plan.interval_ns.is_some()
            && matches!(self.st.plan.proto, Proto::Tcp(_) | Proto::Http)
        {
            self.release_slot(cx);
        }
        match self.st.plan.proto {
            Proto::Tcp(_) | Proto::Http => self.begin(cx, now),
            Proto::Ws { .. } => {
                let plan = &self.st.plan;
                let cfg = ClientConfig {
                    mask_seed: Some(mix64(self.id ^ 0x6D61_736B)),
                    // the default offer is what browsers send
                    deflate: plan.ws_deflate.then(DeflateConfig::default),
                    ..ClientConfig::default()
                };
                let mut ws = Box::new(ClientConnection::new(cfg, &plan.ws_host, &plan.ws_path));
                ws.start(&mut CxSink(cx));
                self.ws = Some(ws);
                self.phase = Phase::Handshake;
                cx.set_idle_timeout(Some(plan.timeout));
            }
        }
    }

    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        if matches!(self.phase, Phase::Failed | Phase::Handed) {
            return data.len();
        }
        let now = self.st.now();
        match self.st.plan.proto {
            Proto::Tcp(wire) => {
                if self.phase == Phase::Done {
                    return data.len();
                }
                self.on_tcp_data(cx, data, wire, now);
                data.len()
            }
            Proto::Ws { text } => self.on_ws_data(cx, data, text, now),
            Proto::Http => {
                if self.phase == Phase::Done {
                    return data.len();
                }
                self.on_http_data(cx, data, now)
            }
        }
    }

    fn on_eof(&mut self, cx: &mut Ctx<'_>) {
        if self.phase == Phase::Done {
            cx.close();
            return;
        }
        if self.phase == Phase::Handed {
            return;
        }
        let live = matches!(
            self.phase,
            Phase::Running | Phase::Holding | Phase::HoldCheck
        );
        if let Some(mut h) = self.http.take_if(|_| live) {
            let now = self.st.now();
            let eof = h.rx.eof();
            let res = match eof {
                Eof::Complete { len } => self.http_end(&h, len, now).map(|_| true),
                Eof::Clean => Ok(self.recvd == self.sent
                    && self.phase == Phase::Running
                    && self.st.plan.mode == Mode::Echo),
                Eof::Truncated => Ok(false),
            };
            self.http = Some(h);
            match res {
                Err((kind, detail)) => {
                    self.fail(cx, kind, || detail);
                    return;
                }
                Ok(true) => {
                    self.http_closed(cx, now);
                    return;
                }
                Ok(false) => {}
            }
        }
        let (sent, recvd) = (self.sent, self.recvd);
        self.fail(cx, ErrorKind::EarlyClose, || {
            format!("server closed after {recvd} of {sent} echoes")
        });
    }

    fn on_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
        let now = self.st.now();
        match token {
            TIMER_RATE | TIMER_THINK => {
                if token == TIMER_RATE {
                    self.rate_timer = false;
                }
                if self.phase == Phase::Running && !self.maybe_finish(cx) {
                    self.send_more(cx, now);
                }
            }
            TIMER_HOLD => self.hold_check(cx, now),
            _ => {}
        }
    }

    fn on_shutdown(&mut self, cx: &mut Ctx<'_>) {
        let now = self.st.now();
        let timeout = self.st.plan.timeout.as_nanos() as u64;
        let mask = self.times.len().wrapping_sub(1);
        let oldest = self
            .times
            .get(self.recvd as usize & mask)
            .copied()
            .unwrap_or(now);
        let overdue = self.sent > self.recvd && now.saturating_sub(oldest) >= timeout;
        match self.phase {
            Phase::Connecting => {
                let age = now.saturating_sub(self.t_connect);
                self.fail(cx, ErrorKind::ConnectTimeout, || {
                    format!("still connecting after {} ms", age / 1_000_000)
                });
            }
            Phase::Handshake => {
                self.fail(cx, ErrorKind::WsHandshake, || "no upgrade response".into());
            }
            Phase::Handed => cx.abort(),
            Phase::Running | Phase::HoldCheck if overdue => {
                let n = self.sent - self.recvd;
                self.fail(cx, ErrorKind::Timeout, || {
                    format!("{n} echoes not back at the end of the run")
                });
            }
            _ => {
                self.phase = Phase::Done;
                cx.abort();
            }
        }
    }

    fn on_close(&mut self, cx: &mut Ctx<'_>, reason: CloseReason) {
        let st = self.st.clone();
        if self.phase == Phase::Handed {
            // Its successor carries the connection on (and counts its end).
            drop1(&st.ctr.open);
            return;
        }
        bump(&st.ctr.closed, 1);
        if self.phase != Phase::Connecting {
            drop1(&st.ctr.open);
        }
        let phase = self.phase;
        let (sent, recvd) = (self.sent, self.recvd);
        // With TLS, a connection is still `Connecting` during the
        // handshake: anything but a failed connect is a handshake failure.
        let tls_handshake = st.plan.tls_connector.is_some() && phase == Phase::Connecting;
        let kind = match &reason {
            _ if matches!(phase, Phase::Failed | Phase::Done) => None,
            CloseReason::ConnectFailed(e) => Some((ErrorKind::of_connect(e), e.to_string())),
            CloseReason::ConnectTimeout => Some((ErrorKind::ConnectTimeout, reason.to_string())),
            CloseReason::Filter(e) => {
                Some((ErrorKind::of_tls(e.kind, tls_handshake), e.to_string()))
            }
            CloseReason::HandshakeTimeout => Some((
                ErrorKind::TlsHandshakeTimeout,
                "TLS handshake not done within --handshake-timeout".into(),
            )),
            CloseReason::PeerClosed | CloseReason::Io(_) if tls_handshake => Some((
                ErrorKind::TlsHandshake,
                format!("during the TLS handshake: {reason}"),
            )),
            CloseReason::Io(e) => Some((ErrorKind::of_io(e), e.to_string())),
            CloseReason::IdleTimeout if phase == Phase::Handshake => {
                Some((ErrorKind::WsHandshake, "no upgrade response in time".into()))
            }
            CloseReason::IdleTimeout => Some((
                ErrorKind::Timeout,
                format!("no echo within the timeout ({recvd} of {sent} back)"),
            )),
            CloseReason::PeerClosed => Some((
                ErrorKind::EarlyClose,
                format!("server closed after {recvd} of {sent} echoes"),
            )),
            CloseReason::Local | CloseReason::Shutdown => None,
            other => Some((ErrorKind::Io, other.to_string())),
        };
        if let Some((kind, detail)) = kind {
            if phase == Phase::HoldCheck {
                bump(&st.ctr.checks_failed, 1);
            }
            st.error(kind, self.id, || detail);
        }
        self.settle();
        self.release_slot(cx);
    }
}
