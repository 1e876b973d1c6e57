//! Loading native plugins and crossing the C ABI: the only module of the
//! server with `unsafe` (every block says why it holds).
//!
//! A plugin file is copied into a private memory file (`memfd`) and loaded
//! from there: `dlopen` of the same path returns the library already
//! loaded, and a rebuilt file overwritten in place would crash the code
//! still running from it. So every load, and every reload, gets its own
//! copy of the code, and old code stays mapped for the connections that
//! still use it. Libraries are never unloaded (unloading Rust `cdylib`s
//! with thread-locals is unsound).

use super::{ConnOps, HostCx};
use ::myriad_plugin::abi::*;
use std::ffi::{c_char, c_void, CStr};
use std::io::Write;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read or copied.
    #[error("{path}: {source}")]
    Io {
        /// The plugin file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The dynamic loader refused it.
    #[error("{path}: cannot load: {reason}")]
    Load {
        /// The plugin file.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },
    /// It exports no `myriad_plugin_entry`, or that returned nothing.
    #[error("{path}: {reason}")]
    Entry {
        /// The plugin file.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// A major ABI version this server does not speak.
    #[error("{path}: plugin ABI version {plugin_major}.{plugin_minor} is not supported by this server (ABI {host_major}.{host_minor}; the major versions must match)")]
    Version {
        /// The plugin file.
        path: PathBuf,
        /// The plugin's major version.
        plugin_major: u32,
        /// The plugin's minor version.
        plugin_minor: u32,
        /// The server's major version.
        host_major: u32,
        /// The server's minor version.
        host_minor: u32,
    },
    /// The table is unusable (a bad shape, a missing required callback).
    #[error("{path}: {reason}")]
    Table {
        /// The plugin file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A connection's plugin state: the pointer the plugin gave us.
#[derive(Debug)]
pub struct ConnState(*mut c_void);

// `from_tag` and `tag` serve the wasm host only.
#[cfg_attr(not(feature = "wasm"), allow(dead_code))]
impl ConnState {
    /// No state yet.
    pub const NONE: ConnState = ConnState(std::ptr::null_mut());

    /// A wasm connection's state: a number, not a pointer (the instance
    /// generation it opened on, plus one).
    pub fn from_tag(t: u64) -> ConnState {
        ConnState(std::ptr::without_provenance_mut(t as usize))
    }

    /// The number of [`ConnState::from_tag`] (0 for none).
    pub fn tag(&self) -> u64 {
        self.0.addr() as u64
    }
}

/// The plugin's table, with every optional callback the plugin's
/// `struct_size` does not cover read as absent.
struct Table {
    name: String,
    shape: u32,
    t: myriad_plugin,
}

/// A loaded plugin library: its table, kept for the life of the process.
pub struct Library {
    path: PathBuf,
    table: Table,
    minor: u32,
}

// SAFETY: the table holds function pointers and a pointer to the plugin's
// static name; the plugin ABI requires every callback to be callable from
// any loop thread (a service's state is shared by its loops).
unsafe impl Send for Library {}
// SAFETY: as above; nothing in it is mutated after loading.
unsafe impl Sync for Library {}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("path", &self.path)
            .field("name", &self.table.name)
            .finish()
    }
}

/// The host's table, handed to every plugin.
static HOST: myriad_host = myriad_host {
    abi_version: MYRIAD_ABI_VERSION,
    struct_size: size_of::<myriad_host>() as u32,
    write: h_write,
    send: h_send,
    close: h_close,
    shutdown_write: h_shutdown_write,
    pause_reading: h_pause,
    resume_reading: h_resume,
    set_timer: h_set_timer,
    cancel_timer: h_cancel_timer,
    peer_addr: h_peer_addr,
    local_addr: h_local_addr,
    conn_id: h_conn_id,
    subscribe: h_subscribe,
    unsubscribe: h_unsubscribe,
    publish: h_publish,
    log: h_log,
    counter_add: h_counter_add,
    spawn_blocking: h_spawn_blocking,
    fault: h_fault,
};

/// Copies `path` into a fresh memory file and returns it (see the module
/// docs for why).
fn private_copy(path: &Path) -> std::io::Result<std::fs::File> {
    let bytes = std::fs::read(path)?;
    let fd = rustix::fs::memfd_create("myriad-plugin", rustix::fs::MemfdFlags::CLOEXEC)?;
    let mut f = std::fs::File::from(fd);
    f.write_all(&bytes)?;
    Ok(f)
}

impl Library {
    /// Loads a private copy of `path`, calls its entry point with the host's
    /// table and checks the plugin's.
    ///
    /// # Errors
    ///
    /// [`LoadError`], each naming the file.
    pub fn load(path: &Path) -> Result<Library, LoadError> {
        use std::os::fd::AsRawFd;
        let io = |source| LoadError::Io {
            path: path.to_owned(),
            source,
        };
        let copy = private_copy(path).map_err(io)?;
        let proc_path = format!("/proc/self/fd/{}", copy.as_raw_fd());
        // SAFETY: loading runs the library's initialisers; a plugin is code
        // the operator chose to run in the server (trusted, in-process).
        let lib = unsafe { libloading::Library::new(&proc_path) }.map_err(|e| LoadError::Load {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        // Kept open for good, like the library: glibc finds an already
        // loaded library by its path name first, so a later load must
        // never see this `/proc/self/fd/N` name again (a closed number
        // would be reused by the next copy).
        std::mem::forget(copy);
        // SAFETY: the symbol's type is the ABI's entry point type.
        let entry: myriad_plugin_entry_fn = unsafe {
            lib.get::<myriad_plugin_entry_fn>(MYRIAD_PLUGIN_ENTRY_SYMBOL)
                .map(|s| *s)
                .map_err(|_| LoadError::Entry {
                    path: path.to_owned(),
                    reason: "no myriad_plugin_entry symbol: not a Myriad plugin".to_owned(),
                })?
        };
        // Never unloaded: see the module docs.
        std::mem::forget(lib);
        // SAFETY: the entry point with the host's static table.
        let raw = unsafe { entry(&HOST) };
        // SAFETY: the plugin returns a table that lives as long as the
        // library (or null); we read only the common header first.
        let Some(head) = (unsafe { raw.as_ref() }) else {
            return Err(LoadError::Entry {
                path: path.to_owned(),
                reason: "myriad_plugin_entry returned no table (the plugin refused this host)"
                    .to_owned(),
            });
        };
        let (major, minor) = (head.abi_version >> 16, head.abi_version & 0xffff);
        if major != MYRIAD_ABI_MAJOR {
            return Err(LoadError::Version {
                path: path.to_owned(),
                plugin_major: major,
                plugin_minor: minor,
                host_major: MYRIAD_ABI_MAJOR,
                host_minor: MYRIAD_ABI_MINOR,
            });
        }
        let size = head.struct_size as usize;
        let table_err = |reason: String| LoadError::Table {
            path: path.to_owned(),
            reason,
        };
        if size < offset_of!(myriad_plugin, on_close) + size_of::<usize>() {
            return Err(table_err(format!(
                "plugin table of {size} bytes is too small for ABI {major}.x"
            )));
        }
        // Copy what the plugin's version has; fields past its struct_size
        // stay absent (an older minor version).
        let mut t = myriad_plugin {
            abi_version: head.abi_version,
            struct_size: head.struct_size,
            name: std::ptr::null(),
            shape: 0,
            reserved: 0,
            init: None,
            shutdown: None,
            on_upgrade: None,
            on_open: None,
            on_data: None,
            message_size: None,
            on_message: None,
            on_drain: None,
            on_timer: None,
            on_close: None,
            on_task: None,
        };
        let n = size.min(size_of::<myriad_plugin>());
        // SAFETY: the plugin's table has `struct_size` readable bytes of
        // which we copy no more than our own table's size; every field of
        // the ABI is a plain value or a nullable function pointer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                raw.cast::<u8>(),
                std::ptr::addr_of_mut!(t).cast::<u8>(),
                n,
            )
        };
        let name = if t.name.is_null() {
            String::from("unnamed")
        } else {
            // SAFETY: the ABI says `name` is NUL-terminated static text.
            unsafe { CStr::from_ptr(t.name) }
                .to_string_lossy()
                .into_owned()
        };
        if t.shape != MYRIAD_SHAPE_STREAM && t.shape != MYRIAD_SHAPE_MESSAGE {
            return Err(table_err(format!("unknown plugin shape {}", t.shape)));
        }
        if t.shape == MYRIAD_SHAPE_STREAM && t.on_data.is_none() {
            return Err(table_err("a stream plugin needs on_data".to_owned()));
        }
        if t.shape == MYRIAD_SHAPE_MESSAGE && t.on_message.is_none() {
            return Err(table_err("a message plugin needs on_message".to_owned()));
        }
        Ok(Library {
            path: path.to_owned(),
            table: Table {
                name,
                shape: t.shape,
                t,
            },
            minor,
        })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.table.name
    }

    /// The plugin's ABI minor version.
    pub fn minor(&self) -> u32 {
        self.minor
    }

    /// Whether it takes whole messages.
    pub fn is_message(&self) -> bool {
        self.table.shape == MYRIAD_SHAPE_MESSAGE
    }

    /// Whether it frames its own messages on tcp/tls.
    pub fn has_message_size(&self) -> bool {
        self.table.t.message_size.is_some()
    }

    /// Whether it answers upgrades itself.
    pub fn has_on_upgrade(&self) -> bool {
        self.table.t.on_upgrade.is_some()
    }

    /// `init`: the service's state, or the plugin's reason.
    pub fn init(
        &self,
        hc: &mut HostCx<'_>,
        service: &str,
        config: &str,
    ) -> Result<ServiceState, String> {
        let Some(f) = self.table.t.init else {
            return Ok(ServiceState::NULL);
        };
        let mut state = std::ptr::null_mut();
        let mut err = [0u8; 512];
        // SAFETY: the plugin's init with strings and out-pointers that live
        // for the call.
        let rc = unsafe {
            f(
                hc.raw(),
                service.as_ptr().cast(),
                service.len(),
                config.as_ptr().cast(),
                config.len(),
                &mut state,
                err.as_mut_ptr().cast(),
                err.len(),
            )
        };
        if rc == 0 {
            return Ok(ServiceState(state));
        }
        let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
        let reason = String::from_utf8_lossy(&err[..end]).into_owned();
        Err(if reason.is_empty() {
            format!("init failed with {rc}")
        } else {
            reason
        })
    }

    /// `shutdown`.
    pub fn shutdown(&self, s: &ServiceState) {
        if let Some(f) = self.table.t.shutdown {
            // SAFETY: the state `init` made, handed back once.
            unsafe { f(s.0) }
        }
    }

    /// `on_upgrade`: `Ok(protocol index)` (with the connection's state set)
    /// or `Err(status)`; absent means accept with none.
    pub fn on_upgrade(
        &self,
        hc: &mut HostCx<'_>,
        s: &ServiceState,
        req: &UpgradeView<'_>,
        conn: &mut ConnState,
    ) -> Result<Option<usize>, i32> {
        let Some(f) = self.table.t.on_upgrade else {
            return Ok(None);
        };
        let headers: Vec<myriad_header> = req
            .headers
            .iter()
            .map(|(n, v)| myriad_header {
                name: mstr(n.as_bytes()),
                value: mstr(v),
            })
            .collect();
        let protocols: Vec<myriad_str> = req.protocols.iter().map(|p| mstr(p.as_bytes())).collect();
        let raw = myriad_upgrade {
            path: mstr(req.path.as_bytes()),
            query: mstr(req.query.as_bytes()),
            headers: headers.as_ptr(),
            header_count: headers.len(),
            protocols: protocols.as_ptr(),
            protocol_count: protocols.len(),
            peer: mstr(req.peer.as_bytes()),
        };
        let mut proto = -1i32;
        // SAFETY: the plugin's callback with a request whose strings and
        // arrays outlive the call, and our out-pointers.
        let rc = unsafe { f(hc.raw(), s.0, &raw, &mut proto, &mut conn.0) };
        if rc != 0 {
            return Err(rc);
        }
        Ok(usize::try_from(proto).ok())
    }

    /// `on_open`.
    pub fn on_open(&self, hc: &mut HostCx<'_>, s: &ServiceState, conn: &mut ConnState) {
        if let Some(f) = self.table.t.on_open {
            // SAFETY: the plugin's callback with its states.
            unsafe { f(hc.raw(), s.0, &mut conn.0) }
        }
    }

    /// `on_data`: how many bytes the plugin says it consumed (unchecked).
    pub fn on_data(
        &self,
        hc: &mut HostCx<'_>,
        s: &ServiceState,
        conn: &ConnState,
        data: &mut [u8],
    ) -> usize {
        match self.table.t.on_data {
            // SAFETY: the plugin's callback with its states and the receive
            // buffer, valid and exclusively ours for the call.
            Some(f) => unsafe { f(hc.raw(), s.0, conn.0, data.as_mut_ptr(), data.len()) },
            None => data.len(),
        }
    }

    /// `message_size`.
    pub fn message_size(&self, s: &ServiceState, data: &[u8]) -> i64 {
        match self.table.t.message_size {
            // SAFETY: the plugin's callback with bytes valid for the call.
            Some(f) => unsafe { f(s.0, data.as_ptr(), data.len()) },
            None => -1,
        }
    }

    /// `on_message`.
    pub fn on_message(
        &self,
        hc: &mut HostCx<'_>,
        s: &ServiceState,
        conn: &ConnState,
        kind: u32,
        data: &[u8],
    ) {
        if let Some(f) = self.table.t.on_message {
            // SAFETY: the plugin's callback with bytes valid for the call.
            unsafe { f(hc.raw(), s.0, conn.0, kind, data.as_ptr(), data.len()) }
        }
    }

    /// `on_drain`.
    pub fn on_drain(&self, hc: &mut HostCx<'_>, s: &ServiceState, conn: &ConnState) {
        if let Some(f) = self.table.t.on_drain {
            // SAFETY: the plugin's callback with its states.
            unsafe { f(hc.raw(), s.0, conn.0) }
        }
    }

    /// `on_timer`.
    pub fn on_timer(&self, hc: &mut HostCx<'_>, s: &ServiceState, conn: &ConnState, token: u64) {
        if let Some(f) = self.table.t.on_timer {
            // SAFETY: the plugin's callback with its states.
            unsafe { f(hc.raw(), s.0, conn.0, token) }
        }
    }

    /// `on_close`: the connection's state is handed back (and forgotten
    /// here).
    pub fn on_close(
        &self,
        hc: &mut HostCx<'_>,
        s: &ServiceState,
        conn: ConnState,
        reason: u32,
        code: u16,
    ) {
        if let Some(f) = self.table.t.on_close {
            // SAFETY: the plugin's callback; the state is handed back once.
            unsafe { f(hc.raw(), s.0, conn.0, reason, code) }
        }
    }

    /// `on_task`: blocking work came back (`conn` absent if it closed).
    pub fn on_task(
        &self,
        hc: &mut HostCx<'_>,
        s: &ServiceState,
        conn: Option<&ConnState>,
        token: u64,
        arg: TaskArg,
    ) {
        if let Some(f) = self.table.t.on_task {
            let c = conn.map_or(std::ptr::null_mut(), |c| c.0);
            // SAFETY: the plugin's callback with the argument it gave us.
            unsafe { f(hc.raw(), s.0, c, token, arg.arg) }
        }
    }
}

/// A service's plugin state, shared by the service's loops (the ABI
/// requires plugins to make it so).
#[derive(Debug)]
pub struct ServiceState(*mut c_void);

impl ServiceState {
    /// No state (before `init`, or a plugin without one).
    pub const NULL: ServiceState = ServiceState(std::ptr::null_mut());
}
// SAFETY: the ABI requires a service's state to be usable from every loop
// thread at once.
unsafe impl Send for ServiceState {}
// SAFETY: as above.
unsafe impl Sync for ServiceState {}

/// A blocking job: the plugin's function and argument.
#[derive(Debug)]
pub struct TaskArg {
    work: myriad_work_fn,
    arg: *mut c_void,
}
// SAFETY: the ABI hands `arg` to a pool thread and back; the plugin owns
// what it points to and made it for that trip.
unsafe impl Send for TaskArg {}

impl TaskArg {
    /// Runs the plugin's work (on a pool thread).
    pub fn run(&self) {
        // SAFETY: the plugin's work function with its own argument.
        unsafe { (self.work)(self.arg) }
    }
}

/// What `on_upgrade` is shown, in host types.
pub struct UpgradeView<'a> {
    pub path: &'a str,
    pub query: &'a str,
    pub headers: Vec<(&'a str, &'a [u8])>,
    pub protocols: &'a [String],
    pub peer: String,
}

fn mstr(b: &[u8]) -> myriad_str {
    myriad_str {
        ptr: b.as_ptr().cast(),
        len: b.len(),
    }
}

// ----- the host calls -----

/// # Safety
///
/// `cx` is the `HostCx` of the callback in progress (the ABI's rule).
unsafe fn hc<'a>(cx: *mut myriad_ctx) -> Option<&'a mut HostCx<'a>> {
    // SAFETY: the caller's contract.
    unsafe { cx.cast::<HostCx<'a>>().as_mut() }
}

/// # Safety
///
/// `p` points to `len` readable bytes (or `len` is 0).
unsafe fn bytes<'a>(p: *const u8, len: usize) -> &'a [u8] {
    if len == 0 || p.is_null() {
        &[]
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(p, len) }
    }
}

