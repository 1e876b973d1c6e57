//! Error types.

use crate::frame::CloseCode;

/// A violation of the WebSocket protocol by the peer.
///
/// Every variant maps to the close code that must be sent before the
/// connection is dropped ([`ProtocolError::close_code`]): 1002 for framing
/// errors, 1007 for invalid UTF-8 or undecodable compressed data, 1009 for a
/// frame or message over the configured limit (or a compressed message over
/// the inflation ratio).
///
/// ```
/// use myriad_ws::{ProtocolError, CloseCode};
/// assert_eq!(ProtocolError::InvalidUtf8.close_code(), CloseCode::INVALID_PAYLOAD);
/// assert_eq!(ProtocolError::ReservedBits.close_code(), CloseCode::PROTOCOL_ERROR);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV1/RSV2/RSV3 set without an extension that defines them.
    #[error("reserved bits set")]
    ReservedBits,
    /// Opcode 0x3-0x7 or 0xB-0xF.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame with a payload over 125 bytes.
    #[error("control frame payload over 125 bytes")]
    ControlFrameTooLong,
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A continuation frame with no fragmented message in progress.
    #[error("continuation frame without a started message")]
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is in progress.
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    /// An unmasked frame received by a server.
    #[error("unmasked frame from a client")]
    UnmaskedFrame,
    /// A masked frame received by a client.
    #[error("masked frame from a server")]
    MaskedFrame,
    /// A 64-bit payload length with the most significant bit set, or a
    /// length not in the minimal number of bytes (RFC 6455 section 5.2).
    #[error("invalid payload length encoding")]
    InvalidLength,
    /// A close frame with a one-byte payload.
    #[error("close frame with a 1-byte payload")]
    InvalidClosePayload,
    /// A close frame with a code that may not be sent on the wire.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A text message (or close reason) that is not valid UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A frame whose payload exceeds the configured frame limit.
    #[error("frame of {len} bytes over the limit of {max}")]
    FrameTooLarge {
        /// Declared payload length.
        len: u64,
        /// Configured limit.
        max: usize,
    },
    /// A message (after reassembly and inflation) over the configured limit.
    #[error("message over the limit of {max} bytes")]
    MessageTooLarge {
        /// Configured limit.
        max: usize,
    },
    /// A compressed message that does not inflate.
    #[error("invalid compressed data")]
    InvalidCompressedData,
    /// A compressed message that inflates to more than the configured ratio
    /// of its compressed size ([`crate::DecoderConfig::max_inflate_ratio`]):
    /// tiny messages may not make the receiver inflate without bound.
    #[error("compressed message inflates beyond {max} times its size")]
    InflateRatio {
        /// Configured ratio.
        max: u32,
    },
    /// A malformed legacy (Hixie-76) frame.
    #[error("invalid legacy frame")]
    InvalidLegacyFrame,
}

impl ProtocolError {
    /// The close code to send for this error.
    ///
    /// ```
    /// use myriad_ws::{ProtocolError, CloseCode};
    /// let e = ProtocolError::MessageTooLarge { max: 10 };
    /// assert_eq!(e.close_code(), CloseCode::MESSAGE_TOO_BIG);
    /// ```
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCompressedData => {
                CloseCode::INVALID_PAYLOAD
            }
            ProtocolError::FrameTooLarge { .. }
            | ProtocolError::MessageTooLarge { .. }
            | ProtocolError::InflateRatio { .. } => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// A short reason (under 123 bytes) to put in the close frame.
    ///
    /// ```
    /// use myriad_ws::ProtocolError;
    /// assert!(ProtocolError::InvalidUtf8.reason().len() <= 123);
    /// ```
    pub fn reason(&self) -> &'static str {
        match self {
            ProtocolError::ReservedBits => "reserved bits set",
            ProtocolError::ReservedOpcode(_) => "reserved opcode",
            ProtocolError::ControlFrameTooLong => "control frame too long",
            ProtocolError::FragmentedControlFrame => "fragmented control frame",
            ProtocolError::UnexpectedContinuation => "unexpected continuation frame",
            ProtocolError::ExpectedContinuation => "expected continuation frame",
            ProtocolError::UnmaskedFrame => "unmasked client frame",
            ProtocolError::MaskedFrame => "masked server frame",
            ProtocolError::InvalidLength => "invalid payload length",
            ProtocolError::InvalidClosePayload => "invalid close payload",
            ProtocolError::InvalidCloseCode(_) => "invalid close code",
            ProtocolError::InvalidUtf8 => "invalid UTF-8",
            ProtocolError::FrameTooLarge { .. } => "frame too large",
            ProtocolError::MessageTooLarge { .. } => "message too large",
            ProtocolError::InvalidCompressedData => "invalid compressed data",
            ProtocolError::InflateRatio { .. } => "compression ratio over the limit",
            ProtocolError::InvalidLegacyFrame => "invalid frame",
        }
    }
}

