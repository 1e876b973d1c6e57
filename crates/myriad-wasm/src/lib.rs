//! WebAssembly plugins for the Myriad server: the wasmtime host of the
//! component world `wit/myriad-plugin.wit`.
//!
//! - **One instance per (plugin, event loop).** [`WasmPlugin::call`] runs
//!   on a loop thread and uses that thread's instance of the plugin, made
//!   on first use from an [`InstancePre`](wasmtime::component::InstancePre)
//!   (linking done once) with copy-on-write memory images (wasmtime's
//!   default). The guest keeps each connection's state itself, keyed by
//!   the connection id the host passes.
//! - **Host calls are queued.** A guest's `write`, `send`, `close`,
//!   timers, rooms, logs and counters are recorded as [`HostCall`]s and
//!   returned with the call's [`Outcome`]; the server applies them through
//!   the same host interface as native plugins once the guest returned.
//!   So no host state is borrowed across the guest's code, and a guest can
//!   never re-enter itself. Queues are bounded ([`MAX_CALLS`],
//!   [`MAX_QUEUED_BYTES`]).
//! - **Sandbox.** By default the linker offers the `host` interface and
//!   nothing else: no WASI, so no filesystem, network, clock or
//!   environment, and a component that imports WASI fails to load
//!   ([`WasmError::Denied`]). [`Grants`] open it up: a read-only directory,
//!   the clocks, named environment variables; then (and only then) WASI
//!   preview 2 is linked, with a context holding just what was granted
//!   (never sockets, never stdin; stdout/stderr go nowhere). Each
//!   instance's linear memory is capped ([`Limits::memory`]); each call has
//!   a deadline ([`Limits::deadline`]) of CPU time, enforced by epoch
//!   interruption (one process-wide ticker thread, [`TICK`]): when the
//!   deadline has passed on the wall clock, an epoch callback compares the
//!   CPU time the loop thread spent in the call with the deadline and lets
//!   a call that was descheduled (a busy machine, a pause in a host call)
//!   go on, up to [`WALL_CEILING`] times the deadline of wall time.
//! - **Faults.** A trap or an interrupted call poisons the loop's instance:
//!   it is dropped and the generation of the loop's slot moves on. Every
//!   connection opened on the old generation is then told
//!   [`CallError::Lost`] at its next event (its state died with the
//!   instance), unless the plugin's `info.reopen` says its connections may
//!   start afresh: then the connection is opened again on a fresh instance
//!   (`on-open`, then its event). New connections get a fresh instance.
//! - **Precompiled artifacts.** [`precompile`] writes a `.cwasm` that
//!   [`WasmPlugin::load`] uses instead of compiling when it was made from
//!   the same `.wasm` bytes by this wasmtime version for this CPU.

#![warn(missing_docs)]

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker, WasmList};
use wasmtime::StoreContextMut;
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::{
    FsPerms, HostMonotonicClock, HostWallClock, ResourceTable, WasiCtx, WasiCtxBuilder,
    WasiCtxView, WasiView,
};

pub use wasmtime;

/// The bindings wasmtime generates from the WIT world.
#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/myriad-plugin.wit",
        world: "myriad-plugin",
    });
}

use bindings::myriad::plugin::host::Host;
pub use bindings::myriad::plugin::host::{LogLevel, MsgKind};
pub use bindings::{CloseReason, Shape};
use bindings::{MyriadPlugin, MyriadPluginPre};

/// The granularity of deadlines: the epoch ticker's period.
pub const TICK: Duration = Duration::from_millis(1);
/// A call may run this many times its deadline of wall-clock time (while
/// it used less CPU time than the deadline), and no longer: a guest stuck
/// in a host call (a granted sleep) is cut when that call returns.
pub const WALL_CEILING: u32 = 10;
/// A call's CPU time is counted from a reading of the thread's CPU clock
/// taken at most this many calls before it (or at most one tick earlier):
/// the reading is a system call (about 230 ns here, a fifth of a call), so
/// it is not made at every call. A call may be charged that much of the
/// loop's earlier work, which errs on the side of the deadline.
const CPU_READING_CALLS: u32 = 64;
/// Host calls one guest call may queue.
pub const MAX_CALLS: usize = 4096;
/// Bytes of host calls one guest call may queue.
pub const MAX_QUEUED_BYTES: usize = 16 << 20;
/// The deadline of `describe` and `init` (a JS engine's start-up is slow).
pub const INIT_DEADLINE: Duration = Duration::from_secs(5);
/// What precompiled artifacts start with (then the source's length and
/// hash, then wasmtime's serialization).
const CWASM_MAGIC: &[u8; 8] = b"MYRWASM1";

