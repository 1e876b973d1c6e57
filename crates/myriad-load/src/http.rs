//! HTTP/1.1 for `http://` and `https://` targets, sans-I/O: the request
//! encoder and an incremental response decoder.
//!
//! Requests are written straight into the engine's outbound buffer
//! ([`HttpPlan::write_request`]): a request line and `Host` header made once
//! per run, then, for a method with a body, `Content-Length` and the
//! deterministic payload of message (*connection*, *sequence*) — the same
//! payload the raw echo sends, so an echoed body is verified at any offset
//! without keeping a copy of what was sent.
//!
//! Responses are decoded by [`Rx`], one event at a time, without allocating
//! and without a buffer of its own: an incomplete head (or chunk-size line,
//! or trailer section) is left unconsumed, and the engine shows it again
//! with the next bytes (`Handler::on_data` returns what was consumed). The
//! head is scanned for its end incrementally (`Rx::scanned`), so a head cut
//! into many receives is scanned once, and `httparse` parses it exactly once,
//! when it is complete, into a header array on the stack. Bodies are
//! reported as slices of the input (chunked bodies de-chunked the same way).
//! Every piece that waits for more input is bounded: the head and the
//! trailer section by `max_head`, a chunk-size line by [`MAX_CHUNK_LINE`],
//! the body by `max_body`.

use std::fmt;

/// Longest chunk-size line (size, extensions, CRLF) accepted.
pub const MAX_CHUNK_LINE: usize = 1024;
/// Most header fields of a response head.
pub const MAX_HEADERS: usize = 64;

/// What every request of the run looks like, and what its response must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPlan {
    /// `METHOD PATH HTTP/1.1\r\nHost: HOST\r\n`, the same for every request.
    pub prefix: Vec<u8>,
    /// The method sends a body of `--size` bytes (anything but GET and
    /// HEAD).
    pub body: bool,
    /// HEAD: responses have no body whatever their headers say.
    pub head_method: bool,
    /// The status every response must have (`--expect-status`).
    pub expect_status: u16,
    /// The response body must equal the request body (`--expect-echo`).
    pub echo: bool,
    /// Largest response head (and trailer section), bytes.
    pub max_head: usize,
    /// Largest response body, bytes.
    pub max_body: u64,
}

const CONTENT_LENGTH: &[u8] = b"Content-Length: ";

impl HttpPlan {
    /// The plan of `method` on `path` at `host` (the `Host` header value).
    pub fn new(method: &str, path: &str, host: &str) -> HttpPlan {
        let mut prefix = Vec::with_capacity(method.len() + path.len() + host.len() + 32);
        for part in [method, " ", path, " HTTP/1.1\r\nHost: ", host, "\r\n"] {
            prefix.extend_from_slice(part.as_bytes());
        }
        let body = !matches!(method, "GET" | "HEAD");
        HttpPlan {
            prefix,
            body,
            head_method: method == "HEAD",
            expect_status: 200,
            echo: false,
            max_head: 16 << 10,
            max_body: 64 << 20,
        }
    }

    /// Bytes of a request whose body (if the method has one) is `size`
    /// bytes.
    #[inline]
    pub fn request_len(&self, size: usize) -> usize {
        if self.body {
            self.prefix.len() + CONTENT_LENGTH.len() + digits(size as u64) + 4 + size
        } else {
            self.prefix.len() + 2
        }
    }

    /// Writes the request with the payload of key `k` (`size` bytes, if
    /// the method has a body) at the start of `out` (at least
    /// [`HttpPlan::request_len`] bytes); returns its length.
    #[inline]
    pub fn write_request(&self, k: u64, size: usize, out: &mut [u8]) -> usize {
        let p = self.prefix.len();
        out[..p].copy_from_slice(&self.prefix);
        if !self.body {
            out[p..p + 2].copy_from_slice(b"\r\n");
            return p + 2;
        }
        let mut at = p + CONTENT_LENGTH.len();
        out[p..at].copy_from_slice(CONTENT_LENGTH);
        at += write_decimal(size as u64, &mut out[at..]);
        out[at..at + 4].copy_from_slice(b"\r\n\r\n");
        at += 4;
        crate::payload::write_payload(k, &mut out[at..at + size], false);
        at + size
    }
}

