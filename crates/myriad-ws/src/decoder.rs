//! The frame decoder: bytes in, events out.

use std::cell::Cell;

use crate::deflate::{DeflateParams, InflateMode, Inflater};
use crate::error::ProtocolError;
use crate::frame::{CloseCode, FrameHeader, MessageKind, OpCode, Role};
use crate::mask::apply_mask;
use crate::utf8::Utf8Validator;

/// A received message or control frame.
///
/// Payloads are borrowed: from the caller's input buffer when a whole
/// unfragmented, uncompressed message was in it (zero copy), otherwise from
/// the decoder's reassembly buffer. Either way they are valid only during the
/// callback.
///
/// ```
/// use myriad_ws::Event;
/// let e = Event::Text("hi");
/// assert!(matches!(e, Event::Text("hi")));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete text message (valid UTF-8).
    Text(&'a str),
    /// A complete binary message.
    Binary(&'a [u8]),
    /// A ping (a [`crate::ServerConnection`] / [`crate::ClientConnection`]
    /// has already queued the pong).
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// A close frame. `code` is `None` for an empty close payload.
    Close {
        /// The status code, if any.
        code: Option<CloseCode>,
        /// The UTF-8 reason (may be empty).
        reason: &'a str,
    },
}

/// Limits applied by the [`Decoder`].
///
/// ```
/// use myriad_ws::DecoderConfig;
/// let c = DecoderConfig { max_message_size: 1 << 20, ..DecoderConfig::default() };
/// assert!(c.max_frame_size >= 125);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Largest frame payload accepted (1009 above it).
    pub max_frame_size: usize,
    /// Largest message (after reassembly and inflation) accepted (1009).
    pub max_message_size: usize,
    /// Data frames whose total size (header and payload) is at most this
    /// are decoded only once they are whole in the input (the decoder
    /// returns a smaller consumed count and waits for the caller to show the
    /// bytes again with more behind them); this is what makes the zero-copy
    /// path possible. Larger frames are streamed: their payload is consumed
    /// as it arrives into the reassembly buffer. The caller must be able to
    /// keep at least this many unconsumed bytes.
    pub max_buffered_frame: usize,
    /// permessage-deflate: a compressed message may inflate to at most this
    /// many times its compressed size plus 64 KiB
    /// ([`crate::INFLATE_RATIO_SLACK`]); beyond, the connection
    /// fails with 1009 ([`ProtocolError::InflateRatio`]). Bounds the
    /// inflation work tiny messages can cause (deflate reaches about 1032:1
    /// on runs of one byte). 0: no bound.
    pub max_inflate_ratio: u32,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
            max_buffered_frame: 64 << 10,
            max_inflate_ratio: 128,
        }
    }
}

/// Capacity above which the reassembly buffer is shrunk after a message.
const RETAIN_CAPACITY: usize = 256 << 10;

/// Capacity of the reassembly buffer kept by [`Decoder::reset`].
const POOLED_CAPACITY: usize = 64 << 10;

#[derive(Debug, Clone, Copy)]
struct Partial {
    mask: Option<[u8; 4]>,
    remaining: u64,
    offset: usize,
    fin: bool,
}

#[derive(Debug, Clone, Copy)]
struct Message {
    kind: MessageKind,
    compressed: bool,
}

/// How far the UTF-8 pre-check of a small text frame that is still
/// incomplete (not consumed, shown again with more bytes) has got, so that
/// each byte is checked once however the frame is dribbled in.
#[derive(Debug, Clone)]
struct Precheck {
    mask: Option<[u8; 4]>,
    payload_len: u64,
    checked: usize,
    utf8: Utf8Validator,
}

/// A sans-I/O WebSocket frame decoder (RFC 6455, optional permessage-deflate).
///
/// Feed it the received bytes as a mutable slice: complete frames are
/// unmasked in place and reported through the callback; the return value is
/// the number of bytes consumed. Unconsumed bytes (an incomplete frame) must
/// be shown again, at the front of the next call's input, as the engine does
/// with its receive buffers. Consumed bytes are never looked at again, so
/// nothing is unmasked twice.
///
/// After a close frame the decoder is closed: the rest of the input is
/// consumed and ignored. After an error every call returns the same error.
///
/// ```
/// use myriad_ws::{Decoder, Event, Role};
/// // a masked "Hello" from a client (RFC 6455 section 5.7)
/// let mut input = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
/// let mut dec = Decoder::new(Role::Server);
/// let mut got = String::new();
/// let n = dec.feed(&mut input[..4], &mut |_: Event<'_>| {}).unwrap();
/// assert_eq!(n, 0); // incomplete: nothing consumed
/// let n = dec.feed(&mut input, &mut |e| {
///     if let Event::Text(t) = e { got.push_str(t) }
/// }).unwrap();
/// assert_eq!((n, got.as_str()), (11, "Hello"));
/// ```
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    config: DecoderConfig,
    inflater: Option<Inflater>,
    precheck: Option<Box<Precheck>>,
    partial: Option<Partial>,
    message: Option<Message>,
    buf: Vec<u8>,
    utf8: Utf8Validator,
    closed: bool,
    failed: Option<ProtocolError>,
    wanted: usize,
    /// Payload bytes the UTF-8 pre-check looked at (tests).
    #[cfg(test)]
    prechecked: usize,
}

