//! Connection-level state machines: handshake, open, closing, closed.

use std::fmt;
use std::sync::Arc;

use crate::decoder::{Decoder, DecoderConfig, Event};
use crate::deflate::{DeflateConfig, DeflateParams, Deflater, InflateMode, Inflater};
use crate::encoder::{Encoder, PreparedMessage};
use crate::error::{Error, HandshakeError};
use crate::frame::{CloseCode, MaskGen, MessageKind, Role};
use crate::handshake::{
    self, generate_key, parse_request, parse_response, write_accept, write_rejection,
    ClientRequest, LegacyDrafts, UpgradeRequest, Version,
};
use crate::legacy::{self, Hixie76Decoder};
use crate::sink::Sink;

/// Where a connection is in its life.
///
/// ```
/// use myriad_ws::{ConnectionState, ServerConnection, ServerConfig};
/// let conn = ServerConnection::new(ServerConfig::default().into());
/// assert_eq!(conn.state(), ConnectionState::Handshake);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Waiting for (server) or sending and waiting for (client) the opening
    /// handshake.
    Handshake,
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's; received messages are
    /// still delivered, nothing more can be sent.
    Closing,
    /// The close handshake is complete, or the connection failed (a close
    /// frame or HTTP error has been written if possible). The transport
    /// should be closed once the outbound bytes are flushed (a client may
    /// wait for the server to close first).
    Closed,
}

/// A check of the `Origin` header (`None` when absent); `false` answers 403.
pub type OriginCheck = dyn Fn(Option<&str>) -> bool + Send + Sync;

/// Settings of a WebSocket server, shared by all its connections (wrap in an
/// [`Arc`]; `ServerConfig::default().into()` does).
///
/// ```
/// use std::sync::Arc;
/// use myriad_ws::{DeflateConfig, ServerConfig};
/// let cfg = ServerConfig {
///     protocols: vec!["chat".into()],
///     deflate: Some(DeflateConfig::default()),
///     origin_check: Some(Arc::new(|o: Option<&str>| o == Some("https://example.com"))),
///     ..ServerConfig::default()
/// };
/// let shared: Arc<ServerConfig> = cfg.into();
/// ```
#[derive(Clone)]
pub struct ServerConfig {
    /// Frame and message limits.
    pub limits: DecoderConfig,
    /// Largest request header (431 above it).
    pub max_header_size: usize,
    /// Supported subprotocols; the first one the client offers (in its
    /// order) that is in this list is selected.
    pub protocols: Vec<String>,
    /// permessage-deflate, if offered by the client (RFC 6455 clients only).
    pub deflate: Option<DeflateConfig>,
    /// Origin check hook.
    pub origin_check: Option<Arc<OriginCheck>>,
    /// Legacy drafts accepted (all off by default).
    pub legacy: LegacyDrafts,
    /// Whether the transport is TLS (Hixie-76 `wss://` location).
    pub secure: bool,
    /// Split outgoing messages into frames of at most this size (0: never).
    pub max_fragment_size: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: DecoderConfig::default(),
            max_header_size: handshake::DEFAULT_MAX_HEADER_SIZE,
            protocols: Vec::new(),
            deflate: None,
            origin_check: None,
            legacy: LegacyDrafts::default(),
            secure: false,
            max_fragment_size: 0,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("limits", &self.limits)
            .field("max_header_size", &self.max_header_size)
            .field("protocols", &self.protocols)
            .field("deflate", &self.deflate)
            .field("origin_check", &self.origin_check.is_some())
            .field("legacy", &self.legacy)
            .field("secure", &self.secure)
            .field("max_fragment_size", &self.max_fragment_size)
            .finish()
    }
}

/// Settings of a WebSocket client connection.
///
/// ```
/// use myriad_ws::{ClientConfig, DeflateConfig};
/// let cfg = ClientConfig {
///     protocols: vec!["chat".into()],
///     deflate: Some(DeflateConfig::default()),
///     mask_seed: Some(42), // reproducible masks
///     ..ClientConfig::default()
/// };
/// ```
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Frame and message limits.
    pub limits: DecoderConfig,
    /// Largest response header.
    pub max_header_size: usize,
    /// Subprotocols to offer, in order of preference.
    pub protocols: Vec<String>,
    /// permessage-deflate to offer.
    pub deflate: Option<DeflateConfig>,
    /// `Origin` to send.
    pub origin: Option<String>,
    /// Extra request header fields.
    pub headers: Vec<(String, String)>,
    /// Seed of the masking key generator (random if `None`).
    pub mask_seed: Option<u64>,
    /// Split outgoing messages into frames of at most this size (0: never).
    pub max_fragment_size: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            limits: DecoderConfig::default(),
            max_header_size: handshake::DEFAULT_MAX_HEADER_SIZE,
            protocols: Vec::new(),
            deflate: None,
            origin: None,
            headers: Vec::new(),
            mask_seed: None,
            max_fragment_size: 0,
        }
    }
}

