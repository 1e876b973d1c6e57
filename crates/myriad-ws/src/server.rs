//! WebSocket servers on the Myriad engine.
//!
//! Build a [`WsServer`] (limits, subprotocols, permessage-deflate, origin
//! check, legacy drafts, timeouts, an optional plain-HTTP answer), then turn
//! it into an engine [`Service`] with a factory of [`WsHandler`]s:
//!
//! ```no_run
//! use myriad::Engine;
//! use myriad_ws::server::WsServer;
//! use myriad_ws::{Message, WsCtx, WsHandler};
//!
//! struct Echo;
//! impl WsHandler for Echo {
//!     fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
//!         let _ = cx.send(msg);
//!     }
//! }
//!
//! let ws = WsServer::builder().max_message_size(1 << 20).build();
//! let engine = Engine::builder()
//!     .service(ws.service("ws", "127.0.0.1:9001".parse().unwrap(), || Echo))
//!     .start()?;
//! engine.wait()?;
//! # Ok::<(), myriad::Error>(())
//! ```
//!
//! Each connection costs, while idle, its engine slot plus one small box
//! (the codec state and your handler): the frame decoder is detached from
//! idle connections and shared through a per-loop pool, the handshake
//! results are dropped after `on_open`, and, with permessage-deflate
//! negotiated as by default (no context takeover either way), the zlib
//! compressor and decompressor are borrowed from a per-loop pool for one
//! message at a time ([`crate::zlib_streams`]): an idle connection keeps
//! only a small box of compression settings. With
//! [`DeflateConfig::context_takeover`] each connection keeps its own
//! streams (about 340 KiB at 15-bit windows) for its whole life.

use std::cell::RefCell;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use myriad::{CloseReason, Ctx, Handler, Service};

use crate::app::{
    Handshake, Upgrade, UpgradeInfo, WsCtx, WsHandler, INTERNAL_TIMER, TIMER_CLOSE,
    TIMER_HANDSHAKE, TIMER_LINGER, TIMER_PING,
};
use crate::connection::{ConnectionState, OriginCheck, ServerConfig, ServerConnection};
use crate::decoder::Decoder;
use crate::deflate::DeflateConfig;
use crate::driver::{feed_frames, linger, AWAIT_PONG, DONE, LINGER, NOTIFIED, OPENED, PONG_DUE};
use crate::error::{Error, HandshakeError};
use crate::frame::CloseCode;
use crate::handshake::LegacyDrafts;

/// A plain HTTP request (no WebSocket upgrade) on a WebSocket port, shown
/// to the hook set with [`WsServerBuilder::http`].
///
/// ```
/// use myriad_ws::server::{HttpRequest, HttpResponse};
/// fn route(req: &HttpRequest<'_>) -> Option<HttpResponse> {
///     (req.method() == "GET" && req.path() == "/health")
///         .then(|| HttpResponse::new(200, "text/plain", &b"ok"[..]))
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    method: &'a str,
    path: &'a str,
    headers: &'a [httparse::Header<'a>],
}

impl<'a> HttpRequest<'a> {
    /// The method (`GET`, ...).
    ///
    /// ```
    /// # fn f(req: &myriad_ws::server::HttpRequest<'_>) {
    /// let is_get = req.method() == "GET";
    /// # }
    /// ```
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The request target.
    ///
    /// ```
    /// # fn f(req: &myriad_ws::server::HttpRequest<'_>) {
    /// let root = req.path() == "/";
    /// # }
    /// ```
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The first header field called `name` (case-insensitive), if UTF-8.
    ///
    /// ```
    /// # fn f(req: &myriad_ws::server::HttpRequest<'_>) {
    /// let host = req.header("host");
    /// # }
    /// ```
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    }
}

/// The answer to a plain HTTP request. The body is shared: a static page is
/// queued on every connection by reference.
///
/// ```
/// use myriad_ws::server::HttpResponse;
/// let page = HttpResponse::new(200, "text/html; charset=utf-8", &b"<h1>hi</h1>"[..]);
/// assert_eq!(page.status(), 200);
/// ```
#[derive(Debug, Clone)]
pub struct HttpResponse {
    status: u16,
    content_type: String,
    body: Arc<[u8]>,
}

