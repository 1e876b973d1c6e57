//! Frame headers, opcodes, close codes and low-level frame encoding.

use crate::error::ProtocolError;
use crate::mask::apply_mask;
use crate::sink::Sink;

/// Which side of the connection a codec is for. Clients mask the frames they
/// send and require unmasked frames; servers the other way round.
///
/// ```
/// use myriad_ws::Role;
/// assert_ne!(Role::Server, Role::Client);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepting side: receives masked frames, sends unmasked ones.
    Server,
    /// Connecting side: receives unmasked frames, sends masked ones.
    Client,
}

/// A frame opcode (RFC 6455 section 5.2). Reserved opcodes are rejected when
/// parsing and cannot be represented.
///
/// ```
/// use myriad_ws::OpCode;
/// assert_eq!(OpCode::from_u8(0x1), Some(OpCode::Text));
/// assert_eq!(OpCode::from_u8(0x3), None);
/// assert!(OpCode::Ping.is_control());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: continuation of a fragmented message.
    Continuation,
    /// 0x1: first frame of a text message.
    Text,
    /// 0x2: first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Decodes the 4-bit opcode; `None` for a reserved value.
    ///
    /// ```
    /// use myriad_ws::OpCode;
    /// assert_eq!(OpCode::from_u8(0xA), Some(OpCode::Pong));
    /// ```
    pub fn from_u8(v: u8) -> Option<OpCode> {
        Some(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// The 4-bit wire value.
    ///
    /// ```
    /// use myriad_ws::OpCode;
    /// assert_eq!(OpCode::Close.as_u8(), 8);
    /// ```
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, ping and pong are control opcodes.
    ///
    /// ```
    /// use myriad_ws::OpCode;
    /// assert!(!OpCode::Binary.is_control());
    /// ```
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// The kind of a data message.
///
/// ```
/// use myriad_ws::{MessageKind, OpCode};
/// assert_eq!(MessageKind::Text.opcode(), OpCode::Text);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// UTF-8 text.
    Text,
    /// Arbitrary bytes.
    Binary,
}

impl MessageKind {
    /// The opcode of the first frame of such a message.
    ///
    /// ```
    /// use myriad_ws::{MessageKind, OpCode};
    /// assert_eq!(MessageKind::Binary.opcode(), OpCode::Binary);
    /// ```
    pub fn opcode(self) -> OpCode {
        match self {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        }
    }
}

/// A close status code (RFC 6455 section 7.4).
///
/// ```
/// use myriad_ws::CloseCode;
/// assert!(CloseCode::NORMAL.is_valid());
/// assert!(CloseCode(4000).is_valid());
/// assert!(!CloseCode(1005).is_valid()); // may never be sent
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: unsupported data type.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: no status code was present (never sent on the wire).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: abnormal closure (never sent on the wire).
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: invalid payload data (bad UTF-8).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: policy violation.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: message too big.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: internal server error.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);

    /// 1012: service restart (IANA WebSocket close code registry).
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later (IANA registry).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: bad gateway (IANA registry).
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);

    /// Whether this code may appear in a close frame on the wire: 1000-1003,
    /// 1007-1014 (RFC 6455 and the IANA registry: 1012 service restart,
    /// 1013 try again later, 1014 bad gateway) and the application/library
    /// ranges 3000-4999. Everything else (0-999, 1004-1006, 1015 which
    /// may never be sent, unassigned 1016-2999, 5000 and up) is rejected
    /// with a protocol error.
    ///
    /// ```
    /// use myriad_ws::CloseCode;
    /// assert!(CloseCode(1011).is_valid());
    /// assert!(CloseCode(1013).is_valid());
    /// assert!(!CloseCode(1015).is_valid());
    /// assert!(!CloseCode(1016).is_valid());
    /// assert!(!CloseCode(5000).is_valid());
    /// ```
    pub fn is_valid(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(v: u16) -> Self {
        CloseCode(v)
    }
}

