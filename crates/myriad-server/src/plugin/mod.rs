//! Native plugins in the server: a service whose `handler = "plugin"` runs
//! a shared library's callbacks (the ABI of `crates/myriad-plugin`).
//!
//! [`native`] loads libraries and crosses the C boundary (the only
//! `unsafe` here); this module is the safe host: one [`PluginService`] per
//! service (the loaded library, the plugin's service state, its counters
//! and topics), a stream/framed handler for tcp/tls stacks and a
//! [`WsHandler`] for ws/wss stacks, both driving the plugin through
//! [`HostCx`], the context a plugin's host calls reach.
//!
//! Faults: a plugin panic (reported by the SDK), a nonsense return value
//! (`consumed > len`, an invalid close code, a bad upgrade answer) or bad
//! framing closes that connection and is counted
//! (`myriad_plugin_faults_total`); the loop serves on. A crash (SIGSEGV)
//! takes its worker process down, and the supervisor starts a new one.

pub mod native;
#[cfg(feature = "wasm")]
pub mod wasm;
// Without the `wasm` feature (the fuzz targets' build: no wasmtime), the
// same surface, where a `.wasm` plugin is a load error.
#[cfg(not(feature = "wasm"))]
#[path = "wasm_off.rs"]
pub mod wasm;

use crate::config::{Framing, ServiceConfig};
use ::myriad_plugin::abi::*;
use myriad::{CloseReason, ConnId, Ctx, Handler, LoopCx};
use myriad_ws::{
    CloseCode, Message, MessageKind, PreparedMessage, Room, Upgrade, UpgradeInfo, WsCtx, WsHandler,
};
use native::{ConnState, Library, ServiceState, TaskArg, UpgradeView};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use wasm::WasmLib;

/// Timers one connection may have at once.
const MAX_TIMERS: usize = 64;
/// Topics one connection may subscribe to.
const MAX_SUBSCRIPTIONS: usize = 64;
/// Topics one service may have.
const MAX_TOPICS: usize = 100_000;
/// Longest topic name.
const MAX_TOPIC_LEN: usize = 256;
/// Counter names one service may have.
const MAX_COUNTERS: usize = 256;
/// Engine timer token that delivers finished blocking work (below the
/// WebSocket layer's internal bit 63).
const TASK_TIMER: u64 = 1 << 62;
/// Engine deadline token of a connection's plugin timers: the host keeps
/// the plugin's timers itself and only the earliest in the engine, as the
/// connection's one deadline (`Ctx::set_deadline`), which a later one
/// replaces and the loop's timer heap then drops. Engine timers cannot be
/// cancelled, so a plugin that re-arms a timer on every message would
/// otherwise grow the loop's heap by an entry per message.
const PLUGIN_TIMERS: u64 = TASK_TIMER | 1;
/// Longest plugin timer delay (2^40 ms, about 35 years): any later "never" is
/// that, so that a due time always fits the clock.
const MAX_TIMER_MS: u64 = 1 << 40;
/// A `ConnOps` answer meaning "the plugin asked for nonsense": the
/// connection is closed as a fault.
const NONSENSE: i32 = i32::MIN;

/// Fault kinds, in `myriad_plugin_faults_total{kind}`.
pub const FAULT_KINDS: [&str; 7] = [
    "plugin_panic",
    "plugin_error",
    "message_too_large",
    "bad_framing",
    "plugin_trap",
    "plugin_timeout",
    "plugin_lost",
];

/// A service's plugin: the library, the plugin's state, its counters and
/// topics. Shared by the service's loops.
pub struct PluginService {
    lib: Arc<Code>,
    /// Set once `init` succeeded.
    state: std::sync::OnceLock<ServiceState>,
    service: String,
    framing: Option<Framing>,
    max_message: usize,
    pool: Option<myriad::Pool>,
    counters: RwLock<HashMap<String, Arc<AtomicU64>>>,
    faults: [AtomicU64; FAULT_KINDS.len()],
    topics: Mutex<HashMap<Box<str>, Room>>,
    /// Broadcast deliveries dropped by topics that no longer exist.
    retired_dropped: AtomicU64,
}

impl std::fmt::Debug for PluginService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginService")
            .field("service", &self.service)
            .field("lib", &self.lib)
            .finish_non_exhaustive()
    }
}

impl Drop for PluginService {
    fn drop(&mut self) {
        // The last connection (and the engine) let go of the service.
        if let Some(st) = self.state.get() {
            self.lib.shutdown(st);
        }
    }
}

