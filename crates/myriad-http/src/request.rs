//! Request heads: strict parsing (RFC 9112) on top of `httparse`, and the
//! borrowed view handed to the application.

use crate::conn::Config;
use crate::error::RequestError;
use std::mem::MaybeUninit;

/// Hard upper bound of [`Config::max_headers`]: the size of the stack array
/// `httparse` parses into (uninitialised, so its size costs nothing).
pub const MAX_HEADERS: usize = 256;

/// The HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Version {
    /// HTTP/1.0: close after the response unless `keep-alive` is asked for;
    /// no chunked responses.
    Http10,
    /// HTTP/1.1 (and 1.x for x > 1, which RFC 9112 §2.3 says to treat as
    /// the highest minor version implemented).
    Http11,
}

impl Version {
    /// `HTTP/1.0` or `HTTP/1.1`, as written in a status line.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Version::Http10 => b"HTTP/1.0",
            Version::Http11 => b"HTTP/1.1",
        }
    }
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyKind {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request head, borrowed from the received bytes (no copy is made: the
/// head is parsed and handed over where it arrived). Copy out what must
/// outlive the event.
///
/// # Examples
///
/// ```
/// use myriad_http::{Config, Event, HttpDate, Now, ServerConn};
/// use std::time::Instant;
/// let now = Now::new(Instant::now(), HttpDate::new().refresh(Instant::now(), std::time::SystemTime::now));
/// let mut conn = ServerConn::new(Config::default(), now.instant());
/// let mut input = b"GET /a?b HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n".to_vec();
/// let mut out = Vec::new();
/// let (_, ev) = conn.feed(&mut input, now, &mut out).unwrap();
/// let Event::Head(req) = ev else { panic!() };
/// assert_eq!(req.method(), "GET");
/// assert_eq!(req.target(), "/a?b");
/// assert_eq!(req.header("accept"), Some(&b"*/*"[..]));
/// assert_eq!(req.headers().count(), 2);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Request<'d> {
    pub(crate) method: &'d str,
    pub(crate) target: &'d str,
    pub(crate) version: Version,
    /// The header lines, each ending in CRLF, without the final empty line.
    pub(crate) fields: &'d [u8],
    pub(crate) body: BodyKind,
    pub(crate) keep_alive: bool,
    pub(crate) expect_continue: bool,
    /// `Upgrade` lists `websocket` (noted while parsing, so that routing
    /// does not scan the fields again).
    pub(crate) upgrade_websocket: bool,
}

impl<'d> Request<'d> {
    /// The method (`GET`, `POST`, ...), case-sensitive.
    pub fn method(&self) -> &'d str {
        self.method
    }

    /// The request target as sent (origin form `/path?query` usually).
    pub fn target(&self) -> &'d str {
        self.target
    }

    /// The version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// How the body is delimited.
    pub fn body_kind(&self) -> BodyKind {
        self.body
    }

    /// Whether the connection stays open after this exchange (as asked by
    /// the client; the server may still close).
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Whether the client sent `Expect: 100-continue` (the codec answers
    /// `100 Continue` when the body is first read).
    pub fn expects_continue(&self) -> bool {
        self.expect_continue
    }

    /// The header fields in order, values without surrounding whitespace.
    pub fn headers(&self) -> Headers<'d> {
        Headers { rest: self.fields }
    }

    /// The value of the first field named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'d [u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// Where a [`Request`]'s parts lie relative to the first byte of its head:
/// lets the engine glue keep a head (in the receive buffer, or copied when
/// the body arrives over several reads) and view it again later without
/// parsing it twice.
#[cfg_attr(not(feature = "engine"), allow(dead_code))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadSpan {
    method: (u32, u32),
    target: (u32, u32),
    fields: (u32, u32),
    version: Version,
    body: BodyKind,
    keep_alive: bool,
    expect_continue: bool,
    upgrade_websocket: bool,
}