impl Decoder {
    /// A decoder for `role` with the default limits.
    pub fn new(role: Role) -> Self {
        Self::with_config(role, DecoderConfig::default())
    }

    /// A decoder for `role` with the given limits.
    ///
    /// ```
    /// use myriad_ws::{Decoder, DecoderConfig, Role};
    /// let dec = Decoder::with_config(Role::Client, DecoderConfig::default());
    /// assert!(!dec.is_closed());
    /// ```
    pub fn with_config(role: Role, config: DecoderConfig) -> Self {
        Decoder {
            role,
            config,
            inflater: None,
            precheck: None,
            partial: None,
            message: None,
            buf: Vec::new(),
            utf8: Utf8Validator::new(),
            closed: false,
            failed: None,
            wanted: 2,
            #[cfg(test)]
            prechecked: 0,
        }
    }

    /// Enables permessage-deflate with the negotiated parameters (RSV1 is
    /// then accepted on the first frame of a data message).
    ///
    /// ```
    /// use myriad_ws::{Decoder, DeflateConfig, DeflateParams, Role};
    /// let p = DeflateParams::negotiate("permessage-deflate", &DeflateConfig::default()).unwrap();
    /// let mut dec = Decoder::new(Role::Server);
    /// dec.set_deflate(Some(&p));
    /// ```
    pub fn set_deflate(&mut self, params: Option<&DeflateParams>) {
        self.inflater = params.map(|p| Inflater::new(self.role, p));
        if let Some(i) = self.inflater.as_mut() {
            i.set_max_ratio(self.config.max_inflate_ratio);
        }
    }

    /// Takes the inflater's settings out of an idle decoder (one whose
    /// inflater holds no stream), for a connection that parks it.
    pub(crate) fn take_inflate_mode(&mut self) -> Option<InflateMode> {
        self.inflater.take().map(|i| i.mode())
    }

    /// Re-installs the inflater of a connection taking a decoder back.
    pub(crate) fn set_inflate_mode(&mut self, mode: Option<InflateMode>) {
        self.inflater = mode.map(Inflater::from_mode);
        if let Some(i) = self.inflater.as_mut() {
            i.set_max_ratio(self.config.max_inflate_ratio);
        }
    }

    /// Whether the inflater holds a zlib stream now (context takeover, or a
    /// compressed message in progress).
    pub fn holds_zlib_stream(&self) -> bool {
        self.inflater.as_ref().is_some_and(Inflater::holds_stream)
    }

    /// The limits in force.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// How many unconsumed bytes the decoder needs to see (counted from the
    /// first unconsumed byte) before the next `feed` can make progress: the
    /// rest of a frame header, or a whole small frame it waits for. A hint
    /// for sizing the engine's reassembly of unconsumed bytes; never more
    /// than `max(max_buffered_frame, 139)`.
    ///
    /// ```
    /// use myriad_ws::{Decoder, Role};
    /// let mut dec = Decoder::new(Role::Server);
    /// let mut part = [0x82, 0x85, 1, 2]; // header of a 5-byte masked frame
    /// assert_eq!(dec.feed(&mut part, &mut |_| {}), Ok(0));
    /// assert_eq!(dec.wanted(), 6);
    /// let mut part = [0x82, 0x85, 1, 2, 3, 4, 0];
    /// assert_eq!(dec.feed(&mut part, &mut |_| {}), Ok(0));
    /// assert_eq!(dec.wanted(), 11);
    /// ```
    pub fn wanted(&self) -> usize {
        self.wanted
    }

    /// Whether a close frame has been received.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether a fragmented or streamed message is being assembled (its
    /// data lives in the decoder's own buffer).
    pub fn in_message(&self) -> bool {
        self.message.is_some()
    }

    /// Whether the decoder holds no state between two reads: no message or
    /// frame in progress (nor the UTF-8 pre-check of an incomplete text
    /// frame), no compression context (an inflater without context takeover
    /// holds none between messages), not closed or failed. An idle decoder
    /// can be detached from its connection and reused by another (see
    /// [`crate::ServerConnection::park_decoder`]).
    ///
    /// ```
    /// use myriad_ws::{Decoder, Role};
    /// let mut dec = Decoder::new(Role::Server);
    /// assert!(dec.is_idle());
    /// let mut part = [0x01, 0x81, 0, 0, 0, 0, b'a']; // first fragment of a text message
    /// dec.feed(&mut part, &mut |_| {}).unwrap();
    /// assert!(!dec.is_idle());
    /// ```
    pub fn is_idle(&self) -> bool {
        self.partial.is_none()
            && self.message.is_none()
            && self.precheck.is_none()
            && self.inflater.as_ref().is_none_or(|i| !i.holds_stream())
            && !self.closed
            && self.failed.is_none()
    }