#[derive(Debug)]
enum Rx {
    None,
    /// RFC 6455 framing with the decoder detached (idle connection); the
    /// inflater's settings if permessage-deflate is on (a parked decoder
    /// never has a compression context).
    Parked(Option<InflateMode>),
    Rfc(Box<Decoder>),
    Hixie(Box<Hixie76Decoder>),
}

#[derive(Debug)]
struct Tx {
    enc: Encoder,
    hixie: bool,
    state: ConnectionState,
}

impl Tx {
    fn check_open(&self) -> Result<(), Error> {
        if self.state == ConnectionState::Open {
            Ok(())
        } else {
            Err(Error::NotOpen)
        }
    }

    fn message<S: Sink + ?Sized>(
        &mut self,
        sink: &mut S,
        kind: MessageKind,
        payload: &[u8],
    ) -> Result<(), Error> {
        self.check_open()?;
        if self.hixie {
            let text = match kind {
                MessageKind::Text => {
                    std::str::from_utf8(payload).map_err(|_| Error::InvalidArgument("not UTF-8"))?
                }
                MessageKind::Binary => return Err(Error::Unsupported),
            };
            legacy::write_text(sink, text);
        } else {
            self.enc.message(sink, kind, payload);
        }
        Ok(())
    }

    fn ping<S: Sink + ?Sized>(
        &mut self,
        sink: &mut S,
        payload: &[u8],
        pong: bool,
    ) -> Result<(), Error> {
        self.check_open()?;
        if self.hixie {
            return Err(Error::Unsupported);
        }
        if pong {
            self.enc.pong(sink, payload)
        } else {
            self.enc.ping(sink, payload)
        }
    }

    fn prepared<S: Sink + ?Sized>(
        &mut self,
        sink: &mut S,
        msg: &PreparedMessage,
    ) -> Result<(), Error> {
        self.check_open()?;
        if self.hixie {
            return Err(Error::Unsupported);
        }
        self.enc.prepared(sink, msg)
    }

    fn close<S: Sink + ?Sized>(
        &mut self,
        sink: &mut S,
        code: CloseCode,
        reason: &str,
    ) -> Result<(), Error> {
        self.check_open()?;
        if self.hixie {
            legacy::write_close(sink);
        } else {
            self.enc.close(sink, Some((code, reason)))?;
        }
        self.state = ConnectionState::Closing;
        Ok(())
    }
}

/// Sends on a connection from inside its event callback (for instance to
/// echo a message borrowed from the receive buffer, without copying it).
///
/// ```
/// use myriad_ws::{Event, ServerConnection, ServerConfig, Sender};
/// fn echo<S: myriad_ws::Sink>(ev: Event<'_>, tx: &mut Sender<'_, S>) {
///     match ev {
///         Event::Text(t) => { let _ = tx.send_text(t); }
///         Event::Binary(b) => { let _ = tx.send_binary(b); }
///         _ => {}
///     }
/// }
/// # let _ = echo::<Vec<u8>>;
/// ```
pub struct Sender<'a, S: Sink + ?Sized> {
    tx: &'a mut Tx,
    sink: &'a mut S,
}

impl<S: Sink + ?Sized> fmt::Debug for Sender<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("state", &self.tx.state)
            .finish()
    }
}

impl<S: Sink + ?Sized> Sender<'_, S> {
    /// The connection's state.
    pub fn state(&self) -> ConnectionState {
        self.tx.state
    }

    /// A shorter-lived `Sender` on the same connection and sink (to hand to
    /// a function that takes a `Sender` by value).
    ///
    /// ```
    /// use myriad_ws::{Sender, Sink};
    /// fn greet<S: Sink>(mut tx: Sender<'_, S>) { let _ = tx.send_text("hi"); }
    /// fn twice<S: Sink>(tx: &mut Sender<'_, S>) {
    ///     greet(tx.reborrow());
    ///     greet(tx.reborrow());
    /// }
    /// # let _ = twice::<Vec<u8>>;
    /// ```
    pub fn reborrow(&mut self) -> Sender<'_, S> {
        Sender {
            tx: &mut *self.tx,
            sink: &mut *self.sink,
        }
    }

    /// The sink the sender writes into (the engine's connection context,
    /// for instance).
    ///
    /// ```
    /// use myriad_ws::{ServerConfig, ServerConnection};
    /// let mut conn = ServerConnection::new(ServerConfig::default().into());
    /// let mut out = Vec::new();
    /// conn.sender(&mut out).sink().push(1);
    /// assert_eq!(out, [1]);
    /// ```
    pub fn sink(&mut self) -> &mut S {
        self.sink
    }

    /// Whether the connection speaks the Hixie-76 draft (text messages
    /// only, its own framing: frames made for RFC 6455 must not be written
    /// to it).
    ///
    /// ```
    /// use myriad_ws::{ServerConfig, ServerConnection};
    /// let mut conn = ServerConnection::new(ServerConfig::default().into());
    /// let mut out = Vec::new();
    /// assert!(!conn.sender(&mut out).is_hixie76());
    /// ```
    pub fn is_hixie76(&self) -> bool {
        self.tx.hixie
    }

    /// Sends a text message.
    pub fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.tx
            .message(self.sink, MessageKind::Text, text.as_bytes())
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), Error> {
        self.tx.message(self.sink, MessageKind::Binary, data)
    }

    /// Sends a ping (at most 125 bytes).
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.tx.ping(self.sink, payload, false)
    }

    /// Sends an unsolicited pong (at most 125 bytes).
    pub fn send_pong(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.tx.ping(self.sink, payload, true)
    }

    /// Sends a message encoded once for many connections (servers only).
    pub fn send_prepared(&mut self, msg: &PreparedMessage) -> Result<(), Error> {
        self.tx.prepared(self.sink, msg)
    }

    /// Starts the close handshake.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.tx.close(self.sink, code, reason)
    }
}