impl HttpResponse {
    /// A response with `status`, a `Content-Type` and a body.
    ///
    /// ```
    /// use myriad_ws::server::HttpResponse;
    /// let r = HttpResponse::new(404, "text/plain", "not here".as_bytes());
    /// ```
    pub fn new(status: u16, content_type: &str, body: impl Into<Arc<[u8]>>) -> Self {
        HttpResponse {
            status,
            content_type: content_type.chars().filter(|c| !c.is_control()).collect(),
            body: body.into(),
        }
    }

    /// The status code.
    ///
    /// ```
    /// use myriad_ws::server::HttpResponse;
    /// assert_eq!(HttpResponse::new(204, "text/plain", &b""[..]).status(), 204);
    /// ```
    pub fn status(&self) -> u16 {
        self.status
    }

    fn write(&self, cx: &mut Ctx<'_>) {
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        cx.write(head.as_bytes());
        if !self.body.is_empty() {
            cx.write_shared(&self.body);
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The plain-HTTP hook: `None` answers 404.
pub type HttpHook = dyn Fn(&HttpRequest<'_>) -> Option<HttpResponse> + Send + Sync;

/// Counters of one [`WsServer`], summed over all its loops.
///
/// ```no_run
/// # fn f(ws: &myriad_ws::server::WsServer) {
/// let s = ws.stats();
/// println!("{} handshakes, {} protocol errors", s.handshakes, s.closed_1002);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WsStats {
    /// Opening handshakes accepted (101 sent).
    pub handshakes: u64,
    /// Plain HTTP requests answered by the HTTP hook (or 404).
    pub http_responses: u64,
    /// Handshakes refused with 400 (malformed request).
    pub rejected_400: u64,
    /// Handshakes refused with 403 (origin check).
    pub rejected_403: u64,
    /// Handshakes refused with 426 (unsupported version).
    pub rejected_426: u64,
    /// Handshakes refused with 431 (header too large).
    pub rejected_431: u64,
    /// Upgrades refused by the handler ([`crate::WsHandler::on_upgrade`]).
    pub refused: u64,
    /// Connections dropped because the handshake did not finish in time.
    pub handshake_timeouts: u64,
    /// Connections failed with close code 1002 (protocol error).
    pub closed_1002: u64,
    /// Connections failed with close code 1007 (invalid UTF-8 or
    /// compressed data).
    pub closed_1007: u64,
    /// Connections failed with close code 1009 (frame or message too big,
    /// or a compressed message over the inflation ratio).
    pub closed_1009: u64,
    /// Of `closed_1009`: compressed messages that inflated beyond
    /// [`crate::DecoderConfig::max_inflate_ratio`] times their size.
    pub inflate_ratio_exceeded: u64,
    /// Connections dropped because the peer did not answer our close frame.
    pub close_timeouts: u64,
    /// Connections closed with 1008 for sending messages faster than
    /// [`WsServerBuilder::message_rate`] allows.
    pub rate_limited: u64,
    /// Keepalive pings sent ([`WsServerBuilder::keepalive`]).
    pub pings_sent: u64,
    /// Connections closed because nothing (no pong, no frame) arrived
    /// within the pong timeout after a keepalive ping.
    pub pong_timeouts: u64,
    /// Data messages received.
    pub messages_in: u64,
}

/// Slots for the per-loop message counter (loop index modulo this).
const MSG_SLOTS: usize = 16;

#[repr(align(64))]
#[derive(Default)]
struct Padded(AtomicU64);

#[derive(Default)]
struct Counters {
    handshakes: AtomicU64,
    http_responses: AtomicU64,
    rejected_400: AtomicU64,
    rejected_403: AtomicU64,
    rejected_426: AtomicU64,
    rejected_431: AtomicU64,
    refused: AtomicU64,
    handshake_timeouts: AtomicU64,
    closed_1002: AtomicU64,
    closed_1007: AtomicU64,
    closed_1009: AtomicU64,
    inflate_ratio_exceeded: AtomicU64,
    rate_limited: AtomicU64,
    pings_sent: AtomicU64,
    pong_timeouts: AtomicU64,
    close_timeouts: AtomicU64,
    messages_in: [Padded; MSG_SLOTS],
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> WsStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WsStats {
            handshakes: g(&self.handshakes),
            http_responses: g(&self.http_responses),
            rejected_400: g(&self.rejected_400),
            rejected_403: g(&self.rejected_403),
            rejected_426: g(&self.rejected_426),
            rejected_431: g(&self.rejected_431),
            refused: g(&self.refused),
            handshake_timeouts: g(&self.handshake_timeouts),
            closed_1002: g(&self.closed_1002),
            closed_1007: g(&self.closed_1007),
            closed_1009: g(&self.closed_1009),
            inflate_ratio_exceeded: g(&self.inflate_ratio_exceeded),
            rate_limited: g(&self.rate_limited),
            pings_sent: g(&self.pings_sent),
            pong_timeouts: g(&self.pong_timeouts),
            close_timeouts: g(&self.close_timeouts),
            messages_in: self.messages_in.iter().map(|p| g(&p.0)).sum(),
        }
    }

    fn failed(&self, code: CloseCode) {
        match code {
            CloseCode::INVALID_PAYLOAD => inc(&self.closed_1007),
            CloseCode::MESSAGE_TOO_BIG => inc(&self.closed_1009),
            _ => inc(&self.closed_1002),
        }
    }

    fn rejected(&self, e: &HandshakeError) {
        if let HandshakeError::Refused(_) = e {
            return inc(&self.refused);
        }
        match e.status() {
            403 => inc(&self.rejected_403),
            426 => inc(&self.rejected_426),
            431 => inc(&self.rejected_431),
            _ => inc(&self.rejected_400),
        }
    }
}

struct Shared {
    config: Arc<ServerConfig>,
    handshake_timeout: Option<Duration>,
    close_timeout: Duration,
    http: Option<Arc<HttpHook>>,
    counters: Counters,
    /// (messages per second, burst) per connection.
    rate: Option<(u32, u32)>,
    /// Keepalive: (ping interval, pong timeout).
    keepalive: Option<(Duration, Duration)>,
}

/// A WebSocket server's settings and counters. Cheap to clone; make as
/// many engine services from it as you like ([`WsServer::service`]).
///
/// ```
/// use myriad_ws::server::WsServer;
/// let ws = WsServer::builder().protocols(["chat"]).deflate(false).build();
/// assert_eq!(ws.stats().handshakes, 0);
/// ```
#[derive(Clone)]
pub struct WsServer {
    shared: Arc<Shared>,
}

impl fmt::Debug for WsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsServer")
            .field("config", &self.shared.config)
            .field("handshake_timeout", &self.shared.handshake_timeout)
            .field("close_timeout", &self.shared.close_timeout)
            .field("http", &self.shared.http.is_some())
            .finish()
    }
}