#[cfg_attr(not(feature = "engine"), allow(dead_code))]
impl<'d> Request<'d> {
    /// The span of this view, its head starting at address `base`.
    pub(crate) fn span(&self, base: usize) -> HeadSpan {
        // Address arithmetic only (no pointer is dereferenced): every slice
        // of the view lies in the head that starts at `base`.
        let at = |s: &[u8]| {
            (
                (s.as_ptr() as usize).wrapping_sub(base) as u32,
                s.len() as u32,
            )
        };
        HeadSpan {
            method: at(self.method.as_bytes()),
            target: at(self.target.as_bytes()),
            fields: at(self.fields),
            version: self.version,
            body: self.body,
            keep_alive: self.keep_alive,
            expect_continue: self.expect_continue,
            upgrade_websocket: self.upgrade_websocket,
        }
    }
}

#[cfg_attr(not(feature = "engine"), allow(dead_code))]
impl HeadSpan {
    /// The view again, over `head` (the bytes the span was taken from, or
    /// a copy of them). Out-of-range parts come out empty rather than
    /// panicking.
    pub(crate) fn view<'a>(&self, head: &'a [u8]) -> Request<'a> {
        let get = |(at, len): (u32, u32)| {
            let (at, len) = (at as usize, len as usize);
            head.get(at..at.saturating_add(len)).unwrap_or(&[])
        };
        let text = |r| std::str::from_utf8(get(r)).unwrap_or("");
        Request {
            method: text(self.method),
            target: text(self.target),
            version: self.version,
            fields: get(self.fields),
            body: self.body,
            keep_alive: self.keep_alive,
            expect_continue: self.expect_continue,
            upgrade_websocket: self.upgrade_websocket,
        }
    }
}

/// Iterator over a request's header fields: `(name, value)`.
#[derive(Debug, Clone)]
pub struct Headers<'d> {
    rest: &'d [u8],
}

impl<'d> Iterator for Headers<'d> {
    type Item = (&'d str, &'d [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // The head was validated strictly before this view was made: every
        // line is `token ":" OWS value OWS CRLF`, so splitting is enough.
        let nl = memchr::memchr(b'\n', self.rest)?;
        let line = &self.rest[..nl.saturating_sub(1)];
        self.rest = &self.rest[nl + 1..];
        let colon = line.iter().position(|&b| b == b':')?;
        let name = std::str::from_utf8(&line[..colon]).unwrap_or("");
        Some((name, trim_ows(&line[colon + 1..])))
    }
}

/// A parsed head: the view, and how many bytes it took.
pub(crate) struct Head<'d> {
    pub(crate) req: Request<'d>,
    pub(crate) len: usize,
    pub(crate) is_head: bool,
}

