//! The output side: where encoded bytes go, and the small stack buffer
//! response heads are encoded in.

use crate::date::DATE_LEN;
use std::cell::RefCell;

/// A destination for encoded bytes (response heads, bodies, chunk framing).
///
/// The engine's connection context implements it (with the `engine`
/// feature) so that a response head and its body go straight into the
/// engine's pooled outbound buffers in one vectored write, without an
/// intermediate `Vec`. Writing is infallible: back-pressure is the engine's
/// business.
///
/// # Examples
///
/// ```
/// use myriad_http::Sink;
/// let mut out: Vec<u8> = Vec::new();
/// out.write(b"ab");
/// out.write_vectored(&[b"c", b"de"]);
/// assert_eq!(out, b"abcde");
/// ```
pub trait Sink {
    /// Appends `bytes` to the output.
    fn write(&mut self, bytes: &[u8]);

    /// Appends several slices in order (a head and its body). The default
    /// calls [`Sink::write`] for each part.
    fn write_vectored(&mut self, parts: &[&[u8]]) {
        for part in parts {
            self.write(part);
        }
    }

    /// Appends exactly `len` bytes that `fill` writes into the slice it is
    /// given (of `len` bytes, whatever they held before: overwrite, do not
    /// read). Lets an encoder whose output length is known write in place
    /// instead of into a buffer of its own. The default fills a temporary
    /// `Vec` and calls [`Sink::write`].
    fn write_exact(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) {
        let mut tmp = vec![0; len];
        fill(&mut tmp);
        self.write(&tmp);
    }
}

impl Sink for Vec<u8> {
    fn write(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn write_vectored(&mut self, parts: &[&[u8]]) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        self.reserve(total);
        for part in parts {
            self.extend_from_slice(part);
        }
    }

    fn write_exact(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) {
        let at = self.len();
        self.resize(at + len, 0);
        fill(&mut self[at..]);
    }
}

impl<S: Sink + ?Sized> Sink for &mut S {
    fn write(&mut self, bytes: &[u8]) {
        (**self).write(bytes);
    }

    fn write_vectored(&mut self, parts: &[&[u8]]) {
        (**self).write_vectored(parts);
    }

    fn write_exact(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) {
        (**self).write_exact(len, fill);
    }
}

/// A response head, described by what it is made of and written in one
/// pass into space the [`Sink`] lends ([`Sink::write_exact`]): its length
/// is known before a byte is written.
///
/// Hand-written instead of encoding into a buffer: the engine's sink lends
/// the connection's outbound chunk, so each byte of a head is copied once
/// and nothing is allocated or zeroed per response (an intermediate
/// buffer cost a second copy and a 512-byte memset per request: a third of
/// the user-space instructions of a pipelined GET).
pub(crate) struct Head<'a> {
    /// The whole status line of a common status (`HTTP/1.1 200 OK`, and
    /// no `digits`), or `HTTP/1.x ` followed by `digits`, a space and
    /// `reason`.
    pub(crate) line: &'static [u8],
    pub(crate) digits: Digits,
    pub(crate) reason: &'static [u8],
    pub(crate) date: &'a [u8],
    pub(crate) headers: &'a [(&'a str, &'a [u8])],
    /// `\r\nContent-Length: ` and `length`, `\r\nTransfer-Encoding:
    /// chunked`, or nothing.
    pub(crate) framing: &'static [u8],
    /// The content length, kept as a number: its digits are written only
    /// when the head is not the cached one, so a cache hit compares one
    /// integer instead of formatting it (`Digits::of` was 88 of 2,909
    /// user-space instructions of a pipelined GET).
    pub(crate) length: Option<u64>,
    /// `\r\nConnection: close`, `\r\nConnection: keep-alive` or nothing.
    pub(crate) connection: &'static [u8],
    /// [`headers_known`]'s answer for `headers` (see [`Known`]).
    pub(crate) known: Known,
}

/// Whether a head's `headers` are those of this thread's cached head,
/// checked field by field when the head was encoded (so they were
/// validated when that head was first written): the cache generation it
/// matched, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Known(u64);

impl Known {
    pub(crate) const NO: Known = Known(0);
}

/// The last response head written on this thread, that is per engine loop:
/// its parts and its bytes. A server answers most requests with a head it
/// has just written (same status, headers, length, and a `Date` that
/// changes once a second), so the next one is one copy instead of a dozen
/// small ones, and its headers are not validated again (callgrind,
/// keep-alive GET of http_hello: the head cost 1,030 of 4,470 user-space
/// instructions a request).
struct HeadCache {
    /// Bumped at each store; 0 means empty.
    generation: u64,
    /// The `&'static` parts by address and length: equal addresses and
    /// lengths are equal bytes (they cannot change), and unequal ones just
    /// miss.
    line: (usize, usize),
    reason: (usize, usize),
    framing: (usize, usize),
    connection: (usize, usize),
    digits: Digits,
    length: Option<u64>,
    date: [u8; DATE_LEN],
    headers: Vec<(Box<str>, Box<[u8]>)>,
    bytes: Vec<u8>,
}

