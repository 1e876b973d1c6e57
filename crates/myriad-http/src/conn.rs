//! The server connection state machine.

use crate::date::Now;
use crate::error::{RequestError, ResponseError};
use crate::request::{parse_head, BodyKind, Request, Version};
use crate::sink::{headers_known, hex_line, Digits, Head, Known, Sink};
use std::time::{Duration, Instant};

/// Longest chunk-size line (size, extensions, CRLF) accepted. Extensions are
/// legal but unused; a peer must not make us hold an endless line.
const MAX_CHUNK_LINE: usize = 4096;

/// Limits and timeouts of a [`ServerConn`].
///
/// # Examples
///
/// ```
/// use myriad_http::{Config, MinRate};
/// use std::time::Duration;
/// let mut cfg = Config::default();
/// cfg.max_body = 64 << 20;
/// cfg.header_timeout = Some(Duration::from_secs(5));
/// cfg.min_body_rate = Some(MinRate::new(4096, Duration::from_secs(5)));
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Config {
    /// Largest header section (request line and fields), and largest
    /// trailer section, in bytes; past it the answer is 431. Default 16 KiB.
    pub max_head: usize,
    /// Most header fields in a request (at most
    /// [`crate::MAX_HEADERS`]); past it the answer is 431. Default 100.
    pub max_headers: usize,
    /// Largest request body (decoded); past it the answer is 413. Default
    /// 1 MiB.
    pub max_body: u64,
    /// Time from the first byte of a request to the end of its head; past
    /// it the answer is 408 (slowloris). Default 10 s.
    pub header_timeout: Option<Duration>,
    /// Time a connection may wait for the first byte of its next request;
    /// past it the connection is closed without an answer. Default 60 s.
    pub keep_alive_timeout: Option<Duration>,
    /// Slowest acceptable body upload; past it the answer is 408.
    /// Default 1 KiB/s after a 10 s grace.
    pub min_body_rate: Option<MinRate>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_head: 16 << 10,
            max_headers: 100,
            max_body: 1 << 20,
            header_timeout: Some(Duration::from_secs(10)),
            keep_alive_timeout: Some(Duration::from_secs(60)),
            min_body_rate: Some(MinRate::new(1024, Duration::from_secs(10))),
        }
    }
}

/// A minimum body rate: after `grace`, at least `bytes_per_sec` on average
/// since the body started (or since `100 Continue` was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MinRate {
    /// Bytes per second (0 disables the rate, leaving only `grace`).
    pub bytes_per_sec: u64,
    /// Time allowed before the rate applies.
    pub grace: Duration,
}

impl MinRate {
    /// `bytes_per_sec` on average, after `grace`.
    pub const fn new(bytes_per_sec: u64, grace: Duration) -> Self {
        MinRate {
            bytes_per_sec,
            grace,
        }
    }
}

/// What [`ServerConn::feed`] found.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'d> {
    /// A request head. Its body (if any) follows as [`Event::Body`], then
    /// [`Event::End`].
    Head(Request<'d>),
    /// Decoded body bytes (chunk framing removed), borrowed from the input.
    Body(&'d [u8]),
    /// The request is complete: respond (if not done yet).
    End,
    /// Every usable byte is consumed; call again with more input.
    NeedData,
    /// The current request is complete and its response is not finished:
    /// pipelined input stays unconsumed until it is.
    Blocked,
    /// The connection is done (after a `Connection: close` exchange, an
    /// error answer or a timeout): close it once the output is sent.
    Closed,
}

/// Why [`ServerConn::handle_timeout`] ended the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Timeout {
    /// No request began within the keep-alive timeout (closed silently).
    Idle,
    /// The head did not complete in time (answered 408).
    Header,
    /// The body came in too slowly (answered 408 unless the response had
    /// started).
    Body,
}

/// The framing of a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodySize {
    /// Exactly this many bytes (`Content-Length`).
    Known(u64),
    /// Unknown in advance: chunked for HTTP/1.1, delimited by closing the
    /// connection for HTTP/1.0.
    Streamed,
}

/// A response head to encode.
///
/// # Examples
///
/// ```
/// use myriad_http::Response;
/// let r = Response::new(404).with_headers(&[("Content-Type", b"text/plain")]);
/// assert_eq!(r.status, 404);
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Response<'a> {
    /// Status code, 200..=999.
    pub status: u16,
    /// Header fields besides the ones the codec writes (`Date`,
    /// `Content-Length`/`Transfer-Encoding`, `Connection`).
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Close the connection after this response.
    pub close: bool,
}

