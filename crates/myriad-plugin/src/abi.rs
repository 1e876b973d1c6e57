//! The C ABI, mirrored field for field from `include/myriad_plugin.h`
//! (`tests/header.rs` compiles the header and checks every size and offset
//! against these definitions, so the two cannot drift apart).
//!
//! Both tables begin with `{abi_version, struct_size}`. A reader uses a
//! field only if the writer's `struct_size` covers it ([`covers`]): a newer
//! minor version appends fields, and an older peer simply lacks them.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

/// The major version: a plugin of another major version is refused.
pub const MYRIAD_ABI_MAJOR: u32 = 1;
/// The minor version: grows when fields are appended.
pub const MYRIAD_ABI_MINOR: u32 = 0;
/// `major << 16 | minor`, as found at the start of both tables.
pub const MYRIAD_ABI_VERSION: u32 = (MYRIAD_ABI_MAJOR << 16) | MYRIAD_ABI_MINOR;
/// The exported entry point's name (NUL-terminated, for `dlsym`).
pub const MYRIAD_PLUGIN_ENTRY_SYMBOL: &[u8] = b"myriad_plugin_entry\0";

/// Host call results.
pub const MYRIAD_OK: i32 = 0;
/// The connection is closing or closed.
pub const MYRIAD_ERR_CLOSED: i32 = -1;
/// A bad argument.
pub const MYRIAD_ERR_INVALID: i32 = -2;
/// The call does not apply here.
pub const MYRIAD_ERR_UNSUPPORTED: i32 = -3;
/// A bound was reached.
pub const MYRIAD_ERR_LIMIT: i32 = -4;
/// The caller's buffer is too small.
pub const MYRIAD_ERR_BUFFER: i32 = -5;

/// Shapes.
pub const MYRIAD_SHAPE_STREAM: u32 = 1;
/// Whole messages.
pub const MYRIAD_SHAPE_MESSAGE: u32 = 2;

/// Message kinds.
pub const MYRIAD_TEXT: u32 = 1;
/// A binary message (every message on tcp/tls stacks).
pub const MYRIAD_BINARY: u32 = 2;

/// Close reasons.
pub const MYRIAD_CLOSE_LOCAL: u32 = 0;
/// The peer closed.
pub const MYRIAD_CLOSE_PEER: u32 = 1;
/// A socket error.
pub const MYRIAD_CLOSE_ERROR: u32 = 2;
/// A timeout.
pub const MYRIAD_CLOSE_TIMEOUT: u32 = 3;
/// The server shut down.
pub const MYRIAD_CLOSE_SHUTDOWN: u32 = 4;
/// Bad input from the peer.
pub const MYRIAD_CLOSE_PROTOCOL: u32 = 5;
/// The plugin misbehaved.
pub const MYRIAD_CLOSE_FAULT: u32 = 6;

/// Fault kinds.
pub const MYRIAD_FAULT_PANIC: u32 = 1;
/// Any other failure.
pub const MYRIAD_FAULT_ERROR: u32 = 2;

/// Log levels.
pub const MYRIAD_LOG_ERROR: u32 = 1;
/// Warning.
pub const MYRIAD_LOG_WARN: u32 = 2;
/// Information.
pub const MYRIAD_LOG_INFO: u32 = 3;
/// Debugging.
pub const MYRIAD_LOG_DEBUG: u32 = 4;
/// Tracing.
pub const MYRIAD_LOG_TRACE: u32 = 5;

/// `message_size`'s "need more bytes".
pub const MYRIAD_NEED_MORE: i64 = 0;

/// The host's context of one callback (opaque to plugins).
#[repr(C)]
pub struct myriad_ctx {
    _private: [u8; 0],
}

/// A string: pointer and length, UTF-8, not NUL-terminated.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct myriad_str {
    /// The first byte.
    pub ptr: *const c_char,
    /// The length in bytes.
    pub len: usize,
}

/// A header field.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct myriad_header {
    /// The field name.
    pub name: myriad_str,
    /// The field value.
    pub value: myriad_str,
}