/// The C ABI's status codes, as the WIT world's calls return them.
pub mod status {
    /// Done.
    pub const OK: i32 = 0;
    /// A bad argument.
    pub const INVALID: i32 = -2;
    /// The call does not apply here (another connection, or none).
    pub const UNSUPPORTED: i32 = -3;
    /// A bound was reached.
    pub const LIMIT: i32 = -4;
}

/// Errors of loading a plugin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WasmError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The engine could not be made.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// Not a component of the `myriad-plugin` world, or it failed to
    /// compile or link.
    #[error("{path}: {reason}")]
    Component {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The component imports WASI but its service grants nothing outside
    /// the sandbox (deny by default).
    #[error(
        "{path}: imports {import} (WASI), but the service grants no access outside the sandbox \
         (deny by default): grant a read-only directory (wasm_read_dir), the clock (wasm_clock) \
         or environment variables (wasm_env), or build the plugin without WASI calls"
    )]
    Denied {
        /// The file.
        path: PathBuf,
        /// The first WASI import.
        import: String,
    },
    /// A granted directory could not be opened.
    #[error("{path}: granted directory {dir}: {reason}")]
    Grant {
        /// The plugin.
        path: PathBuf,
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// The guest's `init` refused, trapped or timed out.
    #[error("{path}: init failed: {reason}")]
    Init {
        /// The file.
        path: PathBuf,
        /// The guest's reason, or the trap.
        reason: String,
    },
}

/// The sandbox's limits of one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most linear memory one instance may have, in bytes (all its
    /// memories together).
    pub memory: usize,
    /// How much CPU time one call into the guest may use (its loop
    /// thread's), in at most [`WALL_CEILING`] times as much wall-clock
    /// time.
    pub deadline: Duration,
}

impl Default for Limits {
    /// 256 MiB and 10 ms.
    ///
    /// The memory cap holds a loop's share of a million connections (all
    /// of them, with `io_threads = 1`) for the example guests, measured by
    /// `bench-wasm-instances --connections 1000000` (BENCHMARKS.md, issue
    /// 16): the C echo's instance then has 64 MiB of linear memory (128 KiB
    /// at start, 67 B per connection, its table's doublings included), the
    /// JavaScript echo's 150 MiB (its engine's 9 MiB at start, then 148 B
    /// per connection): 256 MiB leaves the JavaScript guest 1.7 times what
    /// it used. A cap is a bound, not a reservation (an instance holds only
    /// the memory it grew to), so it is sized for the largest loop, not the
    /// typical one; a guest keeping more per connection needs
    /// `wasm_memory` raised.
    fn default() -> Self {
        Limits {
            memory: 256 << 20,
            deadline: Duration::from_millis(10),
        }
    }
}

/// What a plugin may reach outside its sandbox: nothing by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// A host directory the guest may read (never write), and where the
    /// guest sees it.
    pub read_dir: Option<ReadDir>,
    /// The real wall and monotonic clocks. Without it (but with another
    /// grant) the guest's clocks are stopped at 0.
    pub clock: bool,
    /// Environment variables the guest sees, as (name, value).
    pub env: Vec<(String, String)>,
}

impl Grants {
    /// Whether anything is granted (and so WASI linked).
    pub fn any(&self) -> bool {
        self.read_dir.is_some() || self.clock || !self.env.is_empty()
    }
}

/// A read-only directory granted to a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadDir {
    /// The directory on the host.
    pub host: PathBuf,
    /// Its path in the guest (e.g. `/data`).
    pub guest: String,
}

/// The clocks of a plugin not granted the clock: always 0.
struct StoppedClock;

impl HostWallClock for StoppedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for StoppedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A granted plugin's WASI state (one per instance).
struct WasiState {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiState {
    /// The context of `grants`: what they grant and nothing else.
    fn new(grants: &Grants) -> Result<WasiState, String> {
        let mut b = WasiCtxBuilder::new();
        // A file read blocks the loop thread for the read, as the guest's
        // call does anyway: no round trip through a tokio runtime.
        b.allow_blocking_current_thread(true);
        // no sockets and no name lookups (the default check already
        // refuses every address; said again so that it stays so)
        b.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if !grants.clock {
            b.wall_clock(StoppedClock).monotonic_clock(StoppedClock);
        }
        b.envs(&grants.env);
        if let Some(d) = &grants.read_dir {
            b.preopened_dir(&d.host, &d.guest, FsPerms::ReadOnly)
                .map_err(|e| format!("{}: {e:#}", d.host.display()))?;
        }
        Ok(WasiState {
            ctx: b.build(),
            table: ResourceTable::new(),
        })
    }
}

/// A host call a guest made during one call, to be applied by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostCall {
    /// Raw bytes.
    Write(Vec<u8>),
    /// One message.
    Send(MsgKind, Vec<u8>),
    /// Close with a code and a reason.
    Close(u16, String),
    /// Arm a timer: (after ms, token).
    SetTimer(u64, u64),
    /// Cancel a timer.
    CancelTimer(u64),
    /// Join (`true`) or leave a room.
    Subscribe(String, bool),
    /// Broadcast to a room.
    Publish(String, MsgKind, Vec<u8>),
    /// A log line.
    Log(LogLevel, String),
    /// Add to a counter.
    CounterAdd(String, u64),
}