impl<'a> Response<'a> {
    /// A response with `status` and no extra headers.
    pub const fn new(status: u16) -> Self {
        Response {
            status,
            headers: &[],
            close: false,
        }
    }

    /// With these header fields.
    pub const fn with_headers(mut self, headers: &'a [(&'a str, &'a [u8])]) -> Self {
        self.headers = headers;
        self
    }

    /// Closing the connection afterwards.
    pub const fn with_close(mut self) -> Self {
        self.close = true;
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqState {
    /// Waiting for the first byte of a request.
    Idle,
    /// Bytes of a head arrived; the head is not complete.
    Head,
    /// Reading the body.
    Body(Framing),
    /// The request is complete; `End` not yet reported.
    EndPending,
    /// The request is complete and reported.
    Done,
    /// Nothing more is read.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    Chunked(Chunk),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Bytes left of a chunk's data.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// In the trailer section; bytes of it so far.
    Trailers(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RespState {
    /// No response begun for the current request.
    Waiting,
    /// Head sent; the body goes out this way.
    Sending(Out),
    /// Finished.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// `Content-Length`: bytes left.
    Length(u64),
    Chunked,
    /// Close-delimited (HTTP/1.0 with an unknown length).
    Raw,
    /// A response to HEAD: the body is dropped.
    Drop,
    /// 204 or 304: no body allowed.
    Empty,
}

/// A server-side HTTP/1.1 connection, sans I/O.
///
/// Feed it received bytes with [`ServerConn::feed`]; it returns how many it
/// consumed and an [`Event`]. Unconsumed bytes must be shown again, in
/// front of the next ones: exactly the engine's `on_data → consumed`
/// contract. Answer each request with [`ServerConn::respond_full`], or
/// [`ServerConn::respond`], [`ServerConn::send_body`] and
/// [`ServerConn::finish`]; every byte to send goes into a [`Sink`].
///
/// * Pipelining: the next request is not parsed until the current response
///   is finished (its bytes stay unconsumed), so responses leave in order.
/// * Time is passed in ([`Now`]); the codec reads no clock.
///   [`ServerConn::deadline`] says when [`ServerConn::handle_timeout`] must
///   be called.
/// * Malformed requests are answered (400, 413, 414, 417, 431, 501, 505) with
///   `Connection: close` by `feed` itself, which then returns the error;
///   after that nothing more is read.
///
/// # Examples
///
/// ```
/// use myriad_http::{Config, Event, HttpDate, Now, Response, ServerConn};
/// use std::time::{Instant, SystemTime};
///
/// let t = Instant::now();
/// let now = Now::new(t, HttpDate::new().refresh(t, SystemTime::now));
/// let mut conn = ServerConn::new(Config::default(), t);
/// let mut input = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi".to_vec();
/// let mut out = Vec::new();
/// let mut at = 0;
/// let mut body = Vec::new();
/// loop {
///     let (n, ev) = conn.feed(&mut input[at..], now, &mut out).unwrap();
///     at += n;
///     match ev {
///         Event::Body(b) => body.extend_from_slice(b),
///         Event::End => conn.respond_full(&Response::new(200), &body, now, &mut out).unwrap(),
///         Event::NeedData => break,
///         _ => {}
///     }
/// }
/// assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
/// assert!(out.ends_with(b"Content-Length: 2\r\n\r\nhi"));
/// ```
#[derive(Debug)]
pub struct ServerConn {
    cfg: Config,
    req: ReqState,
    resp: RespState,
    version: Version,
    is_head: bool,
    keep_alive: bool,
    /// The server decided to close after the current response.
    close_after: bool,
    /// `100 Continue` is owed before the body is read.
    expect_continue: bool,
    /// How far the incomplete head has been scanned.
    scanned: usize,
    /// Idle: since when. Head: first byte. Body: start of the body read.
    since: Option<Instant>,
    /// Decoded body bytes of the current request.
    body_read: u64,
}

impl ServerConn {
    /// A connection opened at `now`.
    pub fn new(cfg: Config, now: Instant) -> Self {
        ServerConn {
            cfg,
            req: ReqState::Idle,
            resp: RespState::Waiting,
            version: Version::Http11,
            is_head: false,
            keep_alive: true,
            close_after: false,
            expect_continue: false,
            scanned: 0,
            since: Some(now),
            body_read: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Parses what it can of `data` and returns how many bytes it consumed
    /// and what it found. Call it again with the unconsumed rest (and more
    /// input appended) until it returns [`Event::NeedData`],
    /// [`Event::Blocked`] or [`Event::Closed`].
    ///
    /// `data` is mutable because an `HTTP/1.x` version with x > 1 is
    /// rewritten to `HTTP/1.1` in place. `out` receives `100 Continue` and
    /// error answers.
    ///
    /// # Errors
    ///
    /// A [`RequestError`] when the request is malformed or over a limit.
    /// Its answer ([`RequestError::status`], `Connection: close`) has been
    /// written to `out`; the connection reads nothing more and should be
    /// closed once `out` is sent.
    pub fn feed<'d, S: Sink + ?Sized>(
        &mut self,
        data: &'d mut [u8],
        now: Now,
        out: &mut S,
    ) -> Result<(usize, Event<'d>), RequestError> {
        match self.req {
            ReqState::Closed => return Ok((0, Event::Closed)),
            ReqState::Done => return Ok((0, Event::Blocked)),
            ReqState::EndPending => {
                self.req = ReqState::Done;
                return Ok((0, Event::End));
            }
            ReqState::Idle => {
                if data.is_empty() {
                    return Ok((0, Event::NeedData));
                }
                // The header-read deadline runs from the first byte.
                self.req = ReqState::Head;
                self.since = Some(now.instant());
                self.scanned = 0;
                self.version = Version::Http11;
                self.is_head = false;
            }
            ReqState::Head => {}
            ReqState::Body(framing) => {
                let data: &'d [u8] = data;
                return self.read_body(framing, data, now, out);
            }
        }
        match parse_head(data, &mut self.scanned, &self.cfg, &mut self.version) {
            Ok(None) => Ok((0, Event::NeedData)),
            Ok(Some(head)) => {
                let req = head.req;
                self.is_head = head.is_head;
                self.keep_alive = req.keep_alive;
                self.expect_continue = req.expect_continue;
                self.resp = RespState::Waiting;
                // close_after stays: false after a kept-alive exchange,
                // true when a shutdown asked for it while this head was
                // still arriving (its answer must then close).
                self.body_read = 0;
                self.since = Some(now.instant());
                self.req = match req.body {
                    BodyKind::Length(n) => ReqState::Body(Framing::Length(n)),
                    BodyKind::Chunked => ReqState::Body(Framing::Chunked(Chunk::Size)),
                    _ => ReqState::EndPending,
                };
                Ok((head.len, Event::Head(req)))
            }
            Err(e) => Err(self.fail(e, now, out)),
        }
    }

    fn read_body<'d, S: Sink + ?Sized>(
        &mut self,
        framing: Framing,
        data: &'d [u8],
        now: Now,
        out: &mut S,
    ) -> Result<(usize, Event<'d>), RequestError> {
        if self.expect_continue {
            self.expect_continue = false;
            // The body is about to be read: tell the client to send it,
            // unless a final answer is already on its way.
            if self.resp == RespState::Waiting {
                out.write(b"HTTP/1.1 100 Continue\r\n\r\n");
                self.since = Some(now.instant());
            }
        }
        match framing {
            Framing::Length(left) => {
                if data.is_empty() {
                    return Ok((0, Event::NeedData));
                }
                let n = left.min(data.len() as u64);
                let left = left - n;
                self.body_read += n;
                self.req = if left == 0 {
                    ReqState::EndPending
                } else {
                    ReqState::Body(Framing::Length(left))
                };
                let n = n as usize;
                Ok((n, Event::Body(&data[..n])))
            }
            Framing::Chunked(state) => match self.read_chunked(state, data) {
                Ok(r) => Ok(r),
                Err(e) => Err(self.fail(e, now, out)),
            },
        }
    }

    /// Decodes chunked framing. Chunk data is handed out where it lies in
    /// the input: nothing is copied.
    fn read_chunked<'d>(
        &mut self,
        mut state: Chunk,
        data: &'d [u8],
    ) -> Result<(usize, Event<'d>), RequestError> {
        let mut off = 0;
        loop {
            let rest = &data[off..];
            match state {
                Chunk::Size => {
                    let window = &rest[..rest.len().min(MAX_CHUNK_LINE)];
                    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
                        if rest.len() >= MAX_CHUNK_LINE {
                            return Err(RequestError::BadChunk);
                        }
                        self.req = ReqState::Body(Framing::Chunked(state));
                        return Ok((off, Event::NeedData));
                    };
                    if nl == 0 || rest[nl - 1] != b'\r' {
                        return Err(RequestError::BareLf);
                    }
                    let size = parse_chunk_size(&rest[..nl - 1])?;
                    off += nl + 1;
                    if size == 0 {
                        state = Chunk::Trailers(0);
                    } else {
                        // Refuse as soon as the size says the body will be
                        // too large, before any of it is read.
                        if self.body_read.saturating_add(size) > self.cfg.max_body {
                            return Err(RequestError::BodyTooLarge);
                        }
                        state = Chunk::Data(size);
                    }
                }
                Chunk::Data(left) => {
                    if rest.is_empty() {
                        self.req = ReqState::Body(Framing::Chunked(state));
                        return Ok((off, Event::NeedData));
                    }
                    let n = left.min(rest.len() as u64);
                    self.body_read += n;
                    let left = left - n;
                    let next = if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    };
                    self.req = ReqState::Body(Framing::Chunked(next));
                    let n = n as usize;
                    return Ok((off + n, Event::Body(&rest[..n])));
                }
                Chunk::DataEnd => {
                    if rest.len() < 2 {
                        if rest.first().is_some_and(|&b| b != b'\r') {
                            return Err(RequestError::BadChunk);
                        }
                        self.req = ReqState::Body(Framing::Chunked(state));
                        return Ok((off, Event::NeedData));
                    }
                    if rest[..2] != *b"\r\n" {
                        return Err(RequestError::BadChunk);
                    }
                    off += 2;
                    state = Chunk::Size;
                }
                Chunk::Trailers(used) => {
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        if used + rest.len() > self.cfg.max_head {
                            return Err(RequestError::TrailersTooLarge);
                        }
                        self.req = ReqState::Body(Framing::Chunked(state));
                        return Ok((off, Event::NeedData));
                    };
                    if nl == 0 || rest[nl - 1] != b'\r' {
                        return Err(RequestError::BareLf);
                    }
                    let used = used + nl + 1;
                    if used > self.cfg.max_head {
                        return Err(RequestError::TrailersTooLarge);
                    }
                    let line = &rest[..nl - 1];
                    off += nl + 1;
                    if line.is_empty() {
                        self.req = ReqState::Done;
                        return Ok((off, Event::End));
                    }
                    check_trailer(line)?;
                    state = Chunk::Trailers(used);
                }
            }
        }
    }