/// A parsed frame header (RFC 6455 section 5.2).
///
/// ```
/// use myriad_ws::{FrameHeader, OpCode};
/// let h = FrameHeader::new(true, OpCode::Text, None, 5);
/// let mut buf = [0u8; FrameHeader::MAX_LEN];
/// let n = h.encode(&mut buf);
/// assert_eq!(&buf[..n], &[0x81, 5]);
/// let (parsed, len) = FrameHeader::parse(&buf[..n]).unwrap().unwrap();
/// assert_eq!((parsed, len), (h, 2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Last frame of a message.
    pub fin: bool,
    /// RSV1 (per-message compressed, with permessage-deflate).
    pub rsv1: bool,
    /// RSV2 (no extension defines it here).
    pub rsv2: bool,
    /// RSV3 (no extension defines it here).
    pub rsv3: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// The largest possible header: 2 + 8 (length) + 4 (mask) bytes.
    pub const MAX_LEN: usize = 14;

    /// A header with the reserved bits clear.
    ///
    /// ```
    /// use myriad_ws::{FrameHeader, OpCode};
    /// let h = FrameHeader::new(false, OpCode::Binary, Some([1, 2, 3, 4]), 300);
    /// assert_eq!(h.encoded_len(), 2 + 2 + 4);
    /// ```
    pub fn new(fin: bool, opcode: OpCode, mask: Option<[u8; 4]>, payload_len: u64) -> Self {
        FrameHeader {
            fin,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask,
            payload_len,
        }
    }

    /// Parses a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold the whole header, and
    /// `Ok(Some((header, header_len)))` otherwise. Reserved opcodes, a
    /// 64-bit length with the high bit set and a length not encoded in the
    /// minimal number of bytes (RFC 6455 section 5.2: "the minimal number of
    /// bytes MUST be used") are errors; all other checks (reserved bits,
    /// control frame rules, masking direction) depend on the connection and
    /// are done by [`crate::Decoder`].
    ///
    /// ```
    /// use myriad_ws::{FrameHeader, ProtocolError};
    /// assert_eq!(FrameHeader::parse(&[0x81]), Ok(None));
    /// assert_eq!(FrameHeader::parse(&[0x83, 0]), Err(ProtocolError::ReservedOpcode(3)));
    /// // 5 in a 16-bit length
    /// assert_eq!(FrameHeader::parse(&[0x82, 126, 0, 5]), Err(ProtocolError::InvalidLength));
    /// ```
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let (b0, b1) = match buf {
            [b0, b1, ..] => (*b0, *b1),
            _ => return Ok(None),
        };
        let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(ProtocolError::ReservedOpcode(b0 & 0x0F))?;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7F;
        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let total = 2 + ext + if masked { 4 } else { 0 };
        if buf.len() < total {
            // still report an invalid 64-bit length as early as possible
            if ext == 8 && buf.len() > 2 && buf[2] & 0x80 != 0 {
                return Err(ProtocolError::InvalidLength);
            }
            return Ok(None);
        }
        let payload_len = match ext {
            2 => {
                let v = u64::from(u16::from_be_bytes([buf[2], buf[3]]));
                if v < 126 {
                    return Err(ProtocolError::InvalidLength);
                }
                v
            }
            8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[2..10]);
                let v = u64::from_be_bytes(b);
                if v & (1 << 63) != 0 || v <= 0xFFFF {
                    return Err(ProtocolError::InvalidLength);
                }
                v
            }
            _ => u64::from(len7),
        };
        let mask = if masked {
            let m = 2 + ext;
            Some([buf[m], buf[m + 1], buf[m + 2], buf[m + 3]])
        } else {
            None
        };
        Ok(Some((
            FrameHeader {
                fin: b0 & 0x80 != 0,
                rsv1: b0 & 0x40 != 0,
                rsv2: b0 & 0x20 != 0,
                rsv3: b0 & 0x10 != 0,
                opcode,
                mask,
                payload_len,
            },
            total,
        )))
    }

    /// The number of bytes [`FrameHeader::encode`] writes (minimal length
    /// encoding).
    ///
    /// ```
    /// use myriad_ws::{FrameHeader, OpCode};
    /// assert_eq!(FrameHeader::new(true, OpCode::Text, None, 70_000).encoded_len(), 10);
    /// ```
    pub fn encoded_len(&self) -> usize {
        let len = match self.payload_len {
            0..=125 => 2,
            126..=0xFFFF => 4,
            _ => 10,
        };
        len + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Writes the header (minimal length encoding) into `out` and returns its
    /// length.
    ///
    /// ```
    /// use myriad_ws::{FrameHeader, OpCode};
    /// let mut buf = [0u8; FrameHeader::MAX_LEN];
    /// let n = FrameHeader::new(true, OpCode::Binary, None, 200).encode(&mut buf);
    /// assert_eq!(&buf[..n], &[0x82, 126, 0, 200]);
    /// ```
    pub fn encode(&self, out: &mut [u8; FrameHeader::MAX_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7)
            | (u8::from(self.rsv1) << 6)
            | (u8::from(self.rsv2) << 5)
            | (u8::from(self.rsv3) << 4)
            | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut n = match self.payload_len {
            0..=125 => {
                out[1] = mask_bit | self.payload_len as u8;
                2
            }
            126..=0xFFFF => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(self.payload_len as u16).to_be_bytes());
                4
            }
            _ => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&self.payload_len.to_be_bytes());
                10
            }
        };
        if let Some(m) = self.mask {
            out[n..n + 4].copy_from_slice(&m);
            n += 4;
        }
        n
    }
}