impl WsServer {
    /// A builder with the defaults: 16 MiB messages, permessage-deflate
    /// offered, no subprotocols, no origin check, legacy drafts off, a 10 s
    /// handshake timeout and a 5 s close timeout.
    ///
    /// ```
    /// let ws = myriad_ws::server::WsServer::builder().build();
    /// ```
    pub fn builder() -> WsServerBuilder {
        WsServerBuilder::default()
    }

    /// An engine service on `addr` whose connections speak WebSocket, each
    /// driven by a handler made by `factory` (on the connection's loop,
    /// when the TCP connection is accepted). Set the engine-level limits
    /// (`max_connections`, `idle_timeout`, ...) on the returned service.
    ///
    /// ```
    /// use myriad_ws::{server::WsServer, Message, WsCtx, WsHandler};
    /// struct Echo;
    /// impl WsHandler for Echo {
    ///     fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, m: Message<'_>) { let _ = cx.send(m); }
    /// }
    /// let ws = WsServer::builder().build();
    /// let svc = ws.service("ws", "127.0.0.1:0".parse().unwrap(), || Echo).max_connections(100_000);
    /// ```
    pub fn service<H, F>(&self, name: &str, addr: SocketAddr, factory: F) -> Service
    where
        H: WsHandler,
        F: Fn() -> H + Send + Sync + 'static,
    {
        let shared = Arc::clone(&self.shared);
        Service::new(name, addr, move || ServerHandler::new(&shared, factory()))
    }

    /// The engine handler of one WebSocket connection driven by `user`,
    /// with this server's settings and counters: for a connection that
    /// another handler accepted and hands over, such as an HTTP router's
    /// upgrade route (several paths of one port, each with its own
    /// [`WsHandler`]). The returned handler expects the upgrade request
    /// from its first byte (it answers `101` itself); `on_open` arms the
    /// handshake timeout as for [`WsServer::service`] connections.
    ///
    /// ```
    /// use myriad_ws::{server::WsServer, Message, WsCtx, WsHandler};
    /// struct Echo;
    /// impl WsHandler for Echo {
    ///     fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, m: Message<'_>) { let _ = cx.send(m); }
    /// }
    /// let ws = WsServer::builder().build();
    /// // e.g. in `myriad_http::Router::upgrade("/echo", move |_req| Some(ws.connection_handler(Echo)))`
    /// let handler: Box<dyn myriad::Handler> = ws.connection_handler(Echo);
    /// # drop(handler);
    /// ```
    pub fn connection_handler<H: WsHandler>(&self, user: H) -> Box<dyn Handler> {
        Box::new(ServerHandler::new(&self.shared, user))
    }