    /// Writes the error answer (if no response has begun) and stops
    /// reading.
    fn fail<S: Sink + ?Sized>(&mut self, e: RequestError, now: Now, out: &mut S) -> RequestError {
        if self.resp == RespState::Waiting && self.req != ReqState::Closed {
            let status = e.status();
            let reason = reason(status);
            let mut body = [0u8; 64];
            let body_len = reason.len().min(62);
            body[..body_len].copy_from_slice(&reason[..body_len]);
            body[body_len..body_len + 1].copy_from_slice(b"\n");
            let body = &body[..body_len + 1];
            let (line, digits) = status_line(self.version, status);
            let h = Head {
                line,
                digits,
                reason,
                date: now.date(),
                headers: &[("Content-Type", b"text/plain; charset=utf-8")],
                framing: b"\r\nContent-Length: ",
                length: Some(body.len() as u64),
                connection: b"\r\nConnection: close",
                known: Known::NO,
            };
            h.write_to(if self.is_head { b"" } else { body }, out);
        }
        self.req = ReqState::Closed;
        self.resp = RespState::Done;
        e
    }

    /// Starts the response to the current request: encodes its head into
    /// `out`. Send the body with [`ServerConn::send_body`] and end it with
    /// [`ServerConn::finish`].
    ///
    /// The codec adds `Date`, the framing (`Content-Length`, or
    /// `Transfer-Encoding: chunked` for [`BodySize::Streamed`] to an
    /// HTTP/1.1 client; an HTTP/1.0 client gets a close-delimited body) and
    /// `Connection` (`close` when the connection will close, `keep-alive`
    /// to an HTTP/1.0 client keeping it). The status line carries the
    /// request's version. To a HEAD request the head is the same as for GET
    /// and body bytes are dropped.
    ///
    /// A response may start before the request body is read; if the body is
    /// still unread when the response finishes, the connection closes.
    ///
    /// # Errors
    ///
    /// [`ResponseError`] when there is no request to answer, its response
    /// has begun, or the status or a header is invalid; nothing is written.
    pub fn respond<S: Sink + ?Sized>(
        &mut self,
        res: &Response<'_>,
        body: BodySize,
        now: Now,
        out: &mut S,
    ) -> Result<(), ResponseError> {
        let head = self.encode_head(res, body, &now)?;
        head.write_to(b"", out);
        Ok(())
    }

