//! The output side: where encoded bytes go, and the small stack buffer
//! response heads are encoded in.

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
    pub(crate) length: Digits,
    /// `\r\nConnection: close`, `\r\nConnection: keep-alive` or nothing.
    pub(crate) connection: &'static [u8],
}

/// The decimal digits of a number, kept inline ([`Digits::NONE`]: none).
#[derive(Clone, Copy)]
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
    fn len(&self) -> usize {
        let mut n = self.line.len();
        if !self.digits.as_bytes().is_empty() {
            n += self.digits.as_bytes().len() + 1 + self.reason.len();
        }
        n += b"\r\nDate: ".len() + self.date.len();
        for (name, value) in self.headers {
            n += 4 + name.len() + value.len();
        }
        n + self.framing.len() + self.length.as_bytes().len() + self.connection.len() + 4
    }

    /// Writes the head, then `body`, through the sink's lent space.
    pub(crate) fn write_to<S: Sink + ?Sized>(&self, body: &[u8], out: &mut S) {
        let len = self.len() + body.len();
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
            c.put(self.length.as_bytes());
            c.put(self.connection);
            c.put(b"\r\n\r\n");
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
            length: Digits::of(4),
            connection: b"\r\nConnection: close",
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
}
