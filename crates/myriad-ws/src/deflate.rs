//! permessage-deflate (RFC 7692): negotiation and the compressor /
//! decompressor of a connection.
//!
//! Compression uses flate2's raw deflate on the zlib-rs backend, which
//! supports window sizes below 15 bits. zlib cannot *compress* with an 8-bit
//! window (it silently uses 9, which a peer limited to 8 could not inflate),
//! so a server declines an offer that limits its window to 8 bits. Inflating
//! with a 9-bit (or larger) window handles 8-bit streams, so the receiving
//! side accepts them.
//!
//! # Memory
//!
//! A zlib stream is large: a compressor and a decompressor with 15-bit
//! windows hold about 340 KB together (measured: `ws_echo
//! --deflate-context-takeover`, BENCHMARKS.md). By default ([`DeflateConfig::context_takeover`]
//! false) a server negotiates no context takeover in both directions, so a
//! stream is only needed while one message is compressed or inflated: it is
//! borrowed from a per-thread pool (one per engine loop) for that message,
//! reset, and given back. An idle connection holds no zlib state at all.
//! With context takeover a connection keeps its own stream for each
//! direction that takes its context over, for its whole life.
//! [`zlib_streams`] counts the streams of the calling thread.

use std::cell::{Cell, RefCell};

use crate::error::{HandshakeError, ProtocolError};
use crate::frame::Role;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension token.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// The four bytes a sync flush ends with; stripped when sending, appended
/// when receiving (RFC 7692 section 7.2.1).
const TRAILER: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// What this endpoint is willing to negotiate, and how it compresses.
///
/// On a server these are upper bounds and requirements applied to each
/// client offer; on a client they make up the offer.
///
/// The defaults cost an idle server connection no zlib memory: the server
/// answers every offer with `server_no_context_takeover;
/// client_no_context_takeover` (RFC 7692 section 7.1.1.1 lets a server
/// require the latter even when the client did not offer it), and borrows a
/// compressor or decompressor from a per-loop pool only while it processes
/// a message. Set [`DeflateConfig::context_takeover`] for a better ratio on
/// streams of similar messages (chat: wire bytes 1.86× smaller instead of
/// 1.0×), at the price of about 340 KB of zlib state (compressor and
/// decompressor, 15-bit windows, zlib memory level 8, which flate2 does not
/// let us lower) per connection for its whole life;
/// [`DeflateConfig::server_max_window_bits`] bounds the compressor's window.
///
/// ```
/// use myriad_ws::DeflateConfig;
/// let cfg = DeflateConfig { server_no_context_takeover: true, ..DeflateConfig::default() };
/// assert_eq!(cfg.client_offer(), "permessage-deflate; server_no_context_takeover; client_max_window_bits");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Server: allow compression contexts to be kept between messages. When
    /// false (the default) the response always carries
    /// `server_no_context_takeover` and `client_no_context_takeover`
    /// whatever the offer, and the two fields below are implied. When true,
    /// the offer and the two fields below decide, and each direction that
    /// keeps its context costs the connection a zlib stream for its life.
    /// Client: not used (the offer is made from the other fields; the client
    /// follows the server's answer).
    pub context_takeover: bool,
    /// Server: always reset the server's compression context after each
    /// message (saves the peer's memory, costs ratio). Client: ask for it.
    pub server_no_context_takeover: bool,
    /// Server: require the client to reset its context after each message.
    /// Client: reset ours (and say so in the offer).
    pub client_no_context_takeover: bool,
    /// Largest LZ77 window (9..=15 bits) for the server's compressor.
    pub server_max_window_bits: u8,
    /// Largest LZ77 window (9..=15 bits) for the client's compressor.
    pub client_max_window_bits: u8,
    /// zlib compression level 0..=9.
    pub level: u32,
    /// Messages shorter than this are sent uncompressed.
    pub threshold: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            context_takeover: false,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            level: 6,
            threshold: 64,
        }
    }
}

/// The parameters both sides agreed on.
///
/// ```
/// use myriad_ws::{DeflateConfig, DeflateParams};
/// let p = DeflateParams::negotiate("permessage-deflate; client_max_window_bits", &DeflateConfig::default()).unwrap();
/// assert_eq!(p.client_max_window_bits, 15);
/// assert_eq!(
///     p.response_header(),
///     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// Window of the server's compressor (9..=15: a server declines an
    /// offer of 8, which zlib cannot compress with).
    pub server_max_window_bits: u8,
    /// Window of the client's compressor (8..=15).
    pub client_max_window_bits: u8,
    /// Whether the response carries `client_max_window_bits`.
    client_bits_in_response: bool,
    /// Whether the response carries `server_max_window_bits`.
    server_bits_in_response: bool,
}

/// One parsed extension offer: the name and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer<'a> {
    /// The extension token, e.g. `permessage-deflate`.
    pub name: &'a str,
    /// Parameters in order: name and optional value (quotes removed).
    pub params: Vec<(&'a str, Option<&'a str>)>,
}

/// Parses a `Sec-WebSocket-Extensions` value into offers
/// (`ext; p1; p2=v, ext2`). Malformed elements are skipped.
///
/// ```
/// use myriad_ws::parse_extensions;
/// let offers = parse_extensions("permessage-deflate; client_max_window_bits=\"10\", foo");
/// assert_eq!(offers.len(), 2);
/// assert_eq!(offers[0].params, vec![("client_max_window_bits", Some("10"))]);
/// assert_eq!(offers[1].name, "foo");
/// ```
pub fn parse_extensions(value: &str) -> Vec<ExtensionOffer<'_>> {
    let mut out = Vec::new();
    for ext in value.split(',') {
        let mut parts = ext.split(';');
        let name = match parts.next().map(str::trim) {
            Some(n) if !n.is_empty() => n,
            _ => continue,
        };
        let mut params = Vec::new();
        for p in parts {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            match p.split_once('=') {
                Some((k, v)) => {
                    let v = v.trim();
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(v);
                    params.push((k.trim(), Some(v)));
                }
                None => params.push((p, None)),
            }
        }
        out.push(ExtensionOffer { name, params });
    }
    out
}