/// Why a call did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The guest trapped (the instance is poisoned).
    #[error("trap: {0}")]
    Trap(String),
    /// The guest ran past the deadline (the instance is poisoned).
    #[error("interrupted at the deadline")]
    Timeout,
    /// The connection's state lived in an instance poisoned since.
    #[error("the connection's instance was poisoned")]
    Lost,
    /// A fresh instance could not be made.
    #[error("instantiation failed: {0}")]
    Instantiate(String),
}

/// One event for the guest.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A connection opened.
    Open,
    /// Bytes arrived (stream plugins).
    Data(&'a [u8]),
    /// A message arrived (message plugins).
    Message(MsgKind, &'a [u8]),
    /// The send queue drained.
    Drain,
    /// A timer fired.
    Timer(u64),
    /// The connection closed.
    Close(CloseReason, u16),
}

/// What a call did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Bytes consumed (`Event::Data`).
    pub consumed: u32,
    /// The host calls, in order.
    pub calls: Vec<HostCall>,
    /// The generation of the instance that ran the call: the connection's
    /// from now on (it changes when a plugin with `info.reopen` reopened
    /// the connection on a fresh instance).
    pub generation: u64,
}

/// The store's limiter: wasmtime's limits on counts, and the memory cap
/// on the total of the instance's linear memories (a component may have
/// several: `StoreLimits` alone would cap each one), whose size it tracks.
struct Limiter {
    counts: StoreLimits,
    cap: usize,
    /// The instance's linear memory, all memories together, in bytes.
    memory: usize,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // also called with current = 0 when a memory is made
        let total = self.memory.saturating_add(desired.saturating_sub(current));
        if total > self.cap {
            return Ok(false);
        }
        self.memory = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.counts.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.counts.instances()
    }

    fn tables(&self) -> usize {
        self.counts.tables()
    }

    fn memories(&self) -> usize {
        self.counts.memories()
    }
}

/// The store's data: limits and the current call's queue.
pub struct HostState {
    limits: Limiter,
    /// Only for a plugin granted something (WASI is linked only then).
    wasi: Option<Box<WasiState>>,
    /// The current call's deadline.
    budget: Budget,
    conn: u64,
    calls: Vec<HostCall>,
    queued: usize,
    /// Whether the guest's on-drain is called (`drain-events`).
    drain: bool,
}

impl HostState {
    /// Whether a call on `conn` queuing `bytes` would be taken: only on
    /// the connection of the current call, and within the queue's bounds.
    fn admits(&self, conn: u64, bytes: usize) -> i32 {
        if conn == 0 || conn != self.conn {
            status::UNSUPPORTED
        } else {
            self.room(bytes)
        }
    }

    /// Whether the queue has room for one more call of `bytes`.
    fn room(&self, bytes: usize) -> i32 {
        if self.calls.len() >= MAX_CALLS || self.queued.saturating_add(bytes) > MAX_QUEUED_BYTES {
            status::LIMIT
        } else {
            status::OK
        }
    }

    /// Queues `c` (admitted already).
    fn queue(&mut self, bytes: usize, c: HostCall) -> i32 {
        self.queued += bytes;
        self.calls.push(c);
        status::OK
    }

    fn push(&mut self, conn: u64, bytes: usize, c: HostCall) -> i32 {
        match self.admits(conn, bytes) {
            status::OK => self.queue(bytes, c),
            refused => refused,
        }
    }

    fn push_any(&mut self, bytes: usize, c: HostCall) -> i32 {
        match self.room(bytes) {
            status::OK => self.queue(bytes, c),
            refused => refused,
        }
    }
}

/// `write` and `send` here are shadowed by [`add_byte_calls`] in every
/// linker this crate makes (kept: the generated trait requires them).
impl Host for HostState {
    fn write(&mut self, conn: u64, data: Vec<u8>) -> i32 {
        self.push(conn, data.len(), HostCall::Write(data))
    }

    fn send(&mut self, conn: u64, kind: MsgKind, data: Vec<u8>) -> i32 {
        self.push(conn, data.len(), HostCall::Send(kind, data))
    }

    fn close(&mut self, conn: u64, code: u16, reason: String) -> i32 {
        self.push(conn, reason.len(), HostCall::Close(code, reason))
    }