    /// Makes the decoder as new for `role` and `config`, keeping (up to a
    /// small bound) the capacity of its reassembly buffer.
    ///
    /// ```
    /// use myriad_ws::{Decoder, DecoderConfig, Role};
    /// let mut dec = Decoder::new(Role::Client);
    /// dec.reset(Role::Server, DecoderConfig::default());
    /// assert!(dec.is_idle());
    /// ```
    pub fn reset(&mut self, role: Role, config: DecoderConfig) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        if buf.capacity() > POOLED_CAPACITY {
            buf = Vec::new();
        }
        *self = Decoder {
            buf,
            ..Decoder::with_config(role, config)
        };
    }

    /// Releases memory held between messages (the reassembly buffer, and the
    /// inflater's window when the peer does not keep its context). Useful
    /// for connections going idle.
    pub fn release_memory(&mut self) {
        if self.message.is_none() {
            self.buf = Vec::new();
            if let Some(i) = self.inflater.as_mut() {
                i.release();
            }
        }
    }

    /// Decodes as many frames from `input` as possible, calling `on_event`
    /// for each message and control frame, and returns how many bytes were
    /// consumed. On error the caller should send a close frame with
    /// [`ProtocolError::close_code`] and drop the connection.
    pub fn feed<F>(&mut self, input: &mut [u8], on_event: &mut F) -> Result<usize, ProtocolError>
    where
        F: FnMut(Event<'_>),
    {
        self.feed_until(input, on_event, &Cell::new(false))
    }

    /// [`Decoder::feed`] that stops at the next frame boundary once `stop`
    /// is set (by `on_event`, typically when the replies it queued passed
    /// the connection's high-water mark): the rest of `input` is not
    /// consumed, so that a peer cannot make the receiver decode, inflate
    /// and answer everything one receive holds while its replies cannot be
    /// sent.
    pub(crate) fn feed_until<F>(
        &mut self,
        input: &mut [u8],
        on_event: &mut F,
        stop: &Cell<bool>,
    ) -> Result<usize, ProtocolError>
    where
        F: FnMut(Event<'_>),
    {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.feed_inner(input, on_event, stop);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
            self.partial = None;
            self.message = None;
            self.precheck = None;
            self.buf.clear();
            if let Some(i) = self.inflater.as_mut() {
                i.release();
            }
        }
        r
    }

    fn feed_inner<F>(
        &mut self,
        input: &mut [u8],
        on_event: &mut F,
        stop: &Cell<bool>,
    ) -> Result<usize, ProtocolError>
    where
        F: FnMut(Event<'_>),
    {
        let mut pos = 0usize;
        loop {
            if self.closed {
                return Ok(input.len());
            }
            if stop.get() && self.partial.is_none() {
                // at a frame boundary: the caller keeps the rest
                self.wanted = 1;
                return Ok(pos);
            }
            if let Some(mut p) = self.partial {
                let avail = (input.len() - pos) as u64;
                let take = p.remaining.min(avail) as usize;
                if take == 0 && p.remaining > 0 {
                    self.wanted = 1;
                    return Ok(pos);
                }
                let chunk = &mut input[pos..pos + take];
                if let Some(m) = p.mask {
                    apply_mask(chunk, m, p.offset);
                }
                self.absorb(chunk)?;
                pos += take;
                p.remaining -= take as u64;
                p.offset += take;
                if p.remaining == 0 {
                    self.partial = None;
                    if p.fin {
                        self.complete_message(on_event)?;
                    }
                } else {
                    self.partial = Some(p);
                }
                continue;
            }
            let Some((h, hlen)) = FrameHeader::parse(&input[pos..])? else {
                self.wanted = header_needed(&input[pos..]);
                return Ok(pos);
            };
            self.check_header(&h)?;
            // check_header bounded the length by max_frame_size (a usize)
            let plen = h.payload_len as usize;
            let total = hlen.saturating_add(plen);
            let whole = input.len() - pos >= total;
            if h.opcode.is_control() {
                if !whole {
                    self.wanted = total;
                    return Ok(pos);
                }
                let payload = &mut input[pos + hlen..pos + total];
                if let Some(m) = h.mask {
                    apply_mask(payload, m, 0);
                }
                self.control(h.opcode, payload, on_event)?;
                pos += total;
                continue;
            }
            if whole {
                self.precheck = None;
                let payload = &mut input[pos + hlen..pos + total];
                if let Some(m) = h.mask {
                    apply_mask(payload, m, 0);
                }
                if h.fin && !h.rsv1 && h.opcode != OpCode::Continuation {
                    // zero copy: the whole message is in the caller's buffer
                    if h.opcode == OpCode::Text {
                        let text = simdutf8::basic::from_utf8(payload)
                            .map_err(|_| ProtocolError::InvalidUtf8)?;
                        on_event(Event::Text(text));
                    } else {
                        on_event(Event::Binary(payload));
                    }
                } else {
                    self.start_message(&h);
                    self.absorb(payload)?;
                    if h.fin {
                        self.complete_message(on_event)?;
                    }
                }
                pos += total;
                continue;
            }
            if total <= self.config.max_buffered_frame {
                // Fail fast on invalid UTF-8 in the part that did arrive,
                // checking a masked copy (the bytes stay untouched until the
                // frame is whole).
                self.precheck_utf8(&h, &input[pos + hlen..])?;
                self.wanted = total;
                return Ok(pos);
            }
            // a large frame: stream its payload into the reassembly buffer
            self.precheck = None;
            self.start_message(&h);
            self.partial = Some(Partial {
                mask: h.mask,
                remaining: h.payload_len,
                offset: 0,
                fin: h.fin,
            });
            pos += hlen;
        }
    }

    fn check_header(&self, h: &FrameHeader) -> Result<(), ProtocolError> {
        if h.rsv2 || h.rsv3 {
            return Err(ProtocolError::ReservedBits);
        }
        if h.rsv1 && !(self.inflater.is_some() && matches!(h.opcode, OpCode::Text | OpCode::Binary))
        {
            return Err(ProtocolError::ReservedBits);
        }
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if h.opcode.is_control() {
            if !h.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if h.payload_len > 125 {
                return Err(ProtocolError::ControlFrameTooLong);
            }
            return Ok(());
        }
        match (h.opcode, self.message.is_some()) {
            (OpCode::Continuation, false) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, true) => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            _ => {}
        }
        if h.payload_len > self.config.max_frame_size as u64 {
            return Err(ProtocolError::FrameTooLarge {
                len: h.payload_len,
                max: self.config.max_frame_size,
            });
        }
        let compressed = match self.message {
            Some(m) => m.compressed,
            None => h.rsv1,
        };
        if !compressed
            && self.buf.len() as u64 + h.payload_len > self.config.max_message_size as u64
        {
            return Err(ProtocolError::MessageTooLarge {
                max: self.config.max_message_size,
            });
        }
        Ok(())
    }

    /// Fails fast on invalid UTF-8 in the received part of an incomplete
    /// small text frame. The frame stays unconsumed and is shown again with
    /// more bytes behind it; the validator state is kept between calls, so
    /// each byte is checked once (a frame dribbled in byte by byte costs
    /// linear, not quadratic, work).
    fn precheck_utf8(&mut self, h: &FrameHeader, prefix: &[u8]) -> Result<(), ProtocolError> {
        let start = match (h.opcode, self.message) {
            (OpCode::Text, _) if !h.rsv1 => Utf8Validator::new(),
            (
                OpCode::Continuation,
                Some(Message {
                    kind: MessageKind::Text,
                    compressed: false,
                }),
            ) => self.utf8.clone(),
            _ => return Ok(()),
        };
        let p = match self.precheck.as_mut() {
            Some(p) if p.mask == h.mask && p.payload_len == h.payload_len => p,
            _ => self.precheck.insert(Box::new(Precheck {
                mask: h.mask,
                payload_len: h.payload_len,
                checked: 0,
                utf8: start,
            })),
        };
        // bytes shown before are not looked at again
        let Some(rest) = prefix.get(p.checked..) else {
            return Ok(());
        };
        let mut buf = [0u8; 256];
        for part in rest.chunks(buf.len()) {
            let b = &mut buf[..part.len()];
            b.copy_from_slice(part);
            if let Some(m) = h.mask {
                apply_mask(b, m, p.checked);
            }
            p.utf8.feed(b)?;
            p.checked += part.len();
            #[cfg(test)]
            {
                self.prechecked += part.len();
            }
        }
        Ok(())
    }

    fn start_message(&mut self, h: &FrameHeader) {
        if h.opcode != OpCode::Continuation {
            let kind = if h.opcode == OpCode::Text {
                MessageKind::Text
            } else {
                MessageKind::Binary
            };
            self.message = Some(Message {
                kind,
                compressed: h.rsv1,
            });
            self.buf.clear();
            self.utf8.reset();
        }
    }

    /// Adds a piece of (unmasked) payload to the message being assembled.
    fn absorb(&mut self, chunk: &[u8]) -> Result<(), ProtocolError> {
        let Some(m) = self.message else {
            return Err(ProtocolError::UnexpectedContinuation);
        };
        let max = self.config.max_message_size;
        let start = self.buf.len();
        if m.compressed {
            let inflater = self.inflater.as_mut().ok_or(ProtocolError::ReservedBits)?;
            inflater.inflate(chunk, &mut self.buf, max)?;
        } else {
            if start + chunk.len() > max {
                return Err(ProtocolError::MessageTooLarge { max });
            }
            self.buf.extend_from_slice(chunk);
        }
        if m.kind == MessageKind::Text {
            self.utf8.feed(&self.buf[start..])?;
        }
        Ok(())
    }

    fn complete_message<F>(&mut self, on_event: &mut F) -> Result<(), ProtocolError>
    where
        F: FnMut(Event<'_>),
    {
        let Some(m) = self.message.take() else {
            return Err(ProtocolError::UnexpectedContinuation);
        };
        if m.compressed {
            let start = self.buf.len();
            let max = self.config.max_message_size;
            let inflater = self.inflater.as_mut().ok_or(ProtocolError::ReservedBits)?;
            inflater.finish_message(&mut self.buf, max)?;
            if m.kind == MessageKind::Text {
                self.utf8.feed(&self.buf[start..])?;
            }
        }
        match m.kind {
            MessageKind::Text => {
                self.utf8.finish()?;
                // Validated piecewise already; checking again is the price
                // of having no `unsafe` (SIMD-fast).
                let text = simdutf8::basic::from_utf8(&self.buf)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                on_event(Event::Text(text));
            }
            MessageKind::Binary => on_event(Event::Binary(&self.buf)),
        }
        self.buf.clear();
        if self.buf.capacity() > RETAIN_CAPACITY {
            self.buf.shrink_to(RETAIN_CAPACITY);
        }
        Ok(())
    }

    fn control<F>(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        on_event: &mut F,
    ) -> Result<(), ProtocolError>
    where
        F: FnMut(Event<'_>),
    {
        match opcode {
            OpCode::Ping => on_event(Event::Ping(payload)),
            OpCode::Pong => on_event(Event::Pong(payload)),
            _ => {
                let (code, reason) = parse_close_payload(payload)?;
                self.closed = true;
                on_event(Event::Close { code, reason });
            }
        }
        Ok(())
    }
}

/// Bytes needed for the frame header that starts `rest` (incomplete).
fn header_needed(rest: &[u8]) -> usize {
    match rest {
        [_, b1, ..] => {
            let ext = match b1 & 0x7F {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
        }
        _ => 2,
    }
}

/// Parses and validates a close frame payload: empty, or a valid code
/// followed by a UTF-8 reason.
///
/// ```
/// use myriad_ws::{parse_close_payload, CloseCode, ProtocolError};
/// assert_eq!(parse_close_payload(&[0x03, 0xe8, b'o', b'k']), Ok((Some(CloseCode::NORMAL), "ok")));
/// assert_eq!(parse_close_payload(&[]), Ok((None, "")));
/// assert_eq!(parse_close_payload(&[0x03]), Err(ProtocolError::InvalidClosePayload));
/// assert_eq!(parse_close_payload(&[0x03, 0xed]), Err(ProtocolError::InvalidCloseCode(1005)));
/// ```
pub fn parse_close_payload(payload: &[u8]) -> Result<(Option<CloseCode>, &str), ProtocolError> {
    match payload {
        [] => Ok((None, "")),
        [_] => Err(ProtocolError::InvalidClosePayload),
        [a, b, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*a, *b]));
            if !code.is_valid() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason =
                simdutf8::basic::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok((Some(code), reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::{DeflateConfig, Deflater};

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ev {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, String),
    }

    fn own(e: Event<'_>) -> Ev {
        match e {
            Event::Text(t) => Ev::Text(t.to_owned()),
            Event::Binary(b) => Ev::Binary(b.to_vec()),
            Event::Ping(b) => Ev::Ping(b.to_vec()),
            Event::Pong(b) => Ev::Pong(b.to_vec()),
            Event::Close { code, reason } => Ev::Close(code.map(|c| c.0), reason.to_owned()),
        }
    }

    /// Raw frame builder that can express invalid frames.
    fn raw(b0: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![b0];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n @ 0..=125 => out.push(m | n as u8),
            n @ 126..=0xFFFF => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mut p = payload.to_vec();
        if let Some(k) = mask {
            out.extend_from_slice(&k);
            apply_mask(&mut p, k, 0);
        }
        out.extend_from_slice(&p);
        out
    }

    const K: Option<[u8; 4]> = Some([0x11, 0x22, 0x33, 0x44]);

    /// Feeds `bytes` in pieces of `step`, keeping unconsumed bytes.
    fn run_with(
        dec: &mut Decoder,
        bytes: &[u8],
        step: usize,
    ) -> (Vec<Ev>, Result<(), ProtocolError>) {
        let mut evs = Vec::new();
        let mut pending = Vec::new();
        for chunk in bytes.chunks(step.max(1)) {
            pending.extend_from_slice(chunk);
            match dec.feed(&mut pending, &mut |e| evs.push(own(e))) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(e) => return (evs, Err(e)),
            }
        }
        (evs, Ok(()))
    }

    fn server_run(bytes: &[u8]) -> (Vec<Ev>, Result<(), ProtocolError>) {
        run_with(&mut Decoder::new(Role::Server), bytes, bytes.len())
    }

    fn server_err(bytes: &[u8]) -> ProtocolError {
        server_run(bytes).1.unwrap_err()
    }

    #[test]
    fn protocol_errors_are_1002() {
        let mut cases: Vec<(Vec<u8>, ProtocolError)> = vec![
            (raw(0xA1, K, b"x"), ProtocolError::ReservedBits),
            (raw(0x91, K, b"x"), ProtocolError::ReservedBits),
            (raw(0xC1, K, b"x"), ProtocolError::ReservedBits), // RSV1 without deflate
            (
                raw(0x89, K, &[0u8; 126]),
                ProtocolError::ControlFrameTooLong,
            ),
            (raw(0x09, K, b"x"), ProtocolError::FragmentedControlFrame),
            (raw(0x80, K, b"x"), ProtocolError::UnexpectedContinuation),
            (raw(0x00, K, b"x"), ProtocolError::UnexpectedContinuation),
            (
                [raw(0x01, K, b"a"), raw(0x81, K, b"b")].concat(),
                ProtocolError::ExpectedContinuation,
            ),
            (
                [raw(0x02, K, b"a"), raw(0x02, K, b"b")].concat(),
                ProtocolError::ExpectedContinuation,
            ),
            (raw(0x81, None, b"x"), ProtocolError::UnmaskedFrame),
            (raw(0x88, K, &[3]), ProtocolError::InvalidClosePayload),
            (
                vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4],
                ProtocolError::InvalidLength,
            ),
        ];
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            cases.push((raw(0x80 | op, K, b""), ProtocolError::ReservedOpcode(op)));
        }
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            cases.push((
                raw(0x88, K, &code.to_be_bytes()),
                ProtocolError::InvalidCloseCode(code),
            ));
        }
        for (bytes, err) in cases {
            let got = server_err(&bytes);
            assert_eq!(got, err);
            assert_eq!(got.close_code(), CloseCode::PROTOCOL_ERROR);
        }
        // masked frame at a client
        let mut dec = Decoder::new(Role::Client);
        let (_, r) = run_with(&mut dec, &raw(0x81, K, b"x"), 100);
        assert_eq!(r, Err(ProtocolError::MaskedFrame));
        // and the error sticks
        let (_, r) = run_with(&mut dec, &raw(0x81, None, b"x"), 100);
        assert_eq!(r, Err(ProtocolError::MaskedFrame));
    }

    #[test]
    fn rsv1_rules_with_deflate() {
        let p = DeflateParams::negotiate("permessage-deflate", &DeflateConfig::default()).unwrap();
        for bytes in [
            [raw(0x41, K, b""), raw(0xC0, K, b"")].concat(), // RSV1 on continuation
            raw(0xC9, K, b""),                               // RSV1 on ping
        ] {
            let mut dec = Decoder::new(Role::Server);
            dec.set_deflate(Some(&p));
            let (_, r) = run_with(&mut dec, &bytes, 100);
            assert_eq!(r, Err(ProtocolError::ReservedBits));
        }
    }

    #[test]
    fn valid_close_codes_and_control() {
        // 1012-1014: service restart, try again later, bad gateway (IANA
        // registry; they were refused with 1002 before)
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            let (evs, r) = server_run(&raw(0x88, K, &[&code.to_be_bytes()[..], b"why"].concat()));
            r.unwrap();
            assert_eq!(evs, [Ev::Close(Some(code), "why".into())]);
        }
        let (evs, r) = server_run(
            &[
                raw(0x89, K, &[7; 125]),
                raw(0x8A, K, b""),
                raw(0x88, K, b""),
            ]
            .concat(),
        );
        r.unwrap();
        assert_eq!(
            evs,
            [
                Ev::Ping(vec![7; 125]),
                Ev::Pong(vec![]),
                Ev::Close(None, String::new())
            ]
        );
    }

    #[test]
    fn data_after_close_is_ignored() {
        let bytes = [raw(0x88, K, b""), raw(0x81, K, b"late"), vec![0xFF, 0xFF]].concat();
        let mut dec = Decoder::new(Role::Server);
        let mut input = bytes.clone();
        let mut evs = Vec::new();
        let n = dec.feed(&mut input, &mut |e| evs.push(own(e))).unwrap();
        assert_eq!(n, bytes.len());
        assert_eq!(evs, [Ev::Close(None, String::new())]);
        assert!(dec.is_closed());
    }

    #[test]
    fn control_frames_between_fragments() {
        let bytes = [
            raw(0x01, K, b"fra"),
            raw(0x89, K, b"p1"),
            raw(0x00, K, b"gme"),
            raw(0x8A, K, b"p2"),
            raw(0x80, K, b"nted"),
        ]
        .concat();
        for step in 1..bytes.len() {
            let (evs, r) = run_with(&mut Decoder::new(Role::Server), &bytes, step);
            r.unwrap();
            assert_eq!(
                evs,
                [
                    Ev::Ping(b"p1".to_vec()),
                    Ev::Pong(b"p2".to_vec()),
                    Ev::Text("fragmented".into())
                ]
            );
        }
    }

    /// RFC 6455 section 5.2: non-minimal length encodings fail with 1002
    /// (they were accepted before).
    #[test]
    fn non_minimal_lengths_rejected() {
        for head in [
            &[0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 3][..],
            &[0x82, 0x80 | 126, 0, 3],
        ] {
            let mut f = head.to_vec();
            f.extend_from_slice(&K.unwrap());
            let mut p = *b"abc";
            apply_mask(&mut p, K.unwrap(), 0);
            f.extend_from_slice(&p);
            let (evs, r) = server_run(&f);
            assert!(evs.is_empty());
            assert_eq!(r, Err(ProtocolError::InvalidLength));
            assert_eq!(
                ProtocolError::InvalidLength.close_code(),
                CloseCode::PROTOCOL_ERROR
            );
        }
    }

    #[test]
    fn invalid_utf8_is_1007() {
        let e = server_err(&raw(0x81, K, &[0xCE, 0xBA, 0xE1, 0xBD]));
        assert_eq!(e.close_code(), CloseCode::INVALID_PAYLOAD);
        let e = server_err(&raw(0x88, K, &[0x03, 0xE8, 0xFF]));
        assert_eq!(e, ProtocolError::InvalidUtf8);
        // incomplete code point at the end of the message
        let e = server_err(&[raw(0x01, K, b"ok"), raw(0x80, K, &[0xE2, 0x82])].concat());
        assert_eq!(e, ProtocolError::InvalidUtf8);
    }

    #[test]
    fn utf8_fails_fast_in_first_fragment() {
        // the first fragment alone is invalid; the message never completes
        let (evs, r) = server_run(&raw(0x01, K, &[b'a', 0xC0, 0xAF]));
        assert_eq!(r, Err(ProtocolError::InvalidUtf8));
        assert!(evs.is_empty());
        // an invalid prefix at the end of a fragment (U+110000 and beyond)
        let (_, r) = server_run(&raw(0x01, K, &[b'a', 0xF4, 0x90]));
        assert_eq!(r, Err(ProtocolError::InvalidUtf8));
        // invalid in the 2nd of 3 fragments: fails before the third arrives
        let (_, r) = server_run(
            &[
                raw(0x01, K, "κόσμε".as_bytes()),
                raw(0x00, K, &[0xF4, 0x90, 0x80, 0x80]),
            ]
            .concat(),
        );
        assert_eq!(r, Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn utf8_fails_fast_inside_an_incomplete_frame() {
        // one text frame, arriving in parts: the invalid byte is seen before
        // the frame is complete (and before it is consumed)
        let mut payload = b"valid start ".to_vec();
        payload.extend_from_slice(&[0xF4, 0x90, 0x80, 0x80]);
        payload.extend_from_slice(&[b'z'; 40]);
        let f = raw(0x81, K, &payload);
        let mut dec = Decoder::new(Role::Server);
        let mut part = f[..6 + 13].to_vec();
        assert_eq!(dec.feed(&mut part, &mut |_| {}), Ok(0));
        let mut part = f[..6 + 14].to_vec();
        assert_eq!(
            dec.feed(&mut part, &mut |_| {}),
            Err(ProtocolError::InvalidUtf8)
        );
        // same in a continuation frame, with state carried from the 1st fragment
        let f = [
            raw(0x01, K, &[0xE2, 0x82]),
            raw(0x80, K, &[0xAC, 0xFF, b'a', b'b']),
        ]
        .concat();
        let mut dec = Decoder::new(Role::Server);
        let mut part = f[..f.len() - 2].to_vec();
        assert_eq!(
            dec.feed(&mut part, &mut |_| {}),
            Err(ProtocolError::InvalidUtf8)
        );
        // valid prefixes are not an error, and bytes are unmasked once
        let text = "€uro".repeat(5);
        let f = raw(0x81, K, text.as_bytes());
        for step in 1..f.len() {
            let (evs, r) = run_with(&mut Decoder::new(Role::Server), &f, step);
            r.unwrap();
            assert_eq!(evs, [Ev::Text(text.clone())]);
        }
    }

    /// A small text frame dribbled in one byte at a time stays unconsumed
    /// until whole and is shown again on every read: the UTF-8 pre-check
    /// looks at each byte once (it re-validated from the frame's start on
    /// every read: quadratic, 2 GB of work for a 64 KiB frame).
    #[test]
    fn utf8_precheck_is_incremental() {
        let text = "añ€😀 ".repeat(1000);
        let f = raw(0x81, K, text.as_bytes());
        let mut dec = Decoder::new(Role::Server);
        let (evs, r) = run_with(&mut dec, &f, 1);
        r.unwrap();
        assert_eq!(evs, [Ev::Text(text.clone())]);
        assert!(
            dec.prechecked <= text.len(),
            "{} bytes checked for a {}-byte frame",
            dec.prechecked,
            text.len()
        );
        assert!(dec.is_idle());
        // a continuation frame dribbled in, with state carried from the 1st
        let f = [
            raw(0x01, K, &[0xE2, 0x82]),
            raw(0x80, K, &[&[0xAC, 0xFF][..], text.as_bytes()].concat()),
        ]
        .concat();
        let mut dec = Decoder::new(Role::Server);
        let (_, r) = run_with(&mut dec, &f[..f.len() - 100], 1);
        assert_eq!(r, Err(ProtocolError::InvalidUtf8));
        let ok = [
            raw(0x01, K, &[0xE2, 0x82]),
            raw(0x80, K, &[&[0xAC][..], text.as_bytes()].concat()),
        ]
        .concat();
        let mut dec = Decoder::new(Role::Server);
        let (evs, r) = run_with(&mut dec, &ok, 1);
        r.unwrap();
        assert_eq!(evs, [Ev::Text(format!("€{text}"))]);
        assert!(dec.prechecked <= text.len() + 3);
        // an invalid byte late in the frame is still found before it is whole
        let mut bad = text.as_bytes().to_vec();
        bad.extend_from_slice(&[0xFF, b'a', b'b']);
        let f = raw(0x81, K, &bad);
        let mut dec = Decoder::new(Role::Server);
        let mut pending = Vec::new();
        let mut failed_at = None;
        for (n, b) in f.iter().enumerate() {
            pending.push(*b);
            match dec.feed(&mut pending, &mut |_| {}) {
                Ok(k) => {
                    pending.drain(..k);
                }
                Err(e) => {
                    failed_at = Some((n, e));
                    break;
                }
            }
        }
        assert_eq!(failed_at, Some((f.len() - 3, ProtocolError::InvalidUtf8)));
    }

    #[test]
    fn code_points_split_across_fragments() {
        let text = "κόσμε€😀";
        let b = text.as_bytes();
        for i in 0..=b.len() {
            for j in i..=b.len() {
                let bytes = [
                    raw(0x01, K, &b[..i]),
                    raw(0x00, K, &b[i..j]),
                    raw(0x80, K, &b[j..]),
                ]
                .concat();
                let (evs, r) = server_run(&bytes);
                r.unwrap();
                assert_eq!(evs, [Ev::Text(text.into())]);
            }
        }
        // a surrogate split across fragments is still caught at the 2nd one
        let (_, r) = server_run(&[raw(0x01, K, &[0xED]), raw(0x00, K, &[0xA0, 0x80])].concat());
        assert_eq!(r, Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn limits_are_1009() {
        let cfg = DecoderConfig {
            max_frame_size: 100,
            max_message_size: 150,
            max_buffered_frame: 64,
            ..DecoderConfig::default()
        };
        // frame too large: reported from the header alone
        let mut dec = Decoder::with_config(Role::Server, cfg);
        let f = raw(0x82, K, &[0; 101]);
        let (_, r) = run_with(&mut dec, &f[..8], 100);
        assert_eq!(r, Err(ProtocolError::FrameTooLarge { len: 101, max: 100 }));
        // message too large across fragments
        let mut dec = Decoder::with_config(Role::Server, cfg);
        let f = [raw(0x02, K, &[0; 100]), raw(0x80, K, &[0; 51])].concat();
        let (_, r) = run_with(&mut dec, &f, 7);
        assert_eq!(r, Err(ProtocolError::MessageTooLarge { max: 150 }));
        assert_eq!(r.unwrap_err().close_code(), CloseCode::MESSAGE_TOO_BIG);
        // a huge declared length fails without any allocation
        let mut dec = Decoder::new(Role::Server);
        let mut f = vec![0x82, 0x80 | 127];
        f.extend_from_slice(&(1u64 << 62).to_be_bytes());
        f.extend_from_slice(&[1, 2, 3, 4]);
        let (_, r) = run_with(&mut dec, &f, 100);
        assert!(matches!(r, Err(ProtocolError::FrameTooLarge { .. })));
    }

    #[test]
    fn inflated_size_limit() {
        let p = DeflateParams::negotiate("permessage-deflate", &DeflateConfig::default()).unwrap();
        let mut d = Deflater::new(Role::Client, &p, 9, 0);
        let z = d.compress(&vec![b'a'; 100_000]).unwrap().to_vec();
        let cfg = DecoderConfig {
            max_message_size: 10_000,
            ..DecoderConfig::default()
        };
        let mut dec = Decoder::with_config(Role::Server, cfg);
        dec.set_deflate(Some(&p));
        let (_, r) = run_with(&mut dec, &raw(0xC2, K, &z), 1000);
        assert_eq!(r, Err(ProtocolError::MessageTooLarge { max: 10_000 }));
        // a small message inflating far beyond its size: 1009 by the ratio
        // bound, before the message limit is reached
        let z = d.compress(&vec![0u8; 1 << 20]).unwrap().to_vec();
        d.release();
        let mut dec = Decoder::new(Role::Server);
        dec.set_deflate(Some(&p));
        let (evs, r) = run_with(&mut dec, &raw(0xC2, K, &z), 1000);
        assert!(evs.is_empty());
        assert_eq!(r, Err(ProtocolError::InflateRatio { max: 128 }));
        assert_eq!(r.unwrap_err().close_code(), CloseCode::MESSAGE_TOO_BIG);
        assert!(!dec.holds_zlib_stream(), "stream released on failure");
        // ... and accepted when the bound is off
        let cfg = DecoderConfig {
            max_inflate_ratio: 0,
            ..DecoderConfig::default()
        };
        let mut dec = Decoder::with_config(Role::Server, cfg);
        dec.set_deflate(Some(&p));
        let (evs, r) = run_with(&mut dec, &raw(0xC2, K, &z), 1000);
        r.unwrap();
        assert_eq!(evs, [Ev::Binary(vec![0u8; 1 << 20])]);
        // garbage compressed data
        let mut dec = Decoder::new(Role::Server);
        dec.set_deflate(Some(&p));
        let (_, r) = run_with(&mut dec, &raw(0xC2, K, &[0xFF; 20]), 1000);
        assert_eq!(r, Err(ProtocolError::InvalidCompressedData));
    }

    #[test]
    fn zero_copy_for_whole_unfragmented_messages() {
        let mut input = raw(0x82, K, b"payload!");
        let range = input.as_ptr_range();
        let mut inside = false;
        Decoder::new(Role::Server)
            .feed(&mut input, &mut |e| {
                if let Event::Binary(b) = e {
                    inside = range.contains(&b.as_ptr()) && b == b"payload!";
                }
            })
            .unwrap();
        assert!(inside);
    }

    #[test]
    fn small_frames_wait_large_frames_stream() {
        let cfg = DecoderConfig {
            max_buffered_frame: 32,
            ..DecoderConfig::default()
        };
        // small: nothing consumed until whole
        let f = raw(0x82, K, &[5; 20]);
        let mut dec = Decoder::with_config(Role::Server, cfg);
        let mut part = f[..f.len() - 1].to_vec();
        assert_eq!(dec.feed(&mut part, &mut |_| {}).unwrap(), 0);
        // large: payload consumed as it comes, unmasked exactly once
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let f = raw(0x82, K, &payload);
        for step in [1, 3, 13, 100] {
            let mut dec = Decoder::with_config(Role::Server, cfg);
            let (evs, r) = run_with(&mut dec, &f, step);
            r.unwrap();
            assert_eq!(evs, [Ev::Binary(payload.clone())]);
        }
    }

    #[test]
    fn buffer_is_reused() {
        let mut dec = Decoder::new(Role::Server);
        let msg = [raw(0x02, K, &[1; 500]), raw(0x80, K, &[2; 500])].concat();
        let (_, r) = run_with(&mut dec, &msg, 10_000);
        r.unwrap();
        let cap = dec.buf.capacity();
        let ptr = dec.buf.as_ptr();
        for _ in 0..10 {
            let (evs, r) = run_with(&mut dec, &msg, 10_000);
            r.unwrap();
            assert_eq!(evs.len(), 1);
        }
        assert_eq!((dec.buf.capacity(), dec.buf.as_ptr()), (cap, ptr));
        dec.release_memory();
        assert_eq!(dec.buf.capacity(), 0);
    }
}