    /// Answers the current request with `body` in one go (`Content-Length`):
    /// head and body leave in one vectored write. See
    /// [`ServerConn::respond`].
    ///
    /// # Errors
    ///
    /// As [`ServerConn::respond`]; nothing is written.
    pub fn respond_full<S: Sink + ?Sized>(
        &mut self,
        res: &Response<'_>,
        body: &[u8],
        now: Now,
        out: &mut S,
    ) -> Result<(), ResponseError> {
        let head = self.encode_head(res, BodySize::Known(body.len() as u64), &now)?;
        let body = match self.resp {
            RespState::Sending(Out::Length(_)) => body,
            _ => b"",
        };
        head.write_to(body, out);
        self.finish_exchange(now);
        Ok(())
    }

    /// Sends body bytes of the response begun with [`ServerConn::respond`].
    ///
    /// # Errors
    ///
    /// [`ResponseError::NotStarted`] without a response begun,
    /// [`ResponseError::BodyTooLong`] past the announced length,
    /// [`ResponseError::BodyNotAllowed`] for a 204 or 304; nothing is
    /// written.
    pub fn send_body<S: Sink + ?Sized>(
        &mut self,
        data: &[u8],
        out: &mut S,
    ) -> Result<(), ResponseError> {
        self.send_body_by(data.len() as u64, out, |out| out.write(data))
    }