    fn set_timer(&mut self, conn: u64, after_ms: u64, token: u64) -> i32 {
        self.push(conn, 0, HostCall::SetTimer(after_ms, token))
    }

    fn cancel_timer(&mut self, conn: u64, token: u64) -> i32 {
        self.push(conn, 0, HostCall::CancelTimer(token))
    }

    fn subscribe(&mut self, conn: u64, topic: String) -> i32 {
        self.push(conn, topic.len(), HostCall::Subscribe(topic, true))
    }

    fn unsubscribe(&mut self, conn: u64, topic: String) -> i32 {
        self.push(conn, topic.len(), HostCall::Subscribe(topic, false))
    }

    fn publish(&mut self, conn: u64, topic: String, kind: MsgKind, data: Vec<u8>) -> i32 {
        let n = topic.len() + data.len();
        self.push(conn, n, HostCall::Publish(topic, kind, data))
    }

    fn log(&mut self, level: LogLevel, msg: String) {
        let _ = self.push_any(msg.len(), HostCall::Log(level, msg));
    }

    fn counter_add(&mut self, name: String, n: u64) -> i32 {
        self.push_any(name.len(), HostCall::CounterAdd(name, n))
    }

    fn drain_events(&mut self, on: bool) {
        self.drain = on;
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // WASI is linked only when granted, and then every store has its
        // state; the fallback (a context granting nothing) is never used.
        let w = self.wasi.get_or_insert_with(|| {
            Box::new(WasiState {
                ctx: WasiCtxBuilder::new()
                    .allow_tcp(false)
                    .allow_udp(false)
                    .wall_clock(StoppedClock)
                    .monotonic_clock(StoppedClock)
                    .build(),
                table: ResourceTable::new(),
            })
        });
        WasiCtxView {
            ctx: &mut w.ctx,
            table: &mut w.table,
        }
    }
}

/// The engine's configuration: the same for the server and for
/// [`precompile`], or artifacts would not match.
fn config() -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    // copy-on-write memory images: a new instance maps its initial memory
    // instead of copying it
    c.memory_init_cow(true);
    c
}

/// The process's engine, with its epoch ticker thread.
///
/// # Errors
///
/// [`WasmError::Engine`] if wasmtime refuses the configuration here.
pub fn engine() -> Result<&'static Engine, WasmError> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    let r = ENGINE.get_or_init(|| {
        let e = Engine::new(&config()).map_err(|e| format!("{e:#}"))?;
        let weak = e.weak();
        std::thread::Builder::new()
            .name("myriad-wasm-epoch".into())
            .spawn(move || {
                // ends when the engine is gone (never, for the static one)
                while let Some(e) = weak.upgrade() {
                    TICKS.fetch_add(1, Ordering::Relaxed);
                    e.increment_epoch();
                    drop(e);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| format!("epoch thread: {e}"))?;
        Ok(e)
    });
    r.as_ref().map_err(|e| WasmError::Engine(e.clone()))
}

/// FNV-1a over the source: ties an artifact to the bytes it came from.
fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The artifact's path for `wasm`: the same name with `.cwasm`.
pub fn artifact_path(wasm: &Path) -> PathBuf {
    wasm.with_extension("cwasm")
}

/// Compiles the component `wasm` for this host and returns the artifact's
/// bytes (write them to [`artifact_path`]).
///
/// # Errors
///
/// [`WasmError`] if the file cannot be read or compiled.
pub fn precompile(wasm: &Path) -> Result<Vec<u8>, WasmError> {
    let src = std::fs::read(wasm).map_err(|source| WasmError::Read {
        path: wasm.into(),
        source,
    })?;
    let code = engine()?
        .precompile_component(&src)
        .map_err(|e| WasmError::Component {
            path: wasm.into(),
            reason: format!("{e:#}"),
        })?;
    let mut out = Vec::with_capacity(24 + code.len());
    out.extend_from_slice(CWASM_MAGIC);
    out.extend_from_slice(&(src.len() as u64).to_le_bytes());
    out.extend_from_slice(&fnv1a(&src).to_le_bytes());
    out.extend_from_slice(&code);
    Ok(out)
}

/// How [`WasmPlugin::load`] got its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// From the precompiled artifact.
    Precompiled,
    /// Compiled now (no artifact, or one of another source, wasmtime
    /// version or CPU).
    Compiled,
}