    /// The counters so far.
    ///
    /// ```
    /// let ws = myriad_ws::server::WsServer::builder().build();
    /// assert_eq!(ws.stats(), Default::default());
    /// ```
    pub fn stats(&self) -> WsStats {
        self.shared.counters.snapshot()
    }

    /// The codec settings in force.
    ///
    /// ```
    /// let ws = myriad_ws::server::WsServer::builder().max_message_size(4096).build();
    /// assert_eq!(ws.config().limits.max_message_size, 4096);
    /// ```
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }
}

/// Builds a [`WsServer`].
///
/// ```
/// use std::time::Duration;
/// use myriad_ws::server::{HttpResponse, WsServer};
/// let ws = WsServer::builder()
///     .max_message_size(64 << 10)
///     .protocols(["chat.v2", "chat.v1"])
///     .origin_check(|o| o.is_none_or(|o| o.ends_with("example.com")))
///     .legacy_drafts(true)
///     .handshake_timeout(Some(Duration::from_secs(5)))
///     .http(|req| (req.path() == "/").then(|| HttpResponse::new(200, "text/plain", &b"hi"[..])))
///     .build();
/// ```
pub struct WsServerBuilder {
    config: ServerConfig,
    handshake_timeout: Option<Duration>,
    close_timeout: Duration,
    http: Option<Arc<HttpHook>>,
    rate: Option<(u32, u32)>,
    keepalive: Option<(Duration, Duration)>,
}

impl fmt::Debug for WsServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsServerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for WsServerBuilder {
    fn default() -> Self {
        WsServerBuilder {
            config: ServerConfig {
                deflate: Some(DeflateConfig::default()),
                ..ServerConfig::default()
            },
            handshake_timeout: Some(Duration::from_secs(10)),
            close_timeout: Duration::from_secs(5),
            http: None,
            rate: None,
            keepalive: None,
        }
    }
}