/// Heads longer than this are not kept (their headers are unusual anyway).
const HEAD_CACHE_MAX: usize = 1024;

thread_local! {
    static HEAD_CACHE: RefCell<HeadCache> = const {
        RefCell::new(HeadCache {
            generation: 0,
            line: (0, 0),
            reason: (0, 0),
            framing: (0, 0),
            connection: (0, 0),
            digits: Digits::NONE,
            length: None,
            date: [0; DATE_LEN],
            headers: Vec::new(),
            bytes: Vec::new(),
        })
    };
}

fn addr(s: &'static [u8]) -> (usize, usize) {
    (s.as_ptr() as usize, s.len())
}

/// Whether `headers` are, name for name and byte for byte, the headers of
/// this thread's cached head (which were validated before it was written):
/// the cache generation, else [`Known::NO`].
pub(crate) fn headers_known(headers: &[(&str, &[u8])]) -> Known {
    HEAD_CACHE.with(|c| {
        let Ok(c) = c.try_borrow() else {
            return Known::NO;
        };
        let same = c.generation != 0
            && c.headers.len() == headers.len()
            && c.headers
                .iter()
                .zip(headers)
                .all(|((cn, cv), (n, v))| **cn == **n && **cv == **v);
        if same {
            Known(c.generation)
        } else {
            Known::NO
        }
    })
}

impl HeadCache {
    fn matches(&self, h: &Head<'_>) -> bool {
        h.known != Known::NO
            && h.known.0 == self.generation
            && self.line == addr(h.line)
            && self.framing == addr(h.framing)
            && self.connection == addr(h.connection)
            && self.length == h.length
            && self.digits == h.digits
            && self.reason == addr(h.reason)
            && self.date[..] == *h.date
    }

    fn store(&mut self, h: &Head<'_>, bytes: &[u8]) {
        if bytes.len() > HEAD_CACHE_MAX || h.date.len() != DATE_LEN {
            self.generation = 0;
            return;
        }
        self.generation = self.generation.wrapping_add(1).max(1);
        self.line = addr(h.line);
        self.reason = addr(h.reason);
        self.framing = addr(h.framing);
        self.connection = addr(h.connection);
        self.digits = h.digits;
        self.length = h.length;
        self.date.copy_from_slice(h.date);
        self.headers.clear();
        self.headers.extend(
            h.headers
                .iter()
                .map(|(n, v)| (Box::from(*n), Box::from(*v))),
        );
        self.bytes.clear();
        self.bytes.extend_from_slice(bytes);
    }
}

/// The decimal digits of a number, kept inline ([`Digits::NONE`]: none).
/// Equal values have equal bytes (the unused front stays zero).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digits {
    buf: [u8; 20],
    start: u8,
}

impl Digits {
    pub(crate) const NONE: Digits = Digits {
        buf: [0; 20],
        start: 20,
    };

    pub(crate) fn of(v: u64) -> Digits {
        let mut d = Digits::NONE;
        let n = decimal(v, &mut d.buf).len();
        d.start = (20 - n) as u8;
        d
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start as usize..]
    }
}

impl Head<'_> {
    fn len(&self, length: &Digits) -> usize {
        let mut n = self.line.len();
        if !self.digits.as_bytes().is_empty() {
            n += self.digits.as_bytes().len() + 1 + self.reason.len();
        }
        n += b"\r\nDate: ".len() + self.date.len();
        for (name, value) in self.headers {
            n += 4 + name.len() + value.len();
        }
        n + self.framing.len() + length.as_bytes().len() + self.connection.len() + 4
    }

    /// Writes the head, then `body`, through the sink's lent space: the
    /// thread's cached bytes when this head is the cached one, else
    /// written part by part (and cached).
    pub(crate) fn write_to<S: Sink + ?Sized>(&self, body: &[u8], out: &mut S) {
        HEAD_CACHE.with(|c| match c.try_borrow_mut() {
            Ok(mut c) => {
                if c.matches(self) {
                    let head = &c.bytes[..];
                    out.write_exact(head.len() + body.len(), &mut |buf: &mut [u8]| {
                        let (h, b) = buf.split_at_mut(head.len());
                        h.copy_from_slice(head);
                        b.copy_from_slice(body);
                    });
                } else {
                    let c = &mut *c;
                    self.write_parts(body, out, &mut |bytes| c.store(self, bytes));
                }
            }
            // (a sink that writes a head from inside its own write)
            Err(_) => self.write_parts(body, out, &mut |_| {}),
        });
    }

    /// The head part by part, then `body`; `head` sees the head's bytes.
    fn write_parts<S: Sink + ?Sized>(&self, body: &[u8], out: &mut S, head: &mut dyn FnMut(&[u8])) {
        let length = self.length.map_or(Digits::NONE, Digits::of);
        let head_len = self.len(&length);
        let len = head_len + body.len();
        out.write_exact(len, &mut |buf: &mut [u8]| {
            let mut c = Cursor { buf, at: 0 };
            c.put(self.line);
            if !self.digits.as_bytes().is_empty() {
                c.put(self.digits.as_bytes());
                c.put(b" ");
                c.put(self.reason);
            }
            c.put(b"\r\nDate: ");
            c.put(self.date);
            for (name, value) in self.headers {
                c.put(b"\r\n");
                c.put(name.as_bytes());
                c.put(b": ");
                c.put(value);
            }
            c.put(self.framing);
            c.put(length.as_bytes());
            c.put(self.connection);
            c.put(b"\r\n\r\n");
            debug_assert_eq!(c.at, head_len);
            head(&c.buf[..head_len]);
            c.put(body);
            debug_assert_eq!(c.at, len);
        });
    }
}