fn parse_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.len() > 2 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u8 = v.parse().ok()?;
    (8..=15).contains(&n).then_some(n)
}

impl DeflateParams {
    /// Server side: picks a response to a client's `Sec-WebSocket-Extensions`
    /// value. Offers are tried in order; an offer with unknown, duplicate or
    /// invalid parameters, or one limiting the server's window to 8 bits
    /// (zlib cannot compress with it), is declined and the next one is
    /// tried. `None` means no permessage-deflate offer was acceptable.
    ///
    /// ```
    /// use myriad_ws::{DeflateConfig, DeflateParams};
    /// let cfg = DeflateConfig::default();
    /// let p = DeflateParams::negotiate(
    ///     "permessage-deflate; foo, permessage-deflate; server_max_window_bits=10",
    ///     &cfg,
    /// ).unwrap();
    /// assert_eq!(p.server_max_window_bits, 10);
    /// assert_eq!(
    ///     p.response_header(),
    ///     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
    /// );
    /// assert!(DeflateParams::negotiate("x-webkit-deflate-frame", &cfg).is_none());
    /// ```
    pub fn negotiate(offers: &str, config: &DeflateConfig) -> Option<DeflateParams> {
        parse_extensions(offers)
            .iter()
            .filter(|o| o.name.eq_ignore_ascii_case(EXTENSION_NAME))
            .find_map(|o| Self::accept_offer(o, config))
    }

    fn accept_offer(offer: &ExtensionOffer<'_>, cfg: &DeflateConfig) -> Option<DeflateParams> {
        let mut seen = [false; 4];
        let mut server_nct = false;
        let mut client_nct = false;
        let mut server_bits: Option<u8> = None;
        let mut client_bits: Option<Option<u8>> = None;
        for &(k, v) in &offer.params {
            let idx = match k {
                "server_no_context_takeover" => 0,
                "client_no_context_takeover" => 1,
                "server_max_window_bits" => 2,
                "client_max_window_bits" => 3,
                _ => return None,
            };
            if std::mem::replace(&mut seen[idx], true) {
                return None;
            }
            match idx {
                0 | 1 => {
                    if v.is_some() {
                        return None;
                    }
                    if idx == 0 {
                        server_nct = true;
                    } else {
                        client_nct = true;
                    }
                }
                // zlib compresses with at least 9 bits; an 8-bit limit
                // could only be honoured by never compressing: decline
                2 => server_bits = Some(parse_bits(v?).filter(|&b| b >= 9)?),
                _ => {
                    client_bits = Some(match v {
                        None => None,
                        Some(v) => Some(parse_bits(v)?),
                    })
                }
            }
        }
        let cfg_server_bits = cfg.server_max_window_bits.clamp(9, 15);
        let cfg_client_bits = cfg.client_max_window_bits.clamp(9, 15);
        let server_max_window_bits = server_bits.unwrap_or(15).min(cfg_server_bits);
        let (client_max_window_bits, client_bits_in_response) = match client_bits {
            // the client cannot be limited if it did not say it supports it
            None => (15, false),
            Some(v) => {
                let b = v.unwrap_or(15).min(cfg_client_bits);
                (b, b < 15 || v.is_some())
            }
        };
        let forced = !cfg.context_takeover;
        Some(DeflateParams {
            server_no_context_takeover: server_nct || cfg.server_no_context_takeover || forced,
            client_no_context_takeover: client_nct || cfg.client_no_context_takeover || forced,
            server_max_window_bits,
            client_max_window_bits,
            client_bits_in_response,
            server_bits_in_response: server_bits.is_some() || server_max_window_bits < 15,
        })
    }

    /// The `Sec-WebSocket-Extensions` value a server answers with.
    ///
    /// ```
    /// use myriad_ws::{DeflateConfig, DeflateParams};
    /// let cfg = DeflateConfig {
    ///     context_takeover: true,
    ///     client_no_context_takeover: true,
    ///     ..DeflateConfig::default()
    /// };
    /// let p = DeflateParams::negotiate("permessage-deflate", &cfg).unwrap();
    /// assert_eq!(p.response_header(), "permessage-deflate; client_no_context_takeover");
    /// ```
    pub fn response_header(&self) -> String {
        let mut s = String::from(EXTENSION_NAME);
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if self.server_bits_in_response {
            s.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        if self.client_bits_in_response {
            s.push_str(&format!(
                "; client_max_window_bits={}",
                self.client_max_window_bits
            ));
        }
        s
    }

    /// Client side: checks the server's `Sec-WebSocket-Extensions` answer
    /// against the offer made from `config` ([`DeflateConfig::client_offer`]).
    /// `Ok(None)`: the server declined the extension.
    ///
    /// ```
    /// use myriad_ws::{DeflateConfig, DeflateParams};
    /// let cfg = DeflateConfig::default();
    /// let p = DeflateParams::from_response(Some("permessage-deflate; client_max_window_bits=12"), &cfg)
    ///     .unwrap().unwrap();
    /// assert_eq!(p.client_max_window_bits, 12);
    /// assert!(DeflateParams::from_response(Some("permessage-deflate; foo"), &cfg).is_err());
    /// assert_eq!(DeflateParams::from_response(None, &cfg), Ok(None));
    /// ```
    pub fn from_response(
        value: Option<&str>,
        config: &DeflateConfig,
    ) -> Result<Option<DeflateParams>, HandshakeError> {
        let value = match value {
            Some(v) if !v.trim().is_empty() => v,
            _ => return Ok(None),
        };
        let exts = parse_extensions(value);
        let [ext] = exts.as_slice() else {
            return Err(HandshakeError::BadExtension);
        };
        if !ext.name.eq_ignore_ascii_case(EXTENSION_NAME) {
            return Err(HandshakeError::BadExtension);
        }
        let mut seen = [false; 4];
        let mut p = DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: config.client_no_context_takeover,
            server_max_window_bits: 15,
            client_max_window_bits: config.client_max_window_bits.clamp(9, 15),
            client_bits_in_response: false,
            server_bits_in_response: false,
        };
        for &(k, v) in &ext.params {
            let idx = match k {
                "server_no_context_takeover" => 0,
                "client_no_context_takeover" => 1,
                "server_max_window_bits" => 2,
                "client_max_window_bits" => 3,
                _ => return Err(HandshakeError::BadExtension),
            };
            if std::mem::replace(&mut seen[idx], true) {
                return Err(HandshakeError::BadExtension);
            }
            match idx {
                0 | 1 if v.is_some() => return Err(HandshakeError::BadExtension),
                0 => p.server_no_context_takeover = true,
                1 => p.client_no_context_takeover = true,
                _ => {
                    let bits = v.and_then(parse_bits).ok_or(HandshakeError::BadExtension)?;
                    if idx == 2 {
                        let offered = config.server_max_window_bits.clamp(9, 15);
                        if bits > offered {
                            return Err(HandshakeError::BadExtension);
                        }
                        p.server_max_window_bits = bits;
                        p.server_bits_in_response = true;
                    } else {
                        p.client_max_window_bits = p.client_max_window_bits.min(bits);
                        p.client_bits_in_response = true;
                    }
                }
            }
        }
        if config.server_no_context_takeover && !p.server_no_context_takeover {
            return Err(HandshakeError::BadExtension);
        }
        Ok(Some(p))
    }