    /// [`ServerConn::send_body`] for `len` bytes that `put` queues itself
    /// (a file segment the engine sends with `sendfile`): the codec
    /// accounts for them and frames them; `put` is not called when the
    /// bytes are to be dropped (the answer to `HEAD`).
    ///
    /// # Errors
    ///
    /// As [`ServerConn::send_body`]; `put` is then not called.
    pub(crate) fn send_body_by<S: Sink + ?Sized>(
        &mut self,
        len: u64,
        out: &mut S,
        put: impl FnOnce(&mut S),
    ) -> Result<(), ResponseError> {
        let RespState::Sending(framing) = self.resp else {
            return Err(self.not_sending());
        };
        match framing {
            Out::Length(left) => {
                if len > left {
                    return Err(ResponseError::BodyTooLong);
                }
                put(out);
                self.resp = RespState::Sending(Out::Length(left - len));
            }
            Out::Chunked => {
                // An empty chunk would end the body.
                if len > 0 {
                    let mut hex = [0; 18];
                    out.write(hex_line(len, &mut hex));
                    put(out);
                    out.write(b"\r\n");
                }
            }
            Out::Raw => put(out),
            Out::Drop => {}
            Out::Empty => {
                if len > 0 {
                    return Err(ResponseError::BodyNotAllowed);
                }
            }
        }
        Ok(())
    }

    /// Ends the response. The connection then reads the next request, or is
    /// closed ([`ServerConn::is_closed`]).
    ///
    /// # Errors
    ///
    /// [`ResponseError::NotStarted`] without a response begun;
    /// [`ResponseError::BodyTooShort`] if less than the announced length was
    /// sent (the connection is then closed: the client cannot tell where
    /// this response ends).
    pub fn finish<S: Sink + ?Sized>(&mut self, now: Now, out: &mut S) -> Result<(), ResponseError> {
        let RespState::Sending(framing) = self.resp else {
            return Err(self.not_sending());
        };
        match framing {
            Out::Length(left) if left > 0 => {
                self.req = ReqState::Closed;
                self.resp = RespState::Done;
                return Err(ResponseError::BodyTooShort);
            }
            Out::Chunked => out.write(b"0\r\n\r\n"),
            _ => {}
        }
        self.finish_exchange(now);
        Ok(())
    }

