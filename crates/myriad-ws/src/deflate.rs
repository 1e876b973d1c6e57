//! permessage-deflate (RFC 7692): negotiation and the per-connection
//! compressor / decompressor.
//!
//! Compression uses flate2's raw deflate on the zlib-rs backend, which
//! supports window sizes below 15 bits. zlib cannot *compress* with an 8-bit
//! window (it silently uses 9, which a peer limited to 8 could not inflate).
//! When a peer limits our sending window to 8 bits we still accept the
//! extension but send every message uncompressed, which RFC 7692 allows
//! (RSV1 is per message). Inflating with a 9-bit window handles 8-bit
//! streams, so the receiving side is unaffected.

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
/// ```
/// use myriad_ws::DeflateConfig;
/// let cfg = DeflateConfig { server_no_context_takeover: true, ..DeflateConfig::default() };
/// assert_eq!(cfg.client_offer(), "permessage-deflate; server_no_context_takeover; client_max_window_bits");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateConfig {
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
/// assert_eq!(p.response_header(), "permessage-deflate");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// Window of the server's compressor (8..=15).
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
    /// invalid parameters is declined and the next one is tried. `None` means
    /// no permessage-deflate offer was acceptable.
    ///
    /// ```
    /// use myriad_ws::{DeflateConfig, DeflateParams};
    /// let cfg = DeflateConfig::default();
    /// let p = DeflateParams::negotiate(
    ///     "permessage-deflate; foo, permessage-deflate; server_max_window_bits=10",
    ///     &cfg,
    /// ).unwrap();
    /// assert_eq!(p.server_max_window_bits, 10);
    /// assert_eq!(p.response_header(), "permessage-deflate; server_max_window_bits=10");
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
                2 => server_bits = Some(parse_bits(v?)?),
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
        Some(DeflateParams {
            server_no_context_takeover: server_nct || cfg.server_no_context_takeover,
            client_no_context_takeover: client_nct || cfg.client_no_context_takeover,
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
    /// let cfg = DeflateConfig { client_no_context_takeover: true, ..DeflateConfig::default() };
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

/// Compresses outgoing messages for one connection.
///
/// ```
/// use myriad_ws::{Deflater, Inflater, DeflateConfig, DeflateParams, Role};
/// let params = DeflateParams::negotiate("permessage-deflate", &DeflateConfig::default()).unwrap();
/// let mut d = Deflater::new(Role::Server, &params, 6, 0);
/// let mut i = Inflater::new(Role::Client, &params);
/// let msg = b"hello hello hello hello".repeat(10);
/// let compressed = d.compress(&msg).unwrap().to_vec();
/// assert!(compressed.len() < msg.len());
/// let mut out = Vec::new();
/// i.inflate(&compressed, &mut out, 1 << 20).unwrap();
/// i.finish_message(&mut out, 1 << 20).unwrap();
/// assert_eq!(out, msg);
/// ```
#[derive(Debug)]
pub struct Deflater {
    compress: Option<Compress>,
    window_bits: u8,
    no_context_takeover: bool,
    level: u32,
    threshold: usize,
    buf: Vec<u8>,
    /// Set when the peer's view of our stream diverged (a prepared message
    /// was sent in between): the next message starts a fresh context.
    needs_reset: bool,
}

impl Deflater {
    /// The compressor for `role` under the negotiated `params`.
    pub fn new(role: Role, params: &DeflateParams, level: u32, threshold: usize) -> Self {
        let (window_bits, no_context_takeover) = params.sending(role);
        Deflater {
            compress: None,
            window_bits,
            no_context_takeover,
            level: level.min(9),
            threshold,
            buf: Vec::new(),
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

    /// Makes the next message start a fresh compression context (used after
    /// a [`crate::PreparedMessage`] that the peer inflated in between).
    pub fn reset_context(&mut self) {
        self.needs_reset = true;
    }

    /// Compresses one whole message; returns the payload to send with RSV1
    /// set, or `None` if the message should go uncompressed (below the
    /// threshold, an 8-bit window, or compression did not help).
    pub fn compress(&mut self, payload: &[u8]) -> Option<&[u8]> {
        if payload.len() < self.threshold || self.window_bits < 9 {
            return None;
        }
        let c = self.compress.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::new(self.level), false, self.window_bits)
        });
        if self.needs_reset {
            c.reset();
            self.needs_reset = false;
        }
        self.buf.clear();
        let ok = deflate_into(c, payload, &mut self.buf);
        // Incompressible data costs deflate's stored blocks a few bytes per
        // 64 KiB (levels 2-9 fall back to them); level 1's static codes can
        // grow it by up to 1/8. Only a real expansion is sent uncompressed.
        let slack = payload.len() / 256 + 32;
        if !ok || self.buf.len() > payload.len() + slack {
            // A failed or useless compression: the peer has not seen these
            // bytes, so our context diverged from its: start afresh.
            c.reset();
            return None;
        }
        if self.no_context_takeover {
            c.reset();
        }
        Some(&self.buf)
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

/// Inflates incoming compressed messages for one connection, with a limit on
/// the inflated size.
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
    decompress: Option<Decompress>,
    window_bits: u8,
    no_context_takeover: bool,
    stream_ended: bool,
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
        // message; a 15-bit inflater resets without reallocating.
        let window_bits = if no_context_takeover {
            15
        } else {
            bits.clamp(9, 15)
        };
        Inflater {
            decompress: None,
            window_bits,
            no_context_takeover,
            stream_ended: false,
        }
    }

    /// Inflates the next piece of a compressed message, appending to `out`.
    /// Fails with [`ProtocolError::MessageTooLarge`] as soon as `out` would
    /// grow past `max` bytes (a decompression bomb never allocates more than
    /// `max + 1` bytes).
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
        let d = self
            .decompress
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, window_bits));
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
            consumed += (d.total_in() - before_in) as usize;
            let progressed = d.total_in() != before_in || d.total_out() != before_out;
            if out.len() > max {
                return Err(ProtocolError::MessageTooLarge { max });
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
    /// and resets the context if the peer does not keep it.
    pub fn finish_message(&mut self, out: &mut Vec<u8>, max: usize) -> Result<(), ProtocolError> {
        if !self.stream_ended {
            self.inflate(&TRAILER, out, max)?;
        }
        if self.no_context_takeover || self.stream_ended {
            if let Some(d) = self.decompress.as_mut() {
                d.reset(false);
            }
            self.stream_ended = false;
        }
        Ok(())
    }

    /// Drops the inflater's memory (the window); it is re-created on the
    /// next compressed message. Only correct without context takeover.
    pub fn release(&mut self) {
        if self.no_context_takeover {
            self.decompress = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DeflateConfig {
        DeflateConfig::default()
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

    #[test]
    fn window_8_is_accepted_but_not_used_for_sending() {
        let p = DeflateParams::negotiate("permessage-deflate; server_max_window_bits=8", &cfg())
            .unwrap();
        assert_eq!(p.server_max_window_bits, 8);
        assert_eq!(
            p.response_header(),
            "permessage-deflate; server_max_window_bits=8"
        );
        let mut d = Deflater::new(Role::Server, &p, 6, 0);
        assert!(d.compress(&[b'a'; 1000]).is_none());
        // a client limited to 8 bits is inflated fine with 9
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
    fn server_config_limits() {
        let c = DeflateConfig {
            server_max_window_bits: 10,
            client_max_window_bits: 11,
            ..cfg()
        };
        let p = DeflateParams::negotiate("permessage-deflate; client_max_window_bits", &c).unwrap();
        assert_eq!(
            p.response_header(),
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=11"
        );
        // without client_max_window_bits in the offer, the client cannot be limited
        let p = DeflateParams::negotiate("permessage-deflate", &c).unwrap();
        assert_eq!(p.client_max_window_bits, 15);
        assert_eq!(
            p.response_header(),
            "permessage-deflate; server_max_window_bits=10"
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
