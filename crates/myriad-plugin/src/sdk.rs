//! The safe Rust side of the ABI: the [`Plugin`] trait, the context [`Cx`]
//! and the trampolines that [`crate::export_plugin!`] puts in the table.
//!
//! `unsafe` here is the plugin boundary itself (the other side of the
//! server's loader): raw pointers from the host are turned into slices and
//! boxes, each with its `// SAFETY:` reason.

use crate::abi::*;
use std::any::Any;
use std::ffi::{c_char, c_void, CStr};
use std::mem::offset_of;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

/// How a plugin takes its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Bytes as they arrive: [`Plugin::on_data`] returns how many it
    /// consumed (tcp and tls stacks).
    Stream,
    /// Whole messages: [`Plugin::on_message`] (ws/wss stacks; tcp/tls with a
    /// framing from the config or [`Plugin::message_size`]).
    Message,
}

/// A whole message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A WebSocket text message (valid UTF-8).
    Text(&'a str),
    /// A binary message (every message on tcp/tls stacks).
    Binary(&'a [u8]),
}

impl<'a> Message<'a> {
    /// The payload.
    ///
    /// ```
    /// assert_eq!(myriad_plugin::Message::Text("hi").as_bytes(), b"hi");
    /// ```
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        }
    }
}

/// What [`Plugin::message_size`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageSize {
    /// Not enough bytes to tell yet.
    NeedMore,
    /// The next message (header included) is this many bytes long.
    Size(usize),
    /// The bytes cannot start a message: the connection is closed.
    Malformed,
}

/// Why a connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The plugin or the server closed it.
    Local,
    /// The peer closed it.
    Peer,
    /// A socket error.
    Error,
    /// An idle, handshake or close timeout.
    Timeout,
    /// The server shut down.
    Shutdown,
    /// Bad input from the peer.
    Protocol,
    /// The plugin misbehaved (a panic, a bad return value).
    Fault,
    /// A reason this SDK does not know (a newer host).
    Other(u32),
}

impl CloseReason {
    fn from_raw(r: u32) -> Self {
        match r {
            MYRIAD_CLOSE_LOCAL => CloseReason::Local,
            MYRIAD_CLOSE_PEER => CloseReason::Peer,
            MYRIAD_CLOSE_ERROR => CloseReason::Error,
            MYRIAD_CLOSE_TIMEOUT => CloseReason::Timeout,
            MYRIAD_CLOSE_SHUTDOWN => CloseReason::Shutdown,
            MYRIAD_CLOSE_PROTOCOL => CloseReason::Protocol,
            MYRIAD_CLOSE_FAULT => CloseReason::Fault,
            r => CloseReason::Other(r),
        }
    }
}

/// What [`Plugin::on_upgrade`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    /// Accept, selecting the offered subprotocol at this index of
    /// [`UpgradeRequest::protocols`] (or none).
    Accept(Option<usize>),
    /// Refuse with this HTTP status (400–599).
    Refuse(u16),
}

/// Log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Errors.
    Error = 1,
    /// Warnings.
    Warn = 2,
    /// Information.
    Info = 3,
    /// Debugging.
    Debug = 4,
    /// Tracing.
    Trace = 5,
}

/// A host call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The connection is closing or closed.
    Closed,
    /// A bad argument (a close code, a topic, ...).
    Invalid,
    /// The call does not apply here (no connection, wrong stack, an older
    /// host without this call).
    Unsupported,
    /// A bound was reached (timers, topics, counters, pool queue).
    Limit,
    /// An error code this SDK does not know.
    Other(i64),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Closed => f.write_str("connection closed"),
            Error::Invalid => f.write_str("invalid argument"),
            Error::Unsupported => f.write_str("not supported here"),
            Error::Limit => f.write_str("limit reached"),
            Error::Other(c) => write!(f, "host error {c}"),
        }
    }
}

impl std::error::Error for Error {}

fn check(r: i64) -> Result<u64, Error> {
    match r {
        r if r >= 0 => Ok(r as u64),
        -1 => Err(Error::Closed),
        -2 => Err(Error::Invalid),
        -3 => Err(Error::Unsupported),
        -4 => Err(Error::Limit),
        r => Err(Error::Other(r)),
    }
}