/// Loads the plugin of `s` and runs its `init`. Used by `serve` and by
/// `check` (which drops the result).
///
/// # Errors
///
/// The load error or the plugin's own reason, naming the file.
pub fn start(s: &ServiceConfig, pool: Option<myriad::Pool>) -> anyhow::Result<Arc<PluginService>> {
    let Some(spec) = &s.plugin else {
        anyhow::bail!("service {:?} has no plugin", s.name);
    };
    let lib = Arc::new(if wasm::is_wasm(&spec.path) {
        Code::Wasm(WasmLib::load(spec)?)
    } else {
        Code::Native(Library::load(&spec.path)?)
    });
    let ws = matches!(
        s.stack,
        crate::config::Stack::Ws | crate::config::Stack::Wss
    );
    let where_ = spec.path.display();
    if ws && !lib.is_message() {
        anyhow::bail!(
            "{where_}: plugin {:?} is a stream plugin; ws/wss stacks need a message plugin",
            lib.name()
        );
    }
    if !ws && lib.is_message() && spec.framing.is_none() && !lib.has_message_size() {
        anyhow::bail!(
            "{where_}: plugin {:?} takes messages: give the service a framing (\"lp32\" or \"line\") or the plugin a message_size callback",
            lib.name()
        );
    }
    if !lib.is_message() && spec.framing.is_some() {
        anyhow::bail!(
            "{where_}: plugin {:?} is a stream plugin; framing applies to message plugins",
            lib.name()
        );
    }
    let svc = Arc::new(PluginService {
        lib: Arc::clone(&lib),
        state: std::sync::OnceLock::new(),
        service: s.name.clone(),
        framing: spec.framing,
        max_message: s.max_message,
        pool,
        counters: RwLock::default(),
        faults: Default::default(),
        topics: Mutex::default(),
        retired_dropped: AtomicU64::new(0),
    });
    let state = {
        let mut hc = HostCx::service(&svc);
        lib.init(&mut hc, &s.name, &spec.config_json)
    };
    match state {
        Ok(st) => {
            let _ = svc.state.set(st);
        }
        Err(reason) => {
            anyhow::bail!(
                "{where_}: plugin {:?} init failed for service {:?}: {reason}",
                lib.name(),
                s.name
            );
        }
    }
    tracing::info!(service = %s.name, plugin = %lib.name(), file = %where_, abi_minor = lib.minor(), "plugin loaded");
    Ok(svc)
}

impl PluginService {
    /// The plugin's name.
    pub fn plugin_name(&self) -> &str {
        self.lib.name()
    }

    /// The plugin's counters, for `/metrics`.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let g = self.counters.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = g
            .iter()
            .map(|(k, c)| (k.clone(), c.load(Ordering::Relaxed)))
            .collect();
        v.sort();
        v
    }

    /// Faults by kind ([`FAULT_KINDS`]), for `/metrics`.
    /// Broadcast deliveries dropped because a loop's bound on broadcast
    /// bytes in flight was reached (`Room::dropped`), over every topic the
    /// service has had.
    pub fn broadcast_dropped(&self) -> u64 {
        let map = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        self.retired_dropped.load(Ordering::Relaxed) + map.values().map(Room::dropped).sum::<u64>()
    }

    pub fn faults(&self) -> [u64; FAULT_KINDS.len()] {
        std::array::from_fn(|i| self.faults[i].load(Ordering::Relaxed))
    }

    fn count_fault(&self, kind: &str) {
        if let Some(i) = FAULT_KINDS.iter().position(|k| *k == kind) {
            self.faults[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn log(&self, level: u32, msg: &str) {
        let (svc, plugin) = (&self.service, self.lib.name());
        match level {
            MYRIAD_LOG_ERROR => tracing::error!(service = %svc, plugin = %plugin, "{msg}"),
            MYRIAD_LOG_WARN => tracing::warn!(service = %svc, plugin = %plugin, "{msg}"),
            MYRIAD_LOG_DEBUG => tracing::debug!(service = %svc, plugin = %plugin, "{msg}"),
            MYRIAD_LOG_TRACE => tracing::trace!(service = %svc, plugin = %plugin, "{msg}"),
            _ => tracing::info!(service = %svc, plugin = %plugin, "{msg}"),
        }
    }

    fn counter_add(&self, name: &[u8], n: u64) -> i32 {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(b));
        let Some(name) = std::str::from_utf8(name).ok().filter(|_| ok) else {
            return MYRIAD_ERR_INVALID;
        };
        if let Some(c) = self
            .counters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            c.fetch_add(n, Ordering::Relaxed);
            return MYRIAD_OK;
        }
        let mut g = self.counters.write().unwrap_or_else(|p| p.into_inner());
        if g.len() >= MAX_COUNTERS && !g.contains_key(name) {
            return MYRIAD_ERR_LIMIT;
        }
        g.entry(name.to_owned())
            .or_default()
            .fetch_add(n, Ordering::Relaxed);
        MYRIAD_OK
    }

    /// The plugin's service state (null before `init` succeeded).
    fn st(&self) -> &ServiceState {
        static NONE: ServiceState = ServiceState::NULL;
        self.state.get().unwrap_or(&NONE)
    }

    fn task_done_without_conn(self: &Arc<Self>, token: u64, arg: TaskArg) {
        let mut hc = HostCx::service(self);
        self.lib.on_task(&mut hc, self.st(), None, token, arg);
    }
}

/// A plugin's code: a native library or a wasm component, behind one
/// interface (the native one's), so that both share this host.
#[derive(Debug)]
pub enum Code {
    /// A shared library (the C ABI).
    Native(Library),
    /// A WebAssembly component (`wit/myriad-plugin.wit`).
    Wasm(WasmLib),
}

impl Code {
    fn name(&self) -> &str {
        match self {
            Code::Native(l) => l.name(),
            Code::Wasm(w) => w.name(),
        }
    }

    fn minor(&self) -> u32 {
        match self {
            Code::Native(l) => l.minor(),
            Code::Wasm(_) => 0,
        }
    }

    fn is_message(&self) -> bool {
        match self {
            Code::Native(l) => l.is_message(),
            Code::Wasm(w) => w.is_message(),
        }
    }

    fn has_message_size(&self) -> bool {
        matches!(self, Code::Native(l) if l.has_message_size())
    }

    fn has_on_upgrade(&self) -> bool {
        matches!(self, Code::Native(l) if l.has_on_upgrade())
    }