/// A host call on the callback's connection; `MYRIAD_ERR_UNSUPPORTED`
/// without one.
fn on_conn(
    cx: *mut myriad_ctx,
    f: impl FnOnce(&mut dyn ConnOps, &std::sync::Arc<super::PluginService>) -> i32,
) -> i32 {
    // SAFETY: `cx` is the callback's context (the ABI's rule).
    match unsafe { hc(cx) } {
        Some(h) => h.with_conn(f),
        None => MYRIAD_ERR_INVALID,
    }
}

unsafe extern "C" fn h_write(cx: *mut myriad_ctx, data: *const u8, len: usize) -> i32 {
    // SAFETY: the plugin's bytes for the call.
    let d = unsafe { bytes(data, len) };
    on_conn(cx, |c, _| c.write(d))
}

unsafe extern "C" fn h_send(cx: *mut myriad_ctx, kind: u32, data: *const u8, len: usize) -> i32 {
    // SAFETY: the plugin's bytes for the call.
    let d = unsafe { bytes(data, len) };
    on_conn(cx, |c, _| c.send(kind, d))
}

unsafe extern "C" fn h_close(
    cx: *mut myriad_ctx,
    code: u16,
    reason: *const c_char,
    len: usize,
) -> i32 {
    // SAFETY: the plugin's bytes for the call.
    let r = unsafe { bytes(reason.cast(), len) };
    on_conn(cx, |c, _| c.close(code, r))
}