/// A plugin: one value per service (shared by the service's loops) and one
/// `Conn` per connection.
///
/// Only [`Plugin::init`] is required; a stream plugin implements
/// [`Plugin::on_data`], a message plugin [`Plugin::on_message`].
pub trait Plugin: Send + Sync + Sized + 'static {
    /// Per-connection state, made with `Default` when a connection opens
    /// (or by [`Plugin::on_upgrade`] on ws stacks). `()` costs nothing.
    type Conn: Default + 'static;
    /// The plugin's name, in logs and metrics.
    const NAME: &'static CStr;
    /// Stream or message.
    const SHAPE: Shape;
    /// Whether [`Plugin::message_size`] frames messages on tcp/tls stacks
    /// (instead of a `framing` from the config).
    const CUSTOM_FRAMING: bool = false;

    /// Once per service: `config` is the service's `[service.plugin_config]`
    /// table as JSON. An `Err` stops the server (or a reload) with its text.
    ///
    /// # Errors
    ///
    /// Whatever the plugin finds wrong with its configuration.
    fn init(cx: &mut Cx<'_>, service: &str, config: &str) -> Result<Self, String>;

    /// ws stacks: accept (choosing a subprotocol, filling `conn`) or refuse
    /// an upgrade. The default accepts with no subprotocol.
    fn on_upgrade(
        &self,
        cx: &mut Cx<'_>,
        req: &UpgradeRequest<'_>,
        conn: &mut Self::Conn,
    ) -> Upgrade {
        let _ = (cx, req, conn);
        Upgrade::Accept(None)
    }

    /// The connection is open.
    fn on_open(&self, cx: &mut Cx<'_>, conn: &mut Self::Conn) {
        let _ = (cx, conn);
    }

    /// Stream plugins: bytes arrived; returns how many were consumed (the
    /// rest comes again with the next bytes).
    fn on_data(&self, cx: &mut Cx<'_>, conn: &mut Self::Conn, data: &mut [u8]) -> usize {
        let _ = (cx, conn);
        data.len()
    }

    /// With `CUSTOM_FRAMING`: the length of the message that starts `data`.
    fn message_size(&self, data: &[u8]) -> MessageSize {
        let _ = data;
        MessageSize::Malformed
    }

    /// Message plugins: a whole message arrived.
    fn on_message(&self, cx: &mut Cx<'_>, conn: &mut Self::Conn, msg: Message<'_>) {
        let _ = (cx, conn, msg);
    }

    /// Everything queued was sent.
    fn on_drain(&self, cx: &mut Cx<'_>, conn: &mut Self::Conn) {
        let _ = (cx, conn);
    }

    /// A timer set with [`Cx::set_timer`] fired.
    fn on_timer(&self, cx: &mut Cx<'_>, conn: &mut Self::Conn, token: u64) {
        let _ = (cx, conn, token);
    }

    /// The connection is gone; `code` is the WebSocket close code on ws
    /// stacks.
    fn on_close(&self, cx: &mut Cx<'_>, conn: Self::Conn, reason: CloseReason, code: u16) {
        let _ = (cx, conn, reason, code);
    }

    /// Work from [`Cx::spawn_blocking`] finished; `conn` is `None` if the
    /// connection closed meanwhile.
    fn on_task(
        &self,
        cx: &mut Cx<'_>,
        conn: Option<&mut Self::Conn>,
        token: u64,
        result: Box<dyn Any + Send>,
    ) {
        let _ = (cx, conn, token, result);
    }

    /// The service stopped and its last connection is gone.
    fn shutdown(self) {}
}

/// A WebSocket upgrade request.
#[derive(Debug, Clone, Copy)]
pub struct UpgradeRequest<'a> {
    raw: &'a myriad_upgrade,
}

/// # Safety
///
/// `s` must point to `len` readable bytes for `'a` (or be empty).
unsafe fn str_of<'a>(s: myriad_str) -> &'a str {
    if s.len == 0 || s.ptr.is_null() {
        return "";
    }
    // SAFETY: the caller's contract; the host passes UTF-8 (checked here
    // anyway: invalid text reads as empty).
    let b = unsafe { std::slice::from_raw_parts(s.ptr.cast::<u8>(), s.len) };
    std::str::from_utf8(b).unwrap_or("")
}

