//! The WebSocket handler API over the Myriad engine, shared by the server
//! ([`crate::server`]) and the client ([`crate::client`]).
//!
//! A [`WsHandler`] sees whole messages, borrowed ([`Message`]); its
//! [`WsCtx`] sends text, binary, pings, prepared (fan-out) messages and the
//! close frame straight into the engine's pooled outbound queue (the engine
//! context implements [`Sink`]). Everything written while the frames of one
//! read are handled leaves in one send.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use myriad::{ConnId, Ctx, LoopCx};

use crate::connection::{ConnectionState, Sender};
use crate::encoder::PreparedMessage;
use crate::error::Error;
use crate::frame::CloseCode;
use crate::sink::Sink;

/// Timer tokens with this bit set are the integration's own.
pub(crate) const INTERNAL_TIMER: u64 = 1 << 63;
/// The opening handshake took too long.
pub(crate) const TIMER_HANDSHAKE: u64 = INTERNAL_TIMER;
/// Our close frame got no answer in time.
pub(crate) const TIMER_CLOSE: u64 = INTERNAL_TIMER | 1;
/// A failed connection waited long enough for the peer's FIN.
pub(crate) const TIMER_LINGER: u64 = INTERNAL_TIMER | 2;
/// Keepalive: time to ping, or the ping's answer is due.
pub(crate) const TIMER_PING: u64 = INTERNAL_TIMER | 3;

/// The engine's connection context is a [`Sink`]: frames go straight into
/// its pooled outbound queue, shared buffers by reference.
///
/// ```
/// use myriad::{Ctx, Handler};
/// use myriad_ws::{Encoder, Role, Sink};
/// struct Hello;
/// impl Handler for Hello {
///     fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
///         // any codec function taking a Sink writes into the connection
///         Encoder::new(Role::Server).text(cx, "hello");
///         Sink::write(cx, b"raw bytes");
///         d.len()
///     }
/// }
/// ```
impl Sink for Ctx<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        Ctx::write(self, bytes);
    }

    #[inline]
    fn write_vectored(&mut self, parts: &[&[u8]]) {
        Ctx::write_vectored(self, parts);
    }

    #[inline]
    fn write_from_input(&mut self, head: &[u8], body: &[u8]) {
        Ctx::write_from_input(self, head, body);
    }

    #[inline]
    fn write_shared(&mut self, bytes: &Arc<[u8]>) {
        Ctx::write_shared(self, bytes);
    }

    #[inline]
    fn is_full(&self) -> bool {
        Ctx::is_backpressured(self)
    }
}

/// A received data message, borrowed: from the engine's receive buffer when
/// the whole message arrived in one frame (zero copy), otherwise from the
/// connection's reassembly buffer. Valid during the callback only.
///
/// ```
/// use myriad_ws::Message;
/// let m = Message::Text("hi");
/// assert_eq!(m.as_bytes(), b"hi");
/// assert!(m.is_text());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message (valid UTF-8).
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl<'a> Message<'a> {
    /// The payload bytes.
    ///
    /// ```
    /// assert_eq!(myriad_ws::Message::Binary(&[1, 2]).as_bytes(), [1, 2]);
    /// ```
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// Whether it is a text message.
    ///
    /// ```
    /// assert!(!myriad_ws::Message::Binary(b"").is_text());
    /// ```
    pub fn is_text(&self) -> bool {
        matches!(self, Message::Text(_))
    }
}

/// What the opening handshake said, shown to [`WsHandler::on_open`]: the
/// request path, the header fields (the client's request on a server, the
/// server's answer on a client) and the selected subprotocol.
///
/// ```
/// use myriad_ws::{Handshake, Message, WsCtx, WsHandler};
/// struct Greeter;
/// impl WsHandler for Greeter {
///     fn on_open(&mut self, cx: &mut WsCtx<'_, '_>, hs: &Handshake<'_>) {
///         let who = hs.header("user-agent").unwrap_or("stranger");
///         let _ = cx.send_text(&format!("hello {who}, you asked for {}", hs.path()));
///     }
///     fn on_message(&mut self, _cx: &mut WsCtx<'_, '_>, _msg: Message<'_>) {}
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Handshake<'a> {
    pub(crate) path: &'a str,
    pub(crate) headers: &'a [httparse::Header<'a>],
    pub(crate) protocol: Option<&'a str>,
}