/// The artifact's code if it was made from `src` (and deserializes here).
fn from_artifact(engine: &Engine, wasm: &Path, src: &[u8]) -> Option<Component> {
    let art = std::fs::read(artifact_path(wasm)).ok()?;
    if art.len() < 24 || &art[..8] != CWASM_MAGIC {
        return None;
    }
    let len = u64::from_le_bytes(art[8..16].try_into().ok()?);
    let hash = u64::from_le_bytes(art[16..24].try_into().ok()?);
    if len != src.len() as u64 || hash != fnv1a(src) {
        return None;
    }
    // SAFETY: wasmtime checks that the bytes are an artifact of this
    // wasmtime version and configuration for this CPU, and refuses one
    // that is not; beyond that it trusts them, as we trust the plugin
    // directory (the same trust as loading a native plugin).
    match unsafe { Component::deserialize(engine, &art[24..]) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::info!(file = %wasm.display(), "precompiled artifact not usable here ({e:#}); compiling");
            None
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

struct Inner {
    id: u64,
    path: PathBuf,
    pre: MyriadPluginPre<HostState>,
    limits: Limits,
    grants: Grants,
    name: String,
    shape: Shape,
    /// The plugin's `info.reopen`.
    reopen: bool,
    /// The service name and config JSON `init` gets.
    init: OnceLock<(String, String)>,
}

/// An instance of a plugin made apart from the loops' (by
/// [`WasmPlugin::new_instance`]): for measuring what an instance costs.
pub struct DetachedInstance(Box<Instance>);

impl DetachedInstance {
    /// Its linear memory, all memories together, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.0.store.data().limits.memory
    }
}

impl std::fmt::Debug for DetachedInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetachedInstance")
            .field("memory_bytes", &self.memory_bytes())
            .finish_non_exhaustive()
    }
}

/// A loop's instance of a plugin.
struct Instance {
    store: Store<HostState>,
    bindings: MyriadPlugin,
}

/// A loop's slot of one plugin: its instance and generation.
struct Slot {
    plugin: Weak<Inner>,
    id: u64,
    /// Boxed: the instance moves out of the slot and back at each call
    /// (a pointer rather than the bindings' hundreds of bytes).
    inst: Option<Box<Instance>>,
    generation: u64,
}