/// # Safety
///
/// `ptr` must point to `len` values for `'a` (or `len` be 0).
unsafe fn slice_of<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if len == 0 || ptr.is_null() {
        &[]
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

impl<'a> UpgradeRequest<'a> {
    /// The target's path.
    pub fn path(&self) -> &'a str {
        // SAFETY: the host's strings live for the callback.
        unsafe { str_of(self.raw.path) }
    }

    /// The target's query (after `?`), empty if none.
    pub fn query(&self) -> &'a str {
        // SAFETY: as above.
        unsafe { str_of(self.raw.query) }
    }

    /// Every header field as (name, value).
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        // SAFETY: the host's array lives for the callback.
        let hs = unsafe { slice_of(self.raw.headers, self.raw.header_count) };
        // SAFETY: as above.
        hs.iter()
            .map(|h| unsafe { (str_of(h.name), str_of(h.value)) })
    }

    /// The first header field called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The offered subprotocols, in the client's order.
    pub fn protocols(&self) -> impl Iterator<Item = &'a str> + 'a {
        // SAFETY: the host's array lives for the callback.
        let ps = unsafe { slice_of(self.raw.protocols, self.raw.protocol_count) };
        // SAFETY: as above.
        ps.iter().map(|p| unsafe { str_of(*p) })
    }

    /// The peer as `ip:port` (empty if unknown).
    pub fn peer(&self) -> &'a str {
        // SAFETY: as above.
        unsafe { str_of(self.raw.peer) }
    }
}

static HOST: AtomicPtr<myriad_host> = AtomicPtr::new(std::ptr::null_mut());

/// The context of one callback: the host calls a plugin may make.
pub struct Cx<'a> {
    raw: *mut myriad_ctx,
    host: &'a myriad_host,
}

impl std::fmt::Debug for Cx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cx").finish_non_exhaustive()
    }
}

/// Whether the host's table has the field `$f` (an older host may not).
macro_rules! has {
    ($host:expr, $f:ident) => {
        covers(
            $host.struct_size,
            offset_of!(myriad_host, $f) + std::mem::size_of::<usize>(),
        )
    };
}

/// Calls host function `$f` if the host has it, else `Unsupported`.
macro_rules! call {
    ($self:ident, $f:ident ( $($arg:expr),* )) => {
        if has!($self.host, $f) {
            // SAFETY: the host's function, with the callback's context and
            // arguments that live for the call.
            check(unsafe { ($self.host.$f)($self.raw, $($arg),*) } as i64)
        } else {
            Err(Error::Unsupported)
        }
    };
}

type Work = Box<dyn FnOnce() -> Box<dyn Any + Send> + Send>;

/// A blocking job on its way to the pool and back.
struct Task {
    work: Option<Work>,
    result: Option<Box<dyn Any + Send>>,
}

unsafe extern "C" fn run_task(arg: *mut c_void) {
    // SAFETY: `arg` is the `Task` box made by `spawn_blocking`, owned by
    // the host until `on_task` hands it back.
    let task = unsafe { &mut *arg.cast::<Task>() };
    if let Some(work) = task.work.take() {
        // A panic in blocking work is the work's result, reported to
        // `on_task` as a `String`.
        task.result = Some(
            panic::catch_unwind(AssertUnwindSafe(work))
                .unwrap_or_else(|p| Box::new(panic_text(&*p))),
        );
    }
}

fn panic_text(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic".to_owned()
    }
}