/// Looks for the end of the head in `buf` from `*scanned` on, rejecting
/// bare LF as it goes, and parses the head once it is complete.
///
/// Returns `Ok(None)` while the head is incomplete; `*scanned` remembers
/// how far the scan got so that a head arriving a byte at a time is
/// scanned once, not once per byte (and is parsed once).
pub(crate) fn parse_head<'d>(
    buf: &'d mut [u8],
    scanned: &mut usize,
    cfg: &Config,
    version_out: &mut Version,
) -> Result<Option<Head<'d>>, RequestError> {
    let Some(end) = find_head_end(buf, scanned)? else {
        if buf.len() >= cfg.max_head {
            return Err(head_too_large(buf, cfg.max_head));
        }
        return Ok(None);
    };
    if end > cfg.max_head {
        return Err(head_too_large(buf, cfg.max_head));
    }
    let (line_start, line_end) = request_line(&buf[..end]);
    let minor_fixed = fix_minor_version(&mut buf[line_start..line_end]);
    let buf: &'d [u8] = buf;
    let head = &buf[..end];

    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let n = cfg.max_headers.clamp(1, MAX_HEADERS);
    let mut req = httparse::Request::new(&mut []);
    let parsed = req.parse_with_uninit_headers(head, &mut slots[..n]);
    match parsed {
        Ok(httparse::Status::Complete(len)) if len == end => {}
        // Only empty lines, or (never expected) a length that differs from
        // the end found by the scan: refuse rather than guess.
        Ok(_) => return Err(RequestError::BadRequestLine),
        Err(e) => return Err(classify(e, head)),
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(RequestError::BadRequestLine);
    };
    let version = if minor == 0 && !minor_fixed {
        Version::Http10
    } else {
        Version::Http11
    };
    // Known from here on: error answers use it in their status line.
    *version_out = version;
    check_target(method, target)?;

    let mut content_length: Option<u64> = None;
    let mut te_seen = false;
    let mut te_unknown = false;
    let mut te_chunked_last = false;
    let mut te_bad = false;
    let mut hosts = 0u32;
    let mut content_types = 0u32;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    let mut upgrade_websocket = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        // Only a name of one of these lengths can be one of them: most
        // fields are compared once, not five times.
        if !matches!(name.len(), 4 | 6 | 7 | 10 | 12 | 14 | 17) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if content_length.is_some() {
                return Err(RequestError::RepeatedContentLength);
            }
            content_length = Some(parse_content_length(h.value)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te_seen = true;
            for coding in h.value.split(|&b| b == b',') {
                let coding = trim_ows(coding);
                if coding.is_empty() {
                    te_bad = true;
                } else if coding.eq_ignore_ascii_case(b"chunked") {
                    // `chunked` must be applied exactly once, last.
                    if te_chunked_last {
                        te_bad = true;
                    }
                    te_chunked_last = true;
                } else {
                    te_unknown = true;
                    if te_chunked_last {
                        te_bad = true;
                    }
                    te_chunked_last = false;
                }
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            // Empty is what a client sends when the target URI has no
            // authority (RFC 9112 §3.2); for origin and asterisk form the
            // authority comes from Host, and an http URI with an empty host
            // is invalid (RFC 9110 §4.2.1). Absolute form carries its own.
            if !valid_host(h.value)
                || (h.value.is_empty() && matches!(target.as_bytes().first(), Some(b'/' | b'*')))
            {
                return Err(RequestError::BadHost);
            }
        } else if name.eq_ignore_ascii_case(b"content-type") {
            // A singleton (RFC 9110 §5.3): two media types are two readings
            // of one body, for whatever reads it after us.
            content_types += 1;
            if content_types > 1 {
                return Err(RequestError::RepeatedContentType);
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for opt in h.value.split(|&b| b == b',') {
                let opt = trim_ows(opt);
                if opt.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if opt.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade_websocket |= h
                .value
                .split(|&b| b == b',')
                .any(|t| trim_ows(t).eq_ignore_ascii_case(b"websocket"));
        } else if name.eq_ignore_ascii_case(b"expect") {
            if h.value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else if version == Version::Http11 {
                return Err(RequestError::ExpectationFailed);
            }
        }
    }
    if hosts > 1 {
        return Err(RequestError::RepeatedHost);
    }
    if hosts == 0 && version == Version::Http11 {
        return Err(RequestError::MissingHost);
    }
    let body = if te_seen {
        // RFC 9112 §6.1 and §6.3: both framings, or chunked in HTTP/1.0,
        // mean the framing cannot be trusted (request smuggling).
        if content_length.is_some() {
            return Err(RequestError::LengthAndChunked);
        }
        if version == Version::Http10 {
            return Err(RequestError::BadTransferEncoding);
        }
        // RFC 9112 §6.3 (4): chunked not last leaves the length unknown,
        // 400 (a MUST); only with chunked last is an unknown coding before
        // it the 501 of §6.1.
        if te_bad || !te_chunked_last {
            return Err(RequestError::BadTransferEncoding);
        }
        if te_unknown {
            return Err(RequestError::UnsupportedTransferCoding);
        }
        BodyKind::Chunked
    } else {
        match content_length {
            Some(0) | None => BodyKind::None,
            Some(n) if n > cfg.max_body => return Err(RequestError::BodyTooLarge),
            Some(n) => BodyKind::Length(n),
        }
    };
    let keep_alive = match version {
        Version::Http11 => !close,
        Version::Http10 => keep_alive_token && !close,
    };
    // The header lines: after the request line, before the final CRLF.
    let fields_start = (line_end + 2).min(end);
    let fields = head.get(fields_start..end - 2).unwrap_or(&[]);
    Ok(Some(Head {
        is_head: method == "HEAD",
        req: Request {
            method,
            target,
            version,
            fields,
            body,
            keep_alive,
            // RFC 9110 §10.1.1: an HTTP/1.0 expectation is ignored.
            expect_continue: expect_continue
                && version == Version::Http11
                && body != BodyKind::None,
            upgrade_websocket,
        },
        len: end,
    }))
}

/// Finds the end of the head (just past CRLF CRLF), checking every LF seen
/// for its CR. Continues from `*scanned`.
///
/// LFs are found eight bytes at a time in a `u64` (SWAR) instead of by
/// `memchr_iter`: a request head is a few dozen bytes with an LF every
/// dozen or two, where each `memchr` call's setup cost more than the bytes
/// it skipped (callgrind, pipelined GET: 190 user-space instructions a
/// request for this scan).
fn find_head_end(buf: &[u8], scanned: &mut usize) -> Result<Option<usize>, RequestError> {
    let from = (*scanned).min(buf.len());
    // (`chunks_exact`, not `as_chunks`: the workspace's MSRV is 1.85.)
    let mut words = buf[from..].chunks_exact(8);
    for (i, word) in words.by_ref().enumerate() {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            break; // never: every chunk is 8 bytes
        };
        let mut lf = eq_bytes(u64::from_le_bytes(word), b'\n');
        while lf != 0 {
            // The high bit of byte k is bit 8k + 7 (little-endian load).
            let nl = from + i * 8 + (lf.trailing_zeros() / 8) as usize;
            if let Some(end) = at_lf(buf, nl)? {
                return Ok(Some(end));
            }
            lf &= lf - 1;
        }
    }
    let tail = words.remainder();
    let tail_from = buf.len() - tail.len();
    for (i, &b) in tail.iter().enumerate() {
        if b == b'\n' {
            if let Some(end) = at_lf(buf, tail_from + i)? {
                return Ok(Some(end));
            }
        }
    }
    // Every LF so far is checked; the next call starts after them (its LF
    // check and end check look back into bytes that stay in place, since
    // nothing of an incomplete head is consumed).
    *scanned = buf.len();
    Ok(None)
}