    fn init(
        &self,
        hc: &mut HostCx<'_>,
        service: &str,
        config: &str,
    ) -> Result<ServiceState, String> {
        match self {
            Code::Native(l) => l.init(hc, service, config),
            Code::Wasm(w) => w.init(service, config),
        }
    }

    fn shutdown(&self, s: &ServiceState) {
        if let Code::Native(l) = self {
            l.shutdown(s);
        }
    }

    fn on_upgrade(
        &self,
        hc: &mut HostCx<'_>,
        s: &ServiceState,
        req: &UpgradeView<'_>,
        conn: &mut ConnState,
    ) -> Result<Option<usize>, i32> {
        match self {
            Code::Native(l) => l.on_upgrade(hc, s, req, conn),
            Code::Wasm(_) => Ok(None),
        }
    }

    fn on_open(&self, hc: &mut HostCx<'_>, s: &ServiceState, conn: &mut ConnState) {
        match self {
            Code::Native(l) => l.on_open(hc, s, conn),
            Code::Wasm(w) => w.on_open(hc, conn),
        }
    }

    fn on_data(
        &self,
        hc: &mut HostCx<'_>,
        s: &ServiceState,
        conn: &mut ConnState,
        data: &mut [u8],
    ) -> usize {
        match self {
            Code::Native(l) => l.on_data(hc, s, conn, data),
            Code::Wasm(w) => w.on_data(hc, conn, data),
        }
    }

    fn message_size(&self, s: &ServiceState, data: &[u8]) -> i64 {
        match self {
            Code::Native(l) => l.message_size(s, data),
            Code::Wasm(_) => -1,
        }
    }

    fn on_message(
        &self,
        hc: &mut HostCx<'_>,
        s: &ServiceState,
        conn: &mut ConnState,
        kind: u32,
        data: &[u8],
    ) {
        match self {
            Code::Native(l) => l.on_message(hc, s, conn, kind, data),
            Code::Wasm(w) => w.on_message(hc, conn, kind, data),
        }
    }

    fn on_drain(&self, hc: &mut HostCx<'_>, s: &ServiceState, conn: &mut ConnState) {
        match self {
            Code::Native(l) => l.on_drain(hc, s, conn),
            Code::Wasm(w) => w.on_drain(hc, conn),
        }
    }

    fn on_timer(&self, hc: &mut HostCx<'_>, s: &ServiceState, conn: &mut ConnState, token: u64) {
        match self {
            Code::Native(l) => l.on_timer(hc, s, conn, token),
            Code::Wasm(w) => w.on_timer(hc, conn, token),
        }
    }

    fn on_close(
        &self,
        hc: &mut HostCx<'_>,
        s: &ServiceState,
        conn: ConnState,
        reason: u32,
        code: u16,
    ) {
        match self {
            Code::Native(l) => l.on_close(hc, s, conn, reason, code),
            Code::Wasm(w) => w.on_close(hc, conn, reason, code),
        }
    }

    fn on_task(
        &self,
        hc: &mut HostCx<'_>,
        s: &ServiceState,
        conn: Option<&ConnState>,
        token: u64,
        arg: TaskArg,
    ) {
        // wasm plugins have no spawn_blocking, so no tasks come back
        if let Code::Native(l) = self {
            l.on_task(hc, s, conn, token, arg);
        }
    }
}

/// What a plugin's `myriad_ctx` points to during a callback.
pub struct HostCx<'a> {
    svc: &'a Arc<PluginService>,
    conn: Option<&'a mut dyn ConnOps>,
    fault: Option<&'static str>,
}

impl<'a> HostCx<'a> {
    fn service(svc: &'a Arc<PluginService>) -> Self {
        HostCx {
            svc,
            conn: None,
            fault: None,
        }
    }

    fn conn(svc: &'a Arc<PluginService>, conn: &'a mut dyn ConnOps) -> Self {
        HostCx {
            svc,
            conn: Some(conn),
            fault: None,
        }
    }

    /// The pointer handed to the plugin.
    fn raw(&mut self) -> *mut myriad_ctx {
        (self as *mut Self).cast()
    }

    fn svc(&self) -> &PluginService {
        self.svc
    }

    fn with_conn(&mut self, f: impl FnOnce(&mut dyn ConnOps, &Arc<PluginService>) -> i32) -> i32 {
        if self.fault.is_some() {
            return MYRIAD_ERR_CLOSED;
        }
        let svc = self.svc;
        let Some(c) = self.conn.as_deref_mut() else {
            return MYRIAD_ERR_UNSUPPORTED;
        };
        match f(c, svc) {
            NONSENSE => {
                self.fault(
                    "plugin_error",
                    "invalid argument to a host call (close code)",
                );
                MYRIAD_ERR_INVALID
            }
            rc => rc,
        }
    }

    /// The plugin failed: close the connection (if any), count and log it.
    fn fault(&mut self, kind: &'static str, msg: &str) {
        if self.fault.is_some() {
            return;
        }
        self.fault = Some(kind);
        self.svc.count_fault(kind);
        tracing::warn!(service = %self.svc.service, plugin = %self.svc.lib.name(), kind, "{msg}");
        if let Some(c) = self.conn.as_deref_mut() {
            c.fail();
        }
    }
}