impl Cx<'_> {
    /// Raw bytes to the peer (stream plugins; tcp/tls stacks).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the connection is closing; [`Error::Unsupported`]
    /// on ws stacks or without a connection.
    pub fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        call!(self, write(data.as_ptr(), data.len())).map(drop)
    }

    /// One message, framed for the connection's stack (a WebSocket frame;
    /// with `framing = "lp32"` a length prefix, with `"line"` a newline).
    ///
    /// # Errors
    ///
    /// As [`Cx::write`]; [`Error::Invalid`] for text that is not UTF-8.
    pub fn send(&mut self, msg: Message<'_>) -> Result<(), Error> {
        let (kind, b) = match msg {
            Message::Text(t) => (MYRIAD_TEXT, t.as_bytes()),
            Message::Binary(b) => (MYRIAD_BINARY, b),
        };
        call!(self, send(kind, b.as_ptr(), b.len())).map(drop)
    }

    /// Closes after what is queued is sent; `code` is a WebSocket close code
    /// on ws stacks (0 means 1000).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a close code a server may not send.
    pub fn close(&mut self, code: u16, reason: &str) -> Result<(), Error> {
        call!(self, close(code, reason.as_ptr().cast(), reason.len())).map(drop)
    }

    /// Shuts down the sending side after what is queued.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] without a connection.
    pub fn shutdown_write(&mut self) -> Result<(), Error> {
        call!(self, shutdown_write()).map(drop)
    }

    /// Stops delivering input until [`Cx::resume_reading`].
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] without a connection.
    pub fn pause_reading(&mut self) -> Result<(), Error> {
        call!(self, pause_reading()).map(drop)
    }

    /// Resumes delivering input.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] without a connection.
    pub fn resume_reading(&mut self) -> Result<(), Error> {
        call!(self, resume_reading()).map(drop)
    }

    /// [`Plugin::on_timer`] with `token` after `after` (setting a token again
    /// replaces it).
    ///
    /// # Errors
    ///
    /// [`Error::Limit`] past 64 timers on one connection.
    pub fn set_timer(&mut self, after: Duration, token: u64) -> Result<(), Error> {
        let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        call!(self, set_timer(ms, token)).map(drop)
    }

    /// Cancels the timer `token`.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] without a connection.
    pub fn cancel_timer(&mut self, token: u64) -> Result<(), Error> {
        call!(self, cancel_timer(token)).map(drop)
    }

    fn addr(&mut self, local: bool) -> Option<String> {
        let mut buf = [0u8; 64];
        let (p, cap) = (buf.as_mut_ptr().cast::<c_char>(), buf.len());
        let n = if local {
            call!(self, local_addr(p, cap))
        } else {
            call!(self, peer_addr(p, cap))
        }
        .ok()? as usize;
        String::from_utf8(buf.get(..n)?.to_vec()).ok()
    }

    /// The peer's address as `ip:port`.
    pub fn peer_addr(&mut self) -> Option<String> {
        self.addr(false)
    }

    /// The local address as `ip:port`.
    pub fn local_addr(&mut self) -> Option<String> {
        self.addr(true)
    }

    /// A number naming the connection while it is open (0 without one).
    pub fn conn_id(&mut self) -> u64 {
        if has!(self.host, conn_id) {
            // SAFETY: the host's function with the callback's context.
            unsafe { (self.host.conn_id)(self.raw) }
        } else {
            0
        }
    }

    /// Subscribes the connection to `topic` (ws stacks).
    ///
    /// # Errors
    ///
    /// [`Error::Limit`] past the topic bounds; [`Error::Unsupported`] on
    /// tcp/tls stacks.
    pub fn subscribe(&mut self, topic: &str) -> Result<(), Error> {
        call!(self, subscribe(topic.as_ptr().cast(), topic.len())).map(drop)
    }

    /// Unsubscribes the connection from `topic`.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] on tcp/tls stacks.
    pub fn unsubscribe(&mut self, topic: &str) -> Result<(), Error> {
        call!(self, unsubscribe(topic.as_ptr().cast(), topic.len())).map(drop)
    }

    /// Sends `msg` to every connection subscribed to `topic`, on every loop
    /// of the service (framed once).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] on tcp/tls stacks.
    pub fn publish(&mut self, topic: &str, msg: Message<'_>) -> Result<(), Error> {
        let (kind, b) = match msg {
            Message::Text(t) => (MYRIAD_TEXT, t.as_bytes()),
            Message::Binary(b) => (MYRIAD_BINARY, b),
        };
        call!(
            self,
            publish(
                topic.as_ptr().cast(),
                topic.len(),
                kind,
                b.as_ptr(),
                b.len()
            )
        )
        .map(drop)
    }

    /// A line in the server's log, tagged with the service and plugin.
    pub fn log(&mut self, level: Level, msg: &str) {
        if has!(self.host, log) {
            // SAFETY: the host's function; `msg` lives for the call.
            unsafe { (self.host.log)(self.raw, level as u32, msg.as_ptr().cast(), msg.len()) }
        }
    }

    /// Adds `n` to `myriad_plugin_events_total{service,plugin,name}`.
    ///
    /// # Errors
    ///
    /// [`Error::Limit`] past the number of counter names a service may have.
    pub fn counter_add(&mut self, name: &str, n: u64) -> Result<(), Error> {
        call!(self, counter_add(name.as_ptr().cast(), name.len(), n)).map(drop)
    }

    /// Runs `work` on the service's business pool, then
    /// [`Plugin::on_task`] with `token` and its result on this connection's
    /// loop.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when the service has no pool
    /// (`pool_threads`); [`Error::Limit`] when its queue is full.
    pub fn spawn_blocking<R: Any + Send>(
        &mut self,
        token: u64,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<(), Error> {
        let task = Box::into_raw(Box::new(Task {
            work: Some(Box::new(move || Box::new(work()) as Box<dyn Any + Send>)),
            result: None,
        }));
        let r = call!(self, spawn_blocking(run_task, task.cast(), token));
        if r.is_err() {
            // SAFETY: the host refused it, so the box is still ours.
            drop(unsafe { Box::from_raw(task) });
        }
        r.map(drop)
    }

    fn fault(&mut self, msg: &str) {
        if has!(self.host, fault) {
            // SAFETY: the host's function; `msg` lives for the call.
            unsafe {
                (self.host.fault)(self.raw, MYRIAD_FAULT_PANIC, msg.as_ptr().cast(), msg.len())
            }
        }
    }
}

