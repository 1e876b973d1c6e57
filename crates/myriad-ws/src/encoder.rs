//! The frame encoder: messages in, frames out into a [`Sink`].

use crate::deflate::{deflate_into, Deflater};
use crate::error::Error;
use crate::frame::{write_frame, CloseCode, FrameHeader, MaskGen, MessageKind, OpCode, Role};
use crate::sink::Sink;
use flate2::{Compress, Compression};
use std::sync::Arc;

/// Encodes messages and control frames into a [`Sink`].
///
/// A server encoder writes the header and then hands the payload to the sink
/// untouched (no copy here). A client encoder masks each frame with a fresh
/// key from its [`MaskGen`], through a small stack buffer.
///
/// ```
/// use myriad_ws::{Encoder, Role};
/// let mut out = Vec::new();
/// let mut enc = Encoder::new(Role::Server);
/// enc.text(&mut out, "hi");
/// enc.ping(&mut out, b"p").unwrap();
/// assert_eq!(out, [0x81, 2, b'h', b'i', 0x89, 1, b'p']);
/// ```
#[derive(Debug)]
pub struct Encoder {
    role: Role,
    masks: MaskGen,
    deflater: Option<Box<Deflater>>,
    /// 32 bits (a larger limit is no limit in practice): the encoder lives
    /// in every connection's state, idle ones too.
    max_fragment_size: u32,
}

impl Encoder {
    /// An encoder for `role` (client encoders get a randomly seeded
    /// [`MaskGen`]).
    pub fn new(role: Role) -> Self {
        Self::with_mask_gen(role, MaskGen::new())
    }

    /// An encoder with a given masking key generator.
    ///
    /// ```
    /// use myriad_ws::{Encoder, MaskGen, Role};
    /// let mut a = Encoder::with_mask_gen(Role::Client, MaskGen::from_seed(1));
    /// let mut b = Encoder::with_mask_gen(Role::Client, MaskGen::from_seed(1));
    /// let (mut x, mut y) = (Vec::new(), Vec::new());
    /// a.binary(&mut x, b"same");
    /// b.binary(&mut y, b"same");
    /// assert_eq!(x, y);
    /// ```
    pub fn with_mask_gen(role: Role, masks: MaskGen) -> Self {
        Encoder {
            role,
            masks,
            deflater: None,
            max_fragment_size: 0,
        }
    }

    /// The role this encoder writes for.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Enables (or disables) compression of outgoing data messages.
    ///
    /// ```
    /// use myriad_ws::{Deflater, DeflateConfig, DeflateParams, Encoder, Role};
    /// let p = DeflateParams::negotiate("permessage-deflate", &DeflateConfig::default()).unwrap();
    /// let mut enc = Encoder::new(Role::Server);
    /// enc.set_deflater(Some(Deflater::new(Role::Server, &p, 6, 0)));
    /// let mut out = Vec::new();
    /// enc.text(&mut out, &"abc".repeat(100));
    /// assert_eq!(out[0], 0xC1); // FIN + RSV1 + text
    /// assert!(out.len() < 100);
    /// ```
    pub fn set_deflater(&mut self, deflater: Option<Deflater>) {
        self.deflater = deflater.map(Box::new);
    }

    /// The compressor, if permessage-deflate is on.
    pub fn deflater_mut(&mut self) -> Option<&mut Deflater> {
        self.deflater.as_deref_mut()
    }

    /// The compressor, if permessage-deflate is on.
    pub fn deflater(&self) -> Option<&Deflater> {
        self.deflater.as_deref()
    }

    /// Splits outgoing data messages into frames of at most this many
    /// payload bytes (0, the default: never split; values above
    /// `u32::MAX` count as `u32::MAX`).
    ///
    /// ```
    /// use myriad_ws::{Encoder, Role};
    /// let mut enc = Encoder::new(Role::Server);
    /// enc.set_max_fragment_size(2);
    /// let mut out = Vec::new();
    /// enc.binary(&mut out, b"abc");
    /// assert_eq!(out, [0x02, 2, b'a', b'b', 0x80, 1, b'c']);
    /// ```
    pub fn set_max_fragment_size(&mut self, size: usize) {
        self.max_fragment_size = size.min(u32::MAX as usize) as u32;
    }

    fn mask(&mut self) -> Option<[u8; 4]> {
        match self.role {
            Role::Server => None,
            Role::Client => Some(self.masks.next_mask()),
        }
    }