/// What host calls do to a connection, per stack.
pub trait ConnOps {
    fn write(&mut self, d: &[u8]) -> i32;
    fn send(&mut self, kind: u32, d: &[u8]) -> i32;
    fn close(&mut self, code: u16, reason: &[u8]) -> i32;
    /// Close at once after a fault.
    fn fail(&mut self);
    fn shutdown_write(&mut self) -> i32;
    /// The connection's bookkeeping.
    fn extra(&mut self) -> &mut Extra;
    /// Pauses or resumes reading on the engine connection.
    fn engine_pause(&mut self, on: bool);
    /// The loop's clock.
    fn now(&mut self) -> Instant;
    /// Sets the connection's engine deadline (token [`PLUGIN_TIMERS`]).
    fn engine_deadline(&mut self, after: Duration);
    fn pause(&mut self, on: bool) -> i32 {
        self.engine_pause(on);
        MYRIAD_OK
    }
    fn set_timer(&mut self, after_ms: u64, token: u64) -> i32 {
        let now = self.now();
        match self.extra().set_timer(token, now, after_ms) {
            Some(arm) => {
                if let Some(after) = arm {
                    self.engine_deadline(after);
                }
                MYRIAD_OK
            }
            None => MYRIAD_ERR_LIMIT,
        }
    }
    fn cancel_timer(&mut self, token: u64) -> i32 {
        self.extra().cancel_timer(token);
        MYRIAD_OK
    }
    fn addr(&mut self, local: bool) -> Option<SocketAddr>;
    fn id(&mut self) -> u64;
    fn subscribe(&mut self, s: &PluginService, topic: &[u8], on: bool) -> i32;
    fn publish(&mut self, s: &PluginService, topic: &[u8], kind: u32, d: &[u8]) -> i32;
    fn spawn_blocking(&mut self, s: &Arc<PluginService>, task: TaskArg, token: u64) -> i32;
}

/// A connection's bookkeeping besides the plugin's own state; what is
/// rarely used lives behind a box so that an idle connection stays small.
///
/// One pointer: with the service's `Arc` and the plugin's state pointer, a
/// connection's host record is 24 bytes (its own allocation, since the
/// handler is boxed).
#[derive(Default)]
pub struct Extra {
    rare: Option<Box<Rare>>,
}

#[derive(Default)]
struct Rare {
    /// Closing: the plugin closed it, or it failed; nothing more is
    /// delivered.
    closing: bool,
    /// The plugin failed (its `on_close` says so).
    faulted: bool,
    /// The plugin's timers: (token, due), at most [`MAX_TIMERS`].
    timers: Vec<(u64, Instant)>,
    /// When the connection's engine deadline is due, if one is set: never
    /// later than the earliest of `timers`.
    armed: Option<Instant>,
    topics: Vec<Box<str>>,
}

impl Rare {
    /// How long to set the engine deadline for, when the earliest timer is
    /// due before the deadline that is set (or none is).
    fn rearm(&mut self, now: Instant) -> Option<Duration> {
        let first = self.timers.iter().map(|t| t.1).min()?;
        if self.armed.is_some_and(|a| a <= first) {
            return None;
        }
        self.armed = Some(first);
        // Rounded up: the engine's timers have millisecond resolution.
        Some(first.saturating_duration_since(now) + TIMER_RESOLUTION)
    }
}

/// The engine's timer resolution: a timer within it of its due time when
/// the deadline fires is due.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

impl Extra {
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    #[inline]
    fn closing(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| r.closing)
    }

    fn faulted(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| r.faulted)
    }

    fn set_closing(&mut self, faulted: bool) {
        let r = self.rare();
        r.closing = true;
        r.faulted |= faulted;
    }

    /// Sets the plugin's timer `token` (replacing one with that token) due
    /// `after_ms` from `now`; `None` past [`MAX_TIMERS`], else how long to
    /// set the engine deadline for, if it must move earlier.
    fn set_timer(&mut self, token: u64, now: Instant, after_ms: u64) -> Option<Option<Duration>> {
        let r = self.rare();
        r.timers.retain(|t| t.0 != token);
        if r.timers.len() >= MAX_TIMERS {
            return None;
        }
        r.timers.push((
            token,
            now + Duration::from_millis(after_ms.min(MAX_TIMER_MS)),
        ));
        Some(r.rearm(now))
    }

    /// A cancelled timer leaves the deadline as it is: when it fires with
    /// nothing due, it is set again for the earliest timer left.
    fn cancel_timer(&mut self, token: u64) {
        if let Some(r) = &mut self.rare {
            r.timers.retain(|t| t.0 != token);
        }
    }

    /// The engine deadline fired at `now`: the tokens of the timers due,
    /// earliest first, taken out.
    fn take_due(&mut self, now: Instant) -> Vec<u64> {
        let Some(r) = self.rare.as_mut() else {
            return Vec::new();
        };
        r.armed = None;
        let limit = now + TIMER_RESOLUTION;
        let mut due = Vec::new();
        r.timers.retain(|&t| {
            let keep = t.1 > limit;
            if !keep {
                due.push(t);
            }
            keep
        });
        due.sort_by_key(|t| t.1);
        due.into_iter().map(|t| t.0).collect()
    }

    /// After the due timers ran: how long to set the engine deadline for,
    /// if timers are left and none set it already.
    fn rearm(&mut self, now: Instant) -> Option<Duration> {
        self.rare.as_mut()?.rearm(now)
    }
}

fn topic_str(t: &[u8]) -> Option<&str> {
    std::str::from_utf8(t)
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOPIC_LEN)
}

fn valid_close_code(code: u16) -> bool {
    code == 0 || CloseCode(code).is_valid()
}

// ----- blocking work coming back -----

thread_local! {
    /// Finished blocking work waiting for its connection's next turn on
    /// this loop (bounded by the pools' queues).
    static INBOX: RefCell<Vec<(ConnId, u64, TaskArg)>> = const { RefCell::new(Vec::new()) };
}