/// The high bit of each byte of `word` that equals `byte`, and no other
/// bit. Exact: `(x & 0x7f) + 0x7f` cannot carry into the next byte, so no
/// byte next to a match is flagged (the classic `(x - 0x01) & !x` trick
/// can).
#[inline(always)]
fn eq_bytes(word: u64, byte: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = word ^ (0x0101_0101_0101_0101 * u64::from(byte));
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// The first `byte` in `hay`, eight bytes at a time: for the few dozen
/// bytes of a request line, cheaper than a `memchr` call's setup.
#[inline(always)]
fn find_byte(hay: &[u8], byte: u8) -> Option<usize> {
    let mut words = hay.chunks_exact(8);
    for (i, word) in words.by_ref().enumerate() {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            break; // never: every chunk is 8 bytes
        };
        let m = eq_bytes(u64::from_le_bytes(word), byte);
        if m != 0 {
            return Some(i * 8 + (m.trailing_zeros() / 8) as usize);
        }
    }
    let tail = words.remainder();
    let tail_from = hay.len() - tail.len();
    tail.iter().position(|&b| b == byte).map(|j| tail_from + j)
}

/// The LF at `nl`: a bare LF is an error; an empty line ends the head
/// (the index just past it), unless it is a leading empty line (RFC 9112
/// §2.2 says to skip one before the request line).
#[inline(always)]
fn at_lf(buf: &[u8], nl: usize) -> Result<Option<usize>, RequestError> {
    if nl == 0 || buf[nl - 1] != b'\r' {
        return Err(RequestError::BareLf);
    }
    if nl >= 3 && &buf[nl - 3..nl - 1] == b"\r\n" {
        return Ok(Some(nl + 1));
    }
    Ok(None)
}

/// The head limit is reached. When the request line has not ended within
/// it, say what is too long: with no space yet it is no request line (400);
/// past the method it is the target, which RFC 9112 §3 answers 414.
/// Only on this error path: the first line is searched once.
fn head_too_large(buf: &[u8], max_head: usize) -> RequestError {
    let within = &buf[..buf.len().min(max_head)];
    if memchr::memchr(b'\n', within).is_some() {
        return RequestError::HeadTooLarge;
    }
    match memchr::memchr(b' ', within) {
        None => RequestError::BadRequestLine,
        Some(_) => RequestError::UriTooLong,
    }
}