/// Size of the stack buffer used to mask client payloads on their way into
/// the sink.
const MASK_CHUNK: usize = 1024;

/// Unmasked payloads up to this size are written together with their header.
const SMALL_FRAME: usize = 256;

/// Writes one frame (header then payload) into `sink`.
///
/// Without a mask a payload of up to 256 bytes is copied behind the header
/// into one stack buffer and written with one call (one append to the
/// engine's out-queue instead of two); a larger payload is passed to the
/// sink as is, next to the header ([`Sink::write_from_input`]), without a
/// copy here (the engine's sink sends a received payload echoed back from
/// its receive buffer). With a mask (client
/// frames) the payload is masked into the sink through a small stack buffer.
/// `header.payload_len` is set from `payload`.
///
/// ```
/// use myriad_ws::{write_frame, FrameHeader, OpCode};
/// let mut out = Vec::new();
/// write_frame(&mut out, FrameHeader::new(true, OpCode::Text, None, 0), b"hi");
/// assert_eq!(out, [0x81, 2, b'h', b'i']);
/// ```
pub fn write_frame<S: Sink + ?Sized>(sink: &mut S, mut header: FrameHeader, payload: &[u8]) {
    header.payload_len = payload.len() as u64;
    let mut hbuf = [0u8; FrameHeader::MAX_LEN];
    let hlen = header.encode(&mut hbuf);
    match header.mask {
        None if payload.len() <= SMALL_FRAME => {
            let mut buf = [0u8; FrameHeader::MAX_LEN + SMALL_FRAME];
            buf[..hlen].copy_from_slice(&hbuf[..hlen]);
            buf[hlen..hlen + payload.len()].copy_from_slice(payload);
            sink.write(&buf[..hlen + payload.len()]);
        }
        // The payload may be a received one being echoed: the sink may send
        // it from where it lies.
        None => sink.write_from_input(&hbuf[..hlen], payload),
        Some(key) => {
            let mut chunk = [0u8; MASK_CHUNK];
            // header and the first chunk together
            let first = payload.len().min(MASK_CHUNK - hlen);
            chunk[..hlen].copy_from_slice(&hbuf[..hlen]);
            chunk[hlen..hlen + first].copy_from_slice(&payload[..first]);
            apply_mask(&mut chunk[hlen..hlen + first], key, 0);
            sink.write(&chunk[..hlen + first]);
            let mut offset = first;
            for part in payload[first..].chunks(MASK_CHUNK) {
                let buf = &mut chunk[..part.len()];
                buf.copy_from_slice(part);
                apply_mask(buf, key, offset);
                sink.write(buf);
                offset += part.len();
            }
        }
    }
}