thread_local! {
    /// This loop's instances, one per plugin.
    static SLOTS: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// A loaded WebAssembly plugin: compiled and linked once, instantiated
/// once per event loop.
#[derive(Clone)]
pub struct WasmPlugin {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WasmPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmPlugin")
            .field("path", &self.inner.path)
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl WasmPlugin {
    /// Loads the component `path` (its precompiled artifact if it matches),
    /// links it and asks it for its name and shape.
    ///
    /// # Errors
    ///
    /// [`WasmError`] if it cannot be read, compiled, linked or described.
    pub fn load(path: &Path, limits: Limits) -> Result<(WasmPlugin, Origin), WasmError> {
        Self::load_granted(path, limits, Grants::default())
    }

    /// [`WasmPlugin::load`] with `grants`: WASI is linked when anything is
    /// granted, and each instance's WASI context holds only what is.
    ///
    /// # Errors
    ///
    /// [`WasmError`]; [`WasmError::Denied`] for a component that imports
    /// WASI when nothing is granted, [`WasmError::Grant`] if the granted
    /// directory cannot be opened.
    pub fn load_granted(
        path: &Path,
        limits: Limits,
        grants: Grants,
    ) -> Result<(WasmPlugin, Origin), WasmError> {
        let engine = engine()?;
        let src = std::fs::read(path).map_err(|source| WasmError::Read {
            path: path.into(),
            source,
        })?;
        let bad = |e: wasmtime::Error| WasmError::Component {
            path: path.into(),
            reason: format!("{e:#}"),
        };
        let (component, origin) = match from_artifact(engine, path, &src) {
            Some(c) => (c, Origin::Precompiled),
            None => (Component::new(engine, &src).map_err(bad)?, Origin::Compiled),
        };
        let mut linker = Linker::<HostState>::new(engine);
        MyriadPlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(bad)?;
        add_byte_calls(&mut linker).map_err(bad)?;
        if grants.any() {
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(bad)?;
        } else if let Some((import, _)) = component
            .component_type()
            .imports(engine)
            .find(|(name, _)| name.starts_with("wasi:"))
        {
            return Err(WasmError::Denied {
                path: path.into(),
                import: import.to_string(),
            });
        }
        let pre =
            MyriadPluginPre::new(linker.instantiate_pre(&component).map_err(bad)?).map_err(bad)?;
        let mut store = new_store(engine, limits, &grants).map_err(|reason| WasmError::Grant {
            path: path.into(),
            dir: grants
                .read_dir
                .as_ref()
                .map(|d| d.host.clone())
                .unwrap_or_default(),
            reason,
        })?;
        arm(&mut store, INIT_DEADLINE);
        let b = pre.instantiate(&mut store).map_err(bad)?;
        let info = b.call_describe(&mut store).map_err(bad)?;
        let inner = Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            path: path.into(),
            pre,
            limits,
            grants,
            name: info.name,
            shape: info.shape,
            reopen: info.reopen,
            init: OnceLock::new(),
        };
        Ok((
            WasmPlugin {
                inner: Arc::new(inner),
            },
            origin,
        ))
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The plugin's shape.
    pub fn shape(&self) -> Shape {
        self.inner.shape
    }

    /// The sandbox's limits.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// What the plugin is granted outside its sandbox.
    pub fn grants(&self) -> &Grants {
        &self.inner.grants
    }

    /// Sets what every instance's `init` gets and makes this thread's
    /// instance (so that a refusing `init` refuses the service at start).
    ///
    /// # Errors
    ///
    /// [`WasmError::Init`] with the guest's reason.
    pub fn init(&self, service: &str, config: &str) -> Result<(), WasmError> {
        let _ = self.inner.init.set((service.into(), config.into()));
        // a trial instance, dropped: the loops make their own
        instantiate(&self.inner).map_err(|e| WasmError::Init {
            path: self.inner.path.clone(),
            reason: e.to_string(),
        })?;
        Ok(())
    }

    /// Makes an instance as a loop does (from the pre-instantiated
    /// component, then the guest's `init`), apart from the loops: what
    /// starting one costs, measured by the benchmarks.
    ///
    /// # Errors
    ///
    /// [`CallError::Instantiate`].
    pub fn new_instance(&self) -> Result<DetachedInstance, CallError> {
        instantiate(&self.inner).map(DetachedInstance)
    }

    /// The linear memory (all memories together, in bytes) of this
    /// thread's instance of the plugin, if it has one now.
    pub fn memory_bytes(&self) -> Option<usize> {
        SLOTS.with(|s| {
            s.borrow()
                .iter()
                .find(|x| x.id == self.inner.id)
                .and_then(|x| x.inst.as_ref())
                .map(|i| i.store.data().limits.memory)
        })
    }

    /// Runs `ev` for connection `conn` (never 0) on this thread's instance.
    /// `generation` is the connection's (from its [`Event::Open`]'s
    /// outcome); `None` for `Open`.
    ///
    /// # Errors
    ///
    /// [`CallError`]: the host calls made before a trap are dropped.
    pub fn call(
        &self,
        conn: u64,
        generation: Option<u64>,
        ev: Event<'_>,
    ) -> Result<Outcome, CallError> {
        let inner = &self.inner;
        // The instance is taken out of its slot for the call, so that
        // nothing borrows the slots while the guest runs.
        let found = SLOTS.with(|s| {
            let mut s = s.borrow_mut();
            let slot = match s.iter().position(|x| x.id == inner.id) {
                Some(i) => &mut s[i],
                None => {
                    // a new plugin on this loop: forget slots of dropped ones
                    s.retain(|x| x.plugin.strong_count() > 0);
                    s.push(Slot {
                        plugin: Arc::downgrade(inner),
                        id: inner.id,
                        inst: None,
                        generation: 0,
                    });
                    let n = s.len();
                    &mut s[n - 1]
                }
            };
            // the connection's state lived in an instance poisoned since
            let stale = generation.is_some_and(|g| g != slot.generation || slot.inst.is_none());
            if stale && !inner.reopen {
                return Err(CallError::Lost);
            }
            if stale && matches!(ev, Event::Close(..)) {
                // nothing of it in the fresh instance to free
                return Ok(None);
            }
            if !stale
                && matches!(ev, Event::Drain)
                && slot.inst.as_ref().is_some_and(|i| !i.store.data().drain)
            {
                // the guest said it has nothing to do on drain
                // (`drain-events`): no call into it, which for an echo is
                // one of its two calls per message
                return Ok(None);
            }
            Ok(Some((slot.inst.take(), slot.generation, stale)))
        })?;
        let Some((inst, gen, stale)) = found else {
            return Ok(Outcome {
                generation: generation.unwrap_or_default(),
                ..Outcome::default()
            });
        };
        let mut inst = match inst {
            Some(i) => i,
            None => instantiate(inner)?,
        };
        let deadline = inner.limits.deadline;
        let r = if stale {
            // reopen: on-open on the fresh instance, then the event
            run(&mut inst, deadline, conn, Event::Open).and_then(|(_, mut calls)| {
                let (n, more) = run(&mut inst, deadline, conn, ev)?;
                calls.extend(more);
                Ok((n, calls))
            })
        } else {
            run(&mut inst, deadline, conn, ev)
        };
        SLOTS.with(|s| {
            let mut s = s.borrow_mut();
            if let Some(slot) = s.iter_mut().find(|x| x.id == inner.id) {
                if r.is_ok() {
                    slot.inst = Some(inst);
                } else {
                    // poisoned: its connections are lost with it
                    slot.generation += 1;
                }
            }
        });
        r.map(|(consumed, calls)| Outcome {
            consumed,
            calls,
            generation: gen,
        })
    }
}

/// `d` in ticks, rounded down, plus one (the tick under way may be
/// almost over). In u64 (a u128 division showed in a call's profile).
fn ticks(d: Duration) -> u64 {
    const TICK_US: u64 = TICK.as_micros() as u64;
    let us = d
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()));
    (us / TICK_US).max(1) + 1
}