/// RFC 9112 §2.3: a 1.x version with x above 1 is processed as HTTP/1.1.
/// `httparse` knows only 1.0 and 1.1, so the minor digit is rewritten in
/// place (the engine hands the receive buffer over mutably for this kind
/// of thing). Returns whether it did.
fn fix_minor_version(line: &mut [u8]) -> bool {
    let n = line.len();
    if n > 9 && line[n - 9] == b' ' && &line[n - 8..n - 1] == b"HTTP/1." {
        let d = line[n - 1];
        if (b'2'..=b'9').contains(&d) {
            line[n - 1] = b'1';
            return true;
        }
    }
    false
}

/// Where the request line starts (after leading empty lines) and ends (its
/// CR) in a complete head.
fn request_line(head: &[u8]) -> (usize, usize) {
    let start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(0);
    let end = find_byte(&head[start..], b'\r').map_or(head.len(), |i| start + i);
    (start, end)
}

/// Maps an `httparse` error to ours, looking at the bytes where the error
/// kind alone is ambiguous.
fn classify(e: httparse::Error, head: &[u8]) -> RequestError {
    match e {
        httparse::Error::TooManyHeaders => RequestError::TooManyHeaders,
        httparse::Error::HeaderValue => RequestError::BadHeaderValue,
        httparse::Error::HeaderName => {
            if head
                .windows(3)
                .any(|w| w[..2] == *b"\r\n" && (w[2] == b' ' || w[2] == b'\t'))
            {
                RequestError::ObsFold
            } else {
                RequestError::BadHeaderName
            }
        }
        httparse::Error::Version => classify_version(head),
        _ => RequestError::BadRequestLine,
    }
}

/// `HTTP/<digit>.<digit>` with another major version is 505; anything else
/// where the version should be is 400.
fn classify_version(head: &[u8]) -> RequestError {
    let start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(0);
    let line = &head[start..];
    let line = &line[..line.iter().position(|&b| b == b'\r').unwrap_or(line.len())];
    // method SP target SP version: exactly two spaces (httparse got past
    // the target, so the third token is the version).
    let mut parts = line.split(|&b| b == b' ');
    let (Some(_), Some(_), Some(v), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return RequestError::BadRequestLine;
    };
    match v {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() && *major != b'1' =>
        {
            RequestError::UnsupportedVersion
        }
        _ => RequestError::BadVersion,
    }
}

/// RFC 9112 §3.2: origin form for everything, absolute form for
/// everything, authority form for CONNECT only, `*` for OPTIONS only.
/// A well-formed CONNECT is refused as not implemented: there is no tunnel
/// mode, and a 2xx would announce one (RFC 9110 §9.3.6).
///
/// `httparse` lets through two things RFC 3986 does not: raw octets above
/// 0x7F (which must be percent-encoded) and a fragment (`#`, never part of
/// a request target). A route or a file path must not see either, so both
/// are 400 here. The target only, and cheaply: a short target in an
/// inlined byte loop, a long one a word at a time (`is_ascii`, core's
/// `contains`); a call into either, or into the `memchr` crate, costs more
/// setup than a typical path has bytes (callgrind: 17 -> 92 instructions a
/// request with `memchr` on `/`, 17 -> 22 with this).
fn check_target(method: &str, target: &str) -> Result<(), RequestError> {
    let t = target.as_bytes();
    let suspect = if t.len() <= 32 {
        t.iter().any(|&b| b >= 0x80 || b == b'#')
    } else {
        !t.is_ascii() || t.contains(&b'#')
    };
    if suspect {
        return Err(RequestError::BadTarget);
    }
    let ok = match t.first() {
        Some(b'/') => method != "CONNECT",
        Some(b'*') => t.len() == 1 && method == "OPTIONS",
        Some(_) if method == "CONNECT" => {
            if !t.contains(&b'/') && t.contains(&b':') {
                return Err(RequestError::UnsupportedMethod);
            }
            false
        }
        Some(c) if c.is_ascii_alphabetic() => {
            // absolute-form: scheme ":" ...
            let scheme_end = t.iter().position(|&b| b == b':');
            scheme_end.is_some_and(|e| {
                t[..e]
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
            })
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(RequestError::BadTarget)
    }
}

/// `1*DIGIT`, nothing else (no sign, no list, no whitespace inside), and
/// no leading zero: `0200` is valid 1*DIGIT but octal 128 to some parsers,
/// and a length must have one reading only (strict choice; no client
/// sends one).
fn parse_content_length(v: &[u8]) -> Result<u64, RequestError> {
    let v = trim_ows(v);
    if v.is_empty() || v.len() > 19 || (v.len() > 1 && v[0] == b'0') {
        return Err(RequestError::BadContentLength);
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return Err(RequestError::BadContentLength);
        }
        // 19 digits cannot overflow a u64.
        n = n * 10 + (b - b'0') as u64;
    }
    Ok(n)
}