impl WsServerBuilder {
    /// Replaces all codec settings at once.
    ///
    /// ```
    /// use myriad_ws::{ServerConfig, server::WsServer};
    /// let ws = WsServer::builder().config(ServerConfig::default()).build();
    /// assert!(ws.config().deflate.is_none());
    /// ```
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Largest message (after reassembly and inflation); larger ones close
    /// the connection with 1009. Also caps the frame size.
    ///
    /// ```
    /// let ws = myriad_ws::server::WsServer::builder().max_message_size(1 << 20).build();
    /// ```
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.limits.max_message_size = bytes;
        self.config.limits.max_frame_size = self.config.limits.max_frame_size.min(bytes);
        self
    }

    /// Largest frame payload (1009 above it).
    ///
    /// ```
    /// let ws = myriad_ws::server::WsServer::builder().max_frame_size(64 << 10).build();
    /// ```
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.config.limits.max_frame_size = bytes;
        self
    }

    /// Supported subprotocols; the first one the client offers that is in
    /// this list is selected.
    ///
    /// ```
    /// let ws = myriad_ws::server::WsServer::builder().protocols(["mqtt"]).build();
    /// ```
    pub fn protocols<I, S>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// permessage-deflate on (default settings) or off.
    ///
    /// ```
    /// let ws = myriad_ws::server::WsServer::builder().deflate(false).build();
    /// assert!(ws.config().deflate.is_none());
    /// ```
    pub fn deflate(mut self, on: bool) -> Self {
        self.config.deflate = on.then(DeflateConfig::default);
        self
    }

    /// permessage-deflate with these settings (`None`: off).
    ///
    /// ```
    /// use myriad_ws::DeflateConfig;
    /// let ws = myriad_ws::server::WsServer::builder()
    ///     .deflate_config(Some(DeflateConfig { threshold: 256, ..DeflateConfig::default() }))
    ///     .build();
    /// ```
    pub fn deflate_config(mut self, config: Option<DeflateConfig>) -> Self {
        self.config.deflate = config;
        self
    }

    /// Accept the legacy drafts (Hixie-76 / HyBi-00 and HyBi-07/08) too.
    ///
    /// ```
    /// let ws = myriad_ws::server::WsServer::builder().legacy_drafts(true).build();
    /// assert!(ws.config().legacy.hixie76);
    /// ```
    pub fn legacy_drafts(mut self, on: bool) -> Self {
        self.config.legacy = LegacyDrafts {
            hixie76: on,
            hybi07_08: on,
        };
        self
    }

    /// Checks the `Origin` header (`None` when absent); `false` answers 403.
    ///
    /// ```
    /// let ws = myriad_ws::server::WsServer::builder()
    ///     .origin_check(|origin| origin == Some("https://example.com"))
    ///     .build();
    /// ```
    pub fn origin_check(
        mut self,
        check: impl Fn(Option<&str>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.config.origin_check = Some(Arc::new(check) as Arc<OriginCheck>);
        self
    }

    /// Drop connections whose upgrade request is not complete after this
    /// long (`None`: never).
    ///
    /// ```
    /// use std::time::Duration;
    /// let ws = myriad_ws::server::WsServer::builder().handshake_timeout(Some(Duration::from_secs(3))).build();
    /// ```
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long to wait for the peer's answer to our close frame.
    ///
    /// ```
    /// use std::time::Duration;
    /// let ws = myriad_ws::server::WsServer::builder().close_timeout(Duration::from_secs(1)).build();
    /// ```
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Answers requests without a WebSocket upgrade (a page, a health
    /// check) on the same port; `None` from the hook answers 404. Without
    /// a hook such requests get 400.
    ///
    /// ```
    /// use myriad_ws::server::{HttpResponse, WsServer};
    /// let page = HttpResponse::new(200, "text/html", &b"<p>hello</p>"[..]);
    /// let ws = WsServer::builder()
    ///     .http(move |req| (req.path() == "/").then(|| page.clone()))
    ///     .build();
    /// ```
    pub fn http(
        mut self,
        hook: impl Fn(&HttpRequest<'_>) -> Option<HttpResponse> + Send + Sync + 'static,
    ) -> Self {
        self.http = Some(Arc::new(hook));
        self
    }

    /// At most `per_sec` data messages per second per connection, with
    /// bursts of `burst` (a token bucket); a connection that sends faster
    /// is closed with 1008 and counted in [`WsStats::rate_limited`]. Off by
    /// default (`per_sec` 0).
    ///
    /// ```
    /// let ws = myriad_ws::server::WsServer::builder().message_rate(100, 200).build();
    /// ```
    pub fn message_rate(mut self, per_sec: u32, burst: u32) -> Self {
        self.rate = (per_sec > 0).then_some((per_sec, burst.max(1)));
        self
    }

    /// Keepalive: every `ping_interval`, the server sends a ping; a peer
    /// from which nothing (its pong, or any frame) arrives within
    /// `pong_timeout` after it is dead or unreachable: its connection is
    /// closed (the handler's `on_close` gets 1006, "pong timeout") and
    /// counted in [`WsStats::pong_timeouts`]. The pings also keep a load
    /// balancer's idle timer from closing quiet connections. One timer per
    /// connection; `pong_timeout` is capped at `ping_interval`. Off by
    /// default (`None`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let ws = myriad_ws::server::WsServer::builder()
    ///     .keepalive(Some(Duration::from_secs(30)), Duration::from_secs(10))
    ///     .build();
    /// ```
    pub fn keepalive(mut self, ping_interval: Option<Duration>, pong_timeout: Duration) -> Self {
        self.keepalive = ping_interval
            .filter(|i| !i.is_zero())
            .map(|i| (i, pong_timeout.min(i).max(Duration::from_millis(1))));
        self
    }

    /// The server.
    ///
    /// ```
    /// let ws = myriad_ws::server::WsServer::builder().build();
    /// ```
    pub fn build(self) -> WsServer {
        WsServer {
            shared: Arc::new(Shared {
                config: Arc::new(self.config),
                handshake_timeout: self.handshake_timeout,
                close_timeout: self.close_timeout,
                http: self.http,
                counters: Counters::default(),
                rate: self.rate,
                keepalive: self.keepalive,
            }),
        }
    }
}

fn burst_milli(shared: &Shared) -> u32 {
    shared.rate.map_or(0, |(_, b)| b.saturating_mul(1000))
}

// ----- the per-loop spare decoders -----

/// Decoders kept per loop for connections that become busy again.
const SPARE_MAX: usize = 64;

/// Parked decoders of one loop. Boxed so that handing one to a connection
/// moves a pointer, not the decoder. (Not a `Pool`: that name is
/// `myriad::Pool`'s, the blocking-work threads.)
#[allow(clippy::vec_box)]
struct SpareDecoders(Vec<Box<Decoder>>);

thread_local! {
    static DECODERS: RefCell<SpareDecoders> = const { RefCell::new(SpareDecoders(Vec::new())) };
}

fn take_decoder() -> Option<Box<Decoder>> {
    DECODERS
        .try_with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.0.pop()))
        .ok()
        .flatten()
}