    /// Window bits and context takeover of the compressor of `role`.
    fn sending(&self, role: Role) -> (u8, bool) {
        match role {
            Role::Server => (self.server_max_window_bits, self.server_no_context_takeover),
            Role::Client => (self.client_max_window_bits, self.client_no_context_takeover),
        }
    }
}

impl DeflateConfig {
    /// The `Sec-WebSocket-Extensions` value a client sends for this config.
    ///
    /// ```
    /// use myriad_ws::DeflateConfig;
    /// let cfg = DeflateConfig { server_max_window_bits: 10, client_max_window_bits: 12, ..DeflateConfig::default() };
    /// assert_eq!(cfg.client_offer(),
    ///     "permessage-deflate; server_max_window_bits=10; client_max_window_bits=12");
    /// ```
    pub fn client_offer(&self) -> String {
        let mut s = String::from(EXTENSION_NAME);
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        let sb = self.server_max_window_bits.clamp(9, 15);
        if sb < 15 {
            s.push_str(&format!("; server_max_window_bits={sb}"));
        }
        let cb = self.client_max_window_bits.clamp(9, 15);
        if cb < 15 {
            s.push_str(&format!("; client_max_window_bits={cb}"));
        } else {
            s.push_str("; client_max_window_bits");
        }
        s
    }
}

// ----- the per-thread pool of zlib streams -----

/// Idle streams of each kind kept per thread (an engine loop processes one
/// message at a time; a few cover streamed messages and other parameters).
const POOL_STREAMS: usize = 4;

/// Capacity of a pooled compressor's output buffer kept across messages.
const POOL_BUF: usize = 64 << 10;

/// Counts itself in the thread's live streams while it exists.
#[derive(Debug)]
struct Live(());

impl Live {
    fn new() -> Self {
        let _ = LIVE.try_with(|n| n.set(n.get() + 1));
        Live(())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = LIVE.try_with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// A compressor with its output buffer.
struct DeflateStream {
    c: Compress,
    bits: u8,
    level: u32,
    buf: Vec<u8>,
    /// Whether `c` has taken input since it was made or last reset. A reset
    /// clears zlib's 128 KiB hash table (a memset of 7% of all CPU in the
    /// million-browser ramp, when every message reset its stream twice:
    /// after compressing and again when pooled), so a clean stream is not
    /// reset again.
    dirty: bool,
    _live: Live,
}

impl DeflateStream {
    /// Resets the compressor unless it is clean already.
    fn reset(&mut self) {
        if self.dirty {
            self.c.reset();
            self.dirty = false;
            #[cfg(test)]
            tests::RESETS.with(|n| n.set(n.get() + 1));
        }
    }
}

impl std::fmt::Debug for DeflateStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeflateStream")
            .field("bits", &self.bits)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

/// A decompressor.
struct InflateStream {
    d: Decompress,
    bits: u8,
    _live: Live,
}

impl std::fmt::Debug for InflateStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InflateStream")
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

/// Idle (reset) streams of one thread. Boxed: handing one out moves a
/// pointer.
#[derive(Default)]
#[allow(clippy::vec_box)]
struct StreamPool {
    deflate: Vec<Box<DeflateStream>>,
    inflate: Vec<Box<InflateStream>>,
}

thread_local! {
    static POOL: RefCell<StreamPool> = RefCell::new(StreamPool::default());
    static LIVE: Cell<usize> = const { Cell::new(0) };
}

/// The zlib streams of the calling thread (an engine loop's own when called
/// from a handler).
///
/// ```
/// let s = myriad_ws::zlib_streams();
/// assert!(s.pooled <= s.live);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZlibStreams {
    /// Streams made on this thread and not yet dropped (in use by a
    /// connection, or pooled).
    pub live: usize,
    /// Idle streams in this thread's pool.
    pub pooled: usize,
}

/// The zlib streams of the calling thread: `live - pooled` is what
/// connections (and messages in progress) hold. With the default
/// [`DeflateConfig`] an idle connection holds none.
///
/// ```
/// use myriad_ws::{zlib_streams, DeflateConfig, DeflateParams, Deflater, Role};
/// let p = DeflateParams::negotiate("permessage-deflate", &DeflateConfig::default()).unwrap();
/// let mut d = Deflater::new(Role::Server, &p, 6, 0);
/// assert!(d.compress(&[b'a'; 100]).is_some());
/// d.release(); // back to the thread's pool
/// let s = zlib_streams();
/// assert_eq!(s.live, s.pooled);
/// ```
pub fn zlib_streams() -> ZlibStreams {
    ZlibStreams {
        live: LIVE.try_with(Cell::get).unwrap_or(0),
        pooled: POOL
            .try_with(|p| {
                p.try_borrow()
                    .map(|p| p.deflate.len() + p.inflate.len())
                    .unwrap_or(0)
            })
            .unwrap_or(0),
    }
}

fn take_deflate(bits: u8, level: u32) -> Box<DeflateStream> {
    let pooled = POOL
        .try_with(|p| {
            let mut p = p.try_borrow_mut().ok()?;
            let i = p
                .deflate
                .iter()
                .position(|s| s.bits == bits && s.level == level)?;
            Some(p.deflate.swap_remove(i))
        })
        .ok()
        .flatten();
    pooled.unwrap_or_else(|| {
        Box::new(DeflateStream {
            c: Compress::new_with_window_bits(Compression::new(level), false, bits),
            bits,
            level,
            buf: Vec::new(),
            dirty: false,
            _live: Live::new(),
        })
    })
}

/// Resets `s` and keeps it in the thread's pool (drops it if full).
fn give_deflate(mut s: Box<DeflateStream>) {
    s.reset();
    s.buf.clear();
    if s.buf.capacity() > POOL_BUF {
        s.buf = Vec::new();
    }
    let _ = POOL.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            if p.deflate.len() < POOL_STREAMS {
                p.deflate.push(s);
            }
        }
    });
}