/// Receiving and sending once the handshake is done; shared by both sides.
#[derive(Debug)]
struct Core {
    rx: Rx,
    tx: Tx,
}

impl Core {
    fn new(role: Role, masks: MaskGen) -> Self {
        Core {
            rx: Rx::None,
            tx: Tx {
                enc: Encoder::with_mask_gen(role, masks),
                hixie: false,
                state: ConnectionState::Handshake,
            },
        }
    }

    /// Detaches an idle RFC 6455 decoder (see `park_decoder` on the
    /// connections).
    fn park_decoder(&mut self) -> Option<Box<Decoder>> {
        match &self.rx {
            Rx::Rfc(d) if d.is_idle() => {}
            _ => return None,
        }
        match std::mem::replace(&mut self.rx, Rx::Parked(None)) {
            Rx::Rfc(mut d) => {
                self.rx = Rx::Parked(d.take_inflate_mode());
                Some(d)
            }
            other => {
                self.rx = other;
                None
            }
        }
    }

    fn is_parked(&self) -> bool {
        matches!(self.rx, Rx::Parked(_))
    }

    /// Gives a parked connection a new decoder before frames are fed.
    fn unpark(&mut self, role: Role, limits: DecoderConfig) {
        if let Rx::Parked(mode) = self.rx {
            let mut dec = Decoder::with_config(role, limits);
            dec.set_inflate_mode(mode);
            self.rx = Rx::Rfc(Box::new(dec));
        }
    }

    /// Gives a parked connection `dec` (reset for it) before frames are fed.
    fn attach(&mut self, mut dec: Box<Decoder>, role: Role, limits: DecoderConfig) {
        if let Rx::Parked(mode) = self.rx {
            dec.reset(role, limits);
            dec.set_inflate_mode(mode);
            self.rx = Rx::Rfc(dec);
        }
    }

    /// Whether the connection holds a zlib stream (a compressor or
    /// decompressor with its window) right now.
    fn holds_zlib_stream(&self) -> bool {
        let rx = match &self.rx {
            Rx::Rfc(d) => d.holds_zlib_stream(),
            _ => false,
        };
        rx || self.tx.enc.deflater().is_some_and(Deflater::holds_stream)
    }

    fn feed_frames<S, F>(
        &mut self,
        input: &mut [u8],
        sink: &mut S,
        on_event: &mut F,
    ) -> Result<usize, Error>
    where
        S: Sink + ?Sized,
        F: FnMut(Event<'_>, &mut Sender<'_, S>),
    {
        if self.tx.state == ConnectionState::Closed {
            return Ok(input.len());
        }
        let Core { rx, tx } = self;
        // set once the replies queued by the events passed the sink's
        // high-water mark: decoding stops at the next frame boundary
        let stop = std::cell::Cell::new(false);
        let mut handler = |ev: Event<'_>| {
            match ev {
                Event::Ping(p) if tx.state == ConnectionState::Open => {
                    // a valid ping payload is at most 125 bytes: cannot fail
                    let _ = tx.enc.pong(sink, p);
                }
                Event::Close { code, .. } => {
                    if tx.state == ConnectionState::Open {
                        if tx.hixie {
                            legacy::write_close(sink);
                        } else {
                            // echo the code; a received code is valid
                            let _ = tx.enc.close(sink, code.map(|c| (c, "")));
                        }
                    }
                    tx.state = ConnectionState::Closed;
                }
                _ => {}
            }
            on_event(ev, &mut Sender { tx, sink });
            if sink.is_full() {
                stop.set(true);
            }
        };
        let r = match rx {
            Rx::Rfc(d) => d.feed_until(input, &mut handler, &stop),
            Rx::Hixie(d) => d.feed_until(input, &mut handler, &stop),
            // ServerConnection::feed attaches a decoder before feeding
            Rx::None | Rx::Parked(_) => Ok(input.len()),
        };
        match r {
            Ok(n) => Ok(n),
            Err(e) => {
                if tx.state == ConnectionState::Open {
                    if tx.hixie {
                        legacy::write_close(sink);
                    } else {
                        let _ = tx.enc.close(sink, Some((e.close_code(), e.reason())));
                    }
                }
                tx.state = ConnectionState::Closed;
                Err(e.into())
            }
        }
    }
}