unsafe extern "C" fn h_shutdown_write(cx: *mut myriad_ctx) -> i32 {
    on_conn(cx, |c, _| c.shutdown_write())
}

unsafe extern "C" fn h_pause(cx: *mut myriad_ctx) -> i32 {
    on_conn(cx, |c, _| c.pause(true))
}

unsafe extern "C" fn h_resume(cx: *mut myriad_ctx) -> i32 {
    on_conn(cx, |c, _| c.pause(false))
}

unsafe extern "C" fn h_set_timer(cx: *mut myriad_ctx, after_ms: u64, token: u64) -> i32 {
    on_conn(cx, |c, _| c.set_timer(after_ms, token))
}

unsafe extern "C" fn h_cancel_timer(cx: *mut myriad_ctx, token: u64) -> i32 {
    on_conn(cx, |c, _| c.cancel_timer(token))
}

fn addr_into(a: Option<std::net::SocketAddr>, buf: *mut c_char, cap: usize) -> i64 {
    let Some(a) = a else {
        return MYRIAD_ERR_UNSUPPORTED.into();
    };
    let text = a.to_string();
    if text.len() > cap || buf.is_null() {
        return MYRIAD_ERR_BUFFER.into();
    }
    // SAFETY: the plugin's buffer holds `cap` >= len bytes.
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len()) };
    text.len() as i64
}