fn host<'a>() -> Option<&'a myriad_host> {
    let p = HOST.load(Ordering::Acquire);
    // SAFETY: set once by `entry` to the host's table, which lives as long
    // as the host process.
    unsafe { p.as_ref() }
}

/// Runs `f` with a context; a panic is reported to the host as a fault
/// (the connection is closed and counted) and `fallback` returned.
fn guard<R>(raw: *mut myriad_ctx, fallback: R, f: impl FnOnce(&mut Cx<'_>) -> R) -> R {
    let Some(host) = host() else {
        return fallback;
    };
    let mut cx = Cx { raw, host };
    match panic::catch_unwind(AssertUnwindSafe(|| f(&mut cx))) {
        Ok(r) => r,
        Err(p) => {
            let mut cx = Cx { raw, host };
            cx.fault(&panic_text(&*p));
            fallback
        }
    }
}

/// # Safety
///
/// `s` is the service state made by `tr_init::<P>`.
unsafe fn svc<'a, P>(s: *mut c_void) -> &'a P {
    // SAFETY: the caller's contract; the host keeps it until `shutdown`.
    unsafe { &*s.cast::<P>() }
}

/// # Safety
///
/// `c` is a connection state made by `tr_on_open::<P>`/`tr_on_upgrade`.
unsafe fn conn<'a, P: Plugin>(c: *mut c_void) -> &'a mut P::Conn {
    // SAFETY: the caller's contract; only the connection's loop uses it.
    unsafe { &mut *c.cast::<P::Conn>() }
}

fn new_conn<P: Plugin>() -> *mut c_void {
    Box::into_raw(Box::<P::Conn>::default()).cast()
}

unsafe extern "C" fn tr_init<P: Plugin>(
    cx: *mut myriad_ctx,
    service: *const c_char,
    service_len: usize,
    config: *const c_char,
    config_len: usize,
    state: *mut *mut c_void,
    err: *mut c_char,
    err_cap: usize,
) -> i32 {
    // SAFETY: the host passes strings that live for the call.
    let (service, config) = unsafe {
        (
            str_of(myriad_str {
                ptr: service,
                len: service_len,
            }),
            str_of(myriad_str {
                ptr: config,
                len: config_len,
            }),
        )
    };
    let r = guard(cx, Err("init panicked".to_owned()), |cx| {
        P::init(cx, service, config)
    });
    match r {
        Ok(p) => {
            // SAFETY: `state` is the host's out-pointer.
            unsafe { *state = Box::into_raw(Box::new(p)).cast() };
            0
        }
        Err(e) => {
            if !err.is_null() && err_cap > 0 {
                let n = e.len().min(err_cap - 1);
                // SAFETY: the host's buffer holds `err_cap` bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(e.as_ptr(), err.cast::<u8>(), n);
                    *err.add(n) = 0;
                }
            }
            1
        }
    }
}