/// The server side of one WebSocket connection, from the upgrade request to
/// the end of the close handshake.
///
/// `feed` takes the received bytes (`&mut`, for in-place unmasking), a
/// [`Sink`] for the bytes to send (the 101 answer or an HTTP error, pongs,
/// close echoes, and whatever the callback sends) and a callback for each
/// [`Event`], and returns how many bytes were consumed; keep the rest and
/// show it again in front of the next read.
///
/// ```
/// use myriad_ws::{Event, ServerConfig, ServerConnection};
/// let mut conn = ServerConnection::new(ServerConfig::default().into());
/// let mut input = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
/// Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec();
/// // a masked ping "x" right behind the request
/// input.extend_from_slice(&[0x89, 0x81, 0, 0, 0, 0, b'x']);
/// let mut out = Vec::new();
/// let n = conn.feed(&mut input, &mut out, &mut |ev, _tx| {
///     assert_eq!(ev, Event::Ping(b"x"));
/// }).unwrap();
/// assert_eq!(n, input.len());
/// assert!(out.starts_with(b"HTTP/1.1 101 "));
/// assert!(out.ends_with(&[0x8A, 1, b'x'])); // the automatic pong
/// ```
#[derive(Debug)]
pub struct ServerConnection {
    config: Arc<ServerConfig>,
    core: Core,
    accepted: Option<Box<Accepted>>,
}

/// What the handshake settled (boxed: an idle connection stays small).
#[derive(Debug)]
struct Accepted {
    request: UpgradeRequest,
    protocol: Option<String>,
    deflate: Option<DeflateParams>,
}