/// Why an opening handshake failed.
///
/// On the server side, [`HandshakeError::status`] gives the HTTP status the
/// server answers with (the answer itself is written by
/// [`crate::ServerConnection`] or [`crate::handshake::write_rejection`]).
///
/// ```
/// use myriad_ws::HandshakeError;
/// assert_eq!(HandshakeError::UnsupportedVersion.status(), 426);
/// assert_eq!(HandshakeError::MissingKey.status(), 400);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The bytes are not a valid HTTP/1.1 message.
    #[error("malformed HTTP message")]
    Malformed,
    /// The header is larger than the configured limit (or has too many fields).
    #[error("header too large")]
    HeaderTooLarge,
    /// Not `GET`.
    #[error("method is not GET")]
    BadMethod,
    /// Not HTTP/1.1.
    #[error("HTTP version is not 1.1")]
    BadHttpVersion,
    /// `Upgrade: websocket` missing.
    #[error("missing Upgrade: websocket")]
    MissingUpgrade,
    /// `Connection: Upgrade` missing.
    #[error("missing Connection: Upgrade")]
    MissingConnectionUpgrade,
    /// `Host` missing.
    #[error("missing Host")]
    MissingHost,
    /// `Sec-WebSocket-Key` missing or not 16 bytes of base64.
    #[error("missing or invalid Sec-WebSocket-Key")]
    MissingKey,
    /// `Sec-WebSocket-Version` missing.
    #[error("missing Sec-WebSocket-Version")]
    MissingVersion,
    /// A version this server does not speak (answered with 426).
    #[error("unsupported WebSocket version")]
    UnsupportedVersion,
    /// The origin check hook refused the request (answered with 403).
    #[error("origin refused")]
    OriginRefused,
    /// The application refused the upgrade with this HTTP status
    /// ([`crate::ServerConnection::handshake_with`],
    /// [`crate::WsHandler::on_upgrade`]).
    #[error("upgrade refused with status {0}")]
    Refused(u16),
    /// Invalid Hixie-76 keys.
    #[error("invalid Sec-WebSocket-Key1/Key2")]
    InvalidLegacyKey,
    /// Client side: the server did not answer 101.
    #[error("server answered status {0}")]
    UnexpectedStatus(u16),
    /// Client side: `Sec-WebSocket-Accept` missing or wrong.
    #[error("wrong Sec-WebSocket-Accept")]
    BadAccept,
    /// Client side: the server selected a subprotocol that was not offered.
    #[error("server selected a subprotocol that was not offered")]
    BadProtocol,
    /// Client side: the server answered with an extension or parameter that
    /// was not offered or is invalid.
    #[error("invalid Sec-WebSocket-Extensions in response")]
    BadExtension,
}

impl HandshakeError {
    /// The HTTP status code a server answers with.
    ///
    /// ```
    /// use myriad_ws::HandshakeError;
    /// assert_eq!(HandshakeError::OriginRefused.status(), 403);
    /// ```
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::HeaderTooLarge => 431,
            HandshakeError::UnsupportedVersion => 426,
            HandshakeError::OriginRefused => 403,
            HandshakeError::Refused(status) => *status,
            _ => 400,
        }
    }
}

/// Any error of a [`crate::ServerConnection`] or [`crate::ClientConnection`].
///
/// ```
/// use myriad_ws::{Error, ProtocolError};
/// let e: Error = ProtocolError::ReservedBits.into();
/// assert!(matches!(e, Error::Protocol(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer broke the framing protocol; a close frame has been written.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The opening handshake failed; on the server an HTTP error response has
    /// been written.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// Sending while the connection is not open (handshake not done, or a
    /// close frame already sent).
    #[error("connection not open")]
    NotOpen,
    /// The application passed an invalid argument (a control payload over
    /// 125 bytes, a close code that may not be sent, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The operation is not available on this protocol version (binary or
    /// ping on a Hixie-76 connection).
    #[error("not supported by the legacy protocol")]
    Unsupported,
}