fn digits(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 10 {
        v /= 10;
        n += 1;
    }
    n
}

/// Writes `v` in decimal at the start of `out`; returns the digit count.
fn write_decimal(v: u64, out: &mut [u8]) -> usize {
    let n = digits(v);
    let mut x = v;
    for b in out[..n].iter_mut().rev() {
        *b = b'0' + (x % 10) as u8;
        x /= 10;
    }
    n
}

/// Why a response could not be decoded. Every one ends the connection
/// (counted as `http_protocol`, except a body over the limit as well).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RxError {
    /// The head did not end within `max_head` bytes.
    HeadTooLarge(usize),
    /// `httparse` refused the head (status line or a header field).
    Parse(httparse::Error),
    /// A `Content-Length` that is not a number, or two that differ.
    BadContentLength,
    /// Both `Content-Length` and `Transfer-Encoding` (a smuggling sign).
    LengthAndChunked,
    /// A transfer coding other than a final `chunked` (none was asked for).
    UnsupportedCoding,
    /// A malformed chunk-size line or chunk end.
    BadChunk,
    /// The body is larger than `max_body`.
    BodyTooLarge(u64),
    /// `101 Switching Protocols` without an upgrade request.
    UnexpectedSwitch,
}

impl fmt::Display for RxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RxError::HeadTooLarge(n) => write!(f, "response head longer than {n} bytes"),
            RxError::Parse(e) => write!(f, "malformed response head: {e}"),
            RxError::BadContentLength => f.write_str("invalid or conflicting Content-Length"),
            RxError::LengthAndChunked => {
                f.write_str("both Content-Length and Transfer-Encoding in a response")
            }
            RxError::UnsupportedCoding => f.write_str("transfer coding other than chunked"),
            RxError::BadChunk => f.write_str("malformed chunked body"),
            RxError::BodyTooLarge(n) => write!(f, "response body longer than {n} bytes"),
            RxError::UnexpectedSwitch => f.write_str("101 Switching Protocols to a plain request"),
        }
    }
}

impl std::error::Error for RxError {}

/// One step of the decoder.
#[derive(Debug, PartialEq, Eq)]
pub enum Ev<'a> {
    /// The input is used up, or what is left is an incomplete piece that
    /// must be shown again with more bytes.
    NeedMore,
    /// A final response head (interim 1xx responses are skipped).
    Head {
        /// Status code.
        status: u16,
        /// `Content-Length`, if the body is delimited by one.
        length: Option<u64>,
        /// The server closes after this response (`Connection: close`, or
        /// HTTP/1.0 without keep-alive, or a body delimited by the close).
        close: bool,
    },
    /// Body bytes (de-chunked) starting at body offset `off`.
    Body {
        /// Offset of `bytes` in the body.
        off: u64,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// The response is complete; its body had `len` bytes.
    End {
        /// Body length.
        len: u64,
    },
}

/// What ended a connection's input, seen from the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eof {
    /// Between responses, nothing pending.
    Clean,
    /// The end of a body delimited by the close: the response is complete
    /// (`len` body bytes).
    Complete {
        /// Body length.
        len: u64,
    },
    /// In the middle of a response.
    Truncated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length { left: u64 },
    UntilClose,
    ChunkSize,
    ChunkData { left: u64 },
    ChunkEnd,
    Trailers,
    Done,
}

/// The response decoder of one connection (a few words; nothing on the
/// heap).
#[derive(Debug, Clone, Copy)]
pub struct Rx {
    state: State,
    /// Bytes of the pending head (or trailer section) already scanned for
    /// its end: the scan resumes there.
    scanned: u32,
    /// Bytes left unconsumed by the last call (an incomplete piece).
    pending: u32,
    /// Body bytes of the current response so far.
    off: u64,
    /// The request is HEAD: no body.
    head_method: bool,
    max_head: u32,
    max_body: u64,
}

impl Rx {
    /// A decoder waiting for the first response.
    pub fn new(plan: &HttpPlan) -> Rx {
        Rx {
            state: State::Head,
            scanned: 0,
            pending: 0,
            off: 0,
            head_method: plan.head_method,
            max_head: plan.max_head.min(u32::MAX as usize) as u32,
            max_body: plan.max_body,
        }
    }