impl ServerConnection {
    /// A connection waiting for its upgrade request.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        ServerConnection {
            config,
            core: Core::new(Role::Server, MaskGen::from_seed(0)),
            accepted: None,
        }
    }

    /// The connection's state.
    pub fn state(&self) -> ConnectionState {
        self.core.tx.state
    }

    /// Whether messages can be sent.
    pub fn is_open(&self) -> bool {
        self.state() == ConnectionState::Open
    }

    /// Whether the connection is over (close the transport after flushing).
    pub fn is_closed(&self) -> bool {
        self.state() == ConnectionState::Closed
    }

    /// The accepted upgrade request (path, host, origin, version...).
    pub fn request(&self) -> Option<&UpgradeRequest> {
        self.accepted.as_ref().map(|a| &a.request)
    }

    /// The selected subprotocol.
    pub fn protocol(&self) -> Option<&str> {
        self.accepted.as_ref().and_then(|a| a.protocol.as_deref())
    }

    /// The negotiated permessage-deflate parameters.
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.accepted.as_ref().and_then(|a| a.deflate.as_ref())
    }

    /// Feeds received bytes; see the type's documentation. Errors have
    /// already been answered on `sink` (HTTP error or close frame); the
    /// connection is then [`ConnectionState::Closed`].
    pub fn feed<S, F>(
        &mut self,
        input: &mut [u8],
        sink: &mut S,
        on_event: &mut F,
    ) -> Result<usize, Error>
    where
        S: Sink + ?Sized,
        F: FnMut(Event<'_>, &mut Sender<'_, S>),
    {
        let mut n = 0;
        if self.core.tx.state == ConnectionState::Handshake {
            n = self.handshake(input, sink)?;
            if n == 0 {
                return Ok(0);
            }
        }
        self.core.unpark(Role::Server, self.config.limits);
        let m = self.core.feed_frames(&mut input[n..], sink, on_event)?;
        Ok(n + m)
    }

    /// Runs only the opening handshake: parses the upgrade request at the
    /// start of `input` and writes the answer (101, or an HTTP error) into
    /// `sink`. Returns 0 while the request is incomplete, else the length
    /// of the request, which is consumed; the bytes after it are frames for
    /// [`ServerConnection::feed`]. Called by `feed` itself; call it directly
    /// to act between the handshake and the first message (the engine
    /// integration calls the handler's `on_open` there). After the
    /// handshake it returns 0 and does nothing.
    ///
    /// ```
    /// use myriad_ws::{ServerConfig, ServerConnection};
    /// let mut conn = ServerConnection::new(ServerConfig::default().into());
    /// let req = b"GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    /// Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    /// let mut out = Vec::new();
    /// assert_eq!(conn.handshake(&req[..10], &mut out), Ok(0));
    /// assert_eq!(conn.handshake(req, &mut out), Ok(req.len()));
    /// assert_eq!(conn.request().unwrap().path, "/x");
    /// ```
    pub fn handshake<S: Sink + ?Sized>(
        &mut self,
        input: &[u8],
        sink: &mut S,
    ) -> Result<usize, Error> {
        self.handshake_with(input, sink, |_, chosen| Ok(chosen))
    }

    /// [`ServerConnection::handshake`] with a last word for the caller: once
    /// the request is complete and valid (and the origin check passed),
    /// `decide` sees it and the subprotocol the configuration would pick,
    /// and answers with the subprotocol to accept (`Ok`, any offered one or
    /// none) or an HTTP status to refuse with (`Err`, 400–599; anything
    /// else is answered 500). This is where an application authenticates.
    ///
    /// # Errors
    ///
    /// As [`ServerConnection::handshake`]; a refusal is
    /// [`HandshakeError::Refused`], answered with its status.
    ///
    /// ```
    /// use myriad_ws::{Error, HandshakeError, ServerConfig, ServerConnection};
    /// let mut conn = ServerConnection::new(ServerConfig::default().into());
    /// let req = b"GET /secret HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
    ///     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    ///     Sec-WebSocket-Version: 13\r\n\r\n";
    /// let mut out = Vec::new();
    /// let r = conn.handshake_with(req, &mut out, |req, _| {
    ///     if req.path == "/secret" { Err(401) } else { Ok(None) }
    /// });
    /// assert_eq!(r, Err(Error::Handshake(HandshakeError::Refused(401))));
    /// assert!(out.starts_with(b"HTTP/1.1 401 "));
    /// ```
    pub fn handshake_with<S: Sink + ?Sized>(
        &mut self,
        input: &[u8],
        sink: &mut S,
        decide: impl FnOnce(&UpgradeRequest, Option<String>) -> Result<Option<String>, u16>,
    ) -> Result<usize, Error> {
        if self.core.tx.state != ConnectionState::Handshake {
            return Ok(0);
        }
        let cfg = Arc::clone(&self.config);
        let req = match parse_request(input, cfg.max_header_size, cfg.legacy) {
            Ok(None) => return Ok(0),
            Ok(Some(r)) => r,
            Err(e) => return Err(self.reject(sink, e)),
        };
        if let Some(check) = &cfg.origin_check {
            if !check(req.origin.as_deref()) {
                return Err(self.reject(sink, HandshakeError::OriginRefused));
            }
        }
        let chosen = req
            .protocols
            .iter()
            .find(|p| cfg.protocols.iter().any(|s| s == *p))
            .cloned();
        let protocol = match decide(&req, chosen) {
            Ok(Some(p)) if !req.protocols.contains(&p) => {
                // a subprotocol the client did not offer would make it fail
                return Err(self.reject(sink, HandshakeError::Refused(500)));
            }
            Ok(p) => p,
            Err(status) => {
                let status = if (400..600).contains(&status) {
                    status
                } else {
                    500
                };
                return Err(self.reject(sink, HandshakeError::Refused(status)));
            }
        };
        let deflate = match (&cfg.deflate, &req.extensions, req.version) {
            (Some(dc), Some(ext), Version::Rfc6455) => DeflateParams::negotiate(ext, dc),
            _ => None,
        };
        let ext_header = deflate.map(|p| p.response_header());
        write_accept(
            sink,
            &req,
            protocol.as_deref(),
            ext_header.as_deref(),
            cfg.secure,
        );

        if req.version == Version::Hixie76 {
            self.core.rx = Rx::Hixie(Box::new(Hixie76Decoder::new(cfg.limits.max_message_size)));
            self.core.tx.hixie = true;
        } else {
            // No decoder until frames arrive (`feed` attaches one, or the
            // caller one from its pool): nothing is allocated for a
            // connection that stays idle after its handshake. Without
            // context takeover the inflater holds no stream between
            // messages either, so only its settings are kept.
            let inflater = deflate.map(|p| Inflater::new(Role::Server, &p));
            self.core.rx = match inflater {
                Some(i) if i.holds_context() => {
                    let mut dec = Decoder::with_config(Role::Server, cfg.limits);
                    dec.set_deflate(deflate.as_ref());
                    Rx::Rfc(Box::new(dec))
                }
                i => Rx::Parked(i.map(|i| i.mode())),
            };
            if let (Some(p), Some(dc)) = (&deflate, &cfg.deflate) {
                self.core.tx.enc.set_deflater(Some(Deflater::new(
                    Role::Server,
                    p,
                    dc.level,
                    dc.threshold,
                )));
            }
            self.core
                .tx
                .enc
                .set_max_fragment_size(cfg.max_fragment_size);
        }
        self.core.tx.state = ConnectionState::Open;
        let n = req.len;
        self.accepted = Some(Box::new(Accepted {
            request: req,
            protocol,
            deflate,
        }));
        Ok(n)
    }

    /// Drops what the handshake settled ([`ServerConnection::request`],
    /// [`ServerConnection::protocol`] and [`ServerConnection::deflate`]
    /// return `None` afterwards) to keep a long-lived connection small;
    /// sending and receiving are unaffected.
    ///
    /// ```
    /// use myriad_ws::{ServerConfig, ServerConnection};
    /// let mut conn = ServerConnection::new(ServerConfig::default().into());
    /// conn.release_handshake();
    /// assert!(conn.request().is_none());
    /// ```
    pub fn release_handshake(&mut self) {
        self.accepted = None;
    }

    /// Detaches the frame decoder if it is idle ([`Decoder::is_idle`]: no
    /// message in progress, no compression context), so that an idle
    /// connection holds none. Give it to another connection with
    /// [`ServerConnection::attach_decoder`], or drop it; `feed` makes a new
    /// one if none is attached.
    ///
    /// ```
    /// use myriad_ws::{ServerConfig, ServerConnection};
    /// let mut conn = ServerConnection::new(ServerConfig::default().into());
    /// let req = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    /// Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    /// let mut out = Vec::new();
    /// conn.handshake(req, &mut out).unwrap();
    /// assert!(conn.is_parked()); // no decoder until frames arrive
    /// let mut ping = [0x89, 0x80, 0, 0, 0, 0];
    /// conn.feed(&mut ping, &mut out, &mut |_, _| {}).unwrap();
    /// let dec = conn.park_decoder().expect("idle");
    /// assert!(conn.park_decoder().is_none());
    /// conn.attach_decoder(dec);
    /// ```
    pub fn park_decoder(&mut self) -> Option<Box<Decoder>> {
        self.core.park_decoder()
    }

    /// Whether the connection has no decoder attached (parked).
    ///
    /// ```
    /// use myriad_ws::{ServerConfig, ServerConnection};
    /// let conn = ServerConnection::new(ServerConfig::default().into());
    /// assert!(!conn.is_parked());
    /// ```
    pub fn is_parked(&self) -> bool {
        self.core.is_parked()
    }

    /// Attaches a decoder (reset for this connection) to a parked
    /// connection; does nothing otherwise.
    ///
    /// ```
    /// use myriad_ws::{Decoder, Role, ServerConfig, ServerConnection};
    /// let mut conn = ServerConnection::new(ServerConfig::default().into());
    /// conn.attach_decoder(Box::new(Decoder::new(Role::Server))); // not parked: ignored
    /// assert!(!conn.is_parked());
    /// ```
    pub fn attach_decoder(&mut self, dec: Box<Decoder>) {
        self.core.attach(dec, Role::Server, self.config.limits);
    }

    /// Whether the connection holds a zlib stream now (permessage-deflate
    /// with context takeover, or a message in progress). With the default
    /// [`DeflateConfig`] an idle connection holds none.
    ///
    /// ```
    /// use myriad_ws::{DeflateConfig, ServerConfig, ServerConnection};
    /// let cfg = ServerConfig { deflate: Some(DeflateConfig::default()), ..ServerConfig::default() };
    /// let mut conn = ServerConnection::new(cfg.into());
    /// let req = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    /// Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
    /// Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
    /// let mut out = Vec::new();
    /// conn.handshake(req, &mut out).unwrap();
    /// conn.send_text(&mut out, &"hello ".repeat(100)).unwrap(); // compressed
    /// assert!(!conn.holds_zlib_stream());
    /// assert!(conn.is_parked());
    /// ```
    pub fn holds_zlib_stream(&self) -> bool {
        self.core.holds_zlib_stream()
    }

    fn reject<S: Sink + ?Sized>(&mut self, sink: &mut S, e: HandshakeError) -> Error {
        write_rejection(sink, &e, self.config.legacy);
        self.core.tx.state = ConnectionState::Closed;
        Error::Handshake(e)
    }

    /// A [`Sender`] writing into `sink`.
    pub fn sender<'a, S: Sink + ?Sized>(&'a mut self, sink: &'a mut S) -> Sender<'a, S> {
        Sender {
            tx: &mut self.core.tx,
            sink,
        }
    }

    /// Sends a text message.
    pub fn send_text<S: Sink + ?Sized>(&mut self, sink: &mut S, text: &str) -> Result<(), Error> {
        self.sender(sink).send_text(text)
    }

    /// Sends a binary message.
    pub fn send_binary<S: Sink + ?Sized>(
        &mut self,
        sink: &mut S,
        data: &[u8],
    ) -> Result<(), Error> {
        self.sender(sink).send_binary(data)
    }

    /// Sends a ping.
    pub fn send_ping<S: Sink + ?Sized>(
        &mut self,
        sink: &mut S,
        payload: &[u8],
    ) -> Result<(), Error> {
        self.sender(sink).send_ping(payload)
    }

    /// Sends a [`PreparedMessage`].
    pub fn send_prepared<S: Sink + ?Sized>(
        &mut self,
        sink: &mut S,
        msg: &PreparedMessage,
    ) -> Result<(), Error> {
        self.sender(sink).send_prepared(msg)
    }

    /// Starts the close handshake with `code` and `reason` (at most 123
    /// bytes).
    pub fn close<S: Sink + ?Sized>(
        &mut self,
        sink: &mut S,
        code: CloseCode,
        reason: &str,
    ) -> Result<(), Error> {
        self.sender(sink).close(code, reason)
    }

    /// Releases receive-side memory held between messages (idle
    /// connections).
    pub fn release_memory(&mut self) {
        if let Rx::Rfc(d) = &mut self.core.rx {
            d.release_memory();
        }
    }
}