impl<'a> Handshake<'a> {
    /// The request target (path and query).
    ///
    /// ```
    /// # fn f(hs: &myriad_ws::Handshake<'_>) {
    /// if hs.path().starts_with("/chat") { /* ... */ }
    /// # }
    /// ```
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The first header field called `name` (case-insensitive), if it is
    /// UTF-8.
    ///
    /// ```
    /// # fn f(hs: &myriad_ws::Handshake<'_>) {
    /// let origin = hs.header("Origin");
    /// # }
    /// ```
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    }

    /// Every header field, in order, as name and raw value.
    ///
    /// ```
    /// # fn f(hs: &myriad_ws::Handshake<'_>) {
    /// for (name, value) in hs.headers() {
    ///     println!("{name}: {}", String::from_utf8_lossy(value));
    /// }
    /// # }
    /// ```
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.headers.iter().map(|h| (h.name, h.value))
    }

    /// The selected subprotocol, if any.
    ///
    /// ```
    /// # fn f(hs: &myriad_ws::Handshake<'_>) {
    /// let json = hs.protocol() == Some("json");
    /// # }
    /// ```
    pub fn protocol(&self) -> Option<&'a str> {
        self.protocol
    }
}

/// An upgrade request as [`WsHandler::on_upgrade`] sees it, before the
/// server answers: the request target, every header field (cookies,
/// `Authorization`, `Origin`), the offered subprotocols and the peer.
///
/// ```
/// use myriad_ws::{Upgrade, UpgradeInfo};
/// fn auth(req: &UpgradeInfo<'_>) -> Upgrade {
///     match req.header("authorization") {
///         Some("Bearer s3cret") => Upgrade::Accept,
///         _ => Upgrade::Refuse(401),
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct UpgradeInfo<'a> {
    pub(crate) target: &'a str,
    pub(crate) headers: &'a [httparse::Header<'a>],
    pub(crate) protocols: &'a [String],
    pub(crate) chosen: Option<&'a str>,
    pub(crate) peer: Option<SocketAddr>,
}

impl<'a> UpgradeInfo<'a> {
    /// The request target: path and query (`/chat?room=1`).
    pub fn target(&self) -> &'a str {
        self.target
    }

    /// The path of the target (before any `?`).
    ///
    /// ```
    /// # fn f(req: &myriad_ws::UpgradeInfo<'_>) {
    /// if req.path() == "/chat" { /* ... */ }
    /// # }
    /// ```
    pub fn path(&self) -> &'a str {
        self.target.split_once('?').map_or(self.target, |(p, _)| p)
    }

    /// The query of the target (after the `?`), empty if none.
    pub fn query(&self) -> &'a str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }

    /// The first header field called `name` (case-insensitive), if it is
    /// UTF-8.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    }

    /// Every header field, in order, as name and raw value.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.headers.iter().map(|h| (h.name, h.value))
    }

    /// The subprotocols the client offered, in its order of preference.
    pub fn protocols(&self) -> &'a [String] {
        self.protocols
    }

    /// The subprotocol the server's configuration would select (the first
    /// offered one it lists), which [`Upgrade::Accept`] selects.
    pub fn configured_protocol(&self) -> Option<&'a str> {
        self.chosen
    }

    /// The peer's address, if the socket still has one.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }
}

/// What [`WsHandler::on_upgrade`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Upgrade {
    /// Accept, with the subprotocol the configuration selects.
    Accept,
    /// Accept with this offered subprotocol (an index into
    /// [`UpgradeInfo::protocols`]), or with none. An index out of range
    /// refuses with 500.
    AcceptProtocol(Option<usize>),
    /// Refuse with this HTTP status (400–599; anything else is sent as
    /// 500). The connection closes after the response.
    Refuse(u16),
}