/// The epoch ticker's count (the engine's epoch is not readable): how much
/// wall-clock time a call has taken, in ticks.
static TICKS: AtomicU64 = AtomicU64::new(0);

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

thread_local! {
    /// The last reading of this thread's CPU clock: (tick, calls since,
    /// CPU time).
    static CPU_READING: std::cell::Cell<(u64, u32, Duration)> =
        const { std::cell::Cell::new((u64::MAX, 0, Duration::ZERO)) };
}

/// One call's deadline: `cpu` of CPU time, within `ceiling` ticks of wall
/// time, counted from `start_tick` and `start_cpu`.
#[derive(Debug, Clone, Copy, Default)]
struct Budget {
    cpu: Duration,
    ceiling: u64,
    start_tick: u64,
    start_cpu: Duration,
}

impl Budget {
    /// A call starting now with `deadline`: the CPU clock as read at most
    /// one tick or [`CPU_READING_CALLS`] calls ago (never later than now,
    /// so the call's CPU time is never undercounted).
    fn starting(deadline: Duration) -> Budget {
        let tick = TICKS.load(Ordering::Relaxed);
        let start_cpu = CPU_READING.with(|r| {
            let (t, n, cpu) = r.get();
            if t == tick && n < CPU_READING_CALLS {
                r.set((t, n + 1, cpu));
                cpu
            } else {
                let cpu = thread_cpu();
                r.set((tick, 0, cpu));
                cpu
            }
        });
        Budget {
            cpu: deadline,
            ceiling: ticks(deadline).saturating_mul(u64::from(WALL_CEILING)),
            start_tick: tick,
            start_cpu,
        }
    }

    /// The wall-clock deadline has passed (the epoch callback): stop a call
    /// that used its CPU time or reached the wall-clock ceiling, otherwise
    /// give it the ticks of CPU time it has left.
    fn expired(&self) -> UpdateDeadline {
        let waited = TICKS.load(Ordering::Relaxed).wrapping_sub(self.start_tick);
        if waited >= self.ceiling {
            return UpdateDeadline::Interrupt;
        }
        let used = thread_cpu().saturating_sub(self.start_cpu);
        if used >= self.cpu {
            return UpdateDeadline::Interrupt;
        }
        UpdateDeadline::Continue(ticks(self.cpu - used).min(self.ceiling - waited))
    }
}

/// Starts a call into the guest with `deadline`.
fn arm(store: &mut Store<HostState>, deadline: Duration) {
    let b = Budget::starting(deadline);
    store.data_mut().budget = b;
    store.set_epoch_deadline(ticks(deadline));
}