fn spawn_task(
    lcx: &mut LoopCx<'_>,
    id: ConnId,
    svc: &Arc<PluginService>,
    task: TaskArg,
    token: u64,
) -> i32 {
    let Some(pool) = &svc.pool else {
        return MYRIAD_ERR_UNSUPPORTED;
    };
    let Some(home) = lcx.loops().get(id.loop_index()).cloned() else {
        return MYRIAD_ERR_UNSUPPORTED;
    };
    let svc = Arc::clone(svc);
    let r = pool.submit(move || {
        task.run();
        home.post(move |lcx| {
            // The connection's handler takes it from the inbox at its
            // timer; a connection gone meanwhile gets none, so the plugin
            // is handed its argument back without one.
            let found = lcx.with_conn(id, |cx| cx.set_timer(Duration::ZERO, TASK_TIMER));
            if found {
                INBOX.with(|b| b.borrow_mut().push((id, token, task)));
            } else {
                svc.task_done_without_conn(token, task);
            }
        });
    });
    match r {
        Ok(()) => MYRIAD_OK,
        Err(_) => MYRIAD_ERR_LIMIT,
    }
}

/// Finished tasks of connection `id` waiting in this loop's inbox.
fn take_tasks(id: ConnId) -> Vec<(u64, TaskArg)> {
    INBOX.with(|b| {
        let mut b = b.borrow_mut();
        if b.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i].0 == id {
                let (_, t, a) = b.swap_remove(i);
                out.push((t, a));
            } else {
                i += 1;
            }
        }
        out
    })
}

// ----- tcp and tls stacks -----

/// Host calls on a tcp/tls connection.
struct TcpConn<'a, 'c> {
    cx: &'a mut Ctx<'c>,
    extra: &'a mut Extra,
    framing: Option<Framing>,
}

impl ConnOps for TcpConn<'_, '_> {
    fn write(&mut self, d: &[u8]) -> i32 {
        if self.extra.closing() {
            return MYRIAD_ERR_CLOSED;
        }
        self.cx.write(d);
        MYRIAD_OK
    }

    fn send(&mut self, _kind: u32, d: &[u8]) -> i32 {
        if self.extra.closing() {
            return MYRIAD_ERR_CLOSED;
        }
        match self.framing {
            Some(Framing::Lp32) => {
                let Ok(n) = u32::try_from(d.len()) else {
                    return MYRIAD_ERR_INVALID;
                };
                self.cx.write_vectored(&[&n.to_be_bytes(), d]);
            }
            Some(Framing::Line) => self.cx.write_vectored(&[d, b"\n"]),
            None => self.cx.write(d),
        }
        MYRIAD_OK
    }

    fn close(&mut self, _code: u16, _reason: &[u8]) -> i32 {
        self.extra.set_closing(false);
        self.cx.close();
        MYRIAD_OK
    }

    fn fail(&mut self) {
        self.extra.set_closing(true);
        self.cx.abort();
    }

    fn shutdown_write(&mut self) -> i32 {
        self.cx.shutdown_write();
        MYRIAD_OK
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra
    }

    fn engine_pause(&mut self, on: bool) {
        if on {
            self.cx.pause_reading();
        } else {
            self.cx.resume_reading();
        }
    }

    fn now(&mut self) -> Instant {
        self.cx.now()
    }

    fn engine_deadline(&mut self, after: Duration) {
        self.cx.set_deadline(after, PLUGIN_TIMERS);
    }

    fn addr(&mut self, local: bool) -> Option<SocketAddr> {
        if local {
            self.cx.local_addr().ok()
        } else {
            self.cx.peer_addr().ok()
        }
    }

    fn id(&mut self) -> u64 {
        // never 0, which the ABI keeps for "no connection"
        self.cx.id().as_u64().wrapping_add(1)
    }

    fn subscribe(&mut self, _s: &PluginService, _topic: &[u8], _on: bool) -> i32 {
        MYRIAD_ERR_UNSUPPORTED
    }

    fn publish(&mut self, _s: &PluginService, _topic: &[u8], _kind: u32, _d: &[u8]) -> i32 {
        MYRIAD_ERR_UNSUPPORTED
    }

    fn spawn_blocking(&mut self, s: &Arc<PluginService>, task: TaskArg, token: u64) -> i32 {
        let id = self.cx.id();
        spawn_task(self.cx.loop_cx(), id, s, task, token)
    }
}

/// One connection of a plugin service on a tcp/tls stack.
pub struct TcpPlugin {
    svc: Arc<PluginService>,
    state: ConnState,
    extra: Extra,
}

impl TcpPlugin {
    /// A handler for a new connection.
    pub fn new(svc: &Arc<PluginService>) -> Self {
        TcpPlugin {
            svc: Arc::clone(svc),
            state: ConnState::NONE,
            extra: Extra::default(),
        }
    }