/// The client side of one WebSocket connection.
///
/// [`ClientConnection::start`] writes the upgrade request; `feed` then reads
/// the answer and the frames (same contract as [`ServerConnection::feed`]).
///
/// ```
/// use myriad_ws::{ClientConfig, ClientConnection, ConnectionState};
/// let mut conn = ClientConnection::new(ClientConfig::default(), "example.com", "/");
/// let mut out = Vec::new();
/// conn.start(&mut out);
/// assert!(out.starts_with(b"GET / HTTP/1.1\r\nHost: example.com\r\n"));
/// assert_eq!(conn.state(), ConnectionState::Handshake);
/// ```
#[derive(Debug)]
pub struct ClientConnection {
    config: ClientConfig,
    core: Core,
    host: String,
    path: String,
    key: String,
    started: bool,
    protocol: Option<String>,
    deflate: Option<DeflateParams>,
}

impl ClientConnection {
    /// A client connection to `host` (the `Host` header) for `path`.
    pub fn new(config: ClientConfig, host: &str, path: &str) -> Self {
        let mut masks = match config.mask_seed {
            Some(s) => MaskGen::from_seed(s),
            None => MaskGen::new(),
        };
        let key = generate_key(&mut masks);
        ClientConnection {
            config,
            core: Core::new(Role::Client, masks),
            host: host.to_owned(),
            path: path.to_owned(),
            key,
            started: false,
            protocol: None,
            deflate: None,
        }
    }