    /// The next event from `data[*pos..]`; advances `*pos` past what it
    /// consumed. Call until [`Ev::NeedMore`], then report `*pos` consumed.
    pub fn next<'a>(&mut self, data: &'a [u8], pos: &mut usize) -> Result<Ev<'a>, RxError> {
        // Each pass either returns or consumes input or moves to a state
        // that returns: bounded by the input length (1xx heads consume).
        loop {
            let buf = &data[*pos..];
            match self.state {
                State::Head => {
                    let Some(end) = self.head_end(buf)? else {
                        return Ok(self.need_more(buf));
                    };
                    self.scanned = 0;
                    // Left uninitialised: httparse writes the fields it
                    // found, and zeroing 2 KiB per response would cost
                    // more than parsing a small head.
                    let mut headers = [std::mem::MaybeUninit::uninit(); MAX_HEADERS];
                    let mut resp = httparse::Response::new(&mut []);
                    let parsed = httparse::ParserConfig::default()
                        .parse_response_with_uninit_headers(&mut resp, &buf[..end], &mut headers);
                    match parsed {
                        Ok(httparse::Status::Complete(_)) => {}
                        // The scan found the end of the head: a partial
                        // parse means the head is not what it seems.
                        Ok(httparse::Status::Partial) => {
                            return Err(RxError::Parse(httparse::Error::Status))
                        }
                        Err(e) => return Err(RxError::Parse(e)),
                    }
                    *pos += end;
                    let status = resp.code.unwrap_or(0);
                    if (100..200).contains(&status) {
                        if status == 101 {
                            return Err(RxError::UnexpectedSwitch);
                        }
                        // Interim response (100 Continue, 103 Early
                        // Hints): the final one follows.
                        continue;
                    }
                    let info = head_info(resp.version.unwrap_or(1), resp.headers)?;
                    self.off = 0;
                    let no_body = self.head_method || status == 204 || status == 304;
                    let (state, length, close) = if no_body {
                        (State::Done, Some(0), info.close)
                    } else if info.chunked {
                        (State::ChunkSize, None, info.close)
                    } else if let Some(n) = info.length {
                        if n > self.max_body {
                            return Err(RxError::BodyTooLarge(self.max_body));
                        }
                        (State::Length { left: n }, Some(n), info.close)
                    } else {
                        (State::UntilClose, None, true)
                    };
                    self.state = match state {
                        State::Length { left: 0 } => State::Done,
                        s => s,
                    };
                    return Ok(Ev::Head {
                        status,
                        length: if no_body { Some(0) } else { length },
                        close,
                    });
                }
                State::Length { left } | State::ChunkData { left } => {
                    if buf.is_empty() {
                        return Ok(self.need_more(buf));
                    }
                    let n = left.min(buf.len() as u64) as usize;
                    let left = left - n as u64;
                    self.state = match self.state {
                        State::Length { .. } if left == 0 => State::Done,
                        State::Length { .. } => State::Length { left },
                        _ if left == 0 => State::ChunkEnd,
                        _ => State::ChunkData { left },
                    };
                    return Ok(self.body(&buf[..n], pos));
                }
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(self.need_more(buf));
                    }
                    if self.off + buf.len() as u64 > self.max_body {
                        return Err(RxError::BodyTooLarge(self.max_body));
                    }
                    return Ok(self.body(buf, pos));
                }
                State::ChunkSize => {
                    // A size line starts with a hex digit: httparse would
                    // take an empty line for the last chunk.
                    match buf.first() {
                        None => return Ok(self.need_more(buf)),
                        Some(b) if !b.is_ascii_hexdigit() => return Err(RxError::BadChunk),
                        Some(_) => {}
                    }
                    match httparse::parse_chunk_size(buf) {
                        Ok(httparse::Status::Complete((used, size))) => {
                            *pos += used;
                            if size == 0 {
                                self.state = State::Trailers;
                            } else {
                                if self.off.saturating_add(size) > self.max_body {
                                    return Err(RxError::BodyTooLarge(self.max_body));
                                }
                                self.state = State::ChunkData { left: size };
                            }
                        }
                        Ok(httparse::Status::Partial) if buf.len() < MAX_CHUNK_LINE => {
                            return Ok(self.need_more(buf))
                        }
                        Ok(httparse::Status::Partial) | Err(_) => return Err(RxError::BadChunk),
                    }
                }
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|&b| b != b'\r') {
                            return Err(RxError::BadChunk);
                        }
                        return Ok(self.need_more(buf));
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(RxError::BadChunk);
                    }
                    *pos += 2;
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    // Nearly always just the empty line.
                    if buf.starts_with(b"\r\n") {
                        *pos += 2;
                        self.state = State::Done;
                        continue;
                    }
                    if buf.len() < 2 {
                        return Ok(self.need_more(buf));
                    }
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(buf, &mut headers) {
                        Ok(httparse::Status::Complete((used, _))) => {
                            *pos += used;
                            self.state = State::Done;
                        }
                        Ok(httparse::Status::Partial) if buf.len() < self.max_head as usize => {
                            return Ok(self.need_more(buf))
                        }
                        Ok(httparse::Status::Partial) => {
                            return Err(RxError::HeadTooLarge(self.max_head as usize))
                        }
                        Err(e) => return Err(RxError::Parse(e)),
                    }
                }
                State::Done => {
                    self.state = State::Head;
                    return Ok(Ev::End { len: self.off });
                }
            }
        }
    }

    /// The input ended (the server closed its side).
    pub fn eof(&mut self) -> Eof {
        match self.state {
            State::UntilClose => {
                self.state = State::Head;
                Eof::Complete { len: self.off }
            }
            State::Head if self.pending == 0 => Eof::Clean,
            _ => Eof::Truncated,
        }
    }

    fn need_more(&mut self, rest: &[u8]) -> Ev<'static> {
        self.pending = rest.len() as u32;
        Ev::NeedMore
    }

    fn body<'a>(&mut self, bytes: &'a [u8], pos: &mut usize) -> Ev<'a> {
        let off = self.off;
        self.off += bytes.len() as u64;
        *pos += bytes.len();
        Ev::Body { off, bytes }
    }

    /// The length of the head at the start of `buf` once its end (an empty
    /// line; bare LF accepted as `httparse` does) is there. The scan
    /// resumes where the previous call stopped.
    fn head_end(&mut self, buf: &[u8]) -> Result<Option<usize>, RxError> {
        let max = self.max_head as usize;
        let mut i = (self.scanned as usize).min(buf.len());
        // Bounded by the buffer: `i` only grows.
        loop {
            let Some(nl) = buf[i..].iter().position(|&b| b == b'\n') else {
                i = buf.len();
                break;
            };
            let at = i + nl;
            match (buf.get(at + 1), buf.get(at + 2)) {
                (Some(b'\n'), _) if at + 2 <= max => return Ok(Some(at + 2)),
                (Some(b'\r'), Some(b'\n')) if at + 3 <= max => return Ok(Some(at + 3)),
                (Some(b'\n'), _) | (Some(b'\r'), Some(b'\n')) => break,
                (None, _) | (Some(b'\r'), None) => {
                    // Not decidable yet: look at this line end again.
                    i = at;
                    break;
                }
                _ => i = at + 1,
            }
        }
        if buf.len() > max {
            return Err(RxError::HeadTooLarge(max));
        }
        self.scanned = i as u32;
        Ok(None)
    }
}