fn take_inflate(bits: u8) -> Box<InflateStream> {
    let pooled = POOL
        .try_with(|p| {
            let mut p = p.try_borrow_mut().ok()?;
            let i = p.inflate.iter().position(|s| s.bits == bits)?;
            Some(p.inflate.swap_remove(i))
        })
        .ok()
        .flatten();
    pooled.unwrap_or_else(|| {
        Box::new(InflateStream {
            d: Decompress::new_with_window_bits(false, bits),
            bits,
            _live: Live::new(),
        })
    })
}

fn give_inflate(mut s: Box<InflateStream>) {
    s.d.reset(false);
    let _ = POOL.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            if p.inflate.len() < POOL_STREAMS {
                p.inflate.push(s);
            }
        }
    });
}

// ----- compressing -----

/// Compresses outgoing messages for one connection.
///
/// Without context takeover the zlib stream is borrowed from the thread's
/// pool for one message ([`Deflater::compress`]) and given back by
/// [`Deflater::release`] (the [`crate::Encoder`] calls it after writing the
/// frames; dropping the `Deflater` does it too). With context takeover the
/// stream stays with the connection.
///
/// ```
/// use myriad_ws::{Deflater, Inflater, DeflateConfig, DeflateParams, Role};
/// let params = DeflateParams::negotiate("permessage-deflate", &DeflateConfig::default()).unwrap();
/// let mut d = Deflater::new(Role::Server, &params, 6, 0);
/// let mut i = Inflater::new(Role::Client, &params);
/// let msg = b"hello hello hello hello".repeat(10);
/// let compressed = d.compress(&msg).unwrap().to_vec();
/// d.release();
/// assert!(compressed.len() < msg.len());
/// let mut out = Vec::new();
/// i.inflate(&compressed, &mut out, 1 << 20).unwrap();
/// i.finish_message(&mut out, 1 << 20).unwrap();
/// assert_eq!(out, msg);
/// assert!(!d.holds_stream() && !i.holds_stream());
/// ```
#[derive(Debug)]
pub struct Deflater {
    stream: Option<Box<DeflateStream>>,
    threshold: usize,
    window_bits: u8,
    no_context_takeover: bool,
    level: u8,
    /// Set when the peer's view of our stream diverged (a prepared message
    /// was sent in between): the next message starts a fresh context.
    needs_reset: bool,
}

impl Deflater {
    /// The compressor for `role` under the negotiated `params`.
    pub fn new(role: Role, params: &DeflateParams, level: u32, threshold: usize) -> Self {
        let (window_bits, no_context_takeover) = params.sending(role);
        Deflater {
            stream: None,
            threshold,
            window_bits,
            no_context_takeover,
            level: level.min(9) as u8,
            needs_reset: false,
        }
    }

    /// The window of this compressor.
    pub fn window_bits(&self) -> u8 {
        self.window_bits
    }

    /// Whether the compressor resets after every message.
    pub fn no_context_takeover(&self) -> bool {
        self.no_context_takeover
    }

    /// Whether a zlib stream is attached (with context takeover: after the
    /// first compressed message; without: only between
    /// [`Deflater::compress`] and [`Deflater::release`]).
    pub fn holds_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// Makes the next message start a fresh compression context (used after
    /// a [`crate::PreparedMessage`] that the peer inflated in between).
    pub fn reset_context(&mut self) {
        self.needs_reset = true;
    }

    /// Compresses one whole message; returns the payload to send with RSV1
    /// set, or `None` if the message should go uncompressed (below the
    /// threshold, an 8-bit window, or compression did not help). Call
    /// [`Deflater::release`] once the bytes are written.
    pub fn compress(&mut self, payload: &[u8]) -> Option<&[u8]> {
        if payload.len() < self.threshold || self.window_bits < 9 {
            return None;
        }
        let (bits, level) = (self.window_bits, u32::from(self.level));
        let s = self.stream.get_or_insert_with(|| take_deflate(bits, level));
        if self.needs_reset {
            s.reset();
            self.needs_reset = false;
        }
        s.buf.clear();
        s.dirty = true;
        let ok = deflate_into(&mut s.c, payload, &mut s.buf);
        // Incompressible data costs deflate's stored blocks a few bytes per
        // 64 KiB (levels 2-9 fall back to them); level 1's static codes can
        // grow it by up to 1/8. Only a real expansion is sent uncompressed.
        let slack = payload.len() / 256 + 32;
        if !ok || s.buf.len() > payload.len() + slack {
            // A failed or useless compression: the peer has not seen these
            // bytes, so our context diverged from its: start afresh.
            s.reset();
            return None;
        }
        if self.no_context_takeover {
            s.reset();
        }
        Some(&s.buf)
    }

    /// Gives the zlib stream back to the thread's pool if the context is
    /// not kept (no context takeover); otherwise does nothing.
    pub fn release(&mut self) {
        if self.no_context_takeover {
            if let Some(s) = self.stream.take() {
                give_deflate(s);
            }
        }
    }
}

impl Drop for Deflater {
    fn drop(&mut self) {
        if let Some(s) = self.stream.take() {
            give_deflate(s);
        }
    }
}