    fn not_sending(&self) -> ResponseError {
        if self.req == ReqState::Closed {
            ResponseError::Closed
        } else {
            ResponseError::NotStarted
        }
    }

    /// The response is complete: on to the next request, or closed.
    fn finish_exchange(&mut self, now: Now) {
        self.resp = RespState::Done;
        let complete = matches!(self.req, ReqState::EndPending | ReqState::Done);
        if self.close_after || !complete {
            self.req = ReqState::Closed;
        } else {
            self.req = ReqState::Idle;
            self.resp = RespState::Waiting;
            self.since = Some(now.instant());
            self.scanned = 0;
            self.body_read = 0;
            self.expect_continue = false;
        }
    }

    fn encode_head<'a>(
        &mut self,
        res: &Response<'a>,
        body: BodySize,
        now: &'a Now,
    ) -> Result<Head<'a>, ResponseError> {
        match self.req {
            ReqState::Closed => return Err(ResponseError::Closed),
            ReqState::Idle | ReqState::Head => return Err(ResponseError::NoRequest),
            _ => {}
        }
        if self.resp != RespState::Waiting {
            return Err(ResponseError::AlreadyStarted);
        }
        if !(200..=999).contains(&res.status) {
            return Err(ResponseError::BadStatus);
        }
        // Headers equal to those of the last head written on this thread
        // were validated before it was.
        let known = headers_known(res.headers);
        if known == Known::NO {
            for (name, value) in res.headers {
                check_response_header(name, value)?;
            }
        }
        let no_body = res.status == 204 || res.status == 304;
        if no_body && matches!(body, BodySize::Known(n) if n > 0) {
            return Err(ResponseError::BodyNotAllowed);
        }
        let complete = matches!(self.req, ReqState::EndPending | ReqState::Done);
        // A client that asked for 100-continue and gets a final answer
        // instead may never send the body: the stream cannot be reused.
        let mut close = !self.keep_alive || res.close || self.close_after;
        if !complete && self.expect_continue {
            close = true;
            self.expect_continue = false;
        }
        let (framing, framing_header, length): (Out, &'static [u8], Option<u64>) = if no_body {
            (Out::Empty, b"", None)
        } else {
            match body {
                BodySize::Known(n) => (
                    if self.is_head {
                        Out::Drop
                    } else {
                        Out::Length(n)
                    },
                    b"\r\nContent-Length: ",
                    Some(n),
                ),
                BodySize::Streamed if self.version == Version::Http11 => (
                    if self.is_head {
                        Out::Drop
                    } else {
                        Out::Chunked
                    },
                    b"\r\nTransfer-Encoding: chunked",
                    None,
                ),
                _ => {
                    // HTTP/1.0 knows no chunked coding: the end of the body
                    // is the end of the connection.
                    if self.is_head {
                        (Out::Drop, b"", None)
                    } else {
                        close = true;
                        (Out::Raw, b"", None)
                    }
                }
            }
        };
        let (line, digits) = status_line(self.version, res.status);
        let connection: &'static [u8] = if close {
            b"\r\nConnection: close"
        } else if self.version == Version::Http10 {
            b"\r\nConnection: keep-alive"
        } else {
            b""
        };
        self.close_after = close;
        self.resp = RespState::Sending(framing);
        Ok(Head {
            line,
            digits,
            reason: reason(res.status),
            date: now.date(),
            headers: res.headers,
            framing: framing_header,
            length,
            connection,
            known,
        })
    }

    /// Asks to close after the current exchange (a graceful shutdown): the
    /// response carries `Connection: close`. An idle connection closes at
    /// once ([`ServerConn::is_closed`] turns true).
    pub fn close_after_response(&mut self) {
        self.close_after = true;
        if self.req == ReqState::Idle {
            self.req = ReqState::Closed;
        }
    }

    /// Whether the connection is done: close it once the output is sent.
    pub fn is_closed(&self) -> bool {
        self.req == ReqState::Closed
    }

    /// Whether the current request's response has begun (its head is
    /// written) and is not finished yet.
    pub fn is_responding(&self) -> bool {
        matches!(self.resp, RespState::Sending(_))
    }

    /// Whether a request is waiting for its response to begin.
    pub fn awaits_response(&self) -> bool {
        self.resp == RespState::Waiting
            && matches!(
                self.req,
                ReqState::Body(_) | ReqState::EndPending | ReqState::Done
            )
    }

    /// Whether the connection waits for a request and holds none of one.
    pub fn is_idle(&self) -> bool {
        self.req == ReqState::Idle
    }

    /// Whether the current request's body has been read completely (its
    /// `End` may not have been reported yet). A handler answering with the
    /// last body slice in hand can respond without buffering the body.
    pub fn body_complete(&self) -> bool {
        matches!(self.req, ReqState::EndPending | ReqState::Done)
    }

    /// When [`ServerConn::handle_timeout`] must be called next, if at all:
    /// the keep-alive deadline while idle, the header deadline while a head
    /// arrives, the minimum-rate deadline while a body arrives. Computed
    /// from the `now` values passed in; the caller arms a timer.
    pub fn deadline(&self) -> Option<Instant> {
        let since = self.since?;
        match self.req {
            ReqState::Idle => self.cfg.keep_alive_timeout.map(|t| since + t),
            ReqState::Head => self.cfg.header_timeout.map(|t| since + t),
            // Before `100 Continue` the client waits for us, not we for it.
            ReqState::Body(_) if !self.expect_continue => self.cfg.min_body_rate.map(|r| {
                let earned = if r.bytes_per_sec == 0 {
                    Duration::MAX
                } else {
                    let ns = self.body_read as u128 * 1_000_000_000 / r.bytes_per_sec as u128;
                    Duration::from_nanos(ns.min(u64::MAX as u128) as u64)
                };
                since
                    .checked_add(r.grace.saturating_add(earned))
                    .unwrap_or(since + Duration::from_secs(365 * 86_400))
            }),
            _ => None,
        }
    }

    /// Checks the deadline against `now`. When it has passed: a slow head
    /// or body is answered 408 (into `out`, with `Connection: close`), an
    /// idle connection is ended silently, and the connection is closed
    /// ([`ServerConn::is_closed`]). Returns which timeout it was, or `None`
    /// when no deadline has passed (re-arm with [`ServerConn::deadline`]).
    pub fn handle_timeout<S: Sink + ?Sized>(&mut self, now: Now, out: &mut S) -> Option<Timeout> {
        let d = self.deadline()?;
        if now.instant() < d {
            return None;
        }
        match self.req {
            ReqState::Idle => {
                self.req = ReqState::Closed;
                Some(Timeout::Idle)
            }
            ReqState::Head => {
                self.fail(RequestError::HeaderTimeout, now, out);
                Some(Timeout::Header)
            }
            _ => {
                self.fail(RequestError::BodyTimeout, now, out);
                Some(Timeout::Body)
            }
        }
    }
}