/// A small, fast generator of masking keys and handshake nonces.
///
/// Seeded from the standard library's per-process random hash keys (which
/// come from the operating system) and the clock, then a xorshift sequence:
/// unpredictable to a peer that sees no other output of the process, which is
/// what masking needs (RFC 6455 section 10.3), but not a cryptographic
/// generator.
///
/// ```
/// use myriad_ws::MaskGen;
/// let mut a = MaskGen::from_seed(7);
/// let mut b = MaskGen::from_seed(7);
/// assert_eq!(a.next_mask(), b.next_mask());
/// let _ = MaskGen::new().next_mask();
/// ```
#[derive(Debug, Clone)]
pub struct MaskGen {
    state: u64,
}

impl MaskGen {
    /// A generator seeded from process randomness and the clock.
    pub fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(d.as_nanos());
        }
        Self::from_seed(h.finish())
    }

    /// A deterministic generator (for tests and reproducible load runs).
    pub fn from_seed(seed: u64) -> Self {
        // splitmix64 of the seed, never zero
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        MaskGen { state: z | 1 }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The next masking key.
    pub fn next_mask(&mut self) -> [u8; 4] {
        let v = self.next_u64();
        [
            (v >> 32) as u8,
            (v >> 40) as u8,
            (v >> 48) as u8,
            (v >> 56) as u8,
        ]
    }
}

impl Default for MaskGen {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_all_lengths() {
        for len in [0u64, 1, 125, 126, 127, 65535, 65536, 1 << 40] {
            for mask in [None, Some([9, 8, 7, 6])] {
                let h = FrameHeader::new(false, OpCode::Binary, mask, len);
                let mut buf = [0u8; 14];
                let n = h.encode(&mut buf);
                assert_eq!(n, h.encoded_len());
                for cut in 0..n {
                    assert_eq!(FrameHeader::parse(&buf[..cut]), Ok(None));
                }
                assert_eq!(FrameHeader::parse(&buf[..n]), Ok(Some((h, n))));
            }
        }
    }

    /// RFC 6455 section 5.2: the minimal number of bytes MUST be used to
    /// encode the length (these were accepted before).
    #[test]
    fn non_minimal_lengths_rejected() {
        for buf in [
            &[0x82, 126, 0, 5][..],
            &[0x82, 126, 0, 125],
            &[0x82, 127, 0, 0, 0, 0, 0, 0, 0, 5],
            &[0x82, 127, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF],
            &[0x82, 0x80 | 126, 0, 0, 1, 2, 3, 4],
        ] {
            assert_eq!(
                FrameHeader::parse(buf),
                Err(ProtocolError::InvalidLength),
                "{buf:?}"
            );
        }
        // the smallest length of each encoding is fine
        let (h, _) = FrameHeader::parse(&[0x82, 126, 0, 126]).unwrap().unwrap();
        assert_eq!(h.payload_len, 126);
        let buf = [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0];
        let (h, _) = FrameHeader::parse(&buf).unwrap().unwrap();
        assert_eq!(h.payload_len, 65536);
    }

    #[test]
    fn registry_close_codes_1012_to_1014_are_valid() {
        for code in [1012, 1013, 1014] {
            assert!(CloseCode(code).is_valid(), "{code}");
        }
        for code in [1004, 1005, 1006, 1015, 1016, 2999] {
            assert!(!CloseCode(code).is_valid(), "{code}");
        }
    }

    #[test]
    fn high_bit_length_rejected_early() {
        assert_eq!(
            FrameHeader::parse(&[0x82, 127, 0x80]),
            Err(ProtocolError::InvalidLength)
        );
        let buf = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(FrameHeader::parse(&buf), Err(ProtocolError::InvalidLength));
    }

    #[test]
    fn masked_write_roundtrip() {
        let payload: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        let key = [0xde, 0xad, 0xbe, 0xef];
        write_frame(
            &mut out,
            FrameHeader::new(true, OpCode::Binary, Some(key), 0),
            &payload,
        );
        let (h, n) = FrameHeader::parse(&out).unwrap().unwrap();
        assert_eq!(h.payload_len, 5000);
        let body = &mut out[n..];
        apply_mask(body, key, 0);
        assert_eq!(body, &payload[..]);
    }
}