    /// Writes a single raw frame (no compression, no splitting). Use it to
    /// stream a message in pieces yourself: the first frame with
    /// `OpCode::Text`/`Binary`, then `OpCode::Continuation`, `fin` on the
    /// last. Control payloads over 125 bytes are refused.
    ///
    /// ```
    /// use myriad_ws::{Encoder, OpCode, Role};
    /// let mut enc = Encoder::new(Role::Server);
    /// let mut out = Vec::new();
    /// enc.frame(&mut out, false, OpCode::Text, b"he").unwrap();
    /// enc.frame(&mut out, true, OpCode::Continuation, b"y").unwrap();
    /// assert_eq!(out, [0x01, 2, b'h', b'e', 0x80, 1, b'y']);
    /// ```
    pub fn frame<S: Sink + ?Sized>(
        &mut self,
        sink: &mut S,
        fin: bool,
        opcode: OpCode,
        payload: &[u8],
    ) -> Result<(), Error> {
        if opcode.is_control() && (!fin || payload.len() > 125) {
            return Err(Error::InvalidArgument(
                "control frame over 125 bytes or not final",
            ));
        }
        let mask = self.mask();
        write_frame(sink, FrameHeader::new(fin, opcode, mask, 0), payload);
        Ok(())
    }

    /// Writes a data message: compressed if permessage-deflate is on and the
    /// message is over the threshold, split if a maximum fragment size is set.
    pub fn message<S: Sink + ?Sized>(&mut self, sink: &mut S, kind: MessageKind, payload: &[u8]) {
        let masks = match self.role {
            Role::Server => None,
            Role::Client => Some(&mut self.masks),
        };
        if let Some(d) = self.deflater.as_mut() {
            let compressed = match d.compress(payload) {
                Some(z) => {
                    write_fragments(sink, masks, kind, z, true, self.max_fragment_size as usize);
                    true
                }
                None => false,
            };
            // without context takeover the stream goes back to the
            // thread's pool: an idle connection holds none
            d.release();
            if compressed {
                return;
            }
            let masks = match self.role {
                Role::Server => None,
                Role::Client => Some(&mut self.masks),
            };
            write_fragments(
                sink,
                masks,
                kind,
                payload,
                false,
                self.max_fragment_size as usize,
            );
            return;
        }
        write_fragments(
            sink,
            masks,
            kind,
            payload,
            false,
            self.max_fragment_size as usize,
        );
    }

    /// Writes a text message.
    pub fn text<S: Sink + ?Sized>(&mut self, sink: &mut S, text: &str) {
        self.message(sink, MessageKind::Text, text.as_bytes());
    }

    /// Writes a binary message.
    pub fn binary<S: Sink + ?Sized>(&mut self, sink: &mut S, data: &[u8]) {
        self.message(sink, MessageKind::Binary, data);
    }

    /// Writes a ping (at most 125 bytes).
    pub fn ping<S: Sink + ?Sized>(&mut self, sink: &mut S, payload: &[u8]) -> Result<(), Error> {
        self.frame(sink, true, OpCode::Ping, payload)
    }

    /// Writes a pong (at most 125 bytes).
    pub fn pong<S: Sink + ?Sized>(&mut self, sink: &mut S, payload: &[u8]) -> Result<(), Error> {
        self.frame(sink, true, OpCode::Pong, payload)
    }