unsafe extern "C" fn h_peer_addr(cx: *mut myriad_ctx, buf: *mut c_char, cap: usize) -> i64 {
    let mut a = None;
    let rc = on_conn(cx, |c, _| {
        a = c.addr(false);
        0
    });
    if rc != 0 {
        return rc.into();
    }
    addr_into(a, buf, cap)
}

unsafe extern "C" fn h_local_addr(cx: *mut myriad_ctx, buf: *mut c_char, cap: usize) -> i64 {
    let mut a = None;
    let rc = on_conn(cx, |c, _| {
        a = c.addr(true);
        0
    });
    if rc != 0 {
        return rc.into();
    }
    addr_into(a, buf, cap)
}

unsafe extern "C" fn h_conn_id(cx: *mut myriad_ctx) -> u64 {
    let mut id = 0;
    on_conn(cx, |c, _| {
        id = c.id();
        0
    });
    id
}

unsafe extern "C" fn h_subscribe(cx: *mut myriad_ctx, topic: *const c_char, len: usize) -> i32 {
    // SAFETY: the plugin's bytes for the call.
    let t = unsafe { bytes(topic.cast(), len) };
    on_conn(cx, |c, s| c.subscribe(s, t, true))
}

unsafe extern "C" fn h_unsubscribe(cx: *mut myriad_ctx, topic: *const c_char, len: usize) -> i32 {
    // SAFETY: the plugin's bytes for the call.
    let t = unsafe { bytes(topic.cast(), len) };
    on_conn(cx, |c, s| c.subscribe(s, t, false))
}

