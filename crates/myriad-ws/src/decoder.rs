//! The frame decoder: bytes in, events out.

use crate::deflate::{DeflateParams, Inflater};
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
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
            max_buffered_frame: 64 << 10,
        }
    }
}

/// Capacity above which the reassembly buffer is shrunk after a message.
const RETAIN_CAPACITY: usize = 256 << 10;

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
    partial: Option<Partial>,
    message: Option<Message>,
    buf: Vec<u8>,
    utf8: Utf8Validator,
    closed: bool,
    failed: Option<ProtocolError>,
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
            partial: None,
            message: None,
            buf: Vec::new(),
            utf8: Utf8Validator::new(),
            closed: false,
            failed: None,
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
    }

    /// The limits in force.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
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
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.feed_inner(input, on_event);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
            self.partial = None;
            self.message = None;
            self.buf.clear();
        }
        r
    }

    fn feed_inner<F>(&mut self, input: &mut [u8], on_event: &mut F) -> Result<usize, ProtocolError>
    where
        F: FnMut(Event<'_>),
    {
        let mut pos = 0usize;
        loop {
            if self.closed {
                return Ok(input.len());
            }
            if let Some(mut p) = self.partial {
                let avail = (input.len() - pos) as u64;
                let take = p.remaining.min(avail) as usize;
                if take == 0 && p.remaining > 0 {
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
                return Ok(pos);
            };
            self.check_header(&h)?;
            // check_header bounded the length by max_frame_size (a usize)
            let plen = h.payload_len as usize;
            let total = hlen + plen;
            let whole = input.len() - pos >= total;
            if h.opcode.is_control() {
                if !whole {
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
                return Ok(pos);
            }
            // a large frame: stream its payload into the reassembly buffer
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