/// `uri-host [ ":" port ]`: reg-name, IPv4 or bracketed IP literal
/// characters. Empty is allowed (RFC 9112 §3.2).
fn valid_host(v: &[u8]) -> bool {
    v.iter().all(|&b| HOST_CHAR[b as usize])
}

/// The bytes of a `Host` value (RFC 3986 reg-name, IP literal and port
/// characters, percent-encoding), as a table: one load a byte.
const HOST_CHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
                    | b'%'
            );
        i += 1;
    }
    t
};

pub(crate) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The scan `find_head_end` replaced (one `memchr` per LF): the word
    /// at a time scan must give the same answer for any bytes and any
    /// starting point.
    fn reference(buf: &[u8], from: usize) -> Result<Option<usize>, RequestError> {
        let from = from.min(buf.len());
        for off in memchr::memchr_iter(b'\n', &buf[from..]) {
            let nl = from + off;
            if nl == 0 || buf[nl - 1] != b'\r' {
                return Err(RequestError::BareLf);
            }
            if nl >= 3 && &buf[nl - 3..nl - 1] == b"\r\n" {
                return Ok(Some(nl + 1));
            }
        }
        Ok(None)
    }

    fn check(buf: &[u8], from: usize) {
        let mut scanned = from;
        let got = find_head_end(buf, &mut scanned);
        assert_eq!(got, reference(buf, from), "{buf:?} from {from}");
        if got == Ok(None) {
            assert_eq!(scanned, buf.len());
        }
    }

    #[test]
    fn head_end_cases() {
        check(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 0);
        check(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\n", 0);
        check(b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 0);
        check(b"\n", 0);
        check(b"GET / HTTP/1.1\nHost: h\r\n\r\n", 0);
        check(b"GET / HTTP/1.1\r\nHost: h\r\n\n", 0);
        check(b"GET / HTTP/1.1\r\nHost: h\r\n\r", 0);
        // Every LF position in and across an 8-byte word, bare and not.
        for len in 0..20 {
            for at in 0..len {
                let mut b = vec![b'a'; len];
                b[at] = b'\n';
                check(&b, 0);
                if at > 0 {
                    b[at - 1] = b'\r';
                    check(&b, 0);
                }
            }
        }
        // Bytes that differ from LF in one bit, and 0x8a (LF with the high bit).
        check(&[0x0b, 0x08, 0x0e, 0x02, 0x1a, 0x4a, 0x8a, 0x0a, 0x0a], 0);
        check(&[0x0d, 0x0a, 0x8a, 0x0b, 0x0d, 0x0a, 0x0d, 0x0a, 0x00], 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]
        #[test]
        fn find_byte_is_memchr(
            hay in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(0x8d_u8), any::<u8>()],
                0..80,
            ),
            byte in prop_oneof![Just(b'\r'), Just(b'\n'), any::<u8>()],
        ) {
            prop_assert_eq!(find_byte(&hay, byte), memchr::memchr(byte, &hay));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn head_end_is_the_memchr_scan(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a'), any::<u8>()],
                0..80,
            ),
            from in 0usize..90,
        ) {
            check(&bytes, from);
        }
    }
}