fn give_decoder(d: Box<Decoder>) {
    let _ = DECODERS.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            if p.0.len() < SPARE_MAX {
                p.0.push(d);
            }
        }
    });
}

// ----- the engine handler -----

enum Step {
    Incomplete,
    Failed,
    Done(usize),
}

/// One server connection as the engine sees it.
struct ServerHandler<H> {
    ws: ServerConnection,
    shared: Arc<Shared>,
    user: H,
    flags: u8,
    bucket: Bucket,
}

/// A connection's message-rate token bucket: thousandths of a message, and
/// when it was last filled (milliseconds since the first connection).
#[derive(Default)]
struct Bucket {
    milli: u32,
    at_ms: u32,
}

impl Bucket {
    /// Takes `n` messages; false when the bucket cannot pay for them.
    fn take(&mut self, (per_sec, burst): (u32, u32), n: u64) -> bool {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis() as u32;
        let elapsed = u64::from(now.wrapping_sub(self.at_ms));
        let cap = u64::from(burst) * 1000;
        let filled = (u64::from(self.milli) + elapsed * u64::from(per_sec)).min(cap);
        self.at_ms = now;
        let need = n.saturating_mul(1000);
        if filled < need {
            self.milli = 0;
            return false;
        }
        self.milli = (filled - need) as u32;
        true
    }
}

impl<H: WsHandler> ServerHandler<H> {
    fn new(shared: &Arc<Shared>, user: H) -> Self {
        ServerHandler {
            ws: ServerConnection::new(Arc::clone(&shared.config)),
            shared: Arc::clone(shared),
            user,
            flags: 0,
            bucket: Bucket {
                // a new connection starts with a full burst
                milli: burst_milli(shared),
                at_ms: 0,
            },
        }
    }

    fn ctx<'a, 'c>(&'a mut self, cx: &'a mut Ctx<'c>) -> (WsCtx<'a, 'c>, &'a mut H) {
        (
            WsCtx {
                tx: self.ws.sender(cx),
                close_timeout: self.shared.close_timeout,
            },
            &mut self.user,
        )
    }

    /// Tells the handler the WebSocket is over (once, only if it opened).
    fn notify(&mut self, cx: &mut Ctx<'_>, code: CloseCode, reason: &str) {
        if self.flags & (OPENED | NOTIFIED) == OPENED {
            self.flags |= NOTIFIED;
            let (mut w, user) = self.ctx(cx);
            user.on_close(&mut w, code, reason);
        }
    }