fn new_store(engine: &Engine, limits: Limits, grants: &Grants) -> Result<Store<HostState>, String> {
    let wasi = if grants.any() {
        Some(Box::new(WasiState::new(grants)?))
    } else {
        None
    };
    let state = HostState {
        wasi,
        limits: Limiter {
            counts: StoreLimitsBuilder::new()
                .instances(64)
                .tables(64)
                .memories(16)
                .build(),
            cap: limits.memory,
            memory: 0,
        },
        budget: Budget::default(),
        conn: 0,
        calls: Vec::new(),
        queued: 0,
        drain: true,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    // the deadline is of CPU time: see Budget
    store.epoch_deadline_callback(|cx| Ok(cx.data().budget.expired()));
    Ok(store)
}

fn instantiate(inner: &Inner) -> Result<Box<Instance>, CallError> {
    let engine = engine().map_err(|e| CallError::Instantiate(e.to_string()))?;
    let mut store =
        new_store(engine, inner.limits, &inner.grants).map_err(CallError::Instantiate)?;
    arm(&mut store, INIT_DEADLINE);
    let bindings = inner
        .pre
        .instantiate(&mut store)
        .map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
    let (service, config) = inner
        .init
        .get()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .unwrap_or(("", "{}"));
    match bindings.call_init(&mut store, service, config) {
        Ok(Ok(())) => Ok(Box::new(Instance { store, bindings })),
        Ok(Err(reason)) => Err(CallError::Instantiate(reason)),
        Err(e) => Err(CallError::Instantiate(format!("{e:#}"))),
    }
}

thread_local! {
    /// A call's queue, given back by [`recycle`] once applied: the next
    /// call queues into it instead of allocating a new one.
    static SPARE_CALLS: std::cell::Cell<Vec<HostCall>> = const { std::cell::Cell::new(Vec::new()) };
    /// The byte buffers of applied `write`s and `send`s, given back by
    /// [`recycle`]: the next ones copy the guest's bytes into them.
    static SPARE_BYTES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Spare byte buffers kept per thread (an echo needs one per call).
const SPARE_BYTES_KEPT: usize = 16;
/// A buffer larger than this is not kept (a rare big message's).
const SPARE_BYTES_MAX: usize = 64 << 10;

/// Gives back an [`Outcome`]'s `calls` once applied (emptied or not), for
/// the next call on this thread to reuse: one allocation less per call,
/// and the byte buffers of its writes and sends one allocation (and one
/// free) less each.
pub fn recycle(mut calls: Vec<HostCall>) {
    SPARE_BYTES.with(|spare| {
        let mut spare = spare.borrow_mut();
        for c in calls.drain(..) {
            if let HostCall::Write(mut b) | HostCall::Send(_, mut b) = c {
                if spare.len() < SPARE_BYTES_KEPT && b.capacity() <= SPARE_BYTES_MAX {
                    b.clear();
                    spare.push(b);
                }
            }
        }
    });
    // a rare burst's big queue is not kept
    if calls.capacity() <= 64 {
        SPARE_CALLS.set(calls);
    }
}

/// A `write` or `send` of the guest's bytes `data` on `conn`: checked
/// first (another connection or a full queue is refused before any copy),
/// then copied once into a spare buffer and queued as `call(bytes)`.
fn byte_call(
    mut cx: StoreContextMut<'_, HostState>,
    conn: u64,
    data: &WasmList<u8>,
    call: impl FnOnce(Vec<u8>) -> HostCall,
) -> wasmtime::Result<(i32,)> {
    let n = data.len();
    let st = cx.data().admits(conn, n);
    if st != status::OK {
        return Ok((st,));
    }
    let mut b = SPARE_BYTES
        .with(|s| s.borrow_mut().pop())
        .unwrap_or_default();
    b.extend_from_slice(data.as_le_slice(&cx));
    Ok((cx.data_mut().queue(n, call(b)),))
}

/// `write` and `send` again, in place of the generated ones (the linker
/// shadows them): these take the guest's list as a [`WasmList`], a view
/// of its linear memory, and copy it once into a recycled buffer, where
/// the generated binding lifts it into a new `Vec` per call (an
/// allocation and a free per echoed message, a sixth of the host side of
/// a call in a profile of the 64-byte ping-pong).
fn add_byte_calls(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut host = linker.instance("myriad:plugin/host@1.0.0")?;
    host.func_wrap(
        "write",
        |cx: StoreContextMut<'_, HostState>, (conn, data): (u64, WasmList<u8>)| {
            byte_call(cx, conn, &data, HostCall::Write)
        },
    )?;
    host.func_wrap(
        "send",
        |cx: StoreContextMut<'_, HostState>, (conn, kind, data): (u64, MsgKind, WasmList<u8>)| {
            byte_call(cx, conn, &data, |b| HostCall::Send(kind, b))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn run(
    inst: &mut Instance,
    deadline: Duration,
    conn: u64,
    ev: Event<'_>,
) -> Result<(u32, Vec<HostCall>), CallError> {
    let Instance { store, bindings } = inst;
    if matches!(ev, Event::Drain) && !store.data().drain {
        // `drain-events` off (a connection reopened on a fresh instance
        // comes here; the others do not reach `run`)
        return Ok((0, Vec::new()));
    }
    {
        let d = store.data_mut();
        d.conn = conn;
        d.calls.clear();
        d.queued = 0;
    }
    arm(store, deadline);
    let r = match ev {
        Event::Open => bindings.call_on_open(&mut *store, conn).map(|()| 0),
        Event::Data(b) => bindings.call_on_data(&mut *store, conn, b),
        Event::Message(k, b) => bindings
            .call_on_message(&mut *store, conn, k, b)
            .map(|()| 0),
        Event::Drain => bindings.call_on_drain(&mut *store, conn).map(|()| 0),
        Event::Timer(t) => bindings.call_on_timer(&mut *store, conn, t).map(|()| 0),
        Event::Close(r, c) => bindings.call_on_close(&mut *store, conn, r, c).map(|()| 0),
    };
    let calls = std::mem::replace(&mut store.data_mut().calls, SPARE_CALLS.take());
    match r {
        Ok(n) => Ok((n, calls)),
        Err(e) => match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Err(CallError::Timeout),
            _ => Err(CallError::Trap(format!("{e:#}"))),
        },
    }
}