/// Raw-deflates `input` with a sync flush into `out` (which must be empty),
/// stripping the trailing `00 00 FF FF`. `false` on a compressor error.
pub(crate) fn deflate_into(c: &mut Compress, input: &[u8], out: &mut Vec<u8>) -> bool {
    let mut consumed = 0usize;
    out.reserve(input.len() / 2 + 64);
    for _ in 0..1_000_000 {
        if out.capacity() - out.len() < 32 {
            out.reserve((input.len() - consumed) / 2 + 64);
        }
        let before_in = c.total_in();
        let before_out = c.total_out();
        if c.compress_vec(&input[consumed..], out, FlushCompress::Sync)
            .is_err()
        {
            return false;
        }
        consumed += (c.total_in() - before_in) as usize;
        let produced = c.total_out() - before_out;
        if consumed >= input.len() && out.len() < out.capacity() {
            if out.ends_with(&TRAILER) {
                out.truncate(out.len() - TRAILER.len());
                return true;
            }
            return false;
        }
        if produced == 0 && c.total_in() == before_in && out.len() < out.capacity() {
            return false;
        }
    }
    false
}

// ----- inflating -----

/// Inflated bytes a compressed message may always produce, whatever its
/// compressed size (see [`crate::DecoderConfig::max_inflate_ratio`]).
pub const INFLATE_RATIO_SLACK: u64 = 64 << 10;

/// Inflates incoming compressed messages for one connection, with a limit on
/// the inflated size and, optionally, on the inflation ratio.
///
/// Without context takeover the zlib stream is borrowed from the thread's
/// pool when a compressed message starts and given back when it ends
/// ([`Inflater::finish_message`]).
///
/// ```
/// use myriad_ws::{Inflater, DeflateConfig, DeflateParams, Role, ProtocolError};
/// let params = DeflateParams::negotiate("permessage-deflate", &DeflateConfig::default()).unwrap();
/// let mut i = Inflater::new(Role::Server, &params);
/// let mut out = Vec::new();
/// assert_eq!(i.inflate(&[0xff, 0xff, 0xff], &mut out, 100), Err(ProtocolError::InvalidCompressedData));
/// ```
#[derive(Debug)]
pub struct Inflater {
    stream: Option<Box<InflateStream>>,
    /// Compressed and inflated bytes of the message in progress.
    message_in: u64,
    message_out: u64,
    max_ratio: u32,
    window_bits: u8,
    no_context_takeover: bool,
    stream_ended: bool,
}

/// What an idle [`Inflater`] is made of (kept by a parked connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InflateMode {
    window_bits: u8,
    no_context_takeover: bool,
}

impl Inflater {
    /// The decompressor for `role` (the receiving side) under `params`.
    pub fn new(role: Role, params: &DeflateParams) -> Self {
        let peer = match role {
            Role::Server => Role::Client,
            Role::Client => Role::Server,
        };
        let (bits, no_context_takeover) = params.sending(peer);
        // Without context takeover the window is thrown away after each
        // message; a 15-bit inflater is shared by all through the pool.
        let window_bits = if no_context_takeover {
            15
        } else {
            bits.clamp(9, 15)
        };
        Self::from_mode(InflateMode {
            window_bits,
            no_context_takeover,
        })
    }

    pub(crate) fn from_mode(mode: InflateMode) -> Self {
        Inflater {
            stream: None,
            message_in: 0,
            message_out: 0,
            max_ratio: 0,
            window_bits: mode.window_bits,
            no_context_takeover: mode.no_context_takeover,
            stream_ended: false,
        }
    }

    pub(crate) fn mode(&self) -> InflateMode {
        InflateMode {
            window_bits: self.window_bits,
            no_context_takeover: self.no_context_takeover,
        }
    }

    /// Bounds the inflation ratio: a message may inflate to at most
    /// `ratio` times its compressed size plus [`INFLATE_RATIO_SLACK`], or
    /// [`Inflater::inflate`] fails with [`ProtocolError::InflateRatio`]
    /// (0: no bound; deflate itself cannot exceed about 1032).
    ///
    /// ```
    /// use myriad_ws::{DeflateConfig, DeflateParams, Deflater, Inflater, ProtocolError, Role};
    /// let p = DeflateParams::negotiate("permessage-deflate", &DeflateConfig::default()).unwrap();
    /// let z = Deflater::new(Role::Client, &p, 9, 0).compress(&vec![0; 1 << 20]).unwrap().to_vec();
    /// let mut i = Inflater::new(Role::Server, &p);
    /// i.set_max_ratio(100);
    /// let mut out = Vec::new();
    /// assert_eq!(i.inflate(&z, &mut out, 16 << 20), Err(ProtocolError::InflateRatio { max: 100 }));
    /// ```
    pub fn set_max_ratio(&mut self, ratio: u32) {
        self.max_ratio = ratio;
    }

    /// Whether a zlib stream is attached (with context takeover: after the
    /// first compressed message; without: only during a message).
    pub fn holds_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// Whether the peer keeps its context (the stream, once made, stays
    /// with this inflater).
    pub(crate) fn holds_context(&self) -> bool {
        !self.no_context_takeover
    }