/// `1*HEXDIG [ chunk-ext ]`.
fn parse_chunk_size(line: &[u8]) -> Result<u64, RequestError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(RequestError::BadChunk);
    }
    let mut v: u64 = 0;
    for &b in &line[..digits] {
        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
        v = v
            .checked_mul(16)
            .and_then(|v| v.checked_add(d))
            .ok_or(RequestError::BadChunk)?;
    }
    check_chunk_ext(&line[digits..])?;
    Ok(v)
}

/// RFC 9112 §7.1.1: `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "="
/// BWS chunk-ext-val ] )`, a name a token, a value a token or a
/// quoted-string. Extensions are ignored, but checked to the letter: a
/// size line another parser reads differently (`5 `, `5;`, a bare CR, an
/// open quote hiding a `;`) is a smuggling vector. Chunked bodies only,
/// once per chunk line.
fn check_chunk_ext(mut s: &[u8]) -> Result<(), RequestError> {
    fn skip_ws(s: &[u8]) -> &[u8] {
        let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        &s[n..]
    }
    fn token(s: &[u8]) -> Result<&[u8], RequestError> {
        let n = s.iter().take_while(|&&b| is_tchar(b)).count();
        if n == 0 {
            return Err(RequestError::BadChunk);
        }
        Ok(&s[n..])
    }
    // Bounded by the line: every turn consumes at least the ';'.
    while !s.is_empty() {
        // BWS is allowed before a ';' only: "5 " and "5;a " are refused.
        let [b';', rest @ ..] = skip_ws(s) else {
            return Err(RequestError::BadChunk);
        };
        s = token(skip_ws(rest))?;
        if let [b'=', rest @ ..] = skip_ws(s) {
            s = match skip_ws(rest) {
                [b'"', q @ ..] => quoted_string_tail(q)?,
                v => token(v)?,
            };
        }
    }
    Ok(())
}