/// A write position in lent space whose size was computed beforehand.
struct Cursor<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Cursor<'_> {
    #[inline(always)]
    fn put(&mut self, b: &[u8]) {
        self.buf[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }
}

/// Decimal digits of `v`, written at the end of `buf`; returns the slice.
pub(crate) fn decimal(v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Lower-case hex digits of `v` followed by CRLF (a chunk-size line).
pub(crate) fn hex_line(v: u64, buf: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf[16] = b'\r';
    buf[17] = b'\n';
    let mut i = 16;
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = HEX[(v & 15) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let mut b = [0; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(1234567890, &mut b), b"1234567890");
        assert_eq!(decimal(u64::MAX, &mut b), b"18446744073709551615");
        let mut h = [0; 18];
        assert_eq!(hex_line(0, &mut h), b"0\r\n");
        assert_eq!(hex_line(0x1a2f, &mut h), b"1a2f\r\n");
        assert_eq!(hex_line(u64::MAX, &mut h), b"ffffffffffffffff\r\n");
    }

    #[test]
    fn head_is_written_in_one_pass() {
        let date = [b'D'; 29];
        let h = Head {
            line: b"HTTP/1.1 ",
            digits: Digits::of(299),
            reason: b"Odd",
            date: &date,
            headers: &[("A", b"1"), ("Bb", b"")],
            framing: b"\r\nContent-Length: ",
            length: Some(4),
            connection: b"\r\nConnection: close",
            known: Known::NO,
        };
        let mut out = b"x".to_vec();
        h.write_to(b"body", &mut out);
        let want = format!(
            "xHTTP/1.1 299 Odd\r\nDate: {}\r\nA: 1\r\nBb: \r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody",
            "D".repeat(29)
        );
        assert_eq!(String::from_utf8(out).unwrap(), want);
        // The trait's default (a temporary buffer) writes the same bytes.
        struct Plain(Vec<u8>);
        impl Sink for Plain {
            fn write(&mut self, b: &[u8]) {
                self.0.extend_from_slice(b);
            }
        }
        let mut p = Plain(b"x".to_vec());
        h.write_to(b"body", &mut p);
        assert_eq!(String::from_utf8(p.0).unwrap(), want);
        assert_eq!(Digits::NONE.as_bytes(), b"");
    }

    #[test]
    fn cached_head_is_the_same_head() {
        let date1 = [b'D'; 29];
        let date2 = [b'E'; 29];
        let head = |date: &'static [u8], headers: &'static [(&'static str, &'static [u8])]| Head {
            line: b"HTTP/1.1 200 OK",
            digits: Digits::NONE,
            reason: b"OK",
            date,
            headers,
            framing: b"\r\nContent-Length: ",
            length: Some(2),
            connection: b"",
            known: headers_known(headers),
        };
        let date1: &'static [u8] = Box::leak(Box::new(date1));
        let date2: &'static [u8] = Box::leak(Box::new(date2));
        let a: &'static [(&str, &[u8])] = &[("Content-Type", b"text/plain")];
        let text = |date: &[u8], ct: &str| {
            format!(
                "HTTP/1.1 200 OK\r\nDate: {}\r\nContent-Type: {ct}\r\nContent-Length: 2\r\n\r\nhi",
                String::from_utf8_lossy(date)
            )
        };
        // First write fills the cache, the second comes from it.
        for _ in 0..3 {
            let mut out = Vec::new();
            head(date1, a).write_to(b"hi", &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), text(date1, "text/plain"));
        }
        assert_ne!(headers_known(a), Known::NO);
        let stale = head(date2, a);
        // Same lengths, other bytes: a header value, then the date.
        let b: &'static [(&str, &[u8])] = &[("Content-Type", b"text/plaim")];
        assert_eq!(headers_known(b), Known::NO);
        let mut out = Vec::new();
        head(date1, b).write_to(b"hi", &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), text(date1, "text/plaim"));
        let mut out = Vec::new();
        head(date2, b).write_to(b"hi", &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), text(date2, "text/plaim"));
        // A `known` from an older generation does not count.
        let mut out = Vec::new();
        Head {
            headers: b,
            ..stale
        }
        .write_to(b"hi", &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), text(date2, "text/plaim"));
        // Fewer headers.
        let mut out = Vec::new();
        head(date2, &[]).write_to(b"hi", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "HTTP/1.1 200 OK\r\nDate: {}\r\nContent-Length: 2\r\n\r\nhi",
                "E".repeat(29)
            )
        );
    }
}