    /// Runs `f` with a host context for this connection; returns the fault
    /// it reported, if any.
    fn with<R>(
        &mut self,
        cx: &mut Ctx<'_>,
        f: impl FnOnce(&Code, &mut HostCx<'_>, &ServiceState, &mut ConnState) -> R,
    ) -> (R, bool) {
        let svc = &self.svc;
        let mut ops = TcpConn {
            cx,
            extra: &mut self.extra,
            framing: svc.framing,
        };
        let mut hc = HostCx::conn(svc, &mut ops);
        let r = f(&svc.lib, &mut hc, svc.st(), &mut self.state);
        let faulted = hc.fault.is_some();
        (r, faulted)
    }

    fn fault(&mut self, cx: &mut Ctx<'_>, kind: &'static str, msg: &str) {
        self.with(cx, |_, hc, _, _| hc.fault(kind, msg));
    }

    /// Whole messages out of `data` to `on_message`; returns how many bytes
    /// were consumed.
    fn messages(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        let max = self.svc.max_message;
        let mut pos = 0;
        // stops at a message boundary once the replies queued passed the
        // high-water mark; the engine keeps the rest until they drained
        while pos < data.len() && !self.extra.closing() && !cx.is_backpressured() {
            let rest = &data[pos..];
            // (start of the payload, end of the payload, end of the message)
            let frame = match self.svc.framing {
                Some(Framing::Lp32) => {
                    if rest.len() < 4 {
                        None
                    } else {
                        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                        if n > max {
                            self.fault(cx, "message_too_large", "lp32 message over max_message");
                            return data.len();
                        }
                        (rest.len() >= 4 + n).then_some((4, 4 + n, 4 + n))
                    }
                }
                Some(Framing::Line) => match rest.iter().position(|&b| b == b'\n') {
                    Some(i) if i > max => {
                        self.fault(cx, "message_too_large", "line over max_message");
                        return data.len();
                    }
                    Some(i) => {
                        let end = if i > 0 && rest[i - 1] == b'\r' {
                            i - 1
                        } else {
                            i
                        };
                        Some((0, end, i + 1))
                    }
                    None if rest.len() > max => {
                        self.fault(cx, "message_too_large", "line over max_message");
                        return data.len();
                    }
                    None => None,
                },
                None => match self.svc.lib.message_size(self.svc.st(), rest) {
                    0 if rest.len() > max => {
                        self.fault(cx, "message_too_large", "message over max_message");
                        return data.len();
                    }
                    0 => None,
                    n if n < 0 => {
                        self.fault(cx, "bad_framing", "message_size: malformed input");
                        return data.len();
                    }
                    n if n as u64 > max as u64 => {
                        self.fault(cx, "message_too_large", "message_size over max_message");
                        return data.len();
                    }
                    n => {
                        let n = n as usize;
                        (rest.len() >= n).then_some((0, n, n))
                    }
                },
            };
            let Some((a, b, len)) = frame else { break };
            let msg = &rest[a..b];
            let (_, faulted) = self.with(cx, |lib, hc, st, conn| {
                lib.on_message(hc, st, conn, MYRIAD_BINARY, msg)
            });
            pos += len;
            if faulted {
                return data.len();
            }
        }
        if self.extra.closing() {
            data.len()
        } else {
            pos
        }
    }
}

fn close_reason(r: &CloseReason) -> u32 {
    match r {
        CloseReason::Local => MYRIAD_CLOSE_LOCAL,
        CloseReason::PeerClosed => MYRIAD_CLOSE_PEER,
        CloseReason::IdleTimeout | CloseReason::HandshakeTimeout | CloseReason::ConnectTimeout => {
            MYRIAD_CLOSE_TIMEOUT
        }
        CloseReason::Shutdown => MYRIAD_CLOSE_SHUTDOWN,
        CloseReason::InputOverflow | CloseReason::Filter(_) => MYRIAD_CLOSE_PROTOCOL,
        CloseReason::HandlerPanic => MYRIAD_CLOSE_FAULT,
        _ => MYRIAD_CLOSE_ERROR,
    }
}

impl Handler for TcpPlugin {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        self.with(cx, |lib, hc, st, conn| lib.on_open(hc, st, conn));
    }

    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        if self.extra.closing() {
            return data.len();
        }
        if self.svc.lib.is_message() {
            return self.messages(cx, data);
        }
        let len = data.len();
        let (n, faulted) = self.with(cx, |lib, hc, st, conn| lib.on_data(hc, st, conn, data));
        if faulted {
            return len;
        }
        if n > len {
            self.fault(
                cx,
                "plugin_error",
                &format!("on_data consumed {n} of {len} bytes"),
            );
            return len;
        }
        n
    }

    fn on_drain(&mut self, cx: &mut Ctx<'_>) {
        if !self.extra.closing() {
            self.with(cx, |lib, hc, st, conn| lib.on_drain(hc, st, conn));
        }
    }

    fn on_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
        if token == TASK_TIMER {
            for (t, arg) in take_tasks(cx.id()) {
                self.with(cx, |lib, hc, st, conn| {
                    lib.on_task(hc, st, Some(conn), t, arg)
                });
            }
        } else if token == PLUGIN_TIMERS {
            let now = cx.now();
            for t in self.extra.take_due(now) {
                if self.extra.closing() {
                    break;
                }
                self.with(cx, |lib, hc, st, conn| lib.on_timer(hc, st, conn, t));
            }
            if let Some(after) = self.extra.rearm(now) {
                cx.set_deadline(after, PLUGIN_TIMERS);
            }
        }
    }

    fn on_close(&mut self, cx: &mut Ctx<'_>, reason: CloseReason) {
        let tasks = take_tasks(cx.id());
        let code = if self.extra.faulted() {
            MYRIAD_CLOSE_FAULT
        } else {
            close_reason(&reason)
        };
        let state = std::mem::replace(&mut self.state, ConnState::NONE);
        self.with(cx, |lib, hc, st, _| lib.on_close(hc, st, state, code, 0));
        for (t, arg) in tasks {
            self.svc.task_done_without_conn(t, arg);
        }
    }
}

// ----- ws and wss stacks -----