    /// Writes a close frame: empty for `None`, else the code and a reason of
    /// at most 123 bytes. Codes that may not be sent (1005, 1006, ...) are
    /// refused.
    ///
    /// ```
    /// use myriad_ws::{CloseCode, Encoder, Role};
    /// let mut enc = Encoder::new(Role::Server);
    /// let mut out = Vec::new();
    /// enc.close(&mut out, Some((CloseCode::NORMAL, "bye"))).unwrap();
    /// assert_eq!(out, [0x88, 5, 0x03, 0xe8, b'b', b'y', b'e']);
    /// assert!(enc.close(&mut out, Some((CloseCode(1005), ""))).is_err());
    /// ```
    pub fn close<S: Sink + ?Sized>(
        &mut self,
        sink: &mut S,
        close: Option<(CloseCode, &str)>,
    ) -> Result<(), Error> {
        let mut buf = [0u8; 125];
        let len = match close {
            None => 0,
            Some((code, reason)) => {
                if !code.is_valid() {
                    return Err(Error::InvalidArgument("close code may not be sent"));
                }
                if reason.len() > 123 {
                    return Err(Error::InvalidArgument("close reason over 123 bytes"));
                }
                buf[..2].copy_from_slice(&code.0.to_be_bytes());
                buf[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
                2 + reason.len()
            }
        };
        self.frame(sink, true, OpCode::Close, &buf[..len])
    }

    /// Writes a [`PreparedMessage`] (server only: client frames need a fresh
    /// mask each). The compressed variant is used when this connection has
    /// permessage-deflate with a window at least as large as the one the
    /// message was compressed with; the connection's own compressor then
    /// starts a fresh context for its next message, because the peer's
    /// inflater has seen bytes our compressor has not.
    ///
    /// ```
    /// use myriad_ws::{Encoder, MessageKind, PreparedMessage, Role};
    /// let msg = PreparedMessage::new(MessageKind::Text, b"tick");
    /// let mut enc = Encoder::new(Role::Server);
    /// let (mut a, mut b) = (Vec::new(), Vec::new());
    /// enc.prepared(&mut a, &msg).unwrap();
    /// enc.prepared(&mut b, &msg).unwrap();
    /// assert_eq!(a, b);
    /// assert_eq!(a, msg.bytes());
    /// ```
    pub fn prepared<S: Sink + ?Sized>(
        &mut self,
        sink: &mut S,
        msg: &PreparedMessage,
    ) -> Result<(), Error> {
        if self.role != Role::Server {
            return Err(Error::InvalidArgument("prepared messages are for servers"));
        }
        if let (Some(d), Some((bits, bytes))) = (self.deflater.as_mut(), msg.deflated.as_ref()) {
            if d.window_bits() >= *bits {
                sink.write_shared(bytes);
                if !d.no_context_takeover() {
                    d.reset_context();
                }
                return Ok(());
            }
        }
        sink.write_shared(&msg.plain);
        Ok(())
    }
}

/// Writes `payload` as one message, split into frames of at most `max`
/// bytes (0 = one frame). RSV1 goes on the first frame only.
fn write_fragments<S: Sink + ?Sized>(
    sink: &mut S,
    mut masks: Option<&mut MaskGen>,
    kind: MessageKind,
    payload: &[u8],
    compressed: bool,
    max: usize,
) {
    let mut opcode = kind.opcode();
    let mut rest = payload;
    let mut first = true;
    loop {
        let take = if max == 0 {
            rest.len()
        } else {
            rest.len().min(max)
        };
        let (part, tail) = rest.split_at(take);
        let mask = masks.as_mut().map(|m| m.next_mask());
        let mut h = FrameHeader::new(tail.is_empty(), opcode, mask, 0);
        h.rsv1 = compressed && first;
        write_frame(sink, h, part);
        if tail.is_empty() {
            return;
        }
        rest = tail;
        opcode = OpCode::Continuation;
        first = false;
    }
}

/// A data message encoded once as server frame bytes, to be written to many
/// connections without encoding again (fan-out, broadcast).
///
/// Server frames are unmasked, so the same bytes are valid on every server
/// connection. With [`PreparedMessage::with_deflate`] a compressed variant is
/// also made, from a fresh compression context: it inflates correctly on any
/// connection that negotiated permessage-deflate with a server window of at
/// least that many bits, whatever the context-takeover settings (the
/// connection's own compressor restarts its context afterwards, see
/// [`Encoder::prepared`]). Connections without deflate, or with a smaller
/// window, get the uncompressed variant. Not for client connections.
///
/// ```
/// use myriad_ws::{MessageKind, PreparedMessage};
/// let msg = PreparedMessage::with_deflate(MessageKind::Text, "x".repeat(500).as_bytes(), 15, 6);
/// assert_eq!(msg.bytes().len(), 4 + 500);
/// assert!(msg.deflated_bytes().unwrap().len() < 50);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedMessage {
    plain: Arc<[u8]>,
    deflated: Option<(u8, Arc<[u8]>)>,
}

impl PreparedMessage {
    /// Encodes an uncompressed, unfragmented server frame.
    pub fn new(kind: MessageKind, payload: &[u8]) -> Self {
        let mut plain = Vec::with_capacity(payload.len() + 10);
        write_frame(
            &mut plain,
            FrameHeader::new(true, kind.opcode(), None, 0),
            payload,
        );
        PreparedMessage {
            plain: plain.into(),
            deflated: None,
        }
    }

    /// Also makes a compressed variant with a `window_bits` (9..=15,
    /// clamped) window at `level` (0..=9), unless compression does not make
    /// the message smaller.
    pub fn with_deflate(kind: MessageKind, payload: &[u8], window_bits: u8, level: u32) -> Self {
        let mut msg = Self::new(kind, payload);
        let bits = window_bits.clamp(9, 15);
        let mut c = Compress::new_with_window_bits(Compression::new(level.min(9)), false, bits);
        let mut z = Vec::new();
        if deflate_into(&mut c, payload, &mut z) && z.len() < payload.len() {
            let mut frame = Vec::with_capacity(z.len() + 10);
            let mut h = FrameHeader::new(true, kind.opcode(), None, 0);
            h.rsv1 = true;
            write_frame(&mut frame, h, &z);
            msg.deflated = Some((bits, frame.into()));
        }
        msg
    }

    /// The uncompressed frame bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.plain
    }

    /// The compressed frame bytes, if any.
    pub fn deflated_bytes(&self) -> Option<&[u8]> {
        self.deflated.as_ref().map(|(_, b)| &b[..])
    }

    /// The uncompressed frame as a shared buffer, to queue on many
    /// connections by reference (valid on every RFC 6455 server connection,
    /// with or without permessage-deflate: RSV1 is clear).
    ///
    /// ```
    /// use myriad_ws::{MessageKind, PreparedMessage};
    /// let msg = PreparedMessage::new(MessageKind::Binary, b"ab");
    /// let a = msg.shared_bytes().clone(); // no copy of the frame
    /// assert_eq!(&a[..], [0x82, 2, b'a', b'b']);
    /// ```
    pub fn shared_bytes(&self) -> &Arc<[u8]> {
        &self.plain
    }
}