/// A WebSocket connection's business logic, on a server or a client.
///
/// One value per connection, running on the connection's loop thread (no
/// locks needed). Only [`WsHandler::on_message`] is required. Pings are
/// answered automatically and the close handshake is done for you.
///
/// ```
/// use myriad_ws::{Message, WsCtx, WsHandler};
/// /// Echoes every message.
/// struct Echo;
/// impl WsHandler for Echo {
///     fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
///         let _ = cx.send(msg);
///     }
/// }
/// ```
pub trait WsHandler: 'static {
    /// Server only: a valid upgrade request arrived and the server is about
    /// to answer. Accept it (choosing the subprotocol) or refuse it with an
    /// HTTP status: this is where applications authenticate. The default
    /// accepts with the configured subprotocol.
    ///
    /// ```
    /// # use myriad_ws::{Message, Upgrade, UpgradeInfo, WsCtx, WsHandler};
    /// struct Private;
    /// impl WsHandler for Private {
    ///     fn on_upgrade(&mut self, req: &UpgradeInfo<'_>) -> Upgrade {
    ///         if req.query() == "token=42" { Upgrade::Accept } else { Upgrade::Refuse(403) }
    ///     }
    ///     fn on_message(&mut self, _: &mut WsCtx<'_, '_>, _: Message<'_>) {}
    /// }
    /// ```
    fn on_upgrade(&mut self, req: &UpgradeInfo<'_>) -> Upgrade {
        let _ = req;
        Upgrade::Accept
    }

    /// The handshake succeeded: messages can be sent from here on.
    ///
    /// ```
    /// # use myriad_ws::{Handshake, Message, WsCtx, WsHandler};
    /// struct Hi;
    /// impl WsHandler for Hi {
    ///     fn on_open(&mut self, cx: &mut WsCtx<'_, '_>, _hs: &Handshake<'_>) {
    ///         let _ = cx.send_text("welcome");
    ///     }
    ///     fn on_message(&mut self, _: &mut WsCtx<'_, '_>, _: Message<'_>) {}
    /// }
    /// ```
    fn on_open(&mut self, cx: &mut WsCtx<'_, '_>, handshake: &Handshake<'_>) {
        let _ = (cx, handshake);
    }

    /// A whole text or binary message arrived (reassembled and inflated if
    /// need be).
    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>);

    /// A ping arrived; the pong has already been queued.
    ///
    /// ```
    /// # use myriad_ws::{Message, WsCtx, WsHandler};
    /// struct CountPings(u64);
    /// impl WsHandler for CountPings {
    ///     fn on_ping(&mut self, _cx: &mut WsCtx<'_, '_>, _payload: &[u8]) { self.0 += 1; }
    ///     fn on_message(&mut self, _: &mut WsCtx<'_, '_>, _: Message<'_>) {}
    /// }
    /// ```
    fn on_ping(&mut self, cx: &mut WsCtx<'_, '_>, payload: &[u8]) {
        let _ = (cx, payload);
    }

    /// A pong arrived.
    ///
    /// ```
    /// # use myriad_ws::{Message, WsCtx, WsHandler};
    /// struct Alive(bool);
    /// impl WsHandler for Alive {
    ///     fn on_pong(&mut self, _cx: &mut WsCtx<'_, '_>, _payload: &[u8]) { self.0 = true; }
    ///     fn on_message(&mut self, _: &mut WsCtx<'_, '_>, _: Message<'_>) {}
    /// }
    /// ```
    fn on_pong(&mut self, cx: &mut WsCtx<'_, '_>, payload: &[u8]) {
        let _ = (cx, payload);
    }

    /// Everything queued has been sent (a bulk sender writes its next
    /// part here).
    ///
    /// ```
    /// # use myriad_ws::{Message, WsCtx, WsHandler};
    /// struct Stream(u32);
    /// impl WsHandler for Stream {
    ///     fn on_drain(&mut self, cx: &mut WsCtx<'_, '_>) {
    ///         if self.0 > 0 { self.0 -= 1; let _ = cx.send_binary(&[0u8; 4096]); }
    ///     }
    ///     fn on_message(&mut self, _: &mut WsCtx<'_, '_>, _: Message<'_>) {}
    /// }
    /// ```
    fn on_drain(&mut self, cx: &mut WsCtx<'_, '_>) {
        let _ = cx;
    }

    /// A timer set with [`WsCtx::set_timer`] fired.
    ///
    /// ```
    /// # use myriad_ws::{Message, WsCtx, WsHandler};
    /// # use std::time::Duration;
    /// struct Heartbeat;
    /// impl WsHandler for Heartbeat {
    ///     fn on_timer(&mut self, cx: &mut WsCtx<'_, '_>, _token: u64) {
    ///         let _ = cx.send_ping(b"hb");
    ///         cx.set_timer(Duration::from_secs(30), 0);
    ///     }
    ///     fn on_message(&mut self, _: &mut WsCtx<'_, '_>, _: Message<'_>) {}
    /// }
    /// ```
    fn on_timer(&mut self, cx: &mut WsCtx<'_, '_>, token: u64) {
        let _ = (cx, token);
    }

    /// The WebSocket is over, called once: `code` and `reason` are the
    /// peer's close frame (1005 when it carried no code), or the code we
    /// closed with after a protocol error (1002, 1007, 1009), or 1006 when
    /// the connection ended without a close handshake. On a server it is
    /// called only after `on_open`; on a client also when connecting or the
    /// handshake fails (1006, with the cause as the reason). Nothing can be
    /// sent any more; remove the connection from rooms here.
    ///
    /// ```
    /// # use myriad_ws::{CloseCode, Message, WsCtx, WsHandler};
    /// struct Log;
    /// impl WsHandler for Log {
    ///     fn on_close(&mut self, _cx: &mut WsCtx<'_, '_>, code: CloseCode, reason: &str) {
    ///         eprintln!("closed: {} {reason}", code.0);
    ///     }
    ///     fn on_message(&mut self, _: &mut WsCtx<'_, '_>, _: Message<'_>) {}
    /// }
    /// ```
    fn on_close(&mut self, cx: &mut WsCtx<'_, '_>, code: CloseCode, reason: &str) {
        let _ = (cx, code, reason);
    }
}