unsafe extern "C" fn tr_shutdown<P: Plugin>(state: *mut c_void) {
    if state.is_null() {
        return;
    }
    // SAFETY: the service state made by `tr_init`, handed back once.
    let p = unsafe { Box::from_raw(state.cast::<P>()) };
    let _ = panic::catch_unwind(AssertUnwindSafe(move || p.shutdown()));
}

unsafe extern "C" fn tr_on_upgrade<P: Plugin>(
    cx: *mut myriad_ctx,
    s: *mut c_void,
    req: *const myriad_upgrade,
    protocol: *mut i32,
    conn_state: *mut *mut c_void,
) -> i32 {
    // SAFETY: the host's request lives for the call.
    let Some(raw) = (unsafe { req.as_ref() }) else {
        return 500;
    };
    let c = new_conn::<P>();
    // SAFETY: the service state and a fresh connection state.
    let (p, st) = unsafe { (svc::<P>(s), conn::<P>(c)) };
    let answer = guard(cx, Upgrade::Refuse(500), |cx| {
        p.on_upgrade(cx, &UpgradeRequest { raw }, st)
    });
    match answer {
        Upgrade::Accept(proto) => {
            // SAFETY: the host's out-pointers.
            unsafe {
                *protocol = proto.and_then(|i| i32::try_from(i).ok()).unwrap_or(-1);
                *conn_state = c;
            }
            0
        }
        Upgrade::Refuse(status) => {
            // SAFETY: ours, never handed out.
            drop(unsafe { Box::from_raw(c.cast::<P::Conn>()) });
            i32::from(status)
        }
    }
}

unsafe extern "C" fn tr_on_open<P: Plugin>(
    cx: *mut myriad_ctx,
    s: *mut c_void,
    conn_state: *mut *mut c_void,
) {
    // SAFETY: the host's out-pointer.
    let slot = unsafe { &mut *conn_state };
    if slot.is_null() {
        *slot = new_conn::<P>();
    }
    // SAFETY: the service state and the connection's state.
    let (p, st) = unsafe { (svc::<P>(s), conn::<P>(*slot)) };
    guard(cx, (), |cx| p.on_open(cx, st));
}

unsafe extern "C" fn tr_on_data<P: Plugin>(
    cx: *mut myriad_ctx,
    s: *mut c_void,
    c: *mut c_void,
    data: *mut u8,
    len: usize,
) -> usize {
    // SAFETY: the host's states and its receive buffer for the call.
    let (p, st, d) = unsafe {
        (
            svc::<P>(s),
            conn::<P>(c),
            if len == 0 {
                &mut [][..]
            } else {
                std::slice::from_raw_parts_mut(data, len)
            },
        )
    };
    guard(cx, 0, |cx| p.on_data(cx, st, d))
}

unsafe extern "C" fn tr_message_size<P: Plugin>(
    s: *mut c_void,
    data: *const u8,
    len: usize,
) -> i64 {
    // SAFETY: the service state and the host's bytes for the call.
    let (p, d) = unsafe { (svc::<P>(s), slice_of(data, len)) };
    match panic::catch_unwind(AssertUnwindSafe(|| p.message_size(d))) {
        Ok(MessageSize::NeedMore) => MYRIAD_NEED_MORE,
        Ok(MessageSize::Size(n)) => i64::try_from(n).unwrap_or(-1),
        Ok(MessageSize::Malformed) | Err(_) => -1,
    }
}

unsafe extern "C" fn tr_on_message<P: Plugin>(
    cx: *mut myriad_ctx,
    s: *mut c_void,
    c: *mut c_void,
    kind: u32,
    data: *const u8,
    len: usize,
) {
    // SAFETY: the host's states and message bytes for the call.
    let (p, st, d) = unsafe { (svc::<P>(s), conn::<P>(c), slice_of(data, len)) };
    let msg = match (kind, std::str::from_utf8(d)) {
        (MYRIAD_TEXT, Ok(t)) => Message::Text(t),
        _ => Message::Binary(d),
    };
    guard(cx, (), |cx| p.on_message(cx, st, msg));
}