/// Host calls on a WebSocket connection.
struct WsConn<'a, 'b, 'c> {
    cx: &'a mut WsCtx<'b, 'c>,
    extra: &'a mut Extra,
}

impl ConnOps for WsConn<'_, '_, '_> {
    fn write(&mut self, _d: &[u8]) -> i32 {
        MYRIAD_ERR_UNSUPPORTED
    }

    fn send(&mut self, kind: u32, d: &[u8]) -> i32 {
        let r = match kind {
            MYRIAD_TEXT => match std::str::from_utf8(d) {
                Ok(t) => self.cx.send_text(t),
                Err(_) => return MYRIAD_ERR_INVALID,
            },
            MYRIAD_BINARY => self.cx.send_binary(d),
            _ => return MYRIAD_ERR_INVALID,
        };
        if r.is_ok() {
            MYRIAD_OK
        } else {
            MYRIAD_ERR_CLOSED
        }
    }

    fn close(&mut self, code: u16, reason: &[u8]) -> i32 {
        if !valid_close_code(code) {
            return NONSENSE;
        }
        let code = if code == 0 {
            CloseCode::NORMAL
        } else {
            CloseCode(code)
        };
        let reason = std::str::from_utf8(reason).unwrap_or("");
        let reason = if reason.len() > 123 { "" } else { reason };
        self.extra.set_closing(false);
        match self.cx.close(code, reason) {
            Ok(()) => MYRIAD_OK,
            Err(_) => MYRIAD_ERR_CLOSED,
        }
    }

    fn fail(&mut self) {
        self.extra.set_closing(true);
        if self
            .cx
            .close(CloseCode::INTERNAL_ERROR, "plugin fault")
            .is_err()
        {
            self.cx.engine().abort();
        }
    }

    fn shutdown_write(&mut self) -> i32 {
        MYRIAD_ERR_UNSUPPORTED
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra
    }

    fn engine_pause(&mut self, on: bool) {
        if on {
            self.cx.pause_reading();
        } else {
            self.cx.resume_reading();
        }
    }

    fn now(&mut self) -> Instant {
        self.cx.engine().now()
    }

    fn engine_deadline(&mut self, after: Duration) {
        self.cx.engine().set_deadline(after, PLUGIN_TIMERS);
    }

    fn addr(&mut self, local: bool) -> Option<SocketAddr> {
        if local {
            self.cx.engine().local_addr().ok()
        } else {
            self.cx.peer_addr().ok()
        }
    }

    fn id(&mut self) -> u64 {
        // never 0, which the ABI keeps for "no connection"
        self.cx.id().as_u64().wrapping_add(1)
    }

    fn subscribe(&mut self, s: &PluginService, topic: &[u8], on: bool) -> i32 {
        let Some(topic) = topic_str(topic) else {
            return MYRIAD_ERR_INVALID;
        };
        let subscribed = self
            .extra
            .rare
            .as_ref()
            .is_some_and(|r| r.topics.iter().any(|t| &**t == topic));
        if on == subscribed {
            return MYRIAD_OK;
        }
        // Joining and leaving under the map's lock: a room is removed when
        // its last member leaves, and no one can join it meanwhile.
        let mut map = s.topics.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            if self.extra.rare().topics.len() >= MAX_SUBSCRIPTIONS {
                return MYRIAD_ERR_LIMIT;
            }
            if map.len() >= MAX_TOPICS && !map.contains_key(topic) {
                return MYRIAD_ERR_LIMIT;
            }
            let room = map.entry(topic.into()).or_default();
            if !room.join(self.cx) {
                return MYRIAD_ERR_UNSUPPORTED;
            }
            self.extra.rare().topics.push(topic.into());
        } else {
            if let Some(room) = map.get(topic) {
                room.leave(self.cx);
                if room.is_empty() {
                    if let Some(r) = map.remove(topic) {
                        s.retired_dropped.fetch_add(r.dropped(), Ordering::Relaxed);
                    }
                }
            }
            self.extra.rare().topics.retain(|t| &**t != topic);
        }
        MYRIAD_OK
    }

    fn publish(&mut self, s: &PluginService, topic: &[u8], kind: u32, d: &[u8]) -> i32 {
        let Some(topic) = topic_str(topic) else {
            return MYRIAD_ERR_INVALID;
        };
        let kind = match kind {
            MYRIAD_TEXT if std::str::from_utf8(d).is_ok() => MessageKind::Text,
            MYRIAD_BINARY => MessageKind::Binary,
            _ => return MYRIAD_ERR_INVALID,
        };
        let room = s
            .topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .cloned();
        if let Some(room) = room {
            let m = PreparedMessage::new(kind, d);
            room.broadcast(self.cx.loop_cx(), &m);
        }
        MYRIAD_OK
    }

    fn spawn_blocking(&mut self, s: &Arc<PluginService>, task: TaskArg, token: u64) -> i32 {
        let id = self.cx.id();
        spawn_task(self.cx.loop_cx(), id, s, task, token)
    }
}

/// One connection of a plugin service on a ws/wss stack.
pub struct WsPlugin {
    svc: Arc<PluginService>,
    state: ConnState,
    extra: Extra,
}

impl WsPlugin {
    /// A handler for a new connection.
    pub fn new(svc: &Arc<PluginService>) -> Self {
        WsPlugin {
            svc: Arc::clone(svc),
            state: ConnState::NONE,
            extra: Extra::default(),
        }
    }

