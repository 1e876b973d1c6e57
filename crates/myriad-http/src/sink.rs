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
}

impl<S: Sink + ?Sized> Sink for &mut S {
    fn write(&mut self, bytes: &[u8]) {
        (**self).write(bytes);
    }

    fn write_vectored(&mut self, parts: &[&[u8]]) {
        (**self).write_vectored(parts);
    }
}

/// Inline capacity of [`HeadBuf`]: a typical response head (status line,
/// `Date`, a content type, framing) is under 200 bytes.
const INLINE: usize = 512;

/// A response head under construction. Hand-written instead of a `Vec`
/// because a `Vec` per response is an allocation per request, and one kept
/// per connection is memory every idle connection pays for: this lives on
/// the stack and spills to the heap only for unusually many headers.
pub(crate) struct HeadBuf {
    inline: [u8; INLINE],
    len: usize,
    spill: Vec<u8>,
}

impl HeadBuf {
    pub(crate) fn new() -> Self {
        HeadBuf {
            inline: [0; INLINE],
            len: 0,
            spill: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, b: &[u8]) {
        if self.spill.is_empty() {
            if let Some(dst) = self.inline.get_mut(self.len..self.len + b.len()) {
                dst.copy_from_slice(b);
                self.len += b.len();
                return;
            }
            self.spill.reserve(self.len + b.len() + 256);
            self.spill.extend_from_slice(&self.inline[..self.len]);
        }
        self.spill.extend_from_slice(b);
    }

    pub(crate) fn push_all(&mut self, parts: &[&[u8]]) {
        for p in parts {
            self.push(p);
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        if self.spill.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
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
    fn head_buf_spills() {
        let mut h = HeadBuf::new();
        h.push(b"abc");
        assert_eq!(h.as_slice(), b"abc");
        let big = vec![b'x'; 600];
        h.push(&big);
        h.push(b"!");
        assert_eq!(h.as_slice().len(), 604);
        assert_eq!(&h.as_slice()[..4], b"abcx");
        assert_eq!(h.as_slice()[603], b'!');
    }
}