unsafe extern "C" fn tr_on_drain<P: Plugin>(cx: *mut myriad_ctx, s: *mut c_void, c: *mut c_void) {
    // SAFETY: the host's states.
    let (p, st) = unsafe { (svc::<P>(s), conn::<P>(c)) };
    guard(cx, (), |cx| p.on_drain(cx, st));
}

unsafe extern "C" fn tr_on_timer<P: Plugin>(
    cx: *mut myriad_ctx,
    s: *mut c_void,
    c: *mut c_void,
    token: u64,
) {
    // SAFETY: the host's states.
    let (p, st) = unsafe { (svc::<P>(s), conn::<P>(c)) };
    guard(cx, (), |cx| p.on_timer(cx, st, token));
}

unsafe extern "C" fn tr_on_close<P: Plugin>(
    cx: *mut myriad_ctx,
    s: *mut c_void,
    c: *mut c_void,
    reason: u32,
    code: u16,
) {
    // SAFETY: the service state.
    let p = unsafe { svc::<P>(s) };
    if c.is_null() {
        return;
    }
    // SAFETY: the connection's state, handed back once at its end.
    let st = unsafe { Box::from_raw(c.cast::<P::Conn>()) };
    guard(cx, (), move |cx| {
        p.on_close(cx, *st, CloseReason::from_raw(reason), code)
    });
}

unsafe extern "C" fn tr_on_task<P: Plugin>(
    cx: *mut myriad_ctx,
    s: *mut c_void,
    c: *mut c_void,
    token: u64,
    arg: *mut c_void,
) {
    // SAFETY: the `Task` box made by `spawn_blocking`, handed back once.
    let mut task = unsafe { Box::from_raw(arg.cast::<Task>()) };
    let result = task.result.take().unwrap_or_else(|| Box::new(()));
    // SAFETY: the service state; the connection's state if it is still open.
    let (p, st) = unsafe { (svc::<P>(s), (!c.is_null()).then(|| conn::<P>(c))) };
    guard(cx, (), move |cx| p.on_task(cx, st, token, result));
}

/// The entry point behind [`crate::export_plugin!`]: remembers the host's
/// table and returns this plugin's (made once per load).
///
/// # Safety
///
/// `host` must be the host's table, valid for the life of the process.
pub unsafe fn entry<P: Plugin>(host: *const myriad_host) -> *const myriad_plugin {
    // SAFETY: the caller's contract.
    let Some(h) = (unsafe { host.as_ref() }) else {
        return std::ptr::null();
    };
    if h.abi_version >> 16 != MYRIAD_ABI_MAJOR {
        return std::ptr::null();
    }
    HOST.store(host.cast_mut(), Ordering::Release);
    let table = myriad_plugin {
        abi_version: MYRIAD_ABI_VERSION,
        struct_size: std::mem::size_of::<myriad_plugin>() as u32,
        name: P::NAME.as_ptr(),
        shape: match P::SHAPE {
            Shape::Stream => MYRIAD_SHAPE_STREAM,
            Shape::Message => MYRIAD_SHAPE_MESSAGE,
        },
        reserved: 0,
        init: Some(tr_init::<P>),
        shutdown: Some(tr_shutdown::<P>),
        on_upgrade: Some(tr_on_upgrade::<P>),
        on_open: Some(tr_on_open::<P>),
        on_data: Some(tr_on_data::<P>),
        message_size: if P::CUSTOM_FRAMING {
            Some(tr_message_size::<P>)
        } else {
            None
        },
        on_message: Some(tr_on_message::<P>),
        on_drain: Some(tr_on_drain::<P>),
        on_timer: Some(tr_on_timer::<P>),
        on_close: Some(tr_on_close::<P>),
        on_task: Some(tr_on_task::<P>),
    };
    // Made once per load of the library and kept for its (unbounded) life.
    Box::leak(Box::new(table))
}