    fn with<R>(
        &mut self,
        cx: &mut WsCtx<'_, '_>,
        f: impl FnOnce(&Code, &mut HostCx<'_>, &ServiceState, &mut ConnState) -> R,
    ) -> R {
        let svc = &self.svc;
        let mut ops = WsConn {
            cx,
            extra: &mut self.extra,
        };
        let mut hc = HostCx::conn(svc, &mut ops);
        f(&svc.lib, &mut hc, svc.st(), &mut self.state)
    }

    /// Leaves every topic (at close).
    fn leave_all(&mut self, cx: &mut WsCtx<'_, '_>) {
        let Some(topics) = self
            .extra
            .rare
            .as_mut()
            .map(|r| std::mem::take(&mut r.topics))
        else {
            return;
        };
        let mut map = self.svc.topics.lock().unwrap_or_else(|p| p.into_inner());
        for t in topics {
            if let Some(room) = map.get(&t) {
                room.leave(cx);
                if room.is_empty() {
                    if let Some(r) = map.remove(&t) {
                        self.svc
                            .retired_dropped
                            .fetch_add(r.dropped(), Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

impl WsHandler for WsPlugin {
    fn on_upgrade(&mut self, req: &UpgradeInfo<'_>) -> Upgrade {
        if !self.svc.lib.has_on_upgrade() {
            return Upgrade::Accept;
        }
        let view = UpgradeView {
            path: req.path(),
            query: req.query(),
            headers: req.headers().collect(),
            protocols: req.protocols(),
            peer: req.peer().map(|p| p.to_string()).unwrap_or_default(),
        };
        let svc = &self.svc;
        let mut hc = HostCx::service(svc);
        let r = svc
            .lib
            .on_upgrade(&mut hc, svc.st(), &view, &mut self.state);
        if hc.fault.is_some() {
            return Upgrade::Refuse(500);
        }
        match r {
            Ok(None) => Upgrade::AcceptProtocol(None),
            Ok(Some(i)) if i < req.protocols().len() => Upgrade::AcceptProtocol(Some(i)),
            Ok(Some(_)) => {
                svc.count_fault("plugin_error");
                Upgrade::Refuse(500)
            }
            Err(status) => match u16::try_from(status) {
                Ok(s) if (400..600).contains(&s) => Upgrade::Refuse(s),
                _ => {
                    svc.count_fault("plugin_error");
                    Upgrade::Refuse(500)
                }
            },
        }
    }

    fn on_open(&mut self, cx: &mut WsCtx<'_, '_>, _hs: &myriad_ws::Handshake<'_>) {
        self.with(cx, |lib, hc, st, conn| lib.on_open(hc, st, conn));
    }

    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
        if self.extra.closing() {
            return;
        }
        let (kind, d) = match msg {
            Message::Text(t) => (MYRIAD_TEXT, t.as_bytes()),
            Message::Binary(b) => (MYRIAD_BINARY, b),
        };
        self.with(cx, |lib, hc, st, conn| {
            lib.on_message(hc, st, conn, kind, d)
        });
    }

    fn on_drain(&mut self, cx: &mut WsCtx<'_, '_>) {
        if !self.extra.closing() {
            self.with(cx, |lib, hc, st, conn| lib.on_drain(hc, st, conn));
        }
    }

    fn on_timer(&mut self, cx: &mut WsCtx<'_, '_>, token: u64) {
        if token == TASK_TIMER {
            for (t, arg) in take_tasks(cx.id()) {
                self.with(cx, |lib, hc, st, conn| {
                    lib.on_task(hc, st, Some(conn), t, arg)
                });
            }
        } else if token == PLUGIN_TIMERS {
            let now = cx.engine().now();
            for t in self.extra.take_due(now) {
                if self.extra.closing() {
                    break;
                }
                self.with(cx, |lib, hc, st, conn| lib.on_timer(hc, st, conn, t));
            }
            if let Some(after) = self.extra.rearm(now) {
                cx.engine().set_deadline(after, PLUGIN_TIMERS);
            }
        }
    }

    fn on_close(&mut self, cx: &mut WsCtx<'_, '_>, code: CloseCode, reason: &str) {
        self.leave_all(cx);
        let tasks = take_tasks(cx.id());
        let why = if self.extra.faulted() {
            MYRIAD_CLOSE_FAULT
        } else if self.extra.closing() {
            MYRIAD_CLOSE_LOCAL
        } else {
            match code.0 {
                1000 | 1001 | 1005 => MYRIAD_CLOSE_PEER,
                1002 | 1003 | 1007 | 1008 | 1009 => MYRIAD_CLOSE_PROTOCOL,
                _ if reason.contains("timeout") || reason.contains("timed out") => {
                    MYRIAD_CLOSE_TIMEOUT
                }
                _ if reason.contains("shut down") => MYRIAD_CLOSE_SHUTDOWN,
                _ if reason.contains("panicked") => MYRIAD_CLOSE_FAULT,
                _ => MYRIAD_CLOSE_ERROR,
            }
        };
        let state = std::mem::replace(&mut self.state, ConnState::NONE);
        self.with(cx, |lib, hc, st, _| {
            lib.on_close(hc, st, state, why, code.0)
        });
        for (t, arg) in tasks {
            self.svc.task_done_without_conn(t, arg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a connection of a plugin service costs the host besides the
    /// engine's slot: one allocation of this size.
    #[test]
    fn host_record_per_connection_is_small() {
        assert_eq!(std::mem::size_of::<TcpPlugin>(), 24);
        assert_eq!(std::mem::size_of::<WsPlugin>(), 24);
    }
}
