//! Sans-I/O HTTP/1.1 server codec for Myriad.
//!
//! Nothing in the codec touches a socket or a clock: [`ServerConn`] is a
//! state machine fed received bytes, writing what to send into a [`Sink`],
//! in the style of rustls and quinn-proto. The engine (or a test, or a
//! fuzzer) moves the bytes and passes the time in.
//!
//! * Requests: keep-alive, pipelining (the next request waits, unconsumed,
//!   until the current response is finished, so responses leave in order),
//!   `Content-Length` and chunked bodies (decoded without copying: body
//!   events are slices of the input), `Expect: 100-continue` (answered when
//!   the body is first read), HTTP/1.0 (closing unless `keep-alive`).
//! * Responses: `Content-Length` or chunked (close-delimited to HTTP/1.0
//!   clients), no body to HEAD, a `Date` from a cache formatted at most once
//!   a second ([`HttpDate`]), `Connection: close` when the connection ends.
//! * Strict parsing per RFC 9112, each case answered with its status and a
//!   close: both `Content-Length` and `Transfer-Encoding`, repeated or
//!   invalid `Content-Length`, a missing or repeated `Host`, obsolete line
//!   folding, bare LF, control characters in fields, a fragment or raw
//!   non-ASCII in the target, malformed chunk lines (400); an unknown
//!   transfer coding and `CONNECT` (501); an unsupported version (505); a
//!   target too long for the head limit (414); header limits (431); the
//!   body limit (413); slow heads and bodies (408, through
//!   [`ServerConn::deadline`] and [`ServerConn::handle_timeout`]).
//! * With the `engine` feature (on by default): [`engine`], the glue to the
//!   Myriad engine and the [`engine::Echo`] handler.
//!
//! # Contract with the engine
//!
//! * **Input.** [`ServerConn::feed`] takes the received bytes in the
//!   engine's own buffer and returns how many it consumed; the engine keeps
//!   the rest and shows it again in front of the next read. An incomplete
//!   head is not consumed (and is scanned only once however it is cut); its
//!   size is bounded by [`Config::max_head`].
//! * **Output.** A response head is encoded in a stack buffer and written
//!   with its body in one vectored write into the [`Sink`] (the engine's
//!   outbound queue): no per-request allocation.
//! * **No `unsafe`**, and nothing a peer sends can panic.
//!
//! # Examples
//!
//! ```
//! use myriad_http::{Config, Event, HttpDate, Now, RequestError, Response, ServerConn};
//! use std::time::{Instant, SystemTime};
//!
//! let t = Instant::now();
//! let now = Now::new(t, HttpDate::new().refresh(t, SystemTime::now));
//! let mut conn = ServerConn::new(Config::default(), t);
//! let mut out = Vec::new();
//!
//! // Two pipelined requests: answered in order.
//! let mut input = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
//! let mut at = 0;
//! let mut target = String::new();
//! loop {
//!     let (n, ev) = conn.feed(&mut input[at..], now, &mut out).unwrap();
//!     at += n;
//!     match ev {
//!         Event::Head(req) => target = req.target().to_string(),
//!         Event::End => conn.respond_full(&Response::new(200), target.as_bytes(), now, &mut out).unwrap(),
//!         Event::NeedData => break,
//!         _ => {}
//!     }
//! }
//! let text = String::from_utf8(out).unwrap();
//! assert!(text.find("/a").unwrap() < text.find("/b").unwrap());
//!
//! // A request smuggling attempt: answered 400, then closed.
//! let mut conn = ServerConn::new(Config::default(), t);
//! let mut out = Vec::new();
//! let mut bad = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
//! assert_eq!(conn.feed(&mut bad, now, &mut out).unwrap_err(), RequestError::LengthAndChunked);
//! assert!(out.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
//! assert!(conn.is_closed());
//! ```

mod conn;
mod date;
#[cfg(feature = "engine")]
pub mod engine;
mod error;
mod mime;
mod path;
mod range;
mod request;
#[cfg(feature = "engine")]
mod router;
#[cfg(feature = "engine")]
mod service;
mod sink;
#[cfg(feature = "engine")]
mod statics;

pub use crate::conn::{reason, BodySize, Config, Event, MinRate, Response, ServerConn, Timeout};
pub use crate::date::{parse_http_date, HttpDate, Now, DATE_LEN};
pub use crate::error::{RequestError, ResponseError};
pub use crate::mime::content_type;
pub use crate::path::{percent_decode, sanitize_path, split_target, PathError};
pub use crate::range::{parse_range, ByteRange};
pub use crate::request::{BodyKind, Headers, Request, Version, MAX_HEADERS};
#[cfg(feature = "engine")]
pub use crate::router::{Params, Route, RouteError, Router, MAX_PARAMS};
#[cfg(feature = "engine")]
pub use crate::service::{
    BodyHandler, BodySource, BodyWriter, Deferred, Fill, HttpConn, Req, Responder, STREAM_WINDOW,
};
pub use crate::sink::Sink;
#[cfg(feature = "engine")]
pub use crate::statics::{StaticDir, StaticError};

#[cfg(test)]
mod tests;