struct HeadInfo {
    length: Option<u64>,
    chunked: bool,
    close: bool,
}

fn head_info(version: u8, headers: &[httparse::Header<'_>]) -> Result<HeadInfo, RxError> {
    let mut length: Option<u64> = None;
    let mut te = false;
    let mut chunked = false;
    // HTTP/1.0 closes unless it says keep-alive; 1.1 keeps unless it says
    // close.
    let mut close = version == 0;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            // A list of identical values is tolerated (RFC 9110 8.6);
            // anything else is an error.
            for v in h.value.split(|&b| b == b',') {
                let n = parse_length(trim(v)).ok_or(RxError::BadContentLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(RxError::BadContentLength);
                }
                length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            // Only a final `chunked` is decodable: nothing else was
            // offered (no TE header is sent).
            for v in h.value.split(|&b| b == b',').map(trim) {
                if v.is_empty() {
                    continue;
                }
                if chunked || !v.eq_ignore_ascii_case(b"chunked") {
                    return Err(RxError::UnsupportedCoding);
                }
                chunked = true;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for v in h.value.split(|&b| b == b',').map(trim) {
                if v.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if v.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    close = false;
                }
            }
        }
    }
    if te && length.is_some() {
        return Err(RxError::LengthAndChunked);
    }
    if te && !chunked {
        return Err(RxError::UnsupportedCoding);
    }
    Ok(HeadInfo {
        length,
        chunked,
        close,
    })
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(s, |e| e + 1);
    &v[s..e.max(s)]
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |a, &b| a * 10 + u64::from(b - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Eq)]
    struct Resp {
        status: u16,
        length: Option<u64>,
        close: bool,
        body: Vec<u8>,
        end: Option<u64>,
    }

    /// Feeds `input` in pieces cut at `cuts`, keeping what the decoder
    /// leaves unconsumed as the engine does; returns the responses and the
    /// error, if any.
    fn decode(plan: &HttpPlan, input: &[u8], cuts: &[usize]) -> (Vec<Resp>, Option<RxError>) {
        let mut rx = Rx::new(plan);
        let mut out: Vec<Resp> = Vec::new();
        let mut held: Vec<u8> = Vec::new();
        let mut last = 0;
        let mut bounds: Vec<usize> = cuts.iter().copied().filter(|&c| c < input.len()).collect();
        bounds.push(input.len());
        for b in bounds {
            if b < last {
                continue;
            }
            held.extend_from_slice(&input[last..b]);
            last = b;
            let mut pos = 0;
            loop {
                match rx.next(&held, &mut pos) {
                    Err(e) => return (out, Some(e)),
                    Ok(Ev::NeedMore) => break,
                    Ok(Ev::Head {
                        status,
                        length,
                        close,
                    }) => out.push(Resp {
                        status,
                        length,
                        close,
                        ..Resp::default()
                    }),
                    Ok(Ev::Body { off, bytes }) => {
                        let r = out.last_mut().expect("body after a head");
                        assert_eq!(off as usize, r.body.len());
                        r.body.extend_from_slice(bytes);
                    }
                    Ok(Ev::End { len }) => {
                        out.last_mut().expect("end after a head").end = Some(len)
                    }
                }
            }
            held.drain(..pos);
        }
        if let Eof::Complete { len } = rx.eof() {
            if let Some(r) = out.last_mut() {
                r.end = Some(len);
            }
        }
        (out, None)
    }

    fn plan() -> HttpPlan {
        HttpPlan::new("GET", "/", "h")
    }

    const STREAM: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n\
        HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
        HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n\
        HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n\
        HTTP/1.1 200 OK\nConnection: close\nContent-Length: 2\n\nok";

    fn expected() -> Vec<Resp> {
        vec![
            Resp {
                status: 200,
                length: Some(5),
                close: false,
                body: b"hello".to_vec(),
                end: Some(5),
            },
            Resp {
                status: 200,
                length: None,
                close: false,
                body: b"abc0123456789".to_vec(),
                end: Some(13),
            },
            Resp {
                status: 404,
                length: Some(0),
                close: false,
                body: vec![],
                end: Some(0),
            },
            Resp {
                status: 200,
                length: Some(2),
                close: true,
                body: b"ok".to_vec(),
                end: Some(2),
            },
        ]
    }

    #[test]
    fn whole_and_cut_at_every_byte_and_pair() {
        let p = plan();
        assert_eq!(decode(&p, STREAM, &[]), (expected(), None));
        for i in 0..STREAM.len() {
            assert_eq!(decode(&p, STREAM, &[i]), (expected(), None), "cut at {i}");
        }
        for i in (0..STREAM.len()).step_by(7) {
            for j in i..STREAM.len() {
                assert_eq!(
                    decode(&p, STREAM, &[i, j]),
                    (expected(), None),
                    "cuts {i} {j}"
                );
            }
        }
        let every: Vec<usize> = (0..STREAM.len()).collect();
        assert_eq!(decode(&p, STREAM, &every), (expected(), None));
    }

    #[test]
    fn body_until_close_and_head_method() {
        let (r, e) = decode(&plan(), b"HTTP/1.0 200 OK\r\n\r\nabcdef", &[20]);
        assert_eq!(e, None);
        assert_eq!(
            (r[0].close, r[0].end, &r[0].body[..]),
            (true, Some(6), &b"abcdef"[..])
        );
        let head = HttpPlan::new("HEAD", "/", "h");
        let (r, e) = decode(
            &head,
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 204 No\r\n\r\n",
            &[],
        );
        assert_eq!(e, None);
        assert_eq!((r.len(), r[0].end, r[1].end), (2, Some(0), Some(0)));
        let (r, _) = decode(
            &plan(),
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            &[],
        );
        assert!(!r[0].close);
    }

    #[test]
    fn errors() {
        let p = plan();
        let cases: &[(&[u8], RxError)] = &[
            (
                b"HTTP/1.1 2x0 OK\r\n\r\n",
                RxError::Parse(httparse::Error::Status),
            ),
            (b"garbage\r\n\r\n", RxError::Parse(httparse::Error::Version)),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
                RxError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                RxError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                RxError::LengthAndChunked,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                RxError::UnsupportedCoding,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                RxError::BadChunk,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXX",
                RxError::BadChunk,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
                RxError::BodyTooLarge(64 << 20),
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
                RxError::UnexpectedSwitch,
            ),
        ];
        for (input, want) in cases {
            for cut in [0, 5, input.len() - 1] {
                let (_, e) = decode(&p, input, &[cut]);
                assert_eq!(e.as_ref(), Some(want), "{}", String::from_utf8_lossy(input));
            }
        }
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        while big.len() <= p.max_head {
            big.extend_from_slice(b"X-Pad: 0123456789\r\n");
        }
        assert_eq!(
            decode(&p, &big, &[100]).1,
            Some(RxError::HeadTooLarge(p.max_head))
        );
        let mut line = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
        line.resize(line.len() + MAX_CHUNK_LINE, b'x');
        assert_eq!(decode(&p, &line, &[]).1, Some(RxError::BadChunk));
    }

    #[test]
    fn truncation_is_told_from_a_clean_end() {
        let p = plan();
        let mut rx = Rx::new(&p);
        assert_eq!(rx.eof(), Eof::Clean);
        let mut pos = 0;
        assert_eq!(rx.next(b"HTTP/1.1 200", &mut pos), Ok(Ev::NeedMore));
        assert_eq!((pos, rx.eof()), (0, Eof::Truncated));
        let mut rx = Rx::new(&p);
        let data = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab";
        let mut pos = 0;
        assert!(matches!(rx.next(data, &mut pos), Ok(Ev::Head { .. })));
        assert!(matches!(rx.next(data, &mut pos), Ok(Ev::Body { .. })));
        assert_eq!(rx.next(data, &mut pos), Ok(Ev::NeedMore));
        assert_eq!(rx.eof(), Eof::Truncated);
    }

    #[test]
    fn requests_are_encoded_with_their_length() {
        let mut p = HttpPlan::new("POST", "/echo?x=1", "example:8080");
        assert!(p.body);
        for size in [1usize, 9, 10, 99, 100, 12345] {
            let mut buf = vec![0u8; p.request_len(size) + 3];
            let n = p.write_request(7, size, &mut buf);
            assert_eq!(n, p.request_len(size));
            let want = format!(
                "POST /echo?x=1 HTTP/1.1\r\nHost: example:8080\r\nContent-Length: {size}\r\n\r\n"
            );
            assert_eq!(&buf[..want.len()], want.as_bytes());
            assert_eq!(
                crate::payload::verify_payload(7, 0, &buf[want.len()..n], false),
                None
            );
        }
        p = HttpPlan::new("GET", "/", "h");
        let mut buf = vec![0u8; p.request_len(64)];
        assert_eq!(p.write_request(1, 64, &mut buf), buf.len());
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    }
}