    fn handshake(&mut self, cx: &mut Ctx<'_>, data: &[u8]) -> Step {
        if let Some(http) = &self.shared.http {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(_)) = req.parse(data) {
                let upgrade = req.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("upgrade")
                        && std::str::from_utf8(h.value).is_ok_and(|v| {
                            v.split(',')
                                .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
                        })
                });
                if !upgrade {
                    let r = HttpRequest {
                        method: req.method.unwrap_or(""),
                        path: req.path.unwrap_or(""),
                        headers: req.headers,
                    };
                    let resp = http(&r).unwrap_or_else(|| {
                        HttpResponse::new(404, "text/plain; charset=utf-8", &b"not found\n"[..])
                    });
                    resp.write(cx);
                    inc(&self.shared.counters.http_responses);
                    linger(&mut self.flags, cx);
                    return Step::Failed;
                }
            }
        }
        let user = &mut self.user;
        // Behind a PROXY-protocol listener, the client from the header
        // rather than the load balancer's address.
        let peer = myriad::proxy::client_addr(cx).ok();
        let decide = |req: &crate::handshake::UpgradeRequest, chosen: Option<String>| {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Request::new(&mut headers);
            // the request parsed a moment ago; a failure leaves no headers
            let _ = parsed.parse(&data[..req.len]);
            let up = UpgradeInfo {
                target: &req.path,
                headers: parsed.headers,
                protocols: &req.protocols,
                chosen: chosen.as_deref(),
                peer,
            };
            match user.on_upgrade(&up) {
                Upgrade::Accept => Ok(chosen.clone()),
                Upgrade::AcceptProtocol(None) => Ok(None),
                Upgrade::AcceptProtocol(Some(i)) => match req.protocols.get(i) {
                    Some(p) => Ok(Some(p.clone())),
                    None => Err(500),
                },
                Upgrade::Refuse(status) => Err(status),
            }
        };
        match self.ws.handshake_with(data, cx, decide) {
            Ok(0) => Step::Incomplete,
            Ok(n) => {
                inc(&self.shared.counters.handshakes);
                cx.clear_deadline();
                self.flags |= OPENED;
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut req = httparse::Request::new(&mut headers);
                // parsed successfully a moment ago
                let _ = req.parse(&data[..n]);
                let shared = &self.shared;
                // owned: the handler may pick any offered subprotocol, and
                // the sender below borrows the connection
                let protocol = self.ws.protocol().map(str::to_owned);
                let hs = Handshake {
                    path: req.path.unwrap_or("/"),
                    headers: req.headers,
                    protocol: protocol.as_deref(),
                };
                let mut w = WsCtx {
                    tx: self.ws.sender(cx),
                    close_timeout: shared.close_timeout,
                };
                self.user.on_open(&mut w, &hs);
                self.ws.release_handshake();
                if let Some((interval, _)) = self.shared.keepalive {
                    cx.set_timer(interval, TIMER_PING);
                }
                Step::Done(n)
            }
            Err(e) => {
                if let Error::Handshake(h) = &e {
                    self.shared.counters.rejected(h);
                }
                linger(&mut self.flags, cx);
                Step::Failed
            }
        }
    }

    /// The keepalive timer: one per connection, alternating between the
    /// end of the interval (send a ping) and the ping's deadline.
    fn keepalive(&mut self, cx: &mut Ctx<'_>) {
        let Some((interval, timeout)) = self.shared.keepalive else {
            return;
        };
        if !self.ws.is_open() || self.flags & (LINGER | DONE) != 0 {
            return;
        }
        if self.flags & PONG_DUE != 0 {
            self.flags &= !PONG_DUE;
            if self.flags & AWAIT_PONG != 0 {
                inc(&self.shared.counters.pong_timeouts);
                self.notify(cx, CloseCode::ABNORMAL, "pong timeout");
                // a dead peer reads nothing: no close handshake to wait for
                cx.abort();
                return;
            }
            let rest = interval.saturating_sub(timeout);
            if !rest.is_zero() {
                cx.set_timer(rest, TIMER_PING);
                return;
            }
        }
        let (mut w, _) = self.ctx(cx);
        if w.send_ping(b"").is_ok() {
            inc(&self.shared.counters.pings_sent);
            self.flags |= AWAIT_PONG | PONG_DUE;
            cx.set_timer(timeout, TIMER_PING);
        }
    }

    fn frames(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        if self.ws.is_parked() {
            if let Some(d) = take_decoder() {
                self.ws.attach_decoder(d);
            }
        }
        if !data.is_empty() {
            // whatever the peer sends proves it alive (a pong may queue
            // behind a large message)
            self.flags &= !AWAIT_PONG;
        }
        let fed = feed_frames(
            &mut self.ws,
            &mut self.user,
            &mut self.flags,
            self.shared.close_timeout,
            cx,
            data,
        );
        if fed.messages > 0 {
            let slot = cx.loop_cx().loop_index() % MSG_SLOTS;
            self.shared.counters.messages_in[slot]
                .0
                .fetch_add(fed.messages, Ordering::Relaxed);
        }
        if let Some(code) = fed.error {
            self.shared.counters.failed(code);
            if fed.inflate_ratio {
                inc(&self.shared.counters.inflate_ratio_exceeded);
            }
            return fed.consumed;
        }
        if let Some(rate) = self.shared.rate {
            if fed.messages > 0 && self.ws.is_open() && !self.bucket.take(rate, fed.messages) {
                inc(&self.shared.counters.rate_limited);
                let (mut w, _) = self.ctx(cx);
                let _ = w.close(CloseCode::POLICY_VIOLATION, "message rate");
            }
        }
        if self.ws.is_closed() && self.flags & DONE == 0 {
            // close handshake complete: the server closes the TCP connection
            self.flags |= DONE;
            cx.close();
        }
        if let Some(d) = self.ws.park_decoder() {
            give_decoder(d);
        }
        fed.consumed
    }
}