    /// Inflates the next piece of a compressed message, appending to `out`.
    /// Fails with [`ProtocolError::MessageTooLarge`] as soon as `out` would
    /// grow past `max` bytes (a decompression bomb never allocates more than
    /// `max + 1` bytes), and with [`ProtocolError::InflateRatio`] when the
    /// message inflates beyond the ratio bound ([`Inflater::set_max_ratio`]).
    pub fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), ProtocolError> {
        if input.is_empty() {
            return Ok(());
        }
        if self.stream_ended {
            // data after a final deflate block
            return Err(ProtocolError::InvalidCompressedData);
        }
        let window_bits = self.window_bits;
        let d = &mut self
            .stream
            .get_or_insert_with(|| take_inflate(window_bits))
            .d;
        // The inflater writes into all of `out`'s spare capacity: a reused
        // buffer with more than `max + 1` bytes of capacity would let it run
        // past the limit.
        let cap_max = max.saturating_add(1);
        if out.capacity() > cap_max && out.len() <= max {
            out.shrink_to(cap_max);
        }
        let mut consumed = 0usize;
        loop {
            if out.len() > max {
                return Err(ProtocolError::MessageTooLarge { max });
            }
            if out.capacity() == out.len() {
                let want = (input.len() - consumed)
                    .saturating_mul(3)
                    .clamp(256, 1 << 20);
                let room = cap_max.saturating_sub(out.len()).max(1);
                // exact: `reserve` may double the capacity, past `max + 1`
                out.reserve_exact(want.min(room));
            }
            let before_in = d.total_in();
            let before_out = d.total_out();
            let status = d
                .decompress_vec(&input[consumed..], out, FlushDecompress::None)
                .map_err(|_| ProtocolError::InvalidCompressedData)?;
            let took = d.total_in() - before_in;
            consumed += took as usize;
            self.message_in += took;
            self.message_out += d.total_out() - before_out;
            let progressed = d.total_in() != before_in || d.total_out() != before_out;
            if out.len() > max {
                return Err(ProtocolError::MessageTooLarge { max });
            }
            if self.max_ratio != 0
                && self.message_out
                    > self
                        .message_in
                        .saturating_mul(u64::from(self.max_ratio))
                        .saturating_add(INFLATE_RATIO_SLACK)
            {
                return Err(ProtocolError::InflateRatio {
                    max: self.max_ratio,
                });
            }
            if status == Status::StreamEnd {
                self.stream_ended = true;
                if consumed < input.len() {
                    return Err(ProtocolError::InvalidCompressedData);
                }
                return Ok(());
            }
            if consumed >= input.len() && out.len() < out.capacity() {
                return Ok(());
            }
            if !progressed && out.len() < out.capacity() {
                return Err(ProtocolError::InvalidCompressedData);
            }
        }
    }

    /// Ends a compressed message: inflates the stripped `00 00 FF FF` tail
    /// and resets the context if the peer does not keep it (giving the
    /// stream back to the thread's pool).
    pub fn finish_message(&mut self, out: &mut Vec<u8>, max: usize) -> Result<(), ProtocolError> {
        if !self.stream_ended {
            self.inflate(&TRAILER, out, max)?;
        }
        self.message_in = 0;
        self.message_out = 0;
        if self.no_context_takeover {
            self.stream_ended = false;
            if let Some(s) = self.stream.take() {
                give_inflate(s);
            }
        } else if self.stream_ended {
            if let Some(s) = self.stream.as_mut() {
                s.d.reset(false);
            }
            self.stream_ended = false;
        }
        Ok(())
    }

    /// Drops the message in progress, if any, and gives the stream back to
    /// the pool. Only without context takeover; with it the context is the
    /// connection's and is kept.
    pub fn release(&mut self) {
        if self.no_context_takeover {
            self.message_in = 0;
            self.message_out = 0;
            self.stream_ended = false;
            if let Some(s) = self.stream.take() {
                give_inflate(s);
            }
        }
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        if let Some(s) = self.stream.take() {
            give_inflate(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Compressor resets on this thread (counted by `DeflateStream::reset`).
        pub(super) static RESETS: Cell<u64> = const { Cell::new(0) };
    }

    fn cfg() -> DeflateConfig {
        DeflateConfig::default()
    }

    /// Without context takeover a message costs one compressor reset (it
    /// cost two: after compressing and again when the stream was pooled),
    /// whether it compressed or went out uncompressed, and what comes out
    /// of the reused stream is still a fresh context's.
    #[test]
    fn a_message_resets_the_compressor_once() {
        let p = DeflateParams::negotiate("permessage-deflate", &cfg()).unwrap();
        assert!(p.server_no_context_takeover);
        let mut d = Deflater::new(Role::Server, &p, 6, 0);
        let text = [b'a'; 200];
        // incompressible: sent compressed within the slack, or not at all
        let noise: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let first = d.compress(&text).map(<[u8]>::to_vec);
        d.release();
        let before = RESETS.with(Cell::get);
        for _ in 0..3 {
            assert_eq!(d.compress(&text).map(<[u8]>::to_vec), first);
            d.release();
        }
        assert_eq!(RESETS.with(Cell::get) - before, 3);
        let before = RESETS.with(Cell::get);
        for _ in 0..3 {
            let _ = d.compress(&noise);
            d.release();
        }
        assert_eq!(RESETS.with(Cell::get) - before, 3);
        // a stream that never took input is not reset when pooled
        let before = RESETS.with(Cell::get);
        drop(take_deflate(15, 6));
        give_deflate(take_deflate(15, 6));
        assert_eq!(RESETS.with(Cell::get) - before, 0);
        assert!(first.is_some());
    }

    #[test]
    fn negotiate_params() {
        let p = DeflateParams::negotiate(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=10",
            &cfg(),
        )
        .unwrap();
        assert!(p.server_no_context_takeover && p.client_no_context_takeover);
        assert_eq!(
            (p.server_max_window_bits, p.client_max_window_bits),
            (9, 10)
        );
        assert_eq!(
            p.response_header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=10"
        );
    }

    #[test]
    fn declines_invalid_offers() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=0x9",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
        ] {
            assert!(DeflateParams::negotiate(bad, &cfg()).is_none(), "{bad}");
        }
    }

    /// zlib cannot compress with an 8-bit window: an offer limiting the
    /// server to 8 bits is declined (it used to be accepted and every reply
    /// then went uncompressed); the next offer is tried.
    #[test]
    fn server_window_8_offer_is_declined() {
        assert!(
            DeflateParams::negotiate("permessage-deflate; server_max_window_bits=8", &cfg())
                .is_none()
        );
        let p = DeflateParams::negotiate(
            "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=9",
            &cfg(),
        )
        .unwrap();
        assert_eq!(p.server_max_window_bits, 9);
        let mut d = Deflater::new(Role::Server, &p, 6, 0);
        assert!(d.compress(&[b'a'; 1000]).is_some());
        // a client limiting itself to 8 bits is inflated fine with 9+
        let p = DeflateParams::negotiate("permessage-deflate; client_max_window_bits=8", &cfg())
            .unwrap();
        assert_eq!(p.client_max_window_bits, 8);
        let mut i = Inflater::new(Role::Server, &p);
        let mut c = Compress::new_with_window_bits(Compression::default(), false, 9);
        let mut buf = Vec::new();
        assert!(deflate_into(&mut c, b"abcabcabcabc", &mut buf));
        let mut out = Vec::new();
        i.inflate(&buf, &mut out, 100).unwrap();
        i.finish_message(&mut out, 100).unwrap();
        assert_eq!(out, b"abcabcabcabc");
    }

    #[test]
    fn no_context_takeover_both_ways_by_default() {
        // a client's default offer is the browsers' one
        assert_eq!(
            cfg().client_offer(),
            "permessage-deflate; client_max_window_bits"
        );
        for (offer, header) in [
            (
                "permessage-deflate",
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            ),
            // what browsers offer
            (
                "permessage-deflate; client_max_window_bits",
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            ),
            // what Python websockets offers
            (
                "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=12",
            ),
            (
                "permessage-deflate; client_no_context_takeover",
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            ),
        ] {
            let p = DeflateParams::negotiate(offer, &cfg()).unwrap();
            assert!(p.server_no_context_takeover && p.client_no_context_takeover);
            assert_eq!(p.response_header(), header, "{offer}");
            // and a client accepts the answer to its own offer
            let q = DeflateParams::from_response(Some(header), &cfg()).unwrap().unwrap();
            assert!(q.client_no_context_takeover && q.server_no_context_takeover);
        }
    }

    #[test]
    fn context_takeover_when_configured() {
        let c = DeflateConfig {
            context_takeover: true,
            ..cfg()
        };
        let p = DeflateParams::negotiate("permessage-deflate; client_max_window_bits", &c).unwrap();
        assert!(!p.server_no_context_takeover && !p.client_no_context_takeover);
        assert_eq!(p.response_header(), "permessage-deflate");
        // the client may still ask, and the server may still require
        let p =
            DeflateParams::negotiate("permessage-deflate; server_no_context_takeover", &c).unwrap();
        assert_eq!(
            p.response_header(),
            "permessage-deflate; server_no_context_takeover"
        );
        let c = DeflateConfig {
            client_no_context_takeover: true,
            ..c
        };
        let p = DeflateParams::negotiate("permessage-deflate", &c).unwrap();
        assert_eq!(
            p.response_header(),
            "permessage-deflate; client_no_context_takeover"
        );
        // with context takeover the streams stay with the connection
        let p = DeflateParams::negotiate(
            "permessage-deflate",
            &DeflateConfig {
                context_takeover: true,
                ..cfg()
            },
        )
        .unwrap();
        let mut d = Deflater::new(Role::Server, &p, 6, 0);
        d.compress(&[b'x'; 500]).unwrap();
        d.release();
        assert!(d.holds_stream());
    }

    /// The per-thread pool hands the same streams to many connections: each
    /// must start a message from a clean state. Connections A and B
    /// compress different texts alternately (with a context-keeping
    /// connection C in between, which must not leak its window either) and
    /// each peer inflates with its own fresh-per-message inflater.
    #[test]
    fn pooled_streams_are_reset_between_connections() {
        let nct = DeflateParams::negotiate("permessage-deflate", &cfg()).unwrap();
        let ct = DeflateParams::negotiate(
            "permessage-deflate",
            &DeflateConfig {
                context_takeover: true,
                ..cfg()
            },
        )
        .unwrap();
        let mut senders = [
            Deflater::new(Role::Server, &nct, 6, 0),
            Deflater::new(Role::Server, &nct, 6, 0),
            Deflater::new(Role::Server, &ct, 6, 0),
        ];
        let mut receivers = [
            Inflater::new(Role::Client, &nct),
            Inflater::new(Role::Client, &nct),
            Inflater::new(Role::Client, &ct),
        ];
        // client -> server direction too, through the pooled inflaters
        let mut up_senders = [
            Deflater::new(Role::Client, &nct, 6, 0),
            Deflater::new(Role::Client, &nct, 6, 0),
        ];
        let mut up_receivers = [
            Inflater::new(Role::Server, &nct),
            Inflater::new(Role::Server, &nct),
        ];
        for round in 0..50 {
            for (k, (d, i)) in senders.iter_mut().zip(receivers.iter_mut()).enumerate() {
                let msg = format!("connection {k} says the same thing again, round {round}: ")
                    .repeat(3 + k);
                let z = d.compress(msg.as_bytes()).unwrap().to_vec();
                d.release();
                let mut out = Vec::new();
                // inflated in two pieces: the stream is held in between
                let (a, b) = z.split_at(z.len() / 2);
                i.inflate(a, &mut out, 1 << 20).unwrap();
                i.inflate(b, &mut out, 1 << 20).unwrap();
                i.finish_message(&mut out, 1 << 20).unwrap();
                assert_eq!(out, msg.as_bytes(), "connection {k}, round {round}");
            }
            for (k, (d, i)) in up_senders
                .iter_mut()
                .zip(up_receivers.iter_mut())
                .enumerate()
            {
                let msg = format!("{k}{k}{k} up {round} ").repeat(20 + k);
                let z = d.compress(msg.as_bytes()).unwrap().to_vec();
                d.release();
                let mut out = Vec::new();
                i.inflate(&z, &mut out, 1 << 20).unwrap();
                i.finish_message(&mut out, 1 << 20).unwrap();
                assert_eq!(out, msg.as_bytes(), "up {k}, round {round}");
            }
        }
        // only the context-keeping pair holds streams between messages
        assert!(!senders[0].holds_stream() && !senders[1].holds_stream());
        assert!(!receivers[0].holds_stream() && !receivers[1].holds_stream());
        assert!(senders[2].holds_stream() && receivers[2].holds_stream());
        let before = zlib_streams();
        assert_eq!(before.live - before.pooled, 2);
        drop(senders);
        drop(receivers);
        let after = zlib_streams();
        assert_eq!(after.live - after.pooled, 0);
    }

    #[test]
    fn inflate_ratio_bound() {
        let p = DeflateParams::negotiate("permessage-deflate", &cfg()).unwrap();
        let mut d = Deflater::new(Role::Client, &p, 9, 0);
        let zeros = vec![0u8; 4 << 20];
        let z = d.compress(&zeros).unwrap().to_vec();
        d.release();
        assert!(z.len() < 5000, "{}", z.len());
        // without a bound, 4 MiB of work for a few KiB
        let mut i = Inflater::new(Role::Server, &p);
        let mut out = Vec::new();
        i.inflate(&z, &mut out, 16 << 20).unwrap();
        i.finish_message(&mut out, 16 << 20).unwrap();
        assert_eq!(out.len(), zeros.len());
        // with one, the message fails early, whatever the pieces
        for piece in [1, 100, z.len()] {
            let mut i = Inflater::new(Role::Server, &p);
            i.set_max_ratio(64);
            let mut out = Vec::new();
            let mut r = Ok(());
            for part in z.chunks(piece) {
                r = i.inflate(part, &mut out, 16 << 20);
                if r.is_err() {
                    break;
                }
            }
            assert_eq!(r, Err(ProtocolError::InflateRatio { max: 64 }));
            let bound = INFLATE_RATIO_SLACK as usize + 64 * z.len();
            assert!(out.len() <= bound + (1 << 20), "{} inflated", out.len());
            // the failed message's stream goes back to the pool
            i.release();
            assert!(!i.holds_stream());
        }
        // ordinary text is far below any sensible ratio
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(2000);
        let z = d.compress(text.as_bytes()).unwrap().to_vec();
        d.release();
        let mut i = Inflater::new(Role::Server, &p);
        i.set_max_ratio(128);
        let mut out = Vec::new();
        i.inflate(&z, &mut out, 16 << 20).unwrap();
        i.finish_message(&mut out, 16 << 20).unwrap();
        assert_eq!(out, text.as_bytes());
    }

    #[test]
    fn server_config_limits() {
        let c = DeflateConfig {
            server_max_window_bits: 10,
            client_max_window_bits: 11,
            ..cfg()
        };
        let p = DeflateParams::negotiate("permessage-deflate; client_max_window_bits", &c).unwrap();
        assert_eq!(
            p.response_header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=11"
        );
        // without client_max_window_bits in the offer, the client cannot be limited
        let p = DeflateParams::negotiate("permessage-deflate", &c).unwrap();
        assert_eq!(p.client_max_window_bits, 15);
        assert_eq!(
            p.response_header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
        );
    }

    #[test]
    fn client_checks_response() {
        let c = DeflateConfig {
            server_max_window_bits: 10,
            ..cfg()
        };
        assert!(DeflateParams::from_response(
            Some("permessage-deflate; server_max_window_bits=12"),
            &c
        )
        .is_err());
        assert!(
            DeflateParams::from_response(Some("permessage-deflate, permessage-deflate"), &c)
                .is_err()
        );
        assert!(DeflateParams::from_response(Some("foo"), &c).is_err());
        let p =
            DeflateParams::from_response(Some("permessage-deflate; server_max_window_bits=9"), &c)
                .unwrap()
                .unwrap();
        assert_eq!(p.server_max_window_bits, 9);
        let c = DeflateConfig {
            server_no_context_takeover: true,
            ..cfg()
        };
        assert!(DeflateParams::from_response(Some("permessage-deflate"), &c).is_err());
    }

    #[test]
    fn window_survives_reset() {
        let offer = "permessage-deflate; server_no_context_takeover; server_max_window_bits=9";
        let p = DeflateParams::negotiate(offer, &cfg()).unwrap();
        let mut d = Deflater::new(Role::Server, &p, 9, 0);
        let block: Vec<u8> = (0..5_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let payload = [&block[..], &block[..]].concat();
        for _ in 0..3 {
            let z = d.compress(&payload).unwrap().to_vec();
            let mut i = Decompress::new_with_window_bits(false, 9);
            let mut out = Vec::with_capacity(payload.len() + 100);
            let input = [&z[..], &TRAILER[..]].concat();
            i.decompress_vec(&input, &mut out, FlushDecompress::Sync)
                .unwrap();
            assert_eq!(out, payload);
        }
    }

    #[test]
    fn inflate_limit() {
        let p = DeflateParams::negotiate("permessage-deflate", &cfg()).unwrap();
        let mut d = Deflater::new(Role::Client, &p, 9, 0);
        let big = vec![0u8; 1 << 20];
        let z = d.compress(&big).unwrap().to_vec();
        assert!(z.len() < 2000);
        let mut i = Inflater::new(Role::Server, &p);
        let mut out = Vec::new();
        let r = i
            .inflate(&z, &mut out, 1000)
            .and_then(|_| i.finish_message(&mut out, 1000));
        assert_eq!(r, Err(ProtocolError::MessageTooLarge { max: 1000 }));
        assert!(out.capacity() < 4096);
    }

    /// Regression (found by the `inflater` fuzz target): a bomb fed in
    /// small pieces grew `out` with `Vec::reserve`, whose doubling took the
    /// capacity, and so the inflated bytes, past `max + 1`; and a reused
    /// buffer with a large capacity let the inflater run past the limit
    /// without allocating.
    #[test]
    fn inflate_limit_holds_for_small_pieces_and_reused_buffers() {
        let p = DeflateParams::negotiate("permessage-deflate", &cfg()).unwrap();
        let mut d = Deflater::new(Role::Client, &p, 9, 0);
        let z = d.compress(&vec![0u8; 1 << 20]).unwrap().to_vec();
        let max = 1000;
        for initial_capacity in [0, 600, 1 << 16] {
            for piece in [1, 16, 300] {
                let mut i = Inflater::new(Role::Server, &p);
                let mut out = Vec::with_capacity(initial_capacity);
                let mut r = Ok(());
                for part in z.chunks(piece) {
                    r = i.inflate(part, &mut out, max);
                    assert!(out.len() <= max + 1, "{} bytes", out.len());
                    if r.is_err() {
                        break;
                    }
                }
                let r = r.and_then(|()| i.finish_message(&mut out, max));
                assert_eq!(r, Err(ProtocolError::MessageTooLarge { max }));
                assert!(out.len() <= max + 1, "{} bytes", out.len());
                assert!(out.capacity() <= max + 1, "capacity {}", out.capacity());
            }
        }
    }
}