/// A WebSocket upgrade request.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct myriad_upgrade {
    /// The target's path.
    pub path: myriad_str,
    /// The target's query (after `?`).
    pub query: myriad_str,
    /// The header fields.
    pub headers: *const myriad_header,
    /// How many.
    pub header_count: usize,
    /// The offered subprotocols.
    pub protocols: *const myriad_str,
    /// How many.
    pub protocol_count: usize,
    /// The peer as `ip:port`.
    pub peer: myriad_str,
}

/// Blocking work, run on a pool thread.
pub type myriad_work_fn = unsafe extern "C" fn(arg: *mut c_void);

/// The host's function table.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct myriad_host {
    /// `MYRIAD_ABI_VERSION` of the host.
    pub abi_version: u32,
    /// `size_of::<myriad_host>()` of the host.
    pub struct_size: u32,
    /// Raw bytes.
    pub write: unsafe extern "C" fn(cx: *mut myriad_ctx, data: *const u8, len: usize) -> i32,
    /// One message.
    pub send:
        unsafe extern "C" fn(cx: *mut myriad_ctx, kind: u32, data: *const u8, len: usize) -> i32,
    /// Close.
    pub close: unsafe extern "C" fn(
        cx: *mut myriad_ctx,
        code: u16,
        reason: *const c_char,
        reason_len: usize,
    ) -> i32,
    /// Shut down the sending side.
    pub shutdown_write: unsafe extern "C" fn(cx: *mut myriad_ctx) -> i32,
    /// Pause reading.
    pub pause_reading: unsafe extern "C" fn(cx: *mut myriad_ctx) -> i32,
    /// Resume reading.
    pub resume_reading: unsafe extern "C" fn(cx: *mut myriad_ctx) -> i32,
    /// Set a timer.
    pub set_timer: unsafe extern "C" fn(cx: *mut myriad_ctx, after_ms: u64, token: u64) -> i32,
    /// Cancel a timer.
    pub cancel_timer: unsafe extern "C" fn(cx: *mut myriad_ctx, token: u64) -> i32,
    /// The peer's address as text.
    pub peer_addr: unsafe extern "C" fn(cx: *mut myriad_ctx, buf: *mut c_char, cap: usize) -> i64,
    /// The local address as text.
    pub local_addr: unsafe extern "C" fn(cx: *mut myriad_ctx, buf: *mut c_char, cap: usize) -> i64,
    /// The connection's number.
    pub conn_id: unsafe extern "C" fn(cx: *mut myriad_ctx) -> u64,
    /// Subscribe to a topic.
    pub subscribe:
        unsafe extern "C" fn(cx: *mut myriad_ctx, topic: *const c_char, topic_len: usize) -> i32,
    /// Unsubscribe.
    pub unsubscribe:
        unsafe extern "C" fn(cx: *mut myriad_ctx, topic: *const c_char, topic_len: usize) -> i32,
    /// Publish to a topic.
    pub publish: unsafe extern "C" fn(
        cx: *mut myriad_ctx,
        topic: *const c_char,
        topic_len: usize,
        kind: u32,
        data: *const u8,
        len: usize,
    ) -> i32,
    /// Log a line.
    pub log: unsafe extern "C" fn(cx: *mut myriad_ctx, level: u32, msg: *const c_char, len: usize),
    /// Add to a plugin counter.
    pub counter_add: unsafe extern "C" fn(
        cx: *mut myriad_ctx,
        name: *const c_char,
        name_len: usize,
        n: u64,
    ) -> i32,
    /// Run blocking work on the business pool.
    pub spawn_blocking: unsafe extern "C" fn(
        cx: *mut myriad_ctx,
        work: myriad_work_fn,
        arg: *mut c_void,
        token: u64,
    ) -> i32,
    /// Report a caught failure.
    pub fault: unsafe extern "C" fn(cx: *mut myriad_ctx, kind: u32, msg: *const c_char, len: usize),
}

