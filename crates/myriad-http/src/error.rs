//! Error types.

use thiserror::Error;

/// Why a request was refused. Each kind maps to the status the codec has
/// already answered with ([`RequestError::status`]) before closing.
///
/// # Examples
///
/// ```
/// use myriad_http::RequestError;
/// assert_eq!(RequestError::MissingHost.status(), 400);
/// assert_eq!(RequestError::BodyTooLarge.status(), 413);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The request line is malformed (method, target, spacing, or a head
    /// made only of empty lines).
    #[error("malformed request line")]
    BadRequestLine,
    /// The request target has no valid form for its method (RFC 9112 §3.2),
    /// or holds a fragment or a raw non-ASCII octet (RFC 3986).
    #[error("invalid request target")]
    BadTarget,
    /// The request target alone fills the head limit (answered 414, RFC
    /// 9112 §3).
    #[error("request target too long")]
    UriTooLong,
    /// `CONNECT`: the codec has no tunnel mode, and a 2xx answer would
    /// announce one (RFC 9110 §9.3.6); answered 501.
    #[error("method not implemented")]
    UnsupportedMethod,
    /// Not `HTTP/<digit>.<digit>`.
    #[error("malformed HTTP version")]
    BadVersion,
    /// A well-formed version whose major number is not 1 (`HTTP/2.0`).
    #[error("HTTP version not supported")]
    UnsupportedVersion,
    /// A line ended with LF alone instead of CRLF.
    #[error("bare LF line ending")]
    BareLf,
    /// A header line began with whitespace (obs-fold, RFC 9112 §5.2).
    #[error("obsolete line folding")]
    ObsFold,
    /// A header name is not a token, or whitespace precedes the colon.
    #[error("invalid header name")]
    BadHeaderName,
    /// A header value holds a control character (CR, NUL, DEL, ...).
    #[error("invalid header value")]
    BadHeaderValue,
    /// Both `Content-Length` and `Transfer-Encoding` (request smuggling).
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
    /// `Content-Length` is not a single decimal number.
    #[error("invalid Content-Length")]
    BadContentLength,
    /// More than one `Content-Length` field.
    #[error("repeated Content-Length")]
    RepeatedContentLength,
    /// `Transfer-Encoding` is malformed: empty, `chunked` twice or not
    /// last, or sent in an HTTP/1.0 request.
    #[error("invalid Transfer-Encoding")]
    BadTransferEncoding,
    /// A transfer coding other than `chunked` (answered 501).
    #[error("unsupported transfer coding")]
    UnsupportedTransferCoding,
    /// An HTTP/1.1 request without `Host`.
    #[error("missing Host")]
    MissingHost,
    /// More than one `Host` field.
    #[error("repeated Host")]
    RepeatedHost,
    /// More than one `Content-Type` field (a singleton, RFC 9110 §5.3).
    #[error("repeated Content-Type")]
    RepeatedContentType,
    /// A `Host` value that is not a valid authority, or an empty one where
    /// the target does not carry the authority (RFC 9110 §4.2.1).
    #[error("invalid Host")]
    BadHost,
    /// An `Expect` other than `100-continue` (answered 417).
    #[error("unsupported expectation")]
    ExpectationFailed,
    /// The header section is larger than [`crate::Config::max_head`].
    #[error("header section too large")]
    HeadTooLarge,
    /// More header fields than [`crate::Config::max_headers`].
    #[error("too many header fields")]
    TooManyHeaders,
    /// The trailer section of a chunked body is larger than
    /// [`crate::Config::max_head`].
    #[error("trailer section too large")]
    TrailersTooLarge,
    /// A malformed chunk (size line, extension, missing CRLF, trailer).
    #[error("malformed chunked body")]
    BadChunk,
    /// The body is larger than [`crate::Config::max_body`].
    #[error("request body too large")]
    BodyTooLarge,
    /// The header section did not arrive within
    /// [`crate::Config::header_timeout`].
    #[error("request header timeout")]
    HeaderTimeout,
    /// The body arrived slower than [`crate::Config::min_body_rate`].
    #[error("request body too slow")]
    BodyTimeout,
}

impl RequestError {
    /// The status code this error is answered with.
    pub fn status(&self) -> u16 {
        use RequestError::*;
        match self {
            UnsupportedVersion => 505,
            UnsupportedTransferCoding | UnsupportedMethod => 501,
            UriTooLong => 414,
            ExpectationFailed => 417,
            HeadTooLarge | TooManyHeaders | TrailersTooLarge => 431,
            BodyTooLarge => 413,
            HeaderTimeout | BodyTimeout => 408,
            BadRequestLine
            | BadTarget
            | BadVersion
            | BareLf
            | ObsFold
            | BadHeaderName
            | BadHeaderValue
            | LengthAndChunked
            | BadContentLength
            | RepeatedContentLength
            | BadTransferEncoding
            | MissingHost
            | RepeatedHost
            | RepeatedContentType
            | BadHost
            | BadChunk => 400,
        }
    }
}

/// A misuse of the response side of [`crate::ServerConn`]. Nothing was
/// written when one is returned, except for [`ResponseError::BodyTooShort`]
/// (the response is cut: the connection must close).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// No request head is waiting for a response.
    #[error("no request to respond to")]
    NoRequest,
    /// This request's response has already been started.
    #[error("response already started")]
    AlreadyStarted,
    /// No response has been started (body or finish before respond).
    #[error("response not started")]
    NotStarted,
    /// Status outside 200..=999 (interim responses are the codec's own).
    #[error("invalid status code")]
    BadStatus,
    /// A header name that is not a token or a value with CR, LF or another
    /// control character (header injection).
    #[error("invalid response header")]
    BadHeader,
    /// A header the codec writes itself (`Content-Length`,
    /// `Transfer-Encoding`, `Connection`, `Date`).
    #[error("header is set by the codec")]
    ReservedHeader,
    /// Body bytes beyond the announced `Content-Length`.
    #[error("body longer than Content-Length")]
    BodyTooLong,
    /// `finish` before the announced `Content-Length` was written; the
    /// connection is closed.
    #[error("body shorter than Content-Length")]
    BodyTooShort,
    /// A body for a status that has none (204, 304).
    #[error("status has no body")]
    BodyNotAllowed,
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
}
