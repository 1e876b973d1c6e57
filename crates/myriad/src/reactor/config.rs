//! Per-connection limits, the per-loop view of a service and a listener,
//! and the options of an outbound connection.

use super::*;

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
    /// (0: close at once). See `Reactor::flush_open`.
    pub linger_ms: u32,
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
    pub sock: Sock,
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

/// The loop time (ms) `after` from `now_ms`, saturating: a delay a handler,
/// a plugin or a config chose ("never" as `Duration::MAX`) must not wrap
/// the clock into a timer due at once.
pub(crate) fn at_after(now_ms: u64, after: Duration) -> u64 {
    now_ms.saturating_add(u64::try_from(after.as_millis()).unwrap_or(u64::MAX))
}

pub(super) fn clamp_u32(v: usize) -> u32 {
    v.min(u32::MAX as usize) as u32
}