/// The plugin's table.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct myriad_plugin {
    /// `MYRIAD_ABI_VERSION` the plugin was built for.
    pub abi_version: u32,
    /// `size_of::<myriad_plugin>()` of the plugin's version.
    pub struct_size: u32,
    /// NUL-terminated name.
    pub name: *const c_char,
    /// `MYRIAD_SHAPE_STREAM` or `MYRIAD_SHAPE_MESSAGE`.
    pub shape: u32,
    /// Zero.
    pub reserved: u32,
    /// Per service, before serving.
    pub init: Option<
        unsafe extern "C" fn(
            cx: *mut myriad_ctx,
            service: *const c_char,
            service_len: usize,
            config: *const c_char,
            config_len: usize,
            service_state: *mut *mut c_void,
            err: *mut c_char,
            err_cap: usize,
        ) -> i32,
    >,
    /// After the service's last connection.
    pub shutdown: Option<unsafe extern "C" fn(service_state: *mut c_void)>,
    /// ws stacks: accept or refuse an upgrade.
    pub on_upgrade: Option<
        unsafe extern "C" fn(
            cx: *mut myriad_ctx,
            service_state: *mut c_void,
            req: *const myriad_upgrade,
            protocol: *mut i32,
            conn_state: *mut *mut c_void,
        ) -> i32,
    >,
    /// The connection is open.
    pub on_open: Option<
        unsafe extern "C" fn(
            cx: *mut myriad_ctx,
            service_state: *mut c_void,
            conn_state: *mut *mut c_void,
        ),
    >,
    /// Stream plugins: bytes arrived.
    pub on_data: Option<
        unsafe extern "C" fn(
            cx: *mut myriad_ctx,
            service_state: *mut c_void,
            conn_state: *mut c_void,
            data: *mut u8,
            len: usize,
        ) -> usize,
    >,
    /// Message plugins on tcp/tls: the next message's length.
    pub message_size: Option<
        unsafe extern "C" fn(service_state: *mut c_void, data: *const u8, len: usize) -> i64,
    >,
    /// Message plugins: one whole message.
    pub on_message: Option<
        unsafe extern "C" fn(
            cx: *mut myriad_ctx,
            service_state: *mut c_void,
            conn_state: *mut c_void,
            kind: u32,
            data: *const u8,
            len: usize,
        ),
    >,
    /// Everything queued was sent.
    pub on_drain: Option<
        unsafe extern "C" fn(
            cx: *mut myriad_ctx,
            service_state: *mut c_void,
            conn_state: *mut c_void,
        ),
    >,
    /// A timer fired.
    pub on_timer: Option<
        unsafe extern "C" fn(
            cx: *mut myriad_ctx,
            service_state: *mut c_void,
            conn_state: *mut c_void,
            token: u64,
        ),
    >,
    /// The connection is gone.
    pub on_close: Option<
        unsafe extern "C" fn(
            cx: *mut myriad_ctx,
            service_state: *mut c_void,
            conn_state: *mut c_void,
            reason: u32,
            code: u16,
        ),
    >,
    /// Blocking work finished.
    pub on_task: Option<
        unsafe extern "C" fn(
            cx: *mut myriad_ctx,
            service_state: *mut c_void,
            conn_state: *mut c_void,
            token: u64,
            arg: *mut c_void,
        ),
    >,
}

// SAFETY: the tables are immutable after the entry point returned them and
// hold only function pointers and pointers to static data.
unsafe impl Send for myriad_plugin {}
// SAFETY: as above.
unsafe impl Sync for myriad_plugin {}

/// The entry point's type.
pub type myriad_plugin_entry_fn =
    unsafe extern "C" fn(host: *const myriad_host) -> *const myriad_plugin;

/// Whether a table of `struct_size` bytes contains the field that ends at
/// `end` (its offset plus its size).
///
/// ```
/// use ::myriad_plugin::abi::{covers, myriad_plugin as Table};
/// let end = std::mem::offset_of!(Table, on_task) + 8;
/// assert!(covers(std::mem::size_of::<Table>() as u32, end));
/// assert!(!covers(16, end));
/// ```
pub fn covers(struct_size: u32, end: usize) -> bool {
    struct_size as usize >= end
}