/// A WebSocket connection's context, handed to every [`WsHandler`]
/// callback: send messages, close, and reach the engine (timers, the loop,
/// other connections).
///
/// ```
/// use myriad_ws::{CloseCode, Message, WsCtx, WsHandler};
/// struct Strict;
/// impl WsHandler for Strict {
///     fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
///         match msg {
///             Message::Text(t) => { let _ = cx.send_text(&t.to_uppercase()); }
///             Message::Binary(_) => { let _ = cx.close(CloseCode::UNSUPPORTED_DATA, "text only"); }
///         }
///     }
/// }
/// ```
pub struct WsCtx<'a, 'c> {
    pub(crate) tx: Sender<'a, Ctx<'c>>,
    pub(crate) close_timeout: Duration,
}

impl std::fmt::Debug for WsCtx<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsCtx")
            .field("state", &self.tx.state())
            .finish()
    }
}

impl<'a, 'c> WsCtx<'a, 'c> {
    /// Sends a text message.
    ///
    /// ```
    /// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// let _ = cx.send_text("hello");
    /// # }
    /// ```
    #[inline]
    pub fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.tx.send_text(text)
    }

    /// Sends a binary message.
    ///
    /// ```
    /// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// let _ = cx.send_binary(&[1, 2, 3]);
    /// # }
    /// ```
    #[inline]
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), Error> {
        self.tx.send_binary(data)
    }

    /// Sends a message of either kind (an echo, say).
    ///
    /// ```
    /// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// let _ = cx.send(myriad_ws::Message::Text("again"));
    /// # }
    /// ```
    #[inline]
    pub fn send(&mut self, msg: Message<'_>) -> Result<(), Error> {
        match msg {
            Message::Text(t) => self.tx.send_text(t),
            Message::Binary(b) => self.tx.send_binary(b),
        }
    }

    /// Sends a ping (at most 125 bytes).
    ///
    /// ```
    /// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// let _ = cx.send_ping(b"are you there");
    /// # }
    /// ```
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.tx.send_ping(payload)
    }

    /// Sends an unsolicited pong (at most 125 bytes).
    ///
    /// ```
    /// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// let _ = cx.send_pong(b"");
    /// # }
    /// ```
    pub fn send_pong(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.tx.send_pong(payload)
    }

    /// Sends a message encoded once for many connections (servers only):
    /// the frame is queued by reference, not copied. The compressed variant
    /// is used if this connection negotiated permessage-deflate.
    ///
    /// ```
    /// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// use myriad_ws::{MessageKind, PreparedMessage};
    /// let news = PreparedMessage::new(MessageKind::Text, b"breaking");
    /// let _ = cx.send_prepared(&news);
    /// # }
    /// ```
    pub fn send_prepared(&mut self, msg: &PreparedMessage) -> Result<(), Error> {
        self.tx.send_prepared(msg)
    }

    /// Starts the close handshake with `code` and a `reason` of at most 123
    /// bytes. Nothing can be sent afterwards (the sending side of the TCP
    /// connection is shut down behind the close frame); messages already
    /// on their way are still delivered, then
    /// [`WsHandler::on_close`] reports the peer's answer. Without an answer
    /// within the close timeout the connection is dropped.
    ///
    /// ```
    /// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// let _ = cx.close(myriad_ws::CloseCode::NORMAL, "bye");
    /// # }
    /// ```
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.tx.close(code, reason)?;
        let timeout = self.close_timeout;
        let cx = self.tx.sink();
        cx.shutdown_write();
        cx.set_timer(timeout, TIMER_CLOSE);
        Ok(())
    }

    /// The connection's WebSocket state.
    ///
    /// ```
    /// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// if cx.state() == myriad_ws::ConnectionState::Open { /* ... */ }
    /// # }
    /// ```
    pub fn state(&self) -> ConnectionState {
        self.tx.state()
    }

    /// Whether messages can be sent.
    ///
    /// ```
    /// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// if cx.is_open() { let _ = cx.send_text("still here"); }
    /// # }
    /// ```
    pub fn is_open(&self) -> bool {
        self.tx.state() == ConnectionState::Open
    }

    /// Whether the peer speaks the Hixie-76 draft (text only; prepared RFC
    /// 6455 frames cannot be written to it).
    ///
    /// ```
    /// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// if !cx.is_hixie76() { let _ = cx.send_binary(b"\x00"); }
    /// # }
    /// ```
    pub fn is_hixie76(&self) -> bool {
        self.tx.is_hixie76()
    }

    /// The connection's id (valid on any thread; write to it from other
    /// connections with [`crate::send_prepared_to`]).
    ///
    /// ```
    /// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// let me = cx.id();
    /// # }
    /// ```
    pub fn id(&mut self) -> ConnId {
        self.tx.sink().id()
    }

    /// The peer's address: the client's, from the PROXY header, on a
    /// listener behind a load balancer ([`myriad::proxy::client_addr`]).
    ///
    /// ```
    /// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// if let Ok(peer) = cx.peer_addr() { println!("{peer}"); }
    /// # }
    /// ```
    pub fn peer_addr(&mut self) -> io::Result<SocketAddr> {
        // Behind a PROXY-protocol listener, the client from the header.
        myriad::proxy::client_addr(self.tx.sink())
    }

    /// Bytes queued on the connection and not yet sent (to shed load from
    /// a slow reader).
    ///
    /// ```
    /// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// if cx.queued() < 1 << 20 { let _ = cx.send_text("more"); }
    /// # }
    /// ```
    pub fn queued(&mut self) -> usize {
        self.tx.sink().queued()
    }

    /// Calls [`WsHandler::on_timer`] with `token` after `after`. The top bit
    /// of the token is reserved (cleared here).
    ///
    /// ```
    /// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// cx.set_timer(std::time::Duration::from_secs(30), 1);
    /// # }
    /// ```
    pub fn set_timer(&mut self, after: Duration, token: u64) {
        self.tx.sink().set_timer(after, token & !INTERNAL_TIMER);
    }

    /// Sets (or clears) the idle timeout: the connection is dropped when
    /// nothing arrives for that long.
    ///
    /// ```
    /// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// cx.set_idle_timeout(Some(std::time::Duration::from_secs(120)));
    /// # }
    /// ```
    pub fn set_idle_timeout(&mut self, timeout: Option<Duration>) {
        self.tx.sink().set_idle_timeout(timeout);
    }

    /// Stops reading from the peer until [`WsCtx::resume_reading`].
    ///
    /// ```
    /// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// cx.pause_reading();
    /// # }
    /// ```
    pub fn pause_reading(&mut self) {
        self.tx.sink().pause_reading();
    }

    /// Resumes reading.
    ///
    /// ```
    /// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// cx.resume_reading();
    /// # }
    /// ```
    pub fn resume_reading(&mut self) {
        self.tx.sink().resume_reading();
    }

    /// The loop-level context: write to other connections of this loop,
    /// post closures to other loops, open connections.
    ///
    /// ```
    /// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// let loops = cx.loop_cx().loop_count();
    /// # }
    /// ```
    pub fn loop_cx(&mut self) -> &mut LoopCx<'c> {
        self.tx.sink().loop_cx()
    }

    /// The engine's raw connection context (bytes written here bypass the
    /// WebSocket framing).
    ///
    /// ```
    /// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>) {
    /// let id = cx.engine().id();
    /// # }
    /// ```
    pub fn engine(&mut self) -> &mut Ctx<'c> {
        self.tx.sink()
    }
}

/// Queues a [`PreparedMessage`] on connection `id` of the current loop by
/// reference (no copy, no encoding): the uncompressed frame, which every
/// RFC 6455 server connection accepts. Returns `false` if the connection is
/// gone, closing, or on another loop (post there, or use a
/// [`crate::Room`]). Do not use it for Hixie-76 connections.
///
/// ```
/// # fn f(cx: &mut myriad_ws::WsCtx<'_, '_>, others: &[myriad::ConnId]) {
/// use myriad_ws::{send_prepared_to, MessageKind, PreparedMessage};
/// let msg = PreparedMessage::new(MessageKind::Text, b"to all of you");
/// for &id in others {
///     send_prepared_to(cx.loop_cx(), id, &msg);
/// }
/// # }
/// ```
pub fn send_prepared_to(lcx: &mut LoopCx<'_>, id: ConnId, msg: &PreparedMessage) -> bool {
    lcx.write_shared_to(id, msg.shared_bytes())
}