impl<H: WsHandler> Handler for ServerHandler<H> {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        if let Some(t) = self.shared.handshake_timeout {
            // a deadline, cleared at the upgrade: an open connection keeps
            // no timer entry for it
            cx.set_deadline(t, TIMER_HANDSHAKE);
        }
    }

    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        if self.flags & (LINGER | DONE) != 0 {
            return data.len();
        }
        if self.ws.state() == ConnectionState::Handshake {
            match self.handshake(cx, data) {
                Step::Incomplete => 0,
                Step::Failed => data.len(),
                Step::Done(n) => {
                    if self.flags & (LINGER | DONE) != 0 || n == data.len() {
                        // nothing behind the request (or on_open closed)
                        if let Some(d) = self.ws.park_decoder() {
                            give_decoder(d);
                        }
                        return data.len();
                    }
                    n + self.frames(cx, &mut data[n..])
                }
            }
        } else {
            self.frames(cx, data)
        }
    }

    fn on_drain(&mut self, cx: &mut Ctx<'_>) {
        if self.flags & (OPENED | LINGER | DONE | NOTIFIED) == OPENED && self.ws.is_open() {
            let (mut w, user) = self.ctx(cx);
            user.on_drain(&mut w);
        }
    }

    fn on_eof(&mut self, cx: &mut Ctx<'_>) {
        // the peer went away (after its close frame, or without one)
        self.notify(cx, CloseCode::ABNORMAL, "");
        cx.close();
    }

    fn on_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
        match token {
            TIMER_HANDSHAKE => {
                if self.ws.state() == ConnectionState::Handshake && self.flags & LINGER == 0 {
                    inc(&self.shared.counters.handshake_timeouts);
                    cx.abort();
                }
            }
            TIMER_CLOSE => {
                if self.flags & DONE == 0 {
                    inc(&self.shared.counters.close_timeouts);
                    self.notify(cx, CloseCode::ABNORMAL, "close timeout");
                    cx.close();
                }
            }
            TIMER_LINGER => cx.close(),
            TIMER_PING => self.keepalive(cx),
            t if t & INTERNAL_TIMER != 0 => {}
            t => {
                if self.flags & (OPENED | NOTIFIED) == OPENED {
                    let (mut w, user) = self.ctx(cx);
                    user.on_timer(&mut w, t);
                }
            }
        }
    }

    fn on_shutdown(&mut self, cx: &mut Ctx<'_>) {
        if self.ws.is_open() && self.flags & LINGER == 0 {
            let (mut w, _) = self.ctx(cx);
            if w.close(CloseCode::GOING_AWAY, "server shutting down")
                .is_ok()
            {
                return;
            }
        }
        if self.ws.state() != ConnectionState::Closing {
            cx.close();
        }
    }

    fn on_close(&mut self, cx: &mut Ctx<'_>, reason: CloseReason) {
        if self.flags & (OPENED | NOTIFIED) == OPENED {
            let text = reason.to_string();
            self.notify(cx, CloseCode::ABNORMAL, &text);
        }
        if let Some(d) = self.ws.park_decoder() {
            give_decoder(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Message;

    struct Echo;
    impl WsHandler for Echo {
        fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
            let _ = cx.send(msg);
        }
    }

    /// What an idle connection costs besides the engine's slot: one box
    /// of this size (the decoder is parked in the loop's pool, the
    /// handshake results are dropped after `on_open`).
    #[test]
    fn idle_connection_state_is_small() {
        let size = std::mem::size_of::<ServerHandler<Echo>>();
        // 88 bytes: a 96-byte allocation with glibc's header and rounding
        assert!(size <= 88, "ServerHandler<Echo> is {size} bytes");
    }

    #[test]
    fn spare_decoders_are_bounded() {
        for _ in 0..SPARE_MAX + 10 {
            give_decoder(Box::new(Decoder::new(crate::frame::Role::Server)));
        }
        let n = DECODERS.with(|p| p.borrow().0.len());
        assert_eq!(n, SPARE_MAX);
        assert!(take_decoder().is_some());
    }
}