    /// The request path.
    ///
    /// ```
    /// use myriad_ws::{ClientConfig, ClientConnection};
    /// let conn = ClientConnection::new(ClientConfig::default(), "h", "/chat");
    /// assert_eq!(conn.path(), "/chat");
    /// ```
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The `Sec-WebSocket-Key` sent.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Writes the upgrade request (once; later calls write nothing).
    pub fn start<S: Sink + ?Sized>(&mut self, sink: &mut S) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        let offer = self
            .config
            .deflate
            .as_ref()
            .map(DeflateConfig::client_offer);
        ClientRequest {
            host: &self.host,
            path: &self.path,
            key: &self.key,
            origin: self.config.origin.as_deref(),
            protocols: &self.config.protocols,
            extensions: offer.as_deref(),
            headers: &self.config.headers,
        }
        .write(sink);
    }

    /// The connection's state.
    pub fn state(&self) -> ConnectionState {
        self.core.tx.state
    }

    /// Whether messages can be sent.
    pub fn is_open(&self) -> bool {
        self.state() == ConnectionState::Open
    }

    /// Whether the connection is over.
    pub fn is_closed(&self) -> bool {
        self.state() == ConnectionState::Closed
    }

    /// The subprotocol the server selected.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The negotiated permessage-deflate parameters.
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.deflate.as_ref()
    }

    /// Feeds received bytes (the handshake answer, then frames).
    pub fn feed<S, F>(
        &mut self,
        input: &mut [u8],
        sink: &mut S,
        on_event: &mut F,
    ) -> Result<usize, Error>
    where
        S: Sink + ?Sized,
        F: FnMut(Event<'_>, &mut Sender<'_, S>),
    {
        let mut n = 0;
        if self.core.tx.state == ConnectionState::Handshake {
            n = self.handshake(input)?;
            if n == 0 {
                return Ok(0);
            }
        }
        if n < input.len() {
            self.core.unpark(Role::Client, self.config.limits);
        }
        let m = self.core.feed_frames(&mut input[n..], sink, on_event)?;
        Ok(n + m)
    }

    /// Detaches the frame decoder of an idle connection (no message in
    /// progress, no permessage-deflate context) and returns it; the next
    /// [`ClientConnection::feed`] with bytes makes a new one. A client that
    /// holds many idle connections (a load generator) saves the decoder's
    /// memory per connection this way. `None` (and nothing changes) when
    /// the decoder is busy or already parked.
    ///
    /// ```
    /// use myriad_ws::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
    /// let mut client = ClientConnection::new(ClientConfig::default(), "h", "/");
    /// let mut server = ServerConnection::new(ServerConfig::default().into());
    /// let (mut req, mut resp) = (Vec::new(), Vec::new());
    /// client.start(&mut req);
    /// server.handshake(&req, &mut resp).unwrap();
    /// assert_eq!(client.handshake(&resp), Ok(resp.len()));
    /// assert!(client.park_decoder().is_some());
    /// assert!(client.is_parked());
    /// let mut pong = [0x8A, 0x00];
    /// let mut out = Vec::new();
    /// client.feed(&mut pong, &mut out, &mut |_, _| {}).unwrap();
    /// assert!(!client.is_parked());
    /// ```
    pub fn park_decoder(&mut self) -> Option<Box<Decoder>> {
        self.core.park_decoder()
    }

    /// Whether the frame decoder is detached (see
    /// [`ClientConnection::park_decoder`]).
    ///
    /// ```
    /// use myriad_ws::{ClientConfig, ClientConnection};
    /// let client = ClientConnection::new(ClientConfig::default(), "h", "/");
    /// assert!(!client.is_parked());
    /// ```
    pub fn is_parked(&self) -> bool {
        self.core.is_parked()
    }

    /// Runs only the opening handshake: parses the server's answer at the
    /// start of `input`. Returns 0 while it is incomplete, else its length
    /// (the connection is then open; the bytes after it are frames for
    /// [`ClientConnection::feed`]). After the handshake it returns 0.
    ///
    /// ```
    /// use myriad_ws::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
    /// let mut client = ClientConnection::new(ClientConfig::default(), "h", "/");
    /// let mut server = ServerConnection::new(ServerConfig::default().into());
    /// let (mut req, mut resp) = (Vec::new(), Vec::new());
    /// client.start(&mut req);
    /// server.handshake(&req, &mut resp).unwrap();
    /// assert_eq!(client.handshake(&resp[..5]), Ok(0));
    /// assert_eq!(client.handshake(&resp), Ok(resp.len()));
    /// assert!(client.is_open());
    /// ```
    pub fn handshake(&mut self, input: &[u8]) -> Result<usize, Error> {
        if self.core.tx.state != ConnectionState::Handshake {
            return Ok(0);
        }
        let resp = match parse_response(
            input,
            &self.key,
            &self.config.protocols,
            self.config.max_header_size,
        ) {
            Ok(None) => return Ok(0),
            Ok(Some(r)) => r,
            Err(e) => {
                self.core.tx.state = ConnectionState::Closed;
                return Err(e.into());
            }
        };
        let deflate = match &self.config.deflate {
            Some(dc) => DeflateParams::from_response(resp.extensions.as_deref(), dc),
            None if resp
                .extensions
                .as_deref()
                .is_some_and(|e| !e.trim().is_empty()) =>
            {
                Err(HandshakeError::BadExtension)
            }
            None => Ok(None),
        };
        let deflate = match deflate {
            Ok(d) => d,
            Err(e) => {
                self.core.tx.state = ConnectionState::Closed;
                return Err(e.into());
            }
        };
        let mut dec = Decoder::with_config(Role::Client, self.config.limits);
        dec.set_deflate(deflate.as_ref());
        self.core.rx = Rx::Rfc(Box::new(dec));
        if let (Some(p), Some(dc)) = (&deflate, &self.config.deflate) {
            self.core.tx.enc.set_deflater(Some(Deflater::new(
                Role::Client,
                p,
                dc.level,
                dc.threshold,
            )));
        }
        self.core
            .tx
            .enc
            .set_max_fragment_size(self.config.max_fragment_size);
        self.core.tx.state = ConnectionState::Open;
        self.protocol = resp.protocol;
        self.deflate = deflate;
        Ok(resp.len)
    }

    /// A [`Sender`] writing into `sink`.
    pub fn sender<'a, S: Sink + ?Sized>(&'a mut self, sink: &'a mut S) -> Sender<'a, S> {
        Sender {
            tx: &mut self.core.tx,
            sink,
        }
    }

    /// Sends a text message.
    pub fn send_text<S: Sink + ?Sized>(&mut self, sink: &mut S, text: &str) -> Result<(), Error> {
        self.sender(sink).send_text(text)
    }

    /// Sends a binary message.
    pub fn send_binary<S: Sink + ?Sized>(
        &mut self,
        sink: &mut S,
        data: &[u8],
    ) -> Result<(), Error> {
        self.sender(sink).send_binary(data)
    }

    /// Sends a ping.
    pub fn send_ping<S: Sink + ?Sized>(
        &mut self,
        sink: &mut S,
        payload: &[u8],
    ) -> Result<(), Error> {
        self.sender(sink).send_ping(payload)
    }

    /// Starts the close handshake.
    pub fn close<S: Sink + ?Sized>(
        &mut self,
        sink: &mut S,
        code: CloseCode,
        reason: &str,
    ) -> Result<(), Error> {
        self.sender(sink).close(code, reason)
    }
}