unsafe extern "C" fn h_publish(
    cx: *mut myriad_ctx,
    topic: *const c_char,
    topic_len: usize,
    kind: u32,
    data: *const u8,
    len: usize,
) -> i32 {
    // SAFETY: the plugin's bytes for the call.
    let (t, d) = unsafe { (bytes(topic.cast(), topic_len), bytes(data, len)) };
    on_conn(cx, |c, s| c.publish(s, t, kind, d))
}

unsafe extern "C" fn h_log(cx: *mut myriad_ctx, level: u32, msg: *const c_char, len: usize) {
    // SAFETY: the callback's context and the plugin's bytes for the call.
    let (Some(h), m) = (unsafe { hc(cx) }, unsafe { bytes(msg.cast(), len) }) else {
        return;
    };
    h.svc().log(level, &String::from_utf8_lossy(m));
}

unsafe extern "C" fn h_counter_add(
    cx: *mut myriad_ctx,
    name: *const c_char,
    len: usize,
    n: u64,
) -> i32 {
    // SAFETY: the callback's context and the plugin's bytes for the call.
    let (Some(h), name) = (unsafe { hc(cx) }, unsafe { bytes(name.cast(), len) }) else {
        return MYRIAD_ERR_INVALID;
    };
    h.svc().counter_add(name, n)
}

unsafe extern "C" fn h_spawn_blocking(
    cx: *mut myriad_ctx,
    work: myriad_work_fn,
    arg: *mut c_void,
    token: u64,
) -> i32 {
    let task = TaskArg { work, arg };
    on_conn(cx, move |c, s| c.spawn_blocking(s, task, token))
}

unsafe extern "C" fn h_fault(cx: *mut myriad_ctx, kind: u32, msg: *const c_char, len: usize) {
    // SAFETY: the callback's context and the plugin's bytes for the call.
    let (Some(h), m) = (unsafe { hc(cx) }, unsafe { bytes(msg.cast(), len) }) else {
        return;
    };
    let what = if kind == MYRIAD_FAULT_PANIC {
        "plugin_panic"
    } else {
        "plugin_error"
    };
    h.fault(what, &String::from_utf8_lossy(m));
}