/// The rest of a quoted-string after its opening quote (RFC 9110 §5.6.4):
/// `*( qdtext / quoted-pair ) DQUOTE`. Returns what follows the closing
/// quote.
fn quoted_string_tail(q: &[u8]) -> Result<&[u8], RequestError> {
    // qdtext and the escaped octet of a quoted-pair: HTAB, SP, VCHAR,
    // obs-text; never CR, LF, NUL or another control.
    let text = |b: u8| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80;
    let mut i = 0;
    while let Some(&b) = q.get(i) {
        match b {
            b'"' => return Ok(&q[i + 1..]),
            b'\\' if q.get(i + 1).is_some_and(|&e| text(e)) => i += 2,
            b if b != b'\\' && text(b) => i += 1,
            _ => return Err(RequestError::BadChunk),
        }
    }
    Err(RequestError::BadChunk)
}

/// A trailer field line: `token ":" OWS value OWS`, as strict as a header.
fn check_trailer(line: &[u8]) -> Result<(), RequestError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(RequestError::ObsFold);
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(RequestError::BadHeaderName)?;
    if colon == 0 || !line[..colon].iter().all(|&b| is_tchar(b)) {
        return Err(RequestError::BadHeaderName);
    }
    if line[colon + 1..]
        .iter()
        .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(RequestError::BadHeaderValue);
    }
    Ok(())
}

fn check_response_header(name: &str, value: &[u8]) -> Result<(), ResponseError> {
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(ResponseError::BadHeader);
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(ResponseError::BadHeader);
    }
    // Compare only names of a reserved name's length (most are not).
    let reserved = match name.len() {
        4 => "date",
        10 => "connection",
        14 => "content-length",
        17 => "transfer-encoding",
        _ => return Ok(()),
    };
    if name.eq_ignore_ascii_case(reserved) {
        return Err(ResponseError::ReservedHeader);
    }
    Ok(())
}

/// RFC 9110 token characters, as a table: one load per byte instead of a
/// chain of comparisons (names are checked on every response).
const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

/// RFC 9110 token characters.
#[inline]
fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// Defines [`reason`] and [`status_line`] from one list.
macro_rules! statuses {
    ($($code:literal $text:literal,)*) => {
        /// The reason phrase of `status` (empty for unknown codes, which RFC 9112
        /// allows).
        pub fn reason(status: u16) -> &'static [u8] {
            match status {
                $($code => $text.as_bytes(),)*
                _ => b"",
            }
        }

        /// The status line of `status`: one constant slice (`HTTP/1.1 200
        /// OK`) for a known status, else `HTTP/1.x ` and the digits (the
        /// reason then follows them).
        fn status_line(version: Version, status: u16) -> (&'static [u8], Digits) {
            let line: &'static [u8] = match (version, status) {
                $(
                    (Version::Http11, $code) => concat!("HTTP/1.1 ", $code, " ", $text).as_bytes(),
                    (Version::Http10, $code) => concat!("HTTP/1.0 ", $code, " ", $text).as_bytes(),
                )*
                (Version::Http11, _) => b"HTTP/1.1 ",
                (Version::Http10, _) => b"HTTP/1.0 ",
            };
            if line.len() > 9 {
                (line, Digits::NONE)
            } else {
                (line, Digits::of(u64::from(status)))
            }
        }
    };
}

statuses! {
    100 "Continue",
    101 "Switching Protocols",
    200 "OK",
    201 "Created",
    202 "Accepted",
    204 "No Content",
    206 "Partial Content",
    301 "Moved Permanently",
    302 "Found",
    303 "See Other",
    304 "Not Modified",
    307 "Temporary Redirect",
    308 "Permanent Redirect",
    400 "Bad Request",
    401 "Unauthorized",
    403 "Forbidden",
    404 "Not Found",
    405 "Method Not Allowed",
    408 "Request Timeout",
    411 "Length Required",
    413 "Content Too Large",
    414 "URI Too Long",
    416 "Range Not Satisfiable",
    417 "Expectation Failed",
    426 "Upgrade Required",
    429 "Too Many Requests",
    431 "Request Header Fields Too Large",
    500 "Internal Server Error",
    501 "Not Implemented",
    502 "Bad Gateway",
    503 "Service Unavailable",
    504 "Gateway Timeout",
    505 "HTTP Version Not Supported",
}
